//! The executors and stores the executor tests run on.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use proxystore::connectors::FileConnector;
use proxystore::executor::{Executor, ProcessPool, ThreadPool};
use proxystore::{Store, StoreExecutor};

use super::common::unique;

/// Objects in `dir` (entries not starting with a dot: temporary files and
/// the store's marker are not objects).
pub fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count()
        })
        .unwrap_or(0)
}

/// A store in a fresh directory, kept open after the executor is dropped so
/// the tests can look at what is left.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub store: Store,
}

impl Fixture {
    /// A store named `prefix` and something unique.
    pub fn new(prefix: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(
            unique(prefix),
            FileConnector::new(dir.path().join("objects")).unwrap(),
        )
        .unwrap();
        Fixture { dir, store }
    }

    pub fn objects(&self) -> PathBuf {
        self.dir.path().join("objects")
    }

    /// Objects left in the store.
    pub fn left(&self) -> usize {
        count(&self.objects())
    }

    /// An executor over `pool` that leaves the store open.
    pub fn executor(&self, pool: Pool) -> StoreExecutor {
        StoreExecutor::new(pool.make(), self.store.clone()).close_store(false)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.store.close();
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Pool {
    Threads,
    Processes,
    /// One worker, one task in flight: for tests that need queued tasks.
    Serial,
    SerialProcess,
}

impl Pool {
    pub fn make(self) -> Box<dyn Executor> {
        match self {
            Pool::Threads => Box::new(ThreadPool::new(2).unwrap()),
            Pool::Processes => Box::new(ProcessPool::builder(2).test_harness().build().unwrap()),
            Pool::Serial => Box::new(ThreadPool::new(1).unwrap()),
            Pool::SerialProcess => Box::new(
                ProcessPool::builder(1)
                    .test_harness()
                    .max_in_flight(1)
                    .build()
                    .unwrap(),
            ),
        }
    }

    /// The same kind of pool, with one worker and one task in flight.
    pub fn serial(self) -> Pool {
        match self {
            Pool::Threads | Pool::Serial => Pool::Serial,
            Pool::Processes | Pool::SerialProcess => Pool::SerialProcess,
        }
    }
}

/// Runs a test body on both pools.
#[macro_export]
macro_rules! for_both_pools {
    ($($name:ident),* $(,)?) => {
        mod threads {
            use super::*;
            $(#[test] fn $name() { super::$name(Pool::Threads) })*
        }
        mod processes {
            use super::*;
            $(#[test] fn $name() { super::$name(Pool::Processes) })*
        }
    };
}
