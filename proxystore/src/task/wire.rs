//! The wire format of task arguments and results.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

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

pub(super) fn push_frame(out: &mut Vec<u8>, tag: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.reserve(9 + len);
    out.push(tag);
    out.extend_from_slice(&(len as u64).to_le_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
}

pub(super) fn cbor<T: Serialize>(value: &T) -> Vec<u8> {
    let mut buf = Vec::with_capacity(192);
    ciborium::into_writer(value, &mut buf).expect("factories serialize");
    buf
}

/// Encodes `value` inline, or puts it in the store, as the policies say;
/// a value that is itself a proxy always goes inline. Returns the tag and
/// bytes of its frame, and the key it was put under.
pub(super) fn place<T: Storable>(
    value: &T,
    listed: bool,
    policy: &ShouldProxy,
    store: impl FnOnce() -> Result<Store>,
    key: impl FnOnce(&Store) -> Result<Key>,
) -> Result<(Vec<u8>, Option<Key>)> {
    let encoded = codec::encode(value)?;
    if crate::proxy::is_proxy(value) {
        // Already a reference (ProxyStore never proxies a proxy): it travels
        // as itself, and the object stays its owner's to evict.
        let mut frame = Vec::new();
        push_frame(&mut frame, VALUE, &encoded.parts());
        return Ok((frame, None));
    }
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

/// Reads a task's arguments in a worker; used by generated code.
#[doc(hidden)]
pub struct ArgReader<'a> {
    bytes: &'a [u8],
    index: usize,
}

pub(super) fn read_frame<'a>(bytes: &mut &'a [u8]) -> Option<(u8, &'a [u8])> {
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
                let factory: Factory = crate::codec::cbor_from_reader(body).map_err(|e| {
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

    pub(super) fn finish(&self) -> Result<(), TaskFailure> {
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
    pub(super) context: Arc<ExecContext>,
    pub(super) result_key: Key,
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
        || {
            if !result_may_be_stored() {
                return Err(crate::error::Error::Protocol(
                    "this job was taken over by another worker while it ran (this worker was \
                     taken for dead); its result is not stored, so as not to overwrite the \
                     other run's"
                        .into(),
                ));
            }
            get_or_create_store(&ctx.context.store)
        },
        |_| Ok(ctx.result_key),
    )?;
    if stored.is_some() && ctx.context.ownership {
        frame[0] = OWNED;
    }
    Ok(TaskOutput(frame))
}

thread_local! {
    /// Set by an executor that may have a job taken away while it runs
    /// (the multi-host executor): whether this run still owns the job.
    static RESULT_GUARD: std::cell::RefCell<Option<Box<dyn FnMut() -> bool>>> =
        const { std::cell::RefCell::new(None) };
}

fn result_may_be_stored() -> bool {
    RESULT_GUARD.with(|g| g.borrow_mut().as_mut().is_none_or(|check| check()))
}

/// Runs `f` with `guard` asked before a result is put in the store on this
/// thread: a result of a run that no longer owns its job is not stored.
#[cfg(feature = "cluster")]
pub(crate) fn with_result_guard<T>(guard: Box<dyn FnMut() -> bool>, f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            RESULT_GUARD.with(|g| g.borrow_mut().take());
        }
    }
    RESULT_GUARD.with(|g| *g.borrow_mut() = Some(guard));
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
