//! The process-wide registry of stores by name.
//!
//! A proxy that arrives in a process (a task argument in a worker, a result
//! in the client) resolves through the store registered under its store's
//! name, or builds and registers one from the [`StoreConfig`] it carries.
//!
//! A store closed in this process is not built again from its
//! configuration: proxies and results that outlive it (an owned result of a
//! [`StoreExecutor`](crate::StoreExecutor) that closed its store, a task
//! still running on a thread pool) fail with [`Error::StoreClosed`] instead
//! of bringing it back under its name. Registering a store of that name
//! again ([`Store::new`], [`register_store`]) ends this. Worker processes
//! never closed the caller's store, so they build it from the configuration
//! as usual.
//!
//! Stores rebuilt from configurations are a cache, not registrations: a
//! long-lived worker may see thousands of store names, and each rebuilt
//! store holds its connector (connections, a cache of objects). At most
//! [`REBUILT_STORES`] are kept, and one unused for [`REBUILT_IDLE`] is
//! dropped at the next rebuild. Dropping one never breaks a proxy of it:
//! the next read builds it again. Stores this process made itself
//! ([`Store::new`], [`register_store`]) are never dropped.
//!
//! ```
//! use proxystore::connectors::LocalConnector;
//! use proxystore::store::get_or_create_store;
//! use proxystore::{Error, Store};
//!
//! let store = Store::new("registry-doc", LocalConnector::new())?;
//! let config = store.config().clone();
//! store.close()?;
//! assert!(matches!(get_or_create_store(&config), Err(Error::StoreClosed { .. })));
//!
//! let again = Store::new("registry-doc", LocalConnector::new())?;  // the name is free
//! # again.close()?;
//! # Ok::<(), proxystore::Error>(())
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockWriteGuard};
use std::time::{Duration, Instant};

use super::{Store, StoreConfig};
use crate::error::{Error, Result};

/// How many stores rebuilt from configurations a process keeps at most
/// (the least recently used goes first).
pub const REBUILT_STORES: usize = 64;

/// How long a store rebuilt from a configuration is kept unused.
pub const REBUILT_IDLE: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Registry {
    /// Stores registered by this process's own code, by name.
    open: HashMap<String, Store>,
    /// Configurations of stores closed in this process, by name, until a
    /// store of that name is registered again.
    closed: HashMap<String, StoreConfig>,
    /// Stores rebuilt from configurations, by name, most recently built
    /// first: several under one name when callers made stores of the same
    /// name over different connectors (a long-lived worker of a multi-host
    /// executor serving successive callers).
    rebuilt: HashMap<String, Vec<Rebuilt>>,
    /// How many stores `rebuilt` holds in all.
    rebuilt_count: usize,
}

struct Rebuilt {
    store: Store,
    /// When it was last used, in milliseconds since [`epoch`]: updated
    /// under the read lock, so lookups never wait for each other.
    used: AtomicU64,
}

impl Rebuilt {
    fn touch(&self, now: Instant) {
        self.used.store(millis_since_epoch(now), Ordering::Relaxed);
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn millis_since_epoch(now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch()).as_millis()).unwrap_or(u64::MAX)
}

fn registry() -> &'static RwLock<Registry> {
    static REGISTRY: OnceLock<RwLock<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

fn write() -> RwLockWriteGuard<'static, Registry> {
    registry().write().unwrap_or_else(|e| e.into_inner())
}

/// Registers `store` under its name; fails if the name is taken by
/// another store this process registered. A store rebuilt from a
/// configuration under that name gives way.
pub fn register_store(store: &Store) -> Result<()> {
    let mut registry = write();
    if registry.open.contains_key(store.name()) {
        return Err(Error::StoreExists {
            name: store.name().to_string(),
        });
    }
    registry.closed.remove(store.name());
    registry.remove_rebuilt(store.name());
    registry
        .open
        .insert(store.name().to_string(), store.clone());
    Ok(())
}

/// The store registered under `name`, or the one most recently rebuilt
/// under that name and still kept.
pub fn get_store(name: &str) -> Option<Store> {
    let registry = registry().read().unwrap_or_else(|e| e.into_inner());
    if let Some(store) = registry.open.get(name) {
        return Some(store.clone());
    }
    let rebuilt = registry.rebuilt.get(name)?.first()?;
    rebuilt.touch(Instant::now());
    Some(rebuilt.store.clone())
}

