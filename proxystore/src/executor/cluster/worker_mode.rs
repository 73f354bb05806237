//! Worker mode: a program started with [`CLUSTER_ENV`] set serves its
//! queue (with [`WORKERS_ENV`], through a supervisor of that many worker
//! processes) instead of running its `main`.

use std::time::Duration;

use super::*;
use crate::error::{Error, Result};

/// Serves the queue named by the environment if [`CLUSTER_ENV`] is set
/// (never returning); returns otherwise.
pub(crate) fn serve_from_env() {
    let Some(url) = std::env::var_os(CLUSTER_ENV) else {
        return;
    };
    // The program's own arguments are its own; only a request for help is
    // answered in worker mode (the program's usage would not say how a
    // worker is set up).
    if std::env::args_os()
        .skip(1)
        .any(|a| a == "--help" || a == "-h")
    {
        print!("{}", worker_usage());
        std::process::exit(0);
    }
    let url = url.to_string_lossy().into_owned();
    let queue = std::env::var(QUEUE_ENV).unwrap_or_else(|_| "default".into());
    let signals = match serve::Signals::install() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("proxystore cluster worker: cannot handle SIGTERM: {e}");
            std::process::exit(1);
        }
    };
    if let Some(n) = std::env::var_os(WORKERS_ENV) {
        std::process::exit(supervise(&n.to_string_lossy(), signals));
    }
    let drain = match std::env::var(DRAIN_ENV).map(|v| v.parse::<u64>().map_err(|_| v)) {
        Err(_) => Duration::from_secs(20),
        Ok(Ok(ms)) => Duration::from_millis(ms),
        Ok(Err(v)) => {
            eprintln!(
                "proxystore cluster worker: {DRAIN_ENV}={v:?} is not a number of milliseconds"
            );
            std::process::exit(2);
        }
    };
    let settings = settings_from_env();
    let secret = auth::secret_from_env();
    // Only this thread runs yet (worker mode is entered first thing in
    // main): programs that tasks start do not inherit worker mode, nor
    // see the secret.
    for var in [CLUSTER_ENV, QUEUE_ENV, SECRET_ENV, SECRET_FILE_ENV] {
        std::env::remove_var(var);
    }
    let code = match settings
        .and_then(|s| ClusterWorker::new(&url, &queue)?.settings(s))
        .and_then(|w| w.with_secret(secret?))
        .map(|w| w.with_signals(signals, drain))
        .and_then(ClusterWorker::run)
    {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("proxystore cluster worker {}: {e}", std::process::id());
            1
        }
    };
    std::process::exit(code);
}

/// What a program in cluster worker mode prints for `--help`.
fn worker_usage() -> String {
    format!(
        "This program is in proxystore cluster worker mode ({CLUSTER_ENV} is set): it serves \
         a queue of\na multi-host executor and runs the tasks its callers submit.\n\n\
         Environment:\n  \
         {CLUSTER_ENV}=redis://host:port/db   the queue's Redis server (credentials allowed)\n  \
         {QUEUE_ENV}=NAME                     the queue to serve (default: default)\n  \
         {WORKERS_ENV}=N                      supervise N worker processes instead of serving\n  \
         {SECRET_FILE_ENV}=PATH  a file holding the queue's secret\n  \
         {SECRET_ENV}=SECRET          the queue's secret itself\n  \
         PROXYSTORE_HEARTBEAT_MS, PROXYSTORE_HEARTBEAT_TTL_MS, PROXYSTORE_LEASE_MS,\n  \
         PROXYSTORE_REAP_MS                     timings (see Settings), in milliseconds\n  \
         {DRAIN_ENV}=MS                      on SIGTERM/SIGINT, how long the running job may \
         take\n                                         before it is handed back (default \
         20000)\n\n\
         On SIGTERM or SIGINT the worker takes no new job, finishes (or hands back) the one \
         it runs,\nleaves the queue and exits 0.\n"
    )
}

