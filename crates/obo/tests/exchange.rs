//! `token_exchange` against a real HTTP token endpoint.
#![allow(clippy::unwrap_used)]

mod common;

use common::{credentials, exchange_toml, Answer, ClientCheck, Endpoint, CLIENT_SECRET};
use portcullis_obo::{Caller, Credentials, OboError};
use serde_json::json;
use std::time::Duration;

const ALICE_TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.alice-token.sig";
const ALICE_TOKEN_2: &str = "eyJhbGciOiJFUzI1NiJ9.alice-second-token.sig";
const AUDIENCE: &str = "https://files.internal/mcp";

fn alice(token: &str) -> Caller<'_> {
    Caller { subject: "alice", client_id: Some("agent"), actors: &[], token: Some(token) }
}

async fn basic_setup(extra: &str) -> (std::sync::Arc<Endpoint>, Credentials) {
    std::env::set_var("OBO_TEST_CLIENT_SECRET", CLIENT_SECRET);
    let ep = Endpoint::start(ClientCheck::Basic, &[ALICE_TOKEN, ALICE_TOKEN_2], AUDIENCE).await;
    let creds = credentials(&exchange_toml(&ep, &format!("client_secret_env = \"OBO_TEST_CLIENT_SECRET\"\n{extra}")));
    (ep, creds)
}

async fn header(creds: &Credentials, caller: &Caller<'_>, tool: Option<&str>) -> Result<String, OboError> {
    let (name, value) = creds.for_call(caller, tool).await?.unwrap();
    assert_eq!(name, http::header::AUTHORIZATION);
    Ok(value.expose().to_owned())
}

#[tokio::test]
async fn scope_is_narrowed_to_the_tool_and_cached_per_key() {
    let (ep, creds) = basic_setup("").await;
    let first = header(&creds, &alice(ALICE_TOKEN), Some("read_file")).await.unwrap();
    assert_eq!(first, "Bearer xt-1-tools:read_file", "the exchanged token, never the caller's");
    for _ in 0..5 {
        assert_eq!(header(&creds, &alice(ALICE_TOKEN), Some("read_file")).await.unwrap(), first);
    }
    assert_eq!(ep.hits(), 1, "N calls with the same key: one exchange");

    let other = header(&creds, &alice(ALICE_TOKEN), Some("write_file")).await.unwrap();
    assert_eq!(other, "Bearer xt-2-tools:write_file");
    assert_eq!(ep.hits(), 2, "another tool: another exchange");

    // Same subject, another caller token: not served from the first token's exchange (key includes the token).
    let second = header(&creds, &alice(ALICE_TOKEN_2), Some("read_file")).await.unwrap();
    assert_eq!(second, "Bearer xt-3-tools:read_file");

    // Not a tool call: the `{tool}` scope is dropped, not widened; no scope parameter at all.
    assert_eq!(header(&creds, &alice(ALICE_TOKEN), None).await.unwrap(), "Bearer xt-4-");
    assert_eq!(
        *ep.scopes.lock(),
        vec![Some("tools:read_file".into()), Some("tools:write_file".into()), Some("tools:read_file".into()), None]
    );
    ep.assert_valid();
}

#[tokio::test]
async fn concurrent_cold_misses_share_one_exchange() {
    let (ep, creds) = basic_setup("").await;
    *ep.delay.lock() = Duration::from_millis(200);
    let caller = alice(ALICE_TOKEN);
    let calls = (0..50).map(|_| header(&creds, &caller, Some("read_file")));
    let results = futures::future::join_all(calls).await;
    assert!(results.iter().all(|r| r.as_deref() == Ok("Bearer xt-1-tools:read_file")), "{results:?}");
    assert_eq!(ep.hits(), 1);

    // Across tasks too.
    let creds = std::sync::Arc::new(creds);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let creds = std::sync::Arc::clone(&creds);
            tokio::spawn(async move { header(&creds, &alice(ALICE_TOKEN), Some("write_file")).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "Bearer xt-2-tools:write_file");
    }
    assert_eq!(ep.hits(), 2);
    ep.assert_valid();
}

#[tokio::test]
async fn refusals_are_cached_for_negative_ttl_with_a_safe_message() {
    let (ep, creds) = basic_setup("negative_ttl = \"400ms\"").await;
    *ep.answer.lock() = Answer::Status(
        400,
        json!({"error": "invalid_grant", "error_description": format!("token {ALICE_TOKEN} is revoked")}),
    );
    let err = header(&creds, &alice(ALICE_TOKEN), Some("read_file")).await.unwrap_err();
    let OboError::Exchange(msg) = &err else { panic!("{err:?}") };
    assert_eq!(
        msg,
        &format!(
            "upstream \"files\": token exchange at {} refused (HTTP 400 invalid_grant: token [redacted] is revoked); \
             the caller's token was not accepted for this upstream",
            ep.url
        )
    );
    assert!(!msg.contains("alice-token"));

    assert_eq!(header(&creds, &alice(ALICE_TOKEN), Some("read_file")).await.unwrap_err(), err);
    assert_eq!(ep.hits(), 1, "within negative_ttl the endpoint is not asked again");

    *ep.answer.lock() = Answer::Token { expires_in: Some(300) };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(header(&creds, &alice(ALICE_TOKEN), Some("read_file")).await.unwrap(), "Bearer xt-2-tools:read_file");
    assert_eq!(ep.hits(), 2);
    ep.assert_valid();
}

