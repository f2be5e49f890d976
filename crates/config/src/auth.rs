//! `[auth]` (inbound identity) and per-upstream `credential` (outbound On-Behalf-Of) sections.

use crate::units;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Inbound authentication. Absent section = anonymous mode (quickstart only; the gateway warns at start).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// This gateway's canonical resource URI (RFC 8707 / RFC 9728), e.g. `https://mcp.example.com/mcp`. JWTs must
    /// carry it in `aud` unless a `[[auth.jwt]]` entry names another audience. Topic endpoints are
    /// `{resource}/{topic}` in the protected-resource metadata.
    pub resource: String,
    /// Authorization servers advertised in the protected-resource metadata.
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// Scopes advertised in the metadata (topic scopes are added automatically).
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// Claim holding the subject's roles (a string array or a space-separated string).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Clock skew tolerated on `exp` / `nbf`.
    #[serde(default = "default_leeway", deserialize_with = "units::duration")]
    pub leeway: Duration,
    #[serde(default)]
    pub jwt: Vec<JwtConfig>,
    #[serde(default)]
    pub api_key: Vec<ApiKeyConfig>,
    /// HS256 is accepted only when configured here, with its own secret (never a JWKS key).
    pub hs256: Option<Hs256Config>,
    /// Private key (PEM, ES256 or EdDSA) that `portcullis token mint` signs dev tokens with; its public half must
    /// be in a `[[auth.jwt]]` entry's JWKS for the gateway to accept those tokens.
    pub dev_signing_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    pub issuer: String,
    /// Expected `aud`; default: `auth.resource`.
    pub audience: Option<String>,
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    /// Accepted algorithms (asymmetric only here): RS256, ES256, EdDSA.
    #[serde(default = "default_algs")]
    pub algorithms: Vec<String>,
    /// A token with an unknown `kid` triggers a JWKS refetch at most this often.
    #[serde(default = "default_refresh", deserialize_with = "units::duration")]
    pub jwks_min_refresh: Duration,
    /// Keys fetched from `jwks_url` are refreshed after this long.
    #[serde(default = "default_jwks_ttl", deserialize_with = "units::duration")]
    pub jwks_ttl: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hs256Config {
    pub issuer: String,
    pub audience: Option<String>,
    /// Environment variable holding the shared secret.
    pub secret_env: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub id: String,
    /// Lowercase hex SHA-256 of the key; the key itself is never stored (`portcullis keys new` prints both).
    pub sha256: String,
    pub subject: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// How the gateway authenticates to one upstream. The caller's own token is never forwarded.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CredentialConfig {
    #[default]
    None,
    /// A fixed secret from an environment variable or a file, sent as `header` (default `Authorization`,
    /// value `Bearer <secret>` unless `raw = true`).
    Static {
        value_env: Option<String>,
        value_file: Option<PathBuf>,
        #[serde(default = "default_auth_header")]
        header: String,
        #[serde(default)]
        raw: bool,
    },
    /// RFC 8693 token exchange: the caller's token is exchanged for one scoped to this upstream and tool.
    TokenExchange {
        token_endpoint: String,
        client_id: String,
        #[serde(default)]
        client_auth: ClientAuth,
        /// For `client_secret_basic`.
        client_secret_env: Option<String>,
        /// For `private_key_jwt` (PEM, ES256 or EdDSA).
        private_key_file: Option<PathBuf>,
        audience: Option<String>,
        resource: Option<String>,
        /// Scope template; `{tool}` is the upstream's tool name, `{upstream}` the upstream name.
        #[serde(default = "default_scope_template")]
        scope: String,
        /// Refresh this long before the exchanged token expires.
        #[serde(default = "default_skew", deserialize_with = "units::duration")]
        skew: Duration,
        /// How long a 4xx answer is remembered (no retry storm against the token endpoint).
        #[serde(default = "default_negative_ttl", deserialize_with = "units::duration")]
        negative_ttl: Duration,
    },
    /// The gateway signs a short-lived JWT for the user (`sub`), the agent (`act`), this upstream (`aud`) and this
    /// tool (`scope`). Its public key is served at `/.well-known/jwks.json`.
    MintObo {
        key_file: PathBuf,
        #[serde(default = "default_mint_alg")]
        alg: String,
        issuer: String,
        /// Default: the upstream's URL, or its name for stdio upstreams.
        audience: Option<String>,
        #[serde(default = "default_scope_template")]
        scope: String,
        #[serde(default = "default_mint_ttl", deserialize_with = "units::duration")]
        ttl: Duration,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    #[default]
    ClientSecretBasic,
    PrivateKeyJwt,
}

fn default_roles_claim() -> String {
    "roles".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_algs() -> Vec<String> {
    vec!["RS256".into(), "ES256".into(), "EdDSA".into()]
}
fn default_refresh() -> Duration {
    Duration::from_secs(30)
}
fn default_jwks_ttl() -> Duration {
    Duration::from_secs(600)
}
fn default_auth_header() -> String {
    "Authorization".into()
}
fn default_scope_template() -> String {
    "tools:{tool}".into()
}
fn default_skew() -> Duration {
    Duration::from_secs(30)
}
fn default_negative_ttl() -> Duration {
    Duration::from_secs(5)
}
fn default_mint_alg() -> String {
    "ES256".into()
}
fn default_mint_ttl() -> Duration {
    Duration::from_secs(120)
}

pub(crate) fn validate(a: &AuthConfig) -> Result<(), (String, String)> {
    let err = |k: String, r: &str| Err((k, r.to_owned()));
    if !(a.resource.starts_with("https://") || a.resource.starts_with("http://")) {
        return err("auth.resource".into(), "must be an absolute http(s) URI (this gateway's MCP endpoint)");
    }
    if a.jwt.is_empty() && a.api_key.is_empty() && a.hs256.is_none() {
        return err("auth".into(), "configure at least one of [[auth.jwt]], [[auth.api_key]] or [auth.hs256]");
    }
    for (i, j) in a.jwt.iter().enumerate() {
        if j.jwks_file.is_some() == j.jwks_url.is_some() {
            return err(format!("auth.jwt[{i}].jwks_file"), "set exactly one of jwks_file or jwks_url");
        }
        for (n, alg) in j.algorithms.iter().enumerate() {
            if !matches!(alg.as_str(), "RS256" | "ES256" | "EdDSA") {
                return err(
                    format!("auth.jwt[{i}].algorithms[{n}]"),
                    "only RS256, ES256 and EdDSA are accepted from a JWKS (HS256 needs [auth.hs256])",
                );
            }
        }
    }
    let mut ids = std::collections::HashSet::new();
    for (i, k) in a.api_key.iter().enumerate() {
        if k.sha256.len() != 64 || !k.sha256.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return err(
                format!("auth.api_key[{i}].sha256"),
                "must be 64 lowercase hex characters (portcullis keys new)",
            );
        }
        if !ids.insert(k.id.as_str()) {
            return err(format!("auth.api_key[{i}].id"), "duplicate api key id");
        }
    }
    Ok(())
}

pub(crate) fn validate_credential(i: usize, c: &CredentialConfig, is_stdio: bool) -> Result<(), (String, String)> {
    let key = |k: &str| format!("upstream[{i}].credential.{k}");
    match c {
        CredentialConfig::None => Ok(()),
        CredentialConfig::Static { value_env, value_file, .. } => {
            if value_env.is_some() == value_file.is_some() {
                return Err((key("value_env"), "set exactly one of value_env or value_file".into()));
            }
            Ok(())
        }
        CredentialConfig::TokenExchange {
            client_auth, client_secret_env, private_key_file, token_endpoint, ..
        } => {
            if !(token_endpoint.starts_with("https://") || token_endpoint.starts_with("http://")) {
                return Err((key("token_endpoint"), "must be an http(s) URL".into()));
            }
            match client_auth {
                ClientAuth::ClientSecretBasic if client_secret_env.is_none() => {
                    Err((key("client_secret_env"), "client_secret_basic needs client_secret_env".into()))
                }
                ClientAuth::PrivateKeyJwt if private_key_file.is_none() => {
                    Err((key("private_key_file"), "private_key_jwt needs private_key_file".into()))
                }
                _ => Ok(()),
            }
        }
        CredentialConfig::MintObo { alg, ttl, .. } => {
            if !matches!(alg.as_str(), "ES256" | "EdDSA") {
                return Err((key("alg"), "must be ES256 or EdDSA".into()));
            }
            if *ttl > Duration::from_secs(300) || ttl.is_zero() {
                return Err((key("ttl"), "must be between 1s and 5m".into()));
            }
            let _ = is_stdio;
            Ok(())
        }
    }
}
