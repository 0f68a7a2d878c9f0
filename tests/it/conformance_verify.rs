//! The verification conformance suites of ../shared/conformance, run through the daemon: the
//! `mailseal` binary verifying, each case's records on a DNS server on loopback, the message
//! sent over the milter protocol, the verdict read back from the Authentication-Results field
//! the daemon inserts. Before each case the daemon reloads (SIGHUP), which gives it a new
//! resolver with an empty cache: cases reuse names such as example.com.
//!
//! Each suite prints `passed / scored`. A case counts unless it is in DISPUTED: where the
//! suite contradicts the RFC, or where mailseal hardens on purpose; each entry gives the RFC
//! section and the answer mailseal gives instead, which is checked like any other. Every
//! scored case must pass.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::common::dns::{DnsServer, Rr, Zones};
use crate::common::process::Running;
use crate::common::*;
use mail_auth::dmarc::DmarcRecord;
use mail_auth::dns::TxtRecordParser;
use mailseal::config::Dns;
use mailseal::dns::{Cache, Resolver};
use mailseal::message::normalize_domain;
use mailseal::pipeline::verify::dmarc::{discover, judge, Check, Discovery};
use mailseal::results::Word;
use serde_json::Value;

/// Cases mailseal answers otherwise than the suite, on purpose: (id, mailseal's answer, why
/// with the RFC section).
const DISPUTED: &[(&str, &str, &str)] = &[
    ("opendkim/t-test28", "permerror", "hardened on purpose: a signature with l= covers only part of the body, so content can be appended under a valid signature (RFC 6376 §8.2); mailseal never passes one"),
    ("opendkim/t-test29", "permerror", "hardened on purpose: l= refused (RFC 6376 §8.2)"),
    ("opendkim/t-test30", "permerror", "hardened on purpose: l= refused (RFC 6376 §8.2)"),
    ("opendkim/t-test31", "permerror", "hardened on purpose: l= refused (RFC 6376 §8.2)"),
    ("arc-validation/cv_fail_i1_as_cv_fail", "fail", "the suite expects an empty status; RFC 8617 §5.2 knows only none, pass and fail, and a chain with a cv=fail seal has failed"),
    ("arc-validation/cv_fail_i2_as2_fail", "fail", "the suite expects an empty status; RFC 8617 §5.2: a chain with a cv=fail seal has failed"),
    ("arc-validation/cv_fail_i2_as1_fail", "fail", "the suite expects an empty status; RFC 8617 §5.2: a chain with a cv=fail seal has failed"),
    ("arc-validation/ams_fields_c_na", "fail", "the AMS has the semantics of a DKIM-Signature (RFC 8617 §4.1.2), so no c= means simple/simple (RFC 6376 §3.5); the suite's signer used relaxed, and the signature does not verify as written"),
    ("arc-validation/ams_fields_h_empty", "fail", "the AMS has the semantics of a DKIM-Signature (RFC 8617 §4.1.2), whose h= must include From or the signature is ignored (RFC 6376 §6.1.1); an empty h= cannot validate"),
    ("opendmarc/parse/5", "error", "p=n is not a policy: RFC 9989 §4.8 allows none, quarantine and reject only; OpenDMARC accepts abbreviations"),
    ("opendmarc/parse/12", "ok", "RFC 9989 removed rf=, ri= and pct=, and unknown tags are ignored (§4.7): the record is valid; OpenDMARC implements RFC 7489"),
    ("opendmarc/parse/13", "ok", "RFC 9989 removed rf=, ri= and pct=, and unknown tags are ignored (§4.7): the record is valid; OpenDMARC implements RFC 7489"),
    ("opendmarc/parse/14", "ok", "RFC 9989 removed rf=, ri= and pct=, and unknown tags are ignored (§4.7): the record is valid; OpenDMARC implements RFC 7489"),
    ("opendmarc/parse/15", "ok", "RFC 9989 makes p= optional (§4.7: a record without it is treated as p=none when it has rua=); OpenDMARC implements RFC 7489"),
    ("opendmarc/parse/19", "ok", "RFC 9989 removed rf=, ri= and pct=, and unknown tags are ignored (§4.7): the record is valid; OpenDMARC implements RFC 7489"),
    ("opendmarc/alignment/5", "permerror", "hardened on purpose: \".mac.com.\" has a leading dot and is not a domain name (RFC 5322 §3.4.1, RFC 1035 §2.3.1), so there is no author domain: dmarc=permerror (RFC 9989 §4.6), rejected under enforce; OpenDMARC strips the dots, which lets a malformed From pass as mac.com"),
    ("opendmarc/alignment/6", "permerror", "hardened on purpose: \"....mac.com....\" has empty labels and is not a domain name (RFC 5322 §3.4.1, RFC 1035 §2.3.1): dmarc=permerror (RFC 9989 §4.6), rejected under enforce; OpenDMARC strips the dots"),
];

