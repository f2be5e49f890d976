//! API keys: `pck_…` bearer tokens checked against configured SHA-256 hashes.

use crate::common::*;
use portcullis_auth::{new_api_key, AuthError, Authenticator, PrincipalKind};
use portcullis_config::ApiKeyConfig;

fn entry(id: &str, sha256: String) -> ApiKeyConfig {
    ApiKeyConfig {
        id: id.into(),
        sha256,
        subject: format!("svc-{id}"),
        roles: vec!["ops".into()],
        scopes: vec!["tools:read".into(), "tools:call".into()],
    }
}

#[tokio::test]
async fn api_keys_valid_unknown_and_revoked() {
    let (key, hash) = new_api_key();
    assert!(key.starts_with("pck_") && key.len() > 40);
    assert_eq!(hash.len(), 64);
    let (other, other_hash) = new_api_key();
    assert_ne!(key, other);
    let mut cfg = config(vec![]);
    cfg.api_key = vec![entry("ci", hash), entry("bot", other_hash)];
    let dir = tempfile::tempdir().expect("tempdir");
    let a = authenticator(&cfg, dir.path());

    let p = check(&a, &key).await.expect("valid key");
    assert_eq!(p.subject, "svc-ci");
    assert_eq!(p.kind, PrincipalKind::ApiKey);
    assert_eq!(p.roles, ["ops"]);
    assert!(p.has_scopes(&["tools:call".into()]));
    assert!(!p.has_scopes(&["admin".into()]));
    assert!(p.token.is_none(), "API keys are never kept for token exchange");
    assert_eq!(p.client_id.as_deref(), Some("ci"));
    assert_eq!(check(&a, &other).await.expect("second key").subject, "svc-bot");

    let unknown = Err(AuthError::Invalid("unknown or revoked API key".into()));
    assert_eq!(outcome(check(&a, "pck_not-a-real-key").await), unknown);
    // Revoked: the entry is gone from the config.
    cfg.api_key.remove(0);
    let a = authenticator(&cfg, dir.path());
    assert_eq!(outcome(check(&a, &key).await), unknown);
    // Without any JWT issuer, a JWT is simply untrusted.
    assert_eq!(
        outcome(check(&a, &ec().sign(&claims("x"))).await),
        invalid("the token's issuer (iss) is not trusted by this gateway")
    );
    // No API keys configured at all: a pck_ token is still just unknown.
    let (dir, cfg) = file_setup();
    let a = Authenticator::new(&cfg, dir.path(), reqwest::Client::new()).expect("auth");
    assert_eq!(outcome(check(&a, &key).await), unknown);
}
