//! The multi-host executor on one host: a real redis-server, real worker
//! processes (this test binary in cluster worker mode), real kills.
//! `tests/hosts.rs` runs the same over network namespaces.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use proxystore::connectors::{FileConnector, LocalConnector};
use proxystore::executor::cluster::ClusterExecutor;
use proxystore::executor::{Executor, ProcessPool};
use proxystore::{proxied, Error, Store, StoreExecutor};
use support::cluster::{
    executor, kill_a_caller_with_jobs_queued, objects, quick, wait_pending, xlen, Cluster, Worker,
};
use support::common::unique;
use support::redis_server::RedisServer;

proxystore::test_worker!();

#[proxied(types = [String])]
fn concat(base: String, num: i64) -> String {
    format!("{base}-{num}")
}

#[proxied(types = [Vec<f64>])]
fn scale(values: Vec<f64>, by: f64) -> Vec<f64> {
    values.into_iter().map(|v| v * by).collect()
}

/// Sleeps, then says which process ran it.
#[proxied]
fn halve(values: Vec<f64>) -> Vec<f64> {
    values.iter().map(|v| v / 2.0).collect()
}

#[proxied]
fn pid_after(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

/// Ends the worker process running it, as a crash would.
#[proxied]
fn crash() -> u32 {
    std::process::abort()
}

#[proxied]
fn fails() -> Result<u32, String> {
    Err("no luck".into())
}

/// The queue's keys other than the stream itself and worker heartbeats.
fn leftovers(server: &RedisServer, queue: &str) -> Vec<String> {
    server
        .keys(&format!("proxystore:queue:{queue}:*"))
        .into_iter()
        .filter(|k| !k.ends_with(":jobs") && !k.contains(":alive:"))
        .collect()
}

#[test]
fn tasks_run_on_worker_processes_and_leave_nothing_behind() {
    let Some(server) = RedisServer::start("tasks_run_on_worker_processes") else {
        return;
    };
    let queue = "basic";
    let _workers = [
        Worker::start(&server.url(), queue),
        Worker::start(&server.url(), queue),
    ];
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(
        unique("cluster-basic"),
        FileConnector::new(dir.path().join("objects")).unwrap(),
    )
    .unwrap();
    let executor = StoreExecutor::new(executor(&server, queue), store).close_store(false);

    let result = executor
        .submit(concat::task("foobar".to_string(), 42))
        .unwrap()
        .result()
        .unwrap();
    assert!(result.is_proxy());
    assert_eq!(*result, "foobar-42");

    let data: Vec<f64> = (0..1_000_000).map(f64::from).collect();
    let scaled = executor
        .submit(scale::task(data, 2.0))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(scaled.len(), 1_000_000);
    assert_eq!(scaled[999_999], 1_999_998.0);
    // Large values by value both ways (no store): they travel inside the
    // job and the reply.
    let halved = executor
        .submit(halve::task((0..100_000).map(f64::from).collect::<Vec<_>>()))
        .unwrap()
        .result()
        .unwrap();
    assert!(!halved.is_proxy());
    assert_eq!((halved.len(), halved[99_999]), (100_000, 49_999.5));

    let pids: std::collections::HashSet<u32> = executor
        .map((0..40).map(|_| pid_after::task(20)))
        .unwrap()
        .map(|r| *r.unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "both workers took jobs");

    let err = executor
        .submit(fails::task())
        .unwrap()
        .result()
        .unwrap_err();
    assert!(
        matches!(&err, Error::TaskFailed { message, .. } if message.contains("no luck")),
        "{err}"
    );

    drop((result, scaled));
    executor.shutdown(true, false);
    assert_eq!(
        objects(&dir.path().join("objects")),
        Vec::<String>::new(),
        "store emptied"
    );
    assert_eq!(xlen(&server, queue), ":0\r\n", "stream emptied");
    assert_eq!(leftovers(&server, queue), Vec::<String>::new());
}

#[test]
fn a_killed_worker_s_job_runs_again_elsewhere() {
    let Some(cluster) = Cluster::start("a_killed_worker_s_job_runs_again", "kill") else {
        return;
    };
    let mut first = cluster.worker();
    let executor = cluster.executor("cluster-kill");
    let mut future = executor.submit(pid_after::task(1500)).unwrap();
    // Wait until the first worker holds the job, then kill it mid-task.
    wait_pending(&cluster.server, &cluster.queue);
    let dead = first.pid();
    first.kill();
    let killed = Instant::now();
    let _second = cluster.worker();
    let pid = *future.result_timeout(Duration::from_secs(30)).unwrap();
    assert_ne!(pid, dead, "another worker ran it");
    eprintln!(
        "re-run elsewhere and done {:?} after the kill",
        killed.elapsed()
    );
    executor.shutdown(true, false);
    assert_eq!(cluster.xlen(), ":0\r\n");
}

#[test]
fn a_job_that_kills_every_worker_is_given_up_with_a_typed_error() {
    let Some(server) = RedisServer::start("a_job_that_kills_every_worker") else {
        return;
    };
    let queue = "poison";
    let _workers: Vec<Worker> = (0..3)
        .map(|_| Worker::start(&server.url(), queue))
        .collect();
    let executor = ClusterExecutor::builder(&server.url(), queue)
        .settings(quick())
        .max_attempts(2)
        .build()
        .unwrap();
    let store = Store::new(unique("cluster-poison"), LocalConnector::new()).unwrap();
    let executor = StoreExecutor::new(executor, store);
    let err = executor
        .submit(crash::task())
        .unwrap()
        .result_timeout(Duration::from_secs(30))
        .unwrap_err();
    assert!(
        matches!(&err, Error::AttemptsExhausted { attempts: 2, .. }),
        "{err}"
    );
    let dead = server.raw(&["XRANGE", "proxystore:queue:poison:dead", "-", "+"]);
    assert!(dead.contains("crash"), "dead letter names the task: {dead}");
    executor.shutdown(true, false);
    assert_eq!(xlen(&server, queue), ":0\r\n");
}

#[test]
fn a_worker_without_the_task_names_the_ones_it_knows() {
    let Some(cluster) = Cluster::start("a_worker_without_the_task", "unknown") else {
        return;
    };
    let _peer = Worker::start_program(
        Path::new(env!("CARGO_BIN_EXE_proxystore-peer")),
        &["serve"],
        &cluster.server.url(),
        &cluster.queue,
    );
    let executor = cluster.executor("cluster-unknown");
    let err = executor
        .submit(pid_after::task(1))
        .unwrap()
        .result_timeout(Duration::from_secs(30))
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownTask { name, .. } if name.ends_with("pid_after")),
        "{err}"
    );
}

