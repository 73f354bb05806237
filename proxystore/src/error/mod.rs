//! The crate's error type.

use crate::key::Key;
use crate::task::TaskId;

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in this crate.
///
/// Every variant carries the context needed to act on it: the key, the
/// store, the connector or the task involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An object is not (or no longer) in the store.
    ///
    /// The message gives the likely causes; when this process evicted the
    /// object because a lifetime it belonged to ended (a
    /// [`LeaseLifetime`](crate::lifetime::LeaseLifetime) ran out, say), it
    /// says that instead.
    #[error(
        "object {key} is not in store `{store}`: {}",
        crate::lifetime::why_missing(.store, .key)
    )]
    MissingObject {
        /// The key that was looked up.
        key: Key,
        /// Name of the store.
        store: String,
    },

    /// The stored bytes could not be decoded as the requested type.
    #[error(
        "object {key} in store `{store}` could not be decoded as `{expected}` (stored as \
         `{found}`): {reason}; the bytes are corrupt or the proxy was created for another type"
    )]
    Decode {
        /// The key of the object.
        key: Key,
        /// Name of the store.
        store: String,
        /// The type the caller asked for.
        expected: &'static str,
        /// The type recorded when the object was stored, if known.
        found: String,
        /// What the decoder reported.
        reason: String,
    },

    /// A value could not be encoded.
    #[error(
        "could not encode a `{type_name}`: {reason}; its `Serialize` implementation refused it \
         (or a value exceeds what the format can hold)"
    )]
    Encode {
        /// The type being encoded.
        type_name: &'static str,
        /// What the encoder reported.
        reason: String,
    },

    /// A connector operation failed with an I/O error.
    #[error("{connector} connector: {operation} failed: {source}")]
    Io {
        /// Which connector (and where, e.g. its directory).
        connector: String,
        /// The operation that failed.
        operation: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Something other than an object file sits where an object should be
    /// (a fifo, a symbolic link, a directory, a device): it is refused
    /// rather than read, followed or waited on.
    #[error(
        "{connector} connector: the entry for object {key} is a {found}, not an object file; \
         the store never creates one, so something else put it there: remove it"
    )]
    NotAnObject {
        /// Which connector (and where, e.g. its directory).
        connector: String,
        /// The key whose entry was refused.
        key: Key,
        /// What was found instead (e.g. "fifo", "symbolic link").
        found: String,
    },

    /// A connector could not remove everything it owns; calling `close`
    /// again retries.
    #[error(
        "{connector} connector: close did not finish: {reason}; stop the processes still \
         writing to the store and call close again"
    )]
    CloseIncomplete {
        /// Which connector (and where, e.g. its directory).
        connector: String,
        /// What was left.
        reason: String,
    },

    /// A string from outside is not a valid key.
    #[error("`{input}` is not a valid object key: keys are UUIDs ({reason})")]
    InvalidKey {
        /// The rejected input (truncated).
        input: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A store configuration names a connector kind that is not registered.
    #[error(
        "unknown connector kind `{kind}`; registered kinds: [{registered}]; a connector defined \
         in your crate must be registered with `proxystore::register_connector!`"
    )]
    UnknownConnector {
        /// The requested kind.
        kind: String,
        /// Comma separated names of the registered kinds.
        registered: String,
    },

    /// A connector kind was registered twice under one name.
    #[error(
        "connector kind `{kind}` is registered more than once ({locations}); register each type \
         once, or give one of them another `KIND`"
    )]
    DuplicateConnector {
        /// The duplicated name.
        kind: String,
        /// Where the registrations come from.
        locations: String,
    },

    /// A connector configuration could not be read.
    #[error("invalid configuration for connector `{kind}`: {reason}")]
    InvalidConfig {
        /// The connector kind.
        kind: String,
        /// What is wrong.
        reason: String,
    },

    /// A store with this name is already registered in this process.
    #[error(
        "a store named `{name}` is already registered in this process; unregister it first or \
         give the new store another name"
    )]
    StoreExists {
        /// The name.
        name: String,
    },

    /// The store was closed (also reported for proxies and results that
    /// outlive a store closed in this process).
    #[error(
        "store `{store}` is closed: its objects can no longer be read or written; keep it open \
         until its proxies and results are used (`StoreExecutor::close_store(false)` leaves it \
         open), or create it again with `Store::new`"
    )]
    StoreClosed {
        /// Name of the store.
        store: String,
    },

    /// An ownership transfer was serialized twice or used after it was sent.
    #[error(
        "ownership of object {key} in store `{store}` was already transferred: its new owner \
         evicts it; to pass an object and keep it, pass a borrow (`OwnedProxy::borrow`) or a \
         clone of its proxy"
    )]
    AlreadyTransferred {
        /// The key of the object.
        key: Key,
        /// Name of the store.
        store: String,
    },

    /// No task is registered under this name.
    #[error(
        "no task named `{name}` is registered in this process; registered tasks: [{registered}]; \
         is the function annotated with #[proxied] and linked into this executable?"
    )]
    UnknownTask {
        /// The requested name.
        name: String,
        /// Comma separated names of the registered tasks.
        registered: String,
    },

    /// Two tasks were registered under one name.
    #[error(
        "task name `{name}` is registered more than once ({locations}); give one of them \
         another name with #[proxied(name = \"...\")]"
    )]
    DuplicateTask {
        /// The duplicated name.
        name: String,
        /// Where the registrations come from.
        locations: String,
    },

    /// A task returned an error or panicked.
    #[error("task `{task}`{}{} failed: {message}", Id(.id), Args(.arguments))]
    TaskFailed {
        /// Name of the task.
        task: String,
        /// The task's id (see [`TaskId`](crate::task::TaskId)).
        id: Option<TaskId>,
        /// A short description of its arguments (`42, "text", Vec<f64>,
        /// proxy of String, result of #3`), when known.
        arguments: Option<String>,
        /// The error's message or the panic payload.
        message: String,
    },

    /// A worker process exited while running a task.
    #[error(
        "worker process {pid} running task `{task}`{} died ({status}); the pool replaced it; \
         if the task itself ends its process (out of memory, an abort), fix that; otherwise \
         retry it with a `RetryPolicy`",
        Id(.id)
    )]
    WorkerDied {
        /// Name of the task.
        task: String,
        /// The task's id (see [`TaskId`](crate::task::TaskId)).
        id: Option<TaskId>,
        /// The worker's process id.
        pid: u32,
        /// How it ended, e.g. `exited with status 3` or `killed by signal 9
        /// (SIGKILL)`, after what led to it when the pool knows (`still
        /// running 10s after shutdown began, killed: ...`).
        status: String,
    },

    /// The task was cancelled before it started.
    #[error("task `{task}`{} was cancelled before it started", Id(.id))]
    Cancelled {
        /// Name of the task.
        task: String,
        /// The task's id (see [`TaskId`](crate::task::TaskId)).
        id: Option<TaskId>,
    },

    /// Waiting for a result timed out; the task keeps running.
    #[error(
        "timed out after {after:?} waiting for task `{task}`{}; it is still running: wait \
         again, or cancel it",
        Id(.id)
    )]
    Timeout {
        /// Name of the task.
        task: String,
        /// The task's id (see [`TaskId`](crate::task::TaskId)).
        id: Option<TaskId>,
        /// How long the caller waited.
        after: std::time::Duration,
    },

    /// A task ran longer than its timeout (see
    /// [`Task::timeout`](crate::Task::timeout)) and was given up.
    #[error(
        "task `{task}`{} ran longer than its timeout of {after:?} and was given up; its result, \
         if it comes, is dropped (a thread or worker process already running it goes on until \
         it ends); give it more time or retry it with a RetryPolicy",
        Id(.id)
    )]
    TaskTimedOut {
        /// Name of the task.
        task: String,
        /// The task's id (see [`TaskId`](crate::task::TaskId)).
        id: Option<TaskId>,
        /// Its timeout.
        after: std::time::Duration,
    },

    /// Work moved off the caller's thread (an async submit or read)
    /// panicked, in a type's `Serialize` or `Deserialize` say.
    #[error(
        "a background store operation panicked: {message}; a type's `Serialize`, \
         `Deserialize` or `Drop` panicked, or a connector did"
    )]
    Panicked {
        /// The panic's message.
        message: String,
    },

    /// An object was associated with a lifetime that has ended.
    #[error(
        "the {lifetime} lifetime has ended: no object can be associated with it; make a new \
         lifetime for new objects"
    )]
    LifetimeEnded {
        /// Which kind of lifetime (context, lease or static).
        lifetime: &'static str,
    },

    /// A future's object was not set in time (see
    /// [`StoreFuture`](crate::StoreFuture)).
    #[error(
        "future {key} in store `{store}` was not set within {after:?}; the process that should \
         set it may have failed or not started, or it needs more time (`StoreFuture::timeout`)"
    )]
    NotSetInTime {
        /// The future's key.
        key: Key,
        /// Name of the store.
        store: String,
        /// How long the reader waited.
        after: std::time::Duration,
    },

    /// A task given another task's result (a
    /// [`TaskFuture`](crate::executor::TaskFuture)) was not run because that
    /// task failed or was cancelled.
    #[error(
        "task `{task}`{} did not run: its input from task `{upstream}`{} failed: {message}",
        Id(.id),
        Id(.upstream_id)
    )]
    UpstreamFailed {
        /// The task that was not run.
        task: String,
        /// The task's id (see [`TaskId`](crate::task::TaskId)).
        id: Option<TaskId>,
        /// The task whose result it needed.
        upstream: String,
        /// Its id.
        upstream_id: Option<TaskId>,
        /// Why that task failed (or that it was cancelled). When `upstream`
        /// did not run either, because of its own upstream, this is the
        /// message of the task where the chain first failed: the cause,
        /// however long the chain.
        message: String,
    },

    /// The executor was shut down.
    #[error(
        "executor is shut down; `{task}`{} was not run; submit before shutting it down (or \
         dropping it), and keep it alive while tasks run",
        Id(.id)
    )]
    ShutDown {
        /// Name of the task.
        task: String,
        /// The task's id (see [`TaskId`](crate::task::TaskId)).
        id: Option<TaskId>,
    },

    /// This process was started as a pool worker, but `main` created a pool
    /// before calling [`worker::init`](crate::worker::init).
    #[error(
        "this process was started as a pool worker, but main() created a ProcessPool before \
         calling proxystore::worker::init(); call it first thing in main (in integration \
         tests: proxystore::test_worker!() and ProcessPool::builder(n).test_harness())"
    )]
    WorkerEntry,

    /// A thread could not be started.
    #[error(
        "could not start a thread to {purpose}: {source}; the process is probably at its limit \
         of threads (`ulimit -u`) or of memory"
    )]
    ThreadSpawn {
        /// What the thread was for.
        purpose: &'static str,
        /// The error from the operating system.
        #[source]
        source: std::io::Error,
    },

    /// Something from Python ProxyStore (a stored object, a pickled proxy,
    /// a configuration) cannot be used here; nothing in it was run.
    #[error("python ProxyStore interop: {reason}")]
    Python {
        /// What is wrong, and what to pass instead.
        reason: String,
    },

    /// A Redis server could not be reached or refused a command. The
    /// server is named by host and port only: credentials never appear.
    #[error("Redis at {server}: {operation} failed: {message}{}", redis_hint(.message))]
    Redis {
        /// `host:port/db` of the server, without credentials.
        server: String,
        /// The operation that failed.
        operation: String,
        /// What the client or the server reported.
        message: String,
    },

    /// An object is larger than the connector can hold.
    #[error("{connector} connector: an object of {size} bytes is larger than its limit of {limit} bytes{hint}")]
    TooLarge {
        /// Which connector.
        connector: String,
        /// The object's size.
        size: u64,
        /// The connector's limit.
        limit: u64,
        /// What to do instead (may be empty).
        hint: String,
    },

    /// An object was kept in the memory of another process (a
    /// `PeerConnector`'s objects (feature `peer`) stay
    /// with the process that stored them) and that process cannot give it
    /// any more: its host died or is cut off, or the process exited. The
    /// object is gone; make it again (run the task that produced it again).
    #[error(
        "object {key} is lost: it was kept by the process at {host}, which cannot give it: \
         {reason}; objects of a peer connector live only as long as the process that stored \
         them (its host died, was cut off, or the process exited)"
    )]
    ObjectLost {
        /// The key of the object.
        key: Key,
        /// `address:port` of the process that kept it.
        host: String,
        /// What happened when it was asked.
        reason: String,
    },

    /// A task argument or the executor's store lives where the executor's
    /// workers cannot reach it (memory of this process, a directory of this
    /// host), so the task would fail later on a worker.
    #[error(
        "store `{store}` ({connector}) is reachable only from {reach}, but {executor} runs tasks \
         on {needed}; use a store every worker can reach (for example a RedisConnector, or a \
         FileConnector marked `.shared()` on a file system all hosts mount)"
    )]
    Unreachable {
        /// The store.
        store: String,
        /// Its connector kind.
        connector: String,
        /// Where it can be reached from.
        reach: String,
        /// The executor.
        executor: String,
        /// Where the executor's tasks run.
        needed: String,
    },

    /// A task failed on every attempt it was given (its worker died each
    /// time, or it could not be run), and was moved to the dead-letter
    /// stream.
    #[error("task `{task}`{} was given up after {attempts} attempts: {last}", Id(.id))]
    AttemptsExhausted {
        /// Name of the task.
        task: String,
        /// The task's id (see [`TaskId`](crate::task::TaskId)).
        id: Option<TaskId>,
        /// How many times it was delivered.
        attempts: u64,
        /// What happened on the last attempt.
        last: String,
    },

    /// An object was sent to a stream topic after the topic was closed.
    #[error(
        "topic `{topic}` was closed (its end of stream was sent): nothing more can be sent to it; \
         use another topic for a new stream"
    )]
    TopicClosed {
        /// The topic.
        topic: String,
    },

    /// A stream message could not be read: it is malformed, hostile, or
    /// was written by something other than a
    /// [`StreamProducer`](crate::stream::StreamProducer). Nothing in it was
    /// used.
    #[error(
        "stream topic `{topic}`: a malformed event: {reason}; it was skipped: only this \
         library's producers should publish to the topic"
    )]
    StreamEvent {
        /// The topic it arrived on.
        topic: String,
        /// What is wrong with it.
        reason: String,
    },

    /// No stream event arrived within the consumer's timeout.
    #[error(
        "stream topic `{topic}`: no event arrived within {after:?}; the producer may be slow, \
         stopped, or publishing to another topic or broker"
    )]
    StreamTimeout {
        /// The topic.
        topic: String,
        /// How long the consumer waited.
        after: std::time::Duration,
    },

    /// A message broker of a stream failed (other than a Redis server,
    /// which is [`Error::Redis`]).
    #[error(
        "stream broker {broker}: {operation} failed: {message}{}",
        redis_hint(.message)
    )]
    Broker {
        /// Which broker.
        broker: String,
        /// The operation that failed.
        operation: String,
        /// What went wrong.
        message: String,
    },

    /// A connector cannot do an optional operation: a connector of your own
    /// that does not implement that method of
    /// [`Connector`](crate::connectors::Connector) (the built-in connectors
    /// implement them all).
    #[error(
        "connector `{connector}` cannot {operation}: its `Connector` implementation does not \
         provide it"
    )]
    Unsupported {
        /// The connector's kind.
        connector: String,
        /// What was asked of it.
        operation: String,
    },

    /// A protocol frame between the pool and a worker was malformed.
    #[error(
        "worker protocol error: {0}; the caller and its workers must run the same build of the \
         program"
    )]
    Protocol(String),
}

mod display;
use display::{redis_hint, Args, Id};

/// The variants about one task, binding its `id` field.
macro_rules! about_a_task {
    ($id:ident) => {
        Error::TaskFailed { $id, .. }
            | Error::WorkerDied { $id, .. }
            | Error::Cancelled { $id, .. }
            | Error::Timeout { $id, .. }
            | Error::UpstreamFailed { $id, .. }
            | Error::ShutDown { $id, .. }
            | Error::TaskTimedOut { $id, .. }
            | Error::AttemptsExhausted { $id, .. }
    };
}

impl Error {
    /// The id of the task this error is about, if it is about one.
    pub fn task_id(&self) -> Option<TaskId> {
        match self {
            about_a_task!(id) => *id,
            _ => None,
        }
    }

    /// This error, naming task `task` by its id where it names a task
    /// without one.
    pub(crate) fn with_task_id(mut self, task: TaskId) -> Self {
        if let about_a_task!(id) = &mut self {
            id.get_or_insert(task);
        }
        self
    }

    pub(crate) fn io(
        connector: impl Into<String>,
        operation: impl Into<String>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            connector: connector.into(),
            operation: operation.into(),
            source,
        }
    }
}