/// Runs `count` worker processes (this executable again, without
/// [`WORKERS_ENV`]) and replaces each one that exits; never returns unless
/// `count` is invalid or no worker can be started. The workers die with
/// the supervisor (parent-death signal), so killing it stops the host.
fn supervise(count: &str, signals: serve::Signals) -> i32 {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let Ok(count) = count.parse::<usize>() else {
        eprintln!("proxystore cluster supervisor: {WORKERS_ENV}={count:?} is not a number");
        return 2;
    };
    let count = count.max(1);
    let Ok(exe) = std::env::current_exe() else {
        eprintln!("proxystore cluster supervisor: cannot find this executable");
        return 1;
    };
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let supervisor = std::process::id();
    let spawn = || {
        let mut command = std::process::Command::new(&exe);
        command.args(&args).env_remove(WORKERS_ENV);
        // SAFETY: prctl and getppid are async-signal-safe; nothing else
        // runs between fork and exec.
        unsafe {
            command.pre_exec(move || {
                #[cfg(target_os = "linux")]
                {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if libc::getppid() as u32 != supervisor {
                        return Err(std::io::Error::other("the supervisor exited"));
                    }
                }
                Ok(())
            });
        }
        command.spawn()
    };
    let mut workers: std::collections::HashMap<u32, (std::process::Child, std::time::Instant)> =
        std::collections::HashMap::new();
    let mut failures = 0u32;
    loop {
        while workers.len() < count {
            match spawn() {
                Ok(child) => {
                    workers.insert(child.id(), (child, std::time::Instant::now()));
                }
                Err(e) => {
                    failures += 1;
                    eprintln!("proxystore cluster supervisor: cannot start a worker: {e}");
                    if failures > 10 && workers.is_empty() {
                        return 1;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        if let Some(signal) = signals.wait(Some(Duration::from_millis(200))) {
            // Each worker drains (finishes or hands back its job) and
            // exits; then so does the supervisor.
            for pid in workers.keys() {
                // SAFETY: kill has no memory preconditions.
                unsafe { libc::kill(*pid as i32, signal) };
            }
            for (_, (mut child, _)) in workers.drain() {
                let _ = child.wait();
            }
            return 0;
        }
        let mut status = 0;
        // SAFETY: waitpid writes only to `status`.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            continue;
        }
        if let Some((_, started)) = workers.remove(&(pid as u32)) {
            eprintln!(
                "proxystore cluster supervisor: worker {pid} {}; starting another",
                crate::runtime::exit::describe(std::process::ExitStatus::from_raw(status))
            );
            // A worker that dies at once (a bad URL, a task that crashes
            // every worker) is not restarted in a tight loop.
            if started.elapsed() < Duration::from_secs(1) {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// [`Settings`] with the overrides of `PROXYSTORE_HEARTBEAT_MS`,
/// `PROXYSTORE_HEARTBEAT_TTL_MS`, `PROXYSTORE_LEASE_MS` and
/// `PROXYSTORE_REAP_MS`.
fn settings_from_env() -> Result<Settings> {
    let mut s = Settings::default();
    for (var, field) in [
        ("PROXYSTORE_HEARTBEAT_MS", &mut s.heartbeat),
        ("PROXYSTORE_HEARTBEAT_TTL_MS", &mut s.heartbeat_ttl),
        ("PROXYSTORE_LEASE_MS", &mut s.lease),
        ("PROXYSTORE_REAP_MS", &mut s.reap_every),
    ] {
        if let Ok(v) = std::env::var(var) {
            let ms: u64 = v.parse().map_err(|_| Error::InvalidConfig {
                kind: "cluster queue".into(),
                reason: format!("{var}={v:?} is not a number of milliseconds"),
            })?;
            *field = Duration::from_millis(ms);
        }
    }
    s.check()?;
    Ok(s)
}
