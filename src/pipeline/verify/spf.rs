//! SPF for the message: the MAIL FROM identity and, when configured, the HELO identity,
//! through mailseal's evaluator ([`crate::spf`]).

use std::net::IpAddr;

use crate::config::Config;
use crate::dns::Resolver;
use crate::results::{SpfIdentity, SpfVerdict, Word};
use crate::spf::{check_host, Limits, Query};

pub use crate::spf::Verdict;

/// The limits `[verify]` sets.
pub fn limits(config: &Config) -> Limits {
    Limits {
        lookups: config.verify.spf_max_lookups,
        void_lookups: config.verify.spf_max_void_lookups,
    }
}

/// SPF for the MAIL FROM identity (postmaster@HELO for the null sender).
pub async fn check_mail_from(
    resolver: &Resolver,
    limits: Limits,
    ip: IpAddr,
    helo: &str,
    receiver: &str,
    mail_from: &str,
) -> Verdict {
    check_host(
        resolver,
        &Query::mail_from(ip, mail_from, helo, receiver),
        limits,
    )
    .await
}

/// SPF for the HELO identity.
pub async fn check_helo(
    resolver: &Resolver,
    limits: Limits,
    ip: IpAddr,
    helo: &str,
    receiver: &str,
) -> Verdict {
    check_host(resolver, &Query::helo(ip, helo, receiver), limits).await
}

/// The verdict for one identity; `None`: the check did not finish in time.
pub fn verdict(identity: SpfIdentity, shown: String, out: Option<&Verdict>) -> SpfVerdict {
    let (result, comment) = match out {
        Some(v) => (v.result, v.explanation.clone().or_else(|| v.reason.clone())),
        None => (Word::TempError, Some(super::UNFINISHED.to_string())),
    };
    SpfVerdict {
        identity,
        result,
        shown,
        comment,
    }
}
