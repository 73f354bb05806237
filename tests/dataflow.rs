//! Data flow between tasks on both pools: results and futures passed
//! straight to the next task, ownership moved into tasks, held tasks and
//! their upstream failures.

mod support;

use support::common::{block_on, unique};
use support::pools::{Fixture, Pool};

use std::time::Duration;

use proxystore::executor::{as_completed, as_completed_stream, wait, ReturnWhen, ThreadPool};
use proxystore::{proxied, Error, OwnedProxy, Proxy, Store, StoreExecutor, StoreFuture, TaskValue};

proxystore::test_worker!();

/// A `next` for every stream, as `futures::StreamExt` gives: in scope in
/// this whole file, so it only builds if no type of the crate used here is
/// both an `Iterator` and a `Stream` (whose `next` would be ambiguous).
trait StreamNext: futures_core::Stream + Unpin + Sized {
    fn next(&mut self) -> impl std::future::Future<Output = Option<Self::Item>> + '_ {
        std::future::poll_fn(move |cx| std::pin::Pin::new(&mut *self).poll_next(cx))
    }
}

impl<S: futures_core::Stream + Unpin> StreamNext for S {}

#[proxied(types = [Vec<f64>])]
fn ramp(n: usize) -> Vec<f64> {
    (0..n).map(|i| i as f64).collect()
}

#[proxied(types = [Vec<f64>])]
fn scale(values: Vec<f64>, by: f64) -> Vec<f64> {
    values.iter().map(|v| v * by).collect()
}

#[proxied(types = [Vec<f64>])]
fn total(values: Vec<f64>) -> f64 {
    values.iter().sum()
}

/// The same sum, with its arguments after the vector: frames after an
/// upstream's must stay in their place.
#[proxied(types = [Vec<f64>])]
fn weighted(first: f64, values: Vec<f64>, weight: f64, tag: String) -> String {
    format!("{tag}:{}", first + weight * values.iter().sum::<f64>())
}

/// A result that comes back inline (nothing listed, default policy).
#[proxied]
fn inline_ramp(n: usize) -> Vec<f64> {
    (0..n).map(|i| i as f64).collect()
}

#[proxied(types = [Vec<f64>])]
fn refuse(message: String) -> Result<Vec<f64>, String> {
    Err(message)
}

#[proxied]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[proxied(types = [Vec<f64>])]
fn slow_ramp(n: usize, ms: u64) -> Vec<f64> {
    std::thread::sleep(Duration::from_millis(ms));
    (0..n).map(|i| i as f64).collect()
}

#[proxied(types = [String])]
fn concat(base: String, num: i64) -> String {
    format!("{base}-{num}")
}

fn expected_total(n: usize, by: f64) -> f64 {
    (0..n).map(|i| i as f64 * by).sum()
}

fn futures_feed_the_next_task_without_the_caller(pool: Pool) {
    let f = Fixture::new("flow");
    let ex = f.executor(pool);
    let a = ex.submit(ramp::task(1000)).unwrap();
    // By reference: `a` stays the caller's.
    let b = ex.submit(scale::task(&a, 2.0)).unwrap();
    // By value: `b`'s result belongs to this task now.
    let c = ex.submit(total::task(b)).unwrap();
    assert_eq!(*c.result().unwrap(), expected_total(1000, 2.0));
    // `b`'s result was evicted when `c` ended; `a`'s is still here.
    assert_eq!(f.left(), 1);
    let a = a.result().unwrap();
    assert!(a.is_proxy());
    let TaskValue::Owned(owner) = &a else {
        panic!("a listed result comes back owned")
    };
    assert!(
        !OwnedProxy::is_resolved(owner),
        "the caller never read the intermediate result"
    );
    assert_eq!(a.len(), 1000);
    drop(a);
    assert_eq!(f.left(), 0);
}

