//! Objects in shared memory (`/dev/shm`), for processes of one host.
//!
//! # What the shared-memory store touches
//!
//! - [`SharedMemoryConnector::new`] creates a fresh directory
//!   `proxystore-<uuid>` under `/dev/shm` (or the base directory given to
//!   the builder), private to the user (mode 0700); it never adopts nor
//!   removes a directory it did not create;
//! - in it, objects are files named by their key and temporary files
//!   `.<key>.<uuid>.tmp`, as in the file store; every other name is someone
//!   else's and is left alone (it keeps the directory from being removed);
//! - the directory, its objects and its temporary files are removed by
//!   [`close`](Connector::close) of the connector that created it, or, if
//!   the creating process dies first (even by `SIGKILL`), by a guardian
//!   process it started for that (see `guardian.rs`).
//!
//! A connector rebuilt from a configuration (in a pool worker) reads and
//! writes objects in that directory, and removes nothing on close. It acts
//! only on a directory named `proxystore-<uuid>` with the store's identity,
//! so a forged configuration cannot point it at another directory.

mod guardian;
mod mapping;

use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::file::entries::{self, OpenError, Scope};
use super::{Connector, ConnectorConfig, FromConfig, ObjectReader, Reach};
use crate::error::{Error, Result};
use crate::key::Key;
use mapping::{MappedReader, Mapping};

/// Objects at least this large are read through a memory map; smaller ones
/// with a plain read.
const MAP_MIN: u64 = 64 << 10;

/// Where stores are created unless the builder says otherwise.
const DEFAULT_BASE: &str = "/dev/shm";

/// How many times `close` sweeps a directory that other processes keep
/// writing into before it reports [`Error::CloseIncomplete`].
const CLOSE_PASSES: usize = 4;

/// Stores each object as a file in shared memory (`/dev/shm`): the fastest
/// way to pass large values between processes of one host.
///
/// Reading an object maps it into memory: decoding copies the bytes once,
/// from the shared pages straight into the final value, with no system call
/// per read. Writes go to a temporary file that is renamed into place, so
/// no reader ever sees half an object. Objects live in RAM (tmpfs), so they
/// count against the host's memory while they are stored.
///
/// ```
/// use proxystore::connectors::{Connector, SharedMemoryConnector};
/// use proxystore::Store;
///
/// let connector = SharedMemoryConnector::new()?;
/// let dir = connector.directory().to_path_buf();
/// assert!(dir.starts_with("/dev/shm"));
///
/// let key = connector.put(&[b"hello ", b"shared memory"])?;
/// assert_eq!(connector.get(&key)?.as_deref(), Some(&b"hello shared memory"[..]));
///
/// // Through a store, as any connector.
/// let store = Store::new("shm-doc", connector)?;
/// let proxy = store.proxy(vec![1.5f64; 1000])?;
/// assert_eq!(proxy.iter().sum::<f64>(), 1500.0);
/// store.close()?;                  // removes the objects and the directory
/// assert!(!dir.exists());
/// # Ok::<(), proxystore::Error>(())
/// ```
///
/// # Lifetime of the objects
///
/// Objects live until the creating connector is [closed](Connector::close)
/// or the creating process exits, whichever comes first, so shared memory
/// is never left behind: when the creating process dies in any way (a
/// panic, `exit`, `SIGKILL`), a guardian process it started removes the
/// store's files and directory within a fraction of a second (a few seconds
/// at most while pool workers finish writes). There is therefore no
/// `keep_on_close`: nothing in `/dev/shm` may outlive its creator. Use a
/// [`FileConnector`](super::FileConnector) for objects that must.
///
/// A connector rebuilt from the configuration in another process (a pool
/// worker) shares the objects: it reads them, writes results into the same
/// directory, and evicts; its `close` removes nothing. Once the store is
/// closed, rebuilt connectors find no objects and cannot write.
///
/// # Speed
///
/// Writes are one `writev` of all the parts into the temporary file (a
/// write through a memory map measured twice as slow: every page faults);
/// `get` is one `read` into a buffer of the object's size. The speed then
/// depends on the tmpfs's page size. For 100 MiB on a 2-core host with
/// Linux 6.18 (medians): put 45 ms and get 72 ms on a default `/dev/shm`
/// (4 KiB pages); put 11 ms and get 54 ms on a tmpfs mounted with
/// `huge=within_size`, given with
/// [`base_dir`](SharedMemoryConnectorBuilder::base_dir); for comparison a
/// [`FileConnector`](super::FileConnector) on ext4, whose page cache uses
/// large folios there, put 24 ms and get 56 ms.
///
/// # Who can read the objects
///
/// The directory is created with mode 0700: processes of the same user
/// (and root) on this host. [`reach`](Connector::reach) is
/// [`Reach::Host`]. Object files must not be modified by anything but the
/// store: a process of that user that truncated one while another process
/// has it mapped would make the reader fault (`SIGBUS`), as with any
/// memory-mapped file.
#[derive(Clone, Debug)]
pub struct SharedMemoryConnector {
    dir: PathBuf,
    id: Uuid,
    /// Made by [`SharedMemoryConnector::new`] in this process: only such a
    /// connector removes the directory.
    creator: bool,
    // Whether the directory was found to be a store's; until then (a
    // rebuilt connector whose directory did not exist yet, or was a
    // forgery) every operation checks again.
    verified: Arc<AtomicBool>,
    name: String,
}

