//! A job entry's fields, and what a worker evicts for a job that ends.

use super::super::queue::MAX_TTL_MS;
use super::super::redis_io::Entry;
use crate::key::Key;

/// The fields of a job entry.
pub(crate) struct JobEntry<'a> {
    pub(crate) job: &'a [u8],
    pub(crate) caller: &'a str,
    pub(crate) id: u64,
    pub(crate) created: Vec<Key>,
    /// How long the caller wants its replies kept (ms).
    pub(crate) reply_ttl: Option<u64>,
    /// The caller's [`TaskId`](crate::task::TaskId) of the task: unique
    /// in the caller's process only, for log lines.
    pub(crate) task: Option<u64>,
}

impl<'a> JobEntry<'a> {
    pub(crate) fn parse(entry: &'a Entry) -> Option<JobEntry<'a>> {
        let caller = entry.text("caller")?;
        if caller.is_empty() || !caller.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let created = entry
            .field("evict")
            .unwrap_or_default()
            .chunks(16)
            .filter_map(|b| uuid::Uuid::from_slice(b).ok())
            .filter_map(|u| Key::parse(&u.hyphenated().to_string()).ok())
            .collect();
        Some(JobEntry {
            job: entry.field("job")?,
            caller,
            id: entry.text("id")?.parse().ok()?,
            created,
            // Bounded: Redis refuses an expiry past its clock's end, and a
            // reply that cannot be sent would hold the worker.
            reply_ttl: entry
                .text("ttl")
                .and_then(|t| t.parse().ok())
                .filter(|&t: &u64| t > 0)
                .map(|t| t.min(MAX_TTL_MS)),
            task: entry.text("task").and_then(|t| t.parse().ok()),
        })
    }
}

/// Evicts what a job of a caller that is gone put in the store: its result
/// (if it went through the store) and its inputs.
pub(crate) fn orphaned(job: &[u8], output: Option<&[u8]>, created: Vec<Key>) {
    if let Some(output) = output {
        crate::task::evict_result(output);
    }
    let received = crate::task::ReceivedJob::parse(job);
    match received.and_then(|j| Ok((j.store()?, j.result_key()))) {
        Ok((store, result_key)) => {
            for key in created.iter().chain([&result_key]) {
                if let Err(e) = store.evict(key) {
                    tracing::debug!(%key, error = %e, "cluster: could not evict an orphaned object");
                }
            }
        }
        Err(e) => tracing::debug!(error = %e, "cluster: the store of an orphaned job is unknown"),
    }
}

/// Evicts a finished job's proxied inputs.
pub(super) fn evict_inputs(job: &[u8], created: &[Key]) {
    if created.is_empty() {
        return;
    }
    if let Ok(store) = crate::task::ReceivedJob::parse(job).and_then(|j| j.store()) {
        for key in created {
            if let Err(e) = store.evict(key) {
                tracing::debug!(%key, error = %e, "cluster worker: could not evict an input");
            }
        }
    }
}
