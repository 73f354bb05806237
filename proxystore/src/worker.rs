//! Worker mode: this executable serving a [`ProcessPool`](crate::executor::ProcessPool).
//!
//! A process pool starts its workers by running the current executable
//! again with an environment variable set. [`init`] must be the first thing
//! in `main`: in a worker it serves tasks and exits; in the normal program
//! it returns at once.
//!
//! ```no_run
//! fn main() {
//!     proxystore::worker::init();     // a pool worker never returns from here
//!     // ... the program ...
//! }
//! ```
//!
//! The worker loop is entered explicitly rather than from a constructor that
//! runs before `main`, because such a constructor can run before the task
//! registry is complete. Tasks may print: the protocol uses its own file
//! descriptors (3 and 4), never stdout.
//!
//! # Integration tests
//!
//! A test binary under the default harness has no `main` of yours. Put
//! [`test_worker!`](crate::test_worker) at the top level of the test file
//! and build pools with
//! [`ProcessPool::builder(n).test_harness()`](crate::executor::ProcessPoolBuilder::test_harness):
//! workers then run the test binary with only that entry test selected.

pub use crate::executor::pool_worker::{TEST_ENTRY, WORKER_ENV};

/// Serves tasks and exits if this process was started as a pool worker;
/// returns at once otherwise. Call it first thing in `main`.
///
#[cfg_attr(
    feature = "cluster",
    doc = "With the `cluster` feature, a process started with
[`PROXYSTORE_CLUSTER`](crate::executor::cluster::CLUSTER_ENV) set serves
that queue of a multi-host executor instead (and never returns); see
[`executor::cluster`](crate::executor::cluster)."
)]
#[cfg_attr(
    not(feature = "cluster"),
    doc = "With the `cluster` feature, a process started with
`PROXYSTORE_CLUSTER` set serves that queue of a multi-host executor
instead (and never returns); see `executor::cluster`."
)]
///
/// Before any task runs, the worker hides itself from the programs its
/// tasks start: the protocol descriptors are closed on `exec`, and
/// [`WORKER_ENV`] is removed from the environment, so a program a task
/// starts is an ordinary process (it can even start pools of its own).
pub fn init() {
    #[cfg(feature = "cluster")]
    crate::executor::cluster::serve_from_env();
    crate::executor::pool_worker::serve_from_env();
}

/// Defines the entry test that lets an integration-test binary serve as
/// pool workers (see the [module docs](self)).
///
/// ```no_run
/// // tests/my_tasks.rs
/// proxystore::test_worker!();
///
/// #[test]
/// fn runs_on_workers() {
///     let pool = proxystore::executor::ProcessPool::builder(2).test_harness().build().unwrap();
///     // ...
/// }
/// ```
#[macro_export]
macro_rules! test_worker {
    () => {
        /// Entry point of pool workers started from this test binary; does
        /// nothing in a normal test run.
        #[test]
        fn proxystore_worker_entry() {
            $crate::worker::init();
        }
    };
}
