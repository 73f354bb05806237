//! Unit tests of the task cell.
use super::*;

use std::sync::atomic::AtomicU64;

fn cell(discard: Option<fn(TaskOutput)>) -> Arc<TaskCell> {
    TaskCell::new("t", None, discard, Arc::default())
}

fn output() -> Result<TaskOutput, Error> {
    Ok(TaskOutput::from_bytes(vec![1, 2, 3]))
}

/// A task whose future was dropped keeps its output while a dependent
/// holds it; the last dependent to let go discards it.
#[test]
fn an_abandoned_output_waits_for_its_last_dependent() {
    static DISCARDED: AtomicU64 = AtomicU64::new(0);
    fn discard(_: TaskOutput) {
        DISCARDED.fetch_add(1, Ordering::SeqCst);
    }
    let task = cell(Some(discard));
    let (first, second) = (task.depend(), task.depend());
    task.lock().abandoned = true; // its future was dropped
    assert!(task.finish(output(), false));
    assert_eq!(DISCARDED.load(Ordering::SeqCst), 0, "dependents hold it");
    assert!(task.lock().output.is_some());
    drop(first);
    assert_eq!(DISCARDED.load(Ordering::SeqCst), 0, "one still holds it");
    drop(second);
    assert_eq!(DISCARDED.load(Ordering::SeqCst), 1);
    assert!(task.lock().output.is_none());
}

/// An owned result's eviction waits for the dependents that hold it,
/// and the last one evicts it; without dependents, it is evicted at once.
#[test]
fn an_owned_results_eviction_waits_for_its_last_dependent() {
    use crate::connectors::LocalConnector;
    let store =
        crate::store::Store::new("handle-deferred-eviction", LocalConnector::new()).unwrap();
    let key = store.put(&7u8).unwrap();
    let task = cell(None);
    let (first, second) = (task.depend(), task.depend());
    assert!(
        task.defer_eviction(store.factory(key)).is_none(),
        "deferred"
    );
    drop(first);
    assert!(store.exists(&key).unwrap(), "one dependent still holds it");
    drop(second);
    assert!(
        !store.exists(&key).unwrap(),
        "the last dependent evicted it"
    );
    let free = cell(None);
    assert!(
        free.defer_eviction(store.factory(key)).is_some(),
        "evict now"
    );
    store.close().unwrap();
}

/// Hooks see the output as it is set, before anyone can take it, and
/// what they return runs after the lock is released (it can lock the
/// task again); a hook added once the task is done runs at once.
#[test]
fn hooks_see_the_output_as_it_is_set() {
    static SEEN: AtomicU64 = AtomicU64::new(0);
    let task = cell(None);
    let again = task.clone();
    task.on_output(Box::new(move |out| {
        assert!(out.is_ok());
        SEEN.fetch_add(1, Ordering::SeqCst);
        Some(Box::new(move || {
            // The lock is free here.
            assert_eq!(again.lock().phase, Phase::Done);
            SEEN.fetch_add(10, Ordering::SeqCst);
        }))
    }));
    assert!(task.finish(output(), false));
    assert_eq!(SEEN.load(Ordering::SeqCst), 11);
    task.on_output(Box::new(|out| {
        assert!(out.is_ok(), "the output was not taken yet");
        SEEN.fetch_add(100, Ordering::SeqCst);
        None
    }));
    assert_eq!(SEEN.load(Ordering::SeqCst), 111);
}

/// Cancelling a task that has not started ends it at once, and the
/// executor's `start` then says no; a started task cannot be cancelled.
#[test]
fn cancel_before_start_and_not_after() {
    let task = cell(None);
    assert!(task.cancel());
    assert!(task.is_done());
    assert!(task.lock().cancelled);
    assert!(!super::super::Completion::new(task.clone()).start());

    let running = cell(None);
    let completion = super::super::Completion::new(running.clone());
    assert!(completion.start());
    assert!(!running.cancel(), "started: too late");
    completion.complete(Ok(vec![]));
    assert!(running.is_done() && !running.lock().cancelled);
}

#[test]
fn finished_tasks_stop_counting_as_outstanding_and_are_counted_once() {
    let counters: Arc<Counters> = Arc::default();
    let tasks: Vec<_> = (0..4)
        .map(|_| TaskCell::new("t", None, None, counters.clone()))
        .collect();
    let outstanding = || counters.outstanding.load(Ordering::Relaxed);
    assert_eq!(outstanding(), 4);
    assert_eq!(counters.progress().pending, 4);
    let failed = || {
        Err(Error::ShutDown {
            task: "t".into(),
            id: None,
        })
    };
    let running = super::super::Completion::new(tasks[3].clone());
    assert!(running.start());
    assert_eq!(
        (counters.progress().pending, counters.progress().running),
        (3, 1)
    );
    assert!(tasks[0].finish(failed(), false));
    assert_eq!(outstanding(), 3);
    // A second finish is ignored and counts nothing.
    assert!(!tasks[0].finish(failed(), false));
    assert_eq!(outstanding(), 3);
    assert!(tasks[1].finish_cancelled());
    assert!(tasks[2].finish(failed(), false));
    running.complete(Ok(vec![]));
    assert_eq!(outstanding(), 0);
    let progress = counters.progress();
    assert_eq!(
        (progress.submitted, progress.pending, progress.running),
        (4, 0, 0)
    );
    assert_eq!(
        (progress.done, progress.failed, progress.cancelled),
        (1, 2, 1)
    );
}

#[test]
fn errors_of_a_task_carry_its_id() {
    let task = TaskCell::new("t", None, None, Arc::default());
    task.finish(
        Err(Error::ShutDown {
            task: "t".into(),
            id: None,
        }),
        false,
    );
    let state = task.lock();
    let Some(Err(e)) = &state.output else {
        panic!("failed")
    };
    assert!(e.to_string().contains(&task.id.to_string()), "{e}");
    assert_eq!(e.task_id(), Some(task.id));
}
