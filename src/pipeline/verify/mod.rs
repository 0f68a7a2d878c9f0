//! Inbound: SPF ([`spf`]), DKIM ([`dkim`]), DMARC ([`dmarc`]) and ARC ([`arc`]) into one
//! [`AuthResults`]; then the answer ([`super::policy`]), our Authentication-Results field and
//! what the message adds to reports.
//!
//! Nothing upstream is trusted: results come only from our own checks against DNS, and any
//! Authentication-Results field that claims our authserv-id is deleted.
//!
//! Every check runs concurrently under one deadline (`[verify] timeout`). The DMARC verdict
//! waits only for what can change it: the policy, discovered on its own; SPF, when the MAIL
//! FROM domain can align with the author domain; the signatures that can align. Unaligned
//! lookups run beside it: they can neither starve it nor change it, and what has not
//! finished by the deadline is reported `temperror`.
//!
//! DNS trouble rule: when a failed lookup could change the DMARC result (the result is
//! `temperror`), the answer is `[verify] on_dns_error` (451 4.4.3 by default, so the sender
//! retries), never a silent pass or a false fail. Any other DNS failure is only written into
//! the header.

pub mod arc;
pub mod dkim;
pub mod dmarc;
pub mod early;
pub mod spf;

use std::net::IpAddr;

use futures_util::future::{join_all, FutureExt};
use mail_auth::AuthenticatedMessage;
use tokio::time::{timeout_at, Instant};

use super::context::Context;
use super::{policy, Outcome, Reply};
use crate::config::{Config, MultipleFrom};
use crate::dns::Resolver;
use crate::headers::auth_results::{remove_forged, NAME as AR_NAME};
use crate::headers::edits::Edits;
use crate::message::{domain_of, normalize_domain, Author, HeaderBlock};
use crate::metrics::Metrics;
use crate::metrics::Timing;
use crate::report::failure::Failure;
use crate::report::Evaluation;
use crate::results::{ArcVerdict, AuthResults, DmarcVerdict, SpfIdentity, Word};
use dmarc::{Check, Discovery};

/// The SMTP envelope of an inbound message, and what the connection knows.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    pub client_ip: IpAddr,
    pub helo: &'a str,
    /// Without angle brackets; empty for the null sender.
    pub mail_from: &'a str,
    /// The client authenticated with SMTP AUTH (never rejected when so configured).
    pub authenticated: bool,
    /// Our authserv-id on this connection.
    pub authserv_id: &'a str,
    /// The MTA sent the exact header bytes (SMFIP_HDR_LEADSPC).
    pub exact_headers: bool,
    /// The lookups started before end of message, if any ([`early`]).
    pub early: Option<&'a early::Early>,
}

/// The message as verification gets it.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// The whole message: the header fields kept, the blank line, the body (CRLF).
    Kept(&'a [u8]),
    /// The body was not kept (over `max_message_size`, or no room in `max_buffered_total`):
    /// why. SPF and DMARC are still judged; signatures are not evaluated.
    NotKept(&'a str),
}

impl Body<'_> {
    fn missing(&self) -> Option<&str> {
        match self {
            Body::Kept(_) => None,
            Body::NotKept(why) => Some(why),
        }
    }
}

const UNFINISHED: &str = "not finished within the verification timeout";

/// Verify one message: the header edits (forged fields deleted, ours added), the answer and
/// what it adds to reports. The header section is always complete enough for DMARC (see
/// [`HeaderBlock`]).
pub async fn verify(
    ctx: &Context,
    env: &Envelope<'_>,
    headers: &HeaderBlock,
    body: Body<'_>,
) -> Outcome {
    let config = &ctx.config;
    let metrics = &ctx.services.metrics;
    let results = check(config, &ctx.resolver, metrics, env, headers, body).await;
    let answer = policy::decide(config, env, &results, body.missing());
    metrics.record_results(&results);
    let ar = crate::headers::auth_results::render(&results, answer.disposition);
    let mut o = Outcome::new(
        Edits::default(),
        answer.reply.clone(),
        summary(&results, &answer),
    );
    if answer.reply == Reply::Continue {
        let forged = remove_forged(headers, env.authserv_id, &mut o.edits);
        if forged > 0 {
            o.summary.push_str(&format!(" forged-ar-removed={forged}"));
        }
        if config.verify.received_spf {
            let rs = crate::headers::received_spf::render(&results);
            o.edits.insert_top("Received-SPF", rs);
        }
        o.edits.insert_top(AR_NAME, ar.clone());
        if let Some(reason) = &answer.hold {
            o.edits.hold(reason.clone());
        }
    }
    // A message the MTA will offer again is evaluated again: it is reported then.
    if !matches!(answer.reply, Reply::Tempfail { .. }) {
        o.report = Evaluation::of(&results, &answer).map(Box::new);
        o.failure = failure(config, env, headers, &results, &answer, ar);
    }
    o
}

