//! Reading a pipe without paying for a sleep between close messages.
//!
//! A thread blocked in `read` on an idle core can take tens of microseconds
//! to wake on a virtual machine: more than a whole task round trip. After
//! each message, the readers here poll the pipe for a short while (yielding
//! the core to anything runnable) before they block again, so a steady
//! stream of small tasks never pays that wake-up.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long to poll before blocking: `PROXYSTORE_SPIN_US` microseconds
/// (default 50; 0 turns polling off).
pub(crate) fn spin_window() -> Duration {
    static WINDOW: OnceLock<Duration> = OnceLock::new();
    *WINDOW.get_or_init(|| {
        let us = std::env::var("PROXYSTORE_SPIN_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(50);
        Duration::from_micros(us)
    })
}

/// A pipe reader that polls for a while before blocking.
pub(crate) struct SpinReader<R> {
    inner: R,
    window: Duration,
}

impl<R: Read + AsFd> SpinReader<R> {
    pub(crate) fn new(inner: R) -> io::Result<Self> {
        let fd = inner.as_fd().as_raw_fd();
        // SAFETY: flag changes on a descriptor we own.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags == -1 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(SpinReader {
            inner,
            window: spin_window(),
        })
    }

    fn wait_readable(&self) -> io::Result<()> {
        let mut fds = libc::pollfd {
            fd: self.inner.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut fds, 1, -1) };
            if r >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl<R: Read + AsFd> Read for SpinReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut started: Option<Instant> = None;
        loop {
            match self.inner.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let since = *started.get_or_insert_with(Instant::now);
                    if since.elapsed() < self.window {
                        std::thread::yield_now();
                    } else {
                        self.wait_readable()?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}
