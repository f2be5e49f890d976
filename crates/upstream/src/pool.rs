//! One configured upstream: its shared connection, plus one connection per client session when
//! `per_session = true` (for stateful servers, and the only way to give a stdio child per-user environment).

use crate::conn::{Conn, ConnSpec};
use crate::{CallError, ClientCaps, Sink, UpstreamEvent};
use parking_lot::Mutex;
use portcullis_config::UpstreamConfig;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

pub struct Upstream {
    cfg: Arc<UpstreamConfig>,
    /// Serves every session, or for per-session upstreams only the catalog (listing).
    shared: Conn,
    sessions: Mutex<HashMap<u64, Conn>>,
    events: mpsc::Sender<UpstreamEvent>,
    http: reqwest::Client,
    service: Option<crate::ServiceHeaders>,
}

impl Upstream {
    pub fn start(
        cfg: UpstreamConfig,
        events: mpsc::Sender<UpstreamEvent>,
        http: reqwest::Client,
        service: Option<crate::ServiceHeaders>,
    ) -> Arc<Upstream> {
        let cfg = Arc::new(cfg);
        let shared = Conn::start(ConnSpec {
            cfg: cfg.clone(),
            service: service.clone(),
            owner: None,
            publishes: true,
            events: events.clone(),
            caps: ClientCaps,
            http: http.clone(),
        });
        Arc::new(Upstream { cfg, shared, sessions: Mutex::new(HashMap::new()), events, http, service })
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    pub fn config(&self) -> &UpstreamConfig {
        &self.cfg
    }

    /// The connection that serves catalog listing and, for shared upstreams, every call.
    pub fn shared(&self) -> &Conn {
        &self.shared
    }

    /// The connection a session's calls go to; starts the session's own child on first use.
    /// `child_env`: a credential for a new per-session child's environment (`PORTCULLIS_UPSTREAM_TOKEN`); it is
    /// fixed at spawn, so the per-call credential in `params._meta` stays the one to trust for freshness.
    pub fn conn_for(
        &self,
        session: u64,
        owner: impl FnOnce() -> Arc<dyn Sink>,
        child_env: Option<String>,
    ) -> Result<Conn, CallError> {
        if !self.cfg.per_session {
            return Ok(self.shared.clone());
        }
        let mut map = self.sessions.lock();
        if let Some(c) = map.get(&session) {
            return Ok(c.clone());
        }
        if map.len() >= self.cfg.max_children {
            return Err(CallError::TooManyChildren { upstream: self.cfg.name.clone(), limit: self.cfg.max_children });
        }
        let cfg = match child_env {
            Some(token) => {
                let mut c = (*self.cfg).clone();
                c.env.insert("PORTCULLIS_UPSTREAM_TOKEN".into(), token);
                Arc::new(c)
            }
            None => self.cfg.clone(),
        };
        let conn = Conn::start(ConnSpec {
            cfg,
            service: self.service.clone(),
            owner: Some(owner()),
            publishes: false,
            events: self.events.clone(),
            caps: ClientCaps,
            http: self.http.clone(),
        });
        map.insert(session, conn.clone());
        Ok(conn)
    }

    /// The session's own connection, if it has one (per-session upstreams).
    pub fn session_conn(&self, session: u64) -> Option<Conn> {
        self.sessions.lock().get(&session).cloned()
    }

    /// A client session ended: stop its child, if any.
    pub async fn end_session(&self, session: u64) {
        let conn = self.sessions.lock().remove(&session);
        if let Some(c) = conn {
            c.shutdown().await;
        }
    }

    pub fn children(&self) -> usize {
        self.sessions.lock().len()
    }

    pub async fn shutdown(&self) {
        let conns: Vec<Conn> = self.sessions.lock().drain().map(|(_, c)| c).collect();
        for c in conns {
            c.shutdown().await;
        }
        self.shared.shutdown().await;
    }
}
