//! Test fixtures: keys made with openssl, the daemon on 127.0.0.1:0, an MTA-side milter
//! client, and the independent DKIM verifier (python3-dkim).
#![allow(dead_code)]

pub mod dns;
pub mod pg;
pub mod postfix;
pub mod process;
pub mod sink;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine;
use indymilter::{MacroStage, ProtoOpts};
use indymilter_test::{EomAction, EomActions, Status, TestConnection};
use mailseal::config::Config;
use mailseal::pipeline::context::Context;
use tokio::sync::{oneshot, watch};

pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn openssl(args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl");
    if let Some(i) = input {
        child.stdin.take().unwrap().write_all(i).unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {args:?} failed");
    out.stdout
}

/// A TLS server side for a certificate chain and its key (PEM).
pub fn tls_acceptor(cert: &[u8], key: &[u8]) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(cert)
        .map(|c| c.unwrap())
        .collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A self-signed certificate for `name` and 127.0.0.1 with its key: (cert.pem, key.pem) in
/// `dir`.
pub fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", &format!("/CN={name}")])
        .args([
            "-addext",
            &format!("subjectAltName=DNS:{name},IP:127.0.0.1"),
        ])
        // A server certificate (trusted as itself through smtp_ca_file), not a CA.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl req failed");
    (cert, key)
}

/// A private key file and its DNS record.
#[derive(Clone, Debug)]
pub struct TestKey {
    pub path: PathBuf,
    pub pem: Vec<u8>,
    /// `v=DKIM1; k=...; p=...`
    pub record: String,
}

fn write_key(dir: &Path, name: &str, pem: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn rsa_key(dir: &Path, name: &str, bits: u32, traditional: bool) -> TestKey {
    let mut pem = openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            &format!("rsa_keygen_bits:{bits}"),
        ],
        None,
    );
    if traditional {
        pem = openssl(&["rsa", "-traditional"], Some(&pem));
    }
    let spki = openssl(&["pkey", "-pubout", "-outform", "DER"], Some(&pem));
    TestKey {
        path: write_key(dir, name, &pem),
        record: format!("v=DKIM1; k=rsa; p={}", b64(&spki)),
        pem,
    }
}

fn ed25519_key(dir: &Path, name: &str) -> TestKey {
    let pem = openssl(&["genpkey", "-algorithm", "ed25519"], None);
    let spki = openssl(&["pkey", "-pubout", "-outform", "DER"], Some(&pem));
    TestKey {
        path: write_key(dir, name, &pem),
        record: format!("v=DKIM1; k=ed25519; p={}", b64(&spki[spki.len() - 32..])),
        pem,
    }
}

pub struct Keys {
    pub dir: PathBuf,
    pub rsa: TestKey,
    pub rsa_pkcs1: TestKey,
    pub ed: TestKey,
    pub rsa512: TestKey,
    /// RFC 8301's floor: signed with, and warned about.
    pub rsa1024: TestKey,
}

/// Keys made once per test binary.
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mailseal-test-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Keys {
            rsa: rsa_key(&dir, "rsa.pem", 2048, false),
            rsa_pkcs1: rsa_key(&dir, "rsa1.pem", 2048, true),
            ed: ed25519_key(&dir, "ed.pem"),
            rsa512: rsa_key(&dir, "rsa512.pem", 512, true),
            rsa1024: rsa_key(&dir, "rsa1024.pem", 1024, false),
            dir,
        }
    })
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("mailseal-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The daemon, running `mailseal::daemon::server::run` on 127.0.0.1:0 inside the test's runtime.
pub struct Daemon {
    pub addr: SocketAddr,
    pub contexts: watch::Sender<Arc<Context>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    pub scratch: Scratch,
}

impl Daemon {
    /// Start with this configuration text (written to a scratch dir, so relative table paths
    /// resolve there).
    pub async fn start(config: &str) -> Daemon {
        let scratch = Scratch::new("daemon");
        Self::start_in(scratch, config).await
    }

    pub async fn start_in(scratch: Scratch, config: &str) -> Daemon {
        Self::start_on(scratch, config, 0).await
    }

    /// Start listening on 127.0.0.1:`port` (0: any free port).
    pub async fn start_on(scratch: Scratch, config: &str, port: u16) -> Daemon {
        let path = scratch.write("mailseal.toml", config);
        let cfg = Config::load(&path).unwrap_or_else(|e| panic!("config: {e}"));
        let snap = Arc::new(Context::new(cfg, Arc::default()).unwrap().recording(None));
        let (tx, rx) = watch::channel(snap);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(mailseal::daemon::server::run(
            mailseal::daemon::socket::NodelayListener(listener),
            rx,
            async move {
                let _ = stop_rx.await;
            },
        ));
        Daemon {
            addr,
            contexts: tx,
            stop: Some(stop_tx),
            task: Some(task),
            scratch,
        }
    }

    /// Stop serving; returns the scratch directory for a restart.
    pub async fn stop_keep(mut self) -> Scratch {
        self.shutdown().await;
        std::mem::replace(&mut self.scratch, Scratch(PathBuf::new()))
    }

    async fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("daemon stops")
                .unwrap()
                .unwrap();
        }
    }

    /// Stop serving and wait (bounded) for the server task to end cleanly.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }
}

