//! Hostile messages through the verifier: results stay correct (never a pass where a fail
//! is due) and bounded in time.

use std::time::{Duration, Instant};

use crate::common::dns::{DnsServer, Zones};
use crate::common::*;

async fn setup() -> (DnsServer, Daemon) {
    let k = keys();
    let z = Zones::default();
    z.txt("example.com", "v=spf1 ip4:192.0.2.10 -all");
    z.txt("_dmarc.example.com", "v=DMARC1; p=reject");
    z.txt("rsa._domainkey.example.com", &k.rsa.record);
    z.txt(
        "garbage._domainkey.example.com",
        "v=DKIM1; k=rsa; p=!!!not base64!!!",
    );
    z.txt("evil.example", "v=spf1 ip4:203.0.113.0/24 -all");
    z.txt("_dmarc.evil.example", "v=DMARC1; p=none");
    // SPF include loop and a lookup bomb.
    z.txt("loop-a.example", "v=spf1 include:loop-b.example -all");
    z.txt("loop-b.example", "v=spf1 include:loop-a.example -all");
    let chain: Vec<String> = (1..=15)
        .map(|i| format!("include:b{i}.bomb.example"))
        .collect();
    z.txt("bomb.example", &format!("v=spf1 {} -all", chain.join(" ")));
    for i in 1..=15 {
        z.txt(
            &format!("b{i}.bomb.example"),
            "v=spf1 a:x.bomb.example a:y.bomb.example -all",
        );
    }
    z.txt("junk.example", "v=spf1 ip4:192.0.2.10 -all");
    z.txt("_dmarc.junk.example", "v=DMARC1; p=bogus; rua=nonsense");
    let dns = DnsServer::start(z).await;
    let cfg = TestConfig::verifying(dns.addr).text();
    (dns, Daemon::start(&cfg).await)
}

fn env(mail_from: &str, ip: &'static str) -> Envelope {
    Envelope {
        client_ip: ip.into(),
        helo: "client.example".into(),
        mail_from: format!("<{mail_from}>"),
        ..Default::default()
    }
}

async fn ar_for(d: &Daemon, e: &Envelope, raw: &str) -> String {
    let out = deliver(d.addr, e, raw).await;
    let v = out.inserted("Authentication-Results");
    assert_eq!(v.len(), 1, "{out:?}");
    v[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_header_tricks() {
    let (_dns, d) = setup().await;
    let spoof_ip = "203.0.113.5";
    // Display name that looks like an address: the real address decides.
    let a = ar_for(
        &d,
        &env("x@evil.example", spoof_ip),
        "From: \"ceo@example.com\" <attacker@evil.example>\r\nSubject: t\r\n\r\nb\r\n",
    )
    .await;
    assert!(
        a.contains("header.from=evil.example") && !a.contains("header.from=example.com"),
        "{a}"
    );
    // Two From fields: permerror, never a pass.
    let a = ar_for(
        &d,
        &env("x@evil.example", spoof_ip),
        "From: attacker@evil.example\r\nFrom: ceo@example.com\r\nSubject: t\r\n\r\nb\r\n",
    )
    .await;
    assert!(a.contains("dmarc=permerror"), "{a}");
    // Unbalanced angle bracket and an encoded word: no pass for the domain it claims.
    let a = ar_for(
        &d,
        &env("x@evil.example", spoof_ip),
        "From: <ceo@example.com\r\nSubject: t\r\n\r\nb\r\n",
    )
    .await;
    assert!(!a.contains("dmarc=pass"), "{a}");
    let a = ar_for(
        &d,
        &env("x@evil.example", spoof_ip),
        "From: =?utf-8?q?CEO?= <ceo@example.com>\r\nSubject: t\r\n\r\nb\r\n",
    )
    .await;
    assert!(
        a.contains("dmarc=fail") && a.contains("header.from=example.com"),
        "{a}"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_and_abusive_signatures() {
    let (_dns, d) = setup().await;
    let spoof = env("x@evil.example", "203.0.113.5");
    let base = "From: ceo@example.com\r\nTo: b@example.org\r\nSubject: t\r\n\r\nHello.\r\n";
    let good = signed_by_example_com(base).await;
    let sig_line_end = good.find("\r\nFrom:").unwrap();
    let sig = &good[..sig_line_end];

    // Garbage and duplicate tags.
    for bad in [
        "DKIM-Signature: this is not a signature".to_string(),
        sig.replace("d=example.com;", "d=example.com; d=evil.example;"),
        sig.replace("s=rsa;", "s=garbage;"),
    ] {
        let a = ar_for(&d, &spoof, &format!("{bad}\r\n{base}")).await;
        assert!(
            !a.contains("dkim=pass") && !a.contains("dmarc=pass"),
            "{bad}\n{a}"
        );
    }
    // l= beyond the body.
    let with_l = sig.replace("bh=", "l=99999; bh=");
    let a = ar_for(&d, &spoof, &format!("{with_l}\r\n{base}")).await;
    assert!(!a.contains("dkim=pass"), "{a}");

    // 100 copies of a valid signature: at most max_signatures (10) are evaluated, quickly.
    let many: String = std::iter::repeat_n(format!("{sig}\r\n"), 100).collect();
    let start = Instant::now();
    let a = ar_for(&d, &spoof, &format!("{many}{base}")).await;
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(a.matches("dkim=pass").count(), 10, "{a}");
    assert_eq!(a.matches("over the max_signatures limit").count(), 90);
    // The valid signature still makes DMARC pass: the extra copies are harmless.
    assert!(a.contains("dmarc=pass"), "{a}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_loops_bombs_and_junk_dmarc() {
    let (_dns, d) = setup().await;
    for (from, want) in [
        ("a@loop-a.example", "spf=permerror"),
        ("a@bomb.example", "spf=permerror"),
    ] {
        let start = Instant::now();
        let a = ar_for(
            &d,
            &env(from, "192.0.2.10"),
            &format!("From: {from}\r\nSubject: t\r\n\r\nb\r\n"),
        )
        .await;
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{from} took {:?}",
            start.elapsed()
        );
        assert!(a.contains(want), "{from}: {a}");
    }
    // A DMARC record with a bogus policy: not a pass, not a reject.
    let a = ar_for(
        &d,
        &env("a@junk.example", "203.0.113.5"),
        "From: a@junk.example\r\nSubject: t\r\n\r\nb\r\n",
    )
    .await;
    assert!(!a.contains("dmarc=pass"), "{a}");
    d.stop().await;
}
