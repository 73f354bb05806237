//! A connector that routes each object, by its size, to one of several
//! connectors.
//!
//! See [`MultiConnector`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Connector, ConnectorConfig, FromConfig, ObjectReader, Reach};
use crate::error::{Error, Result};
use crate::key::Key;

/// Routes each object by its size to one of several connectors: small
/// objects to a fast one (memory, Redis), large ones to one that holds
/// them (a shared directory).
///
/// Each route takes the objects up to its size limit (inclusive, in bytes,
/// the total of the parts given to [`set`](Connector::set)); the first route
/// whose limit fits, in increasing order of limits, takes the object, and
/// the fallback takes everything larger. Without a fallback, an object
/// larger than every limit is refused with [`Error::TooLarge`].
///
/// ```
/// use proxystore::connectors::{Connector, FileConnector, LocalConnector, MultiConnector};
///
/// let dir = tempfile::tempdir()?;
/// let small = LocalConnector::new();
/// let connector = MultiConnector::builder()
///     .route(1024, small.clone())                 // up to 1 KiB: in memory
///     .fallback(FileConnector::new(dir.path())?)  // larger: files
///     .build()?;
/// let tiny = connector.put(&[b"tiny"])?;
/// let big = connector.put(&[&vec![0u8; 4096]])?;
/// assert!(small.exists(&tiny)? && !small.exists(&big)?);
/// assert_eq!(connector.get(&big)?.map(|b| b.len()), Some(4096));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// With a `RedisConnector` (feature `redis`) for small objects and
/// a shared directory for the rest (Redis refuses strings over 512 MiB):
///
/// ```no_run
/// # #[cfg(feature = "redis")] {
/// use proxystore::connectors::{FileConnector, MultiConnector, RedisConnector};
///
/// let connector = MultiConnector::builder()
///     .route(64 << 20, RedisConnector::new("redis://redis.example:6379")?)
///     .fallback(FileConnector::new("/shared/objects")?.shared())
///     .build()?;
/// # }
/// # Ok::<(), proxystore::Error>(())
/// ```
///
/// # Keys and reads
///
/// Keys are plain keys ([`new_key`](Connector::new_key) is the default), so
/// the connector that holds an object is not known from its key: reads
/// ([`get`](Connector::get), [`open`](Connector::open),
/// [`exists`](Connector::exists)) ask the connectors in routing order
/// (smallest limit first, the fallback last) until one has it; a batch read
/// asks each connector once, for the keys not found yet. A key set
/// again with an object of another size could be found under its old value
/// first, so [`set`](Connector::set) evicts the key from the other routes
/// before writing it ([`put`](Connector::put) and
/// [`put_batch`](Connector::put_batch), whose keys are new, do not), and
/// [`evict`](Connector::evict) removes it from every route.
/// [`keys`](Connector::keys) lists the objects of every route, each key
/// once.
///
/// # Configuration, close, reach
///
/// The [`config`](Connector::config) holds the routes' limits and the
/// configurations of the connectors, which are rebuilt with
/// [`ConnectorConfig::build`] in other processes (each following its own
/// rules on close). [`close`](Connector::close) closes every connector,
/// even when one fails, and returns the first error.
/// [`reach`](Connector::reach) is the nearest reach of the connectors:
/// every object must be readable where the store is used.
#[derive(Clone, Debug)]
pub struct MultiConnector {
    /// In routing order: limits increasing, the fallback (`None`) last.
    routes: Vec<(Option<u64>, Arc<dyn Connector>)>,
}

/// Routes of a [`MultiConnector`]; made by [`MultiConnector::builder`].
#[derive(Debug, Default)]
pub struct MultiConnectorBuilder {
    routes: Vec<(u64, Arc<dyn Connector>)>,
    fallback: Option<Arc<dyn Connector>>,
}

#[derive(Serialize, Deserialize)]
struct Options {
    /// `(limit, connector)` in routing order; the fallback has no limit.
    routes: Vec<(Option<u64>, ConnectorConfig)>,
}

impl MultiConnectorBuilder {
    /// Sends objects of at most `max_size` bytes (that no route with a
    /// smaller limit takes) to `connector`.
    pub fn route(self, max_size: u64, connector: impl Connector) -> Self {
        self.route_arc(max_size, Arc::new(connector))
    }

