//! NumPy's `.npy` format (NEP 1), as `numpy.save` writes it and Python
//! ProxyStore stores arrays (serializer id `NP`).
//!
//! Reading trusts nothing: the header is a Python dict literal that is
//! parsed (never evaluated) with a fixed grammar, its length is capped, the
//! element count is computed with checked arithmetic, and the body is
//! allocated only once the input is known to hold exactly that many bytes
//! (otherwise it grows as bytes arrive).

use std::io::Read;

use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// numpy itself refuses headers over 10,000 bytes by default; a little
/// more room costs nothing and still bounds what a hostile file can ask.
const MAX_HEADER: usize = 64 << 10;
/// What is allocated for a body of unknown length before it arrives.
const STEP: usize = if cfg!(fuzzing) { 64 << 10 } else { 16 << 20 };

/// Memory order of an n-dimensional array's elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Order {
    /// Row-major: the last index varies fastest (NumPy's default).
    C,
    /// Column-major: the first index varies fastest.
    Fortran,
}

/// An n-dimensional array as NumPy stores it: a shape, a memory order and
/// the elements in that order.
///
/// ```
/// use proxystore::python::{NdArray, Order};
///
/// let a = NdArray::new(vec![2, 3], Order::Fortran, vec![1i32, 4, 2, 5, 3, 6])?;
/// assert_eq!(a.get(&[0, 1]), Some(&2));      // row 0, column 1
/// assert_eq!(a.get(&[1, 2]), Some(&6));
/// # Ok::<(), proxystore::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NdArray<T> {
    shape: Vec<usize>,
    order: Order,
    data: Vec<T>,
}

impl<T> NdArray<T> {
    /// An array of `shape` whose elements are `data` in `order`; the
    /// element count must be the product of the shape.
    pub fn new(shape: Vec<usize>, order: Order, data: Vec<T>) -> crate::Result<Self> {
        match element_count(&shape) {
            Some(n) if n == data.len() => Ok(NdArray { shape, order, data }),
            _ => Err(crate::Error::Python {
                reason: format!(
                    "an array of shape {shape:?} cannot hold {} elements; give as many \
                     elements as the shape's product",
                    data.len()
                ),
            }),
        }
    }

    /// The length of each dimension (empty for a 0-dimensional array).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The memory order of [`data`](NdArray::data).
    pub fn order(&self) -> Order {
        self.order
    }

    /// The elements, in [`order`](NdArray::order).
    pub fn data(&self) -> &[T] {
        &self.data
    }

    /// The elements, in [`order`](NdArray::order).
    pub fn into_data(self) -> Vec<T> {
        self.data
    }

    /// The element at `index` (one coordinate per dimension).
    pub fn get(&self, index: &[usize]) -> Option<&T> {
        if index.len() != self.shape.len() || index.iter().zip(&self.shape).any(|(i, n)| i >= n) {
            return None;
        }
        let mut offset = 0;
        let mut stride = 1;
        let mut step = |i: usize, n: usize| {
            offset += i * stride;
            stride *= n;
        };
        match self.order {
            Order::C => index
                .iter()
                .zip(&self.shape)
                .rev()
                .for_each(|(&i, &n)| step(i, n)),
            Order::Fortran => index
                .iter()
                .zip(&self.shape)
                .for_each(|(&i, &n)| step(i, n)),
        }
        self.data.get(offset)
    }
}

fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// NumPy's element kinds that this crate reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// `bool` (`|b1`).
    Bool,
    /// `uint8` (`|u1`).
    U8,
    /// `int8` (`|i1`).
    I8,
    /// `uint16`.
    U16,
    /// `int16`.
    I16,
    /// `uint32`.
    U32,
    /// `int32`.
    I32,
    /// `uint64`.
    U64,
    /// `int64`.
    I64,
    /// `float32`.
    F32,
    /// `float64`.
    F64,
}

