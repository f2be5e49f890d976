//! A fault-injecting mock MCP server. [`Mock`] decides what to do with each message ([`Mock::plan`]);
//! [`serve_http`] (Streamable HTTP: JSON replies, SSE for progress and slow drip, a GET stream for
//! `list_changed`) and [`serve_stdio`] (newline-delimited JSON) carry the plan out.
//!
//! Tools come from a [`MockSpec`]: each has a latency distribution, a result size, and probabilities of an
//! `isError` result, a JSON-RPC error, a crash (process exit, or over HTTP optionally a dropped connection) and a
//! hang (never answered). Every random draw comes from a per-tool `StdRng` seeded from the spec's `seed` and the
//! tool's name, so the n-th call of a tool has the same latency and outcome on every run with the same seed,
//! however calls to other tools interleave. [`Chaos`] switches (hang all calls, drop all connections, extra
//! latency, rotate a tool's description) are flipped at run time through the HTTP control endpoint.
//!
//! [`MockConfig`] is the fixed-latency shorthand the benchmark uses: tools `echo` (instant) and `work`.

mod http;
mod spec;
mod stdio;
#[cfg(test)]
mod tests;

pub use http::{router, serve_http, serve_http_spec, Control};
pub(crate) use spec::toml_error;
pub use spec::{CrashMode, Latency, MockSpec, ToolSpec};
pub use stdio::{serve_stdio, serve_stdio_spec};

use parking_lot::Mutex;
use portcullis_protocol::raw::{raw, to_raw};
use portcullis_protocol::{code, ErrorObject, Id, Message};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Exit status of a crash.
pub const CRASH_EXIT: i32 = 3;

/// The benchmark's mock: `echo` and `work`, a fixed latency, a result size and a seeded `isError` rate.
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

/// Run-time fault switches (the HTTP control endpoint flips them).
#[derive(Debug, Default)]
pub struct Chaos {
    /// Every call hangs.
    pub hang: AtomicBool,
    /// Every HTTP call's connection is dropped (over stdio: the process exits).
    pub drop: AtomicBool,
    /// Added to every call's latency, in µs.
    pub extra_latency_us: AtomicU64,
}

/// What to do with one message.
pub enum Plan {
    /// Notifications and responses: nothing to send.
    Nothing,
    Reply(Message),
    Call(CallPlan),
    /// Exit the process (or, over HTTP with `crash_mode = "drop"`, drop the connection).
    Crash,
    /// Never answer.
    Hang,
    /// Drop the connection without an answer (chaos).
    Drop,
}

/// A `tools/call` to answer after `latency`, with `steps` progress events on the way.
pub struct CallPlan {
    pub latency: Duration,
    pub token: Option<Box<RawValue>>,
    pub steps: u32,
    pub drip: bool,
    pub reply: Message,
}

/// One thing a running call emits.
pub enum Step {
    /// A related notification (progress).
    Note(Message),
    /// A drip step with nothing to say (no progress token): an SSE comment over HTTP, nothing over stdio.
    Tick,
    Reply(Message),
}

impl CallPlan {
    /// Whether the reply should be an SSE stream rather than one JSON body.
    pub fn streams(&self) -> bool {
        self.drip || self.events() > 0
    }

    fn events(&self) -> u32 {
        match (&self.token, self.drip) {
            (_, true) => self.steps.max(1),
            (Some(_), false) => self.steps,
            (None, false) => 0,
        }
    }