    /// Like [`route`](Self::route), with a connector already shared.
    pub fn route_arc(mut self, max_size: u64, connector: Arc<dyn Connector>) -> Self {
        self.routes.push((max_size, connector));
        self
    }

    /// Sends objects larger than every route's limit to `connector`.
    pub fn fallback(self, connector: impl Connector) -> Self {
        self.fallback_arc(Arc::new(connector))
    }

    /// Like [`fallback`](Self::fallback), with a connector already shared.
    pub fn fallback_arc(mut self, connector: Arc<dyn Connector>) -> Self {
        self.fallback = Some(connector);
        self
    }

    /// The connector; fails with [`Error::InvalidConfig`] without any
    /// route or fallback, or with two routes of the same limit.
    pub fn build(self) -> Result<MultiConnector> {
        let mut routes = self.routes;
        routes.sort_by_key(|(limit, _)| *limit);
        if let Some(pair) = routes.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(invalid(format!(
                "two routes have the same limit of {} bytes; the second would never be used",
                pair[0].0
            )));
        }
        let mut routes: Vec<(Option<u64>, Arc<dyn Connector>)> =
            routes.into_iter().map(|(l, c)| (Some(l), c)).collect();
        if let Some(fallback) = self.fallback {
            routes.push((None, fallback));
        }
        MultiConnector::with_routes(routes)
    }
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidConfig {
        kind: MultiConnector::KIND.into(),
        reason: reason.into(),
    }
}

impl MultiConnector {
    /// An empty set of routes; add some with
    /// [`route`](MultiConnectorBuilder::route) and
    /// [`fallback`](MultiConnectorBuilder::fallback).
    pub fn builder() -> MultiConnectorBuilder {
        MultiConnectorBuilder::default()
    }

    fn with_routes(routes: Vec<(Option<u64>, Arc<dyn Connector>)>) -> Result<Self> {
        if routes.is_empty() {
            return Err(invalid(
                "no route and no fallback: there is nowhere to put objects",
            ));
        }
        Ok(MultiConnector { routes })
    }

    /// The routes in routing order: each connector with its size limit in
    /// bytes (`None` for the fallback).
    pub fn routes(&self) -> impl Iterator<Item = (Option<u64>, &Arc<dyn Connector>)> {
        self.routes.iter().map(|(limit, c)| (*limit, c))
    }

    /// The index of the route that takes an object of `size` bytes.
    fn route_for(&self, size: u64) -> Result<usize> {
        self.routes
            .iter()
            .position(|(limit, _)| limit.is_none_or(|l| size <= l))
            .ok_or_else(|| Error::TooLarge {
                connector: "multi".to_string(),
                size,
                limit: self.routes.last().and_then(|(l, _)| *l).unwrap_or(0),
                hint: "; add a fallback connector for larger objects (.fallback(..))".to_string(),
            })
    }

