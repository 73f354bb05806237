//! The wire format of task arguments and results.

use std::fmt;
use std::sync::Arc;

use super::section::{self, HeldValue, Section, Sections, SECTION_MIN};
use super::*;
use crate::codec;
use crate::error::Result;
use crate::key::Key;
use crate::policy::{ShouldProxy, ValueInfo};
use crate::proxy::Factory;
use crate::store::{get_or_create_store, Store};
use crate::Storable;

pub(crate) const VALUE: u8 = 0;
pub(crate) const PROXY: u8 = 1;
pub(crate) const OWNED: u8 = 2;
/// An inline value whose body travels beside the frames (the frame holds
/// its header only): see [`section`](super::section).
pub(crate) const SECTION: u8 = 3;
/// A reference to a future's object ([`StoreFuture`](crate::StoreFuture)):
/// the wait (8 bytes), then as [`PROXY`]. The worker waits for the object.
pub(crate) const FUTURE: u8 = 4;

/// Appends the frame of a reference to a stored object (or to a future's).
/// After a task's result frame: what the task did in the store (see
/// `StoreExecutor::worker_metrics`).
pub(crate) const METRICS: u8 = 5;

pub(super) fn push_reference(out: &mut Vec<u8>, factory: &Factory) {
    let (key, config) = factory.frame_parts();
    match factory.wait() {
        None => push_frame(out, PROXY, &[&key, &config]),
        Some(wait) => push_frame(out, FUTURE, &[&wait.to_bytes(), &key, &config]),
    }
}

pub(super) fn push_frame(out: &mut Vec<u8>, tag: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.reserve(9 + len);
    out.push(tag);
    out.extend_from_slice(&(len as u64).to_le_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
}

/// Where [`encode_value`] put a value: the key it was stored under, or the value
/// itself when it travels as a section.
pub(super) type EncodedValue = (Option<Key>, Option<Box<dyn HeldValue>>);

/// Encodes `value` inline, or puts it in the store, as the policies say;
/// a value that is itself a proxy always goes inline. Appends its frame to
/// `out`; returns the key it was put under, and the value itself when its
/// body travels beside the frame as a [section](super::section).
///
/// With `expiry`, a value put in the store is set to expire after its
/// duration in the same request where the connector can; `expiry`'s flag
/// is cleared when it could not.
pub(super) fn encode_value<T: Storable>(
    value: T,
    listed: bool,
    policy: &ShouldProxy,
    store: impl FnOnce() -> Result<Store>,
    key: impl FnOnce(&Store) -> Result<Key>,
    expiry: Option<&mut Expiry>,
    out: &mut Vec<u8>,
) -> Result<EncodedValue> {
    let encoded = codec::encode(&value)?;
    if crate::proxy::is_proxy(&value) {
        // Already a reference (ProxyStore never proxies a proxy): it travels
        // as itself, and the object stays its owner's to evict.
        push_frame(out, VALUE, &encoded.parts());
        return Ok((None, None));
    }
    let proxy = listed
        || (!policy.is_never()
            && policy.should_proxy(&ValueInfo {
                type_name: std::any::type_name::<T>(),
                size: encoded.len(),
                value: &value,
            })?);
    if proxy {
        let store = store()?;
        let key = key(&store)?;
        match expiry {
            Some(expiry) => {
                if !store.set_encoded_expiring(&key, &encoded, expiry.after)? {
                    expiry.all_set = false;
                }
            }
            None => store.set_encoded(&key, &encoded)?,
        }
        let (key_bytes, config) = store.factory(key).frame_parts();
        push_frame(out, PROXY, &[&key_bytes, &config]);
        return Ok((Some(key), None));
    }
    let (head, raw) = encoded.split();
    if raw && encoded.len() - head.len() >= SECTION_MIN {
        push_frame(out, SECTION, &[head]);
        drop(encoded);
        return Ok((None, Some(section::hold(value))));
    }
    push_frame(out, VALUE, &encoded.parts());
    Ok((None, None))
}

/// The expiry of the inputs a submission puts in the store, and whether
/// every one of them got it as it was stored.
pub(crate) struct Expiry {
    pub(crate) after: std::time::Duration,
    pub(crate) all_set: bool,
}

/// Another task's result as an argument frame: a result that went through
/// the store becomes a reference to it (a plain one: the argument does not
/// own it), an inline one a copy of its value.
pub(crate) fn input_frame(output: &TaskOutput) -> Result<Vec<u8>, String> {
    let mut rest = &output.frame[..];
    let (tag, body) = read_frame(&mut rest).ok_or("its result is malformed (truncated)")?;
    let mut frame = Vec::with_capacity(9 + body.len());
    match (tag, &output.section) {
        (VALUE, None) => push_frame(&mut frame, VALUE, &[body]),
        (PROXY | OWNED, None) => push_frame(&mut frame, PROXY, &[body]),
        (SECTION, Some(section)) => push_frame(&mut frame, VALUE, &[body, section.bytes()]),
        _ => return Err(format!("its result is malformed (frame tag {tag})")),
    }
    Ok(frame)
}

/// The stored object an argument frame refers to, if it is a reference.
pub(crate) fn frame_reference(frame: &[u8]) -> Option<Factory> {
    let mut rest = frame;
    match read_frame(&mut rest)? {
        (PROXY, body) => Factory::from_frame(body).ok(),
        _ => None,
    }
}

/// Reads a task's arguments in a worker; used by generated code.
#[doc(hidden)]
pub struct ArgReader<'a> {
    bytes: &'a [u8],
    index: usize,
    sections: Sections<'a>,
}

