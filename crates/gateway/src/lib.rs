//! The gateway core: sessions, the request pipeline, and the downstream transports that feed it.
//!
//! Every client message, whatever transport it arrived on, goes through [`Gateway::request`] /
//! [`Gateway::notification`] in [`dispatch`]: session → route (topic view of the federated catalog) →
//! upstream call → response with the client's id restored. Transports ([`http`], [`stdio`]) only frame
//! messages and enforce transport rules (headers, sizes, session ids).
//!
//! Main type: [`Gateway`].

mod channel;
pub mod dispatch;
pub mod http;
pub mod identity;
pub mod modern;
mod mrtr;
pub mod session;
mod sse_legacy;
pub mod stdio;
pub mod stream;
mod tasks;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use portcullis_auth::{Authenticator, Principal};
use portcullis_catalog::{Catalog, ListKind, UpstreamLists};
use portcullis_config::Config;
use portcullis_obo::Credentials;
use portcullis_upstream::{Status, Upstream, UpstreamEvent};
use session::{Output, Session, SessionTable};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub struct Gateway {
    pub cfg: Arc<Config>,
    /// `None` = anonymous mode (no `[auth]` section).
    pub auth: Option<Authenticator>,
    pub anonymous: Arc<Principal>,
    /// Outbound credential per upstream name.
    pub credentials: HashMap<Arc<str>, Arc<Credentials>>,
    upstreams: Vec<Arc<Upstream>>,
    by_name: HashMap<Arc<str>, Arc<Upstream>>,
    lists: Mutex<Vec<(Arc<str>, Arc<UpstreamLists>)>>,
    catalog: ArcSwap<Catalog>,
    /// Set when the latest lists could not be federated (a name collision); startup fails on it.
    catalog_error: Mutex<Option<String>>,
    /// Upstreams whose lists have been folded into the catalog at least once.
    listed: Mutex<std::collections::HashSet<Arc<str>>>,
    generation: AtomicU64,
    /// Initial listing is over (see [`Gateway::wait_initial`]).
    started: std::sync::atomic::AtomicBool,
    pub sessions: SessionTable,
    /// Open `subscriptions/listen` streams (stateless era).
    listeners: Mutex<Vec<Listener>>,
    next_listener: AtomicU64,
    /// Calls of stateless-era clients waiting for the client's input (cross-era translation).
    held: Mutex<HashMap<String, Arc<mrtr::ModernCall>>>,
    /// Tasks created through the gateway, by public (namespaced) id.
    tasks: tasks::TaskTable,
    /// Key for `requestState` integrity (per process: a restart invalidates held calls, which are gone anyway).
    state_key: [u8; 32],
    pub shutdown: CancellationToken,
}

struct Listener {
    key: u64,
    topic: Option<Arc<str>>,
    methods: Vec<&'static str>,
    sub_id: serde_json::Value,
    buf: Arc<stream::StreamBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Catalog(String),
    #[error("required upstream {upstream:?} did not initialize (waited up to {secs}s): {reason}")]
    NotReady { upstream: String, secs: u64, reason: String },
}

