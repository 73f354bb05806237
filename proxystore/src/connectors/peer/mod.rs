//! A connector whose objects stay in the memory of the process that stored
//! them and go straight from it to the processes that read them.
//!
//! See [`PeerConnector`].

mod addr;
mod builder;
mod client;
mod server;
mod wire;

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use addr::{parse_addr, redis_server, route_ip};
pub use builder::PeerConnectorBuilder;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Connector, ConnectorConfig, FromConfig, ObjectReader, Reach};
use crate::error::{Error, Result};
use crate::key::Key;

/// The environment variable that sets the address a process serves its
/// peer objects on: an IP address (`10.0.0.4`, any free port) or an
/// address and port (`10.0.0.4:7000`). It decides for every
/// [`PeerConnector`] of the process that was not given
/// [`listen`](PeerConnectorBuilder::listen).
pub const PEER_ADDR_ENV: &str = "PROXYSTORE_PEER_ADDR";

/// The largest object a reader accepts by default (64 GiB): a length
/// announced past it is refused before anything is allocated.
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 64 << 30;

/// How long connecting to a peer may take by default before its objects
/// are taken for lost.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a peer may stall (no byte sent or taken) by default before its
/// objects are taken for lost.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Keeps each object in the memory of the process that stored it and
/// serves it over TCP to the processes that read it; an *index* connector
/// (Redis, say) holds only where each object is.
///
/// Large objects then move once, straight from the host that made them to
/// the host that reads them, instead of into and out of one server. Put it
/// behind a [`MultiConnector`](super::MultiConnector) so that small objects,
/// for which a round trip to the index costs as much as the object, go to
/// the index's server itself:
///
/// ```no_run
/// # #[cfg(feature = "redis")] {
/// use proxystore::connectors::{MultiConnector, PeerConnector, RedisConnector};
///
/// let url = "redis://redis.example:6379";
/// let connector = MultiConnector::builder()
///     // Up to 1 MiB: the objects themselves in Redis.
///     .route(1 << 20, RedisConnector::builder(url).namespace("objects").build()?)
///     // Larger: kept where they were made; Redis holds where.
///     .fallback(PeerConnector::builder(
///         RedisConnector::builder(url).namespace("objects-where").build()?,
///     ).build()?)
///     .build()?;
/// # }
/// # Ok::<(), proxystore::Error>(())
/// ```
///
/// The index must not share its keys with another route of the same
/// [`MultiConnector`](super::MultiConnector) (give it a namespace of its own): its entries are
/// locations, not objects.
///
/// # Where objects live
///
/// [`set`](Connector::set) copies the object into a table of this process
/// and records `address:port` of this process (and a number drawn when it
/// started serving) in the index under the object's key. Every peer
/// connector of a process shares that table and one listener, started by
/// the first object stored, so an object outlives the connector and the
/// store that stored it (a worker of the
/// [cluster executor](crate::executor::cluster) drops stores it rebuilt and
/// has not used for a while; its results stay). An object lives until it
/// is [evicted](Connector::evict) (by any process: the index says where it
/// is and the eviction is sent there) or until the process exits.
/// [`close`](Connector::close) of the connector a builder made evicts every
/// object the index lists, wherever it is kept (as a `RedisConnector` that
/// made its namespace clears it); one rebuilt from its configuration leaves
/// them. There is no bound on the memory they take other than eviction: the
/// [`StoreExecutor`](crate::StoreExecutor) evicts task inputs and results
/// once they are consumed or dropped.
///
/// [`get`](Connector::get) looks the key up in the index and asks the
/// process it names, over a pooled connection, for the object: the answer
/// is one frame, its length first, read into a buffer of exactly that
/// length. An object this process keeps is read from its table, without a
/// connection.
///
/// # Hosts that die
///
/// An object is lost with the process that kept it: there is no copy and
/// no re-execution. A read of a lost object fails with
/// [`Error::ObjectLost`], which names the key, the host and port and what
/// happened, within [`connect_timeout`](PeerConnectorBuilder::connect_timeout)
/// (a host that is gone) or
/// [`io_timeout`](PeerConnectorBuilder::io_timeout) (a host that stops
/// sending mid-object); a host whose processes died but whose network is
/// up refuses the connection at once. A process that serves the same
/// address later is told apart: it answers that it is another instance,
/// and the read fails the same way. [`exists`](Connector::exists) fails
/// likewise; [`evict`](Connector::evict) of a lost object removes its
/// index entry and succeeds (there is nothing left to remove). Index
/// entries of lost objects stay in the index until evicted.
///
/// # Which address
///
/// Each process serves on the address, in order of precedence: given to
/// [`listen`](PeerConnectorBuilder::listen) (this connector only, not its
/// configuration); in [`PEER_ADDR_ENV`]; the address of the interface the
/// host uses to reach [`route_via`](PeerConnectorBuilder::route_via) (by
/// default the index's Redis server), with a free port; else loopback. The
/// first object stored starts the listener, which keeps its address for the
/// life of the process.
///
/// # Trust
///
/// Anyone who can connect to a process's address can read and delete the
/// objects it keeps, given their keys (random UUIDs) and the number it drew
/// when it started, both of which are in the index. Run it on networks whose
/// hosts you trust, as you would a Redis server without a password.
/// Nothing a peer sends makes a process allocate more than the request it
/// reads (fixed size) or the reader's
/// [`max_object_size`](PeerConnectorBuilder::max_object_size); a malformed
/// request ends its connection.
#[derive(Clone, Debug)]
pub struct PeerConnector {
    index: Arc<dyn Connector>,
    options: Options,
    /// Given to [`PeerConnectorBuilder::listen`]; not in the configuration.
    listen: Option<SocketAddr>,
    /// Made by a builder (not rebuilt from a configuration) and not told to
    /// keep its objects: `close` evicts them all.
    clear: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Options {
    index: ConnectorConfig,
    route_via: Option<String>,
    connect_timeout_ms: u64,
    io_timeout_ms: u64,
    max_object_size: u64,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidConfig {
        kind: PeerConnector::KIND.into(),
        reason: reason.into(),
    }
}

/// Where the index says an object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Location {
    addr: SocketAddr,
    instance: u64,
}

