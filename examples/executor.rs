//! The seed example: ProxyStore's `StoreExecutor` documentation example, in
//! Rust.
//!
//! A pool of two worker processes runs `concat("foobar", 42)`. Objects go
//! through a `FileConnector` in `./object-cache`; only `String`s are proxied
//! (listed at compile time), the `i64` is passed by value. The result comes
//! back as an owned proxy equal to "foobar-42". When the program ends,
//! nothing it stored is left behind.
//!
//! Run it with `cargo run --example executor`.

use proxystore::connectors::FileConnector;
use proxystore::executor::ProcessPool;
use proxystore::{proxied, Store, StoreExecutor};

/// Joins a base string and a number.
#[proxied(types = [String])]
fn concat(base: String, num: i64) -> String {
    format!("{base}-{num}")
}

fn main() -> proxystore::Result<()> {
    // In a pool worker this serves tasks and never returns.
    proxystore::worker::init();

    let store = Store::new("executor-example", FileConnector::new("./object-cache")?)?;
    let executor = StoreExecutor::new(ProcessPool::new(2)?, store);

    let future = executor.submit(concat::task("foobar".to_string(), 42))?;
    let result = future.result()?;
    assert!(
        result.is_proxy(),
        "the String result came back through the store"
    );
    assert_eq!(*result, "foobar-42");
    println!(
        "concat(\"foobar\", 42) = {:?} (a proxy: {})",
        *result,
        result.is_proxy()
    );

    // `concat` is still an ordinary function.
    assert_eq!(concat("local".to_string(), 1), "local-1");

    drop(result); // an owned result: its object is evicted here
    drop(executor); // pool shut down, store closed: ./object-cache is removed
    assert!(!std::path::Path::new("./object-cache").exists());
    println!("nothing left behind in ./object-cache");
    Ok(())
}
