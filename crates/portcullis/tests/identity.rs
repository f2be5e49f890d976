//! Identity end to end, over real HTTP against `portcullis serve`: who may call (401/403 with the exact
//! `WWW-Authenticate` and body), how clients discover it (RFC 9728 metadata), sessions bound to their creator, and
//! what upstreams receive instead of the caller's token (RFC 8693 token exchange, gateway-minted OBO JWTs), plus
//! the `keys` / `token mint` CLI. Upstreams and the token endpoint are written here (axum on their own runtime)
//! and record everything they receive, so "the caller's token never leaks" is checked on the bytes themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method as AxMethod, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use common::*;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ISSUER: &str = "https://idp.example.com";
const RESOURCE: &str = "https://mcp.example.com/mcp";
/// RFC 9728 metadata base for `RESOURCE`'s origin.
const MD: &str = "https://mcp.example.com/.well-known/oauth-protected-resource";
const GW_ISSUER: &str = "https://gw.example";
const XCHG_CLIENT: &str = "gw-client";
const XCHG_SECRET: &str = "xchg-secret-42";
const XCHG_AUDIENCE: &str = "https://upstream.example/x";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

// ------------------------------------------------------------------------------------------------ keys & tokens

fn keys_dir() -> PathBuf {
    repo_root().join("crates/auth/tests/keys")
}

fn read_key(name: &str) -> Vec<u8> {
    std::fs::read(keys_dir().join(name)).unwrap()
}

struct Signer {
    key: EncodingKey,
    alg: Algorithm,
    kid: &'static str,
}

impl Signer {
    fn jwk(&self) -> Value {
        let mut v = serde_json::to_value(Jwk::from_encoding_key(&self.key, self.alg).unwrap()).unwrap();
        v["kid"] = Value::from(self.kid);
        v
    }
    fn sign(&self, claims: &Value) -> String {
        self.sign_kid(self.kid, claims)
    }
    fn sign_kid(&self, kid: &str, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&h, claims, &self.key).unwrap()
    }
}

fn rsa() -> Signer {
    Signer { key: EncodingKey::from_rsa_pem(&read_key("rsa.pem")).unwrap(), alg: Algorithm::RS256, kid: "rsa1" }
}
/// Another RSA key, not in the JWKS.
fn rsa2() -> Signer {
    Signer { key: EncodingKey::from_rsa_pem(&read_key("rsa2.pem")).unwrap(), alg: Algorithm::RS256, kid: "rsa2" }
}
fn ec() -> Signer {
    Signer { key: EncodingKey::from_ec_pem(&read_key("ec.pem")).unwrap(), alg: Algorithm::ES256, kid: "ec1" }
}
fn ed() -> Signer {
    Signer { key: EncodingKey::from_ed_pem(&read_key("ed.pem")).unwrap(), alg: Algorithm::EdDSA, kid: "ed1" }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

static JTI: AtomicU64 = AtomicU64::new(0);

/// Valid claims for `ISSUER`/`RESOURCE`, 5 minutes, with a unique `jti` (so every token string is distinct).
fn claims(sub: &str) -> Value {
    let jti = format!("jti-{}-{}", std::process::id(), JTI.fetch_add(1, Ordering::Relaxed));
    json!({ "iss": ISSUER, "aud": RESOURCE, "sub": sub, "iat": now(), "exp": now() + 300, "jti": jti })
}

fn with(mut c: Value, k: &str, v: Value) -> Value {
    c[k] = v;
    c
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The unverified payload of a compact JWS.
fn payload(jwt: &str) -> Value {
    let p = jwt.split('.').nth(1).expect("three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
}

/// The trusted issuer: a JWKS with the RSA, EC and Ed25519 test keys, and one API key (`pck_…`) for `svc-ci`
/// with scope `mcp:admin`.
struct Idp {
    dir: tempfile::TempDir,
    api_key: String,
}

fn idp() -> Idp {
    let dir = tempfile::tempdir().unwrap();
    let jwks = json!({ "keys": [rsa().jwk(), ec().jwk(), ed().jwk()] });
    std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).unwrap();
    let api_key = format!("pck_identity-test-{}-{}", std::process::id(), JTI.fetch_add(1, Ordering::Relaxed));
    Idp { dir, api_key }
}

impl Idp {
    fn auth_section(&self) -> String {
        format!(
            "[auth]\nresource = \"{RESOURCE}\"\nauthorization_servers = [\"{ISSUER}\"]\nscopes_supported = [\"mcp:tools\"]\n\n\
             [[auth.jwt]]\nissuer = \"{ISSUER}\"\njwks_file = \"{}\"\n\n\
             [[auth.api_key]]\nid = \"ci\"\nsha256 = \"{}\"\nsubject = \"svc-ci\"\nscopes = [\"mcp:admin\"]\n\n",
            self.dir.path().join("jwks.json").display(),
            sha256_hex(&self.api_key)
        )
    }
}

// ------------------------------------------------------------------ recording upstream + RFC 8693 token endpoint

/// One HTTP request as received.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    fn rpc_method(&self) -> String {
        self.json()["method"].as_str().unwrap_or_default().to_owned()
    }
    fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.body.as_bytes()).into_owned().collect()
    }
    fn field(&self, k: &str) -> Option<String> {
        self.form().into_iter().find(|(n, _)| n == k).map(|(_, v)| v)
    }
    /// Everything received, as one string (for leak checks).
    fn all_text(&self) -> String {
        let mut s = format!("{} {}\n", self.method, self.path);
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\n"));
        }
        s.push_str(&self.body);
        s
    }
}

#[derive(Default)]
struct FakeState {
    /// Requests to the MCP endpoints (any path not starting with `/token`).
    upstream: Mutex<Vec<Seen>>,
    /// Requests to the token endpoints.
    token: Mutex<Vec<Seen>>,
    /// (scope, issued access token, subject token) per successful exchange.
    issued: Mutex<Vec<(String, String, String)>>,
    /// Validation failures of the token endpoint (must stay empty).
    problems: Mutex<Vec<String>>,
    counter: AtomicU64,
}

/// An HTTP server on its own runtime: a minimal MCP server (tools `alpha`, `beta`; `tools/call` answers with the
/// `Authorization` it received and the `_meta` of its params) on every path, and an RFC 8693 token endpoint at
/// `/token` (validating) and `/token-bad` (always 400 `invalid_grant`).
struct Fake {
    base: String,
    st: Arc<FakeState>,
}

