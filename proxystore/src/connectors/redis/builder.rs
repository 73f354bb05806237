//! The options of a [`RedisConnector`](super::RedisConnector).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::RedisConnector;
use crate::connectors::FromConfig;
use crate::error::{Error, Result};

#[derive(Serialize, Deserialize)]
pub(super) struct Options {
    pub(super) url: String,
    pub(super) namespace: String,
    pub(super) keep_on_close: bool,
    pub(super) max_object_size: u64,
    pub(super) connect_timeout_ms: u64,
    pub(super) io_timeout_ms: u64,
}

/// Options of a [`RedisConnector`]; made by [`RedisConnector::builder`].
#[derive(Clone)]
pub struct RedisConnectorBuilder {
    pub(super) url: String,
    pub(super) namespace: Option<String>,
    pub(super) keep_on_close: bool,
    pub(super) max_object_size: u64,
    pub(super) connect_timeout: Duration,
    pub(super) io_timeout: Duration,
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
    /// [`REDIS_MAX_OBJECT_SIZE`](super::REDIS_MAX_OBJECT_SIZE) (512 MiB, Redis's own default limit).
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

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(super) fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidConfig {
        kind: RedisConnector::KIND.into(),
        reason: reason.into(),
    }
}
