//! Streams of objects between two processes, side by side with Python
//! ProxyStore 1.1.0's own streams (`python_stream_anchor.py`) in the same
//! run.
//!
//! A producer process sends `n` objects (`Vec<u8>` of one size, owned by
//! the consumer: its drop evicts them) on a topic of a `RedisQueue` broker
//! (a Redis list, as the anchor's `RedisQueuePublisher`); a consumer
//! process iterates over them and touches each (its length and its first,
//! middle and last byte), like the anchor's consumer. Both are this
//! executable, started with hidden arguments. Throughput is the anchor's:
//! `(n - 1) / (time from the first object touched to the last)`. The
//! consumer also reports its peak RSS (`getrusage`).
//!
//! Ways of moving the objects:
//!
//! | row | object | Python's row beside it |
//! |---|---|---|
//! | `in-event` | inside the event, through Redis (no store) | `broker` |
//! | `file` | `FileConnector` store in a temporary directory | `file` |
//! | `redis` | `RedisConnector` store on the broker's server | `redis` |
//! | `shm` | `SharedMemoryConnector` store (`/dev/shm`) | `file` (Python has no shared-memory stream row) |
//! | `streams+file` | `file`, with the `RedisStreams` broker | `file` |
//!
//! A private `redis-server` is started for the run (as in `compare.rs`);
//! without one, nothing is measured. Run with `bench/compare` (which makes
//! the Python environment) or
//! `cargo bench -p proxystore-bench --bench streams -- [--quick] [--rounds N] [--python PATH --anchor PATH]`.
//!
//! Targets: at 10 MB and above, objects through the file or shared-memory
//! store at least 5x the in-event throughput; every row at least 3x
//! Python's row beside it (10x at 10 kB); the consumer of a stream of
//! 100 MiB objects peaks under three objects of memory.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use proxystore::connectors::{FileConnector, RedisConnector, SharedMemoryConnector};
use proxystore::stream::{
    Item, Metadata, RedisQueue, RedisStreams, StreamConsumer, StreamProducer,
};
use proxystore::Store;

// Shared with the integration tests, which use more of it.
#[allow(unreachable_pub)]
#[path = "../../tests/support/redis_server.rs"]
mod redis_server;

const MIB: usize = 1024 * 1024;
/// Bytes of objects a producer makes before its stream starts.
const PREMADE: usize = 2 << 30;
/// How long a consumer waits for an event before it gives up on the row.
const EVENT_TIMEOUT: Duration = Duration::from_secs(300);

/// A way of moving the objects, measured in Rust.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Way {
    InEvent,
    File,
    Redis,
    Shm,
    StreamsFile,
}

impl Way {
    const ALL: [Way; 5] = [
        Way::InEvent,
        Way::File,
        Way::Redis,
        Way::Shm,
        Way::StreamsFile,
    ];

    fn name(self) -> &'static str {
        match self {
            Way::InEvent => "in-event",
            Way::File => "file",
            Way::Redis => "redis",
            Way::Shm => "shm",
            Way::StreamsFile => "streams+file",
        }
    }

    fn parse(s: &str) -> Way {
        Way::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .unwrap_or_else(|| panic!("unknown way {s}"))
    }

    /// The store of the objects (`None`: inside the events).
    fn store(self) -> Option<&'static str> {
        match self {
            Way::InEvent => None,
            Way::File | Way::StreamsFile => Some("file"),
            Way::Redis => Some("redis"),
            Way::Shm => Some("shm"),
        }
    }

    /// The broker: a Redis list, or Redis Streams.
    fn broker(self) -> &'static str {
        match self {
            Way::StreamsFile => "streams",
            _ => "queue",
        }
    }

    /// The anchor's mode measured beside it.
    fn python(self) -> &'static str {
        match self {
            Way::InEvent => "broker",
            Way::Redis => "redis",
            Way::File | Way::Shm | Way::StreamsFile => "file",
        }
    }
}

struct Options {
    quick: bool,
    rounds: usize,
    python: Option<PathBuf>,
    anchor: Option<PathBuf>,
}

fn options(args: &[String]) -> Options {
    let mut o = Options {
        quick: false,
        rounds: 1,
        python: None,
        anchor: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => o.quick = true,
            "--rounds" => {
                o.rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&r| r > 0)
                    .expect("--rounds N")
            }
            "--python" => o.python = args.next().map(PathBuf::from),
            "--anchor" => o.anchor = args.next().map(PathBuf::from),
            "--bench" => {} // passed by `cargo bench`
            other => panic!("unknown argument {other}"),
        }
    }
    if o.quick {
        o.rounds = 1;
    }
    o
}

