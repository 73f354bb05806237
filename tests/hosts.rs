//! Several hosts made of network namespaces: Redis on one, two worker
//! hosts with two worker processes each, the caller on a fourth. The
//! caller runs the `concat` example and a 50 MiB `Vec<f64>` pipeline
//! through a `RedisConnector` store and a `ClusterExecutor`; one worker
//! host is killed (all its processes) mid-run. Every future must complete
//! with the right result, and Redis must hold no key of the run afterwards.
//!
//! Namespaces need root (CI runs as root) and `ip` (iproute2). Without
//! them the test says so and runs the same scenario with processes on
//! loopback.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use proxystore::connectors::RedisConnector;
use proxystore::executor::cluster::{ClusterExecutor, Settings};
use proxystore::{proxied, OwnedProxy, Store, StoreExecutor, TaskValue};
use support::netns::{namespaces_usable, Host, Network};
use support::redis_server::{free_port, program_or_skip, RedisServer};

proxystore::test_worker!();

const QUEUE: &str = "hosts";
const CALLER_ENV: &str = "PROXYSTORE_TEST_HOSTS_CALLER";
/// 50 MiB of f64 in chunks.
const CHUNKS: usize = 10;
const CHUNK_LEN: usize = 50 * 1024 * 1024 / 8 / CHUNKS;

#[proxied(types = [String])]
fn concat(base: String, num: i64) -> String {
    format!("{base}-{num}")
}

/// Scales a chunk; slow enough that a host dies while some run.
#[proxied(types = [Vec<f64>])]
fn scale(values: Vec<f64>, by: f64) -> Vec<f64> {
    std::thread::sleep(Duration::from_millis(300));
    values.into_iter().map(|v| v * by).collect()
}

#[proxied(types = [Vec<f64>])]
fn total(values: Vec<f64>) -> f64 {
    values.iter().sum()
}

fn settings() -> Settings {
    Settings {
        caller_ttl: Duration::from_secs(5),
        ..support::cluster::quick()
    }
}

/// The caller's side of the scenario, run in the caller's namespace by
/// [`hosts_survive_the_death_of_one`]; does nothing in a normal test run.
#[test]
fn caller_entry_for_the_hosts_scenario() {
    let Ok(url) = std::env::var(CALLER_ENV) else {
        return;
    };
    let store = Store::new(
        "hosts-scenario",
        RedisConnector::builder(&url)
            .namespace("hosts-scenario")
            .build()
            .unwrap(),
    )
    .unwrap();
    let executor = ClusterExecutor::builder(&url, QUEUE)
        .settings(settings())
        .build()
        .unwrap();
    let executor = StoreExecutor::new(executor, store);

    let result = executor
        .submit(concat::task("foobar".to_string(), 42))
        .unwrap()
        .result()
        .unwrap();
    assert!(result.is_proxy());
    assert_eq!(*result, "foobar-42");

    let chunks: Vec<Vec<f64>> = (0..CHUNKS)
        .map(|c| (0..CHUNK_LEN).map(|i| (c * CHUNK_LEN + i) as f64).collect())
        .collect();
    let expected: f64 = chunks.iter().flatten().map(|v| v * 3.0).sum();
    let scaled: Vec<_> = chunks
        .into_iter()
        .map(|chunk| executor.submit(scale::task(chunk, 3.0)).unwrap())
        .collect();
    println!("\nSCENARIO-RUNNING");
    let mut sum = 0.0;
    for future in scaled {
        let value = future.result().unwrap();
        let TaskValue::Owned(owned) = &value else {
            panic!("a listed result comes back owned");
        };
        // Worker to worker: the scaled chunk goes to the next task as a
        // reference, never through this process.
        sum += *executor
            .submit(total::task(owned as &OwnedProxy<Vec<f64>>))
            .unwrap()
            .result()
            .unwrap();
    }
    assert_eq!(sum, expected);
    drop(result);
    executor.shutdown(true, false);
    println!("\nSCENARIO-DONE");
}

