//! Inbound: SPF (HELO and MAIL FROM), DKIM, DMARC and ARC in one pass, one
//! Authentication-Results field, and the DMARC policy answer.
//!
//! Nothing upstream is trusted: results come only from our own checks against DNS, and any
//! Authentication-Results field that claims our authserv-id is deleted.
//!
//! DNS trouble rule: when a lookup that could change the verdict fails (temperror in SPF,
//! DKIM or DMARC while DMARC did not pass), the answer is `[verify] on_dns_error` —
//! 451 4.4.3 by default, so the sender retries — never a silent pass or a false fail.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine;
use mail_auth::auth_results::ReceivedSpf;
use mail_auth::crypto::Algorithm;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::Policy;
use mail_auth::headers::HeaderWriter;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, DkimOutput, DkimResult, DmarcResult, MessageAuthenticator, SpfOutput,
    SpfResult,
};

use super::sign::milter_value;
use super::{Outcome, Reply};
use crate::config::{Config, MultipleFrom, QuarantineAction};
use crate::headers::actions::Edits;
use crate::headers::auth_results::{remove_forged, ArBuilder, NAME as AR_NAME};
use crate::message::{domain_of, from_addresses, HeaderBlock};

/// The SMTP envelope of an inbound message.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    pub client_ip: IpAddr,
    pub helo: &'a str,
    /// Without angle brackets; empty for the null sender.
    pub mail_from: &'a str,
    /// The client authenticated with SMTP AUTH (never rejected when so configured).
    pub authenticated: bool,
}

/// A signature we refused to evaluate, with why.
pub struct Refused {
    d: String,
    s: String,
    a: &'static str,
    b: String,
    why: &'static str,
}

impl Refused {
    /// rsa-sha1 is a failure (RFC 8301); a signature over the limit was simply not evaluated.
    pub fn word(&self) -> &'static str {
        if self.a == "rsa-sha1" {
            "fail"
        } else {
            "neutral"
        }
    }
}

fn alg_name(a: Algorithm) -> &'static str {
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

fn dkim_word(r: &DkimResult) -> (&'static str, Option<String>) {
    match r {
        DkimResult::Pass => ("pass", None),
        // RFC 6376 §6.1.3: a body hash that does not verify is a verification failure
        // (PERMFAIL), not an unprocessable signature.
        DkimResult::Neutral(
            e @ mail_auth::Error::Dkim(mail_auth::dkim::DkimError::BodyHashMismatch),
        ) => ("fail", Some(e.to_string())),
        DkimResult::Neutral(e) => ("neutral", Some(e.to_string())),
        DkimResult::Fail(e) => ("fail", Some(e.to_string())),
        DkimResult::PermError(e) => ("permerror", Some(e.to_string())),
        DkimResult::TempError(e) => ("temperror", Some(e.to_string())),
        DkimResult::None => ("none", None),
    }
}

