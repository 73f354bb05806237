//! A pool of worker processes running this executable.
//!
//! The pieces, one concern each:
//!
//! - [`spawn`]: starting a worker (descriptors, parent-death signal);
//! - [`protocol`]: the messages on its pipes, read without trusting a length;
//! - [`conn`]: writing to a worker without ever blocking a caller;
//! - [`sched`]: which worker runs what (dispatch, stealing, cancelling);
//! - [`slot`]: a worker's life, from start to reaping and replacement.

mod conn;
pub(crate) mod progress;
pub(crate) mod protocol;
mod sched;
mod slot;
mod spawn;
pub(crate) mod worker;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Completion, Executor};
use crate::error::{Error, Result};
use crate::task::Job;
use sched::{Dispatch, Settings};
use spawn::Program;
use worker::TEST_ENTRY;

/// Runs jobs on worker processes: this executable, started again in worker
/// mode (see [`worker`](crate::worker); `main` must call
/// [`worker::init`](crate::worker::init) first).
///
/// - Jobs go to the least busy worker: with `n` workers and `n` tasks ready,
///   `n` run at once. A worker may hold a few jobs ahead
///   ([`max_in_flight`](ProcessPoolBuilder::max_in_flight)); one that runs
///   dry takes over jobs another holds but has not started.
/// - [`submit`](Executor::submit) never blocks on a worker: what a worker's
///   pipe cannot take at once is written by a thread of the pool.
/// - A task that panics fails its own future. A worker that dies (killed,
///   aborted, a task calling `exit`) or breaks the protocol fails the tasks
///   it held and had not answered, and is replaced; the pool goes on.
/// - Workers exit when the pool's process dies, even by `SIGKILL` (Linux).
/// - Shutting down waits for running tasks at most
///   [`shutdown_timeout`](ProcessPoolBuilder::shutdown_timeout) (default
///   10 s); workers still busy then are killed and their tasks fail with
///   [`Error::WorkerDied`].
///
/// ```no_run
/// use proxystore::executor::ProcessPool;
///
/// fn main() -> proxystore::Result<()> {
///     proxystore::worker::init();
///     let pool = ProcessPool::new(2)?;
///     assert_eq!(pool.worker_pids().len(), 2);
///     // wrap it in a StoreExecutor and submit tasks
///     Ok(())
/// }
/// ```
pub struct ProcessPool {
    dispatch: Arc<Dispatch>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Options of a [`ProcessPool`].
#[must_use]
#[derive(Debug, Clone)]
pub struct ProcessPoolBuilder {
    workers: usize,
    program: Option<PathBuf>,
    args: Vec<OsString>,
    max_in_flight: usize,
    shutdown_timeout: Duration,
}

/// Default of [`ProcessPoolBuilder::shutdown_timeout`].
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

impl ProcessPoolBuilder {
    /// The executable to start (default: this one). It must call
    /// [`worker::init`](crate::worker::init) and register the same tasks.
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// Arguments for the workers (default: none).
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Start workers the way an integration-test binary under the default
    /// harness needs: run only the entry test defined by
    /// [`test_worker!`](crate::test_worker).
    pub fn test_harness(self) -> Self {
        self.args([
            TEST_ENTRY,
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
    }

    /// How many jobs each worker may hold at once, the one it runs
    /// included (default 16, at least 1). More hides the round trip to the
    /// worker for short tasks; a worker that runs dry takes back jobs held
    /// by another but not started, so long tasks still spread.
    pub fn max_in_flight(mut self, jobs: usize) -> Self {
        self.max_in_flight = jobs.max(1);
        self
    }

    /// How long shutting down (and dropping the pool) waits for running
    /// tasks before it kills the workers still busy, failing their tasks
    /// with [`Error::WorkerDied`] (default [`DEFAULT_SHUTDOWN_TIMEOUT`]).
    /// `Duration::MAX` waits for ever.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Starts the workers; returns once every one of them has started (or
    /// with the error of one that could not, leaving no process behind).
    pub fn build(self) -> Result<ProcessPool> {
        if worker::started_as_worker_without_init() {
            let error = Error::WorkerEntry;
            eprintln!("proxystore: {error}");
            return Err(error);
        }
        let path = match self.program {
            Some(p) => p,
            None => std::env::current_exe()
                .map_err(|e| Error::io("process pool", "finding the current executable", e))?,
        };
        let workers = self.workers.max(1);
        let settings = Settings {
            program: Program {
                path,
                args: self.args,
            },
            max_in_flight: self.max_in_flight,
            shutdown_timeout: self.shutdown_timeout,
        };
        let dispatch = Dispatch::new(settings, workers);
        let pool = ProcessPool {
            dispatch: dispatch.clone(),
            threads: Mutex::new(Vec::new()),
        };
        let (started, starts) = crossbeam_channel::unbounded();
        for index in 0..workers {
            let (dispatch, started) = (dispatch.clone(), started.clone());
            let thread = std::thread::Builder::new()
                .name(format!("proxystore-worker-slot-{index}"))
                .spawn(move || slot::run(dispatch, index, started));
            match thread {
                Ok(thread) => pool.threads().push(thread),
                Err(e) => {
                    // Dropping the pool stops the slots already started.
                    return Err(Error::io("process pool", "spawning a thread", e));
                }
            }
        }
        drop(started);
        for _ in 0..workers {
            match starts.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let program = dispatch.settings.program.path.display().to_string();
                    return Err(Error::io("process pool", format!("starting {program}"), e));
                }
                Err(_) => return Err(Error::Protocol("a worker slot ended while starting".into())),
            }
        }
        Ok(pool)
    }
}

impl ProcessPool {
    /// A pool of `workers` processes with default options.
    pub fn new(workers: usize) -> Result<Self> {
        ProcessPool::builder(workers).build()
    }

