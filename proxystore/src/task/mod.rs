//! Tasks: invocations of `#[proxied]` functions, their arguments and
//! results on the wire, and the registry of task wrappers by name.
//!
//! Users meet [`Task`] (built by the generated `my_fn::task(..)`),
//! [`IntoArg`] (what can be passed for a parameter) and [`Job`] (what an
//! [`Executor`](crate::executor::Executor) runs). The wire format of a job:
//! the task's name, the executor's context (store configuration, policy,
//! ownership), a key reserved for the result, and one frame per argument:
//! a tag (inline value or proxy), a length and the bytes. Inline values use
//! [`codec`](crate::codec), so large numeric buffers never go element by
//! element.
//!
//! ```
//! use proxystore::connectors::LocalConnector;
//! use proxystore::executor::ThreadPool;
//! use proxystore::{proxied, Store, StoreExecutor, TaskValue};
//!
//! #[proxied(types = [Vec<f64>])]
//! fn mean(values: Vec<f64>) -> f64 {
//!     values.iter().sum::<f64>() / values.len() as f64
//! }
//!
//! fn main() -> proxystore::Result<()> {
//!     let store = Store::new("task-module-doc", LocalConnector::new())?;
//!     let executor = StoreExecutor::new(ThreadPool::new(2)?, store);
//!     let task = mean::task(vec![1.0, 2.0, 3.0]);   // the Vec goes through the store
//!     assert_eq!(task.name(), mean::NAME);
//!     let result: TaskValue<f64> = executor.submit(task)?.result()?;
//!     assert_eq!(*result, 2.0);
//!     assert_eq!(mean(vec![4.0]), 4.0);              // still a plain fn
//!     Ok(())
//! }
//! ```

use std::fmt;
use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::key::Key;
use crate::owned::{OwnedProxy, RefProxy};
use crate::policy::ShouldProxy;
use crate::proxy::{Factory, Proxy};
use crate::store::{Store, StoreConfig};
use crate::Storable;

mod context;
pub(crate) mod handle;
mod into_arg;
mod job;
mod received;
mod registry;
mod section;
mod summary;
mod value;
mod wire;

pub use context::{current, TaskContext};
pub use handle::{Progress, RetryPolicy, TaskId};
pub(crate) use job::run_received;
pub use job::{run_job_bytes, Job};
pub use received::{evict_result, ReceivedJob};
#[doc(hidden)]
pub use registry::TaskEntry;
pub use registry::{check_registry, find_task, registered_tasks};
pub(crate) use section::{HeldValue, Section, Sections};
pub(crate) use summary::{render as render_arguments, ArgSummary};
pub(crate) use value::discard_output;
pub use value::TaskValue;
pub use wire::RunLease;
#[doc(hidden)]
pub use wire::{assert_storable, fail, output, ArgReader, TaskOutput, WorkerContext};
use wire::{encode_value, push_frame, push_reference, read_frame, OWNED, PROXY, SECTION, VALUE};
pub(crate) use wire::{frame_reference, input_frame};

/// A task argument: a value (offered to the should-proxy policies), an
/// object that is already in a store (passed as it is, never proxied
/// twice), an object whose ownership moves into the task, or the result of
/// another task, passed when it is ready.
#[derive(Debug)]
pub enum Arg<T> {
    /// A plain value.
    Value(T),
    /// A reference to a stored object, which the task does not own (it is
    /// not evicted when the task ends).
    Stored(Factory),
    /// A stored object owned by the task: evicted when the task ends (or
    /// when the task is dropped without being submitted).
    Owned(OwnedInput),
    /// The result of another task: the task is held until that result is
    /// ready, and it travels worker to worker as a reference (a proxy)
    /// when it went through the store.
    Upstream(Upstream),
}

/// An object whose ownership moved into a task (see [`Arg::Owned`]).
pub struct OwnedInput {
    factory: Option<Factory>,
    /// The task whose result it is, if its dependents may still need it.
    shared_with: Option<std::sync::Arc<dyn crate::owned::SharedResult>>,
}

impl OwnedInput {
    fn new(
        factory: Factory,
        shared_with: Option<std::sync::Arc<dyn crate::owned::SharedResult>>,
    ) -> Self {
        OwnedInput {
            factory: Some(factory),
            shared_with,
        }
    }

