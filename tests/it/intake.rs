//! Report intake (`[intake]`, `mailseal reports import`): the real-world samples of
//! `../shared/report-samples` through `import` and through the milter, each stored or
//! refused with its reason and the stored rows checked against the file; hostile inputs
//! (compression bombs, entity expansion, other domains, oversize mail, future dates) refused
//! within seconds and a bounded memory, measured; and end to end through a real Postfix.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;
use indymilter_test::Status;

/// `../shared/report-samples`, or `None` (said; an error under CI).
fn samples() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/report-samples");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "../shared/report-samples is missing"
    );
    eprintln!("SKIPPED: ../shared/report-samples is missing");
    None
}

const DOMAINS: &str = r#"["example.com", "example.de", "domain.de", "indemed.com", "cardinalhealth.ca", "company-y.example"]"#;

fn config(s: &Scratch, extra: &str) -> PathBuf {
    s.write(
        "m.toml",
        &format!(
            "[reports]\nstore = \"r.sqlite\"\norg_name = \"example.net\"\nemail = \"dmarc-reports@example.net\"\n[intake]\ndomains = {DOMAINS}\n{extra}"
        ),
    )
}

fn import(cfg: &Path, inputs: &[&Path]) -> CliOutput {
    let mut args: Vec<&std::ffi::OsStr> = vec!["reports".as_ref(), "import".as_ref()];
    args.extend(["-c".as_ref(), cfg.as_os_str()]);
    args.extend(inputs.iter().map(|p| p.as_os_str()));
    cli_blocking(&args, None)
}

fn db(s: &Scratch) -> rusqlite::Connection {
    rusqlite::Connection::open(s.0.join("r.sqlite")).unwrap()
}

