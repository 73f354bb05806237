//! End-to-end benchmarks, side by side with Python ProxyStore.
//!
//! Runs the Rust workloads and, interleaved with them round by round,
//! `python_anchor.py` (Python ProxyStore 1.1.0's `StoreExecutor` over a
//! `ProcessPoolExecutor(2)` and a `FileConnector`), then prints one table:
//! each workload's median and min–max on both sides, the ratio, and the
//! CPU time per task of both sides (the anchor runs under `python_cpu.py`,
//! which measures its phases from the outside of its code).
//!
//! With `redis-server` on PATH (or `PROXYSTORE_REDIS_SERVER`), a private
//! server is started on a free port for the run, and the Redis rows (`r.`)
//! are measured too: the floor (a plain Redis round trip), the multi-host
//! executor (`ClusterExecutor`, two worker processes: this executable in
//! cluster worker mode) with a `RedisConnector` store, and the process pool
//! with a `RedisConnector` store, beside the anchor's `--redis` rows (and
//! with `--dask`, its Dask rows beside the cluster executor's).
//!
//! Run it with `bench/compare` (which prepares the Python side), or
//! `cargo bench -p proxystore-bench --bench compare -- [--quick] [--rounds N] [--dask] [--redis-only] [--python PATH --anchor PATH]`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proxystore::connectors::{FileConnector, RedisConnector, SharedMemoryConnector};
use proxystore::executor::cluster::{ClusterExecutor, CLUSTER_ENV, QUEUE_ENV};
use proxystore::executor::ProcessPool;
use proxystore::{proxied, ShouldProxy, Store, StoreExecutor, TaskValue};
use proxystore_bench::{cpu_seconds, small_file_cycles};

// Shared with the integration tests, which use more of it.
#[allow(unreachable_pub)]
#[path = "../../tests/support/redis_server.rs"]
mod redis_server;

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
    /// Only the Redis rows (`--redis-only`).
    redis_only: bool,
    /// Only the no-op rows, printed for a parent run (`--noop-only`).
    noop_only: bool,
    /// Also run the anchor's Dask mode, the peer of the cluster executor.
    dask: bool,
    /// Sequential round trips per latency row of the Redis section.
    n_redis_lat: usize,
    /// Tasks per burst of the Redis section.
    n_redis_burst: usize,
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
        dask: false,
        redis_only: false,
        noop_only: false,
        n_redis_lat: 2_000,
        n_redis_burst: 10_000,
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
            "--dask" => o.dask = true,
            "--redis-only" => o.redis_only = true,
            "--noop-only" => o.noop_only = true,
            "--bench" => {} // passed by `cargo bench`
            other => panic!("unknown argument {other}"),
        }
    }
    if o.quick {
        o.rounds = 1;
        o.n_noop = 300;
        o.scale = 0.05;
        o.n_redis_lat = 200;
        o.n_redis_burst = 500;
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
    /// CPU time (user + system, caller and workers) per task, in µs, one
    /// value per round.
    cpu: BTreeMap<String, Vec<f64>>,
    /// The same of the Python side (`python_cpu.py` around the anchor).
    python_cpu: BTreeMap<String, Vec<f64>>,
    /// Lines printed under the table (the last round's).
    notes: BTreeMap<String, String>,
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

    fn cpu(&mut self, name: &str, us_per_task: f64) {
        self.cpu
            .entry(name.to_string())
            .or_default()
            .push(us_per_task);
    }

    fn python_cpu(&mut self, name: &str, us_per_task: f64) {
        self.python_cpu
            .entry(name.to_string())
            .or_default()
            .push(us_per_task);
    }

    /// The median CPU per task of a Rust row, if it was measured.
    fn cpu_median(&self, name: &str) -> Option<f64> {
        median_of(self.cpu.get(name)?)
    }

    /// The median of a Rust row, if it was measured.
    fn rust_median(&self, name: &str) -> Option<f64> {
        let side = &self.rows.get(name)?.2;
        (!side.medians.is_empty()).then(|| side.median())
    }

    /// The median of a Python row, if it was measured.
    fn python_median(&self, name: &str) -> Option<f64> {
        let side = &self.rows.get(name)?.3;
        (!side.medians.is_empty()).then(|| side.median())
    }

    fn python(&mut self, name: &str, unit: &str, median: f64, min: f64, max: f64) {
        self.entry(name, unit, unit.ends_with("/s"))
            .3
            .add(median, min, max);
    }

    fn print(&self) {
        let w = self
            .order
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(0)
            .max(44);
        println!();
        println!(
            "{:<w$} {:>6} | {:>10} {:>21} | {:>10} {:>21} | {:>9} | {:>11} {:>11}",
            "workload",
            "unit",
            "rust",
            "rust min-max",
            "python",
            "python min-max",
            "speedup",
            "cpu us/task",
            "py cpu/task"
        );
        println!("{}", "-".repeat(w + 118));
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
            let cpu_of = |m: &BTreeMap<String, Vec<f64>>| {
                m.get(name)
                    .and_then(|v| median_of(v))
                    .map_or(String::new(), |v| format!("{v:.1}"))
            };
            let (cpu, py_cpu) = (cpu_of(&self.cpu), cpu_of(&self.python_cpu));
            println!(
                "{name:<w$} {unit:>6} | {rm} {rr} | {pm} {pr} | {ratio:>9} | {cpu:>11} {py_cpu:>11}"
            );
        }
        println!(
            "(cpu us/task: user + system time over the row's tasks, divided by their number, median of the rounds; \
             rust: this process's threads and its child processes (pool and cluster workers, `cat` of the pipe rows), \
             never the Redis server; a task of an f. or floor row is one repetition of it. \
             py cpu/task: the anchor's process and its descendants (pool workers), from /proc schedstat and the \
             rusage of reaped children, around each of its timed phases (bench/python_cpu.py), never the Redis \
             server. Both sides count a payload row's untimed argument copies and warm-up task)"
        );
        for note in self.notes.values() {
            println!("{note}");
        }
    }
}

