//! A connector that keeps objects in a Redis server.
//!
//! See [`RedisConnector`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use super::{Connector, ConnectorConfig, FromConfig, ObjectReader, Reach};
use crate::error::{Error, Result};
use crate::key::Key;

mod builder;
mod pool;
mod raw;
mod requests;
pub(crate) mod resp;
pub(crate) mod url;

pub use builder::RedisConnectorBuilder;
use builder::{invalid, millis, Options};
use pool::{shared_pool, Pool};
use resp::*;
pub(crate) use url::{scrub, RedisUrl};

/// Redis's default `proto-max-bulk-len`: the largest string a server
/// accepts unless configured otherwise (512 MiB).
pub const REDIS_MAX_OBJECT_SIZE: u64 = 512 * 1024 * 1024;

/// Default time allowed to open a connection (and authenticate).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default time allowed for one command's request or reply to move
/// (generous: large values take a while on slow links).
const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Idle connections kept for reuse per server; more are closed when
/// returned.
const POOL_SIZE: usize = 8;

/// Keys removed per `UNLINK` (and asked per `SCAN`) when closing.
const CLOSE_BATCH: usize = 1000;

/// Total bytes sent in one `MSET` by [`Connector::put_batch`]; a larger
/// batch is split (Redis refuses requests over `client-query-buffer-limit`,
/// 1 GiB by default).
const MSET_BYTES: u64 = 256 * 1024 * 1024;

/// Stores objects in Redis, each as one string value under
/// `proxystore:{namespace}:{key}`.
///
/// Every process and host that can reach the server can read the objects,
/// so this is the connector for executors whose workers run on other
/// hosts.
///
/// ```no_run
/// use proxystore::connectors::{Connector, RedisConnector};
///
/// let connector = RedisConnector::new("redis://127.0.0.1:6379")?;
/// let key = connector.put(&[b"hello ", b"world"])?;
/// assert_eq!(connector.get(&key)?.as_deref(), Some(&b"hello world"[..]));
///
/// // Options: a namespace of your own, objects kept after close, ...
/// let kept = RedisConnector::builder("redis://:secret@cache.example:6379/2")
///     .namespace("experiment-42")
///     .keep_on_close()
///     .io_timeout(std::time::Duration::from_secs(120))
///     .build()?;
/// # Ok::<(), proxystore::Error>(())
/// ```
///
/// # URLs
///
/// `redis://[user[:password]@]host[:port][/db]`, `rediss://...` for TLS
/// (with the crate feature `redis-tls`), or
/// `redis+unix:///path/to/socket?db=N` (also `&user=..&pass=..`; `unix://`,
/// `unix:/path` and the `valkey` schemes are read too). The URL is
/// checked when the connector is built, which also connects once, so a
/// wrong address or password fails there, with [`Error::Redis`].
///
/// The URL, credentials included, is part of the connector's
/// [`config`](Connector::config), so that workers on other hosts can rebuild
/// it. It never appears in the connector's `Debug` output, in its errors
/// or in its log events: those name the server as `host:port/db`, and
/// wherever a configuration is shown (a `Debug` of a
/// [`StoreConfig`](crate::StoreConfig) or a proxy) the credentials of every
/// URL form (`user:password@`, `?user=..&pass=..`) are `<hidden>`.
/// Configurations (and so proxies) carry it: send them only where the
/// password may go.
///
/// # Namespaces and close
///
/// Each connector writes its objects under its namespace, by default a
/// fresh random UUID per [`new`](RedisConnector::new) (or
/// [`build`](RedisConnectorBuilder::build)), so two stores never share
/// keys by accident; [`namespace`](RedisConnectorBuilder::namespace) sets it
/// (any text without `:`, other than `queue`; several connectors with the
/// same namespace share objects).
///
/// [`close`](Connector::close) removes the namespace's keys, found with
/// `SCAN MATCH proxystore:{namespace}:<uuid pattern>` (glob characters of
/// the namespace escaped; nothing not shaped like an object key) and removed with `UNLINK` in batches; it never uses `FLUSHDB`
/// or `KEYS`, and leaves every other key of the database alone. Only the
/// connector made by `new`/`build` clears its namespace; one rebuilt from
/// its configuration ([`FromConfig`], in a worker) never does, and
/// [`keep_on_close`](RedisConnectorBuilder::keep_on_close) keeps the
/// objects for good. Close may be called again, and the connector stays
/// usable after it.
///
/// # Reach
///
/// [`reach`](Connector::reach) is [`Reach::Host`] for a server on a
/// loopback address (`127.0.0.0/8`, `::1`, `localhost`) or a Unix socket,
/// and [`Reach::Network`] otherwise.
///
/// # Limits
///
/// Redis refuses strings larger than its `proto-max-bulk-len`, 512 MiB by
/// default ([`REDIS_MAX_OBJECT_SIZE`]). A larger object is refused before
/// anything is sent, with [`Error::TooLarge`]; route large objects elsewhere
/// (a shared directory) with a [`MultiConnector`](super::MultiConnector).
/// A server configured for more can be given a larger
/// [`max_object_size`](RedisConnectorBuilder::max_object_size).
///
/// # Connections
///
/// A few connections are kept open and shared by the threads using the
/// connector, and by every other connector of this process to the same
/// server (the same URL and timeouts, whatever the namespace). A connection that fails is closed, and each operation (they
/// are all idempotent) is retried once on a new connection, so the
/// connector works again after the server restarted. Opening a connection
/// times out after 5 s, a request or a reply after 60 s
/// ([`io_timeout`](RedisConnectorBuilder::io_timeout)): a dead server is
/// reported as [`Error::Redis`], never waited on for ever.
#[derive(Clone)]
pub struct RedisConnector {
    inner: Arc<Inner>,
}

