//! Reading JSON that someone else wrote (huggingface_hub's tree listings, signature bundles
//! and their statements) as strictly as the writer's own reader does. Two leniencies of
//! serde_json's derived structs make us accept files Python refuses (both found by the
//! fuzzers, `fuzz/regressions/`): `from_slice` skips the fields a struct does not use without
//! checking that they are UTF-8, and a derived struct also deserializes from a JSON array of
//! its fields in order. [`from_utf8_json`] checks the text first; [`Object`] wraps each
//! struct so that only a JSON object makes one. Pure.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// A `T` (a derived struct) read only from a JSON object, never from an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Object<T>(pub(crate) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = Object<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Object)
            }
        }

        deserializer.deserialize_map(ObjectVisitor(PhantomData))
    }
}

/// Why bytes are not the JSON a reader expects.
#[derive(Debug)]
pub(crate) enum JsonError {
    /// Not UTF-8 text.
    NotUtf8(std::str::Utf8Error),
    /// Not JSON of the expected shape.
    Json(serde_json::Error),
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::NotUtf8(e) => write!(f, "not UTF-8 text: {e}"),
            JsonError::Json(e) => write!(f, "{e}"),
        }
    }
}

/// Parses `bytes` as JSON text in UTF-8 (all of it, including fields `T` does not use).
pub(crate) fn from_utf8_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonError> {
    let text = std::str::from_utf8(bytes).map_err(JsonError::NotUtf8)?;
    serde_json::from_str(text).map_err(JsonError::Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Pair {
        a: u64,
        b: Option<Object<Inner>>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Inner {
        c: String,
    }

    #[test]
    fn structs_come_from_objects_only() {
        let parsed: Object<Pair> = from_utf8_json(br#"{"a": 1, "b": {"c": "x"}}"#).unwrap();
        assert_eq!(parsed.0.a, 1);
        assert_eq!(parsed.0.b.map(|b| b.0.c), Some("x".to_owned()));
        let absent: Object<Pair> = from_utf8_json(br#"{"a": 1, "b": null}"#).unwrap();
        assert!(absent.0.b.is_none());
        // Plain serde takes the array form; the wrapper does not, at any depth.
        assert!(serde_json::from_str::<Pair>(r#"[1, null]"#).is_ok());
        assert!(from_utf8_json::<Object<Pair>>(br#"[1, null]"#).is_err());
        assert!(from_utf8_json::<Object<Pair>>(br#"{"a": 1, "b": ["x"]}"#).is_err());
    }

    #[test]
    fn unused_fields_must_be_utf8_too() {
        let bytes = b"{\"a\": 1, \"unused\": \"\x92\"}";
        assert!(serde_json::from_slice::<Pair>(bytes).is_ok());
        let error = from_utf8_json::<Object<Pair>>(bytes).unwrap_err();
        assert!(error.to_string().contains("not UTF-8"), "{error}");
    }
}
