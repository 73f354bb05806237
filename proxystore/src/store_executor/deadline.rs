//! The iterator of [`StoreExecutor::map_timeout`](super::StoreExecutor::map_timeout).

use crate::error::Result;
use crate::executor::TaskFuture;
use crate::task::TaskValue;
use crate::Storable;

/// The results of [`StoreExecutor::map_timeout`], in order.
pub(super) struct Deadline<R: Storable> {
    pub(super) futures: std::collections::VecDeque<TaskFuture<R>>,
    pub(super) deadline: std::time::Instant,
}

impl<R: Storable> Iterator for Deadline<R> {
    type Item = Result<TaskValue<R>>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut future = self.futures.pop_front()?;
        let left = self
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        let result = future.result_timeout(left);
        if result.is_err() {
            // Given up on, as Python's `map` does: not started, not run.
            future.cancel();
        }
        Some(result)
    }
}

impl<R: Storable> Drop for Deadline<R> {
    fn drop(&mut self) {
        for future in &self.futures {
            future.cancel();
        }
    }
}
