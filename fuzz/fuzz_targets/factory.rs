//! Proxy references and store configurations arriving from other processes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proxystore::__fuzz::factory(data);
});
