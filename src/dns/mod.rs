//! The one DNS seam: every lookup mailseal makes goes through the resolver built here.
//!
//! The verifier asks through [`Resolver`]: its [`Cache`] keeps answers for their TTL within
//! `[dns] cache_bytes`, and a question already on the wire is never asked twice (single
//! flight), so a check can start a lookup early ([`Resolver::prefetch`]) and the one that
//! needs the answer later waits for the same query. Each query runs as its own task, so it
//! finishes (and lands in the cache) even when the message that asked is gone. DKIM and ARC
//! keys reach mail-auth's verifiers through [`Keys`], a view of the same cache. hickory's own
//! cache is off; the command line tools ask hickory directly. Tests point `nameservers` at
//! a DNS server on loopback; nothing else changes.

pub mod cache;
pub mod update;

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::borrow::Borrow;
use std::hash::Hash;

use futures_util::future::FutureExt;
use mail_auth::dkim::DomainKey;
use mail_auth::dns::TxtRecordParser;
use mail_auth::hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::hickory_resolver::proto::rr::{Name, RData, RecordType};
use mail_auth::{DnsCache, Negative, NoCache, ResolverCache, TxtRecord};

use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
};
use mail_auth::MessageAuthenticator;

use crate::config::Dns;

pub use cache::{Answered, Cache};

/// Cap on how long a "no such record" answer is remembered.
pub const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(300);

/// Why the resolver could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot read /etc/resolv.conf: {0}")]
    SystemConf(String),
    #[error("cannot set up the DNS resolver: {0}")]
    Setup(String),
}

/// Build the resolver for a configuration. Must run inside the tokio runtime.
pub fn authenticator(dns: &Dns) -> Result<MessageAuthenticator, DnsError> {
    let mut opts = ResolverOpts::default();
    opts.timeout = dns.timeout;
    opts.attempts = dns.attempts;
    // Answers are kept in our cache ([`Cache`]), bounded in bytes, not twice.
    opts.cache_size = 0;
    // A truncated UDP answer is retried over TCP; large TXT records (DKIM keys) need it.
    opts.try_tcp_on_error = true;
    opts.negative_max_ttl = Some(MAX_NEGATIVE_TTL);
    let auth = if dns.nameservers.is_empty() {
        let (config, mut sys_opts) = mail_auth::hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| DnsError::SystemConf(e.to_string()))?;
        sys_opts.timeout = opts.timeout;
        sys_opts.attempts = opts.attempts;
        sys_opts.cache_size = opts.cache_size;
        sys_opts.try_tcp_on_error = true;
        sys_opts.negative_max_ttl = opts.negative_max_ttl;
        MessageAuthenticator::new(config, sys_opts)
    } else {
        let servers = dns
            .nameservers
            .iter()
            .map(|sa| {
                let mut udp = ConnectionConfig::udp();
                udp.port = sa.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = sa.port();
                NameServerConfig::new(sa.ip(), true, vec![udp, tcp])
            })
            .collect();
        MessageAuthenticator::new(ResolverConfig::from_name_servers(servers), opts)
    }
    .map_err(|e| DnsError::Setup(e.to_string()))?;
    Ok(auth.with_max_negative_ttl(MAX_NEGATIVE_TTL))
}

/// The resolver the checks use: hickory behind the daemon's answer cache.
#[derive(Clone)]
pub struct Resolver {
    auth: MessageAuthenticator,
    cache: Arc<Cache>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("cache", &self.cache)
            .finish()
    }
}

impl Resolver {
    pub fn new(auth: MessageAuthenticator, cache: Arc<Cache>) -> Resolver {
        Resolver { auth, cache }
    }

    /// mail-auth's authenticator on the same servers (its verifiers take keys from [`Keys`]).
    pub fn authenticator(&self) -> &MessageAuthenticator {
        &self.auth
    }

    /// The answer to one question: from the cache, from a query already on the wire, or
    /// asked now. A name the DNS cannot carry is never asked: it has no records.
    pub async fn lookup(&self, name: &str, rtype: RecordType) -> Arc<Answered> {
        let Some(key) = key_of(name, rtype) else {
            return Arc::new(Answered::Void(ResponseCode::NXDomain));
        };
        let mut mine = None;
        let begun = self.cache.begin(&key, || {
            let flight = self.ask(key.clone());
            mine = Some(flight.clone());
            flight
        });
        match begun {
            cache::Begin::Hit(answer) => answer,
            cache::Begin::Wait(flight) => flight.await,
            cache::Begin::Ask => match mine {
                Some(flight) => flight.await,
                None => Arc::new(Answered::Error("lookup was not started".into())),
            },
        }
    }

    /// Start asking now, for a check that will want the answer later.
    pub fn prefetch(&self, name: &str, rtype: RecordType) {
        if let Some(key) = key_of(name, rtype) {
            let _ = self.cache.begin(&key, || self.ask(key.clone()));
        }
    }

    /// The TXT records at `name`, each one's character-strings joined.
    pub async fn txt(&self, name: &str) -> Result<Vec<Vec<u8>>, TxtError> {
        match &*self.lookup(name, RecordType::TXT).await {
            Answered::Records(v) => Ok(v.iter().filter_map(txt_bytes).collect()),
            Answered::Void(code) => Err(TxtError::NotFound(*code)),
            Answered::Error(e) => Err(TxtError::Failed(e.clone())),
        }
    }

