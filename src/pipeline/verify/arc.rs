//! ARC (RFC 8617): the chain's validation status, reported; it decides nothing here.

use mail_auth::{AuthenticatedMessage, DkimResult};

use crate::message::HeaderBlock;
use crate::results::{ArcVerdict, Word};

/// The status for a library result (RFC 8617 §5.2: none, pass or fail; a chain that cannot be
/// processed is a failed chain). A DNS failure stays `temperror`, so it is never mistaken for
/// a broken chain.
pub fn verdict(r: &mail_auth::ArcResult) -> ArcVerdict {
    let (result, reason) = match r {
        DkimResult::Pass => (Word::Pass, None),
        DkimResult::None => (Word::None, None),
        DkimResult::TempError(e) => (Word::TempError, Some(e.to_string())),
        DkimResult::Neutral(e) | DkimResult::Fail(e) | DkimResult::PermError(e) => {
            (Word::Fail, Some(e.to_string()))
        }
    };
    ArcVerdict { result, reason }
}

/// Why ARC is not evaluated on this message, if it is not: a chain cannot be checked over
/// fields or a body that were not kept, or header bytes the MTA did not send exactly.
pub fn blocker(
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
    if arc_fields.iter().any(|a| headers.may_have_dropped(a)) {
        return Some("not evaluated: ARC fields not kept (header section over the limit)".into());
    }
    let present = msg.is_some_and(|m| {
        m.headers().iter().any(|(n, _)| {
            arc_fields
                .iter()
                .any(|a| n.eq_ignore_ascii_case(a.as_bytes()))
        })
    });
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