fn median_of(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// Issue 9's targets, checked against this run's medians.
fn print_targets(t: &Table, o: &Options) {
    let r = |name: &str| t.rust_median(name);
    let p = |name: &str| t.python_median(name);
    let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
    let burst = format!("a. no-op burst of {}", o.n_noop);
    // (target, measured ratio or value, bound, at least (true) or at most)
    let targets = [
        (
            "by value: 10MiB f64 sum, times faster than Python",
            ratio(
                p("e. by value: f64 sum 10MiB"),
                r("e. by value: f64 sum 10MiB"),
            ),
            1.5,
            true,
        ),
        (
            "by value: 100MiB bytes echo / 100MiB pipe echo",
            ratio(
                r("e. by value: bytes echo 100MiB"),
                r("f. pipe echo 100MiB"),
            ),
            1.5,
            false,
        ),
        (
            "ProxyAlways round trip / two small-file cycles",
            ratio(
                r("b. small value, ProxyAlways round trip"),
                r("f. small file create+write+read+unlink, twice"),
            ),
            1.3,
            false,
        ),
        (
            "ProxyAlways round trip, times faster than Python",
            ratio(
                p("b. small value, ProxyAlways round trip"),
                r("b. small value, ProxyAlways round trip"),
            ),
            15.0,
            true,
        ),
        (
            "100MiB proxied echo, file store / shared memory",
            ratio(r("c. bytes echo 100MiB"), r("c. bytes echo (shm) 100MiB")),
            2.0,
            true,
        ),
        (
            "100MiB proxied echo, shared memory / two fresh memcpy",
            ratio(
                r("c. bytes echo (shm) 100MiB"),
                r("f. two memcpy 100MiB into fresh buffers"),
            ),
            2.0,
            false,
        ),
        (
            "no-op latency / pipe round trip",
            ratio(
                r("a. no-op latency (ProxyNever)"),
                r("f. pipe round trip, 16-byte frame"),
            ),
            2.0,
            false,
        ),
        ("no-op burst, tasks/s", r(&burst), 250_000.0, true),
        (
            "ProxyAlways round trip: cpu per task / latency",
            ratio(
                t.cpu_median("b. small value, ProxyAlways round trip"),
                r("b. small value, ProxyAlways round trip"),
            ),
            1.5,
            false,
        ),
        (
            "no-op latency: cpu per task / latency",
            ratio(
                t.cpu_median("a. no-op latency (ProxyNever)"),
                r("a. no-op latency (ProxyNever)"),
            ),
            1.5,
            false,
        ),
    ];
    println!("\ntargets (medians of this run):");
    print_verdicts(&targets);
}

/// The Redis targets of the process pool with a Redis store.
fn print_redis_targets(t: &Table) {
    let r = |name: &str| t.rust_median(name);
    let p = |name: &str| t.python_median(name);
    let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
    let small = "r. pool+redis: small value, ProxyAlways round trip";
    let echo = "r. pool+redis: bytes echo 100MiB";
    // The fastest way measured to move the bytes in and out twice.
    let floor = [
        r("r. floor: SET+GET 100MiB, twice"),
        r("r. floor: SET+GET 100MiB, twice, 8MiB pieces pipelined"),
    ]
    .into_iter()
    .flatten()
    .min_by(f64::total_cmp);
    let targets = [
        (
            "pool+redis ProxyAlways, times faster than Python",
            ratio(p(small), r(small)),
            8.0,
            true,
        ),
        (
            "pool+redis 100MiB echo, times faster than Python",
            ratio(p(echo), r(echo)),
            3.0,
            true,
        ),
        (
            "pool+redis 100MiB echo / fastest SET+GET twice",
            ratio(r(echo), floor),
            1.2,
            false,
        ),
    ];
    println!("\nredis targets (medians of this run; the echo needs one of its two):");
    print_verdicts(&targets);
}

fn print_verdicts(targets: &[(&str, Option<f64>, f64, bool)]) {
    for &(what, value, bound, at_least) in targets {
        let (sign, verdict) = match value {
            None => ("", "not measured".to_string()),
            Some(v) if (at_least && v >= bound) || (!at_least && v <= bound) => {
                (if at_least { ">=" } else { "<=" }, format!("met ({v:.2})"))
            }
            Some(v) => (
                if at_least { ">=" } else { "<=" },
                format!("NOT met ({v:.2})"),
            ),
        };
        println!("  {what:<56} {sign:>2} {bound:<9} {verdict}");
    }
}

/// Runs `f`, whose samples are one task (or repetition) each, and records
/// the CPU time per sample.
fn with_cpu_each(t: &mut Table, name: &str, f: impl FnOnce() -> Vec<f64>) -> Vec<f64> {
    let before = cpu_seconds();
    let xs = f();
    t.cpu(
        name,
        (cpu_seconds() - before) * 1e6 / xs.len().max(1) as f64,
    );
    xs
}

/// Runs `f`, which runs `tasks` tasks, and records their CPU time per task.
fn with_cpu<T>(t: &mut Table, name: &str, tasks: usize, f: impl FnOnce() -> T) -> T {
    let before = cpu_seconds();
    let out = f();
    t.cpu(name, (cpu_seconds() - before) * 1e6 / tasks.max(1) as f64);
    out
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
    bursts_of(o.n_noop, ex)
}

/// Throughput of three bursts of `n` no-op tasks, submitted all at once.
fn bursts_of(n: usize, ex: &StoreExecutor) -> Vec<f64> {
    (0..3)
        .map(|_| {
            let t0 = Instant::now();
            let futures: Vec<_> = (0..n as i64)
                .map(|i| ex.submit(noop::task(i)).unwrap())
                .collect();
            for f in futures {
                black_box(f.result().unwrap());
            }
            n as f64 / t0.elapsed().as_secs_f64()
        })
        .collect()
}

/// The byte payloads of `sizes`.
fn byte_payloads(sizes: &[usize]) -> Vec<Vec<u8>> {
    sizes
        .iter()
        .map(|&s| (0..s).map(|i| (i * 131 % 251) as u8).collect())
        .collect()
}

/// The `Vec<f64>` payloads of `sizes` (in bytes).
fn float_payloads(sizes: &[usize]) -> Vec<Vec<f64>> {
    sizes
        .iter()
        .map(|&s| (0..s / 8).map(|i| i as f64 * 0.5).collect())
        .collect()
}

/// Runs `touch` on `arg` and checks the length it saw.
fn touch_checked(ex: &StoreExecutor, size: usize, arg: Vec<u8>) {
    assert_eq!(
        *ex.submit(touch::task(arg)).unwrap().result().unwrap(),
        size as u64
    );
}

/// Runs `echo` on `arg` and checks the result's length and whether it came
/// back through the store.
fn echo_checked(ex: &StoreExecutor, size: usize, arg: Vec<u8>, proxied: bool) {
    let r = ex.submit(echo::task(arg)).unwrap().result().unwrap();
    assert_eq!(r.is_proxy(), proxied);
    assert_eq!(r.len(), size);
}

/// Sequential ProxyAlways round trips of a small value, after a warm-up.
fn small_always(n: usize, ex: &StoreExecutor) -> Vec<f64> {
    for i in 0..50 {
        ex.submit(noop::task(i)).unwrap().result().unwrap();
    }
    latencies(n, ex, noop::task, |i, r| {
        assert!(r.is_proxy());
        assert_eq!(*value(&r), i);
    })
}

/// The no-op rows (a.): latency and burst throughput, nothing proxied.
/// `suffix` names the spinning setting when it is not the default.
fn noop_rows(o: &Options, t: &mut Table, suffix: &str) {
    let (ex, dir) = store_executor(o, "a", ShouldProxy::Never);
    for i in 0..200 {
        ex.submit(noop::task(i)).unwrap().result().unwrap();
    }
    let name = format!("a. no-op latency (ProxyNever){suffix}");
    let lat = with_cpu(t, &name, o.n_noop, || {
        latencies(o.n_noop, &ex, noop::task, |i, r| assert_eq!(*r, i))
    });
    t.rust(&name, "us", &lat);
    let name = format!("a. no-op burst of {}{suffix}", o.n_noop);
    let xs = with_cpu(t, &name, 3 * o.n_noop, || bursts(o, &ex));
    t.rust(&name, "task/s", &xs);
    drop(ex);
    assert_eq!(leftovers(&dir), 0);
    // What holding jobs ahead in the workers buys: the same burst with
    // one job per worker at a time.
    let serial = ProcessPool::builder(2).max_in_flight(1).build().unwrap();
    let (ex, dir) = store_executor_on(o, "a1", ShouldProxy::Never, serial);
    let name = format!("a. no-op burst of {}, max_in_flight 1{suffix}", o.n_noop);
    let xs = with_cpu(t, &name, 3 * o.n_noop, || bursts(o, &ex));
    t.rust(&name, "task/s", &xs);
    drop(ex);
    assert_eq!(leftovers(&dir), 0);
}

/// The no-op rows measured again in a copy of this benchmark started with
/// spinning off (`PROXYSTORE_SPIN_US=0`, read once per process, so it
/// takes a process of its own), added as "[spin off]" rows.
fn noop_rows_spin_off(o: &Options, t: &mut Table) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.arg("--noop-only").env("PROXYSTORE_SPIN_US", "0");
    if o.quick {
        cmd.arg("--quick");
    }
    let out = match cmd.stderr(Stdio::inherit()).output() {
        Ok(out) if out.status.success() => out,
        other => {
            eprintln!("the spin-off no-op rows failed: {other:?}");
            return;
        }
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields[..] {
            ["ROW", name, unit, samples] => {
                let xs: Vec<f64> = samples.split(',').filter_map(|v| v.parse().ok()).collect();
                t.rust(&format!("{name} [spin off]"), unit, &xs);
            }
            ["CPU", name, value] => {
                if let Ok(v) = value.parse() {
                    t.cpu(&format!("{name} [spin off]"), v);
                }
            }
            _ => {}
        }
    }
}

