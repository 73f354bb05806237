//! A nesting limit for encoding, matching what decoding can read back.
//!
//! Serializing is recursive: a value nested 100,000 levels deep (a linked
//! list, say) overflows the stack and aborts the process instead of failing.
//! And the decoder refuses anything nested deeper than [`MAX_DEPTH`] levels,
//! so such an object could never be read anyway. [`Nested`] wraps the
//! serializer and counts levels as the decoder does, refusing the value
//! with an error before either happens.

use std::fmt;

use serde::ser::{self, Serialize, Serializer};

/// How deeply a CBOR value may nest: arrays, maps and enum variants each
/// count one level (a tuple or struct variant two: the variant and its
/// fields). This is `ciborium`'s decoding limit.
pub const MAX_DEPTH: usize = 256;

/// How many serializer calls may be open at once, containers or not
/// (newtypes and `Some` nest without adding to the encoding's depth). This
/// bounds the stack used by encoding (and by decoding, which counts the
/// same way).
pub(super) const MAX_NESTING: usize = 4 * MAX_DEPTH;

/// Where a serializer call sits: CBOR levels and recursive calls around it.
#[derive(Clone, Copy, Default)]
struct Level {
    depth: usize,
    nesting: usize,
}

impl Level {
    /// The level inside a call that opens `levels` CBOR levels.
    fn enter<E: ser::Error>(self, levels: usize) -> Result<Level, E> {
        let next = Level {
            depth: self.depth + levels,
            nesting: self.nesting + 1,
        };
        if next.depth > MAX_DEPTH {
            return Err(E::custom(format_args!(
                "the value is nested deeper than {MAX_DEPTH} levels (arrays, maps, enum \
                 variants), which could not be decoded again; store a flatter structure (a \
                 linked list as a Vec, a tree as a list of nodes)"
            )));
        }
        if next.nesting > MAX_NESTING {
            return Err(E::custom(format_args!(
                "the value is nested deeper than {MAX_NESTING} serializer calls; store a \
                 flatter structure"
            )));
        }
        Ok(next)
    }
}

/// A value serialized with the nesting limit.
pub(super) struct Nested<'a, T: ?Sized> {
    value: &'a T,
    level: Level,
}

impl<'a, T: ?Sized> Nested<'a, T> {
    /// The root of a value to encode.
    pub(super) fn root(value: &'a T) -> Self {
        Nested {
            value,
            level: Level::default(),
        }
    }
}

impl<T: Serialize + ?Sized> Serialize for Nested<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(Guard {
            inner: serializer,
            level: self.level,
        })
    }
}

struct Guard<S> {
    inner: S,
    level: Level,
}

/// A compound being serialized, whose members nest one level further.
struct Compound<C> {
    inner: C,
    level: Level,
}

impl<C> Compound<C> {
    fn member<'a, T: ?Sized>(&self, value: &'a T) -> Nested<'a, T> {
        Nested {
            value,
            level: self.level,
        }
    }
}

macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(fn $method(self, $($arg: $ty),*) -> Result<S::Ok, S::Error> {
            self.inner.$method($($arg),*)
        })*
    };
}

impl<S: Serializer> Serializer for Guard<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Compound<S::SerializeSeq>;
    type SerializeTuple = Compound<S::SerializeTuple>;
    type SerializeTupleStruct = Compound<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Compound<S::SerializeTupleVariant>;
    type SerializeMap = Compound<S::SerializeMap>;
    type SerializeStruct = Compound<S::SerializeStruct>;
    type SerializeStructVariant = Compound<S::SerializeStructVariant>;

    forward! {
        serialize_bool(v: bool);
        serialize_i8(v: i8);
        serialize_i16(v: i16);
        serialize_i32(v: i32);
        serialize_i64(v: i64);
        serialize_i128(v: i128);
        serialize_u8(v: u8);
        serialize_u16(v: u16);
        serialize_u32(v: u32);
        serialize_u64(v: u64);
        serialize_u128(v: u128);
        serialize_f32(v: f32);
        serialize_f64(v: f64);
        serialize_char(v: char);
        serialize_str(v: &str);
        serialize_bytes(v: &[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(name: &'static str);
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        // The decoder enters the enum as a level, even for a unit variant.
        self.level.enter::<S::Error>(1)?;
        self.inner.serialize_unit_variant(name, index, variant)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        let level = self.level.enter(0)?;
        self.inner.serialize_some(&Nested { value, level })
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        let level = self.level.enter(0)?;
        self.inner
            .serialize_newtype_struct(name, &Nested { value, level })
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        let level = self.level.enter(1)?;
        self.inner
            .serialize_newtype_variant(name, index, variant, &Nested { value, level })
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        let level = self.level.enter(1)?;
        let inner = self.inner.serialize_seq(len)?;
        Ok(Compound { inner, level })
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        let level = self.level.enter(1)?;
        let inner = self.inner.serialize_tuple(len)?;
        Ok(Compound { inner, level })
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        let level = self.level.enter(1)?;
        let inner = self.inner.serialize_tuple_struct(name, len)?;
        Ok(Compound { inner, level })
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        // ciborium writes its own tagged values (`Value::Tag`, `tag::*`)
        // as this variant: a CBOR tag, one level where the decoder reads it.
        let tagged = (name, variant) == ("@@TAG@@", "@@TAGGED@@");
        let level = self.level.enter(if tagged { 1 } else { 2 })?;
        let inner = self
            .inner
            .serialize_tuple_variant(name, index, variant, len)?;
        Ok(Compound { inner, level })
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        let level = self.level.enter(1)?;
        let inner = self.inner.serialize_map(len)?;
        Ok(Compound { inner, level })
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        let level = self.level.enter(1)?;
        let inner = self.inner.serialize_struct(name, len)?;
        Ok(Compound { inner, level })
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        let level = self.level.enter(2)?;
        let inner = self
            .inner
            .serialize_struct_variant(name, index, variant, len)?;
        Ok(Compound { inner, level })
    }

    fn collect_str<T: fmt::Display + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.inner.collect_str(value)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

impl<C: ser::SerializeSeq> ser::SerializeSeq for Compound<C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.inner.serialize_element(&self.member(value))
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeTuple> ser::SerializeTuple for Compound<C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.inner.serialize_element(&self.member(value))
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeTupleStruct> ser::SerializeTupleStruct for Compound<C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.inner.serialize_field(&self.member(value))
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeTupleVariant> ser::SerializeTupleVariant for Compound<C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.inner.serialize_field(&self.member(value))
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeMap> ser::SerializeMap for Compound<C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), C::Error> {
        self.inner.serialize_key(&self.member(key))
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.inner.serialize_value(&self.member(value))
    }

    fn serialize_entry<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &mut self,
        key: &K,
        value: &V,
    ) -> Result<(), C::Error> {
        self.inner
            .serialize_entry(&self.member(key), &self.member(value))
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeStruct> ser::SerializeStruct for Compound<C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), C::Error> {
        self.inner.serialize_field(key, &self.member(value))
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
        self.inner.skip_field(key)
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

impl<C: ser::SerializeStructVariant> ser::SerializeStructVariant for Compound<C> {
    type Ok = C::Ok;
    type Error = C::Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), C::Error> {
        self.inner.serialize_field(key, &self.member(value))
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
        self.inner.skip_field(key)
    }

    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}
