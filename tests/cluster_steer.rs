//! Seeing and steering what runs on a cluster: workers say they are ready
//! (and answer `--help`), drain on SIGTERM, re-runs reach the caller's
//! log, a queue without live workers is warned about, and a queue whose
//! callers and workers are gone leaves no key in Redis.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use proxystore::executor::cluster::{ClusterExecutor, Settings, DRAIN_ENV};
use proxystore::proxied;
use support::cluster::{quick, serve, wait_pending, Cluster, WORKER_ENTRY};
use support::events::{events_with, record_events};
use support::redis_server::RedisServer;

proxystore::test_worker!();

/// Sleeps, then says which process ran it.
#[proxied]
fn pid_after(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

/// Every `tracing` event of this test binary, as `target level message
/// field=value ...`.
/// Waits until `done` holds, failing with `what` after `limit`.
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A worker process (this test binary) whose stderr lines arrive on a
/// channel; killed when dropped.
struct Speaking {
    child: Child,
    lines: Receiver<String>,
}

impl Speaking {
    fn start(url: &str, queue: &str, env: &[(&str, &str)]) -> Speaking {
        let exe = std::env::current_exe().unwrap();
        let mut command = Command::new(exe);
        let mut child = serve(&mut command, url, queue)
            .args(WORKER_ENTRY)
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("worker: {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Speaking { child, lines }
    }

    /// The first stderr line that starts with `prefix`.
    fn line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line {prefix:?} from the worker: {e}"),
            }
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Its exit status, waiting at most `limit`.
    fn exit_status(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the worker did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Speaking {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The heartbeat keys of process `pid` on `queue`.
fn alive_keys_of(server: &RedisServer, queue: &str, pid: u32) -> Vec<String> {
    server
        .keys(&format!("proxystore:queue:{queue}:alive:*"))
        .into_iter()
        .filter(|k| k.contains(&format!("-{pid}-")))
        .collect()
}

#[test]
fn a_worker_says_when_it_is_ready_and_answers_help() {
    let Some(cluster) = Cluster::start("a_worker_says_when_it_is_ready", "ready") else {
        return;
    };
    let worker = Speaking::start(&cluster.server.url(), &cluster.queue, &[]);
    let ready = worker.line("proxystore cluster worker ready");
    let pid = worker.child.id();
    for part in [
        "queue \"ready\"".to_string(),
        format!("pid {pid}"),
        format!("127.0.0.1:{}", cluster.server.port()),
        "pid_after".to_string(),
    ] {
        assert!(ready.contains(&part), "{part:?} not in {ready:?}");
    }

    // `--help` in worker mode: the usage, naming the variables it reads.
    let help = Command::new(env!("CARGO_BIN_EXE_proxystore-parent"))
        .arg("--help")
        .env("PROXYSTORE_CLUSTER", cluster.server.url())
        .output()
        .unwrap();
    assert!(help.status.success(), "{help:?}");
    let text = String::from_utf8_lossy(&help.stdout);
    for var in [
        "PROXYSTORE_CLUSTER",
        "PROXYSTORE_QUEUE",
        "PROXYSTORE_WORKERS",
        "PROXYSTORE_CLUSTER_SECRET_FILE",
        DRAIN_ENV,
    ] {
        assert!(text.contains(var), "{var} not in the usage: {text}");
    }
}

#[test]
fn sigterm_lets_the_running_job_finish_then_the_worker_leaves() {
    let Some(cluster) = Cluster::start("sigterm_lets_the_running_job_finish", "drain") else {
        return;
    };
    let mut worker = Speaking::start(&cluster.server.url(), &cluster.queue, &[]);
    worker.line("proxystore cluster worker ready");
    let pid = worker.child.id();
    let executor = cluster.executor("cluster-drain");
    let mut future = executor.submit(pid_after::task(1500)).unwrap();
    wait_pending(&cluster.server, &cluster.queue);
    worker.signal(libc::SIGTERM);
    worker.line(&format!(
        "proxystore cluster worker {pid}: SIGTERM received"
    ));
    let ran = *future.result_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(ran, pid, "the signalled worker finished its job");
    let status = worker.exit_status(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert_eq!(
        alive_keys_of(&cluster.server, &cluster.queue, pid),
        Vec::<String>::new()
    );
    // It took no new job: this one waits for another worker.
    let mut next = executor.submit(pid_after::task(0)).unwrap();
    let second = Speaking::start(&cluster.server.url(), &cluster.queue, &[]);
    assert_eq!(
        *next.result_timeout(Duration::from_secs(30)).unwrap(),
        second.child.id()
    );
}

#[test]
fn a_job_that_outlasts_the_drain_bound_is_handed_back_and_rerun() {
    record_events();
    let Some(cluster) = Cluster::start("a_job_that_outlasts_the_drain_bound", "handback") else {
        return;
    };
    let url = cluster.server.url();
    let mut first = Speaking::start(&url, &cluster.queue, &[(DRAIN_ENV, "300")]);
    first.line("proxystore cluster worker ready");
    let pid = first.child.id();
    // Its job runs for minutes: do not wait for it when the test ends.
    let caller = ClusterExecutor::builder(&url, &cluster.queue)
        .settings(quick())
        .shutdown_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let store = proxystore::Store::new(
        support::common::unique("cluster-handback"),
        proxystore::connectors::LocalConnector::new(),
    )
    .unwrap();
    let executor = proxystore::StoreExecutor::new(caller, store);
    let future = executor.submit(pid_after::task(120_000)).unwrap();
    let task_id = future.id();
    wait_pending(&cluster.server, &cluster.queue);
    let second = Speaking::start(&url, &cluster.queue, &[]);
    second.line("proxystore cluster worker ready");
    first.signal(libc::SIGTERM);
    first.line(&format!(
        "proxystore cluster worker {pid}: the job did not finish in time; handed it back"
    ));
    // It exits long before its two-minute job could end.
    let status = first.exit_status(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert_eq!(
        alive_keys_of(&cluster.server, &cluster.queue, pid),
        Vec::<String>::new()
    );
    // The other worker took the job: the caller hears of the re-run.
    wait_until(Duration::from_secs(30), "no re-run event", || {
        !events_with(&[
            "proxystore::task",
            "re-run",
            "pid_after",
            &task_id.to_string(),
        ])
        .is_empty()
    });
}

#[test]
fn a_rerun_after_a_worker_died_reaches_the_caller_s_log() {
    record_events();
    let Some(cluster) = Cluster::start("a_rerun_after_a_worker_died", "rerun") else {
        return;
    };
    let mut first = cluster.worker();
    let executor = cluster.executor("cluster-rerun");
    let mut future = executor.submit(pid_after::task(1500)).unwrap();
    let id = future.id();
    wait_pending(&cluster.server, &cluster.queue);
    first.kill();
    let second = cluster.worker();
    assert_eq!(
        *future.result_timeout(Duration::from_secs(30)).unwrap(),
        second.pid()
    );
    let events = events_with(&["proxystore::task", "re-run", &format!("id={id}")]);
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].contains("pid_after"), "{events:?}");
    assert!(events[0].contains("attempt=2"), "{events:?}");
}

#[test]
fn a_queue_without_live_workers_is_warned_about_and_counted() {
    record_events();
    let Some(cluster) = Cluster::start("a_queue_without_live_workers", "lonely") else {
        return;
    };
    let caller = ClusterExecutor::builder(&cluster.server.url(), &cluster.queue)
        .settings(Settings {
            no_worker_warning: Duration::from_millis(500),
            ..quick()
        })
        .build()
        .unwrap();
    assert_eq!(caller.live_workers().unwrap(), 0);
    let store = proxystore::Store::new(
        support::common::unique("cluster-lonely"),
        proxystore::connectors::LocalConnector::new(),
    )
    .unwrap();
    let executor = proxystore::StoreExecutor::new(caller, store);
    let mut future = executor.submit(pid_after::task(0)).unwrap();
    let warning = [
        "proxystore::executor WARN",
        "\"lonely\"",
        "PROXYSTORE_QUEUE=lonely",
        "PROXYSTORE_CLUSTER=",
    ];
    wait_until(Duration::from_secs(30), "no warning", || {
        !events_with(&warning).is_empty()
    });
    let worker = cluster.worker();
    assert_eq!(
        *future.result_timeout(Duration::from_secs(30)).unwrap(),
        worker.pid()
    );
    let counted = ClusterExecutor::builder(&cluster.server.url(), &cluster.queue)
        .settings(quick())
        .build()
        .unwrap();
    assert_eq!(counted.live_workers().unwrap(), 1);
    drop(worker);
    wait_until(
        Duration::from_secs(30),
        "the dead worker still counted",
        || counted.live_workers().unwrap() == 0,
    );
}

#[test]
fn a_queue_whose_callers_and_workers_are_gone_leaves_no_key() {
    let Some(cluster) = Cluster::start("a_queue_whose_callers_and_workers_are_gone", "gone") else {
        return;
    };
    let url = cluster.server.url();
    let pattern = format!("proxystore:queue:{}:*", cluster.queue);
    // Workers stopped and a caller shut down: the last to leave removes
    // the stream at once.
    let mut stopped = Speaking::start(&url, &cluster.queue, &[]);
    stopped.line("proxystore cluster worker ready");
    {
        let executor = cluster.executor("cluster-gone");
        assert_eq!(
            *executor
                .submit(pid_after::task(0))
                .unwrap()
                .result()
                .unwrap(),
            stopped.child.id()
        );
        executor.shutdown(true, false);
    }
    stopped.signal(libc::SIGTERM);
    assert_eq!(stopped.exit_status(Duration::from_secs(20)).code(), Some(0));
    assert_eq!(cluster.server.keys(&pattern), Vec::<String>::new());

    // A worker killed mid-job (its job re-run by another), a caller
    // killed with jobs queued, the last worker killed too: the keys
    // expire.
    let mut killed = cluster.worker();
    let executor = cluster.executor("cluster-gone-2");
    let mut future = executor.submit(pid_after::task(1500)).unwrap();
    wait_pending(&cluster.server, &cluster.queue);
    killed.kill();
    let mut last = cluster.worker();
    assert_eq!(
        *future.result_timeout(Duration::from_secs(30)).unwrap(),
        last.pid()
    );
    executor.shutdown(true, false);
    last.kill();
    let dir = tempfile::tempdir().unwrap();
    support::cluster::kill_a_caller_with_jobs_queued(&cluster.server, &cluster.queue, dir.path());
    wait_until(
        Duration::from_secs(60),
        "keys of the queue are left",
        || cluster.server.keys(&pattern).is_empty(),
    );
}

/// Reads its argument from the store and stores a larger result.
#[proxied(types = [Vec<u8>])]
fn grow(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.extend_from_slice(&[7; 1000]);
    bytes
}

#[test]
fn store_metrics_come_back_from_cluster_workers() {
    use proxystore::store::{Metrics, Operation};
    let Some(cluster) = Cluster::start("store_metrics_from_workers", "metrics") else {
        return;
    };
    let _worker = cluster.worker();
    let dir = tempfile::tempdir().unwrap();
    let store = proxystore::Store::new(
        support::common::unique("cluster-metrics"),
        proxystore::connectors::FileConnector::new(dir.path()).unwrap(),
    )
    .unwrap();
    let executor = proxystore::StoreExecutor::new(
        support::cluster::executor(&cluster.server, &cluster.queue),
        store,
    )
    .gather_worker_metrics(true);
    let mut sum = Metrics::default();
    for i in 0..3u8 {
        let mut future = executor.submit(grow::task(vec![i; 3000])).unwrap();
        let result = future.result_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!((result.len(), result[0]), (4000, i));
        let task = future
            .worker_metrics()
            .expect("the worker sent its figures");
        assert_eq!(task.get(Operation::Get).count, 1, "{task:?}");
        assert_eq!(task.get(Operation::Put).count, 1, "{task:?}");
        assert!(task.get(Operation::Put).bytes >= 4000, "{task:?}");
        sum.merge(&task);
    }
    assert_eq!(executor.worker_metrics(), sum);
}

/// Fails on odd inputs.
#[proxied]
fn even_only(x: u32) -> Result<u32, String> {
    if x % 2 == 1 {
        return Err(format!("{x} is odd"));
    }
    Ok(x)
}

#[test]
fn progress_per_host_counts_workers_running_done_and_failed() {
    record_events();
    let Some(cluster) = Cluster::start("progress_per_host", "per-host") else {
        return;
    };
    let (_a, _b) = (cluster.worker(), cluster.worker());
    let caller = support::cluster::executor(&cluster.server, &cluster.queue);
    let monitor = caller.monitor();
    let executor = proxystore::StoreExecutor::new(
        caller,
        proxystore::Store::new(
            support::common::unique("per-host"),
            proxystore::connectors::LocalConnector::new(),
        )
        .unwrap(),
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let mut slow: Vec<_> = (0..2)
        .map(|_| executor.submit(pid_after::task(1500)).unwrap())
        .collect();
    wait_until(Duration::from_secs(20), "both workers run a job", || {
        let hosts = monitor.hosts().unwrap();
        hosts.len() == 1 && hosts[0].running == 2
    });
    let hosts = monitor.hosts().unwrap();
    assert_eq!(hosts[0].host, host);
    assert_eq!((hosts[0].workers, hosts[0].done), (2, 0), "{hosts:?}");
    for f in &mut slow {
        f.result_timeout(Duration::from_secs(30)).unwrap();
    }
    let results: Vec<_> = (0..4u32)
        .map(|x| executor.submit(even_only::task(x)).unwrap())
        .map(|f| f.result().is_ok())
        .collect();
    assert_eq!(results, [true, false, true, false]);
    let hosts = monitor.hosts().unwrap();
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    let here = &hosts[0];
    assert_eq!((here.done, here.failed, here.running), (4, 2, 0), "{here}");
    assert_eq!(
        here.to_string(),
        format!("{host}: 2 workers, 0 running, 4 done, 2 failed")
    );
    // Each answer is logged with the host it came from.
    let answered = events_with(&["answered by a worker", "even_only", &format!("host={host}")]);
    assert_eq!(answered.len(), 4, "{answered:?}");
}

/// Works for up to 30 s unless asked to stop.
#[proxied]
fn stoppable(max_ms: u64) -> Result<u64, String> {
    let context = proxystore::task::current().expect("inside a task");
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(max_ms) {
        if context.interrupted() {
            return Err(format!(
                "interrupted after {} ms",
                started.elapsed().as_millis()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(max_ms)
}

#[test]
fn a_running_cluster_task_can_be_asked_to_stop() {
    let Some(cluster) = Cluster::start("a_running_task_asked_to_stop", "stop") else {
        return;
    };
    let _worker = cluster.worker();
    let executor = cluster.executor("cluster-interrupt");
    let future = executor.submit(stoppable::task(30_000)).unwrap();
    wait_pending(&cluster.server, &cluster.queue);
    assert!(future.running());
    assert!(future.interrupt(), "the request reached the queue");
    let err = future.result().unwrap_err().to_string();
    assert!(err.contains("interrupted after"), "{err}");
    // The request went with the job.
    wait_until(Duration::from_secs(10), "the mark is removed", || {
        cluster
            .server
            .raw(&["KEYS", "proxystore:queue:stop:interrupt:*"])
            == "*0\r\n"
    });
}
