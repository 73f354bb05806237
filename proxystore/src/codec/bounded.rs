//! Guards for decoding CBOR from outside, around `ciborium`'s deserializer.
//!
//! `ciborium` limits arrays, maps and enums to [`MAX_DEPTH`](super::MAX_DEPTH)
//! levels, but two things remain in the hands of the input:
//!
//! - the length a CBOR head announces reaches the decoded type as
//!   `size_hint`; serde's own collections cap what they preallocate from it,
//!   a hand-written `Deserialize` with `Vec::with_capacity(hint)` does not.
//!   Here hints are capped by what the body can hold (every item takes at
//!   least a byte) and by [`MAX_HINT`];
//! - `Option`s and newtypes nest without a CBOR level: a type such as
//!   `struct Chain(Option<Box<Chain>>)` recurses on a single byte until the
//!   stack overflows. Here every nested deserializer call counts, up to the
//!   limit encoding has too.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, Visitor};

use super::depth::MAX_NESTING;

/// The largest number of items a decoded type is told to expect, however
/// many a CBOR head announces: a preallocation it makes from the hint stays
/// bounded, and an honest larger collection just grows.
pub(super) const MAX_HINT: usize = 1 << 16;

thread_local! {
    /// The size hint cap of the decoding under way on this thread.
    static HINT_CAP: Cell<usize> = const { Cell::new(0) };
}

/// Decodes a `T` from a body of `body_len` bytes, with the guards.
pub(super) fn decode<T: DeserializeOwned, R: std::io::Read>(
    reader: R,
    body_len: u64,
) -> Result<T, ciborium::de::Error<std::io::Error>> {
    let cap = usize::try_from(body_len).map_or(MAX_HINT, |len| len.min(MAX_HINT));
    // ciborium's deserializer cannot be built outside ciborium, so the
    // guard is entered through the root type, which reads the cap here.
    let previous = HINT_CAP.replace(cap);
    let result = super::cbor_from_reader::<Root<T>, _>(reader).map(|root| root.0);
    HINT_CAP.set(previous);
    result
}

struct Root<T>(T);

impl<'de, T: de::Deserialize<'de>> de::Deserialize<'de> for Root<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let limits = Limits {
            nesting: 0,
            max_hint: HINT_CAP.get(),
        };
        T::deserialize(Guard {
            inner: deserializer,
            limits,
        })
        .map(Root)
    }
}

#[derive(Clone, Copy)]
struct Limits {
    nesting: usize,
    max_hint: usize,
}

impl Limits {
    fn enter<E: de::Error>(self) -> Result<Limits, E> {
        if self.nesting >= MAX_NESTING {
            return Err(E::custom(format_args!(
                "the value is nested deeper than {MAX_NESTING} deserializer calls (options, \
                 newtypes and containers), more than the decoder reads"
            )));
        }
        Ok(Limits {
            nesting: self.nesting + 1,
            ..self
        })
    }

    fn hint(self, hint: Option<usize>) -> Option<usize> {
        hint.map(|h| h.min(self.max_hint))
    }
}

/// A deserializer whose every call counts one level and whose visitors are
/// guarded in turn.
struct Guard<D> {
    inner: D,
    limits: Limits,
}

macro_rules! calls {
    // Calls that may nest (as the encoder counts them): one level each.
    (nesting: $($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(fn $method<V: Visitor<'de>>(
            self,
            $($arg: $ty,)*
            visitor: V,
        ) -> Result<V::Value, D::Error> {
            let limits = self.limits.enter::<D::Error>()?;
            self.inner.$method($($arg,)* Guarded { inner: visitor, limits })
        })*
    };
    // Leaves: no level of their own, but the visitor stays guarded (CBOR
    // may still hand it an array).
    (leaves: $($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(fn $method<V: Visitor<'de>>(
            self,
            $($arg: $ty,)*
            visitor: V,
        ) -> Result<V::Value, D::Error> {
            self.inner.$method($($arg,)* Guarded { inner: visitor, limits: self.limits })
        })*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Guard<D> {
    type Error = D::Error;

    calls! { nesting:
        deserialize_any();
        deserialize_option();
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_ignored_any();
    }

    calls! { leaves:
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_identifier();
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// A visitor that guards what it is handed to go deeper.
struct Guarded<V> {
    inner: V,
    limits: Limits,
}

macro_rules! forward_visits {
    ($($method:ident($ty:ty);)*) => {
        $(fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method(v)
        })*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Guarded<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visits! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
        visit_f32(f32);
        visit_f64(f64);
        visit_char(char);
        visit_str(&str);
        visit_borrowed_str(&'de str);
        visit_string(String);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        self.inner.visit_some(Guard {
            inner: deserializer,
            limits: self.limits,
        })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<V::Value, D::Error> {
        self.inner.visit_newtype_struct(Guard {
            inner: deserializer,
            limits: self.limits,
        })
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.inner.visit_seq(Guarded {
            inner: seq,
            limits: self.limits,
        })
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(Guarded {
            inner: map,
            limits: self.limits,
        })
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner.visit_enum(Guarded {
            inner: data,
            limits: self.limits,
        })
    }
}

/// A seed whose deserializer is guarded.
struct Seed<S> {
    inner: S,
    limits: Limits,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Guard {
            inner: deserializer,
            limits: self.limits,
        })
    }
}

impl<V> Guarded<V> {
    fn seed<S>(&self, inner: S) -> Seed<S> {
        Seed {
            inner,
            limits: self.limits,
        }
    }
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for Guarded<A> {
    type Error = A::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        let seed = self.seed(seed);
        self.inner.next_element_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.limits.hint(self.inner.size_hint())
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for Guarded<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let seed = self.seed(seed);
        self.inner.next_key_seed(seed)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        let seed = self.seed(seed);
        self.inner.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.limits.hint(self.inner.size_hint())
    }
}

impl<'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for Guarded<A> {
    type Error = A::Error;
    type Variant = Guarded<A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let limits = self.limits;
        let (value, variant) = self.inner.variant_seed(Seed {
            inner: seed,
            limits,
        })?;
        Ok((
            value,
            Guarded {
                inner: variant,
                limits,
            },
        ))
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for Guarded<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, A::Error> {
        let seed = self.seed(seed);
        self.inner.newtype_variant_seed(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.inner.tuple_variant(
            len,
            Guarded {
                inner: visitor,
                limits: self.limits,
            },
        )
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.inner.struct_variant(
            fields,
            Guarded {
                inner: visitor,
                limits: self.limits,
            },
        )
    }
}
