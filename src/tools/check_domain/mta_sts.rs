//! MTA-STS (RFC 8461): the record and the HTTPS policy; TLS-RPT (RFC 8460).

use std::sync::Arc;
use std::time::Duration;

use mail_auth::dns::TxtRecordParser;
use mail_auth::MessageAuthenticator;

use super::{Level, Options, Report};

/// MTA-STS `mx:` pattern match: `*.example.com` matches exactly one extra label.
pub(super) fn mx_pattern_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(first, tail)| !first.is_empty() && tail == rest),
        None => pattern == host,
    }
}

/// Why the MTA-STS policy could not be fetched, as shown in the finding.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct FetchFailed(String);

impl FetchFailed {
    fn of(e: impl std::fmt::Display) -> Self {
        FetchFailed(e.to_string())
    }
}

impl From<String> for FetchFailed {
    fn from(s: String) -> Self {
        FetchFailed(s)
    }
}

impl From<&str> for FetchFailed {
    fn from(s: &str) -> Self {
        FetchFailed(s.to_string())
    }
}

pub(super) async fn fetch_policy(
    auth: &MessageAuthenticator,
    domain: &str,
    opts: &Options,
) -> Result<String, FetchFailed> {
    let host = format!("mta-sts.{domain}");
    let port = opts.https_port.unwrap_or(443);
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(ca) = &opts.ca_file {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(ca)
            .map_err(|e| FetchFailed::from(format!("{}: {e}", ca.display())))?;
        for c in certs {
            roots
                .add(c.map_err(|e| FetchFailed::from(format!("{}: {e}", ca.display())))?)
                .map_err(FetchFailed::of)?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(FetchFailed::of)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from(host.clone()).map_err(FetchFailed::of)?;
    let work = async {
        // The policy host is resolved through the same resolver as every other check.
        let ips = auth
            .resolver()
            .lookup_ip(format!("{host}."))
            .await
            .map_err(|e| FetchFailed::from(format!("cannot resolve {host}: {e}")))?;
        let ip = ips
            .iter()
            .next()
            .ok_or_else(|| FetchFailed::from(format!("{host} has no address")))?;
        let tcp = tokio::net::TcpStream::connect((ip, port))
            .await
            .map_err(|e| FetchFailed::from(format!("connect {host} ({ip}):{port}: {e}")))?;
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| FetchFailed::from(format!("TLS with {host}: {e}")))?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tls.write_all(format!("GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .map_err(FetchFailed::of)?;
        let mut body = Vec::new();
        // RFC 8461 §3.3: policies are at most 64 KiB.
        let _ = (&mut tls).take(70 * 1024).read_to_end(&mut body).await;
        Ok::<_, FetchFailed>(body)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| FetchFailed::from("timed out"))??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or(FetchFailed::from("malformed HTTP response"))?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("HTTP status {status:?}").into());
    }
    Ok(body.to_string())
}

pub(super) async fn check_mta_sts(
    auth: &MessageAuthenticator,
    domain: &str,
    mx: &[String],
    opts: &Options,
    r: &mut Report,
) {
    let name = format!("_mta-sts.{domain}");
    let Some(records) = r.txt(auth, "mta-sts", &name).await else {
        return;
    };
    if records.is_empty() {
        return r.add(
            "mta-sts",
            Level::Warn,
            format!("no MTA-STS record at {name}: senders may deliver without TLS"),
        );
    }
    let Some(record) = records
        .iter()
        .find(|v| v.to_ascii_uppercase().starts_with("V=STSV1"))
    else {
        return r.add(
            "mta-sts",
            Level::Warn,
            format!("no v=STSv1 record at {name}"),
        );
    };
    match mail_auth::mta_sts::MtaStsRecord::parse(record.as_bytes()) {
        Ok(rec) => r.add("mta-sts", Level::Pass, format!("record id={}", rec.id)),
        Err(e) => {
            return r.add(
                "mta-sts",
                Level::Fail,
                format!("syntax error in \"{record}\": {e}"),
            )
        }
    }
    let policy = match fetch_policy(auth, domain, opts).await {
        Ok(p) => p,
        Err(e) => {
            return r.add(
                "mta-sts",
                Level::Fail,
                format!("policy https://mta-sts.{domain}/.well-known/mta-sts.txt: {e}"),
            )
        }
    };
    let mut version = None;
    let mut mode = None;
    let mut max_age = None;
    let mut patterns = Vec::new();
    for line in policy.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim().to_string();
        match k.trim() {
            "version" => version = Some(v),
            "mode" => mode = Some(v),
            "max_age" => max_age = v.parse::<u64>().ok(),
            "mx" => patterns.push(v),
            _ => {}
        }
    }
    if version.as_deref() != Some("STSv1") {
        r.add("mta-sts", Level::Fail, "policy lacks version: STSv1");
    }
    match mode.as_deref() {
        Some("enforce") => r.add("mta-sts", Level::Pass, "mode: enforce"),
        Some("testing") => r.add(
            "mta-sts",
            Level::Warn,
            "mode: testing (failures are only reported); switch to enforce when TLS-RPT is clean",
        ),
        Some("none") => r.add("mta-sts", Level::Warn, "mode: none (policy withdrawn)"),
        other => r.add("mta-sts", Level::Fail, format!("invalid mode {other:?}")),
    }
    match max_age {
        Some(a) if a > 31_557_600 => r.add(
            "mta-sts",
            Level::Fail,
            format!("max_age {a} exceeds one year (31557600)"),
        ),
        Some(a) if a < 86_400 => r.add(
            "mta-sts",
            Level::Warn,
            format!("max_age {a} is under a day; use at least 604800 (a week)"),
        ),
        Some(a) => r.add("mta-sts", Level::Pass, format!("max_age {a}")),
        None => r.add("mta-sts", Level::Fail, "policy lacks max_age"),
    }
    if patterns.is_empty() && mode.as_deref() != Some("none") {
        r.add("mta-sts", Level::Fail, "policy lists no mx patterns");
    }
    for host in mx {
        if patterns.iter().any(|p| mx_pattern_matches(p, host)) {
            r.add(
                "mta-sts",
                Level::Pass,
                format!("MX {host} matches the policy"),
            );
        } else {
            r.add(
                "mta-sts",
                Level::Fail,
                format!("MX {host} matches no mx: pattern in the policy; senders enforcing it will not deliver there"),
            );
        }
    }
}

