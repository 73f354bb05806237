//! Idle connections shared by every connector of a process to one server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// Idle connections to one server (one URL, credentials and timeouts
/// included), shared by every connector that uses it: a worker that
/// rebuilt stores of many namespaces keeps a few connections, not one per
/// namespace. The connections close when the last connector goes.
#[derive(Default)]
pub(super) struct Pool {
    pub(super) idle: Mutex<Vec<redis::Connection>>,
}

/// The pool for `url` with these timeouts.
pub(super) fn shared_pool(url: &str, connect_timeout_ms: u64, io_timeout_ms: u64) -> Arc<Pool> {
    type Pools = HashMap<(String, u64, u64), Weak<Pool>>;
    static POOLS: OnceLock<Mutex<Pools>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let key = (url.to_string(), connect_timeout_ms, io_timeout_ms);
    if let Some(pool) = pools.get(&key).and_then(Weak::upgrade) {
        return pool;
    }
    // Forget the servers no connector uses any more.
    pools.retain(|_, pool| pool.strong_count() > 0);
    let pool = Arc::new(Pool::default());
    pools.insert(key, Arc::downgrade(&pool));
    pool
}
