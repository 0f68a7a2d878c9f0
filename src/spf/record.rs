//! SPF record syntax (RFC 7208 §4.5, §4.6.1, §5, §6, §7.1 and the ABNF of §12), parsed
//! strictly: any syntax error anywhere in a record makes the whole evaluation `permerror`
//! (§4.6), before any mechanism is looked at.

use std::net::{Ipv4Addr, Ipv6Addr};

/// A syntax error, said in a few words (it is written into the A-R comment).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SyntaxError(pub String);

fn error<T>(what: impl Into<String>) -> Result<T, SyntaxError> {
    Err(SyntaxError(what.into()))
}

/// A parsed SPF record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub directives: Vec<Directive>,
    pub redirect: Option<MacroString>,
    pub exp: Option<MacroString>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qualifier {
    Pass,
    Fail,
    SoftFail,
    Neutral,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub qualifier: Qualifier,
    pub mechanism: Mechanism,
}

/// A mechanism (§5). CIDR lengths default to the full address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mechanism {
    All,
    Include(MacroString),
    A {
        domain: Option<MacroString>,
        cidr4: u8,
        cidr6: u8,
    },
    Mx {
        domain: Option<MacroString>,
        cidr4: u8,
        cidr6: u8,
    },
    Ptr(Option<MacroString>),
    Ip4(Ipv4Addr, u8),
    Ip6(Ipv6Addr, u8),
    Exists(MacroString),
}

impl Mechanism {
    /// Counted against the DNS lookup limit (§4.6.4).
    pub fn counts_lookup(&self) -> bool {
        !matches!(
            self,
            Mechanism::All | Mechanism::Ip4(..) | Mechanism::Ip6(..)
        )
    }
}

/// A macro-string (§7.1): literal text and macros.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MacroString(pub Vec<Piece>);

impl MacroString {
    /// The text, when it holds no macro.
    pub fn literal(&self) -> Option<&str> {
        match self.0.as_slice() {
            [Piece::Literal(l)] => Some(l),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Literal(String),
    Macro(Macro),
}

/// `%{letter digits r delimiters}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Macro {
    pub letter: Letter,
    /// Upper-case letter: the expansion is URL-escaped.
    pub escape: bool,
    /// Keep this many right-hand parts (never zero).
    pub keep: Option<usize>,
    pub reverse: bool,
    /// The characters to split on; `.` when none are given.
    pub delimiters: String,
}

/// Macro letters (§7.2). `c`, `r` and `t` are allowed only in explanation strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Letter {
    Sender,
    Local,
    SenderDomain,
    Domain,
    Ip,
    ValidatedName,
    IpVersion,
    Helo,
    ClientIp,
    Receiver,
    Time,
}

impl Letter {
    fn of(c: char) -> Option<Letter> {
        Some(match c.to_ascii_lowercase() {
            's' => Letter::Sender,
            'l' => Letter::Local,
            'o' => Letter::SenderDomain,
            'd' => Letter::Domain,
            'i' => Letter::Ip,
            'p' => Letter::ValidatedName,
            'v' => Letter::IpVersion,
            'h' => Letter::Helo,
            'c' => Letter::ClientIp,
            'r' => Letter::Receiver,
            't' => Letter::Time,
            _ => return None,
        })
    }

    fn explanation_only(self) -> bool {
        matches!(self, Letter::ClientIp | Letter::Receiver | Letter::Time)
    }
}

/// §4.5: a record is an SPF record when it begins with exactly `v=spf1` followed by a space
/// or its end.
pub fn is_spf_record(txt: &str) -> bool {
    let b = txt.as_bytes();
    b.len() >= 6 && b[..6].eq_ignore_ascii_case(b"v=spf1") && (b.len() == 6 || b[6] == b' ')
}

/// Where a macro-string stands: explanation strings may use `c`, `r`, `t` and spaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Record,
    Explanation,
}

