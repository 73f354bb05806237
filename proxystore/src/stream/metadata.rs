//! What travels with each object of a stream, for filters and consumers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Named values sent with an object: what producers and consumers filter
/// on (a step number, a source, a timestamp), like the metadata `dict` of
/// Python ProxyStore's streams.
///
/// ```
/// use proxystore::stream::{Metadata, Value};
///
/// let meta = Metadata::new().with("step", 42).with("source", "detector-3");
/// assert_eq!(meta.get("step").and_then(Value::as_i64), Some(42));
/// assert_eq!(meta.get("source").and_then(Value::as_str), Some("detector-3"));
/// assert!(meta.get("missing").is_none());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Metadata(BTreeMap<String, Value>);

impl Metadata {
    /// No metadata.
    pub fn new() -> Self {
        Metadata::default()
    }

    /// This metadata with `name` set to `value`.
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.insert(name, value);
        self
    }

    /// Sets `name` to `value`, returning the value it replaces.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Value>) -> Option<Value> {
        self.0.insert(name.into(), value.into())
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// Every name and value, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How many values there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds every value of `other`, replacing values of the same name (the
    /// union an aggregated object's metadata is made of).
    pub fn merge(&mut self, other: Metadata) {
        self.0.extend(other.0);
    }
}

impl<K: Into<String>, V: Into<Value>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Metadata(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum Value {
    /// No value.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// Text.
    Text(String),
    /// A list of values.
    List(Vec<Value>),
}

impl Value {
    /// The integer, if this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The number, if this is one (integers converted).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The text, if this is text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

macro_rules! value_from {
    ($($t:ty => $variant:ident as $as:ty),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::$variant(<$as>::from(v))
            }
        })*
    };
}

value_from! {
    bool => Bool as bool,
    i8 => Int as i64,
    i16 => Int as i64,
    i32 => Int as i64,
    i64 => Int as i64,
    u8 => Int as i64,
    u16 => Int as i64,
    u32 => Int as i64,
    f32 => Float as f64,
    f64 => Float as f64,
    String => Text as String,
    &str => Text as String,
}

impl From<usize> for Value {
    /// Saturates at `i64::MAX`.
    fn from(v: usize) -> Value {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl<V: Into<Value>> From<Vec<V>> for Value {
    fn from(v: Vec<V>) -> Value {
        Value::List(v.into_iter().map(Into::into).collect())
    }
}

impl<V: Into<Value>> From<Option<V>> for Value {
    fn from(v: Option<V>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_cbor() {
        let meta = Metadata::new()
            .with("i", -3)
            .with("f", 0.5)
            .with("b", true)
            .with("t", "text")
            .with("n", Option::<i64>::None)
            .with("l", vec![1, 2]);
        let mut bytes = Vec::new();
        ciborium::into_writer(&meta, &mut bytes).unwrap();
        let back: Metadata = ciborium::from_reader(&bytes[..]).unwrap();
        assert_eq!(back, meta);
        assert_eq!(back.get("f").and_then(Value::as_f64), Some(0.5));
        assert_eq!(back.get("i").and_then(Value::as_f64), Some(-3.0));
    }

    #[test]
    fn merge_is_a_union_where_later_values_win() {
        let mut a = Metadata::new().with("x", 1).with("y", 1);
        a.merge(Metadata::new().with("y", 2).with("z", 2));
        let names: Vec<_> = a.iter().map(|(k, v)| (k, v.as_i64().unwrap())).collect();
        assert_eq!(names, [("x", 1), ("y", 2), ("z", 2)]);
    }
}
