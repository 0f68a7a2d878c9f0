//! `mailseal check-domain`: the posture checks the online validators do — MX, SPF, DMARC,
//! DKIM selectors, MTA-STS (record and HTTPS policy) and TLS-RPT — each finding pass, warn or
//! fail with one line of why.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use mail_auth::dmarc::{DmarcRecord, Policy};
use mail_auth::dns::TxtRecordParser;
use mail_auth::hickory_resolver::proto::rr::RData;
use mail_auth::MessageAuthenticator;
use serde::Serialize;

use crate::config::keys::rsa_public_key_bits;
use crate::tools::lookup::{record_tags as tags, txt_records as txt, TxtAnswer as Txt};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub area: &'static str,
    pub level: Level,
    pub message: String,
}

/// Options for the checks.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub selectors: Vec<String>,
    /// Port for the MTA-STS policy fetch (443 unless testing).
    pub https_port: Option<u16>,
    /// Extra CA certificates (PEM) trusted for the policy fetch, besides the system store.
    pub ca_file: Option<std::path::PathBuf>,
}

struct Report(Vec<Finding>);

impl Report {
    fn add(&mut self, area: &'static str, level: Level, message: impl Into<String>) {
        self.0.push(Finding {
            area,
            level,
            message: message.into(),
        });
    }
}

async fn mx_hosts(
    auth: &MessageAuthenticator,
    domain: &str,
) -> Result<Vec<(u16, String)>, Option<String>> {
    match auth.resolver().mx_lookup(format!("{domain}.")).await {
        Ok(l) => Ok(l
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some((
                    mx.preference,
                    mx.exchange
                        .to_string()
                        .trim_end_matches('.')
                        .to_ascii_lowercase(),
                )),
                _ => None,
            })
            .collect()),
        Err(e) if e.is_nx_domain() || e.is_no_records_found() => Err(None),
        Err(e) => Err(Some(e.to_string())),
    }
}

/// Does `name` have any A/AAAA/MX record (for void lookup counting)?
async fn exists(auth: &MessageAuthenticator, name: &str, mx: bool) -> bool {
    if mx {
        return matches!(mx_hosts(auth, name).await, Ok(v) if !v.is_empty());
    }
    auth.resolver()
        .lookup_ip(format!("{name}."))
        .await
        .is_ok_and(|l| l.iter().next().is_some())
}

fn spf_records(records: &[String]) -> Vec<&String> {
    records
        .iter()
        .filter(|r| {
            let l = r.trim_start().to_ascii_lowercase();
            l == "v=spf1" || l.starts_with("v=spf1 ")
        })
        .collect()
}

/// Count DNS-querying terms (RFC 7208 §4.6.4) through includes and redirects.
struct SpfWalk {
    lookups: usize,
    voids: usize,
    visited: HashSet<String>,
    problems: Vec<String>,
}

fn walk_spf<'a>(
    auth: &'a MessageAuthenticator,
    domain: &'a str,
    record: &'a str,
    w: &'a mut SpfWalk,
    depth: usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
    Box::pin(async move {
        if depth > 10 || w.lookups > 20 {
            return;
        }
        for term in record.split_whitespace().skip(1) {
            let t = term
                .trim_start_matches(['+', '-', '~', '?'])
                .to_ascii_lowercase();
            let (name, arg) = match t.split_once([':', '=']) {
                Some((n, a)) => (
                    n.to_string(),
                    Some(a.split('/').next().unwrap_or("").to_string()),
                ),
                None => (t.split('/').next().unwrap_or("").to_string(), None),
            };
            let target = arg
                .clone()
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| domain.to_string());
            match name.as_str() {
                "include" | "redirect" => {
                    w.lookups += 1;
                    if target.contains('%') {
                        continue; // macro: cannot be followed without a message
                    }
                    if !w.visited.insert(target.clone()) {
                        w.problems
                            .push(format!("{name}:{target} is visited twice (loop)"));
                        continue;
                    }
                    match txt(auth, &target).await {
                        Txt::Records(r) => match spf_records(&r).as_slice() {
                            [one] => {
                                let one = (*one).clone();
                                walk_spf(auth, &target, &one, w, depth + 1).await;
                            }
                            [] => {
                                w.voids += 1;
                                w.problems
                                    .push(format!("{name}:{target} has no SPF record (permerror)"));
                            }
                            _ => w.problems.push(format!(
                                "{name}:{target} has several SPF records (permerror)"
                            )),
                        },
                        Txt::NoRecords => {
                            w.voids += 1;
                            w.problems
                                .push(format!("{name}:{target} does not exist (permerror)"));
                        }
                        Txt::Error(e) => w.problems.push(format!("{name}:{target}: DNS error {e}")),
                    }
                }
                "a" | "mx" => {
                    w.lookups += 1;
                    if !target.contains('%') && !exists(auth, &target, name == "mx").await {
                        w.voids += 1;
                    }
                }
                "ptr" => {
                    w.lookups += 1;
                    w.problems
                        .push("uses ptr, which RFC 7208 says not to use".into());
                }
                "exists" => w.lookups += 1,
                _ => {}
            }
        }
    })
}

