//! Stopping a worker on SIGTERM or SIGINT: it takes no new job, finishes
//! the one it runs within a bound (or hands it back to the queue), leaves
//! the queue and exits 0.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::super::queue::{ms, Keys, Settings, GROUP, HAND_BACK};
use super::super::redis_io::{Server, COMMAND_TIMEOUT};
use super::lease::Heart;
use super::signals::{self, Signals};

/// What the drain thread needs of its worker.
pub(super) struct Drain {
    pub(super) signals: Signals,
    pub(super) bound: Duration,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) heart: Arc<Heart>,
    /// The heartbeat thread, stopped before a job is handed back.
    pub(super) heartbeat: Arc<Mutex<Option<JoinHandle<()>>>>,
    pub(super) server: Server,
    pub(super) keys: Keys,
    pub(super) settings: Settings,
    pub(super) consumer: String,
}

/// Stops the heartbeat thread and waits for it.
pub(super) fn stop_heartbeat(heart: &Heart, thread: &Mutex<Option<JoinHandle<()>>>) {
    *heart.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
    heart.wake.notify_all();
    let thread = thread.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(thread) = thread {
        let _ = thread.join();
    }
}

/// Hands job `entry` back (see [`HAND_BACK`]); whether it was still this
/// consumer's.
pub(super) fn hand_back(
    con: &mut redis::Connection,
    keys: &Keys,
    settings: &Settings,
    consumer: &str,
    entry: &str,
) -> bool {
    HAND_BACK
        .call(&[&keys.jobs()])
        .arg(GROUP)
        .arg(entry)
        .arg(consumer)
        .arg(ms(settings.lease.saturating_mul(2)))
        .invoke::<i64>(con)
        .is_ok_and(|n| n == 1)
}

impl Drain {
    /// The drain thread: waits for a signal, then stops the worker after
    /// its job; past the bound (or on a second signal) hands the job back
    /// and exits the process.
    pub(super) fn run(self) {
        let pid = std::process::id();
        let signal = loop {
            if let Some(signal) = self.signals.wait(None) {
                break signal;
            }
        };
        self.stop.store(true, Ordering::Release);
        let running = self
            .heart
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(run) = running else {
            eprintln!(
                "proxystore cluster worker {pid}: {} received; leaving the queue",
                signals::name(signal)
            );
            return;
        };
        eprintln!(
            "proxystore cluster worker {pid}: {} received; finishing the job it runs (at most \
             {:?}; a second signal hands it back at once), then leaving the queue",
            signals::name(signal),
            self.bound
        );
        let deadline = Instant::now() + self.bound;
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let again = self
                .signals
                .wait(Some((deadline - now).min(Duration::from_millis(50))));
            let current = self
                .heart
                .current
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if !current.is_some_and(|c| Arc::ptr_eq(&c, &run)) {
                // Done: the main loop acknowledges it and leaves.
                return;
            }
            if again.is_some() {
                break;
            }
        }
        // The job outlasts the bound: hand it back, leave, exit.
        stop_heartbeat(&self.heart, &self.heartbeat);
        let handed = self
            .server
            .connect(Some(COMMAND_TIMEOUT))
            .map(|mut con| {
                let handed = hand_back(
                    &mut con,
                    &self.keys,
                    &self.settings,
                    &self.consumer,
                    run.entry(),
                );
                let _ = super::leave(&mut con, &self.keys, &self.consumer);
                handed
            })
            .unwrap_or(false);
        if handed {
            eprintln!(
                "proxystore cluster worker {pid}: the job did not finish in time; handed it back \
                 to the queue (another worker runs it now); exiting"
            );
        } else {
            eprintln!(
                "proxystore cluster worker {pid}: the job did not finish in time and could not \
                 be handed back (another worker runs it once this one's lease runs out); exiting"
            );
        }
        std::process::exit(0);
    }
}
