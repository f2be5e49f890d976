//! Legacy HTTP+SSE client transport (2024-11-05): one long GET stream carries every server message; its first
//! `endpoint` event names the URL that each client message is POSTed to.
//!
//! Also home of [`EventReader`], the bounded SSE reader shared with [`crate::http`].

use crate::http::{clip, describe, excerpt, fail, parse_logged, pump};
use crate::pipe::{sniff_id, Outgoing, Pipe, PipeEvent, PipeGuard, PIPE_DEPTH};
use http::header::{ACCEPT, CONTENT_TYPE};
use portcullis_protocol::sse::{Decoder, Event};
use portcullis_protocol::{Id, Message};
use reqwest::Url;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;

pub struct SseConfig {
    /// The SSE endpoint (`GET`), e.g. `http://127.0.0.1:3001/sse`.
    pub url: String,
    /// Largest message accepted from the upstream, in bytes.
    pub max_message: usize,
    /// Bounds the whole handshake: the GET and the wait for the `endpoint` event.
    pub connect_timeout: Duration,
    /// Upstream name, for logs and error messages.
    pub name: String,
}

/// Open the GET stream and wait for the `endpoint` event; the error says why the upstream could not be used.
pub async fn connect(cfg: SseConfig, client: reqwest::Client) -> Result<Pipe, String> {
    let name = cfg.name.clone();
    let base = Url::parse(&cfg.url).map_err(|e| format!("upstream {name:?}: invalid url {:?}: {e}", cfg.url))?;
    let deadline = Instant::now() + cfg.connect_timeout;
    let handshake = async {
        let mut resp = client
            .get(base.clone())
            .header(ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| format!("could not be reached: {}", describe(e)))?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            return Err(format!("answered HTTP {status}: {}", excerpt(resp, cfg.connect_timeout).await));
        }
        let mut reader = EventReader::new(cfg.max_message);
        let mut early = Vec::new();
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => return Err("closed the SSE stream before sending an endpoint event".into()),
                Err(e) => return Err(format!("broke off the SSE stream: {}", describe(e))),
            };
            let mut items = reader.feed(&chunk).into_iter();
            while let Some(item) = items.next() {
                match item {
                    Item::Event(ev) if ev.event.as_deref() == Some("endpoint") => {
                        let endpoint = resolve(&base, ev.data.trim())?;
                        early.extend(items);
                        return Ok((resp, reader, endpoint, early));
                    }
                    other => early.push(other),
                }
            }
        }
    };
    let (resp, reader, endpoint, early) = match timeout_at(deadline, handshake).await {
        Ok(Ok(ok)) => ok,
        Ok(Err(e)) => return Err(format!("upstream {name:?} {e}; check its url in portcullis.toml")),
        Err(_) => {
            let secs = cfg.connect_timeout.as_secs_f64();
            return Err(format!(
                "upstream {name:?} sent no endpoint event within {secs}s; is {} an SSE endpoint?",
                cfg.url
            ));
        }
    };
    tracing::debug!(upstream = %name, "legacy SSE endpoint {endpoint}");

    let (tx, out_rx) = mpsc::channel(PIPE_DEPTH);
    let (events, rx) = mpsc::channel(PIPE_DEPTH);
    let token = CancellationToken::new();
    let conn = Arc::new(Conn { cfg, client, endpoint, events });
    let task_token = token.clone();
    tokio::spawn(async move {
        let post_conn = conn.clone();
        let reason = tokio::select! {
            _ = pump(out_rx, &task_token, move |out| post(post_conn.clone(), out)) => "closed by the gateway".to_owned(),
            reason = conn.read(resp, reader, early) => reason,
        };
        let _ = conn.events.send(PipeEvent::Closed { reason }).await;
    });
    Ok(Pipe { tx, rx, guard: PipeGuard::Tasks(token.drop_guard()) })
}

/// The `endpoint` event's URL, relative to the SSE URL, on the same origin (else our messages would go elsewhere).
fn resolve(base: &Url, data: &str) -> Result<Url, String> {
    let url = base.join(data).map_err(|e| format!("sent an invalid endpoint {:?}: {e}", clip(data.as_bytes())))?;
    if url.origin() != base.origin() {
        return Err(format!(
            "sent an endpoint on another origin ({}); refusing to post there",
            url.origin().ascii_serialization()
        ));
    }
    Ok(url)
}

struct Conn {
    cfg: SseConfig,
    client: reqwest::Client,
    endpoint: Url,
    events: mpsc::Sender<PipeEvent>,
}

impl Conn {
    /// Turn `message` events into pipe events until the stream ends; returns why it ended.
    async fn read(&self, mut resp: reqwest::Response, mut reader: EventReader, early: Vec<Item>) -> String {
        self.deliver(early).await;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => self.deliver(reader.feed(&chunk)).await,
                Ok(None) => return format!("upstream {:?} closed its SSE stream", self.cfg.name),
                Err(e) => return format!("upstream {:?} SSE stream broke off: {}", self.cfg.name, describe(e)),
            }
        }
    }

    async fn deliver(&self, items: Vec<Item>) {
        for item in items {
            let ev = match item {
                Item::Event(ev) if matches!(ev.event.as_deref(), None | Some("message")) && !ev.data.is_empty() => {
                    let Some(msg) = parse_logged(&self.cfg.name, ev.data.as_bytes()) else { continue };
                    PipeEvent::Message(msg)
                }
                Item::Event(_) => continue,
                Item::TooLarge(id) => PipeEvent::TooLarge { id, limit: self.cfg.max_message },
            };
            let _ = self.events.send(ev).await;
        }
    }
}

