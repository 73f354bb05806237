//! A connector that keeps objects in a Redis server.
//!
//! See [`RedisConnector`].

use std::collections::HashMap;
use std::fmt;
use std::io::Cursor;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionLike, IntoConnectionInfo, Value};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Connector, ConnectorConfig, FromConfig, ObjectReader, Reach};
use crate::error::{Error, Result};
use crate::key::Key;

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

/// Idle connections to one server (one URL, credentials and timeouts
/// included), shared by every connector that uses it: a worker that
/// rebuilt stores of many namespaces keeps a few connections, not one per
/// namespace. The connections close when the last connector goes.
#[derive(Default)]
struct Pool {
    idle: Mutex<Vec<redis::Connection>>,
}

/// The pool for `url` with these timeouts.
fn shared_pool(url: &str, connect_timeout_ms: u64, io_timeout_ms: u64) -> Arc<Pool> {
    type Pools = HashMap<(String, u64, u64), Weak<Pool>>;
    static POOLS: OnceLock<Mutex<Pools>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let key = (url.to_string(), connect_timeout_ms, io_timeout_ms);
    if let Some(pool) = pools.get(&key).and_then(Weak::upgrade) {
        return pool;
    }
    // Forget the servers no connector uses any more.
    pools.retain(|_, pool| pool.strong_count() > 0);
    let pool = Arc::new(Pool::default());
    pools.insert(key, Arc::downgrade(&pool));
    pool
}

#[derive(Serialize, Deserialize)]
struct Options {
    url: String,
    namespace: String,
    keep_on_close: bool,
    max_object_size: u64,
    connect_timeout_ms: u64,
    io_timeout_ms: u64,
}

/// Options of a [`RedisConnector`]; made by [`RedisConnector::builder`].
#[derive(Clone)]
pub struct RedisConnectorBuilder {
    url: String,
    namespace: Option<String>,
    keep_on_close: bool,
    max_object_size: u64,
    connect_timeout: Duration,
    io_timeout: Duration,
}

impl fmt::Debug for RedisConnectorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnectorBuilder")
            .field("url", &"<hidden>")
            .field("namespace", &self.namespace)
            .field("keep_on_close", &self.keep_on_close)
            .field("max_object_size", &self.max_object_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("io_timeout", &self.io_timeout)
            .finish()
    }
}

impl RedisConnectorBuilder {
    /// Writes the objects under `proxystore:{namespace}:` instead of a
    /// fresh random namespace. Connectors with the same namespace on the
    /// same database share their objects (and closing one removes them).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Keeps the objects when the connector is closed.
    pub fn keep_on_close(mut self) -> Self {
        self.keep_on_close = true;
        self
    }

    /// The largest object accepted, in bytes; default
    /// [`REDIS_MAX_OBJECT_SIZE`] (512 MiB, Redis's own default limit).
    /// Raise it only for a server whose `proto-max-bulk-len` is raised too.
    pub fn max_object_size(mut self, bytes: u64) -> Self {
        self.max_object_size = bytes;
        self
    }

    /// Time allowed to open a connection and authenticate; default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time allowed for a request to be sent or a reply to arrive; default
    /// 60 s. Large objects on slow links may need more.
    pub fn io_timeout(mut self, timeout: Duration) -> Self {
        self.io_timeout = timeout;
        self
    }

