//! The cold-cache benchmark's world: a corpus of sender domains with realistic records and a
//! DNS server that answers every query after a delay (a resolver's round trip).
//!
//!   coldcache corpus --domains 2000 --out DIR
//!       DIR/zone.tsv     name, type, value (TXT, A, MX) for every domain
//!       DIR/index.tsv    client IP, HELO, MAIL FROM, message file: one line per message
//!       DIR/msg/N.eml    the messages, DKIM-signed (rsa-sha256, relaxed/relaxed) for their domain
//!   coldcache dns --corpus DIR --listen 127.0.2.53:53 --delay-ms 20
//!       serves DIR/zone.tsv (NXDOMAIN for every other name) until killed; the number of
//!       queries answered so far is kept in DIR/queries.
//!
//! The shapes, by domain number i (deterministic; see `shape`): 60% a typical domain (SPF with
//! its own include and a provider's two-level include chain, DKIM, DMARC p=reject at the
//! domain), 10% mail from a subdomain with SPF `redirect=` and DMARC found by the tree walk,
//! 10% a subdomain with its own DMARC record, 10% SPF by `mx` and `a` with no DMARC at all, 10%
//! broken (two SPF records and no DKIM key, or an SPF syntax error and a body changed after
//! signing). Providers are shared by ten domains each, as large senders' includes are.

#[allow(dead_code)]
#[path = "../tests/it/common/dns.rs"]
mod dns;

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use mail_auth::crypto::{RsaKey, Sha256};
use mail_auth::dkim::{Canonicalization, DkimSigner};
use mail_auth::headers::HeaderWriter;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use dns::{DnsServer, Rr, Zones};

/// Domains per SPF provider.
const PER_PROVIDER: usize = 10;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    match args.first().map(String::as_str) {
        Some("corpus") => {
            let n = opt("--domains").map_or(2000, |v| v.parse().expect("--domains N"));
            let out = PathBuf::from(opt("--out").expect("--out DIR"));
            corpus(n, &out);
        }
        Some("dns") => {
            let dir = PathBuf::from(opt("--corpus").expect("--corpus DIR"));
            let listen: SocketAddr = opt("--listen")
                .expect("--listen IP:PORT")
                .parse()
                .expect("--listen IP:PORT");
            let delay = opt("--delay-ms").map_or(0, |v| v.parse().expect("--delay-ms N"));
            serve(&dir, listen, Duration::from_millis(delay));
        }
        _ => {
            eprintln!("usage: coldcache corpus --domains N --out DIR | dns --corpus DIR --listen IP:PORT [--delay-ms N]");
            std::process::exit(2);
        }
    }
}

/// What a domain looks like.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Typical,
    SubdomainRedirect,
    SubdomainOwnDmarc,
    MxNoDmarc,
    BrokenNoKey,
    BrokenSyntaxBadBody,
}

fn shape(i: usize) -> Shape {
    match i % 10 {
        0..=5 => Shape::Typical,
        6 => Shape::SubdomainRedirect,
        7 => Shape::SubdomainOwnDmarc,
        8 => Shape::MxNoDmarc,
        _ if i % 20 == 9 => Shape::BrokenNoKey,
        _ => Shape::BrokenSyntaxBadBody,
    }
}

/// The client address a domain's mail comes from: inside its provider's netblock
/// (198.18.0.0/15, the benchmarking range, which no peer treats as local).
fn client_ip(i: usize) -> Ipv4Addr {
    let k = i / PER_PROVIDER;
    Ipv4Addr::new(
        198,
        18 + (k / 256) as u8,
        (k % 256) as u8,
        1 + (i % 250) as u8,
    )
}

