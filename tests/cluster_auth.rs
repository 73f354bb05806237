//! Authenticated jobs of the multi-host executor: with a secret, workers
//! act only on job entries signed with it, so a forged entry (written to
//! the stream by hand) cannot evict or overwrite another store's objects.
//! A real redis-server, real worker processes.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proxystore::connectors::RedisConnector;
use proxystore::executor::cluster::{ClusterExecutor, SECRET_ENV, SECRET_FILE_ENV};
use proxystore::executor::{Completion, Executor};
use proxystore::task::Job;
use proxystore::{proxied, Error, Key, Store, StoreExecutor};
use support::cluster::{quick, Worker, WORKER_ENTRY};
use support::common::unique;
use support::redis_server::RedisServer;

proxystore::test_worker!();

#[proxied(types = [String])]
fn make(text: String) -> String {
    format!("made from {text}")
}

/// Keeps the jobs it is given, as bytes, and runs none.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Vec<u8>>>>);

impl Executor for Capture {
    fn submit(&self, job: Job, _completion: Completion) {
        self.0.lock().unwrap().push(job.to_bytes());
    }
    fn shutdown(&self, _wait: bool, _cancel_pending: bool) {}
}

/// The bytes of a job of `store` whose result key is `result`, as anyone
/// who can read a proxy of the store could make them.
fn forged_job(store: &Store, result: Key) -> Vec<u8> {
    let capture = Capture::default();
    let executor = StoreExecutor::new(capture.clone(), store.clone()).close_store(false);
    drop(executor.submit(make::task("forger")));
    let mut job = capture.0.lock().unwrap().pop().unwrap();
    // Frames: tag, length (u64 LE), body: the name, the context, then the
    // 16-byte result key.
    let frame =
        |at: usize| 9 + u64::from_le_bytes(job[at + 1..at + 9].try_into().unwrap()) as usize;
    let key_at = frame(0) + frame(frame(0)) + 9;
    job[key_at..key_at + 16].copy_from_slice(result.as_uuid().as_bytes());
    job
}

