//! Streamable HTTP client transport, session era (2025-03-26 … 2025-11-25).
//!
//! Every outgoing message is its own POST, sent concurrently. A reply is JSON (one message or an array) or an
//! SSE stream; both are read incrementally and cut off at `max_message`. The session id and protocol version
//! learnt from `initialize` go on every later request. After `notifications/initialized` the standalone GET
//! stream carries server-initiated messages and is resumed with `Last-Event-ID`. Closing `tx` ends the session
//! with DELETE. Static upstream credentials belong on the [`reqwest::Client`]'s default headers: only POSTs
//! carry [`Outgoing::headers`].

use crate::pipe::{Outgoing, Pipe, PipeEvent, PipeGuard, PIPE_DEPTH};
use crate::sse_client::{EventReader, Item};
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use parking_lot::Mutex;
use portcullis_protocol::message::is_batch;
use portcullis_protocol::{code, ErrorObject, Id, Message, RawObject};
use serde_json::value::RawValue;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

pub struct HttpConfig {
    /// The MCP endpoint (serves POST, GET and DELETE).
    pub url: String,
    /// Largest message accepted from the upstream, in bytes.
    pub max_message: usize,
    /// Bounds the GET stream handshake and DELETE. POSTs are bounded by the client's own connect timeout and the
    /// caller's deadline, since a JSON reply to a long tool call legitimately takes long.
    pub connect_timeout: Duration,
    /// Upstream name, for logs and error messages.
    pub name: String,
}

const SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
const PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
/// POSTs in flight per connection; further outgoing messages wait in the channel.
const MAX_IN_FLIGHT: usize = 256;
/// GET stream reconnect delay when the server sent no `retry:`, and the cap of the failure backoff.
const DEFAULT_RETRY: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Start the transport on the current tokio runtime; returns at once. Nothing is sent until the first message.
pub fn connect(cfg: HttpConfig, client: reqwest::Client) -> Pipe {
    let (tx, out_rx) = mpsc::channel(PIPE_DEPTH);
    let (events, rx) = mpsc::channel(PIPE_DEPTH);
    let token = CancellationToken::new();
    let url = reqwest::Url::parse(&cfg.url).ok();
    let sh = Arc::new(Shared { cfg, url, client, events, session: Mutex::default() });
    tokio::spawn(run(sh, out_rx, token.clone()));
    Pipe { tx, rx, guard: PipeGuard::Tasks(token.drop_guard()) }
}

struct Shared {
    cfg: HttpConfig,
    /// `cfg.url` parsed once (re-parsing it per request showed up in the callgrind profile).
    url: Option<reqwest::Url>,
    client: reqwest::Client,
    events: mpsc::Sender<PipeEvent>,
    session: Mutex<Session>,
}

/// What `initialize` established. `generation` counts initializes, so late replies from an older session can't
/// touch a newer one.
#[derive(Default)]
struct Session {
    generation: u64,
    id: Option<String>,
    version: Option<String>,
    expired_reported: bool,
    stream: Option<JoinHandle<()>>,
}

/// The session headers one request went out with.
struct Sent {
    generation: u64,
    id: Option<String>,
    version: Option<String>,
}

impl Shared {
    async fn emit(&self, ev: PipeEvent) {
        let _ = self.events.send(ev).await;
    }

    fn snapshot(&self) -> Sent {
        let s = self.session.lock();
        Sent { generation: s.generation, id: s.id.clone(), version: s.version.clone() }
    }

    /// A new `initialize` starts a new session: forget the old one and stop its GET stream.
    fn begin_session(&self) -> Sent {
        let mut s = self.session.lock();
        if let Some(h) = s.stream.take() {
            h.abort();
        }
        *s = Session { generation: s.generation + 1, ..Session::default() };
        Sent { generation: s.generation, id: None, version: None }
    }

    fn update(&self, generation: u64, f: impl FnOnce(&mut Session)) {
        let mut s = self.session.lock();
        if s.generation == generation {
            f(&mut s);
        }
    }

    /// The upstream no longer knows our session id: report it once, and stop the GET stream.
    /// Called from the GET stream too, so the stream is aborted only after the event is out.
    async fn expired(&self, generation: u64) {
        let stream = {
            let mut s = self.session.lock();
            if s.generation != generation || s.expired_reported {
                return;
            }
            s.expired_reported = true;
            s.stream.take()
        };
        tracing::info!(upstream = %self.cfg.name, "upstream session expired (HTTP 404)");
        self.emit(PipeEvent::SessionExpired).await;
        if let Some(h) = stream {
            h.abort();
        }
    }

