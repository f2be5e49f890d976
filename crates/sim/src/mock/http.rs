//! Streamable HTTP front-end: `POST /mcp` answers with `application/json` (never SSE), `DELETE /mcp` ends a
//! session, `GET /mcp` is 405 (no server-initiated stream).

use super::{Mock, MockConfig};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use parking_lot::RwLock;
use portcullis_protocol::{code, ErrorObject, Message};
use rand::Rng;
use std::collections::HashSet;
use std::sync::Arc;

const SESSION: &str = "mcp-session-id";
/// Bound on live sessions; `initialize` past it gets 503.
const MAX_SESSIONS: usize = 10_000;

struct App {
    mock: Mock,
    sessions: RwLock<HashSet<String>>,
}

/// The mock's routes, for embedding in a test server.
pub fn router(cfg: MockConfig) -> Router {
    let app = Arc::new(App { mock: Mock::new(cfg), sessions: RwLock::new(HashSet::new()) });
    Router::new().route("/mcp", post(on_post).delete(on_delete).get(on_get)).with_state(app)
}

/// Serve until the listener fails.
pub async fn serve_http(listener: tokio::net::TcpListener, cfg: MockConfig) -> std::io::Result<()> {
    axum::serve(listener, router(cfg)).await
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn rpc_error(status: StatusCode, code: i64, msg: &str) -> Response {
    json(status, Message::error(None, &ErrorObject::new(code, msg)).to_json())
}

async fn on_post(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let msg = match Message::parse(&body) {
        Ok(m) => m,
        Err(e) => return rpc_error(StatusCode::BAD_REQUEST, e.code(), &e.to_string()),
    };
    if msg.method() == Some("initialize") {
        return initialize(&app, msg).await;
    }
    let Some(sid) = headers.get(SESSION).and_then(|v| v.to_str().ok()) else {
        return rpc_error(StatusCode::BAD_REQUEST, code::SESSION, "Mcp-Session-Id header is required");
    };
    if !app.sessions.read().contains(sid) {
        return rpc_error(StatusCode::NOT_FOUND, code::SESSION, "session not found; send initialize again");
    }
    match app.mock.handle(msg).await {
        Some(reply) => json(StatusCode::OK, reply.to_json()),
        None => StatusCode::ACCEPTED.into_response(),
    }
}

async fn initialize(app: &App, msg: Message) -> Response {
    let sid = {
        let mut sessions = app.sessions.write();
        if sessions.len() >= MAX_SESSIONS {
            drop(sessions);
            return rpc_error(StatusCode::SERVICE_UNAVAILABLE, code::SESSION, "too many sessions");
        }
        let sid = format!("{:032x}", rand::rng().random::<u128>());
        sessions.insert(sid.clone());
        sid
    };
    let reply = app.mock.handle(msg).await.map(|m| m.to_json()).unwrap_or_default();
    let mut r = json(StatusCode::OK, reply);
    if let Ok(v) = HeaderValue::from_str(&sid) {
        r.headers_mut().insert(SESSION, v);
    }
    r
}

async fn on_delete(State(app): State<Arc<App>>, headers: HeaderMap) -> StatusCode {
    let sid = headers.get(SESSION).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if app.sessions.write().remove(sid) {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn on_get() -> StatusCode {
    StatusCode::METHOD_NOT_ALLOWED
}
