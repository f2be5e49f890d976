//! Downstream client sessions: identity of the conversation, what the client can do, where messages for it go,
//! and the bookkeeping that keeps one session's traffic away from every other session.

use crate::stream::StreamBuf;
use parking_lot::Mutex;
use portcullis_protocol::{code, ErrorObject, Id, Message};
use portcullis_upstream::{Conn, ReplyHandle, Sink};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Pending server-to-client requests one session may hold; more are refused rather than queued.
const MAX_SERVER_REQUESTS: usize = 256;
/// Finished POST streams kept for `Last-Event-ID` resumption.
const MAX_KEPT_STREAMS: usize = 64;

#[derive(Clone, Copy, Debug, Default)]
pub struct ClientCaps {
    pub sampling: bool,
    pub elicitation: bool,
    pub roots: bool,
}

impl ClientCaps {
    pub fn from_initialize(params: Option<&serde_json::value::RawValue>) -> ClientCaps {
        #[derive(serde::Deserialize, Default)]
        struct P {
            #[serde(default)]
            capabilities: Option<Caps>,
        }
        #[derive(serde::Deserialize, Default)]
        struct Caps {
            sampling: Option<serde::de::IgnoredAny>,
            elicitation: Option<serde::de::IgnoredAny>,
            roots: Option<serde::de::IgnoredAny>,
        }
        let p: P = params.and_then(|p| serde_json::from_str(p.get()).ok()).unwrap_or_default();
        let c = p.capabilities.unwrap_or_default();
        ClientCaps { sampling: c.sampling.is_some(), elicitation: c.elicitation.is_some(), roots: c.roots.is_some() }
    }

    pub(crate) fn allows_method(&self, method: &str) -> bool {
        self.allows(method)
    }

    fn allows(&self, method: &str) -> bool {
        match method {
            "sampling/createMessage" => self.sampling,
            "elicitation/create" => self.elicitation,
            "roots/list" => self.roots,
            _ => false,
        }
    }
}

/// Where a session's outbound messages go.
pub enum Output {
    /// Streamable HTTP: a standalone GET stream plus one stream per POST answered with SSE.
    Http(HttpOutput),
    /// stdio and legacy SSE: one ordered channel carries everything, responses included.
    Channel(mpsc::Sender<String>),
}

pub struct HttpOutput {
    pub standalone: Arc<StreamBuf>,
    streams: Mutex<StreamTable>,
    next_stream: AtomicU64,
    replay: usize,
}

#[derive(Default)]
struct StreamTable {
    by_id: HashMap<u64, Arc<StreamBuf>>,
    order: Vec<u64>,
    /// Client request id → the POST stream answering it, for messages related to that request.
    related: HashMap<Id, Arc<StreamBuf>>,
}

impl HttpOutput {
    pub fn new(replay: usize) -> HttpOutput {
        HttpOutput {
            standalone: StreamBuf::new(0, replay),
            streams: Mutex::new(StreamTable::default()),
            next_stream: AtomicU64::new(1),
            replay,
        }
    }

    /// A new stream answering request `id`.
    pub fn open(&self, id: Id) -> Arc<StreamBuf> {
        let sid = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let buf = StreamBuf::new(sid, self.replay);
        let mut t = self.streams.lock();
        t.by_id.insert(sid, buf.clone());
        t.order.push(sid);
        t.related.insert(id, buf.clone());
        if t.order.len() > MAX_KEPT_STREAMS {
            // Evict the oldest finished stream; live ones stay.
            if let Some(pos) = t.order.iter().position(|s| t.by_id.get(s).is_none_or(|b| b.is_done())) {
                let old = t.order.remove(pos);
                t.by_id.remove(&old);
            }
        }
        buf
    }

    pub fn close(&self, id: &Id) {
        self.streams.lock().related.remove(id);
    }

    pub fn stream(&self, sid: u64) -> Option<Arc<StreamBuf>> {
        if sid == 0 {
            return Some(self.standalone.clone());
        }
        self.streams.lock().by_id.get(&sid).cloned()
    }

