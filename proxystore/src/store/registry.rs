//! The process-wide registry of stores by name.
//!
//! A proxy that arrives in a process (a task argument in a worker, a result
//! in the client) resolves through the store registered under its store's
//! name, or builds and registers one from the [`StoreConfig`] it carries.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use super::{Store, StoreConfig};
use crate::error::{Error, Result};

fn stores() -> &'static RwLock<HashMap<String, Store>> {
    static STORES: OnceLock<RwLock<HashMap<String, Store>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

/// Registers `store` under its name; fails if the name is taken.
pub fn register_store(store: &Store) -> Result<()> {
    let mut stores = stores().write().unwrap_or_else(|e| e.into_inner());
    if stores.contains_key(store.name()) {
        return Err(Error::StoreExists {
            name: store.name().to_string(),
        });
    }
    stores.insert(store.name().to_string(), store.clone());
    Ok(())
}

/// The store registered under `name`.
pub fn get_store(name: &str) -> Option<Store> {
    stores()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        .cloned()
}

/// Removes the registration of `name`, returning the store.
pub fn unregister_store(name: &str) -> Option<Store> {
    stores()
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .remove(name)
}

/// The store registered under `config.name`, or a new one built from
/// `config` and registered.
pub fn get_or_create_store(config: &StoreConfig) -> Result<Store> {
    if let Some(store) = get_store(&config.name) {
        return Ok(store);
    }
    let mut stores = stores().write().unwrap_or_else(|e| e.into_inner());
    if let Some(store) = stores.get(&config.name) {
        return Ok(store.clone());
    }
    let store = Store::from_config(config.clone())?;
    tracing::debug!(store = %config.name, "registered a store rebuilt from its config");
    stores.insert(config.name.clone(), store.clone());
    Ok(store)
}
