//! DMARC aggregate reports: messages through the milter (real protocol, loopback DNS), the
//! records in SQLite or a real PostgreSQL server, `mailseal reports send/show` through the
//! binary, the XML checked against the RFC 9990 schema with xmllint, and delivery to an SMTP
//! sink on loopback.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::dns::{DnsServer, Zones};
use crate::common::pg::Postgres;
use crate::common::sink::Sink;
use crate::common::*;
use indymilter_test::Status;

const SCHEMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/dmarc-aggregate-rfc9990.xsd"
);

/// A sender domain whose mail from 192.0.2.10 passes SPF, with this DMARC record.
fn sender(z: &Zones, domain: &str, dmarc: &str) {
    z.txt(domain, "v=spf1 ip4:192.0.2.10 -all");
    z.txt(&format!("_dmarc.{domain}"), dmarc);
}

fn zones() -> Zones {
    let z = Zones::default();
    // a.example: reports to itself; sub.a.example has no record of its own.
    z.txt("a.example", "v=spf1 ip4:192.0.2.10 -all");
    z.txt("sub.a.example", "v=spf1 ip4:192.0.2.10 -all");
    z.txt(
        "_dmarc.a.example",
        "v=DMARC1; p=reject; rua=mailto:dmarc@a.example",
    );
    // b.example: an external destination that authorizes it, with a size limit.
    sender(
        &z,
        "b.example",
        "v=DMARC1; p=none; rua=mailto:agg@rua.test!10m",
    );
    z.txt("b.example._report._dmarc.rua.test", "v=DMARC1");
    // c.example: an external destination that does not authorize it.
    sender(
        &z,
        "c.example",
        "v=DMARC1; p=quarantine; rua=mailto:victim@unauth.test",
    );
    // d.example: DMARC without rua: nothing is recorded.
    z.txt("d.example", "v=spf1 ip4:192.0.2.10 -all");
    z.txt("_dmarc.d.example", "v=DMARC1; p=reject");
    z
}

fn config(dns: &DnsServer, store: &str, extra: &str) -> String {
    TestConfig::verifying(dns.addr)
        .set("reports.store", store)
        .set("reports.org_name", "Test Receiver")
        .set("reports.email", "dmarc-reports@receiver.test")
        .with(&format!("[reports]\n{extra}"))
        .text()
}

fn env(ip: &'static str, mail_from: &str) -> Envelope {
    Envelope {
        client_ip: ip.into(),
        helo: "client.example".into(),
        mail_from: format!("<{mail_from}>"),
        ..Default::default()
    }
}

fn msg(from: &str, subject: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: bob@receiver.test\r\nSubject: {subject}\r\nMessage-ID: <r@x>\r\n\r\nHello.\r\n"
    )
}

/// The traffic of one "day": (client, from address, how many).
const TRAFFIC: &[(&str, &str, usize)] = &[
    ("192.0.2.10", "alice@a.example", 3),
    ("198.51.100.7", "mallory@a.example", 2),
    ("192.0.2.10", "news@sub.a.example", 1),
    ("192.0.2.10", "bob@b.example", 2),
    ("192.0.2.10", "carol@c.example", 1),
    ("192.0.2.10", "dave@d.example", 1),
];

async fn send_traffic(d: &Daemon) {
    for (ip, from, n) in TRAFFIC {
        for _ in 0..*n {
            let out = deliver(d.addr, &env(ip, from), &msg(from, "hello")).await;
            assert_eq!(out.status, Status::Continue, "{from}: {out:?}");
        }
    }
    // A DMARC report arriving here counts like any other message: its Subject and
    // Content-Type are the sender's to choose, so they cannot hide it from reports.
    let out = deliver(
        d.addr,
        &env("192.0.2.10", "alice@a.example"),
        &msg(
            "alice@a.example",
            "Report Domain: receiver.test Submitter: a.example Report-ID: <1@a.example>",
        ),
    )
    .await;
    assert_eq!(out.status, Status::Continue);
}

/// Wait until everything the daemon queued is in the store.
async fn flush(d: &Daemon) {
    let recorder = d.contexts.borrow().reports.clone().expect("recording");
    let ok = tokio::task::spawn_blocking(move || recorder.flush(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(ok, "report writer flushed");
}

fn mailseal(config: &Path, args: &[&str]) -> (bool, String) {
    let mut all: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    all.extend([std::ffi::OsStr::new("-c"), config.as_os_str()]);
    let o = cli_blocking(&all, None);
    (o.ok, o.text())
}

fn gunzip(data: &[u8]) -> String {
    let mut s = String::new();
    flate2::read::GzDecoder::new(data)
        .read_to_string(&mut s)
        .unwrap();
    s
}

fn validate(xml_path: &Path) {
    let out = Command::new("xmllint")
        .args(["--noout", "--schema", SCHEMA])
        .arg(xml_path)
        .output()
        .expect("xmllint (libxml2-utils) is installed");
    assert!(
        out.status.success(),
        "{} does not validate: {}",
        xml_path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn field<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    xml.split(&open)
        .skip(1)
        .filter_map(|s| s.split(&close).next())
        .collect()
}

/// One `record` of a report, as the domain owner reads it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rec {
    source_ip: String,
    count: u64,
    header_from: String,
    disposition: String,
    dkim: String,
    spf: String,
    reasons: Vec<String>,
}

fn rec(ip: &str, count: u64, from: &str, dkim: &str, spf: &str, reasons: &[&str]) -> Rec {
    Rec {
        source_ip: ip.into(),
        count,
        header_from: from.into(),
        disposition: "none".into(),
        dkim: dkim.into(),
        spf: spf.into(),
        reasons: reasons.iter().map(|r| r.to_string()).collect(),
    }
}

fn records(xml: &str) -> Vec<Rec> {
    let mut out: Vec<_> = field(xml, "record")
        .into_iter()
        .map(|r| {
            let pe = field(r, "policy_evaluated")[0];
            Rec {
                source_ip: field(r, "source_ip")[0].to_string(),
                count: field(r, "count")[0].parse().unwrap(),
                header_from: field(r, "header_from")[0].to_string(),
                disposition: field(pe, "disposition")[0].to_string(),
                dkim: field(pe, "dkim")[0].to_string(),
                spf: field(pe, "spf")[0].to_string(),
                reasons: field(pe, "type").iter().map(|s| s.to_string()).collect(),
            }
        })
        .collect();
    out.sort();
    out
}

/// a.example's rows: `own` messages from its SPF-listed client.
fn expected_a(own: u64) -> Vec<Rec> {
    vec![
        rec("192.0.2.10", 1, "sub.a.example", "fail", "pass", &[]),
        rec("192.0.2.10", own, "a.example", "fail", "pass", &[]),
        rec(
            "198.51.100.7",
            2,
            "a.example",
            "fail",
            "fail",
            &["local_policy"],
        ),
    ]
}

fn reports_in(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.file_name().unwrap().to_string_lossy().into_owned(), p)
        })
        .collect();
    v.sort();
    v
}

