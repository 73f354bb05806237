//! How objects become bytes.
//!
//! Every stored object starts with a small header: a magic number, a format
//! tag, the Rust type name it was stored as (decoding checks it, see
//! [`DecodeOptions::check_type`]) and the length of the body. Most types are
//! encoded with serde and CBOR (`ciborium`). Plain numeric and byte buffers
//! (`Vec<u8>`, `Vec<f32>`, `Vec<f64>`, `Vec<i32>`, `Vec<i64>`, `Vec<u32>`,
//! `Vec<u64>`) and `String` take a fast path instead: their memory is
//! written as it is (little endian) and read straight back into a new
//! buffer, never element by element. That fast path is chosen by the value's type at compile time
//! (the `TypeId` tests below fold to constants), so it costs nothing for
//! other types.
//!
//! Decoding trusts nothing it reads: a length sizes an allocation only when
//! the input is known to hold that many bytes (otherwise buffers grow as
//! bytes arrive), values nest at most [`MAX_DEPTH`] levels (encoding refuses
//! deeper ones, which could not be read back), and every failure is a
//! [`DecodeFailure`], never a panic.
//!
//! ```
//! use proxystore::codec::{decode_slice, encode};
//!
//! let samples = vec![0.25f64; 1024];
//! let encoded = encode(&samples)?;
//! assert!(encoded.len() < 8 * 1024 + 64);            // raw memory plus a small header
//! let back: Vec<f64> = decode_slice(&encoded.to_vec()).unwrap();
//! assert_eq!(back, samples);
//!
//! // Decoding as another type is an error, not garbage.
//! assert!(decode_slice::<String>(&encoded.to_vec()).is_err());
//! # Ok::<(), proxystore::Error>(())
//! ```

mod bounded;
mod depth;
mod raw;

use std::borrow::Cow;
use std::io::{self, Read};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use raw::{fast_bytes, fast_format, fast_read, raw_bytes, read_raw, take_raw};

pub use depth::MAX_DEPTH;
pub(crate) use raw::{zeroed_buffer, RawError};

/// Size of the scratch space ciborium decodes text and byte strings in.
const SCRATCH: usize = 4096;

thread_local! {
    /// One scratch buffer per thread, reused by every decoding on it:
    /// `ciborium::from_reader` would zero a fresh 4 KiB one each time.
    static CBOR_SCRATCH: std::cell::RefCell<Box<[u8; SCRATCH]>> =
        std::cell::RefCell::new(Box::new([0; SCRATCH]));
}

/// `ciborium::from_reader`, with this thread's scratch buffer (a fresh one
/// when a decoding is already using it, as when a decoded value decodes
/// another inside its `Deserialize`).
pub(crate) fn cbor_from_reader<T: DeserializeOwned, R: Read>(
    reader: R,
) -> std::result::Result<T, ciborium::de::Error<io::Error>> {
    CBOR_SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => ciborium::de::from_reader_with_buffer(reader, &mut scratch[..]),
        Err(_) => ciborium::de::from_reader_with_buffer(reader, &mut [0; SCRATCH]),
    })
}

const MAGIC: [u8; 4] = *b"PXS1";
const FIXED_HEADER: usize = 4 + 1 + 2;

/// Format of a stored body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Format {
    Cbor = 0,
    U8 = 1,
    F32 = 2,
    F64 = 3,
    I32 = 4,
    I64 = 5,
    U32 = 6,
    U64 = 7,
    Utf8 = 8,
}

impl Format {
    fn from_u8(b: u8) -> Option<Self> {
        use Format::*;
        Some(match b {
            0 => Cbor,
            1 => U8,
            2 => F32,
            3 => F64,
            4 => I32,
            5 => I64,
            6 => U32,
            7 => U64,
            8 => Utf8,
            _ => return None,
        })
    }
}

/// An encoded object: a small owned header and a body that borrows the
/// value's own memory when it takes the fast path.
#[derive(Debug)]
pub struct Encoded<'a> {
    header: Vec<u8>,
    body: Cow<'a, [u8]>,
}

