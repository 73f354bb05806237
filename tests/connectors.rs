//! The conformance suite every connector must pass.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::thread;

#[cfg(target_os = "linux")]
use proxystore::connectors::SharedMemoryConnector;
use proxystore::connectors::{
    Connector, ConnectorConfig, FileConnector, LocalConnector, MultiConnector, PeerConnector,
    RedisConnector,
};
use proxystore::{Error, Key};
use support::common::{hex, to_hex, unhex};
use support::redis_server::RedisServer;

/// A connector under test and what it needs to keep running.
struct Made {
    connector: Arc<dyn Connector>,
    /// A temporary directory whose `objects` subdirectory `close` removes.
    dir: Option<tempfile::TempDir>,
    /// A directory that `close` removes.
    removed_on_close: Option<std::path::PathBuf>,
    /// The server the connector talks to, stopped when dropped.
    _server: Option<RedisServer>,
}

impl Made {
    fn new(connector: impl Connector, dir: Option<tempfile::TempDir>) -> Option<Self> {
        Some(Made {
            connector: Arc::new(connector),
            dir,
            removed_on_close: None,
            _server: None,
        })
    }
}

/// How a connector under test is made, and what it promises.
trait Subject {
    /// `None` when the test cannot run here (no `redis-server`): the test
    /// returns at once.
    fn make(test: &str) -> Option<Made>;
    /// Whether another process can use it.
    const SHARED_ACROSS_PROCESSES: bool;
    /// Whether an object outlives the process that wrote it (a peer
    /// connector's objects do not).
    const OUTLIVES_WRITER: bool = true;
}

struct File;
impl Subject for File {
    fn make(_: &str) -> Option<Made> {
        let dir = tempfile::tempdir().unwrap();
        let connector = FileConnector::new(dir.path().join("objects")).unwrap();
        Made::new(connector, Some(dir))
    }
    const SHARED_ACROSS_PROCESSES: bool = true;
}

/// In `/dev/shm` itself, as users get it.
#[cfg(target_os = "linux")]
struct Shm;
#[cfg(target_os = "linux")]
impl Subject for Shm {
    fn make(_: &str) -> Option<Made> {
        let connector = SharedMemoryConnector::new().unwrap();
        let dir = connector.directory().to_path_buf();
        assert!(dir.starts_with("/dev/shm"), "{}", dir.display());
        let mut made = Made::new(connector, None)?;
        made.removed_on_close = Some(dir);
        Some(made)
    }
    const SHARED_ACROSS_PROCESSES: bool = true;
}

struct Local;
impl Subject for Local {
    fn make(_: &str) -> Option<Made> {
        Made::new(LocalConnector::new(), None)
    }
    const SHARED_ACROSS_PROCESSES: bool = false;
}

struct Redis;
impl Subject for Redis {
    fn make(test: &str) -> Option<Made> {
        let server = RedisServer::start(test)?;
        let connector = RedisConnector::new(server.url()).unwrap();
        Some(Made {
            connector: Arc::new(connector),
            dir: None,
            removed_on_close: None,
            _server: Some(server),
        })
    }
    const SHARED_ACROSS_PROCESSES: bool = true;
}

/// Objects up to 1000 bytes in one directory, larger ones in another.
struct Multi;
impl Subject for Multi {
    fn make(_: &str) -> Option<Made> {
        let dir = tempfile::tempdir().unwrap();
        let connector = MultiConnector::builder()
            .route(
                1000,
                FileConnector::new(dir.path().join("objects")).unwrap(),
            )
            .fallback(FileConnector::new(dir.path().join("large")).unwrap())
            .build()
            .unwrap();
        Made::new(connector, Some(dir))
    }
    const SHARED_ACROSS_PROCESSES: bool = true;
}

/// Objects kept by the process that stored them, their locations in Redis.
struct Peer;
impl Subject for Peer {
    fn make(test: &str) -> Option<Made> {
        let server = RedisServer::start(test)?;
        let index = RedisConnector::builder(server.url())
            .namespace("where")
            .build()
            .unwrap();
        let connector = PeerConnector::builder(index).build().unwrap();
        Some(Made {
            connector: Arc::new(connector),
            dir: None,
            removed_on_close: None,
            _server: Some(server),
        })
    }
    const SHARED_ACROSS_PROCESSES: bool = true;
    const OUTLIVES_WRITER: bool = false;
}

