//! StoreExecutor over both pools: policies, ownership, cleanup, failures.

mod support;

use support::common::{block_on, unique};
use support::pools::{count, Fixture, Pool};

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxystore::connectors::FileConnector;
use proxystore::executor::{Completion, Executor, ProcessPool, ThreadPool};
use proxystore::task::{find_task, run_job_bytes};
use proxystore::{
    proxied, Error, Job, OwnedProxy, Proxy, ShouldProxy, Store, StoreExecutor, TaskValue,
};

proxystore::test_worker!();

#[proxied]
fn double(x: i64) -> i64 {
    x * 2
}

#[proxied]
fn length(bytes: Vec<u8>) -> u64 {
    bytes.len() as u64
}

#[proxied]
fn echo(bytes: Vec<u8>) -> Vec<u8> {
    bytes
}

/// Counts the objects in `dir` while the task runs: shows whether
/// `payload` was proxied.
#[proxied]
fn objects_during(dir: PathBuf, payload: Vec<u8>) -> usize {
    assert!(!payload.is_empty());
    count(&dir)
}

#[proxied(types = [Vec<u8>])]
fn objects_during_listed(dir: PathBuf, payload: Vec<u8>) -> usize {
    assert!(!payload.is_empty());
    count(&dir)
}

#[proxied(types = [String])]
fn concat(base: String, num: i64) -> String {
    format!("{base}-{num}")
}

#[proxied(types = [Vec<f64>])]
fn sum(values: Vec<f64>) -> f64 {
    values.iter().sum()
}

/// Large raw values by value both ways, beside small ones: each argument
/// must arrive as sent and in its place.
#[proxied]
fn mix(
    tag: i64,
    floats: Vec<f64>,
    text: String,
    small: Vec<u8>,
    bytes: Vec<u8>,
) -> (i64, Vec<f64>) {
    let scaled = floats.iter().map(|x| x * 2.0).collect();
    let check = tag
        + text.len() as i64
        + small.iter().map(|b| *b as i64).sum::<i64>()
        + bytes.iter().map(|b| *b as i64).sum::<i64>();
    (check, scaled)
}

#[proxied]
fn shout(text: String) -> String {
    text.to_uppercase()
}

#[proxied]
fn explode(message: String) -> i64 {
    panic!("{message}")
}

#[proxied]
fn refuse(x: i64) -> Result<i64, String> {
    if x < 0 {
        Err(format!("{x} is negative"))
    } else {
        Ok(x)
    }
}

#[proxied]
fn die(_x: i64) -> i64 {
    std::process::abort()
}

#[proxied]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[proxied]
fn chatty(lines: u32) -> u32 {
    for i in 0..lines {
        println!("task output line {i}: this must not disturb the protocol");
    }
    lines
}

/// Returns the proxy it was given: a proxy is a reference, never stored
/// again (listed here, and offered to the policy below).
#[proxied(types = [Proxy<String>])]
fn pass_listed(proxy: Proxy<String>) -> Proxy<String> {
    proxy
}

#[proxied]
fn pass(proxy: Proxy<String>) -> Proxy<String> {
    proxy
}

#[proxied(types = [Proxy<String>])]
fn objects_while_holding(dir: PathBuf, proxy: Proxy<String>) -> usize {
    assert_eq!(*proxy, "original");
    count(&dir)
}

#[proxied]
fn pass_all(proxies: Vec<Proxy<String>>) -> Vec<Proxy<String>> {
    proxies
}

/// A user predicate, evaluated in workers too: proxy byte buffers that
/// start with a marker.
fn marked(info: &proxystore::policy::ValueInfo<'_>) -> bool {
    info.value
        .downcast_ref::<Vec<u8>>()
        .is_some_and(|b| b.first() == Some(&0xAB))
}
proxystore::register_predicate!("tests.marked", marked);

#[proxied(name = "tests.duplicate")]
fn first_duplicate(x: i64) -> i64 {
    x
}

#[proxied(name = "tests.duplicate")]
fn second_duplicate(x: i64) -> i64 {
    x
}

fn default_policy_passes_everything_by_value(pool: Pool) {
    let f = Fixture::new("exec");
    let ex = f.executor(pool);
    let r = ex.submit(double::task(21)).unwrap().result().unwrap();
    assert!(!r.is_proxy());
    assert_eq!(*r, 42);
    let during = ex
        .submit(objects_during::task(f.objects(), vec![1; 100]))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(*during, 0, "nothing went through the store");
    drop(ex);
    assert_eq!(f.left(), 0);
}

