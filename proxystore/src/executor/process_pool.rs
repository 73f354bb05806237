//! A pool of worker processes running this executable.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};

use super::queue::{Item, JobQueue};
use super::{Completion, Executor};
use crate::error::{Error, Result};
use crate::task::{Job, TaskFailure};
use crate::worker::{REQUEST_FD, RESPONSE_FD, TEST_ENTRY, WORKER_ENV};

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
    queue: JobQueue,
    config: Arc<Config>,
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
        if crate::worker::started_as_worker_without_init() {
            let error = Error::WorkerEntry;
            eprintln!("proxystore: {error}");
            return Err(error);
        }
        let program = match self.program {
            Some(p) => p,
            None => std::env::current_exe()
                .map_err(|e| Error::io("process pool", "finding the current executable", e))?,
        };
        let workers = self.workers.max(1);
        let config = Arc::new(Config {
            program,
            args: self.args,
            max_in_flight: self.max_in_flight,
            current: (0..workers).map(|_| Mutex::new(None)).collect(),
        });
        let queue = JobQueue::new();
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
            let (config, receiver) = (config.clone(), queue.receiver().clone());
            let slot = std::thread::Builder::new()
                .name(format!("proxystore-worker-{index}"))
                .spawn(move || supervise(&config, index, &receiver, first))
                .map_err(|e| Error::io("process pool", "spawning a thread", e))?;
            queue.serve(slot);
        }
        Ok(ProcessPool { queue, config })
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
        self.config
            .current
            .iter()
            .filter_map(|slot| {
                slot.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .map(|w| w.pid)
            })
            .collect()
    }
}

impl Executor for ProcessPool {
    fn submit(&self, job: Job, completion: Completion) {
        // An idle worker with nothing queued before it gets the job straight
        // from this thread: one thread hand-off less.
        let item = if self.queue.is_open() && self.queue.receiver().is_empty() {
            match self.config.dispatch_direct(job, completion) {
                Ok(()) => return,
                Err(back) => back,
            }
        } else {
            (job, completion)
        };
        self.queue.push(item);
    }

    fn shutdown(&self, wait: bool, cancel_pending: bool) {
        self.queue.close(wait, cancel_pending);
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
    /// The live worker of each slot, if any.
    current: Vec<Mutex<Option<Arc<Incarnation>>>>,
}

impl Config {
    fn dispatch_direct(&self, job: Job, completion: Completion) -> Result<(), Item> {
        let mut item = (job, completion);
        for slot in &self.current {
            let worker = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(worker) = worker {
                match worker.send_if_idle(item) {
                    Ok(()) => return Ok(()),
                    Err(back) => item = back,
                }
            }
        }
        Err(item)
    }
}

/// The jobs a worker process holds, and whether it is still alive (a dead
/// one's jobs have been failed; nothing may be added after that).
struct InFlight {
    jobs: HashMap<u64, Completion>,
    alive: bool,
}

/// One worker process and what is shared between the threads feeding it.
struct Incarnation {
    pid: u32,
    /// `None` once closed, which tells the worker to finish and exit.
    requests: Mutex<Option<BufWriter<io::PipeWriter>>>,
    in_flight: Mutex<InFlight>,
    next_id: std::sync::atomic::AtomicU64,
    tokens: Receiver<()>,
    give_back: Sender<()>,
}

impl Incarnation {
    fn in_flight(&self) -> std::sync::MutexGuard<'_, InFlight> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers and writes a job; the caller holds a token. A write error
    /// means the worker died: its reader sees that and fails the job.
    fn send(&self, job: &Job, completion: Completion) -> Result<(), Completion> {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut in_flight = self.in_flight();
            if !in_flight.alive {
                return Err(completion);
            }
            in_flight.jobs.insert(id, completion);
        }
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(requests) = requests.as_mut() {
            let _ = write_request(requests, id, job);
        }
        Ok(())
    }

    fn send_if_idle(&self, (job, completion): Item) -> Result<(), Item> {
        {
            let in_flight = self.in_flight();
            if !in_flight.alive || !in_flight.jobs.is_empty() {
                return Err((job, completion));
            }
        }
        if self.tokens.try_recv().is_err() {
            return Err((job, completion));
        }
        if !completion.start() {
            let _ = self.give_back.try_send(());
            return Ok(());
        }
        self.send(&job, completion).map_err(|completion| {
            let _ = self.give_back.try_send(());
            (job, completion)
        })
    }
}

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
        enlarge_pipe(from);
        enlarge_pipe(to);
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

