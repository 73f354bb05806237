//! Sharing objects and proxies with Python ProxyStore (1.1) programs
//! (feature `python`).
//!
//! Interop is at the store level: both sides open the same store, in
//! Python's layout ([`PythonFileConnector`]: `<uuid>` files with
//! `<uuid>.ready` markers; `PythonRedisConnector`: values under bare
//! `<uuid>` keys), and objects are in Python's format: a serializer id
//! line, then the payload ([`Format`]). What reads and writes here:
//!
//! | Python | Rust |
//! |---|---|
//! | `bytes` (`BS`) | `Vec<u8>` |
//! | `str` (`US`) | `String` |
//! | 1-D `numpy.ndarray` (`NP`) of bool, (u)int8-64, float32/64 | `Vec<T>` |
//! | n-D `numpy.ndarray` (`NP`), C or Fortran order | [`NdArray<T>`] |
//!
//! Any [`Store`] over such a connector reads these objects with its usual
//! `get`, and every [`Proxy`] of them resolves as usual; [`put`] and
//! [`proxy`] store values in Python's format. Pickled objects (`PK`, `CP`,
//! `PD`) are refused with an error that says what to store instead:
//! unpickling runs code.
//!
//! Proxies cross both ways as Python's own pickles: [`PickledProxy`] reads
//! `pickle.dumps(proxy)` with a reader that accepts only ProxyStore's proxy,
//! factory, key and configuration classes and runs nothing, and
//! [`to_pickle`] writes the bytes that `pickle.loads` turns into a working
//! Python proxy. Python's keys (`FileKey`, `RedisKey`) hold `str(uuid4())`,
//! which a [`Key`] represents exactly; a key of any other form is refused.
//! Callers that prefer not to pass pickles pass the store's
//! configuration as JSON ([`PyStoreConfig`], Python's
//! `store.config().model_dump_json()`) and the key as text.
//!
//! ```
//! use proxystore::python::{self, PickledProxy, PythonFileConnector};
//! use proxystore::Store;
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::new("python-doc", PythonFileConnector::new(dir.path())?)?;
//! let proxy = python::proxy(&store, vec![1.0f64, 2.0, 3.0])?;
//! let pickled = python::to_pickle(&proxy)?;      // pickle.loads(...) in python
//!
//! // What python sends back is read without running anything.
//! let back = PickledProxy::from_pickle(&pickled)?.into_proxy::<Vec<f64>>()?;
//! assert_eq!(*back, [1.0, 2.0, 3.0]);
//! store.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod connectors;
mod npy;
pub(crate) mod pickle;
mod proxy;
pub(crate) mod serialize;

pub use config::{PyConnectorConfig, PyStoreConfig};
pub use connectors::{FileOptions, PythonFileConnector};
#[cfg(feature = "redis")]
pub use connectors::{PythonRedisConnector, RedisOptions};
pub use npy::{Dtype, Element, NdArray, Order};
pub use proxy::{PickledProxy, ProxyKind};
pub use serialize::{deserialize, Format, PyEncoded, ToPython};

use crate::error::{Error, Result};
use crate::key::Key;
use crate::owned::OwnedProxy;
use crate::proxy::Proxy;
use crate::store::{get_or_create_store, Store};
use crate::Storable;

/// Stores `value` in Python ProxyStore's format under a new key.
pub fn put<V: ToPython>(store: &Store, value: &V) -> Result<Key> {
    if store.is_closed() {
        return Err(Error::StoreClosed {
            store: store.name().to_string(),
        });
    }
    let connector = store.connector();
    let key = connector.new_key()?;
    connector.set(&key, &value.to_python().parts())?;
    Ok(key)
}

/// Stores `value` in Python ProxyStore's format and returns a proxy of it,
/// which [`to_pickle`] can hand to Python.
pub fn proxy<T: Storable + ToPython>(store: &Store, value: T) -> Result<Proxy<T>> {
    let key = put(store, &value)?;
    Ok(Proxy::resolved(store.factory(key), value))
}

/// Stores `value` in Python ProxyStore's format and returns its owner:
/// hand it to Python with [`owned_to_pickle`], or drop it to evict it.
pub fn owned_proxy<T: Storable + ToPython>(store: &Store, value: T) -> Result<OwnedProxy<T>> {
    let key = put(store, &value)?;
    Ok(OwnedProxy::resolved(store.factory(key), value))
}