fn large_values_by_value_arrive_whole_and_in_order(pool: Pool) {
    let f = Fixture::new("exec");
    let ex = f.executor(pool);
    let floats: Vec<f64> = (0..300_000).map(|i| i as f64 * 0.5).collect();
    let bytes: Vec<u8> = (0..1_000_000u32).map(|i| (i % 7) as u8).collect();
    let text = "é".repeat(50_000);
    let expected = 5 + text.len() as i64 + 6 + bytes.iter().map(|b| *b as i64).sum::<i64>();
    let r = ex
        .submit(mix::task(
            5,
            floats.clone(),
            text.clone(),
            vec![1, 2, 3],
            bytes,
        ))
        .unwrap()
        .result()
        .unwrap();
    assert!(!r.is_proxy());
    assert_eq!(r.0, expected);
    assert_eq!(r.1.len(), floats.len());
    assert!(r.1.iter().zip(&floats).all(|(a, b)| *a == b * 2.0));
    // A large result of each fast-path kind.
    let big = ex
        .submit(echo::task(vec![7u8; 3 << 20]))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(big.into_value().unwrap(), vec![7u8; 3 << 20]);
    let loud = ex.submit(shout::task(text)).unwrap().result().unwrap();
    assert_eq!(*loud, "É".repeat(50_000));
    drop(ex);
    assert_eq!(f.left(), 0);
}

fn proxy_always_with_ownership(pool: Pool) {
    let f = Fixture::new("exec");
    let ex = f.executor(pool).should_proxy(ShouldProxy::Always);
    let results: Vec<TaskValue<Vec<u8>>> = (0..5u8)
        .map(|i| ex.submit(echo::task(vec![i; 1000])).unwrap())
        .map(|fut| fut.result().unwrap())
        .collect();
    for (i, r) in results.iter().enumerate() {
        assert!(matches!(r, TaskValue::Owned(_)));
        assert_eq!(**r, vec![i as u8; 1000]);
    }
    assert_eq!(f.left(), 5, "inputs evicted, the five owned results remain");
    drop(results);
    assert_eq!(f.left(), 0, "dropping owned results evicts them");
    drop(ex);
    assert_eq!(f.left(), 0);
}

fn proxy_always_without_ownership(pool: Pool) {
    let f = Fixture::new("exec");
    let ex = f
        .executor(pool)
        .should_proxy(ShouldProxy::Always)
        .ownership(false);
    let r = ex.submit(double::task(5)).unwrap().result().unwrap();
    let TaskValue::Proxy(proxy) = &r else {
        panic!("expected a plain proxy, got {r:?}")
    };
    assert_eq!(**proxy, 10);
    let key = Proxy::key(proxy);
    drop(r);
    assert_eq!(f.left(), 1, "without ownership the caller cleans up");
    f.store.evict(&key).unwrap();
    assert_eq!(f.left(), 0);
}

fn proxy_type_policy(pool: Pool) {
    let f = Fixture::new("exec");
    let ex = f
        .executor(pool)
        .should_proxy(ShouldProxy::types::<(Vec<u8>,)>());
    let during = ex
        .submit(objects_during::task(f.objects(), vec![7; 10]))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(
        *during, 1,
        "the Vec<u8> went through the store, the PathBuf did not"
    );
    assert!(!during.is_proxy(), "usize is not in the list");
    let r = ex
        .submit(echo::task(vec![1, 2, 3]))
        .unwrap()
        .result()
        .unwrap();
    assert!(r.is_proxy(), "a Vec<u8> result is proxied too");
    drop(r);
    assert_eq!(f.left(), 0);
}

fn size_threshold_policy(pool: Pool) {
    let f = Fixture::new("exec");
    let ex = f.executor(pool).should_proxy(ShouldProxy::MinSize(4096));
    let small = ex
        .submit(objects_during::task(f.objects(), vec![1; 100]))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(*small, 0);
    let large = ex
        .submit(objects_during::task(f.objects(), vec![1; 100_000]))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(*large, 1);
    let r = ex
        .submit(echo::task(vec![9; 100_000]))
        .unwrap()
        .result()
        .unwrap();
    assert!(r.is_proxy(), "a large result is proxied in the worker");
    let r2 = ex
        .submit(echo::task(vec![9; 10]))
        .unwrap()
        .result()
        .unwrap();
    assert!(!r2.is_proxy());
    drop((r, r2));
    assert_eq!(f.left(), 0);
}

