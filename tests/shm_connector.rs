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
        assert_eq!(names(&pool_of(dir)).len(), 1, "an evicted segment waits");
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
    // The pools, segment and all, are gone with the stores.
    let left = || {
        let mut left = names(base.path());
        left.retain(|n| *n != planted.file_name().unwrap().to_str().unwrap());
        left
    };
    assert!(
        eventually(Duration::from_secs(5), || left() == ["beside.txt"]),
        "{:?}",
        left()
    );
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
        // A segment: a 64-byte header naming the object, then the object.
        size as u64 + 64
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
    // Evicting moves the object to the pool; a reader opened before still
    // reads the whole of it (no other object took its memory).
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

/// The pool directory beside a store's directory.
fn pool_of(dir: &Path) -> PathBuf {
    let mut pool = dir.as_os_str().to_owned();
    pool.push(".pool");
    PathBuf::from(pool)
}

#[test]
fn an_evicted_large_object_lends_its_memory_to_the_next() {
    let base = base();
    let c = SharedMemoryConnector::builder()
        .base_dir(base.path())
        .build()
        .unwrap();
    let pool = pool_of(c.directory());
    assert!(names(&pool).is_empty());
    let a = c.put(&[&vec![1u8; 3 << 20]]).unwrap();
    c.evict(&a).unwrap();
    assert!(!c.exists(&a).unwrap());
    assert_eq!(c.get(&a).unwrap(), None);
    assert_eq!(names(&pool).len(), 1, "evicted into the pool");
    assert!(c.keys().unwrap().is_empty());

    // A smaller object takes that segment; its bytes are its own.
    let b = c.put(&[b"head", &vec![2u8; 2 << 20]]).unwrap();
    assert!(names(&pool).is_empty(), "{:?}", names(&pool));
    let got = c.get(&b).unwrap().unwrap();
    assert_eq!(got.len(), 4 + (2 << 20));
    assert!(got[..4] == *b"head" && got[4..].iter().all(|&x| x == 2));
    let (mut reader, len) = c.open_sized(&b).unwrap().unwrap();
    assert_eq!(len, Some(4 + (2 << 20)));
    let mut back = Vec::new();
    reader.read_to_end(&mut back).unwrap();
    assert!(back == got);

    // A much smaller or much larger object does not: a fresh file.
    c.evict(&b).unwrap();
    let small = c.put(&[&vec![3u8; 300 << 10]]).unwrap();
    let large = c.put(&[&vec![4u8; 9 << 20]]).unwrap();
    assert_eq!(names(&pool).len(), 1);
    assert_eq!(c.get(&small).unwrap().unwrap(), vec![3u8; 300 << 10]);
    assert_eq!(c.get(&large).unwrap().unwrap(), vec![4u8; 9 << 20]);

    // The pool keeps at most its limit, the rest is unlinked.
    c.evict(&small).unwrap();
    c.evict(&large).unwrap();
    assert_eq!(names(&pool).len(), 3);
    let limited = SharedMemoryConnector::builder()
        .base_dir(base.path())
        .pool_limit(5 << 20)
        .build()
        .unwrap();
    let keys: Vec<_> = (0..3)
        .map(|i| limited.put(&[&vec![i; 2 << 20]]).unwrap())
        .collect();
    for key in &keys {
        limited.evict(key).unwrap();
    }
    let kept = names(&pool_of(limited.directory()));
    assert_eq!(kept.len(), 2, "{kept:?}");
    // Room is made for what is evicted now: the oldest segment went.
    let late = limited.put(&[b"x", &vec![7u8; 4 << 20]]).unwrap();
    limited.evict(&late).unwrap();
    let now = names(&pool_of(limited.directory()));
    assert_eq!(now.len(), 1, "{now:?}");
    assert!(
        now[0].starts_with(&format!("{}.", 64 + 1 + (4 << 20))),
        "{now:?}"
    );
    let none = SharedMemoryConnector::builder()
        .base_dir(base.path())
        .pool_limit(0)
        .build()
        .unwrap();
    let key = none.put(&[&vec![5u8; 2 << 20]]).unwrap();
    none.evict(&key).unwrap();
    assert!(names(&pool_of(none.directory())).is_empty());

    for c in [c, limited, none] {
        c.close().unwrap();
        assert!(!c.directory().exists() && !pool_of(c.directory()).exists());
    }
    assert!(names(base.path()).is_empty(), "{:?}", names(base.path()));
}

#[test]
fn a_reader_of_an_evicted_object_whose_memory_was_reused_fails() {
    let base = base();
    let c = SharedMemoryConnector::builder()
        .base_dir(base.path())
        .build()
        .unwrap();
    let size = 1 << 20;
    let a = c.put(&[&vec![1u8; size]]).unwrap();
    let (mut reader, _) = c.open_sized(&a).unwrap().unwrap();
    let mut head = vec![0u8; 1000];
    reader.read_exact(&mut head).unwrap();
    assert!(head.iter().all(|&x| x == 1));

    // Evicted: until its memory is reused, the reader still reads it.
    c.evict(&a).unwrap();
    reader.read_exact(&mut head).unwrap();
    assert!(head.iter().all(|&x| x == 1));

    // Another object takes the memory: the reader fails, never returning
    // its bytes.
    let b = c.put(&[&vec![2u8; size]]).unwrap();
    let mut rest = Vec::new();
    let err = reader.read_to_end(&mut rest).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    assert!(rest.iter().all(|&x| x == 1), "no byte of the new object");
    assert_eq!(c.get(&a).unwrap(), None);
    assert_eq!(c.get(&b).unwrap().unwrap(), vec![2u8; size]);
    c.close().unwrap();
}

