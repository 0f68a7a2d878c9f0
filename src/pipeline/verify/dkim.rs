//! DKIM (RFC 6376) signature by signature: which ones are checked, and each checked on its
//! own, so one signature's lookups never wait for another's.
//!
//! Not checked, and reported `neutral` with the reason (never `fail`: a false fail would
//! reject legitimate mail under enforce):
//! - a signature over a field that was not kept (header section past the cap), or over a body
//!   that was not kept (size cap, memory budget);
//! - a `simple` header canonicalization when the MTA did not send the exact header bytes
//!   (no SMFIP_HDR_LEADSPC);
//! - signatures past `[verify] max_signatures`, counted after those that can align with the
//!   author domain, so junk signatures put in front cannot push the real one out.
//!
//! rsa-sha1 signatures are `fail` (RFC 8301).

use base64::Engine;
use mail_auth::crypto::Algorithm;
use mail_auth::dkim::{Canonicalization, Signature};
use mail_auth::{AuthenticatedMessage, DkimResult, Parameters};

use crate::dns::{Keys, Resolver};

use crate::message::{is_subdomain, normalize_domain, HeaderBlock};
use crate::results::{DkimVerdict, Word};

/// A signature's verdict before it is checked: its tags, no result yet.
fn verdict(sig: &Signature) -> DkimVerdict {
    DkimVerdict {
        d: sig.d.clone(),
        domain: normalize_domain(&sig.d).unwrap_or_else(|_| sig.d.to_ascii_lowercase()),
        s: sig.s.clone(),
        i: sig.i.clone(),
        a: alg_name(sig.a),
        b: b_prefix(&sig.b),
        result: Word::None,
        reason: None,
        not_evaluated: false,
    }
}

fn with(mut v: DkimVerdict, result: Word, reason: impl Into<String>) -> DkimVerdict {
    v.result = result;
    v.reason = Some(reason.into());
    v
}

fn unchecked(mut v: DkimVerdict, reason: impl Into<String>) -> DkimVerdict {
    v.not_evaluated = true;
    with(v, Word::Neutral, reason)
}

/// A planned verdict with the outcome of [`verify_one`]; `None`: not finished within the
/// verification timeout.
pub fn checked(mut v: DkimVerdict, outcome: Option<Checked>) -> DkimVerdict {
    match outcome {
        Some((result, why)) => {
            v.result = result;
            v.reason = why;
            v
        }
        None => with(v, Word::TempError, super::UNFINISHED),
    }
}

pub fn alg_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::RsaSha1 => "rsa-sha1",
        Algorithm::RsaSha256 => "rsa-sha256",
        Algorithm::Ed25519Sha256 => "ed25519-sha256",
        _ => "unknown",
    }
}

fn b_prefix(b: &[u8]) -> String {
    let mut s = base64::engine::general_purpose::STANDARD.encode(&b[..b.len().min(12)]);
    s.truncate(8);
    s
}

/// The RFC 8601 word (and reason) for a library DKIM result.
pub fn dkim_word(r: &DkimResult) -> Checked {
    match r {
        DkimResult::Pass => (Word::Pass, None),
        // RFC 6376 §6.1.3: a body hash that does not verify is a verification failure
        // (PERMFAIL), not an unprocessable signature.
        DkimResult::Neutral(
            e @ mail_auth::Error::Dkim(mail_auth::dkim::DkimError::BodyHashMismatch),
        ) => (Word::Fail, Some(e.to_string())),
        DkimResult::Neutral(e) => (Word::Neutral, Some(e.to_string())),
        DkimResult::Fail(e) => (Word::Fail, Some(e.to_string())),
        DkimResult::PermError(e) => (Word::PermError, Some(e.to_string())),
        DkimResult::TempError(e) => (Word::TempError, Some(e.to_string())),
        DkimResult::None => (Word::None, None),
    }
}

/// What keeps signatures on this message from being checked.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    pub max_signatures: usize,
    /// The header section as kept (to tell which signed fields were dropped).
    pub headers: &'a HeaderBlock,
    /// Why the body was not kept, if it was not.
    pub body_missing: Option<&'a str>,
    /// The MTA sent the exact header bytes (SMFIP_HDR_LEADSPC).
    pub exact_headers: bool,
}

/// One signature: its result if known without a lookup, else its index among the parsed
/// signatures, to be checked with [`verify_one`].
#[derive(Debug, Clone)]
pub struct Planned {
    pub result: DkimVerdict,
    pub index: Option<usize>,
}

/// How likely `d` is to align with the author domain, judged on the names alone (lower is
/// likelier): the same name, one below the other, a shared parent, unrelated.
fn rank(d: &str, author: Option<&str>) -> u8 {
    let Some(a) = author else { return 3 };
    let parent = d.split_once('.').map(|(_, p)| p);
    if d == a {
        0
    } else if is_subdomain(d, a) || is_subdomain(a, d) {
        1
    } else if parent.is_some_and(|p| p.contains('.') && (p == a || is_subdomain(a, p))) {
        2
    } else {
        3
    }
}

