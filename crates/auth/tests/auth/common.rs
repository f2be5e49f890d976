//! Shared fixtures: fixed test keys (tests/keys, generated once with openssl), JWKS files, configs, tokens.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis_auth::{AuthError, Authenticator};
use portcullis_config::{AuthConfig, JwtConfig};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const ISSUER: &str = "https://idp.example.com";
pub const RESOURCE: &str = "https://mcp.example.com/mcp";

pub fn key_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys").join(name)
}

pub fn read_key(name: &str) -> Vec<u8> {
    std::fs::read(key_path(name)).expect("test key")
}

pub struct Signer {
    pub key: EncodingKey,
    pub alg: Algorithm,
    pub kid: String,
}

impl Signer {
    /// Public JWK with this signer's kid.
    pub fn jwk(&self) -> Value {
        let mut v = serde_json::to_value(Jwk::from_encoding_key(&self.key, self.alg).expect("jwk")).expect("json");
        v["kid"] = Value::from(self.kid.clone());
        v
    }

    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&h, claims, &self.key).expect("sign")
    }
}

pub fn rsa() -> Signer {
    Signer {
        key: EncodingKey::from_rsa_pem(&read_key("rsa.pem")).expect("rsa"),
        alg: Algorithm::RS256,
        kid: "rsa1".into(),
    }
}
pub fn rsa2() -> Signer {
    Signer {
        key: EncodingKey::from_rsa_pem(&read_key("rsa2.pem")).expect("rsa"),
        alg: Algorithm::RS256,
        kid: "rsa2".into(),
    }
}
pub fn ec() -> Signer {
    Signer { key: EncodingKey::from_ec_pem(&read_key("ec.pem")).expect("ec"), alg: Algorithm::ES256, kid: "ec1".into() }
}
pub fn ed() -> Signer {
    Signer { key: EncodingKey::from_ed_pem(&read_key("ed.pem")).expect("ed"), alg: Algorithm::EdDSA, kid: "ed1".into() }
}

pub fn write_jwks(path: &Path, keys: &[Value]) {
    std::fs::write(path, json!({ "keys": keys }).to_string()).expect("write jwks");
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

/// Valid claims for the default issuer and resource, expiring in 5 minutes.
pub fn claims(sub: &str) -> Value {
    json!({ "iss": ISSUER, "aud": RESOURCE, "sub": sub, "iat": now(), "exp": now() + 300 })
}

pub fn jwt_entry(jwks_file: Option<PathBuf>, jwks_url: Option<String>) -> JwtConfig {
    JwtConfig {
        issuer: ISSUER.into(),
        audience: None,
        jwks_file,
        jwks_url,
        algorithms: vec!["RS256".into(), "ES256".into(), "EdDSA".into()],
        jwks_min_refresh: Duration::from_secs(30),
        jwks_ttl: Duration::from_secs(600),
    }
}

pub fn config(jwt: Vec<JwtConfig>) -> AuthConfig {
    AuthConfig {
        resource: RESOURCE.into(),
        authorization_servers: vec![ISSUER.into()],
        scopes_supported: vec![],
        roles_claim: "roles".into(),
        groups_claim: "groups".into(),
        leeway: Duration::from_secs(30),
        jwt,
        api_key: vec![],
        hs256: None,
        dev_signing_key_file: None,
    }
}

/// A temp dir with `jwks.json` holding the RSA, EC and Ed25519 test keys, and a config trusting it.
pub fn file_setup() -> (tempfile::TempDir, AuthConfig) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_jwks(&dir.path().join("jwks.json"), &[rsa().jwk(), ec().jwk(), ed().jwk()]);
    let cfg = config(vec![jwt_entry(Some("jwks.json".into()), None)]);
    (dir, cfg)
}

pub fn authenticator(cfg: &AuthConfig, dir: &Path) -> Authenticator {
    Authenticator::new(cfg, dir, reqwest::Client::new()).expect("authenticator")
}

/// Authenticates `token`; checks that an error never echoes the token.
pub async fn check(a: &Authenticator, token: &str) -> Result<std::sync::Arc<portcullis_auth::Principal>, AuthError> {
    let r = a.authenticate(Some(&format!("Bearer {token}"))).await;
    if let Err(e) = &r {
        assert!(!e.to_string().contains(token), "error echoes the token: {e}");
        assert!(!e.www_authenticate("x").contains(token));
    }
    r
}

pub fn invalid(msg: &str) -> Result<(), AuthError> {
    Err(AuthError::Invalid(msg.into()))
}

/// The result with the principal dropped, for exact error comparisons.
pub fn outcome<T>(r: Result<T, AuthError>) -> Result<(), AuthError> {
    r.map(|_| ())
}