fn user_predicate(pool: Pool) {
    let f = Fixture::new("exec");
    let policy = ShouldProxy::predicate("tests.marked").unwrap();
    let ex = f.executor(pool).should_proxy(policy);
    let marked_during = ex
        .submit(objects_during::task(f.objects(), vec![0xAB; 10]))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(*marked_during, 1);
    let plain_during = ex
        .submit(objects_during::task(f.objects(), vec![0x01; 10]))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(*plain_during, 0);
    // The worker applies it to results as well.
    let marked = ex
        .submit(echo::task(vec![0xAB, 1]))
        .unwrap()
        .result()
        .unwrap();
    let plain = ex
        .submit(echo::task(vec![0x01, 1]))
        .unwrap()
        .result()
        .unwrap();
    assert!(marked.is_proxy() && !plain.is_proxy());
    drop((marked, plain));
    assert_eq!(f.left(), 0);
    let err = ShouldProxy::predicate("tests.no-such").unwrap_err();
    assert!(err.to_string().contains("tests.marked"), "{err}");
}

fn compile_time_types(pool: Pool) {
    let f = Fixture::new("exec");
    let ex = f.executor(pool); // ProxyNever at run time
    let during = ex
        .submit(objects_during_listed::task(f.objects(), vec![1; 10]))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(*during, 1, "Vec<u8> is listed: always proxied");
    let r = ex
        .submit(concat::task("foobar".to_string(), 42))
        .unwrap()
        .result()
        .unwrap();
    assert!(r.is_proxy());
    assert_eq!(*r, "foobar-42");
    let total = ex
        .submit(sum::task(vec![0.5; 1000]))
        .unwrap()
        .result()
        .unwrap();
    assert!(!total.is_proxy());
    assert_eq!(*total, 500.0);
    drop(r);
    assert_eq!(f.left(), 0);
}

fn existing_proxies_and_borrows_are_passed_as_they_are(pool: Pool) {
    let f = Fixture::new("exec");
    let ex = f.executor(pool).should_proxy(ShouldProxy::Always);
    let proxy = f.store.proxy(vec![5u8; 64]).unwrap();
    let owner = f.store.owned_proxy(vec![6u8; 32]).unwrap();
    let a = ex
        .submit(length::task(proxy.clone()))
        .unwrap()
        .result()
        .unwrap();
    let b = ex.submit(length::task(&owner)).unwrap().result().unwrap();
    let c = ex
        .submit(length::task(OwnedProxy::borrow(&owner)))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!((*a, *b, *c), (64, 32, 32));
    drop((a, b, c));
    assert_eq!(
        f.left(),
        2,
        "caller's objects are not evicted by the executor"
    );
    assert!(f.store.exists(&Proxy::key(&proxy)).unwrap());
    drop(owner);
    f.store.evict(&Proxy::key(&proxy)).unwrap();
    assert_eq!(f.left(), 0);
}

fn a_proxy_is_passed_through_never_proxied_again(pool: Pool) {
    let f = Fixture::new("exec");
    let original = f.store.proxy("original".to_string()).unwrap();
    let key = Proxy::key(&original);

    let ex = f.executor(pool);
    let during = ex
        .submit(objects_while_holding::task(f.objects(), original.clone()))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(*during, 1, "only the original object is in the store");

    let ex = f.executor(pool).should_proxy(ShouldProxy::Always);
    let listed = ex.submit(pass_listed::task(original.clone())).unwrap();
    let offered = ex.submit(pass::task(original.clone())).unwrap();
    for r in [listed.result().unwrap(), offered.result().unwrap()] {
        let TaskValue::Value(returned) = &r else {
            panic!("a returned proxy comes back as itself, got {r:?}")
        };
        assert_eq!(Proxy::key(returned), key);
        assert_eq!(**returned, "original");
        assert_eq!(f.left(), 1, "no proxy of a proxy was stored");
    }

    // Only a proxy itself passes through: a Vec of proxies is a value.
    let all = ex
        .submit(pass_all::task(vec![original.clone(); 3]))
        .unwrap()
        .result()
        .unwrap();
    assert!(matches!(all, TaskValue::Owned(_)), "{all:?}");
    assert!(all
        .iter()
        .all(|p| Proxy::key(p) == key && **p == "original"));
    assert_eq!(f.left(), 2, "the original and the owned result");
    drop((all, during, ex));
    assert_eq!(f.left(), 1, "the original is left to its owner");
    assert!(f.store.exists(&key).unwrap());
}

