//! Read-only memory maps of stored objects, and a reader over one.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::io::AsRawFd;
use std::ptr::NonNull;

/// A read-only, shared memory map of a whole object file.
pub(super) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is read-only memory owned by this value; reading it
// from any thread is as safe as reading a `Box<[u8]>`.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only gives out `&[u8]`.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `file` (its size when it was opened).
    ///
    /// An empty object maps nothing (`mmap` refuses a length of 0).
    pub(super) fn new(file: &File, len: u64) -> io::Result<Self> {
        let len = usize::try_from(len)
            .map_err(|_| io::Error::other("the object is larger than the address space"))?;
        if len == 0 {
            return Ok(Mapping {
                ptr: NonNull::dangling(),
                len: 0,
            });
        }
        // SAFETY: a fresh mapping chosen by the kernel (no address hint),
        // of a descriptor we own, read-only. What makes reading it sound
        // is said at `as_slice`.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).expect("mmap never returns null on success");
        Ok(Mapping { ptr, len })
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is a live read-only mapping (or `len` is
        // 0). Its contents never change and never shrink while it is
        // mapped, because the objects that are mapped (those smaller than
        // a segment, see `segment.rs`) are immutable once they have a name:
        // - a store writes such an object into a temporary file and renames
        //   it into place; no store code ever opens one for writing,
        //   truncates or extends it. Only segments are written over after
        //   an eviction, and only after checking (on the opened file) that
        //   the file is one; they are read with `pread`, never mapped;
        // - replacing an object renames another file over its name and
        //   evicting it unlinks it: both leave this inode, and so this
        //   mapping, intact until it is unmapped;
        // - the directory is private to its user (mode 0700), so only that
        //   user's processes could rewrite a file in it. One that truncated
        //   an object would make reads of this mapping fault (SIGBUS): the
        //   same contract as any file mapping, documented on the connector.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping exactly what `new` mapped, once; no slice
            // of it outlives `self`.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
}

/// Reads a mapped object from its start: every read is one copy from the
/// shared pages into the caller's buffer, with no system call.
pub(super) struct MappedReader {
    map: Mapping,
    pos: usize,
}

impl MappedReader {
    pub(super) fn new(map: Mapping) -> Self {
        MappedReader { map, pos: 0 }
    }

    fn rest(&self) -> &[u8] {
        &self.map.as_slice()[self.pos..]
    }
}

impl Read for MappedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = self.rest();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let rest = self.rest();
        if rest.len() < buf.len() {
            self.pos = self.map.len;
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.copy_from_slice(&rest[..buf.len()]);
        self.pos += buf.len();
        Ok(())
    }

    fn read_to_end(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let n = self.rest().len();
        buf.try_reserve_exact(n).map_err(io::Error::other)?;
        buf.extend_from_slice(self.rest());
        self.pos = self.map.len;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_a_mapped_file_in_pieces() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"hello mapped world").unwrap();
        let mut reader = MappedReader::new(Mapping::new(&file, 18).unwrap());
        let mut head = [0u8; 6];
        reader.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"hello ");
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"mapped world");
        assert!(reader.read_exact(&mut head).is_err());
        let empty = Mapping::new(&file, 0).unwrap();
        assert!(empty.as_slice().is_empty());
    }
}
