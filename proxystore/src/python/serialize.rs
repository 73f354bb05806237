//! Python ProxyStore's object format: a two-letter serializer id, a
//! newline, then the payload.

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::io::Read;

use super::npy::{self, Element, NdArray, Order};
use crate::codec::DecodeFailure;

/// The serializers of Python ProxyStore 1.1, by their two-letter id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `BS`: `bytes`, stored as they are.
    Bytes,
    /// `US`: `str`, as UTF-8.
    Str,
    /// `NP`: a NumPy array, as `numpy.save` writes it (`.npy`).
    Numpy,
    /// `PD`: a pandas DataFrame, pickled (not readable here).
    Pandas,
    /// `PL`: a polars DataFrame, as Arrow IPC (not readable here).
    Polars,
    /// `PK`: any other object, pickled (not readable here).
    Pickle,
    /// `CP`: any other object, cloudpickled (not readable here).
    CloudPickle,
}

impl Format {
    /// The two-letter id that starts the stored bytes.
    pub fn id(self) -> &'static str {
        match self {
            Format::Bytes => "BS",
            Format::Str => "US",
            Format::Numpy => "NP",
            Format::Pandas => "PD",
            Format::Polars => "PL",
            Format::Pickle => "PK",
            Format::CloudPickle => "CP",
        }
    }

    /// The format of stored bytes that start with `lead` (the id and its
    /// newline), if they are Python ProxyStore's.
    pub fn sniff(lead: &[u8]) -> Option<Format> {
        Some(match lead.get(..3)? {
            b"BS\n" => Format::Bytes,
            b"US\n" => Format::Str,
            b"NP\n" => Format::Numpy,
            b"PD\n" => Format::Pandas,
            b"PL\n" => Format::Polars,
            b"PK\n" => Format::Pickle,
            b"CP\n" => Format::CloudPickle,
            _ => return None,
        })
    }

    fn describe(self) -> &'static str {
        match self {
            Format::Bytes => "bytes (`BS`)",
            Format::Str => "a str (`US`)",
            Format::Numpy => "a numpy array (`NP`)",
            Format::Pandas => "a pandas DataFrame pickled (`PD`)",
            Format::Polars => "a polars DataFrame as Arrow IPC (`PL`)",
            Format::Pickle => "a pickle (`PK`)",
            Format::CloudPickle => "a cloudpickle (`CP`)",
        }
    }
}

/// A value in Python ProxyStore's format: the id line and any header,
/// then the body, which borrows the value's memory when it can.
#[derive(Debug)]
pub struct PyEncoded<'a> {
    head: Vec<u8>,
    body: Cow<'a, [u8]>,
}

impl PyEncoded<'_> {
    /// The bytes to store, in order.
    pub fn parts(&self) -> [&[u8]; 2] {
        [&self.head, &self.body]
    }

    /// The encoding as one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        [&self.head[..], &self.body[..]].concat()
    }
}

/// A Rust value that Python ProxyStore can read: `Vec<u8>` as `bytes`,
/// `String` as `str`, `Vec<T>` of another [`Element`] as a 1-D NumPy
/// array, [`NdArray`] as an n-D one.
pub trait ToPython {
    /// The value in Python ProxyStore's format.
    fn to_python(&self) -> PyEncoded<'_>;
}

impl ToPython for String {
    fn to_python(&self) -> PyEncoded<'_> {
        PyEncoded {
            head: b"US\n".to_vec(),
            body: Cow::Borrowed(self.as_bytes()),
        }
    }
}

impl<T: Element> ToPython for Vec<T> {
    fn to_python(&self) -> PyEncoded<'_> {
        if let Some(bytes) = (self as &dyn Any).downcast_ref::<Vec<u8>>() {
            return PyEncoded {
                head: b"BS\n".to_vec(),
                body: Cow::Borrowed(bytes),
            };
        }
        numpy(self, Order::C, &[self.len()])
    }
}

impl<T: Element> ToPython for NdArray<T> {
    fn to_python(&self) -> PyEncoded<'_> {
        numpy(self.data(), self.order(), self.shape())
    }
}

fn numpy<'a, T: Element>(data: &'a [T], order: Order, shape: &[usize]) -> PyEncoded<'a> {
    let mut head = b"NP\n".to_vec();
    head.extend(npy::write_header(T::DTYPE, order, shape, 3));
    PyEncoded {
        head,
        body: npy::body_bytes(data),
    }
}

