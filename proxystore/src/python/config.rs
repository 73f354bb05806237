//! Python ProxyStore's `StoreConfig`, as `store.config().model_dump_json()`
//! writes it, and its counterpart among this crate's configurations.

use serde::{Deserialize, Serialize};

use super::connectors::{FileOptions, PythonFileConnector};
#[cfg(feature = "redis")]
use super::connectors::{PythonRedisConnector, RedisOptions};
use crate::connectors::{ConnectorConfig, FromConfig};
use crate::error::{Error, Result};
use crate::store::StoreConfig;

/// Python's name of its file connector.
pub(crate) const PY_FILE: &str = "proxystore.connectors.file.FileConnector";
/// Python's name of its Redis connector.
pub(crate) const PY_REDIS: &str = "proxystore.connectors.redis.RedisConnector";

/// Python ProxyStore's connector configuration (`ConnectorConfig`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PyConnectorConfig {
    /// The connector's import path (or a short name such as `file`).
    pub kind: String,
    /// The connector's keyword arguments.
    #[serde(default)]
    pub options: serde_json::Map<String, serde_json::Value>,
}

/// Python ProxyStore's store configuration (`StoreConfig`).
///
/// ```
/// use proxystore::python::PyStoreConfig;
///
/// let json = r#"{"name":"shared","connector":{"kind":"proxystore.connectors.file.FileConnector",
///     "options":{"store_dir":"/tmp/ps-doc","clear":true,"buffering":-1}},"serializer":null,
///     "deserializer":null,"cache_size":16,"metrics":false,"populate_target":true,
///     "auto_register":true}"#;
/// let config = PyStoreConfig::from_json(json)?;
/// let ours = config.store_config()?;        // what `Store::from_config` builds
/// assert_eq!(ours.connector.kind, "python-file");
/// assert_eq!(PyStoreConfig::from_store_config(&ours)?, config);
/// # Ok::<(), proxystore::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PyStoreConfig {
    /// The store's name.
    pub name: String,
    /// The connector.
    pub connector: PyConnectorConfig,
    /// A custom serializer (must be `null`: Python's default format is
    /// the one read here).
    #[serde(default)]
    pub serializer: Option<serde_json::Value>,
    /// A custom deserializer (must be `null`).
    #[serde(default)]
    pub deserializer: Option<serde_json::Value>,
    /// Cache size.
    #[serde(default = "default_cache")]
    pub cache_size: i64,
    /// Whether metrics are kept.
    #[serde(default)]
    pub metrics: bool,
    /// Python's `populate_target` default.
    #[serde(default = "yes")]
    pub populate_target: bool,
    /// Python's `auto_register`.
    #[serde(default)]
    pub auto_register: bool,
}

fn default_cache() -> i64 {
    16
}

fn yes() -> bool {
    true
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::Python {
        reason: reason.into(),
    }
}

impl PyStoreConfig {
    /// Parses `store.config().model_dump_json()`.
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|e| {
            invalid(format!(
                "not a python StoreConfig ({e}); pass `store.config().model_dump_json()`"
            ))
        })
    }

    /// The JSON Python's `StoreConfig.model_validate_json` reads.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a configuration is plain data")
    }

    /// This crate's configuration of the same store: its connector is a
    /// [`PythonFileConnector`] or `PythonRedisConnector` over the same
    /// objects.
    pub fn store_config(&self) -> Result<StoreConfig> {
        if self.serializer.as_ref().is_some_and(|v| !v.is_null())
            || self.deserializer.as_ref().is_some_and(|v| !v.is_null())
        {
            return Err(invalid(format!(
                "store `{}` uses a custom serializer, whose format only python knows; use a \
                 store with the default serializer",
                self.name
            )));
        }
        let options = serde_json::Value::Object(self.connector.options.clone());
        let bad = |e: serde_json::Error| {
            invalid(format!(
                "the options of connector `{}` are not understood ({e})",
                self.connector.kind
            ))
        };
        let connector = match python_kind(&self.connector.kind) {
            Some(PY_FILE) => {
                let options: FileOptions = serde_json::from_value(options).map_err(bad)?;
                ConnectorConfig::new(PythonFileConnector::KIND, &options)?
            }
            #[cfg(feature = "redis")]
            Some(PY_REDIS) => {
                let options: RedisOptions = serde_json::from_value(options).map_err(bad)?;
                ConnectorConfig::new(PythonRedisConnector::KIND, &options)?
            }
            _ => {
                return Err(invalid(format!(
                    "connector `{}` is not shared with rust: use python's FileConnector or \
                     RedisConnector (the latter needs the `redis` feature)",
                    self.connector.kind
                )))
            }
        };
        Ok(StoreConfig {
            name: self.name.clone(),
            connector,
            cache_size: usize::try_from(self.cache_size).unwrap_or(0),
            metrics: self.metrics,
        })
    }

    /// Python's configuration of a store of this crate whose connector is
    /// a [`PythonFileConnector`] or `PythonRedisConnector`.
    pub fn from_store_config(config: &StoreConfig) -> Result<Self> {
        let (kind, options) = match config.connector.kind.as_str() {
            PythonFileConnector::KIND => (
                PY_FILE,
                serde_json::to_value(config.connector.options::<FileOptions>()?),
            ),
            #[cfg(feature = "redis")]
            PythonRedisConnector::KIND => (
                PY_REDIS,
                serde_json::to_value(config.connector.options::<RedisOptions>()?),
            ),
            other => {
                return Err(invalid(format!(
                    "store `{}` uses connector `{other}`, which python cannot open; make the \
                     store with PythonFileConnector or PythonRedisConnector",
                    config.name
                )))
            }
        };
        let serde_json::Value::Object(options) = options.expect("options are plain data") else {
            unreachable!("options are a struct")
        };
        Ok(PyStoreConfig {
            name: config.name.clone(),
            connector: PyConnectorConfig {
                kind: kind.to_string(),
                options,
            },
            serializer: None,
            deserializer: None,
            cache_size: config.cache_size.min(i64::MAX as usize) as i64,
            metrics: config.metrics,
            populate_target: true,
            auto_register: true,
        })
    }
}

/// Python's full import path of a connector `kind`, resolving the short
/// names Python accepts (`file`, `FileConnector`, ...).
fn python_kind(kind: &str) -> Option<&'static str> {
    [PY_FILE, PY_REDIS].into_iter().find(|path| {
        let name = path.rsplit('.').next().expect("a path").to_lowercase();
        *path == kind
            || kind.to_lowercase() == name
            || kind.to_lowercase() == name.replace("connector", "")
    })
}
