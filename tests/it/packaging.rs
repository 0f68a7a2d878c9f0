//! The systemd unit passes `systemd-analyze verify`, and the man page renders.

use std::path::{Path, PathBuf};
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

/// The .deb that scripts/package.sh built, installed on this machine as an admin would
/// (`dpkg -i`): the service enabled, conffiles registered with safe modes, the key directory
/// 0750 root:mailseal, the configuration good as shipped (nothing signed, said so) and the
/// daemon verifying inbound mail as user mailseal; `lintian` finds no error; removing keeps
/// the user data, purging deletes it and the enable link. Needs root (CI runs it).
#[tokio::test]
async fn the_package_installs_enables_and_purges_like_a_debian_daemon() {
    use std::os::unix::fs::MetadataExt;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let deb = std::fs::read_dir(root.join("target/debian"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    let is_root = unsafe { libc::geteuid() } == 0;
    let (Some(deb), true) = (deb, is_root) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI builds the package (scripts/package.sh) and runs this test as root"
        );
        eprintln!("SKIPPED: needs root and target/debian/*.deb (bash scripts/package.sh)");
        return;
    };
    let run = |cmd: &str, args: &[&str]| {
        let out = Command::new(cmd)
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .unwrap_or_else(|e| panic!("{cmd}: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    // lintian: no errors (warnings are printed for the record).
    let (_, lint) = run(
        "lintian",
        &["--tag-display-limit", "0", deb.to_str().unwrap()],
    );
    eprintln!("lintian:\n{lint}");
    assert!(
        !lint.lines().any(|l| l.starts_with("E: ")),
        "lintian errors:\n{lint}"
    );
    let _ = run("dpkg", &["--purge", "mailseal"]);
    let (ok, text) = run("dpkg", &["-i", deb.to_str().unwrap()]);
    assert!(ok, "dpkg -i:\n{text}");

    let link = Path::new("/etc/systemd/system/multi-user.target.wants/mailseal.service");
    assert!(link.is_symlink(), "not enabled:\n{text}");
    let (_, conffiles) = run("dpkg-query", &["-W", "-f=${Conffiles}", "mailseal"]);
    for f in ["mailseal.toml", "key.table", "signing.table"] {
        assert!(
            conffiles.contains(&format!("/etc/mailseal/{f} ")),
            "{conffiles}"
        );
    }
    let gid = |name: &str| {
        let (_, g) = run("getent", &["group", name]);
        g.split(':')
            .nth(2)
            .and_then(|g| g.trim().parse::<u32>().ok())
            .unwrap()
    };
    let mailseal = gid("mailseal");
    for (path, mode, group) in [
        ("/etc/mailseal", 0o750, mailseal),
        ("/etc/mailseal/keys", 0o750, mailseal),
        ("/etc/mailseal/mailseal.toml", 0o640, mailseal),
        ("/etc/mailseal/key.table", 0o640, mailseal),
        ("/var/lib/mailseal", 0o750, mailseal),
        ("/usr/bin/mailseal", 0o755, 0),
    ] {
        let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!((m.mode() & 0o7777, m.gid()), (mode, group), "{path}");
    }
    for page in [
        "/usr/share/man/man8/mailseal.8.gz",
        "/usr/share/man/man5/mailseal.toml.5.gz",
    ] {
        assert!(Path::new(page).exists(), "{page}");
    }
    // As shipped, for the service user: good, and it says nothing will be signed.
    let (ok, text) = run(
        "runuser",
        &[
            "-u",
            "mailseal",
            "--",
            "/usr/bin/mailseal",
            "check-config",
            "-c",
            "/etc/mailseal/mailseal.toml",
        ],
    );
    assert!(ok && text.contains("nothing will be signed"), "{text}");

    // The installed daemon, as user mailseal, on the shipped files (only the socket moved to a
    // free port): it starts and verifies inbound mail.
    let zones = crate::common::dns::Zones::default();
    zones.txt("example.org", "v=spf1 ip4:192.0.2.10 -all");
    let dns = crate::common::dns::DnsServer::start(zones).await;
    let port = crate::common::postfix::free_port();
    let shipped = std::fs::read_to_string("/etc/mailseal/mailseal.toml").unwrap();
    let copy = Path::new("/etc/mailseal/test-copy.toml");
    assert!(shipped.contains("nameservers = []"), "{shipped}");
    std::fs::write(
        copy,
        shipped
            .replace("inet:8891@127.0.0.1", &format!("inet:{port}@127.0.0.1"))
            .replacen(
                "nameservers = []",
                &format!("nameservers = [\"{}\"]", dns.addr),
                1,
            ),
    )
    .unwrap();
    std::os::unix::fs::chown(copy, Some(0), Some(mailseal)).unwrap();
    // setpriv execs (runuser would fork, and a kill would leave the daemon running).
    let mut child = Command::new("setpriv")
        .args([
            "--reuid=mailseal",
            "--regid=mailseal",
            "--init-groups",
            "--",
            "/usr/bin/mailseal",
            "run",
            "-c",
        ])
        .arg(copy)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut up = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let verified = if up {
        let env = crate::common::Envelope {
            client_ip: "192.0.2.10".into(),
            ..Default::default()
        };
        let env = crate::common::Envelope {
            mail_from: "<a@example.org>".into(),
            ..env
        };
        let out = crate::common::deliver(
            addr,
            &env,
            "From: <a@example.org>\r\nSubject: s\r\n\r\nbody\r\n",
        )
        .await;
        out.inserted("Authentication-Results")
    } else {
        Vec::new()
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(copy);
    assert!(up, "the installed daemon did not listen");
    assert_eq!(verified.len(), 1, "{verified:?}");

    // Remove keeps the data; purge deletes it and the enable link.
    std::fs::write("/var/lib/mailseal/reports.sqlite", "data").unwrap();
    let (ok, text) = run("dpkg", &["--remove", "mailseal"]);
    assert!(ok, "{text}");
    assert!(Path::new("/var/lib/mailseal/reports.sqlite").exists());
    let (ok, text) = run("dpkg", &["--purge", "mailseal"]);
    assert!(ok, "{text}");
    assert!(!Path::new("/var/lib/mailseal").exists());
    assert!(!link.is_symlink(), "enable link left after purge");
    assert!(!Path::new("/etc/mailseal/mailseal.toml").exists());
}
