//! Upstream MCP servers.
//!
//! Transports ([`stdio`], [`http`], [`sse_client`]) each yield a [`pipe::Pipe`]; [`conn::Conn`] runs the MCP
//! session over any pipe (handshake, id rewriting, attribution of server-to-client traffic, restarts);
//! [`pool::Upstream`] decides whether a client session shares the upstream's connection or gets its own.
//! Nothing here knows about downstream transports: messages for clients leave through a [`Sink`].

mod attribution;
pub mod conn;
mod error;
pub mod http;
pub mod pipe;
pub mod pool;
pub mod sse_client;
pub mod stdio;

pub use conn::{Call, Conn, ReplyHandle, Status};
pub use error::CallError;
pub use pool::Upstream;

use portcullis_catalog::{ListKind, UpstreamLists};
use portcullis_config::{ClientRequestKind, HttpTransport, UpstreamConfig};
use portcullis_protocol::Message;
use std::sync::Arc;

/// Headers for the gateway's own requests to an upstream (handshake, listing): its service credential.
pub type ServiceHeaders = Arc<dyn Fn() -> Vec<(::http::HeaderName, ::http::HeaderValue)> + Send + Sync>;

/// Where messages an upstream sends to one client session go. Implemented by the gateway's session layer.
pub trait Sink: Send + Sync {
    /// Deliver a notification, or a server-to-client request with the handle to answer it. Must not block.
    fn deliver(&self, msg: Message, reply: Option<ReplyHandle>);
}

/// Upstream events that concern the gateway as a whole rather than one call.
#[derive(Debug)]
pub enum UpstreamEvent {
    /// Fresh lists after initialize or a `list_changed`; `changed` says which kinds to announce.
    Lists {
        upstream: Arc<str>,
        lists: Arc<UpstreamLists>,
        changed: Vec<ListKind>,
    },
    /// `notifications/tasks/status`: goes to the session that created the task.
    TaskStatus {
        upstream: Arc<str>,
        msg: Message,
    },
    /// `notifications/resources/updated` from a shared upstream: goes to the sessions subscribed to `uri`.
    ResourceUpdated {
        upstream: Arc<str>,
        uri: String,
        msg: Message,
    },
    Status {
        upstream: Arc<str>,
        ready: bool,
    },
    InitFailed {
        upstream: Arc<str>,
        reason: String,
    },
}

/// Client capabilities the gateway can relay, declared to upstreams so they offer the matching tools.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientCaps;

impl ClientCaps {
    /// Declare exactly what this upstream is granted in config (invariant: server-to-client requests are a
    /// grant, not a given).
    pub fn to_json(&self, cfg: &UpstreamConfig) -> serde_json::Value {
        let mut caps = serde_json::Map::new();
        if cfg.grants(ClientRequestKind::Sampling) {
            caps.insert("sampling".into(), serde_json::json!({}));
        }
        if cfg.grants(ClientRequestKind::Elicitation) {
            caps.insert("elicitation".into(), serde_json::json!({"form": {}, "url": {}}));
        }
        if cfg.grants(ClientRequestKind::Roots) {
            caps.insert("roots".into(), serde_json::json!({"listChanged": true}));
        }
        serde_json::Value::Object(caps)
    }
}

/// Start the transport an upstream's config asks for.
pub async fn spawn_pipe(cfg: &UpstreamConfig, http: &reqwest::Client) -> Result<pipe::Pipe, String> {
    if let Some(command) = &cfg.command {
        return stdio::spawn(stdio::StdioConfig {
            name: cfg.name.clone(),
            command: command.clone(),
            env: cfg.env.clone(),
            cwd: cfg.cwd.clone(),
            max_message: cfg.max_message,
        })
        .map_err(|e| format!("cannot start {:?}: {e}", command[0]));
    }
    let url = cfg.url.clone().unwrap_or_default();
    match cfg.transport {
        HttpTransport::StreamableHttp => Ok(http::connect(
            http::HttpConfig {
                url,
                max_message: cfg.max_message,
                connect_timeout: cfg.connect_timeout,
                name: cfg.name.clone(),
            },
            http.clone(),
        )),
        HttpTransport::Sse => {
            sse_client::connect(
                sse_client::SseConfig {
                    url,
                    max_message: cfg.max_message,
                    connect_timeout: cfg.connect_timeout,
                    name: cfg.name.clone(),
                },
                http.clone(),
            )
            .await
        }
    }
}