/// Write key.table / signing.table into `dir` and return the `[signing]` TOML lines.
pub fn signing_section(
    dir: &Path,
    key_rows: &[(&str, &str, &str, &Path)],
    sign_rows: &[(&str, &str)],
) -> String {
    let mut kt = String::from("# test KeyTable\n");
    for (name, domain, sel, path) in key_rows {
        kt.push_str(&format!("{name}\t{domain}:{sel}:{}\n", path.display()));
    }
    let mut st = String::from("# test SigningTable\n");
    for (pat, name) in sign_rows {
        st.push_str(&format!("{pat}\t{name}\n"));
    }
    std::fs::write(dir.join("key.table"), kt).unwrap();
    std::fs::write(dir.join("signing.table"), st).unwrap();
    "key_table = \"key.table\"\nsigning_table = \"signing.table\"\n".to_string()
}

/// [`signing_section`] for example.com with the 2048-bit RSA test key as `k` (selector
/// `rsa`), used for the senders `pattern` matches.
pub fn example_com_rsa(dir: &Path, pattern: &str) -> String {
    let k = keys();
    signing_section(
        dir,
        &[("k", "example.com", "rsa", &k.rsa.path)],
        &[(pattern, "k")],
    )
}

/// [`signing_section`] for example.com with the RSA test key as `k-rsa` (selector `rsa`) and
/// the Ed25519 one as `k-ed` (selector `ed`), used as `sign_rows` say.
pub fn example_com_rsa_ed(dir: &Path, sign_rows: &[(&str, &str)]) -> String {
    let k = keys();
    signing_section(
        dir,
        &[
            ("k-rsa", "example.com", "rsa", &k.rsa.path),
            ("k-ed", "example.com", "ed", &k.ed.path),
        ],
        sign_rows,
    )
}

/// One SMTP session as the MTA side of the milter protocol, with Postfix's habits: exact
/// leading-space header values, LF-folded values, queue id from RCPT on.
pub struct Client {
    pub conn: TestConnection,
}

#[derive(Debug, Clone)]
pub struct Envelope {
    pub client_ip: String,
    pub helo: String,
    pub mail_from: String,
    pub auth: Option<&'static str>,
    pub daemon_name: &'static str,
    /// RCPT TO arguments (Postfix always sends at least one).
    pub rcpts: Vec<String>,
}

impl Default for Envelope {
    fn default() -> Self {
        Envelope {
            client_ip: "192.0.2.10".into(),
            helo: "client.example".into(),
            mail_from: "<sender@example.com>".into(),
            auth: None,
            daemon_name: "smtpd",
            rcpts: vec!["<rcpt@example.org>".into()],
        }
    }
}

/// The result of one message through the milter.
#[derive(Debug)]
pub struct Delivered {
    pub status: Status,
    pub actions: EomActions,
    /// The message as the MTA would store it (our inserts and deletes applied), CRLF.
    pub message: Vec<u8>,
}

impl Delivered {
    pub fn inserted(&self, name: &str) -> Vec<String> {
        self.actions
            .actions
            .iter()
            .filter_map(|a| match a {
                EomAction::InsertHeader { name: n, value, .. }
                    if n.to_str().unwrap().eq_ignore_ascii_case(name) =>
                {
                    Some(value.to_string_lossy().into_owned())
                }
                _ => None,
            })
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.message).into_owned()
    }
}

/// Split a test message (`\n` or `\r\n` line ends) into milter header values and body.
pub fn split(raw: &str) -> (Vec<(String, String)>, Vec<u8>) {
    let (fields, body) = mailseal::tools::split_message(raw.as_bytes());
    (
        fields
            .into_iter()
            .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
            .collect(),
        body,
    )
}

/// One SMTP session with one message: open, connect + HELO, the message, close.
pub async fn deliver(addr: SocketAddr, env: &Envelope, raw: &str) -> Delivered {
    let mut c = Client::open(addr).await;
    c.hello(env).await;
    let out = c.message(env, raw, 65535).await;
    c.close().await;
    out
}