/// Starts a worker process of [`QUEUE`] on `host`: this test binary in
/// worker mode.
fn start_worker(host: &mut Host, url: &str) {
    let mut command = host.command(&std::env::current_exe().unwrap());
    let child = support::cluster::serve(&mut command, url, QUEUE)
        .args(support::cluster::WORKER_ENTRY)
        .spawn()
        .expect("worker starts");
    host.children.push(child);
}

#[test]
fn hosts_survive_the_death_of_one() {
    let Some(program) = program_or_skip("hosts_survive_the_death_of_one") else {
        return;
    };
    let network =
        namespaces_usable().and_then(|()| Network::new(&["redis", "w1", "w2", "caller"], 0));
    let network = match network {
        Ok(n) => Some(n),
        Err(reason) => {
            eprintln!(
                "NOTE hosts_survive_the_death_of_one: network namespaces unavailable ({reason}); \
                 running the same scenario with processes on loopback"
            );
            None
        }
    };
    let port = free_port();
    let (server, hosts, caller_ns) = match &network {
        Some(net) => {
            let prefix = ["ip", "netns", "exec", &net.ns(0)];
            let server = RedisServer::start_on(&program, &prefix, &net.addr(0), port)
                .expect("redis-server starts in its namespace");
            let host = |i: usize| Host::new(Some(net.ns(i)));
            (server, [host(1), host(2)], Some(net.ns(3)))
        }
        None => {
            let server = RedisServer::start_on(&program, &[], "127.0.0.1", port)
                .expect("redis-server starts");
            let host = || Host::new(None);
            (server, [host(), host()], None)
        }
    };
    let url = server.url();
    let [mut doomed, mut survivor] = hosts;
    for _ in 0..2 {
        start_worker(&mut doomed, &url);
        start_worker(&mut survivor, &url);
    }

    let exe = std::env::current_exe().unwrap();
    let caller_host = Host::new(caller_ns);
    let started = Instant::now();
    let mut caller = caller_host
        .command(&exe)
        .args([
            "caller_entry_for_the_hosts_scenario",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CALLER_ENV, &url)
        .stdout(Stdio::piped())
        .spawn()
        .expect("caller starts");
    let mut lines = BufReader::new(caller.stdout.take().unwrap()).lines();
    let mut killed_at = None;
    let mut done = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.trim() == "SCENARIO-RUNNING" && killed_at.is_none() {
            // Kill the host while its workers hold jobs.
            let pids: Vec<String> = doomed
                .children
                .iter()
                .map(|c| format!("-{}-", c.id()))
                .collect();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let pending = server.raw(&[
                    "XPENDING",
                    &format!("proxystore:queue:{QUEUE}:jobs"),
                    "workers",
                ]);
                if pids.iter().any(|p| pending.contains(p.as_str())) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "host 1 never took a job: {pending:?}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            doomed.kill();
            killed_at = Some(Instant::now());
            eprintln!("killed worker host 1 at {:?}", started.elapsed());
        }
        if line.trim() == "SCENARIO-DONE" {
            done = true;
        }
    }
    let status = caller.wait().unwrap();
    assert!(status.success() && done, "the caller failed: {status}");
    eprintln!(
        "scenario done in {:?}; {:?} after the kill",
        started.elapsed(),
        killed_at.map(|k| k.elapsed())
    );

    // Nothing of the run is left: no object, no reply list, no caller
    // heartbeat, no job; once the workers are gone, their heartbeats
    // expire too.
    survivor.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keys = server.keys("*");
        let jobs = format!("proxystore:queue:{QUEUE}:jobs");
        if keys == [jobs.clone()] {
            assert_eq!(server.raw(&["XLEN", &jobs]), ":0\r\n");
            break;
        }
        assert!(Instant::now() < deadline, "keys left in Redis: {keys:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
