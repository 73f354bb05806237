//! Faults around worker processes, done for real: workers that break the
//! protocol, are stopped or killed, tasks that exit or start programs, a
//! pool's process killed from outside. None may crash or hang the caller,
//! lose a finished result, or leave work running.

mod support;

use support::common::unique;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxystore::connectors::LocalConnector;
use proxystore::executor::ProcessPool;
use proxystore::{proxied, Error, Store, StoreExecutor};

proxystore::test_worker!();

#[proxied]
fn double(x: i64) -> i64 {
    x * 2
}

/// Sleeps, then says which process ran it.
#[proxied]
fn pid_after(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

/// Writes `dir/name` when it starts, then sleeps.
#[proxied]
fn mark(dir: PathBuf, name: String, ms: u64) -> u32 {
    std::fs::write(dir.join(name), b"started").unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

#[proxied]
fn exit_now(code: i32) -> i32 {
    std::process::exit(code)
}

#[proxied]
fn echo(bytes: Vec<u8>) -> usize {
    bytes.len()
}

/// Runs a shell command and returns what it printed.
#[proxied]
fn shell(script: String) -> String {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Forks (without exec) a copy that sleeps, writes its pid to `pidfile`,
/// then sleeps too.
#[proxied]
fn fork_and_sleep(pidfile: PathBuf) -> u32 {
    // SAFETY: the copy only calls async-signal-safe functions.
    let copy = unsafe { libc::fork() };
    if copy == 0 {
        unsafe {
            libc::sleep(30);
            libc::_exit(0);
        }
    }
    std::fs::write(pidfile, copy.to_string()).unwrap();
    std::thread::sleep(Duration::from_secs(30));
    0
}

/// Writes `bytes` on the worker's answer descriptor, as a broken task
/// (or memory corruption) would.
#[proxied]
fn scribble(bytes: Vec<u8>) -> u32 {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    // SAFETY: the worker's answer pipe; forgotten below, so never closed.
    let mut answers = unsafe { std::fs::File::from_raw_fd(4) };
    let _ = answers.write_all(&bytes);
    std::mem::forget(answers);
    std::thread::sleep(Duration::from_millis(500));
    0
}

fn executor(pool: ProcessPool) -> StoreExecutor {
    let store = Store::new(unique("faults"), LocalConnector::new()).unwrap();
    StoreExecutor::new(pool, store)
}

fn pool(workers: usize) -> proxystore::executor::ProcessPoolBuilder {
    ProcessPool::builder(workers).test_harness()
}

fn alive(pid: u32) -> bool {
    // A zombie has exited: only its entry is left for its parent to reap.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for `condition` up to `limit`; whether it came true.
fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    condition()
}

fn broken_workers(how: &str) -> StoreExecutor {
    executor(
        ProcessPool::builder(1)
            .program(env!("CARGO_BIN_EXE_proxystore-peer"))
            .args(["worker", how])
            .build()
            .unwrap(),
    )
}

#[test]
fn a_worker_announcing_a_huge_answer_fails_only_its_task() {
    let ex = broken_workers("huge");
    for _ in 0..3 {
        let err = ex.submit(double::task(1)).unwrap().result().unwrap_err();
        assert!(matches!(err, Error::WorkerDied { .. }), "{err}");
    }
}

#[test]
fn a_task_writing_a_huge_length_on_the_answer_pipe_fails_only_its_worker() {
    let ex = executor(pool(1).build().unwrap());
    // A well-formed header announcing 2^62 bytes, then garbage.
    let mut lie = b"PX".to_vec();
    lie.push(3);
    lie.extend_from_slice(&0u64.to_le_bytes());
    lie.extend_from_slice(&(1u64 << 62).to_le_bytes());
    lie.extend_from_slice(&[0xab; 64]);
    let err = ex
        .submit(scribble::task(lie))
        .unwrap()
        .result()
        .unwrap_err();
    assert!(matches!(err, Error::WorkerDied { .. }), "{err}");
    let err = ex
        .submit(scribble::task(vec![0xff; 64]))
        .unwrap()
        .result()
        .unwrap_err();
    assert!(
        err.to_string().contains("broke the worker protocol"),
        "{err}"
    );
    assert_eq!(*ex.submit(double::task(4)).unwrap().result().unwrap(), 8);
}

/// Waits until `gate` exists, then writes `bytes` on the worker's answer
/// descriptor (or, with none, ends the worker's process as a crash would).
#[proxied]
fn break_worker_at(gate: PathBuf, bytes: Vec<u8>) -> u32 {
    while !gate.exists() {
        std::thread::sleep(Duration::from_millis(2));
    }
    if bytes.is_empty() {
        std::process::abort();
    }
    scribble(bytes)
}

/// Regression: jobs sent to a worker and waiting behind a task that killed
/// it (a forged answer, a crash) failed with its death, though they never
/// started. They run on the worker that replaces it; only the task that
/// was running fails.
#[test]
fn jobs_queued_behind_a_task_that_kills_its_worker_run_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(pool(1).max_in_flight(4).build().unwrap());
    for (how, bytes) in [("a forged answer", vec![0xff; 64]), ("a crash", vec![])] {
        let gate = dir.path().join(format!("gate-{}", bytes.len()));
        let culprit = ex
            .submit(break_worker_at::task(gate.clone(), bytes))
            .unwrap();
        let queued: Vec<_> = (0..3)
            .map(|i| ex.submit(double::task(i)).unwrap())
            .collect();
        // Only once every job is in the worker's hands (a job a worker
        // holds counts as running) does the culprit break it.
        assert!(
            eventually(Duration::from_secs(30), || queued
                .iter()
                .all(|f| f.running())),
            "{how}: the jobs never reached the worker"
        );
        std::fs::write(&gate, b"go").unwrap();
        let err = culprit.result().unwrap_err();
        assert!(matches!(err, Error::WorkerDied { .. }), "{how}: {err}");
        for (i, future) in queued.into_iter().enumerate() {
            match future.result() {
                Ok(v) => assert_eq!(*v, 2 * i as i64, "{how}"),
                Err(e) => panic!("{how}: job {i}, which never started, failed: {e}"),
            }
        }
    }
}

/// The silent worker's crash (`tests/support/peer.rs`).
#[proxied(name = "peer.crash_at")]
fn crash_at(gate: PathBuf) -> u32 {
    let _ = gate;
    unreachable!("runs in the silent worker")
}

/// The silent worker's marked double (`tests/support/peer.rs`).
#[proxied(name = "peer.mark_double")]
fn mark_double(dir: PathBuf, name: String, x: i64) -> i64 {
    let _ = (dir, name);
    2 * x
}

/// Regression: a worker that never reports which job it starts (another
/// program, a page it could not map) was taken to have started none, so
/// the jobs it held ran again elsewhere, the one that was running too.
/// The pool cannot tell then: they fail with its death, and none runs
/// twice.
#[test]
fn a_worker_that_tells_nothing_has_its_jobs_failed_not_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(
        ProcessPool::builder(1)
            .program(env!("CARGO_BIN_EXE_proxystore-peer"))
            .args(["silent-worker"])
            .max_in_flight(4)
            .build()
            .unwrap(),
    );
    let gate = dir.path().join("gate");
    let culprit = ex.submit(crash_at::task(gate.clone())).unwrap();
    let queued: Vec<_> = (0..3)
        .map(|i| {
            let name = format!("ran-{i}");
            ex.submit(mark_double::task(dir.path().to_path_buf(), name, i))
                .unwrap()
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(30), || queued
            .iter()
            .all(|f| f.running())),
        "the jobs never reached the worker"
    );
    std::fs::write(&gate, b"go").unwrap();
    let err = culprit.result().unwrap_err();
    assert!(matches!(err, Error::WorkerDied { .. }), "{err}");
    let crashes = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("crash-")
        })
        .count();
    assert_eq!(crashes, 1, "the task that was running ran again");
    for (i, future) in queued.into_iter().enumerate() {
        let outcome = future.result();
        assert!(
            matches!(outcome, Err(Error::WorkerDied { .. })),
            "job {i}: {outcome:?}"
        );
        assert!(!dir.path().join(format!("ran-{i}")).exists(), "job {i} ran");
    }
}

