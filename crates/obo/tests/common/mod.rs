//! A real RFC 8693 token endpoint (axum on 127.0.0.1:0) that validates every request field and counts requests.
#![allow(dead_code, clippy::unwrap_used)]

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::Mutex;
use portcullis_config::UpstreamConfig;
use portcullis_obo::Credentials;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const CLIENT_ID: &str = "gw client";
pub const CLIENT_SECRET: &str = "p:ss/wörd";
/// `base64("gw+client:p%3Ass%2Fw%C3%B6rd")`: RFC 6749 §2.3.1, each part form-urlencoded first.
pub const BASIC: &str = "Basic Z3crY2xpZW50OnAlM0FzcyUyRnclQzMlQjZyZA==";

pub fn keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
}

/// How the endpoint answers.
#[derive(Clone)]
pub enum Answer {
    Token { expires_in: Option<u64> },
    Status(u16, Value),
}

/// How the endpoint authenticates the client.
#[derive(Clone)]
pub enum ClientCheck {
    Basic,
    /// Verify `client_assertion` with this public key (PEM).
    Jwt(&'static str),
}

pub struct Endpoint {
    pub url: String,
    pub hits: AtomicUsize,
    pub answer: Mutex<Answer>,
    pub delay: Mutex<Duration>,
    pub client: ClientCheck,
    /// Subject tokens the test's callers present; anything else is a validation failure.
    pub subject_tokens: Vec<String>,
    pub audience: String,
    /// Violations seen (must stay empty) and the scopes asked for, in order.
    pub violations: Mutex<Vec<String>>,
    pub scopes: Mutex<Vec<Option<String>>>,
}

impl Endpoint {
    pub async fn start(client: ClientCheck, subject_tokens: &[&str], audience: &str) -> Arc<Endpoint> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let ep = Arc::new(Endpoint {
            url,
            hits: AtomicUsize::new(0),
            answer: Mutex::new(Answer::Token { expires_in: Some(300) }),
            delay: Mutex::new(Duration::ZERO),
            client,
            subject_tokens: subject_tokens.iter().map(|s| s.to_string()).collect(),
            audience: audience.to_owned(),
            violations: Mutex::new(Vec::new()),
            scopes: Mutex::new(Vec::new()),
        });
        let app = Router::new().route("/token", post(token)).with_state(Arc::clone(&ep));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        ep
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn assert_valid(&self) {
        let v = self.violations.lock();
        assert!(v.is_empty(), "token endpoint saw invalid requests: {v:?}");
    }
}

async fn token(State(ep): State<Arc<Endpoint>>, headers: HeaderMap, body: String) -> Response {
    let n = ep.hits.fetch_add(1, Ordering::SeqCst) + 1;
    let delay = *ep.delay.lock();
    tokio::time::sleep(delay).await;
    let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let mut bad = Vec::new();
    let mut expect = |k: &str, want: &str| {
        if form.get(k).map(String::as_str) != Some(want) {
            bad.push(format!("{k} = {:?}, want {want:?}", form.get(k)));
        }
    };
    expect("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange");
    expect("subject_token_type", "urn:ietf:params:oauth:token-type:access_token");
    expect("requested_token_type", "urn:ietf:params:oauth:token-type:access_token");
    expect("audience", &ep.audience);
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok());
    if ct != Some("application/x-www-form-urlencoded") {
        bad.push(format!("content-type {ct:?}"));
    }
    let subject = form.get("subject_token").cloned().unwrap_or_default();
    if !ep.subject_tokens.contains(&subject) {
        bad.push("subject_token is not a token a caller presented".into());
    }
    match &ep.client {
        ClientCheck::Basic => {
            let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
            if auth != Some(BASIC) {
                bad.push(format!("authorization {auth:?}"));
            }
        }
        ClientCheck::Jwt(pub_pem) => bad.extend(check_assertion(&form, pub_pem, &ep.url)),
    }
    let scope = form.get("scope").cloned();
    ep.scopes.lock().push(scope.clone());
    if !bad.is_empty() {
        ep.violations.lock().extend(bad);
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_request"}))).into_response();
    }
    match ep.answer.lock().clone() {
        Answer::Token { expires_in } => {
            let mut body = json!({
                "access_token": format!("xt-{n}-{}", scope.unwrap_or_default()),
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
            });
            if let Some(e) = expires_in {
                body["expires_in"] = json!(e);
            }
            Json(body).into_response()
        }
        Answer::Status(code, body) => (StatusCode::from_u16(code).unwrap(), Json(body)).into_response(),
    }
}

/// RFC 7523 client authentication: signature, iss = sub = client_id, aud = token endpoint, jti, exp ≤ 60 s.
fn check_assertion(form: &HashMap<String, String>, pub_pem: &str, endpoint: &str) -> Vec<String> {
    let mut bad = Vec::new();
    if form.get("client_assertion_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        bad.push("client_assertion_type".into());
    }
    let pem = std::fs::read(keys_dir().join(pub_pem)).unwrap();
    let key = if pub_pem.starts_with("ed") {
        (DecodingKey::from_ed_pem(&pem).unwrap(), Algorithm::EdDSA)
    } else {
        (DecodingKey::from_ec_pem(&pem).unwrap(), Algorithm::ES256)
    };
    let mut v = Validation::new(key.1);
    v.set_audience(&[endpoint]);
    v.set_issuer(&[CLIENT_ID]);
    v.sub = Some(CLIENT_ID.into());
    v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    let assertion = form.get("client_assertion").cloned().unwrap_or_default();
    match jsonwebtoken::decode::<Value>(&assertion, &key.0, &v) {
        Ok(t) => {
            let c = t.claims;
            let (iat, exp) = (c["iat"].as_u64().unwrap_or(0), c["exp"].as_u64().unwrap_or(u64::MAX));
            if exp.saturating_sub(iat) > 60 {
                bad.push(format!("assertion lives {}s", exp.saturating_sub(iat)));
            }
            if c["jti"].as_str().is_none_or(str::is_empty) {
                bad.push("assertion without jti".into());
            }
        }
        Err(e) => bad.push(format!("client_assertion: {e}")),
    }
    bad
}

/// Parses `[upstream]`-style TOML (without the table header) into an `UpstreamConfig`.
pub fn upstream(toml_text: &str) -> UpstreamConfig {
    toml::from_str(toml_text).unwrap()
}

pub fn credentials(toml_text: &str) -> Credentials {
    Credentials::new(&upstream(toml_text), &keys_dir(), reqwest::Client::new()).unwrap()
}

/// The token-exchange upstream used across tests: `kind = "token_exchange"` against `ep`.
pub fn exchange_toml(ep: &Endpoint, extra: &str) -> String {
    format!(
        r#"name = "files"
url = "https://files.internal/mcp"
[credential]
kind = "token_exchange"
token_endpoint = "{}"
client_id = "{CLIENT_ID}"
{extra}
"#,
        ep.url
    )
}