/// `--noop-only`: the no-op rows, printed for [`noop_rows_spin_off`].
fn noop_only(o: &Options) {
    let mut t = Table::default();
    noop_rows(o, &mut t, "");
    for name in &t.order {
        let (unit, _, side, _) = &t.rows[name];
        let joined: Vec<String> = side.medians.iter().map(|v| v.to_string()).collect();
        println!("ROW\t{name}\t{unit}\t{}", joined.join(","));
    }
    for (name, v) in &t.cpu {
        println!("CPU\t{name}\t{}", v[0]);
    }
}

fn rust_round(o: &Options, t: &mut Table) {
    // a. no-op, nothing proxied: latency and burst throughput.
    noop_rows(o, t, "");

    // b. small value proxied both ways.
    for (label, shm) in [("b", false), ("b-shm", true)] {
        let (ex, dir) = if shm {
            match shm_store_executor(label, ShouldProxy::Always) {
                Some(made) => made,
                None => continue,
            }
        } else {
            store_executor(o, label, ShouldProxy::Always)
        };
        let n = (o.n_noop / 5).max(100);
        let name = if shm {
            "b. small value, ProxyAlways round trip (shm)"
        } else {
            "b. small value, ProxyAlways round trip"
        };
        // The 50 warm-up tasks count in the CPU time too.
        let lat = with_cpu(t, name, n + 50, || small_always(n, &ex));
        t.rust(name, "us", &lat);
        assert_eq!(leftovers(&dir), 0);
        drop(ex);
    }

    let bytes = byte_payloads(&SIZES);
    let floats = float_payloads(&SIZES);

    // c. bytes proxied: touch (returns the length) and echo (proxied back).
    let (ex, dir) = store_executor(o, "c", ShouldProxy::types::<(Vec<u8>,)>());
    sweep(
        o,
        t,
        "c. bytes touch",
        |i| bytes[i].clone(),
        |size, arg| touch_checked(&ex, size, arg),
    );
    sweep(
        o,
        t,
        "c. bytes echo",
        |i| bytes[i].clone(),
        |size, arg| echo_checked(&ex, size, arg, true),
    );
    assert_eq!(leftovers(&dir), 0);
    drop(ex);
    // The same echo through the shared-memory store.
    if let Some((ex, dir)) = shm_store_executor("c-shm", ShouldProxy::types::<(Vec<u8>,)>()) {
        sweep(
            o,
            t,
            "c. bytes echo (shm)",
            |i| bytes[i].clone(),
            |size, arg| echo_checked(&ex, size, arg, true),
        );
        assert_eq!(leftovers(&dir), 0);
        drop(ex);
    }

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
        |size, arg| touch_checked(&ex, size, arg),
    );
    sweep(
        o,
        t,
        "e. by value: bytes echo",
        |i| bytes[i].clone(),
        |size, arg| echo_checked(&ex, size, arg, false),
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

    physical_rows(o, t, &bytes);
}