fn results_that_outlive_the_closed_store_fail_clearly_and_do_not_resurrect_it(pool: Pool) {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects");
    let name = unique("outlived");
    let store = Store::new(&name, FileConnector::new(&objects).unwrap()).unwrap();
    let ex = StoreExecutor::new(pool.make(), store).should_proxy(ShouldProxy::Always);
    let owned = ex.submit(double::task(21)).unwrap().result().unwrap();
    let TaskValue::Owned(owner) = &owned else {
        panic!("expected an owned result, got {owned:?}")
    };
    let factory = OwnedProxy::factory(owner);
    let plain: Proxy<i64> = Proxy::from_parts(factory.store_config().clone(), factory.key());
    drop(ex); // closes the store
    assert!(!objects.exists());

    let closed = |err: Error| matches!(&err, Error::StoreClosed { store } if *store == name);
    assert!(closed(owned.resolve().unwrap_err()));
    assert!(closed(Proxy::resolve(&plain).unwrap_err()));
    assert!(
        proxystore::store::get_store(&name).is_none(),
        "resolving did not build the store again"
    );
    drop(owned); // the owner evicts: no panic, nothing built or created
    assert!(proxystore::store::get_store(&name).is_none());
    assert!(!objects.exists());

    let again = Store::new(&name, FileConnector::new(&objects).unwrap()).unwrap();
    let err = Proxy::resolve(&plain).unwrap_err();
    assert!(matches!(err, Error::MissingObject { .. }), "{err}");
    again.close().unwrap();
}

fn shutdown_closes_the_store_after_running_tasks(pool: Pool) {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects");
    let store = Store::new(unique("shutdown"), FileConnector::new(&objects).unwrap()).unwrap();
    let ex = StoreExecutor::new(pool.make(), store.clone());
    let slow = ex
        .submit(objects_during_listed::task(objects.clone(), vec![1; 10]))
        .unwrap();
    let slower = ex.submit(sleep_ms::task(150)).unwrap();
    ex.shutdown(true, false);
    assert!(
        store.is_closed(),
        "shutdown closes the store, as ProxyStore's does"
    );
    assert!(!objects.exists());
    assert_eq!(*slow.result().unwrap(), 1, "tasks ran before the close");
    assert_eq!(*slower.result().unwrap(), 150);
    assert!(matches!(
        ex.submit(double::task(1)),
        Err(Error::ShutDown { .. })
    ));
    ex.shutdown(true, false);
    drop(ex);
    assert!(proxystore::store::get_store(store.name()).is_none());
}