/// A shared-memory connector whose readers, at their first read, evict the
/// object they read and store another (`.1`, a valid encoding of a value
/// of the same type and size), which takes its memory: the race of a
/// reader with an eviction, made certain.
#[derive(Debug, Clone)]
struct EvictsWhileRead(SharedMemoryConnector, std::sync::Arc<Vec<u8>>);

struct Racing {
    inner: proxystore::connectors::ObjectReader,
    connector: SharedMemoryConnector,
    key: proxystore::Key,
    replacement: std::sync::Arc<Vec<u8>>,
    raced: bool,
}

impl Read for Racing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.raced {
            self.raced = true;
            self.connector.evict(&self.key).unwrap();
            self.connector.put(&[&self.replacement]).unwrap();
        }
        self.inner.read(buf)
    }
}

impl Connector for EvictsWhileRead {
    fn config(&self) -> ConnectorConfig {
        self.0.config()
    }
    fn set(&self, key: &proxystore::Key, parts: &[&[u8]]) -> proxystore::Result<()> {
        self.0.set(key, parts)
    }
    fn get(&self, key: &proxystore::Key) -> proxystore::Result<Option<Vec<u8>>> {
        self.0.get(key)
    }
    fn exists(&self, key: &proxystore::Key) -> proxystore::Result<bool> {
        self.0.exists(key)
    }
    fn evict(&self, key: &proxystore::Key) -> proxystore::Result<()> {
        self.0.evict(key)
    }
    fn close(&self) -> proxystore::Result<()> {
        self.0.close()
    }
    fn open_sized(
        &self,
        key: &proxystore::Key,
    ) -> proxystore::Result<Option<(proxystore::connectors::ObjectReader, Option<u64>)>> {
        Ok(self.0.open_sized(key)?.map(|(inner, len)| {
            let reader: proxystore::connectors::ObjectReader = Box::new(Racing {
                inner,
                connector: self.0.clone(),
                key: *key,
                replacement: self.1.clone(),
                raced: false,
            });
            (reader, len)
        }))
    }
}

#[test]
fn a_value_evicted_and_reused_while_it_is_decoded_is_missing_not_another() {
    let base = base();
    let c = SharedMemoryConnector::builder()
        .base_dir(base.path())
        .build()
        .unwrap();
    let value: Vec<u8> = (0..4usize << 20).map(|i| (i % 7) as u8).collect();
    let other = proxystore::codec::encode(&vec![0xeeu8; value.len()])
        .unwrap()
        .to_vec();
    let racing = EvictsWhileRead(c.clone(), std::sync::Arc::new(other));
    let store = Store::builder(unique("shm-race"), racing)
        .cache_size(0)
        .build()
        .unwrap();
    let key = store.put(&value).unwrap();
    assert_eq!(store.load::<Vec<u8>>(&key).unwrap(), None);

    let key = store.put(&value).unwrap();
    let proxy: proxystore::Proxy<Vec<u8>> = store.proxy_from_key(key);
    let err = proxystore::Proxy::resolve(&proxy).unwrap_err();
    assert!(matches!(err, Error::MissingObject { .. }), "{err}");

    // Without the race, the value itself.
    let key = store.put(&value).unwrap();
    assert!(store.connector().exists(&key).unwrap());
    assert_eq!(
        Store::builder(unique("shm-plain"), c.clone())
            .build()
            .unwrap()
            .load::<Vec<u8>>(&key)
            .unwrap()
            .unwrap(),
        value
    );
    store.close().unwrap();
}

#[proxied(types = [Vec<u8>])]
fn plus_one(mut bytes: Vec<u8>) -> Vec<u8> {
    for b in &mut bytes {
        *b = b.wrapping_add(1);
    }
    bytes
}

#[test]
fn pool_workers_reuse_segments_the_client_evicted_and_back() {
    let base = base();
    let c = SharedMemoryConnector::builder()
        .base_dir(base.path())
        .build()
        .unwrap();
    let dir = c.directory().to_path_buf();
    let store = Store::builder(unique("shm-reuse"), c).build().unwrap();
    let pool = ProcessPool::builder(1).test_harness().build().unwrap();
    let executor = StoreExecutor::new(pool, store.clone());
    for round in 0..6u8 {
        let input = vec![round; 2 << 20];
        let result = executor
            .submit(plus_one::task(input))
            .unwrap()
            .result()
            .unwrap();
        assert!(result.is_proxy());
        assert!(result.len() == 2 << 20 && result.iter().all(|&b| b == round + 1));
        drop(result);
        assert!(names(&dir).is_empty(), "{:?}", names(&dir));
        // The argument and the result, each evicted into the pool and
        // taken again by the next round's writers.
        assert!(
            names(&pool_of(&dir)).len() <= 2,
            "{:?}",
            names(&pool_of(&dir))
        );
    }
    drop(executor);
    assert!(!dir.exists() && !pool_of(&dir).exists());
    assert!(names(base.path()).is_empty());
}
