//! Every way a JWT can be wrong, with the exact error a client sees, and the valid cases.

use crate::common::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis_auth::{AuthError, Authenticator, PrincipalKind};
use portcullis_config::Hs256Config;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn missing_and_malformed_headers() {
    let (dir, cfg) = file_setup();
    let a = authenticator(&cfg, dir.path());
    assert_eq!(outcome(a.authenticate(None).await), Err(AuthError::Missing));
    let malformed = invalid("malformed Authorization header (expected `Bearer <token>`)");
    for h in ["Basic dXNlcjpwYXNz", "Bearer", "", "Bearer a b", "Bearer\u{e9}x"] {
        assert_eq!(outcome(a.authenticate(Some(h)).await), malformed, "{h:?}");
    }
    let not_jwt = invalid("malformed JWT (expected three base64url parts: header.payload.signature)");
    assert_eq!(outcome(check(&a, "abc.def").await), not_jwt);
    assert_eq!(outcome(check(&a, "a.b.c.d").await), not_jwt);
}

#[tokio::test]
async fn valid_rs256_es256_eddsa() {
    let (dir, cfg) = file_setup();
    let a = authenticator(&cfg, dir.path());
    for s in [rsa(), ec(), ed()] {
        let p = check(&a, &s.sign(&claims("alice"))).await.expect("valid token");
        assert_eq!(p.subject, "alice");
        assert_eq!(p.issuer.as_deref(), Some(ISSUER));
        assert_eq!(p.kind, PrincipalKind::Jwt);
        assert!(p.expires_at.is_some_and(|e| e > now()));
    }
    // `bearer` is case-insensitive; `aud` may be an array.
    let mut c = claims("bob");
    c["aud"] = json!(["other", RESOURCE]);
    let t = ec().sign(&c);
    assert!(a.authenticate(Some(&format!("bEARER {t}"))).await.is_ok());
}

#[tokio::test]
async fn alg_none_is_rejected() {
    let (dir, cfg) = file_setup();
    let a = authenticator(&cfg, dir.path());
    let enc = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    for alg in ["none", "None", "NONE"] {
        let t = format!("{}.{}.", enc(json!({"alg": alg, "typ": "JWT"})), enc(claims("mallory")));
        assert_eq!(outcome(check(&a, &t).await), invalid("unsigned tokens (alg \"none\") are not accepted"));
        // Even with a (garbage) signature part.
        let t = format!("{t}c2ln");
        assert_eq!(outcome(check(&a, &t).await), invalid("unsigned tokens (alg \"none\") are not accepted"));
    }
}

/// HS256 signed with the RSA public key (the PEM text a verifier would hold) as the HMAC secret.
fn confusion_token(iss: &str) -> String {
    let mut c = claims("mallory");
    c["iss"] = json!(iss);
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("rsa1".into());
    jsonwebtoken::encode(&h, &c, &EncodingKey::from_secret(&read_key("rsa_pub.pem"))).expect("sign")
}

#[tokio::test]
async fn algorithm_confusion_is_rejected() {
    let (dir, mut cfg) = file_setup();
    let a = authenticator(&cfg, dir.path());
    let t = confusion_token(ISSUER);
    assert_eq!(outcome(check(&a, &t).await), invalid("HS256 tokens are not accepted by this gateway"));

    // With [auth.hs256] for another issuer, HS256 claiming the JWKS issuer is still refused…
    std::env::set_var("PORTCULLIS_TEST_HS_CONFUSION", "0123456789abcdef0123456789abcdef-x");
    cfg.hs256 = Some(Hs256Config {
        issuer: "https://hs.example.com".into(),
        audience: None,
        secret_env: "PORTCULLIS_TEST_HS_CONFUSION".into(),
    });
    let a = authenticator(&cfg, dir.path());
    assert_eq!(
        outcome(check(&a, &t).await),
        invalid("HS256 tokens are accepted only from the configured HS256 issuer")
    );
    // …and an HS256 token for the HS256 issuer is checked only against the secret, never the RSA key.
    let t = confusion_token("https://hs.example.com");
    assert_eq!(outcome(check(&a, &t).await), invalid("bad signature"));
}

