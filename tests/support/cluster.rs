//! Helpers of the multi-host executor's tests: timings short enough for
//! tests, and worker processes (the test binary itself in worker mode).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proxystore::executor::cluster::{ClusterExecutor, Settings, CLUSTER_ENV, QUEUE_ENV};

use super::redis_server::{die_with_parent, RedisServer};

/// Timings short enough for tests (a dead worker is found within about
/// a second).
pub fn quick() -> Settings {
    Settings {
        heartbeat: Duration::from_millis(200),
        heartbeat_ttl: Duration::from_millis(800),
        lease: Duration::from_millis(800),
        reap_every: Duration::from_millis(200),
        caller_ttl: Duration::from_secs(2),
        ..Settings::default()
    }
}

/// The arguments that make a test binary run only its worker entry test
/// (see `proxystore::test_worker!`).
pub const WORKER_ENTRY: [&str; 4] = [
    "proxystore_worker_entry",
    "--exact",
    "--nocapture",
    "--test-threads=1",
];

/// Makes `command` a worker of `queue` at `url`, with the [`quick`]
/// timings, that dies with this process.
pub fn serve<'a>(command: &'a mut Command, url: &str, queue: &str) -> &'a mut Command {
    let ms = |d: Duration| d.as_millis().to_string();
    let s = quick();
    die_with_parent(command)
        .env(CLUSTER_ENV, url)
        .env(QUEUE_ENV, queue)
        .env("PROXYSTORE_HEARTBEAT_MS", ms(s.heartbeat))
        .env("PROXYSTORE_HEARTBEAT_TTL_MS", ms(s.heartbeat_ttl))
        .env("PROXYSTORE_LEASE_MS", ms(s.lease))
        .env("PROXYSTORE_REAP_MS", ms(s.reap_every))
        .stdout(Stdio::null())
}

/// A worker process, killed when dropped.
pub struct Worker(pub Child);

impl Worker {
    /// This test binary, serving `queue`.
    pub fn start(url: &str, queue: &str) -> Worker {
        let exe = std::env::current_exe().unwrap();
        Worker::start_program(&exe, &WORKER_ENTRY, url, queue)
    }

    /// `program args`, serving `queue`.
    pub fn start_program(program: &Path, args: &[&str], url: &str, queue: &str) -> Worker {
        Worker::start_with(program, args, url, queue, &[])
    }

    /// `program args` with more environment variables, serving `queue`.
    pub fn start_with(
        program: &Path,
        args: &[&str],
        url: &str,
        queue: &str,
        env: &[(&str, &str)],
    ) -> Worker {
        let mut command = Command::new(program);
        let child = serve(&mut command, url, queue)
            .args(args)
            .envs(env.iter().copied())
            .spawn()
            .expect("worker starts");
        Worker(child)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(self.0.id() as i32, sig) };
    }

    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // A stopped worker is resumed first, so that it can be reaped.
        self.signal(libc::SIGCONT);
        self.kill();
    }
}

/// A caller of `queue` with the [`quick`] timings.
pub fn executor(server: &RedisServer, queue: &str) -> ClusterExecutor {
    ClusterExecutor::builder(&server.url(), queue)
        .settings(quick())
        .build()
        .unwrap()
}

/// `XLEN` of the queue's stream, as Redis answers it (`:0\r\n`).
pub fn xlen(server: &RedisServer, queue: &str) -> String {
    server.raw(&["XLEN", &format!("proxystore:queue:{queue}:jobs")])
}

/// Waits until a worker holds a job of `queue`.
pub fn wait_pending(server: &RedisServer, queue: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let jobs = format!("proxystore:queue:{queue}:jobs");
    while !server
        .raw(&["XPENDING", &jobs, "workers"])
        .starts_with("*4\r\n:1")
    {
        assert!(Instant::now() < deadline, "the job was never taken");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The objects in a `FileConnector`'s directory (not its marker).
pub fn objects(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != ".proxystore")
                .collect()
        })
        .unwrap_or_default()
}

/// Runs the `proxystore-parent cluster-submit` caller, which stores three
/// inputs in a `FileConnector` at `dir/objects` and queues three jobs, and
/// SIGKILLs it once they are queued.
pub fn kill_a_caller_with_jobs_queued(server: &RedisServer, queue: &str, dir: &Path) {
    let mut caller = Command::new(env!("CARGO_BIN_EXE_proxystore-parent"))
        .args([
            "cluster-submit",
            &server.url(),
            queue,
            dir.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(super::common::first_line(&mut caller), "submitted");
    caller.kill().unwrap();
    caller.wait().unwrap();
}

/// A queue on a server of its own: what most cluster tests start with.
pub struct Cluster {
    pub server: RedisServer,
    pub queue: String,
}

impl Cluster {
    /// A fresh server for `test` (`None`, after saying why, when
    /// `redis-server` is missing and not required) and `queue`.
    pub fn start(test: &str, queue: &str) -> Option<Cluster> {
        let server = RedisServer::start(test)?;
        Some(Cluster {
            server,
            queue: queue.to_string(),
        })
    }

    /// A worker process of the queue (this test binary), killed when
    /// dropped.
    pub fn worker(&self) -> Worker {
        Worker::start(&self.server.url(), &self.queue)
    }

    /// A caller of the queue with the [`quick`] timings, wrapped with a
    /// store of its own in this process's memory.
    pub fn executor(&self, store: &str) -> proxystore::StoreExecutor {
        let store = proxystore::Store::new(
            super::common::unique(store),
            proxystore::connectors::LocalConnector::new(),
        )
        .unwrap();
        proxystore::StoreExecutor::new(executor(&self.server, &self.queue), store)
    }

    /// `XLEN` of the queue's stream.
    pub fn xlen(&self) -> String {
        xlen(&self.server, &self.queue)
    }
}
