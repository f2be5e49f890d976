//! One logical connection to an upstream MCP server, kept alive across restarts.
//!
//! A [`Conn`] owns a transport ([`crate::pipe::Pipe`]), runs the `initialize` handshake, lists the server's
//! tools/prompts/resources for the catalog, and multiplexes many client sessions over one upstream JSON-RPC id
//! space: every forwarded request gets a fresh upstream id, and the response is routed back by that id. Messages
//! the upstream sends back (progress, logs, sampling/elicitation/roots requests) are attributed to the client
//! call they belong to and handed to that call's [`Sink`]; nothing is ever broadcast to other sessions.
//!
//! When the transport dies every in-flight call fails at once with `-32014`, and the supervisor restarts the
//! transport with exponential backoff.

use crate::attribution::Attribution;
use crate::error::CallError;
use crate::pipe::{Outgoing, Pipe, PipeEvent};
use crate::{spawn_pipe, ClientCaps, Sink, UpstreamEvent};
use parking_lot::Mutex;
use portcullis_catalog::{ListKind, UpstreamLists};
use portcullis_config::UpstreamConfig;
use portcullis_protocol::raw::{raw, to_raw};
use portcullis_protocol::{code, ErrorObject, Id, Message, RawObject};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

const SESSION_EXPIRED: &str = "upstream session expired (HTTP 404); re-initializing";

/// Session key of calls the gateway makes for itself (initialize, listing).
pub const GATEWAY_SESSION: u64 = 0;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Starting,
    Ready,
    /// Transport down; a restart is scheduled. `failures` counts consecutive failed starts.
    Down {
        reason: String,
        failures: u32,
    },
    Stopped,
}

/// What the upstream said in `initialize`.
#[derive(Debug)]
pub struct InitInfo {
    pub protocol_version: String,
    pub capabilities: RawObject,
    pub server_info: Option<Box<RawValue>>,
    pub instructions: Option<String>,
}

impl InitInfo {
    pub fn has_capability(&self, key: &str) -> bool {
        self.capabilities.get(key).is_some()
    }
}

struct Pending {
    session: u64,
    reply: oneshot::Sender<Result<Message, CallError>>,
    sink: Option<Arc<dyn Sink>>,
    /// Upstream-side progress token → the client's original token.
    progress: Option<(String, Box<RawValue>)>,
}

struct State {
    tx: Option<mpsc::Sender<Outgoing>>,
    generation: u64,
    pending: HashMap<i64, Pending>,
    init: Option<Arc<InitInfo>>,
}

pub(crate) struct Inner {
    pub(crate) name: Arc<str>,
    pub(crate) cfg: Arc<UpstreamConfig>,
    /// Set for a per-session connection: everything unattributed belongs to this session.
    owner: Option<Arc<dyn Sink>>,
    /// Catalog connections publish their lists; per-session ones do not.
    publishes: bool,
    events: mpsc::Sender<UpstreamEvent>,
    caps: ClientCaps,
    http: reqwest::Client,
    state: Mutex<State>,
    next_id: AtomicI64,
    status: watch::Sender<Status>,
    /// Why the transport last went down; kept through restarts so readiness can say why.
    last_error: Mutex<Option<String>>,
    /// The upstream speaks only the stateless era: every request carries the 2026-07-28 envelope.
    modern: std::sync::atomic::AtomicBool,
    service: Option<crate::ServiceHeaders>,
    stop: CancellationToken,
}

/// Cheap to clone; the supervisor task stops when [`Conn::shutdown`] is called.
#[derive(Clone)]
pub struct Conn {
    inner: Arc<Inner>,
}

/// Lets the gateway answer a server-to-client request later, on the connection generation it came from.
pub struct ReplyHandle {
    conn: Weak<Inner>,
    generation: u64,
    upstream_id: Id,
}

impl ReplyHandle {
    /// The id the upstream gave its request (to match its `notifications/cancelled`).
    pub fn upstream_id(&self) -> &Id {
        &self.upstream_id
    }

    /// Send the client's answer (a result or error message; its id is replaced by the upstream's).
    pub fn reply(self, msg: Message) {
        let Some(inner) = self.conn.upgrade() else { return };
        let msg = match msg {
            Message::Response { result, .. } => Message::Response { id: self.upstream_id, result },
            Message::Error { error, .. } => Message::Error { id: Some(self.upstream_id), error },
            _ => return,
        };
        let st = inner.state.lock();
        if st.generation == self.generation {
            if let Some(tx) = &st.tx {
                let _ = tx.try_send(msg.into());
            }
        }
    }

