//! What the mock serves: [`MockSpec`] (tools, seed, schedules) and each tool's [`ToolSpec`] with its latency
//! [`Latency`] distribution and fault rates. Built from command-line flags or a TOML file (`[[tool]]` entries,
//! unknown keys rejected, every error naming the file and the key).

use super::MockConfig;
use rand::Rng;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// The z-score of the 99th percentile of a standard normal distribution.
const Z99: f64 = 2.326_347_874;

/// How long a tool takes. Text form (flags and TOML): `5ms`, `uniform:1ms..10ms`, `normal:p50=5ms,p99=20ms`,
/// `lognormal:p50=5ms,p99=80ms`, `exp:mean=5ms`.
#[derive(Debug, Clone, PartialEq)]
pub enum Latency {
    Fixed(Duration),
    Uniform {
        min: Duration,
        max: Duration,
    },
    /// Normal with mean `p50` and the spread that puts its 99th percentile at `p99`; clamped at zero.
    Normal {
        p50: Duration,
        p99: Duration,
    },
    /// Log-normal with median `p50` and 99th percentile `p99` (the long-tail shape of real services).
    LogNormal {
        p50: Duration,
        p99: Duration,
    },
    Exponential {
        mean: Duration,
    },
}

impl Latency {
    pub const ZERO: Latency = Latency::Fixed(Duration::ZERO);

    pub fn parse(s: &str) -> Result<Latency, String> {
        let s = s.trim();
        let dur = |v: &str| {
            humantime::parse_duration(v.trim()).map_err(|e| format!("{v:?} is not a duration ({e}); write e.g. 5ms"))
        };
        let Some((kind, rest)) = s.split_once(':') else {
            return dur(s).map(Latency::Fixed);
        };
        let keys = |want: &[&str]| -> Result<Vec<Duration>, String> {
            let mut got = vec![None; want.len()];
            for part in rest.split(',') {
                let (k, v) = part.split_once('=').ok_or_else(|| format!("{part:?}: expected key=duration"))?;
                let i = want
                    .iter()
                    .position(|w| *w == k.trim())
                    .ok_or_else(|| format!("{kind}: unknown parameter {:?}; it takes {}", k.trim(), want.join(", ")))?;
                got[i] = Some(dur(v)?);
            }
            want.iter().zip(got).map(|(w, g)| g.ok_or_else(|| format!("{kind}: {w}= is missing"))).collect()
        };
        let lat = match kind.trim() {
            "fixed" => Latency::Fixed(dur(rest)?),
            "uniform" => {
                let (a, b) = rest.split_once("..").ok_or("uniform: write uniform:MIN..MAX, e.g. uniform:1ms..10ms")?;
                Latency::Uniform { min: dur(a)?, max: dur(b)? }
            }
            "normal" => keys(&["p50", "p99"]).map(|v| Latency::Normal { p50: v[0], p99: v[1] })?,
            "lognormal" => keys(&["p50", "p99"]).map(|v| Latency::LogNormal { p50: v[0], p99: v[1] })?,
            "exp" => keys(&["mean"]).map(|v| Latency::Exponential { mean: v[0] })?,
            other => {
                return Err(format!("unknown distribution {other:?}; use fixed, uniform, normal, lognormal or exp"))
            }
        };
        match lat {
            Latency::Uniform { min, max } if min > max => Err("uniform: MIN is larger than MAX".into()),
            Latency::Normal { p50, p99 } | Latency::LogNormal { p50, p99 } if p99 < p50 => {
                Err(format!("{kind}: p99 is smaller than p50"))
            }
            Latency::LogNormal { p50, .. } if p50.is_zero() => Err("lognormal: p50 must be above 0".into()),
            l => Ok(l),
        }
    }

    /// Whether sampling needs random draws.
    pub fn is_random(&self) -> bool {
        !matches!(self, Latency::Fixed(_))
    }

    /// One sample. Always consumes exactly two draws from `rng` when random, so the fault draws that follow stay
    /// aligned across distributions.
    pub fn sample<R: Rng>(&self, rng: &mut R) -> Duration {
        let secs = |d: &Duration| d.as_secs_f64();
        let (u1, u2): (f64, f64) = match self {
            Latency::Fixed(d) => return *d,
            _ => (rng.random(), rng.random()),
        };
        // Box-Muller: a standard normal from two uniforms (1 - u1 is in (0, 1], so ln is finite).
        let z = || (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let s = match self {
            Latency::Fixed(_) => 0.0,
            Latency::Uniform { min, max } => secs(min) + (secs(max) - secs(min)) * u1,
            Latency::Normal { p50, p99 } => secs(p50) + z() * (secs(p99) - secs(p50)) / Z99,
            Latency::LogNormal { p50, p99 } => {
                let sigma = (secs(p99) / secs(p50)).ln() / Z99;
                (secs(p50).ln() + sigma * z()).exp()
            }
            Latency::Exponential { mean } => -secs(mean) * (1.0 - u1).ln(),
        };
        Duration::try_from_secs_f64(s.clamp(0.0, 3600.0)).unwrap_or_default()
    }
}

/// What a tool does when called over HTTP and the mock decides it crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CrashMode {
    /// The whole process exits with status 3 (like a crashing server; over stdio this is the only mode).
    #[default]
    Exit,
    /// Only this call's connection is dropped without a complete response; the server keeps running.
    Drop,
}

