//! How objects become bytes.
//!
//! Every stored object starts with a small header: a magic number, a format
//! tag, the Rust type name it was stored as (for error messages) and the
//! length of the body. Most types are encoded with serde and CBOR
//! (`ciborium`). Plain numeric and byte buffers (`Vec<u8>`, `Vec<f32>`,
//! `Vec<f64>`, `Vec<i32>`, `Vec<i64>`, `Vec<u32>`, `Vec<u64>`) and `String`
//! take a fast path instead: their memory is written as it is (little
//! endian) and read straight back into a new buffer, never element by
//! element. That fast path is chosen by the value's type at compile time
//! (the `TypeId` tests below fold to constants), so it costs nothing for
//! other types.
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

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::io::{self, Read};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

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

    /// The encoding as one owned buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        out.extend_from_slice(&self.header);
        out.extend_from_slice(&self.body);
        out
    }
}

macro_rules! fast_paths {
    ($($ty:ty => $fmt:ident),* $(,)?) => {
        fn fast_format<T: 'static>() -> Option<Format> {
            let id = TypeId::of::<T>();
            $(if id == TypeId::of::<Vec<$ty>>() { return Some(Format::$fmt); })*
            if id == TypeId::of::<String>() { return Some(Format::Utf8); }
            None
        }

        fn fast_bytes<T: 'static>(value: &T) -> Option<&[u8]> {
            let any = value as &dyn Any;
            $(if let Some(v) = any.downcast_ref::<Vec<$ty>>() {
                return Some(bytemuck::cast_slice(v.as_slice()));
            })*
            if let Some(s) = any.downcast_ref::<String>() {
                return Some(s.as_bytes());
            }
            None
        }

        fn fast_read<T: 'static>(
            format: Format,
            len: u64,
            reader: &mut dyn Read,
        ) -> std::result::Result<T, String> {
            let boxed: Box<dyn Any> = match format {
                $(Format::$fmt => Box::new(read_vec::<$ty>(len, reader)?),)*
                Format::Utf8 => {
                    let bytes = read_vec::<u8>(len, reader)?;
                    Box::new(String::from_utf8(bytes).map_err(|e| e.to_string())?)
                }
                Format::Cbor => unreachable!("cbor is not a fast path"),
            };
            Ok(*boxed.downcast::<T>().expect("format chosen from T's TypeId"))
        }
    };
}

fast_paths! {
    u8 => U8, f32 => F32, f64 => F64, i32 => I32, i64 => I64, u32 => U32, u64 => U64,
}

fn read_vec<E: bytemuck::Pod>(
    len: u64,
    reader: &mut dyn Read,
) -> std::result::Result<Vec<E>, String> {
    let size = std::mem::size_of::<E>() as u64;
    if !len.is_multiple_of(size) {
        return Err(format!(
            "body of {len} bytes is not a whole number of {size}-byte elements"
        ));
    }
    let n = usize::try_from(len / size).map_err(|_| "body too large for this host".to_string())?;
    let mut out = zeroed_buffer::<E>(n);
    reader
        .read_exact(bytemuck::cast_slice_mut(out.as_mut_slice()))
        .map_err(|e| truncated(e, len))?;
    Ok(out)
}

/// A zeroed buffer of `n` elements to be filled at once.
///
/// Zeroed allocation: large ones come straight from the kernel as zero
/// pages, so zeroing costs no pass over the memory. Filling a large fresh
/// buffer is dominated by page faults; on Linux, asking for transparent huge
/// pages cuts their number by 512 (where the system allows it on request).
pub(crate) fn zeroed_buffer<E: bytemuck::Zeroable + Clone>(n: usize) -> Vec<E> {
    let out = vec![E::zeroed(); n];
    advise_huge_pages(std::mem::size_of_val(out.as_slice()), out.as_ptr() as usize);
    out
}

/// Advises the kernel to back `[addr, addr + len)` with huge pages.
pub(crate) fn advise_huge_pages(len: usize, addr: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        const PAGE: usize = 4096;
        if len < 2 * HUGE {
            return;
        }
        let start = addr.next_multiple_of(PAGE);
        let end = (addr + len) / PAGE * PAGE;
        if end > start {
            // SAFETY: advice only; the range lies inside a live allocation
            // and madvise(MADV_HUGEPAGE) never changes its contents.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (len, addr);
}

fn truncated(e: io::Error, len: u64) -> String {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        format!("the body is shorter than the {len} bytes its header announces")
    } else {
        format!("reading the body failed: {e}")
    }
}