impl Dtype {
    fn code(self) -> (&'static str, usize) {
        match self {
            Dtype::Bool => ("b", 1),
            Dtype::U8 => ("u", 1),
            Dtype::I8 => ("i", 1),
            Dtype::U16 => ("u", 2),
            Dtype::I16 => ("i", 2),
            Dtype::U32 => ("u", 4),
            Dtype::I32 => ("i", 4),
            Dtype::U64 => ("u", 8),
            Dtype::I64 => ("i", 8),
            Dtype::F32 => ("f", 4),
            Dtype::F64 => ("f", 8),
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        self.code().1
    }

    /// The `descr` numpy writes for this kind in little-endian order.
    fn descr(self) -> String {
        let (kind, size) = self.code();
        let order = if size == 1 { '|' } else { '<' };
        format!("{order}{kind}{size}")
    }

    /// Parses a `descr` such as `<f8`, `>i4` or `|b1`; returns the kind and
    /// whether it is big-endian.
    fn parse(descr: &str) -> Option<(Dtype, bool)> {
        let (order, rest) = descr.split_at_checked(1)?;
        let big = match order {
            "<" | "|" => false,
            ">" => true,
            "=" => cfg!(target_endian = "big"),
            _ => return None,
        };
        let dtype = match rest {
            "b1" | "?" => Dtype::Bool,
            "u1" => Dtype::U8,
            "i1" => Dtype::I8,
            "u2" => Dtype::U16,
            "i2" => Dtype::I16,
            "u4" => Dtype::U32,
            "i4" => Dtype::I32,
            "u8" => Dtype::U64,
            "i8" => Dtype::I64,
            "f4" => Dtype::F32,
            "f8" => Dtype::F64,
            _ => return None,
        };
        Some((dtype, big))
    }
}

/// A numeric element type of `.npy` arrays.
pub trait Element: Copy + Send + Sync + 'static + private::Sealed {
    /// The matching NumPy kind.
    const DTYPE: Dtype;
}

mod private {
    use std::borrow::Cow;

    pub trait Sealed: Sized {
        /// What the elements are read as: themselves, or bytes for `bool`
        /// (whose invalid bytes must be checked before they are `bool`s).
        type Raw: bytemuck::Pod;
        /// The elements, from their raw buffer (no copy but for `bool`).
        fn from_raw(raw: Vec<Self::Raw>) -> Result<Vec<Self>, String>;
        /// The elements' little-endian bytes, borrowed where possible.
        fn to_bytes(data: &[Self]) -> Cow<'_, [u8]>;
        /// Reverses the byte order of one raw element.
        fn swap(raw: &mut Self::Raw);
    }
}

macro_rules! elements {
    ($($ty:ty => $dtype:ident),* $(,)?) => {$(
        impl private::Sealed for $ty {
            type Raw = $ty;
            fn from_raw(raw: Vec<Self>) -> Result<Vec<Self>, String> {
                Ok(raw)
            }
            fn to_bytes(data: &[Self]) -> std::borrow::Cow<'_, [u8]> {
                if cfg!(target_endian = "little") {
                    std::borrow::Cow::Borrowed(bytemuck::cast_slice(data))
                } else {
                    data.iter().flat_map(|x| x.to_le_bytes()).collect()
                }
            }
            fn swap(raw: &mut Self) {
                let mut b = raw.to_ne_bytes();
                b.reverse();
                *raw = <$ty>::from_ne_bytes(b);
            }
        }
        impl Element for $ty {
            const DTYPE: Dtype = Dtype::$dtype;
        }
    )*};
}

elements!(u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32,
    u64 => U64, i64 => I64, f32 => F32, f64 => F64);

impl private::Sealed for bool {
    type Raw = u8;
    fn from_raw(raw: Vec<u8>) -> Result<Vec<Self>, String> {
        match raw.iter().position(|&b| b > 1) {
            Some(i) => Err(format!("element {i} of a bool array is neither 0 nor 1")),
            None => Ok(raw.into_iter().map(|b| b == 1).collect()),
        }
    }
    fn to_bytes(data: &[Self]) -> std::borrow::Cow<'_, [u8]> {
        data.iter().map(|&b| b as u8).collect()
    }
    fn swap(_: &mut u8) {}
}

impl Element for bool {
    const DTYPE: Dtype = Dtype::Bool;
}

/// A parsed `.npy` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) dtype: Dtype,
    pub(crate) big_endian: bool,
    pub(crate) order: Order,
    pub(crate) shape: Vec<usize>,
}

impl Header {
    /// Number of elements (checked when the header was parsed).
    fn len(&self) -> usize {
        element_count(&self.shape).unwrap_or(0)
    }
}