fn fake() -> Fake {
    let st = Arc::new(FakeState::default());
    let st2 = st.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap().port()).unwrap();
            let app = axum::Router::new().fallback(fake_handler).with_state(st2);
            axum::serve(l, app).await.unwrap();
        });
    });
    let port = rx.recv().unwrap();
    Fake { base: format!("http://127.0.0.1:{port}"), st }
}

impl Fake {
    fn upstream_seen(&self, path: &str) -> Vec<Seen> {
        self.st.upstream.lock().unwrap().iter().filter(|s| s.path == path).cloned().collect()
    }
    fn calls(&self, path: &str) -> Vec<Seen> {
        self.upstream_seen(path).into_iter().filter(|s| s.rpc_method() == "tools/call").collect()
    }
    fn token_seen(&self, path: &str) -> Vec<Seen> {
        self.st.token.lock().unwrap().iter().filter(|s| s.path == path).cloned().collect()
    }
    fn issued(&self) -> Vec<(String, String, String)> {
        self.st.issued.lock().unwrap().clone()
    }
    fn problems(&self) -> Vec<String> {
        self.st.problems.lock().unwrap().clone()
    }
    /// Everything any MCP endpoint received.
    fn upstream_text(&self) -> String {
        self.st.upstream.lock().unwrap().iter().map(Seen::all_text).collect::<Vec<_>>().join("\n")
    }
}

async fn fake_handler(
    State(st): State<Arc<FakeState>>,
    method: AxMethod,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        method: method.to_string(),
        path: uri.path().to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    if seen.path.starts_with("/token") {
        st.token.lock().unwrap().push(seen.clone());
        return token_endpoint(&st, &seen).await;
    }
    st.upstream.lock().unwrap().push(seen.clone());
    mcp_endpoint(&seen)
}

fn json_reply(status: StatusCode, v: &Value) -> Response {
    (status, [("content-type", "application/json")], v.to_string()).into_response()
}

fn mcp_endpoint(seen: &Seen) -> Response {
    match seen.method.as_str() {
        "POST" => {}
        "DELETE" => return StatusCode::OK.into_response(),
        _ => return StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
    let msg = seen.json();
    let Some(id) = msg.get("id").cloned().filter(|_| msg.get("method").is_some()) else {
        return StatusCode::ACCEPTED.into_response(); // notification or response
    };
    let params = &msg["params"];
    let result = match msg["method"].as_str().unwrap_or_default() {
        "initialize" => {
            let v = params["protocolVersion"].as_str().unwrap_or("2025-06-18");
            json!({"protocolVersion": v, "capabilities": {"tools": {}}, "serverInfo": {"name": "recorder", "version": "0"}})
        }
        "tools/list" => json!({"tools": [
            {"name": "alpha", "description": "a", "inputSchema": {"type": "object"}},
            {"name": "beta", "description": "b", "inputSchema": {"type": "object"}},
        ]}),
        "tools/call" => {
            let seen_by_tool = json!({
                "tool": params["name"],
                "authorization": seen.header("authorization"),
                "meta": params["_meta"],
            });
            json!({"content": [{"type": "text", "text": seen_by_tool.to_string()}]})
        }
        _ => json!({}),
    };
    let mut r = json_reply(StatusCode::OK, &json!({"jsonrpc": "2.0", "id": id, "result": result}));
    r.headers_mut().insert("mcp-session-id", "recorder-session".parse().unwrap());
    r
}

async fn token_endpoint(st: &FakeState, seen: &Seen) -> Response {
    if seen.path == "/token-bad" {
        return json_reply(
            StatusCode::BAD_REQUEST,
            &json!({"error": "invalid_grant", "error_description": "the subject token was revoked"}),
        );
    }
    // Slow enough that concurrent calls overlap (coalescing is observable).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut problems = Vec::new();
    let basic = format!("Basic {}", STANDARD.encode(format!("{XCHG_CLIENT}:{XCHG_SECRET}")));
    if seen.method != "POST" {
        problems.push(format!("method {}", seen.method));
    }
    if seen.header("content-type") != Some("application/x-www-form-urlencoded") {
        problems.push(format!("content-type {:?}", seen.header("content-type")));
    }
    if seen.header("authorization") != Some(basic.as_str()) {
        problems.push(format!("client_secret_basic: authorization {:?}", seen.header("authorization")));
    }
    if seen.field("grant_type").as_deref() != Some(TOKEN_EXCHANGE) {
        problems.push(format!("grant_type {:?}", seen.field("grant_type")));
    }
    if seen.field("subject_token_type").as_deref() != Some(ACCESS_TOKEN_TYPE) {
        problems.push(format!("subject_token_type {:?}", seen.field("subject_token_type")));
    }
    if seen.field("audience").as_deref() != Some(XCHG_AUDIENCE) {
        problems.push(format!("audience {:?}", seen.field("audience")));
    }
    let subject = seen.field("subject_token").unwrap_or_default();
    let mut v = Validation::new(Algorithm::RS256);
    v.set_issuer(&[ISSUER]);
    v.set_audience(&[RESOURCE]);
    let key = DecodingKey::from_rsa_pem(&read_key("rsa_pub.pem")).unwrap();
    if let Err(e) = jsonwebtoken::decode::<Value>(&subject, &key, &v) {
        problems.push(format!("subject_token is not a valid caller JWT: {e}"));
    }
    let scope = seen.field("scope").unwrap_or_default();
    let tool = scope.strip_prefix("tools:").filter(|t| matches!(*t, "alpha" | "beta"));
    if tool.is_none() {
        problems.push(format!("scope {scope:?}"));
    }
    if !problems.is_empty() {
        let why = problems.join("; ");
        st.problems.lock().unwrap().push(why.clone());
        return json_reply(StatusCode::BAD_REQUEST, &json!({"error": "invalid_request", "error_description": why}));
    }
    let n = st.counter.fetch_add(1, Ordering::SeqCst) + 1;
    let access = format!("xchg-{n}-{}", tool.unwrap_or_default());
    st.issued.lock().unwrap().push((scope, access.clone(), subject));
    json_reply(
        StatusCode::OK,
        &json!({"access_token": access, "token_type": "Bearer", "issued_token_type": ACCESS_TOKEN_TYPE, "expires_in": 300}),
    )
}

/// The JSON the recording upstream answered a `tools/call` with.
fn upstream_saw(resp: &Value) -> Value {
    assert!(resp.get("error").is_none(), "call failed: {resp}");
    serde_json::from_str(&text_of(resp)).unwrap_or_else(|e| panic!("not JSON ({e}): {resp}"))
}

// ----------------------------------------------------------------------------------------------------- helpers

fn body_401(msg: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000, "message": format!("401 Unauthorized: {msg}")}})
}