    fn factory(&self) -> &Factory {
        self.factory.as_ref().expect("present until dropped")
    }
}

impl Drop for OwnedInput {
    fn drop(&mut self) {
        if let Some(factory) = self.factory.take() {
            crate::owned::evict_when_free(factory, self.shared_with.take());
        }
    }
}

impl fmt::Debug for OwnedInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("OwnedInput").field(self.factory()).finish()
    }
}

/// Another task's result, taken as an argument (see [`Arg::Upstream`]).
pub struct Upstream {
    pub(crate) dependency: crate::task::handle::Dependency,
}

impl Upstream {
    /// The task whose result this is.
    pub fn task(&self) -> &str {
        &self.dependency.shared.name
    }
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Upstream").field(&self.task()).finish()
    }
}

/// What can be passed for a task parameter of type `T`.
///
/// | argument | what the task gets |
/// |---|---|
/// | a `T` | the value, inline or through the store as the policies say |
/// | `&str` or `&String` for a `String` | a copy of the string |
/// | a [`Proxy<T>`] or `&Proxy<T>` | the stored object, by reference; not evicted |
/// | `&OwnedProxy<T>` or a [`RefProxy<T>`] | a borrow: by reference, not evicted |
/// | an [`OwnedProxy<T>`] | ownership moves into the task: evicted when it ends |
/// | `&TaskValue<T>` | a stored result by reference (not evicted), an inline one by value |
/// | a [`TaskValue<T>`] | as above, and an owned result moves into the task |
/// | `&TaskFuture<T>` | the result when it is ready, worker to worker |
/// | a [`TaskFuture<T>`] | as above, and the result is the task's: evicted when it ends |
///
/// A task given a future is held by the executor until the future's task
/// is done, as Dask does; if that task fails or is cancelled, the task
/// fails with [`Error::UpstreamFailed`] naming it.
///
/// [`TaskFuture<T>`]: crate::executor::TaskFuture
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be passed for a task parameter of type `{T}`",
    label = "not accepted for a `{T}` parameter",
    note = "a parameter of type `{T}` accepts: a `{T}`, a `Proxy<{T}>` or `&Proxy<{T}>`, an \
            `OwnedProxy<{T}>` (moved into the task) or `&OwnedProxy<{T}>`, a `TaskValue<{T}>` or \
            `&TaskValue<{T}>`, a `TaskFuture<{T}>` or `&TaskFuture<{T}>` (and `&str` for a `String`)"
)]
pub trait IntoArg<T> {
    /// Converts into an argument.
    fn into_arg(self) -> Arg<T>;
}

/// Why a task failed, as its executor reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    message: String,
}

