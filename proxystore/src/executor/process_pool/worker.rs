//! A pool worker: this executable serving the pool that started it, over
//! the protocol's descriptors. [`worker::init`](crate::worker::init) enters
//! it.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::protocol::{self, read_message, Body, Kind, Outgoing, ReadError, HEADER};

/// The environment variable that puts an executable in worker mode.
pub const WORKER_ENV: &str = "PROXYSTORE_WORKER";
pub(crate) const REQUEST_FD: i32 = 3;
pub(crate) const RESPONSE_FD: i32 = 4;

/// The name of the test that [`test_worker!`](crate::test_worker) defines.
pub const TEST_ENTRY: &str = "proxystore_worker_entry";

static SERVING: AtomicBool = AtomicBool::new(false);

/// Whether this process was started by a pool but has not entered the
/// worker loop: `main` created a pool before calling [`init`](crate::worker::init). Starting a
/// pool then would start workers that do the same, without end.
pub(crate) fn started_as_worker_without_init() -> bool {
    std::env::var_os(WORKER_ENV).is_some() && !SERVING.load(Ordering::Acquire)
}

/// Serves tasks and exits if this process was started by a pool (see
/// [`worker::init`](crate::worker::init)); returns at once otherwise.
pub(crate) fn serve_from_env() {
    if std::env::var_os(WORKER_ENV).is_none() {
        return;
    }
    SERVING.store(true, Ordering::Release);
    // Only this thread runs yet (worker mode is entered first thing in main).
    std::env::remove_var(WORKER_ENV);
    let code = match serve() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("proxystore worker {}: {e}", std::process::id());
            1
        }
    };
    std::process::exit(code);
}

/// Takes a protocol descriptor, made close-on-exec so that no program a
/// task starts inherits it.
fn take_descriptor(fd: i32) -> io::Result<File> {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags == -1 {
        return Err(io::Error::other(format!(
            "{WORKER_ENV} is set but descriptors {REQUEST_FD} and {RESPONSE_FD} are not open; \
             worker mode is only for processes started by a ProcessPool"
        )));
    }
    // SAFETY: the pool passed this descriptor to us and nothing else in
    // this process uses it: the returned File is its one owner.
    unsafe {
        if libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(File::from_raw_fd(fd))
    }
}

/// Jobs received and not started.
struct Inbox {
    state: Mutex<InboxState>,
    ready: Condvar,
    /// Jobs queued, for waiting without the lock.
    queued: AtomicUsize,
    /// How long the main thread recently waited for a job.
    gaps: crate::runtime::spin::Gaps,
    /// Jobs here (queued or running) that the pool asked to stop.
    interrupts: Arc<Mutex<Vec<u64>>>,
    /// The job running now (`NONE`: none).
    running: AtomicU64,
}

/// No job runs.
const NONE: u64 = u64::MAX;

