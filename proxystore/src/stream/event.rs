//! The messages a producer publishes: one batch of a topic's events each.
//!
//! ```text
//! "PSE1" | header length (u32, little endian) | header (CBOR) | bodies
//! ```
//!
//! The header names the topic, the store the batch's objects are in (once
//! per batch, not per event) and each event: an object in the store (its
//! key, whether the consumer owns it, its metadata), an object inside the
//! message (its body's length and metadata), or the end of the stream. The
//! bodies of objects inside the message follow the header, in order, each
//! in the store's own encoding ([`codec`](crate::codec)), so a large
//! numeric buffer is neither wrapped nor escaped.
//!
//! Everything read is checked against the message: lengths must add up to
//! exactly what arrived, and nothing is allocated from a length before it
//! is checked.

use std::ops::Range;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Metadata;
use crate::error::{Error, Result};
use crate::key::Key;
use crate::store::StoreConfig;

const MAGIC: &[u8; 4] = b"PSE1";
const PREFIX: usize = MAGIC.len() + 4;

/// One event of a batch, as its header describes it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Head {
    /// An object in the batch's store.
    Key {
        key: Key,
        /// The consumer owns the object: it is evicted once consumed.
        owned: bool,
        metadata: Metadata,
    },
    /// An object inside the message: its body's length.
    Object { len: u64, metadata: Metadata },
    /// No more events on the topic.
    End,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    topic: String,
    store: Option<StoreConfig>,
    events: Vec<Head>,
}

/// A batch to publish.
pub(crate) struct Outgoing<'a> {
    pub(crate) topic: &'a str,
    pub(crate) store: Option<&'a StoreConfig>,
    pub(crate) events: Vec<Head>,
    /// The bodies of the `Object` events, in order, each in parts.
    pub(crate) bodies: Vec<[&'a [u8]; 2]>,
}

impl Outgoing<'_> {
    /// The message's prefix and header; the bodies follow as they are.
    pub(crate) fn head(&self) -> Result<Vec<u8>> {
        #[derive(Serialize)]
        struct HeaderRef<'a> {
            topic: &'a str,
            store: Option<&'a StoreConfig>,
            events: &'a [Head],
        }
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[0; 4]);
        ciborium::into_writer(
            &HeaderRef {
                topic: self.topic,
                store: self.store,
                events: &self.events,
            },
            &mut out,
        )
        .map_err(|e| Error::Encode {
            type_name: "stream event",
            reason: e.to_string(),
        })?;
        let len = u32::try_from(out.len() - PREFIX).map_err(|_| Error::Encode {
            type_name: "stream event",
            reason: "the batch's header is larger than 4 GiB".into(),
        })?;
        out[MAGIC.len()..PREFIX].copy_from_slice(&len.to_le_bytes());
        Ok(out)
    }

    /// Every part of the message, in order.
    pub(crate) fn parts<'b>(&'b self, head: &'b [u8]) -> Vec<&'b [u8]> {
        let mut parts = Vec::with_capacity(1 + 2 * self.bodies.len());
        parts.push(head);
        for body in &self.bodies {
            parts.extend(body.iter().copied().filter(|p| !p.is_empty()));
        }
        parts
    }
}

/// A batch received: its events, with the bodies of objects inside the
/// message as ranges of `message`.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) store: Option<Arc<StoreConfig>>,
    pub(crate) events: Vec<(Head, Option<Range<usize>>)>,
    pub(crate) message: Vec<u8>,
}

/// The largest header read (it holds keys and metadata, never objects).
const MAX_HEADER: usize = 64 * 1024 * 1024;