fn dmarc_word(r: &DmarcResult) -> &'static str {
    match r {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
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

/// Answer for a message too large to buffer for verification.
pub fn oversize(config: &Config, headers: &HeaderBlock) -> Outcome {
    let mut edits = Edits::default();
    remove_forged(headers, &config.authserv_id, &mut edits);
    let limit = config.limits.max_message_size;
    let text = format!(
        "message too large to verify (limits: {limit} bytes per message, {} buffered in total)",
        config.limits.max_buffered_total
    );
    let reply = super::oversize_reply(config.limits.on_oversize, &text).unwrap_or_else(|| {
        edits.inserts.push((
            0,
            AR_NAME.into(),
            ArBuilder::new(&config.authserv_id).milter_value(),
        ));
        Reply::Continue
    });
    Outcome {
        edits,
        reply,
        summary: format!("verify skipped: {text}"),
        report: None,
        failure: None,
    }
}

/// Verify one complete message (`raw`: header section, blank line, body; CRLF).
pub async fn verify(
    config: &Config,
    auth: &MessageAuthenticator,
    env: &Envelope<'_>,
    headers: &HeaderBlock,
    raw: &[u8],
) -> Outcome {
    let mut edits = Edits::default();
    let forged = remove_forged(headers, &config.authserv_id, &mut edits);
    let budget = config.verify.timeout;
    let mut outcome =
        match tokio::time::timeout(budget, evaluate(config, auth, env, headers, raw)).await {
            Ok(o) => o,
            Err(_) => timed_out(config, budget),
        };
    // Deletions of forged fields go first, then our inserts.
    edits.inserts = std::mem::take(&mut outcome.edits.inserts);
    edits.quarantine = outcome.edits.quarantine.take();
    outcome.edits = edits;
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

fn timed_out(config: &Config, budget: Duration) -> Outcome {
    let mut ar = ArBuilder::new(&config.authserv_id);
    let why = format!("verification timed out after {}s", budget.as_secs());
    ar.add("dmarc", "temperror", Some(&why), &[]);
    let reply = Reply::for_failure(
        config.verify.on_dns_error,
        "4.4.3",
        "DNS lookups for sender authentication timed out; try again later",
    );
    let mut edits = Edits::default();
    edits.inserts.push((0, AR_NAME.into(), ar.milter_value()));
    Outcome {
        edits,
        reply,
        summary: why,
        report: None,
        failure: None,
    }
}

async fn evaluate(
    config: &Config,
    auth: &MessageAuthenticator,
    env: &Envelope<'_>,
    headers: &HeaderBlock,
    raw: &[u8],
) -> Outcome {
    let host = config.authserv_id.as_str();
    let helo = env.helo;
    let ip = env.client_ip;
    let mut ar = ArBuilder::new(&config.authserv_id);
    let mut edits = Edits::default();
    let mut dns_trouble = Vec::new();

    // The message. A message mail-auth cannot parse at all has no usable headers.
    let Some(mut msg) = AuthenticatedMessage::parse(raw) else {
        ar.add("dkim", "none", Some("message could not be parsed"), &[]);
        edits.inserts.push((0, AR_NAME.into(), ar.milter_value()));
        return Outcome {
            edits,
            reply: Reply::Continue,
            summary: "unparseable message, nothing verified".into(),
            report: None,
            failure: None,
        };
    };

    let refused = refuse_signatures(&mut msg, config.verify.max_signatures);

    // SPF: MAIL FROM (or postmaster@HELO for the null sender) and HELO, DKIM and ARC at once.
    let spf_mf_params = SpfParameters::mail_from(ip, helo, host, env.mail_from);
    let check_helo = config.verify.spf_helo && !helo.is_empty();
    let ((spf_mf, spf_helo), dkim_check, arc) = tokio::join!(
        timed(
            "spf",
            check_spf(auth, ip, helo, host, env.mail_from, check_helo)
        ),
        timed("dkim", check_dkim(auth, &msg, refused.len())),
        timed("arc", auth.verify_arc(&msg)),
    );
    let dkim = &dkim_check.outputs;

    // SPF results.
    let mail_from_shown = if env.mail_from.is_empty() {
        format!("postmaster@{helo}")
    } else {
        env.mail_from.to_string()
    };
    spf_entry(&mut ar, &spf_mf, "smtp.mailfrom", &mail_from_shown);
    if let Some(h) = &spf_helo {
        spf_entry(&mut ar, h, "smtp.helo", helo);
    }
    if spf_mf.result() == SpfResult::TempError {
        dns_trouble.push("spf");
    }

    // DKIM results, one entry per signature.
    if dkim.is_empty() && refused.is_empty() && dkim_check.malformed == 0 {
        ar.add("dkim", "none", Some("no signatures"), &[]);
    }
    for _ in 0..dkim_check.malformed {
        ar.add("dkim", "permerror", Some("malformed DKIM-Signature"), &[]);
    }
    for out in dkim {
        let (word, why) = dkim_word(out.result());
        let mut props = Vec::new();
        if let Some(sig) = out.signature() {
            props.push(("header.d", sig.d.clone()));
            if !sig.i.is_empty() {
                props.push(("header.i", sig.i.clone()));
            }
            props.push(("header.s", sig.s.clone()));
            props.push(("header.a", alg_name(sig.a).to_string()));
            props.push(("header.b", b_prefix(&sig.b)));
        }
        ar.add("dkim", word, why.as_deref(), &props);
        if matches!(out.result(), DkimResult::TempError(_)) {
            dns_trouble.push("dkim");
        }
    }
    for r in &refused {
        let props = [
            ("header.d", r.d.clone()),
            ("header.s", r.s.clone()),
            ("header.a", r.a.to_string()),
            ("header.b", r.b.clone()),
        ];
        ar.add("dkim", r.word(), Some(r.why), &props);
    }

    // DMARC.
    let (from_fields, from_addrs) = from_addresses(headers);
    let mut from_domains: Vec<String> = from_addrs.iter().filter_map(|a| domain_of(a)).collect();
    from_domains.dedup();
    let mail_from_domain = domain_of(env.mail_from).unwrap_or_else(|| helo.to_ascii_lowercase());
    let mut reply = Reply::Continue;
    let mut disposition = Disposition::None;
    let mut report = None;
    let mut failure: Option<crate::report::failure::Failure> = None;
    let dmarc_summary;
    let from_problem = match (from_fields, from_domains.len()) {
        (1, 1) => None,
        (0, _) => Some("message has no From field"),
        (1, 0) => Some("From field has no usable address"),
        _ => Some("message has several From fields or From addresses"),
    };
    let strict_problem = from_problem
        .filter(|_| config.dmarc.multiple_from == MultipleFrom::Strict || from_domains.is_empty());
    if let Some(problem) = strict_problem {
        ar.add("dmarc", "permerror", Some(problem), &[]);
        dmarc_summary = format!("dmarc=permerror ({problem})");
        if config.dmarc.enforce && !exempt(config, env) {
            reply = Reply::Reject {
                code: "550",
                status: "5.7.1",
                text: format!("Rejected by DMARC: {problem}"),
            };
        }
    } else {
        // With `multiple_from = "first"`, only the first From address counts.
        let first_buf: Vec<u8>;
        let first_msg;
        let dmarc_msg = if from_problem.is_some() {
            first_buf = first_from_only(headers, &from_addrs[0]);
            first_msg = AuthenticatedMessage::parse(&first_buf);
            first_msg.as_ref().unwrap_or(&msg)
        } else {
            &msg
        };
        let dmarc = timed(
            "dmarc",
            auth.verify_dmarc(DmarcParameters::new(
                dmarc_msg,
                dkim,
                &mail_from_domain,
                &spf_mf,
            )),
        )
        .await;
        let result = dmarc.result();
        let policy = dmarc.policy();
        let testing = dmarc.record().is_some_and(|r| r.t);
        if matches!(result, DmarcResult::TempError(_)) {
            dns_trouble.push("dmarc");
        }
        if matches!(result, DmarcResult::Fail(_)) && config.dmarc.enforce && !exempt(config, env) {
            match policy {
                Policy::Reject => {
                    disposition = Disposition::Reject;
                    reply = Reply::Reject {
                        code: "550",
                        status: "5.7.1",
                        text: format!(
                            "Rejected by DMARC policy for {}: the message failed SPF and DKIM alignment",
                            dmarc.domain()
                        ),
                    };
                }
                Policy::Quarantine => match config.dmarc.quarantine_action {
                    QuarantineAction::Hold => {
                        disposition = Disposition::Quarantine;
                        edits.quarantine =
                            Some(format!("DMARC policy of {}: quarantine", dmarc.domain()));
                    }
                    QuarantineAction::Header => disposition = Disposition::Quarantine,
                    QuarantineAction::Accept => {}
                },
                _ => {}
            }
        }
        let word = dmarc_word(&result);
        let comment = if dmarc.record().is_some() {
            Some(format!(
                "p={} dis={}{}",
                policy_word(policy),
                disposition.word(),
                if testing { " t=y" } else { "" }
            ))
        } else {
            None
        };
        let from_domain = if dmarc.domain().is_empty() {
            from_domains.first().cloned().unwrap_or_default()
        } else {
            dmarc.domain().to_string()
        };
        let mut props = Vec::new();
        if !from_domain.is_empty() {
            props.push(("header.from", from_domain.clone()));
        }
        ar.add("dmarc", word, comment.as_deref(), &props);
        dmarc_summary = format!(
            "dmarc={word} from={from_domain} p={} dis={}",
            policy_word(policy),
            disposition.word()
        );
        if word == "pass" {
            dns_trouble.clear();
        }
        if let Some(record) = dmarc.record() {
            let want_failure = config.reports.failure_reports
                && !record.ruf.is_empty()
                && dmarc.failure_report().is_some();
            let want_aggregate = config.reports.store.is_some() && !record.rua.is_empty();
            if (want_failure || want_aggregate) && wants_report(config, headers, dmarc.domain()) {
                let policy_domain = policy_domain(auth, dmarc.domain(), record).await;
                if want_failure {
                    let raw = headers.raw();
                    failure = Some(crate::report::failure::Failure {
                        arrival: crate::report::now(),
                        source_ip: env.client_ip.to_string(),
                        mail_from: env.mail_from.to_string(),
                        header_from: dmarc.domain().to_string(),
                        policy_domain: policy_domain.clone(),
                        ruf: record.ruf.iter().map(|u| u.uri.clone()).collect(),
                        auth_results: String::new(),
                        dkim_aligned: matches!(dmarc.dkim_result(), DmarcResult::Pass),
                        spf_aligned: matches!(dmarc.spf_result(), DmarcResult::Pass),
                        delivery: match disposition {
                            Disposition::Reject => "reject",
                            Disposition::Quarantine => "policy",
                            Disposition::None => "delivered",
                        },
                        headers: raw[..raw.len().min(crate::report::failure::MAX_HEADERS)].to_vec(),
                    });
                }
                if want_aggregate {
                    report = Some(Box::new(evaluation(
                        &dmarc,
                        record,
                        policy_domain,
                        EvalFacts {
                            env,
                            mail_from_domain: &mail_from_domain,
                            spf: spf_word(spf_mf.result()),
                            dkim: &dkim_check,
                            refused: &refused,
                            disposition,
                            reason: override_reason(config, env, policy, testing),
                        },
                    )));
                }
            }
        }
    }

    // ARC.
    let (arc_word, arc_why) = arc_word(arc.result());
    ar.add(
        "arc",
        arc_word,
        arc_why.as_deref().filter(|_| arc_word != "pass"),
        &[("smtp.remote-ip", ip.to_string())],
    );

    if !dns_trouble.is_empty() && matches!(reply, Reply::Continue) {
        reply = Reply::for_failure(
            config.verify.on_dns_error,
            "4.4.3",
            format!(
                "Temporary DNS failure while checking {} of the sender; try again later",
                dns_trouble.join(", ")
            ),
        );
    }

    record_results(
        spf_word(spf_mf.result()),
        &dkim_result_words(&dkim_check, &refused),
        &dmarc_summary,
        arc_word,
    );
    let summary = format!(
        "spf={} dkim={} {} arc={}",
        spf_word(spf_mf.result()),
        dkim_result_words(&dkim_check, &refused).join(","),
        dmarc_summary,
        arc_word
    );
    if config.verify.received_spf {
        let rs = ReceivedSpf::new(&spf_mf, &spf_mf_params).to_header();
        edits
            .inserts
            .push((0, "Received-SPF".into(), milter_value(&rs, "Received-SPF")));
    }
    let ar_value = ar.milter_value();
    if let Some(f) = failure.as_mut() {
        f.auth_results = ar_value.clone();
    }
    edits.inserts.push((0, AR_NAME.into(), ar_value));
    // A message the MTA will offer again is evaluated again: report it then.
    if matches!(reply, Reply::Tempfail { .. }) {
        report = None;
        failure = None;
    }
    Outcome {
        edits,
        reply,
        summary,
        report,
        failure: failure.map(Box::new),
    }
}

/// Report on this message (aggregate or failure report)? Never on a report itself (loop
/// protection) and never for a suppressed domain.
fn wants_report(config: &Config, headers: &HeaderBlock, from_domain: &str) -> bool {
    !config.reports.suppressed(from_domain)
        && !crate::report::is_report_message(
            headers.values("subject").next(),
            headers.values("content-type").next(),
        )
}

/// Why the policy the domain asked for was not applied to a failing message (RFC 9990
/// `reason`), if it was not.
fn override_reason(
    config: &Config,
    env: &Envelope<'_>,
    policy: Policy,
    testing: bool,
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
    } else if policy == Policy::Quarantine
        && config.dmarc.quarantine_action == QuarantineAction::Accept
    {
        reason("local_policy", "quarantine not applied by local policy")
    } else {
        return None;
    })
}

