//! Downstream stateless era (MCP 2026-07-28) on the same endpoints as the session era. A request is modern when it
//! carries no `Mcp-Session-Id` and either names a non-session-era `MCP-Protocol-Version` or carries the `_meta`
//! envelope; the era is chosen per request, so one endpoint serves both kinds of client.
//!
//! Validation follows the spec's ladder (first failure wins): envelope present (400 -32602) → headers mirror the
//! body (400 -32020) → version supported (400 -32022 with `{supported, requested}`). Each request runs in an
//! ephemeral session that exists only for that request; closing the response stream cancels the upstream call.
//! Every result carries `resultType`; lists and `resources/read` carry `ttlMs`/`cacheScope`.
//!
//! Opt-in (`server.stateless_era = true`) until cross-era translation (InputRequiredResult) lands: without it a
//! modern client could not answer an upstream's sampling or elicitation request, so by default `server/discover`
//! gets -32601 and `auto` clients fall back to the session era, where everything works.

// Handlers return ready-made `Response`s as errors, like http.rs.
#![allow(clippy::result_large_err)]

use crate::http::{rpc_error, Accept};
use crate::session::{HttpOutput, Output, Session};
use crate::stream::StreamBuf;
use crate::Gateway;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use portcullis_auth::Principal;
use portcullis_protocol::raw::{raw, to_raw};
use portcullis_protocol::{code, version, ErrorObject, Id, Message, RawObject};
use serde_json::value::RawValue;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub const PROTOCOL_VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";
pub const CLIENT_CAPABILITIES_META: &str = "io.modelcontextprotocol/clientCapabilities";
pub const SUBSCRIPTION_ID_META: &str = "io.modelcontextprotocol/subscriptionId";
pub const HEADER_MISMATCH: i64 = -32020;
pub const UNSUPPORTED_VERSION: i64 = -32022;

/// Does this POST belong to the stateless era?
pub fn is_modern(headers: &HeaderMap, msg: &Message) -> bool {
    if headers.contains_key(crate::http::SESSION_HEADER) {
        return false;
    }
    if let Some(v) = headers.get(crate::http::VERSION_HEADER).and_then(|v| v.to_str().ok()) {
        return !version::is_session_era(v);
    }
    msg.params().is_some_and(|p| p.get().contains(PROTOCOL_VERSION_META)) && msg.method() != Some("initialize")
}