fn shutdown_without_waiting_closes_the_store_at_once(pool: Pool) {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects");
    let store = Store::new(unique("no-wait"), FileConnector::new(&objects).unwrap()).unwrap();
    let ex = StoreExecutor::new(pool.make(), store.clone()).should_proxy(ShouldProxy::Always);
    let running = ex.submit(sleep_ms::task(300)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    ex.shutdown(false, false);
    assert!(store.is_closed(), "closed without waiting for the task");
    // The task cannot store its result any more: its future fails, clearly.
    let err = running.result().unwrap_err();
    assert!(matches!(err, Error::TaskFailed { .. }), "{err}");
    if let Pool::Threads = pool {
        assert!(err.to_string().contains("is closed"), "{err}");
    }
    drop(ex);
    assert!(
        proxystore::store::get_store(store.name()).is_none(),
        "nothing built the store again"
    );
    assert!(!objects.exists(), "nothing created its directory again");
}

fn map_keeps_input_order(pool: Pool) {
    let f = Fixture::new("exec");
    let ex = f.executor(pool).should_proxy(ShouldProxy::Always);
    let out: Vec<i64> = ex
        .map((0..50).map(double::task))
        .unwrap()
        .map(|r| r.unwrap().into_value().unwrap())
        .collect();
    assert_eq!(out, (0..50).map(|i| i * 2).collect::<Vec<_>>());
    assert_eq!(f.left(), 0);
}

fn failures_fail_the_future_and_the_pool_goes_on(pool: Pool) {
    let f = Fixture::new("exec");
    let ex = f.executor(pool).should_proxy(ShouldProxy::Always);
    let err = ex
        .submit(explode::task("kaboom".to_string()))
        .unwrap()
        .result()
        .unwrap_err();
    assert!(
        matches!(&err, Error::TaskFailed { task, message, .. } if task.ends_with("explode") && message.contains("kaboom")),
        "{err}"
    );
    let err = ex.submit(refuse::task(-3)).unwrap().result().unwrap_err();
    assert!(err.to_string().contains("-3 is negative"), "{err}");
    assert_eq!(*ex.submit(refuse::task(3)).unwrap().result().unwrap(), 3);
    assert_eq!(*ex.submit(double::task(1)).unwrap().result().unwrap(), 2);
    assert_eq!(f.left(), 0, "inputs of failed tasks are evicted");
}

fn cancellation(pool: Pool) {
    let f = Fixture::new("exec");
    let ex = f.executor(pool.serial()).should_proxy(ShouldProxy::Always);
    let slow = ex.submit(sleep_ms::task(300)).unwrap();
    let waiting: Vec<_> = (0..3)
        .map(|i| ex.submit(double::task(i)).unwrap())
        .collect();
    assert_eq!(f.left(), 4);
    std::thread::sleep(Duration::from_millis(50));
    assert!(!slow.cancel(), "a running task cannot be cancelled");
    assert!(waiting[1].cancel());
    assert!(waiting[1].cancelled() && waiting[1].done());
    let mut it = waiting.into_iter();
    let (w0, w1, w2) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    assert!(matches!(w1.result(), Err(Error::Cancelled { .. })));
    assert_eq!(*slow.result().unwrap(), 300);
    assert_eq!(*w0.result().unwrap(), 0);
    assert_eq!(*w2.result().unwrap(), 4);
    assert_eq!(f.left(), 0, "the cancelled task's input was evicted");

    // Shutting down with cancel_futures cancels what has not started.
    let slow = ex.submit(sleep_ms::task(200)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let pending = ex.submit(double::task(9)).unwrap();
    ex.shutdown(true, true);
    assert!(pending.cancelled());
    assert!(slow.result().is_ok());
    assert!(matches!(
        ex.submit(double::task(1)),
        Err(Error::ShutDown { .. })
    ));
    assert_eq!(f.left(), 0);
}

fn futures_wait_time_out_call_back_and_await(pool: Pool) {
    let f = Fixture::new("exec");
    let ex = f.executor(pool);
    let mut fut = ex.submit(sleep_ms::task(300)).unwrap();
    let err = fut.result_timeout(Duration::from_millis(20)).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }));
    assert!(!fut.done());
    let (tx, rx) = std::sync::mpsc::channel();
    fut.add_done_callback(move |status| tx.send(status.is_ok()).unwrap());
    assert_eq!(*fut.result_timeout(Duration::from_secs(10)).unwrap(), 300);
    assert!(rx.recv_timeout(Duration::from_secs(1)).unwrap());
    let late = ex.submit(double::task(4)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let r = block_on(late);
    late_callback_check(&ex, tx);
    assert!(!rx.recv().unwrap());
    assert_eq!(*r.unwrap(), 8);
}

