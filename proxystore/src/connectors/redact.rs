//! Hiding credentials in URLs before they are shown.
//!
//! Redis URLs carry their credentials in two places, depending on the form
//! (redis-rs's `connection.rs` is the reference for what a client reads):
//!
//! - the user information of the authority, `redis://user:password@host`
//!   (also `rediss://`, `valkey://`, `valkeys://`);
//! - query parameters of socket URLs, `redis+unix:///path?user=..&pass=..`
//!   (also `valkey+unix://`, `unix://` and the authority-less
//!   `unix:/path?pass=..`).
//!
//! [`redact_url`] hides both in any text, whatever its scheme, so that every
//! `Debug` output, error and log line goes through one function. It errs on
//! the side of hiding: `password` and `username` parameters (other clients'
//! spellings), percent-encoded parameter names and malformed authorities
//! (a password with an unescaped `/`, `?` or `#`) are hidden too.

/// What replaces a hidden part.
const HIDDEN: &str = "<hidden>";

/// Query parameters that carry credentials: redis-rs reads `user` and
/// `pass`; the long forms are what other clients (redis-py) read, so a URL
/// written for them may carry a password there too.
const SECRET_PARAMETERS: [&str; 4] = ["user", "pass", "username", "password"];

/// `text` with the credentials of every URL form hidden:
/// `scheme://user:password@host` as `scheme://<hidden>@host`, and the value
/// of a `user`, `pass`, `username` or `password` query parameter as
/// `<hidden>`. Text that is not a URL comes back unchanged (but for the
/// tabs and line breaks a URL parser would skip).
pub(crate) fn redact_url(text: &str) -> String {
    // URL parsers drop tabs and line breaks anywhere in a URL, so
    // `redis:/\t/u:p@h` connects as `redis://u:p@h`: remove them first so
    // that what is matched here is what a client would read.
    let text: String = text
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    // User information first: a password may itself hold `&pass=..@`,
    // which read as a parameter first would swallow the `@` and leave the
    // user information whole.
    let text = redact_user_info(&text);
    redact_parameters(&text)
}

