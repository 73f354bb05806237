//! Every decoder of bytes from outside, on the stable toolchain: the seed
//! corpus the fuzzers start from (`fuzz/corpus/*/seed-*`) and thousands of
//! deterministic mutations of valid encodings. No input may panic, abort or
//! allocate what it claims; failures are typed errors. The checks
//! themselves live in `proxystore::__fuzz`, shared with the fuzzers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

use proxystore::__fuzz::{self, Shape};
use proxystore::codec::encode;
use proxystore::connectors::LocalConnector;
use proxystore::executor::{Completion, Executor};
use proxystore::{proxied, Job, Key, Proxy, Store, StoreExecutor};

/// The task the seed jobs call (the `job_frames` fuzzer registers the same
/// name).
#[proxied(name = "fuzz.echo", types = [String])]
fn echo(bytes: Vec<u8>, text: String) -> usize {
    bytes.len() + text.len()
}

type Target = fn(&[u8]) -> usize;

const TARGETS: [(&str, Target); 5] = [
    ("codec", __fuzz::codec),
    ("key", __fuzz::key),
    ("factory", __fuzz::factory),
    ("job_frames", __fuzz::job_frames),
    ("worker_responses", __fuzz::worker_answers),
];

/// Panics anywhere in this binary, even ones a job runner catches and
/// reports as a task failure: a decoder must not panic at all.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

/// An executor that only keeps the bytes of the jobs submitted to it.
#[derive(Default)]
struct Capture(Mutex<Vec<Vec<u8>>>);

impl Executor for &'static Capture {
    fn submit(&self, job: Job, completion: Completion) {
        self.0.lock().unwrap().push(job.to_bytes());
        // Never completed: the job's stored arguments stay for the replays.
        std::mem::forget(completion);
    }

    fn shutdown(&self, _wait: bool, _cancel_pending: bool) {}
}

fn cbor<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).unwrap();
    out
}

/// Valid inputs for each target: what the decoders see from honest peers.
fn valid_inputs() -> Vec<(&'static str, Vec<u8>)> {
    let mut inputs = Vec::new();
    let mut codec = |bytes: Vec<u8>| inputs.push(("codec", bytes));
    codec(encode(&vec![1u8, 2, 3]).unwrap().to_vec());
    codec(encode(&vec![0.5f32, -1.0]).unwrap().to_vec());
    codec(encode(&vec![1.5f64; 4]).unwrap().to_vec());
    codec(encode(&vec![-7i32, 8]).unwrap().to_vec());
    codec(encode(&vec![i64::MIN]).unwrap().to_vec());
    codec(encode(&vec![3u32; 3]).unwrap().to_vec());
    codec(encode(&vec![u64::MAX, 0]).unwrap().to_vec());
    codec(encode(&"héllo".to_string()).unwrap().to_vec());
    codec(encode(&42u64).unwrap().to_vec());
    codec(encode(&Some(7u8)).unwrap().to_vec());
    codec(
        encode(&("pair".to_string(), vec![1u16, 2]))
            .unwrap()
            .to_vec(),
    );
    let shapes = vec![
        Shape::Empty,
        Shape::Text("t".into()),
        Shape::Pair(-3, Some(Box::new(Shape::Empty))),
        Shape::Record {
            values: vec![1.0, 2.5],
            tags: [("a".to_string(), 1u64)].into_iter().collect(),
        },
    ];
    codec(encode(&shapes).unwrap().to_vec());
    let value = ciborium::Value::Array(vec![
        ciborium::Value::Tag(7, Box::new(ciborium::Value::Bytes(vec![1, 2]))),
        ciborium::Value::Map(vec![("k".into(), ciborium::Value::Float(0.5))]),
    ]);
    codec(encode(&value).unwrap().to_vec());
    codec(
        encode(&__fuzz::Chain(Some(Box::new(__fuzz::Chain(None)))))
            .unwrap()
            .to_vec(),
    );

    let key = Key::new();
    inputs.push(("key", key.to_string().into_bytes()));
    inputs.push(("key", cbor(&key)));

    let connector = LocalConnector::new();
    let store = Store::builder("decoders-seeds", connector)
        .register(false)
        .build()
        .unwrap();
    let proxy: Proxy<String> = store.proxy("proxied".to_string()).unwrap();
    inputs.push(("factory", cbor(&proxy)));
    inputs.push(("factory", cbor(store.config())));
    inputs.push(("factory", cbor(&store.config().connector)));

    let capture: &'static Capture = Box::leak(Box::default());
    let executor = StoreExecutor::new(capture, store.clone()).close_store(false);
    drop(executor.submit(echo::task(vec![1u8, 2, 3], "text".to_string())));
    drop(executor.submit(echo::task(vec![9u8; 40], &proxy)));
    // A future's proxy: a FUTURE frame in the job, a wait in the proxy.
    let future = store
        .future::<String>()
        .unwrap()
        .timeout(std::time::Duration::from_millis(1));
    inputs.push(("factory", cbor(&future.proxy())));
    drop(executor.submit(echo::task(vec![7u8; 3], future.proxy())));
    for job in capture.0.lock().unwrap().drain(..) {
        inputs.push(("job_frames", job));
    }
    // A worker's answers: a result, a failure, a revocation's two answers.
    let answer = |kind: u8, id: u64, body: &[u8]| {
        let mut out = b"PX".to_vec();
        out.push(kind);
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(body);
        out
    };
    // A result: a table of no sections, then its frame.
    let mut answers = answer(3, 0, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7]);
    // A result whose body follows as a section of four bytes (format 1).
    answers.extend(answer(
        3,
        4,
        &[1, 0, 1, 4, 0, 0, 0, 0, 0, 0, 0, 9, 9, 1, 2, 3, 4],
    ));
    answers.extend(answer(4, 1, b"task failed: reason"));
    answers.extend(answer(5, 2, b""));
    answers.extend(answer(6, 3, b""));
    inputs.push(("worker_responses", answers));
    // The stores of these inputs must outlive the replays.
    std::mem::forget(executor);
    std::mem::forget(store);
    inputs
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to four random edits of the kinds that break decoders: bit flips,
/// boundary bytes, huge or off-by-one lengths, cuts, repeats and inserts.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len());
        match rng.below(8) {
            0 if !out.is_empty() => out[at] ^= 1 << rng.below(8),
            1 if !out.is_empty() => out[at] = [0x00, 0x01, 0x7f, 0x80, 0xff][rng.below(5)],
            2 if out.len() >= at + 8 => {
                let old = u64::from_le_bytes(out[at..at + 8].try_into().unwrap());
                let new = [1 << 62, u64::MAX, old.wrapping_add(1), old.wrapping_sub(1)];
                out[at..at + 8].copy_from_slice(&new[rng.below(4)].to_le_bytes());
            }
            3 if !out.is_empty() => {
                // CBOR heads announcing 2^62 items or bytes.
                out[at] = [0x5b, 0x7b, 0x9b, 0xbb][rng.below(4)];
                let huge = (1u64 << 62).to_be_bytes();
                let end = (at + 9).min(out.len());
                out.splice(at + 1..end, huge);
            }
            4 => out.truncate(at),
            5 if !out.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                let chunk = out[at..end].to_vec();
                out.splice(at..at, chunk);
            }
            6 => {
                let extra: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
                out.splice(at..at, extra);
            }
            _ => {
                let end = (at + 1 + rng.below(8)).min(out.len());
                out.drain(at.min(out.len())..end);
            }
        }
    }
    out
}