fn late_callback_check(ex: &StoreExecutor, tx: std::sync::mpsc::Sender<bool>) {
    let fut = ex.submit(refuse::task(-1)).unwrap();
    while !fut.done() {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Added after completion: runs at once, with the failure.
    fut.add_done_callback(move |status| tx.send(status.is_ok()).unwrap());
}

fn printing_tasks(pool: Pool) {
    let f = Fixture::new("exec");
    let ex = f.executor(pool);
    let results: Vec<u32> = ex
        .map((0..20).map(|_| chatty::task(50)))
        .unwrap()
        .map(|r| *r.unwrap())
        .collect();
    assert_eq!(results, vec![50; 20]);
}

fn dropped_futures_leave_nothing_behind(pool: Pool) {
    let f = Fixture::new("exec");
    let ex = f.executor(pool).should_proxy(ShouldProxy::Always);
    for i in 0..10 {
        drop(ex.submit(double::task(i)).unwrap()); // never waited for
    }
    drop(ex); // waits for the running tasks
    assert_eq!(f.left(), 0);
}

for_both_pools!(
    default_policy_passes_everything_by_value,
    large_values_by_value_arrive_whole_and_in_order,
    proxy_always_with_ownership,
    proxy_always_without_ownership,
    proxy_type_policy,
    size_threshold_policy,
    user_predicate,
    compile_time_types,
    existing_proxies_and_borrows_are_passed_as_they_are,
    a_proxy_is_passed_through_never_proxied_again,
    results_that_outlive_the_closed_store_fail_clearly_and_do_not_resurrect_it,
    shutdown_closes_the_store_after_running_tasks,
    shutdown_without_waiting_closes_the_store_at_once,
    map_keeps_input_order,
    failures_fail_the_future_and_the_pool_goes_on,
    cancellation,
    futures_wait_time_out_call_back_and_await,
    printing_tasks,
    dropped_futures_leave_nothing_behind,
);

#[test]
fn a_killed_worker_fails_its_tasks_quickly_and_is_replaced() {
    let f = Fixture::new("exec");
    let ex = f
        .executor(Pool::Processes)
        .should_proxy(ShouldProxy::Always);
    let before: Vec<_> = (0..4)
        .map(|i| ex.submit(double::task(i)).unwrap())
        .collect();
    let started = Instant::now();
    let err = ex.submit(die::task(0)).unwrap().result().unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(&err, Error::WorkerDied { task, .. } if task.ends_with("die")),
        "{err}"
    );
    assert!(err.to_string().contains("signal"), "{err}");
    for (i, fut) in before.into_iter().enumerate() {
        // Tasks queued on the same worker behind the fatal one fail too;
        // the others complete.
        match fut.result() {
            Ok(v) => assert_eq!(*v, 2 * i as i64),
            Err(e) => assert!(matches!(e, Error::WorkerDied { .. }), "{e}"),
        }
    }
    // The pool goes on with a new worker.
    let out: Vec<i64> = ex
        .map((0..20).map(double::task))
        .unwrap()
        .map(|r| *r.unwrap())
        .collect();
    assert_eq!(out, (0..20).map(|i| i * 2).collect::<Vec<_>>());
    drop(ex);
    assert_eq!(
        f.left(),
        0,
        "inputs and results of the dead worker's tasks are evicted"
    );
}

