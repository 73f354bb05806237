//! The Redis connector against a real `redis-server` (each test starts its
//! own; without one installed they return at once, see
//! `support/redis_server.rs`).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use proxystore::connectors::{Connector, FileConnector, MultiConnector, Reach, RedisConnector};
use proxystore::executor::cluster::ClusterExecutor;
use proxystore::{Error, Key, Proxy, Store};
use support::common::{to_hex, unique};
use support::redis_server::{free_port, RedisServer};

macro_rules! server {
    ($test:expr) => {
        match RedisServer::start($test) {
            Some(server) => server,
            None => return,
        }
    };
}

/// `calls` of `command` in `INFO commandstats` (0 if never called).
fn calls(server: &RedisServer, command: &str) -> u64 {
    let info = server.raw(&["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .unwrap_or(0)
}

#[test]
fn stores_sharing_a_server_close_only_their_own_keys() {
    let server = server!("stores_sharing_a_server_close_only_their_own_keys");
    let a = RedisConnector::new(server.url()).unwrap();
    let b = RedisConnector::new(server.url()).unwrap();
    assert_ne!(a.namespace(), b.namespace(), "fresh namespaces");
    server.raw(&["SET", "someone-else", "x"]);
    let a_keys: Vec<Key> = (0..2500u32)
        .map(|i| a.put(&[&i.to_le_bytes()]).unwrap())
        .collect();
    let b_key = b.put(&[b"b's"]).unwrap();
    assert_eq!(
        server
            .keys(&format!("proxystore:{}:*", a.namespace()))
            .len(),
        2500
    );
    assert_eq!(
        server.keys("*").len(),
        2502,
        "a's keys, b's key and someone else's"
    );
    assert_eq!(server.keys(&b.redis_key(&b_key)).len(), 1);

    a.close().unwrap();
    assert!(server
        .keys(&format!("proxystore:{}:*", a.namespace()))
        .is_empty());
    assert_eq!(
        server.keys("*"),
        vec![b.redis_key(&b_key), "someone-else".to_string()]
    );
    assert!(!a.exists(&a_keys[0]).unwrap());
    // Closing again is fine, and the connector is still usable.
    a.close().unwrap();
    let again = a.put(&[b"after close"]).unwrap();
    assert_eq!(a.get(&again).unwrap().as_deref(), Some(&b"after close"[..]));
    a.close().unwrap();
    assert_eq!(b.get(&b_key).unwrap().as_deref(), Some(&b"b's"[..]));
}

#[test]
fn keys_lists_the_namespaces_objects_with_scan_never_keys() {
    let server = server!("keys_lists_the_namespaces_objects_with_scan_never_keys");
    let a = RedisConnector::builder(server.url())
        .namespace("a*")
        .build()
        .unwrap();
    let ab = RedisConnector::builder(server.url())
        .namespace("ab")
        .build()
        .unwrap();
    // More than one SCAN batch of objects.
    let mut ours: Vec<Key> = (0..2500u32)
        .map(|i| a.put(&[&i.to_le_bytes()]).unwrap())
        .collect();
    let theirs = ab.put(&[b"ab's"]).unwrap();
    // Names under the prefix that are no object key of `a*`.
    for name in [
        "someone-else".to_string(),
        format!("proxystore:a*:{}", Key::new().to_string().to_uppercase()),
        format!("proxystore:a*:{}x", Key::new()),
        "proxystore:a*:not-a-key".to_string(),
        "proxystore:queue:jobs".to_string(),
    ] {
        server.raw(&["SET", &name, "x"]);
    }

    let keys_calls = calls(&server, "keys");
    let scans = calls(&server, "scan");
    let mut listed = a.keys().unwrap();
    listed.sort();
    ours.sort();
    assert_eq!(listed.len(), 2500);
    assert_eq!(listed, ours);
    assert!(calls(&server, "scan") >= scans + 2, "SCAN in batches");
    assert_eq!(ab.keys().unwrap(), [theirs]);
    // A connector rebuilt from the configuration (a worker) lists the same.
    assert_eq!(a.config().build().unwrap().keys().unwrap().len(), 2500);
    let store = Store::builder(unique("redis-keys"), ab.clone())
        .register(false)
        .build()
        .unwrap();
    assert_eq!(store.len().unwrap(), 1);
    store.evict(&theirs).unwrap();
    assert!(store.is_empty().unwrap());
    assert_eq!(calls(&server, "keys"), keys_calls, "KEYS was never sent");

    a.close().unwrap();
    assert_eq!(a.keys().unwrap(), []);
    // Close removes what is shaped like an object key (the upper-case
    // one too), nothing else.
    assert_eq!(server.keys("*").len(), 4, "{:?}", server.keys("*"));
}

#[test]
fn namespaces_with_glob_characters_match_only_themselves() {
    let server = server!("namespaces_with_glob_characters_match_only_themselves");
    let names = ["a*", "a?", "a[bc]", "ab", "ac", "a\\", "a]", "a-b", "a^"];
    let connectors: Vec<RedisConnector> = names
        .iter()
        .map(|ns| {
            RedisConnector::builder(server.url())
                .namespace(*ns)
                .build()
                .unwrap()
        })
        .collect();
    let keys: Vec<Key> = connectors
        .iter()
        .map(|c| c.put(&[c.namespace().as_bytes()]).unwrap())
        .collect();
    assert_eq!(server.keys("*").len(), names.len());
    // Closing the ones whose names are patterns removes only their own.
    for i in 0..3 {
        connectors[i].close().unwrap();
        assert!(!connectors[i].exists(&keys[i]).unwrap(), "{}", names[i]);
        for j in i + 1..names.len() {
            assert!(
                connectors[j].exists(&keys[j]).unwrap(),
                "closing {} removed {}'s object",
                names[i],
                names[j]
            );
        }
    }
    assert_eq!(server.keys("*").len(), names.len() - 3);
    for c in &connectors {
        c.close().unwrap();
    }
    assert!(server.keys("*").is_empty());
}

#[test]
fn a_connector_rebuilt_from_its_config_never_clears() {
    let server = server!("a_connector_rebuilt_from_its_config_never_clears");
    let c = RedisConnector::new(server.url()).unwrap();
    let key = c.put(&[b"kept"]).unwrap();
    let rebuilt = c.config().build().unwrap();
    assert_eq!(rebuilt.get(&key).unwrap().as_deref(), Some(&b"kept"[..]));
    rebuilt.close().unwrap();
    assert!(
        c.exists(&key).unwrap(),
        "a worker's close removed the objects"
    );
    assert_eq!(server.keys("*").len(), 1);
    c.close().unwrap();
    assert!(server.keys("*").is_empty());

    // keep_on_close keeps them even in the creating process.
    let kept = RedisConnector::builder(server.url())
        .keep_on_close()
        .build()
        .unwrap();
    let key = kept.put(&[b"x"]).unwrap();
    kept.close().unwrap();
    assert!(kept.exists(&key).unwrap());
}

#[test]
fn operations_work_again_after_a_server_restart() {
    let mut server = server!("operations_work_again_after_a_server_restart");
    let c = RedisConnector::new(server.url()).unwrap();
    // Several pooled connections, all broken by the restart.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..20 {
                    c.put(&[b"before"]).unwrap();
                }
            });
        }
    });
    let key = c.put(&[b"before"]).unwrap();
    server.restart();
    // The data is gone (no persistence), the connector works again.
    assert_eq!(c.get(&key).unwrap(), None);
    for _ in 0..10 {
        let key = c.put(&[b"after"]).unwrap();
        assert_eq!(c.get(&key).unwrap().as_deref(), Some(&b"after"[..]));
    }
}

