//! keygen, testkey (against a loopback DNS server) and explain, run as the real binary.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::dns::{DnsServer, Zones};
use crate::common::*;

/// The TXT value in a keygen `.txt` zone-file line, strings joined.
fn record_from_zone(zone: &str) -> String {
    zone.split('"').skip(1).step_by(2).collect()
}

#[test]
fn keygen_writes_safe_keys_that_sign_and_never_overwrites() {
    let s = Scratch::new("keygen");
    let out_dir = s.0.join("keys");
    for (alg, sel) in [("rsa", "r2026"), ("ed25519", "e2026")] {
        let o = cli_blocking(
            &[
                "keygen",
                "--domain",
                "example.com",
                "--selector",
                sel,
                "--algorithm",
                alg,
                "--out",
                out_dir.to_str().unwrap(),
            ],
            None,
        );
        assert!(o.ok, "{}", o.text());
        let report = o.text();
        assert!(
            report.contains(&format!("{sel}._domainkey.example.com\texample.com:{sel}:")),
            "{report}"
        );
        assert!(
            report.contains(&format!("*@example.com\t{sel}._domainkey.example.com")),
            "{report}"
        );
        let private = out_dir.join(format!("{sel}.private"));
        let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let zone = std::fs::read_to_string(out_dir.join(format!("{sel}.txt"))).unwrap();
        assert!(
            zone.starts_with(&format!("{sel}._domainkey.example.com.\tIN\tTXT")),
            "{zone}"
        );
        for part in zone.split('"').skip(1).step_by(2) {
            assert!(part.len() <= 255);
        }
    }
    // A second run with the same selector refuses and leaves the key alone.
    let before = std::fs::read(out_dir.join("r2026.private")).unwrap();
    let o = cli_blocking(
        &[
            "keygen",
            "--domain",
            "example.com",
            "--selector",
            "r2026",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        None,
    );
    assert!(!o.ok);
    assert!(o.text().contains("already exists"), "{}", o.text());
    assert_eq!(
        std::fs::read(out_dir.join("r2026.private")).unwrap(),
        before
    );

    // The printed table lines work: sign with both keys, python3-dkim verifies with the records.
    std::fs::write(
        s.0.join("key.table"),
        format!(
            "r2026._domainkey.example.com example.com:r2026:{0}/r2026.private\ne2026._domainkey.example.com example.com:e2026:{0}/e2026.private\n",
            out_dir.display()
        ),
    )
    .unwrap();
    std::fs::write(
        s.0.join("signing.table"),
        "*@example.com r2026._domainkey.example.com\n*@example.com e2026._domainkey.example.com\n",
    )
    .unwrap();
    let cfg = s.write("m.toml", "[signing]\nkey_table = \"key.table\"\nsigning_table = \"signing.table\"\nmultiple_signatures = true\n");
    let msg = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: keygen\r\n\r\nbody\r\n";
    let o = cli_blocking(&["sign", "-c", cfg.to_str().unwrap()], Some(msg));
    assert!(o.ok, "{}", o.text());
    let mut records = BTreeMap::new();
    for sel in ["r2026", "e2026"] {
        let zone = std::fs::read_to_string(out_dir.join(format!("{sel}.txt"))).unwrap();
        records.insert(
            format!("{sel}._domainkey.example.com"),
            record_from_zone(&zone),
        );
    }
    assert_eq!(dkim_check(o.stdout.as_bytes(), &records), vec![true, true]);
}

/// Root making a key in a directory of the service's group (the package's
/// /etc/mailseal/keys, 0750 root:mailseal): the key is 0640 with that group, so the service,
/// and only it, reads it; the daemon's RequireSafeKeys rule accepts it for that group.
#[test]
fn keygen_as_root_in_the_service_groups_directory_gives_the_group_read() {
    use std::os::unix::fs::MetadataExt;
    if unsafe { libc::geteuid() } != 0 {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        eprintln!("SKIPPED: needs root");
        return;
    }
    let s = Scratch::new("keygen-group");
    let dir = s.0.join("keys");
    std::fs::create_dir(&dir).unwrap();
    let mail = 8; // Debian's "mail" group stands in for mailseal's.
    std::os::unix::fs::chown(&dir, Some(0), Some(mail)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    let o = cli_blocking(
        &[
            "keygen",
            "--domain",
            "example.com",
            "--selector",
            "g1",
            "--out",
            dir.to_str().unwrap(),
        ],
        None,
    );
    assert!(o.ok && o.stdout.contains("mode 0640"), "{}", o.text());
    let meta = std::fs::metadata(dir.join("g1.private")).unwrap();
    assert_eq!(
        (meta.mode() & 0o777, meta.gid(), meta.uid()),
        (0o640, mail, 0)
    );
}

/// The public half of an RSA key file as a PKCS#1 RSAPublicKey (DER).
fn pkcs1_public(key: &Path) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(["rsa", "-RSAPublicKey_out", "-outform", "DER", "-in"])
        .arg(key)
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testkey_reports_each_state_and_exits_1_on_problems() {
    let k = keys();
    let zones = Zones::default();
    zones.txt("ok._domainkey.example.com", &k.rsa.record);
    zones.txt("ed._domainkey.example.com", &k.ed.record);
    zones.txt("mm._domainkey.example.com", &k.rsa_pkcs1.record);
    zones.txt(
        "tst._domainkey.example.com",
        &format!("{}; t=y", k.rsa.record),
    );
    zones.txt("weak._domainkey.example.com", &k.rsa512.record);
    // Only the tail of the key (the exponent), and the key as a bare PKCS#1 RSAPublicKey.
    zones.txt("tail._domainkey.example.com", "v=DKIM1; k=rsa; p=AQAB");
    zones.txt(
        "pkcs1._domainkey.example.com",
        &format!("v=DKIM1; k=rsa; p={}", b64(&pkcs1_public(&k.rsa.path))),
    );
    let dns = DnsServer::start(zones).await;
    let s = Scratch::new("testkey");
    let all = [
        ("k-ok", "example.com", "ok", &k.rsa.path),
        ("k-ed", "example.com", "ed", &k.ed.path),
        ("k-mm", "example.com", "mm", &k.rsa.path),
        ("k-missing", "example.com", "nothere", &k.rsa.path),
        ("k-test", "example.com", "tst", &k.rsa.path),
        ("k-weak", "example.com", "weak", &k.rsa.path),
        ("k-tail", "example.com", "tail", &k.rsa.path),
        ("k-pkcs1", "example.com", "pkcs1", &k.rsa.path),
        ("k-any", "%", "x", &k.rsa.path),
    ];
    let rows: Vec<(&str, &str, &str, &Path)> = all
        .iter()
        .map(|(a, b, c, d)| (*a, *b, *c, d.as_path()))
        .collect();
    let testkey = |s: &Scratch, rows: &[(&str, &str, &str, &Path)]| {
        let signing = signing_section(&s.0, rows, &[("*", "k-ok")]);
        let cfg = s.write(
            "m.toml",
            &format!(
                "[signing]\n{signing}[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\n",
                dns.addr
            ),
        );
        async move { cli(&["testkey", "-c", cfg.to_str().unwrap()], None).await }
    };
    let o = testkey(&s, &rows).await;
    let t = o.text();
    assert!(!o.ok, "{t}");
    for (word, name) in [
        ("ok", "k-ok"),
        ("ok", "k-ed"),
        ("mismatch", "k-mm"),
        ("missing", "k-missing"),
        ("testing", "k-test"),
        ("weak", "k-weak"),
        ("mismatch", "k-tail"),
        ("ok", "k-pkcs1"),
        ("skipped", "k-any"),
    ] {
        assert!(
            t.lines()
                .any(|l| l.starts_with(word) && l.contains(&format!(" {name} "))),
            "{name} should be {word}:\n{t}"
        );
    }
    // Only good keys: exit 0.
    let o = testkey(&Scratch::new("testkey-ok"), &rows[..2]).await;
    assert!(o.ok, "{}", o.text());
}

#[test]
fn explain_names_the_row_and_key_or_the_reason() {
    let s = Scratch::new("explain");
    let signing = example_com_rsa_ed(
        &s.0,
        &[("*@example.com", "k-rsa"), ("*@example.com", "k-ed")],
    );
    let cfg = s.write(
        "m.toml",
        &format!("[signing]\n{signing}internal_hosts = [\"10.0.0.0/8\"]\n"),
    );
    let explain = |extra: &[&str]| {
        let mut args = vec!["explain", "-c", cfg.to_str().unwrap()];
        args.extend(extra);
        cli_blocking(&args, None).text()
    };
    let t = explain(&["alice@example.com"]);
    assert!(
        t.contains("signing.table:2")
            && t.contains("key k-rsa")
            && t.contains("d=example.com s=rsa"),
        "{t}"
    );
    assert!(t.contains("first match only"), "{t}");
    let t = explain(&["bob@elsewhere.example"]);
    assert!(t.contains("no SigningTable row matches"), "{t}");
    let t = explain(&["alice@example.com", "--client-ip", "192.0.2.1"]);
    assert!(t.contains("inbound"), "{t}");
    let t = explain(&["alice@example.com", "--client-ip", "10.1.1.1"]);
    assert!(
        t.contains("outbound: internal host 10.1.1.1") && t.contains("key k-rsa"),
        "{t}"
    );
    let t = explain(&[
        "alice@example.com",
        "--client-ip",
        "192.0.2.1",
        "--auth",
        "alice",
    ]);
    assert!(t.contains("authenticated as alice"), "{t}");
}

/// Host lists as OpenDKIM reads them: a TrustedHosts-style file (comments, a host name
/// resolved through the system resolver, CIDRs, a `!` exclusion), `csl:` lists; a name that
/// does not resolve is a warning, a bad entry an error naming the key.
#[test]
fn host_lists_take_files_names_and_exclusions() {
    let s = Scratch::new("hostlists");
    let signing = example_com_rsa(&s.0, "*@example.com");
    s.write(
        "TrustedHosts",
        "# OpenDKIM's InternalHosts file\n127.0.0.1\nlocalhost\n10.0.0.0/8 # the LAN\n!10.9.9.9\n\nno-such-host.invalid\n",
    );
    let cfg = s.write(
        "m.toml",
        &format!(
            "[signing]\n{signing}internal_hosts = [\"file:TrustedHosts\", \"csl:192.0.2.7, 198.51.100.0/24\"]\n"
        ),
    );
    let explain = |ip: &str| {
        cli_blocking(
            &[
                "explain",
                "-c",
                cfg.to_str().unwrap(),
                "alice@example.com",
                "--client-ip",
                ip,
            ],
            None,
        )
        .text()
    };
    for ip in ["10.1.1.1", "192.0.2.7", "198.51.100.9", "127.0.0.1"] {
        assert!(
            explain(ip).contains(&format!("outbound: internal host {ip}")),
            "{ip}"
        );
    }
    for ip in ["10.9.9.9", "192.0.2.8"] {
        assert!(explain(ip).contains("inbound"), "{ip}: {}", explain(ip));
    }
    let check = cli_blocking(&["check-config", "-c", cfg.to_str().unwrap()], None);
    assert!(check.ok, "{}", check.text());
    assert!(
        check
            .text()
            .contains("\"no-such-host.invalid\" does not resolve"),
        "{}",
        check.text()
    );
    let bad = s.write(
        "bad.toml",
        &format!("[signing]\n{signing}internal_hosts = [\"10.0.0.0/33\"]\n"),
    );
    let check = cli_blocking(&["check-config", "-c", bad.to_str().unwrap()], None);
    assert!(
        !check.ok && check.text().contains("internal_hosts"),
        "{}",
        check.text()
    );
}
