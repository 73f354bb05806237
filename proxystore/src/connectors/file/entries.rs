//! Opening a store directory's entries without following links or
//! blocking.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// What `file_type` is, in words, for errors about entries that are not
/// regular files.
pub(super) fn describe(file_type: fs::FileType) -> &'static str {
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
pub(super) enum OpenError {
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
/// be swapped between the check and the read.
pub(super) fn open_regular(path: &Path) -> Result<(File, u64), OpenError> {
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
    blocking(&file).map_err(OpenError::Io)?;
    Ok((file, meta.len()))
}

/// Clears `O_NONBLOCK` again, so the reader handed out behaves normally.
fn blocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with plain integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
