//! What the file store promises beyond the conformance suite: it removes
//! only what it created, never follows a link out of its directory, can be
//! closed again after a failed close, cleans up after killed writers,
//! refuses configurations that point at directories that are not stores,
//! and never blocks on a file it did not write.

mod support;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use proxystore::connectors::{Connector, FileConnector};
use proxystore::{Error, Key, OwnedProxy, Proxy, Store};
use support::common::{to_hex, unique};

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// A peer process that is killed when the test ends, even if it fails.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a peer process with `args`, waits until it says it is writing.
fn writer(args: &[&str]) -> Peer {
    let mut child = Command::new(env!("CARGO_BIN_EXE_proxystore-peer"))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("peer runs");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let peer = Peer(child);
    assert_eq!(line.trim(), "writing", "the peer did not start writing");
    peer
}

// 1. Only what it created.

#[test]
fn close_keeps_a_directory_it_did_not_create_and_the_users_files() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    fs::create_dir(dir.path().join("sub")).unwrap();
    fs::write(dir.path().join("sub").join("inner"), b"mine too").unwrap();

    let c = FileConnector::new(dir.path()).unwrap();
    let a = c.put(&[b"a"]).unwrap();
    c.put(&[b"b"]).unwrap();
    c.close().unwrap();

    assert!(
        dir.path().is_dir(),
        "the directory was there before the store"
    );
    assert_eq!(names(dir.path()), ["notes.txt", "sub"]);
    assert_eq!(fs::read(dir.path().join("notes.txt")).unwrap(), b"mine");
    assert_eq!(
        fs::read(dir.path().join("sub").join("inner")).unwrap(),
        b"mine too"
    );
    assert!(!c.exists(&a).unwrap());
}

#[test]
fn close_keeps_foreign_files_in_a_directory_it_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("objects");
    let c = FileConnector::new(&path).unwrap();
    c.put(&[b"a"]).unwrap();
    // Someone else's file, and a subdirectory that happens to be named
    // like a key: neither is the store's.
    fs::write(path.join("notes.txt"), b"mine").unwrap();
    let named_like_a_key = path.join(Key::new().to_string());
    fs::create_dir(&named_like_a_key).unwrap();
    fs::write(named_like_a_key.join("inner"), b"mine too").unwrap();

    c.close().unwrap();

    assert_eq!(fs::read(path.join("notes.txt")).unwrap(), b"mine");
    assert_eq!(
        fs::read(named_like_a_key.join("inner")).unwrap(),
        b"mine too"
    );
    assert_eq!(names(&path).len(), 2, "{:?}", names(&path));
}

#[test]
fn close_through_a_symlinked_directory_keeps_the_targets_files() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("notes.txt"), b"mine").unwrap();
    let link = dir.path().join("link");
    symlink(&target, &link).unwrap();

    let c = FileConnector::new(&link).unwrap();
    let key = c.put(&[b"object"]).unwrap();
    assert!(target.join(key.to_string()).is_file());
    c.close().unwrap();

    assert!(link.is_dir(), "the link and its target stay");
    assert_eq!(names(&target), ["notes.txt"]);
    assert_eq!(fs::read(target.join("notes.txt")).unwrap(), b"mine");
}

#[test]
fn a_rebuilt_connector_closes_like_the_original() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    let theirs = FileConnector::new(dir.path()).unwrap();
    let made = FileConnector::new(dir.path().join("made")).unwrap();
    for c in [&theirs, &made] {
        c.put(&[b"x"]).unwrap();
        c.config().build().unwrap().close().unwrap();
    }
    assert!(!dir.path().join("made").exists(), "new() made it: it goes");
    assert_eq!(names(dir.path()), ["notes.txt"], "new() found it: it stays");
}

#[test]
fn a_planted_key_named_symlink_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("secret.txt");
    fs::write(&outside, b"secret").unwrap();
    let path = dir.path().join("objects");
    let c = FileConnector::new(&path).unwrap();
    let key = Key::new();
    symlink(&outside, path.join(key.to_string())).unwrap();

    // Not read through...
    let err = c.get(&key).unwrap_err();
    assert!(matches!(err, Error::NotAnObject { .. }), "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(c.open(&key).is_err());
    assert!(!c.exists(&key).unwrap());
    // ...and unlinked, not followed, on close.
    c.close().unwrap();
    assert_eq!(fs::read(&outside).unwrap(), b"secret");
    assert!(!path.exists());
}

