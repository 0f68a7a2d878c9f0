//! Typed verdicts: what each check of an inbound message found, as data.
//!
//! The verifier ([`crate::pipeline::verify`]) produces one [`AuthResults`]; the policy
//! ([`crate::pipeline::policy`]) decides the answer from it, the header writer
//! ([`crate::headers::auth_results::render`]) renders it, the reports
//! ([`crate::report::evaluation`]) and the metrics read it. Nothing turns a verdict into a
//! word and reads the word back.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use mail_auth::dmarc::{DmarcRecord, Policy};
use serde::{Deserialize, Serialize};

/// An RFC 8601 result value (§2.7). Stored and serialized as its word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Word {
    Pass,
    Fail,
    SoftFail,
    Neutral,
    None,
    TempError,
    PermError,
}

impl Word {
    pub const ALL: [Word; 7] = [
        Word::Pass,
        Word::Fail,
        Word::SoftFail,
        Word::Neutral,
        Word::None,
        Word::TempError,
        Word::PermError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Word::Pass => "pass",
            Word::Fail => "fail",
            Word::SoftFail => "softfail",
            Word::Neutral => "neutral",
            Word::None => "none",
            Word::TempError => "temperror",
            Word::PermError => "permerror",
        }
    }
}

impl fmt::Display for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Word {
    type Err = UnknownWord;

    fn from_str(s: &str) -> Result<Word, UnknownWord> {
        Word::ALL
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| UnknownWord(s.to_string()))
    }
}

/// A word that is none of a type's values (read back from storage).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown result word {0:?}")]
pub struct UnknownWord(pub String);

impl From<mail_auth::SpfResult> for Word {
    fn from(r: mail_auth::SpfResult) -> Word {
        use mail_auth::SpfResult as S;
        match r {
            S::Pass => Word::Pass,
            S::Fail => Word::Fail,
            S::SoftFail => Word::SoftFail,
            S::Neutral => Word::Neutral,
            S::TempError => Word::TempError,
            S::PermError => Word::PermError,
            S::None => Word::None,
        }
    }
}

/// Which SPF identity was checked (RFC 7208 §2.3, §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpfIdentity {
    MailFrom,
    Helo,
}

/// One SPF check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfVerdict {
    pub identity: SpfIdentity,
    pub result: Word,
    /// The identity as shown (`postmaster@HELO` for the null sender).
    pub shown: String,
    /// The explanation or reason, if any.
    pub comment: Option<String>,
}

/// One DKIM-Signature field's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimVerdict {
    /// `d=` as written, and normalised (lower case, A-labels) for alignment.
    pub d: String,
    pub domain: String,
    pub s: String,
    pub i: String,
    pub a: &'static str,
    /// The first characters of `b=` (RFC 6008 `header.b`).
    pub b: String,
    pub result: Word,
    pub reason: Option<String>,
    /// Not checked (fields or body not kept, past max_signatures, header bytes unknown): it
    /// might have passed, so it is `neutral`, never `fail`.
    pub not_evaluated: bool,
}

/// The DMARC record that applies to a message and where it was found.
#[derive(Debug, Clone)]
pub struct PolicyRecord {
    pub record: Arc<DmarcRecord>,
    /// Where the applied record was found: the author domain or a parent.
    pub policy_domain: String,
    /// The author domain's organizational domain (RFC 9989 §4.10.2).
    pub org_domain: String,
    /// The policy that applies to the author domain: p, sp or np; one step milder with t=y.
    pub policy: Policy,
}

/// The DMARC verdict.
#[derive(Debug, Clone)]
pub struct DmarcVerdict {
    /// pass, fail, none (no record, or no verdict possible), temperror or permerror.
    pub result: Word,
    /// Why, for none (when it was not decided), temperror and permerror.
    pub reason: Option<String>,
    /// The author domain, normalised (`header.from`), when there is one; with several From
    /// domains, the first.
    pub author: Option<String>,
    /// The record that applies, when one was found.
    pub policy: Option<PolicyRecord>,
    pub dkim_aligned: bool,
    pub spf_aligned: bool,
    /// An aligned signature could not be checked and nothing else passed: no verdict.
    pub unverifiable: bool,
}

impl DmarcVerdict {
    pub fn new(result: Word, reason: Option<String>) -> DmarcVerdict {
        DmarcVerdict {
            result,
            reason,
            author: None,
            policy: None,
            dkim_aligned: false,
            spf_aligned: false,
            unverifiable: false,
        }
    }
}

/// The ARC chain validation status (RFC 8617 §5.2: none, pass or fail; temperror for DNS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArcVerdict {
    pub result: Word,
    pub reason: Option<String>,
}

/// What the policy did about a DMARC failure. Stored and serialized as its word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Disposition {
    None,
    Quarantine,
    Reject,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::None => "none",
            Disposition::Quarantine => "quarantine",
            Disposition::Reject => "reject",
        }
    }
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Disposition {
    type Err = UnknownWord;

    fn from_str(s: &str) -> Result<Disposition, UnknownWord> {
        [
            Disposition::None,
            Disposition::Quarantine,
            Disposition::Reject,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
        .ok_or_else(|| UnknownWord(s.to_string()))
    }
}

/// The RFC 8601 word for a DMARC policy.
pub fn policy_word(p: Policy) -> &'static str {
    match p {
        Policy::Reject => "reject",
        Policy::Quarantine => "quarantine",
        Policy::None | Policy::Unspecified => "none",
    }
}

/// Everything verification found about one message.
#[derive(Debug, Clone)]
pub struct AuthResults {
    pub authserv_id: String,
    pub client_ip: IpAddr,
    pub helo: String,
    /// The MAIL FROM domain SPF was checked for (the HELO name for a null sender).
    pub mail_from_domain: String,
    pub spf: SpfVerdict,
    pub spf_helo: Option<SpfVerdict>,
    /// One per parsed DKIM-Signature field, in message order.
    pub dkim: Vec<DkimVerdict>,
    /// DKIM-Signature fields too malformed to parse (each `permerror`).
    pub dkim_malformed: usize,
    pub dmarc: DmarcVerdict,
    pub arc: ArcVerdict,
}

impl AuthResults {
    /// Each DKIM-Signature field's result word, the malformed ones last.
    pub fn dkim_words(&self) -> Vec<Word> {
        self.dkim
            .iter()
            .map(|d| d.result)
            .chain(std::iter::repeat_n(Word::PermError, self.dkim_malformed))
            .collect()
    }
}
