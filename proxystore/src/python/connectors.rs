//! Connectors over the stores Python ProxyStore programs use, in Python's
//! layouts: a directory of `<uuid>` files with `<uuid>.ready` markers, and
//! Redis values under bare `<uuid>` keys.
//!
//! Both remove on [`close`](Connector::close) only the objects this side
//! created (Python's own `close` may clear a whole directory; this one
//! never touches what a Python program stored).

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::connectors::{Connector, ConnectorConfig, FromConfig, ObjectReader, Reach};
use crate::error::{Error, Result};
use crate::key::Key;

/// The options of Python's `FileConnector`, kept as Python wrote them so
/// that configurations compare equal on both sides.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOptions {
    /// The directory.
    pub store_dir: String,
    /// Python's `clear` (whether Python's `close` removes the directory);
    /// this side never removes what it did not create.
    #[serde(default = "yes")]
    pub clear: bool,
    /// Python's `buffering` for `open()`.
    #[serde(default = "minus_one")]
    pub buffering: i64,
}

fn yes() -> bool {
    true
}

fn minus_one() -> i64 {
    -1
}

/// A directory in Python ProxyStore's file layout: each object in a file
/// named by its key, readable once an empty `<key>.ready` marker exists.
///
/// ```
/// use proxystore::connectors::Connector;
/// use proxystore::python::PythonFileConnector;
///
/// let dir = tempfile::tempdir()?;
/// let connector = PythonFileConnector::new(dir.path())?;
/// let key = connector.put(&[b"BS\n", b"hello"])?;
/// assert!(dir.path().join(format!("{key}.ready")).exists());
/// connector.close()?;                     // removes what it created, only
/// assert!(!connector.exists(&key)?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct PythonFileConnector {
    dir: PathBuf,
    options: FileOptions,
    created: Mutex<HashSet<Key>>,
}

impl PythonFileConnector {
    /// The store in `dir`, created if missing. Python programs reading it
    /// get `clear: false` in the configuration: their `close` leaves it.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = std::path::absolute(dir.as_ref()).map_err(|e| io("resolve", dir.as_ref(), e))?;
        Self::with_options(FileOptions {
            store_dir: dir.to_string_lossy().into_owned(),
            clear: false,
            buffering: -1,
        })
    }

    fn with_options(options: FileOptions) -> Result<Self> {
        let dir = PathBuf::from(&options.store_dir);
        fs::create_dir_all(&dir).map_err(|e| io("create directory", &dir, e))?;
        Ok(PythonFileConnector {
            dir,
            options,
            created: Mutex::new(HashSet::new()),
        })
    }

    fn path(&self, key: &Key) -> PathBuf {
        self.dir.join(key.as_str())
    }

    fn marker(&self, key: &Key) -> PathBuf {
        self.dir.join(format!("{}.ready", &*key.as_str()))
    }

    fn created(&self) -> std::sync::MutexGuard<'_, HashSet<Key>> {
        self.created.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn io(operation: &str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        connector: format!("python file ({})", path.display()),
        operation: operation.to_string(),
        source,
    }
}

fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", path, e)),
        _ => Ok(()),
    }
}

impl Connector for PythonFileConnector {
    fn config(&self) -> ConnectorConfig {
        ConnectorConfig::new(Self::KIND, &self.options).expect("plain options")
    }