/// f. What the machine itself does, measured in the same run.
fn physical_rows(o: &Options, t: &mut Table, bytes: &[Vec<u8>]) {
    let big = &bytes[3];
    let reps = if o.quick { 3 } else { 10 };
    let mut dst = vec![0u8; big.len()];
    let name = "f. memcpy 100MiB (warm buffer)";
    let xs = with_cpu_each(t, name, || {
        (0..reps)
            .map(|_| {
                let t0 = Instant::now();
                dst.copy_from_slice(black_box(big));
                black_box(&dst);
                ms(t0.elapsed())
            })
            .collect()
    });
    t.rust(name, "ms", &xs);
    let name = "f. two memcpy 100MiB into fresh buffers";
    let xs = with_cpu_each(t, name, || {
        (0..reps)
            .map(|_| {
                let t0 = Instant::now();
                let a = black_box(big.to_vec());
                let b = black_box(a.to_vec());
                let e = ms(t0.elapsed());
                drop((a, b));
                e
            })
            .collect()
    });
    t.rust(name, "ms", &xs);
    let mut dirs = vec![("", o.root.clone())];
    if Path::new("/dev/shm").is_dir() {
        dirs.push((" on /dev/shm", PathBuf::from("/dev/shm")));
    }
    for (place, dir) in &dirs {
        let file = dir.join(format!("proxystore-bench-ref-{}", std::process::id()));
        let name = format!("f. file write+read+unlink 100MiB, warm buffer{place}");
        let xs = with_cpu_each(t, &name, || {
            (0..reps)
                .map(|_| {
                    let t0 = Instant::now();
                    std::fs::write(&file, big).unwrap();
                    let mut f = std::fs::File::open(&file).unwrap();
                    f.read_exact(&mut dst).unwrap();
                    std::fs::remove_file(&file).unwrap();
                    ms(t0.elapsed())
                })
                .collect()
        });
        t.rust(&name, "ms", &xs);
        // The small proxied round trip's floor: two small objects, each
        // created, written, read back and removed.
        let small = [5u8; 64];
        let mut back = [0u8; 64];
        let n = if o.quick { 200 } else { 2000 };
        let name = format!("f. small file create+write+read+unlink, twice{place}");
        let xs = with_cpu_each(t, &name, || {
            (0..n)
                .map(|_| {
                    let t0 = Instant::now();
                    small_file_cycles(&file, &small, &mut back);
                    us(t0.elapsed())
                })
                .collect()
        });
        t.rust(&name, "us", &xs);
    }
    for &size in &SIZES[1..] {
        let data = &bytes[index_of(size)];
        let name = format!("f. pipe one way {}", label(size));
        let xs = with_cpu_each(t, &name, || pipe_transfers(data, reps, false));
        t.rust(&name, "ms", &xs);
        let name = format!("f. pipe echo {}", label(size));
        let xs = with_cpu_each(t, &name, || pipe_transfers(data, reps, true));
        t.rust(&name, "ms", &xs);
    }
    let name = "f. pipe round trip, 16-byte frame";
    let xs = with_cpu_each(t, name, || {
        pipe_round_trips(if o.quick { 1000 } else { 20_000 })
    });
    t.rust(name, "us", &xs);
}

/// Moves `data` through a pipe `reps` times, into a warm buffer: one way
/// to a reading thread, or (`echo`) to `cat` and back. Milliseconds each.
fn pipe_transfers(data: &[u8], reps: usize, echo: bool) -> Vec<f64> {
    let mut back = vec![0u8; data.len()];
    if echo {
        let mut child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        let mut output = child.stdout.take().unwrap();
        let xs = (0..reps)
            .map(|_| {
                std::thread::scope(|s| {
                    let t0 = Instant::now();
                    s.spawn(|| input.write_all(data).unwrap());
                    output.read_exact(&mut back).unwrap();
                    ms(t0.elapsed())
                })
            })
            .collect();
        drop(input);
        child.wait().unwrap();
        return xs;
    }
    let (mut reader, mut writer) = std::io::pipe().unwrap();
    let (go, ready) = std::sync::mpsc::channel::<()>();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let len = data.len();
    let sink = std::thread::spawn(move || {
        let mut buf = vec![0u8; len];
        while ready.recv().is_ok() {
            reader.read_exact(&mut buf).unwrap();
            done.send(()).unwrap();
        }
    });
    let xs = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            go.send(()).unwrap();
            writer.write_all(data).unwrap();
            finished.recv().unwrap();
            ms(t0.elapsed())
        })
        .collect();
    drop(go);
    sink.join().unwrap();
    xs
}

/// A process pool with a shared-memory store, where the system has one.
fn shm_store_executor(label: &str, policy: ShouldProxy) -> Option<(StoreExecutor, PathBuf)> {
    let connector = match SharedMemoryConnector::new() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shared-memory rows skipped: {e}");
            return None;
        }
    };
    let dir = connector.directory().to_path_buf();
    let name = format!("bench-{label}-{}", std::process::id());
    let store = Store::builder(name, connector)
        .cache_size(0)
        .build()
        .unwrap();
    let ex = StoreExecutor::new(ProcessPool::new(2).unwrap(), store).should_proxy(policy);
    Some((ex, dir))
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
    sweep_sizes(o, t, &SIZES, name, make, run)
}

/// [`sweep`] over the first `sizes.len()` of [`SIZES`].
fn sweep_sizes<A>(
    o: &Options,
    t: &mut Table,
    sizes: &[usize],
    name: &str,
    make: impl Fn(usize) -> A,
    run: impl Fn(usize, A),
) {
    for (i, &size) in sizes.iter().enumerate() {
        let row = format!("{name} {}", label(size));
        let tasks = reps_for(size, o.scale) + 1;
        let xs = with_cpu(t, &row, tasks, || {
            payload_run(o, size, || make(i), |arg| run(size, arg))
        });
        t.rust(&row, "ms", &xs);
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

/// Runs the Python anchor and records the CPU time of its phases.
const PYTHON_CPU: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python_cpu.py");

/// Runs the Python anchor with `args`; `None` (after saying why) if it is
/// not configured or fails: its rows are then left out, never the Rust ones.
fn run_anchor(o: &Options, what: &str, args: &[String]) -> Option<serde_json::Value> {
    let (python, anchor) = (o.python.as_ref()?, o.anchor.as_ref()?);
    let json = o.root.join(format!("python-{what}.json"));
    let _ = std::fs::remove_file(&json);
    // The anchor runs under python_cpu.py, which adds the CPU time of each
    // of its timed phases to its results.
    let out = Command::new(python)
        .arg(PYTHON_CPU)
        .arg(anchor)
        .args(args)
        .arg("--json")
        .arg(&json)
        .arg("--store-root")
        .arg(o.root.join(format!("python-{what}")))
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            eprintln!("python anchor ({what}) did not start: {e}; its rows are left out");
            return None;
        }
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        eprintln!(
            "python anchor ({what}) failed ({}); its rows are left out:\n{tail}",
            out.status
        );
        return None;
    }
    let parsed = std::fs::read(&json)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
    match parsed {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!(
                "python anchor ({what}) wrote no readable results ({e}); its rows are left out"
            );
            None
        }
    }
}