    fn related(&self, id: &Id) -> Option<Arc<StreamBuf>> {
        self.streams.lock().related.get(id).cloned()
    }
}

pub struct Session {
    /// Internal key (upstream connections and attribution use it); never shown to clients.
    pub key: u64,
    /// `Mcp-Session-Id` / legacy `sessionId`: 128 random bits, hex.
    pub id: String,
    pub topic: Option<Arc<str>>,
    /// Who created the session; only the same identity may use it (others get 404, as if it did not exist).
    pub principal: Arc<portcullis_auth::Principal>,
    pub version: Mutex<String>,
    pub caps: Mutex<ClientCaps>,
    pub initialized: AtomicBool,
    pub out: Output,
    /// Client request id → (connection, upstream id), so `notifications/cancelled` can follow the call.
    inflight: Mutex<HashMap<Id, (Conn, i64)>>,
    server_requests: Mutex<HashMap<Id, Asked>>,
    next_server_id: AtomicI64,
    pub subscriptions: Mutex<HashSet<(Arc<str>, String)>>,
    last_seen: AtomicU64,
    pub created: Instant,
    pub closed: CancellationToken,
    /// Set on the ephemeral session of a stateless-era call: upstream messages go to it (cross-era translation).
    pub modern_call: std::sync::OnceLock<Weak<crate::mrtr::ModernCall>>,
    /// A stateless-era request's `Mcp-Param-*` headers, forwarded unchanged to stateless-era HTTP upstreams.
    pub param_headers: std::sync::OnceLock<Vec<(http::HeaderName, http::HeaderValue)>>,
    /// Minimum `notifications/message` level this session asked for (`logging/setLevel`); 0 = everything.
    pub log_level: std::sync::atomic::AtomicU8,
}

