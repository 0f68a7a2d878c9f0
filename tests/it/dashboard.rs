//! The dashboard (`[dashboard]`) of a test daemon with imported fixture reports, opened in
//! Debian's headless Chromium: the rendered figures read from the DOM, the CSP header, no
//! host named but the daemon's, a screenshot kept; and HTTPS with basic authentication.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::dns::{DnsServer, Zones};
use crate::common::process::Running;
use crate::common::*;

const CHROMIUM: &str = "/usr/bin/chromium";

/// An aggregate report for example.com on the UTC day `day`: our relay 192.0.2.10 (100,
/// signed s2026, pass), a spoofer 198.51.100.7 (5, fail) and a forwarder 203.0.113.9 (3,
/// DKIM pass, SPF fail).
fn report(org: &str, id: usize, day: i64) -> String {
    let row = |ip: &str, n: u32, dkim: &str, spf: &str, sel: &str| {
        format!(
            "<record><row><source_ip>{ip}</source_ip><count>{n}</count><policy_evaluated><disposition>none</disposition><dkim>{dkim}</dkim><spf>{spf}</spf></policy_evaluated></row><identifiers><header_from>example.com</header_from></identifiers><auth_results><dkim><domain>example.com</domain><selector>{sel}</selector><result>{dkim}</result></dkim><spf><domain>example.com</domain><result>{spf}</result></spf></auth_results></record>"
        )
    };
    format!(
        "<?xml version=\"1.0\"?><feedback><report_metadata><org_name>{org}</org_name><email>dmarc@{org}</email><report_id>{org}-{id}</report_id><date_range><begin>{day}</begin><end>{}</end></date_range></report_metadata><policy_published><domain>example.com</domain><p>none</p></policy_published>{}{}{}</feedback>",
        day + 86_399,
        row("192.0.2.10", 100, "pass", "pass", "s2026"),
        row("198.51.100.7", 5, "fail", "fail", "s2026"),
        row("203.0.113.9", 3, "pass", "fail", "s2026"),
    )
}

/// GET `path` over plain HTTP: (head, body).
fn get(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

/// Debian's Chromium, headless (as root: without its sandbox), on `url`.
fn chromium(args: &[String], url: &str) -> std::process::Output {
    std::process::Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
        ])
        .args(args)
        .arg(url)
        .output()
        .unwrap()
}

