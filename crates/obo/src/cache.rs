//! Bounded cache of exchanged tokens with request coalescing and negative caching.
//!
//! A key is `Ready` (a token, until its expiry minus skew), `Refused` (a definitive refusal, until
//! `negative_ttl`) or `Pending` (one shared in-flight exchange every concurrent caller awaits). No task is
//! spawned: the exchange is a `Shared` future polled by whoever waits on it; if every waiter goes away the next
//! caller for that key resumes it, and a `Pending` entry older than [`STALE_PENDING`] is replaced.
//! The mutex is never held across an `.await`.

use crate::Secret;
use futures::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Longer than any exchange can take (its HTTP timeout), so a stale entry is one nobody is driving.
pub(crate) const STALE_PENDING: Duration = Duration::from_secs(30);

/// What one exchange produced.
pub(crate) enum Fetched {
    /// A usable credential; cached for `ttl` (`None` = do not cache).
    Ok { value: Secret, ttl: Option<Duration> },
    /// A definitive answer (4xx, unusable 2xx): remembered for `negative_ttl`.
    Refused(String),
    /// Transient (5xx, network): not remembered.
    Failed(String),
}

type Waiting = Shared<BoxFuture<'static, Result<Secret, String>>>;

enum Slot {
    Ready { value: Secret, until: Instant },
    Refused { msg: String, until: Instant },
    Pending { gen: u64, since: Instant, fut: Waiting },
}

impl Slot {
    fn live(&self, now: Instant) -> bool {
        match self {
            Slot::Ready { until, .. } | Slot::Refused { until, .. } => now < *until,
            Slot::Pending { since, .. } => now.duration_since(*since) < STALE_PENDING,
        }
    }
}

pub(crate) struct Cache<K> {
    map: Mutex<HashMap<K, Slot>>,
    cap: usize,
    negative_ttl: Duration,
    gen: AtomicU64,
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> Cache<K> {
    pub(crate) fn new(cap: usize, negative_ttl: Duration) -> Arc<Self> {
        Arc::new(Cache { map: Mutex::new(HashMap::new()), cap, negative_ttl, gen: AtomicU64::new(0) })
    }

    /// The cached answer for `key`, or the result of the one exchange in flight for it, started with `fetch` if
    /// there is none.
    pub(crate) async fn get_or_fetch(
        self: &Arc<Self>,
        key: K,
        fetch: impl FnOnce() -> BoxFuture<'static, Fetched>,
    ) -> Result<Secret, String> {
        let waiting = {
            let mut map = self.map.lock();
            let now = Instant::now();
            match map.get(&key) {
                Some(Slot::Ready { value, until }) if now < *until => return Ok(value.clone()),
                Some(Slot::Refused { msg, until }) if now < *until => return Err(msg.clone()),
                Some(slot @ Slot::Pending { fut, .. }) if slot.live(now) => fut.clone(),
                _ => {
                    let gen = self.gen.fetch_add(1, Ordering::Relaxed);
                    let cache = Arc::downgrade(self);
                    let settle_key = key.clone();
                    let inner = fetch();
                    let fut = async move {
                        let fetched = inner.await;
                        settle(&cache, &settle_key, gen, &fetched);
                        match fetched {
                            Fetched::Ok { value, .. } => Ok(value),
                            Fetched::Refused(msg) | Fetched::Failed(msg) => Err(msg),
                        }
                    }
                    .boxed()
                    .shared();
                    // Full of live entries: run this exchange uncached rather than evict in-flight ones.
                    if self.make_room(&mut map, now) {
                        map.insert(key, Slot::Pending { gen, since: now, fut: fut.clone() });
                    }
                    fut
                }
            }
        };
        waiting.await
    }

    /// Ensures one free slot: drops dead entries, then the finished entry expiring soonest. O(n), only when full.
    fn make_room(&self, map: &mut HashMap<K, Slot>, now: Instant) -> bool {
        if map.len() < self.cap {
            return true;
        }
        map.retain(|_, slot| slot.live(now));
        if map.len() < self.cap {
            return true;
        }
        let victim = map
            .iter()
            .filter_map(|(k, slot)| match slot {
                Slot::Ready { until, .. } | Slot::Refused { until, .. } => Some((k, *until)),
                Slot::Pending { .. } => None,
            })
            .min_by_key(|(_, until)| *until)
            .map(|(k, _)| k.clone());
        match victim {
            Some(k) => map.remove(&k).is_some(),
            None => false,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().len()
    }
}

/// Records the outcome, unless the entry was replaced meanwhile (stale pending, eviction).
fn settle<K: Hash + Eq + Clone>(cache: &Weak<Cache<K>>, key: &K, gen: u64, fetched: &Fetched) {
    let Some(cache) = cache.upgrade() else { return };
    let mut map = cache.map.lock();
    if !matches!(map.get(key), Some(Slot::Pending { gen: g, .. }) if *g == gen) {
        return;
    }
    let now = Instant::now();
    match fetched {
        Fetched::Ok { value, ttl: Some(ttl) } => {
            map.insert(key.clone(), Slot::Ready { value: value.clone(), until: now + *ttl });
        }
        Fetched::Refused(msg) if !cache.negative_ttl.is_zero() => {
            map.insert(key.clone(), Slot::Refused { msg: msg.clone(), until: now + cache.negative_ttl });
        }
        _ => {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Cache, Fetched};
    use crate::Secret;
    use futures::FutureExt;
    use std::time::Duration;

    fn ok(v: &str) -> Fetched {
        Fetched::Ok { value: Secret(v.into()), ttl: Some(Duration::from_secs(60)) }
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    #[test]
    fn bounded_evicts_soonest_expiring() {
        let cache = Cache::<u32>::new(2, Duration::from_secs(5));
        for k in 0..5u32 {
            let got = block(cache.get_or_fetch(k, move || async move { ok(&k.to_string()) }.boxed()));
            assert_eq!(got, Ok(Secret(k.to_string())));
            assert!(cache.len() <= 2);
        }
        // The most recent key is still cached: a second fetch for it is not run.
        let got = block(cache.get_or_fetch(4, || async { ok("refetched") }.boxed()));
        assert_eq!(got, Ok(Secret("4".into())));
    }

    #[test]
    fn transient_failures_are_forgotten() {
        let cache = Cache::<u32>::new(8, Duration::from_secs(5));
        let got = block(cache.get_or_fetch(1, || async { Fetched::Failed("down".into()) }.boxed()));
        assert_eq!(got, Err("down".into()));
        assert_eq!(cache.len(), 0);
        let got = block(cache.get_or_fetch(1, || async { Fetched::Refused("no".into()) }.boxed()));
        assert_eq!(got, Err("no".into()));
        let got = block(cache.get_or_fetch(1, || async { ok("yes") }.boxed()));
        assert_eq!(got, Err("no".into()), "refusal is remembered");
    }
}
