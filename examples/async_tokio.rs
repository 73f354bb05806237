//! Async use on a tokio current-thread runtime: submitting a task with a
//! 20 MiB argument and reading its 20 MiB result never block the runtime's
//! one thread, so a 1 ms ticker on it keeps ticking.
//!
//! `submit_async` puts the argument in the store on a background thread;
//! awaiting the `TaskFuture` waits without blocking; `resolved()` reads the
//! stored result on a background thread. The same steps done with the
//! blocking forms are measured next, for comparison: the ticker stalls for
//! as long as the store I/O takes.
//!
//! Run it with `cargo run --release --example async_tokio`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use proxystore::connectors::FileConnector;
use proxystore::executor::ProcessPool;
use proxystore::{proxied, Store, StoreExecutor};

/// Returns the bytes reversed: a 20 MiB argument and a 20 MiB result, both
/// through the store.
#[proxied(types = [Vec<u8>])]
fn reverse(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.reverse();
    bytes
}

/// Tick times of a 1 ms interval running on the runtime.
type Ticks = Arc<Mutex<Vec<Instant>>>;

/// The longest gap between ticks (or between the window's edges and the
/// ticks nearest them) within `from..to`, and the number of ticks there.
fn longest_gap(ticks: &Ticks, from: Instant, to: Instant) -> (Duration, usize) {
    let ticks = ticks.lock().unwrap();
    let inside: Vec<Instant> = ticks
        .iter()
        .copied()
        .filter(|t| *t >= from && *t <= to)
        .collect();
    let mut edges = vec![from];
    edges.extend(&inside);
    edges.push(to);
    let gap = edges
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    (gap, inside.len())
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// A future whose polls are timed: the longest CPU time the runtime's
/// thread spent in one poll of it (what this crate's code, and the
/// request's own, took from the ticker; unlike the ticker's gaps, the
/// figure does not grow when other programs take the machine's cores).
struct Timed<F> {
    inner: Pin<Box<F>>,
    longest: Arc<Mutex<(Duration, Duration, Duration)>>,
}

/// Time this thread has spent waiting for a core (runnable, not running),
/// from `/proc/thread-self/schedstat`.
fn run_queue_wait() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let waited = stat.split_whitespace().nth(1).and_then(|n| n.parse().ok());
    Duration::from_nanos(waited.unwrap_or(0))
}

impl<F: Future> Future for Timed<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let (before, started, queued) = (thread_cpu(), Instant::now(), run_queue_wait());
        let poll = self.inner.as_mut().poll(cx);
        let (took, wall) = (thread_cpu() - before, started.elapsed());
        let waited = run_queue_wait().saturating_sub(queued);
        let mut longest = self.longest.lock().unwrap();
        longest.0 = longest.0.max(took);
        if wall > longest.1 {
            (longest.1, longest.2) = (wall, waited);
        }
        poll
    }
}