fn artifacts() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_real_browser() {
    if !Path::new(CHROMIUM).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is not installed (scripts/test.sh installs it)"
        );
        eprintln!("SKIPPED: {CHROMIUM} is not installed");
        return;
    }
    let s = Scratch::new("dashboard");
    let dns = DnsServer::start(Zones::default()).await;
    let port = crate::common::postfix::free_port();
    let web = crate::common::postfix::free_port();
    let signing = example_com_rsa(&s.0, "*@example.com");
    let cfg = s.write(
        "m.toml",
        &format!(
            "socket = \"inet:{port}@127.0.0.1\"\n[reports]\nstore = \"r.sqlite\"\norg_name = \"example.net\"\nemail = \"dmarc-reports@example.net\"\n[signing]\n{signing}internal_hosts = [\"192.0.2.0/24\"]\n[dashboard]\nlisten = \"127.0.0.1:{web}\"\nforwarders = [\".forward.example\"]\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n",
            dns.addr
        ),
    );
    // Ten days of reports from two receivers, imported as an admin would.
    let today = mailseal::report::day_start(mailseal::report::now());
    let mut files = Vec::new();
    for k in 0..10 {
        for (j, org) in ["google.com", "outlook.com"].iter().enumerate() {
            files.push(s.write(
                &format!("{org}-{k}.xml"),
                &report(org, k * 2 + j, today - k as i64 * 86_400),
            ));
        }
    }
    // And a TLS report for today: a DANE policy for mx1 (500 successful, 5 with an expired
    // certificate) and an MTA-STS policy covering mx1 and mx2 (300 successful, 2 at mx2
    // without STARTTLS).
    let date = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_secs(today as u64),
    )
    .to_string();
    let date = &date[..10];
    files.push(s.write(
        "tls.json",
        &format!(
            r#"{{"organization-name":"google.com","date-range":{{"start-datetime":"{date}T00:00:00Z","end-datetime":"{date}T23:59:59Z"}},"contact-info":"smtp-tls-reporting@google.com","report-id":"tls-1","policies":[
            {{"policy":{{"policy-type":"tlsa","policy-domain":"example.com","mx-host":"mx1.example.com"}},"summary":{{"total-successful-session-count":500,"total-failure-session-count":5}},"failure-details":[{{"result-type":"certificate-expired","receiving-mx-hostname":"mx1.example.com","failed-session-count":5}}]}},
            {{"policy":{{"policy-type":"sts","policy-domain":"example.com","mx-host":["mx1.example.com","mx2.example.com"]}},"summary":{{"total-successful-session-count":300,"total-failure-session-count":2}},"failure-details":[{{"result-type":"starttls-not-supported","receiving-mx-hostname":"mx2.example.com","failed-session-count":2}}]}}]}}"#
        ),
    ));
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "reports".as_ref(),
        "import".as_ref(),
        "-c".as_ref(),
        cfg.as_os_str(),
    ];
    args.extend(files.iter().map(|f| f.as_os_str()));
    let out = cli_blocking(&args, None);
    assert!(out.ok && out.stdout.contains("21 stored"), "{}", out.text());
    // What we signed those days (as the daemon's writer counts it).
    {
        let mut store = mailseal::report::store::Store::open(&mailseal::config::StoreSpec::Sqlite(
            s.0.join("r.sqlite"),
        ))
        .unwrap();
        let counts: Vec<_> = (0..10)
            .map(|k| mailseal::report::store::SignedCount {
                day: today - k * 86_400,
                domain: "example.com".into(),
                selector: "s2026".into(),
                algorithm: "rsa".into(),
                count: 210,
            })
            .collect();
        store.add_signed(&counts).unwrap();
    }
    let mut d = Running::started(&cfg, &[]);
    d.wait_log("dashboard on http://");
    let addr = format!("127.0.0.1:{web}");
    let url = format!("http://{addr}/?domain=example.com&days=30");

    // The headers, and no host named but the daemon's.
    let a = addr.clone();
    let ((head, html), (_, css)) = tokio::task::spawn_blocking(move || {
        (
            get(&a, "/?domain=example.com&days=30"),
            get(&a, "/style.css"),
        )
    })
    .await
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("Content-Security-Policy: default-src 'self'"),
        "{head}"
    );
    for (what, text) in [("html", &html), ("css", &css)] {
        assert!(!text.contains("://"), "{what} names a host: {text}");
        assert!(!text.contains("src="), "{what} loads something: {text}");
        assert!(
            !text.contains("@import") && !text.contains("url("),
            "{what}"
        );
    }

    // The page as Chromium renders it.
    let dom = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || chromium(&["--dump-dom".into()], &url))
            .await
            .unwrap()
    };
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    // 20 reports × 108 messages, 103 of them passing.
    assert!(dom.contains("<span id=\"messages\">2160</span>"), "{dom}");
    assert!(dom.contains("<span id=\"pass-rate\">95.4%</span>"), "{dom}");
    assert!(dom.contains("<span id=\"policy\">none</span>"), "{dom}");
    // Sources: the spoofer first, our relay marked ours; the forwarder apart.
    let sources = dom.split("id=\"sources\"").nth(1).unwrap_or_default();
    let spoofer = sources.find("198.51.100.7").expect("spoofer listed");
    let relay = sources.find("192.0.2.10").expect("relay listed");
    assert!(spoofer < relay, "failing first");
    assert!(
        sources[relay..]
            .split("</tr>")
            .next()
            .unwrap()
            .contains(">yes<"),
        "our relay is ours"
    );
    let forwarder = sources.find("203.0.113.9").expect("forwarder listed");
    assert!(
        !sources[forwarder..]
            .split("</tr>")
            .next()
            .unwrap()
            .contains(">yes<"),
        "a forwarder passing our signature on is not ours"
    );
    let forwarding = dom.split("id=\"forwarding\"").nth(1).unwrap_or_default();
    assert!(forwarding.contains("203.0.113.9"), "{forwarding}");
    // Our selector: signed 2100, reported 2060 pass (relay 2000 + forwarder 60), 100 fail.
    let selectors = dom.split("id=\"selectors\"").nth(1).unwrap_or_default();
    assert!(
        selectors.contains("<td>s2026</td><td>rsa</td><td class=\"n\">2100</td><td class=\"n\">2060</td><td class=\"n\">100</td>"),
        "{selectors}"
    );
    // TLS: per MX, and per failure type.
    assert!(dom.contains("<span id=\"tls-ok\">800</span>"), "{dom}");
    assert!(dom.contains("<span id=\"tls-failed\">7</span>"), "{dom}");
    let per_mx = dom.split("id=\"tls-mx\"").nth(1).unwrap_or_default();
    for row in [
        "<td>mx1.example.com</td><td class=\"n\">500</td><td class=\"n\">5</td>",
        "<td>mx1.example.com mx2.example.com</td><td class=\"n\">300</td><td class=\"n\">0</td>",
        "<td>mx2.example.com</td><td class=\"n\">0</td><td class=\"n\">2</td>",
    ] {
        assert!(per_mx.contains(row), "{row}\n{per_mx}");
    }
    let types = dom.split("id=\"tls\"").nth(1).unwrap_or_default();
    assert!(
        types.contains(
            "<td>mx2.example.com</td><td>starttls-not-supported</td><td class=\"n\">2</td>"
        ),
        "{types}"
    );
    // A screenshot, kept as the test's artifact.
    let shot = artifacts().join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let st = tokio::task::spawn_blocking(move || {
        chromium(
            &[
                "--hide-scrollbars".into(),
                "--window-size=1100,1700".into(),
                format!("--screenshot={}", shot.display()),
            ],
            &url,
        )
    })
    .await
    .unwrap();
    let shot = artifacts().join("dashboard.png");
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 10_000)
            .unwrap_or(false),
        "no screenshot: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    d.signal(libc::SIGTERM);
}