impl Encoded<'_> {
    /// The bytes to store, in order.
    pub fn parts(&self) -> [&[u8]; 2] {
        [&self.header, &self.body]
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.header.len() + self.body.len()
    }

    /// Whether the encoding is empty (never: the header is always present).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The header, and whether the body is the value's own memory (the
    /// fast path) that can travel without being copied.
    pub(crate) fn split(&self) -> (&[u8], bool) {
        (&self.header, matches!(self.body, Cow::Borrowed(_)))
    }

    /// The encoding as one owned buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        out.extend_from_slice(&self.header);
        out.extend_from_slice(&self.body);
        out
    }
}

/// Encodes `value`.
///
/// A value nested deeper than [`MAX_DEPTH`] levels is refused with
/// [`Error::Encode`]: it could not be decoded again (and encoding it could
/// overflow the stack).
pub fn encode<T: Serialize + 'static>(value: &T) -> Result<Encoded<'_>> {
    let type_name = std::any::type_name::<T>();
    let (format, body) = match fast_bytes(value).filter(|_| cfg!(target_endian = "little")) {
        Some(bytes) => (fast_format::<T>().expect("fast type"), Cow::Borrowed(bytes)),
        None => {
            let mut buf = Vec::new();
            ciborium::into_writer(&depth::Nested::root(value), &mut buf).map_err(|e| {
                Error::Encode {
                    type_name,
                    reason: match e {
                        ciborium::ser::Error::Value(reason) => reason,
                        ciborium::ser::Error::Io(e) => e.to_string(),
                    },
                }
            })?;
            (Format::Cbor, Cow::Owned(buf))
        }
    };
    let name = recorded_name(type_name);
    let mut header = Vec::with_capacity(FIXED_HEADER + name.len() + 8);
    header.extend_from_slice(&MAGIC);
    header.push(format as u8);
    header.extend_from_slice(&(name.len() as u16).to_le_bytes());
    header.extend_from_slice(name);
    header.extend_from_slice(&(body.len() as u64).to_le_bytes());
    Ok(Encoded { header, body })
}

/// The type name as the header records it (at most `u16::MAX` bytes).
fn recorded_name(type_name: &str) -> &[u8] {
    &type_name.as_bytes()[..type_name.len().min(u16::MAX as usize)]
}

/// Why decoding failed, before the caller adds the key and store.
#[derive(Debug)]
pub struct DecodeFailure {
    /// The type name recorded in the header, if it could be read.
    pub found: String,
    /// What went wrong.
    pub reason: String,
}

impl DecodeFailure {
    /// Adds the object's key and store to make an [`Error`].
    pub(crate) fn into_error<T>(self, key: crate::Key, store: &str) -> Error {
        Error::Decode {
            key,
            store: store.to_string(),
            expected: std::any::type_name::<T>(),
            found: self.found,
            reason: self.reason,
        }
    }
}

/// How [`decode_with`] reads an object. The default (also [`DecodeOptions::new`])
/// is what [`decode`] does.
///
/// ```
/// use proxystore::codec::{decode_slice, decode_slice_with, encode, DecodeOptions};
///
/// let bytes = encode(&Some(7u8))?.to_vec();
/// // Stored as `Option<u8>`: asking for a `u64` is an error that names both.
/// let err = decode_slice::<u64>(&bytes).unwrap_err();
/// assert!(err.reason.contains("core::option::Option<u8>") && err.reason.contains("u64"));
/// // A deliberate conversion: the CBOR of `Some(7u8)` is a valid `u64`.
/// let seven: u64 = decode_slice_with(&bytes, DecodeOptions::new().check_type(false)).unwrap();
/// assert_eq!(seven, 7);
/// # Ok::<(), proxystore::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct DecodeOptions {
    check_type: bool,
    input_len: Option<u64>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions::new()
    }
}

impl DecodeOptions {
    /// The defaults: the stored type must be the requested one, the input
    /// length is unknown.
    pub const fn new() -> Self {
        DecodeOptions {
            check_type: true,
            input_len: None,
        }
    }