fn www_invalid(md: &str, why: &str) -> String {
    format!(
        "Bearer resource_metadata=\"{md}\", error=\"invalid_token\", error_description=\"{}\"",
        why.replace('"', "'")
    )
}

fn header(r: &Reply, name: &str) -> Option<String> {
    r.headers.get(name).map(|v| v.to_str().unwrap().to_owned())
}

fn init_body() -> Value {
    json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"identity","version":"0"}}})
}

/// POST an `initialize` with the given `Authorization` header (none if `None`).
async fn init_with(url: &str, authorization: Option<&str>) -> Reply {
    let c = Http::new(url);
    let body = Some(init_body().to_string());
    match authorization {
        Some(a) => c.raw(Method::POST, body, &[("authorization", a)]).await,
        None => c.raw(Method::POST, body, &[]).await,
    }
}

fn assert_no_leak(what: &str, haystack: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!haystack.contains(s), "{what} contains a caller credential ({}…)", &s[..s.len().min(24)]);
    }
}

const HS_ISSUER: &str = "https://hs.example.com";
const HS_SECRET: &str = "0123456789abcdef0123456789abcdef-identity";

/// A gateway with `[auth]` (plus `[auth.hs256]` for `HS_ISSUER` when `hs256`), the raw stdio upstream and topics
/// `admin` (scope `mcp:admin`) and `public`.
fn auth_gateway(idp: &Idp, hs256: bool, env: &[(&str, &str)]) -> Gateway {
    let m = marker("identity");
    let hs = if hs256 {
        format!("[auth.hs256]\nissuer = \"{HS_ISSUER}\"\nsecret_env = \"PC_IDENTITY_HS\"\n\n")
    } else {
        String::new()
    };
    let mut env = env.to_vec();
    env.push(("PC_IDENTITY_HS", HS_SECRET));
    let body = format!(
        "{}{hs}{}\n[[topic]]\nname = \"admin\"\ntools = [\"raw__echo\", \"raw__whoami\"]\nscopes = [\"mcp:admin\"]\n\n\
         [[topic]]\nname = \"public\"\ntools = [\"raw__echo\"]\n",
        idp.auth_section(),
        raw_upstream("raw", &m, "timeout = \"10s\"")
    );
    Gateway::start_env("", &body, &env)
}

// ----------------------------------------------------------------------------------------------------- tests

