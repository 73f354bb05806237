//! [`Factory`]: what a proxy needs to find its object (the store's
//! configuration and the key), and how it reads it.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::config_cache;
use super::{get_or_create_store, Store, StoreConfig};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::Storable;

/// The pause before a future's object is looked for again, doubling up to
/// [`LAST_POLL`], by a reader that waits and in the background alike.
pub(crate) const FIRST_POLL: std::time::Duration = std::time::Duration::from_millis(1);
pub(crate) const LAST_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// What a proxy needs to find its object: the store's configuration and
/// the key. This is all that is serialized.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Factory {
    key: Key,
    store: Arc<StoreConfig>,
    /// Set for the proxies of a [`StoreFuture`](crate::StoreFuture): a
    /// missing object is waited for, not taken for evicted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wait: Option<Wait>,
}

thread_local! {
    /// The longest any future's read may wait on this thread, whatever its
    /// own timeout (the fuzzers run jobs whose waits are arbitrary bytes).
    static WAIT_CAP: std::cell::Cell<Option<std::time::Duration>> =
        const { std::cell::Cell::new(None) };
}

/// Runs `f` with future reads on this thread waiting at most `cap`.
pub(crate) fn with_wait_cap<T>(cap: std::time::Duration, f: impl FnOnce() -> T) -> T {
    struct Reset(Option<std::time::Duration>);
    impl Drop for Reset {
        fn drop(&mut self) {
            WAIT_CAP.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(WAIT_CAP.with(|c| c.replace(Some(cap))));
    f()
}

/// How a future's proxy waits for its object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Wait {
    /// At most this long (milliseconds); `None`: as long as it takes.
    pub(crate) timeout_ms: Option<u64>,
}

impl Wait {
    pub(crate) fn timeout(self) -> Option<std::time::Duration> {
        self.timeout_ms.map(std::time::Duration::from_millis)
    }

    /// The frame form: the timeout in milliseconds, `u64::MAX` for none.
    pub(crate) fn to_bytes(self) -> [u8; 8] {
        self.timeout_ms.unwrap_or(u64::MAX).to_le_bytes()
    }

    pub(crate) fn from_bytes(bytes: [u8; 8]) -> Self {
        let ms = u64::from_le_bytes(bytes);
        Wait {
            timeout_ms: (ms != u64::MAX).then_some(ms),
        }
    }
}

impl Factory {
    pub(crate) fn new(key: Key, store: Arc<StoreConfig>) -> Self {
        Factory {
            key,
            store,
            wait: None,
        }
    }

    /// The same reference, read as a future's: a missing object is waited
    /// for, at most `timeout`.
    pub(crate) fn waiting(self, timeout: Option<std::time::Duration>) -> Self {
        self.with_wait(Some(Wait {
            timeout_ms: timeout.map(|t| t.as_millis().min(u64::MAX as u128 - 1) as u64),
        }))
    }

    pub(crate) fn wait(&self) -> Option<Wait> {
        self.wait
    }

    pub(crate) fn with_wait(mut self, wait: Option<Wait>) -> Self {
        self.wait = wait;
        self
    }

    /// The compact form of a reference in task frames: the key's 16 bytes,
    /// then the store's configuration as CBOR, encoded once per
    /// configuration in this process.
    pub(crate) fn frame_parts(&self) -> ([u8; 16], Arc<[u8]>) {
        (
            *self.key.as_uuid().as_bytes(),
            config_cache::encoded(&self.store),
        )
    }

    /// Reads [`frame_parts`](Factory::frame_parts) back; a configuration
    /// seen before in this process is not decoded again.
    pub(crate) fn from_frame(bytes: &[u8]) -> std::result::Result<Factory, String> {
        if bytes.len() < 16 {
            return Err(format!(
                "a reference of {} bytes is too short for a key",
                bytes.len()
            ));
        }
        let key = Key::from_bytes(bytes[..16].try_into().expect("16 bytes"));
        let store = config_cache::decoded(&bytes[16..])?;
        Ok(Factory::new(key, store))
    }

    /// The object's key.
    pub fn key(&self) -> Key {
        self.key
    }

    /// The configuration of the object's store.
    pub fn store_config(&self) -> &StoreConfig {
        &self.store
    }

    /// The store, found by name in this process or built from its
    /// configuration; [`Error::StoreClosed`] if it was closed in this
    /// process (see [`get_or_create_store`]).
    pub fn store(&self) -> Result<Store> {
        get_or_create_store(&self.store)
    }

    pub(crate) fn missing(&self) -> Error {
        Error::MissingObject {
            key: self.key,
            store: self.store.name.clone(),
        }
    }

    /// Reads the object, shared with the store's cache.
    pub(crate) fn resolve<T: Storable>(&self) -> Result<Arc<T>> {
        tracing::debug!(store = %self.store.name, key = %self.key, "resolving proxy");
        let store = self.store()?;
        self.read(|| store.get::<T>(&self.key), self.wait_limit())
    }

    /// Reads the object into a value of its own (bypassing the cache).
    pub(crate) fn load<T: Storable>(&self) -> Result<T> {
        let store = self.store()?;
        self.read(|| store.load::<T>(&self.key), self.wait_limit())
    }

    /// How long a missing object is waited for: `None` for a plain proxy
    /// (missing is missing), `Some(None)` for as long as it takes.
    pub(crate) fn wait_limit(&self) -> Option<Option<std::time::Duration>> {
        self.wait.map(Wait::timeout)
    }

    /// Reads with `read`; a future's missing object is read again, with a
    /// growing pause (1 ms up to 100 ms), until it is set or `limit` ends.
    pub(crate) fn read<V>(
        &self,
        mut read: impl FnMut() -> Result<Option<V>>,
        limit: Option<Option<std::time::Duration>>,
    ) -> Result<V> {
        let Some(timeout) = limit else {
            return read()?.ok_or_else(|| self.missing());
        };
        let timeout = match (timeout, WAIT_CAP.with(std::cell::Cell::get)) {
            (Some(t), Some(cap)) => Some(t.min(cap)),
            (None, cap) => cap,
            (t, None) => t,
        };
        let started = std::time::Instant::now();
        let mut backoff = crate::runtime::Backoff::new(FIRST_POLL, LAST_POLL);
        loop {
            if let Some(value) = read()? {
                return Ok(value);
            }
            let waited = started.elapsed();
            let mut pause = backoff.pause();
            if let Some(timeout) = timeout {
                if waited >= timeout {
                    return Err(Error::NotSetInTime {
                        key: self.key,
                        store: self.store.name.clone(),
                        after: timeout,
                    });
                }
                pause = pause.min(timeout - waited);
            }
            std::thread::sleep(pause);
        }
    }
}

impl fmt::Debug for Factory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in store `{}`", self.key, self.store.name)
    }
}
