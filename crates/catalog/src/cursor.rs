//! List pages and their cursors. A cursor is base64url (no padding) of 18 bytes: format version, list kind,
//! item offset (u64 BE) and catalog generation (u64 BE). Clients must treat it as opaque.

use crate::ListKind;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

const VERSION: u8 = 1;
const LEN: usize = 18;

/// The cursor is not one this gateway handed out for this list, or it points past the end of the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid cursor: pass the previous page's nextCursor unchanged, or omit it to start over")]
pub struct BadCursor;

pub(crate) fn encode(kind: ListKind, offset: u64, generation: u64) -> String {
    let mut b = [0u8; LEN];
    b[0] = VERSION;
    b[1] = kind.index() as u8;
    b[2..10].copy_from_slice(&offset.to_be_bytes());
    b[10..18].copy_from_slice(&generation.to_be_bytes());
    URL_SAFE_NO_PAD.encode(b)
}

/// `(kind, offset, generation)`, or `None` if `s` is not a cursor of ours.
pub(crate) fn decode(s: &str) -> Option<(ListKind, u64, u64)> {
    if s.len() != 24 {
        return None;
    }
    let b: [u8; LEN] = URL_SAFE_NO_PAD.decode(s).ok()?.try_into().ok()?;
    if b[0] != VERSION {
        return None;
    }
    let kind = *ListKind::ALL.get(usize::from(b[1]))?;
    let offset = u64::from_be_bytes(b[2..10].try_into().ok()?);
    let generation = u64::from_be_bytes(b[10..18].try_into().ok()?);
    Some((kind, offset, generation))
}

/// Complete list results, one per page: `{"<key>":[...],"nextCursor":"..."}`. An empty list is one empty page.
pub(crate) fn render_pages(kind: ListKind, items: &[&str], page_size: usize, generation: u64) -> Vec<String> {
    let page_size = page_size.max(1);
    let key = kind.result_key();
    let mut pages = Vec::with_capacity(items.len().div_ceil(page_size).max(1));
    let mut start = 0;
    loop {
        let end = (start + page_size).min(items.len());
        let chunk = items.get(start..end).unwrap_or_default();
        let len: usize = chunk.iter().map(|i| i.len() + 1).sum();
        let mut s = String::with_capacity(len + key.len() + 48);
        s.push_str("{\"");
        s.push_str(key);
        s.push_str("\":[");
        for (i, item) in chunk.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(item);
        }
        s.push(']');
        if end < items.len() {
            s.push_str(",\"nextCursor\":\"");
            s.push_str(&encode(kind, end as u64, generation));
            s.push('"');
        }
        s.push('}');
        pages.push(s);
        if end >= items.len() {
            return pages;
        }
        start = end;
    }
}