/// The sizes and objects per row: (bytes, n, label).
fn sizes(quick: bool) -> Vec<(usize, usize, &'static str)> {
    if quick {
        vec![
            (10_000, 300, "10 kB"),
            (1_000_000, 50, "1 MB"),
            (10_000_000, 10, "10 MB"),
        ]
    } else {
        vec![
            (10_000, 2_000, "10 kB"),
            (1_000_000, 500, "1 MB"),
            (10_000_000, 100, "10 MB"),
            (100 * MIB, 20, "100 MiB"),
        ]
    }
}

/// Random-looking bytes (xorshift), made once per producer.
fn payload(size: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ size as u64;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(size);
    out
}

fn peak_rss_kib() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss as u64
}

/// `--stream-producer WAY URL TOPIC SIZE N DIR`: sends the objects, prints
/// `sent <seconds sending> <seconds copying the payload>` (copies made
/// while sending, beyond the objects made before), then keeps its
/// store open until its standard input closes (the consumer is done).
fn producer(args: &[String]) {
    let (way, url, topic) = (Way::parse(&args[0]), &args[1], &args[2]);
    let size: usize = args[3].parse().unwrap();
    let n: usize = args[4].parse().unwrap();
    let dir = Path::new(&args[5]);
    let name = format!("stream-bench-{}-{}", way.name(), uuid::Uuid::new_v4());
    let store = way.store().map(|kind| match kind {
        "file" => Store::new(name, FileConnector::new(dir.join("store")).unwrap()).unwrap(),
        "redis" => Store::new(name, RedisConnector::new(url.as_str()).unwrap()).unwrap(),
        "shm" => Store::new(name, SharedMemoryConnector::new().unwrap()).unwrap(),
        other => panic!("unknown store {other}"),
    });
    let payload = payload(size);
    let publisher = match way.broker() {
        "queue" => RedisQueue::new(url.as_str()).unwrap().publisher(),
        _ => RedisStreams::new(url.as_str()).unwrap().publisher(),
    }
    .unwrap();
    let builder = StreamProducer::<Vec<u8>>::builder(publisher);
    let mut producer = match &store {
        Some(store) => builder.default_store(store.clone()).build(),
        None => builder.build(),
    };
    // The objects exist before the stream starts (an application sends what
    // it made), up to PREMADE bytes; beyond, each is copied before its send.
    let premade = n.min(PREMADE / size.max(1));
    let mut objects: Vec<Vec<u8>> = (0..premade).map(|_| payload.clone()).collect();
    objects.reverse();
    let (start, mut copying) = (Instant::now(), Duration::ZERO);
    for i in 0..n {
        let t = Instant::now();
        let object = objects.pop().unwrap_or_else(|| payload.clone());
        copying += t.elapsed();
        producer
            .send_with(topic, object, Metadata::new().with("i", i as i64))
            .unwrap();
    }
    producer.close_topic(topic).unwrap();
    producer.close().unwrap();
    println!(
        "sent {} {}",
        start.elapsed().as_secs_f64(),
        copying.as_secs_f64()
    );
    std::io::stdout().flush().unwrap();
    // The consumer evicts what it reads; the store stays open until then
    // (a shared-memory store's objects go with the process that made it).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    if let Some(store) = store {
        store.close().unwrap();
    }
}