/// The bytes that `pickle.loads` in Python turns into a proxy of the same
/// object. The proxy's store must be over a [`PythonFileConnector`] or a
/// `PythonRedisConnector`, and its object in Python's format ([`put`]).
pub fn to_pickle<T: Storable>(proxy: &Proxy<T>) -> Result<Vec<u8>> {
    let config = PyStoreConfig::from_store_config(Proxy::store_config(proxy))?;
    proxy::write(&config, Proxy::key(proxy), false)
}

/// Hands an owned object to Python: the bytes that `pickle.loads` turns
/// into Python's `OwnedProxy`, which evicts the object when Python drops
/// it. This side no longer evicts it.
pub fn owned_to_pickle<T: Storable>(owned: OwnedProxy<T>) -> Result<Vec<u8>> {
    let factory = OwnedProxy::factory(&owned);
    let config = PyStoreConfig::from_store_config(factory.store_config())?;
    let bytes = proxy::write(&config, factory.key(), true)?;
    let _ = OwnedProxy::leak(owned);
    Ok(bytes)
}

/// The store that Python's `store.config().model_dump_json()` describes:
/// the one registered under its name in this process, or a new one built
/// from it and registered (as a proxy's store is).
pub fn store_from_json(json: &str) -> Result<Store> {
    get_or_create_store(&PyStoreConfig::from_json(json)?.store_config()?)
}

/// A lazy proxy of the object `key` (Python's `key.filename` or
/// `key.redis_key`) in the store Python's configuration JSON describes.
pub fn proxy_from_json<T: Storable>(json: &str, key: &str) -> Result<Proxy<T>> {
    let config = PyStoreConfig::from_json(json)?.store_config()?;
    Ok(Proxy::from_parts(config, Key::parse(key)?))
}

/// The store's configuration as Python's `StoreConfig` JSON
/// (`StoreConfig.model_validate_json` reads it).
pub fn config_json(store: &Store) -> Result<String> {
    Ok(PyStoreConfig::from_store_config(store.config())?.to_json())
}

/// Not public API: the fuzzers' entry points (see `crate::__fuzz`).
#[doc(hidden)]
pub mod fuzz {
    use super::*;

    /// Reads `data` as a pickled proxy; a proxy that reads is written
    /// again and must read back the same. Returns how many readers
    /// accepted the input.
    pub fn python_pickle(data: &[u8]) -> usize {
        let mut accepted = usize::from(pickle::load(data).is_ok());
        if let Ok(read) = PickledProxy::from_pickle(data) {
            accepted += 1;
            let owned = read.kind() == ProxyKind::Owned;
            if let Ok(bytes) = proxy::write(read.config(), read.key(), owned) {
                let again = PickledProxy::from_pickle(&bytes).expect("a written proxy reads");
                assert_eq!((again.key(), again.config()), (read.key(), read.config()));
            }
        }
        accepted
    }

    /// Reads `data` as Python ProxyStore's stored bytes (with and without
    /// the `NP\n` line) as every array type, through the codec as a store
    /// does. Arrays that read are written again and must read back equal.
    pub fn python_npy(data: &[u8]) -> usize {
        let mut accepted = 0;
        let with_id = [b"NP\n", data].concat();
        for input in [data, &with_id[..]] {
            macro_rules! each {
                ($($t:ty),*) => {$(
                    if let Ok(v) = crate::codec::decode_slice::<Vec<$t>>(input) {
                        accepted += 1;
                        let back: Vec<$t> = deserialize(&v.to_python().to_vec()).expect("written");
                        assert_eq!(back.len(), v.len());
                    }
                    if let Ok(a) = deserialize::<NdArray<$t>>(input) {
                        accepted += 1;
                        let back: NdArray<$t> = deserialize(&a.to_python().to_vec()).expect("written");
                        assert_eq!(back.shape(), a.shape());
                    }
                )*};
            }
            each!(bool, u8, i8, u16, i16, u32, i32, u64, i64, f32, f64);
            accepted += usize::from(crate::codec::decode_slice::<String>(input).is_ok());
        }
        accepted
    }
}
