//! In-memory connector.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Connector, ConnectorConfig, FromConfig, ObjectReader};
use crate::error::{Error, Result};
use crate::key::Key;

type Objects = RwLock<HashMap<Key, Arc<[u8]>>>;

/// Stores objects in this process's memory.
///
/// Clones share the same objects. Rebuilding it from its configuration
/// finds the same memory while the original is alive in this process; in
/// another process it is an error (use a
/// [`FileConnector`](super::FileConnector) to cross processes).
///
/// ```
/// use proxystore::connectors::{Connector, LocalConnector};
///
/// let connector = LocalConnector::new();
/// let key = connector.put(&[b"value"])?;
/// assert!(connector.exists(&key)?);
/// # Ok::<(), proxystore::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct LocalConnector {
    id: Uuid,
    objects: Arc<Objects>,
}

#[derive(Serialize, Deserialize)]
struct Options {
    id: Uuid,
    pid: u32,
}

fn live() -> &'static Mutex<HashMap<Uuid, Weak<Objects>>> {
    static LIVE: OnceLock<Mutex<HashMap<Uuid, Weak<Objects>>>> = OnceLock::new();
    LIVE.get_or_init(Default::default)
}

impl LocalConnector {
    /// An empty in-memory connector.
    pub fn new() -> Self {
        let connector = LocalConnector {
            id: Uuid::new_v4(),
            objects: Arc::default(),
        };
        let mut live = live().lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|_, objects| objects.strong_count() > 0);
        live.insert(connector.id, Arc::downgrade(&connector.objects));
        connector
    }

    /// Number of stored objects.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no object is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Key, Arc<[u8]>>> {
        self.objects.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Key, Arc<[u8]>>> {
        self.objects.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for LocalConnector {
    fn default() -> Self {
        Self::new()
    }
}

/// Shared bytes readable as a stream without copying them first.
struct SharedBytes(Arc<[u8]>);

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Connector for LocalConnector {
    fn config(&self) -> ConnectorConfig {
        let options = Options {
            id: self.id,
            pid: std::process::id(),
        };
        ConnectorConfig::new(Self::KIND, &options).expect("plain options serialize")
    }

    fn set(&self, key: &Key, parts: &[&[u8]]) -> Result<()> {
        let bytes: Arc<[u8]> = parts.concat().into();
        tracing::debug!(%key, size = bytes.len(), "local: set");
        self.write().insert(*key, bytes);
        Ok(())
    }

    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        let found = self.read().get(key).map(|b| b.to_vec());
        tracing::debug!(%key, size = found.as_ref().map(Vec::len), "local: get");
        Ok(found)
    }

    fn open(&self, key: &Key) -> Result<Option<ObjectReader>> {
        Ok(self.open_sized(key)?.map(|(reader, _)| reader))
    }

    fn open_sized(&self, key: &Key) -> Result<Option<(ObjectReader, Option<u64>)>> {
        let found = self.read().get(key).cloned();
        tracing::debug!(%key, size = found.as_ref().map(|b| b.len()), "local: open");
        Ok(found.map(|b| {
            let len = b.len() as u64;
            (
                Box::new(Cursor::new(SharedBytes(b))) as ObjectReader,
                Some(len),
            )
        }))
    }

    fn exists(&self, key: &Key) -> Result<bool> {
        Ok(self.read().contains_key(key))
    }

    fn evict(&self, key: &Key) -> Result<()> {
        tracing::debug!(%key, "local: evict");
        self.write().remove(key);
        Ok(())
    }

    fn keys(&self) -> Result<Vec<Key>> {
        Ok(self.read().keys().copied().collect())
    }

    fn reach(&self) -> super::Reach {
        super::Reach::Process
    }

    fn close(&self) -> Result<()> {
        self.write().clear();
        Ok(())
    }
}

impl FromConfig for LocalConnector {
    const KIND: &'static str = "local";

    fn from_config(config: &ConnectorConfig) -> Result<Self> {
        let options: Options = config.options()?;
        let objects = live()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&options.id)
            .and_then(Weak::upgrade);
        match objects {
            Some(objects) => Ok(LocalConnector {
                id: options.id,
                objects,
            }),
            None => Err(Error::InvalidConfig {
                kind: Self::KIND.into(),
                reason: format!(
                    "the in-memory objects of local connector {} (created by process {}) do not \
                     exist in this process (pid {}); use a FileConnector to share objects \
                     between processes",
                    options.id,
                    options.pid,
                    std::process::id()
                ),
            }),
        }
    }
}

crate::register_connector!(LocalConnector);
