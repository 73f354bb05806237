//! Proxies and ownership: laziness, resolution errors, borrows, transfers.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use proxystore::connectors::{FileConnector, LocalConnector};
use proxystore::store::Operation;
use proxystore::{Error, Key, OwnedProxy, Proxy, Store};
use serde::{Deserialize, Serialize};
use support::common::{from_hex, to_hex, unique};

fn file_store(prefix: &str) -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::builder(
        unique(prefix),
        FileConnector::new(dir.path().join("o")).unwrap(),
    )
    .metrics(true)
    .build()
    .unwrap();
    (store, dir)
}

fn wire<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut buf = Vec::new();
    ciborium::into_writer(value, &mut buf).unwrap();
    buf
}

#[test]
fn a_proxy_is_lazy_resolves_once_and_travels_as_a_reference() {
    let (store, _dir) = file_store("lazy");
    let key = store.put(&vec![2.0f64; 1 << 16]).unwrap();
    let proxy: Proxy<Vec<f64>> = store.proxy_from_key(key);
    assert!(!Proxy::is_resolved(&proxy));
    assert!(Proxy::get(&proxy).is_none());
    assert_eq!(
        store.metrics().unwrap().get(Operation::Get).count,
        0,
        "nothing read yet"
    );
    assert_eq!(proxy.len(), 1 << 16);
    assert!(Proxy::is_resolved(&proxy));
    let clone = proxy.clone();
    assert_eq!(clone.iter().sum::<f64>(), 131072.0);
    assert_eq!(
        store.metrics().unwrap().get(Operation::Get).count,
        1,
        "resolved once"
    );
    assert_eq!(Proxy::key(&proxy), key);

    let bytes = wire(&proxy);
    assert!(
        bytes.len() < 400,
        "only the factory travels: {} bytes",
        bytes.len()
    );
    assert_eq!(bytes, wire(Proxy::factory(&proxy)), "exactly the factory");
    let json = serde_json::to_string(&proxy).unwrap();
    assert_eq!(json, serde_json::to_string(Proxy::factory(&proxy)).unwrap());
    let from_json: Proxy<Vec<f64>> = serde_json::from_str(&json).unwrap();
    assert_eq!(Proxy::key(&from_json), key);
    let arrived: Proxy<Vec<f64>> = ciborium::from_reader(&bytes[..]).unwrap();
    assert!(!Proxy::is_resolved(&arrived));
    assert_eq!(arrived[5], 2.0);
    assert_eq!(Proxy::store_config(&arrived), store.config());
    store.close().unwrap();
}

