//! A consumer as an async `Stream`.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::{Item, StreamConsumer};
use crate::error::{Error, Result};
use crate::Storable;

/// How long the reading thread waits on the broker at a time, so that it
/// notices a dropped stream.
const SLICE: Duration = Duration::from_millis(100);

struct State<T: Storable> {
    /// The reader is asked for one more item.
    wanted: bool,
    ready: Option<Option<Result<Item<T>>>>,
    waker: Option<Waker>,
    /// The stream was dropped: the reader stops.
    dropped: bool,
}

struct Shared<T: Storable> {
    state: Mutex<State<T>>,
    changed: Condvar,
}

impl<T: Storable> Shared<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The items of a [`StreamConsumer`] as an async
/// [`Stream`](futures_core::Stream); see [`StreamConsumer::into_stream`].
///
/// The broker is read on a thread of the stream's own, one item ahead of
/// what was asked at most (an item is a lazy proxy: the object is read
/// when it is used), so the async runtime's threads never wait on it.
/// Dropping the stream stops that thread and closes the subscriber.
pub struct ItemStream<T: Storable> {
    shared: Arc<Shared<T>>,
    finished: bool,
}

impl<T: Storable> StreamConsumer<T> {
    /// The consumer as an async [`Stream`](futures_core::Stream) of the
    /// same items.
    ///
    /// ```
    /// use proxystore::stream::{LocalBroker, StreamConsumer, StreamProducer};
    ///
    /// async fn words(consumer: StreamConsumer<String>) -> proxystore::Result<Vec<String>> {
    ///     // With `futures::StreamExt` in scope, `while let Some(item) = items.next().await`.
    ///     let mut items = consumer.into_stream()?;
    ///     let mut words = Vec::new();
    ///     while let Some(item) = std::future::poll_fn(|cx| {
    ///         futures_core::Stream::poll_next(std::pin::Pin::new(&mut items), cx)
    ///     })
    ///     .await
    ///     {
    ///         words.push((*item?).clone());
    ///     }
    ///     Ok(words)
    /// }
    ///
    /// let broker = LocalBroker::new();
    /// let consumer = StreamConsumer::<String>::new(broker.subscriber("t"));
    /// let mut producer = StreamProducer::<String>::new(broker.publisher());
    /// producer.send("t", "hello".into())?;
    /// producer.close_topic("t")?;
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     let mut f = std::pin::pin!(f);
    /// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    /// #     loop {
    /// #         if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; }
    /// #         std::thread::sleep(std::time::Duration::from_millis(1));
    /// #     }
    /// # }
    /// assert_eq!(block_on(words(consumer))?, ["hello"]); // any runtime: tokio, async-std, ...
    /// # Ok::<(), proxystore::Error>(())
    /// ```
    pub fn into_stream(self) -> Result<ItemStream<T>> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                wanted: false,
                ready: None,
                waker: None,
                dropped: false,
            }),
            changed: Condvar::new(),
        });
        let reader = shared.clone();
        std::thread::Builder::new()
            .name("proxystore-stream".into())
            .spawn(move || read(self, &reader))
            .map_err(|source| Error::ThreadSpawn {
                purpose: "read a stream",
                source,
            })?;
        Ok(ItemStream {
            shared,
            finished: false,
        })
    }
}

/// The reading thread: one item each time one is wanted.
fn read<T: Storable>(mut consumer: StreamConsumer<T>, shared: &Shared<T>) {
    'items: loop {
        {
            let mut state = shared.lock();
            while !state.wanted && !state.dropped {
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
            }
            if state.dropped {
                break;
            }
        }
        let deadline = consumer.timeout.map(|t| Instant::now() + t);
        let found = loop {
            if shared.lock().dropped {
                break 'items;
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let wait = left.map_or(SLICE, |left| left.min(SLICE));
            match consumer.poll_item(Some(wait)) {
                Ok(Some(item)) => break item.map(Ok),
                Ok(None) if deadline.is_some_and(|d| Instant::now() >= d) => {
                    break Some(Err(Error::StreamTimeout {
                        topic: consumer.topic().to_string(),
                        after: consumer.timeout.unwrap_or_default(),
                    }))
                }
                Ok(None) => {}
                Err(e) => break Some(Err(e)),
            }
        };
        let end = found.is_none();
        let waker = {
            let mut state = shared.lock();
            state.wanted = false;
            state.ready = Some(found);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        if end {
            break;
        }
    }
    if let Err(e) = consumer.close() {
        tracing::debug!(error = %e, "stream: closing the subscriber failed");
    }
}

impl<T: Storable> futures_core::Stream for ItemStream<T> {
    type Item = Result<Item<T>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        crate::runtime::deferred::mark_async_thread();
        if self.finished {
            return Poll::Ready(None);
        }
        let mut state = self.shared.lock();
        if let Some(found) = state.ready.take() {
            drop(state);
            if found.is_none() {
                self.finished = true;
            }
            return Poll::Ready(found);
        }
        state.waker = Some(cx.waker().clone());
        if !state.wanted {
            state.wanted = true;
            self.shared.changed.notify_one();
        }
        Poll::Pending
    }
}

impl<T: Storable> Drop for ItemStream<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.dropped = true;
        // An item read ahead and never taken is dropped here (an owned
        // object is evicted).
        state.ready = None;
        drop(state);
        self.shared.changed.notify_one();
    }
}

impl<T: Storable> fmt::Debug for ItemStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ItemStream")
            .field("type", &std::any::type_name::<T>())
            .field("finished", &self.finished)
            .finish()
    }
}
