//! `mint_obo`, `static` and `none`: minted tokens verified with the key from `public_jwks()`.
#![allow(clippy::unwrap_used)]

mod common;

use common::{credentials, keys_dir, upstream};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use portcullis_obo::{Caller, Credentials};
use serde_json::{json, Value};
use std::collections::HashSet;

const MINT: &str = r#"name = "time"
url = "https://time.internal/mcp"
[credential]
kind = "mint_obo"
key_file = "es256.pem"
issuer = "https://gateway.example/"
"#;

/// Verifies `header` (`Bearer <jwt>`) with the JWKS entry of `creds`; returns the header and claims.
fn verify(creds: &Credentials, header: &str, aud: &str) -> (jsonwebtoken::Header, Value) {
    let jwt = header.strip_prefix("Bearer ").unwrap();
    let jwks = creds.public_jwks();
    assert_eq!(jwks.len(), 1);
    assert!(jwks[0].get("d").is_none(), "public parts only: {}", jwks[0]);
    let jwk: Jwk = serde_json::from_value(jwks[0].clone()).unwrap();
    let head = jsonwebtoken::decode_header(jwt).unwrap();
    assert_eq!(head.kid, jwk.common.key_id, "kid names the JWKS entry");
    assert_eq!(head.typ.as_deref(), Some("at+jwt"));
    let mut v = Validation::new(head.alg);
    v.set_audience(&[aud]);
    v.set_issuer(&["https://gateway.example/"]);
    let data = jsonwebtoken::decode::<Value>(jwt, &DecodingKey::from_jwk(&jwk).unwrap(), &v).unwrap();
    (data.header, data.claims)
}

async fn mint(creds: &Credentials, caller: &Caller<'_>, tool: Option<&str>) -> String {
    let (name, value) = creds.for_call(caller, tool).await.unwrap().unwrap();
    assert_eq!(name, http::header::AUTHORIZATION);
    value.expose().to_owned()
}

#[tokio::test]
async fn minted_token_carries_user_agent_chain_audience_and_tool_scope() {
    let creds = credentials(MINT);
    let actors = vec!["planner".to_owned(), "orchestrator".to_owned()];
    let caller = Caller { subject: "alice", client_id: Some("agent-7"), actors: &actors, token: Some("ignored") };
    let header = mint(&creds, &caller, Some("get_time")).await;
    assert!(!header.contains("ignored"));
    let (head, c) = verify(&creds, &header, "https://time.internal/mcp");
    assert_eq!(head.alg, Algorithm::ES256);
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["scope"], "tools:get_time");
    assert_eq!(c["act"], json!({"sub": "agent-7", "act": {"sub": "planner", "act": {"sub": "orchestrator"}}}));
    let (iat, exp) = (c["iat"].as_u64().unwrap(), c["exp"].as_u64().unwrap());
    assert_eq!(exp - iat, 120, "default ttl");

    // Every minted token has its own jti; a token is reused for the same (caller, scope) while at least half of its
    // lifetime is left (signing is the costliest step of a call), never across scopes.
    let mut jtis = HashSet::new();
    for i in 0..200 {
        let tool = format!("tool_{i}");
        let (_, c) = verify(&creds, &mint(&creds, &caller, Some(&tool)).await, "https://time.internal/mcp");
        assert!(jtis.insert(c["jti"].as_str().unwrap().to_owned()), "jti repeated");
    }
    let again = mint(&creds, &caller, Some("get_time")).await;
    assert_eq!(again, mint(&creds, &caller, Some("get_time")).await, "same caller and scope: cached token");
}

#[tokio::test]
async fn without_client_the_chain_starts_at_the_prior_actor() {
    let creds = credentials(MINT);
    let actors = vec!["a1".to_owned(), "a2".to_owned()];
    let caller = Caller { subject: "bob", client_id: None, actors: &actors, token: None };
    let (_, c) = verify(&creds, &mint(&creds, &caller, Some("t")).await, "https://time.internal/mcp");
    assert_eq!(c["act"], json!({"sub": "a1", "act": {"sub": "a2"}}));

    // No actor at all, and not a tool call: no `act`, and no `scope` (the `{tool}` scope is dropped).
    let caller = Caller { subject: "bob", client_id: None, actors: &[], token: None };
    let (_, c) = verify(&creds, &mint(&creds, &caller, None).await, "https://time.internal/mcp");
    assert!(c.get("act").is_none() && c.get("scope").is_none(), "{c}");
}

