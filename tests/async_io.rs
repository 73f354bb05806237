//! The async forms never touch the store on the caller's thread: a
//! connector that records where it is called proves it.

use std::future::Future;
use std::sync::Mutex;
use std::thread::ThreadId;

use proxystore::connectors::{Connector, ConnectorConfig, FromConfig, LocalConnector};
use proxystore::executor::ThreadPool;
use proxystore::{proxied, Key, Result, Store, StoreExecutor, TaskValue};

mod support;

use support::common::block_on;

/// Where each `set` and `get` ran.
static CALLS: Mutex<Vec<(&'static str, ThreadId)>> = Mutex::new(Vec::new());

fn record(op: &'static str) {
    CALLS
        .lock()
        .unwrap()
        .push((op, std::thread::current().id()));
}

#[derive(Debug, Default)]
struct Recording {
    inner: LocalConnector,
}

impl Connector for Recording {
    fn config(&self) -> ConnectorConfig {
        ConnectorConfig::new(Self::KIND, &()).unwrap()
    }
    fn set(&self, key: &Key, parts: &[&[u8]]) -> Result<()> {
        record("set");
        self.inner.set(key, parts)
    }
    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        record("get");
        self.inner.get(key)
    }
    fn exists(&self, key: &Key) -> Result<bool> {
        self.inner.exists(key)
    }
    fn evict(&self, key: &Key) -> Result<()> {
        record("evict");
        self.inner.evict(key)
    }
    fn close(&self) -> Result<()> {
        self.inner.close()
    }
    fn keys(&self) -> Result<Vec<Key>> {
        self.inner.keys()
    }
}

impl FromConfig for Recording {
    const KIND: &'static str = "tests.recording";
    fn from_config(_: &ConnectorConfig) -> Result<Self> {
        Ok(Recording::default())
    }
}

proxystore::register_connector!(Recording);

#[proxied(types = [Vec<u8>])]
fn reverse(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.reverse();
    bytes
}

fn calls_on(op: &str, thread: ThreadId) -> usize {
    CALLS
        .lock()
        .unwrap()
        .iter()
        .filter(|(o, t)| *o == op && *t == thread)
        .count()
}

#[test]
fn async_submit_and_first_resolve_stay_off_the_callers_thread() {
    let here = std::thread::current().id();
    let store = Store::builder("async-io", Recording::default())
        .cache_size(0)
        .build()
        .unwrap();
    let executor = StoreExecutor::new(ThreadPool::new(2).unwrap(), store.clone());
    let payload: Vec<u8> = (0..1 << 20).map(|i| i as u8).collect();

    let result: TaskValue<Vec<u8>> = block_on(async {
        let future = executor
            .submit_async(reverse::task(payload.clone()))
            .await
            .unwrap();
        future.await.unwrap().resolved().await.unwrap()
    });
    assert!(result.is_proxy());
    assert_eq!(result.first(), payload.last());
    assert!(CALLS.lock().unwrap().iter().any(|(op, _)| *op == "set"));
    assert_eq!(
        calls_on("set", here),
        0,
        "the argument was stored elsewhere"
    );
    assert_eq!(calls_on("get", here), 0, "the result was read elsewhere");

    // The blocking forms do run here (the recording works).
    let value = executor
        .submit(reverse::task(payload))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(value.len(), 1 << 20);
    assert!(calls_on("set", here) > 0 && calls_on("get", here) > 0);
}

#[test]
fn a_dropped_async_submit_leaves_nothing_behind() {
    let connector = LocalConnector::new();
    let store = Store::new("async-io-dropped", connector.clone()).unwrap();
    let executor = StoreExecutor::new(ThreadPool::new(1).unwrap(), store).close_store(false);
    let mut pending = 0;
    for _ in 0..20 {
        // Polled once (the put starts on a background thread), then dropped.
        // 8 MiB: the put takes far longer than the poll that follows it, so
        // the submission is nearly always still pending; a warm background
        // thread may still win now and then, and then the task runs, which
        // must leave nothing behind too.
        let submit = executor.submit_async(reverse::task(vec![1u8; 8 << 20]));
        let mut submit = std::pin::pin!(submit);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if submit.as_mut().poll(&mut cx).is_pending() {
            pending += 1;
        }
    }
    assert!(pending > 0, "no submission was ever dropped while pending");
    drop(executor);
    // The background puts finish, see nobody waits, and evict what they
    // stored.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !connector.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(connector.len(), 0);
}

