//! Bypass attempts: each way an attacker could dodge DMARC enforcement or keep a forged
//! Authentication-Results field under our name, tried over the real milter protocol against
//! the real listener, resolving through a DNS server on loopback. Every test asserts the SMTP
//! answer and the header section the MTA would store.

use std::time::{Duration, Instant};

use crate::common::dns::{DnsServer, Rr, Zones};
use crate::common::*;
use indymilter::{Actions, MacroStage, ProtoOpts};
use indymilter_test::{Status, TestConnection};
use mailseal::report::ReasonKind;
use mailseal::results::Disposition;

/// The attacker: a client whose own MAIL FROM domain passes SPF, unaligned with the From
/// domain it spoofs.
const SPOOF_IP: &str = "203.0.113.5";
const SPOOF_MAIL_FROM: &str = "<mallory@evil.example>";

fn zones() -> Zones {
    let k = keys();
    let z = Zones::default();
    z.txt("example.com", "v=spf1 ip4:192.0.2.10 -all");
    z.txt("_dmarc.example.com", "v=DMARC1; p=reject");
    z.txt("rsa._domainkey.example.com", &k.rsa.record);
    z.add("slow._domainkey.example.com", Rr::Timeout);
    z.txt("evil.example", "v=spf1 ip4:203.0.113.0/24 -all");
    z.txt("_dmarc.evil.example", "v=DMARC1; p=none");
    z.txt("quar.example", "v=spf1 -all");
    z.txt("_dmarc.quar.example", "v=DMARC1; p=quarantine");
    // exämple.com in A-label form.
    z.txt("xn--exmple-cua.com", "v=spf1 -all");
    z.txt("_dmarc.xn--exmple-cua.com", "v=DMARC1; p=reject");
    // No DMARC record; SPF whose only lookup never answers.
    z.txt("nodmarc.example", "v=spf1 a:slow.example -all");
    z.txt("tempspf.example", "v=spf1 a:slow.example -all");
    z.add("slow.example", Rr::Timeout);
    // SPF through an `a` mechanism: the A record, never AAAA, for an IPv4 client.
    z.txt("a-spf.example", "v=spf1 a:host.example -all");
    z.txt("_dmarc.a-spf.example", "v=DMARC1; p=reject");
    z.add("host.example", Rr::A("192.0.2.10".parse().unwrap()));
    z.add("host.example", Rr::Aaaa("2001:db8::10".parse().unwrap()));
    // Key names that never answer, for junk signatures.
    for i in 0..12 {
        z.add(&format!("s._domainkey.bh{i}.example"), Rr::Timeout);
    }
    z
}

/// A daemon that signs for example.com (internal 10.0.0.0/8, SMTP AUTH, daemon ORIGINATING)
/// and verifies everything else, resolving through `dns`.
async fn daemon(dns: &DnsServer, top: &str, sections: &str) -> Daemon {
    let s = Scratch::new("bypass");
    let signing = example_com_rsa(&s.0, "*@example.com");
    let cfg = format!(
        "authserv_id = \"mx.test\"\n{top}\n[signing]\n{signing}internal_hosts = [\"10.0.0.0/8\"]\n\
         daemon_names = [\"ORIGINATING\"]\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n{sections}\n",
        dns.addr
    );
    Daemon::start_in(s, &cfg).await
}

fn spoofer() -> Envelope {
    Envelope {
        client_ip: SPOOF_IP.into(),
        helo: "evil.example".into(),
        mail_from: SPOOF_MAIL_FROM.into(),
        ..Default::default()
    }
}

fn answer(out: &Delivered) -> String {
    match &out.status {
        Status::Continue | Status::Accept => "accept".into(),
        Status::Reject { message: Some(m) } | Status::Tempfail { message: Some(m) } => {
            m.to_string_lossy().into_owned()
        }
        other => format!("{other:?}"),
    }
}

/// The authserv-id an A-R value claims, read the way a downstream filter would: after CFWS
/// and comments, unquoted, without a version token or one trailing dot, lower case.
fn claimed_id(value: &str) -> String {
    let mut s = value.trim_start();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('(') {
            let mut depth = 1;
            let mut end = rest.len();
            for (i, c) in rest.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            s = &rest[end.min(rest.len())..];
        } else {
            break;
        }
    }
    let id = if let Some(rest) = s.strip_prefix('"') {
        rest.split('"').next().unwrap_or("")
    } else {
        s.split([' ', '\t', '\r', '\n', '(', ';'])
            .next()
            .unwrap_or("")
    };
    id.strip_suffix('.').unwrap_or(id).to_ascii_lowercase()
}

/// Authentication-Results fields claiming `mx.test` in the stored message.
fn ours(out: &Delivered) -> Vec<String> {
    let text = out.text();
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut fields: Vec<String> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(f) = fields.last_mut() {
                f.push('\n');
                f.push_str(line);
            }
        } else {
            fields.push(line.to_string());
        }
    }
    fields
        .into_iter()
        .filter_map(|f| {
            let (n, v) = f.split_once(':')?;
            (n.trim().eq_ignore_ascii_case("Authentication-Results") && claimed_id(v) == "mx.test")
                .then(|| v.to_string())
        })
        .collect()
}

