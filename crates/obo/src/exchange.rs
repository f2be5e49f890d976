//! `token_exchange`: RFC 8693 §2.1 exchange of the caller's token for one scoped to this upstream and tool.
//!
//! Cache key: (subject, rendered scope, SHA-256 of the caller's token); the upstream is implicit (one cache per
//! upstream). Keying on the token, not only the subject, means a token exchanged for one caller token is never
//! handed to a request bearing another (which may carry fewer scopes, another client or actor chain, or be the
//! successor of a revoked one), and an entry is only reachable while its subject token is presented, i.e. valid.
//! The price is one exchange per (caller token, scope) rather than per (subject, scope).
//!
//! Cached for `expires_in - skew` (not at all without `expires_in`). 4xx answers and unusable 2xx answers (not
//! Bearer, not an access token) are remembered for `negative_ttl`; 5xx and network errors are not. The request
//! times out after 10 s and the answer is read up to 64 KiB. `subject_token_type` is always `access_token`.

use crate::cache::{Cache, Fetched};
use crate::keys::{random_id, unix_now, SigningKey};
use crate::{default_audience, env_secret, scope, Caller, OboError, Secret};
use base64::Engine;
use futures::FutureExt;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::HeaderValue;
use portcullis_config::{ClientAuth, CredentialConfig, UpstreamConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Whole request, token endpoint included; must stay below `cache::STALE_PENDING`.
const TIMEOUT: Duration = Duration::from_secs(10);
const MAX_RESPONSE: usize = 64 * 1024;
const CACHE_ENTRIES: usize = 10_000;
const ASSERTION_TTL_SECS: u64 = 60;

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    subject: String,
    scope: String,
    token_sha256: [u8; 32],
}

pub(crate) struct Exchanger {
    inner: Arc<Inner>,
    cache: Arc<Cache<Key>>,
}

struct Inner {
    upstream: String,
    endpoint: String,
    client_id: String,
    auth: Auth,
    audience: String,
    resource: Option<String>,
    scope: String,
    skew: Duration,
    http: reqwest::Client,
}

enum Auth {
    /// Prebuilt `Basic …` value (marked sensitive).
    Basic(HeaderValue),
    Jwt(SigningKey),
}

#[derive(Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: String,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    token_type: Option<String>,
    issued_token_type: Option<String>,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
    error_description: Option<String>,
}

impl Exchanger {
    pub(crate) fn new(upstream: &UpstreamConfig, base_dir: &Path, http: reqwest::Client) -> Result<Exchanger, String> {
        let CredentialConfig::TokenExchange {
            token_endpoint,
            client_id,
            client_auth,
            client_secret_env,
            private_key_file,
            audience,
            resource,
            scope,
            skew,
            negative_ttl,
        } = &upstream.credential
        else {
            return Err(format!("upstream {:?}: credential kind is not token_exchange", upstream.name));
        };
        let at = |k: &str| format!("upstream {:?} credential.{k}", upstream.name);
        if !(token_endpoint.starts_with("https://") || token_endpoint.starts_with("http://")) {
            return Err(format!("{}: must be an http(s) URL", at("token_endpoint")));
        }
        let auth = match client_auth {
            ClientAuth::ClientSecretBasic => {
                let var = client_secret_env.as_deref().ok_or_else(|| {
                    format!("{}: client_secret_basic needs client_secret_env", at("client_secret_env"))
                })?;
                let secret = env_secret(var).map_err(|e| format!("{}: {e}", at("client_secret_env")))?;
                // RFC 6749 §2.3.1: both parts form-urlencoded before Basic encoding.
                let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                let basic = format!("{}:{}", enc(client_id), enc(&secret));
                let b64 = base64::engine::general_purpose::STANDARD.encode(basic);
                let mut value = HeaderValue::from_str(&format!("Basic {b64}"))
                    .map_err(|_| format!("{}: cannot build the Basic header", at("client_secret_env")))?;
                value.set_sensitive(true);
                Auth::Basic(value)
            }
            ClientAuth::PrivateKeyJwt => {
                let file = private_key_file
                    .as_ref()
                    .ok_or_else(|| format!("{}: private_key_jwt needs private_key_file", at("private_key_file")))?;
                let key = SigningKey::load(&base_dir.join(file), None)
                    .map_err(|e| format!("{}: {e}", at("private_key_file")))?;
                Auth::Jwt(key)
            }
        };
        let inner = Inner {
            upstream: upstream.name.clone(),
            endpoint: token_endpoint.clone(),
            client_id: client_id.clone(),
            auth,
            audience: default_audience(upstream, audience),
            resource: resource.clone(),
            scope: scope.clone(),
            skew: *skew,
            http,
        };
        Ok(Exchanger { inner: Arc::new(inner), cache: Cache::new(CACHE_ENTRIES, *negative_ttl) })
    }

    pub(crate) async fn for_call(&self, caller: &Caller<'_>, tool: Option<&str>) -> Result<Secret, OboError> {
        let token = caller.token.ok_or(OboError::NoSubjectToken)?;
        let scope = scope::render(&self.inner.scope, &self.inner.upstream, tool)
            .map_err(|e| OboError::Exchange(format!("upstream {:?}: {e}", self.inner.upstream)))?;
        let key = Key {
            subject: caller.subject.to_owned(),
            scope: scope.clone(),
            token_sha256: Sha256::digest(token.as_bytes()).into(),
        };
        let inner = Arc::clone(&self.inner);
        let subject_token = token.to_owned();
        self.cache
            .get_or_fetch(key, move || exchange(inner, subject_token, scope).boxed())
            .await
            .map_err(OboError::Exchange)
    }
}

