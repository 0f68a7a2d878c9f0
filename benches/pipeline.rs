//! Criterion micro-benchmarks: header reconstruction, the per-message path without crypto,
//! signing (RSA-2048, Ed25519) and verification with a warm DNS cache.
//!   cargo bench --ignore-rust-version --bench pipeline

#[path = "../tests/it/common/dns.rs"]
#[allow(dead_code)]
mod dns;

use std::hint::black_box;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use mailseal::config::Config;
use mailseal::message::{HeaderBlock, HeaderLimits};
use mailseal::pipeline::context::Context;
use mailseal::pipeline::message::{ConnInfo, Message};
use mailseal::pipeline::{Decision, Outbound};

const HEADERS: &[(&str, &str)] = &[
    ("Received", " from client.example (client.example [192.0.2.10])\n\tby mx.test (Postfix) with ESMTPS id Q1\n\tfor <bob@example.org>; Mon, 23 Nov 2026 10:00:00 +0000"),
    ("From", " Alice <alice@example.com>"),
    ("To", " Bob <bob@example.org>"),
    ("Subject", " a typical message"),
    ("Date", " Mon, 23 Nov 2026 10:00:00 +0000"),
    ("Message-ID", " <1.bench@example.com>"),
    ("MIME-Version", " 1.0"),
    ("Content-Type", " text/plain; charset=utf-8"),
];

fn body() -> Vec<u8> {
    "The quick brown fox jumps over the lazy dog. 0123456789 abcdefghij\r\n"
        .repeat(60)
        .into_bytes()
}

fn key(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let p = dir.join(name);
    if !p.exists() {
        assert!(Command::new("openssl")
            .args(args)
            .arg("-out")
            .arg(&p)
            .status()
            .unwrap()
            .success());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    p
}

fn config(dir: &Path, extra: &str, signing_table: &str) -> Config {
    let rsa = key(
        dir,
        "rsa.pem",
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
    );
    let ed = key(dir, "ed.pem", &["genpkey", "-algorithm", "ed25519"]);
    std::fs::write(
        dir.join("key.table"),
        format!(
            "rsa example.com:rsa:{}\ned example.com:ed:{}\n",
            rsa.display(),
            ed.display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("signing.table"), signing_table).unwrap();
    let p = dir.join("m.toml");
    std::fs::write(&p, format!("authserv_id = \"mx.test\"\n{extra}\n[signing]\nkey_table = \"key.table\"\nsigning_table = \"signing.table\"\n")).unwrap();
    Config::load(&p).unwrap()
}

/// One message through the message path, as the milter callbacks drive it.
async fn message(
    snap: &Arc<Context>,
    decision: Decision,
    signature: Option<&str>,
    body: &[u8],
) -> Option<mailseal::pipeline::Outcome> {
    let ip = "192.0.2.10".parse().ok();
    let mut conn = ConnInfo::new(snap, ip, "client.example".into(), None, true);
    conn.helo = "client.example".into();
    let mut m = Message::begin(snap, &[b"<alice@example.com>".to_vec()]);
    if let Some(sig) = signature {
        m.header(snap, &conn, b"DKIM-Signature", format!(" {sig}").as_bytes());
    }
    for (n, v) in HEADERS {
        m.header(snap, &conn, n.as_bytes(), v.as_bytes());
    }
    m.end_of_headers(snap, &conn, decision, false);
    m.body(snap, body);
    m.finish(snap, &conn).await
}

fn benches(c: &mut Criterion) {
    let dir = std::env::temp_dir().join("mailseal-bench-keys");
    std::fs::create_dir_all(&dir).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let body = body();

    c.bench_function("header reconstruction (8 fields)", |b| {
        let limits = HeaderLimits {
            max_bytes: 1 << 20,
            max_fields: 1000,
        };
        b.iter(|| {
            let mut h = HeaderBlock::default();
            for (n, v) in HEADERS {
                h.push(n.as_bytes(), v.as_bytes(), true, limits);
            }
            black_box(h.raw().len())
        })
    });

    let outbound = Decision::Sign(Outbound::InternalHost("127.0.0.1".parse().unwrap()));
    let nokey = rt.block_on(async {
        Arc::new(Context::for_tools(config(&dir, "", "*@nomatch.example rsa\n")).unwrap())
    });
    c.bench_function(
        "per-message path without crypto (outbound, no key matches)",
        |b| {
            b.to_async(&rt)
                .iter(|| message(&nokey, outbound.clone(), None, &body))
        },
    );
    let rsa = rt.block_on(async {
        Arc::new(Context::for_tools(config(&dir, "", "*@example.com rsa\n")).unwrap())
    });
    c.bench_function("sign 4 KB message, RSA-2048", |b| {
        b.to_async(&rt)
            .iter(|| message(&rsa, outbound.clone(), None, &body))
    });
    let ed = rt.block_on(async {
        Arc::new(Context::for_tools(config(&dir, "", "*@example.com ed\n")).unwrap())
    });
    c.bench_function("sign 4 KB message, Ed25519", |b| {
        b.to_async(&rt)
            .iter(|| message(&ed, outbound.clone(), None, &body))
    });

    // Verification: an Ed25519-signed message, SPF, DKIM, DMARC, ARC against a loopback DNS
    // server, with the resolver cache warm.
    let signed = rt.block_on(async {
        let o = message(&ed, outbound.clone(), None, &body).await.unwrap();
        o.edits.inserted("DKIM-Signature").unwrap().to_string()
    });
    let (verify_snap, _server) = rt.block_on(async {
        let z = dns::Zones::default();
        z.txt("example.com", "v=spf1 ip4:192.0.2.10 -all");
        z.txt("_dmarc.example.com", "v=DMARC1; p=reject");
        let pubkey = mailseal::config::keys::load_key(&dir.join("ed.pem"))
            .unwrap()
            .public;
        use base64::Engine;
        z.txt(
            "ed._domainkey.example.com",
            &format!(
                "v=DKIM1; k=ed25519; p={}",
                base64::engine::general_purpose::STANDARD.encode(pubkey)
            ),
        );
        z.txt("client.example", "v=spf1 ip4:192.0.2.10 -all");
        let server = dns::DnsServer::start(z).await;
        let cfg = config(
            &dir,
            &format!("[dns]\nnameservers = [\"{}\"]", server.addr),
            "*@example.com ed\n",
        );
        (Arc::new(Context::for_tools(cfg).unwrap()), server)
    });
    let verify_message = |snap: Arc<Context>| {
        let signed = signed.clone();
        let body = body.clone();
        async move {
            let o = message(&snap, Decision::Verify, Some(&signed), &body)
                .await
                .unwrap();
            assert!(o.summary.contains("dmarc=pass"), "{}", o.summary);
            o
        }
    };
    rt.block_on(verify_message(verify_snap.clone()));
    c.bench_function(
        "verify 4 KB message, SPF+DKIM+DMARC+ARC, warm DNS cache",
        |b| b.to_async(&rt).iter(|| verify_message(verify_snap.clone())),
    );
}

criterion_group! {
    name = pipeline;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(3));
    targets = benches
}
criterion_main!(pipeline);
