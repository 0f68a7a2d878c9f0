//! DMARC (RFC 9989) as mailseal applies it: policy discovery by the DNS tree walk, then
//! identifier alignment.
//!
//! Ours rather than the library's, so that:
//! - the author domain is the one normalised value ([`crate::message::Author`]) used for the
//!   lookup, alignment, the Authentication-Results field and the reports;
//! - the policy is discovered first and on its own, before and beside any signature work;
//! - only identifiers that can align with the author domain are ever waited for or looked up
//!   for alignment: an unaligned signature or MAIL FROM domain, whatever its DNS does, cannot
//!   change the verdict;
//! - an aligned signature that could not be checked (its fields or the body were not kept)
//!   makes the verdict *unverifiable*, never a fail.

use std::sync::Arc;

use futures_util::future::join_all;
use mail_auth::dmarc::{Alignment, DmarcRecord, Policy, Psd};
use mail_auth::dns::TxtRecordParser;
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::hickory_resolver::proto::rr::RecordType;

use crate::dns::{Answered, Resolver, TxtError};

use crate::message::is_subdomain;
use crate::results::{DkimVerdict, DmarcVerdict, PolicyRecord as Found, Word};

/// What policy discovery found for the author domain.
#[derive(Debug, Clone)]
pub enum Discovery {
    /// No DMARC record applies: DMARC does not apply to the message.
    None,
    Found(Found),
    /// A lookup failed: whether a policy applies is not known.
    TempError(String),
}

/// RFC 9989 §4.10: at most eight queries, from the name itself up to the top-level domain
/// (skipping to the seven-label name from deeper ones).
const MAX_WALK: usize = 8;

/// A lookup failed: whether a record exists there is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DNS error at _dmarc.{name}: {error}")]
pub struct LookupFailed {
    pub name: String,
    pub error: String,
}

/// The DMARC records found walking up from `domain`, longest name first; a record with `psd=`
/// ends the walk. Every name of the walk is asked at once (they are at most eight), and the
/// answers are read in walk order: a name past a `psd=` record costs a query, never a round
/// trip.
async fn tree_walk(
    resolver: &Resolver,
    domain: &str,
) -> Result<Vec<(String, Arc<DmarcRecord>)>, LookupFailed> {
    let names = walk_names(domain);
    let answers = join_all(names.iter().map(|name| {
        let name = format!("_dmarc.{name}");
        async move { resolver.txt(&name).await }
    }))
    .await;
    let mut found = Vec::new();
    for (name, answer) in names.into_iter().zip(answers) {
        match answer {
            Ok(records) => {
                // A record that does not parse is no record (RFC 9989 §4.10.1).
                if let Ok(record) = DmarcRecord::parse_records(&records) {
                    let stop = matches!(record.psd, Psd::Yes | Psd::No);
                    found.push((name, Arc::new(record)));
                    if stop {
                        break;
                    }
                }
            }
            Err(TxtError::NotFound(_)) => {}
            Err(TxtError::Failed(error)) => return Err(LookupFailed { name, error }),
        }
    }
    Ok(found)
}

/// The organizational domain of `domain` (RFC 9989 §4.10.2): from the tree walk, or the
/// domain itself when the walk finds no record.
pub async fn org_domain(resolver: &Resolver, domain: &str) -> Result<String, LookupFailed> {
    let walk = tree_walk(resolver, domain).await?;
    Ok(organizational_domain(&walk, domain).unwrap_or_else(|| domain.to_string()))
}

/// The names the tree walk asks about (RFC 9989 §4.10.1): the domain, then its parents up to
/// the top, at most eight (past seven labels the walk jumps to the last seven).
pub fn walk_names(domain: &str) -> Vec<String> {
    let labels: Vec<&str> = domain.split('.').filter(|l| !l.is_empty()).collect();
    let mut names = Vec::new();
    if labels.len() >= 2 {
        let mut count = labels.len();
        for _ in 0..MAX_WALK {
            names.push(labels[labels.len() - count..].join("."));
            if count == 1 {
                break;
            }
            count = if count > 8 { 7 } else { count - 1 };
        }
    }
    names
}

