//! A 100 MiB echo between hosts made of network namespaces: Redis on one,
//! two worker hosts, the caller on a fourth (`bench/peer-hosts` runs it;
//! needs root, `ip` and `redis-server`).
//!
//! Rows, measured in the same run, interleaved round by round, each in a
//! fresh caller process (one warm-up echo, then the timed ones):
//!
//! - `tcp`: a plain TCP echo of the same bytes between the caller's
//!   namespace and a worker host's (send them, read them back);
//! - `redis floor`: one SET and one GET of the same bytes from the caller
//!   (what any echo through Redis must at least pay);
//! - `cluster + redis`: a `ClusterExecutor` task echoing a 100 MiB
//!   `Vec<u8>`, objects in a `RedisConnector`;
//! - `cluster + peer`: the same, objects up to 1 MiB in Redis and larger
//!   ones in a `PeerConnector` (kept by the process that made them, served
//!   straight to the reader; Redis holds where).
//!
//! - `dask + redis` (with `--python PATH`, a Python with `proxystore` 1.1
//!   and `dask[distributed]`): Python ProxyStore's `StoreExecutor` over a
//!   Dask client, objects in Redis, a scheduler on the Redis host and one
//!   Dask worker on each worker host (`bench/peer_hosts_dask.py`).
//!
//! `--rounds N` (default 3), `--reps N` timed echoes per process (default
//! 3), `--mib N` (default 100). Everything it creates (namespaces, bridge,
//! processes) is removed at the end, also when it fails.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proxystore::connectors::{MultiConnector, PeerConnector, RedisConnector};
use proxystore::executor::cluster::{ClusterExecutor, CLUSTER_ENV, QUEUE_ENV};
use proxystore::{proxied, OwnedProxy, Store, StoreExecutor, TaskValue};

const ROLE_ENV: &str = "PEER_BENCH_ROLE";
const QUEUE: &str = "peer-bench";
const TCP_PORT: u16 = 47011;
const REDIS_PORT: u16 = 47012;

#[proxied(types = [Vec<u8>])]
fn echo(bytes: Vec<u8>) -> Vec<u8> {
    bytes
}

fn main() {
    proxystore::worker::init();
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str, default: usize| -> usize {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.parse().expect("a number"))
            .unwrap_or(default)
    };
    let mib = opt("--mib", 100);
    let python = args
        .iter()
        .position(|a| a == "--python")
        .and_then(|i| args.get(i + 1))
        .cloned();
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("tcp-echo") => tcp_echo(mib << 20),
        Ok(mode) => caller(mode, mib << 20, opt("--reps", 3)),
        Err(_) => orchestrate(mib, opt("--rounds", 3), opt("--reps", 3), python),
    }
}

// ---- the caller's side -------------------------------------------------

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