/// Median, min and max of one of the anchor's summaries, times `k`.
fn stat(v: &serde_json::Value, k: f64) -> Option<(f64, f64, f64)> {
    Some((
        v["median"].as_f64()? * k,
        v["min"].as_f64()? * k,
        v["max"].as_f64()? * k,
    ))
}

impl Table {
    fn python_stat(&mut self, name: &str, unit: &str, v: &serde_json::Value, k: f64) {
        if let Some((m, lo, hi)) = stat(v, k) {
            self.python(name, unit, m, lo, hi);
        }
    }

    /// The anchor's per-size rows of `key` (in ms) as `{name} {size}`, for
    /// the sizes in `sizes` only.
    fn python_sizes(&mut self, r: &serde_json::Value, key: &str, name: &str, sizes: &[usize]) {
        for row in r[key].as_array().map(Vec::as_slice).unwrap_or_default() {
            let Some(size) = row["size_bytes"].as_u64().map(|s| s as usize) else {
                continue;
            };
            if sizes.contains(&size) {
                let row_name = format!("{name} {}", label(size));
                self.python_stat(&row_name, "ms", &row["sec"], 1e3);
                self.python_cpu_of(r, key, "payload", Some(size), &row_name);
            }
        }
    }

    /// The anchor's CPU per task of its row `key` (the `phase` measured,
    /// at `size` for a payload row), as the Python CPU of `name`.
    fn python_cpu_of(
        &mut self,
        r: &serde_json::Value,
        key: &str,
        phase: &str,
        size: Option<usize>,
        name: &str,
    ) {
        let entries = r["cpu"][key]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let found = entries.iter().find(|e| {
            e["phase"].as_str() == Some(phase)
                && e["size_bytes"].as_u64().map(|s| s as usize) == size
        });
        if let Some(v) = found.and_then(|e| e["cpu_us_per_task"].as_f64()) {
            self.python_cpu(name, v);
        }
    }
}

fn python_round(o: &Options, t: &mut Table) {
    let args = [
        "--parts".to_string(),
        "abcde".into(),
        "--n".into(),
        o.n_noop.to_string(),
        "--scale".into(),
        o.scale.to_string(),
    ];
    let Some(r) = run_anchor(o, "file", &args) else {
        return;
    };
    t.python_stat(
        "a. no-op latency (ProxyNever)",
        "us",
        &r["a_storeexec_never_noop"]["lat_us"],
        1.0,
    );
    t.python_stat(
        &format!("a. no-op burst of {}", o.n_noop),
        "task/s",
        &r["a_storeexec_never_noop"]["thr_tasks_s"],
        1.0,
    );
    t.python_stat(
        "b. small value, ProxyAlways round trip",
        "us",
        &r["b_storeexec_always_full"]["lat_us"],
        1.0,
    );
    let burst = format!("a. no-op burst of {}", o.n_noop);
    for (key, phase, name) in [
        (
            "a_storeexec_never_noop",
            "lat",
            "a. no-op latency (ProxyNever)",
        ),
        ("a_storeexec_never_noop", "thr", burst.as_str()),
        (
            "b_storeexec_always_full",
            "lat",
            "b. small value, ProxyAlways round trip",
        ),
    ] {
        t.python_cpu_of(&r, key, phase, None, name);
    }
    for (key, name) in [
        ("c_storeexec_bytes_touch", "c. bytes touch"),
        ("c_storeexec_bytes_echo_resolved", "c. bytes echo"),
        ("c_storeexec_numpy_asum", "d. f64 sum"),
        ("d_plain_ppe_bytes_touch", "e. by value: bytes touch"),
        ("d_plain_ppe_bytes_echo", "e. by value: bytes echo"),
        ("d_plain_ppe_numpy_asum", "e. by value: f64 sum"),
    ] {
        t.python_sizes(&r, key, name, &SIZES);
    }
    let e = &r["e_physical_100MiB"];
    t.python_stat(
        "f. memcpy 100MiB (warm buffer)",
        "ms",
        &e["memcpy: memoryview(bytearray)[:] = bytes"]["sec"],
        1e3,
    );
    t.python_stat(
        "f. file write+read 100MiB",
        "ms",
        &e["file write+read 100MiB"]["sec"],
        1e3,
    );
}

/// The Redis side of a run: a private `redis-server` on a free port and two
/// cluster workers (this executable in cluster worker mode), stopped when
/// dropped.
struct RedisRig {
    workers: Vec<Child>,
    queue: String,
    server: redis_server::RedisServer,
}

impl RedisRig {
    /// Starts the server and the workers, or says why the Redis rows are
    /// skipped.
    fn start() -> Result<RedisRig, String> {
        if redis_server::program().is_none() {
            return Err(
                "Redis rows skipped: `redis-server` is not on PATH (install it with \
                        `apt-get install redis-server` or `brew install redis`, or point \
                        PROXYSTORE_REDIS_SERVER at one)"
                    .into(),
            );
        }
        let server = redis_server::RedisServer::start("bench compare")
            .ok_or("Redis rows skipped: no redis-server")?;
        let queue = format!("bench-{}", std::process::id());
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut rig = RedisRig {
            workers: Vec::new(),
            queue,
            server,
        };
        for _ in 0..2 {
            let mut command = Command::new(&exe);
            let child = redis_server::die_with_parent(&mut command)
                .env(CLUSTER_ENV, rig.server.url())
                .env(QUEUE_ENV, &rig.queue)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .map_err(|e| format!("Redis rows skipped: a cluster worker did not start: {e}"))?;
            rig.workers.push(child);
        }
        Ok(rig)
    }

    fn url(&self) -> String {
        self.server.url()
    }

    /// A store on this server (its own namespace), and that namespace.
    ///
    /// Each gets a name never used before: the cluster workers outlive the
    /// executors, and a worker resolves proxies through the store it
    /// registered first under a name, even when a later store of that name
    /// has another connector (another namespace).
    fn store(&self, label: &str) -> (Store, String) {
        static STORES: AtomicUsize = AtomicUsize::new(0);
        let connector = RedisConnector::new(self.url()).unwrap();
        let namespace = connector.namespace().to_string();
        let name = format!(
            "bench-{label}-{}-{}",
            std::process::id(),
            STORES.fetch_add(1, Ordering::Relaxed)
        );
        let store = Store::builder(name, connector)
            .cache_size(0)
            .build()
            .unwrap();
        (store, namespace)
    }

    /// The cluster executor on the two workers, with a Redis store.
    fn cluster(&self, label: &str, policy: ShouldProxy) -> (StoreExecutor, String) {
        let (store, namespace) = self.store(label);
        let cluster = ClusterExecutor::new(&self.url(), &self.queue).unwrap();
        (
            StoreExecutor::new(cluster, store).should_proxy(policy),
            namespace,
        )
    }