/// Decodes an object in Python ProxyStore's `format` (its id line already
/// read) as a `T`; `remaining` is the number of bytes left, when known.
pub(crate) fn decode<T: 'static>(
    format: Format,
    reader: &mut dyn Read,
    remaining: Option<u64>,
) -> Result<T, DecodeFailure> {
    let fail = |reason: String| DecodeFailure {
        found: format!("python {}", format.describe()),
        reason,
    };
    let wanted = std::any::type_name::<T>();
    match format {
        Format::Pickle | Format::CloudPickle | Format::Pandas => {
            return Err(fail(format!(
                "python ProxyStore pickled this object, and pickles are never run here; store \
                 it from python as bytes, a str or a numpy array of numbers or booleans, or \
                 pass its configuration and key as JSON instead of a `{wanted}`"
            )))
        }
        Format::Polars => {
            return Err(fail(
                "polars DataFrames (Arrow IPC) are not supported; store the columns as numpy \
                 arrays"
                    .into(),
            ))
        }
        Format::Bytes | Format::Str | Format::Numpy => {}
    }
    let id = TypeId::of::<T>();
    let done = |value: Box<dyn Any>| Ok(*value.downcast::<T>().expect("checked type"));
    if id == TypeId::of::<String>() && format == Format::Str {
        let bytes = read_rest(reader, remaining).map_err(fail)?;
        let text = String::from_utf8(bytes).map_err(|e| fail(format!("invalid utf-8: {e}")))?;
        return done(Box::new(text));
    }
    if id == TypeId::of::<Vec<u8>>() && format == Format::Bytes {
        return done(Box::new(read_rest(reader, remaining).map_err(fail)?));
    }
    if format == Format::Numpy {
        let (header, taken) = npy::read_header(reader, remaining).map_err(&fail)?;
        let rest = remaining.map(|r| r - taken);
        macro_rules! arrays {
            ($($e:ty),*) => {$(
                if id == TypeId::of::<Vec<$e>>() {
                    if header.shape.len() != 1 {
                        return Err(fail(format!(
                            "the array has shape {:?}; read arrays that are not 1-D as NdArray",
                            header.shape
                        )));
                    }
                    return done(Box::new(npy::read_body::<$e>(&header, reader, rest).map_err(fail)?));
                }
                if id == TypeId::of::<NdArray<$e>>() {
                    let data = npy::read_body::<$e>(&header, reader, rest).map_err(&fail)?;
                    let array = NdArray::new(header.shape.clone(), header.order, data)
                        .map_err(|e| fail(e.to_string()))?;
                    return done(Box::new(array));
                }
            )*};
        }
        arrays!(bool, u8, i8, u16, i16, u32, i32, u64, i64, f32, f64);
    }
    Err(fail(format!(
        "it cannot be read as `{wanted}`: python bytes read as Vec<u8>, str as String, numpy \
         arrays as Vec<T> (1-D) or NdArray<T> of their element type"
    )))
}

/// The rest of an object, in one allocation when its length is known.
fn read_rest(reader: &mut dyn Read, remaining: Option<u64>) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    if let Some(len) = remaining {
        out.reserve_exact(usize::try_from(len).map_err(|_| "object too large")?);
    }
    reader
        .read_to_end(&mut out)
        .map_err(|e| format!("reading the object failed: {e}"))?;
    Ok(out)
}

/// Decodes a whole object in Python ProxyStore's format as a `T`.
///
/// ```
/// use proxystore::python::{deserialize, ToPython};
///
/// let bytes = vec![1.5f64, 2.5].to_python().to_vec();
/// assert!(bytes.starts_with(b"NP\n\x93NUMPY"));
/// assert_eq!(deserialize::<Vec<f64>>(&bytes)?, [1.5, 2.5]);
/// assert!(deserialize::<String>(b"PK\n\x80\x05N.").is_err());   // pickles are refused
/// # Ok::<(), proxystore::Error>(())
/// ```
pub fn deserialize<T: 'static>(bytes: &[u8]) -> crate::Result<T> {
    let format = Format::sniff(bytes).ok_or_else(|| crate::Error::Python {
        reason: "the bytes do not start with a python ProxyStore serializer id (such as `NP\\n`)"
            .into(),
    })?;
    let mut rest = &bytes[3..];
    let len = rest.len() as u64;
    decode::<T>(format, &mut rest, Some(len)).map_err(|f| crate::Error::Python {
        reason: format!("{}: {}", f.found, f.reason),
    })
}