#[tokio::test]
async fn eddsa_with_configured_audience_and_ttl() {
    let text = MINT.replace("es256.pem", "ed25519.pem")
        + "alg = \"EdDSA\"\naudience = \"time-api\"\nttl = \"5m\"\nscope = \"{upstream}.{tool} mcp\"\n";
    let creds = credentials(&text);
    let caller = Caller { subject: "carol", client_id: Some("cli"), actors: &[], token: None };
    let (head, c) = verify(&creds, &mint(&creds, &caller, Some("now")).await, "time-api");
    assert_eq!(head.alg, Algorithm::EdDSA);
    assert_eq!(c["scope"], "time.now mcp");
    assert_eq!(c["act"], json!({"sub": "cli"}));
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 300);
    assert_eq!(creds.public_jwks()[0]["crv"], "Ed25519");
}

#[tokio::test]
async fn stdio_upstream_audience_is_its_name_and_bad_tools_fail() {
    let text = MINT.replace("url = \"https://time.internal/mcp\"", "command = [\"mcp-server-time\"]");
    let creds = credentials(&text);
    let caller = Caller { subject: "dave", client_id: None, actors: &[], token: None };
    let (_, c) = verify(&creds, &mint(&creds, &caller, Some("x")).await, "time");
    assert_eq!(c["aud"], "time");
    let err = creds.for_call(&caller, Some("x tools:*")).await.unwrap_err();
    assert!(
        matches!(&err, portcullis_obo::OboError::Mint(m) if m.starts_with("upstream \"time\": cannot mint")),
        "{err}"
    );
}

#[test]
fn key_and_ttl_errors_name_the_key() {
    let new = |t: &str| Credentials::new(&upstream(t), &keys_dir(), reqwest::Client::new()).err().unwrap();
    let err = new(&MINT.replace("es256.pem", "es256.pub.pem"));
    assert!(err.starts_with("upstream \"time\" credential.key_file: "), "{err}");
    assert!(err.contains("is not a usable ES256 private key (expected PEM: P-256 as PKCS#8"), "{err}");
    let err = new(&MINT.replace("es256.pem", "ed25519.pem"));
    assert!(err.contains("is not a usable ES256 private key"), "an EdDSA key with alg ES256: {err}");
    assert_eq!(new(&format!("{MINT}ttl = \"6m\"")), "upstream \"time\" credential.ttl: must be between 1s and 5m");
    let err = new(&MINT.replace("es256.pem", "missing.pem"));
    assert!(err.starts_with("upstream \"time\" credential.key_file: cannot read "), "{err}");
}

#[tokio::test]
async fn sec1_p256_keys_are_accepted() {
    let creds = credentials(&MINT.replace("es256.pem", "sec1.pem"));
    let caller = Caller { subject: "alice", client_id: None, actors: &[], token: None };
    let (_, c) = verify(&creds, &mint(&creds, &caller, Some("t")).await, "https://time.internal/mcp");
    assert_eq!(c["sub"], "alice");
}

#[tokio::test]
async fn static_and_none() {
    let caller = Caller { subject: "eve", client_id: None, actors: &[], token: Some("caller-jwt") };
    std::env::set_var("OBO_TEST_STATIC", "s3cret\n");
    let creds = credentials(
        "name = \"s\"\nurl = \"http://s\"\n[credential]\nkind = \"static\"\nvalue_env = \"OBO_TEST_STATIC\"\n",
    );
    let (name, value) = creds.for_call(&caller, Some("t")).await.unwrap().unwrap();
    assert_eq!((name.as_str(), value.expose()), ("authorization", "Bearer s3cret"));
    assert_eq!(format!("{value:?}"), "[redacted]");
    assert_eq!(value.bearer_token(), Some("s3cret"));

    let creds = credentials(
        "name = \"s\"\nurl = \"http://s\"\n[credential]\nkind = \"static\"\nvalue_env = \"OBO_TEST_STATIC\"\n\
         header = \"X-Api-Key\"\nraw = true\n",
    );
    let (name, value) = creds.for_call(&caller, None).await.unwrap().unwrap();
    assert_eq!((name.as_str(), value.expose()), ("x-api-key", "s3cret"));

    let err = Credentials::new(
        &upstream("name = \"s\"\nurl = \"http://s\"\n[credential]\nkind = \"static\"\nvalue_env = \"OBO_TEST_NOPE\"\n"),
        &keys_dir(),
        reqwest::Client::new(),
    )
    .err()
    .unwrap();
    assert_eq!(err, "upstream \"s\" credential.value_env: environment variable OBO_TEST_NOPE is not set");

    let creds = credentials("name = \"n\"\nurl = \"http://n\"\n");
    assert!(creds.for_call(&caller, Some("t")).await.unwrap().is_none(), "kind none: no header, never the caller's");
    assert!(creds.public_jwks().is_empty());
}
