//! Optional per-operation metrics of a store.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// A store operation that metrics are kept for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// [`Store::put`](crate::Store::put) and the puts behind proxies.
    Put,
    /// [`Store::get`](crate::Store::get) and proxy resolution.
    Get,
    /// [`Store::exists`](crate::Store::exists).
    Exists,
    /// [`Store::evict`](crate::Store::evict).
    Evict,
    /// [`Store::put_batch`](crate::Store::put_batch).
    PutBatch,
    /// [`Store::get_batch`](crate::Store::get_batch).
    GetBatch,
}

const OPERATIONS: [Operation; 6] = [
    Operation::Put,
    Operation::Get,
    Operation::Exists,
    Operation::Evict,
    Operation::PutBatch,
    Operation::GetBatch,
];

/// Totals of one operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OperationStats {
    /// How many times it ran.
    pub count: u64,
    /// Bytes written or read (encoded size).
    pub bytes: u64,
    /// Time spent in it, in total.
    pub time: Duration,
}

/// A snapshot of a store's metrics, from [`Store::metrics`](crate::Store::metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Totals per operation (operations that never ran are absent).
    pub operations: BTreeMap<Operation, OperationStats>,
    /// Lookups served by the store's cache.
    pub cache_hits: u64,
    /// Lookups that went to the connector.
    pub cache_misses: u64,
}

impl Metrics {
    /// Totals of `op`.
    pub fn get(&self, op: Operation) -> OperationStats {
        self.operations.get(&op).copied().unwrap_or_default()
    }
}

#[derive(Default)]
struct Counters {
    count: AtomicU64,
    bytes: AtomicU64,
    nanos: AtomicU64,
}

#[derive(Default)]
pub(crate) struct Recorder {
    ops: [Counters; OPERATIONS.len()],
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Recorder {
    pub(crate) fn record(&self, op: Operation, bytes: usize, started: Instant) {
        let c = &self.ops[OPERATIONS.iter().position(|o| *o == op).expect("listed")];
        c.count.fetch_add(1, Relaxed);
        c.bytes.fetch_add(bytes as u64, Relaxed);
        c.nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Relaxed);
    }

    pub(crate) fn cache(&self, hit: bool) {
        if hit { &self.hits } else { &self.misses }.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Metrics {
        let operations = OPERATIONS
            .iter()
            .zip(&self.ops)
            .filter(|(_, c)| c.count.load(Relaxed) > 0)
            .map(|(op, c)| {
                let stats = OperationStats {
                    count: c.count.load(Relaxed),
                    bytes: c.bytes.load(Relaxed),
                    time: Duration::from_nanos(c.nanos.load(Relaxed)),
                };
                (*op, stats)
            })
            .collect();
        Metrics {
            operations,
            cache_hits: self.hits.load(Relaxed),
            cache_misses: self.misses.load(Relaxed),
        }
    }
}
