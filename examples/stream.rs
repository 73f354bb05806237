//! A stream of large frames from a producer process to two consumer
//! processes that share the topic, through Redis Streams.
//!
//! The producer sends 20 frames of 8 MiB (`Vec<f64>`, with the step number
//! in their metadata). Each frame goes into a shared-memory store
//! (`SharedMemoryConnector`, `/dev/shm`; a temporary directory on other
//! systems) and only a small event (the key, the store's configuration, the
//! metadata) goes through the `RedisStreams` broker. The two consumers are
//! one consumer group: each frame goes to one of them, which reads it from
//! shared memory, prints its checksum, and drops it, which evicts the
//! object and acknowledges the event.
//!
//! This process starts the others (this program again, with a role as
//! first argument) and owns the store: shared memory lives as long as the
//! process that created it, so the store's owner must outlive the
//! consumers. At the end it checks that every frame was consumed exactly
//! once with the right checksum, that the store is empty, and that nothing
//! of the stream is left in Redis once its end grace has passed.
//!
//! Run it with `cargo run --example stream --features stream`: it starts a
//! private `redis-server` (from PATH, or `PROXYSTORE_REDIS_SERVER`) on a
//! free port and stops it at the end. To use a running server instead:
//! `cargo run --example stream --features stream -- redis://127.0.0.1:6379`.

use std::error::Error;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use proxystore::stream::{Item, Metadata, RedisStreams, StreamConsumer, StreamProducer};
use proxystore::{Store, StoreConfig};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const FRAMES: i64 = 20;
/// 8 MiB of `f64`.
const FRAME_LEN: usize = 8 * 1024 * 1024 / 8;
const CONSUMERS: usize = 2;
/// How long the mark of the topic's end stays in Redis once the last
/// frame was consumed, for the consumer that did not receive the end.
const END_GRACE: Duration = Duration::from_secs(2);

/// The frame of `step`: whole numbers, so that its sum is exact.
fn frame(step: i64) -> Vec<f64> {
    (0..FRAME_LEN)
        .map(|i| ((i as i64 * 7 + step * 13) % 1000) as f64)
        .collect()
}

