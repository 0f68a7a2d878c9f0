//! ARC (RFC 8617): the chain's validation status, reported; it decides nothing here.

use mail_auth::{AuthenticatedMessage, DkimResult};

use crate::dns::{Keys, Resolver};
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

/// RFC 8617 §5.2 step 1 to 3, before any signature is checked: every ARC set complete and
/// unique (one ARC-Seal, ARC-Message-Signature and ARC-Authentication-Results per instance,
/// instances 1 to N without gaps), and each seal and message signature a valid tag-list
/// (RFC 6376 §3.2: case-sensitive names, no duplicates, no empty entries) with its required
/// tags and an allowed algorithm (rsa-sha256 or ed25519-sha256, RFC 8301). `Err` says why the
/// chain fails; `Ok(false)`: the message has no ARC fields.
pub fn check_structure<'a>(
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<bool, String> {
    // Per instance: seals, message signatures, results.
    let mut sets: Vec<[usize; 3]> = Vec::new();
    let mut any = false;
    for (name, value) in fields {
        let kind = match name {
            n if n.eq_ignore_ascii_case(b"ARC-Seal") => 0,
            n if n.eq_ignore_ascii_case(b"ARC-Message-Signature") => 1,
            n if n.eq_ignore_ascii_case(b"ARC-Authentication-Results") => 2,
            _ => continue,
        };
        any = true;
        let label = [
            "ARC-Seal",
            "ARC-Message-Signature",
            "ARC-Authentication-Results",
        ][kind];
        let value = std::str::from_utf8(value).map_err(|_| format!("{label}: not UTF-8"))?;
        let i = match kind {
            2 => results_instance(value),
            _ => signature_instance(value, kind == 0),
        }
        .map_err(|e| format!("{label}: {e}"))?;
        if sets.len() < i {
            sets.resize(i, [0; 3]);
        }
        sets[i - 1][kind] += 1;
    }
    for (n, counts) in sets.iter().enumerate() {
        if counts != &[1, 1, 1] {
            return Err(format!(
                "ARC set i={} has {} seal(s), {} message signature(s), {} results",
                n + 1,
                counts[0],
                counts[1],
                counts[2]
            ));
        }
    }
    Ok(any)
}

/// The instance of an ARC-Authentication-Results field (`i=N;` first, RFC 8617 §4.1.1).
fn results_instance(value: &str) -> Result<usize, String> {
    let v = value.trim_start_matches(is_fws);
    let rest = v.strip_prefix('i').ok_or("no i= first")?;
    let rest = rest
        .trim_start_matches(is_fws)
        .strip_prefix('=')
        .ok_or("no i= first")?;
    let end = rest.find(';').ok_or("no ';' after i=")?;
    instance(rest[..end].trim_matches(is_fws))
}

/// Check an ARC-Seal (`seal`) or ARC-Message-Signature; its instance.
fn signature_instance(value: &str, seal: bool) -> Result<usize, String> {
    let tags = tag_list(value)?;
    let get = |name: &str| tags.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let required: &[&str] = if seal {
        &["a", "b", "cv", "d", "i", "s"]
    } else {
        &["a", "b", "bh", "d", "h", "i", "s"]
    };
    if let Some(missing) = required.iter().find(|t| get(t).is_none()) {
        return Err(format!("no {missing}= tag"));
    }
    match get("a") {
        Some("rsa-sha256" | "ed25519-sha256") => {}
        Some(a) => return Err(format!("algorithm {a:?} not allowed")),
        None => unreachable!("required"),
    }
    for t in ["t", "x"] {
        if let Some(v) = get(t) {
            if v.is_empty() || v.len() > 12 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{t}={v:?} is not a time"));
            }
        }
    }
    if seal {
        if get("h").is_some() {
            return Err("h= in an ARC-Seal".into());
        }
        if !matches!(get("cv"), Some("none" | "pass" | "fail")) {
            return Err(format!("cv={:?} is not none, pass or fail", get("cv")));
        }
    } else {
        if let Some(c) = get("c") {
            let ok = c.split('/').all(|p| matches!(p, "simple" | "relaxed"))
                && c.split('/').count() <= 2;
            if !ok {
                return Err(format!("c={c:?} is not a canonicalization"));
            }
        }
        let signed: Vec<String> = get("h")
            .unwrap_or_default()
            .split(':')
            .map(|h| h.trim_matches(is_fws).to_ascii_lowercase())
            .collect();
        if signed.iter().any(|h| h == "arc-seal") {
            return Err("h= signs ARC-Seal (RFC 8617 §4.1.2)".into());
        }
        // The same semantics as DKIM-Signature (RFC 8617 §4.1.2): From must be signed
        // (RFC 6376 §6.1.1).
        if !signed.iter().any(|h| h == "from") {
            return Err("h= does not sign From (RFC 6376 §6.1.1)".into());
        }
    }
    instance(get("i").unwrap_or_default())
}

fn instance(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(i) if (1..=50).contains(&i) && !v.starts_with('+') => Ok(i),
        _ => Err(format!("instance i={v:?} is not 1 to 50")),
    }
}

fn is_fws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// An RFC 6376 §3.2 tag-list: `name=value` entries separated by `;`, one trailing `;`
/// allowed. Names are ALPHA *(ALPHA / DIGIT / "_"), case-sensitive and unique; whitespace
/// around names and values is not part of them.
pub fn tag_list(value: &str) -> Result<Vec<(&str, &str)>, String> {
    let body = value.trim_end_matches(is_fws);
    let body = body.strip_suffix(';').unwrap_or(body);
    let mut tags: Vec<(&str, &str)> = Vec::new();
    for spec in body.split(';') {
        let (name, v) = spec
            .split_once('=')
            .ok_or_else(|| format!("entry {:?} is not tag=value", spec.trim_matches(is_fws)))?;
        let name = name.trim_matches(is_fws);
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("invalid tag name {name:?}"));
        }
        if tags.iter().any(|(n, _)| *n == name) {
            return Err(format!("tag {name}= given twice"));
        }
        tags.push((name, v.trim_matches(is_fws)));
    }
    Ok(tags)
}

/// Check the chain (its structure already checked): every seal's and message signature's
/// key through the resolver, looked up together, then mail-auth's chain verification.
pub async fn verify(resolver: &Resolver, m: &AuthenticatedMessage<'_>) -> ArcVerdict {
    let mut keys = Keys::default();
    let names = m
        .arc_seals()
        .iter()
        .map(|h| (h.header.s.as_str(), h.header.d.as_str()))
        .chain(
            m.arc_message_signatures()
                .iter()
                .map(|h| (h.header.s.as_str(), h.header.d.as_str())),
        );
    keys.fetch_all(resolver, names).await;
    let out = resolver
        .authenticator()
        .verify_arc(mail_auth::Parameters::new(m).with_cache(&keys))
        .await;
    verdict(out.result())
}
