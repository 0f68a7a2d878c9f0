//! Key material never appears in logs, errors or debug output; files others could change are
//! flagged.

use std::os::unix::fs::PermissionsExt;

use crate::common::process::Running;
use crate::common::*;

/// Distinctive pieces of a PEM key: every 24-byte run of its base64 body.
fn fragments(pem: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(pem);
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    body.as_bytes()
        .chunks(24)
        .filter(|c| c.len() == 24)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect()
}

fn assert_no_key_material(text: &str) {
    let k = keys();
    for pem in [&k.rsa.pem, &k.ed.pem, &k.rsa_pkcs1.pem] {
        for f in fragments(pem) {
            assert!(
                !text.contains(&f),
                "key material {f:?} leaked into:\n{text}"
            );
        }
    }
}

#[test]
fn config_debug_output_holds_no_key_material() {
    let k = keys();
    let s = Scratch::new("sec-debug");
    let signing = signing_section(
        &s.0,
        &[
            ("a", "example.com", "rsa", &k.rsa.path),
            ("b", "example.com", "ed", &k.ed.path),
            ("c", "example.com", "p1", &k.rsa_pkcs1.path),
        ],
        &[("*", "a")],
    );
    let cfg = mailseal::config::Config::load(&s.write("m.toml", &format!("[signing]\n{signing}")))
        .unwrap();
    let dump = format!("{cfg:?}");
    assert!(
        dump.contains("LoadedKey(rsa-2048)") && dump.contains("LoadedKey(ed25519)"),
        "{dump}"
    );
    assert_no_key_material(&dump);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_and_errors_never_show_keys() {
    let k = keys();
    let s = Scratch::new("sec-logs");
    let port = crate::common::postfix::free_port();
    let signing = example_com_rsa_ed(
        &s.0,
        &[("*@example.com", "k-rsa"), ("*@example.com", "k-ed")],
    );
    let cfg = s.write(
        "m.toml",
        &format!("socket = \"inet:{port}@127.0.0.1\"\nmode = \"s\"\n[signing]\n{signing}multiple_signatures = true\n"),
    );
    let mut d = Running::started(&cfg, &[("RUST_LOG", std::ffi::OsStr::new("trace"))]);
    let env = Envelope {
        client_ip: "127.0.0.1".into(),
        ..Default::default()
    };
    let mut c = Client::open(([127, 0, 0, 1], port).into()).await;
    c.hello(&env).await;
    let out = c
        .message(
            &env,
            "From: a@example.com\r\nSubject: s\r\n\r\nbody\r\n",
            65535,
        )
        .await;
    assert_eq!(out.inserted("DKIM-Signature").len(), 2);
    c.close().await;
    // A reload with a mangled copy of a real key: the error names the file, not its content.
    let mangled = s.0.join("mangled.pem");
    let mut pem = k.rsa.pem.clone();
    let mid = pem.len() / 2;
    pem[mid] = b'!';
    std::fs::write(&mangled, &pem).unwrap();
    std::fs::set_permissions(&mangled, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        s.0.join("key.table"),
        format!("a example.com:rsa:{}\n", mangled.display()),
    )
    .unwrap();
    std::fs::write(s.0.join("signing.table"), "*@example.com a\n").unwrap();
    d.signal(libc::SIGHUP);
    d.wait_log("reload failed");
    d.signal(libc::SIGTERM);
    let logs = d.wait_all_logs();
    assert!(
        logs.contains("mangled.pem"),
        "the error names the file:\n{logs}"
    );
    assert!(logs.len() > 1000, "trace logging was on");
    assert_no_key_material(&logs);
    // check-config on the same broken file.
    let o = cli_blocking(&["check-config", "-c", cfg.to_str().unwrap()], None);
    assert!(!o.ok);
    assert_no_key_material(&o.text());
}

#[test]
fn files_others_can_change_are_flagged() {
    let s = Scratch::new("sec-perms");
    let signing = example_com_rsa(&s.0, "*");
    let cfg = s.write("m.toml", &format!("[signing]\n{signing}"));
    std::fs::set_permissions(
        s.0.join("signing.table"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let o = cli_blocking(&["check-config", "-c", cfg.to_str().unwrap()], None);
    assert!(o.ok);
    assert!(
        o.stderr.contains("signing.table: writable by everyone"),
        "{}",
        o.stderr
    );
    std::fs::set_permissions(
        s.0.join("signing.table"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let o = cli_blocking(&["check-config", "-c", cfg.to_str().unwrap()], None);
    assert!(!o.stderr.contains("writable by"), "{}", o.stderr);
}
