//! Not public API: the decoders' entry points as the fuzzers in `fuzz/` and
//! the decoder tests call them.
//!
//! Each function takes arbitrary bytes, feeds them to every decoder of one
//! kind and checks what must hold whatever the input: no panic, no
//! allocation sized by the input's claims, only typed errors, and values
//! that decode encode again. Each returns how many decoders accepted the
//! input, so tests can tell that mutated inputs reach past the first check.
//!
//! Nothing here touches the file system or the network: stores are built
//! only over the in-memory connector.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeOptions};
use crate::connectors::{Connector, ConnectorConfig, LocalConnector};
use crate::error::Error;
use crate::key::Key;
use crate::proxy::{Factory, Proxy};
use crate::store::{Store, StoreConfig};
use crate::task::{run_job_bytes, ExecContext, Job};

#[cfg(feature = "python")]
pub use crate::python::fuzz::{python_npy, python_pickle};

/// A user type with the shapes serde derives: structs, enums, options,
/// nested collections.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum Shape {
    /// A unit variant.
    Empty,
    /// A newtype variant.
    Text(String),
    /// A tuple variant.
    Pair(i16, Option<Box<Shape>>),
    /// A struct variant.
    Record {
        /// A raw-memory type inside CBOR.
        values: Vec<f32>,
        /// A map.
        tags: HashMap<String, u64>,
    },
}

/// A type that nests through an option and a newtype only, without a CBOR
/// level: decoding must still stop.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Chain(pub Option<Box<Chain>>);

/// Decodes `bytes` as a `T` every way there is; returns how many accepted.
fn decode_as<T: Serialize + DeserializeOwned + Debug + 'static>(bytes: &[u8]) -> usize {
    let relaxed = DecodeOptions::new().check_type(false);
    let mut accepted = 0;
    for decoded in [
        codec::decode_slice::<T>(bytes),
        codec::decode_slice_with::<T>(bytes, relaxed),
        codec::decode_with::<T>(&mut &bytes[..], relaxed),
    ]
    .into_iter()
    .flatten()
    {
        accepted += 1;
        reencodes(&decoded);
    }
    accepted
}

/// A decoded value encodes again, and that encoding is stable.
fn reencodes<T: Serialize + DeserializeOwned + Debug + 'static>(value: &T) {
    let first = codec::encode(value)
        .unwrap_or_else(|e| panic!("a decoded {value:?} does not encode: {e}"))
        .to_vec();
    let again: T = codec::decode_slice(&first)
        .unwrap_or_else(|e| panic!("the encoding of a decoded {value:?} does not decode: {e:?}"));
    let second = codec::encode(&again).expect("encodes").to_vec();
    assert_eq!(first, second, "re-encoding {value:?} is not stable");
}

/// Stored objects: [`codec`] decoding as the fast-path types and as CBOR
/// types.
pub fn codec(bytes: &[u8]) -> usize {
    decode_as::<Vec<u8>>(bytes)
        + decode_as::<Vec<f32>>(bytes)
        + decode_as::<Vec<f64>>(bytes)
        + decode_as::<Vec<i32>>(bytes)
        + decode_as::<Vec<i64>>(bytes)
        + decode_as::<Vec<u32>>(bytes)
        + decode_as::<Vec<u64>>(bytes)
        + decode_as::<String>(bytes)
        + decode_as::<u64>(bytes)
        + decode_as::<Option<u8>>(bytes)
        + decode_as::<(String, Vec<u16>)>(bytes)
        + decode_as::<Vec<Shape>>(bytes)
        + decode_as::<Chain>(bytes)
        + decode_as::<ciborium::Value>(bytes)
}

/// Object keys, from text and from CBOR.
pub fn key(bytes: &[u8]) -> usize {
    let mut accepted = 0;
    if let Ok(text) = std::str::from_utf8(bytes) {
        match Key::parse(text) {
            Ok(key) => {
                assert_eq!(key.to_string(), text, "a key has one text form");
                accepted += 1;
            }
            Err(e) => assert!(matches!(e, Error::InvalidKey { .. }), "{e:?}"),
        }
    }
    if let Ok(key) = ciborium::from_reader::<Key, _>(bytes) {
        assert_eq!(Key::parse(&key.to_string()).ok(), Some(key));
        accepted += 1;
    }
    accepted
}

/// An in-memory store holding a few objects, for decoded configurations to
/// be pointed at.
fn seeded() -> &'static (LocalConnector, Vec<Key>) {
    static SEEDED: OnceLock<(LocalConnector, Vec<Key>)> = OnceLock::new();
    SEEDED.get_or_init(|| {
        let connector = LocalConnector::new();
        let store = Store::builder("fuzz-seeded", connector.clone())
            .register(false)
            .build()
            .expect("an in-memory store");
        let keys = vec![
            store.put(&"text".to_string()).expect("stored"),
            store.put(&vec![1.5f64; 8]).expect("stored"),
            store.put(&Shape::Text("shape".into())).expect("stored"),
        ];
        (connector, keys)
    })
}

