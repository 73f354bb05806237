//! Pass large values between tasks by reference.
//!
//! A value goes once into a [`Store`] (a directory, shared memory, Redis,
//! ...) and tasks receive a small [`Proxy`] that resolves to it on first
//! use, in any process that can reach the store. A [`StoreExecutor`] wraps
//! a thread pool, a pool of worker processes, workers on many hosts or your
//! own executor, and does this automatically for the arguments and results
//! you choose: `#[proxied(types = [..])]` decides at compile time which
//! types go through the store, proxied inputs are evicted when a task ends,
//! and results come back as [`OwnedProxy`]s that evict their data when
//! dropped. This is the model of the Python library
//! [ProxyStore](https://docs.proxystore.dev), in Rust.
//!
//! ```
//! use proxystore::connectors::FileConnector;
//! use proxystore::executor::ProcessPool;
//! use proxystore::{proxied, Store, StoreExecutor};
//!
//! /// `String` arguments and results go through the store; `num` by value.
//! #[proxied(types = [String])]
//! fn concat(base: String, num: i64) -> String {
//!     format!("{base}-{num}")
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     proxystore::worker::init(); // in a pool worker, serves tasks and never returns
//!
//!     let dir = tempfile::tempdir()?;
//!     let store = Store::new("crate-doc", FileConnector::new(dir.path().join("objects"))?)?;
//!     let executor = StoreExecutor::new(ProcessPool::new(2)?, store);
//!
//!     let result = executor.submit(concat::task("foobar".to_string(), 42))?.result()?;
//!     assert!(result.is_proxy()); // the String came back through the store
//!     assert_eq!(*result, "foobar-42");
//!     assert_eq!(concat("a".into(), 1), "a-1"); // still a plain function
//!     Ok(())
//! } // result dropped: evicted; executor dropped: pool shut down, store closed
//! ```
//!
//! Stores and proxies work on their own too:
//!
//! ```
//! use proxystore::connectors::FileConnector;
//! use proxystore::{Proxy, Store};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::new("crate-doc-proxy", FileConnector::new(dir.path().join("objects"))?)?;
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
//! - [`StoreExecutor`] and [`proxied`]: tasks whose chosen arguments and
//!   results travel through a store, on any [`executor`];
//! - [`executor`]: the [`Executor`](executor::Executor) trait, the
//!   [`ThreadPool`](executor::ThreadPool), the
//!   [`ProcessPool`](executor::ProcessPool) of worker processes, the
//!   multi-host `executor::cluster` (feature `cluster`), and the futures of
//!   tasks ([`TaskFuture`](executor::TaskFuture), [`wait`](executor::wait),
//!   [`as_completed`](executor::as_completed),
//!   [`as_completed_stream`](executor::as_completed_stream));
//! - [`task`]: what `#[proxied]` generates ([`Task`], arguments, results
//!   as [`TaskValue`]s, the running task's [`context`](task::current));
//! - [`policy`]: which values a [`StoreExecutor`] proxies at run time
//!   ([`ShouldProxy`]);
//! - [`store`]: [`Store`], its configuration, cache, metrics, registry and
//!   [`StoreFuture`]s;
//! - [`connectors`]: where bytes live ([`FileConnector`](connectors::FileConnector),
//!   [`LocalConnector`](connectors::LocalConnector), shared memory, Redis,
//!   your own);
//! - [`proxy`] and [`owned`]: lazy references and ownership;
//! - [`stream`]: producers and consumers of typed objects through a
//!   store, with events on a broker (in-process, Redis pub/sub, lists or
//!   Streams);
//! - [`lifetime`]: objects evicted together, when a scope ends, a lease
//!   runs out or the process exits;
//! - [`codec`]: the byte format, with a fast path for numeric buffers;
//! - `python` (feature `python`): objects and proxies shared with Python
//!   ProxyStore programs;
//! - [`worker`]: worker mode, the entry of pool and cluster workers.
//!
//! Operations are logged with [`tracing`] at debug level (key and size);
//! nothing is printed unless you install a subscriber.
//!
//! # Features
//!
//! None is on by default: the file, shared-memory and in-process stores,
//! the thread and process pools need no feature.
//!
#![doc = document_features::document_features!()]
//!
//! # Platforms
//!
//! Unix only: worker processes talk over inherited file descriptors, and
//! the shared-memory store is Linux's `/dev/shm`.

#![cfg_attr(docsrs, feature(doc_cfg))]
// The worker docs show `main` on purpose: where `init` goes is the point.
#![allow(clippy::needless_doctest_main)]

#[cfg(not(unix))]
compile_error!(
    "proxystore needs a Unix system: its worker processes talk over inherited file descriptors"
);

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
#[cfg_attr(docsrs, doc(cfg(feature = "python")))]
pub mod python;
mod runtime;
pub mod store;
mod store_executor;
pub mod stream;
pub mod task;
pub mod worker;

pub use error::{Error, Result};
pub use key::{Key, KeyStr};
pub use owned::{OwnedProxy, RefMutProxy, RefProxy, Transfer};
pub use policy::ShouldProxy;
pub use proxy::Proxy;
pub use store::{Store, StoreBuilder, StoreConfig, StoreFuture};
pub use store_executor::{StoreExecutor, DEFAULT_INPUT_EXPIRY};
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