#[test]
fn a_worker_writing_garbage_is_killed_and_replaced() {
    let pool = Arc::new(
        ProcessPool::builder(1)
            .program(env!("CARGO_BIN_EXE_proxystore-peer"))
            .args(["worker", "garbage"])
            .build()
            .unwrap(),
    );
    let first = pool.worker_pids();
    let store = Store::new(unique("faults"), LocalConnector::new()).unwrap();
    let ex = StoreExecutor::new(pool.clone(), store);
    let err = ex.submit(double::task(1)).unwrap().result().unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::WorkerDied { .. }), "{text}");
    assert!(text.contains("broke the worker protocol"), "{text}");
    assert!(text.contains("magic"), "{text}");
    assert!(eventually(Duration::from_secs(5), || {
        let now = pool.worker_pids();
        now.len() == 1 && now != first
    }));
    assert!(!alive(first[0]), "the broken worker was killed");
}

#[test]
fn a_worker_forging_an_answer_for_another_job_is_killed() {
    let ex = broken_workers("forged");
    let started = Instant::now();
    let err = ex.submit(double::task(1)).unwrap().result().unwrap_err();
    assert!(err.to_string().contains("which it does not hold"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "no waiting for the worker's sleep"
    );
}

#[test]
fn a_worker_answering_with_two_sections_is_killed_and_its_task_fails_with_its_death() {
    let ex = broken_workers("two-sections");
    let err = ex.submit(double::task(1)).unwrap().result().unwrap_err();
    assert!(matches!(err, Error::WorkerDied { .. }), "{err}");
    assert!(err.to_string().contains("2 sections"), "{err}");
}

#[test]
fn a_worker_dropping_a_job_nobody_revoked_is_killed() {
    let ex = broken_workers("revoked");
    let err = ex.submit(double::task(1)).unwrap().result().unwrap_err();
    assert!(matches!(err, Error::WorkerDied { .. }), "{err}");
    assert!(err.to_string().contains("which nobody revoked"), "{err}");
}

#[test]
fn tasks_see_neither_the_protocol_descriptors_nor_the_worker_variable() {
    let ex = executor(pool(1).build().unwrap());
    let seen = ex
        .submit(shell::task(
            "for fd in 3 4 5; do [ -e /proc/$$/fd/$fd ] && echo \"fd $fd open\"; done; \
             echo \"env=${PROXYSTORE_WORKER:-unset}${PROXYSTORE_WORKER_PROGRESS:-}\""
                .to_string(),
        ))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(seen.trim(), "env=unset", "{}", *seen);
}

#[test]
fn a_killed_worker_whose_task_started_a_program_fails_at_once() {
    let pool = Arc::new(pool(1).build().unwrap());
    let store = Store::new(unique("faults"), LocalConnector::new()).unwrap();
    let ex = StoreExecutor::new(pool.clone(), store);
    let fut = ex.submit(shell::task("sleep 20".to_string())).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    signal(pool.worker_pids()[0], "KILL");
    let started = Instant::now();
    let err = fut.result().unwrap_err();
    assert!(matches!(err, Error::WorkerDied { .. }), "{err}");
    assert!(
        err.to_string().contains("(killed by signal 9 (SIGKILL))"),
        "the signal is named: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "waited for the task's program: {:?}",
        started.elapsed()
    );
}

#[test]
fn a_killed_worker_whose_task_forked_fails_at_once() {
    // The forked copy keeps the worker's answer pipe open: only the
    // worker's own exit can tell the pool it is gone.
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("copy");
    let pool = Arc::new(pool(1).build().unwrap());
    let store = Store::new(unique("faults"), LocalConnector::new()).unwrap();
    let ex = StoreExecutor::new(pool.clone(), store);
    let fut = ex.submit(fork_and_sleep::task(pidfile.clone())).unwrap();
    assert!(eventually(Duration::from_secs(10), || pidfile.exists()));
    std::thread::sleep(Duration::from_millis(50));
    let copy: u32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
    signal(pool.worker_pids()[0], "KILL");
    let started = Instant::now();
    let result = fut.result();
    signal(copy, "KILL");
    let err = result.unwrap_err();
    assert!(matches!(err, Error::WorkerDied { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "waited for the forked copy: {:?}",
        started.elapsed()
    );
}

#[test]
fn results_leave_the_worker_as_soon_as_they_exist() {
    // Both jobs sit in the one worker; the first is answered before the
    // second ends the process.
    let ex = executor(pool(1).build().unwrap());
    let done = ex.submit(double::task(21)).unwrap();
    let fatal = ex.submit(exit_now::task(3)).unwrap();
    assert_eq!(*done.result().unwrap(), 42);
    let err = fatal.result().unwrap_err();
    assert!(err.to_string().contains("exited with status 3"), "{err}");
}

#[test]
fn workers_exit_when_their_pool_process_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let mut parent = Command::new(env!("CARGO_BIN_EXE_proxystore-parent"))
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let worker: u32 = support::common::first_line(&mut parent).parse().unwrap();
    drop(parent.stdout.take());
    assert!(eventually(Duration::from_secs(10), || dir
        .path()
        .join("first")
        .exists()));
    parent.kill().unwrap();
    parent.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(3), || !alive(worker)),
        "worker {worker} outlived its pool"
    );
    std::thread::sleep(Duration::from_millis(300));
    for queued in ["second", "third"] {
        assert!(!dir.path().join(queued).exists(), "{queued} started");
    }
}