fn frames_after_an_upstream_keep_their_place(pool: Pool) {
    let f = Fixture::new("flow");
    let ex = f.executor(pool);
    let a = ex.submit(ramp::task(10)).unwrap();
    let r = ex
        .submit(weighted::task(1.5, &a, 2.0, "tag"))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(*r, format!("tag:{}", 1.5 + 2.0 * 45.0));
    // An inline upstream result is passed as a value.
    let inline = ex.submit(inline_ramp::task(10)).unwrap();
    let r = ex.submit(total::task(inline)).unwrap().result().unwrap();
    assert_eq!(*r, 45.0);
    drop(a);
    drop(ex);
    assert_eq!(f.left(), 0);
}

fn a_future_dropped_early_still_feeds_its_dependents(pool: Pool) {
    let f = Fixture::new("flow");
    let ex = f.executor(pool);
    let a = ex.submit(slow_ramp::task(100, 100)).unwrap();
    let b = ex.submit(total::task(&a)).unwrap();
    drop(a); // before it finished: its result is kept for `b`
    assert_eq!(*b.result().unwrap(), expected_total(100, 1.0));
    assert_eq!(f.left(), 0, "then it is evicted");
}

fn a_failed_upstream_fails_its_dependents_naming_it(pool: Pool) {
    let f = Fixture::new("flow");
    let ex = f.executor(pool);
    let a = ex.submit(refuse::task("no data")).unwrap();
    let b = ex.submit(scale::task(&a, 2.0)).unwrap();
    let b_id = b.id();
    let c = ex.submit(total::task(b)).unwrap();
    match c.result() {
        Err(Error::UpstreamFailed {
            task,
            upstream,
            message,
            upstream_id,
            ..
        }) => {
            assert_eq!(task, total::NAME);
            assert_eq!(upstream_id, Some(b_id), "the upstream's id too");
            assert_eq!(upstream, scale::NAME);
            assert!(message.contains(refuse::NAME), "{message}");
            assert!(message.contains("no data"), "{message}");
        }
        other => panic!("expected UpstreamFailed, got {other:?}"),
    }
    assert!(a.result().is_err());
    drop(ex);
    assert_eq!(f.left(), 0);
}

fn a_cancelled_upstream_fails_its_dependents(pool: Pool) {
    let f = Fixture::new("flow");
    let ex = StoreExecutor::new(pool.serial().make(), f.store.clone()).close_store(false);
    let busy = ex.submit(sleep_ms::task(300)).unwrap();
    let a = ex.submit(ramp::task(10)).unwrap();
    let b = ex.submit(total::task(&a)).unwrap();
    assert!(a.cancel());
    match b.result() {
        Err(Error::UpstreamFailed { upstream, .. }) => assert_eq!(upstream, ramp::NAME),
        other => panic!("expected UpstreamFailed, got {other:?}"),
    }
    assert_eq!(*busy.result().unwrap(), 300);
    drop(ex);
    assert_eq!(f.left(), 0);
}

fn a_result_taken_and_dropped_stays_until_its_dependents_end(pool: Pool) {
    let f = Fixture::new("flow");
    let ex = StoreExecutor::new(pool.serial().make(), f.store.clone()).close_store(false);
    let a = ex.submit(ramp::task(100)).unwrap();
    // `b` and `c` read `a`'s result only after this 300 ms task.
    let busy = ex.submit(sleep_ms::task(300)).unwrap();
    let b = ex.submit(total::task(&a)).unwrap();
    let c = ex.submit(total::task(&a)).unwrap();
    let value = a.result().unwrap();
    let key = value.key().unwrap();
    drop(value); // its owner is gone, but `b` and `c` still need it
    assert!(f.store.exists(&key).unwrap());
    assert_eq!(*b.result().unwrap(), expected_total(100, 1.0));
    assert_eq!(*c.result().unwrap(), expected_total(100, 1.0));
    assert!(
        !f.store.exists(&key).unwrap(),
        "evicted by the last of them"
    );
    // Moved into another task instead of dropped: the same.
    let a = ex.submit(ramp::task(10)).unwrap();
    let busy2 = ex.submit(sleep_ms::task(300)).unwrap();
    let b = ex.submit(total::task(&a)).unwrap();
    let value = a.result().unwrap();
    let c = ex.submit(total::task(value)).unwrap();
    assert_eq!(*c.result().unwrap(), 45.0);
    assert_eq!(*b.result().unwrap(), 45.0);
    drop((busy, busy2));
    drop(ex);
    assert_eq!(f.left(), 0);
}

