//! The end of jobs and workers: cancelling, shutting down, killing what
//! outlives the shutdown timeout, and what is left when a worker dies.

use std::time::Instant;

use super::*;

impl Dispatch {
    /// Asks the worker holding job `id` to stop it (called through
    /// [`Completion::on_interrupt`]); false if no worker holds it.
    pub(super) fn interrupt(&self, id: u64) -> bool {
        let mut fx = Effects::default();
        {
            let s = self.lock();
            let Some(slot) = s.slots.iter().find(|slot| slot.held.contains_key(&id)) else {
                return false;
            };
            let Some(conn) = slot.conn.as_ref() else {
                return false;
            };
            conn.push_interrupt(id);
            fx.flush(conn);
        }
        fx.run();
        true
    }

    /// Cancels job `id` if it has not started (called through
    /// [`Completion::on_cancel`]).
    pub(super) fn cancel(&self, id: u64) {
        let (waiter, answered) = crossbeam_channel::bounded(1);
        let mut fx = Effects::default();
        let mut own_reader = false;
        {
            let mut s = self.lock();
            if let Some(pos) = s.queue.iter().position(|q| q.id == id) {
                let q = s.queue.remove(pos).expect("found");
                fx.finish.push((q.completion, Outcome::Cancel));
            } else {
                let State {
                    slots, stealing, ..
                } = &mut *s;
                let Some(index) = slots.iter().position(|slot| slot.held.contains_key(&id)) else {
                    return;
                };
                own_reader = READING.get() == Some((self as *const Dispatch as usize, index));
                let slot = &mut slots[index];
                let held = slot.held.get_mut(&id).expect("found");
                let waiters = match held.revoke.take() {
                    // A revocation is on its way already: its answer serves.
                    Some(Revoke::Steal) => {
                        *stealing -= 1;
                        vec![waiter]
                    }
                    Some(Revoke::Cancel(mut waiters)) => {
                        waiters.push(waiter);
                        waiters
                    }
                    Some(Revoke::Shutdown) => vec![waiter],
                    None => {
                        let conn = slot.conn.as_ref().expect("a slot holding jobs is live");
                        conn.push_revoke(id);
                        fx.flush(conn);
                        vec![waiter]
                    }
                };
                held.revoke = Some(Revoke::Cancel(waiters));
            }
        }
        let waiting = fx.finish.is_empty();
        fx.run();
        if !waiting || own_reader {
            // Called from a callback run by the thread that reads this
            // worker's answers: the answer cannot come while it waits. The
            // job is cancelled once the worker answers "revoked" (the
            // future's cancel() returns false meanwhile).
            return;
        }
        if let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
            answered.recv_timeout(CANCEL_WAIT)
        {
            // No answer in time (a stopped worker?): the task counts as
            // started. A late "revoked" then sends it to another worker
            // instead of cancelling it behind the caller's back.
            let mut s = self.lock();
            let State {
                slots, stealing, ..
            } = &mut *s;
            for slot in slots.iter_mut() {
                if let Some(held) = slot.held.get_mut(&id) {
                    if matches!(held.revoke, Some(Revoke::Cancel(_))) {
                        held.revoke = Some(Revoke::Steal);
                        *stealing += 1;
                    }
                }
            }
        }
    }

    /// Stops accepting jobs; cancels those not started if asked.
    pub(crate) fn shutdown(&self, cancel_pending: bool) {
        let mut fx = Effects::default();
        {
            let mut s = self.lock();
            s.accepting = false;
            s.shutdown_at.get_or_insert_with(Instant::now);
            if cancel_pending {
                s.cancel_pending = true;
                for q in std::mem::take(&mut s.queue) {
                    fx.finish.push((q.completion, Outcome::Cancel));
                }
                for slot in &mut s.slots {
                    let Some(conn) = &slot.conn else { continue };
                    for (id, held) in &mut slot.held {
                        if held.revoke.is_none() {
                            held.revoke = Some(Revoke::Shutdown);
                            conn.push_revoke(*id);
                            fx.flush(conn);
                        }
                    }
                }
            }
            self.pump(&mut s, &mut fx);
        }
        fx.run();
    }

    /// When the first shutdown was asked for.
    pub(crate) fn shutdown_at(&self) -> Option<Instant> {
        self.lock().shutdown_at
    }