#[test]
fn proxies_made_from_values_are_resolved_and_batches_keep_order() {
    let (store, _dir) = file_store("made");
    let proxy = store.proxy("abc".to_string()).unwrap();
    assert!(Proxy::is_resolved(&proxy));
    assert_eq!(proxy.to_uppercase(), "ABC");
    let batch = store.proxy_batch(vec![1u32, 2, 3]).unwrap();
    let values: Vec<u32> = batch.iter().map(|p| **p).collect();
    assert_eq!(values, [1, 2, 3]);
    let lazy: Vec<Proxy<u32>> = batch
        .iter()
        .map(|p| store.proxy_from_key(Proxy::key(p)))
        .collect();
    assert_eq!(lazy.iter().map(|p| **p).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(Proxy::extract(proxy).unwrap(), "abc");
    store.close().unwrap();
}

#[test]
fn resolving_in_the_background_then_dereferencing() {
    let (store, _dir) = file_store("async");
    let key = store.put(&vec![1u8; 1 << 20]).unwrap();
    let proxy: Proxy<Vec<u8>> = store.proxy_from_key(key);
    Proxy::resolve_async(&proxy).unwrap();
    Proxy::resolve_async(&proxy).unwrap();
    assert_eq!(proxy.len(), 1 << 20);
    assert_eq!(store.metrics().unwrap().get(Operation::Get).count, 1);
    store.close().unwrap();
}

/// A value whose decoding waits until [`GATE`] opens, so that background
/// resolutions stay in flight.
struct Gated(u64);

static GATE: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

/// Opens the gate when dropped, also when an assertion fails.
struct OpenGateOnDrop;

impl Drop for OpenGateOnDrop {
    fn drop(&mut self) {
        *GATE.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
        GATE.1.notify_all();
    }
}

impl Serialize for Gated {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Gated {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let open = GATE.0.lock().unwrap_or_else(|e| e.into_inner());
        drop(GATE.1.wait_while(open, |open| !*open));
        u64::deserialize(d).map(Gated)
    }
}

fn threads_of_this_process() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn background_resolution_uses_a_few_threads_however_many_proxies() {
    let store = Store::new(unique("background"), LocalConnector::new()).unwrap();
    let proxies: Vec<Proxy<Gated>> = (0..10_000)
        .map(|i| store.proxy_from_key(store.put(&Gated(i)).unwrap()))
        .collect();
    let before = threads_of_this_process();
    // The background pool has at most 8 threads; other tests of this
    // binary may start a few threads meanwhile.
    let most = before + 8 + 16;
    let gate = OpenGateOnDrop;
    for (i, proxy) in proxies.iter().enumerate() {
        Proxy::resolve_async(proxy).unwrap();
        if i % 100 == 99 {
            let now = threads_of_this_process();
            assert!(
                now <= most,
                "{now} threads after {} background resolutions (from {before})",
                i + 1
            );
        }
    }
    drop(gate);
    // They resolve in the background, without a dereference.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !proxies.iter().all(Proxy::is_resolved) {
        assert!(Instant::now() < deadline, "background resolution stalled");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(proxies.iter().enumerate().all(|(i, p)| p.0 == i as u64));
    assert!(threads_of_this_process() <= most);
    store.close().unwrap();
}

/// Regression: a background read of a future's proxy slept on a thread of
/// the resolver pool until the future was set, so a few futures that were
/// never set stopped every other background read of the process.
#[test]
fn futures_never_set_do_not_hold_up_other_background_reads() {
    let store = Store::new(unique("never-set"), LocalConnector::new()).unwrap();
    let futures: Vec<_> = (0..32).map(|_| store.future::<u64>().unwrap()).collect();
    let waiting: Vec<Proxy<u64>> = futures.iter().map(|f| f.proxy()).collect();
    for proxy in &waiting {
        Proxy::resolve_async(proxy).unwrap();
    }
    // Time for them to take the pool's threads, had they held them.
    std::thread::sleep(Duration::from_millis(100));
    let plain = store.proxy_from_key(store.put(&7u64).unwrap());
    Proxy::resolve_async(&plain).unwrap();
    let resolved = |proxy: &Proxy<u64>| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !Proxy::is_resolved(proxy) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    };
    assert!(resolved(&plain), "an ordinary background read never ran");
    // A future set later still resolves in the background, alone.
    futures[3].set_result(&3).unwrap();
    assert!(resolved(&waiting[3]), "a future set later was not read");
    assert_eq!(*waiting[3], 3);
    assert_eq!(waiting.iter().filter(|p| Proxy::is_resolved(p)).count(), 1);
    store.close().unwrap();
}

