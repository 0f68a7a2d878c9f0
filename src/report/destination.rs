//! Where a DMARC report may go (RFC 9990 §3): one rule for aggregate reports, failure reports
//! and `check-domain`.
//!
//! - A destination is one RFC 5321 mailbox: exactly one `@`, a non-empty local part, a host
//!   name, and none of `,;<>"`, whitespace or control characters (a percent-encoded `%2C`
//!   must not become a second recipient). It is checked when the record is read and again
//!   right before submission.
//! - A destination in the policy domain's organization needs no authorization: the two
//!   organizational domains, each found with the RFC 9989 tree walk (the domain itself when the
//!   walk finds no record), are the same.
//! - Any other needs `<policy-domain>._report._dmarc.<destination-domain>` to publish a record
//!   starting `v=DMARC1`. A DNS failure on the way leaves the decision for later.

use crate::dns::{Resolver, TxtError};
use crate::message::normalize_domain;
use crate::pipeline::verify::dmarc::{org_domain, LookupFailed};

/// A lookup failed: whether the report may go there is not known yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DNS error at {name}: {error}")]
pub struct Unknown {
    pub name: String,
    pub error: String,
}

impl From<LookupFailed> for Unknown {
    fn from(e: LookupFailed) -> Unknown {
        Unknown {
            name: format!("_dmarc.{}", e.name),
            error: e.error,
        }
    }
}

/// Why an address is not a single mailbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a single mailbox")]
pub struct NotAMailbox;

/// The domain of a single RFC 5321 mailbox, or why it is not one.
pub fn mailbox_domain(addr: &str) -> Result<&str, NotAMailbox> {
    let bad = |c: char| c.is_whitespace() || c.is_control() || ",;<>\"".contains(c);
    if addr.chars().any(bad) || addr.matches('@').count() != 1 {
        return Err(NotAMailbox);
    }
    let (local, domain) = addr.split_once('@').ok_or(NotAMailbox)?;
    // An RFC 5321 domain: no trailing dot, no underscore (normalize_domain allows those).
    let host = domain.is_ascii()
        && !domain.ends_with('.')
        && !domain.contains('_')
        && normalize_domain(domain).is_ok();
    if local.is_empty() || local.len() > 64 || !host {
        return Err(NotAMailbox);
    }
    Ok(domain)
}

/// May a report about `policy_domain` go to an address at `dest_domain`?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// The same organization: no record needed.
    SameOrganization,
    /// Authorized by the record at this name.
    Authorized(String),
    /// No `v=DMARC1` record at this name.
    NotAuthorized(String),
}

/// Decide for one destination domain (see the module documentation).
pub async fn authorization(
    resolver: &Resolver,
    policy_domain: &str,
    dest_domain: &str,
) -> Result<Authorization, Unknown> {
    let policy_domain = policy_domain.to_ascii_lowercase();
    let dest_domain = dest_domain.to_ascii_lowercase();
    let (ours, theirs) = futures_util::future::join(
        org_domain(resolver, &policy_domain),
        org_domain(resolver, &dest_domain),
    )
    .await;
    if ours? == theirs? {
        return Ok(Authorization::SameOrganization);
    }
    let name = format!("{policy_domain}._report._dmarc.{dest_domain}");
    match resolver.txt(&name).await {
        Ok(records) => {
            let found = records.iter().any(|r| {
                String::from_utf8_lossy(r)
                    .trim_start()
                    .get(..8)
                    .is_some_and(|v| v.eq_ignore_ascii_case("v=DMARC1"))
            });
            Ok(if found {
                Authorization::Authorized(name)
            } else {
                Authorization::NotAuthorized(name)
            })
        }
        Err(TxtError::NotFound(_)) => Ok(Authorization::NotAuthorized(name)),
        Err(TxtError::Failed(error)) => Err(Unknown { name, error }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_mailboxes() {
        assert_eq!(mailbox_domain("dmarc@example.com"), Ok("example.com"));
        for bad in [
            "victim@target.example,box@attacker.example",
            "a@b@example.com",
            "example.com",
            "@example.com",
            "a@",
            "a b@example.com",
            "<a@example.com>",
            "a@example.com;x",
            "\"a\"@example.com",
            "a@exa_mple.com",
            "a@example..com",
            "a\r\n@example.com",
        ] {
            assert_eq!(mailbox_domain(bad), Err(NotAMailbox), "{bad:?}");
        }
    }
}
