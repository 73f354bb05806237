//! Python ProxyStore's proxies, as `pickle.dumps(proxy)` writes them.
//!
//! Read: the pickle is loaded as data by [`super::pickle`] (nothing is
//! run), then its shape is checked: a trampoline of `proxystore.proxy` or
//! `proxystore.store.ref` applied to a `StoreFactory` or
//! `PollingStoreFactory` whose state holds a `FileKey`/`RedisKey` and a
//! `StoreConfig`. Written: the same shape, from a fixed template.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::config::PyStoreConfig;
use super::pickle::{self, global, Value};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::owned::OwnedProxy;
use crate::proxy::{Factory, Proxy};
use crate::Storable;

/// Which of Python's proxy types was pickled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyKind {
    /// `proxystore.proxy.Proxy`.
    Plain,
    /// `proxystore.store.ref.OwnedProxy`: the receiver owns the object.
    Owned,
    /// `proxystore.store.ref.RefProxy`: a shared borrow.
    Ref,
    /// `proxystore.store.ref.RefMutProxy`: a mutable borrow.
    RefMut,
}

/// A proxy pickled by Python ProxyStore, read without running anything.
///
/// ```no_run
/// use proxystore::python::PickledProxy;
///
/// let bytes = std::fs::read("proxy.pkl")?;          // pickle.dumps(proxy) in python
/// let proxy = PickledProxy::from_pickle(&bytes)?.into_proxy::<Vec<f64>>()?;
/// println!("sum {}", proxy.iter().sum::<f64>());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct PickledProxy {
    kind: ProxyKind,
    key: Key,
    config: PyStoreConfig,
    evict: bool,
    /// Set for the proxies of `Store.future()`: how long Python would poll
    /// (`None`: for as long as it takes).
    polling: Option<Option<Duration>>,
}

fn bad(reason: impl Into<String>) -> Error {
    Error::Python {
        reason: format!(
            "not a pickled ProxyStore proxy: {}; pass the bytes of `pickle.dumps(proxy)`",
            reason.into()
        ),
    }
}

impl PickledProxy {
    /// Reads the bytes of `pickle.dumps(proxy)`.
    ///
    /// Only ProxyStore's own classes may appear in them (see the module
    /// docs of [`python`](super)); a pickle that names anything else, such
    /// as `os.system`, is refused with [`Error::Python`], and nothing in
    /// it is ever run or built.
    pub fn from_pickle(bytes: &[u8]) -> Result<Self> {
        let root = pickle::load(bytes).map_err(|reason| Error::Python {
            reason: format!("refused a pickle: {reason}"),
        })?;
        let (callee, args) = call(&root).ok_or_else(|| bad("it is not a proxy"))?;
        let (kind, rest) = match callee {
            ("proxystore.proxy", "_proxy_trampoline") => (ProxyKind::Plain, args),
            ("proxystore.store.ref", "_proxy_trampoline") => {
                let kind = match args.first().and_then(Value::as_str) {
                    Some("OwnedProxy") => ProxyKind::Owned,
                    Some("RefProxy") => ProxyKind::Ref,
                    Some("RefMutProxy") => ProxyKind::RefMut,
                    _ => return Err(bad("unknown reference proxy kind")),
                };
                (kind, &args[1..])
            }
            _ => return Err(bad("it is not a proxy")),
        };
        let factory = rest.first().ok_or_else(|| bad("no factory"))?;
        let Value::Built(built) = factory else {
            return Err(bad("the factory has no state"));
        };
        let polling = match call(&built.0) {
            Some((("proxystore.store.factory", "StoreFactory"), _)) => false,
            Some((("proxystore.store.factory", "PollingStoreFactory"), _)) => true,
            _ => return Err(bad("the factory is not a StoreFactory")),
        };
        let state = &built.1;
        let key =
            match state.get("key").and_then(call) {
                Some(
                    (("proxystore.connectors.file", "FileKey"), [Value::Str(k)])
                    | (("proxystore.connectors.redis", "RedisKey"), [Value::Str(k)]),
                ) => Key::parse(k)?,
                _ => return Err(bad(
                    "its key is not a FileKey or RedisKey (only file and Redis stores are shared)",
                )),
            };
        let config = state
            .get("store_config")
            .ok_or_else(|| bad("no store_config"))
            .and_then(to_json)?;
        let config: PyStoreConfig = serde_json::from_value(config)
            .map_err(|e| bad(format!("its StoreConfig is not understood ({e})")))?;
        if state.get("deserializer").is_some_and(|d| *d != Value::None) {
            return Err(bad(
                "it has a custom deserializer, which only python can run",
            ));
        }
        let evict = matches!(state.get("evict"), Some(Value::Bool(true)));
        let polling = polling.then(|| match state.get("_polling_timeout") {
            Some(Value::Float(s)) if *s >= 0.0 => Duration::try_from_secs_f64(*s).ok(),
            Some(Value::Int(s)) if *s >= 0 => Some(Duration::from_secs(*s as u64)),
            _ => None,
        });
        Ok(PickledProxy {
            kind,
            key,
            config,
            evict,
            polling,
        })
    }

