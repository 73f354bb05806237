//! The fast path: numeric buffers and strings as raw little-endian memory.
//!
//! A body's length comes from its header, which may lie. It sizes an
//! allocation only when the caller knows the input holds that many bytes;
//! otherwise the buffer grows as bytes actually arrive, so a corrupt header
//! costs an error, never an allocation of what it announces.

use std::any::{Any, TypeId};
use std::io::{self, Read};

use super::Format;

/// What is allocated for a body of unknown honesty before any of it has
/// arrived. Large zeroed allocations are mapped lazily by the kernel, so an
/// unused part costs address space, not memory; past this the buffer
/// doubles as data arrives.
/// (Fuzzing takes small steps: the growth is exercised, and the sanitizer
/// does not pay for 64 MiB per hostile header.)
const FIRST_STEP: usize = if cfg!(fuzzing) { 64 << 10 } else { 64 << 20 };

macro_rules! fast_paths {
    ($($ty:ty => $fmt:ident),* $(,)?) => {
        pub(super) fn fast_format<T: 'static>() -> Option<Format> {
            let id = TypeId::of::<T>();
            $(if id == TypeId::of::<Vec<$ty>>() { return Some(Format::$fmt); })*
            if id == TypeId::of::<String>() { return Some(Format::Utf8); }
            None
        }

        pub(super) fn fast_bytes<T: 'static>(value: &T) -> Option<&[u8]> {
            let any = value as &dyn Any;
            $(if let Some(v) = any.downcast_ref::<Vec<$ty>>() {
                return Some(bytemuck::cast_slice(v.as_slice()));
            })*
            if let Some(s) = any.downcast_ref::<String>() {
                return Some(s.as_bytes());
            }
            None
        }

        /// Reads a body of `len` bytes as a `T` of the fast path; `known`
        /// says that the input holds at least `len` more bytes.
        pub(super) fn fast_read<T: 'static>(
            format: Format,
            len: u64,
            known: bool,
            reader: &mut dyn Read,
        ) -> Result<T, String> {
            let boxed: Box<dyn Any> = match format {
                $(Format::$fmt => Box::new(read_vec::<$ty>(len, known, reader)?),)*
                Format::Utf8 => {
                    let bytes = read_vec::<u8>(len, known, reader)?;
                    Box::new(String::from_utf8(bytes).map_err(|e| {
                        format!("the stored string is not valid utf-8 ({e})")
                    })?)
                }
                Format::Cbor => return Err("cbor is not a raw format".into()),
            };
            boxed
                .downcast::<T>()
                .map(|b| *b)
                .map_err(|_| format!("a raw {format:?} buffer cannot be decoded as this type"))
        }

        /// Reads a body of `len` bytes in `format` straight into a buffer of
        /// its element type (a `String`'s bytes into a `Vec<u8>`). The
        /// length is not trusted: past `first_step` bytes the buffer grows
        /// as bytes arrive.
        pub(super) fn read_raw(
            format: Format,
            len: u64,
            first_step: usize,
            reader: &mut dyn Read,
        ) -> Result<Box<dyn Any + Send>, RawError> {
            Ok(match format {
                $(Format::$fmt => Box::new(read_vec_stepped::<$ty>(len, Some(first_step), reader)?),)*
                Format::Utf8 => Box::new(read_vec_stepped::<u8>(len, Some(first_step), reader)?),
                Format::Cbor => return Err(RawError::Invalid("cbor is not a raw format".into())),
            })
        }

        /// The bytes of a buffer made by [`read_raw`].
        pub(super) fn raw_bytes(format: Format, buffer: &(dyn Any + Send)) -> &[u8] {
            let bytes = match format {
                $(Format::$fmt => buffer.downcast_ref::<Vec<$ty>>().map(|v| bytemuck::cast_slice(v)),)*
                Format::Utf8 => buffer.downcast_ref::<Vec<u8>>().map(|v| &v[..]),
                Format::Cbor => None,
            };
            bytes.expect("a raw buffer holds a vector of its format's elements")
        }

        /// The value of a buffer made by [`read_raw`], as a `T` of the
        /// fast path.
        pub(super) fn take_raw<T: 'static>(
            format: Format,
            buffer: Box<dyn Any + Send>,
        ) -> Result<T, String> {
            let boxed: Box<dyn Any> = if format == Format::Utf8 {
                let bytes = buffer
                    .downcast::<Vec<u8>>()
                    .map_err(|_| "a raw string buffer holds no bytes".to_string())?;
                Box::new(String::from_utf8(*bytes).map_err(|e| {
                    format!("the stored string is not valid utf-8 ({e})")
                })?)
            } else {
                buffer
            };
            boxed
                .downcast::<T>()
                .map(|b| *b)
                .map_err(|_| format!("a raw {format:?} buffer cannot be decoded as this type"))
        }
    };
}

fast_paths! {
    u8 => U8, f32 => F32, f64 => F64, i32 => I32, i64 => I64, u32 => U32, u64 => U64,
}

fn read_vec<E: bytemuck::Pod>(
    len: u64,
    known: bool,
    reader: &mut dyn Read,
) -> Result<Vec<E>, String> {
    read_vec_stepped(len, (!known).then_some(FIRST_STEP), reader).map_err(|e| match e {
        RawError::Invalid(reason) => reason,
        RawError::Io(e) => truncated(e, len),
    })
}

/// Why a raw body could not be read.
#[derive(Debug)]
pub(crate) enum RawError {
    /// The length or format cannot be a body.
    Invalid(String),
    /// The input failed or ended.
    Io(io::Error),
}

/// Reads `len` bytes as `E`s: at once when `first_step` is `None` (the
/// input is known to hold them), else in steps from `first_step` bytes.
fn read_vec_stepped<E: bytemuck::Pod>(
    len: u64,
    first_step: Option<usize>,
    reader: &mut dyn Read,
) -> Result<Vec<E>, RawError> {
    let size = std::mem::size_of::<E>() as u64;
    if !len.is_multiple_of(size) {
        return Err(RawError::Invalid(format!(
            "body of {len} bytes is not a whole number of {size}-byte elements"
        )));
    }
    let n = usize::try_from(len / size)
        .ok()
        .filter(|n| n.checked_mul(size as usize).is_some())
        .ok_or_else(|| {
            RawError::Invalid(format!("a body of {len} bytes is too large for this host"))
        })?;
    // An honest length known to fit the input: one allocation, one read.
    let first = match first_step {
        None => n,
        Some(step) => n.min((step / size as usize).max(1)),
    };
    let mut out = zeroed_buffer::<E>(first);
    let mut filled = 0;
    loop {
        reader
            .read_exact(bytemuck::cast_slice_mut(&mut out[filled..]))
            .map_err(RawError::Io)?;
        filled = out.len();
        if filled == n {
            return Ok(out);
        }
        // The bytes so far were real: doubling keeps the memory held within
        // twice what actually arrived.
        grow(&mut out, n.min(filled.saturating_mul(2)));
    }
}

/// Grows `out` to `n` elements (the new ones zeroed).
///
/// A fresh zeroed buffer and one copy of what was read: measured faster than
/// growing in place (`realloc` moves the pages with `mremap`, but the grown
/// part must then be zeroed by hand and loses its huge pages).
fn grow<E: bytemuck::Pod>(out: &mut Vec<E>, n: usize) {
    let mut bigger = zeroed_buffer::<E>(n);
    bigger[..out.len()].copy_from_slice(out);
    *out = bigger;
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
        format!(
            "the body is shorter than the {len} bytes its header announces; the object is \
             truncated or corrupt"
        )
    } else {
        format!("reading the body failed: {e}")
    }
}