#[test]
fn dropping_a_pool_with_a_stopped_worker_returns_and_fails_its_tasks() {
    let pool = pool(1)
        .shutdown_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let pid = pool.worker_pids()[0];
    let ex = executor(pool);
    assert_eq!(*ex.submit(double::task(1)).unwrap().result().unwrap(), 2);
    signal(pid, "STOP");
    // A large argument cannot fit in the pipe of a worker that does not
    // read: submit returns all the same.
    let started = Instant::now();
    let large = ex.submit(echo::task(vec![7u8; 8 << 20])).unwrap();
    let small = ex.submit(pid_after::task(0)).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "submit blocked");
    let started = Instant::now();
    drop(ex);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    for fut in [small.result().map(|_| ()), large.result().map(|_| ())] {
        let err = fut.unwrap_err();
        assert!(
            err.to_string().contains("after shutdown began, killed"),
            "{err}"
        );
    }
    assert!(!alive(pid));
}

#[test]
fn a_cold_pool_runs_as_many_tasks_at_once_as_it_has_workers() {
    let ex = executor(pool(2).build().unwrap());
    let futures: Vec<_> = (0..8)
        .map(|_| ex.submit(pid_after::task(300)).unwrap())
        .collect();
    let mut per_worker: HashMap<u32, usize> = HashMap::new();
    for fut in futures {
        *per_worker.entry(*fut.result().unwrap()).or_default() += 1;
    }
    let counts: Vec<usize> = per_worker.values().copied().collect();
    assert_eq!(counts, [4, 4], "{per_worker:?}");
}

