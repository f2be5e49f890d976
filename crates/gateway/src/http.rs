//! Downstream Streamable HTTP (session era, 2024-11-05 … 2025-11-25) at `/mcp` and `/mcp/{topic}`, the legacy
//! HTTP+SSE transport at `/sse` + `/messages`, and the admin endpoints.
//!
//! Transport rules live here and only here: Host/Origin checks (DNS rebinding), Accept/Content-Type, body
//! size, session ids (400 missing, 404 unknown or ended — even where an upstream would say 400),
//! `MCP-Protocol-Version`, batches (2025-03-26 only), and JSON-or-SSE replies.

// Handlers return ready-made `Response`s as errors; boxing them would only add noise.
#![allow(clippy::result_large_err)]

use crate::session::{HttpOutput, Output, Session};
use crate::stream::{parse_event_id, StreamBuf};
use crate::Gateway;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use portcullis_auth::Principal;
use portcullis_protocol::message::{is_batch, split_batch};
use portcullis_protocol::{code, version, ErrorObject, Id, Message};
use std::sync::Arc;
use std::time::Duration;

pub const SESSION_HEADER: &str = "mcp-session-id";
pub const VERSION_HEADER: &str = "mcp-protocol-version";
const SSE_KEEPALIVE: Duration = Duration::from_secs(15);

/// Methods answered by the gateway itself; everything else may stream upstream traffic back.
fn answered_locally(method: &str) -> bool {
    matches!(
        method,
        "ping" | "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list" | "logging/setLevel"
    )
}

pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/mcp", post(post_all).get(get_all).delete(delete_all))
        .route("/mcp/{topic}", post(post_topic).get(get_topic).delete(delete_topic))
        .route("/sse", get(crate::sse_legacy::open_all))
        .route("/sse/{topic}", get(crate::sse_legacy::open_topic))
        .route("/messages", post(crate::sse_legacy::post_message))
        .route("/.well-known/oauth-protected-resource", get(crate::identity::metadata_root))
        .route("/.well-known/oauth-protected-resource/mcp", get(crate::identity::metadata_mcp))
        .route("/.well-known/oauth-protected-resource/mcp/{topic}", get(crate::identity::metadata_topic))
        .route("/.well-known/jwks.json", get(crate::identity::jwks))
        .fallback(|| async {
            rpc_error(StatusCode::NOT_FOUND, code::SESSION, "Not found: the MCP endpoint is /mcp or /mcp/{topic}")
        })
        .layer(middleware::from_fn_with_state(gw.clone(), guard))
        .with_state(gw)
}

pub fn admin_router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(gw): State<Arc<Gateway>>| async move {
                let body: Vec<serde_json::Value> = gw
                    .upstream_status()
                    .into_iter()
                    .map(|(n, s, e)| serde_json::json!({"upstream": n, "status": format!("{s:?}"), "last_error": e}))
                    .collect();
                let status = if gw.ready() && !gw.shutdown.is_cancelled() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                (status, axum::Json(serde_json::json!({"ready": status == StatusCode::OK, "upstreams": body})))
            }),
        )
        .with_state(gw)
}

/// A JSON-RPC error body with no id, for transport-level failures.
pub fn rpc_error(status: StatusCode, code: i64, message: &str) -> Response {
    let body = Message::error(None, &ErrorObject::new(code, message)).to_json();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn json_response(body: String, session: Option<&str>) -> Response {
    let mut r = (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(sid) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
        r.headers_mut().insert(SESSION_HEADER, sid);
    }
    r
}

pub(crate) fn sse_response(
    stream: impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static,
) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// DNS-rebinding defence: a browser page on another site must not reach a loopback gateway.
async fn guard(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    let loopback = gw.cfg.server.listen.ip().is_loopback();
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(strip_port);
    let allowed_hosts = &gw.cfg.server.allowed_hosts;
    let host_ok = match host {
        None => !loopback || allowed_hosts.is_empty(),
        Some(h) if !allowed_hosts.is_empty() => allowed_hosts.iter().any(|a| a.eq_ignore_ascii_case(h)),
        Some(h) => !loopback || is_loopback_name(h),
    };
    if !host_ok {
        return rpc_error(
            StatusCode::MISDIRECTED_REQUEST,
            code::SESSION,
            "Host header not allowed (add it to server.allowed_hosts)",
        );
    }
    if let Some(origin) = req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        if !origin_allowed(&gw, origin, host) {
            return rpc_error(
                StatusCode::FORBIDDEN,
                code::SESSION,
                "Origin not allowed (add it to server.allowed_origins)",
            );
        }
    }
    next.run(req).await
}

fn strip_port(h: &str) -> &str {
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    h.rsplit_once(':').map_or(h, |(a, _)| a)
}