/// Options of a [`SharedMemoryConnector`], from
/// [`SharedMemoryConnector::builder`].
#[derive(Clone, Debug)]
pub struct SharedMemoryConnectorBuilder {
    base: PathBuf,
}

impl SharedMemoryConnectorBuilder {
    /// Creates the store's directory under `dir` instead of `/dev/shm`: a
    /// tmpfs of your own for a host whose `/dev/shm` is small, or any
    /// directory in tests. `dir` must exist; the store still creates a
    /// fresh `proxystore-<uuid>` in it and never touches anything else.
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base = dir.into();
        self
    }

    /// Creates the directory and starts guarding it.
    pub fn build(self) -> Result<SharedMemoryConnector> {
        let label = format!("shm({})", self.base.display());
        let base = self
            .base
            .canonicalize()
            .map_err(|e| Error::io(&label, "resolving the base directory", e))?;
        let id = Uuid::new_v4();
        let dir = base.join(dir_name(&id));
        if !guardian::representable(&dir) {
            return Err(Error::InvalidConfig {
                kind: SharedMemoryConnector::KIND.into(),
                reason: format!(
                    "base directory {} has a line break in its path; use another",
                    base.display()
                ),
            });
        }
        let connector = SharedMemoryConnector::with_options(Options { directory: dir, id }, true);
        // Watched before it exists: there is no moment when the directory
        // is there and a crash would leave it behind.
        guardian::watch(&connector.dir).map_err(|e| {
            Error::io(
                &connector.name,
                "starting the guardian process (/bin/sh)",
                e,
            )
        })?;
        if let Err(e) = DirBuilder::new().mode(0o700).create(&connector.dir) {
            guardian::forget(&connector.dir);
            return Err(Error::io(&connector.name, "creating the directory", e));
        }
        tracing::debug!(dir = %connector.dir.display(), "shm: created");
        Ok(connector.mark_verified())
    }
}

#[derive(Serialize, Deserialize)]
struct Options {
    directory: PathBuf,
    id: Uuid,
}

fn dir_name(id: &Uuid) -> String {
    format!("proxystore-{}", id.hyphenated())
}

impl SharedMemoryConnector {
    /// A store in a new directory under `/dev/shm`.
    pub fn new() -> Result<Self> {
        Self::builder().build()
    }

    /// Options: where the directory is created.
    pub fn builder() -> SharedMemoryConnectorBuilder {
        SharedMemoryConnectorBuilder {
            base: PathBuf::from(DEFAULT_BASE),
        }
    }

    /// The directory holding the objects.
    pub fn directory(&self) -> &Path {
        &self.dir
    }

    /// The process id of the guardian that removes this process's stores
    /// if it dies, while one runs.
    #[doc(hidden)]
    pub fn guardian_pid() -> Option<u32> {
        guardian::pid()
    }

    fn with_options(options: Options, creator: bool) -> Self {
        SharedMemoryConnector {
            name: format!("shm({})", options.directory.display()),
            dir: options.directory,
            id: options.id,
            creator,
            verified: Arc::default(),
        }
    }

    fn mark_verified(self) -> Self {
        self.verified.store(true, Ordering::Release);
        self
    }

    fn path(&self, key: &Key) -> PathBuf {
        // A `Key` is always a UUID: the path cannot leave the directory.
        self.dir.join(key.as_str())
    }

    fn err(&self, operation: &str, key: &Key, e: io::Error) -> Error {
        Error::io(&self.name, format!("{operation} {key}"), e)
    }