#[test]
fn keys_lists_only_object_files_never_the_marker_temporaries_links_or_foreign_entries() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("secret.txt");
    fs::write(&outside, b"secret").unwrap();
    let path = dir.path().join("objects");
    let c = FileConnector::new(&path).unwrap();
    let object = c.put(&[b"mine"]).unwrap();

    // Everything else a store directory can hold, named to look like keys
    // where it can be.
    let planted = |name: String| path.join(name);
    fs::write(planted(format!(".{object}.{}.tmp", Key::new())), b"half").unwrap();
    fs::write(planted("notes.txt".into()), b"user's").unwrap();
    fs::write(
        planted(Key::new().to_string().to_uppercase()),
        b"not canonical",
    )
    .unwrap();
    symlink(&outside, planted(Key::new().to_string())).unwrap();
    symlink(dir.path(), planted(Key::new().to_string())).unwrap();
    fs::create_dir(planted(Key::new().to_string())).unwrap();
    let made = Command::new("mkfifo")
        .arg(planted(Key::new().to_string()))
        .status()
        .unwrap();
    assert!(made.success());
    assert!(names(&path).contains(&".proxystore".to_string()));
    assert_eq!(names(&path).len(), 9, "{:?}", names(&path));

    assert_eq!(c.keys().unwrap(), [object]);
    let store = Store::builder(unique("file-keys"), c.clone())
        .register(false)
        .build()
        .unwrap();
    assert_eq!(store.len().unwrap(), 1);
    store.evict(&object).unwrap();
    assert!(store.is_empty().unwrap(), "{:?}", store.keys().unwrap());
    assert_eq!(fs::read(&outside).unwrap(), b"secret", "no link followed");
    // A connector rebuilt elsewhere lists the same objects.
    let again = c.put(&[b"again"]).unwrap();
    assert_eq!(c.config().build().unwrap().keys().unwrap(), [again]);
    store.close().unwrap();
    assert!(matches!(store.keys(), Err(Error::StoreClosed { .. })));
    assert_eq!(
        c.keys().unwrap(),
        [],
        "the directory kept its foreign entries"
    );
}

// 2. A failed close can be retried.

/// Closes a store while four other processes keep writing into it; returns
/// how many closes failed before one succeeded.
fn close_under_writers() -> usize {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("objects");
    let store = Store::builder(unique("close-race"), FileConnector::new(&path).unwrap())
        .register(false)
        .build()
        .unwrap();
    let config = to_hex(&store.config().connector);
    let peers: Vec<Peer> = (0..4)
        // Bounded, so that a close that cannot keep up fails the test
        // instead of filling the disk.
        .map(|_| writer(&["put-loop", &config, "1", "5"]))
        .collect();
    thread::sleep(Duration::from_millis(20));

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut failures = 0;
    loop {
        match store.close() {
            Ok(()) => break,
            Err(e) => {
                assert!(matches!(e, Error::CloseIncomplete { .. }), "{e}");
                assert!(!store.is_closed(), "a failed close leaves the store open");
                failures += 1;
            }
        }
        assert!(Instant::now() < deadline, "close never succeeded");
    }
    assert!(store.is_closed());
    assert!(!path.exists(), "the directory is gone once close succeeds");
    // The writers cannot bring it back.
    thread::sleep(Duration::from_millis(20));
    drop(peers);
    assert!(!path.exists());
    assert_eq!(names(dir.path()), Vec::<String>::new());
    failures
}

#[test]
fn close_while_other_processes_write_can_be_retried_until_the_directory_is_gone() {
    // A close races the writers' file creations; over several rounds some
    // closes find files that appeared after they listed the directory.
    let failures: usize = (0..16).map(|_| close_under_writers()).sum();
    eprintln!("{failures} closes failed and were retried");
}

/// A connector whose first close fails, as a file store's does while
/// other processes keep writing.
#[derive(Debug, Default)]
struct FailsToCloseOnce {
    inner: proxystore::connectors::LocalConnector,
    closes: AtomicUsize,
}

impl Connector for FailsToCloseOnce {
    fn config(&self) -> proxystore::connectors::ConnectorConfig {
        self.inner.config()
    }
    fn set(&self, key: &Key, parts: &[&[u8]]) -> proxystore::Result<()> {
        self.inner.set(key, parts)
    }
    fn get(&self, key: &Key) -> proxystore::Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn exists(&self, key: &Key) -> proxystore::Result<bool> {
        self.inner.exists(key)
    }
    fn evict(&self, key: &Key) -> proxystore::Result<()> {
        self.inner.evict(key)
    }
    fn close(&self) -> proxystore::Result<()> {
        if self.closes.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(Error::CloseIncomplete {
                connector: "test".into(),
                reason: "first try".into(),
            });
        }
        self.inner.close()
    }
}