fn until_arg() -> String {
    // Records are from "today": report everything up to a minute from now.
    (mailseal::report::now() + 60).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_dry_run_schema_and_sending() {
    let dns = DnsServer::start(zones()).await;
    let sink = Sink::start().await;
    let scratch = Scratch::new("reports");
    let store = scratch.0.join("reports.sqlite");
    let cfg = config(
        &dns,
        &store.display().to_string(),
        &format!(
            "smtp_host = \"127.0.0.1\"\nsmtp_port = {}\nsmtp_tls = \"none\"\nsuppress = [\"suppressed.test\"]\n",
            sink.port
        ),
    );
    let d = Daemon::start_in(scratch, &cfg).await;
    send_traffic(&d).await;
    flush(&d).await;
    let config_path = d.scratch.0.join("mailseal.toml");

    // What was collected: 10 messages (the report among them) for 3 policy domains;
    // d.example (no rua=): none.
    let (ok, show) = mailseal(&config_path, &["reports", "show"]);
    assert!(ok, "{show}");
    let lines: Vec<&str> = show.lines().collect();
    let line = |d: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("{d} ")))
            .unwrap_or_else(|| panic!("{d} in {show}"))
            .split_whitespace()
            .take(6)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("a.example"), "a.example 7 5 0 2 7", "{show}");
    assert_eq!(line("b.example"), "b.example 2 2 0 1 2", "{show}");
    assert_eq!(line("c.example"), "c.example 1 1 0 1 1", "{show}");
    assert!(!show.contains("d.example"), "{show}");
    let (ok, detail) = mailseal(&config_path, &["reports", "show", "--domain", "a.example"]);
    assert!(
        ok && detail.contains("198.51.100.7") && detail.contains("sub.a.example"),
        "{detail}"
    );

    // Dry run: one file per policy domain, named per RFC 9990, valid against the schema,
    // with the right records and counts; nothing is claimed or sent.
    let out_dir = d.scratch.0.join("out");
    let until = until_arg();
    let (ok, text) = mailseal(
        &config_path,
        &[
            "reports",
            "send",
            "--dry-run",
            "--out",
            out_dir.to_str().unwrap(),
            "--until",
            &until,
        ],
    );
    assert!(ok, "{text}");
    assert!(text.contains("would send to dmarc@a.example"), "{text}");
    assert!(text.contains("would send to agg@rua.test"), "{text}");
    assert!(
        text.contains("victim@unauth.test: external destination not authorized"),
        "{text}"
    );
    let files = reports_in(&out_dir);
    assert_eq!(files.len(), 3, "{files:?}");
    for (name, path) in &files {
        let parts: Vec<&str> = name.strip_suffix(".xml.gz").unwrap().split('!').collect();
        assert_eq!(parts.len(), 5, "{name}");
        assert_eq!(parts[0], "receiver.test");
        let begin: i64 = parts[2].parse().unwrap();
        let end: i64 = parts[3].parse().unwrap();
        assert!(begin < end && begin % 86_400 == 0, "{name}");
        assert!(
            parts[4].chars().all(|c| c.is_ascii_alphanumeric()),
            "{name}"
        );
        let xml = gunzip(&std::fs::read(path).unwrap());
        let xml_path = path.with_extension("");
        std::fs::write(&xml_path, &xml).unwrap();
        validate(&xml_path);
        assert_eq!(
            field(&xml, "domain")[0],
            parts[1],
            "policy domain of {name}"
        );
        assert_eq!(field(&xml, "begin")[0], parts[2]);
        assert_eq!(field(&xml, "end")[0], parts[3]);
        assert_eq!(field(&xml, "org_name")[0], "Test Receiver");
    }
    let xml_of = |domain: &str| {
        let (_, p) = files
            .iter()
            .find(|(n, _)| n.split('!').nth(1) == Some(domain))
            .unwrap();
        gunzip(&std::fs::read(p).unwrap())
    };
    let a = xml_of("a.example");
    // Three messages and the report that arrived from a.example.
    assert_eq!(records(&a), expected_a(4), "{a}");
    assert_eq!(field(&a, "p")[0], "reject");
    let b = xml_of("b.example");
    assert_eq!(
        records(&b),
        [rec("192.0.2.10", 2, "b.example", "fail", "pass", &[])]
    );
    assert!(
        sink.messages.lock().unwrap().is_empty(),
        "a dry run sends nothing"
    );

    // Send for real: a.example to itself, b.example to its authorized external address,
    // c.example to nobody.
    let (ok, text) = mailseal(&config_path, &["reports", "send", "--until", &until]);
    assert!(ok, "{text}");
    assert!(sink.wait_for(2, 10).await, "{text}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.count(), 2, "{text}");
    let envelopes = sink.envelopes.lock().unwrap().clone();
    let mut rcpts: Vec<String> = envelopes.iter().flat_map(|e| e.1.clone()).collect();
    rcpts.sort();
    assert_eq!(rcpts, ["agg@rua.test", "dmarc@a.example"]);
    assert!(envelopes
        .iter()
        .all(|e| e.0 == "dmarc-reports@receiver.test"));
    for m in sink.messages.lock().unwrap().iter() {
        let text = String::from_utf8_lossy(m);
        assert!(text.contains("Subject: Report Domain: "), "{text}");
        assert!(text.contains("Submitter: receiver.test"), "{text}");
        assert!(text.contains("Content-Type: application/gzip"), "{text}");
        // The attachment decodes to the same report as the dry run (same records).
        let xml = attached_xml(&text);
        let domain = field(&xml, "domain")[0];
        assert_eq!(records(&xml), records(&xml_of(domain)), "{domain}");
        let id = field(&xml, "report_id")[0];
        assert!(text.contains(&format!("Report-ID: <{id}>")), "{text}");
    }
    // Sending again finds nothing new: no duplicates.
    let (ok, text) = mailseal(&config_path, &["reports", "send", "--until", &until]);
    assert!(ok && text.contains("no reports to send"), "{text}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.count(), 2);
    let (_, show) = mailseal(&config_path, &["reports", "show"]);
    assert!(show.contains("sent (attempts 1)"), "{show}");
    assert!(show.contains("undeliverable"), "{show}");
    d.stop().await;
}

/// The report XML attached (base64, gzip) to a report message.
fn attached_xml(message: &str) -> String {
    let b64: String = message
        .split("Content-Disposition: attachment")
        .nth(1)
        .unwrap()
        .split("\r\n\r\n")
        .nth(1)
        .unwrap()
        .split("--")
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    gunzip(&b64_decode(&b64))
}

fn b64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// A report that could not be delivered stays pending and goes out at the next run, with
/// the same file name; the SMTP AUTH credentials come from the password file, and go only over
/// TLS (here to a loopback relay; elsewhere only with smtp_tls = "verify").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_delivery_is_retried_with_auth() {
    let dns = DnsServer::start(zones()).await;
    let scratch = Scratch::new("reports-retry");
    let store = scratch.0.join("reports.sqlite");
    let pw = scratch.write("relay.password", "s3cret\n");
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    // Nothing listens on this port yet.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let relay = format!(
        "smtp_port = {port}\nsmtp_tls = \"opportunistic\"\nsmtp_user = \"reporter\"\nsmtp_password_file = \"relay.password\"\n"
    );
    let d = Daemon::start_in(scratch, &config(&dns, &store.display().to_string(), &relay)).await;
    for _ in 0..2 {
        let out = deliver(
            d.addr,
            &env("192.0.2.10", "x@b.example"),
            &msg("x@b.example", "hi"),
        )
        .await;
        assert_eq!(out.status, Status::Continue);
    }
    flush(&d).await;
    let config_path = d.scratch.0.join("mailseal.toml");
    let until = until_arg();
    let (ok, text) = mailseal(&config_path, &["reports", "send", "--until", &until]);
    assert!(!ok, "a failed delivery exits 1: {text}");
    assert!(text.contains("connect to 127.0.0.1"), "{text}");
    let first_name = text.lines().next().unwrap().to_string();

    // The relay is back without STARTTLS: the password is not sent in clear.
    let plain = Sink::start_on(port).await;
    let (ok, text) = mailseal(&config_path, &["reports", "send", "--until", &until]);
    assert!(
        !ok && text.contains("the password is sent only over TLS"),
        "{text}"
    );
    assert_eq!(plain.count(), 0);

    // A relay with STARTTLS (a self-signed certificate): the same report goes out.
    let certs = Scratch::new("reports-retry-tls");
    let (cert, key) = self_signed(&certs.0, "localhost");
    let sink = Sink::start_tls_on(
        0,
        &std::fs::read(cert).unwrap(),
        &std::fs::read(key).unwrap(),
    )
    .await;
    let text = std::fs::read_to_string(&config_path).unwrap();
    let config_path = d.scratch.write(
        "tls.toml",
        &text.replace(
            &format!("smtp_port = {port}"),
            &format!("smtp_port = {}", sink.port),
        ),
    );
    let (ok, text) = mailseal(&config_path, &["reports", "send", "--until", &until]);
    assert!(ok, "{text}");
    assert_eq!(
        text.lines().next().unwrap(),
        first_name,
        "same report, same file name"
    );
    assert!(sink.wait_for(1, 10).await);
    let env = sink.envelopes.lock().unwrap()[0].clone();
    assert_eq!(env.1, ["agg@rua.test"]);
    let token = b64_decode(env.2.as_deref().expect("AUTH PLAIN used"));
    assert_eq!(token, b"\0reporter\0s3cret");
    assert!(env.3, "the password went over STARTTLS");
    d.stop().await;
}

