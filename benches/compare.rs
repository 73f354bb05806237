//! End-to-end benchmarks, side by side with Python ProxyStore.
//!
//! Runs the Rust workloads and, interleaved with them round by round,
//! `python_anchor.py` (Python ProxyStore 1.1.0's `StoreExecutor` over a
//! `ProcessPoolExecutor(2)` and a `FileConnector`), then prints one table:
//! each workload's median and min–max on both sides and the ratio.
//!
//! Run it with `bench/compare` (which prepares the Python side), or
//! `cargo bench --bench compare -- [--quick] [--rounds N] [--python PATH --anchor PATH]`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proxystore::connectors::FileConnector;
use proxystore::executor::ProcessPool;
use proxystore::{proxied, ShouldProxy, Store, StoreExecutor, TaskValue};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

#[proxied]
fn noop(x: i64) -> i64 {
    x
}

#[proxied]
fn touch(bytes: Vec<u8>) -> u64 {
    bytes.len() as u64
}

#[proxied]
fn echo(bytes: Vec<u8>) -> Vec<u8> {
    bytes
}

#[proxied]
fn asum(values: Vec<f64>) -> f64 {
    values.iter().sum()
}

struct Options {
    quick: bool,
    rounds: usize,
    python: Option<PathBuf>,
    anchor: Option<PathBuf>,
    root: PathBuf,
    n_noop: usize,
    scale: f64,
}

fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        quick: false,
        rounds: 3,
        python: None,
        anchor: None,
        root: std::env::temp_dir().join(format!("proxystore-bench-{}", std::process::id())),
        n_noop: 10_000,
        scale: 1.0,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => o.quick = true,
            "--rounds" => {
                o.rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--rounds N")
            }
            "--python" => o.python = args.next().map(PathBuf::from),
            "--anchor" => o.anchor = args.next().map(PathBuf::from),
            "--store-root" => o.root = args.next().map(PathBuf::from).expect("--store-root DIR"),
            "--bench" => {} // passed by `cargo bench`
            other => panic!("unknown argument {other}"),
        }
    }
    if o.quick {
        o.rounds = 1;
        o.n_noop = 300;
        o.scale = 0.05;
    }
    o
}

/// Summary of one side of one workload: per-round medians, overall min/max.
#[derive(Default, Clone)]
struct Side {
    medians: Vec<f64>,
    min: f64,
    max: f64,
}

impl Side {
    fn add(&mut self, median: f64, min: f64, max: f64) {
        if self.medians.is_empty() {
            self.min = min;
            self.max = max;
        }
        self.medians.push(median);
        self.min = self.min.min(min);
        self.max = self.max.max(max);
    }

    fn add_samples(&mut self, xs: &[f64]) {
        let mut xs = xs.to_vec();
        xs.sort_by(f64::total_cmp);
        self.add(xs[xs.len() / 2], xs[0], xs[xs.len() - 1]);
    }

    fn median(&self) -> f64 {
        let mut m = self.medians.clone();
        m.sort_by(f64::total_cmp);
        m[m.len() / 2]
    }
}

/// Workload name → (unit, higher is better, rust, python).
#[derive(Default)]
struct Table {
    rows: BTreeMap<String, (String, bool, Side, Side)>,
    order: Vec<String>,
}

impl Table {
    fn entry(
        &mut self,
        name: &str,
        unit: &str,
        higher_better: bool,
    ) -> &mut (String, bool, Side, Side) {
        if !self.rows.contains_key(name) {
            self.order.push(name.to_string());
        }
        self.rows.entry(name.to_string()).or_insert_with(|| {
            (
                unit.to_string(),
                higher_better,
                Side::default(),
                Side::default(),
            )
        })
    }

    fn rust(&mut self, name: &str, unit: &str, samples: &[f64]) {
        self.entry(name, unit, unit.ends_with("/s"))
            .2
            .add_samples(samples);
    }

    fn python(&mut self, name: &str, unit: &str, median: f64, min: f64, max: f64) {
        self.entry(name, unit, unit.ends_with("/s"))
            .3
            .add(median, min, max);
    }

