//! Addresses: the envelope sender as the MTA sends it, and the author domain (RFC 5322 From)
//! as DMARC and the signer read it, normalised once.

use super::HeaderBlock;

/// Strip `<>` and surrounding space from a MAIL FROM argument. Postfix sends `<a@b>` for SMTP
/// and `a@b` for sendmail/pickup; the null sender is `<>` → empty string.
pub fn envelope_address(arg: &[u8]) -> String {
    let s = String::from_utf8_lossy(arg);
    let s = s.trim();
    let s = s.strip_prefix('<').unwrap_or(s);
    let s = s.strip_suffix('>').unwrap_or(s);
    s.trim().to_string()
}

/// Why a string is not a domain name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidDomain {
    #[error("empty domain")]
    Empty,
    #[error("{0:?} is an address literal, not a domain name")]
    AddressLiteral(String),
    #[error("{0:?} is not a valid IDN domain name")]
    Idn(String),
    #[error("domain {0:?} is longer than 253 octets")]
    TooLong(String),
    #[error("domain {0:?} has an empty label")]
    EmptyLabel(String),
    #[error("domain {0:?} has a label longer than 63 octets")]
    LongLabel(String),
    #[error("domain {0:?} has characters no domain name has")]
    Characters(String),
}

/// A domain as DMARC and the tables compare it: one trailing dot dropped, lower case, U-labels
/// turned into A-labels (IDNA). An error says why it is not a domain name (empty label, a
/// label over 63 octets, a name over 253, characters no host name has, an address literal).
pub fn normalize_domain(domain: &str) -> Result<String, InvalidDomain> {
    let d = domain.trim();
    let d = d.strip_suffix('.').unwrap_or(d);
    if d.is_empty() {
        return Err(InvalidDomain::Empty);
    }
    if d.starts_with('[') {
        return Err(InvalidDomain::AddressLiteral(d.into()));
    }
    let ascii = if d.is_ascii() {
        d.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(d).map_err(|_| InvalidDomain::Idn(d.into()))?
    };
    if ascii.len() > 253 {
        return Err(InvalidDomain::TooLong(ascii));
    }
    for label in ascii.split('.') {
        if label.is_empty() {
            return Err(InvalidDomain::EmptyLabel(ascii));
        }
        if label.len() > 63 {
            return Err(InvalidDomain::LongLabel(ascii));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(InvalidDomain::Characters(ascii));
        }
    }
    Ok(ascii)
}

/// Whether `d` is a proper subdomain of `parent` (below it, on a label boundary).
pub fn is_subdomain(d: &str, parent: &str) -> bool {
    d.len() > parent.len()
        && d.ends_with(parent)
        && d.as_bytes()[d.len() - parent.len() - 1] == b'.'
}

/// The domain part of an address, normalised ([`normalize_domain`]); `None` when there is
/// none or it is not a domain name.
pub fn domain_of(address: &str) -> Option<String> {
    address
        .rsplit_once('@')
        .and_then(|(_, d)| normalize_domain(d).ok())
}

/// The author of a message as DMARC sees it (RFC 9989 §4.6): the domain of the RFC 5322 From
/// address, normalised once and used in that form for the DMARC lookup, alignment, the
/// Authentication-Results field and the reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Author {
    /// One From field whose addresses share one domain.
    Domain(String),
    /// An address whose domain is not a domain name.
    Invalid(InvalidDomain),
    /// No From field.
    Missing,
    /// A From field without a usable address.
    NoAddress,
    /// Several From fields, or addresses with different domains; the first domain given.
    Several(String),
}

impl Author {
    /// Find the author in a header section.
    pub fn of(headers: &HeaderBlock) -> Author {
        let (fields, addresses) = from_addresses(headers);
        if fields == 0 {
            return Author::Missing;
        }
        let mut domains: Vec<String> = Vec::with_capacity(addresses.len());
        let mut unusable = false;
        for a in &addresses {
            match a.rsplit_once('@').map(|(_, d)| normalize_domain(d)) {
                Some(Ok(d)) => domains.push(d),
                Some(Err(why)) if domains.is_empty() => return Author::Invalid(why),
                _ => unusable = true,
            }
        }
        let Some(first) = domains.first().cloned() else {
            return Author::NoAddress;
        };
        if fields > 1 || unusable || domains.iter().any(|d| *d != first) {
            Author::Several(first)
        } else {
            Author::Domain(first)
        }
    }
}

