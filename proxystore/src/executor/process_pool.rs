//! A pool of worker processes running this executable.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};

use super::{Completion, Executor};
use crate::error::{Error, Result};
use crate::task::{Job, TaskFailure};
use crate::worker::{REQUEST_FD, RESPONSE_FD, TEST_ENTRY, WORKER_ENV};

type Item = (Job, Completion);

/// Runs jobs on worker processes: this executable, started again in worker
/// mode (see [`worker`](crate::worker); `main` must call
/// [`worker::init`](crate::worker::init) first).
///
/// A task that panics fails its own future; a worker that dies (killed,
/// aborted) fails the futures of the tasks it held, is replaced, and the
/// pool goes on.
///
/// ```no_run
/// use proxystore::executor::ProcessPool;
///
/// fn main() -> proxystore::Result<()> {
///     proxystore::worker::init();
///     let pool = ProcessPool::new(2)?;
///     // wrap it in a StoreExecutor and submit tasks
///     Ok(())
/// }
/// ```
pub struct ProcessPool {
    sender: Mutex<Option<Sender<Item>>>,
    receiver: Receiver<Item>,
    slots: Mutex<Vec<JoinHandle<()>>>,
    pids: Arc<Mutex<Vec<u32>>>,
}

/// Options of a [`ProcessPool`].
#[must_use]
#[derive(Debug, Clone)]
pub struct ProcessPoolBuilder {
    workers: usize,
    program: Option<PathBuf>,
    args: Vec<OsString>,
    max_in_flight: usize,
}

impl ProcessPoolBuilder {
    /// The executable to start (default: this one). It must call
    /// [`worker::init`](crate::worker::init) and register the same tasks.
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// Arguments for the workers (default: none).
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Start workers the way an integration-test binary under the default
    /// harness needs: run only the entry test defined by
    /// [`test_worker!`](crate::test_worker).
    pub fn test_harness(self) -> Self {
        self.args([
            TEST_ENTRY,
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
    }

    /// How many jobs each worker may have queued at once (default 16).
    /// More hides the round trip to the worker; fewer balances long tasks
    /// better between workers.
    pub fn max_in_flight(mut self, jobs: usize) -> Self {
        self.max_in_flight = jobs.max(1);
        self
    }

    /// Starts the workers.
    pub fn build(self) -> Result<ProcessPool> {
        let program = match self.program {
            Some(p) => p,
            None => std::env::current_exe()
                .map_err(|e| Error::io("process pool", "finding the current executable", e))?,
        };
        let workers = self.workers.max(1);
        let pids = Arc::new(Mutex::new(vec![0; workers]));
        let config = Arc::new(Config {
            program,
            args: self.args,
            max_in_flight: self.max_in_flight,
            pids: pids.clone(),
        });
        let (sender, receiver) = crossbeam_channel::unbounded::<Item>();
        let mut slots = Vec::new();
        for index in 0..workers {
            // The first worker is started here so a pool that cannot start
            // workers fails at once, not at the first task.
            let first = Worker::spawn(&config).map_err(|e| {
                Error::io(
                    "process pool",
                    format!("starting {}", config.program.display()),
                    e,
                )
            })?;
            let (config, receiver) = (config.clone(), receiver.clone());
            let slot = std::thread::Builder::new()
                .name(format!("proxystore-worker-{index}"))
                .spawn(move || supervise(&config, index, &receiver, first))
                .map_err(|e| Error::io("process pool", "spawning a thread", e))?;
            slots.push(slot);
        }
        Ok(ProcessPool {
            sender: Mutex::new(Some(sender)),
            receiver,
            slots: Mutex::new(slots),
            pids,
        })
    }
}

impl ProcessPool {
    /// A pool of `workers` processes with default options.
    pub fn new(workers: usize) -> Result<Self> {
        ProcessPool::builder(workers).build()
    }

    /// Options for a pool of `workers` processes.
    pub fn builder(workers: usize) -> ProcessPoolBuilder {
        ProcessPoolBuilder {
            workers,
            program: None,
            args: Vec::new(),
            max_in_flight: 16,
        }
    }

    /// Process ids of the current workers (a replaced worker's new id
    /// appears once it has started).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.pids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .filter(|p| *p != 0)
            .collect()
    }
}

impl Executor for ProcessPool {
    fn submit(&self, job: Job, completion: Completion) {
        let sender = self
            .sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match sender {
            Some(sender) => {
                if let Err(e) = sender.send((job, completion)) {
                    let (job, completion) = e.into_inner();
                    completion.fail(Error::ShutDown {
                        task: job.name().into(),
                    });
                }
            }
            None => completion.fail(Error::ShutDown {
                task: job.name().into(),
            }),
        }
    }

