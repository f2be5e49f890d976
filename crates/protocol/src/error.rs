use serde::Serialize;

/// Error codes a client can see. Gateway codes live in -32000..-32019, the range the spec leaves to
/// implementations.
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    pub const DENIED: i64 = -32010;
    pub const RATE_LIMITED: i64 = -32011;
    pub const OVERLOADED: i64 = -32012;
    pub const DEADLINE_EXCEEDED: i64 = -32013;
    pub const UPSTREAM_UNAVAILABLE: i64 = -32014;
    pub const QUARANTINED: i64 = -32015;
    /// Used by the TS SDK and others for transport-level session errors.
    pub const SESSION: i64 = -32000;
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorObject {
    pub code: i64,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl ErrorObject {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        ErrorObject { code, message: message.into(), data: None }
    }
    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = Some(data);
        self
    }
    pub fn to_raw(&self) -> Box<serde_json::value::RawValue> {
        serde_json::value::to_raw_value(self)
            .unwrap_or_else(|_| crate::raw::raw("{\"code\":-32603,\"message\":\"internal error\"}"))
    }
}
