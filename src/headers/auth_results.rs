//! RFC 8601 Authentication-Results: rendering ours from the verdicts, and spotting forged ones.

use crate::headers::edits::Edits;
use crate::message::HeaderBlock;
use crate::results::{policy_word, AuthResults, Disposition, SpfIdentity, Word};

pub const NAME: &str = "Authentication-Results";

/// Skip CFWS (whitespace, folding and nested comments) at the start of `s`.
fn skip_cfws(mut s: &[u8]) -> &[u8] {
    loop {
        match s.first() {
            Some(b' ' | b'\t' | b'\r' | b'\n') => s = &s[1..],
            Some(b'(') => {
                let mut depth = 0usize;
                let mut i = 0;
                while i < s.len() {
                    match s[i] {
                        b'\\' => i += 1,
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                s = s.get(i + 1..).unwrap_or(&[]);
            }
            _ => return s,
        }
    }
}

/// The authserv-id an Authentication-Results value starts with: the first token after any
/// CFWS, up to whitespace, `(` or `;`. A quoted-string id is unquoted.
pub fn authserv_id_of(value: &[u8]) -> Option<String> {
    let s = skip_cfws(value);
    if let Some(rest) = s.strip_prefix(b"\"") {
        let mut out = Vec::new();
        let mut i = 0;
        while i < rest.len() {
            match rest[i] {
                b'\\' if i + 1 < rest.len() => {
                    out.push(rest[i + 1]);
                    i += 2;
                    continue;
                }
                b'"' => return Some(String::from_utf8_lossy(&out).into_owned()),
                c => out.push(c),
            }
            i += 1;
        }
        return None;
    }
    let end = s
        .iter()
        .position(|&c| matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b'(' | b';'))
        .unwrap_or(s.len());
    (end > 0).then(|| String::from_utf8_lossy(&s[..end]).into_owned())
}

/// Whether an Authentication-Results value claims `authserv_id`: its id compared without
/// regard to case, after CFWS and comments, quoted or not, with or without a version token
/// and with or without one trailing dot (RFC 8601 §2.5, §5).
pub fn claims(value: &[u8], authserv_id: &str) -> bool {
    authserv_id_of(value).is_some_and(|id| same_authserv_id(&id, authserv_id))
}

/// Two authserv-ids compared as [`claims`] does: without regard to case or one trailing dot.
pub fn same_authserv_id(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    norm(a) == norm(b)
}

/// Comments removed from an Authentication-Results value (quoted strings kept whole).
fn without_comments(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len());
    let (mut depth, mut quoted, mut i) = (0usize, false, 0);
    while i < value.len() {
        let c = value[i];
        match c {
            b'\\' if depth > 0 || quoted => {
                if depth == 0 {
                    out.extend_from_slice(&value[i..(i + 2).min(value.len())]);
                }
                i += 1;
            }
            b'"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            b'(' if !quoted => depth += 1,
            b')' if !quoted && depth > 0 => {
                depth -= 1;
                out.push(b' ');
            }
            _ if depth == 0 => out.push(c),
            _ => {}
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The SPF result an Authentication-Results value records, with its smtp.mailfrom when
/// given: (result, smtp.mailfrom). `None` when it records no SPF result.
pub fn spf_result(value: &[u8]) -> Option<(Word, Option<String>)> {
    let plain = without_comments(value).replace(['\r', '\n', '\t'], " ");
    for resinfo in plain.split(';').skip(1) {
        let tokens = tokenize(resinfo);
        let mut pairs = tokens.iter().map(|t| t.split_once('='));
        let Some(Some((method, result))) = pairs.next() else {
            continue;
        };
        if !method.eq_ignore_ascii_case("spf") {
            continue;
        }
        let result: Word = result.to_ascii_lowercase().parse().ok()?;
        let mail_from = pairs.flatten().find_map(|(k, v)| {
            k.eq_ignore_ascii_case("smtp.mailfrom")
                .then(|| v.trim_matches('"').to_string())
        });
        return Some((result, mail_from));
    }
    None
}

/// `key=value` tokens of a resinfo, spaces around `=` (allowed as CFWS) joined away.
fn tokenize(resinfo: &str) -> Vec<String> {
    let mut tokens: Vec<String> = Vec::new();
    let mut join_next = false;
    for word in resinfo.split_whitespace() {
        match tokens.last_mut() {
            Some(last) if join_next || word.starts_with('=') => {
                last.push_str(word);
            }
            _ => tokens.push(word.to_string()),
        }
        join_next = word.ends_with('=');
    }
    tokens
}

/// Delete every Authentication-Results field that claims our authserv-id; other hosts'
/// fields stay. Returns how many were found.
pub fn remove_forged(headers: &HeaderBlock, authserv_id: &str, edits: &mut Edits) -> usize {
    let mut removed = 0;
    for (i, value) in headers.values(NAME).enumerate() {
        if claims(value, authserv_id) {
            edits.delete(NAME, i as i32 + 1);
            removed += 1;
        }
    }
    removed
}

/// Whether any Authentication-Results field claims our authserv-id.
pub fn has_forged(headers: &HeaderBlock, authserv_id: &str) -> bool {
    headers.values(NAME).any(|v| claims(v, authserv_id))
}

/// Is this a valid RFC 8601 pvalue token (no quoting needed)?
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(
                    b,
                    b'(' | b')'
                        | b'<'
                        | b'>'
                        | b','
                        | b';'
                        | b':'
                        | b'\\'
                        | b'"'
                        | b'/'
                        | b'['
                        | b']'
                        | b'?'
                        | b'='
                        | b'@'
                )
        })
}

/// A property value: as is when it is a token or an address (`local@domain`), quoted otherwise.
pub fn pvalue(s: &str) -> String {
    let plain = is_token(s)
        || s.split_once('@')
            .is_some_and(|(l, d)| (l.is_empty() || is_token(l)) && is_token(d));
    if plain {
        s.to_string()
    } else {
        let mut out = String::with_capacity(s.len() + 2);
        out.push('"');
        for c in s.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            if !c.is_control() {
                out.push(c);
            }
        }
        out.push('"');
        out
    }
}

