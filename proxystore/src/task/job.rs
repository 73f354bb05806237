//! Jobs: what executors run.

use std::fmt;
use std::sync::{Arc, Mutex};

use super::*;
use crate::error::{Error, Result};
use crate::key::Key;

use std::panic::{catch_unwind, AssertUnwindSafe};

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
    /// The bodies of the payload's [`SECTION`] frames, in order: values
    /// sent from where they are.
    pub(crate) sections: Vec<Box<dyn HeldValue>>,
    /// The inputs the submission put in the store (the caller evicts them
    /// when the task ends; a multi-host executor passes them on, so that
    /// a worker that finds the caller gone can evict them instead).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) created: Vec<Key>,
}

/// Makes copies of a job for later attempts of its task (see
/// `RetryPolicy`): the payload is copied, the argument sections shared.
pub(crate) struct JobTemplate {
    name: Box<str>,
    run: Option<TaskFn>,
    context: Arc<[u8]>,
    result_key: Key,
    payload: Vec<u8>,
    sections: Arc<Vec<Box<dyn HeldValue>>>,
    created: Vec<Key>,
}

/// A section of a job shared by the job's attempts.
struct SharedSection {
    all: Arc<Vec<Box<dyn HeldValue>>>,
    index: usize,
}

impl HeldValue for SharedSection {
    fn bytes(&self) -> &[u8] {
        self.all[self.index].bytes()
    }

    fn format(&self) -> u8 {
        self.all[self.index].format()
    }

    /// Jobs read their sections' bytes only (a result's own section is
    /// what is taken whole); a copy of them, to be safe.
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        Box::new(self.bytes().to_vec())
    }
}

impl Job {
    /// A template of this job, and the job itself made from it.
    pub(crate) fn into_template(self) -> (JobTemplate, Job) {
        let template = JobTemplate {
            name: self.name,
            run: self.run,
            context: self.context,
            result_key: self.result_key,
            payload: self.payload,
            sections: Arc::new(self.sections),
            created: self.created,
        };
        let job = template.job();
        (template, job)
    }
}

impl JobTemplate {
    /// A copy of the job.
    pub(crate) fn job(&self) -> Job {
        Job {
            name: self.name.clone(),
            run: self.run,
            context: self.context.clone(),
            result_key: self.result_key,
            payload: self.payload.clone(),
            sections: (0..self.sections.len())
                .map(|index| {
                    Box::new(SharedSection {
                        all: self.sections.clone(),
                        index,
                    }) as Box<dyn HeldValue>
                })
                .collect(),
            created: self.created.clone(),
        }
    }
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
    let ctx: ExecContext = crate::codec::cbor_from_reader(bytes)
        .map_err(|e| TaskFailure::new(format!("invalid executor context: {e}")))?;
    let ctx = Arc::new(ctx);
    *last = Some((bytes.into(), ctx.clone()));
    Ok(ctx)
}

/// `name` as the shared string a [`TaskContext`](super::TaskContext)
/// holds: the last one is kept per thread, since a worker mostly runs the
/// same tasks again (no allocation per job).
fn shared_name(name: &str) -> Arc<str> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<Arc<str>>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some(kept) if **kept == *name => kept.clone(),
            _ => last.insert(Arc::from(name)).clone(),
        }
    })
}

/// A job read from bytes, borrowing them (no copy of the arguments).
#[derive(Clone, Copy)]
pub(super) struct JobRef<'a> {
    pub(super) name: &'a str,
    context: &'a [u8],
    pub(super) result_key: Key,
    payload: &'a [u8],
}

impl<'a> JobRef<'a> {
    pub(super) fn parse(mut bytes: &'a [u8]) -> Result<Self> {
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

    fn run(&self, run: Option<TaskFn>, sections: Sections<'_>) -> Result<TaskOutput, TaskFailure> {
        let run = match run {
            Some(run) => run,
            None => find_task(self.name)?,
        };
        let ctx = WorkerContext {
            context: decode_context(self.context)?,
            result_key: self.result_key,
        };
        let current = super::TaskContext {
            name: shared_name(self.name),
            context: ctx.context.clone(),
            result_key: self.result_key,
            lease: super::wire::current_lease(),
        };
        let mut args = ArgReader::new(self.payload, sections);
        let gather = ctx.context.metrics;
        let outcome = with_panic_location(|| {
            catch_unwind(AssertUnwindSafe(|| {
                super::context::with_current(current, || {
                    let mut run = || -> Result<TaskOutput, TaskFailure> {
                        let out = run(&ctx, &mut args)?;
                        args.finish()?;
                        Ok(out)
                    };
                    if !gather {
                        return run();
                    }
                    let (out, metrics) = crate::store::record_task(run);
                    out.map(|mut out| {
                        let mut body = Vec::new();
                        metrics.encode(&mut body);
                        push_frame(&mut out.frame, super::wire::METRICS, &[&body]);
                        out
                    })
                })
            }))
        });
        match outcome {
            (Ok(result), _) => result,
            (Err(payload), location) => Err(TaskFailure::new(match location {
                Some(at) => format!("panicked at {at}: {}", panic_message(&*payload)),
                None => format!("panicked: {}", panic_message(&*payload)),
            })),
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
        self.run_output().map(TaskOutput::into_bytes)
    }

    /// Runs the task in this process; a large inline result stays the
    /// value itself.
    pub(crate) fn run_output(&self) -> Result<TaskOutput, TaskFailure> {
        let job = JobRef {
            name: &self.name,
            context: &self.context,
            result_key: self.result_key,
            payload: &self.payload,
        };
        job.run(self.run, Sections::Held(self.sections.iter()))
    }

    /// The job as bytes, for an executor that runs it in another process.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.context.len() + self.payload.len());
        self.write_to(&mut out);
        out
    }

    /// Appends [`to_bytes`](Job::to_bytes): the bodies of sections go back
    /// into their frames.
    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        if self.sections.is_empty() {
            self.write_prefix(out, self.payload.len());
            out.extend_from_slice(&self.payload);
            return;
        }
        let mut payload = Vec::new();
        let (mut rest, mut sections) = (&self.payload[..], self.sections.iter());
        while let Some((tag, body)) = read_frame(&mut rest) {
            if tag == SECTION {
                let section = sections.next().expect("a body per section frame");
                push_frame(&mut payload, VALUE, &[body, section.bytes()]);
            } else {
                push_frame(&mut payload, tag, &[body]);
            }
        }
        self.write_prefix(out, payload.len());
        out.extend_from_slice(&payload);
    }

