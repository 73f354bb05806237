//! Unit tests of the peer connector.

use super::*;
use crate::connectors::LocalConnector;

#[test]
fn records_round_trip_and_foreign_entries_are_refused() {
    let key = Key::new();
    let at = Location {
        addr: "10.1.2.3:4567".parse().unwrap(),
        instance: 0xdead_beef,
    };
    assert_eq!(Location::parse(&key, at.record(99).as_bytes()).unwrap(), at);
    for bad in [
        &b"an object"[..],
        b"proxystore-peer/1 10.1.2.3:4567 zz 1",
        b"proxystore-peer/1 nowhere 00 1",
        b"proxystore-peer/1 10.1.2.3:4567 00 1 extra",
        b"\xff\xfe",
    ] {
        let err = Location::parse(&key, bad).unwrap_err();
        assert!(err.to_string().contains("not a peer location"), "{err}");
    }
}

#[test]
fn addresses_from_the_environment_are_checked() {
    assert_eq!(
        parse_addr("10.0.0.4").unwrap(),
        "10.0.0.4:0".parse().unwrap()
    );
    assert_eq!(
        parse_addr("10.0.0.4:7000").unwrap(),
        "10.0.0.4:7000".parse().unwrap()
    );
    assert!(parse_addr("host-a").is_err());
}

#[test]
fn the_route_to_loopback_is_loopback() {
    assert!(route_ip("127.0.0.1:6379").unwrap().is_loopback());
}

#[test]
fn objects_are_served_from_this_process_and_over_tcp() {
    let index = LocalConnector::new();
    let connector = PeerConnector::builder(index.clone())
        .listen("127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap();
    let key = connector.put(&[b"hello ", b"peer"]).unwrap();
    assert!(connector.exists(&key).unwrap());
    assert_eq!(
        connector.get(&key).unwrap().as_deref(),
        Some(&b"hello peer"[..])
    );
    // Through the listener, as another process reads it.
    let at = connector.locate(&key).unwrap().unwrap();
    let got = connector.ask(&key, &at, wire::Op::Get).unwrap();
    assert_eq!(got, wire::Response::Found(Some(b"hello peer".to_vec())));
    let other = Location {
        instance: at.instance.wrapping_add(1),
        ..at
    };
    let err = connector.ask(&key, &other, wire::Op::Get).unwrap();
    assert_eq!(err, wire::Response::OtherInstance);
    assert_eq!(connector.keys().unwrap(), [key]);
    connector.evict(&key).unwrap();
    assert!(!connector.exists(&key).unwrap());
    assert_eq!(connector.get(&key).unwrap(), None);
    assert!(!index.exists(&key).unwrap(), "the location went too");
    let got = connector.ask(&key, &at, wire::Op::Get).unwrap();
    assert_eq!(got, wire::Response::Missing);
}

#[test]
fn an_unreachable_peer_is_a_lost_object_naming_it() {
    let index = LocalConnector::new();
    let connector = PeerConnector::builder(index.clone())
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    // A port nobody listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let key = Key::new();
    let gone = Location {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        instance: 7,
    };
    index.set(&key, &[gone.record(10).as_bytes()]).unwrap();
    let err = connector.get(&key).unwrap_err();
    assert!(
        matches!(&err, Error::ObjectLost { key: k, host, .. } if *k == key && *host == gone.addr.to_string()),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(matches!(
        connector.exists(&key),
        Err(Error::ObjectLost { .. })
    ));
    // Evicting it removes the entry and succeeds.
    connector.evict(&key).unwrap();
    assert!(!index.exists(&key).unwrap());
    assert_eq!(connector.get(&key).unwrap(), None);
}

#[test]
fn the_configuration_rebuilds_the_connector() {
    let connector = PeerConnector::builder(LocalConnector::new())
        .io_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let config = connector.config();
    assert_eq!(config.kind, "peer");
    let rebuilt = PeerConnector::from_config(&config).unwrap();
    assert_eq!(rebuilt.options.io_timeout_ms, 3000);
    assert!(PeerConnector::builder(LocalConnector::new())
        .connect_timeout(Duration::ZERO)
        .build()
        .is_err());
}

/// A server of its own that answers every request with `answer`.
fn hostile_peer(answer: Vec<u8>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            let mut first = [0u8; 8 + wire::REQUEST_LEN];
            if std::io::Read::read_exact(&mut conn, &mut first).is_ok() {
                let _ = std::io::Write::write_all(&mut conn, &answer);
            }
        }
    });
    addr
}

