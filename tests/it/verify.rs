//! Inbound verification over the milter protocol, resolving through a real DNS server on
//! loopback (hickory-server).

use crate::common::dns::{DnsServer, Rr, Zones};
use crate::common::*;
use indymilter_test::{EomAction, Status};

const SPF_OK: &str = "v=spf1 ip4:192.0.2.10 -all";

async fn setup(dmarc_extra: &str) -> (DnsServer, Daemon) {
    let k = keys();
    let z = Zones::default();
    z.txt("example.com", SPF_OK);
    z.txt("_dmarc.example.com", "v=DMARC1; p=reject");
    z.txt("rsa._domainkey.example.com", &k.rsa.record);
    z.txt("client.example", SPF_OK);
    z.txt("softfail.example", "v=spf1 ~all");
    z.txt("neutral.example", "v=spf1 ?all");
    z.add("none.example", Rr::A("192.0.2.99".parse().unwrap()));
    z.txt("perm.example", "v=spf1 ip4:192.0.2.10 include:");
    z.txt("temp.example", "v=spf1 a:slow.example -all");
    z.txt("_dmarc.temp.example", "v=DMARC1; p=reject");
    z.add("slow.example", Rr::Timeout);
    z.txt("bulk.example", "v=spf1 ip4:198.51.100.0/24 -all");
    z.txt("_dmarc.bulk.example", "v=DMARC1; p=reject");
    let dns = DnsServer::start(z).await;
    let cfg = TestConfig::verifying(dns.addr)
        .set("verify.timeout", "10s")
        .with(&format!("[dmarc]\n{dmarc_extra}"));
    (dns, Daemon::start(&cfg.text()).await)
}

fn env(mail_from: &str) -> Envelope {
    Envelope {
        client_ip: "192.0.2.10".into(),
        helo: "client.example".into(),
        mail_from: format!("<{mail_from}>"),
        ..Default::default()
    }
}

fn msg(from: &str) -> String {
    format!("From: <{from}>\r\nTo: bob@example.org\r\nSubject: test\r\nMessage-ID: <v1@x>\r\n\r\nHello.\r\n")
}

async fn send(d: &Daemon, env: &Envelope, raw: &str) -> Delivered {
    let out = deliver(d.addr, env, raw).await;
    out
}

fn ar(out: &Delivered) -> String {
    let v = out.inserted("Authentication-Results");
    assert_eq!(v.len(), 1, "{out:?}");
    v[0].clone()
}

#[tokio::test]
async fn spf_results() {
    let (_dns, d) = setup("").await;
    for (from, want) in [
        ("a@example.com", "spf=pass"),
        ("a@softfail.example", "spf=softfail"),
        ("a@neutral.example", "spf=neutral"),
        ("a@none.example", "spf=none"),
        ("a@perm.example", "spf=permerror"),
        ("a@bulk.example", "spf=fail"),
    ] {
        let out = send(&d, &env(from), &msg(from)).await;
        let a = ar(&out);
        assert!(a.starts_with(" mx.test;"), "{a}");
        assert!(
            a.contains(&format!("{want} ")) && a.contains(&format!("smtp.mailfrom={from}")),
            "{from}: {a}"
        );
        assert!(a.contains("smtp.helo=client.example"), "{a}");
    }
    d.stop().await;
}

#[tokio::test]
async fn dkim_and_dmarc_pass_and_tamper() {
    let (_dns, d) = setup("").await;
    let raw = signed_by_example_com(&msg("alice@example.com")).await;
    let out = send(&d, &env("alice@example.com"), &raw).await;
    let a = ar(&out);
    assert!(
        a.contains("dkim=pass header.d=example.com header.s=rsa header.a=rsa-sha256 header.b="),
        "{a}"
    );
    assert!(
        a.contains("dmarc=pass (p=reject dis=none) header.from=example.com"),
        "{a}"
    );
    // DKIM alone carries DMARC when SPF fails (other client IP).
    let mut e = env("alice@example.com");
    e.client_ip = "203.0.113.5".into();
    let out = send(&d, &e, &raw).await;
    let a = ar(&out);
    assert!(
        a.contains("spf=fail") && a.contains("dkim=pass") && a.contains("dmarc=pass"),
        "{a}"
    );
    // Tampered body: DKIM fails.
    let tampered = raw.replace("Hello.", "Hello!");
    let out = send(&d, &env("alice@example.com"), &tampered).await;
    let a = ar(&out);
    assert!(a.contains("dkim=neutral") || a.contains("dkim=fail"), "{a}");
    assert!(!a.contains("dkim=pass"), "{a}");
    d.stop().await;
}

