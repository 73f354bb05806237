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
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Result};
use crate::key::Key;
use crate::owned::{OwnedProxy, RefProxy};
use crate::policy::{ShouldProxy, ValueInfo};
use crate::proxy::{Factory, Proxy};
use crate::store::{get_or_create_store, Store, StoreConfig};
use crate::Storable;

const VALUE: u8 = 0;
const PROXY: u8 = 1;
const OWNED: u8 = 2;

/// A task argument: a value (offered to the should-proxy policies) or an
/// object that is already in a store (passed as it is, never proxied
/// twice, and not evicted when the task ends).
#[derive(Debug)]
pub enum Arg<T> {
    /// A plain value.
    Value(T),
    /// A reference to a stored object.
    Stored(Factory),
}

/// What can be passed for a task parameter of type `T`: a `T`, a
/// [`Proxy<T>`], or a borrow of an [`OwnedProxy<T>`].
pub trait IntoArg<T> {
    /// Converts into an argument.
    fn into_arg(self) -> Arg<T>;
}

impl<T: Storable> IntoArg<T> for T {
    fn into_arg(self) -> Arg<T> {
        Arg::Value(self)
    }
}

impl<T: Storable> IntoArg<T> for Proxy<T> {
    fn into_arg(self) -> Arg<T> {
        Arg::Stored(Proxy::factory(&self).clone())
    }
}

impl<T: Storable> IntoArg<T> for &Proxy<T> {
    fn into_arg(self) -> Arg<T> {
        Arg::Stored(Proxy::factory(self).clone())
    }
}

impl<T: Storable> IntoArg<T> for &OwnedProxy<T> {
    fn into_arg(self) -> Arg<T> {
        Arg::Stored(OwnedProxy::factory(self).clone())
    }
}

impl<T: Storable> IntoArg<T> for RefProxy<'_, T> {
    fn into_arg(self) -> Arg<T> {
        Arg::Stored(RefProxy::factory(&self).clone())
    }
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
    args: Vec<Box<dyn PendingArg>>,
    _result: PhantomData<fn() -> R>,
}

impl<R> Task<R> {
    /// The name the task is registered under.
    pub fn name(&self) -> &'static str {
        self.name
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
                _result: PhantomData,
            },
        }
    }

    pub fn arg<T: Storable>(&mut self, arg: Arg<T>, listed: bool) {
        self.task.args.push(Box::new(Pending { arg, listed }));
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
}

pub(crate) struct Prepare<'a> {
    store: &'a Store,
    policy: &'a ShouldProxy,
    out: Vec<u8>,
    created: Vec<Key>,
}

trait PendingArg: Send {
    fn prepare(self: Box<Self>, p: &mut Prepare<'_>) -> Result<()>;
}

struct Pending<T> {
    arg: Arg<T>,
    listed: bool,
}

fn push_frame(out: &mut Vec<u8>, tag: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.reserve(9 + len);
    out.push(tag);
    out.extend_from_slice(&(len as u64).to_le_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
}

fn cbor<T: Serialize>(value: &T) -> Vec<u8> {
    let mut buf = Vec::with_capacity(192);
    ciborium::into_writer(value, &mut buf).expect("factories serialize");
    buf
}

/// Encodes `value` inline, or puts it in the store, as the policies say.
/// Returns the tag and bytes of its frame, and the key it was put under.
fn place<T: Storable>(
    value: &T,
    listed: bool,
    policy: &ShouldProxy,
    store: impl FnOnce() -> Result<Store>,
    key: impl FnOnce(&Store) -> Result<Key>,
) -> Result<(Vec<u8>, Option<Key>)> {
    let encoded = codec::encode(value)?;
    let proxy = listed
        || (!policy.is_never()
            && policy.should_proxy(&ValueInfo {
                type_name: std::any::type_name::<T>(),
                size: encoded.len(),
                value,
            })?);
    let mut frame = Vec::new();
    if proxy {
        let store = store()?;
        let key = key(&store)?;
        store.set_encoded(&key, &encoded)?;
        push_frame(&mut frame, PROXY, &[&cbor(&store.factory(key))]);
        Ok((frame, Some(key)))
    } else {
        push_frame(&mut frame, VALUE, &encoded.parts());
        Ok((frame, None))
    }
}

impl<T: Storable> PendingArg for Pending<T> {
    fn prepare(self: Box<Self>, p: &mut Prepare<'_>) -> Result<()> {
        match self.arg {
            Arg::Stored(factory) => push_frame(&mut p.out, PROXY, &[&cbor(&factory)]),
            Arg::Value(value) => {
                let (frame, stored) = place(
                    &value,
                    self.listed,
                    p.policy,
                    || Ok(p.store.clone()),
                    |s| s.connector().new_key(),
                )?;
                if let Some(key) = stored {
                    p.created.push(key);
                }
                p.out.extend_from_slice(&frame);
            }
        }
        Ok(())
    }
}

/// A task whose arguments have been placed: inline or in the store.
pub(crate) struct Prepared {
    pub(crate) name: &'static str,
    pub(crate) run: TaskFn,
    pub(crate) payload: Vec<u8>,
    pub(crate) result_listed: bool,
}

impl<R> Task<R> {
    /// Places the arguments. On error the keys created so far are returned
    /// with it, for the caller to evict.
    pub(crate) fn prepare(
        self,
        store: &Store,
        policy: &ShouldProxy,
    ) -> (Result<Prepared>, Vec<Key>) {
        let mut p = Prepare {
            store,
            policy,
            out: Vec::new(),
            created: Vec::new(),
        };
        for arg in self.args {
            if let Err(e) = arg.prepare(&mut p) {
                return (Err(e), p.created);
            }
        }
        let prepared = Prepared {
            name: self.name,
            run: self.run,
            payload: p.out,
            result_listed: self.result_listed,
        };
        (Ok(prepared), p.created)
    }
}

/// Reads a task's arguments in a worker; used by generated code.
#[doc(hidden)]
pub struct ArgReader<'a> {
    bytes: &'a [u8],
    index: usize,
}

fn read_frame<'a>(bytes: &mut &'a [u8]) -> Option<(u8, &'a [u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let len = usize::try_from(u64::from_le_bytes(rest.get(..8)?.try_into().ok()?)).ok()?;
    let body = rest.get(8..8usize.checked_add(len)?)?;
    *bytes = &rest[8 + len..];
    Some((tag, body))
}