impl TaskFailure {
    /// A failure with this message.
    pub fn new(message: impl Into<String>) -> Self {
        TaskFailure {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<Error> for TaskFailure {
    fn from(e: Error) -> Self {
        TaskFailure::new(e.to_string())
    }
}

/// The signature of a generated task wrapper.
pub type TaskFn = fn(&WorkerContext, &mut ArgReader<'_>) -> Result<TaskOutput, TaskFailure>;

/// An invocation of a `#[proxied]` function, ready to be submitted to a
/// [`StoreExecutor`](crate::StoreExecutor). Built by the generated
/// `my_fn::task(..)`.
#[must_use = "a task does nothing until it is submitted to an executor"]
pub struct Task<R> {
    name: &'static str,
    run: TaskFn,
    result_listed: bool,
    args: Vec<Box<dyn EncodeArg>>,
    retry: Option<RetryPolicy>,
    timeout: Option<std::time::Duration>,
    /// What the arguments were, for the errors of a failed task.
    summary: Vec<summary::ArgSummary>,
    _result: PhantomData<fn() -> R>,
}

impl<R> Task<R> {
    /// The name the task is registered under.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Runs the task again after a failure, as `policy` says (instead of
    /// the executor's [`retries`](crate::StoreExecutor::retries)); see
    /// [`RetryPolicy`] for an example.
    pub fn retries(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Gives the task up with [`Error::TaskTimedOut`] if it runs longer
    /// than `after` (counted from when a worker takes it; instead of the
    /// executor's [`task_timeout`](crate::StoreExecutor::task_timeout)). A
    /// [`RetryPolicy`] may run it again. The thread or worker process
    /// running it is not stopped: its result, if it comes, is dropped.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use proxystore::connectors::LocalConnector;
    /// use proxystore::executor::ThreadPool;
    /// use proxystore::{proxied, Error, Store, StoreExecutor};
    ///
    /// #[proxied]
    /// fn nap(ms: u64) -> u64 {
    ///     std::thread::sleep(Duration::from_millis(ms));
    ///     ms
    /// }
    ///
    /// fn main() -> proxystore::Result<()> {
    ///     let store = Store::new("timeout-doc", LocalConnector::new())?;
    ///     let executor = StoreExecutor::new(ThreadPool::new(1)?, store);
    ///     let slow = executor.submit(nap::task(500).timeout(Duration::from_millis(20)))?;
    ///     assert!(matches!(slow.result(), Err(Error::TaskTimedOut { .. })));
    ///     Ok(())
    /// }
    /// ```
    pub fn timeout(mut self, after: std::time::Duration) -> Self {
        self.timeout = Some(after);
        self
    }
}

impl<R> fmt::Debug for Task<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("name", &self.name)
            .field("args", &self.args.len())
            .finish()
    }
}

/// Builds a [`Task`]; used by generated code.
#[doc(hidden)]
pub struct TaskBuilder<R> {
    task: Task<R>,
}

impl<R> TaskBuilder<R> {
    pub fn new(name: &'static str, run: TaskFn, result_listed: bool) -> Self {
        TaskBuilder {
            task: Task {
                name,
                run,
                result_listed,
                args: Vec::new(),
                retry: None,
                timeout: None,
                summary: Vec::new(),
                _result: PhantomData,
            },
        }
    }

    pub fn arg<T: Storable>(&mut self, arg: Arg<T>, listed: bool) {
        self.task.summary.push(summary::ArgSummary::of(&arg));
        self.task.args.push(Box::new(GivenArg { arg, listed }));
    }

    pub fn finish(self) -> Task<R> {
        self.task
    }
}

/// What the executor and workers need to know besides the arguments.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ExecContext {
    pub(crate) store: StoreConfig,
    pub(crate) policy: ShouldProxy,
    pub(crate) ownership: bool,
    /// Workers send back what each task did in the store (see
    /// `StoreExecutor::worker_metrics`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) metrics: bool,
}

/// The state of a task's arguments while they are encoded, one after the
/// other, into its payload.
pub(crate) struct Encoder<'a> {
    store: &'a Store,
    policy: &'a ShouldProxy,
    out: Vec<u8>,
    sections: Vec<Box<dyn HeldValue>>,
    created: Vec<Key>,
    owned: Vec<OwnedInput>,
    upstreams: Vec<Upstream>,
    /// The payload after each upstream's frame (`out` holds what comes
    /// before the first).
    after: Vec<Vec<u8>>,
    /// The expiry the inputs put in the store get as they are stored.
    expiry: Option<wire::Expiry>,
}

impl Encoder<'_> {
    /// Where the next frame goes: after the last upstream's, if any.
    fn out(&mut self) -> &mut Vec<u8> {
        self.after.last_mut().unwrap_or(&mut self.out)
    }
}

/// An argument as given, not encoded yet.
trait EncodeArg: Send {
    fn encode(self: Box<Self>, p: &mut Encoder<'_>) -> Result<()>;
    /// Whether the argument's type is listed (it always goes through the
    /// store).
    fn listed(&self) -> bool;
    /// The store of an argument that already is a stored object.
    fn stored_in(&self) -> Option<&StoreConfig>;
}

/// An argument as given to `task(..)`, with whether its type is listed.
struct GivenArg<T> {
    arg: Arg<T>,
    listed: bool,
}

impl<T: Storable> EncodeArg for GivenArg<T> {
    fn encode(self: Box<Self>, p: &mut Encoder<'_>) -> Result<()> {
        match self.arg {
            Arg::Stored(factory) => push_reference(p.out(), &factory),
            Arg::Owned(owned) => {
                push_reference(p.out(), owned.factory());
                p.owned.push(owned);
            }
            Arg::Upstream(upstream) => {
                p.upstreams.push(upstream);
                p.after.push(Vec::new());
            }
            Arg::Value(value) => {
                let store = p.store.clone();
                let mut expiry = p.expiry.take();
                let encoded = encode_value(
                    value,
                    self.listed,
                    p.policy,
                    || Ok(store),
                    |s| s.connector().new_key(),
                    expiry.as_mut(),
                    p.out(),
                );
                p.expiry = expiry;
                let (stored, held) = encoded?;
                p.created.extend(stored);
                p.sections.extend(held);
            }
        }
        Ok(())
    }