fn is_loopback_name(h: &str) -> bool {
    h.eq_ignore_ascii_case("localhost") || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn origin_allowed(gw: &Gateway, origin: &str, host: Option<&str>) -> bool {
    let list = &gw.cfg.server.allowed_origins;
    if !list.is_empty() {
        return list.iter().any(|a| match a.strip_suffix(":*") {
            Some(prefix) => origin == prefix || origin.strip_prefix(prefix).is_some_and(|r| r.starts_with(':')),
            None => a == origin,
        });
    }
    let ohost = origin.split("://").nth(1).map(strip_port).unwrap_or("");
    if gw.cfg.server.listen.ip().is_loopback() {
        return is_loopback_name(ohost);
    }
    host.is_some_and(|h| h.eq_ignore_ascii_case(ohost))
}

pub(crate) struct Accept {
    pub(crate) json: bool,
    pub(crate) sse: bool,
}

fn accept(headers: &HeaderMap) -> Option<Accept> {
    let Some(v) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Some(Accept { json: true, sse: false });
    };
    let any = v.contains("*/*");
    let a = Accept {
        json: any || v.contains("application/json") || v.contains("application/*"),
        sse: any || v.contains("text/event-stream") || v.contains("text/*"),
    };
    (a.json || a.sse).then_some(a)
}

async fn post_all(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Body) -> Response {
    post_mcp(gw, None, headers, body).await
}
async fn post_topic(State(gw): State<Arc<Gateway>>, Path(t): Path<String>, h: HeaderMap, body: Body) -> Response {
    post_mcp(gw, Some(t), h, body).await
}
async fn get_all(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    get_mcp(gw, None, headers).await
}
async fn get_topic(State(gw): State<Arc<Gateway>>, Path(t): Path<String>, headers: HeaderMap) -> Response {
    get_mcp(gw, Some(t), headers).await
}
async fn delete_all(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    delete_mcp(gw, None, headers).await
}
async fn delete_topic(State(gw): State<Arc<Gateway>>, Path(t): Path<String>, headers: HeaderMap) -> Response {
    delete_mcp(gw, Some(t), headers).await
}

fn no_endpoint() -> Response {
    rpc_error(StatusCode::NOT_FOUND, code::SESSION, "Not found: no such MCP endpoint (topic) on this gateway")
}

/// Read a body without ever holding more than `limit` bytes.
pub(crate) async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Response> {
    let too_big = || {
        rpc_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            code::INVALID_REQUEST,
            &format!("Request body exceeds the {limit}-byte limit (server.max_body)"),
        )
    };
    if let Some(len) =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(too_big());
        }
    }
    axum::body::to_bytes(body, limit).await.map_err(|_| too_big())
}

/// Find the session a request names: 400 when the header is missing, 404 when unknown, ended, or created on
/// another endpoint (a session id is not a key to other topics).
fn session_for(
    gw: &Gateway,
    topic: Option<&str>,
    headers: &HeaderMap,
    who: &Principal,
) -> Result<Arc<Session>, Response> {
    let Some(sid) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        return Err(rpc_error(
            StatusCode::BAD_REQUEST,
            code::SESSION,
            "Bad Request: Mcp-Session-Id header is required (send initialize first)",
        ));
    };
    match gw.sessions.get(sid) {
        // Another caller presenting this id learns nothing: same 404 as an unknown session.
        Some(s)
            if s.topic.as_deref() == topic && matches!(s.out, Output::Http(_)) && s.principal.same_identity(who) =>
        {
            Ok(s)
        }
        _ => Err(rpc_error(
            StatusCode::NOT_FOUND,
            -32001,
            "Session not found: it ended or never existed; send initialize to start a new one",
        )),
    }
}

fn check_version(headers: &HeaderMap) -> Result<(), Response> {
    match headers.get(VERSION_HEADER).map(|v| v.to_str()) {
        None => Ok(()),
        Some(Ok(v)) if version::is_session_era(v) => Ok(()),
        Some(v) => Err(rpc_error(
            StatusCode::BAD_REQUEST,
            code::SESSION,
            &format!(
                "Bad Request: unsupported MCP-Protocol-Version {:?} (supported: {})",
                v.unwrap_or("?"),
                version::SESSION_ERA.join(", ")
            ),
        )),
    }
}

