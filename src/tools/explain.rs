//! `mailseal explain`: which SigningTable row and key would sign mail from an address, or why
//! nothing would.

use std::net::IpAddr;

use crate::config::Config;
use crate::message::domain_of;
use crate::pipeline::sign::matching_rows;
use crate::pipeline::{decide, ClientFacts, Decision};

pub fn explain(
    config: &Config,
    address: &str,
    client_ip: Option<IpAddr>,
    auth: Option<&str>,
) -> String {
    let mut out = String::new();
    let facts = ClientFacts {
        ip: client_ip.map(|ip| ip.to_canonical()),
        auth_user: auth,
        daemon_name: None,
    };
    if client_ip.is_some() || auth.is_some() {
        match decide(config, &facts) {
            Decision::Sign(why) => out.push_str(&format!("outbound: {why}\n")),
            Decision::Verify => {
                out.push_str("inbound: the client is not internal and not authenticated, so the message would be verified, not signed\n");
                return out;
            }
            Decision::Skip(why) => {
                out.push_str(&format!("not processed: {why}\n"));
                return out;
            }
        }
    } else if !config.mode.signs() {
        out.push_str("signing is off (mode)\n");
        return out;
    }
    let Some(domain) = domain_of(address) else {
        out.push_str(&format!(
            "{address:?} has no domain: nothing would be signed\n"
        ));
        return out;
    };
    let rows = matching_rows(config, address);
    if rows.is_empty() {
        out.push_str(&format!(
            "no SigningTable row matches {address}: the message would be accepted unsigned\n"
        ));
        return out;
    }
    for row in rows {
        let key = &config.tables.keys[row.key];
        out.push_str(&format!(
            "{}: pattern {:?} → key {} ({}): d={} s={}{} file {}\n",
            row.origin,
            row.pattern,
            key.name,
            key.key.kind,
            key.domain.as_deref().unwrap_or(&domain),
            key.selector,
            row.signer
                .as_deref()
                .map(|i| format!(" signer {i}"))
                .unwrap_or_default(),
            key.path.display()
        ));
    }
    if !config.signing.multiple_signatures {
        out.push_str(
            "(first match only; set multiple_signatures = true to sign with every match)\n",
        );
    }
    out
}
