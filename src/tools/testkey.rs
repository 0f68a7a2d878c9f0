//! `mailseal testkey`: each KeyTable key against its published DNS record.

use base64::Engine;
use mail_auth::MessageAuthenticator;

use crate::config::keys::{public_key_matches, rsa_public_key_bits, KeyKind};
use crate::config::Config;
use crate::tools::lookup::{record_tags, txt_records, TxtAnswer};

/// The verdict for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStatus {
    Ok,
    /// The record's p= is another key (or another key type).
    Mismatch(String),
    /// No TXT record (or no DKIM record) at the name.
    Missing,
    /// Published with t=y: verifiers treat failures as if unsigned.
    Testing,
    /// The published key is revoked (empty p=) or too short.
    Weak(String),
    /// The lookup failed (timeout, SERVFAIL): not known either way.
    DnsError(String),
    /// A `%` KeyTable row: the domain is only known per message.
    Skipped(String),
}

impl KeyStatus {
    pub fn is_problem(&self) -> bool {
        !matches!(self, KeyStatus::Ok | KeyStatus::Skipped(_))
    }

    pub fn word(&self) -> &'static str {
        match self {
            KeyStatus::Ok => "ok",
            KeyStatus::Mismatch(_) => "mismatch",
            KeyStatus::Missing => "missing",
            KeyStatus::Testing => "testing",
            KeyStatus::Weak(_) => "weak",
            KeyStatus::DnsError(_) => "dns-error",
            KeyStatus::Skipped(_) => "skipped",
        }
    }
}

/// Judge one published record against a key.
pub fn judge(record: &str, key: &crate::config::keys::LoadedKey) -> KeyStatus {
    let t = record_tags(record);
    let get = |name: &str| t.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if get("v").is_some_and(|v| v != "DKIM1") {
        return KeyStatus::Mismatch(format!("v={} is not DKIM1", get("v").unwrap_or("")));
    }
    let k = get("k").unwrap_or("rsa").to_ascii_lowercase();
    let ours = match key.kind {
        KeyKind::Rsa { .. } => "rsa",
        KeyKind::Ed25519 => "ed25519",
    };
    let Some(p) = get("p") else {
        return KeyStatus::Mismatch("record has no p= tag".into());
    };
    if p.is_empty() {
        return KeyStatus::Weak("key revoked (empty p=)".into());
    }
    let Ok(published) = base64::engine::general_purpose::STANDARD.decode(p) else {
        return KeyStatus::Mismatch("p= is not valid base64".into());
    };
    if k == "rsa" {
        if let Some(bits) = rsa_public_key_bits(&published) {
            if bits < 2048 {
                return KeyStatus::Weak(format!(
                    "published RSA key has {bits} bits (RFC 8301 asks signers for 2048): \
                     rotate it to a new 2048-bit key"
                ));
            }
        }
    }
    if k != ours {
        return KeyStatus::Mismatch(format!("record is k={k}, the private key is {ours}"));
    }
    if !public_key_matches(key, &published) {
        return KeyStatus::Mismatch("p= is a different key than the private key file".into());
    }
    if get("t").is_some_and(|f| f.split(':').any(|x| x == "y")) {
        return KeyStatus::Testing;
    }
    KeyStatus::Ok
}

async fn lookup(auth: &MessageAuthenticator, name: &str) -> Result<Vec<String>, KeyStatus> {
    match txt_records(auth, name).await {
        TxtAnswer::Records(r) => Ok(r),
        TxtAnswer::NoRecords => Err(KeyStatus::Missing),
        TxtAnswer::Error(e) => Err(KeyStatus::DnsError(e)),
    }
}

/// One key against the record at `selector._domainkey.domain`.
pub async fn check_key(
    auth: &MessageAuthenticator,
    domain: &str,
    selector: &str,
    key: &crate::config::keys::LoadedKey,
) -> KeyStatus {
    let name = format!("{selector}._domainkey.{domain}.");
    match lookup(auth, &name).await {
        Err(s) => s,
        Ok(records) => {
            let dkim: Vec<&String> = records
                .iter()
                .filter(|r| r.contains("p=") || r.to_ascii_lowercase().contains("v=dkim1"))
                .collect();
            match dkim.as_slice() {
                [] => KeyStatus::Missing,
                [one] => judge(one, key),
                _ => KeyStatus::Mismatch(format!("{} DKIM records at one name", dkim.len())),
            }
        }
    }
}

/// Check every KeyTable key. Returns one line per key and whether all are fine.
pub async fn testkey(config: &Config, auth: &MessageAuthenticator) -> (String, bool) {
    let mut out = String::new();
    let mut all_ok = true;
    for entry in &config.tables.keys {
        let status = match &entry.domain {
            None => KeyStatus::Skipped(
                "domain is %: the sender's domain, known only per message".into(),
            ),
            Some(domain) => check_key(auth, domain, &entry.selector, &entry.key).await,
        };
        all_ok &= !status.is_problem();
        let detail = match &status {
            KeyStatus::Mismatch(d)
            | KeyStatus::Weak(d)
            | KeyStatus::DnsError(d)
            | KeyStatus::Skipped(d) => {
                format!(": {d}")
            }
            KeyStatus::Testing => {
                ": t=y, failures are treated as unsigned; remove t=y when done testing".into()
            }
            KeyStatus::Missing => ": no DKIM record published".into(),
            KeyStatus::Ok => String::new(),
        };
        out.push_str(&format!(
            "{:<9} {} {}._domainkey.{} ({}){detail}\n",
            status.word(),
            entry.name,
            entry.selector,
            entry.domain.as_deref().unwrap_or("%"),
            entry.key.kind,
        ));
    }
    if config.tables.keys.is_empty() {
        out.push_str("no keys in the KeyTable\n");
    }
    (out, all_ok)
}
