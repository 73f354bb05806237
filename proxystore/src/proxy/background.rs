//! The process-wide pool of threads that resolve proxies in the background
//! ([`Proxy::resolve_async`](crate::Proxy::resolve_async)).
//!
//! A few threads (the machine's parallelism, between 2 and 8), started at
//! first use and kept for the life of the process, take resolutions from
//! one queue: resolving ten thousand proxies in the background queues ten
//! thousand reads, not ten thousand threads.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use crossbeam_channel::{Receiver, Sender};

use crate::error::{Error, Result};

type Work = Box<dyn FnOnce() + Send>;

/// Enough threads to overlap reads on every core, and no more than a store
/// can usefully serve at once.
fn threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
}

static QUEUE: Mutex<Option<Sender<Work>>> = Mutex::new(None);

/// Queues `work` for the pool, starting the pool first if needed.
pub(super) fn run(work: Work) -> Result<()> {
    let mut queue = QUEUE.lock().unwrap_or_else(|e| e.into_inner());
    let sender = match &mut *queue {
        Some(sender) => sender,
        empty => empty.insert(start()?),
    };
    match sender.send(work) {
        Ok(()) => Ok(()),
        // The threads never stop on their own; should they all be gone,
        // start new ones rather than lose the work.
        Err(crossbeam_channel::SendError(work)) => {
            let sender = queue.insert(start()?);
            sender.send(work).map_err(|_| Error::ThreadSpawn {
                purpose: "resolve proxies in the background",
                source: std::io::Error::other("the background threads stopped at once"),
            })
        }
    }
}

fn start() -> Result<Sender<Work>> {
    let (sender, receiver) = crossbeam_channel::unbounded::<Work>();
    let wanted = threads();
    let mut started = 0;
    let mut failure = None;
    for i in 0..wanted {
        let receiver = receiver.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("proxystore-resolve-{i}"))
            .spawn(move || serve(receiver));
        match spawned {
            Ok(_) => started += 1,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    match failure {
        Some(source) if started == 0 => Err(Error::ThreadSpawn {
            purpose: "resolve proxies in the background",
            source,
        }),
        Some(e) => {
            tracing::warn!(started, wanted, error = %e, "started fewer background resolver threads than planned");
            Ok(sender)
        }
        None => Ok(sender),
    }
}

fn serve(queue: Receiver<Work>) {
    for work in queue {
        // A panic (in a type's `Deserialize`, say) ends that resolution
        // only: the proxy stays unresolved and its next dereference
        // reports it.
        let _ = catch_unwind(AssertUnwindSafe(work));
    }
}