async fn exchange(inner: Arc<Inner>, subject_token: String, scope: String) -> Fetched {
    let fetched = inner.exchange(&subject_token, &scope).await;
    match &fetched {
        Fetched::Ok { ttl, .. } => tracing::debug!(upstream = %inner.upstream, %scope, ?ttl, "token exchanged"),
        Fetched::Refused(m) | Fetched::Failed(m) => tracing::warn!(upstream = %inner.upstream, %scope, "{m}"),
    }
    fetched
}

impl Inner {
    async fn exchange(&self, subject_token: &str, scope: &str) -> Fetched {
        let req = match self.request(subject_token, scope) {
            Ok(r) => r,
            Err(e) => return Fetched::Failed(self.msg(&e)),
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Fetched::Failed(self.msg(&format!("request failed: {}", describe(&e)))),
        };
        let status = resp.status();
        let body = match read_bounded(resp).await {
            Ok(b) => b,
            Err(e) => return Fetched::Failed(self.msg(&format!("HTTP {status}, {e}"))),
        };
        if status.is_success() {
            return self.accept(&body);
        }
        let (detail, hint) = match serde_json::from_slice::<ErrorResponse>(&body) {
            Ok(e) => {
                let desc = e.error_description.map(|d| format!(": {}", clean(&d, subject_token))).unwrap_or_default();
                (format!("{} {}{desc}", status.as_u16(), clean(&e.error, subject_token)), hint(&e.error))
            }
            Err(_) => (status.to_string(), ""),
        };
        let msg = self.msg(&format!("refused (HTTP {detail}){hint}"));
        if status.is_client_error() {
            Fetched::Refused(msg)
        } else {
            Fetched::Failed(msg)
        }
    }

    /// The RFC 8693 §2.1 request, with client authentication (sync: the form builder is not `Send`).
    fn request(&self, subject_token: &str, scope: &str) -> Result<reqwest::RequestBuilder, String> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", GRANT_TYPE)
            .append_pair("subject_token", subject_token)
            .append_pair("subject_token_type", ACCESS_TOKEN)
            .append_pair("requested_token_type", ACCESS_TOKEN)
            .append_pair("audience", &self.audience);
        if let Some(resource) = &self.resource {
            form.append_pair("resource", resource);
        }
        if !scope.is_empty() {
            form.append_pair("scope", scope);
        }
        let mut req = self
            .http
            .post(&self.endpoint)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .timeout(TIMEOUT);
        match &self.auth {
            Auth::Basic(value) => req = req.header(AUTHORIZATION, value.clone()),
            Auth::Jwt(key) => {
                let iat = unix_now();
                let claims = Assertion {
                    iss: &self.client_id,
                    sub: &self.client_id,
                    aud: &self.endpoint,
                    jti: random_id(),
                    iat,
                    exp: iat + ASSERTION_TTL_SECS,
                };
                let assertion =
                    key.sign("JWT", &claims).map_err(|e| format!("cannot sign the client assertion: {e}"))?;
                form.append_pair("client_id", &self.client_id)
                    .append_pair("client_assertion_type", ASSERTION_TYPE)
                    .append_pair("client_assertion", &assertion);
            }
        }
        Ok(req.body(form.finish()))
    }

    /// A 2xx answer: usable bearer token or a (cached) refusal.
    fn accept(&self, body: &[u8]) -> Fetched {
        let r: TokenResponse = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(_) => return Fetched::Refused(self.msg("answered 2xx without a JSON access_token")),
        };
        if !r.token_type.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("bearer")) {
            let got = r.token_type.as_deref().map(|t| clean(t, &r.access_token)).unwrap_or_else(|| "none".into());
            return Fetched::Refused(self.msg(&format!("issued token_type {got:?}; only Bearer is supported")));
        }
        if let Some(t) = r.issued_token_type.as_deref().filter(|t| *t != ACCESS_TOKEN && *t != JWT) {
            return Fetched::Refused(self.msg(&format!("issued_token_type {:?} is not an access token", clean(t, ""))));
        }
        let value = Secret(format!("Bearer {}", r.access_token));
        if r.access_token.is_empty() || value.header_value().is_none() {
            return Fetched::Refused(self.msg("issued an access_token that is not a valid header value"));
        }
        // Without `expires_in` the lifetime is unknown: use it for this call (and its coalesced twins) only.
        let ttl = r.expires_in.map(Duration::from_secs).and_then(|t| t.checked_sub(self.skew)).filter(|t| !t.is_zero());
        Fetched::Ok { value, ttl }
    }

    fn msg(&self, what: &str) -> String {
        format!("upstream {:?}: token exchange at {} {what}", self.upstream, self.endpoint)
    }
}

async fn read_bounded(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("reading the answer failed: {}", describe(&e)))? {
        if body.len() + chunk.len() > MAX_RESPONSE {
            return Err(format!("answer larger than {MAX_RESPONSE} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The error and its causes (reqwest's top-level message alone hides "connection refused").
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// Server-supplied text made safe for a client-visible message: printable ASCII, bounded, and without the
/// subject token should the server echo it.
fn clean(text: &str, subject_token: &str) -> String {
    let text = if subject_token.is_empty() { text.to_owned() } else { text.replace(subject_token, "[redacted]") };
    text.chars().filter(|c| c.is_ascii() && !c.is_ascii_control()).take(200).collect()
}

fn hint(error: &str) -> &'static str {
    match error {
        "invalid_client" | "unauthorized_client" => "; check credential.client_id and its secret or key",
        "invalid_grant" => "; the caller's token was not accepted for this upstream",
        "invalid_scope" | "invalid_target" => "; check credential.scope, audience and resource",
        _ => "",
    }
}
