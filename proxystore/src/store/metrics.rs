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

    /// Adds `other`'s counts, bytes and times to these.
    pub fn merge(&mut self, other: &Metrics) {
        for (op, stats) in &other.operations {
            let mine = self.operations.entry(*op).or_default();
            mine.count += stats.count;
            mine.bytes += stats.bytes;
            mine.time += stats.time;
        }
        self.cache_hits += other.cache_hits;
        self.cache_misses += other.cache_misses;
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty() && self.cache_hits == 0 && self.cache_misses == 0
    }

    /// The metrics as bytes, to send from a worker to its caller: the two
    /// cache counts, then per operation its index and three counts (all
    /// little-endian `u64`s but the index).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.cache_hits.to_le_bytes());
        out.extend_from_slice(&self.cache_misses.to_le_bytes());
        for (op, stats) in &self.operations {
            let index = OPERATIONS.iter().position(|o| o == op).expect("listed");
            out.push(index as u8);
            out.extend_from_slice(&stats.count.to_le_bytes());
            out.extend_from_slice(&stats.bytes.to_le_bytes());
            out.extend_from_slice(&(stats.time.as_nanos() as u64).to_le_bytes());
        }
    }

    /// Reads [`encode`](Metrics::encode)'s bytes; `None` if malformed.
    pub(crate) fn decode(mut bytes: &[u8]) -> Option<Metrics> {
        fn u64_at(bytes: &mut &[u8]) -> Option<u64> {
            let (head, rest) = bytes.split_first_chunk::<8>()?;
            *bytes = rest;
            Some(u64::from_le_bytes(*head))
        }
        let mut metrics = Metrics {
            cache_hits: u64_at(&mut bytes)?,
            cache_misses: u64_at(&mut bytes)?,
            ..Metrics::default()
        };
        while let Some((&index, rest)) = bytes.split_first() {
            bytes = rest;
            let op = *OPERATIONS.get(usize::from(index))?;
            let stats = OperationStats {
                count: u64_at(&mut bytes)?,
                bytes: u64_at(&mut bytes)?,
                time: Duration::from_nanos(u64_at(&mut bytes)?),
            };
            metrics.operations.insert(op, stats);
        }
        Some(metrics)
    }
}

thread_local! {
    /// While a task runs with metrics gathered: what it does in any store.
    static TASK: std::cell::RefCell<Option<Recorder>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` (a task), recording what it does in stores on this thread;
/// returns its metrics too.
pub(crate) fn record_task<T>(f: impl FnOnce() -> T) -> (T, Metrics) {
    struct Restore(Option<Recorder>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            let _ = TASK.try_with(|t| *t.borrow_mut() = outer);
        }
    }
    let outer = TASK.with(|t| t.borrow_mut().replace(Recorder::default()));
    let restore = Restore(outer);
    let value = f();
    let metrics = TASK.with(|t| t.borrow().as_ref().map(Recorder::snapshot));
    drop(restore);
    (value, metrics.unwrap_or_default())
}

/// Whether a task's store operations are being recorded on this thread.
pub(crate) fn recording_task() -> bool {
    TASK.with(|t| t.borrow().is_some())
}

/// Records an operation for the task running on this thread, if any.
pub(crate) fn record_for_task(op: Operation, bytes: usize, started: Instant) {
    TASK.with(|t| {
        if let Some(r) = t.borrow().as_ref() {
            r.record(op, bytes, started);
        }
    });
}

/// Records a cache lookup for the task running on this thread, if any.
pub(crate) fn cache_for_task(hit: bool) {
    TASK.with(|t| {
        if let Some(r) = t.borrow().as_ref() {
            r.cache(hit);
        }
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Metrics {
        let recorder = Recorder::default();
        let started = Instant::now();
        recorder.record(Operation::Put, 100, started);
        recorder.record(Operation::Get, 40, started);
        recorder.record(Operation::Get, 2, started);
        recorder.cache(true);
        recorder.snapshot()
    }

    #[test]
    fn metrics_round_trip_and_merge() {
        let metrics = sample();
        let mut bytes = Vec::new();
        metrics.encode(&mut bytes);
        assert_eq!(Metrics::decode(&bytes), Some(metrics.clone()));
        let mut sum = metrics.clone();
        sum.merge(&metrics);
        assert_eq!(sum.get(Operation::Get).count, 4);
        assert_eq!(sum.get(Operation::Get).bytes, 84);
        assert_eq!(sum.cache_hits, 2);
        assert!(!sum.is_empty() && Metrics::default().is_empty());
    }

    #[test]
    fn malformed_metrics_are_refused() {
        let mut bytes = Vec::new();
        sample().encode(&mut bytes);
        for cut in 1..bytes.len() {
            if cut == 16 {
                continue; // just the cache counts: valid
            }
            let truncated = &bytes[..cut];
            if cut > 16 && (cut - 16) % 25 == 0 {
                continue; // whole operations: valid
            }
            assert_eq!(Metrics::decode(truncated), None, "cut at {cut}");
        }
        let mut unknown = bytes[..16].to_vec();
        unknown.push(200);
        unknown.extend_from_slice(&[0; 24]);
        assert_eq!(Metrics::decode(&unknown), None);
    }

    #[test]
    fn a_task_s_operations_are_recorded_apart() {
        let ((), outer) = record_task(|| {
            record_for_task(Operation::Put, 10, Instant::now());
            let ((), inner) = record_task(|| record_for_task(Operation::Evict, 0, Instant::now()));
            assert_eq!(inner.get(Operation::Evict).count, 1);
            assert_eq!(inner.get(Operation::Put).count, 0);
        });
        assert_eq!(outer.get(Operation::Put).count, 1);
        assert_eq!(outer.get(Operation::Evict).count, 0);
        assert!(!recording_task());
    }
}