/// The single number a `SELECT COUNT(*) …` answers.
fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Every row a query answers, each made by `f`.
fn all<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    f: impl FnMut(&rusqlite::Row) -> rusqlite::Result<T>,
) -> Vec<T> {
    conn.prepare(sql)
        .unwrap()
        .query_map([], f)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// (records, messages) stored for one aggregate report.
fn stored(conn: &rusqlite::Connection, org: &str, report_id: &str) -> (i64, i64) {
    conn.query_row(
        "SELECT COUNT(w.report), COALESCE(SUM(w.count), 0) FROM intake_reports r \
         LEFT JOIN intake_rows w ON w.report = r.id WHERE r.org = ?1 AND r.report_id = ?2",
        [org, report_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

/// (records, messages) in an aggregate report file, counted independently of the parser.
fn in_file(xml: &str) -> (i64, i64) {
    let records = xml.matches("<record>").count() as i64;
    let messages = xml
        .split("<count>")
        .skip(1)
        .filter_map(|s| s.split("</count>").next())
        .map(|n| n.trim().parse::<i64>().unwrap())
        .sum();
    (records, messages)
}

fn text_of(tag: &str, xml: &str) -> String {
    xml.split(&format!("<{tag}>"))
        .nth(1)
        .and_then(|s| s.split(&format!("</{tag}>")).next())
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn decompress(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let name = path.to_string_lossy();
    let raw = if name.ends_with(".gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    } else if name.ends_with(".zip") {
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let mut out = Vec::new();
        z.by_index(0).unwrap().read_to_end(&mut out).unwrap();
        out
    } else {
        bytes
    };
    String::from_utf8_lossy(&raw).into_owned()
}

/// Every sample through `import`: what is stored, refused, a duplicate or not ours, and the
/// stored rows and message counts equal to the file's.
#[test]
fn real_world_samples_through_import() {
    let Some(dir) = samples() else { return };
    let s = Scratch::new("intake-samples");
    let cfg = config(&s, "");
    let inputs: Vec<PathBuf> = ["aggregate", "failure", "other", "smtp_tls"]
        .iter()
        .map(|d| dir.join(d))
        .collect();
    let refs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    let out = import(&cfg, &refs);
    // The empty file is refused: exit 1.
    assert!(!out.ok, "{}", out.text());
    let fate = |file: &str| -> String {
        out.stdout
            .lines()
            .find(|l| l.contains(&format!("/{file}:")))
            .unwrap_or_else(|| panic!("{file} not listed:\n{}", out.stdout))
            .rsplit(": ")
            .next()
            .unwrap()
            .to_string()
    };
    let expect = [
        ("aggregate/!example.com!1538204542!1538463818.xml", "stored"),
        ("aggregate/!large-example.com!1711897200!1711983600.xml", "stored"),
        ("aggregate/addisonfoods.com!example.com!1536105600!1536191999.xml", "stored"),
        ("aggregate/empty_reason.xml", "stored"),
        ("aggregate/estadocuenta1.infonacot.gob.mx!example.com!1536853302!1536939702!2940.xml.zip", "stored"),
        ("aggregate/fastmail.com!example.com!1516060800!1516147199!102675056.xml.gz", "stored"),
        ("aggregate/ikea.com!example.de!1538690400!1538776800.xml", "stored"),
        // The same report as the first, with a byte that is not UTF-8.
        ("aggregate/invalid_utf_8.xml", "duplicate"),
        ("aggregate/old_draft_from_wiki.xml", "stored"),
        ("aggregate/report_with_upper_cased_pass.xml", "stored"),
        ("aggregate/rfc9990-sample.xml", "stored"),
        ("aggregate/usssa.com!example.com!1538784000!1538870399.xml", "stored"),
        // invalid_xml.xml is veeam's report with a broken address: read (mismatched tags
        // closed), so the well-formed copy is its duplicate.
        ("aggregate/invalid_xml.xml", "stored"),
        ("aggregate/veeam.com!example.com!1530133200!1530219600.xml", "duplicate"),
        ("failure/dmarc_ruf_report_linkedin.eml", "stored"),
        ("failure/exim_plain_text_only_no_arf_part.eml", "stored"),
        ("failure/failure-report-domain.de.eml", "stored"),
        ("other/empty.xml", "empty"),
        ("other/nice-input.xml", "stored"),
        ("other/nice-input.xml.gz", "duplicate"),
        ("other/nice-input.xml.zip", "duplicate"),
        ("smtp_tls/google.com_smtp_tls_report.eml", "stored"),
        ("smtp_tls/rfc8460.json", "stored"),
        ("smtp_tls/smtp_tls.json", "stored"),
    ];
    for (file, want) in expect {
        assert_eq!(fate(file), want, "{file}\n{}", out.stdout);
    }
    // NetEase's report is about cardinal.com: not ours.
    assert!(
        out.stdout
            .contains("failure-report-netease.eml: failure 163.com cardinal.com")
            && out.stdout.contains("not one of ours: dropped"),
        "{}",
        out.stdout
    );
    // Stored rows match each aggregate file (plain, gzip and zip).
    let conn = db(&s);
    for (file, want) in expect {
        if !file.starts_with("aggregate/") || want != "stored" || file.contains("invalid_xml") {
            continue;
        }
        let xml = decompress(&dir.join(file));
        let mut org = text_of("org_name", &xml);
        if org.is_empty() {
            org = text_of("email", &xml)
                .rsplit('@')
                .next()
                .unwrap()
                .to_string();
        }
        let id = text_of("report_id", &xml);
        assert_eq!(stored(&conn, &org, &id), in_file(&xml), "{file}");
    }
    // Upper-case PASS is kept as pass; RFC 9990's disposition "pass" is kept.
    let pass = count(
        &conn,
        "SELECT COUNT(*) FROM intake_rows WHERE dkim_aligned = 'pass' AND disposition = 'pass'",
    );
    assert!(pass >= 1);
    let upper = count(
        &conn,
        "SELECT COUNT(*) FROM intake_rows WHERE dkim != lower(dkim) OR spf_aligned != lower(spf_aligned)",
    );
    assert_eq!(upper, 0);
    // TLS-RPT: the RFC example's sessions.
    let tls: Vec<(String, i64)> = all(
        &conn,
        "SELECT t.result_type, t.sessions FROM intake_tls t JOIN intake_reports r \
         ON t.report = r.id WHERE r.org = 'Company-X' ORDER BY t.result_type",
        |r| Ok((r.get(0)?, r.get(1)?)),
    );
    assert_eq!(
        tls,
        [
            ("certificate-expired".to_string(), 100),
            ("starttls-not-supported".to_string(), 200),
            ("total-failure".to_string(), 303),
            ("total-success".to_string(), 5326),
            ("validation-failure".to_string(), 3),
        ]
    );
    // Failure reports: key fields.
    let (ip, kind): (String, String) = conn
        .query_row(
            "SELECT source_ip, feedback_type FROM intake_failures WHERE domain = 'domain.de'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (ip.as_str(), kind.as_str()),
        ("10.10.10.10", "auth-failure")
    );
    // Refused inputs are kept aside with the reason; the summary adds up.
    let rejected = cli_blocking(&["reports", "rejected", "-c", cfg.to_str().unwrap()], None);
    assert!(
        rejected.stdout.contains("empty.xml") && rejected.stdout.contains("empty"),
        "{}",
        rejected.stdout
    );
    let summary = cli_blocking(
        &[
            "reports",
            "summary",
            "-c",
            cfg.to_str().unwrap(),
            "--domain",
            "company-y.example",
        ],
        None,
    );
    assert!(
        summary
            .stdout
            .contains("TLS-RPT sessions: 5326 successful, 303 failed"),
        "{}",
        summary.stdout
    );
    // Importing again stores nothing twice.
    let again = import(&cfg, &[&dir.join("aggregate/rfc9990-sample.xml")]);
    assert!(
        again.ok && again.stdout.contains("1 duplicate"),
        "{}",
        again.text()
    );
}

/// Run `mailseal reports import` on one file; its time and peak memory (VmHWM, polled).
fn import_measured(cfg: &Path, input: &Path) -> (CliOutput, Duration, u64) {
    let start = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mailseal"))
        .args(["reports", "import", "-c"])
        .arg(cfg)
        .arg(input)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let deadline = start + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        if let Ok(st) = std::fs::read_to_string(&status_file) {
            if let Some(kib) = st
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
            {
                peak_kib = peak_kib.max(kib);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    let elapsed = start.elapsed();
    (
        CliOutput {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        elapsed,
        peak_kib / 1024,
    )
}

/// `mib` MiB of zero bytes, gzip-compressed (by gzip(1): fast whatever the test profile).
fn gzip_zeros(path: &Path, mib: usize) {
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c {}M /dev/zero | gzip -1 > '{}'",
            mib,
            path.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
}

/// A zip with one entry of `mib` MiB of spaces (Debian's Python zipfile, deflated).
fn zip_spaces(path: &Path, mib: usize) {
    let script = format!(
        "import zipfile\nwith zipfile.ZipFile({:?}, 'w', zipfile.ZIP_DEFLATED, compresslevel=1) as z:\n    with z.open('report.xml', 'w', force_zip64=True) as f:\n        b = b' ' * (1 << 20)\n        for _ in range({mib}):\n            f.write(b)\n",
        path.display().to_string()
    );
    let st = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn hostile_reports_are_refused_fast_and_small() {
    let s = Scratch::new("intake-hostile");
    let cfg = config(&s, "max_message_size = \"1M\"\n");
    // A gzip bomb (512 MiB of zeros in under 1 MB) and a zip bomb (one 512 MiB entry).
    let gz = s.0.join("bomb.xml.gz");
    gzip_zeros(&gz, 512);
    let zipped = s.0.join("bomb.zip");
    zip_spaces(&zipped, 512);
    // Entity expansion (billion laughs), and an external entity.
    let laughs = s.write(
        "laughs.xml",
        &format!(
            "<?xml version=\"1.0\"?>\n<!DOCTYPE feedback [<!ENTITY a \"lol\">{}]>\n<feedback><report_metadata><org_name>&j;</org_name></report_metadata></feedback>\n",
            (b'b'..=b'j')
                .map(|c| {
                    let prev = (c - 1) as char;
                    format!("<!ENTITY {} \"{}\">", c as char, format!("&{prev};").repeat(10))
                })
                .collect::<String>()
        ),
    );
    let external = s.write(
        "xxe.xml",
        "<?xml version=\"1.0\"?><feedback><report_metadata><org_name>&xxe;</org_name></report_metadata></feedback>",
    );
    // A report about someone else's domain.
    let other = s.write(
        "other.xml",
        "<feedback><report_metadata><org_name>r.example</org_name><email>a@r.example</email><report_id>x1</report_id><date_range><begin>1700000000</begin><end>1700086399</end></date_range></report_metadata><policy_published><domain>victim.example</domain><p>none</p></policy_published><record><row><source_ip>192.0.2.1</source_ip><count>1</count><policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated></row><identifiers><header_from>victim.example</header_from></identifiers><auth_results><spf><domain>victim.example</domain><result>pass</result></spf></auth_results></record></feedback>",
    );
    // Reports about our domain dated in the future: on a dashboard they would count in
    // every range, for as long as they are kept.
    let future = s.write(
        "future.xml",
        &std::fs::read_to_string(&other)
            .unwrap()
            .replace("victim.example", "example.com")
            .replace(
                "<begin>1700000000</begin><end>1700086399</end>",
                "<begin>4102444800</begin><end>4102531199</end>",
            ),
    );
    let future_tls = s.write(
        "future.json",
        r#"{"organization-name":"r.example","date-range":{"start-datetime":"2100-01-01T00:00:00Z","end-datetime":"2100-01-01T23:59:59Z"},"contact-info":"tls@r.example","report-id":"f1","policies":[{"policy":{"policy-type":"sts","policy-domain":"example.com"},"summary":{"total-successful-session-count":5,"total-failure-session-count":0}}]}"#,
    );
    // A mail over max_message_size (1M here).
    let big = s.write(
        "big.eml",
        &format!(
            "From: a@r.example\r\nTo: dmarc@example.net\r\nSubject: Report\r\n\r\n{}",
            "x".repeat(2 << 20)
        ),
    );
    let mut figures = Vec::new();
    for (input, reason) in [
        (&gz, "decompresses to more than"),
        (&zipped, "decompresses to more than"),
        (&laughs, "DOCTYPE"),
        (&external, "&xxe;"),
        (&big, "over max_message_size"),
        (&future, "begins in the future"),
        (&future_tls, "begins in the future"),
    ] {
        let (out, took, peak_mib) = import_measured(&cfg, input);
        assert!(!out.ok, "refused: {}", out.text());
        assert!(
            out.stdout.contains(reason),
            "{}: {}",
            input.display(),
            out.text()
        );
        assert!(
            took < Duration::from_secs(10),
            "{}: {took:?}",
            input.display()
        );
        assert!(peak_mib < 200, "{}: {peak_mib} MiB", input.display());
        figures.push(format!(
            "{}: refused in {} ms, peak {peak_mib} MiB",
            input.file_name().unwrap().to_string_lossy(),
            took.as_millis()
        ));
    }
    let (out, _, _) = import_measured(&cfg, &other);
    assert!(
        out.ok
            && out
                .stdout
                .contains("about victim.example, not one of ours: dropped"),
        "{}",
        out.text()
    );
    println!("{}", figures.join("\n"));
    // All kept aside, with their reasons.
    let rejected = cli_blocking(&["reports", "rejected", "-c", cfg.to_str().unwrap()], None);
    for name in [
        "bomb.xml.gz",
        "bomb.zip",
        "laughs.xml",
        "xxe.xml",
        "big.eml",
        "future.xml",
        "future.json",
    ] {
        assert!(
            rejected.stdout.contains(name),
            "{name}: {}",
            rejected.stdout
        );
    }
    // Nothing about them was stored as a report.
    let n = count(&db(&s), "SELECT COUNT(*) FROM intake_reports");
    assert_eq!(n, 0);
}

/// A mail carrying `attachment` (base64) as `content_type`.
fn report_mail(to: &str, content_type: &str, attachment: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(attachment);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "From: noreply-dmarc-support@google.com\r\nTo: {to}\r\nSubject: Report domain: example.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nThis is an aggregate report.\r\n--b1\r\nContent-Type: {content_type}; name=\"report\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"report\"\r\n\r\n{}\r\n--b1--\r\n",
        lines.join("\r\n")
    )
}

/// The store at `db` holds the RFC 9990 sample report (1 record, 123 messages) and Google's
/// TLS report.
fn sample_and_google_tls_stored(db: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    assert_eq!(
        stored(&conn, "Sample Reporter", "3v98abbp8ya9n3va8yr8oa3ya"),
        (1, 123)
    );
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM intake_reports WHERE kind = 'tlsrpt' AND org = 'Google Inc.'"
        ),
        1
    );
}

/// A daemon configuration that reads mail to dmarc@example.net: store `r.sqlite` and spool
/// `spool` beside it, DNS from `dns`; `intake` adds to the [intake] section.
fn intake_config(dns: std::net::SocketAddr, intake: &str) -> String {
    format!(
        "authserv_id = \"mx.example.net\"\n[reports]\nstore = \"r.sqlite\"\norg_name = \"example.net\"\nemail = \"dmarc-reports@example.net\"\n[dns]\nnameservers = [\"{dns}\"]\ntimeout = \"1s\"\nattempts = 1\n[intake]\naddresses = [\"dmarc@example.net\"]\nspool = \"spool\"\ndomains = {DOMAINS}\n{intake}"
    )
}

/// A report sender's envelope to these recipients.
fn report_envelope(rcpts: &[&str]) -> Envelope {
    Envelope {
        client_ip: "203.0.113.5".into(),
        mail_from: "<noreply-dmarc-support@google.com>".into(),
        rcpts: rcpts.iter().map(|r| format!("<{r}>")).collect(),
        ..Default::default()
    }
}

/// The RFC 9990 sample report, gzipped.
fn rfc9990_gz(dir: &Path) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&std::fs::read(dir.join("aggregate/rfc9990-sample.xml")).unwrap())
        .unwrap();
    e.finish().unwrap()
}

async fn flush_intake(d: &Daemon) {
    let q = d.contexts.borrow().intake.clone().expect("intake on");
    let ok = tokio::task::spawn_blocking(move || q.flush(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(ok, "intake reader flushed");
}

/// Reports mailed to the report address are read off the milter path: stored (or refused)
/// while the mail itself goes on; with keep_messages = false the report address is removed
/// from the recipients, and a message for no one else is discarded.
#[tokio::test]
async fn reports_by_mail_through_the_milter() {
    let Some(dir) = samples() else { return };
    let s = Scratch::new("intake-milter");
    let dns = crate::common::dns::DnsServer::start(crate::common::dns::Zones::default()).await;
    let base = intake_config(dns.addr, "max_message_size = \"2M\"\n");
    let d = Daemon::start_in(s, &base).await;
    let env = report_envelope;
    // An RFC 9990 report as .xml.gz, Google's TLS report mail as it came, a broken report
    // and a mail over max_message_size: the mail goes on in every case.
    let gz = rfc9990_gz(&dir);
    let tls = String::from_utf8_lossy(
        &std::fs::read(dir.join("smtp_tls/google.com_smtp_tls_report.eml")).unwrap(),
    )
    .into_owned();
    let broken = report_mail(
        "dmarc@example.net",
        "application/gzip",
        b"\x1f\x8b\x08 not gzip",
    );
    let big = report_mail("dmarc@example.net", "application/gzip", &vec![7u8; 3 << 20]);
    for m in [
        report_mail("dmarc@example.net", "application/gzip", &gz),
        tls,
        broken,
        big,
    ] {
        let out = deliver(d.addr, &env(&["dmarc@example.net"]), &m).await;
        assert_eq!(out.status, Status::Continue, "the mail goes on");
    }
    // Mail to other addresses is not read.
    let out = deliver(
        d.addr,
        &env(&["postmaster@example.net"]),
        &report_mail("postmaster@example.net", "application/gzip", &gz),
    )
    .await;
    assert_eq!(out.status, Status::Continue);
    flush_intake(&d).await;
    let conn = rusqlite::Connection::open(d.scratch.0.join("r.sqlite")).unwrap();
    let kept: Vec<(String, String)> = all(
        &conn,
        "SELECT kind, org FROM intake_reports ORDER BY kind",
        |r| Ok((r.get(0)?, r.get(1)?)),
    );
    assert_eq!(
        kept,
        [
            ("aggregate".to_string(), "Sample Reporter".to_string()),
            ("tlsrpt".to_string(), "Google Inc.".to_string())
        ]
    );
    assert_eq!(
        stored(&conn, "Sample Reporter", "3v98abbp8ya9n3va8yr8oa3ya"),
        (1, 123)
    );
    let reasons: Vec<String> = all(
        &conn,
        "SELECT reason FROM intake_rejected ORDER BY id",
        |r| r.get(0),
    );
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].contains("damaged compressed data"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("over max_message_size"), "{reasons:?}");
    let metrics = d.contexts.borrow().services.metrics.render();
    assert!(
        metrics.contains("mailseal_intake_reports_total{outcome=\"stored\"} 2"),
        "{metrics}"
    );
    drop(conn);
    drop(d);

    // keep_messages = false.
    let s = Scratch::new("intake-milter-discard");
    let d = Daemon::start_in(s, &format!("{base}keep_messages = false\n")).await;
    let mail = report_mail("dmarc@example.net", "application/gzip", &gz);
    let out = deliver(d.addr, &env(&["dmarc@example.net"]), &mail).await;
    assert_eq!(
        out.status,
        Status::Discard,
        "only the report address: discarded"
    );
    let out = deliver(
        d.addr,
        &env(&["dmarc@example.net", "archive@example.net"]),
        &mail,
    )
    .await;
    assert_eq!(out.status, Status::Continue);
    assert!(
        out.actions.actions.iter().any(|a| matches!(a,
            indymilter_test::EomAction::DeleteRecipient { rcpt } if rcpt.to_str().unwrap() == "<dmarc@example.net>")),
        "{:?}",
        out.actions
    );
    flush_intake(&d).await;
    let conn = rusqlite::Connection::open(d.scratch.0.join("r.sqlite")).unwrap();
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM intake_reports"),
        1,
        "the same report twice is kept once"
    );
}

/// With `keep_messages = false` a report address is removed only once the report is safe
/// in the spool: a mail too large to read is delivered as usual; a report that meets the
/// store down waits in the spool, across a kill -9 and a restart, and is stored once the
/// store is back. Nothing mailed to the report address is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_mail_is_never_lost() {
    use crate::common::process::Running;
    let Some(dir) = samples() else { return };
    let s = Scratch::new("intake-never-lost");
    let dns = crate::common::dns::DnsServer::start(crate::common::dns::Zones::default()).await;
    let port = crate::common::postfix::free_port();
    let cfg = s.write(
        "m.toml",
        &format!(
            "socket = \"inet:{port}@127.0.0.1\"\n{}",
            intake_config(
                dns.addr,
                "keep_messages = false\nmax_message_size = \"1M\"\n"
            )
            .replace("\"r.sqlite\"", "\"db/r.sqlite\"")
        ),
    );
    let d = Running::started(&cfg, &[]);
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let env = report_envelope;
    let removed = |out: &Delivered| {
        out.actions
            .actions
            .iter()
            .any(|a| matches!(a, indymilter_test::EomAction::DeleteRecipient { .. }))
    };
    // Too large to read: delivered to the report address as usual.
    let big = report_mail("dmarc@example.net", "application/gzip", &vec![7u8; 2 << 20]);
    let out = deliver(addr, &env(&["dmarc@example.net"]), &big).await;
    assert_eq!(
        out.status,
        Status::Continue,
        "an unread report is not discarded"
    );
    let out = deliver(
        addr,
        &env(&["dmarc@example.net", "archive@example.net"]),
        &big,
    )
    .await;
    assert!(!removed(&out), "{:?}", out.actions);

    // The store is down (its directory is missing): the reports wait in the spool, so the
    // report address goes.
    let gz = rfc9990_gz(&dir);
    let out = deliver(
        addr,
        &env(&["dmarc@example.net", "archive@example.net"]),
        &report_mail("dmarc@example.net", "application/gzip", &gz),
    )
    .await;
    assert!(removed(&out), "{:?}", out.actions);
    let tls = std::fs::read_to_string(dir.join("smtp_tls/google.com_smtp_tls_report.eml")).unwrap();
    let out = deliver(addr, &env(&["dmarc@example.net"]), &tls).await;
    assert_eq!(out.status, Status::Discard);
    let spool = s.0.join("spool");
    let spooled = || {
        std::fs::read_dir(&spool)
            .map(|r| {
                r.filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "eml")
                    .count()
            })
            .unwrap_or(0)
    };
    // Both wait in the spool once the reader has tried the store (a moment at most).
    let deadline = Instant::now() + Duration::from_secs(10);
    while spooled() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(spooled(), 2);
    // Killed outright (as if while reading one of them), then started again with the
    // store back: the spool is read into it.
    d.signal(libc::SIGKILL);
    drop(d);
    let first = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    std::fs::rename(&first, first.with_extension("reading")).unwrap();
    assert_eq!(spooled(), 1);
    std::fs::create_dir(s.0.join("db")).unwrap();
    let d = Running::started(&cfg, &[]);
    let db = s.0.join("db/r.sqlite");
    let deadline = Instant::now() + Duration::from_secs(30);
    while spooled() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(spooled(), 0, "the spool is read at start");
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().count(),
        0,
        "nothing left behind"
    );
    sample_and_google_tls_stored(&db);
    drop(d);
}

/// A message the store fails on every time (here a trigger refuses its reporter) is put
/// aside after three tries, so that it does not hold back the rest of the spool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_store_always_fails_on_is_put_aside() {
    let Some(dir) = samples() else { return };
    let s = Scratch::new("intake-poison");
    {
        let _ = mailseal::report::store::Store::open(&mailseal::config::StoreSpec::Sqlite(
            s.0.join("r.sqlite"),
        ))
        .unwrap();
        rusqlite::Connection::open(s.0.join("r.sqlite"))
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER poison BEFORE INSERT ON intake_reports WHEN NEW.org = 'poison' \
                 BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
            )
            .unwrap();
    }
    let dns = crate::common::dns::DnsServer::start(crate::common::dns::Zones::default()).await;
    let d = Daemon::start_in(s, &intake_config(dns.addr, "keep_messages = false\n")).await;
    let env = report_envelope(&["dmarc@example.net"]);
    let sample = std::fs::read_to_string(dir.join("aggregate/rfc9990-sample.xml")).unwrap();
    let poison = sample.replace("Sample Reporter", "poison");
    for xml in [&poison, &sample] {
        let mail = report_mail("dmarc@example.net", "text/xml", xml.as_bytes());
        let out = deliver(d.addr, &env, &mail).await;
        assert_eq!(out.status, Status::Discard, "in the spool: safe to discard");
    }
    let spool = d.scratch.0.join("spool");
    let names = || {
        let mut n: Vec<String> = std::fs::read_dir(&spool)
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .path()
                    .extension()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        n.sort();
        n
    };
    for _ in 0..3 {
        flush_intake(&d).await;
    }
    assert_eq!(names(), ["failed"], "put aside; the good one read");
    let conn = rusqlite::Connection::open(d.scratch.0.join("r.sqlite")).unwrap();
    assert_eq!(
        stored(&conn, "Sample Reporter", "3v98abbp8ya9n3va8yr8oa3ya"),
        (1, 123)
    );
    // Once the cause is gone, `reports import` takes the message put aside.
    conn.execute_batch("DROP TRIGGER poison").unwrap();
    let failed = std::fs::read_dir(&spool)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let cfg = d.scratch.0.join("mailseal.toml");
    let out = tokio::task::spawn_blocking(move || import(&cfg, &[&failed]))
        .await
        .unwrap();
    assert!(out.ok && out.stdout.contains("1 stored"), "{}", out.text());
}