async fn check_spf(auth: &MessageAuthenticator, domain: &str, r: &mut Report) {
    let records = match txt(auth, domain).await {
        Txt::Records(r) => r,
        Txt::NoRecords => Vec::new(),
        Txt::Error(e) => {
            return r.add(
                "spf",
                Level::Fail,
                format!("DNS error looking up TXT {domain}: {e}"),
            )
        }
    };
    let spf = spf_records(&records);
    let record = match spf.as_slice() {
        [] => return r.add("spf", Level::Fail, format!("no SPF record at {domain}")),
        [one] => (*one).clone(),
        many => {
            return r.add(
                "spf",
                Level::Fail,
                format!(
                    "{} SPF records at {domain}; exactly one is allowed (permerror)",
                    many.len()
                ),
            )
        }
    };
    if let Err(e) = mail_auth::spf::SpfRecord::parse(record.as_bytes()) {
        return r.add(
            "spf",
            Level::Fail,
            format!("syntax error in \"{record}\": {e}"),
        );
    }
    r.add("spf", Level::Pass, format!("record: {record}"));
    let mut w = SpfWalk {
        lookups: 0,
        voids: 0,
        visited: HashSet::from([domain.to_string()]),
        problems: Vec::new(),
    };
    walk_spf(auth, domain, &record, &mut w, 0).await;
    let level = if w.lookups > 10 {
        Level::Fail
    } else if w.lookups >= 8 {
        Level::Warn
    } else {
        Level::Pass
    };
    r.add(
        "spf",
        level,
        format!("{} DNS-querying terms (limit 10)", w.lookups),
    );
    let level = if w.voids > 2 {
        Level::Fail
    } else if w.voids > 0 {
        Level::Warn
    } else {
        Level::Pass
    };
    r.add("spf", level, format!("{} void lookups (limit 2)", w.voids));
    for p in w.problems {
        r.add("spf", Level::Fail, p);
    }
    let lower = record.to_ascii_lowercase();
    let all = lower
        .split_whitespace()
        .find(|t| t.trim_start_matches(['+', '-', '~', '?']) == "all");
    match all {
        Some("+all") | Some("all") => r.add(
            "spf",
            Level::Fail,
            "+all lets every host on the internet send as this domain",
        ),
        Some("?all") => r.add(
            "spf",
            Level::Warn,
            "?all (neutral) gives receivers nothing to act on; use ~all or -all",
        ),
        Some("~all") => r.add("spf", Level::Pass, "~all: softfail for other hosts"),
        Some(_) => r.add("spf", Level::Pass, "-all: other hosts fail"),
        None if lower.contains("redirect=") => {}
        None => r.add(
            "spf",
            Level::Warn,
            "no all mechanism: other hosts get neutral; end with -all or ~all",
        ),
    }
}

fn is_external(domain: &str, dest: &str) -> bool {
    let d = domain.to_ascii_lowercase();
    let dest = dest.to_ascii_lowercase();
    !(dest == d || dest.ends_with(&format!(".{d}")) || d.ends_with(&format!(".{dest}")))
}