#[tokio::test]
async fn forged_results_removed_foreign_kept() {
    let (_dns, d) = setup("").await;
    let raw = format!(
        "Authentication-Results: other.example; dkim=pass\r\nAuthentication-Results: (forged)\r\n\tMX.TEST; dmarc=pass\r\n{}",
        msg("a@example.com")
    );
    let out = send(&d, &env("a@example.com"), &raw).await;
    let deletes: Vec<_> = out
        .actions
        .actions
        .iter()
        .filter_map(|a| match a {
            EomAction::DeleteHeader { name, index } => {
                Some((name.to_str().unwrap().to_string(), *index))
            }
            _ => None,
        })
        .collect();
    assert_eq!(deletes, vec![("Authentication-Results".to_string(), 2)]);
    let text = out.text();
    assert!(text.contains("other.example; dkim=pass"), "{text}");
    assert!(!text.contains("(forged)"), "{text}");
    d.stop().await;
}

#[tokio::test]
async fn dmarc_enforce_rejects_spoof() {
    let (_dns, d) = setup("enforce = true").await;
    let mut e = env("mallory@bulk.example");
    e.client_ip = "203.0.113.5".into();
    let out = send(&d, &e, &msg("ceo@example.com")).await;
    match &out.status {
        Status::Reject { message: Some(m) } => {
            let m = m.to_string_lossy();
            assert!(
                m.starts_with("550 5.7.1") && m.contains("DMARC") && m.contains("example.com"),
                "{m}"
            );
        }
        s => panic!("expected 550 5.7.1, got {s:?}"),
    }
    d.stop().await;
}

#[tokio::test]
async fn dns_timeout_tempfails() {
    let (_dns, d) = setup("").await;
    let out = send(&d, &env("a@temp.example"), &msg("a@temp.example")).await;
    match &out.status {
        Status::Tempfail { message: Some(m) } => {
            let m = m.to_string_lossy();
            assert!(m.starts_with("451 4.4.3"), "{m}");
        }
        s => panic!("expected 451 4.4.3, got {s:?}"),
    }
    d.stop().await;
}

