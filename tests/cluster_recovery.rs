//! Faults of the multi-host executor, round 2, done for real: job entries
//! with numbers Redis cannot take, hosts killed with several jobs, workers
//! cut off from Redis (a TCP proxy that drops every connection and refuses
//! new ones while cut), callers killed with many jobs in flight. Each test
//! failed before its fix.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::path::PathBuf;

use proxystore::connectors::{FileConnector, LocalConnector};
use proxystore::executor::cluster::{ClusterExecutor, Settings};
use proxystore::{proxied, Store, StoreExecutor};
use support::cluster::{executor, quick, Worker};
use support::common::unique;
use support::redis_server::RedisServer;

proxystore::test_worker!();

/// Sleeps, then says which process ran it.
#[proxied]
fn pid_after(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

fn redis(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Waits until `done` holds, failing with `what` after `limit`.
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Regression: an entry whose `ttl` field is beyond what Redis can expire
/// made the reply's PEXPIRE fail; the worker retried it for ever (pushing
/// a copy of the reply each time) and served nobody else. A caller could
/// also ask for it with `reply_ttl: Duration::MAX`.
#[test]
fn a_reply_expiry_redis_cannot_take_neither_holds_the_worker_nor_is_accepted() {
    let Some(server) = RedisServer::start("huge_reply_ttl") else {
        return;
    };
    let queue = "hugettl";
    let refused = ClusterExecutor::builder(&server.url(), queue)
        .settings(Settings {
            reply_ttl: Duration::MAX,
            ..quick()
        })
        .build()
        .unwrap_err();
    assert!(
        matches!(&refused, proxystore::Error::InvalidConfig { reason, .. } if reason.contains("reply_ttl")),
        "{refused}"
    );

    let store = Store::new(unique("huge-ttl"), LocalConnector::new()).unwrap();
    // Without the fix the second job is never answered: do not wait a
    // minute for it when the executor is dropped.
    let cluster = ClusterExecutor::builder(&server.url(), queue)
        .settings(quick())
        .shutdown_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let executor = StoreExecutor::new(cluster, store);
    let mut first = executor.submit(pid_after::task(0)).unwrap();
    let jobs = format!("proxystore:queue:{queue}:jobs");
    let mut con = redis(&server);
    wait_until(Duration::from_secs(10), "the job never queued", || {
        redis::cmd("XLEN")
            .arg(&jobs)
            .query::<i64>(&mut con)
            .unwrap()
            == 1
    });
    // The same job, asking for its reply to be kept 2^63-1 ms.
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&jobs)
        .arg("-")
        .arg("+")
        .query(&mut con)
        .unwrap();
    let entry = &entries.ids[0];
    let mut add = redis::cmd("XADD");
    add.arg(&jobs).arg("*");
    for (field, value) in &entry.map {
        let value: Vec<u8> = if field == "ttl" {
            i64::MAX.to_string().into_bytes()
        } else {
            redis::from_redis_value_ref(value).unwrap()
        };
        add.arg(field).arg(value);
    }
    let _: () = redis::pipe()
        .cmd("XDEL")
        .arg(&jobs)
        .arg(&entry.id)
        .add_command(add)
        .query(&mut con)
        .unwrap();

    let worker = Worker::start(&server.url(), queue);
    let pid = first.result_timeout(Duration::from_secs(20)).map(|v| *v);
    assert_eq!(pid.ok(), Some(worker.pid()), "the job with a huge ttl");
    let mut second = executor.submit(pid_after::task(0)).unwrap();
    let pid = second.result_timeout(Duration::from_secs(20)).map(|v| *v);
    assert_eq!(pid.ok(), Some(worker.pid()), "the next job");
    let reply = format!("proxystore:queue:{queue}:reply:*");
    for key in server.keys(&reply) {
        let len: i64 = redis::cmd("LLEN").arg(&key).query(&mut con).unwrap();
        assert_eq!(len, 0, "copies of a reply left in {key}");
    }
}

/// A proxy to a Redis server that can be cut: while cut, every connection
/// through it is closed and new ones are closed at once, as for a host
/// whose link to the server is down.
struct CutProxy {
    port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl CutProxy {
    fn start(upstream: u16) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (is_cut, conns) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if is_cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                {
                    let mut conns = conns.lock().unwrap();
                    conns.push(client.try_clone().unwrap());
                    conns.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 65536];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        CutProxy { port, cut, open }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for conn in self.open.lock().unwrap().drain(..) {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }

    fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// The first run of a job (the one that creates `marks/first`) sleeps
/// `first_ms`, any other `again_ms`; each marks `marks/done-<pid>` when it
/// returns. The result goes through the store.
#[proxied(types = [String])]
fn first_run_slow(marks: PathBuf, first_ms: u64, again_ms: u64) -> String {
    let first = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(marks.join("first"))
        .is_ok();
    std::thread::sleep(Duration::from_millis(if first {
        first_ms
    } else {
        again_ms
    }));
    std::fs::write(marks.join(format!("done-{}", std::process::id())), b"").unwrap();
    format!("ran by {}", std::process::id())
}

/// Waits until `worker` answers a job of `queue`: it has finished what it
/// was doing (it runs one job at a time).
fn wait_served(executor: &StoreExecutor, worker: &Worker) {
    let mut ping = executor.submit(pid_after::task(0)).unwrap();
    let pid = ping.result_timeout(Duration::from_secs(30)).map(|v| *v);
    assert_eq!(pid.ok(), Some(worker.pid()), "the worker serves again");
}

/// Regression: a worker cut off from Redis could not ask whether its run
/// was still its own before storing the result, and took that for yes:
/// it wrote its result after the re-run elsewhere had been answered and
/// the caller had evicted it, and the evicted object came back.
#[test]
fn a_run_that_cannot_confirm_its_job_does_not_store_its_result() {
    let Some(server) = RedisServer::start("unconfirmed_run") else {
        return;
    };
    let queue = "unsure";
    let dir = tempfile::tempdir().unwrap();
    let (objects, marks) = (dir.path().join("objects"), dir.path().join("marks"));
    std::fs::create_dir(&marks).unwrap();
    let store = Store::new(unique("unconfirmed"), FileConnector::new(&objects).unwrap()).unwrap();
    let executor = StoreExecutor::new(executor(&server, queue), store).close_store(false);
    let proxy = CutProxy::start(server.port());
    let cut_off = Worker::start(&proxy.url(), queue);
    let mut future = executor
        .submit(first_run_slow::task(marks.clone(), 5000, 200))
        .unwrap();
    // Running, not only delivered: a delivery still on its way through the
    // proxy when it is cut never reaches the worker.
    wait_until(
        Duration::from_secs(20),
        "the first run never started",
        || marks.join("first").exists(),
    );
    proxy.cut();
    let mut other = Worker::start(&server.url(), queue);
    let result = future.result_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(*result, format!("ran by {}", other.pid()));
    drop(result);
    drop(future);
    assert_eq!(support::cluster::objects(&objects), Vec::<String>::new());
    // The cut-off run ends while still cut off; then it may reconnect.
    let done = marks.join(format!("done-{}", cut_off.pid()));
    wait_until(Duration::from_secs(20), "the first run never ended", || {
        done.exists()
    });
    std::thread::sleep(Duration::from_secs(2));
    proxy.heal();
    other.kill();
    wait_served(&executor, &cut_off);
    assert_eq!(
        support::cluster::objects(&objects),
        Vec::<String>::new(),
        "the evicted result came back"
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Marks `marks/start-<n>-<pid>` with the time it started (ms since the
/// epoch), then sleeps `ms`.
#[proxied]
fn long_job(marks: PathBuf, n: u32, ms: u64) -> u32 {
    let mark = marks.join(format!("start-{n}-{}", std::process::id()));
    std::fs::write(mark, now_ms().to_string()).unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

/// The start marks of runs by `pid`: (job number, start time).
fn starts_by(marks: &std::path::Path, pid: u32) -> Vec<(u32, u64)> {
    let suffix = format!("-{pid}");
    std::fs::read_dir(marks)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix("start-")?.strip_suffix(&suffix)?;
            let at = std::fs::read_to_string(marks.join(&name)).ok()?;
            Some((n.parse().ok()?, at.trim().parse().ok()?))
        })
        .collect()
}

/// Regression: the worker that reaped a dead host's jobs claimed all of
/// them for itself and ran them one after another while other workers
/// sat idle.
#[test]
fn the_jobs_of_a_dead_host_rerun_in_parallel_on_free_workers() {
    let Some(server) = RedisServer::start("dead_host_parallel") else {
        return;
    };
    let queue = "spread";
    const JOB_MS: u64 = 6000;
    let marks = tempfile::tempdir().unwrap();
    let store = Store::new(unique("spread"), LocalConnector::new()).unwrap();
    let executor = StoreExecutor::new(executor(&server, queue), store);
    let mut dead = [
        Worker::start(&server.url(), queue),
        Worker::start(&server.url(), queue),
    ];
    let mut futures: Vec<_> = (0..2)
        .map(|n| {
            executor
                .submit(long_job::task(marks.path().to_path_buf(), n, JOB_MS))
                .unwrap()
        })
        .collect();
    let jobs = format!("proxystore:queue:{queue}:jobs");
    wait_until(Duration::from_secs(20), "both jobs never ran", || {
        server
            .raw(&["XPENDING", &jobs, "workers"])
            .starts_with("*4\r\n:2")
    });
    for worker in &mut dead {
        worker.kill();
    }
    let alive: Vec<String> = dead.iter().map(|w| format!("-{}-", w.pid())).collect();
    wait_until(
        Duration::from_secs(20),
        "dead heartbeats never expired",
        || {
            !server
                .keys(&format!("proxystore:queue:{queue}:alive:*"))
                .iter()
                .any(|k| alive.iter().any(|a| k.contains(a)))
        },
    );
    // Both jobs are up for grabs when the first free worker comes.
    std::thread::sleep(quick().lease + Duration::from_millis(500));
    let first = Worker::start(&server.url(), queue);
    wait_until(Duration::from_secs(20), "no job was re-run", || {
        !starts_by(marks.path(), first.pid()).is_empty()
    });
    let second = Worker::start(&server.url(), queue);
    for future in &mut futures {
        let pid = future.result_timeout(Duration::from_secs(40)).map(|v| *v);
        assert!(pid.is_ok(), "a re-run never answered: {pid:?}");
    }
    let (a, b) = (
        starts_by(marks.path(), first.pid()),
        starts_by(marks.path(), second.pid()),
    );
    eprintln!("re-runs: first worker {a:?}, second worker {b:?}");
    assert_eq!(
        (a.len(), b.len()),
        (1, 1),
        "the re-runs did not go to both free workers"
    );
    let gap = a[0].1.abs_diff(b[0].1);
    assert!(
        gap < JOB_MS / 2,
        "the re-runs started {gap} ms apart: one after the other"
    );
}

/// Watches its lease: marks `marks/started` once running, and
/// `marks/lost-<pid>` when `is_current` turns false (within `limit_ms`).
/// Runs other than the first return at once.
#[proxied]
fn watch_lease(marks: PathBuf, limit_ms: u64) -> bool {
    let context = proxystore::task::current().expect("inside a task");
    let first = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(marks.join("first"))
        .is_ok();
    if !first {
        return context.is_current();
    }
    if context.is_current() {
        std::fs::write(marks.join("started"), b"").unwrap();
    }
    let deadline = Instant::now() + Duration::from_millis(limit_ms);
    while Instant::now() < deadline {
        if !context.is_current() {
            std::fs::write(marks.join(format!("lost-{}", std::process::id())), b"").unwrap();
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// A worker cut off from Redis while its job is re-run elsewhere learns
/// that its lease is lost, and its task can see it (`is_current`).
#[test]
fn a_cut_off_worker_learns_its_job_was_given_away() {
    let Some(server) = RedisServer::start("lease_lost") else {
        return;
    };
    let queue = "lease";
    let marks = tempfile::tempdir().unwrap();
    let store = Store::new(unique("lease"), LocalConnector::new()).unwrap();
    let executor = StoreExecutor::new(executor(&server, queue), store);
    let proxy = CutProxy::start(server.port());
    let cut_off = Worker::start(&proxy.url(), queue);
    let mut future = executor
        .submit(watch_lease::task(marks.path().to_path_buf(), 25_000))
        .unwrap();
    let started = marks.path().join("started");
    wait_until(Duration::from_secs(20), "the task never started", || {
        started.exists()
    });
    proxy.cut();
    let _other = Worker::start(&server.url(), queue);
    let current = future.result_timeout(Duration::from_secs(20)).map(|v| *v);
    assert_eq!(current.ok(), Some(true), "the re-run is current");
    let lost = marks.path().join(format!("lost-{}", cut_off.pid()));
    wait_until(
        Duration::from_secs(15),
        "the cut-off run never learnt that its lease was lost",
        || lost.exists(),
    );
}

/// Sleeps `ms`, marking `marks/started` first; says whether its run was
/// still current at the end. The answer goes through the store.
#[proxied(types = [String])]
fn current_after(marks: PathBuf, ms: u64) -> String {
    let context = proxystore::task::current().expect("inside a task");
    std::fs::write(marks.join("started"), b"").unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    format!("current: {}", context.is_current())
}

/// Regression: a worker whose server was out of reach for longer than the
/// lease presumed its lease lost and never renewed it again, though nobody
/// took the job over: once the server was back, its task still saw
/// `is_current` false, and its result was refused as unconfirmed.
#[test]
fn a_lease_presumed_lost_is_held_again_when_nobody_took_the_job() {
    let Some(server) = RedisServer::start("lease_back") else {
        return;
    };
    let queue = "back";
    let marks = tempfile::tempdir().unwrap();
    let objects = tempfile::tempdir().unwrap();
    let store = Store::new(
        unique("lease-back"),
        FileConnector::new(objects.path().join("objects")).unwrap(),
    )
    .unwrap();
    let executor = StoreExecutor::new(executor(&server, queue), store);
    let proxy = CutProxy::start(server.port());
    // The only worker: nobody can take its job over.
    let _worker = Worker::start(&proxy.url(), queue);
    let mut future = executor
        .submit(current_after::task(marks.path().to_path_buf(), 5_000))
        .unwrap();
    wait_until(Duration::from_secs(20), "the task never started", || {
        marks.path().join("started").exists()
    });
    // Longer than the lease (0.8 s with these settings), then back.
    proxy.cut();
    std::thread::sleep(Duration::from_millis(2_500));
    proxy.heal();
    let answer = future
        .result_timeout(Duration::from_secs(30))
        .map(|v| v.to_string());
    assert_eq!(answer.ok().as_deref(), Some("current: true"));
}

/// Regression: a worker cut off from Redis during a job (re-run
/// elsewhere meanwhile) that came back before its run ended took the job
/// back from the re-running worker at its next lease renewal (a plain
/// `XCLAIM`); the two runs then both stored the result, and the one that
/// stored last did so after the caller had evicted the first's: the
/// result outlived its owner until the store closed.
#[test]
fn a_result_does_not_outlive_its_owner_after_a_partition() {
    use proxystore::connectors::RedisConnector;
    let Some(server) = RedisServer::start("partition_result") else {
        return;
    };
    let queue = "partition";
    let marks = tempfile::tempdir().unwrap();
    let proxy = CutProxy::start(server.port());
    let namespace = unique("partition").replace('_', "-");
    // The store goes through the proxy too: the cut-off host reaches
    // nothing of Redis.
    let store = Store::new(
        namespace.clone(),
        RedisConnector::builder(proxy.url())
            .namespace(&namespace)
            .build()
            .unwrap(),
    )
    .unwrap();
    let executor = StoreExecutor::new(executor(&server, queue), store).close_store(false);
    let cut_off = Worker::start(&proxy.url(), queue);
    let mut future = executor
        .submit(first_run_slow::task(marks.path().to_path_buf(), 4000, 4000))
        .unwrap();
    // Running, not only delivered (see above).
    wait_until(
        Duration::from_secs(20),
        "the first run never started",
        || marks.path().join("first").exists(),
    );
    proxy.cut();
    let other = Worker::start(&server.url(), queue);
    // The other worker has taken the job over: heal before either run ends.
    let taken = format!("-{}-", other.pid());
    let jobs = format!("proxystore:queue:{queue}:jobs");
    wait_until(
        Duration::from_secs(20),
        "the job was never taken over",
        || {
            server
                .raw(&["XPENDING", &jobs, "workers", "-", "+", "1"])
                .contains(&taken)
        },
    );
    proxy.heal();
    let result = future.result_timeout(Duration::from_secs(20)).unwrap();
    drop(result);
    drop(future);
    // Both runs have ended (each marks it), and the cut-off worker has
    // handled its run's end.
    for worker in [&cut_off, &other] {
        let done = marks.path().join(format!("done-{}", worker.pid()));
        wait_until(Duration::from_secs(20), "a run never ended", || {
            done.exists()
        });
    }
    drop(other);
    wait_served(&executor, &cut_off);
    let objects = server.keys(&format!("proxystore:{namespace}:*"));
    assert_eq!(
        objects,
        Vec::<String>::new(),
        "the result outlived its owner"
    );
}

const CALLER_ENV: &str = "PROXYSTORE_TEST_KILLED_CALLER";

/// Measures its (stored) input after a while; the result comes back by
/// value, so the store holds only inputs.
#[proxied(types = [String])]
fn measure_later(text: String) -> usize {
    std::thread::sleep(Duration::from_millis(50));
    text.len()
}

/// The caller that [`a_killed_callers_inputs_are_swept`] kills: with
/// `PROXYSTORE_TEST_KILLED_CALLER=<url> <queue> <namespace>`, puts 55
/// inputs of 128 KiB in a `RedisConnector` store, submits their jobs,
/// prints `submitted` at once and waits to be killed. Does nothing in a
/// normal test run.
#[test]
fn killed_caller_entry() {
    use proxystore::connectors::RedisConnector;
    let Ok(args) = std::env::var(CALLER_ENV) else {
        return;
    };
    let args: Vec<&str> = args.split(' ').collect();
    let (url, queue, namespace) = (args[0], args[1], args[2]);
    let cluster = ClusterExecutor::builder(url, queue)
        .settings(quick())
        .build()
        .unwrap();
    let store = Store::new(
        namespace,
        RedisConnector::builder(url)
            .namespace(namespace)
            .build()
            .unwrap(),
    )
    .unwrap();
    let executor = StoreExecutor::new(cluster, store);
    let futures: Vec<_> = (0..55)
        .map(|i| {
            executor
                .submit(measure_later::task(format!(
                    "{i}{}",
                    "x".repeat(128 * 1024)
                )))
                .unwrap()
        })
        .collect();
    println!("submitted");
    std::thread::sleep(Duration::from_secs(3600));
    drop(futures);
}

/// Regression: a caller killed with jobs in flight left the inputs of
/// the jobs it had not yet queued (put in the store, waiting for the
/// sender) in the store for ever.
#[test]
fn a_killed_callers_inputs_are_swept() {
    let Some(server) = RedisServer::start("killed_caller_inputs") else {
        return;
    };
    let queue = "killed";
    let namespace = unique("killed").replace('_', "-");
    let _workers = [
        Worker::start(&server.url(), queue),
        Worker::start(&server.url(), queue),
    ];
    let mut caller = support::redis_server::die_with_parent(&mut std::process::Command::new(
        std::env::current_exe().unwrap(),
    ))
    .args([
        "killed_caller_entry",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CALLER_ENV, format!("{} {queue} {namespace}", server.url()))
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mut out = std::io::BufReader::new(caller.stdout.take().unwrap());
    let mut line = String::new();
    while !line.trim().ends_with("submitted") {
        line.clear();
        let n = std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert!(n > 0, "the caller ended before submitting");
    }
    caller.kill().unwrap();
    caller.wait().unwrap();
    let objects = format!("proxystore:{namespace}:*");
    eprintln!("objects at the kill: {}", server.keys(&objects).len());
    // The caller's heartbeat expires (2 s), workers drop its jobs and
    // sweep what it left; generous for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(25);
    while !server.keys(&objects).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        server.keys(&objects),
        Vec::<String>::new(),
        "objects of the killed caller left"
    );
    let jobs = format!("proxystore:queue:{queue}:jobs");
    assert_eq!(server.raw(&["XLEN", &jobs]), ":0\r\n", "jobs left");
}