/// A store that cannot be written loses report data, never mail: every message is answered
/// at once with the usual verdict, and the loss is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_store_never_delays_or_fails_mail() {
    let dns = DnsServer::start(zones()).await;
    let scratch = Scratch::new("reports-broken");
    // The store's parent is a regular file: it can never be created, even by root.
    let blocker = scratch.write("not-a-dir", "x");
    let store = blocker.join("reports.sqlite");
    let d = Daemon::start_in(scratch, &config(&dns, &store.display().to_string(), "")).await;
    let before = lost(&d);
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let t = Instant::now();
        let from = if i % 2 == 0 {
            "a@a.example"
        } else {
            "b@b.example"
        };
        let out = deliver(d.addr, &env("192.0.2.10", from), &msg(from, "hi")).await;
        assert_eq!(out.status, Status::Continue);
        let ar = out.inserted("Authentication-Results");
        assert!(ar[0].contains("spf=pass"), "{ar:?}");
        slowest = slowest.max(t.elapsed());
    }
    flush(&d).await;
    let elapsed = start.elapsed();
    assert!(
        slowest < Duration::from_secs(2),
        "slowest message took {slowest:?}"
    );
    assert_eq!(lost(&d) - before, 20, "every lost record is counted");
    eprintln!("20 messages with a broken store: {elapsed:?}, slowest {slowest:?}");
    d.stop().await;
}

