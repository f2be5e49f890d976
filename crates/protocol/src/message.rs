use crate::{error::ErrorObject, id::Id, raw::raw};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::fmt::Write as _;

/// One JSON-RPC message with its payload kept raw.
#[derive(Debug, Clone)]
pub enum Message {
    Request {
        id: Id,
        method: String,
        params: Option<Box<RawValue>>,
    },
    Notification {
        method: String,
        params: Option<Box<RawValue>>,
    },
    Response {
        id: Id,
        result: Box<RawValue>,
    },
    /// `id` is `None` only when the request's id could not be read (parse errors).
    Error {
        id: Option<Id>,
        error: Box<RawValue>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("parse error: {0}")]
    Json(String),
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl ParseError {
    pub fn code(&self) -> i64 {
        match self {
            ParseError::Json(_) => crate::code::PARSE_ERROR,
            ParseError::Invalid(_) => crate::code::INVALID_REQUEST,
        }
    }
}

/// Envelope as read off the wire. serde's derive rejects duplicate keys, which closes the parser-differential
/// hole where the gateway judges one `method` and the upstream executes another.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    jsonrpc: Option<&'a str>,
    #[serde(default, deserialize_with = "present")]
    id: Option<Option<Box<RawValue>>>,
    method: Option<String>,
    params: Option<Box<RawValue>>,
    result: Option<Box<RawValue>>,
    error: Option<Box<RawValue>>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<Box<RawValue>>>, D::Error> {
    Ok(Some(Option::<Box<RawValue>>::deserialize(d)?))
}

/// Nesting cap for anything the gateway parses; deeper input is rejected before it reaches an upstream.
pub const MAX_DEPTH: usize = 64;

fn depth_ok(bytes: &[u8]) -> bool {
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for &b in bytes {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return false;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// Is this body a JSON array (a batch)? Looks at the first non-whitespace byte only.
pub fn is_batch(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

/// Split a batch body into its raw elements.
pub fn split_batch(bytes: &[u8]) -> Result<Vec<Box<RawValue>>, ParseError> {
    if !depth_ok(bytes) {
        return Err(ParseError::Invalid(format!("nesting deeper than {MAX_DEPTH}")));
    }
    serde_json::from_slice(bytes).map_err(|e| ParseError::Json(e.to_string()))
}

impl Message {
    pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
        if !depth_ok(bytes) {
            return Err(ParseError::Invalid(format!("nesting deeper than {MAX_DEPTH}")));
        }
        let env: Envelope<'_> = match serde_json::from_slice(bytes) {
            Ok(e) => e,
            Err(e) if e.is_data() => return Err(ParseError::Invalid(e.to_string())),
            Err(e) => return Err(ParseError::Json(e.to_string())),
        };
        if env.jsonrpc != Some("2.0") {
            return Err(ParseError::Invalid("\"jsonrpc\" must be \"2.0\"".into()));
        }
        let id = match env.id {
            None => None,
            // `null` is only legal on an error answering a request whose id could not be read.
            Some(None) if env.error.is_some() && env.method.is_none() => None,
            Some(None) => return Err(ParseError::Invalid("id must not be null".into())),
            Some(Some(raw)) => Some(
                serde_json::from_str::<Id>(raw.get())
                    .map_err(|_| ParseError::Invalid("id must be a string or an integer".into()))?,
            ),
        };
        if let Some(p) = &env.params {
            let first = p.get().as_bytes().first();
            if !matches!(first, Some(b'{') | Some(b'[')) {
                return Err(ParseError::Invalid("params must be an object or array".into()));
            }
        }
        match (id, env.method, env.result, env.error) {
            (Some(id), Some(method), None, None) => Ok(Message::Request { id, method, params: env.params }),
            (None, Some(method), None, None) => Ok(Message::Notification { method, params: env.params }),
            (Some(id), None, Some(result), None) => Ok(Message::Response { id, result }),
            (id, None, None, Some(error)) => Ok(Message::Error { id, error }),
            _ => Err(ParseError::Invalid("not a JSON-RPC request, notification or response".into())),
        }
    }

    pub fn request(id: Id, method: &str, params: Option<Box<RawValue>>) -> Message {
        Message::Request { id, method: method.to_owned(), params }
    }

    pub fn notification(method: &str, params: Option<Box<RawValue>>) -> Message {
        Message::Notification { method: method.to_owned(), params }
    }

    pub fn error(id: Option<Id>, err: &ErrorObject) -> Message {
        Message::Error { id, error: err.to_raw() }
    }

    pub fn result(id: Id, result: Box<RawValue>) -> Message {
        Message::Response { id, result }
    }

    pub fn empty_result(id: Id) -> Message {
        Message::Response { id, result: raw("{}") }
    }

    pub fn method(&self) -> Option<&str> {
        match self {
            Message::Request { method, .. } | Message::Notification { method, .. } => Some(method),
            _ => None,
        }
    }

    pub fn id(&self) -> Option<&Id> {
        match self {
            Message::Request { id, .. } | Message::Response { id, .. } => Some(id),
            Message::Error { id, .. } => id.as_ref(),
            Message::Notification { .. } => None,
        }
    }

    pub fn params(&self) -> Option<&RawValue> {
        match self {
            Message::Request { params, .. } | Message::Notification { params, .. } => params.as_deref(),
            _ => None,
        }
    }

    pub fn is_request(&self) -> bool {
        matches!(self, Message::Request { .. })
    }

    pub fn is_response(&self) -> bool {
        matches!(self, Message::Response { .. } | Message::Error { .. })
    }

    /// Serialize; payload bytes are copied verbatim.
    pub fn to_json(&self) -> String {
        let mut s = String::with_capacity(64 + self.payload_len());
        s.push_str("{\"jsonrpc\":\"2.0\"");
        match self {
            Message::Request { id, method, params } => {
                let _ = write!(s, ",\"id\":{}", id.to_json());
                push_method(&mut s, method);
                if let Some(p) = params {
                    s.push_str(",\"params\":");
                    s.push_str(p.get());
                }
            }
            Message::Notification { method, params } => {
                push_method(&mut s, method);
                if let Some(p) = params {
                    s.push_str(",\"params\":");
                    s.push_str(p.get());
                }
            }
            Message::Response { id, result } => {
                let _ = write!(s, ",\"id\":{},\"result\":{}", id.to_json(), result.get());
            }
            Message::Error { id, error } => {
                match id {
                    Some(id) => {
                        let _ = write!(s, ",\"id\":{}", id.to_json());
                    }
                    None => s.push_str(",\"id\":null"),
                }
                s.push_str(",\"error\":");
                s.push_str(error.get());
            }
        }
        s.push('}');
        s
    }

    fn payload_len(&self) -> usize {
        match self {
            Message::Request { params, .. } | Message::Notification { params, .. } => {
                params.as_ref().map_or(0, |p| p.get().len())
            }
            Message::Response { result, .. } => result.get().len(),
            Message::Error { error, .. } => error.get().len(),
        }
    }

    /// The error object's code, for responses that carry one.
    pub fn error_code(&self) -> Option<i64> {
        #[derive(Deserialize)]
        struct Code {
            code: i64,
        }
        match self {
            Message::Error { error, .. } => serde_json::from_str::<Code>(error.get()).ok().map(|c| c.code),
            _ => None,
        }
    }
}

fn push_method(s: &mut String, method: &str) {
    s.push_str(",\"method\":");
    s.push_str(&serde_json::to_string(method).unwrap_or_else(|_| "\"\"".into()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_params_byte_for_byte() {
        let src =
            r#"{"jsonrpc":"2.0","id":0,"method":"tools/call","params":{ "name" : "x", "_meta":{"vendor/x":[1, 2]}}}"#;
        let m = Message::parse(src.as_bytes()).unwrap();
        assert_eq!(m.method(), Some("tools/call"));
        assert_eq!(m.id(), Some(&Id::Num(0)));
        assert!(m.to_json().contains(r#"{ "name" : "x", "_meta":{"vendor/x":[1, 2]}}"#));
    }

    #[test]
    fn rejects_bad_envelopes() {
        for (src, code) in [
            ("{", crate::code::PARSE_ERROR),
            ("not json", crate::code::PARSE_ERROR),
            (r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#, crate::code::INVALID_REQUEST),
            (r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#, crate::code::INVALID_REQUEST),
            (r#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#, crate::code::INVALID_REQUEST),
            (r#"{"jsonrpc":"2.0","id":1,"method":"a","method":"b"}"#, crate::code::INVALID_REQUEST),
            (r#"{"jsonrpc":"2.0","id":1,"method":"a","params":3}"#, crate::code::INVALID_REQUEST),
            (r#"{"jsonrpc":"2.0","id":1}"#, crate::code::INVALID_REQUEST),
        ] {
            let e = Message::parse(src.as_bytes()).expect_err(src);
            assert_eq!(e.code(), code, "{src}: {e}");
        }
    }

    #[test]
    fn rejects_deep_nesting() {
        let deep =
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"a","params":{}{}}}"#, "[".repeat(100), "]".repeat(100));
        assert!(Message::parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn string_ids_and_errors_serialize() {
        let m = Message::parse(br#"{"jsonrpc":"2.0","id":"a\"b","error":{"code":-1,"message":"m"}}"#).unwrap();
        assert_eq!(m.error_code(), Some(-1));
        assert_eq!(m.to_json(), r#"{"jsonrpc":"2.0","id":"a\"b","error":{"code":-1,"message":"m"}}"#);
    }
}
