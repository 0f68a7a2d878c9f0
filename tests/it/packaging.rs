//! The systemd unit passes `systemd-analyze verify`, and the man page renders.

use std::path::PathBuf;
use std::process::Command;

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mailseal-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn manpage() -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_mailseal"))
        .arg("manpage")
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn man_page_documents_every_command() {
    let page = String::from_utf8(manpage()).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH mailseal 8"),
        "{page}"
    );
    for cmd in [
        "RUN",
        "CHECK-CONFIG",
        "VERIFY",
        "SIGN",
        "KEYGEN",
        "TESTKEY",
        "EXPLAIN",
        "CHECK-DOMAIN",
        "MIGRATE",
        "REPORTS",
        "REPORTS SEND",
        "REPORTS SHOW",
    ] {
        assert!(
            page.contains(&format!(".SH \"MAILSEAL {cmd}\"")),
            "missing {cmd}"
        );
    }
    assert!(page.contains("\\-\\-client\\-ip"), "options rendered");
    // Options of the nested commands too.
    for option in [
        "\\-\\-dry\\-run",
        "\\-\\-since",
        "\\-\\-opendmarc",
        "\\-\\-defaults\\-dir",
    ] {
        assert!(page.contains(option), "missing {option}");
    }
}

/// mailseal.toml(5), generated from the key declarations, renders with man and documents
/// every key of the example configuration.
#[test]
fn config_man_page_renders_every_key() {
    let dir = scratch("man5");
    let page = dir.join("mailseal.toml.5");
    let out = Command::new(env!("CARGO_BIN_EXE_mailseal"))
        .args(["manpage", "--page", "config-format"])
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(&page, &out.stdout).unwrap();
    let rendered = Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANWIDTH", "100")
        .output();
    let Ok(rendered) = rendered else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must render man pages (man-db)"
        );
        eprintln!("SKIPPED: man not installed");
        return;
    };
    assert!(rendered.status.success(), "{rendered:?}");
    let text = String::from_utf8_lossy(&rendered.stdout).replace("\u{2010}", "-");
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/mailseal.toml"),
    )
    .unwrap();
    for line in example.lines() {
        let key = line.trim_start_matches("# ").split(" = ").next().unwrap();
        if line.contains(" = ") && !key.contains(' ') {
            assert!(text.contains(key), "{key} is not in mailseal.toml(5)");
        }
    }
    assert!(
        text.contains("on_unverifiable") && text.contains("[dmarc]"),
        "{text}"
    );
    // Each key with its type and default; the settings a reload cannot apply say so.
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for shown in [
        "enforce (boolean, default false)",
        "max_message_size (size, default \"32M\")",
        "timeout (duration, default \"60s\")",
        "internal_hosts (list of hosts, default",
    ] {
        assert!(flat.contains(shown), "{shown:?} not in mailseal.toml(5)");
    }
    assert_eq!(
        flat.matches("Read at start only").count(),
        mailseal::config::RESTART_ONLY.len(),
        "{flat}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn systemd_unit_verifies() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must verify the unit (apt-get install systemd)"
        );
        eprintln!("SKIPPED: systemd-analyze not installed");
        return;
    }
    let dir = scratch("unit");
    std::fs::create_dir_all(dir.join("man/man8")).unwrap();
    std::fs::write(dir.join("man/man8/mailseal.8"), manpage()).unwrap();
    // The unit names /usr/bin/mailseal, where the package installs it; point it at this build.
    let installed = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systemd/mailseal.service"),
    )
    .unwrap();
    for required in [
        "Type=notify",
        "ExecReload=/usr/bin/mailseal check-config -c /etc/mailseal/mailseal.toml\nExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=",
        "SyslogFacility=mail",
        "Restart=on-failure",
        "User=mailseal",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=",
        "CapabilityBoundingSet=",
    ] {
        assert!(installed.contains(required), "unit lacks {required}");
    }
    let unit = installed.replace("/usr/bin/mailseal", env!("CARGO_BIN_EXE_mailseal"));
    std::fs::write(dir.join("mailseal.service"), unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("mailseal.service"))
        .env("MANPATH", dir.join("man"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify:\n{text}");
    assert!(!text.contains("mailseal.service:"), "warnings:\n{text}");
    let _ = std::fs::remove_dir_all(dir);
}