/// glibc's allocator raises its threshold for mapping large blocks each
/// time one is freed, so later 16 MiB buffers come from the heap, and
/// freeing one there returns its pages to the kernel while holding the
/// allocator's lock: a runtime thread that allocates meanwhile sleeps on
/// that lock for as long (tens of milliseconds on a busy machine, seen with
/// strace). A fixed threshold keeps large buffers mapped on their own and
/// released outside the lock. (Allocators such as jemalloc or mimalloc do
/// not have this behaviour.)
fn pin_glibc_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt takes two integers and only tunes the allocator.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // In a pool worker this serves tasks and never returns.
    proxystore::worker::init();
    if std::env::var_os("ASYNC_EXAMPLE_DEFAULT_MALLOC").is_none() {
        pin_glibc_mmap_threshold();
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    runtime.block_on(async {
        let dir = std::env::temp_dir().join(format!("proxystore-async-{}", std::process::id()));
        let store = Store::new("async-example", FileConnector::new(&dir)?)?;
        let executor = Arc::new(StoreExecutor::new(ProcessPool::new(2)?, store));
        let payload: Vec<u8> = (0..20 << 20).map(|i: u32| (i % 251) as u8).collect();
        // Warm the pool up.
        executor.submit(reverse::task(vec![1, 2, 3]))?.result()?;

        let ticks: Ticks = Arc::default();
        let ticker = {
            let ticks = ticks.clone();
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(Duration::from_millis(1));
                loop {
                    interval.tick().await;
                    ticks.lock().unwrap().push(Instant::now());
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;

        // Async: nothing here blocks the runtime's thread.
        let argument = payload.clone();
        let started = Instant::now();
        let future = executor.submit_async(reverse::task(argument)).await?;
        let submitted = Instant::now();
        let result = future.await?;
        let done = Instant::now();
        let result = result.resolved().await?;
        let read = Instant::now();
        assert_eq!(result.first(), payload.last());
        drop(result);
        tokio::time::sleep(Duration::from_millis(20)).await;

        // Blocking, for comparison: the ticker cannot run meanwhile.
        let argument = payload.clone();
        let blocking_started = Instant::now();
        let future = executor.submit(reverse::task(argument))?;
        let blocking_submitted = Instant::now();
        let result = future.await?;
        let waited = Instant::now();
        let first = result[0]; // the 20 MiB read, on the runtime's thread
        let blocking_read = Instant::now();
        assert_eq!(Some(&first), payload.last());
        drop(result);
        tokio::time::sleep(Duration::from_millis(20)).await;

        // Eight requests at once, each sending 16 MiB and dropping its
        // 16 MiB result (an owned object: dropping it evicts it, off the
        // runtime's thread).
        let arguments: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 16 << 20]).collect();
        let longest_poll = Arc::new(Mutex::new((Duration::ZERO, Duration::ZERO, Duration::ZERO)));
        let requests_started = Instant::now();
        let requests: Vec<_> = (0u8..)
            .zip(arguments)
            .map(|(i, argument)| {
                let executor = executor.clone();
                let longest = longest_poll.clone();
                tokio::spawn(Timed {
                    longest,
                    inner: Box::pin(async move {
                    let result = executor.submit_async(reverse::task(argument)).await?;
                    let result = result.await?.resolved().await?;
                    assert_eq!(result.len(), 16 << 20);
                    assert_eq!(result.first(), Some(&i));
                    drop(result);
                    Ok::<_, proxystore::Error>(())
                    }),
                })
            })
            .collect();
        for request in requests {
            request.await.expect("the request ran")?;
        }
        let requests_done = Instant::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        ticker.abort();

        let report = |what: &str, from: Instant, to: Instant| {
            let (gap, count) = longest_gap(&ticks, from, to);
            println!(
                "{what:<44} {:>7.1} ms, {count:>3} ticks, longest gap {:>5.1} ms",
                (to - from).as_secs_f64() * 1e3,
                gap.as_secs_f64() * 1e3
            );
        };
        println!("a 1 ms ticker on the same current-thread runtime:");
        report("async: submit_async (20 MiB argument)", started, submitted);
        report("async: await (the task runs)", submitted, done);
        report("async: resolved() (20 MiB result)", done, read);
        report(
            "blocking: submit (20 MiB argument)",
            blocking_started,
            blocking_submitted,
        );
        report(
            "blocking: await (the task runs)",
            blocking_submitted,
            waited,
        );
        report(
            "blocking: first dereference (20 MiB read)",
            waited,
            blocking_read,
        );
        report(
            "async: 8 requests at once, 16 MiB in and out",
            requests_started,
            requests_done,
        );
        let (cpu, wall, waited) = *longest_poll.lock().unwrap();
        println!(
            "  (polls of a request: at most {:.2} ms of the runtime thread's CPU; the longest took {:.2} ms, \
             {:.2} ms of it waiting for a core)",
            cpu.as_secs_f64() * 1e3,
            wall.as_secs_f64() * 1e3,
            waited.as_secs_f64() * 1e3
        );
        drop(executor);
        // Pending evictions are done once the executor is gone.
        assert!(!dir.exists());
        Ok(())
    })
}
