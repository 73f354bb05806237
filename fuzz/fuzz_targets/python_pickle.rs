//! Pickled Python ProxyStore proxies, read without running anything.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proxystore::__fuzz::python_pickle(data);
});
