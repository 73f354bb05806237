//! The part of a submission that may block on the store: putting a task's
//! arguments and reserving its result's key.

use crate::connectors::Reach;
use crate::error::Result;
use crate::key::Key;
use crate::policy::ShouldProxy;
use crate::store::Store;
use crate::task::{Prepared, Task};

/// A task whose arguments are in place (inline, or in the store): what
/// [`StoreExecutor::dispatch`] needs.
pub(super) struct Placed {
    pub(super) prepared: Prepared,
    /// The inputs it put in the store.
    pub(super) created: Vec<Key>,
    pub(super) result_key: Key,
}

/// The part of a submission that may block on the store: checks that the
/// task's stores can be reached where it runs, puts its arguments, reserves
/// a key for its result. On failure, what it stored is evicted.
pub(super) fn place<R>(
    store: &Store,
    policy: &ShouldProxy,
    needed: Reach,
    executor: &str,
    task: Task<R>,
) -> Result<Placed> {
    if needed > Reach::Process {
        task.check_reach(store, policy, needed, executor)?;
    }
    let (prepared, created) = task.prepare(store, policy);
    let placed = prepared.and_then(|prepared| {
        let result_key = store.connector().new_key()?;
        Ok((prepared, result_key))
    });
    match placed {
        Ok((prepared, result_key)) => Ok(Placed {
            prepared,
            created,
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