/// The milter asks Postfix for the recipients only when it has report addresses to look
/// for (RCPT with no reply otherwise costs a packet per recipient for nothing).
#[tokio::test]
async fn recipients_are_asked_for_only_with_report_addresses() {
    use indymilter_test::{ProtoOpts, TestConnection};
    let dns = crate::common::dns::DnsServer::start(crate::common::dns::Zones::default()).await;
    let base = format!(
        "authserv_id = \"mx.example.net\"\n[reports]\nstore = \"r.sqlite\"\norg_name = \"example.net\"\nemail = \"dmarc-reports@example.net\"\n[dns]\nnameservers = [\"{}\"]\n",
        dns.addr
    );
    for (intake, asks) in [
        ("", false),
        (
            "[intake]\naddresses = [\"dmarc@example.net\"]\nspool = \"spool\"\ndomains = [\"example.com\"]\n",
            true,
        ),
    ] {
        let d = Daemon::start_in(Scratch::new("intake-rcpt"), &format!("{base}{intake}")).await;
        let conn = TestConnection::configure()
            .available_opts(ProtoOpts::all())
            .open_tcp(d.addr)
            .await
            .unwrap();
        assert_eq!(
            !conn.negotiated_opts().contains(ProtoOpts::NO_RCPT),
            asks,
            "{intake:?}: {:?}",
            conn.negotiated_opts()
        );
        conn.close().await.unwrap();
    }
}

