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
//! - beside it, a directory `proxystore-<uuid>.pool` (mode 0700) where
//!   evicted large objects wait to be reused, as files `<size>.<uuid>.seg`
//!   (see `segment.rs`);
//! - both directories and the store's files in them are removed by
//!   [`close`](Connector::close) of the connector that created them, or,
//!   if the creating process dies first (even by `SIGKILL`), by a guardian
//!   process it started for that (see `guardian.rs`).
//!
//! A connector rebuilt from a configuration (in a pool worker) reads and
//! writes objects in that directory, and removes nothing on close. It acts
//! only on a directory named `proxystore-<uuid>` with the store's identity,
//! so a forged configuration cannot point it at another directory.

mod guardian;
mod mapping;
mod segment;

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
use segment::{Pool, SegmentReader};

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
/// Decoding copies the bytes once, from the shared pages straight into the
/// final value. Writes go to an unnamed file linked at the key once
/// complete (small objects) or to a temporary file that is renamed into
/// place, so no reader ever sees half an object. Objects live in RAM
/// (tmpfs), so they count against the host's memory while they are stored,
/// and so do the evicted large objects the store keeps for reuse (512 MiB
/// at most unless [`pool_limit`](SharedMemoryConnectorBuilder::pool_limit)
/// says otherwise) until it is closed.
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
/// A fresh file in `/dev/shm` costs more than its bytes: its pages are
/// allocated and zeroed 4 KiB at a time when it is written, and freed when
/// it is evicted. So objects of 256 KiB and more are *segments*: evicting
/// one moves its file to the store's pool, and the next large object of
/// about its size (within a factor of two) is written over those pages,
/// already allocated: a large write then costs about a `memcpy`, from any
/// process using the store. A reader that still holds an evicted object
/// whose memory was taken meanwhile gets [`Error::MissingObject`] from the
/// store (the connector's reader fails with [`io::ErrorKind::NotFound`]),
/// never the next object's bytes: each segment's header names its object,
/// and is checked after every read (see `segment.rs`).
///
/// Smaller objects are one `writev` of all the parts into a fresh file (a
/// write through a memory map measured twice as slow: every page faults);
/// reads are one `read`, or a memory map from 64 KiB. Large objects are
/// read with `pread`, as their bytes may be reused. A tmpfs mounted with
/// `huge=within_size`, given with
/// [`base_dir`](SharedMemoryConnectorBuilder::base_dir), uses 2 MiB pages,
/// which makes fresh large files cheaper too and cuts the cost per page
/// of every read and write (`/dev/shm` is mounted without `huge=` on most
/// systems, and a process cannot change that).
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
    /// Evicted large objects, kept for reuse (see `segment.rs`).
    pool: Arc<Pool>,
}

/// Options of a [`SharedMemoryConnector`], from
/// [`SharedMemoryConnector::builder`].
#[derive(Clone, Debug)]
pub struct SharedMemoryConnectorBuilder {
    base: PathBuf,
    pool_limit: u64,
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

    /// How many bytes of evicted large objects the store keeps for reuse
    /// (512 MiB unless set; 0 keeps none, and every large object is then
    /// a fresh file, as a small one is). See [the speed
    /// notes](SharedMemoryConnector#speed).
    pub fn pool_limit(mut self, bytes: u64) -> Self {
        self.pool_limit = bytes;
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
        let options = Options {
            directory: dir,
            id,
            pool_limit: Some(self.pool_limit),
        };
        let connector = SharedMemoryConnector::with_options(options, true);
        // Watched before they exist: there is no moment when the
        // directories are there and a crash would leave them behind.
        let pool_dir = connector.pool.dir().to_path_buf();
        let watched = guardian::watch(&connector.dir).and_then(|()| {
            guardian::watch(&pool_dir).inspect_err(|_| guardian::forget(&connector.dir))
        });
        watched.map_err(|e| {
            Error::io(
                &connector.name,
                "starting the guardian process (/bin/sh)",
                e,
            )
        })?;
        let created = DirBuilder::new()
            .mode(0o700)
            .create(&connector.dir)
            .and_then(|()| DirBuilder::new().mode(0o700).create(&pool_dir));
        if let Err(e) = created {
            let _ = fs::remove_dir(&connector.dir);
            guardian::forget(&connector.dir);
            guardian::forget(&pool_dir);
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
    /// The pool's limit in bytes; absent in configurations of versions
    /// without a pool (the default then applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pool_limit: Option<u64>,
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
            pool_limit: segment::DEFAULT_POOL_LIMIT,
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
        let mut pool_dir = options.directory.clone().into_os_string();
        pool_dir.push(".pool");
        let limit = options.pool_limit.unwrap_or(segment::DEFAULT_POOL_LIMIT);
        SharedMemoryConnector {
            name: format!("shm({})", options.directory.display()),
            dir: options.directory,
            id: options.id,
            creator,
            verified: Arc::default(),
            pool: Arc::new(Pool::new(PathBuf::from(pool_dir), limit)),
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
            pool_limit: Some(self.pool.limit()),
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
        let path = self.path(key);
        if !segment::is_segment(size as u64) {
            return entries::write_object(&self.dir, key, &path, parts)
                .map_err(|e| self.err("writing", key, e));
        }
        // A large object goes over the pages of an evicted one where the
        // pool has one of about its size, else into a fresh file.
        let reused = self
            .pool
            .write(&self.dir, key, &path, parts, size as u64)
            .map_err(|e| self.err("writing", key, e))?;
        if reused {
            return Ok(());
        }
        let header = segment::new_header(key, size as u64);
        let mut with_header = Vec::with_capacity(parts.len() + 1);
        with_header.push(&header[..]);
        with_header.extend_from_slice(parts);
        entries::write_object(&self.dir, key, &path, &with_header)
            .map_err(|e| self.err("writing", key, e))
    }

    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        let Some((file, len)) = self.open_object(key)? else {
            return Ok(None);
        };
        // One copy, from the shared pages into the new buffer.
        let bytes = if segment::is_segment(len) {
            let read = segment::read_header(&file, len, key).and_then(|opened| match opened {
                Some(opened) => segment::read_whole(&file, &opened),
                None => Ok(None),
            });
            match read.map_err(|e| self.err("reading", key, e))? {
                Some(bytes) => bytes,
                // Evicted, and its memory taken by another object.
                None => return Ok(None),
            }
        } else {
            entries::read_whole(file, len).map_err(|e| self.err("reading", key, e))?
        };
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
        if segment::is_segment(len) {
            let opened =
                segment::read_header(&file, len, key).map_err(|e| self.err("reading", key, e))?;
            // `None`: evicted, and its memory taken by another object.
            return Ok(opened.map(|opened| {
                let len = opened.len;
                let reader: ObjectReader = Box::new(SegmentReader::new(file, opened));
                (reader, Some(len))
            }));
        }
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
        let path = self.path(key);
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.err("evicting", key, e)),
        };
        // A large object's memory goes to the pool, for the next one.
        if meta.is_file() && segment::is_segment(meta.len()) {
            match self.pool.give(&path, meta.len()) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(self.err("evicting", key, e)),
            }
        }
        entries::remove(&path)
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
        // After the objects: a writer can no longer bring a segment back
        // once the store's directory is gone.
        let foreign = self
            .pool
            .remove()
            .map_err(|e| Error::io(&self.name, "removing the pool of segments", e))?;
        if foreign > 0 {
            tracing::warn!(
                dir = %self.pool.dir().display(),
                foreign,
                "shm: kept the pool's directory: it holds files the store did not create"
            );
        }
        if !self.pool.dir().exists() {
            guardian::forget(self.pool.dir());
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
