//! The aggregate report document (RFC 9990 §2.1, namespace `urn:ietf:params:xml:ns:dmarc-2.0`).

use std::fmt::Write;

use super::store::Group;
use super::Published;

/// Who is reporting.
#[derive(Debug, Clone)]
pub struct Reporter<'a> {
    pub org_name: &'a str,
    pub email: &'a str,
    pub extra_contact_info: Option<&'a str>,
}

/// What one report covers.
#[derive(Debug, Clone)]
pub struct ReportMeta<'a> {
    pub report_id: &'a str,
    pub policy_domain: &'a str,
    pub begin: i64,
    pub end: i64,
    /// What the report could not say (rows left out over max_rows).
    pub error: Option<&'a str>,
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

fn elem(out: &mut String, indent: usize, name: &str, value: &str) {
    let _ = writeln!(
        out,
        "{:indent$}<{name}>{}</{name}>",
        "",
        escape(value),
        indent = indent
    );
}

fn pass_fail(b: bool) -> &'static str {
    if b {
        "pass"
    } else {
        "fail"
    }
}

/// The complete XML document.
pub fn feedback(
    who: &Reporter<'_>,
    meta: &ReportMeta<'_>,
    policy: &Published,
    groups: &[Group],
) -> String {
    let mut x = String::with_capacity(1024 + groups.len() * 700);
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str("<feedback xmlns=\"urn:ietf:params:xml:ns:dmarc-2.0\">\n");
    elem(&mut x, 2, "version", "1.0");
    x.push_str("  <report_metadata>\n");
    elem(&mut x, 4, "org_name", who.org_name);
    elem(&mut x, 4, "email", who.email);
    if let Some(extra) = who.extra_contact_info {
        elem(&mut x, 4, "extra_contact_info", extra);
    }
    elem(&mut x, 4, "report_id", meta.report_id);
    x.push_str("    <date_range>\n");
    elem(&mut x, 6, "begin", &meta.begin.to_string());
    elem(&mut x, 6, "end", &meta.end.to_string());
    x.push_str("    </date_range>\n");
    if let Some(e) = meta.error {
        elem(&mut x, 4, "error", e);
    }
    elem(
        &mut x,
        4,
        "generator",
        concat!("mailseal ", env!("CARGO_PKG_VERSION")),
    );
    x.push_str("  </report_metadata>\n");
    x.push_str("  <policy_published>\n");
    elem(&mut x, 4, "domain", meta.policy_domain);
    elem(&mut x, 4, "discovery_method", "treewalk");
    elem(&mut x, 4, "p", &policy.p);
    elem(&mut x, 4, "sp", &policy.sp);
    elem(&mut x, 4, "np", &policy.np);
    elem(&mut x, 4, "fo", &policy.fo);
    elem(&mut x, 4, "adkim", &policy.adkim);
    elem(&mut x, 4, "aspf", &policy.aspf);
    elem(&mut x, 4, "testing", if policy.testing { "y" } else { "n" });
    x.push_str("  </policy_published>\n");
    for g in groups {
        x.push_str("  <record>\n    <row>\n");
        elem(&mut x, 6, "source_ip", &g.source_ip);
        elem(&mut x, 6, "count", &g.count.to_string());
        x.push_str("      <policy_evaluated>\n");
        elem(&mut x, 8, "disposition", g.disposition.as_str());
        elem(&mut x, 8, "dkim", pass_fail(g.dkim_aligned));
        elem(&mut x, 8, "spf", pass_fail(g.spf_aligned));
        for r in &g.reasons {
            x.push_str("        <reason>\n");
            elem(&mut x, 10, "type", r.kind.as_str());
            if let Some(c) = &r.comment {
                elem(&mut x, 10, "comment", c);
            }
            x.push_str("        </reason>\n");
        }
        x.push_str("      </policy_evaluated>\n    </row>\n    <identifiers>\n");
        elem(&mut x, 6, "header_from", &g.header_from);
        elem(&mut x, 6, "envelope_from", &g.envelope_from);
        x.push_str("    </identifiers>\n    <auth_results>\n");
        for d in &g.dkim {
            x.push_str("      <dkim>\n");
            elem(&mut x, 8, "domain", &d.domain);
            elem(&mut x, 8, "selector", &d.selector);
            elem(&mut x, 8, "result", d.result.as_str());
            if let Some(h) = &d.human {
                elem(&mut x, 8, "human_result", h);
            }
            x.push_str("      </dkim>\n");
        }
        x.push_str("      <spf>\n");
        elem(&mut x, 8, "domain", &g.envelope_from);
        elem(&mut x, 8, "scope", "mfrom");
        elem(&mut x, 8, "result", g.spf_result.as_str());
        x.push_str("      </spf>\n    </auth_results>\n  </record>\n");
    }
    x.push_str("</feedback>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(escape("a<b>&\"c'\u{1}"), "a&lt;b&gt;&amp;&quot;c&apos;?");
    }
}
