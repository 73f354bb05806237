//! Small objects written through a file that has no name until it is
//! complete (`O_TMPFILE`), then linked at the object's name.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};

use super::entries::write_parts;

/// How this process links an unnamed file to a name; see [`Unnamed::link`].
pub(super) static LINK_WAY: AtomicU8 = AtomicU8::new(LINK_UNTRIED);
pub(super) const LINK_UNTRIED: u8 = 0;
/// `linkat(fd, "", ..., AT_EMPTY_PATH)`: Linux 6.10 and later for any
/// process that opened the file itself, earlier with `CAP_DAC_READ_SEARCH`.
pub(super) const LINK_EMPTY_PATH: u8 = 1;
/// `linkat` of `/proc/self/fd/N` with `AT_SYMLINK_FOLLOW`.
pub(super) const LINK_PROC: u8 = 2;
/// Neither works here: never try unnamed files again in this process.
pub(super) const LINK_NONE: u8 = 3;

/// Writes `parts` into an unnamed file in `dir` and links it at `target`;
/// `Ok(false)` if that cannot be done here (the file system or the kernel
/// has no `O_TMPFILE`, linking it is refused) or if `target` is taken, and
/// nothing was created: the caller writes through a named temporary file
/// instead.
///
/// The link fails rather than replace what is at `target`, so an entry
/// planted there (a link, a directory) is left to the named path, which
/// handles it as it always did.
pub(in crate::connectors) fn write_unnamed(
    dir: &Path,
    target: &Path,
    parts: &[&[u8]],
) -> io::Result<bool> {
    let Some(file) = Unnamed::create(dir)? else {
        return Ok(false);
    };
    write_parts(&file.0, parts)?;
    file.link(target)
}

/// A file being written in a store directory without a name (`O_TMPFILE`):
/// no other process can open it, and it is freed if the writer dies before
/// [`link`](Unnamed::link) gives it one.
pub(in crate::connectors) struct Unnamed(pub(super) File);

impl Unnamed {
    /// A new unnamed file in `dir`; `None` where there are none (or they
    /// cannot be linked, as found earlier in this process).
    pub(in crate::connectors) fn create(dir: &Path) -> io::Result<Option<Unnamed>> {
        if LINK_WAY.load(Ordering::Relaxed) == LINK_NONE {
            return Ok(None);
        }
        match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .open(dir)
        {
            Ok(file) => Ok(Some(Unnamed(file))),
            // No O_TMPFILE on this file system (EOPNOTSUPP), or a kernel
            // that does not know the flag (EISDIR, EINVAL).
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Gives the file the name `target`, which must not exist: `Ok(false)`
    /// if it does, or if unnamed files cannot be linked here (then none is
    /// made again in this process).
    pub(in crate::connectors) fn link(self, target: &Path) -> io::Result<bool> {
        let linked = match LINK_WAY.load(Ordering::Relaxed) {
            LINK_EMPTY_PATH => link_at(&self.0, target, LINK_EMPTY_PATH),
            LINK_PROC => link_at(&self.0, target, LINK_PROC),
            _ => match link_at(&self.0, target, LINK_EMPTY_PATH) {
                Ok(()) => {
                    LINK_WAY.store(LINK_EMPTY_PATH, Ordering::Relaxed);
                    Ok(())
                }
                Err(e) if link_refused(&e) => link_at(&self.0, target, LINK_PROC).map(|()| {
                    LINK_WAY.store(LINK_PROC, Ordering::Relaxed);
                }),
                Err(e) => Err(e),
            },
        };
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) if link_refused(&e) => {
                // A directory removed meanwhile (the store was closed) also
                // fails with ENOENT: that says nothing of this process, and
                // the named path reports it.
                let gone = e.raw_os_error() == Some(libc::ENOENT)
                    && !target.parent().is_some_and(Path::is_dir);
                if !gone {
                    LINK_WAY.store(LINK_NONE, Ordering::Relaxed);
                }
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

/// Whether a failed `linkat` of an unnamed file means this way of linking
/// is not allowed here (rather than that this one write failed).
pub(super) fn link_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::EPERM | libc::EACCES | libc::EOPNOTSUPP | libc::EXDEV)
    )
}

/// One `linkat` of `file` to `target`, by `way` ([`LINK_EMPTY_PATH`] or
/// [`LINK_PROC`]).
pub(super) fn link_at(file: &File, target: &Path, way: u8) -> io::Result<()> {
    let target = CString::new(target.as_os_str().as_bytes())?;
    let fd = file.as_raw_fd();
    // SAFETY: linkat with NUL-terminated paths and a descriptor we own.
    let rc = unsafe {
        if way == LINK_EMPTY_PATH {
            libc::linkat(
                fd,
                c"".as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        } else {
            let source = CString::new(format!("/proc/self/fd/{fd}"))?;
            libc::linkat(
                libc::AT_FDCWD,
                source.as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        }
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
