//! Requests written in Redis's wire format (RESP) and replies read back.

use redis::Value;

/// A `SCAN MATCH` pattern of the canonical text form of a key.
pub(super) const UUID_PATTERN: &str = "????????-????-????-????-????????????";

/// Escapes the characters that `SCAN MATCH` treats as a pattern.
pub(super) fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Appends one RESP bulk string made of `parts` to `out`.
pub(crate) fn push_bulk(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.push(b'$');
    out.extend_from_slice(len.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for part in parts {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b"\r\n");
}

/// A packed command of `args`, each the concatenation of its parts: the
/// parts are copied once, straight into the request buffer.
pub(crate) fn pack(args: &[&[&[u8]]]) -> Vec<u8> {
    let body: usize = args
        .iter()
        .map(|parts| parts.iter().map(|p| p.len()).sum::<usize>() + 24)
        .sum();
    let mut out = Vec::with_capacity(body + 16);
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for parts in args {
        push_bulk(&mut out, parts);
    }
    out
}

/// A packed command of single-part `args`.
pub(super) fn pack_args(args: &[&[u8]]) -> Vec<u8> {
    let parts: Vec<[&[u8]; 1]> = args.iter().map(|a| [*a]).collect();
    let args: Vec<&[&[u8]]> = parts.iter().map(|p| &p[..]).collect();
    pack(&args)
}

/// The head of a packed command of `args`, then an argument made of
/// `parts`, then `after` more arguments (`*N`, `args`, and the `$len` of
/// the parts): the request is this head, the parts as they are, `\r\n`
/// and the arguments after, written without copying the parts.
pub(super) fn head_before_parts(args: &[&[u8]], parts: &[&[u8]], after: usize) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(64 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.push(b'*');
    out.extend_from_slice((args.len() + 1 + after).to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        push_bulk(&mut out, &[arg]);
    }
    out.push(b'$');
    out.extend_from_slice(len.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

pub(super) fn unexpected(command: &str, value: &Value) -> redis::RedisError {
    let what = match value {
        Value::Nil => "nil".to_string(),
        Value::Int(i) => format!("integer {i}"),
        Value::Array(items) => format!("an array of {}", items.len()),
        Value::Okay => "OK".to_string(),
        Value::SimpleString(s) => format!("`{s}`"),
        _ => "another kind of value".to_string(),
    };
    redis::RedisError::from((
        redis::ErrorKind::Parse,
        "unexpected reply",
        format!("{command} answered {what}"),
    ))
}

pub(super) fn expect_bulk(command: &str, value: Value) -> redis::RedisResult<Option<Vec<u8>>> {
    match value {
        Value::Nil => Ok(None),
        Value::BulkString(bytes) => Ok(Some(bytes)),
        Value::ServerError(e) => Err(e.into()),
        other => Err(unexpected(command, &other)),
    }
}

pub(super) fn expect_int(command: &str, value: Value) -> redis::RedisResult<i64> {
    match value {
        Value::Int(i) => Ok(i),
        Value::ServerError(e) => Err(e.into()),
        other => Err(unexpected(command, &other)),
    }
}

pub(super) fn expect_ok(command: &str, value: Value) -> redis::RedisResult<()> {
    match value {
        Value::Okay => Ok(()),
        Value::SimpleString(s) if s == "OK" => Ok(()),
        Value::ServerError(e) => Err(e.into()),
        other => Err(unexpected(command, &other)),
    }
}

pub(super) fn scan_reply(reply: Value) -> redis::RedisResult<(u64, Vec<Vec<u8>>)> {
    let reply = reply.extract_error()?;
    let Value::Array(mut items) = reply else {
        return Err(unexpected("SCAN", &reply));
    };
    if items.len() != 2 {
        return Err(unexpected("SCAN", &Value::Array(items)));
    }
    let keys = items.pop().unwrap_or(Value::Nil);
    let cursor = items.pop().unwrap_or(Value::Nil);
    let cursor = match &cursor {
        Value::BulkString(b) => std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()),
        Value::SimpleString(s) => s.parse().ok(),
        Value::Int(i) => u64::try_from(*i).ok(),
        _ => None,
    }
    .ok_or_else(|| unexpected("SCAN", &cursor))?;
    let Value::Array(keys) = keys else {
        return Err(unexpected("SCAN", &keys));
    };
    let keys = keys
        .into_iter()
        .filter_map(|k| match k {
            Value::BulkString(b) => Some(b),
            _ => None,
        })
        .collect();
    Ok((cursor, keys))
}
