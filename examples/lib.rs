//! The examples of proxystore for Rust, as a package of their own: run one
//! with `cargo run --example executor` (see the README for the others and
//! the features they need).
