//! Steering what runs: retries of failed tasks (their own errors, panics,
//! dead workers) with a policy, and per-task timeouts, on the thread pool,
//! on real worker processes and on the cluster executor.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use proxystore::connectors::FileConnector;
use proxystore::executor::{ProcessPool, ThreadPool};
use proxystore::task::RetryPolicy;
use proxystore::{proxied, Error, Store, StoreExecutor};
use support::cluster::{objects, Cluster};
use support::common::unique;

proxystore::test_worker!();

/// Records a call in `dir`; returns how many calls there were before.
fn record_call(dir: &Path) -> usize {
    let before = std::fs::read_dir(dir).unwrap().count();
    std::fs::write(dir.join(format!("call-{}", uuid::Uuid::new_v4())), b"").unwrap();
    before
}

/// Fails (or panics, or kills its process) on its first `bad` calls.
#[proxied(types = [String])]
fn flaky(calls: PathBuf, bad: usize, how: String, input: String) -> Result<String, String> {
    if record_call(&calls) < bad {
        match how.as_str() {
            "panic" => panic!("not yet"),
            "abort" => std::process::abort(),
            "sleep" => std::thread::sleep(Duration::from_secs(5)),
            _ => return Err("not yet".into()),
        }
    }
    Ok(format!("{input}!"))
}

