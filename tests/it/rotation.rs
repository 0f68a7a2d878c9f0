//! DKIM key rotation through the binary (`mailseal keys`), records served by loopback DNS
//! servers: a new key never signs before its record is seen at the zone's authoritative
//! server; once active it signs (python3-dkim verifies), the old key retires, is revoked and
//! removed on schedule (days moved on with libfaketime).

use std::collections::BTreeMap;

use crate::common::dns::{DnsServer, Zones};
use crate::common::*;
use serde_json::Value;

const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

fn keys_cmd(cfg: &str, args: &[&str], days_later: u32) -> CliOutput {
    let mut all = vec!["keys"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-c", cfg]);
    if days_later == 0 {
        return cli_blocking(&all, None);
    }
    assert!(
        std::path::Path::new(FAKETIME_LIB).exists(),
        "faketime is not installed (scripts/test.sh installs it)"
    );
    let preload = format!("LD_PRELOAD={FAKETIME_LIB}");
    let offset = format!("FAKETIME=+{days_later}d");
    cli_through(
        &["env", &preload, &offset, "FAKETIME_DONT_FAKE_MONOTONIC=1"],
        &all,
        None,
    )
}

fn status(cfg: &str) -> Vec<Value> {
    let out = keys_cmd(cfg, &["status", "--json"], 0);
    assert!(out.ok, "{}", out.text());
    serde_json::from_str::<Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
        .as_array()
        .unwrap()
        .clone()
}

fn state_of<'a>(rows: &'a [Value], selector: &str) -> &'a str {
    rows.iter()
        .find(|r| r["selector"] == selector)
        .and_then(|r| r["state"].as_str())
        .unwrap_or("gone")
}

/// The DKIM record that publishes a key file's public key.
fn record_of(file: &str) -> String {
    let pem = std::fs::read(file).unwrap();
    let public = mailseal::config::keys::parse_private_key(&pem)
        .unwrap()
        .public;
    format!("v=DKIM1; k=rsa; p={}", b64(&public))
}

fn signed_selector(cfg: &str) -> (String, String) {
    let msg = "From: <a@example.com>\r\nTo: <b@example.org>\r\nSubject: r\r\n\r\nbody\r\n";
    let out = cli_blocking(&["sign", "-c", cfg], Some(msg.as_bytes()));
    assert!(out.ok, "{}", out.text());
    let signed = out.stdout.replace("\r\n", "\n").replace('\n', "\r\n");
    let sig = signed.split("DKIM-Signature:").nth(1).unwrap_or_default();
    (
        tag(&sig.replace("\r\n", ""), "s").unwrap_or_default(),
        signed,
    )
}

/// The zone's authoritative server, on port 53 of an address of its own (as rotation asks
/// it), and a resolver that points there but never learns the new record: it stands for a
/// caching resolver that keeps a negative answer from before publication.
const AUTHORITATIVE: &str = "127.0.4.53:53";

