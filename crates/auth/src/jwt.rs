//! JWT verification. The issuer entry is chosen by an unverified peek at `iss`, then everything is verified
//! against that entry alone: its algorithms, its JWKS, its audience. HS256 is a separate path that only ever uses
//! the `[auth.hs256]` secret (algorithm-confusion defence: a public key is never used as an HMAC secret).

use crate::jwks::{alg_name, Jwks, Source};
use crate::principal::{from_claims, Principal};
use crate::AuthError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use portcullis_config::AuthConfig;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::Path;

struct Issuer {
    issuer: String,
    jwks: Jwks,
    /// One per accepted algorithm: jsonwebtoken wants all algorithms of a `Validation` in the key's family.
    validations: Vec<(Algorithm, Validation)>,
}

struct Hs256 {
    issuer: String,
    key: DecodingKey,
    validation: Validation,
}

pub(crate) struct JwtVerifier {
    issuers: Vec<Issuer>,
    hs256: Option<Hs256>,
    roles_claim: String,
    groups_claim: String,
}

#[derive(Deserialize)]
struct PeekHeader {
    alg: Option<String>,
    kid: Option<String>,
    crit: Option<Value>,
}

/// Minimum HS256 secret length (RFC 7518 §3.2: a key of at least the hash size).
const MIN_HS256_SECRET: usize = 32;

impl JwtVerifier {
    pub(crate) fn new(cfg: &AuthConfig, base_dir: &Path, http: &reqwest::Client) -> Result<JwtVerifier, String> {
        let leeway = cfg.leeway.as_secs();
        let mut issuers = Vec::with_capacity(cfg.jwt.len());
        for (i, j) in cfg.jwt.iter().enumerate() {
            let name = format!("auth.jwt[{i}]");
            let source = match (&j.jwks_file, &j.jwks_url) {
                (Some(f), _) => Source::File(base_dir.join(f)),
                (None, Some(u)) => Source::Url(u.clone()),
                (None, None) => return Err(format!("{name}.jwks_file: set exactly one of jwks_file or jwks_url")),
            };
            let mut algorithms = Vec::new();
            for (n, a) in j.algorithms.iter().enumerate() {
                algorithms.push(match a.as_str() {
                    "RS256" => Algorithm::RS256,
                    "ES256" => Algorithm::ES256,
                    "EdDSA" => Algorithm::EdDSA,
                    _ => return Err(format!("{name}.algorithms[{n}]: only RS256, ES256 and EdDSA are accepted")),
                });
            }
            if algorithms.is_empty() {
                return Err(format!("{name}.algorithms: must not be empty"));
            }
            let audience = j.audience.as_deref().unwrap_or(&cfg.resource);
            let validations = algorithms.into_iter().map(|a| (a, validation(a, &j.issuer, audience, leeway))).collect();
            let jwks = Jwks::new(name, source, j.jwks_min_refresh, j.jwks_ttl, http.clone())?;
            issuers.push(Issuer { issuer: j.issuer.clone(), jwks, validations });
        }
        let hs256 = match &cfg.hs256 {
            None => None,
            Some(h) => {
                let secret = std::env::var(&h.secret_env).map_err(|_| {
                    format!("auth.hs256.secret_env: environment variable {} is not set (or not UTF-8)", h.secret_env)
                })?;
                if secret.len() < MIN_HS256_SECRET {
                    return Err(format!(
                        "auth.hs256.secret_env: the secret in {} must be at least {MIN_HS256_SECRET} bytes",
                        h.secret_env
                    ));
                }
                let audience = h.audience.as_deref().unwrap_or(&cfg.resource);
                Some(Hs256 {
                    issuer: h.issuer.clone(),
                    key: DecodingKey::from_secret(secret.as_bytes()),
                    validation: validation(Algorithm::HS256, &h.issuer, audience, leeway),
                })
            }
        };
        Ok(JwtVerifier { issuers, hs256, roles_claim: cfg.roles_claim.clone(), groups_claim: cfg.groups_claim.clone() })
    }

    pub(crate) async fn prefetch(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for i in &self.issuers {
            if let Err(e) = i.jwks.prefetch().await {
                errors.push(e);
            }
        }
        errors
    }

