//! DMARC failure reports (RFC 9991, the ARF format of RFC 5965): the key fields of the
//! `message/feedback-report` part, never the reported message itself. A report without that
//! part (some MTAs send plain text) is read from its "Sender Domain:" lines when it has them.

/// What is kept of one failure report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailureReport {
    /// The domain of the report mail's From: who reported it.
    pub reporter: String,
    pub domain: String,
    pub source_ip: String,
    pub feedback_type: String,
    pub auth_failure: String,
    pub delivery_result: String,
    pub arrival: String,
    pub mail_from: String,
    pub dkim_domain: String,
    pub dkim_selector: String,
    pub identity_alignment: String,
    pub auth_results: String,
}

/// The value of each `Name: value` line (folded lines joined), by lower-case name.
fn fields(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if !name.is_empty() && !name.contains(' ') {
                out.push((name.to_ascii_lowercase(), value.trim().to_string()));
            }
        }
    }
    out
}

/// `Name: value` lines of a plain-text notice, indented or not.
fn plain_fields(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

fn field(fields: &[(String, String)], name: &str) -> String {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.chars().take(512).collect())
        .unwrap_or_default()
}

/// The domain of an address or `<address>`.
fn domain_of(addr: &str) -> String {
    addr.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Read a failure report from a parsed mail, if it is one.
pub fn from_mail(msg: &mail_parser::Message<'_>) -> Option<Result<FailureReport, String>> {
    let reporter = msg
        .root()
        .from()
        .and_then(|f| f.first())
        .and_then(|m| m.address())
        .map(domain_of)
        .unwrap_or_default();
    let arf = msg.parts().find(|p| {
        p.content_type().is_some_and(|c| {
            c.ctype().eq_ignore_ascii_case("message")
                && c.subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case("feedback-report"))
        })
    });
    let (f, plain) = match arf {
        Some(part) => (fields(&String::from_utf8_lossy(&part.decoded())), false),
        None => {
            // Without an ARF part: a plain-text DMARC failure notice ("Sender Domain:").
            let subject = msg
                .root()
                .subject()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if !(subject.contains("dmarc")
                && (subject.contains("forensic") || subject.contains("failure")))
            {
                return None;
            }
            let text: String = msg.root().text_bodies().take(1).collect();
            (plain_fields(&text), true)
        }
    };
    let mut r = FailureReport {
        reporter,
        ..Default::default()
    };
    if plain {
        r.feedback_type = "auth-failure".into();
        r.domain = field(&f, "sender domain").to_ascii_lowercase();
        r.source_ip = field(&f, "sender ip address");
        r.arrival = field(&f, "received date");
        r.auth_failure = "dmarc".into();
    } else {
        r.feedback_type = field(&f, "feedback-type").to_ascii_lowercase();
        r.domain = field(&f, "reported-domain")
            .trim_end_matches('.')
            .to_ascii_lowercase();
        r.source_ip = field(&f, "source-ip");
        r.auth_failure = field(&f, "auth-failure").to_ascii_lowercase();
        r.delivery_result = field(&f, "delivery-result").to_ascii_lowercase();
        r.arrival = field(&f, "arrival-date");
        r.mail_from = field(&f, "original-mail-from");
        r.dkim_domain = field(&f, "dkim-domain").to_ascii_lowercase();
        r.dkim_selector = field(&f, "dkim-selector");
        r.identity_alignment = field(&f, "identity-alignment").to_ascii_lowercase();
        r.auth_results = field(&f, "authentication-results");
    }
    if r.domain.is_empty() {
        return Some(Err(
            "a failure report without Reported-Domain (RFC 9991 §3.1)".into(),
        ));
    }
    if !r.source_ip.is_empty() {
        match r.source_ip.parse::<std::net::IpAddr>() {
            Ok(ip) => r.source_ip = ip.to_string(),
            Err(_) => {
                return Some(Err(format!(
                    "Source-IP {:?} is not an IP address",
                    r.source_ip
                )))
            }
        }
    }
    Some(Ok(r))
}