/// Sign with python3-dkim (for algorithms and key sizes mailseal itself refuses to sign with).
fn py_sign(raw: &str, selector: &str, key: &std::path::Path, alg: &str) -> String {
    use std::io::Write;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/dkim_sign.py");
    let mut child = std::process::Command::new("/usr/bin/python3")
        .arg(script)
        .args([selector, "example.com"])
        .arg(key)
        .arg(alg)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(raw.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "dkim_sign.py failed");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn dkim_failures_missing_revoked_sha1_and_short_keys() {
    let (dns, d) = setup("").await;
    let k = keys();
    dns.zones
        .txt("revoked._domainkey.example.com", "v=DKIM1; k=rsa; p=");
    dns.zones
        .txt("weak._domainkey.example.com", &k.rsa512.record);
    dns.zones
        .txt("sha1._domainkey.example.com", &k.rsa_pkcs1.record);
    let base = msg("alice@example.com");
    let cases = [
        (
            "missing",
            py_sign(&base, "nokey", &k.rsa_pkcs1.path, "rsa-sha256"),
            &["permerror", "fail", "temperror"][..],
        ),
        (
            "revoked",
            py_sign(&base, "revoked", &k.rsa_pkcs1.path, "rsa-sha256"),
            &["permerror", "fail"][..],
        ),
        (
            "rsa-sha1",
            py_sign(&base, "sha1", &k.rsa_pkcs1.path, "rsa-sha1"),
            &["fail"][..],
        ),
        (
            "512-bit",
            py_sign(&base, "weak", &k.rsa512.path, "rsa-sha256"),
            &["fail", "permerror"][..],
        ),
    ];
    for (what, raw, allowed) in cases {
        let out = send(&d, &env("alice@example.com"), &raw).await;
        let a = ar(&out);
        let dkim = a
            .split(";\n\t")
            .find(|r| r.starts_with("dkim="))
            .unwrap_or("");
        let word = dkim
            .trim_start_matches("dkim=")
            .split([' ', ';'])
            .next()
            .unwrap_or("");
        assert!(allowed.contains(&word), "{what}: {a}");
        assert!(!a.contains("dkim=pass"), "{what}: {a}");
        if what == "rsa-sha1" {
            assert!(
                dkim.contains("RFC 8301") && dkim.contains("header.a=rsa-sha1"),
                "{a}"
            );
        }
        // DMARC cannot pass through such a signature: the message is from a host SPF allows,
        // so DMARC passes through SPF only and says so.
        assert!(a.contains("spf=pass"), "{a}");
    }
    d.stop().await;
}

#[tokio::test]
async fn dmarc_np_for_nonexistent_subdomain_and_none_without_record() {
    let (dns, d) = setup("").await;
    dns.zones
        .txt("_dmarc.np.example", "v=DMARC1; p=none; np=reject");
    dns.zones.txt("np.example", "v=spf1 -all");
    dns.zones
        .add("real.np.example", Rr::A("192.0.2.1".parse().unwrap()));
    let mut e = env("x@bulk.example");
    e.client_ip = "203.0.113.5".into();
    // A subdomain that does not exist takes np=.
    let out = send(&d, &e, &msg("a@ghost.np.example")).await;
    let a = ar(&out);
    assert!(
        a.contains("dmarc=fail (p=reject dis=none) header.from=ghost.np.example"),
        "{a}"
    );
    // One that exists takes sp= (defaulting to p=none).
    let out = send(&d, &e, &msg("a@real.np.example")).await;
    let a = ar(&out);
    assert!(
        a.contains("dmarc=fail (p=none dis=none) header.from=real.np.example"),
        "{a}"
    );
    // No DMARC record anywhere: dmarc=none.
    let out = send(&d, &env("a@neutral.example"), &msg("a@neutral.example")).await;
    let a = ar(&out);
    assert!(a.contains("dmarc=none header.from=neutral.example"), "{a}");
    d.stop().await;
}

#[tokio::test]
async fn servfail_tempfails_and_accept_records_temperror() {
    let (dns, d) = setup("").await;
    dns.zones
        .txt("sf.example", "v=spf1 a:broken.sf.example -all");
    dns.zones.add("broken.sf.example", Rr::ServFail);
    // The domain publishes DMARC and its own SPF could align: the failure could change it.
    dns.zones.txt("_dmarc.sf.example", "v=DMARC1; p=none");
    let out = send(&d, &env("a@sf.example"), &msg("a@sf.example")).await;
    assert!(
        matches!(&out.status, Status::Tempfail { message: Some(m) } if m.to_string_lossy().starts_with("451 4.4.3")),
        "{:?}",
        out.status
    );
    d.stop().await;
    // With on_dns_error = "accept" the message passes with temperror recorded.
    let cfg = TestConfig::verifying(dns.addr).set("verify.on_dns_error", "accept");
    let d = Daemon::start(&cfg.text()).await;
    let out = send(&d, &env("a@sf.example"), &msg("a@sf.example")).await;
    assert_eq!(out.status, Status::Continue);
    assert!(ar(&out).contains("spf=temperror"), "{}", ar(&out));
    d.stop().await;
}

#[tokio::test]
async fn several_from_addresses_are_permerror_and_rejected_when_enforcing() {
    let (_dns, d) = setup("enforce = true").await;
    let raw =
        "From: a@example.com, b@other.example\r\nTo: x@example.org\r\nSubject: two\r\n\r\nbody\r\n";
    let out = send(&d, &env("a@example.com"), raw).await;
    match &out.status {
        Status::Reject { message: Some(m) } => {
            assert!(m.to_string_lossy().contains("550 5.7.1"), "{m:?}")
        }
        s => panic!("expected a reject, got {s:?}"),
    }
    d.stop().await;
    let (_dns, d) = setup("").await;
    let out = send(&d, &env("a@example.com"), raw).await;
    assert!(ar(&out).contains("dmarc=permerror"), "{}", ar(&out));
    d.stop().await;
}

#[tokio::test]
async fn quarantine_holds_and_allowlisted_clients_are_not_rejected() {
    let (dns, d) = setup("enforce = true\nnever_reject = [\"203.0.113.0/24\"]").await;
    dns.zones.txt("_dmarc.q.example", "v=DMARC1; p=quarantine");
    let mut e = env("x@bulk.example");
    e.client_ip = "198.18.0.1".into();
    let out = send(&d, &e, &msg("a@q.example")).await;
    assert_eq!(out.status, Status::Continue);
    assert!(
        out.actions
            .actions
            .iter()
            .any(|a| matches!(a, EomAction::Quarantine { .. })),
        "{:?}",
        out.actions
    );
    assert!(
        ar(&out).contains("dmarc=fail (p=quarantine dis=quarantine)"),
        "{}",
        ar(&out)
    );
    // A spoof of a p=reject domain from an allowlisted network is accepted, marked dis=none.
    e.client_ip = "203.0.113.9".into();
    let out = send(&d, &e, &msg("ceo@example.com")).await;
    assert_eq!(out.status, Status::Continue);
    assert!(
        ar(&out).contains("dmarc=fail (p=reject dis=none)"),
        "{}",
        ar(&out)
    );
    // An SMTP-authenticated client's mail is outbound: never verified, never rejected.
    e.client_ip = "198.18.0.1".into();
    e.auth = Some("someone");
    let out = send(&d, &e, &msg("ceo@example.com")).await;
    assert_eq!(out.status, Status::Accept);
    d.stop().await;
}

#[tokio::test]
async fn received_spf_is_optional() {
    let (dns, _d) = setup("").await;
    let cfg = TestConfig::verifying(dns.addr).set("verify.received_spf", true);
    let d = Daemon::start(&cfg.text()).await;
    let out = send(&d, &env("a@example.com"), &msg("a@example.com")).await;
    let rs = out.inserted("Received-SPF");
    assert_eq!(rs.len(), 1, "{:?}", out.actions);
    assert!(
        rs[0].starts_with(" pass") && rs[0].contains("client-ip=192.0.2.10"),
        "{}",
        rs[0]
    );
    d.stop().await;
}

#[tokio::test]
async fn verify_command_prints_the_daemons_header() {
    let (dns, d) = setup("").await;
    let s = Scratch::new("verify-cli");
    let cfg = s.write("m.toml", &TestConfig::verifying(dns.addr).text());
    let raw = signed_by_example_com(&msg("alice@example.com")).await;
    let out = cli(
        &[
            "verify",
            "-c",
            cfg.to_str().unwrap(),
            "--client-ip",
            "192.0.2.10",
            "--helo",
            "client.example",
            "--mail-from",
            "alice@example.com",
        ],
        Some(raw.as_bytes()),
    )
    .await;
    assert!(out.ok, "{}", out.text());
    let text = out.stdout;
    assert!(
        text.starts_with("Authentication-Results: mx.test;\r\n"),
        "{text}"
    );
    assert!(
        text.contains("spf=pass") && text.contains("dkim=pass") && text.contains("dmarc=pass"),
        "{text}"
    );
    // The daemon adds the same results for the same message.
    let daemon_ar = ar(&send(&d, &env("alice@example.com"), &raw).await);
    let strip_b = |s: &str| s.replace("\r\n", "\n");
    assert_eq!(
        strip_b(
            text.trim_start_matches("Authentication-Results:")
                .trim_end()
        ),
        strip_b(&daemon_ar)
    );
    d.stop().await;
}

/// RFC 7208 §4.6, §4.8, §5.6: records with malformed names, bad prefix lengths or two SPF
/// records are the domain's own error (permerror, or a term that matches nothing), never a
/// temporary one: the mail flows under the default `on_dns_error = "tempfail"` instead of
/// being deferred until the owner fixes the record.
#[tokio::test]
async fn broken_spf_records_are_permanent_and_mail_flows() {
    let long = format!("v=spf1 a:{}.example -all", "x".repeat(64));
    let cases: [(&str, Vec<&str>, &str); 6] = [
        // An empty label in a name: the term matches nothing; ip4 still passes.
        (
            "emptylabel.example",
            vec!["v=spf1 a:foo..example ip4:192.0.2.10 -all"],
            "spf=pass",
        ),
        ("longlabel.example", vec![&long], "spf=fail"),
        (
            "cidr33.example",
            vec!["v=spf1 ip4:192.0.2.0/33 -all"],
            "spf=permerror",
        ),
        (
            "cidr032.example",
            vec!["v=spf1 ip4:192.0.2.0/032 -all"],
            "spf=permerror",
        ),
        (
            "tworecords.example",
            vec!["v=spf1 ip4:192.0.2.10 -all", "v=spf1 -all"],
            "spf=permerror",
        ),
        (
            "badmodifier.example",
            vec!["v=spf1 ip4:192.0.2.10 1x=y -all"],
            "spf=permerror",
        ),
    ];
    let z = Zones::default();
    for (domain, records, _) in &cases {
        for r in records {
            z.txt(domain, r);
        }
        z.txt(&format!("_dmarc.{domain}"), "v=DMARC1; p=reject");
    }
    let dns = DnsServer::start(z).await;
    let d = Daemon::start(&TestConfig::verifying(dns.addr).text()).await;
    for (domain, _, want) in &cases {
        let from = format!("a@{domain}");
        let out = send(&d, &env(&from), &msg(&from)).await;
        assert_eq!(out.status, Status::Continue, "{from}: {out:?}");
        let a = ar(&out);
        assert!(a.contains(&format!("{want} ")), "{from}: {a}");
        assert!(!a.contains("temperror"), "{from}: {a}");
    }
    d.stop().await;
}

/// A daemon enforcing DMARC that trusts gw.example.net's SPF results from 198.51.100.25 and
/// exempts lists.example's envelope (when SPF passes for it).
async fn relay_setup() -> (DnsServer, Daemon) {
    let (dns, d) = setup("").await;
    d.stop().await;
    dns.zones.txt("lists.example", SPF_OK);
    let cfg = TestConfig::verifying(dns.addr).with(
        "[dmarc]\nenforce = true\nnever_reject_mail_from = [\"lists.example\"]\n\
         [verify]\ntrusted_relays = [{ hosts = [\"198.51.100.25\"], authserv_ids = [\"gw.example.net\"] }]\n",
    );
    (dns, Daemon::start(&cfg.text()).await)
}

fn rejected(out: &Delivered) -> bool {
    matches!(&out.status, Status::Reject { message: Some(m) } if m.to_string_lossy().starts_with("550 5.7.1"))
}

#[tokio::test]
async fn a_trusted_relays_spf_result_counts_only_from_that_relay() {
    let (_dns, d) = relay_setup().await;
    let relayed = |id: &str| {
        format!(
            "Authentication-Results: {id};\r\n\tspf=pass (sender IP is 192.0.2.10) smtp.mailfrom=ceo@example.com\r\n{}",
            msg("ceo@example.com")
        )
    };
    let mut e = env("ceo@example.com");
    // Through the relay: its SPF pass for the original client aligns, DMARC passes, and its
    // field stays.
    e.client_ip = "198.51.100.25".into();
    let out = send(&d, &e, &relayed("gw.example.net")).await;
    assert_eq!(out.status, Status::Continue);
    let a = ar(&out);
    assert!(
        a.contains(
            "spf=pass (result of trusted relay gw.example.net) smtp.mailfrom=ceo@example.com"
        ),
        "{a}"
    );
    assert!(a.contains("dmarc=pass"), "{a}");
    assert!(
        !out.actions
            .actions
            .iter()
            .any(|a| matches!(a, EomAction::ChangeHeader { .. })),
        "{:?}",
        out.actions
    );
    // The relay's own SPF check (198.51.100.25 is not example.com's) would have failed:
    // another id from the same client is not trusted.
    let out = send(&d, &e, &relayed("evil.example")).await;
    assert!(rejected(&out), "{:?}", out.status);
    // Our own id is never trusted (and the field is deleted as forged).
    let out = send(&d, &e, &relayed("mx.test")).await;
    assert!(rejected(&out), "{:?}", out.status);
    // The relay's id from any other client is just a header.
    e.client_ip = "203.0.113.5".into();
    let out = send(&d, &e, &relayed("gw.example.net")).await;
    assert!(rejected(&out), "{:?}", out.status);
    d.stop().await;
}

#[tokio::test]
async fn never_reject_mail_from_needs_an_spf_pass_for_that_domain() {
    let (_dns, d) = relay_setup().await;
    let mut e = env("bounce@lists.example");
    // A list whose envelope SPF passes: the p=reject From is not enforced, only recorded.
    let out = send(&d, &e, &msg("ceo@example.com")).await;
    assert_eq!(out.status, Status::Continue);
    assert!(
        ar(&out).contains("dmarc=fail (p=reject dis=none)"),
        "{}",
        ar(&out)
    );
    // Anyone can claim that envelope: from another client SPF fails, and DMARC is enforced.
    e.client_ip = "203.0.113.5".into();
    let out = send(&d, &e, &msg("ceo@example.com")).await;
    assert!(rejected(&out), "{:?}", out.status);
    d.stop().await;
}

#[test]
fn our_own_authserv_id_cannot_be_a_trusted_relays() {
    let s = Scratch::new("relay-own-id");
    let cfg = s.write(
        "m.toml",
        "authserv_id = \"mx.example.net\"\nmode = \"v\"\n[verify]\ntrusted_relays = [{ hosts = [\"192.0.2.1\"], authserv_ids = [\"MX.example.net.\"] }]\n",
    );
    let err = mailseal::config::Config::load(&cfg)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("verify.trusted_relays") && err.contains("our own authserv_id"),
        "{err}"
    );
}