/// Decide, for each parsed signature (in message order), whether it is checked.
pub fn plan(
    msg: &AuthenticatedMessage<'_>,
    author: Option<&str>,
    limits: Limits<'_>,
) -> Vec<Planned> {
    let sigs = msg.dkim_signatures();
    let mut planned: Vec<Planned> = sigs
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let sig = &h.header;
            let r = verdict(sig);
            let dropped = sig.h.iter().find(|n| limits.headers.may_have_dropped(n));
            let (result, index) = if sig.a == Algorithm::RsaSha1 {
                (with(r, Word::Fail, "rsa-sha1 is not accepted, RFC 8301"), None)
            } else if let Some(why) = limits.body_missing {
                (unchecked(r, format!("not evaluated: the body was not kept ({why})")), None)
            } else if let Some(name) = dropped {
                (
                    unchecked(r, format!(
                        "not evaluated: signed field {name} not kept (header section over the limit)"
                    )),
                    None,
                )
            } else if !limits.exact_headers && sig.ch == Canonicalization::Simple {
                (
                    unchecked(r,
                        "not evaluated: simple header canonicalization, and the MTA did not send the exact header bytes",
                    ),
                    None,
                )
            } else {
                (r, Some(i))
            };
            Planned { result, index }
        })
        .collect();
    // max_signatures: the likeliest to align first, then in message order.
    let mut order: Vec<usize> = (0..planned.len())
        .filter(|&i| planned[i].index.is_some())
        .collect();
    order.sort_by_key(|&i| (rank(&planned[i].result.domain, author), i));
    for &i in order.iter().skip(limits.max_signatures) {
        let p = &mut planned[i];
        p.index = None;
        p.result = unchecked(
            p.result.clone(),
            "over the max_signatures limit, not evaluated",
        );
    }
    planned
}

/// A signature's RFC 8601 result and reason.
pub type Checked = (Word, Option<String>);

/// Check one signature (the `index`-th that parsed) on its own.
pub async fn verify_one(
    resolver: &Resolver,
    msg: &AuthenticatedMessage<'_>,
    index: usize,
) -> Checked {
    // The key through the resolver (cache, single flight), then the check.
    let mut keys = Keys::default();
    if let Some(sig) = msg.dkim_signatures().get(index) {
        keys.fetch(resolver, &sig.header.s, &sig.header.d).await;
    }
    let auth = resolver.authenticator();
    let outputs = if msg.dkim_signatures().len() == 1 {
        auth.verify_dkim(Parameters::new(msg).with_cache(&keys))
            .await
            .iter()
            .map(result_of)
            .collect()
    } else {
        let mut one = msg.clone();
        let mut n = 0;
        one.retain_dkim_signatures(|_| {
            let keep = n == index;
            n += 1;
            if keep {
                Ok(())
            } else {
                Err(mail_auth::dkim::DkimError::UnsupportedAlgorithm)
            }
        });
        let outputs: Vec<Option<Checked>> = auth
            .verify_dkim(Parameters::new(&one).with_cache(&keys))
            .await
            .iter()
            .map(result_of)
            .collect();
        outputs
    };
    outputs
        .into_iter()
        .flatten()
        .next()
        .unwrap_or((Word::Neutral, Some("not verified".into())))
}

/// The result of a library output that belongs to a signature (the others are parse errors,
/// reported apart).
fn result_of(o: &mail_auth::DkimOutput<'_>) -> Option<Checked> {
    o.signature().map(|_| dkim_word(o.result()))
}

/// DKIM-Signature fields so malformed that they did not parse (reported `permerror`).
pub fn malformed(msg: &AuthenticatedMessage<'_>) -> usize {
    let fields = msg
        .headers()
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"DKIM-Signature"))
        .count();
    fields.saturating_sub(msg.dkim_signatures().len())
}

/// Every signature of a message, checked one after another (the command line tools and the
/// conformance suite; the daemon checks them concurrently under its deadline).
pub async fn check_all(
    resolver: &Resolver,
    msg: &AuthenticatedMessage<'_>,
    author: Option<&str>,
    limits: Limits<'_>,
) -> Vec<DkimVerdict> {
    let mut out = Vec::new();
    for p in plan(msg, author, limits) {
        out.push(match p.index {
            Some(i) => checked(p.result, Some(verify_one(resolver, msg, i).await)),
            None => p.result,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks() {
        let a = Some("mail.example.com");
        assert_eq!(rank("mail.example.com", a), 0);
        assert_eq!(rank("example.com", a), 1);
        assert_eq!(rank("x.mail.example.com", a), 1);
        assert_eq!(rank("news.example.com", a), 2);
        assert_eq!(rank("evil.example", a), 3);
        assert_eq!(rank("co.uk", Some("x.co.uk")), 1);
        assert_eq!(rank("evil.co.uk", Some("paypal.co.uk")), 2);
        assert_eq!(rank("x.example", None), 3);
    }
}
