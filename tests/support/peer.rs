//! A second process for the integration tests: it rebuilds connectors and
//! stores from configurations passed on its command line and uses them.
//!
//! Usage: `proxystore-peer <command> <args...>`; answers on stdout.

#[path = "common.rs"]
mod common;

use std::io::{Read, Write};

use common::{from_hex, hex, to_hex, unhex};
use proxystore::connectors::{Connector, ConnectorConfig};
use proxystore::{Key, OwnedProxy, Proxy, StoreConfig};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    match arg(0) {
        // serve: a cluster worker that registers no task at all (the
        // queue's address comes from the environment).
        "serve" => {
            proxystore::worker::init();
            panic!("serve: PROXYSTORE_CLUSTER is not set");
        }
        // get <connector-config> <key>: prints the object in hex, or "missing".
        // redis-round-trip <url>: put, get and evict through a
        // RedisConnector; prints "ok", or the error and exits with 1.
        "redis-round-trip" => {
            use proxystore::connectors::{Connector, RedisConnector};
            let run = || -> proxystore::Result<()> {
                let c = RedisConnector::new(arg(1))?;
                let key = c.put(&[b"over ", b"tls"])?;
                assert_eq!(c.get(&key)?.as_deref(), Some(&b"over tls"[..]));
                c.evict(&key)?;
                c.close()
            };
            match run() {
                Ok(()) => println!("ok"),
                Err(e) => {
                    println!("{e}");
                    std::process::exit(1);
                }
            }
        }
        "get" => {
            let connector = connector(arg(1));
            match connector.get(&key(arg(2))).unwrap() {
                Some(bytes) => println!("{}", hex(&bytes)),
                None => println!("missing"),
            }
        }
        // put <connector-config> <hex>: stores the bytes, prints the key.
        "put" => {
            let key = connector(arg(1)).put(&[&unhex(arg(2))]).unwrap();
            println!("{key}");
        }
        // set <connector-config> <key> <hex>: fills in a key made earlier.
        "set" => connector(arg(1))
            .set(&key(arg(2)), &[&unhex(arg(3))])
            .unwrap(),
        // evict <connector-config> <key>
        "evict" => connector(arg(1)).evict(&key(arg(2))).unwrap(),
        // exists <connector-config> <key>: prints true/false.
        "exists" => println!("{}", connector(arg(1)).exists(&key(arg(2))).unwrap()),
        // watch <connector-config> <key> <reads>: reads the object over and
        // over while another process rewrites it; every read must be whole
        // (its length and all its bytes agree). Prints "whole <n>".
        "watch" => {
            let connector = connector(arg(1));
            let key = key(arg(2));
            let reads: usize = arg(3).parse().unwrap();
            let mut whole = 0;
            for _ in 0..reads {
                if let Some(bytes) = connector.get(&key).unwrap() {
                    let first = bytes[0];
                    assert_eq!(bytes.len(), 1 << 20, "partial object seen");
                    assert!(bytes.iter().all(|b| *b == first), "mixed object seen");
                    whole += 1;
                }
            }
            println!("whole {whole}");
        }
        // put-loop <connector-config> <bytes> [<seconds>]: stores objects of
        // that size over and over for that long (default 3 s) or until
        // killed, ignoring errors (the store may be closing under it).
        // Prints "writing" after the first stored object.
        "put-loop" => {
            let connector = connector(arg(1));
            let body = vec![7u8; arg(2).parse().unwrap()];
            let seconds: u64 = arg(3).parse().unwrap_or(3);
            let until = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
            let mut announced = false;
            while std::time::Instant::now() < until {
                if connector.put(&[&body]).is_ok() && !announced {
                    println!("writing");
                    std::io::stdout().flush().unwrap();
                    announced = true;
                }
            }
        }
        // put-large <connector-config> <mib>: prints "writing", then stores
        // one object of that many MiB (the test kills it meanwhile).
        "put-large" => {
            let connector = connector(arg(1));
            let body = vec![7u8; arg(2).parse::<usize>().unwrap() << 20];
            println!("writing");
            std::io::stdout().flush().unwrap();
            let key = connector.put(&[&body]).unwrap();
            println!("{key}");
        }
        // shm-hold <base>: creates two shared-memory stores under <base>,
        // puts objects in both and evicts a large one (which waits in the
        // store's pool), leaves a temporary file in the first as a write
        // cut short by a crash would, prints both directories (one line
        // each) and waits to be killed.
        "shm-hold" => {
            use proxystore::connectors::SharedMemoryConnector;
            let stores: Vec<SharedMemoryConnector> = (0..2)
                .map(|_| {
                    SharedMemoryConnector::builder()
                        .base_dir(arg(1))
                        .build()
                        .unwrap()
                })
                .collect();
            for (i, c) in stores.iter().enumerate() {
                c.put(&[b"object"]).unwrap();
                c.put(&[&vec![i as u8; 1 << 20]]).unwrap();
                let evicted = c.put(&[&vec![9u8; 2 << 20]]).unwrap();
                c.evict(&evicted).unwrap();
            }
            let key = Key::new();
            let tmp = format!(".{key}.{}.tmp", Key::new());
            std::fs::write(stores[0].directory().join(tmp), b"half an obj").unwrap();
            for c in &stores {
                println!("{}", c.directory().display());
            }
            std::io::stdout().flush().unwrap();
            std::thread::sleep(std::time::Duration::from_secs(600));
        }
        // peer-hold <connector-config> <len> <fill>: stores <len> bytes of
        // <fill> (rebuilding the connector here, so this process keeps
        // them), prints the key and the address it serves on (one line
        // each), then keeps them until its stdin closes.
        "peer-hold" => {
            let len: usize = arg(2).parse().unwrap();
            let fill: u8 = arg(3).parse().unwrap();
            let key = connector(arg(1)).put(&[&vec![fill; len]]).unwrap();
            println!("{key}");
            println!(
                "{}",
                proxystore::connectors::PeerConnector::serving_on().unwrap()
            );
            std::io::stdout().flush().unwrap();
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        }
        // shm-close <base>: creates a shared-memory store under <base>,
        // prints its guardian's pid, closes the store, and prints "ended"
        // once that guardian has exited ("running" if it has not).
        "shm-close" => {
            use proxystore::connectors::SharedMemoryConnector;
            let c = SharedMemoryConnector::builder()
                .base_dir(arg(1))
                .build()
                .unwrap();
            c.put(&[b"object"]).unwrap();
            let pid = SharedMemoryConnector::guardian_pid().unwrap();
            println!("guardian {pid}");
            c.close().unwrap();
            // Waited for by close: not even a zombie is left.
            let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
            let reaped = SharedMemoryConnector::guardian_pid().is_none();
            println!("{}", if reaped && !alive { "ended" } else { "running" });
        }
        // static-lifetime <store-config> <text>: stores the text twice,
        // once with the static lifetime, prints both keys (static first)
        // and exits normally without closing anything.
        "static-lifetime" => {
            use proxystore::lifetime::StaticLifetime;
            let config: StoreConfig = from_hex(arg(1));
            let store = proxystore::Store::from_config(config).unwrap();
            let text = arg(2).to_string();
            let scoped = store
                .put_with_lifetime(&text, StaticLifetime::get())
                .unwrap();
            let kept = store.put(&text).unwrap();
            println!("{scoped} {kept}");
            std::io::stdout().flush().unwrap();
            std::process::exit(0);
        }
        // proxy <proxy-hex>: resolves a Proxy<String>, prints it.
        "proxy" => {
            let proxy: Proxy<String> = from_hex(arg(1));
            match Proxy::resolve(&proxy) {
                Ok(value) => println!("{value}"),
                Err(e) => println!("error: {e}"),
            }
        }
        // send-owned <store-config> <text>: stores the text as an owned
        // proxy, sends its ownership (prints the transfer) and exits,
        // dropping everything it had.
        "send-owned" => {
            let config: StoreConfig = from_hex(arg(1));
            let store = proxystore::Store::from_config(config).unwrap();
            let owned = store.owned_proxy(arg(2).to_string()).unwrap();
            let transfer = OwnedProxy::into_transfer(owned);
            println!("{}", to_hex(&transfer));
        }
        // receive-owned: reads a transfer from stdin, becomes the owner,
        // prints the value, then drops it (which evicts).
        "receive-owned" => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).unwrap();
            let owned: OwnedProxy<String> = from_hex(&text);
            println!("{}", *owned);
            drop(owned);
            println!("dropped");
        }
        // stream-consume <pubsub|queue|streams> <url> <topic> <claim-ms> <hold-ms>:
        // consumes `Vec<f64>` frames whose metadata has a `step`. Prints
        // "ready" once subscribed, "item <step>" when a frame arrives (then
        // holds it for <hold-ms>), and "end <count>" at the topic's end.
        "stream-consume" => stream_consume(&args[1..]),
        // make-pool: what a main that forgot worker::init() does.
        "make-pool" => match proxystore::executor::ProcessPool::new(1) {
            Ok(_) => println!("pool started"),
            Err(e) => println!("error: {e}"),
        },
        // worker <how>: a worker that breaks the protocol: it waits for the
        // first job, then answers it with `how`:
        //   huge    a header announcing 2^62 bytes, then exits;
        //   garbage bytes that are no message at all, then waits;
        //   forged  a well-formed result for a job it was never sent, then waits;
        //   two-sections  a result with two sections, then waits.
        "worker" => broken_worker(arg(1)),
        // silent-worker: a real pool worker that never reports which job
        // it starts (its progress page closed before it serves), as a
        // program built with another version would.
        "silent-worker" => {
            std::env::remove_var("PROXYSTORE_WORKER_PROGRESS");
            proxystore::worker::init();
            panic!("silent-worker: not started by a pool");
        }
        other => {
            eprintln!("unknown command `{other}`");
            std::process::exit(2);
        }
    }
}