fn conformance(file: &str) -> Option<Vec<Value>> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/conformance")
        .join(file);
    let text = std::fs::read_to_string(p).ok()?;
    Some(
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
    )
}

/// A resolver with a cache of its own (each case starts empty).
fn resolver(dns: &DnsServer) -> Resolver {
    let auth = mailseal::dns::authenticator(&Dns {
        nameservers: vec![dns.addr],
        timeout: Duration::from_millis(400),
        attempts: 1,
        ..Dns::default()
    })
    .unwrap();
    Resolver::new(auth, Arc::new(Cache::new(1 << 20, Arc::default())))
}

fn load_zone(zones: &Zones, zone: &Value) {
    zones.clear();
    for (name, rrs) in zone.as_object().unwrap() {
        for rr in rrs.as_array().unwrap() {
            let t = rr[0].as_str().unwrap();
            let v = &rr[1];
            let parsed = match t {
                "TXT" => match v {
                    Value::String(s) => Rr::TxtParts(vec![s.clone()]),
                    // A TXT record of no strings cannot be sent on the wire; the nearest is one
                    // empty string, which is just as much "not an SPF record".
                    Value::Array(parts) if parts.is_empty() => Rr::TxtParts(vec![String::new()]),
                    Value::Array(parts) => Rr::TxtParts(
                        parts
                            .iter()
                            .map(|p| p.as_str().unwrap().to_string())
                            .collect(),
                    ),
                    _ => continue,
                },
                "SPF" => continue, // type 99: not queried by RFC 7208 verifiers
                "A" => match v.as_str().unwrap().parse() {
                    Ok(ip) => Rr::A(ip),
                    Err(_) => continue,
                },
                "AAAA" => match v.as_str().unwrap().parse() {
                    Ok(ip) => Rr::Aaaa(ip),
                    Err(_) => continue,
                },
                "PTR" => Rr::Ptr(v.as_str().unwrap().trim_end_matches('.').to_string()),
                "CNAME" => Rr::Cname(v.as_str().unwrap().trim_end_matches('.').to_string()),
                "MX" => Rr::Mx(
                    v[0].as_u64().unwrap() as u16,
                    v[1].as_str().unwrap().trim_end_matches('.').to_string(),
                ),
                "TIMEOUT" => Rr::Timeout,
                other => panic!("zone type {other}"),
            };
            zones.add(name, parsed);
        }
    }
}

/// The mailseal binary verifying through `dns`, reloaded before each case.
struct Daemon {
    running: Running,
    addr: SocketAddr,
    _scratch: Scratch,
}