    /// Whether an object stored as another type is refused (default
    /// `true`).
    ///
    /// The header records [`std::any::type_name`] of the stored type, and
    /// decoding compares it with the requested type's name, exactly. Those
    /// names are stable within one build (every process of an executable,
    /// such as pool workers, agrees on them), but not promised across
    /// compiler versions, and a type moved to another module changes name:
    /// an object written by another build of the program may need
    /// `check_type(false)`. With the check off, the body is decoded as the
    /// requested type if its bytes allow, which is how to read a value
    /// stored as one type as another compatible one on purpose (a
    /// `Vec<u8>` stored through CBOR as a `Vec<u16>`, a struct as a newer
    /// version of itself).
    pub const fn check_type(mut self, check: bool) -> Self {
        self.check_type = check;
        self
    }

    /// The number of bytes the reader holds, when known (a slice's length,
    /// a file's size). A header announcing more is refused at once, and an
    /// honest large body is read into a single allocation. Without it,
    /// large bodies are read into a buffer that grows as bytes arrive.
    pub const fn input_len(mut self, len: u64) -> Self {
        self.input_len = Some(len);
        self
    }
}

/// Decodes a `T` from the whole of `reader`.
///
/// The object must have been stored as a `T` (see
/// [`DecodeOptions::check_type`]); a corrupt or hostile input is a
/// [`DecodeFailure`], never a panic or an allocation of what its header
/// claims.
pub fn decode<T: DeserializeOwned + 'static>(
    reader: &mut dyn Read,
) -> std::result::Result<T, DecodeFailure> {
    decode_with(reader, DecodeOptions::new())
}

/// Decodes a `T` from a byte slice.
pub fn decode_slice<T: DeserializeOwned + 'static>(
    bytes: &[u8],
) -> std::result::Result<T, DecodeFailure> {
    decode_slice_with(bytes, DecodeOptions::new())
}

/// Decodes a `T` from a byte slice with non-default options (the input
/// length is the slice's).
pub fn decode_slice_with<T: DeserializeOwned + 'static>(
    mut bytes: &[u8],
    options: DecodeOptions,
) -> std::result::Result<T, DecodeFailure> {
    let options = options.input_len(bytes.len() as u64);
    decode_with(&mut bytes, options)
}

/// Decodes a `T` from the whole of `reader`, with `options`.
pub fn decode_with<T: DeserializeOwned + 'static>(
    reader: &mut dyn Read,
    options: DecodeOptions,
) -> std::result::Result<T, DecodeFailure> {
    // Objects that Python ProxyStore stored start with its serializer id.
    let mut lead = [0u8; 3];
    reader.read_exact(&mut lead).map_err(|e| DecodeFailure {
        found: "?".into(),
        reason: format!("no valid header ({e})"),
    })?;
    #[cfg(feature = "python")]
    if let Some(format) = crate::python::Format::sniff(&lead) {
        let remaining = options.input_len.map(|n| n.saturating_sub(3));
        return crate::python::serialize::decode::<T>(format, reader, remaining);
    }
    let mut whole = (&lead[..]).chain(reader);
    let reader: &mut dyn Read = &mut whole;
    let header = Header::read(reader, options.input_len)?;
    let fail = |reason: String| DecodeFailure {
        found: String::from_utf8_lossy(&header.name).into_owned(),
        reason,
    };
    let expected = std::any::type_name::<T>();
    if options.check_type && header.name != recorded_name(expected) {
        return Err(fail(format!(
            "it was stored as `{}`, not `{expected}`; read it as the type it was stored as, or \
             with DecodeOptions::check_type(false) to convert it on purpose",
            String::from_utf8_lossy(&header.name)
        )));
    }
    let len = header.body_len;
    if let Some(remaining) = header.remaining {
        if len > remaining {
            return Err(fail(format!(
                "the header announces a body of {len} bytes but only {remaining} follow; the \
                 object is truncated or corrupt"
            )));
        }
    }
    let value = match (header.format, fast_format::<T>()) {
        (Format::Cbor, _) => {
            let mut body = reader.take(len);
            let value: T = bounded::decode(&mut body, len).map_err(|e| fail(cbor_reason(e)))?;
            if body.limit() != 0 {
                return Err(fail("the cbor value ends before the body does".into()));
            }
            value
        }
        (stored, Some(wanted)) if stored == wanted => {
            if cfg!(target_endian = "big") {
                return Err(fail(
                    "raw little-endian buffers cannot be read on this big-endian host".into(),
                ));
            }
            fast_read::<T>(stored, len, header.remaining.is_some(), reader).map_err(fail)?
        }
        (stored, _) => {
            return Err(fail(format!(
                "a raw {stored:?} buffer cannot be decoded as this type"
            )))
        }
    };
    // The input's length is known: whether bytes follow needs no read.
    if let Some(remaining) = header.remaining {
        return if remaining == len {
            Ok(value)
        } else {
            Err(fail("unexpected bytes after the body".into()))
        };
    }
    let mut probe = [0u8; 1];
    match reader.read(&mut probe) {
        Ok(0) => Ok(value),
        Ok(_) => Err(fail("unexpected bytes after the body".into())),
        Err(e) => Err(fail(format!("reading past the body failed: {e}"))),
    }
}

