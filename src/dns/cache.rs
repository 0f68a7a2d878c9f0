//! The answer cache in front of the resolver: one entry per name and type, kept for the
//! answer's TTL (a negative answer for its SOA's negative TTL, at most
//! [`super::MAX_NEGATIVE_TTL`]; failures are not kept), the least recently used evicted first
//! once the entries weigh more than `[dns] cache_bytes`. A question already on the wire is not
//! asked again: later askers wait for the same answer (single flight).
//!
//! One per daemon (in [`crate::pipeline::context::Services`]), so that one bound holds
//! however many configurations are alive; a reload empties it ([`Cache::reset`]), so that
//! SIGHUP after fixing a record, or after changing `[dns] nameservers`, sees fresh answers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, Shared};
use lru::LruCache;
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::hickory_resolver::proto::rr::{RData, RecordType};

use crate::metrics::{Counter, Metrics};

/// A name (lower case, no trailing dot) and a record type.
pub type Key = (Box<str>, RecordType);

/// One answer as the checks tell answers apart.
#[derive(Debug, Clone, PartialEq)]
pub enum Answered {
    Records(Vec<RData>),
    /// NXDOMAIN, or no records of the type (NOERROR): the response code says which.
    Void(ResponseCode),
    /// Timeout, SERVFAIL, a refused query...: never kept.
    Error(String),
}

impl Answered {
    /// Roughly what the entry costs in memory, for the byte bound.
    fn weight(&self, key: &Key) -> usize {
        const ENTRY: usize = 160;
        let data = match self {
            Answered::Records(v) => v.iter().map(rdata_weight).sum(),
            Answered::Void(_) => 0,
            Answered::Error(e) => e.len(),
        };
        ENTRY + key.0.len() + data
    }
}

fn rdata_weight(d: &RData) -> usize {
    48 + match d {
        RData::TXT(t) => t.txt_data.iter().map(|s| s.len() + 24).sum(),
        RData::MX(mx) => mx.exchange.len(),
        RData::PTR(p) => p.0.len(),
        RData::CNAME(c) => c.0.len(),
        _ => 16,
    }
}

struct Entry {
    answer: Arc<Answered>,
    expires: Instant,
    weight: usize,
}

pub type Flight = Shared<BoxFuture<'static, Arc<Answered>>>;

struct Inner {
    ready: LruCache<Key, Entry>,
    bytes: usize,
    flying: HashMap<Key, Flight>,
}

/// The cache. See the module documentation.
pub struct Cache {
    inner: Mutex<Inner>,
    capacity: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("bytes", &self.bytes())
            .field("capacity", &self.capacity.load(Ordering::Relaxed))
            .finish()
    }
}

/// What [`Cache::begin`] found.
pub enum Begin {
    /// A fresh answer.
    Hit(Arc<Answered>),
    /// The same question is on the wire: wait for it.
    Wait(Flight),
    /// Nobody is asking: the caller must, then [`Cache::finish`].
    Ask,
}

impl Cache {
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> Cache {
        Cache {
            inner: Mutex::new(Inner {
                ready: LruCache::unbounded(),
                bytes: 0,
                flying: HashMap::new(),
            }),
            capacity: AtomicUsize::new(capacity),
            metrics,
        }
    }

    /// Empty, with a new bound (a new configuration).
    pub fn reset(&self, capacity: usize) {
        self.capacity.store(capacity, Ordering::Relaxed);
        let mut inner = self.lock();
        inner.ready.clear();
        inner.bytes = 0;
        self.evict(&mut inner);
    }

    /// What the entries weigh now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Entries kept now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().ready.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh answer, without asking anybody (`None`: not known now).
    #[cfg(test)]
    fn peek(&self, key: &Key) -> Option<Arc<Answered>> {
        let mut inner = self.lock();
        match inner.ready.get(key) {
            Some(e) if e.expires > Instant::now() => Some(e.answer.clone()),
            _ => None,
        }
    }

