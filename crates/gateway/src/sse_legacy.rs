//! The 2024-11-05 HTTP+SSE transport: `GET /sse` opens the session's stream and names the POST endpoint in an
//! `endpoint` event; the client POSTs each message to `/messages?sessionId=…` and every answer arrives on
//! the stream. The session ends when the stream's connection closes.

use crate::http::{read_body, rpc_error};
use crate::session::Output;
use crate::Gateway;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use portcullis_protocol::{code, sse, Message};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Messages queued for one legacy SSE client before it is considered stalled.
const CHANNEL_DEPTH: usize = 1024;

pub async fn open_all(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    open(gw, None, headers).await
}

pub async fn open_topic(State(gw): State<Arc<Gateway>>, Path(topic): Path<String>, headers: HeaderMap) -> Response {
    open(gw, Some(topic), headers).await
}

async fn open(gw: Arc<Gateway>, topic: Option<String>, headers: HeaderMap) -> Response {
    if !gw.serves(topic.as_deref()) {
        return rpc_error(StatusCode::NOT_FOUND, code::SESSION, "Not found: no such MCP endpoint (topic)");
    }
    let who = match gw.authenticate_http(&headers, topic.as_deref()).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (tx, rx) = mpsc::channel::<String>(CHANNEL_DEPTH);
    let Some(s) = gw.new_session(topic.as_deref(), Output::Channel(tx), who) else {
        return rpc_error(StatusCode::SERVICE_UNAVAILABLE, code::OVERLOADED, "Too many sessions; retry later");
    };
    let endpoint = sse::encode(None, Some("endpoint"), &format!("/messages?sessionId={}", s.id));
    // Ending the session when the body stream is dropped (client went away) is tied to this guard.
    struct EndOnDrop(Arc<Gateway>, String);
    impl Drop for EndOnDrop {
        fn drop(&mut self) {
            let (gw, id) = (self.0.clone(), self.1.clone());
            tokio::spawn(async move { gw.end_session(&id).await });
        }
    }
    let guard = EndOnDrop(gw.clone(), s.id.clone());
    let closed = s.closed.clone();
    let first = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(Bytes::from(endpoint)) });
    let rest = futures::stream::unfold((rx, guard, closed), |(mut rx, g, closed)| async move {
        let next = tokio::select! {
            m = rx.recv() => m,
            _ = closed.cancelled() => None,
            _ = tokio::time::sleep(std::time::Duration::from_secs(15)) => {
                return Some((Ok(Bytes::from_static(b": keepalive\n\n")), (rx, g, closed)));
            }
        };
        let json = next?;
        Some((Ok(Bytes::from(sse::encode(None, Some("message"), &json))), (rx, g, closed)))
    });
    use futures::StreamExt;
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(first.chain(rest)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[derive(serde::Deserialize)]
pub struct SessionQuery {
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
}

pub async fn post_message(
    State(gw): State<Arc<Gateway>>,
    Query(q): Query<SessionQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(sid) = q.session_id else {
        return rpc_error(StatusCode::BAD_REQUEST, code::SESSION, "Bad Request: sessionId query parameter is required");
    };
    // Authenticate before looking the session up, so an unauthenticated caller cannot probe which ids exist.
    let who = match gw.authenticate_http(&headers, None).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let s = match gw.sessions.get(&sid) {
        Some(s) if matches!(s.out, Output::Channel(_)) && s.principal.same_identity(&who) => s,
        _ => return rpc_error(StatusCode::NOT_FOUND, -32001, "Session not found: open a new stream with GET /sse"),
    };
    // Then the session's topic rules (its scopes); the verified token is cached, so this is cheap.
    if s.topic.is_some() {
        if let Err(r) = gw.authenticate_http(&headers, s.topic.as_deref()).await {
            return r;
        }
    }
    let bytes = match read_body(&headers, body, gw.cfg.server.max_body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match Message::parse(&bytes) {
        Ok(m) => {
            crate::channel::on_message(&gw, &s, m).await;
            (StatusCode::ACCEPTED, "Accepted").into_response()
        }
        Err(e) => rpc_error(StatusCode::BAD_REQUEST, e.code(), &e.to_string()),
    }
}
