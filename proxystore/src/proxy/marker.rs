//! Recognizing a value that is itself a proxy, without knowing its type.
//!
//! Everything that serializes as a reference to a stored object ([`Proxy`],
//! [`RefProxy`], [`RefMutProxy`]) serializes its factory as a newtype struct
//! named [`MARKER`]. Self-describing formats (CBOR, JSON) write a newtype
//! struct as its content alone, so the bytes are those of the factory and
//! nothing else changes. [`is_proxy`] asks a value to serialize itself into
//! a serializer that accepts only that newtype struct and refuses anything
//! else at the first call, so it costs one call whatever the value is.
//!
//! [`Proxy`]: crate::Proxy
//! [`RefProxy`]: crate::RefProxy
//! [`RefMutProxy`]: crate::RefMutProxy

use std::fmt;

use serde::ser::{Impossible, Serialize, Serializer};

/// The newtype-struct name that proxies serialize under.
pub(crate) const MARKER: &str = "$proxystore::Proxy";

/// Whether `value` is a reference to a stored object (a proxy at the top
/// level; a container of proxies is not one).
pub(crate) fn is_proxy<T: Serialize + ?Sized>(value: &T) -> bool {
    value.serialize(Probe).is_ok()
}

struct Probe;

#[derive(Debug)]
struct NotAProxy;

impl fmt::Display for NotAProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a proxy")
    }
}

impl std::error::Error for NotAProxy {}

impl serde::ser::Error for NotAProxy {
    fn custom<M: fmt::Display>(_: M) -> Self {
        NotAProxy
    }
}

macro_rules! refuse {
    ($($method:ident($($arg:ty),*);)*) => {$(
        fn $method(self, $(_: $arg),*) -> Result<(), NotAProxy> {
            Err(NotAProxy)
        }
    )*};
}

impl Serializer for Probe {
    type Ok = ();
    type Error = NotAProxy;
    type SerializeSeq = Impossible<(), NotAProxy>;
    type SerializeTuple = Impossible<(), NotAProxy>;
    type SerializeTupleStruct = Impossible<(), NotAProxy>;
    type SerializeTupleVariant = Impossible<(), NotAProxy>;
    type SerializeMap = Impossible<(), NotAProxy>;
    type SerializeStruct = Impossible<(), NotAProxy>;
    type SerializeStructVariant = Impossible<(), NotAProxy>;

    fn serialize_newtype_struct<V: Serialize + ?Sized>(
        self,
        name: &'static str,
        _value: &V,
    ) -> Result<(), NotAProxy> {
        if name == MARKER {
            Ok(())
        } else {
            Err(NotAProxy)
        }
    }

    refuse! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_i128(i128);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_u128(u128);
        serialize_f32(f32);
        serialize_f64(f64);
        serialize_char(char);
        serialize_str(&str);
        serialize_bytes(&[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(&'static str);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_some<V: Serialize + ?Sized>(self, _: &V) -> Result<(), NotAProxy> {
        Err(NotAProxy)
    }

    fn serialize_newtype_variant<V: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &V,
    ) -> Result<(), NotAProxy> {
        Err(NotAProxy)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NotAProxy> {
        Err(NotAProxy)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NotAProxy> {
        Err(NotAProxy)
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, NotAProxy> {
        Err(NotAProxy)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, NotAProxy> {
        Err(NotAProxy)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, NotAProxy> {
        Err(NotAProxy)
    }

    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, NotAProxy> {
        Err(NotAProxy)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, NotAProxy> {
        Err(NotAProxy)
    }

    // Strings are refused before they are formatted.
    fn collect_str<V: fmt::Display + ?Sized>(self, _: &V) -> Result<(), NotAProxy> {
        Err(NotAProxy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Marked;

    impl Serialize for Marked {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_newtype_struct(MARKER, &1u8)
        }
    }

    #[derive(serde::Serialize)]
    struct Other(u8);

    #[test]
    fn only_the_marker_at_the_top_level_is_a_proxy() {
        assert!(is_proxy(&Marked));
        assert!(
            is_proxy(&Box::new(Marked)),
            "smart pointers are transparent"
        );
        assert!(!is_proxy(&Other(1)));
        assert!(!is_proxy(&Some(Marked)));
        assert!(!is_proxy(&vec![Marked]));
        assert!(!is_proxy(&(Marked,)));
        assert!(!is_proxy("text"));
        assert!(!is_proxy(&vec![0u8; 1 << 20]));
    }
}