/// Everything intake stored, as sorted lines (without import times, ids and origins, which
/// differ between a file and a mail), so that two ways in can be compared.
fn intake_dump(conn: &rusqlite::Connection) -> Vec<String> {
    let queries = [
        "SELECT 'report', kind, org, report_id, domain, begin_ts, end_ts, email, policy \
         FROM intake_reports",
        "SELECT 'row', r.org, r.report_id, w.source_ip, w.count, w.disposition, w.dkim_aligned, \
         w.spf_aligned, w.header_from, w.envelope_from, w.reasons, w.dkim, w.spf \
         FROM intake_rows w JOIN intake_reports r ON w.report = r.id",
        "SELECT 'tls', r.org, r.report_id, t.policy_type, t.policy_domain, t.mx_host, \
         t.result_type, t.receiving_mx, t.sending_ip, t.sessions \
         FROM intake_tls t JOIN intake_reports r ON t.report = r.id",
        "SELECT 'failure', reporter, domain, source_ip, feedback_type, auth_failure, \
         delivery_result, arrival, mail_from, dkim_domain, dkim_selector, identity_alignment, \
         auth_results FROM intake_failures",
        "SELECT 'rejected', reason FROM intake_rejected",
        "SELECT 'day', * FROM intake_days",
        "SELECT 'source', * FROM intake_sources",
        "SELECT 'selector', * FROM intake_selectors",
    ];
    let mut lines = Vec::new();
    for q in queries {
        let mut stmt = conn.prepare(q).unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..n)
                    .map(|i| {
                        r.get_ref(i).map(|v| match v {
                            rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                            rusqlite::types::ValueRef::Text(t) => {
                                String::from_utf8_lossy(t).into_owned()
                            }
                            other => format!("{other:?}"),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap();
        lines.extend(rows.map(|r| r.unwrap().join("|")));
    }
    lines.sort();
    lines
}

/// Every real-world sample, mailed to the report address (a bare report file as the
/// attachment of a mail, an .eml as it came), ends in the store exactly as `import` leaves
/// it: the same reports, rows, sessions, failure reports and refusals; every mail goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_through_the_milter_as_through_import() {
    let Some(dir) = samples() else { return };
    let mut files = Vec::new();
    for sub in ["aggregate", "failure", "other", "smtp_tls"] {
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir.join(sub))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        files.extend(names);
    }
    assert!(files.len() >= 25, "{files:?}");

    let by_file = Scratch::new("intake-equal-import");
    let cfg = config(&by_file, "");
    let out = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        let files = files.clone();
        move || {
            import(
                &cfg,
                &files.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
            )
        }
    })
    .await
    .unwrap();
    assert!(out.stdout.contains("stored"), "{}", out.text());
    let want = intake_dump(&db(&by_file));

    let dns = crate::common::dns::DnsServer::start(crate::common::dns::Zones::default()).await;
    let d = Daemon::start_in(
        Scratch::new("intake-equal-milter"),
        &intake_config(dns.addr, ""),
    )
    .await;
    let env = report_envelope(&["dmarc@example.net"]);
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        let mail = if file.extension().is_some_and(|e| e == "eml") {
            // An mbox "From " line is the mailbox's, not the message's: no MTA passes it on.
            let text = String::from_utf8(bytes).unwrap();
            match text.strip_prefix("From ") {
                Some(rest) => rest.split_once('\n').unwrap().1.to_string(),
                None => text,
            }
        } else {
            report_mail("dmarc@example.net", "application/octet-stream", &bytes)
        };
        let out = deliver(d.addr, &env, &mail).await;
        assert_eq!(out.status, Status::Continue, "{}", file.display());
        // One at a time, so that of two copies of a report the same one is kept first.
        flush_intake(&d).await;
    }
    let got = intake_dump(&rusqlite::Connection::open(d.scratch.0.join("r.sqlite")).unwrap());
    assert!(
        got.iter().filter(|l| l.starts_with("report|")).count() >= 18,
        "{got:#?}"
    );
    let missing: Vec<&String> = want.iter().filter(|l| !got.contains(l)).collect();
    let extra: Vec<&String> = got.iter().filter(|l| !want.contains(l)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "import stored but the milter did not: {missing:#?}\nthe milter stored but import did not: {extra:#?}"
    );
}