fn calls(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

struct Setup {
    _dir: tempfile::TempDir,
    calls: PathBuf,
    objects: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    std::fs::create_dir(&calls).unwrap();
    let objects = dir.path().join("objects");
    Setup {
        calls,
        objects,
        _dir: dir,
    }
}

fn store(objects: &Path) -> Store {
    Store::new(unique("steer"), FileConnector::new(objects).unwrap()).unwrap()
}

/// The scenarios every executor must pass.
fn retries_on(executor: &StoreExecutor, s: &Setup, dies: bool) {
    let task = |bad, how: &str| flaky::task(s.calls.clone(), bad, how.to_string(), "x".repeat(10));
    let clear = || {
        for entry in std::fs::read_dir(&s.calls).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
    };
    // Its own errors and panics: retried until it works.
    for how in ["error", "panic"] {
        clear();
        let future = executor
            .submit(task(2, how).retries(RetryPolicy::attempts(3)))
            .unwrap();
        assert_eq!(*future.result().unwrap(), "xxxxxxxxxx!", "{how}");
        assert_eq!(calls(&s.calls), 3, "{how}");
    }
    // Out of attempts: the last error, after exactly that many runs.
    clear();
    let err = executor
        .submit(task(5, "error").retries(RetryPolicy::attempts(2)))
        .unwrap()
        .result()
        .unwrap_err();
    assert!(matches!(err, Error::TaskFailed { .. }), "{err}");
    assert_eq!(calls(&s.calls), 2);
    // Only the errors the policy names.
    clear();
    let only_deaths = RetryPolicy::attempts(3).retry_if(|e| matches!(e, Error::WorkerDied { .. }));
    let err = executor
        .submit(task(1, "error").retries(only_deaths.clone()))
        .unwrap()
        .result()
        .unwrap_err();
    assert!(matches!(err, Error::TaskFailed { .. }), "{err}");
    assert_eq!(calls(&s.calls), 1);
    if dies {
        // A worker that dies: run again on a new one.
        clear();
        let future = executor
            .submit(task(1, "abort").retries(only_deaths))
            .unwrap();
        assert_eq!(*future.result().unwrap(), "xxxxxxxxxx!");
        assert_eq!(calls(&s.calls), 2);
    }
    // A timeout gives an attempt up; the next one works.
    clear();
    let future = executor
        .submit(
            task(1, "sleep")
                .timeout(Duration::from_millis(300))
                .retries(RetryPolicy::attempts(2)),
        )
        .unwrap();
    assert_eq!(*future.result().unwrap(), "xxxxxxxxxx!");
    clear();
    let err = executor
        .submit(task(1, "sleep").timeout(Duration::from_millis(100)))
        .unwrap()
        .result()
        .unwrap_err();
    assert!(matches!(err, Error::TaskTimedOut { .. }), "{err}");
    assert!(err.task_id().is_some());
}

fn assert_store_empty(dir: &Path) {
    // Inputs stay while a task is retried and go when it ends; a timed-out
    // attempt still running may write its result late: wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = objects(dir);
        if left.is_empty() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "left: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn retries_and_timeouts_on_the_thread_pool() {
    let s = setup();
    let executor = StoreExecutor::new(ThreadPool::new(2).unwrap(), store(&s.objects));
    retries_on(&executor, &s, false);
    let p = executor.progress();
    assert_eq!((p.pending, p.running), (0, 0), "{p}");
}

#[test]
fn retries_and_timeouts_on_worker_processes() {
    let s = setup();
    let pool = ProcessPool::builder(2).test_harness().build().unwrap();
    let executor = StoreExecutor::new(pool, store(&s.objects));
    retries_on(&executor, &s, true);
}

#[test]
fn retries_and_timeouts_on_the_cluster() {
    let Some(cluster) = Cluster::start("steer", &unique("q")) else {
        return;
    };
    let _workers = [cluster.worker(), cluster.worker()];
    let s = setup();
    // A directory every worker reaches (they share this host).
    let connector = FileConnector::new(&s.objects).unwrap().shared();
    let store = Store::new(unique("steer-cluster"), connector).unwrap();
    let caller = support::cluster::executor(&cluster.server, &cluster.queue);
    let executor = StoreExecutor::new(caller, store);
    retries_on(&executor, &s, false);
}

#[test]
fn proxied_inputs_stay_while_retried_and_go_when_the_task_ends() {
    let s = setup();
    let executor = StoreExecutor::new(ThreadPool::new(1).unwrap(), store(&s.objects));
    let future = executor
        .submit(
            flaky::task(s.calls.clone(), 2, "error".to_string(), "input".to_string()).retries(
                RetryPolicy::attempts(3).backoff(
                    Duration::from_millis(20),
                    2.0,
                    Duration::from_millis(100),
                ),
            ),
        )
        .unwrap();
    let result = future.result().unwrap();
    assert_eq!(*result, "input!");
    drop(result);
    assert_store_empty(&s.objects);
}

#[test]
fn a_task_waiting_to_be_retried_can_be_cancelled() {
    let s = setup();
    let executor = StoreExecutor::new(ThreadPool::new(1).unwrap(), store(&s.objects));
    let future = executor
        .submit(
            flaky::task(s.calls.clone(), 9, "error".to_string(), "x".to_string()).retries(
                RetryPolicy::attempts(5).backoff(
                    Duration::from_secs(60),
                    1.0,
                    Duration::from_secs(60),
                ),
            ),
        )
        .unwrap();
    // The first attempt fails; the second waits a minute.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while calls(&s.calls) == 0 || executor.progress().running > 0 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(future.cancel());
    assert!(matches!(future.result(), Err(Error::Cancelled { .. })));
    assert_eq!(calls(&s.calls), 1);
    let p = executor.progress();
    assert_eq!((p.cancelled, p.pending, p.running), (1, 0, 0), "{p}");
    assert_store_empty(&s.objects);
}

#[test]
fn the_executor_s_default_policy_and_timeout_apply_to_tasks_without_their_own() {
    let s = setup();
    let executor = StoreExecutor::new(ThreadPool::new(1).unwrap(), store(&s.objects))
        .retries(RetryPolicy::attempts(2))
        .task_timeout(Duration::from_millis(100));
    let future = executor
        .submit(flaky::task(
            s.calls.clone(),
            1,
            "error".to_string(),
            "x".to_string(),
        ))
        .unwrap();
    assert_eq!(*future.result().unwrap(), "x!");
    let err = executor
        .submit(
            flaky::task(s.calls.clone(), 99, "sleep".to_string(), "x".to_string())
                .retries(RetryPolicy::attempts(1)),
        )
        .unwrap()
        .result()
        .unwrap_err();
    assert!(matches!(err, Error::TaskTimedOut { .. }), "{err}");
}

/// Works for up to 30 s unless asked to stop.
#[proxied]
fn stoppable(max_ms: u64) -> Result<u64, String> {
    let context = proxystore::task::current().expect("inside a task");
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(max_ms) {
        if context.interrupted() {
            return Err(format!(
                "interrupted after {} ms",
                started.elapsed().as_millis()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(max_ms)
}

#[test]
fn a_running_process_pool_task_can_be_asked_to_stop() {
    let store = Store::new(
        unique("steer-interrupt"),
        proxystore::connectors::LocalConnector::new(),
    )
    .unwrap();
    let pool = ProcessPool::builder(1).test_harness().build().unwrap();
    let executor = StoreExecutor::new(pool, store);
    let running = executor.submit(stoppable::task(30_000)).unwrap();
    // Queued behind it in the same worker: asked to stop before it starts.
    let queued = executor.submit(stoppable::task(30_000)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !running.running() {
        assert!(std::time::Instant::now() < deadline, "never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Sent to the worker's own queue (then it stops as soon as it starts),
    // or still in the pool's (then it is cancelled instead).
    let queued_asked = queued.interrupt() || queued.cancel();
    assert!(queued_asked);
    assert!(running.interrupt(), "the worker holds it");
    let err = running.result().unwrap_err().to_string();
    assert!(err.contains("interrupted after"), "{err}");
    match queued.result() {
        Err(Error::Cancelled { .. }) => {}
        Err(e) => assert!(e.to_string().contains("interrupted after 0 ms"), "{e}"),
        Ok(v) => panic!("ran to its end: {}", *v),
    }
    // A task that is not asked runs to its end.
    let free = executor.submit(stoppable::task(50)).unwrap();
    assert_eq!(*free.result().unwrap(), 50);
}