struct EvalFacts<'a, 'x> {
    env: &'a Envelope<'a>,
    mail_from_domain: &'a str,
    spf: &'static str,
    dkim: &'a DkimCheck<'x>,
    refused: &'a [Refused],
    disposition: Disposition,
    reason: Option<crate::report::Reason>,
}

/// What this message contributes to the aggregate report of its policy domain.
fn evaluation(
    dmarc: &mail_auth::DmarcOutput,
    record: &mail_auth::dmarc::DmarcRecord,
    policy_domain: String,
    f: EvalFacts<'_, '_>,
) -> crate::report::Evaluation {
    use crate::report::{DkimAuth, Evaluation, Published};
    let failed = !matches!(dmarc.result(), DmarcResult::Pass);
    let mut dkim: Vec<DkimAuth> = f
        .dkim
        .outputs
        .iter()
        .filter_map(|o| {
            let sig = o.signature()?;
            let (word, why) = dkim_word(o.result());
            Some(DkimAuth {
                domain: sig.d.to_ascii_lowercase(),
                selector: sig.s.clone(),
                result: word.into(),
                human: why,
            })
        })
        .collect();
    dkim.extend(f.refused.iter().map(|r| DkimAuth {
        domain: r.d.to_ascii_lowercase(),
        selector: r.s.clone(),
        result: r.word().into(),
        human: Some(r.why.into()),
    }));
    let fo = match record.fo {
        mail_auth::dmarc::FailureOptions::All => "0",
        mail_auth::dmarc::FailureOptions::Any => "1",
        mail_auth::dmarc::FailureOptions::Dkim => "d",
        mail_auth::dmarc::FailureOptions::Spf => "s",
        mail_auth::dmarc::FailureOptions::DkimSpf => "d:s",
    };
    let align = |a: mail_auth::dmarc::Alignment| match a {
        mail_auth::dmarc::Alignment::Relaxed => "r",
        mail_auth::dmarc::Alignment::Strict => "s",
    };
    Evaluation {
        received: crate::report::now(),
        source_ip: f.env.client_ip.to_string(),
        policy_domain,
        header_from: dmarc.domain().to_string(),
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
        dkim_aligned: matches!(dmarc.dkim_result(), DmarcResult::Pass),
        spf_aligned: matches!(dmarc.spf_result(), DmarcResult::Pass),
        reasons: f.reason.filter(|_| failed).into_iter().collect(),
        dkim: crate::report::rank_dkim(dkim, dmarc.domain()),
        spf_result: f.spf.into(),
    }
}

