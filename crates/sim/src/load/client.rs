//! The MCP client side of the load generator: open a session, send one `tools/call`, classify the reply.

use super::LoadError;
use bytes::Bytes;
use portcullis_protocol::{sse, Id, Message};
use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use serde::Deserialize;
use std::time::Duration;

const SESSION: &str = "mcp-session-id";
/// Largest SSE event accepted in a reply.
const MAX_EVENT: usize = 16 << 20;

/// How one call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// A result with `isError: true`.
    ToolError,
    /// A JSON-RPC error response.
    RpcError,
    /// Non-200 status, transport failure, or a reply without our response.
    Failed,
}

/// A tools/call client over one pool of keep-alive connections (shared by the load generator and `pc-harness`).
pub struct Client {
    http: reqwest::Client,
    url: String,
    /// `{"name":…,"arguments":…}`, serialized once.
    call_params: String,
}

impl Client {
    /// `headers`: extra headers on every request (e.g. `Authorization`).
    pub fn new(
        url: &str,
        tool: &str,
        args: &serde_json::Value,
        conns: usize,
        headers: reqwest::header::HeaderMap,
    ) -> Result<Client, LoadError> {
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .http1_only()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(conns)
            .pool_idle_timeout(Duration::from_secs(90))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(LoadError::Client)?;
        let call_params = serde_json::json!({ "name": tool, "arguments": args }).to_string();
        Ok(Client { http, url: url.to_owned(), call_params })
    }

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
        rb
    }

    /// `initialize` + `notifications/initialized`; returns the session id header, if the server sent one.
    pub async fn open_session(&self) -> Result<Option<HeaderValue>, LoadError> {
        let fail = |reason: String| LoadError::Initialize { url: self.url.clone(), reason };
        let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"pc-bench","version":"0.1.0"}}}"#;
        let resp = self.post(None, init.to_owned()).send().await.map_err(|e| fail(chain(&e)))?;
        let status = resp.status();
        let session = resp.headers().get(SESSION).cloned();
        let sse = is_sse(&resp);
        let body = resp.bytes().await.map_err(|e| fail(chain(&e)))?;
        if status != reqwest::StatusCode::OK {
            return Err(fail(format!("HTTP {status}: {}", String::from_utf8_lossy(&body))));
        }
        match find_response(&body, sse, &Id::Num(0)) {
            Some(Message::Response { .. }) => {}
            Some(m) => return Err(fail(format!("error reply: {}", m.to_json()))),
            None => return Err(fail(format!("no initialize response in: {}", String::from_utf8_lossy(&body)))),
        }
        let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        let resp = self.post(session.as_ref(), note.to_owned()).send().await.map_err(|e| fail(chain(&e)))?;
        if !resp.status().is_success() {
            return Err(fail(format!("notifications/initialized got HTTP {}", resp.status())));
        }
        Ok(session)
    }

    /// `DELETE` the session (best effort: the run's figures are already taken).
    pub async fn close_session(&self, session: &HeaderValue) -> Result<(), reqwest::Error> {
        self.http.delete(&self.url).header(SESSION, session.clone()).send().await.map(drop)
    }

    /// One `tools/call` with JSON-RPC id `id`.
    pub async fn call(&self, session: Option<&HeaderValue>, id: i64) -> Outcome {
        let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{}}}"#, self.call_params);
        let Ok(resp) = self.post(session, body).send().await else {
            return Outcome::Failed;
        };
        if resp.status() != reqwest::StatusCode::OK {
            // Drain so the connection can be reused.
            let _ = resp.bytes().await;
            return Outcome::Failed;
        }
        let sse = is_sse(&resp);
        let Ok(body) = resp.bytes().await else {
            return Outcome::Failed;
        };
        classify(find_response(&body, sse, &Id::Num(id)))
    }
}

/// An error with its causes: reqwest's own message leaves out why (e.g. "Connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn is_sse(resp: &reqwest::Response) -> bool {
    resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/event-stream"))
}

/// The response (result or error) to request `id` in a JSON body or in an SSE body's `data` lines.
pub(crate) fn find_response(body: &Bytes, sse: bool, id: &Id) -> Option<Message> {
    let ours = |m: &Message| m.is_response() && m.id() == Some(id);
    if !sse {
        return Message::parse(body).ok().filter(ours);
    }
    let events = sse::Decoder::new(MAX_EVENT).feed(body).ok()?;
    events.iter().filter_map(|e| Message::parse(e.data.as_bytes()).ok()).find(ours)
}

pub(crate) fn classify(reply: Option<Message>) -> Outcome {
    #[derive(Deserialize)]
    struct Flag {
        #[serde(default, rename = "isError")]
        is_error: bool,
    }
    match reply {
        Some(Message::Response { result, .. }) => match serde_json::from_str::<Flag>(result.get()) {
            Ok(Flag { is_error: true }) => Outcome::ToolError,
            _ => Outcome::Ok,
        },
        Some(_) => Outcome::RpcError,
        None => Outcome::Failed,
    }
}
