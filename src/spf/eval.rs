//! `check_host()` (RFC 7208 §4): record selection, mechanisms in order, include and redirect,
//! the lookup and void-lookup limits, and the explanation.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use super::dns::{Answer, Dns};
use super::macros::{expand, is_valid_name, truncate, uses_validated_name, Values};
use super::record::{
    is_spf_record, macro_string, parse, Context, MacroString, Mechanism, Qualifier, Record,
};
use super::{Limits, Query, Verdict};
use crate::results::Word;

/// §4.6.4: at most this many MX names, and PTR names, are followed per mechanism.
const MAX_NAMES: usize = 10;

/// Why the evaluation stopped with an error result.
#[derive(Debug)]
struct Stop {
    result: Word,
    reason: String,
}

fn perm(reason: impl Into<String>) -> Stop {
    Stop {
        result: Word::PermError,
        reason: reason.into(),
    }
}

fn temp(reason: impl Into<String>) -> Stop {
    Stop {
        result: Word::TempError,
        reason: reason.into(),
    }
}

/// What one check_host() found.
struct Found {
    result: Word,
    explanation: Option<String>,
}

impl Found {
    fn of(result: Word) -> Found {
        Found {
            result,
            explanation: None,
        }
    }
}

type Boxed<'s, T> = Pin<Box<dyn Future<Output = T> + Send + 's>>;

pub(super) struct Eval<'a> {
    dns: Dns<'a>,
    q: &'a Query<'a>,
    limits: Limits,
    lookups: usize,
    voids: usize,
    /// `%{p}` and `ptr` share the validated names (looked up once).
    validated: Option<Vec<String>>,
    now: u64,
}

impl<'a> Eval<'a> {
    pub(super) fn new(dns: Dns<'a>, q: &'a Query<'a>, limits: Limits, now: u64) -> Eval<'a> {
        Eval {
            dns,
            q,
            limits,
            lookups: 0,
            voids: 0,
            validated: None,
            now,
        }
    }

    /// The whole evaluation for the query's domain.
    pub(super) async fn run(mut self) -> Verdict {
        match self.check_host(self.q.domain.to_string()).await {
            Ok(f) => Verdict {
                result: f.result,
                explanation: f.explanation,
                reason: None,
            },
            Err(stop) => Verdict {
                result: stop.result,
                explanation: None,
                reason: Some(stop.reason),
            },
        }
    }

    fn check_host(&mut self, domain: String) -> Boxed<'_, Result<Found, Stop>> {
        Box::pin(async move {
            // §4.3: a malformed domain, or one without records, has no SPF policy.
            if !is_valid_name(&domain) {
                return Ok(Found::of(Word::None));
            }
            let records = match self.dns.txt(&domain).await {
                Answer::Records(r) => r,
                Answer::Void => return Ok(Found::of(Word::None)),
                Answer::Error(e) => return Err(temp(format!("looking up {domain}: {e}"))),
            };
            let spf: Vec<&String> = records.iter().filter(|r| is_spf_record(r)).collect();
            let text = match spf.as_slice() {
                [] => return Ok(Found::of(Word::None)),
                [one] => *one,
                _ => return Err(perm(format!("{domain} has several SPF records"))),
            };
            let record = parse(text).map_err(|e| perm(format!("{domain}: {e}")))?;
            self.evaluate(&record, &domain).await
        })
    }

    async fn evaluate(&mut self, record: &Record, domain: &str) -> Result<Found, Stop> {
        self.prefetch(record, domain);
        for d in &record.directives {
            if d.mechanism.counts_lookup() {
                self.count_lookup()?;
            }
            if self.matches(&d.mechanism, domain).await? {
                let result = match d.qualifier {
                    Qualifier::Pass => Word::Pass,
                    Qualifier::Fail => Word::Fail,
                    Qualifier::SoftFail => Word::SoftFail,
                    Qualifier::Neutral => Word::Neutral,
                };
                let explanation = match (&record.exp, result) {
                    (Some(exp), Word::Fail) => self.explain(exp, domain).await,
                    _ => None,
                };
                return Ok(Found {
                    result,
                    explanation,
                });
            }
        }
        if let Some(redirect) = &record.redirect {
            self.count_lookup()?;
            let target = self.target(redirect, domain).await?;
            let found = self.check_host(target.clone()).await?;
            if found.result == Word::None {
                return Err(perm(format!("redirect={target}: no SPF record")));
            }
            return Ok(found);
        }
        Ok(Found::of(Word::Neutral))
    }

