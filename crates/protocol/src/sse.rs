//! Server-Sent Events framing (WHATWG HTML §9.2), both directions.

use bytes::{Buf, BytesMut};

/// One event as received. `data` lines are joined with `\n`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub retry: Option<u64>,
}

/// Encode one event. `data` must not contain a bare `\r`; JSON from this gateway never does, and any `\n` is
/// split over several `data:` lines as the format requires.
pub fn encode(id: Option<&str>, event: Option<&str>, data: &str) -> String {
    let mut s = String::with_capacity(data.len() + 32);
    if let Some(id) = id {
        s.push_str("id: ");
        s.push_str(id);
        s.push('\n');
    }
    if let Some(ev) = event {
        s.push_str("event: ");
        s.push_str(ev);
        s.push('\n');
    }
    for line in data.split('\n') {
        s.push_str("data: ");
        s.push_str(line);
        s.push('\n');
    }
    s.push('\n');
    s
}

#[derive(Debug, thiserror::Error)]
#[error("SSE event larger than {limit} bytes")]
pub struct TooLarge {
    pub limit: usize,
}

/// Incremental decoder with a bound on the size of one event.
pub struct Decoder {
    buf: BytesMut,
    cur: Event,
    has_data: bool,
    max_event: usize,
    cur_size: usize,
}

impl Decoder {
    pub fn new(max_event: usize) -> Self {
        Decoder { buf: BytesMut::new(), cur: Event::default(), has_data: false, max_event, cur_size: 0 }
    }

    /// Feed bytes; returns the events completed by them.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Event>, TooLarge> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        loop {
            let Some(pos) = self.buf.iter().position(|&b| b == b'\n' || b == b'\r') else {
                if self.buf.len() + self.cur_size > self.max_event {
                    return Err(TooLarge { limit: self.max_event });
                }
                return Ok(out);
            };
            // A `\r` at the very end might be the first half of `\r\n`: wait for more input.
            if self.buf[pos] == b'\r' && pos + 1 == self.buf.len() {
                return Ok(out);
            }
            let line = self.buf.split_to(pos);
            let skip = if self.buf[0] == b'\r' && self.buf.get(1) == Some(&b'\n') { 2 } else { 1 };
            self.buf.advance(skip);
            let line = String::from_utf8_lossy(&line);
            self.cur_size += line.len();
            if self.cur_size > self.max_event {
                return Err(TooLarge { limit: self.max_event });
            }
            if line.is_empty() {
                let ev = std::mem::take(&mut self.cur);
                self.cur_size = 0;
                if self.has_data || ev.id.is_some() || ev.retry.is_some() {
                    out.push(ev);
                }
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.find(':') {
                Some(i) => {
                    let v = &line[i + 1..];
                    (&line[..i], v.strip_prefix(' ').unwrap_or(v))
                }
                None => (&line[..], ""),
            };
            match field {
                "data" => {
                    if self.has_data {
                        self.cur.data.push('\n');
                    }
                    self.cur.data.push_str(value);
                    self.has_data = true;
                }
                "id" if !value.contains('\0') => self.cur.id = Some(value.to_owned()),
                "event" => self.cur.event = Some(value.to_owned()),
                "retry" => self.cur.retry = value.parse().ok(),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_split_chunks_crlf_comments_and_priming() {
        let mut d = Decoder::new(1 << 20);
        let mut evs = d.feed(b": keepalive\r\nid: 1\r\ndata:\r\n\r\nevent: message\ndata: {\"a\"").unwrap();
        evs.extend(d.feed(b":1}\ndata: x\n\nretry: 500\n\n").unwrap());
        assert_eq!(evs.len(), 3);
        assert_eq!(evs[0].id.as_deref(), Some("1"));
        assert_eq!(evs[0].data, "");
        assert_eq!(evs[1].event.as_deref(), Some("message"));
        assert_eq!(evs[1].data, "{\"a\":1}\nx");
        assert_eq!(evs[2].retry, Some(500));
    }

    #[test]
    fn encode_then_decode() {
        let s = encode(Some("7"), Some("message"), "{\"x\":\n1}");
        let evs = Decoder::new(1024).feed(s.as_bytes()).unwrap();
        assert_eq!(evs[0].data, "{\"x\":\n1}");
        assert_eq!(evs[0].id.as_deref(), Some("7"));
    }

    #[test]
    fn bounds_event_size() {
        let mut d = Decoder::new(16);
        assert!(d.feed(b"data: 0123456789012345678901234567890\n").is_err());
        let mut d = Decoder::new(16);
        assert!(d.feed(b"data: 0123456789012345678901234567890").is_err());
    }
}
