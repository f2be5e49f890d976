//! API keys (`pck_…`): only their SHA-256 is configured; a presented key is hashed and compared in constant time.

use crate::{AuthError, Principal, PrincipalKind};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use portcullis_config::ApiKeyConfig;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Prefix that marks a bearer token as an API key rather than a JWT.
pub const API_KEY_PREFIX: &str = "pck_";

pub(crate) struct ApiKeys {
    keys: Vec<([u8; 32], Arc<Principal>)>,
}

impl ApiKeys {
    pub(crate) fn new(cfg: &[ApiKeyConfig]) -> Result<ApiKeys, String> {
        let mut keys = Vec::with_capacity(cfg.len());
        for (i, k) in cfg.iter().enumerate() {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(&k.sha256, &mut hash)
                .map_err(|_| format!("auth.api_key[{i}].sha256: must be 64 lowercase hex characters"))?;
            let principal = Principal {
                subject: k.subject.clone(),
                issuer: None,
                roles: k.roles.clone(),
                groups: Vec::new(),
                scopes: k.scopes.clone(),
                client_id: Some(k.id.clone()),
                actors: Vec::new(),
                kind: PrincipalKind::ApiKey,
                expires_at: None,
                token: None,
            };
            keys.push((hash, Arc::new(principal)));
        }
        Ok(ApiKeys { keys })
    }

    /// The principal of a configured key. Every configured hash is compared (no early exit).
    pub(crate) fn check(&self, key: &str) -> Result<Arc<Principal>, AuthError> {
        let presented: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for (hash, principal) in &self.keys {
            if bool::from(hash.ct_eq(&presented)) {
                found = Some(principal);
            }
        }
        found.cloned().ok_or_else(|| AuthError::Invalid("unknown or revoked API key".into()))
    }
}

/// A new random API key (`pck_` + 256 random bits, base64url) and the lowercase hex SHA-256 to configure.
pub fn new_api_key() -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let key = format!("{API_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    (key, hash)
}