    /// Ask now for what the record's terms will look up, within the lookups the limit still
    /// allows, so that the answers are there (or on their way) when evaluation reaches each
    /// term in order. Terms whose names need the validated client name (`%{p}`) wait.
    fn prefetch(&self, record: &Record, domain: &str) {
        let mut budget = self.limits.lookups.saturating_sub(self.lookups);
        let v4 = self.q.ip.is_ipv4();
        let values = self.values(domain, None);
        let name = |spec: &MacroString| {
            (!uses_validated_name(spec)).then(|| truncate(&expand(spec, &values)).to_string())
        };
        let terms = record
            .directives
            .iter()
            .map(|d| &d.mechanism)
            .filter(|m| m.counts_lookup());
        for m in terms {
            if budget == 0 {
                return;
            }
            budget -= 1;
            match m {
                Mechanism::Include(spec) => {
                    if let Some(n) = name(spec).filter(|n| is_valid_name(n)) {
                        self.dns.prefetch_txt(&n);
                    }
                }
                Mechanism::A { domain: spec, .. } => {
                    let n = spec.as_ref().map_or(Some(domain.to_string()), name);
                    if let Some(n) = n.filter(|n| is_valid_name(n)) {
                        self.dns.prefetch_addresses(&n, v4);
                    }
                }
                Mechanism::Mx { domain: spec, .. } => {
                    let n = spec.as_ref().map_or(Some(domain.to_string()), name);
                    if let Some(n) = n.filter(|n| is_valid_name(n)) {
                        self.dns.prefetch_mx(&n);
                    }
                }
                Mechanism::Exists(spec) => {
                    if let Some(n) = name(spec).filter(|n| is_valid_name(n)) {
                        self.dns.prefetch_addresses(&n, true);
                    }
                }
                _ => {}
            }
        }
        if let Some(n) = record
            .redirect
            .as_ref()
            .filter(|_| budget > 0)
            .and_then(name)
            .filter(|n| is_valid_name(n))
        {
            self.dns.prefetch_txt(&n);
        }
    }

    fn count_lookup(&mut self) -> Result<(), Stop> {
        self.lookups += 1;
        if self.lookups > self.limits.lookups {
            return Err(perm(format!(
                "more than {} DNS-querying terms",
                self.limits.lookups
            )));
        }
        Ok(())
    }

    fn count_void(&mut self) -> Result<(), Stop> {
        self.voids += 1;
        if self.voids > self.limits.void_lookups {
            return Err(perm(format!(
                "more than {} void lookups",
                self.limits.void_lookups
            )));
        }
        Ok(())
    }

