//! Verification keys of one `[[auth.jwt]]` issuer: parsed from a JWKS file or URL, refreshed after `jwks_ttl`
//! (URL only) and on an unknown `kid` at most once per `jwks_min_refresh`.
//!
//! Only asymmetric keys are accepted, and each key is bound to the one algorithm its `kty`/`crv` allows (RSA →
//! RS256, P-256 → ES256, Ed25519 → EdDSA), so a token can never pick how a key is interpreted.

use crate::AuthError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::RwLock;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest JWKS document accepted (file or URL).
const MAX_JWKS_BYTES: usize = 1 << 20;
/// Most keys kept from one JWKS.
const MAX_KEYS: usize = 64;
/// Timeout of one JWKS fetch; other requests needing a fetch wait this long at most.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct VerifyKey {
    pub(crate) kid: Option<String>,
    pub(crate) alg: Algorithm,
    pub(crate) key: DecodingKey,
}

pub(crate) enum Source {
    File(PathBuf),
    Url(String),
}

struct Loaded {
    keys: Vec<Arc<VerifyKey>>,
    at: Instant,
}

pub(crate) struct Jwks {
    /// Config key of the entry (`auth.jwt[0]`), for errors and logs.
    name: String,
    source: Source,
    min_refresh: Duration,
    ttl: Duration,
    http: reqwest::Client,
    current: RwLock<Option<Arc<Loaded>>>,
    /// Time of the last (re)load attempt; the lock also serialises loads.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
}

impl Jwks {
    /// A file source is read now (a bad file is a startup error); a URL is fetched on first use.
    pub(crate) fn new(
        name: String,
        source: Source,
        min_refresh: Duration,
        ttl: Duration,
        http: reqwest::Client,
    ) -> Result<Jwks, String> {
        let current = match &source {
            Source::File(path) => {
                let bytes = std::fs::read(path).map_err(|e| format!("{name}.jwks_file: cannot read {path:?}: {e}"))?;
                let keys = parse_jwks(&bytes, &name).map_err(|e| format!("{name}.jwks_file: {path:?}: {e}"))?;
                Some(Arc::new(Loaded { keys, at: Instant::now() }))
            }
            Source::Url(_) => None,
        };
        Ok(Jwks {
            name,
            source,
            min_refresh,
            ttl,
            http,
            current: RwLock::new(current),
            last_attempt: tokio::sync::Mutex::new(None),
        })
    }

    /// Keys that may have signed a token with this `kid` and `alg`: the key with that kid, or every key of that
    /// algorithm when the token has no kid. An unknown kid triggers one rate-limited reload.
    pub(crate) async fn keys_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<Vec<Arc<VerifyKey>>, AuthError> {
        let loaded = match self.snapshot() {
            Some(l) => {
                if matches!(self.source, Source::Url(_)) && l.at.elapsed() >= self.ttl {
                    self.refresh_stale().await;
                }
                self.snapshot().unwrap_or(l)
            }
            None => self.reload_empty().await?,
        };
        let found = matching(&loaded.keys, kid, alg);
        if !found.is_empty() {
            return Ok(found);
        }
        self.reload_for_unknown(kid, alg).await
    }

    /// Loads keys now if allowed by the rate limit; used at startup to warm URL sources.
    pub(crate) async fn prefetch(&self) -> Result<(), String> {
        if self.snapshot().is_some() {
            return Ok(());
        }
        self.reload_empty().await.map(|_| ()).map_err(|e| e.to_string())
    }

    fn snapshot(&self) -> Option<Arc<Loaded>> {
        self.current.read().clone()
    }

    /// No keys yet (URL source): fetch, waiting for a concurrent fetch; fail closed if unreachable.
    async fn reload_empty(&self) -> Result<Arc<Loaded>, AuthError> {
        let mut last = self.last_attempt.lock().await;
        if let Some(l) = self.snapshot() {
            return Ok(l);
        }
        if last.is_some_and(|t| t.elapsed() < self.min_refresh) {
            return Err(AuthError::Unavailable(format!(
                "the signing keys of {} are unreachable and none are cached; retry later",
                self.name
            )));
        }
        *last = Some(Instant::now());
        self.load().await.map_err(|e| {
            tracing::warn!(issuer = %self.name, error = %e, "JWKS fetch failed and no keys are cached");
            AuthError::Unavailable(format!("cannot fetch the signing keys of {}; retry later", self.name))
        })
    }

    /// Keys past `jwks_ttl`: one request refreshes them while the others keep using the stale set; a failed
    /// refresh keeps the stale keys (logged) and is retried after `jwks_min_refresh`.
    async fn refresh_stale(&self) {
        let Ok(mut last) = self.last_attempt.try_lock() else { return };
        if last.is_some_and(|t| t.elapsed() < self.min_refresh) {
            return;
        }
        if self.snapshot().is_some_and(|l| l.at.elapsed() < self.ttl) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.load().await {
            tracing::warn!(issuer = %self.name, error = %e, "JWKS refresh failed; keeping the cached keys");
        }
    }

