//! A bounded, replayable SSE stream. Every downstream SSE stream (the standalone GET stream and each POST
//! answered with SSE) is a [`StreamBuf`]: producers push JSON-RPC messages, one consumer at a time reads them as
//! SSE events with ids `{stream}-{seq}`, and a client that lost its connection resumes with `Last-Event-ID`
//! from the last `capacity` events. A producer never waits for the consumer: when the buffer is full the oldest
//! event is dropped (and logged), so a stalled client cannot grow gateway memory.

use bytes::Bytes;
use futures::Stream;
use parking_lot::Mutex;
use portcullis_protocol::sse;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

pub struct StreamBuf {
    pub id: u64,
    cap: usize,
    inner: Mutex<Inner>,
    notify: Notify,
}

struct Inner {
    events: VecDeque<(u64, Arc<str>)>,
    next_seq: u64,
    /// Highest seq handed to a consumer; a fresh (non-resuming) consumer starts after it.
    delivered: u64,
    done: bool,
    attached: bool,
    /// Bumped by every attach; a consumer whose generation is stale stops (a resuming client took over).
    attach_gen: u64,
}

/// Marks the stream as having a live consumer until dropped (a second standalone GET gets 409).
pub struct Attachment(Arc<StreamBuf>, u64);

impl Drop for Attachment {
    fn drop(&mut self) {
        let mut g = self.0.inner.lock();
        if g.attach_gen == self.1 {
            g.attached = false;
        }
    }
}

impl StreamBuf {
    pub fn new(id: u64, cap: usize) -> Arc<StreamBuf> {
        Arc::new(StreamBuf {
            id,
            cap: cap.max(1),
            inner: Mutex::new(Inner {
                events: VecDeque::new(),
                next_seq: 1,
                delivered: 0,
                done: false,
                attached: false,
                attach_gen: 0,
            }),
            notify: Notify::new(),
        })
    }

    /// Queue one message; returns false if the stream is already finished.
    pub fn push(&self, json: String) -> bool {
        {
            let mut g = self.inner.lock();
            if g.done {
                return false;
            }
            let seq = g.next_seq;
            g.next_seq += 1;
            if g.events.len() == self.cap {
                if let Some((old, _)) = g.events.pop_front() {
                    if old > g.delivered {
                        tracing::warn!(stream = self.id, "SSE buffer full; dropped an undelivered event");
                    }
                }
            }
            g.events.push_back((seq, Arc::from(json)));
        }
        self.notify.notify_waiters();
        true
    }

    /// No more events will follow; the consumer ends after draining.
    pub fn finish(&self) {
        self.inner.lock().done = true;
        self.notify.notify_waiters();
    }

    pub fn is_done(&self) -> bool {
        self.inner.lock().done
    }