/// The spec's HTTP status for a JSON-RPC error code on this era's wire.
fn status_for(code: i64) -> StatusCode {
    match code {
        code::PARSE_ERROR
        | code::INVALID_REQUEST
        | code::INVALID_PARAMS
        | HEADER_MISMATCH
        | -32021
        | UNSUPPORTED_VERSION => StatusCode::BAD_REQUEST,
        code::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

/// Decode a header value that may use the `=?base64?…?=` form for values that are not header-safe.
fn decode_header(v: &str) -> Option<String> {
    match v.strip_prefix("=?base64?").and_then(|r| r.strip_suffix("?=")) {
        Some(payload) => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(payload).ok()?;
            String::from_utf8(bytes).ok()
        }
        None => Some(v.to_owned()),
    }
}

/// The validation ladder (first failure wins). `headers` is `None` on stdio, where only the envelope is checked.
type Rejection = (i64, String, Option<serde_json::Value>);

fn ladder(headers: Option<&HeaderMap>, method: &str, params: Option<&RawValue>) -> Result<String, Rejection> {
    let obj = params.and_then(|p| RawObject::parse(p.get()).ok());
    let meta = obj.as_ref().and_then(|o| o.get("_meta")).and_then(|m| RawObject::parse(m.get()).ok());
    let Some(meta) = meta else {
        return Err((
            code::INVALID_PARAMS,
            format!(
                "params._meta must be an object carrying {PROTOCOL_VERSION_META:?} and {CLIENT_CAPABILITIES_META:?}"
            ),
            None,
        ));
    };
    let missing: Vec<&str> =
        [PROTOCOL_VERSION_META, CLIENT_CAPABILITIES_META].into_iter().filter(|k| meta.get(k).is_none()).collect();
    if !missing.is_empty() {
        return Err((
            code::INVALID_PARAMS,
            format!("params._meta is missing the required envelope key(s): {}", missing.join(", ")),
            None,
        ));
    }
    let body_version = meta.get_str(PROTOCOL_VERSION_META);
    if let Some(headers) = headers {
        // Routing headers appear once each; first-copy and last-copy readers would disagree otherwise.
        for h in [crate::http::VERSION_HEADER, "mcp-method", "mcp-name"] {
            if headers.get_all(h).iter().count() > 1 {
                return Err((HEADER_MISMATCH, format!("{h} header appears more than once"), None));
            }
        }
        let header_version = headers.get(crate::http::VERSION_HEADER).and_then(|v| v.to_str().ok());
        if header_version.is_none() || header_version != body_version.as_deref() {
            return Err((
                HEADER_MISMATCH,
                "MCP-Protocol-Version header does not match the request's protocol version".into(),
                None,
            ));
        }
        if headers.get("mcp-method").and_then(|v| v.to_str().ok()) != Some(method) {
            return Err((HEADER_MISMATCH, "Mcp-Method header does not match the request body's method".into(), None));
        }
        let name_key = match method {
            "tools/call" | "prompts/get" => Some("name"),
            "resources/read" => Some("uri"),
            _ => None,
        };
        if let Some(key) = name_key {
            if let Some(body_value) = obj.as_ref().and_then(|o| o.get_str(key)) {
                let header = headers.get("mcp-name").and_then(|v| v.to_str().ok()).and_then(decode_header);
                if header.as_deref() != Some(body_value.as_str()) {
                    return Err((
                        HEADER_MISMATCH,
                        format!("Mcp-Name header does not match the request body's {key:?}"),
                        None,
                    ));
                }
            }
        }
    }
    let Some(v) = body_version else {
        return Err((code::INVALID_PARAMS, "the protocol-version envelope value must be a string".into(), None));
    };
    if v != version::STATELESS_ERA {
        let data = serde_json::json!({"supported": [version::STATELESS_ERA], "requested": v});
        return Err((UNSUPPORTED_VERSION, "Unsupported protocol version".into(), Some(data)));
    }
    Ok(v)
}

/// Add `resultType` (every result) and cache hints (lists, `resources/read`) unless the upstream set them.
fn finish_result(gw: &Gateway, method: &str, msg: Message) -> Message {
    let Message::Response { id, result } = msg else { return msg };
    let Ok(mut obj) = RawObject::parse(result.get()) else {
        return Message::Response { id, result };
    };
    if obj.get("resultType").is_none() {
        obj.set("resultType", raw("\"complete\""));
    }
    let cacheable = matches!(
        method,
        "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list" | "resources/read"
    );
    if cacheable {
        if obj.get("ttlMs").is_none() {
            obj.set("ttlMs", raw("0"));
        }
        // With [auth], what a caller sees may depend on who they are: never let a shared cache reuse it.
        let scope = if gw.cfg.auth.is_some() || method == "resources/read" { "\"private\"" } else { "\"public\"" };
        if obj.get("cacheScope").is_none() {
            obj.set("cacheScope", raw(scope));
        }
    }
    Message::Response { id, result: obj.into_raw() }
}

fn reply(gw: &Gateway, method: &str, msg: Message) -> Response {
    let msg = finish_result(gw, method, msg);
    let status = msg.error_code().map_or(StatusCode::OK, status_for);
    (status, [(header::CONTENT_TYPE, "application/json")], msg.to_json()).into_response()
}

/// Cancels the upstream call when the response stream goes away before an answer (spec: closing the stream is
/// the stateless era's cancellation). A stream ended by an `InputRequiredResult` is answered, not abandoned.
pub(crate) struct CancelOnDrop {
    call: Arc<crate::mrtr::ModernCall>,
    buf: Arc<StreamBuf>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.call.answered(&self.buf) {
            self.call.session.cancel(&self.call.orig_id, "the client closed the response stream");
        }
    }
}