#[tokio::test]
async fn hs256_only_when_configured() {
    let (dir, mut cfg) = file_setup();
    let secret = "a-long-enough-shared-secret-for-hs256!!";
    std::env::set_var("PORTCULLIS_TEST_HS_OK", secret);
    let mut c = claims("svc");
    c["iss"] = json!("https://hs.example.com");
    let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &c, &EncodingKey::from_secret(secret.as_bytes()))
        .expect("sign");
    let a = authenticator(&cfg, dir.path());
    assert_eq!(outcome(check(&a, &t).await), invalid("HS256 tokens are not accepted by this gateway"));
    cfg.hs256 = Some(Hs256Config {
        issuer: "https://hs.example.com".into(),
        audience: None,
        secret_env: "PORTCULLIS_TEST_HS_OK".into(),
    });
    let a = authenticator(&cfg, dir.path());
    let p = check(&a, &t).await.expect("HS256 accepted");
    assert_eq!((p.subject.as_str(), p.issuer.as_deref()), ("svc", Some("https://hs.example.com")));

    // Startup errors name the key.
    let mut bad = cfg.clone();
    bad.hs256.as_mut().expect("hs").secret_env = "PORTCULLIS_TEST_HS_UNSET".into();
    let err = Authenticator::new(&bad, dir.path(), reqwest::Client::new()).err().expect("missing env");
    assert!(err.starts_with("auth.hs256.secret_env: environment variable PORTCULLIS_TEST_HS_UNSET"), "{err}");
    std::env::set_var("PORTCULLIS_TEST_HS_SHORT", "short");
    bad.hs256.as_mut().expect("hs").secret_env = "PORTCULLIS_TEST_HS_SHORT".into();
    let err = Authenticator::new(&bad, dir.path(), reqwest::Client::new()).err().expect("short secret");
    assert!(err.contains("at least 32 bytes"), "{err}");
}

#[tokio::test]
async fn bad_signature_iss_aud_exp_nbf_and_missing_claims() {
    let (dir, cfg) = file_setup();
    let a = authenticator(&cfg, dir.path());
    // Signed by another RSA key under a published kid.
    let t = rsa2().sign_as("rsa1", &claims("mallory"));
    assert_eq!(outcome(check(&a, &t).await), invalid("bad signature"));
    // Payload changed after signing.
    let good = ed().sign(&claims("alice"));
    let parts: Vec<&str> = good.split('.').collect();
    let forged = URL_SAFE_NO_PAD.encode(claims("admin").to_string());
    let t = format!("{}.{forged}.{}", parts[0], parts[2]);
    assert_eq!(outcome(check(&a, &t).await), invalid("bad signature"));

    let cases = [
        ("iss", json!("https://evil.example.com"), "the token's issuer (iss) is not trusted by this gateway"),
        (
            "aud",
            json!("https://other.example.com/mcp"),
            "the token's audience (aud) must include https://mcp.example.com/mcp",
        ),
        ("exp", json!(now() - 120), "the token has expired"),
        ("nbf", json!(now() + 300), "the token is not valid yet (nbf is in the future)"),
    ];
    for (claim, value, msg) in cases {
        let mut c = claims("alice");
        c[claim] = value;
        assert_eq!(outcome(check(&a, &ec().sign(&c)).await), invalid(msg), "{claim}");
    }
    // Within the leeway (30 s) an expired token and a future nbf are accepted.
    let mut c = claims("alice");
    c["exp"] = json!(now() - 5);
    c["nbf"] = json!(now() + 5);
    assert!(check(&a, &ec().sign(&c)).await.is_ok());
    for claim in ["exp", "sub", "aud"] {
        let mut c = claims("alice");
        c.as_object_mut().expect("object").remove(claim);
        assert_eq!(outcome(check(&a, &rsa().sign(&c)).await), invalid(&format!("the token has no {claim} claim")));
    }
    let mut c = claims("alice");
    c.as_object_mut().expect("object").remove("iss");
    assert_eq!(outcome(check(&a, &rsa().sign(&c)).await), invalid("the token has no iss claim"));
}