    /// Tell the caller its request failed (or log the failure of a notification or response).
    async fn fail(&self, request: Option<&Id>, detail: &str) {
        fail(&self.events, &self.cfg.name, request, detail).await;
    }
}

impl Shared {
    fn request(&self, method: reqwest::Method) -> reqwest::RequestBuilder {
        match &self.url {
            Some(u) => self.client.request(method, u.clone()),
            // Unparsable URL: let reqwest report it on the request, as before.
            None => self.client.request(method, self.cfg.url.as_str()),
        }
    }
}

async fn run(sh: Arc<Shared>, out_rx: mpsc::Receiver<Outgoing>, token: CancellationToken) {
    let post_sh = sh.clone();
    pump(out_rx, &token, move |out| post(post_sh.clone(), out)).await;
    let (stream, sent) = {
        let mut s = sh.session.lock();
        (s.stream.take(), Sent { generation: s.generation, id: s.id.take(), version: s.version.take() })
    };
    if let Some(h) = stream {
        h.abort();
        let _ = h.await;
    }
    if sent.id.is_some() {
        let mut headers = HeaderMap::new();
        session_headers(&sent, &mut headers);
        let req = sh.request(reqwest::Method::DELETE).headers(headers);
        match tokio::time::timeout(sh.cfg.connect_timeout, req.send()).await {
            Ok(Ok(r)) if r.status().is_success() || r.status() == StatusCode::METHOD_NOT_ALLOWED => {}
            Ok(Ok(r)) => tracing::debug!(upstream = %sh.cfg.name, status = %r.status(), "session DELETE refused"),
            Ok(Err(e)) => tracing::debug!(upstream = %sh.cfg.name, "session DELETE failed: {}", describe(e)),
            Err(_) => tracing::debug!(upstream = %sh.cfg.name, "session DELETE timed out"),
        }
    }
    sh.emit(PipeEvent::Closed { reason: "closed by the gateway".into() }).await;
}

/// Hand each outgoing message to `send` as its own task (at most [`MAX_IN_FLIGHT`] at once) until the senders
/// are gone or `token` fires; then abort whatever is still in flight.
pub(crate) async fn pump<F, Fut>(mut out_rx: mpsc::Receiver<Outgoing>, token: &CancellationToken, mut send: F)
where
    F: FnMut(Outgoing) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut posts = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => break,
            Some(_) = posts.join_next(), if !posts.is_empty() => {}
            out = out_rx.recv(), if posts.len() < MAX_IN_FLIGHT => match out {
                // Lifecycle messages keep their order: `initialized` must land before the requests that follow
                // it, so it is sent inline rather than racing them as a concurrent POST.
                Some(out) if out.msg.method() == Some("notifications/initialized") => {
                    tokio::select! {
                        _ = send(out) => {}
                        _ = token.cancelled() => break,
                    }
                }
                Some(out) => {
                    posts.spawn(send(out));
                }
                None => break,
            },
        }
    }
    posts.shutdown().await;
}

fn session_headers(sent: &Sent, h: &mut HeaderMap) {
    if let Some(v) = sent.id.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
        h.insert(SESSION_ID, v);
    }
    if let Some(v) = sent.version.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
        h.insert(PROTOCOL_VERSION, v);
    }
}