/// The failure report, when one is due and allowed: never about a message that is itself a
/// report (loop protection, RFC 9991), never for a suppressed domain.
fn failure(
    config: &Config,
    env: &Envelope<'_>,
    headers: &HeaderBlock,
    r: &AuthResults,
    answer: &policy::Answer,
    ar: String,
) -> Option<Box<Failure>> {
    let rc = &config.reports;
    let author = r.dmarc.author.as_deref()?;
    let is_report = crate::report::is_report_message(
        headers.values("subject").next(),
        headers.values("content-type").next(),
    );
    (rc.failure_reports && !rc.suppressed(author) && !is_report)
        .then(|| Failure::of(r, answer, env.mail_from, headers.raw(), &ar))
        .flatten()
        .map(Box::new)
}

/// The one log line's verdict part.
fn summary(r: &AuthResults, answer: &policy::Answer) -> String {
    let dkim: Vec<&str> = r.dkim_words().iter().map(|w| w.as_str()).collect();
    format!(
        "spf={} dkim={} dmarc={} from={} p={} dis={} arc={}",
        r.spf.result,
        dkim.join(","),
        r.dmarc.result,
        r.dmarc.author.as_deref().unwrap_or_default(),
        r.dmarc
            .policy
            .as_ref()
            .map_or("none", |p| crate::results::policy_word(p.policy)),
        answer.disposition.as_str(),
        r.arc.result
    )
}

/// Why a message has no author domain for DMARC (`dmarc=permerror`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoAuthor {
    #[error("message has several From fields or From addresses")]
    Several,
    #[error("message has no From field")]
    Missing,
    #[error("From field has no usable address")]
    NoAddress,
    #[error("From domain is not a domain name: {0}")]
    Invalid(crate::message::address::InvalidDomain),
}

/// The author domain DMARC evaluates, or why there is none.
fn author_domain(config: &Config, author: &Author) -> Result<String, NoAuthor> {
    match author {
        Author::Domain(d) => Ok(d.clone()),
        Author::Several(d) if config.dmarc.multiple_from == MultipleFrom::First => Ok(d.clone()),
        Author::Several(_) => Err(NoAuthor::Several),
        Author::Missing => Err(NoAuthor::Missing),
        Author::NoAddress => Err(NoAuthor::NoAddress),
        Author::Invalid(why) => Err(NoAuthor::Invalid(why.clone())),
    }
}

