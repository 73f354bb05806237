//! Objects kept by the host that made them, across hosts made of network
//! namespaces: Redis on one, a worker host, the caller on a third. The
//! caller's store sends small objects to Redis and large ones to a
//! `PeerConnector` (Redis holds only where they are). A large echo goes
//! caller -> worker -> caller directly; then the worker host is killed
//! (all its processes) while it keeps a result, and reading that result
//! must fail with `Error::ObjectLost` naming the worker host. A second run
//! cuts the worker host off the network instead (its processes live on):
//! the read fails the same way once the connection times out.
//!
//! Namespaces need root and `ip` (iproute2). Without them the first test
//! says so and runs the same scenario with processes on loopback; the
//! second says so and does nothing.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use proxystore::connectors::{MultiConnector, PeerConnector, RedisConnector};
use proxystore::executor::cluster::{ClusterExecutor, Settings};
use proxystore::{proxied, Error, OwnedProxy, Store, StoreExecutor, TaskValue};
use support::netns::{namespaces_usable, Host, Network};
use support::redis_server::{free_port, program_or_skip, RedisServer};

proxystore::test_worker!();

const QUEUE: &str = "peer-hosts";
const CALLER_ENV: &str = "PROXYSTORE_TEST_PEER_HOSTS_CALLER";
/// The worker host's address, as the caller must see it in errors.
const WORKER_HOST_ENV: &str = "PROXYSTORE_TEST_PEER_HOSTS_WORKER";
/// Objects up to this size go to Redis itself.
const SMALL: u64 = 64 << 10;
const ECHO_LEN: usize = 8 << 20;

#[proxied(types = [Vec<u8>])]
fn echo(bytes: Vec<u8>) -> Vec<u8> {
    bytes
}

#[proxied(types = [Vec<u8>])]
fn make(len: u64, fill: u8) -> Vec<u8> {
    vec![fill; len as usize]
}

fn settings() -> Settings {
    Settings {
        caller_ttl: Duration::from_secs(5),
        ..support::cluster::quick()
    }
}

/// The store of the scenario: small objects in Redis, large ones kept by
/// the process that made them.
fn store(url: &str) -> (Store, PeerConnector) {
    let redis = |namespace: &str| {
        RedisConnector::builder(url)
            .namespace(namespace)
            .build()
            .unwrap()
    };
    let peer = PeerConnector::builder(redis("peer-hosts-where"))
        .connect_timeout(Duration::from_secs(2))
        .io_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let connector = MultiConnector::builder()
        .route(SMALL, redis("peer-hosts"))
        .fallback(peer.clone())
        .build()
        .unwrap();
    (Store::new("peer-hosts", connector).unwrap(), peer)
}

fn owned<T: proxystore::Storable>(value: TaskValue<T>) -> OwnedProxy<T> {
    match value {
        TaskValue::Owned(owned) => owned,
        _ => panic!("a listed result comes back owned"),
    }
}

/// The caller's side of the scenario, run on the caller's host by
/// [`a_killed_host_loses_its_objects_and_readers_are_told_which`]; does
/// nothing in a normal test run.
#[test]
fn caller_entry_for_the_peer_hosts_scenario() {
    let Ok(url) = std::env::var(CALLER_ENV) else {
        return;
    };
    let worker_host = std::env::var(WORKER_HOST_ENV).unwrap();
    let (store, peer) = store(&url);
    let executor = ClusterExecutor::builder(&url, QUEUE)
        .settings(settings())
        .build()
        .unwrap();
    let executor = StoreExecutor::new(executor, store);

    // A large echo: both ways straight between the hosts.
    let sent: Vec<u8> = (0..ECHO_LEN).map(|i| (i % 251) as u8).collect();
    let result = owned(
        executor
            .submit(echo::task(sent.clone()))
            .unwrap()
            .result()
            .unwrap(),
    );
    let location = peer.index().get(&OwnedProxy::key(&result)).unwrap();
    let location = String::from_utf8(location.expect("the result is a peer object")).unwrap();
    assert!(
        location.contains(&format!(" {worker_host}:")),
        "the result is kept on the worker host {worker_host}: {location}"
    );
    assert!(*OwnedProxy::resolve(&result).unwrap() == sent);
    drop(result);

    // A small result goes to Redis, not to the worker's memory.
    let small = owned(
        executor
            .submit(make::task(100, 1))
            .unwrap()
            .result()
            .unwrap(),
    );
    assert!(peer
        .index()
        .get(&OwnedProxy::key(&small))
        .unwrap()
        .is_none());
    assert_eq!(*OwnedProxy::resolve(&small).unwrap(), vec![1u8; 100]);

    // A result the worker host keeps, then loses with its host.
    let kept = owned(
        executor
            .submit(make::task(1 << 20, 7))
            .unwrap()
            .result()
            .unwrap(),
    );
    println!("\nSCENARIO-HOLDING");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "KILLED");
    let err = OwnedProxy::resolve(&kept).unwrap_err();
    match &err {
        Error::ObjectLost { key, host, .. } => {
            assert_eq!(*key, OwnedProxy::key(&kept));
            assert!(host.starts_with(&format!("{worker_host}:")), "{err}");
        }
        other => panic!("expected a lost object, got {other:?}"),
    }
    assert!(err.to_string().contains(&worker_host), "{err}");
    println!("\nLOST: {err}");
    // Dropping what is lost removes its entry and does not fail.
    drop(kept);
    drop(small);
    executor.shutdown(false, true);
    println!("\nSCENARIO-DONE");
}