/// Objects up to 1000 bytes in Redis, larger ones kept by the process that
/// stored them (their locations in another namespace of the same server).
struct MultiPeer;
impl Subject for MultiPeer {
    fn make(test: &str) -> Option<Made> {
        let server = RedisServer::start(test)?;
        let redis = |namespace: &str| {
            RedisConnector::builder(server.url())
                .namespace(namespace)
                .build()
                .unwrap()
        };
        let connector = MultiConnector::builder()
            .route(1000, redis("objects"))
            .fallback(PeerConnector::builder(redis("where")).build().unwrap())
            .build()
            .unwrap();
        Some(Made {
            connector: Arc::new(connector),
            dir: None,
            removed_on_close: None,
            _server: Some(server),
        })
    }
    const SHARED_ACROSS_PROCESSES: bool = true;
    const OUTLIVES_WRITER: bool = false;
}

/// Two in-memory connectors.
struct MultiLocal;
impl Subject for MultiLocal {
    fn make(_: &str) -> Option<Made> {
        let connector = MultiConnector::builder()
            .route(100, LocalConnector::new())
            .fallback(LocalConnector::new())
            .build()
            .unwrap();
        Made::new(connector, None)
    }
    const SHARED_ACROSS_PROCESSES: bool = false;
}

fn peer(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_proxystore-peer"))
        .args(args)
        .output()
        .expect("peer runs");
    assert!(
        out.status.success(),
        "peer {:?} failed: {}",
        args.first(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn put_get_round_trip<S: Subject>(test: &str) {
    let Some(made) = S::make(test) else {
        return;
    };
    let c = &made.connector;
    let key = c.put(&[b"hello ", b"", b"world"]).unwrap();
    assert_eq!(c.get(&key).unwrap().as_deref(), Some(&b"hello world"[..]));
    let mut read = Vec::new();
    c.open(&key)
        .unwrap()
        .unwrap()
        .read_to_end(&mut read)
        .unwrap();
    assert_eq!(read, b"hello world");
    assert!(c.exists(&key).unwrap());
    // Empty objects are objects.
    let empty = c.put(&[]).unwrap();
    assert_eq!(c.get(&empty).unwrap().as_deref(), Some(&b""[..]));
    // Setting again replaces.
    c.set(&key, &[b"second"]).unwrap();
    assert_eq!(c.get(&key).unwrap().as_deref(), Some(&b"second"[..]));
}

fn missing_keys<S: Subject>(test: &str) {
    let Some(made) = S::make(test) else {
        return;
    };
    let c = &made.connector;
    let key = Key::new();
    assert_eq!(c.get(&key).unwrap(), None);
    assert!(c.open(&key).unwrap().is_none());
    assert!(!c.exists(&key).unwrap());
    c.evict(&key).unwrap();
    let stored = c.put(&[b"x"]).unwrap();
    c.evict(&stored).unwrap();
    assert!(!c.exists(&stored).unwrap());
    assert_eq!(c.get(&stored).unwrap(), None);
    c.evict(&stored).unwrap();
}

fn new_key_then_set<S: Subject>(test: &str) {
    let Some(made) = S::make(test) else {
        return;
    };
    let c = &made.connector;
    let key = c.new_key().unwrap();
    assert!(!c.exists(&key).unwrap());
    assert_eq!(c.get(&key).unwrap(), None);
    c.set(&key, &[b"later"]).unwrap();
    assert_eq!(c.get(&key).unwrap().as_deref(), Some(&b"later"[..]));
}

fn batches<S: Subject>(test: &str) {
    let Some(made) = S::make(test) else {
        return;
    };
    let c = &made.connector;
    let objects: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; i as usize * 3]).collect();
    let parts: Vec<[&[u8]; 1]> = objects.iter().map(|o| [o.as_slice()]).collect();
    let refs: Vec<&[&[u8]]> = parts.iter().map(|p| &p[..]).collect();
    let keys = c.put_batch(&refs).unwrap();
    assert_eq!(keys.len(), 20);
    let mut asked = keys.clone();
    asked.insert(5, Key::new());
    let got = c.get_batch(&asked).unwrap();
    assert_eq!(got[5], None);
    let got: Vec<Vec<u8>> = got
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != 5)
        .map(|(_, o)| o.unwrap())
        .collect();
    assert_eq!(got, objects);
}

