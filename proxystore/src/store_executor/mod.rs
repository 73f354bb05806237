//! [`StoreExecutor`]: an executor that moves arguments and results through
//! a store.
//!
//! ```no_run
//! use proxystore::connectors::FileConnector;
//! use proxystore::executor::ProcessPool;
//! use proxystore::{proxied, Store, StoreExecutor};
//!
//! #[proxied(types = [String])]
//! fn concat(base: String, num: i64) -> String {
//!     format!("{base}-{num}")
//! }
//!
//! fn main() -> proxystore::Result<()> {
//!     proxystore::worker::init();
//!     let store = Store::new("example", FileConnector::new("./object-cache")?)?;
//!     let executor = StoreExecutor::new(ProcessPool::new(2)?, store);
//!     let result = executor.submit(concat::task("foobar".to_string(), 42))?.result()?;
//!     assert!(result.is_proxy());
//!     assert_eq!(*result, "foobar-42");
//!     Ok(())
//! }   // dropping the result evicts it; dropping the executor closes the store
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::executor::{Completion, Executor, TaskFuture};

/// Hands `job` to `executor` for task `shared`; a task that may run again
/// (a retry policy, a timeout) keeps what it needs to submit it again.
pub(crate) fn submit_job(executor: &Arc<dyn Executor>, shared: &Arc<TaskCell>, job: Job) {
    match shared.attempts() {
        None => executor.submit(job, Completion::new(shared.clone())),
        Some(attempts) => {
            // A multi-host worker evicts the inputs it is told of when its
            // job ends, however it ends; a job that may run again must
            // find them: the caller evicts them when the task finishes.
            let mut job = job;
            job.created.clear();
            let (template, job) = job.into_template();
            let again = executor.clone();
            attempts.set_resubmit(move |completion| again.submit(template.job(), completion));
            executor.submit(job, Completion::new(shared.clone()));
        }
    }
}
use crate::policy::ShouldProxy;
use crate::store::Store;
use crate::task::handle::{Attempts, Counters, TaskCell};
use crate::task::{discard_output, EncodedTask, ExecContext, Job, Task, TaskOutput, TaskValue};
use crate::task::{Progress, RetryPolicy};
use crate::Storable;

mod deadline;
mod held;
mod keeper;
mod settings;
mod stage;

use deadline::Deadline;
use keeper::Keeper;

/// See [`StoreExecutor::input_expiry`].
pub const DEFAULT_INPUT_EXPIRY: std::time::Duration = std::time::Duration::from_secs(60);
use held::{HeldJob, HeldState, HeldTasks};
use stage::{evict_all, stage, Staged};

/// Wraps an [`Executor`] so that task arguments and results go through a
/// [`Store`].
///
/// - Parameters and results whose types are listed in
///   `#[proxied(types = [...])]` always go through the store; all others
///   are offered to the runtime policy ([`ShouldProxy`], default
///   [`ShouldProxy::Never`]), which is evaluated in workers for results.
/// - A value that already is a proxy (an argument or a result of type
///   [`Proxy<T>`](crate::Proxy)) is never proxied again: the reference is
///   passed as it is, and the executor never evicts its object.
/// - The proxied inputs a submission created are evicted when its task
///   ends, however it ends.
/// - With `ownership` (the default), a proxied result comes back as an
///   [`OwnedProxy`](crate::OwnedProxy) that evicts it when dropped;
///   without, as a plain [`Proxy`](crate::Proxy) the caller cleans up.
/// - [`shutdown`](StoreExecutor::shutdown) and dropping the executor
///   (which shuts it down, waiting for running tasks) close the store with
///   `close_store` (the default), as ProxyStore's executor does.
pub struct StoreExecutor {
    executor: Arc<dyn Executor>,
    executor_name: &'static str,
    store: Store,
    policy: ShouldProxy,
    ownership: bool,
    /// Workers send back what each task did in the store.
    gather_metrics: bool,
    close_store: bool,
    context: Arc<[u8]>,
    shut_down: AtomicBool,
    store_closed: AtomicBool,
    counters: Arc<Counters>,
    /// Tasks waiting for other tasks' results before they are submitted.
    held: Arc<HeldTasks>,
    /// Renews the expiry of inputs while this caller lives.
    keeper: Arc<Keeper>,
    /// For tasks that name none of their own.
    retry: Option<RetryPolicy>,
    timeout: Option<std::time::Duration>,
}

