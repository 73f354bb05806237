//! Inputs that outlive no caller: the proxied inputs a submission puts in
//! a store that can expire objects by itself (Redis) get an expiry, renewed
//! while the caller lives, so that a caller killed mid-run leaves them for
//! at most that long.
//!
//! One thread per executor, started with its first such input: it sets the
//! expiry of new inputs as soon as they are staged (off the submit path, in
//! one round trip for all that came meanwhile) and renews every live input
//! each third of the expiry. A task's inputs leave the keeper when it ends
//! (they are evicted then). A store that cannot expire objects stops the
//! keeper at once; its inputs live until evicted, as before.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::key::Key;
use crate::store::Store;

#[derive(Default)]
struct State {
    fresh: Vec<Key>,
    live: HashSet<Key>,
    started: bool,
    stopped: bool,
}

pub(super) struct Keeper {
    store: Store,
    ttl: Duration,
    state: Mutex<State>,
    wake: Condvar,
}

impl Keeper {
    pub(super) fn new(store: Store, ttl: Duration) -> Arc<Keeper> {
        Arc::new(Keeper {
            store,
            ttl: ttl.max(Duration::from_millis(3)),
            state: Mutex::default(),
            wake: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The expiry new inputs should be stored with, `None` once the store
    /// showed it cannot expire objects.
    pub(super) fn expiry(&self) -> Option<Duration> {
        (!self.lock().stopped).then_some(self.ttl)
    }

    /// Keeps `keys` (inputs just staged) until [`release`](Keeper::release)d:
    /// their expiry set at once, unless `expiring` (they were stored with
    /// it), then renewed.
    pub(super) fn keep(self: &Arc<Self>, keys: &[Key], expiring: bool) {
        if keys.is_empty() {
            return;
        }
        let mut state = self.lock();
        if state.stopped {
            return;
        }
        if expiring {
            state.live.extend(keys.iter().copied());
        } else {
            state.fresh.extend_from_slice(keys);
        }
        if !std::mem::replace(&mut state.started, true) {
            let keeper = Arc::downgrade(self);
            let spawned = std::thread::Builder::new()
                .name("proxystore-keeper".into())
                .spawn(move || run(&keeper));
            if let Err(e) = spawned {
                state.stopped = true;
                tracing::warn!(error = %e, "inputs will not expire: no thread to renew them");
            }
        }
        drop(state);
        if !expiring {
            self.wake.notify_one();
        }
    }

    /// Forgets `keys`: their task ended.
    pub(super) fn release(&self, keys: &[Key]) {
        if keys.is_empty() {
            return;
        }
        let mut state = self.lock();
        for key in keys {
            state.live.remove(key);
        }
        state.fresh.retain(|k| !keys.contains(k));
    }

    /// Stops renewing (the executor is gone): inputs still stored expire.
    pub(super) fn stop(&self) {
        self.lock().stopped = true;
        self.wake.notify_one();
    }
}

/// The keeper's thread: expiries of fresh inputs at once, of live ones
/// every third of the expiry.
fn run(keeper: &std::sync::Weak<Keeper>) {
    let mut renewed = Instant::now();
    loop {
        let Some(k) = keeper.upgrade() else {
            return;
        };
        let every = k.ttl / 3;
        let (batch, renewing) = {
            let mut state = k.lock();
            loop {
                if state.stopped {
                    return;
                }
                let due = renewed + every;
                if !state.fresh.is_empty() || Instant::now() >= due {
                    break;
                }
                let wait = due.saturating_duration_since(Instant::now());
                state = k
                    .wake
                    .wait_timeout(state, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            let renewing = Instant::now() >= renewed + every;
            let fresh = std::mem::take(&mut state.fresh);
            state.live.extend(fresh.iter().copied());
            let batch: Vec<Key> = if renewing {
                state.live.iter().copied().collect()
            } else {
                fresh
            };
            (batch, renewing)
        };
        if renewing {
            renewed = Instant::now();
        }
        match k.store.connector().expire_all(&batch, k.ttl) {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(store = %k.store.name(), "inputs cannot expire in this store");
                k.stop();
                return;
            }
            Err(e) => {
                // Tried again at the next renewal.
                tracing::warn!(store = %k.store.name(), error = %e, "could not renew the expiry of task inputs");
            }
        }
        drop(k);
    }
}
