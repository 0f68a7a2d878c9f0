//! Outbound: choose keys from the SigningTable and produce DKIM-Signature fields.
//!
//! The body is hashed as it streams in (mail-auth's streaming signer), so memory does not grow
//! with the message size: only the header section is held.

use mail_auth::dkim::{DkimSigner, DkimSigningStream};
use mail_auth::headers::HeaderWriter;
use mail_auth::signer::Ready;
use self_cell::self_cell;

use crate::config::keys::SharedKey;
use crate::config::tables::SigningRow;
use crate::config::Config;
use crate::message::{domain_of, from_addresses, HeaderBlock};

type StreamSlot<'a> = Option<DkimSigningStream<'a, SharedKey>>;

self_cell!(
    /// A signer built for one message together with the stream that borrows it.
    struct SignCell {
        owner: DkimSigner<SharedKey, Ready>,
        #[not_covariant]
        dependent: StreamSlot,
    }
);

/// One signature in progress.
pub struct PendingSignature {
    pub domain: String,
    pub selector: String,
    /// "rsa" or "ed25519".
    pub algorithm: &'static str,
    pub key_name: String,
    cell: SignCell,
}

impl std::fmt::Debug for PendingSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PendingSignature(d={} s={})", self.domain, self.selector)
    }
}

/// Where the signing identity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentitySource {
    From,
    Envelope,
}

impl std::fmt::Display for IdentitySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IdentitySource::From => "header.from",
            IdentitySource::Envelope => "envelope sender",
        })
    }
}

/// The outcome of choosing keys for a message.
#[derive(Debug)]
pub enum SignPlan {
    Sign {
        identity: String,
        source: IdentitySource,
        signatures: Vec<PendingSignature>,
    },
    /// Nothing to sign with; the reason is logged and the message accepted unsigned.
    NoKey { reason: String },
}

/// Pick the signing identity: the From address, or the envelope sender when From is missing
/// or unparseable.
pub fn signing_identity(
    headers: &HeaderBlock,
    mail_from: &str,
) -> Option<(String, IdentitySource)> {
    let (_, addrs) = from_addresses(headers);
    if let Some(a) = addrs.into_iter().next() {
        return Some((a, IdentitySource::From));
    }
    (!mail_from.is_empty() && mail_from.contains('@'))
        .then(|| (mail_from.to_string(), IdentitySource::Envelope))
}

/// The SigningTable rows that apply to `identity`: the first, or all with
/// `multiple_signatures`.
pub fn matching_rows<'a>(config: &'a Config, identity: &str) -> Vec<&'a SigningRow> {
    let rows = config.tables.matches(identity);
    if config.signing.multiple_signatures {
        rows.collect()
    } else {
        rows.take(1).collect()
    }
}

/// The h= list for this message: the configured names that are present (mail-auth signs
/// every occurrence of a listed name), then each oversigned name: signed too if present, and
/// listed once more (a listed name mail-auth does not find is an empty, "oversigned" entry,
/// which stops anyone from adding such a field later).
fn header_list(config: &Config, headers: &HeaderBlock) -> Vec<String> {
    let s = &config.signing;
    let mut list: Vec<String> = s
        .sign_headers
        .iter()
        .filter(|h| headers.contains(h))
        .cloned()
        .collect();
    for h in &s.oversign_headers {
        if headers.contains(h) && !list.iter().any(|x| x.eq_ignore_ascii_case(h)) {
            list.push(h.clone());
        }
        list.push(h.clone());
    }
    if list.is_empty() {
        list.push("From".into());
    }
    list
}