/// What we sign is counted per day, domain, selector and algorithm in the report store (the
/// other half of what the dashboard joins).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_are_counted_per_day() {
    let s = Scratch::new("intake-signed");
    let signing = example_com_rsa_ed(
        &s.0,
        &[("*@example.com", "k-rsa"), ("*@example.com", "k-ed")],
    );
    let d = Daemon::start_in(
        s,
        &format!(
            "mode = \"s\"\n[reports]\nstore = \"r.sqlite\"\norg_name = \"example.net\"\nemail = \"dmarc-reports@example.net\"\n[signing]\nmultiple_signatures = true\n{signing}"
        ),
    )
    .await;
    let env = Envelope {
        client_ip: "127.0.0.1".into(),
        ..Default::default()
    };
    for _ in 0..3 {
        let out = deliver(
            d.addr,
            &env,
            "From: alice@example.com\r\nSubject: s\r\n\r\nbody\r\n",
        )
        .await;
        assert_eq!(out.inserted("DKIM-Signature").len(), 2);
    }
    let recorder = d.contexts.borrow().reports.clone().unwrap();
    assert!(
        tokio::task::spawn_blocking(move || recorder.flush(Duration::from_secs(10)))
            .await
            .unwrap()
    );
    let conn = rusqlite::Connection::open(d.scratch.0.join("r.sqlite")).unwrap();
    let rows: Vec<(i64, String, String, String, i64)> = all(
        &conn,
        "SELECT day, domain, selector, algorithm, count FROM signed_counts ORDER BY selector",
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
    );
    let today = mailseal::report::day_start(mailseal::report::now());
    assert_eq!(
        rows,
        [
            (
                today,
                "example.com".into(),
                "ed".into(),
                "ed25519".into(),
                3
            ),
            (today, "example.com".into(), "rsa".into(), "rsa".into(), 3),
        ]
    );
}