#[test]
fn a_dead_server_is_a_typed_error_quickly() {
    let mut server = server!("a_dead_server_is_a_typed_error_quickly");
    let c = RedisConnector::new(server.url()).unwrap();
    let key = c.put(&[b"x"]).unwrap();
    server.kill();
    let start = Instant::now();
    for result in [
        c.get(&key).map(drop),
        c.put(&[b"y"]).map(drop),
        c.exists(&key).map(drop),
        c.evict(&key),
        c.close(),
    ] {
        let err = result.unwrap_err();
        assert!(matches!(err, Error::Redis { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("127.0.0.1:{}/0", server.port())),
            "{text}"
        );
    }
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );

    // Nobody listening at all: new fails, quickly too.
    let start = Instant::now();
    let err = RedisConnector::new(format!("redis://127.0.0.1:{}", free_port())).unwrap_err();
    assert!(matches!(err, Error::Redis { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_server_that_never_answers_times_out() {
    // A listener that accepts connections and never says anything.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let start = Instant::now();
    let err = RedisConnector::builder(format!("redis://127.0.0.1:{port}"))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Redis { .. }), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    drop(listener);
}

#[test]
fn objects_over_the_limit_are_refused_before_sending() {
    let server = server!("objects_over_the_limit_are_refused_before_sending");
    let c = RedisConnector::builder(server.url())
        .max_object_size(100)
        .build()
        .unwrap();
    assert_eq!(
        RedisConnector::new(server.url()).unwrap().max_object_size(),
        512 << 20
    );
    server.raw(&["CONFIG", "RESETSTAT"]);
    let key = c.put(&[&[1u8; 60], &[2u8; 40]]).unwrap();
    let err = c.put(&[&[1u8; 60], &[2u8; 41]]).unwrap_err();
    match &err {
        Error::TooLarge {
            size, limit, hint, ..
        } => {
            assert_eq!((*size, *limit), (101, 100));
            assert!(hint.contains("MultiConnector"), "{hint}");
        }
        other => panic!("{other:?}"),
    }
    let err = c.set(&key, &[&[0u8; 101]]).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }));
    let err = c.put_batch(&[&[b"ok"], &[&[0u8; 200]]]).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }));
    // Nothing was sent for the refused ones.
    assert_eq!(calls(&server, "set"), 1);
    assert_eq!(calls(&server, "mset"), 0);
    assert_eq!(server.keys("*").len(), 1);
}

