//! Compile-time diagnostics of `#[proxied]`: each `ui-tests/*.rs` must fail
//! to build with exactly the error in its `.stderr`, and each
//! `ui-tests/pass/*.rs` must build and run.
//!
//! After changing a diagnostic, regenerate the expectations with
//! `TRYBUILD=overwrite cargo test -p proxystore-ui-tests` and read every changed
//! `.stderr`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("*.rs");
    t.pass("pass/*.rs");
}