/// Where `record` was found: the author domain or the nearest parent publishing it. The
/// lookups are answered from the resolver cache the DMARC check just filled.
async fn policy_domain(
    auth: &MessageAuthenticator,
    author: &str,
    record: &mail_auth::dmarc::DmarcRecord,
) -> String {
    let labels: Vec<&str> = author.split('.').filter(|l| !l.is_empty()).collect();
    for skip in 0..labels.len().saturating_sub(1).min(8) {
        let name = labels[skip..].join(".");
        let found = auth
            .txt_lookup::<mail_auth::dmarc::DmarcRecord>(
                format!("_dmarc.{name}."),
                None::<&mail_auth::NoCache>,
            )
            .await;
        if found.is_ok_and(|r| *r == *record) {
            return name;
        }
    }
    author.to_string()
}

/// Take out the signatures we do not evaluate: rsa-sha1 (RFC 8301: never a pass) and any
/// past `max` (bounded work per message). They are reported separately.
pub fn refuse_signatures(msg: &mut AuthenticatedMessage<'_>, max: usize) -> Vec<Refused> {
    let mut refused = Vec::new();
    let mut kept = 0usize;
    msg.retain_dkim_signatures(|sig| {
        let why = if sig.a == Algorithm::RsaSha1 {
            Some("rsa-sha1 is not accepted, RFC 8301")
        } else if kept >= max {
            Some("over the max_signatures limit, not evaluated")
        } else {
            None
        };
        match why {
            Some(why) => {
                refused.push(Refused {
                    d: sig.d.clone(),
                    s: sig.s.clone(),
                    a: alg_name(sig.a),
                    b: b_prefix(&sig.b),
                    why,
                });
                Err(mail_auth::dkim::DkimError::UnsupportedAlgorithm)
            }
            None => {
                kept += 1;
                Ok(())
            }
        }
    });
    refused
}

