//! One worker slot's life: start a worker, read what it answers, notice
//! its end, fail what it held, start the next one, until the pool shuts
//! down.
//!
//! ```text
//!   spawn ──> attach ──> read answers ──> gone ──> reap ──> fail lost jobs
//!     ^                                                          │
//!     └──────────── while the pool accepts jobs or has some ─────┘
//! ```
//!
//! Each slot has one thread for its whole life. It is the thread that
//! starts the slot's workers, so a worker's parent-death signal fires when
//! the pool's process ends, not when some caller's thread does.

use std::io::{self, BufReader};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::conn::Conn;
use super::protocol::{self, ReadError};
use super::sched::Dispatch;
use super::spawn::{self, Spawned};
use crate::error::Error;
use crate::runtime::exit;

/// How long a worker may go silent in the middle of a message before it is
/// taken for broken: it writes each message at once, so a body that stops
/// arriving was announced longer than it is (or the worker was stopped
/// mid-write).
const MESSAGE_STALL: Duration = Duration::from_secs(10);

/// A worker that dies this soon after it started, without answering
/// anything, makes its slot wait before starting the next one.
const QUICK_DEATH: Duration = Duration::from_secs(1);

/// Runs slot `index`. `started` hears whether the first worker could be
/// started (and then the slot ends if it could not).
pub(super) fn run(dispatch: Arc<Dispatch>, index: usize, started: Sender<io::Result<()>>) {
    dispatch.reading(index);
    let mut started = Some(started);
    let mut quick_deaths = 0u32;
    loop {
        let born = Instant::now();
        let (child, conn, responses) = match start(&dispatch) {
            Ok(worker) => worker,
            Err(e) => {
                if let Some(started) = started.take() {
                    let _ = started.send(Err(e));
                    break;
                }
                let program = dispatch.settings.program.path.display().to_string();
                dispatch.fail_next(Error::io("process pool", format!("starting {program}"), e));
                std::thread::sleep(Duration::from_millis(100));
                if !dispatch.wants_worker() {
                    break;
                }
                continue;
            }
        };
        let (mut child, writer) = child;
        dispatch.attach(index, conn.clone());
        if let Some(started) = started.take() {
            let _ = started.send(Ok(()));
        }
        let (answered, violation) = read_answers(&dispatch, index, conn.pid, responses);
        if violation.is_some() {
            // Not reaped yet: the pid is still this worker's.
            let _ = child.kill();
        }
        // Dead before its jobs are sorted: until then it could still start
        // one that its progress page does not show yet (a kill is not
        // instant, and a worker that closed its answers may live on).
        let mut status = reap(&mut child);
        let (lost, killed) = dispatch.worker_gone(index);
        let _ = writer.join();
        if let Some(violation) = violation {
            status = format!("it broke the worker protocol ({violation}) and was killed: {status}");
        } else if killed {
            status = format!(
                "still running {:?} after shutdown began, killed: {status}",
                dispatch.settings.shutdown_timeout
            );
        }
        if !lost.is_empty() {
            tracing::warn!(pid = conn.pid, %status, tasks = lost.len(), "worker process died");
        }
        for held in lost {
            held.fail(conn.pid, &status);
        }
        if !dispatch.wants_worker() {
            break;
        }
        if !answered && born.elapsed() < QUICK_DEATH {
            // A program that exits at once as a worker: do not spin.
            quick_deaths += 1;
            std::thread::sleep(Duration::from_millis(20 << quick_deaths.min(6)));
        } else {
            quick_deaths = 0;
        }
    }
    dispatch.finish_slot(index);
}

type Started = (
    (Child, std::thread::JoinHandle<()>),
    Arc<Conn>,
    io::PipeReader,
);

/// Starts a worker, its connection and its writer thread.
fn start(dispatch: &Dispatch) -> io::Result<Started> {
    let Spawned {
        mut child,
        requests,
        responses,
        progress,
    } = spawn::spawn(&dispatch.settings.program)?;
    let pid = child.id();
    let writer = Conn::new(pid, requests, progress).and_then(|conn| {
        let writing = conn.clone();
        std::thread::Builder::new()
            .name(format!("proxystore-worker-{pid}-writer"))
            .spawn(move || writing.run_writer())
            .map(|writer| (writer, conn))
    });
    match writer {
        Ok((writer, conn)) => Ok(((child, writer), conn, responses)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Reads the worker's answers until it ends. Returns whether it answered
/// anything, and the protocol violation that ended it, if one did.
fn read_answers(
    dispatch: &Dispatch,
    index: usize,
    pid: u32,
    responses: io::PipeReader,
) -> (bool, Option<String>) {
    let Ok(responses) = crate::runtime::spin::SpinReader::new(responses) else {
        return (false, None);
    };
    // A task may fork (without exec) and leave the copy running: the pipe
    // then stays open after the worker dies. Its exit ends the answers.
    let responses = responses.until_exit_of(pid).stall_limit(MESSAGE_STALL);
    let mut input = BufReader::with_capacity(64 * 1024, responses);
    let mut body = protocol::Body::default();
    let mut answered = false;
    loop {
        match protocol::read_message(&mut input, &mut body) {
            Ok(Some(header)) => {
                answered = true;
                if let Err(violation) = dispatch.on_message(index, header, &mut body) {
                    return (answered, Some(violation));
                }
            }
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::TimedOut => {
                return (
                    answered,
                    Some(format!("it went silent in the middle of a message: {e}")),
                )
            }
            Ok(None) | Err(ReadError::Io(_)) | Err(ReadError::Truncated(_)) => {
                return (answered, None)
            }
            Err(ReadError::Malformed(violation)) => return (answered, Some(violation)),
        }
    }
}

/// Waits for the worker to exit (killing it if it lingers: its answers
/// have ended, so it has nothing more to give) and describes how it ended.
fn reap(child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return exit::describe(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Ok(None) => {
                let _ = child.kill();
                return match child.wait() {
                    Ok(status) => format!("unresponsive, killed: {}", exit::describe(status)),
                    Err(e) => format!("unresponsive, kill failed: {e}"),
                };
            }
            Err(e) => return format!("unknown: {e}"),
        }
    }
}