impl Incoming {
    /// Reads a message that arrived on `topic`.
    pub(crate) fn decode(topic: &str, message: Vec<u8>) -> Result<Incoming> {
        let bad = |reason: String| Error::StreamEvent {
            topic: topic.to_string(),
            reason,
        };
        if message.len() < PREFIX || &message[..MAGIC.len()] != MAGIC {
            return Err(bad(format!(
                "a message of {} bytes that does not start with this library's stream \
                 format (\"PSE1\"): another program publishes to this topic",
                message.len()
            )));
        }
        let len = u32::from_le_bytes(message[MAGIC.len()..PREFIX].try_into().expect("4 bytes"));
        let len = len as usize;
        let end = PREFIX
            .checked_add(len)
            .filter(|&end| end <= message.len() && len <= MAX_HEADER)
            .ok_or_else(|| {
                bad(format!(
                    "its header claims {len} bytes, but the message has {}",
                    message.len() - PREFIX
                ))
            })?;
        let header: Header = ciborium::from_reader(&message[PREFIX..end])
            .map_err(|e| bad(format!("its header is not valid: {e}")))?;
        if header.topic != topic {
            return Err(bad(format!(
                "it names topic `{}`, not the topic it arrived on",
                header.topic
            )));
        }
        let mut at = end;
        let mut events = Vec::with_capacity(header.events.len());
        for head in header.events {
            let body = match &head {
                Head::Object { len, .. } => {
                    let stop = usize::try_from(*len)
                        .ok()
                        .and_then(|len| at.checked_add(len))
                        .filter(|&stop| stop <= message.len())
                        .ok_or_else(|| {
                            bad(format!(
                                "an object claims {len} bytes, but only {} remain",
                                message.len() - at
                            ))
                        })?;
                    let range = at..stop;
                    at = stop;
                    Some(range)
                }
                Head::Key { .. } if header.store.is_none() => {
                    return Err(bad("an object key without the store it is in".into()));
                }
                _ => None,
            };
            events.push((head, body));
        }
        if at != message.len() {
            return Err(bad(format!(
                "{} bytes follow its last object",
                message.len() - at
            )));
        }
        Ok(Incoming {
            store: header.store.map(Arc::new),
            events,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(events: Vec<Head>, bodies: Vec<[&[u8]; 2]>) -> Vec<u8> {
        let out = Outgoing {
            topic: "t",
            store: None,
            events,
            bodies,
        };
        let head = out.head().unwrap();
        out.parts(&head).concat()
    }

    #[test]
    fn objects_inside_a_message_round_trip() {
        let bytes = message(
            vec![
                Head::Object {
                    len: 5,
                    metadata: Metadata::new().with("i", 1),
                },
                Head::Object {
                    len: 0,
                    metadata: Metadata::new(),
                },
                Head::End,
            ],
            vec![[b"he", b"llo"], [b"", b""]],
        );
        let got = Incoming::decode("t", bytes).unwrap();
        assert_eq!(got.events.len(), 3);
        let range = got.events[0].1.clone().unwrap();
        assert_eq!(&got.message[range], b"hello");
        assert_eq!(got.events[1].1, Some(got.message.len()..got.message.len()));
        assert!(matches!(got.events[2].0, Head::End));
    }

    #[test]
    fn hostile_lengths_and_foreign_messages_are_typed_errors() {
        let good = message(
            vec![Head::Object {
                len: 3,
                metadata: Metadata::new(),
            }],
            vec![[b"abc", b""]],
        );
        // A body longer than the message, a trailing byte, a short one.
        for bytes in [
            good[..good.len() - 1].to_vec(),
            [good.clone(), vec![0]].concat(),
            b"PSE1".to_vec(),
            b"{\"event_type\": \"EVENT_BATCH\"}".to_vec(),
            [&b"PSE1"[..], &u32::MAX.to_le_bytes()].concat(),
        ] {
            let err = Incoming::decode("t", bytes).unwrap_err();
            assert!(matches!(err, Error::StreamEvent { .. }), "{err}");
        }
        // A message published to another topic.
        let err = Incoming::decode("other", good).unwrap_err();
        assert!(err.to_string().contains("names topic `t`"), "{err}");
        // An object claiming u64::MAX bytes.
        let bytes = message(
            vec![Head::Object {
                len: u64::MAX,
                metadata: Metadata::new(),
            }],
            vec![],
        );
        assert!(Incoming::decode("t", bytes).is_err());
    }

    #[test]
    fn a_key_needs_its_store() {
        let bytes = message(
            vec![Head::Key {
                key: Key::new(),
                owned: true,
                metadata: Metadata::new(),
            }],
            vec![],
        );
        let err = Incoming::decode("t", bytes).unwrap_err();
        assert!(err.to_string().contains("without the store"), "{err}");
    }
}
