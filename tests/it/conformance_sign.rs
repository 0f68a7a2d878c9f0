//! ../shared/conformance DKIM signing vectors: with each vector's key, canonicalization and
//! message, our bh= must equal the vector's body hash and our signature must verify with
//! python3-dkim against the vector's DNS record; and our key signing the vector's own
//! signature template must reproduce its b= byte for byte (RSA PKCS#1 v1.5 and Ed25519 are
//! deterministic), 1024-bit RSA keys included.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::common::*;
use base64::Engine;
use mailseal::config::Config;
use serde_json::Value;

fn conformance_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance");
    dir.is_dir().then_some(dir)
}

/// PEM for the vector's key: RSA PEM as given, Ed25519 from its 32-byte seed (PKCS#8 v1).
fn key_pem(key: &Value) -> String {
    match key["type"].as_str().unwrap() {
        "rsa" => key["pem"].as_str().unwrap().to_string(),
        "ed25519" => {
            let seed = base64::engine::general_purpose::STANDARD
                .decode(key["seed_b64"].as_str().unwrap())
                .unwrap();
            let mut der = hex_bytes("302e020100300506032b657004220420");
            der.extend_from_slice(&seed);
            format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                b64(&der)
            )
        }
        t => panic!("key type {t}"),
    }
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The b= that `key` gives the vector's signature template over `message`: the header fields
/// its h= names (each name taking the next occurrence from the bottom, RFC 6376 §5.4.2), then
/// the template itself without its trailing CRLF, canonicalized as its c= says (§3.4).
fn template_b(message: &str, template: &str, key: &mailseal::config::keys::LoadedKey) -> String {
    use mail_auth::crypto::SigningKey;
    let relaxed = template_tag(template, "c").is_some_and(|c| c.starts_with("relaxed"));
    let canon = |field: &str| -> String {
        if !relaxed {
            return field.to_string();
        }
        let (name, value) = field.split_once(':').unwrap();
        let value = value.replace("\r\n", "");
        let value = value
            .split([' ', '\t'])
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        format!("{}:{value}\r\n", name.trim().to_ascii_lowercase())
    };
    let head = message.split("\r\n\r\n").next().unwrap();
    let mut fields: Vec<String> = Vec::new();
    for line in head.split("\r\n") {
        match fields.last_mut() {
            Some(f) if line.starts_with([' ', '\t']) => {
                f.push_str("\r\n");
                f.push_str(line);
            }
            _ => fields.push(line.to_string()),
        }
    }
    let mut used = vec![false; fields.len()];
    let mut data = String::new();
    for name in template_tag(template, "h").unwrap().split(':') {
        let name = name.trim();
        let found = (0..fields.len()).rev().find(|&i| {
            !used[i]
                && fields[i]
                    .split_once(':')
                    .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        });
        if let Some(i) = found {
            used[i] = true;
            data.push_str(&canon(&format!("{}\r\n", fields[i])));
        }
    }
    let own = canon(template);
    data.push_str(own.strip_suffix("\r\n").unwrap_or(&own));
    b64(&key.signing.sign(data.as_bytes()).unwrap())
}

fn template_tag(template: &str, name: &str) -> Option<String> {
    tag(template.trim_start_matches("DKIM-Signature:"), name)
}

#[tokio::test]
async fn dkim_sign_vectors() {
    let Some(dir) = conformance_dir() else {
        eprintln!("SKIPPED: ../shared/conformance not found");
        return;
    };
    let mut cases = Vec::new();
    for line in std::fs::read_to_string(dir.join("dkim-sign.jsonl"))
        .unwrap()
        .lines()
    {
        cases.push(serde_json::from_str::<Value>(line).unwrap());
    }
    for line in std::fs::read_to_string(dir.join("dkim-sign-opendkim.jsonl"))
        .unwrap()
        .lines()
    {
        let v: Value = serde_json::from_str(line).unwrap();
        if template_tag(v["signature_template"].as_str().unwrap(), "a").as_deref()
            == Some("rsa-sha256")
        {
            cases.push(v);
        }
    }
    let (mut passed, mut failed, mut skipped, mut weak) = (0, 0, Vec::new(), 0);
    for case in &cases {
        let id = case["id"].as_str().unwrap();
        let template = case["signature_template"].as_str().unwrap();
        if template_tag(template, "l").is_some() {
            skipped.push(format!(
                "{id}: l= (body length) signing is deliberately unsupported"
            ));
            continue;
        }
        let d = template_tag(template, "d").unwrap();
        let s = template_tag(template, "s").unwrap();
        let c = template_tag(template, "c").unwrap_or_else(|| "simple/simple".into());
        let scratch = Scratch::new("conf-sign");
        let pem = key_pem(&case["private_key"]);
        let loaded = mailseal::config::keys::parse_private_key(pem.as_bytes())
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        if loaded.kind.is_weak() {
            weak += 1;
        }
        let expected_b: String = case["expected"]["b"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .collect();
        let b = template_b(case["message"].as_str().unwrap(), template, &loaded);
        if b != expected_b {
            failed += 1;
            eprintln!("FAIL {id}: b= {b} (expected {expected_b})");
            continue;
        }
        let records: BTreeMap<String, String> = case["txt_records"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let key = scratch.write("key.pem", &pem);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let signing = signing_section(&scratch.0, &[("k", &d, &s, &key)], &[("*", "k")]);
        let cfg = scratch.write(
            "m.toml",
            &format!("[signing]\n{signing}canonicalization = \"{c}\"\n"),
        );
        let config = Config::load(&cfg).unwrap_or_else(|e| panic!("{id}: {e}"));
        let message = case["message"].as_str().unwrap();
        let signed = match mailseal::tools::sign_message(config, message.as_bytes()).await {
            Ok(m) => m,
            Err(e) => {
                failed += 1;
                eprintln!("FAIL {id}: {e}");
                continue;
            }
        };
        let text = String::from_utf8_lossy(&signed).into_owned();
        let sig_value = text
            .split("\r\n\r\n")
            .next()
            .unwrap()
            .split("DKIM-Signature:")
            .nth(1)
            .unwrap_or("");
        let bh = tag(&sig_value.replace("\r\n", ""), "bh").unwrap_or_default();
        let verified = dkim_check(&signed, &records);
        let expected_bh = case["expected"]["bh"].as_str().unwrap();
        if bh == expected_bh && verified == vec![true] {
            passed += 1;
        } else {
            failed += 1;
            eprintln!("FAIL {id}: bh {bh} (expected {expected_bh}), python3-dkim {verified:?}");
        }
    }
    for s in &skipped {
        eprintln!("not applicable: {s}");
    }
    println!(
        "dkim-sign conformance: {passed} passed, {failed} failed, {} skipped",
        skipped.len()
    );
    println!("({weak} of them with a 1024-bit RSA key; b= reproduced exactly for every row)");
    assert_eq!(failed, 0);
    assert!(passed >= 3);
    assert!(weak >= 1, "no 1024-bit vector was signed");
}
