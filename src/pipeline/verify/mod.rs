//! Inbound: SPF (HELO and MAIL FROM), DKIM, DMARC and ARC, one Authentication-Results field,
//! and the DMARC policy answer.
//!
//! Nothing upstream is trusted: results come only from our own checks against DNS, and any
//! Authentication-Results field that claims our authserv-id is deleted.
//!
//! Every check runs concurrently under one deadline (`[verify] timeout`). The DMARC verdict
//! ([`dmarc`]) waits only for what can change it: the policy, discovered on its own; SPF, when
//! the MAIL FROM domain can align with the author domain; the signatures that can align.
//! Unaligned lookups run beside it: they can neither starve it nor change it, and what has
//! not finished by the deadline is reported `temperror`.
//!
//! DNS trouble rule: when a failed lookup could change the DMARC result (the result is
//! `temperror`), the answer is `[verify] on_dns_error` (451 4.4.3 by default, so the sender
//! retries), never a silent pass or a false fail. Any other DNS failure is only written into
//! the header.

pub mod dkim;
pub mod dmarc;

use std::net::IpAddr;

use futures_util::future::{join_all, FutureExt};
use mail_auth::auth_results::ReceivedSpf;
use mail_auth::dmarc::{FailureOptions, Policy};
use mail_auth::headers::HeaderWriter;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, SpfOutput, SpfResult};
use tokio::time::{timeout_at, Instant};

use super::{Outcome, Reply};
use crate::config::{Config, FailAction, MultipleFrom, QuarantineAction};
use crate::headers::auth_results::{remove_forged, ArBuilder, NAME as AR_NAME};
use crate::headers::edits::Edits;
use crate::headers::field_value;
use crate::message::{domain_of, normalize_domain, Author, HeaderBlock};
use dkim::SignatureResult;
use dmarc::{Check, Discovery, Found, Verdict};

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

fn spf_word(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn policy_word(p: Policy) -> &'static str {
    match p {
        Policy::Reject => "reject",
        Policy::Quarantine => "quarantine",
        Policy::None | Policy::Unspecified => "none",
    }
}

/// What we did about a DMARC failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disposition {
    None,
    Quarantine,
    Reject,
}

impl Disposition {
    fn word(self) -> &'static str {
        match self {
            Disposition::None => "none",
            Disposition::Quarantine => "quarantine",
            Disposition::Reject => "reject",
        }
    }
}

/// Is this client exempt from DMARC rejection and quarantine?
fn exempt(config: &Config, env: &Envelope<'_>) -> bool {
    (env.authenticated && config.dmarc.never_reject_authenticated)
        || config
            .dmarc
            .never_reject
            .iter()
            .any(|n| n.contains(&env.client_ip))
}

/// The author domain DMARC evaluates, or why there is none (`dmarc=permerror`).
fn author_domain(config: &Config, author: &Author) -> Result<String, String> {
    match author {
        Author::Domain(d) => Ok(d.clone()),
        Author::Several(d) if config.dmarc.multiple_from == MultipleFrom::First => Ok(d.clone()),
        Author::Several(_) => Err("message has several From fields or From addresses".into()),
        Author::Missing => Err("message has no From field".into()),
        Author::NoAddress => Err("From field has no usable address".into()),
        Author::Invalid(why) => Err(format!("From domain is not a domain name: {why}")),
    }
}

/// Verify one message. The header section is always complete enough for DMARC (see
/// [`HeaderBlock`]); `body` says whether the body was kept.
pub async fn verify(
    config: &Config,
    auth: &MessageAuthenticator,
    env: &Envelope<'_>,
    headers: &HeaderBlock,
    body: Body<'_>,
) -> Outcome {
    let mut edits = Edits::default();
    let forged = remove_forged(headers, env.authserv_id, &mut edits);
    let mut outcome = evaluate(config, auth, env, headers, body, edits).await;
    if forged > 0 {
        outcome
            .summary
            .push_str(&format!(" forged-ar-removed={forged}"));
    }
    if !matches!(outcome.reply, Reply::Continue) {
        // The message is refused: no header edits.
        outcome.edits = Edits::default();
    }
    outcome
}

const UNFINISHED: &str = "not finished within the verification timeout";