/// `--stream-consumer BROKER URL TOPIC`: prints `ready` once subscribed,
/// then, at the topic's end, `done <count> <first-to-last s> <touched>
/// <peak RSS KiB> <RSS KiB before the first object>`.
fn consumer(args: &[String]) {
    let (broker, url, topic) = (&args[0], args[1].as_str(), args[2].as_str());
    let consumer = match broker.as_str() {
        "queue" => StreamConsumer::<Vec<u8>>::builder(
            RedisQueue::new(url).unwrap().subscriber(topic).unwrap(),
        ),
        "streams" => StreamConsumer::<Vec<u8>>::builder(
            RedisStreams::new(url).unwrap().subscriber(topic).unwrap(),
        ),
        other => panic!("unknown broker {other}"),
    };
    let consumer = consumer.timeout(EVENT_TIMEOUT).build();
    let before = peak_rss_kib();
    println!("ready");
    std::io::stdout().flush().unwrap();
    let (mut count, mut touched) = (0u64, 0u64);
    let (mut first, mut last) = (None, None);
    for item in consumer {
        let item = item.unwrap();
        let object: &Vec<u8> = Item::resolve(&item).unwrap();
        let len = object.len();
        touched += len as u64
            + u64::from(object[0])
            + u64::from(object[len / 2])
            + u64::from(object[len - 1]);
        let now = Instant::now();
        first.get_or_insert(now);
        last = Some(now);
        count += 1;
        drop(item); // evicted from the store here
    }
    let span = match (first, last) {
        (Some(f), Some(l)) => (l - f).as_secs_f64(),
        _ => f64::NAN,
    };
    println!("done {count} {span} {touched} {} {before}", peak_rss_kib());
}

/// What one Rust row measured.
struct RustRun {
    per_s: f64,
    peak_kib: u64,
    base_kib: u64,
    span_s: f64,
    send_s: f64,
    copy_s: f64,
}

fn spawn_self(args: &[&str], stdin: Stdio) -> (Child, BufReader<ChildStdout>) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    let mut child = redis_server::die_with_parent(&mut command)
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    (child, out)
}

fn line(out: &mut BufReader<ChildStdout>, what: &str) -> String {
    let mut l = String::new();
    out.read_line(&mut l).unwrap();
    assert!(!l.is_empty(), "the {what} exited without answering");
    l.trim().to_string()
}

fn rust_row(url: &str, way: Way, size: usize, n: usize) -> RustRun {
    let topic = format!("bench-{}", uuid::Uuid::new_v4());
    let dir = tempfile::tempdir().unwrap();
    let (mut consumer, mut consumer_out) = spawn_self(
        &["--stream-consumer", way.broker(), url, &topic],
        Stdio::null(),
    );
    assert_eq!(line(&mut consumer_out, "consumer"), "ready");
    let (size_s, n_s) = (size.to_string(), n.to_string());
    let (mut producer, mut producer_out) = spawn_self(
        &[
            "--stream-producer",
            way.name(),
            url,
            &topic,
            &size_s,
            &n_s,
            dir.path().to_str().unwrap(),
        ],
        Stdio::piped(),
    );
    let done = line(&mut consumer_out, "consumer");
    let sent = line(&mut producer_out, "producer");
    drop(producer.stdin.take()); // the producer closes its store and exits
    assert!(consumer.wait().unwrap().success(), "the consumer failed");
    assert!(producer.wait().unwrap().success(), "the producer failed");
    let done: Vec<&str> = done.split_whitespace().collect();
    let sent: Vec<&str> = sent.split_whitespace().collect();
    assert_eq!(done[0], "done", "{done:?}");
    assert_eq!(
        done[1],
        n.to_string(),
        "{n} objects sent, {} arrived",
        done[1]
    );
    let span: f64 = done[2].parse().unwrap();
    let touched: u64 = done[3].parse().unwrap();
    assert!(touched >= (n * size) as u64, "every object touched whole");
    RustRun {
        per_s: (n - 1) as f64 / span,
        span_s: span,
        peak_kib: done[4].parse().unwrap(),
        base_kib: done[5].parse().unwrap(),
        send_s: sent[1].parse().unwrap(),
        copy_s: sent[2].parse().unwrap(),
    }
}

/// One anchor row: objects/s, or why there is none.
fn python_row(o: &Options, url: &str, mode: &str, size: usize, n: usize) -> Result<f64, String> {
    let (python, anchor) = (o.python.as_ref().unwrap(), o.anchor.as_ref().unwrap());
    // The anchor sends a tenth as many objects of 50 MB and more.
    let asked = if size >= 50_000_000 { n * 10 } else { n };
    let redis = url.trim_start_matches("redis://").trim_end_matches('/');
    let out = Command::new(python)
        .arg(anchor)
        .args(["--redis", redis, "--json", "--modes", mode])
        .args(["--sizes", &size.to_string(), "--n", &asked.to_string()])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: serde_json::Value = serde_json::from_str(text.lines().last().unwrap_or(""))
        .map_err(|e| format!("anchor output: {e}: {text}"))?;
    let row = &rows[0];
    assert_eq!(row["n"].as_u64(), Some(n as u64), "the anchor's n");
    row["objects_per_s"]
        .as_f64()
        .ok_or_else(|| format!("no objects_per_s in {row}"))
}

