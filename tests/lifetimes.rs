//! Lifetimes: context, lease (with Redis expiring keys itself) and static
//! (a real process that exits).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use proxystore::connectors::{FileConnector, RedisConnector};
use proxystore::lifetime::{ContextLifetime, LeaseLifetime, Lifetime, StaticLifetime};
use proxystore::{Error, Key, Store};
use support::common::{to_hex, unique};
use support::redis_server::RedisServer;

fn file_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(
        unique("lifetimes"),
        FileConnector::new(dir.path().join("objects")).unwrap(),
    )
    .unwrap();
    (dir, store)
}

/// Waits (at most 10 s) for `key` to leave `store`.
fn gone_soon(store: &Store, key: &Key) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !store.exists(key).unwrap() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn a_context_lifetime_evicts_its_objects_when_it_ends() {
    let (_dir, store) = file_store();
    let outside = store.put(&"outside".to_string()).unwrap();
    let (a, b) = {
        let scope = ContextLifetime::new();
        let a = store.put_with_lifetime(&vec![1u8; 4096], &scope).unwrap();
        let b = store.proxy_with_lifetime(7u64, &scope).unwrap();
        let later = store.put(&1u8).unwrap();
        (&scope as &dyn Lifetime)
            .add_proxy(&store.proxy_from_key::<u8>(later))
            .unwrap();
        assert!(store.exists(&a).unwrap() && store.exists(&later).unwrap());
        (a, proxystore::Proxy::key(&b))
    };
    assert!(!store.exists(&a).unwrap());
    assert!(!store.exists(&b).unwrap());
    assert!(store.exists(&outside).unwrap(), "only its own objects");

    // Closed early; an object offered afterwards is refused and not kept.
    let scope = ContextLifetime::new();
    let c = store.put_with_lifetime(&1u32, &scope).unwrap();
    scope.close();
    assert!(scope.done() && !store.exists(&c).unwrap());
    match store.put_with_lifetime(&2u32, &scope) {
        Err(Error::LifetimeEnded { lifetime }) => assert_eq!(lifetime, "context"),
        other => panic!("expected LifetimeEnded, got {other:?}"),
    }
    assert_eq!(
        std::fs::read_dir(_dir.path().join("objects"))
            .unwrap()
            .filter(|e| !e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.'))
            .count(),
        1,
        "only `outside` is left"
    );
}

#[test]
fn a_lease_evicts_when_it_runs_out_unless_extended() {
    let (_dir, store) = file_store();
    let lease = LeaseLifetime::new(Duration::from_millis(800));
    let key = store
        .put_with_lifetime(&"leased".to_string(), &lease)
        .unwrap();
    lease.extend(Duration::from_secs(2));
    assert!(lease.remaining() > Duration::from_millis(1500));
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        store.exists(&key).unwrap(),
        "past the first end, within the extension"
    );
    assert!(gone_soon(&store, &key), "evicted once the lease ran out");
    assert!(lease.done());
    assert_eq!(lease.remaining(), Duration::ZERO);
    assert!(matches!(
        store.put_with_lifetime(&1u8, &lease),
        Err(Error::LifetimeEnded { lifetime: "lease" })
    ));
    // Absurd durations saturate instead of panicking.
    let forever = LeaseLifetime::new(Duration::MAX);
    forever.extend(Duration::MAX);
    assert!(forever.remaining() > Duration::from_secs(3600) && !forever.done());
    forever.close();
    assert!(forever.done());
    // Closed early.
    let lease = LeaseLifetime::new(Duration::from_secs(3600));
    let key = store.put_with_lifetime(&1u8, &lease).unwrap();
    lease.close();
    assert!(!store.exists(&key).unwrap());
}

