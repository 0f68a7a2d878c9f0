//! What happens to a message: decided once ([`decide`]), then signed ([`sign`]) or verified
//! ([`verify`]). Nothing here knows the milter protocol; the result is [`Outcome`]: header
//! edits plus an SMTP answer.

pub mod context;
pub mod decide;
pub mod message;
pub mod policy;
pub mod sign;
pub mod verify;

pub use decide::{decide, ClientFacts, Decision, Outbound};

use crate::config::FailAction;
use crate::headers::edits::Edits;
use crate::results::Disposition;

/// The SMTP answer for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Continue,
    Tempfail {
        code: &'static str,
        status: &'static str,
        text: String,
    },
    Reject {
        code: &'static str,
        status: &'static str,
        text: String,
    },
}

impl Reply {
    /// The answer configured for a failure: tempfail (451 + status), accept, or reject (550 5.7.1).
    pub fn for_failure(action: FailAction, status: &'static str, text: impl Into<String>) -> Reply {
        match action {
            FailAction::Accept => Reply::Continue,
            FailAction::Tempfail => Reply::Tempfail {
                code: "451",
                status,
                text: text.into(),
            },
            FailAction::Reject => Reply::Reject {
                code: "550",
                status: "5.7.1",
                text: text.into(),
            },
        }
    }
}

/// The answer for a message over a size limit (`[limits] on_oversize`): 452 4.3.4 to try
/// again, 552 5.3.4 to refuse, or `None` to accept it as it is.
pub fn oversize_reply(action: FailAction, text: &str) -> Option<Reply> {
    match action {
        FailAction::Accept => None,
        FailAction::Tempfail => Some(Reply::Tempfail {
            code: "452",
            status: "4.3.4",
            text: text.to_string(),
        }),
        FailAction::Reject => Some(Reply::Reject {
            code: "552",
            status: "5.3.4",
            text: text.to_string(),
        }),
    }
}

/// Everything the milter layer has to do at end of message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub edits: Edits,
    pub reply: Reply,
    /// One line summary for the log.
    pub summary: String,
    /// What this message adds to DMARC aggregate reports, if anything.
    pub report: Option<Box<crate::report::Evaluation>>,
    /// A DMARC failure report to send, if one is due.
    pub failure: Option<Box<crate::report::failure::Failure>>,
    /// The signatures added (counted per day in the report store).
    pub signed: Vec<Signed>,
}

/// One signature added to a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Signed {
    pub domain: String,
    pub selector: String,
    pub algorithm: &'static str,
}

impl Outcome {
    /// An outcome that adds nothing to reports.
    pub fn new(edits: Edits, reply: Reply, summary: String) -> Outcome {
        Outcome {
            edits,
            reply,
            summary,
            report: None,
            failure: None,
            signed: Vec::new(),
        }
    }

    /// The edits were applied (or the message refused): only now does the message count for
    /// reports, with the disposition actually applied. A message tempfailed here comes back
    /// and is counted then.
    pub fn applied(&mut self, ctx: &context::Context) {
        if matches!(self.reply, Reply::Tempfail { .. }) {
            return;
        }
        if let (Some(recorder), Some(e)) = (&ctx.reports, self.report.take()) {
            recorder.record(*e);
        }
        if let Some(recorder) = &ctx.reports {
            for s in self.signed.drain(..) {
                recorder.signed(s);
            }
        }
        if let (Some(sender), Some(f)) = (&ctx.failures, self.failure.take()) {
            sender.send(*f);
        }
    }

    /// The hold asked for cannot be applied (the MTA does not offer it): it is dropped, and
    /// the reports say what really happened.
    pub fn not_held(&mut self, why: &str) {
        self.edits.unhold();
        if let Some(e) = self
            .report
            .as_mut()
            .filter(|e| e.disposition == Disposition::Quarantine)
        {
            e.disposition = Disposition::None;
            e.reasons.push(crate::report::Reason {
                kind: crate::report::ReasonKind::LocalPolicy,
                comment: Some(why.into()),
            });
        }
        if let Some(f) = self.failure.as_mut() {
            f.disposition = Disposition::None;
        }
    }
}
