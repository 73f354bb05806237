//! Faults of the multi-host executor done for real: a server that refuses
//! a worker's reply (out of memory), a connection cut while it carries a
//! job, a caller killed while its jobs run, a worker stopped long enough
//! to be taken for dead that then resumes. Each test failed before its fix.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxystore::connectors::FileConnector;
use proxystore::executor::cluster::ClusterExecutor;
use proxystore::{proxied, Store, StoreExecutor};
use support::cluster::{executor, kill_a_caller_with_jobs_queued, objects, wait_pending, Worker};
use support::common::unique;
use support::redis_server::RedisServer;

proxystore::test_worker!();

/// Sleeps, then says which process ran it.
#[proxied]
fn pid_after(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

/// Sleeps, then returns a result that goes through the store.
#[proxied(types = [String])]
fn slow_text(ms: u64) -> String {
    std::thread::sleep(Duration::from_millis(ms));
    format!("ran by {}", std::process::id())
}

/// Regression: a FINISH that fails with a server error (here OOM; READONLY
/// after a failover is the same) leaves the entry in the PEL of a worker
/// that is alive: nobody reaps it, nobody re-runs it, the future never
/// completes.
#[test]
fn a_reply_the_server_refuses_is_retried_until_it_lands() {
    let Some(server) = RedisServer::start("review_failed_finish") else {
        return;
    };
    let queue = "oom";
    let _worker = Worker::start(&server.url(), queue);
    let store = Store::new(
        unique("review-oom"),
        proxystore::connectors::LocalConnector::new(),
    )
    .unwrap();
    let executor = StoreExecutor::new(executor(&server, queue), store);
    let mut future = executor.submit(pid_after::task(1000)).unwrap();
    wait_pending(&server, queue);
    std::thread::sleep(Duration::from_millis(700));
    // A short memory squeeze while the task finishes.
    assert_eq!(server.raw(&["CONFIG", "SET", "maxmemory", "1"]), "+OK\r\n");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(server.raw(&["CONFIG", "SET", "maxmemory", "0"]), "+OK\r\n");
    let outcome = future.result_timeout(Duration::from_secs(15)).map(|v| *v);
    eprintln!(
        "XPENDING after 15 s: {:?}",
        server.raw(&[
            "XPENDING",
            "proxystore:queue:oom:jobs",
            "workers",
            "-",
            "+",
            "10"
        ])
    );
    eprintln!(
        "alive keys: {:?}",
        server.keys("proxystore:queue:oom:alive:*")
    );
    assert!(outcome.is_ok(), "future not completed: {outcome:?}");
}

/// A proxy that forwards everything, except that it cuts the first
/// connection whose server-to-client bytes contain `needle` (the bytes
/// never reach the client).
fn cutting_proxy(upstream: u16, needle: Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let tripped = Arc::new(AtomicBool::new(false));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok(n) = c_in.read(&mut buf) {
                    if n == 0 || s_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = s_out.shutdown(Shutdown::Both);
            });
            let (mut s_in, mut c_out) = (server, client);
            let tripped = tripped.clone();
            let needle = needle.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok(n) = s_in.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let chunk = &buf[..n];
                    if !tripped.load(Ordering::SeqCst)
                        && chunk.windows(needle.len()).any(|w| w == &needle[..])
                        && chunk.windows(6).any(|w| w == b"caller")
                    {
                        tripped.store(true, Ordering::SeqCst);
                        eprintln!("proxy: cut the connection carrying a job delivery");
                        break;
                    }
                    if c_out.write_all(chunk).is_err() {
                        break;
                    }
                }
                let _ = c_out.shutdown(Shutdown::Both);
                let _ = s_in.shutdown(Shutdown::Both);
            });
        }
    });
    port
}

/// Regression: an XREADGROUP reply lost on a broken connection (the server
/// delivered the entry, the worker never saw it) leaves the entry in the
/// PEL of a live worker, which only ever reads '>' again: stranded.
#[test]
fn a_delivery_lost_in_transit_runs_after_reconnecting() {
    let Some(server) = RedisServer::start("review_lost_delivery") else {
        return;
    };
    let queue = "lost";
    let store = Store::new(
        unique("review-lost"),
        proxystore::connectors::LocalConnector::new(),
    )
    .unwrap();
    // Creates the group before the worker starts.
    let executor = StoreExecutor::new(executor(&server, queue), store);
    let port = cutting_proxy(server.port(), b"proxystore:queue:lost:jobs".to_vec());
    let _worker = Worker::start(&format!("redis://127.0.0.1:{port}"), queue);
    std::thread::sleep(Duration::from_millis(500));
    let mut future = executor.submit(pid_after::task(0)).unwrap();
    let outcome = future.result_timeout(Duration::from_secs(15)).map(|v| *v);
    eprintln!(
        "XPENDING after 15 s: {:?}",
        server.raw(&[
            "XPENDING",
            "proxystore:queue:lost:jobs",
            "workers",
            "-",
            "+",
            "10"
        ])
    );
    assert!(outcome.is_ok(), "future not completed: {outcome:?}");
}

