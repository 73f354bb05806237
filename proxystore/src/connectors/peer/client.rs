//! Asking another process for one of its objects: pooled connections,
//! bounded waits.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

use super::wire::{self, Op, Request, Response, WireError};
use crate::key::Key;

/// Idle connections kept per peer.
const POOLED_PER_PEER: usize = 8;

/// Idle connections to peers, shared by every peer connector of the
/// process.
static POOL: Mutex<Option<HashMap<SocketAddr, Vec<TcpStream>>>> = Mutex::new(None);

/// Limits of one request.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub(super) connect_timeout: Duration,
    pub(super) io_timeout: Duration,
    pub(super) max_object_size: u64,
}

/// Why a request got no answer.
#[derive(Debug)]
pub(super) enum Failure {
    /// No connection could be made: the peer is gone or cut off.
    Connect(io::Error),
    /// The connection failed during the exchange (closed, reset, timed
    /// out, cut short): the peer died or stalled.
    Broken(WireError),
    /// The peer answered something this reader refuses (a length past
    /// its limit, a malformed frame).
    Refused(WireError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "could not connect: {e}"),
            Failure::Broken(e) => write!(f, "the connection failed: {e}"),
            Failure::Refused(e) => write!(f, "{e}"),
        }
    }
}

/// Sends one request to `addr` and reads its response.
///
/// A pooled connection that fails before any byte of the response came
/// (the peer closed it while idle) is replaced by a new one, once.
pub(super) fn request(
    addr: SocketAddr,
    op: Op,
    key: Key,
    instance: u64,
    limits: Limits,
) -> Result<Response, Failure> {
    let request = Request { op, key, instance };
    if let Some(conn) = take_pooled(addr) {
        match exchange(conn, &request, limits) {
            Ok((response, conn)) => {
                give_back(addr, conn);
                return Ok(response);
            }
            // Stale: the peer dropped it while it was idle. A peer that
            // stalled is not asked twice.
            Err(Failure::Broken(WireError::Io(e)))
                if !matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) => {}
            Err(other) => return Err(other),
        }
    }
    let conn = connect(addr, limits).map_err(Failure::Connect)?;
    let (response, conn) = exchange(conn, &request, limits)?;
    give_back(addr, conn);
    Ok(response)
}

fn connect(addr: SocketAddr, limits: Limits) -> io::Result<TcpStream> {
    let mut conn = TcpStream::connect_timeout(&addr, limits.connect_timeout)?;
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(limits.io_timeout))?;
    conn.set_write_timeout(Some(limits.io_timeout))?;
    conn.write_all(&wire::MAGIC)?;
    Ok(conn)
}

fn exchange(
    mut conn: TcpStream,
    request: &Request,
    limits: Limits,
) -> Result<(Response, TcpStream), Failure> {
    // The timeouts may differ from those it was pooled with.
    let set = conn
        .set_read_timeout(Some(limits.io_timeout))
        .and_then(|()| conn.set_write_timeout(Some(limits.io_timeout)));
    set.map_err(|e| Failure::Broken(WireError::Io(e)))?;
    wire::write_request(&mut conn, request).map_err(|e| Failure::Broken(WireError::Io(e)))?;
    match wire::read_response(&mut conn, request.op, limits.max_object_size) {
        Ok(response) => Ok((response, conn)),
        Err(e @ (WireError::Io(_) | WireError::Truncated { .. })) => Err(Failure::Broken(e)),
        Err(e) => Err(Failure::Refused(e)),
    }
}

fn take_pooled(addr: SocketAddr) -> Option<TcpStream> {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    pool.as_mut()?.get_mut(&addr)?.pop()
}

fn give_back(addr: SocketAddr, conn: TcpStream) {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let idle = pool
        .get_or_insert_with(HashMap::new)
        .entry(addr)
        .or_default();
    if idle.len() < POOLED_PER_PEER {
        idle.push(conn);
    }
}

/// Closes the idle connections to `addr` (its process is gone).
pub(super) fn forget(addr: SocketAddr) {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(pool) = pool.as_mut() {
        pool.remove(&addr);
    }
}
