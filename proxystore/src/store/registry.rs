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
use std::sync::{OnceLock, RwLock, RwLockWriteGuard};

use super::{Store, StoreConfig};
use crate::error::{Error, Result};

#[derive(Default)]
struct Registry {
    open: HashMap<String, Store>,
    /// Configurations of stores closed in this process, by name, until a
    /// store of that name is registered again.
    closed: HashMap<String, StoreConfig>,
    /// Names of the open stores that were rebuilt from a configuration
    /// (not made by this process's own code).
    rebuilt: std::collections::HashSet<String>,
}

fn registry() -> &'static RwLock<Registry> {
    static REGISTRY: OnceLock<RwLock<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

fn write() -> RwLockWriteGuard<'static, Registry> {
    registry().write().unwrap_or_else(|e| e.into_inner())
}

/// Registers `store` under its name; fails if the name is taken.
pub fn register_store(store: &Store) -> Result<()> {
    let mut registry = write();
    if registry.open.contains_key(store.name()) {
        return Err(Error::StoreExists {
            name: store.name().to_string(),
        });
    }
    registry.closed.remove(store.name());
    registry.rebuilt.remove(store.name());
    registry
        .open
        .insert(store.name().to_string(), store.clone());
    Ok(())
}

/// The store registered under `name`.
pub fn get_store(name: &str) -> Option<Store> {
    registry()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .open
        .get(name)
        .cloned()
}

/// Removes the registration of `name`, returning the store.
///
/// [`Store::close`] unregisters the store through here; a store removed
/// once it is closed is remembered as closed (see the module docs).
pub fn unregister_store(name: &str) -> Option<Store> {
    let mut registry = write();
    let store = registry.open.remove(name)?;
    registry.rebuilt.remove(name);
    if store.is_closed() {
        registry
            .closed
            .insert(name.to_string(), store.config().clone());
    }
    Some(store)
}

/// The store registered under `config.name`, or a new one built from
/// `config` and registered.
///
/// A store that was itself rebuilt from a configuration, registered under
/// that name but with another connector, is not used for `config`: a
/// long-lived worker of a multi-host executor serves callers that each
/// made a store of the same name (with their own Redis namespaces, say).
/// A store built from `config` is used instead, kept among the few most
/// recently used such stores. A store this process made itself answers
/// for its name, whatever the configuration.
///
/// Fails with [`Error::StoreClosed`] if the store `config` describes was
/// closed in this process and its name has not been registered since.
pub fn get_or_create_store(config: &StoreConfig) -> Result<Store> {
    {
        let registry = registry().read().unwrap_or_else(|e| e.into_inner());
        if let Some(store) = registry.open.get(&config.name) {
            if !registry.rebuilt.contains(&config.name) || same_objects(store.config(), config) {
                return Ok(store.clone());
            }
            drop(registry);
            return other_store(config);
        }
    }
    let mut registry = write();
    if let Some(store) = registry.open.get(&config.name) {
        if !registry.rebuilt.contains(&config.name) || same_objects(store.config(), config) {
            return Ok(store.clone());
        }
        drop(registry);
        return other_store(config);
    }
    if registry.closed.get(&config.name) == Some(config) {
        return Err(Error::StoreClosed {
            store: config.name.clone(),
        });
    }
    let store = Store::from_config(config.clone())?;
    tracing::debug!(store = %config.name, "registered a store rebuilt from its config");
    registry.closed.remove(&config.name);
    registry.rebuilt.insert(config.name.clone());
    registry.open.insert(config.name.clone(), store.clone());
    Ok(store)
}

/// Whether two configurations describe the same objects (the same
/// connector); cache and metrics settings may differ.
fn same_objects(a: &StoreConfig, b: &StoreConfig) -> bool {
    std::ptr::eq(a, b) || a.connector == b.connector
}

/// How many stores that share a registered store's name, but not its
/// connector, a process keeps built.
const OTHERS: usize = 16;

fn other_store(config: &StoreConfig) -> Result<Store> {
    static STORES: std::sync::Mutex<std::collections::VecDeque<Store>> =
        std::sync::Mutex::new(std::collections::VecDeque::new());
    let mut stores = STORES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = stores
        .iter()
        .position(|s| s.config().connector == config.connector)
    {
        let store = stores.remove(i).expect("found");
        stores.push_front(store.clone());
        return Ok(store);
    }
    let store = Store::from_config(config.clone())?;
    tracing::debug!(store = %config.name, "built a store of a registered name with another connector");
    stores.push_front(store.clone());
    stores.truncate(OTHERS);
    Ok(store)
}