/// Reads a `.npy` header; `remaining` is the number of bytes the input
/// holds, when known. Returns the header and how many bytes it took.
pub(crate) fn read_header(
    reader: &mut dyn Read,
    remaining: Option<u64>,
) -> Result<(Header, u64), String> {
    let mut fixed = [0u8; 8];
    reader
        .read_exact(&mut fixed)
        .map_err(|e| format!("no .npy header ({e})"))?;
    if &fixed[..6] != MAGIC {
        return Err("the bytes do not start with numpy's .npy magic".into());
    }
    let (len, prefix) = match fixed[6] {
        1 => {
            let mut l = [0u8; 2];
            reader
                .read_exact(&mut l)
                .map_err(|e| format!("truncated .npy header ({e})"))?;
            (u16::from_le_bytes(l) as usize, 10)
        }
        2 | 3 => {
            let mut l = [0u8; 4];
            reader
                .read_exact(&mut l)
                .map_err(|e| format!("truncated .npy header ({e})"))?;
            (u32::from_le_bytes(l) as usize, 12)
        }
        v => {
            return Err(format!(
                ".npy format version {v}.{} is not supported",
                fixed[7]
            ))
        }
    };
    if len > MAX_HEADER {
        return Err(format!(
            "the .npy header claims {len} bytes, more than the {MAX_HEADER} allowed"
        ));
    }
    let taken = (prefix + len) as u64;
    if remaining.is_some_and(|r| r < taken) {
        return Err("the .npy header is longer than the object".into());
    }
    let mut text = vec![0u8; len];
    reader
        .read_exact(&mut text)
        .map_err(|e| format!("truncated .npy header ({e})"))?;
    let text = std::str::from_utf8(&text).map_err(|_| "the .npy header is not text")?;
    Ok((parse_dict(text)?, taken))
}

/// Parses `{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }`.
fn parse_dict(text: &str) -> Result<Header, String> {
    let mut p = Lexer {
        s: text.trim_end_matches(['\n', ' ', '\0']).as_bytes(),
        i: 0,
    };
    let (mut descr, mut order, mut shape) = (None, None, None);
    p.expect(b'{')?;
    loop {
        p.skip_ws();
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.expect(b':')?;
        match key.as_str() {
            "descr" => descr = Some(p.string()?),
            "fortran_order" => order = Some(p.boolean()?),
            "shape" => shape = Some(p.tuple()?),
            other => return Err(format!("unexpected key `{other}` in the .npy header")),
        }
        p.skip_ws();
        if !p.eat(b',') {
            p.expect(b'}')?;
            break;
        }
    }
    p.skip_ws();
    if p.i != p.s.len() {
        return Err("unexpected text after the .npy header's dict".into());
    }
    let descr = descr.ok_or("the .npy header has no `descr`")?;
    let (dtype, big_endian) = Dtype::parse(&descr).ok_or_else(|| {
        format!(
            "numpy dtype `{descr}` is not supported: store booleans, integers or floats \
             (numpy.bool_, (u)int8-64, float32/64) to share arrays with rust"
        )
    })?;
    let fortran = order.ok_or("the .npy header has no `fortran_order`")?;
    let shape = shape.ok_or("the .npy header has no `shape`")?;
    element_count(&shape)
        .and_then(|n| n.checked_mul(dtype.size()))
        .ok_or("the .npy shape's size overflows")?;
    Ok(Header {
        dtype,
        big_endian,
        order: if fortran { Order::Fortran } else { Order::C },
        shape,
    })
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn skip_ws(&mut self) {
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        self.skip_ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!(
                "invalid .npy header: expected `{}` at byte {}",
                c as char, self.i
            ))
        }
    }
    fn string(&mut self) -> Result<String, String> {
        self.skip_ws();
        let quote = match self.s.get(self.i) {
            Some(&q @ (b'\'' | b'"')) => q,
            _ => {
                return Err(format!(
                    "invalid .npy header: expected a string at byte {}",
                    self.i
                ))
            }
        };
        let start = self.i + 1;
        let end = self.s[start..]
            .iter()
            .position(|&c| c == quote || c == b'\\')
            .map(|n| start + n)
            .filter(|&e| self.s[e] == quote)
            .ok_or("invalid .npy header: unterminated or escaped string")?;
        self.i = end + 1;
        Ok(String::from_utf8_lossy(&self.s[start..end]).into_owned())
    }
    fn word(&mut self) -> &[u8] {
        self.skip_ws();
        let start = self.i;
        while self
            .s
            .get(self.i)
            .is_some_and(|c| c.is_ascii_alphanumeric())
        {
            self.i += 1;
        }
        &self.s[start..self.i]
    }
    fn boolean(&mut self) -> Result<bool, String> {
        match self.word() {
            b"True" => Ok(true),
            b"False" => Ok(false),
            _ => Err("invalid .npy header: `fortran_order` is not True or False".into()),
        }
    }
    fn tuple(&mut self) -> Result<Vec<usize>, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            if self.eat(b')') {
                return Ok(dims);
            }
            if dims.len() >= 64 {
                return Err("invalid .npy header: more than 64 dimensions".into());
            }
            let digits = String::from_utf8_lossy(self.word()).into_owned();
            let dim: usize = digits
                .strip_suffix('L')
                .unwrap_or(&digits)
                .parse()
                .map_err(|_| format!("invalid .npy header: `{digits}` is not a dimension"))?;
            dims.push(dim);
            if !self.eat(b',') {
                self.expect(b')')?;
                return Ok(dims);
            }
        }
    }
}