fn pointing_at(addr: SocketAddr) -> (PeerConnector, Key) {
    let index = LocalConnector::new();
    let connector = PeerConnector::builder(index.clone())
        .io_timeout(Duration::from_secs(5))
        .max_object_size(1 << 20)
        .build()
        .unwrap();
    let key = Key::new();
    let at = Location { addr, instance: 1 };
    index.set(&key, &[at.record(10).as_bytes()]).unwrap();
    (connector, key)
}

#[test]
fn a_peer_announcing_too_much_is_refused_without_allocating() {
    let mut answer = vec![0u8];
    answer.extend_from_slice(&u64::MAX.to_le_bytes());
    let (connector, key) = pointing_at(hostile_peer(answer));
    for err in [
        connector.get(&key).unwrap_err(),
        connector.open_sized(&key).err().unwrap(),
    ] {
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(
            err.to_string().contains("more than this reader's limit"),
            "{err}"
        );
    }
}

#[test]
fn a_peer_that_stops_mid_object_loses_it_and_says_where() {
    let mut answer = vec![0u8];
    answer.extend_from_slice(&100u64.to_le_bytes());
    answer.extend_from_slice(&[1u8; 10]);
    let addr = hostile_peer(answer);
    let (connector, key) = pointing_at(addr);
    let err = connector.get(&key).unwrap_err();
    assert!(
        matches!(&err, Error::ObjectLost { host, .. } if *host == addr.to_string()),
        "{err:?}"
    );
    assert!(err.to_string().contains("10 of 100"), "{err}");
    // Streamed: the reader's error says the same.
    let (mut reader, len) = connector.open_sized(&key).unwrap().unwrap();
    assert_eq!(len, Some(100));
    let mut read = Vec::new();
    let err = reader.read_to_end(&mut read).unwrap_err();
    assert_eq!(read.len(), 10);
    let message = err.to_string();
    assert!(
        message.contains("lost") && message.contains(&addr.to_string()),
        "{message}"
    );
}

#[test]
fn the_server_drops_connections_that_misbehave_and_serves_on() {
    use std::io::Write;
    let connector = PeerConnector::builder(LocalConnector::new())
        .listen("127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap();
    let key = connector.put(&[b"still served"]).unwrap();
    let at = connector.locate(&key).unwrap().unwrap();
    let closed = |mut conn: std::net::TcpStream| {
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut rest = Vec::new();
        // The server closes the connection: the read ends (a server
        // that kept it open would time the read out).
        conn.read_to_end(&mut rest)
            .expect("the server closes the connection");
        rest
    };
    // Not the protocol at all.
    let mut conn = std::net::TcpStream::connect(at.addr).unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(closed(conn).is_empty());
    // The right preface, then an operation that does not exist.
    let mut conn = std::net::TcpStream::connect(at.addr).unwrap();
    conn.write_all(&wire::MAGIC).unwrap();
    conn.write_all(&[9u8; wire::REQUEST_LEN]).unwrap();
    assert!(closed(conn).is_empty());
    // A request cut short, then the connection closed.
    let mut conn = std::net::TcpStream::connect(at.addr).unwrap();
    conn.write_all(&wire::MAGIC).unwrap();
    conn.write_all(&[1u8; 5]).unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed(conn).is_empty());
    // Others are still served.
    let got = connector.ask(&key, &at, wire::Op::Get).unwrap();
    assert_eq!(got, wire::Response::Found(Some(b"still served".to_vec())));
    connector.evict(&key).unwrap();
}
