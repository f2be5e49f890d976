//! The one error type of this crate and its HTTP mapping (status + `WWW-Authenticate`, RFC 6750 §3 / RFC 9728 §5.1).

/// Why a request could not be authenticated. Messages never contain the token, key material or any string taken
/// from the token (issuer, kid, …), so they are safe to return to the client and to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header: 401 with a bare challenge, so the client starts OAuth discovery.
    #[error("no Authorization header; send `Authorization: Bearer <token>`")]
    Missing,
    /// The credential was presented but is not acceptable: 401 `error="invalid_token"`. Not retryable with the
    /// same token.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token could not be checked because the issuer's keys are unreachable and none are cached. The gateway
    /// fails closed with 503 + `Retry-After`; retrying the same token later is safe.
    #[error("cannot verify tokens right now: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// HTTP status for this error: 401, or 503 for [`AuthError::Unavailable`].
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Missing | AuthError::Invalid(_) => 401,
            AuthError::Unavailable(_) => 503,
        }
    }

    /// Value of the `WWW-Authenticate` response header. `resource_metadata_url` is this endpoint's RFC 9728
    /// protected-resource metadata URL.
    pub fn www_authenticate(&self, resource_metadata_url: &str) -> String {
        let base = format!("Bearer resource_metadata=\"{}\"", quoted(resource_metadata_url));
        match self {
            AuthError::Missing | AuthError::Unavailable(_) => base,
            AuthError::Invalid(why) => {
                format!("{base}, error=\"invalid_token\", error_description=\"{}\"", description(why))
            }
        }
    }
}

/// `WWW-Authenticate` value for a 403 when the caller is authenticated but lacks `scope` (space-separated).
pub fn insufficient_scope_header(resource_metadata_url: &str, scope: &str) -> String {
    format!(
        "Bearer error=\"insufficient_scope\", scope=\"{}\", resource_metadata=\"{}\"",
        quoted(scope),
        quoted(resource_metadata_url)
    )
}

/// Makes `s` safe inside an HTTP quoted-string (and a header value): escape `"` and `\`, drop control and
/// non-ASCII characters.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => {}
        }
    }
    out
}

/// RFC 6750 `error_description` allows %x20-21 / %x23-5B / %x5D-7E only: no `"` or `\` even escaped.
fn description(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            '"' => Some('\''),
            '\\' => Some('/'),
            ' '..='~' => Some(c),
            _ => None,
        })
        .collect()
}
