//! The shared-memory store beside the file store, on the rows where they
//! differ most: proxied echo of bytes at 1 MiB, 10 MiB and 100 MiB, and a
//! small value proxied both ways, each with its CPU time per task, and two
//! memcpy into fresh buffers as the floor; several interleaved rounds.
//!
//! `cargo bench -p proxystore-bench --bench shm_echo -- [--rounds N] [--quick]`

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use proxystore::connectors::{Connector, FileConnector, SharedMemoryConnector};
use proxystore::executor::ProcessPool;
use proxystore::{proxied, ShouldProxy, Store, StoreExecutor};
use proxystore_bench::cpu_seconds;

const MIB: usize = 1 << 20;

#[proxied]
fn echo(bytes: Vec<u8>) -> Vec<u8> {
    bytes
}

#[proxied]
fn noop(x: i64) -> i64 {
    x
}

fn executor(connector: impl Connector, label: &str, policy: ShouldProxy) -> StoreExecutor {
    let name = format!("shm-echo-{label}-{}", std::process::id());
    let store = Store::builder(name, connector)
        .cache_size(0)
        .build()
        .unwrap();
    StoreExecutor::new(ProcessPool::new(2).unwrap(), store).should_proxy(policy)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Times `n` runs of `run` on arguments from `make`, all built before
/// (untimed) after one warm-up: (median latency, CPU per run).
fn measure<A>(n: usize, make: impl Fn() -> A, mut run: impl FnMut(A)) -> (f64, f64) {
    run(make());
    let args: Vec<A> = (0..n).map(|_| make()).collect();
    let cpu = cpu_seconds();
    let xs: Vec<f64> = args
        .into_iter()
        .map(|arg| {
            let t0 = Instant::now();
            run(arg);
            t0.elapsed().as_secs_f64()
        })
        .collect();
    let cpu = (cpu_seconds() - cpu) / n as f64;
    (median(xs), cpu)
}

fn main() {
    proxystore::worker::init();
    let mut args = std::env::args().skip(1);
    let mut rounds = 3;
    let mut quick = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--rounds N")
            }
            "--quick" => quick = true,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let root = std::env::temp_dir().join(format!("proxystore-shm-echo-{}", std::process::id()));
    let sizes: &[(usize, usize)] = if quick {
        &[(MIB, 5), (10 * MIB, 3)]
    } else {
        &[(MIB, 50), (10 * MIB, 20), (100 * MIB, 10)]
    };
    let small_n = if quick { 200 } else { 2000 };
    let mut rows: Vec<(String, String, Vec<f64>, Vec<f64>)> = Vec::new();
    let mut add = |name: String, unit: &str, (lat, cpu): (f64, f64), k: f64| {
        if let Some(row) = rows.iter_mut().find(|r| r.0 == name) {
            row.2.push(lat * k);
            row.3.push(cpu * k);
        } else {
            rows.push((name, unit.into(), vec![lat * k], vec![cpu * k]));
        }
    };
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for shm in [false, true] {
            let (tag, bytes_ex, small_ex) = if shm {
                (
                    "shm",
                    executor(
                        SharedMemoryConnector::new().unwrap(),
                        "bytes",
                        ShouldProxy::types::<(Vec<u8>,)>(),
                    ),
                    executor(
                        SharedMemoryConnector::new().unwrap(),
                        "small",
                        ShouldProxy::Always,
                    ),
                )
            } else {
                let dir = |d: &str| -> PathBuf { root.join(format!("{d}-{round}")) };
                (
                    "file",
                    executor(
                        FileConnector::new(dir("bytes")).unwrap(),
                        "bytes",
                        ShouldProxy::types::<(Vec<u8>,)>(),
                    ),
                    executor(
                        FileConnector::new(dir("small")).unwrap(),
                        "small",
                        ShouldProxy::Always,
                    ),
                )
            };
            for i in 0..50 {
                small_ex.submit(noop::task(i)).unwrap().result().unwrap();
            }
            let mut i = 0;
            let m = measure(
                small_n,
                || (),
                |()| {
                    i += 1;
                    let r = small_ex.submit(noop::task(i)).unwrap().result().unwrap();
                    assert!(r.is_proxy());
                    assert_eq!(*r, i);
                },
            );
            add(format!("small round trip ({tag})"), "us", m, 1e6);
            for &(size, n) in sizes {
                let payload = vec![7u8; size];
                let m = measure(
                    n,
                    || payload.clone(),
                    |arg| {
                        let r = bytes_ex.submit(echo::task(arg)).unwrap().result().unwrap();
                        assert!(r.is_proxy());
                        assert_eq!(r.len(), size);
                    },
                );
                add(format!("echo {}MiB ({tag})", size / MIB), "ms", m, 1e3);
            }
            drop(bytes_ex);
            drop(small_ex);
        }
        for &(size, n) in sizes {
            let big = vec![7u8; size];
            let m = measure(
                n,
                || (),
                |()| {
                    let a = black_box(big.to_vec());
                    let b = black_box(a.to_vec());
                    drop((a, b));
                },
            );
            add(format!("two fresh memcpy {}MiB", size / MIB), "ms", m, 1e3);
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    println!(
        "{:32} {:>4} {:>10} {:>10}   per-round medians",
        "row", "unit", "median", "cpu/task"
    );
    for (name, unit, lat, cpu) in rows {
        let each: Vec<String> = lat.iter().map(|v| format!("{v:.1}")).collect();
        println!(
            "{name:32} {unit:>4} {:>10.1} {:>10.1}   {}",
            median(lat.clone()),
            median(cpu),
            each.join(" ")
        );
    }
}