fn lost(d: &Daemon) -> u64 {
    let text = d.contexts.borrow().services.metrics.render();
    text.lines()
        .find(|l| l.starts_with("mailseal_report_records_total{outcome=\"lost\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Two MX hosts share one PostgreSQL database: both record, both run `reports send` at the
/// same time, and each policy domain gets exactly one report covering both hosts' mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_shared_by_two_hosts() {
    let _exclusive = crate::common::exclusive().await;
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let dns = DnsServer::start(zones()).await;
    let sink = Sink::start().await;
    let relay = format!("smtp_port = {}\nsmtp_tls = \"none\"\n", sink.port);
    let mx1 = Daemon::start_in(Scratch::new("pg-mx1"), &config(&dns, &pg.url(), &relay)).await;
    let mx2 = Daemon::start_in(Scratch::new("pg-mx2"), &config(&dns, &pg.url(), &relay)).await;
    // a.example traffic split across the two hosts; b.example only on mx2.
    for (i, (ip, from, n)) in TRAFFIC.iter().enumerate() {
        let d = if i % 2 == 0 { &mx1 } else { &mx2 };
        for _ in 0..*n {
            let out = deliver(d.addr, &env(ip, from), &msg(from, "hello")).await;
            assert_eq!(out.status, Status::Continue);
        }
    }
    flush(&mx1).await;
    flush(&mx2).await;
    let until = until_arg();
    let c1 = mx1.scratch.0.join("mailseal.toml");
    let c2 = mx2.scratch.0.join("mailseal.toml");
    let (u1, u2) = (until.clone(), until.clone());
    let t1 = std::thread::spawn(move || mailseal(&c1, &["reports", "send", "--until", &u1]));
    let t2 = std::thread::spawn(move || mailseal(&c2, &["reports", "send", "--until", &u2]));
    let (ok1, text1) = t1.join().unwrap();
    let (ok2, text2) = t2.join().unwrap();
    assert!(ok1 && ok2, "{text1}\n{text2}");
    assert!(sink.wait_for(2, 10).await, "{text1}\n{text2}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.count(), 2, "one report per domain:\n{text1}\n{text2}");
    for m in sink.messages.lock().unwrap().iter() {
        let text = String::from_utf8_lossy(m);
        let xml = attached_xml(&text);
        let path = mx1
            .scratch
            .0
            .join(format!("{}.xml", field(&xml, "domain")[0]));
        std::fs::write(&path, &xml).unwrap();
        validate(&path);
        if field(&xml, "domain")[0] == "a.example" {
            assert_eq!(records(&xml), expected_a(3), "{xml}");
        }
    }
    let (ok, show) = mailseal(&mx1.scratch.0.join("mailseal.toml"), &["reports", "show"]);
    assert!(
        ok && show.contains("a.example") && show.contains("sent"),
        "{show}"
    );
    mx1.stop().await;
    mx2.stop().await;
    drop(pg);
}

/// SIGTERM: evaluations still queued for the writer are stored before the daemon exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stores_what_is_queued() {
    let dns = DnsServer::start(zones()).await;
    let s = Scratch::new("reports-term");
    let port = crate::common::postfix::free_port();
    let store = s.0.join("reports.sqlite");
    let cfg = s.write(
        "mailseal.toml",
        &format!(
            "socket = \"inet:{port}@127.0.0.1\"\n{}",
            config(&dns, &store.display().to_string(), "")
        ),
    );
    let mut d = crate::common::process::Running::started(&cfg, &[]);
    for _ in 0..5 {
        let out = deliver(
            ([127, 0, 0, 1], port).into(),
            &env("192.0.2.10", "x@a.example"),
            &msg("x@a.example", "hi"),
        )
        .await;
        assert_eq!(out.status, Status::Continue);
    }
    d.signal(libc::SIGTERM);
    let logs = tokio::task::spawn_blocking(move || d.wait_all_logs())
        .await
        .unwrap();
    let spec = mailseal::config::StoreSpec::Sqlite(store);
    let mut st = mailseal::report::store::Store::open(&spec).unwrap();
    assert_eq!(st.count().unwrap(), 5, "{logs}");
}

/// Failure reports (RFC 9991, off by default): an ARF report per failing message to the
/// `ruf=` address, headers only, at most `failure_rate` per domain per hour; never to an
/// unauthorized external address, never for a passing message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_reports_are_arf_rate_limited_and_authorized() {
    let z = zones();
    sender(
        &z,
        "f.example",
        "v=DMARC1; p=reject; ruf=mailto:ruf@f.example",
    );
    sender(
        &z,
        "g.example",
        "v=DMARC1; p=reject; ruf=mailto:x@elsewhere.test",
    );
    let dns = DnsServer::start(z).await;
    let sink = Sink::start().await;
    let cfg = TestConfig::verifying(dns.addr)
        .set("reports.org_name", "Test Receiver")
        .set("reports.email", "dmarc-reports@receiver.test")
        .set("reports.failure_reports", true)
        .set("reports.failure_rate", 2)
        .set("reports.smtp_port", i64::from(sink.port))
        .set("reports.smtp_tls", "none")
        .text();
    let d = Daemon::start(&cfg).await;
    // Passing mail: no report (fo=0, the default: only when DMARC fails).
    let out = deliver(
        d.addr,
        &env("192.0.2.10", "ok@f.example"),
        &msg("ok@f.example", "fine"),
    )
    .await;
    assert_eq!(out.status, Status::Continue);
    for i in 0..4 {
        let out = deliver(
            d.addr,
            &env("198.51.100.7", "spoof@f.example"),
            &msg("spoof@f.example", &format!("spoof {i}")),
        )
        .await;
        assert_eq!(out.status, Status::Continue);
    }
    // g.example's destination is not authorized.
    let out = deliver(
        d.addr,
        &env("198.51.100.7", "x@g.example"),
        &msg("x@g.example", "g"),
    )
    .await;
    assert_eq!(out.status, Status::Continue);
    assert!(sink.wait_for(2, 10).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.count(), 2, "rate limit of 2 per hour");
    // A reload (a new configuration snapshot) keeps the hour's count.
    {
        let old = d.contexts.borrow().clone();
        let cfg = mailseal::config::Config::load(&d.scratch.0.join("mailseal.toml")).unwrap();
        let new = mailseal::pipeline::context::Context::new(cfg, old.services.clone())
            .unwrap()
            .recording(Some(&old));
        d.contexts.send(std::sync::Arc::new(new)).unwrap();
    }
    for i in 0..2 {
        let out = deliver(
            d.addr,
            &env("198.51.100.7", "spoof@f.example"),
            &msg("spoof@f.example", &format!("after reload {i}")),
        )
        .await;
        assert_eq!(out.status, Status::Continue);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.count(), 2, "the limit survives a reload");
    let envs = sink.envelopes.lock().unwrap().clone();
    assert!(envs.iter().all(|e| e.1 == ["ruf@f.example"]), "{envs:?}");
    for m in sink.messages.lock().unwrap().iter() {
        let text = String::from_utf8_lossy(m);
        assert!(
            text.contains("Content-Type: multipart/report; report-type=feedback-report"),
            "{text}"
        );
        assert!(text.contains("Feedback-Type: auth-failure"), "{text}");
        assert!(text.contains("Auth-Failure: dmarc"), "{text}");
        assert!(text.contains("Source-IP: 198.51.100.7"), "{text}");
        assert!(text.contains("Reported-Domain: f.example"), "{text}");
        assert!(text.contains("Authentication-Results: mx.test;"), "{text}");
        assert!(text.contains("dmarc=fail"), "{text}");
        assert!(text.contains("Content-Type: text/rfc822-headers"), "{text}");
        assert!(
            text.contains("Subject: spoof "),
            "the original header section: {text}"
        );
        assert!(!text.contains("Hello."), "never the body: {text}");
    }
    d.stop().await;
}

/// A daemon recording into a new SQLite store, with these `[reports]` settings.
async fn recording(z: Zones, tag: &str, extra: &str) -> (DnsServer, Daemon) {
    let dns = DnsServer::start(z).await;
    let scratch = Scratch::new(tag);
    let store = scratch.0.join("reports.sqlite");
    let d = Daemon::start_in(scratch, &config(&dns, &store.display().to_string(), extra)).await;
    (dns, d)
}

/// One message from `ip`, From and MAIL FROM `from`, accepted and stored.
async fn one(d: &Daemon, ip: &'static str, from: &str) {
    let out = deliver(d.addr, &env(ip, from), &msg(from, "hi")).await;
    assert_eq!(out.status, Status::Continue);
}

/// `reports send` with these arguments after it, on the daemon's configuration.
fn send(d: &Daemon, args: &[&str]) -> (bool, String) {
    let mut all = vec!["reports", "send"];
    all.extend_from_slice(args);
    mailseal(&d.scratch.0.join("mailseal.toml"), &all)
}

/// RFC 9990 §3: a destination is one mailbox; inside the policy domain's organization it
/// needs no authorization record (the organizational domains found by the RFC 9989 tree
/// walk); outside it, `<policy>._report._dmarc.<destination>` must say v=DMARC1. An
/// address smuggled through percent-encoding is refused, whatever its last `@`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_are_single_mailboxes_of_the_organization_or_authorized() {
    let z = Zones::default();
    // Percent-encoded: decodes to "victim@target.example,box@e.example".
    sender(
        &z,
        "e.example",
        "v=DMARC1; p=none; rua=mailto:victim%40target.example%2Cbox@e.example,mailto:ok@e.example",
    );
    // A subdomain's policy reporting to its organizational domain and to a sibling.
    sender(
        &z,
        "mail.f.example",
        "v=DMARC1; p=none; rua=mailto:dmarc@f.example,mailto:agg@reports.f.example",
    );
    z.txt("_dmarc.f.example", "v=DMARC1; p=reject");
    let (_dns, d) = recording(z, "reports-dest", "").await;
    for from in ["a@e.example", "a@mail.f.example"] {
        one(&d, "192.0.2.10", from).await;
    }
    flush(&d).await;
    let (ok, text) = send(&d, &["--dry-run", "--until", &until_arg()]);
    assert!(ok, "{text}");
    assert!(text.contains("would send to ok@e.example"), "{text}");
    assert!(
        text.contains("victim@target.example,box@e.example: not a single mailbox"),
        "{text}"
    );
    assert!(!text.contains("would send to victim"), "{text}");
    assert!(text.contains("would send to dmarc@f.example"), "{text}");
    assert!(
        text.contains("would send to agg@reports.f.example"),
        "{text}"
    );
    d.stop().await;
}

