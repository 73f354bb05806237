//! A progress bar over an executor's tasks, with what their workers did in
//! the store.
//!
//! A pool of two worker processes runs 120 tasks; each reads a 256 KiB
//! argument from a file store and stores a result. A thread draws
//! `StoreExecutor::progress()` (pending, running, done, failed) as a bar
//! with `indicatif` until every task is finished; the store figures the
//! workers sent back (`gather_worker_metrics`) are printed at the end,
//! beside the caller's own.
//!
//! With a `ClusterExecutor`, `cluster.monitor()` taken before wrapping it
//! gives the same per host (`monitor.hosts()`), for lines under the bar.
//!
//! Run it with `cargo run --example progress --features progress`.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use proxystore::connectors::FileConnector;
use proxystore::executor::ProcessPool;
use proxystore::store::Operation;
use proxystore::{proxied, Store, StoreExecutor};

/// Sums the bytes of its argument after some work of varying length; one
/// task in 40 fails.
#[proxied(types = [Vec<u8>])]
fn checksum(round: u32, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    std::thread::sleep(Duration::from_millis(5 + u64::from(round % 7) * 3));
    if round % 40 == 39 {
        return Err(format!("round {round} was unlucky"));
    }
    let sum: u64 = bytes.iter().map(|b| u64::from(*b)).sum();
    Ok(sum.to_le_bytes().repeat(1024))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // In a pool worker this serves tasks and never returns.
    proxystore::worker::init();

    let dir = tempfile::tempdir()?;
    let store = Store::builder("progress-example", FileConnector::new(dir.path())?)
        .metrics(true)
        .build()?;
    let executor = StoreExecutor::new(ProcessPool::new(2)?, store).gather_worker_metrics(true);

    let tasks = 120u32;
    let futures = (0..tasks)
        .map(|round| executor.submit(checksum::task(round, vec![1u8; 256 << 10])))
        .collect::<proxystore::Result<Vec<_>>>()?;

    let bar = ProgressBar::new(u64::from(tasks));
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos:>3}/{len} {msg} [{elapsed_precise}]",
    )?);
    std::thread::scope(|scope| {
        scope.spawn(|| loop {
            let progress = executor.progress();
            bar.set_position(progress.finished() as u64);
            bar.set_message(format!(
                "{} running, {} pending, {} failed",
                progress.running, progress.pending, progress.failed
            ));
            if progress.finished() == tasks as usize {
                bar.finish();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        });
    });

    let failed = futures
        .into_iter()
        .map(|f| f.result())
        .filter(Result::is_err)
        .count();
    println!("{}", executor.progress());
    assert_eq!(failed, 3);

    let workers = executor.worker_metrics();
    let (get, put) = (workers.get(Operation::Get), workers.get(Operation::Put));
    println!(
        "in the workers: {} reads ({:.1} MiB, {:.1?}), {} puts ({:.1} MiB, {:.1?})",
        get.count,
        get.bytes as f64 / (1 << 20) as f64,
        get.time,
        put.count,
        put.bytes as f64 / (1 << 20) as f64,
        put.time
    );
    let caller = executor.store().metrics().unwrap_or_default();
    let (put, evict) = (caller.get(Operation::Put), caller.get(Operation::Evict));
    println!(
        "in the caller:  {} puts ({:.1} MiB, {:.1?}), {} evictions",
        put.count,
        put.bytes as f64 / (1 << 20) as f64,
        put.time,
        evict.count
    );
    // Figures come back with results: the failed tasks sent none.
    assert_eq!(
        workers.get(Operation::Get).count,
        u64::from(tasks) - failed as u64
    );
    Ok(())
}