async fn evaluate(
    config: &Config,
    auth: &MessageAuthenticator,
    env: &Envelope<'_>,
    headers: &HeaderBlock,
    body: Body<'_>,
    mut edits: Edits,
) -> Outcome {
    let deadline = Instant::now() + config.verify.timeout;
    let id = env.authserv_id;
    let (ip, helo) = (env.client_ip, env.helo);
    let header_only: Vec<u8>;
    let (raw, body_missing) = match body {
        Body::Kept(raw) => (raw, None),
        Body::NotKept(why) => {
            header_only = [headers.raw(), b"\r\n"].concat();
            (&header_only[..], Some(why))
        }
    };
    let msg = AuthenticatedMessage::parse(raw);
    let found_author = Author::of(headers);
    let author = author_domain(config, &found_author);
    let author_name = author.as_deref().ok();
    let mail_from_domain = domain_of(env.mail_from)
        .or_else(|| normalize_domain(helo).ok())
        .unwrap_or_else(|| helo.to_ascii_lowercase());

    // DKIM: which signatures are checked; each becomes one shared future, awaited by the
    // verdict (if it can align) and by the header (always).
    let limits = dkim::Limits {
        max_signatures: config.verify.max_signatures,
        headers,
        body_missing,
        exact_headers: env.exact_headers,
    };
    let planned = msg
        .as_ref()
        .map(|m| dkim::plan(m, author_name, limits))
        .unwrap_or_default();
    let malformed = msg.as_ref().map(dkim::malformed).unwrap_or(0);
    let checks: Vec<_> = planned
        .iter()
        .map(|p| match (p.index, msg.as_ref()) {
            (Some(i), Some(m)) => Some(
                async move {
                    timeout_at(deadline, dkim::verify_one(auth, m, i))
                        .await
                        .ok()
                }
                .boxed()
                .shared(),
            ),
            _ => None,
        })
        .collect();
    // A signature's result, once its check (if it has one) is done.
    let result_of = |i: usize| {
        let p = &planned[i];
        let check = checks[i].clone();
        async move {
            match check {
                Some(c) => p.result.clone().checked(c.await),
                None => p.result.clone(),
            }
        }
    };
    let spf_mf_params = SpfParameters::mail_from(ip, helo, id, env.mail_from);
    let spf_mf = async {
        timeout_at(deadline, timed("spf", spf_limited(auth, spf_mf_params)))
            .await
            .ok()
    }
    .boxed()
    .shared();

    // The verdict: the policy, then only what can align.
    let verdict = async {
        let author = match &author {
            Ok(a) => a.as_str(),
            Err(problem) => {
                return (
                    Discovery::None,
                    Verdict::of(dmarc::Outcome::PermError(problem.clone())),
                )
            }
        };
        let start = std::time::Instant::now();
        let discovery = timeout_at(deadline, dmarc::discover(auth, author))
            .await
            .unwrap_or_else(|_| Discovery::TempError(UNFINISHED.into()));
        let verdict = match &discovery {
            Discovery::None => Verdict::of(dmarc::Outcome::None(None)),
            Discovery::TempError(e) => Verdict::of(dmarc::Outcome::TempError(e.clone())),
            Discovery::Found(found) => {
                let spf = if found.could_align(author, &mail_from_domain, found.record.aspf) {
                    let check = match spf_mf.clone().await.map(|o| o.result()) {
                        Some(SpfResult::Pass) => Check::Pass,
                        Some(SpfResult::TempError) | None => Check::TempError,
                        Some(_) => Check::Other,
                    };
                    Some((mail_from_domain.as_str(), check))
                } else {
                    None
                };
                let aligned = join_all(
                    (0..planned.len())
                        .filter(|&i| {
                            found.could_align(author, &planned[i].result.domain, found.record.adkim)
                        })
                        .map(result_of),
                )
                .await;
                let dkim: Vec<(String, Check)> = aligned
                    .iter()
                    .map(|r| (r.domain.clone(), r.check()))
                    .collect();
                timeout_at(deadline, dmarc::judge(auth, found, author, spf, &dkim))
                    .await
                    .unwrap_or_else(|_| Verdict::of(dmarc::Outcome::TempError(UNFINISHED.into())))
            }
        };
        observe("dmarc", start);
        (discovery, verdict)
    };
    // Everything for the header, verdict or not.
    let check_helo = config.verify.spf_helo && !helo.is_empty();
    let arc_blocked = arc_blocker(headers, body_missing, env.exact_headers, msg.as_ref());
    let others = async {
        tokio::join!(
            timed("dkim", join_all((0..planned.len()).map(result_of))),
            spf_mf.clone(),
            async {
                if check_helo {
                    let p = SpfParameters::helo(ip, helo, id);
                    Some(timeout_at(deadline, spf_limited(auth, p)).await.ok())
                } else {
                    None
                }
            },
            async {
                match (&arc_blocked, msg.as_ref()) {
                    (None, Some(m)) => Some(
                        timeout_at(deadline, timed("arc", auth.verify_arc(m)))
                            .await
                            .map(|o| arc_word(o.result()))
                            .unwrap_or(("temperror", Some(UNFINISHED.to_string()))),
                    ),
                    _ => None,
                }
            },
        )
    };
    let ((discovery, verdict), (dkim, spf_mf, spf_helo, arc)) = tokio::join!(verdict, others);

    let mut ar = ArBuilder::new(id);
    // SPF.
    let mail_from_shown = if env.mail_from.is_empty() {
        format!("postmaster@{helo}")
    } else {
        env.mail_from.to_string()
    };
    let spf_result = spf_mf
        .as_ref()
        .map_or("temperror", |o| spf_word(o.result()));
    spf_entry(&mut ar, spf_mf.as_ref(), "smtp.mailfrom", &mail_from_shown);
    if let Some(h) = &spf_helo {
        spf_entry(&mut ar, h.as_ref(), "smtp.helo", helo);
    }
    // DKIM, one entry per signature field.
    if dkim.is_empty() && malformed == 0 {
        ar.add("dkim", "none", Some("no signatures"), &[]);
    }
    for r in &dkim {
        let mut props = vec![("header.d", r.d.clone())];
        if !r.i.is_empty() {
            props.push(("header.i", r.i.clone()));
        }
        props.extend([
            ("header.s", r.s.clone()),
            ("header.a", r.a.to_string()),
            ("header.b", r.b.clone()),
        ]);
        ar.add("dkim", r.result, r.reason.as_deref(), &props);
    }
    for _ in 0..malformed {
        ar.add("dkim", "permerror", Some("malformed DKIM-Signature"), &[]);
    }
    let dkim_words: Vec<&str> = dkim
        .iter()
        .map(|r| r.result)
        .chain(std::iter::repeat_n("permerror", malformed))
        .collect();

    // DMARC: the answer.
    let found = match &discovery {
        Discovery::Found(f) => Some(f),
        _ => None,
    };
    let enforcing = config.dmarc.enforce && !exempt(config, env);
    let mut reply = Reply::Continue;
    let mut disposition = Disposition::None;
    let author_shown = match (&author, found_author) {
        (Ok(a), _) => Some(a.clone()),
        (Err(_), Author::Several(d)) => Some(d),
        _ => None,
    };
    match (&verdict.outcome, found) {
        (dmarc::Outcome::PermError(problem), _) if enforcing => {
            reply = Reply::Reject {
                code: "550",
                status: "5.7.1",
                text: format!("Rejected by DMARC: {problem}"),
            };
        }
        (dmarc::Outcome::Fail, Some(f)) if enforcing => match f.policy {
            Policy::Reject => {
                disposition = Disposition::Reject;
                reply = Reply::Reject {
                    code: "550",
                    status: "5.7.1",
                    text: format!(
                        "Rejected by DMARC policy for {}: the message failed SPF and DKIM alignment",
                        author_shown.as_deref().unwrap_or_default()
                    ),
                };
            }
            Policy::Quarantine => match config.dmarc.quarantine_action {
                QuarantineAction::Hold => {
                    disposition = Disposition::Quarantine;
                    edits.hold(format!(
                        "DMARC policy of {}: quarantine",
                        author_shown.as_deref().unwrap_or_default()
                    ));
                }
                QuarantineAction::Header => disposition = Disposition::Quarantine,
                QuarantineAction::Accept => {}
            },
            _ => {}
        },
        (_, Some(f))
            if verdict.unverifiable
                && enforcing
                && matches!(f.policy, Policy::Reject | Policy::Quarantine) =>
        {
            let text = format!(
                "DMARC policy of {} cannot be checked: an aligned DKIM signature could not be evaluated{}",
                author_shown.as_deref().unwrap_or_default(),
                body_missing.map(|w| format!(" ({w})")).unwrap_or_default()
            );
            reply = match config.dmarc.on_unverifiable {
                FailAction::Reject => Reply::Reject {
                    code: "550",
                    status: "5.7.1",
                    text,
                },
                _ => Reply::Tempfail {
                    code: "451",
                    status: "4.7.1",
                    text: format!("{text}; try again later"),
                },
            };
        }
        (dmarc::Outcome::TempError(_), _) => {
            reply = Reply::for_failure(
                config.verify.on_dns_error,
                "4.4.3",
                "Temporary DNS failure while checking the sender's DMARC policy; try again later",
            );
        }
        _ => {}
    }
    let testing = found.is_some_and(|f| f.record.t);
    let mut comment = found.map(|f| {
        format!(
            "p={} dis={}{}",
            policy_word(f.policy),
            disposition.word(),
            if testing { " t=y" } else { "" }
        )
    });
    let why = match &verdict.outcome {
        dmarc::Outcome::None(Some(w))
        | dmarc::Outcome::TempError(w)
        | dmarc::Outcome::PermError(w) => Some(w.clone()),
        _ => None,
    };
    if let Some(w) = why {
        comment = Some(match comment {
            Some(c) => format!("{c}; {w}"),
            None => w,
        });
    }
    let mut props = Vec::new();
    if let Some(a) = &author_shown {
        props.push(("header.from", a.clone()));
    }
    let dmarc_word = verdict.outcome.word();
    ar.add("dmarc", dmarc_word, comment.as_deref(), &props);
    let dmarc_summary = format!(
        "dmarc={dmarc_word} from={} p={} dis={}",
        author_shown.as_deref().unwrap_or_default(),
        found.map_or("none", |f| policy_word(f.policy)),
        disposition.word()
    );

    // ARC.
    let (arc_result, arc_why) = arc.unwrap_or_else(|| ("none", arc_blocked.clone()));
    ar.add(
        "arc",
        arc_result,
        arc_why.as_deref().filter(|_| arc_result != "pass"),
        &[("smtp.remote-ip", ip.to_string())],
    );

    record_results(spf_result, &dkim_words, dmarc_word, arc_result);
    let summary = format!(
        "spf={spf_result} dkim={} {dmarc_summary} arc={arc_result}",
        dkim_words.join(","),
    );
    if config.verify.received_spf {
        if let Some(o) = &spf_mf {
            let rs = ReceivedSpf::new(o, &spf_mf_params).to_header();
            edits.insert_top("Received-SPF", field_value(&rs, "Received-SPF"));
        }
    }
    let ar_value = ar.value();

    // Reports: only for a policy that asks for them; a message the MTA will offer again is
    // evaluated again, so it is reported then.
    let mut report = None;
    let mut failure = None;
    if let (Some(f), Some(author), false) =
        (found, author_name, matches!(reply, Reply::Tempfail { .. }))
    {
        let facts = ReportFacts {
            env,
            found: f,
            author,
            verdict: &verdict,
            mail_from_domain: &mail_from_domain,
            spf: spf_result,
            dkim: &dkim,
            disposition,
            reason: override_reason(config, env, f.policy, testing, verdict.unverifiable),
        };
        if config.reports.store.is_some()
            && !f.record.rua.is_empty()
            && !config.reports.suppressed(author)
        {
            report = Some(Box::new(evaluation(&facts)));
        }
        if config.reports.failure_reports
            && failure_due(&f.record.fo, &verdict)
            && !config.reports.suppressed(author)
            && !crate::report::is_report_message(
                headers.values("subject").next(),
                headers.values("content-type").next(),
            )
        {
            let raw = headers.raw();
            failure = Some(Box::new(crate::report::failure::Failure {
                arrival: crate::report::now(),
                source_ip: ip.to_string(),
                mail_from: env.mail_from.to_string(),
                header_from: author.to_string(),
                policy_domain: f.policy_domain.clone(),
                ruf: f.record.ruf.iter().map(|u| u.uri.clone()).collect(),
                auth_results: ar_value.clone(),
                dkim_aligned: verdict.dkim_aligned,
                spf_aligned: verdict.spf_aligned,
                delivery: match disposition {
                    Disposition::Reject => "reject",
                    Disposition::Quarantine => "policy",
                    Disposition::None => "delivered",
                },
                headers: raw[..raw.len().min(crate::report::failure::MAX_HEADERS)].to_vec(),
            }));
        }
    }
    edits.insert_top(AR_NAME, ar_value);
    Outcome {
        edits,
        reply,
        summary,
        report,
        failure,
    }
}

