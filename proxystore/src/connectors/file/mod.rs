//! One file per object in a directory.
//!
//! # What the file store touches
//!
//! A file store removes only what it created, and never follows a link out
//! of its directory:
//!
//! - its entries are told apart by name: objects are named by their key
//!   (a canonical UUID), temporary files by `.<key>.<uuid>.tmp`, and the
//!   marker is `.proxystore`; every other name, and every subdirectory, is
//!   someone else's and is left alone;
//! - removing an entry unlinks it: a key-named symbolic link is removed,
//!   its target is not; reads refuse anything at a key's name that is not a
//!   regular file (a link, a fifo, a directory) with
//!   [`Error::NotAnObject`], without following or waiting on it;
//! - the directory is resolved once, by [`FileConnector::new`]; a path that
//!   is a symbolic link to a directory means that directory, which the
//!   store then did not create;
//! - the directory itself is removed only if `new` created it and it is
//!   empty once the store's own entries are gone.
//!
//! A configuration received from elsewhere (a proxy, a task) acts only on a
//! directory whose marker names the store's identity; see
//! [`FileConnector`] for the whole contract.

pub(super) mod entries;
mod marker;
mod unnamed;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Connector, ConnectorConfig, FromConfig, ObjectReader};
use crate::error::{Error, Result};
use crate::key::Key;
use entries::{OpenError, Scope};

/// How many times `close` sweeps a directory that other processes keep
/// writing into before it reports [`Error::CloseIncomplete`].
const CLOSE_PASSES: usize = 4;

/// Stores each object as a file named by its key in one directory.
///
/// Any process that can see the directory can read the objects, so this is
/// the connector for pools of worker processes on one machine (or on hosts
/// sharing a file system). An object is complete before it has its name,
/// so no reader, in any process, ever sees half an object: a small one (up
/// to 1 MiB) is written into an unnamed file (`O_TMPFILE`) that is then
/// linked at its key, a larger one (or any, on a file system without
/// unnamed files) into a temporary file that is renamed into place. A
/// writer that dies leaves no object behind: an unnamed file goes with its
/// last descriptor, and close removes a dead writer's temporary file.
///
/// ```
/// use proxystore::connectors::{Connector, FileConnector};
///
/// let dir = tempfile::tempdir()?;
/// let connector = FileConnector::new(dir.path().join("cache"))?;
/// let key = connector.put(&[b"bytes"])?;
/// assert!(dir.path().join("cache").join(key.to_string()).exists());
/// connector.close()?;
/// assert!(!dir.path().join("cache").exists());    // it made the directory
///
/// // A directory that was there before keeps everything but the objects.
/// std::fs::write(dir.path().join("notes.txt"), "mine")?;
/// let connector = FileConnector::new(dir.path())?;
/// connector.put(&[b"bytes"])?;
/// connector.close()?;
/// assert!(dir.path().join("notes.txt").exists());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Only what it created
///
/// [`close`](Connector::close) removes the store's objects (files named by
/// a key), its temporary files and its marker, never anything else; the
/// directory goes too if `new` created it and nothing else is left in it.
/// Objects are recognized by name, so a file named like a key (a UUID in
/// lowercase hyphenated form) in the directory is taken for one. Stores
/// that share a directory share its objects: closing one removes them all.
/// A connector rebuilt from the configuration closes the same way (whether
/// `new` created the directory is part of the configuration). With [`keep_on_close`](FileConnector::keep_on_close), close
/// keeps the objects and removes only temporary files left by writers that
/// died (a writer holds a lock on its temporary file while it writes, and
/// the kernel drops it with the process).
///
/// A close that finds other processes still writing objects removes what
/// they wrote (it is the store's) and, if they keep writing, fails with
/// [`Error::CloseIncomplete`]: call close again, or stop them first. Once
/// the directory is gone, their writes fail. In a directory the store did
/// not create nothing stops a writer that is still running after close
/// returned: close the store after the processes using it are done.
///
/// # Configurations from elsewhere
///
/// The configuration carries the directory, whether `new` created it, and
/// the store's identity, which `new` writes into the directory's marker
/// file `.proxystore` (a directory that already has a marker, from a kept
/// or shared store, keeps its identity). A connector rebuilt from a
/// configuration ([`FromConfig`]) refuses, with [`Error::InvalidConfig`],
/// to act on a directory without that marker: a proxy whose configuration
/// was forged to name `/home/user` cannot read, overwrite or remove
/// anything there. A directory that does not exist (the store was closed)
/// holds no objects: reads find nothing, and nothing is created.
#[derive(Clone, Debug)]
pub struct FileConnector {
    dir: PathBuf,
    clear: bool,
    created: bool,
    shared: bool,
    id: Uuid,
    // Whether the directory was found to carry this store's marker; until
    // then (a rebuilt connector whose directory did not exist yet) every
    // operation checks again.
    verified: Arc<AtomicBool>,
    name: String,
}

