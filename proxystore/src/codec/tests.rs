//! Round trips, and what hostile or corrupt inputs get.

use std::any::type_name;
use std::collections::HashMap;

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

/// An object with a hand-made header: `format`, the type name of `T` and
/// an announced body length that need not match `body`.
fn object<T>(format: Format, announced: u64, body: &[u8]) -> Vec<u8> {
    let name = type_name::<T>();
    let mut out = MAGIC.to_vec();
    out.push(format as u8);
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&announced.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Decodes through a plain reader, whose length the decoder cannot know.
fn decode_stream<T: DeserializeOwned + 'static>(bytes: &[u8]) -> Result<T, DecodeFailure> {
    decode(&mut &bytes[..])
}

#[test]
fn a_huge_announced_raw_body_is_an_error_not_an_allocation() {
    const HUGE: u64 = 1 << 62;
    let f64s = object::<Vec<f64>>(Format::F64, HUGE, &[0u8; 64]);
    let bytes = object::<Vec<u8>>(Format::U8, HUGE, b"some bytes");
    let text = object::<String>(Format::Utf8, HUGE, b"some text");
    for err in [
        decode_slice::<Vec<f64>>(&f64s).unwrap_err(),
        decode_slice::<Vec<u8>>(&bytes).unwrap_err(),
        decode_slice::<String>(&text).unwrap_err(),
    ] {
        assert!(err.reason.contains("announces a body of"), "{err:?}");
    }
    for err in [
        decode_stream::<Vec<f64>>(&f64s).unwrap_err(),
        decode_stream::<Vec<u8>>(&bytes).unwrap_err(),
        decode_stream::<String>(&text).unwrap_err(),
    ] {
        assert!(err.reason.contains("shorter than"), "{err:?}");
    }
    let most = object::<Vec<u64>>(Format::U64, u64::MAX - 7, &[]);
    assert!(decode_stream::<Vec<u64>>(&most).is_err());
    assert!(decode_slice::<Vec<u64>>(&most).is_err());
}

#[test]
fn a_large_honest_body_grows_past_the_first_step_from_a_stream() {
    // More than the first allocation step, read from a reader of unknown length.
    let values: Vec<u32> = (0..(20u32 << 20)).collect();
    let bytes = encode(&values).unwrap().to_vec();
    assert_eq!(decode_stream::<Vec<u32>>(&bytes).unwrap(), values);
    let err = decode_stream::<Vec<u32>>(&bytes[..bytes.len() - 4]).unwrap_err();
    assert!(err.reason.contains("shorter than"), "{err:?}");
}

#[test]
fn cbor_announcing_huge_strings_arrays_and_maps_fails_without_preallocating() {
    // Definite lengths of 2^62 for a byte string, a text string, an array
    // and a map, followed by a few bytes only.
    let mut heads = Vec::new();
    for major in [0x5bu8, 0x7b, 0x9b, 0xbb] {
        let mut body = vec![major];
        body.extend_from_slice(&(1u64 << 62).to_be_bytes());
        body.extend_from_slice(&[0x01; 16]);
        heads.push(body);
    }
    for body in &heads {
        let len = body.len() as u64;
        macro_rules! refused {
            ($($ty:ty),*) => {$(
                let bytes = object::<$ty>(Format::Cbor, len, body);
                assert!(decode_slice::<$ty>(&bytes).is_err());
                assert!(decode_stream::<$ty>(&bytes).is_err());
            )*};
        }
        refused!(
            ciborium::Value,
            Vec<u8>,
            String,
            Vec<u64>,
            Vec<()>,
            Vec<Vec<u8>>,
            HashMap<u32, String>,
            (u8, Vec<u16>)
        );
    }
}

#[test]
fn the_stored_type_must_be_the_requested_one_unless_told_otherwise() {
    let bytes = encode(&Some(7u8)).unwrap().to_vec();
    let err = decode_slice::<u64>(&bytes).unwrap_err();
    assert_eq!(err.found, "core::option::Option<u8>");
    assert!(
        err.reason.contains("`core::option::Option<u8>`") && err.reason.contains("`u64`"),
        "{err:?}"
    );
    let err = decode_stream::<u64>(&bytes).unwrap_err();
    assert!(err.reason.contains("stored as"), "{err:?}");
    let relaxed = DecodeOptions::new().check_type(false);
    assert_eq!(decode_slice_with::<u64>(&bytes, relaxed).unwrap(), 7);
    assert_eq!(decode_with::<u64>(&mut &bytes[..], relaxed).unwrap(), 7);
    // Still refused when the bytes cannot be the requested type.
    assert!(decode_slice_with::<String>(&bytes, relaxed).is_err());
    // The same type round trips, fast path or not.
    assert_eq!(decode_slice::<Option<u8>>(&bytes).unwrap(), Some(7));
}

/// A value nested `levels` arrays deep.
fn nested(levels: usize) -> ciborium::Value {
    let mut value = ciborium::Value::Integer(1.into());
    for _ in 0..levels {
        value = ciborium::Value::Array(vec![value]);
    }
    value
}