    async fn matches(&mut self, m: &Mechanism, domain: &str) -> Result<bool, Stop> {
        let ip = self.q.ip;
        match m {
            Mechanism::All => Ok(true),
            Mechanism::Ip4(net, len) => Ok(in_network(ip, IpAddr::V4(*net), *len)),
            Mechanism::Ip6(net, len) => Ok(in_network(ip, IpAddr::V6(*net), *len)),
            Mechanism::Include(spec) => {
                let target = self.target(spec, domain).await?;
                let found = self.check_host(target.clone()).await?;
                match found.result {
                    Word::Pass => Ok(true),
                    Word::None => Err(perm(format!("include:{target}: no SPF record"))),
                    _ => Ok(false),
                }
            }
            Mechanism::A {
                domain: spec,
                cidr4,
                cidr6,
            } => {
                let target = self.target_or(spec.as_ref(), domain).await?;
                let addrs = self.addresses(&target, ip.is_ipv4(), true).await?;
                Ok(addrs
                    .iter()
                    .any(|a| in_network(ip, *a, cidr_for(ip, *cidr4, *cidr6))))
            }
            Mechanism::Mx {
                domain: spec,
                cidr4,
                cidr6,
            } => {
                let target = self.target_or(spec.as_ref(), domain).await?;
                if !is_valid_name(&target) {
                    return Ok(false);
                }
                let names = match self.dns.mx(&target).await {
                    Answer::Records(n) => n,
                    Answer::Void => {
                        self.count_void()?;
                        return Ok(false);
                    }
                    Answer::Error(e) => return Err(temp(format!("MX {target}: {e}"))),
                };
                if names.len() > MAX_NAMES {
                    return Err(perm(format!(
                        "{target} has more than {MAX_NAMES} MX records"
                    )));
                }
                for name in names.iter().filter(|n| is_valid_name(n)) {
                    self.dns.prefetch_addresses(name, ip.is_ipv4());
                }
                for name in names.iter().filter(|n| is_valid_name(n)) {
                    let addrs = self.addresses(name, ip.is_ipv4(), false).await?;
                    let len = cidr_for(ip, *cidr4, *cidr6);
                    if addrs.iter().any(|a| in_network(ip, *a, len)) {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Mechanism::Ptr(spec) => {
                let target = self.target_or(spec.as_ref(), domain).await?;
                let target = target.trim_end_matches('.');
                let names = self.validated_names().await?;
                Ok(names.iter().any(|n| is_same_or_sub(n, target)))
            }
            Mechanism::Exists(spec) => {
                let target = self.target(spec, domain).await?;
                // §5.7: always an A query, whatever the client's address family.
                Ok(!self.addresses(&target, true, true).await?.is_empty())
            }
        }
    }

    /// Address records of a name; a void answer counts (when `counted`) and matches nothing.
    async fn addresses(
        &mut self,
        name: &str,
        v4: bool,
        counted: bool,
    ) -> Result<Vec<IpAddr>, Stop> {
        if !is_valid_name(name) {
            return Ok(Vec::new());
        }
        match self.dns.addresses(name, v4).await {
            Answer::Records(a) => Ok(a),
            Answer::Void => {
                if counted {
                    self.count_void()?;
                }
                Ok(Vec::new())
            }
            Answer::Error(e) => Err(temp(format!("{name}: {e}"))),
        }
    }

    /// §5.5: the client's PTR names (at most ten) whose addresses include the client.
    async fn validated_names(&mut self) -> Result<Vec<String>, Stop> {
        if let Some(v) = &self.validated {
            return Ok(v.clone());
        }
        let ip = self.q.ip;
        let names = match self.dns.ptr(ip).await {
            Answer::Records(n) => n,
            Answer::Void => {
                self.count_void()?;
                Vec::new()
            }
            // A DNS error here makes the mechanism not match (§5.5).
            Answer::Error(_) => Vec::new(),
        };
        let mut valid = Vec::new();
        for name in names.into_iter().take(MAX_NAMES) {
            let name = name.trim_end_matches('.').to_string();
            if !is_valid_name(&name) {
                continue;
            }
            if let Answer::Records(a) = self.dns.addresses(&name, ip.is_ipv4()).await {
                if a.contains(&ip) {
                    valid.push(name);
                }
            }
        }
        self.validated = Some(valid.clone());
        Ok(valid)
    }

    /// The name a domain-spec names here (§4.8, §7.3): expanded and truncated. It may not be
    /// a valid name: check_host() then finds no policy (§4.3), and a mechanism no match.
    async fn target(&mut self, spec: &MacroString, domain: &str) -> Result<String, Stop> {
        let validated = if uses_validated_name(spec) {
            let names = self.validated_names().await?;
            names
                .iter()
                .find(|n| is_same_or_sub(n, domain))
                .or(names.first())
                .cloned()
        } else {
            None
        };
        let expanded = expand(spec, &self.values(domain, validated.as_deref()));
        Ok(truncate(&expanded).to_string())
    }

    async fn target_or(
        &mut self,
        spec: Option<&MacroString>,
        domain: &str,
    ) -> Result<String, Stop> {
        match spec {
            Some(s) => self.target(s, domain).await,
            None => Ok(domain.to_string()),
        }
    }

    /// §6.2: the explanation for a fail. Any problem only means there is none.
    async fn explain(&mut self, exp: &MacroString, domain: &str) -> Option<String> {
        let target = self.target(exp, domain).await.ok()?;
        let Answer::Records(txt) = self.dns.txt(&target).await else {
            return None;
        };
        let [text] = txt.as_slice() else {
            return None;
        };
        let ms = macro_string(text, Context::Explanation).ok()?;
        let validated = if uses_validated_name(&ms) {
            let names = self.validated_names().await.ok()?;
            names.first().cloned()
        } else {
            None
        };
        let out = expand(&ms, &self.values(domain, validated.as_deref()));
        Some(out.chars().filter(|c| !c.is_control()).collect())
    }

    fn values<'v>(&'v self, domain: &'v str, validated: Option<&'v str>) -> Values<'v> {
        Values {
            local: self.q.local,
            sender_domain: self.q.domain,
            domain,
            ip: self.q.ip,
            helo: self.q.helo,
            receiver: self.q.receiver,
            validated,
            now: self.now,
        }
    }
}

/// The prefix length that applies to the client's address family.
fn cidr_for(ip: IpAddr, cidr4: u8, cidr6: u8) -> u8 {
    if ip.is_ipv4() {
        cidr4
    } else {
        cidr6
    }
}

/// `ip` is in `net/len`, both of the same family.
fn in_network(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// `name` is `target` or below it (case-insensitive, trailing dots ignored).
fn is_same_or_sub(name: &str, target: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let target = target.trim_end_matches('.').to_ascii_lowercase();
    name == target || crate::message::is_subdomain(&name, &target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_network(ip("192.0.2.7"), ip("192.0.2.0"), 24));
        assert!(!in_network(ip("192.0.3.7"), ip("192.0.2.0"), 24));
        assert!(in_network(ip("10.0.0.1"), ip("192.0.2.0"), 0));
        assert!(in_network(ip("2001:db8::1"), ip("2001:db8::"), 32));
        assert!(in_network(ip("::1"), ip("2001:db8::"), 0));
        assert!(!in_network(ip("192.0.2.7"), ip("::"), 0));
        assert!(is_same_or_sub("mx.Example.com.", "example.com"));
        assert!(!is_same_or_sub("badexample.com", "example.com"));
    }
}