/// Rebuilds the store a configuration from outside describes, over the
/// seeded in-memory connector (never a directory or a server named by the
/// input), and reads from it.
fn use_store(mut config: StoreConfig, key: Key) -> usize {
    let (connector, keys) = seeded();
    config.connector = connector.config();
    let Ok(store) = Store::from_config(config) else {
        return 0;
    };
    let mut accepted = 0;
    for key in keys.iter().chain([&key]) {
        accepted += usize::from(matches!(store.get::<String>(key), Ok(Some(_))));
        accepted += usize::from(matches!(store.load::<Vec<f64>>(key), Ok(Some(_))));
        accepted += usize::from(matches!(store.get::<Shape>(key), Ok(Some(_))));
    }
    accepted
}

/// Proxy references and store configurations, as they arrive from other
/// processes: decoded, then their stores rebuilt and read.
pub fn factory(bytes: &[u8]) -> usize {
    let mut accepted = 0;
    if let Ok(factory) = ciborium::from_reader::<Factory, _>(bytes) {
        accepted += 1 + use_store(factory.store_config().clone(), factory.key());
    }
    if let Ok(proxy) = ciborium::from_reader::<Proxy<Shape>, _>(bytes) {
        // Not resolved: that would build the store the input names.
        assert!(!Proxy::is_resolved(&proxy));
        accepted += 1;
    }
    if let Ok(config) = ciborium::from_reader::<StoreConfig, _>(bytes) {
        accepted += 1 + use_store(config, Key::new());
    }
    if let Ok(config) = ciborium::from_reader::<ConnectorConfig, _>(bytes) {
        // Only the in-memory kind is built: others would touch the system.
        if config.kind == "local" {
            let _ = config.build();
        }
        accepted += 1;
    }
    accepted
}

/// Whether every store a job names is an in-memory one, so that running it
/// cannot touch the file system. A part that does not decode is fine: the
/// job fails on it before using any store.
fn only_in_memory_stores(mut bytes: &[u8]) -> bool {
    let mut frames = Vec::new();
    while let Some((tag, body)) = next_frame(&mut bytes) {
        frames.push((tag, body));
    }
    let local = |config: &ConnectorConfig| config.kind == "local";
    if let Some((_, context)) = frames.get(1) {
        if let Ok(ctx) = ciborium::from_reader::<ExecContext, _>(*context) {
            if !local(&ctx.store.connector) {
                return false;
            }
        }
    }
    let Some(&(_, mut payload)) = frames.get(3) else {
        return true;
    };
    while let Some((tag, body)) = next_frame(&mut payload) {
        if tag != 0 {
            if let Ok(factory) = Factory::from_frame(body) {
                if !local(&factory.store_config().connector) {
                    return false;
                }
            }
        }
    }
    true
}

/// One frame of the task wire format: a tag, a little-endian `u64` length
/// and the bytes.
fn next_frame<'a>(bytes: &mut &'a [u8]) -> Option<(u8, &'a [u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let len = usize::try_from(u64::from_le_bytes(rest.get(..8)?.try_into().ok()?)).ok()?;
    let body = rest.get(8..8usize.checked_add(len)?)?;
    *bytes = &rest[8 + len..];
    Some((tag, body))
}

/// Jobs as a worker receives them: parsed, written again, and run when
/// they name only in-memory stores (a task panicking is a failure, not a
/// crash; a decoder panicking is a bug, which the fuzzers' panic hook
/// reports even when the job runner catches it).
pub fn job_frames(bytes: &[u8]) -> usize {
    let mut accepted = 0;
    match Job::from_bytes(bytes) {
        Ok(job) => {
            let again = job.to_bytes();
            let reparsed = Job::from_bytes(&again).expect("a written job parses");
            assert_eq!(
                reparsed.to_bytes(),
                again,
                "a job is written as it was read"
            );
            accepted += 1;
        }
        Err(e) => assert!(
            matches!(e, Error::Protocol(_) | Error::InvalidKey { .. }),
            "{e:?}"
        ),
    }
    // A future's wait comes from the bytes too: keep it short.
    let ran = crate::proxy::with_wait_cap(std::time::Duration::from_millis(20), || {
        only_in_memory_stores(bytes) && run_job_bytes(bytes).is_ok()
    });
    if ran {
        accepted += 1;
    }
    accepted
}

/// A worker's answers as the process pool reads them: every message is
/// read or refused with a reason, whatever the bytes claim (lengths above
/// all); returns how many whole messages the bytes held.
pub fn worker_answers(bytes: &[u8]) -> usize {
    match crate::executor::protocol::parse_messages(bytes) {
        Ok(count) => count,
        Err(reason) => {
            assert!(!reason.is_empty());
            0
        }
    }
}