/// Why ARC is not evaluated on this message, if it is not: a chain cannot be checked over
/// fields or a body that were not kept, or header bytes the MTA did not send exactly.
fn arc_blocker(
    headers: &HeaderBlock,
    body_missing: Option<&str>,
    exact_headers: bool,
    msg: Option<&AuthenticatedMessage<'_>>,
) -> Option<String> {
    let arc_fields = [
        "ARC-Seal",
        "ARC-Message-Signature",
        "ARC-Authentication-Results",
    ];
    let present = msg.is_some_and(|m| {
        m.headers().iter().any(|(n, _)| {
            arc_fields
                .iter()
                .any(|a| n.eq_ignore_ascii_case(a.as_bytes()))
        })
    });
    if arc_fields.iter().any(|a| headers.may_have_dropped(a)) {
        return Some("not evaluated: ARC fields not kept (header section over the limit)".into());
    }
    if !present {
        return None;
    }
    if let Some(why) = body_missing {
        return Some(format!("not evaluated: the body was not kept ({why})"));
    }
    if !exact_headers {
        return Some("not evaluated: the MTA did not send the exact header bytes".into());
    }
    if headers.dropped() > 0 {
        return Some("not evaluated: header section over the limit".into());
    }
    None
}

/// Whether the record's `fo=` asks for a failure report on this verdict (RFC 9991 §3.2): `0`
/// when nothing produced an aligned pass, `1` when any mechanism did not, `d`/`s` when DKIM
/// or SPF did not. Never on a temporary error or an undecided verdict.
fn failure_due(fo: &FailureOptions, v: &Verdict) -> bool {
    if matches!(
        v.outcome,
        dmarc::Outcome::TempError(_) | dmarc::Outcome::None(_)
    ) {
        return false;
    }
    match fo {
        FailureOptions::All => !v.dkim_aligned && !v.spf_aligned,
        FailureOptions::Any | FailureOptions::DkimSpf => !v.dkim_aligned || !v.spf_aligned,
        FailureOptions::Dkim => !v.dkim_aligned,
        FailureOptions::Spf => !v.spf_aligned,
    }
}

