//! The objects of this process and the listener that serves them.
//!
//! One per process, started by the first peer connector that stores an
//! object: every peer connector of the process (the caller's own, those
//! rebuilt from configurations in a worker) keeps its objects in the same
//! table and serves them on the same address, so objects outlive the
//! connector and the store that made them (a worker drops rebuilt stores
//! it has not used for a while) until they are evicted or the process
//! exits.

use std::collections::HashMap;
use std::io::{self, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::wire::{self, Op, Request, Response};
use crate::error::{Error, Result};
use crate::key::Key;

/// Connections served at once; more are closed at once (readers pool
/// theirs, so a host needs about one per reading thread of each peer).
const MAX_CONNECTIONS: usize = 512;

/// How long a served connection may stay idle between requests.
const IDLE: Duration = Duration::from_secs(600);

/// How long writing to a reader may stall before the connection is
/// dropped.
const WRITE_STALL: Duration = Duration::from_secs(60);

/// The objects of this process and where they are served.
pub(super) struct Server {
    /// Where readers connect.
    pub(super) addr: SocketAddr,
    /// Drawn at start: tells this process from a later one on the same
    /// address.
    pub(super) instance: u64,
    objects: Mutex<HashMap<Key, Arc<Vec<u8>>>>,
    connections: AtomicUsize,
}

static SERVER: Mutex<Option<Arc<Server>>> = Mutex::new(None);

/// This process's server if it has started.
pub(super) fn running() -> Option<Arc<Server>> {
    SERVER.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// This process's server, started on `addr` if it is not running yet (a
/// server already running keeps its address).
pub(super) fn start(addr: SocketAddr) -> Result<Arc<Server>> {
    let mut slot = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(server) = &*slot {
        return Ok(server.clone());
    }
    let io = |operation: String, source: io::Error| Error::Io {
        connector: "peer".into(),
        operation,
        source,
    };
    let listener = TcpListener::bind(addr).map_err(|e| io(format!("listening on {addr}"), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| io("reading the listener's address".into(), e))?;
    let server = Arc::new(Server {
        addr: bound,
        instance: instance_id(),
        objects: Mutex::new(HashMap::new()),
        connections: AtomicUsize::new(0),
    });
    let serving = server.clone();
    std::thread::Builder::new()
        .name("proxystore-peer-accept".into())
        .spawn(move || accept(&serving, listener))
        .map_err(|source| Error::ThreadSpawn {
            purpose: "serve peer objects",
            source,
        })?;
    tracing::debug!(addr = %bound, "peer: serving this process's objects");
    *slot = Some(server.clone());
    Ok(server)
}

/// A random number, different for every process that serves.
fn instance_id() -> u64 {
    static ID: OnceLock<u64> = OnceLock::new();
    *ID.get_or_init(|| {
        let bytes = uuid::Uuid::new_v4().into_bytes();
        u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
    })
}

impl Server {
    /// Keeps `bytes` under `key`, replacing any earlier object.
    pub(super) fn insert(&self, key: Key, bytes: Vec<u8>) {
        self.table().insert(key, Arc::new(bytes));
    }

    /// The object under `key`, shared (not copied).
    pub(super) fn get(&self, key: &Key) -> Option<Arc<Vec<u8>>> {
        self.table().get(key).cloned()
    }

    /// Whether an object is kept under `key`.
    pub(super) fn contains(&self, key: &Key) -> bool {
        self.table().contains_key(key)
    }

    /// Drops the object under `key`; whether there was one.
    pub(super) fn remove(&self, key: &Key) -> bool {
        // Dropped outside the lock: freeing a large buffer takes a while.
        let removed = self.table().remove(key);
        removed.is_some()
    }

    /// How many objects and bytes this process keeps.
    pub(super) fn usage(&self) -> (usize, u64) {
        let table = self.table();
        (table.len(), table.values().map(|v| v.len() as u64).sum())
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Vec<u8>>>> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn accept(server: &Arc<Server>, listener: TcpListener) {
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(conn) => conn,
            Err(e) => {
                // Out of descriptors, say: wait rather than spin.
                tracing::warn!(error = %e, "peer: accepting a connection failed");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if server.connections.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            server.connections.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(
                max = MAX_CONNECTIONS,
                "peer: too many connections; one was closed"
            );
            continue;
        }
        let serving = server.clone();
        let spawned = std::thread::Builder::new()
            .name("proxystore-peer-serve".into())
            .spawn(move || {
                let peer = conn.peer_addr().ok();
                if let Err(e) = serve(&serving, conn) {
                    tracing::debug!(?peer, error = %e, "peer: a connection ended");
                }
                serving.connections.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            server.connections.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Answers the requests of one connection until it closes or misbehaves.
fn serve(server: &Server, conn: TcpStream) -> std::result::Result<(), wire::WireError> {
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(IDLE))?;
    conn.set_write_timeout(Some(WRITE_STALL))?;
    let mut reader = BufReader::with_capacity(256, conn.try_clone()?);
    let mut writer = conn;
    let mut magic = [0u8; 8];
    io::Read::read_exact(&mut reader, &mut magic)?;
    if magic != wire::MAGIC {
        return Err(wire::WireError::Malformed(
            "not a proxystore peer connection".into(),
        ));
    }
    while let Some(Request { op, key, instance }) = wire::read_request(&mut reader)? {
        if instance != server.instance {
            wire::write_status(&mut writer, &Response::OtherInstance)?;
            continue;
        }
        match op {
            Op::Get => match server.get(&key) {
                Some(bytes) => wire::write_object(&mut writer, &bytes)?,
                None => wire::write_status(&mut writer, &Response::Missing)?,
            },
            Op::Exists => {
                let found = server.contains(&key);
                wire::write_status(&mut writer, &status(found))?;
            }
            Op::Delete => {
                let found = server.remove(&key);
                wire::write_status(&mut writer, &status(found))?;
            }
        }
    }
    Ok(())
}

fn status(found: bool) -> Response {
    if found {
        Response::Found(None)
    } else {
        Response::Missing
    }
}
