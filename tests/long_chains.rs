//! Chains of 100,000 dependent tasks whose first step fails, is cancelled,
//! or whose held steps are cancelled by a shutdown: every step ends with an
//! error, on both pools. Failure and cancellation once passed down such a
//! chain by recursion and overflowed the stack of the thread that finished
//! the first step (a pool thread, or the caller's for `cancel`).

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::pools::{Fixture, Pool};

use proxystore::executor::TaskFuture;
use proxystore::{proxied, Error, StoreExecutor};

proxystore::test_worker!();

/// Deep enough that recursion of any frame size would overflow.
const STEPS: usize = 100_000;

/// Waits until `gate` exists, then succeeds or fails as asked.
#[proxied]
fn after_gate(gate: PathBuf, fail: bool) -> Result<u64, String> {
    while !gate.exists() {
        std::thread::sleep(Duration::from_millis(2));
    }
    if fail {
        Err("the first step failed".into())
    } else {
        Ok(0)
    }
}

#[proxied]
fn step(previous: u64) -> u64 {
    previous + 1
}

#[proxied]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// `STEPS` tasks, each taking the previous one's result.
fn chain(ex: &StoreExecutor, head: &TaskFuture<u64>) -> Vec<TaskFuture<u64>> {
    let mut steps: Vec<TaskFuture<u64>> = Vec::with_capacity(STEPS);
    for _ in 0..STEPS {
        let next = ex.submit(step::task(steps.last().unwrap_or(head))).unwrap();
        steps.push(next);
    }
    steps
}

fn open(gate: &Path) {
    std::fs::write(gate, b"open").unwrap();
}

/// Every step failed, the first naming the head, each other its
/// predecessor, and with the head's own cause in its message.
fn all_failed_upstream(steps: Vec<TaskFuture<u64>>, head: &str, cause: &str) {
    for (i, future) in steps.into_iter().enumerate() {
        match future.result() {
            Err(Error::UpstreamFailed {
                upstream, message, ..
            }) => {
                let expected = if i == 0 { head } else { step::NAME };
                assert_eq!(upstream, expected, "step {i}");
                assert!(message.contains(cause), "step {i}: {message}");
            }
            other => panic!("step {i}: expected UpstreamFailed, got {other:?}"),
        }
    }
}

fn a_failing_first_step_fails_a_long_chain(pool: Pool) {
    let f = Fixture::new("chain-fail");
    let ex = f.executor(pool);
    let gate = f.dir.path().join("gate");
    let head = ex.submit(after_gate::task(gate.clone(), true)).unwrap();
    let steps = chain(&ex, &head);
    // The whole chain is held; the head fails on a pool thread now.
    open(&gate);
    all_failed_upstream(steps, after_gate::NAME, "the first step failed");
    assert!(head.result().is_err());
    drop(ex);
    assert_eq!(f.left(), 0);
}

fn cancelling_the_first_step_of_a_queued_chain_fails_it(pool: Pool) {
    let f = Fixture::new("chain-cancel");
    let ex = StoreExecutor::new(pool.serial().make(), f.store.clone()).close_store(false);
    let gate = f.dir.path().join("gate");
    // The one worker is busy until the gate opens: the head stays queued.
    let busy = ex.submit(after_gate::task(gate.clone(), false)).unwrap();
    let head = ex.submit(sleep_ms::task(1)).unwrap();
    let steps = chain(&ex, &head);
    // On this thread: the cancellation passes down from here.
    assert!(head.cancel(), "the head was queued, not started");
    all_failed_upstream(steps, sleep_ms::NAME, "cancelled");
    open(&gate);
    assert_eq!(*busy.result().unwrap(), 0);
    drop(ex);
    assert_eq!(f.left(), 0);
}

fn shutting_down_with_cancel_ends_a_held_chain(pool: Pool) {
    let f = Fixture::new("chain-shutdown");
    let ex = f.executor(pool);
    let gate = f.dir.path().join("gate");
    let head = ex.submit(after_gate::task(gate.clone(), false)).unwrap();
    let steps = chain(&ex, &head);
    // `shutdown(wait)` waits for the head, which runs until the gate
    // opens: once the last step is cancelled, so that none can start.
    let opener = gate.clone();
    steps
        .last()
        .unwrap()
        .add_done_callback(move |_| open(&opener));
    ex.shutdown(true, true);
    assert_eq!(*head.result().unwrap(), 0);
    for (i, future) in steps.into_iter().enumerate() {
        match future.result() {
            Err(Error::Cancelled { .. } | Error::UpstreamFailed { .. }) => {}
            other => panic!("step {i}: expected a cancellation, got {other:?}"),
        }
    }
    drop(ex);
    assert_eq!(f.left(), 0);
}

for_both_pools!(
    a_failing_first_step_fails_a_long_chain,
    cancelling_the_first_step_of_a_queued_chain_fails_it,
    shutting_down_with_cancel_ends_a_held_chain,
);

/// Regression: when a failure passed down a chain, a task's done callbacks
/// ran before its own dependents were failed (those wait in the thread's
/// queue of deferred work), so a callback waiting for a dependent waited
/// for ever, on the pool's thread.
#[test]
fn a_done_callback_can_wait_for_a_dependent_failed_with_it() {
    let f = Fixture::new("chain-callback");
    let ex = f.executor(Pool::Threads);
    let gate = f.dir.path().join("gate");
    let a = ex.submit(after_gate::task(gate.clone(), true)).unwrap();
    let b = ex.submit(step::task(&a)).unwrap();
    let c = ex.submit(step::task(&b)).unwrap();
    let (told, heard) = std::sync::mpsc::channel();
    b.add_done_callback(move |_| {
        let _ = told.send(c.result().map(|v| *v));
    });
    open(&gate);
    match heard.recv_timeout(Duration::from_secs(30)) {
        Ok(Err(Error::UpstreamFailed { upstream, .. })) => assert_eq!(upstream, step::NAME),
        Ok(other) => panic!("expected UpstreamFailed, got {other:?}"),
        Err(_) => {
            // The pool's thread is stuck: shutting down would wait for it.
            std::mem::forget(ex);
            panic!("the callback still waits for the dependent after 30 s");
        }
    }
    assert!(b.result().is_err());
    drop(ex);
    assert_eq!(f.left(), 0);
}
