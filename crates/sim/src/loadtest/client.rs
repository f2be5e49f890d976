//! The loadtest's MCP client: sessions per flow (with the flow's bearer token and topic endpoint) and one
//! `tools/call` at a time, classified into an [`Outcome`] with its JSON-RPC code or HTTP status.

use super::report::Outcome;
use crate::load::client::find_response;
use bytes::Bytes;
use portcullis_protocol::{Id, Message};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde::Deserialize;
use std::time::Duration;

const SESSION: &str = "mcp-session-id";

/// One MCP endpoint as one identity sees it.
#[derive(Clone)]
pub struct Endpoint {
    pub http: reqwest::Client,
    pub url: String,
    pub auth: Option<HeaderValue>,
}

impl Endpoint {
    fn post(&self, session: Option<&HeaderValue>, body: String) -> reqwest::RequestBuilder {
        let mut rb = self
            .http
            .post(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream")
            .body(body);
        if let Some(s) = session {
            rb = rb.header(SESSION, s.clone());
        }
        if let Some(a) = &self.auth {
            rb = rb.header(AUTHORIZATION, a.clone());
        }
        rb
    }

    /// `initialize` + `notifications/initialized`; the session id, if the server gave one.
    pub async fn open_session(&self) -> Result<Option<HeaderValue>, String> {
        let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"portcullis-loadtest","version":"0.1.0"}}}"#;
        let resp = self.post(None, init.to_owned()).send().await.map_err(|e| chain(&e))?;
        let status = resp.status();
        let session = resp.headers().get(SESSION).cloned();
        let sse = is_sse(&resp);
        let body = resp.bytes().await.map_err(|e| chain(&e))?;
        if status != reqwest::StatusCode::OK {
            return Err(format!("initialize got HTTP {status}: {}", String::from_utf8_lossy(&body)));
        }
        if !matches!(find_response(&body, sse, &Id::Num(0)), Some(Message::Response { .. })) {
            return Err(format!("no initialize result in: {}", String::from_utf8_lossy(&body)));
        }
        let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        let resp = self.post(session.as_ref(), note.to_owned()).send().await.map_err(|e| chain(&e))?;
        if !resp.status().is_success() {
            return Err(format!("notifications/initialized got HTTP {}", resp.status()));
        }
        Ok(session)
    }

    pub async fn close_session(&self, session: &HeaderValue) {
        let mut rb = self.http.delete(&self.url).header(SESSION, session.clone());
        if let Some(a) = &self.auth {
            rb = rb.header(AUTHORIZATION, a.clone());
        }
        let _ = rb.send().await;
    }

    /// One `tools/call` whose `params` are already serialized.
    pub async fn call(&self, session: Option<&HeaderValue>, id: i64, params: &str, timeout: Duration) -> Outcome {
        let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{params}}}"#);
        match tokio::time::timeout(timeout, self.exchange(session, body, id)).await {
            Ok(o) => o,
            Err(_) => Outcome::Timeout,
        }
    }

    async fn exchange(&self, session: Option<&HeaderValue>, body: String, id: i64) -> Outcome {
        let Ok(resp) = self.post(session, body).send().await else {
            return Outcome::Transport;
        };
        let status = resp.status();
        let sse = is_sse(&resp);
        let Ok(body) = resp.bytes().await else {
            return Outcome::Transport;
        };
        classify(status.as_u16(), &body, sse, id)
    }
}

/// The outcome of a reply with `status` and `body` to call `id`.
pub fn classify(status: u16, body: &Bytes, sse: bool, id: i64) -> Outcome {
    #[derive(Deserialize)]
    struct Flag {
        #[serde(default, rename = "isError")]
        is_error: bool,
    }
    if status != 200 {
        // An HTTP error often carries a JSON-RPC error (with a null id): its code says more than the status.
        return match Message::parse(body).ok().and_then(|m| m.error_code()) {
            Some(c) => Outcome::Rpc(c),
            None => Outcome::Http(status),
        };
    }
    match find_response(body, sse, &Id::Num(id)) {
        Some(Message::Response { result, .. }) => match serde_json::from_str::<Flag>(result.get()) {
            Ok(Flag { is_error: true }) => Outcome::ToolError,
            _ => Outcome::Ok,
        },
        Some(m) => m.error_code().map_or(Outcome::Transport, Outcome::Rpc),
        None => Outcome::Transport,
    }
}

fn is_sse(resp: &reqwest::Response) -> bool {
    resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/event-stream"))
}

/// An error with its causes (reqwest's own message leaves out e.g. "Connection refused").
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
