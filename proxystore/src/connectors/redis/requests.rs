//! The connector's requests that take more than one line: `SET` with its
//! value written in place, `GET` streamed, eviction with a read ahead, and
//! the namespace's scan.

use std::io::Cursor;

use redis::Value;

use super::pool::Conn;
use super::raw::BulkReader;
use super::resp::*;
use super::{RedisConnector, CLOSE_BATCH};
use crate::connectors::ObjectReader;
use crate::error::Result;
use crate::key::Key;

impl RedisConnector {
    /// `SET`, with `PX` when `expiry` is given. The parts are written as
    /// they are (one `writev`), never copied into a request buffer.
    pub(super) fn set_with(
        &self,
        key: &Key,
        parts: &[&[u8]],
        expiry: Option<std::time::Duration>,
    ) -> Result<()> {
        let size: u64 = parts.iter().map(|p| p.len() as u64).sum();
        self.check_size(size)?;
        tracing::debug!(%key, size, server = %self.inner.server, "redis: set");
        let name = self.redis_key(key);
        // `SET name value [PX ms]`: the head, the value's parts, the tail.
        let options = if expiry.is_some() { 2 } else { 0 };
        let head = head_before_parts(&[b"SET", name.as_bytes()], parts, options);
        let tail = match expiry {
            None => b"\r\n".to_vec(),
            Some(after) => {
                let ms = after.as_millis().clamp(1, i64::MAX as u128).to_string();
                let mut tail = b"\r\n".to_vec();
                tail.extend_from_slice(b"$2\r\nPX\r\n");
                push_bulk(&mut tail, &[ms.as_bytes()]);
                tail
            }
        };
        let mut pieces: Vec<&[u8]> = Vec::with_capacity(parts.len() + 2);
        pieces.push(&head);
        pieces.extend_from_slice(parts);
        pieces.push(&tail);
        self.run("SET", |c| expect_ok("SET", c.request(&pieces)?))
    }

    /// Calls `each` with every batch of the namespace's object keys (Redis
    /// names), found with `SCAN MATCH` (never `KEYS`, which blocks the
    /// server): only names shaped like the namespace's object keys, so
    /// nothing else under the prefix (a queue of the multi-host executor,
    /// another program's keys) is seen. A key may come twice, as `SCAN`
    /// allows.
    pub(super) fn scan_objects(
        &self,
        operation: &str,
        mut each: impl FnMut(Vec<Vec<u8>>) -> Result<()>,
    ) -> Result<()> {
        let pattern = format!(
            "proxystore:{}:{UUID_PATTERN}",
            glob_escape(&self.inner.namespace)
        );
        let operation = format!("{operation} (SCAN)");
        let mut cursor: u64 = 0;
        loop {
            let (next, keys) = self.run(&operation, |c| {
                let reply = c.command(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(CLOSE_BATCH),
                )?;
                scan_reply(reply)
            })?;
            each(keys)?;
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Removes every key of the namespace (SCAN + UNLINK).
    pub(super) fn clear_namespace(&self) -> Result<u64> {
        let mut removed = 0u64;
        self.scan_objects("close", |keys| {
            for batch in keys.chunks(CLOSE_BATCH) {
                let n = self.run("close (UNLINK)", |c| {
                    expect_int("UNLINK", c.command(redis::cmd("UNLINK").arg(batch))?)
                })?;
                removed += u64::try_from(n).unwrap_or(0);
            }
            Ok(())
        })?;
        Ok(removed)
    }

    /// `GET`, its value streamed from the connection (see `open_sized`).
    pub(super) fn open_streaming(&self, key: &Key) -> Result<Option<(ObjectReader, Option<u64>)>> {
        let name = self.redis_key(key);
        let request = pack_args(&[b"GET", name.as_bytes()]);
        let found = self.run_owned("GET", |connection| match connection {
            Conn::Raw(mut raw) => {
                let head = raw
                    .send(&[&request])
                    .map_err(redis::RedisError::from)
                    .and_then(|()| raw.bulk_head("GET"));
                match head {
                    Ok(None) => (Some(Conn::Raw(raw)), Ok(None)),
                    Ok(Some(len)) => {
                        let reader = BulkReader::new(raw, len, self.inner.pool.clone());
                        (None, Ok(Some((Box::new(reader) as ObjectReader, len))))
                    }
                    Err(e) => (None, Err(e)),
                }
            }
            mut other => match other
                .request(&[&request])
                .and_then(|v| expect_bulk("GET", v))
            {
                Ok(found) => {
                    let found = found.map(|bytes| {
                        let len = bytes.len() as u64;
                        (Box::new(Cursor::new(bytes)) as ObjectReader, len)
                    });
                    (Some(other), Ok(found))
                }
                Err(e) => (None, Err(e)),
            },
        })?;
        tracing::debug!(%key, size = found.as_ref().map(|f| f.1), "redis: open");
        Ok(found.map(|(reader, len)| (reader, Some(len))))
    }

    /// `UNLINK` of `keys`, `STRLEN` and `GETRANGE` of `peek`, in one round
    /// trip (see `evict_and_peek`).
    pub(super) fn unlink_and_peek(
        &self,
        keys: &[Key],
        peek: Option<(&Key, usize)>,
    ) -> Result<Option<Vec<u8>>> {
        let mut packed: Vec<Vec<u8>> = Vec::with_capacity(3);
        if !keys.is_empty() {
            let names: Vec<String> = keys.iter().map(|k| self.redis_key(k)).collect();
            let mut args: Vec<&[u8]> = vec![b"UNLINK"];
            args.extend(names.iter().map(|n| n.as_bytes()));
            packed.push(pack_args(&args));
        }
        let peek_name = peek.map(|(key, limit)| (self.redis_key(key), limit));
        if let Some((name, limit)) = &peek_name {
            let last = limit.saturating_sub(1).to_string();
            packed.push(pack_args(&[b"STRLEN", name.as_bytes()]));
            packed.push(pack_args(&[
                b"GETRANGE",
                name.as_bytes(),
                b"0",
                last.as_bytes(),
            ]));
        }
        if packed.is_empty() {
            return Ok(None);
        }
        let pieces: Vec<&[u8]> = packed.iter().map(Vec::as_slice).collect();
        let found = self.run("UNLINK", |c| {
            let mut replies = c.requests(&pieces, pieces.len())?.into_iter();
            if !keys.is_empty() {
                expect_int("UNLINK", replies.next().unwrap_or(Value::Nil))?;
            }
            let Some((_, limit)) = &peek_name else {
                return Ok(None);
            };
            let len = expect_int("STRLEN", replies.next().unwrap_or(Value::Nil))?;
            let bytes = expect_bulk("GETRANGE", replies.next().unwrap_or(Value::Nil))?;
            // An empty string is no object; a larger one is read in full
            // when it is resolved.
            Ok(bytes.filter(|b| len > 0 && b.len() as i64 == len && b.len() <= *limit))
        })?;
        tracing::debug!(
            evicted = keys.len(),
            read_ahead = found.as_ref().map(Vec::len),
            "redis: evict and peek"
        );
        Ok(found)
    }
}