    /// The process pool (2 workers) with a Redis store.
    fn pool(&self, label: &str, policy: ShouldProxy) -> (StoreExecutor, String) {
        let (store, namespace) = self.store(label);
        let pool = ProcessPool::new(2).unwrap();
        (
            StoreExecutor::new(pool, store).should_proxy(policy),
            namespace,
        )
    }

    /// Says so if objects of `namespace` are still in Redis (they should
    /// all have been evicted by now).
    fn check_leftovers(&self, what: &str, namespace: &str) {
        let pattern = format!("proxystore:{namespace}:*");
        let mut left = self.server.keys(&pattern).len();
        if left > 0 {
            std::thread::sleep(Duration::from_millis(100)); // evictions in flight
            left = self.server.keys(&pattern).len();
        }
        if left > 0 {
            eprintln!("warning: {what}: {left} objects left in Redis after the run");
        }
    }
}

impl Drop for RedisRig {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
        // The server is killed when `server` drops, after this.
    }
}

/// The sizes of the Redis payload rows: up to 1 MiB in quick mode.
fn redis_sizes(o: &Options) -> &'static [usize] {
    if o.quick {
        &SIZES[..2]
    } else {
        &SIZES
    }
}

fn percentile(xs: &[f64], p: f64) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    xs[((xs.len() - 1) as f64 * p).round() as usize]
}

/// The floor under a task's round trip through Redis: a `PING`, and a
/// ping-pong over two lists between two clients (this thread `RPUSH`es a
/// request and `BLPOP`s the answer; a helper thread `BLPOP`s the request
/// and `RPUSH`es it back), as a job and its reply travel.
/// Each with its CPU time per round trip (µs, this process's threads).
fn redis_floor(url: &str, n: usize) -> ((Vec<f64>, f64), (Vec<f64>, f64)) {
    let client = redis::Client::open(url).unwrap();
    let connect = || {
        let con = client.get_connection().unwrap();
        con.set_read_timeout(None).unwrap(); // BLPOP waits
        con
    };
    let mut con = connect();
    let cpu0 = cpu_seconds();
    let ping: Vec<f64> = (0..n + 100)
        .map(|_| {
            let t0 = Instant::now();
            let pong: String = redis::cmd("PING").query(&mut con).unwrap();
            assert_eq!(pong, "PONG");
            us(t0.elapsed())
        })
        .skip(100)
        .collect();
    let ping_cpu = (cpu_seconds() - cpu0) * 1e6 / (n + 100) as f64;

    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (requests, answers) = (format!("bench:{tag}:req"), format!("bench:{tag}:ans"));
    let mut other = connect();
    let helper = {
        let (requests, answers) = (requests.clone(), answers.clone());
        std::thread::spawn(move || loop {
            let (_, v): (String, Vec<u8>) = redis::cmd("BLPOP")
                .arg(&requests)
                .arg(0)
                .query(&mut other)
                .unwrap();
            if v == b"stop" {
                break;
            }
            redis::cmd("RPUSH")
                .arg(&answers)
                .arg(v)
                .query::<i64>(&mut other)
                .unwrap();
        })
    };
    let frame = [7u8; 16];
    let cpu0 = cpu_seconds();
    let pingpong: Vec<f64> = (0..n + 100)
        .map(|_| {
            let t0 = Instant::now();
            redis::cmd("RPUSH")
                .arg(&requests)
                .arg(&frame[..])
                .query::<i64>(&mut con)
                .unwrap();
            let (_, v): (String, Vec<u8>) = redis::cmd("BLPOP")
                .arg(&answers)
                .arg(0)
                .query(&mut con)
                .unwrap();
            assert_eq!(v, frame);
            us(t0.elapsed())
        })
        .skip(100)
        .collect();
    let pingpong_cpu = (cpu_seconds() - cpu0) * 1e6 / (n + 100) as f64;
    redis::cmd("RPUSH")
        .arg(&requests)
        .arg("stop")
        .query::<i64>(&mut con)
        .unwrap();
    helper.join().unwrap();
    ((ping, ping_cpu), (pingpong, pingpong_cpu))
}

/// A plain socket to Redis that writes requests with `writev` and reads
/// bulk replies into a caller's buffer: the fastest way this benchmark
/// knows to move large values in and out.
struct RawRedis {
    writer: std::net::TcpStream,
    reader: std::io::BufReader<std::net::TcpStream>,
}

impl RawRedis {
    fn connect(port: u16) -> RawRedis {
        let writer = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        writer.set_nodelay(true).unwrap();
        let reader = std::io::BufReader::with_capacity(64 * KIB, writer.try_clone().unwrap());
        RawRedis { writer, reader }
    }

    /// Sends one command whose last argument is `value`.
    fn send(&mut self, args: &[&[u8]], value: Option<&[u8]>) {
        let mut head = format!("*{}\r\n", args.len() + usize::from(value.is_some())).into_bytes();
        for a in args {
            head.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            head.extend_from_slice(a);
            head.extend_from_slice(b"\r\n");
        }
        let Some(value) = value else {
            self.writer.write_all(&head).unwrap();
            return;
        };
        head.extend_from_slice(format!("${}\r\n", value.len()).as_bytes());
        let mut slices = [
            std::io::IoSlice::new(&head),
            std::io::IoSlice::new(value),
            std::io::IoSlice::new(b"\r\n"),
        ];
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            let n = self.writer.write_vectored(rest).unwrap();
            std::io::IoSlice::advance_slices(&mut rest, n);
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut self.reader, &mut line).unwrap();
        assert!(!line.starts_with('-'), "redis: {line}");
        line
    }

    /// Reads a bulk reply into `out`, returning its length.
    fn bulk_into(&mut self, out: &mut [u8]) -> usize {
        let line = self.line();
        let len: usize = line[1..].trim_end().parse().unwrap();
        self.reader.read_exact(&mut out[..len]).unwrap();
        let mut crlf = [0u8; 2];
        self.reader.read_exact(&mut crlf).unwrap();
        len
    }
}

