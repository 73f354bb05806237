//! Large raw values kept out of frames.
//!
//! A by-value argument or result whose type takes the codec's fast path
//! (`Vec<u8>`, `Vec<f64>`, `String`, ...) and whose body is at least
//! [`SECTION_MIN`] bytes is not copied into its frame: the frame carries its
//! header only (tag [`SECTION`](super::wire::SECTION)), and the value itself
//! travels beside the frames as a *section*. A sender writes a section from
//! the value's own memory (one vectored write with the frames); a receiver
//! reads it straight into a buffer of the value's element type, which
//! decoding then takes as it is. In one process (a thread pool) a result
//! section is the returned value itself, handed over without any encoding.

use std::any::Any;

use crate::codec::{self, RawBuffer, SplitBody};
use crate::Storable;

/// Bodies at least this large travel as sections.
pub(crate) const SECTION_MIN: usize = 16 << 10;

/// A value kept whole for sending: its fast-path body is written from where
/// it is.
pub(crate) trait HeldValue: Send + Sync {
    /// The body's bytes (the value's own memory).
    fn bytes(&self) -> &[u8];
    /// The codec's number for the body's format.
    fn format(&self) -> u8;
    /// The value itself.
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

struct Held<T>(T);

impl<T: Storable> HeldValue for Held<T> {
    fn bytes(&self) -> &[u8] {
        codec::raw_body(&self.0).expect("only fast-path values are held")
    }

    fn format(&self) -> u8 {
        codec::raw_format_of::<T>().expect("only fast-path values are held")
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        Box::new(self.0)
    }
}

/// Keeps `value` (of a fast-path type) for sending as a section.
pub(crate) fn hold<T: Storable>(value: T) -> Box<dyn HeldValue> {
    debug_assert!(codec::raw_format_of::<T>().is_some());
    Box::new(Held(value))
}

/// The body of a split frame: a value held by its sender, or a buffer
/// received for it.
pub(crate) enum Section {
    Held(Box<dyn HeldValue>),
    Received(RawBuffer),
}

impl Section {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Section::Held(h) => h.bytes(),
            Section::Received(r) => r.bytes(),
        }
    }

    pub(crate) fn format(&self) -> u8 {
        match self {
            Section::Held(h) => h.format(),
            Section::Received(r) => r.format(),
        }
    }

    /// What decoding takes: the value itself or the received buffer, never
    /// a copy.
    pub(crate) fn into_body(self) -> SplitBody<'static> {
        match self {
            Section::Held(h) => SplitBody::Value(h.into_any()),
            Section::Received(r) => SplitBody::Buffer(r),
        }
    }
}

/// The sections of a job's arguments, in order, as the task reads them.
pub(crate) enum Sections<'a> {
    /// The submitted values, in the submitting process (decoding copies).
    Held(std::slice::Iter<'a, Box<dyn HeldValue>>),
    /// Buffers received from a pipe (decoding takes them).
    Received(std::vec::IntoIter<RawBuffer>),
}

impl<'a> Sections<'a> {
    pub(crate) fn none() -> Self {
        Sections::Held([].iter())
    }

    pub(crate) fn next(&mut self) -> Option<SplitBody<'a>> {
        match self {
            Sections::Held(it) => it.next().map(|h| SplitBody::Bytes(h.bytes())),
            Sections::Received(it) => it.next().map(SplitBody::Buffer),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Sections::Held(it) => it.len() == 0,
            Sections::Received(it) => it.len() == 0,
        }
    }
}
