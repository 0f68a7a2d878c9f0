//! Outbound signing over the real milter protocol against the real listener, every
//! signature checked by python3-dkim.

use std::collections::BTreeMap;

use crate::common::*;
use indymilter_test::Status;

const MSG: &str = "From: Alice <alice@example.com>\n\
To: bob@example.org\n\
Subject: Hello\n\
Date: Mon, 23 Nov 2026 10:00:00 +0000\n\
Message-ID: <1@example.com>\n\
\n\
Hi Bob,\n\
two lines.\n";

fn records() -> BTreeMap<String, String> {
    let k = keys();
    let mut m = BTreeMap::new();
    m.insert("rsa._domainkey.example.com".into(), k.rsa.record.clone());
    m.insert("ed._domainkey.example.com".into(), k.ed.record.clone());
    m.insert(
        "pk1._domainkey.example.net".into(),
        k.rsa_pkcs1.record.clone(),
    );
    m.insert("rsa._domainkey.other.example".into(), k.rsa.record.clone());
    m
}

/// A daemon signing example.com with RSA (and Ed25519 with `dual`), example.net with a
/// PKCS#1 key, and any other domain listed via `%`.
async fn daemon(extra: &str, dual: bool, canon: &str) -> Daemon {
    let k = keys();
    let scratch = Scratch::new("sign");
    let signing = signing_section(
        &scratch.0,
        &[
            ("k-rsa", "example.com", "rsa", &k.rsa.path),
            ("k-ed", "example.com", "ed", &k.ed.path),
            ("k-net", "example.net", "pk1", &k.rsa_pkcs1.path),
            ("k-any", "%", "rsa", &k.rsa.path),
        ],
        &[
            ("*@example.com", "k-rsa"),
            ("*@example.com", "k-ed"),
            ("example.net", "k-net"),
            ("*@other.example", "k-any"),
        ],
    );
    let cfg = format!(
        "authserv_id = \"mx.test\"\nmode = \"s\"\n{extra}\n[signing]\n{signing}multiple_signatures = {dual}\n\
         internal_hosts = [\"10.0.0.0/8\", \"127.0.0.1\"]\ndaemon_names = [\"ORIGINATING\"]\ncanonicalization = \"{canon}\"\n"
    );
    Daemon::start_in(scratch, &cfg).await
}

fn internal() -> Envelope {
    Envelope {
        client_ip: "10.1.2.3".into(),
        ..Default::default()
    }
}

async fn one(d: &Daemon, env: &Envelope, msg: &str, chunk: usize) -> Delivered {
    let mut c = Client::open(d.addr).await;
    c.hello(env).await;
    let out = c.message(env, msg, chunk).await;
    c.close().await;
    out
}

fn assert_verifies(out: &Delivered, expected_sigs: usize) {
    let sigs = out.inserted("DKIM-Signature");
    assert_eq!(sigs.len(), expected_sigs, "signatures: {sigs:?}");
    let results = dkim_check(&out.message, &records());
    assert_eq!(
        results,
        vec![true; expected_sigs],
        "python3-dkim on:\n{}",
        out.text()
    );
}

#[tokio::test]
async fn internal_ip_is_signed_and_verifies_for_each_canonicalization() {
    for canon in [
        "relaxed/relaxed",
        "relaxed/simple",
        "simple/simple",
        "simple/relaxed",
    ] {
        let d = daemon("", false, canon).await;
        let out = one(&d, &internal(), MSG, 65535).await;
        assert_eq!(out.status, Status::Continue);
        assert_verifies(&out, 1);
        let sig = &out.inserted("DKIM-Signature")[0];
        assert!(sig.starts_with(' '), "leading space: {sig:?}");
        assert_eq!(tag(sig, "c").as_deref(), Some(canon));
        assert_eq!(tag(sig, "d").as_deref(), Some("example.com"));
        assert_eq!(tag(sig, "a").as_deref(), Some("rsa-sha256"));
        // From is oversigned: listed once more than it occurs.
        let h = tag(sig, "h").unwrap().to_ascii_lowercase();
        assert_eq!(h.split(':').filter(|x| *x == "from").count(), 2, "h={h}");
        assert!(tag(sig, "t").is_some());
        d.stop().await;
    }
}

#[tokio::test]
async fn external_ip_is_not_signed() {
    let d = daemon("", false, "relaxed/simple").await;
    let out = one(&d, &Envelope::default(), MSG, 65535).await;
    // Verification is off in this daemon (mode = "s"): accepted untouched at end of headers.
    assert_eq!(out.status, Status::Accept);
    assert!(out.inserted("DKIM-Signature").is_empty());
    d.stop().await;
}

#[tokio::test]
async fn authenticated_external_client_is_signed() {
    let d = daemon("", false, "relaxed/simple").await;
    let env = Envelope {
        auth: Some("alice"),
        ..Default::default()
    };
    let out = one(&d, &env, MSG, 65535).await;
    assert_verifies(&out, 1);
    d.stop().await;
}

#[tokio::test]
async fn daemon_name_marks_outbound() {
    let d = daemon("", false, "relaxed/simple").await;
    let env = Envelope {
        daemon_name: "ORIGINATING",
        ..Default::default()
    };
    let out = one(&d, &env, MSG, 65535).await;
    assert_verifies(&out, 1);
    d.stop().await;
}

