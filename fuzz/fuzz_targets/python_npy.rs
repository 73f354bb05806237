//! Python ProxyStore's stored objects: `.npy` arrays and the serializer ids.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proxystore::__fuzz::python_npy(data);
});