async fn post(sh: Arc<Shared>, out: Outgoing) {
    let request = match &out.msg {
        Message::Request { id, .. } => Some(id.clone()),
        _ => None,
    };
    let method = out.msg.method().unwrap_or_default().to_owned();
    let is_init = request.is_some() && method == "initialize";
    let sent = if is_init { sh.begin_session() } else { sh.snapshot() };

    let mut headers = HeaderMap::new();
    for (k, v) in out.headers {
        headers.append(k, v);
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(ACCEPT, HeaderValue::from_static("application/json, text/event-stream"));
    session_headers(&sent, &mut headers);
    let resp = match sh.request(reqwest::Method::POST).headers(headers).body(out.msg.to_json()).send().await {
        Ok(r) => r,
        Err(e) => return sh.fail(request.as_ref(), &format!("could not be reached: {}", describe(e))).await,
    };

    let status = resp.status();
    if status == StatusCode::NOT_FOUND && sent.id.is_some() {
        // The caller re-initializes and replays or fails the request; answering it here would race that.
        return sh.expired(sent.generation).await;
    }
    if !status.is_success() {
        let body = excerpt(resp, sh.cfg.connect_timeout).await;
        return sh.fail(request.as_ref(), &format!("answered HTTP {}: {body}", status.as_u16())).await;
    }
    if is_init {
        if let Some(v) = resp.headers().get(&SESSION_ID).and_then(|v| v.to_str().ok()) {
            let v = v.to_owned();
            sh.update(sent.generation, |s| s.id = Some(v));
        }
    }
    if method == "notifications/initialized" {
        open_stream(&sh, sent.generation);
    }
    if status == StatusCode::ACCEPTED || status == StatusCode::NO_CONTENT {
        if request.is_some() {
            let detail = format!("answered HTTP {} without a response", status.as_u16());
            sh.fail(request.as_ref(), &detail).await;
        }
        return;
    }

    let mut reply =
        Reply { sh: &sh, request: request.as_ref(), init: is_init.then_some(sent.generation), answered: false };
    let done = match content_type(&resp).as_str() {
        "application/json" => reply.json(resp).await,
        "text/event-stream" => reply.sse(resp).await,
        _ if request.is_none() => true,
        other => {
            sh.fail(request.as_ref(), &format!("answered with unsupported content type {other:?}")).await;
            true
        }
    };
    if request.is_some() && !done && !reply.answered {
        sh.fail(request.as_ref(), "ended its reply without answering the request").await;
    }
}

/// Reading one POST reply.
struct Reply<'a> {
    sh: &'a Shared,
    request: Option<&'a Id>,
    /// Set when the POST was `initialize`: its result carries the protocol version for later requests.
    init: Option<u64>,
    answered: bool,
}

impl Reply<'_> {
    async fn deliver(&mut self, msg: Message) {
        if let (Some(generation), Message::Response { id, result }) = (self.init, &msg) {
            if Some(id) == self.request {
                let version = RawObject::parse(result.get()).ok().and_then(|o| o.get_str("protocolVersion"));
                self.sh.update(generation, |s| s.version = version);
            }
        }
        self.answered |= self.request.is_some() && msg.id() == self.request && msg.is_response();
        self.sh.emit(PipeEvent::Message(msg)).await;
    }

    async fn too_large(&self) -> bool {
        let limit = self.sh.cfg.max_message;
        self.sh.emit(PipeEvent::TooLarge { id: self.request.cloned(), limit }).await;
        true
    }

    /// Returns true when the request has been dealt with (answered, failed, or reported too large).
    async fn json(&mut self, mut resp: reqwest::Response) -> bool {
        let max = self.sh.cfg.max_message;
        if resp.content_length().is_some_and(|n| n > max as u64) {
            return self.too_large().await;
        }
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) if body.len() + c.len() > max => return self.too_large().await,
                Ok(Some(c)) => body.extend_from_slice(&c),
                Ok(None) => break,
                Err(e) => {
                    let detail = format!("broke off its reply: {}", describe(e));
                    self.sh.fail(self.request, &detail).await;
                    return true;
                }
            }
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return false;
        }
        let items: Result<Vec<&RawValue>, _> = if is_batch(&body) {
            serde_json::from_slice(&body)
        } else {
            serde_json::from_slice(&body).map(|one| vec![one])
        };
        match items {
            Ok(items) => {
                for item in items {
                    if let Some(msg) = parse_logged(&self.sh.cfg.name, item.get().as_bytes()) {
                        self.deliver(msg).await;
                    }
                }
                false
            }
            Err(e) => {
                self.sh.fail(self.request, &format!("sent invalid JSON ({e}): {}", clip(&body))).await;
                true
            }
        }
    }

    async fn sse(&mut self, mut resp: reqwest::Response) -> bool {
        let mut reader = EventReader::new(self.sh.cfg.max_message);
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => return false,
                Err(e) => {
                    tracing::debug!(upstream = %self.sh.cfg.name, "reply stream broke off: {}", describe(e));
                    return false;
                }
            };
            for item in reader.feed(&chunk) {
                match item {
                    Item::Event(ev) if ev.data.is_empty() => {}
                    Item::Event(ev) => {
                        if let Some(msg) = parse_logged(&self.sh.cfg.name, ev.data.as_bytes()) {
                            self.deliver(msg).await;
                        }
                    }
                    // The stream is cut here, so whatever was too large, the request's answer is lost with it.
                    Item::TooLarge(_) => return self.too_large().await,
                }
            }
        }
    }
}

/// Open the standalone GET stream for this session unless one is running.
fn open_stream(sh: &Arc<Shared>, generation: u64) {
    let mut s = sh.session.lock();
    if s.generation == generation && s.stream.is_none() && !s.expired_reported {
        s.stream = Some(tokio::spawn(standalone(sh.clone(), generation)));
    }
}