/// Every way an `Authorization` header can be wrong, each with the exact status, `WWW-Authenticate` and body;
/// then insufficient scope (403) and the valid JWT / API-key cases.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn authentication_matrix() {
    let idp = idp();
    let gw = auth_gateway(&idp, true, &[("PORTCULLIS_LOG", "debug")]);
    let mcp = gw.mcp(None);
    let md_mcp = format!("{MD}/mcp");

    // HS256 signed with the RSA public key (PEM) as the HMAC secret: algorithm confusion. The gateway has
    // [auth.hs256] for another issuer, the dangerous configuration: the JWKS issuer's key must never be an HMAC
    // secret, and the HS256 issuer's secret is the only one used for HS256.
    let hs = |c: &Value, secret: &[u8]| {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("rsa1".into());
        jsonwebtoken::encode(&h, c, &EncodingKey::from_secret(secret)).unwrap()
    };
    let confusion = hs(&claims("mallory"), &read_key("rsa_pub.pem"));
    let confusion_hs_iss = hs(&with(claims("mallory"), "iss", json!(HS_ISSUER)), &read_key("rsa_pub.pem"));
    let valid_hs = hs(&with(claims("hank"), "iss", json!(HS_ISSUER)), HS_SECRET.as_bytes());
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims("mallory").to_string())
    );
    let cases: Vec<(&str, String, &str)> = vec![
        ("basic scheme", "Basic dXNlcjpwYXNz".into(), "malformed Authorization header (expected `Bearer <token>`)"),
        ("empty bearer", "Bearer".into(), "malformed Authorization header (expected `Bearer <token>`)"),
        (
            "not a JWT",
            "Bearer not-a-jwt".into(),
            "malformed JWT (expected three base64url parts: header.payload.signature)",
        ),
        ("alg none", format!("Bearer {alg_none}"), "unsigned tokens (alg \"none\") are not accepted"),
        (
            "HS256 confusion (JWKS issuer)",
            format!("Bearer {confusion}"),
            "HS256 tokens are accepted only from the configured HS256 issuer",
        ),
        ("HS256 confusion (HS256 issuer)", format!("Bearer {confusion_hs_iss}"), "bad signature"),
        ("bad signature", format!("Bearer {}", rsa2().sign_kid("rsa1", &claims("mallory"))), "bad signature"),
        (
            "wrong iss",
            format!("Bearer {}", rsa().sign(&with(claims("mallory"), "iss", json!("https://evil.example")))),
            "the token's issuer (iss) is not trusted by this gateway",
        ),
        (
            "wrong aud",
            format!("Bearer {}", ec().sign(&with(claims("mallory"), "aud", json!("https://other.example/mcp")))),
            "the token's audience (aud) must include https://mcp.example.com/mcp",
        ),
        (
            "expired",
            format!("Bearer {}", ed().sign(&with(claims("alice"), "exp", json!(now() - 3600)))),
            "the token has expired",
        ),
        (
            "nbf in the future",
            format!("Bearer {}", rsa().sign(&with(claims("alice"), "nbf", json!(now() + 3600)))),
            "the token is not valid yet (nbf is in the future)",
        ),
        (
            "unknown kid",
            format!("Bearer {}", rsa2().sign_kid("rotated-away", &claims("alice"))),
            "the token is signed with a key the issuer does not publish",
        ),
        ("unknown API key", "Bearer pck_never-issued-key".into(), "unknown or revoked API key"),
        (
            "revoked API key (one char off a valid one)",
            format!("Bearer {}x", idp.api_key),
            "unknown or revoked API key",
        ),
    ];

    // No token at all: bare challenge (no error=), so the client starts OAuth discovery.
    let r = init_with(&mcp, None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(
        header(&r, "www-authenticate").as_deref(),
        Some(format!("Bearer resource_metadata=\"{md_mcp}\"").as_str())
    );
    assert_eq!(r.json(), body_401("no Authorization header; send `Authorization: Bearer <token>`"));
    assert!(r.headers.get("mcp-session-id").is_none());
    // The topic endpoint points at its own metadata.
    let r = init_with(&gw.mcp(Some("admin")), None).await;
    assert_eq!(r.status, 401);
    assert_eq!(header(&r, "www-authenticate").unwrap(), format!("Bearer resource_metadata=\"{MD}/mcp/admin\""));

    let mut presented = Vec::new();
    for (name, authz, why) in &cases {
        let r = init_with(&mcp, Some(authz)).await;
        assert_eq!(r.status, 401, "{name}: {}", r.body);
        assert_eq!(header(&r, "www-authenticate").unwrap(), www_invalid(&md_mcp, why), "{name}");
        assert_eq!(r.json(), body_401(&format!("invalid token: {why}")), "{name}");
        assert!(r.headers.get("mcp-session-id").is_none(), "{name}");
        let token = authz.split_once(' ').map_or(authz.as_str(), |(_, t)| t);
        if token.len() > 8 {
            assert!(!r.body.contains(token), "{name}: the body echoes the token");
            presented.push(token.to_owned());
        }
    }

    // GET and DELETE are authenticated too (before any session lookup).
    let c = Http::new(&mcp);
    let r = c.raw(Method::GET, None, &[("accept", "text/event-stream"), ("mcp-session-id", "deadbeef")]).await;
    assert_eq!(
        (r.status, header(&r, "www-authenticate")),
        (401, Some(format!("Bearer resource_metadata=\"{md_mcp}\"")))
    );
    let expired = ed().sign(&with(claims("alice"), "exp", json!(now() - 3600)));
    let r = c
        .raw(Method::DELETE, None, &[("mcp-session-id", "deadbeef"), ("authorization", &format!("Bearer {expired}"))])
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(header(&r, "www-authenticate").unwrap(), www_invalid(&md_mcp, "the token has expired"));

    // Insufficient scope: a valid token without `mcp:admin` on the admin topic → 403.
    let plain = rsa().sign(&with(claims("alice"), "scope", json!("mcp:tools")));
    let r = init_with(&gw.mcp(Some("admin")), Some(&format!("Bearer {plain}"))).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        header(&r, "www-authenticate").unwrap(),
        format!("Bearer error=\"insufficient_scope\", scope=\"mcp:admin\", resource_metadata=\"{MD}/mcp/admin\"")
    );
    assert_eq!(
        r.json(),
        json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000,
            "message": "Forbidden: this endpoint needs scope \"mcp:admin\"; request a token with it"}})
    );
    // ... while the same token is fine on /mcp and on a topic without scopes.
    for url in [mcp.clone(), gw.mcp(Some("public"))] {
        let r = init_with(&url, Some(&format!("Bearer {plain}"))).await;
        assert_eq!(r.status, 200, "{url}: {}", r.body);
    }
    presented.push(plain);

    // Valid: RS256, ES256, EdDSA JWTs (`scp` array and `scope` string both count) and the API key.
    let admin_scoped = [
        rsa().sign(&with(claims("alice"), "scope", json!("mcp:tools mcp:admin"))),
        ec().sign(&with(claims("bob"), "scp", json!(["mcp:admin"]))),
        ed().sign(&with(claims("carol"), "scope", json!("mcp:admin"))),
        hs(&with(with(claims("hank"), "iss", json!(HS_ISSUER)), "scope", json!("mcp:admin")), HS_SECRET.as_bytes()),
        idp.api_key.clone(),
    ];
    for token in &admin_scoped {
        for topic in [None, Some("admin")] {
            let mut c = Http::bearer(&gw.mcp(topic), token);
            let init = c.initialize(json!({})).await;
            assert_eq!(init["result"]["serverInfo"]["name"], "portcullis");
            let r = c.call("raw__echo", json!({"text": "hi"})).await;
            assert_eq!(text_of(&r), "hi", "{r}");
        }
        presented.push(token.clone());
    }
    let r = init_with(&mcp, Some(&format!("Bearer {valid_hs}"))).await;
    assert_eq!(r.status, 200, "HS256 from its configured issuer: {}", r.body);
    presented.push(valid_hs);
    // `bearer` is case-insensitive (RFC 6750 §2.1).
    let r = init_with(&mcp, Some(&format!("bEaReR {}", admin_scoped[0]))).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Nothing presented (valid or not) ends up in the debug log.
    let refs: Vec<&str> = presented.iter().map(String::as_str).collect();
    assert_no_leak("the gateway log", &gw.log_text(), &refs);
}

/// RFC 9728 protected-resource metadata: root, /mcp and per topic, unauthenticated; unknown topic → 404; the
/// `resource_metadata` URLs of the challenges resolve to these documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn protected_resource_metadata() {
    let idp = idp();
    let gw = auth_gateway(&idp, false, &[]);
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        let url = format!("{}{path}", gw.url);
        async move {
            let r = http.get(&url).send().await.unwrap();
            let status = r.status().as_u16();
            let ct = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
            (status, ct, r.text().await.unwrap())
        }
    };
    let doc = |resource: &str| {
        json!({
            "resource": resource,
            "authorization_servers": [ISSUER],
            "scopes_supported": ["mcp:tools", "mcp:admin"],
            "bearer_methods_supported": ["header"],
            "resource_name": "Portcullis MCP gateway",
        })
    };
    for (path, resource) in [
        ("/.well-known/oauth-protected-resource".to_owned(), RESOURCE.to_owned()),
        ("/.well-known/oauth-protected-resource/mcp".to_owned(), RESOURCE.to_owned()),
        ("/.well-known/oauth-protected-resource/mcp/admin".to_owned(), format!("{RESOURCE}/admin")),
        ("/.well-known/oauth-protected-resource/mcp/public".to_owned(), format!("{RESOURCE}/public")),
    ] {
        let (status, ct, body) = get(path.clone()).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(ct.as_deref(), Some("application/json"), "{path}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v, doc(&resource), "{path}");
    }
    for path in ["/.well-known/oauth-protected-resource/mcp/nope", "/.well-known/oauth-protected-resource/mcp/admin/x"]
    {
        let (status, _, body) = get(path.to_owned()).await;
        assert_eq!(status, 404, "{path}: {body}");
    }

    // The challenge's resource_metadata URL names a document this gateway serves, describing that endpoint.
    for (topic, resource) in [(None, RESOURCE.to_owned()), (Some("admin"), format!("{RESOURCE}/admin"))] {
        let r = init_with(&gw.mcp(topic), None).await;
        let www = header(&r, "www-authenticate").unwrap();
        let url = www.split("resource_metadata=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
        let path = url.strip_prefix("https://mcp.example.com").expect("origin of auth.resource").to_owned();
        let (status, _, body) = get(path).await;
        assert_eq!(status, 200, "{url}");
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["resource"], json!(resource));
    }
}