    /// Which Python proxy type it was.
    pub fn kind(&self) -> ProxyKind {
        self.kind
    }

    /// The object's key.
    pub fn key(&self) -> Key {
        self.key
    }

    /// The Python configuration of the object's store.
    pub fn config(&self) -> &PyStoreConfig {
        &self.config
    }

    /// Whether it came from `Store.future()` (it waits for the object).
    pub fn is_future(&self) -> bool {
        self.polling.is_some()
    }

    fn factory(&self) -> Result<Factory> {
        let factory = Factory::new(self.key, Arc::new(self.config.store_config()?));
        Ok(match self.polling {
            Some(timeout) => factory.waiting(timeout),
            None => factory,
        })
    }

    /// A lazy [`Proxy`] that resolves the object in Rust.
    ///
    /// A proxy that owns its object (Python's `OwnedProxy`, or a proxy made
    /// with `evict=True`) is refused: take it with
    /// [`into_owned`](Self::into_owned), so that the object is evicted
    /// once used.
    pub fn into_proxy<T: Storable>(self) -> Result<Proxy<T>> {
        if self.kind == ProxyKind::Owned || self.evict {
            return Err(Error::Python {
                reason: format!(
                    "object {} is owned by this proxy (python's OwnedProxy or evict=True); take \
                     it with into_owned so that it is evicted once used",
                    self.key
                ),
            });
        }
        Ok(Proxy::lazy(self.factory()?))
    }

    /// An [`OwnedProxy`] that evicts the object when dropped. Borrowed
    /// proxies (`RefProxy`, `RefMutProxy`) are refused: their owner is
    /// still in Python.
    pub fn into_owned<T: Storable>(self) -> Result<OwnedProxy<T>> {
        if matches!(self.kind, ProxyKind::Ref | ProxyKind::RefMut) {
            return Err(Error::Python {
                reason: format!(
                    "object {} is borrowed from a python owner; read it with into_proxy",
                    self.key
                ),
            });
        }
        Ok(OwnedProxy::lazy(self.factory()?))
    }
}

/// `(module, name)` and arguments of a recorded call.
fn call(v: &Value) -> Option<((&'static str, &'static str), &[Value])> {
    match v {
        Value::Call(c) => match (&c.0, &c.1) {
            (Value::Global(m, n), Value::Tuple(args)) => Some(((m, n), args)),
            _ => None,
        },
        _ => None,
    }
}

/// Plain data (and pydantic models, by their `__dict__`) as JSON.
fn to_json(v: &Value) -> Result<serde_json::Value> {
    use serde_json::Value as J;
    Ok(match v {
        Value::None => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::Str(s) => J::String(s.to_string()),
        Value::List(items) => J::Array(items.iter().map(to_json).collect::<Result<_>>()?),
        Value::Tuple(items) => J::Array(items.iter().map(to_json).collect::<Result<_>>()?),
        Value::Dict(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| match k.as_str() {
                    Some(k) => Ok((k.to_string(), to_json(v)?)),
                    None => Err(bad("a configuration key is not a string")),
                })
                .collect::<Result<_>>()?,
        ),
        Value::Built(built)
            if matches!(call(&built.0), Some((("proxystore.store.config", _), []))) =>
        {
            to_json(
                built
                    .1
                    .get("__dict__")
                    .ok_or_else(|| bad("a model without fields"))?,
            )?
        }
        _ => {
            return Err(bad(
                "its configuration holds something other than plain data",
            ))
        }
    })
}