#[tokio::test]
async fn a_rotation_from_pending_to_removed() {
    let k = keys();
    let authoritative = Zones::default();
    authoritative.txt("rsa._domainkey.example.com", &k.rsa.record);
    let auth_server = match DnsServer::start_on(authoritative, AUTHORITATIVE.parse().unwrap()).await
    {
        Ok(s) => s,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI binds port 53 (root): {e}"
            );
            eprintln!("SKIPPED: cannot bind {AUTHORITATIVE}: {e}");
            return;
        }
    };
    let zones = Zones::default();
    zones.txt("rsa._domainkey.example.com", &k.rsa.record);
    zones.add(
        "example.com",
        crate::common::dns::Rr::Ns("ns1.example.com".into()),
    );
    zones.add(
        "ns1.example.com",
        crate::common::dns::Rr::A("127.0.4.53".parse().unwrap()),
    );
    let dns = DnsServer::start(zones).await;
    let s = Scratch::new("rotation");
    let signing = example_com_rsa(&s.0, "*@example.com");
    let cfg = s.write(
        "m.toml",
        &format!(
            "[signing]\n{signing}\n[keys]\ndir = \"rotation\"\nactivate_after = \"0s\"\nretire_after = \"7d\"\nremove_after = \"7d\"\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n",
            dns.addr
        ),
    );
    let cfg = cfg.to_str().unwrap().to_string();
    let dns_clone = auth_server.zones.clone();
    let cfg2 = cfg.clone();
    tokio::task::spawn_blocking(move || {
        let cfg = cfg2;
        // No state yet: the KeyTable's key is active.
        let rows = status(&cfg);
        assert_eq!(state_of(&rows, "rsa"), "active", "{rows:?}");
        assert_eq!(rows[0]["dns"], "ok", "{rows:?}");

        let out = keys_cmd(&cfg, &["rotate", "--algorithm", "rsa"], 0);
        assert!(
            out.ok && out.stdout.contains("is pending. Publish:"),
            "{}",
            out.text()
        );
        assert!(
            out.stdout.contains("._domainkey.example.com.\tIN\tTXT"),
            "{}",
            out.stdout
        );
        let rows = status(&cfg);
        let new = rows
            .iter()
            .find(|r| r["state"] == "pending")
            .unwrap_or_else(|| panic!("{rows:?}"))
            .clone();
        let selector = new["selector"].as_str().unwrap().to_string();
        assert!(
            selector.starts_with("r20") && selector.ends_with('a'),
            "{selector}"
        );
        assert_eq!(new["algorithm"], "rsa");
        assert_eq!(new["dns"], "missing", "{new:?}");
        // A second rotate while one is under way starts nothing.
        let again = keys_cmd(&cfg, &["rotate"], 0);
        assert!(
            again.stdout.contains("already under way"),
            "{}",
            again.text()
        );

        // Not published yet: nothing moves, the old key signs.
        let out = keys_cmd(&cfg, &["advance"], 0);
        assert!(
            out.ok && out.stdout.contains("nothing to do"),
            "{}",
            out.text()
        );
        assert_eq!(signed_selector(&cfg).0, "rsa");

        // The record published: published, then (activate_after 0s) active.
        let record = record_of(new["file"].as_str().unwrap());
        // Published at the authoritative server only: the resolver still says it is missing,
        // yet rotation sees it there.
        dns_clone.txt(&format!("{selector}._domainkey.example.com"), &record);
        let out = keys_cmd(&cfg, &["advance"], 0);
        assert!(
            out.stdout.contains("published (record seen)"),
            "{}",
            out.text()
        );
        let rows = status(&cfg);
        let row = rows
            .iter()
            .find(|r| r["selector"] == selector.as_str())
            .unwrap();
        assert_eq!(row["dns"], "missing", "the resolver's view: {row:?}");
        assert_eq!(
            signed_selector(&cfg).0,
            "rsa",
            "published is not yet signing"
        );
        let out = keys_cmd(&cfg, &["advance"], 0);
        assert!(
            out.stdout.contains(&format!("{selector}: active"))
                && out.stdout.contains("rsa: retiring"),
            "{}",
            out.text()
        );
        let (used, signed) = signed_selector(&cfg);
        assert_eq!(used, selector);
        let records = BTreeMap::from([(format!("{selector}._domainkey.example.com"), record)]);
        assert_eq!(dkim_check(signed.as_bytes(), &records), vec![true]);
        let rows = status(&cfg);
        assert_eq!(state_of(&rows, &selector), "active", "{rows:?}");
        assert_eq!(state_of(&rows, "rsa"), "retiring", "{rows:?}");
        let explain = cli_blocking(&["explain", "-c", &cfg, "a@example.com"], None);
        assert!(
            explain.stdout.contains(&format!("s={selector}")),
            "{}",
            explain.text()
        );

        // A lost state file is an error, never a silent return to the KeyTable's key.
        let dir = std::path::Path::new(&cfg)
            .parent()
            .unwrap()
            .join("rotation");
        std::fs::rename(dir.join("state.json"), dir.join("state.json.bak")).unwrap();
        let lost = cli_blocking(&["check-config", "-c", &cfg], None);
        assert!(
            !lost.ok
                && lost
                    .text()
                    .contains("state.json is missing but 1 key(s) made by rotation"),
            "{}",
            lost.text()
        );
        std::fs::rename(dir.join("state.json.bak"), dir.join("state.json")).unwrap();

        // Days later: the old key is revoked (still within retire_after at 6 days), then gone.
        let out = keys_cmd(&cfg, &["advance"], 6);
        assert!(out.stdout.contains("nothing to do"), "{}", out.text());
        let out = keys_cmd(&cfg, &["advance"], 8);
        assert!(
            out.stdout
                .contains("rsa: revoked; publish rsa._domainkey.example.com TXT \"v=DKIM1; p=\""),
            "{}",
            out.text()
        );
        let out = keys_cmd(&cfg, &["advance"], 16);
        assert!(out.stdout.contains("rsa: removed"), "{}", out.text());
        let rows = status(&cfg);
        assert_eq!(state_of(&rows, "rsa"), "gone", "{rows:?}");
        // The KeyTable's own key file is the admin's: never deleted.
        assert!(keys().rsa.path.exists());
        assert_eq!(signed_selector(&cfg).0, selector);
    })
    .await
    .unwrap();
}