/// A session belongs to the principal that created it: anyone else presenting its id gets the same 404 as for
/// an unknown session (POST, GET, DELETE), and the session keeps working for its owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_hijack_is_404() {
    let idp = idp();
    let gw = auth_gateway(&idp, false, &[]);
    let mcp = gw.mcp(None);
    let alice_token = rsa().sign(&claims("alice"));
    let mut alice = Http::bearer(&mcp, &alice_token);
    alice.initialize(json!({})).await;
    let sid = alice.session.clone().unwrap();

    // The reference: an unknown session id, presented by an authenticated caller.
    let mut probe = Http::bearer(&mcp, &ec().sign(&claims("bob")));
    probe.session = Some("0123456789abcdef0123456789abcdef".into());
    let unknown = probe.post(&json!({"jsonrpc":"2.0","id":7,"method":"tools/list"})).await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);

    let intruders = [
        ("bob (JWT, same issuer)", format!("Bearer {}", ec().sign(&claims("bob")))),
        ("an API-key caller", format!("Bearer {}", idp.api_key)),
    ];
    for (who, authz) in &intruders {
        let mut c = Http::with_authorization(&mcp, authz);
        c.session = Some(sid.clone());
        let r = c.post(&json!({"jsonrpc":"2.0","id":7,"method":"tools/list"})).await;
        assert_eq!((r.status, r.body.as_str()), (404, unknown.body.as_str()), "{who}: POST");
        let r = c.post(&json!({"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"raw__echo","arguments":{"text":"x"}}})).await;
        assert_eq!(r.status, 404, "{who}: POST tools/call: {}", r.body);
        let r = c.post(&json!({"jsonrpc":"2.0","method":"notifications/initialized"})).await;
        assert_eq!(r.status, 404, "{who}: POST notification: {}", r.body);
        let r = c.raw(Method::GET, None, &[("accept", "text/event-stream")]).await;
        assert_eq!(r.status, 404, "{who}: GET: {}", r.body);
        let r = c.raw(Method::DELETE, None, &[]).await;
        assert_eq!((r.status, r.body.as_str()), (404, unknown.body.as_str()), "{who}: DELETE");
    }
    // Alice's session on another endpoint is not a key either.
    let mut other = Http::bearer(&gw.mcp(Some("public")), &alice_token);
    other.session = Some(sid.clone());
    assert_eq!(other.post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"})).await.status, 404);

    // Still alive for alice, who also may refresh her token (same issuer + subject).
    let r = alice.request("tools/list", json!({})).await;
    assert!(r["result"]["tools"].as_array().unwrap().iter().any(|t| t["name"] == "raw__echo"), "{r}");
    assert_eq!(text_of(&alice.call("raw__echo", json!({"text": "still mine"})).await), "still mine");
    let mut refreshed = Http::bearer(&mcp, &ed().sign(&claims("alice")));
    refreshed.session = Some(sid.clone());
    let r = refreshed.post(&json!({"jsonrpc":"2.0","id":99,"method":"ping"})).await;
    assert_eq!(r.status, 200, "a refreshed token of the same subject keeps the session: {}", r.body);
    let get = alice
        .client
        .get(&mcp)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &sid)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200, "owner's GET stream");
    drop(get);
    assert_eq!(alice.delete().await, 200);
    let r = alice.post(&json!({"jsonrpc":"2.0","id":3,"method":"tools/list"})).await;
    assert_eq!(r.status, 404, "ended: {}", r.body);

    // Without [auth.hs256], HS256 signed with the RSA public key is refused outright.
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("rsa1".into());
    let confusion =
        jsonwebtoken::encode(&h, &claims("mallory"), &EncodingKey::from_secret(&read_key("rsa_pub.pem"))).unwrap();
    let r = init_with(&mcp, Some(&format!("Bearer {confusion}"))).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        header(&r, "www-authenticate").unwrap(),
        www_invalid(&format!("{MD}/mcp"), "HS256 tokens are not accepted by this gateway")
    );

    // The legacy HTTP+SSE transport binds its sessions the same way.
    legacy_sse_binding(&gw, &idp).await;
}

/// Read SSE events from a streaming response until one satisfies `pred`.
async fn next_event(resp: &mut reqwest::Response, buf: &mut String, pred: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(i) = buf.find("\n\n") {
            let ev: String = buf.drain(..i + 2).collect();
            if pred(&ev) {
                return ev;
            }
            continue;
        }
        let chunk = tokio::time::timeout_at(deadline, resp.chunk()).await.expect("SSE event in time").unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk.expect("stream open")));
    }
}