impl<'a> ArgReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        ArgReader { bytes, index: 0 }
    }

    #[allow(clippy::should_implement_trait)] // typed, fallible: not an Iterator
    pub fn next<T: Storable>(&mut self) -> Result<T, TaskFailure> {
        let index = self.index;
        self.index += 1;
        let what = || format!("argument {index} (`{}`)", std::any::type_name::<T>());
        let Some((tag, body)) = read_frame(&mut self.bytes) else {
            return Err(TaskFailure::new(format!(
                "{} is missing or truncated",
                what()
            )));
        };
        match tag {
            VALUE => codec::decode_slice::<T>(body).map_err(|f| {
                TaskFailure::new(format!("{} could not be decoded: {}", what(), f.reason))
            }),
            PROXY => {
                let factory: Factory = ciborium::from_reader(body).map_err(|e| {
                    TaskFailure::new(format!("{}: invalid proxy reference: {e}", what()))
                })?;
                factory
                    .load::<T>()
                    .map_err(|e| TaskFailure::new(format!("{}: {e}", what())))
            }
            other => Err(TaskFailure::new(format!(
                "{}: unknown frame tag {other}",
                what()
            ))),
        }
    }

    fn finish(&self) -> Result<(), TaskFailure> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(TaskFailure::new(format!(
                "more arguments were sent than the task's {} parameters; the caller and the \
                 worker run different builds",
                self.index
            )))
        }
    }
}

/// What the worker knows while running a task; used by generated code.
#[doc(hidden)]
pub struct WorkerContext {
    context: Arc<ExecContext>,
    result_key: Key,
}

/// The encoded result of a task; used by generated code.
#[doc(hidden)]
pub struct TaskOutput(pub(crate) Vec<u8>);

/// Encodes a task's return value, through the store if listed or if the
/// policy says so; used by generated code.
#[doc(hidden)]
pub fn output<R: Storable>(
    ctx: &WorkerContext,
    value: R,
    listed: bool,
) -> Result<TaskOutput, TaskFailure> {
    let (mut frame, stored) = place(
        &value,
        listed,
        &ctx.context.policy,
        || get_or_create_store(&ctx.context.store),
        |_| Ok(ctx.result_key),
    )?;
    if stored.is_some() && ctx.context.ownership {
        frame[0] = OWNED;
    }
    Ok(TaskOutput(frame))
}

/// A task failure from an error value; used by generated code.
#[doc(hidden)]
pub fn fail<E: fmt::Display + ?Sized>(error: &E) -> TaskFailure {
    TaskFailure::new(error.to_string())
}

/// Compile-time check that a listed type can be stored; used by generated
/// code.
#[doc(hidden)]
pub const fn assert_storable<T: Storable>() {}

/// A task wrapper registered by `#[proxied]`.
#[doc(hidden)]
#[derive(Debug)]
pub struct TaskEntry {
    name: &'static str,
    run: TaskFn,
    file: &'static str,
    line: u32,
}

