//! Storing and loading 100 MiB buffers through a `FileConnector`, against
//! writing and reading the same bytes as a plain file.
//!
//! `cargo bench -p proxystore-bench --bench file_store` runs the criterion benchmarks and then an
//! interleaved side-by-side comparison that prints medians and ratios.
//! `PROXYSTORE_BENCH_MIB` changes the size (default 100).

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use proxystore::connectors::FileConnector;
use proxystore::Store;

fn size() -> usize {
    std::env::var("PROXYSTORE_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100)
        << 20
}

fn plain_file(dir: &Path, bytes: &[u8]) -> usize {
    let path = dir.join("plain");
    std::fs::write(&path, bytes).unwrap();
    let back = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    back.len()
}

fn through_store<T: proxystore::Storable>(store: &Store, value: &T) -> T {
    let key = store.put(value).unwrap();
    let back = store.load::<T>(&key).unwrap().unwrap();
    store.evict(&key).unwrap();
    back
}

fn fixtures() -> (tempfile::TempDir, Store, Vec<u8>, Vec<f64>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::builder(
        "bench-file-store",
        FileConnector::new(dir.path().join("store")).unwrap(),
    )
    .cache_size(0)
    .register(false)
    .build()
    .unwrap();
    let n = size();
    let bytes: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
    let floats: Vec<f64> = (0..n / 8).map(|i| i as f64 * 0.25).collect();
    (dir, store, bytes, floats)
}

fn criterion_benches(c: &mut Criterion) {
    let (dir, store, bytes, floats) = fixtures();
    let n = size();
    let mut group = c.benchmark_group("file_store");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Bytes(n as u64));
    let label = format!("{}MiB", n >> 20);
    group.bench_function(BenchmarkId::new("plain_file_write_read", &label), |b| {
        b.iter(|| black_box(plain_file(dir.path(), &bytes)))
    });
    group.bench_function(BenchmarkId::new("store_vec_u8_put_get", &label), |b| {
        b.iter(|| black_box(through_store(&store, &bytes)))
    });
    group.bench_function(BenchmarkId::new("store_vec_f64_put_get", &label), |b| {
        b.iter(|| black_box(through_store(&store, &floats)))
    });
    group.finish();
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// The three workloads in turn, repeatedly, so that machine noise hits all
/// of them alike; prints medians and the ratio to the plain file.
fn side_by_side() {
    let (dir, store, bytes, floats) = fixtures();
    let reps = 15;
    let (mut plain, mut u8s, mut f64s) = (vec![], vec![], vec![]);
    for _ in 0..reps {
        let t = Instant::now();
        black_box(plain_file(dir.path(), &bytes));
        plain.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        black_box(through_store(&store, &bytes));
        u8s.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        black_box(through_store(&store, &floats));
        f64s.push(t.elapsed().as_secs_f64());
    }
    let mib = (size() >> 20) as f64;
    let p = median(plain.clone());
    println!("\nside by side, {reps} interleaved rounds, {mib} MiB, medians:");
    println!(
        "{:<34} {:>10} {:>10} {:>22}",
        "workload", "ms", "MiB/s", "speed vs plain file"
    );
    for (name, xs) in [
        ("plain file write + read", plain),
        ("Store put + load Vec<u8>", u8s),
        ("Store put + load Vec<f64>", f64s),
    ] {
        let m = median(xs);
        println!(
            "{name:<34} {:>10.1} {:>10.0} {:>21.2}x",
            m * 1e3,
            mib / m,
            p / m
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    criterion_benches(&mut c);
    c.final_summary();
    side_by_side();
}