/// Away from loopback the dashboard needs HTTPS and a password: check-config says so; with
/// both, an unauthenticated request gets 401 and the right password the page.
#[tokio::test]
async fn https_and_basic_authentication() {
    let s = Scratch::new("dashboard-auth");
    let web = crate::common::postfix::free_port();
    let base = "[reports]\nstore = \"r.sqlite\"\norg_name = \"example.net\"\nemail = \"dmarc-reports@example.net\"\n";
    let open = s.write(
        "open.toml",
        &format!("{base}[dashboard]\nlisten = \"0.0.0.0:{web}\"\n"),
    );
    let out = cli_blocking(&["check-config", "-c", open.to_str().unwrap()], None);
    assert!(
        !out.ok && out.text().contains("not loopback"),
        "{}",
        out.text()
    );

    let (cert, key) = crate::common::self_signed(&s.0, "localhost");
    let pw = s.write("passwd", "# dashboard users\nadmin:s3cret-pass\n");
    use std::os::unix::fs::PermissionsExt;
    for f in [&key, &pw] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let port = crate::common::postfix::free_port();
    let cfg = s.write(
        "m.toml",
        &format!(
            "socket = \"inet:{port}@127.0.0.1\"\n{base}[dashboard]\nlisten = \"127.0.0.1:{web}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\npassword_file = \"{}\"\n",
            cert.display(),
            key.display(),
            pw.display()
        ),
    );
    let mut d = Running::started(&cfg, &[]);
    d.wait_log("dashboard on https://");
    let fetch = |auth: Option<&str>| {
        let auth = auth.map(|a| {
            use base64::Engine;
            format!(
                "Authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(a)
            )
        });
        async move {
            let tls = mailseal::tls::client_config(mailseal::tls::Check::None, None).unwrap();
            let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", web))
                .await
                .unwrap();
            let mut s = connector
                .connect("localhost".try_into().unwrap(), tcp)
                .await
                .unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(
                format!(
                    "GET / HTTP/1.1\r\nHost: localhost\r\n{}\r\n",
                    auth.unwrap_or_default()
                )
                .as_bytes(),
            )
            .await
            .unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            String::from_utf8_lossy(&out).into_owned()
        }
    };
    let none = fetch(None).await;
    assert!(
        none.starts_with("HTTP/1.1 401") && none.contains("WWW-Authenticate: Basic"),
        "{none}"
    );
    let wrong = fetch(Some("admin:guess")).await;
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    let right = fetch(Some("admin:s3cret-pass")).await;
    assert!(right.starts_with("HTTP/1.1 200"), "{right}");
    assert!(right.contains("Content-Security-Policy: default-src 'self'"));
    d.signal(libc::SIGTERM);
}