/// Failure reports follow `fo=` as RFC 9991 defines it (`d`: a DKIM signature failed; `s`:
/// SPF failed; whatever the alignment), are never sent under a record found at a public
/// suffix level (`psd=y`), and the copied header section has our recipients' local parts
/// redacted (To, Cc, Delivered-To, X-Original-To, `for <...>` in Received).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_reports_follow_fo_skip_psd_and_redact_recipients() {
    let z = Zones::default();
    // fo=d: reported only when a signature failed.
    sender(
        &z,
        "d.example",
        "v=DMARC1; p=none; fo=d; ruf=mailto:ruf@d.example",
    );
    // fo=s: reported only when SPF failed.
    sender(
        &z,
        "s.example",
        "v=DMARC1; p=none; fo=s; ruf=mailto:ruf@s.example",
    );
    z.txt("other.example", "v=spf1 ip4:198.51.100.7 -all");
    // A record at a public-suffix level.
    z.txt(
        "_dmarc.psd",
        "v=DMARC1; p=reject; psd=y; fo=1; ruf=mailto:ruf@psd",
    );
    z.txt("x.psd", "v=spf1 -all");
    let dns = DnsServer::start(z).await;
    let sink = Sink::start().await;
    let cfg = TestConfig::verifying(dns.addr)
        .set("reports.org_name", "Test Receiver")
        .set("reports.email", "dmarc-reports@receiver.test")
        .set("reports.failure_reports", true)
        .set("reports.smtp_port", i64::from(sink.port))
        .set("reports.smtp_tls", "none")
        .text();
    let d = Daemon::start(&cfg).await;
    let raw = |from: &str| {
        format!(
            "Received: from x (x [198.51.100.7])\r\n\tby mx.receiver.test with ESMTP id 1\r\n\tfor <bob@receiver.test>; Mon, 30 Nov 2026 10:00:00 +0000\r\n\
             From: <{from}>\r\nTo: Bob <bob@receiver.test>, carol@receiver.test\r\nCc: \"Dave\" <dave.d@receiver.test>\r\n\
             Delivered-To: bob@receiver.test\r\nX-Original-To: bob@receiver.test\r\nSubject: failing\r\nMessage-ID: <f@x>\r\n\r\nHello.\r\n"
        )
    };
    for (ip, mail_from, from) in [
        // DMARC fails, no signature at all: fo=d has nothing to report.
        ("198.51.100.7", "x@d.example", "x@d.example"),
        // SPF fails: fo=s reports.
        ("198.51.100.7", "x@s.example", "x@s.example"),
        // DMARC fails, SPF passed (for another domain): fo=s has nothing to report.
        ("198.51.100.7", "x@other.example", "x@s.example"),
        // Under a psd=y record: never.
        ("198.51.100.7", "x@x.psd", "x@x.psd"),
    ] {
        let out = deliver(d.addr, &env(ip, mail_from), &raw(from)).await;
        assert_eq!(out.status, Status::Continue);
    }
    assert!(sink.wait_for(1, 10).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let envs = sink.envelopes.lock().unwrap().clone();
    assert_eq!(envs.len(), 1, "{envs:?}");
    assert_eq!(envs[0].1, ["ruf@s.example"]);
    let text = String::from_utf8_lossy(&sink.messages.lock().unwrap()[0]).into_owned();
    let copied = &text[text.find("text/rfc822-headers").unwrap()..];
    for name in ["bob@", "carol@", "dave.d@"] {
        assert!(!copied.contains(name), "{name} in {copied}");
    }
    for redacted in [
        "To: Bob <redacted@receiver.test>, redacted@receiver.test",
        "Cc: \"Dave\" <redacted@receiver.test>",
        "Delivered-To: redacted@receiver.test",
        "X-Original-To: redacted@receiver.test",
        "for <redacted@receiver.test>;",
        "From: <x@s.example>",
    ] {
        assert!(copied.contains(redacted), "{redacted:?} not in {copied}");
    }
}

