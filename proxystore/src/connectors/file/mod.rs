//! One file per object in a directory.

mod entries;

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Connector, ConnectorConfig, FromConfig, ObjectReader};
use crate::error::{Error, Result};
use crate::key::Key;
use entries::OpenError;

/// Stores each object as a file named by its key in one directory.
///
/// Any process that can see the directory can read the objects, so this is
/// the connector for pools of worker processes on one machine (or on hosts
/// sharing a file system). Writes go to a temporary file that is renamed
/// into place, so no reader, in any process, ever sees half an object.
/// [`close`](Connector::close) removes the directory and everything in it
/// unless [`keep_on_close`](FileConnector::keep_on_close) was asked for.
///
/// Only a regular file is an object: reads refuse anything else at a key's
/// name (a symbolic link, a fifo, a directory) with
/// [`Error::NotAnObject`], without following or waiting on it, and
/// [`exists`](Connector::exists) does not count it.
///
/// ```
/// use proxystore::connectors::{Connector, FileConnector};
///
/// let dir = tempfile::tempdir()?;
/// let connector = FileConnector::new(dir.path().join("cache"))?;
/// let key = connector.put(&[b"bytes"])?;
/// assert!(dir.path().join("cache").join(key.to_string()).exists());
/// connector.close()?;
/// assert!(!dir.path().join("cache").exists());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct FileConnector {
    dir: PathBuf,
    clear: bool,
    name: String,
}

#[derive(Serialize, Deserialize)]
struct Options {
    directory: PathBuf,
    clear: bool,
}

impl FileConnector {
    /// Uses (and creates, if needed) `dir`. The path is made absolute so the
    /// configuration means the same in a process with another working
    /// directory.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let label = format!("file({})", dir.display());
        fs::create_dir_all(dir).map_err(|e| Error::io(&label, "creating the directory", e))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| Error::io(&label, "resolving the directory", e))?;
        Ok(Self::with_options(dir, true))
    }

    /// Keeps the directory and its objects when the connector is closed.
    pub fn keep_on_close(mut self) -> Self {
        self.clear = false;
        self
    }

    fn with_options(dir: PathBuf, clear: bool) -> Self {
        let name = format!("file({})", dir.display());
        FileConnector { dir, clear, name }
    }

    /// The directory holding the objects.
    pub fn directory(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &Key) -> PathBuf {
        // A `Key` is always a UUID: the path cannot leave the directory.
        self.dir.join(key.as_str())
    }

    fn err(&self, operation: &str, key: &Key, e: io::Error) -> Error {
        Error::io(&self.name, format!("{operation} {key}"), e)
    }

    fn not_an_object(&self, key: &Key, found: &str) -> Error {
        Error::NotAnObject {
            connector: self.name.clone(),
            key: *key,
            found: found.to_string(),
        }
    }

    /// Opens the object under `key`, refusing what is not a regular file.
    fn open_object(&self, key: &Key) -> Result<Option<(fs::File, u64)>> {
        match entries::open_regular(&self.path(key)) {
            Ok(opened) => Ok(Some(opened)),
            Err(OpenError::Missing) => Ok(None),
            Err(OpenError::NotAFile(what)) => Err(self.not_an_object(key, what)),
            Err(OpenError::Io(e)) => Err(self.err("opening", key, e)),
        }
    }
}

impl Connector for FileConnector {
    fn config(&self) -> ConnectorConfig {
        let options = Options {
            directory: self.dir.clone(),
            clear: self.clear,
        };
        ConnectorConfig::new(Self::KIND, &options).expect("plain options serialize")
    }

    fn set(&self, key: &Key, parts: &[&[u8]]) -> Result<()> {
        let size: usize = parts.iter().map(|p| p.len()).sum();
        tracing::debug!(%key, size, dir = %self.dir.display(), "file: set");
        let tmp = self
            .dir
            .join(format!(".{}.{}.tmp", &*key.as_str(), &*Key::new().as_str()));
        let write = || -> io::Result<()> {
            let file = File::create(&tmp)?;
            // Small parts (headers) are gathered; large ones go straight
            // from the caller's memory to the file.
            let mut out = BufWriter::with_capacity(64 * 1024, file);
            for part in parts {
                out.write_all(part)?;
            }
            out.into_inner().map_err(|e| e.into_error())?;
            fs::rename(&tmp, self.path(key))
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            self.err("writing", key, e)
        })
    }

    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        let Some((mut file, len)) = self.open_object(key)? else {
            return Ok(None);
        };
        // The length only sizes the buffer if it can be had; a file that
        // grew or shrank since (it cannot: objects are replaced, never
        // rewritten) would still be read whole.
        let mut bytes = Vec::new();
        let _ = bytes.try_reserve_exact(usize::try_from(len).unwrap_or(0));
        file.read_to_end(&mut bytes)
            .map_err(|e| self.err("reading", key, e))?;
        tracing::debug!(%key, size = bytes.len(), "file: get");
        Ok(Some(bytes))
    }

    fn open(&self, key: &Key) -> Result<Option<ObjectReader>> {
        let opened = self.open_object(key)?;
        tracing::debug!(%key, found = opened.is_some(), "file: open");
        Ok(opened.map(|(file, _)| Box::new(file) as ObjectReader))
    }

    fn exists(&self, key: &Key) -> Result<bool> {
        // Only a regular file is an object; a link is not followed.
        match fs::symlink_metadata(self.path(key)) {
            Ok(meta) => Ok(meta.is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.err("checking", key, e)),
        }
    }

    fn evict(&self, key: &Key) -> Result<()> {
        tracing::debug!(%key, "file: evict");
        match fs::remove_file(self.path(key)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(self.err("evicting", key, e)),
            _ => Ok(()),
        }
    }

    fn close(&self) -> Result<()> {
        if self.clear {
            tracing::debug!(dir = %self.dir.display(), "file: removing directory");
            match fs::remove_dir_all(&self.dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(Error::io(&self.name, "removing the directory", e))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl FromConfig for FileConnector {
    const KIND: &'static str = "file";

    fn from_config(config: &ConnectorConfig) -> Result<Self> {
        let options: Options = config.options()?;
        // Rebuilt connectors (in workers) never create the directory: if it
        // is gone, the store was closed, and reads report missing objects.
        if !options.directory.is_absolute() {
            return Err(Error::InvalidConfig {
                kind: Self::KIND.into(),
                reason: format!("directory {} is not absolute", options.directory.display()),
            });
        }
        Ok(Self::with_options(options.directory, options.clear))
    }
}

crate::register_connector!(FileConnector);