    /// Sleep, emitting progress events between equal slices of the latency, then emit the reply.
    pub async fn run(self, tx: &mpsc::Sender<Step>) {
        let n = self.events();
        let slice = self.latency / (n + 1);
        for i in 1..=n {
            tokio::time::sleep(slice).await;
            let step = match &self.token {
                Some(t) => Step::Note(progress(t, i, n)),
                None => Step::Tick,
            };
            if tx.send(step).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(self.latency - slice * n).await;
        let _ = tx.send(Step::Reply(self.reply)).await;
    }

    /// Sleep the latency and return the reply (no events).
    pub async fn finish(self) -> Message {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        self.reply
    }
}

fn progress(token: &RawValue, i: u32, n: u32) -> Message {
    let p = format!(r#"{{"progressToken":{},"progress":{i},"total":{n},"message":"step {i} of {n}"}}"#, token.get());
    Message::notification("notifications/progress", Some(raw(&p)))
}

struct ToolState {
    rng: Mutex<StdRng>,
    /// Times the tool was rotated (its description changed).
    rev: AtomicU64,
    random: bool,
}

/// The handler shared by both front-ends.
pub struct Mock {
    spec: MockSpec,
    tools: Vec<ToolState>,
    pub chaos: Chaos,
    changed: broadcast::Sender<()>,
}

#[derive(Deserialize)]
struct CallParams {
    name: String,
    #[serde(default)]
    arguments: Option<Args>,
    #[serde(default, rename = "_meta")]
    meta: Option<Meta>,
}

#[derive(Deserialize)]
struct Meta {
    #[serde(default, rename = "progressToken")]
    progress_token: Option<Box<RawValue>>,
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

/// FNV-1a, to give each tool its own seed.
fn name_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

impl Mock {
    pub fn new(cfg: MockConfig) -> Mock {
        Mock::from_spec(cfg.into())
    }

    pub fn from_spec(spec: MockSpec) -> Mock {
        let tools = spec
            .tools
            .iter()
            .map(|t| ToolState {
                rng: Mutex::new(StdRng::seed_from_u64(spec.seed ^ name_hash(&t.name))),
                rev: AtomicU64::new(0),
                random: t.latency.is_random() || t.error_rate + t.rpc_error_rate + t.crash_rate + t.hang_rate > 0.0,
            })
            .collect();
        Mock { spec, tools, chaos: Chaos::default(), changed: broadcast::channel(16).0 }
    }

    pub fn spec(&self) -> &MockSpec {
        &self.spec
    }

    /// `notifications/tools/list_changed` events (rotations and the schedule).
    pub fn subscribe(&self) -> broadcast::Receiver<()> {
        self.changed.subscribe()
    }

    /// Change `tool`'s description (append a revision number) and announce `list_changed`.
    pub fn rotate(&self, tool: &str) -> Result<u64, String> {
        let i = self.spec.tools.iter().position(|t| t.name == tool).ok_or_else(|| format!("no tool {tool:?}"))?;
        let rev = self.tools[i].rev.fetch_add(1, Relaxed) + 1;
        let _ = self.changed.send(());
        Ok(rev)
    }

    /// Announce `list_changed` every `list_changed_every`, for as long as the returned task runs.
    pub fn spawn_schedule(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.spec.list_changed_every?;
        let me = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                match me.upgrade() {
                    Some(m) => drop(m.changed.send(())),
                    None => return,
                }
            }
        }))
    }

    /// Answer one message, ignoring progress (the benchmark's fast path and the unit tests). Crash, hang and drop
    /// plans give `None`.
    pub async fn handle(&self, msg: Message) -> Option<Message> {
        match self.plan(msg) {
            Plan::Reply(m) => Some(m),
            Plan::Call(c) => Some(c.finish().await),
            Plan::Nothing | Plan::Crash | Plan::Hang | Plan::Drop => None,
        }
    }

    pub fn plan(&self, msg: Message) -> Plan {
        let Message::Request { id, method, params } = msg else {
            return Plan::Nothing;
        };
        let params = params.as_deref().map_or("{}", RawValue::get);
        Plan::Reply(match method.as_str() {
            "initialize" => initialize(id, params),
            "ping" => Message::empty_result(id),
            "tools/list" => Message::result(id, to_raw(&self.tool_list())),
            "tools/call" => return self.call(id, params),
            other => Message::error(
                Some(id),
                &ErrorObject::new(code::METHOD_NOT_FOUND, format!("Method not found: {other}")),
            ),
        })
    }

    fn tool_list(&self) -> serde_json::Value {
        let tools: Vec<_> = self
            .spec
            .tools
            .iter()
            .zip(&self.tools)
            .map(|(t, s)| {
                let mut d = t.description.clone().unwrap_or_else(|| format!("Mock tool {}.", t.name));
                let rev = s.rev.load(Relaxed);
                if rev > 0 {
                    d.push_str(&format!(" (revision {rev})"));
                }
                serde_json::json!({
                    "name": t.name,
                    "description": d,
                    "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}},
                })
            })
            .collect();
        serde_json::json!({ "tools": tools })
    }

    fn call(&self, id: Id, params: &str) -> Plan {
        let p: CallParams = match serde_json::from_str(params) {
            Ok(p) => p,
            Err(e) => {
                let e = ErrorObject::new(code::INVALID_PARAMS, format!("bad params: {e}"));
                return Plan::Reply(Message::error(Some(id), &e));
            }
        };
        let Some(i) = self.spec.tools.iter().position(|t| t.name == p.name) else {
            let e = ErrorObject::new(code::INVALID_PARAMS, format!("Unknown tool: {}", p.name));
            return Plan::Reply(Message::error(Some(id), &e));
        };
        let (t, state) = (&self.spec.tools[i], &self.tools[i]);
        if self.chaos.drop.load(Relaxed) {
            return Plan::Drop;
        }
        if self.chaos.hang.load(Relaxed) {
            return Plan::Hang;
        }
        let (mut latency, u) = if state.random {
            let mut rng = state.rng.lock();
            let latency = t.latency.sample(&mut *rng);
            (latency, rng.random::<f64>())
        } else {
            (t.latency.sample(&mut rand::rng()), 1.0)
        };
        latency += Duration::from_micros(self.chaos.extra_latency_us.load(Relaxed));
        let mut edge = t.crash_rate;
        if u < edge {
            return Plan::Crash;
        }
        edge += t.hang_rate;
        if u < edge {
            return Plan::Hang;
        }
        edge += t.rpc_error_rate;
        let reply = if u < edge {
            let e = ErrorObject::new(code::INTERNAL_ERROR, "injected error (mock rpc_error_rate)");
            Message::error(Some(id), &e)
        } else if u < edge + t.error_rate {
            Message::result(id, tool_result("injected error (mock error_rate)", 0, true))
        } else {
            let text = p.arguments.unwrap_or_default().text;
            Message::result(id, tool_result(&text, t.result_bytes, false))
        };
        let token = p.meta.and_then(|m| m.progress_token);
        Plan::Call(CallPlan { latency, token, steps: t.progress, drip: t.drip, reply })
    }
}

fn initialize(id: Id, params: &str) -> Message {
    let asked = serde_json::from_str::<InitParams>(params).ok().and_then(|p| p.protocol_version);
    let version = to_raw(&asked.as_deref().unwrap_or(PROTOCOL_VERSION));
    let result = format!(
        r#"{{"protocolVersion":{},"capabilities":{{"tools":{{"listChanged":true}}}},"serverInfo":{{"name":"portcullis-mock","version":"{}"}}}}"#,
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