#[test]
fn secrets_never_show() {
    let server = server!("secrets_never_show");
    let password = "s3cr3t-PaSsWoRd";
    let reply = server.raw(&["CONFIG", "SET", "requirepass", password]);
    assert!(reply.starts_with("+OK"), "{reply}");
    let port = server.port();
    let url = format!("redis://:{password}@127.0.0.1:{port}/0");
    let c = RedisConnector::new(&url).unwrap();
    let key = c.put(&[b"x"]).unwrap();
    assert_eq!(c.get(&key).unwrap().as_deref(), Some(&b"x"[..]));
    // The configuration carries it, for workers on other hosts.
    let rebuilt = c.config().build().unwrap();
    assert!(rebuilt.exists(&key).unwrap());

    let mut shown = vec![format!("{c:?}"), format!("{rebuilt:?}")];
    shown.push(format!("{:?}", RedisConnector::builder(&url)));
    // A wrong password.
    let wrong = format!("redis://:{password}-nope@127.0.0.1:{port}/0");
    let err = RedisConnector::new(&wrong).unwrap_err();
    assert!(matches!(err, Error::Redis { .. }), "{err:?}");
    shown.push(err.to_string());
    shown.push(format!("{err:?}"));
    // A user and password.
    let err =
        RedisConnector::new(format!("redis://someuser:{password}@127.0.0.1:{port}/0")).unwrap_err();
    shown.push(err.to_string());
    // Invalid URLs.
    for bad in [
        format!("redis://:{password}@127.0.0.1:{port}/notanumber"),
        format!("http://:{password}@127.0.0.1:{port}"),
        format!("redis://:{password}@:{port}"),
    ] {
        let err = RedisConnector::new(bad).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
        shown.push(err.to_string());
    }
    // A server that went away.
    drop(server);
    let err = c.get(&key).unwrap_err();
    shown.push(err.to_string());
    shown.push(format!("{err:?}"));
    for text in &shown {
        assert!(!text.contains(password), "the password shows in: {text}");
        assert!(!text.contains("someuser"), "the user shows in: {text}");
    }
    assert!(
        shown[0].contains(&format!("127.0.0.1:{port}/0")),
        "{}",
        shown[0]
    );
}