    fn print(&self) {
        println!();
        println!(
            "{:<44} {:>6} | {:>10} {:>21} | {:>10} {:>21} | {:>9}",
            "workload", "unit", "rust", "rust min-max", "python", "python min-max", "speedup"
        );
        println!("{}", "-".repeat(136));
        for name in &self.order {
            let (unit, higher, rust, python) = &self.rows[name];
            let cell = |s: &Side| {
                if s.medians.is_empty() {
                    (" ".repeat(10), " ".repeat(21))
                } else {
                    (
                        format!("{:>10.3}", s.median()),
                        format!("{:>10.3}-{:<10.3}", s.min, s.max),
                    )
                }
            };
            let (rm, rr) = cell(rust);
            let (pm, pr) = cell(python);
            let ratio = if rust.medians.is_empty() || python.medians.is_empty() {
                String::new()
            } else if *higher {
                format!("{:.1}x", rust.median() / python.median())
            } else {
                format!("{:.1}x", python.median() / rust.median())
            };
            println!("{name:<44} {unit:>6} | {rm} {rr} | {pm} {pr} | {ratio:>9}");
        }
    }
}

fn store_executor(o: &Options, label: &str, policy: ShouldProxy) -> (StoreExecutor, PathBuf) {
    store_executor_on(o, label, policy, ProcessPool::new(2).unwrap())
}

fn store_executor_on(
    o: &Options,
    label: &str,
    policy: ShouldProxy,
    pool: ProcessPool,
) -> (StoreExecutor, PathBuf) {
    let dir = o.root.join(format!("rust-{label}"));
    let name = format!("bench-{label}-{}", std::process::id());
    let store = Store::builder(name, FileConnector::new(&dir).unwrap())
        .cache_size(0)
        .build()
        .unwrap();
    let ex = StoreExecutor::new(pool, store).should_proxy(policy);
    (ex, dir)
}

/// Entries left in a store's directory, but for the store's own marker.
fn leftovers(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter(|e| e.as_ref().map_or(true, |e| e.file_name() != ".proxystore"))
                .count()
        })
        .unwrap_or(0)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn reps_for(size: usize, scale: f64) -> usize {
    let base = match size {
        KIB => 500.0,
        MIB => 100.0,
        s if s == 10 * MIB => 30.0,
        _ => 10.0,
    };
    ((base * scale) as usize).max(5)
}

fn label(size: usize) -> String {
    if size >= MIB {
        format!("{}MiB", size / MIB)
    } else {
        format!("{}KiB", size / KIB)
    }
}

fn value<R: proxystore::Storable>(r: &TaskValue<R>) -> &R {
    r
}

/// Throughput of three bursts of no-op tasks, submitted all at once.
fn bursts(o: &Options, ex: &StoreExecutor) -> Vec<f64> {
    (0..3)
        .map(|_| {
            let t0 = Instant::now();
            let futures: Vec<_> = (0..o.n_noop as i64)
                .map(|i| ex.submit(noop::task(i)).unwrap())
                .collect();
            for f in futures {
                black_box(f.result().unwrap());
            }
            o.n_noop as f64 / t0.elapsed().as_secs_f64()
        })
        .collect()
}