#[test]
fn an_argument_announcing_a_huge_body_fails_its_task_only() {
    count_panics();
    let (_, job) = valid_inputs()
        .into_iter()
        .find(|(name, _)| *name == "job_frames")
        .unwrap();
    // The first argument is a `Vec<u8>` sent inline: its codec header is the
    // first one in the job. Announce 2^62 bytes for its body.
    let at = job.windows(4).position(|w| w == b"PXS1").unwrap();
    let name_len = u16::from_le_bytes([job[at + 5], job[at + 6]]) as usize;
    let len_at = at + 7 + name_len;
    let mut hostile = job.clone();
    hostile[len_at..len_at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    assert!(proxystore::task::run_job_bytes(&job).is_ok());
    let failure = proxystore::task::run_job_bytes(&hostile).unwrap_err();
    assert!(
        failure.message().contains("argument 0") && failure.message().contains("announces"),
        "{failure}"
    );
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

#[test]
fn the_seed_corpus_decodes_without_panics() {
    count_panics();
    let mut files = 0;
    for (name, target) in TARGETS {
        let dir = corpus_dir().join(name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("seed-")
            });
        for path in entries {
            target(&std::fs::read(&path).unwrap());
            files += 1;
        }
    }
    assert!(
        files >= TARGETS.len(),
        "no seeds found in {}",
        corpus_dir().display()
    );
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
}

#[test]
fn mutations_of_valid_encodings_fail_only_with_typed_errors() {
    count_panics();
    let inputs = valid_inputs();
    for (name, input) in &inputs {
        let target = TARGETS.iter().find(|(n, _)| n == name).unwrap().1;
        assert!(target(input) > 0, "a valid {name} input is refused");
    }
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut accepted = 0;
    const ROUNDS: usize = 20_000;
    for round in 0..ROUNDS {
        let (name, input) = &inputs[round % inputs.len()];
        let target = TARGETS.iter().find(|(n, _)| n == name).unwrap().1;
        accepted += target(&mutate(&mut rng, input));
    }
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
    // The mutations must not all die at the first check.
    eprintln!("{accepted} decodings of {ROUNDS} mutated inputs succeeded");
    assert!(
        accepted > ROUNDS / 20,
        "only {accepted} mutated inputs decoded"
    );
}

/// Writes the valid inputs as the fuzzers' seed corpus:
/// `cargo test -p proxystore-tests --test decoders -- --ignored write_seed_corpus`.
#[test]
#[ignore = "writes fuzz/corpus; run by hand when the formats change"]
fn write_seed_corpus() {
    for (i, (name, input)) in valid_inputs().iter().enumerate() {
        let dir = corpus_dir().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{i:02}")), input).unwrap();
    }
}