pub(super) async fn check_tlsrpt(auth: &MessageAuthenticator, domain: &str, r: &mut Report) {
    let name = format!("_smtp._tls.{domain}");
    let Some(records) = r.txt(auth, "tls-rpt", &name).await else {
        return;
    };
    if records.is_empty() {
        return r.add(
            "tls-rpt",
            Level::Warn,
            format!("no TLS-RPT record at {name}: you will not hear about TLS failures"),
        );
    }
    let Some(record) = records
        .iter()
        .find(|v| v.to_ascii_uppercase().starts_with("V=TLSRPTV1"))
    else {
        return r.add(
            "tls-rpt",
            Level::Warn,
            format!("no v=TLSRPTv1 record at {name}"),
        );
    };
    match mail_auth::mta_sts::TlsRptRecord::parse(record.as_bytes()) {
        Ok(rec) if !rec.rua.is_empty() => {
            r.add("tls-rpt", Level::Pass, format!("record: {record}"))
        }
        Ok(_) => r.add("tls-rpt", Level::Fail, "record has no rua= destination"),
        Err(e) => r.add(
            "tls-rpt",
            Level::Fail,
            format!("syntax error in \"{record}\": {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mx_patterns() {
        assert!(mx_pattern_matches("mx1.example.com", "MX1.example.com"));
        assert!(mx_pattern_matches("*.example.com", "mx2.example.com"));
        assert!(!mx_pattern_matches("*.example.com", "a.b.example.com"));
        assert!(!mx_pattern_matches("*.example.com", "example.com"));
    }
}