fn config_round_trip<S: Subject>(test: &str) {
    let Some(made) = S::make(test) else {
        return;
    };
    let c = &made.connector;
    let key = c.put(&[b"shared"]).unwrap();
    let config = c.config();
    let mut wire = Vec::new();
    ciborium::into_writer(&config, &mut wire).unwrap();
    let back: ConnectorConfig = ciborium::from_reader(&wire[..]).unwrap();
    assert_eq!(back, config);
    let rebuilt = back.build().unwrap();
    assert_eq!(rebuilt.config(), config);
    assert_eq!(rebuilt.get(&key).unwrap().as_deref(), Some(&b"shared"[..]));
    rebuilt.evict(&key).unwrap();
    assert!(!c.exists(&key).unwrap());
}

fn threads<S: Subject>(test: &str) {
    let Some(made) = S::make(test) else {
        return;
    };
    let c = &made.connector;
    thread::scope(|s| {
        for t in 0..8u8 {
            let c = &c;
            s.spawn(move || {
                for i in 0..100u8 {
                    let body = vec![t ^ i; 64 + i as usize];
                    let key = c.put(&[&body]).unwrap();
                    assert_eq!(c.get(&key).unwrap().unwrap(), body);
                    if i % 2 == 0 {
                        c.evict(&key).unwrap();
                        assert!(!c.exists(&key).unwrap());
                    }
                }
            });
        }
    });
    // One object rewritten by several threads: every read is one whole write.
    let key = c.new_key().unwrap();
    c.set(&key, &[&vec![0u8; 1 << 16]]).unwrap();
    thread::scope(|s| {
        for t in 1..4u8 {
            let c = &c;
            s.spawn(move || {
                for _ in 0..50 {
                    c.set(&key, &[&vec![t; 1 << 15], &vec![t; 1 << 15]])
                        .unwrap();
                }
            });
        }
        for _ in 0..200 {
            let bytes = c.get(&key).unwrap().unwrap();
            assert_eq!(bytes.len(), 1 << 16);
            assert!(bytes.iter().all(|b| *b == bytes[0]), "torn read");
        }
    });
}

