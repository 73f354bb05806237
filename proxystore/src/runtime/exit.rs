//! How a child process ended, in words: the one description used wherever
//! an exit is reported (a pool worker that died, a cluster worker the
//! supervisor replaces).

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// `exited with status 3`, `killed by signal 9 (SIGKILL)`, `killed by
/// signal 11 (SIGSEGV), core dumped`, `stopped by signal 19 (SIGSTOP)`.
pub(crate) fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    if let Some(signal) = status.signal() {
        let core = if status.core_dumped() {
            ", core dumped"
        } else {
            ""
        };
        return format!("killed by {}{core}", signal_name(signal));
    }
    if let Some(signal) = status.stopped_signal() {
        return format!("stopped by {}", signal_name(signal));
    }
    if status.continued() {
        return "continued".to_string();
    }
    format!("ended with wait status {}", status.into_raw())
}

/// `signal 9 (SIGKILL)`, or `signal 42` for one without a usual name.
fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGURG => "SIGURG",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGWINCH => "SIGWINCH",
        libc::SIGIO => "SIGIO",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {signal}"),
    };
    format!("signal {signal} ({name})")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `waitpid` status word, described.
    fn describe_raw(status: i32) -> String {
        describe(ExitStatus::from_raw(status))
    }

    // Wait status words as `waitpid` writes them on Linux and the BSDs:
    // the exit code in the second byte, the signal in the low seven bits,
    // 0x80 for a core dump, 0x7f in the low byte for a stop.
    #[test]
    fn exits_and_signals_are_named() {
        assert_eq!(describe_raw(0), "exited with status 0");
        assert_eq!(describe_raw(3 << 8), "exited with status 3");
        assert_eq!(describe_raw(9), "killed by signal 9 (SIGKILL)");
        assert_eq!(describe_raw(15), "killed by signal 15 (SIGTERM)");
        assert_eq!(
            describe_raw(libc::SIGSEGV | 0x80),
            format!("killed by signal {} (SIGSEGV), core dumped", libc::SIGSEGV)
        );
        assert_eq!(
            describe_raw((libc::SIGSTOP << 8) | 0x7f),
            format!("stopped by signal {} (SIGSTOP)", libc::SIGSTOP)
        );
        assert_eq!(describe_raw(40), "killed by signal 40");
    }
}
