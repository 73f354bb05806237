//! Large objects as segments whose memory is reused.
//!
//! Allocating the pages of a fresh file in `/dev/shm` (4 KiB at a time,
//! each zeroed) and freeing them when the object is evicted cost more than
//! copying the bytes in. So an object of at least [`SEGMENT_MIN`] bytes is
//! a *segment*: a [`HEADER_LEN`]-byte header, then the object. Evicting a
//! segment moves its file into the store's pool directory instead of
//! unlinking it; the next large write takes a segment of about its size
//! from there and writes over the pages it already has.
//!
//! # Readers of a reused segment
//!
//! A reader that opened an object before it was evicted holds the file,
//! which may since have been taken for another object. The header says
//! whose bytes the file holds: the key and a nonce drawn by each write.
//! A writer that takes a segment first overwrites its header with zeros,
//! then writes the body, then the header naming the new object, and only
//! then renames it to its key. A reader checks the header when it opens
//! the object and again after every read of the body: bytes read before a
//! header that still names the object and the same nonce were that
//! object's, because the new writer changes the header before any byte of
//! the body. Otherwise the read fails (the object is no longer in the
//! store) rather than return another object's bytes.
//!
//! Reads and writes of segments are `pread`/`pwrite` system calls, never a
//! memory map: the file's bytes may change under a reader, which a map
//! would expose to Rust code as memory that changes under a shared
//! reference.
//!
//! # What the pool holds
//!
//! The pool is a directory beside the store's, `proxystore-<uuid>.pool`,
//! made and guarded with it (the guardian removes it with the store's
//! directory when the creating process dies). Its files are named
//! `<size>.<uuid>.seg`; it holds at most [`MAX_SEGMENTS`] of them and at
//! most the pool limit in bytes: an eviction that would pass either first
//! unlinks the segments written longest ago (an object larger than the
//! limit is unlinked as before). They are tmpfs memory held for reuse
//! until the store is closed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicBool, Ordering};

use crate::key::Key;

/// Objects at least this large are written as segments (and smaller ones
/// as plain files, whose size alone tells them apart: a segment's file is
/// at least `SEGMENT_MIN + HEADER_LEN` bytes long).
pub(super) const SEGMENT_MIN: u64 = 256 << 10;

/// Bytes before a segment's object.
pub(super) const HEADER_LEN: usize = 64;

/// At most this many segments wait in the pool.
pub(super) const MAX_SEGMENTS: usize = 16;

/// The pool's default limit in bytes.
pub(super) const DEFAULT_POOL_LIMIT: u64 = 512 << 20;

const MAGIC: &[u8; 8] = b"PSSHMSG1";

/// Whether a file of `len` bytes in the store's directory is a segment.
pub(super) fn is_segment(len: u64) -> bool {
    len >= SEGMENT_MIN
}

/// The header of an object `len` bytes long under `key`, with `nonce`.
fn header(key: &Key, nonce: u64, len: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..44].copy_from_slice(key.as_str().as_bytes());
    h[48..56].copy_from_slice(&nonce.to_le_bytes());
    h[56..64].copy_from_slice(&len.to_le_bytes());
    h
}

/// The object's length, if `h` is a header naming `key`.
fn names(h: &[u8; HEADER_LEN], key: &Key) -> Option<u64> {
    (h[..8] == *MAGIC && h[8..44] == *key.as_str().as_bytes())
        .then(|| u64::from_le_bytes(h[56..64].try_into().expect("8 bytes")))
}

/// The header of the segment opened as `file` (`len` bytes long), and
/// the object's length, if it still holds `key`'s object; `None` if it was
/// evicted and taken for another object. An error if the file is too
/// short for the object its header announces.
pub(super) fn read_header(file: &File, len: u64, key: &Key) -> io::Result<Option<Opened>> {
    let mut h = [0u8; HEADER_LEN];
    file.read_exact_at(&mut h, 0)?;
    let Some(object_len) = names(&h, key) else {
        return Ok(None);
    };
    if object_len > len.saturating_sub(HEADER_LEN as u64) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the header announces {object_len} bytes, the file holds {len}"),
        ));
    }
    Ok(Some(Opened {
        header: h,
        len: object_len,
    }))
}

/// A segment found to hold the object asked for.
pub(super) struct Opened {
    header: [u8; HEADER_LEN],
    /// The object's length.
    pub(super) len: u64,
}

fn evicted() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        "the object was evicted, and its memory reused, while it was being read",
    )
}

/// Whether `file` still holds the object whose header was `expected`.
fn still_holds(file: &File, expected: &[u8; HEADER_LEN]) -> io::Result<bool> {
    // The body was read before the header is read again (see the module
    // documentation); the fence keeps the two reads in that order.
    fence(Ordering::SeqCst);
    let mut h = [0u8; HEADER_LEN];
    file.read_exact_at(&mut h, 0)?;
    Ok(h == *expected)
}