/// The floor under a proxied echo of `data` through Redis: the bytes moved
/// in and out twice (SET, GET, SET, GET, as the caller and the worker do),
/// on one plain connection, the value read back into a warm buffer; in one
/// command each, or (`piece`) in pieces of that size, pipelined (SET of the
/// first, APPEND of the others; GETRANGE of each). Milliseconds each.
fn redis_set_get(port: u16, data: &[u8], reps: usize, piece: Option<usize>) -> Vec<f64> {
    let mut con = RawRedis::connect(port);
    let mut back = vec![0u8; data.len()];
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let keys = [format!("bench:{tag}:a"), format!("bench:{tag}:b")];
    let xs = (0..reps + 1)
        .map(|_| {
            let t0 = Instant::now();
            for key in &keys {
                let key = key.as_bytes();
                match piece {
                    None => {
                        con.send(&[b"SET", key], Some(data));
                        assert_eq!(con.line(), "+OK\r\n");
                        con.send(&[b"GET", key], None);
                        assert_eq!(con.bulk_into(&mut back), data.len());
                    }
                    Some(piece) => {
                        let pieces: Vec<&[u8]> = data.chunks(piece).collect();
                        for (i, p) in pieces.iter().enumerate() {
                            let command: &[u8] = if i == 0 { b"SET" } else { b"APPEND" };
                            con.send(&[command, key], Some(p));
                        }
                        for _ in &pieces {
                            con.line();
                        }
                        let mut at = 0;
                        for p in &pieces {
                            let (from, to) = (at.to_string(), (at + p.len() - 1).to_string());
                            con.send(&[b"GETRANGE", key, from.as_bytes(), to.as_bytes()], None);
                            at += p.len();
                        }
                        let mut at = 0;
                        for p in &pieces {
                            at += con.bulk_into(&mut back[at..at + p.len()]);
                        }
                        assert_eq!(at, data.len());
                    }
                }
            }
            let e = ms(t0.elapsed());
            con.send(&[b"UNLINK", keys[0].as_bytes(), keys[1].as_bytes()], None);
            con.line();
            e
        })
        .skip(1)
        .collect();
    assert!(back[..] == data[..]);
    xs
}

/// Sequential no-op round trips: `check` sees each result.
fn latencies<R: proxystore::Storable>(
    n: usize,
    ex: &StoreExecutor,
    task: impl Fn(i64) -> proxystore::Task<R>,
    check: impl Fn(i64, TaskValue<R>),
) -> Vec<f64> {
    (0..n as i64)
        .map(|i| {
            let t0 = Instant::now();
            let r = ex.submit(task(i)).unwrap().result().unwrap();
            check(i, r); // drops the result: an owned proxy is evicted
            us(t0.elapsed())
        })
        .collect()
}

/// `INFO commandstats` as "cmd x.xx" per task, most called first.
fn commands_per_task(stats: &str, tasks: usize) -> String {
    let mut calls: Vec<(String, f64)> = stats
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(":calls=")?;
            let n: f64 = rest.split(',').next()?.parse().ok()?;
            Some((name.to_string(), n / tasks as f64))
        })
        .filter(|(name, per)| *per >= 0.01 && !matches!(name.as_str(), "config" | "info"))
        .collect();
    calls.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = calls.iter().map(|c| c.1).sum();
    let each: Vec<String> = calls.iter().map(|(c, n)| format!("{c} {n:.2}")).collect();
    format!("{total:.2} in all: {}", each.join(", "))
}

fn redis_round(o: &Options, t: &mut Table, rig: &RedisRig) {
    let n = o.n_redis_lat;
    let ((ping, ping_cpu), (pingpong, pingpong_cpu)) = redis_floor(&rig.url(), n);
    t.rust("r. floor: PING round trip", "us", &ping);
    t.cpu("r. floor: PING round trip", ping_cpu);
    let name = "r. floor: list ping-pong, RPUSH+BLPOP x2";
    t.rust(name, "us", &pingpong);
    t.cpu(name, pingpong_cpu);
    // The floor under the largest echo: its bytes in and out twice.
    let sizes = redis_sizes(o);
    let size = sizes[sizes.len() - 1];
    let data = &byte_payloads(&[size])[0];
    let reps = if o.quick { 3 } else { 10 };
    let piece = (8 * MIB).min(size / 4);
    let name = format!("r. floor: SET+GET {}, twice", label(size));
    let xs = with_cpu_each(t, &name, || {
        redis_set_get(rig.server.port(), data, reps, None)
    });
    t.rust(&name, "ms", &xs);
    let name = format!(
        "r. floor: SET+GET {}, twice, {} pieces pipelined",
        label(size),
        label(piece)
    );
    let xs = with_cpu_each(t, &name, || {
        redis_set_get(rig.server.port(), data, reps, Some(piece))
    });
    t.rust(&name, "ms", &xs);

    // The cluster executor, nothing proxied: latency and bursts.
    let (ex, namespace) = rig.cluster("ra", ShouldProxy::Never);
    for i in 0..200 {
        ex.submit(noop::task(i)).unwrap().result().unwrap();
    }
    let name = "r. cluster: no-op latency (ProxyNever)";
    let lat = with_cpu(t, name, n, || {
        latencies(n, &ex, noop::task, |i, r| assert_eq!(*r, i))
    });
    t.rust(name, "us", &lat);
    let p90 = "r. cluster: no-op latency p90 (ProxyNever)";
    t.rust(p90, "us", &[percentile(&lat, 0.9)]);
    if let Some(cpu) = t.cpu.get(name).and_then(|v| v.last().copied()) {
        t.cpu(p90, cpu);
    }
    let name = format!("r. cluster: no-op burst of {}", o.n_redis_burst);
    let xs = with_cpu(t, &name, 3 * o.n_redis_burst, || {
        bursts_of(o.n_redis_burst, &ex)
    });
    t.rust(&name, "task/s", &xs);
    rig.check_leftovers("cluster ProxyNever", &namespace);
    drop(ex);

    // Small value proxied both ways through Redis.
    let (ex, namespace) = rig.cluster("rb", ShouldProxy::Always);
    let name = "r. cluster: small value, ProxyAlways round trip";
    let xs = with_cpu(t, name, n + 50, || small_always(n, &ex));
    t.rust(name, "us", &xs);
    rig.check_leftovers("cluster ProxyAlways", &namespace);
    drop(ex);

    let bytes = byte_payloads(sizes);

    // Bytes proxied to a worker on the cluster and back.
    let (ex, namespace) = rig.cluster("rc", ShouldProxy::types::<(Vec<u8>,)>());
    sweep_sizes(
        o,
        t,
        sizes,
        "r. cluster: bytes echo",
        |i| bytes[i].clone(),
        |size, arg| echo_checked(&ex, size, arg, true),
    );
    rig.check_leftovers("cluster bytes echo", &namespace);
    drop(ex);

    // The process pool with the Redis store: the anchor's `--redis` rows.
    let (ex, namespace) = rig.pool("rp", ShouldProxy::Always);
    let name = "r. pool+redis: small value, ProxyAlways round trip";
    rig.server.raw(&["CONFIG", "RESETSTAT"]);
    let xs = with_cpu(t, name, n + 50, || small_always(n, &ex));
    let stats = rig.server.raw(&["INFO", "commandstats"]);
    t.rust(name, "us", &xs);
    t.notes.insert(
        "redis commands".into(),
        format!(
            "(redis commands per task of \"{name}\", from INFO commandstats, every client of the server: {})",
            commands_per_task(&stats, n + 50)
        ),
    );
    rig.check_leftovers("pool ProxyAlways", &namespace);
    drop(ex);
    let (ex, namespace) = rig.pool("rq", ShouldProxy::types::<(Vec<u8>,)>());
    sweep_sizes(
        o,
        t,
        sizes,
        "r. pool+redis: bytes touch",
        |i| bytes[i].clone(),
        |size, arg| touch_checked(&ex, size, arg),
    );
    sweep_sizes(
        o,
        t,
        sizes,
        "r. pool+redis: bytes echo",
        |i| bytes[i].clone(),
        |size, arg| echo_checked(&ex, size, arg, true),
    );
    rig.check_leftovers("pool bytes", &namespace);
    drop(ex);
    drop(bytes);
    let floats = float_payloads(sizes);
    let sums: Vec<f64> = floats.iter().map(|f| f.iter().sum()).collect();
    let (ex, namespace) = rig.pool("rr", ShouldProxy::types::<(Vec<f64>,)>());
    sweep_sizes(
        o,
        t,
        sizes,
        "r. pool+redis: f64 sum",
        |i| floats[i].clone(),
        |size, arg| {
            let r = ex.submit(asum::task(arg)).unwrap().result().unwrap();
            assert_eq!(*r, sums[index_of(size)]);
        },
    );
    rig.check_leftovers("pool f64", &namespace);
    drop(ex);
}

