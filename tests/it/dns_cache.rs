//! The lookups of an inbound message: started as early as the SMTP transaction allows, each
//! question asked once however many messages want it, the answers kept within
//! `[dns] cache_bytes`. Checked by what the loopback DNS server was asked, over the real
//! milter protocol.

use std::time::Duration;

use indymilter::MacroStage;
use indymilter_test::Status;

use crate::common::dns::{DnsServer, Zones};
use crate::common::*;

/// Wait (bounded) until the DNS server has been asked `question`.
async fn asked(zones: &Zones, question: &str) -> bool {
    for _ in 0..100 {
        if zones.times_asked(question) > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn env(mail_from: &str) -> Envelope {
    Envelope {
        client_ip: "192.0.2.10".into(),
        helo: "mta.example".into(),
        mail_from: format!("<{mail_from}>"),
        ..Default::default()
    }
}

#[tokio::test]
async fn lookups_start_with_the_envelope_and_the_header_fields_that_need_them() {
    let k = keys();
    let z = Zones::default();
    z.txt("early.example", "v=spf1 include:_spf.early.example -all");
    z.txt("_spf.early.example", "v=spf1 ip4:192.0.2.10 -all");
    z.txt("_dmarc.early.example", "v=DMARC1; p=reject");
    z.txt("rsa._domainkey.early.example", &k.rsa.record);
    let dns = DnsServer::start(z.clone()).await;
    let d = Daemon::start(&TestConfig::verifying(dns.addr).text()).await;
    let e = env("bounce@early.example");
    let mut c = Client::open(d.addr).await;
    c.hello(&e).await;

    // MAIL FROM alone starts SPF, include target included: nothing else has been sent.
    c.conn
        .macros(MacroStage::Mail, [("i", "QID1")])
        .await
        .unwrap();
    c.conn.mail([e.mail_from.as_str()]).await.unwrap();
    assert!(asked(&z, "early.example TXT").await, "{:?}", z.asked());
    assert!(asked(&z, "_spf.early.example TXT").await, "{:?}", z.asked());
    assert!(!z.asked().iter().any(|q| q.contains("_dmarc")));

    // From starts the DMARC tree walk (every name at once); a DKIM-Signature its key.
    c.conn
        .header("From", " <news@early.example>")
        .await
        .unwrap();
    assert!(
        asked(&z, "_dmarc.early.example TXT").await,
        "{:?}",
        z.asked()
    );
    assert!(asked(&z, "_dmarc.example TXT").await, "{:?}", z.asked());
    c.conn
        .header(
            "DKIM-Signature",
            " v=1; a=rsa-sha256; d=early.example; s=rsa;\n\tc=relaxed/relaxed; h=from; bh=x; b=y",
        )
        .await
        .unwrap();
    assert!(
        asked(&z, "rsa._domainkey.early.example TXT").await,
        "{:?}",
        z.asked()
    );
    assert_eq!(c.conn.eoh().await.unwrap(), Status::Continue);
    c.conn.body(b"Hello.\r\n".to_vec()).await.unwrap();
    let (actions, status) = c.conn.eom().await.unwrap();
    assert_eq!(status, Status::Continue);
    let ar = format!("{actions:?}");
    assert!(ar.contains("spf=pass"), "{ar}");
    // The signature is broken on purpose (bh=x): the key was used, the check failed.
    assert!(
        ar.contains("dkim=fail") || ar.contains("dkim=permerror"),
        "{ar}"
    );
    c.close().await;
    // What end of message needed had been asked already: each question once.
    for q in z.asked() {
        assert_eq!(z.times_asked(&q), 1, "{q} asked twice: {:?}", z.asked());
    }
}

#[tokio::test]
async fn one_query_per_question_however_many_messages_ask_at_once() {
    let mut z = Zones::default();
    // Slow enough that every message asks while the first query is on the wire.
    z.delay = Duration::from_millis(300);
    z.txt("busy.example", "v=spf1 include:_spf.busy.example -all");
    z.txt("_spf.busy.example", "v=spf1 ip4:192.0.2.10 -all");
    z.txt("_dmarc.busy.example", "v=DMARC1; p=none");
    let dns = DnsServer::start(z.clone()).await;
    let d = Daemon::start(
        &TestConfig::verifying(dns.addr)
            .set("dns.timeout", "5s")
            .text(),
    )
    .await;
    let raw = "From: <a@busy.example>\r\nSubject: x\r\n\r\nHello.\r\n";
    let sends = (0..6).map(|_| {
        let e = env("bounce@busy.example");
        let addr = d.addr;
        tokio::spawn(async move { deliver(addr, &e, raw).await })
    });
    for out in futures_util::future::join_all(sends).await {
        let out = out.unwrap();
        let ar = out.inserted("Authentication-Results").join("\n");
        assert!(ar.contains("spf=pass") && ar.contains("dmarc=pass"), "{ar}");
    }
    for q in [
        "busy.example TXT",
        "_spf.busy.example TXT",
        "_dmarc.busy.example TXT",
    ] {
        assert_eq!(z.times_asked(q), 1, "{q}: {:?}", z.asked());
    }
}

#[tokio::test]
async fn the_cache_stays_within_cache_bytes_and_answers_again() {
    let z = Zones::default();
    for i in 0..300 {
        z.txt(&format!("d{i}.example"), "v=spf1 ip4:192.0.2.10 -all");
    }
    let dns = DnsServer::start(z.clone()).await;
    let d = Daemon::start(
        &TestConfig::verifying(dns.addr)
            .set("dns.cache_bytes", "16K")
            .text(),
    )
    .await;
    // What GET /metrics serves (the daemon runs in this process).
    let metrics = || d.contexts.borrow().services.metrics.render();
    let gauge = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    let raw = |i: usize| format!("From: <a@d{i}.example>\r\nSubject: x\r\n\r\nHello.\r\n");
    let mut c = Client::open(d.addr).await;
    c.hello(&env("a@d0.example")).await;
    for i in 0..300 {
        let out = c
            .message(&env(&format!("a@d{i}.example")), &raw(i), 65535)
            .await;
        assert_eq!(out.status, Status::Continue);
        if i % 50 == 49 {
            let text = metrics();
            let bytes = gauge(&text, "mailseal_dns_cache_bytes");
            assert!(bytes > 0 && bytes <= 16 * 1024, "{bytes} bytes after {i}");
        }
    }
    // The last domain is still cached: asked once, answered twice.
    let before = z.times_asked("d299.example TXT");
    let out = c.message(&env("a@d299.example"), &raw(299), 65535).await;
    assert!(out
        .inserted("Authentication-Results")
        .join("")
        .contains("spf=pass"));
    assert_eq!(z.times_asked("d299.example TXT"), before);
    // The first one was evicted: asked again.
    let out = c.message(&env("a@d0.example"), &raw(0), 65535).await;
    assert!(out
        .inserted("Authentication-Results")
        .join("")
        .contains("spf=pass"));
    assert_eq!(z.times_asked("d0.example TXT"), 2);
    c.close().await;
    let text = metrics();
    for counter in [
        "mailseal_dns_cache_lookups_total{result=\"hit\"}",
        "mailseal_dns_cache_lookups_total{result=\"miss\"}",
    ] {
        assert!(text.contains(counter), "{counter} missing:\n{text}");
    }
}
