//! The real binary: systemd readiness, SIGHUP reload (good and broken files), socket-change
//! warning, SIGTERM. Every step waits on an acknowledgement (a log line or a notify
//! datagram), never on a sleep.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use crate::common::process::Running;
use crate::common::*;
use indymilter_test::Status;

fn recv_notify(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("sd_notify datagram");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

async fn signed_with(port: u16) -> Vec<String> {
    let env = Envelope {
        client_ip: "127.0.0.1".into(),
        ..Default::default()
    };
    let out = deliver(
        ([127, 0, 0, 1], port).into(),
        &env,
        "From: alice@example.com\r\nSubject: r\r\n\r\nbody\r\n",
    )
    .await;
    assert!(matches!(out.status, Status::Continue | Status::Accept));
    out.inserted("DKIM-Signature")
        .iter()
        .map(|s| tag(s, "s").unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_reload_broken_reload_socket_change_and_term() {
    let k = keys();
    let s = Scratch::new("daemon-bin");
    let port = crate::common::postfix::free_port();
    let signing = example_com_rsa_ed(&s.0, &[("*@example.com", "k-rsa")]);
    let base = format!("socket = \"inet:{port}@127.0.0.1\"\nmode = \"s\"\n[signing]\n{signing}multiple_signatures = true\n");
    let cfg = s.write("mailseal.toml", &base);
    let notify_path = s.0.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();

    let mut d = Running::start(&cfg, &[("NOTIFY_SOCKET", notify_path.as_os_str())]);
    assert_eq!(recv_notify(&notify), "READY=1");
    d.wait_log("listening");
    assert_eq!(signed_with(port).await, vec!["rsa"]);

    // Good reload: a second SigningTable row (dual signing) applies to new connections.
    std::fs::write(
        s.0.join("signing.table"),
        "*@example.com k-rsa\n*@example.com k-ed\n",
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    assert_eq!(recv_notify(&notify), "RELOADING=1");
    d.wait_log("configuration reloaded");
    assert_eq!(recv_notify(&notify), "READY=1");
    let mut sels = signed_with(port).await;
    sels.sort();
    assert_eq!(sels, vec!["ed", "rsa"]);

    // Broken reload: the error names file and line; the running configuration stays.
    std::fs::write(
        s.0.join("key.table"),
        "k-rsa example.com:rsa:/nonexistent/key.pem\nbroken-line\n",
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    let line = d.wait_log("reload failed");
    let detail = d.wait_log("key.table:2");
    assert!(line.contains("keeping the running configuration"), "{line}");
    assert!(detail.contains("key.table:2"), "{detail}");
    let mut sels = signed_with(port).await;
    sels.sort();
    assert_eq!(sels, vec!["ed", "rsa"]);

    // A key file made unreadable: same, with the key file named.
    std::fs::write(
        s.0.join("key.table"),
        format!(
            "k-rsa example.com:rsa:{}\nk-ed example.com:ed:{}\n",
            k.rsa.path.display(),
            s.0.join("gone.pem").display()
        ),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    d.wait_log("reload failed");
    d.wait_log("gone.pem");
    assert_eq!(signed_with(port).await.len(), 2);

    // A socket change needs a restart, and says so.
    std::fs::write(
        s.0.join("key.table"),
        format!(
            "k-rsa example.com:rsa:{}\nk-ed example.com:ed:{}\n",
            k.rsa.path.display(),
            k.ed.path.display()
        ),
    )
    .unwrap();
    std::fs::write(&cfg, base.replace(&format!("inet:{port}@"), "inet:1@")).unwrap();
    d.signal(libc::SIGHUP);
    d.wait_log("restart mailseal to apply it");
    d.wait_log("configuration reloaded");
    assert_eq!(signed_with(port).await.len(), 2);

    // SIGTERM: says STOPPING=1 (after the READY=1 of each reload above) and exits 0.
    d.signal(libc::SIGTERM);
    let mut states = Vec::new();
    for _ in 0..10 {
        let st = recv_notify(&notify);
        states.push(st.clone());
        if st == "STOPPING=1" {
            break;
        }
    }
    assert_eq!(
        states.last().map(String::as_str),
        Some("STOPPING=1"),
        "{states:?}"
    );
    let status = d.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    http(addr, "GET", path).await
}

pub(crate) async fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_counts_messages_results_replies_and_connections() {
    use crate::common::dns::{DnsServer, Zones};
    let zones = Zones::default();
    zones.txt("example.com", "v=spf1 ip4:192.0.2.10 -all");
    let dns = DnsServer::start(zones).await;
    let s = Scratch::new("metrics");
    let port = crate::common::postfix::free_port();
    let mport = crate::common::postfix::free_port();
    let signing = example_com_rsa(&s.0, "*@example.com");
    let cfg = s.write(
        "mailseal.toml",
        &format!(
            "socket = \"inet:{port}@127.0.0.1\"\n[signing]\n{signing}\n[dns]\nnameservers = [\"{}\"]\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n",
            dns.addr
        ),
    );
    let notify_path = s.0.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let d = Running::start(&cfg, &[("NOTIFY_SOCKET", notify_path.as_os_str())]);
    assert_eq!(recv_notify(&notify), "READY=1");
    let maddr: std::net::SocketAddr = ([127, 0, 0, 1], mport).into();

    assert_eq!(signed_with(port).await, vec!["rsa"]);
    let env = Envelope::default();
    let mut c = Client::open(([127, 0, 0, 1], port).into()).await;
    c.hello(&env).await;
    let out = c
        .message(
            &env,
            "From: a@example.com\r\nSubject: in\r\n\r\nbody\r\n",
            65535,
        )
        .await;
    assert_eq!(out.status, Status::Continue);

    let text = http_get(maddr, "/metrics").await;
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    for line in [
        "mailseal_messages_total{decision=\"sign\"} 1",
        "mailseal_messages_total{decision=\"verify\"} 1",
        "mailseal_results_total{method=\"spf\",result=\"pass\"} 1",
        "mailseal_results_total{method=\"dkim\",result=\"none\"} 1",
        "mailseal_replies_total{reply=\"accept\"} 2",
        "mailseal_dns_lookup_seconds_count{phase=\"spf\"} 1",
        "mailseal_active_connections 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    c.close().await;
    // The gauge drops when the connection's state is gone (bounded wait).
    let mut gone = false;
    for _ in 0..50 {
        if http_get(maddr, "/metrics")
            .await
            .contains("mailseal_active_connections 0")
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "active connections never dropped to 0");
    assert!(http_get(maddr, "/other").await.starts_with("HTTP/1.1 404"));
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_replaces_a_stale_one_and_has_the_configured_mode() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let s = Scratch::new("unix-sock");
    let sock = s.0.join("mailseal.sock");
    // A stale socket file left by an earlier run.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(std::fs::symlink_metadata(&sock)
        .unwrap()
        .file_type()
        .is_socket());
    let signing = example_com_rsa(&s.0, "*@example.com");
    let cfg = s.write(
        "m.toml",
        &format!(
            // threads = 0: the multi-threaded runtime (the other binary tests run the
            // default single-threaded one).
            "socket = \"unix:{}\"\nsocket_mode = \"0600\"\nmode = \"s\"\nthreads = 0\n[signing]\n{signing}",
            sock.display()
        ),
    );
    let mut d = Running::start(&cfg, &[]);
    d.wait_log("listening");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mut conn = indymilter_test::TestConnection::configure()
        .available_opts(indymilter::ProtoOpts::all())
        .exact_leading_space(true)
        .open_unix(&sock)
        .await
        .unwrap();
    conn.connect(
        "localhost",
        ("127.0.0.1".parse::<std::net::IpAddr>().unwrap(), 0),
    )
    .await
    .unwrap();
    conn.mail(["alice@example.com"]).await.unwrap();
    conn.header("From", " alice@example.com").await.unwrap();
    conn.eoh().await.unwrap();
    conn.body(b"hi\r\n".to_vec()).await.unwrap();
    let (actions, st) = conn.eom().await.unwrap();
    assert_eq!(st, Status::Continue);
    assert!(actions.has_insert_header(
        indymilter_test::any(),
        "DKIM-Signature",
        indymilter_test::any()
    ));
    conn.close().await.unwrap();
    // Something else at the path is left alone, and the error says so.
    drop(d);
    std::fs::remove_file(&sock).ok();
    std::fs::write(&sock, "not a socket").unwrap();
    let o = cli(&["run", "-c", cfg.to_str().unwrap()], None).await;
    assert!(!o.ok);
    assert!(
        o.stderr.contains("exists and is not a socket"),
        "{}",
        o.stderr
    );
    assert_eq!(std::fs::read_to_string(&sock).unwrap(), "not a socket");
}

/// systemd may send SIGHUP (ExecReload) the moment READY=1 arrives: the daemon must already
/// handle it (a reload), not die of the default action.
#[test]
fn sighup_right_after_ready_reloads() {
    let s = Scratch::new("daemon-early-hup");
    for round in 0..10 {
        let port = crate::common::postfix::free_port();
        let cfg = s.write(
            "mailseal.toml",
            &TestConfig::default()
                .set("socket", format!("inet:{port}@127.0.0.1"))
                .set("authserv_id", "mx.test")
                .text(),
        );
        let notify_path = s.0.join(format!("notify-{round}.sock"));
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut d = Running::start(&cfg, &[("NOTIFY_SOCKET", notify_path.as_os_str())]);
        assert_eq!(recv_notify(&notify), "READY=1");
        d.signal(libc::SIGHUP);
        d.wait_log("configuration reloaded");
        assert!(d.child.try_wait().unwrap().is_none(), "round {round}: died");
    }
}

/// As systemd runs it: every stderr line carries its sd-daemon priority and no timestamp
/// (the journal adds one), multi-line errors keep theirs; WATCHDOG=1 comes at half
/// WATCHDOG_USEC; log_level changes on reload; settings read at start only are named; the
/// reload counters and the zero series are on /metrics, which also answers HEAD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_priorities_watchdog_reload_names_and_metrics() {
    let s = Scratch::new("journal");
    let port = crate::common::postfix::free_port();
    let mport = crate::common::postfix::free_port();
    let signing = example_com_rsa(&s.0, "*@example.com");
    let base = format!(
        "socket = \"inet:{port}@127.0.0.1\"\nmode = \"s\"\nlog_level = \"warn\"\n[signing]\n{signing}\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n"
    );
    let cfg = s.write("mailseal.toml", &base);
    let notify_path = s.0.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut d = Running::under_journal(
        &cfg,
        &[
            ("NOTIFY_SOCKET", notify_path.as_os_str()),
            ("WATCHDOG_USEC", std::ffi::OsStr::new("200000")),
        ],
    );
    assert_eq!(recv_notify(&notify), "READY=1");
    // Pings at half the interval: five in well under the 20 s read timeout.
    let started = std::time::Instant::now();
    for _ in 0..5 {
        assert_eq!(recv_notify(&notify), "WATCHDOG=1");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let maddr: std::net::SocketAddr = ([127, 0, 0, 1], mport).into();
    // Every known series from the start, at zero.
    let text = http_get(maddr, "/metrics").await;
    for line in [
        "mailseal_messages_total{decision=\"verify\"} 0",
        "mailseal_results_total{method=\"arc\",result=\"permerror\"} 0",
        "mailseal_replies_total{reply=\"reject\"} 0",
        "mailseal_reports_total{outcome=\"withheld\"} 0",
        "mailseal_config_reloads_total{result=\"failure\"} 0",
        "mailseal_message_seconds_count{decision=\"sign\"} 0",
        "mailseal_dns_lookup_seconds_count{phase=\"dmarc\"} 0",
        "mailseal_config_last_reload_successful 1",
        &format!(
            "mailseal_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
        "# TYPE process_cpu_seconds_total counter",
        "# TYPE process_resident_memory_bytes gauge",
        "process_open_fds ",
        "process_max_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert_eq!(signed_with(port).await, vec!["rsa"]);

    // A broken reload: an error of several lines, each one an error for the journal.
    let good_keys = std::fs::read_to_string(s.0.join("key.table")).unwrap();
    std::fs::write(s.0.join("key.table"), "broken-line\nalso broken\n").unwrap();
    d.signal(libc::SIGHUP);
    let first = d.wait_log("reload failed");
    assert!(first.starts_with("<3>"), "{first}");
    let detail = d.wait_log("key.table:2");
    assert!(detail.starts_with("<3>"), "{detail}");

    // A good reload that lowers the level to info and changes what only a restart applies.
    std::fs::write(s.0.join("key.table"), good_keys).unwrap();
    std::fs::write(
        &cfg,
        base.replace(
            "log_level = \"warn\"",
            "log_level = \"info\"\nmax_connections = 7\nconnection_timeout = \"100s\"",
        ),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    let named = d.wait_log("max_connections changed from 200 to 7");
    assert!(
        named.starts_with("<4>") && named.contains("restart mailseal"),
        "{named}"
    );
    d.wait_log("connection_timeout changed");
    let level = d.wait_log("log_level is now info");
    assert!(level.starts_with("<6>"), "{level}");
    let reloaded = d.wait_log("configuration reloaded");
    assert!(reloaded.starts_with("<6>"), "{reloaded}");
    // Info lines now: the message's line.
    assert_eq!(signed_with(port).await, vec!["rsa"]);
    let line = d.wait_log("signed d=example.com");
    assert!(line.starts_with("<6>"), "{line}");
    // No timestamps, no level words: the journal has both.
    for l in &d.seen {
        assert!(
            l.starts_with('<') && !l.contains("INFO") && !l.contains("ERROR"),
            "{l}"
        );
        assert!(
            !l.get(3..7)
                .is_some_and(|y| y.starts_with("20") && y.bytes().all(|b| b.is_ascii_digit())),
            "{l}"
        );
    }

    let text = http_get(maddr, "/metrics").await;
    for line in [
        "mailseal_config_reloads_total{result=\"success\"} 1",
        "mailseal_config_reloads_total{result=\"failure\"} 1",
        "mailseal_config_last_reload_successful 1",
        "mailseal_message_seconds_count{decision=\"sign\"} 2",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // HEAD: the headers, no body.
    let head = http(maddr, "HEAD", "/metrics").await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Length: ") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
}
