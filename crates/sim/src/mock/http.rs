//! Streamable HTTP front-end. `POST /mcp` answers with `application/json`, or with an SSE stream when the call
//! sends progress or drips; `GET /mcp` is the session's stream of `notifications/tools/list_changed`;
//! `DELETE /mcp` ends a session. With `control`, `POST /control` flips the [`Chaos`](super::Chaos) switches:
//! `{"hang":true}`, `{"drop":true}`, `{"add_latency_ms":50}`, `{"rotate":"TOOL"}`, `{"list_changed":true}`.
//!
//! A crash with `crash_mode = "exit"` exits the process (status 3) while the request is open, so the client sees
//! its connection reset; with `"drop"` only that request's connection is dropped without a complete response.

use super::{CrashMode, Mock, MockConfig, MockSpec, Plan, Step};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::stream::{self, StreamExt};
use parking_lot::RwLock;
use portcullis_protocol::{code, sse, ErrorObject, Message};
use rand::Rng;
use serde::Deserialize;
use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};

const SESSION: &str = "mcp-session-id";
/// Bound on live sessions; `initialize` past it gets 503.
const MAX_SESSIONS: usize = 10_000;

struct App {
    mock: Arc<Mock>,
    sessions: RwLock<HashSet<String>>,
}

/// The benchmark mock's routes, for embedding in a test server.
pub fn router(cfg: MockConfig) -> Router {
    router_for(Arc::new(Mock::new(cfg)), false)
}

fn router_for(mock: Arc<Mock>, control: bool) -> Router {
    let app = Arc::new(App { mock, sessions: RwLock::new(HashSet::new()) });
    let r = Router::new().route("/mcp", post(on_post).delete(on_delete).get(on_get));
    let r = if control { r.route("/control", post(on_control)) } else { r };
    r.with_state(app)
}

/// Serve the benchmark mock until the listener fails.
pub async fn serve_http(listener: tokio::net::TcpListener, cfg: MockConfig) -> std::io::Result<()> {
    serve_http_spec(listener, cfg.into(), false).await
}

/// Serve `spec` (and, with `control`, the chaos endpoint) until the listener fails.
pub async fn serve_http_spec(listener: tokio::net::TcpListener, spec: MockSpec, control: bool) -> std::io::Result<()> {
    let mock = Arc::new(Mock::from_spec(spec));
    let schedule = mock.spawn_schedule();
    let res = axum::serve(listener, router_for(mock, control)).await;
    if let Some(s) = schedule {
        s.abort();
    }
    res
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn rpc_error(status: StatusCode, code: i64, msg: &str) -> Response {
    json(status, Message::error(None, &ErrorObject::new(code, msg)).to_json())
}

fn session_ok(app: &App, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(sid) = headers.get(SESSION).and_then(|v| v.to_str().ok()) else {
        return Err(Box::new(rpc_error(StatusCode::BAD_REQUEST, code::SESSION, "Mcp-Session-Id header is required")));
    };
    if !app.sessions.read().contains(sid) {
        return Err(Box::new(rpc_error(
            StatusCode::NOT_FOUND,
            code::SESSION,
            "session not found; send initialize again",
        )));
    }
    Ok(())
}

async fn on_post(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let msg = match Message::parse(&body) {
        Ok(m) => m,
        Err(e) => return rpc_error(StatusCode::BAD_REQUEST, e.code(), &e.to_string()),
    };
    if msg.method() == Some("initialize") {
        return initialize(&app, msg).await;
    }
    if let Err(r) = session_ok(&app, &headers) {
        return *r;
    }
    match app.mock.plan(msg) {
        Plan::Nothing => StatusCode::ACCEPTED.into_response(),
        Plan::Reply(m) => json(StatusCode::OK, m.to_json()),
        Plan::Call(c) if c.streams() => {
            let (tx, rx) = mpsc::channel(4);
            tokio::spawn(async move { c.run(&tx).await });
            let frames = stream::unfold(rx, |mut rx| async move {
                let frame = match rx.recv().await? {
                    Step::Note(m) | Step::Reply(m) => sse::encode(None, Some("message"), &m.to_json()),
                    Step::Tick => ": drip\n\n".to_owned(),
                };
                Some((Ok::<_, Infallible>(frame), rx))
            });
            sse_response(Body::from_stream(frames))
        }
        Plan::Call(c) => json(StatusCode::OK, c.finish().await.to_json()),
        Plan::Hang => std::future::pending().await,
        Plan::Crash if app.mock.spec().crash_mode == CrashMode::Exit => {
            eprintln!("portcullis mock-server: crashing on purpose (crash_rate)");
            std::process::exit(super::CRASH_EXIT)
        }
        Plan::Crash | Plan::Drop => {
            // A body that fails makes hyper abort the connection: the client never gets a complete response.
            let fail = stream::once(async { Err::<Bytes, _>(std::io::Error::other("connection dropped by the mock")) });
            json_body(Body::from_stream(fail))
        }
    }
}

fn sse_response(body: Body) -> Response {
    let mut r = Response::new(body);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn json_body(body: Body) -> Response {
    let mut r = Response::new(body);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
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

/// The session's server-to-client stream: `list_changed` notifications, nothing else.
async fn on_get(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(r) = session_ok(&app, &headers) {
        return *r;
    }
    let note = sse::encode(None, Some("message"), r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#);
    // A comment first, so the client sees the stream open before the first event.
    let hello = stream::once(async { Ok::<_, Infallible>(": stream open\n\n".to_owned()) });
    let events = stream::unfold((app.mock.subscribe(), note), |(mut rx, note)| async move {
        match rx.recv().await {
            Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => Some((Ok(note.clone()), (rx, note))),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    });
    sse_response(Body::from_stream(hello.chain(events)))
}

/// A chaos switch; every field is optional and applied in order.
#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hang: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_changed: Option<bool>,
}

impl Mock {
    /// Apply a control request; the answer says what changed.
    pub fn control(&self, c: &Control) -> Result<String, String> {
        let mut done = Vec::new();
        if let Some(h) = c.hang {
            self.chaos.hang.store(h, Relaxed);
            done.push(format!("hang={h}"));
        }
        if let Some(d) = c.drop {
            self.chaos.drop.store(d, Relaxed);
            done.push(format!("drop={d}"));
        }
        if let Some(ms) = c.add_latency_ms {
            self.chaos.extra_latency_us.store(ms.saturating_mul(1000), Relaxed);
            done.push(format!("add_latency_ms={ms}"));
        }
        if let Some(t) = &c.rotate {
            let rev = self.rotate(t)?;
            done.push(format!("rotated {t} to revision {rev}"));
        }
        if c.list_changed == Some(true) {
            let _ = self.changed.send(());
            done.push("list_changed sent".into());
        }
        Ok(done.join(", "))
    }
}

async fn on_control(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let c: Control = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("bad control request: {e}")).into_response(),
    };
    match app.mock.control(&c) {
        Ok(done) => Json(serde_json::json!({ "ok": true, "done": done })).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}
