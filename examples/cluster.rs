//! The seed example on many hosts: the same `concat` task, with objects in
//! Redis (`RedisConnector`) and jobs on a Redis stream (`ClusterExecutor`)
//! served by workers on any host that can reach the server.
//!
//! The steps, in the order they can run:
//!
//! 1. Start Redis where every host can reach it:
//!    `redis-server --bind 0.0.0.0 --protected-mode no --save ''`
//! 2. Build this program once (callers and workers run the same binary):
//!    `cargo build --release --example cluster --features cluster`, and copy
//!    `target/release/examples/cluster` to each worker host.
//! 3. On each worker host, run it in worker mode (here with 4 worker
//!    processes, replaced if a task crashes one); each prints a ready line
//!    with its queue, host and tasks, and drains on Ctrl-C or SIGTERM:
//!    `PROXYSTORE_CLUSTER=redis://redis-host:6379 PROXYSTORE_QUEUE=example PROXYSTORE_WORKERS=4 ./cluster`
//! 4. Run the caller (it waits for workers, and warns if none is alive):
//!    `cargo run --release --example cluster --features cluster -- redis://redis-host:6379`
//!
//! With `--local-workers N` the caller starts N workers on this host itself
//! (the same command as step 3), which is what
//! `cargo run --example cluster --features cluster -- redis://127.0.0.1:6379 --local-workers 2`
//! does on one machine.

use std::process::{Child, Command};

use proxystore::connectors::RedisConnector;
use proxystore::executor::cluster::{ClusterExecutor, CLUSTER_ENV, QUEUE_ENV};
use proxystore::{proxied, Store, StoreExecutor};

/// Joins a base string and a number.
#[proxied(types = [String])]
fn concat(base: String, num: i64) -> String {
    format!("{base}-{num}")
}

/// Sums a large vector where it is stored.
#[proxied(types = [Vec<f64>])]
fn total(values: Vec<f64>) -> f64 {
    values.iter().sum()
}

const QUEUE: &str = "example";

fn main() -> proxystore::Result<()> {
    // With PROXYSTORE_CLUSTER set, this serves the queue and never returns.
    proxystore::worker::init();

    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .first()
        .cloned()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_string());
    let local_workers: usize = match args.iter().position(|a| a == "--local-workers") {
        Some(i) => args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(2),
        None => 0,
    };
    let mut workers: Vec<Child> = (0..local_workers)
        .map(|_| {
            Command::new(std::env::current_exe().expect("this program"))
                .env(CLUSTER_ENV, &url)
                .env(QUEUE_ENV, QUEUE)
                .spawn()
                .expect("a worker starts")
        })
        .collect();

    let store = Store::new("cluster-example", RedisConnector::new(&url)?)?;
    let executor = StoreExecutor::new(ClusterExecutor::new(&url, QUEUE)?, store);

    let result = executor
        .submit(concat::task("foobar".to_string(), 42))?
        .result()?;
    assert!(result.is_proxy(), "the String came back through Redis");
    assert_eq!(*result, "foobar-42");
    println!("concat(\"foobar\", 42) = {:?}", *result);

    let values: Vec<f64> = (0..1_000_000).map(f64::from).collect();
    let sum = executor.submit(total::task(values))?.result()?;
    println!("total of 1,000,000 values = {}", *sum);
    assert_eq!(*sum, 499_999_500_000.0);

    drop((result, sum)); // owned results: evicted from Redis here
    drop(executor); // the store is closed: its keys are removed from Redis
    for worker in &mut workers {
        let _ = worker.kill();
        let _ = worker.wait();
    }
    println!("the store's keys are gone from Redis; the workers' heartbeats expire within 3 s");
    Ok(())
}