#[test]
fn a_short_task_never_waits_behind_a_long_one_while_a_worker_is_idle() {
    let ex = executor(pool(2).build().unwrap());
    // Warm: prefetching is at its deepest for a pool used to short tasks.
    let warm: Vec<_> = (0..200)
        .map(|i| ex.submit(double::task(i)).unwrap())
        .collect();
    warm.into_iter().for_each(|f| drop(f.result().unwrap()));
    let long = ex.submit(pid_after::task(3_000)).unwrap();
    let short: Vec<_> = (0..6)
        .map(|_| ex.submit(pid_after::task(20)).unwrap())
        .collect();
    let ran_on: Vec<u32> = short.into_iter().map(|f| *f.result().unwrap()).collect();
    assert!(!long.done(), "the short tasks waited for the long one");
    let long_pid = *long.result().unwrap();
    assert!(
        ran_on.iter().all(|pid| *pid != long_pid),
        "{ran_on:?} vs {long_pid}"
    );
}

fn started(dir: &Path, name: &str) -> bool {
    dir.join(name).exists()
}

#[test]
fn cancel_reaches_tasks_a_worker_holds_but_has_not_started() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let ex = executor(pool(1).build().unwrap());
    let long = ex
        .submit(mark::task(d.clone(), "long".to_string(), 700))
        .unwrap();
    let held: Vec<_> = (0..4)
        .map(|i| {
            ex.submit(mark::task(d.clone(), format!("held-{i}"), 0))
                .unwrap()
        })
        .collect();
    assert!(eventually(Duration::from_secs(10), || started(&d, "long")));
    assert!(long.running());
    assert!(!long.cancel(), "a running task cannot be cancelled");
    assert!(held[1].cancel() && held[3].cancel());
    assert!(held[1].cancelled() && held[1].done());
    let mut held = held.into_iter();
    let (h0, h1, h2, h3) = (
        held.next().unwrap(),
        held.next().unwrap(),
        held.next().unwrap(),
        held.next().unwrap(),
    );
    assert!(matches!(h1.result(), Err(Error::Cancelled { .. })));
    assert!(matches!(h3.result(), Err(Error::Cancelled { .. })));
    assert!(h0.result().is_ok() && h2.result().is_ok() && long.result().is_ok());
    assert!(!started(&d, "held-1") && !started(&d, "held-3"));

    // Shutting down with cancel_futures reaches them too.
    let long = ex
        .submit(mark::task(d.clone(), "long-2".to_string(), 500))
        .unwrap();
    let held: Vec<_> = (0..3)
        .map(|i| {
            ex.submit(mark::task(d.clone(), format!("late-{i}"), 0))
                .unwrap()
        })
        .collect();
    assert!(eventually(Duration::from_secs(10), || started(
        &d, "long-2"
    )));
    ex.shutdown(true, true);
    assert!(long.result().is_ok());
    for (i, fut) in held.into_iter().enumerate() {
        assert!(fut.cancelled());
        assert!(!started(&d, &format!("late-{i}")));
    }
}