/// Every mailbox address in the From field(s) of a header section.
/// Returns the number of From fields and the addresses found in them.
pub fn from_addresses(headers: &HeaderBlock) -> (usize, Vec<String>) {
    let mut count = 0;
    let mut out = Vec::new();
    for value in headers.values("From") {
        count += 1;
        out.extend(field_addresses(value));
    }
    (count, out)
}

/// The mailbox addresses of one From field's value.
pub fn field_addresses(value: &[u8]) -> Vec<String> {
    let mut field = Vec::with_capacity(value.len() + 8);
    field.extend_from_slice(b"From:");
    field.extend_from_slice(value);
    field.extend_from_slice(b"\r\n\r\n");
    let Some(msg) = mail_parser::MessageParser::new().parse_headers(&field) else {
        return Vec::new();
    };
    msg.from()
        .map(|list| {
            list.mailboxes()
                .filter_map(|m| m.address().map(|a| a.trim().to_string()))
                .filter(|a| a.contains('@'))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{HeaderLimits, TEST_LIMITS};

    const L: HeaderLimits = TEST_LIMITS;

    #[test]
    fn authors() {
        let author = |fields: &[&str]| {
            let mut h = HeaderBlock::default();
            for f in fields {
                h.push(b"From", f.as_bytes(), true, L);
            }
            Author::of(&h)
        };
        assert_eq!(
            author(&[" <ceo@Example.COM.>"]),
            Author::Domain("example.com".into())
        );
        assert_eq!(
            author(&[" Staff: ceo@example.com, cfo@example.com;"]),
            Author::Domain("example.com".into())
        );
        assert_eq!(author(&[]), Author::Missing);
        assert_eq!(author(&[" undisclosed"]), Author::NoAddress);
        assert!(matches!(author(&[" <a@example..com>"]), Author::Invalid(_)));
        assert_eq!(
            author(&[" a@x.example, b@y.example"]),
            Author::Several("x.example".into())
        );
        assert_eq!(
            author(&[" a@x.example", " a@x.example"]),
            Author::Several("x.example".into())
        );
    }

    #[test]
    fn envelope() {
        assert_eq!(
            envelope_address(b"<alice@example.com>"),
            "alice@example.com"
        );
        assert_eq!(envelope_address(b"alice@example.com"), "alice@example.com");
        assert_eq!(envelope_address(b"<>"), "");
        assert_eq!(domain_of("a@Example.COM."), Some("example.com".into()));
        assert_eq!(domain_of("postmaster"), None);
        assert_eq!(domain_of("a@example.com.."), None);
        assert_eq!(
            domain_of("a@exämple.com"),
            Some("xn--exmple-cua.com".into())
        );
        for bad in [
            ".example.com",
            "example..com",
            "",
            "[192.0.2.1]",
            "ex ample.com",
        ] {
            assert!(normalize_domain(bad).is_err(), "{bad}");
        }
        assert!(normalize_domain(&format!("{}.com", "a".repeat(64))).is_err());
    }

    #[test]
    fn from_parsing() {
        let mut h = HeaderBlock::default();
        h.push(
            b"From",
            b" \"Doe, John\" <john@Example.com> (comment)",
            true,
            L,
        );
        assert_eq!(
            from_addresses(&h),
            (1, vec!["john@Example.com".to_string()])
        );
        let mut h = HeaderBlock::default();
        h.push(b"From", b" a@x.example, b@y.example", true, L);
        assert_eq!(from_addresses(&h).1.len(), 2);
        let mut h = HeaderBlock::default();
        h.push(b"From", b" undisclosed", true, L);
        assert_eq!(from_addresses(&h), (1, vec![]));
    }
}
