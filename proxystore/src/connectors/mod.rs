//! Connectors: where the bytes of stored objects live.
//!
//! A [`Connector`] stores byte objects under [`Key`]s. A [`Store`](crate::Store)
//! sits on top of one and adds serialization, caching and proxies. Built in:
//!
//! - [`LocalConnector`]: in memory, for one process;
//! - [`FileConnector`]: one file per object in a directory that every
//!   process on the machine (or on a shared file system) can read; it
//!   removes only what it created and never follows a link out of its
//!   directory;
//! - [`SharedMemoryConnector`] (Linux): one file per object in a fresh
//!   directory under `/dev/shm`, read through memory maps: the fastest
//!   store between processes of one host; its objects never outlive the
//!   process that created it, even one that was killed;
//! - `RedisConnector` (feature `redis`): objects in a Redis server, for
//!   processes on any host that reaches it;
//! - `PeerConnector` (feature `peer`): objects stay in the memory of the
//!   process that stored them and go over TCP straight to the processes
//!   that read them; an index (Redis) holds only where each one is. The
//!   fastest store between hosts for large objects; an object is lost
//!   with its process;
//! - [`MultiConnector`]: routes each object by size to one of several
//!   connectors (small ones to Redis, large ones to a shared directory or
//!   to a `PeerConnector`).
//!
//! ```
//! use proxystore::connectors::{Connector, FileConnector};
//!
//! let dir = tempfile::tempdir()?;
//! let connector = FileConnector::new(dir.path().join("objects"))?;
//! let key = connector.put(&[b"hello ", b"world"])?;
//! assert_eq!(connector.get(&key)?.as_deref(), Some(&b"hello world"[..]));
//! connector.evict(&key)?;
//! assert!(!connector.exists(&key)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Your own connector
//!
//! Implement [`Connector`] and [`FromConfig`], then register the kind by
//! name with [`register_connector!`](crate::register_connector) so that a
//! worker process can rebuild it from a proxy's [`StoreConfig`](crate::StoreConfig).

mod file;
mod local;
mod multi;
#[cfg(feature = "peer")]
mod peer;
mod redact;
#[cfg(feature = "redis")]
pub(crate) mod redis;
#[cfg(target_os = "linux")]
mod shm;

use std::fmt;
use std::io::Read;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::key::Key;

pub use file::FileConnector;
pub use local::LocalConnector;
pub use multi::{MultiConnector, MultiConnectorBuilder};
#[cfg(feature = "peer")]
#[cfg_attr(docsrs, doc(cfg(feature = "peer")))]
pub use peer::{
    PeerConnector, PeerConnectorBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT,
    DEFAULT_MAX_OBJECT_SIZE, PEER_ADDR_ENV,
};
pub(crate) use redact::redact_url;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{RedisConnector, RedisConnectorBuilder, REDIS_MAX_OBJECT_SIZE};
#[cfg(target_os = "linux")]
#[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
pub use shm::{SharedMemoryConnector, SharedMemoryConnectorBuilder};

/// A byte reader over one stored object, returned by [`Connector::open`].
pub type ObjectReader = Box<dyn Read + Send>;