/// A PostgreSQL store's secrets (a password in the URL's user part or its `?password=`, or
/// in a key=value connection string) are never printed: not by check-config, not in errors,
/// not by `reports show`.
#[test]
fn postgres_secrets_are_never_shown() {
    let s = Scratch::new("pg-secrets");
    for (n, store) in [
        "postgres://u:SECRET1@127.0.0.1:1/db",
        "postgres://u@127.0.0.1:1/db?password=SECRET2&sslmode=disable",
        "postgresql://u@127.0.0.1:1/db?sslpassword=SECRET3&password=SECRET4",
        "host=127.0.0.1 port=1 user=u password=SECRET5 dbname=db",
        "host=127.0.0.1 port=1 user=u password='SECRET 6' dbname=db",
    ]
    .iter()
    .enumerate()
    {
        let cfg = s.write(
            &format!("m{n}.toml"),
            &format!(
                "mode = \"v\"\n[reports]\nstore = \"{}\"\norg_name = \"x\"\nemail = \"d@example.net\"\n",
                store.replace('"', "\\\"")
            ),
        );
        for args in [
            vec!["check-config", "-c"],
            vec!["reports", "show", "-c"],
            vec!["reports", "send", "-c"],
        ] {
            let mut all: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
            all.push(cfg.as_os_str());
            let out = cli_blocking(&all, None).text();
            assert!(!out.contains("SECRET"), "{args:?} with {store}:\n{out}");
            assert!(
                out.contains("127.0.0.1"),
                "{args:?} names the server:\n{out}"
            );
        }
    }
}