async fn post_mcp(gw: Arc<Gateway>, topic: Option<String>, headers: HeaderMap, body: Body) -> Response {
    let topic = topic.as_deref();
    if !gw.serves(topic) {
        return no_endpoint();
    }
    let who = match gw.authenticate_http(&headers, topic).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(acc) = accept(&headers) else {
        return rpc_error(
            StatusCode::NOT_ACCEPTABLE,
            code::SESSION,
            "Not Acceptable: Accept must include application/json and/or text/event-stream",
        );
    };
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.starts_with("application/json") {
        return rpc_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::SESSION,
            "Unsupported Media Type: Content-Type must be application/json",
        );
    }
    let bytes = match read_body(&headers, body, gw.cfg.server.max_body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if is_batch(&bytes) {
        return post_batch(gw, topic, &headers, &bytes, &who).await;
    }
    let msg = match Message::parse(&bytes) {
        Ok(m) => m,
        Err(e) => return rpc_error(StatusCode::BAD_REQUEST, e.code(), &e.to_string()),
    };
    if crate::modern::is_modern(&headers, &msg) {
        return crate::modern::post(gw, topic, &headers, msg, acc, who).await;
    }
    if let Message::Request { id, method, params } = &msg {
        match method.as_str() {
            "initialize" => return initialize(&gw, topic, id.clone(), params.as_deref(), &acc, who),
            // Not served yet (stateless era): a plain -32601 makes `auto` clients fall back to initialize.
            "server/discover" => {
                let m = Message::error(
                    Some(id.clone()),
                    &ErrorObject::new(
                        code::METHOD_NOT_FOUND,
                        "server/discover is not supported; use initialize (protocol 2025-11-25)",
                    ),
                );
                return (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "application/json")], m.to_json())
                    .into_response();
            }
            _ => {}
        }
    }
    let s = match session_for(&gw, topic, &headers, &who) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(r) = check_version(&headers) {
        return r;
    }
    match msg {
        Message::Request { id, method, params } => request(gw, s, id, method, params, acc).await,
        Message::Notification { method, params } => {
            gw.notification(&s, &method, params.as_deref());
            StatusCode::ACCEPTED.into_response()
        }
        m @ (Message::Response { .. } | Message::Error { .. }) => {
            s.on_client_response(m);
            StatusCode::ACCEPTED.into_response()
        }
    }
}

fn initialize(
    gw: &Arc<Gateway>,
    topic: Option<&str>,
    id: Id,
    params: Option<&serde_json::value::RawValue>,
    acc: &Accept,
    who: Arc<Principal>,
) -> Response {
    let Some(s) = gw.new_session(topic, Output::Http(HttpOutput::new(gw.cfg.server.sse_replay)), who) else {
        let mut r = rpc_error(
            StatusCode::SERVICE_UNAVAILABLE,
            code::OVERLOADED,
            "Too many sessions (server.max_sessions); retry later",
        );
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return r;
    };
    let result = gw.initialize(&s, params);
    let body = Message::result(id, result).to_json();
    tracing::info!(session = s.key, topic = topic.unwrap_or("*"), version = %s.version(), "session started");
    if acc.json {
        return json_response(body, Some(&s.id));
    }
    let buf = StreamBuf::new(u64::MAX, 1);
    buf.push(body);
    buf.finish();
    let mut r = sse_response(buf.sse(None, None, false, None));
    if let Ok(v) = HeaderValue::from_str(&s.id) {
        r.headers_mut().insert(SESSION_HEADER, v);
    }
    r
}

async fn request(
    gw: Arc<Gateway>,
    s: Arc<Session>,
    id: Id,
    method: String,
    params: Option<Box<serde_json::value::RawValue>>,
    acc: Accept,
) -> Response {
    if answered_locally(&method) || !acc.sse {
        // Related upstream messages (if any) go to the standalone GET stream.
        let resp = gw.request(&s, id, &method, params).await;
        if acc.json {
            return json_response(resp.to_json(), None);
        }
        let buf = StreamBuf::new(u64::MAX, 1);
        buf.push(resp.to_json());
        buf.finish();
        return sse_response(buf.sse(None, None, false, None));
    }
    let Output::Http(out) = &s.out else { return rpc_error(StatusCode::NOT_FOUND, -32001, "Session not found") };
    let buf = out.open(id.clone());
    // Run the call inline: most answers come back before any related message, and are sent as JSON without a
    // task hand-off. If progress or a server-to-client request comes first, the call moves to its own task and the
    // reply becomes an SSE stream (resumable from then on: a dropped connection is not a cancellation).
    let mut call = {
        let (gw, s, id) = (gw.clone(), s.clone(), id.clone());
        Box::pin(async move { gw.request(&s, id, &method, params).await })
    };
    let unregister = |s: &Session, id: &Id| {
        if let Output::Http(o) = &s.out {
            o.close(id);
        }
    };
    tokio::select! {
        biased;
        resp = &mut call => {
            unregister(&s, &id);
            // Related messages may have arrived in the same instant: then they and the answer go out as SSE.
            if acc.json && buf.is_empty() {
                buf.finish();
                return json_response(resp.to_json(), None);
            }
            buf.push(resp.to_json());
            buf.finish();
            return sse_response(buf.sse(None, None, true, None));
        }
        _ = buf.wait_first() => {}
    }
    let (task_buf, task_s) = (buf.clone(), s.clone());
    tokio::spawn(async move {
        let resp = call.await;
        task_buf.push(resp.to_json());
        task_buf.finish();
        unregister(&task_s, &id);
    });
    sse_response(buf.sse(None, None, true, None))
}