/// A place where objects are stored as bytes under [`Key`]s.
///
/// Implementations must be safe to use from several threads at once. An
/// object is written with [`set`](Connector::set) as a list of byte slices
/// to be concatenated (so a large buffer can be written from its own
/// memory, without copying it into one buffer first).
pub trait Connector: Send + Sync + fmt::Debug + 'static {
    /// What is needed to rebuild this connector in another process.
    fn config(&self) -> ConnectorConfig;

    /// Stores an object under `key`, replacing any previous value.
    ///
    /// Readers never see a partially written object.
    fn set(&self, key: &Key, parts: &[&[u8]]) -> Result<()>;

    /// Reads a whole object, or `None` if there is none under `key`.
    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>>;

    /// Whether an object is stored under `key`.
    fn exists(&self, key: &Key) -> Result<bool>;

    /// Removes the object under `key`; removing a missing key is not an error.
    fn evict(&self, key: &Key) -> Result<()>;

    /// Releases the connector's resources (and, where configured, its data).
    ///
    /// A close that fails leaves the connector usable and may be called
    /// again to finish; [`Store::close`](crate::Store::close) does so when
    /// it is called again.
    fn close(&self) -> Result<()>;

    /// Opens an object for streaming reads, or `None` if there is none.
    ///
    /// Decoding reads large buffers straight from here into their final
    /// memory; the default implementation reads the whole object with
    /// [`get`](Connector::get) first.
    fn open(&self, key: &Key) -> Result<Option<ObjectReader>> {
        Ok(self
            .get(key)?
            .map(|bytes| Box::new(std::io::Cursor::new(bytes)) as ObjectReader))
    }

    /// Like [`open`](Connector::open), with the object's length in bytes
    /// when the connector knows it without reading it (a file's size, a
    /// buffer's length): decoding then reads large bodies into one buffer
    /// of their final size. The default knows no length.
    fn open_sized(&self, key: &Key) -> Result<Option<(ObjectReader, Option<u64>)>> {
        Ok(self.open(key)?.map(|reader| (reader, None)))
    }

    /// Creates a key whose value will be [`set`](Connector::set) later,
    /// possibly by another process (results, futures).
    fn new_key(&self) -> Result<Key> {
        Ok(Key::new())
    }

    /// Stores an object under a new key.
    fn put(&self, parts: &[&[u8]]) -> Result<Key> {
        let key = self.new_key()?;
        self.set(&key, parts)?;
        Ok(key)
    }

    /// Stores several objects, returning their keys in order.
    fn put_batch(&self, objects: &[&[&[u8]]]) -> Result<Vec<Key>> {
        objects.iter().map(|parts| self.put(parts)).collect()
    }

    /// Reads several objects, in order.
    fn get_batch(&self, keys: &[Key]) -> Result<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|key| self.get(key)).collect()
    }

    /// Which processes can read what this connector stores. An executor
    /// whose tasks run farther away refuses stores that cannot reach them.
    /// The default, for connectors of your own, is [`Reach::Network`].
    fn reach(&self) -> Reach {
        Reach::Network
    }

    /// The keys of the objects this connector holds, in no particular
    /// order: what a [`Store`](crate::Store) would find with
    /// [`exists`](Connector::exists) right now.
    ///
    /// Only the connector's own objects are listed: not its bookkeeping (a
    /// file store's marker and temporary files), nor other entries in the
    /// same place (other files in the directory, other keys in the Redis
    /// database). Connectors that share a place (one directory, one Redis
    /// namespace) share their objects, so each lists them all. An object
    /// another process writes or evicts meanwhile may or may not be listed.
    ///
    /// The built-in connectors all list their objects. The default, for a
    /// connector of your own that does not implement this method, is
    /// [`Error::Unsupported`], so adding it broke no implementation.
    ///
    /// ```
    /// use proxystore::connectors::{Connector, LocalConnector};
    ///
    /// let connector = LocalConnector::new();
    /// let a = connector.put(&[b"a"])?;
    /// let b = connector.put(&[b"b"])?;
    /// let mut keys = connector.keys()?;
    /// keys.sort();
    /// let mut expected = vec![a, b];
    /// expected.sort();
    /// assert_eq!(keys, expected);
    /// connector.evict(&a)?;
    /// assert_eq!(connector.keys()?, [b]);
    /// # Ok::<(), proxystore::Error>(())
    /// ```
    fn keys(&self) -> Result<Vec<Key>> {
        Err(Error::Unsupported {
            connector: self.config().kind,
            operation: "list the keys of its objects".to_string(),
        })
    }

    /// Asks the connector to remove `key` by itself once `after` has passed
    /// (for a [`LeaseLifetime`](crate::lifetime::LeaseLifetime)), replacing
    /// any earlier expiry. Returns whether it can; the default, `false`,
    /// leaves the eviction to the lease. A connector that can (Redis) keeps
    /// the promise even if no process of the program survives.
    fn expire(&self, key: &Key, after: std::time::Duration) -> Result<bool> {
        let _ = (key, after);
        Ok(false)
    }

    /// Evicts `keys` and, in the same round trip where the connector can,
    /// reads the object under `peek.0` if it holds at most `peek.1` bytes
    /// (`None` if it is larger or missing): what a caller does when a task
    /// ends, its inputs evicted and its result about to be read. The
    /// default evicts each key in turn and reads nothing.
    fn evict_and_peek(&self, keys: &[Key], peek: Option<(&Key, usize)>) -> Result<Option<Vec<u8>>> {
        let _ = peek;
        for key in keys {
            self.evict(key)?;
        }
        Ok(None)
    }

    /// [`set`](Connector::set), and the object removed by the connector
    /// itself once `after` has passed, as [`expire`](Connector::expire)
    /// would (in the same request where the connector can: Redis's
    /// `SET .. PX`). Returns whether the expiry was set; the default stores
    /// the object and returns `false`, leaving the expiry to
    /// [`expire`](Connector::expire).
    fn set_expiring(&self, key: &Key, parts: &[&[u8]], after: std::time::Duration) -> Result<bool> {
        let _ = after;
        self.set(key, parts)?;
        Ok(false)
    }

    /// [`expire`](Connector::expire) for several keys at once (one round
    /// trip where the connector can). The default asks for each key in
    /// turn and stops at the first that cannot.
    fn expire_all(&self, keys: &[Key], after: std::time::Duration) -> Result<bool> {
        for key in keys {
            if !self.expire(key, after)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Which processes can reach a connector's objects, from nearest to
/// farthest: a multi-host executor needs [`Reach::Network`], a pool of
/// worker processes [`Reach::Host`] or more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reach {
    /// Only this process (memory).
    Process,
    /// Processes on this host (a local directory, a server on loopback).
    Host,
    /// Processes on any host that can reach it over the network (a
    /// server, a shared file system).
    Network,
}

impl fmt::Display for Reach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reach::Process => "this process",
            Reach::Host => "this host",
            Reach::Network => "other hosts",
        })
    }
}

