//! A three-stage pipeline whose data never passes through the caller.
//!
//! 1. `generate` makes large `Vec<f64>` chunks in the workers;
//! 2. `transform` maps each chunk;
//! 3. `combine` adds chunks pairwise, as a tree, and `summarize` reduces
//!    the last one to a few numbers.
//!
//! Each stage is submitted with the previous stage's *futures* as
//! arguments: the executor holds a task until its inputs are done, and
//! every intermediate chunk goes from worker to worker through the store
//! as a reference. Futures passed by value hand their results to the next
//! task, which evicts them when it ends. The caller only ever reads the
//! final summary: its peak memory, printed at the end, stays far below the
//! data that flowed.
//!
//! Run it with `cargo run --release --example pipeline [-- CHUNKS MIB]`
//! (default: 16 chunks of 8 MiB).

use std::time::Instant;

use proxystore::connectors::FileConnector;
use proxystore::executor::{ProcessPool, TaskFuture};
use proxystore::{proxied, Store, StoreExecutor};

/// Chunk `seed`: `len` values in 0..1000.
#[proxied(types = [Vec<f64>])]
fn generate(seed: u64, len: usize) -> Vec<f64> {
    (0..len as u64)
        .map(|i| ((seed * 7919 + i * 104_729) % 1000) as f64)
        .collect()
}

#[proxied(types = [Vec<f64>])]
fn transform(values: Vec<f64>) -> Vec<f64> {
    values.into_iter().map(|v| 2.0 * v + 1.0).collect()
}

#[proxied(types = [Vec<f64>])]
fn combine(mut left: Vec<f64>, right: Vec<f64>) -> Vec<f64> {
    for (l, r) in left.iter_mut().zip(&right) {
        *l += r;
    }
    left
}

/// The sum and the largest value.
#[proxied(types = [Vec<f64>])]
fn summarize(values: Vec<f64>) -> (f64, f64) {
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    (values.iter().sum(), max)
}

fn main() -> proxystore::Result<()> {
    // In a pool worker this serves tasks and never returns.
    proxystore::worker::init();

    let mut args = std::env::args().skip(1);
    let chunks: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(16);
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let len = mib * 1024 * 1024 / 8;

    let dir = std::env::temp_dir().join(format!("proxystore-pipeline-{}", std::process::id()));
    let store = Store::new("pipeline-example", FileConnector::new(&dir)?)?;
    let executor = StoreExecutor::new(ProcessPool::new(2)?, store);
    let started = Instant::now();

    // Stages 1 and 2: each transform waits for its chunk.
    let mut level: Vec<TaskFuture<Vec<f64>>> = Vec::new();
    for seed in 0..chunks {
        let chunk = executor.submit(generate::task(seed, len))?;
        level.push(executor.submit(transform::task(chunk))?);
    }
    // Stage 3: a tree of pairwise sums, then the summary.
    while level.len() > 1 {
        let mut next = Vec::new();
        let mut pending = level.into_iter();
        while let Some(left) = pending.next() {
            match pending.next() {
                Some(right) => next.push(executor.submit(combine::task(left, right))?),
                None => next.push(left),
            }
        }
        level = next;
    }
    let last = level.pop().expect("at least one chunk");
    let (sum, max) = *executor.submit(summarize::task(last))?.result()?;
    let elapsed = started.elapsed();

    // The same numbers, computed here one value at a time (no chunk is
    // ever held in this process).
    let mut expected = 0.0;
    for seed in 0..chunks {
        for i in 0..len as u64 {
            expected += 2.0 * ((seed * 7919 + i * 104_729) % 1000) as f64 + 1.0;
        }
    }
    assert_eq!(sum, expected, "the pipeline's sum");
    assert!(max > 0.0);

    drop(executor); // shuts the pool down and closes the store
    assert!(!dir.exists(), "nothing left behind");

    let data_mib = chunks as usize * mib;
    // generated + transformed chunks, and one per pairwise sum
    let moved_mib = (2 * chunks as usize + chunks.saturating_sub(1) as usize) * mib;
    println!("{chunks} chunks of {mib} MiB: sum {sum}, in {elapsed:.2?}");
    println!(
        "intermediate results that went worker to worker: {moved_mib} MiB ({data_mib} MiB generated)"
    );
    match peak_rss_mib() {
        Some(peak) => {
            println!("caller's peak memory (VmHWM): {peak:.1} MiB");
            assert!(
                peak < data_mib as f64 / 2.0 || data_mib < 64,
                "the caller's peak ({peak:.1} MiB) should stay far below the data ({data_mib} MiB)"
            );
        }
        None => println!("caller's peak memory: not available on this system"),
    }
    Ok(())
}

/// This process's peak resident memory, from `/proc/self/status`.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
