//! Stores rebuilt from configurations (in workers, for arriving proxies)
//! are a bounded cache: a long-lived worker that serves thousands of store
//! names keeps a bounded number of stores and Redis connections, and a
//! store dropped from the cache never breaks a proxy of it.

mod support;

use std::path::Path;

use proxystore::connectors::{FileConnector, RedisConnector};
use proxystore::executor::ProcessPool;
use proxystore::store::{get_or_create_store, REBUILT_STORES};
use proxystore::{proxied, OwnedProxy, Proxy, Store, StoreExecutor};
use support::common::unique;
use support::redis_server::RedisServer;

proxystore::test_worker!();

/// The worker's process id, and the length of `value`, read through its
/// store (rebuilt in the worker from the proxy's configuration).
#[proxied(types = [String])]
fn read_in_worker(value: String) -> (u32, usize) {
    (std::process::id(), value.len())
}

/// Open descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Clients connected to `server`, from `CLIENT LIST` (one line each).
fn clients(server: &RedisServer) -> usize {
    let reply = server.raw(&["CLIENT", "LIST"]);
    reply.lines().filter(|l| l.starts_with("id=")).count()
}

/// A store of its own name, in a directory or a Redis namespace of its own.
fn distinct_store(i: usize, dir: &Path, url: &str) -> Store {
    let name = unique(&format!("many-{i}"));
    if i.is_multiple_of(4) {
        Store::new(&name, FileConnector::new(dir.join(&name)).unwrap()).unwrap()
    } else {
        let connector = RedisConnector::builder(url)
            .namespace(&name)
            .build()
            .unwrap();
        Store::new(&name, connector).unwrap()
    }
}

/// 2,000 store names served by one worker process: its descriptors and
/// the server's clients stay bounded (they grew by one per Redis
/// namespace, for good).
#[test]
fn a_worker_serving_many_store_names_stays_bounded() {
    let Some(server) = RedisServer::start("a_worker_serving_many_store_names_stays_bounded") else {
        return;
    };
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let home = Store::new(
        unique("many-home"),
        FileConnector::new(dir.path().join("home")).unwrap(),
    )
    .unwrap();
    let pool = ProcessPool::builder(1).test_harness().build().unwrap();
    let executor = StoreExecutor::new(pool, home);
    let mut worker = 0;
    let mut baseline = None;
    for i in 0..2_000 {
        let store = distinct_store(i, dir.path(), &url);
        let value = format!("value-{i}");
        let proxy = store.proxy(value.clone()).unwrap();
        let result = executor
            .submit(read_in_worker::task(proxy))
            .unwrap()
            .result()
            .unwrap();
        let (pid, len) = *result;
        assert_eq!(len, value.len());
        worker = pid;
        if i == 100 {
            baseline = Some((open_fds(worker), clients(&server)));
        }
        store.close().unwrap();
    }
    let (fds_before, clients_before) = baseline.unwrap();
    let (fds, clients_now) = (open_fds(worker), clients(&server));
    eprintln!(
        "worker {worker}: {fds_before} -> {fds} descriptors; server: {clients_before} -> \
         {clients_now} clients"
    );
    // A few pooled connections per server and the worker's own
    // descriptors, never one per store name.
    assert!(fds <= fds_before + 16, "{fds_before} -> {fds} descriptors");
    assert!(clients_now <= 20, "{clients_now} clients");
    drop(executor);
}

fn unregistered(dir: &Path, name: &str) -> Store {
    Store::builder(name, FileConnector::new(dir.join(name)).unwrap())
        .register(false)
        .build()
        .unwrap()
}

/// A store dropped from the cache is neither closed nor needed by its
/// proxies: resolved ones keep their value, new ones build it again, and
/// an owner still evicts its object.
#[test]
fn proxies_outlive_their_rebuilt_store() {
    let dir = tempfile::tempdir().unwrap();
    let original = unregistered(dir.path(), &unique("outlive"));
    let resolved = original.proxy(String::from("resolved")).unwrap();
    let owned: OwnedProxy<String> = original.owned_proxy(String::from("owned")).unwrap();
    let owned_key = OwnedProxy::key(&owned);
    let later: Proxy<String> = original.proxy_from_key(Proxy::key(&resolved));
    assert_eq!(*resolved, "resolved");
    assert_eq!(*owned, "owned");
    let rebuilt = get_or_create_store(original.config()).unwrap();

    // Enough other stores rebuilt to push it out of the cache.
    let others: Vec<Store> = (0..REBUILT_STORES + 4)
        .map(|i| unregistered(dir.path(), &unique(&format!("outlive-other-{i}"))))
        .collect();
    for other in &others {
        get_or_create_store(other.config()).unwrap();
    }
    let again = get_or_create_store(original.config()).unwrap();
    assert!(
        !std::ptr::eq(rebuilt.connector(), again.connector()),
        "the store was dropped from the cache and built again"
    );
    drop((rebuilt, again));

    assert_eq!(*resolved, "resolved");
    assert_eq!(*later, "resolved");
    assert!(!original.is_closed());
    assert!(original.exists(&owned_key).unwrap());
    drop(owned);
    assert!(!original.exists(&owned_key).unwrap(), "the owner evicted");
    for other in others {
        other.close().unwrap();
    }
    original.close().unwrap();
}
