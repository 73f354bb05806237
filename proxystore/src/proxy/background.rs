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

/// A pool of threads started at first use.
struct Pool {
    queue: Mutex<Option<Sender<Work>>>,
    /// Its threads' name, before their index.
    name: &'static str,
    purpose: &'static str,
}

/// Resolutions of proxies ([`Proxy::resolve_async`](crate::Proxy::resolve_async)).
static RESOLVE: Pool = Pool {
    queue: Mutex::new(None),
    name: "proxystore-resolve",
    purpose: "resolve proxies in the background",
};

/// Store I/O of async callers (`submit_async`, `TaskValue::resolved`): a
/// pool of its own, so that background resolutions that wait (a future's
/// proxy not set yet) never hold up the put that would set it.
static UNBLOCK: Pool = Pool {
    queue: Mutex::new(None),
    name: "proxystore-io",
    purpose: "run store operations off an async caller's thread",
};

/// Queues `work` for the resolver pool, starting it first if needed.
pub(super) fn run(work: Work) -> Result<()> {
    RESOLVE.run(work)
}

/// Queues `work` for the pool of async callers' store operations.
pub(super) fn run_unblocked(work: Work) -> Result<()> {
    UNBLOCK.run(work)
}

impl Pool {
    fn run(&self, work: Work) -> Result<()> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let sender = match &mut *queue {
            Some(sender) => sender,
            empty => empty.insert(start(self.name, self.purpose)?),
        };
        match sender.send(work) {
            Ok(()) => Ok(()),
            // The threads never stop on their own; should they all be
            // gone, start new ones rather than lose the work.
            Err(crossbeam_channel::SendError(work)) => {
                let sender = queue.insert(start(self.name, self.purpose)?);
                sender.send(work).map_err(|_| Error::ThreadSpawn {
                    purpose: self.purpose,
                    source: std::io::Error::other("the background threads stopped at once"),
                })
            }
        }
    }
}

fn start(name: &'static str, purpose: &'static str) -> Result<Sender<Work>> {
    let (sender, receiver) = crossbeam_channel::unbounded::<Work>();
    let wanted = threads();
    let mut started = 0;
    let mut failure = None;
    for i in 0..wanted {
        let receiver = receiver.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("{name}-{i}"))
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
        Some(source) if started == 0 => Err(Error::ThreadSpawn { purpose, source }),
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
