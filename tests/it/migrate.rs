//! `mailseal migrate` on the files Debian's opendkim and opendmarc packages install, and on a
//! realistic multi-domain OpenDKIM + OpenDMARC setup; then `check-config`, `explain` and
//! signing round trips verified by python3-dkim on what it wrote.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::postfix::free_port;
use crate::common::*;

fn migrate(args: &[&str]) -> CliOutput {
    let mut all = vec!["migrate"];
    all.extend_from_slice(args);
    cli_blocking(&all, None)
}

/// Every setting line of an opendkim.conf-style file: (line number, name).
fn settings(path: &Path) -> Vec<(usize, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let l = l.split('#').next().unwrap().trim();
            let name = l.split_whitespace().next()?;
            Some((i + 1, name.to_string()))
        })
        .collect()
}

/// Every setting of `conf` is in the mapping table, each with what it became.
fn all_listed(conf: &Path, table: &str) {
    let file = conf.file_name().unwrap().to_string_lossy();
    for (line, name) in settings(conf) {
        let row = format!("{file}:{line} {name}");
        let found = table.lines().find(|l| l.starts_with(&format!("{row} ")));
        let found = found.unwrap_or_else(|| panic!("{row} is not in the table:\n{table}"));
        assert!(found.contains("→  "), "{found}");
    }
}

/// Run the binary with extra supplementary groups, as systemd's SupplementaryGroups= would.
fn with_groups(gids: &[u32], args: &[&str], stdin: Option<&[u8]>) -> CliOutput {
    let groups = gids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    cli_through(
        &["setpriv", &format!("--groups={groups}"), "--"],
        args,
        stdin,
    )
}

fn root_or_skip() -> bool {
    // SAFETY: geteuid only reads the process's credentials.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run the migration tests as root"
    );
    eprintln!("SKIPPED: needs root (key files owned by root and another group)");
    false
}

fn gid_of(group: &str) -> u32 {
    let out = Command::new("getent")
        .args(["group", group])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .nth(2)
        .and_then(|g| g.trim().parse().ok())
        .unwrap_or_else(|| panic!("no group {group}"))
}

fn chown(path: &Path, uid: u32, gid: u32, mode: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn debian_stock_setup_becomes_a_verify_only_mailseal() {
    let (dkim, dmarc) = (
        Path::new("/etc/opendkim.conf"),
        Path::new("/etc/opendmarc.conf"),
    );
    if !dkim.exists() || !dmarc.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs opendkim and opendmarc (scripts/test.sh)"
        );
        eprintln!("SKIPPED: Debian's opendkim and opendmarc packages are not installed");
        return;
    }
    let s = Scratch::new("migrate-debian");
    let out_dir = s.0.join("out");
    let args = [
        "--opendkim",
        "/etc/opendkim.conf",
        "--opendmarc",
        "/etc/opendmarc.conf",
        "--defaults-dir",
        "/etc/default",
    ];
    // A dry run writes nothing.
    let dry = migrate(&args);
    assert!(dry.ok, "{}", dry.text());
    assert!(
        dry.stdout.contains("Dry run: nothing written"),
        "{}",
        dry.stdout
    );
    assert!(!out_dir.exists());
    let table = &dry.stdout;
    all_listed(dkim, table);
    all_listed(dmarc, table);
    // No KeyTable: verify-only, said so.
    assert!(
        table.contains("mode = \"v\": nothing to sign with, so a verify-only setup"),
        "{table}"
    );
    // Debian's SOCKET= wins over the .conf's Socket, and becomes mailseal's unix socket.
    if std::fs::read_to_string("/etc/default/opendkim").is_ok_and(|t| t.contains("\nSOCKET=")) {
        assert!(
            table.contains("overridden by /etc/default/opendkim"),
            "{table}"
        );
    }
    assert!(
        table.contains("socket = \"unix:/var/spool/postfix/mailseal/mailseal.sock\""),
        "{table}"
    );
    assert!(
        table.contains("smtpd_milters = unix:mailseal/mailseal.sock"),
        "{table}"
    );

    let mut with_out = args.to_vec();
    let out_arg = out_dir.to_str().unwrap();
    with_out.extend(["--out", out_arg]);
    let run = migrate(&with_out);
    assert!(run.ok, "{}", run.text());
    let cfg = out_dir.join("mailseal.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        text.contains("mode = \"v\"") && text.contains("socket_mode = \"0660\""),
        "{text}"
    );
    let drop_in = std::fs::read_to_string(out_dir.join("mailseal.service.d/migrate.conf")).unwrap();
    assert!(
        drop_in.contains("ReadWritePaths=/var/spool/postfix/mailseal"),
        "{drop_in}"
    );
    let check = cli_blocking(&["check-config", "-c", cfg.to_str().unwrap()], None);
    assert!(check.ok, "{}", check.text());
    // Never over an existing file.
    std::fs::write(&cfg, "# mine\n").unwrap();
    let again = migrate(&with_out);
    assert!(
        !again.ok && again.text().contains("never overwrites"),
        "{}",
        again.text()
    );
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), "# mine\n");
}