/// The daemon moves keys on by itself ([keys] check_every) and signs with the new key as soon
/// as it is active, without a restart; `rotate_every` starts a rotation on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_switches_keys_on_its_own() {
    use crate::common::process::Running;
    let k = keys();
    let zones = Zones::default();
    zones.txt("rsa._domainkey.example.com", &k.rsa.record);
    let dns = DnsServer::start(zones).await;
    let s = Scratch::new("rotation-daemon");
    let port = crate::common::postfix::free_port();
    let mport = crate::common::postfix::free_port();
    let signing = example_com_rsa(&s.0, "*@example.com");
    let cfg = s.write(
        "m.toml",
        &format!(
            "socket = \"inet:{port}@127.0.0.1\"\nmode = \"s\"\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n[signing]\n{signing}\n[keys]\ndir = \"rotation\"\nactivate_after = \"0s\"\ncheck_every = \"1s\"\nrotate_every = \"1s\"\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n",
            dns.addr
        ),
    );
    let mut d = Running::started(&cfg, &[]);
    // rotate_every: the KeyTable's key is older than a second, so a rotation starts.
    let line = d.wait_log("is pending. Publish:");
    let selector = line
        .split("new rsa key ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    let rows = {
        let c = cfg.to_str().unwrap().to_string();
        tokio::task::spawn_blocking(move || status(&c))
            .await
            .unwrap()
    };
    let file = rows
        .iter()
        .find(|r| r["selector"] == selector.as_str())
        .and_then(|r| r["file"].as_str())
        .unwrap_or_else(|| panic!("{rows:?}"))
        .to_string();
    assert_eq!(daemon_selector(port).await, "rsa");
    // Published: the daemon sees it, makes it active, reloads and signs with it.
    dns.zones.txt(
        &format!("{selector}._domainkey.example.com"),
        &record_of(&file),
    );
    d.wait_log(&format!("{selector}: active (signing)"));
    d.wait_log("configuration reloaded");
    assert_eq!(daemon_selector(port).await, selector);
}