impl Client {
    pub async fn open(addr: SocketAddr) -> Client {
        let conn = TestConnection::configure()
            .available_opts(ProtoOpts::all())
            .exact_leading_space(true)
            .read_timeout(Duration::from_secs(60))
            .open_tcp(addr)
            .await
            .expect("milter connection");
        Client { conn }
    }

    /// Connect + HELO for an envelope.
    pub async fn hello(&mut self, env: &Envelope) {
        self.conn
            .macros(
                MacroStage::Connect,
                [("j", "mx.test"), ("{daemon_name}", env.daemon_name)],
            )
            .await
            .unwrap();
        let ip: std::net::IpAddr = env.client_ip.parse().unwrap();
        let st = self.conn.connect("client.test", (ip, 40000)).await.unwrap();
        assert!(matches!(st, Status::Continue | Status::Noreply), "{st:?}");
        let st = self.conn.helo(env.helo.as_str()).await.unwrap();
        assert!(matches!(st, Status::Continue | Status::Noreply), "{st:?}");
    }

    /// MAIL FROM through end of message, body in chunks of `chunk` bytes.
    pub async fn message(&mut self, env: &Envelope, raw: &str, chunk: usize) -> Delivered {
        let mut mail_macros = vec![("i", "QID1")];
        if let Some(a) = env.auth {
            mail_macros.push(("{auth_authen}", a));
        }
        self.conn
            .macros(MacroStage::Mail, mail_macros)
            .await
            .unwrap();
        let st = self.conn.mail([env.mail_from.as_str()]).await.unwrap();
        assert!(matches!(st, Status::Continue | Status::Noreply), "{st:?}");
        // As Postfix does: no RCPT when the milter said it needs none.
        let rcpts = if self.conn.negotiated_opts().contains(ProtoOpts::NO_RCPT) {
            &[][..]
        } else {
            &env.rcpts[..]
        };
        for r in rcpts {
            let st = self.conn.rcpt([r.as_str()]).await.unwrap();
            assert!(matches!(st, Status::Continue | Status::Noreply), "{st:?}");
        }
        let (fields, body) = split(raw);
        for (n, v) in &fields {
            let st = self.conn.header(n.as_str(), v.as_str()).await.unwrap();
            assert!(matches!(st, Status::Continue | Status::Noreply), "{st:?}");
        }
        let st = self.conn.eoh().await.unwrap();
        if st != Status::Continue {
            return Delivered {
                status: st,
                actions: EomActions { actions: vec![] },
                message: assemble(&fields, &body, &EomActions { actions: vec![] }),
            };
        }
        for piece in body.chunks(chunk.max(1)) {
            let st = self.conn.body(piece.to_vec()).await.unwrap();
            assert!(matches!(st, Status::Continue | Status::Noreply), "{st:?}");
        }
        let (actions, status) = self.conn.eom().await.unwrap();
        let message = assemble(&fields, &body, &actions);
        Delivered {
            status,
            actions,
            message,
        }
    }

    pub async fn close(self) {
        self.conn.close().await.unwrap();
    }
}

