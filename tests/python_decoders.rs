//! The Python interop decoders (pickled proxies, `.npy` arrays) on their
//! fuzzers' seed corpus (`fuzz/corpus/python_*`, written by the real Python
//! ProxyStore 1.1.0) and on mutations of it: no panic, only typed errors.

use std::path::Path;

use proxystore::__fuzz;

fn seeds(name: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    out.sort();
    assert!(out.len() >= 5, "seeds missing in {}", dir.display());
    out
}

/// Every seed, then flips, truncations and splices of it (deterministic).
fn replay(seeds: &[Vec<u8>], run: fn(&[u8]) -> usize) -> (usize, usize) {
    let (mut inputs, mut accepted) = (0, 0);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for seed in seeds {
        assert!(run(seed) > 0, "a seed is not accepted");
        for _ in 0..400 {
            let mut m = seed.clone();
            match next() % 4 {
                0 => {
                    let i = next() as usize % m.len();
                    m[i] ^= 1 << (next() % 8);
                }
                1 => m.truncate(next() as usize % m.len()),
                2 => {
                    let i = next() as usize % m.len();
                    m[i] = [0, 0xff, 0x7f, b'(', b'.', 0x94][next() as usize % 6];
                }
                _ => {
                    let other = &seeds[next() as usize % seeds.len()];
                    let at = next() as usize % m.len();
                    m.truncate(at);
                    m.extend_from_slice(&other[next() as usize % other.len()..]);
                }
            }
            inputs += 1;
            accepted += usize::from(run(&m) > 0);
        }
    }
    (inputs, accepted)
}

#[test]
fn pickled_proxies_and_their_mutations_never_panic() {
    let (inputs, accepted) = replay(&seeds("python_pickle"), __fuzz::python_pickle);
    // Some mutations still read (a flipped bit in a string): the checks
    // after a successful read run too.
    assert!(accepted > 0 && accepted < inputs, "{accepted} of {inputs}");
}

#[test]
fn npy_arrays_and_their_mutations_never_panic() {
    let (inputs, accepted) = replay(&seeds("python_npy"), __fuzz::python_npy);
    assert!(accepted > 0 && accepted < inputs, "{accepted} of {inputs}");
}