/// DKIM results: the evaluated signatures, and how many DKIM-Signature fields were so
/// malformed that the verifier reported nothing for them (reported as `permerror`).
pub struct DkimCheck<'x> {
    pub outputs: Vec<DkimOutput<'x>>,
    pub malformed: usize,
}

/// Verify the remaining DKIM signatures. mail-auth reports each signature taken out by
/// [`refuse_signatures`] as a signature-less "neutral" entry, after any genuine parse errors
/// and before the evaluated signatures; those entries are dropped here, since the refused
/// signatures are reported with their own tags and reason. Signature fields mail-auth drops
/// without a word (a missing bh=, say) are counted, so a broken signature is never reported
/// as "no signature".
pub async fn check_dkim<'x>(
    auth: &MessageAuthenticator,
    msg: &'x AuthenticatedMessage<'x>,
    refused: usize,
) -> DkimCheck<'x> {
    let mut dkim = auth.verify_dkim(msg).await;
    let mut to_drop = refused;
    let mut i = dkim.len();
    while to_drop > 0 && i > 0 {
        i -= 1;
        if dkim[i].signature().is_none() && matches!(dkim[i].result(), DkimResult::Neutral(_)) {
            dkim.remove(i);
            to_drop -= 1;
        }
    }
    let fields = msg
        .headers()
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"DKIM-Signature"))
        .count();
    let malformed = fields.saturating_sub(dkim.len() + refused);
    DkimCheck {
        outputs: dkim,
        malformed,
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

/// The RFC 8601 result word of each DKIM signature (evaluated, malformed, then refused).
pub fn dkim_result_words(check: &DkimCheck<'_>, refused: &[Refused]) -> Vec<&'static str> {
    check
        .outputs
        .iter()
        .map(|o| dkim_word(o.result()).0)
        .chain(std::iter::repeat_n("permerror", check.malformed))
        .chain(refused.iter().map(Refused::word))
        .collect()
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

/// Time one DNS-bound check for the lookup-latency histogram.
async fn timed<F: std::future::Future>(phase: &'static str, f: F) -> F::Output {
    let start = std::time::Instant::now();
    let out = f.await;
    crate::metrics::global().observe(
        "mailseal_dns_lookup_seconds",
        &[("phase", phase)],
        start.elapsed(),
    );
    out
}

/// Count each method's result, and DNS failures, for the metrics endpoint.
fn record_results(spf: &str, dkim: &[&str], dmarc_summary: &str, arc: &str) {
    let m = crate::metrics::global();
    let dmarc = dmarc_summary
        .strip_prefix("dmarc=")
        .and_then(|s| s.split([' ', '(']).next())
        .unwrap_or("none");
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

fn spf_entry(ar: &mut ArBuilder, out: &SpfOutput, prop: &str, identity: &str) {
    let word = spf_word(out.result());
    let comment = out.explanation().map(|e| e.to_string());
    ar.add(
        "spf",
        word,
        comment.as_deref(),
        &[(prop, identity.to_string())],
    );
}

/// The header section with every From field replaced by one holding only `first`: what
/// DMARC evaluates with `multiple_from = "first"`. DMARC needs only the headers.
fn first_from_only(headers: &HeaderBlock, first: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(headers.bytes() + 64);
    out.extend_from_slice(format!("From: <{first}>\r\n").as_bytes());
    for (n, v) in headers.iter() {
        if !n.eq_ignore_ascii_case(b"From") {
            out.extend_from_slice(n);
            out.push(b':');
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}