fn dropping_the_executor_in_a_done_callback_does_not_hang(pool: Pool) {
    let f = Fixture::new("flow");
    let ex = std::sync::Arc::new(
        StoreExecutor::new(pool.serial().make(), f.store.clone()).close_store(false),
    );
    let first = ex.submit(sleep_ms::task(100)).unwrap();
    let upstream = ex.submit(ramp::task(10)).unwrap();
    let mut held = ex.submit(total::task(&upstream)).unwrap();
    let last = ex.clone();
    // The last handle goes in a done callback, on the executor's own
    // thread: shutting down there must not wait for `held`, whose input
    // needs that very thread.
    first.add_done_callback(move |_| drop(last));
    drop(ex);
    let outcome = held.result_timeout(Duration::from_secs(30));
    assert!(
        !matches!(outcome, Err(Error::Timeout { .. })),
        "the held task ended: {outcome:?}"
    );
    drop((first, upstream));
}

fn a_held_task_can_be_cancelled_and_shutdown_waits_for_held_tasks(pool: Pool) {
    let f = Fixture::new("flow");
    let ex = f.executor(pool);
    let a = ex.submit(slow_ramp::task(10, 200)).unwrap();
    let b = ex.submit(total::task(&a)).unwrap();
    assert!(b.cancel(), "a task waiting for its inputs has not started");
    assert!(matches!(b.result(), Err(Error::Cancelled { .. })));
    let c = ex.submit(total::task(a)).unwrap();
    // Dropping the executor waits for `c`, which waits for `a`.
    drop(ex);
    assert_eq!(*c.result().unwrap(), 45.0);
    assert_eq!(f.left(), 0);
}

fn task_values_pass_by_reference_or_move_their_ownership(pool: Pool) {
    let f = Fixture::new("flow");
    let ex = f.executor(pool);
    let values = ex.submit(ramp::task(100)).unwrap().result().unwrap();
    let key = values.key().expect("stored");
    // By reference: still the caller's.
    let sum = ex.submit(total::task(&values)).unwrap().result().unwrap();
    assert_eq!(*sum, expected_total(100, 1.0));
    assert!(f.store.exists(&key).unwrap());
    // Cloning gives a handle on the same object, never a copy.
    let alias = values.clone();
    assert_eq!(alias.key(), Some(key));
    assert_eq!(f.left(), 1);
    assert_eq!(alias.len(), 100);
    let plain: Proxy<Vec<f64>> = values.proxy().unwrap();
    assert_eq!(Proxy::key(&plain), key);
    // By value: the task owns it and evicts it when it ends, here once the
    // clones, which share it, are gone too.
    let sum = ex.submit(total::task(values)).unwrap().result().unwrap();
    assert_eq!(*sum, expected_total(100, 1.0));
    assert!(f.store.exists(&key).unwrap(), "the clones still hold it");
    drop((alias, plain));
    assert!(!f.store.exists(&key).unwrap());
    assert_eq!(f.left(), 0);
    // An inline result passes by value either way.
    let inline = ex.submit(inline_ramp::task(4)).unwrap().result().unwrap();
    assert!(!inline.is_proxy() && inline.key().is_none());
    assert_eq!(
        *ex.submit(total::task(&inline)).unwrap().result().unwrap(),
        6.0
    );
    assert_eq!(
        *ex.submit(total::task(inline)).unwrap().result().unwrap(),
        6.0
    );
    drop(ex);
    assert_eq!(f.left(), 0);
}