/// Encodes `value`.
pub fn encode<T: Serialize + 'static>(value: &T) -> Result<Encoded<'_>> {
    let type_name = std::any::type_name::<T>();
    let (format, body) = match fast_bytes(value).filter(|_| cfg!(target_endian = "little")) {
        Some(bytes) => (fast_format::<T>().expect("fast type"), Cow::Borrowed(bytes)),
        None => {
            let mut buf = Vec::new();
            ciborium::into_writer(value, &mut buf).map_err(|e| Error::Encode {
                type_name,
                reason: e.to_string(),
            })?;
            (Format::Cbor, Cow::Owned(buf))
        }
    };
    let name = &type_name.as_bytes()[..type_name.len().min(u16::MAX as usize)];
    let mut header = Vec::with_capacity(FIXED_HEADER + name.len() + 8);
    header.extend_from_slice(&MAGIC);
    header.push(format as u8);
    header.extend_from_slice(&(name.len() as u16).to_le_bytes());
    header.extend_from_slice(name);
    header.extend_from_slice(&(body.len() as u64).to_le_bytes());
    Ok(Encoded { header, body })
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

/// Decodes a `T` from the whole of `reader`.
pub fn decode<T: DeserializeOwned + 'static>(
    reader: &mut dyn Read,
) -> std::result::Result<T, DecodeFailure> {
    let fail = |found: &str, reason: String| DecodeFailure {
        found: found.to_string(),
        reason,
    };
    let mut fixed = [0u8; FIXED_HEADER];
    reader
        .read_exact(&mut fixed)
        .map_err(|e| fail("?", format!("no valid header ({e})")))?;
    if fixed[..4] != MAGIC {
        return Err(fail(
            "?",
            "the bytes do not start with a proxystore header".into(),
        ));
    }
    let name_len = u16::from_le_bytes([fixed[5], fixed[6]]) as usize;
    let mut name = vec![0u8; name_len];
    let mut len = [0u8; 8];
    reader
        .read_exact(&mut name)
        .and_then(|()| reader.read_exact(&mut len))
        .map_err(|e| fail("?", format!("truncated header ({e})")))?;
    let found = String::from_utf8_lossy(&name).into_owned();
    let len = u64::from_le_bytes(len);
    let Some(format) = Format::from_u8(fixed[4]) else {
        return Err(fail(&found, format!("unknown body format {}", fixed[4])));
    };
    let value = match (format, fast_format::<T>()) {
        (Format::Cbor, _) => {
            let mut body = reader.take(len);
            let value: T =
                ciborium::from_reader(&mut body).map_err(|e| fail(&found, e.to_string()))?;
            if body.limit() != 0 {
                return Err(fail(
                    &found,
                    "the cbor value ends before the body does".into(),
                ));
            }
            value
        }
        (stored, Some(wanted)) if stored == wanted => {
            if cfg!(target_endian = "big") {
                return Err(fail(
                    &found,
                    "raw little-endian buffers cannot be read on this big-endian host".into(),
                ));
            }
            fast_read::<T>(stored, len, reader).map_err(|r| fail(&found, r))?
        }
        (stored, _) => {
            return Err(fail(
                &found,
                format!("a raw {stored:?} buffer cannot be decoded as this type"),
            ))
        }
    };
    let mut probe = [0u8; 1];
    match reader.read(&mut probe) {
        Ok(0) => Ok(value),
        Ok(_) => Err(fail(&found, "unexpected bytes after the body".into())),
        Err(e) => Err(fail(&found, format!("reading past the body failed: {e}"))),
    }
}

/// Decodes a `T` from a byte slice.
pub fn decode_slice<T: DeserializeOwned + 'static>(
    mut bytes: &[u8],
) -> std::result::Result<T, DecodeFailure> {
    decode(&mut bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug + 'static>(v: T) {
        let enc = encode(&v).unwrap();
        let bytes = enc.to_vec();
        assert_eq!(bytes.len(), enc.len());
        let back: T = decode_slice(&bytes).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn round_trips_fast_and_cbor_types() {
        round_trip(vec![1u8, 2, 3]);
        round_trip(vec![1.5f32, -2.0]);
        round_trip(vec![1.5f64, f64::MAX, f64::MIN_POSITIVE]);
        round_trip(vec![-1i32, i32::MAX]);
        round_trip(vec![-1i64, i64::MIN]);
        round_trip(vec![7u32]);
        round_trip(vec![u64::MAX]);
        round_trip(Vec::<f64>::new());
        round_trip("héllo".to_string());
        round_trip(42i64);
        round_trip((1u8, "x".to_string(), vec![(1.0f64, 2u16)]));
        round_trip(Some(vec![1u16, 2]));
    }

    #[test]
    fn fast_path_writes_raw_memory() {
        let v = vec![1.0f64; 1000];
        let enc = encode(&v).unwrap();
        assert_eq!(enc.parts()[1].len(), 8000);
        assert!(matches!(enc.body, Cow::Borrowed(_)));
    }

    #[test]
    fn reports_wrong_type_and_corruption() {
        let bytes = encode(&"text".to_string()).unwrap().to_vec();
        let err = decode_slice::<Vec<f64>>(&bytes).unwrap_err();
        assert_eq!(err.found, "alloc::string::String");
        let bytes = encode(&(1u8, 2u8)).unwrap().to_vec();
        assert!(decode_slice::<String>(&bytes).is_err());
        let bytes = encode(&vec![1.0f64; 4]).unwrap().to_vec();
        assert!(decode_slice::<Vec<f64>>(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_slice::<Vec<f64>>(&longer).is_err());
        assert!(decode_slice::<Vec<f64>>(b"garbage, not an object").is_err());
        assert!(decode_slice::<Vec<f64>>(b"").is_err());
    }
}