/// What a stateless-era request turned into, before transport framing.
pub(crate) enum Outcome {
    /// Answered at once (discover, errors).
    Reply(Message),
    /// A forwarded call: its notifications and answer arrive on `buf`.
    Call(Arc<StreamBuf>, CancelOnDrop),
    /// `subscriptions/listen`: events arrive on `buf` until the guard is dropped.
    Listen(Arc<StreamBuf>, ListenerGuard),
}

fn rejection(id: Id, code: i64, message: &str, data: Option<serde_json::Value>) -> Outcome {
    let mut e = ErrorObject::new(code, message);
    e.data = data;
    Outcome::Reply(Message::error(Some(id), &e))
}

/// The transport-neutral core. `headers` is `None` on stdio (no header rung there).
pub(crate) fn handle(
    gw: &Arc<Gateway>,
    topic: Option<&str>,
    headers: Option<&HeaderMap>,
    id: Id,
    method: String,
    params: Option<Box<RawValue>>,
    who: Arc<Principal>,
) -> Outcome {
    if !gw.cfg.server.stateless_era {
        return rejection(
            id,
            code::METHOD_NOT_FOUND,
            "protocol 2026-07-28 is not enabled on this gateway (server.stateless_era); use initialize (2025-11-25)",
            None,
        );
    }
    if let Err((code, msg, data)) = ladder(headers, &method, params.as_deref()) {
        return rejection(id, code, &msg, data);
    }
    match method.as_str() {
        "server/discover" => {
            return Outcome::Reply(finish_result(gw, &method, Message::result(id, discover(gw, topic))))
        }
        "subscriptions/listen" => return listen(gw, topic, id, params.as_deref()),
        "initialize" | "ping" | "logging/setLevel" | "resources/subscribe" | "resources/unsubscribe" => {
            return rejection(
                id,
                code::METHOD_NOT_FOUND,
                &format!("{method} does not exist in protocol 2026-07-28"),
                None,
            );
        }
        _ => {}
    }
    let (request_state, responses) = crate::mrtr::retry_fields(params.as_deref());
    let buf = StreamBuf::new(1, gw.cfg.server.sse_replay);
    let call = match request_state {
        // A retry carrying the client's answers to *our* InputRequiredResult: resume the held upstream call. (A
        // state of a stateless-era upstream's own is opaque to us and travels with the request as it is.)
        Some(state) if state.starts_with("pc1.") => {
            let call = match gw.take_held(&state, &who) {
                Ok(c) => c,
                Err(why) => return rejection(id, code::INVALID_PARAMS, why, None),
            };
            if call.method != method {
                gw.hold(call);
                return rejection(id, code::INVALID_PARAMS, "requestState belongs to another method", None);
            }
            if let Err(why) = call.resume(id.clone(), buf.clone(), responses.as_deref()) {
                // The held call is untouched: the client may retry correctly.
                gw.hold(call);
                return rejection(id, code::INVALID_PARAMS, &why, None);
            }
            call
        }
        _ => {
            let forwarded: Vec<_> = headers
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.as_str().starts_with("mcp-param-"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            start_call(gw, topic, id, &method, params, who, buf.clone(), forwarded)
        }
    };
    Outcome::Call(buf.clone(), CancelOnDrop { call, buf })
}

pub(crate) async fn post(
    gw: Arc<Gateway>,
    topic: Option<&str>,
    headers: &HeaderMap,
    msg: Message,
    acc: Accept,
    who: Arc<Principal>,
) -> Response {
    let (id, method, params) = match msg {
        Message::Request { id, method, params } => (id, method, params),
        // No client-to-server notifications act on anything in this era; acknowledge and drop them.
        Message::Notification { .. } => return StatusCode::ACCEPTED.into_response(),
        _ => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                code::INVALID_REQUEST,
                "clients must not POST responses in protocol 2026-07-28",
            )
        }
    };
    match handle(&gw, topic, Some(headers), id, method.clone(), params, who) {
        Outcome::Reply(msg) => reply(&gw, &method, msg),
        Outcome::Listen(buf, guard) => {
            let body = futures::StreamExt::map(
                buf.sse(None, None, false, Some(std::time::Duration::from_secs(15))),
                move |c| {
                    let _ = &guard;
                    c
                },
            );
            crate::http::sse_response(body)
        }
        Outcome::Call(buf, guard) => {
            buf.wait_first().await;
            if acc.json || !acc.sse {
                if let Some(single) = buf.take_single() {
                    let status = Message::parse(single.as_bytes())
                        .ok()
                        .and_then(|m| m.error_code())
                        .map_or(StatusCode::OK, status_for);
                    return (status, [(header::CONTENT_TYPE, "application/json")], single.to_string()).into_response();
                }
            }
            // Progress came first: stream. The guard lives as long as the body, so a closed stream cancels the call.
            let body = futures::StreamExt::map(buf.sse(None, None, false, None), move |chunk| {
                let _ = &guard;
                chunk
            });
            crate::http::sse_response(body)
        }
    }
}