    /// Look `key` up: a fresh answer, a flight to wait for, or the caller's turn to ask. With
    /// `Ask`, `start` is called under the lock to register the caller's flight.
    pub fn begin(&self, key: &Key, start: impl FnOnce() -> Flight) -> Begin {
        let mut inner = self.lock();
        let now = Instant::now();
        let stale = match inner.ready.get(key) {
            Some(e) if e.expires > now => {
                let answer = e.answer.clone();
                drop(inner);
                self.metrics.inc(Counter::DnsCache, &[("result", "hit")]);
                return Begin::Hit(answer);
            }
            Some(_) => true,
            None => false,
        };
        if stale {
            if let Some(e) = inner.ready.pop(key) {
                inner.bytes -= e.weight;
                self.metrics.set_dns_cache(inner.bytes, inner.ready.len());
            }
        }
        if let Some(f) = inner.flying.get(key) {
            let f = f.clone();
            drop(inner);
            self.metrics.inc(Counter::DnsCache, &[("result", "joined")]);
            return Begin::Wait(f);
        }
        inner.flying.insert(key.clone(), start());
        drop(inner);
        self.metrics.inc(Counter::DnsCache, &[("result", "miss")]);
        Begin::Ask
    }

    /// The answer to a question asked after [`Begin::Ask`]: keep it for `ttl` (`None`: do not
    /// keep it) and land the flight.
    pub fn finish(&self, key: Key, answer: &Arc<Answered>, ttl: Option<Duration>) {
        let mut inner = self.lock();
        inner.flying.remove(&key);
        let Some(ttl) = ttl.filter(|t| !t.is_zero()) else {
            return;
        };
        let weight = answer.weight(&key);
        let entry = Entry {
            answer: answer.clone(),
            expires: Instant::now() + ttl,
            weight,
        };
        inner.bytes += weight;
        if let Some(old) = inner.ready.put(key, entry) {
            inner.bytes -= old.weight;
        }
        self.evict(&mut inner);
    }

    fn evict(&self, inner: &mut Inner) {
        let cap = self.capacity.load(Ordering::Relaxed);
        while inner.bytes > cap {
            match inner.ready.pop_lru() {
                Some((_, e)) => inner.bytes -= e.weight,
                None => break,
            }
        }
        self.metrics.set_dns_cache(inner.bytes, inner.ready.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::future::{ready, FutureExt};

    fn key(n: usize) -> Key {
        (format!("name{n}.example").into(), RecordType::TXT)
    }

    fn flight() -> Flight {
        ready(Arc::new(Answered::Void(ResponseCode::NXDomain)))
            .boxed()
            .shared()
    }

    fn fill(cache: &Cache, k: &Key, ttl: u64) {
        assert!(matches!(cache.begin(k, flight), Begin::Ask));
        let a = Arc::new(Answered::Void(ResponseCode::NXDomain));
        cache.finish(k.clone(), &a, Some(Duration::from_secs(ttl)));
    }

    #[test]
    fn bytes_stay_under_the_bound_whatever_streams_through() {
        let cache = Cache::new(64 * 1024, Arc::default());
        for n in 0..100_000 {
            fill(&cache, &key(n), 3600);
            assert!(cache.bytes() <= 64 * 1024);
        }
        assert!(cache.len() > 100, "{} entries", cache.len());
        // The most recent are kept, the oldest evicted.
        assert!(cache.peek(&key(99_999)).is_some());
        assert!(cache.peek(&key(0)).is_none());
        cache.reset(1024);
        assert_eq!(cache.bytes(), 0);
        assert!(cache.peek(&key(99_999)).is_none());
    }

    #[test]
    fn one_question_in_flight_per_name_and_type() {
        let cache = Cache::new(1 << 20, Arc::default());
        let k = key(1);
        assert!(matches!(cache.begin(&k, flight), Begin::Ask));
        assert!(matches!(cache.begin(&k, flight), Begin::Wait(_)));
        // Another type is another question.
        let aaaa = (k.0.clone(), RecordType::AAAA);
        assert!(matches!(cache.begin(&aaaa, flight), Begin::Ask));
        // A failure lands the flight and is not kept: the next asker asks again.
        cache.finish(
            k.clone(),
            &Arc::new(Answered::Error("timeout".into())),
            None,
        );
        assert!(matches!(cache.begin(&k, flight), Begin::Ask));
    }

    #[test]
    fn answers_expire_with_their_ttl() {
        let cache = Cache::new(1 << 20, Arc::default());
        let k = key(2);
        assert!(matches!(cache.begin(&k, flight), Begin::Ask));
        let a = Arc::new(Answered::Void(ResponseCode::NXDomain));
        cache.finish(k.clone(), &a, Some(Duration::from_millis(30)));
        assert!(matches!(cache.begin(&k, flight), Begin::Hit(_)));
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.peek(&k).is_none());
        assert!(matches!(cache.begin(&k, flight), Begin::Ask));
        assert_eq!(cache.bytes(), 0);
        // A zero TTL is not kept at all.
        cache.finish(k.clone(), &a, Some(Duration::ZERO));
        assert!(cache.peek(&k).is_none());
    }
}
