//! Protocol revisions the gateway speaks downstream.

/// Session-era revisions, newest first. `initialize` answers with the client's version when it is listed here,
/// otherwise with the first entry.
pub const SESSION_ERA: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// Assumed when a session-era client omits `MCP-Protocol-Version` (spec: 2025-06-18 transports).
pub const DEFAULT_HEADER_VERSION: &str = "2025-03-26";

/// The stateless revision (not yet served downstream; see issue 4).
pub const STATELESS_ERA: &str = "2026-07-28";

pub fn is_session_era(v: &str) -> bool {
    SESSION_ERA.contains(&v)
}

pub fn negotiate(requested: Option<&str>) -> &'static str {
    requested.and_then(|r| SESSION_ERA.iter().copied().find(|v| *v == r)).unwrap_or(SESSION_ERA[0])
}

/// JSON-RPC batches exist only in 2025-03-26.
pub fn allows_batch(v: &str) -> bool {
    v == "2025-03-26"
}
