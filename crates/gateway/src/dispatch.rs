//! The request pipeline for one client message: route it through the session's view of the catalog to the
//! right upstream, rewrite only the name the upstream knows, and restore the client's id on the way back.
//!
//! Stages (later issues add identity, policy, minimization, scheduling and audit between route and call):
//! `session → route(topic, tool) → upstream call → response`.

use crate::session::{ClientCaps, Session, SessionSink};
use crate::Gateway;
use portcullis_catalog::{ListKind, View};
use portcullis_obo::Caller;
use portcullis_protocol::raw::{raw, to_raw};
use portcullis_protocol::{code, version, ErrorObject, Id, Message, RawObject};
use portcullis_upstream::{Call, CallError, Sink, Upstream};
use serde_json::value::RawValue;
use std::sync::atomic::Ordering;
use std::sync::Arc;

fn err(id: Id, code: i64, msg: impl Into<String>) -> Message {
    Message::error(Some(id), &ErrorObject::new(code, msg))
}

fn unknown_tool(id: Id, name: &str) -> Message {
    // Hidden and nonexistent tools must be indistinguishable.
    err(id, code::INVALID_PARAMS, format!("Unknown tool: {name}"))
}

fn params_obj(params: Option<&RawValue>) -> Result<RawObject, String> {
    match params {
        None => Ok(RawObject::default()),
        Some(p) => RawObject::parse(p.get()).map_err(|e| format!("invalid params: {e}")),
    }
}

impl Gateway {
    /// The `initialize` result for a session: negotiated version, the union of upstream capabilities.
    pub fn initialize(&self, s: &Session, params: Option<&RawValue>) -> Box<RawValue> {
        let requested = params.and_then(|p| RawObject::parse(p.get()).ok()).and_then(|o| o.get_str("protocolVersion"));
        let v = version::negotiate(requested.as_deref());
        *s.version.lock() = v.to_owned();
        *s.caps.lock() = ClientCaps::from_initialize(params);
        let (_, caps, info, instructions) = self.server_description(s.topic.as_deref());
        let mut result = serde_json::json!({"protocolVersion": v, "capabilities": caps, "serverInfo": info});
        if let Some(i) = instructions {
            result["instructions"] = serde_json::Value::String(i);
        }
        to_raw(&result)
    }