/// Is this stdio message a stateless-era request (it carries the envelope)?
pub(crate) fn is_modern_stdio(msg: &Message) -> bool {
    msg.is_request()
        && msg.method() != Some("initialize")
        && msg.params().is_some_and(|p| p.get().contains(PROTOCOL_VERSION_META))
}

/// Stateless era over stdio: the same core; every message of the call's stream is written in order.
pub(crate) fn stdio(gw: &Arc<Gateway>, s: &Arc<Session>, id: Id, method: String, params: Option<Box<RawValue>>) {
    match handle(gw, s.topic.as_deref(), None, id, method.clone(), params, s.principal.clone()) {
        Outcome::Reply(msg) => s.send_unrelated(&finish_result(gw, &method, msg)),
        Outcome::Call(buf, guard) => drain(s.clone(), buf, Box::new(guard)),
        Outcome::Listen(buf, guard) => drain(s.clone(), buf, Box::new(guard)),
    }
}

fn drain(s: Arc<Session>, buf: Arc<StreamBuf>, guard: Box<dyn Send>) {
    tokio::spawn(async move {
        let mut cursor = 0;
        loop {
            tokio::select! {
                batch = buf.next_batch(cursor, None) => {
                    let Some(batch) = batch else { break };
                    for (seq, json) in batch {
                        s.send_json(json.to_string());
                        cursor = seq;
                    }
                }
                _ = s.closed.cancelled() => break,
            }
        }
        drop(guard);
    });
}

/// Start a stateless-era call in its own ephemeral session (nothing outlives the call).
#[allow(clippy::too_many_arguments)]
fn start_call(
    gw: &Arc<Gateway>,
    topic: Option<&str>,
    id: Id,
    method: &str,
    params: Option<Box<RawValue>>,
    who: Arc<Principal>,
    buf: Arc<StreamBuf>,
    param_headers: Vec<(axum::http::HeaderName, axum::http::HeaderValue)>,
) -> Arc<crate::mrtr::ModernCall> {
    let s = Session::new(
        gw.sessions.next_key(),
        topic.map(Arc::from),
        Output::Http(HttpOutput::new(gw.cfg.server.sse_replay)),
        who,
    );
    *s.version.lock() = version::STATELESS_ERA.to_owned();
    *s.caps.lock() = envelope_caps(params.as_deref());
    s.initialized.store(true, Ordering::Relaxed);
    let _ = s.param_headers.set(param_headers);
    // The envelope describes the client's hop, not the upstream's: a session-era upstream rejects requests that
    // carry it, and a stateless-era one gets the gateway's own envelope instead.
    let params = strip_envelope(params);
    let call = crate::mrtr::ModernCall::new(gw, s.clone(), method, buf, id.clone());
    let _ = s.modern_call.set(Arc::downgrade(&call));
    let (task_call, task_gw, task_method) = (call.clone(), gw.clone(), method.to_owned());
    tokio::spawn(async move {
        let resp = task_gw.request(&s, id, &task_method, params).await;
        task_call.finish(finish_result(&task_gw, &task_method, resp));
    });
    call
}