fn median(xs: &[f64]) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

#[derive(Default)]
struct Row {
    rust: Vec<f64>,
    python: Vec<f64>,
    peak_kib: u64,
    base_kib: u64,
    span_s: Vec<f64>,
    send_s: Vec<f64>,
    copy_s: Vec<f64>,
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--stream-producer") => return producer(&args[1..]),
        Some("--stream-consumer") => return consumer(&args[1..]),
        _ => {}
    }
    let mut o = options(&args);
    if let (Some(python), Some(anchor)) = (&o.python, &o.anchor) {
        if !python.exists() || !anchor.exists() {
            eprintln!(
                "streams bench: no Python at {} or no anchor at {}: Rust rows only",
                python.display(),
                anchor.display()
            );
            o.python = None;
        }
    } else {
        o.python = None;
    }
    if redis_server::program().is_none() {
        println!(
            "streams bench skipped: `redis-server` is not on PATH (the broker of every row; \
             install it with `apt-get install redis-server` or point PROXYSTORE_REDIS_SERVER at one)"
        );
        return;
    }
    let Some(server) = redis_server::RedisServer::start("bench streams") else {
        println!("streams bench skipped: no redis-server");
        return;
    };
    let url = server.url();
    let sizes = sizes(o.quick);
    let mut rows: BTreeMap<(usize, Way), Row> = BTreeMap::new();
    let mut python_failed = None;
    for round in 0..o.rounds {
        for &(size, n, label) in &sizes {
            for way in Way::ALL {
                eprintln!(
                    "round {}/{}: {label} {} (n = {n})",
                    round + 1,
                    o.rounds,
                    way.name()
                );
                let run = rust_row(&url, way, size, n);
                let row = rows.entry((size, way)).or_default();
                row.rust.push(run.per_s);
                row.peak_kib = row.peak_kib.max(run.peak_kib);
                row.base_kib = row.base_kib.max(run.base_kib);
                row.span_s.push(run.span_s);
                row.send_s.push(run.send_s);
                row.copy_s.push(run.copy_s);
                // Python's row beside it (once per mode: shm and streams+file
                // are compared with Python's file row).
                if o.python.is_some() && matches!(way, Way::InEvent | Way::File | Way::Redis) {
                    match python_row(&o, &url, way.python(), size, n) {
                        Ok(per_s) => row.python.push(per_s),
                        Err(e) => {
                            eprintln!("python row {label} {} failed: {e}", way.python());
                            python_failed = Some(e);
                        }
                    }
                }
            }
        }
    }
    drop(server);
    print_table(&o, &sizes, &rows, python_failed.is_some());
}

