//! SPF (RFC 7208): mailseal's own evaluator, on the daemon's resolver.
//!
//! - [`record`]: the record syntax, parsed strictly (any error is `permerror`, §4.6);
//! - [`macros`]: macro expansion and the checks a name passes before it is looked up;
//! - [`eval`]: check_host() with include, redirect, the explanation, and the limits on
//!   DNS-querying terms and void lookups (§4.6.4, from `[verify]`);
//! - [`dns`]: the lookups, through the one resolver (its cache and timeouts).
//!
//! Why our own: the library SPF answered `temperror` for malformed names (451 for every
//! message from a domain with a broken record), `pass` for invalid CIDR lengths and dual-CIDR
//! mismatches, and used one of two records at a name; viaspf, the other candidate, mishandles
//! `/0` prefixes and macro letters inside the crate. The RFC is short enough to implement
//! exactly, and the third-party suite checks every branch (tests/it/conformance_verify.rs).

pub mod dns;
mod eval;
pub mod macros;
pub mod record;

use std::net::IpAddr;

use crate::results::Word;

/// One SPF question: may `ip` send mail for `local@domain`?
#[derive(Debug, Clone)]
pub struct Query<'a> {
    pub ip: IpAddr,
    /// The sender's local part (`postmaster` when it has none, and for the HELO identity).
    pub local: &'a str,
    /// The domain checked: the MAIL FROM domain, or the HELO name.
    pub domain: &'a str,
    pub helo: &'a str,
    /// Our host name (`%{r}`).
    pub receiver: &'a str,
}

impl<'a> Query<'a> {
    /// The MAIL FROM identity (§2.4): `sender` is the reverse path without brackets; the
    /// null sender is `postmaster@<helo>`.
    pub fn mail_from(ip: IpAddr, sender: &'a str, helo: &'a str, receiver: &'a str) -> Self {
        let (local, domain) = match sender.rsplit_once('@') {
            Some((l, d)) => (l, d),
            None if sender.is_empty() => ("postmaster", helo),
            None => ("postmaster", sender),
        };
        Query {
            ip: ip.to_canonical(),
            local: if local.is_empty() {
                "postmaster"
            } else {
                local
            },
            domain,
            helo,
            receiver,
        }
    }

    /// The HELO identity (§2.3).
    pub fn helo(ip: IpAddr, helo: &'a str, receiver: &'a str) -> Self {
        Query {
            ip: ip.to_canonical(),
            local: "postmaster",
            domain: helo,
            helo,
            receiver,
        }
    }
}

/// Limits on one evaluation (§4.6.4).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Terms that query DNS (include, a, mx, ptr, exists, redirect).
    pub lookups: usize,
    /// Lookups that return no records.
    pub void_lookups: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            lookups: 10,
            void_lookups: 2,
        }
    }
}

/// The result of check_host().
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub result: Word,
    /// The domain's explanation of a `fail` (its `exp=`).
    pub explanation: Option<String>,
    /// Why a `permerror` or `temperror`.
    pub reason: Option<String>,
}

/// Evaluate SPF for one identity. The caller bounds the time it may take.
pub async fn check_host(resolver: &crate::dns::Resolver, q: &Query<'_>, limits: Limits) -> Verdict {
    let domain = q.domain.strip_suffix('.').unwrap_or(q.domain);
    // §4.3: an identity that is not a domain name (an address literal, one label, a bad
    // label) has no SPF policy.
    let is_hostname = domain.split('.').all(|l| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !is_hostname || !macros::is_valid_name(domain) {
        return Verdict {
            result: Word::None,
            explanation: None,
            reason: Some(format!("{:?} is not a domain name", q.domain)),
        };
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let q = Query {
        domain,
        ..q.clone()
    };
    eval::Eval::new(dns::Dns(resolver), &q, limits, now)
        .run()
        .await
}
