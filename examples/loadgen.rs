//! A milter load generator that speaks the MTA side of the protocol the way Postfix does:
//! one connection per SMTP session, several messages per connection, N connections at once.
//! Prints messages/s, p50/p99 latency (MAIL FROM to the end-of-message answer), and the RSS
//! and CPU time of a process (the milter) sampled while it runs.
//!
//! cargo run --release --ignore-rust-version --example loadgen -- \
//!     --addr 127.0.0.1:8891 --messages 10000 --connections 20 --per-connection 10 \
//!     [--unix /path/to/socket] [--inbound] [--pid PID] [--body-bytes 4096]
//!
//! The TCP client (indymilter-test) cannot set TCP_NODELAY, so over TCP its own small writes
//! wait for delayed ACKs; use --unix for milter-level throughput figures.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indymilter::{MacroStage, ProtoOpts};
use indymilter_test::{Status, TestConnection};

struct Args {
    addr: SocketAddr,
    unix: Option<std::path::PathBuf>,
    messages: usize,
    connections: usize,
    per_connection: usize,
    inbound: bool,
    pid: Option<u32>,
    body_bytes: usize,
    from: String,
}

fn parse_args() -> Args {
    let mut a = Args {
        addr: "127.0.0.1:8891".parse().unwrap(),
        unix: None,
        messages: 10_000,
        connections: 20,
        per_connection: 10,
        inbound: false,
        pid: None,
        body_bytes: 4096,
        from: "alice@example.com".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().expect("missing value");
        match k.as_str() {
            "--addr" => a.addr = v().parse().expect("--addr IP:PORT"),
            "--unix" => a.unix = Some(v().into()),
            "--messages" => a.messages = v().parse().unwrap(),
            "--connections" => a.connections = v().parse().unwrap(),
            "--per-connection" => a.per_connection = v().parse().unwrap(),
            "--inbound" => a.inbound = true,
            "--pid" => a.pid = Some(v().parse().unwrap()),
            "--body-bytes" => a.body_bytes = v().parse().unwrap(),
            "--from" => a.from = v(),
            other => panic!("unknown option {other}"),
        }
    }
    a
}

/// (RSS KiB, CPU seconds) of a process, from /proc.
pub fn proc_stats(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks;
    Some((rss, cpu))
}

