//! Streams across hosts made of network namespaces: Redis on one host, a
//! producer on a second, consumers on two others, with the objects in a
//! `RedisConnector` store (the one store every host reaches).
//!
//! - `RedisStreams`: one consumer host is killed (all its processes) while
//!   it holds a frame, mid-stream. Every frame must be consumed, the dead
//!   host's frame delivered again to the other consumer, which must end;
//!   afterwards Redis holds no key of the run.
//! - `RedisQueue`: two consumer hosts share the topic; every frame is
//!   consumed exactly once, both end, and nothing is left. (A consumer
//!   that dies loses the event it took, so none is killed here.)
//!
//! The producer and the consumers are this test binary in a special mode
//! (its `*_entry` tests, which do nothing in a normal run). Namespaces
//! need root and `ip` (iproute2); without them the test says so and runs
//! the same scenario with processes on loopback.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use proxystore::connectors::RedisConnector;
use proxystore::stream::{
    Item, Metadata, Publisher, RedisQueue, RedisStreams, StreamConsumer, StreamProducer,
};
use proxystore::Store;
use support::common::unique;
use support::netns::{namespaces_usable, Host, Network};
use support::redis_server::{die_with_parent, free_port, program_or_skip, RedisServer};

/// The role of a process of the scenario (`produce`, `consume`); unset in
/// a normal test run.
const ROLE_ENV: &str = "PROXYSTORE_TEST_STREAM_ROLE";
const URL_ENV: &str = "PROXYSTORE_TEST_STREAM_URL";
/// `streams` or `queue`.
const KIND_ENV: &str = "PROXYSTORE_TEST_STREAM_KIND";
const TOPIC_ENV: &str = "PROXYSTORE_TEST_STREAM_TOPIC";
/// The namespace of the objects in Redis.
const NAMESPACE_ENV: &str = "PROXYSTORE_TEST_STREAM_NAMESPACE";
/// Producer: the step before which it waits for a line on stdin.
const PAUSE_ENV: &str = "PROXYSTORE_TEST_STREAM_PAUSE";
/// Consumer: how many frames it consumes before it holds the next for ever.
const HOLD_ENV: &str = "PROXYSTORE_TEST_STREAM_HOLD_AFTER";

const FRAMES: i64 = 20;
/// 1 MiB of `f64` per frame.
const FRAME_LEN: usize = 1 << 17;
/// Where the producer pauses for the kill.
const HALF: i64 = FRAMES / 2;
const CLAIM_IDLE: Duration = Duration::from_millis(500);
/// A subscriber that did not receive the end event learns of it from a mark
/// that expires this long after the end: one busy longer than that (a
/// frame read on a loaded machine) would wait for ever.
const END_GRACE: Duration = Duration::from_secs(2);
/// How long a line from a process of the scenario may take before the
/// test gives up on it (a hang, not a slow run).
const PATIENCE: Duration = Duration::from_secs(120);

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set for this role"))
}

/// Prints a line the test reads (after a newline: the harness may have
/// printed the test's name without one).
fn say(line: &str) {
    println!("\nSTREAM {line}");
    std::io::stdout().flush().unwrap();
}

fn produce(publisher: impl Publisher, store: Store, topic: &str, pause: Option<i64>) {
    let mut producer = StreamProducer::<Vec<f64>>::builder(publisher)
        .default_store(store)
        .build();
    for step in 0..FRAMES {
        if Some(step) == pause {
            say(&format!("paused {step}"));
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
        }
        let meta = Metadata::new().with("step", step);
        producer
            .send_with(topic, vec![step as f64; FRAME_LEN], meta)
            .unwrap();
        say(&format!("sent {step}"));
    }
    producer.close_topic(topic).unwrap();
    producer.close().unwrap();
    say("done");
}