fn clones_of_an_owned_result_share_it(pool: Pool) {
    let f = Fixture::new("flow");
    let ex = f.executor(pool);
    let owner = ex.submit(ramp::task(10)).unwrap().result().unwrap();
    let key = owner.key().unwrap();
    let clone = owner.clone();
    let plain = owner.proxy().unwrap();
    drop(owner);
    assert!(f.store.exists(&key).unwrap(), "the clones keep it");
    assert_eq!(clone.len(), 10);
    drop(clone);
    assert_eq!(plain.len(), 10);
    // Clones of the proxy share its hold too.
    let again = plain.clone();
    drop(plain);
    assert!(f.store.exists(&key).unwrap());
    drop(again);
    assert!(
        !f.store.exists(&key).unwrap(),
        "evicted with the last of them"
    );
    drop(ex);
    assert_eq!(f.left(), 0);
}

fn an_owned_proxy_moved_into_a_task_is_evicted_when_it_ends(pool: Pool) {
    let f = Fixture::new("flow");
    let ex = f.executor(pool);
    let owned = f.store.owned_proxy(vec![1.0, 2.0, 3.0]).unwrap();
    let key = OwnedProxy::key(&owned);
    let sum = ex.submit(total::task(owned)).unwrap().result().unwrap();
    assert_eq!(*sum, 6.0);
    assert!(!f.store.exists(&key).unwrap());
    // A task dropped without being submitted evicts it too.
    let owned = f.store.owned_proxy(vec![1.0]).unwrap();
    let key = OwnedProxy::key(&owned);
    drop(total::task(owned));
    assert!(!f.store.exists(&key).unwrap());
    drop(ex);
    assert_eq!(f.left(), 0);
}

fn borrowed_strings_are_accepted_for_string_parameters(pool: Pool) {
    let f = Fixture::new("flow");
    let ex = f.executor(pool);
    let r = ex
        .submit(concat::task("foobar", 42))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(*r, "foobar-42");
    drop(r);
    let base = String::from("base");
    let r = ex.submit(concat::task(&base, 1)).unwrap().result().unwrap();
    assert_eq!(*r, "base-1");
    drop(r);
    drop(ex);
    assert_eq!(f.left(), 0);
}

#[proxied]
fn nap_then_fail(ms: u64) -> Result<u64, String> {
    std::thread::sleep(Duration::from_millis(ms));
    Err(format!("failed after {ms} ms"))
}

/// Sets `future` after `ms` milliseconds, from wherever the task runs.
#[proxied]
fn set_later(future: StoreFuture<String>, ms: u64, value: String) -> bool {
    std::thread::sleep(Duration::from_millis(ms));
    future.set_result(&value).is_ok()
}

/// Reads a future's value: waits until it is set.
#[proxied]
fn shout_when_set(text: String) -> String {
    text.to_uppercase()
}

