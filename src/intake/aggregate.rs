//! DMARC aggregate reports: RFC 7489 appendix C and RFC 9990 XML, and the older drafts real
//! senders still produce. Liberal in what is read (any namespace, upper-case values,
//! mismatched end tags, bytes that are not UTF-8), strict in what is kept (every value
//! checked and normalised; a report without its identity, or with a value outside the
//! schema's words, is refused with the reason). No DTD is ever read: a DOCTYPE, or an entity
//! other than XML's five and character references, refuses the report.

use std::net::IpAddr;

use quick_xml::events::Event;
use quick_xml::Reader;
use serde::{Deserialize, Serialize};

/// Most rows kept from one report (its size is already capped; this bounds the parse).
pub const MAX_ROWS: usize = 200_000;

/// One aggregate report, as kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aggregate {
    pub org: String,
    pub email: String,
    pub report_id: String,
    pub begin: i64,
    pub end: i64,
    /// `policy_published/domain`, lower case, no trailing dot.
    pub domain: String,
    pub policy: Policy,
    pub rows: Vec<Row>,
}

/// The policy the receiver found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub p: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub sp: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub np: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub adkim: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub aspf: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pct: Option<u32>,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub testing: String,
}

/// One report row: a source, how many messages, what the receiver decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Row {
    pub source_ip: String,
    pub count: i64,
    /// none, quarantine, reject (RFC 9990 also: pass).
    pub disposition: String,
    /// DMARC-aligned DKIM and SPF as the receiver evaluated them: pass or fail.
    pub dkim_aligned: String,
    pub spf_aligned: String,
    pub reasons: Vec<Reason>,
    pub header_from: String,
    pub envelope_from: String,
    pub dkim: Vec<DkimResult>,
    pub spf: Vec<SpfResult>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub comment: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkimResult {
    pub domain: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub selector: String,
    pub result: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpfResult {
    pub domain: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub scope: String,
    pub result: String,
}

const DISPOSITIONS: [&str; 4] = ["none", "quarantine", "reject", "pass"];
const ALIGNED: [&str; 2] = ["pass", "fail"];
const DKIM_RESULTS: [&str; 7] = [
    "none",
    "pass",
    "fail",
    "policy",
    "neutral",
    "temperror",
    "permerror",
];
const SPF_RESULTS: [&str; 7] = [
    "none",
    "neutral",
    "pass",
    "fail",
    "softfail",
    "temperror",
    "permerror",
];

/// A value from a closed list, case-insensitively; older reports' synonyms mapped
/// (RFC 7208's "hardfail" and 7489-era "error"/"unknown").
fn word(value: &str, allowed: &[&str], what: &str) -> Result<String, String> {
    let v = value.trim().to_ascii_lowercase();
    let v = match v.as_str() {
        "hardfail" => "fail".to_string(),
        "error" if allowed.contains(&"temperror") => "temperror".to_string(),
        "unknown" if allowed.contains(&"permerror") => "permerror".to_string(),
        "" if allowed.contains(&"none") => "none".to_string(),
        _ => v,
    };
    if allowed.contains(&v.as_str()) {
        Ok(v)
    } else {
        Err(format!(
            "{what} {value:?} is not one of {}",
            allowed.join(", ")
        ))
    }
}

fn domain(value: &str) -> String {
    value.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn timestamp(value: &str, what: &str) -> Result<i64, String> {
    value
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|t| (0..=253_402_300_799).contains(t))
        .ok_or_else(|| format!("{what} {value:?} is not a Unix time"))
}

/// Parse one aggregate report.
pub fn parse(bytes: &[u8]) -> Result<Aggregate, String> {
    // Bytes that are not UTF-8 become U+FFFD (a report's odd byte in a comment or a name
    // must not cost the whole report).
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_start_matches('\u{feff}');
    let mut reader = Reader::from_str(text);
    {
        let c = reader.config_mut();
        c.check_end_names = false;
        c.expand_empty_elements = true;
        c.trim_text(false);
    }
    let mut report = Aggregate::default();
    let mut path: Vec<String> = Vec::new();
    let mut value = String::new();
    let mut row = Row::default();
    let mut dkim = DkimResult::default();
    let mut spf = SpfResult::default();
    let mut reason = Reason::default();
    let mut saw_feedback = false;
    let mut begin = String::new();
    let mut end = String::new();
    let mut count = String::new();
    let mut pct = String::new();
    loop {
        let event = reader.read_event().map_err(|e| {
            format!(
                "not well-formed XML at byte {}: {e}",
                reader.buffer_position()
            )
        })?;
        match event {
            Event::DocType(_) => {
                return Err("a DOCTYPE: DTDs and entities are refused".into());
            }
            Event::Start(e) => {
                let local = e.local_name().as_ref().to_ascii_lowercase();
                // Usually the root; some senders wrap it (in an xs:schema element, say).
                if local == "feedback" && path.len() < 3 {
                    saw_feedback = true;
                }
                if path.len() > 16 {
                    return Err("elements nested deeper than any report's".into());
                }
                path.push(local);
                value.clear();
            }
            Event::Text(t) => value.push_str(&t.xml10_content()),
            Event::CData(t) => value.push_str(&t.xml10_content()),
            Event::GeneralRef(r) => {
                if let Some(c) = r.resolve_char_ref().map_err(|e| format!("{e}"))? {
                    value.push(c);
                } else {
                    let name = r.xml10_content();
                    value.push_str(match name.as_ref() {
                        "amp" => "&",
                        "lt" => "<",
                        "gt" => ">",
                        "quot" => "\"",
                        "apos" => "'",
                        other => {
                            return Err(format!(
                                "the entity &{other}; (no DTD is read, so no entity but XML's own)"
                            ))
                        }
                    });
                }
            }
            Event::End(e) => {
                let local = e.local_name().as_ref().to_ascii_lowercase();
                // A mismatched end tag (a sender's broken XML) closes up to its element.
                let Some(at) = path.iter().rposition(|p| *p == local) else {
                    continue;
                };
                let v = std::mem::take(&mut value);
                let v = v.trim();
                let tail: Vec<&str> = path[..].iter().map(String::as_str).collect();
                match tail.as_slice() {
                    [.., "report_metadata", "org_name"] => report.org = v.to_string(),
                    [.., "report_metadata", "email"] => report.email = v.to_string(),
                    [.., "report_metadata", "report_id"] => report.report_id = v.to_string(),
                    [.., "date_range", "begin"] => begin = v.to_string(),
                    [.., "date_range", "end"] => end = v.to_string(),
                    [.., "policy_published", "domain"] => report.domain = domain(v),
                    [.., "policy_published", "p"] => report.policy.p = v.to_ascii_lowercase(),
                    [.., "policy_published", "sp"] => report.policy.sp = v.to_ascii_lowercase(),
                    [.., "policy_published", "np"] => report.policy.np = v.to_ascii_lowercase(),
                    [.., "policy_published", "adkim"] => {
                        report.policy.adkim = v.to_ascii_lowercase()
                    }
                    [.., "policy_published", "aspf"] => report.policy.aspf = v.to_ascii_lowercase(),
                    [.., "policy_published", "pct"] => pct = v.to_string(),
                    [.., "policy_published", "testing"] => {
                        report.policy.testing = v.to_ascii_lowercase()
                    }
                    [.., "row", "source_ip"] => row.source_ip = v.to_string(),
                    [.., "row", "count"] => count = v.to_string(),
                    [.., "policy_evaluated", "disposition"] => row.disposition = v.to_string(),
                    [.., "policy_evaluated", "dkim"] => row.dkim_aligned = v.to_string(),
                    [.., "policy_evaluated", "spf"] => row.spf_aligned = v.to_string(),
                    [.., "reason", "type"] => reason.kind = v.to_ascii_lowercase(),
                    [.., "reason", "comment"] => reason.comment = v.to_string(),
                    [.., "policy_evaluated", "reason"] => {
                        row.reasons.push(std::mem::take(&mut reason));
                    }
                    [.., "identifiers", "header_from"] => row.header_from = domain(v),
                    [.., "identifiers", "envelope_from"] => row.envelope_from = domain(v),
                    [.., "auth_results", "dkim", "domain"] => dkim.domain = domain(v),
                    [.., "auth_results", "dkim", "selector"] => dkim.selector = v.to_string(),
                    [.., "auth_results", "dkim", "result"] => dkim.result = v.to_string(),
                    [.., "auth_results", "dkim"] => {
                        let mut d = std::mem::take(&mut dkim);
                        d.result = word(&d.result, &DKIM_RESULTS, "a DKIM result")
                            .map_err(|e| format!("record {}: {e}", report.rows.len() + 1))?;
                        row.dkim.push(d);
                    }
                    [.., "auth_results", "spf", "domain"] => spf.domain = domain(v),
                    [.., "auth_results", "spf", "scope"] => spf.scope = v.to_ascii_lowercase(),
                    [.., "auth_results", "spf", "result"] => spf.result = v.to_string(),
                    [.., "auth_results", "spf"] => {
                        let mut s = std::mem::take(&mut spf);
                        s.result = word(&s.result, &SPF_RESULTS, "an SPF result")
                            .map_err(|e| format!("record {}: {e}", report.rows.len() + 1))?;
                        row.spf.push(s);
                    }
                    [.., "feedback", "record"] => {
                        if report.rows.len() >= MAX_ROWS {
                            return Err(format!("more than {MAX_ROWS} records"));
                        }
                        let mut r = std::mem::take(&mut row);
                        let n = report.rows.len() + 1;
                        finish_row(&mut r, &std::mem::take(&mut count))
                            .map_err(|e| format!("record {n}: {e}"))?;
                        report.rows.push(r);
                    }
                    _ => {}
                }
                path.truncate(at);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_feedback {
        return Err("no <feedback> element".into());
    }
    // Some reporters leave org_name empty: their address's domain names them.
    if report.org.is_empty() {
        report.org = report
            .email
            .rsplit_once('@')
            .map(|(_, d)| domain(d))
            .unwrap_or_default();
    }
    for (what, v) in [
        ("org_name (nor an email to name the reporter)", &report.org),
        ("report_id", &report.report_id),
        ("policy_published/domain", &report.domain),
    ] {
        if v.is_empty() {
            return Err(format!("no {what}"));
        }
    }
    report.begin = timestamp(&begin, "date_range/begin")?;
    report.end = timestamp(&end, "date_range/end")?;
    if report.end < report.begin {
        return Err("date_range ends before it begins".into());
    }
    if !pct.is_empty() {
        report.policy.pct = Some(
            pct.parse::<u32>()
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| format!("pct {pct:?} is not 0 to 100"))?,
        );
    }
    Ok(report)
}

fn finish_row(r: &mut Row, count: &str) -> Result<(), String> {
    r.source_ip = r
        .source_ip
        .parse::<IpAddr>()
        .map_err(|_| format!("source_ip {:?} is not an IP address", r.source_ip))?
        .to_string();
    r.count = count
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|c| *c >= 0)
        .ok_or_else(|| format!("count {count:?} is not a number"))?;
    r.disposition = word(&r.disposition, &DISPOSITIONS, "disposition")?;
    r.dkim_aligned = word(&r.dkim_aligned, &ALIGNED, "policy_evaluated/dkim")?;
    r.spf_aligned = word(&r.spf_aligned, &ALIGNED, "policy_evaluated/spf")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"<?xml version="1.0"?>
<feedback><report_metadata><org_name>r.example</org_name><email>a@r.example</email>
<report_id>1</report_id><date_range><begin>1700000000</begin><end>1700086399</end></date_range>
</report_metadata><policy_published><domain>Example.COM.</domain><p>none</p></policy_published>
<record><row><source_ip>192.0.2.1</source_ip><count>3</count><policy_evaluated>
<disposition>None</disposition><dkim>PASS</dkim><spf>fail</spf></policy_evaluated></row>
<identifiers><header_from>example.com</header_from></identifiers><auth_results>
<dkim><domain>example.com</domain><selector>s1</selector><result>Pass</result></dkim>
<spf><domain>bounce.example.com</domain><result>softfail</result></spf></auth_results></record>
</feedback>"#;

    #[test]
    fn reads_and_normalises() {
        let r = parse(MINIMAL.as_bytes()).unwrap();
        assert_eq!(r.domain, "example.com");
        assert_eq!(r.rows.len(), 1);
        let row = &r.rows[0];
        assert_eq!(
            (
                row.count,
                row.disposition.as_str(),
                row.dkim_aligned.as_str(),
                row.spf_aligned.as_str()
            ),
            (3, "none", "pass", "fail")
        );
        assert_eq!(row.dkim[0].result, "pass");
        assert_eq!(row.spf[0].result, "softfail");
    }

    #[test]
    fn refuses_dtds_entities_and_bad_values() {
        let doctype = format!(
            "<?xml version=\"1.0\"?><!DOCTYPE feedback [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;\">]>{}",
            &MINIMAL[MINIMAL.find("<feedback>").unwrap()..]
        );
        assert!(parse(doctype.as_bytes()).unwrap_err().contains("DOCTYPE"));
        let entity = MINIMAL.replace("r.example</org_name>", "&b;</org_name>");
        assert!(parse(entity.as_bytes()).unwrap_err().contains("&b;"));
        let ip = MINIMAL.replace("192.0.2.1", "not-an-ip");
        assert!(parse(ip.as_bytes()).unwrap_err().contains("record 1"));
        let no_id = MINIMAL.replace("<report_id>1</report_id>", "");
        assert!(parse(no_id.as_bytes()).unwrap_err().contains("report_id"));
        // XML's own entities are fine.
        let amp = MINIMAL.replace("r.example</org_name>", "R &amp; D&#x21;</org_name>");
        assert_eq!(parse(amp.as_bytes()).unwrap().org, "R & D!");
    }
}