impl TaskEntry {
    pub const fn new(name: &'static str, run: TaskFn, file: &'static str, line: u32) -> Self {
        TaskEntry {
            name,
            run,
            file,
            line,
        }
    }
}

inventory::collect!(TaskEntry);

/// The wrapper registered under `name`, or an error listing the registered
/// names (or the places registering `name` twice).
pub fn find_task(name: &str) -> Result<TaskFn> {
    let mut found = inventory::iter::<TaskEntry>().filter(|t| t.name == name);
    match (found.next(), found.next()) {
        (Some(entry), None) => Ok(entry.run),
        (None, _) => Err(Error::UnknownTask {
            name: name.to_string(),
            registered: crate::connectors::join(registered_tasks()),
        }),
        (Some(_), Some(_)) => {
            let mut places: Vec<String> = inventory::iter::<TaskEntry>()
                .filter(|t| t.name == name)
                .map(|t| format!("{}:{}", t.file, t.line))
                .collect();
            places.sort();
            Err(Error::DuplicateTask {
                name: name.to_string(),
                locations: places.join(", "),
            })
        }
    }
}

/// Names of all tasks registered in this executable.
pub fn registered_tasks() -> impl Iterator<Item = &'static str> {
    inventory::iter::<TaskEntry>().map(|t| t.name)
}

/// Checks that no two tasks share a name; call it early (e.g. in tests) to
/// find a collision before a task hits it.
pub fn check_registry() -> Result<()> {
    let mut names: Vec<&str> = registered_tasks().collect();
    names.sort_unstable();
    for pair in names.windows(2) {
        if pair[0] == pair[1] {
            find_task(pair[0])?;
        }
    }
    Ok(())
}

/// One unit of work for an [`Executor`](crate::executor::Executor): a task
/// invocation with its arguments placed.
///
/// In-process executors call [`Job::run`]. Executors that ship work
/// elsewhere send [`Job::to_bytes`] and, on the other side, call
/// [`run_job_bytes`], which finds the task by name in that executable.
pub struct Job {
    pub(crate) name: Box<str>,
    pub(crate) run: Option<TaskFn>,
    pub(crate) context: Arc<[u8]>,
    pub(crate) result_key: Key,
    pub(crate) payload: Vec<u8>,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("name", &self.name)
            .field("payload_bytes", &self.payload.len())
            .finish_non_exhaustive()
    }
}

fn decode_context(bytes: &[u8]) -> Result<Arc<ExecContext>, TaskFailure> {
    // Executors send the same context with every job: decode it once.
    type Decoded = Option<(Box<[u8]>, Arc<ExecContext>)>;
    static LAST: Mutex<Decoded> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((b, ctx)) = &*last {
        if **b == *bytes {
            return Ok(ctx.clone());
        }
    }
    let ctx: ExecContext = ciborium::from_reader(bytes)
        .map_err(|e| TaskFailure::new(format!("invalid executor context: {e}")))?;
    let ctx = Arc::new(ctx);
    *last = Some((bytes.into(), ctx.clone()));
    Ok(ctx)
}

/// A job read from bytes, borrowing them (no copy of the arguments).
struct JobRef<'a> {
    name: &'a str,
    context: &'a [u8],
    result_key: Key,
    payload: &'a [u8],
}

impl<'a> JobRef<'a> {
    fn parse(mut bytes: &'a [u8]) -> Result<Self> {
        let bad = || Error::Protocol("malformed job".into());
        let mut next = || read_frame(&mut bytes).map(|(_, b)| b).ok_or_else(bad);
        let name = std::str::from_utf8(next()?).map_err(|_| bad())?;
        let context = next()?;
        let key = uuid::Uuid::from_slice(next()?).map_err(|_| bad())?;
        let result_key = Key::parse(&key.hyphenated().to_string())?;
        let payload = next()?;
        Ok(JobRef {
            name,
            context,
            result_key,
            payload,
        })
    }

    fn run(&self, run: Option<TaskFn>) -> Result<Vec<u8>, TaskFailure> {
        let run = match run {
            Some(run) => run,
            None => find_task(self.name)?,
        };
        let ctx = WorkerContext {
            context: decode_context(self.context)?,
            result_key: self.result_key,
        };
        let mut args = ArgReader::new(self.payload);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let out = run(&ctx, &mut args)?;
            args.finish()?;
            Ok(out.0)
        }));
        match outcome {
            Ok(result) => result,
            Err(payload) => Err(TaskFailure::new(format!(
                "panicked: {}",
                panic_message(&*payload)
            ))),
        }
    }
}

