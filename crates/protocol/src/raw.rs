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
///
/// When parsed with [`RawObject::parse`], the object remembers its source text and where each value sits in it;
/// as long as edits only replace existing values, [`RawObject::to_json`] splices the new values into the original
/// text, so whitespace, key escapes and every untouched byte survive exactly as the peer sent them.
#[derive(Debug, Clone, Default)]
pub struct RawObject(pub Vec<(String, Box<RawValue>)>, Option<Source>);

#[derive(Debug, Clone)]
struct Source {
    text: String,
    /// Byte span of each entry's value in `text`, in entry order.
    spans: Vec<(usize, usize)>,
    /// Set when a key was removed: the spans no longer describe the object. (Added keys are appended before
    /// the closing brace, which keeps the original bytes.)
    reshaped: bool,
    edited: Vec<bool>,
}

/// Borrowing twin of [`RawObject`], used to learn where each value sits in the source text.
struct Borrowed<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Borrowed<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Borrowed<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Borrowed<'a>, A::Error> {
                let mut out: Vec<(String, &'a RawValue)> = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(k) = map.next_key::<String>()? {
                    if out.iter().any(|(e, _)| *e == k) {
                        return Err(de::Error::custom(format_args!("duplicate key {k:?}")));
                    }
                    let v: &'a RawValue = map.next_value()?;
                    out.push((k, v));
                }
                Ok(Borrowed(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for RawObject {
    // Used when a RawObject is nested inside another deserialized type; no source spans then.
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
                Ok(RawObject(out, None))
            }
        }
        d.deserialize_map(V)
    }
}

impl RawObject {
    pub fn parse(s: &str) -> Result<RawObject, serde_json::Error> {
        let b: Borrowed<'_> = serde_json::from_str(s)?;
        let base = s.as_ptr() as usize;
        let mut entries = Vec::with_capacity(b.0.len());
        let mut spans = Vec::with_capacity(b.0.len());
        for (k, v) in b.0 {
            // serde_json hands out slices of the input, so the offset is pointer arithmetic on safe refs.
            let start = v.get().as_ptr() as usize - base;
            spans.push((start, start + v.get().len()));
            entries.push((k, raw(v.get())));
        }
        let edited = vec![false; entries.len()];
        Ok(RawObject(entries, Some(Source { text: s.to_owned(), spans, reshaped: false, edited })))
    }

    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
    }

    /// The value at `key` if it is a JSON string.
    pub fn get_str(&self, key: &str) -> Option<String> {
        self.get(key).and_then(|v| serde_json::from_str::<String>(v.get()).ok())
    }

    pub fn set(&mut self, key: &str, value: Box<RawValue>) {
        match self.0.iter().position(|(k, _)| k == key) {
            Some(i) => {
                self.0[i].1 = value;
                if let Some(e) = self.1.as_mut().and_then(|src| src.edited.get_mut(i)) {
                    *e = true;
                }
            }
            None => self.0.push((key.to_owned(), value)),
        }
    }

    pub fn set_str(&mut self, key: &str, value: &str) {
        self.set(key, to_raw(&value));
    }

    pub fn remove(&mut self, key: &str) -> Option<Box<RawValue>> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        if let Some(src) = &mut self.1 {
            src.reshaped = true;
        }
        Some(self.0.remove(i).1)
    }

    pub fn to_json(&self) -> String {
        match &self.1 {
            Some(src) if !src.reshaped => {
                let mut out = String::with_capacity(src.text.len() + 16);
                let mut at = 0;
                for (i, (start, end)) in src.spans.iter().enumerate() {
                    if src.edited[i] {
                        out.push_str(&src.text[at..*start]);
                        out.push_str(self.0[i].1.get());
                        at = *end;
                    }
                }
                let rest = &src.text[at..];
                let added = &self.0[src.spans.len()..];
                if added.is_empty() {
                    out.push_str(rest);
                    return out;
                }
                // New keys go just before the closing brace.
                let Some(close) = rest.rfind('}') else { return self.render() };
                out.push_str(&rest[..close]);
                for (i, (k, v)) in added.iter().enumerate() {
                    if i > 0 || !src.spans.is_empty() {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).unwrap_or_default());
                    out.push(':');
                    out.push_str(v.get());
                }
                out.push_str(&rest[close..]);
                out
            }
            _ => self.render(),
        }
    }

    fn render(&self) -> String {
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
    fn keeps_foreign_formatting_when_editing() {
        let src = "{\"name\": \"a\", \"execution\": {\"taskSupport\": \"optional\"},\n \"k\\u0041\": [1, 2]}";
        let mut o = RawObject::parse(src).unwrap();
        o.set_str("name", "up__a");
        assert_eq!(o.to_json(), src.replace("\"a\",", "\"up__a\","));
        // Adding a key appends it before the closing brace and keeps the rest.
        o.set_str("extra", "x");
        assert_eq!(o.to_json(), src.replace("\"a\",", "\"up__a\",").replace("2]}", "2],\"extra\":\"x\"}"));
        let mut empty = RawObject::parse("{ }").unwrap();
        empty.set_str("k", "v");
        empty.set_str("k", "w"); // editing an added key
        empty.set_str("k", "v");
        assert_eq!(empty.to_json(), "{ \"k\":\"v\"}");
        // Removing a key falls back to a compact rendering that is still valid JSON.
        o.remove("name");
        assert!(serde_json::from_str::<serde_json::Value>(&o.to_json()).is_ok());
    }

    #[test]
    fn rejects_duplicate_keys() {
        assert!(RawObject::parse(r#"{"name":"a","name":"b"}"#).is_err());
    }
}