/// Apply milter edits to a message the way Postfix does (deletes by per-name index, then
/// inserts at their index; no MTA Received header here).
pub fn assemble(fields: &[(String, String)], body: &[u8], actions: &EomActions) -> Vec<u8> {
    let mut headers: Vec<(String, String)> = fields.to_vec();
    for a in &actions.actions {
        if let EomAction::DeleteHeader { name, index } = a {
            let name = name.to_str().unwrap();
            let mut seen = 0;
            let pos = headers.iter().position(|(n, _)| {
                if n.eq_ignore_ascii_case(name) {
                    seen += 1;
                    seen == *index
                } else {
                    false
                }
            });
            if let Some(p) = pos {
                headers.remove(p);
            }
        }
    }
    for a in &actions.actions {
        if let EomAction::InsertHeader { index, name, value } = a {
            let at = (*index as usize).min(headers.len());
            headers.insert(
                at,
                (
                    name.to_str().unwrap().into(),
                    value.to_str().unwrap().into(),
                ),
            );
        }
    }
    let mut out = Vec::new();
    for (n, v) in &headers {
        out.extend_from_slice(n.as_bytes());
        out.push(b':');
        out.extend_from_slice(v.replace('\n', "\r\n").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Verify every DKIM-Signature with python3-dkim against these TXT records.
pub fn dkim_check(message: &[u8], records: &BTreeMap<String, String>) -> Vec<bool> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/dkim_check.py");
    let req = format!(
        "{{\"message\": \"{}\", \"records\": {{{}}}}}",
        b64(message),
        records
            .iter()
            .map(|(k, v)| format!("\"{k}\": \"{v}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut child = Command::new("/usr/bin/python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 with python3-dkim");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(req.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "dkim_check.py failed");
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim() == "true")
        .collect()
}

/// `d=` and `s=` of a DKIM-Signature value.
pub fn tag(sig: &str, name: &str) -> Option<String> {
    sig.split(';').find_map(|t| {
        let (k, v) = t.split_once('=')?;
        (k.trim() == name).then(|| v.split_whitespace().collect::<String>())
    })
}

/// `raw` signed as example.com (selector `rsa`, the 2048-bit test key) through the daemon's
/// own signing path (`mailseal::tools::sign_message`).
pub async fn signed_by_example_com(raw: &str) -> String {
    signed_by_example_com_with(raw, "").await
}

/// [`signed_by_example_com`] with more `[signing]` keys (TOML lines).
pub async fn signed_by_example_com_with(raw: &str, signing_keys: &str) -> String {
    let s = Scratch::new("signer");
    let signing = example_com_rsa(&s.0, "*");
    let cfg = mailseal::config::Config::load(
        &s.write("m.toml", &format!("[signing]\n{signing}{signing_keys}")),
    )
    .unwrap();
    String::from_utf8(
        mailseal::tools::sign_message(cfg, raw.as_bytes())
            .await
            .unwrap(),
    )
    .unwrap()
}

/// Held by tests that need something fixed and shared: a Postfix instance (its ports, its
/// commands), the PostgreSQL server. They run one at a time; every other test runs beside
/// them on ports and addresses of its own.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// A test daemon's configuration, built as TOML (so no test types a preamble again, and no
/// section is written twice).
#[derive(Debug, Clone, Default)]
pub struct TestConfig(toml::Table);

impl TestConfig {
    /// Verify only, as `mx.test`, resolving through `dns` (1 s per query, one attempt).
    pub fn verifying(dns: SocketAddr) -> TestConfig {
        TestConfig::default()
            .set("authserv_id", "mx.test")
            .set("mode", "v")
            .set("dns.nameservers", vec![dns.to_string()])
            .set("dns.timeout", "1s")
            .set("dns.attempts", 1)
    }

    /// Set one key; `key` is dotted (`dmarc.enforce`).
    pub fn set(mut self, key: &str, value: impl Into<toml::Value>) -> TestConfig {
        let mut table = &mut self.0;
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().unwrap();
        for p in parts {
            table = table
                .entry(p)
                .or_insert_with(|| toml::Value::Table(Default::default()))
                .as_table_mut()
                .unwrap();
        }
        table.insert(last.to_string(), value.into());
        self
    }

    /// Leave a top-level key out.
    pub fn unset(mut self, key: &str) -> TestConfig {
        self.0.remove(key);
        self
    }

    /// Merge TOML text into it, key by key.
    pub fn with(mut self, text: &str) -> TestConfig {
        let extra: toml::Table = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        for (k, v) in extra {
            match (self.0.get_mut(&k), v) {
                (Some(toml::Value::Table(mine)), toml::Value::Table(theirs)) => mine.extend(theirs),
                (_, v) => {
                    self.0.insert(k, v);
                }
            }
        }
        self
    }

    pub fn text(&self) -> String {
        toml::to_string(&self.0).unwrap()
    }
}

/// What a run of the `mailseal` binary printed.
#[derive(Debug)]
pub struct CliOutput {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Both streams, for messages.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// The `mailseal` binary with these arguments, run to completion (on a blocking thread, so a
/// DNS server in the test's runtime keeps answering).
pub async fn cli(args: &[&str], stdin: Option<&[u8]>) -> CliOutput {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let stdin = stdin.map(|s| s.to_vec());
    tokio::task::spawn_blocking(move || cli_blocking(&args, stdin.as_deref()))
        .await
        .unwrap()
}

/// [`cli`] for tests without a runtime.
pub fn cli_blocking(args: &[impl AsRef<std::ffi::OsStr>], stdin: Option<&[u8]>) -> CliOutput {
    cli_through(&[], args, stdin)
}

/// The binary run through a wrapper command (`setpriv --groups=8 --`), or directly when
/// `wrapper` is empty.
pub fn cli_through(
    wrapper: &[&str],
    args: &[impl AsRef<std::ffi::OsStr>],
    stdin: Option<&[u8]>,
) -> CliOutput {
    let bin = env!("CARGO_BIN_EXE_mailseal");
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let mut child = cmd
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the mailseal binary");
    let mut input = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        input.write_all(data).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    CliOutput {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
