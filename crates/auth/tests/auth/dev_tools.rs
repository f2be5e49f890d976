//! `generate_dev_key` + `mint_dev_token` round-trip through the authenticator.

use crate::common::*;
use portcullis_auth::{generate_dev_key, mint_dev_token};
use std::time::Duration;

#[tokio::test]
async fn dev_key_jwks_and_token_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = dir.path().join("keys/dev.pem");
    let jwks = dir.path().join("keys/jwks.json");
    generate_dev_key(&pem, &jwks).expect("generate");
    let pem_text = std::fs::read_to_string(&pem).expect("pem");
    assert!(pem_text.starts_with("-----BEGIN PRIVATE KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&pem).expect("meta").permissions().mode() & 0o777, 0o600);
    }
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&jwks).expect("jwks")).expect("json");
    let key = &doc["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str(), key["alg"].as_str()),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
    assert!(key["kid"].as_str().is_some_and(|k| !k.is_empty()));
    assert!(key.get("d").is_none(), "the JWKS must hold only the public key");

    // Existing PEM is kept; the JWKS is rewritten from it.
    std::fs::remove_file(&jwks).expect("rm");
    generate_dev_key(&pem, &jwks).expect("regenerate");
    assert_eq!(std::fs::read_to_string(&pem).expect("pem"), pem_text);
    let again: serde_json::Value = serde_json::from_slice(&std::fs::read(&jwks).expect("jwks")).expect("json");
    assert_eq!(again, doc);

    let cfg = config(vec![jwt_entry(Some(jwks.clone()), None)]);
    let a = authenticator(&cfg, dir.path());
    let roles = vec!["admin".to_string()];
    let scopes = vec!["tools:read".to_string(), "tools:call".to_string()];
    let t = mint_dev_token(&pem, ISSUER, RESOURCE, "dev-user", &roles, &scopes, Duration::from_secs(60)).expect("mint");
    let p = check(&a, &t).await.expect("dev token accepted");
    assert_eq!((p.subject.as_str(), p.roles.as_slice(), p.scopes.as_slice()), ("dev-user", &roles[..], &scopes[..]));
    assert!(p.expires_at.is_some_and(|e| e <= now() + 60));
}

#[tokio::test]
async fn es256_dev_key_from_openssl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = dir.path().join("ec.pem");
    std::fs::write(&pem, read_key("ec.pem")).expect("copy");
    let jwks = dir.path().join("jwks.json");
    generate_dev_key(&pem, &jwks).expect("jwks from an existing ES256 key");
    let cfg = config(vec![jwt_entry(Some(jwks), None)]);
    let a = authenticator(&cfg, dir.path());
    let t = mint_dev_token(&pem, ISSUER, RESOURCE, "u", &[], &[], Duration::from_secs(60)).expect("mint");
    assert_eq!(check(&a, &t).await.expect("accepted").subject, "u");

    let rsa_pem = dir.path().join("rsa.pem");
    std::fs::write(&rsa_pem, read_key("rsa.pem")).expect("copy");
    let err = mint_dev_token(&rsa_pem, ISSUER, RESOURCE, "u", &[], &[], Duration::from_secs(60)).expect_err("rsa");
    assert!(err.contains("not a PKCS#8 Ed25519 or P-256 private key PEM"), "{err}");
}