struct Inner {
    /// The URL as given, with its credentials: only for `config`.
    url: String,
    client: redis::Client,
    /// `host:port/db`, never with credentials.
    server: String,
    /// `redis(host:port/db)`, for errors of this crate's own.
    label: String,
    namespace: String,
    /// Words that must never appear in an error (password, user name).
    secrets: Vec<String>,
    keep_on_close: bool,
    /// Whether `close` removes the namespace's keys: only in the creating
    /// process, and not with `keep_on_close`.
    clear: bool,
    max_object_size: u64,
    connect_timeout: Duration,
    io_timeout: Duration,
    reach: Reach,
    /// Shared with every connector of this process to the same server.
    pool: Arc<Pool>,
}

impl RedisConnector {
    /// Connects to the server at `url` (see [URLs](RedisConnector#urls))
    /// with a fresh random namespace and the default options.
    pub fn new(url: impl Into<String>) -> Result<Self> {
        Self::builder(url).build()
    }

    /// Options for a connector to the server at `url`; finish with
    /// [`build`](RedisConnectorBuilder::build).
    pub fn builder(url: impl Into<String>) -> RedisConnectorBuilder {
        RedisConnectorBuilder {
            url: url.into(),
            namespace: None,
            keep_on_close: false,
            max_object_size: REDIS_MAX_OBJECT_SIZE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            io_timeout: DEFAULT_IO_TIMEOUT,
        }
    }

    /// The namespace: objects are stored under `proxystore:{namespace}:{key}`.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The server as `host:port/db` (or `unix:path/db`), without
    /// credentials.
    pub fn server(&self) -> &str {
        &self.inner.server
    }

    /// The Redis key an object is stored under.
    pub fn redis_key(&self, key: &Key) -> String {
        format!("proxystore:{}:{}", self.inner.namespace, key)
    }

    /// The largest object accepted, in bytes.
    pub fn max_object_size(&self) -> u64 {
        self.inner.max_object_size
    }

    fn with_options(options: Options, creator: bool) -> Result<Self> {
        let url = options.url;
        let RedisUrl {
            client,
            server,
            reach,
            secrets,
        } = RedisUrl::parse(&url, Self::KIND)?;
        if options.namespace.is_empty() {
            return Err(invalid("the namespace is empty"));
        }
        if options.namespace.contains(':') || options.namespace == "queue" {
            return Err(invalid(format!(
                "the namespace {:?} may not contain ':' nor be \"queue\" (the multi-host \
                 executor's keys are proxystore:queue:...): another namespace's keys would \
                 fall under it",
                options.namespace
            )));
        }
        let pool = shared_pool(&url, options.connect_timeout_ms, options.io_timeout_ms);
        let inner = Inner {
            url,
            client,
            label: format!("redis({server})"),
            server,
            namespace: options.namespace,
            secrets,
            keep_on_close: options.keep_on_close,
            clear: creator && !options.keep_on_close,
            max_object_size: options.max_object_size,
            connect_timeout: Duration::from_millis(options.connect_timeout_ms.max(1)),
            io_timeout: Duration::from_millis(options.io_timeout_ms.max(1)),
            reach,
            pool,
        };
        let connector = RedisConnector {
            inner: Arc::new(inner),
        };
        Ok(connector)
    }

    fn redis_error(&self, operation: &str, e: &redis::RedisError) -> Error {
        Error::Redis {
            server: self.inner.server.clone(),
            operation: operation.to_string(),
            message: scrub(&self.inner.secrets, e.to_string()),
        }
    }

    fn check_size(&self, size: u64) -> Result<()> {
        if size > self.inner.max_object_size {
            return Err(Error::TooLarge {
                connector: self.inner.label.clone(),
                size,
                limit: self.inner.max_object_size,
                hint: "; Redis refuses larger strings (its proto-max-bulk-len): route large \
                       objects to a shared directory with a MultiConnector, e.g. \
                       MultiConnector::builder().route(limit, redis).fallback(file).build()"
                    .to_string(),
            });
        }
        Ok(())
    }
}

