//! [`Authenticator`]: `Authorization` header → [`Principal`], called once per HTTP request.

use crate::apikey::{ApiKeys, API_KEY_PREFIX};
use crate::cache::{self, TokenCache};
use crate::jwt::JwtVerifier;
use crate::{AuthError, Principal};
use portcullis_config::AuthConfig;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Verified JWTs remembered at most (each entry ≈ the principal plus the token).
const CACHE_CAPACITY: usize = 10_000;
/// Longest bearer token accepted; real JWTs are a few KiB at most.
const MAX_TOKEN_LEN: usize = 16 * 1024;

pub struct Authenticator {
    jwt: JwtVerifier,
    api_keys: ApiKeys,
    cache: TokenCache,
}

impl Authenticator {
    /// Loads `jwks_file`s (relative to `base_dir`), API key hashes and the HS256 secret (from its environment
    /// variable). Errors name the config key. `jwks_url`s are fetched on first use (or [`Self::prefetch`]).
    pub fn new(cfg: &AuthConfig, base_dir: &Path, http: reqwest::Client) -> Result<Authenticator, String> {
        Ok(Authenticator {
            jwt: JwtVerifier::new(cfg, base_dir, &http)?,
            api_keys: ApiKeys::new(&cfg.api_key)?,
            cache: TokenCache::new(CACHE_CAPACITY),
        })
    }

    /// Fetches every `jwks_url` now (optional, e.g. at startup, so the first request does not pay for it and a
    /// bad URL shows up in the log). Returns one message per issuer that could not be loaded.
    pub async fn prefetch(&self) -> Vec<String> {
        self.jwt.prefetch().await
    }

    /// Authenticates one request. `authorization` = the raw `Authorization` header value, if any.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Arc<Principal>, AuthError> {
        let token = bearer(authorization)?;
        if token.starts_with(API_KEY_PREFIX) {
            return self.api_keys.check(token);
        }
        if let Some(p) = self.cache.get(token, now()) {
            return Ok(p);
        }
        let principal = Arc::new(self.jwt.verify(token).await?);
        if let Some(exp) = principal.expires_at {
            self.cache.insert(cache::hash(token), Arc::clone(&principal), exp, now());
        }
        Ok(principal)
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive, RFC 6750 §2.1).
fn bearer(authorization: Option<&str>) -> Result<&str, AuthError> {
    let malformed = || AuthError::Invalid("malformed Authorization header (expected `Bearer <token>`)".into());
    let header = authorization.ok_or(AuthError::Missing)?.trim();
    let (scheme, token) = header.split_once(' ').ok_or_else(malformed)?;
    let token = token.trim_start();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || !is_token68(token) {
        return Err(malformed());
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Invalid(format!("bearer token longer than {MAX_TOKEN_LEN} bytes")));
    }
    Ok(token)
}

/// RFC 7235 token68: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_token68(t: &str) -> bool {
    let body = t.trim_end_matches('=');
    !body.is_empty() && body.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(None), Err(AuthError::Missing));
        assert_eq!(bearer(Some("Bearer abc.def.ghi")), Ok("abc.def.ghi"));
        assert_eq!(bearer(Some("bEaReR   pck_x")), Ok("pck_x"));
        for bad in ["", "Bearer", "Bearer ", "Basic dXNlcjpwdw==", "Bearer a b", "Bearer a\"b", "Token abc"] {
            assert!(matches!(bearer(Some(bad)), Err(AuthError::Invalid(m)) if m.starts_with("malformed")), "{bad}");
        }
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert!(matches!(bearer(Some(&long)), Err(AuthError::Invalid(_))));
    }
}
