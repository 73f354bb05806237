//! Blocking work moved off an async runtime's thread: it runs on the
//! process-wide pool of background threads (the one that resolves proxies
//! in the background) and its result comes back as a [`Future`].

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::error::{Error, Result};

struct Slot<T> {
    value: Option<std::thread::Result<T>>,
    waker: Option<Waker>,
    /// The future was dropped: nobody will take the value.
    abandoned: bool,
    /// Cleans up after a value nobody takes (run once, by whichever of the
    /// background thread and the dropped future sees it last).
    on_abandon: Option<Box<dyn FnOnce(T) + Send>>,
}

/// The result of [`unblock`], to await.
pub(crate) struct Unblock<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

/// Runs `work` on a background thread; `abandoned` gets its result if the
/// returned future is dropped before taking it (to clean up after it).
pub(crate) fn unblock<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
    abandoned: impl FnOnce(T) + Send + 'static,
) -> Result<Unblock<T>> {
    let slot = Arc::new(Mutex::new(Slot {
        value: None,
        waker: None,
        abandoned: false,
        on_abandon: Some(Box::new(abandoned)),
    }));
    let filled = slot.clone();
    super::background::run_unblocked(Box::new(move || {
        // A panic (in a type's `Serialize`, say) fails the future instead
        // of leaving it pending forever.
        let value = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
        let mut slot = filled.lock().unwrap_or_else(|e| e.into_inner());
        if slot.abandoned {
            let on_abandon = slot.on_abandon.take();
            drop(slot);
            if let (Ok(value), Some(on_abandon)) = (value, on_abandon) {
                on_abandon(value);
            }
            return;
        }
        slot.value = Some(value);
        if let Some(waker) = slot.waker.take() {
            drop(slot);
            waker.wake();
        }
    }))?;
    Ok(Unblock { slot })
}

impl<T> Future for Unblock<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        super::deferred::mark_async_thread();
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        match slot.value.take() {
            Some(Ok(value)) => Poll::Ready(Ok(value)),
            Some(Err(panic)) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                Poll::Ready(Err(Error::Panicked { message }))
            }
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<T> Drop for Unblock<T> {
    fn drop(&mut self) {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        slot.abandoned = true;
        // A value delivered but never taken is cleaned up here.
        if let Some(Ok(value)) = slot.value.take() {
            let on_abandon = slot.on_abandon.take();
            drop(slot);
            if let Some(on_abandon) = on_abandon {
                on_abandon(value);
            }
        }
    }
}
