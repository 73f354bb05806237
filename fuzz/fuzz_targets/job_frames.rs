//! Jobs as a worker receives them, run against the one task registered here.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// The task the seed jobs call (the decoder tests register the same name).
#[proxystore::proxied(name = "fuzz.echo", types = [String])]
fn echo(bytes: Vec<u8>, text: String) -> usize {
    bytes.len() + text.len()
}

fuzz_target!(|data: &[u8]| {
    proxystore::__fuzz::job_frames(data);
});
