//! The pool's side of one worker's request pipe: an outbox that callers
//! fill without ever blocking, and a writer thread that finishes what does
//! not fit in the pipe at once.
//!
//! `submit` enqueues a job and tries one non-blocking write. A job that fits
//! in the pipe (all small jobs do) is on its way with no thread hop; the
//! rest of a large one, or anything queued behind it, is written by the
//! connection's writer thread as the worker reads. A stopped or stuck worker
//! therefore never blocks a caller.

use std::collections::{HashSet, VecDeque};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::progress::Starts;
use super::protocol::{head, head_len, Head, Kind, Outgoing, Parts};
use crate::task::Job;

/// A message waiting in the outbox.
enum Message {
    /// A job: the message's head and the job's own prefix, then its
    /// payload and sections, written from where they are.
    Job {
        id: u64,
        head: Vec<u8>,
        job: Arc<Job>,
    },
    /// A revocation or an interruption: a head alone.
    Control(Head),
}

impl Message {
    fn outgoing(&self) -> Outgoing<'_> {
        match self {
            Message::Job { head, job, .. } => {
                let mut parts = Parts::with_capacity(2 + job.sections.len());
                parts.push(&head[..]);
                parts.push(&job.payload[..]);
                parts.extend(job.sections.iter().map(|s| s.bytes()));
                Outgoing::new(parts)
            }
            Message::Control(head) => Outgoing::new(smallvec::smallvec![&head[..]]),
        }
    }

    fn job_id(&self) -> Option<u64> {
        match self {
            Message::Job { id, .. } => Some(*id),
            Message::Control(_) => None,
        }
    }
}

struct Outbox {
    pipe: Option<io::PipeWriter>,
    queue: VecDeque<Message>,
    /// Bytes of the front message already written.
    offset: usize,
    /// Close the pipe once the queue is written.
    closing: bool,
    /// The worker is gone: write nothing more.
    dead: bool,
    /// Jobs that never reached the pipe (it broke first): safe to run
    /// elsewhere.
    undelivered: HashSet<u64>,
}

/// One worker's request pipe.
pub(super) struct Conn {
    pub(super) pid: u32,
    outbox: Mutex<Outbox>,
    /// Wakes the writer thread.
    pending: Condvar,
    /// Which job the worker last started, where the system can tell.
    progress: Option<Starts>,
}