#[derive(Serialize, Deserialize)]
struct Options {
    directory: PathBuf,
    clear: bool,
    created: bool,
    id: Uuid,
    /// On a file system that other hosts mount too (absent in
    /// configurations written before this option existed).
    #[serde(default)]
    shared: bool,
}

/// Creates `dir` (and, if needed, its parents); whether this call made it.
fn create_dir(dir: &Path) -> io::Result<bool> {
    match fs::create_dir(dir) {
        Ok(()) => return Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

impl FileConnector {
    /// Uses `dir`, creating it if needed, and marks it as a store.
    ///
    /// The path is resolved to an absolute one without symbolic links, so
    /// the configuration means the same in a process with another working
    /// directory. Whether this call created the directory decides whether
    /// [`close`](Connector::close) may remove it.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let label = format!("file({})", dir.display());
        let created =
            create_dir(dir).map_err(|e| Error::io(&label, "creating the directory", e))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| Error::io(&label, "resolving the directory", e))?;
        if !dir.is_dir() {
            let e = io::Error::new(io::ErrorKind::NotADirectory, "not a directory");
            return Err(Error::io(&label, "opening the directory", e));
        }
        let id = match marker::adopt_or_create(&dir, &label) {
            Ok(id) => id,
            Err(e) => {
                if created {
                    let _ = fs::remove_dir(&dir);
                }
                return Err(e);
            }
        };
        Ok(Self::with_options(Options {
            directory: dir,
            clear: true,
            created,
            id,
            shared: false,
        })
        .mark_verified())
    }

    /// Keeps the directory and its objects when the connector is closed.
    pub fn keep_on_close(mut self) -> Self {
        self.clear = false;
        self
    }

    /// Declares that the directory is on a file system every host of a
    /// multi-host executor mounts at the same path (NFS, Lustre, ...), so
    /// such an executor accepts the store ([`Reach::Network`](super::Reach));
    /// otherwise a directory is taken to be this host's alone.
    pub fn shared(mut self) -> Self {
        self.shared = true;
        self
    }

    fn with_options(options: Options) -> Self {
        let name = format!("file({})", options.directory.display());
        FileConnector {
            dir: options.directory,
            clear: options.clear,
            created: options.created,
            shared: options.shared,
            id: options.id,
            verified: Arc::default(),
            name,
        }
    }

    fn mark_verified(self) -> Self {
        self.verified.store(true, Ordering::Release);
        self
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

    /// Whether the directory exists and is this store's (`Ok(false)`: no
    /// directory, so no objects); an error if it exists and is not.
    fn check(&self) -> Result<bool> {
        if self.verified.load(Ordering::Acquire) {
            return Ok(true);
        }
        let not_a_store = |why: &str| Error::InvalidConfig {
            kind: Self::KIND.into(),
            reason: format!(
                "directory {} is not a proxystore file store ({why}); refusing to touch it: the \
                 store that used it was closed, or the configuration was not made by \
                 FileConnector::new",
                self.dir.display()
            ),
        };
        match marker::read(&self.dir, &self.name)? {
            Some(id) if id == self.id => {
                self.verified.store(true, Ordering::Release);
                Ok(true)
            }
            Some(id) => Err(not_a_store(&format!(
                "its `.proxystore` marker names store {id}, not {}",
                self.id
            ))),
            None => match fs::symlink_metadata(&self.dir) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                _ => Err(not_a_store(&format!(
                    "it has no `.proxystore` marker of store {}",
                    self.id
                ))),
            },
        }
    }

    /// Opens the object under `key`, refusing what is not a regular file.
    fn open_object(&self, key: &Key) -> Result<Option<(fs::File, u64)>> {
        if !self.check()? {
            return Ok(None);
        }
        match entries::open_regular(&self.path(key)) {
            Ok(opened) => Ok(Some(opened)),
            Err(OpenError::Missing) => Ok(None),
            Err(OpenError::NotAFile(what)) => Err(self.not_an_object(key, what)),
            Err(OpenError::Io(e)) => Err(self.err("opening", key, e)),
        }
    }

    fn sweep(&self, scope: Scope) -> Result<Option<entries::Swept>> {
        entries::sweep(&self.dir, scope)
            .map_err(|e| Error::io(&self.name, "removing the store's files", e))
    }

    /// Removes the store's objects, temporary files and marker, then the
    /// directory if this store created it and nothing else is in it.
    fn remove_everything(&self) -> Result<()> {
        if self.sweep(Scope::Everything)?.is_none() {
            return Ok(());
        }
        // The objects are gone: the directory stops being a store, and
        // configurations received from now on are refused.
        marker::remove(&self.dir)
            .map_err(|e| Error::io(&self.name, "removing the store marker", e))?;
        for _ in 0..CLOSE_PASSES {
            if self.created {
                match fs::remove_dir(&self.dir) {
                    Ok(()) => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {}
                    Err(e) => return Err(Error::io(&self.name, "removing the directory", e)),
                }
            }
            // Whatever appeared since the last sweep was written by a
            // process still using the store: it is the store's, remove it.
            let Some(swept) = self.sweep(Scope::Everything)? else {
                return Ok(());
            };
            if swept.removed == 0 {
                if !self.created {
                    return Ok(());
                }
                if swept.foreign > 0 {
                    tracing::warn!(
                        dir = %self.dir.display(),
                        foreign = swept.foreign,
                        "file: kept the directory: it holds files the store did not create"
                    );
                    return Ok(());
                }
                // Nothing of ours was left when we looked, yet the directory
                // was not empty: a writer added an object since. Again.
            }
        }
        Err(Error::CloseIncomplete {
            connector: self.name.clone(),
            reason: format!(
                "other processes kept writing objects into {} while it was being removed",
                self.dir.display()
            ),
        })
    }
}

