//! A pool of threads in this process.

use std::sync::Mutex;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::{Completion, Executor};
use crate::error::{Error, Result};
use crate::task::Job;

type Item = (Job, Completion);

/// Runs jobs on a fixed number of threads of this process.
///
/// ```
/// use proxystore::executor::ThreadPool;
///
/// let pool = ThreadPool::new(4)?;
/// # Ok::<(), proxystore::Error>(())
/// ```
pub struct ThreadPool {
    sender: Mutex<Option<Sender<Item>>>,
    receiver: Receiver<Item>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl ThreadPool {
    /// A pool of `threads` threads (at least one).
    pub fn new(threads: usize) -> Result<Self> {
        let (sender, receiver) = crossbeam_channel::unbounded::<Item>();
        let handles = (0..threads.max(1))
            .map(|i| {
                let receiver = receiver.clone();
                std::thread::Builder::new()
                    .name(format!("proxystore-pool-{i}"))
                    .spawn(move || {
                        for (job, completion) in receiver {
                            if completion.start() {
                                let result = job.run();
                                completion.complete(result);
                            }
                        }
                    })
                    .map_err(|e| Error::io("thread pool", "spawning a thread", e))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ThreadPool {
            sender: Mutex::new(Some(sender)),
            receiver,
            threads: Mutex::new(handles),
        })
    }
}

impl Executor for ThreadPool {
    fn submit(&self, job: Job, completion: Completion) {
        let sender = self
            .sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match sender {
            Some(sender) => {
                if let Err(e) = sender.send((job, completion)) {
                    let (job, completion) = e.into_inner();
                    completion.fail(Error::ShutDown {
                        task: job.name().into(),
                    });
                }
            }
            None => completion.fail(Error::ShutDown {
                task: job.name().into(),
            }),
        }
    }

    fn shutdown(&self, wait: bool, cancel_pending: bool) {
        self.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
        if cancel_pending {
            while let Ok((_, completion)) = self.receiver.try_recv() {
                completion.cancel();
            }
        }
        if wait {
            let threads =
                std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
            for thread in threads {
                let _ = thread.join();
            }
        }
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