impl fmt::Debug for RedisConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnector")
            .field("server", &self.inner.server)
            .field("namespace", &self.inner.namespace)
            .field("keep_on_close", &self.inner.keep_on_close)
            .field("clears_on_close", &self.inner.clear)
            .field("max_object_size", &self.inner.max_object_size)
            .finish_non_exhaustive()
    }
}

impl Connector for RedisConnector {
    fn config(&self) -> ConnectorConfig {
        let options = Options {
            url: self.inner.url.clone(),
            namespace: self.inner.namespace.clone(),
            keep_on_close: self.inner.keep_on_close,
            max_object_size: self.inner.max_object_size,
            connect_timeout_ms: millis(self.inner.connect_timeout),
            io_timeout_ms: millis(self.inner.io_timeout),
        };
        ConnectorConfig::new(Self::KIND, &options).expect("plain options serialize")
    }

    fn set(&self, key: &Key, parts: &[&[u8]]) -> Result<()> {
        self.set_with(key, parts, None)
    }

    /// One `SET .. PX`: the object and its expiry in one request.
    fn set_expiring(&self, key: &Key, parts: &[&[u8]], after: std::time::Duration) -> Result<bool> {
        self.set_with(key, parts, Some(after))?;
        Ok(true)
    }

    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        let name = self.redis_key(key);
        let request = pack_args(&[b"GET", name.as_bytes()]);
        // The value is read into a buffer of its exact size.
        let found = self.run("GET", |c| expect_bulk("GET", c.request(&[&request])?))?;
        tracing::debug!(%key, size = found.as_ref().map(Vec::len), "redis: get");
        Ok(found)
    }

    fn open(&self, key: &Key) -> Result<Option<ObjectReader>> {
        Ok(self.open_sized(key)?.map(|(reader, _)| reader))
    }

    /// The value is streamed from the connection into the decoder, which
    /// reads it straight into the typed buffer of the value; the
    /// connection serves again once the reader has read it all.
    fn open_sized(&self, key: &Key) -> Result<Option<(ObjectReader, Option<u64>)>> {
        self.open_streaming(key)
    }

    fn exists(&self, key: &Key) -> Result<bool> {
        let name = self.redis_key(key);
        let request = pack_args(&[b"EXISTS", name.as_bytes()]);
        let n = self.run("EXISTS", |c| expect_int("EXISTS", c.request(&[&request])?))?;
        Ok(n > 0)
    }

    /// Lists the namespace's objects with `SCAN MATCH
    /// proxystore:{namespace}:<uuid pattern>`, as [`close`](Connector::close)
    /// finds them (never `KEYS`); names under the prefix that are not
    /// exactly an object key are left out.
    fn keys(&self) -> Result<Vec<Key>> {
        let prefix = format!("proxystore:{}:", self.inner.namespace);
        let mut found = std::collections::HashSet::new();
        self.scan_objects("listing the objects", |names| {
            for name in names {
                let key = name
                    .strip_prefix(prefix.as_bytes())
                    .and_then(|rest| std::str::from_utf8(rest).ok())
                    .and_then(|rest| Key::parse(rest).ok().filter(|k| *k.as_str() == *rest));
                found.extend(key);
            }
            Ok(())
        })?;
        Ok(found.into_iter().collect())
    }

    fn expire(&self, key: &Key, after: std::time::Duration) -> Result<bool> {
        let name = self.redis_key(key);
        let ms = after.as_millis().clamp(1, i64::MAX as u128) as i64;
        self.run("PEXPIRE", |c| {
            expect_int(
                "PEXPIRE",
                c.command(redis::cmd("PEXPIRE").arg(&name).arg(ms))?,
            )
        })?;
        Ok(true)
    }

    fn expire_all(&self, keys: &[Key], after: std::time::Duration) -> Result<bool> {
        let ms = after.as_millis().clamp(1, i64::MAX as u128) as i64;
        let ms = ms.to_string();
        for chunk in keys.chunks(CLOSE_BATCH) {
            // One round trip for the chunk.
            let packed: Vec<Vec<u8>> = chunk
                .iter()
                .map(|key| pack_args(&[b"PEXPIRE", self.redis_key(key).as_bytes(), ms.as_bytes()]))
                .collect();
            let pieces: Vec<&[u8]> = packed.iter().map(Vec::as_slice).collect();
            self.run("PEXPIRE", |c| {
                for reply in c.requests(&pieces, chunk.len())? {
                    expect_int("PEXPIRE", reply)?;
                }
                Ok(())
            })?;
        }
        Ok(true)
    }

    fn evict(&self, key: &Key) -> Result<()> {
        tracing::debug!(%key, "redis: evict");
        let name = self.redis_key(key);
        let request = pack_args(&[b"UNLINK", name.as_bytes()]);
        self.run("UNLINK", |c| expect_int("UNLINK", c.request(&[&request])?))
            .map(drop)
    }

    /// One round trip: `UNLINK` of every key, then `STRLEN` and
    /// `GETRANGE` of the one to read.
    fn evict_and_peek(&self, keys: &[Key], peek: Option<(&Key, usize)>) -> Result<Option<Vec<u8>>> {
        self.unlink_and_peek(keys, peek)
    }

    fn close(&self) -> Result<()> {
        if !self.inner.clear {
            tracing::debug!(server = %self.inner.server, "redis: close keeps the objects");
            return Ok(());
        }
        let removed = self.clear_namespace()?;
        tracing::debug!(
            server = %self.inner.server,
            namespace = %self.inner.namespace,
            removed,
            "redis: close removed the namespace's objects"
        );
        Ok(())
    }

    fn put_batch(&self, objects: &[&[&[u8]]]) -> Result<Vec<Key>> {
        let sizes: Vec<u64> = objects
            .iter()
            .map(|parts| parts.iter().map(|p| p.len() as u64).sum())
            .collect();
        for size in &sizes {
            self.check_size(*size)?;
        }
        let keys: Vec<Key> = objects
            .iter()
            .map(|_| self.new_key())
            .collect::<Result<_>>()?;
        let names: Vec<String> = keys.iter().map(|k| self.redis_key(k)).collect();
        let mut start = 0;
        while start < objects.len() {
            // As many objects as fit in one request (at least one).
            let mut end = start + 1;
            let mut bytes = sizes[start];
            while end < objects.len() && bytes + sizes[end] <= MSET_BYTES {
                bytes += sizes[end];
                end += 1;
            }
            let mut args: Vec<&[&[u8]]> = Vec::with_capacity(1 + 2 * (end - start));
            let command: &[&[u8]] = &[b"MSET"];
            args.push(command);
            let name_parts: Vec<[&[u8]; 1]> =
                names[start..end].iter().map(|n| [n.as_bytes()]).collect();
            for (name, parts) in name_parts.iter().zip(&objects[start..end]) {
                args.push(name);
                args.push(parts);
            }
            let request = pack(&args);
            tracing::debug!(objects = end - start, bytes, "redis: put_batch");
            self.run("MSET", |c| expect_ok("MSET", c.request(&[&request])?))?;
            start = end;
        }
        Ok(keys)
    }

    fn get_batch(&self, keys: &[Key]) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = keys.iter().map(|k| self.redis_key(k)).collect();
        let values = self.run("MGET", |c| {
            match c.command(redis::cmd("MGET").arg(&names))? {
                Value::Array(items) if items.len() == names.len() => items
                    .into_iter()
                    .map(|v| expect_bulk("MGET", v))
                    .collect::<redis::RedisResult<Vec<_>>>(),
                Value::ServerError(e) => Err(e.into()),
                other => Err(unexpected("MGET", &other)),
            }
        })?;
        tracing::debug!(objects = keys.len(), "redis: get_batch");
        Ok(values)
    }

    fn reach(&self) -> Reach {
        self.inner.reach
    }
}

