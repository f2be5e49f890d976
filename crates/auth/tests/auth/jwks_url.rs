//! `jwks_url`: fetched from a local axum server; refetch rate limit, TTL refresh, fail-closed when unreachable.

use crate::common::*;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use portcullis_auth::{AuthError, Authenticator};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Idp {
    jwks: Mutex<Value>,
    fetches: AtomicUsize,
    down: AtomicBool,
}

impl Idp {
    fn set_keys(&self, keys: Vec<Value>) {
        *self.jwks.lock().expect("lock") = json!({ "keys": keys });
    }
    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

async fn serve_jwks(State(idp): State<Arc<Idp>>) -> (StatusCode, String) {
    idp.fetches.fetch_add(1, Ordering::SeqCst);
    if idp.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down".into());
    }
    (StatusCode::OK, idp.jwks.lock().expect("lock").to_string())
}

/// Starts the fake IdP; returns it and its JWKS URL.
async fn idp(keys: Vec<Value>) -> (Arc<Idp>, String) {
    let idp = Arc::new(Idp::default());
    idp.set_keys(keys);
    let app = Router::new().route("/jwks.json", get(serve_jwks)).with_state(Arc::clone(&idp));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (idp, format!("http://{addr}/jwks.json"))
}

fn url_config(url: String, min_refresh: Duration, ttl: Duration) -> portcullis_config::AuthConfig {
    let mut entry = jwt_entry(None, Some(url));
    entry.jwks_min_refresh = min_refresh;
    entry.jwks_ttl = ttl;
    config(vec![entry])
}

#[tokio::test]
async fn unknown_kids_cause_at_most_one_fetch_per_interval() {
    let (idp, url) = idp(vec![rsa().jwk()]).await;
    let cfg = url_config(url, Duration::from_secs(1), Duration::from_secs(600));
    let a = Arc::new(Authenticator::new(&cfg, std::env::temp_dir().as_path(), reqwest::Client::new()).expect("auth"));
    assert!(check(&a, &rsa().sign(&claims("alice"))).await.is_ok());
    assert_eq!(idp.fetches(), 1, "first use fetches the JWKS");
    assert!(check(&a, &rsa().sign(&claims("bob"))).await.is_ok());
    assert_eq!(idp.fetches(), 1, "known kid: no fetch");

    // A burst of tokens with unknown kids, concurrently: within one interval the JWKS is fetched at most once more.
    let before = idp.fetches();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let a = Arc::clone(&a);
            tokio::spawn(async move { outcome(check(&a, &rsa2().sign_as(&format!("k{i}"), &claims("m"))).await) })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("task"), invalid("the token is signed with a key the issuer does not publish"));
    }
    assert!(idp.fetches() - before <= 1, "{} fetches for one interval", idp.fetches() - before);

    // The IdP rotates in a new key; after the interval a token using it triggers one fetch and succeeds.
    let mut k = rsa2().jwk();
    k["kid"] = json!("rotated");
    idp.set_keys(vec![rsa().jwk(), k]);
    tokio::time::sleep(Duration::from_millis(1050)).await;
    let before = idp.fetches();
    assert_eq!(check(&a, &rsa2().sign_as("rotated", &claims("carol"))).await.expect("rotated key").subject, "carol");
    assert_eq!(idp.fetches() - before, 1);
}

#[tokio::test]
async fn unreachable_without_cache_fails_closed() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}/jwks.json");
    let cfg = url_config(url, Duration::from_secs(30), Duration::from_secs(600));
    let a = Authenticator::new(&cfg, std::env::temp_dir().as_path(), reqwest::Client::new()).expect("auth");
    let t = rsa().sign(&claims("alice"));
    let r = outcome(check(&a, &t).await);
    assert_eq!(r, Err(AuthError::Unavailable("cannot fetch the signing keys of auth.jwt[0]; retry later".into())));
    assert_eq!(r.expect_err("err").status(), 503);
    // Within the refresh interval it fails fast, without another connection attempt.
    assert_eq!(
        outcome(check(&a, &t).await),
        Err(AuthError::Unavailable(
            "the signing keys of auth.jwt[0] are unreachable and none are cached; retry later".into()
        ))
    );
    assert_eq!(a.prefetch().await.len(), 1);
}

#[tokio::test]
async fn ttl_refresh_and_stale_keys_when_the_idp_is_down() {
    let (idp, url) = idp(vec![ec().jwk()]).await;
    let cfg = url_config(url, Duration::from_millis(250), Duration::from_millis(300));
    let a = Authenticator::new(&cfg, std::env::temp_dir().as_path(), reqwest::Client::new()).expect("auth");
    assert!(a.prefetch().await.is_empty());
    assert_eq!(idp.fetches(), 1);
    // Past the TTL, a request refreshes the keys.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(check(&a, &ec().sign(&claims("a"))).await.is_ok());
    assert_eq!(idp.fetches(), 2);
    // IdP down past the TTL: the stale keys keep working, refresh retried at most once per min_refresh.
    idp.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    for i in 0..5 {
        assert!(check(&a, &ec().sign(&claims(&format!("u{i}")))).await.is_ok());
    }
    assert_eq!(idp.fetches(), 3);
}