/// Removes the registration of `name`, returning the store.
///
/// [`Store::close`] unregisters the store through here; a store removed
/// once it is closed is remembered as closed (see the module docs).
pub fn unregister_store(name: &str) -> Option<Store> {
    let mut registry = write();
    let store = match registry.open.remove(name) {
        Some(store) => store,
        None => registry.remove_latest_rebuilt(name)?,
    };
    if store.is_closed() {
        registry
            .closed
            .insert(name.to_string(), store.config().clone());
    }
    Some(store)
}

/// Unregisters `store` itself, registered or kept among the rebuilt ones,
/// in one step under the lock: another store of the same name (rebuilt
/// over another connector, or registered meanwhile by another thread) is
/// left alone. A closed store is remembered as closed (see the module
/// docs). What [`Store::close`] calls.
pub(crate) fn unregister_exact(store: &Store) {
    let mut registry = write();
    let name = store.name();
    let found = if registry
        .open
        .get(name)
        .is_some_and(|s| Arc::ptr_eq(&s.inner, &store.inner))
    {
        registry.open.remove(name);
        true
    } else {
        registry.remove_rebuilt_store(store)
    };
    if found && store.is_closed() {
        registry
            .closed
            .insert(name.to_string(), store.config().clone());
    }
}

/// The store registered under `config.name`, or one built from `config`
/// (kept among the stores rebuilt from configurations, see the module
/// docs).
///
/// A store this process made itself answers for its name, whatever the
/// configuration. A store rebuilt under that name but with another
/// connector is not used for `config`: a long-lived worker of a multi-host
/// executor serves callers that each made a store of the same name (with
/// their own Redis namespaces, say), and each gets a store of its own.
///
/// Fails with [`Error::StoreClosed`] if the store `config` describes was
/// closed in this process and its name has not been registered since.
pub fn get_or_create_store(config: &StoreConfig) -> Result<Store> {
    let now = Instant::now();
    {
        let registry = registry().read().unwrap_or_else(|e| e.into_inner());
        if let Some(store) = registry.find(config, now) {
            return Ok(store);
        }
    }
    let mut registry = write();
    if let Some(store) = registry.find(config, now) {
        return Ok(store);
    }
    if registry.closed.get(&config.name) == Some(config) {
        return Err(Error::StoreClosed {
            store: config.name.clone(),
        });
    }
    let store = Store::from_config(config.clone())?;
    tracing::debug!(store = %config.name, "built a store from its config");
    registry.add_rebuilt(store.clone(), now);
    Ok(store)
}

/// Whether two configurations describe the same objects (the same
/// connector); cache and metrics settings may differ.
fn same_objects(a: &StoreConfig, b: &StoreConfig) -> bool {
    std::ptr::eq(a, b) || a.connector == b.connector
}

impl Registry {
    fn find(&self, config: &StoreConfig, now: Instant) -> Option<Store> {
        if let Some(store) = self.open.get(&config.name) {
            return Some(store.clone());
        }
        let rebuilt = self
            .rebuilt
            .get(&config.name)?
            .iter()
            .find(|r| same_objects(r.store.config(), config))?;
        rebuilt.touch(now);
        Some(rebuilt.store.clone())
    }

    /// Keeps `store`, then drops the stores unused for [`REBUILT_IDLE`]
    /// and, beyond [`REBUILT_STORES`], the least recently used. Proxies of
    /// a dropped store keep working: each read finds or builds its store.
    fn add_rebuilt(&mut self, store: Store, now: Instant) {
        let name = store.name().to_string();
        let entry = Rebuilt {
            store,
            used: AtomicU64::new(0),
        };
        entry.touch(now);
        self.rebuilt.entry(name).or_default().insert(0, entry);
        self.rebuilt_count += 1;
        self.expire(now);
    }

    fn expire(&mut self, now: Instant) {
        let idle = u64::try_from(REBUILT_IDLE.as_millis()).unwrap_or(u64::MAX);
        let before = self.rebuilt_count;
        // Nothing can be idle yet in a process younger than the idle time
        // (a store used in its first millisecond counts as used at 0).
        if let Some(idle_since) = millis_since_epoch(now).checked_sub(idle) {
            for stores in self.rebuilt.values_mut() {
                stores.retain(|r| r.used.load(Ordering::Relaxed) > idle_since);
            }
        }
        self.rebuilt.retain(|_, stores| !stores.is_empty());
        self.rebuilt_count = self.rebuilt.values().map(Vec::len).sum();
        while self.rebuilt_count > REBUILT_STORES {
            let Some((name, i)) = self
                .rebuilt
                .iter()
                .flat_map(|(name, stores)| {
                    stores
                        .iter()
                        .enumerate()
                        .map(move |(i, r)| (name, i, r.used.load(Ordering::Relaxed)))
                })
                .min_by_key(|(_, _, used)| *used)
                .map(|(name, i, _)| (name.clone(), i))
            else {
                break;
            };
            let stores = self.rebuilt.get_mut(&name).expect("just found");
            stores.remove(i);
            if stores.is_empty() {
                self.rebuilt.remove(&name);
            }
            self.rebuilt_count -= 1;
        }
        if self.rebuilt_count < before {
            tracing::debug!(
                dropped = before - self.rebuilt_count,
                kept = self.rebuilt_count,
                "dropped stores rebuilt from configurations"
            );
        }
    }

