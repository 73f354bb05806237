//! The benchmarks of proxystore for Rust: `bench/compare` runs them beside
//! Python ProxyStore; `cargo bench -p proxystore-bench --bench file_store`
//! runs the file store's.