/// Why the policy the domain asked for was not applied to a failing message (RFC 9990
/// `reason`), if it was not.
fn override_reason(
    config: &Config,
    env: &Envelope<'_>,
    policy: Policy,
    testing: bool,
    unverifiable: bool,
) -> Option<crate::report::Reason> {
    let reason = |kind: &str, comment: &str| crate::report::Reason {
        kind: kind.into(),
        comment: Some(comment.into()),
    };
    if testing {
        return Some(reason("policy_test_mode", "t=y in the DMARC record"));
    }
    if !matches!(policy, Policy::Reject | Policy::Quarantine) {
        return None;
    }
    Some(if !config.dmarc.enforce {
        reason("local_policy", "the receiver does not enforce DMARC policy")
    } else if exempt(config, env) {
        reason("local_policy", "sender exempt by local policy")
    } else if unverifiable {
        reason(
            "other",
            "DMARC not decided: an aligned DKIM signature could not be evaluated",
        )
    } else if policy == Policy::Quarantine
        && config.dmarc.quarantine_action == QuarantineAction::Accept
    {
        reason("local_policy", "quarantine not applied by local policy")
    } else {
        return None;
    })
}

struct ReportFacts<'a> {
    env: &'a Envelope<'a>,
    found: &'a Found,
    author: &'a str,
    verdict: &'a Verdict,
    mail_from_domain: &'a str,
    spf: &'static str,
    dkim: &'a [SignatureResult],
    disposition: Disposition,
    reason: Option<crate::report::Reason>,
}