fn rust_round(o: &Options, t: &mut Table) {
    // a. no-op, nothing proxied: latency and burst throughput.
    let (ex, dir) = store_executor(o, "a", ShouldProxy::Never);
    for i in 0..200 {
        ex.submit(noop::task(i)).unwrap().result().unwrap();
    }
    let lat: Vec<f64> = (0..o.n_noop as i64)
        .map(|i| {
            let t0 = Instant::now();
            let r = ex.submit(noop::task(i)).unwrap().result().unwrap();
            assert_eq!(*r, i);
            us(t0.elapsed())
        })
        .collect();
    t.rust("a. no-op latency (ProxyNever)", "us", &lat);
    t.rust(
        &format!("a. no-op burst of {}", o.n_noop),
        "task/s",
        &bursts(o, &ex),
    );
    drop(ex);
    assert_eq!(leftovers(&dir), 0);
    // What holding jobs ahead in the workers buys: the same burst with
    // one job per worker at a time.
    let serial = ProcessPool::builder(2).max_in_flight(1).build().unwrap();
    let (ex, dir) = store_executor_on(o, "a1", ShouldProxy::Never, serial);
    t.rust(
        &format!("a. no-op burst of {}, max_in_flight 1", o.n_noop),
        "task/s",
        &bursts(o, &ex),
    );
    drop(ex);
    assert_eq!(leftovers(&dir), 0);

    // b. small value proxied both ways.
    let (ex, dir) = store_executor(o, "b", ShouldProxy::Always);
    let lat: Vec<f64> = (0..(o.n_noop / 5).max(100) as i64)
        .map(|i| {
            let t0 = Instant::now();
            let r = ex.submit(noop::task(i)).unwrap().result().unwrap();
            assert!(r.is_proxy());
            assert_eq!(*value(&r), i);
            drop(r);
            us(t0.elapsed())
        })
        .collect();
    t.rust("b. small value, ProxyAlways round trip", "us", &lat);
    assert_eq!(leftovers(&dir), 0);
    drop(ex);

    let bytes: Vec<Vec<u8>> = SIZES
        .iter()
        .map(|&s| (0..s).map(|i| (i * 131 % 251) as u8).collect())
        .collect();
    let floats: Vec<Vec<f64>> = SIZES
        .iter()
        .map(|&s| (0..s / 8).map(|i| i as f64 * 0.5).collect())
        .collect();

    // c. bytes proxied: touch (returns the length) and echo (proxied back).
    let (ex, dir) = store_executor(o, "c", ShouldProxy::types::<(Vec<u8>,)>());
    sweep(
        o,
        t,
        "c. bytes touch",
        |i| bytes[i].clone(),
        |size, arg| {
            assert_eq!(
                *ex.submit(touch::task(arg)).unwrap().result().unwrap(),
                size as u64
            );
        },
    );
    sweep(
        o,
        t,
        "c. bytes echo",
        |i| bytes[i].clone(),
        |size, arg| {
            let r = ex.submit(echo::task(arg)).unwrap().result().unwrap();
            assert!(r.is_proxy());
            assert_eq!(r.len(), size);
        },
    );
    assert_eq!(leftovers(&dir), 0);
    drop(ex);

    // d. Vec<f64> proxied, the task returns the sum.
    let (ex, dir) = store_executor(o, "d", ShouldProxy::types::<(Vec<f64>,)>());
    let sums: Vec<f64> = floats.iter().map(|f| f.iter().sum()).collect();
    sweep(
        o,
        t,
        "d. f64 sum",
        |i| floats[i].clone(),
        |size, arg| {
            let r = ex.submit(asum::task(arg)).unwrap().result().unwrap();
            assert_eq!(*r, sums[index_of(size)]);
        },
    );
    assert_eq!(leftovers(&dir), 0);
    drop(ex);

    // e. the same payloads by value through the pool, no store.
    let (ex, _dir) = store_executor(o, "e", ShouldProxy::Never);
    sweep(
        o,
        t,
        "e. by value: bytes touch",
        |i| bytes[i].clone(),
        |size, arg| {
            assert_eq!(
                *ex.submit(touch::task(arg)).unwrap().result().unwrap(),
                size as u64
            );
        },
    );
    sweep(
        o,
        t,
        "e. by value: bytes echo",
        |i| bytes[i].clone(),
        |size, arg| {
            let r = ex.submit(echo::task(arg)).unwrap().result().unwrap();
            assert!(!r.is_proxy());
            assert_eq!(r.len(), size);
        },
    );
    sweep(
        o,
        t,
        "e. by value: f64 sum",
        |i| floats[i].clone(),
        |_, arg| {
            black_box(*ex.submit(asum::task(arg)).unwrap().result().unwrap());
        },
    );
    drop(ex);

    // f. physical references.
    let big = &bytes[3];
    let mut dst = vec![0u8; big.len()];
    let xs: Vec<f64> = (0..10)
        .map(|_| {
            let t0 = Instant::now();
            dst.copy_from_slice(black_box(big));
            black_box(&dst);
            ms(t0.elapsed())
        })
        .collect();
    t.rust("f. memcpy 100MiB (warm buffer)", "ms", &xs);
    let file = o.root.join("rust-file-ref");
    let xs: Vec<f64> = (0..10)
        .map(|_| {
            let t0 = Instant::now();
            std::fs::write(&file, big).unwrap();
            let back = std::fs::read(&file).unwrap();
            let e = ms(t0.elapsed());
            assert_eq!(back.len(), big.len());
            std::fs::remove_file(&file).unwrap();
            e
        })
        .collect();
    t.rust("f. file write+read 100MiB", "ms", &xs);
    t.rust(
        "f. pipe round trip, 16-byte frame",
        "us",
        &pipe_round_trips(if o.quick { 1000 } else { 20_000 }),
    );
}

