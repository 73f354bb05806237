//! Object keys from text and CBOR.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proxystore::__fuzz::key(data);
});