/// Regression: a caller killed while its jobs run (its heartbeat lives on
/// for caller_ttl, 30 s by default) gets replies it never reads; the reply
/// list expires, but the inputs and results in the store stay for ever.
#[test]
fn a_caller_killed_mid_job_leaves_no_objects() {
    let Some(server) = RedisServer::start("review_caller_killed_mid_job") else {
        return;
    };
    let queue = "midjob";
    let dir = tempfile::tempdir().unwrap();
    kill_a_caller_with_jobs_queued(&server, queue, dir.path());
    // A worker takes the jobs while the dead caller's heartbeat (2 s
    // here) has not expired yet: as for any job that was running when its
    // caller died.
    let _worker = Worker::start(&server.url(), queue);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.raw(&["XLEN", "proxystore:queue:midjob:jobs"]) != ":0\r\n" {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "objects after the jobs ran: {:?}",
        objects(&dir.path().join("objects"))
    );
    eprintln!("queue keys: {:?}", server.keys("proxystore:queue:midjob:*"));
    // reply_ttl is 5 s in that caller: wait for the reply list to expire.
    std::thread::sleep(Duration::from_secs(8));
    let keys: Vec<String> = server
        .keys("proxystore:queue:midjob:*")
        .into_iter()
        .filter(|k| !k.ends_with(":jobs") && !k.contains(":alive:"))
        .collect();
    eprintln!("queue keys 8 s later: {keys:?}");
    for k in &keys {
        eprintln!(
            "{k}: TTL {:?}, {:?}",
            server.raw(&["PTTL", k]),
            server
                .raw(&["LRANGE", k, "0", "-1"])
                .chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .collect::<String>()
        );
    }
    for o in objects(&dir.path().join("objects")) {
        eprintln!(
            "object {o}: {:?}",
            String::from_utf8_lossy(&std::fs::read(dir.path().join("objects").join(&o)).unwrap())
        );
    }
    assert_eq!(
        objects(&dir.path().join("objects")),
        Vec::<String>::new(),
        "objects of the dead caller left for ever"
    );
}

/// Regression: a job re-run by a worker taken for dead (stopped, then
/// resumed) stores its result again under the reserved key after the
/// caller's owned result was dropped and evicted: nobody evicts it again.
#[test]
fn a_late_rerun_does_not_recreate_an_evicted_result() {
    let Some(server) = RedisServer::start("review_late_rerun") else {
        return;
    };
    let queue = "zombie";
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(
        unique("review-zombie"),
        FileConnector::new(dir.path().join("objects")).unwrap(),
    )
    .unwrap();
    let executor = StoreExecutor::new(executor(&server, queue), store).close_store(false);
    let first = Worker::start(&server.url(), queue);
    let mut future = executor.submit(slow_text::task(2000)).unwrap();
    wait_pending(&server, queue);
    std::thread::sleep(Duration::from_millis(100));
    first.signal(libc::SIGSTOP);
    let _second = Worker::start(&server.url(), queue);
    let result = future.result_timeout(Duration::from_secs(20)).unwrap();
    eprintln!("first result: {}", *result);
    drop(result);
    assert_eq!(objects(&dir.path().join("objects")), Vec::<String>::new());
    first.signal(libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(4));
    executor.shutdown(true, false);
    assert_eq!(
        objects(&dir.path().join("objects")),
        Vec::<String>::new(),
        "the late re-run's result is left behind"
    );
}

/// Regression: `ClusterBuilder`'s derived Debug prints the URL with its
/// password.
#[test]
fn builder_debug_hides_the_password() {
    let builder = ClusterExecutor::builder("redis://user:hunter2@redis-host:6379/0", "q");
    let shown = format!("{builder:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

/// Closing a store removes only its own object keys: namespaces that
/// would put other keys under its prefix (`a:b` under `a`, `queue` over
/// the executor's queues) are refused, and close matches only key-shaped
/// names.
#[test]
fn closing_a_store_removes_only_its_own_keys() {
    use proxystore::connectors::{Connector, RedisConnector};
    let Some(server) = RedisServer::start("closing_a_store_removes_only_its_own_keys") else {
        return;
    };
    let executor = executor(&server, "jobs");
    for bad in ["a:b", "queue"] {
        let err = RedisConnector::builder(server.url())
            .namespace(bad)
            .build()
            .unwrap_err();
        assert!(
            matches!(err, proxystore::Error::InvalidConfig { .. }),
            "{bad}: {err}"
        );
    }
    let a = RedisConnector::builder(server.url())
        .namespace("a")
        .build()
        .unwrap();
    a.put(&[b"mine"]).unwrap();
    assert!(server
        .raw(&["SET", "proxystore:a:notes", "theirs"])
        .starts_with("+OK"));
    let before = server.keys("proxystore:queue:*");
    a.close().unwrap();
    assert_eq!(
        server.keys("proxystore:queue:*"),
        before,
        "queue keys removed"
    );
    assert_eq!(server.keys("proxystore:a:*"), ["proxystore:a:notes"]);
    drop(executor);
}