    /// Runs `f` on every connector, returning the first error after all ran.
    fn on_all(&self, mut f: impl FnMut(&dyn Connector) -> Result<()>) -> Result<()> {
        let mut first = None;
        for (_, connector) in &self.routes {
            if let Err(e) = f(connector.as_ref()) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

fn size(parts: &[&[u8]]) -> u64 {
    parts.iter().map(|p| p.len() as u64).sum()
}

impl Connector for MultiConnector {
    fn config(&self) -> ConnectorConfig {
        let options = Options {
            routes: self
                .routes
                .iter()
                .map(|(limit, c)| (*limit, c.config()))
                .collect(),
        };
        ConnectorConfig::new(Self::KIND, &options).expect("configurations serialize")
    }

    fn set(&self, key: &Key, parts: &[&[u8]]) -> Result<()> {
        let size = size(parts);
        let chosen = self.route_for(size)?;
        tracing::debug!(%key, size, route = chosen, "multi: set");
        // A key set again with another size must not be found under its
        // old value in a route read earlier.
        for (i, (_, connector)) in self.routes.iter().enumerate() {
            if i != chosen {
                connector.evict(key)?;
            }
        }
        self.routes[chosen].1.set(key, parts)
    }

    fn put(&self, parts: &[&[u8]]) -> Result<Key> {
        // A new key is in no route: no eviction needed.
        let route = self.route_for(size(parts))?;
        let key = self.new_key()?;
        self.routes[route].1.set(&key, parts)?;
        Ok(key)
    }

    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        for (_, connector) in &self.routes {
            if let Some(found) = connector.get(key)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    fn open(&self, key: &Key) -> Result<Option<ObjectReader>> {
        Ok(self.open_sized(key)?.map(|(reader, _)| reader))
    }

    fn open_sized(&self, key: &Key) -> Result<Option<(ObjectReader, Option<u64>)>> {
        for (_, connector) in &self.routes {
            if let Some(found) = connector.open_sized(key)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    fn exists(&self, key: &Key) -> Result<bool> {
        for (_, connector) in &self.routes {
            if connector.exists(key)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn evict(&self, key: &Key) -> Result<()> {
        tracing::debug!(%key, "multi: evict");
        self.on_all(|c| c.evict(key))
    }

    fn close(&self) -> Result<()> {
        self.on_all(|c| c.close())
    }

    /// The union of the routes' keys, each once.
    fn keys(&self) -> Result<Vec<Key>> {
        let mut seen = std::collections::HashSet::new();
        let mut keys = Vec::new();
        for (_, connector) in &self.routes {
            for key in connector.keys()? {
                if seen.insert(key) {
                    keys.push(key);
                }
            }
        }
        Ok(keys)
    }

    fn put_batch(&self, objects: &[&[&[u8]]]) -> Result<Vec<Key>> {
        // One batch per route, then the keys back in order.
        let mut by_route: Vec<Vec<usize>> = vec![Vec::new(); self.routes.len()];
        for (i, parts) in objects.iter().enumerate() {
            by_route[self.route_for(size(parts))?].push(i);
        }
        let mut keys: Vec<Option<Key>> = vec![None; objects.len()];
        for (route, indices) in by_route.iter().enumerate() {
            if indices.is_empty() {
                continue;
            }
            let batch: Vec<&[&[u8]]> = indices.iter().map(|i| objects[*i]).collect();
            let stored = self.routes[route].1.put_batch(&batch)?;
            for (i, key) in indices.iter().zip(stored) {
                keys[*i] = Some(key);
            }
        }
        Ok(keys
            .into_iter()
            .map(|k| k.expect("every object routed"))
            .collect())
    }

    fn get_batch(&self, keys: &[Key]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut found: Vec<Option<Vec<u8>>> = vec![None; keys.len()];
        let mut missing: Vec<usize> = (0..keys.len()).collect();
        for (_, connector) in &self.routes {
            if missing.is_empty() {
                break;
            }
            let asked: Vec<Key> = missing.iter().map(|i| keys[*i]).collect();
            let got = connector.get_batch(&asked)?;
            let mut still = Vec::new();
            for (i, value) in missing.into_iter().zip(got) {
                match value {
                    Some(v) => found[i] = Some(v),
                    None => still.push(i),
                }
            }
            missing = still;
        }
        Ok(found)
    }

    fn reach(&self) -> Reach {
        self.routes
            .iter()
            .map(|(_, c)| c.reach())
            .min()
            .unwrap_or(Reach::Process)
    }
}

impl FromConfig for MultiConnector {
    const KIND: &'static str = "multi";

    fn from_config(config: &ConnectorConfig) -> Result<Self> {
        let options: Options = config.options()?;
        let mut routes = Vec::with_capacity(options.routes.len());
        let mut last: Option<u64> = None;
        for (i, (limit, child)) in options.routes.iter().enumerate() {
            let ordered = match (last, limit) {
                (_, None) => i + 1 == options.routes.len(),
                (None, Some(_)) => true,
                (Some(prev), Some(l)) => *l > prev,
            };
            if !ordered {
                return Err(invalid(
                    "routes are not in increasing order of limits with the fallback last",
                ));
            }
            last = *limit;
            routes.push((*limit, child.build()?));
        }
        Self::with_routes(routes)
    }
}

crate::register_connector!(MultiConnector);