/// Reads a whole segment's object; `None` if it was evicted and its
/// memory reused before the read ended.
pub(super) fn read_whole(file: &File, opened: &Opened) -> io::Result<Option<Vec<u8>>> {
    let len = usize::try_from(opened.len)
        .map_err(|_| io::Error::other("the object is larger than the address space"))?;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, HEADER_LEN as u64)?;
    Ok(still_holds(file, &opened.header)?.then_some(bytes))
}

/// Reads a segment's object from its start, checking after every read that
/// the segment still holds it.
pub(super) struct SegmentReader {
    file: File,
    header: [u8; HEADER_LEN],
    pos: u64,
    len: u64,
}

impl SegmentReader {
    pub(super) fn new(file: File, opened: Opened) -> Self {
        SegmentReader {
            file,
            header: opened.header,
            pos: 0,
            len: opened.len,
        }
    }
}

impl Read for SegmentReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = self.len - self.pos;
        let n = usize::try_from(rest).unwrap_or(usize::MAX).min(buf.len());
        if n == 0 {
            return Ok(0);
        }
        self.file
            .read_exact_at(&mut buf[..n], HEADER_LEN as u64 + self.pos)?;
        if !still_holds(&self.file, &self.header)? {
            // Whatever was copied into `buf` may be another object's.
            buf[..n].fill(0);
            return Err(evicted());
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// The pool of evicted segments of one store (see the module
/// documentation).
#[derive(Debug)]
pub(super) struct Pool {
    dir: PathBuf,
    limit: u64,
    /// Whether `dir` was found to be a directory (not a link a forged
    /// configuration could point elsewhere); until then every use checks.
    verified: AtomicBool,
}

/// A segment taken from the pool, renamed to a temporary name of the
/// store's directory.
struct Taken {
    path: PathBuf,
    file: File,
}

impl Pool {
    pub(super) fn new(dir: PathBuf, limit: u64) -> Self {
        Pool {
            dir,
            limit,
            verified: AtomicBool::new(false),
        }
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether the pool's directory is there, and a directory.
    fn usable(&self) -> bool {
        if self.verified.load(Ordering::Acquire) {
            return true;
        }
        let usable = fs::symlink_metadata(&self.dir).is_ok_and(|meta| meta.is_dir());
        if usable {
            self.verified.store(true, Ordering::Release);
        }
        usable
    }

    /// The segments waiting in the pool: (size, file name). Empty if the
    /// pool directory is gone (the store was closed).
    fn segments(&self) -> io::Result<Vec<(u64, String)>> {
        if !self.usable() {
            return Ok(Vec::new());
        }
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in entries {
            let name = entry?.file_name();
            if let Some(size) = name.to_str().and_then(segment_size) {
                out.push((size, name.to_string_lossy().into_owned()));
            }
        }
        Ok(out)
    }

    /// Takes a segment for an object of `need` bytes (header included):
    /// the smallest at least that large, else the largest smaller one,
    /// among those within a factor of two of it. Renamed to a temporary
    /// name in `store_dir` for `key` and opened for writing.
    fn take(&self, store_dir: &Path, key: &Key, need: u64) -> io::Result<Option<Taken>> {
        if self.limit == 0 {
            return Ok(None);
        }
        let mut fits: Vec<(u64, String)> = self
            .segments()?
            .into_iter()
            .filter(|(size, _)| *size <= need.saturating_mul(2) && *size >= need / 2)
            .collect();
        // Large enough first, smallest first; then the largest of the rest.
        fits.sort_by_key(|(size, _)| {
            if *size >= need {
                (0, *size)
            } else {
                (1, u64::MAX - *size)
            }
        });
        for (_, name) in fits {
            let path = store_dir.join(super::entries::temporary_name(key));
            match fs::rename(self.dir.join(&name), &path) {
                Ok(()) => {}
                // Taken by another writer, or the store was closed.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            let opened = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .and_then(|file| {
                    // Only a segment is ever written over: a small object
                    // (read through a memory map) that an eviction racing
                    // with a replacement moved here is unlinked instead.
                    let meta = file.metadata()?;
                    if meta.is_file() && is_segment(meta.len()) {
                        Ok(file)
                    } else {
                        Err(io::Error::other("not a segment"))
                    }
                });
            match opened {
                Ok(file) => return Ok(Some(Taken { path, file })),
                Err(_) => {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        Ok(None)
    }

    /// Writes `key`'s object (`parts`, `len` bytes) at `target` into a
    /// segment from the pool; `false` if the pool had none that fits (then
    /// nothing was written).
    pub(super) fn write(
        &self,
        store_dir: &Path,
        key: &Key,
        target: &Path,
        parts: &[&[u8]],
        len: u64,
    ) -> io::Result<bool> {
        let Some(Taken { path, file }) = self.take(store_dir, key, HEADER_LEN as u64 + len)? else {
            return Ok(false);
        };
        let written = write_over(&file, key, parts, len).and_then(|()| fs::rename(&path, target));
        if written.is_err() {
            let _ = fs::remove_file(&path);
        }
        written.map(|()| true)
    }

    /// Moves the segment at `path` (`size` bytes) into the pool, making
    /// room by unlinking the segments written longest ago; `false` if it is
    /// larger than the pool's limit (or the pool is gone), and the segment
    /// was left where it is.
    pub(super) fn give(&self, path: &Path, size: u64) -> io::Result<bool> {
        if self.limit == 0 || size > self.limit || !self.usable() {
            return Ok(false);
        }
        let segments = self.segments()?;
        let mut held: u64 = segments.iter().map(|(s, _)| s).sum();
        if segments.len() >= MAX_SEGMENTS || held + size > self.limit {
            // The least recently written go first: what a workload uses
            // now stays, what an earlier phase left does not.
            let mut aged: Vec<(std::time::SystemTime, u64, String)> = segments
                .into_iter()
                .filter_map(|(s, name)| {
                    let meta = fs::symlink_metadata(self.dir.join(&name)).ok()?;
                    Some((meta.modified().ok()?, s, name))
                })
                .collect();
            aged.sort();
            let mut count = aged.len();
            for (_, s, name) in aged {
                if count < MAX_SEGMENTS && held + size <= self.limit {
                    break;
                }
                // Gone already: taken by a writer, or trimmed by another
                // eviction; either way no longer held.
                super::entries::remove(&self.dir.join(name))?;
                held -= s;
                count -= 1;
            }
        }
        let name = format!("{size}.{}.seg", &*Key::new().as_str());
        match fs::rename(path, self.dir.join(name)) {
            Ok(()) => Ok(true),
            // The pool is gone (the store was closed): unlink instead.
            Err(_) if !self.dir.exists() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes the pool's segments and its directory; the number of other
    /// entries found (kept, and keeping the directory).
    pub(super) fn remove(&self) -> io::Result<usize> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut foreign = 0;
        for entry in entries {
            let entry = entry?;
            let ours = entry.file_name().to_str().and_then(segment_size).is_some();
            if ours && !entry.file_type()?.is_dir() {
                super::entries::remove(&entry.path())?;
            } else {
                foreign += 1;
            }
        }
        match fs::remove_dir(&self.dir) {
            Ok(()) => Ok(0),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(_) if foreign > 0 => Ok(foreign),
            Err(e) => Err(e),
        }
    }
}

/// The size in a pool file's name `<size>.<uuid>.seg`.
fn segment_size(name: &str) -> Option<u64> {
    let (size, rest) = name.strip_suffix(".seg")?.split_once('.')?;
    let key = Key::parse(rest).ok()?;
    (*key.as_str() == *rest && !size.starts_with('+'))
        .then(|| size.parse().ok())
        .flatten()
}

/// Writes an object over a segment taken from the pool: header zeroed,
/// body, header naming the object (see the module documentation).
fn write_over(file: &File, key: &Key, parts: &[&[u8]], len: u64) -> io::Result<()> {
    file.write_all_at(&[0u8; HEADER_LEN], 0)?;
    // Readers of the segment's previous object must see the zeroed header
    // once they can see any byte of the new body.
    fence(Ordering::SeqCst);
    let mut at = HEADER_LEN as u64;
    for part in parts {
        file.write_all_at(part, at)?;
        at += part.len() as u64;
    }
    fence(Ordering::SeqCst);
    file.write_all_at(&header(key, nonce(), len), 0)
}

/// The header of a new segment of `key`'s object, `len` bytes long.
pub(super) fn new_header(key: &Key, len: u64) -> [u8; HEADER_LEN] {
    header(key, nonce(), len)
}

fn nonce() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_are_recognized() {
        let key = Key::new();
        assert_eq!(segment_size(&format!("1024.{key}.seg")), Some(1024));
        for foreign in [
            "1024.seg".to_string(),
            format!("+1.{key}.seg"),
            format!("x.{key}.seg"),
            format!("1024.{key}"),
            key.to_string(),
        ] {
            assert_eq!(segment_size(&foreign), None, "{foreign}");
        }
    }

    #[test]
    fn a_header_names_its_object_only() {
        let (a, b) = (Key::new(), Key::new());
        let h = header(&a, 7, 1 << 20);
        assert_eq!(names(&h, &a), Some(1 << 20));
        assert_eq!(names(&h, &b), None);
        assert_eq!(names(&[0u8; HEADER_LEN], &a), None);
    }
}
