//! DMARC failure reports (RFC 9991, in the ARF format of RFC 5965 / RFC 6591). Off unless
//! `[reports] failure_reports = true`.
//!
//! The verifier hands a [`Failure`] to a bounded queue; one task per configuration sends them
//! off the milter path. At most `failure_rate` reports per policy domain per hour (and ten
//! times that over all domains); only header fields are sent, never the body; destinations
//! outside the policy domain must authorize it (`_report._dmarc`, as for aggregate reports).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::results::Disposition;

use tokio::sync::mpsc;

use crate::config::{Dns, Reports};
use crate::metrics::Counter;
use crate::metrics::Metrics;

/// One message that failed DMARC in a way its domain asked to hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub arrival: i64,
    pub source_ip: String,
    pub mail_from: String,
    pub header_from: String,
    /// Where the DMARC record was found (destinations are checked against it).
    pub policy_domain: String,
    pub ruf: Vec<String>,
    /// Our Authentication-Results value for the message (CRLF folding).
    pub auth_results: String,
    pub dkim_aligned: bool,
    pub spf_aligned: bool,
    /// RFC 6591 Delivery-Result: delivered, spam (quarantined) or reject.
    /// What was done with the message (its `Delivery-Result`).
    pub disposition: Disposition,
    /// The message's header section (CRLF), capped.
    pub headers: Vec<u8>,
}

impl Failure {
    /// The failure report for a message whose policy asks for one (`ruf=`, `fo=`), or `None`.
    /// `auth_results`: our Authentication-Results value; `headers`: the header section.
    pub fn of(
        r: &crate::results::AuthResults,
        answer: &crate::pipeline::policy::Answer,
        mail_from: &str,
        headers: &[u8],
        auth_results: &str,
    ) -> Option<Failure> {
        let found = r.dmarc.policy.as_ref()?;
        if !super::evaluation::failure_due(r) {
            return None;
        }
        Some(Failure {
            arrival: super::now(),
            source_ip: r.client_ip.to_string(),
            mail_from: mail_from.to_string(),
            header_from: r.dmarc.author.clone()?,
            policy_domain: found.policy_domain.clone(),
            ruf: found.record.ruf.iter().map(|u| u.uri.clone()).collect(),
            auth_results: auth_results.to_string(),
            dkim_aligned: r.dmarc.dkim_aligned,
            spf_aligned: r.dmarc.spf_aligned,
            disposition: answer.disposition,
            headers: headers[..headers.len().min(MAX_HEADERS)].to_vec(),
        })
    }
}

/// Largest header section copied into a report.
pub const MAX_HEADERS: usize = 64 * 1024;
const QUEUE: usize = 256;
const WINDOW: Duration = Duration::from_secs(3600);

/// Handle to the sending task.
#[derive(Clone, Debug)]
pub struct FailureSender {
    tx: mpsc::Sender<Box<Failure>>,
    metrics: Arc<Metrics>,
}

impl FailureSender {
    /// Start the sending task for this configuration (`helo`: our name towards the relay).
    /// `limits` outlive reloads. Must run inside the tokio runtime.
    pub fn start(
        reports: &Reports,
        dns: &Dns,
        helo: &str,
        metrics: Arc<Metrics>,
        limits: Arc<Mutex<RateLimits>>,
    ) -> Result<FailureSender, crate::dns::DnsError> {
        let auth = crate::dns::Resolver::new(
            crate::dns::authenticator(dns)?,
            // Its own cache and counters: the daemon's gauges describe the milter's cache.
            Arc::new(crate::dns::Cache::new(dns.cache_bytes, Arc::default())),
        );
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = Sender {
            rc: Arc::new(reports.clone()),
            helo: helo.to_string(),
            auth,
            metrics: metrics.clone(),
            limits,
        };
        tokio::spawn(task.run(rx));
        Ok(FailureSender { tx, metrics })
    }

    /// Queue a report; never waits. A full queue drops it (counted).
    pub fn send(&self, f: Failure) {
        if self.tx.try_send(Box::new(f)).is_err() {
            count(&self.metrics, "dropped");
        }
    }
}

fn count(metrics: &Metrics, outcome: &str) {
    metrics.inc(Counter::FailureReports, &[("outcome", outcome)]);
}

/// Per-domain and overall hourly limits on failure reports. They live as long as the daemon:
/// a reload does not grant a fresh hour.
#[derive(Debug)]
pub struct RateLimits {
    windows: HashMap<String, (Instant, u32)>,
    total: (Instant, u32),
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            windows: HashMap::new(),
            total: (Instant::now(), 0),
        }
    }
}