/// Parse a record that [`is_spf_record`].
pub fn parse(txt: &str) -> Result<Record, SyntaxError> {
    if !is_spf_record(txt) {
        return error("not an SPF record");
    }
    let mut record = Record {
        directives: Vec::new(),
        redirect: None,
        exp: None,
    };
    // Terms are separated by spaces only (§12: 1*SP); any other character outside the
    // visible ASCII range is a syntax error in the term that holds it.
    for term in txt[6..].split(' ').filter(|t| !t.is_empty()) {
        let name_end = term.find([':', '/', '=']).unwrap_or(term.len());
        if term[name_end..].starts_with('=') {
            modifier(&mut record, &term[..name_end], &term[name_end + 1..])?;
        } else {
            record.directives.push(directive(term)?);
        }
    }
    Ok(record)
}

fn modifier(record: &mut Record, name: &str, value: &str) -> Result<(), SyntaxError> {
    let valid_name = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid_name {
        return error(format!("invalid modifier name {name:?}"));
    }
    let slot = if name.eq_ignore_ascii_case("redirect") {
        &mut record.redirect
    } else if name.eq_ignore_ascii_case("exp") {
        &mut record.exp
    } else {
        // Unknown modifiers are ignored, but must be well formed (§6, §12).
        macro_string(value, Context::Record)?;
        return Ok(());
    };
    if slot.is_some() {
        return error(format!("{name}= given twice"));
    }
    *slot = Some(domain_spec(value)?);
    Ok(())
}

fn directive(term: &str) -> Result<Directive, SyntaxError> {
    let (qualifier, rest) = match term.as_bytes()[0] {
        b'+' => (Qualifier::Pass, &term[1..]),
        b'-' => (Qualifier::Fail, &term[1..]),
        b'~' => (Qualifier::SoftFail, &term[1..]),
        b'?' => (Qualifier::Neutral, &term[1..]),
        _ => (Qualifier::Pass, term),
    };
    let name_end = rest.find([':', '/']).unwrap_or(rest.len());
    let (name, args) = rest.split_at(name_end);
    let name = name.to_ascii_lowercase();
    let mechanism = match name.as_str() {
        "all" if args.is_empty() => Mechanism::All,
        "include" => Mechanism::Include(required_domain(&name, args)?),
        "exists" => Mechanism::Exists(required_domain(&name, args)?),
        "ptr" => Mechanism::Ptr(optional_domain(args)?),
        "a" | "mx" => {
            let (rest, cidr4, cidr6) = dual_cidr(args)?;
            let domain = optional_domain(rest)?;
            if name == "a" {
                Mechanism::A {
                    domain,
                    cidr4,
                    cidr6,
                }
            } else {
                Mechanism::Mx {
                    domain,
                    cidr4,
                    cidr6,
                }
            }
        }
        "ip4" => {
            let (addr, len) = network(&name, args, 32)?;
            let ip: Ipv4Addr = addr
                .parse()
                .or_else(|_| error(format!("ip4:{addr} is not an IPv4 address")))?;
            Mechanism::Ip4(ip, len)
        }
        "ip6" => {
            let (addr, len) = network(&name, args, 128)?;
            let ip: Ipv6Addr = addr
                .parse()
                .or_else(|_| error(format!("ip6:{addr} is not an IPv6 address")))?;
            Mechanism::Ip6(ip, len)
        }
        _ => return error(format!("unknown mechanism {term:?}")),
    };
    Ok(Directive {
        qualifier,
        mechanism,
    })
}

fn required_domain(name: &str, args: &str) -> Result<MacroString, SyntaxError> {
    match args.strip_prefix(':') {
        Some(d) => domain_spec(d),
        None => error(format!("{name} needs a domain")),
    }
}

fn optional_domain(args: &str) -> Result<Option<MacroString>, SyntaxError> {
    if args.is_empty() {
        return Ok(None);
    }
    match args.strip_prefix(':') {
        Some(d) => domain_spec(d).map(Some),
        None => error(format!("unexpected {args:?}")),
    }
}