/// The same intake on the PostgreSQL store several hosts share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_into_postgres() {
    let Some(dir) = samples() else { return };
    let _exclusive = crate::common::exclusive().await;
    let pg = tokio::task::spawn_blocking(crate::common::pg::Postgres::start)
        .await
        .unwrap();
    let s = Scratch::new("intake-pg");
    let cfg = s.write(
        "m.toml",
        &format!(
            "[reports]\nstore = \"{}\"\norg_name = \"example.net\"\nemail = \"dmarc-reports@example.net\"\n[intake]\ndomains = {DOMAINS}\n",
            pg.url()
        ),
    );
    let files = [
        "aggregate/rfc9990-sample.xml",
        "aggregate/fastmail.com!example.com!1516060800!1516147199!102675056.xml.gz",
        "other/nice-input.xml.zip",
        "smtp_tls/rfc8460.json",
        "failure/failure-report-domain.de.eml",
        "aggregate/rfc9990-sample.xml",
    ];
    let (out, summary) = tokio::task::spawn_blocking(move || {
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        let out = import(&cfg, &refs);
        let summary = cli_blocking(
            &[
                "reports",
                "summary",
                "-c",
                cfg.to_str().unwrap(),
                "--domain",
                "example.com",
            ],
            None,
        );
        (out, summary)
    })
    .await
    .unwrap();
    assert!(out.ok, "{}", out.text());
    assert!(
        out.stdout.contains("1 duplicate, 5 stored"),
        "{}",
        out.stdout
    );
    assert!(
        summary
            .stdout
            .contains("aggregate reports 2, messages 3170, DMARC pass 3170 (100.0%)"),
        "{}",
        summary.text()
    );
    // The rollups add up to the rows kept, before and after the retention deletes reports
    // (counted from import time, whatever day the report is about).
    let pg = std::sync::Arc::new(pg);
    let sums = {
        let pg = pg.clone();
        move || {
            let one = |t: &str| -> i64 {
                pg.psql(&format!("SELECT COALESCE(SUM(count), 0) FROM {t}"))
                    .parse()
                    .unwrap()
            };
            (
                one("intake_rows"),
                one("intake_days"),
                one("intake_sources"),
            )
        }
    };
    let before = tokio::task::spawn_blocking(sums.clone()).await.unwrap();
    assert_eq!((before.1, before.2), (before.0, before.0), "{before:?}");
    assert!(before.0 > 3170, "{before:?}");
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let short = s.write(
        "m2.toml",
        &std::fs::read_to_string(s.0.join("m.toml"))
            .unwrap()
            .replace("[intake]\n", "[intake]\nretention = \"2s\"\n"),
    );
    let out = tokio::task::spawn_blocking(move || {
        import(
            &short,
            &[&samples()
                .unwrap()
                .join("aggregate/usssa.com!example.com!1538784000!1538870399.xml")],
        )
    })
    .await
    .unwrap();
    assert!(
        out.stdout
            .contains("4 report(s) past the retention deleted"),
        "{}",
        out.text()
    );
    let after = tokio::task::spawn_blocking(sums).await.unwrap();
    assert_eq!(after, (2, 2, 2), "only the report imported last counts");

    // A NUL byte, which PostgreSQL text cannot hold, in a reporter's name and a comment:
    // stored (as U+FFFD), not an error that would hold the report back forever.
    let nul = s.write(
        "nul.xml",
        "<feedback><report_metadata><org_name>nul\u{0}org</org_name><email>a@r.example</email><report_id>n1</report_id><date_range><begin>1700000000</begin><end>1700086399</end></date_range></report_metadata><policy_published><domain>example.com</domain><p>none</p></policy_published><record><row><source_ip>192.0.2.1</source_ip><count>1</count><policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf><reason><type>other</type><comment>a\u{0}b</comment></reason></policy_evaluated></row><identifiers><header_from>example.com</header_from></identifiers><auth_results><spf><domain>example.com</domain><result>pass</result></spf></auth_results></record></feedback>",
    );
    let cfg = s.0.join("m.toml");
    let out = tokio::task::spawn_blocking(move || import(&cfg, &[&nul]))
        .await
        .unwrap();
    assert!(out.ok && out.stdout.contains("1 stored"), "{}", out.text());
    let org = pg.psql("SELECT org FROM intake_reports WHERE report_id = 'n1'");
    assert_eq!(org, "nul\u{fffd}org");
}

