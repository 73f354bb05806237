//! Object keys.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::error::{Error, Result};

/// The key of an object in a store: a random UUID.
///
/// A key is the only thing a connector is ever asked to address, and it can
/// only be built from a UUID, so a key decoded from outside (a proxy sent by
/// another process, a task frame) can never name a path outside a
/// [`FileConnector`](crate::connectors::FileConnector)'s directory.
///
/// ```
/// use proxystore::Key;
///
/// let key = Key::new();
/// let parsed: Key = key.to_string().parse()?;
/// assert_eq!(key, parsed);
/// assert!("../../etc/passwd".parse::<Key>().is_err());
/// # Ok::<(), proxystore::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(Uuid);

impl Key {
    /// A new random key.
    pub fn new() -> Self {
        Key(Uuid::new_v4())
    }

    /// Parses and validates a key received from outside.
    pub fn parse(input: &str) -> Result<Self> {
        // Only the canonical form (hyphenated, lowercase) is accepted: one
        // key, one name.
        if input.len() != 36 {
            return Err(invalid(input, "expected 36 characters"));
        }
        let key = Uuid::try_parse(input)
            .map(Key)
            .map_err(|e| invalid(input, &e.to_string()))?;
        if *key.as_str() != *input {
            return Err(invalid(input, "expected lowercase hexadecimal digits"));
        }
        Ok(key)
    }

    /// The key of these 16 bytes (any 16 bytes are a valid key).
    pub(crate) fn from_bytes(bytes: [u8; 16]) -> Self {
        Key(Uuid::from_bytes(bytes))
    }

    /// The key as a UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// The canonical text form (lowercase, hyphenated), also used as the
    /// file name by [`FileConnector`](crate::connectors::FileConnector).
    pub fn as_str(&self) -> KeyStr {
        let mut buf = [0u8; 36];
        self.0.hyphenated().encode_lower(&mut buf);
        KeyStr(buf)
    }
}

impl Default for Key {
    fn default() -> Self {
        Key::new()
    }
}

fn invalid(input: &str, reason: &str) -> Error {
    let shown: String = input.chars().take(64).collect();
    Error::InvalidKey {
        input: shown,
        reason: reason.to_string(),
    }
}

/// The text form of a [`Key`], without allocating.
#[derive(Clone, Copy)]
pub struct KeyStr([u8; 36]);

impl std::ops::Deref for KeyStr {
    type Target = str;
    fn deref(&self) -> &str {
        // Filled by `Uuid::encode_lower`: ASCII only.
        std::str::from_utf8(&self.0).expect("uuid text is ascii")
    }
}

impl AsRef<std::path::Path> for KeyStr {
    fn as_ref(&self) -> &std::path::Path {
        std::path::Path::new(&**self)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.0.hyphenated())
    }
}

impl FromStr for Key {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Key::parse(s)
    }
}

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.as_str())
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key (a hyphenated UUID)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key, E> {
                Key::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text_and_cbor() {
        let key = Key::new();
        assert_eq!(Key::parse(&key.to_string()).unwrap(), key);
        let mut buf = Vec::new();
        ciborium::into_writer(&key, &mut buf).unwrap();
        let back: Key = ciborium::from_reader(&buf[..]).unwrap();
        assert_eq!(back, key);
    }

    #[test]
    fn rejects_anything_that_is_not_a_canonical_uuid() {
        for bad in [
            "",
            "../../../../etc/passwd",
            "/etc/passwd",
            "0123456789abcdef0123456789abcdef",
            "{01234567-89ab-cdef-0123-456789abcdef}",
            "01234567-89ab-cdef-0123-456789abcde/",
            "..\\..\\..\\windows\\system32\\a.dll.",
            // Another spelling of a valid key: one key, one name.
            "01234567-89AB-cdef-0123-456789abcdef",
        ] {
            let err = Key::parse(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidKey { .. }), "{bad}: {err}");
        }
        let mut buf = Vec::new();
        ciborium::into_writer(&"../escape", &mut buf).unwrap();
        assert!(ciborium::from_reader::<Key, _>(&buf[..]).is_err());
    }
}
