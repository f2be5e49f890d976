//! The transport-neutral view of one upstream connection: a bounded pair of channels carrying JSON-RPC
//! messages. stdio children, Streamable HTTP sessions and legacy SSE connections all look like this, so id
//! mapping, routing and restarts ([`crate::conn`]) are written once.

use portcullis_protocol::{Id, Message};
use tokio::sync::mpsc;

/// A message going to the upstream plus transport headers for it (HTTP only; stdio ignores them).
#[derive(Debug)]
pub struct Outgoing {
    pub msg: Message,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl From<Message> for Outgoing {
    fn from(msg: Message) -> Self {
        Outgoing { msg, headers: Vec::new() }
    }
}

#[derive(Debug)]
pub enum PipeEvent {
    Message(Message),
    /// An oversized message was dropped without buffering it whole. `id` is recovered from its first or last
    /// bytes when possible, so the waiting call fails at once instead of timing out.
    TooLarge {
        id: Option<Id>,
        limit: usize,
    },
    /// Streamable HTTP: the upstream answered 404 to our session id; the connection must initialize again.
    SessionExpired,
    /// The connection is gone (child exited, stream ended, HTTP session unrecoverable). Nothing follows.
    Closed {
        reason: String,
    },
}

/// Both ends of a running transport. Dropping `tx` asks the transport to close; the transport's resources
/// (child process, HTTP tasks) are released when the [`Pipe`] and its guard are dropped.
pub struct Pipe {
    pub tx: mpsc::Sender<Outgoing>,
    pub rx: mpsc::Receiver<PipeEvent>,
    pub guard: PipeGuard,
}

/// Owns whatever must be torn down with the connection.
pub enum PipeGuard {
    Child(Box<crate::stdio::ChildGuard>),
    Tasks(tokio_util::sync::DropGuard),
    None,
}

impl PipeGuard {
    /// Orderly shutdown: for a child, close stdin, wait briefly, then kill its process group and reap it.
    pub async fn shutdown(self) {
        match self {
            PipeGuard::Child(c) => c.shutdown().await,
            PipeGuard::Tasks(g) => drop(g),
            PipeGuard::None => {}
        }
    }
}

/// Channel depth for messages in either direction of one connection.
pub const PIPE_DEPTH: usize = 1024;

/// Best-effort recovery of a JSON-RPC id from a fragment of an oversized message (`"id":` followed by an integer
/// or a string without escapes). Used only to fail the matching call early; a miss falls back to the timeout.
pub fn sniff_id(fragment: &[u8]) -> Option<Id> {
    let s = String::from_utf8_lossy(fragment);
    let mut rest = &s[..];
    while let Some(i) = rest.find("\"id\"") {
        let after = rest[i + 4..].trim_start();
        if let Some(v) = after.strip_prefix(':') {
            let v = v.trim_start();
            if let Some(stripped) = v.strip_prefix('"') {
                if let Some(end) = stripped.find('"') {
                    if !stripped[..end].contains('\\') {
                        return Some(Id::Str(stripped[..end].to_owned()));
                    }
                }
            } else {
                let num: String = v.chars().take_while(|c| c.is_ascii_digit() || *c == '-').collect();
                if let Ok(n) = num.parse() {
                    return Some(Id::Num(n));
                }
            }
        }
        rest = &rest[i + 4..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_ids_from_head_or_tail() {
        assert_eq!(sniff_id(br#"{"jsonrpc":"2.0","id":42,"result":{"con"#), Some(Id::Num(42)));
        assert_eq!(sniff_id(br#"xxxxx"}]},"jsonrpc":"2.0","id":"g-7"}"#), Some(Id::Str("g-7".into())));
        assert_eq!(sniff_id(br#"{"text":"no ids here"#), None);
    }
}