impl FromConfig for RedisConnector {
    const KIND: &'static str = "redis";

    /// Rebuilds the connector without connecting (the first operation
    /// does); it never clears the namespace on close.
    fn from_config(config: &ConnectorConfig) -> Result<Self> {
        let options: Options = config.options()?;
        Self::with_options(options, false)
    }
}

crate::register_connector!(RedisConnector);

#[cfg(test)]
mod tests {
    use super::url::is_loopback;
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?c[d]e\\f"), "a\\*b\\?c\\[d\\]e\\\\f");
        assert_eq!(glob_escape("plain-ns"), "plain\\-ns");
    }

    #[test]
    fn loopback_hosts() {
        for host in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "localhost",
            "LocalHost",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["10.0.0.1", "example.com", "::2", "0.0.0.0"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn packed_commands_join_the_parts() {
        let packed = pack(&[&[b"SET"], &[b"k"], &[b"ab", b"", b"c"]]);
        assert_eq!(packed, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nabc\r\n");
    }

    #[test]
    fn a_head_before_parts_is_the_packed_command_s_start() {
        let parts: &[&[u8]] = &[b"ab", b"", b"c"];
        let mut request = head_before_parts(&[b"SET", b"k"], parts, 2);
        request.extend(parts.concat());
        request.extend_from_slice(b"\r\n$2\r\nPX\r\n$2\r\n10\r\n");
        assert_eq!(
            request,
            pack(&[&[b"SET"], &[b"k"], parts, &[b"PX"], &[b"10"]])
        );
    }
}