/// The other ways in: an mbox, a Maildir (cur and new; tmp left alone) and standard input;
/// and the retention, counted from import time.
#[test]
fn mbox_maildir_stdin_and_retention() {
    let Some(dir) = samples() else { return };
    let s = Scratch::new("intake-mbox");
    let cfg = config(&s, "retention = \"2s\"\n");
    let xml = |f: &str| std::fs::read(dir.join("aggregate").join(f)).unwrap();
    let m1 = report_mail("dmarc@example.net", "text/xml", &xml("rfc9990-sample.xml"));
    let m2 = report_mail(
        "dmarc@example.net",
        "application/xml",
        &xml("old_draft_from_wiki.xml"),
    );
    let mbox = s.write(
        "reports.mbox",
        &format!("From MAILER-DAEMON Mon Nov 30 00:00:00 2026\n{m1}\nFrom MAILER-DAEMON Mon Nov 30 00:00:01 2026\n{m2}\n"),
    );
    let maildir = s.0.join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    std::fs::write(
        maildir.join("new/1.eml"),
        report_mail(
            "dmarc@example.net",
            "application/zip",
            &std::fs::read(dir.join("other/nice-input.xml.zip")).unwrap(),
        ),
    )
    .unwrap();
    std::fs::copy(
        dir.join("smtp_tls/google.com_smtp_tls_report.eml"),
        maildir.join("cur/2.eml:2,S"),
    )
    .unwrap();
    // A message still being delivered is not read.
    std::fs::write(maildir.join("tmp/3.eml"), "partial").unwrap();
    let out = import(&cfg, &[&mbox, &maildir]);
    assert!(out.ok, "{}", out.text());
    assert!(out.stdout.contains("4 stored"), "{}", out.stdout);
    assert!(!out.stdout.contains("3.eml"), "{}", out.stdout);
    // Standard input.
    let json = std::fs::read(dir.join("smtp_tls/rfc8460.json")).unwrap();
    let out = cli_blocking(
        &["reports", "import", "-c", cfg.to_str().unwrap(), "-"],
        Some(&json),
    );
    assert!(
        out.ok && out.stdout.contains("-: tlsrpt Company-X"),
        "{}",
        out.text()
    );
    // Past the retention, the next import deletes them.
    // Whole seconds count: wait until the last import is more than 2 s in the past.
    std::thread::sleep(Duration::from_millis(3200));
    let out = import(&cfg, &[&dir.join("smtp_tls/smtp_tls.json")]);
    assert!(
        out.stdout
            .contains("5 report(s) past the retention deleted"),
        "{}",
        out.stdout
    );
    let n = count(&db(&s), "SELECT COUNT(*) FROM intake_reports");
    assert_eq!(n, 1);
}