    async fn reload_for_unknown(&self, kid: Option<&str>, alg: Algorithm) -> Result<Vec<Arc<VerifyKey>>, AuthError> {
        let unknown = || AuthError::Invalid("the token is signed with a key the issuer does not publish".into());
        let mut last = self.last_attempt.lock().await;
        // A concurrent request may have reloaded while this one waited.
        if let Some(l) = self.snapshot() {
            let found = matching(&l.keys, kid, alg);
            if !found.is_empty() {
                return Ok(found);
            }
        }
        if last.is_some_and(|t| t.elapsed() < self.min_refresh) {
            return Err(unknown());
        }
        *last = Some(Instant::now());
        match self.load().await {
            Ok(l) => {
                let found = matching(&l.keys, kid, alg);
                if found.is_empty() {
                    Err(unknown())
                } else {
                    Ok(found)
                }
            }
            Err(e) => {
                tracing::warn!(issuer = %self.name, error = %e, "JWKS reload for an unknown kid failed");
                Err(unknown())
            }
        }
    }

    /// Reads the source and publishes the new key set. A set with no usable key is an error (the old set stays).
    async fn load(&self) -> Result<Arc<Loaded>, String> {
        let bytes = match &self.source {
            Source::File(path) => tokio::fs::read(path).await.map_err(|e| format!("cannot read {path:?}: {e}"))?,
            Source::Url(url) => fetch(&self.http, url).await?,
        };
        let keys = parse_jwks(&bytes, &self.name)?;
        let loaded = Arc::new(Loaded { keys, at: Instant::now() });
        *self.current.write() = Some(Arc::clone(&loaded));
        tracing::debug!(issuer = %self.name, keys = loaded.keys.len(), "JWKS loaded");
        Ok(loaded)
    }
}

fn matching(keys: &[Arc<VerifyKey>], kid: Option<&str>, alg: Algorithm) -> Vec<Arc<VerifyKey>> {
    keys.iter().filter(|k| k.alg == alg && (kid.is_none() || k.kid.as_deref() == kid)).cloned().collect()
}

async fn fetch(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let mut resp = http
        .get(url)
        .header("accept", "application/json")
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {url}: {e}"))? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("GET {url}: JWKS larger than {MAX_JWKS_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Parses a JWKS document, skipping (and logging) keys that cannot be used; errors if none is usable.
pub(crate) fn parse_jwks(bytes: &[u8], name: &str) -> Result<Vec<Arc<VerifyKey>>, String> {
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(format!("JWKS larger than {MAX_JWKS_BYTES} bytes"));
    }
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS JSON document: {e}"))?;
    let Some(list) = doc.get("keys").and_then(Value::as_array) else {
        return Err("not a JWKS: missing the \"keys\" array".into());
    };
    let mut keys = Vec::new();
    for (i, jwk) in list.iter().enumerate() {
        match parse_jwk(jwk) {
            Ok(k) if keys.len() < MAX_KEYS => keys.push(Arc::new(k)),
            Ok(_) => tracing::warn!(issuer = %name, "JWKS has more than {MAX_KEYS} keys; ignoring the rest"),
            Err(e) => tracing::warn!(issuer = %name, key = i, reason = %e, "skipping unusable JWKS key"),
        }
    }
    if keys.is_empty() {
        return Err("the JWKS has no usable signing key (RSA ≥ 2048 bits, EC P-256 or Ed25519)".into());
    }
    Ok(keys)
}

fn parse_jwk(jwk: &Value) -> Result<VerifyKey, String> {
    let field = |k: &str| jwk.get(k).and_then(Value::as_str);
    let required = |k: &str| field(k).ok_or_else(|| format!("missing \"{k}\""));
    let decoded_len = |k: &str| -> Result<usize, String> {
        URL_SAFE_NO_PAD.decode(required(k)?).map(|b| b.len()).map_err(|_| format!("\"{k}\" is not base64url"))
    };
    if let Some(u) = field("use") {
        if u != "sig" {
            return Err(format!("use is {u:?}, not \"sig\""));
        }
    }
    let bad = |e: jsonwebtoken::errors::Error| format!("invalid key: {e}");
    let (alg, key) = match (field("kty"), field("crv")) {
        (Some("RSA"), _) => {
            // Leading zero bytes do not count towards the modulus size.
            let n = URL_SAFE_NO_PAD.decode(required("n")?).map_err(|_| "\"n\" is not base64url".to_string())?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < 2048 {
                return Err(format!("RSA modulus of about {bits} bits; at least 2048 required"));
            }
            decoded_len("e")?;
            (Algorithm::RS256, DecodingKey::from_rsa_components(required("n")?, required("e")?).map_err(bad)?)
        }
        (Some("EC"), Some("P-256")) => {
            if decoded_len("x")? != 32 || decoded_len("y")? != 32 {
                return Err("P-256 coordinates must be 32 bytes".into());
            }
            (Algorithm::ES256, DecodingKey::from_ec_components(required("x")?, required("y")?).map_err(bad)?)
        }
        (Some("OKP"), Some("Ed25519")) => {
            if decoded_len("x")? != 32 {
                return Err("an Ed25519 public key must be 32 bytes".into());
            }
            (Algorithm::EdDSA, DecodingKey::from_ed_components(required("x")?).map_err(bad)?)
        }
        (Some("oct"), _) => return Err("symmetric keys are never accepted from a JWKS".into()),
        (kty, crv) => return Err(format!("unsupported key type {kty:?} / curve {crv:?}")),
    };
    if let Some(declared) = field("alg") {
        if declared != alg_name(alg) {
            return Err(format!("alg {declared:?} does not match the key type (only {} is used)", alg_name(alg)));
        }
    }
    Ok(VerifyKey { kid: field("kid").map(str::to_owned), alg, key })
}

pub(crate) fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        Algorithm::EdDSA => "EdDSA",
        Algorithm::HS256 => "HS256",
        _ => "other",
    }
}