    fn set(&self, key: &Key, parts: &[&[u8]]) -> Result<()> {
        // Written aside and renamed, then marked ready: Python's readers
        // look for the marker, ours never see half an object either.
        let path = self.path(key);
        let tmp = self
            .dir
            .join(format!(".{}.{}.tmp", &*key.as_str(), std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = fs::File::create(&tmp)?;
            for part in parts {
                file.write_all(part)?;
            }
            fs::rename(&tmp, &path)?;
            fs::File::create(self.marker(key)).map(drop)
        };
        self.created().insert(*key);
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io("write", &path, e)
        })
    }

    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        let Some((mut reader, len)) = self.open_sized(key)? else {
            return Ok(None);
        };
        let mut bytes = Vec::with_capacity(len.unwrap_or(0) as usize);
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| io("read", &self.path(key), e))?;
        Ok(Some(bytes))
    }

    fn open_sized(&self, key: &Key) -> Result<Option<(ObjectReader, Option<u64>)>> {
        if !self.marker(key).exists() {
            return Ok(None);
        }
        let path = self.path(key);
        // Never follow a link (or wait on a fifo) someone else put there.
        match fs::symlink_metadata(&path) {
            Ok(meta) if !meta.is_file() => {
                return Err(Error::NotAnObject {
                    connector: format!("python file ({})", self.dir.display()),
                    key: *key,
                    found: if meta.is_symlink() {
                        "symbolic link"
                    } else {
                        "special file"
                    }
                    .into(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("read", &path, e)),
            Ok(_) => {}
        }
        match fs::File::open(&path).and_then(|f| Ok((f.metadata()?.len(), f))) {
            Ok((len, file)) => Ok(Some((Box::new(file), Some(len)))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", &path, e)),
        }
    }

    fn open(&self, key: &Key) -> Result<Option<ObjectReader>> {
        Ok(self.open_sized(key)?.map(|(reader, _)| reader))
    }

    fn exists(&self, key: &Key) -> Result<bool> {
        Ok(self.marker(key).exists())
    }

    fn evict(&self, key: &Key) -> Result<()> {
        remove(&self.path(key))?;
        remove(&self.marker(key))?;
        self.created().remove(key);
        Ok(())
    }

    fn close(&self) -> Result<()> {
        let keys: Vec<Key> = self.created().iter().copied().collect();
        for key in keys {
            self.evict(&key)?;
        }
        Ok(())
    }

    fn reach(&self) -> Reach {
        Reach::Host
    }
}

impl FromConfig for PythonFileConnector {
    const KIND: &'static str = "python-file";

    fn from_config(config: &ConnectorConfig) -> Result<Self> {
        Self::with_options(config.options()?)
    }
}

crate::register_connector!(PythonFileConnector);

/// The options of Python's `RedisConnector`.
#[cfg(feature = "redis")]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisOptions {
    /// Server host name.
    pub hostname: String,
    /// Server port.
    pub port: u16,
    /// Python's `clear` (whether Python's `close` flushes the database);
    /// this side never removes what it did not create.
    #[serde(default)]
    pub clear: bool,
}

/// A Redis server in Python ProxyStore's layout: each object's bytes under
/// its bare key (`str(uuid4())`), in database 0.
#[cfg(feature = "redis")]
pub struct PythonRedisConnector {
    options: RedisOptions,
    client: redis::Client,
    connection: Mutex<Option<redis::Connection>>,
    created: Mutex<HashSet<Key>>,
}

#[cfg(feature = "redis")]
impl std::fmt::Debug for PythonRedisConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PythonRedisConnector")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "redis")]
impl PythonRedisConnector {
    /// The server at `hostname:port`. Nothing is sent until it is used.
    pub fn new(hostname: &str, port: u16) -> Result<Self> {
        Self::with_options(RedisOptions {
            hostname: hostname.to_string(),
            port,
            clear: false,
        })
    }

    fn with_options(options: RedisOptions) -> Result<Self> {
        let url = format!("redis://{}:{}/", options.hostname, options.port);
        let client = redis::Client::open(url).map_err(|e| Error::Redis {
            server: format!("{}:{}", options.hostname, options.port),
            operation: "connect".into(),
            message: e.to_string(),
        })?;
        Ok(PythonRedisConnector {
            options,
            client,
            connection: Mutex::new(None),
            created: Mutex::new(HashSet::new()),
        })
    }

    fn run<T: redis::FromRedisValue>(&self, operation: &str, cmd: &redis::Cmd) -> Result<T> {
        let fail = |e: redis::RedisError| Error::Redis {
            server: format!("{}:{}", self.options.hostname, self.options.port),
            operation: operation.to_string(),
            message: e.to_string(),
        };
        let mut slot = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        let connection = match &mut *slot {
            Some(c) => c,
            None => slot.insert(self.client.get_connection().map_err(fail)?),
        };
        cmd.query(connection)
            .inspect_err(|_| *slot = None)
            .map_err(fail)
    }

    fn created(&self) -> std::sync::MutexGuard<'_, HashSet<Key>> {
        self.created.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(feature = "redis")]
impl Connector for PythonRedisConnector {
    fn config(&self) -> ConnectorConfig {
        ConnectorConfig::new(Self::KIND, &self.options).expect("plain options")
    }

    fn set(&self, key: &Key, parts: &[&[u8]]) -> Result<()> {
        self.created().insert(*key);
        self.run::<()>(
            "SET",
            redis::cmd("SET").arg(&*key.as_str()).arg(parts.concat()),
        )
    }

    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        self.run("GET", redis::cmd("GET").arg(&*key.as_str()))
    }

    fn open_sized(&self, key: &Key) -> Result<Option<(ObjectReader, Option<u64>)>> {
        Ok(self.get(key)?.map(|bytes| {
            let len = bytes.len() as u64;
            (
                Box::new(std::io::Cursor::new(bytes)) as ObjectReader,
                Some(len),
            )
        }))
    }

    fn exists(&self, key: &Key) -> Result<bool> {
        self.run("EXISTS", redis::cmd("EXISTS").arg(&*key.as_str()))
    }

    fn evict(&self, key: &Key) -> Result<()> {
        self.run::<()>("DEL", redis::cmd("DEL").arg(&*key.as_str()))?;
        self.created().remove(key);
        Ok(())
    }

    fn close(&self) -> Result<()> {
        let keys: Vec<Key> = self.created().iter().copied().collect();
        for key in keys {
            self.evict(&key)?;
        }
        Ok(())
    }

    fn reach(&self) -> Reach {
        Reach::Network
    }
}

#[cfg(feature = "redis")]
impl FromConfig for PythonRedisConnector {
    const KIND: &'static str = "python-redis";

    fn from_config(config: &ConnectorConfig) -> Result<Self> {
        Self::with_options(config.options()?)
    }
}

#[cfg(feature = "redis")]
crate::register_connector!(PythonRedisConnector);
