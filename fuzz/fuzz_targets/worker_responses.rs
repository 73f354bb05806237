//! Responses from pool workers, as the process pool reads them.
//!
//! Not built yet (commented out in Cargo.toml): it needs
//! `proxystore::__fuzz::parse_response`, which the process pool's
//! restructuring provides.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = proxystore::__fuzz::parse_response(data);
});