async fn session(
    args: Arc<Args>,
    next: Arc<AtomicUsize>,
    lat: Arc<Mutex<Vec<u32>>>,
    body: Arc<Vec<u8>>,
) -> usize {
    let mut failures = 0;
    // Bounded: a milter that fails every connection ends the run.
    let failed = |failures: &mut usize, what: &str, e: &dyn std::fmt::Display| {
        if *failures == 0 {
            eprintln!("first failure: {what}: {e}");
        }
        *failures += 1;
        *failures >= 100
    };
    loop {
        if next.load(Ordering::Relaxed) >= args.messages {
            return failures;
        }
        let builder = TestConnection::configure()
            .available_opts(ProtoOpts::all())
            .exact_leading_space(true)
            .read_timeout(Duration::from_secs(60));
        let opened = match &args.unix {
            Some(p) => builder.open_unix(p).await,
            None => builder.open_tcp(args.addr).await,
        };
        let mut conn = match opened {
            Ok(c) => c,
            Err(e) => {
                if failed(&mut failures, "connection", &e) {
                    eprintln!("giving up: 100 failures");
                    return failures;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Stages the milter negotiated away are not sent, as Postfix does.
        let opts = conn.negotiated_opts();
        let ip: std::net::IpAddr = if args.inbound {
            "192.0.2.10"
        } else {
            "127.0.0.1"
        }
        .parse()
        .unwrap();
        let _ = conn
            .macros(
                MacroStage::Connect,
                [("j", "mx.test"), ("{daemon_name}", "smtpd")],
            )
            .await;
        let greeted = async {
            if !opts.contains(ProtoOpts::NO_CONNECT) {
                conn.connect("client.example", (ip, 40000)).await?;
            }
            if !opts.contains(ProtoOpts::NO_HELO) {
                conn.helo("client.example").await?;
            }
            Ok::<_, indymilter_test::TestError>(())
        }
        .await;
        if let Err(e) = greeted {
            if failed(&mut failures, "connect/HELO", &e) {
                eprintln!("giving up: 100 failures");
                return failures;
            }
            continue;
        }
        for _ in 0..args.per_connection {
            let n = next.fetch_add(1, Ordering::Relaxed);
            if n >= args.messages {
                break;
            }
            let t = Instant::now();
            let ok = async {
                conn.macros(MacroStage::Mail, [("i", format!("Q{n:08X}"))]).await?;
                if !opts.contains(ProtoOpts::NO_MAIL) {
                    conn.mail([format!("<{}>", args.from)]).await?;
                }
                if !opts.contains(ProtoOpts::NO_RCPT) {
                    conn.rcpt(["<bob@example.org>"]).await?;
                }
                if !opts.contains(ProtoOpts::NO_DATA) {
                    conn.data().await?;
                }
                for (h, v) in [
                    ("Received", " from client.example (client.example [192.0.2.10])\n\tby mx.test (Postfix) with ESMTPS id Q1\n\tfor <bob@example.org>; Mon, 23 Nov 2026 10:00:00 +0000".to_string()),
                    ("From", format!(" Alice <{}>", args.from)),
                    ("To", " Bob <bob@example.org>".into()),
                    ("Subject", format!(" load test message {n}")),
                    ("Date", " Mon, 23 Nov 2026 10:00:00 +0000".into()),
                    ("Message-ID", format!(" <{n}.load@example.com>")),
                    ("MIME-Version", " 1.0".into()),
                    ("Content-Type", " text/plain; charset=utf-8".into()),
                ] {
                    if !opts.contains(ProtoOpts::NO_HEADER) {
                        conn.header(h, v).await?;
                    }
                }
                let st = if opts.contains(ProtoOpts::NO_EOH) {
                    Status::Continue
                } else {
                    conn.eoh().await?
                };
                if st != Status::Continue {
                    return Ok(st);
                }
                if !opts.contains(ProtoOpts::NO_BODY) {
                    conn.body(body.as_ref().clone()).await?;
                }
                Ok(conn.eom().await?.1)
            }
            .await;
            match ok {
                Ok(Status::Continue | Status::Accept) => {
                    lat.lock().unwrap().push(t.elapsed().as_micros() as u32)
                }
                Ok(st) => {
                    let e = format!("answered {st:?}");
                    if failed(&mut failures, "message", &e) {
                        return failures;
                    }
                    break;
                }
                Err::<_, indymilter_test::TestError>(e) => {
                    if failed(&mut failures, "message", &e) {
                        return failures;
                    }
                    break;
                }
            }
        }
        let _ = conn.close().await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Arc::new(parse_args());
    let line = "The quick brown fox jumps over the lazy dog. 0123456789 abcdefghij\r\n";
    let body: Vec<u8> =
        line.repeat(args.body_bytes / line.len() + 1).into_bytes()[..args.body_bytes].to_vec();
    let body = Arc::new(body);
    let next = Arc::new(AtomicUsize::new(0));
    let lat = Arc::new(Mutex::new(Vec::with_capacity(args.messages)));
    let start_stats = args.pid.and_then(proc_stats);
    let peak = Arc::new(AtomicUsize::new(
        start_stats.map(|s| s.0 as usize).unwrap_or(0),
    ));
    let sampler = args.pid.map(|pid| {
        let peak = peak.clone();
        let next = next.clone();
        let total = args.messages;
        tokio::spawn(async move {
            let mut last = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Some((rss, _)) = proc_stats(pid) {
                    peak.fetch_max(rss as usize, Ordering::Relaxed);
                    if last.elapsed() > Duration::from_secs(10) {
                        last = Instant::now();
                        eprintln!(
                            "  {} / {total} messages, RSS {rss} KiB",
                            next.load(Ordering::Relaxed).min(total)
                        );
                    }
                }
            }
        })
    });
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        tasks.push(tokio::spawn(session(
            args.clone(),
            next.clone(),
            lat.clone(),
            body.clone(),
        )));
    }
    let mut failures = 0;
    for t in tasks {
        failures += t.await.unwrap();
    }
    let elapsed = t0.elapsed();
    if let Some(s) = sampler {
        s.abort();
    }
    let mut lat = std::mem::take(&mut *lat.lock().unwrap());
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        "messages: {} ok, {failures} failed, in {:.2} s: {:.0} msg/s; latency p50 {:.2} ms, p99 {:.2} ms",
        lat.len(),
        elapsed.as_secs_f64(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99)
    );
    if let (Some(pid), Some((rss0, cpu0))) = (args.pid, start_stats) {
        if let Some((rss1, cpu1)) = proc_stats(pid) {
            let per_msg_us = (cpu1 - cpu0) / lat.len().max(1) as f64 * 1e6;
            println!(
                "milter pid {pid}: CPU {:.2} s ({per_msg_us:.0} µs/message, {:.2} s per 1000); RSS start {rss0} KiB, peak {} KiB, end {rss1} KiB",
                cpu1 - cpu0,
                per_msg_us / 1000.0,
                peak.load(Ordering::Relaxed)
            );
        }
    }
    if failures > 0 {
        std::process::exit(1);
    }
}