async fn legacy_sse_binding(gw: &Gateway, idp: &Idp) {
    let http = reqwest::Client::new();
    let r = http.get(format!("{}/sse", gw.url)).header("accept", "text/event-stream").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers().get("www-authenticate").unwrap().to_str().unwrap(),
        format!("Bearer resource_metadata=\"{MD}/mcp\"")
    );
    let alice = format!("Bearer {}", rsa().sign(&claims("alice")));
    let mut stream = http
        .get(format!("{}/sse", gw.url))
        .header("accept", "text/event-stream")
        .header("authorization", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut buf = String::new();
    let ev = next_event(&mut stream, &mut buf, |e| e.contains("event: endpoint")).await;
    let path = ev.lines().find_map(|l| l.strip_prefix("data:")).unwrap().trim().to_owned();
    let post = |authz: String, body: Value| {
        let http = http.clone();
        let url = format!("{}{path}", gw.url);
        async move {
            let r = http.post(url).header("authorization", authz).header("content-type", "application/json");
            let r = r.body(body.to_string()).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let init = init_body();
    for intruder in [format!("Bearer {}", ec().sign(&claims("bob"))), format!("Bearer {}", idp.api_key)] {
        let (status, body) = post(intruder, init.clone()).await;
        assert_eq!(status, 404, "another principal on alice's legacy session: {body}");
    }
    let (status, body) = post(alice.clone(), init).await;
    assert_eq!(status, 202, "{body}");
    let ev = next_event(&mut stream, &mut buf, |e| e.contains("event: message")).await;
    assert!(ev.contains("\"serverInfo\""), "{ev}");
}

/// RFC 8693 token exchange against a real token endpoint: the upstream sees only the exchanged token; one exchange
/// per (caller token, tool), concurrent calls coalesce, a refused exchange fails the call before the upstream is
/// contacted, API-key callers get a clear error, and no caller credential leaks (debug log included).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_exchange_e2e() {
    let idp = idp();
    let fake = fake();
    let cred = |endpoint: &str| {
        format!(
            "credential = {{ kind = \"token_exchange\", token_endpoint = \"{}{endpoint}\", client_id = \"{XCHG_CLIENT}\", \
             client_secret_env = \"PC_IDENTITY_XSECRET\", audience = \"{XCHG_AUDIENCE}\" }}",
            fake.base
        )
    };
    let body = format!(
        "{}[[upstream]]\nname = \"x\"\nurl = \"{base}/mcp-x\"\ntimeout = \"10s\"\n{}\n\n\
         [[upstream]]\nname = \"xbad\"\nurl = \"{base}/mcp-xbad\"\ntimeout = \"10s\"\n{}\n",
        idp.auth_section(),
        cred("/token"),
        cred("/token-bad"),
        base = fake.base
    );
    let gw = Gateway::start_env("", &body, &[("PORTCULLIS_LOG", "debug"), ("PC_IDENTITY_XSECRET", XCHG_SECRET)]);
    let mcp = gw.mcp(None);
    let t1 = rsa().sign(&with(claims("alice"), "azp", json!("agent-7")));

    // N calls of one tool → one exchange; the upstream sees the exchanged token, never the caller's.
    let mut alice = Http::bearer(&mcp, &t1);
    alice.initialize(json!({})).await;
    let mut seen_auth = Vec::new();
    for _ in 0..3 {
        let saw = upstream_saw(&alice.call("x__alpha", json!({})).await);
        assert_eq!(saw["tool"], "alpha");
        seen_auth.push(saw["authorization"].as_str().unwrap().to_owned());
    }
    assert_eq!(fake.problems(), Vec::<String>::new(), "token endpoint validation");
    let issued = fake.issued();
    assert_eq!(issued.len(), 1, "3 calls, one exchange: {issued:?}");
    let (scope, access_alpha, subject) = issued[0].clone();
    assert_eq!(scope, "tools:alpha");
    assert_eq!(subject, t1, "subject_token is the caller's JWT");
    for a in &seen_auth {
        assert_eq!(a, &format!("Bearer {access_alpha}"));
    }
    let calls = fake.calls("/mcp-x");
    assert_eq!(calls.len(), 3);
    for c in &calls {
        assert_eq!(c.header("authorization"), Some(format!("Bearer {access_alpha}").as_str()));
        assert_eq!(c.headers.iter().filter(|(k, _)| k == "authorization").count(), 1, "one Authorization header");
    }

    // Another tool → a second exchange, narrowed to that tool.
    let saw = upstream_saw(&alice.call("x__beta", json!({})).await);
    let issued = fake.issued();
    assert_eq!(issued.len(), 2, "{issued:?}");
    assert_eq!(issued[1].0, "tools:beta");
    assert_eq!(saw["authorization"], json!(format!("Bearer {}", issued[1].1)));
    // And alpha is still cached.
    upstream_saw(&alice.call("x__alpha", json!({})).await);
    assert_eq!(fake.issued().len(), 2);

    // Concurrent calls with a new caller token coalesce into one exchange.
    let t2 = rsa().sign(&claims("dave"));
    let mut dave = Http::bearer(&mcp, &t2);
    dave.initialize(json!({})).await;
    let dave = Arc::new(dave);
    let futs = (0..8).map(|i| {
        let d = dave.clone();
        async move {
            let (msgs, _) =
                d.request_all(json!(100 + i), "tools/call", json!({"name": "x__alpha", "arguments": {}})).await;
            msgs.into_iter().find(|m| m["id"] == json!(100 + i)).unwrap()
        }
    });
    let results = futures::future::join_all(futs).await;
    let from_t2: Vec<_> = fake.issued().into_iter().filter(|(_, _, s)| *s == t2).collect();
    assert_eq!(from_t2.len(), 1, "8 concurrent calls, one exchange: {from_t2:?}");
    for r in &results {
        assert_eq!(upstream_saw(r)["authorization"], json!(format!("Bearer {}", from_t2[0].1)));
    }
    assert_eq!(fake.token_seen("/token").len(), 3, "no other request reached the token endpoint");

    // Refused exchange (400 invalid_grant): clear JSON-RPC error, nothing reaches the upstream; the refusal is
    // remembered (no retry storm).
    let before = fake.upstream_seen("/mcp-xbad").len();
    for _ in 0..2 {
        let r = alice.call("xbad__alpha", json!({})).await;
        assert_eq!(error_code(&r), -32603, "{r}");
        let msg = r["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with("cannot obtain a credential for upstream \"xbad\""), "{msg}");
        assert!(msg.contains("HTTP 400 invalid_grant"), "{msg}");
        assert!(msg.contains("the subject token was revoked"), "{msg}");
        assert_eq!(r["error"]["data"]["upstream"], "xbad", "{r}");
        assert!(!r.to_string().contains(&t1));
    }
    assert_eq!(fake.upstream_seen("/mcp-xbad").len(), before, "the upstream received nothing");
    assert!(fake.calls("/mcp-xbad").is_empty());
    assert_eq!(fake.token_seen("/token-bad").len(), 1, "the 4xx is negatively cached");

    // An API-key caller has no token to exchange: clear error, no exchange, nothing upstream.
    let mut bot = Http::bearer(&mcp, &idp.api_key);
    bot.initialize(json!({})).await;
    let calls_before = fake.calls("/mcp-x").len();
    let r = bot.call("x__alpha", json!({})).await;
    assert_eq!(error_code(&r), -32603, "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("cannot obtain a credential for upstream \"x\""), "{msg}");
    assert!(msg.contains("needs a caller authenticated with a JWT"), "{msg}");
    assert_eq!(fake.calls("/mcp-x").len(), calls_before);
    assert_eq!(fake.token_seen("/token").len(), 3);

    // Never leak: no caller credential in anything an upstream received, nor in the debug log.
    let secrets = [t1.as_str(), t2.as_str(), idp.api_key.as_str()];
    assert_no_leak("the upstream requests", &fake.upstream_text(), &secrets);
    assert_no_leak("the gateway log", &gw.log_text(), &secrets);
    assert!(gw.log_text().contains("DEBUG"), "ran at debug level");
}