/// Comment text: control characters and parentheses that would end the comment removed.
pub fn comment(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .map(|c| match c {
            '(' => '[',
            ')' => ']',
            '\\' => '/',
            c => c,
        })
        .collect()
}

/// Our Authentication-Results value for a message (RFC 8601, RFC 7601 `header.a`/`header.s`,
/// RFC 6008 `header.b`): SPF for MAIL FROM and HELO, one entry per DKIM-Signature, DMARC
/// with the policy and what was done (`p=… dis=…`), ARC. CRLF folding.
pub fn render(r: &AuthResults, disposition: Disposition) -> String {
    let mut ar = ArBuilder::new(&r.authserv_id);
    for spf in std::iter::once(&r.spf).chain(&r.spf_helo) {
        let prop = match spf.identity {
            SpfIdentity::MailFrom => "smtp.mailfrom",
            SpfIdentity::Helo => "smtp.helo",
        };
        ar.add(
            "spf",
            spf.result.as_str(),
            spf.comment.as_deref(),
            &[(prop, spf.shown.clone())],
        );
    }
    if r.dkim.is_empty() && r.dkim_malformed == 0 {
        ar.add("dkim", "none", Some("no signatures"), &[]);
    }
    for d in &r.dkim {
        let mut props = vec![("header.d", d.d.clone())];
        if !d.i.is_empty() {
            props.push(("header.i", d.i.clone()));
        }
        props.extend([
            ("header.s", d.s.clone()),
            ("header.a", d.a.to_string()),
            ("header.b", d.b.clone()),
        ]);
        ar.add("dkim", d.result.as_str(), d.reason.as_deref(), &props);
    }
    for _ in 0..r.dkim_malformed {
        ar.add("dkim", "permerror", Some("malformed DKIM-Signature"), &[]);
    }
    let dmarc = &r.dmarc;
    let mut comment = dmarc.policy.as_ref().map(|p| {
        format!(
            "p={} dis={}{}",
            policy_word(p.policy),
            disposition.as_str(),
            if p.record.t { " t=y" } else { "" }
        )
    });
    if let Some(why) = &dmarc.reason {
        comment = Some(match comment {
            Some(c) => format!("{c}; {why}"),
            None => why.clone(),
        });
    }
    let props: Vec<_> = dmarc
        .author
        .iter()
        .map(|a| ("header.from", a.clone()))
        .collect();
    ar.add("dmarc", dmarc.result.as_str(), comment.as_deref(), &props);
    ar.add(
        "arc",
        r.arc.result.as_str(),
        r.arc
            .reason
            .as_deref()
            .filter(|_| r.arc.result != Word::Pass),
        &[("smtp.remote-ip", r.client_ip.to_string())],
    );
    ar.value()
}

/// Builds one Authentication-Results value: `id;` then one folded line per result.
#[derive(Debug)]
pub struct ArBuilder {
    id: String,
    results: Vec<String>,
}

impl ArBuilder {
    pub fn new(authserv_id: &str) -> Self {
        ArBuilder {
            id: authserv_id.to_string(),
            results: Vec::new(),
        }
    }

