//! Reading a pipe without paying for a sleep between close messages.
//!
//! A thread blocked in `read` on an idle core can take tens of microseconds
//! to wake on a virtual machine: more than a whole task round trip. After
//! each message, the readers here poll the pipe for a short while (yielding
//! the core to anything runnable) before they block again, so a steady
//! stream of small tasks never pays that wake-up.
//!
//! Polling only pays when the next bytes come soon. Each reader keeps a
//! running average of how long it recently waited for input ([`Gaps`]),
//! polls for about twice that, and not at all when it exceeds the longest
//! poll: a reader whose input comes in slow, spaced-out messages (long
//! tasks, an idle pool) blocks at once and costs no CPU.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The longest poll before blocking: `PROXYSTORE_SPIN_US` microseconds
/// (default 150; 0 turns polling off). Each wait polls for less when recent
/// waits were shorter (see [`Gaps::window`]).
pub(crate) fn spin_window() -> Duration {
    static WINDOW: OnceLock<Duration> = OnceLock::new();
    *WINDOW.get_or_init(|| {
        let us = std::env::var("PROXYSTORE_SPIN_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(150);
        Duration::from_micros(us)
    })
}

/// A running average of recent waits for input: whether polling pays.
#[derive(Debug, Default)]
pub(crate) struct Gaps {
    /// Exponentially weighted mean of the last waits, in nanoseconds.
    mean_ns: std::sync::atomic::AtomicU64,
}

impl Gaps {
    /// Records a wait that ended with input.
    pub(crate) fn record(&self, waited: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let waited = waited.as_nanos().min(u64::MAX as u128 / 8) as u64;
        let mean = self.mean_ns.load(Relaxed);
        // Weight 1/4: a few long waits in a row turn polling off, a few
        // short ones turn it back on.
        self.mean_ns.store(mean - mean / 4 + waited / 4, Relaxed);
    }

    /// How long to poll before blocking, at most `max`: twice the recent
    /// mean wait (so that a wait of the usual length ends while polling),
    /// at least [`SHORT`], and nothing when recent waits were longer than
    /// `max` (polling would not catch the input and only burn the core).
    pub(crate) fn window(&self, max: Duration) -> Duration {
        let mean = Duration::from_nanos(self.mean_ns.load(std::sync::atomic::Ordering::Relaxed));
        if max.is_zero() || mean > max {
            return Duration::ZERO;
        }
        (2 * mean).clamp(SHORT.min(max), max)
    }
}

/// The shortest poll, and the only one while many tasks are waited for:
/// long enough to catch answers that come back to back.
const SHORT: Duration = Duration::from_micros(50);

/// Tasks of this process's executors not done yet. With more than
/// [`POLL_WHILE_WAITED_FOR`] of them, readers of answers poll only briefly
/// ([`SHORT`]): answers come back to back, and longer polls would take the
/// cores the workers need.
pub(crate) static TASKS_WAITED_FOR: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// See [`TASKS_WAITED_FOR`].
pub(crate) const POLL_WHILE_WAITED_FOR: usize = 2;

/// Whether this process waits for so many tasks that only short polls pay.
fn busy() -> bool {
    TASKS_WAITED_FOR.load(std::sync::atomic::Ordering::Relaxed) > POLL_WHILE_WAITED_FOR
}

/// Recent waits for a task's result in this process (see
/// [`Completion`](crate::executor::Completion)).
pub(crate) static RESULT_GAPS: Gaps = Gaps {
    mean_ns: std::sync::atomic::AtomicU64::new(0),
};

/// A pipe reader that polls for a while before blocking, while polling
/// pays (see [`Gaps`]).
pub(crate) struct SpinReader<R> {
    inner: R,
    window: Duration,
    gaps: Gaps,
    /// A process whose exit ends the input even if the pipe stays open
    /// (another process may hold its write end).
    writer: Option<OwnedFd>,
    writer_exited: bool,
    /// How long the middle of a message may go without a byte.
    stall: Option<Duration>,
    /// Whether a message's body is being read.
    pub(crate) in_body: bool,
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
            gaps: Gaps::default(),
            writer: None,
            writer_exited: false,
            stall: None,
            in_body: false,
        })
    }

    /// Fails a read with [`io::ErrorKind::TimedOut`] when no byte arrives
    /// for `limit` in the middle of a message's body (see `in_body`): a
    /// writer that announced more than it sends, then stays silent.
    pub(crate) fn stall_limit(mut self, limit: Duration) -> Self {
        self.stall = Some(limit);
        self
    }

    /// Ends the input (after what is already in the pipe) once process
    /// `pid` has exited, even if another process still holds the pipe's
    /// write end (a child the writer forked). Best effort: without
    /// `pidfd_open` (Linux 5.3), only end-of-file ends the input.
    pub(crate) fn until_exit_of(mut self, pid: u32) -> Self {
        self.writer = pidfd_open(pid);
        self
    }

    fn wait_readable(&mut self) -> io::Result<()> {
        let mut fds = [
            libc::pollfd {
                fd: self.inner.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.writer.as_ref().map_or(-1, |fd| fd.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let timeout = match (self.in_body, self.stall) {
            (true, Some(limit)) => limit.as_millis().min(i32::MAX as u128) as i32,
            _ => -1,
        };
        loop {
            // SAFETY: two valid pollfds (a negative fd is ignored).
            let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
            if r == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no byte of an announced message body arrived for {:?}",
                        self.stall.unwrap_or_default()
                    ),
                ));
            }
            if r > 0 {
                if fds[1].revents != 0 {
                    self.writer_exited = true;
                }
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a descriptor the call just opened for us alone.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(not(target_os = "linux"))]
fn pidfd_open(_pid: u32) -> Option<OwnedFd> {
    None
}

impl<R: Read + AsFd> Read for SpinReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut started: Option<(Instant, Duration)> = None;
        loop {
            match self.inner.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.writer_exited {
                        // Everything the writer sent has been read.
                        return Ok(0);
                    }
                    let (since, poll) = *started.get_or_insert_with(|| {
                        // Mid-body, the writer is sending and wakes the
                        // reader as it does: polling there only burns a core.
                        let poll = if self.in_body {
                            Duration::ZERO
                        } else if busy() {
                            SHORT.min(self.window)
                        } else {
                            self.gaps.window(self.window)
                        };
                        (Instant::now(), poll)
                    });
                    if since.elapsed() < poll {
                        std::thread::yield_now();
                    } else {
                        self.wait_readable()?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => {
                    // Waits between messages only; input that was waiting
                    // counts as no wait at all.
                    if !self.in_body {
                        self.gaps
                            .record(started.map_or(Duration::ZERO, |(since, _)| since.elapsed()));
                    }
                    return other;
                }
            }
        }
    }
}