/// The bytes of a value's fast-path body, if its type has one (what a
/// sender keeps out of its frames and writes from where it is).
pub(crate) fn raw_body<T: 'static>(value: &T) -> Option<&[u8]> {
    fast_bytes(value).filter(|_| cfg!(target_endian = "little"))
}

/// The wire number of `T`'s fast-path format.
pub(crate) fn raw_format_of<T: 'static>() -> Option<u8> {
    fast_format::<T>().map(|f| f as u8)
}

/// A raw body received into its final buffer: a `Vec` of its element type,
/// so that decoding it as that type copies nothing.
pub(crate) struct RawBuffer {
    format: Format,
    buffer: Box<dyn std::any::Any + Send>,
}

impl RawBuffer {
    /// Reads a body of `len` bytes in the format numbered `format`. The
    /// length is not trusted: past `first_step` bytes the buffer grows as
    /// bytes arrive.
    pub(crate) fn read(
        format: u8,
        len: u64,
        first_step: usize,
        reader: &mut dyn Read,
    ) -> std::result::Result<RawBuffer, RawError> {
        let format = Format::from_u8(format)
            .filter(|f| *f != Format::Cbor)
            .ok_or_else(|| RawError::Invalid(format!("unknown raw format {format}")))?;
        Ok(RawBuffer {
            format,
            buffer: read_raw(format, len, first_step, reader)?,
        })
    }

    /// The body's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        raw_bytes(self.format, &*self.buffer)
    }

    /// The number of the body's format.
    pub(crate) fn format(&self) -> u8 {
        self.format as u8
    }
}

/// Where the body of a split encoding is (see [`decode_split`]).
pub(crate) enum SplitBody<'a> {
    /// Bytes to copy from.
    Bytes(&'a [u8]),
    /// A buffer received for it, taken as it is.
    Buffer(RawBuffer),
    /// The value itself, never encoded (it stayed in this process).
    Value(Box<dyn std::any::Any + Send>),
}

