//! Idle connections shared by every connector of a process to one server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use redis::ConnectionLike;

use super::raw::RawConnection;
use super::POOL_SIZE;
use crate::error::Result;

/// Idle connections to one server (one URL, credentials and timeouts
/// included), shared by every connector that uses it: a worker that
/// rebuilt stores of many namespaces keeps a few connections, not one per
/// namespace. The connections close when the last connector goes.
#[derive(Default)]
pub(super) struct Pool {
    pub(super) idle: Mutex<Vec<Conn>>,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `connection` for reuse, unless enough are idle already.
    pub(super) fn give_back(&self, connection: Conn) {
        let mut idle = self.lock();
        if idle.len() < POOL_SIZE {
            idle.push(connection);
        }
    }
}

/// A connection to the server: one that speaks RESP itself (TCP, Unix
/// sockets), or the client's own (TLS).
pub(super) enum Conn {
    Raw(RawConnection),
    Client(redis::Connection),
}

impl Conn {
    /// Sends a request made of `pieces` (concatenated: one packed
    /// command) and reads its reply.
    pub(super) fn request(&mut self, pieces: &[&[u8]]) -> redis::RedisResult<redis::Value> {
        match self {
            Conn::Raw(c) => c.request(pieces),
            Conn::Client(c) => c.req_packed_command(&pieces.concat()),
        }
    }

    /// Sends `count` packed commands (`pieces`, concatenated) at once and
    /// reads their replies.
    pub(super) fn requests(
        &mut self,
        pieces: &[&[u8]],
        count: usize,
    ) -> redis::RedisResult<Vec<redis::Value>> {
        match self {
            Conn::Raw(c) => c.requests(pieces, count),
            Conn::Client(c) => c.req_packed_commands(&pieces.concat(), 0, count),
        }
    }

    /// Sends a command built with the client's `Cmd`.
    pub(super) fn command(&mut self, command: &redis::Cmd) -> redis::RedisResult<redis::Value> {
        match self {
            Conn::Raw(c) => c.request(&[&command.get_packed_command()]),
            Conn::Client(c) => c.req_command(command),
        }
    }
}

/// The pool for `url` with these timeouts.
pub(super) fn shared_pool(url: &str, connect_timeout_ms: u64, io_timeout_ms: u64) -> Arc<Pool> {
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

/// A connector's use of the shared pool: a connection for each operation,
/// given back after it; a failed one closed and, once, replaced.
impl super::RedisConnector {
    pub(super) fn connect(&self) -> redis::RedisResult<Conn> {
        let info = self.inner.client.get_connection_info();
        if let Some(raw) =
            RawConnection::connect(info, self.inner.connect_timeout, self.inner.io_timeout)
        {
            return raw.map(Conn::Raw);
        }
        let connection = self
            .inner
            .client
            .get_connection_with_timeout(self.inner.connect_timeout)?;
        connection.set_read_timeout(Some(self.inner.io_timeout))?;
        connection.set_write_timeout(Some(self.inner.io_timeout))?;
        Ok(Conn::Client(connection))
    }

    pub(super) fn pool(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.inner.pool.lock()
    }

    pub(super) fn give_back(&self, connection: Conn) {
        self.inner.pool.give_back(connection);
    }

    /// Runs `f` on a pooled connection (or a new one). A connection whose
    /// command failed is closed; after a failure of the connection itself
    /// (not a timeout, not the server's refusal) every idle connection is
    /// closed too, and `f` runs once more on a new connection.
    pub(super) fn run<T>(
        &self,
        operation: &str,
        mut f: impl FnMut(&mut Conn) -> redis::RedisResult<T>,
    ) -> Result<T> {
        self.run_owned(operation, |mut connection| match f(&mut connection) {
            Ok(value) => (Some(connection), Ok(value)),
            Err(e) => (None, Err(e)),
        })
    }

    /// [`run`](Self::run) for an `f` that takes the connection and gives
    /// it back (or keeps it: a reply still being read).
    pub(super) fn run_owned<T>(
        &self,
        operation: &str,
        mut f: impl FnMut(Conn) -> (Option<Conn>, redis::RedisResult<T>),
    ) -> Result<T> {
        let mut retried = false;
        loop {
            let pooled = if retried { None } else { self.pool().pop() };
            let fresh = pooled.is_none();
            let connection = match pooled {
                Some(c) => c,
                None => match self.connect() {
                    Ok(c) => c,
                    Err(e) => return Err(self.redis_error(operation, &e)),
                },
            };
            match f(connection) {
                (back, Ok(value)) => {
                    if let Some(connection) = back {
                        self.give_back(connection);
                    }
                    return Ok(value);
                }
                (back, Err(e)) => {
                    // The connection may still have a reply on its way (a
                    // timeout) or be dead: never reuse it.
                    drop(back);
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
}
