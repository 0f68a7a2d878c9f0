//! Macro expansion (RFC 7208 §7.3, §7.4) and the checks a name must pass before it is looked
//! up (§4.3, §7.3).

use std::net::IpAddr;

use super::record::{Letter, Macro, MacroString, Piece};

/// What macros expand to, for one evaluation.
#[derive(Debug, Clone)]
pub struct Values<'a> {
    pub local: &'a str,
    pub sender_domain: &'a str,
    /// The domain being checked (changes with include and redirect).
    pub domain: &'a str,
    pub ip: IpAddr,
    pub helo: &'a str,
    pub receiver: &'a str,
    /// The validated name for `%{p}`, looked up only when a macro asks for it.
    pub validated: Option<&'a str>,
    pub now: u64,
}

/// Expand a macro-string.
pub fn expand(ms: &MacroString, v: &Values<'_>) -> String {
    let mut out = String::new();
    for piece in &ms.0 {
        match piece {
            Piece::Literal(l) => out.push_str(l),
            Piece::Macro(m) => out.push_str(&expand_one(m, v)),
        }
    }
    out
}

/// Whether a macro-string uses `%{p}` (which costs DNS lookups to expand).
pub fn uses_validated_name(ms: &MacroString) -> bool {
    ms.0.iter()
        .any(|p| matches!(p, Piece::Macro(m) if m.letter == Letter::ValidatedName))
}

fn expand_one(m: &Macro, v: &Values<'_>) -> String {
    let value = match m.letter {
        Letter::Sender => format!("{}@{}", v.local, v.sender_domain),
        Letter::Local => v.local.to_string(),
        Letter::SenderDomain => v.sender_domain.to_string(),
        Letter::Domain => v.domain.to_string(),
        Letter::Ip => dotted(v.ip),
        Letter::ValidatedName => v.validated.unwrap_or("unknown").to_string(),
        Letter::IpVersion => match v.ip {
            IpAddr::V4(_) => "in-addr".into(),
            IpAddr::V6(_) => "ip6".into(),
        },
        Letter::Helo => v.helo.to_string(),
        Letter::ClientIp => v.ip.to_string(),
        Letter::Receiver => v.receiver.to_string(),
        Letter::Time => v.now.to_string(),
    };
    let mut parts: Vec<&str> = value.split(|c| m.delimiters.contains(c)).collect();
    if m.reverse {
        parts.reverse();
    }
    if let Some(keep) = m.keep {
        let skip = parts.len().saturating_sub(keep);
        parts.drain(..skip);
    }
    let joined = parts.join(".");
    if m.escape {
        url_escape(&joined)
    } else {
        joined
    }
}

/// `%{i}`: dotted-quad for IPv4, dot-separated nibbles for IPv6 (§7.3).
fn dotted(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => {
            let mut s = String::with_capacity(63);
            for b in a.octets() {
                for n in [b >> 4, b & 0xf] {
                    if !s.is_empty() {
                        s.push('.');
                    }
                    s.push(char::from_digit(n.into(), 16).unwrap_or('0'));
                }
            }
            s
        }
    }
}

/// Upper-case macro letters: everything but RFC 3986 unreserved characters is escaped.
fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// §7.3: an expanded name longer than 253 characters loses labels from the left until it
/// fits. A trailing dot is dropped.
pub fn truncate(name: &str) -> &str {
    let mut n = name.strip_suffix('.').unwrap_or(name);
    while n.len() > 253 {
        match n.find('.') {
            Some(i) => n = &n[i + 1..],
            None => break,
        }
    }
    n
}

/// §4.3: a name we may look up: labels of 1 to 63 octets, at most 253 in all, more than one
/// label, and ASCII (internationalised names are A-labels).
pub fn is_valid_name(name: &str) -> bool {
    let n = name.strip_suffix('.').unwrap_or(name);
    !n.is_empty()
        && n.len() <= 253
        && n.is_ascii()
        && n.contains('.')
        && n.split('.').all(|l| !l.is_empty() && l.len() <= 63)
}

#[cfg(test)]
mod tests {
    use super::super::record::{macro_string, Context};
    use super::*;

    fn values(ip: &str) -> Values<'static> {
        Values {
            local: "strong-bad",
            sender_domain: "email.example.com",
            domain: "email.example.com",
            ip: ip.parse().unwrap(),
            helo: "mx.example.org",
            receiver: "mx.test",
            validated: None,
            now: 1,
        }
    }

    fn x(s: &str, ip: &str) -> String {
        expand(&macro_string(s, Context::Explanation).unwrap(), &values(ip))
    }

    /// The examples of RFC 7208 §7.4.
    #[test]
    fn rfc_examples() {
        let v4 = "192.0.2.3";
        assert_eq!(x("%{s}", v4), "strong-bad@email.example.com");
        assert_eq!(x("%{o}", v4), "email.example.com");
        assert_eq!(x("%{d}", v4), "email.example.com");
        assert_eq!(x("%{d4}", v4), "email.example.com");
        assert_eq!(x("%{d3}", v4), "email.example.com");
        assert_eq!(x("%{d2}", v4), "example.com");
        assert_eq!(x("%{d1}", v4), "com");
        assert_eq!(x("%{dr}", v4), "com.example.email");
        assert_eq!(x("%{d2r}", v4), "example.email");
        assert_eq!(x("%{l}", v4), "strong-bad");
        assert_eq!(x("%{l-}", v4), "strong.bad");
        assert_eq!(x("%{lr}", v4), "strong-bad");
        assert_eq!(x("%{lr-}", v4), "bad.strong");
        assert_eq!(x("%{l1r-}", v4), "strong");
        assert_eq!(
            x("%{ir}.%{v}._spf.%{d2}", v4),
            "3.2.0.192.in-addr._spf.example.com"
        );
        assert_eq!(
            x("%{lr-}.lp._spf.%{d2}", v4),
            "bad.strong.lp._spf.example.com"
        );
        assert_eq!(
            x("%{ir}.%{v}._spf.%{d2}", "2001:db8::cb01"),
            "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
        );
        assert_eq!(x("%{S}", v4), "strong-bad%40email.example.com");
        assert_eq!(x("%{c}", "2001:db8::cb01"), "2001:db8::cb01");
    }

    #[test]
    fn names() {
        assert!(is_valid_name("example.com."));
        assert!(!is_valid_name("example"));
        assert!(!is_valid_name("a..example"));
        assert!(!is_valid_name(&format!("{}.example", "a".repeat(64))));
        let long = format!("{}.example.com", "abcdefghi.".repeat(30));
        assert!(truncate(&long).len() <= 253);
        assert!(truncate(&long).ends_with("example.com"));
    }
}
