//! The handle of a submitted task: its state cell ([`TaskCell`]), the
//! executor's side ([`Completion`]), the caller's side ([`TaskFuture`]),
//! other tasks' hold on its result ([`Dependency`]), and waiting for many
//! ([`wait`], [`as_completed`]). Public through
//! [`executor`](crate::executor), where users meet them.
//!
//! # States
//!
//! A task's cell moves through three phases, each change under its lock:
//!
//! ```text
//!            start()                      finish(output)
//!  Pending ───────────► Running ─────────────────────────► Done
//!     │                                                      ▲
//!     └──── cancel() (not started; or revoked by the ────────┘
//!           executor that holds the job)
//! ```
//!
//! - **Pending**: submitted, not started. A task held for its inputs (an
//!   upstream task's result as an argument) stays here until every
//!   upstream is done. [`TaskFuture::cancel`] succeeds only here: at once,
//!   or through the executor's revoker ([`Completion::on_cancel`]) for a
//!   job it has handed on and can still take back.
//! - **Running**: [`Completion::start`] said yes. Only the executor ends
//!   it, with a value, an error, or the worker's death; a [`Completion`]
//!   dropped without an outcome fails it (`ShutDown`), so no task waits
//!   for ever.
//! - **Done**: `finish` ran once (later calls are ignored). In order: the
//!   cleanup (the task's proxied inputs evicted, its hold on upstream
//!   results let go), then the output is shown to the hooks of held
//!   dependents before anyone can take it, then waiters and wakers are
//!   told, then done callbacks run.
//!
//! Beside the phase, the cell keeps what outlives it:
//!
//! - **Dependents**: tasks that take this result as an input hold a
//!   [`Dependency`]. While any does, a result whose future was dropped
//!   ("abandoned") is kept, and an owned result's eviction is deferred
//!   (its owner was dropped while dependents still read it): the last
//!   dependent to let go discards or evicts it.
//! - **Deferred work**: what a finishing task leaves for after its lock is
//!   released (submitting or failing a held dependent) runs through one
//!   queue per thread ([`deferred`]), so a failure passes down a chain of
//!   any length without recursion.

mod cell;
mod completion;
mod deferred;
mod future;
mod progress;
mod retry;
mod shared;
mod wait;

pub use completion::Completion;
pub use future::TaskFuture;
pub use progress::{Progress, TaskId};
pub use retry::RetryPolicy;
pub use shared::SharedTaskFuture;
pub use wait::{
    as_completed, as_completed_stream, wait, wait_for, AsCompleted, AsCompletedStream, ReturnWhen,
    Waitable, Waited,
};

pub(crate) use cell::TaskCell;
pub(crate) use completion::Dependency;
pub(crate) use deferred::{mark_executor_thread, on_executor_thread};
pub(crate) use progress::Counters;
pub(crate) use retry::Attempts;