fn from_json(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::None,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => n
            .as_i64()
            .map(Value::Int)
            .unwrap_or_else(|| Value::Float(n.as_f64().unwrap_or(0.0))),
        J::String(s) => text(s),
        J::Array(items) => Value::List(Rc::new(items.iter().map(from_json).collect())),
        J::Object(map) => dict(map.iter().map(|(k, v)| (k.as_str(), from_json(v)))),
    }
}

fn text(s: &str) -> Value {
    Value::Str(Rc::from(s))
}

fn dict<'a>(entries: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    Value::Dict(Rc::new(
        entries.into_iter().map(|(k, v)| (text(k), v)).collect(),
    ))
}

fn new_object(module: &str, class: &str, args: Vec<Value>) -> Value {
    Value::Call(Rc::new((
        global(module, class),
        Value::Tuple(Rc::from(args)),
    )))
}

/// A pydantic model of `class` with `fields`, as pydantic pickles it.
fn model(class: &str, fields: Vec<(&str, Value)>) -> Value {
    let names = fields.iter().map(|(k, _)| text(k)).collect();
    let state = dict([
        ("__dict__", dict(fields)),
        ("__pydantic_extra__", Value::None),
        ("__pydantic_fields_set__", Value::Set(Rc::new(names))),
        ("__pydantic_private__", Value::None),
    ]);
    Value::Built(Rc::new((
        new_object("proxystore.store.config", class, vec![]),
        state,
    )))
}

/// The bytes that `pickle.loads` in Python turns into a proxy of the object
/// `key` in the store `config` describes (a store of
/// [`PythonFileConnector`](super::PythonFileConnector) or
/// `PythonRedisConnector`); with `owned`, an `OwnedProxy` that evicts the
/// object once Python is done with it.
pub(crate) fn write(config: &PyStoreConfig, key: Key, owned: bool) -> Result<Vec<u8>> {
    let key_class = match config.connector.kind.as_str() {
        super::config::PY_FILE => ("proxystore.connectors.file", "FileKey"),
        super::config::PY_REDIS => ("proxystore.connectors.redis", "RedisKey"),
        other => {
            return Err(Error::Python {
                reason: format!("connector `{other}` cannot be shared with python"),
            })
        }
    };
    let connector = model(
        "ConnectorConfig",
        vec![
            ("kind", text(&config.connector.kind)),
            (
                "options",
                from_json(&serde_json::Value::Object(config.connector.options.clone())),
            ),
        ],
    );
    let store_config = model(
        "StoreConfig",
        vec![
            ("name", text(&config.name)),
            ("connector", connector),
            ("serializer", Value::None),
            ("deserializer", Value::None),
            ("cache_size", Value::Int(config.cache_size)),
            ("metrics", Value::Bool(config.metrics)),
            ("populate_target", Value::Bool(config.populate_target)),
            ("auto_register", Value::Bool(config.auto_register)),
        ],
    );
    let factory = Value::Built(Rc::new((
        new_object("proxystore.store.factory", "StoreFactory", vec![]),
        dict([
            (
                "key",
                new_object(key_class.0, key_class.1, vec![text(&key.as_str())]),
            ),
            ("store_config", store_config),
            ("evict", Value::Bool(false)),
            ("deserializer", Value::None),
            ("_obj_future", Value::None),
        ]),
    )));
    let root = if owned {
        new_object(
            "proxystore.store.ref",
            "_proxy_trampoline",
            vec![text("OwnedProxy"), factory, Value::None, Value::None],
        )
    } else {
        new_object(
            "proxystore.proxy",
            "_proxy_trampoline",
            vec![factory, Value::None, Value::None],
        )
    };
    let mut writer = pickle::Writer::new();
    writer.value(&root);
    Ok(writer.finish())
}