    /// Add `method=result (comment) prop=value ...`.
    pub fn add(
        &mut self,
        method: &str,
        result: &str,
        comment_text: Option<&str>,
        props: &[(&str, String)],
    ) {
        let mut r = format!("{method}={result}");
        if let Some(c) = comment_text.filter(|c| !c.is_empty()) {
            r.push_str(" (");
            r.push_str(&comment(c));
            r.push(')');
        }
        for (k, v) in props {
            r.push(' ');
            r.push_str(k);
            r.push('=');
            r.push_str(&pvalue(v));
        }
        self.results.push(r);
    }

    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }

    /// The field value: `id;` then one folded line per result (CRLF-TAB folding).
    pub fn value(&self) -> String {
        if self.results.is_empty() {
            return format!("{}; none", self.id);
        }
        let mut v = self.id.clone();
        for r in &self.results {
            v.push_str(";\r\n\t");
            v.push_str(r);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spf_result_of_a_relay() {
        let v = b"gw.example.net; dkim=pass header.d=a.example;\r\n\tspf=pass (gw: 192.0.2.7 is allowed) smtp.mailfrom=bob@a.example; dmarc=pass";
        assert_eq!(
            spf_result(v),
            Some((Word::Pass, Some("bob@a.example".into())))
        );
        let v = b"gw.example.net 1; spf = SoftFail (x; y) smtp.mailfrom = \"b@a.example\"";
        assert_eq!(
            spf_result(v),
            Some((Word::SoftFail, Some("b@a.example".into())))
        );
        assert_eq!(spf_result(b"gw.example.net; dkim=pass"), None);
        assert_eq!(spf_result(b"gw.example.net; none"), None);
        // A method named in a comment is not a result.
        assert_eq!(spf_result(b"gw.example.net; dkim=fail (spf=pass)"), None);
        assert_eq!(spf_result(b"gw.example.net; spf=bogus"), None);
    }
    use crate::message::HeaderLimits;

    #[test]
    fn ids() {
        assert_eq!(
            authserv_id_of(b" mx.example.net; spf=pass").as_deref(),
            Some("mx.example.net")
        );
        assert_eq!(
            authserv_id_of(b" MX.Example.NET 1; none").as_deref(),
            Some("MX.Example.NET")
        );
        assert_eq!(
            authserv_id_of(b" (forged (nested)) \n\tmx.example.net;\n\tdkim=pass").as_deref(),
            Some("mx.example.net")
        );
        assert_eq!(
            authserv_id_of(b"\"mx.example.net\"; none").as_deref(),
            Some("mx.example.net")
        );
        assert_eq!(
            authserv_id_of(b"mx.example.net(c);x").as_deref(),
            Some("mx.example.net")
        );
        assert_eq!(authserv_id_of(b"   "), None);
        assert_eq!(authserv_id_of(b" (unterminated"), None);
    }

    #[test]
    fn forged_removed_foreign_kept() {
        let lim = HeaderLimits {
            max_bytes: 1 << 20,
            max_fields: 100,
        };
        let mut h = HeaderBlock::default();
        h.push(
            b"Authentication-Results",
            b" other.example; spf=pass",
            true,
            lim,
        );
        h.push(
            b"authentication-results",
            b" (x)\n\tMX.EXAMPLE.NET; dkim=pass",
            true,
            lim,
        );
        h.push(b"Subject", b" hi", true, lim);
        h.push(
            b"Authentication-Results",
            b" mx.example.net.evil; dkim=pass",
            true,
            lim,
        );
        h.push(
            b"Authentication-Results",
            b" mx.example.net; dmarc=pass",
            true,
            lim,
        );
        h.push(
            b"Authentication-Results",
            b" \"MX.example.net.\" 1; dmarc=pass",
            true,
            lim,
        );
        let mut e = Edits::default();
        assert_eq!(remove_forged(&h, "mx.example.net", &mut e), 3);
        assert_eq!(e.deletes(), [(NAME, 2), (NAME, 4), (NAME, 5)]);
        assert!(has_forged(&h, "mx.example.net."));
        assert!(!has_forged(&h, "mx.example.org"));
    }

    #[test]
    fn build() {
        let mut b = ArBuilder::new("mx.example.net");
        b.add(
            "spf",
            "pass",
            Some("ok (really)"),
            &[("smtp.mailfrom", "a@b.example".into())],
        );
        b.add(
            "dkim",
            "fail",
            None,
            &[
                ("header.d", "b.example".into()),
                ("header.b", "ab/+".into()),
            ],
        );
        b.add("x", "none", None, &[("p", "has space".into())]);
        assert_eq!(
            b.value(),
            "mx.example.net;\r\n\tspf=pass (ok [really]) smtp.mailfrom=a@b.example;\r\n\tdkim=fail header.d=b.example header.b=\"ab/+\";\r\n\tx=none p=\"has space\""
        );
        assert_eq!(ArBuilder::new("h").value(), "h; none");
    }
}