const SIZES: [usize; 4] = [KIB, MIB, 10 * MIB, 100 * MIB];

fn index_of(size: usize) -> usize {
    SIZES.iter().position(|s| *s == size).expect("one of SIZES")
}

/// Runs one payload workload at every size: `make(i)` builds the argument
/// for `SIZES[i]` (untimed), `run(size, arg)` is timed.
fn sweep<A>(
    o: &Options,
    t: &mut Table,
    name: &str,
    make: impl Fn(usize) -> A,
    run: impl Fn(usize, A),
) {
    for (i, &size) in SIZES.iter().enumerate() {
        let xs = payload_run(o, size, || make(i), |arg| run(size, arg));
        t.rust(&format!("{name} {}", label(size)), "ms", &xs);
    }
}

fn payload_run<A>(o: &Options, size: usize, make: impl Fn() -> A, run: impl Fn(A)) -> Vec<f64> {
    run(make()); // warm-up at this size
    (0..reps_for(size, o.scale))
        .map(|_| {
            let arg = make();
            let t0 = Instant::now();
            run(arg);
            ms(t0.elapsed())
        })
        .collect()
}

fn pipe_round_trips(n: usize) -> Vec<f64> {
    let mut child = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let mut output = child.stdout.take().unwrap();
    let frame = [7u8; 16];
    let mut back = [0u8; 16];
    let xs = (0..n)
        .map(|_| {
            let t0 = Instant::now();
            input.write_all(&frame).unwrap();
            output.read_exact(&mut back).unwrap();
            us(t0.elapsed())
        })
        .collect();
    drop(input);
    child.wait().unwrap();
    xs
}