    /// What this endpoint is: (topic, capabilities = union of the upstreams', serverInfo, instructions).
    pub fn server_description(
        &self,
        topic: Option<&str>,
    ) -> (Option<String>, serde_json::Value, serde_json::Value, Option<String>) {
        let mut caps = serde_json::Map::new();
        caps.insert("tools".into(), serde_json::json!({"listChanged": true}));
        let has =
            |k: &str| self.upstreams().iter().any(|u| u.shared().init_info().is_some_and(|i| i.has_capability(k)));
        if has("prompts") {
            caps.insert("prompts".into(), serde_json::json!({"listChanged": true}));
        }
        if has("resources") {
            caps.insert("resources".into(), serde_json::json!({"subscribe": true, "listChanged": true}));
        }
        if has("logging") {
            caps.insert("logging".into(), serde_json::json!({}));
        }
        if has("completions") {
            caps.insert("completions".into(), serde_json::json!({}));
        }
        if has("tasks") {
            // The gateway serves the task methods itself (ids are namespaced and bound to their creator).
            caps.insert(
                "tasks".into(),
                serde_json::json!({"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}}),
            );
        }
        let info = serde_json::json!({"name": "portcullis", "title": "Portcullis MCP gateway", "version": env!("CARGO_PKG_VERSION")});
        let instructions =
            topic.and_then(|t| self.cfg.topics.iter().find(|x| x.name == t)).and_then(|x| x.description.clone());
        (topic.map(str::to_owned), serde_json::Value::Object(caps), info, instructions)
    }

    /// Handle one client request (not `initialize`, which the transport handles) and produce its answer.
    pub async fn request(&self, s: &Arc<Session>, id: Id, method: &str, params: Option<Box<RawValue>>) -> Message {
        s.touch();
        let cat = self.catalog();
        let Some(view) = cat.view(s.topic.as_deref()) else {
            return err(id, code::INTERNAL_ERROR, "this endpoint's topic is no longer configured");
        };
        match method {
            "ping" => Message::empty_result(id),
            "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list" => {
                let kind = ListKind::from_method(method).unwrap_or(ListKind::Tools);
                list(view, kind, id, params.as_deref())
            }
            "tools/call" => self.call_named(s, view, id, method, params, Named::Tool).await,
            "prompts/get" => self.call_named(s, view, id, method, params, Named::Prompt).await,
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                self.call_resource(s, view, id, method, params).await
            }
            "completion/complete" => self.complete(s, view, id, params).await,
            "tasks/get" | "tasks/result" | "tasks/cancel" => self.task_call(s, id, method, params).await,
            "tasks/list" => self.task_list(s, id).await,
            "logging/setLevel" => {
                let level = params_obj(params.as_deref()).ok().and_then(|o| o.get_str("level"));
                let Some(rank) = level.as_deref().and_then(crate::session::log_rank) else {
                    return err(
                        id,
                        code::INVALID_PARAMS,
                        "params.level must be one of debug, info, notice, warning, error, critical, alert, emergency",
                    );
                };
                // Upstreams are shared: each session gets only messages at or above its own level.
                s.log_level.store(rank, Ordering::Relaxed);
                for u in self.upstreams() {
                    if view.sees_upstream(u.name())
                        && u.shared().init_info().is_some_and(|i| i.has_capability("logging"))
                    {
                        let conn = u.session_conn(s.key).unwrap_or_else(|| u.shared().clone());
                        conn.notify_request("logging/setLevel", params.as_deref().map(|p| raw(p.get())));
                    }
                }
                Message::empty_result(id)
            }
            "initialize" => err(id, code::INVALID_REQUEST, "this session is already initialized"),
            _ => err(id, code::METHOD_NOT_FOUND, format!("Method not found: {method}")),
        }
    }

    /// Handle one client notification.
    pub fn notification(&self, s: &Arc<Session>, method: &str, params: Option<&RawValue>) {
        s.touch();
        match method {
            "notifications/initialized" => s.initialized.store(true, Ordering::Relaxed),
            "notifications/cancelled" => {
                #[derive(serde::Deserialize)]
                struct P {
                    #[serde(rename = "requestId")]
                    request_id: Id,
                    reason: Option<String>,
                }
                if let Some(p) = params.and_then(|p| serde_json::from_str::<P>(p.get()).ok()) {
                    s.cancel(&p.request_id, p.reason.as_deref().unwrap_or("cancelled by the client"));
                }
            }
            "notifications/roots/list_changed" => {
                for u in self.upstreams() {
                    if let Some(c) = u.session_conn(s.key) {
                        c.notify(method, None);
                    }
                }
            }
            _ => tracing::debug!(session = s.key, %method, "client notification ignored"),
        }
    }

    async fn call_named(
        &self,
        s: &Arc<Session>,
        view: &View,
        id: Id,
        method: &str,
        params: Option<Box<RawValue>>,
        kind: Named,
    ) -> Message {
        let mut obj = match params_obj(params.as_deref()) {
            Ok(o) => o,
            Err(e) => return err(id, code::INVALID_PARAMS, e),
        };
        let Some(name) = obj.get_str("name") else {
            return err(id, code::INVALID_PARAMS, format!("{method} needs params.name (a string)"));
        };
        let route = match kind {
            Named::Tool => view.resolve_tool(&name),
            Named::Prompt => view.resolve_prompt(&name),
        };
        let Some(route) = route else {
            return match kind {
                Named::Tool => unknown_tool(id, &name),
                Named::Prompt => err(id, code::INVALID_PARAMS, format!("Unknown prompt: {name}")),
            };
        };
        let Some(upstream) = self.upstream(&route.upstream).cloned() else {
            return unknown_tool(id, &name);
        };
        obj.set_str("name", &route.name);
        let tool = matches!(kind, Named::Tool).then_some(route.name.as_str());
        // A task-augmented call answers with a task, whose id must be namespaced and bound to this caller.
        let as_task = matches!(kind, Named::Tool) && obj.get("task").is_some();
        let resp = self.forward(s, &upstream, id, method, Some(obj.into_raw()), tool).await;
        if as_task {
            return self.register_task(s, &route.upstream, resp);
        }
        resp
    }

    async fn call_resource(
        &self,
        s: &Arc<Session>,
        view: &View,
        id: Id,
        method: &str,
        params: Option<Box<RawValue>>,
    ) -> Message {
        let uri = match params_obj(params.as_deref()) {
            Ok(o) => o.get_str("uri"),
            Err(e) => return err(id, code::INVALID_PARAMS, e),
        };
        let Some(uri) = uri else {
            return err(id, code::INVALID_PARAMS, format!("{method} needs params.uri (a string)"));
        };
        let Some(upstream) = view.resolve_resource(&uri).and_then(|u| self.upstream(&u).cloned()) else {
            return Message::error(
                Some(id),
                &ErrorObject::new(-32002, format!("Resource not found: {uri}"))
                    .with_data(serde_json::json!({"uri": uri})),
            );
        };
        let key = (Arc::<str>::from(upstream.name()), uri);
        match method {
            "resources/subscribe" => {
                s.subscriptions.lock().insert(key);
            }
            "resources/unsubscribe" => {
                s.subscriptions.lock().remove(&key);
            }
            _ => {}
        }
        self.forward(s, &upstream, id, method, params, None).await
    }

    async fn complete(&self, s: &Arc<Session>, view: &View, id: Id, params: Option<Box<RawValue>>) -> Message {
        let mut obj = match params_obj(params.as_deref()) {
            Ok(o) => o,
            Err(e) => return err(id, code::INVALID_PARAMS, e),
        };
        let Some(mut r) = obj.get("ref").and_then(|r| RawObject::parse(r.get()).ok()) else {
            return err(id, code::INVALID_PARAMS, "completion/complete needs params.ref");
        };
        let upstream = match r.get_str("type").as_deref() {
            Some("ref/prompt") => {
                let Some(route) = r.get_str("name").and_then(|n| view.resolve_prompt(&n)) else {
                    return err(id, code::INVALID_PARAMS, "Unknown prompt in completion ref");
                };
                r.set_str("name", &route.name);
                route.upstream.clone()
            }
            Some("ref/resource") => {
                let Some(u) = r.get_str("uri").and_then(|u| view.resolve_resource(&u)) else {
                    return err(id, code::INVALID_PARAMS, "Unknown resource in completion ref");
                };
                u
            }
            _ => return err(id, code::INVALID_PARAMS, "params.ref.type must be ref/prompt or ref/resource"),
        };
        let Some(upstream) = self.upstream(&upstream).cloned() else {
            return err(id, code::INVALID_PARAMS, "Unknown completion target");
        };
        obj.set("ref", r.into_raw());
        self.forward(s, &upstream, id, "completion/complete", Some(obj.into_raw()), None).await
    }

    /// The upstream call stage: the On-Behalf-Of credential for this caller, upstream and tool, then the call.
    pub(crate) async fn forward(
        &self,
        s: &Arc<Session>,
        upstream: &Arc<Upstream>,
        id: Id,
        method: &str,
        mut params: Option<Box<RawValue>>,
        tool: Option<&str>,
    ) -> Message {
        let mut headers = Vec::new();
        let mut child_env = None;
        if let Some(creds) = self.credentials.get(upstream.name()) {
            let p = &s.principal;
            let caller = Caller {
                subject: &p.subject,
                client_id: p.client_id.as_deref(),
                actors: &p.actors,
                token: p.token.as_ref().map(|t| t.expose()),
            };
            match creds.for_call(&caller, tool).await {
                Ok(None) => {}
                Ok(Some((name, secret))) => {
                    if upstream.config().is_stdio() {
                        // A shared child has one environment for everyone: the per-call credential rides in
                        // params._meta; a per-session child also gets it in its environment at spawn.
                        let token = secret.bearer_token().unwrap_or(secret.expose()).to_owned();
                        params = Some(with_meta(params, &upstream.config().credential_meta_key, &token));
                        child_env = Some(token);
                    } else if let Some(v) = secret.header_value() {
                        headers.push((name, v));
                    }
                }
                Err(e) => {
                    let err = ErrorObject::new(
                        code::INTERNAL_ERROR,
                        format!("cannot obtain a credential for upstream {:?}: {e}", upstream.name()),
                    )
                    .with_data(serde_json::json!({"upstream": upstream.name()}));
                    return Message::error(Some(id), &err);
                }
            }
        }
        let owner = || -> Arc<dyn Sink> { Arc::new(SessionSink { session: Arc::downgrade(s), related: None }) };
        let conn = match upstream.conn_for(s.key, owner, child_env) {
            Ok(c) => c,
            Err(e) => return Message::error(Some(id), &e.to_error()),
        };
        let sink: Arc<dyn Sink> = Arc::new(SessionSink { session: Arc::downgrade(s), related: Some(id.clone()) });
        if conn.is_modern() && !upstream.config().is_stdio() {
            // Spec, intermediaries: forward `Mcp-Param-*` headers unchanged.
            headers.extend(s.param_headers.get().into_iter().flatten().cloned());
        }
        let uid = conn.alloc_id();
        s.track_call(id.clone(), conn.clone(), uid);
        // Untrack however this future ends (answered, or dropped with a client that went away).
        let tracked = Tracked { s, id: id.clone() };
        let call =
            Call { uid, session: s.key, method, params, sink: Some(sink), timeout: upstream.config().timeout, headers };
        // A stateless-era upstream may answer with an InputRequiredResult: keep what a retry needs.
        let retry_base = conn.is_modern().then(|| (call.params.as_deref().map(|p| raw(p.get())), call.headers.clone()));
        let res = conn.call(call).await;
        drop(tracked);
        if let (Some(base), Ok(Message::Response { result, .. })) = (retry_base, &res) {
            if result.get().contains("\"input_required\"") && s.modern_call.get().is_none() {
                let first = raw(result.get());
                return self.answer_input_required(s, upstream, &conn, id, method, base, first).await;
            }
        }
        match res {
            Ok(Message::Response { result, .. }) => Message::Response { id, result },
            Ok(Message::Error { error, .. }) => Message::Error { id: Some(id), error },
            Ok(_) => err(id, code::INTERNAL_ERROR, "upstream sent a malformed answer"),
            Err(CallError::Timeout { upstream, method }) => Message::error(
                Some(id),
                &ErrorObject::new(
                    code::DEADLINE_EXCEEDED,
                    format!(
                        "upstream {upstream:?} did not answer {method} within {}s (the upstream's timeout)",
                        self.upstream(&upstream).map_or(0, |u| u.config().timeout.as_secs())
                    ),
                )
                .with_data(serde_json::json!({"upstream": upstream})),
            ),
            Err(e) => Message::error(Some(id), &e.to_error()),
        }
    }
}

impl Gateway {
    /// Cross-era translation, the other way: a stateless-era upstream answered a session-era client's request
    /// with an `InputRequiredResult`. Ask the client each question as a server-to-client request, then retry the
    /// upstream with `inputResponses` and its own (opaque) `requestState`, until it answers for real.
    #[allow(clippy::too_many_arguments)]
    async fn answer_input_required(
        &self,
        s: &Arc<Session>,
        upstream: &Arc<Upstream>,
        conn: &portcullis_upstream::Conn,
        id: Id,
        method: &str,
        base: (Option<Box<RawValue>>, Vec<(http::HeaderName, http::HeaderValue)>),
        mut result: Box<RawValue>,
    ) -> Message {
        let (base, headers) = base;
        const MAX_ROUNDS: usize = 8;
        let timeout = upstream.config().timeout;
        for _ in 0..MAX_ROUNDS {
            let Ok(obj) = RawObject::parse(result.get()) else { break };
            if obj.get_str("resultType").as_deref() != Some("input_required") {
                return Message::Response { id, result };
            }
            let requests: Vec<(String, Box<RawValue>)> =
                obj.get("inputRequests").and_then(|r| RawObject::parse(r.get()).ok()).map(|r| r.0).unwrap_or_default();
            let mut answers = RawObject::default();
            for (key, req) in requests {
                let Some(req) = RawObject::parse(req.get()).ok() else { continue };
                let Some(m) = req.get_str("method") else { continue };
                let params = req.get("params").map(|p| raw(p.get()));
                match s.ask(&id, &m, params, timeout).await {
                    Ok(answer) => answers.set(&key, answer),
                    Err(e) => return Message::error(Some(id), &e),
                }
            }
            let mut retry = base.as_deref().and_then(|p| RawObject::parse(p.get()).ok()).unwrap_or_default();
            retry.set("inputResponses", answers.into_raw());
            if let Some(state) = obj.get("requestState") {
                retry.set("requestState", raw(state.get()));
            }
            let call = Call {
                uid: conn.alloc_id(),
                session: s.key,
                method,
                params: Some(retry.into_raw()),
                sink: Some(Arc::new(SessionSink { session: Arc::downgrade(s), related: Some(id.clone()) })),
                timeout,
                headers: headers.clone(),
            };
            match conn.call(call).await {
                Ok(Message::Response { result: r, .. }) => result = r,
                Ok(Message::Error { error, .. }) => return Message::Error { id: Some(id), error },
                Ok(_) => break,
                Err(e) => return Message::error(Some(id), &e.to_error()),
            }
        }
        err(id, code::INTERNAL_ERROR, "the upstream kept asking for input; gave up after 8 rounds")
    }
}

/// Removes a call from the session's in-flight table when dropped.
struct Tracked<'a> {
    s: &'a Session,
    id: Id,
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.s.untrack_call(&self.id);
    }
}