/// Exactly one A-R under our name, and it is the one we inserted.
fn only_our_ar(out: &Delivered) -> String {
    let stamped = ours(out);
    let inserted = out.inserted("Authentication-Results");
    assert_eq!(inserted.len(), 1, "{}: {:?}", answer(out), out.actions);
    assert_eq!(stamped, inserted, "a forged A-R survived:\n{}", out.text());
    inserted[0].clone()
}

fn padding(n: usize) -> String {
    (0..n).map(|i| format!("X-Pad: {i}\r\n")).collect()
}

const BODY: &str = "\r\nHello.\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_padding_neither_skips_dmarc_nor_hides_a_forged_result() {
    let dns = DnsServer::start(zones()).await;
    let enforcing = daemon(&dns, "", "[dmarc]\nenforce = true\n").await;
    let watching = daemon(&dns, "", "").await;
    let small_cap = daemon(&dns, "", "[limits]\nmax_header_size = \"8K\"\n").await;
    let forged =
        "Authentication-Results: mx.test; dkim=pass; dmarc=pass header.from=example.com\r\n";
    let spoof = format!(
        "{forged}{}{forged}From: <ceo@example.com>\r\nSubject: pay now\r\n{BODY}",
        padding(1100)
    );
    let out = deliver(enforcing.addr, &spoofer(), &spoof).await;
    assert!(answer(&out).starts_with("550 5.7.1"), "{}", answer(&out));

    let out = deliver(watching.addr, &spoofer(), &spoof).await;
    assert_eq!(answer(&out), "accept");
    let ar = only_our_ar(&out);
    assert!(
        ar.contains("dmarc=fail") && ar.contains("header.from=example.com"),
        "{ar}"
    );

    // Bytes instead of fields: one 10 KB field past an 8 KB cap.
    let big = format!("X-Big: {}\r\n", "y".repeat(10_000));
    let spoof = format!("{big}{forged}From: <ceo@example.com>\r\nSubject: hi\r\n{BODY}");
    let out = deliver(small_cap.addr, &spoofer(), &spoof).await;
    let ar = only_our_ar(&out);
    assert!(ar.contains("dmarc=fail"), "{ar}");
    for d in [enforcing, watching, small_cap] {
        d.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_past_the_header_cap_are_not_evaluated_never_failed() {
    let dns = DnsServer::start(zones()).await;
    let enforcing = daemon(&dns, "", "[dmarc]\nenforce = true\n").await;
    let watching = daemon(&dns, "", "").await;
    let base = "From: <ceo@example.com>\r\nTo: bob@example.org\r\nSubject: invoice\r\nMessage-ID: <p1@example.com>\r\n\r\nHello.\r\n";
    let signed = signed_by_example_com(base).await;
    let (head, body) = signed.split_once("\r\n\r\n").unwrap();
    // Padding after every signed field: the signature is evaluated and passes.
    let padded_after = format!("{head}\r\n{}\r\n{body}", padding(1100));
    let out = deliver(enforcing.addr, &spoofer(), &padded_after).await;
    assert_eq!(answer(&out), "accept");
    let ar = only_our_ar(&out);
    assert!(
        ar.contains("dkim=pass") && ar.contains("dmarc=pass"),
        "{ar}"
    );

    // Padding between the signature and the fields it signs: Subject and To are not kept,
    // so the signature cannot be checked. Not a fail; DMARC cannot be decided.
    let (sig, rest) = head.split_once("\r\nFrom:").unwrap();
    let padded_before = format!("{sig}\r\n{}From:{rest}\r\n\r\n{body}", padding(1100));
    let out = deliver(watching.addr, &spoofer(), &padded_before).await;
    let ar = only_our_ar(&out);
    assert!(
        ar.contains("dkim=neutral") && !ar.contains("dkim=fail") && ar.contains("not evaluated"),
        "{ar}"
    );
    assert!(ar.contains("dmarc=none"), "{ar}");
    // Under enforce: no verdict, so fail closed (tempfail by default).
    let out = deliver(enforcing.addr, &spoofer(), &padded_before).await;
    assert!(answer(&out).starts_with("451 4.7.1"), "{}", answer(&out));
    for d in [enforcing, watching] {
        d.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_from_or_results_past_the_cap_are_refused() {
    let dns = DnsServer::start(zones()).await;
    let default = daemon(&dns, "", "").await;
    let tempfail = daemon(&dns, "", "[limits]\non_oversize = \"tempfail\"\n").await;
    let many: String = (0..101)
        .map(|i| format!("Authentication-Results: mx.test; dmarc=pass ({i})\r\n"))
        .collect();
    let raw = format!(
        "{}{many}From: <ceo@example.com>\r\nSubject: x\r\n{BODY}",
        padding(1100)
    );
    let out = deliver(default.addr, &spoofer(), &raw).await;
    assert!(answer(&out).starts_with("552 5.3.4"), "{}", answer(&out));
    let out = deliver(tempfail.addr, &spoofer(), &raw).await;
    assert!(answer(&out).starts_with("452 4.3.4"), "{}", answer(&out));
    for d in [default, tempfail] {
        d.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn author_domain_is_normalised_once() {
    let dns = DnsServer::start(zones()).await;
    let enforcing = daemon(&dns, "", "[dmarc]\nenforce = true\n").await;
    let watching = daemon(&dns, "", "").await;
    for (from, domain) in [
        ("<ceo@example.com.>", "example.com"),
        ("<ceo@EXAMPLE.COM>", "example.com"),
        ("ceo@example.com (the boss)", "example.com"),
        ("\"ceo @ home\"@example.com", "example.com"),
        ("Staff: <ceo@example.com>;", "example.com"),
        ("\"Zoë\" <ceo@exämple.com>", "xn--exmple-cua.com"),
        ("<ceo@exämple.com.>", "xn--exmple-cua.com"),
    ] {
        let raw = format!("From: {from}\r\nSubject: x\r\n{BODY}");
        let out = deliver(enforcing.addr, &spoofer(), &raw).await;
        let a = answer(&out);
        assert!(
            a.starts_with("550 5.7.1") && a.contains(domain),
            "{from}: {a} {:?}",
            out.inserted("Authentication-Results")
        );
        let out = deliver(watching.addr, &spoofer(), &raw).await;
        let ar = only_our_ar(&out);
        assert!(
            ar.contains("dmarc=fail") && ar.contains(&format!("header.from={domain}")),
            "{from}: {ar}"
        );
    }
    // Still not a domain name after normalising: permerror, and refused under enforce.
    let long = "a".repeat(64);
    for from in [
        "<ceo@.example.com>".to_string(),
        "<ceo@example..com>".to_string(),
        "<ceo@example.com..>".to_string(),
        format!("<ceo@{long}.example.com>"),
    ] {
        let raw = format!("From: {from}\r\nSubject: x\r\n{BODY}");
        let out = deliver(enforcing.addr, &spoofer(), &raw).await;
        assert!(
            answer(&out).starts_with("550 5.7.1"),
            "{from}: {}",
            answer(&out)
        );
        let out = deliver(watching.addr, &spoofer(), &raw).await;
        let ar = only_our_ar(&out);
        assert!(ar.contains("dmarc=permerror"), "{from}: {ar}");
    }
    for d in [enforcing, watching] {
        d.stop().await;
    }
}

/// Every spelling of our authserv-id an A-R reader would take as ours.
const FORGED: &[&str] = &[
    " mx.test; dmarc=pass",
    " MX.TEST.; dmarc=pass",
    " \"mx.test\"; dmarc=pass",
    " (trust me)\n\tmx.test 1; dmarc=pass",
    " mx.test.(x); dmarc=pass",
];

fn with_forgeries(from: &str) -> String {
    let mut raw = String::from("Authentication-Results: mx.test.evil; dkim=pass\r\n");
    for v in FORGED {
        raw.push_str(&format!(
            "Authentication-Results:{}\r\n",
            v.replace('\n', "\r\n")
        ));
    }
    raw.push_str(&format!(
        "From: <{from}>\r\nTo: x@example.org\r\nSubject: s\r\n{BODY}"
    ));
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_results_are_deleted_on_every_path() {
    let dns = DnsServer::start(zones()).await;
    let sv = daemon(&dns, "", "").await;
    let sign_only = daemon(&dns, "mode = \"s\"", "").await;
    let internal = Envelope {
        client_ip: "10.0.0.7".into(),
        ..Default::default()
    };
    let authenticated = Envelope {
        auth: Some("alice"),
        ..spoofer()
    };
    let originating = Envelope {
        daemon_name: "ORIGINATING",
        ..spoofer()
    };
    for (what, d, env, from) in [
        ("internal host", &sv, &internal, "a@example.com"),
        ("SMTP AUTH", &sv, &authenticated, "a@example.com"),
        ("daemon_names", &sv, &originating, "a@example.com"),
        ("no SigningTable row", &sv, &internal, "a@other.example"),
        (
            "mode = s, inbound",
            &sign_only,
            &spoofer(),
            "ceo@example.com",
        ),
    ] {
        let out = deliver(d.addr, env, &with_forgeries(from)).await;
        assert_eq!(answer(&out), "accept", "{what}");
        assert!(
            ours(&out).is_empty(),
            "{what}: forged A-R kept:\n{}",
            out.text()
        );
        assert!(
            out.text().contains("mx.test.evil; dkim=pass"),
            "{what}: another host's A-R must stay"
        );
    }
    // Inbound on the verify path: every spelling deleted, ours the only one left.
    let out = deliver(sv.addr, &spoofer(), &with_forgeries("ceo@example.com")).await;
    only_our_ar(&out);
    for d in [sv, sign_only] {
        d.stop().await;
    }
}

/// A connection stopped in the body, holding whatever it has sent.
async fn holder(addr: std::net::SocketAddr, size_hint: &str, body: Vec<u8>) -> TestConnection {
    let mut c = Client::open(addr).await;
    c.hello(&spoofer()).await;
    c.conn
        .macros(MacroStage::Mail, [("i", "HOLD")])
        .await
        .unwrap();
    let st = c.conn.mail([SPOOF_MAIL_FROM, size_hint]).await.unwrap();
    assert!(matches!(st, Status::Continue | Status::Noreply));
    for (n, v) in [("From", " <x@evil.example>"), ("Subject", " hold")] {
        c.conn.header(n, v).await.unwrap();
    }
    assert_eq!(c.conn.eoh().await.unwrap(), Status::Continue);
    for piece in body.chunks(65535) {
        c.conn.body(piece.to_vec()).await.unwrap();
    }
    c.conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_hints_cannot_exhaust_the_buffer_budget() {
    let dns = DnsServer::start(zones()).await;
    let d = daemon(
        &dns,
        "",
        "[limits]\nmax_buffered_total = \"1M\"\n[dmarc]\nenforce = true\n",
    )
    .await;
    // Twenty small messages announcing 20 MB each, held open.
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(holder(d.addr, "SIZE=20000000", b"tiny\r\n".to_vec()).await);
    }
    let spoof = format!("From: <ceo@example.com>\r\nSubject: x\r\n{BODY}");
    let out = deliver(d.addr, &spoofer(), &spoof).await;
    assert!(answer(&out).starts_with("550 5.7.1"), "{}", answer(&out));

    // Now really fill the budget: a message that cannot be buffered is still judged on
    // what DMARC needs, and one whose aligned signature cannot be checked is tempfailed.
    for _ in 0..4 {
        held.push(holder(d.addr, "SIZE=250000", vec![b'x'; 245_000]).await);
    }
    let big_body = "0123456789abcdef\r\n".repeat(8_000);
    let spoof = format!("From: <ceo@example.com>\r\nSubject: x\r\n\r\n{big_body}");
    let out = deliver(d.addr, &spoofer(), &spoof).await;
    assert!(answer(&out).starts_with("550 5.7.1"), "{}", answer(&out));
    let signed = signed_by_example_com(&format!(
        "From: <ceo@example.com>\r\nTo: b@example.org\r\nSubject: x\r\n\r\n{big_body}"
    ))
    .await;
    let out = deliver(d.addr, &spoofer(), &signed).await;
    assert!(answer(&out).starts_with("451 4.7.1"), "{}", answer(&out));
    for c in held {
        c.close().await.unwrap();
    }
    d.stop().await;
}

/// A DKIM-Signature for `d` with a correct body hash (so a verifier goes on to fetch the
/// key) and a worthless b=.
fn junk_signature(d: &str, bh: &str) -> String {
    format!(
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple; d={d}; s=s; h=From:Subject;\r\n\tbh={bh}; b=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unaligned_lookups_cannot_starve_or_push_out_the_verdict() {
    let dns = DnsServer::start(zones()).await;
    let d = daemon(
        &dns,
        "",
        "[verify]\non_dns_error = \"accept\"\ntimeout = \"3s\"\n[dmarc]\nenforce = true\n",
    )
    .await;
    let base = "From: <ceo@example.com>\r\nTo: b@example.org\r\nSubject: x\r\n\r\nHello.\r\n";
    let signed = signed_by_example_com(base).await;
    let bh = tag(signed.split("\r\nFrom:").next().unwrap(), "bh").unwrap();
    // Ten signatures whose keys never answer: their lookups cannot decide anything.
    let starving: String = (0..10)
        .map(|i| junk_signature(&format!("bh{i}.example"), &bh))
        .collect();
    let start = Instant::now();
    let out = deliver(d.addr, &spoofer(), &format!("{starving}{base}")).await;
    assert!(answer(&out).starts_with("550 5.7.1"), "{}", answer(&out));
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );

    // Ten junk signatures put in front of the real one (max_signatures = 10): the aligned
    // signature is evaluated first and carries DMARC.
    let junk: String = (0..10)
        .map(|i| junk_signature(&format!("junk{i}.example"), &bh))
        .collect();
    let out = deliver(d.addr, &spoofer(), &format!("{junk}{signed}")).await;
    assert_eq!(answer(&out), "accept");
    let ar = only_our_ar(&out);
    assert!(
        ar.contains("dkim=pass header.d=example.com") && ar.contains("dmarc=pass"),
        "{ar}"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_errors_that_cannot_change_the_verdict_do_not_tempfail() {
    let dns = DnsServer::start(zones()).await;
    let watching = daemon(&dns, "", "").await;
    let enforcing = daemon(&dns, "", "[dmarc]\nenforce = true\n").await;
    // No DMARC record: an SPF temperror changes nothing.
    let env = Envelope {
        mail_from: "<a@nodmarc.example>".into(),
        ..spoofer()
    };
    let out = deliver(
        watching.addr,
        &env,
        &format!("From: <a@nodmarc.example>\r\nSubject: x\r\n{BODY}"),
    )
    .await;
    assert_eq!(answer(&out), "accept");
    let ar = only_our_ar(&out);
    assert!(
        ar.contains("spf=temperror") && ar.contains("dmarc=none"),
        "{ar}"
    );
    // An SPF temperror for an unaligned MAIL FROM domain: DMARC fails either way.
    let env = Envelope {
        mail_from: "<x@tempspf.example>".into(),
        ..spoofer()
    };
    let spoof = format!("From: <ceo@example.com>\r\nSubject: x\r\n{BODY}");
    let out = deliver(watching.addr, &env, &spoof).await;
    assert_eq!(answer(&out), "accept");
    let ar = only_our_ar(&out);
    assert!(
        ar.contains("spf=temperror") && ar.contains("dmarc=fail"),
        "{ar}"
    );
    let out = deliver(enforcing.addr, &env, &spoof).await;
    assert!(answer(&out).starts_with("550 5.7.1"), "{}", answer(&out));
    // An unaligned signature whose key never answers, on mail from a domain without DMARC.
    let signed = signed_by_example_com(&format!(
        "From: <a@nodmarc.example>\r\nSubject: x\r\n{BODY}"
    ))
    .await;
    let bh = tag(&signed, "bh").unwrap();
    let raw = format!(
        "{}From: <a@nodmarc.example>\r\nSubject: x\r\n{BODY}",
        junk_signature("bh0.example", &bh)
    );
    let out = deliver(watching.addr, &spoofer(), &raw).await;
    assert_eq!(answer(&out), "accept");
    assert!(only_our_ar(&out).contains("dkim=temperror"));
    // An aligned signature whose key does not answer could change the verdict: 451.
    let raw = signed
        .replace("s=rsa", "s=slow")
        .replace("a@nodmarc.example", "ceo@example.com");
    let out = deliver(watching.addr, &spoofer(), &raw).await;
    assert!(answer(&out).starts_with("451 4.4.3"), "{}", answer(&out));
    for d in [watching, enforcing] {
        d.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_mapped_clients_are_normalised_at_connect() {
    let dns = DnsServer::start(zones()).await;
    let d = daemon(
        &dns,
        "",
        "[dmarc]\nenforce = true\nnever_reject = [\"203.0.113.0/24\"]\n",
    )
    .await;
    let env = Envelope {
        client_ip: "::ffff:192.0.2.10".into(),
        mail_from: "<a@a-spf.example>".into(),
        ..Default::default()
    };
    let out = deliver(
        d.addr,
        &env,
        &format!("From: <a@a-spf.example>\r\nSubject: x\r\n{BODY}"),
    )
    .await;
    assert_eq!(answer(&out), "accept");
    let ar = only_our_ar(&out);
    assert!(ar.contains("spf=pass") && ar.contains("dmarc=pass"), "{ar}");
    assert!(
        ar.contains("smtp.remote-ip=192.0.2.10") && !ar.contains("::ffff:"),
        "{ar}"
    );
    // never_reject lists the IPv4 network; the mapped client is in it.
    let env = Envelope {
        client_ip: "::ffff:203.0.113.5".into(),
        ..spoofer()
    };
    let out = deliver(
        d.addr,
        &env,
        &format!("From: <ceo@example.com>\r\nSubject: x\r\n{BODY}"),
    )
    .await;
    assert_eq!(answer(&out), "accept");
    d.stop().await;
}

/// Sign through a connection that did not negotiate SMFIP_HDR_LEADSPC: the exact header
/// bytes are unknown, so a `simple` header canonicalization is never used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_leading_space_headers_are_relaxed() {
    let dns = DnsServer::start(zones()).await;
    let d = daemon(&dns, "", "").await;
    let cfg_simple = {
        let s = Scratch::new("bypass-simple");
        let signing = example_com_rsa(&s.0, "*@example.com");
        let cfg = format!(
            "authserv_id = \"mx.test\"\n[signing]\n{signing}internal_hosts = [\"10.0.0.0/8\"]\ncanonicalization = \"simple/simple\"\n\
             [dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n",
            dns.addr
        );
        Daemon::start_in(s, &cfg).await
    };
    let open = |addr| async move {
        TestConnection::configure()
            .available_opts(ProtoOpts::all() - ProtoOpts::LEADING_SPACE)
            .available_actions(Actions::all())
            .read_timeout(Duration::from_secs(30))
            .open_tcp(addr)
            .await
            .unwrap()
    };
    let raw =
        "From: <a@example.com>\r\nTo: b@example.org\r\nSubject:  two  spaces\r\n\r\nHello.\r\n";
    // Outbound: relaxed header canonicalization, whatever the configuration says.
    let mut c = Client {
        conn: open(cfg_simple.addr).await,
    };
    let internal = Envelope {
        client_ip: "10.0.0.7".into(),
        ..Default::default()
    };
    c.hello(&internal).await;
    let out = c.message(&internal, raw, 65535).await;
    c.close().await;
    let sig = out.inserted("DKIM-Signature");
    assert_eq!(sig.len(), 1, "{:?}", out.actions);
    assert_eq!(
        tag(&sig[0], "c").as_deref(),
        Some("relaxed/simple"),
        "{}",
        sig[0]
    );
    // Inbound: a simple-header signature is not evaluated (neutral), never a fail.
    let signed = signed_by_example_com_with(raw, "canonicalization = \"simple/simple\"\n").await;
    let mut c = Client {
        conn: open(d.addr).await,
    };
    c.hello(&spoofer()).await;
    let out = c.message(&spoofer(), &signed, 65535).await;
    c.close().await;
    let ar = out.inserted("Authentication-Results");
    assert_eq!(ar.len(), 1);
    assert!(
        ar[0].contains("dkim=neutral") && ar[0].contains("not evaluated"),
        "{}",
        ar[0]
    );
    for d in [d, cfg_simple] {
        d.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversigned_names_outside_sign_headers_are_signed() {
    let k = keys();
    let s = Scratch::new("oversign");
    let signing = example_com_rsa(&s.0, "*@example.com");
    let cfg = format!(
        "authserv_id = \"mx.test\"\n[signing]\n{signing}internal_hosts = [\"10.0.0.0/8\"]\n\
         sign_headers = [\"From\", \"Subject\"]\noversign_headers = [\"From\", \"To\", \"Reply-To\"]\n"
    );
    let d = Daemon::start_in(s, &cfg).await;
    let internal = Envelope {
        client_ip: "10.0.0.7".into(),
        ..Default::default()
    };
    let raw = "From: <a@example.com>\r\nTo: b@example.org\r\nSubject: s\r\n\r\nHello.\r\n";
    let out = deliver(d.addr, &internal, raw).await;
    let sig = out.inserted("DKIM-Signature");
    assert_eq!(sig.len(), 1);
    let h: Vec<String> = tag(&sig[0], "h")
        .unwrap()
        .split(':')
        .map(|n| n.to_ascii_lowercase())
        .collect();
    assert_eq!(h.iter().filter(|n| *n == "to").count(), 2, "{h:?}");
    assert_eq!(h.iter().filter(|n| *n == "from").count(), 2, "{h:?}");
    assert_eq!(h.iter().filter(|n| *n == "reply-to").count(), 1, "{h:?}");
    let mut recs = std::collections::BTreeMap::new();
    recs.insert(
        "rsa._domainkey.example.com".to_string(),
        k.rsa.record.clone(),
    );
    assert_eq!(dkim_check(&out.message, &recs), vec![true]);
    d.stop().await;
}

/// A daemon recording DMARC evaluations into SQLite, and a way to read them back.
struct Recording {
    dns: DnsServer,
    d: Daemon,
    store: std::path::PathBuf,
}

async fn recording(extra: &str) -> Recording {
    let z = zones();
    z.txt("rep.example", "v=spf1 -all");
    z.txt(
        "_dmarc.rep.example",
        "v=DMARC1; p=reject; rua=mailto:dmarc@rep.example",
    );
    z.txt("repq.example", "v=spf1 -all");
    z.txt(
        "_dmarc.repq.example",
        "v=DMARC1; p=quarantine; rua=mailto:dmarc@repq.example",
    );
    let dns = DnsServer::start(z).await;
    let s = Scratch::new("bypass-reports");
    let store = s.0.join("reports.sqlite");
    let cfg = TestConfig::verifying(dns.addr)
        .set("reports.store", store.display().to_string())
        .set("reports.org_name", "Test")
        .set("reports.email", "dmarc-reports@receiver.test")
        .with(extra)
        .text();
    let d = Daemon::start_in(s, &cfg).await;
    Recording { dns, d, store }
}

impl Recording {
    async fn groups(&self, domain: &str) -> Vec<mailseal::report::store::Group> {
        let recorder = self.d.contexts.borrow().reports.clone().unwrap();
        let flushed = tokio::task::spawn_blocking(move || recorder.flush(Duration::from_secs(10)))
            .await
            .unwrap();
        assert!(flushed);
        let spec = mailseal::config::StoreSpec::Sqlite(self.store.clone());
        let mut store = mailseal::report::store::Store::open(&spec).unwrap();
        store.domain_groups(domain, 5000).unwrap().0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_cannot_hide_a_message_from_aggregate_reports() {
    let r = recording("[dmarc]\nenforce = true\n").await;
    for extra in [
        "Subject: Report Domain: rep.example Submitter: evil.example Report-ID: <1@evil.example>\r\n",
        "Content-Type: multipart/report; report-type=feedback-report; boundary=\"b\"\r\n",
        "Subject: plain\r\n",
    ] {
        let raw = format!("From: <ceo@rep.example>\r\n{extra}{BODY}");
        let out = deliver(r.d.addr, &spoofer(), &raw).await;
        assert!(answer(&out).starts_with("550 5.7.1"), "{}", answer(&out));
    }
    let groups = r.groups("rep.example").await;
    let total: i64 = groups.iter().map(|g| g.count).sum();
    assert_eq!(total, 3, "{groups:?}");
    assert!(
        groups.iter().all(|g| g.disposition == Disposition::Reject),
        "{groups:?}"
    );
    r.d.stop().await;
    drop(r.dns);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluations_are_recorded_after_the_edits_as_applied() {
    let r = recording("[dmarc]\nenforce = true\n").await;
    // An MTA that lets us delete but not add header fields: the edit fails, the message is
    // tempfailed, and its retry is the one that counts.
    let raw = format!("From: <ceo@rep.example>\r\nSubject: x\r\n{BODY}");
    let watching = Envelope {
        mail_from: "<a@rep.example>".into(),
        ..spoofer()
    };
    let open = |actions: Actions| {
        let addr = r.d.addr;
        async move {
            Client {
                conn: TestConnection::configure()
                    .available_opts(ProtoOpts::all())
                    .available_actions(actions)
                    .exact_leading_space(true)
                    .read_timeout(Duration::from_secs(30))
                    .open_tcp(addr)
                    .await
                    .unwrap(),
            }
        }
    };
    // rep.example is p=reject: a spoof is rejected without edits; use a passing message.
    let z = &r.dns.zones;
    z.clear();
    for (n, v) in [
        ("rep.example", "v=spf1 ip4:203.0.113.0/24 -all"),
        (
            "_dmarc.rep.example",
            "v=DMARC1; p=reject; rua=mailto:dmarc@rep.example",
        ),
        ("repq.example", "v=spf1 -all"),
        (
            "_dmarc.repq.example",
            "v=DMARC1; p=quarantine; rua=mailto:dmarc@repq.example",
        ),
    ] {
        z.txt(n, v);
    }
    let mut c = open(Actions::all() - Actions::ADD_HEADER).await;
    c.hello(&watching).await;
    let out = c.message(&watching, &raw, 65535).await;
    c.close().await;
    assert!(answer(&out).starts_with("451 4.7.1"), "{}", answer(&out));
    let out = deliver(r.d.addr, &watching, &raw).await;
    assert_eq!(answer(&out), "accept");
    let total: i64 = r.groups("rep.example").await.iter().map(|g| g.count).sum();
    assert_eq!(total, 1, "the tempfailed attempt was recorded too");

    // An MTA without the quarantine action: the hold was not applied, so it is not reported.
    let mut c = open(Actions::all() - Actions::QUARANTINE).await;
    c.hello(&spoofer()).await;
    let raw = format!("From: <ceo@repq.example>\r\nSubject: x\r\n{BODY}");
    let out = c.message(&spoofer(), &raw, 65535).await;
    c.close().await;
    assert_eq!(answer(&out), "accept");
    assert!(out
        .actions
        .actions
        .iter()
        .all(|a| !matches!(a, indymilter_test::EomAction::Quarantine { .. })));
    let groups = r.groups("repq.example").await;
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0].disposition, Disposition::None, "{groups:?}");
    assert!(
        groups[0]
            .reasons
            .iter()
            .any(|x| x.kind == ReasonKind::LocalPolicy),
        "{groups:?}"
    );
    r.d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_authserv_id_is_the_mtas_host_name() {
    let dns = DnsServer::start(zones()).await;
    let s = Scratch::new("bypass-id");
    let cfg = TestConfig::verifying(dns.addr).unset("authserv_id").text();
    let d = Daemon::start_in(s, &cfg).await;
    let mut c = Client::open(d.addr).await;
    c.conn
        .macros(MacroStage::Connect, [("j", "mx.receiver.example")])
        .await
        .unwrap();
    c.conn
        .connect(
            "client.test",
            (SPOOF_IP.parse::<std::net::IpAddr>().unwrap(), 4000),
        )
        .await
        .unwrap();
    c.conn.helo("evil.example").await.unwrap();
    let raw = format!(
        "Authentication-Results: MX.Receiver.Example.; dmarc=pass\r\nFrom: <ceo@example.com>\r\nSubject: x\r\n{BODY}"
    );
    let out = c.message(&spoofer(), &raw, 65535).await;
    c.close().await;
    let ar = out.inserted("Authentication-Results");
    assert_eq!(ar.len(), 1);
    assert!(ar[0].starts_with(" mx.receiver.example;"), "{}", ar[0]);
    assert!(
        !out.text().contains("MX.Receiver.Example."),
        "{}",
        out.text()
    );
    d.stop().await;

    // A configured id that is not a domain name is refused when verifying.
    let s = Scratch::new("bypass-id2");
    let path = s.write("m.toml", "authserv_id = \"mx\"\nmode = \"v\"\n");
    let e = mailseal::config::Config::load(&path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("authserv_id"), "{e}");
}

/// A small deterministic generator (xorshift), so a failing case can be replayed from its
/// seed (`MAILSEAL_FUZZ_SEED`).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// An adversarial header section: padding runs, folding, From fields in any case and number
/// (at least one for the p=reject domain unless `decoy`), and A-R fields under our id in any
/// spelling and position.
fn adversarial(rng: &mut Rng, decoy: bool) -> String {
    let froms = [
        "<ceo@example.com>",
        "<CEO@Example.COM.>",
        "ceo@example.com (x)",
        "\"a, b\" <ceo@example.com>",
        "Staff: ceo@example.com;",
        "<ceo@example.com",
        "=?utf-8?q?CEO?= <ceo@example.com>",
    ];
    let decoys = ["<x@evil.example>", "x@evil.example (evil)"];
    let names = ["From", "FROM", "from", "fRoM"];
    let forged = [
        "mx.test; dmarc=pass",
        "MX.TEST; dkim=pass",
        "mx.test.; spf=pass",
        "\"mx.test\"; dmarc=pass",
        "(c)\n\tmx.test 1; dmarc=pass",
        "mx.test(c); arc=pass",
        "  Mx.Test.  ; none",
    ];
    let mut fields: Vec<String> = Vec::new();
    let pieces = 2 + rng.below(6);
    let mut from_done = false;
    for _ in 0..pieces {
        match rng.below(5) {
            0 => {
                let n = [0, 10, 600, 1001, 1300][rng.below(5)];
                for i in 0..n {
                    fields.push(format!("X-Pad: {i}"));
                }
            }
            1 => {
                let v = rng.pick(&forged).replace('\n', "\r\n");
                fields.push(format!("Authentication-Results: {v}"));
            }
            2 => {
                let name = rng.pick(&names);
                let v = if decoy {
                    rng.pick(&decoys)
                } else {
                    rng.pick(&froms)
                };
                from_done = true;
                fields.push(format!("{name}: {v}"));
            }
            3 => fields.push("Authentication-Results: other.example; dmarc=pass".into()),
            _ => fields.push(format!(
                "Subject: folded\r\n\t{}",
                "w ".repeat(rng.below(50))
            )),
        }
    }
    if !from_done {
        let v = if decoy { decoys[0] } else { froms[0] };
        fields.insert(rng.below(fields.len() + 1), format!("From: {v}"));
    }
    let mut raw = fields.join("\r\n");
    raw.push_str("\r\n\r\nbody\r\n");
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversarial_header_sections_keep_both_invariants() {
    let seed: u64 = std::env::var("MAILSEAL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    let dns = DnsServer::start(zones()).await;
    let enforcing = daemon(&dns, "", "[dmarc]\nenforce = true\n").await;
    let watching = daemon(&dns, "", "").await;
    let mut rng = Rng(seed);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut cases = 0;
    while cases < 150 && Instant::now() < deadline {
        cases += 1;
        let case_seed = rng.next();
        let mut case = Rng(case_seed | 1);
        let decoy = case.below(4) == 0;
        let raw = adversarial(&mut case, decoy);
        let why = format!("case seed {case_seed} (run seed {seed})");
        // Invariant 1: nothing under our name survives but our own field.
        let out = deliver(watching.addr, &spoofer(), &raw).await;
        if answer(&out) == "accept" {
            let stamped = ours(&out);
            assert_eq!(stamped, out.inserted("Authentication-Results"), "{why}");
        }
        // Invariant 2: a spoof of the p=reject domain is never accepted under enforce.
        let out = deliver(enforcing.addr, &spoofer(), &raw).await;
        if !decoy {
            assert_ne!(answer(&out), "accept", "{why}: spoof accepted:\n{raw}");
        } else if answer(&out) == "accept" {
            assert_eq!(ours(&out), out.inserted("Authentication-Results"), "{why}");
        }
    }
    eprintln!("{cases} adversarial header sections, seed {seed}");
    for d in [enforcing, watching] {
        d.stop().await;
    }
}

/// `mailseal verify` and `sign` read a message the way Postfix does: the first line that is
/// neither a header field nor a continuation starts the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_tools_end_the_headers_where_postfix_does() {
    let dns = DnsServer::start(zones()).await;
    let s = Scratch::new("bypass-cli");
    let cfg = s.write("m.toml", &TestConfig::verifying(dns.addr).text());
    // Postfix would put "From:" in the body: the message has no From field.
    let raw =
        "Subject: x\r\nthis line is not a header field\r\nFrom: <ceo@example.com>\r\n\r\nbody\r\n";
    let out = cli(
        &[
            "verify",
            "-c",
            cfg.to_str().unwrap(),
            "--client-ip",
            SPOOF_IP,
            "--helo",
            "evil.example",
            "--mail-from",
            "mallory@evil.example",
        ],
        Some(raw.as_bytes()),
    )
    .await;
    let text = &out.stdout;
    assert!(
        text.contains("dmarc=permerror") && !text.contains("header.from=example.com"),
        "{text}"
    );
    let (fields, body) = mailseal::tools::split_message(raw.as_bytes());
    assert_eq!(fields.len(), 1);
    assert!(body.starts_with(b"this line is not a header field\r\nFrom:"));
}
