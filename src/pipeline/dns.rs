//! The one DNS seam: every lookup mailseal makes goes through the resolver built here.
//!
//! hickory's resolver keeps an answer cache (positive and negative answers, bounded by
//! `[dns] cache_size` entries, negative TTL capped by `max_negative_ttl`). Tests point
//! `nameservers` at a DNS server on loopback; nothing else changes.

use std::time::Duration;

use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
};
use mail_auth::MessageAuthenticator;

use crate::config::Dns;

/// Cap on how long a "no such record" answer is remembered.
const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(300);

/// Build the resolver for a configuration. Must run inside the tokio runtime.
pub fn authenticator(dns: &Dns) -> Result<MessageAuthenticator, String> {
    let mut opts = ResolverOpts::default();
    opts.timeout = dns.timeout;
    opts.attempts = dns.attempts;
    opts.cache_size = dns.cache_size as u64;
    // A truncated UDP answer is retried over TCP; large TXT records (DKIM keys) need it.
    opts.try_tcp_on_error = true;
    opts.negative_max_ttl = Some(MAX_NEGATIVE_TTL);
    let auth = if dns.nameservers.is_empty() {
        let (config, mut sys_opts) = mail_auth::hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| format!("cannot read /etc/resolv.conf: {e}"))?;
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
    .map_err(|e| format!("cannot set up the DNS resolver: {e}"))?;
    Ok(auth.with_max_negative_ttl(MAX_NEGATIVE_TTL))
}

/// RFC 7208 §4.6.4: an SPF evaluation may cause at most two "void" lookups (answers with no
/// records); past that the result is permerror. mail-auth does not count them, so each SPF
/// evaluation gets this pass-through "cache" that stores nothing and counts the negative
/// answers mail-auth hands it.
#[derive(Default)]
pub struct VoidCounter {
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    txt_count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    txt: Counting<mail_auth::TxtRecord>,
    mx: Counting<Answer<mail_auth::Mx>>,
    ipv4: Counting<Answer<std::net::Ipv4Addr>>,
    ipv6: Counting<Answer<std::net::Ipv6Addr>>,
    ptr: Counting<Answer<Box<str>>>,
}

type Answer<T> = Result<mail_auth::RecordSet<T>, mail_auth::Negative>;

impl VoidCounter {
    pub fn new() -> Self {
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let txt_count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        VoidCounter {
            txt: Counting::new(&txt_count),
            txt_count,
            mx: Counting::new(&count),
            ipv4: Counting::new(&count),
            ipv6: Counting::new(&count),
            ptr: Counting::new(&count),
            count,
        }
    }

    /// Void answers to address, MX and PTR lookups.
    pub fn voids(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Void answers to TXT lookups (include/redirect targets, or the exp= explanation).
    pub fn txt_voids(&self) -> usize {
        self.txt_count.load(std::sync::atomic::Ordering::Relaxed)
    }
}

pub struct Counting<V> {
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    _v: std::marker::PhantomData<fn() -> V>,
}

impl<V> Default for Counting<V> {
    fn default() -> Self {
        Counting {
            count: Default::default(),
            _v: std::marker::PhantomData,
        }
    }
}

impl<V> Counting<V> {
    fn new(count: &std::sync::Arc<std::sync::atomic::AtomicUsize>) -> Self {
        Counting {
            count: count.clone(),
            _v: std::marker::PhantomData,
        }
    }
}

/// Whether a cached answer is a "void" lookup result.
pub trait IsVoid {
    fn is_void(&self) -> bool;
}

impl IsVoid for mail_auth::TxtRecord {
    fn is_void(&self) -> bool {
        matches!(self, mail_auth::TxtRecord::Error(_))
    }
}

impl<T> IsVoid for Answer<T> {
    fn is_void(&self) -> bool {
        self.is_err()
    }
}

impl<K, V: IsVoid> mail_auth::ResolverCache<K, V> for Counting<V> {
    fn get<Q>(&self, _name: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        None
    }

    fn remove<Q>(&self, _name: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        None
    }

    fn insert(&self, _key: K, value: V, _valid_until: std::time::Instant) {
        if value.is_void() {
            self.count
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl mail_auth::DnsCache for VoidCounter {
    type Txt = Counting<mail_auth::TxtRecord>;
    type Mx = Counting<Answer<mail_auth::Mx>>;
    type Ipv4 = Counting<Answer<std::net::Ipv4Addr>>;
    type Ipv6 = Counting<Answer<std::net::Ipv6Addr>>;
    type Ptr = Counting<Answer<Box<str>>>;

    fn txt(&self) -> Option<&Self::Txt> {
        Some(&self.txt)
    }
    fn mx(&self) -> Option<&Self::Mx> {
        Some(&self.mx)
    }
    fn ipv4(&self) -> Option<&Self::Ipv4> {
        Some(&self.ipv4)
    }
    fn ipv6(&self) -> Option<&Self::Ipv6> {
        Some(&self.ipv6)
    }
    fn ptr(&self) -> Option<&Self::Ptr> {
        Some(&self.ptr)
    }
}

/// The answer to a TXT query, for the tools.
#[derive(Debug)]
pub enum TxtAnswer {
    /// Each record's character-strings joined.
    Records(Vec<String>),
    /// NXDOMAIN or no TXT records.
    NoRecords,
    /// Timeout, SERVFAIL, ...: not known either way.
    Error(String),
}

/// Look up the TXT records at `name` through the configured resolver.
pub async fn txt_records(auth: &mail_auth::MessageAuthenticator, name: &str) -> TxtAnswer {
    use mail_auth::hickory_resolver::proto::rr::RData;
    match auth
        .resolver()
        .txt_lookup(format!("{}.", name.trim_end_matches('.')))
        .await
    {
        Ok(l) => TxtAnswer::Records(
            l.answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(t) => Some(
                        t.txt_data
                            .iter()
                            .map(|s| String::from_utf8_lossy(s).into_owned())
                            .collect(),
                    ),
                    _ => None,
                })
                .collect(),
        ),
        Err(e) if e.is_nx_domain() || e.is_no_records_found() => TxtAnswer::NoRecords,
        Err(e) => TxtAnswer::Error(e.to_string()),
    }
}

/// `tag=value; ...` pairs of a DKIM key record, names lower-cased, values without whitespace.
pub fn record_tags(record: &str) -> Vec<(String, String)> {
    record
        .split(';')
        .filter_map(|t| {
            let (k, v) = t.split_once('=')?;
            Some((
                k.trim().to_ascii_lowercase(),
                v.chars().filter(|c| !c.is_whitespace()).collect(),
            ))
        })
        .collect()
}