/// `params` with `_meta[key] = token` (other bytes kept).
fn with_meta(params: Option<Box<RawValue>>, key: &str, token: &str) -> Box<RawValue> {
    let mut obj = params.as_deref().and_then(|p| RawObject::parse(p.get()).ok()).unwrap_or_default();
    let mut meta = obj.get("_meta").and_then(|m| RawObject::parse(m.get()).ok()).unwrap_or_default();
    meta.set_str(key, token);
    obj.set("_meta", meta.into_raw());
    obj.into_raw()
}

#[derive(Clone, Copy)]
enum Named {
    Tool,
    Prompt,
}

fn list(view: &View, kind: ListKind, id: Id, params: Option<&RawValue>) -> Message {
    let cursor = match params_obj(params) {
        Ok(o) => match o.get("cursor") {
            None => None,
            Some(c) if c.get() == "null" => None,
            Some(_) => match o.get_str("cursor") {
                Some(c) => Some(c),
                None => return err(id, code::INVALID_PARAMS, "params.cursor must be a string"),
            },
        },
        Err(e) => return err(id, code::INVALID_PARAMS, e),
    };
    match view.page(kind, cursor.as_deref()) {
        Ok(page) => Message::Response { id, result: raw(page) },
        Err(_) => err(id, code::INVALID_PARAMS, "Invalid cursor: pass nextCursor from the previous page unchanged"),
    }
}