/// Decide the keys for an outbound message and start a stream per signature, fed with the
/// header section and the blank line. The body follows through [`write_body`].
/// `exact_headers`: the MTA sent the exact header bytes (SMFIP_HDR_LEADSPC); without them a
/// `simple` header canonicalization would sign bytes the MTA does not store, so the header
/// canonicalization is relaxed.
pub fn plan(
    config: &Config,
    headers: &HeaderBlock,
    mail_from: &str,
    exact_headers: bool,
) -> SignPlan {
    let Some((identity, source)) = signing_identity(headers, mail_from) else {
        return SignPlan::NoKey {
            reason: "no sender address in From or the envelope".into(),
        };
    };
    let rows = matching_rows(config, &identity);
    if rows.is_empty() {
        return SignPlan::NoKey {
            reason: format!("no SigningTable row matches {identity} ({source})"),
        };
    }
    let Some(sender_domain) = domain_of(&identity) else {
        return SignPlan::NoKey {
            reason: format!("sender {identity} has no domain"),
        };
    };
    let h = header_list(config, headers);
    let header_canonicalization = if exact_headers {
        config.signing.canonicalization.header
    } else {
        mail_auth::dkim::Canonicalization::Relaxed
    };
    let mut signatures = Vec::with_capacity(rows.len());
    for row in rows {
        let entry = &config.tables.keys[row.key];
        let domain = entry
            .domain
            .clone()
            .unwrap_or_else(|| sender_domain.clone());
        let mut signer = DkimSigner::from_key(entry.key.signing.clone())
            .domain(domain.clone())
            .selector(entry.selector.clone())
            .headers(h.iter().map(String::as_str))
            .header_canonicalization(header_canonicalization)
            .body_canonicalization(config.signing.canonicalization.body);
        if let Some(x) = config.signing.expiration {
            signer = signer.expiration(x);
        }
        if let Some(i) = row
            .signer
            .as_deref()
            .and_then(|i| signer_identity(i, &sender_domain, &domain))
        {
            signer = signer.identity(i);
        }
        let mut cell = SignCell::new(signer, |s| Some(s.sign_streaming()));
        cell.with_dependent_mut(|_, stream| {
            if let Some(st) = stream {
                st.write(headers.raw());
                st.write(b"\r\n");
            }
        });
        signatures.push(PendingSignature {
            domain,
            selector: entry.selector.clone(),
            algorithm: crate::rotation::algorithm(entry.key.kind),
            key_name: entry.name.clone(),
            cell,
        });
    }
    SignPlan::Sign {
        identity,
        source,
        signatures,
    }
}

/// A SigningTable row's signer as the signature's i=: `%` is the sender's domain, a bare
/// domain becomes `@domain`; `None` when it is not the signing domain or a subdomain of it
/// (RFC 6376 §3.5 requires that; OpenDKIM leaves such an i= out too).
fn signer_identity(signer: &str, sender_domain: &str, d: &str) -> Option<String> {
    let signer = signer.replace('%', sender_domain);
    let (user, domain) = signer.rsplit_once('@').unwrap_or(("", &signer));
    let within = domain.eq_ignore_ascii_case(d)
        || domain
            .to_ascii_lowercase()
            .ends_with(&format!(".{}", d.to_ascii_lowercase()));
    within.then(|| format!("{user}@{domain}"))
}

/// Feed a body chunk to every pending signature. Chunks may split lines anywhere.
pub fn write_body(signatures: &mut [PendingSignature], chunk: &[u8]) {
    for sig in signatures {
        sig.cell.with_dependent_mut(|_, stream| {
            if let Some(st) = stream {
                st.write(chunk);
            }
        });
    }
}

/// The field we add.
pub const DKIM_SIGNATURE: &str = "DKIM-Signature";

/// A finished signature as a header field value (CRLF folding, no leading space).
#[derive(Debug, Clone)]
pub struct SignedField {
    pub domain: String,
    pub selector: String,
    pub algorithm: &'static str,
    pub value: String,
}

/// Why a signature could not be made. Carries no key material.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("d={domain} s={selector}: {source}")]
    Signer {
        domain: String,
        selector: String,
        source: mail_auth::Error,
    },
    #[error("d={domain} s={selector}: signature already finished")]
    Finished { domain: String, selector: String },
}

/// Finish one signature.
pub fn finish(mut sig: PendingSignature) -> Result<SignedField, SignError> {
    let result = sig
        .cell
        .with_dependent_mut(|_, stream| stream.take().map(|st| st.finish()));
    match result {
        Some(Ok(signature)) => Ok(SignedField {
            value: crate::headers::field_value(&signature.to_header(), DKIM_SIGNATURE).to_string(),
            domain: sig.domain,
            selector: sig.selector,
            algorithm: sig.algorithm,
        }),
        Some(Err(source)) => Err(SignError::Signer {
            domain: sig.domain,
            selector: sig.selector,
            source,
        }),
        None => Err(SignError::Finished {
            domain: sig.domain,
            selector: sig.selector,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signer_identities() {
        let i = |s| signer_identity(s, "example.com", "example.com");
        assert_eq!(i("%").as_deref(), Some("@example.com"));
        assert_eq!(i("news@%").as_deref(), Some("news@example.com"));
        assert_eq!(i("@mail.example.com").as_deref(), Some("@mail.example.com"));
        assert_eq!(i("a@example.org"), None);
        assert_eq!(i("a@badexample.com"), None);
    }
}
