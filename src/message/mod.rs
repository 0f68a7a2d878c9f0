//! The message as the milter sees it: the header section rebuilt byte-exactly from milter
//! callbacks ([`HeaderBlock`]), addresses ([`address`]), and the body buffer with its memory
//! budget ([`budget`]).
//!
//! Postfix sends each header as (name, value). With the leading-space option negotiated the
//! value is the exact text after the colon; folded lines are separated by a bare LF. The
//! wire form is `name ":" value CRLF`, with every bare LF turned into CRLF. This module is the
//! one place that knows this.

pub mod address;
pub mod budget;

use std::ops::Range;

pub use address::{
    domain_of, envelope_address, from_addresses, is_subdomain, normalize_domain, Author,
};

/// Fields kept past the header cap, whatever it costs (within [`MAX_KEPT_PAST_CAP`]): what
/// DMARC needs (From, DKIM-Signature) and what we must be able to delete
/// (Authentication-Results). The cap bounds memory, never the verdict.
const KEPT_PAST_CAP: [&str; 3] = ["From", "DKIM-Signature", "Authentication-Results"];

/// Past the cap, at most this many of the fields above (and at most `max_header_size` more
/// bytes); a message with more is refused ([`HeaderBlock::overrun`]).
pub const MAX_KEPT_PAST_CAP: usize = 100;

/// How many distinct names of dropped fields are remembered; past that every name counts as
/// possibly dropped.
const MAX_DROPPED_NAMES: usize = 64;

/// The header section, stored once as its wire bytes with field offsets into them.
///
/// Up to the caps (`max_header_size` bytes, `max_headers` fields) every field is kept. Past
/// them only From, DKIM-Signature and Authentication-Results fields are kept, in their place;
/// the others are counted and their names remembered, so a signature over a dropped field is
/// known to be unverifiable rather than taken for a failure.
#[derive(Debug)]
pub struct HeaderBlock {
    raw: Vec<u8>,
    fields: Vec<Field>,
    /// The caps were reached: later fields go through the past-the-cap rule.
    at_cap: bool,
    dropped: usize,
    /// Lower-case names of dropped fields; `None` once there were too many to list.
    dropped_names: Option<Vec<Vec<u8>>>,
    kept_past_cap: usize,
    bytes_past_cap: usize,
    overrun: bool,
}

impl Default for HeaderBlock {
    fn default() -> Self {
        HeaderBlock {
            raw: Vec::new(),
            fields: Vec::new(),
            at_cap: false,
            dropped: 0,
            dropped_names: Some(Vec::new()),
            kept_past_cap: 0,
            bytes_past_cap: 0,
            overrun: false,
        }
    }
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
    /// Returns false when the field was not kept (past the cap, see the type's docs).
    pub fn push(
        &mut self,
        name: &[u8],
        value: &[u8],
        leading_space: bool,
        limits: HeaderLimits,
    ) -> bool {
        if self.overrun {
            return false;
        }
        let extra = value.iter().filter(|&&b| b == b'\n').count();
        let needed = name.len() + 1 + usize::from(!leading_space) + value.len() + extra + 2;
        if !self.at_cap
            && (self.fields.len() >= limits.max_fields
                || self.raw.len() + needed > limits.max_bytes)
        {
            self.at_cap = true;
        }
        if self.at_cap {
            if !KEPT_PAST_CAP
                .iter()
                .any(|k| name.eq_ignore_ascii_case(k.as_bytes()))
            {
                self.drop_field(name);
                return false;
            }
            if self.kept_past_cap >= MAX_KEPT_PAST_CAP
                || self.bytes_past_cap + needed > limits.max_bytes
            {
                self.overrun = true;
                return false;
            }
            self.kept_past_cap += 1;
            self.bytes_past_cap += needed;
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

    fn drop_field(&mut self, name: &[u8]) {
        self.dropped += 1;
        let lower = name.to_ascii_lowercase();
        if let Some(names) = &mut self.dropped_names {
            if !names.contains(&lower) {
                if names.len() >= MAX_DROPPED_NAMES {
                    self.dropped_names = None;
                } else {
                    names.push(lower);
                }
            }
        }
    }

    /// The header section in wire form (the fields kept), without the blank line that ends it.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Every field was kept.
    pub fn is_complete(&self) -> bool {
        self.dropped == 0 && !self.overrun
    }

    /// How many fields past the cap were not kept.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// Whether a field called `name` may have been dropped.
    pub fn may_have_dropped(&self, name: &str) -> bool {
        self.dropped > 0
            && self.dropped_names.as_ref().is_none_or(|names| {
                names
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
            })
    }

    /// More From, DKIM-Signature or Authentication-Results fields past the cap than can be
    /// kept: the message cannot be judged or cleaned and must be refused.
    pub fn overrun(&self) -> bool {
        self.overrun
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

/// Limits for the tests of this module and its children.
#[cfg(test)]
const TEST_LIMITS: HeaderLimits = HeaderLimits {
    max_bytes: 1 << 20,
    max_fields: 100,
};

#[cfg(test)]
mod tests {
    use super::*;

    const L: HeaderLimits = TEST_LIMITS;

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
    fn past_the_cap_only_what_dmarc_needs_is_kept() {
        let mut h = HeaderBlock::default();
        let lim = HeaderLimits {
            max_bytes: 60,
            max_fields: 2,
        };
        assert!(h.push(b"A", b" 1", true, lim));
        assert!(h.push(b"B", b" 2", true, lim));
        assert!(h.is_complete());
        assert!(!h.push(b"Subject", b" 3", true, lim));
        assert!(h.push(b"from", b" <a@example.com>", true, lim));
        assert!(h.push(b"Authentication-Results", b" mx; none", true, lim));
        assert!(
            !h.push(b"B", b" 4", true, lim),
            "the cap, once reached, stays"
        );
        assert_eq!(h.len(), 4);
        assert_eq!(h.dropped(), 2);
        assert!(!h.is_complete() && !h.overrun());
        assert!(h.may_have_dropped("SUBJECT") && h.may_have_dropped("b"));
        assert!(!h.may_have_dropped("From") && !h.may_have_dropped("To"));
        // Past the cap, the kept fields have a byte budget of their own.
        assert!(!h.push(b"From", &[b'x'; 64], true, lim));
        assert!(h.overrun());
        assert!(!h.push(b"From", b" <b@example.com>", true, lim));

        let mut h = HeaderBlock::default();
        for i in 0..super::MAX_KEPT_PAST_CAP {
            assert!(h.push(
                b"Authentication-Results",
                format!(" x{i}; none").as_bytes(),
                true,
                HeaderLimits {
                    max_bytes: 1 << 20,
                    max_fields: 0
                }
            ));
        }
        assert!(!h.overrun());
        assert!(!h.push(
            b"From",
            b" a@b.example",
            true,
            HeaderLimits {
                max_bytes: 1 << 20,
                max_fields: 0
            }
        ));
        assert!(h.overrun());
    }

    #[test]
    fn many_dropped_names_count_as_all() {
        let mut h = HeaderBlock::default();
        let lim = HeaderLimits {
            max_bytes: 1 << 20,
            max_fields: 0,
        };
        for i in 0..100 {
            h.push(format!("X-{i}").as_bytes(), b" v", true, lim);
        }
        assert!(h.may_have_dropped("Subject"));
    }
}
