//! Executors: what runs tasks.
//!
//! An [`Executor`] receives [`Job`]s, each with a [`Completion`] to mark it
//! started and complete it. [`ThreadPool`] runs jobs on threads of this
//! process; [`ProcessPool`] on worker processes (this executable again, see
//! [`worker`](crate::worker)); `cluster::ClusterExecutor` (feature
//! `cluster`) on workers of any number of hosts, through Redis. Wrap either in a
//! [`StoreExecutor`](crate::StoreExecutor) to move arguments and results
//! through a store.
//!
//! # Your own executor
//!
//! Anything that can run a job and report its result can be an executor:
//! a client of a distributed scheduler ships [`Job::to_bytes`], the remote
//! side runs [`run_job_bytes`](crate::task::run_job_bytes) in a process of
//! the same executable and sends the result back. Here, a toy "scheduler"
//! that runs each job on a fresh thread:
//!
//! ```
//! use proxystore::executor::{Completion, Executor};
//! use proxystore::task::run_job_bytes;
//! use proxystore::Job;
//!
//! /// Sends each job, as bytes, to a "remote" worker.
//! struct SchedulerClient;
//!
//! impl Executor for SchedulerClient {
//!     fn submit(&self, job: Job, completion: Completion) {
//!         let wire = job.to_bytes();            // what would go over the network
//!         std::thread::spawn(move || {
//!             if completion.start() {           // false if cancelled meanwhile
//!                 completion.complete(run_job_bytes(&wire));
//!             }
//!         });
//!     }
//!
//!     fn shutdown(&self, _wait: bool, _cancel_pending: bool) {}
//! }
//! ```

#[cfg(feature = "cluster")]
#[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
pub mod cluster;
mod process_pool;
mod queue;
mod thread_pool;

pub use crate::task::handle::{
    as_completed, as_completed_stream, wait, wait_for, AsCompleted, AsCompletedStream, Completion,
    ReturnWhen, SharedTaskFuture, TaskFuture, Waitable, Waited,
};
pub use crate::task::{Progress, RetryPolicy, TaskId};
pub(crate) use process_pool::protocol;
pub(crate) use process_pool::worker as pool_worker;
pub use process_pool::{ProcessPool, ProcessPoolBuilder, DEFAULT_SHUTDOWN_TIMEOUT};
pub use thread_pool::ThreadPool;

pub(crate) use crate::task::handle::on_executor_thread;

use crate::connectors::Reach;
use crate::task::Job;

/// Runs jobs.
///
/// [`submit`](Executor::submit) must not block on the job itself. The
/// executor calls [`Completion::start`] before running a job (skipping it if
/// that returns `false`: it was cancelled) and then completes it exactly
/// once; a `Completion` dropped without that fails its task, so a job can
/// never be lost silently.
pub trait Executor: Send + Sync + 'static {
    /// Queues `job`.
    fn submit(&self, job: Job, completion: Completion);

    /// Stops accepting jobs. With `cancel_pending`, jobs not yet started
    /// are cancelled; with `wait`, returns once running jobs have finished.
    fn shutdown(&self, wait: bool, cancel_pending: bool);

    /// Where this executor's tasks run, seen from the caller: a
    /// [`StoreExecutor`](crate::StoreExecutor) refuses, with
    /// [`Error::Unreachable`](crate::Error::Unreachable), to send a task
    /// proxies of a store whose [`Connector::reach`](crate::connectors::Connector::reach)
    /// is nearer. The default, [`Reach::Process`], accepts every store;
    /// executors that run tasks in other processes should say so.
    fn task_reach(&self) -> Reach {
        Reach::Process
    }
}

impl<E: Executor + ?Sized> Executor for Box<E> {
    fn submit(&self, job: Job, completion: Completion) {
        (**self).submit(job, completion)
    }
    fn shutdown(&self, wait: bool, cancel_pending: bool) {
        (**self).shutdown(wait, cancel_pending)
    }
    fn task_reach(&self) -> Reach {
        (**self).task_reach()
    }
}

impl<E: Executor + ?Sized> Executor for std::sync::Arc<E> {
    fn submit(&self, job: Job, completion: Completion) {
        (**self).submit(job, completion)
    }
    fn shutdown(&self, wait: bool, cancel_pending: bool) {
        (**self).shutdown(wait, cancel_pending)
    }
    fn task_reach(&self) -> Reach {
        (**self).task_reach()
    }
}
