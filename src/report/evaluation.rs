//! What one inbound message contributes to its policy domain's aggregate report (RFC 9990
//! `record`), built from its verdicts and the answer given.

use mail_auth::dmarc::{Alignment, FailureOptions, Psd};
use serde::{Deserialize, Serialize};

use crate::message::is_subdomain;
use crate::pipeline::policy::Answer;
use crate::results::{policy_word, AuthResults, Disposition, Word};

/// One DKIM signature result, as reported (`auth_results/dkim`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkimAuth {
    pub domain: String,
    pub selector: String,
    pub result: Word,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub human: Option<String>,
}

/// A policy override reason (`policy_evaluated/reason`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub kind: ReasonKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Why the policy was not applied as published (RFC 9990 `PolicyOverrideType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonKind {
    Forwarded,
    SampledOut,
    TrustedForwarder,
    MailingList,
    LocalPolicy,
    PolicyTestMode,
    Other,
}

impl ReasonKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonKind::Forwarded => "forwarded",
            ReasonKind::SampledOut => "sampled_out",
            ReasonKind::TrustedForwarder => "trusted_forwarder",
            ReasonKind::MailingList => "mailing_list",
            ReasonKind::LocalPolicy => "local_policy",
            ReasonKind::PolicyTestMode => "policy_test_mode",
            ReasonKind::Other => "other",
        }
    }
}

/// The DMARC policy record as found (`policy_published`), with its report destinations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub p: String,
    pub sp: String,
    pub np: String,
    pub adkim: String,
    pub aspf: String,
    pub fo: String,
    pub testing: bool,
    /// `rua=mailto:` addresses with their size limits (0 = none).
    pub rua: Vec<(String, usize)>,
}

/// One message's DMARC evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// Unix time the message was checked.
    pub received: i64,
    pub source_ip: String,
    /// Where the DMARC record was found.
    pub policy_domain: String,
    pub header_from: String,
    /// The MAIL FROM domain SPF was checked for (the HELO name for a null sender).
    pub envelope_from: String,
    pub published: Published,
    /// What we did.
    pub disposition: Disposition,
    pub dkim_aligned: bool,
    pub spf_aligned: bool,
    pub reasons: Vec<Reason>,
    pub dkim: Vec<DkimAuth>,
    pub spf_result: Word,
}

/// RFC 9990 §2.1.5: at most 100 signatures per row, best first — passing and aligned with
/// the From domain (exactly, then relaxed), other passes, then the rest.
pub fn rank_dkim(mut dkim: Vec<DkimAuth>, header_from: &str) -> Vec<DkimAuth> {
    let from = header_from.to_ascii_lowercase();
    dkim.sort_by_key(|d| {
        let domain = d.domain.to_ascii_lowercase();
        let pass = d.result == Word::Pass;
        let exact = domain == from;
        let relaxed = is_subdomain(&from, &domain) || is_subdomain(&domain, &from);
        match (pass, exact, relaxed) {
            (true, true, _) => 0,
            (true, false, true) => 1,
            (true, false, false) => 2,
            _ => 3,
        }
    });
    dkim.truncate(100);
    dkim
}

impl Evaluation {
    /// The record for a message whose DMARC policy was found (and asks for aggregate
    /// reports: `rua=`); `None` otherwise.
    pub fn of(r: &AuthResults, answer: &Answer) -> Option<Evaluation> {
        let found = r.dmarc.policy.as_ref()?;
        let author = r.dmarc.author.as_deref()?;
        let record = &found.record;
        if record.rua.is_empty() {
            return None;
        }
        let dkim: Vec<DkimAuth> = r
            .dkim
            .iter()
            .map(|d| DkimAuth {
                domain: d.domain.clone(),
                selector: d.s.clone(),
                result: d.result,
                human: d.reason.clone(),
            })
            .collect();
        let align = |a: Alignment| match a {
            Alignment::Relaxed => "r",
            Alignment::Strict => "s",
        };
        Some(Evaluation {
            received: super::now(),
            source_ip: r.client_ip.to_string(),
            policy_domain: found.policy_domain.clone(),
            header_from: author.to_string(),
            envelope_from: r.mail_from_domain.clone(),
            published: Published {
                p: policy_word(record.p).into(),
                sp: policy_word(record.sp).into(),
                np: policy_word(record.np).into(),
                adkim: align(record.adkim).into(),
                aspf: align(record.aspf).into(),
                fo: fo_tag(&record.fo).into(),
                testing: record.t,
                rua: record
                    .rua
                    .iter()
                    .map(|u| (u.uri.clone(), u.max_size))
                    .collect(),
            },
            disposition: answer.disposition,
            dkim_aligned: r.dmarc.dkim_aligned,
            spf_aligned: r.dmarc.spf_aligned,
            reasons: answer.reason.clone().into_iter().collect(),
            dkim: rank_dkim(dkim, author),
            spf_result: r.spf.result,
        })
    }
}

/// The `fo=` tag as written.
pub fn fo_tag(fo: &FailureOptions) -> &'static str {
    match fo {
        FailureOptions::All => "0",
        FailureOptions::Any => "1",
        FailureOptions::Dkim => "d",
        FailureOptions::Spf => "s",
        FailureOptions::DkimSpf => "d:s",
    }
}

/// Whether the record's `fo=` asks for a failure report on this verdict (RFC 9991 §3.2): `0`
/// when nothing produced an aligned pass, `1` when any mechanism did not, `d` when a DKIM
/// signature failed and `s` when SPF failed, whatever their alignment. Never on a temporary
/// error or an undecided verdict, and never under a record found at a public suffix level
/// (`psd=y`: the reports would go to the suffix's operator, RFC 9989 privacy).
pub fn failure_due(r: &AuthResults) -> bool {
    let v = &r.dmarc;
    let Some(found) = &v.policy else {
        return false;
    };
    if found.record.ruf.is_empty()
        || matches!(v.result, Word::TempError | Word::None)
        || found.record.psd == Psd::Yes
    {
        return false;
    }
    let dkim_failed = r.dkim.iter().any(|d| d.result == Word::Fail);
    let spf_failed = r.spf.result == Word::Fail;
    match found.record.fo {
        FailureOptions::All => !v.dkim_aligned && !v.spf_aligned,
        FailureOptions::Any => !v.dkim_aligned || !v.spf_aligned,
        FailureOptions::Dkim => dkim_failed,
        FailureOptions::Spf => spf_failed,
        FailureOptions::DkimSpf => dkim_failed || spf_failed,
    }
}
