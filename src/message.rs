//! The message as the milter sees it: header fields rebuilt byte-exactly from milter
//! callbacks, and the envelope.
//!
//! Postfix sends each header as (name, value). With the leading-space option negotiated the
//! value is the exact text after the colon; folded lines are separated by a bare LF. The
//! wire form is `name ":" value CRLF`, with every bare LF turned into CRLF. This module is the
//! one place that knows this.

use std::ops::Range;

/// The header section, stored once as its wire bytes with field offsets into them.
#[derive(Debug, Default)]
pub struct HeaderBlock {
    raw: Vec<u8>,
    fields: Vec<Field>,
    /// Set when a cap was hit: fields after it were not stored.
    pub truncated: bool,
}

#[derive(Debug, Clone)]
struct Field {
    name: Range<usize>,
    value: Range<usize>,
}

/// Caps for one message's header section.
#[derive(Debug, Clone, Copy)]
pub struct HeaderLimits {
    pub max_bytes: usize,
    pub max_fields: usize,
}

impl HeaderBlock {
    /// Append one field. `leading_space` says whether the MTA sent the value verbatim
    /// (SMFIP_HDR_LEADSPC); without it the MTA removed one space, which we put back.
    /// Returns false (and marks the block truncated) when a limit is reached.
    pub fn push(
        &mut self,
        name: &[u8],
        value: &[u8],
        leading_space: bool,
        limits: HeaderLimits,
    ) -> bool {
        if self.truncated {
            return false;
        }
        let extra = value.iter().filter(|&&b| b == b'\n').count();
        let needed = name.len() + 1 + usize::from(!leading_space) + value.len() + extra + 2;
        if self.fields.len() >= limits.max_fields || self.raw.len() + needed > limits.max_bytes {
            self.truncated = true;
            return false;
        }
        let start = self.raw.len();
        self.raw.extend_from_slice(name);
        let name_end = self.raw.len();
        self.raw.push(b':');
        let value_start = self.raw.len();
        if !leading_space {
            self.raw.push(b' ');
        }
        let mut prev = 0u8;
        for &b in value {
            if b == b'\n' && prev != b'\r' {
                self.raw.push(b'\r');
            }
            self.raw.push(b);
            prev = b;
        }
        let value_end = self.raw.len();
        self.raw.extend_from_slice(b"\r\n");
        self.fields.push(Field {
            name: start..name_end,
            value: value_start..value_end,
        });
        true
    }

    /// The header section in wire form, without the blank line that ends it.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// (name, value) pairs in order; values in wire form (CRLF folding, leading space kept).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.fields
            .iter()
            .map(|f| (&self.raw[f.name.clone()], &self.raw[f.value.clone()]))
    }

    /// Values of every field called `name` (case-insensitive), in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Whether a field called `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.values(name).next().is_some()
    }

    /// Capacity in use, for memory accounting.
    pub fn bytes(&self) -> usize {
        self.raw.len()
    }
}

/// Strip `<>` and surrounding space from a MAIL FROM argument. Postfix sends `<a@b>` for SMTP
/// and `a@b` for sendmail/pickup; the null sender is `<>` → empty string.
pub fn envelope_address(arg: &[u8]) -> String {
    let s = String::from_utf8_lossy(arg);
    let s = s.trim();
    let s = s.strip_prefix('<').unwrap_or(s);
    let s = s.strip_suffix('>').unwrap_or(s);
    s.trim().to_string()
}

/// The domain part of an address, lower-cased.
pub fn domain_of(address: &str) -> Option<String> {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
        .filter(|d| !d.is_empty())
}

/// Every mailbox address in the From field(s) of a header section.
/// Returns the number of From fields and the addresses found in them.
pub fn from_addresses(headers: &HeaderBlock) -> (usize, Vec<String>) {
    let mut count = 0;
    let mut out = Vec::new();
    for value in headers.values("From") {
        count += 1;
        let mut field = Vec::with_capacity(value.len() + 8);
        field.extend_from_slice(b"From:");
        field.extend_from_slice(value);
        field.extend_from_slice(b"\r\n\r\n");
        if let Some(msg) = mail_parser::MessageParser::new().parse_headers(&field) {
            if let Some(list) = msg.from() {
                out.extend(
                    list.mailboxes()
                        .filter_map(|m| m.address().map(|a| a.trim().to_string()))
                        .filter(|a| a.contains('@')),
                );
            }
        }
    }
    (count, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: HeaderLimits = HeaderLimits {
        max_bytes: 1 << 20,
        max_fields: 100,
    };

    #[test]
    fn rebuilds_exact_bytes() {
        let mut h = HeaderBlock::default();
        assert!(h.push(b"Subject", b" A folded\n\tsubject", true, L));
        assert!(h.push(b"X-Empty", b"", true, L));
        assert!(h.push(b"X-Tab", b"\tval", true, L));
        assert!(h.push(b"X-NoSpace", b"nospace", true, L));
        assert_eq!(
            h.raw(),
            b"Subject: A folded\r\n\tsubject\r\nX-Empty:\r\nX-Tab:\tval\r\nX-NoSpace:nospace\r\n"
        );
        let vals: Vec<_> = h.values("subject").collect();
        assert_eq!(vals, vec![&b" A folded\r\n\tsubject"[..]]);
    }

    #[test]
    fn without_leading_space_one_space_is_restored() {
        let mut h = HeaderBlock::default();
        h.push(b"To", b"x@y", false, L);
        assert_eq!(h.raw(), b"To: x@y\r\n");
    }

    #[test]
    fn crlf_in_value_is_not_doubled() {
        let mut h = HeaderBlock::default();
        h.push(b"A", b" b\r\n\tc", true, L);
        assert_eq!(h.raw(), b"A: b\r\n\tc\r\n");
    }

    #[test]
    fn limits_truncate() {
        let mut h = HeaderBlock::default();
        let lim = HeaderLimits {
            max_bytes: 30,
            max_fields: 2,
        };
        assert!(h.push(b"A", b" 1", true, lim));
        assert!(h.push(b"B", b" 2", true, lim));
        assert!(!h.push(b"C", b" 3", true, lim));
        assert!(h.truncated);
        assert_eq!(h.len(), 2);
        let mut h = HeaderBlock::default();
        assert!(!h.push(b"Big", &[b'x'; 64], true, lim));
        assert!(h.is_empty());
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