/// `ip4:` / `ip6:` network with an optional prefix length.
fn network<'a>(name: &str, args: &'a str, max: u8) -> Result<(&'a str, u8), SyntaxError> {
    let Some(net) = args.strip_prefix(':') else {
        return error(format!("{name} needs an address"));
    };
    match net.split_once('/') {
        Some((addr, len)) => Ok((addr, cidr(len, max)?)),
        None => Ok((net, max)),
    }
}

/// `[ip4-cidr-length] ["/" ip6-cidr-length]` at the end of an `a` or `mx` term.
fn dual_cidr(args: &str) -> Result<(&str, u8, u8), SyntaxError> {
    let mut rest = args;
    let mut cidr6 = 128;
    let mut cidr4 = 32;
    if let Some(i) = rest.rfind("//") {
        if is_digits(&rest[i + 2..]) {
            cidr6 = cidr(&rest[i + 2..], 128)?;
            rest = &rest[..i];
        }
    }
    if let Some(i) = rest.rfind('/') {
        if is_digits(&rest[i + 1..]) {
            cidr4 = cidr(&rest[i + 1..], 32)?;
            rest = &rest[..i];
        }
    }
    Ok((rest, cidr4, cidr6))
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A prefix length: decimal without leading zeros, at most `max` (§12).
fn cidr(s: &str, max: u8) -> Result<u8, SyntaxError> {
    let ok = is_digits(s) && (s == "0" || !s.starts_with('0')) && s.len() <= 3;
    match s.parse::<u8>() {
        Ok(n) if ok && n <= max => Ok(n),
        _ => error(format!("invalid prefix length /{s}")),
    }
}

/// A domain-spec (§12): a macro-string ending in a macro or in `.` toplabel [`.`].
pub fn domain_spec(s: &str) -> Result<MacroString, SyntaxError> {
    let ms = macro_string(s, Context::Record)?;
    if let Some(Piece::Literal(tail)) = ms.0.last() {
        let tail = tail.strip_suffix('.').unwrap_or(tail);
        let ok = match tail.rsplit_once('.') {
            Some((_, top)) => is_toplabel(top),
            None => false,
        };
        if !ok {
            return error(format!("{s:?} does not end in a top-level label"));
        }
    } else if ms.0.is_empty() {
        return error("empty domain");
    }
    Ok(ms)
}

/// `toplabel = ( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum / "-" ) alphanum )`
fn is_toplabel(l: &str) -> bool {
    let b = l.as_bytes();
    if b.is_empty() || !b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-') {
        return false;
    }
    if b.contains(&b'-') {
        b[0] != b'-' && b[b.len() - 1] != b'-'
    } else {
        b.iter().any(|c| c.is_ascii_alphabetic())
    }
}

/// A macro-string. In explanation strings spaces are literal text and `c`, `r`, `t` may be
/// used.
pub fn macro_string(s: &str, ctx: Context) -> Result<MacroString, SyntaxError> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        match c {
            '%' => {
                let next = rest.chars().next();
                rest = rest.get(1..).unwrap_or("");
                match next {
                    Some('%') => literal.push('%'),
                    Some('_') => literal.push(' '),
                    Some('-') => literal.push_str("%20"),
                    Some('{') => {
                        let Some(end) = rest.find('}') else {
                            return error(format!("unterminated macro in {s:?}"));
                        };
                        let m = macro_body(&rest[..end], ctx)?;
                        rest = &rest[end + 1..];
                        if !literal.is_empty() {
                            pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                        }
                        pieces.push(Piece::Macro(m));
                    }
                    _ => return error(format!("invalid macro in {s:?}")),
                }
            }
            ' ' if ctx == Context::Explanation => literal.push(' '),
            '\x21'..='\x7e' => literal.push(c),
            _ => return error(format!("invalid character {c:?}")),
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(MacroString(pieces))
}