#[tokio::test]
async fn server_errors_are_not_cached() {
    let (ep, creds) = basic_setup("").await;
    *ep.answer.lock() = Answer::Status(503, json!({"error": "temporarily_unavailable"}));
    for n in 1..=2 {
        let err = header(&creds, &alice(ALICE_TOKEN), Some("read_file")).await.unwrap_err();
        assert!(
            matches!(&err, OboError::Exchange(m) if m.contains("HTTP 503 temporarily_unavailable") && m.contains("\"files\"")),
            "{err:?}"
        );
        assert_eq!(ep.hits(), n);
    }
    *ep.answer.lock() = Answer::Token { expires_in: Some(300) };
    assert_eq!(header(&creds, &alice(ALICE_TOKEN), Some("read_file")).await.unwrap(), "Bearer xt-3-tools:read_file");
    ep.assert_valid();
}

#[tokio::test]
async fn exchanged_tokens_expire_skew_early() {
    let (ep, creds) = basic_setup("skew = \"1s\"").await;
    *ep.answer.lock() = Answer::Token { expires_in: Some(3) };
    header(&creds, &alice(ALICE_TOKEN), Some("read_file")).await.unwrap();
    header(&creds, &alice(ALICE_TOKEN), Some("read_file")).await.unwrap();
    assert_eq!(ep.hits(), 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(header(&creds, &alice(ALICE_TOKEN), Some("read_file")).await.unwrap(), "Bearer xt-2-tools:read_file");

    // No expires_in: used for that call only.
    *ep.answer.lock() = Answer::Token { expires_in: None };
    header(&creds, &alice(ALICE_TOKEN), Some("other")).await.unwrap();
    header(&creds, &alice(ALICE_TOKEN), Some("other")).await.unwrap();
    assert_eq!(ep.hits(), 4);
    ep.assert_valid();
}

#[tokio::test]
async fn callers_without_a_jwt_cannot_be_exchanged() {
    let (ep, creds) = basic_setup("").await;
    let caller = Caller { subject: "svc", client_id: None, actors: &[], token: None };
    assert_eq!(creds.for_call(&caller, Some("read_file")).await.unwrap_err(), OboError::NoSubjectToken);
    assert_eq!(ep.hits(), 0);
}

#[tokio::test]
async fn unreachable_endpoint_fails_the_call() {
    std::env::set_var("OBO_TEST_CLIENT_SECRET", CLIENT_SECRET);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    drop(listener);
    let creds = credentials(&format!(
        "name = \"files\"\nurl = \"{AUDIENCE}\"\n[credential]\nkind = \"token_exchange\"\ntoken_endpoint = \"{url}\"\n\
         client_id = \"c\"\nclient_secret_env = \"OBO_TEST_CLIENT_SECRET\"\n"
    ));
    let err = header(&creds, &alice(ALICE_TOKEN), Some("read_file")).await.unwrap_err();
    let OboError::Exchange(msg) = err else { panic!() };
    assert!(msg.starts_with(&format!("upstream \"files\": token exchange at {url} request failed: ")), "{msg}");
    assert!(!msg.contains("alice-token"));
}

#[tokio::test]
async fn private_key_jwt_client_authentication() {
    let ep = Endpoint::start(ClientCheck::Jwt("es256.pub.pem"), &[ALICE_TOKEN], "files-api").await;
    let creds = credentials(&exchange_toml(
        &ep,
        "client_auth = \"private_key_jwt\"\nprivate_key_file = \"es256.pem\"\naudience = \"files-api\"\n\
         scope = \"{upstream}:{tool}\"\nresource = \"https://files.internal/\"",
    ));
    assert_eq!(header(&creds, &alice(ALICE_TOKEN), Some("stat")).await.unwrap(), "Bearer xt-1-files:stat");
    ep.assert_valid();

    let ep = Endpoint::start(ClientCheck::Jwt("ed25519.pub.pem"), &[ALICE_TOKEN], AUDIENCE).await;
    let creds =
        credentials(&exchange_toml(&ep, "client_auth = \"private_key_jwt\"\nprivate_key_file = \"ed25519.pem\""));
    assert_eq!(header(&creds, &alice(ALICE_TOKEN), Some("stat")).await.unwrap(), "Bearer xt-1-tools:stat");
    ep.assert_valid();
    assert!(creds.public_jwks().is_empty(), "client keys are not OBO signing keys");
}

#[tokio::test]
async fn config_errors_name_the_key() {
    let ep = Endpoint::start(ClientCheck::Basic, &[], AUDIENCE).await;
    let up = common::upstream(&exchange_toml(&ep, "client_secret_env = \"OBO_TEST_UNSET_SECRET\""));
    let err = Credentials::new(&up, &common::keys_dir(), reqwest::Client::new()).err().unwrap();
    assert_eq!(
        err,
        "upstream \"files\" credential.client_secret_env: environment variable OBO_TEST_UNSET_SECRET is not set"
    );
    let up = common::upstream(&exchange_toml(
        &ep,
        "client_auth = \"private_key_jwt\"\nprivate_key_file = \"ed25519.pub.pem\"",
    ));
    let err = Credentials::new(&up, &common::keys_dir(), reqwest::Client::new()).err().unwrap();
    assert!(err.starts_with("upstream \"files\" credential.private_key_file: "), "{err}");
    assert!(err.contains("is not a usable ES256 or EdDSA private key"), "{err}");
}