/// RFC 9989 §4.10.2: the domain of the record with psd=n, else one label below a record with
/// psd=y, else the shortest name with a record.
fn organizational_domain(walk: &[(String, Arc<DmarcRecord>)], start: &str) -> Option<String> {
    for (name, record) in walk {
        match record.psd {
            Psd::No => return Some(name.clone()),
            Psd::Yes if name != start => {
                let depth = name.split('.').count() + 1;
                let labels: Vec<&str> = start.split('.').collect();
                return Some(labels[labels.len().saturating_sub(depth)..].join("."));
            }
            _ => {}
        }
    }
    walk.last().map(|(name, _)| name.clone())
}

/// Find the DMARC policy of an author domain (already normalised, A-labels).
pub async fn discover(resolver: &Resolver, author: &str) -> Discovery {
    let walk = match tree_walk(resolver, author).await {
        Ok(w) => w,
        Err(e) => return Discovery::TempError(e.to_string()),
    };
    let Some(org_domain) = organizational_domain(&walk, author) else {
        return Discovery::None;
    };
    let own = walk.iter().find(|(n, _)| n == author);
    let Some((policy_domain, record)) = own
        .or_else(|| walk.iter().find(|(n, _)| *n == org_domain))
        .or_else(|| walk.last())
        .cloned()
    else {
        return Discovery::None;
    };
    let mut policy = if record.p == Policy::Unspecified {
        // RFC 9989 §4.7: a record without a valid p= but with rua= is p=none; without either
        // it does not apply.
        if record.rua.is_empty() {
            return Discovery::None;
        }
        Policy::None
    } else if own.is_some() {
        record.p
    } else if record.np != record.sp && !domain_exists(resolver, author).await {
        record.np
    } else {
        record.sp
    };
    if record.t {
        policy = match policy {
            Policy::Reject => Policy::Quarantine,
            Policy::Quarantine => Policy::None,
            other => other,
        };
    }
    Discovery::Found(Found {
        record,
        policy_domain,
        org_domain,
        policy,
    })
}

/// RFC 9989 §4.10.3 (np=): only an NXDOMAIN answer makes a domain non-existent; any other
/// answer or failure counts as existing.
async fn domain_exists(resolver: &Resolver, domain: &str) -> bool {
    !matches!(
        &*resolver.lookup(domain, RecordType::A).await,
        Answered::Void(ResponseCode::NXDomain)
    )
}

/// Alignment under a found record (RFC 9989 §4.8).
impl Found {
    /// Whether `d` could align with `author` under this record, judged on the names alone:
    /// the author domain itself, or (relaxed) a name at or below its organizational domain.
    /// Only such identifiers are waited for or looked up.
    pub fn could_align(&self, author: &str, d: &str, mode: Alignment) -> bool {
        d == author
            || (mode == Alignment::Relaxed
                && (d == self.org_domain || is_subdomain(d, &self.org_domain)))
    }

    /// RFC 9989 §4.8 identifier alignment. Relaxed alignment below the organizational domain
    /// needs that name's own organizational domain (a tree walk in the author's DNS); a
    /// failed walk is an error, since it could change the answer.
    pub async fn aligned(
        &self,
        resolver: &Resolver,
        author: &str,
        d: &str,
        mode: Alignment,
    ) -> Result<bool, LookupFailed> {
        if d == author || (mode == Alignment::Relaxed && d == self.org_domain) {
            return Ok(true);
        }
        if !self.could_align(author, d, mode) {
            return Ok(false);
        }
        let walk = tree_walk(resolver, d).await?;
        Ok(organizational_domain(&walk, d).as_deref().unwrap_or(d) == self.org_domain)
    }
}

/// How one identifier (SPF's MAIL FROM domain, or a DKIM signature's d=) came out, as DMARC
/// needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Pass,
    /// A lookup failed: it might have passed.
    TempError,
    /// It was not checked (fields or body not kept): it might have passed.
    NotEvaluated,
    /// Anything else: it did not pass.
    Other,
}

impl Check {
    pub fn of_dkim(v: &DkimVerdict) -> Check {
        match v.result {
            Word::Pass => Check::Pass,
            Word::TempError => Check::TempError,
            _ if v.not_evaluated => Check::NotEvaluated,
            _ => Check::Other,
        }
    }