/// The standalone GET stream: server-initiated messages, resumed with `Last-Event-ID` while the session lives.
async fn standalone(sh: Arc<Shared>, generation: u64) {
    let name = &sh.cfg.name;
    let (mut last_id, mut retry, mut failures) = (None::<String>, None::<Duration>, 0u32);
    loop {
        let sent = sh.snapshot();
        if sent.generation != generation {
            return;
        }
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        session_headers(&sent, &mut headers);
        if let Some(v) = last_id.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(LAST_EVENT_ID, v);
        }
        let req = sh.request(reqwest::Method::GET).headers(headers);
        match tokio::time::timeout(sh.cfg.connect_timeout, req.send()).await {
            Ok(Ok(r)) if r.status() == StatusCode::METHOD_NOT_ALLOWED => {
                tracing::debug!(upstream = %name, "upstream offers no standalone SSE stream");
                return;
            }
            Ok(Ok(r)) if r.status() == StatusCode::NOT_FOUND && sent.id.is_some() => {
                return sh.expired(generation).await;
            }
            Ok(Ok(mut r)) if r.status().is_success() => {
                failures = 0;
                let mut reader = EventReader::new(sh.cfg.max_message);
                while let Ok(Some(chunk)) = r.chunk().await {
                    for item in reader.feed(&chunk) {
                        match item {
                            Item::Event(ev) => {
                                last_id = ev.id.or(last_id);
                                retry = ev.retry.map(Duration::from_millis).or(retry);
                                if ev.data.is_empty() {
                                    continue; // priming or keep-alive
                                }
                                if let Some(msg) = parse_logged(name, ev.data.as_bytes()) {
                                    sh.emit(PipeEvent::Message(msg)).await;
                                }
                            }
                            Item::TooLarge(id) => sh.emit(PipeEvent::TooLarge { id, limit: sh.cfg.max_message }).await,
                        }
                    }
                }
            }
            Ok(Ok(r)) => {
                failures += 1;
                tracing::warn!(upstream = %name, status = %r.status(), "standalone SSE stream refused");
            }
            Ok(Err(e)) => {
                failures += 1;
                tracing::warn!(upstream = %name, "standalone SSE stream failed: {}", describe(e));
            }
            Err(_) => {
                failures += 1;
                tracing::warn!(upstream = %name, "standalone SSE stream timed out");
            }
        }
        let backoff = DEFAULT_RETRY.saturating_mul(1 << failures.saturating_sub(1).min(5)).min(MAX_BACKOFF);
        let wait = if failures == 0 { retry.unwrap_or(DEFAULT_RETRY) } else { backoff.max(retry.unwrap_or_default()) };
        tokio::time::sleep(wait).await;
    }
}

/// Answer a failed request with a synthesized -32014 error, or log a failed notification or response.
pub(crate) async fn fail(events: &mpsc::Sender<PipeEvent>, name: &str, request: Option<&Id>, detail: &str) {
    match request {
        Some(id) => {
            let err = ErrorObject::new(code::UPSTREAM_UNAVAILABLE, format!("upstream {name:?} {detail}"));
            let _ = events.send(PipeEvent::Message(Message::error(Some(id.clone()), &err))).await;
        }
        None => tracing::warn!(upstream = %name, "message to upstream failed: {detail}"),
    }
}

/// Parse one message from the upstream; a bad one is logged (with a short excerpt) and skipped.
pub(crate) fn parse_logged(name: &str, bytes: &[u8]) -> Option<Message> {
    match Message::parse(bytes) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(upstream = %name, excerpt = %clip(bytes), "skipping unparseable message from upstream: {e}");
            None
        }
    }
}

/// The start of an error body, read with a bound on both size and time.
pub(crate) async fn excerpt(mut resp: reqwest::Response, wait: Duration) -> String {
    let mut body = Vec::new();
    let read = async {
        while let Ok(Some(c)) = resp.chunk().await {
            body.extend_from_slice(&c);
            if body.len() >= 1024 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(wait, read).await;
    match clip(&body) {
        s if s.is_empty() => "(empty body)".into(),
        s => s,
    }
}

/// At most 200 characters of `bytes`, whitespace collapsed.
pub(crate) fn clip(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(1024)]);
    let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match words.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &words[..i]),
        None => words,
    }
}

/// A reqwest error and its causes, without the URL.
pub(crate) fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

fn content_type(resp: &reqwest::Response) -> String {
    let ct = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}