/// A flood of spoofed domains cannot turn the host into a report cannon: at most
/// max_reports_per_destination reports per destination domain and max_reports_per_run in
/// all go out per run; the rest are withheld (said per report, counted, never retried), and
/// a suppressed destination domain gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_floods_are_withheld_per_destination_and_per_run() {
    let z = Zones::default();
    for i in 0..4 {
        z.txt(&format!("spoof{i}.example"), "v=spf1 -all");
        z.txt(
            &format!("_dmarc.spoof{i}.example"),
            "v=DMARC1; p=none; rua=mailto:agg@victim.test,mailto:x@quiet.test",
        );
        z.txt(
            &format!("spoof{i}.example._report._dmarc.victim.test"),
            "v=DMARC1",
        );
        z.txt(
            &format!("spoof{i}.example._report._dmarc.quiet.test"),
            "v=DMARC1",
        );
    }
    let sink = Sink::start().await;
    let relay = format!(
        "smtp_port = {}\nsmtp_tls = \"none\"\nsuppress = [\"quiet.test\"]\nmax_reports_per_destination = 2\n",
        sink.port
    );
    let (_dns, d) = recording(z, "reports-flood", &relay).await;
    for i in 0..4 {
        one(&d, "198.51.100.7", &format!("x@spoof{i}.example")).await;
    }
    flush(&d).await;
    let until = until_arg();
    let (ok, text) = send(&d, &["--until", &until]);
    assert!(ok, "withheld reports wait for nothing: {text}");
    assert_eq!(text.matches("agg@victim.test: sent").count(), 2, "{text}");
    assert_eq!(
        text.matches("agg@victim.test: withheld (max_reports_per_destination = 2 for victim.test)")
            .count(),
        2,
        "{text}"
    );
    assert_eq!(
        text.matches("x@quiet.test: suppressed domain").count(),
        4,
        "{text}"
    );
    assert!(sink.wait_for(2, 10).await);
    // Withheld reports are not retried.
    let (ok, text) = send(&d, &["--until", &until]);
    assert!(ok && text.contains("no reports to send"), "{text}");
    assert_eq!(sink.count(), 2);

    // The ceiling per run.
    for i in 0..4 {
        one(&d, "198.51.100.7", &format!("x@spoof{i}.example")).await;
    }
    flush(&d).await;
    let text_cfg = std::fs::read_to_string(d.scratch.0.join("mailseal.toml")).unwrap();
    let per_run = d.scratch.write(
        "per-run.toml",
        &text_cfg.replace(
            "max_reports_per_destination = 2",
            "max_reports_per_destination = 10\nmax_reports_per_run = 1",
        ),
    );
    let until = (mailseal::report::now() + 120).to_string();
    let (ok, text) = mailseal(&per_run, &["reports", "send", "--until", &until]);
    assert!(ok, "{text}");
    assert_eq!(text.matches(": sent").count(), 1, "{text}");
    assert_eq!(
        text.matches("agg@victim.test: withheld (max_reports_per_run = 1)")
            .count(),
        3,
        "{text}"
    );
    d.stop().await;
}

/// A report's size is bounded: at most [reports] max_rows rows (the most frequent kept; the
/// rest summed up in report_metadata/error, so a spoofer cannot make every message its own
/// row), and a destination's `!size` limit is compared with the whole report message as
/// submitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_bounded_in_rows_and_size() {
    let z = Zones::default();
    sender(
        &z,
        "a.example",
        "v=DMARC1; p=none; rua=mailto:dmarc@a.example,mailto:small@a.example!1k",
    );
    let sink = Sink::start().await;
    let relay = format!(
        "smtp_port = {}\nsmtp_tls = \"none\"\nmax_rows = 2\n",
        sink.port
    );
    let (_dns, d) = recording(z, "reports-bounded", &relay).await;
    // Four sources, the first twice: the two most frequent rows are kept.
    for ip in [
        "192.0.2.10",
        "192.0.2.10",
        "198.51.100.1",
        "198.51.100.2",
        "198.51.100.3",
    ] {
        one(&d, ip, "x@a.example").await;
    }
    flush(&d).await;
    let until = until_arg();
    let out_dir = d.scratch.0.join("out");
    let out = out_dir.to_str().unwrap();
    let (ok, text) = send(&d, &["--dry-run", "--out", out, "--until", &until]);
    assert!(ok, "{text}");
    let files = reports_in(&out_dir);
    assert_eq!(files.len(), 1);
    validate(&files[0].1);
    let xml = gunzip(&std::fs::read(&files[0].1).unwrap());
    assert_eq!(field(&xml, "source_ip").len(), 2, "{xml}");
    assert_eq!(field(&xml, "source_ip")[0], "192.0.2.10", "{xml}");
    assert_eq!(
        field(&xml, "error"),
        ["2 more rows (2 messages) over max_rows = 2 not listed"],
        "{xml}"
    );

    let (ok, text) = send(&d, &["--until", &until]);
    assert!(ok, "{text}");
    assert!(text.contains("dmarc@a.example: sent"), "{text}");
    assert!(
        text.contains("small@a.example: report is ") && text.contains("over the !1024 limit"),
        "the whole message counts, not the encoded attachment: {text}"
    );
    assert!(sink.wait_for(1, 10).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.count(), 1);
}

/// The PostgreSQL store over TLS as libpq users know it (the test server accepts TCP
/// clients over TLS only): sslmode=disable is refused by the server, require encrypts without
/// checking, verify-full checks the certificate against sslrootcert and the host name.
#[test]
fn postgres_store_over_tls() {
    let pg = Postgres::start();
    let s = Scratch::new("pg-tls");
    let (other, _) = self_signed(&s.0, "elsewhere.test");
    let root = pg.dir.join("cert.pem");
    let show = |params: &str| {
        let cfg = s.write(
            "m.toml",
            &format!(
                "mode = \"v\"\n[reports]\nstore = \"{}?{params}\"\norg_name = \"x\"\nemail = \"d@example.net\"\n",
                pg.url()
            ),
        );
        let out = cli_blocking(
            &[
                std::ffi::OsStr::new("reports"),
                "show".as_ref(),
                "-c".as_ref(),
                cfg.as_os_str(),
            ],
            None,
        );
        (out.ok, out.text())
    };
    let (ok, text) = show("sslmode=disable");
    assert!(!ok && text.contains("pg_hba.conf"), "{text}");
    let (ok, text) = show("sslmode=require");
    assert!(ok, "{text}");
    let (ok, text) = show(&format!(
        "sslmode=verify-full&sslrootcert={}",
        root.display()
    ));
    assert!(ok, "{text}");
    let (ok, text) = show(&format!(
        "sslmode=verify-full&sslrootcert={}",
        other.display()
    ));
    assert!(!ok && text.contains("certificate"), "{text}");
    let (ok, text) = show(&format!("sslmode=verify-ca&sslrootcert={}", root.display()));
    assert!(ok, "{text}");
}