#[test]
fn a_lease_on_redis_lets_the_server_expire_its_keys() {
    let Some(server) = RedisServer::start("a_lease_on_redis_lets_the_server_expire_its_keys")
    else {
        return;
    };
    let connector = RedisConnector::new(server.url()).unwrap();
    let store = Store::new(unique("lease-redis"), connector.clone()).unwrap();
    let lease = LeaseLifetime::new(Duration::from_secs(60));
    let key = store
        .put_with_lifetime(&"leased".to_string(), &lease)
        .unwrap();
    let name = connector.redis_key(&key);
    // A RESP integer reply: `:<n>`.
    let ttl = |name: &str| -> i64 {
        let reply = server.raw(&["PTTL", name]);
        reply.trim().trim_start_matches(':').parse().unwrap()
    };
    let first = ttl(&name);
    assert!(first > 50_000 && first <= 60_000, "PTTL {first}");
    lease.extend(Duration::from_secs(60));
    let extended = ttl(&name);
    assert!(extended > 100_000, "PTTL after extending: {extended}");
    // The server drops it by itself even if the program is gone: here a
    // short lease whose own thread is beaten by the server.
    let short = LeaseLifetime::new(Duration::from_millis(300));
    let other = store.put_with_lifetime(&1u8, &short).unwrap();
    let other_name = connector.redis_key(&other);
    let t = ttl(&other_name);
    assert!(t > 0 && t <= 300, "PTTL {t}");
    assert!(gone_soon(&store, &other));
    store.close().unwrap();
}

#[test]
fn the_static_lifetime_evicts_at_normal_exit() {
    let (dir, store) = file_store();
    let out = Command::new(env!("CARGO_BIN_EXE_proxystore-peer"))
        .args(["static-lifetime", &to_hex(store.config()), "bye"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut keys = text.split_whitespace().map(|k| k.parse::<Key>().unwrap());
    let (scoped, kept) = (keys.next().unwrap(), keys.next().unwrap());
    assert!(
        !store.exists(&scoped).unwrap(),
        "evicted when the peer exited"
    );
    assert_eq!(store.load::<String>(&kept).unwrap().as_deref(), Some("bye"));
    assert!(!StaticLifetime::get().done());
    drop(dir);
}

/// The message of a proxy whose object is gone, resolved afresh.
fn missing_message(store: &Store, key: Key) -> String {
    let proxy = store.proxy_from_key::<String>(key);
    let err = proxystore::Proxy::resolve(&proxy).unwrap_err();
    assert!(matches!(err, Error::MissingObject { .. }), "{err}");
    err.to_string()
}

#[test]
fn a_proxy_whose_lease_ran_out_says_so() {
    let (_dir, store) = file_store();
    let lease = LeaseLifetime::new(Duration::from_millis(50));
    let key = store
        .put_with_lifetime(&"leased".to_string(), &lease)
        .unwrap();
    assert!(gone_soon(&store, &key));
    let text = missing_message(&store, key);
    assert!(
        text.contains(&key.to_string())
            && text.contains("belonged to a lease (LeaseLifetime) that ran out"),
        "{text}"
    );

    // Closed rather than run out: said as it happened.
    let lease = LeaseLifetime::new(Duration::from_secs(3600));
    let closed = store
        .put_with_lifetime(&"closed".to_string(), &lease)
        .unwrap();
    lease.close();
    let text = missing_message(&store, closed);
    assert!(
        text.contains("belonged to a lease (LeaseLifetime) that was closed"),
        "{text}"
    );

    // A context's end is named too.
    let scoped = {
        let scope = ContextLifetime::new();
        store
            .put_with_lifetime(&"scoped".to_string(), &scope)
            .unwrap()
    };
    let text = missing_message(&store, scoped);
    assert!(
        text.contains("belonged to a ContextLifetime that ended"),
        "{text}"
    );

    // Stored again under the same key and evicted otherwise: no lease is
    // claimed, and the generic message still names lifetimes among the
    // causes.
    store.set(&key, &"again".to_string()).unwrap();
    store.evict(&key).unwrap();
    let text = missing_message(&store, key);
    assert!(!text.contains("this process evicted it"), "{text}");
    assert!(text.contains("probably evicted"), "{text}");
    assert!(text.contains("a lifetime it belonged to ended"), "{text}");
    // An object no lifetime ever held: the same.
    let plain = store.put(&"plain".to_string()).unwrap();
    store.evict(&plain).unwrap();
    let text = missing_message(&store, plain);
    assert!(!text.contains("this process evicted it"), "{text}");
    assert!(text.contains("a lease ran out"), "{text}");
}