/// The anchor's Redis rows (`--redis`: its process pool with a Redis
/// store) and, with `--dask`, its Dask rows beside the cluster executor's.
fn python_redis_round(o: &Options, t: &mut Table, rig: &RedisRig) {
    let server = format!("127.0.0.1:{}", rig.server.port());
    let sizes = redis_sizes(o);
    let args = [
        "--parts".to_string(),
        "bc".into(),
        "--n".into(),
        o.n_redis_lat.to_string(),
        "--scale".into(),
        o.scale.to_string(),
        "--redis".into(),
        server.clone(),
    ];
    if let Some(r) = run_anchor(o, "redis", &args) {
        t.python_stat(
            "r. pool+redis: small value, ProxyAlways round trip",
            "us",
            &r["b_storeexec_always_full"]["lat_us"],
            1.0,
        );
        t.python_cpu_of(
            &r,
            "b_storeexec_always_full",
            "lat",
            None,
            "r. pool+redis: small value, ProxyAlways round trip",
        );
        for (key, name) in [
            ("c_storeexec_bytes_touch", "r. pool+redis: bytes touch"),
            (
                "c_storeexec_bytes_echo_resolved",
                "r. pool+redis: bytes echo",
            ),
            ("c_storeexec_numpy_asum", "r. pool+redis: f64 sum"),
        ] {
            t.python_sizes(&r, key, name, sizes);
        }
    }
    if !o.dask {
        return;
    }
    let args = [
        "--dask".to_string(),
        "--parts".into(),
        "ab".into(),
        "--n".into(),
        o.n_redis_burst.to_string(),
        "--redis".into(),
        server,
    ];
    if let Some(r) = run_anchor(o, "dask", &args) {
        let a = &r["a_storeexec_never_noop"];
        let burst = format!("r. cluster: no-op burst of {}", o.n_redis_burst);
        t.python_stat(
            "r. cluster: no-op latency (ProxyNever)",
            "us",
            &a["lat_us"],
            1.0,
        );
        t.python_stat(&burst, "task/s", &a["thr_tasks_s"], 1.0);
        t.python_stat(
            "r. cluster: small value, ProxyAlways round trip",
            "us",
            &r["b_storeexec_always_full"]["lat_us"],
            1.0,
        );
        for (key, phase, name) in [
            (
                "a_storeexec_never_noop",
                "lat",
                "r. cluster: no-op latency (ProxyNever)",
            ),
            ("a_storeexec_never_noop", "thr", burst.as_str()),
            (
                "b_storeexec_always_full",
                "lat",
                "r. cluster: small value, ProxyAlways round trip",
            ),
        ] {
            t.python_cpu_of(&r, key, phase, None, name);
        }
    }
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
    if o.noop_only {
        noop_only(&o);
        let _ = std::fs::remove_dir_all(&o.root);
        return;
    }
    let mut table = Table::default();
    let rig = RedisRig::start();
    if let Err(skipped) = &rig {
        eprintln!("{skipped}");
    }
    for round in 0..o.rounds {
        if !o.redis_only {
            eprintln!("round {}/{}: rust", round + 1, o.rounds);
            rust_round(&o, &mut table);
            eprintln!(
                "round {}/{}: rust, no-op rows with spinning off",
                round + 1,
                o.rounds
            );
            noop_rows_spin_off(&o, &mut table);
        }
        if let Ok(rig) = &rig {
            eprintln!("round {}/{}: rust, redis", round + 1, o.rounds);
            redis_round(&o, &mut table, rig);
        }
        if o.python.is_some() {
            if !o.redis_only {
                eprintln!("round {}/{}: python", round + 1, o.rounds);
                python_round(&o, &mut table);
            }
            if let Ok(rig) = &rig {
                eprintln!("round {}/{}: python, redis", round + 1, o.rounds);
                python_redis_round(&o, &mut table, rig);
            }
        }
    }
    table.print();
    if !o.redis_only {
        print_targets(&table, &o);
    }
    if rig.is_ok() {
        print_redis_targets(&table);
    }
    match &rig {
        Ok(_) if o.dask => println!(
            "(r. rows: python beside \"cluster\" is Dask distributed on a LocalCluster of 2 processes, beside \"pool+redis\" a ProcessPoolExecutor(2); both with a RedisConnector store)"
        ),
        Ok(_) => println!(
            "(r. rows: python beside \"pool+redis\" is a ProcessPoolExecutor(2) with a RedisConnector store; `bench/compare --dask` adds Dask beside \"cluster\")"
        ),
        Err(skipped) => println!("{skipped}"),
    }
    drop(rig);
    if !o.redis_only {
        growth(&o);
    }
    let _ = std::fs::remove_dir_all(&o.root);
}