/// Fetch the gateway's JWKS and verify a minted token: signature, `iss`, `aud`, `exp`. Returns (header, claims).
fn verify_minted(jwks: &Value, token: &str, aud: &str) -> (jsonwebtoken::Header, Value) {
    let h = jsonwebtoken::decode_header(token).unwrap();
    assert!(matches!(h.alg, Algorithm::ES256 | Algorithm::EdDSA), "{:?}", h.alg);
    let kid = h.kid.clone().expect("minted tokens carry a kid");
    let jwk = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == json!(kid)).expect("kid is published");
    let jwk: Jwk = serde_json::from_value(jwk.clone()).unwrap();
    let key = DecodingKey::from_jwk(&jwk).unwrap();
    let mut v = Validation::new(h.alg);
    v.leeway = 0;
    v.set_issuer(&[GW_ISSUER]);
    v.set_audience(&[aud]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Value>(token, &key, &v).unwrap_or_else(|e| panic!("minted token: {e}"));
    (h, data.claims)
}

fn check_obo_claims(c: &Value, tool: &str, max_ttl: u64) {
    assert_eq!(c["sub"], "alice", "{c}");
    assert_eq!(
        c["act"],
        json!({"sub": "agent-7", "act": {"sub": "orchestrator", "act": {"sub": "root-agent"}}}),
        "agent outermost, then the caller's prior chain: {c}"
    );
    assert_eq!(c["scope"], json!(format!("tools:{tool}")), "{c}");
    let (iat, exp) = (c["iat"].as_u64().unwrap(), c["exp"].as_u64().unwrap());
    assert!(exp > iat && exp - iat <= max_ttl && max_ttl <= 300, "{c}");
    assert!(iat + 5 >= now() && iat <= now() + 1, "{c}");
    assert!(c["jti"].as_str().is_some_and(|j| j.len() >= 16), "{c}");
}

/// `mint_obo`: the HTTP upstream receives a gateway-signed JWT it can verify with `/.well-known/jwks.json`
/// (sub = user, nested act = agent chain, aud = upstream, scope = tool, ≤ 5 min, fresh jti); a stdio upstream
/// gets it in `params._meta` under the configured key; the caller's token never leaks (debug log included).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mint_obo_e2e() {
    let idp = idp();
    let fake = fake();
    let keys = keys_dir();
    let m = marker("identity-mint");
    let mint = |key: &str, alg: &str, ttl: &str| {
        format!(
            "credential = {{ kind = \"mint_obo\", key_file = \"{}\", alg = \"{alg}\", issuer = \"{GW_ISSUER}\", ttl = \"{ttl}\" }}",
            keys.join(key).display()
        )
    };
    let body = format!(
        "{}[[upstream]]\nname = \"m\"\nurl = \"{}/mcp-m\"\ntimeout = \"10s\"\n{}\n\n{}{}",
        idp.auth_section(),
        fake.base,
        mint("ec.pem", "ES256", "5m"),
        raw_upstream("raw", &m, &mint("ed.pem", "EdDSA", "2m")),
        raw_upstream(
            "raw2",
            &m,
            &format!("credential_meta_key = \"com.example/obo\"\n{}", mint("ed.pem", "EdDSA", "30s"))
        ),
    );
    let gw = Gateway::start_env("", &body, &[("PORTCULLIS_LOG", "debug")]);
    let caller = ed().sign(&json!({
        "iss": ISSUER, "aud": RESOURCE, "sub": "alice", "iat": now(), "exp": now() + 300, "jti": "caller-jti",
        "azp": "agent-7", "act": {"sub": "orchestrator", "act": {"sub": "root-agent"}},
    }));
    let mut c = Http::bearer(&gw.mcp(None), &caller);
    c.initialize(json!({})).await;

    let jwks: Value = reqwest::get(format!("{}/.well-known/jwks.json", gw.url)).await.unwrap().json().await.unwrap();
    let published = jwks["keys"].as_array().unwrap();
    assert!(published.iter().all(|k| k.get("d").is_none()), "private key material in the JWKS: {jwks}");
    assert!(published.iter().any(|k| k["kty"] == "EC") && published.iter().any(|k| k["kty"] == "OKP"), "{jwks}");

    // HTTP upstream: Authorization header.
    // One token per (caller, tool) while it is fresh (minting is cached); different tools never share one.
    let mut jti_of: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
    let mut jtis = HashSet::new();
    for tool in ["alpha", "alpha", "beta", "alpha"] {
        let saw = upstream_saw(&c.call(&format!("m__{tool}"), json!({})).await);
        let authz = saw["authorization"].as_str().unwrap();
        let token = authz.strip_prefix("Bearer ").expect("bearer");
        assert_ne!(token, caller);
        let (h, claims) = verify_minted(&jwks, token, &format!("{}/mcp-m", fake.base));
        assert_eq!(h.alg, Algorithm::ES256);
        assert_eq!(h.typ.as_deref(), Some("at+jwt"));
        check_obo_claims(&claims, tool, 300);
        let jti = claims["jti"].as_str().unwrap().to_owned();
        match jti_of.get(tool) {
            Some(prev) => assert_eq!(prev, &jti, "a fresh token for the same tool is reused"),
            None => {
                assert!(jtis.insert(jti.clone()), "jti shared across tools: {claims}");
                jti_of.insert(tool, jti);
            }
        }
    }
    assert_eq!(fake.calls("/mcp-m").len(), 4);
    // The gateway's own handshake carries a token minted for the gateway itself, never a user's.
    let init = fake.upstream_seen("/mcp-m").into_iter().find(|s| s.rpc_method() == "initialize").unwrap();
    let authz = init.header("authorization").expect("the handshake carries the gateway's service token");
    let (_, claims) = verify_minted(&jwks, authz.strip_prefix("Bearer ").unwrap(), &format!("{}/mcp-m", fake.base));
    assert_eq!(claims["sub"], "portcullis", "{claims}");
    assert!(claims.get("act").is_none() && claims.get("scope").is_none(), "no user, no tool: {claims}");

    // stdio upstream: the bare token in params._meta["io.portcullis/credential"] (default key) / a custom key.
    for (tool, key, aud, ttl) in
        [("raw__whoami", "io.portcullis/credential", "raw", 120), ("raw2__whoami", "com.example/obo", "raw2", 30)]
    {
        let mut first_jti: Option<String> = None;
        for _ in 0..2 {
            let r = c.call(tool, json!({})).await;
            let text = text_of(&r);
            assert!(!text.contains(&caller), "{tool}: the caller's token reached the stdio upstream");
            let params: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {r}"));
            let token = params["_meta"][key].as_str().unwrap_or_else(|| panic!("no _meta[{key:?}]: {params}"));
            let (h, claims) = verify_minted(&jwks, token, aud);
            assert_eq!(h.alg, Algorithm::EdDSA);
            check_obo_claims(&claims, "whoami", ttl);
            let jti = claims["jti"].as_str().unwrap().to_owned();
            match &first_jti {
                // Second call within the token's first half-life: the cached token.
                Some(prev) => assert_eq!(prev, &jti),
                None => {
                    assert!(jtis.insert(jti.clone()), "jti shared across upstreams: {claims}");
                    first_jti = Some(jti);
                }
            }
            if key != "io.portcullis/credential" {
                assert!(params["_meta"].get("io.portcullis/credential").is_none(), "{params}");
            }
        }
    }

    // A client cannot plant its own credential in _meta: the gateway's minted token replaces it, other _meta
    // entries pass through.
    let r = c
        .request(
            "tools/call",
            json!({"name": "raw__whoami", "arguments": {},
                   "_meta": {"io.portcullis/credential": "forged", "com.example/trace": "t1"}}),
        )
        .await;
    let params: Value = serde_json::from_str(&text_of(&r)).unwrap_or_else(|e| panic!("{e}: {r}"));
    assert_eq!(params["_meta"]["com.example/trace"], "t1", "{params}");
    let token = params["_meta"]["io.portcullis/credential"].as_str().unwrap();
    assert_ne!(token, "forged");
    check_obo_claims(&verify_minted(&jwks, token, "raw").1, "whoami", 120);

    assert_no_leak("the upstream requests", &fake.upstream_text(), &[&caller]);
    assert_no_leak("the gateway log", &gw.log_text(), &[&caller]);
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin()).args(args).current_dir(repo_root()).env("NO_COLOR", "1").output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        strip_ansi(&String::from_utf8_lossy(&out.stderr)),
    )
}

