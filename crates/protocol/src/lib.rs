//! JSON-RPC 2.0 / MCP envelopes for the forwarding path.
//!
//! The gateway parses only the envelope (`id`, `method`) and keeps `params`, `result` and `error` as raw JSON
//! ([`serde_json::value::RawValue`]) so unknown fields and `_meta` pass through byte for byte. Where a field must
//! change (a tool name, a progress token, an id) [`raw::RawObject`] edits one key of an object and leaves every
//! other key's bytes untouched. This crate does not know about sessions, upstreams or HTTP; SSE framing lives in
//! [`sse`] because both sides of the gateway speak it.
//!
//! Main type: [`Message`].

pub mod error;
pub mod id;
pub mod message;
pub mod raw;
pub mod sse;
pub mod version;

pub use error::{code, ErrorObject};
pub use id::Id;
pub use message::{Message, ParseError};
pub use raw::RawObject;
