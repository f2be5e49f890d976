//! The scenario file: what to start, what traffic to send, what to break and when, and the SLOs to judge the run
//! by. Unknown keys are rejected; every error reads `FILE: KEY: reason`. The format is documented in
//! README.md ("Load and chaos testing") and in the header of each file in `examples/scenarios/`.

use crate::mock::MockSpec;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) fn dur<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(s.trim())
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?} ({e}); use e.g. \"10s\" or \"250ms\"")))
}

fn opt_dur<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    dur(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default)]
    pub name: Option<String>,
    /// Length of the arrival schedule.
    #[serde(deserialize_with = "dur")]
    pub duration: Duration,
    /// Calls due before this are sent but not recorded.
    #[serde(default, deserialize_with = "opt_dur")]
    pub warmup: Option<Duration>,
    /// A call with no answer after this counts as `timeout`.
    #[serde(default = "default_timeout", deserialize_with = "dur")]
    pub timeout: Duration,
    /// Seed for arrivals and the tool mix.
    #[serde(default)]
    pub seed: u64,
    /// Calls in flight at most; arrivals past it wait and are timed from when they were due.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// Width of a point on the latency-over-time chart.
    #[serde(default = "default_bucket", deserialize_with = "dur")]
    pub bucket: Duration,
    pub target: Target,
    #[serde(default, rename = "mock")]
    pub mocks: Vec<MockEntry>,
    #[serde(default)]
    pub auth: Option<AuthSpec>,
    #[serde(default, rename = "principal")]
    pub principals: Vec<PrincipalSpec>,
    #[serde(rename = "flow")]
    pub flows: Vec<FlowSpec>,
    #[serde(default)]
    pub chaos: Vec<ChaosSpec>,
    #[serde(default)]
    pub slo: Option<SloSpec>,
    /// Directory of the scenario file (relative paths are resolved against it).
    #[serde(skip)]
    pub dir: PathBuf,
    #[serde(skip)]
    pub file: String,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_in_flight() -> usize {
    1024
}
fn default_bucket() -> Duration {
    Duration::from_secs(1)
}

/// Where the traffic goes: a gateway the loadtest starts, or one already running.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// A gateway config to run with `portcullis serve`; `${mock.NAME}` becomes that mock's URL and `${dir}` the
    /// config's own directory. Its `server.listen` should be `127.0.0.1:0`.
    #[serde(default)]
    pub gateway_config: Option<PathBuf>,
    /// The MCP endpoint of a running gateway (or any MCP server), e.g. `http://127.0.0.1:8080/mcp`.
    #[serde(default)]
    pub url: Option<String>,
    /// With `gateway_config`: the path after the gateway's address (default `/mcp`).
    #[serde(default = "default_path")]
    pub path: String,
}

fn default_path() -> String {
    "/mcp".into()
}

/// A mock upstream the loadtest runs as a child (`portcullis mock-server --listen 127.0.0.1:0 --control`).
#[derive(Debug, Deserialize)]
pub struct MockEntry {
    pub name: String,
    /// The rest is a mock-server config (`seed`, `list_changed_every`, `crash_mode`, `[[mock.tool]]`).
    #[serde(flatten)]
    pub config: toml::Table,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSpec {
    /// Dev signing key (PEM); created with its public JWKS on first use (`portcullis token mint` does the same).
    pub signing_key: PathBuf,
    pub jwks: PathBuf,
    pub issuer: String,
    pub audience: String,
    #[serde(default = "default_ttl", deserialize_with = "dur")]
    pub ttl: Duration,
}

fn default_ttl() -> Duration {
    Duration::from_secs(3600)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalSpec {
    pub name: String,
    /// A bearer token to send as is (JWT or API key); otherwise one is minted with `[auth]`, or none is sent.
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// One source of traffic: its own arrival process, sessions, identity, topic, class and tool mix.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    pub name: String,
    /// Priority class, sent as `params._meta["io.portcullis/priority"]`; the report groups by it.
    #[serde(default = "default_class")]
    pub class: String,
    #[serde(default)]
    pub principal: Option<String>,
    /// Calls go to `{endpoint}/{topic}`.
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default = "one")]
    pub sessions: usize,
    pub arrival: super::arrival::ArrivalSpec,
    #[serde(rename = "tool")]
    pub tools: Vec<ToolMix>,
}