#[test]
fn every_worker_is_up_when_build_returns() {
    let pool = pool(3).build().unwrap();
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|pid| alive(*pid)));
}

fn zombie_children() -> Vec<u32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let rest: Vec<&str> = stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect();
                rest.first() == Some(&"Z") && rest.get(1) == Some(&me.as_str())
            })
        })
        .collect()
}

#[test]
fn a_pool_that_cannot_start_leaves_no_process_behind() {
    let err = ProcessPool::builder(2)
        .program("/nonexistent/proxystore-worker")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("starting /nonexistent"), "{err}");
    assert!(zombie_children().is_empty(), "{:?}", zombie_children());
}

/// A pool shared with its executor, for calling the pool's own shutdown.
fn shared(workers: usize) -> (Arc<ProcessPool>, StoreExecutor) {
    let pool = Arc::new(pool(workers).build().unwrap());
    let store = Store::new(unique("faults"), LocalConnector::new()).unwrap();
    let ex = StoreExecutor::new(pool.clone(), store);
    (pool, ex)
}

#[test]
fn an_idle_worker_takes_a_job_held_behind_a_newer_running_one() {
    // A stolen job that lands on a worker already running a newer job sits
    // behind it: the job to take back is the last one sent, not the one
    // with the highest id (which runs, and would be revoked over and over).
    let (pool, ex) = shared(2);
    let pids = pool.worker_pids();
    let a0 = ex.submit(pid_after::task(900)).unwrap(); // worker 0
    let b1 = ex.submit(pid_after::task(100)).unwrap(); // worker 1
    let _a2 = ex.submit(pid_after::task(0)).unwrap(); // worker 0
    let b3 = ex.submit(pid_after::task(0)).unwrap(); // worker 1
    let a4 = ex.submit(pid_after::task(0)).unwrap(); // worker 0
    std::thread::sleep(Duration::from_millis(50));
    // Worker 0 cannot answer the revocation of a4 that worker 1, idle,
    // sends for it: meanwhile a long job goes to worker 1.
    signal(pids[0], "STOP");
    assert_eq!(*b1.result().unwrap(), pids[1]);
    assert_eq!(*b3.result().unwrap(), pids[1]);
    let b5 = ex.submit(pid_after::task(1_500)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // a4 comes back and goes to worker 1, behind b5.
    signal(pids[0], "CONT");
    assert_eq!(*a0.result().unwrap(), pids[0]);
    // Worker 0 is idle now and must take a4 over.
    let ran_on = *a4.result().unwrap();
    assert!(!b5.done(), "a4 waited for b5 while a worker was idle");
    assert_eq!(ran_on, pids[0]);
    assert_eq!(*b5.result().unwrap(), pids[1]);
}

#[test]
fn a_job_taken_back_during_shutdown_is_not_sent_to_closed_workers() {
    // Each worker that runs dry while shutting down must not be offered
    // jobs: its pipe is closed. A job bounced that way three times used to
    // fail with "worker died" at a clean shutdown.
    let (pool, ex) = shared(4);
    let slow = ex.submit(pid_after::task(2_500)).unwrap(); // worker 0
    let others: Vec<_> = [300, 700, 1_100]
        .into_iter()
        .map(|ms| ex.submit(pid_after::task(ms)).unwrap()) // workers 1, 2, 3
        .collect();
    let bounced = ex.submit(pid_after::task(0)).unwrap(); // worker 0, queued
    std::thread::sleep(Duration::from_millis(100));
    let closing = {
        let pool = pool.clone();
        std::thread::spawn(move || proxystore::executor::Executor::shutdown(&*pool, true, false))
    };
    let bounced = bounced.result();
    assert!(bounced.is_ok(), "{:?}", bounced.err());
    assert!(slow.result().is_ok());
    for fut in others {
        assert!(fut.result().is_ok());
    }
    closing.join().unwrap();
}

#[test]
fn shutting_down_with_cancel_reaches_a_job_being_taken_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let (pool, ex) = shared(2);
    let pids = pool.worker_pids();
    let a0 = ex
        .submit(mark::task(d.clone(), "a0".to_string(), 1_000))
        .unwrap();
    let b1 = ex.submit(pid_after::task(100)).unwrap();
    let a2 = ex
        .submit(mark::task(d.clone(), "a2".to_string(), 0))
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || started(&d, "a0")));
    // Worker 1 runs dry and takes a2 back from worker 0, which cannot
    // answer yet.
    signal(pids[0], "STOP");
    b1.result().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    proxystore::executor::Executor::shutdown(&*pool, false, true);
    signal(pids[0], "CONT");
    assert!(a0.result().is_ok());
    let a2 = a2.result();
    assert!(
        matches!(a2, Err(Error::Cancelled { .. })),
        "{:?}",
        a2.map(|v| *v)
    );
    assert!(!started(&d, "a2"));
}