    /// Checks the URL, connects once and returns the connector.
    ///
    /// Fails with [`Error::InvalidConfig`] for a URL that is not a Redis
    /// URL (or a `rediss://` one without the `redis-tls` feature), and with
    /// [`Error::Redis`] if the server cannot be reached or refuses the
    /// credentials.
    pub fn build(self) -> Result<RedisConnector> {
        let namespace = self
            .namespace
            .unwrap_or_else(|| Uuid::new_v4().hyphenated().to_string());
        let options = Options {
            url: self.url,
            namespace,
            keep_on_close: self.keep_on_close,
            max_object_size: self.max_object_size,
            connect_timeout_ms: millis(self.connect_timeout),
            io_timeout_ms: millis(self.io_timeout),
        };
        let connector = RedisConnector::with_options(options, true)?;
        // Connect now: a wrong address or password is reported here, and
        // the connection is kept for the first operation.
        let connection = connector
            .connect()
            .map_err(|e| connector.redis_error("connecting", &e))?;
        connector.give_back(connection);
        tracing::debug!(
            server = %connector.inner.server,
            namespace = %connector.inner.namespace,
            "redis: connected"
        );
        Ok(connector)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidConfig {
        kind: RedisConnector::KIND.into(),
        reason: reason.into(),
    }
}

/// A `SCAN MATCH` pattern of the canonical text form of a key.
const UUID_PATTERN: &str = "????????-????-????-????-????????????";

/// Escapes the characters that `SCAN MATCH` treats as a pattern.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Appends one RESP bulk string made of `parts` to `out`.
fn push_bulk(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.push(b'$');
    out.extend_from_slice(len.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for part in parts {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b"\r\n");
}

/// A packed command of `args`, each the concatenation of its parts: the
/// parts are copied once, straight into the request buffer.
fn pack(args: &[&[&[u8]]]) -> Vec<u8> {
    let body: usize = args
        .iter()
        .map(|parts| parts.iter().map(|p| p.len()).sum::<usize>() + 24)
        .sum();
    let mut out = Vec::with_capacity(body + 16);
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for parts in args {
        push_bulk(&mut out, parts);
    }
    out
}

fn unexpected(command: &str, value: &Value) -> redis::RedisError {
    let what = match value {
        Value::Nil => "nil".to_string(),
        Value::Int(i) => format!("integer {i}"),
        Value::Array(items) => format!("an array of {}", items.len()),
        Value::Okay => "OK".to_string(),
        Value::SimpleString(s) => format!("`{s}`"),
        _ => "another kind of value".to_string(),
    };
    redis::RedisError::from((
        redis::ErrorKind::Parse,
        "unexpected reply",
        format!("{command} answered {what}"),
    ))
}

fn bulk(command: &str, value: Value) -> redis::RedisResult<Option<Vec<u8>>> {
    match value {
        Value::Nil => Ok(None),
        Value::BulkString(bytes) => Ok(Some(bytes)),
        Value::ServerError(e) => Err(e.into()),
        other => Err(unexpected(command, &other)),
    }
}

fn int(command: &str, value: Value) -> redis::RedisResult<i64> {
    match value {
        Value::Int(i) => Ok(i),
        Value::ServerError(e) => Err(e.into()),
        other => Err(unexpected(command, &other)),
    }
}

fn okay(command: &str, value: Value) -> redis::RedisResult<()> {
    match value {
        Value::Okay => Ok(()),
        Value::SimpleString(s) if s == "OK" => Ok(()),
        Value::ServerError(e) => Err(e.into()),
        other => Err(unexpected(command, &other)),
    }
}

/// `text` with the credentials of any URL in it hidden
/// ([`redact_url`](super::redact_url)), and every secret replaced.
pub(crate) fn scrub(secrets: &[String], text: String) -> String {
    let mut text = super::redact_url(&text);
    for secret in secrets {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), "<hidden>");
        }
    }
    text
}

/// A Redis URL, checked: the client, the server as shown (`host:port/db`,
/// never with credentials), where it can be reached from, and the words
/// that must never appear in a message (user name, password). Shared by the
/// connector and the multi-host executor.
pub(crate) struct RedisUrl {
    pub(crate) client: redis::Client,
    pub(crate) server: String,
    pub(crate) reach: Reach,
    pub(crate) secrets: Vec<String>,
}