fn strip_envelope(params: Option<Box<RawValue>>) -> Option<Box<RawValue>> {
    let p = params?;
    let Ok(mut obj) = RawObject::parse(p.get()) else { return Some(p) };
    let Some(mut meta) = obj.get("_meta").and_then(|m| RawObject::parse(m.get()).ok()) else { return Some(p) };
    for k in [PROTOCOL_VERSION_META, CLIENT_CAPABILITIES_META, "io.modelcontextprotocol/clientInfo"] {
        meta.remove(k);
    }
    if meta.0.is_empty() {
        obj.remove("_meta");
    } else {
        obj.set("_meta", meta.into_raw());
    }
    Some(obj.into_raw())
}

/// What the client can answer (sampling, elicitation, roots), from the request's `_meta` envelope.
fn envelope_caps(params: Option<&RawValue>) -> crate::session::ClientCaps {
    let caps = params
        .and_then(|p| RawObject::parse(p.get()).ok())
        .and_then(|o| o.get("_meta").and_then(|m| RawObject::parse(m.get()).ok()))
        .and_then(|m| m.get(CLIENT_CAPABILITIES_META).map(|c| c.get().to_owned()));
    let wrapped = caps.map(|c| raw(&format!("{{\"capabilities\":{c}}}")));
    crate::session::ClientCaps::from_initialize(wrapped.as_deref())
}

fn discover(gw: &Gateway, topic: Option<&str>) -> Box<RawValue> {
    let (_, caps, info, instructions) = gw.server_description(topic);
    let mut result = serde_json::json!({
        "supportedVersions": [version::STATELESS_ERA],
        "capabilities": caps,
        "resultType": "complete",
        "ttlMs": 0,
        "cacheScope": if gw.cfg.auth.is_some() { "private" } else { "public" },
        "_meta": {"serverInfo": info},
    });
    if let Some(i) = instructions {
        result["instructions"] = serde_json::Value::String(i);
    }
    to_raw(&result)
}

/// `subscriptions/listen`: acknowledge the honoured filter, then stream matching list_changed events (tagged with
/// the subscription id) from upstreams this endpoint can see, until the client closes the stream.
fn listen(gw: &Arc<Gateway>, topic: Option<&str>, id: Id, params: Option<&RawValue>) -> Outcome {
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct Filter {
        tools_list_changed: Option<bool>,
        prompts_list_changed: Option<bool>,
        resources_list_changed: Option<bool>,
    }
    #[derive(serde::Deserialize, Default)]
    struct P {
        #[serde(default)]
        notifications: Filter,
    }
    let p: P = params.and_then(|p| serde_json::from_str(p.get()).ok()).unwrap_or_default();
    let f = p.notifications;
    let mut honored = serde_json::Map::new();
    let mut methods = Vec::new();
    for (flag, key, method) in [
        (f.tools_list_changed, "toolsListChanged", "notifications/tools/list_changed"),
        (f.prompts_list_changed, "promptsListChanged", "notifications/prompts/list_changed"),
        (f.resources_list_changed, "resourcesListChanged", "notifications/resources/list_changed"),
    ] {
        if flag == Some(true) {
            honored.insert(key.into(), serde_json::Value::Bool(true));
            methods.push(method);
        }
    }
    let sub_id: serde_json::Value = serde_json::from_str(&id.to_json()).unwrap_or(serde_json::Value::Null);
    let buf = StreamBuf::new(0, gw.cfg.server.sse_replay);
    let ack = serde_json::json!({"notifications": honored, "_meta": {SUBSCRIPTION_ID_META: sub_id}});
    buf.push(Message::notification("notifications/subscriptions/acknowledged", Some(to_raw(&ack))).to_json());
    let listener = gw.add_listener(topic, methods, sub_id, buf.clone());
    Outcome::Listen(buf, listener)
}

/// Keeps a `subscriptions/listen` stream registered until its body is dropped.
pub struct ListenerGuard {
    pub(crate) gw: std::sync::Weak<Gateway>,
    pub(crate) key: u64,
}

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        if let Some(gw) = self.gw.upgrade() {
            gw.remove_listener(self.key);
        }
    }
}

/// Bytes of one listen-stream notification for `method`, tagged with the subscription id.
pub fn tagged(method: &str, sub_id: &serde_json::Value) -> String {
    let params = serde_json::json!({"_meta": {SUBSCRIPTION_ID_META: sub_id}});
    Message::notification(method, Some(to_raw(&params))).to_json()
}
