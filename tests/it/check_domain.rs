//! `mailseal check-domain` against a loopback DNS server and a local HTTPS server (test CA)
//! serving the MTA-STS policies.

use std::net::Ipv4Addr;
use std::process::Command;

use crate::common::dns::{DnsServer, Rr, Zones};
use crate::common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let st = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "openssl {args:?}");
}

/// A test CA and a certificate for both policy hosts.
fn make_certs(dir: &std::path::Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=mailseal test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=mta-sts.good.example",
        ],
    );
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=DNS:mta-sts.good.example,DNS:mta-sts.bad.example\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
}

/// An HTTPS server answering each Host with its policy.
async fn https_server(dir: &std::path::Path) -> u16 {
    let acceptor = tls_acceptor(
        &std::fs::read(dir.join("srv.pem")).unwrap(),
        &std::fs::read(dir.join("srv.key")).unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let n = tls.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                let body = if req.contains("host: mta-sts.good.example") {
                    "version: STSv1\r\nmode: enforce\r\nmx: *.good.example\r\nmax_age: 604800\r\n"
                } else {
                    "version: STSv1\r\nmode: testing\r\nmx: mail.other.example\r\nmax_age: 3600\r\n"
                };
                let resp = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

fn zones() -> Zones {
    let k = keys();
    let z = Zones::default();
    let lo = Rr::A(Ipv4Addr::LOCALHOST);
    // good.example: everything in order.
    z.add("good.example", Rr::Mx(10, "mx1.good.example".into()));
    z.add("mx1.good.example", lo.clone());
    z.txt("good.example", "v=spf1 mx include:_spf.good.example -all");
    z.txt("_spf.good.example", "v=spf1 ip4:192.0.2.0/24 -all");
    z.txt(
        "_dmarc.good.example",
        "v=DMARC1; p=reject; rua=mailto:d@good.example,mailto:agg@reports.example",
    );
    z.txt("good.example._report._dmarc.reports.example", "v=DMARC1");
    z.txt("sel._domainkey.good.example", &k.rsa.record);
    z.txt("ed._domainkey.good.example", &k.ed.record);
    z.txt("_mta-sts.good.example", "v=STSv1; id=2026112301");
    z.add("mta-sts.good.example", lo.clone());
    z.txt(
        "_smtp._tls.good.example",
        "v=TLSRPTv1; rua=mailto:tls@good.example",
    );
    // bad.example: a catalogue of mistakes.
    z.add("bad.example", Rr::Mx(10, "mx.bad.example".into()));
    z.add("mx.bad.example", lo.clone());
    let chain: Vec<String> = (1..=11)
        .map(|i| format!("include:i{i}.bad.example"))
        .collect();
    z.txt(
        "bad.example",
        &format!(
            "v=spf1 a:gone1.bad.example a:gone2.bad.example a:gone3.bad.example {} +all",
            chain.join(" ")
        ),
    );
    for i in 1..=10 {
        z.txt(&format!("i{i}.bad.example"), "v=spf1 ip4:198.51.100.1 -all");
    }
    // A prefix length receivers refuse (RFC 7208 §12: at most 32).
    z.txt("i11.bad.example", "v=spf1 ip4:198.51.100.1/33 -all");
    z.txt(
        "_dmarc.bad.example",
        "v=DMARC1; p=none; rua=mailto:agg@elsewhere.example",
    );
    z.txt(
        "weak._domainkey.bad.example",
        &format!("{}; t=y", k.rsa512.record),
    );
    z.txt("_mta-sts.bad.example", "v=STSv1; id=1");
    z.add("mta-sts.bad.example", lo);
    z
}

fn run(
    dns: &DnsServer,
    ca: &std::path::Path,
    port: u16,
    domain: &str,
    selectors: &[&str],
) -> (bool, Vec<Value>) {
    let s = Scratch::new("checkdomain");
    let cfg = s.write(
        "m.toml",
        &format!(
            "[dns]\nnameservers = [\"{}\"]\ntimeout = \"2s\"\n",
            dns.addr
        ),
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailseal"));
    cmd.args(["check-domain", domain, "--json", "-c"]).arg(&cfg);
    cmd.arg("--ca-file")
        .arg(ca)
        .args(["--https-port", &port.to_string()]);
    for s in selectors {
        cmd.args(["--selector", s]);
    }
    let out = cmd.output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.success(), v.as_array().unwrap().clone())
}

fn has(findings: &[Value], area: &str, level: &str, needle: &str) -> bool {
    findings.iter().any(|f| {
        f["area"] == area && f["level"] == level && f["message"].as_str().unwrap().contains(needle)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_and_bad_domains() {
    let dir = Scratch::new("certs");
    make_certs(&dir.0);
    let port = https_server(&dir.0).await;
    let dns = DnsServer::start(zones()).await;
    let ca = dir.0.join("ca.pem");

    // The DNS and HTTPS servers run in this runtime; the command runs on a blocking thread.
    let (ok, f) = tokio::task::spawn_blocking({
        let dns = DnsServer {
            addr: dns.addr,
            zones: dns.zones.clone(),
        };
        let ca = ca.clone();
        move || run(&dns, &ca, port, "good.example", &["sel", "ed"])
    })
    .await
    .unwrap();
    let dump = serde_json::to_string_pretty(&f).unwrap();
    assert!(ok, "good.example should have no failures:\n{dump}");
    for (area, level, needle) in [
        ("mx", "pass", "10 mx1.good.example"),
        ("spf", "pass", "2 DNS-querying terms"),
        ("spf", "pass", "-all"),
        ("dmarc", "pass", "p=reject"),
        (
            "dmarc",
            "pass",
            "authorized by good.example._report._dmarc.reports.example",
        ),
        ("dkim", "pass", "RSA 2048 bits"),
        ("dkim", "pass", "Ed25519"),
        ("mta-sts", "pass", "mode: enforce"),
        ("mta-sts", "pass", "MX mx1.good.example matches"),
        ("tls-rpt", "pass", "v=TLSRPTv1"),
    ] {
        assert!(
            has(&f, area, level, needle),
            "missing {level} {area} {needle:?}:\n{dump}"
        );
    }

    let (ok, f) = tokio::task::spawn_blocking({
        let dns = DnsServer {
            addr: dns.addr,
            zones: dns.zones.clone(),
        };
        let ca = ca.clone();
        move || run(&dns, &ca, port, "bad.example", &["weak", "missing"])
    })
    .await
    .unwrap();
    let dump = serde_json::to_string_pretty(&f).unwrap();
    assert!(!ok, "bad.example must fail:\n{dump}");
    for (area, level, needle) in [
        ("spf", "fail", "14 DNS-querying terms (limit 10)"),
        ("spf", "fail", "3 void lookups"),
        ("spf", "fail", "+all"),
        (
            "spf",
            "fail",
            "include:i11.bad.example has a syntax error (permerror)",
        ),
        ("dmarc", "warn", "p=none: monitoring only"),
        ("dmarc", "fail", "external destination not authorized"),
        ("dkim", "fail", "512 bits"),
        ("dkim", "warn", "t=y"),
        (
            "dkim",
            "fail",
            "no DKIM key at missing._domainkey.bad.example",
        ),
        ("mta-sts", "warn", "mode: testing"),
        ("mta-sts", "warn", "max_age 3600"),
        (
            "mta-sts",
            "fail",
            "MX mx.bad.example matches no mx: pattern",
        ),
        ("tls-rpt", "warn", "no TLS-RPT record"),
    ] {
        assert!(
            has(&f, area, level, needle),
            "missing {level} {area} {needle:?}:\n{dump}"
        );
    }
}