    /// Forgets the stores rebuilt under `name`.
    fn remove_rebuilt(&mut self, name: &str) {
        if let Some(stores) = self.rebuilt.remove(name) {
            self.rebuilt_count -= stores.len();
        }
    }

    /// Forgets `store` if it is among the rebuilt ones.
    fn remove_rebuilt_store(&mut self, store: &Store) -> bool {
        let Some(stores) = self.rebuilt.get_mut(store.name()) else {
            return false;
        };
        let Some(i) = stores
            .iter()
            .position(|r| Arc::ptr_eq(&r.store.inner, &store.inner))
        else {
            return false;
        };
        stores.remove(i);
        if stores.is_empty() {
            self.rebuilt.remove(store.name());
        }
        self.rebuilt_count -= 1;
        true
    }

    /// Forgets the store most recently rebuilt under `name`.
    fn remove_latest_rebuilt(&mut self, name: &str) -> Option<Store> {
        let stores = self.rebuilt.get_mut(name)?;
        let latest = stores.remove(0);
        if stores.is_empty() {
            self.rebuilt.remove(name);
        }
        self.rebuilt_count -= 1;
        Some(latest.store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::FileConnector;

    /// A configuration of a store that this process did not register.
    fn unregistered(dir: &std::path::Path, name: &str) -> (Store, StoreConfig) {
        let connector = FileConnector::new(dir.join(name)).unwrap();
        let store = Store::builder(name, connector)
            .register(false)
            .build()
            .unwrap();
        let config = store.config().clone();
        (store, config)
    }

    /// On a registry of its own: the process's is shared with the other
    /// tests, and a store stamped in the future there would outlive them.
    #[test]
    fn rebuilt_stores_are_bounded_and_expire_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = Registry::default();
        let now = Instant::now();
        let mut made = Vec::new();
        for i in 0..REBUILT_STORES * 2 {
            let (store, config) = unregistered(dir.path(), &format!("bound-{i}"));
            let at = now + Duration::from_millis(i as u64);
            registry.add_rebuilt(Store::from_config(config.clone()).unwrap(), at);
            made.push((store, config));
            assert!(registry.rebuilt_count <= REBUILT_STORES);
        }
        // The oldest were dropped, the most recent are kept.
        assert!(registry.find(&made[0].1, now).is_none());
        assert!(registry.find(&made.last().unwrap().1, now).is_some());

        // A rebuild later than the idle time drops the idle ones.
        let later = now + REBUILT_IDLE + Duration::from_secs(1);
        let (last, config) = unregistered(dir.path(), "bound-last");
        registry.add_rebuilt(Store::from_config(config.clone()).unwrap(), later);
        assert!(registry.find(&made.last().unwrap().1, later).is_none());
        assert!(registry.find(&config, later).is_some());
        assert_eq!(registry.rebuilt_count, 1);
        last.close().unwrap();
        for (store, _) in made {
            store.close().unwrap();
        }
    }

    /// Closing a rebuilt store that is not the newest of its name removes
    /// that one, not the newest.
    #[test]
    fn closing_a_rebuilt_store_removes_that_one() {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("exact-{}", std::process::id());
        let (a, config_a) = unregistered(dir.path(), &name);
        let other_dir = dir.path().join("other");
        std::fs::create_dir(&other_dir).unwrap();
        let (b, config_b) = unregistered(&other_dir, &name);
        let older = get_or_create_store(&config_a).unwrap();
        let newer = get_or_create_store(&config_b).unwrap();
        older.close().unwrap();
        let registry = registry().read().unwrap_or_else(|e| e.into_inner());
        assert!(registry.find(&config_a, Instant::now()).is_none());
        assert!(registry.find(&config_b, Instant::now()).is_some());
        drop(registry);
        newer.close().unwrap();
        a.close().unwrap();
        b.close().unwrap();
    }
}