pub(super) fn read_frame<'a>(bytes: &mut &'a [u8]) -> Option<(u8, &'a [u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let len = usize::try_from(u64::from_le_bytes(rest.get(..8)?.try_into().ok()?)).ok()?;
    let body = rest.get(8..8usize.checked_add(len)?)?;
    *bytes = &rest[8 + len..];
    Some((tag, body))
}

impl<'a> ArgReader<'a> {
    pub(crate) fn new(bytes: &'a [u8], sections: Sections<'a>) -> Self {
        ArgReader {
            bytes,
            index: 0,
            sections,
        }
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
            SECTION => {
                let section = self
                    .sections
                    .next()
                    .ok_or_else(|| TaskFailure::new(format!("{}: its body is missing", what())))?;
                codec::decode_split::<T>(body, section).map_err(|f| {
                    TaskFailure::new(format!("{} could not be decoded: {}", what(), f.reason))
                })
            }
            PROXY | FUTURE => {
                let (wait, body) = match tag {
                    FUTURE if body.len() >= 8 => {
                        let (wait, rest) = body.split_at(8);
                        let wait = crate::proxy::Wait::from_bytes(wait.try_into().expect("8"));
                        (Some(wait), rest)
                    }
                    FUTURE => {
                        return Err(TaskFailure::new(format!(
                            "{}: a future reference of {} bytes is too short",
                            what(),
                            body.len()
                        )))
                    }
                    _ => (None, body),
                };
                let factory = Factory::from_frame(body)
                    .map_err(|e| {
                        TaskFailure::new(format!("{}: invalid proxy reference: {e}", what()))
                    })?
                    .with_wait(wait);
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

    pub(super) fn finish(&self) -> Result<(), TaskFailure> {
        if self.bytes.is_empty() && self.sections.is_empty() {
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
    pub(super) context: Arc<ExecContext>,
    pub(super) result_key: Key,
}

/// The encoded result of a task; used by generated code.
#[doc(hidden)]
pub struct TaskOutput {
    /// One frame.
    pub(crate) frame: Vec<u8>,
    /// The body of a [`SECTION`] frame.
    pub(crate) section: Option<Section>,
}

impl TaskOutput {
    /// Whether the result was put in the store (its frame is a reference,
    /// owned or not).
    pub(crate) fn is_stored(&self) -> bool {
        matches!(self.frame.first(), Some(&(PROXY | OWNED)))
    }

    /// A result received as bytes (one frame, no section).
    pub(crate) fn from_bytes(frame: Vec<u8>) -> Self {
        TaskOutput {
            frame,
            section: None,
        }
    }

    /// Takes the task's store metrics off the end of its result, if its
    /// worker sent them.
    pub(crate) fn take_metrics(&mut self) -> Option<crate::store::Metrics> {
        let mut rest = &self.frame[..];
        read_frame(&mut rest)?;
        let first = self.frame.len() - rest.len();
        let metrics = match read_frame(&mut rest) {
            Some((METRICS, body)) => crate::store::Metrics::decode(body),
            _ => None,
        };
        self.frame.truncate(first);
        metrics
    }

    /// The result as one buffer: a section goes back into its frame.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        let Some(section) = self.section else {
            return self.frame;
        };
        let mut rest = &self.frame[..];
        match read_frame(&mut rest) {
            Some((SECTION, head)) => {
                let mut out = Vec::new();
                push_frame(&mut out, VALUE, &[head, section.bytes()]);
                // Frames that follow the result (its metrics) stay.
                out.extend_from_slice(rest);
                out
            }
            _ => self.frame,
        }
    }
}

/// Encodes a task's return value, through the store if listed or if the
/// policy says so; used by generated code.
#[doc(hidden)]
pub fn output<R: Storable>(
    ctx: &WorkerContext,
    value: R,
    listed: bool,
) -> Result<TaskOutput, TaskFailure> {
    let mut frame = Vec::new();
    let (stored, held) = encode_value(
        value,
        listed,
        &ctx.context.policy,
        || {
            if !result_may_be_stored() {
                return Err(crate::error::Error::Protocol(
                    "this worker could not confirm that the job is still its own (another \
                     worker took it over while this one was taken for dead, or the queue's \
                     server was out of reach); its result is not stored, so as not to \
                     overwrite or bring back the other run's"
                        .into(),
                ));
            }
            get_or_create_store(&ctx.context.store)
        },
        |_| Ok(ctx.result_key),
        None,
        &mut frame,
    )?;
    if stored.is_some() && ctx.context.ownership {
        frame[0] = OWNED;
    }
    Ok(TaskOutput {
        frame,
        section: held.map(Section::Held),
    })
}

/// A run's hold on its job, for executors that may give a job to another
/// worker while it runs (the multi-host executor, whose worker may be
/// taken for dead): see [`ReceivedJob::run_with_lease`](super::ReceivedJob::run_with_lease).
/// The task layer asks it; the executor implements it.
pub trait RunLease: Send + Sync {
    /// What the worker knows without asking anyone: false once it learnt
    /// that the job is no longer its own (or presumably is not).
    fn is_current(&self) -> bool;

    /// Asks whoever decides: true only if the job is confirmed to be this
    /// run's own. Asked before a result is stored.
    fn confirm(&self) -> bool;

    /// Whether the task's caller asked it to stop (see
    /// [`TaskFuture::interrupt`](crate::executor::TaskFuture::interrupt)).
    fn interrupted(&self) -> bool {
        false
    }
}

thread_local! {
    /// The lease of the job running on this thread, if its executor may
    /// take it away.
    static LEASE: std::cell::RefCell<Option<Arc<dyn RunLease>>> =
        const { std::cell::RefCell::new(None) };
}

/// The lease of the job running on this thread, if any.
pub(super) fn current_lease() -> Option<Arc<dyn RunLease>> {
    LEASE.with(|l| l.borrow().clone())
}

fn result_may_be_stored() -> bool {
    current_lease().is_none_or(|lease| lease.confirm())
}

/// Runs `f` with `lease` as the running job's: a result of a run that no
/// longer owns its job (or cannot confirm it does) is not stored, and
/// [`TaskContext::is_current`](super::TaskContext::is_current) reports it.
pub(super) fn with_lease<T>(lease: Arc<dyn RunLease>, f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            LEASE.with(|l| l.borrow_mut().take());
        }
    }
    LEASE.with(|l| *l.borrow_mut() = Some(lease));
    let _reset = Reset;
    f()
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
