//! `mint_obo`: the gateway signs a short-lived JWT per call: `sub` = the caller, `act` = the agent chain,
//! `aud` = this upstream, `scope` = this tool.
//!
//! Nothing is cached: every call gets its own token with a fresh `jti`, narrowed to the tool. Signing is cheap
//! next to an upstream round trip (release: ~170 µs ES256, ~35 µs EdDSA on the loaded 2-core box; see `keys.rs`
//! and the ignored `mint_cost` test), so it runs inline rather than on `spawn_blocking` or behind a cache.

use crate::keys::{random_id, unix_now, Alg, SigningKey};
use crate::{default_audience, scope, Caller, OboError, Secret};
use portcullis_config::{CredentialConfig, UpstreamConfig};
use serde::Serialize;
use serde_json::{json, Value};
use std::path::Path;

/// Upper bound on the nested `act` chain (client plus prior actors); a longer chain is refused, not truncated.
const MAX_ACT_DEPTH: usize = 16;
const MAX_TTL_SECS: u64 = 300;

pub(crate) struct Minter {
    upstream: String,
    key: SigningKey,
    issuer: String,
    audience: String,
    scope: String,
    ttl_secs: u64,
    /// Minted tokens by (subject, act chain, scope), reused while at least half their lifetime is left: signing
    /// was 58 % of the gateway's per-call instructions (BENCHMARKS.md). Each token still has its own `jti`.
    cache: parking_lot::Mutex<std::collections::HashMap<String, (u64, Secret)>>,
}

/// Most cached minted tokens per upstream.
const MAX_CACHED: usize = 10_000;

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    scope: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    act: Option<Value>,
}

impl Minter {
    pub(crate) fn new(upstream: &UpstreamConfig, base_dir: &Path) -> Result<Minter, String> {
        let CredentialConfig::MintObo { key_file, alg, issuer, audience, scope, ttl } = &upstream.credential else {
            return Err(format!("upstream {:?}: credential kind is not mint_obo", upstream.name));
        };
        let at = |k: &str| format!("upstream {:?} credential.{k}", upstream.name);
        let alg = match alg.as_str() {
            "ES256" => Alg::Es256,
            "EdDSA" => Alg::EdDsa,
            other => return Err(format!("{}: {other:?} is not supported; use ES256 or EdDSA", at("alg"))),
        };
        let ttl_secs = ttl.as_secs();
        if ttl_secs == 0 || ttl_secs > MAX_TTL_SECS {
            return Err(format!("{}: must be between 1s and 5m", at("ttl")));
        }
        if issuer.is_empty() {
            return Err(format!("{}: must not be empty", at("issuer")));
        }
        let key =
            SigningKey::load(&base_dir.join(key_file), Some(alg)).map_err(|e| format!("{}: {e}", at("key_file")))?;
        Ok(Minter {
            upstream: upstream.name.clone(),
            key,
            issuer: issuer.clone(),
            audience: default_audience(upstream, audience),
            scope: scope.clone(),
            ttl_secs,
            cache: Default::default(),
        })
    }

    pub(crate) fn mint(&self, caller: &Caller<'_>, tool: Option<&str>) -> Result<Secret, OboError> {
        let fail =
            |why: String| OboError::Mint(format!("upstream {:?}: cannot mint an OBO token: {why}", self.upstream));
        if caller.subject.is_empty() {
            return Err(fail("the caller has no subject".into()));
        }
        let scope = scope::render(&self.scope, &self.upstream, tool).map_err(fail)?;
        let iat = unix_now();
        // \0 cannot occur in any of the parts, so the key is unambiguous.
        let key =
            format!("{}\0{}\0{}\0{scope}", caller.subject, caller.client_id.unwrap_or(""), caller.actors.join("\u{1}"));
        let fresh_until = |exp: u64| exp.saturating_sub(self.ttl_secs / 2);
        if let Some((exp, tok)) = self.cache.lock().get(&key) {
            if iat < fresh_until(*exp) {
                return Ok(tok.clone());
            }
        }
        let claims = Claims {
            iss: &self.issuer,
            sub: caller.subject,
            aud: &self.audience,
            scope: &scope,
            iat,
            exp: iat + self.ttl_secs,
            jti: random_id(),
            act: act_chain(caller.client_id, caller.actors).map_err(fail)?,
        };
        // RFC 9068 §2.1: JWT access tokens are typed `at+jwt`.
        let jwt = self.key.sign("at+jwt", &claims).map_err(fail)?;
        let secret = Secret(format!("Bearer {jwt}"));
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (exp, _)| iat < fresh_until(*exp));
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, (claims.exp, secret.clone()));
        Ok(secret)
    }

    pub(crate) fn public_jwk(&self) -> Value {
        self.key.public_jwk()
    }
}

/// RFC 8693 §4.1 nested `act`: the current actor outermost. `client_id` (if any) acts now; `actors` (most recent
/// first) acted before it. `[c] + [a1, a2]` gives `{"sub": c, "act": {"sub": a1, "act": {"sub": a2}}}`.
pub(crate) fn act_chain(client_id: Option<&str>, actors: &[String]) -> Result<Option<Value>, String> {
    let chain: Vec<&str> = client_id.into_iter().chain(actors.iter().map(String::as_str)).collect();
    if chain.len() > MAX_ACT_DEPTH {
        return Err(format!("delegation chain has {} actors (at most {MAX_ACT_DEPTH})", chain.len()));
    }
    Ok(chain.iter().rev().fold(None, |inner, sub| {
        Some(match inner {
            None => json!({ "sub": sub }),
            Some(prior) => json!({ "sub": sub, "act": prior }),
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::act_chain;
    use serde_json::json;

    #[test]
    fn act_nests_most_recent_outermost() {
        let actors = vec!["a1".to_owned(), "a2".to_owned()];
        assert_eq!(
            act_chain(Some("c"), &actors),
            Ok(Some(json!({"sub": "c", "act": {"sub": "a1", "act": {"sub": "a2"}}})))
        );
        assert_eq!(act_chain(None, &actors), Ok(Some(json!({"sub": "a1", "act": {"sub": "a2"}}))));
        assert_eq!(act_chain(Some("c"), &[]), Ok(Some(json!({"sub": "c"}))));
        assert_eq!(act_chain(None, &[]), Ok(None));
        assert!(act_chain(None, &vec!["x".to_owned(); 17]).is_err());
    }
}