/// Regression: the background poll of a future's proxy held the proxy, so
/// a future nobody held any more was looked for every 100 ms for the life
/// of the process. It stops once every proxy of it is dropped.
#[test]
fn background_polls_of_a_future_stop_when_its_proxies_are_dropped() {
    let store = Store::builder(unique("poll-stops"), LocalConnector::new())
        .metrics(true)
        .build()
        .unwrap();
    let future = store.future::<u64>().unwrap();
    let proxy = future.proxy();
    Proxy::resolve_async(&proxy).unwrap();
    // Every read, found or not, looks in the cache first.
    let gets = || {
        let m = store.metrics().unwrap();
        m.cache_hits + m.cache_misses
    };
    // Polling: reads keep coming.
    let deadline = Instant::now() + Duration::from_secs(30);
    while gets() < 3 {
        assert!(Instant::now() < deadline, "the poll never read the store");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop((proxy, future));
    // At most the look under way then (or scheduled: it finds no proxy).
    std::thread::sleep(Duration::from_millis(300));
    let after_drop = gets();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(gets(), after_drop, "a future nobody holds is still polled");
    store.close().unwrap();
}

#[test]
fn proxies_resolve_from_many_threads_at_once() {
    let (store, _dir) = file_store("threads");
    let key = store.put(&vec![3u64; 1 << 16]).unwrap();
    let proxy: Proxy<Vec<u64>> = store.proxy_from_key(key);
    std::thread::scope(|s| {
        for _ in 0..4 {
            let proxy = proxy.clone();
            s.spawn(move || assert_eq!(proxy.iter().sum::<u64>(), 3 << 16));
        }
    });
    assert_eq!(store.metrics().unwrap().get(Operation::Get).count, 1);
    store.close().unwrap();
}

#[test]
fn resolution_errors_name_the_key_and_the_store_and_say_why() {
    let (store, _dir) = file_store("errors");
    // Evicted.
    let key = store.put(&1u32).unwrap();
    store.evict(&key).unwrap();
    let proxy: Proxy<u32> = store.proxy_from_key(key);
    let err = Proxy::resolve(&proxy).unwrap_err();
    assert!(matches!(err, Error::MissingObject { .. }));
    let text = err.to_string();
    assert!(
        text.contains(&key.to_string()) && text.contains(store.name()),
        "{text}"
    );
    assert!(text.contains("evicted"), "{text}");
    // Wrong type.
    let key = store.put(&"s".to_string()).unwrap();
    let wrong: Proxy<Vec<i64>> = store.proxy_from_key(key);
    assert!(matches!(Proxy::resolve(&wrong), Err(Error::Decode { .. })));
    // Corrupt bytes.
    let key = store.connector().put(&[b"\x00\x01garbage"]).unwrap();
    let corrupt: Proxy<String> = store.proxy_from_key(key);
    let err = Proxy::resolve(&corrupt).unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
    // Store closed in this process: said so, and not built again.
    let key = store.put(&5u8).unwrap();
    let orphan: Proxy<u8> = store.proxy_from_key(key);
    store.close().unwrap();
    let err = Proxy::resolve(&orphan).unwrap_err();
    assert!(matches!(err, Error::StoreClosed { .. }), "{err}");
    assert!(err.to_string().contains(store.name()), "{err}");
    // Deref panics with the same message.
    let panic = std::panic::catch_unwind(|| *orphan).unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert_eq!(*message, err.to_string());
    // Elsewhere (no such store here) the object is just missing.
    let elsewhere = Store::from_config(store.config().clone()).unwrap();
    assert!(matches!(elsewhere.load::<u8>(&key), Ok(None)));
}

#[test]
fn a_proxy_from_another_process_resolves_there() {
    let (store, _dir) = file_store("peer");
    let proxy = store.proxy("hello from the parent".to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_proxystore-peer"))
        .args(["proxy", &to_hex(&proxy)])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello from the parent"
    );
    store.evict(&Proxy::key(&proxy)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_proxystore-peer"))
        .args(["proxy", &to_hex(&proxy)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("error: ") && text.contains("evicted"),
        "{text}"
    );
    store.close().unwrap();
}

#[test]
fn an_owned_proxy_evicts_when_dropped_and_borrows_see_its_value() {
    let (store, _dir) = file_store("owned");
    let mut owner = store.owned_proxy(vec![1, 2, 3]).unwrap();
    let key = OwnedProxy::key(&owner);
    {
        let a = OwnedProxy::borrow(&owner);
        let b = a;
        assert_eq!(a.len() + b.len(), 6);
        // A borrow travels like a proxy, for tasks elsewhere.
        let seen: Proxy<Vec<i32>> = ciborium::from_reader(&wire(&a)[..]).unwrap();
        assert_eq!(*seen, [1, 2, 3]);
    }
    {
        let mut m = OwnedProxy::borrow_mut(&mut owner);
        m.push(4);
        proxystore::RefMutProxy::write_back(&m).unwrap();
    }
    assert_eq!(*store.get::<Vec<i32>>(&key).unwrap().unwrap(), [1, 2, 3, 4]);
    owner.push(5); // DerefMut on the owner itself
    assert_eq!(*owner, [1, 2, 3, 4, 5]);
    assert_eq!(
        *store.get::<Vec<i32>>(&key).unwrap().unwrap(),
        [1, 2, 3, 4],
        "not written back"
    );

    let copy = OwnedProxy::clone_stored(&owner).unwrap();
    assert_ne!(OwnedProxy::key(&copy), key);
    assert!(!OwnedProxy::is_resolved(&copy));
    assert_eq!(*copy, [1, 2, 3, 4, 5]);
    drop(owner);
    assert!(!store.exists(&key).unwrap());
    let copy_key = OwnedProxy::key(&copy);
    assert_eq!(OwnedProxy::into_inner(copy).unwrap(), [1, 2, 3, 4, 5]);
    assert!(!store.exists(&copy_key).unwrap());
    store.close().unwrap();
}

#[test]
fn converting_between_plain_and_owned_proxies() {
    let (store, _dir) = file_store("convert");
    let plain = store.proxy("x".to_string()).unwrap();
    let key = Proxy::key(&plain);
    let owner = OwnedProxy::from_proxy(plain);
    assert_eq!(*owner, "x");
    let leaked = OwnedProxy::leak(owner);
    assert!(
        store.exists(&key).unwrap(),
        "leak gives up ownership without evicting"
    );
    drop(OwnedProxy::from_proxy(leaked));
    assert!(!store.exists(&key).unwrap());
    store.close().unwrap();
}

#[test]
fn owned_proxies_dropped_after_their_store_closed_do_not_fail_or_resurrect_it() {
    let (store, dir) = file_store("late");
    let owner = store.owned_proxy(1u8).unwrap();
    store.close().unwrap();
    drop(owner);
    assert!(!dir.path().join("o").exists());
    assert!(proxystore::store::get_store(store.name()).is_none());
}

#[test]
fn a_transfer_serializes_once_and_evicts_only_if_never_sent() {
    let store = Store::new(unique("transfer"), LocalConnector::new()).unwrap();
    let owner = store.owned_proxy(7u64).unwrap();
    let key = OwnedProxy::key(&owner);
    let transfer = OwnedProxy::into_transfer(owner);
    let first = wire(&transfer);
    let mut second = Vec::new();
    let err = ciborium::into_writer(&transfer, &mut second).unwrap_err();
    assert!(err.to_string().contains("already transferred"), "{err}");
    drop(transfer);
    assert!(
        store.exists(&key).unwrap(),
        "a sent transfer does not evict"
    );
    let received: OwnedProxy<u64> = ciborium::from_reader(&first[..]).unwrap();
    assert_eq!(*received, 7);
    drop(received);
    assert!(!store.exists(&key).unwrap());

    let unsent = OwnedProxy::into_transfer(store.owned_proxy(8u64).unwrap());
    let key = unsent.key();
    drop(unsent);
    assert!(
        !store.exists(&key).unwrap(),
        "an unsent transfer still owns and evicts"
    );
    // A plain proxy's bytes are not an ownership transfer.
    let plain = store.proxy(9u64).unwrap();
    assert!(ciborium::from_reader::<OwnedProxy<u64>, _>(&wire(&plain)[..]).is_err());
    store.close().unwrap();
}

#[test]
fn ownership_crosses_processes_without_eviction_on_the_sending_side() {
    let (store, dir) = file_store("two-processes");
    // The peer creates an owned object, sends its ownership and exits (its
    // copies are dropped). The object must survive that.
    let out = Command::new(env!("CARGO_BIN_EXE_proxystore-peer"))
        .args(["send-owned", &to_hex(store.config()), "made by the peer"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let transfer_hex = String::from_utf8(out.stdout).unwrap();
    let received: OwnedProxy<String> = from_hex(&transfer_hex);
    let key = OwnedProxy::key(&received);
    assert!(
        dir.path().join("o").join(key.to_string()).exists(),
        "sender evicted it"
    );
    assert_eq!(*received, "made by the peer");
    drop(received);
    assert!(!store.exists(&key).unwrap(), "the receiver is the owner");

    // And the other way: this process sends, the peer receives and evicts.
    let owner = store.owned_proxy("made by the parent".to_string()).unwrap();
    let key = OwnedProxy::key(&owner);
    let transfer = OwnedProxy::into_transfer(owner);
    let text = to_hex(&transfer);
    drop(transfer);
    assert!(store.exists(&key).unwrap());
    let mut child = Command::new(env!("CARGO_BIN_EXE_proxystore-peer"))
        .arg("receive-owned")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "made by the parent\ndropped\n"
    );
    assert!(!store.exists(&key).unwrap());
    store.close().unwrap();
}

#[test]
fn proxies_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Proxy<String>>();
    check::<OwnedProxy<Vec<f64>>>();
    check::<proxystore::Transfer<String>>();
    check::<Store>();
    let _ = Key::new();
}