impl RedisUrl {
    /// Checks `url`; a bad one is [`Error::InvalidConfig`] of `kind`.
    pub(crate) fn parse(url: &str, kind: &str) -> Result<RedisUrl> {
        let invalid = |reason: String| Error::InvalidConfig {
            kind: kind.into(),
            reason,
        };
        // As the client reads it: `unix:/path` has no `//`.
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        let tls = matches!(scheme.as_deref(), Some("rediss" | "valkeys"));
        if tls && !cfg!(feature = "redis-tls") {
            return Err(invalid(
                "rediss:// (TLS) URLs need proxystore's `redis-tls` feature; enable it in \
                     Cargo.toml (features = [\"redis-tls\"]) or use a redis:// URL"
                    .into(),
            ));
        }
        let expected = "expected redis://[user[:password]@]host[:port][/db], \
                            rediss://... (TLS, feature `redis-tls`) or redis+unix:///path?db=N";
        if !matches!(
            scheme.as_deref(),
            Some("redis" | "rediss" | "valkey" | "valkeys" | "redis+unix" | "valkey+unix" | "unix")
        ) {
            return Err(invalid(format!("not a Redis URL: {expected}")));
        }
        // The credentials as written (percent-encoded), then as decoded.
        let mut secrets: Vec<String> = Vec::new();
        if let Some((userinfo, _)) = url
            .split_once("://")
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|authority| authority.rsplit_once('@'))
        {
            secrets.extend(
                userinfo
                    .split(':')
                    .filter(|part| !part.is_empty())
                    .map(str::to_string),
            );
        }
        let info = url.into_connection_info().map_err(|e| {
            // The client's message names the part that is wrong, not the
            // URL; scrubbed all the same.
            let message = scrub(&secrets, e.to_string());
            invalid(format!(
                "the Redis URL is not valid ({message}): {expected}"
            ))
        })?;
        let settings = info.redis_settings();
        for secret in [settings.password(), settings.username()]
            .into_iter()
            .flatten()
        {
            if !secret.is_empty() && !secrets.iter().any(|s| s == secret) {
                secrets.push(secret.to_string());
            }
        }
        // Longest first, so that no part of a longer secret is left.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let db = settings.db();
        let (server, reach) = match info.addr() {
            ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. }
                if host.is_empty() =>
            {
                return Err(invalid(format!("the Redis URL has no host: {expected}")));
            }
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                let shown = if host.contains(':') {
                    format!("[{host}]:{port}/{db}")
                } else {
                    format!("{host}:{port}/{db}")
                };
                let reach = if is_loopback(host) {
                    Reach::Host
                } else {
                    Reach::Network
                };
                (shown, reach)
            }
            ConnectionAddr::Unix(path) => (format!("unix:{}/{db}", path.display()), Reach::Host),
            // Kinds of addresses added to the client later.
            #[allow(unreachable_patterns)]
            _ => (format!("?/{db}"), Reach::Network),
        };
        let client = redis::Client::open(info).map_err(|e| {
            let message = scrub(&secrets, e.to_string());
            invalid(format!(
                "the Redis URL is not valid ({message}): {expected}"
            ))
        })?;
        Ok(RedisUrl {
            client,
            server,
            reach,
            secrets,
        })
    }
}