/// knot on 127.0.4.54, port 53: the zone's authoritative server (as its NS record says) and
/// the update server, accepting TSIG-signed RFC 2136 updates. A rotation publishes the new
/// record, the revocation and the removal by itself; mail signed at each stage verifies
/// against what knot serves at that moment.
#[tokio::test]
async fn a_rotation_published_by_dynamic_update_to_knot() {
    let knotd = std::path::Path::new("/usr/sbin/knotd");
    if !knotd.exists() || unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs this as root with knot installed (scripts/test.sh)"
        );
        eprintln!("SKIPPED: needs root and knot");
        return;
    }
    let k = keys();
    let s = Scratch::new("rotation-knot");
    let dir = s.0.display().to_string();
    let secret = b64(b"a test secret of thirty-two byte");
    let quoted = |record: &str| {
        record
            .as_bytes()
            .chunks(255)
            .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    s.write(
        "example.com.zone",
        &format!(
            "$ORIGIN example.com.\n$TTL 60\n@ SOA ns1.example.com. hostmaster.example.com. 1 3600 600 86400 60\n@ NS ns1.example.com.\nns1 A 127.0.4.54\nrsa._domainkey TXT {}\n",
            quoted(&k.rsa.record)
        ),
    );
    let conf = s.write(
        "knot.conf",
        &format!(
            "server:\n    listen: 127.0.4.54@53\n    rundir: \"{dir}\"\ndatabase:\n    storage: \"{dir}/db\"\nkey:\n  - id: mailseal-update\n    algorithm: hmac-sha256\n    secret: {secret}\nacl:\n  - id: update\n    key: mailseal-update\n    action: update\nzone:\n  - domain: example.com\n    file: \"{dir}/example.com.zone\"\n    acl: update\n    zonefile-sync: 0\n    journal-content: changes\n"
        ),
    );
    // knot keeps its journal there; without it every update fails.
    std::fs::create_dir_all(s.0.join("db")).unwrap();
    struct Knot(std::process::Child);
    impl Drop for Knot {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _knot = Knot(
        std::process::Command::new(knotd)
            .arg("-c")
            .arg(&conf)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let knot_addr: std::net::SocketAddr = "127.0.4.54:53".parse().unwrap();
    let resolver = mailseal::dns::authenticator(&mailseal::config::Dns {
        nameservers: vec![knot_addr],
        timeout: std::time::Duration::from_secs(1),
        attempts: 1,
        ..Default::default()
    })
    .unwrap();
    let served = |name: String| {
        let resolver = &resolver;
        async move {
            match mailseal::tools::lookup::txt_records(resolver, &name).await {
                mailseal::tools::lookup::TxtAnswer::Records(r) => r,
                _ => Vec::new(),
            }
        }
    };
    let mut up = false;
    for _ in 0..50 {
        if served("rsa._domainkey.example.com".into()).await == vec![k.rsa.record.clone()] {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(up, "knot did not serve the zone");
    let tsig = s.write(
        "update.tsig",
        &format!(
            "key \"mailseal-update\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{secret}\";\n}};\n"
        ),
    );
    std::fs::set_permissions(&tsig, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let signing = example_com_rsa(&s.0, "*@example.com");
    let cfg = s.write(
        "m.toml",
        &format!(
            "[signing]\n{signing}\n[keys]\ndir = \"rotation\"\nactivate_after = \"0s\"\nretire_after = \"1s\"\nremove_after = \"1s\"\nupdate_server = \"{knot_addr}\"\ntsig_key_file = \"update.tsig\"\n[dns]\nnameservers = [\"{knot_addr}\"]\ntimeout = \"1s\"\nattempts = 1\n"
        ),
    );
    let cfg = cfg.to_str().unwrap().to_string();
    let run = |args: &'static [&'static str]| {
        let cfg = cfg.clone();
        async move {
            tokio::task::spawn_blocking(move || keys_cmd(&cfg, args, 0))
                .await
                .unwrap()
        }
    };
    let sign = || {
        let cfg = cfg.clone();
        async move {
            tokio::task::spawn_blocking(move || signed_selector(&cfg))
                .await
                .unwrap()
        }
    };
    let verify = |signed: String, selector: String| async move {
        let name = format!("{selector}._domainkey.example.com");
        let now = served(name.clone()).await;
        assert_eq!(now.len(), 1, "knot serves {now:?} at {name}");
        let records = BTreeMap::from([(name, now[0].clone())]);
        tokio::task::spawn_blocking(move || dkim_check(signed.as_bytes(), &records))
            .await
            .unwrap()
    };

    // The new key's record goes to knot with the rotation.
    let out = run(&["rotate"]).await;
    assert!(
        out.ok
            && out
                .stdout
                .contains("record set by dynamic update to 127.0.4.54:53"),
        "{}",
        out.text()
    );
    let selector = out
        .stdout
        .split("new rsa key ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    let name = format!("{selector}._domainkey.example.com");
    assert_eq!(
        served(name.clone()).await.len(),
        1,
        "knot does not serve {name}"
    );
    let (used, signed) = sign().await;
    assert_eq!(used, "rsa", "pending does not sign");
    assert_eq!(verify(signed, used).await, vec![true]);

    let out = run(&["advance"]).await;
    assert!(
        out.stdout.contains("published (record seen)"),
        "{}",
        out.text()
    );
    let out = run(&["advance"]).await;
    assert!(
        out.stdout.contains(&format!("{selector}: active")),
        "{}",
        out.text()
    );
    let (used, signed) = sign().await;
    assert_eq!(used, selector);
    assert_eq!(verify(signed, used).await, vec![true]);

    // retire_after and remove_after of a second: the old record revoked, then deleted, by
    // updates (bounded waits).
    let until = |step: &'static str, update: &'static str| {
        let run = &run;
        async move {
            for _ in 0..20 {
                let out = run(&["advance"]).await;
                if out.stdout.contains(step) {
                    assert!(out.stdout.contains(update), "{}", out.text());
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            panic!("no advance said {step:?}");
        }
    };
    until(
        "rsa: revoked",
        "rsa._domainkey.example.com: record set by dynamic update",
    )
    .await;
    assert_eq!(
        served("rsa._domainkey.example.com".into()).await,
        vec!["v=DKIM1; p=".to_string()]
    );
    until(
        "rsa: removed",
        "rsa._domainkey.example.com: record deleted by dynamic update",
    )
    .await;
    assert!(served("rsa._domainkey.example.com".into()).await.is_empty());
    // Mail still signs, with the new key, and verifies against knot.
    let (used, signed) = sign().await;
    assert_eq!(used, selector);
    assert_eq!(verify(signed, used).await, vec![true]);
}

/// The selector the daemon at `port` signs with.
async fn daemon_selector(port: u16) -> String {
    let env = Envelope {
        client_ip: "127.0.0.1".into(),
        ..Default::default()
    };
    let msg = "From: alice@example.com\r\nSubject: r\r\n\r\nbody\r\n";
    let out = deliver(([127, 0, 0, 1], port).into(), &env, msg).await;
    tag(&out.inserted("DKIM-Signature")[0], "s").unwrap_or_default()
}

/// Two signing hosts share the rotation state through PostgreSQL (`[keys] store`), each with
/// a key directory of its own. A new key whose record is published does not sign until both
/// hosts hold its file (copied by the admin's configuration management); then both switch at
/// the same step, each reloading on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_sharing_the_state_switch_at_the_same_step() {
    use crate::common::pg::Postgres;
    use crate::common::process::Running;
    let _exclusive = crate::common::exclusive().await;
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let k = keys();
    let zones = Zones::default();
    zones.txt("rsa._domainkey.example.com", &k.rsa.record);
    let dns = DnsServer::start(zones).await;
    let mut hosts = Vec::new();
    for name in ["mx1.example.net", "mx2.example.net"] {
        let s = Scratch::new("rotation-shared");
        let port = crate::common::postfix::free_port();
        let signing = example_com_rsa(&s.0, "*@example.com");
        let cfg = s.write(
            "m.toml",
            &format!(
                "socket = \"inet:{port}@127.0.0.1\"\nmode = \"s\"\nauthserv_id = \"{name}\"\n[signing]\n{signing}\n[keys]\ndir = \"rotation\"\nstore = \"{}\"\nactivate_after = \"0s\"\ncheck_every = \"1s\"\ncheck_authoritative = false\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n",
                pg.url(),
                dns.addr
            ),
        );
        let d = Running::started(&cfg, &[]);
        hosts.push((s, cfg.to_str().unwrap().to_string(), port, d));
    }
    let cfg1 = hosts[0].1.clone();
    // Both hosts registered (each daemon's first round).
    let registered = |cfg: &str| {
        let out = keys_cmd(cfg, &["hosts"], 0);
        assert!(out.ok, "{}", out.text());
        out.stdout
    };
    let c = cfg1.clone();
    let listed = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let l = registered(&c);
            if (l.contains("mx1.example.net") && l.contains("mx2.example.net"))
                || std::time::Instant::now() > deadline
            {
                return l;
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    })
    .await
    .unwrap();
    assert!(
        listed.contains("mx1.example.net") && listed.contains("mx2.example.net"),
        "{listed}"
    );

    // A rotation started on mx1: its key is in mx1's directory only.
    let c = cfg1.clone();
    let rows = tokio::task::spawn_blocking(move || {
        let out = keys_cmd(&c, &["rotate"], 0);
        assert!(out.ok, "{}", out.text());
        status(&c)
    })
    .await
    .unwrap();
    let new = rows
        .iter()
        .find(|r| r["state"] == "pending")
        .unwrap_or_else(|| panic!("{rows:?}"))
        .clone();
    let selector = new["selector"].as_str().unwrap().to_string();
    let file = new["file"].as_str().unwrap().to_string();
    assert!(file.starts_with(hosts[0].0 .0.to_str().unwrap()), "{file}");
    dns.zones.txt(
        &format!("{selector}._domainkey.example.com"),
        &record_of(&file),
    );
    // Seen in DNS, but mx2 does not hold the key: it stays published, and names mx2.
    let c = cfg1.clone();
    let sel = selector.clone();
    let published = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if state_of(&status(&c), &sel) == "published" {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        false
    })
    .await
    .unwrap();
    assert!(published, "the record was never seen");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let c = cfg1.clone();
    let rows = tokio::task::spawn_blocking(move || status(&c))
        .await
        .unwrap();
    assert_eq!(state_of(&rows, &selector), "published", "{rows:?}");
    let waiting = rows
        .iter()
        .find(|r| r["selector"] == selector.as_str())
        .unwrap();
    assert!(
        waiting["next"]
            .as_str()
            .unwrap()
            .contains("mx2.example.net"),
        "{waiting}"
    );
    for (_, _, port, _) in &hosts {
        assert_eq!(daemon_selector(*port).await, "rsa");
    }

    // The admin's configuration management copies the key to mx2: both switch.
    let dest = hosts[1].0 .0.join("rotation/example.com");
    std::fs::create_dir_all(&dest).unwrap();
    let copy = dest.join(std::path::Path::new(&file).file_name().unwrap());
    std::fs::copy(&file, &copy).unwrap();
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut signing = Vec::new();
    while std::time::Instant::now() < deadline {
        signing.clear();
        for (_, _, port, _) in &hosts {
            signing.push(daemon_selector(*port).await);
        }
        if signing.iter().all(|s| *s == selector) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert_eq!(signing, [selector.clone(), selector.clone()]);
    for (_, _, _, d) in hosts.iter_mut() {
        d.wait_log("rotation state changed; reloading");
    }
    // Each host's own view (sign reads the local copy of the state) agrees.
    for (_, cfg, _, _) in &hosts {
        let c = cfg.clone();
        let (s, _) = tokio::task::spawn_blocking(move || signed_selector(&c))
            .await
            .unwrap();
        assert_eq!(s, selector);
    }
}
