//! The small-object path through the file store, alone: a small value
//! proxied into and out of a process-pool task (`ProxyAlways`), the no-op
//! task (`ProxyNever`), a store put + get + evict in one process, and the
//! floor of two small files created, written, read and removed. Each row
//! gives the median latency and the CPU time per task of this process and
//! its pool workers.
//!
//! `cargo run --release -p proxystore-bench --example file_round_trip -- [--dir DIR] [--n N] [--rounds R] [--only ROW]`
//!
//! `--dir` is where the stores are made (default: a temporary directory
//! under `target/`, on the same file system as the benchmarks' default);
//! give a tmpfs path (`/dev/shm/...`) to compare.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use proxystore::connectors::FileConnector;
use proxystore::executor::ProcessPool;
use proxystore::{proxied, ShouldProxy, Store, StoreExecutor};
use proxystore_bench::{cpu_seconds, small_file_cycles};

#[proxied]
fn noop(x: i64) -> i64 {
    x
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Latencies (us) of `n` calls of `f`, and the CPU time per call (us).
fn measure(n: usize, mut f: impl FnMut(usize)) -> (f64, f64) {
    let cpu = cpu_seconds();
    let mut xs = Vec::with_capacity(n);
    for i in 0..n {
        let t0 = Instant::now();
        f(i);
        xs.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    let cpu = (cpu_seconds() - cpu) * 1e6 / n as f64;
    (median(xs), cpu)
}

fn executor(dir: &Path, policy: ShouldProxy) -> StoreExecutor {
    let name = format!("rt-{}-{}", dir.display(), std::process::id());
    let store = Store::builder(name, FileConnector::new(dir).unwrap())
        .cache_size(0)
        .register(false)
        .build()
        .unwrap();
    StoreExecutor::new(ProcessPool::new(2).unwrap(), store).should_proxy(policy)
}

fn main() {
    proxystore::worker::init();
    let mut args = std::env::args().skip(1);
    let mut root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tmp");
    let (mut n, mut rounds, mut only) = (2000usize, 3usize, None::<String>);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => root = args.next().expect("--dir DIR").into(),
            "--n" => n = args.next().and_then(|v| v.parse().ok()).expect("--n N"),
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--rounds R")
            }
            "--only" => only = args.next(),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let run = |row: &str| only.as_deref().is_none_or(|o| row.starts_with(o));
    let root = root.join(format!("file-round-trip-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let mut rows: Vec<(&str, Vec<(f64, f64)>)> = Vec::new();
    let mut add = |name: &'static str, x: (f64, f64)| match rows.iter_mut().find(|r| r.0 == name) {
        Some(r) => r.1.push(x),
        None => rows.push((name, vec![x])),
    };
    for _ in 0..rounds {
        if run("always") {
            let ex = executor(&root.join("always"), ShouldProxy::Always);
            for i in 0..50 {
                ex.submit(noop::task(i)).unwrap().result().unwrap();
            }
            add(
                "always: small value, ProxyAlways round trip",
                measure(n, |i| {
                    let r = ex.submit(noop::task(i as i64)).unwrap().result().unwrap();
                    assert!(r.is_proxy());
                    assert_eq!(*r, i as i64);
                }),
            );
        }
        if run("never") {
            let ex = executor(&root.join("never"), ShouldProxy::Never);
            for i in 0..200 {
                ex.submit(noop::task(i)).unwrap().result().unwrap();
            }
            add(
                "never: no-op latency (ProxyNever)",
                measure(n * 5, |i| {
                    let r = ex.submit(noop::task(i as i64)).unwrap().result().unwrap();
                    assert_eq!(*r, i as i64);
                }),
            );
        }
        if run("store") {
            let store = Store::builder(
                format!("rt-store-{}", std::process::id()),
                FileConnector::new(root.join("store")).unwrap(),
            )
            .cache_size(0)
            .register(false)
            .build()
            .unwrap();
            add(
                "store: put + get + evict of an i64, twice",
                measure(n, |i| {
                    for _ in 0..2 {
                        let key = store.put(&(i as i64)).unwrap();
                        let back: i64 = store.load(&key).unwrap().unwrap();
                        assert_eq!(back, i as i64);
                        store.evict(&key).unwrap();
                    }
                }),
            );
            store.close().unwrap();
        }
        if run("files") {
            let file = root.join("plain");
            let small = [5u8; 64];
            let mut back = [0u8; 64];
            add(
                "files: small file create+write+read+unlink, twice",
                measure(n, |_| {
                    small_file_cycles(&file, &small, &mut back);
                    black_box(&back);
                }),
            );
        }
    }
    println!(
        "{} ({} rounds, medians of round medians)",
        root.display(),
        rounds
    );
    println!("{:<52} {:>10} {:>12}", "row", "us", "CPU us/task");
    for (name, xs) in rows {
        let lat = median(xs.iter().map(|x| x.0).collect());
        let cpu = median(xs.iter().map(|x| x.1).collect());
        println!("{name:<52} {lat:>10.1} {cpu:>12.1}");
    }
    let _ = std::fs::remove_dir_all(&root);
}
