//! A worker's answers, as the process pool reads them from its pipe.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    proxystore::__fuzz::worker_answers(data);
});