const RECORD_TAG: &str = "proxystore-peer/1";

impl Location {
    fn record(&self, size: u64) -> String {
        format!("{RECORD_TAG} {} {:016x} {size}", self.addr, self.instance)
    }

    fn parse(key: &Key, bytes: &[u8]) -> Result<Location> {
        let bad = || Error::Io {
            connector: "peer".into(),
            operation: format!("reading where object {key} is"),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the index entry is not a peer location; is the index shared with another \
                 connector (give it a namespace of its own)?",
            ),
        };
        let text = std::str::from_utf8(bytes).map_err(|_| bad())?;
        let mut parts = text.split(' ');
        let (Some(RECORD_TAG), Some(addr), Some(instance), Some(size), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad());
        };
        let addr: SocketAddr = addr.parse().map_err(|_| bad())?;
        let instance = u64::from_str_radix(instance, 16).map_err(|_| bad())?;
        size.parse::<u64>().map_err(|_| bad())?;
        Ok(Location { addr, instance })
    }
}

/// Reads an object this process keeps, without copying it.
struct SharedReader {
    bytes: Arc<Vec<u8>>,
    at: usize,
}

impl Read for SharedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let rest = &self.bytes[self.at..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        Ok(n)
    }
}

impl PeerConnector {
    /// A connector that records where objects are in `index`, with the
    /// default limits; see [`PeerConnectorBuilder`].
    pub fn builder(index: impl Connector) -> PeerConnectorBuilder {
        Self::builder_arc(Arc::new(index))
    }

    /// Like [`builder`](Self::builder), with an index already shared.
    pub fn builder_arc(index: Arc<dyn Connector>) -> PeerConnectorBuilder {
        let config = index.config();
        let route_via = redis_server(&config);
        PeerConnectorBuilder {
            index,
            options: Options {
                index: config,
                route_via,
                connect_timeout_ms: millis(DEFAULT_CONNECT_TIMEOUT),
                io_timeout_ms: millis(DEFAULT_IO_TIMEOUT),
                max_object_size: DEFAULT_MAX_OBJECT_SIZE,
            },
            listen: None,
            keep_on_close: false,
        }
    }

    /// The index connector: where the locations of objects are kept.
    pub fn index(&self) -> &Arc<dyn Connector> {
        &self.index
    }

    /// The address this process serves its objects on, once one was
    /// stored.
    pub fn serving_on() -> Option<SocketAddr> {
        server::running().map(|s| s.addr)
    }

    /// How many objects, and how many bytes, this process keeps for the
    /// peer connectors of the process.
    pub fn kept() -> (usize, u64) {
        server::running().map_or((0, 0), |s| s.usage())
    }

    fn check(&self) -> Result<()> {
        if self.options.connect_timeout_ms == 0 || self.options.io_timeout_ms == 0 {
            return Err(invalid("timeouts must be longer than 0"));
        }
        if let Ok(value) = std::env::var(PEER_ADDR_ENV) {
            parse_addr(&value)?;
        }
        Ok(())
    }

    fn limits(&self) -> client::Limits {
        client::Limits {
            connect_timeout: Duration::from_millis(self.options.connect_timeout_ms),
            io_timeout: Duration::from_millis(self.options.io_timeout_ms),
            max_object_size: self.options.max_object_size,
        }
    }