async fn check_dmarc(auth: &MessageAuthenticator, domain: &str, r: &mut Report) {
    let name = format!("_dmarc.{domain}");
    let records = match txt(auth, &name).await {
        Txt::Records(v) => v,
        Txt::NoRecords => Vec::new(),
        Txt::Error(e) => {
            return r.add(
                "dmarc",
                Level::Fail,
                format!("DNS error looking up {name}: {e}"),
            )
        }
    };
    let dmarc: Vec<&String> = records
        .iter()
        .filter(|v| v.trim_start().to_ascii_uppercase().starts_with("V=DMARC1"))
        .collect();
    let record = match dmarc.as_slice() {
        [] => {
            return r.add(
                "dmarc",
                Level::Fail,
                format!("no DMARC record at {name}; start with \"v=DMARC1; p=none; rua=mailto:dmarc@{domain}\""),
            )
        }
        [one] => (*one).clone(),
        _ => return r.add("dmarc", Level::Fail, format!("several DMARC records at {name}; receivers ignore them all")),
    };
    let parsed = match DmarcRecord::parse(record.as_bytes()) {
        Ok(p) => p,
        Err(e) => {
            return r.add(
                "dmarc",
                Level::Fail,
                format!("syntax error in \"{record}\": {e}"),
            )
        }
    };
    r.add("dmarc", Level::Pass, format!("record: {record}"));
    let p = |pol: Policy| match pol {
        Policy::Reject => "reject",
        Policy::Quarantine => "quarantine",
        Policy::None => "none",
        Policy::Unspecified => "unspecified",
    };
    match parsed.p {
        Policy::Reject => r.add("dmarc", Level::Pass, "p=reject: failing mail is refused"),
        Policy::Quarantine => r.add(
            "dmarc",
            Level::Warn,
            "p=quarantine: once reports show all your mail passing, move to p=reject",
        ),
        Policy::None => r.add(
            "dmarc",
            Level::Warn,
            "p=none: monitoring only; when the aggregate reports show your own mail aligned, go to p=quarantine, then p=reject",
        ),
        Policy::Unspecified => r.add("dmarc", Level::Warn, "no p= tag: treated as p=none"),
    }
    if record.contains("sp=") {
        r.add(
            "dmarc",
            Level::Pass,
            format!("sp={} for subdomains", p(parsed.sp)),
        );
    }
    if record.contains("np=") {
        r.add(
            "dmarc",
            Level::Pass,
            format!("np={} for non-existent subdomains", p(parsed.np)),
        );
    }
    if parsed.t {
        r.add(
            "dmarc",
            Level::Warn,
            "t=y: testing mode, receivers apply one step less than p=",
        );
    }
    if parsed.rua.is_empty() {
        r.add(
            "dmarc",
            Level::Warn,
            "no rua=: you get no aggregate reports, so you cannot see who sends as you",
        );
    }
    for (tag, uris) in [("rua", &parsed.rua), ("ruf", &parsed.ruf)] {
        for uri in uris.iter() {
            // mail-auth keeps mailto: destinations as the bare address.
            let addr = uri.uri().strip_prefix("mailto:").unwrap_or(uri.uri());
            let Some((_, dest)) = addr.rsplit_once('@') else {
                r.add(
                    "dmarc",
                    Level::Fail,
                    format!("{tag} {addr} is not an address"),
                );
                continue;
            };
            if !is_external(domain, dest) {
                r.add("dmarc", Level::Pass, format!("{tag} {addr}"));
                continue;
            }
            let auth_name = format!("{domain}._report._dmarc.{dest}");
            match txt(auth, &auth_name).await {
                Txt::Records(v) if v.iter().any(|x| x.trim_start().to_ascii_uppercase().starts_with("V=DMARC1")) => {
                    r.add("dmarc", Level::Pass, format!("{tag} {addr}: external destination authorized by {auth_name}"))
                }
                _ => r.add(
                    "dmarc",
                    Level::Fail,
                    format!("{tag} {addr}: external destination not authorized (no v=DMARC1 record at {auth_name}); receivers will not send there"),
                ),
            }
        }
    }
}