/// Hides the values of credential query parameters, wherever a `?`, `&` or
/// `;` starts one.
fn redact_parameters(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(['?', '&', ';']) {
        out.push_str(&rest[..=start]);
        rest = &rest[start + 1..];
        let end = rest.find(['&', ';', '#']).unwrap_or(rest.len());
        let Some((name, _)) = rest[..end].split_once('=') else {
            continue;
        };
        if is_secret_parameter(name) {
            out.push_str(name);
            out.push('=');
            out.push_str(HIDDEN);
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

fn is_secret_parameter(name: &str) -> bool {
    let name = percent_decoded(name).replace('+', " ");
    let name = name.trim();
    SECRET_PARAMETERS
        .iter()
        .any(|secret| name.eq_ignore_ascii_case(secret))
}

/// `text` with `%XX` escapes decoded (invalid ones kept as they are).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Hides everything between `://` and the last `@` after it. A client
/// reads the user information up to the last `@` before the first `/`,
/// `?` or `#`; going to the last `@` of the text also hides a password
/// with such a character in it (which the client refuses, but the text
/// still shows), at the cost of hiding a socket path with an `@` in it.
fn redact_user_info(text: &str) -> String {
    let Some(authority) = text.find("://").map(|i| i + 3) else {
        return text.to_string();
    };
    // No authority (`redis+unix:///path?..`): a socket URL's credentials
    // are parameters, and an `@` in them is not the end of user information.
    if text[authority..].starts_with('/') {
        return text.to_string();
    }
    match text[authority..].rfind('@') {
        Some(at) => format!("{}{HIDDEN}{}", &text[..authority], &text[authority + at..]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every form of Redis URL redis-rs accepts, with the secret it carries.
    const FORMS: &[(&str, &str)] = &[
        (
            "redis://:s3cret@host:6379/2",
            "redis://<hidden>@host:6379/2",
        ),
        ("redis://alice:s3cret@host", "redis://<hidden>@host"),
        ("redis://alice:s3cret&pass=x@host", "redis://<hidden>@host"),
        (
            "redis://alice:s3;cret?password=x@host/0",
            "redis://<hidden>@host/0",
        ),
        ("redis://s3cret@host", "redis://<hidden>@host"),
        (
            "REDIS://alice:s3cret@[::1]:7000/1",
            "REDIS://<hidden>@[::1]:7000/1",
        ),
        (
            "rediss://alice:s3cret@host:6380/0#insecure",
            "rediss://<hidden>@host:6380/0#insecure",
        ),
        ("valkey://alice:s3cret@host", "valkey://<hidden>@host"),
        ("valkeys://alice:s3cret@host", "valkeys://<hidden>@host"),
        (
            "redis://alice:s3%40cret@host/0?protocol=resp3",
            "redis://<hidden>@host/0?protocol=resp3",
        ),
        (
            "redis+unix:///run/redis.sock?db=1&pass=s3cret",
            "redis+unix:///run/redis.sock?db=1&pass=<hidden>",
        ),
        (
            "redis+unix:///run/redis.sock?user=alice&pass=s3cret&db=2",
            "redis+unix:///run/redis.sock?user=<hidden>&pass=<hidden>&db=2",
        ),
        (
            "valkey+unix:///run/valkey.sock?pass=s3cret",
            "valkey+unix:///run/valkey.sock?pass=<hidden>",
        ),
        (
            "unix:///run/redis.sock?pass=s3cret",
            "unix:///run/redis.sock?pass=<hidden>",
        ),
        (
            "unix:/run/redis.sock?pass=s3cret",
            "unix:/run/redis.sock?pass=<hidden>",
        ),
        (
            "redis+unix:/run/redis.sock?pass=s3cret#x",
            "redis+unix:/run/redis.sock?pass=<hidden>#x",
        ),
        // Other clients' spellings, and what a URL parser decodes.
        (
            "unix:///run/redis.sock?password=s3cret",
            "unix:///run/redis.sock?password=<hidden>",
        ),
        (
            "unix:///run/redis.sock?username=alice&db=0",
            "unix:///run/redis.sock?username=<hidden>&db=0",
        ),
        (
            "unix:///run/redis.sock?PASS=s3cret",
            "unix:///run/redis.sock?PASS=<hidden>",
        ),
        (
            "unix:///run/redis.sock?pa%73s=s3cret",
            "unix:///run/redis.sock?pa%73s=<hidden>",
        ),
        (
            "unix:///run/redis.sock?db=0;pass=s3cret",
            "unix:///run/redis.sock?db=0;pass=<hidden>",
        ),
        ("redis:/\t/alice:s3cret@host", "redis://<hidden>@host"),
        // Malformed: the password is still hidden.
        ("redis://:s3/cret@host", "redis://<hidden>@host"),
        ("redis://:s3?cret@host", "redis://<hidden>@host"),
        ("redis://:s3#cret@host", "redis://<hidden>@host"),
        (
            "redis+unix:///sock?user=al@ice&pass=s3cret",
            "redis+unix:///sock?user=<hidden>&pass=<hidden>",
        ),
    ];

    #[test]
    fn every_form_is_redacted() {
        for (url, shown) in FORMS {
            let redacted = redact_url(url);
            assert_eq!(&redacted, shown, "{url}");
            assert!(!redacted.contains("s3"), "{url} shows {redacted}");
            assert!(!redacted.contains("alice"), "{url} shows {redacted}");
        }
    }

    #[test]
    fn other_text_is_unchanged() {
        for text in [
            "redis://host:6379/2",
            "redis+unix:///run/redis.sock?db=1&protocol=3",
            "/var/lib/proxystore/objects",
            "experiment-42",
            "a?b=c&passport=1",
            "",
        ] {
            assert_eq!(redact_url(text), text);
        }
    }
}
