//! Message handling shared by the transports that carry everything on one ordered channel: downstream stdio
//! and legacy HTTP+SSE. Requests run concurrently; their answers join the channel as they complete.

use crate::session::Session;
use crate::Gateway;
use portcullis_protocol::{code, ErrorObject, Message};
use std::sync::Arc;

pub async fn on_message(gw: &Arc<Gateway>, s: &Arc<Session>, msg: Message) {
    if crate::modern::is_modern_stdio(&msg) {
        if let Message::Request { id, method, params } = msg {
            crate::modern::stdio(gw, s, id, method, params);
        }
        return;
    }
    match msg {
        Message::Request { id, method, params } => match method.as_str() {
            "initialize" => {
                let result = gw.initialize(s, params.as_deref());
                tracing::info!(session = s.key, version = %s.version(), "session initialized");
                s.send_unrelated(&Message::result(id, result));
            }
            "server/discover" => {
                let e = ErrorObject::new(code::METHOD_NOT_FOUND, "server/discover is not supported; use initialize");
                s.send_unrelated(&Message::error(Some(id), &e));
            }
            _ => {
                let (gw, s) = (gw.clone(), s.clone());
                tokio::spawn(async move {
                    let resp = gw.request(&s, id, &method, params).await;
                    s.send_unrelated(&resp);
                });
            }
        },
        Message::Notification { method, params } => gw.notification(s, &method, params.as_deref()),
        m => s.on_client_response(m),
    }
}

/// Answer a message that could not be parsed (id unknown, so `null`).
pub fn parse_error(s: &Session, e: &portcullis_protocol::ParseError) {
    s.send_unrelated(&Message::error(None, &ErrorObject::new(e.code(), e.to_string())));
}
