//! The marker that makes a directory a file store.
//!
//! [`FileConnector::new`](super::FileConnector::new) writes `.proxystore`
//! into its directory, holding the store's identity (a random UUID that
//! is also in the connector's configuration). A connector rebuilt from a
//! configuration acts on a directory only if its marker names the same
//! identity, so a configuration that was tampered with cannot make a
//! process remove or overwrite files in a directory that is not a store.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

use uuid::Uuid;

use super::entries::{self, open_regular, OpenError, MARKER};
use super::FileConnector;
use crate::connectors::FromConfig;
use crate::error::{Error, Result};
use crate::key::Key;

const HEADER: &str = "proxystore file store";

fn invalid(dir: &Path, reason: impl std::fmt::Display) -> Error {
    Error::InvalidConfig {
        kind: FileConnector::KIND.into(),
        reason: format!(
            "{} holds a `{MARKER}` that is not a file store marker ({reason}); remove it or \
             use another directory",
            dir.display()
        ),
    }
}

/// The identity in `dir`'s marker, or `None` if there is no marker (or no
/// directory).
pub(super) fn read(dir: &Path, label: &str) -> Result<Option<Uuid>> {
    let path = dir.join(MARKER);
    let mut file = match open_regular(&path) {
        Ok((file, _)) => file,
        Err(OpenError::Missing) => return Ok(None),
        Err(OpenError::NotAFile(what)) => return Err(invalid(dir, format!("it is a {what}"))),
        Err(OpenError::Io(e)) => return Err(Error::io(label, "reading the store marker", e)),
    };
    // A marker is a few dozen bytes; never read more than that.
    let mut text = String::new();
    (&mut file)
        .take(128)
        .read_to_string(&mut text)
        .map_err(|e| Error::io(label, "reading the store marker", e))?;
    let mut lines = text.lines();
    match (
        lines.next(),
        lines.next().map(Uuid::try_parse),
        lines.next(),
    ) {
        (Some(HEADER), Some(Ok(id)), None) => Ok(Some(id)),
        _ => Err(invalid(dir, "unexpected contents")),
    }
}

/// The identity of the store in `dir`: the one its marker already names
/// (the directory is shared with, or was kept by, another store), or a new
/// one written into a new marker.
pub(super) fn adopt_or_create(dir: &Path, label: &str) -> Result<Uuid> {
    for _ in 0..4 {
        if let Some(id) = read(dir, label)? {
            return Ok(id);
        }
        let id = Uuid::new_v4();
        if create(dir, id).map_err(|e| Error::io(label, "writing the store marker", e))? {
            return Ok(id);
        }
        // Another process marked it first: read its identity.
    }
    Err(Error::io(
        label,
        "writing the store marker",
        io::Error::other("the marker kept appearing and disappearing"),
    ))
}

/// Writes a marker naming `id` unless there is one already (`false`).
///
/// The contents are written to a temporary file first and then linked to
/// the marker's name, which fails if the name exists: another process
/// never reads half a marker, and two processes never both win.
fn create(dir: &Path, id: Uuid) -> io::Result<bool> {
    let contents = format!("{HEADER}\n{id}\n");
    let marker = dir.join(MARKER);
    let (tmp, mut file) = entries::create_temporary(dir, &Key::new())?;
    let linked = file
        .write_all(contents.as_bytes())
        .and_then(|()| fs::hard_link(&tmp, &marker));
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        // A file system without hard links (some FUSE and SMB mounts):
        // create it in place; a process reading it at that very moment
        // sees a short marker and fails rather than guessing.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::Unsupported | io::ErrorKind::PermissionDenied
            ) =>
        {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&marker)
            {
                Ok(mut file) => file.write_all(contents.as_bytes()).map(|()| true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Removes the marker of `dir`, if any.
pub(super) fn remove(dir: &Path) -> io::Result<()> {
    entries::remove(&dir.join(MARKER)).map(drop)
}
