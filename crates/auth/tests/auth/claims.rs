//! Principal extraction: roles, groups, scopes, client id, delegation chain; identity and scope helpers.

use crate::common::*;
use portcullis_auth::{insufficient_scope_header, AuthError, Principal, PrincipalKind, Secret};
use serde_json::json;

#[tokio::test]
async fn roles_groups_scopes_client_and_actors() {
    let (dir, cfg) = file_setup();
    let a = authenticator(&cfg, dir.path());
    let mut c = claims("user-1");
    c["roles"] = json!(["admin", "dev"]);
    c["groups"] = json!("eng ops");
    c["scope"] = json!("tools:read tools:call");
    c["scp"] = json!(["tools:call", "files:read"]);
    c["azp"] = json!("agent-7");
    c["act"] = json!({ "sub": "agent-7", "act": { "sub": "orchestrator", "act": { "iss": "no-sub" } } });
    let p = check(&a, &rsa().sign(&c)).await.expect("valid");
    assert_eq!(p.roles, ["admin", "dev"]);
    assert_eq!(p.groups, ["eng", "ops"]);
    assert_eq!(p.scopes, ["tools:read", "tools:call", "files:read"]);
    assert_eq!(p.client_id.as_deref(), Some("agent-7"));
    assert_eq!(p.actors, ["agent-7", "orchestrator"]);
    assert!(p.has_scopes(&["tools:read".into(), "files:read".into()]));
    assert!(!p.has_scopes(&["tools:admin".into()]));

    // client_id claim, roles as a string, no scopes.
    let mut c = claims("user-2");
    c["client_id"] = json!("cli");
    c["roles"] = json!("reader");
    let p = check(&a, &ed().sign(&c)).await.expect("valid");
    assert_eq!((p.client_id.as_deref(), p.roles.as_slice()), (Some("cli"), &["reader".to_string()][..]));
    assert!(p.scopes.is_empty() && p.groups.is_empty() && p.actors.is_empty());
}

#[tokio::test]
async fn custom_and_nested_role_claims() {
    let (dir, mut cfg) = file_setup();
    cfg.roles_claim = "realm_access.roles".into();
    cfg.groups_claim = "https://example.com/groups".into();
    let a = authenticator(&cfg, dir.path());
    let mut c = claims("kc-user");
    c["realm_access"] = json!({ "roles": ["offline", "admin"] });
    c["https://example.com/groups"] = json!(["g1"]);
    let p = check(&a, &ec().sign(&c)).await.expect("valid");
    assert_eq!(p.roles, ["offline", "admin"]);
    assert_eq!(p.groups, ["g1"]);
}

#[test]
fn identity_secret_and_headers() {
    let anon = Principal::anonymous();
    assert_eq!(anon.kind, PrincipalKind::Anonymous);
    assert!(anon.has_scopes(&[]));
    assert!(!anon.has_scopes(&["x".into()]));
    let mut a = Principal::anonymous();
    a.kind = PrincipalKind::Jwt;
    a.subject = "s".into();
    a.issuer = Some("i".into());
    let mut b = a.clone();
    b.roles = vec!["other roles do not matter".into()];
    assert!(a.same_identity(&b));
    b.issuer = Some("j".into());
    assert!(!a.same_identity(&b));
    assert!(!a.same_identity(&anon));

    let s = Secret::new("tok");
    assert_eq!((format!("{s}"), format!("{s:?}"), s.expose()), ("[redacted]".into(), "[redacted]".into(), "tok"));

    let url = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";
    assert_eq!(AuthError::Missing.www_authenticate(url), format!("Bearer resource_metadata=\"{url}\""));
    assert_eq!(AuthError::Missing.status(), 401);
    let e = AuthError::Invalid("the token has expired".into());
    assert_eq!(e.status(), 401);
    assert_eq!(
        e.www_authenticate(url),
        format!(
            "Bearer resource_metadata=\"{url}\", error=\"invalid_token\", error_description=\"the token has expired\""
        )
    );
    let e = AuthError::Invalid("a \"quoted\" \\ thing\n".into());
    assert!(e.www_authenticate(url).ends_with("error_description=\"a 'quoted' / thing\""));
    assert_eq!(AuthError::Unavailable("down".into()).status(), 503);
    assert_eq!(
        insufficient_scope_header(url, "tools:call files:read"),
        format!("Bearer error=\"insufficient_scope\", scope=\"tools:call files:read\", resource_metadata=\"{url}\"")
    );
}
