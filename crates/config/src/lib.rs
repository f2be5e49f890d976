//! Portcullis configuration: one TOML file, strict (`deny_unknown_fields` everywhere, so a key the gateway does
//! not implement is an error rather than a silent no-op), validated at load time. Every error names the file,
//! the key and the reason.
//!
//! Main type: [`Config`]. Each pipeline stage owns its section type.

mod auth;
mod units;
mod validate;

pub use auth::{ApiKeyConfig, AuthConfig, ClientAuth, CredentialConfig, Hs256Config, JwtConfig};
pub use units::{parse_duration, parse_size};

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {reason}")]
pub struct ConfigError {
    pub file: String,
    /// Dotted path of the offending key, e.g. `upstream[1].timeout`.
    pub key: String,
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<UpstreamConfig>,
    #[serde(default, rename = "topic")]
    pub topics: Vec<TopicConfig>,
    /// Inbound authentication; absent = anonymous mode.
    pub auth: Option<AuthConfig>,
    /// Directory relative paths in the file resolve against (the file's own directory).
    #[serde(skip)]
    pub base_dir: PathBuf,
    #[serde(skip)]
    pub source: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `/healthz`, `/readyz`. Absent = no admin listener.
    pub admin_listen: Option<SocketAddr>,
    /// Serve `/mcp` with every tool of every upstream. Switch off to expose only topics.
    #[serde(default = "yes")]
    pub all_tools_endpoint: bool,
    /// Allowed `Origin` values (exact, or `scheme://host:*` for any port). Empty on a loopback listener means
    /// loopback origins only; a request without `Origin` (non-browser client) is always allowed.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Allowed `Host` header host names (port ignored). Empty on a loopback listener means loopback names only;
    /// empty on any other listener means any host.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    #[serde(default = "default_max_body", deserialize_with = "units::size")]
    pub max_body: usize,
    #[serde(default = "default_idle", deserialize_with = "units::duration")]
    pub session_idle_timeout: Duration,
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Events kept per SSE stream for `Last-Event-ID` resumption.
    #[serde(default = "default_replay")]
    pub sse_replay: usize,
    #[serde(default = "default_grace", deserialize_with = "units::duration")]
    pub shutdown_grace: Duration,
    #[serde(default = "default_sep")]
    pub name_separator: String,
    /// Serve protocol 2026-07-28 (stateless era) next to the session era, chosen per request. On by default;
    /// switch off to make `auto` clients fall back to the session era.
    #[serde(default = "yes")]
    pub stateless_era: bool,
    /// Page size for the all-tools endpoint's lists.
    #[serde(default = "default_page_size")]
    pub page_size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpTransport {
    StreamableHttp,
    Sse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientRequestKind {
    Sampling,
    Elicitation,
    Roots,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    /// stdio child: program and arguments.
    pub command: Option<Vec<String>>,
    /// HTTP upstream endpoint.
    pub url: Option<String>,
    #[serde(default = "default_transport")]
    pub transport: HttpTransport,
    /// Child environment: exactly these plus PATH, HOME and LANG from the gateway's own environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory of a stdio child, relative to the config file's directory (the default).
    pub cwd: Option<PathBuf>,
    #[serde(default = "default_timeout", deserialize_with = "units::duration")]
    pub timeout: Duration,
    #[serde(default = "default_max_message", deserialize_with = "units::size")]
    pub max_message: usize,
    /// One child per client session instead of one shared child (for stateful servers).
    #[serde(default)]
    pub per_session: bool,
    /// Cap on children when `per_session` is set.
    #[serde(default = "default_max_children")]
    pub max_children: usize,
    /// Readiness waits for this upstream to initialize.
    #[serde(default = "yes")]
    pub required: bool,
    /// Server-to-client requests this upstream may send through the gateway. Default: none (fail closed).
    #[serde(default)]
    pub client_requests: Vec<ClientRequestKind>,
    #[serde(default = "default_backoff_initial", deserialize_with = "units::duration")]
    pub restart_initial_backoff: Duration,
    #[serde(default = "default_backoff_max", deserialize_with = "units::duration")]
    pub restart_max_backoff: Duration,
    #[serde(default = "default_connect_timeout", deserialize_with = "units::duration")]
    pub connect_timeout: Duration,
    /// How the gateway authenticates to this upstream (never with the caller's own token).
    #[serde(default)]
    pub credential: CredentialConfig,
    /// For a shared stdio child, which cannot take per-call environment: the per-call credential travels in
    /// `params._meta` under this key. Per-session children get it as `PORTCULLIS_UPSTREAM_TOKEN` instead.
    #[serde(default = "default_credential_meta_key")]
    pub credential_meta_key: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Globs over federated tool names (`time__*`).
    pub tools: Vec<String>,
    /// Shorter names: alias → federated tool name. The alias replaces the name inside this topic.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    /// Globs over federated prompt names. Default: no prompts (a topic is a tool set).
    #[serde(default)]
    pub prompts: Vec<String>,
    /// Upstreams whose resources and resource templates this topic exposes. Default: none.
    #[serde(default)]
    pub resource_upstreams: Vec<String>,
    /// Scopes a token must carry to use this topic (403 insufficient_scope otherwise).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Page size for this topic's lists (default 200).
    #[serde(default = "default_page_size")]
    pub page_size: usize,
}

impl UpstreamConfig {
    pub fn grants(&self, k: ClientRequestKind) -> bool {
        self.client_requests.contains(&k)
    }
    pub fn is_stdio(&self) -> bool {
        self.command.is_some()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        // Deserializing an empty table applies every field default in one place.
        toml::from_str("").unwrap_or_else(|_| unreachable_default())
    }
}

#[allow(clippy::panic)]
fn unreachable_default() -> ServerConfig {
    panic!("empty [server] table must deserialize")
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            reason: format!("cannot read: {e}"),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Config::parse(&text, &file, base)
    }

    pub fn parse(text: &str, file: &str, base_dir: PathBuf) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        let mut cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let reason = inner.message().to_string();
            let at = inner
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            ConfigError {
                file: file.to_owned(),
                key: if key == "." { "(top level)".into() } else { key },
                reason: format!("{reason}{at}"),
            }
        })?;
        // Children run in the config file's directory unless told otherwise, so relative paths in `command`
        // mean the same thing wherever the gateway was started from.
        let base = if base_dir.as_os_str().is_empty() { PathBuf::from(".") } else { base_dir.clone() };
        for u in &mut cfg.upstreams {
            u.cwd = Some(match &u.cwd {
                Some(c) if c.is_absolute() => c.clone(),
                Some(c) => base.join(c),
                None => base.clone(),
            });
        }
        cfg.base_dir = base_dir;
        cfg.source = file.to_owned();
        validate::validate(&cfg).map_err(|(key, reason)| ConfigError { file: file.to_owned(), key, reason })?;
        Ok(cfg)
    }

    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.name == name)
    }
}

fn yes() -> bool {
    true
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_max_body() -> usize {
    4 << 20
}
fn default_max_message() -> usize {
    16 << 20
}
fn default_idle() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_max_sessions() -> usize {
    10_000
}
fn default_replay() -> usize {
    256
}
fn default_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_sep() -> String {
    "__".into()
}
fn default_transport() -> HttpTransport {
    HttpTransport::StreamableHttp
}
fn default_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_credential_meta_key() -> String {
    "io.portcullis/credential".into()
}
fn default_page_size() -> usize {
    200
}
fn default_max_children() -> usize {
    64
}
fn default_backoff_initial() -> Duration {
    Duration::from_millis(200)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(30)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(30)
}

#[cfg(test)]
mod tests;