fn macro_body(body: &str, ctx: Context) -> Result<Macro, SyntaxError> {
    let mut chars = body.chars();
    let c = chars.next().unwrap_or('}');
    let Some(letter) = Letter::of(c) else {
        return error(format!("unknown macro %{{{body}}}"));
    };
    if letter.explanation_only() && ctx == Context::Record {
        return error(format!("macro %{{{c}}} is allowed only in explanations"));
    }
    let rest = chars.as_str();
    let digits_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let keep = match &rest[..digits_end] {
        "" => None,
        d => match d.parse::<usize>() {
            Ok(0) => return error("macro transformer of zero parts"),
            Ok(n) => Some(n.min(128)),
            Err(_) => Some(128),
        },
    };
    let mut rest = &rest[digits_end..];
    let reverse = rest.starts_with(['r', 'R']);
    if reverse {
        rest = &rest[1..];
    }
    if !rest.chars().all(|c| ".-+,/_=".contains(c)) {
        return error(format!("invalid macro %{{{body}}}"));
    }
    Ok(Macro {
        letter,
        escape: c.is_ascii_uppercase(),
        keep,
        reverse,
        delimiters: if rest.is_empty() {
            ".".into()
        } else {
            rest.into()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_strictly() {
        let r = parse("v=spf1 +a/24//64 mx:example.com ~ip4:192.0.2.0/24 ip6:2001:db8::/32 -all")
            .unwrap();
        assert_eq!(r.directives.len(), 5);
        assert_eq!(
            r.directives[0].mechanism,
            Mechanism::A {
                domain: None,
                cidr4: 24,
                cidr6: 64
            }
        );
        assert_eq!(r.directives[2].qualifier, Qualifier::SoftFail);
        assert_eq!(
            r.directives[3].mechanism,
            Mechanism::Ip6("2001:db8::".parse().unwrap(), 32)
        );
        for bad in [
            "v=spf1 ip4:192.0.2.0/33",
            "v=spf1 ip4:192.0.2.0/032",
            "v=spf1 ip6:::1/129",
            "v=spf1 a:foo.123",
            "v=spf1 a:example",
            "v=spf1 foo:bar",
            "v=spf1 include",
            "v=spf1 redirect=a.example redirect=b.example",
            "v=spf1 exp=%{r}.example.com",
            "v=spf1 1x=y",
            "v=spf1 =y",
            "v=spf1 a:ex%ample.com",
            "v=spf1 a:ex\u{e9}mple.com",
            "v=spf1 a:%{d0}.example.com",
            "v=spf1 all:x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        for good in [
            "v=spf1",
            "v=spf1 ",
            "V=SPF1 -ALL",
            "v=spf1 -all moo.cow-far_out=man:dog/cat",
            "v=spf1 a:%{d}",
            "v=spf1 a:example.com. -all",
            "v=spf1 exists:%{ir}.%{l1r+-}._spf.%{d} -all",
        ] {
            assert!(parse(good).is_ok(), "{good}");
        }
        assert!(!is_spf_record("v=spf10"));
        assert!(!is_spf_record(" v=spf1"));
    }

    #[test]
    fn macros() {
        let m = macro_string("%{L2r-}.%%%_%-x", Context::Record).unwrap();
        assert_eq!(
            m.0[0],
            Piece::Macro(Macro {
                letter: Letter::Local,
                escape: true,
                keep: Some(2),
                reverse: true,
                delimiters: "-".into()
            })
        );
        assert_eq!(m.0[1], Piece::Literal(".% %20x".into()));
        assert!(macro_string("%{c}", Context::Record).is_err());
        assert!(macro_string("%{c} at %{t}", Context::Explanation).is_ok());
        assert!(macro_string("%x", Context::Record).is_err());
        assert!(macro_string("%{d", Context::Record).is_err());
        assert!(macro_string("%", Context::Record).is_err());
    }
}