async fn check_dkim(auth: &MessageAuthenticator, domain: &str, selector: &str, r: &mut Report) {
    let name = format!("{selector}._domainkey.{domain}");
    let records = match txt(auth, &name).await {
        Txt::Records(v) => v,
        Txt::NoRecords => return r.add("dkim", Level::Fail, format!("no DKIM key at {name}")),
        Txt::Error(e) => {
            return r.add(
                "dkim",
                Level::Fail,
                format!("DNS error looking up {name}: {e}"),
            )
        }
    };
    let Some(record) = records.iter().find(|v| v.contains("p=")) else {
        return r.add(
            "dkim",
            Level::Fail,
            format!("{name} has no DKIM key record"),
        );
    };
    let t = tags(record);
    let get = |k: &str| t.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let k = get("k").unwrap_or("rsa").to_ascii_lowercase();
    let p = get("p").unwrap_or("");
    if p.is_empty() {
        return r.add(
            "dkim",
            Level::Fail,
            format!("{name}: key revoked (empty p=)"),
        );
    }
    let Ok(der) = base64::engine::general_purpose::STANDARD.decode(p) else {
        return r.add(
            "dkim",
            Level::Fail,
            format!("{name}: p= is not valid base64"),
        );
    };
    match k.as_str() {
        "rsa" => match rsa_public_key_bits(&der) {
            Some(b) if b < 1024 => r.add(
                "dkim",
                Level::Fail,
                format!("{name}: RSA {b} bits; verifiers reject keys under 1024 (RFC 8301)"),
            ),
            Some(b) if b < 2048 => r.add(
                "dkim",
                Level::Warn,
                format!("{name}: RSA {b} bits; use 2048"),
            ),
            Some(b) => r.add("dkim", Level::Pass, format!("{name}: RSA {b} bits")),
            None => r.add(
                "dkim",
                Level::Fail,
                format!("{name}: p= is not an RSA public key"),
            ),
        },
        "ed25519" if der.len() == 32 => r.add("dkim", Level::Pass, format!("{name}: Ed25519")),
        "ed25519" => r.add(
            "dkim",
            Level::Fail,
            format!(
                "{name}: an Ed25519 key has 32 bytes, this one {}",
                der.len()
            ),
        ),
        other => r.add(
            "dkim",
            Level::Fail,
            format!("{name}: unknown key type k={other}"),
        ),
    }
    if get("t").is_some_and(|f| f.split(':').any(|x| x == "y")) {
        r.add(
            "dkim",
            Level::Warn,
            format!("{name}: t=y (testing): failures are treated as unsigned"),
        );
    }
}

/// MTA-STS `mx:` pattern match: `*.example.com` matches exactly one extra label.
fn mx_pattern_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(first, tail)| !first.is_empty() && tail == rest),
        None => pattern == host,
    }
}

async fn fetch_policy(
    auth: &MessageAuthenticator,
    domain: &str,
    opts: &Options,
) -> Result<String, String> {
    let host = format!("mta-sts.{domain}");
    let port = opts.https_port.unwrap_or(443);
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(ca) = &opts.ca_file {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(ca)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
        for c in certs {
            roots
                .add(c.map_err(|e| format!("{}: {e}", ca.display()))?)
                .map_err(|e| e.to_string())?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
    let work = async {
        // The policy host is resolved through the same resolver as every other check.
        let ips = auth
            .resolver()
            .lookup_ip(format!("{host}."))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?;
        let ip = ips
            .iter()
            .next()
            .ok_or_else(|| format!("{host} has no address"))?;
        let tcp = tokio::net::TcpStream::connect((ip, port))
            .await
            .map_err(|e| format!("connect {host} ({ip}):{port}: {e}"))?;
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}: {e}"))?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tls.write_all(format!("GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut body = Vec::new();
        // RFC 8461 §3.3: policies are at most 64 KiB.
        let _ = (&mut tls).take(70 * 1024).read_to_end(&mut body).await;
        Ok::<_, String>(body)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| "timed out".to_string())??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("malformed HTTP response")?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("HTTP status {status:?}"));
    }
    Ok(body.to_string())
}