/// Socket URLs carry their credentials in the query (`?user=..&pass=..`):
/// every form redis-rs reads, used for real, never shows them.
#[test]
fn socket_url_secrets_never_show() {
    let sockets = tempfile::tempdir().unwrap();
    let socket = sockets.path().join("redis.sock");
    let socket = socket.to_str().unwrap();
    let Some(server) = RedisServer::start_with(
        "socket_url_secrets_never_show",
        &["--unixsocket", socket, "--unixsocketperm", "700"],
    ) else {
        return;
    };
    let password = "s3cr3t-PaSsWoRd";
    let reply = server.raw(&["CONFIG", "SET", "requirepass", password]);
    assert!(reply.starts_with("+OK"), "{reply}");
    let mut shown = Vec::new();
    for url in [
        format!("redis+unix://{socket}?pass={password}"),
        format!("redis+unix://{socket}?db=1&user=default&pass={password}"),
        format!("valkey+unix://{socket}?pass={password}"),
        format!("unix://{socket}?pass={password}&db=0"),
        format!("unix:{socket}?pass={password}"),
    ] {
        let c = RedisConnector::new(&url).unwrap();
        let key = c.put(&[b"x"]).unwrap();
        assert!(c.exists(&key).unwrap(), "{url}");
        let store = Store::builder(unique("socket-secrets"), c.clone())
            .register(false)
            .build()
            .unwrap();
        let proxy = store.proxy(String::from("value")).unwrap();
        shown.push(format!("{:?}", store.config()));
        shown.push(format!("{store:?}"));
        shown.push(format!("{proxy:?}"));
        shown.push(format!("{:?}", c.config()));
        shown.push(format!("{:?}", c.config().build().unwrap()));
        shown.push(format!("{:?}", RedisConnector::builder(&url)));
        shown.push(format!("{:?}", ClusterExecutor::builder(&url, "secrets")));
        let executor = ClusterExecutor::new(&url, "secrets").unwrap();
        shown.push(format!("{executor:?}"));
        drop(executor);
        store.close().unwrap();

        let wrong = url.replace(password, &format!("{password}-nope"));
        let err = RedisConnector::new(&wrong).unwrap_err();
        assert!(matches!(err, Error::Redis { .. }), "{err:?}");
        shown.push(err.to_string());
        shown.push(format!("{err:?}"));
        let err = ClusterExecutor::new(&wrong, "secrets").unwrap_err();
        shown.push(err.to_string());
        shown.push(format!("{err:?}"));
        let err = RedisConnector::new(format!("{url}&db=notanumber")).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
        shown.push(err.to_string());
    }
    for text in &shown {
        assert!(!text.contains(password), "the password shows in: {text}");
    }
    assert!(shown[0].contains("pass=<hidden>"), "{}", shown[0]);
}

#[test]
fn urls_are_checked_up_front() {
    for bad in [
        "",
        "127.0.0.1:6379",
        "redis://",
        "redis://host:port",
        "redis://h/x",
    ] {
        let err = RedisConnector::new(bad).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{bad}: {err:?}");
    }
    // Without proxystore's `redis-tls` feature, TLS URLs say what to
    // enable; with it (e.g. `--all-features`) they are tried.
    let err = RedisConnector::new(format!("rediss://127.0.0.1:{}", free_port())).unwrap_err();
    match err {
        Error::InvalidConfig { reason, .. } => assert!(reason.contains("redis-tls"), "{reason}"),
        Error::Redis { .. } => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn batches_are_single_round_trips() {
    let server = server!("batches_are_single_round_trips");
    let c = RedisConnector::new(server.url()).unwrap();
    server.raw(&["CONFIG", "RESETSTAT"]);
    let objects: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 1000]).collect();
    let parts: Vec<[&[u8]; 2]> = objects.iter().map(|o| [&o[..500], &o[500..]]).collect();
    let refs: Vec<&[&[u8]]> = parts.iter().map(|p| &p[..]).collect();
    let keys = c.put_batch(&refs).unwrap();
    let got = c.get_batch(&keys).unwrap();
    assert_eq!(
        got.into_iter().map(Option::unwrap).collect::<Vec<_>>(),
        objects
    );
    assert_eq!(calls(&server, "mset"), 1);
    assert_eq!(calls(&server, "mget"), 1);
    assert_eq!(calls(&server, "set"), 0);
    assert_eq!(calls(&server, "get"), 0);
    assert!(c.get_batch(&[]).unwrap().is_empty());
    assert!(c.put_batch(&[]).unwrap().is_empty());
}

#[test]
fn reach_follows_the_host() {
    let server = server!("reach_follows_the_host");
    let c = RedisConnector::new(server.url()).unwrap();
    assert_eq!(c.reach(), Reach::Host);
    let localhost = RedisConnector::new(format!("redis://localhost:{}", server.port())).unwrap();
    assert_eq!(localhost.reach(), Reach::Host);
    // A configuration for a remote server is rebuilt without connecting.
    let mut config = c.config();
    let remote = RedisConnector::builder("redis://10.11.12.13:6379")
        .connect_timeout(Duration::from_millis(1));
    assert!(remote.build().is_err());
    let options: std::collections::BTreeMap<String, ciborium::Value> = config.options().unwrap();
    let mut options = options;
    options.insert(
        "url".into(),
        ciborium::Value::Text("redis://10.11.12.13:6379".into()),
    );
    config = proxystore::connectors::ConnectorConfig::new(&config.kind, &options).unwrap();
    assert_eq!(config.build().unwrap().reach(), Reach::Network);
}

