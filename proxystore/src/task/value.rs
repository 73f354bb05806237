//! Task results as the caller sees them.

use std::fmt;

use super::*;
use crate::codec;
use crate::error::{Error, Result};
use crate::owned::OwnedProxy;
use crate::proxy::{Factory, Proxy};
use crate::Storable;

/// A task's result, decoded in the caller: a plain value, an owned proxy
/// (ownership on: dropping it evicts the object) or a plain proxy
/// (ownership off: the caller cleans up). Dereferences to the value in
/// every case.
///
/// Pass it to the next task as it is (`&result`, or `result` to move an
/// owned object into that task): a stored result travels as a reference,
/// without being read here.
///
/// Cloning never copies a stored object: the clone of a stored result is
/// a [`Proxy`] of the same object. The clone of an owned result shares its
/// ownership: the object is evicted once the original and every clone are
/// dropped, as Ray's and Dask's references do. Only an inline value is
/// cloned as a value.
///
/// ```
/// use proxystore::connectors::LocalConnector;
/// use proxystore::executor::ThreadPool;
/// use proxystore::{proxied, Store, StoreExecutor, TaskValue};
///
/// #[proxied(types = [Vec<f64>])]
/// fn ramp(n: usize) -> Vec<f64> {
///     (0..n).map(|i| i as f64).collect()
/// }
///
/// #[proxied(types = [Vec<f64>])]
/// fn total(values: Vec<f64>) -> f64 {
///     values.iter().sum()
/// }
///
/// fn main() -> proxystore::Result<()> {
///     let store = Store::new("task-value-doc", LocalConnector::new())?;
///     let executor = StoreExecutor::new(ThreadPool::new(2)?, store);
///     let values: TaskValue<Vec<f64>> = executor.submit(ramp::task(5))?.result()?;
///     let key = values.key().expect("a listed result is stored");
///     let alias = values.clone();                 // a proxy of the same object
///     assert_eq!(alias.key(), Some(key));
///     // Straight to the next task, by reference: not read here.
///     let sum = executor.submit(total::task(&values))?.result()?;
///     assert_eq!(*sum, 10.0);
///     Ok(())
/// }
/// ```
pub enum TaskValue<R: Storable> {
    /// The value came back inline.
    Value(R),
    /// The value is in the store, owned by this handle.
    Owned(OwnedProxy<R>),
    /// The value is in the store; nothing evicts it automatically.
    Proxy(Proxy<R>),
}

impl<R: Storable> TaskValue<R> {
    /// Decodes the result of task `shared`; an owned result lets that
    /// task's dependents finish with it before it is evicted.
    pub(crate) fn decode(
        output: TaskOutput,
        shared: &std::sync::Arc<crate::task::handle::TaskCell>,
    ) -> Result<Self> {
        let TaskOutput { frame, section } = output;
        let mut rest = &frame[..];
        let bad = |what: String| Error::Protocol(format!("malformed task result: {what}"));
        let (tag, body) = read_frame(&mut rest).ok_or_else(|| bad("truncated".into()))?;
        if section.is_some() != (tag == SECTION) {
            return Err(bad(
                "a body without its frame, or a frame without its body".into()
            ));
        }
        let factory = || -> Result<Factory> { Factory::from_frame(body).map_err(bad) };
        Ok(match tag {
            VALUE => TaskValue::Value(codec::decode_slice::<R>(body).map_err(|f| bad(f.reason))?),
            SECTION => {
                let section = section.expect("checked above").into_body();
                TaskValue::Value(
                    codec::decode_split::<R>(body, section).map_err(|f| bad(f.reason))?,
                )
            }
            PROXY => TaskValue::Proxy(Proxy::lazy(factory()?)),
            OWNED => TaskValue::Owned(OwnedProxy::of_task(factory()?, shared.clone())),
            other => return Err(bad(format!("unknown tag {other}"))),
        })
    }

    /// Whether the value came back through the store.
    pub fn is_proxy(&self) -> bool {
        !matches!(self, TaskValue::Value(_))
    }

    /// The key of the stored object, if the value came back through the
    /// store.
    pub fn key(&self) -> Option<crate::Key> {
        self.factory().map(Factory::key)
    }

    /// The stored object's factory (store configuration and key), if the
    /// value came back through the store.
    pub fn factory(&self) -> Option<&Factory> {
        match self {
            TaskValue::Value(_) => None,
            TaskValue::Owned(p) => Some(OwnedProxy::factory(p)),
            TaskValue::Proxy(p) => Some(Proxy::factory(p)),
        }
    }

    /// A plain proxy of the stored object, if the value came back through
    /// the store. Of an owned result, it keeps the object stored while it
    /// (or a clone of it) lives: the object is evicted once both the owner
    /// and such proxies are gone.
    pub fn proxy(&self) -> Option<Proxy<R>> {
        match self {
            TaskValue::Value(_) => None,
            TaskValue::Owned(p) => Some(OwnedProxy::holding_proxy(p)),
            TaskValue::Proxy(p) => Some(p.clone()),
        }
    }

    /// The owner of the stored object, if the result came back owned.
    pub fn into_owned(self) -> Option<OwnedProxy<R>> {
        match self {
            TaskValue::Owned(p) => Some(p),
            _ => None,
        }
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

    /// Reads a stored result on a background thread, for async code: the
    /// runtime's thread never blocks on the store. Returns the same result,
    /// now resolved (dereferencing it no longer reads anything). An inline
    /// or already resolved result comes back at once.
    pub async fn resolved(self) -> Result<Self> {
        let resolved = match &self {
            TaskValue::Value(_) => true,
            TaskValue::Owned(p) => OwnedProxy::is_resolved(p),
            TaskValue::Proxy(p) => Proxy::is_resolved(p),
        };
        if resolved {
            return Ok(self);
        }
        crate::runtime::unblock::unblock(
            move || {
                self.resolve()?;
                Ok(self)
            },
            drop,
        )?
        .await?
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

impl<R: Storable + Clone> Clone for TaskValue<R> {
    /// A handle on the same result, never a copy of a stored object: see
    /// [`TaskValue`].
    fn clone(&self) -> Self {
        match self {
            TaskValue::Value(v) => TaskValue::Value(v.clone()),
            TaskValue::Owned(p) => TaskValue::Proxy(OwnedProxy::holding_proxy(p)),
            TaskValue::Proxy(p) => TaskValue::Proxy(p.clone()),
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
pub(crate) fn discard_output(output: TaskOutput) {
    if crate::runtime::deferred::on_async_thread() {
        crate::runtime::deferred::defer(Box::new(move || discard_now(output)));
    } else {
        discard_now(output);
    }
}

fn discard_now(output: TaskOutput) {
    let mut rest = &output.frame[..];
    if let Some((OWNED, body)) = read_frame(&mut rest) {
        if let Ok(factory) = Factory::from_frame(body) {
            crate::owned::evict(&factory);
        }
    }
}

/// Evicts the object of a result that went through the store, owned or
/// not: a worker does this when the caller is gone.
pub(super) fn evict_output(bytes: &[u8]) {
    let mut rest = bytes;
    if let Some((OWNED | PROXY, body)) = read_frame(&mut rest) {
        if let Ok(factory) = Factory::from_frame(body) {
            crate::owned::evict(&factory);
        }
    }
}