impl RateLimits {
    /// One more report about `domain`, at most `per_domain` per domain and ten times that
    /// overall per hour?
    fn allow(&mut self, domain: &str, per_domain: u32) -> bool {
        let now = Instant::now();
        if self.windows.len() > 10_000 {
            self.windows
                .retain(|_, (t, _)| now.duration_since(*t) < WINDOW);
        }
        let total_cap = per_domain.saturating_mul(10);
        if now.duration_since(self.total.0) >= WINDOW {
            self.total = (now, 0);
        }
        let w = self.windows.entry(domain.to_string()).or_insert((now, 0));
        if now.duration_since(w.0) >= WINDOW {
            *w = (now, 0);
        }
        if w.1 >= per_domain || self.total.1 >= total_cap {
            return false;
        }
        w.1 += 1;
        self.total.1 += 1;
        true
    }
}

/// The sending task of one configuration.
struct Sender {
    rc: Arc<Reports>,
    helo: String,
    auth: crate::dns::Resolver,
    metrics: Arc<Metrics>,
    limits: Arc<Mutex<RateLimits>>,
}

impl Sender {
    async fn run(self, mut rx: mpsc::Receiver<Box<Failure>>) {
        while let Some(f) = rx.recv().await {
            let allowed = self
                .limits
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .allow(&f.policy_domain, self.rc.failure_rate);
            if allowed {
                self.deliver(&f).await;
            } else {
                count(&self.metrics, "rate_limited");
            }
        }
    }

    async fn deliver(&self, f: &Failure) {
        let (rc, auth, helo) = (&self.rc, &self.auth, &self.helo);
        let rua: Vec<(String, usize)> = f.ruf.iter().map(|a| (a.clone(), 0)).collect();
        let mut notes = Vec::new();
        let dests =
            match super::send::destinations(rc, auth, &f.policy_domain, &rua, &mut notes).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!("failure report for {}: {e}", f.header_from);
                    count(&self.metrics, "failed");
                    return;
                }
            };
        for n in notes {
            tracing::debug!("failure report for {}: {n}", f.header_from);
        }
        for (rcpt, _) in dests {
            let msg = message(rc, f, &rcpt);
            match super::smtp::submit(&rc.transport(), helo, rc.from_address(), &rcpt, &msg).await {
                Ok(()) => {
                    count(&self.metrics, "sent");
                    tracing::info!(
                        "failure report for {} from {} sent to {rcpt}",
                        f.header_from,
                        f.source_ip
                    );
                }
                Err(e) => {
                    count(&self.metrics, "failed");
                    tracing::warn!("failure report for {} to {rcpt}: {e}", f.header_from);
                }
            }
        }
    }
}