impl Daemon {
    /// Start the binary; `env` adds to its environment (the fake clock).
    fn start(dns: &DnsServer, env: &[(&str, &std::ffi::OsStr)]) -> Daemon {
        let port = crate::common::postfix::free_port();
        let scratch = Scratch::new("conformance");
        let cfg = TestConfig::verifying(dns.addr)
            .set("socket", format!("inet:{port}@127.0.0.1"))
            .set("dns.timeout", "400ms")
            .set("verify.timeout", "10s")
            // A temperror must reach the header, not become 451.
            .set("verify.on_dns_error", "accept");
        let path = scratch.write("mailseal.toml", &cfg.text());
        let running = Running::started(&path, env);
        Daemon {
            running,
            addr: ([127, 0, 0, 1], port).into(),
            _scratch: scratch,
        }
    }

    /// A new resolver (empty cache) for the next case.
    fn fresh_cache(&mut self) {
        self.running.signal(libc::SIGHUP);
        tokio::task::block_in_place(|| self.running.wait_log("configuration reloaded"));
    }

    /// The message through the daemon: the results in its Authentication-Results field, one
    /// `method=result ...` entry each, in order.
    async fn verify(&mut self, env: &Envelope, raw: &str) -> Vec<String> {
        self.fresh_cache();
        let out = deliver(self.addr, env, raw).await;
        let ar = out.inserted("Authentication-Results");
        let [ar] = ar.as_slice() else {
            panic!("one A-R expected: {:?} {:?}", out.status, out.actions);
        };
        ar.split(";\n\t")
            .skip(1)
            .map(|e| e.trim_end_matches(';').to_string())
            .collect()
    }
}

/// The result word of each entry for `method`.
fn words<'a>(entries: &'a [String], method: &str) -> Vec<&'a str> {
    entries
        .iter()
        .filter_map(|e| e.strip_prefix(method)?.strip_prefix('='))
        .map(|r| r.split([' ', ';']).next().unwrap_or(r))
        .collect()
}

/// The allowed answers for a case: the suite's, or ours when disputed.
fn allowed<'a>(case: &'a Value, key: &str) -> (Vec<&'a str>, bool) {
    let id = case["id"].as_str().unwrap();
    if let Some((_, ours, why)) = DISPUTED.iter().find(|(d, _, _)| *d == id) {
        eprintln!(
            "disputed {id}: the suite expects {}, mailseal answers {ours}: {why}",
            case[key]
        );
        return (vec![*ours], true);
    }
    let v = &case[key];
    let list = match v {
        Value::Array(a) => a.iter().map(|v| v.as_str().unwrap()).collect(),
        Value::String(s) => vec![s.as_str()],
        _ => panic!("{id}: {key}"),
    };
    (list, false)
}

/// One suite's tally; prints `passed/scored` and returns the failures.
#[derive(Default)]
struct Tally {
    passed: usize,
    scored: usize,
    disputed: usize,
    failures: Vec<String>,
}

impl Tally {
    fn add(&mut self, id: &str, disputed: bool, ok: Result<(), String>) {
        if disputed {
            self.disputed += 1;
            if let Err(e) = ok {
                self.failures.push(format!("{id} (disputed): {e}"));
            }
            return;
        }
        self.scored += 1;
        match ok {
            Ok(()) => self.passed += 1,
            Err(e) => self.failures.push(format!("{id}: {e}")),
        }
    }

    fn report(self, suite: &str) -> Vec<String> {
        println!(
            "{suite}: {} / {} scored passed ({} disputed)",
            self.passed, self.scored, self.disputed
        );
        self.failures
    }
}

fn one_of(word: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&word) {
        Ok(())
    } else {
        Err(format!("got {word}, expected one of {allowed:?}"))
    }
}

/// The SMTP envelope of a case (`<>` when MAIL FROM is empty).
fn envelope(ip: &str, helo: &str, mail_from: &str) -> Envelope {
    Envelope {
        client_ip: ip.into(),
        helo: helo.into(),
        mail_from: format!("<{mail_from}>"),
        ..Default::default()
    }
}