    pub fn of_spf(r: Word) -> Check {
        match r {
            Word::Pass => Check::Pass,
            Word::TempError => Check::TempError,
            _ => Check::Other,
        }
    }
}

/// Judge a message under a found policy from its SPF (MAIL FROM domain) and DKIM (each d=)
/// results. Only identifiers that can align are considered, so nothing unaligned can make
/// the result a temperror or keep it from being a fail.
pub async fn judge(
    resolver: &Resolver,
    found: &Found,
    author: &str,
    spf: Option<(&str, Check)>,
    dkim: &[(&str, Check)],
) -> DmarcVerdict {
    let mut v = DmarcVerdict::new(Word::Fail, None);
    let mut temp: Option<String> = None;
    let mut not_evaluated = false;
    let adkim = found.record.adkim;
    for &(d, check) in dkim {
        if check == Check::Other {
            continue;
        }
        match found.aligned(resolver, author, d, adkim).await {
            Ok(false) => {}
            Ok(true) => match check {
                Check::Pass => v.dkim_aligned = true,
                Check::TempError => {
                    temp.get_or_insert_with(|| format!("aligned DKIM signature d={d}: DNS error"));
                }
                Check::NotEvaluated => not_evaluated = true,
                Check::Other => {}
            },
            Err(e) => {
                temp.get_or_insert(e.to_string());
            }
        }
    }
    if let Some((mfd, check)) = spf.filter(|(_, c)| matches!(c, Check::Pass | Check::TempError)) {
        match found
            .aligned(resolver, author, mfd, found.record.aspf)
            .await
        {
            Ok(true) if check == Check::Pass => v.spf_aligned = true,
            Ok(true) => {
                temp.get_or_insert_with(|| format!("aligned SPF domain {mfd}: DNS error"));
            }
            Ok(false) => {}
            Err(e) => {
                temp.get_or_insert(e.to_string());
            }
        }
    }
    if v.dkim_aligned || v.spf_aligned {
        v.result = Word::Pass;
    } else if let Some(t) = temp {
        v.result = Word::TempError;
        v.reason = Some(t);
    } else if not_evaluated {
        v.unverifiable = true;
        v.result = Word::None;
        v.reason = Some("not decided: an aligned DKIM signature could not be evaluated".into());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(s: &str) -> Arc<DmarcRecord> {
        Arc::new(DmarcRecord::parse(s.as_bytes()).unwrap())
    }

    #[test]
    fn organizational_domain_rules() {
        let walk = vec![("example.com".to_string(), rec("v=DMARC1; p=reject"))];
        assert_eq!(
            organizational_domain(&walk, "a.b.example.com").as_deref(),
            Some("example.com")
        );
        let walk = vec![("com".to_string(), rec("v=DMARC1; p=none; psd=y"))];
        assert_eq!(
            organizational_domain(&walk, "a.b.example.com").as_deref(),
            Some("example.com")
        );
        let walk = vec![
            ("b.example.com".to_string(), rec("v=DMARC1; p=none; psd=n")),
            ("example.com".to_string(), rec("v=DMARC1; p=reject")),
        ];
        assert_eq!(
            organizational_domain(&walk, "a.b.example.com").as_deref(),
            Some("b.example.com")
        );
        assert_eq!(organizational_domain(&[], "example.com"), None);
    }

    #[test]
    fn could_align_by_name() {
        let f = Found {
            record: rec("v=DMARC1; p=reject"),
            policy_domain: "example.com".into(),
            org_domain: "example.com".into(),
            policy: Policy::Reject,
        };
        let a = "mail.example.com";
        assert!(f.could_align(a, "mail.example.com", Alignment::Strict));
        assert!(!f.could_align(a, "example.com", Alignment::Strict));
        assert!(f.could_align(a, "example.com", Alignment::Relaxed));
        assert!(f.could_align(a, "x.example.com", Alignment::Relaxed));
        assert!(!f.could_align(a, "badexample.com", Alignment::Relaxed));
        assert!(!f.could_align(a, "evil.example", Alignment::Relaxed));
    }
}