    pub fn reply_error(self, err: ErrorObject) {
        let id = self.upstream_id.clone();
        self.reply(Message::error(Some(id), &err));
    }
}

pub struct ConnSpec {
    pub cfg: Arc<UpstreamConfig>,
    /// The gateway's own credential for its own requests (initialize, listing), when the upstream has one.
    pub service: Option<crate::ServiceHeaders>,
    pub owner: Option<Arc<dyn Sink>>,
    pub publishes: bool,
    pub events: mpsc::Sender<UpstreamEvent>,
    pub caps: ClientCaps,
    pub http: reqwest::Client,
}

impl Conn {
    pub fn start(spec: ConnSpec) -> Conn {
        let (status, _) = watch::channel(Status::Starting);
        let inner = Arc::new(Inner {
            name: Arc::from(spec.cfg.name.as_str()),
            cfg: spec.cfg,
            owner: spec.owner,
            publishes: spec.publishes,
            events: spec.events,
            caps: spec.caps,
            http: spec.http,
            state: Mutex::new(State { tx: None, generation: 0, pending: HashMap::new(), init: None }),
            next_id: AtomicI64::new(1),
            status,
            last_error: Mutex::new(None),
            modern: std::sync::atomic::AtomicBool::new(false),
            service: spec.service,
            stop: CancellationToken::new(),
        });
        tokio::spawn(supervise(inner.clone()));
        Conn { inner }
    }

    pub fn name(&self) -> &Arc<str> {
        &self.inner.name
    }

    pub fn status(&self) -> Status {
        self.inner.status.borrow().clone()
    }

    /// Does this upstream speak only the stateless era (answers may be `InputRequiredResult`s)?
    pub fn is_modern(&self) -> bool {
        self.inner.modern.load(Ordering::Relaxed)
    }

    /// The reason the upstream last went down, until it is ready again.
    pub fn last_error(&self) -> Option<String> {
        self.inner.last_error.lock().clone()
    }

    pub fn subscribe_status(&self) -> watch::Receiver<Status> {
        self.inner.status.subscribe()
    }

    pub fn init_info(&self) -> Option<Arc<InitInfo>> {
        self.inner.state.lock().init.clone()
    }

    pub fn in_flight(&self) -> usize {
        self.inner.state.lock().pending.len()
    }

    /// Reserve the upstream id a call will use, so the caller can cancel it before it completes.
    pub fn alloc_id(&self) -> i64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Forward one request and wait for its answer (a `Response` or `Error` message carrying the upstream id;
    /// the caller restores the client's id). `sink` receives messages the upstream sends about this call.
    pub async fn call(&self, call: Call<'_>) -> Result<Message, CallError> {
        let Call { uid, session, method, params, sink, timeout, headers } = call;
        let deadline = Instant::now() + timeout;
        loop {
            self.wait_ready(deadline).await?;
            // Between a crash and the supervisor publishing it, status still says Ready but the transport is
            // gone: wait for the restart instead of failing a call that was never sent.
            if self.inner.state.lock().tx.is_some() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(self.unavailable("not connected"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        call_inner(&self.inner, Req { uid, session, method, params, sink, deadline, headers }).await
    }

    async fn wait_ready(&self, deadline: Instant) -> Result<(), CallError> {
        let mut rx = self.inner.status.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                Status::Ready => return Ok(()),
                Status::Stopped => return Err(self.unavailable("the gateway is shutting down")),
                // Repeated failures: fail fast rather than make every caller wait out the backoff.
                Status::Down { reason, failures } if *failures >= 3 => {
                    return Err(self.unavailable(&format!("{reason}; restarting with backoff")))
                }
                _ => {}
            }
            if tokio::time::timeout_at(deadline.into(), rx.changed()).await.is_err() {
                let why = match &*rx.borrow() {
                    Status::Down { reason, .. } => reason.clone(),
                    _ => "still initializing".into(),
                };
                return Err(self.unavailable(&why));
            }
        }
    }

    fn unavailable(&self, reason: &str) -> CallError {
        CallError::Unavailable { upstream: self.inner.name.to_string(), reason: reason.to_owned() }
    }

    /// Cancel an in-flight call: tell the upstream (`notifications/cancelled`) and complete the call locally.
    pub fn cancel(&self, uid: i64, reason: &str) {
        let (pending, tx) = {
            let mut st = self.inner.state.lock();
            (st.pending.remove(&uid), st.tx.clone())
        };
        if let Some(p) = pending {
            if let Some(tx) = tx {
                let params = to_raw(&serde_json::json!({"requestId": uid, "reason": reason}));
                let _ = tx.try_send(Message::notification("notifications/cancelled", Some(params)).into());
            }
            let _ = p.reply.send(Err(CallError::Cancelled));
        }
    }

    /// Send a notification (e.g. `notifications/roots/list_changed`) if the connection is up.
    pub fn notify(&self, method: &str, params: Option<Box<RawValue>>) {
        if let Some(tx) = &self.inner.state.lock().tx {
            let _ = tx.try_send(Message::notification(method, params).into());
        }
    }

    /// Stop the supervisor, fail in-flight calls and kill the transport (child processes are reaped).
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        let mut rx = self.inner.status.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| *s == Status::Stopped)).await;
    }
}