impl Connector for FileConnector {
    fn config(&self) -> ConnectorConfig {
        let options = Options {
            directory: self.dir.clone(),
            clear: self.clear,
            created: self.created,
            id: self.id,
            shared: self.shared,
        };
        ConnectorConfig::new(Self::KIND, &options).expect("plain options serialize")
    }

    fn set(&self, key: &Key, parts: &[&[u8]]) -> Result<()> {
        let size: usize = parts.iter().map(|p| p.len()).sum();
        tracing::debug!(%key, size, dir = %self.dir.display(), "file: set");
        if !self.check()? {
            let e = io::Error::new(io::ErrorKind::NotFound, "the store's directory is gone");
            return Err(self.err("writing", key, e));
        }
        entries::write_object(&self.dir, key, &self.path(key), parts)
            .map_err(|e| self.err("writing", key, e))
    }

    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        let Some((file, len)) = self.open_object(key)? else {
            return Ok(None);
        };
        let bytes = entries::read_whole(file, len).map_err(|e| self.err("reading", key, e))?;
        tracing::debug!(%key, size = bytes.len(), "file: get");
        Ok(Some(bytes))
    }

    fn open(&self, key: &Key) -> Result<Option<ObjectReader>> {
        Ok(self.open_sized(key)?.map(|(reader, _)| reader))
    }

    fn open_sized(&self, key: &Key) -> Result<Option<(ObjectReader, Option<u64>)>> {
        let opened = self.open_object(key)?;
        tracing::debug!(%key, size = opened.as_ref().map(|(_, len)| *len), "file: open");
        Ok(opened.map(|(file, len)| (Box::new(file) as ObjectReader, Some(len))))
    }

    fn exists(&self, key: &Key) -> Result<bool> {
        if !self.check()? {
            return Ok(false);
        }
        // Only a regular file is an object; a link is not followed.
        match fs::symlink_metadata(self.path(key)) {
            Ok(meta) => Ok(meta.is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.err("checking", key, e)),
        }
    }

    fn keys(&self) -> Result<Vec<Key>> {
        if !self.check()? {
            return Ok(Vec::new());
        }
        let keys = entries::list_objects(&self.dir)
            .map_err(|e| Error::io(&self.name, "listing the objects", e))?;
        Ok(keys.unwrap_or_default())
    }

    fn evict(&self, key: &Key) -> Result<()> {
        tracing::debug!(%key, "file: evict");
        if !self.check()? {
            return Ok(());
        }
        entries::remove(&self.path(key))
            .map(drop)
            .map_err(|e| self.err("evicting", key, e))
    }

    fn reach(&self) -> super::Reach {
        if self.shared {
            super::Reach::Network
        } else {
            super::Reach::Host
        }
    }

    fn close(&self) -> Result<()> {
        if !self.check()? {
            return Ok(());
        }
        if !self.clear {
            tracing::debug!(dir = %self.dir.display(), "file: removing abandoned temporary files");
            self.sweep(Scope::AbandonedTemporaries)?;
            return Ok(());
        }
        tracing::debug!(dir = %self.dir.display(), "file: removing the store's files");
        self.remove_everything()
    }
}

impl FromConfig for FileConnector {
    const KIND: &'static str = "file";

    fn from_config(config: &ConnectorConfig) -> Result<Self> {
        let options: Options = config.options()?;
        if !options.directory.is_absolute() {
            return Err(Error::InvalidConfig {
                kind: Self::KIND.into(),
                reason: format!("directory {} is not absolute", options.directory.display()),
            });
        }
        // Rebuilt connectors (in workers) never create the directory: if it
        // is gone, the store was closed, and reads report missing objects.
        // If it exists, it must be this store's.
        let connector = Self::with_options(options);
        connector.check()?;
        Ok(connector)
    }
}

crate::register_connector!(FileConnector);
