//! Field surgery on raw JSON objects: read or replace one key, keep every other key's bytes.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::fmt;

/// Build a `RawValue` from a string known to be valid JSON (literals in this crate and in callers).
pub fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_owned())
        .unwrap_or_else(|_| RawValue::from_string("null".to_owned()).expect("null is valid JSON"))
}

pub fn to_raw<T: serde::Serialize>(v: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(v).unwrap_or_else(|_| raw("null"))
}

/// A JSON object as an ordered list of (key, raw value). Duplicate keys are an error.
#[derive(Debug, Clone, Default)]
pub struct RawObject(pub Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject, A::Error> {
                let mut out: Vec<(String, Box<RawValue>)> = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(k) = map.next_key::<String>()? {
                    if out.iter().any(|(e, _)| *e == k) {
                        return Err(de::Error::custom(format_args!("duplicate key {k:?}")));
                    }
                    let v: Box<RawValue> = map.next_value()?;
                    out.push((k, v));
                }
                Ok(RawObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl RawObject {
    pub fn parse(s: &str) -> Result<RawObject, serde_json::Error> {
        serde_json::from_str(s)
    }

    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
    }

    /// The value at `key` if it is a JSON string.
    pub fn get_str(&self, key: &str) -> Option<String> {
        self.get(key).and_then(|v| serde_json::from_str::<String>(v.get()).ok())
    }

    pub fn set(&mut self, key: &str, value: Box<RawValue>) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    pub fn set_str(&mut self, key: &str, value: &str) {
        self.set(key, to_raw(&value));
    }

    pub fn remove(&mut self, key: &str) -> Option<Box<RawValue>> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(i).1)
    }

    pub fn to_json(&self) -> String {
        let len: usize = self.0.iter().map(|(k, v)| k.len() + v.get().len() + 4).sum();
        let mut s = String::with_capacity(len + 2);
        s.push('{');
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&serde_json::to_string(k).unwrap_or_default());
            s.push(':');
            s.push_str(v.get());
        }
        s.push('}');
        s
    }

    pub fn into_raw(self) -> Box<RawValue> {
        RawValue::from_string(self.to_json()).unwrap_or_else(|_| raw("{}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_one_key_and_keeps_others_verbatim() {
        let mut o = RawObject::parse(r#"{"name":"a","x":{ "deep" : [1,2 ] },"_meta":{"k":1}}"#).unwrap();
        assert_eq!(o.get_str("name").as_deref(), Some("a"));
        o.set_str("name", "up__a");
        assert_eq!(o.to_json(), r#"{"name":"up__a","x":{ "deep" : [1,2 ] },"_meta":{"k":1}}"#);
    }

    #[test]
    fn rejects_duplicate_keys() {
        assert!(RawObject::parse(r#"{"name":"a","name":"b"}"#).is_err());
    }
}
