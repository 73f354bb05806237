//! Redis URLs: what a connector needs of them, and credentials kept out of
//! every message.

use std::net::IpAddr;

use redis::{ConnectionAddr, IntoConnectionInfo};

use crate::connectors::Reach;
use crate::error::{Error, Result};

/// `text` with the credentials of any URL in it hidden
/// ([`redact_url`](crate::connectors::redact_url)), and every secret replaced.
pub(crate) fn scrub(secrets: &[String], text: String) -> String {
    let mut text = crate::connectors::redact_url(&text);
    for secret in secrets {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), "<hidden>");
        }
    }
    text
}

/// A Redis URL, checked: the client, the server as shown (`host:port/db`,
/// never with credentials), where it can be reached from, and the words
/// that must never appear in a message (user name, password). Shared by the
/// connector and the multi-host executor.
pub(crate) struct RedisUrl {
    pub(crate) client: redis::Client,
    pub(crate) server: String,
    pub(crate) reach: Reach,
    pub(crate) secrets: Vec<String>,
}

impl RedisUrl {
    /// Checks `url`; a bad one is [`Error::InvalidConfig`] of `kind`.
    pub(crate) fn parse(url: &str, kind: &str) -> Result<RedisUrl> {
        let invalid = |reason: String| Error::InvalidConfig {
            kind: kind.into(),
            reason,
        };
        // As the client reads it: `unix:/path` has no `//`.
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        let tls = matches!(scheme.as_deref(), Some("rediss" | "valkeys"));
        if tls && !cfg!(feature = "redis-tls") {
            return Err(invalid(
                "rediss:// (TLS) URLs need proxystore's `redis-tls` feature; enable it in \
                     Cargo.toml (features = [\"redis-tls\"]) or use a redis:// URL"
                    .into(),
            ));
        }
        let expected = "expected redis://[user[:password]@]host[:port][/db], \
                            rediss://... (TLS, feature `redis-tls`) or redis+unix:///path?db=N";
        if !matches!(
            scheme.as_deref(),
            Some("redis" | "rediss" | "valkey" | "valkeys" | "redis+unix" | "valkey+unix" | "unix")
        ) {
            return Err(invalid(format!("not a Redis URL: {expected}")));
        }
        // The credentials as written (percent-encoded), then as decoded.
        let mut secrets: Vec<String> = Vec::new();
        if let Some((userinfo, _)) = url
            .split_once("://")
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|authority| authority.rsplit_once('@'))
        {
            secrets.extend(
                userinfo
                    .split(':')
                    .filter(|part| !part.is_empty())
                    .map(str::to_string),
            );
        }
        let info = url.into_connection_info().map_err(|e| {
            // The client's message names the part that is wrong, not the
            // URL; scrubbed all the same.
            let message = scrub(&secrets, e.to_string());
            invalid(format!(
                "the Redis URL is not valid ({message}): {expected}"
            ))
        })?;
        let settings = info.redis_settings();
        for secret in [settings.password(), settings.username()]
            .into_iter()
            .flatten()
        {
            if !secret.is_empty() && !secrets.iter().any(|s| s == secret) {
                secrets.push(secret.to_string());
            }
        }
        // Longest first, so that no part of a longer secret is left.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let db = settings.db();
        let (server, reach) = match info.addr() {
            ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. }
                if host.is_empty() =>
            {
                return Err(invalid(format!("the Redis URL has no host: {expected}")));
            }
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                let shown = if host.contains(':') {
                    format!("[{host}]:{port}/{db}")
                } else {
                    format!("{host}:{port}/{db}")
                };
                let reach = if is_loopback(host) {
                    Reach::Host
                } else {
                    Reach::Network
                };
                (shown, reach)
            }
            ConnectionAddr::Unix(path) => (format!("unix:{}/{db}", path.display()), Reach::Host),
            // Kinds of addresses added to the client later.
            #[allow(unreachable_patterns)]
            _ => (format!("?/{db}"), Reach::Network),
        };
        let client = redis::Client::open(info).map_err(|e| {
            let message = scrub(&secrets, e.to_string());
            invalid(format!(
                "the Redis URL is not valid ({message}): {expected}"
            ))
        })?;
        Ok(RedisUrl {
            client,
            server,
            reach,
            secrets,
        })
    }
}

/// Whether a host name or address is this host's loopback.
pub(super) fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
