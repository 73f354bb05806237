//! The entries of a store directory: which are the store's, how they are
//! opened without following links or blocking, and how they are removed.
//!
//! The store owns exactly three kinds of entry, told apart by name alone:
//!
//! - objects: named by a key in its canonical form (36 characters,
//!   lowercase, hyphenated UUID);
//! - temporary files: `.<key>.<uuid>.tmp`, written and then renamed to an
//!   object; a name that starts with a dot can never be a key, so a reader
//!   never mistakes one for an object;
//! - the marker, [`MARKER`].
//!
//! Small objects take no temporary name at all: they are written into an
//! unnamed file (`O_TMPFILE`), which has no entry in the directory until
//! it is linked, complete, at its key (see [`write_object`]).
//!
//! Everything else (other names, and directories whatever their name) is
//! someone else's and is never touched.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::key::Key;

pub(in crate::connectors) use super::unnamed::write_unnamed;
#[cfg(test)]
use super::unnamed::*;

/// The file that marks a directory as a file store (see `marker.rs`).
pub(in crate::connectors) const MARKER: &str = ".proxystore";

/// What an entry of a store directory is to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::connectors) enum Entry {
    Object,
    Temporary,
    Marker,
    Foreign,
}

pub(in crate::connectors) fn classify(name: &OsStr) -> Entry {
    let Some(name) = name.to_str() else {
        return Entry::Foreign;
    };
    if name == MARKER {
        return Entry::Marker;
    }
    if is_key_name(name) {
        return Entry::Object;
    }
    let temporary = name
        .strip_prefix('.')
        .and_then(|n| n.strip_suffix(".tmp"))
        .and_then(|n| n.split_once('.'))
        .is_some_and(|(key, nonce)| is_key_name(key) && is_key_name(nonce));
    if temporary {
        Entry::Temporary
    } else {
        Entry::Foreign
    }
}

fn is_key_name(name: &str) -> bool {
    Key::parse(name).is_ok_and(|key| *key.as_str() == *name)
}

/// A new, unique temporary file name for an object being written to `key`.
pub(in crate::connectors) fn temporary_name(key: &Key) -> String {
    format!(".{}.{}.tmp", &*key.as_str(), &*Key::new().as_str())
}

/// What `file_type` is, in words, for errors about entries that are not
/// regular files.
pub(in crate::connectors) fn describe(file_type: fs::FileType) -> &'static str {
    if file_type.is_fifo() {
        "fifo"
    } else if file_type.is_symlink() {
        "symbolic link"
    } else if file_type.is_dir() {
        "directory"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

/// Why an entry could not be opened as a regular file.
pub(in crate::connectors) enum OpenError {
    /// Nothing there.
    Missing,
    /// Something that is not a regular file; the words say what.
    NotAFile(&'static str),
    Io(io::Error),
}

/// Opens the regular file at `path` for reading, refusing anything else.
///
/// The open itself never follows a symbolic link (`O_NOFOLLOW`) and never
/// waits for a writer (`O_NONBLOCK`, which a fifo would otherwise need);
/// the type is then checked on the opened descriptor, so the entry cannot
/// be swapped between the check and the read. `O_NONBLOCK` stays set: it
/// has no effect on reading a regular file (which never waits), and
/// clearing it would cost two more system calls per object.
pub(in crate::connectors) fn open_regular(path: &Path) -> Result<(File, u64), OpenError> {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(OpenError::Missing),
        Err(e) => {
            // `O_NOFOLLOW` reports a link as ELOOP on Linux and EMLINK or
            // EFTYPE elsewhere: ask the entry itself.
            return Err(match fs::symlink_metadata(path) {
                Ok(meta) if meta.file_type().is_symlink() => OpenError::NotAFile("symbolic link"),
                _ => OpenError::Io(e),
            });
        }
    };
    let meta = file.metadata().map_err(OpenError::Io)?;
    if !meta.is_file() {
        return Err(OpenError::NotAFile(describe(meta.file_type())));
    }
    Ok((file, meta.len()))
}

fn flock(file: &File, operation: libc::c_int) -> io::Result<()> {
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), operation) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Creates a temporary file for writing `key`, held under an exclusive
/// lock for as long as the returned file is open.
///
/// The lock is how [`sweep`] tells a file being written from one whose
/// writer died (the kernel drops the lock with the process). A sweep that
/// came between creation and locking may have removed the file as
/// abandoned; that is seen on the locked descriptor (no links left) and
/// another name is tried.
pub(in crate::connectors) fn create_temporary(
    dir: &Path,
    key: &Key,
) -> io::Result<(PathBuf, File)> {
    for _ in 0..4 {
        let path = dir.join(temporary_name(key));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        flock(&file, libc::LOCK_EX)?;
        if file.metadata()?.nlink() > 0 {
            return Ok((path, file));
        }
    }
    Err(io::Error::other(
        "temporary files kept disappearing while being created",
    ))
}