/// Whether a host name or address is this host's loopback.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
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

    fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let connection = self
            .inner
            .client
            .get_connection_with_timeout(self.inner.connect_timeout)?;
        connection.set_read_timeout(Some(self.inner.io_timeout))?;
        connection.set_write_timeout(Some(self.inner.io_timeout))?;
        Ok(connection)
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Vec<redis::Connection>> {
        self.inner
            .pool
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn give_back(&self, connection: redis::Connection) {
        let mut pool = self.pool();
        if pool.len() < POOL_SIZE {
            pool.push(connection);
        }
    }

    /// Runs `f` on a pooled connection (or a new one). A connection whose
    /// command failed is closed; after a failure of the connection itself
    /// (not a timeout, not the server's refusal) every idle connection is
    /// closed too, and `f` runs once more on a new connection.
    fn run<T>(
        &self,
        operation: &str,
        mut f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let mut retried = false;
        loop {
            let pooled = if retried { None } else { self.pool().pop() };
            let fresh = pooled.is_none();
            let mut connection = match pooled {
                Some(c) => c,
                None => match self.connect() {
                    Ok(c) => c,
                    Err(e) => return Err(self.redis_error(operation, &e)),
                },
            };
            match f(&mut connection) {
                Ok(value) => {
                    self.give_back(connection);
                    return Ok(value);
                }
                Err(e) => {
                    // The connection may still have a reply on its way (a
                    // timeout) or be dead: never reuse it.
                    drop(connection);
                    let broken = (e.is_io_error() || e.is_connection_dropped()) && !e.is_timeout();
                    if broken {
                        self.pool().clear();
                    }
                    if broken && !retried && !(fresh && e.is_connection_refusal()) {
                        tracing::debug!(
                            server = %self.inner.server,
                            operation,
                            "redis: connection failed, retrying on a new one"
                        );
                        retried = true;
                        continue;
                    }
                    return Err(self.redis_error(operation, &e));
                }
            }
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

    /// Removes every key of the namespace (SCAN + UNLINK).
    fn clear_namespace(&self) -> Result<u64> {
        // Only names shaped like the namespace's object keys: nothing else
        // under the prefix (a queue of the multi-host executor, another
        // program's keys) is touched.
        let pattern = format!(
            "proxystore:{}:{UUID_PATTERN}",
            glob_escape(&self.inner.namespace)
        );
        let mut removed = 0u64;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys) = self.run("close (SCAN)", |c| {
                let reply = c.req_command(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(CLOSE_BATCH),
                )?;
                scan_reply(reply)
            })?;
            for batch in keys.chunks(CLOSE_BATCH) {
                let n = self.run("close (UNLINK)", |c| {
                    int("UNLINK", c.req_command(redis::cmd("UNLINK").arg(batch))?)
                })?;
                removed += u64::try_from(n).unwrap_or(0);
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }
}

fn scan_reply(reply: Value) -> redis::RedisResult<(u64, Vec<Vec<u8>>)> {
    let reply = reply.extract_error()?;
    let Value::Array(mut items) = reply else {
        return Err(unexpected("SCAN", &reply));
    };
    if items.len() != 2 {
        return Err(unexpected("SCAN", &Value::Array(items)));
    }
    let keys = items.pop().unwrap_or(Value::Nil);
    let cursor = items.pop().unwrap_or(Value::Nil);
    let cursor = match &cursor {
        Value::BulkString(b) => std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()),
        Value::SimpleString(s) => s.parse().ok(),
        Value::Int(i) => u64::try_from(*i).ok(),
        _ => None,
    }
    .ok_or_else(|| unexpected("SCAN", &cursor))?;
    let Value::Array(keys) = keys else {
        return Err(unexpected("SCAN", &keys));
    };
    let keys = keys
        .into_iter()
        .filter_map(|k| match k {
            Value::BulkString(b) => Some(b),
            _ => None,
        })
        .collect();
    Ok((cursor, keys))
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
        let size: u64 = parts.iter().map(|p| p.len() as u64).sum();
        self.check_size(size)?;
        tracing::debug!(%key, size, server = %self.inner.server, "redis: set");
        let name = self.redis_key(key);
        let request = pack(&[&[b"SET"], &[name.as_bytes()], parts]);
        self.run("SET", |c| okay("SET", c.req_packed_command(&request)?))
    }

    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        let name = self.redis_key(key);
        let found = self.run("GET", |c| {
            bulk("GET", c.req_command(redis::cmd("GET").arg(&name))?)
        })?;
        tracing::debug!(%key, size = found.as_ref().map(Vec::len), "redis: get");
        Ok(found)
    }

    fn open(&self, key: &Key) -> Result<Option<ObjectReader>> {
        Ok(self.open_sized(key)?.map(|(reader, _)| reader))
    }

    fn open_sized(&self, key: &Key) -> Result<Option<(ObjectReader, Option<u64>)>> {
        Ok(self.get(key)?.map(|bytes| {
            let len = bytes.len() as u64;
            (Box::new(Cursor::new(bytes)) as ObjectReader, Some(len))
        }))
    }

    fn exists(&self, key: &Key) -> Result<bool> {
        let name = self.redis_key(key);
        let n = self.run("EXISTS", |c| {
            int("EXISTS", c.req_command(redis::cmd("EXISTS").arg(&name))?)
        })?;
        Ok(n > 0)
    }

    fn expire(&self, key: &Key, after: std::time::Duration) -> Result<bool> {
        let name = self.redis_key(key);
        let ms = after.as_millis().clamp(1, i64::MAX as u128) as i64;
        self.run("PEXPIRE", |c| {
            int(
                "PEXPIRE",
                c.req_command(redis::cmd("PEXPIRE").arg(&name).arg(ms))?,
            )
        })?;
        Ok(true)
    }

    fn evict(&self, key: &Key) -> Result<()> {
        tracing::debug!(%key, "redis: evict");
        let name = self.redis_key(key);
        self.run("UNLINK", |c| {
            int("UNLINK", c.req_command(redis::cmd("UNLINK").arg(&name))?)
        })
        .map(drop)
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
            self.run("MSET", |c| okay("MSET", c.req_packed_command(&request)?))?;
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
            match c.req_command(redis::cmd("MGET").arg(&names))? {
                Value::Array(items) if items.len() == names.len() => items
                    .into_iter()
                    .map(|v| bulk("MGET", v))
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
}