/// What this message contributes to the aggregate report of its policy domain.
fn evaluation(f: &ReportFacts<'_>) -> crate::report::Evaluation {
    use crate::report::{DkimAuth, Evaluation, Published};
    let record = &f.found.record;
    let dkim: Vec<DkimAuth> = f
        .dkim
        .iter()
        .map(|r| DkimAuth {
            domain: r.domain.clone(),
            selector: r.s.clone(),
            result: r.result.into(),
            human: r.reason.clone(),
        })
        .collect();
    let fo = match record.fo {
        FailureOptions::All => "0",
        FailureOptions::Any => "1",
        FailureOptions::Dkim => "d",
        FailureOptions::Spf => "s",
        FailureOptions::DkimSpf => "d:s",
    };
    let align = |a: mail_auth::dmarc::Alignment| match a {
        mail_auth::dmarc::Alignment::Relaxed => "r",
        mail_auth::dmarc::Alignment::Strict => "s",
    };
    let passed = f.verdict.outcome == dmarc::Outcome::Pass;
    Evaluation {
        received: crate::report::now(),
        source_ip: f.env.client_ip.to_string(),
        policy_domain: f.found.policy_domain.clone(),
        header_from: f.author.to_string(),
        envelope_from: f.mail_from_domain.to_string(),
        published: Published {
            p: policy_word(record.p).into(),
            sp: policy_word(record.sp).into(),
            np: policy_word(record.np).into(),
            adkim: align(record.adkim).into(),
            aspf: align(record.aspf).into(),
            fo: fo.into(),
            testing: record.t,
            rua: record
                .rua
                .iter()
                .map(|u| (u.uri.clone(), u.max_size))
                .collect(),
        },
        disposition: f.disposition.word().into(),
        dkim_aligned: f.verdict.dkim_aligned,
        spf_aligned: f.verdict.spf_aligned,
        reasons: f.reason.clone().filter(|_| !passed).into_iter().collect(),
        dkim: crate::report::rank_dkim(dkim, f.author),
        spf_result: f.spf.into(),
    }
}

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
    let mf = spf_limited(auth, SpfParameters::mail_from(ip, helo, host, mail_from));
    let h = async {
        if check_helo {
            Some(spf_limited(auth, SpfParameters::helo(ip, helo, host)).await)
        } else {
            None
        }
    };
    tokio::join!(mf, h)
}