    /// Waits until every slot's thread but `except`'s has ended, or
    /// `deadline`.
    pub(crate) fn wait_finished(&self, deadline: Instant, except: Option<usize>) -> bool {
        let mut s = self.lock();
        loop {
            let others = s
                .slots
                .iter()
                .enumerate()
                .filter(|(i, _)| Some(*i) != except);
            if others.map(|(_, slot)| slot).all(|slot| slot.finished) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = self
                .finished
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Kills every worker still running (shutdown took too long) and fails
    /// the jobs still queued.
    pub(crate) fn kill_remaining(&self) {
        let mut s = self.lock();
        s.killing = true;
        let queued = std::mem::take(&mut s.queue);
        for slot in &mut s.slots {
            if let Some(conn) = &slot.conn {
                // The worker is not reaped while its slot holds the
                // connection, so its pid cannot have been reused.
                // SAFETY: a plain signal to a child process of ours.
                unsafe {
                    libc::kill(conn.pid as libc::pid_t, libc::SIGKILL);
                }
                slot.killed = true;
            }
        }
        drop(s);
        for q in queued {
            let task = q.job.name().to_string();
            q.completion.fail(Error::ShutDown { task, id: None });
        }
    }

    /// The worker of slot `index` is gone: takes its connection and jobs.
    /// Jobs that never reached it, or reached it but never started (see
    /// [`progress`](super::super::progress)), go back to the queue (a few
    /// times); the others are returned to be failed. Also says whether the
    /// pool killed it at shutdown.
    pub(crate) fn worker_gone(&self, index: usize) -> (Vec<Held>, bool) {
        let mut fx = Effects::default();
        let gone = {
            let mut s = self.lock();
            let slot = &mut s.slots[index];
            let conn = slot.conn.take();
            let undelivered = conn.as_ref().map(|c| c.mark_dead()).unwrap_or_default();
            let last_started = conn.as_ref().and_then(|c| c.last_started());
            let killed = std::mem::take(&mut slot.killed);
            slot.closed = false;
            let held: Vec<(u64, Held)> = slot.held.drain().collect();
            let unstarted = never_started(&held, last_started);
            let mut lost = Vec::new();
            let mut retry = Vec::new();
            for (id, mut held) in held {
                let delivered = !undelivered.contains(&id) && !unstarted(&held);
                let cancelled = match held.revoke.take() {
                    Some(Revoke::Steal) => {
                        s.stealing -= 1;
                        s.cancel_pending
                    }
                    Some(Revoke::Cancel(waiters)) => {
                        fx.wake.extend(waiters);
                        true
                    }
                    Some(Revoke::Shutdown) => true,
                    None => s.cancel_pending,
                };
                if !delivered && cancelled {
                    // It never reached the worker: it will not run.
                    fx.finish.push((held.completion, Outcome::Cancel));
                } else if !delivered && held.attempts + 1 < SEND_ATTEMPTS && !s.killing {
                    retry.push(Queued {
                        id,
                        job: held.job,
                        completion: held.completion,
                        attempts: held.attempts + 1,
                    });
                } else {
                    lost.push(held);
                }
            }
            retry.sort_by_key(|q| std::cmp::Reverse(q.id));
            for q in retry {
                q.completion.set_dispatched(false);
                s.queue.push_front(q);
            }
            self.pump(&mut s, &mut fx);
            (lost, killed)
        };
        fx.run();
        gone
    }

    /// Whether slot `index` should start another worker.
    pub(crate) fn wants_worker(&self) -> bool {
        let s = self.lock();
        !s.killing && (s.accepting || !s.queue.is_empty())
    }

    /// Fails the oldest queued job: a worker cannot be started.
    pub(crate) fn fail_next(&self, error: Error) {
        let q = self.lock().queue.pop_front();
        if let Some(q) = q {
            q.completion.fail(error);
        }
    }

    /// The slot's thread ends.
    pub(crate) fn finish_slot(&self, index: usize) {
        self.lock().slots[index].finished = true;
        self.finished.notify_all();
    }

    /// Process ids of the live workers.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.lock()
            .slots
            .iter()
            .filter_map(|slot| slot.conn.as_ref().map(|c| c.pid))
            .collect()
    }
}

/// Which of a dead worker's unanswered jobs certainly never started, given
/// the last job it said it was starting (`None`: it cannot tell; then
/// none is certain). It runs its jobs one at a time in the order they were
/// sent: those sent after the last one it started never did. If that one
/// is not among them (it was answered), none of them started.
fn never_started(
    held: &[(u64, Held)],
    last_started: Option<Option<u64>>,
) -> impl Fn(&Held) -> bool {
    let after = match last_started {
        None => None,
        Some(None) => Some(None),
        Some(Some(id)) => Some(
            held.iter()
                .find(|(held_id, _)| *held_id == id)
                .map(|(_, h)| h.sent),
        ),
    };
    move |h: &Held| match after {
        None => false,
        Some(None) => !h.started,
        Some(Some(sent)) => !h.started && h.sent > sent,
    }
}

impl Held {
    /// Fails the job: its worker died.
    pub(crate) fn fail(self, pid: u32, status: &str) {
        let task = self.completion.name().to_string();
        self.completion.fail(Error::WorkerDied {
            task,
            id: None,
            pid,
            status: status.to_string(),
        });
    }
}