/// Objects up to this size are written through an unnamed file
/// ([`write_unnamed`]); larger ones through a named temporary file, whose
/// two extra system calls do not count beside the copy, and which a close
/// can see being written.
pub(in crate::connectors) const UNNAMED_UP_TO: usize = 1 << 20;

/// Writes the object `key` at `target` atomically, so that no reader ever
/// sees part of it and a writer that dies leaves nothing a reader can take.
///
/// A small object (up to [`UNNAMED_UP_TO`]) goes, where the file system
/// allows it (Linux's `O_TMPFILE`: ext4, xfs, btrfs, tmpfs), into a file
/// that has no name until it is complete, which is then linked at `target`
/// ([`write_unnamed`]): four system calls, no temporary name, no lock, and
/// a writer that dies leaves only an unnamed file that the kernel frees
/// with its last descriptor. Otherwise, or if something is at `target`
/// already (an object written again is replaced, as before), the `parts`
/// go into a fresh temporary file in `dir` (locked while it is written, see
/// [`create_temporary`]), which is then renamed into place; on failure the
/// temporary file is removed.
pub(in crate::connectors) fn write_object(
    dir: &Path,
    key: &Key,
    target: &Path,
    parts: &[&[u8]],
) -> io::Result<()> {
    let size: usize = parts.iter().map(|p| p.len()).sum();
    if size <= UNNAMED_UP_TO && write_unnamed(dir, target, parts)? {
        return Ok(());
    }
    write_named(dir, key, target, parts)
}

/// [`write_object`] through a named temporary file renamed into place.
fn write_named(dir: &Path, key: &Key, target: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let (path, file) = create_temporary(dir, key)?;
    // The lock lasts until `file` is dropped, after the rename.
    let written = write_parts(&file, parts).and_then(|()| fs::rename(&path, target));
    if written.is_err() {
        let _ = fs::remove_file(&path);
    }
    written
}

