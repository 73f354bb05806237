//! What the shared-memory store promises beyond the conformance suite: its
//! directory never outlives the process that created it (even one killed
//! with SIGKILL), close removes everything and a rebuilt connector's close
//! nothing, pool workers read and write its objects, and large objects
//! make the round trip.
#![cfg(target_os = "linux")]

mod support;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proxystore::connectors::{Connector, ConnectorConfig, SharedMemoryConnector};
use proxystore::executor::ProcessPool;
use proxystore::{proxied, Error, Store, StoreExecutor};
use support::common::unique;

proxystore::test_worker!();

#[proxied(types = [Vec<u8>])]
fn reversed(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.reverse();
    bytes
}

/// A base directory of the test's own in the real `/dev/shm`, so the test
/// can tell what the store touched there.
fn base() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("shm-test-")
        .tempdir_in("/dev/shm")
        .unwrap()
}

/// The names in `dir`, sorted (`["<gone>"]` if there is no such directory).
fn names(dir: &Path) -> Vec<String> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return vec!["<gone>".into()],
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Waits up to `limit` for `done`.
fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// A peer in a process group of its own, killed (group and all) when the
/// test ends, even if it fails.
struct Peer(Child);

impl Peer {
    fn kill_group(&mut self) {
        // SAFETY: SIGKILL to the peer's own process group (its pid).
        unsafe { libc::kill(-(self.0.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill_group();
    }
}

#[test]
fn killed_creator_leaves_nothing_behind_but_what_is_not_its() {
    let base = base();
    fs::write(base.path().join("beside.txt"), b"mine").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_proxystore-peer"))
        .args(["shm-hold", base.path().to_str().unwrap()])
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut peer = Peer(child);
    let dirs: Vec<PathBuf> = (0..2)
        .map(|_| {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            PathBuf::from(line.trim())
        })
        .collect();
    let [plain, planted] = &dirs[..] else {
        panic!("two directories expected: {dirs:?}")
    };
    for dir in &dirs {
        assert_eq!(dir.parent(), Some(base.path()), "{}", dir.display());
        assert_eq!(
            names(dir).len(),
            2 + usize::from(dir == plain),
            "{:?}",
            names(dir)
        );
    }
    assert!(
        names(plain).iter().any(|n| n.ends_with(".tmp")),
        "a temporary file, as a crash mid-write leaves"
    );
    // Someone else's file in the second store's directory.
    fs::write(planted.join("notes.txt"), b"mine too").unwrap();

    // SIGKILL to the creator's whole process group: no handler runs.
    peer.kill_group();

    assert!(
        eventually(Duration::from_secs(5), || !plain.exists()),
        "the killed creator's directory is still there: {:?}",
        names(plain)
    );
    assert!(
        eventually(Duration::from_secs(5), || names(planted) == ["notes.txt"]),
        "the store's own files are removed, the planted one kept: {:?}",
        names(planted)
    );
    assert_eq!(fs::read(planted.join("notes.txt")).unwrap(), b"mine too");
    let mut left = names(base.path());
    left.retain(|n| *n != planted.file_name().unwrap().to_str().unwrap());
    assert_eq!(left, ["beside.txt"]);
    assert_eq!(fs::read(base.path().join("beside.txt")).unwrap(), b"mine");
}

#[test]
fn close_removes_everything_and_a_rebuilt_connector_removes_nothing() {
    let base = base();
    fs::write(base.path().join("beside.txt"), b"mine").unwrap();
    let c = SharedMemoryConnector::builder()
        .base_dir(base.path())
        .build()
        .unwrap();
    let dir = c.directory().to_path_buf();
    assert_eq!(dir.parent(), Some(base.path()));
    let ours = c.put(&[b"from the creator"]).unwrap();

    // A worker's connector writes into the same directory, and its close
    // leaves everything in place.
    let rebuilt = c.config().build().unwrap();
    let theirs = rebuilt.put(&[b"from a worker"]).unwrap();
    rebuilt.close().unwrap();
    assert_eq!(names(&dir).len(), 2, "{:?}", names(&dir));
    assert_eq!(
        c.get(&theirs).unwrap().as_deref(),
        Some(&b"from a worker"[..])
    );
    assert_eq!(
        rebuilt.get(&ours).unwrap().as_deref(),
        Some(&b"from the creator"[..])
    );

    c.close().unwrap();
    assert!(!dir.exists(), "{:?}", names(&dir));
    assert_eq!(names(base.path()), ["beside.txt"]);
    // Closed: nothing to read, nothing can be written, from either side.
    assert_eq!(rebuilt.get(&ours).unwrap(), None);
    let err = rebuilt.put(&[b"late"]).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(
        !dir.exists(),
        "a rebuilt connector never creates the directory"
    );
    c.close().unwrap();

    // The creating process's guardian ends with its last store.
    let out = Command::new(env!("CARGO_BIN_EXE_proxystore-peer"))
        .args(["shm-close", base.path().to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("guardian ") && text.ends_with("ended\n"),
        "{text}"
    );
    assert_eq!(names(base.path()), ["beside.txt"]);
}

#[test]
fn keys_lists_only_the_stores_own_objects() {
    let base = base();
    let build = || {
        SharedMemoryConnector::builder()
            .base_dir(base.path())
            .build()
            .unwrap()
    };
    let (a, b) = (build(), build());
    let ours = a.put(&[b"a's"]).unwrap();
    let theirs = b.put(&[b"b's"]).unwrap();
    // A worker's write lands in the same directory: the store's object.
    let rebuilt = a.config().build().unwrap();
    let from_worker = rebuilt.put(&[b"from a worker"]).unwrap();
    fs::write(a.directory().join("beside.txt"), b"not an object").unwrap();
    fs::write(
        a.directory()
            .join(format!(".{ours}.{}.tmp", proxystore::Key::new())),
        b"half written",
    )
    .unwrap();

    let mut expected = vec![ours, from_worker];
    expected.sort();
    let mut listed = a.keys().unwrap();
    listed.sort();
    assert_eq!(listed, expected);
    let mut listed = rebuilt.keys().unwrap();
    listed.sort();
    assert_eq!(
        listed, expected,
        "a rebuilt connector sees the same objects"
    );
    assert_eq!(b.keys().unwrap(), [theirs], "nothing of the other store");

    a.close().unwrap();
    assert_eq!(a.keys().unwrap(), []);
    assert_eq!(rebuilt.keys().unwrap(), [], "closed: no objects anywhere");
    assert_eq!(b.keys().unwrap(), [theirs]);
    b.close().unwrap();
    // The foreign file kept the directory; without it, close removes it.
    fs::remove_file(a.directory().join("beside.txt")).unwrap();
    a.close().unwrap();
    assert!(!a.directory().exists());
}

#[test]
fn a_forged_configuration_cannot_name_another_directory() {
    let base = base();
    let c = SharedMemoryConnector::builder()
        .base_dir(base.path())
        .build()
        .unwrap();
    let mut config = c.config();
    let ciborium::Value::Map(entries) = &mut config.options else {
        panic!("options are a map")
    };
    for (name, value) in entries.iter_mut() {
        if name.as_text() == Some("directory") {
            *value = ciborium::Value::Text(base.path().to_str().unwrap().to_string());
        }
    }
    let err = ConnectorConfig::build(&config).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    assert!(err.to_string().contains("refusing"), "{err}");
    c.close().unwrap();
}

#[test]
fn a_proxied_value_resolves_in_a_pool_worker_and_the_store_ends_empty() {
    let base = base();
    let c = SharedMemoryConnector::builder()
        .base_dir(base.path())
        .build()
        .unwrap();
    let dir = c.directory().to_path_buf();
    let store = Store::builder(unique("shm-pool"), c).build().unwrap();
    let pool = ProcessPool::builder(1).test_harness().build().unwrap();
    let executor = StoreExecutor::new(pool, store.clone());

    let input: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let result = executor
        .submit(reversed::task(input.clone()))
        .unwrap()
        .result()
        .unwrap();
    assert!(result.is_proxy(), "the worker stored its result");
    let mut expected = input;
    expected.reverse();
    assert_eq!(*result, expected);
    assert_eq!(names(&dir).len(), 1, "only the owned result is left");
    drop(result);
    assert!(names(&dir).is_empty(), "{:?}", names(&dir));

    drop(executor);
    assert!(!dir.exists(), "the executor closed the store");
    assert!(names(base.path()).is_empty());
}

#[test]
fn a_100_mib_object_makes_the_round_trip() {
    let base = base();
    let c = SharedMemoryConnector::builder()
        .base_dir(base.path())
        .build()
        .unwrap();
    let body: Vec<u8> = (0..100usize << 20).map(|i| (i % 251) as u8).collect();
    let key = c.put(&[b"head", &body, b"tail"]).unwrap();
    let size = 100 * (1 << 20) + 8;
    assert_eq!(
        fs::metadata(c.directory().join(key.to_string()))
            .unwrap()
            .len(),
        size as u64
    );

    let got = c.get(&key).unwrap().unwrap();
    assert_eq!(got.len(), size);
    assert!(got[..4] == *b"head" && got[4..size - 4] == body[..] && got[size - 4..] == *b"tail");
    drop(got);

    let (mut reader, len) = c.open_sized(&key).unwrap().unwrap();
    assert_eq!(len, Some(size as u64));
    let mut head = [0u8; 4];
    reader.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"head");
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(rest[..body.len()] == body[..] && rest[body.len()..] == *b"tail");
    // Evicting unlinks the object; the mapping still reads the whole of it.
    let (mut mapped, _) = c.open_sized(&key).unwrap().unwrap();
    c.evict(&key).unwrap();
    rest.clear();
    mapped.read_to_end(&mut rest).unwrap();
    assert_eq!(rest.len(), size);

    // And through a store, as a value.
    let store = Store::builder(unique("shm-large"), c.clone())
        .build()
        .unwrap();
    let floats: Vec<f64> = (0..(100usize << 20) / 8).map(|i| i as f64).collect();
    let key = store.put(&floats).unwrap();
    let back: Vec<f64> = store.load(&key).unwrap().unwrap();
    assert!(back == floats);
    store.close().unwrap();
    assert!(names(base.path()).is_empty());
}