/// RFC 5424 severities as MCP names them, least severe first.
pub fn log_rank(level: &str) -> Option<u8> {
    ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]
        .iter()
        .position(|l| *l == level)
        .and_then(|p| u8::try_from(p).ok())
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub fn new_session_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Session {
    pub fn new(
        key: u64,
        topic: Option<Arc<str>>,
        out: Output,
        principal: Arc<portcullis_auth::Principal>,
    ) -> Arc<Session> {
        Arc::new(Session {
            key,
            id: new_session_id(),
            topic,
            principal,
            version: Mutex::new(portcullis_protocol::version::DEFAULT_HEADER_VERSION.to_owned()),
            caps: Mutex::new(ClientCaps::default()),
            initialized: AtomicBool::new(false),
            out,
            inflight: Mutex::new(HashMap::new()),
            server_requests: Mutex::new(HashMap::new()),
            next_server_id: AtomicI64::new(0),
            subscriptions: Mutex::new(HashSet::new()),
            last_seen: AtomicU64::new(now_secs()),
            created: Instant::now(),
            closed: CancellationToken::new(),
            modern_call: std::sync::OnceLock::new(),
            param_headers: std::sync::OnceLock::new(),
            log_level: std::sync::atomic::AtomicU8::new(0),
        })
    }

    pub fn touch(&self) {
        self.last_seen.store(now_secs(), Ordering::Relaxed);
    }

    pub fn idle_secs(&self) -> u64 {
        now_secs().saturating_sub(self.last_seen.load(Ordering::Relaxed))
    }

    pub fn version(&self) -> String {
        self.version.lock().clone()
    }

    /// Send a message that belongs to no particular request (list_changed, resource updates).
    pub fn send_unrelated(&self, msg: &Message) {
        self.emit(None, msg.to_json());
    }

    /// Send already-serialized JSON the same way.
    pub fn send_json(&self, json: String) {
        self.emit(None, json);
    }

    fn emit(&self, related: Option<&Id>, json: String) {
        match &self.out {
            Output::Channel(tx) => {
                if tx.try_send(json).is_err() {
                    tracing::warn!(session = self.key, "client is not reading; dropped a message for it");
                }
            }
            Output::Http(h) => {
                if let Some(buf) = related.and_then(|id| h.related(id)) {
                    if buf.push(json.clone()) {
                        return;
                    }
                }
                h.standalone.push(json);
            }
        }
    }

    /// Ask the client something on the gateway's own behalf; `related` = the client request it belongs to (its
    /// SSE stream carries the question). Errors are JSON-RPC errors to hand back.
    pub async fn ask(
        &self,
        related: &Id,
        method: &str,
        params: Option<Box<serde_json::value::RawValue>>,
        timeout: std::time::Duration,
    ) -> Result<Box<serde_json::value::RawValue>, ErrorObject> {
        if !self.caps.lock().allows(method) {
            let what = method.split('/').next().unwrap_or("it");
            return Err(ErrorObject::new(
                code::METHOD_NOT_FOUND,
                format!("the upstream asks for {method}, but this client did not declare the {what} capability"),
            ));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let id = Id::Num(self.next_server_id.fetch_add(1, Ordering::Relaxed));
        {
            let mut reqs = self.server_requests.lock();
            if reqs.len() >= MAX_SERVER_REQUESTS {
                return Err(ErrorObject::new(code::INTERNAL_ERROR, "too many unanswered requests to this client"));
            }
            reqs.insert(id.clone(), Asked::Local(tx));
        }
        self.emit(Some(related), Message::Request { id: id.clone(), method: method.to_owned(), params }.to_json());
        let answer = tokio::time::timeout(timeout, rx).await;
        self.server_requests.lock().remove(&id);
        match answer {
            Ok(Ok(Message::Response { result, .. })) => Ok(result),
            Ok(Ok(Message::Error { error, .. })) => Err(serde_json::from_str::<serde_json::Value>(error.get())
                .ok()
                .and_then(|e| Some(ErrorObject::new(e.get("code")?.as_i64()?, e.get("message")?.as_str()?)))
                .unwrap_or_else(|| ErrorObject::new(code::INTERNAL_ERROR, "the client refused the request"))),
            _ => Err(ErrorObject::new(code::DEADLINE_EXCEEDED, format!("the client did not answer {method} in time"))),
        }
    }

    pub fn track_call(&self, id: Id, conn: Conn, uid: i64) {
        self.inflight.lock().insert(id, (conn, uid));
    }

    pub fn untrack_call(&self, id: &Id) {
        self.inflight.lock().remove(id);
    }

    /// The client cancelled request `id`: pass it on with the upstream's id.
    pub fn cancel(&self, id: &Id, reason: &str) {
        let entry = self.inflight.lock().remove(id);
        if let Some((conn, uid)) = entry {
            conn.cancel(uid, reason);
        }
    }

    /// The client answered one of our server-to-client requests.
    pub fn on_client_response(&self, msg: Message) {
        let Some(id) = msg.id().cloned() else { return };
        match self.server_requests.lock().remove(&id) {
            Some(Asked::Upstream(handle)) => handle.reply(msg),
            Some(Asked::Local(tx)) => {
                let _ = tx.send(msg);
            }
            None => tracing::debug!(session = self.key, %id, "response to an unknown request dropped"),
        }
    }

    /// Fail every outstanding server-to-client request (session ended).
    pub fn close(&self) {
        self.closed.cancel();
        let asked: Vec<Asked> = self.server_requests.lock().drain().map(|(_, h)| h).collect();
        for a in asked {
            if let Asked::Upstream(h) = a {
                h.reply_error(ErrorObject::new(code::INTERNAL_ERROR, "the client session ended before answering"));
            }
        }
        let calls: Vec<(Conn, i64)> = self.inflight.lock().drain().map(|(_, c)| c).collect();
        for (conn, uid) in calls {
            conn.cancel(uid, "client session ended");
        }
        match &self.out {
            Output::Http(h) => h.standalone.finish(),
            Output::Channel(_) => {}
        }
    }
}

/// Who waits for the client's answer to a server-to-client request.
enum Asked {
    /// An upstream (session era): the answer goes back on its connection.
    Upstream(ReplyHandle),
    /// The gateway itself (translating a stateless-era upstream's `InputRequiredResult`).
    Local(tokio::sync::oneshot::Sender<Message>),
}

/// Delivers upstream messages to one session, next to the request they relate to when there is one.
pub struct SessionSink {
    pub session: Weak<Session>,
    pub related: Option<Id>,
}

impl Sink for SessionSink {
    fn deliver(&self, msg: Message, reply: Option<ReplyHandle>) {
        let Some(s) = self.session.upgrade() else {
            if let Some(h) = reply {
                h.reply_error(ErrorObject::new(code::INTERNAL_ERROR, "the client session has ended"));
            }
            return;
        };
        if let Some(call) = s.modern_call.get().and_then(Weak::upgrade) {
            call.on_upstream(msg, reply);
            return;
        }
        if msg.method() == Some("notifications/cancelled") {
            // The upstream withdrew one of its own requests to this client: name it by the id the client saw.
            let Some(mut p) = msg.params().and_then(|p| portcullis_protocol::RawObject::parse(p.get()).ok()) else {
                return;
            };
            let Some(upstream_id) = p.get("requestId").and_then(|r| serde_json::from_str::<Id>(r.get()).ok()) else {
                return;
            };
            let client_id = {
                let mut reqs = s.server_requests.lock();
                let found: Vec<Id> = reqs
                    .iter()
                    .filter(|(_, a)| matches!(a, Asked::Upstream(h) if *h.upstream_id() == upstream_id))
                    .map(|(k, _)| k.clone())
                    .collect();
                // Ambiguous (two upstreams reused one id) or unknown: better to drop than cancel the wrong request.
                match found.as_slice() {
                    [one] => {
                        reqs.remove(one);
                        one.clone()
                    }
                    _ => return,
                }
            };
            p.set("requestId", portcullis_protocol::raw::raw(&client_id.to_json()));
            s.emit(
                self.related.as_ref(),
                Message::notification("notifications/cancelled", Some(p.into_raw())).to_json(),
            );
            return;
        }
        if msg.method() == Some("notifications/message") {
            let floor = s.log_level.load(Ordering::Relaxed);
            let level = msg
                .params()
                .and_then(|p| portcullis_protocol::RawObject::parse(p.get()).ok())
                .and_then(|o| o.get_str("level"))
                .and_then(|l| log_rank(&l));
            if floor > 0 && level.is_some_and(|l| l < floor) {
                return;
            }
        }
        let msg = match (msg, reply) {
            (Message::Request { method, params, .. }, Some(handle)) => {
                if !s.caps.lock().allows(&method) {
                    let what = method.split('/').next().unwrap_or("it");
                    handle.reply_error(ErrorObject::new(
                        code::METHOD_NOT_FOUND,
                        format!(
                            "the client session did not declare the {what} capability, so it cannot answer {method}"
                        ),
                    ));
                    return;
                }
                let mut reqs = s.server_requests.lock();
                if reqs.len() >= MAX_SERVER_REQUESTS {
                    drop(reqs);
                    handle.reply_error(ErrorObject::new(
                        code::INTERNAL_ERROR,
                        "too many unanswered requests to this client",
                    ));
                    return;
                }
                // Our own id space per session, so two upstreams' ids (both start at 0) never collide.
                let id = Id::Num(s.next_server_id.fetch_add(1, Ordering::Relaxed));
                reqs.insert(id.clone(), Asked::Upstream(handle));
                Message::Request { id, method, params }
            }
            (m, _) => m,
        };
        s.emit(self.related.as_ref(), msg.to_json());
    }
}

/// All live sessions, by public id.
#[derive(Default)]
pub struct SessionTable {
    map: Mutex<HashMap<String, Arc<Session>>>,
    next_key: AtomicU64,
}

impl SessionTable {
    pub fn next_key(&self) -> u64 {
        // 0 is reserved for the gateway's own upstream calls.
        self.next_key.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn insert(&self, s: Arc<Session>) {
        self.map.lock().insert(s.id.clone(), s);
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.map.lock().get(id).cloned()
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Session>> {
        self.map.lock().remove(id)
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn all(&self) -> Vec<Arc<Session>> {
        self.map.lock().values().cloned().collect()
    }
}
