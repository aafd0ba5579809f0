//! JSON parsing that refuses duplicate object keys at any depth.
//!
//! `serde_json::Value` keeps the last of duplicate keys while other parsers
//! keep the first; refusing duplicates removes that ambiguity for token
//! payloads and JWKS documents. Nesting depth stays bounded by serde_json's
//! recursion limit (128), so hostile input cannot exhaust the stack.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// A JSON value whose objects had no duplicate keys.
pub(crate) struct UniqueValue(pub(crate) Value);

/// Parses `bytes` as one JSON value, refusing duplicate keys.
pub(crate) fn parse_unique(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<UniqueValue>(bytes).map(|v| v.0)
}

impl<'de> Deserialize<'de> for UniqueValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = UniqueValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<UniqueValue, E> {
        Ok(UniqueValue(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<UniqueValue, E> {
        Ok(UniqueValue(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<UniqueValue, E> {
        Ok(UniqueValue(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<UniqueValue, E> {
        // serde_json never yields non-finite floats; `from` maps them to null anyway.
        Ok(UniqueValue(Value::from(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<UniqueValue, E> {
        Ok(UniqueValue(Value::String(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<UniqueValue, E> {
        Ok(UniqueValue(Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<UniqueValue, E> {
        Ok(UniqueValue(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueValue, A::Error> {
        let mut values = Vec::new();
        while let Some(UniqueValue(v)) = seq.next_element::<UniqueValue>()? {
            values.push(v);
        }
        Ok(UniqueValue(Value::Array(values)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueValue, A::Error> {
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                return Err(de::Error::custom("duplicate object key"));
            }
            let UniqueValue(v) = map.next_value::<UniqueValue>()?;
            members.insert(name, v);
        }
        Ok(UniqueValue(Value::Object(members)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_json() {
        let v = parse_unique(br#"{"a":[1,{"b":null}],"c":"d","e":1.5,"f":-3}"#).unwrap();
        assert_eq!(v["a"][1]["b"], Value::Null);
        assert_eq!(v["f"], Value::from(-3));
    }

    #[test]
    fn refuses_duplicate_keys_at_any_depth() {
        assert!(parse_unique(br#"{"a":1,"a":2}"#).is_err());
        assert!(parse_unique(br#"{"x":{"a":1,"a":2}}"#).is_err());
        assert!(parse_unique(br#"[{"a":1,"\u0061":2}]"#).is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(100_000);
        assert!(parse_unique(deep.as_bytes()).is_err());
        let deep = "{\"a\":".repeat(100_000);
        assert!(parse_unique(deep.as_bytes()).is_err());
    }

    #[test]
    fn trailing_garbage_is_refused() {
        assert!(parse_unique(br#"{"a":1} x"#).is_err());
        assert!(parse_unique(b"").is_err());
    }
}