fn python_round(o: &Options, t: &mut Table) {
    let (Some(python), Some(anchor)) = (&o.python, &o.anchor) else {
        return;
    };
    let json = o.root.join("python.json");
    let mut cmd = Command::new(python);
    cmd.arg(anchor)
        .args([
            "--parts",
            "abcde",
            "--n",
            &o.n_noop.to_string(),
            "--scale",
            &o.scale.to_string(),
        ])
        .arg("--json")
        .arg(&json)
        .arg("--store-root")
        .arg(o.root.join("python"));
    let out = cmd.output().expect("running the python anchor");
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        panic!("python anchor failed");
    }
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let st = |v: &serde_json::Value, k: f64| {
        (
            v["median"].as_f64().unwrap() * k,
            v["min"].as_f64().unwrap() * k,
            v["max"].as_f64().unwrap() * k,
        )
    };
    let (m, lo, hi) = st(&r["a_storeexec_never_noop"]["lat_us"], 1.0);
    t.python("a. no-op latency (ProxyNever)", "us", m, lo, hi);
    let (m, lo, hi) = st(&r["a_storeexec_never_noop"]["thr_tasks_s"], 1.0);
    t.python(
        &format!("a. no-op burst of {}", o.n_noop),
        "task/s",
        m,
        lo,
        hi,
    );
    let (m, lo, hi) = st(&r["b_storeexec_always_full"]["lat_us"], 1.0);
    t.python("b. small value, ProxyAlways round trip", "us", m, lo, hi);
    for (key, name) in [
        ("c_storeexec_bytes_touch", "c. bytes touch"),
        ("c_storeexec_bytes_echo_resolved", "c. bytes echo"),
        ("c_storeexec_numpy_asum", "d. f64 sum"),
        ("d_plain_ppe_bytes_touch", "e. by value: bytes touch"),
        ("d_plain_ppe_bytes_echo", "e. by value: bytes echo"),
        ("d_plain_ppe_numpy_asum", "e. by value: f64 sum"),
    ] {
        for row in r[key].as_array().unwrap() {
            let size = row["size_bytes"].as_u64().unwrap() as usize;
            let (m, lo, hi) = st(&row["sec"], 1e3);
            t.python(&format!("{name} {}", label(size)), "ms", m, lo, hi);
        }
    }
    let e = &r["e_physical_100MiB"];
    let (m, lo, hi) = st(&e["memcpy: memoryview(bytearray)[:] = bytes"]["sec"], 1e3);
    t.python("f. memcpy 100MiB (warm buffer)", "ms", m, lo, hi);
    let (m, lo, hi) = st(&e["file write+read 100MiB"]["sec"], 1e3);
    t.python("f. file write+read 100MiB", "ms", m, lo, hi);
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Per-task cost and memory as the number of tasks grows.
fn growth(o: &Options) {
    let (ex, dir) = store_executor(o, "growth", ShouldProxy::Never);
    let counts: &[usize] = if o.quick {
        &[1_000, 3_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    println!("\nper-task cost of a no-op burst (ProxyNever), 3 runs each:");
    println!(
        "{:>8} {:>14} {:>22}   RSS after each run, MiB",
        "tasks", "us/task median", "us/task min-max"
    );
    for &n in counts {
        let mut rss = Vec::new();
        let mut xs: Vec<f64> = (0..3)
            .map(|_| {
                let t0 = Instant::now();
                let futures: Vec<_> = (0..n as i64)
                    .map(|i| ex.submit(noop::task(i)).unwrap())
                    .collect();
                for f in futures {
                    black_box(f.result().unwrap());
                }
                let per_task = us(t0.elapsed()) / n as f64;
                rss.push(format!("{:.1}", status_kib("VmRSS:") as f64 / 1024.0));
                per_task
            })
            .collect();
        xs.sort_by(f64::total_cmp);
        println!(
            "{n:>8} {:>14.2} {:>10.2}-{:<11.2}   {}",
            xs[1],
            xs[0],
            xs[2],
            rss.join(" / ")
        );
    }
    println!("(all of a burst's futures are alive at once before gathering; the RSS is that working set, and repeated bursts do not add to it)");
    drop(ex);
    assert_eq!(leftovers(&dir), 0);

    // Peak memory of this (parent) process during 100 MiB echoes.
    let (ex, _dir) = store_executor(o, "memory", ShouldProxy::types::<(Vec<u8>,)>());
    let payload = vec![3u8; 100 * MIB];
    let reps = if o.quick { 2 } else { 5 };
    let _ = std::fs::write("/proc/self/clear_refs", "5"); // resets the peak (VmHWM)
    let before = status_kib("VmRSS:");
    for _ in 0..reps {
        let r = ex
            .submit(echo::task(payload.clone()))
            .unwrap()
            .result()
            .unwrap();
        assert_eq!(r.len(), payload.len());
    }
    let peak = status_kib("VmHWM:");
    println!(
        "\nparent peak RSS over {reps} x 100MiB echo: {:.0} MiB (RSS before: {:.0} MiB, payload held by the caller: 100 MiB)",
        peak as f64 / 1024.0,
        before as f64 / 1024.0
    );
}

fn main() {
    proxystore::worker::init();
    let o = options();
    std::fs::create_dir_all(&o.root).unwrap();
    let mut table = Table::default();
    for round in 0..o.rounds {
        eprintln!("round {}/{}: rust", round + 1, o.rounds);
        rust_round(&o, &mut table);
        if o.python.is_some() {
            eprintln!("round {}/{}: python", round + 1, o.rounds);
            python_round(&o, &mut table);
        }
    }
    table.print();
    growth(&o);
    let _ = std::fs::remove_dir_all(&o.root);
}