#[test]
fn a_job_nobody_took_can_be_cancelled_and_leaves_the_stream() {
    let Some(cluster) = Cluster::start("a_job_nobody_took", "cancel") else {
        return;
    };
    let executor = cluster.executor("cluster-cancel");
    let future = executor.submit(pid_after::task(1)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.xlen() != ":1\r\n" {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(future.cancel());
    assert!(matches!(
        future.result().unwrap_err(),
        Error::Cancelled { .. }
    ));
    assert_eq!(cluster.xlen(), ":0\r\n");
}

#[test]
fn a_dead_caller_s_jobs_are_dropped_and_its_keys_expire() {
    let Some(server) = RedisServer::start("a_dead_caller_s_jobs") else {
        return;
    };
    let queue = "orphans";
    let dir = tempfile::tempdir().unwrap();
    // The caller: the parent support program, killed with jobs queued.
    kill_a_caller_with_jobs_queued(&server, queue, dir.path());
    assert!(
        !objects(&dir.path().join("objects")).is_empty(),
        "inputs were stored"
    );
    // Its heartbeat expires (2 s); a worker started after that drops its
    // jobs and evicts their inputs.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server
        .keys(&format!("proxystore:queue:{queue}:alive:*"))
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the caller's heartbeat never expired"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _worker = Worker::start(&server.url(), queue);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = objects(&dir.path().join("objects"));
        if xlen(&server, queue) == ":0\r\n"
            && left.is_empty()
            && leftovers(&server, queue).is_empty()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left: {left:?}, {:?}, {}",
            leftovers(&server, queue),
            xlen(&server, queue)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn stores_the_workers_cannot_reach_are_refused_before_anything_is_stored() {
    let store = Store::new(unique("reach-local"), LocalConnector::new()).unwrap();
    let pool = ProcessPool::builder(1).test_harness().build().unwrap();
    assert_eq!(pool.task_reach(), proxystore::connectors::Reach::Host);
    let executor = StoreExecutor::new(pool, store.clone());
    let err = executor
        .submit(concat::task("x".to_string(), 1))
        .unwrap_err();
    assert!(matches!(&err, Error::Unreachable { .. }), "{err}");
    assert!(
        err.to_string().contains("reachable only from this process"),
        "{err}"
    );
    // A value that needs no store still runs.
    let pid = executor
        .submit(pid_after::task(0))
        .unwrap()
        .result()
        .unwrap();
    assert!(*pid > 0);
    // A proxy of a memory store, passed to a task on other processes.
    let other = Store::new(unique("reach-file"), LocalConnector::new()).unwrap();
    let proxy = other.proxy("held".to_string()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = Store::new(
        unique("reach-file2"),
        FileConnector::new(dir.path().join("o")).unwrap(),
    )
    .unwrap();
    let executor = StoreExecutor::new(
        ProcessPool::builder(1).test_harness().build().unwrap(),
        file,
    );
    let err = executor.submit(concat::task(proxy, 1)).unwrap_err();
    assert!(matches!(&err, Error::Unreachable { .. }), "{err}");
}

#[test]
fn workers_and_callers_survive_a_server_restart() {
    let Some(mut server) = RedisServer::start("workers_and_callers_survive_a_restart") else {
        return;
    };
    let queue = "restart";
    let _worker = Worker::start(&server.url(), queue);
    let store = Store::new(unique("cluster-restart"), LocalConnector::new()).unwrap();
    let executor = StoreExecutor::new(executor(&server, queue), store);
    assert!(
        *executor
            .submit(pid_after::task(0))
            .unwrap()
            .result()
            .unwrap()
            > 0
    );
    server.restart();
    // The queue is gone with the data; both sides reconnect and recreate it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut f = executor.submit(pid_after::task(0)).unwrap();
        match f.result_timeout(Duration::from_secs(5)) {
            Ok(pid) => {
                assert!(*pid > 0);
                break;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "no recovery: {e}");
            }
        }
    }
    // A job the restart loses fails with a typed error instead of waiting
    // for ever.
    // Nothing of the recovery may be pending, so that the job pending next
    // is this one.
    let deadline = Instant::now() + Duration::from_secs(20);
    let jobs = format!("proxystore:queue:{queue}:jobs");
    while !server
        .raw(&["XPENDING", &jobs, "workers"])
        .starts_with("*4\r\n:0")
    {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            server.raw(&["XPENDING", &jobs, "workers"])
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut slow = executor.submit(pid_after::task(2000)).unwrap();
    wait_pending(&server, queue);
    // Let the caller read the answer to its XADD first: a restart that
    // swallows that answer makes the caller send the job again (and the job
    // is then run, not lost).
    std::thread::sleep(Duration::from_millis(200));
    server.restart();
    let err = slow.result_timeout(Duration::from_secs(20)).unwrap_err();
    assert!(
        matches!(&err, Error::Redis { message, .. } if message.contains("no longer in the queue")),
        "{err}"
    );
    let t = Instant::now();
    drop(executor);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "nothing left to wait for"
    );
}

#[test]
fn a_supervisor_replaces_the_workers_that_crash() {
    let Some(server) = RedisServer::start("a_supervisor_replaces_the_workers") else {
        return;
    };
    let queue = "supervised";
    let exe = std::env::current_exe().unwrap();
    let mut supervisor = Worker::start_with(
        &exe,
        &[
            "proxystore_worker_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ],
        &server.url(),
        queue,
        &[("PROXYSTORE_WORKERS", "2")],
    );
    let executor = ClusterExecutor::builder(&server.url(), queue)
        .settings(quick())
        .max_attempts(1)
        .build()
        .unwrap();
    let store = Store::new(unique("cluster-supervised"), LocalConnector::new()).unwrap();
    let executor = StoreExecutor::new(executor, store);
    let before: std::collections::HashSet<u32> = executor
        .map((0..20).map(|_| pid_after::task(20)))
        .unwrap()
        .map(|r| *r.unwrap())
        .collect();
    assert_eq!(before.len(), 2, "two worker processes");
    let err = executor
        .submit(crash::task())
        .unwrap()
        .result_timeout(Duration::from_secs(30))
        .unwrap_err();
    assert!(
        matches!(&err, Error::AttemptsExhausted { attempts: 1, .. }),
        "{err}"
    );
    // The crashed worker was replaced: two workers again, one of them new.
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let after: std::collections::HashSet<u32> = executor
            .map((0..20).map(|_| pid_after::task(20)))
            .unwrap()
            .map(|r| *r.unwrap())
            .collect();
        if after.len() == 2 && after != before {
            assert_eq!(
                after.intersection(&before).count(),
                1,
                "{before:?} {after:?}"
            );
            break after;
        }
        assert!(
            Instant::now() < deadline,
            "not replaced: {before:?} then {after:?}"
        );
    };
    assert!(
        supervisor.0.try_wait().unwrap().is_none(),
        "the supervisor runs on"
    );
    // Its workers die with it.
    supervisor.kill();
    let running = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while after.iter().any(running) {
        assert!(
            Instant::now() < deadline,
            "workers outlived their supervisor"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A long-lived worker serves callers that each make a store of the same
/// name with their own objects (a program run twice, each run with a fresh
/// Redis namespace): each job reads its own caller's store.
#[test]
fn a_worker_serves_successive_callers_whose_stores_share_a_name() {
    let Some(server) = RedisServer::start("a_worker_serves_successive_callers") else {
        return;
    };
    let queue = "successive";
    let _worker = Worker::start(&server.url(), queue);
    let name = unique("same-name");
    for run in 0..3 {
        let connector = proxystore::connectors::RedisConnector::new(server.url()).unwrap();
        let store = Store::new(name.clone(), connector).unwrap();
        let executor = StoreExecutor::new(executor(&server, queue), store);
        let result = executor
            .submit(concat::task(format!("run{run}"), run))
            .unwrap()
            .result_timeout(Duration::from_secs(30))
            .unwrap();
        assert!(result.is_proxy());
        assert_eq!(*result, format!("run{run}-{run}"));
        drop(result);
        executor.shutdown(true, false);
    }
}

#[proxied(types = [Vec<f64>])]
fn total(values: Vec<f64>) -> f64 {
    values.iter().sum()
}

#[proxied]
fn plus_one(x: u32) -> u32 {
    x + 1
}

/// Data flow on the multi-host executor: futures and results passed task to
/// task, an upstream failure named, waiting for the first of many.
#[test]
fn results_and_futures_pass_worker_to_worker() {
    let Some(server) = RedisServer::start("results_and_futures_pass_worker_to_worker") else {
        return;
    };
    let queue = "dataflow";
    let _workers = [
        Worker::start(&server.url(), queue),
        Worker::start(&server.url(), queue),
    ];
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(
        unique("cluster-flow"),
        FileConnector::new(dir.path().join("objects"))
            .unwrap()
            .shared(),
    )
    .unwrap();
    let executor = StoreExecutor::new(executor(&server, queue), store).close_store(false);
    let data: Vec<f64> = (0..10_000).map(f64::from).collect();
    let expected: f64 = data.iter().map(|v| v * 3.0).sum();
    let a = executor.submit(scale::task(data, 1.5)).unwrap();
    let b = executor.submit(scale::task(&a, 2.0)).unwrap();
    let c = executor.submit(total::task(b)).unwrap();
    assert_eq!(*c.result().unwrap(), expected);
    let a = a.result().unwrap();
    assert_eq!(
        *executor.submit(total::task(&a)).unwrap().result().unwrap(),
        expected / 2.0
    );
    drop(a);

    let failed = executor.submit(fails::task()).unwrap();
    let after = executor.submit(plus_one::task(failed)).unwrap();
    match after.result() {
        Err(Error::UpstreamFailed { upstream, .. }) => assert_eq!(upstream, fails::NAME),
        other => panic!("expected UpstreamFailed, got {other:?}"),
    }
    let futures = vec![
        executor.submit(pid_after::task(3000)).unwrap(),
        executor.submit(pid_after::task(1)).unwrap(),
    ];
    let first = proxystore::executor::wait(
        &futures,
        proxystore::executor::ReturnWhen::FirstCompleted,
        Some(Duration::from_secs(30)),
    );
    assert_eq!(first.done, [1]);
    drop(futures);
    executor.shutdown(true, false);
    assert_eq!(
        objects(&dir.path().join("objects")),
        Vec::<String>::new(),
        "intermediate results evicted"
    );
}
