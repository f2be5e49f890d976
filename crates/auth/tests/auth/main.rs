//! Integration tests of `portcullis-auth`: one binary, one module per area.

mod common;

mod api_keys;
mod claims;
mod dev_tools;
mod jwks_url;
mod jwt_matrix;