/// The realistic setup: three domains, refile tables, a TrustedHosts file with a host name,
/// a pattern and CIDRs, a 2048-bit key 0600 root, a 1024-bit key 0640 root:mail, an Ed25519
/// key, an inline key, an opendmarc.conf.
struct Setup {
    scratch: Scratch,
    dkim: PathBuf,
    dmarc: PathBuf,
    records: BTreeMap<String, String>,
    mail_gid: u32,
}

fn realistic() -> Setup {
    let k = keys();
    let s = Scratch::new("migrate-real");
    let d = s.0.display().to_string();
    for dir in ["opendkim/keys", "opendmarc", "default"] {
        std::fs::create_dir_all(s.0.join(dir)).unwrap();
    }
    let key = |name: &str, pem: &[u8], gid: u32, mode: u32| {
        let p = s.0.join("opendkim/keys").join(name);
        std::fs::write(&p, pem).unwrap();
        chown(&p, 0, gid, mode);
        p.display().to_string()
    };
    let mail_gid = gid_of("mail");
    let a = key("a.private", &k.rsa.pem, 0, 0o600);
    let a_ed = key("a-ed.private", &k.ed.pem, 0, 0o600);
    let b = key("b.private", &k.rsa1024.pem, mail_gid, 0o640);
    let inline: String = String::from_utf8_lossy(&k.rsa_pkcs1.pem)
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let key_table = s.write(
        "opendkim/key.table",
        &format!(
            "# keys\nbig    a.example:s2048:{a}\ned     a.example:e2026:{a_ed}\nold    b.example:legacy:{b}\ninl    c.example:inl:{inline}\n"
        ),
    );
    chown(&key_table, 0, 0, 0o600);
    s.write(
        "opendkim/signing.table",
        "*@a.example big\n*@a.example ed\n*@b.example old:%\n*@*.c.example inl\n*@c.example inl\n",
    );
    s.write(
        "opendkim/TrustedHosts",
        "127.0.0.1\nlocalhost\n192.168.0.0/16\n10.1.0.0/16\n!10.1.99.0/24\n*.a.example\n",
    );
    let port = free_port();
    let dkim = s.write(
        "opendkim.conf",
        &format!(
            "Syslog yes\nUMask 002\nMode sv\nCanonicalization relaxed/relaxed\n\
             KeyTable refile:{d}/opendkim/key.table\nSigningTable refile:{d}/opendkim/signing.table\n\
             InternalHosts refile:{d}/opendkim/TrustedHosts\nExternalIgnoreList refile:{d}/opendkim/TrustedHosts\n\
             MacroList daemon_name=ORIGINATING|SUBMISSION\nSignHeaders From,To,Subject,Date,Message-ID\n\
             OversignHeaders From\nSignatureTTL 604800\nMultipleSignatures yes\n\
             Socket inet:{port}@127.0.0.1\nUserID opendkim:opendkim\nNameservers 127.0.0.1\n\
             On-Default tempfail\nOn-BadSignature reject\nRequireSafeKeys yes\nMinimumKeyBits 2048\n\
             SomethingUnknown x\n"
        ),
    );
    s.write("opendmarc/ignore.hosts", "192.0.2.0/24\n");
    let dmarc = s.write(
        "opendmarc.conf",
        &format!(
            "AuthservID mx.test.example\nTrustedAuthservIDs mx.test.example, gw.example.net\n\
             RejectFailures true\nHoldQuarantinedMessages true\nIgnoreHosts {d}/opendmarc/ignore.hosts\n\
             IgnoreAuthenticatedClients true\nIgnoreMailFrom lists.example\nSPFSelfValidate true\n\
             FailureReports false\nFailureReportsSentBy dmarc@a.example\nHistoryFile /run/opendmarc/opendmarc.dat\n\
             Socket inet:8893@localhost\nPublicSuffixList /usr/share/publicsuffix\n"
        ),
    );
    let records = BTreeMap::from([
        (
            "s2048._domainkey.a.example".to_string(),
            k.rsa.record.clone(),
        ),
        (
            "e2026._domainkey.a.example".to_string(),
            k.ed.record.clone(),
        ),
        (
            "legacy._domainkey.b.example".to_string(),
            k.rsa1024.record.clone(),
        ),
        (
            "inl._domainkey.c.example".to_string(),
            k.rsa_pkcs1.record.clone(),
        ),
    ]);
    Setup {
        scratch: s,
        dkim,
        dmarc,
        records,
        mail_gid,
    }
}