#[test]
fn a_failed_store_close_leaves_the_store_open_and_can_be_retried() {
    let name = unique("close-retry");
    let store = Store::new(&name, FailsToCloseOnce::default()).unwrap();
    let key = store.put(&1u32).unwrap();

    let err = store.close().unwrap_err();
    assert!(matches!(err, Error::CloseIncomplete { .. }), "{err}");
    assert!(!store.is_closed());
    assert!(
        proxystore::store::get_store(&name).is_some(),
        "still registered"
    );
    assert_eq!(*store.get::<u32>(&key).unwrap().unwrap(), 1);

    store.close().unwrap();
    assert!(store.is_closed());
    assert!(proxystore::store::get_store(&name).is_none());
    store.close().unwrap();
    let connector = format!("{:?}", store);
    assert!(
        connector.contains("closes: 2"),
        "closed twice, then no more: {connector}"
    );
}

// 3. A killed writer leaves nothing that survives close.

/// Starts a peer writing one large object into `c`'s directory and kills
/// it while the temporary file is there.
fn kill_mid_put(c: &FileConnector) {
    let config = to_hex(&c.config());
    for _ in 0..5 {
        let mut peer = writer(&["put-large", &config, "256"]);
        let deadline = Instant::now() + Duration::from_secs(20);
        let killed = loop {
            if names(c.directory()).iter().any(|n| is_temporary(n)) {
                peer.0.kill().unwrap();
                break true;
            }
            if peer.0.try_wait().unwrap().is_some() || Instant::now() > deadline {
                break false;
            }
            thread::sleep(Duration::from_millis(1));
        };
        drop(peer);
        if killed && names(c.directory()).iter().any(|n| is_temporary(n)) {
            return;
        }
    }
    panic!("could not kill the peer in the middle of a put");
}

#[test]
fn a_writer_killed_mid_put_leaves_nothing_after_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("objects");
    let c = FileConnector::new(&path).unwrap();
    kill_mid_put(&c);
    c.close().unwrap();
    assert!(!path.exists());
}

#[test]
fn a_writer_killed_mid_put_leaves_nothing_in_a_users_directory() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    let c = FileConnector::new(dir.path()).unwrap();
    kill_mid_put(&c);
    c.close().unwrap();
    assert_eq!(names(dir.path()), ["notes.txt"]);
}

#[test]
fn a_writer_killed_mid_put_leaves_no_temporary_file_in_a_kept_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("objects");
    let c = FileConnector::new(&path).unwrap().keep_on_close();
    let kept = c.put(&[b"kept"]).unwrap();
    kill_mid_put(&c);
    // The killed writer's file is never taken for an object...
    let before = names(&path);
    let temporary = before
        .iter()
        .find(|n| is_temporary(n))
        .expect("a temporary file");
    let writing: Key = temporary[1..37].parse().unwrap();
    assert!(!c.exists(&writing).unwrap());
    assert_eq!(c.get(&writing).unwrap(), None);
    c.close().unwrap();
    // ...and close removes it, while the objects stay.
    let after = names(&path);
    assert!(!after.iter().any(|n| is_temporary(n)), "{after:?}");
    assert_eq!(c.get(&kept).unwrap().as_deref(), Some(&b"kept"[..]));
}

// 4. A received configuration acts only on a store's directory.

/// Replaces every text `from` in a CBOR value by `to`.
fn replace_text(value: &mut ciborium::Value, from: &str, to: &str) {
    use ciborium::Value;
    match value {
        Value::Text(t) if t == from => *t = to.to_string(),
        Value::Array(items) => items.iter_mut().for_each(|v| replace_text(v, from, to)),
        Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            replace_text(k, from, to);
            replace_text(v, from, to);
        }),
        Value::Tag(_, inner) => replace_text(inner, from, to),
        _ => {}
    }
}

/// `wire` with the directory and key of a proxy swapped for others.
fn forge(wire: &[u8], (dir, key): (&Path, Key), (to_dir, to_key): (&Path, Key)) -> Vec<u8> {
    let mut value: ciborium::Value = ciborium::from_reader(wire).unwrap();
    replace_text(&mut value, dir.to_str().unwrap(), to_dir.to_str().unwrap());
    replace_text(&mut value, &key.to_string(), &to_key.to_string());
    let mut forged = Vec::new();
    ciborium::into_writer(&value, &mut forged).unwrap();
    assert_ne!(forged, wire, "nothing was replaced");
    forged
}