#[test]
fn a_worker_killed_from_outside_is_reported_and_replaced() {
    let f = Fixture::new("exec");
    let pool = Arc::new(ProcessPool::builder(1).test_harness().build().unwrap());
    let ex = StoreExecutor::new(pool.clone(), f.store.clone()).close_store(false);
    let fut = ex.submit(sleep_ms::task(5_000)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 1);
    let status = std::process::Command::new("kill")
        .args(["-9", &pids[0].to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let err = fut.result().unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(&err, Error::WorkerDied { pid, .. } if *pid == pids[0]),
        "{err}"
    );
    assert!(err.to_string().contains("SIGKILL"), "{err}");
    assert_eq!(*ex.submit(double::task(8)).unwrap().result().unwrap(), 16);
    let new_pids = pool.worker_pids();
    assert_eq!(new_pids.len(), 1);
    assert_ne!(new_pids[0], pids[0], "a new worker took its place");
}

/// A user's executor: ships each job as bytes, as a client of a
/// distributed scheduler would, and runs it "remotely" on a thread.
struct SchedulerClient {
    submitted: AtomicUsize,
}

impl Executor for SchedulerClient {
    fn submit(&self, job: Job, completion: Completion) {
        self.submitted.fetch_add(1, Ordering::Relaxed);
        let wire = job.to_bytes();
        std::thread::spawn(move || {
            if completion.start() {
                completion.complete(run_job_bytes(&wire));
            }
        });
    }

    fn shutdown(&self, _wait: bool, _cancel_pending: bool) {}
}

#[test]
fn a_user_implemented_executor() {
    let f = Fixture::new("exec");
    let client = Arc::new(SchedulerClient {
        submitted: AtomicUsize::new(0),
    });
    let ex = StoreExecutor::new(client.clone(), f.store.clone())
        .close_store(false)
        .should_proxy(ShouldProxy::Always);
    let r = ex
        .submit(concat::task("remote".to_string(), 7))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(*r, "remote-7");
    let out: Vec<i64> = ex
        .map((0..5).map(double::task))
        .unwrap()
        .map(|r| *r.unwrap())
        .collect();
    assert_eq!(out, [0, 2, 4, 6, 8]);
    assert_eq!(client.submitted.load(Ordering::Relaxed), 6);
    drop(r);
    assert_eq!(f.left(), 0);
}

/// An executor that loses jobs: their futures fail instead of hanging.
struct Forgetful;

impl Executor for Forgetful {
    fn submit(&self, _job: Job, _completion: Completion) {}
    fn shutdown(&self, _wait: bool, _cancel_pending: bool) {}
}

#[test]
fn a_lost_job_fails_instead_of_hanging() {
    let f = Fixture::new("exec");
    let ex = StoreExecutor::new(Forgetful, f.store.clone())
        .close_store(false)
        .should_proxy(ShouldProxy::Always);
    let err = ex.submit(double::task(1)).unwrap().result().unwrap_err();
    assert!(matches!(err, Error::ShutDown { .. }), "{err}");
    assert_eq!(f.left(), 0);
}

#[test]
fn unknown_and_duplicate_task_names_are_reported() {
    let err = find_task("no.such.task").unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::UnknownTask { .. }));
    assert!(
        text.contains("executor::double") && text.contains("executor::concat"),
        "{text}"
    );
    let err = find_task("tests.duplicate").unwrap_err();
    assert!(matches!(err, Error::DuplicateTask { .. }), "{err}");
    assert!(err.to_string().contains("tests/executor.rs"), "{err}");
    assert!(proxystore::task::check_registry().is_err());
    assert_eq!(first_duplicate(1) + second_duplicate(1), 2);
    assert_eq!(find_task(double::NAME).map(|_| ()).ok(), Some(()));
}

#[test]
fn dropping_the_executor_closes_the_store_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(
        unique("closing"),
        FileConnector::new(dir.path().join("objects")).unwrap(),
    )
    .unwrap();
    let ex = StoreExecutor::new(ThreadPool::new(1).unwrap(), store.clone());
    assert_eq!(*ex.submit(double::task(2)).unwrap().result().unwrap(), 4);
    drop(ex);
    assert!(store.is_closed());
    assert!(!dir.path().join("objects").exists());
}

#[test]
fn a_main_that_forgets_worker_init_cannot_start_pools_from_its_workers() {
    // As a pool starts it: with the worker variable set. Without the guard
    // this process would start a pool of its own, whose workers would do
    // the same, without end.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_proxystore-peer"))
        .arg("make-pool")
        .env(proxystore::worker::WORKER_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("before calling proxystore::worker::init()"),
        "{stdout}"
    );
}

#[test]
fn workers_that_do_not_speak_the_protocol_fail_tasks_instead_of_hanging() {
    let f = Fixture::new("exec");
    // The peer does not call worker::init(): it exits at once.
    let pool = ProcessPool::builder(1)
        .program(env!("CARGO_BIN_EXE_proxystore-peer"))
        .build()
        .unwrap();
    let ex = StoreExecutor::new(pool, f.store.clone())
        .close_store(false)
        .should_proxy(ShouldProxy::Always);
    let started = Instant::now();
    let err = ex.submit(double::task(1)).unwrap().result().unwrap_err();
    assert!(matches!(err, Error::WorkerDied { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(ex);
    assert_eq!(f.left(), 0);
}

#[test]
fn a_thread_pool_dropped_from_its_own_done_callback_neither_panics_nor_hangs() {
    let f = Fixture::new("exec");
    let ex = Arc::new(f.executor(Pool::Serial));
    let first = ex.submit(sleep_ms::task(100)).unwrap();
    let second = ex.submit(sleep_ms::task(50)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let last = ex.clone();
    first.add_done_callback(move |_| {
        drop(last);
        tx.send(()).unwrap();
    });
    drop(ex);
    rx.recv_timeout(Duration::from_secs(30))
        .expect("dropping the executor in its own callback returned");
    assert!(first.result().is_ok());
    assert_eq!(*second.result().unwrap(), 50);
}
