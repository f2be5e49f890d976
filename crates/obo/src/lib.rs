//! Outbound On-Behalf-Of credentials: what the gateway presents to one upstream for one call.
//!
//! Per upstream, [`Credentials`] turns the verified caller ([`Caller`]) and the tool being called into a single
//! header: a fixed secret (`static`), an RFC 8693 token exchanged for this upstream and tool (`token_exchange`,
//! cached and coalesced), or a short-lived JWT the gateway signs itself (`mint_obo`, with the caller as `sub` and
//! the agent chain as nested `act`). The caller's own token is never forwarded: it is only ever sent to the
//! configured token endpoint as `subject_token`. Any failure is an [`OboError`] and the call must fail; there is
//! no fallback to a broader credential.
//!
//! It does not authenticate callers (that is `portcullis-auth`), attach the header to requests, or serve
//! `/.well-known/jwks.json` (it only supplies the entries via [`Credentials::public_jwks`]).

mod cache;
mod exchange;
mod keys;
mod mint;
mod scope;

use http::{HeaderName, HeaderValue};
use portcullis_config::{CredentialConfig, UpstreamConfig};
use std::fmt;
use std::path::Path;

/// The verified caller, as far as outbound credentials need it (mapped from `portcullis_auth::Principal`).
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    pub subject: &'a str,
    /// The OAuth client (agent) presenting the caller's token; becomes the outermost `act` of minted tokens.
    pub client_id: Option<&'a str>,
    /// Prior delegation chain from the caller's token (`act`), most recent actor first.
    pub actors: &'a [String],
    /// The caller's verified JWT. Used only as `subject_token` for token exchange; never sent upstream.
    pub token: Option<&'a str>,
}

impl fmt::Debug for Caller<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller")
            .field("subject", &self.subject)
            .field("client_id", &self.client_id)
            .field("actors", &self.actors)
            .field("token", &self.token.map(|_| "[redacted]"))
            .finish()
    }
}

/// A header value carrying a credential. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The bare token of a `Bearer <token>` value (for transports without headers, e.g. `_meta` on stdio).
    pub fn bearer_token(&self) -> Option<&str> {
        let (scheme, token) = self.0.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then_some(token)
    }
    /// As an HTTP header value marked sensitive (hidden from hyper/h2 debug output and HPACK indexing).
    pub fn header_value(&self) -> Option<HeaderValue> {
        let mut v = HeaderValue::from_str(&self.0).ok()?;
        v.set_sensitive(true);
        Some(v)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why no credential could be produced. The call fails; messages never contain tokens or secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OboError {
    /// The token endpoint refused the exchange or could not be reached; names the upstream and the HTTP status
    /// or OAuth error code.
    #[error("{0}")]
    Exchange(String),
    /// Token exchange needs the caller's JWT; API-key and anonymous callers cannot be exchanged.
    #[error(
        "this upstream uses token exchange, which needs a caller authenticated with a JWT; \
         API-key and anonymous callers cannot call it"
    )]
    NoSubjectToken,
    /// A `mint_obo` token could not be built or signed.
    #[error("{0}")]
    Mint(String),
}

/// The outbound credential of one upstream. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Credentials {
    kind: Kind,
}

enum Kind {
    None,
    Static { header: HeaderName, value: Secret },
    Exchange(exchange::Exchanger),
    Mint(mint::Minter),
}

impl Credentials {
    /// Reads the static secret, client secret and keys now, so a bad credential fails at start, not per call.
    /// Errors name the config key, e.g. `upstream "x" credential.value_env: environment variable TOKEN is not set`.
    pub fn new(upstream: &UpstreamConfig, base_dir: &Path, http: reqwest::Client) -> Result<Credentials, String> {
        let at = |k: &str| format!("upstream {:?} credential.{k}", upstream.name);
        let kind = match &upstream.credential {
            CredentialConfig::None => Kind::None,
            CredentialConfig::Static { value_env, value_file, header, raw } => {
                let (secret, key) = match (value_env, value_file) {
                    (Some(var), None) => {
                        (env_secret(var).map_err(|e| format!("{}: {e}", at("value_env")))?, "value_env")
                    }
                    (None, Some(path)) => {
                        let path = base_dir.join(path);
                        let text = std::fs::read_to_string(&path)
                            .map_err(|e| format!("{}: cannot read {}: {e}", at("value_file"), path.display()))?;
                        let text = text.trim().to_owned();
                        if text.is_empty() {
                            return Err(format!("{}: {} is empty", at("value_file"), path.display()));
                        }
                        (text, "value_file")
                    }
                    _ => return Err(format!("{}: set exactly one of value_env or value_file", at("value_env"))),
                };
                let header = HeaderName::from_bytes(header.as_bytes())
                    .map_err(|_| format!("{}: {header:?} is not a valid HTTP header name", at("header")))?;
                let value = Secret(if *raw { secret } else { format!("Bearer {secret}") });
                if value.header_value().is_none() {
                    return Err(format!(
                        "{}: the secret contains characters not allowed in an HTTP header value",
                        at(key)
                    ));
                }
                Kind::Static { header, value }
            }
            CredentialConfig::TokenExchange { .. } => {
                Kind::Exchange(exchange::Exchanger::new(upstream, base_dir, http)?)
            }
            CredentialConfig::MintObo { .. } => Kind::Mint(mint::Minter::new(upstream, base_dir)?),
        };
        Ok(Credentials { kind })
    }

    /// The header to send for this call (`None` for kind = none). `tool` = the upstream's own tool name when the
    /// call is a `tools/call`; other calls get the scope template without its `{tool}` scopes (see `scope.rs`).
    pub async fn for_call(
        &self,
        caller: &Caller<'_>,
        tool: Option<&str>,
    ) -> Result<Option<(HeaderName, Secret)>, OboError> {
        match &self.kind {
            Kind::None => Ok(None),
            Kind::Static { header, value } => Ok(Some((header.clone(), value.clone()))),
            Kind::Exchange(x) => Ok(Some((http::header::AUTHORIZATION, x.for_call(caller, tool).await?))),
            Kind::Mint(m) => Ok(Some((http::header::AUTHORIZATION, m.mint(caller, tool)?))),
        }
    }

    /// Public JWKS entries (the `mint_obo` key) for `/.well-known/jwks.json`; empty for other kinds.
    pub fn public_jwks(&self) -> Vec<serde_json::Value> {
        match &self.kind {
            Kind::Mint(m) => vec![m.public_jwk()],
            _ => Vec::new(),
        }
    }
}

pub(crate) fn env_secret(var: &str) -> Result<String, String> {
    match std::env::var(var) {
        Ok(v) if v.trim().is_empty() => Err(format!("environment variable {var} is empty")),
        Ok(v) => Ok(v.trim().to_owned()),
        Err(std::env::VarError::NotPresent) => Err(format!("environment variable {var} is not set")),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("environment variable {var} is not valid UTF-8")),
    }
}

/// `aud` / `audience` default: the upstream's URL, else (stdio) its name.
pub(crate) fn default_audience(upstream: &UpstreamConfig, configured: &Option<String>) -> String {
    configured.clone().or_else(|| upstream.url.clone()).unwrap_or_else(|| upstream.name.clone())
}