/// Decodes a `T` whose header (`head`, as [`Encoded::split`] gives it) and
/// fast-path body travelled apart, with the same checks as [`decode`]: the
/// recorded type, the format and the length.
pub(crate) fn decode_split<T: DeserializeOwned + 'static>(
    head: &[u8],
    body: SplitBody<'_>,
) -> std::result::Result<T, DecodeFailure> {
    let mut input = head;
    let header = Header::read(&mut input, Some(head.len() as u64))?;
    let fail = |reason: String| DecodeFailure {
        found: String::from_utf8_lossy(&header.name).into_owned(),
        reason,
    };
    if header.remaining != Some(0) {
        return Err(fail("bytes follow the header of a split body".into()));
    }
    let expected = std::any::type_name::<T>();
    if header.name != recorded_name(expected) {
        return Err(fail(format!(
            "it was stored as `{}`, not `{expected}`",
            String::from_utf8_lossy(&header.name)
        )));
    }
    if fast_format::<T>() != Some(header.format) {
        return Err(fail(format!(
            "a raw {:?} buffer cannot be decoded as this type",
            header.format
        )));
    }
    if cfg!(target_endian = "big") {
        return Err(fail(
            "raw little-endian buffers cannot be read on this big-endian host".into(),
        ));
    }
    let len = header.body_len;
    let got = match &body {
        SplitBody::Bytes(b) => Some(b.len() as u64),
        SplitBody::Buffer(b) if b.format == header.format => Some(b.bytes().len() as u64),
        SplitBody::Buffer(b) => {
            return Err(fail(format!(
                "its header says {:?} but its body is {:?}",
                header.format, b.format
            )))
        }
        SplitBody::Value(_) => None,
    };
    if got.is_some_and(|got| got != len) {
        return Err(fail(format!(
            "the header announces a body of {len} bytes but the body has {}",
            got.unwrap_or(0)
        )));
    }
    match body {
        SplitBody::Bytes(mut bytes) => fast_read::<T>(header.format, len, true, &mut bytes),
        SplitBody::Buffer(b) => take_raw::<T>(b.format, b.buffer),
        SplitBody::Value(v) => (v as Box<dyn std::any::Any>)
            .downcast::<T>()
            .map(|b| *b)
            .map_err(|_| "the value is not of this type".to_string()),
    }
    .map_err(fail)
}

/// A parsed object header.
struct Header {
    format: Format,
    name: Vec<u8>,
    body_len: u64,
    /// How many bytes follow the header, when the input length is known.
    remaining: Option<u64>,
}

impl Header {
    fn read(
        reader: &mut dyn Read,
        input_len: Option<u64>,
    ) -> std::result::Result<Header, DecodeFailure> {
        let fail = |reason: String| DecodeFailure {
            found: "?".into(),
            reason,
        };
        let mut fixed = [0u8; FIXED_HEADER];
        reader
            .read_exact(&mut fixed)
            .map_err(|e| fail(format!("no valid header ({e})")))?;
        if fixed[..4] != MAGIC {
            return Err(fail(
                "the bytes do not start with a proxystore header".into(),
            ));
        }
        let name_len = u16::from_le_bytes([fixed[5], fixed[6]]) as usize;
        let header_len = (FIXED_HEADER + name_len + 8) as u64;
        let remaining = match input_len {
            Some(total) if total < header_len => {
                return Err(fail(format!(
                    "truncated header: it needs {header_len} bytes, the object has {total}"
                )))
            }
            Some(total) => Some(total - header_len),
            None => None,
        };
        let mut name = vec![0u8; name_len];
        let mut len = [0u8; 8];
        reader
            .read_exact(&mut name)
            .and_then(|()| reader.read_exact(&mut len))
            .map_err(|e| fail(format!("truncated header ({e})")))?;
        let Some(format) = Format::from_u8(fixed[4]) else {
            return Err(DecodeFailure {
                found: String::from_utf8_lossy(&name).into_owned(),
                reason: format!("unknown body format {}", fixed[4]),
            });
        };
        Ok(Header {
            format,
            name,
            body_len: u64::from_le_bytes(len),
            remaining,
        })
    }
}

/// What a CBOR decoding error means, in words.
fn cbor_reason(e: ciborium::de::Error<io::Error>) -> String {
    use ciborium::de::Error as E;
    match e {
        E::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            "the cbor value is cut short; the object is truncated or corrupt".into()
        }
        E::Io(e) => format!("reading the body failed: {e}"),
        E::Syntax(offset) => format!("invalid cbor at byte {offset} of the body"),
        E::Semantic(Some(offset), reason) => format!("{reason} (at byte {offset} of the body)"),
        E::Semantic(None, reason) => reason,
        E::RecursionLimitExceeded => format!(
            "the value is nested deeper than {MAX_DEPTH} levels (arrays, maps, enum variants), \
             more than the decoder reads"
        ),
    }
}

#[cfg(test)]
mod tests;