/// One forwarded request, as the gateway hands it to [`Conn::call`].
pub struct Call<'a> {
    /// From [`Conn::alloc_id`].
    pub uid: i64,
    /// The client session (attribution of what the upstream sends back).
    pub session: u64,
    pub method: &'a str,
    pub params: Option<Box<RawValue>>,
    /// Receives progress and server-to-client requests that belong to this call.
    pub sink: Option<Arc<dyn Sink>>,
    pub timeout: Duration,
    /// Transport headers for this call (HTTP upstreams: the On-Behalf-Of credential).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

struct Req<'a> {
    uid: i64,
    session: u64,
    method: &'a str,
    params: Option<Box<RawValue>>,
    sink: Option<Arc<dyn Sink>>,
    deadline: Instant,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl<'a> Req<'a> {
    fn internal(uid: i64, method: &'a str, params: Option<Box<RawValue>>, deadline: Instant) -> Req<'a> {
        Req { uid, session: GATEWAY_SESSION, method, params, sink: None, deadline, headers: Vec::new() }
    }
}

async fn call_inner(inner: &Arc<Inner>, req: Req<'_>) -> Result<Message, CallError> {
    let Req { uid, session, method, mut params, sink, deadline, mut headers } = req;
    if session == GATEWAY_SESSION && headers.is_empty() {
        if let Some(service) = &inner.service {
            headers = service();
        }
    }
    if inner.modern.load(Ordering::Relaxed) {
        params = modern_envelope(inner, method, params, &mut headers);
    }
    // Progress tokens are chosen by clients and collide across sessions: give the upstream one of ours.
    let mut progress = None;
    if let Some(p) = &params {
        if p.get().contains("\"progressToken\"") {
            if let Some((rewritten, original)) = rewrite_progress_token(p, uid) {
                params = Some(rewritten);
                progress = Some((uid.to_string(), original));
            }
        }
    }
    let (tx_reply, rx_reply) = oneshot::channel();
    let tx = {
        let mut st = inner.state.lock();
        let Some(tx) = st.tx.clone() else {
            return Err(CallError::Unavailable { upstream: inner.name.to_string(), reason: "not connected".into() });
        };
        st.pending.insert(uid, Pending { session, reply: tx_reply, sink, progress });
        tx
    };
    let msg = Message::Request { id: Id::Num(uid), method: method.to_owned(), params };
    if tx.send(Outgoing { msg, headers }).await.is_err() {
        inner.state.lock().pending.remove(&uid);
        return Err(CallError::Unavailable { upstream: inner.name.to_string(), reason: "connection closed".into() });
    }
    match tokio::time::timeout_at(deadline.into(), rx_reply).await {
        Ok(Ok(res)) => res,
        Ok(Err(_)) => {
            Err(CallError::Unavailable { upstream: inner.name.to_string(), reason: "connection closed".into() })
        }
        Err(_) => {
            if inner.state.lock().pending.remove(&uid).is_some() {
                let params = to_raw(&serde_json::json!({"requestId": uid, "reason": "timed out at the gateway"}));
                let _ = tx.try_send(Message::notification("notifications/cancelled", Some(params)).into());
            }
            Err(CallError::Timeout { upstream: inner.name.to_string(), method: method.to_owned() })
        }
    }
}

/// Replace `params._meta.progressToken` with `uid`; returns the new params and the original token.
fn rewrite_progress_token(params: &RawValue, uid: i64) -> Option<(Box<RawValue>, Box<RawValue>)> {
    let mut obj = RawObject::parse(params.get()).ok()?;
    let mut meta = RawObject::parse(obj.get("_meta")?.get()).ok()?;
    let original = raw(meta.get("progressToken")?.get());
    meta.set("progressToken", raw(&uid.to_string()));
    obj.set("_meta", meta.into_raw());
    Some((obj.into_raw(), original))
}

async fn supervise(inner: Arc<Inner>) {
    let mut backoff = inner.cfg.restart_initial_backoff;
    let mut failures = 0u32;
    loop {
        if inner.stop.is_cancelled() {
            break;
        }
        let _ = inner.status.send_replace(Status::Starting);
        let started = Instant::now();
        let reason = match spawn_pipe(&inner.cfg, &inner.http).await {
            Ok(pipe) => run_pipe(&inner, pipe).await,
            Err(e) => e,
        };
        let was_up = inner.state.lock().init.is_some();
        fail_all(&inner, &reason);
        if inner.stop.is_cancelled() {
            break;
        }
        if reason == SESSION_EXPIRED && was_up {
            // The server restarted or dropped our session: open a new one right away (spec: re-initialize).
            tracing::info!(upstream = %inner.name, "upstream session expired; re-initializing");
            continue;
        }
        if was_up && started.elapsed() > Duration::from_secs(30) {
            backoff = inner.cfg.restart_initial_backoff;
            failures = 0;
        }
        failures += 1;
        tracing::warn!(upstream = %inner.name, %reason, retry_in = ?backoff, "upstream down");
        let _ = inner.events.try_send(UpstreamEvent::Status { upstream: inner.name.clone(), ready: false });
        *inner.last_error.lock() = Some(reason.clone());
        let _ = inner.status.send_replace(Status::Down { reason: reason.clone(), failures });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = inner.stop.cancelled() => break,
        }
        backoff = (backoff * 2).min(inner.cfg.restart_max_backoff);
    }
    fail_all(&inner, "the gateway is shutting down");
    let _ = inner.status.send_replace(Status::Stopped);
}