    /// Options for a pool of `workers` processes.
    pub fn builder(workers: usize) -> ProcessPoolBuilder {
        ProcessPoolBuilder {
            workers,
            program: None,
            args: Vec::new(),
            max_in_flight: 16,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }

    /// Process ids of the current workers (all of them as soon as
    /// [`build`](ProcessPoolBuilder::build) returns; a replaced worker's
    /// new id appears once it has started).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.dispatch.pids()
    }

    fn threads(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.threads.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Executor for ProcessPool {
    fn submit(&self, job: Job, completion: Completion) {
        self.dispatch.submit(job, completion);
    }

    /// Stops accepting jobs (cancelling those not started if asked). With
    /// `wait`, returns once every worker has finished its tasks and exited,
    /// or once the [shutdown timeout](ProcessPoolBuilder::shutdown_timeout)
    /// since the first shutdown has passed: workers still busy are then
    /// killed.
    fn shutdown(&self, wait: bool, cancel_pending: bool) {
        self.dispatch.shutdown(cancel_pending);
        if !wait {
            return;
        }
        // Called from a task's callback, on the thread reading a worker's
        // answers (dropping the last handle on the executor there, say):
        // that slot cannot finish while we wait, so it is left to finish
        // on its own once the callback returns.
        let own = self.dispatch.reading_slot();
        let began = self.dispatch.shutdown_at().unwrap_or_else(Instant::now);
        let timeout = self.dispatch.settings.shutdown_timeout;
        let finished = match began.checked_add(timeout) {
            Some(deadline) => self.dispatch.wait_finished(deadline, own),
            None => self.dispatch.wait_finished(far_future(), own),
        };
        if !finished {
            self.dispatch.kill_remaining();
        }
        let threads = std::mem::take(&mut *self.threads());
        let me = std::thread::current().id();
        for thread in threads {
            if thread.thread().id() != me {
                let _ = thread.join();
            }
        }
    }

    fn task_reach(&self) -> crate::connectors::Reach {
        crate::connectors::Reach::Host
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

impl Drop for ProcessPool {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}

impl std::fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessPool")
            .field("workers", &self.worker_pids())
            .finish_non_exhaustive()
    }
}