#[test]
fn a_forged_proxy_cannot_evict_a_users_file() {
    let dir = tempfile::tempdir().unwrap();
    let c = FileConnector::new(dir.path().join("objects")).unwrap();
    let store_dir = c.directory().to_path_buf();
    let store = Store::builder(unique("forged"), c)
        .register(false)
        .build()
        .unwrap();
    // A user's directory holding a file named like a key.
    let home = dir.path().canonicalize().unwrap().join("home");
    fs::create_dir(&home).unwrap();
    let victim = Key::new();
    fs::write(home.join(victim.to_string()), b"user data").unwrap();

    let owned = store.owned_proxy("payload".to_string()).unwrap();
    let key = OwnedProxy::key(&owned);
    let mut wire = Vec::new();
    ciborium::into_writer(&OwnedProxy::into_transfer(owned), &mut wire).unwrap();
    let forged = forge(&wire, (&store_dir, key), (&home, victim));

    let received: OwnedProxy<String> = ciborium::from_reader(&forged[..]).unwrap();
    let err = OwnedProxy::resolve(&received).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    assert!(
        err.to_string().contains("not a proxystore file store"),
        "{err}"
    );
    drop(received);
    assert_eq!(
        fs::read(home.join(victim.to_string())).unwrap(),
        b"user data"
    );

    // A plain proxy is refused the same way.
    let proxy = store.proxy("other".to_string()).unwrap();
    let mut wire = Vec::new();
    ciborium::into_writer(&proxy, &mut wire).unwrap();
    let forged = forge(&wire, (&store_dir, Proxy::key(&proxy)), (&home, victim));
    let received: Proxy<String> = ciborium::from_reader(&forged[..]).unwrap();
    let err = Proxy::resolve(&received).unwrap_err();
    assert!(
        err.to_string().contains("not a proxystore file store"),
        "{err}"
    );
    assert_eq!(
        fs::read(home.join(victim.to_string())).unwrap(),
        b"user data"
    );
    store.close().unwrap();
}

#[test]
fn a_config_naming_another_stores_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = FileConnector::new(dir.path().join("a")).unwrap();
    let b = FileConnector::new(dir.path().join("b")).unwrap();
    let key = b.put(&[b"b's object"]).unwrap();
    let mut wire = Vec::new();
    ciborium::into_writer(&a.config(), &mut wire).unwrap();
    let forged = forge(&wire, (a.directory(), key), (b.directory(), key));
    let config: proxystore::connectors::ConnectorConfig =
        ciborium::from_reader(&forged[..]).unwrap();
    let err = config.build().unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    assert!(b.exists(&key).unwrap());
    // The genuine configurations still work.
    assert!(b.config().build().unwrap().exists(&key).unwrap());
}

#[test]
fn a_directory_whose_marker_is_not_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(".proxystore"), b"my own dotfile").unwrap();
    let err = FileConnector::new(dir.path()).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    assert!(err.to_string().contains("remove it"), "{err}");
    assert_eq!(
        fs::read(dir.path().join(".proxystore")).unwrap(),
        b"my own dotfile"
    );
    // A marker that is a link is not followed either.
    let linked = dir.path().join("linked");
    fs::create_dir(&linked).unwrap();
    symlink(dir.path().join(".proxystore"), linked.join(".proxystore")).unwrap();
    let err = FileConnector::new(&linked).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
}

// 5. Nothing hangs.

#[test]
fn a_fifo_at_a_keys_path_is_refused_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let c = FileConnector::new(dir.path().join("objects")).unwrap();
    let key = Key::new();
    let fifo: PathBuf = c.directory().join(key.to_string());
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());

    let (tx, rx) = mpsc::channel();
    let reader = c.clone();
    thread::spawn(move || {
        let got = reader.get(&key).map(|_| ());
        let opened = reader.open(&key).map(|r| {
            r.map(|mut r| {
                let mut sink = Vec::new();
                let _ = r.read_to_end(&mut sink);
            })
        });
        let exists = reader.exists(&key);
        let _ = tx.send((got, opened.map(|_| ()), exists));
    });
    let Ok((got, opened, exists)) = rx.recv_timeout(Duration::from_secs(5)) else {
        // Unblock the reader before failing.
        drop(fs::OpenOptions::new().write(true).open(&fifo));
        panic!("reading a key whose path is a fifo blocked");
    };
    let err = got.unwrap_err();
    assert!(matches!(err, Error::NotAnObject { .. }), "{err}");
    assert!(err.to_string().contains("fifo"), "{err}");
    assert!(opened.is_err());
    assert!(!exists.unwrap(), "a fifo is not an object");
    c.close().unwrap();
    assert!(!c.directory().exists());
}
