//! Hostile milter clients: malformed packets, absurd sizes, odd command orders, floods of
//! idle connections. Each runs on its own connection; afterwards the daemon must still serve a
//! normal client, and memory must stay bounded.

use std::time::{Duration, Instant};

use crate::common::*;
use indymilter::ProtoOpts;
use indymilter_test::{Status, TestConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn pkt(cmd: u8, data: &[u8]) -> Vec<u8> {
    let mut v = ((data.len() + 1) as u32).to_be_bytes().to_vec();
    v.push(cmd);
    v.extend_from_slice(data);
    v
}

/// SMFIC_OPTNEG as Postfix sends it: version 6, all actions, all protocol options.
fn optneg() -> Vec<u8> {
    let mut d = 6u32.to_be_bytes().to_vec();
    d.extend_from_slice(&0x1ffu32.to_be_bytes());
    d.extend_from_slice(&0x1f_ffffu32.to_be_bytes());
    pkt(b'O', &d)
}

async fn raw(d: &Hostile) -> TcpStream {
    let mut s = TcpStream::connect(d.addr).await.unwrap();
    s.write_all(&optneg()).await.unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.unwrap();
    assert_eq!(body[0], b'O', "negotiation reply");
    s
}

/// Wait (bounded) until the daemon closes this connection.
async fn closed_within(s: &mut TcpStream, secs: u64) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// The daemon under attack: the real binary in a process of its own, so its memory is
/// measured apart from the attacking client and from the other tests of this binary.
struct Hostile {
    addr: std::net::SocketAddr,
    process: crate::common::process::Running,
    _scratch: Scratch,
}

impl Hostile {
    async fn start() -> Hostile {
        let s = Scratch::new("hostile");
        let signing = example_com_rsa(&s.0, "*@example.com");
        let port = crate::common::postfix::free_port();
        let cfg = s.write(
            "mailseal.toml",
            &format!(
                "socket = \"inet:{port}@127.0.0.1\"\nauthserv_id = \"mx.test\"\nconnection_timeout = \"3s\"\n\
                 max_connections = 1500\n[signing]\n{signing}internal_hosts = [\"10.0.0.0/8\"]\n\
                 [dns]\nnameservers = [\"127.0.0.1:9\"]\ntimeout = \"1s\"\nattempts = 1\n"
            ),
        );
        let process = tokio::task::spawn_blocking(move || {
            crate::common::process::Running::started(&cfg, &[])
        })
        .await
        .unwrap();
        Hostile {
            addr: ([127, 0, 0, 1], port).into(),
            process,
            _scratch: s,
        }
    }

    /// SIGTERM, and wait (bounded) for a clean exit.
    async fn stop(mut self) {
        self.process.signal(libc::SIGTERM);
        let log = tokio::task::spawn_blocking(move || self.process.wait_all_logs())
            .await
            .unwrap();
        assert!(
            log.contains("stopping") || log.contains("in flight"),
            "{log}"
        );
    }

    /// The daemon's resident memory.
    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.process.child.id()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

async fn daemon() -> Hostile {
    Hostile::start().await
}

/// A normal outbound message still gets signed.
async fn alive(d: &Hostile) {
    let env = Envelope {
        client_ip: "10.0.0.1".into(),
        ..Default::default()
    };
    let out = deliver(
        d.addr,
        &env,
        "From: a@example.com\r\nSubject: alive\r\n\r\nbody\r\n",
    )
    .await;
    assert_eq!(
        out.inserted("DKIM-Signature").len(),
        1,
        "daemon no longer signs: {out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_close_only_that_connection() {
    let d = daemon().await;
    let before = d.rss_kib();

    // Truncated packet, then the client goes away.
    let mut s = raw(&d).await;
    s.write_all(&[0, 0, 0, 100, b'L', b'X', b'-'])
        .await
        .unwrap();
    drop(s);
    alive(&d).await;

    // A length field over 2^31: refused at once, nothing allocated.
    let mut s = raw(&d).await;
    s.write_all(&[0xff, 0xff, 0xff, 0xf0, b'B']).await.unwrap();
    assert!(closed_within(&mut s, 5).await, "huge length not refused");
    alive(&d).await;

    // Zero length (no command byte at all), then an unknown command.
    let mut s = raw(&d).await;
    s.write_all(&[0, 0, 0, 0]).await.unwrap();
    s.write_all(&pkt(b'Z', b"junk")).await.unwrap();
    let _ = closed_within(&mut s, 5).await;
    alive(&d).await;

    // Unknown command right after negotiation.
    let mut s = raw(&d).await;
    s.write_all(&pkt(b'@', &[1, 2, 3])).await.unwrap();
    let _ = closed_within(&mut s, 5).await;
    alive(&d).await;

    // A header packet without a value, and one with NUL and non-UTF-8 bytes.
    let mut s = raw(&d).await;
    s.write_all(&pkt(b'M', b"<a@example.com>\0")).await.unwrap();
    s.write_all(&pkt(b'L', b"X-NoValue")).await.unwrap();
    let _ = closed_within(&mut s, 5).await;
    let mut s = raw(&d).await;
    s.write_all(&pkt(b'L', b"X-Bin\0\xff\xfe\x00\x01tail\0"))
        .await
        .unwrap();
    s.write_all(&pkt(b'N', b"")).await.unwrap();
    drop(s);
    alive(&d).await;

    assert!(
        d.rss_kib() < before + 100 * 1024,
        "RSS grew from {before} KiB to {} KiB",
        d.rss_kib()
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_orders_huge_headers_and_drops_get_defined_answers() {
    let d = daemon().await;
    let before = d.rss_kib();
    let inbound = Envelope::default();

    // Body before any header, then end of message: a defined answer, no crash.
    let mut c = Client::open(d.addr).await;
    c.hello(&inbound).await;
    c.conn.mail(["<x@example.org>"]).await.unwrap();
    let st = c.conn.eoh().await.unwrap();
    assert!(matches!(st, Status::Continue | Status::Accept), "{st:?}");
    if st == Status::Continue {
        c.conn.body(b"just a body\r\n".to_vec()).await.unwrap();
        let (_, st) = c.conn.eom().await.unwrap();
        assert!(
            matches!(
                st,
                Status::Continue | Status::Accept | Status::Tempfail { .. }
            ),
            "{st:?}"
        );
    }
    c.close().await;

    // A 10 KB header name, a ~1 MB header value, 10,000 headers: kept within the caps (past
    // them only From, DKIM-Signature and A-R fields), never buffered whole, and the message
    // is still judged: with the resolver down its DMARC policy is unknown, so 451 4.4.3.
    let mut c = Client::open(d.addr).await;
    c.hello(&inbound).await;
    c.conn.mail(["<x@example.org>"]).await.unwrap();
    c.conn
        .header("X-".to_string() + &"N".repeat(10 * 1024), " v")
        .await
        .unwrap();
    c.conn
        .header("X-Big", " ".to_string() + &"v".repeat(1_000_000))
        .await
        .unwrap();
    for i in 0..10_000 {
        c.conn.header("X-Many", format!(" {i}")).await.unwrap();
    }
    c.conn.header("From", " a@example.org").await.unwrap();
    let st = c.conn.eoh().await.unwrap();
    assert_eq!(st, Status::Continue);
    c.conn.body(b"body\r\n".to_vec()).await.unwrap();
    let (_, st) = c.conn.eom().await.unwrap();
    assert!(
        matches!(&st, Status::Tempfail { message: Some(m) } if m.to_string_lossy().starts_with("451 4.4.3")),
        "{st:?}"
    );
    c.close().await;

    // Connection dropped in the middle of a body.
    let mut c = Client::open(d.addr).await;
    c.hello(&inbound).await;
    c.conn.mail(["<x@example.org>"]).await.unwrap();
    c.conn.header("From", " a@example.org").await.unwrap();
    c.conn.eoh().await.unwrap();
    c.conn.body(vec![b'x'; 100_000]).await.unwrap();
    drop(c);
    alive(&d).await;

    assert!(
        d.rss_kib() < before + 150 * 1024,
        "RSS grew from {before} KiB to {} KiB",
        d.rss_kib()
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_then_the_idle_timeout() {
    // Room for 1000 client and 1000 server sockets in this process.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(8192);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let d = daemon().await;
    let before = d.rss_kib();
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(raw(&d).await);
    }
    let held = d.rss_kib();
    // Others are still served while 1000 connections sit idle.
    alive(&d).await;
    // The idle ones are closed by the connection timeout (3 s here).
    let start = Instant::now();
    let mut closed = 0;
    for s in idle.iter_mut() {
        if closed_within(s, 10).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 1000, "idle connections closed by the timeout");
    assert!(start.elapsed() < Duration::from_secs(15));
    eprintln!(
        "1000 idle connections: RSS {before} KiB before, {held} KiB while held, {} KiB after",
        d.rss_kib()
    );
    assert!(
        held < before + 200 * 1024,
        "1000 idle connections cost {} KiB",
        held - before
    );
    alive(&d).await;
    d.stop().await;
}

#[tokio::test]
async fn missing_leading_space_option_still_signs_correctly() {
    // An MTA that does not offer SMFIP_HDR_LEADSPC: values arrive without their leading space.
    let d = daemon().await;
    let mut conn = TestConnection::configure()
        .available_opts(ProtoOpts::all() - ProtoOpts::LEADING_SPACE)
        .open_tcp(d.addr)
        .await
        .unwrap();
    assert!(!conn.negotiated_opts().contains(ProtoOpts::LEADING_SPACE));
    conn.connect(
        "client",
        ("10.0.0.1".parse::<std::net::IpAddr>().unwrap(), 1),
    )
    .await
    .unwrap();
    conn.helo("h").await.unwrap();
    conn.mail(["<a@example.com>"]).await.unwrap();
    conn.header("From", "a@example.com").await.unwrap();
    conn.header("Subject", "no leading space").await.unwrap();
    conn.eoh().await.unwrap();
    conn.body(b"body\r\n".to_vec()).await.unwrap();
    let (actions, st) = conn.eom().await.unwrap();
    assert_eq!(st, Status::Continue);
    let sig = actions
        .actions
        .iter()
        .find_map(|a| match a {
            indymilter_test::EomAction::InsertHeader { name, value, .. }
                if name.to_str().unwrap() == "DKIM-Signature" =>
            {
                Some(value.to_string_lossy().into_owned())
            }
            _ => None,
        })
        .expect("signed");
    // Without LEADSPC the MTA adds the space after the colon itself, so the value comes
    // without one; the message as the MTA stores it verifies.
    assert!(!sig.starts_with(' '), "{sig:?}");
    let msg = format!(
        "DKIM-Signature: {}\r\nFrom: a@example.com\r\nSubject: no leading space\r\n\r\nbody\r\n",
        sig.replace('\n', "\r\n")
    );
    let mut recs = std::collections::BTreeMap::new();
    recs.insert(
        "rsa._domainkey.example.com".to_string(),
        keys().rsa.record.clone(),
    );
    assert_eq!(dkim_check(msg.as_bytes(), &recs), vec![true]);
    conn.close().await.unwrap();
    d.stop().await;
}

#[tokio::test]
async fn oversize_answers_follow_on_oversize() {
    for (action, outbound_want, inbound_want) in [
        ("reject", "552 5.3.4", "552 5.3.4"),
        ("tempfail", "452 4.3.4", "452 4.3.4"),
    ] {
        let s = Scratch::new("oversize");
        let signing = example_com_rsa(&s.0, "*@example.com");
        let cfg = format!(
            "authserv_id = \"mx.test\"\n[limits]\nmax_headers = 5\non_oversize = \"{action}\"\n[signing]\n{signing}internal_hosts = [\"10.0.0.0/8\"]\n"
        );
        let d = Daemon::start_in(s, &cfg).await;
        let many: String = (0..10).map(|i| format!("X-H{i}: v\r\n")).collect();
        let raw = format!("From: a@example.com\r\n{many}\r\nbody\r\n");
        for (env, want) in [
            (
                Envelope {
                    client_ip: "10.0.0.1".into(),
                    ..Default::default()
                },
                outbound_want,
            ),
            (Envelope::default(), inbound_want),
        ] {
            let out = deliver(d.addr, &env, &raw).await;
            let msg = match &out.status {
                Status::Reject { message: Some(m) } | Status::Tempfail { message: Some(m) } => {
                    m.to_string_lossy().into_owned()
                }
                other => panic!("{action}: expected {want}, got {other:?}"),
            };
            assert!(msg.starts_with(want), "{action}: {msg}");
        }
        d.stop().await;
    }
}