/// Run every check concurrently under the deadline, the DMARC verdict waiting only for what
/// can align.
async fn check(
    config: &Config,
    resolver: &Resolver,
    metrics: &Metrics,
    env: &Envelope<'_>,
    headers: &HeaderBlock,
    body: Body<'_>,
) -> AuthResults {
    let deadline = Instant::now() + config.verify.timeout;
    let id = env.authserv_id;
    let (ip, helo) = (env.client_ip, env.helo);
    let header_only: Vec<u8>;
    let raw = match body {
        Body::Kept(raw) => raw,
        Body::NotKept(_) => {
            header_only = [headers.raw(), b"\r\n"].concat();
            &header_only[..]
        }
    };
    let msg = AuthenticatedMessage::parse(raw);
    let found_author = Author::of(headers);
    let author = author_domain(config, &found_author);
    let author_name = author.as_deref().ok();
    // From a trusted relay: its SPF result for the original client replaces ours (which
    // would judge the relay's address).
    let relayed = relayed_spf(config, env, headers);
    let envelope_from = relayed
        .as_ref()
        .and_then(|r| r.mail_from.as_deref())
        .unwrap_or(env.mail_from);
    let mail_from_domain = domain_of(envelope_from)
        .or_else(|| normalize_domain(helo).ok())
        .unwrap_or_else(|| helo.to_ascii_lowercase());

    // DKIM: which signatures are checked; each check is one shared future, awaited by the
    // verdict (if it can align) and by the header (always).
    let limits = dkim::Limits {
        max_signatures: config.verify.max_signatures,
        headers,
        body_missing: body.missing(),
        exact_headers: env.exact_headers,
    };
    let planned = msg
        .as_ref()
        .map(|m| dkim::plan(m, author_name, limits))
        .unwrap_or_default();
    let checks: Vec<_> = planned
        .iter()
        .map(|p| match (p.index, msg.as_ref()) {
            (Some(i), Some(m)) => Some(
                async move {
                    timeout_at(deadline, dkim::verify_one(resolver, m, i))
                        .await
                        .ok()
                }
                .boxed()
                .shared(),
            ),
            _ => None,
        })
        .collect();
    // A signature's verdict, once its check (if it has one) is done.
    let verdict_of = |i: usize| {
        let p = &planned[i];
        let check = checks[i].clone();
        async move {
            match check {
                Some(c) => dkim::checked(p.result.clone(), c.await),
                None => p.result.clone(),
            }
        }
    };
    let spf_limits = spf::limits(config);
    // SPF: the checks started at MAIL FROM, else now.
    let started = env.early.map(|e| (e.mail_from.clone(), e.helo.clone()));
    let (early_mf, early_helo) = match started {
        Some((mf, helo)) => (Some(mf), helo),
        None => (None, None),
    };
    let spf_mf = async {
        if let Some(r) = &relayed {
            return Some(spf::Verdict {
                result: r.result,
                explanation: None,
                reason: Some(format!("result of trusted relay {}", r.authserv_id)),
            });
        }
        let check = async {
            match early_mf {
                Some(c) => c.await,
                None => {
                    let mf = env.mail_from;
                    Some(spf::check_mail_from(resolver, spf_limits, ip, helo, id, mf).await)
                }
            }
        };
        timeout_at(deadline, timed(metrics, "spf", check))
            .await
            .ok()
            .flatten()
    }
    .boxed()
    .shared();

    // The verdict: the policy, then only what can align.
    let dmarc = async {
        let author = match &author {
            Ok(a) => a.as_str(),
            Err(problem) => return DmarcVerdict::new(Word::PermError, Some(problem.to_string())),
        };
        let start = std::time::Instant::now();
        let discovery = timeout_at(deadline, dmarc::discover(resolver, author))
            .await
            .unwrap_or_else(|_| Discovery::TempError(UNFINISHED.into()));
        let verdict = match discovery {
            Discovery::None => DmarcVerdict::new(Word::None, None),
            Discovery::TempError(e) => DmarcVerdict::new(Word::TempError, Some(e)),
            Discovery::Found(found) => {
                let spf = if found.could_align(author, &mail_from_domain, found.record.aspf) {
                    let check = spf_mf
                        .clone()
                        .await
                        .map_or(Check::TempError, |v| Check::of_spf(v.result));
                    Some((mail_from_domain.as_str(), check))
                } else {
                    None
                };
                let aligned = join_all(
                    (0..planned.len())
                        .filter(|&i| {
                            found.could_align(author, &planned[i].result.domain, found.record.adkim)
                        })
                        .map(verdict_of),
                )
                .await;
                let dkim: Vec<(&str, Check)> = aligned
                    .iter()
                    .map(|v| (v.domain.as_str(), Check::of_dkim(v)))
                    .collect();
                let mut v =
                    timeout_at(deadline, dmarc::judge(resolver, &found, author, spf, &dkim))
                        .await
                        .unwrap_or_else(|_| {
                            DmarcVerdict::new(Word::TempError, Some(UNFINISHED.into()))
                        });
                v.policy = Some(found);
                v
            }
        };
        observe(metrics, "dmarc", start);
        verdict
    };
    // Everything for the header, verdict or not.
    let check_helo = config.verify.spf_helo && !helo.is_empty();
    let arc_blocked = arc::blocker(headers, body.missing(), env.exact_headers, msg.as_ref());
    let others = async {
        tokio::join!(
            timed(
                metrics,
                "dkim",
                join_all((0..planned.len()).map(verdict_of))
            ),
            spf_mf.clone(),
            async {
                if !check_helo {
                    return None;
                }
                let check = async {
                    match early_helo {
                        Some(c) => c.await,
                        None => Some(spf::check_helo(resolver, spf_limits, ip, helo, id).await),
                    }
                };
                Some(timeout_at(deadline, check).await.ok().flatten())
            },
            async {
                let (None, Some(m)) = (&arc_blocked, msg.as_ref()) else {
                    return None;
                };
                Some(match arc::check_structure(m.headers().iter().copied()) {
                    Err(why) => ArcVerdict {
                        result: Word::Fail,
                        reason: Some(why),
                    },
                    Ok(false) => ArcVerdict {
                        result: Word::None,
                        reason: None,
                    },
                    Ok(true) => {
                        timeout_at(deadline, timed(metrics, "arc", arc::verify(resolver, m)))
                            .await
                            .unwrap_or(ArcVerdict {
                                result: Word::TempError,
                                reason: Some(UNFINISHED.into()),
                            })
                    }
                })
            },
        )
    };
    let (mut dmarc, (dkim, spf_mf, spf_helo, arc)) = tokio::join!(dmarc, others);
    dmarc.author = match (&author, found_author) {
        (Ok(a), _) => Some(a.clone()),
        (Err(_), Author::Several(d)) => Some(d),
        _ => None,
    };
    let mail_from_shown = if envelope_from.is_empty() {
        format!("postmaster@{helo}")
    } else {
        envelope_from.to_string()
    };
    AuthResults {
        authserv_id: id.to_string(),
        client_ip: ip,
        helo: helo.to_string(),
        mail_from_domain,
        spf: spf::verdict(SpfIdentity::MailFrom, mail_from_shown, spf_mf.as_ref()),
        spf_helo: spf_helo.map(|h| spf::verdict(SpfIdentity::Helo, helo.to_string(), h.as_ref())),
        dkim,
        dkim_malformed: msg.as_ref().map(dkim::malformed).unwrap_or(0),
        dmarc,
        arc: arc.unwrap_or(ArcVerdict {
            result: Word::None,
            reason: arc_blocked,
        }),
    }
}