    pub(crate) async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let (header, iss) = peek(token)?;
        if header.crit.is_some() {
            return Err(invalid("critical header extensions (crit) are not supported"));
        }
        let alg = match header.alg.as_deref() {
            None => return Err(invalid("the token header has no alg")),
            Some(a) if a.eq_ignore_ascii_case("none") => {
                return Err(invalid("unsigned tokens (alg \"none\") are not accepted"))
            }
            Some("HS256") => return self.verify_hs256(token, iss.as_deref()),
            Some("RS256") => Algorithm::RS256,
            Some("ES256") => Algorithm::ES256,
            Some("EdDSA") => Algorithm::EdDSA,
            Some(_) => return Err(invalid("the token's signing algorithm is not accepted (RS256, ES256, EdDSA)")),
        };
        let Some(iss) = iss else { return Err(invalid("the token has no iss claim")) };
        let mut first_err = None;
        for entry in self.issuers.iter().filter(|e| e.issuer == iss) {
            match self.verify_with(entry, token, alg, header.kid.as_deref()).await {
                Ok(p) => return Ok(p),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or_else(|| invalid("the token's issuer (iss) is not trusted by this gateway")))
    }

    async fn verify_with(
        &self,
        entry: &Issuer,
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<Principal, AuthError> {
        let Some((_, validation)) = entry.validations.iter().find(|(a, _)| *a == alg) else {
            return Err(invalid(&format!("{} is not accepted for this issuer", alg_name(alg))));
        };
        let keys = entry.jwks.keys_for(kid, alg).await?;
        let mut last = None;
        for k in keys {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, validation) {
                Ok(data) => return self.principal(&data.claims, token),
                // Without a kid several keys may fit; only a signature mismatch moves on to the next one.
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => last = Some(e),
                Err(e) => return Err(map_err(&e, validation)),
            }
        }
        Err(last.map_or_else(|| invalid("no key of the issuer matches the token"), |e| map_err(&e, validation)))
    }

    fn verify_hs256(&self, token: &str, iss: Option<&str>) -> Result<Principal, AuthError> {
        let Some(hs) = &self.hs256 else {
            return Err(invalid("HS256 tokens are not accepted by this gateway"));
        };
        if iss != Some(hs.issuer.as_str()) {
            return Err(invalid("HS256 tokens are accepted only from the configured HS256 issuer"));
        }
        match jsonwebtoken::decode::<Map<String, Value>>(token, &hs.key, &hs.validation) {
            Ok(data) => self.principal(&data.claims, token),
            Err(e) => Err(map_err(&e, &hs.validation)),
        }
    }

    fn principal(&self, claims: &Map<String, Value>, token: &str) -> Result<Principal, AuthError> {
        from_claims(claims, &self.roles_claim, &self.groups_claim, token).map_err(AuthError::Invalid)
    }
}

fn validation(alg: Algorithm, issuer: &str, audience: &str, leeway: u64) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = leeway;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.validate_aud = true;
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v
}

fn invalid(why: &str) -> AuthError {
    AuthError::Invalid(why.to_owned())
}

/// Unverified look at the header and `iss`, only to pick the verification path.
fn peek(token: &str) -> Result<(PeekHeader, Option<String>), AuthError> {
    let malformed = || invalid("malformed JWT (expected three base64url parts: header.payload.signature)");
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(malformed());
    };
    let header = URL_SAFE_NO_PAD.decode(h).map_err(|_| malformed())?;
    let header: PeekHeader = serde_json::from_slice(&header).map_err(|_| invalid("malformed JWT header"))?;
    let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| malformed())?;
    let payload: Map<String, Value> =
        serde_json::from_slice(&payload).map_err(|_| invalid("malformed JWT payload (not a JSON object)"))?;
    let iss = payload.get("iss").and_then(Value::as_str).map(str::to_owned);
    Ok((header, iss))
}

fn map_err(e: &jsonwebtoken::errors::Error, v: &Validation) -> AuthError {
    let why = match e.kind() {
        ErrorKind::InvalidSignature => "bad signature".to_owned(),
        ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf is in the future)".to_owned(),
        ErrorKind::InvalidAudience => {
            let expected = v.aud.iter().flatten().next().map(String::as_str).unwrap_or_default();
            format!("the token's audience (aud) must include {expected}")
        }
        ErrorKind::InvalidIssuer => "the token's issuer (iss) is not trusted by this gateway".to_owned(),
        ErrorKind::MissingRequiredClaim(c) => format!("the token has no {c} claim"),
        ErrorKind::InvalidClaimFormat(c) => format!("the token's {c} claim is malformed"),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => "signing algorithm not accepted".to_owned(),
        ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
            "malformed JWT".to_owned()
        }
        _ => "the token cannot be verified with the issuer's key".to_owned(),
    };
    AuthError::Invalid(why)
}