/// Fail every in-flight call promptly: a crashed upstream must never leave a client hanging.
fn fail_all(inner: &Inner, reason: &str) {
    let drained: Vec<Pending> = {
        let mut st = inner.state.lock();
        st.tx = None;
        st.init = None;
        st.pending.drain().map(|(_, p)| p).collect()
    };
    for p in drained {
        let _ = p.reply.send(Err(CallError::Unavailable {
            upstream: inner.name.to_string(),
            reason: format!("{reason} while the call was in flight"),
        }));
    }
}

/// Drive one transport instance until it closes; returns why it closed.
async fn run_pipe(inner: &Arc<Inner>, pipe: Pipe) -> String {
    let Pipe { tx, mut rx, guard } = pipe;
    let generation = {
        let mut st = inner.state.lock();
        st.generation += 1;
        st.tx = Some(tx);
        st.generation
    };
    let init = tokio::spawn(initialize(inner.clone()));
    let reason = loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            _ = inner.stop.cancelled() => break "the gateway is shutting down".to_owned(),
        };
        match ev {
            Some(PipeEvent::Message(m)) => on_message(inner, generation, m),
            Some(PipeEvent::TooLarge { id, limit }) => on_too_large(inner, id, limit),
            Some(PipeEvent::SessionExpired) => break SESSION_EXPIRED.into(),
            Some(PipeEvent::Closed { reason }) => break reason,
            None => break "transport ended".into(),
        }
    };
    init.abort();
    inner.state.lock().tx = None;
    guard.shutdown().await;
    reason
}

