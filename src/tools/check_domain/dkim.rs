//! DKIM keys published for the selectors asked about.

use base64::Engine;
use mail_auth::MessageAuthenticator;

use super::{Level, Report};
use crate::config::keys::rsa_public_key_bits;
use crate::tools::lookup::record_tags as tags;

pub(super) async fn check_dkim(
    auth: &MessageAuthenticator,
    domain: &str,
    selector: &str,
    r: &mut Report,
) {
    let name = format!("{selector}._domainkey.{domain}");
    let Some(records) = r.txt(auth, "dkim", &name).await else {
        return;
    };
    if records.is_empty() {
        return r.add("dkim", Level::Fail, format!("no DKIM key at {name}"));
    }
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
