//! Jobs received as bytes by a remote executor's worker: what the cluster
//! executor's workers do with a job, as a public API, so that your own
//! executor over another transport can do the same.
//!
//! ```
//! use proxystore::connectors::LocalConnector;
//! use proxystore::executor::{Completion, Executor};
//! use proxystore::task::ReceivedJob;
//! use proxystore::{proxied, Job, Store, StoreExecutor};
//!
//! #[proxied]
//! fn double(x: i64) -> i64 {
//!     2 * x
//! }
//!
//! /// Ships each job as bytes; the "remote" side runs it from them.
//! struct Remote;
//!
//! impl Executor for Remote {
//!     fn submit(&self, job: Job, completion: Completion) {
//!         let wire = job.to_bytes();
//!         std::thread::spawn(move || {
//!             let received = ReceivedJob::parse(&wire).expect("a job");
//!             assert!(received.name().ends_with("double"));
//!             if completion.start() {
//!                 completion.complete(received.run());
//!             }
//!         });
//!     }
//!     fn shutdown(&self, _wait: bool, _cancel_pending: bool) {}
//! }
//!
//! fn main() -> proxystore::Result<()> {
//!     let store = Store::new("received-doc", LocalConnector::new())?;
//!     let executor = StoreExecutor::new(Remote, store);
//!     assert_eq!(*executor.submit(double::task(21))?.result()?, 42);
//!     Ok(())
//! }
//! ```

use std::sync::Arc;

use super::job::JobRef;
use super::wire::{with_lease, RunLease};
use super::TaskFailure;
use crate::error::Result;
use crate::key::Key;
use crate::store::Store;

/// A job received as bytes (made by [`Job::to_bytes`](crate::Job::to_bytes)
/// on the caller's side), read without running it.
#[derive(Clone, Copy)]
pub struct ReceivedJob<'a> {
    bytes: &'a [u8],
    job: JobRef<'a>,
}

impl<'a> ReceivedJob<'a> {
    /// Reads the job's head; [`Error::Protocol`](crate::Error::Protocol)
    /// if the bytes are not a job.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        Ok(ReceivedJob {
            bytes,
            job: JobRef::parse(bytes)?,
        })
    }

    /// The task's registered name (see
    /// [`find_task`](crate::task::find_task)).
    pub fn name(&self) -> &'a str {
        self.job.name
    }

    /// The key reserved for the task's result, if it goes through the
    /// store.
    pub fn result_key(&self) -> Key {
        self.job.result_key
    }

    /// The submitting executor's store, found in this process or built
    /// from the configuration the job carries: where its proxied inputs
    /// and its result live.
    pub fn store(&self) -> Result<Store> {
        self.job.store()
    }

    /// Runs the job in this process; what to send back as its result
    /// ([`Completion::complete`](crate::executor::Completion::complete) on
    /// the caller's side takes it).
    pub fn run(&self) -> std::result::Result<Vec<u8>, TaskFailure> {
        super::run_job_bytes(self.bytes)
    }

    /// Runs the job under `lease`, for executors that may give a job to
    /// another worker while it runs: the task sees the lease through
    /// [`TaskContext::is_current`](super::TaskContext::is_current), and a
    /// result is stored only if [`RunLease::confirm`] says the job is
    /// still this run's own.
    pub fn run_with_lease(
        &self,
        lease: Arc<dyn RunLease>,
    ) -> std::result::Result<Vec<u8>, TaskFailure> {
        with_lease(lease, || self.run())
    }
}

impl std::fmt::Debug for ReceivedJob<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceivedJob")
            .field("name", &self.job.name)
            .field("result_key", &self.job.result_key)
            .finish_non_exhaustive()
    }
}

/// Evicts the object a job's result names, if it went through the store:
/// for a result nobody will take (its caller is gone, or was told the job
/// failed). `output` is what [`ReceivedJob::run`] returned.
pub fn evict_result(output: &[u8]) {
    super::value::evict_output(output);
}