fn corpus(n: usize, out: &Path) {
    std::fs::create_dir_all(out.join("msg")).expect("create the corpus directory");
    let pair = KeyPair::generate(KeySize::Rsa2048).expect("generate an RSA key");
    let spki = pair.public_key().as_der().expect("public key DER");
    let p = base64(spki.as_ref());
    let pkcs8 = pair.as_der().expect("private key DER");
    let mut zone = String::new();
    let mut index = String::new();
    let mut rr = |name: &str, t: &str, v: &str| {
        writeln!(zone, "{name}\t{t}\t{v}").unwrap();
    };
    for k in 0..n.div_ceil(PER_PROVIDER) {
        let net = client_ip(k * PER_PROVIDER);
        let [a, b, c, _] = net.octets();
        rr(
            &format!("_spf.provider{k}.test"),
            "TXT",
            &format!("v=spf1 include:_netblocks.provider{k}.test include:_netblocks2.provider{k}.test ~all"),
        );
        rr(
            &format!("_netblocks.provider{k}.test"),
            "TXT",
            "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 ~all",
        );
        rr(
            &format!("_netblocks2.provider{k}.test"),
            "TXT",
            &format!("v=spf1 ip4:{a}.{b}.{c}.0/24 ~all"),
        );
    }
    for i in 0..n {
        let d = format!("sender{i}.test");
        let k = i / PER_PROVIDER;
        let sel = format!("s{}", i % 3);
        let key = format!("v=DKIM1; k=rsa; p={p}");
        let ip = client_ip(i);
        let shape = shape(i);
        let (author, mail_from, signer) = match shape {
            Shape::SubdomainRedirect | Shape::SubdomainOwnDmarc => (
                format!("news@mail.{d}"),
                format!("bounce@mail.{d}"),
                if shape == Shape::SubdomainOwnDmarc {
                    format!("mail.{d}")
                } else {
                    d.clone()
                },
            ),
            _ => (format!("info@{d}"), format!("bounce@{d}"), d.clone()),
        };
        let typical_spf = format!("v=spf1 include:_spf.{d} include:_spf.provider{k}.test ~all");
        match shape {
            Shape::Typical => {
                rr(&d, "TXT", &typical_spf);
                rr(&d, "TXT", "google-site-verification=benchmark");
                rr(
                    &format!("_dmarc.{d}"),
                    "TXT",
                    &format!("v=DMARC1; p=reject; rua=mailto:dmarc@{d}"),
                );
            }
            Shape::SubdomainRedirect => {
                rr(&d, "TXT", &typical_spf);
                rr(&format!("mail.{d}"), "TXT", &format!("v=spf1 redirect={d}"));
                rr(
                    &format!("_dmarc.{d}"),
                    "TXT",
                    "v=DMARC1; p=quarantine; sp=reject",
                );
            }
            Shape::SubdomainOwnDmarc => {
                rr(&format!("mail.{d}"), "TXT", &typical_spf);
                rr(
                    &format!("_dmarc.mail.{d}"),
                    "TXT",
                    "v=DMARC1; p=reject; adkim=s",
                );
                rr(&format!("_dmarc.{d}"), "TXT", "v=DMARC1; p=none");
            }
            Shape::MxNoDmarc => {
                rr(
                    &d,
                    "TXT",
                    "v=spf1 mx a:out.{d} -all".replace("{d}", &d).as_str(),
                );
                rr(&d, "MX", &format!("10 mx1.{d}"));
                rr(&d, "MX", &format!("20 mx2.{d}"));
                rr(&format!("mx1.{d}"), "A", "192.0.2.25");
                rr(&format!("mx2.{d}"), "A", "192.0.2.26");
                rr(&format!("out.{d}"), "A", &ip.to_string());
            }
            Shape::BrokenNoKey => {
                rr(&d, "TXT", &typical_spf);
                rr(&d, "TXT", "v=spf1 -all");
                rr(&format!("_dmarc.{d}"), "TXT", "v=DMARC1; p=quarantine");
            }
            Shape::BrokenSyntaxBadBody => {
                rr(&d, "TXT", "v=spf1 ip4:198.18.0.0/33 -all");
                rr(&format!("_dmarc.{d}"), "TXT", "v=DMARC1; p=none");
            }
        }
        rr(
            &format!("_spf.{d}"),
            "TXT",
            &format!("v=spf1 ip4:203.0.113.{}/32 -all", i % 250),
        );
        if shape != Shape::BrokenNoKey {
            rr(&format!("{sel}._domainkey.{signer}"), "TXT", &key);
        }

        let body: String = (0..24)
            .map(|l| {
                format!("Line {l:02} of a message from {d}, padded to about seventy bytes....\r\n")
            })
            .collect();
        let headers = format!(
            "From: Sender {i} <{author}>\r\nTo: Bob <bob@example.org>\r\nSubject: Newsletter {i}\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{i}.bench@{d}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        );
        let unsigned = format!("{headers}\r\n{body}");
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec()));
        let signing = RsaKey::<Sha256>::from_key_der(der).expect("load the RSA key");
        let sig = DkimSigner::from_key(signing)
            .domain(signer.as_str())
            .selector(sel.as_str())
            .headers([
                "From",
                "To",
                "Subject",
                "Date",
                "Message-ID",
                "MIME-Version",
                "Content-Type",
            ])
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed)
            .sign(unsigned.as_bytes())
            .expect("sign");
        let body = if shape == Shape::BrokenSyntaxBadBody {
            body.replace("Line 03", "Line 33")
        } else {
            body
        };
        let file = format!("msg/{i}.eml");
        std::fs::write(
            out.join(&file),
            format!("{}{headers}\r\n{body}", sig.to_header()),
        )
        .expect("write a message");
        writeln!(
            index,
            "{ip}\tmta{}.provider{k}.test\t{mail_from}\t{file}",
            i % 7
        )
        .unwrap();
    }
    std::fs::write(out.join("zone.tsv"), zone).expect("write zone.tsv");
    std::fs::write(out.join("index.tsv"), index).expect("write index.tsv");
    println!("corpus: {n} domains in {}", out.display());
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for j in 0..4 {
            if j <= c.len() {
                s.push(A[(n >> (18 - 6 * j) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn serve(dir: &Path, listen: SocketAddr, delay: Duration) {
    let mut zones = Zones::default();
    zones.delay = delay;
    let text = std::fs::read_to_string(dir.join("zone.tsv")).expect("read zone.tsv");
    for line in text.lines() {
        let mut f = line.splitn(3, '\t');
        let (Some(name), Some(t), Some(v)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let rr = match t {
            "TXT" => Rr::Txt(v.to_string()),
            "A" => Rr::A(v.parse().expect("an IPv4 address")),
            "MX" => {
                let (p, ex) = v.split_once(' ').expect("MX: preference exchange");
                Rr::Mx(p.parse().expect("MX preference"), ex.to_string())
            }
            other => panic!("unknown record type {other}"),
        };
        zones.add(name, rr);
    }
    let server = DnsServer::start_on(zones, listen)
        .await
        .unwrap_or_else(|e| panic!("cannot listen on {listen}: {e}"));
    eprintln!(
        "serving {} with a delay of {} ms",
        server.addr,
        delay.as_millis()
    );
    let counter = dir.join("queries");
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = server.zones.queries();
        if now != last {
            let _ = std::fs::write(&counter, now.to_string());
            last = now;
        }
    }
}