/// The producer's side, run on its host by the scenarios; does nothing in
/// a normal test run.
#[test]
fn stream_hosts_producer_entry() {
    if std::env::var(ROLE_ENV).as_deref() != Ok("produce") {
        return;
    }
    let url = env(URL_ENV);
    let namespace = env(NAMESPACE_ENV);
    // Kept on close: what the consumers did not evict stays in Redis, for
    // the test to find.
    let connector = RedisConnector::builder(&url)
        .namespace(&namespace)
        .keep_on_close()
        .build()
        .unwrap();
    let store = Store::builder(namespace, connector)
        .cache_size(0)
        .build()
        .unwrap();
    let topic = env(TOPIC_ENV);
    let pause = std::env::var(PAUSE_ENV).ok().map(|p| p.parse().unwrap());
    match env(KIND_ENV).as_str() {
        "streams" => {
            let broker = RedisStreams::new(&url).unwrap();
            produce(broker.publisher().unwrap(), store, &topic, pause);
        }
        "queue" => {
            let broker = RedisQueue::new(&url).unwrap();
            produce(broker.publisher().unwrap(), store, &topic, pause);
        }
        other => panic!("unknown broker {other}"),
    }
}

/// A consumer's side, run on its host by the scenarios; does nothing in a
/// normal test run.
#[test]
fn stream_hosts_consumer_entry() {
    if std::env::var(ROLE_ENV).as_deref() != Ok("consume") {
        return;
    }
    let url = env(URL_ENV);
    let topic = env(TOPIC_ENV);
    let hold_after: Option<usize> = std::env::var(HOLD_ENV).ok().map(|h| h.parse().unwrap());
    let consumer = match env(KIND_ENV).as_str() {
        "streams" => StreamConsumer::<Vec<f64>>::new(
            RedisStreams::new(&url)
                .unwrap()
                .claim_idle(CLAIM_IDLE)
                .end_grace(END_GRACE)
                .subscriber(&topic)
                .unwrap(),
        ),
        "queue" => StreamConsumer::<Vec<f64>>::new(
            RedisQueue::new(&url)
                .unwrap()
                .end_grace(END_GRACE)
                .subscriber(&topic)
                .unwrap(),
        ),
        other => panic!("unknown broker {other}"),
    };
    say("ready");
    let mut count = 0;
    for item in consumer {
        let item = item.unwrap();
        let step = Item::metadata(&item).get("step").unwrap().as_i64().unwrap();
        // Read from Redis here, on another host than the producer's.
        assert_eq!(item.len(), FRAME_LEN);
        assert!(item.iter().all(|v| *v == step as f64), "frame {step} whole");
        if Some(count) == hold_after {
            say(&format!("holding {step}"));
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        say(&format!("item {step}"));
        count += 1;
        // A little work per frame, so that the other consumer gets some.
        std::thread::sleep(Duration::from_millis(10));
    } // each item dropped: its object evicted (and, on Redis Streams, acknowledged)
    say(&format!("end {count}"));
}

/// The lines a process of the scenario says, in order.
struct Lines(Receiver<String>);

impl Lines {
    /// The next line; panics if the process ended or hangs first.
    fn next(&self, who: &str) -> String {
        self.0
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|e| panic!("{who}: no line ({e})"))
    }

    /// Skips lines until `line`.
    fn expect(&self, who: &str, line: &str) {
        loop {
            if self.next(who) == line {
                return;
            }
        }
    }

    /// The steps of the frames consumed, until the consumer's end.
    fn consumed(&self, who: &str) -> Vec<i64> {
        let mut steps = Vec::new();
        loop {
            let line = self.next(who);
            if let Some(step) = line.strip_prefix("item ") {
                steps.push(step.parse().unwrap());
                // Each frame at most twice (a redelivery): more is a loop.
                assert!(
                    steps.len() <= 2 * FRAMES as usize,
                    "{who}: frames over and over: {steps:?}"
                );
            } else if let Some(count) = line.strip_prefix("end ") {
                assert_eq!(count.parse::<usize>().unwrap(), steps.len(), "{who}");
                return steps;
            } else {
                panic!("{who}: unexpected {line:?}");
            }
        }
    }
}

