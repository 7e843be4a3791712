//! A JSON value that refuses duplicate object keys. serde_json keeps the last of two equal
//! keys without a word, so `{"customer_id": "a", "customer_id": "b"}` would mean whatever a
//! reader's parser picks; a body like that is refused instead (400).

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// A [`Value`] read with every object's keys unique, at any depth.
#[derive(Debug, Clone, PartialEq)]
pub struct StrictValue(pub Value);

impl std::ops::Deref for StrictValue {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if members.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let StrictValue(value) = map.next_value()?;
            members.insert(key, value);
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::StrictValue;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        for body in [r#"{"a": 1, "a": 2}"#, r#"{"lines": [{"sku": "A-1", "sku": "B-2"}]}"#] {
            let error = serde_json::from_str::<StrictValue>(body).expect_err(body);
            assert!(error.to_string().contains("duplicate key"), "{error}");
        }
    }

    #[test]
    fn anything_else_reads_as_serde_json_reads_it() {
        let body = r#"{"a": [1, -2, 3.5, "x", null, true, {"b": {}}], "c": 18446744073709551615}"#;
        let strict: StrictValue = serde_json::from_str(body).expect("valid");
        assert_eq!(strict.0, serde_json::from_str::<serde_json::Value>(body).expect("valid"));
    }
}
