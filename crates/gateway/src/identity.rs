//! The identity stage on the HTTP side: who is calling (401 with `WWW-Authenticate` otherwise), may they use this
//! endpoint (403 `insufficient_scope`), and the OAuth protected-resource metadata (RFC 9728) and JWKS that let
//! clients and upstreams discover how to talk to us. The caller's token stops here: upstreams only ever see the
//! credential [`portcullis_obo::Credentials`] derives for them.

use crate::Gateway;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use portcullis_auth::{insufficient_scope_header, Principal};
use portcullis_protocol::code;
use std::sync::Arc;

/// The public origin of this gateway (`scheme://host[:port]`), from `auth.resource`.
fn origin(resource: &str) -> &str {
    let after_scheme = resource.find("://").map_or(0, |i| i + 3);
    match resource[after_scheme..].find('/') {
        Some(i) => &resource[..after_scheme + i],
        None => resource,
    }
}

impl Gateway {
    /// RFC 9728 metadata URL for an endpoint (`/mcp` or `/mcp/{topic}`).
    pub fn resource_metadata_url(&self, topic: Option<&str>) -> String {
        let resource = self.cfg.auth.as_ref().map_or("", |a| a.resource.as_str());
        let path = match topic {
            Some(t) => format!("/mcp/{t}"),
            None => "/mcp".to_owned(),
        };
        format!("{}/.well-known/oauth-protected-resource{path}", origin(resource))
    }

    /// The canonical resource URI of an endpoint: `auth.resource` for `/mcp`, `{resource}/{topic}` for topics.
    fn resource_uri(&self, topic: Option<&str>) -> String {
        let resource = self.cfg.auth.as_ref().map_or("", |a| a.resource.as_str()).trim_end_matches('/');
        match topic {
            Some(t) => format!("{resource}/{t}"),
            None => resource.to_owned(),
        }
    }

    /// Authenticate one HTTP request for an endpoint. Anonymous mode (no `[auth]`) admits everyone as
    /// `anonymous`.
    pub async fn authenticate_http(
        &self,
        headers: &HeaderMap,
        topic: Option<&str>,
    ) -> Result<Arc<Principal>, Response> {
        let Some(auth) = &self.auth else {
            return Ok(self.anonymous.clone());
        };
        let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let metadata = self.resource_metadata_url(topic);
        let principal = match auth.authenticate(value).await {
            Ok(p) => p,
            Err(e) => {
                let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
                let mut r = crate::http::rpc_error(status, code::SESSION, &format!("{status}: {e}"));
                if let Ok(v) = HeaderValue::from_str(&e.www_authenticate(&metadata)) {
                    r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                }
                return Err(r);
            }
        };
        let needed: &[String] = match topic {
            Some(t) => self.cfg.topics.iter().find(|x| x.name == t).map_or(&[], |x| x.scopes.as_slice()),
            None => &[],
        };
        if !principal.has_scopes(needed) {
            let scope = needed.join(" ");
            let mut r = crate::http::rpc_error(
                StatusCode::FORBIDDEN,
                code::SESSION,
                &format!("Forbidden: this endpoint needs scope {scope:?}; request a token with it"),
            );
            if let Ok(v) = HeaderValue::from_str(&insufficient_scope_header(&metadata, &scope)) {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            return Err(r);
        }
        Ok(principal)
    }

    fn metadata(&self, topic: Option<&str>) -> Response {
        let Some(auth) = &self.cfg.auth else {
            return StatusCode::NOT_FOUND.into_response();
        };
        if !self.serves(topic) {
            return StatusCode::NOT_FOUND.into_response();
        }
        let mut scopes = auth.scopes_supported.clone();
        for t in &self.cfg.topics {
            for s in &t.scopes {
                if !scopes.contains(s) {
                    scopes.push(s.clone());
                }
            }
        }
        Json(serde_json::json!({
            "resource": self.resource_uri(topic),
            "authorization_servers": auth.authorization_servers,
            "scopes_supported": scopes,
            "bearer_methods_supported": ["header"],
            "resource_name": "Portcullis MCP gateway",
        }))
        .into_response()
    }
}

pub async fn metadata_root(State(gw): State<Arc<Gateway>>) -> Response {
    gw.metadata(None)
}

pub async fn metadata_mcp(State(gw): State<Arc<Gateway>>) -> Response {
    gw.metadata(None)
}

pub async fn metadata_topic(State(gw): State<Arc<Gateway>>, Path(topic): Path<String>) -> Response {
    gw.metadata(Some(&topic))
}

/// Public keys of every `mint_obo` credential, so upstreams can verify the tokens the gateway mints.
pub async fn jwks(State(gw): State<Arc<Gateway>>) -> Response {
    let keys: Vec<serde_json::Value> = gw.credentials.values().flat_map(|c| c.public_jwks()).collect();
    Json(serde_json::json!({ "keys": keys })).into_response()
}
