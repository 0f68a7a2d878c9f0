//! From verdicts to the answer: what the author domain's DMARC policy asks for, what local
//! policy (`[dmarc]`) allows, and what DNS trouble means (`[verify] on_dns_error`).

use mail_auth::dmarc::Policy;

use super::verify::Envelope;
use super::Reply;
use crate::config::{Config, FailAction, QuarantineAction};
use crate::report::{Reason, ReasonKind};
use crate::results::{AuthResults, Disposition, Word};

/// The answer for one inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub reply: Reply,
    /// What was done about a DMARC failure.
    pub disposition: Disposition,
    /// Hold the message (Postfix's hold queue), with this reason.
    pub hold: Option<String>,
    /// Why the policy the domain asked for was not applied to a failing message (RFC 9990
    /// `reason`), if it was not.
    pub reason: Option<Reason>,
}

/// Is this message exempt from DMARC rejection and quarantine: its client, or its envelope
/// sender's domain when SPF passed for it (never the null sender's HELO)?
pub fn exempt(config: &Config, env: &Envelope<'_>, r: &AuthResults) -> bool {
    let d = &config.dmarc;
    (env.authenticated && d.never_reject_authenticated)
        || d.never_reject.contains(env.client_ip)
        || (r.spf.result == Word::Pass
            && !env.mail_from.is_empty()
            && d.never_reject_mail_from.contains(&r.mail_from_domain))
}

/// Decide the answer. `body_missing`: why the body was not kept, if it was not (said in the
/// answer when that left DMARC undecided).
pub fn decide(
    config: &Config,
    env: &Envelope<'_>,
    r: &AuthResults,
    body_missing: Option<&str>,
) -> Answer {
    let dmarc = &r.dmarc;
    let enforcing = config.dmarc.enforce && !exempt(config, env, r);
    let author = dmarc.author.as_deref().unwrap_or_default();
    let mut answer = Answer {
        reply: Reply::Continue,
        disposition: Disposition::None,
        hold: None,
        reason: None,
    };
    let policy = dmarc.policy.as_ref().map(|p| p.policy);
    match (dmarc.result, policy) {
        (Word::PermError, _) if enforcing => {
            answer.reply = Reply::Reject {
                code: "550",
                status: "5.7.1",
                text: format!(
                    "Rejected by DMARC: {}",
                    dmarc.reason.as_deref().unwrap_or("no usable From domain")
                ),
            };
        }
        (Word::Fail, Some(Policy::Reject)) if enforcing => {
            answer.disposition = Disposition::Reject;
            answer.reply = Reply::Reject {
                code: "550",
                status: "5.7.1",
                text: format!(
                    "Rejected by DMARC policy for {author}: the message failed SPF and DKIM alignment"
                ),
            };
        }
        (Word::Fail, Some(Policy::Quarantine)) if enforcing => {
            match config.dmarc.quarantine_action {
                QuarantineAction::Hold => {
                    answer.disposition = Disposition::Quarantine;
                    answer.hold = Some(format!("DMARC policy of {author}: quarantine"));
                }
                QuarantineAction::Header => answer.disposition = Disposition::Quarantine,
                QuarantineAction::Accept => {}
            }
        }
        (_, Some(Policy::Reject | Policy::Quarantine)) if dmarc.unverifiable && enforcing => {
            let text = format!(
                "DMARC policy of {author} cannot be checked: an aligned DKIM signature could not be evaluated{}",
                body_missing.map(|w| format!(" ({w})")).unwrap_or_default()
            );
            answer.reply = match config.dmarc.on_unverifiable {
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
        (Word::TempError, _) => {
            answer.reply = Reply::for_failure(
                config.verify.on_dns_error,
                "4.4.3",
                "Temporary DNS failure while checking the sender's DMARC policy; try again later",
            );
        }
        _ => {}
    }
    if dmarc.result != Word::Pass {
        answer.reason = dmarc.policy.as_ref().and_then(|p| {
            override_reason(config, env, r, p.policy, p.record.t, dmarc.unverifiable)
        });
    }
    answer
}

/// Why the policy the domain asked for was not applied to a failing message.
fn override_reason(
    config: &Config,
    env: &Envelope<'_>,
    r: &AuthResults,
    policy: Policy,
    testing: bool,
    unverifiable: bool,
) -> Option<Reason> {
    let reason = |kind: ReasonKind, comment: &str| Reason {
        kind,
        comment: Some(comment.into()),
    };
    if testing {
        return Some(reason(
            ReasonKind::PolicyTestMode,
            "t=y in the DMARC record",
        ));
    }
    if !matches!(policy, Policy::Reject | Policy::Quarantine) {
        return None;
    }
    Some(if !config.dmarc.enforce {
        reason(
            ReasonKind::LocalPolicy,
            "the receiver does not enforce DMARC policy",
        )
    } else if exempt(config, env, r) {
        reason(ReasonKind::LocalPolicy, "sender exempt by local policy")
    } else if unverifiable {
        reason(
            ReasonKind::Other,
            "DMARC not decided: an aligned DKIM signature could not be evaluated",
        )
    } else if policy == Policy::Quarantine
        && config.dmarc.quarantine_action == QuarantineAction::Accept
    {
        reason(
            ReasonKind::LocalPolicy,
            "quarantine not applied by local policy",
        )
    } else {
        return None;
    })
}