/// Reads the body of an array of `header` as `T` elements, in file order,
/// converted to this host's byte order. `remaining` is the number of bytes
/// the input holds after the header, when known: it must be exactly the
/// body's size, and only then is the body allocated at once.
pub(crate) fn read_body<T: Element>(
    header: &Header,
    reader: &mut dyn Read,
    remaining: Option<u64>,
) -> Result<Vec<T>, String> {
    if header.dtype != T::DTYPE {
        return Err(format!(
            "the array holds {:?} elements, not {:?}; read it as its own element type",
            header.dtype,
            T::DTYPE
        ));
    }
    let n = header.len();
    let bytes = (n as u64) * T::DTYPE.size() as u64;
    let mut raw: Vec<T::Raw> = match remaining {
        Some(r) if r != bytes => {
            return Err(format!(
                "the array's shape {:?} needs {bytes} bytes but {r} follow the header",
                header.shape
            ))
        }
        Some(_) => {
            let mut raw = vec![<T::Raw as bytemuck::Zeroable>::zeroed(); n];
            reader
                .read_exact(bytemuck::cast_slice_mut(&mut raw))
                .map_err(|e| format!("reading the array failed: {e}"))?;
            raw
        }
        None => read_stepped::<T::Raw>(n, reader)?,
    };
    if header.big_endian == cfg!(target_endian = "little") && T::DTYPE.size() > 1 {
        raw.iter_mut().for_each(T::swap);
    }
    if remaining.is_none() {
        let mut probe = [0u8; 1];
        if reader.read(&mut probe).map_err(|e| e.to_string())? != 0 {
            return Err("unexpected bytes after the array".into());
        }
    }
    T::from_raw(raw)
}

/// Reads `n` elements when the input's length is unknown: the buffer grows
/// in bounded steps as bytes arrive, never to what the header claims.
fn read_stepped<P: bytemuck::Pod>(n: usize, reader: &mut dyn Read) -> Result<Vec<P>, String> {
    let step = (STEP / std::mem::size_of::<P>()).max(1);
    let mut data: Vec<P> = Vec::new();
    while data.len() < n {
        let start = data.len();
        let take = (n - start).min(step.max(start));
        data.resize(start + take, P::zeroed());
        reader
            .read_exact(bytemuck::cast_slice_mut(&mut data[start..]))
            .map_err(|e| format!("reading the array failed: {e}; the object is truncated"))?;
    }
    Ok(data)
}

/// The `.npy` header (version 1.0) of an array, padded as numpy pads it so
/// that the body starts 64-byte aligned counted from `offset` bytes before
/// the header (the serializer id).
pub(crate) fn write_header(dtype: Dtype, order: Order, shape: &[usize], offset: usize) -> Vec<u8> {
    let dims = match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let fortran = if order == Order::Fortran {
        "True"
    } else {
        "False"
    };
    let mut dict = format!(
        "{{'descr': '{}', 'fortran_order': {fortran}, 'shape': {dims}, }}",
        dtype.descr()
    );
    let unpadded = offset + 10 + dict.len() + 1;
    dict.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    dict.push('\n');
    let mut out = Vec::with_capacity(10 + dict.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// The elements' bytes as stored (little-endian), borrowed where possible.
pub(crate) fn body_bytes<T: Element>(data: &[T]) -> std::borrow::Cow<'_, [u8]> {
    T::to_bytes(data)
}

#[cfg(test)]
mod tests;