fn connection(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Waits until the queue holds no entry, waiting or pending.
fn wait_drained(server: &RedisServer, queue: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let jobs = format!("proxystore:queue:{queue}:jobs");
    while server.raw(&["XLEN", &jobs]) != ":0\r\n" {
        assert!(
            Instant::now() < deadline,
            "the worker never took the entries"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn caller(server: &RedisServer, queue: &str, secret: Option<&str>) -> ClusterExecutor {
    let builder = ClusterExecutor::builder(&server.url(), queue).settings(quick());
    match secret {
        Some(secret) => builder.secret(secret),
        None => builder,
    }
    .build()
    .unwrap()
}

/// Entries written by hand that name another store's objects as inputs to
/// evict, or as their result key, change nothing; signed jobs run.
#[test]
fn forged_entries_touch_nothing_when_workers_have_a_secret() {
    let Some(server) =
        RedisServer::start("forged_entries_touch_nothing_when_workers_have_a_secret")
    else {
        return;
    };
    let queue = unique("auth-forged").replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("secret");
    std::fs::write(&secret_file, "the queue's secret\n").unwrap();
    let exe = std::env::current_exe().unwrap();
    let _worker = Worker::start_with(
        &exe,
        &WORKER_ENTRY,
        &server.url(),
        &queue,
        &[(SECRET_FILE_ENV, secret_file.to_str().unwrap())],
    );

    // A victim's store, and its objects.
    let victim = Store::new(
        unique("auth-victim"),
        RedisConnector::builder(server.url())
            .namespace(unique("victim"))
            .build()
            .unwrap(),
    )
    .unwrap();
    let evicted = victim.put(&String::from("to be evicted")).unwrap();
    let overwritten = victim.put(&String::from("to be overwritten")).unwrap();

    // A signed job runs (and the group exists before the forgeries).
    let executor = StoreExecutor::new(caller(&server, &queue, Some("the queue's secret")), {
        Store::new(
            unique("auth-caller"),
            RedisConnector::new(server.url()).unwrap(),
        )
        .unwrap()
    });
    let result = executor
        .submit(make::task("signed"))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(*result, "made from signed");

    let mut con = connection(&server);
    let jobs = format!("proxystore:queue:{queue}:jobs");
    let job = forged_job(&victim, overwritten);
    let evict = evicted.as_uuid().as_bytes().to_vec();
    for mac in [None, Some(vec![0u8; 32])] {
        let mut xadd = redis::cmd("XADD");
        xadd.arg(&jobs).arg("*").arg("job").arg(&job);
        xadd.arg("caller")
            .arg("abcdef")
            .arg("id")
            .arg(1)
            .arg("attempts");
        xadd.arg(3).arg("ttl").arg(1000).arg("evict").arg(&evict);
        if let Some(mac) = mac {
            xadd.arg("mac").arg(mac);
        }
        let _: String = xadd.query(&mut con).unwrap();
    }
    wait_drained(&server, &queue);
    // One more signed job: the forgeries were taken before it.
    let result = executor
        .submit(make::task("again"))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(*result, "made from again");

    // Read afresh, not from the victim's cache.
    let fresh = Store::from_config(victim.config().clone()).unwrap();
    assert_eq!(
        fresh
            .get::<String>(&evicted)
            .unwrap()
            .as_deref()
            .map(String::as_str),
        Some("to be evicted"),
        "a forged entry evicted another store's object"
    );
    assert_eq!(
        fresh
            .get::<String>(&overwritten)
            .unwrap()
            .as_deref()
            .map(String::as_str),
        Some("to be overwritten"),
        "a forged entry overwrote another store's object"
    );
    drop(executor);
    victim.close().unwrap();
}

/// A caller whose secret differs from the workers' (or that has none)
/// gets a clear error, not a job that waits for ever; with the right one
/// the same job runs.
#[test]
fn a_caller_with_another_secret_gets_an_error() {
    let Some(server) = RedisServer::start("a_caller_with_another_secret_gets_an_error") else {
        return;
    };
    let queue = unique("auth-mismatch").replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let exe = std::env::current_exe().unwrap();
    let _worker = Worker::start_with(
        &exe,
        &WORKER_ENTRY,
        &server.url(),
        &queue,
        &[(SECRET_ENV, "right")],
    );
    let store = || {
        Store::new(
            unique("auth-mismatch"),
            RedisConnector::new(server.url()).unwrap(),
        )
        .unwrap()
    };
    for secret in [Some("wrong"), None] {
        let executor = StoreExecutor::new(caller(&server, &queue, secret), store());
        let err = executor
            .submit(make::task("refused"))
            .unwrap()
            .result_timeout(Duration::from_secs(60))
            .unwrap_err();
        match &err {
            Error::TaskFailed { message, .. } => {
                assert!(message.contains("secret"), "{err}")
            }
            other => panic!("{secret:?}: {other:?}"),
        }
    }
    let executor = StoreExecutor::new(caller(&server, &queue, Some("right")), store());
    let result = executor
        .submit(make::task("right"))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(*result, "made from right");
}

/// The secret never shows.
#[test]
fn the_secret_never_shows() {
    let builder = ClusterExecutor::builder("redis://127.0.0.1:1", "q").secret("hunter2-secret");
    let shown = format!("{builder:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    let err = ClusterExecutor::builder("redis://127.0.0.1:1", "q")
        .secret("")
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
}

/// Regression: with a secret, job entries were authenticated but the
/// records of a caller's inputs were not, so anyone who could write the
/// queue's keys could plant a "dead caller" whose record named another
/// store's object, and the sweeping worker evicted it. Records (and
/// replies) are tagged now; an untagged one is not acted on.
#[test]
fn a_forged_record_of_a_dead_callers_inputs_evicts_nothing() {
    let Some(server) = RedisServer::start("a_forged_record_of_a_dead_callers_inputs") else {
        return;
    };
    let queue = unique("auth-record").replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let exe = std::env::current_exe().unwrap();
    let _worker = Worker::start_with(
        &exe,
        &WORKER_ENTRY,
        &server.url(),
        &queue,
        &[(SECRET_ENV, "the queue's secret")],
    );
    let victim = Store::new(
        unique("auth-record-victim"),
        RedisConnector::builder(server.url())
            .namespace(unique("record-victim"))
            .build()
            .unwrap(),
    )
    .unwrap();
    let kept = victim.put(&String::from("kept")).unwrap();
    // The worker serves (and its group exists) before the forgery.
    let executor = StoreExecutor::new(caller(&server, &queue, Some("the queue's secret")), {
        Store::new(
            unique("auth-record-caller"),
            RedisConnector::new(server.url()).unwrap(),
        )
        .unwrap()
    });
    let result = executor
        .submit(make::task("signed"))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(*result, "made from signed");

    // A record as a caller writes it: the job's stub (its store and result
    // key), then the keys of its inputs; here, the victim's object.
    let stub = forged_job(&victim, kept);
    let mut record = (stub.len() as u32).to_le_bytes().to_vec();
    record.extend_from_slice(&stub);
    record.extend_from_slice(kept.as_uuid().as_bytes());
    let mut con = connection(&server);
    let prefix = format!("proxystore:queue:{queue}");
    let _: () = redis::pipe()
        .cmd("SADD")
        .arg(format!("{prefix}:callers"))
        .arg("deadbeef")
        .ignore()
        .cmd("HSET")
        .arg(format!("{prefix}:inputs:deadbeef"))
        .arg(1)
        .arg(&record)
        .ignore()
        .query(&mut con)
        .unwrap();
    // Swept: the planted caller is gone from the set.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let member: i64 = redis::cmd("SISMEMBER")
            .arg(format!("{prefix}:callers"))
            .arg("deadbeef")
            .query(&mut con)
            .unwrap();
        if member == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the dead caller was never swept");
        std::thread::sleep(Duration::from_millis(50));
    }
    let fresh = Store::from_config(victim.config().clone()).unwrap();
    assert_eq!(
        fresh
            .get::<String>(&kept)
            .unwrap()
            .as_deref()
            .map(String::as_str),
        Some("kept"),
        "a forged record of a dead caller's inputs evicted another store's object"
    );
    drop(executor);
    victim.close().unwrap();
}