/// An SPF result taken from a trusted relay's Authentication-Results.
#[derive(Debug)]
struct Relayed {
    authserv_id: String,
    result: Word,
    mail_from: Option<String>,
}

/// The SPF result a trusted relay recorded, when the client is one (`[verify]
/// trusted_relays`): from the topmost Authentication-Results field with one of its
/// authserv-ids, never one claiming ours.
fn relayed_spf(config: &Config, env: &Envelope<'_>, headers: &HeaderBlock) -> Option<Relayed> {
    use crate::headers::auth_results::{authserv_id_of, claims, same_authserv_id, spf_result};
    let relay = config
        .verify
        .trusted_relays
        .iter()
        .find(|r| r.hosts.contains(env.client_ip))?;
    let value = headers.values(AR_NAME).find(|v| {
        !claims(v, env.authserv_id)
            && authserv_id_of(v).is_some_and(|id| {
                relay
                    .authserv_ids
                    .iter()
                    .any(|trusted| same_authserv_id(&id, trusted))
            })
    })?;
    let (result, mail_from) = spf_result(value)?;
    Some(Relayed {
        authserv_id: authserv_id_of(value)?,
        result,
        mail_from,
    })
}

fn observe(metrics: &Metrics, phase: &'static str, start: std::time::Instant) {
    metrics.observe(Timing::DnsLookup, &[("phase", phase)], start.elapsed());
}

/// Time one DNS-bound check for the lookup-latency histogram.
async fn timed<F: std::future::Future>(metrics: &Metrics, phase: &'static str, f: F) -> F::Output {
    let start = std::time::Instant::now();
    let out = f.await;
    observe(metrics, phase, start);
    out
}
