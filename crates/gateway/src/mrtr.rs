//! Cross-era translation for stateless-era clients: a session-era upstream that asks the client something
//! (sampling, elicitation, roots) in the middle of a call cannot reach a 2026-07-28 client, which has no
//! back-channel. The gateway answers the client's request with an `InputRequiredResult` carrying the upstream's
//! request, holds the upstream call (bounded in time and count), and when the client retries with
//! `inputResponses` + `requestState`, feeds the answers back to the waiting upstream and continues.
//!
//! `requestState` handed to clients is `{id}.{HMAC-SHA256(key, id ‖ principal)}`: a client cannot forge or
//! redirect gateway state, and a state minted for one principal is useless to another.

use crate::stream::StreamBuf;
use crate::Gateway;
use base64::Engine;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use portcullis_auth::Principal;
use portcullis_protocol::raw::to_raw;
use portcullis_protocol::{code, ErrorObject, Id, Message, RawObject};
use portcullis_upstream::ReplyHandle;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a held upstream call waits for the client's retry, and how many may wait at once.
pub const HOLD_FOR: Duration = Duration::from_secs(300);
pub const MAX_HELD: usize = 1024;

struct Input {
    key: String,
    handle: Option<ReplyHandle>,
    method: String,
    params: Option<Box<RawValue>>,
    sent: bool,
}

struct State {
    /// Where the next answer goes, and the client id it answers.
    buf: Arc<StreamBuf>,
    client_id: Id,
    inputs: Vec<Input>,
    next_key: u32,
    /// The upstream's final answer, produced while no client request was waiting for it.
    parked: Option<Message>,
    done: bool,
}

/// One forwarded call of a stateless-era client, possibly spanning several client requests.
pub struct ModernCall {
    pub session: Arc<crate::session::Session>,
    pub method: String,
    /// Held-call id (inside `requestState`).
    pub id: String,
    /// The client id of the first request: the upstream call is tracked (and cancelled) under it.
    pub orig_id: Id,
    pub created: Instant,
    request_state: String,
    gw: std::sync::Weak<Gateway>,
    state: Mutex<State>,
}

impl ModernCall {
    pub fn new(
        gw: &Arc<Gateway>,
        session: Arc<crate::session::Session>,
        method: &str,
        buf: Arc<StreamBuf>,
        client_id: Id,
    ) -> Arc<Self> {
        let id = crate::session::new_session_id();
        let request_state = gw.request_state(&id, &session.principal);
        Arc::new(ModernCall {
            session,
            method: method.to_owned(),
            id,
            orig_id: client_id.clone(),
            created: Instant::now(),
            request_state,
            gw: Arc::downgrade(gw),
            state: Mutex::new(State { buf, client_id, inputs: Vec::new(), next_key: 0, parked: None, done: false }),
        })
    }

    /// A message the upstream sent about this call.
    pub fn on_upstream(self: &Arc<Self>, msg: Message, reply: Option<ReplyHandle>) {
        match (msg, reply) {
            (Message::Request { method, params, .. }, Some(handle)) => {
                if !self.session.caps.lock().allows_method(&method) {
                    let what = method.split('/').next().unwrap_or("it");
                    handle.reply_error(ErrorObject::new(
                        code::METHOD_NOT_FOUND,
                        format!("the client did not declare the {what} capability, so it cannot answer {method}"),
                    ));
                    return;
                }
                let mut st = self.state.lock();
                let key = format!("in{}", st.next_key);
                st.next_key += 1;
                st.inputs.push(Input { key, handle: Some(handle), method, params, sent: false });
                self.flush(&mut st);
            }
            (m, _) => {
                let st = self.state.lock();
                st.buf.push(m.to_json());
            }
        }
    }

    /// Send an `InputRequiredResult` for unsent inputs, if a client request is waiting, and hold the call.
    fn flush(self: &Arc<Self>, st: &mut State) {
        if st.buf.is_done() || !st.inputs.iter().any(|i| !i.sent) {
            return;
        }
        let Some(gw) = self.gw.upgrade() else { return };
        if !gw.hold(self.clone()) {
            for i in st.inputs.drain(..) {
                if let Some(h) = i.handle {
                    h.reply_error(ErrorObject::new(
                        code::INTERNAL_ERROR,
                        "the gateway holds too many calls waiting for client input",
                    ));
                }
            }
            return;
        }
        let mut requests = serde_json::Map::new();
        for i in st.inputs.iter_mut().filter(|i| !i.sent) {
            i.sent = true;
            let params: serde_json::Value = i
                .params
                .as_ref()
                .and_then(|p| serde_json::from_str(p.get()).ok())
                .unwrap_or_else(|| serde_json::json!({}));
            requests.insert(i.key.clone(), serde_json::json!({"method": i.method, "params": params}));
        }
        let result = serde_json::json!({
            "resultType": "input_required",
            "inputRequests": requests,
            "requestState": self.request_state,
        });
        st.buf.push(Message::result(st.client_id.clone(), to_raw(&result)).to_json());
        st.buf.finish();
    }

    /// The upstream answered the call.
    pub fn finish(&self, resp: Message) {
        let mut st = self.state.lock();
        let resp = with_id(resp, st.client_id.clone());
        if st.buf.is_done() {
            st.parked = Some(resp);
        } else {
            st.done = true;
            st.buf.push(resp.to_json());
            st.buf.finish();
        }
    }