#[tokio::test]
async fn from_domain_not_in_table_is_accepted_unsigned() {
    let d = daemon("", false, "relaxed/simple").await;
    let msg = MSG.replace("alice@example.com", "alice@unlisted.example");
    let out = one(&d, &internal(), &msg, 65535).await;
    assert_eq!(out.status, Status::Accept);
    assert!(out.inserted("DKIM-Signature").is_empty());
    d.stop().await;
}

#[tokio::test]
async fn dual_rsa_and_ed25519() {
    let d = daemon("", true, "relaxed/relaxed").await;
    let out = one(&d, &internal(), MSG, 65535).await;
    assert_verifies(&out, 2);
    let algs: Vec<_> = out
        .inserted("DKIM-Signature")
        .iter()
        .map(|s| tag(s, "a").unwrap())
        .collect();
    assert!(
        algs.contains(&"rsa-sha256".to_string()) && algs.contains(&"ed25519-sha256".to_string()),
        "{algs:?}"
    );
    d.stop().await;
}

#[tokio::test]
async fn domain_pattern_pkcs1_key_and_percent_domain() {
    let d = daemon("", false, "relaxed/simple").await;
    let out = one(
        &d,
        &internal(),
        &MSG.replace("alice@example.com", "carol@example.net"),
        65535,
    )
    .await;
    assert_verifies(&out, 1);
    assert_eq!(
        tag(&out.inserted("DKIM-Signature")[0], "s").as_deref(),
        Some("pk1")
    );
    let out = one(
        &d,
        &internal(),
        &MSG.replace("alice@example.com", "dave@other.example"),
        65535,
    )
    .await;
    assert_verifies(&out, 1);
    assert_eq!(
        tag(&out.inserted("DKIM-Signature")[0], "d").as_deref(),
        Some("other.example")
    );
    d.stop().await;
}

#[tokio::test]
async fn envelope_sender_used_when_from_is_missing() {
    let d = daemon("", false, "relaxed/simple").await;
    let msg = "To: bob@example.org\nSubject: no from\n\nbody\n";
    let out = one(&d, &internal(), msg, 65535).await;
    assert_verifies(&out, 1);
    d.stop().await;
}

#[tokio::test]
async fn odd_headers_survive_simple_canonicalization() {
    let d = daemon("", false, "simple/simple").await;
    let msg = "From:alice@example.com\n\
Subject:\ttab-led subject\n\
X-Empty:\n\
To: folded\n\t<bob@example.org>,\n  carol@example.org\n\
Content-Type:  text/plain;\n\tcharset=utf-8\n\
\n\
body with trailing spaces   \n\n\n";
    let out = one(&d, &internal(), msg, 65535).await;
    assert_verifies(&out, 1);
    let h = tag(&out.inserted("DKIM-Signature")[0], "h")
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        h.contains("subject") && h.contains("to") && h.contains("content-type"),
        "{h}"
    );
    d.stop().await;
}

#[tokio::test]
async fn body_chunks_splitting_crlf() {
    let d = daemon("", false, "relaxed/relaxed").await;
    let body: String = (0..300)
        .map(|i| format!("line {i} with some text\n"))
        .collect();
    let msg = format!("From: alice@example.com\nSubject: chunks\n\n{body}");
    for chunk in [1, 2, 7, 64] {
        let out = one(&d, &internal(), &msg, chunk).await;
        assert_verifies(&out, 1);
    }
    d.stop().await;
}

#[tokio::test]
async fn twenty_megabyte_body() {
    let d = daemon("", false, "relaxed/simple").await;
    let line = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\n";
    let body = line.repeat(20 * 1024 * 1024 / line.len());
    let msg = format!("From: alice@example.com\nSubject: big\n\n{body}");
    let out = one(&d, &internal(), &msg, 65535).await;
    assert!(out.message.len() > 20_000_000);
    assert_verifies(&out, 1);
    d.stop().await;
}

#[tokio::test]
async fn several_messages_and_abort_on_one_connection() {
    let d = daemon("", false, "relaxed/simple").await;
    let env = internal();
    let mut c = Client::open(d.addr).await;
    c.hello(&env).await;
    for i in 0..3 {
        let msg = MSG.replace("Hello", &format!("Hello {i}"));
        let out = c.message(&env, &msg, 65535).await;
        assert_verifies(&out, 1);
    }
    // Abort half way through a message, then a new message must be clean.
    c.conn.mail(["<alice@example.com>"]).await.unwrap();
    c.conn.header("From", " mallory@example.com").await.unwrap();
    c.conn.header("Subject", " aborted").await.unwrap();
    c.conn.abort().await.unwrap();
    let out = c.message(&env, MSG, 65535).await;
    assert_verifies(&out, 1);
    assert!(!out.text().contains("aborted"));
    c.close().await;
    d.stop().await;
}

#[tokio::test]
async fn concurrent_connections() {
    let d = daemon("", false, "relaxed/simple").await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let addr = d.addr;
        tasks.push(tokio::spawn(async move {
            let env = internal();
            let mut c = Client::open(addr).await;
            c.hello(&env).await;
            let out = c
                .message(&env, &MSG.replace("Hello", &format!("Hello {i}")), 65535)
                .await;
            c.close().await;
            out
        }));
    }
    for t in tasks {
        let out = t.await.unwrap();
        assert_verifies(&out, 1);
    }
    d.stop().await;
}