/// Starts this test binary in `role` on `host`, with `vars` set; returns
/// what it says (and its stdin, piped).
fn start(host: &mut Host, role: &str, vars: &[(&str, String)]) -> (Lines, ChildStdin) {
    let entry = match role {
        "produce" => "stream_hosts_producer_entry",
        _ => "stream_hosts_consumer_entry",
    };
    let mut command = host.command(&std::env::current_exe().unwrap());
    let mut child = die_with_parent(&mut command)
        .args([entry, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role)
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the process starts");
    let stdout = child.stdout.take().unwrap();
    let stdin = child.stdin.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(said) = line.strip_prefix("STREAM ") {
                if tx.send(said.trim().to_string()).is_err() {
                    break;
                }
            }
        }
    });
    host.children.push(child);
    (Lines(rx), stdin)
}

/// Waits for the processes of `host` to exit, each successfully.
fn wait_success(host: &mut Host, who: &str) {
    for child in &mut host.children {
        let status = child.wait().unwrap();
        assert!(status.success(), "{who} failed: {status}");
    }
}

/// Redis on one host, the producer on a second, consumers on two others.
/// Dropped in field order: the processes, then the server, then the
/// namespaces.
struct Scenario {
    producer: Host,
    consumers: [Host; 2],
    server: RedisServer,
    _network: Option<Network>,
}

impl Scenario {
    fn start(test: &str, salt: u32) -> Option<Scenario> {
        let program = program_or_skip(test)?;
        let network = namespaces_usable()
            .and_then(|()| Network::new(&["redis", "producer", "c1", "c2"], salt));
        let network = match network {
            Ok(n) => Some(n),
            Err(reason) => {
                eprintln!(
                    "NOTE {test}: network namespaces unavailable ({reason}); running the same \
                     scenario with processes on loopback"
                );
                None
            }
        };
        let port = free_port();
        let (server, hosts) = match &network {
            Some(net) => {
                let prefix = ["ip", "netns", "exec", &net.ns(0)];
                let server = RedisServer::start_on(&program, &prefix, &net.addr(0), port)
                    .expect("redis-server starts in its namespace");
                let host = |i: usize| Host::new(Some(net.ns(i)));
                (server, [host(1), host(2), host(3)])
            }
            None => {
                let server = RedisServer::start_on(&program, &[], "127.0.0.1", port)
                    .expect("redis-server starts");
                (server, [Host::new(None), Host::new(None), Host::new(None)])
            }
        };
        eprintln!(
            "{test}: Redis at {} ({})",
            server.url(),
            match &network {
                Some(net) => format!("namespace {}", net.ns(0)),
                None => "loopback".into(),
            }
        );
        let [producer, c1, c2] = hosts;
        Some(Scenario {
            producer,
            consumers: [c1, c2],
            server,
            _network: network,
        })
    }

