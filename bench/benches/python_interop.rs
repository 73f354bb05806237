//! Reading a NumPy array that Python ProxyStore 1.1.0 stored (`NP`, file
//! store): Rust's `Store::load` against Python's own `store.get` of the same
//! object and against a plain read of the same file.
//!
//! `cargo bench --bench python_interop -- --python PATH [--quick] [--rounds N]`
//! (`bench/compare` runs it with its virtual environment). Without a Python
//! that has proxystore 1.1.0 and numpy, it says so and does nothing.
//! Targets (issue 18): Rust at most 1.3x the plain read, and faster than
//! Python's get.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use proxystore::python::PythonFileConnector;
use proxystore::{Key, Store};

/// Stores the array and prints the key, then times `store.get` (no cache)
/// `reps` times and prints the seconds of each. The object is left for the
/// Rust side to read, which evicts it.
const PYTHON: &str = r#"
import sys, time
import numpy as np
from proxystore.store import Store
from proxystore.connectors.file import FileConnector
store_dir, n, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = Store('bench-python-np', FileConnector(store_dir, clear=False), cache_size=0)
key = store.put(np.arange(n, dtype='<f8'))
print(key.filename, flush=True)
for _ in range(reps):
    t = time.perf_counter()
    a = store.get(key)
    assert a.shape == (n,)
    print(time.perf_counter() - t, flush=True)
    del a
"#;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut python, mut quick, mut rounds) = (None, false, 5usize);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--python" => python = args.next().map(PathBuf::from),
            "--quick" => quick = true,
            "--rounds" => rounds = args.next().and_then(|r| r.parse().ok()).unwrap_or(5),
            _ => {}
        }
    }
    let python = python
        .or_else(|| std::env::var_os("PROXYSTORE_PYTHON").map(PathBuf::from))
        .filter(|p| p.exists());
    let Some(python) = python else {
        eprintln!(
            "python_interop bench: no Python with proxystore==1.1.0 and numpy (pass --python or \
             set PROXYSTORE_PYTHON; bench/compare makes one): nothing measured"
        );
        return;
    };
    let (mib, reps) = if quick {
        (4usize, 2usize)
    } else {
        (100, rounds.max(3))
    };
    let n = (mib << 20) / 8;
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");

    // Python stores the array, and its own reads are timed in the same run.
    let out = Command::new(&python)
        .args(["-c", PYTHON])
        .arg(&store_dir)
        .arg(n.to_string())
        .arg(reps.to_string())
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "python_interop bench: python failed; nothing measured:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let key = lines.next().unwrap().to_string();
    let python_get: Vec<f64> = lines.map(|l| l.parse::<f64>().unwrap() * 1e3).collect();

    let key: Key = key.parse().expect("python printed the key");
    let store = Store::new(
        "bench-rust-np",
        PythonFileConnector::new(&store_dir).unwrap(),
    )
    .unwrap();
    let path: &Path = &store_dir.join(key.to_string());

    let (mut rust, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        let bytes = std::fs::read(path).unwrap();
        plain.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(&bytes);
        drop(bytes);

        let t = Instant::now();
        let values: Vec<f64> = store.load(&key).unwrap().unwrap();
        rust.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(values.len(), n);
        drop(values);
    }
    store.evict(&key).unwrap();
    store.close().unwrap();

    let (r, p, py) = (median(rust), median(plain), median(python_get));
    println!("\nreading a {mib} MiB NP array stored by Python ProxyStore ({reps} reps, medians):");
    println!("  {:<40} {:>9.2} ms", "plain read of the same file", p);
    println!(
        "  {:<40} {:>9.2} ms  ({:.2}x plain)",
        "rust Store::load::<Vec<f64>>",
        r,
        r / p
    );
    println!(
        "  {:<40} {:>9.2} ms  ({:.2}x plain)",
        "python store.get (cache off)",
        py,
        py / p
    );
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "targets: rust <= 1.3x plain read: {}; rust faster than python's get: {}",
        verdict(r <= 1.3 * p),
        verdict(r < py)
    );
}