fn second_process<S: Subject>(test: &str) {
    let Some(made) = S::make(test) else {
        return;
    };
    let c = &made.connector;
    let config = to_hex(&c.config());
    if !S::SHARED_ACROSS_PROCESSES {
        let out = Command::new(env!("CARGO_BIN_EXE_proxystore-peer"))
            .args(["exists", &config, &Key::new().to_string()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("do not exist in this process"), "{stderr}");
        return;
    }
    // The peer reads what we wrote.
    let key = c.put(&[b"from parent"]).unwrap();
    assert_eq!(
        unhex(&peer(&["get", &config, &key.to_string()])),
        b"from parent"
    );
    assert_eq!(peer(&["exists", &config, &key.to_string()]), "true");
    if S::OUTLIVES_WRITER {
        // We read what the peer wrote.
        let theirs: Key = peer(&["put", &config, &hex(b"from peer")]).parse().unwrap();
        assert_eq!(c.get(&theirs).unwrap().as_deref(), Some(&b"from peer"[..]));
        // A key made here, filled in there.
        let later = c.new_key().unwrap();
        assert!(!c.exists(&later).unwrap());
        peer(&["set", &config, &later.to_string(), &hex(b"filled")]);
        assert_eq!(c.get(&later).unwrap().as_deref(), Some(&b"filled"[..]));
    } else {
        // What a process wrote lives while it does.
        let mut holder = Command::new(env!("CARGO_BIN_EXE_proxystore-peer"))
            .args(["peer-hold", &config, "5000", "9"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(holder.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        let theirs: Key = line.trim().parse().unwrap();
        assert_eq!(c.get(&theirs).unwrap(), Some(vec![9u8; 5000]));
        assert!(c.exists(&theirs).unwrap());
        drop(holder.stdin.take());
        holder.wait().unwrap();
        let lost = c.get(&theirs).unwrap_err();
        assert!(matches!(lost, Error::ObjectLost { .. }), "{lost:?}");
        c.evict(&theirs).unwrap();
        assert_eq!(c.get(&theirs).unwrap(), None);
    }
    // Evicted there, gone here.
    peer(&["evict", &config, &key.to_string()]);
    assert!(!c.exists(&key).unwrap());
    assert_eq!(peer(&["get", &config, &key.to_string()]), "missing");

    // Writes are atomic across processes: the peer never sees a torn object
    // while this process rewrites it.
    let key = c.new_key().unwrap();
    c.set(&key, &[&vec![0u8; 1 << 20]]).unwrap();
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_proxystore-peer"))
        .args(["watch", &config, &key.to_string(), "300"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut fill = 1u8;
    // Rewrite until the watcher is done (it reads a bounded number of times).
    while watcher.try_wait().unwrap().is_none() {
        c.set(&key, &[&vec![fill; 1 << 19], &vec![fill; 1 << 19]])
            .unwrap();
        fill = fill.wrapping_add(1);
    }
    let out = watcher.wait_with_output().unwrap();
    assert!(out.status.success(), "the peer saw a torn object");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "whole 300");
}

fn close<S: Subject>(test: &str) {
    let Some(made) = S::make(test) else {
        return;
    };
    let c = &made.connector;
    let dir = &made.dir;
    let key = c.put(&[b"x"]).unwrap();
    if let Some(dir) = &made.removed_on_close {
        assert!(dir.is_dir(), "the store made {}", dir.display());
    }
    c.close().unwrap();
    assert!(!c.exists(&key).unwrap());
    if let Some(dir) = dir {
        assert!(
            !dir.path().join("objects").exists(),
            "close removes the directory"
        );
    }
    if let Some(dir) = &made.removed_on_close {
        assert!(!dir.exists(), "close removes {}", dir.display());
    }
}

/// `keys` sorted, for comparison.
fn sorted(mut keys: Vec<Key>) -> Vec<Key> {
    keys.sort();
    keys
}

fn keys<S: Subject>(test: &str) {
    let Some(made) = S::make(test) else {
        return;
    };
    let c = &made.connector;
    assert_eq!(c.keys().unwrap(), [], "a new connector holds nothing");
    // Sizes from empty to 2400 bytes: both routes of a MultiConnector.
    let mut stored: Vec<Key> = (0..5usize)
        .map(|i| c.put(&[&vec![i as u8; i * 600]]).unwrap())
        .collect();
    let batch: Vec<&[&[u8]]> = vec![&[b"one"], &[b"two"]];
    stored.extend(c.put_batch(&batch).unwrap());
    // A key made for later is no object until it is set.
    let later = c.new_key().unwrap();
    assert_eq!(sorted(c.keys().unwrap()), sorted(stored.clone()));

    c.set(&later, &[b"set now"]).unwrap();
    stored.push(later);
    // Set again with another size: still one key (a MultiConnector moves it).
    c.set(&later, &[&[7u8; 3000]]).unwrap();
    assert_eq!(sorted(c.keys().unwrap()), sorted(stored.clone()));

    for key in stored.drain(..4) {
        c.evict(&key).unwrap();
    }
    assert_eq!(sorted(c.keys().unwrap()), sorted(stored.clone()));
    for key in &stored {
        c.evict(key).unwrap();
    }
    assert_eq!(c.keys().unwrap(), [], "everything evicted");

    c.put(&[b"left at close"]).unwrap();
    c.close().unwrap();
    assert_eq!(c.keys().unwrap(), [], "close removes the objects");
}

macro_rules! conformance {
    ($module:ident, $subject:ty) => {
        mod $module {
            use super::*;
            #[test]
            fn put_get_round_trip() {
                super::put_get_round_trip::<$subject>(concat!(
                    stringify!($module),
                    "::put_get_round_trip"
                ))
            }
            #[test]
            fn missing_keys() {
                super::missing_keys::<$subject>(concat!(stringify!($module), "::missing_keys"))
            }
            #[test]
            fn new_key_then_set() {
                super::new_key_then_set::<$subject>(concat!(
                    stringify!($module),
                    "::new_key_then_set"
                ))
            }
            #[test]
            fn batches() {
                super::batches::<$subject>(concat!(stringify!($module), "::batches"))
            }
            #[test]
            fn config_round_trip() {
                super::config_round_trip::<$subject>(concat!(
                    stringify!($module),
                    "::config_round_trip"
                ))
            }
            #[test]
            fn threads() {
                super::threads::<$subject>(concat!(stringify!($module), "::threads"))
            }
            #[test]
            fn second_process() {
                super::second_process::<$subject>(concat!(stringify!($module), "::second_process"))
            }
            #[test]
            fn keys() {
                super::keys::<$subject>(concat!(stringify!($module), "::keys"))
            }
            #[test]
            fn close() {
                super::close::<$subject>(concat!(stringify!($module), "::close"))
            }
        }
    };
}

conformance!(file, File);
conformance!(local, Local);
#[cfg(target_os = "linux")]
conformance!(shm, Shm);
conformance!(redis, Redis);
conformance!(multi, Multi);
conformance!(multi_local, MultiLocal);
conformance!(peer, Peer);
conformance!(multi_peer, MultiPeer);

use std::io::Read;

#[test]
fn file_connector_keeps_its_directory_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let c = FileConnector::new(dir.path().join("kept"))
        .unwrap()
        .keep_on_close();
    let key = c.put(&[b"x"]).unwrap();
    c.close().unwrap();
    assert!(dir.path().join("kept").join(key.to_string()).exists());
}

#[test]
fn file_connector_config_is_absolute_and_rebuilt_without_creating() {
    let dir = tempfile::tempdir().unwrap();
    let rel = dir.path().join("a").join("..").join("b");
    let c = FileConnector::new(&rel).unwrap();
    assert!(c.directory().is_absolute());
    assert_eq!(c.directory(), dir.path().canonicalize().unwrap().join("b"));
    c.close().unwrap();
    // A worker rebuilding a closed store must not bring the directory back.
    let rebuilt = c.config().build().unwrap();
    assert_eq!(rebuilt.get(&Key::new()).unwrap(), None);
    assert!(!c.directory().exists());
}

#[test]
fn file_connector_leaves_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let c = FileConnector::new(dir.path()).unwrap().keep_on_close();
    let keys: Vec<Key> = (0..10)
        .map(|i| c.put(&[&[i as u8; 100]]).unwrap())
        .collect();
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    // The objects, and the marker that makes the directory a store.
    let mut expected: Vec<String> = keys.iter().map(Key::to_string).collect();
    expected.push(".proxystore".to_string());
    expected.sort();
    assert_eq!(names, expected);
}

#[test]
fn file_connector_reports_io_errors_with_context() {
    let dir = tempfile::tempdir().unwrap();
    let c = FileConnector::new(dir.path().join("gone")).unwrap();
    std::fs::remove_dir_all(dir.path().join("gone")).unwrap();
    let err = c.put(&[b"x"]).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("gone") && text.contains("writing"), "{text}");
}

#[test]
fn unknown_connector_kind_lists_the_registered_ones() {
    let config = ConnectorConfig::new("no-such-kind", &()).unwrap();
    let err = config.build().unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::UnknownConnector { .. }));
    assert!(
        text.contains("no-such-kind") && text.contains("file") && text.contains("local"),
        "{text}"
    );
}