/// The serializable description of a connector: its registered kind and
/// its options.
///
/// Its `Debug` output hides credentials: in any text option that is a URL,
/// the user information (`user:password@`) is shown as `<hidden>@`, and
/// the values of `user`, `pass`, `username` and `password` query
/// parameters (`redis+unix:///path?pass=..`) as `<hidden>`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectorConfig {
    /// The name the connector kind is registered under.
    pub kind: String,
    /// The kind's own options.
    pub options: ciborium::Value,
}

impl ConnectorConfig {
    /// A configuration of `kind` with serializable `options`.
    pub fn new<O: Serialize>(kind: &str, options: &O) -> Result<Self> {
        let options = ciborium::Value::serialized(options).map_err(|e| Error::InvalidConfig {
            kind: kind.to_string(),
            reason: e.to_string(),
        })?;
        Ok(ConnectorConfig {
            kind: kind.to_string(),
            options,
        })
    }

    /// The options, decoded as `O`.
    pub fn options<O: DeserializeOwned>(&self) -> Result<O> {
        self.options
            .deserialized()
            .map_err(|e| Error::InvalidConfig {
                kind: self.kind.clone(),
                reason: e.to_string(),
            })
    }

    /// Builds the connector this configuration describes, through the
    /// registry of connector kinds.
    pub fn build(&self) -> Result<Arc<dyn Connector>> {
        let mut matches = inventory::iter::<ConnectorKind>().filter(|k| k.name == self.kind);
        let Some(kind) = matches.next() else {
            return Err(Error::UnknownConnector {
                kind: self.kind.clone(),
                registered: join(inventory::iter::<ConnectorKind>().map(|k| k.name)),
            });
        };
        if matches.next().is_some() {
            return Err(Error::DuplicateConnector {
                kind: self.kind.clone(),
                locations: join(
                    inventory::iter::<ConnectorKind>()
                        .filter(|k| k.name == self.kind)
                        .map(|k| k.location),
                ),
            });
        }
        (kind.build)(self)
    }
}

impl fmt::Debug for ConnectorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectorConfig")
            .field("kind", &self.kind)
            .field("options", &redacted(&self.options))
            .finish()
    }
}