async fn post_batch(
    gw: Arc<Gateway>,
    topic: Option<&str>,
    headers: &HeaderMap,
    bytes: &[u8],
    who: &Principal,
) -> Response {
    let s = match session_for(&gw, topic, headers, who) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !version::allows_batch(&s.version()) {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            code::INVALID_REQUEST,
            "JSON-RPC batches are only allowed with protocol version 2025-03-26",
        );
    }
    let items = match split_batch(bytes) {
        Ok(v) if !v.is_empty() => v,
        Ok(_) => return rpc_error(StatusCode::BAD_REQUEST, code::INVALID_REQUEST, "empty batch"),
        Err(e) => return rpc_error(StatusCode::BAD_REQUEST, e.code(), &e.to_string()),
    };
    let mut futs = Vec::new();
    for raw in items {
        match Message::parse(raw.get().as_bytes()) {
            Ok(Message::Request { id, method, params }) if method != "initialize" => {
                let (gw, s) = (gw.clone(), s.clone());
                futs.push(tokio::spawn(async move { gw.request(&s, id, &method, params).await }));
            }
            Ok(Message::Request { id, .. }) => {
                let m =
                    Message::error(Some(id), &ErrorObject::new(code::INVALID_REQUEST, "initialize cannot be batched"));
                futs.push(tokio::spawn(async move { m }));
            }
            Ok(Message::Notification { method, params }) => gw.notification(&s, &method, params.as_deref()),
            Ok(m) => s.on_client_response(m),
            Err(e) => {
                let m = Message::error(None, &ErrorObject::new(e.code(), e.to_string()));
                futs.push(tokio::spawn(async move { m }));
            }
        }
    }
    if futs.is_empty() {
        return StatusCode::ACCEPTED.into_response();
    }
    let mut out = String::from("[");
    for (i, r) in futures::future::join_all(futs).await.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match r {
            Ok(m) => out.push_str(&m.to_json()),
            Err(_) => {
                out.push_str(&Message::error(None, &ErrorObject::new(code::INTERNAL_ERROR, "internal error")).to_json())
            }
        }
    }
    out.push(']');
    json_response(out, None)
}

async fn get_mcp(gw: Arc<Gateway>, topic: Option<String>, headers: HeaderMap) -> Response {
    let topic = topic.as_deref();
    if !gw.serves(topic) {
        return no_endpoint();
    }
    let wants_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream") || v.contains("*/*"));
    if !wants_sse {
        return rpc_error(
            StatusCode::NOT_ACCEPTABLE,
            code::SESSION,
            "Not Acceptable: GET needs Accept: text/event-stream",
        );
    }
    let who = match gw.authenticate_http(&headers, topic).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let s = match session_for(&gw, topic, &headers, &who) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(r) = check_version(&headers) {
        return r;
    }
    s.touch();
    let Output::Http(out) = &s.out else { return no_endpoint() };
    if let Some(last) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        // Resume exactly the stream the id belongs to, after that event.
        let Some((sid, seq)) = parse_event_id(last) else {
            return rpc_error(StatusCode::BAD_REQUEST, code::SESSION, "Bad Request: malformed Last-Event-ID");
        };
        let Some(buf) = out.stream(sid) else {
            return rpc_error(
                StatusCode::NOT_FOUND,
                code::SESSION,
                "Last-Event-ID refers to a stream that is no longer buffered",
            );
        };
        let att = if sid == 0 {
            match buf.attach() {
                Some(a) => Some(a),
                None => {
                    return rpc_error(
                        StatusCode::CONFLICT,
                        code::SESSION,
                        "Conflict: this session already has an open GET stream",
                    )
                }
            }
        } else {
            None
        };
        return sse_response(buf.sse(Some(seq), att, false, Some(SSE_KEEPALIVE)));
    }
    let Some(att) = out.standalone.attach() else {
        return rpc_error(StatusCode::CONFLICT, code::SESSION, "Conflict: only one GET stream per session is allowed");
    };
    sse_response(out.standalone.clone().sse(None, Some(att), true, Some(SSE_KEEPALIVE)))
}

async fn delete_mcp(gw: Arc<Gateway>, topic: Option<String>, headers: HeaderMap) -> Response {
    if !gw.serves(topic.as_deref()) {
        return no_endpoint();
    }
    let who = match gw.authenticate_http(&headers, topic.as_deref()).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let s = match session_for(&gw, topic.as_deref(), &headers, &who) {
        Ok(s) => s,
        Err(r) => return r,
    };
    gw.end_session(&s.id).await;
    tracing::info!(session = s.key, "session ended by client");
    StatusCode::OK.into_response()
}
