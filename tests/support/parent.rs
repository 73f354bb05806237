//! A program that runs a pool of its own workers, for the tests that kill
//! a pool's process from outside.
//!
//! Usage: `proxystore-parent <dir>`: starts a pool of one worker, submits a
//! task that writes `<dir>/first` and then sleeps for a minute, then two
//! that would write `<dir>/second` and `<dir>/third`; prints the worker's
//! pid and waits for ever.

use std::path::PathBuf;
use std::time::Duration;

use proxystore::connectors::LocalConnector;
use proxystore::executor::ProcessPool;
use proxystore::{proxied, Store, StoreExecutor};

#[proxied]
fn mark(dir: PathBuf, name: String, sleep_ms: u64) -> u64 {
    std::fs::write(dir.join(name), b"started").unwrap();
    std::thread::sleep(Duration::from_millis(sleep_ms));
    sleep_ms
}

fn main() {
    proxystore::worker::init();
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
