//! A pool of threads in this process.

use super::queue::JobQueue;
use super::{Completion, Executor};
use crate::error::{Error, Result};
use crate::task::Job;

/// Runs jobs on a fixed number of threads of this process.
///
/// ```
/// use proxystore::executor::ThreadPool;
///
/// let pool = ThreadPool::new(4)?;
/// # Ok::<(), proxystore::Error>(())
/// ```
pub struct ThreadPool {
    queue: JobQueue,
}

impl ThreadPool {
    /// A pool of `threads` threads (at least one).
    pub fn new(threads: usize) -> Result<Self> {
        let queue = JobQueue::new();
        for i in 0..threads.max(1) {
            let receiver = queue.receiver().clone();
            let thread = std::thread::Builder::new()
                .name(format!("proxystore-pool-{i}"))
                .spawn(move || {
                    crate::task::handle::mark_executor_thread();
                    for (job, completion) in receiver {
                        if completion.start() {
                            let result = completion.run_here(|| job.run_output());
                            completion.complete_output(result);
                        }
                    }
                })
                .map_err(|e| Error::io("thread pool", "spawning a thread", e))?;
            queue.serve(thread);
        }
        Ok(ThreadPool { queue })
    }
}

impl Executor for ThreadPool {
    fn submit(&self, job: Job, completion: Completion) {
        self.queue.push((job, completion));
    }

    fn shutdown(&self, wait: bool, cancel_pending: bool) {
        self.queue.close(wait, cancel_pending);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool").finish_non_exhaustive()
    }
}
