//! End to end through a real Postfix on loopback: SMTP from an internal client and the
//! sendmail command both arrive signed; with mailseal down, mail is deferred, not lost.

use std::collections::BTreeMap;

use crate::common::postfix::Postfix;
use crate::common::sink::Sink;
use crate::common::*;

fn message(n: u32, via: &str) -> String {
    format!(
        "From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: e2e {n} via {via}\r\n\
         Message-ID: <e2e-{n}@example.com>\r\n\r\nMessage number {n}.\r\n.leading dot line\r\n"
    )
}

fn signing_config(scratch: &Scratch) -> String {
    let signing = example_com_rsa(&scratch.0, "*@example.com");
    format!("authserv_id = \"mx.test\"\n[signing]\n{signing}internal_hosts = [\"127.0.0.0/8\"]\n")
}

fn assert_signed(raw: &[u8]) {
    let text = String::from_utf8_lossy(raw);
    assert!(
        text.starts_with("DKIM-Signature:") || text.contains("\nDKIM-Signature:"),
        "{text}"
    );
    let mut records = BTreeMap::new();
    records.insert(
        "rsa._domainkey.example.com".to_string(),
        keys().rsa.record.clone(),
    );
    assert_eq!(
        dkim_check(raw, &records),
        vec![true],
        "python3-dkim on:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_signs_smtp_and_sendmail_and_defers_when_mailseal_is_down() {
    let _exclusive = crate::common::exclusive().await;
    if !Postfix::or_skip() {
        return;
    }
    let sink = Sink::start().await;
    let scratch = Scratch::new("e2e-daemon");
    let cfg = signing_config(&scratch);
    let milter_port = postfix::free_port();
    let daemon = Daemon::start_on(scratch, &cfg, milter_port).await;
    let pf_dir = Scratch::new("e2e-postfix");
    let pf = Postfix::start(&pf_dir.0, milter_port, sink.port);

    // 1. SMTP from an internal client.
    let (ok, out) = pf.swaks("alice@example.com", &[], &message(1, "smtp"));
    assert!(ok, "swaks failed:\n{out}\n{}", pf.log());
    // 2. The sendmail command (pickup → cleanup → non_smtpd_milters).
    pf.sendmail(
        "alice@example.com",
        "bob@example.org",
        message(2, "sendmail").as_bytes(),
    );
    assert!(
        sink.wait_for(2, 60).await,
        "sink got {} of 2\n{}",
        sink.count(),
        pf.log()
    );
    for m in sink.messages.lock().unwrap().iter() {
        assert_signed(m);
    }

    // 3. mailseal down: SMTP gets a 4xx; sendmail mail waits in the queue.
    let scratch = daemon.stop_keep().await;
    let (ok, out) = pf.swaks("alice@example.com", &[], &message(3, "smtp-down"));
    assert!(!ok, "accepted without the milter:\n{out}");
    assert!(out.contains("451 4.7.1"), "{out}");
    pf.sendmail(
        "alice@example.com",
        "bob@example.org",
        message(4, "sendmail-down").as_bytes(),
    );
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        sink.count(),
        2,
        "delivered while mailseal was down\n{}",
        pf.log()
    );

    // 4. mailseal back: the queued message is delivered, signed, exactly once.
    let daemon = Daemon::start_on(scratch, &cfg, milter_port).await;
    pf.flush();
    assert!(
        sink.wait_for(3, 90).await,
        "queued mail not delivered\n{}",
        pf.log()
    );
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let msgs = sink.messages.lock().unwrap().clone();
    assert_eq!(msgs.len(), 3, "{}", pf.log());
    assert!(String::from_utf8_lossy(&msgs[2]).contains("e2e 4 via sendmail-down"));
    assert_signed(&msgs[2]);
    drop(pf);
    daemon.stop().await;
}

/// a.example (reports to itself) served by a DNS server, and the `[dns]` and `[reports]`
/// sections of a daemon recording into `scratch`.
async fn reporting(scratch: &Scratch) -> (crate::common::dns::DnsServer, String) {
    use crate::common::dns::{DnsServer, Zones};
    let z = Zones::default();
    z.txt("a.example", "v=spf1 ip4:192.0.2.10 -all");
    z.txt(
        "_dmarc.a.example",
        "v=DMARC1; p=none; rua=mailto:dmarc@a.example",
    );
    let dns = DnsServer::start(z).await;
    let store = scratch.0.join("reports.sqlite");
    let text = format!(
        "[dns]\nnameservers = [\"{}\"]\n[reports]\nstore = \"{}\"\n\
         org_name = \"Example\"\nemail = \"dmarc-reports@example.com\"\n",
        dns.addr,
        store.display()
    );
    (dns, text)
}

