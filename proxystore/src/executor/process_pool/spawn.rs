//! Starting a worker process: this executable again, with the protocol on
//! descriptors 3 and 4 and its life tied to the pool's.

use std::ffi::OsString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::progress::{Starts, PROGRESS_ENV, PROGRESS_FD};
use super::worker::{REQUEST_FD, RESPONSE_FD, WORKER_ENV};

/// What to run as a worker.
#[derive(Debug, Clone)]
pub(super) struct Program {
    pub(super) path: PathBuf,
    pub(super) args: Vec<OsString>,
}

/// A started worker and the pool's ends of its pipes.
pub(super) struct Spawned {
    pub(super) child: Child,
    pub(super) requests: io::PipeWriter,
    pub(super) responses: io::PipeReader,
    /// Which job the worker last started (where the system allows).
    pub(super) progress: Option<Starts>,
}

/// Starts a worker. Call it from the thread that supervises the worker for
/// its whole life: on Linux the worker is killed when that thread ends (the
/// parent-death signal follows the thread that forked), which is what makes
/// workers exit when the pool's process dies, even by SIGKILL.
pub(super) fn spawn(program: &Program) -> io::Result<Spawned> {
    let (request_reader, request_writer) = io::pipe()?;
    let (response_reader, response_writer) = io::pipe()?;
    let (from, to) = (request_reader.as_raw_fd(), response_writer.as_raw_fd());
    enlarge_pipe(from);
    enlarge_pipe(to);
    let parent = std::process::id();
    let mut command = Command::new(&program.path);
    command
        .args(&program.args)
        .env(WORKER_ENV, "1")
        .stdin(Stdio::null());
    // Without a page the pool only loses precision after a worker's death
    // (every job it held counts as possibly started).
    let (progress, page) = match Starts::create() {
        Ok((progress, page)) => (Some(progress), Some(page)),
        Err(e) => {
            if e.kind() != io::ErrorKind::Unsupported {
                tracing::debug!(error = %e, "no progress page for a worker");
            }
            (None, None)
        }
    };
    let page_fd = page.as_ref().map(AsRawFd::as_raw_fd);
    if page_fd.is_some() {
        command.env(PROGRESS_ENV, "1");
    }
    // SAFETY: only async-signal-safe calls (prctl, getppid, fcntl, dup2,
    // close) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            die_with_parent(parent)?;
            place_descriptors(from, to, page_fd)
        });
    }
    let child = command.spawn()?;
    // Our copies of the child's ends must go, so that its death is seen as
    // end-of-file.
    drop((request_reader, response_writer, page));
    Ok(Spawned {
        child,
        requests: request_writer,
        responses: response_reader,
        progress,
    })
}

/// Asks for a 1 MiB pipe buffer (the most an unprivileged process gets by
/// default) instead of 64 KiB: large frames then cross in a few big copies
/// rather than many small ones, each a context switch. Best effort.
fn enlarge_pipe(fd: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: changes the capacity of a pipe this process owns.
    unsafe {
        libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
}

fn check(r: i32) -> io::Result<i32> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// In the child: SIGKILL when the forking thread of the pool goes away.
/// If the pool died before this point, the signal will never come: give up.
fn die_with_parent(parent: u32) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl and getppid are async-signal-safe.
    unsafe {
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0))?;
        if libc::getppid() as u32 != parent {
            return Err(io::Error::other("the pool exited while starting a worker"));
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = parent;
    Ok(())
}

/// Puts the request pipe on descriptor 3, the response pipe on 4 and the
/// progress page (if any) on 5, all inherited across exec (the worker makes
/// the pipes close-on-exec again, and unmaps and closes the page's
/// descriptor, before it runs any task).
fn place_descriptors(from: i32, to: i32, page: Option<i32>) -> io::Result<()> {
    // SAFETY: plain descriptor calls on descriptors this process owns.
    unsafe {
        // Move all out of the way first: any may already be 3, 4 or 5.
        let from_high = check(libc::fcntl(from, libc::F_DUPFD_CLOEXEC, 10))?;
        let to_high = check(libc::fcntl(to, libc::F_DUPFD_CLOEXEC, 10))?;
        let page_high = match page {
            Some(page) => Some(check(libc::fcntl(page, libc::F_DUPFD_CLOEXEC, 10))?),
            None => None,
        };
        check(libc::dup2(from_high, REQUEST_FD))?;
        check(libc::dup2(to_high, RESPONSE_FD))?;
        libc::close(from_high);
        libc::close(to_high);
        if let Some(page_high) = page_high {
            check(libc::dup2(page_high, PROGRESS_FD))?;
            libc::close(page_high);
        }
    }
    Ok(())
}