    /// Everything of the job but its payload's `payload_len` bytes, which
    /// follow: a large payload is then written from where it is, never
    /// copied into one buffer with the rest.
    pub(crate) fn write_prefix(&self, out: &mut Vec<u8>, payload_len: usize) {
        push_frame(out, 0, &[self.name.as_bytes()]);
        push_frame(out, 0, &[&self.context]);
        push_frame(out, 0, &[self.result_key.as_uuid().as_bytes()]);
        out.push(0);
        out.extend_from_slice(&(payload_len as u64).to_le_bytes());
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
            sections: Vec::new(),
            created: Vec::new(),
        })
    }
}

impl JobRef<'_> {
    /// The submitting executor's store, found or built from the context.
    pub(super) fn store(&self) -> Result<crate::store::Store> {
        let ctx =
            decode_context(self.context).map_err(|f| Error::Protocol(f.message().to_string()))?;
        crate::store::get_or_create_store(&ctx.store)
    }
}

/// Runs a job received as bytes (from [`Job::to_bytes`]) in this process.
pub fn run_job_bytes(bytes: &[u8]) -> Result<Vec<u8>, TaskFailure> {
    JobRef::parse(bytes)?
        .run(None, Sections::none())
        .map(TaskOutput::into_bytes)
}

/// Runs a job received from a pool with the bodies of its sections;
/// `interrupted` tells the task whether its caller asked it to stop.
pub(crate) fn run_received(
    bytes: &[u8],
    sections: Vec<crate::codec::RawBuffer>,
    interrupted: Arc<dyn Fn() -> bool + Send + Sync>,
) -> Result<TaskOutput, TaskFailure> {
    let job = JobRef::parse(bytes)?;
    with_interruption(interrupted, || {
        job.run(None, Sections::Received(sections.into_iter()))
    })
}

/// Runs `f` (a job run by a pool, in this process or a worker process) with
/// `interrupted` telling its task whether its caller asked it to stop.
fn with_interruption<T>(
    interrupted: Arc<dyn Fn() -> bool + Send + Sync>,
    f: impl FnOnce() -> T,
) -> T {
    /// A pool runs its jobs once: the job is always its own.
    struct PoolRun(Arc<dyn Fn() -> bool + Send + Sync>);
    impl super::wire::RunLease for PoolRun {
        fn is_current(&self) -> bool {
            true
        }
        fn confirm(&self) -> bool {
            true
        }
        fn interrupted(&self) -> bool {
            (self.0)()
        }
    }
    super::wire::with_lease(Arc::new(PoolRun(interrupted)), f)
}

thread_local! {
    /// Inside a task: where its panic happened, once it has.
    static PANIC_AT: std::cell::RefCell<Option<Option<String>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f`, and tells where a panic in it happened (file:line:column).
///
/// A panic's location is known only to the panic hook: the first call
/// installs one that records it for tasks and then hands every panic to the
/// hook that was there before (which prints it, by default). A program that
/// sets a hook of its own later keeps its own, and failures then say only
/// what panicked.
fn with_panic_location<T>(f: impl FnOnce() -> T) -> (T, Option<String>) {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = PANIC_AT.try_with(|at| {
                if let Ok(mut at) = at.try_borrow_mut() {
                    if let Some(slot) = at.as_mut() {
                        *slot = info.location().map(|l| l.to_string());
                    }
                }
            });
            previous(info);
        }));
    });
    let outer = PANIC_AT.with(|at| at.borrow_mut().replace(None));
    let value = f();
    let location = PANIC_AT.with(|at| std::mem::replace(&mut *at.borrow_mut(), outer));
    (value, location.flatten())
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