    /// One query as a task of its own: it lands in the cache whoever waits for it.
    fn ask(&self, key: cache::Key) -> cache::Flight {
        let auth = self.auth.clone();
        let cache = self.cache.clone();
        let task = tokio::spawn(async move {
            let (answer, ttl) = query(&auth, &key).await;
            let answer = Arc::new(answer);
            cache.finish(key, &answer, ttl);
            answer
        });
        async move {
            task.await
                .unwrap_or_else(|e| Arc::new(Answered::Error(format!("lookup task ended: {e}"))))
        }
        .boxed()
        .shared()
    }
}

/// Why TXT records could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxtError {
    /// NXDOMAIN, or no TXT records (NOERROR).
    NotFound(ResponseCode),
    /// The lookup failed (timeout, SERVFAIL, ...).
    Failed(String),
}

/// A TXT record's character-strings joined.
fn txt_bytes(d: &RData) -> Option<Vec<u8>> {
    match d {
        RData::TXT(t) => Some(t.txt_data.iter().flat_map(|s| s.iter().copied()).collect()),
        _ => None,
    }
}

/// The cache key: labels as they are (SPF names may hold any visible character, RFC 7208
/// §7.1), lower case, no trailing dot; `None` for a name the DNS cannot carry.
fn key_of(name: &str, rtype: RecordType) -> Option<cache::Key> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    fqdn(&name)?;
    Some((name.into_boxed_str(), rtype))
}

fn fqdn(name: &str) -> Option<Name> {
    let mut n = Name::from_labels(name.split('.').map(str::as_bytes)).ok()?;
    n.set_fqdn(true);
    Some(n)
}

/// Ask hickory; the answer and how long it may be kept.
async fn query(auth: &MessageAuthenticator, key: &cache::Key) -> (Answered, Option<Duration>) {
    let Some(name) = fqdn(&key.0) else {
        return (Answered::Void(ResponseCode::NXDomain), None);
    };
    match auth.resolver().lookup(name, key.1).await {
        Ok(l) => {
            let ttl = l.valid_until().saturating_duration_since(Instant::now());
            let v: Vec<RData> = l
                .answers()
                .iter()
                .filter(|r| r.record_type() == key.1)
                .map(|r| r.data.clone())
                .collect();
            if v.is_empty() {
                (
                    Answered::Void(ResponseCode::NoError),
                    Some(ttl.min(MAX_NEGATIVE_TTL)),
                )
            } else {
                (Answered::Records(v), Some(ttl))
            }
        }
        Err(NetError::Dns(HickoryDnsError::NoRecordsFound(no))) => (
            Answered::Void(no.response_code),
            no.negative_ttl
                .map(|s| Duration::from_secs(s.into()).min(MAX_NEGATIVE_TTL)),
        ),
        Err(e) => (Answered::Error(e.to_string()), None),
    }
}

/// DKIM and ARC keys fetched through the [`Resolver`] (its cache, single flight), handed to
/// mail-auth's verifiers as their DNS cache. A key this does not hold (not fetched, or its
/// lookup failed) is left to mail-auth, which asks hickory itself and reports what it finds.
#[derive(Default)]
pub struct Keys(Vec<(Box<str>, TxtRecord)>);

impl Keys {
    /// Fetch several keys (selector, domain), their lookups on the wire together.
    pub async fn fetch_all<'a>(
        &mut self,
        resolver: &Resolver,
        keys: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    ) {
        for (s, d) in keys.clone() {
            resolver.prefetch(&format!("{s}._domainkey.{d}"), RecordType::TXT);
        }
        for (s, d) in keys {
            self.fetch(resolver, s, d).await;
        }
    }

    /// Fetch the key record at `selector._domainkey.domain`.
    pub async fn fetch(&mut self, resolver: &Resolver, selector: &str, domain: &str) {
        // Named as mail-auth asks for it: lower case, fully qualified.
        let name = format!("{selector}._domainkey.{domain}.").to_ascii_lowercase();
        // d= and s= are host names (RFC 6376 §3.1, §3.5): anything else is left to mail-auth,
        // which refuses it.
        let host = |s: &str| s.is_ascii() && crate::message::normalize_domain(s).is_ok();
        if !host(selector) || !host(domain) || self.0.iter().any(|(n, _)| **n == *name) {
            return;
        }
        let record = match resolver.txt(&name).await {
            Ok(txt) => TxtRecord::from(DomainKey::parse_records(&txt)),
            Err(TxtError::NotFound(code)) => TxtRecord::Error(Negative { code }.into()),
            Err(TxtError::Failed(_)) => return,
        };
        self.0.push((name.into_boxed_str(), record));
    }
}

impl ResolverCache<Box<str>, TxtRecord> for Keys {
    fn get<Q>(&self, name: &Q) -> Option<TxtRecord>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0
            .iter()
            .find(|(k, _)| Borrow::<Q>::borrow(k) == name)
            .map(|(_, r)| r.clone())
    }

    fn remove<Q>(&self, _: &Q) -> Option<TxtRecord>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        None
    }

    /// What mail-auth asked for itself is not kept here: the resolver's cache is the one.
    fn insert(&self, _: Box<str>, _: TxtRecord, _: Instant) {}
}

impl DnsCache for Keys {
    type Txt = Keys;
    type Mx = NoCache;
    type Ipv4 = NoCache;
    type Ipv6 = NoCache;
    type Ptr = NoCache;

    fn txt(&self) -> Option<&Keys> {
        Some(self)
    }
    fn mx(&self) -> Option<&NoCache> {
        None
    }
    fn ipv4(&self) -> Option<&NoCache> {
        None
    }
    fn ipv6(&self) -> Option<&NoCache> {
        None
    }
    fn ptr(&self) -> Option<&NoCache> {
        None
    }
}
