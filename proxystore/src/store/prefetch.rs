//! Results read ahead: the bytes of a task's small result, read in the
//! round trip that evicted the task's inputs (when the caller learned that
//! the task was done), kept here until the caller reads the result.
//!
//! Keys are unique (random UUIDs), so the bytes are kept per process by
//! key, whichever store handle reads them. An object written or evicted in
//! this process loses its bytes here; the total kept is bounded, the oldest
//! bytes giving way, so bytes nobody reads (a result whose owner was sent
//! to another process) never pile up.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::key::Key;

/// The largest object read ahead, in bytes.
pub(crate) const PREFETCH_LIMIT: usize = 64 * 1024;

/// The most bytes kept at once; the oldest give way beyond it.
const PREFETCH_TOTAL: usize = 16 * 1024 * 1024;

#[derive(Default)]
struct Kept {
    bytes: HashMap<Key, Vec<u8>>,
    /// Keys in the order kept (some maybe taken since).
    order: VecDeque<Key>,
    total: usize,
}

fn kept() -> MutexGuard<'static, Kept> {
    static KEPT: OnceLock<Mutex<Kept>> = OnceLock::new();
    KEPT.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Keeps the bytes of the object under `key` (at most
/// [`PREFETCH_LIMIT`]), the oldest kept giving way if needed.
pub(crate) fn keep(key: Key, bytes: Vec<u8>) {
    if bytes.len() > PREFETCH_LIMIT {
        return;
    }
    let mut kept = kept();
    while kept.total + bytes.len() > PREFETCH_TOTAL {
        let Some(oldest) = kept.order.pop_front() else {
            break;
        };
        if let Some(old) = kept.bytes.remove(&oldest) {
            kept.total -= old.len();
        }
    }
    // Taken keys leave their place in `order` behind: dropped when too many.
    if kept.order.len() > 2 * kept.bytes.len() + 64 {
        let Kept { bytes, order, .. } = &mut *kept;
        order.retain(|k| bytes.contains_key(k));
    }
    kept.total += bytes.len();
    kept.order.push_back(key);
    if let Some(old) = kept.bytes.insert(key, bytes) {
        kept.total -= old.len();
    }
}

/// The bytes kept for `key`, taken.
pub(crate) fn take(key: &Key) -> Option<Vec<u8>> {
    let mut kept = kept();
    if kept.bytes.is_empty() {
        return None;
    }
    let bytes = kept.bytes.remove(key)?;
    kept.total -= bytes.len();
    Some(bytes)
}

/// Forgets the bytes kept for `key` (written again, or evicted).
pub(crate) fn forget(key: &Key) {
    drop(take(key));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_taken_once_forgotten_and_bounded() {
        let (a, b) = (Key::new(), Key::new());
        keep(a, vec![1, 2, 3]);
        keep(b, vec![4]);
        forget(&b);
        assert_eq!(take(&b), None);
        assert_eq!(take(&a), Some(vec![1, 2, 3]));
        assert_eq!(take(&a), None);
        keep(a, vec![0; PREFETCH_LIMIT + 1]);
        assert_eq!(take(&a), None, "too large to keep");

        // The oldest give way (in the same test: the bytes are per process).
        let keys: Vec<Key> = (0..PREFETCH_TOTAL / PREFETCH_LIMIT + 8)
            .map(|_| Key::new())
            .collect();
        for key in &keys {
            keep(*key, vec![7; PREFETCH_LIMIT]);
        }
        assert!(kept().total <= PREFETCH_TOTAL);
        assert_eq!(take(&keys[0]), None, "the oldest went");
        assert_eq!(
            take(keys.last().unwrap()).map(|b| b.len()),
            Some(PREFETCH_LIMIT)
        );
        for key in &keys {
            forget(key);
        }
    }
}