async fn check_mta_sts(
    auth: &MessageAuthenticator,
    domain: &str,
    mx: &[String],
    opts: &Options,
    r: &mut Report,
) {
    let name = format!("_mta-sts.{domain}");
    let records = match txt(auth, &name).await {
        Txt::Records(v) => v,
        Txt::NoRecords => {
            return r.add(
                "mta-sts",
                Level::Warn,
                format!("no MTA-STS record at {name}: senders may deliver without TLS"),
            )
        }
        Txt::Error(e) => {
            return r.add(
                "mta-sts",
                Level::Fail,
                format!("DNS error looking up {name}: {e}"),
            )
        }
    };
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

async fn check_tlsrpt(auth: &MessageAuthenticator, domain: &str, r: &mut Report) {
    let name = format!("_smtp._tls.{domain}");
    let records = match txt(auth, &name).await {
        Txt::Records(v) => v,
        Txt::NoRecords => {
            return r.add(
                "tls-rpt",
                Level::Warn,
                format!("no TLS-RPT record at {name}: you will not hear about TLS failures"),
            )
        }
        Txt::Error(e) => {
            return r.add(
                "tls-rpt",
                Level::Fail,
                format!("DNS error looking up {name}: {e}"),
            )
        }
    };
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

/// Run every check for `domain`.
pub async fn check_domain(
    auth: &MessageAuthenticator,
    domain: &str,
    opts: &Options,
) -> Vec<Finding> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let mut r = Report(Vec::new());
    let mx: Vec<String> = match mx_hosts(auth, &domain).await {
        Ok(mut v) if !v.is_empty() => {
            v.sort();
            if v.len() == 1 && v[0].1.is_empty() {
                r.add(
                    "mx",
                    Level::Warn,
                    "null MX (RFC 7505): this domain accepts no mail",
                );
                Vec::new()
            } else {
                let list: Vec<String> = v.iter().map(|(p, h)| format!("{p} {h}")).collect();
                r.add("mx", Level::Pass, format!("MX: {}", list.join(", ")));
                v.into_iter().map(|(_, h)| h).collect()
            }
        }
        Ok(_) | Err(None) => {
            r.add(
                "mx",
                Level::Warn,
                "no MX record: mail goes to the domain's address record, if any",
            );
            Vec::new()
        }
        Err(Some(e)) => {
            r.add("mx", Level::Fail, format!("DNS error looking up MX: {e}"));
            Vec::new()
        }
    };
    check_spf(auth, &domain, &mut r).await;
    check_dmarc(auth, &domain, &mut r).await;
    for s in &opts.selectors {
        check_dkim(auth, &domain, s, &mut r).await;
    }
    if opts.selectors.is_empty() {
        r.add(
            "dkim",
            Level::Warn,
            "no --selector given: DKIM keys not checked",
        );
    }
    check_mta_sts(auth, &domain, &mx, opts, &mut r).await;
    check_tlsrpt(auth, &domain, &mut r).await;
    r.0
}

/// Human-readable lines; `colour` adds ANSI colours (for a terminal).
pub fn render(findings: &[Finding], colour: bool) -> String {
    let mut out = String::new();
    for f in findings {
        let (word, code) = match f.level {
            Level::Pass => ("PASS", "32"),
            Level::Warn => ("WARN", "33"),
            Level::Fail => ("FAIL", "31"),
        };
        if colour {
            out.push_str(&format!(
                "\x1b[{code}m{word}\x1b[0m {:<8} {}\n",
                f.area, f.message
            ));
        } else {
            out.push_str(&format!("{word} {:<8} {}\n", f.area, f.message));
        }
    }
    out
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

    #[test]
    fn render_plain_and_coloured() {
        let f = vec![Finding {
            area: "spf",
            level: Level::Fail,
            message: "+all".into(),
        }];
        assert_eq!(render(&f, false), "FAIL spf      +all\n");
        assert_eq!(render(&f, true), "\x1b[31mFAIL\x1b[0m spf      +all\n");
    }

    #[test]
    fn external_destinations() {
        assert!(!is_external("example.com", "example.com"));
        assert!(!is_external("example.com", "reports.example.com"));
        assert!(is_external("example.com", "dmarc.example.net"));
    }
}
