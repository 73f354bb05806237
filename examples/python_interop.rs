//! A Rust task inside a Python ProxyStore pipeline.
//!
//! `examples/python_interop.py` stores a NumPy array with Python
//! ProxyStore 1.1 and writes `pickle.dumps(proxy)` to this program's stdin.
//! Here the pickle is read (only ProxyStore's own classes are accepted,
//! nothing in it runs), a `#[proxied]` task runs on a pool of worker
//! processes with the proxy as its argument (the worker reads the array
//! straight from Python's store), and the result goes back the same way:
//! stored in Python's format, its owned proxy pickled to stdout, where
//! Python resolves it and evicts it once done.
//!
//! Run it with `python3 examples/python_interop.py` (the script builds and
//! runs this example with `cargo run --example python_interop`; it needs
//! `pip install proxystore==1.1.0 numpy`).

use std::io::{Read, Write};

use proxystore::connectors::FileConnector;
use proxystore::executor::ProcessPool;
use proxystore::python::{self, PickledProxy};
use proxystore::{proxied, Proxy, Store, StoreExecutor};

/// Scales the samples to zero mean and unit variance.
#[proxied]
fn standardize(samples: Proxy<Vec<f64>>) -> Vec<f64> {
    let n = samples.len().max(1) as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let var = samples.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    let std = var.sqrt().max(f64::MIN_POSITIVE);
    samples.iter().map(|x| (x - mean) / std).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // In a pool worker this serves tasks and never returns.
    proxystore::worker::init();

    let mut pickled = Vec::new();
    std::io::stdin().read_to_end(&mut pickled)?;
    let samples: Proxy<Vec<f64>> = PickledProxy::from_pickle(&pickled)?.into_proxy()?;
    // Python's store, opened here in Python's layout from the proxy.
    let python_store = Proxy::factory(&samples).store()?;

    // The executor's own store, for anything it proxies itself.
    let scratch = tempfile::tempdir()?;
    let store = Store::new("python-interop-tasks", FileConnector::new(scratch.path())?)?;
    let executor = StoreExecutor::new(ProcessPool::new(2)?, store);
    let result = executor.submit(standardize::task(samples))?.result()?;
    let standardized = result.into_value()?;
    drop(executor);

    // Stored in Python's format; Python's `OwnedProxy` evicts it when done.
    let owned = python::owned_proxy(&python_store, standardized)?;
    std::io::stdout().write_all(&python::owned_to_pickle(owned)?)?;
    eprintln!("standardized the array in a worker process; its proxy is on stdout");
    Ok(())
}
