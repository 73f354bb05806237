//! Seeing what runs: task ids on futures and in errors, panic locations,
//! progress counts, and `tracing` events with task ids (through a test
//! subscriber), on the thread pool and on real worker processes.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use proxystore::connectors::LocalConnector;
use proxystore::executor::{ProcessPool, ThreadPool};
use proxystore::{proxied, Error, Store, StoreExecutor};
use support::common::unique;
use support::events::{events_with, message, record_events};

proxystore::test_worker!();

#[proxied]
fn checked(x: i64) -> Result<i64, String> {
    if x == 42 {
        Err(format!("input {x} is not allowed"))
    } else {
        Ok(x)
    }
}

#[proxied]
fn explode(x: i64) -> i64 {
    if x > 0 {
        panic!("exploded on {x}");
    }
    x
}

/// Waits until the file `gate` exists.
#[proxied]
fn wait_for(gate: PathBuf) -> u32 {
    while !gate.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    1
}

fn thread_executor(workers: usize) -> StoreExecutor {
    let store = Store::new(unique("observe"), LocalConnector::new()).unwrap();
    StoreExecutor::new(ThreadPool::new(workers).unwrap(), store)
}

#[test]
fn every_task_has_an_id_on_its_future_and_in_its_errors() {
    let executor = thread_executor(2);
    let futures: Vec<_> = (40..45)
        .map(|x| executor.submit(checked::task(x)).unwrap())
        .collect();
    let ids: Vec<_> = futures.iter().map(|f| f.id()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids in submission order: {ids:?}"
    );
    let failing = futures[2].id();
    for future in futures {
        let id = future.id();
        match future.result() {
            Ok(v) => assert_ne!(*v, 42),
            Err(e) => {
                assert_eq!(id, failing);
                assert_eq!(e.task_id(), Some(id));
                let text = e.to_string();
                assert!(
                    text.contains(&format!("`{}` {id}", checked::NAME)),
                    "{text}"
                );
                assert!(text.contains("input 42 is not allowed"), "{text}");
                assert!(
                    text.contains("(arguments: 42)"),
                    "the arguments too: {text}"
                );
            }
        }
    }
}

