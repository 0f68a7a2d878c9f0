//! Faults around the daemon: DNS down, slow or truncating; SIGTERM with messages in flight;
//! kill -9 under Postfix load with nothing lost.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream as StdTcp;
use std::time::{Duration, Instant};

use crate::common::dns::{DnsServer, Rr, Zones};
use crate::common::postfix::Postfix;
use crate::common::process::Running;
use crate::common::sink::Sink;
use crate::common::*;
use indymilter_test::Status;

fn verify_cfg(ns: std::net::SocketAddr, extra: &str) -> String {
    TestConfig::verifying(ns).with(extra).text()
}

async fn inbound(d: &Daemon, from: &str) -> Delivered {
    let env = Envelope {
        mail_from: format!("<a@{from}>"),
        ..Default::default()
    };
    deliver(
        d.addr,
        &env,
        &format!("From: a@{from}\r\nSubject: t\r\n\r\nb\r\n"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_down_slow_and_truncating() {
    // Down: nothing listens on the configured server.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let d = Daemon::start(&verify_cfg(dead_addr, "")).await;
    let start = Instant::now();
    let out = inbound(&d, "example.com").await;
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(
        matches!(&out.status, Status::Tempfail { message: Some(m) } if m.to_string_lossy().starts_with("451 4.4.3")),
        "{:?}",
        out.status
    );
    d.stop().await;

    let z = Zones::default();
    z.add("slow.example", Rr::Timeout);
    z.add("_dmarc.slow.example", Rr::Timeout);
    // A large SPF record only reachable over TCP.
    z.add("big.example", Rr::TruncateUdp);
    let ips: Vec<String> = (1..=40).map(|i| format!("ip4:198.51.100.{i}")).collect();
    z.txt(
        "big.example",
        &format!("v=spf1 {} ip4:192.0.2.10 -all", ips.join(" ")),
    );
    let dns = DnsServer::start(z).await;
    // Slow: every lookup for the sender (its DMARC policy too) times out; the whole check is
    // bounded by [verify] timeout.
    let d = Daemon::start(&verify_cfg(dns.addr, "[verify]\ntimeout = \"3s\"\n")).await;
    let start = Instant::now();
    let out = inbound(&d, "slow.example").await;
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        matches!(out.status, Status::Tempfail { .. }),
        "{:?}",
        out.status
    );
    // Truncating: TC over UDP, the answer comes over TCP, SPF passes.
    let out = inbound(&d, "big.example").await;
    assert_eq!(out.status, Status::Continue);
    let ar = &out.inserted("Authentication-Results")[0];
    assert!(ar.contains("spf=pass smtp.mailfrom=a@big.example"), "{ar}");
    d.stop().await;
}

fn signing_cfg(s: &Scratch, port: u16) -> std::path::PathBuf {
    let signing = example_com_rsa(&s.0, "*@example.com");
    s.write(
        "mailseal.toml",
        &format!("socket = \"inet:{port}@127.0.0.1\"\nmode = \"s\"\n[signing]\n{signing}internal_hosts = [\"127.0.0.0/8\"]\n"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_messages_in_flight() {
    let s = Scratch::new("sigterm");
    let port = crate::common::postfix::free_port();
    let mut p = Running::started(&signing_cfg(&s, port), &[]);
    let mut tasks = Vec::new();
    for i in 0..20 {
        tasks.push(tokio::spawn(async move {
            let env = Envelope {
                client_ip: "127.0.0.1".into(),
                ..Default::default()
            };
            let mut c = Client::open(([127, 0, 0, 1], port).into()).await;
            c.hello(&env).await;
            c.conn.mail(["<a@example.com>"]).await.ok()?;
            c.conn
                .header("From", format!(" a{i}@example.com"))
                .await
                .ok()?;
            c.conn.eoh().await.ok()?;
            for _ in 0..50 {
                c.conn.body(vec![b'x'; 60_000]).await.ok()?;
            }
            let (actions, st) = c.conn.eom().await.ok()?;
            Some((actions, st))
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    assert_eq!(unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) }, 0);
    let status = tokio::task::spawn_blocking(move || {
        let st = p.child.wait();
        (st, p)
    })
    .await
    .unwrap();
    assert!(status.0.unwrap().success());
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "drain took {:?}",
        t.elapsed()
    );
    // Every message in flight was drained: a complete, signed answer for each.
    let mut completed = 0;
    for task in tasks {
        if let Some((actions, st)) = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap()
        {
            assert_eq!(st, Status::Continue);
            assert!(actions.has_insert_header(
                indymilter_test::any(),
                "DKIM-Signature",
                indymilter_test::any()
            ));
            completed += 1;
        }
    }
    eprintln!(
        "SIGTERM with 20 messages in flight: {completed} completed, drained in {:?}",
        t.elapsed()
    );
    assert_eq!(
        completed, 20,
        "messages in flight are finished before the daemon stops"
    );
}

/// Send one message by SMTP; returns the final reply code.
fn smtp_send(port: u16, id: usize) -> u16 {
    let mut s = StdTcp::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let code = |r: &mut BufReader<StdTcp>| -> u16 {
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return 0;
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            }
        }
    };
    code(&mut r);
    let steps = [
        "EHLO loadgen.test\r\n".to_string(),
        "MAIL FROM:<alice@example.com>\r\n".into(),
        "RCPT TO:<bob@example.org>\r\n".into(),
        "DATA\r\n".into(),
    ];
    for st in &steps {
        s.write_all(st.as_bytes()).unwrap();
        let c = code(&mut r);
        if c >= 400 {
            return c;
        }
    }
    let body = format!(
        "From: alice@example.com\r\nTo: bob@example.org\r\nSubject: load {id}\r\nX-Seq: {id}\r\n\r\n{}\r\n.\r\n",
        "line of text for the body\r\n".repeat(100)
    );
    s.write_all(body.as_bytes()).unwrap();
    let c = code(&mut r);
    let _ = s.write_all(b"QUIT\r\n");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_postfix_load_loses_nothing() {
    let _exclusive = crate::common::exclusive().await;
    if !Postfix::or_skip() {
        return;
    }
    const N: usize = 300;
    let sink = Sink::start().await;
    let s = Scratch::new("kill9");
    let port = crate::common::postfix::free_port();
    let cfg = signing_cfg(&s, port);
    let p = Running::started(&cfg, &[]);
    let pf_dir = Scratch::new("kill9-postfix");
    let pf = Postfix::start(&pf_dir.0, port, sink.port);
    let smtp = pf.smtp_port;

    // 4 concurrent senders; mailseal is killed with SIGKILL a third of the way through.
    let results = tokio::task::spawn_blocking(move || {
        let mut p = Some(p);
        let pending: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new((0..N).rev().collect());
        let refused = std::sync::Mutex::new(Vec::new());
        let accepted = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|sc| {
            for _ in 0..4 {
                sc.spawn(|| loop {
                    let Some(id) = pending.lock().unwrap().pop() else {
                        break;
                    };
                    match smtp_send(smtp, id) {
                        250 => {
                            accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        _ => refused.lock().unwrap().push(id),
                    }
                });
            }
            while pending.lock().unwrap().len() > N * 2 / 3 {
                std::thread::sleep(Duration::from_millis(5));
            }
            if let Some(mut p) = p.take() {
                p.child.kill().unwrap();
                p.child.wait().unwrap();
            }
        });
        (accepted.into_inner(), refused.into_inner().unwrap())
    })
    .await
    .unwrap();
    let (accepted, refused) = results;
    eprintln!(
        "kill -9 under load: {accepted} accepted, {} refused with 4xx while mailseal was down",
        refused.len()
    );
    assert!(
        !refused.is_empty(),
        "mailseal was never down during the run?"
    );

    // Restart mailseal; the senders retry what was refused (as SMTP clients do); Postfix
    // flushes anything it deferred.
    let _p2 = Running::started(&cfg, &[]);
    let retry = refused.clone();
    tokio::task::spawn_blocking(move || {
        for id in retry {
            assert_eq!(smtp_send(smtp, id), 250, "retry of {id} refused");
        }
    })
    .await
    .unwrap();
    pf.flush();
    assert!(
        sink.wait_for(N, 120).await,
        "only {} of {N} arrived\n{}",
        sink.count(),
        pf.log()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let msgs = sink.messages.lock().unwrap().clone();
    let mut seen = HashSet::new();
    let mut records = BTreeMap::new();
    records.insert(
        "rsa._domainkey.example.com".to_string(),
        keys().rsa.record.clone(),
    );
    for (i, m) in msgs.iter().enumerate() {
        let text = String::from_utf8_lossy(m);
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("X-Seq: "))
            .expect("X-Seq")
            .trim()
            .to_string();
        assert!(seen.insert(id.clone()), "message {id} arrived twice");
        assert!(text.contains("DKIM-Signature:"), "message {id} unsigned");
        if i % 50 == 0 {
            assert_eq!(dkim_check(m, &records), vec![true], "message {id}");
        }
    }
    assert_eq!(seen.len(), N, "every message exactly once");
    drop(pf);
}