fn store_futures_cross_processes_and_wait(pool: Pool) {
    let f = Fixture::new("flow");
    let ex = f.executor(pool);
    // Set by a task, read here through a proxy that waits.
    let future = f
        .store
        .future::<String>()
        .unwrap()
        .timeout(Duration::from_secs(60));
    let proxy = future.proxy();
    let setter = ex
        .submit(set_later::task(
            future.clone(),
            100,
            "from a task".to_string(),
        ))
        .unwrap();
    assert_eq!(*proxy, "from a task");
    assert!(*setter.result().unwrap());
    assert!(future.done().unwrap());
    f.store.evict(&future.key()).unwrap();
    // Read by a task (its proxy passed for a `String`), set here later.
    let future = f.store.future::<String>().unwrap();
    let reader = ex.submit(shout_when_set::task(future.proxy())).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(!reader.done(), "the task waits for the value");
    future.set_result(&"late".to_string()).unwrap();
    assert_eq!(*reader.result().unwrap(), "LATE");
    assert_eq!(future.result().unwrap(), "late");
    // A proxy keeps waiting after a round trip through serde.
    let waiting = f
        .store
        .future::<u32>()
        .unwrap()
        .timeout(Duration::from_secs(60));
    let mut wire = Vec::new();
    ciborium::into_writer(&waiting.proxy(), &mut wire).unwrap();
    let arrived: Proxy<u32> = ciborium::from_reader(&wire[..]).unwrap();
    let later = waiting.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        later.set_result(&7).unwrap();
    });
    assert_eq!(*arrived, 7);
    t.join().unwrap();
    // Not set in time: a typed error, here and in a worker.
    let never = f
        .store
        .future::<String>()
        .unwrap()
        .timeout(Duration::from_millis(50));
    assert!(matches!(
        Proxy::resolve(&never.proxy()),
        Err(Error::NotSetInTime { .. })
    ));
    assert!(matches!(never.result(), Err(Error::NotSetInTime { .. })));
    match ex
        .submit(shout_when_set::task(never.proxy()))
        .unwrap()
        .result()
    {
        Err(Error::TaskFailed { message, .. }) => {
            assert!(message.contains("was not set within"), "{message}")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    for key in [future.key(), waiting.key()] {
        f.store.evict(&key).unwrap();
    }
    drop(ex);
    assert_eq!(f.left(), 0);
}

/// Puts an object in the submitting executor's store and runs a follow-up
/// task from inside this one, through the task's context.
#[proxied]
fn follow_up(text: String) -> (String, String, String) {
    let context = proxystore::task::current().expect("inside a task");
    let store = context.store().unwrap();
    let stored = store.proxy(text).unwrap();
    let executor = context.executor(ThreadPool::new(1).unwrap()).unwrap();
    let shouted = executor
        .submit(shout_when_set::task(&stored))
        .unwrap()
        .result()
        .unwrap();
    (
        context.task().to_string(),
        shouted.to_string(),
        Proxy::key(&stored).to_string(),
    )
}

fn tasks_reach_their_store_and_submit_follow_ups(pool: Pool) {
    let f = Fixture::new("flow");
    let ex = f.executor(pool);
    assert!(proxystore::task::current().is_none());
    let (task, shouted, key) = ex
        .submit(follow_up::task("quiet"))
        .unwrap()
        .result()
        .unwrap()
        .into_value()
        .unwrap();
    assert_eq!(task, follow_up::NAME);
    assert_eq!(shouted, "QUIET");
    let key: proxystore::Key = key.parse().unwrap();
    assert_eq!(
        f.store.load::<String>(&key).unwrap().as_deref(),
        Some("quiet")
    );
    f.store.evict(&key).unwrap();
    drop(ex);
    assert_eq!(f.left(), 0);
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn wait_returns_as_asked_without_polling(pool: Pool) {
    let f = Fixture::new("flow");
    let ex = f.executor(pool);
    let futures = vec![
        ex.submit(sleep_ms::task(1500)).unwrap(),
        ex.submit(sleep_ms::task(1)).unwrap(),
    ];
    let cpu = thread_cpu();
    let first = wait(&futures, ReturnWhen::FirstCompleted, None);
    assert_eq!(first.done, [1]);
    assert_eq!(first.not_done, [0]);
    // Nothing done in time: everything is still pending.
    let none = wait(
        &futures[..1],
        ReturnWhen::AllCompleted,
        Some(Duration::from_millis(300)),
    );
    assert_eq!((none.done, none.not_done), (vec![], vec![0]));
    let all = wait(&futures, ReturnWhen::AllCompleted, None);
    assert_eq!((all.done, all.not_done), (vec![0, 1], vec![]));
    // More than a second of waiting, a few milliseconds of CPU.
    let spent = thread_cpu() - cpu;
    assert!(
        spent < Duration::from_millis(300),
        "waiting took {spent:?} of CPU"
    );
    // The futures are still usable.
    for future in futures {
        assert!(future.result().is_ok());
    }
    // The first failure ends a FIRST_EXCEPTION wait; without one, it
    // waits for all.
    let futures = vec![
        ex.submit(sleep_ms::task(3000)).unwrap(),
        ex.submit(nap_then_fail::task(10)).unwrap(),
    ];
    let failed = wait(&futures, ReturnWhen::FirstException, None);
    assert_eq!((failed.done, failed.not_done), (vec![1], vec![0]));
    let ok = vec![
        ex.submit(sleep_ms::task(1)).unwrap(),
        ex.submit(sleep_ms::task(50)).unwrap(),
    ];
    assert_eq!(wait(&ok, ReturnWhen::FirstException, None).done, [0, 1]);
    assert!(wait::<u64>(&[], ReturnWhen::FirstCompleted, None)
        .done
        .is_empty());
    drop(futures);
    drop(ex);
    assert_eq!(f.left(), 0);
}

fn as_completed_yields_in_finishing_order(pool: Pool) {
    let f = Fixture::new("flow");
    let ex = f.executor(pool);
    let futures = vec![
        ex.submit(sleep_ms::task(800)).unwrap(),
        ex.submit(sleep_ms::task(1)).unwrap(),
    ];
    let mut done = as_completed(futures);
    // `next` is the iterator's, though a stream's `next` is in scope.
    let first = done.next().unwrap();
    let order: Vec<u64> = std::iter::once(first)
        .chain(done)
        .map(|future| *future.result().unwrap())
        .collect();
    assert_eq!(order, [1, 800]);
    // With indices, and with a timeout on each step.
    let futures = vec![
        ex.submit(sleep_ms::task(600)).unwrap(),
        ex.submit(sleep_ms::task(1)).unwrap(),
    ];
    let mut done = as_completed(futures);
    let (index, first) = done.next_with_index().unwrap();
    assert_eq!((index, *first.result().unwrap()), (1, 1));
    assert!(matches!(
        done.next_timeout(Duration::from_millis(10)),
        Err(Error::Timeout { .. })
    ));
    let last = done.next_timeout(Duration::from_secs(30)).unwrap().unwrap();
    assert_eq!(*last.result().unwrap(), 600);
    assert!(done
        .next_timeout(Duration::from_millis(1))
        .unwrap()
        .is_none());
    // As a stream.
    let futures = vec![
        ex.submit(sleep_ms::task(300)).unwrap(),
        ex.submit(sleep_ms::task(1)).unwrap(),
    ];
    let mut stream = as_completed_stream(futures);
    assert_eq!(stream.remaining(), 2);
    let mut seen = Vec::new();
    while let Some(future) = block_on(stream.next()) {
        seen.push(*future.result().unwrap());
    }
    assert_eq!(seen, [1, 300]);
    // An iterator turned into a stream midway yields the rest.
    let futures = vec![
        ex.submit(sleep_ms::task(300)).unwrap(),
        ex.submit(sleep_ms::task(1)).unwrap(),
    ];
    let mut done = as_completed(futures);
    assert_eq!(*done.next().unwrap().result().unwrap(), 1);
    let mut rest = done.into_stream();
    assert_eq!(*block_on(rest.next()).unwrap().result().unwrap(), 300);
    assert!(block_on(rest.next()).is_none());
    drop(ex);
    assert_eq!(f.left(), 0);
}

/// Leaves a mark that the task ran.
#[proxied]
fn mark(path: std::path::PathBuf) -> bool {
    std::fs::write(path, b"ran").is_ok()
}

fn dropping_a_timed_map_cancels_what_has_not_started(pool: Pool) {
    let f = Fixture::new("flow");
    let ex = StoreExecutor::new(pool.serial().make(), f.store.clone()).close_store(false);
    // The one worker is busy: the map's tasks wait behind this one.
    let busy = ex.submit(sleep_ms::task(500)).unwrap();
    let marks: Vec<_> = (0..3)
        .map(|i| f.dir.path().join(format!("mark-{i}")))
        .collect();
    let mut results = ex
        .map_timeout(
            marks.iter().map(|m| mark::task(m.clone())),
            Duration::from_millis(1),
        )
        .unwrap();
    assert!(matches!(results.next(), Some(Err(Error::Timeout { .. }))));
    drop(results);
    assert_eq!(*busy.result().unwrap(), 500);
    drop(ex); // waits for anything still running
    for m in &marks {
        assert!(!m.exists(), "{} ran after the map was dropped", m.display());
    }
}

fn map_with_a_deadline_and_as_completed(pool: Pool) {
    let f = Fixture::new("flow");
    let ex = f.executor(pool);
    let mut results = ex
        .map_timeout(
            [sleep_ms::task(1), sleep_ms::task(3000)],
            Duration::from_millis(500),
        )
        .unwrap();
    assert_eq!(*results.next().unwrap().unwrap(), 1);
    assert!(matches!(
        results.next().unwrap(),
        Err(Error::Timeout { .. })
    ));
    drop(results);
    // A fresh pool: the 3-second task still takes a worker of this one.
    drop(ex);
    let ex = f.executor(pool);
    let mut seen: Vec<(usize, u64)> = ex
        .map_as_completed([sleep_ms::task(400), sleep_ms::task(1)])
        .unwrap()
        .map(|(index, r)| (index, *r.unwrap()))
        .collect();
    assert_eq!(seen[0], (1, 1), "the quick one first");
    seen.sort();
    assert_eq!(seen, [(0, 400), (1, 1)]);
    drop(ex);
    assert_eq!(f.left(), 0);
}

for_both_pools!(
    futures_feed_the_next_task_without_the_caller,
    frames_after_an_upstream_keep_their_place,
    a_future_dropped_early_still_feeds_its_dependents,
    a_failed_upstream_fails_its_dependents_naming_it,
    a_cancelled_upstream_fails_its_dependents,
    a_held_task_can_be_cancelled_and_shutdown_waits_for_held_tasks,
    a_result_taken_and_dropped_stays_until_its_dependents_end,
    dropping_the_executor_in_a_done_callback_does_not_hang,
    task_values_pass_by_reference_or_move_their_ownership,
    an_owned_proxy_moved_into_a_task_is_evicted_when_it_ends,
    clones_of_an_owned_result_share_it,
    borrowed_strings_are_accepted_for_string_parameters,
    wait_returns_as_asked_without_polling,
    as_completed_yields_in_finishing_order,
    map_with_a_deadline_and_as_completed,
    dropping_a_timed_map_cancels_what_has_not_started,
    store_futures_cross_processes_and_wait,
    tasks_reach_their_store_and_submit_follow_ups,
);

/// A result kept in one process's memory cannot feed a task of a pool of
/// worker processes: the task fails with `Unreachable`, naming the store.
#[test]
fn an_upstream_result_the_workers_cannot_reach_is_refused() {
    let local = Store::new(
        unique("flow-local"),
        proxystore::connectors::LocalConnector::new(),
    )
    .unwrap();
    let threads = StoreExecutor::new(ThreadPool::new(1).unwrap(), local.clone()).close_store(false);
    let f = Fixture::new("flow");
    let processes = f.executor(Pool::Processes);
    let a = threads.submit(ramp::task(10)).unwrap();
    let b = processes.submit(total::task(&a)).unwrap();
    match b.result() {
        Err(Error::Unreachable { store, .. }) => assert_eq!(store, local.name()),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    drop(a);
    drop((threads, processes));
    let _ = local.close();
    assert_eq!(f.left(), 0);
}