async fn initialize(inner: Arc<Inner>) {
    inner.modern.store(false, Ordering::Relaxed);
    let deadline = Instant::now() + inner.cfg.connect_timeout;
    let params = serde_json::json!({
        "protocolVersion": portcullis_protocol::version::SESSION_ERA[0],
        "capabilities": inner.caps.to_json(&inner.cfg),
        "clientInfo": {"name": "portcullis", "version": env!("CARGO_PKG_VERSION")},
    });
    let uid = inner.next_id.fetch_add(1, Ordering::Relaxed);
    let res = call_inner(&inner, Req::internal(uid, "initialize", Some(to_raw(&params)), deadline)).await;
    // Era detection, once per connection: the session era when the upstream speaks it (it carries
    // server-to-client requests natively), else the stateless era if `server/discover` says so.
    let res = match res.map(parse_init) {
        Ok(Ok(info)) => Ok(info),
        Ok(Err(e)) | Err(e) => match discover(&inner, deadline).await {
            Some(info) => Ok(info),
            None => Err(e),
        },
    };
    let info = match res {
        Ok(info) => Arc::new(info),
        Err(e) => {
            let msg = e.to_string();
            tracing::error!(upstream = %inner.name, error = %msg, "initialize failed; check the upstream's command/url in the config");
            // Closing the transport makes the supervisor back off and retry.
            inner.state.lock().tx = None;
            let _ = inner.events.try_send(UpstreamEvent::InitFailed { upstream: inner.name.clone(), reason: msg });
            return;
        }
    };
    if !inner.modern.load(Ordering::Relaxed) {
        let st = inner.state.lock();
        if let Some(tx) = &st.tx {
            let _ = tx.try_send(Message::notification("notifications/initialized", None).into());
        }
    }
    inner.state.lock().init = Some(info.clone());
    tracing::info!(upstream = %inner.name, version = %info.protocol_version, "upstream initialized");
    if inner.publishes {
        match fetch_lists(&inner, &info).await {
            Ok(lists) => {
                let _ = inner
                    .events
                    .send(UpstreamEvent::Lists {
                        upstream: inner.name.clone(),
                        lists: Arc::new(lists),
                        changed: ListKind::ALL.to_vec(),
                    })
                    .await;
            }
            Err(e) => tracing::warn!(upstream = %inner.name, error = %e, "listing failed after initialize"),
        }
    }
    *inner.last_error.lock() = None;
    let _ = inner.status.send_replace(Status::Ready);
    let _ = inner.events.try_send(UpstreamEvent::Status { upstream: inner.name.clone(), ready: true });
}

/// Probe `server/discover`; on a 2026-07-28 answer, switch this connection to the stateless era.
async fn discover(inner: &Arc<Inner>, deadline: Instant) -> Option<InitInfo> {
    inner.modern.store(true, Ordering::Relaxed);
    let uid = inner.next_id.fetch_add(1, Ordering::Relaxed);
    let res = call_inner(inner, Req::internal(uid, "server/discover", None, deadline)).await;
    let result = match res {
        Ok(Message::Response { result, .. }) => result,
        _ => {
            inner.modern.store(false, Ordering::Relaxed);
            return None;
        }
    };
    let obj = RawObject::parse(result.get()).ok()?;
    let versions: Vec<String> =
        obj.get("supportedVersions").and_then(|v| serde_json::from_str(v.get()).ok()).unwrap_or_default();
    if !versions.iter().any(|v| v == portcullis_protocol::version::STATELESS_ERA) {
        inner.modern.store(false, Ordering::Relaxed);
        return None;
    }
    let server_info = obj
        .get("_meta")
        .and_then(|m| RawObject::parse(m.get()).ok())
        .and_then(|m| m.get("serverInfo").map(|v| raw(v.get())));
    tracing::info!(upstream = %inner.name, "upstream speaks only the stateless era (2026-07-28)");
    Some(InitInfo {
        protocol_version: portcullis_protocol::version::STATELESS_ERA.to_owned(),
        capabilities: obj.get("capabilities").and_then(|c| RawObject::parse(c.get()).ok()).unwrap_or_default(),
        server_info,
        instructions: obj.get_str("instructions"),
    })
}

