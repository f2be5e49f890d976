use crate::Sink;
use std::sync::Arc;

/// Outcome of attributing an unsolicited upstream message to a client session.
pub(crate) enum Attribution {
    /// The one client call in flight on this connection.
    Call(Arc<dyn Sink>),
    /// The session that owns a per-session connection.
    Owner(Arc<dyn Sink>),
    /// Several sessions have calls in flight; delivering to any of them could leak.
    Ambiguous(usize),
    None,
}
