//! The process-wide pool of threads that resolve proxies in the background
//! ([`Proxy::resolve_async`](crate::Proxy::resolve_async)).
//!
//! A few threads (the machine's parallelism, between 2 and 8), started at
//! first use and kept for the life of the process, take resolutions from
//! one queue: resolving ten thousand proxies in the background queues ten
//! thousand reads, not ten thousand threads. Work that must wait (a
//! future's proxy whose object is not set yet) waits on one timer thread
//! ([`run_after`]), never on a thread of a pool.

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
pub(crate) fn run(work: Work) -> Result<()> {
    RESOLVE.run(work)
}

/// Queues `work` for the pool of async callers' store operations.
pub(crate) fn run_unblocked(work: Work) -> Result<()> {
    UNBLOCK.run(work)
}

/// Queues `work` for the resolver pool once `delay` has passed. Nothing
/// waits on the pool's threads meanwhile: one timer thread keeps the
/// delayed work of the whole process.
pub(crate) fn run_after(delay: std::time::Duration, work: Work) -> Result<()> {
    TIMER.schedule(std::time::Instant::now() + delay, work)
}

/// Work due at a time; ordered by that time, then by arrival.
struct Delayed {
    at: std::time::Instant,
    seq: u64,
    work: Work,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Delayed {}

impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Delayed {
    /// Reversed: the earliest is the greatest, on top of the heap.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Default)]
struct TimerState {
    due: std::collections::BinaryHeap<Delayed>,
    seq: u64,
    started: bool,
}

struct Timer {
    state: Mutex<TimerState>,
    changed: std::sync::Condvar,
}

static TIMER: Timer = Timer {
    state: Mutex::new(TimerState {
        due: std::collections::BinaryHeap::new(),
        seq: 0,
        started: false,
    }),
    changed: std::sync::Condvar::new(),
};

impl Timer {
    fn lock(&self) -> std::sync::MutexGuard<'_, TimerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn schedule(&'static self, at: std::time::Instant, work: Work) -> Result<()> {
        let mut state = self.lock();
        if !state.started {
            std::thread::Builder::new()
                .name("proxystore-timer".into())
                .spawn(move || self.serve())
                .map_err(|source| Error::ThreadSpawn {
                    purpose: "wait for futures' objects in the background",
                    source,
                })?;
            state.started = true;
        }
        state.seq += 1;
        let seq = state.seq;
        state.due.push(Delayed { at, seq, work });
        drop(state);
        self.changed.notify_one();
        Ok(())
    }

    /// Hands each piece of work to the resolver pool when it is due. A
    /// piece the pool cannot take is dropped, which ends that wait: the
    /// proxy resolves when it is next used.
    fn serve(&self) {
        let mut state = self.lock();
        loop {
            let now = std::time::Instant::now();
            match state.due.peek().map(|d| d.at) {
                Some(at) if at <= now => {
                    let Delayed { work, .. } = state.due.pop().expect("peeked");
                    drop(state);
                    let _ = RESOLVE.run(work);
                    state = self.lock();
                }
                Some(at) => {
                    state = self
                        .changed
                        .wait_timeout(state, at - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                None => {
                    state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }
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
    super::deferred::mark_pool_thread();
    for work in queue {
        // A panic (in a type's `Deserialize`, say) ends that resolution
        // only: the proxy stays unresolved and its next dereference
        // reports it.
        let _ = catch_unwind(AssertUnwindSafe(work));
    }
}
