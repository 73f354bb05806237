//! A worker's heartbeat and the lease of the job it runs: renewed while
//! the job is its own, presumed lost when no renewal reaches the server for
//! as long as a reaper waits, known lost when another worker holds it.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use redis::{Connection, Value};

use super::super::queue::{ms, Keys, Settings, GROUP, RENEW};
use super::super::redis_io::{self, is_connection_error, Server, COMMAND_TIMEOUT};

/// What the heartbeat thread shares with the main one.
pub(super) struct Heart {
    /// The job being run, whose lease the heartbeat renews.
    pub(super) current: Mutex<Option<Arc<Run>>>,
    pub(super) stopped: Mutex<bool>,
    pub(super) wake: Condvar,
}

impl Heart {
    pub(super) fn set_current(&self, run: Option<Arc<Run>>) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = run;
    }
}

/// A job being run, as the heartbeat thread and the task see it.
pub(super) struct Run {
    entry: String,
    /// When the lease was last renewed (or the job delivered), by this
    /// host's clock.
    renewed: Mutex<Instant>,
    /// [`HELD`], [`PRESUMED_LOST`] or [`LOST`].
    lease: AtomicU8,
    /// Its caller asked it to stop.
    interrupted: std::sync::atomic::AtomicBool,
}

/// The lease is this worker's, as far as it knows.
const HELD: u8 = 0;
/// Nothing renewed it for as long as a reaper waits: another worker may
/// have taken the job over. Renewals go on, and one that finds the job
/// still pending to this worker holds it again (the server was only out
/// of reach, and nobody took the job).
const PRESUMED_LOST: u8 = 1;
/// Known to be another worker's (or unconfirmable when it mattered): never
/// renewed again.
const LOST: u8 = 2;

impl Run {
    pub(super) fn new(entry: &str) -> Arc<Run> {
        Arc::new(Run {
            entry: entry.to_string(),
            renewed: Mutex::new(Instant::now()),
            lease: AtomicU8::new(HELD),
            interrupted: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The job's entry id.
    pub(super) fn entry(&self) -> &str {
        &self.entry
    }

    pub(super) fn renewed(&self) -> Instant {
        *self.renewed.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Acquire)
    }

    pub(super) fn lease(&self) -> u8 {
        self.lease.load(Ordering::Acquire)
    }

    fn lose(&self, why: &str) {
        if self.lease.swap(LOST, Ordering::AcqRel) != LOST {
            tracing::warn!(entry = %self.entry, "cluster worker: lost the lease of the job it runs ({why})");
        }
    }

    /// The server says the job is still pending to this worker.
    fn hold(&self, renewed: Instant) {
        *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) = renewed;
        if self
            .lease
            .compare_exchange(PRESUMED_LOST, HELD, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            tracing::info!(entry = %self.entry, "cluster worker: the lease of the job it runs is its own again");
        }
    }

    /// Presumes the lease lost once nothing renewed it for as long as a
    /// reaper waits before taking a job over.
    fn presume(&self, settings: &Settings) {
        if self.renewed().elapsed() >= lease_lost_after(settings)
            && self
                .lease
                .compare_exchange(HELD, PRESUMED_LOST, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            tracing::warn!(
                entry = %self.entry,
                "cluster worker: no renewal of the lease of the job it runs reached the server for \
                 longer than the lease; another worker may run it now"
            );
        }
    }
}

/// How long after its last renewal a job may have been taken over: a
/// reaper needs both the lease and the worker's heartbeat to have run out.
pub(super) fn lease_lost_after(settings: &Settings) -> Duration {
    settings.lease.max(settings.heartbeat_ttl)
}

pub(super) fn beat(
    con: &mut Connection,
    keys: &Keys,
    member: &str,
    settings: &Settings,
) -> redis::RedisResult<()> {
    redis::cmd("SET")
        .arg(keys.alive(member))
        .arg(1)
        .arg("PX")
        .arg(ms(settings.heartbeat_ttl))
        .query::<()>(con)?;
    // The queue's stream lives as long as someone renews it.
    super::super::queue::KEEP
        .call(&[&keys.jobs()])
        .arg(ms(settings.idle_stream_ttl()))
        .arg(ms(settings.busy_stream_ttl()))
        .invoke::<i64>(con)
        .map(drop)
}

pub(super) fn heartbeat(
    server: &Server,
    keys: &Keys,
    settings: &Settings,
    consumer: &str,
    heart: &Heart,
) {
    let mut con: Option<Connection> = None;
    loop {
        {
            let stopped = heart.stopped.lock().unwrap_or_else(|e| e.into_inner());
            let (stopped, _) = heart
                .wake
                .wait_timeout_while(stopped, settings.heartbeat, |s| !*s)
                .unwrap_or_else(|e| e.into_inner());
            if *stopped {
                return;
            }
        }
        let run = heart
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|run| run.lease() != LOST);
        if let Some(run) = &run {
            run.presume(settings);
        }
        if con.is_none() {
            con = server.connect(Some(COMMAND_TIMEOUT)).ok();
        }
        let Some(c) = con.as_mut() else { continue };
        // Taken before the commands go: the lease runs from no later than
        // the server's renewal.
        let sent = Instant::now();
        let renewed = beat(c, keys, consumer, settings).and_then(|()| match &run {
            Some(run) if run.lease() != LOST => {
                let held = RENEW
                    .call(&[&keys.jobs()])
                    .arg(GROUP)
                    .arg(&run.entry)
                    .arg(consumer)
                    .invoke::<i64>(c)?;
                if !run.interrupted() {
                    let asked: bool = redis::cmd("EXISTS")
                        .arg(keys.interrupt(&run.entry))
                        .query(c)?;
                    if asked {
                        tracing::info!(entry = %run.entry, "cluster worker: the caller asked the job it runs to stop");
                        run.interrupted.store(true, Ordering::Release);
                    }
                }
                Ok(Some(held))
            }
            _ => Ok(None),
        });
        match (renewed, &run) {
            (Ok(Some(1)), Some(run)) => run.hold(sent),
            (Ok(Some(_)), Some(run)) => run.lose("another worker holds it now"),
            (Ok(_), _) => {}
            (Err(e), _) => {
                tracing::warn!(error = %e, "cluster worker: heartbeat failed");
                if is_connection_error(&e) {
                    con = None;
                }
            }
        }
    }
}