#[test]
fn a_multi_domain_setup_migrates_and_signs_the_same() {
    if !root_or_skip() {
        return;
    }
    let setup = realistic();
    let out_dir = setup.scratch.0.join("out");
    let run = migrate(&[
        "--opendkim",
        setup.dkim.to_str().unwrap(),
        "--opendmarc",
        setup.dmarc.to_str().unwrap(),
        "--defaults-dir",
        setup.scratch.0.join("default").to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(run.ok, "{}", run.text());
    let table = &run.stdout;
    all_listed(&setup.dkim, table);
    all_listed(&setup.dmarc, table);
    for want in [
        "signing.key_table = \"refile:key.table\"",
        "signing.internal_hosts = [\"file:internal.hosts\"]",
        "signing.daemon_names = [\"ORIGINATING\", \"SUBMISSION\"]",
        "signing.expiration = \"604800s\"",
        "signing.multiple_signatures = true",
        "verify.on_dns_error = \"tempfail\"",
        "a DKIM result alone never rejects",
        "not recognised by migrate",
        "a 2048-bit floor would fail mail RFC 8301 accepts",
        "our own authserv-id dropped",
        "dmarc.never_reject_mail_from = [\"lists.example\"]: only when SPF passes",
        "dmarc.enforce = true",
        "dmarc.quarantine_action = \"hold\"",
        "dmarc.never_reject = [\"file:never-reject.hosts\"]",
        "one milter now: OpenDMARC's socket is no longer needed",
        // The 0600 root key: mailseal runs as its own user.
        "a.private is readable by its owner only; mailseal runs as user mailseal: chgrp mailseal",
    ] {
        assert!(table.contains(want), "{want:?} not in:\n{table}");
    }
    let toml = std::fs::read_to_string(out_dir.join("mailseal.toml")).unwrap();
    assert!(
        toml.contains("# [[verify.trusted_relays]]")
            && toml.contains("# authserv_ids = [\"gw.example.net\"]"),
        "{toml}"
    );
    assert!(
        !toml.contains("authserv_ids = [\"mx.test.example"),
        "{toml}"
    );
    // The 0640 root:mail key keeps its place: the drop-in adds the group.
    let drop_in = std::fs::read_to_string(out_dir.join("mailseal.service.d/migrate.conf")).unwrap();
    assert!(drop_in.contains("SupplementaryGroups=mail"), "{drop_in}");

    let cfg = out_dir.join("mailseal.toml");
    let cfg = cfg.to_str().unwrap();
    // Without that group the key is refused, named; with it the configuration is good, with
    // the warnings an admin must see.
    let refused = cli_blocking(&["check-config", "-c", cfg], None);
    assert!(
        !refused.ok && refused.text().contains("b.private is readable by group"),
        "{}",
        refused.text()
    );
    let check = with_groups(&[setup.mail_gid], &["check-config", "-c", cfg], None);
    assert!(check.ok, "{}", check.text());
    let warnings = &check.stderr;
    assert!(
        warnings.contains("is a rsa-1024 key: RFC 8301"),
        "{warnings}"
    );
    assert!(
        warnings.contains("\"*.a.example\" is a host name pattern"),
        "{warnings}"
    );
    assert!(
        warnings.contains("any local user can connect to a TCP milter"),
        "{warnings}"
    );

    // Which clients are outbound: the TrustedHosts networks, minus the exclusion; the host
    // name was resolved at load.
    for (ip, want) in [
        ("192.168.4.5", "outbound"),
        ("10.1.2.3", "outbound"),
        ("10.1.99.7", "inbound"),
        ("127.0.0.1", "outbound"),
        ("203.0.113.9", "inbound"),
    ] {
        let out = with_groups(
            &[setup.mail_gid],
            &["explain", "-c", cfg, "--client-ip", ip, "alice@a.example"],
            None,
        );
        assert!(
            out.ok && out.stdout.starts_with(want),
            "{ip}: {}",
            out.text()
        );
    }
    let out = with_groups(
        &[setup.mail_gid],
        &["explain", "-c", cfg, "news@b.example"],
        None,
    );
    assert!(out.stdout.contains("signer %"), "{}", out.text());

    // Signing round trips, verified by python3-dkim against the keys' records.
    for (from, want) in [
        ("alice@a.example", vec!["a=rsa-sha256", "a=ed25519-sha256"]),
        ("news@b.example", vec!["s=legacy"]),
        ("ops@c.example", vec!["s=inl"]),
        ("ops@eu.c.example", vec!["s=inl"]),
    ] {
        let msg = format!(
            "From: <{from}>\r\nTo: <x@example.org>\r\nSubject: hi\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m@x>\r\n\r\nHello.\r\n"
        );
        let out = with_groups(
            &[setup.mail_gid],
            &["sign", "-c", cfg],
            Some(msg.as_bytes()),
        );
        assert!(out.ok, "{from}: {}", out.text());
        let signed = out.stdout.replace("\r\n", "\n").replace('\n', "\r\n");
        let sigs = signed.matches("DKIM-Signature:").count();
        assert_eq!(sigs, want.len(), "{from}: {signed}");
        for w in &want {
            assert!(signed.contains(w), "{from}: {w} in {signed}");
        }
        assert_eq!(
            dkim_check(signed.as_bytes(), &setup.records),
            vec![true; want.len()],
            "{from}: {signed}"
        );
        if from.ends_with("@b.example") {
            assert!(signed.contains("i=@b.example"), "{signed}");
        }
    }
}

#[test]
fn single_key_mode_and_a_file_signing_table() {
    if !root_or_skip() {
        return;
    }
    let k = keys();
    let s = Scratch::new("migrate-single");
    let key = s.write("dkim.key", std::str::from_utf8(&k.rsa.pem).unwrap());
    chown(&key, 0, 0, 0o600);
    let empty = s.0.join("default");
    std::fs::create_dir_all(&empty).unwrap();
    let conf = s.write(
        "opendkim.conf",
        &format!(
            "Domain x.example, y.example\nKeyFile {}\nSelector 2007\nSubDomains yes\nSocket inet:{}@127.0.0.1\n",
            key.display(),
            free_port()
        ),
    );
    let out_dir = s.0.join("out");
    let run = migrate(&[
        "--opendkim",
        conf.to_str().unwrap(),
        "--defaults-dir",
        empty.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(run.ok, "{}", run.text());
    assert!(
        run.stdout
            .contains("x.example, y.example signed with selector 2007"),
        "{}",
        run.stdout
    );
    let cfg = out_dir.join("mailseal.toml");
    let cfg = cfg.to_str().unwrap();
    let msg = "From: <a@mail.x.example>\r\nTo: <b@example.org>\r\nSubject: s\r\n\r\nbody\r\n";
    let out = cli_blocking(&["sign", "-c", cfg], Some(msg.as_bytes()));
    assert!(out.ok, "{}", out.text());
    let signed = out.stdout.replace("\r\n", "\n").replace('\n', "\r\n");
    assert!(
        signed.contains("d=x.example") && signed.contains("s=2007"),
        "{signed}"
    );
    let records = BTreeMap::from([(
        "2007._domainkey.x.example".to_string(),
        k.rsa.record.clone(),
    )]);
    assert_eq!(dkim_check(signed.as_bytes(), &records), vec![true]);

    // A file: SigningTable is looked up in OpenDKIM's order, not the file's: the domain row
    // wins over the catch-all written before it, the address row over both.
    let tables = Scratch::new("migrate-file-table");
    let kt = tables.write(
        "key.table",
        &format!(
            "any %:s1:{p}\nxk x.example:s2:{p}\nbob x.example:s3:{p}\n",
            p = key.display()
        ),
    );
    tables.write(
        "signing.table",
        "* any\nx.example xk\nbob@x.example bob\n*@x.example xk\n",
    );
    let cfg = tables.write(
        "m.toml",
        &format!(
            "[signing]\nkey_table = \"{}\"\nsigning_table = \"file:signing.table\"\n",
            kt.display()
        ),
    );
    let cfg = cfg.to_str().unwrap();
    let check = cli_blocking(&["check-config", "-c", cfg], None);
    assert!(
        check.ok
            && check
                .stderr
                .contains("\"*@x.example\" never matches in a file: table"),
        "{}",
        check.text()
    );
    for (addr, key) in [
        ("alice@x.example", "key xk"),
        ("bob@x.example", "key bob"),
        ("carol@y.example", "key any"),
    ] {
        let out = cli_blocking(&["explain", "-c", cfg, addr], None);
        let first = out.stdout.lines().next().unwrap_or_default().to_string();
        assert!(first.contains(key), "{addr}: {}", out.text());
    }
}
