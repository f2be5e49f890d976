//! A fast mock MCP server. [`Mock`] answers one message at a time; [`serve_http`] (Streamable HTTP, JSON replies)
//! and [`serve_stdio`] (newline-delimited JSON) are two front-ends over it.
//!
//! Tools: `echo {text}` returns the text padded to `result_bytes`; `work {text}` does the same after sleeping
//! `latency`. With `error_rate > 0` a call fails (an `isError: true` result) with that probability, drawn from a
//! `StdRng` seeded with `seed`: the sequence of outcomes is the same on every run with the same seed.

mod http;
mod stdio;
#[cfg(test)]
mod tests;

pub use http::{router, serve_http};
pub use stdio::serve_stdio;

use parking_lot::Mutex;
use portcullis_protocol::raw::{raw, to_raw};
use portcullis_protocol::{code, ErrorObject, Id, Message};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::time::Duration;

/// What the mock's tools do. `Default` is the fastest server: no latency, 64-byte results, no errors.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// How long `work` sleeps before answering (`echo` never sleeps).
    pub latency: Duration,
    /// Results are padded to at least this many bytes of text.
    pub result_bytes: usize,
    /// Probability in [0, 1] that a call returns `isError: true`.
    pub error_rate: f64,
    /// Seed for the error draws.
    pub seed: u64,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig { latency: Duration::ZERO, result_bytes: 64, error_rate: 0.0, seed: 0 }
    }
}

/// The protocol version answered when the client does not ask for one.
pub const PROTOCOL_VERSION: &str = "2025-06-18";

const TOOLS: &str = r#"{"tools":[{"name":"echo","description":"Return the text, padded to the configured result size.","inputSchema":{"type":"object","properties":{"text":{"type":"string"}}}},{"name":"work","description":"Like echo, after the configured latency.","inputSchema":{"type":"object","properties":{"text":{"type":"string"}}}}]}"#;

/// The handler shared by both front-ends.
pub struct Mock {
    cfg: MockConfig,
    rng: Mutex<StdRng>,
}

#[derive(Deserialize)]
struct CallParams {
    name: String,
    #[serde(default)]
    arguments: Option<Args>,
}

#[derive(Deserialize, Default)]
struct Args {
    #[serde(default)]
    text: String,
}

#[derive(Deserialize)]
struct InitParams {
    #[serde(default, rename = "protocolVersion")]
    protocol_version: Option<String>,
}

impl Mock {
    pub fn new(mut cfg: MockConfig) -> Mock {
        // NaN fails both comparisons and becomes 0.
        cfg.error_rate = if cfg.error_rate > 0.0 { cfg.error_rate.min(1.0) } else { 0.0 };
        let rng = Mutex::new(StdRng::seed_from_u64(cfg.seed));
        Mock { cfg, rng }
    }

    pub fn config(&self) -> &MockConfig {
        &self.cfg
    }

    /// Answer one message. Requests get a response; notifications and responses get `None`.
    pub async fn handle(&self, msg: Message) -> Option<Message> {
        let Message::Request { id, method, params } = msg else {
            return None;
        };
        let params = params.as_deref().map_or("{}", RawValue::get);
        Some(match method.as_str() {
            "initialize" => initialize(id, params),
            "ping" => Message::empty_result(id),
            "tools/list" => Message::result(id, raw(TOOLS)),
            "tools/call" => self.call(id, params).await,
            other => Message::error(
                Some(id),
                &ErrorObject::new(code::METHOD_NOT_FOUND, format!("Method not found: {other}")),
            ),
        })
    }

    async fn call(&self, id: Id, params: &str) -> Message {
        let p: CallParams = match serde_json::from_str(params) {
            Ok(p) => p,
            Err(e) => {
                return Message::error(Some(id), &ErrorObject::new(code::INVALID_PARAMS, format!("bad params: {e}")))
            }
        };
        match p.name.as_str() {
            "echo" => {}
            "work" if !self.cfg.latency.is_zero() => tokio::time::sleep(self.cfg.latency).await,
            "work" => {}
            other => {
                let msg = format!("Unknown tool: {other}");
                return Message::error(Some(id), &ErrorObject::new(code::INVALID_PARAMS, msg));
            }
        }
        if self.draw_error() {
            return Message::result(id, tool_result("injected error (mock error_rate)", 0, true));
        }
        let text = p.arguments.unwrap_or_default().text;
        Message::result(id, tool_result(&text, self.cfg.result_bytes, false))
    }

    fn draw_error(&self) -> bool {
        self.cfg.error_rate > 0.0 && self.rng.lock().random::<f64>() < self.cfg.error_rate
    }
}

fn initialize(id: Id, params: &str) -> Message {
    let asked = serde_json::from_str::<InitParams>(params).ok().and_then(|p| p.protocol_version);
    let version = to_raw(&asked.as_deref().unwrap_or(PROTOCOL_VERSION));
    let result = format!(
        r#"{{"protocolVersion":{},"capabilities":{{"tools":{{}}}},"serverInfo":{{"name":"portcullis-mock","version":"{}"}}}}"#,
        version.get(),
        env!("CARGO_PKG_VERSION")
    );
    Message::result(id, raw(&result))
}

/// `{"content":[{"type":"text","text":…}],"isError":…}` with the text padded with `.` to `min_len` bytes.
fn tool_result(text: &str, min_len: usize, is_error: bool) -> Box<RawValue> {
    let mut t = String::with_capacity(text.len().max(min_len));
    t.push_str(text);
    while t.len() < min_len {
        t.push('.');
    }
    let s = format!(r#"{{"content":[{{"type":"text","text":{}}}],"isError":{is_error}}}"#, to_raw(&t).get());
    raw(&s)
}