fn checksum(values: &[f64]) -> f64 {
    values.iter().sum()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let run = match args.first().map(String::as_str) {
        Some("produce") => produce(&args[1..]),
        Some("consume") => consume(&args[1..]),
        _ => coordinate(args.first().cloned()),
    };
    match run {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `produce <url> <topic> <store-config>`: sends the frames, then the
/// topic's end.
fn produce(args: &[String]) -> Result<()> {
    let [url, topic, config] = args else {
        return Err("usage: stream produce <url> <topic> <store-config>".into());
    };
    // The store the coordinator created, rebuilt from its configuration:
    // this process writes objects into it but never removes it.
    let config: StoreConfig = decode_config(config)?;
    let store = Store::from_config(config)?;
    let broker = RedisStreams::new(url.as_str())?;
    let mut producer = StreamProducer::<Vec<f64>>::builder(broker.publisher()?)
        .default_store(store)
        .build();
    let started = Instant::now();
    for step in 0..FRAMES {
        let values = frame(step);
        let sum = checksum(&values);
        producer.send_with(topic, values, Metadata::new().with("step", step))?;
        println!("[producer]   sent frame {step:>2} (8 MiB, checksum {sum})");
    }
    producer.close_topic(topic)?; // consumers end after the last frame
    producer.close()?;
    println!(
        "[producer]   {FRAMES} frames sent in {:.2?}",
        started.elapsed()
    );
    Ok(())
}

/// `consume <url> <topic> <n>`: consumes its share of the topic until its
/// end, printing each frame's step and checksum.
fn consume(args: &[String]) -> Result<()> {
    let [url, topic, n] = args else {
        return Err("usage: stream consume <url> <topic> <n>".into());
    };
    let broker = RedisStreams::new(url.as_str())?.end_grace(END_GRACE);
    let consumer = StreamConsumer::<Vec<f64>>::new(broker.subscriber(topic.as_str())?);
    println!("[consumer {n}] ready");
    let mut count = 0;
    for item in consumer {
        let item = item?;
        let step = Item::metadata(&item)
            .get("step")
            .and_then(|v| v.as_i64())
            .ok_or("a frame without a step")?;
        // Read from shared memory here, on first use.
        let sum = checksum(&item);
        println!(
            "[consumer {n}] frame {step} checksum {sum} ({} values)",
            item.len()
        );
        count += 1;
    } // each item dropped: its object evicted, its event acknowledged
    println!("[consumer {n}] end {count}");
    Ok(())
}

/// What one consumer reported.
#[derive(Default)]
struct Report {
    frames: Vec<(i64, f64)>,
    end: Option<usize>,
}

/// Starts the processes, waits for them and checks what is left.
fn coordinate(url: Option<String>) -> Result<()> {
    let server;
    let url = match url {
        Some(url) => url,
        None => {
            server = PrivateRedis::start()?;
            println!("started a private redis-server at {}", server.url);
            server.url.clone()
        }
    };
    let exe = std::env::current_exe()?;
    let topic = format!("frames-{}", std::process::id());
    let store = new_store()?;

    // The consumers first: they join the topic's consumer group.
    let mut consumers = Vec::new();
    for n in 1..=CONSUMERS {
        let child = Command::new(&exe)
            .args(["consume", &url, &topic, &n.to_string()])
            .stdout(Stdio::piped())
            .spawn()?;
        consumers.push(Process::new(child));
    }
    let mut readers = Vec::new();
    for consumer in &mut consumers {
        let mut lines = BufReader::new(consumer.0.stdout.take().expect("piped")).lines();
        match lines.next() {
            Some(Ok(line)) if line.ends_with("ready") => println!("{line}"),
            other => return Err(format!("a consumer did not start: {other:?}").into()),
        }
        readers.push(std::thread::spawn(move || {
            let mut report = Report::default();
            for line in lines.map_while(std::result::Result::ok) {
                println!("{line}");
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.get(2..) {
                    Some(["frame", step, "checksum", sum, ..]) => {
                        if let (Ok(step), Ok(sum)) = (step.parse(), sum.parse()) {
                            report.frames.push((step, sum));
                        }
                    }
                    Some(["end", count]) => report.end = count.parse().ok(),
                    _ => {}
                }
            }
            report
        }));
    }

    let config = encode_config(store.config())?;
    let mut producer = Process::new(
        Command::new(&exe)
            .args(["produce", &url, &topic, &config])
            .spawn()?,
    );
    if !producer.0.wait()?.success() {
        return Err("the producer failed".into());
    }
    for consumer in &mut consumers {
        if !consumer.0.wait()?.success() {
            return Err("a consumer failed".into());
        }
    }
    let reports: Vec<Report> = readers
        .into_iter()
        .map(|r| r.join().expect("a reader thread"))
        .collect();

    // Every frame consumed once, whole.
    let mut seen = vec![0; FRAMES as usize];
    for (n, report) in reports.iter().enumerate() {
        if report.end != Some(report.frames.len()) {
            return Err(format!("consumer {} did not reach the end", n + 1).into());
        }
        for &(step, sum) in &report.frames {
            let count = seen
                .get_mut(step as usize)
                .ok_or(format!("an unknown frame {step}"))?;
            *count += 1;
            if sum != checksum(&frame(step)) {
                return Err(format!("frame {step}: wrong checksum {sum}").into());
            }
        }
    }
    if let Some(step) = seen.iter().position(|count| *count != 1) {
        let times = seen[step];
        return Err(format!("frame {step} was consumed {times} times").into());
    }
    let shares: Vec<String> = reports.iter().map(|r| r.frames.len().to_string()).collect();
    println!(
        "every frame consumed exactly once, checksums right (consumers' shares: {})",
        shares.join(" + ")
    );

    // Each consumer evicted what it consumed: the store is empty.
    let left = store.len()?;
    if left != 0 {
        return Err(format!("{left} objects left in the store").into());
    }
    println!("the store is empty");

    // The stream and its group went with the last acknowledgement; the
    // mark of the end expires after its grace.
    let deadline = Instant::now() + END_GRACE + Duration::from_secs(10);
    loop {
        let keys = stream_keys(&url, &topic)?;
        if keys.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("left in Redis: {keys:?}").into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("no key of the stream is left in Redis");
    store.close()?;
    Ok(())
}

/// The store of the frames: shared memory.
#[cfg(target_os = "linux")]
fn new_store() -> Result<Store> {
    let connector = proxystore::connectors::SharedMemoryConnector::new()?;
    println!(
        "frames go through shared memory: {}",
        connector.directory().display()
    );
    Ok(Store::new("stream-example", connector)?)
}

/// The store of the frames: a temporary directory (no shared-memory store
/// on this system).
#[cfg(not(target_os = "linux"))]
fn new_store() -> Result<Store> {
    let dir = std::env::temp_dir().join(format!("proxystore-stream-{}", std::process::id()));
    let connector = proxystore::connectors::FileConnector::new(&dir)?;
    println!("frames go through the directory {}", dir.display());
    Ok(Store::new("stream-example", connector)?)
}

/// A store's configuration as text for a command line: CBOR in hex.
fn encode_config(config: &StoreConfig) -> Result<String> {
    let mut bytes = Vec::new();
    ciborium::into_writer(config, &mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn decode_config(text: &str) -> Result<StoreConfig> {
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2).unwrap_or("invalid"), 16))
        .collect::<std::result::Result<Vec<u8>, _>>()?;
    Ok(ciborium::from_reader(&bytes[..])?)
}

/// The keys of the broker for `topic` still in Redis (the stream and the
/// mark of its end).
fn stream_keys(url: &str, topic: &str) -> Result<Vec<String>> {
    let mut connection = redis::Client::open(url)?.get_connection()?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("proxystore:stream*")
        .query(&mut connection)?;
    let suffix = format!(":{topic}");
    Ok(keys.into_iter().filter(|k| k.ends_with(&suffix)).collect())
}

/// A child process, killed if it is still running when dropped (an error
/// in this process leaves none behind).
struct Process(Child);

impl Process {
    fn new(child: Child) -> Process {
        Process(child)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A redis-server of this run: a free port on 127.0.0.1, a temporary
/// directory, nothing saved; stopped when dropped.
struct PrivateRedis {
    process: Process,
    url: String,
    _dir: tempfile::TempDir,
}

impl PrivateRedis {
    fn start() -> Result<PrivateRedis> {
        let Some(program) = redis_server() else {
            return Err(
                "this example needs a Redis server, and `redis-server` is not on PATH. \
                 Install it (`apt-get install redis-server` on Debian/Ubuntu, `brew install \
                 redis` on macOS) or set PROXYSTORE_REDIS_SERVER to its path, or give the URL \
                 of a running server: `cargo run --example stream --features stream -- \
                 redis://host:6379`"
                    .into(),
            );
        };
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = tempfile::tempdir()?;
        let child = Command::new(&program)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", program.display()))?;
        let mut server = PrivateRedis {
            process: Process::new(child),
            url: format!("redis://127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = server.process.0.try_wait()? {
                return Err(format!("redis-server exited at start: {status}").into());
            }
            if server.ping() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err("redis-server did not answer within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ping(&mut self) -> bool {
        let ping = || -> redis::RedisResult<String> {
            let client = redis::Client::open(self.url.as_str())?;
            let mut connection = client.get_connection_with_timeout(Duration::from_secs(1))?;
            redis::cmd("PING").query(&mut connection)
        };
        ping().is_ok_and(|reply| reply == "PONG")
    }
}

/// `PROXYSTORE_REDIS_SERVER`, or `redis-server` on PATH.
fn redis_server() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PROXYSTORE_REDIS_SERVER") {
        return Some(PathBuf::from(path));
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
}