    /// The address this process would serve on (see
    /// [Which address](PeerConnector#which-address)).
    fn listen_addr(&self) -> Result<SocketAddr> {
        if let Some(addr) = self.listen {
            return Ok(addr);
        }
        if let Ok(value) = std::env::var(PEER_ADDR_ENV) {
            return parse_addr(&value);
        }
        if let Some(target) = &self.options.route_via {
            return Ok(SocketAddr::new(route_ip(target)?, 0));
        }
        Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
    }

    fn server(&self) -> Result<Arc<server::Server>> {
        if let Some(server) = server::running() {
            return Ok(server);
        }
        server::start(self.listen_addr()?)
    }

    fn locate(&self, key: &Key) -> Result<Option<Location>> {
        self.index
            .get(key)?
            .map(|bytes| Location::parse(key, &bytes))
            .transpose()
    }

    /// This process's server, if it is the one at `at`.
    fn local(at: &Location) -> Option<Arc<server::Server>> {
        server::running().filter(|s| s.addr == at.addr && s.instance == at.instance)
    }

    fn ask(&self, key: &Key, at: &Location, op: wire::Op) -> Result<wire::Response> {
        client::request(at.addr, op, *key, at.instance, self.limits())
            .map_err(|failure| self.failed(key, at, failure))
    }

    /// The error of a request to `at` that got no answer.
    fn failed(&self, key: &Key, at: &Location, failure: client::Failure) -> Error {
        {
            match failure {
                client::Failure::Connect(_) | client::Failure::Broken(_) => {
                    client::forget(at.addr);
                    let limits = self.limits();
                    let reason = match &failure {
                        client::Failure::Connect(e) if timed_out(e) => format!(
                            "could not connect: timed out after {:?}",
                            limits.connect_timeout
                        ),
                        client::Failure::Broken(wire::WireError::Io(e)) if timed_out(e) => {
                            format!(
                                "the connection timed out: no answer for {:?}",
                                limits.io_timeout
                            )
                        }
                        _ => failure.to_string(),
                    };
                    lost(key, at, reason)
                }
                client::Failure::Refused(e) => Error::Io {
                    connector: format!("peer at {}", at.addr),
                    operation: format!("reading object {key}"),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
                },
            }
        }
    }

    /// Where `key` is, and its object if found: this process's table or
    /// the peer's answer.
    fn fetch(&self, key: &Key) -> Result<Option<Fetched>> {
        let Some(at) = self.locate(key)? else {
            return Ok(None);
        };
        if let Some(server) = Self::local(&at) {
            return Ok(server.get(key).map(Fetched::Shared));
        }
        match self.ask(key, &at, wire::Op::Get)? {
            wire::Response::Found(Some(bytes)) => Ok(Some(Fetched::Owned(bytes))),
            wire::Response::Missing => Ok(None),
            wire::Response::OtherInstance => Err(replaced(key, &at)),
            wire::Response::Found(None) => unreachable!("a found get carries its object"),
        }
    }