    fn shutdown(&self, wait: bool, cancel_pending: bool) {
        self.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
        if cancel_pending {
            while let Ok((_, completion)) = self.receiver.try_recv() {
                completion.cancel();
            }
        }
        if wait {
            let slots = std::mem::take(&mut *self.slots.lock().unwrap_or_else(|e| e.into_inner()));
            for slot in slots {
                let _ = slot.join();
            }
        }
    }
}

impl Drop for ProcessPool {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}

impl std::fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessPool").finish_non_exhaustive()
    }
}

struct Config {
    program: PathBuf,
    args: Vec<OsString>,
    max_in_flight: usize,
    pids: Arc<Mutex<Vec<u32>>>,
}

type InFlight = Arc<Mutex<HashMap<u64, Completion>>>;

struct Worker {
    child: Child,
    requests: BufWriter<io::PipeWriter>,
    responses: io::PipeReader,
}

impl Worker {
    fn spawn(config: &Config) -> io::Result<Worker> {
        let (request_reader, request_writer) = io::pipe()?;
        let (response_reader, response_writer) = io::pipe()?;
        let (from, to) = (request_reader.as_raw_fd(), response_writer.as_raw_fd());
        let mut command = Command::new(&config.program);
        command
            .args(&config.args)
            .env(WORKER_ENV, "1")
            .stdin(Stdio::null());
        // SAFETY: only async-signal-safe calls (fcntl, dup2, close) between
        // fork and exec.
        unsafe {
            command.pre_exec(move || place_descriptors(from, to));
        }
        let child = command.spawn()?;
        // Our copies of the child's ends must go, so that its death is seen
        // as end-of-file.
        drop((request_reader, response_writer));
        Ok(Worker {
            child,
            requests: BufWriter::with_capacity(64 * 1024, request_writer),
            responses: response_reader,
        })
    }
}

/// Puts the request pipe on descriptor 3 and the response pipe on 4, both
/// inherited across exec.
fn place_descriptors(from: i32, to: i32) -> io::Result<()> {
    let check = |r: i32| {
        if r == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    };
    // SAFETY: plain descriptor calls on descriptors this process owns.
    unsafe {
        // Move both out of the way first: either may already be 3 or 4.
        let from_high = check(libc::fcntl(from, libc::F_DUPFD_CLOEXEC, 10))?;
        let to_high = check(libc::fcntl(to, libc::F_DUPFD_CLOEXEC, 10))?;
        check(libc::dup2(from_high, REQUEST_FD))?;
        check(libc::dup2(to_high, RESPONSE_FD))?;
        libc::close(from_high);
        libc::close(to_high);
    }
    Ok(())
}