fn broken_worker(how: &str) {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    // SAFETY: a pool starts its workers with the protocol on 3 and 4.
    let (mut requests, mut answers) =
        unsafe { (std::fs::File::from_raw_fd(3), std::fs::File::from_raw_fd(4)) };
    let mut header = [0u8; 19];
    if requests.read_exact(&mut header).is_err() {
        return; // the pool closed the pipe before sending a job
    }
    let id = u64::from_le_bytes(header[3..11].try_into().unwrap());
    let message = |kind: u8, id: u64, len: u64| {
        let mut out = b"PX".to_vec();
        out.push(kind);
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out
    };
    match how {
        "huge" => {
            answers.write_all(&message(3, id, 1 << 62)).unwrap();
            answers.write_all(b"and a few bytes").unwrap();
            return;
        }
        "garbage" => answers.write_all(&[0xff; 4096]).unwrap(),
        "forged" => {
            // An empty table of sections, then the frame.
            let mut forged = message(3, id + 1000, 6);
            forged.extend_from_slice(&[0, 0]);
            forged.extend_from_slice(b"fake");
            answers.write_all(&forged).unwrap();
        }
        // Drops a job nobody revoked.
        "revoked" => answers.write_all(&message(5, id, 0)).unwrap(),
        // A result with two (empty) sections: a result has at most one.
        "two-sections" => {
            let mut answer = message(3, id, 20);
            answer.extend_from_slice(&[2, 0]);
            answer.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0]);
            answer.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0]);
            answers.write_all(&answer).unwrap();
        }
        other => panic!("unknown way to break: {other}"),
    }
    std::thread::sleep(std::time::Duration::from_secs(60));
}

