use portcullis_protocol::{code, ErrorObject};

/// Why a forwarded call produced no upstream answer. Each maps to one JSON-RPC error in [`CallError::to_error`].
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("upstream {upstream:?} is unavailable: {reason}")]
    Unavailable { upstream: String, reason: String },
    #[error("upstream {upstream:?} did not answer {method} in time")]
    Timeout { upstream: String, method: String },
    #[error("upstream {upstream:?} sent a message larger than its max_message limit ({limit} bytes)")]
    TooLarge { upstream: String, limit: usize },
    #[error("the call was cancelled")]
    Cancelled,
    #[error("upstream protocol error: {0}")]
    Protocol(String),
    #[error("upstream {upstream:?} has reached its limit of {limit} per-session processes")]
    TooManyChildren { upstream: String, limit: usize },
}

impl CallError {
    pub fn to_error(&self) -> ErrorObject {
        let (c, upstream) = match self {
            CallError::Unavailable { upstream, .. } => (code::UPSTREAM_UNAVAILABLE, Some(upstream)),
            CallError::Timeout { upstream, .. } => (code::DEADLINE_EXCEEDED, Some(upstream)),
            CallError::TooLarge { upstream, .. } => (code::INTERNAL_ERROR, Some(upstream)),
            CallError::Cancelled => (code::INTERNAL_ERROR, None),
            CallError::Protocol(_) => (code::INTERNAL_ERROR, None),
            CallError::TooManyChildren { upstream, .. } => (code::OVERLOADED, Some(upstream)),
        };
        let e = ErrorObject::new(c, self.to_string());
        match upstream {
            Some(u) => e.with_data(serde_json::json!({ "upstream": u })),
            None => e,
        }
    }
}