/// Asks for a 1 MiB pipe buffer (the most an unprivileged process gets by
/// default) instead of 64 KiB: large frames then cross in a few big copies
/// rather than many small ones, each a context switch. Best effort.
fn enlarge_pipe(fd: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: changes the capacity of a pipe this process owns.
    unsafe {
        libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
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
    let mut carry: Option<(Item, u32)> = None;
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
        let (replace, left) = run_worker(config, index, queue, worker, carry.take());
        carry = left;
        if !replace {
            return;
        }
    }
}

/// How many workers in a row may die before a job could be sent to them
/// before the job fails (a program that exits at once as a worker).
const SEND_ATTEMPTS: u32 = 3;

/// Feeds one worker process, starting with `carry` (a job taken from the
/// queue for the worker before it). Returns `true` if it died (to be
/// replaced), `false` once the queue is closed and the worker has finished,
/// and a job it took but could not send.
fn run_worker(
    config: &Config,
    index: usize,
    queue: &Receiver<Item>,
    worker: Worker,
    mut carry: Option<(Item, u32)>,
) -> (bool, Option<(Item, u32)>) {
    let Worker {
        mut child,
        requests,
        responses,
    } = worker;
    let pid = child.id();
    let (give_back, tokens) = crossbeam_channel::bounded::<()>(config.max_in_flight);
    for _ in 0..config.max_in_flight {
        let _ = give_back.send(());
    }
    let this = Arc::new(Incarnation {
        pid,
        requests: Mutex::new(Some(requests)),
        in_flight: Mutex::new(InFlight {
            jobs: HashMap::new(),
            alive: true,
        }),
        next_id: std::sync::atomic::AtomicU64::new(0),
        tokens,
        give_back,
    });
    let (dead_tx, dead_rx) = crossbeam_channel::bounded::<()>(1);
    let reader = {
        let this = this.clone();
        std::thread::Builder::new()
            .name(format!("proxystore-worker-{pid}-reader"))
            .spawn(move || {
                read_responses(responses, &this);
                // From now on nothing is sent to this worker; what it held
                // is failed once it has been reaped.
                this.in_flight().alive = false;
                let _ = dead_tx.send(());
            })
            .expect("spawning a reader thread")
    };
    *config.current[index]
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(this.clone());
    let died = loop {
        select! {
            recv(this.tokens) -> _ => {}
            recv(dead_rx) -> _ => break true,
        }
        let ((job, completion), attempts) = match carry.take() {
            Some(carried) => carried,
            None => select! {
                recv(queue) -> item => match item {
                    Ok(item) => (item, 0),
                    Err(_) => break false,
                },
                recv(dead_rx) -> _ => break true,
            },
        };
        if !completion.start() {
            let _ = this.give_back.try_send(());
            continue;
        }
        if let Err(completion) = this.send(&job, completion) {
            // Died meanwhile: the job goes to the next worker.
            carry = Some(((job, completion), attempts + 1));
            break true;
        }
    };
    *config.current[index]
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = None;
    // Closing the request pipe tells a live worker to finish and exit.
    this.requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let _ = reader.join();
    let status = reap(&mut child, died);
    let lost: Vec<Completion> = {
        let mut in_flight = this.in_flight();
        in_flight.alive = false;
        in_flight.jobs.drain().map(|(_, c)| c).collect()
    };
    if !lost.is_empty() || died {
        tracing::warn!(pid, %status, tasks = lost.len(), "worker process died; replacing it");
    }
    let gave_up = match carry {
        Some(((_, completion), attempts)) if attempts >= SEND_ATTEMPTS => {
            carry = None;
            Some(completion)
        }
        other => {
            carry = other;
            None
        }
    };
    for completion in lost.into_iter().chain(gave_up) {
        let task = completion.name().to_string();
        completion.fail(Error::WorkerDied {
            task,
            pid,
            status: status.clone(),
        });
    }
    (died, carry)
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

fn read_responses(responses: io::PipeReader, worker: &Incarnation) {
    let Ok(responses) = crate::spin::SpinReader::new(responses) else {
        return;
    };
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
        let mut body = crate::codec::zeroed_buffer::<u8>(len);
        if input.read_exact(&mut body).is_err() {
            return;
        }
        let completion = worker.in_flight().jobs.remove(&id);
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
        let _ = worker.give_back.try_send(());
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