    fn store(&self, key: &Key, parts: &[&[u8]], check_old: bool) -> Result<()> {
        let server = self.server()?;
        let size: usize = parts.iter().map(|p| p.len()).sum();
        // A zeroed buffer comes from the kernel as zero pages, with huge
        // pages where allowed: filling it faults far fewer times.
        let mut bytes = crate::codec::zeroed_buffer::<u8>(size);
        let mut at = 0;
        for part in parts {
            bytes[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        let old = if check_old { self.locate(key)? } else { None };
        let here = Location {
            addr: server.addr,
            instance: server.instance,
        };
        server.insert(*key, bytes);
        if let Err(e) = self.index.set(key, &[here.record(size as u64).as_bytes()]) {
            server.remove(key);
            return Err(e);
        }
        // A key set again here after another process kept it: that copy
        // is dropped (if its process is still there).
        if let Some(old) = old.filter(|old| *old != here) {
            let _ = self.ask(key, &old, wire::Op::Delete);
        }
        Ok(())
    }
}

enum Fetched {
    Shared(Arc<Vec<u8>>),
    Owned(Vec<u8>),
}

fn lost(key: &Key, at: &Location, reason: String) -> Error {
    Error::ObjectLost {
        key: *key,
        host: at.addr.to_string(),
        reason,
    }
}

fn replaced(key: &Key, at: &Location) -> Error {
    lost(
        key,
        at,
        "the process that kept it is gone; another process serves that address now".into(),
    )
}

/// Whether `e` is a timeout (a blocking socket's timeout is `WouldBlock`
/// on some systems, `TimedOut` on others).
fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

impl Connector for PeerConnector {
    fn config(&self) -> ConnectorConfig {
        ConnectorConfig::new(Self::KIND, &self.options).expect("configurations serialize")
    }

    fn set(&self, key: &Key, parts: &[&[u8]]) -> Result<()> {
        self.store(key, parts, true)
    }

    fn put(&self, parts: &[&[u8]]) -> Result<Key> {
        // A new key is kept nowhere else.
        let key = self.new_key()?;
        self.store(&key, parts, false)?;
        Ok(key)
    }

    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        Ok(self.fetch(key)?.map(|found| match found {
            Fetched::Shared(bytes) => bytes.to_vec(),
            Fetched::Owned(bytes) => bytes,
        }))
    }

    fn open(&self, key: &Key) -> Result<Option<ObjectReader>> {
        Ok(self.open_sized(key)?.map(|(reader, _)| reader))
    }

    /// An object of another process is read straight from the connection
    /// (into the decoder's buffer, with no copy in between); a failure
    /// mid-object is an I/O error of the reader that says the object is
    /// lost and names the host.
    fn open_sized(&self, key: &Key) -> Result<Option<(ObjectReader, Option<u64>)>> {
        let Some(at) = self.locate(key)? else {
            return Ok(None);
        };
        if let Some(server) = Self::local(&at) {
            return Ok(server.get(key).map(|bytes| {
                let len = bytes.len() as u64;
                let reader: ObjectReader = Box::new(SharedReader { bytes, at: 0 });
                (reader, Some(len))
            }));
        }
        match client::open(at.addr, *key, at.instance, self.limits()) {
            Ok(client::Opened::Object(len, stream)) => Ok(Some((Box::new(stream), Some(len)))),
            Ok(client::Opened::Missing) => Ok(None),
            Ok(client::Opened::OtherInstance) => Err(replaced(key, &at)),
            Err(failure) => Err(self.failed(key, &at, failure)),
        }
    }

    fn exists(&self, key: &Key) -> Result<bool> {
        let Some(at) = self.locate(key)? else {
            return Ok(false);
        };
        if let Some(server) = Self::local(&at) {
            return Ok(server.contains(key));
        }
        match self.ask(key, &at, wire::Op::Exists)? {
            wire::Response::Found(_) => Ok(true),
            wire::Response::Missing => Ok(false),
            wire::Response::OtherInstance => Err(replaced(key, &at)),
        }
    }

    fn evict(&self, key: &Key) -> Result<()> {
        let at = self.locate(key)?;
        // The entry first: nobody looks for the object once it goes.
        if at.is_some() {
            self.index.evict(key)?;
        }
        match at {
            Some(at) => match Self::local(&at) {
                Some(server) => {
                    server.remove(key);
                }
                None => match self.ask(key, &at, wire::Op::Delete) {
                    Ok(_) => {}
                    // Gone with its process: nothing is left to remove.
                    Err(Error::ObjectLost { reason, .. }) => {
                        tracing::debug!(%key, host = %at.addr, %reason, "peer: evicting a lost object");
                    }
                    Err(e) => return Err(e),
                },
            },
            None => {
                if let Some(server) = server::running() {
                    server.remove(key);
                }
            }
        }
        Ok(())
    }

    /// The connector a builder made evicts every object its index lists
    /// (each from the process that keeps it; lost ones are skipped), unless
    /// told to [`keep_on_close`](PeerConnectorBuilder::keep_on_close); one
    /// rebuilt from its configuration (in a worker) leaves them. Then the
    /// index is closed.
    fn close(&self) -> Result<()> {
        let mut first = None;
        if self.clear {
            match self.index.keys() {
                Ok(keys) => {
                    for key in keys {
                        if let Err(e) = self.evict(&key) {
                            first.get_or_insert(e);
                        }
                    }
                }
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        if let Err(e) = self.index.close() {
            first.get_or_insert(e);
        }
        first.map_or(Ok(()), Err)
    }

    /// The keys the index holds locations for: the objects of every
    /// process that uses the same index.
    fn keys(&self) -> Result<Vec<Key>> {
        self.index.keys()
    }

    fn reach(&self) -> Reach {
        let ip = match server::running() {
            Some(server) => Some(server.addr.ip()),
            None => self.listen_addr().ok().map(|a| a.ip()),
        };
        let own = match ip {
            Some(ip) if !ip.is_loopback() => Reach::Network,
            Some(_) => Reach::Host,
            None => Reach::Process,
        };
        own.min(self.index.reach())
    }
}

impl FromConfig for PeerConnector {
    const KIND: &'static str = "peer";

    fn from_config(config: &ConnectorConfig) -> Result<Self> {
        let options: Options = config.options()?;
        let index = options.index.build()?;
        let connector = PeerConnector {
            index,
            options,
            listen: None,
            clear: false,
        };
        connector.check()?;
        Ok(connector)
    }
}

crate::register_connector!(PeerConnector);

#[cfg(test)]
mod tests;
