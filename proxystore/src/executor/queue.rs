//! The job queue that pools share between `submit` and their threads.

use std::sync::Mutex;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::Completion;
use crate::error::Error;
use crate::task::Job;

pub(crate) type Item = (Job, Completion);

/// A queue of jobs plus the threads serving it; closing it lets them finish.
pub(crate) struct JobQueue {
    sender: Mutex<Option<Sender<Item>>>,
    receiver: Receiver<Item>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl JobQueue {
    pub(crate) fn new() -> Self {
        let (sender, receiver) = crossbeam_channel::unbounded();
        JobQueue {
            sender: Mutex::new(Some(sender)),
            receiver,
            threads: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn receiver(&self) -> &Receiver<Item> {
        &self.receiver
    }

    pub(crate) fn serve(&self, thread: JoinHandle<()>) {
        self.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(thread);
    }

    /// Queues a job, or fails it if the queue is closed.
    pub(crate) fn push(&self, (job, completion): Item) {
        let sender = self
            .sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let rejected = match sender {
            Some(sender) => sender.send((job, completion)).err().map(|e| e.into_inner()),
            None => Some((job, completion)),
        };
        if let Some((job, completion)) = rejected {
            completion.fail(Error::ShutDown {
                task: job.name().into(),
                id: None,
            });
        }
    }

    /// Stops accepting jobs; cancels the queued ones if asked; waits for the
    /// threads if asked.
    pub(crate) fn close(&self, wait: bool, cancel_pending: bool) {
        self.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
        if cancel_pending {
            while let Ok((_, completion)) = self.receiver.try_recv() {
                completion.cancel();
            }
        }
        if wait {
            let threads =
                std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
            let current = std::thread::current().id();
            for thread in threads {
                // Shut down from one of its own threads (a done callback
                // dropping the last handle): that thread ends by itself
                // once the callback returns.
                if thread.thread().id() != current {
                    let _ = thread.join();
                }
            }
        }
    }
}
