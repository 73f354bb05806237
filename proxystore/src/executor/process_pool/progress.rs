//! A word of memory the pool shares with each worker, where the worker
//! writes which job it is about to start.
//!
//! When a worker dies, its unanswered jobs are of two kinds: those it may
//! have started (the running one, and any whose answer was lost with it)
//! and those still waiting in its queue. Only the first kind may have had
//! effects. A worker runs its jobs one at a time, in the order they were
//! sent, so the last job it started splits them: every job sent after that
//! one never started, and runs on another worker instead of failing with
//! the dead worker's (a worker killed for a forged answer, or crashed by
//! its running task, then takes only that task down).
//!
//! The word is a page of a `memfd` on Linux, passed to the worker as
//! descriptor [`PROGRESS_FD`]. Elsewhere there is none, and every job a
//! dead worker held counts as possibly started.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the page holds until the worker has mapped it: a worker that never
/// does (it cannot map it, or it is another program) tells nothing, and
/// then every job it held counts as possibly started.
const SILENT: u64 = u64::MAX;

/// The worker's descriptor of the page (after the protocol's 3 and 4).
pub(crate) const PROGRESS_FD: i32 = 5;

/// Set in a worker's environment when [`PROGRESS_FD`] is its page.
pub(crate) const PROGRESS_ENV: &str = "PROXYSTORE_WORKER_PROGRESS";

/// A shared mapping of one `u64`: [`SILENT`] until the worker has mapped
/// it, then the id of the last job started plus one (0: none yet).
struct Word(NonNull<AtomicU64>);

// SAFETY: the mapping is only ever accessed through the atomic.
unsafe impl Send for Word {}
// SAFETY: as above.
unsafe impl Sync for Word {}

impl Word {
    fn map(fd: i32, writable: bool) -> io::Result<Word> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh shared mapping of a descriptor we own; the kernel
        // picks the address. The object is at least 8 bytes long (the pool
        // sized it), and page-aligned memory is aligned for an AtomicU64.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size_of::<u64>(),
                prot,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(ptr.cast::<AtomicU64>())
            .map(Word)
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))
    }

    fn get(&self) -> &AtomicU64 {
        // SAFETY: mapped in `map` and unmapped only in `drop`.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for Word {
    fn drop(&mut self) {
        // SAFETY: our own mapping, of this length, used by nobody after
        // this.
        unsafe {
            libc::munmap(self.0.as_ptr().cast(), size_of::<u64>());
        }
    }
}

/// The pool's view of one worker's progress.
pub(super) struct Starts(Word);

impl Starts {
    /// A fresh page, and the descriptor the worker must receive as
    /// [`PROGRESS_FD`] (close-on-exec in this process).
    #[cfg(target_os = "linux")]
    pub(super) fn create() -> io::Result<(Starts, std::os::fd::OwnedFd)> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        // SAFETY: memfd_create with a valid C string; the descriptor it
        // returns is ours alone.
        let fd = unsafe {
            let fd = libc::memfd_create(c"proxystore-progress".as_ptr(), libc::MFD_CLOEXEC);
            if fd == -1 {
                return Err(io::Error::last_os_error());
            }
            OwnedFd::from_raw_fd(fd)
        };
        // SAFETY: sizes a memory file we own.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size_of::<u64>() as libc::off_t) } == -1 {
            return Err(io::Error::last_os_error());
        }
        let word = Word::map(fd.as_raw_fd(), true)?;
        word.get().store(SILENT, Ordering::Release);
        Ok((Starts(word), fd))
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn create() -> io::Result<(Starts, std::os::fd::OwnedFd)> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no shared progress page on this system",
        ))
    }

    /// The last job the worker said it was starting: `None` if it never
    /// reported (it cannot tell), `Some(None)` if it started none.
    pub(super) fn started(&self) -> Option<Option<u64>> {
        match self.0.get().load(Ordering::Acquire) {
            SILENT => None,
            n => Some(n.checked_sub(1)),
        }
    }
}

/// The worker's side: tells the pool which job it starts.
pub(crate) struct Reporter(Word);

impl Reporter {
    /// The page the pool passed, if it passed one: maps it and closes the
    /// descriptor, so that no task can find it among the process's
    /// descriptors nor any program a task starts inherit it.
    pub(crate) fn take() -> Option<Reporter> {
        std::env::var_os(PROGRESS_ENV)?;
        std::env::remove_var(PROGRESS_ENV);
        let word = Word::map(PROGRESS_FD, true);
        // SAFETY: the pool placed this descriptor for us alone; the
        // mapping outlives it.
        unsafe {
            libc::close(PROGRESS_FD);
        }
        match word {
            Ok(word) => {
                // Mapped: from now on the pool can tell what started.
                word.get().store(0, Ordering::Release);
                Some(Reporter(word))
            }
            Err(e) => {
                eprintln!(
                    "proxystore worker {}: cannot map the progress page: {e}",
                    std::process::id()
                );
                None
            }
        }
    }

    /// Job `id` starts now (before any of its code runs).
    pub(crate) fn starting(&self, id: u64) {
        self.0.get().store(id.wrapping_add(1), Ordering::Release);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn what_the_worker_writes_the_pool_reads() {
        let (progress, fd) = Starts::create().unwrap();
        // A worker that never maps the page tells nothing.
        assert_eq!(progress.started(), None);
        let worker = Word::map(fd.as_raw_fd(), true).unwrap();
        worker.get().store(0, Ordering::Release);
        let worker = Reporter(worker);
        assert_eq!(progress.started(), Some(None));
        worker.starting(0);
        assert_eq!(progress.started(), Some(Some(0)));
        worker.starting(41);
        assert_eq!(progress.started(), Some(Some(41)));
    }
}