/// Writes all of `parts` to `file` with as few `writev` calls as the
/// kernel allows: large parts go from the caller's memory to the file in
/// one copy, small ones (headers) ride along in the same call.
pub(super) fn write_parts(mut file: &File, parts: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Objects up to this size are read with one `read` (see [`read_whole`]).
const ONE_READ: usize = 64 << 10;

/// Reads a whole object opened by [`open_regular`], `len` bytes long.
///
/// A small object (up to [`ONE_READ`]) is read into a buffer one byte
/// longer than `len`, so one `read` that returns `len` bytes (short of the
/// buffer: the end of a regular file) ends it, without a second `read` to
/// see the end; for larger ones that call is negligible beside the copy,
/// and the buffer is not zeroed first. The length only sizes the buffer; a
/// file that grew or shrank since (it cannot: objects are replaced, never
/// rewritten) would still be read whole.
pub(in crate::connectors) fn read_whole(mut file: File, len: u64) -> io::Result<Vec<u8>> {
    let want = usize::try_from(len).unwrap_or(usize::MAX);
    let mut bytes = Vec::new();
    if want < ONE_READ {
        // Zeroed, but only `len + 1` bytes of it.
        bytes.resize(want + 1, 0);
        let mut filled = 0;
        loop {
            match file.read(&mut bytes[filled..]) {
                Ok(0) => break,
                Ok(n) => {
                    filled += n;
                    if filled == want {
                        break;
                    }
                    if filled == bytes.len() {
                        // Longer than it was: read the rest the long way.
                        file.read_to_end(&mut bytes)?;
                        return Ok(bytes);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        bytes.truncate(filled);
        return Ok(bytes);
    }
    let _ = bytes.try_reserve_exact(want);
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Whether a temporary file is still being written.
enum Writer {
    Alive,
    /// Gone; the lock taken to find out is held (if the entry is a regular
    /// file) until the entry is removed, so a writer that raced us to the
    /// lock sees its file unlinked and starts over.
    Gone(Option<File>),
}

/// Whether the temporary file at `path` still has a writer.
///
/// Anything at a temporary name that is not a regular file is no writer's,
/// and counts as abandoned (it is unlinked, never followed).
fn writer(path: &Path) -> io::Result<Writer> {
    let file = match open_regular(path) {
        Ok((file, _)) => file,
        // Gone already: removing it again is harmless.
        Err(OpenError::Missing) | Err(OpenError::NotAFile(_)) => return Ok(Writer::Gone(None)),
        Err(OpenError::Io(e)) => return Err(e),
    };
    match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => Ok(Writer::Gone(Some(file))),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Writer::Alive),
        Err(e) => Err(e),
    }
}

/// What a [`sweep`] removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::connectors) enum Scope {
    /// Objects and every temporary file, being written or not.
    Everything,
    /// Only temporary files whose writers are gone.
    AbandonedTemporaries,
}

/// What a [`sweep`] found.
#[derive(Debug, Default)]
pub(in crate::connectors) struct Swept {
    /// Entries of the store's that were removed.
    pub(in crate::connectors) removed: usize,
    /// Entries that are not the store's (left alone).
    pub(in crate::connectors) foreign: usize,
}

/// Removes the store's own entries in `dir` within `scope`; `None` if the
/// directory does not exist.
///
/// Entries are unlinked, never followed: a key-named symbolic link loses
/// the link, and its target stays. Directories are never entered nor
/// removed, whatever their name.
pub(in crate::connectors) fn sweep(dir: &Path, scope: Scope) -> io::Result<Option<Swept>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut swept = Swept::default();
    for entry in entries {
        let entry = entry?;
        let kind = classify(&entry.file_name());
        let file_type = match entry.file_type() {
            Ok(file_type) => file_type,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if file_type.is_dir() {
            swept.foreign += 1;
            continue;
        }
        let path = entry.path();
        let removed = match (kind, scope) {
            (Entry::Object, Scope::Everything) | (Entry::Temporary, Scope::Everything) => {
                remove(&path)?
            }
            (Entry::Temporary, Scope::AbandonedTemporaries) => match writer(&path)? {
                Writer::Gone(_lock) => remove(&path)?,
                Writer::Alive => false,
            },
            (Entry::Foreign, _) => {
                swept.foreign += 1;
                false
            }
            _ => false,
        };
        swept.removed += usize::from(removed);
    }
    Ok(Some(swept))
}

/// The keys of the objects in `dir`: regular files named by a key (a
/// key-named link, directory or fifo is not an object, as reads refuse it);
/// `None` if the directory does not exist. Nothing is followed or opened.
pub(in crate::connectors) fn list_objects(dir: &Path) -> io::Result<Option<Vec<Key>>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut keys = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if classify(&name) != Entry::Object {
            continue;
        }
        // The entry's own type (`lstat`): a link is not followed.
        match entry.file_type() {
            Ok(file_type) if file_type.is_file() => {}
            Ok(_) => continue,
            // Evicted since the directory was read.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
        if let Some(key) = name.to_str().and_then(|n| Key::parse(n).ok()) {
            keys.push(key);
        }
    }
    Ok(Some(keys))
}

/// Unlinks `path`; `false` if it was already gone.
pub(in crate::connectors) fn remove(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn names_are_told_apart() {
        let key = Key::new();
        let name = |s: &str| classify(OsStr::new(s));
        assert_eq!(name(&key.to_string()), Entry::Object);
        assert_eq!(name(&key.to_string().to_uppercase()), Entry::Foreign);
        assert_eq!(name(&temporary_name(&key)), Entry::Temporary);
        assert_eq!(name(MARKER), Entry::Marker);
        for foreign in [".bashrc", "notes.txt", ".x.tmp", ".a.b.tmp", ""] {
            assert_eq!(name(foreign), Entry::Foreign, "{foreign}");
        }
        let temporary = temporary_name(&key);
        assert_eq!(name(&temporary[1..]), Entry::Foreign);
    }

    /// The store directories to try: a temporary one (the default file
    /// system) and, where there is one, one on tmpfs.
    fn dirs() -> Vec<tempfile::TempDir> {
        let mut dirs = vec![tempfile::tempdir().unwrap()];
        if Path::new("/dev/shm").is_dir() {
            dirs.push(tempfile::tempdir_in("/dev/shm").unwrap());
        }
        dirs
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn an_unnamed_file_is_seen_only_once_linked_complete() {
        for dir in dirs() {
            let Some(file) = Unnamed::create(dir.path()).unwrap() else {
                continue; // no O_TMPFILE here: the named path is used
            };
            write_parts(&file.0, &[b"head", b"", b"body"]).unwrap();
            assert_eq!(listing(dir.path()), Vec::<String>::new());
            let target = dir.path().join(Key::new().as_str());
            assert!(file.link(&target).unwrap());
            assert_eq!(fs::read(&target).unwrap(), b"headbody");
            assert_eq!(listing(dir.path()).len(), 1);
        }
    }

    #[test]
    fn an_unnamed_file_never_linked_leaves_nothing() {
        for dir in dirs() {
            if let Some(file) = Unnamed::create(dir.path()).unwrap() {
                write_parts(&file.0, &[b"half an object"]).unwrap();
                drop(file); // the writer is gone before the link
            }
            assert_eq!(listing(dir.path()), Vec::<String>::new());
        }
    }

    #[test]
    fn both_ways_of_linking_an_unnamed_file_work() {
        for dir in dirs() {
            for way in [LINK_EMPTY_PATH, LINK_PROC] {
                let Some(file) = Unnamed::create(dir.path()).unwrap() else {
                    continue;
                };
                write_parts(&file.0, &[b"bytes"]).unwrap();
                let target = dir.path().join(Key::new().as_str());
                match link_at(&file.0, &target, way) {
                    Ok(()) => assert_eq!(fs::read(&target).unwrap(), b"bytes"),
                    // Not allowed for this process (an older kernel without
                    // the capability, or no /proc): `link` falls back.
                    Err(e) => assert!(link_refused(&e), "{e}"),
                }
            }
        }
    }

    #[test]
    fn an_unnamed_file_never_replaces_what_is_at_its_name() {
        for dir in dirs() {
            let target = dir.path().join(Key::new().as_str());
            fs::write(&target, b"old").unwrap();
            if let Some(file) = Unnamed::create(dir.path()).unwrap() {
                write_parts(&file.0, &[b"new"]).unwrap();
                assert!(!file.link(&target).unwrap());
            }
            assert_eq!(fs::read(&target).unwrap(), b"old");
            assert!(!write_unnamed(dir.path(), &target, &[b"new"]).unwrap());
            assert_eq!(fs::read(&target).unwrap(), b"old");
        }
    }

    #[test]
    fn writing_an_object_again_replaces_it_whatever_its_size() {
        for dir in dirs() {
            let key = Key::new();
            let target = dir.path().join(key.as_str());
            let large = vec![7u8; UNNAMED_UP_TO + 1];
            for bytes in [&b"first"[..], &large, b"third", b""] {
                write_object(dir.path(), &key, &target, &[bytes]).unwrap();
                assert_eq!(fs::read(&target).unwrap(), bytes);
            }
            // Nothing else was left behind: no temporary file, no copy.
            assert_eq!(listing(dir.path()), [key.to_string()]);
        }
    }

    #[test]
    fn writing_over_a_planted_link_replaces_the_link_not_its_target() {
        for dir in dirs() {
            let outside = dir.path().join("secret.txt");
            fs::write(&outside, b"secret").unwrap();
            let key = Key::new();
            let target = dir.path().join(key.as_str());
            std::os::unix::fs::symlink(&outside, &target).unwrap();
            write_object(dir.path(), &key, &target, &[b"object"]).unwrap();
            assert!(fs::symlink_metadata(&target).unwrap().is_file());
            assert_eq!(fs::read(&target).unwrap(), b"object");
            assert_eq!(fs::read(&outside).unwrap(), b"secret");
        }
    }

    #[test]
    fn small_and_large_objects_get_the_same_permissions() {
        for dir in dirs() {
            let (small, large) = (Key::new(), Key::new());
            let mode = |key: &Key| {
                let target = dir.path().join(key.as_str());
                fs::metadata(target).unwrap().permissions().mode()
            };
            write_object(
                dir.path(),
                &small,
                &dir.path().join(small.as_str()),
                &[b"x"],
            )
            .unwrap();
            let big = vec![1u8; UNNAMED_UP_TO + 1];
            write_object(
                dir.path(),
                &large,
                &dir.path().join(large.as_str()),
                &[&big],
            )
            .unwrap();
            assert_eq!(mode(&small), mode(&large));
        }
    }

    #[test]
    fn read_whole_reads_the_whole_file_whatever_length_it_was_told() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("object");
        for size in [
            0,
            1,
            100,
            ONE_READ - 1,
            ONE_READ,
            ONE_READ + 1,
            3 * ONE_READ,
        ] {
            let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            fs::write(&path, &bytes).unwrap();
            let lens = [size as u64, 0, size as u64 / 2, size as u64 + 10, u64::MAX];
            for len in lens {
                let read = read_whole(File::open(&path).unwrap(), len).unwrap();
                assert_eq!(read, bytes, "size {size}, told {len}");
            }
        }
    }
}