struct InboxState {
    jobs: VecDeque<(u64, Body)>,
    /// The buffer of the last job run, for the next one to be read into:
    /// its pages are already mapped, which for large by-value arguments
    /// costs less than faulting in fresh memory every time.
    spare: Vec<u8>,
    /// The pool closed the pipe (or died): start nothing more.
    closed: bool,
    /// The main thread sleeps on `ready` (otherwise it is busy or polling
    /// `queued`, and a wake-up would be a wasted system call).
    sleeping: bool,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next job, or `None` once the pool has closed the pipe (queued
    /// jobs are then dropped: the pool only closes when it expects nothing
    /// more, so anything left means the pool is gone).
    /// Keeps a finished job's buffer for the next job to be read into.
    fn give_back(&self, mut buffer: Vec<u8>) {
        let mut state = self.lock();
        if buffer.capacity() > state.spare.capacity() {
            buffer.clear();
            state.spare = buffer;
        }
    }

    fn next(&self) -> Option<(u64, Body)> {
        if self.queued.load(Ordering::Acquire) > 0 {
            // No wait, and no clock read: jobs queued back to back.
            self.gaps.record(std::time::Duration::ZERO);
            return self.take();
        }
        let window = self.gaps.window(crate::runtime::spin::spin_window());
        let started = std::time::Instant::now();
        while self.queued.load(Ordering::Acquire) == 0 && started.elapsed() < window {
            std::thread::yield_now();
        }
        let job = self.take();
        self.gaps.record(started.elapsed());
        job
    }

    fn take(&self) -> Option<(u64, Body)> {
        let mut state = self.lock();
        loop {
            if state.closed {
                return None;
            }
            if let Some(job) = state.jobs.pop_front() {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                return Some(job);
            }
            state.sleeping = true;
            state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
            state.sleeping = false;
        }
    }
}

type Output = Mutex<BufWriter<File>>;

fn send(output: &Output, kind: Kind, id: u64, body: &[u8]) -> io::Result<()> {
    let head = protocol::head(kind, id, body.len(), &[]);
    send_parts(output, Outgoing::new(smallvec::smallvec![&head[..], body]))
}

/// Sends a result: its frame, and its section written from where it is.
fn send_result(output: &Output, id: u64, result: &crate::task::TaskOutput) -> io::Result<()> {
    let sections: Vec<(u8, usize)> = result
        .section
        .iter()
        .map(|s| (s.format(), s.bytes().len()))
        .collect();
    let head = protocol::head(Kind::Done, id, result.frame.len(), &sections);
    let mut parts: protocol::Parts<'_> = smallvec::smallvec![&head[..], &result.frame[..]];
    parts.extend(result.section.iter().map(|s| s.bytes()));
    send_parts(output, Outgoing::new(parts))
}

fn send_parts(output: &Output, message: Outgoing<'_>) -> io::Result<()> {
    let mut out = output.lock().unwrap_or_else(|e| e.into_inner());
    protocol::write_all(&mut *out, &message)?;
    // Each answer leaves at once: a later task that ends the process
    // (exit, abort, a crash) must not take finished results with it.
    out.flush()
}

fn serve() -> io::Result<()> {
    let input = take_descriptor(REQUEST_FD)?;
    let output = take_descriptor(RESPONSE_FD)?;
    let progress = super::progress::Reporter::take();
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    let output: Arc<Output> = Arc::new(Mutex::new(BufWriter::with_capacity(
        HEADER + 64 * 1024,
        output,
    )));
    let inbox = Arc::new(Inbox {
        state: Mutex::new(InboxState {
            jobs: VecDeque::new(),
            closed: false,
            sleeping: false,
            spare: Vec::new(),
        }),
        ready: Condvar::new(),
        queued: AtomicUsize::new(0),
        gaps: crate::runtime::spin::Gaps::default(),
        interrupts: Arc::default(),
        running: AtomicU64::new(NONE),
    });
    let reader = {
        let (inbox, output) = (inbox.clone(), output.clone());
        let input = crate::runtime::spin::SpinReader::new(input)?;
        std::thread::Builder::new()
            .name("proxystore-worker-input".into())
            .spawn(move || receive(input, &inbox, &output))?
    };
    while let Some((id, job)) = inbox.next() {
        // The pool's process is gone (the parent-death signal covers Linux;
        // this covers the rest): start nothing more.
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } != parent {
            return Ok(());
        }
        if let Some(progress) = &progress {
            progress.starting(id);
        }
        let Body { bytes, sections } = job;
        inbox.running.store(id, Ordering::Release);
        let asked = inbox.interrupts.clone();
        let interrupted = Arc::new(move || {
            asked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&id)
        });
        let result = crate::task::run_received(&bytes, sections, interrupted);
        inbox.running.store(NONE, Ordering::Release);
        let mut asked = inbox.interrupts.lock().unwrap_or_else(|e| e.into_inner());
        if !asked.is_empty() {
            asked.retain(|asked| *asked != id);
        }
        drop(asked);
        inbox.give_back(bytes);
        match result {
            Ok(result) => send_result(&output, id, &result)?,
            Err(failure) => send(&output, Kind::Failed, id, failure.message().as_bytes())?,
        }
    }
    drop(reader);
    Ok(())
}

/// The input thread: queues jobs, answers revocations at once (even while
/// a task runs), and closes the inbox when the pool closes the pipe.
fn receive(input: crate::runtime::spin::SpinReader<File>, inbox: &Inbox, output: &Output) {
    let mut input = BufReader::with_capacity(64 * 1024, input);
    let mut body = Body::default();
    loop {
        let header = match read_message(&mut input, &mut body) {
            Ok(Some(header)) => header,
            Ok(None) => break,
            Err(e) => {
                if !matches!(e, ReadError::Io(_)) {
                    eprintln!("proxystore worker {}: {e}", std::process::id());
                }
                break;
            }
        };
        match header.kind {
            Kind::Job => {
                let mut state = inbox.lock();
                let spare = std::mem::take(&mut state.spare);
                let job = Body {
                    bytes: std::mem::replace(&mut body.bytes, spare),
                    sections: std::mem::take(&mut body.sections),
                };
                state.jobs.push_back((header.id, job));
                inbox.queued.fetch_add(1, Ordering::AcqRel);
                if state.sleeping {
                    inbox.ready.notify_one();
                }
            }
            Kind::Interrupt => {
                // Kept only for a job queued or running here (a request
                // for one that ended is dropped).
                let known = inbox.lock().jobs.iter().any(|(id, _)| *id == header.id)
                    || inbox.running.load(Ordering::Acquire) == header.id;
                if known {
                    inbox
                        .interrupts
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(header.id);
                }
            }
            Kind::Revoke => {
                let removed = {
                    let mut state = inbox.lock();
                    let pos = state.jobs.iter().position(|(id, _)| *id == header.id);
                    let removed = pos.and_then(|pos| state.jobs.remove(pos));
                    if removed.is_some() {
                        inbox.queued.fetch_sub(1, Ordering::AcqRel);
                    }
                    removed.is_some()
                };
                let kind = if removed {
                    Kind::Revoked
                } else {
                    Kind::TooLate
                };
                if send(output, kind, header.id, &[]).is_err() {
                    break;
                }
            }
            other => {
                eprintln!(
                    "proxystore worker {}: unexpected {other:?} message from the pool",
                    std::process::id()
                );
                break;
            }
        }
    }
    inbox.lock().closed = true;
    inbox.ready.notify_all();
}
