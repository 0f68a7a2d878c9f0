//! DMARC posture: the record, its policy stage and report destinations.

use mail_auth::dmarc::{DmarcRecord, Policy};
use mail_auth::dns::TxtRecordParser;
use mail_auth::MessageAuthenticator;

use super::{Level, Report};
use crate::dns::{Cache, Resolver};
use crate::report::destination::{authorization, mailbox_domain, Authorization};

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
    let resolver = Resolver::new(
        auth.clone(),
        std::sync::Arc::new(Cache::new(1 << 20, std::sync::Arc::default())),
    );
    for (tag, uris) in [("rua", &parsed.rua), ("ruf", &parsed.ruf)] {
        for uri in uris.iter() {
            // mail-auth keeps mailto: destinations as the bare address.
            let addr = uri.uri().strip_prefix("mailto:").unwrap_or(uri.uri());
            let Ok(dest) = mailbox_domain(addr) else {
                r.add(
                    "dmarc",
                    Level::Fail,
                    format!("{tag} {addr} is not a single mailbox; receivers will not send there"),
                );
                continue;
            };
            // The rule `reports send` follows (RFC 9990 §3).
            match authorization(&resolver, domain, dest).await {
                Ok(Authorization::SameOrganization) => {
                    r.add("dmarc", Level::Pass, format!("{tag} {addr}"))
                }
                Ok(Authorization::Authorized(name)) => r.add(
                    "dmarc",
                    Level::Pass,
                    format!("{tag} {addr}: external destination authorized by {name}"),
                ),
                Ok(Authorization::NotAuthorized(name)) => r.add(
                    "dmarc",
                    Level::Fail,
                    format!("{tag} {addr}: external destination not authorized (no v=DMARC1 record at {name}); receivers will not send there"),
                ),
                Err(e) => r.add(
                    "dmarc",
                    Level::Warn,
                    format!("{tag} {addr}: could not check the destination: {e}"),
                ),
            }
        }
    }
}