const SPF_MESSAGE: &str = "From: <c@conformance.test>\r\nSubject: spf\r\n\r\nbody\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_through_the_daemon() {
    let Some(cases) = conformance("spf-rfc7208.jsonl") else {
        eprintln!("SKIPPED: ../shared/conformance not found");
        return;
    };
    let zones = Zones::default();
    let dns = DnsServer::start(zones.clone()).await;
    let mut daemon = Daemon::start(&dns, &[]);
    let mut tally = Tally::default();
    for case in &cases {
        let id = case["id"].as_str().unwrap();
        load_zone(&zones, &case["zone"]);
        let env = envelope(
            case["client_ip"].as_str().unwrap(),
            case["helo"].as_str().unwrap(),
            case["mail_from"].as_str().unwrap(),
        );
        let entries = daemon.verify(&env, SPF_MESSAGE).await;
        // The MAIL FROM identity (postmaster@HELO for the null sender, the suite's HELO
        // cases) is the entry with smtp.mailfrom.
        let spf: Vec<&String> = entries
            .iter()
            .filter(|e| e.starts_with("spf=") && e.contains("smtp.mailfrom="))
            .collect();
        let word = words(
            &spf.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "spf",
        )
        .first()
        .map(|w| w.to_string())
        .unwrap_or_else(|| panic!("{id}: no spf entry in {entries:?}"));
        let (allowed, disputed) = allowed(case, "expected");
        tally.add(id, disputed, one_of(&word, &allowed));
    }
    let failures = tally.report("spf-rfc7208");
    assert!(failures.is_empty(), "SPF:\n{}", failures.join("\n"));
}

/// Start of the day the time-dependent DKIM vectors assume (their `verify_time`).
fn faketime(at: u64) -> Vec<(&'static str, std::ffi::OsString)> {
    let lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    assert!(
        std::path::Path::new(lib).exists(),
        "faketime is not installed (scripts/test.sh installs it)"
    );
    vec![
        ("LD_PRELOAD", lib.into()),
        ("FAKETIME", format!("@{}", format_time(at)).into()),
        // Timers keep the real monotonic clock.
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
    ]
}

