//! The shipped example configuration, and `mailseal check-config` on broken ones.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::*;
use mailseal::config::Config;

fn copy_example(scratch: &Scratch) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in ["mailseal.toml", "key.table", "signing.table"] {
        std::fs::copy(root.join("config").join(f), scratch.0.join(f)).unwrap();
    }
    std::fs::create_dir_all(scratch.0.join("keys")).unwrap();
    let k = keys();
    std::fs::write(scratch.0.join("keys/s2026r.private"), &k.rsa.pem).unwrap();
    std::fs::write(scratch.0.join("keys/s2026e.private"), &k.ed.pem).unwrap();
    for f in ["keys/s2026r.private", "keys/s2026e.private"] {
        std::fs::set_permissions(scratch.0.join(f), std::fs::Permissions::from_mode(0o600))
            .unwrap();
    }
}

fn check_config(path: &Path) -> (bool, String) {
    let o = cli_blocking(
        &["check-config".as_ref(), "-c".as_ref(), path.as_os_str()],
        None,
    );
    (o.ok, o.text())
}

#[test]
fn shipped_example_config_parses_with_every_default() {
    let s = Scratch::new("example");
    copy_example(&s);
    let c = Config::load(&s.0.join("mailseal.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.tables.keys.len(), 2);
    assert_eq!(c.tables.rows.len(), 2);
    assert_eq!(c.socket.to_string(), "inet:8891@127.0.0.1");
    // The shipped file states the defaults: it must mean the same as an empty file.
    let empty = Config::from_toml(&s.0.join("x.toml"), "authserv_id = \"mx.example.net\"").unwrap();
    assert_eq!(format!("{:?}", c.limits), format!("{:?}", empty.limits));
    assert_eq!(format!("{:?}", c.verify), format!("{:?}", empty.verify));
    assert_eq!(format!("{:?}", c.dmarc), format!("{:?}", empty.dmarc));
    assert_eq!(format!("{:?}", c.dns), format!("{:?}", empty.dns));
    assert_eq!(format!("{:?}", c.reports), format!("{:?}", empty.reports));
    assert_eq!(c.signing.sign_headers, empty.signing.sign_headers);
    let (ok, text) = check_config(&s.0.join("mailseal.toml"));
    assert!(ok, "{text}");
    assert!(text.contains("OK (2 keys, 2 signing rules"), "{text}");
}

/// OpenDKIM's RequireSafeKeys: a key readable by a group mailseal runs as is fine (0640
/// root:opendkim with the daemon in that group); by any other group, or by others, or
/// writable by its group, it is refused, with the file named and never its contents.
#[test]
fn group_readable_key_is_refused_with_the_file_named() {
    use std::os::unix::fs::MetadataExt;
    let s = Scratch::new("unsafe");
    copy_example(&s);
    let key = s.0.join("keys/s2026r.private");
    let ours = std::fs::metadata(&key).unwrap().gid();
    let chgrp = |gid: u32| {
        std::os::unix::fs::chown(&key, None, Some(gid)).unwrap();
    };
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (ok, text) = check_config(&s.0.join("mailseal.toml"));
    assert!(ok, "our own group may read it: {text}");
    if unsafe { libc::geteuid() } == 0 {
        // nogroup: not a group this process runs as.
        chgrp(65534);
        let (ok, text) = check_config(&s.0.join("mailseal.toml"));
        assert!(!ok);
        assert!(text.contains("key.table:5"), "{text}");
        assert!(
            text.contains("s2026r.private")
                && text.contains("group 65534")
                && text.contains("chmod 600"),
            "{text}"
        );
        assert!(!text.contains("BEGIN"), "never any key material: {text}");
        chgrp(ours);
    }
    for mode in [0o644, 0o660, 0o604] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        let (ok, text) = check_config(&s.0.join("mailseal.toml"));
        assert!(!ok, "{mode:o}: {text}");
        assert!(
            text.contains(&format!("{mode:04o}")) && text.contains("chmod 600"),
            "{text}"
        );
        assert!(!text.contains("BEGIN"), "never any key material: {text}");
    }
}

#[test]
fn table_errors_name_file_and_line() {
    let s = Scratch::new("tables");
    copy_example(&s);
    std::fs::write(
        s.0.join("signing.table"),
        "# comment\n*@example.net example-rsa\n*@example.org no-such-key\nonlyonefield\n",
    )
    .unwrap();
    std::fs::write(
        s.0.join("key.table"),
        "example-rsa example.net:s2026r:keys/s2026r.private\nbad example.net:sel\nmissing example.net:x:keys/nope.private\n",
    )
    .unwrap();
    let (ok, text) = check_config(&s.0.join("mailseal.toml"));
    assert!(!ok);
    for needle in [
        "signing.table:3",
        "no-such-key",
        "signing.table:4",
        "key.table:2",
        "key.table:3",
        "nope.private",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn unknown_key_and_bad_value_are_errors() {
    let s = Scratch::new("badcfg");
    let p = s.write(
        "m.toml",
        "mode = \"sv\"\n\n[dmarc]\nenforce = true\nquarantine = \"hold\"\n",
    );
    let (ok, text) = check_config(&p);
    assert!(!ok);
    assert!(
        text.contains("m.toml") && text.contains("quarantine") && text.contains("line 5"),
        "{text}"
    );
    let p = s.write("m2.toml", "[verify]\non_dns_error = \"maybe\"\n");
    let (ok, text) = check_config(&p);
    assert!(
        !ok && text.contains("line 2")
            && text.contains("on_dns_error")
            && text.contains(r#"expected "tempfail" or "accept", found "maybe""#),
        "{text}"
    );
}

#[test]
fn weak_and_garbage_keys_are_refused() {
    let s = Scratch::new("weak");
    let k = keys();
    std::fs::write(
        s.0.join("junk.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    std::fs::set_permissions(s.0.join("junk.pem"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let signing = signing_section(
        &s.0,
        &[
            ("weak", "example.com", "w", &k.rsa512.path),
            ("junk", "example.com", "j", &s.0.join("junk.pem")),
        ],
        &[("*", "weak")],
    );
    let p = s.write("m.toml", &format!("[signing]\n{signing}"));
    let (ok, text) = check_config(&p);
    assert!(!ok);
    assert!(text.contains("512 bits"), "{text}");
    assert!(text.contains("junk.pem"), "{text}");
}

/// `inet:PORT` without a host means every interface, as in opendkim.conf(5); a TCP socket
/// with signing configured gets a warning (any local user, and off loopback any host, could
/// have mail signed), and a unix socket none.
#[test]
fn tcp_sockets_are_warned_about_and_a_bare_port_means_every_interface() {
    let s = Scratch::new("sockets");
    copy_example(&s);
    let example = std::fs::read_to_string(s.0.join("mailseal.toml")).unwrap();
    let with_socket = |socket: &str| {
        let text = example.replace(
            "socket = \"inet:8891@127.0.0.1\"",
            &format!("socket = \"{socket}\""),
        );
        assert!(text.contains(&format!("socket = \"{socket}\"")));
        s.write("mailseal.toml", &text)
    };
    let (ok, text) = check_config(&with_socket("inet:8891"));
    assert!(ok, "{text}");
    assert!(
        text.contains("socket inet:8891@0.0.0.0: any local user, and any host that can reach it,"),
        "{text}"
    );
    let (ok, text) = check_config(&with_socket("inet:8891@127.0.0.1"));
    assert!(ok, "{text}");
    assert!(
        text.contains("socket inet:8891@127.0.0.1: any local user can connect"),
        "{text}"
    );
    let (ok, text) = check_config(&with_socket("unix:/run/mailseal/mailseal.sock"));
    assert!(ok && !text.contains("TCP milter"), "{text}");
}
