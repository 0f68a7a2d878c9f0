//! SPF (RFC 7208) through the library, with the void-lookup limit (§4.6.4) counted here.

use std::net::IpAddr;

use mail_auth::spf::verify::SpfParameters;
use mail_auth::{MessageAuthenticator, SpfOutput, SpfResult};

use crate::results::{SpfIdentity, SpfVerdict, Word};

/// SPF for the MAIL FROM identity (postmaster@HELO for the null sender) and, when asked, for
/// the HELO identity, concurrently.
pub async fn check_spf(
    auth: &MessageAuthenticator,
    ip: IpAddr,
    helo: &str,
    host: &str,
    mail_from: &str,
    check_helo: bool,
) -> (SpfOutput, Option<SpfOutput>) {
    let mf = check(auth, SpfParameters::mail_from(ip, helo, host, mail_from));
    let h = async {
        if check_helo {
            Some(check(auth, SpfParameters::helo(ip, helo, host)).await)
        } else {
            None
        }
    };
    tokio::join!(mf, h)
}

/// One SPF evaluation with the RFC 7208 §4.6.4 void-lookup limit (more than two → permerror).
pub async fn check(auth: &MessageAuthenticator, params: SpfParameters<'_>) -> SpfOutput {
    let voids = VoidCounter::new();
    let out = auth
        .verify_spf(mail_auth::Parameters::new(params).with_cache(&voids))
        .await;
    // A void include/redirect target already makes the result permerror, so on a fail any
    // void TXT answer was the exp= explanation lookup, which is not a counted term.
    let total = voids.voids()
        + if out.result() == SpfResult::Fail {
            0
        } else {
            voids.txt_voids()
        };
    if total > 2 && !matches!(out.result(), SpfResult::TempError | SpfResult::PermError) {
        tracing::debug!(voids = total, "SPF void lookup limit exceeded");
        return SpfOutput::new(out.domain().to_string()).with_result(SpfResult::PermError);
    }
    out
}

/// The verdict for one identity; `None`: the check did not finish in time.
pub fn verdict(identity: SpfIdentity, shown: String, out: Option<&SpfOutput>) -> SpfVerdict {
    let (result, comment) = match out {
        Some(o) => (Word::from(o.result()), o.explanation().map(str::to_string)),
        None => (Word::TempError, Some(super::UNFINISHED.to_string())),
    };
    SpfVerdict {
        identity,
        result,
        shown,
        comment,
    }
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
