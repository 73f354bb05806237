//! Staging a submission, the part that may block on the store: its
//! arguments encoded (inline, as sections, or put in the store) and its
//! result's key reserved.
//!
//! The submit pipeline, in one vocabulary: each argument as given
//! (`task::GivenArg`) is *encoded* into the task ([`EncodedTask`]); the
//! encoded task with its result key is *staged* ([`Staged`]); a staged task
//! is *dispatched* to the executor, at once or once its upstream tasks are
//! done (`StoreExecutor::dispatch`, `held.rs`).

use crate::connectors::Reach;
use crate::error::Result;
use crate::key::Key;
use crate::policy::ShouldProxy;
use crate::store::Store;
use crate::task::{EncodedTask, Task};

/// A task whose arguments are encoded and whose result key is reserved:
/// what `StoreExecutor::dispatch` needs.
pub(super) struct Staged {
    pub(super) encoded: EncodedTask,
    /// The inputs it put in the store.
    pub(super) created: Vec<Key>,
    /// Whether every one of them was set to expire as it was stored.
    pub(super) expiring: bool,
    pub(super) result_key: Key,
}

/// The part of a submission that may block on the store: checks that the
/// task's stores can be reached where it runs, puts its arguments, reserves
/// a key for its result. On failure, what it stored is evicted. With
/// `expiry`, the inputs are set to expire as they are stored, where the
/// store can.
pub(super) fn stage<R>(
    store: &Store,
    policy: &ShouldProxy,
    needed: Reach,
    executor: &str,
    expiry: Option<std::time::Duration>,
    task: Task<R>,
) -> Result<Staged> {
    if needed > Reach::Process {
        task.check_reach(store, policy, needed, executor)?;
    }
    let (encoded, created, expiring) = task.encode(store, policy, expiry);
    let staged = encoded.and_then(|encoded| {
        let result_key = store.connector().new_key()?;
        Ok((encoded, result_key))
    });
    match staged {
        Ok((encoded, result_key)) => Ok(Staged {
            encoded,
            created,
            expiring,
            result_key,
        }),
        Err(e) => {
            evict_all(store, &created);
            Err(e)
        }
    }
}

pub(super) fn evict_all(store: &Store, keys: &[Key]) {
    for key in keys {
        if let Err(e) = store.evict(key) {
            tracing::debug!(%key, error = %e, "could not evict a task input");
        }
    }
}
