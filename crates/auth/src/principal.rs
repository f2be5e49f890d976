//! Who is calling: [`Principal`], built from verified JWT claims or an API key entry.

use serde_json::{Map, Value};
use std::fmt;

/// How the caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrincipalKind {
    Jwt,
    ApiKey,
    Anonymous,
}

/// A secret string (a verified bearer token). Prints as `[redacted]`; not serializable; read with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<str>);

impl Secret {
    pub fn new(s: impl Into<Box<str>>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself. Use only to send it where it is meant to go (an RFC 8693 `subject_token`), never to log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub subject: String,
    pub issuer: Option<String>,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
    /// `azp` or `client_id` claim: the OAuth client (agent) the token was issued to.
    pub client_id: Option<String>,
    /// Delegation chain from nested `act` claims (RFC 8693 §4.1): `act.sub`, then `act.act.sub`, …
    pub actors: Vec<String>,
    pub kind: PrincipalKind,
    /// `exp` of the token (unix seconds); `None` for API keys and anonymous.
    pub expires_at: Option<u64>,
    /// The verified bearer JWT, kept only so an RFC 8693 exchange can use it as `subject_token`. `None` for API
    /// keys and anonymous. Never forward it upstream as-is (token passthrough is forbidden).
    pub token: Option<Secret>,
}

impl Principal {
    /// The caller when `[auth]` is absent (quickstart mode).
    pub fn anonymous() -> Principal {
        Principal {
            subject: "anonymous".into(),
            issuer: None,
            roles: Vec::new(),
            groups: Vec::new(),
            scopes: Vec::new(),
            client_id: None,
            actors: Vec::new(),
            kind: PrincipalKind::Anonymous,
            expires_at: None,
            token: None,
        }
    }

    /// Same caller (issuer, subject and kind), e.g. to bind a session or a task to whoever created it.
    pub fn same_identity(&self, other: &Principal) -> bool {
        self.kind == other.kind && self.issuer == other.issuer && self.subject == other.subject
    }

    /// Whether every scope in `needed` was granted.
    pub fn has_scopes(&self, needed: &[String]) -> bool {
        needed.iter().all(|n| self.scopes.iter().any(|s| s == n))
    }
}

/// Most `act` levels followed; a deeper chain is cut (the token was still signed by a trusted issuer).
const MAX_ACTORS: usize = 16;

/// Builds a principal from verified claims. `sub` must be present (the validator requires it).
pub(crate) fn from_claims(
    claims: &Map<String, Value>,
    roles_claim: &str,
    groups_claim: &str,
    token: &str,
) -> Result<Principal, String> {
    let subject = match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err("the sub claim must be a non-empty string".into()),
    };
    let mut scopes = string_list(claims.get("scope"));
    for s in string_list(claims.get("scp")) {
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    let client_id = ["azp", "client_id"].iter().find_map(|k| claims.get(*k).and_then(Value::as_str)).map(str::to_owned);
    let mut actors = Vec::new();
    let mut act = claims.get("act");
    while let Some(Value::Object(a)) = act {
        if actors.len() == MAX_ACTORS {
            break;
        }
        if let Some(sub) = a.get("sub").and_then(Value::as_str) {
            actors.push(sub.to_owned());
        }
        act = a.get("act");
    }
    Ok(Principal {
        subject,
        issuer: claims.get("iss").and_then(Value::as_str).map(str::to_owned),
        roles: string_list(claim(claims, roles_claim)),
        groups: string_list(claim(claims, groups_claim)),
        scopes,
        client_id,
        actors,
        kind: PrincipalKind::Jwt,
        expires_at: claims.get("exp").and_then(Value::as_u64),
        token: Some(Secret::new(token)),
    })
}

/// Claim by name; a name with dots that is not a top-level claim is a path (`realm_access.roles`, Keycloak).
fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut v = claims.get(parts.next()?)?;
    for p in parts {
        v = v.as_object()?.get(p)?;
    }
    Some(v)
}

/// A string array (non-strings skipped) or a space-separated string.
fn string_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}