/// DMARC aggregate reports leave through real Postfix, both by SMTP submission and by the
/// sendmail command, and come out signed by mailseal itself (the report's From is
/// example.com), so they pass DMARC at the receiver as RFC 9990 §2.5 requires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmarc_reports_leave_through_postfix_signed() {
    let _exclusive = crate::common::exclusive().await;
    if !Postfix::or_skip() {
        return;
    }
    let scratch = Scratch::new("e2e-reports");
    let (_dns, reports) = reporting(&scratch).await;
    let base = format!("{}{reports}", signing_config(&scratch));
    let sink = Sink::start().await;
    let milter_port = postfix::free_port();
    let daemon = Daemon::start_on(scratch, &base, milter_port).await;
    let pf_dir = Scratch::new("e2e-reports-postfix");
    let pf = Postfix::start(&pf_dir.0, milter_port, sink.port);
    let until = (mailseal::report::now() + 60).to_string();
    let send = |extra: &str| {
        let cfg = daemon.scratch.write("send.toml", &format!("{base}{extra}"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailseal"))
            .args(["reports", "send", "--until", &until, "-c"])
            .arg(cfg)
            .env("MAIL_CONFIG", pf.conf())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        text
    };

    // Inbound mail from a.example, then its report by SMTP to Postfix (from 127.0.0.1, an
    // internal client: mailseal signs it on the way out).
    inbound(&daemon, 3).await;
    send(&format!(
        "smtp_port = {}\nsmtp_tls = \"none\"\n",
        pf.smtp_port
    ));
    assert!(sink.wait_for(1, 60).await, "{}", pf.log());
    // More mail, and its report by the sendmail command.
    inbound(&daemon, 1).await;
    send("transport = \"sendmail\"\n");
    assert!(sink.wait_for(2, 60).await, "{}", pf.log());
    for m in sink.messages.lock().unwrap().iter() {
        let text = String::from_utf8_lossy(m);
        assert!(text.contains("Subject: Report Domain: a.example"), "{text}");
        assert!(text.contains("To: <dmarc@a.example>"), "{text}");
        assert_signed(m);
    }
    drop(pf);
    daemon.stop().await;
}

/// `n` inbound messages from a.example through the milter, stored before returning.
async fn inbound(daemon: &Daemon, n: usize) {
    let env = Envelope {
        client_ip: "192.0.2.10".into(),
        mail_from: "<x@a.example>".into(),
        ..Default::default()
    };
    for i in 0..n {
        let out = deliver(
            daemon.addr,
            &env,
            &format!("From: <x@a.example>\r\nSubject: in {i}\r\n\r\nhi\r\n"),
        )
        .await;
        assert_eq!(out.status, indymilter_test::Status::Continue);
    }
    let recorder = daemon.contexts.borrow().reports.clone().unwrap();
    let flushed =
        tokio::task::spawn_blocking(move || recorder.flush(std::time::Duration::from_secs(10)));
    assert!(flushed.await.unwrap());
}

/// Reports reach real Postfix relays over STARTTLS at the levels Postfix admins know:
/// Debian's default relay (STARTTLS with a self-signed certificate) takes them with the
/// default `opportunistic`; a relay with `smtpd_tls_security_level = encrypt` refuses plain
/// SMTP, takes `encrypt` (and its old name `required`), and with `verify` the certificate
/// must be trusted (smtp_ca_file) and name the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_reach_starttls_relays_at_each_level() {
    let _exclusive = crate::common::exclusive().await;
    if !Postfix::or_skip() {
        return;
    }
    let scratch = Scratch::new("e2e-tls-reports");
    let (_dns, reports) = reporting(&scratch).await;
    let base = format!("authserv_id = \"mx.test\"\n{reports}");
    let sink = Sink::start().await;
    let daemon = Daemon::start_in(scratch, &base).await;
    let may_dir = Scratch::new("e2e-tls-may");
    let may = Postfix::start_tls_relay(&may_dir.0, "relay-may.test", sink.port, "may");
    let enc_dir = Scratch::new("e2e-tls-encrypt");
    let enc = Postfix::start_tls_relay(&enc_dir.0, "relay-enc.test", sink.port, "encrypt");
    let until = (mailseal::report::now() + 60).to_string();
    let send = |extra: &str| {
        let cfg = daemon.scratch.write("send.toml", &format!("{base}{extra}"));
        let out = cli_blocking(
            &[
                std::ffi::OsStr::new("reports"),
                "send".as_ref(),
                "--until".as_ref(),
                until.as_ref(),
                "-c".as_ref(),
                cfg.as_os_str(),
            ],
            None,
        );
        (out.ok, out.text())
    };

    // Debian's default relay, the default setting.
    inbound(&daemon, 1).await;
    let (ok, text) = send(&format!("smtp_port = {}\n", may.smtp_port));
    assert!(ok, "{text}\n{}", may.log());
    assert!(sink.wait_for(1, 60).await, "{}", may.log());

    // A relay that requires STARTTLS.
    inbound(&daemon, 1).await;
    let (ok, text) = send(&format!(
        "smtp_port = {}\nsmtp_tls = \"none\"\n",
        enc.smtp_port
    ));
    assert!(!ok && text.contains("STARTTLS"), "{text}");
    let (ok, text) = send(&format!(
        "smtp_port = {}\nsmtp_tls = \"verify\"\n",
        enc.smtp_port
    ));
    assert!(!ok && text.contains("TLS with 127.0.0.1"), "{text}");
    let (ok, text) = send(&format!(
        "smtp_port = {}\nsmtp_tls = \"encrypt\"\n",
        enc.smtp_port
    ));
    assert!(ok, "{text}\n{}", enc.log());
    assert!(sink.wait_for(2, 60).await, "{}", enc.log());
    inbound(&daemon, 1).await;
    let (ok, text) = send(&format!(
        "smtp_port = {}\nsmtp_tls = \"required\"\n",
        enc.smtp_port
    ));
    assert!(ok, "{text}");
    assert!(sink.wait_for(3, 60).await, "{}", enc.log());
    // verify: trusted through smtp_ca_file, and the certificate names the relay.
    inbound(&daemon, 1).await;
    let (ok, text) = send(&format!(
        "smtp_host = \"localhost\"\nsmtp_port = {}\nsmtp_tls = \"verify\"\nsmtp_ca_file = \"{}\"\n",
        enc.smtp_port,
        enc_dir.0.join("cert.pem").display()
    ));
    assert!(ok, "{text}\n{}", enc.log());
    assert!(sink.wait_for(4, 60).await, "{}", enc.log());
    for m in sink.messages.lock().unwrap().iter() {
        let text = String::from_utf8_lossy(m);
        assert!(text.contains("Subject: Report Domain: a.example"), "{text}");
    }
    drop((may, enc));
    daemon.stop().await;
}