#[test]
fn cancelling_from_a_done_callback_neither_stalls_nor_runs_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let ex = executor(pool(1).build().unwrap());
    let first = ex.submit(pid_after::task(100)).unwrap();
    let long = ex.submit(pid_after::task(1_000)).unwrap();
    let victim = Arc::new(
        ex.submit(mark::task(d.clone(), "victim".to_string(), 0))
            .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let v = victim.clone();
    first.add_done_callback(move |_| {
        let began = Instant::now();
        v.cancel();
        tx.send(began.elapsed()).unwrap();
    });
    let took = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(took < Duration::from_millis(500), "cancel took {took:?}");
    assert!(long.result().is_ok());
    assert!(
        eventually(Duration::from_secs(5), || victim.done()),
        "the victim never finished"
    );
    assert!(victim.cancelled(), "the victim ran");
    assert!(!started(&d, "victim"));
}

#[test]
fn two_callers_cancelling_the_same_held_job_both_hear_it_is_cancelled() {
    let (pool, ex) = shared(1);
    let pid = pool.worker_pids()[0];
    let long = ex.submit(pid_after::task(300)).unwrap();
    let victim = Arc::new(ex.submit(pid_after::task(0)).unwrap());
    std::thread::sleep(Duration::from_millis(50));
    // The worker answers revocations only once it runs again.
    signal(pid, "STOP");
    let cancel = |victim: Arc<proxystore::executor::TaskFuture<u32>>| {
        std::thread::spawn(move || victim.cancel())
    };
    let first = cancel(victim.clone());
    std::thread::sleep(Duration::from_millis(100));
    let second = cancel(victim.clone());
    std::thread::sleep(Duration::from_millis(100));
    signal(pid, "CONT");
    let f = first.join().unwrap();
    assert!(f, "the first caller was told no");
    assert!(second.join().unwrap());
    assert!(victim.cancelled());
    assert!(long.result().is_ok());
}

#[test]
fn dropping_the_last_executor_from_a_done_callback_neither_stalls_nor_kills() {
    let ex = Arc::new(executor(pool(1).build().unwrap()));
    let first = ex.submit(pid_after::task(100)).unwrap();
    let second = ex.submit(pid_after::task(300)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let last = ex.clone();
    first.add_done_callback(move |_| {
        let began = Instant::now();
        drop(last);
        tx.send(began.elapsed()).unwrap();
    });
    drop(ex);
    let took = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(took < Duration::from_secs(2), "dropping took {took:?}");
    assert!(first.result().is_ok());
    let second = second.result();
    assert!(second.is_ok(), "{:?}", second.err());
}

#[test]
fn a_panicking_done_callback_does_not_take_a_worker_slot_down() {
    let ex = executor(pool(1).build().unwrap());
    let first = ex.submit(double::task(1)).unwrap();
    first.add_done_callback(|_| panic!("a callback that panics"));
    assert_eq!(*first.result().unwrap(), 2);
    for i in 0..3 {
        let mut next = ex.submit(double::task(i)).unwrap();
        let got = next.result_timeout(Duration::from_secs(10));
        assert_eq!(*got.unwrap(), i * 2);
    }
}