    fn listed(&self) -> bool {
        self.listed
    }

    fn stored_in(&self) -> Option<&StoreConfig> {
        match &self.arg {
            Arg::Stored(factory) => Some(factory.store_config()),
            Arg::Owned(owned) => Some(owned.factory().store_config()),
            Arg::Value(_) | Arg::Upstream(_) => None,
        }
    }
}

/// A task whose arguments are encoded: inline, as sections, or in the
/// store.
pub(crate) struct EncodedTask {
    pub(crate) name: &'static str,
    pub(crate) run: TaskFn,
    /// The arguments' frames; with upstreams, those before the first
    /// upstream's.
    pub(crate) payload: Vec<u8>,
    pub(crate) sections: Vec<Box<dyn HeldValue>>,
    pub(crate) result_listed: bool,
    /// Objects the task owns: evicted when it ends.
    pub(crate) owned: Vec<OwnedInput>,
    /// Results of other tasks the task waits for, in argument order.
    pub(crate) upstreams: Vec<Upstream>,
    /// The frames after each upstream's.
    pub(crate) after: Vec<Vec<u8>>,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) timeout: Option<std::time::Duration>,
    pub(crate) summary: Vec<summary::ArgSummary>,
}

impl<R> Task<R> {
    /// Refuses, before anything is stored, a task whose proxies could not
    /// be resolved where `executor` runs it: `store` (if the task would put
    /// anything there) or the store of an argument that is already stored
    /// is nearer than `needed`.
    pub(crate) fn check_reach(
        &self,
        store: &Store,
        policy: &ShouldProxy,
        needed: crate::connectors::Reach,
        executor: &str,
    ) -> Result<()> {
        let check = |store: &Store| {
            let reach = store.connector().reach();
            if reach >= needed {
                return Ok(());
            }
            Err(Error::Unreachable {
                store: store.name().to_string(),
                connector: store.config().connector.kind.clone(),
                reach: reach.to_string(),
                executor: executor.to_string(),
                needed: needed.to_string(),
            })
        };
        let uses_store =
            self.result_listed || !policy.is_never() || self.args.iter().any(|a| a.listed());
        if uses_store {
            check(store)?;
        }
        for config in self.args.iter().filter_map(|a| a.stored_in()) {
            check(&crate::store::get_or_create_store(config)?)?;
        }
        Ok(())
    }

    /// Places the arguments. On error the keys created so far are returned
    /// with it, for the caller to evict.
    ///
    /// With `expiry`, the inputs it puts in the store are set to expire
    /// after it as they are stored, where the connector can; the flag
    /// returned says whether every one of them got it.
    pub(crate) fn encode(
        self,
        store: &Store,
        policy: &ShouldProxy,
        expiry: Option<std::time::Duration>,
    ) -> (Result<EncodedTask>, Vec<Key>, bool) {
        let mut p = Encoder {
            store,
            policy,
            out: Vec::new(),
            sections: Vec::new(),
            created: Vec::new(),
            owned: Vec::new(),
            upstreams: Vec::new(),
            after: Vec::new(),
            expiry: expiry.map(|after| wire::Expiry {
                after,
                all_set: true,
            }),
        };
        for arg in self.args {
            if let Err(e) = arg.encode(&mut p) {
                return (Err(e), p.created, false);
            }
        }
        let expiring = p.expiry.as_ref().is_some_and(|e| e.all_set);
        let encoded = EncodedTask {
            name: self.name,
            run: self.run,
            payload: p.out,
            sections: p.sections,
            result_listed: self.result_listed,
            owned: p.owned,
            upstreams: p.upstreams,
            after: p.after,
            retry: self.retry,
            timeout: self.timeout,
            summary: self.summary,
        };
        (Ok(encoded), p.created, expiring)
    }
}