/// Runs one worker slot: feeds its process jobs, and replaces it when it
/// dies, until the pool's queue is closed.
fn supervise(config: &Config, index: usize, queue: &Receiver<Item>, first: Worker) {
    let mut next = Some(first);
    loop {
        let worker = match next.take().map(Ok).unwrap_or_else(|| Worker::spawn(config)) {
            Ok(worker) => worker,
            Err(e) => {
                // Cannot start a worker: fail one job with the reason rather
                // than leave it waiting, and try again shortly.
                match queue.recv() {
                    Ok((_, completion)) => completion.fail(Error::io(
                        "process pool",
                        format!("starting {}", config.program.display()),
                        e,
                    )),
                    Err(_) => return,
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        config.pids.lock().unwrap_or_else(|e| e.into_inner())[index] = worker.child.id();
        let replace = run_worker(config, queue, worker);
        config.pids.lock().unwrap_or_else(|e| e.into_inner())[index] = 0;
        if !replace {
            return;
        }
    }
}

/// Feeds one worker process. Returns `true` if it died (to be replaced),
/// `false` once the queue is closed and the worker has finished.
fn run_worker(config: &Config, queue: &Receiver<Item>, worker: Worker) -> bool {
    let Worker {
        mut child,
        mut requests,
        responses,
    } = worker;
    let pid = child.id();
    let in_flight: InFlight = Arc::default();
    let (token_tx, token_rx) = crossbeam_channel::bounded::<()>(config.max_in_flight);
    for _ in 0..config.max_in_flight {
        let _ = token_tx.send(());
    }
    let (dead_tx, dead_rx) = crossbeam_channel::bounded::<()>(1);
    let give_back = token_tx.clone();
    let reader = {
        let in_flight = in_flight.clone();
        std::thread::Builder::new()
            .name(format!("proxystore-worker-{pid}-reader"))
            .spawn(move || {
                read_responses(responses, &in_flight, &token_tx);
                let _ = dead_tx.send(());
            })
            .expect("spawning a reader thread")
    };
    let mut next_id = 0u64;
    let died = loop {
        select! {
            recv(token_rx) -> _ => {}
            recv(dead_rx) -> _ => break true,
        }
        let (job, completion) = select! {
            recv(queue) -> item => match item {
                Ok(item) => item,
                Err(_) => break false,
            },
            recv(dead_rx) -> _ => break true,
        };
        if !completion.start() {
            let _ = give_back.try_send(());
            continue;
        }
        next_id += 1;
        in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(next_id, completion);
        if write_request(&mut requests, next_id, &job).is_err() {
            break true;
        }
    };
    // Closing the request pipe tells a live worker to finish and exit.
    drop(requests);
    let _ = reader.join();
    let status = reap(&mut child, died);
    let lost: Vec<Completion> = in_flight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain()
        .map(|(_, c)| c)
        .collect();
    if !lost.is_empty() || died {
        tracing::warn!(pid, %status, tasks = lost.len(), "worker process died; replacing it");
    }
    for completion in lost {
        let task = completion.name().to_string();
        completion.fail(Error::WorkerDied {
            task,
            pid,
            status: status.clone(),
        });
    }
    died
}

fn write_request(out: &mut BufWriter<io::PipeWriter>, id: u64, job: &Job) -> io::Result<()> {
    let frames: [&[u8]; 4] = [
        job.name.as_bytes(),
        &job.context,
        job.result_key.as_uuid().as_bytes(),
        &job.payload,
    ];
    let len: usize = frames.iter().map(|f| 9 + f.len()).sum();
    out.write_all(&id.to_le_bytes())?;
    out.write_all(&(len as u64).to_le_bytes())?;
    for frame in frames {
        out.write_all(&[0])?;
        out.write_all(&(frame.len() as u64).to_le_bytes())?;
        out.write_all(frame)?;
    }
    out.flush()
}

fn read_responses(responses: io::PipeReader, in_flight: &InFlight, tokens: &Sender<()>) {
    let mut input = BufReader::with_capacity(64 * 1024, responses);
    loop {
        let mut header = [0u8; 17];
        if input.read_exact(&mut header).is_err() {
            return;
        }
        let id = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
        let status = header[8];
        let Ok(len) = usize::try_from(u64::from_le_bytes(header[9..].try_into().expect("8 bytes")))
        else {
            return;
        };
        let mut body = vec![0u8; len];
        if input.read_exact(&mut body).is_err() {
            return;
        }
        let completion = in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some(completion) = completion {
            let result = if status == 0 {
                Ok(body)
            } else {
                Err(TaskFailure::new(
                    String::from_utf8_lossy(&body).into_owned(),
                ))
            };
            completion.complete(result);
        }
        let _ = tokens.try_send(());
    }
}

/// Waits for the worker to exit (killing it if it lingers) and describes
/// how it ended.
fn reap(child: &mut Child, died: bool) -> String {
    let deadline = Instant::now()
        + if died {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(10)
        };
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.to_string(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                return match child.wait() {
                    Ok(status) => format!("unresponsive, killed: {status}"),
                    Err(e) => format!("unresponsive, kill failed: {e}"),
                };
            }
            Err(e) => return format!("unknown: {e}"),
        }
    }
}