/// The 2026-07-28 envelope on a request to a stateless-era upstream: `_meta` keys plus the mirrored headers.
fn modern_envelope(
    inner: &Inner,
    method: &str,
    params: Option<Box<RawValue>>,
    headers: &mut Vec<(http::HeaderName, http::HeaderValue)>,
) -> Option<Box<RawValue>> {
    const V: &str = portcullis_protocol::version::STATELESS_ERA;
    let mut obj = params.as_deref().and_then(|p| RawObject::parse(p.get()).ok()).unwrap_or_default();
    let mut meta = obj.get("_meta").and_then(|m| RawObject::parse(m.get()).ok()).unwrap_or_default();
    meta.set_str("io.modelcontextprotocol/protocolVersion", V);
    meta.set("io.modelcontextprotocol/clientCapabilities", to_raw(&inner.caps.to_json(&inner.cfg)));
    meta.set(
        "io.modelcontextprotocol/clientInfo",
        to_raw(&serde_json::json!({"name": "portcullis", "version": env!("CARGO_PKG_VERSION")})),
    );
    let name = match method {
        "tools/call" | "prompts/get" => obj.get_str("name"),
        "resources/read" => obj.get_str("uri"),
        _ => None,
    };
    obj.set("_meta", meta.into_raw());
    let mut push = |k: &'static str, v: &str| {
        if let Ok(v) = http::HeaderValue::from_str(v) {
            headers.push((http::HeaderName::from_static(k), v));
        }
    };
    push("mcp-protocol-version", V);
    push("mcp-method", method);
    if let Some(n) = name {
        // Values that are not header-safe travel base64-wrapped (spec: `=?base64?…?=`).
        if n.bytes().all(|b| (0x20..0x7f).contains(&b)) && n.trim() == n {
            push("mcp-name", &n);
        } else {
            use base64::Engine;
            push("mcp-name", &format!("=?base64?{}?=", base64::engine::general_purpose::STANDARD.encode(n)));
        }
    }
    Some(obj.into_raw())
}

fn parse_init(msg: Message) -> Result<InitInfo, CallError> {
    let result = match msg {
        Message::Response { result, .. } => result,
        Message::Error { error, .. } => {
            return Err(CallError::Protocol(format!("initialize was refused: {}", error.get())));
        }
        _ => return Err(CallError::Protocol("unexpected answer to initialize".into())),
    };
    let obj = RawObject::parse(result.get()).map_err(|e| CallError::Protocol(format!("bad initialize result: {e}")))?;
    let protocol_version = obj.get_str("protocolVersion").unwrap_or_default();
    let capabilities = obj.get("capabilities").and_then(|c| RawObject::parse(c.get()).ok()).unwrap_or_default();
    Ok(InitInfo {
        protocol_version,
        capabilities,
        server_info: obj.get("serverInfo").map(|v| raw(v.get())),
        instructions: obj.get_str("instructions"),
    })
}

/// Most pages and items accepted from one upstream list; protects the gateway from a runaway server.
const MAX_PAGES: usize = 100;
const MAX_ITEMS: usize = 10_000;

pub(crate) async fn fetch_lists(inner: &Arc<Inner>, info: &InitInfo) -> Result<UpstreamLists, CallError> {
    let mut lists = UpstreamLists::default();
    for kind in ListKind::ALL {
        let cap = match kind {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources | ListKind::Templates => "resources",
        };
        if info.has_capability(cap) {
            *lists.get_mut(kind) = fetch_list(inner, kind).await?;
        }
    }
    Ok(lists)
}

async fn fetch_list(inner: &Arc<Inner>, kind: ListKind) -> Result<Vec<Box<RawValue>>, CallError> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let params = cursor.as_ref().map(|c| to_raw(&serde_json::json!({ "cursor": c })));
        let uid = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + inner.cfg.timeout;
        let msg = call_inner(inner, Req::internal(uid, kind.method(), params, deadline)).await?;
        let Message::Response { result, .. } = msg else {
            // A server that advertises a capability but rejects the list: treat as empty, keep the rest.
            tracing::warn!(upstream = %inner.name, method = kind.method(), "list request failed; treating as empty");
            return Ok(items);
        };
        let obj = RawObject::parse(result.get()).map_err(|e| CallError::Protocol(e.to_string()))?;
        if let Some(arr) = obj.get(kind.result_key()) {
            let page: Vec<Box<RawValue>> =
                serde_json::from_str(arr.get()).map_err(|e| CallError::Protocol(e.to_string()))?;
            items.extend(page);
        }
        if items.len() > MAX_ITEMS {
            items.truncate(MAX_ITEMS);
            tracing::warn!(upstream = %inner.name, method = kind.method(), "list truncated at {MAX_ITEMS} items");
            break;
        }
        cursor = obj.get_str("nextCursor").filter(|c| !c.is_empty());
        if cursor.is_none() {
            break;
        }
    }
    Ok(items)
}

