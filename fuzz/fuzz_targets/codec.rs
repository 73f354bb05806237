//! Stored objects decoded as fast-path and CBOR types.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proxystore::__fuzz::codec(data);
});