impl Conn {
    pub(super) fn new(
        pid: u32,
        pipe: io::PipeWriter,
        progress: Option<Starts>,
    ) -> io::Result<Arc<Conn>> {
        set_nonblocking(pipe.as_raw_fd())?;
        Ok(Arc::new(Conn {
            pid,
            progress,
            outbox: Mutex::new(Outbox {
                pipe: Some(pipe),
                queue: VecDeque::new(),
                offset: 0,
                closing: false,
                dead: false,
                undelivered: HashSet::new(),
            }),
            pending: Condvar::new(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a job (to be written by [`flush`](Conn::flush)).
    pub(super) fn push_job(&self, id: u64, job: Arc<Job>) {
        let sections: Vec<(u8, usize)> = job
            .sections
            .iter()
            .map(|s| (s.format(), s.bytes().len()))
            .collect();
        // One buffer: the message's head (filled in once the prefix's
        // length is known), then the job's prefix.
        let head_len = head_len(Kind::Job, sections.len());
        let mut bytes = Vec::with_capacity(head_len + 64 + job.name.len() + job.context.len());
        bytes.resize(head_len, 0);
        job.write_prefix(&mut bytes, job.payload.len());
        let prefix = bytes.len() - head_len;
        bytes[..head_len].copy_from_slice(&head(
            Kind::Job,
            id,
            prefix + job.payload.len(),
            &sections,
        ));
        self.push(Message::Job {
            id,
            head: bytes,
            job,
        });
    }

    /// Queues a revocation.
    pub(super) fn push_revoke(&self, id: u64) {
        self.push(Message::Control(head(Kind::Revoke, id, 0, &[])));
    }

    /// Queues a request that job `id` stop.
    pub(super) fn push_interrupt(&self, id: u64) {
        self.push(Message::Control(head(Kind::Interrupt, id, 0, &[])));
    }

    fn push(&self, message: Message) {
        let mut outbox = self.lock();
        if outbox.dead || outbox.pipe.is_none() {
            if let Some(id) = message.job_id() {
                outbox.undelivered.insert(id);
            }
            return;
        }
        outbox.queue.push_back(message);
    }

    /// Closes the pipe once everything queued is written: the worker then
    /// finishes and exits.
    pub(super) fn close(&self) {
        let mut outbox = self.lock();
        outbox.closing = true;
        if outbox.queue.is_empty() {
            outbox.pipe = None;
        }
        self.pending.notify_all();
    }

    /// Stops all writing: the worker is gone. Returns the jobs that never
    /// reached it.
    /// What the dead worker said it last started: `None` if it cannot
    /// tell, `Some(None)` if it started nothing.
    pub(super) fn last_started(&self) -> Option<Option<u64>> {
        self.progress.as_ref().and_then(Starts::started)
    }

    pub(super) fn mark_dead(&self) -> HashSet<u64> {
        let mut outbox = self.lock();
        outbox.dead = true;
        outbox.pipe = None;
        // Everything still queued, a message cut off in the middle
        // included, never reached the worker whole.
        let mut undelivered = std::mem::take(&mut outbox.undelivered);
        undelivered.extend(outbox.queue.drain(..).filter_map(|m| m.job_id()));
        outbox.offset = 0;
        self.pending.notify_all();
        undelivered
    }

    /// Writes what the pipe takes now, without blocking. Wakes the writer
    /// thread if something is left.
    pub(super) fn flush(&self) {
        let mut outbox = self.lock();
        if write_ready(&mut outbox) == Progress::Blocked {
            self.pending.notify_one();
        }
    }

    /// The writer thread: waits for queued bytes the pipe could not take and
    /// writes them as the worker reads, until the connection is closed or
    /// dead.
    pub(super) fn run_writer(&self) {
        let mut outbox = self.lock();
        loop {
            match write_ready(&mut outbox) {
                Progress::Finished => return,
                Progress::Idle => {
                    outbox = self.pending.wait(outbox).unwrap_or_else(|e| e.into_inner());
                }
                Progress::Blocked => {
                    let fd = outbox.pipe.as_ref().map(|p| p.as_raw_fd());
                    drop(outbox);
                    if let Some(fd) = fd {
                        // Bounded, so that closing or death is noticed.
                        wait_writable(fd, Duration::from_millis(100));
                    }
                    outbox = self.lock();
                }
            }
        }
    }
}

#[derive(PartialEq, Eq)]
enum Progress {
    /// Nothing to write now.
    Idle,
    /// The pipe is full.
    Blocked,
    /// Closed or dead: nothing will ever be written again.
    Finished,
}

fn write_ready(outbox: &mut Outbox) -> Progress {
    loop {
        if outbox.dead {
            return Progress::Finished;
        }
        let Some(pipe) = outbox.pipe.as_mut() else {
            return Progress::Finished;
        };
        let Some(front) = outbox.queue.front() else {
            if outbox.closing {
                outbox.pipe = None;
                return Progress::Finished;
            }
            return Progress::Idle;
        };
        let message = front.outgoing();
        let total = message.len();
        let written = pipe.write_vectored(&message.slices(outbox.offset));
        drop(message);
        match written {
            Ok(n) => {
                outbox.offset += n;
                if outbox.offset >= total {
                    outbox.offset = 0;
                    outbox.queue.pop_front();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Blocked,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                // The worker is gone (EPIPE): stop writing. What is still
                // queued is counted as undelivered by `mark_dead`.
                outbox.pipe = None;
                outbox.dead = true;
                return Progress::Finished;
            }
        }
    }
}

fn set_nonblocking(fd: i32) -> io::Result<()> {
    // SAFETY: flag changes on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags == -1 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn wait_writable(fd: i32, timeout: Duration) {
    let mut fds = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a descriptor closed meanwhile only makes
    // poll return early.
    unsafe {
        libc::poll(&mut fds, 1, timeout.as_millis() as i32);
    }
}
