//! Inbound caller authentication for the gateway (MCP authorization: the gateway is an OAuth 2.1 resource
//! server). Turns the `Authorization` header of each HTTP request into a [`Principal`]: a JWT verified against a
//! trusted issuer's JWKS (RS256, ES256, EdDSA; HS256 only with `[auth.hs256]`), audience-bound to this gateway,
//! or an API key (`pck_…`) checked against configured SHA-256 hashes. Verified JWTs are cached by SHA-256 until
//! their `exp`, so a repeated token costs one hash and one map lookup.
//!
//! It does not decide what a principal may do (policy does), does not serve the protected-resource metadata
//! (the HTTP layer does, using [`AuthError::www_authenticate`]), and never forwards tokens upstream.
//!
//! Main type: [`Authenticator`]. Dev tooling: [`new_api_key`], [`generate_dev_key`], [`mint_dev_token`].

mod apikey;
mod authenticator;
mod cache;
mod dev;
mod error;
mod jwks;
mod jwt;
mod principal;

pub use apikey::{new_api_key, API_KEY_PREFIX};
pub use authenticator::Authenticator;
pub use dev::{generate_dev_key, mint_dev_token};
pub use error::{insufficient_scope_header, AuthError};
pub use principal::{Principal, PrincipalKind, Secret};