impl Job {
    /// The task's registered name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs the task in this process. A panic in the task is caught and
    /// reported as a failure. Returns the encoded result, to be handed to
    /// the job's [`Completion`](crate::executor::Completion).
    pub fn run(&self) -> Result<Vec<u8>, TaskFailure> {
        let job = JobRef {
            name: &self.name,
            context: &self.context,
            result_key: self.result_key,
            payload: &self.payload,
        };
        job.run(self.run)
    }

    /// The job as bytes, for an executor that runs it in another process.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.context.len() + self.payload.len());
        self.write_to(&mut out);
        out
    }

    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        push_frame(out, 0, &[self.name.as_bytes()]);
        push_frame(out, 0, &[&self.context]);
        push_frame(out, 0, &[self.result_key.as_uuid().as_bytes()]);
        push_frame(out, 0, &[&self.payload]);
    }

    /// Reads a job written by [`Job::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Job> {
        let job = JobRef::parse(bytes)?;
        Ok(Job {
            name: job.name.into(),
            run: None,
            context: job.context.into(),
            result_key: job.result_key,
            payload: job.payload.to_vec(),
        })
    }
}

/// Runs a job received as bytes (from [`Job::to_bytes`]) in this process.
pub fn run_job_bytes(bytes: &[u8]) -> Result<Vec<u8>, TaskFailure> {
    JobRef::parse(bytes)?.run(None)
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_string()
    }
}

/// A task's result, decoded in the caller: a plain value, an owned proxy
/// (ownership on: dropping it evicts the object) or a plain proxy
/// (ownership off: the caller cleans up). Dereferences to the value in
/// every case.
pub enum TaskValue<R: Storable> {
    /// The value came back inline.
    Value(R),
    /// The value is in the store, owned by this handle.
    Owned(OwnedProxy<R>),
    /// The value is in the store; nothing evicts it automatically.
    Proxy(Proxy<R>),
}

impl<R: Storable> TaskValue<R> {
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        let mut rest = bytes;
        let bad = |what: String| Error::Protocol(format!("malformed task result: {what}"));
        let (tag, body) = read_frame(&mut rest).ok_or_else(|| bad("truncated".into()))?;
        let factory =
            || -> Result<Factory> { ciborium::from_reader(body).map_err(|e| bad(e.to_string())) };
        Ok(match tag {
            VALUE => TaskValue::Value(codec::decode_slice::<R>(body).map_err(|f| bad(f.reason))?),
            PROXY => TaskValue::Proxy(Proxy::lazy(factory()?)),
            OWNED => TaskValue::Owned(OwnedProxy::lazy(factory()?)),
            other => return Err(bad(format!("unknown tag {other}"))),
        })
    }

    /// Whether the value came back through the store.
    pub fn is_proxy(&self) -> bool {
        !matches!(self, TaskValue::Value(_))
    }

    /// Resolves now if needed, returning the error a dereference would
    /// panic with.
    pub fn resolve(&self) -> Result<&R> {
        match self {
            TaskValue::Value(v) => Ok(v),
            TaskValue::Owned(p) => OwnedProxy::resolve(p),
            TaskValue::Proxy(p) => Proxy::resolve(p),
        }
    }

    /// The value itself; an owned result is evicted from the store.
    pub fn into_value(self) -> Result<R>
    where
        R: Clone,
    {
        match self {
            TaskValue::Value(v) => Ok(v),
            TaskValue::Owned(p) => OwnedProxy::into_inner(p),
            TaskValue::Proxy(p) => Proxy::extract(p),
        }
    }
}

impl<R: Storable> std::ops::Deref for TaskValue<R> {
    type Target = R;
    fn deref(&self) -> &R {
        match self.resolve() {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }
}

impl<R: Storable + fmt::Debug> fmt::Debug for TaskValue<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskValue::Value(v) => f.debug_tuple("Value").field(v).finish(),
            TaskValue::Owned(p) => fmt::Debug::fmt(p, f),
            TaskValue::Proxy(p) => fmt::Debug::fmt(p, f),
        }
    }
}

impl<R: Storable + fmt::Display> fmt::Display for TaskValue<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl<R: Storable + PartialEq> PartialEq<R> for TaskValue<R> {
    fn eq(&self, other: &R) -> bool {
        **self == *other
    }
}

/// Evicts the object of an owned result that nobody will take.
pub(crate) fn discard_output(bytes: Vec<u8>) {
    let mut rest = &bytes[..];
    if let Some((OWNED, body)) = read_frame(&mut rest) {
        if let Ok(factory) = ciborium::from_reader::<Factory, _>(body) {
            crate::owned::evict(&factory);
        }
    }
}