impl Gateway {
    /// Start every upstream and the event loop. Returns at once; see [`Gateway::wait_initial`]. Fails when a
    /// credential or key named in the config cannot be loaded (the message names the key).
    pub fn start(cfg: Config) -> Result<Arc<Gateway>, String> {
        let cfg = Arc::new(cfg);
        let (tx, rx) = mpsc::channel(4096);
        let http = reqwest::Client::builder()
            // Upstreams and token endpoints are configured exactly; a redirect is an error, not a hint to follow.
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let auth = match &cfg.auth {
            Some(a) => Some(
                Authenticator::new(a, &cfg.base_dir, http.clone()).map_err(|e| format!("{}: auth: {e}", cfg.source))?,
            ),
            None => None,
        };
        let mut credentials = HashMap::new();
        for u in &cfg.upstreams {
            let c = Credentials::new(u, &cfg.base_dir, http.clone()).map_err(|e| format!("{}: {e}", cfg.source))?;
            credentials.insert(Arc::<str>::from(u.name.as_str()), Arc::new(c));
        }
        let mut upstreams: Vec<Arc<Upstream>> = Vec::with_capacity(cfg.upstreams.len());
        for u in &cfg.upstreams {
            // A static secret authenticates the gateway itself, so it goes on every request to that upstream
            // (handshake, listing, GET stream), not only on forwarded calls.
            let client = match (&u.credential, &u.url) {
                (portcullis_config::CredentialConfig::Static { .. }, Some(_)) => {
                    static_client(u, &cfg.base_dir).map_err(|e| format!("{}: {e}", cfg.source))?
                }
                _ => http.clone(),
            };
            let service = service_headers(u, credentials.get(u.name.as_str()).cloned());
            upstreams.push(Upstream::start(u.clone(), tx.clone(), client, service));
        }
        let by_name = upstreams.iter().map(|u| (Arc::from(u.name()), u.clone())).collect();
        let lists = upstreams.iter().map(|u| (Arc::from(u.name()), Arc::new(UpstreamLists::default()))).collect();
        let empty = Catalog::build(&cfg.server.name_separator, cfg.server.page_size, &[], &cfg.topics, 0)
            .unwrap_or_else(|_| Catalog::empty(&cfg.topics));
        let gw = Arc::new(Gateway {
            cfg,
            auth,
            anonymous: Arc::new(Principal::anonymous()),
            credentials,
            upstreams,
            by_name,
            lists: Mutex::new(lists),
            catalog: ArcSwap::from_pointee(empty),
            catalog_error: Mutex::new(None),
            listed: Mutex::new(Default::default()),
            generation: AtomicU64::new(0),
            started: Default::default(),
            sessions: SessionTable::default(),
            listeners: Mutex::new(Vec::new()),
            next_listener: AtomicU64::new(1),
            held: Mutex::new(HashMap::new()),
            tasks: Default::default(),
            state_key: rand::random(),
            shutdown: CancellationToken::new(),
        });
        tokio::spawn(event_loop(Arc::downgrade(&gw), rx));
        tokio::spawn(reap_idle(Arc::downgrade(&gw)));
        Ok(gw)
    }

