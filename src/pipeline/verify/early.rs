//! Lookups started before end of message, so that their round trips overlap with the rest of
//! the SMTP transaction: SPF (MAIL FROM and HELO identities) when the envelope arrives, the
//! DMARC tree walk when From arrives, a signature's key when its DKIM-Signature arrives.
//!
//! Only for a message the same rules as at end of headers call inbound (from what the MTA
//! has told us by MAIL FROM), and bounded: one SPF check per identity, the walks of the first
//! two From fields, the keys of the first `max_signatures` signatures. Nothing here decides
//! anything: the SPF checks are the ones end of message waits for (under its own deadline);
//! the prefetches only fill the cache, which end of message reads or joins (single flight).
//! A message that ends early (RSET, a refused recipient, a dropped connection) aborts its SPF
//! checks; a query already on the wire still lands in the cache.

use std::net::IpAddr;

use futures_util::future::{BoxFuture, FutureExt, Shared};
use mail_auth::hickory_resolver::proto::rr::RecordType;
use tokio::task::AbortHandle;

use super::{dmarc, spf};
use crate::dns::Resolver;
use crate::message::address::field_addresses;
use crate::message::normalize_domain;
use crate::pipeline::context::Context;

/// An SPF check under way: its verdict (`None`: the task ended without one).
pub type SpfCheck = Shared<BoxFuture<'static, Option<spf::Verdict>>>;

/// From fields whose DMARC tree walk is prefetched.
const FROM_FIELDS: usize = 2;

/// What one message started early.
pub struct Early {
    resolver: Resolver,
    /// The MAIL FROM identity's check.
    pub mail_from: SpfCheck,
    /// The HELO identity's check, when `[verify] spf_helo` asks for it.
    pub helo: Option<SpfCheck>,
    tasks: Vec<AbortHandle>,
    from_fields: usize,
    keys: usize,
    max_keys: usize,
}

impl std::fmt::Debug for Early {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Early")
            .field("tasks", &self.tasks.len())
            .field("from_fields", &self.from_fields)
            .field("keys", &self.keys)
            .finish()
    }
}

impl Drop for Early {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Early {
    /// Start the SPF checks of an inbound message's envelope. `receiver` is our authserv-id.
    pub fn start(ctx: &Context, ip: IpAddr, helo: &str, receiver: &str, mail_from: &str) -> Early {
        let config = &ctx.config;
        let limits = spf::limits(config);
        let mut tasks = Vec::new();
        let mut spawn = |check: BoxFuture<'static, spf::Verdict>| -> SpfCheck {
            let task = tokio::spawn(check);
            tasks.push(task.abort_handle());
            async move { task.await.ok() }.boxed().shared()
        };
        let (r, h, id, mf) = (
            ctx.resolver.clone(),
            helo.to_string(),
            receiver.to_string(),
            mail_from.to_string(),
        );
        let mail_from =
            spawn(async move { spf::check_mail_from(&r, limits, ip, &h, &id, &mf).await }.boxed());
        let helo = (config.verify.spf_helo && !helo.is_empty()).then(|| {
            let (r, h, id) = (ctx.resolver.clone(), helo.to_string(), receiver.to_string());
            spawn(async move { spf::check_helo(&r, limits, ip, &h, &id).await }.boxed())
        });
        Early {
            resolver: ctx.resolver.clone(),
            mail_from,
            helo,
            tasks,
            from_fields: 0,
            keys: 0,
            max_keys: config.verify.max_signatures,
        }
    }

    /// A header field as it arrives: From starts its DMARC tree walk, DKIM-Signature its key.
    pub fn header(&mut self, name: &[u8], value: &[u8]) {
        if name.eq_ignore_ascii_case(b"From") && self.from_fields < FROM_FIELDS {
            self.from_fields += 1;
            let domain = field_addresses(value)
                .first()
                .and_then(|a| a.rsplit_once('@').map(|(_, d)| normalize_domain(d)))
                .and_then(Result::ok);
            for name in domain.iter().flat_map(|d| dmarc::walk_names(d)) {
                self.resolver
                    .prefetch(&format!("_dmarc.{name}"), RecordType::TXT);
            }
        } else if name.eq_ignore_ascii_case(b"DKIM-Signature") && self.keys < self.max_keys {
            self.keys += 1;
            if let Some(name) = key_name(value) {
                self.resolver.prefetch(&name, RecordType::TXT);
            }
        }
    }
}

/// The key record a DKIM-Signature names (`s._domainkey.d`), its tags read as the tag-list
/// parser reads them (folding whitespace removed); `None` for a malformed list.
fn key_name(value: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(value);
    let tags = super::arc::tag_list(&text).ok()?;
    let tag = |name: &str| {
        tags.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.split_whitespace().collect::<String>())
    };
    Some(format!("{}._domainkey.{}", tag("s")?, tag("d")?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tags() {
        let v = b" v=1; a=rsa-sha256; d=Example.COM;\r\n\ts=sel\r\n 1; h=from";
        assert_eq!(
            super::key_name(v).as_deref(),
            Some("sel1._domainkey.Example.COM")
        );
        assert_eq!(super::key_name(b" v=1; d=example.com"), None);
    }
}