/// `keys signing`, `token mint` and `keys new` on a copy of `examples/jwt.toml`: the minted dev token and the new
/// API key both authenticate against `portcullis serve` on that config, with the example's topic scope enforced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_token_mint_and_keys_new() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("jwt.toml");
    let example = std::fs::read_to_string(repo_root().join("examples/jwt.toml")).unwrap();
    let everything = repo_root().join("tests/peers/node_modules/.bin/mcp-server-everything");
    let mut text = example.clone();
    for (from, to) in [
        ("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"".to_owned()),
        ("admin_listen = \"127.0.0.1:9090\"", "admin_listen = \"127.0.0.1:0\"".to_owned()),
        (
            "command = [\"npx\", \"-y\", \"@modelcontextprotocol/server-everything@2026.8.31\", \"stdio\"]",
            format!("command = [\"node\", \"{}\", \"stdio\"]", everything.display()),
        ),
    ] {
        assert!(text.contains(from), "examples/jwt.toml changed: no {from:?}");
        text = text.replace(from, &to);
    }

    // keys signing: the mint_obo key the example's upstream needs.
    let obo = dir.path().join("var/obo-signing-key.pem");
    let (ok, out, err) = run(&["keys", "signing", "--out", obo.to_str().unwrap()]);
    assert!(ok, "keys signing: {out}{err}");
    assert!(obo.exists() && dir.path().join("var/obo-signing-key.pem.jwks.json").exists(), "{out}");

    // token mint: creates the dev key + JWKS on first use, prints a token for the configured issuer/audience.
    std::fs::write(&cfg, &text).unwrap();
    let mint = |sub: &str, scopes: &str| {
        let (ok, out, err) = run(&[
            "token",
            "mint",
            "-c",
            cfg.to_str().unwrap(),
            "--sub",
            sub,
            "--roles",
            "support,dev",
            "--scopes",
            scopes,
            "--ttl",
            "1h",
        ]);
        assert!(ok, "token mint: {out}{err}");
        out.trim().to_owned()
    };
    let alice = mint("alice", "mcp:support");
    assert!(dir.path().join("var/dev-signing-key.pem").exists() && dir.path().join("var/dev-jwks.json").exists());
    let c = payload(&alice);
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["iss"], "http://127.0.0.1:8080/dev-issuer");
    assert_eq!(c["aud"], "http://127.0.0.1:8080/mcp");
    assert_eq!(c["roles"], json!(["support", "dev"]));
    assert_eq!(c["scope"], "mcp:support");
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 3600);
    let bob = mint("bob", "");
    assert!(payload(&bob).get("scope").is_none());

    // keys new: a fresh key plus config lines holding only its hash.
    let (ok, out, err) = run(&["keys", "new", "--id", "ci", "--subject", "svc-ci"]);
    assert!(ok, "keys new: {out}{err}");
    let key = out.lines().map(str::trim).find(|l| l.starts_with("pck_")).expect("a pck_ key").to_owned();
    let lines = &out[out.find("[[auth.api_key]]").expect("config lines")..];
    assert!(!lines.contains(&key), "the config lines must not contain the key");
    assert!(lines.contains(&format!("sha256 = \"{}\"", sha256_hex(&key))), "{lines}");
    text.push('\n');
    text.push_str(lines);
    std::fs::write(&cfg, &text).unwrap();

    let gw = Gateway::start_file(&cfg, &[]);
    let mut a = Http::bearer(&gw.mcp(None), &alice);
    a.initialize(json!({})).await;
    let r = a.call("everything__echo", json!({"message": "hello"})).await;
    assert!(text_of(&r).contains("hello"), "{r}");
    let mut a = Http::bearer(&gw.mcp(Some("support")), &alice);
    a.initialize(json!({})).await;
    let r = a.call("everything__get-sum", json!({"a": 2, "b": 3})).await;
    assert!(text_of(&r).contains('5'), "{r}");

    let r = init_with(&gw.mcp(Some("support")), Some(&format!("Bearer {bob}"))).await;
    assert_eq!(r.status, 403, "bob's token has no mcp:support: {}", r.body);
    assert!(header(&r, "www-authenticate").unwrap().contains("error=\"insufficient_scope\", scope=\"mcp:support\""));

    let mut k = Http::bearer(&gw.mcp(None), &key);
    k.initialize(json!({})).await;
    let r = k.request("tools/list", json!({})).await;
    assert!(r["result"]["tools"].as_array().unwrap().iter().any(|t| t["name"] == "everything__echo"), "{r}");

    let r = init_with(&gw.mcp(None), None).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        header(&r, "www-authenticate").unwrap(),
        "Bearer resource_metadata=\"http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp\""
    );
}
