//! [`ClusterMonitor`]: how a cluster executor's queue and hosts are doing.

use std::sync::Arc;

use super::caller::Inner;
use super::{redis_io, serve};
use crate::error::Result;

/// Reads how a [`ClusterExecutor`](super::ClusterExecutor)'s queue and hosts are doing; from
/// [`ClusterExecutor::monitor`](super::ClusterExecutor::monitor). Cheap to clone; it keeps nothing running.
///
/// ```no_run
/// use proxystore::connectors::LocalConnector;
/// use proxystore::executor::cluster::ClusterExecutor;
/// use proxystore::{Store, StoreExecutor};
///
/// let cluster = ClusterExecutor::new("redis://redis-host:6379", "jobs")?;
/// let monitor = cluster.monitor();
/// let executor = StoreExecutor::new(cluster, Store::new("monitor-doc", LocalConnector::new())?);
/// // ... submit tasks ...
/// println!("{}", executor.progress());
/// for host in monitor.hosts()? {
///     println!("  {host}");      // node-1: 4 workers, 4 running, 120 done, 0 failed
/// }
/// # Ok::<(), proxystore::Error>(())
/// ```
#[derive(Clone)]
pub struct ClusterMonitor {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for ClusterMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterMonitor")
            .field("queue", &self.inner.keys.queue())
            .finish_non_exhaustive()
    }
}

impl ClusterMonitor {
    /// How the queue's hosts are doing: per host, its live workers and the
    /// jobs they run now (of every caller of the queue), and how many of
    /// the executor's tasks workers there finished and failed (one round
    /// trip to the server). Beside [`StoreExecutor::progress`](crate::StoreExecutor::progress),
    /// for a view per host. Hosts are named as workers see themselves
    /// (`gethostname`).
    pub fn hosts(&self) -> Result<Vec<HostProgress>> {
        let mut con = self.inner.server.connect(Some(redis_io::COMMAND_TIMEOUT))?;
        let live = serve::workers_by_host(&mut con, &self.inner.keys)
            .map_err(|e| self.inner.server.err("listing the queue's workers", e))?;
        let answered = self
            .inner
            .hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut hosts: std::collections::BTreeMap<String, HostProgress> = live
            .into_iter()
            .map(|(host, workers, running)| {
                let progress = HostProgress {
                    host: host.clone(),
                    workers,
                    running,
                    done: 0,
                    failed: 0,
                };
                (host, progress)
            })
            .collect();
        for (host, (done, failed)) in answered {
            let entry = hosts.entry(host.clone()).or_insert(HostProgress {
                host,
                workers: 0,
                running: 0,
                done: 0,
                failed: 0,
            });
            entry.done = done;
            entry.failed = failed;
        }
        Ok(hosts.into_values().collect())
    }

    /// How many workers serve the queue now (see
    /// [`ClusterExecutor::live_workers`](super::ClusterExecutor::live_workers)).
    pub fn live_workers(&self) -> Result<usize> {
        let mut con = self.inner.server.connect(Some(redis_io::COMMAND_TIMEOUT))?;
        serve::live_workers(&mut con, &self.inner.keys)
            .map_err(|e| self.inner.server.err("counting live workers", e))
    }

    /// Jobs submitted and not answered yet.
    pub fn outstanding(&self) -> usize {
        self.inner.outstanding()
    }
}

/// One host of a cluster queue, from [`ClusterMonitor::hosts`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostProgress {
    /// The host's name, as its workers see it.
    pub host: String,
    /// Its workers serving the queue now (heartbeat alive).
    pub workers: usize,
    /// Jobs its live workers hold now: running, or about to (of every
    /// caller of the queue).
    pub running: usize,
    /// This executor's tasks that workers there finished with a value.
    pub done: usize,
    /// This executor's tasks that failed there (an error or a panic).
    pub failed: usize,
}

impl std::fmt::Display for HostProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} workers, {} running, {} done, {} failed",
            self.host, self.workers, self.running, self.done, self.failed
        )
    }
}