/// Delivery is tracked per destination: with two `rua` addresses, one delivered and one
/// deferred, the report waits for the second (the run says so in its exit status), and the
/// next run sends it there only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_is_tracked_per_destination() {
    let z = Zones::default();
    sender(
        &z,
        "two.example",
        "v=DMARC1; p=none; rua=mailto:first@two.example,mailto:second@two.example",
    );
    let sink = Sink::start().await;
    sink.tempfail
        .lock()
        .unwrap()
        .push("second@two.example".into());
    let relay = format!("smtp_port = {}\nsmtp_tls = \"none\"\n", sink.port);
    let (_dns, d) = recording(z, "reports-per-dest", &relay).await;
    one(&d, "192.0.2.10", "x@two.example").await;
    flush(&d).await;
    let until = until_arg();
    let (ok, text) = send(&d, &["--until", &until]);
    assert!(!ok, "a destination waits for a retry: {text}");
    assert!(text.contains("first@two.example: sent"), "{text}");
    assert!(
        text.contains("second@two.example: ") && text.contains("451"),
        "{text}"
    );
    assert!(sink.wait_for(1, 10).await);

    sink.tempfail.lock().unwrap().clear();
    let (ok, text) = send(&d, &["--until", &until]);
    assert!(ok, "{text}");
    assert!(text.contains("second@two.example: sent"), "{text}");
    assert!(text.contains("first@two.example: already sent"), "{text}");
    assert!(sink.wait_for(2, 10).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let envs = sink.envelopes.lock().unwrap().clone();
    let to: Vec<&str> = envs.iter().map(|e| e.1[0].as_str()).collect();
    assert_eq!(to, ["first@two.example", "second@two.example"]);
    let (ok, text) = send(&d, &["--until", &until]);
    assert!(ok && text.contains("no reports to send"), "{text}");
    d.stop().await;
}

/// The tables as they were before the store kept a schema version (version 1).
const SCHEMA_V1: &str = "
CREATE TABLE dmarc_records (id @ID@ PRIMARY KEY, received BIGINT NOT NULL, reporter TEXT NOT NULL,
    policy_domain TEXT NOT NULL, header_from TEXT NOT NULL, envelope_from TEXT NOT NULL,
    source_ip TEXT NOT NULL, published TEXT NOT NULL, disposition TEXT NOT NULL,
    dkim_aligned TEXT NOT NULL, spf_aligned TEXT NOT NULL, reasons TEXT NOT NULL, dkim TEXT NOT NULL,
    spf TEXT NOT NULL, report_id TEXT);
CREATE TABLE dmarc_reports (report_id TEXT PRIMARY KEY, unique_id TEXT NOT NULL,
    policy_domain TEXT NOT NULL, begin_ts BIGINT NOT NULL, end_ts BIGINT NOT NULL,
    created BIGINT NOT NULL, status TEXT NOT NULL, attempts BIGINT NOT NULL,
    lease_until BIGINT NOT NULL DEFAULT 0, last_error TEXT);
INSERT INTO dmarc_reports VALUES ('r1@receiver.test', 'u1', 'old.example', 0, 86400, 0, 'pending', 1, 0, 'earlier failure');
";

/// A store written before schema versions (SQLite file or PostgreSQL database) is migrated in
/// place when opened, keeping its data, and opening it again changes nothing.
#[test]
fn stores_are_migrated_in_place() {
    let s = Scratch::new("migrate");
    let sqlite = s.0.join("old.sqlite");
    {
        let c = rusqlite::Connection::open(&sqlite).unwrap();
        c.execute_batch(&SCHEMA_V1.replace("@ID@", "INTEGER"))
            .unwrap();
    }
    let pg = Postgres::start();
    let mut client = postgres::Config::new()
        .host_path(&pg.dir)
        .port(pg.port)
        .user("postgres")
        .dbname("postgres")
        .connect(postgres::NoTls)
        .unwrap();
    client
        .batch_execute(&SCHEMA_V1.replace("@ID@", "BIGSERIAL"))
        .unwrap();
    for store in [sqlite.display().to_string(), pg.url()] {
        let spec = mailseal::config::StoreSpec::Postgres(store.clone());
        let spec = if store.starts_with("postgres") {
            spec
        } else {
            mailseal::config::StoreSpec::Sqlite(sqlite.clone())
        };
        for round in 0..2 {
            let mut st = mailseal::report::store::Store::open(&spec).unwrap();
            let reports = st.reports(None, 10).unwrap();
            assert_eq!(reports.len(), 1, "{store}");
            assert_eq!(reports[0].policy_domain, "old.example");
            assert_eq!(reports[0].last_error.as_deref(), Some("earlier failure"));
            let before = st.delivery("r1@receiver.test", "a@b.example").unwrap();
            let deferred = mailseal::report::store::DeliveryStatus::Deferred;
            assert_eq!(before, (round == 1).then_some(deferred), "{store}");
            st.record_delivery(
                "r1@receiver.test",
                "a@b.example",
                mailseal::report::store::DeliveryStatus::Deferred,
                Some("451"),
            )
            .unwrap();
        }
    }
    let c = rusqlite::Connection::open(&sqlite).unwrap();
    let v: i64 = c
        .query_row("SELECT version FROM mailseal_schema", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, mailseal::report::store::SCHEMA_VERSION);
    let row = client
        .query_one("SELECT version FROM mailseal_schema", &[])
        .unwrap();
    assert_eq!(
        row.get::<_, i64>(0),
        mailseal::report::store::SCHEMA_VERSION
    );
    let row = client
        .query_one("SELECT attempts FROM dmarc_deliveries", &[])
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 2);
}