/// The lease of the job a worker runs, as its task sees it (through
/// [`TaskContext::is_current`](crate::task::TaskContext::is_current) and
/// before its result is stored).
pub(super) struct Lease {
    pub(super) run: Arc<Run>,
    pub(super) server: Server,
    pub(super) jobs: String,
    pub(super) consumer: String,
    pub(super) lost_after: Duration,
}

impl Lease {
    /// Whether the server says the job is pending to this consumer; `None`
    /// if it cannot be asked.
    fn ask(&self) -> Option<bool> {
        let mut con = self.server.connect(Some(self.lost_after)).ok()?;
        let pending: Value = redis::cmd("XPENDING")
            .arg(&self.jobs)
            .arg(GROUP)
            .arg(&self.run.entry)
            .arg(&self.run.entry)
            .arg(1)
            .query(&mut con)
            .ok()?;
        let owner = redis_io::array(&pending)
            .first()
            .and_then(|row| redis_io::array(row).get(1).and_then(redis_io::text));
        Some(owner == Some(self.consumer.as_str()))
    }
}

impl crate::task::RunLease for Lease {
    fn is_current(&self) -> bool {
        self.run.lease() == HELD
    }

    fn interrupted(&self) -> bool {
        self.run.interrupted()
    }

    /// Asks the server; while it cannot be reached, asks again until the
    /// lease may have run out. Unconfirmed is not ours: a run that writes
    /// its result without knowing could bring back an object that the
    /// other run's caller already evicted.
    fn confirm(&self) -> bool {
        loop {
            if self.run.lease() == LOST {
                return false;
            }
            match self.ask() {
                Some(true) => {
                    self.run.hold(Instant::now());
                    return true;
                }
                Some(false) => {
                    self.run.lose("another worker holds it now");
                    return false;
                }
                None if self.run.renewed().elapsed() >= self.lost_after => {
                    self.run.lose(
                        "the server could not be reached to confirm it before storing a result",
                    );
                    return false;
                }
                None => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}
