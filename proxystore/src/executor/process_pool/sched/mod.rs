//! Which worker runs what.
//!
//! Jobs wait in one queue until a worker has room. A job goes to the worker
//! holding the fewest (idle workers first), so with `n` workers and at least
//! `n` jobs, `n` run at once. Workers may hold a few jobs more than they run
//! (up to `max_in_flight`): that hides the round trip for short tasks. When
//! a worker runs dry while another still holds jobs it has not started, the
//! pool *revokes* one of those (the worker drops it unless it has started)
//! and gives it to the idle worker: a short task never waits behind a long
//! one while a worker is idle. Cancelling a task (or shutting down with
//! `cancel_futures`) revokes it the same way, so it reaches every task that
//! has not started, wherever it waits.
//!
//! All of this runs under one lock; what must not (writing to pipes,
//! completing tasks, which evicts their inputs) is collected as [`Effects`]
//! and done after the lock is released.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::conn::Conn;
use super::protocol::{Body, Header, Kind};
use super::spawn::Program;
use crate::error::Error;
use crate::executor::Completion;
use crate::task::{Job, Section, TaskFailure, TaskOutput};

mod ending;

/// How long [`Dispatch::cancel`] waits for a worker to answer a revocation
/// before it counts the task as started.
const CANCEL_WAIT: Duration = Duration::from_secs(2);

/// How many times a job is sent again after its worker died before the job
/// could reach it.
pub(super) const SEND_ATTEMPTS: u32 = 3;

/// The pool's fixed settings.
#[derive(Debug)]
pub(super) struct Settings {
    pub(super) program: Program,
    pub(super) max_in_flight: usize,
    pub(super) shutdown_timeout: Duration,
}

/// Why a job was revoked.
enum Revoke {
    /// To give it to an idle worker.
    Steal,
    /// Callers cancel it and wait for the answer.
    Cancel(Vec<Sender<()>>),
    /// Shutdown with `cancel_futures`.
    Shutdown,
}

struct Queued {
    id: u64,
    job: Arc<Job>,
    completion: Completion,
    attempts: u32,
}

/// A job a worker holds (queued in the worker or running).
pub(super) struct Held {
    job: Arc<Job>,
    completion: Completion,
    revoke: Option<Revoke>,
    attempts: u32,
    /// When it was sent: a worker starts its jobs in this order (ids do
    /// not tell, a job taken back goes out again later).
    sent: u64,
    /// The worker said it had started it: never worth taking back.
    started: bool,
}

#[derive(Default)]
struct Slot {
    conn: Option<Arc<Conn>>,
    held: HashMap<u64, Held>,
    /// The slot's thread has ended.
    finished: bool,
    /// Its worker was killed because shutdown took too long.
    killed: bool,
    /// Its request pipe is closed (shutdown): it takes no more jobs.
    closed: bool,
}

impl Slot {
    /// Whether it can take jobs.
    fn open(&self) -> bool {
        self.conn.is_some() && !self.closed
    }

    /// Jobs held and not being taken back.
    fn active(&self) -> usize {
        self.held.values().filter(|h| h.revoke.is_none()).count()
    }

    /// The job to take back from this worker: the last one sent of those
    /// not being taken back already and not known to have started.
    fn to_steal(&self) -> Option<u64> {
        self.held
            .iter()
            .filter(|(_, h)| h.revoke.is_none() && !h.started)
            .max_by_key(|(_, h)| h.sent)
            .map(|(id, _)| *id)
    }
}

struct State {
    queue: VecDeque<Queued>,
    slots: Vec<Slot>,
    accepting: bool,
    next_id: u64,
    /// Jobs sent to workers so far.
    sent: u64,
    /// Steals sent and not yet answered.
    stealing: usize,
    /// Shutdown timed out: workers are being killed, nothing runs any more.
    killing: bool,
    /// Shutdown with `cancel_futures`: a job that comes back unstarted
    /// (a steal answered late, a worker that died before it got the job)
    /// is cancelled rather than run.
    cancel_pending: bool,
    shutdown_at: Option<Instant>,
}

enum Outcome {
    Answer(Result<TaskOutput, TaskFailure>),
    Fail(Error),
    Cancel,
}

/// What to do once the lock is released, in this order: write to workers,
/// complete tasks, wake cancelling callers.
#[derive(Default)]
#[must_use]
pub(super) struct Effects {
    flush: Vec<Arc<Conn>>,
    finish: Vec<(Completion, Outcome)>,
    wake: Vec<Sender<()>>,
}