async fn post(conn: Arc<Conn>, out: Outgoing) {
    let request: Option<Id> = match &out.msg {
        Message::Request { id, .. } => Some(id.clone()),
        _ => None,
    };
    let mut req = conn.client.post(conn.endpoint.clone());
    for (k, v) in out.headers {
        req = req.header(k, v);
    }
    let req = req.header(CONTENT_TYPE, "application/json").body(out.msg.to_json());
    let detail = match req.send().await {
        Ok(r) if r.status().is_success() => return,
        Ok(r) => {
            let status = r.status().as_u16();
            format!("answered HTTP {status}: {}", excerpt(r, conn.cfg.connect_timeout).await)
        }
        Err(e) => format!("could not be reached: {}", describe(e)),
    };
    fail(&conn.events, &conn.cfg.name, request.as_ref(), &detail).await;
}

/// What [`EventReader::feed`] yields.
#[derive(Debug)]
pub(crate) enum Item {
    Event(Event),
    /// An event over the size limit was skipped; `id` is sniffed from its first bytes.
    TooLarge(Option<Id>),
}

/// An SSE reader that holds at most one event's worth of bytes. An oversized event is reported and skipped, and
/// reading resumes at the next event, so one bad message does not cost a long-lived stream.
pub(crate) struct EventReader {
    dec: Decoder,
    max: usize,
    /// The first bytes of the event being read, for [`sniff_id`].
    head: Vec<u8>,
    /// Discarding the rest of an oversized event.
    skipping: bool,
    /// The previous byte ended a line (so another line end makes a blank line, the end of an event).
    at_line_start: bool,
    /// The previous byte was `\r` (so a `\n` now belongs to the same line end).
    after_cr: bool,
}

const HEAD: usize = 256;

impl EventReader {
    pub(crate) fn new(max: usize) -> Self {
        EventReader {
            dec: Decoder::new(max),
            max,
            head: Vec::new(),
            skipping: false,
            at_line_start: true,
            after_cr: false,
        }
    }

    pub(crate) fn feed(&mut self, mut chunk: &[u8]) -> Vec<Item> {
        let mut out = Vec::new();
        while !chunk.is_empty() {
            // Split at the end of the current event so the decoder sees one event at a time.
            let end = self.scan(chunk);
            let (now, rest) = chunk.split_at(end.unwrap_or(chunk.len()));
            chunk = rest;
            if self.skipping {
                self.skipping = end.is_none();
            } else {
                // An event ending in a lone `\r` would wait in the decoder for a possible `\n`: end it now (a
                // real `\n` then reads as an empty line, which dispatches nothing).
                let fed = self.dec.feed(now).and_then(|mut evs| {
                    if end.is_some() && now.ends_with(b"\r") {
                        evs.extend(self.dec.feed(b"\n")?);
                    }
                    Ok(evs)
                });
                match fed {
                    Ok(evs) => out.extend(evs.into_iter().map(Item::Event)),
                    Err(_) => {
                        out.push(Item::TooLarge(sniff_id(&self.head)));
                        self.dec = Decoder::new(self.max);
                        self.skipping = end.is_none();
                    }
                }
            }
            if end.is_some() {
                self.head.clear();
            }
        }
        out
    }

    /// Find the end of the current event (just past its blank line) in `chunk`, recording its first bytes.
    fn scan(&mut self, chunk: &[u8]) -> Option<usize> {
        for (i, &b) in chunk.iter().enumerate() {
            let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
            match b {
                b'\n' if after_cr => {}
                b'\n' | b'\r' if self.at_line_start => return Some(i + 1),
                b'\n' | b'\r' => self.at_line_start = true,
                _ => {
                    self.at_line_start = false;
                    if self.head.len() < HEAD {
                        self.head.push(b);
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8], max: usize, chunk: usize) -> Vec<String> {
        let mut r = EventReader::new(max);
        let items: Vec<Item> = input.chunks(chunk).flat_map(|c| r.feed(c)).collect();
        items
            .into_iter()
            .map(|i| match i {
                Item::Event(ev) => ev.data,
                Item::TooLarge(id) => format!("too large {id:?}"),
            })
            .collect()
    }

    #[test]
    fn skips_oversized_events_whatever_the_chunking() {
        let big = format!("data: {{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":\"{}\"}}", "x".repeat(100));
        for eol in ["\n", "\r\n", "\r"] {
            let input = format!("data: a{eol}{eol}{big}{eol}{eol}: c{eol}data: b{eol}{eol}{big}{eol}{eol}");
            for chunk in [1, 2, 3, 7, 64, input.len()] {
                let got = run(input.as_bytes(), 64, chunk);
                let want = ["a", "too large Some(Num(7))", "b", "too large Some(Num(7))"];
                assert_eq!(got, want, "eol {eol:?}, chunk {chunk}");
            }
        }
    }
}
