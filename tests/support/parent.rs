//! A program that runs a pool of its own workers, for the tests that kill
//! a pool's process from outside.
//!
//! Usage: `proxystore-parent <dir>`: starts a pool of one worker, submits a
//! task that writes `<dir>/first` and then sleeps for a minute, then two
//! that would write `<dir>/second` and `<dir>/third`; prints the worker's
//! pid and waits for ever.
//!
//! `proxystore-parent cluster-submit <url> <queue> <dir>`: a cluster caller
//! with a 2 s heartbeat that stores three `String` inputs in a
//! `FileConnector` at `<dir>/objects`, submits three jobs, prints
//! `submitted` once they are in the queue, and waits for ever.
//!
//! `proxystore-parent redis-caller <url> <namespace>`: a caller whose
//! store is a `RedisConnector` (namespace `<namespace>`) with an input
//! expiry of 1 s; submits to a thread pool a task with a `String` input
//! that sleeps for ever, prints `submitted`, and waits for ever.

use std::path::PathBuf;
use std::time::Duration;

use proxystore::connectors::LocalConnector;
use proxystore::executor::ProcessPool;
use proxystore::{proxied, Store, StoreExecutor};

#[proxied(types = [String])]
fn shout(text: String) -> String {
    text.to_uppercase()
}

#[proxied]
fn mark(dir: PathBuf, name: String, sleep_ms: u64) -> u64 {
    std::fs::write(dir.join(name), b"started").unwrap();
    std::thread::sleep(Duration::from_millis(sleep_ms));
    sleep_ms
}

fn main() {
    proxystore::worker::init();
    if std::env::args().nth(1).as_deref() == Some("cluster-submit") {
        return cluster_submit();
    }
    if std::env::args().nth(1).as_deref() == Some("redis-caller") {
        return redis_caller();
    }
    let dir = PathBuf::from(std::env::args().nth(1).expect("a directory"));
    let pool = ProcessPool::new(1).unwrap();
    println!("{}", pool.worker_pids()[0]);
    let store = Store::new("parent", LocalConnector::new()).unwrap();
    let executor = StoreExecutor::new(pool, store);
    let futures = [("first", 60_000), ("second", 0), ("third", 0)].map(|(name, ms)| {
        executor
            .submit(mark::task(dir.clone(), name.to_string(), ms))
            .unwrap()
    });
    std::thread::sleep(Duration::from_secs(3600));
    drop(futures);
}

fn cluster_submit() {
    use proxystore::connectors::FileConnector;
    use proxystore::executor::cluster::{ClusterExecutor, Settings};
    let args: Vec<String> = std::env::args().skip(2).collect();
    let (url, queue, dir) = (&args[0], &args[1], PathBuf::from(&args[2]));
    let settings = Settings {
        heartbeat: Duration::from_millis(200),
        heartbeat_ttl: Duration::from_millis(800),
        lease: Duration::from_millis(800),
        reap_every: Duration::from_millis(200),
        caller_ttl: Duration::from_secs(2),
        reply_ttl: Duration::from_secs(5),
        ..Settings::default()
    };
    let executor = ClusterExecutor::builder(url, queue)
        .settings(settings)
        .build()
        .unwrap();
    let store = Store::new(
        "cluster-parent",
        FileConnector::new(dir.join("objects")).unwrap(),
    )
    .unwrap();
    let executor = StoreExecutor::new(executor, store);
    let futures: Vec<_> = (0..3)
        .map(|i| executor.submit(shout::task(format!("input {i}"))).unwrap())
        .collect();
    // Wait until the jobs are in the stream.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while executor_jobs(url, queue) < 3 {
        assert!(std::time::Instant::now() < deadline, "jobs never queued");
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("submitted");
    std::thread::sleep(Duration::from_secs(3600));
    drop(futures);
}

fn executor_jobs(url: &str, queue: &str) -> i64 {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("redis://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let key = format!("proxystore:queue:{queue}:jobs");
    write!(s, "*2\r\n$4\r\nXLEN\r\n${}\r\n{}\r\n", key.len(), key).unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    text.trim().trim_start_matches(':').parse().unwrap_or(0)
}

#[proxied(types = [String])]
fn hold_for_ever(text: String) -> usize {
    std::thread::sleep(Duration::from_secs(3600));
    text.len()
}

fn redis_caller() {
    let arg = |i| {
        std::env::args()
            .nth(i)
            .expect("redis-caller <url> <namespace>")
    };
    let connector = proxystore::connectors::RedisConnector::builder(arg(2))
        .namespace(arg(3))
        .build()
        .unwrap();
    let store = Store::new("redis-caller", connector).unwrap();
    let executor = StoreExecutor::new(proxystore::executor::ThreadPool::new(1).unwrap(), store)
        .input_expiry(Duration::from_secs(1));
    let _future = executor
        .submit(hold_for_ever::task("an input of the caller".to_string()))
        .unwrap();
    println!("submitted");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