/// `YYYY-MM-DD hh:mm:ss` (UTC) for a Unix time.
fn format_time(t: u64) -> String {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_and_arc_through_the_daemon() {
    let Some(arc_cases) = conformance("arc-verify.jsonl") else {
        eprintln!("SKIPPED: ../shared/conformance not found");
        return;
    };
    let zones = Zones::default();
    let dns = DnsServer::start(zones.clone()).await;
    let mut now = Daemon::start(&dns, &[]);
    let mut daemons: std::collections::BTreeMap<u64, Daemon> = Default::default();
    let env = envelope("192.0.2.1", "client.example", "");
    let mut failures = Vec::new();

    for file in ["dkim-verify.jsonl", "dkim-verify-opendkim.jsonl"] {
        let mut tally = Tally::default();
        for case in conformance(file).unwrap() {
            let id = case["id"].as_str().unwrap();
            serve_txt_records(&zones, &case);
            // A vector that assumes a verification time is verified by a daemon whose clock
            // says that time.
            let daemon = match case["verify_time"].as_u64() {
                Some(t) => daemons.entry(t).or_insert_with(|| {
                    let env = faketime(t);
                    let env: Vec<(&str, &std::ffi::OsStr)> =
                        env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
                    Daemon::start(&dns, &env)
                }),
                None => &mut now,
            };
            let raw = case["message"].as_str().unwrap();
            let entries = daemon.verify(&env, raw).await;
            let got = words(&entries, "dkim");
            let key = if case["expected_rfc8301"].is_array() {
                "expected_rfc8301"
            } else {
                "expected"
            };
            let (allowed, disputed) = allowed(&case, key);
            let ok = match case["scope"].as_str().unwrap_or("all") {
                "first" => got.first().is_some_and(|w| allowed.contains(w)),
                "last" => got.last().is_some_and(|w| allowed.contains(w)),
                "any" => got.iter().any(|w| allowed.contains(w)),
                _ => !got.is_empty() && got.iter().all(|w| allowed.contains(w)),
            };
            let r = if ok {
                Ok(())
            } else {
                Err(format!("got {got:?}, expected {allowed:?}"))
            };
            tally.add(id, disputed, r);
        }
        failures.extend(tally.report(file.trim_end_matches(".jsonl")));
    }

    let mut tally = Tally::default();
    for case in &arc_cases {
        let id = case["id"].as_str().unwrap();
        serve_txt_records(&zones, case);
        let entries = now.verify(&env, case["message"].as_str().unwrap()).await;
        let got = words(&entries, "arc");
        let (allowed, disputed) = allowed(case, "expected");
        let word = got.first().copied().unwrap_or("(no arc entry)");
        tally.add(id, disputed, one_of(word, &allowed));
    }
    failures.extend(tally.report("arc-verify"));
    assert!(
        failures.is_empty(),
        "DKIM and ARC:\n{}",
        failures.join("\n")
    );
}

/// DMARC record parsing and alignment (OpenDMARC's unit cases), through the DMARC
/// evaluation itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmarc_units() {
    let Some(_) = conformance("dmarc-unit-opendmarc.jsonl") else {
        eprintln!("SKIPPED: ../shared/conformance not found");
        return;
    };
    let zones = Zones::default();
    let dns = DnsServer::start(zones.clone()).await;
    let mut tally = Tally::default();
    // A DMARC record at each domain's registrable name gives the tree walk its
    // organizational domain.
    for case in conformance("dmarc-unit-opendmarc.jsonl").unwrap() {
        let id = case["id"].as_str().unwrap();
        let (want, disputed) = allowed(&case, "expected");
        let answer = match case["kind"].as_str().unwrap() {
            "record_parse" => {
                match DmarcRecord::parse(case["record"].as_str().unwrap().as_bytes()) {
                    Ok(_) => "ok",
                    Err(_) => "error",
                }
            }
            "alignment" => {
                let a = case["domain_a"].as_str().unwrap();
                let b = case["domain_b"].as_str().unwrap();
                let strict = case["mode"].as_str().unwrap() == "strict";
                zones.clear();
                for d in [a, b] {
                    let labels: Vec<&str> = d.split('.').filter(|l| !l.is_empty()).collect();
                    if labels.len() >= 2 {
                        let org = labels[labels.len() - 2..].join(".");
                        let aspf = if strict { "s" } else { "r" };
                        zones.add(
                            &format!("_dmarc.{org}"),
                            Rr::Txt(format!("v=DMARC1; p=reject; aspf={aspf}")),
                        );
                    }
                }
                let auth = resolver(&dns);
                // The From domain as mailseal reads it, then SPF passing for domain_b.
                match normalize_domain(a) {
                    Ok(author) => match discover(&auth, &author).await {
                        Discovery::Found(found) => {
                            let b = normalize_domain(b).unwrap_or_else(|_| b.to_string());
                            let v =
                                judge(&auth, &found, &author, Some((&b, Check::Pass)), &[]).await;
                            if v.result == Word::Pass {
                                "aligned"
                            } else {
                                "not_aligned"
                            }
                        }
                        _ => "not_aligned",
                    },
                    Err(_) => "permerror",
                }
            }
            k => panic!("kind {k}"),
        };
        // A From domain that is not a domain name has no DMARC pass: it is not aligned.
        let answer = if answer == "permerror" && !want.contains(&"permerror") {
            "not_aligned"
        } else {
            answer
        };
        tally.add(id, disputed, one_of(answer, &want));
    }
    let failures = tally.report("dmarc-unit-opendmarc");
    assert!(failures.is_empty(), "DMARC:\n{}", failures.join("\n"));
}

/// Serve exactly the case's `txt_records`.
fn serve_txt_records(zones: &Zones, case: &Value) {
    zones.clear();
    for (name, value) in case["txt_records"].as_object().unwrap() {
        zones.add(name, Rr::Txt(value.as_str().unwrap().to_string()));
    }
}
