//! Pass large values between tasks by reference.
//!
//! A value goes once into a [`Store`] (a directory, memory, ...) and tasks
//! receive a small [`Proxy`] that resolves to it on first use, in any
//! process that can reach the store. [`OwnedProxy`] adds ownership: one
//! owner that evicts the object when dropped, and borrows the compiler
//! checks.
//!
//! ```
//! use proxystore::connectors::FileConnector;
//! use proxystore::{Proxy, Store};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::new("crate-doc", FileConnector::new(dir.path().join("objects"))?)?;
//!
//! // Put a large value once; pass around the proxy.
//! let proxy = store.proxy(vec![0.5f64; 1_000_000])?;
//! let wire = {
//!     let mut buf = Vec::new();
//!     ciborium::into_writer(&proxy, &mut buf).unwrap();
//!     buf
//! };
//! assert!(wire.len() < 300);                 // a reference, not the data
//!
//! // Wherever it arrives, it resolves on first use.
//! let arrived: Proxy<Vec<f64>> = ciborium::from_reader(&wire[..]).unwrap();
//! assert_eq!(arrived.iter().sum::<f64>(), 500_000.0);
//!
//! // An owned proxy evicts its object when dropped.
//! let owned = store.owned_proxy("scratch".to_string())?;
//! let key = proxystore::OwnedProxy::key(&owned);
//! drop(owned);
//! assert!(!store.exists(&key)?);
//!
//! store.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Modules
//!
//! - [`store`]: [`Store`], its configuration, cache, metrics and registry;
//! - [`connectors`]: where bytes live ([`FileConnector`](connectors::FileConnector),
//!   [`LocalConnector`](connectors::LocalConnector), your own);
//! - [`proxy`] and [`owned`]: lazy references and ownership;
//! - [`codec`]: the byte format, with a fast path for numeric buffers;
//! - `python` (feature `python`): objects and proxies shared with Python
//!   ProxyStore programs.
//!
//! Operations are logged with [`tracing`] at debug level (key and size);
//! nothing is printed unless you install a subscriber.

// The worker docs show `main` on purpose: where `init` goes is the point.
#![allow(clippy::needless_doctest_main)]

pub mod codec;
pub mod connectors;
mod error;
pub mod executor;
mod key;
pub mod lifetime;
pub mod owned;
pub mod policy;
pub mod proxy;
#[cfg(feature = "python")]
pub mod python;
mod spin;
pub mod store;
mod store_executor;
pub mod task;
mod unblock;
pub mod worker;

pub use error::{Error, Result};
pub use key::{Key, KeyStr};
pub use owned::{OwnedProxy, RefMutProxy, RefProxy, Transfer};
pub use policy::ShouldProxy;
pub use proxy::Proxy;
pub use store::{Store, StoreBuilder, StoreConfig, StoreFuture};
pub use store_executor::StoreExecutor;
pub use task::{Arg, IntoArg, Job, Task, TaskValue};

/// Generates a task wrapper beside a function; see the macro crate's docs.
pub use proxystore_macros::proxied;

/// What a stored value must be: serializable, deserializable, shareable
/// between threads. Implemented for every such type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be stored or sent to a task",
    label = "must implement serde's `Serialize` and `Deserialize`, and be `Send + Sync + 'static`",
    note = "derive them with `#[derive(serde::Serialize, serde::Deserialize)]`"
)]
pub trait Storable: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static {}

impl<T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static> Storable for T {}

/// Not public API: entry points for the fuzzers and the decoder tests.
#[doc(hidden)]
pub mod __fuzz;

/// Not public API: used by generated code.
#[doc(hidden)]
pub mod __private {
    pub use crate::task::{
        assert_storable, fail, output, ArgReader, TaskBuilder, TaskEntry, TaskFailure, TaskFn,
        TaskOutput, WorkerContext,
    };
    pub use inventory;
}