impl Effects {
    fn flush(&mut self, conn: &Arc<Conn>) {
        if !self.flush.iter().any(|c| Arc::ptr_eq(c, conn)) {
            self.flush.push(conn.clone());
        }
    }

    pub(super) fn run(self) {
        for conn in self.flush {
            conn.flush();
        }
        for (completion, outcome) in self.finish {
            match outcome {
                Outcome::Answer(result) => completion.complete_output(result),
                Outcome::Fail(error) => completion.fail(error),
                Outcome::Cancel => completion.cancel(),
            }
        }
        for waiter in self.wake {
            let _ = waiter.send(());
        }
    }
}

thread_local! {
    /// On a slot's thread: the dispatch (its address) and the slot index
    /// whose worker's answers this thread reads.
    static READING: std::cell::Cell<Option<(usize, usize)>> = const { std::cell::Cell::new(None) };
}

/// The scheduler shared by the pool's handle and its slot threads.
pub(super) struct Dispatch {
    state: Mutex<State>,
    /// Signalled when a slot's thread ends.
    finished: Condvar,
    pub(super) settings: Settings,
}

impl Dispatch {
    pub(super) fn new(settings: Settings, slots: usize) -> Arc<Dispatch> {
        Arc::new(Dispatch {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                slots: (0..slots).map(|_| Slot::default()).collect(),
                accepting: true,
                next_id: 0,
                sent: 0,
                stealing: 0,
                killing: false,
                cancel_pending: false,
                shutdown_at: None,
            }),
            finished: Condvar::new(),
            settings,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a job and sends it at once if a worker has room.
    pub(super) fn submit(self: &Arc<Self>, job: Job, completion: Completion) {
        let mut fx = Effects::default();
        {
            let mut s = self.lock();
            if s.accepting {
                let id = s.next_id;
                s.next_id += 1;
                let dispatch = Arc::downgrade(self);
                let interrupting = dispatch.clone();
                completion.on_cancel(move || {
                    if let Some(dispatch) = dispatch.upgrade() {
                        dispatch.cancel(id);
                    }
                });
                completion.on_interrupt(move || {
                    interrupting
                        .upgrade()
                        .is_some_and(|dispatch| dispatch.interrupt(id))
                });
                s.queue.push_back(Queued {
                    id,
                    job: Arc::new(job),
                    completion,
                    attempts: 0,
                });
                self.pump(&mut s, &mut fx);
            } else {
                let error = Error::ShutDown {
                    task: job.name().into(),
                    id: None,
                };
                fx.finish.push((completion, Outcome::Fail(error)));
            }
        }
        fx.run();
    }

    /// Sends queued jobs to workers with room, has idle workers take over
    /// jobs not yet started elsewhere, and closes idle workers once the
    /// pool is shutting down.
    fn pump(&self, s: &mut State, fx: &mut Effects) {
        let max = self.settings.max_in_flight;
        while !s.queue.is_empty() {
            let best = s
                .slots
                .iter_mut()
                .filter(|slot| slot.open() && slot.held.len() < max)
                .min_by_key(|slot| slot.held.len());
            let Some(slot) = best else { break };
            let q = s.queue.pop_front().expect("not empty");
            let conn = slot.conn.as_ref().expect("live slot");
            conn.push_job(q.id, q.job.clone());
            fx.flush(conn);
            q.completion.set_dispatched(true);
            slot.held.insert(
                q.id,
                Held {
                    job: q.job,
                    completion: q.completion,
                    revoke: None,
                    attempts: q.attempts,
                    sent: s.sent,
                    started: false,
                },
            );
            s.sent += 1;
        }
        if s.queue.is_empty() {
            self.steal(s, fx);
        }
        if !s.accepting && s.queue.is_empty() {
            for slot in &mut s.slots {
                if let (Some(conn), true) = (&slot.conn, slot.held.is_empty()) {
                    conn.close();
                    slot.closed = true;
                }
            }
        }
    }

    /// For each idle worker not already waiting for a stolen job, revokes
    /// the job last sent to the busiest worker that holds more than it runs
    /// (never one it said it had started: revoking that again and again
    /// would only bounce messages while the idle worker stays idle).
    fn steal(&self, s: &mut State, fx: &mut Effects) {
        let idle = s
            .slots
            .iter()
            .filter(|slot| slot.open() && slot.held.is_empty())
            .count();
        while s.stealing < idle {
            let victim = s
                .slots
                .iter_mut()
                .filter(|slot| slot.conn.is_some() && slot.active() >= 2)
                .filter_map(|slot| Some((slot.to_steal()?, slot)))
                .max_by_key(|(_, slot)| slot.active());
            let Some((id, victim)) = victim else { return };
            victim.held.get_mut(&id).expect("held").revoke = Some(Revoke::Steal);
            let conn = victim.conn.as_ref().expect("live slot");
            conn.push_revoke(id);
            fx.flush(conn);
            s.stealing += 1;
        }
    }

    /// Marks the calling thread as the one reading slot `index`'s answers.
    pub(super) fn reading(&self, index: usize) {
        READING.set(Some((self as *const Dispatch as usize, index)));
    }

    /// The slot whose answers the calling thread reads, if it is one of
    /// this pool's.
    pub(super) fn reading_slot(&self) -> Option<usize> {
        match READING.get() {
            Some((dispatch, index)) if dispatch == self as *const Dispatch as usize => Some(index),
            _ => None,
        }
    }

    /// A worker's connection is ready: it takes jobs from now on.
    pub(super) fn attach(&self, index: usize, conn: Arc<Conn>) {
        let mut fx = Effects::default();
        {
            let mut s = self.lock();
            s.slots[index].conn = Some(conn);
            s.slots[index].closed = false;
            self.pump(&mut s, &mut fx);
        }
        fx.run();
    }

    /// Handles a message from the worker of slot `index`. An error is a
    /// protocol violation: the worker is to be killed.
    pub(super) fn on_message(
        &self,
        index: usize,
        header: Header,
        body: &mut Body,
    ) -> Result<(), String> {
        let mut fx = Effects::default();
        {
            let mut s = self.lock();
            let id = header.id;
            match header.kind {
                Kind::Done | Kind::Failed => {
                    // Checked before the job leaves the table: a violation
                    // leaves it held, to fail with the worker's death.
                    if body.sections.len() > 1 {
                        return Err(format!(
                            "it answered job {id} with {} sections (a result has at most one)",
                            body.sections.len()
                        ));
                    }
                    let held = s.slots[index]
                        .held
                        .remove(&id)
                        .ok_or_else(|| format!("it answered job {id}, which it does not hold"))?;
                    let result = if header.kind == Kind::Done {
                        Ok(TaskOutput {
                            frame: std::mem::take(&mut body.bytes),
                            section: body.sections.pop().map(Section::Received),
                        })
                    } else {
                        Err(TaskFailure::new(
                            String::from_utf8_lossy(&body.bytes).into_owned(),
                        ))
                    };
                    match held.revoke {
                        Some(Revoke::Cancel(waiters)) => fx.wake.extend(waiters),
                        Some(Revoke::Steal) => s.stealing -= 1,
                        _ => {}
                    }
                    fx.finish.push((held.completion, Outcome::Answer(result)));
                }
                Kind::Revoked => {
                    let slot = &mut s.slots[index];
                    if slot.held.get(&id).is_none_or(|h| h.revoke.is_none()) {
                        // Left held, the job fails with the violation.
                        return Err(format!("it dropped job {id}, which nobody revoked"));
                    }
                    let Some(Held {
                        job,
                        completion,
                        revoke: Some(revoke),
                        attempts,
                        ..
                    }) = slot.held.remove(&id)
                    else {
                        unreachable!("checked above");
                    };
                    match revoke {
                        Revoke::Steal => {
                            s.stealing -= 1;
                            if s.killing {
                                let task = job.name().to_string();
                                fx.finish.push((
                                    completion,
                                    Outcome::Fail(Error::ShutDown { task, id: None }),
                                ));
                            } else if s.cancel_pending {
                                fx.finish.push((completion, Outcome::Cancel));
                            } else {
                                completion.set_dispatched(false);
                                s.queue.push_front(Queued {
                                    id,
                                    job,
                                    completion,
                                    attempts,
                                });
                            }
                        }
                        Revoke::Cancel(waiters) => {
                            fx.finish.push((completion, Outcome::Cancel));
                            fx.wake.extend(waiters);
                        }
                        Revoke::Shutdown => fx.finish.push((completion, Outcome::Cancel)),
                    }
                }
                Kind::TooLate => {
                    let revoke = s.slots[index].held.get_mut(&id).and_then(|held| {
                        held.started = true;
                        held.revoke.take()
                    });
                    match revoke {
                        Some(Revoke::Cancel(waiters)) => fx.wake.extend(waiters),
                        Some(Revoke::Steal) => s.stealing -= 1,
                        _ => {}
                    }
                }
                Kind::Job | Kind::Revoke | Kind::Interrupt => {
                    return Err(format!(
                        "it sent a {:?} message, which only the pool sends",
                        header.kind
                    ))
                }
            }
            self.pump(&mut s, &mut fx);
        }
        fx.run();
        Ok(())
    }
}