/// End to end through a real Postfix (smtpd_milters): a report mailed to the report address
/// and to someone else is read and the report address removed, so Postfix delivers it to the
/// other recipient only; a report mailed to the report address alone is read and discarded
/// by Postfix; a broken report is kept aside while its mail goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_through_postfix() {
    use crate::common::postfix::{self, Postfix};
    use crate::common::sink::Sink;
    let Some(dir) = samples() else { return };
    let _exclusive = crate::common::exclusive().await;
    if !Postfix::or_skip() {
        return;
    }
    let dns = crate::common::dns::DnsServer::start(crate::common::dns::Zones::default()).await;
    let sink = Sink::start().await;
    let milter_port = postfix::free_port();
    let d = Daemon::start_on(
        Scratch::new("intake-postfix"),
        &format!(
            "authserv_id = \"mx.test\"\n[signing]\ninternal_hosts = []\n[reports]\nstore = \"r.sqlite\"\norg_name = \"example.org\"\nemail = \"dmarc-reports@example.org\"\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nattempts = 1\n[intake]\naddresses = [\"dmarc@example.org\"]\nspool = \"spool\"\ndomains = {DOMAINS}\nkeep_messages = false\n",
            dns.addr
        ),
        milter_port,
    )
    .await;
    let pf_dir = Scratch::new("intake-postfix-mta");
    let pf = Postfix::start(&pf_dir.0, milter_port, sink.port);
    let xclient = [
        "--xclient-addr",
        "203.0.113.5",
        "--xclient-helo",
        "mail-reports.google.com",
    ];
    let send = |to: &str, msg: &str| {
        let mut args = xclient.to_vec();
        args.extend(["--to", to]);
        let (ok, out) = pf.swaks("noreply-dmarc-support@google.com", &args, msg);
        assert!(ok, "{out}\n{}", pf.log());
    };
    let gz = rfc9990_gz(&dir);
    send(
        "dmarc@example.org,archive@example.org",
        &report_mail("dmarc@example.org", "application/gzip", &gz),
    );
    let tls = std::fs::read_to_string(dir.join("smtp_tls/google.com_smtp_tls_report.eml")).unwrap();
    send("dmarc@example.org", &tls);
    send(
        "dmarc@example.org,archive@example.org",
        &report_mail("dmarc@example.org", "application/zip", b"PK\x03\x04 broken"),
    );
    assert!(sink.wait_for(2, 60).await, "not delivered\n{}", pf.log());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let envelopes = sink.envelopes.lock().unwrap().clone();
    assert_eq!(
        envelopes.len(),
        2,
        "the report alone is discarded: {envelopes:?}"
    );
    for (_, rcpts, ..) in &envelopes {
        assert_eq!(rcpts, &["archive@example.org".to_string()], "{envelopes:?}");
    }
    assert!(pf.log().contains("milter-discard"), "{}", pf.log());
    flush_intake(&d).await;
    sample_and_google_tls_stored(&d.scratch.0.join("r.sqlite"));
    let conn = rusqlite::Connection::open(d.scratch.0.join("r.sqlite")).unwrap();
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM intake_rejected"), 1);
    drop(pf);
    d.stop().await;
}
