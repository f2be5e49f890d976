//! Dev tooling behind `portcullis keys` / `portcullis token mint`: a local signing key, its JWKS, and tokens
//! signed with it. Not used on the request path.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// PKCS#8 v1 DER prefix of an Ed25519 private key (RFC 8410 §7); the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// Creates an Ed25519 private key at `pem_path` (mode 0600) unless a key is already there, then (re)writes
/// `jwks_path` with its public key (`kid` = RFC 7638 thumbprint). An existing PEM may be ES256 (P-256) or
/// Ed25519, PKCS#8.
pub fn generate_dev_key(pem_path: &Path, jwks_path: &Path) -> Result<(), String> {
    if !pem_path.exists() {
        let seed: [u8; 32] = rand::random();
        let mut der = ED25519_PKCS8_PREFIX.to_vec();
        der.extend_from_slice(&seed);
        write_private(pem_path, pem("PRIVATE KEY", &der).as_bytes())?;
    }
    let (key, alg) = load_signing_key(pem_path)?;
    let jwks = JwkSet { keys: vec![public_jwk(&key, alg, pem_path)?] };
    let text = serde_json::to_string_pretty(&jwks).map_err(|e| format!("cannot serialise the JWKS: {e}"))?;
    create_parent(jwks_path)?;
    std::fs::write(jwks_path, text + "\n").map_err(|e| format!("cannot write {}: {e}", jwks_path.display()))
}

/// A token signed with the dev key at `pem_path` (kid = its thumbprint, as in the JWKS `generate_dev_key`
/// writes). Claims: `iss`, `aud`, `sub`, `iat`, `exp` = now + `ttl`, `jti`, `roles` (array) and `scope`
/// (space-separated) when not empty. The gateway reads roles from `auth.roles_claim`, so keep it `roles`.
pub fn mint_dev_token(
    pem_path: &Path,
    issuer: &str,
    audience: &str,
    sub: &str,
    roles: &[String],
    scopes: &[String],
    ttl: Duration,
) -> Result<String, String> {
    let (key, alg) = load_signing_key(pem_path)?;
    let kid = public_jwk(&key, alg, pem_path)?.common.key_id;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let jti: [u8; 16] = rand::random();
    let mut claims = json!({
        "iss": issuer,
        "aud": audience,
        "sub": sub,
        "iat": now,
        "exp": now + ttl.as_secs(),
        "jti": URL_SAFE_NO_PAD.encode(jti),
    });
    if !roles.is_empty() {
        claims["roles"] = Value::from(roles.to_vec());
    }
    if !scopes.is_empty() {
        claims["scope"] = Value::from(scopes.join(" "));
    }
    let mut header = Header::new(alg);
    header.kid = kid;
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| format!("cannot sign the token: {e}"))
}

/// Reads a PKCS#8 PEM private key: Ed25519 (EdDSA) or P-256 (ES256).
fn load_signing_key(path: &Path) -> Result<(EncodingKey, Algorithm), String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read the dev signing key {}: {e}", path.display()))?;
    if let Ok(k) = EncodingKey::from_ed_pem(&pem) {
        return Ok((k, Algorithm::EdDSA));
    }
    if let Ok(k) = EncodingKey::from_ec_pem(&pem) {
        return Ok((k, Algorithm::ES256));
    }
    Err(format!(
        "{}: not a PKCS#8 Ed25519 or P-256 private key PEM (convert with `openssl pkcs8 -topk8 -nocrypt`)",
        path.display()
    ))
}

/// The public JWK of a private key, with `kid` (thumbprint), `alg` and `use: sig`.
fn public_jwk(key: &EncodingKey, alg: Algorithm, path: &Path) -> Result<Jwk, String> {
    let unusable = |e: jsonwebtoken::errors::Error| format!("{}: unusable private key: {e}", path.display());
    let mut jwk = Jwk::from_encoding_key(key, alg).map_err(unusable)?;
    jwk.common.key_id = Some(jwk.thumbprint(ThumbprintHash::SHA256).map_err(unusable)?);
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok(jwk)
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn create_parent(path: &Path) -> Result<(), String> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// Writes a new file readable by its owner only; never overwrites.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    create_parent(path)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let err = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}
