//! A milter load generator that speaks the MTA side of the protocol the way Postfix does:
//! one connection per SMTP session, several messages per connection, N connections at once.
//! Prints messages/s, p50/p99 latency (MAIL FROM to the end-of-message answer), and the RSS
//! and CPU time of a process (the milter) sampled while it runs.
//!
//! cargo run --release --ignore-rust-version --example loadgen -- \
//!     --addr 127.0.0.1:8891 --messages 10000 --connections 20 --per-connection 10 \
//!     [--unix /path/to/socket]... [--inbound] [--pid PID]... [--body-bytes 4096]
//!     [--corpus DIR [--skip N]]
//!
//! With `--smtp IP:PORT` each message goes to an SMTP server instead (Postfix with the milters
//! under test): XCLIENT gives it the message's client address and HELO, and the latency is from
//! MAIL FROM to the answer after the message's final dot.
//!
//! Several `--unix` sockets are several milters, each event sent to one after the other as
//! Postfix does (OpenDKIM + OpenDMARC); several `--pid`s are summed. With `--corpus` (see
//! `examples/coldcache.rs`) message n is the corpus's message skip + n, from its own client
//! address, HELO and sender, one message per connection as separate senders' are.
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
    unix: Vec<std::path::PathBuf>,
    messages: usize,
    connections: usize,
    per_connection: usize,
    inbound: bool,
    pid: Vec<u32>,
    body_bytes: usize,
    from: String,
    corpus: Option<std::path::PathBuf>,
    skip: usize,
    smtp: Option<SocketAddr>,
}