fn on_too_large(inner: &Inner, id: Option<Id>, limit: usize) {
    let Some(Id::Num(uid)) = id else { return };
    if let Some(p) = inner.state.lock().pending.remove(&uid) {
        let _ = p.reply.send(Err(CallError::TooLarge { upstream: inner.name.to_string(), limit }));
    }
}

fn on_message(inner: &Arc<Inner>, generation: u64, msg: Message) {
    match msg {
        Message::Response { .. } | Message::Error { .. } => {
            let Some(Id::Num(uid)) = msg.id().cloned() else {
                tracing::debug!(upstream = %inner.name, "response with an id the gateway never sent; dropped");
                return;
            };
            let p = inner.state.lock().pending.remove(&uid);
            match p {
                Some(p) => {
                    let _ = p.reply.send(Ok(msg));
                }
                None => tracing::debug!(upstream = %inner.name, uid, "late or unknown response dropped"),
            }
        }
        Message::Request { id, method, params } => on_request(inner, generation, id, method, params),
        Message::Notification { method, params } => on_notification(inner, method, params),
    }
}

fn reply_now(inner: &Inner, msg: Message) {
    if let Some(tx) = &inner.state.lock().tx {
        let _ = tx.try_send(msg.into());
    }
}

fn on_request(inner: &Arc<Inner>, generation: u64, id: Id, method: String, params: Option<Box<RawValue>>) {
    let kind = match method.as_str() {
        "ping" => return reply_now(inner, Message::empty_result(id)),
        "sampling/createMessage" => portcullis_config::ClientRequestKind::Sampling,
        "elicitation/create" => portcullis_config::ClientRequestKind::Elicitation,
        "roots/list" => portcullis_config::ClientRequestKind::Roots,
        _ => {
            let e =
                ErrorObject::new(code::METHOD_NOT_FOUND, format!("portcullis does not relay {method:?} to clients"));
            return reply_now(inner, Message::error(Some(id), &e));
        }
    };
    if !inner.cfg.grants(kind) {
        let e = ErrorObject::new(
            code::METHOD_NOT_FOUND,
            format!(
                "upstream {:?} is not granted {method} (add it to client_requests in the gateway config)",
                inner.name
            ),
        );
        return reply_now(inner, Message::error(Some(id), &e));
    }
    let handle = ReplyHandle { conn: Arc::downgrade(inner), generation, upstream_id: id.clone() };
    let msg = Message::Request { id, method: method.clone(), params };
    match attribute(inner) {
        Attribution::Call(sink) | Attribution::Owner(sink) => sink.deliver(msg, Some(handle)),
        Attribution::None if kind == portcullis_config::ClientRequestKind::Roots => {
            // Nobody to ask (e.g. right after initialize on a shared child): no roots beyond the server's own.
            handle.reply(Message::result(Id::Num(0), raw(r#"{"roots":[]}"#)));
        }
        Attribution::None | Attribution::Ambiguous(_) => {
            let why = match attribute(inner) {
                Attribution::Ambiguous(n) => format!("{n} client sessions have calls in flight on this shared upstream; set per_session = true for servers that ask clients questions"),
                _ => "no client call is in flight on this upstream".into(),
            };
            handle.reply_error(ErrorObject::new(
                code::INTERNAL_ERROR,
                format!("portcullis cannot tell which client session {method} is for: {why}"),
            ));
        }
    }
}

fn on_notification(inner: &Arc<Inner>, method: String, params: Option<Box<RawValue>>) {
    match method.as_str() {
        "notifications/progress" => {
            let Some(p) = params else { return };
            let Ok(mut obj) = RawObject::parse(p.get()) else { return };
            let Some(token) = obj.get("progressToken").map(|t| t.get().trim_matches('"').to_owned()) else { return };
            let target = {
                let st = inner.state.lock();
                token.parse::<i64>().ok().and_then(|uid| st.pending.get(&uid)).and_then(|pd| {
                    pd.progress.as_ref().and_then(|(_, orig)| pd.sink.clone().map(|s| (s, raw(orig.get()))))
                })
            };
            if let Some((sink, original)) = target {
                obj.set("progressToken", original);
                sink.deliver(Message::notification(&method, Some(obj.into_raw())), None);
            }
        }
        "notifications/tools/list_changed"
        | "notifications/prompts/list_changed"
        | "notifications/resources/list_changed" => {
            if let Some(owner) = &inner.owner {
                owner.deliver(Message::notification(&method, params), None);
            }
            if inner.publishes {
                let kinds = match method.as_str() {
                    "notifications/tools/list_changed" => vec![ListKind::Tools],
                    "notifications/prompts/list_changed" => vec![ListKind::Prompts],
                    _ => vec![ListKind::Resources, ListKind::Templates],
                };
                tokio::spawn(refresh(inner.clone(), kinds));
            }
        }
        "notifications/tasks/status" if inner.owner.is_none() => {
            let msg = Message::notification(&method, params);
            let _ = inner.events.try_send(UpstreamEvent::TaskStatus { upstream: inner.name.clone(), msg });
        }
        "notifications/resources/updated" => {
            let uri = params.as_ref().and_then(|p| RawObject::parse(p.get()).ok()).and_then(|o| o.get_str("uri"));
            if let Some(uri) = uri {
                let msg = Message::notification(&method, params);
                if let Some(owner) = &inner.owner {
                    owner.deliver(msg, None);
                } else {
                    let _ = inner.events.try_send(UpstreamEvent::ResourceUpdated {
                        upstream: inner.name.clone(),
                        uri,
                        msg,
                    });
                }
            }
        }
        _ => match attribute(inner) {
            Attribution::Call(sink) | Attribution::Owner(sink) => {
                sink.deliver(Message::notification(&method, params), None)
            }
            _ => {
                tracing::debug!(upstream = %inner.name, %method, "notification not attributable to one session; dropped")
            }
        },
    }
}

/// Re-list after the upstream said a list changed, then publish.
async fn refresh(inner: Arc<Inner>, kinds: Vec<ListKind>) {
    let Some(info) = inner.state.lock().init.clone() else { return };
    match fetch_lists(&inner, &info).await {
        Ok(lists) => {
            let _ = inner
                .events
                .send(UpstreamEvent::Lists { upstream: inner.name.clone(), lists: Arc::new(lists), changed: kinds })
                .await;
        }
        Err(e) => tracing::warn!(upstream = %inner.name, error = %e, "re-listing after list_changed failed"),
    }
}

/// Which client session does an unsolicited upstream message belong to? Exactly one session with calls in
/// flight (or the owner of a per-session connection); otherwise nobody, and the message is not delivered.
fn attribute(inner: &Inner) -> Attribution {
    if let Some(owner) = &inner.owner {
        return Attribution::Owner(owner.clone());
    }
    let st = inner.state.lock();
    let mut found: Option<(u64, &Pending)> = None;
    let mut sessions: Vec<u64> = Vec::new();
    for p in st.pending.values() {
        if p.session == GATEWAY_SESSION {
            continue;
        }
        if !sessions.contains(&p.session) {
            sessions.push(p.session);
        }
        if found.is_none() && p.sink.is_some() {
            found = Some((p.session, p));
        }
    }
    let sessions = sessions.len();
    match found {
        Some((_, p)) if sessions == 1 => match &p.sink {
            Some(s) => Attribution::Call(s.clone()),
            None => Attribution::None,
        },
        Some(_) => Attribution::Ambiguous(sessions),
        None => Attribution::None,
    }
}

impl Conn {
    /// Send a request whose answer nobody waits for (e.g. `logging/setLevel` fanned out to upstreams).
    pub fn notify_request(&self, method: &str, params: Option<Box<RawValue>>) {
        let inner = self.inner.clone();
        let method = method.to_owned();
        tokio::spawn(async move {
            let uid = inner.next_id.fetch_add(1, Ordering::Relaxed);
            let deadline = Instant::now() + inner.cfg.timeout;
            if let Err(e) = call_inner(&inner, Req::internal(uid, &method, params, deadline)).await {
                tracing::debug!(upstream = %inner.name, %method, error = %e, "fire-and-forget request failed");
            }
        });
    }
}
