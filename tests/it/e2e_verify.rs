//! End to end with Postfix, inbound: a message signed by OpenDKIM (Debian's opendkim as the
//! signing milter of a sending Postfix) arrives through a receiving Postfix with dkim=pass, spf=pass and dmarc=pass in
//! our Authentication-Results; a forged A-R with our authserv-id does not survive; a spoof is
//! refused with 550 5.7.1 when DMARC is enforced, also padded past the header cap or with a
//! trailing dot in From. DNS comes from a loopback server.

use std::process::{Command, Stdio};

use crate::common::dns::{DnsServer, Zones};
use crate::common::postfix::Postfix;
use crate::common::sink::Sink;
use crate::common::*;

/// Debian's OpenDKIM running as a signing milter (rsa-sha256) for the sending Postfix.
struct OpenDkim {
    child: std::process::Child,
    port: u16,
}

impl OpenDkim {
    fn start(dir: &std::path::Path, key: &std::path::Path) -> OpenDkim {
        let port = postfix::free_port();
        let conf = dir.join("opendkim.conf");
        std::fs::write(
            &conf,
            format!(
                "Socket inet:{port}@127.0.0.1\nDomain example.com\nSelector od\nKeyFile {}\n\
                 Mode s\nSignatureAlgorithm rsa-sha256\nCanonicalization relaxed/simple\n\
                 InternalHosts 127.0.0.0/8\nBackground no\nSyslog no\nPidFile {}\n",
                key.display(),
                dir.join("opendkim.pid").display()
            ),
        )
        .unwrap();
        let mut child = Command::new("/usr/sbin/opendkim")
            .args(["-f", "-x"])
            .arg(&conf)
            .stdout(Stdio::null())
            .spawn()
            .expect("opendkim");
        // Wait (bounded) until it listens.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return OpenDkim { child, port };
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("opendkim did not start listening on {port}");
    }
}

impl Drop for OpenDkim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opendkim_signed_mail_passes_and_spoof_is_refused() {
    let _exclusive = crate::common::exclusive().await;
    if !Postfix::available() || !std::path::Path::new("/usr/sbin/opendkim").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the Postfix tests"
        );
        eprintln!("SKIPPED: needs root, postfix and opendkim");
        return;
    }
    let k = keys();
    let zones = Zones::default();
    zones.txt("example.com", "v=spf1 ip4:127.0.0.1 -all");
    zones.txt("_dmarc.example.com", "v=DMARC1; p=reject");
    zones.txt("od._domainkey.example.com", &k.rsa_pkcs1.record);
    zones.txt("bulk.example", "v=spf1 ip4:198.51.100.0/24 -all");
    let dns = DnsServer::start(zones).await;

    let sink = Sink::start().await;
    let milter_port = postfix::free_port();
    let cfg = format!(
        "authserv_id = \"mx.test\"\n[signing]\ninternal_hosts = []\n[dns]\nnameservers = [\"{}\"]\n[dmarc]\nenforce = true\n",
        dns.addr
    );
    let daemon = Daemon::start_on(Scratch::new("e2e-verify"), &cfg, milter_port).await;
    let pf_dir = Scratch::new("e2e-verify-postfix");
    let pf = Postfix::start(&pf_dir.0, milter_port, sink.port);

    // The sending side: Postfix with OpenDKIM signing, relaying to the receiving Postfix.
    // OpenDKIM refuses configuration and key files below any directory others can write
    // (such as /tmp, where a CI checkout may live), so its files go to /var/lib.
    let od_dir = Scratch(
        std::path::PathBuf::from("/var/lib/mailseal-tests")
            .join(format!("opendkim-{}", std::process::id())),
    );
    std::fs::create_dir_all(&od_dir.0).unwrap();
    std::fs::set_permissions(
        &od_dir.0,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let od_key = od_dir.0.join("od.private");
    std::fs::write(&od_key, &k.rsa_pkcs1.pem).unwrap();
    std::fs::set_permissions(&od_key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let opendkim = OpenDkim::start(&od_dir.0, &od_key);
    let sender_dir = Scratch::new("e2e-sender-postfix");
    let sender = Postfix::start_named(
        &sender_dir.0,
        "out.sender.test",
        opendkim.port,
        pf.smtp_port,
    );

    // A legitimate message from example.com carrying a forged A-R with our authserv-id.
    let msg = "Authentication-Results: MX.TEST (forged);\r\n\tdkim=pass; dmarc=pass\r\n\
               From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: signed by opendkim\r\n\
               Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <od-1@example.com>\r\n\r\nHello from OpenDKIM.\r\n";
    let (ok, out) = sender.swaks("alice@example.com", &[], msg);
    assert!(ok, "{out}\n{}", sender.log());
    assert!(
        sink.wait_for(1, 60).await,
        "not delivered\n{}\n{}",
        sender.log(),
        pf.log()
    );
    let got = String::from_utf8_lossy(&sink.messages.lock().unwrap()[0]).into_owned();
    let ar: Vec<&str> = got
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .split("\r\nAuthentication-Results:")
        .skip(1)
        .collect();
    let all_ar = got.matches("Authentication-Results:").count();
    assert_eq!(all_ar, 1, "exactly our one A-R:\n{got}");
    assert!(!got.contains("(forged)"), "forged A-R survived:\n{got}");
    let ours = if got.starts_with("Authentication-Results:") {
        got.split("Authentication-Results:")
            .nth(1)
            .unwrap()
            .to_string()
    } else {
        ar[0].to_string()
    };
    assert!(
        got.contains("DKIM-Signature: v=1; a=rsa-sha256"),
        "not signed by OpenDKIM:\n{got}"
    );
    for want in [
        "mx.test;",
        "spf=pass",
        "smtp.mailfrom=alice@example.com",
        "dkim=pass header.d=example.com header.s=od",
        "dmarc=pass",
    ] {
        assert!(ours.contains(want), "missing {want:?} in:\n{got}");
    }

    // A spoof of example.com from a host SPF does not allow, without a signature: 550 5.7.1.
    let spoof =
        "From: CEO <ceo@example.com>\r\nTo: bob@example.org\r\nSubject: wire money\r\n\r\nNow.\r\n";
    let xclient = [
        "--xclient-addr",
        "203.0.113.5",
        "--xclient-helo",
        "bulk.example",
    ];
    let (ok, out) = pf.swaks("mallory@bulk.example", &xclient, spoof);
    assert!(!ok, "spoof accepted:\n{out}");
    assert!(
        out.contains("550 5.7.1") && out.contains("DMARC") && out.contains("example.com"),
        "{out}"
    );
    // The same spoof padded past max_headers (1,000 fields, about 7 KB, which Postfix takes),
    // with a forged A-R after the padding, and with a trailing dot in From: still 550 5.7.1.
    let pad: String = (0..1100).map(|i| format!("X-Pad: {i}\r\n")).collect();
    for spoof in [
        format!("{pad}Authentication-Results: mx.test; dmarc=pass\r\n{spoof}"),
        spoof.replace("ceo@example.com>", "ceo@example.com.>"),
    ] {
        let (ok, out) = pf.swaks("mallory@bulk.example", &xclient, &spoof);
        assert!(!ok, "spoof accepted:\n{out}");
        assert!(
            out.contains("550 5.7.1") && out.contains("example.com"),
            "{out}"
        );
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(sink.count(), 1);
    drop(sender);
    drop(opendkim);
    drop(pf);
    daemon.stop().await;
}