    /// Waits until Redis holds no key of the stream layer and no object of
    /// `namespace` (the end's mark expires after its grace).
    fn assert_nothing_left(&self, namespace: &str) {
        let deadline = Instant::now() + END_GRACE + Duration::from_secs(10);
        loop {
            let mut keys = self.server.keys("proxystore:stream*");
            keys.extend(self.server.keys(&format!("proxystore:{namespace}:*")));
            if keys.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "left in Redis: {keys:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn redis_streams_across_hosts_survive_the_death_of_a_consumer_host() {
    let test = "redis_streams_across_hosts_survive_the_death_of_a_consumer_host";
    let Some(mut scenario) = Scenario::start(test, 1) else {
        return;
    };
    let namespace = unique("frames");
    let vars = [
        (URL_ENV, scenario.server.url()),
        (KIND_ENV, "streams".to_string()),
        (TOPIC_ENV, unique("topic")),
        (NAMESPACE_ENV, namespace.clone()),
    ];
    let with = |extra: (&'static str, String)| {
        let mut all = vars.to_vec();
        all.push(extra);
        all
    };
    let [doomed, survivor] = &mut scenario.consumers;

    // The doomed host consumes frames 0 and 1, then holds frame 2: it is
    // the only consumer so far, so it receives the first frames.
    let (doomed_says, _) = start(doomed, "consume", &with((HOLD_ENV, "2".into())));
    assert_eq!(doomed_says.next("doomed"), "ready");
    let (producer_says, mut go) = start(
        &mut scenario.producer,
        "produce",
        &with((PAUSE_ENV, HALF.to_string())),
    );
    assert_eq!(doomed_says.next("doomed"), "item 0");
    assert_eq!(doomed_says.next("doomed"), "item 1");
    assert_eq!(doomed_says.next("doomed"), "holding 2");
    // Redis has frame 2 pending with the doomed consumer (named after its
    // process id), the only consumer so far.
    let pending = |server: &RedisServer| {
        let stream = format!("proxystore:stream:{}", vars[2].1);
        server.raw(&["XPENDING", &stream, "proxystore"])
    };
    let doomed_name = format!("{}-", doomed.children[0].id());
    let held = pending(&scenario.server);
    assert!(
        held.contains(&doomed_name),
        "the doomed consumer holds an event: {held:?}"
    );

    // The other consumer host joins; the producer pauses mid-stream, and
    // the doomed host dies with frame 2 in its hands.
    let (survivor_says, _) = start(survivor, "consume", &vars);
    assert_eq!(survivor_says.next("survivor"), "ready");
    producer_says.expect("producer", &format!("paused {HALF}"));
    let still_held = pending(&scenario.server).contains(&doomed_name);
    doomed.kill();
    eprintln!(
        "killed consumer host 1 holding frame 2 ({})",
        if still_held {
            "still pending with it in Redis"
        } else {
            "idle past the claim time already: the other consumer had taken it over"
        }
    );
    go.write_all(b"go\n").unwrap();
    producer_says.expect("producer", "done");
    wait_success(&mut scenario.producer, "the producer");

    // The survivor gets every other frame, and frame 2 once it has been
    // idle for the claim time; frames 0 and 1, acknowledged, never again.
    let mut steps = survivor_says.consumed("survivor");
    wait_success(survivor, "the surviving consumer");
    steps.sort_unstable();
    assert_eq!(steps, (2..FRAMES).collect::<Vec<_>>());
    scenario.assert_nothing_left(&namespace);
}

#[test]
fn a_redis_queue_across_hosts_gives_each_frame_to_one_consumer() {
    let test = "a_redis_queue_across_hosts_gives_each_frame_to_one_consumer";
    let Some(mut scenario) = Scenario::start(test, 2) else {
        return;
    };
    let namespace = unique("frames");
    let vars = [
        (URL_ENV, scenario.server.url()),
        (KIND_ENV, "queue".to_string()),
        (TOPIC_ENV, unique("topic")),
        (NAMESPACE_ENV, namespace.clone()),
    ];
    let says: Vec<Lines> = scenario
        .consumers
        .iter_mut()
        .map(|host| {
            let (says, _) = start(host, "consume", &vars);
            assert_eq!(says.next("consumer"), "ready");
            says
        })
        .collect();
    let (producer_says, _) = start(&mut scenario.producer, "produce", &vars);
    producer_says.expect("producer", "done");
    wait_success(&mut scenario.producer, "the producer");
    let mut all = Vec::new();
    let mut shares = Vec::new();
    for (says, host) in says.iter().zip(&mut scenario.consumers) {
        let steps = says.consumed("consumer");
        wait_success(host, "a consumer");
        shares.push(steps.len());
        all.extend(steps);
    }
    eprintln!("frames per consumer host: {shares:?}");
    all.sort_unstable();
    assert_eq!(
        all,
        (0..FRAMES).collect::<Vec<_>>(),
        "each frame to exactly one consumer"
    );
    scenario.assert_nothing_left(&namespace);
}