#[test]
fn map_tasks_know_their_index_and_upstream_failures_name_the_upstream_id() {
    let executor = thread_executor(2);
    let mut results = executor.map([1, 42, 3].map(checked::task)).unwrap();
    assert_eq!(*results.next().unwrap().unwrap(), 1);
    let err = results.next().unwrap().unwrap_err();
    assert!(err.task_id().is_some(), "{err}");

    let upstream = executor.submit(checked::task(42)).unwrap();
    let upstream_id = upstream.id();
    let dependent = executor.submit(checked::task(&upstream)).unwrap();
    let dependent_id = dependent.id();
    match dependent.result() {
        Err(Error::UpstreamFailed {
            id, upstream_id: u, ..
        }) => {
            assert_eq!((id, u), (Some(dependent_id), Some(upstream_id)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_panic_says_where_it_happened_in_a_worker_process() {
    let store = Store::new(unique("observe-pool"), LocalConnector::new()).unwrap();
    let pool = ProcessPool::builder(1).test_harness().build().unwrap();
    let executor = StoreExecutor::new(pool, store);
    let err = executor
        .submit(explode::task(3))
        .unwrap()
        .result()
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("tests/observe.rs:"), "{text}");
    assert!(text.contains("exploded on 3"), "{text}");
    assert!(err.task_id().is_some());
    // And on a thread of this process.
    let err = thread_executor(1)
        .submit(explode::task(4))
        .unwrap()
        .result()
        .unwrap_err();
    assert!(err.to_string().contains("tests/observe.rs:"), "{err}");
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn progress_of(executor: StoreExecutor, workers: usize) {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let blocked: Vec<_> = (0..workers + 2)
        .map(|_| executor.submit(wait_for::task(gate.clone())).unwrap())
        .collect();
    // A process pool's worker may hold a job behind the one it runs: both
    // count as running, as `TaskFuture::running` says.
    wait_until("the workers run the blocked tasks", || {
        executor.progress().running >= workers
    });
    let p = executor.progress();
    assert_eq!(
        (p.submitted, p.pending + p.running),
        (workers + 2, workers + 2),
        "{p}"
    );
    assert!(p.pending >= 1 || p.running == workers + 2, "{p}");
    assert!(blocked.last().unwrap().cancel());
    assert!(executor.submit(checked::task(42)).is_ok());
    std::fs::write(&gate, b"").unwrap();
    for future in blocked.into_iter().take(workers + 1) {
        assert_eq!(*future.result().unwrap(), 1);
    }
    wait_until("everything finishes", || {
        executor.progress().finished() == workers + 3
    });
    let p = executor.progress();
    assert_eq!(
        (
            p.submitted,
            p.pending,
            p.running,
            p.done,
            p.failed,
            p.cancelled
        ),
        (workers + 3, 0, 0, workers + 1, 1, 1),
        "{p}"
    );
}

#[test]
fn progress_counts_pending_running_done_failed_and_cancelled() {
    progress_of(thread_executor(2), 2);
    let store = Store::new(unique("observe-progress"), LocalConnector::new()).unwrap();
    let pool = ProcessPool::builder(2).test_harness().build().unwrap();
    progress_of(StoreExecutor::new(pool, store), 2);
}

#[test]
fn tracing_events_follow_each_task_by_id() {
    // Global: the events of a task come from the pool's threads too. Other
    // tests' events are left out by id below.
    record_events();
    let executor = thread_executor(1);
    let ok = executor.submit(checked::task(1)).unwrap();
    let failed = executor.submit(checked::task(42)).unwrap();
    let (ok_id, failed_id) = (ok.id(), failed.id());
    let _ = ok.result();
    let _ = failed.result();
    let of = |id: proxystore::task::TaskId| -> Vec<String> {
        events_with(&["proxystore::task", &format!("id={id} ")])
            .iter()
            .map(|line| message(line).to_string())
            .collect()
    };
    assert_eq!(of(ok_id), ["submitted", "started", "finished"]);
    assert_eq!(of(failed_id), ["submitted", "started", "failed"]);
    let failed = events_with(&[
        "proxystore::task",
        "message=failed",
        &format!("id={failed_id} "),
    ]);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("input 42 is not allowed"), "{failed:?}");
}

/// Reads its argument from the store and stores a larger result.
#[proxied(types = [Vec<u8>])]
fn grow(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.extend_from_slice(&[7; 1000]);
    bytes
}

/// Four tasks, each reading its 3000-byte argument and storing its
/// 4000-byte result where it runs: their workers' figures come back.
fn worker_metrics_of(executor: StoreExecutor) {
    use proxystore::store::{Metrics, Operation};
    let executor = executor.gather_worker_metrics(true);
    let mut futures: Vec<_> = (0..4u8)
        .map(|i| executor.submit(grow::task(vec![i; 3000])).unwrap())
        .collect();
    let mut sum = Metrics::default();
    for (i, future) in futures.iter_mut().enumerate() {
        let result = future.result_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!((result.len(), result[0]), (4000, i as u8));
        let task = future
            .worker_metrics()
            .expect("the worker sent its figures");
        let (get, put) = (task.get(Operation::Get), task.get(Operation::Put));
        assert_eq!((get.count, put.count), (1, 1), "{task:?}");
        assert!(get.bytes >= 3000 && put.bytes >= 4000, "{task:?}");
        assert_eq!(task.get(Operation::Evict).count, 0, "{task:?}");
        sum.merge(&task);
    }
    assert_eq!(executor.worker_metrics(), sum);
    assert_eq!(sum.get(Operation::Put).count, 4);
}

#[test]
fn store_metrics_are_gathered_from_workers_and_summed() {
    worker_metrics_of(thread_executor(2));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(
        unique("observe-metrics"),
        proxystore::connectors::FileConnector::new(dir.path()).unwrap(),
    )
    .unwrap();
    let pool = ProcessPool::builder(2).test_harness().build().unwrap();
    worker_metrics_of(StoreExecutor::new(pool, store));
}

#[test]
fn without_gathering_no_metrics_come_back() {
    let executor = thread_executor(1);
    let mut future = executor.submit(grow::task(vec![1; 10])).unwrap();
    assert_eq!(
        future
            .result_timeout(Duration::from_secs(60))
            .unwrap()
            .len(),
        1010
    );
    assert_eq!(future.worker_metrics(), None);
    assert!(executor.worker_metrics().is_empty());
}

/// Waits for its gate unless asked to stop.
#[proxied]
fn gate_or_stop(gate: PathBuf) -> Result<u32, String> {
    let context = proxystore::task::current().expect("inside a task");
    while !gate.exists() {
        if context.interrupted() {
            return Err("interrupted".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(1)
}

#[test]
fn a_running_thread_pool_task_can_be_asked_to_stop() {
    let dir = tempfile::tempdir().unwrap();
    let executor = thread_executor(1);
    let future = executor
        .submit(gate_or_stop::task(dir.path().join("never")))
        .unwrap();
    let queued = executor
        .submit(gate_or_stop::task(dir.path().join("gate")))
        .unwrap();
    wait_until("the task runs", || future.running());
    assert!(!queued.interrupt(), "not started: nothing runs to ask");
    assert!(future.interrupt());
    let err = future.result().unwrap_err().to_string();
    assert!(err.contains("interrupted"), "{err}");
    std::fs::write(dir.path().join("gate"), b"go").unwrap();
    assert_eq!(*queued.result().unwrap(), 1, "others are not asked");
}