#[tokio::test]
async fn algorithm_must_match_key_and_entry() {
    let (dir, mut cfg) = file_setup();
    // An ES256 token naming the RSA key's kid: the RSA key is bound to RS256, so no key fits.
    let a = authenticator(&cfg, dir.path());
    let t = ec().sign_as("rsa1", &claims("mallory"));
    assert_eq!(outcome(check(&a, &t).await), invalid("the token is signed with a key the issuer does not publish"));
    // An algorithm the entry does not list.
    cfg.jwt[0].algorithms = vec!["RS256".into()];
    let a = authenticator(&cfg, dir.path());
    assert_eq!(outcome(check(&a, &ed().sign(&claims("x"))).await), invalid("EdDSA is not accepted for this issuer"));
    // Algorithms never accepted.
    let t = jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims("x"), &EncodingKey::from_secret(b"k"))
        .expect("sign");
    assert_eq!(
        outcome(check(&a, &t).await),
        invalid("the token's signing algorithm is not accepted (RS256, ES256, EdDSA)")
    );
}

#[tokio::test]
async fn unknown_kid_rereads_the_file_at_most_once_per_interval() {
    let (dir, mut cfg) = file_setup();
    cfg.jwt[0].jwks_min_refresh = Duration::from_millis(800);
    let a = authenticator(&cfg, dir.path());
    let t = rsa2().sign(&claims("carol"));
    let unknown = invalid("the token is signed with a key the issuer does not publish");
    assert_eq!(outcome(check(&a, &t).await), unknown);
    // Key added: within the interval the file is not re-read, after it the token succeeds.
    write_jwks(&dir.path().join("jwks.json"), &[rsa().jwk(), rsa2().jwk()]);
    assert_eq!(outcome(check(&a, &t).await), unknown);
    tokio::time::sleep(Duration::from_millis(850)).await;
    assert_eq!(check(&a, &t).await.expect("new key picked up").subject, "carol");
    // Keys no longer in the file are gone after the reload (the EC key was dropped above).
    assert_eq!(outcome(check(&a, &ec().sign(&claims("x"))).await), unknown);
}

#[tokio::test]
async fn cache_hit_returns_the_same_principal() {
    let (dir, cfg) = file_setup();
    let a = authenticator(&cfg, dir.path());
    let t = rsa().sign(&claims("dave"));
    let first = check(&a, &t).await.expect("valid");
    let second = check(&a, &t).await.expect("cached");
    assert!(Arc::ptr_eq(&first, &second), "second call must come from the cache");
    assert_eq!(first.token.as_ref().map(|s| s.expose()), Some(t.as_str()));
    assert_eq!(format!("{:?}", first.token), "Some([redacted])");
    let header = format!("Bearer {t}");
    let n = 20_000u32;
    let start = std::time::Instant::now();
    for _ in 0..n {
        a.authenticate(Some(&header)).await.expect("cached");
    }
    println!("cached authenticate: {:?} per call", start.elapsed() / n);
}

#[tokio::test]
async fn startup_errors_name_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(vec![jwt_entry(Some("missing.json".into()), None)]);
    let err = Authenticator::new(&cfg, dir.path(), reqwest::Client::new()).err().expect("missing file");
    assert!(err.starts_with("auth.jwt[0].jwks_file: cannot read"), "{err}");
    // A JWKS with only a symmetric key has no usable key.
    std::fs::write(dir.path().join("oct.json"), r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}"#).expect("w");
    let cfg = config(vec![jwt_entry(Some("oct.json".into()), None)]);
    let err = Authenticator::new(&cfg, dir.path(), reqwest::Client::new()).err().expect("no usable key");
    assert!(err.contains("no usable signing key"), "{err}");
}
