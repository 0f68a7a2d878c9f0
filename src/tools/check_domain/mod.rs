//! `mailseal check-domain`: the posture checks the online validators do — MX, SPF, DMARC,
//! DKIM selectors, MTA-STS (record and HTTPS policy) and TLS-RPT — each finding pass, warn or
//! fail with one line of why.

use mail_auth::hickory_resolver::proto::rr::RData;
use mail_auth::MessageAuthenticator;
use serde::Serialize;

mod dkim;
mod dmarc;
mod mta_sts;
mod spf;

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

pub(super) struct Report(Vec<Finding>);

impl Report {
    /// The TXT records at `name` (none is an empty list); a failed lookup is reported as a
    /// failure of `area` and gives `None`.
    async fn txt(
        &mut self,
        auth: &MessageAuthenticator,
        area: &'static str,
        name: &str,
    ) -> Option<Vec<String>> {
        use crate::tools::lookup::{txt_records, TxtAnswer};
        match txt_records(auth, name).await {
            TxtAnswer::Records(v) => Some(v),
            TxtAnswer::NoRecords => Some(Vec::new()),
            TxtAnswer::Error(e) => {
                self.add(
                    area,
                    Level::Fail,
                    format!("DNS error looking up TXT {name}: {e}"),
                );
                None
            }
        }
    }

    fn add(&mut self, area: &'static str, level: Level, message: impl Into<String>) {
        self.0.push(Finding {
            area,
            level,
            message: message.into(),
        });
    }
}

pub(super) async fn mx_hosts(
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
pub(super) async fn exists(auth: &MessageAuthenticator, name: &str, mx: bool) -> bool {
    if mx {
        return matches!(mx_hosts(auth, name).await, Ok(v) if !v.is_empty());
    }
    auth.resolver()
        .lookup_ip(format!("{name}."))
        .await
        .is_ok_and(|l| l.iter().next().is_some())
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
    spf::check_spf(auth, &domain, &mut r).await;
    dmarc::check_dmarc(auth, &domain, &mut r).await;
    for s in &opts.selectors {
        dkim::check_dkim(auth, &domain, s, &mut r).await;
    }
    if opts.selectors.is_empty() {
        r.add(
            "dkim",
            Level::Warn,
            "no --selector given: DKIM keys not checked",
        );
    }
    mta_sts::check_mta_sts(auth, &domain, &mx, opts, &mut r).await;
    mta_sts::check_tlsrpt(auth, &domain, &mut r).await;
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
    fn render_plain_and_coloured() {
        let f = vec![Finding {
            area: "spf",
            level: Level::Fail,
            message: "+all".into(),
        }];
        assert_eq!(render(&f, false), "FAIL spf      +all\n");
        assert_eq!(render(&f, true), "\x1b[31mFAIL\x1b[0m spf      +all\n");
    }
}