fn default_class() -> String {
    "default".into()
}
fn one() -> usize {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolMix {
    pub name: String,
    #[serde(default = "unit_weight")]
    pub weight: f64,
    #[serde(default = "empty_args")]
    pub args: serde_json::Value,
}

fn unit_weight() -> f64 {
    1.0
}
fn empty_args() -> serde_json::Value {
    serde_json::json!({})
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChaosAction {
    /// SIGKILL the mock; with `for`, start it again on the same address after that long.
    Kill,
    /// Every call to the mock hangs (with `for`: until then).
    Hang,
    /// Add `add` to every call's latency.
    Latency,
    /// Drop the connection of every call.
    Drop,
    /// Change `tool`'s description and send `list_changed` (a rug pull).
    Rotate,
    /// Send `list_changed` without changing anything.
    ListChanged,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosSpec {
    #[serde(deserialize_with = "dur")]
    pub at: Duration,
    pub action: ChaosAction,
    pub mock: String,
    #[serde(default, rename = "for", deserialize_with = "opt_dur")]
    pub for_: Option<Duration>,
    #[serde(default, deserialize_with = "opt_dur")]
    pub add: Option<Duration>,
    #[serde(default)]
    pub tool: Option<String>,
}

/// Limits the run must meet; every key is optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Share of calls that did not succeed (isError, JSON-RPC errors, HTTP errors, transport, timeouts).
    pub error_rate: Option<f64>,
    /// Share of calls shed (-32012, -32011, HTTP 429/503).
    pub shed_rate: Option<f64>,
    /// Completed calls per second, at least.
    pub min_throughput: Option<f64>,
}

/// `[slo]`: the run-wide limits, and per-class limits in `[slo.class.NAME]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloSpec {
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub error_rate: Option<f64>,
    pub shed_rate: Option<f64>,
    pub min_throughput: Option<f64>,
    #[serde(default)]
    pub class: BTreeMap<String, Limits>,
}

impl SloSpec {
    /// The run-wide limits.
    pub fn all(&self) -> Limits {
        Limits {
            p50_ms: self.p50_ms,
            p90_ms: self.p90_ms,
            p99_ms: self.p99_ms,
            p999_ms: self.p999_ms,
            max_ms: self.max_ms,
            error_rate: self.error_rate,
            shed_rate: self.shed_rate,
            min_throughput: self.min_throughput,
        }
    }
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, String> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{file}: cannot read: {e}"))?;
        let mut s = Scenario::parse(&text, &file)?;
        s.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(s)
    }

    pub fn parse(text: &str, file: &str) -> Result<Scenario, String> {
        let mut s: Scenario = toml::from_str(text).map_err(|e| crate::mock::toml_error(text, file, &e))?;
        s.file = file.to_owned();
        s.validate().map_err(|(key, why)| format!("{file}: {key}: {why}"))?;
        Ok(s)
    }

    /// The mock-server config of `[[mock]]` entry `i`, checked the way `mock-server --config` checks it.
    pub fn mock_spec(&self, i: usize) -> Result<MockSpec, String> {
        let text = toml::to_string(&self.mocks[i].config).map_err(|e| e.to_string())?;
        MockSpec::from_toml(&text, &format!("mock[{i}] ({})", self.mocks[i].name))
    }

    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            Path::new(&self.file).file_stem().map_or("scenario".into(), |s| s.to_string_lossy().into_owned())
        })
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, why: &str| Err((k.to_owned(), why.to_owned()));
        if self.duration.is_zero() {
            return bad("duration", "must be longer than 0s");
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight", "must be at least 1");
        }
        if self.bucket.is_zero() {
            return bad("bucket", "must be longer than 0s");
        }
        match (&self.target.gateway_config, &self.target.url) {
            (Some(_), Some(_)) => return bad("target", "set gateway_config or url, not both"),
            (None, None) => return bad("target", "set gateway_config (a gateway to start) or url (a running one)"),
            _ => {}
        }
        for (i, m) in self.mocks.iter().enumerate() {
            if self.mocks[..i].iter().any(|o| o.name == m.name) {
                return Err((format!("mock[{i}].name"), format!("{:?} is declared twice", m.name)));
            }
            self.mock_spec(i).map_err(|e| (format!("mock[{i}]"), e))?;
        }
        if self.flows.is_empty() {
            return bad("flow", "no [[flow]] entries; declare at least one");
        }
        for (i, f) in self.flows.iter().enumerate() {
            let key = |k: &str| format!("flow[{i}].{k}");
            if f.sessions == 0 {
                return Err((key("sessions"), "must be at least 1".into()));
            }
            if f.tools.is_empty() {
                return Err((key("tool"), "no [[flow.tool]] entries; declare at least one".into()));
            }
            for (j, t) in f.tools.iter().enumerate() {
                if !(t.weight.is_finite() && t.weight > 0.0) {
                    return Err((key(&format!("tool[{j}].weight")), "must be a positive number".into()));
                }
                if !t.args.is_object() {
                    return Err((key(&format!("tool[{j}].args")), "must be a table".into()));
                }
            }
            if let Some(p) = &f.principal {
                if !self.principals.iter().any(|x| &x.name == p) {
                    return Err((key("principal"), format!("no [[principal]] named {p:?}")));
                }
            }
            f.arrival.check().map_err(|(k, why)| (key(&format!("arrival.{k}")), why))?;
        }
        for (i, c) in self.chaos.iter().enumerate() {
            let key = |k: &str| format!("chaos[{i}].{k}");
            let Some(m) = self.mocks.iter().position(|m| m.name == c.mock) else {
                return Err((key("mock"), format!("no [[mock]] named {:?}", c.mock)));
            };
            match c.action {
                ChaosAction::Latency if c.add.is_none() => {
                    return Err((key("add"), "action \"latency\" needs add = \"50ms\"".into()))
                }
                ChaosAction::Rotate => {
                    let spec = self.mock_spec(m).map_err(|e| (key("mock"), e))?;
                    match &c.tool {
                        None => return Err((key("tool"), "action \"rotate\" needs the mock's tool name".into())),
                        Some(t) if !spec.tools.iter().any(|x| &x.name == t) => {
                            return Err((key("tool"), format!("mock {:?} has no tool {t:?}", c.mock)))
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}