    pub fn len(&self) -> usize {
        self.inner.lock().events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Claim the consumer slot; `None` if another consumer is attached.
    pub fn attach(self: &Arc<Self>) -> Option<Attachment> {
        let mut g = self.inner.lock();
        if g.attached {
            return None;
        }
        g.attached = true;
        g.attach_gen += 1;
        Some(Attachment(self.clone(), g.attach_gen))
    }

    /// Claim the consumer slot even if taken: a client resuming with `Last-Event-ID` replaces its own earlier
    /// connection, which the server may not have noticed is dead yet. The old consumer ends.
    pub fn take_over(self: &Arc<Self>) -> Attachment {
        let mut g = self.inner.lock();
        g.attached = true;
        g.attach_gen += 1;
        let gen = g.attach_gen;
        drop(g);
        self.notify.notify_waiters();
        Attachment(self.clone(), gen)
    }

    /// Wait until at least one event is queued or the stream is finished.
    pub async fn wait_first(&self) {
        loop {
            let notified = self.notify.notified();
            {
                let g = self.inner.lock();
                if !g.events.is_empty() || g.done {
                    return;
                }
            }
            notified.await;
        }
    }

    /// If the stream holds exactly one event and is finished, take it (the JSON reply fast path).
    pub fn take_single(&self) -> Option<Arc<str>> {
        let mut g = self.inner.lock();
        if g.done && g.events.len() == 1 && g.delivered == 0 {
            let seq = g.events[0].0;
            g.delivered = seq;
            return g.events.front().map(|e| e.1.clone());
        }
        None
    }

    /// The next events after `cursor`, or wait. Returns `None` when finished and drained, or when another
    /// consumer took the stream over (`gen` is the caller's attachment generation).
    pub(crate) async fn next_batch(&self, cursor: u64, gen: Option<u64>) -> Option<Vec<(u64, Arc<str>)>> {
        loop {
            let notified = self.notify.notified();
            {
                let mut g = self.inner.lock();
                if gen.is_some_and(|x| x != g.attach_gen) {
                    return None;
                }
                let batch: Vec<(u64, Arc<str>)> =
                    g.events.iter().filter(|(s, _)| *s > cursor).map(|(s, e)| (*s, e.clone())).collect();
                if let Some((last, _)) = batch.last() {
                    g.delivered = g.delivered.max(*last);
                    return Some(batch);
                }
                if g.done {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// SSE body bytes. `resume_after` is the seq from `Last-Event-ID`; `None` starts after what an earlier
    /// consumer already received. `prime` sends an initial event carrying only an id (spec: priming event),
    /// so a client can resume even if the first real message is lost.
    pub fn sse(
        self: Arc<Self>,
        resume_after: Option<u64>,
        attachment: Option<Attachment>,
        prime: bool,
        keepalive: Option<Duration>,
    ) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
        let start = resume_after.unwrap_or_else(|| self.inner.lock().delivered);
        let gen = attachment.as_ref().map(|a| a.1);
        let prime_frame = prime.then(|| Bytes::from(format!("id: {}-{}\ndata: \n\n", self.id, start)));
        let state = (self, start, attachment, prime_frame);
        futures::stream::unfold(state, move |(buf, cursor, att, prime)| async move {
            if let Some(p) = prime {
                return Some((Ok(p), (buf, cursor, att, None)));
            }
            let batch = match keepalive {
                // A comment line keeps proxies and idle timeouts from closing a quiet stream.
                Some(k) => match tokio::time::timeout(k, buf.next_batch(cursor, gen)).await {
                    Ok(b) => b?,
                    Err(_) => return Some((Ok(Bytes::from_static(b": keepalive\n\n")), (buf, cursor, att, None))),
                },
                None => buf.next_batch(cursor, gen).await?,
            };
            let mut out = String::new();
            let mut last = cursor;
            for (seq, json) in batch {
                out.push_str(&sse::encode(Some(&format!("{}-{seq}", buf.id)), Some("message"), &json));
                last = seq;
            }
            Some((Ok(Bytes::from(out)), (buf, last, att, None)))
        })
    }
}

/// Parse `Last-Event-ID` (`{stream}-{seq}`).
pub fn parse_event_id(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn replays_after_last_event_id_and_bounds_memory() {
        let b = StreamBuf::new(3, 4);
        for i in 0..6 {
            b.push(format!("{{\"n\":{i}}}"));
        }
        b.finish();
        assert_eq!(b.len(), 4);
        let body: Vec<_> = b.clone().sse(Some(4), None, false, None).collect().await;
        let text: String = body.into_iter().map(|r| String::from_utf8_lossy(&r.unwrap()).into_owned()).collect();
        assert!(text.contains("id: 3-5") && text.contains("id: 3-6") && !text.contains("id: 3-4"), "{text}");
    }

    #[tokio::test]
    async fn single_consumer() {
        let b = StreamBuf::new(0, 4);
        let a = b.attach();
        assert!(a.is_some());
        assert!(b.attach().is_none());
        drop(a);
        let a = b.attach();
        assert!(a.is_some());
        let t = b.take_over();
        drop(a); // the stale attachment must not release the new owner's slot
        assert!(b.attach().is_none());
        drop(t);
        assert!(b.attach().is_some());
    }
}