#[test]
fn a_killed_host_loses_its_objects_and_readers_are_told_which() {
    scenario(
        "a_killed_host_loses_its_objects_and_readers_are_told_which",
        false,
    );
}

#[test]
fn a_host_cut_off_loses_its_objects_once_the_connection_times_out() {
    scenario(
        "a_host_cut_off_loses_its_objects_once_the_connection_times_out",
        true,
    );
}

/// Runs the scenario; the worker host is killed, or with `cut` cut off
/// the network.
fn scenario(test: &str, cut: bool) {
    let Some(program) = program_or_skip(test) else {
        return;
    };
    let salt = if cut { 11 } else { 7 };
    let network = namespaces_usable().and_then(|()| Network::new(&["redis", "w1", "caller"], salt));
    let network = match network {
        Ok(n) => Some(n),
        Err(reason) if cut => {
            eprintln!("NOTE {test}: network namespaces unavailable ({reason}); nothing to cut");
            return;
        }
        Err(reason) => {
            eprintln!(
                "NOTE {test}: network namespaces unavailable ({reason}); running the same \
                 scenario with processes on loopback"
            );
            None
        }
    };
    let port = free_port();
    let (server, mut worker, caller_host, worker_addr) = match &network {
        Some(net) => {
            let prefix = ["ip", "netns", "exec", &net.ns(0)];
            let server = RedisServer::start_on(&program, &prefix, &net.addr(0), port)
                .expect("redis-server starts in its namespace");
            (
                server,
                Host::new(Some(net.ns(1))),
                Host::new(Some(net.ns(2))),
                net.addr(1),
            )
        }
        None => {
            let server = RedisServer::start_on(&program, &[], "127.0.0.1", port)
                .expect("redis-server starts");
            (
                server,
                Host::new(None),
                Host::new(None),
                "127.0.0.1".to_string(),
            )
        }
    };
    let url = server.url();
    let mut command = worker.command(&std::env::current_exe().unwrap());
    let child = support::cluster::serve(&mut command, &url, QUEUE)
        .args(support::cluster::WORKER_ENTRY)
        .spawn()
        .expect("worker starts");
    worker.children.push(child);

    let mut caller = caller_host
        .command(&std::env::current_exe().unwrap())
        .args([
            "caller_entry_for_the_peer_hosts_scenario",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CALLER_ENV, &url)
        .env(WORKER_HOST_ENV, &worker_addr)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("caller starts");
    let mut stdin = caller.stdin.take().unwrap();
    let lines = BufReader::new(caller.stdout.take().unwrap()).lines();
    let (mut done, mut lost) = (false, None);
    for line in lines {
        let line = line.unwrap();
        let line = line.trim();
        if line == "SCENARIO-HOLDING" {
            match &network {
                Some(net) if cut => net.cut(1).unwrap(),
                _ => worker.kill(),
            }
            writeln!(stdin, "KILLED").unwrap();
        } else if let Some(message) = line.strip_prefix("LOST: ") {
            lost = Some(message.to_string());
        } else if line == "SCENARIO-DONE" {
            done = true;
        }
    }
    let status = caller.wait().unwrap();
    assert!(status.success() && done, "the caller failed: {status}");
    let lost = lost.expect("the caller read the lost object");
    eprintln!("the reader was told: {lost}");
    assert!(lost.contains(&worker_addr), "{lost}");
    if cut {
        assert!(lost.contains("timed out"), "{lost}");
    }
}