/// Runs `reps` timed echoes of `len` bytes (after one warm-up) and prints
/// `TIME <seconds>` for each.
fn caller(mode: &str, len: usize, reps: usize) {
    let url = env("PEER_BENCH_URL");
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let mut once: Box<dyn FnMut() -> Duration> = match mode {
        "tcp" => {
            let addr = env("PEER_BENCH_TCP");
            let mut conn = TcpStream::connect(&addr).expect("the echo host listens");
            conn.set_nodelay(true).unwrap();
            let data = data.clone();
            Box::new(move || {
                let started = Instant::now();
                conn.write_all(&data).unwrap();
                let mut back = Vec::with_capacity(data.len());
                (&mut conn)
                    .take(data.len() as u64)
                    .read_to_end(&mut back)
                    .unwrap();
                let took = started.elapsed();
                assert!(back == data);
                took
            })
        }
        "redis-floor" => {
            let client = redis::Client::open(url.as_str()).unwrap();
            let mut con = client.get_connection().unwrap();
            let data = data.clone();
            Box::new(move || {
                let started = Instant::now();
                redis::cmd("SET")
                    .arg("peer-bench:floor")
                    .arg(&data[..])
                    .query::<()>(&mut con)
                    .unwrap();
                let back: Vec<u8> = redis::cmd("GET")
                    .arg("peer-bench:floor")
                    .query(&mut con)
                    .unwrap();
                let took = started.elapsed();
                assert!(back == data);
                redis::cmd("DEL")
                    .arg("peer-bench:floor")
                    .query::<()>(&mut con)
                    .unwrap();
                took
            })
        }
        "cluster-redis" | "cluster-peer" => {
            let redis = |namespace: &str| {
                RedisConnector::builder(&url)
                    .namespace(namespace)
                    .build()
                    .unwrap()
            };
            let store = if mode == "cluster-redis" {
                Store::new("peer-bench-redis", redis("peer-bench-redis")).unwrap()
            } else {
                let connector = MultiConnector::builder()
                    .route(1 << 20, redis("peer-bench-small"))
                    .fallback(
                        PeerConnector::builder(redis("peer-bench-where"))
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap();
                Store::new("peer-bench-peer", connector).unwrap()
            };
            let executor = StoreExecutor::new(ClusterExecutor::new(&url, QUEUE).unwrap(), store);
            Box::new(move || {
                let sent = data.clone();
                let started = Instant::now();
                let value = executor.submit(echo::task(sent)).unwrap().result().unwrap();
                let TaskValue::Owned(result) = value else {
                    panic!("a listed result comes back owned");
                };
                let ok = OwnedProxy::resolve(&result).unwrap().len() == data.len();
                let took = started.elapsed();
                assert!(ok && **OwnedProxy::resolve(&result).unwrap() == data[..]);
                drop(result);
                took
            })
        }
        other => panic!("unknown role {other}"),
    };
    once();
    for _ in 0..reps {
        println!("TIME {}", once().as_secs_f64());
    }
}

/// Echoes `len` bytes back to each connection, over and over.
fn tcp_echo(len: usize) {
    let listener = TcpListener::bind(env("PEER_BENCH_TCP")).unwrap();
    println!("LISTENING");
    std::io::stdout().flush().unwrap();
    let mut buf = Vec::with_capacity(len);
    for conn in listener.incoming() {
        let mut conn = conn.unwrap();
        conn.set_nodelay(true).unwrap();
        loop {
            buf.clear();
            if (&mut conn).take(len as u64).read_to_end(&mut buf).is_err() || buf.len() < len {
                break;
            }
            if conn.write_all(&buf).is_err() {
                break;
            }
        }
    }
}

// ---- the hosts ----------------------------------------------------------

/// Namespaces joined by a bridge (address .1), one per host (addresses
/// .2, .3, ...), and the processes started in them; all removed on drop.
struct Hosts {
    tag: String,
    subnet: String,
    names: Vec<String>,
    children: Vec<Child>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Hosts {
    fn new(hosts: &[&str]) -> Hosts {
        let n = std::process::id() % 200;
        let tag = std::env::var("PEER_BENCH_TAG").unwrap_or_else(|_| format!("pb{n}"));
        let subnet = format!("10.232.{n}");
        let mut made = Hosts {
            tag: tag.clone(),
            subnet: subnet.clone(),
            names: Vec::new(),
            children: Vec::new(),
        };
        let bridge = format!("{tag}br");
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("{subnet}.1/24"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        for (i, host) in hosts.iter().enumerate() {
            let ns = format!("{tag}-{host}");
            ip(&["netns", "add", &ns]);
            made.names.push(ns.clone());
            let (outside, inside) = (format!("{tag}v{i}"), format!("{tag}p{i}"));
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ]);
            ip(&["link", "set", &inside, "netns", &ns]);
            ip(&["link", "set", &outside, "master", &bridge, "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{subnet}.{}/24", i + 2),
                "dev",
                &inside,
            ]);
            ip(&["-n", &ns, "link", "set", &inside, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        made
    }

    fn addr(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 2)
    }

    fn command(&self, i: usize, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.names[i], program]);
        c
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{}br", self.tag)])
            .output();
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

const REDIS: usize = 0;
const W1: usize = 1;
const W2: usize = 2;
const CALLER: usize = 3;

const DASK_PORT: u16 = 47013;

fn orchestrate(mib: usize, rounds: usize, reps: usize, python: Option<String>) {
    let exe = std::env::current_exe().unwrap();
    let exe = exe.to_str().unwrap();
    let mut hosts = Hosts::new(&["redis", "w1", "w2", "caller"]);
    let url = format!("redis://{}:{REDIS_PORT}", hosts.addr(REDIS));
    let redis = hosts
        .command(REDIS, "redis-server")
        .args([
            "--bind",
            &hosts.addr(REDIS),
            "--port",
            &REDIS_PORT.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    hosts.children.push(redis);
    let tcp = format!("{}:{TCP_PORT}", hosts.addr(W1));
    let mut sink = hosts
        .command(W1, exe)
        .env(ROLE_ENV, "tcp-echo")
        .env("PEER_BENCH_TCP", &tcp)
        .args(["--mib", &mib.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the echo host starts");
    let mut ready = [0u8; 10];
    sink.stdout.take().unwrap().read_exact(&mut ready).unwrap();
    hosts.children.push(sink);
    // Wait for Redis.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(format!("{}:{REDIS_PORT}", hosts.addr(REDIS))).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    for host in [W1, W2] {
        let worker = hosts
            .command(host, exe)
            .env(CLUSTER_ENV, &url)
            .env(QUEUE_ENV, QUEUE)
            .stdout(Stdio::null())
            .spawn()
            .expect("a worker starts");
        hosts.children.push(worker);
    }
    let mut rows = vec![
        ("tcp", "plain TCP echo, caller <-> worker host"),
        ("redis-floor", "Redis SET + GET from the caller"),
        ("cluster-redis", "cluster executor, objects in Redis"),
        ("cluster-peer", "cluster executor, PeerConnector"),
    ];
    // Python ProxyStore + Dask: a scheduler on the Redis host, a worker on
    // each worker host.
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peer_hosts_dask.py");
    let dask = python.as_ref().map(|python| {
        let venv_bin = std::path::Path::new(python).parent().unwrap().to_path_buf();
        let dask_cli = venv_bin.join("dask");
        let dask_cli = dask_cli.to_str().unwrap();
        let scheduler = format!("tcp://{}:{DASK_PORT}", hosts.addr(REDIS));
        let child = hosts
            .command(REDIS, dask_cli)
            .args(["scheduler", "--host", &hosts.addr(REDIS), "--port"])
            .arg(DASK_PORT.to_string())
            .arg("--no-dashboard")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the dask scheduler starts");
        hosts.children.push(child);
        for host in [W1, W2] {
            let child = hosts
                .command(host, dask_cli)
                .args(["worker", &scheduler, "--host", &hosts.addr(host)])
                .args(["--nthreads", "1", "--nworkers", "1", "--no-dashboard"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("a dask worker starts");
            hosts.children.push(child);
        }
        rows.push(("dask", "Python ProxyStore + Dask, objects in Redis"));
        (python.clone(), scheduler)
    });
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    eprintln!(
        "hosts: redis {}, workers {} and {}, caller {}; {mib} MiB, {rounds} rounds x {reps} echoes",
        hosts.addr(REDIS),
        hosts.addr(W1),
        hosts.addr(W2),
        hosts.addr(CALLER)
    );
    for round in 0..rounds {
        for (row, (mode, _)) in rows.iter().enumerate() {
            let mut command = match (&dask, *mode) {
                (Some((python, scheduler)), "dask") => {
                    let mut c = hosts.command(CALLER, python);
                    c.arg(&script)
                        .args([scheduler, &hosts.addr(REDIS)])
                        .arg(REDIS_PORT.to_string());
                    c
                }
                _ => {
                    let mut c = hosts.command(CALLER, exe);
                    c.env(ROLE_ENV, mode)
                        .env("PEER_BENCH_URL", &url)
                        .env("PEER_BENCH_TCP", &tcp);
                    c
                }
            };
            let out = command
                .args(["--mib", &mib.to_string(), "--reps", &reps.to_string()])
                .stderr(Stdio::inherit())
                .output()
                .expect("the caller runs");
            assert!(out.status.success(), "the {mode} caller failed");
            let got: Vec<f64> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.strip_prefix("TIME "))
                .map(|t| t.trim().parse().unwrap())
                .collect();
            assert_eq!(got.len(), reps, "{mode}: {got:?}");
            eprintln!("round {}: {mode}: {got:.3?}", round + 1);
            times[row].extend(got);
        }
    }
    let medians: Vec<f64> = times.iter_mut().map(|t| median(t)).collect();
    let (tcp_s, floor_s, redis_s, peer_s) = (medians[0], medians[1], medians[2], medians[3]);
    println!();
    println!(
        "{mib} MiB echo between hosts (network namespaces), medians of {} each:",
        rounds * reps
    );
    println!(
        "{:<45} {:>9} {:>9} {:>9}",
        "row", "median s", "min s", "max s"
    );
    for ((_, name), t) in rows.iter().zip(&times) {
        let (min, max) = (t.first().unwrap(), t.last().unwrap());
        println!(
            "{name:<45} {:>9.3} {min:>9.3} {max:>9.3}",
            median(&mut t.clone())
        );
    }
    println!();
    println!(
        "cluster + redis / cluster + peer: {:.2}x (target >= 3)",
        redis_s / peer_s
    );
    println!(
        "cluster + peer / plain TCP echo:  {:.2}x (target <= 2)",
        peer_s / tcp_s
    );
    println!("Redis floor / cluster + peer:     {:.2}x", floor_s / peer_s);
    match medians.get(4) {
        Some(dask_s) => println!(
            "Python + Dask / cluster + peer:   {:.2}x (target >= 3)",
            dask_s / peer_s
        ),
        None => println!(
            "Python ProxyStore + Dask: not measured (give --python with proxystore 1.1 and \
             dask[distributed]; bench/peer-hosts --dask makes one)"
        ),
    }
}
