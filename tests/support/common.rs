//! Helpers shared by the integration tests and the peer process.
#![allow(dead_code)]

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from lowercase hex.
pub fn unhex(text: &str) -> Vec<u8> {
    let text = text.trim();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// CBOR then hex.
pub fn to_hex<T: serde::Serialize>(value: &T) -> String {
    let mut buf = Vec::new();
    ciborium::into_writer(value, &mut buf).expect("serializable");
    hex(&buf)
}

/// Hex then CBOR.
pub fn from_hex<T: serde::de::DeserializeOwned>(text: &str) -> T {
    ciborium::from_reader(&unhex(text)[..]).expect("valid cbor")
}

/// A store name no other test in this process uses.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