fn stream_consume(args: &[String]) {
    use proxystore::stream::{
        Item, RedisPubSub, RedisQueue, RedisStreams, StreamConsumer, Subscriber,
    };
    use std::time::Duration;
    let (kind, url, topic) = (&args[0], &args[1], &args[2]);
    let claim = Duration::from_millis(args[3].parse().unwrap());
    let hold = Duration::from_millis(args[4].parse().unwrap());
    let grace = Duration::from_millis(300);
    let subscriber: Box<dyn FnOnce() -> StreamConsumer<Vec<f64>>> = match kind.as_str() {
        "pubsub" => {
            let s = RedisPubSub::new(url.as_str())
                .unwrap()
                .subscriber(topic.as_str())
                .unwrap();
            Box::new(move || StreamConsumer::new(s))
        }
        "queue" => {
            let s = RedisQueue::new(url.as_str())
                .unwrap()
                .end_grace(grace)
                .subscriber(topic.as_str())
                .unwrap();
            Box::new(move || StreamConsumer::new(s))
        }
        "streams" => {
            let s = RedisStreams::new(url.as_str())
                .unwrap()
                .claim_idle(claim)
                .end_grace(grace)
                .subscriber(topic.as_str())
                .unwrap();
            let _ = s.topic();
            Box::new(move || StreamConsumer::new(s))
        }
        other => panic!("unknown broker {other}"),
    };
    let consumer = subscriber();
    println!("ready");
    let mut count = 0;
    for item in consumer {
        let item = item.unwrap();
        let step = Item::metadata(&item).get("step").unwrap().as_i64().unwrap();
        assert!(
            item.iter().all(|v| *v == step as f64),
            "frame {step} is whole"
        );
        println!("item {step}");
        std::thread::sleep(hold);
        count += 1;
    }
    println!("end {count}");
}

fn connector(config: &str) -> std::sync::Arc<dyn Connector> {
    from_hex::<ConnectorConfig>(config).build().unwrap()
}

fn key(text: &str) -> Key {
    text.parse().unwrap()
}

/// Waits until `gate` exists, leaves a mark of its run beside it, then ends
/// its worker's process as a crash would (the silent worker's; the same
/// name in the tests).
#[proxystore::proxied(name = "peer.crash_at")]
fn crash_at(gate: std::path::PathBuf) -> u32 {
    while !gate.exists() {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let run = format!("crash-{}", std::process::id());
    std::fs::write(gate.with_file_name(run), b"ran").unwrap();
    std::process::abort();
}

/// Leaves a mark named `name` in `dir`, then doubles `x`.
#[proxystore::proxied(name = "peer.mark_double")]
fn mark_double(dir: std::path::PathBuf, name: String, x: i64) -> i64 {
    std::fs::write(dir.join(name), b"ran").unwrap();
    2 * x
}