/// The ARF message (RFC 5965 §2, RFC 6591 §3): a human part, the machine-readable
/// `message/feedback-report`, and the original header section as `text/rfc822-headers`.
pub fn message(rc: &Reports, f: &Failure, rcpt: &str) -> Vec<u8> {
    let id = super::send::unique_id();
    let boundary = format!("=_mailseal_ruf_{id}");
    let date = super::rfc5322_date(super::now());
    let arrival = super::rfc5322_date(f.arrival);
    let name = rc.org().replace(['"', '\\', '\r', '\n'], "");
    let one_line = |s: &str| s.replace(['\r', '\n'], " ");
    let alignment = match (f.dkim_aligned, f.spf_aligned) {
        (true, true) => "dkim, spf",
        (true, false) => "dkim",
        (false, true) => "spf",
        (false, false) => "none",
    };
    let mut m = String::with_capacity(f.headers.len() + 2048);
    m.push_str(&format!("From: \"{name}\" <{}>\r\n", rc.from_address()));
    m.push_str(&format!("To: <{rcpt}>\r\n"));
    m.push_str(&format!(
        "Subject: DMARC failure report for {} from {}\r\n",
        f.header_from, f.source_ip
    ));
    m.push_str(&format!("Date: {date}\r\n"));
    m.push_str(&format!("Message-ID: <{id}.ruf@{}>\r\n", rc.receiver()));
    m.push_str("Auto-Submitted: auto-generated\r\n");
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str(&format!(
        "Content-Type: multipart/report; report-type=feedback-report;\r\n boundary=\"{boundary}\"\r\n\r\n"
    ));
    m.push_str(&format!("--{boundary}\r\n"));
    m.push_str("Content-Type: text/plain; charset=us-ascii\r\n\r\n");
    m.push_str(&format!(
        "A message claiming to be from {} failed DMARC at {}.\r\n\
         It came from {} on {}. Only its header section is included.\r\n\r\n",
        f.header_from,
        rc.receiver(),
        f.source_ip,
        arrival
    ));
    m.push_str(&format!("--{boundary}\r\n"));
    m.push_str("Content-Type: message/feedback-report\r\n\r\n");
    m.push_str("Feedback-Type: auth-failure\r\n");
    m.push_str(concat!(
        "User-Agent: mailseal/",
        env!("CARGO_PKG_VERSION"),
        "\r\n"
    ));
    m.push_str("Version: 1\r\n");
    m.push_str(&format!(
        "Original-Mail-From: <{}>\r\n",
        one_line(&f.mail_from)
    ));
    m.push_str(&format!("Arrival-Date: {arrival}\r\n"));
    m.push_str(&format!("Source-IP: {}\r\n", f.source_ip));
    m.push_str(&format!("Reported-Domain: {}\r\n", f.header_from));
    m.push_str(&format!("Authentication-Results: {}\r\n", f.auth_results));
    m.push_str("Auth-Failure: dmarc\r\n");
    m.push_str(&format!("Identity-Alignment: {alignment}\r\n"));
    // RFC 6591 §3.2.
    let delivery = match f.disposition {
        Disposition::Reject => "reject",
        Disposition::Quarantine => "policy",
        Disposition::None => "delivered",
    };
    m.push_str(&format!("Delivery-Result: {delivery}\r\n\r\n"));
    m.push_str(&format!("--{boundary}\r\n"));
    m.push_str("Content-Type: text/rfc822-headers\r\n\r\n");
    if rc.failure_redact {
        m.push_str(&redact_recipients(&String::from_utf8_lossy(&f.headers)));
    } else {
        m.push_str(&String::from_utf8_lossy(&f.headers));
    }
    if !m.ends_with("\r\n") {
        m.push_str("\r\n");
    }
    m.push_str(&format!("\r\n--{boundary}--\r\n"));
    m.into_bytes()
}

/// Our recipients' local parts replaced with "redacted" in a copied header section (CRLF):
/// every address in To, Cc, Delivered-To and X-Original-To, and the `for <...>` clause of
/// Received. Folded lines belong to their field.
pub fn redact_recipients(headers: &str) -> String {
    const FIELDS: [&str; 4] = ["to", "cc", "delivered-to", "x-original-to"];
    let mut out = String::with_capacity(headers.len());
    let mut field = String::new();
    for line in headers.split_inclusive('\n') {
        if !line.starts_with([' ', '\t']) {
            field = line
                .split_once(':')
                .map(|(n, _)| n.trim().to_ascii_lowercase())
                .unwrap_or_default();
        }
        if FIELDS.contains(&field.as_str()) {
            // The field name stays; every address after it is redacted.
            match line
                .split_once(':')
                .filter(|_| !line.starts_with([' ', '\t']))
            {
                Some((name, value)) => {
                    out.push_str(name);
                    out.push(':');
                    out.push_str(&redact_addresses(value));
                }
                None => out.push_str(&redact_addresses(line)),
            }
        } else if field == "received" {
            out.push_str(&redact_for_clause(line));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// Replace the local part before every `@`.
fn redact_addresses(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        let before = &rest[..at];
        let start = before
            .rfind(|c: char| c.is_whitespace() || "<,:;(".contains(c))
            .map_or(0, |i| i + 1);
        out.push_str(&before[..start]);
        out.push_str("redacted@");
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    out
}

/// Redact the address of a Received field's `for <...>` clause.
fn redact_for_clause(line: &str) -> String {
    let lower = line.to_ascii_lowercase();
    let Some(i) = lower.find("for <") else {
        return line.to_string();
    };
    let start = i + "for <".len();
    let Some(len) = line[start..].find('>') else {
        return line.to_string();
    };
    format!(
        "{}{}{}",
        &line[..start],
        redact_addresses(&line[start..start + len]),
        &line[start + len..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hourly_limits_per_domain_and_overall() {
        let mut l = RateLimits::default();
        assert!(l.allow("a.example", 2));
        assert!(l.allow("a.example", 2));
        assert!(!l.allow("a.example", 2));
        assert!(l.allow("b.example", 2));
        // Overall: ten times the per-domain limit.
        let mut n = 3;
        for i in 0..100 {
            if l.allow(&format!("d{i}.example"), 2) {
                n += 1;
            }
        }
        assert_eq!(n, 20);
    }
}
