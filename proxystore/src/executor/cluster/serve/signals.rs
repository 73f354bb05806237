//! SIGTERM and SIGINT in worker mode: a handler that writes the signal's
//! number to a pipe (the only thing it does, which is async-signal-safe),
//! and a reader that waits on the pipe.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// The pipe's write end, once installed.
static WRITE_END: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    let fd = WRITE_END.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    // SAFETY: write(2) and errno are async-signal-safe; the byte lives on
    // this stack frame. errno is kept for the code the signal interrupted.
    unsafe {
        #[cfg(target_os = "linux")]
        let errno = *libc::__errno_location();
        let byte = signal as u8;
        let _ = libc::write(fd, (&byte as *const u8).cast(), 1);
        #[cfg(target_os = "linux")]
        {
            *libc::__errno_location() = errno;
        }
    }
}

/// The read end of the pipe that SIGTERM and SIGINT now write to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Signals(RawFd);

impl Signals {
    /// Installs the handler for SIGTERM and SIGINT (with `SA_RESTART`:
    /// interrupted reads resume).
    pub(crate) fn install() -> std::io::Result<Signals> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        WRITE_END.store(fds[1], Ordering::Release);
        for signal in [libc::SIGTERM, libc::SIGINT] {
            // SAFETY: the action is fully initialized (zeroed, an empty
            // mask, the handler's address); sigaction only reads it.
            let rc = unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(signal, &action, std::ptr::null_mut())
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(Signals(fds[0]))
    }

    /// The next signal received, waiting at most `timeout` (`None`: for
    /// ever).
    pub(crate) fn wait(self, timeout: Option<Duration>) -> Option<libc::c_int> {
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
        let mut poll = libc::pollfd {
            fd: self.0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut poll, 1, ms) } <= 0 {
            return None;
        }
        let mut byte = 0u8;
        // SAFETY: reads one byte into a local.
        let n = unsafe { libc::read(self.0, (&mut byte as *mut u8).cast(), 1) };
        (n == 1).then_some(libc::c_int::from(byte))
    }
}

/// A signal's name, for messages.
pub(crate) fn name(signal: libc::c_int) -> &'static str {
    match signal {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        _ => "a signal",
    }
}