/// `value` with the user information of URLs in text values hidden.
fn redacted(value: &ciborium::Value) -> ciborium::Value {
    use ciborium::Value;
    match value {
        Value::Text(text) => Value::Text(redact_url(text)),
        Value::Array(items) => Value::Array(items.iter().map(redacted).collect()),
        Value::Map(entries) => Value::Map(
            entries
                .iter()
                .map(|(k, v)| (redacted(k), redacted(v)))
                .collect(),
        ),
        Value::Tag(tag, inner) => Value::Tag(*tag, Box::new(redacted(inner))),
        other => other.clone(),
    }
}

pub(crate) fn join<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut names: Vec<&str> = names.collect();
    names.sort_unstable();
    names.join(", ")
}

/// A connector that can be rebuilt from its [`ConnectorConfig`].
pub trait FromConfig: Connector + Sized {
    /// The name this kind is registered under; must be unique.
    const KIND: &'static str;

    /// Rebuilds the connector, e.g. in a worker process.
    fn from_config(config: &ConnectorConfig) -> Result<Self>;
}

/// A registered connector kind. Created by
/// [`register_connector!`](crate::register_connector).
#[derive(Debug)]
pub struct ConnectorKind {
    name: &'static str,
    build: fn(&ConnectorConfig) -> Result<Arc<dyn Connector>>,
    location: &'static str,
}

impl ConnectorKind {
    #[doc(hidden)]
    pub const fn new(
        name: &'static str,
        build: fn(&ConnectorConfig) -> Result<Arc<dyn Connector>>,
        location: &'static str,
    ) -> Self {
        ConnectorKind {
            name,
            build,
            location,
        }
    }

    #[doc(hidden)]
    pub fn build_as<C: FromConfig>(config: &ConnectorConfig) -> Result<Arc<dyn Connector>> {
        Ok(Arc::new(C::from_config(config)?))
    }
}

inventory::collect!(ConnectorKind);

/// Registers a connector type by its [`FromConfig::KIND`], so stores using
/// it can be rebuilt from their configuration in any process of this
/// executable.
///
/// ```
/// use proxystore::connectors::{Connector, ConnectorConfig, FromConfig, LocalConnector};
/// use proxystore::{Key, Result};
///
/// /// Counts the objects it stores; keeps them in memory.
/// #[derive(Debug, Default)]
/// struct Counting { inner: LocalConnector }
///
/// impl Connector for Counting {
///     fn config(&self) -> ConnectorConfig { ConnectorConfig::new(Self::KIND, &()).unwrap() }
///     fn set(&self, key: &Key, parts: &[&[u8]]) -> Result<()> { self.inner.set(key, parts) }
///     fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> { self.inner.get(key) }
///     fn exists(&self, key: &Key) -> Result<bool> { self.inner.exists(key) }
///     fn evict(&self, key: &Key) -> Result<()> { self.inner.evict(key) }
///     fn close(&self) -> Result<()> { self.inner.close() }
/// }
///
/// impl FromConfig for Counting {
///     const KIND: &'static str = "my-crate.counting";
///     fn from_config(_: &ConnectorConfig) -> Result<Self> { Ok(Counting::default()) }
/// }
///
/// proxystore::register_connector!(Counting);
///
/// let rebuilt = Counting::default().config().build()?;
/// assert_eq!(rebuilt.config().kind, "my-crate.counting");
/// # Ok::<(), proxystore::Error>(())
/// ```
#[macro_export]
macro_rules! register_connector {
    ($ty:ty) => {
        $crate::__private::inventory::submit! {
            $crate::connectors::ConnectorKind::new(
                <$ty as $crate::connectors::FromConfig>::KIND,
                $crate::connectors::ConnectorKind::build_as::<$ty>,
                ::core::concat!(::core::file!(), ":", ::core::line!()),
            )
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_credentials_in_urls() {
        #[derive(Serialize)]
        struct Options {
            url: &'static str,
            nested: Vec<&'static str>,
        }
        let config = ConnectorConfig::new(
            "x",
            &Options {
                url: "redis://user:s3cret@host:6379/2",
                nested: vec!["rediss://:hunter2@h/0?x=@", "/plain/path@x"],
            },
        )
        .unwrap();
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(shown.contains("redis://<hidden>@host:6379/2"), "{shown}");
        assert!(shown.contains("/plain/path@x"), "{shown}");
        assert_eq!(redact_url("redis://host:1"), "redis://host:1");
    }
}