impl StoreExecutor {
    /// Wraps `executor` with `store`, with the default options.
    pub fn new<E: Executor>(executor: E, store: Store) -> Self {
        let full = std::any::type_name::<E>();
        let path = full.split('<').next().unwrap_or(full);
        let executor_name = path.rsplit("::").next().unwrap_or(path);
        let mut this = StoreExecutor {
            executor: Arc::new(executor),
            executor_name,
            store: store.clone(),
            policy: ShouldProxy::Never,
            ownership: true,
            gather_metrics: false,
            close_store: true,
            context: Arc::from(&[][..]),
            shut_down: AtomicBool::new(false),
            store_closed: AtomicBool::new(false),
            counters: Arc::default(),
            held: Arc::default(),
            keeper: Keeper::new(store.clone(), DEFAULT_INPUT_EXPIRY),
            retry: None,
            timeout: None,
        };
        this.encode_context();
        this
    }

    fn encode_context(&mut self) {
        let context = ExecContext {
            store: self.store.config().clone(),
            policy: self.policy.clone(),
            ownership: self.ownership,
            metrics: self.gather_metrics,
        };
        let mut bytes = Vec::new();
        ciborium::into_writer(&context, &mut bytes).expect("contexts serialize");
        self.context = bytes.into();
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// What this executor's tasks did in stores, summed over those whose
    /// workers reported it (see [`gather_worker_metrics`](StoreExecutor::gather_worker_metrics));
    /// what the caller itself did is in the store's own
    /// [`metrics`](Store::metrics).
    pub fn worker_metrics(&self) -> crate::store::Metrics {
        self.counters.metrics()
    }

    /// How this executor's tasks are doing: submitted, pending, running,
    /// done, failed, cancelled (see [`Progress`], with an example).
    pub fn progress(&self) -> Progress {
        self.counters.progress()
    }

    /// Submits tasks in order, marking each with its index.
    fn submit_indexed<R: Storable, C: FromIterator<TaskFuture<R>>>(
        &self,
        tasks: impl IntoIterator<Item = Task<R>>,
    ) -> Result<C> {
        tasks
            .into_iter()
            .enumerate()
            .map(|(index, task)| {
                let future = self.submit(task)?;
                future.cell().set_index(index);
                Ok(future)
            })
            .collect()
    }

    /// Submits a task; see [`TaskFuture`].
    pub fn submit<R: Storable>(&self, task: Task<R>) -> Result<TaskFuture<R>> {
        self.check_open(task.name())?;
        let staged = stage(
            &self.store,
            &self.policy,
            self.executor.task_reach(),
            self.executor_name,
            self.keeper.expiry(),
            task,
        )?;
        Ok(self.dispatch(staged))
    }

    /// Submits a task without blocking an async runtime's thread: the
    /// arguments are put in the store on a background thread (see
    /// [`submit`](StoreExecutor::submit)). If the returned future is
    /// dropped before it completes, the task is not submitted and what was
    /// stored for it is evicted.
    ///
    /// Await the [`TaskFuture`] for the result without blocking either,
    /// then read a stored result with [`TaskValue::resolved`].
    ///
    /// ```
    /// use proxystore::connectors::LocalConnector;
    /// use proxystore::executor::ThreadPool;
    /// use proxystore::{proxied, Store, StoreExecutor};
    ///
    /// #[proxied(types = [Vec<u8>])]
    /// fn reverse(mut bytes: Vec<u8>) -> Vec<u8> {
    ///     bytes.reverse();
    ///     bytes
    /// }
    ///
    /// async fn run(executor: &StoreExecutor) -> proxystore::Result<u8> {
    ///     let future = executor.submit_async(reverse::task(vec![1, 2, 3])).await?;
    ///     let result = future.await?.resolved().await?;   // read off this thread
    ///     Ok(result[0])
    /// }
    ///
    /// fn main() -> proxystore::Result<()> {
    ///     let store = Store::new("submit-async-doc", LocalConnector::new())?;
    ///     let executor = StoreExecutor::new(ThreadPool::new(2)?, store);
    ///     // Any runtime drives it (tokio, see examples/async_tokio.rs); a
    ///     // tiny one here.
    ///     assert_eq!(block_on(run(&executor))?, 3);
    ///     Ok(())
    /// }
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     struct Unpark(std::thread::Thread);
    /// #     impl std::task::Wake for Unpark {
    /// #         fn wake(self: std::sync::Arc<Self>) { self.0.unpark() }
    /// #     }
    /// #     let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    /// #     let mut cx = std::task::Context::from_waker(&waker);
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop {
    /// #         if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; }
    /// #         std::thread::park();
    /// #     }
    /// # }
    /// ```
    pub async fn submit_async<R: Storable>(&self, task: Task<R>) -> Result<TaskFuture<R>> {
        self.check_open(task.name())?;
        let (store, policy) = (self.store.clone(), self.policy.clone());
        let (reach, executor) = (self.executor.task_reach(), self.executor_name);
        let expiry = self.keeper.expiry();
        let cleanup = self.store.clone();
        let staged = crate::runtime::unblock::unblock(
            move || stage(&store, &policy, reach, executor, expiry, task),
            move |staged| {
                if let Ok(staged) = staged {
                    evict_all(&cleanup, &staged.created);
                }
            },
        )?
        .await??;
        Ok(self.dispatch(staged))
    }

    fn check_open(&self, task: &str) -> Result<()> {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(Error::ShutDown {
                task: task.into(),
                id: None,
            });
        }
        Ok(())
    }

    /// Hands a staged task to the executor (at once, or once its upstream
    /// tasks are done). Never blocks on the store.
    fn dispatch<R: Storable>(&self, staged: Staged) -> TaskFuture<R> {
        let Staged {
            encoded,
            created,
            expiring,
            result_key,
        } = staged;
        let EncodedTask {
            name,
            run,
            payload,
            sections,
            result_listed,
            owned,
            upstreams,
            after,
            retry,
            timeout,
            summary,
        } = encoded;
        // The upstream tasks, in argument order.
        let inputs: Vec<Arc<TaskCell>> = upstreams
            .iter()
            .map(|u| u.dependency.shared.clone())
            .collect();
        // Only a task held for its inputs needs an id among the held ones.
        let held_id = if inputs.is_empty() {
            0
        } else {
            self.held.next.fetch_add(1, Ordering::Relaxed)
        };
        let created_keys = created.clone();
        self.keeper.keep(&created, expiring);
        let cleanup = {
            let store = self.store.clone();
            let keeper = self.keeper.clone();
            let proxied_result = result_listed || !self.policy.is_never();
            // An owned result is read by the caller or evicted when
            // dropped: worth reading ahead with the inputs' eviction.
            let read_ahead = proxied_result && self.ownership;
            let held = (!inputs.is_empty()).then(|| self.held.clone());
            let needed =
                !created.is_empty() || proxied_result || !owned.is_empty() || !upstreams.is_empty();
            needed.then(|| {
                Box::new(move |output: &Result<TaskOutput>| {
                    keeper.release(&created);
                    // Read ahead only in the round trip that evicts the
                    // inputs, never in one of its own.
                    let stored = output.as_ref().is_ok_and(TaskOutput::is_stored);
                    let result =
                        (read_ahead && stored && !created.is_empty()).then_some(result_key);
                    store.evict_inputs(&created, result);
                    // A worker may have stored the result before failing or
                    // dying; nobody else knows its key.
                    if output.is_err() && proxied_result {
                        evict_all(&store, &[result_key]);
                    }
                    // Owned inputs are evicted, and upstream results the
                    // task held are let go (discarded if nobody else wants
                    // them).
                    drop(owned);
                    drop(upstreams);
                    if let Some(held) = held {
                        held.remove(held_id);
                    }
                }) as Box<dyn FnOnce(&Result<TaskOutput>) + Send>
            })
        };
        let shared = TaskCell::new(name, cleanup, Some(discard_output), self.counters.clone());
        shared.set_arguments(summary);
        let (retry, timeout) = (
            retry.or_else(|| self.retry.clone()),
            timeout.or(self.timeout),
        );
        if retry.is_some() || timeout.is_some() {
            shared.set_attempts(Attempts::new(retry, timeout));
        }
        let job = Job {
            name: name.into(),
            run: Some(run),
            context: self.context.clone(),
            result_key,
            payload,
            sections,
            created: created_keys,
        };
        if inputs.is_empty() {
            tracing::debug!(task = name, "submit");
            submit_job(&self.executor, &shared, job);
            return TaskFuture::new(shared);
        }
        tracing::debug!(
            task = name,
            upstreams = inputs.len(),
            "submit, held for its inputs"
        );
        let held = Arc::new(HeldJob {
            id: held_id,
            executor: self.executor.clone(),
            executor_name: self.executor_name,
            shared: shared.clone(),
            tasks: self.held.clone(),
            state: Mutex::new(HeldState {
                job: Some(job),
                remaining: inputs.len(),
                frames: vec![Vec::new(); inputs.len()],
                after,
                failure: None,
            }),
        });
        self.held.insert(held_id, shared.clone());
        for (index, upstream) in inputs.iter().enumerate() {
            let held = held.clone();
            let (name, id) = (upstream.name.to_string(), upstream.id);
            upstream.on_output(Box::new(move |output| held.fill(index, &name, id, output)));
        }
        TaskFuture::new(shared)
    }

    /// Submits every task at once and yields their results in order.
    ///
    /// Each task's proxied inputs are evicted as soon as that task is done.
    pub fn map<R: Storable>(
        &self,
        tasks: impl IntoIterator<Item = Task<R>>,
    ) -> Result<impl Iterator<Item = Result<TaskValue<R>>>> {
        let futures: Vec<_> = self.submit_indexed(tasks)?;
        Ok(futures.into_iter().map(TaskFuture::result))
    }

    /// Like [`map`](StoreExecutor::map), with a deadline: a result not
    /// ready `timeout` after this call comes as [`Error::Timeout`], and its
    /// task is cancelled if it has not started (as in Python's
    /// `Executor.map(timeout=)`). Dropping the iterator cancels the tasks
    /// that have not started.
    pub fn map_timeout<R: Storable>(
        &self,
        tasks: impl IntoIterator<Item = Task<R>>,
        timeout: std::time::Duration,
    ) -> Result<impl Iterator<Item = Result<TaskValue<R>>>> {
        let deadline = std::time::Instant::now() + timeout;
        let futures: std::collections::VecDeque<_> = self.submit_indexed(tasks)?;
        Ok(Deadline { futures, deadline })
    }

    /// Submits every task at once and yields each result as its task
    /// finishes, with the index of its task in `tasks`.
    ///
    /// ```
    /// use proxystore::connectors::LocalConnector;
    /// use proxystore::executor::ThreadPool;
    /// use proxystore::{proxied, Store, StoreExecutor};
    ///
    /// #[proxied]
    /// fn square(x: i64) -> i64 {
    ///     x * x
    /// }
    ///
    /// fn main() -> proxystore::Result<()> {
    ///     let store = Store::new("map-completed-doc", LocalConnector::new())?;
    ///     let executor = StoreExecutor::new(ThreadPool::new(2)?, store);
    ///     let mut squares = vec![0; 4];
    ///     for (index, result) in executor.map_as_completed((0..4).map(square::task))? {
    ///         squares[index] = *result?;
    ///     }
    ///     assert_eq!(squares, [0, 1, 4, 9]);
    ///     Ok(())
    /// }
    /// ```
    pub fn map_as_completed<R: Storable>(
        &self,
        tasks: impl IntoIterator<Item = Task<R>>,
    ) -> Result<impl Iterator<Item = (usize, Result<TaskValue<R>>)>> {
        let futures: Vec<_> = self.submit_indexed(tasks)?;
        let mut done = crate::executor::as_completed(futures);
        Ok(std::iter::from_fn(move || {
            let (index, future) = done.next_with_index()?;
            Some((index, future.result()))
        }))
    }

    /// Stops accepting tasks and, with `close_store` (the default), closes
    /// the store, like ProxyStore's `shutdown`.
    ///
    /// With `cancel_futures`, tasks not yet started are cancelled (their
    /// inputs evicted). With `wait`, returns when the running tasks are done
    /// (their inputs evicted too), and only then closes the store.
    ///
    /// Without `wait`, the store is closed at once, while tasks may still
    /// be running: one that then reads a proxied input or stores a proxied
    /// result fails its future (with [`Error::StoreClosed`] on a
    /// [`ThreadPool`](crate::executor::ThreadPool); on a
    /// [`ProcessPool`](crate::executor::ProcessPool), with the missing
    /// object or the I/O error the worker met), and a result that comes
    /// back as a proxy cannot be resolved. Tasks that need neither complete
    /// normally. To keep results usable, wait, or set `close_store(false)`
    /// and close the store yourself.
    ///
    /// The store is closed once: later calls, and dropping the executor,
    /// do not close it again. A failure to close is logged.
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.shut_down.store(true, Ordering::Release);
        if cancel_futures {
            // Tasks still waiting for their inputs have not started.
            for task in self.held.pending() {
                task.cancel();
            }
        } else if wait && !crate::executor::on_executor_thread() {
            // Their inputs are being computed by this executor: let them
            // be submitted before it stops taking jobs. (Not on one of the
            // executor's own threads, a done callback dropping the last
            // handle say: that thread may be the one their inputs wait
            // for. They are then refused by the stopped executor and fail
            // with `ShutDown`.)
            self.held.wait_until_empty();
        }
        self.executor.shutdown(wait, cancel_futures);
        if wait {
            self.keeper.stop();
            // Results dropped on an async runtime's thread, evicted in the
            // background (see `Store::exists`).
            crate::runtime::deferred::flush(crate::runtime::deferred::FLUSH_BOUND);
        }
        if self.close_store && !self.store_closed.swap(true, Ordering::AcqRel) {
            if let Err(e) = self.store.close() {
                tracing::warn!(store = %self.store.name(), error = %e, "closing the store failed");
            }
        }
    }
}

impl crate::task::TaskContext {
    /// A [`StoreExecutor`] over `executor` configured like the one that
    /// submitted this task (its store, policy and ownership), to submit
    /// follow-up tasks from inside a task. It does not close the store
    /// when it shuts down: the store is the submitter's.
    pub fn executor(&self, executor: impl Executor) -> Result<StoreExecutor> {
        Ok(StoreExecutor::new(executor, self.store()?)
            .should_proxy(self.policy().clone())
            .ownership(self.ownership())
            .close_store(false))
    }
}

impl Drop for StoreExecutor {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}

impl std::fmt::Debug for StoreExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreExecutor")
            .field("store", &self.store.name())
            .field("policy", &self.policy)
            .field("ownership", &self.ownership)
            .field("close_store", &self.close_store)
            .finish_non_exhaustive()
    }
}