    /// Whether the directory exists (`Ok(false)`: the store was closed, so
    /// there are no objects); an error if something else is at its name.
    fn check(&self) -> Result<bool> {
        if self.verified.load(Ordering::Acquire) {
            return Ok(true);
        }
        match fs::symlink_metadata(&self.dir) {
            Ok(meta) if meta.is_dir() => {
                self.verified.store(true, Ordering::Release);
                Ok(true)
            }
            Ok(meta) => Err(Error::InvalidConfig {
                kind: Self::KIND.into(),
                reason: format!(
                    "{} is a {}, not a shared-memory store's directory; refusing to touch it",
                    self.dir.display(),
                    entries::describe(meta.file_type())
                ),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(&self.name, "opening the directory", e)),
        }
    }

    fn open_object(&self, key: &Key) -> Result<Option<(File, u64)>> {
        if !self.check()? {
            return Ok(None);
        }
        match entries::open_regular(&self.path(key)) {
            Ok(opened) => Ok(Some(opened)),
            Err(OpenError::Missing) => Ok(None),
            Err(OpenError::NotAFile(what)) => Err(Error::NotAnObject {
                connector: self.name.clone(),
                key: *key,
                found: what.to_string(),
            }),
            Err(OpenError::Io(e)) => Err(self.err("opening", key, e)),
        }
    }

    fn sweep(&self) -> Result<Option<entries::Swept>> {
        entries::sweep(&self.dir, Scope::Everything)
            .map_err(|e| Error::io(&self.name, "removing the store's files", e))
    }

    /// Removes the objects, the temporary files and the directory.
    fn remove_everything(&self) -> Result<()> {
        for _ in 0..CLOSE_PASSES {
            let Some(swept) = self.sweep()? else {
                return Ok(());
            };
            match fs::remove_dir(&self.dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {}
                Err(e) => return Err(Error::io(&self.name, "removing the directory", e)),
            }
            if swept.removed == 0 && swept.foreign > 0 {
                tracing::warn!(
                    dir = %self.dir.display(),
                    foreign = swept.foreign,
                    "shm: kept the directory: it holds files the store did not create"
                );
                return Ok(());
            }
            // A writer in another process added an object since the sweep:
            // it is the store's, remove it too.
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

impl Connector for SharedMemoryConnector {
    fn config(&self) -> ConnectorConfig {
        let options = Options {
            directory: self.dir.clone(),
            id: self.id,
        };
        ConnectorConfig::new(Self::KIND, &options).expect("plain options serialize")
    }

    fn set(&self, key: &Key, parts: &[&[u8]]) -> Result<()> {
        let size: usize = parts.iter().map(|p| p.len()).sum();
        tracing::debug!(%key, size, dir = %self.dir.display(), "shm: set");
        if !self.check()? {
            let e = io::Error::new(io::ErrorKind::NotFound, "the store was closed");
            return Err(self.err("writing", key, e));
        }
        entries::write_object(&self.dir, key, &self.path(key), parts)
            .map_err(|e| self.err("writing", key, e))
    }

    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        let Some((file, len)) = self.open_object(key)? else {
            return Ok(None);
        };
        // One copy, from the shared pages into the new buffer.
        let bytes = entries::read_whole(file, len).map_err(|e| self.err("reading", key, e))?;
        tracing::debug!(%key, size = bytes.len(), "shm: get");
        Ok(Some(bytes))
    }

    fn open(&self, key: &Key) -> Result<Option<ObjectReader>> {
        Ok(self.open_sized(key)?.map(|(reader, _)| reader))
    }

    fn open_sized(&self, key: &Key) -> Result<Option<(ObjectReader, Option<u64>)>> {
        let Some((file, len)) = self.open_object(key)? else {
            return Ok(None);
        };
        tracing::debug!(%key, size = len, "shm: open");
        // A small object costs less to read than to map (a map is two
        // more system calls and a page fault).
        if len < MAP_MIN {
            return Ok(Some((Box::new(file), Some(len))));
        }
        let map = Mapping::new(&file, len).map_err(|e| self.err("mapping", key, e))?;
        Ok(Some((Box::new(MappedReader::new(map)), Some(len))))
    }

    fn exists(&self, key: &Key) -> Result<bool> {
        if !self.check()? {
            return Ok(false);
        }
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
        tracing::debug!(%key, "shm: evict");
        if !self.check()? {
            return Ok(());
        }
        entries::remove(&self.path(key))
            .map(drop)
            .map_err(|e| self.err("evicting", key, e))
    }

    fn reach(&self) -> Reach {
        Reach::Host
    }

    fn close(&self) -> Result<()> {
        if !self.creator {
            return Ok(());
        }
        tracing::debug!(dir = %self.dir.display(), "shm: removing the store's files");
        self.remove_everything()?;
        if !self.dir.exists() {
            guardian::forget(&self.dir);
        }
        Ok(())
    }
}

impl FromConfig for SharedMemoryConnector {
    const KIND: &'static str = "shm";

    fn from_config(config: &ConnectorConfig) -> Result<Self> {
        let options: Options = config.options()?;
        let invalid = |reason: String| Error::InvalidConfig {
            kind: Self::KIND.into(),
            reason,
        };
        if !options.directory.is_absolute() {
            return Err(invalid(format!(
                "directory {} is not absolute",
                options.directory.display()
            )));
        }
        let expected = dir_name(&options.id);
        if options.directory.file_name() != Some(expected.as_ref()) {
            return Err(invalid(format!(
                "directory {} is not named {expected}, as the store's directory is; refusing to \
                 touch it",
                options.directory.display()
            )));
        }
        // Rebuilt connectors never create the directory: if it is gone,
        // the store was closed, and reads report missing objects.
        let connector = Self::with_options(options, false);
        connector.check()?;
        Ok(connector)
    }
}

crate::register_connector!(SharedMemoryConnector);