fn parse_args() -> Args {
    let mut a = Args {
        addr: "127.0.0.1:8891".parse().unwrap(),
        unix: Vec::new(),
        messages: 10_000,
        connections: 20,
        per_connection: 10,
        inbound: false,
        pid: Vec::new(),
        body_bytes: 4096,
        from: "alice@example.com".into(),
        corpus: None,
        skip: 0,
        smtp: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().expect("missing value");
        match k.as_str() {
            "--addr" => a.addr = v().parse().expect("--addr IP:PORT"),
            "--unix" => a.unix.push(v().into()),
            "--messages" => a.messages = v().parse().unwrap(),
            "--connections" => a.connections = v().parse().unwrap(),
            "--per-connection" => a.per_connection = v().parse().unwrap(),
            "--inbound" => a.inbound = true,
            "--pid" => a.pid.push(v().parse().unwrap()),
            "--corpus" => a.corpus = Some(v().into()),
            "--skip" => a.skip = v().parse().unwrap(),
            "--smtp" => a.smtp = Some(v().parse().expect("--smtp IP:PORT")),
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

/// One message to send: its envelope, header fields (values as Postfix sends them: the
/// leading space kept, folded lines joined by LF) and body.
#[derive(Clone)]
struct Msg {
    ip: std::net::IpAddr,
    helo: String,
    mail_from: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// The messages of a corpus (`coldcache corpus`): DIR/index.tsv lines, DIR/msg files.
fn read_corpus(dir: &std::path::Path, skip: usize, count: usize) -> Vec<Msg> {
    let index = std::fs::read_to_string(dir.join("index.tsv")).expect("read index.tsv");
    index
        .lines()
        .skip(skip)
        .take(count)
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let raw = std::fs::read(dir.join(f[3])).expect("read a corpus message");
            let split = raw
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("a header section");
            let head = String::from_utf8_lossy(&raw[..split]);
            let mut headers: Vec<(String, String)> = Vec::new();
            for l in head.split("\r\n") {
                if l.starts_with([' ', '\t']) {
                    if let Some(last) = headers.last_mut() {
                        last.1.push('\n');
                        last.1.push_str(l);
                    }
                } else if let Some((n, v)) = l.split_once(':') {
                    headers.push((n.to_string(), v.to_string()));
                }
            }
            Msg {
                ip: f[0].parse().expect("client IP"),
                helo: f[1].to_string(),
                mail_from: f[2].to_string(),
                headers,
                body: raw[split + 4..].to_vec(),
            }
        })
        .collect()
}

/// The fixed test message of the default mode, number `n`.
fn fixed_message(args: &Args, n: usize, body: &[u8]) -> Msg {
    let ip = if args.inbound {
        "192.0.2.10"
    } else {
        "127.0.0.1"
    };
    Msg {
        ip: ip.parse().unwrap(),
        helo: "client.example".into(),
        mail_from: args.from.clone(),
        headers: [
            ("Received", " from client.example (client.example [192.0.2.10])\n\tby mx.test (Postfix) with ESMTPS id Q1\n\tfor <bob@example.org>; Mon, 23 Nov 2026 10:00:00 +0000".to_string()),
            ("From", format!(" Alice <{}>", args.from)),
            ("To", " Bob <bob@example.org>".into()),
            ("Subject", format!(" load test message {n}")),
            ("Date", " Mon, 23 Nov 2026 10:00:00 +0000".into()),
            ("Message-ID", format!(" <{n}.load@example.com>")),
            ("MIME-Version", " 1.0".into()),
            ("Content-Type", " text/plain; charset=utf-8".into()),
        ]
        .into_iter()
        .map(|(h, v)| (h.to_string(), v))
        .collect(),
        body: body.to_vec(),
    }
}

/// One milter connection of a session and what it negotiated.
struct Milter {
    conn: TestConnection,
    opts: ProtoOpts,
    /// It answered accept: Postfix sends it nothing more for this message.
    done: bool,
}

/// Send one event to every milter still taking part, in order, as Postfix does.
macro_rules! each {
    ($milters:expr, $skip:expr, |$c:ident| $call:expr) => {
        for m in $milters.iter_mut().filter(|m| !m.done) {
            if !m.opts.contains($skip) {
                let $c = &mut m.conn;
                match $call.await? {
                    Status::Continue | Status::Noreply => {}
                    Status::Accept => m.done = true,
                    other => return Ok(other),
                }
            }
        }
    };
}

/// One message through the milters; the final status (Continue when every milter took it).
async fn transaction(
    milters: &mut [Milter],
    n: usize,
    msg: &Msg,
) -> Result<Status, indymilter_test::TestError> {
    for m in milters.iter_mut() {
        m.done = false;
        m.conn
            .macros(MacroStage::Mail, [("i", format!("Q{n:08X}"))])
            .await?;
    }
    each!(milters, ProtoOpts::NO_MAIL, |c| c
        .mail([format!("<{}>", msg.mail_from)]));
    each!(milters, ProtoOpts::NO_RCPT, |c| c
        .rcpt(["<bob@example.org>"]));
    each!(milters, ProtoOpts::NO_DATA, |c| c.data());
    for (h, v) in &msg.headers {
        each!(milters, ProtoOpts::NO_HEADER, |c| c
            .header(h.as_str(), v.as_str()));
    }
    each!(milters, ProtoOpts::NO_EOH, |c| c.eoh());
    each!(milters, ProtoOpts::NO_BODY, |c| c.body(msg.body.clone()));
    for m in milters.iter_mut().filter(|m| !m.done) {
        match m.conn.eom().await?.1 {
            Status::Continue | Status::Accept => {}
            other => return Ok(other),
        }
    }
    Ok(Status::Continue)
}

/// Open one connection to every milter, connect and HELO as the message's client.
async fn open(args: &Args, msg: &Msg) -> Result<Vec<Milter>, String> {
    let mut milters = Vec::new();
    let targets: Vec<Option<&std::path::Path>> = if args.unix.is_empty() {
        vec![None]
    } else {
        args.unix.iter().map(|p| Some(p.as_path())).collect()
    };
    for target in targets {
        let builder = TestConnection::configure()
            .available_opts(ProtoOpts::all())
            .exact_leading_space(true)
            .read_timeout(Duration::from_secs(60));
        let mut conn = match target {
            Some(p) => builder.open_unix(p).await,
            None => builder.open_tcp(args.addr).await,
        }
        .map_err(|e| format!("connection: {e}"))?;
        // Stages the milter negotiated away are not sent, as Postfix does.
        let opts = conn.negotiated_opts();
        let greeted = async {
            conn.macros(
                MacroStage::Connect,
                [("j", "mx.test"), ("{daemon_name}", "smtpd")],
            )
            .await?;
            if !opts.contains(ProtoOpts::NO_CONNECT) {
                conn.connect(msg.helo.as_str(), (msg.ip, 40000)).await?;
            }
            if !opts.contains(ProtoOpts::NO_HELO) {
                conn.helo(msg.helo.as_str()).await?;
            }
            Ok::<_, indymilter_test::TestError>(())
        }
        .await;
        greeted.map_err(|e| format!("connect/HELO: {e}"))?;
        milters.push(Milter {
            conn,
            opts,
            done: false,
        });
    }
    Ok(milters)
}

async fn session(
    args: Arc<Args>,
    next: Arc<AtomicUsize>,
    lat: Arc<Mutex<Vec<u32>>>,
    corpus: Arc<Vec<Msg>>,
    body: Arc<Vec<u8>>,
) -> usize {
    let mut failures = 0;
    // Bounded: a milter that fails every connection ends the run.
    let failed = |failures: &mut usize, what: &str| {
        if *failures == 0 {
            eprintln!("first failure: {what}");
        }
        *failures += 1;
        *failures >= 100
    };
    let message = |n: usize| match corpus.get(n) {
        Some(m) => std::borrow::Cow::Borrowed(m),
        None => std::borrow::Cow::Owned(fixed_message(&args, n, &body)),
    };
    if let Some(addr) = args.smtp {
        loop {
            let n = next.fetch_add(1, Ordering::Relaxed);
            if n >= args.messages {
                return failures;
            }
            match smtp::send(addr, &message(n)).await {
                Ok(t) => lat.lock().unwrap().push(t.as_micros() as u32),
                Err(e) => {
                    if failed(&mut failures, &format!("SMTP: {e}")) {
                        return failures;
                    }
                }
            }
        }
    }
    loop {
        let first = next.load(Ordering::Relaxed);
        if first >= args.messages {
            return failures;
        }
        let mut milters = match open(&args, &message(first)).await {
            Ok(m) => m,
            Err(e) => {
                if failed(&mut failures, &e) {
                    eprintln!("giving up: 100 failures");
                    return failures;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        for _ in 0..args.per_connection {
            let n = next.fetch_add(1, Ordering::Relaxed);
            if n >= args.messages {
                break;
            }
            let t = Instant::now();
            match transaction(&mut milters, n, &message(n)).await {
                Ok(Status::Continue | Status::Accept) => {
                    lat.lock().unwrap().push(t.elapsed().as_micros() as u32)
                }
                Ok(st) => {
                    if failed(&mut failures, &format!("message: answered {st:?}")) {
                        return failures;
                    }
                    break;
                }
                Err(e) => {
                    if failed(&mut failures, &format!("message: {e}")) {
                        return failures;
                    }
                    break;
                }
            }
        }
        for m in milters {
            let _ = m.conn.close().await;
        }
    }
}

/// The SMTP client of `--smtp`.
mod smtp {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
    use tokio::net::TcpStream;

    use super::Msg;

    struct Conn {
        r: BufReader<OwnedReadHalf>,
        w: OwnedWriteHalf,
    }

    impl Conn {
        /// One reply (multi-line ones whole); an error unless its code is `want`.
        async fn reply(&mut self, want: &str) -> Result<(), String> {
            for _ in 0..100 {
                let mut line = String::new();
                let n = tokio::time::timeout(Duration::from_secs(120), self.r.read_line(&mut line))
                    .await
                    .map_err(|_| "no reply in 120 s".to_string())?
                    .map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("connection closed".into());
                }
                if line.as_bytes().get(3) == Some(&b'-') {
                    continue;
                }
                return if line.starts_with(want) {
                    Ok(())
                } else {
                    Err(format!("expected {want}, got {}", line.trim_end()))
                };
            }
            Err("reply too long".into())
        }

        async fn cmd(&mut self, line: &str, want: &str) -> Result<(), String> {
            self.w
                .write_all(format!("{line}\r\n").as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            self.reply(want).await
        }
    }

    /// Send one message; the time from MAIL FROM to the answer after the final dot.
    pub async fn send(addr: SocketAddr, msg: &Msg) -> Result<Duration, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (r, w) = stream.into_split();
        let mut c = Conn {
            r: BufReader::new(r),
            w,
        };
        c.reply("220").await?;
        c.cmd("EHLO loadgen.test", "250").await?;
        c.cmd(
            &format!(
                "XCLIENT ADDR={} NAME=[UNAVAILABLE] HELO={}",
                msg.ip, msg.helo
            ),
            "220",
        )
        .await?;
        c.cmd(&format!("EHLO {}", msg.helo), "250").await?;
        let t = Instant::now();
        c.cmd(&format!("MAIL FROM:<{}>", msg.mail_from), "250")
            .await?;
        c.cmd("RCPT TO:<bob@example.org>", "250").await?;
        c.cmd("DATA", "354").await?;
        let mut data = Vec::with_capacity(msg.body.len() + 1024);
        for (n, v) in &msg.headers {
            data.extend_from_slice(format!("{n}:{}\r\n", v.replace('\n', "\r\n")).as_bytes());
        }
        data.extend_from_slice(b"\r\n");
        for line in msg.body.split_inclusive(|&b| b == b'\n') {
            if line.starts_with(b".") {
                data.push(b'.');
            }
            data.extend_from_slice(line);
        }
        if !data.ends_with(b"\r\n") {
            data.extend_from_slice(b"\r\n");
        }
        data.extend_from_slice(b".\r\n");
        c.w.write_all(&data).await.map_err(|e| e.to_string())?;
        c.reply("250").await?;
        let took = t.elapsed();
        let _ = c.cmd("QUIT", "221").await;
        Ok(took)
    }
}

/// (RSS KiB, CPU seconds) summed over processes; `None` when one is gone.
fn stats_of(pids: &[u32]) -> Option<(u64, f64)> {
    pids.iter().try_fold((0, 0.0), |(r, c), &p| {
        proc_stats(p).map(|(r1, c1)| (r + r1, c + c1))
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = parse_args();
    let corpus = match &args.corpus {
        Some(dir) => {
            let c = read_corpus(dir, args.skip, args.messages);
            args.messages = c.len();
            // Each sender connects on its own.
            args.per_connection = 1;
            c
        }
        None => Vec::new(),
    };
    let args = Arc::new(args);
    let corpus = Arc::new(corpus);
    let line = "The quick brown fox jumps over the lazy dog. 0123456789 abcdefghij\r\n";
    let body: Vec<u8> =
        line.repeat(args.body_bytes / line.len() + 1).into_bytes()[..args.body_bytes].to_vec();
    let body = Arc::new(body);
    let next = Arc::new(AtomicUsize::new(0));
    let lat = Arc::new(Mutex::new(Vec::with_capacity(args.messages)));
    let start_stats = (!args.pid.is_empty())
        .then(|| stats_of(&args.pid))
        .flatten();
    let peak = Arc::new(AtomicUsize::new(
        start_stats.map(|s| s.0 as usize).unwrap_or(0),
    ));
    let sampler = (!args.pid.is_empty()).then(|| {
        let peak = peak.clone();
        let next = next.clone();
        let total = args.messages;
        let pids = args.pid.clone();
        tokio::spawn(async move {
            let mut last = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Some((rss, _)) = stats_of(&pids) {
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
            corpus.clone(),
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
    if let Some((rss0, cpu0)) = start_stats {
        if let Some((rss1, cpu1)) = stats_of(&args.pid) {
            let per_msg_us = (cpu1 - cpu0) / lat.len().max(1) as f64 * 1e6;
            println!(
                "milter pid {:?}: CPU {:.2} s ({per_msg_us:.0} µs/message, {:.2} s per 1000); RSS start {rss0} KiB, peak {} KiB, end {rss1} KiB",
                args.pid,
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