#[test]
fn nesting_beyond_the_decoders_limit_is_named_as_such() {
    let mut body = vec![0x81u8; MAX_DEPTH + 44];
    body.push(0x01);
    let bytes = object::<ciborium::Value>(Format::Cbor, body.len() as u64, &body);
    let err = decode_slice::<ciborium::Value>(&bytes).unwrap_err();
    assert!(
        err.reason.contains("nested deeper than 256 levels"),
        "{err:?}"
    );
}

#[test]
fn values_nested_as_deep_as_the_decoder_reads_round_trip_and_deeper_ones_are_refused() {
    round_trip(nested(MAX_DEPTH));
    let err = encode(&nested(MAX_DEPTH + 1)).unwrap_err();
    assert!(matches!(err, Error::Encode { .. }), "{err:?}");
    assert!(
        err.to_string().contains("nested deeper than 256 levels"),
        "{err}"
    );
    // Tags too: one level each.
    let tagged = (0..MAX_DEPTH).fold(ciborium::Value::Null, |v, t| {
        ciborium::Value::Tag(t as u64 + 100, Box::new(v))
    });
    round_trip(tagged);
    // Enum variants count as the decoder counts them.
    round_trip(List::of(MAX_DEPTH / 2 - 1));
    assert!(encode(&List::of(MAX_DEPTH / 2)).is_err());
    // ... which is where the decoder stops.
    let mut raw = Vec::new();
    ciborium::into_writer(&List::of(MAX_DEPTH / 2), &mut raw).unwrap();
    let err = ciborium::from_reader::<List, _>(&raw[..]).unwrap_err();
    assert!(matches!(err, ciborium::de::Error::RecursionLimitExceeded));
}

/// A linked list: serializing one is as deep as it is long.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
enum List {
    Cons(u8, Box<List>),
    Nil,
}

impl List {
    fn of(len: usize) -> List {
        (0..len).fold(List::Nil, |tail, i| List::Cons(i as u8, Box::new(tail)))
    }
}

impl Drop for List {
    // Iterative, so that dropping a long list does not overflow the stack.
    fn drop(&mut self) {
        let mut next = match self {
            List::Cons(_, tail) => std::mem::replace(&mut **tail, List::Nil),
            List::Nil => return,
        };
        while let List::Cons(_, tail) = &mut next {
            next = std::mem::replace(&mut **tail, List::Nil);
        }
    }
}

#[test]
fn encoding_a_very_deep_value_is_an_error_not_a_stack_overflow() {
    let list = List::of(100_000);
    let err = encode(&list).unwrap_err();
    assert!(err.to_string().contains("nested deeper than"), "{err}");
    let vecs = (0..100_000).fold(ciborium::Value::Null, |v, _| {
        ciborium::Value::Array(vec![v])
    });
    assert!(encode(&vecs).is_err());
    std::mem::forget(vecs); // its recursive drop is not what is tested here
}

/// Nests through `Option` and a newtype only: no CBOR level at all.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Chain(Option<Box<Chain>>);

impl Chain {
    fn of(len: usize) -> Chain {
        (0..len).fold(Chain(None), |tail, _| Chain(Some(Box::new(tail))))
    }
}

#[test]
fn nesting_without_cbor_levels_is_bounded_on_both_sides() {
    // One byte that a `Chain` reads as `Some(Chain(Some(...)))` forever.
    let bytes = object::<Chain>(Format::Cbor, 1, &[0x01]);
    for err in [
        decode_slice::<Chain>(&bytes).unwrap_err(),
        decode_stream::<Chain>(&bytes).unwrap_err(),
    ] {
        assert!(err.reason.contains("nested deeper than 1024"), "{err:?}");
    }
    // Encoding counts the same calls. (A `Chain` is `null` in CBOR, however
    // deep: decoding one back is shallow.)
    assert!(encode(&Chain::of(511)).is_ok());
    let err = encode(&Chain::of(512)).unwrap_err();
    assert!(err.to_string().contains("nested deeper than 1024"), "{err}");
}

/// Preallocates whatever its input announces, as some hand-written
/// `Deserialize` impls do.
#[derive(Debug, PartialEq, serde::Serialize)]
struct Greedy(Vec<u8>);

impl<'de> serde::Deserialize<'de> for Greedy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Greedy;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Greedy, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(Greedy(out))
            }
        }
        d.deserialize_seq(Visitor)
    }
}

#[test]
fn size_hints_are_capped_by_what_the_body_can_hold() {
    round_trip(Greedy(vec![1, 2, 3]));
    let mut body = vec![0x9bu8];
    body.extend_from_slice(&(1u64 << 62).to_be_bytes());
    body.extend_from_slice(&[0x01; 4]);
    let bytes = object::<Greedy>(Format::Cbor, body.len() as u64, &body);
    assert!(decode_slice::<Greedy>(&bytes).is_err());
    assert!(decode_stream::<Greedy>(&bytes).is_err());
}
