//! Asking another process for one of its objects: pooled connections,
//! bounded waits.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

use super::wire::{self, Head, Op, Request, Response, WireError};
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
    with_retry(addr, limits, |conn| exchange(conn, &request, limits))
}

/// What a get that streams its object found.
pub(super) enum Opened {
    /// The object: its length, and a reader of exactly that many bytes.
    Object(u64, ObjectStream),
    Missing,
    OtherInstance,
}

/// Asks `addr` for an object and returns once its length is known; the
/// bytes are read from the returned stream, straight from the socket.
pub(super) fn open(
    addr: SocketAddr,
    key: Key,
    instance: u64,
    limits: Limits,
) -> Result<Opened, Failure> {
    let request = Request {
        op: Op::Get,
        key,
        instance,
    };
    with_retry(addr, limits, |mut conn| {
        send(&mut conn, &request, limits)?;
        match wire::read_head(&mut conn, Op::Get, limits.max_object_size) {
            Ok(Head::Object(len)) => {
                // The memory a reader will take for it must be there: a
                // length the system cannot give is refused now rather
                // than failing an allocation later.
                drop(wire::reserve(len).map_err(Failure::Refused)?);
                let stream = ObjectStream {
                    conn: Some(conn),
                    addr,
                    len,
                    left: len,
                };
                Ok((Opened::Object(len, stream), None))
            }
            Ok(Head::Missing) => Ok((Opened::Missing, Some(conn))),
            Ok(Head::OtherInstance) => Ok((Opened::OtherInstance, Some(conn))),
            Ok(Head::Done) => Err(Failure::Refused(WireError::Malformed(
                "a get answered without an object".into(),
            ))),
            Err(e) => Err(broken_or_refused(e)),
        }
    })
}

/// Runs `attempt` on a pooled connection, or on a new one when the pooled
/// one turns out stale; the connection it hands back is pooled again.
fn with_retry<T>(
    addr: SocketAddr,
    limits: Limits,
    mut attempt: impl FnMut(TcpStream) -> Result<(T, Option<TcpStream>), Failure>,
) -> Result<T, Failure> {
    if let Some(conn) = take_pooled(addr) {
        match attempt(conn) {
            Ok((answer, conn)) => {
                if let Some(conn) = conn {
                    give_back(addr, conn);
                }
                return Ok(answer);
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
    let (answer, conn) = attempt(conn)?;
    if let Some(conn) = conn {
        give_back(addr, conn);
    }
    Ok(answer)
}

/// The bytes of one object, read straight from the connection; the
/// connection goes back to the pool once they are all read.
pub(super) struct ObjectStream {
    conn: Option<TcpStream>,
    addr: SocketAddr,
    len: u64,
    left: u64,
}

impl Read for ObjectStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Ok(0);
        };
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = loop {
            match conn.read(&mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.conn = None;
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "the object is lost: the process at {} stopped sending it after {} \
                             of {} bytes ({e})",
                            self.addr,
                            self.len - self.left,
                            self.len
                        ),
                    ));
                }
            }
        };
        if n == 0 {
            self.conn = None;
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the object is lost: the connection to the process at {} closed after {} \
                     of {} bytes",
                    self.addr,
                    self.len - self.left,
                    self.len
                ),
            ));
        }
        self.left -= n as u64;
        if self.left == 0 {
            if let Some(conn) = self.conn.take() {
                give_back(self.addr, conn);
            }
        }
        Ok(n)
    }
}

fn send(conn: &mut TcpStream, request: &Request, limits: Limits) -> Result<(), Failure> {
    // The timeouts may differ from those it was pooled with.
    let set = conn
        .set_read_timeout(Some(limits.io_timeout))
        .and_then(|()| conn.set_write_timeout(Some(limits.io_timeout)));
    set.and_then(|()| wire::write_request(conn, request))
        .map_err(|e| Failure::Broken(WireError::Io(e)))
}

fn broken_or_refused(e: WireError) -> Failure {
    match e {
        WireError::Io(_) | WireError::Truncated { .. } => Failure::Broken(e),
        other => Failure::Refused(other),
    }
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
) -> Result<(Response, Option<TcpStream>), Failure> {
    send(&mut conn, request, limits)?;
    match wire::read_response(&mut conn, request.op, limits.max_object_size) {
        Ok(response) => Ok((response, Some(conn))),
        Err(e) => Err(broken_or_refused(e)),
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
