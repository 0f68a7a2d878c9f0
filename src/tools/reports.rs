//! `mailseal reports show` and the output of `mailseal reports send`.

use std::fmt::Write;

use crate::config::{Config, InvalidValue};
use crate::report::send::{SendError, Sent};
use crate::report::store::Store;

/// "2026-11-22" (UTC midnight), an RFC 3339 time, Unix seconds, or an age ("3d", "12h").
pub fn parse_time(s: &str, now: i64) -> Result<i64, InvalidValue> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let as_unix = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .map_err(|_| InvalidValue(format!("{s:?} is before 1970")))
    };
    if s.len() == 10 && s.as_bytes()[4] == b'-' {
        if let Ok(t) = humantime::parse_rfc3339(&format!("{s}T00:00:00Z")) {
            return as_unix(t);
        }
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return as_unix(t);
    }
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(now - d.as_secs() as i64);
    }
    Err(format!(
        "invalid time {s:?}: use 2026-11-22, 2026-11-22T06:00:00Z, Unix seconds or an age like 3d"
    )
    .into())
}

fn time(t: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64),
    )
    .to_string()
}

/// What `reports send` did, one block per report.
pub fn render_sent(sent: &[Sent], dry_run: bool) -> String {
    let mut out = String::new();
    if sent.is_empty() {
        out.push_str("no reports to send\n");
    }
    for s in sent {
        let _ = writeln!(
            out,
            "{}: {} ({} records, {} messages){}",
            s.policy_domain,
            s.filename,
            s.records,
            s.messages,
            if dry_run { " [dry run]" } else { "" }
        );
        for n in &s.notes {
            let _ = writeln!(out, "  {n}");
        }
    }
    out
}

/// `reports show`: per policy domain, or one domain's grouped records.
pub fn show(config: &Config, domain: Option<&str>) -> Result<String, SendError> {
    let spec = config.reports.store().ok_or(SendError::Off)?;
    let mut store = Store::open(&spec)?;
    let mut out = String::new();
    let summary = store.summary(domain)?;
    let _ = writeln!(out, "store: {spec}");
    if summary.is_empty() {
        out.push_str("no DMARC evaluations recorded\n");
        return Ok(out);
    }
    let w = summary
        .iter()
        .map(|s| s.domain.len())
        .max()
        .unwrap_or(0)
        .max(13);
    let _ = writeln!(
        out,
        "{:<w$}  {:>8}  {:>10}  {:>8}  {:>7}  {:>10}  {:<20}  {:<20}",
        "policy domain",
        "messages",
        "dmarc pass",
        "acted on",
        "sources",
        "unreported",
        "first seen",
        "last seen"
    );
    for s in &summary {
        let _ = writeln!(
            out,
            "{:<w$}  {:>8}  {:>10}  {:>8}  {:>7}  {:>10}  {:<20}  {:<20}",
            s.domain,
            s.messages,
            s.passed,
            s.acted_on,
            s.sources,
            s.unreported,
            time(s.first),
            time(s.last)
        );
    }
    if let Some(d) = domain {
        let max_rows = config.reports.max_rows;
        let (groups, overflow) = store.domain_groups(d, max_rows)?;
        out.push_str("\nrecords (grouped as in a report):\n");
        let _ = writeln!(
            out,
            "{:<39}  {:>6}  {:<11}  {:<5}  {:<5}  {:<24}  {:<24}  auth results",
            "source ip", "count", "disposition", "dkim", "spf", "header from", "envelope from"
        );
        for g in groups {
            let dkim: Vec<String> = g
                .dkim
                .iter()
                .map(|k| format!("dkim={} ({}/{})", k.result, k.domain, k.selector))
                .collect();
            let _ = writeln!(
                out,
                "{:<39}  {:>6}  {:<11}  {:<5}  {:<5}  {:<24}  {:<24}  spf={} {}",
                g.source_ip,
                g.count,
                g.disposition,
                if g.dkim_aligned { "pass" } else { "fail" },
                if g.spf_aligned { "pass" } else { "fail" },
                g.header_from,
                g.envelope_from,
                g.spf_result,
                dkim.join(" ")
            );
        }
        if let Some(note) = overflow.note(max_rows) {
            let _ = writeln!(out, "({note})");
        }
    }
    let reports = store.reports(domain, 50)?;
    if !reports.is_empty() {
        out.push_str("\nreports (newest first):\n");
        for r in reports {
            let _ = writeln!(
                out,
                "{}  {}  {} .. {}  {} (attempts {}){}",
                r.policy_domain,
                r.report_id,
                time(r.begin),
                time(r.end),
                r.status,
                r.attempts,
                r.last_error
                    .filter(|e| e != "sent")
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let now = 1_795_426_200;
        assert_eq!(parse_time("2026-11-23", now).unwrap(), 1_795_392_000);
        assert_eq!(parse_time("2026-11-23T09:30:00Z", now).unwrap(), now);
        assert_eq!(parse_time("1795392000", now).unwrap(), 1_795_392_000);
        assert_eq!(parse_time("1d", now).unwrap(), now - 86_400);
        assert!(parse_time("yesterday", now).is_err());
    }
}