fn print_table(
    o: &Options,
    sizes: &[(usize, usize, &str)],
    rows: &BTreeMap<(usize, Way), Row>,
    python_failed: bool,
) {
    let python = |size: usize, way: Way| -> Option<f64> {
        let beside = match way {
            Way::Shm | Way::StreamsFile => Way::File,
            other => other,
        };
        rows.get(&(size, beside))
            .filter(|r| !r.python.is_empty())
            .map(|r| median(&r.python))
    };
    println!(
        "\nstreams: a producer process and a consumer process, a Redis list as the broker \
         (streams+file: Redis Streams); objects/s = (n-1) / first-to-last; medians of {} round(s)",
        o.rounds
    );
    println!(
        "{:<8} {:<13} {:>5} {:>11} {:>9} {:>11} {:>9} {:>8} {:>7} {:>9} {:>7} {:>10}",
        "size",
        "way",
        "n",
        "rust obj/s",
        "MB/s",
        "py obj/s",
        "MB/s",
        "rust/py",
        "target",
        "/in-event",
        "target",
        "peak RSS"
    );
    let mut misses = Vec::new();
    let mut checks = 0;
    for &(size, n, label) in sizes {
        let event = median(&rows[&(size, Way::InEvent)].rust);
        for way in Way::ALL {
            let row = &rows[&(size, way)];
            let rust = median(&row.rust);
            let py = python(size, way);
            let py_target = if size <= 10_000 { 10.0 } else { 3.0 };
            let (py_text, py_mb, ratio, py_tgt) = match py {
                Some(p) if way == Way::StreamsFile => (
                    format!("{p:.1}"),
                    format!("{:.1}", p * size as f64 / 1e6),
                    format!("{:.2}x", rust / p),
                    "(info)".into(),
                ),
                Some(p) => {
                    let ratio = rust / p;
                    let ok = ratio >= py_target;
                    checks += 1;
                    if !ok {
                        misses.push(format!(
                            "{label} {}: {ratio:.1}x python's {} row (target {py_target}x)",
                            way.name(),
                            way.python()
                        ));
                    }
                    (
                        format!("{p:.1}"),
                        format!("{:.1}", p * size as f64 / 1e6),
                        format!("{ratio:.2}x"),
                        format!(">={py_target}x"),
                    )
                }
                None => ("-".into(), "-".into(), "-".into(), "".into()),
            };
            let (over, over_tgt) = if way == Way::InEvent {
                ("1.0x".to_string(), String::new())
            } else {
                let ratio = rust / event;
                let targeted = size >= 10_000_000 && matches!(way, Way::File | Way::Shm);
                if targeted {
                    checks += 1;
                    if ratio < 5.0 {
                        misses.push(format!(
                            "{label} {}: {ratio:.1}x the in-event throughput (target 5x)",
                            way.name()
                        ));
                    }
                }
                (
                    format!("{ratio:.2}x"),
                    if targeted {
                        ">=5x".into()
                    } else {
                        String::new()
                    },
                )
            };
            let rss = if size >= 100 * MIB {
                let objects = row.peak_kib as f64 * 1024.0 / size as f64;
                checks += 1;
                if objects >= 3.0 {
                    misses.push(format!(
                        "{label} {}: consumer peak RSS {objects:.2} objects (target < 3)",
                        way.name()
                    ));
                }
                format!("{objects:.2} obj")
            } else {
                format!("{:.0} MiB", row.peak_kib as f64 / 1024.0)
            };
            println!(
                "{:<8} {:<13} {:>5} {:>11.1} {:>9.1} {:>11} {:>9} {:>8} {:>7} {:>9} {:>7} {:>10}",
                label,
                way.name(),
                n,
                rust,
                rust * size as f64 / 1e6,
                py_text,
                py_mb,
                ratio,
                py_tgt,
                over,
                over_tgt,
                rss
            );
        }
    }
    println!(
        "(python's row beside shm is its file row: Python ProxyStore has no shared-memory \
         connector; beside streams+file too, for information only: the anchor's broker is a \
         Redis list. Peak RSS is the consumer's, in objects at 100 MiB, including its ~{:.0} MiB \
         before the first object)",
        rows.values().map(|r| r.base_kib).max().unwrap_or(0) as f64 / 1024.0
    );
    for &(size, _, label) in sizes {
        let list = median(&rows[&(size, Way::File)].rust);
        let streams = median(&rows[&(size, Way::StreamsFile)].rust);
        println!(
            "{label}: file store through Redis Streams {:.1} obj/s, through a Redis list {:.1} obj/s ({:.2}x)",
            streams,
            list,
            streams / list
        );
    }
    println!(
        "who sets the pace: the producer's time to send all (copies made while sending) \
         beside the consumer's first-to-last, in s"
    );
    for &(size, _, label) in sizes {
        let cells: Vec<String> = Way::ALL
            .into_iter()
            .map(|way| {
                let row = &rows[&(size, way)];
                let copy = median(&row.copy_s);
                format!(
                    "{} {:.3}{} / {:.3}",
                    way.name(),
                    median(&row.send_s),
                    if copy >= 0.001 {
                        format!(" ({copy:.3})")
                    } else {
                        String::new()
                    },
                    median(&row.span_s)
                )
            })
            .collect();
        println!("  {label:<8} {}", cells.join(", "));
    }
    if o.python.is_none() {
        println!("(no Python rows: pass --python and --anchor, as bench/compare does)");
    } else if python_failed {
        println!("(some Python rows failed; see above)");
    }
    println!(
        "targets: >= 10 MB, file and shm >= 5x in-event; every row >= 3x python's (>= 10x at \
         10 kB); 100 MiB consumer peak < 3 objects: {} of {checks} checks met",
        checks - misses.len()
    );
    if misses.is_empty() {
        println!("targets: all {}", verdict(true));
    }
    for miss in &misses {
        println!("  {}: {miss}", verdict(false));
    }
}