    /// Wait until every required upstream has initialized and been listed (or failed), then report
    /// federation errors. `serve` and `check` refuse to start on a name collision.
    pub async fn wait_initial(&self, timeout: Duration) -> Result<(), StartError> {
        let start = Instant::now();
        let mut not_ready = None;
        for u in self.upstreams.iter().filter(|u| u.config().required) {
            // Each upstream gets its own connect_timeout (capped by `timeout`); one that fails its first start
            // is not waited out: it keeps restarting in the background and /readyz reports it.
            let deadline = start + u.config().connect_timeout.min(timeout);
            let mut rx = u.shared().subscribe_status();
            let waited = tokio::time::timeout_at(
                deadline.into(),
                rx.wait_for(|s| matches!(s, Status::Ready | Status::Down { .. })),
            )
            .await;
            if waited.is_err() || u.shared().status() != Status::Ready {
                let reason = u.shared().last_error().unwrap_or_else(|| "still initializing".into());
                not_ready.get_or_insert(StartError::NotReady {
                    upstream: u.name().into(),
                    secs: u.config().connect_timeout.min(timeout).as_secs(),
                    reason,
                });
            }
        }
        // Lists are published just before Ready; give the event loop a moment to fold them in.
        for _ in 0..50 {
            if self.catalog_error.lock().is_some() || self.all_listed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.started.store(true, Ordering::Relaxed);
        for w in self.catalog().warnings() {
            tracing::warn!("{w}");
        }
        // A name collision is fatal even when some upstream is not up: report it first.
        if let Some(e) = self.catalog_error.lock().clone() {
            return Err(StartError::Catalog(e));
        }
        match not_ready {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn all_listed(&self) -> bool {
        let listed = self.listed.lock();
        self.upstreams.iter().filter(|u| u.shared().status() == Status::Ready).all(|u| listed.contains(u.name()))
    }

    /// Ready = every required upstream is initialized.
    pub fn ready(&self) -> bool {
        self.upstreams.iter().filter(|u| u.config().required).all(|u| u.shared().status() == Status::Ready)
    }

    pub fn upstream_status(&self) -> Vec<(String, Status, Option<String>)> {
        self.upstreams.iter().map(|u| (u.name().to_owned(), u.shared().status(), u.shared().last_error())).collect()
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.by_name.get(name)
    }

    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// Is this endpoint served? `None` is the all-tools endpoint.
    pub fn serves(&self, topic: Option<&str>) -> bool {
        match topic {
            None => self.cfg.server.all_tools_endpoint,
            Some(t) => self.cfg.topics.iter().any(|x| x.name == t),
        }
    }

    pub fn new_session(&self, topic: Option<&str>, out: Output, principal: Arc<Principal>) -> Option<Arc<Session>> {
        if self.sessions.len() >= self.cfg.server.max_sessions {
            return None;
        }
        let s = Session::new(self.sessions.next_key(), topic.map(Arc::from), out, principal);
        self.sessions.insert(s.clone());
        Some(s)
    }

    /// End a session: fail what it still owes, stop its per-session children.
    pub async fn end_session(&self, id: &str) -> bool {
        let Some(s) = self.sessions.remove(id) else { return false };
        s.close();
        for u in &self.upstreams {
            u.end_session(s.key).await;
        }
        true
    }

    /// Stop everything: sessions, then upstreams (children are killed and reaped).
    pub async fn shutdown_all(&self) {
        self.shutdown.cancel();
        for s in self.sessions.all() {
            self.end_session(&s.id).await;
        }
        futures::future::join_all(self.upstreams.iter().map(|u| u.shutdown())).await;
    }

    /// Calls in flight across all upstreams (graceful shutdown waits for zero).
    pub fn in_flight(&self) -> usize {
        self.upstreams.iter().map(|u| u.shared().in_flight()).sum()
    }

    pub(crate) fn add_listener(
        self: &Arc<Self>,
        topic: Option<&str>,
        methods: Vec<&'static str>,
        sub_id: serde_json::Value,
        buf: Arc<stream::StreamBuf>,
    ) -> modern::ListenerGuard {
        let key = self.next_listener.fetch_add(1, Ordering::Relaxed);
        self.listeners.lock().push(Listener { key, topic: topic.map(Arc::from), methods, sub_id, buf });
        modern::ListenerGuard { gw: Arc::downgrade(self), key }
    }

    pub(crate) fn remove_listener(&self, key: u64) {
        self.listeners.lock().retain(|l| l.key != key);
    }

    fn on_lists(&self, upstream: Arc<str>, lists: Arc<UpstreamLists>, changed: Vec<ListKind>) {
        let snapshot = {
            let mut all = self.lists.lock();
            if let Some(e) = all.iter_mut().find(|(n, _)| *n == upstream) {
                e.1 = lists;
            }
            all.clone()
        };
        let gen = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        match Catalog::build(
            &self.cfg.server.name_separator,
            self.cfg.server.page_size,
            &snapshot,
            &self.cfg.topics,
            gen,
        ) {
            Ok(cat) => {
                // Warn about what changed, once; during startup the partial catalog's warnings are noise
                // (wait_initial logs the settled ones).
                if self.started.load(Ordering::Relaxed) {
                    let old = self.catalog();
                    for w in cat.warnings().iter().filter(|w| !old.warnings().contains(w)) {
                        tracing::warn!("{w}");
                    }
                }
                self.catalog.store(Arc::new(cat));
                *self.catalog_error.lock() = None;
                self.listed.lock().insert(upstream.clone());
            }
            Err(e) => {
                tracing::error!(upstream = %upstream, error = %e, "catalog not updated");
                *self.catalog_error.lock() = Some(e.to_string());
                return;
            }
        }
        let cat = self.catalog();
        let methods: Vec<&'static str> = changed
            .iter()
            .map(|k| match k {
                ListKind::Tools => "notifications/tools/list_changed",
                ListKind::Prompts => "notifications/prompts/list_changed",
                ListKind::Resources | ListKind::Templates => "notifications/resources/list_changed",
            })
            .collect();
        for l in self.listeners.lock().iter() {
            if !cat.view(l.topic.as_deref()).is_some_and(|v| v.sees_upstream(&upstream)) {
                continue;
            }
            let mut sent = Vec::new();
            for m in methods.iter().filter(|m| l.methods.contains(m)) {
                if !sent.contains(m) {
                    sent.push(*m);
                    l.buf.push(modern::tagged(m, &l.sub_id));
                }
            }
        }
        for s in self.sessions.all() {
            if !s.initialized.load(Ordering::Relaxed) {
                continue;
            }
            let Some(view) = cat.view(s.topic.as_deref()) else { continue };
            if !view.sees_upstream(&upstream) {
                continue;
            }
            let mut sent = Vec::new();
            for k in &changed {
                let method = match k {
                    ListKind::Tools => "notifications/tools/list_changed",
                    ListKind::Prompts => "notifications/prompts/list_changed",
                    ListKind::Resources | ListKind::Templates => "notifications/resources/list_changed",
                };
                if !sent.contains(&method) {
                    sent.push(method);
                    s.send_unrelated(&portcullis_protocol::Message::notification(method, None));
                }
            }
        }
    }
}

/// For a `mint_obo` HTTP upstream, the gateway's own requests (initialize, listing) carry a token minted for the
/// gateway itself (`sub = "portcullis"`, no tool scope): an upstream that authenticates every request, handshake
/// included, accepts the gateway before any user call. (`token_exchange` has no subject to exchange for these.)
fn service_headers(
    u: &portcullis_config::UpstreamConfig,
    creds: Option<Arc<Credentials>>,
) -> Option<portcullis_upstream::ServiceHeaders> {
    if !matches!(u.credential, portcullis_config::CredentialConfig::MintObo { .. }) || u.url.is_none() {
        return None;
    }
    let creds = creds?;
    Some(Arc::new(move || {
        let caller = portcullis_obo::Caller { subject: "portcullis", client_id: None, actors: &[], token: None };
        // Minting does no I/O: the future is ready at once.
        match futures::executor::block_on(creds.for_call(&caller, None)) {
            Ok(Some((name, secret))) => secret.header_value().map(|v| vec![(name, v)]).unwrap_or_default(),
            _ => Vec::new(),
        }
    }))
}

/// An HTTP client whose every request carries the upstream's static credential.
fn static_client(u: &portcullis_config::UpstreamConfig, base: &std::path::Path) -> Result<reqwest::Client, String> {
    let creds = Credentials::new(u, base, reqwest::Client::new())?;
    let caller = portcullis_obo::Caller { subject: "portcullis", client_id: None, actors: &[], token: None };
    let mut headers = reqwest::header::HeaderMap::new();
    let header = futures::executor::block_on(creds.for_call(&caller, None)).map_err(|e| e.to_string())?;
    if let Some((name, secret)) = header {
        if let Some(v) = secret.header_value() {
            headers.insert(name, v);
        }
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("upstream {:?}: cannot build its HTTP client: {e}", u.name))
}

async fn event_loop(gw: std::sync::Weak<Gateway>, mut rx: mpsc::Receiver<UpstreamEvent>) {
    while let Some(ev) = rx.recv().await {
        let Some(gw) = gw.upgrade() else { return };
        match ev {
            UpstreamEvent::Lists { upstream, lists, changed } => gw.on_lists(upstream, lists, changed),
            UpstreamEvent::ResourceUpdated { upstream, uri, msg } => {
                for s in gw.sessions.all() {
                    if s.subscriptions.lock().contains(&(upstream.clone(), uri.clone())) {
                        s.send_unrelated(&msg);
                    }
                }
            }
            UpstreamEvent::Status { upstream, ready } => tracing::debug!(%upstream, ready, "upstream status"),
            UpstreamEvent::TaskStatus { upstream, msg } => gw.task_status(&upstream, msg),
            UpstreamEvent::InitFailed { upstream, reason } => {
                tracing::warn!(%upstream, %reason, "upstream failed to initialize")
            }
        }
    }
}

/// End sessions idle longer than `session_idle_timeout` (clients that vanished without DELETE).
async fn reap_idle(gw: std::sync::Weak<Gateway>) {
    loop {
        tokio::time::sleep(Duration::from_secs(15)).await;
        let Some(gw) = gw.upgrade() else { return };
        gw.reap_held();
        let limit = gw.cfg.server.session_idle_timeout.as_secs();
        for s in gw.sessions.all() {
            let streaming = match &s.out {
                Output::Channel(tx) => !tx.is_closed(),
                Output::Http(_) => false,
            };
            if !streaming && s.idle_secs() > limit {
                tracing::info!(session = s.key, "ending idle session");
                gw.end_session(&s.id).await;
            }
        }
    }
}
