//! Where a peer connector listens: addresses given, and the route to the
//! index's server.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};

use super::*;

/// `ip` or `ip:port`.
pub(super) fn parse_addr(value: &str) -> Result<SocketAddr> {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    value
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 0))
        .map_err(|_| {
            invalid(format!(
                "{PEER_ADDR_ENV}=`{value}` is not an IP address or address:port"
            ))
        })
}

/// The address of the interface this host uses to reach `target`
/// (`host:port`); no packet is sent.
pub(super) fn route_ip(target: &str) -> Result<IpAddr> {
    let io = |source: std::io::Error| Error::Io {
        connector: "peer".into(),
        operation: format!("finding the interface that reaches {target}"),
        source,
    };
    let addr = target
        .to_socket_addrs()
        .map_err(io)?
        .next()
        .ok_or_else(|| io(std::io::Error::other("the name has no address")))?;
    let any: SocketAddr = if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(any).map_err(io)?;
    socket.connect(addr).map_err(io)?;
    Ok(socket.local_addr().map_err(io)?.ip())
}

/// `host:port` of the Redis server an index configuration names, if it
/// names one over TCP.
pub(super) fn redis_server(config: &ConnectorConfig) -> Option<String> {
    #[cfg(feature = "redis")]
    if config.kind == "redis" {
        #[derive(Deserialize)]
        struct Url {
            url: String,
        }
        let url: Url = config.options().ok()?;
        let parsed =
            crate::connectors::redis::url::RedisUrl::parse(&url.url, PeerConnector::KIND).ok()?;
        let server = parsed.server.rsplit_once('/')?.0;
        return (!server.starts_with("unix:")).then(|| server.to_string());
    }
    let _ = config;
    None
}