/// One SPF evaluation with the RFC 7208 §4.6.4 void-lookup limit (more than two → permerror).
async fn spf_limited(auth: &MessageAuthenticator, params: SpfParameters<'_>) -> SpfOutput {
    let voids = super::dns::VoidCounter::new();
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

/// The RFC 8601 word for an SPF result.
pub fn spf_result_word(r: SpfResult) -> &'static str {
    spf_word(r)
}

/// The ARC chain validation status (RFC 8617 §5.2: none, pass or fail; a chain that cannot
/// be processed is a failed chain). A DNS failure stays `temperror`, so it is never mistaken
/// for a broken chain.
pub fn arc_word(r: &mail_auth::ArcResult) -> (&'static str, Option<String>) {
    match r {
        DkimResult::Pass => ("pass", None),
        DkimResult::None => ("none", None),
        DkimResult::TempError(e) => ("temperror", Some(e.to_string())),
        DkimResult::Neutral(e) | DkimResult::Fail(e) | DkimResult::PermError(e) => {
            ("fail", Some(e.to_string()))
        }
    }
}

fn observe(phase: &'static str, start: std::time::Instant) {
    crate::metrics::global().observe(
        "mailseal_dns_lookup_seconds",
        &[("phase", phase)],
        start.elapsed(),
    );
}

/// Time one DNS-bound check for the lookup-latency histogram.
async fn timed<F: std::future::Future>(phase: &'static str, f: F) -> F::Output {
    let start = std::time::Instant::now();
    let out = f.await;
    observe(phase, start);
    out
}

/// Count each method's result, and DNS failures, for the metrics endpoint.
fn record_results(spf: &str, dkim: &[&str], dmarc: &str, arc: &str) {
    let m = crate::metrics::global();
    let dkim_words: Vec<&str> = if dkim.is_empty() {
        vec!["none"]
    } else {
        dkim.to_vec()
    };
    for (method, word) in [("spf", spf), ("dmarc", dmarc), ("arc", arc)]
        .into_iter()
        .chain(dkim_words.into_iter().map(|w| ("dkim", w)))
    {
        m.inc(
            "mailseal_results_total",
            &[("method", method), ("result", word)],
        );
        if word == "temperror" {
            m.inc("mailseal_dns_errors_total", &[("method", method)]);
        }
    }
}

fn spf_entry(ar: &mut ArBuilder, out: Option<&SpfOutput>, prop: &str, identity: &str) {
    let (word, comment) = match out {
        Some(o) => (spf_word(o.result()), o.explanation().map(|e| e.to_string())),
        None => ("temperror", Some(UNFINISHED.to_string())),
    };
    ar.add(
        "spf",
        word,
        comment.as_deref(),
        &[(prop, identity.to_string())],
    );
}
