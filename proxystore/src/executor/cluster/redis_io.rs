//! Connections to the queue's Redis server, and errors that never show
//! its credentials.

use std::time::Duration;

use redis::{Client, Connection, RedisError, Value};

use crate::connectors::redis::{scrub, RedisUrl};
use crate::connectors::Reach;
use crate::error::{Error, Result};

/// How long connecting may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one command (not a blocking read) may take.
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A server: the client and its name without credentials.
#[derive(Clone)]
pub(crate) struct Server {
    client: Client,
    /// `host:port/db`, for errors and logs.
    pub(crate) name: String,
    /// Whether the server is on this host (loopback or a Unix socket).
    pub(crate) local: bool,
    /// Words that must never appear in a message (user name, password).
    secrets: Vec<String>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl Server {
    /// Checks `url` as the Redis connector does.
    pub(crate) fn open(url: &str) -> Result<Server> {
        let url = RedisUrl::parse(url, "cluster queue")?;
        Ok(Server {
            client: url.client,
            name: url.server,
            local: url.reach == Reach::Host,
            secrets: url.secrets,
        })
    }

    /// A new connection whose commands time out after `timeout` (`None`:
    /// never, for blocking reads that wait for work).
    pub(crate) fn connect(&self, timeout: Option<Duration>) -> Result<Connection> {
        let con = self
            .client
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .map_err(|e| self.err("connecting", e))?;
        con.set_read_timeout(timeout)
            .and_then(|()| con.set_write_timeout(Some(COMMAND_TIMEOUT)))
            .map_err(|e| self.err("connecting", e))?;
        Ok(con)
    }

    pub(crate) fn err(&self, operation: &str, e: RedisError) -> Error {
        Error::Redis {
            server: self.name.clone(),
            operation: operation.to_string(),
            message: scrub(&self.secrets, e.to_string()),
        }
    }
}

/// Whether an error means the connection is unusable (to be replaced).
pub(crate) fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error()
}

/// The bytes of a bulk string reply.
pub(crate) fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// The text of a reply.
pub(crate) fn text(value: &Value) -> Option<&str> {
    bytes(value).and_then(|b| std::str::from_utf8(b).ok())
}

/// An integer reply (or a string holding one).
pub(crate) fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(i) => Some(*i),
        other => text(other).and_then(|t| t.parse().ok()),
    }
}

/// The elements of an array reply (`Nil` is empty).
pub(crate) fn array(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => &[],
    }
}

/// One stream entry: its id and its fields.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    pub(crate) fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| &v[..])
    }

    pub(crate) fn text(&self, name: &str) -> Option<&str> {
        self.field(name).and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The time the entry was added, in ms since the epoch (its id's first
    /// part).
    pub(crate) fn added_ms(&self) -> u64 {
        self.id
            .split('-')
            .next()
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(0)
    }
}

/// Entries of a reply `[[id, [field, value, ...]], ...]`; entries that were
/// deleted meanwhile (`[id, nil]`) are left out.
pub(crate) fn entries(value: &Value) -> Vec<Entry> {
    let mut out = Vec::new();
    for item in array(value) {
        let parts = array(item);
        let (Some(id), Some(fields)) = (parts.first().and_then(text), parts.get(1)) else {
            continue;
        };
        let Value::Array(fields) = fields else {
            continue;
        };
        let fields = fields
            .chunks(2)
            .filter_map(|kv| match kv {
                [k, v] => Some((bytes(k)?.to_vec(), bytes(v)?.to_vec())),
                _ => None,
            })
            .collect();
        out.push(Entry {
            id: id.to_string(),
            fields,
        });
    }
    out
}

/// Entries of an `XREADGROUP` reply for one stream (`Nil` on timeout).
pub(crate) fn read_entries(value: &Value) -> Vec<Entry> {
    match value {
        Value::Map(streams) => streams.first().map(|(_, v)| entries(v)).unwrap_or_default(),
        other => array(other)
            .first()
            .map(|stream| array(stream).get(1).map(entries).unwrap_or_default())
            .unwrap_or_default(),
    }
}

/// This host's name, for consumer names.
pub(crate) fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "host".into();
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..len])
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