/// One tool. Rates are probabilities in [0, 1], drawn in the order crash, hang, JSON-RPC error, `isError`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default = "zero_latency", deserialize_with = "de_latency")]
    pub latency: Latency,
    #[serde(default = "default_result_bytes")]
    pub result_bytes: usize,
    /// Calls answered with a result with `isError: true`.
    #[serde(default)]
    pub error_rate: f64,
    /// Calls answered with a JSON-RPC error (-32603).
    #[serde(default)]
    pub rpc_error_rate: f64,
    #[serde(default)]
    pub crash_rate: f64,
    /// Calls never answered.
    #[serde(default)]
    pub hang_rate: f64,
    /// `notifications/progress` sent during a call whose request carries a `progressToken`, spread over its
    /// latency.
    #[serde(default)]
    pub progress: u32,
    /// Over HTTP, answer as SSE with the latency split into `max(progress, 1) + 1` steps, a progress event (or an
    /// SSE comment when the client sent no token) between steps, and the result last.
    #[serde(default)]
    pub drip: bool,
}

fn zero_latency() -> Latency {
    Latency::ZERO
}
fn default_result_bytes() -> usize {
    64
}
fn de_latency<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Latency, D::Error> {
    let s = String::deserialize(d)?;
    Latency::parse(&s).map_err(serde::de::Error::custom)
}
fn de_opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map(Some).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
}

impl ToolSpec {
    pub fn new(name: &str) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            description: None,
            latency: Latency::ZERO,
            result_bytes: 64,
            error_rate: 0.0,
            rpc_error_rate: 0.0,
            crash_rate: 0.0,
            hang_rate: 0.0,
            progress: 0,
            drip: false,
        }
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        let rates = [
            ("error_rate", self.error_rate),
            ("rpc_error_rate", self.rpc_error_rate),
            ("crash_rate", self.crash_rate),
            ("hang_rate", self.hang_rate),
        ];
        for (key, r) in rates {
            if !(0.0..=1.0).contains(&r) {
                return Err((key, format!("{r} is not a probability; use a number from 0 to 1")));
            }
        }
        if self.name.is_empty() {
            return Err(("name", "must not be empty".into()));
        }
        Ok(())
    }
}

/// The whole mock: its tools and server-wide behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockSpec {
    /// Seed of every random draw; the same seed gives the same outcomes per tool, call by call.
    #[serde(default)]
    pub seed: u64,
    /// Send `notifications/tools/list_changed` this often (stdio: on stdout; HTTP: on each session's GET stream).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub list_changed_every: Option<Duration>,
    #[serde(default)]
    pub crash_mode: CrashMode,
    #[serde(default, rename = "tool")]
    pub tools: Vec<ToolSpec>,
}

impl MockSpec {
    /// Read a TOML file. Errors read `FILE: KEY: reason`.
    pub fn load(path: &Path) -> Result<MockSpec, String> {
        let file = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{file}: cannot read: {e}"))?;
        MockSpec::from_toml(&text, &file.to_string())
    }

    pub fn from_toml(text: &str, file: &str) -> Result<MockSpec, String> {
        let spec: MockSpec = toml::from_str(text).map_err(|e| toml_error(text, file, &e))?;
        spec.validate().map_err(|(key, why)| format!("{file}: {key}: {why}"))?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.tools.is_empty() {
            return Err(("tool".into(), "no [[tool]] entries; declare at least one tool".into()));
        }
        for (i, t) in self.tools.iter().enumerate() {
            t.check().map_err(|(k, why)| (format!("tool[{i}].{k}"), why))?;
            if self.tools[..i].iter().any(|o| o.name == t.name) {
                return Err((format!("tool[{i}].name"), format!("{:?} is declared twice", t.name)));
            }
        }
        if self.list_changed_every.is_some_and(|d| d.is_zero()) {
            return Err(("list_changed_every".into(), "must be longer than 0s".into()));
        }
        Ok(())
    }

    /// The two default tools: `echo` (no latency) and `work` (after `latency`), both with `tool`'s other
    /// settings.
    pub fn echo_and_work(tool: ToolSpec, seed: u64) -> MockSpec {
        let echo = ToolSpec {
            name: "echo".into(),
            description: Some("Return the text, padded to the configured result size.".into()),
            latency: Latency::ZERO,
            ..tool.clone()
        };
        let work = ToolSpec {
            name: "work".into(),
            description: Some("Like echo, after the configured latency.".into()),
            ..tool
        };
        MockSpec { seed, list_changed_every: None, crash_mode: CrashMode::Exit, tools: vec![echo, work] }
    }
}

impl From<MockConfig> for MockSpec {
    fn from(c: MockConfig) -> MockSpec {
        let tool = ToolSpec {
            latency: Latency::Fixed(c.latency),
            result_bytes: c.result_bytes,
            // NaN fails the comparison and becomes 0.
            error_rate: if c.error_rate > 0.0 { c.error_rate.min(1.0) } else { 0.0 },
            ..ToolSpec::new("work")
        };
        MockSpec::echo_and_work(tool, c.seed)
    }
}

/// `FILE: KEY (line N): message` for a TOML error; the key is read off the offending line, prefixed by the
/// table header above it (`tool.latency`).
pub(crate) fn toml_error(text: &str, file: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim_end();
    let Some(span) = e.span() else {
        return format!("{file}: {msg}");
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or_default();
    let header = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|h| h.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    let key = line.split_once('=').map(|(k, _)| k.trim().to_owned()).filter(|k| !k.starts_with('['));
    let key = match (header, key) {
        (Some(h), Some(k)) => format!("{h}.{k}: "),
        (None, Some(k)) => format!("{k}: "),
        (Some(h), None) => format!("{h}: "),
        (None, None) => String::new(),
    };
    format!("{file}: {key}{msg} (line {line_no})")
}
