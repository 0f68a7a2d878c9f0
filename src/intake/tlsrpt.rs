//! SMTP TLS reports (RFC 8460 §4): JSON, what is kept of it checked.

use serde::Deserialize;

/// One TLS report, as kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsReport {
    pub org: String,
    pub report_id: String,
    pub begin: i64,
    pub end: i64,
    pub policies: Vec<TlsPolicy>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsPolicy {
    /// sts, tlsa or no-policy-found.
    pub policy_type: String,
    pub domain: String,
    pub mx_host: String,
    pub successful: i64,
    pub failed: i64,
    pub failures: Vec<TlsFailure>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFailure {
    pub result_type: String,
    pub sending_ip: String,
    pub receiving_mx: String,
    pub receiving_ip: String,
    pub sessions: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Raw {
    organization_name: String,
    date_range: RawRange,
    report_id: String,
    #[serde(default)]
    policies: Vec<RawPolicyEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawRange {
    start_datetime: String,
    end_datetime: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawPolicyEntry {
    policy: RawPolicy,
    summary: RawSummary,
    #[serde(default)]
    failure_details: Vec<RawFailure>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawPolicy {
    policy_type: String,
    policy_domain: String,
    #[serde(default)]
    mx_host: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawSummary {
    total_successful_session_count: i64,
    total_failure_session_count: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawFailure {
    result_type: String,
    #[serde(default)]
    sending_mta_ip: String,
    #[serde(default)]
    receiving_mx_hostname: String,
    #[serde(default)]
    receiving_ip: String,
    #[serde(default)]
    failed_session_count: i64,
}

/// RFC 3339 date-time (what RFC 8460 asks for) as Unix time.
fn datetime(s: &str) -> Result<i64, String> {
    humantime::parse_rfc3339_weak(s.trim().trim_end_matches('Z'))
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .ok_or_else(|| format!("date-time {s:?} is not RFC 3339"))
}

fn domain(s: &str) -> String {
    s.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Parse one TLS report.
pub fn parse(bytes: &[u8]) -> Result<TlsReport, String> {
    let raw: Raw =
        serde_json::from_slice(bytes).map_err(|e| format!("not an RFC 8460 report: {e}"))?;
    if raw.organization_name.trim().is_empty() || raw.report_id.trim().is_empty() {
        return Err("no organization-name or report-id".into());
    }
    let mut report = TlsReport {
        org: raw.organization_name.trim().to_string(),
        report_id: raw.report_id.trim().to_string(),
        begin: datetime(&raw.date_range.start_datetime)?,
        end: datetime(&raw.date_range.end_datetime)?,
        policies: Vec::new(),
    };
    for p in raw.policies {
        let policy_type = p.policy.policy_type.trim().to_ascii_lowercase();
        if !["sts", "tlsa", "no-policy-found"].contains(&policy_type.as_str()) {
            return Err(format!("policy-type {policy_type:?}"));
        }
        let count = |n: i64, what: &str| {
            (n >= 0)
                .then_some(n)
                .ok_or_else(|| format!("{what} {n} is negative"))
        };
        let mut failures = Vec::new();
        for f in p.failure_details {
            failures.push(TlsFailure {
                result_type: f.result_type.trim().to_ascii_lowercase(),
                sending_ip: f.sending_mta_ip.trim().to_string(),
                receiving_mx: domain(&f.receiving_mx_hostname),
                receiving_ip: f.receiving_ip.trim().to_string(),
                sessions: count(f.failed_session_count, "failed-session-count")?,
            });
        }
        // mx-host is a string in RFC 8460's example, a list in some senders' reports.
        let mx_host = match p.policy.mx_host {
            Some(serde_json::Value::String(s)) => domain(&s),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str())
                .map(domain)
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        };
        report.policies.push(TlsPolicy {
            policy_type,
            domain: domain(&p.policy.policy_domain),
            mx_host,
            successful: count(
                p.summary.total_successful_session_count,
                "total-successful-session-count",
            )?,
            failed: count(
                p.summary.total_failure_session_count,
                "total-failure-session-count",
            )?,
            failures,
        });
    }
    Ok(report)
}