#[test]
fn a_key_from_outside_cannot_leave_the_directory() {
    // A proxy whose key was tampered with does not decode at all.
    let dir = tempfile::tempdir().unwrap();
    let store = proxystore::Store::builder("tamper", FileConnector::new(dir.path()).unwrap())
        .register(false)
        .build()
        .unwrap();
    let proxy = store.proxy("x".to_string()).unwrap();
    let mut wire = Vec::new();
    ciborium::into_writer(&proxy, &mut wire).unwrap();
    let key = proxystore::Proxy::key(&proxy).to_string();
    let evil = "../../../../../../etc/hostname".to_string();
    let evil = format!("{evil:.>36}");
    let mut tampered = wire.clone();
    let at = tampered
        .windows(36)
        .position(|w| w == key.as_bytes())
        .unwrap();
    tampered[at..at + 36].copy_from_slice(evil.as_bytes());
    let decoded: Result<proxystore::Proxy<String>, _> = ciborium::from_reader(&tampered[..]);
    let err = decoded.unwrap_err().to_string();
    assert!(err.contains("not a valid object key"), "{err}");
}

#[test]
fn multi_connector_routes_by_size() {
    let small = LocalConnector::new();
    let middle = LocalConnector::new();
    let dir = tempfile::tempdir().unwrap();
    let large = FileConnector::new(dir.path().join("large")).unwrap();
    let c = MultiConnector::builder()
        .route(1000, middle.clone())
        .route(10, small.clone())
        .fallback(large.clone())
        .build()
        .unwrap();
    assert_eq!(c.reach(), proxystore::connectors::Reach::Process);
    let k10 = c.put(&[&[1u8; 6], &[1u8; 4]]).unwrap();
    let k11 = c.put(&[&[2u8; 11]]).unwrap();
    let k1000 = c.put(&[&[3u8; 1000]]).unwrap();
    let k1001 = c.put(&[&[4u8; 1001]]).unwrap();
    let holds = |c: &dyn Connector, k: &Key| c.exists(k).unwrap();
    assert!(holds(&small, &k10) && !holds(&middle, &k10) && !holds(&large, &k10));
    assert!(!holds(&small, &k11) && holds(&middle, &k11) && !holds(&large, &k11));
    assert!(holds(&middle, &k1000) && !holds(&large, &k1000));
    assert!(holds(&large, &k1001) && !holds(&middle, &k1001));
    // Batches route each object.
    let keys = c
        .put_batch(&[&[&[5u8; 3]], &[&[6u8; 2000]], &[&[7u8; 500]]])
        .unwrap();
    assert!(holds(&small, &keys[0]) && holds(&large, &keys[1]) && holds(&middle, &keys[2]));
    let got = c
        .get_batch(&[keys[1], Key::new(), keys[0], keys[2]])
        .unwrap();
    assert_eq!(got[0].as_ref().unwrap().len(), 2000);
    assert_eq!(got[1], None);
    assert_eq!(got[2].as_deref(), Some(&[5u8; 3][..]));
    assert_eq!(got[3].as_ref().unwrap().len(), 500);
    // Setting a key again with another size moves it.
    c.set(&k10, &[&[8u8; 5000]]).unwrap();
    assert!(!holds(&small, &k10) && holds(&large, &k10));
    assert_eq!(c.get(&k10).unwrap().unwrap().len(), 5000);
    let (reader, len) = c.open_sized(&k10).unwrap().unwrap();
    drop(reader);
    assert_eq!(len, Some(5000));
    // Evict removes it everywhere; close closes every route.
    c.evict(&k11).unwrap();
    assert!(!c.exists(&k11).unwrap());
    c.close().unwrap();
    assert!(small.is_empty() && middle.is_empty());
    assert!(!dir.path().join("large").exists());
}

#[test]
fn multi_connector_without_fallback_refuses_large_objects() {
    let c = MultiConnector::builder()
        .route(10, LocalConnector::new())
        .build()
        .unwrap();
    let err = c.put(&[&[0u8; 11]]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLarge {
                size: 11,
                limit: 10,
                ..
            }
        ),
        "{err:?}"
    );
    let err = MultiConnector::builder().build().unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
    let err = MultiConnector::builder()
        .route(10, LocalConnector::new())
        .route(10, LocalConnector::new())
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
}