    /// The client retried: answer the upstream's questions and wait on `buf` for what comes next.
    pub fn resume(
        self: &Arc<Self>,
        client_id: Id,
        buf: Arc<StreamBuf>,
        responses: Option<&RawValue>,
    ) -> Result<(), String> {
        let answers: HashMap<String, Box<RawValue>> = match responses {
            Some(r) => serde_json::from_str(r.get()).map_err(|e| format!("inputResponses must be an object: {e}"))?,
            None => HashMap::new(),
        };
        let mut st = self.state.lock();
        // Validate everything before changing anything: a bad retry must leave the held call intact.
        if let Some(bad) = answers.keys().find(|k| !st.inputs.iter().any(|i| &i.key == *k && i.sent)) {
            return Err(format!("inputResponses key {bad:?} does not match an outstanding input request"));
        }
        st.buf = buf;
        st.client_id = client_id.clone();
        for (key, answer) in answers {
            let Some(pos) = st.inputs.iter().position(|i| i.key == key && i.sent) else {
                return Err(format!("inputResponses key {key:?} does not match an outstanding input request"));
            };
            let input = st.inputs.remove(pos);
            if let Some(h) = input.handle {
                h.reply(Message::Response { id: Id::Num(0), result: answer });
            }
        }
        if let Some(parked) = st.parked.take() {
            st.done = true;
            st.buf.push(with_id(parked, client_id).to_json());
            st.buf.finish();
            return Ok(());
        }
        // Inputs the client has not answered yet are asked again.
        for i in st.inputs.iter_mut() {
            i.sent = false;
        }
        self.flush(&mut st);
        Ok(())
    }

    pub fn is_done(&self) -> bool {
        self.state.lock().done
    }

    /// Was `buf` ended by an answer (final or input_required) rather than abandoned?
    pub fn answered(&self, buf: &Arc<StreamBuf>) -> bool {
        let st = self.state.lock();
        !Arc::ptr_eq(&st.buf, buf) || st.buf.is_done()
    }
}

impl Drop for ModernCall {
    /// A stateless-era call has no session to outlive it: children a `per_session` upstream started for it end
    /// with the call (otherwise every request would leave one behind until `max_children` refuses new ones).
    fn drop(&mut self) {
        // Questions the client never answered: tell the upstream rather than leave it waiting.
        for input in self.state.get_mut().inputs.drain(..) {
            if let Some(h) = input.handle {
                h.reply_error(ErrorObject::new(
                    code::INTERNAL_ERROR,
                    "the client did not answer before the call ended",
                ));
            }
        }
        let Some(gw) = self.gw.upgrade() else { return };
        let key = self.session.key;
        if gw.upstreams().iter().any(|u| u.session_conn(key).is_some()) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    for u in gw.upstreams() {
                        u.end_session(key).await;
                    }
                });
            }
        }
    }
}

fn with_id(msg: Message, id: Id) -> Message {
    match msg {
        Message::Response { result, .. } => Message::Response { id, result },
        Message::Error { error, .. } => Message::Error { id: Some(id), error },
        m => m,
    }
}

type HmacSha256 = Hmac<sha2::Sha256>;

impl Gateway {
    fn state_mac(&self, id: &str, who: &Principal) -> Vec<u8> {
        let Ok(mut mac) = HmacSha256::new_from_slice(&self.state_key) else { return Vec::new() };
        mac.update(id.as_bytes());
        mac.update(b"\0");
        mac.update(who.issuer.as_deref().unwrap_or("").as_bytes());
        mac.update(b"\0");
        mac.update(who.subject.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// Integrity-protected `requestState` naming a held call.
    pub(crate) fn request_state(&self, id: &str, who: &Principal) -> String {
        let mac = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.state_mac(id, who));
        format!("pc1.{id}.{mac}")
    }

    /// Verify a `requestState` and take the held call it names (it is re-held if more input is needed).
    pub(crate) fn take_held(&self, state: &str, who: &Principal) -> Result<Arc<ModernCall>, &'static str> {
        let mut parts = state.splitn(3, '.');
        let (Some("pc1"), Some(id), Some(mac)) = (parts.next(), parts.next(), parts.next()) else {
            return Err("requestState was not issued by this gateway");
        };
        let Ok(mac) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(mac) else {
            return Err("requestState was not issued by this gateway");
        };
        let Ok(mut expected) = HmacSha256::new_from_slice(&self.state_key) else { return Err("internal error") };
        expected.update(id.as_bytes());
        expected.update(b"\0");
        expected.update(who.issuer.as_deref().unwrap_or("").as_bytes());
        expected.update(b"\0");
        expected.update(who.subject.as_bytes());
        // Constant-time comparison.
        if expected.verify_slice(&mac).is_err() {
            return Err("requestState is invalid (altered, or issued to another caller)");
        }
        self.held.lock().remove(id).ok_or("requestState refers to a call that finished or expired; call again")
    }

    pub(crate) fn hold(&self, call: Arc<ModernCall>) -> bool {
        let mut held = self.held.lock();
        if held.len() >= MAX_HELD {
            return false;
        }
        held.insert(call.id.clone(), call);
        true
    }

    /// Cancel held calls whose client never came back.
    pub(crate) fn reap_held(&self) {
        let expired: Vec<Arc<ModernCall>> = {
            let mut held = self.held.lock();
            let old: Vec<String> =
                held.iter().filter(|(_, c)| c.created.elapsed() > HOLD_FOR).map(|(k, _)| k.clone()).collect();
            old.iter().filter_map(|k| held.remove(k)).collect()
        };
        for c in expired {
            tracing::info!("held call expired without the client's input; cancelling it upstream");
            c.session.close();
        }
    }
}

/// `params.requestState` / `params.inputResponses` of a retry, if present.
pub fn retry_fields(params: Option<&RawValue>) -> (Option<String>, Option<Box<RawValue>>) {
    let Some(obj) = params.and_then(|p| RawObject::parse(p.get()).ok()) else { return (None, None) };
    (obj.get_str("requestState"), obj.get("inputResponses").map(|r| portcullis_protocol::raw::raw(r.get())))
}
