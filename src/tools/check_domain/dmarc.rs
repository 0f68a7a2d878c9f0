//! DMARC posture: the record, its policy stage and report destinations.

use mail_auth::dmarc::{DmarcRecord, Policy};
use mail_auth::dns::TxtRecordParser;
use mail_auth::MessageAuthenticator;

use super::{Level, Report};
use crate::tools::lookup::{txt_records as txt, TxtAnswer as Txt};

pub(super) fn is_external(domain: &str, dest: &str) -> bool {
    let d = domain.to_ascii_lowercase();
    let dest = dest.to_ascii_lowercase();
    !(dest == d || dest.ends_with(&format!(".{d}")) || d.ends_with(&format!(".{dest}")))
}

pub(super) async fn check_dmarc(auth: &MessageAuthenticator, domain: &str, r: &mut Report) {
    let name = format!("_dmarc.{domain}");
    let Some(records) = r.txt(auth, "dmarc", &name).await else {
        return;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_destinations() {
        assert!(!is_external("example.com", "example.com"));
        assert!(!is_external("example.com", "reports.example.com"));
        assert!(is_external("example.com", "dmarc.example.net"));
    }
}