#[test]
fn a_large_vector_round_trips_through_a_store_and_a_proxy() {
    let server = server!("a_large_vector_round_trips_through_a_store_and_a_proxy");
    let store = Store::new(
        unique("redis-vec"),
        RedisConnector::new(server.url()).unwrap(),
    )
    .unwrap();
    let values: Vec<f64> = (0..(10 << 20) / 8).map(|i| i as f64 * 0.5).collect();
    let proxy = store.proxy(values.clone()).unwrap();
    let mut wire = Vec::new();
    ciborium::into_writer(&proxy, &mut wire).unwrap();
    let back: Proxy<Vec<f64>> = ciborium::from_reader(&wire[..]).unwrap();
    assert_eq!(*Proxy::resolve(&back).unwrap(), values);
    let key = store.put(&values).unwrap();
    assert_eq!(*store.get::<Vec<f64>>(&key).unwrap().unwrap(), values);
    store.close().unwrap();
    assert!(server.keys("*").is_empty());
}

#[test]
fn a_proxy_resolves_in_another_process() {
    let server = server!("a_proxy_resolves_in_another_process");
    let store = Store::new(
        unique("redis-peer"),
        RedisConnector::new(server.url()).unwrap(),
    )
    .unwrap();
    let proxy = store.proxy("hello through redis".to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_proxystore-peer"))
        .args(["proxy", &to_hex(&proxy)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello through redis"
    );
    // The peer's store (rebuilt from the proxy) did not clear anything.
    assert!(store.exists(&Proxy::key(&proxy)).unwrap());
    store.close().unwrap();
}

#[test]
fn small_objects_in_redis_large_ones_in_files() {
    let server = server!("small_objects_in_redis_large_ones_in_files");
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisConnector::new(server.url()).unwrap();
    let namespace = redis.namespace().to_string();
    let c = MultiConnector::builder()
        .route(1024, redis)
        .fallback(FileConnector::new(dir.path().join("large")).unwrap())
        .build()
        .unwrap();
    assert_eq!(c.reach(), Reach::Host);
    let small = c.put(&[&[1u8; 1024]]).unwrap();
    let large = c.put(&[&[2u8; 1025]]).unwrap();
    assert_eq!(
        server.keys("*"),
        vec![format!("proxystore:{namespace}:{small}")]
    );
    assert!(dir.path().join("large").join(large.to_string()).exists());
    assert_eq!(c.get(&large).unwrap().unwrap().len(), 1025);
    // Rebuilt elsewhere from the configuration: same routes.
    let rebuilt = c.config().build().unwrap();
    assert_eq!(rebuilt.get(&small).unwrap().unwrap(), vec![1u8; 1024]);
    assert_eq!(rebuilt.get(&large).unwrap().unwrap(), vec![2u8; 1025]);
    c.close().unwrap();
    assert!(server.keys("*").is_empty());
    assert!(!dir.path().join("large").exists());
}

/// `rediss://` against a real TLS server: the certificate is verified
/// (with the test CA trusted through `SSL_CERT_FILE`, it works; without,
/// it is refused), and a password never shows in the error.
#[test]
fn rediss_urls_use_verified_tls() {
    let Some((server, ca)) = RedisServer::start_tls("rediss_urls_use_verified_tls") else {
        return;
    };
    let peer = |url: &str, ca: Option<&std::path::Path>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_proxystore-peer"));
        c.args(["redis-round-trip", url])
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR");
        if let Some(ca) = ca {
            c.env("SSL_CERT_FILE", ca);
        }
        let out = c.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    };
    let (ok, said) = peer(&server.tls_url(), Some(&ca));
    assert!(ok, "TLS round trip failed: {said}");
    assert_eq!(said, "ok");
    // An untrusted certificate is refused.
    let url = server
        .tls_url()
        .replace("rediss://", "rediss://user:tls-s3cret@");
    let (ok, said) = peer(&url, None);
    assert!(!ok, "an unverified server was accepted");
    assert!(
        said.to_lowercase().contains("certificate"),
        "refused for its certificate: {said}"
    );
    assert!(!said.contains("tls-s3cret"), "{said}");
    assert!(said.contains("localhost"), "names the server: {said}");
}

/// A caller's inputs in Redis get an expiry, renewed while it lives: killed
/// mid-task, it leaves them for about that long, not for ever.
#[test]
fn a_killed_caller_s_inputs_expire() {
    let Some(server) = RedisServer::start("redis_connector") else {
        return;
    };
    let namespace = format!("killed-caller-{}", std::process::id());
    let mut caller = std::process::Command::new(env!("CARGO_BIN_EXE_proxystore-parent"))
        .args(["redis-caller", &server.url(), &namespace])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(support::common::first_line(&mut caller), "submitted");
    let pattern = format!("proxystore:{namespace}:*");
    let inputs = server.keys(&pattern);
    assert_eq!(inputs.len(), 1, "{inputs:?}");
    // Alive: the input outlives its 1 s expiry, renewed.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(
        server.keys(&pattern),
        inputs,
        "renewed while the caller lives"
    );
    let ttl = server.raw(&["PTTL", &inputs[0]]);
    assert!(
        ttl.starts_with(':') && !ttl.starts_with(":-"),
        "an expiry is set: {ttl}"
    );
    caller.kill().unwrap();
    caller.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !server.keys(&pattern).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed caller's input stayed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[proxystore::proxied]
fn doubled(x: i64) -> i64 {
    x * 2
}

/// Per proxied task through Redis: the input stored with its expiry (no
/// `PEXPIRE` of its own), read once by the worker, and the small result
/// read in the round trip that evicts the input, so that the caller's read
/// of it sends nothing.
#[test]
fn a_small_result_is_read_with_the_inputs_eviction() {
    let server = server!("a_small_result_is_read_with_the_inputs_eviction");
    let store = Store::builder(
        unique("read-ahead"),
        RedisConnector::new(server.url()).unwrap(),
    )
    .cache_size(0)
    .build()
    .unwrap();
    let executor = proxystore::StoreExecutor::new(
        proxystore::executor::ThreadPool::new(1).unwrap(),
        store.clone(),
    )
    .should_proxy(proxystore::ShouldProxy::Always)
    .close_store(false);
    server.raw(&["CONFIG", "RESETSTAT"]);
    for i in 0..20 {
        let result = executor.submit(doubled::task(i)).unwrap().result().unwrap();
        assert!(result.is_proxy());
        assert_eq!(*result, 2 * i);
    }
    assert_eq!(calls(&server, "set"), 40, "inputs and results");
    assert_eq!(
        calls(&server, "pexpire"),
        0,
        "inputs stored with their expiry"
    );
    assert_eq!(
        calls(&server, "get"),
        20,
        "the worker's reads of the inputs only"
    );
    assert_eq!(calls(&server, "getrange"), 20, "results read ahead");
    assert_eq!(calls(&server, "unlink"), 40, "inputs and results evicted");
    assert!(store.is_empty().unwrap());
    drop(executor);
    store.close().unwrap();
}

/// `total_connections_received` in `INFO stats`.
fn connections(server: &RedisServer) -> u64 {
    let info = server.raw(&["INFO", "stats"]);
    info.lines()
        .find_map(|line| line.strip_prefix("total_connections_received:"))
        .map(|n| n.trim().parse().unwrap())
        .unwrap()
}

#[test]
fn reads_and_writes_reuse_their_connections() {
    let server = server!("reads_and_writes_reuse_their_connections");
    let store = Store::new(
        unique("redis-reuse"),
        RedisConnector::new(server.url()).unwrap(),
    )
    .unwrap();
    let small = store.put(&vec![7u8; 1024]).unwrap();
    let large = store.put(&vec![8u8; 200 << 10]).unwrap();
    let floats = store.put(&vec![1.5f64; 1000]).unwrap();
    let before = connections(&server);
    for _ in 0..50 {
        let key = store.put(&vec![1u8; 1024]).unwrap();
        assert_eq!(store.load::<Vec<u8>>(&small).unwrap().unwrap().len(), 1024);
        assert_eq!(
            store.load::<Vec<u8>>(&large).unwrap().unwrap().len(),
            200 << 10
        );
        assert_eq!(store.load::<Vec<f64>>(&floats).unwrap().unwrap()[999], 1.5);
        assert!(store.exists(&key).unwrap());
        store.evict(&key).unwrap();
    }
    let opened = connections(&server) - before;
    assert!(
        opened <= 2,
        "{opened} connections opened for 250 operations"
    );
}