#[test]
fn an_async_submit_dropped_after_its_put_finished_leaves_nothing_behind() {
    let connector = LocalConnector::new();
    let store = Store::new("async-io-dropped-late", connector.clone()).unwrap();
    let executor = StoreExecutor::new(ThreadPool::new(1).unwrap(), store).close_store(false);
    struct Flag(std::sync::Mutex<bool>, std::sync::Condvar);
    impl std::task::Wake for Flag {
        fn wake(self: std::sync::Arc<Self>) {
            *self.0.lock().unwrap() = true;
            self.1.notify_all();
        }
    }
    let flag = std::sync::Arc::new(Flag(
        std::sync::Mutex::new(false),
        std::sync::Condvar::new(),
    ));
    let waker = std::task::Waker::from(flag.clone());
    {
        // 8 MiB: the put outlasts the first poll (see above).
        let submit = executor.submit_async(reverse::task(vec![1u8; 8 << 20]));
        let mut submit = std::pin::pin!(submit);
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(submit.as_mut().poll(&mut cx).is_pending());
        // Woken: the argument is stored; then dropped without being polled.
        let woken = flag.0.lock().unwrap();
        let (woken, _) = flag
            .1
            .wait_timeout_while(woken, std::time::Duration::from_secs(10), |w| !*w)
            .unwrap();
        assert!(*woken);
        assert_eq!(connector.len(), 1, "the argument is in the store");
    }
    assert_eq!(connector.len(), 0, "evicted when the submit was dropped");
    drop(executor);
}

#[test]
fn owned_results_dropped_on_an_async_thread_are_evicted_elsewhere() {
    let store = Store::builder("async-io-drop", Recording::default())
        .cache_size(0)
        .build()
        .unwrap();
    let executor = std::sync::Arc::new(StoreExecutor::new(
        ThreadPool::new(2).unwrap(),
        store.clone(),
    ));
    // A thread that polls the crate's futures: an async runtime's, as far
    // as the crate can tell.
    let runtime_thread = {
        let executor = executor.clone();
        std::thread::spawn(move || {
            let here = std::thread::current().id();
            let key = block_on(async {
                let result = executor
                    .submit_async(reverse::task(vec![7u8; 1 << 20]))
                    .await
                    .unwrap()
                    .await
                    .unwrap()
                    .resolved()
                    .await
                    .unwrap();
                assert_eq!(result.first(), Some(&7));
                let key = result.key().expect("stored");
                drop(result); // owned: dropping it evicts it
                key
            });
            // A result finished and never taken is discarded when its
            // future is dropped: also elsewhere.
            let future = executor.submit(reverse::task(vec![8u8; 1 << 20])).unwrap();
            while !future.done() {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            drop(future);
            (here, key)
        })
    };
    let (here, key) = runtime_thread.join().unwrap();
    // Done before anyone can tell (the store waits for queued evictions).
    assert!(
        !store.exists(&key).unwrap(),
        "the dropped result was evicted"
    );
    assert!(store.is_empty().unwrap(), "nothing is left");
    assert_eq!(
        calls_on("evict", here),
        0,
        "no eviction ran on the async runtime's thread"
    );

    // A thread that never polled one evicts at once, on its own thread.
    let blocking = {
        let executor = executor.clone();
        std::thread::spawn(move || {
            let result = executor
                .submit(reverse::task(vec![9u8; 1 << 20]))
                .unwrap()
                .result()
                .unwrap();
            drop(result);
            std::thread::current().id()
        })
    };
    let there = blocking.join().unwrap();
    assert!(
        calls_on("evict", there) > 0,
        "evicted on the dropping thread"
    );
    assert!(store.is_empty().unwrap());
}
