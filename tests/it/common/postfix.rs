//! A private Postfix instance on loopback with its own config and queue directories, using
//! the configuration files in tests/e2e/ (shared with the docker-compose rig).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Postfix {
    pub dir: PathBuf,
    pub smtp_port: u16,
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    out
}

impl Postfix {
    /// Is Postfix installed and are we root (postfix start needs both)?
    pub fn available() -> bool {
        Path::new("/usr/sbin/postfix").exists() && unsafe { libc::geteuid() } == 0
    }

    /// Whether a Postfix test can run here; if not, said (and an error under CI).
    pub fn or_skip() -> bool {
        if Self::available() {
            return true;
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the Postfix tests (needs root and postfix)"
        );
        eprintln!("SKIPPED: needs root and /usr/sbin/postfix (scripts/test.sh installs it)");
        false
    }

    /// Write main.cf/master.cf from tests/e2e templates and start the instance.
    pub fn start(dir: &Path, milter_port: u16, sink_port: u16) -> Postfix {
        Self::start_named(dir, "mx.test", milter_port, sink_port)
    }

    /// Start with this `myhostname` (two instances that relay to each other need
    /// different names, or Postfix sees a mail loop).
    pub fn start_named(dir: &Path, hostname: &str, milter_port: u16, sink_port: u16) -> Postfix {
        let smtp_port = free_port();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");
        let conf = dir.join("etc");
        std::fs::create_dir_all(&conf).unwrap();
        let subst = |t: String| {
            t.replace("@DIR@", dir.to_str().unwrap())
                .replace("@HOSTNAME@", hostname)
                .replace("@SMTP_PORT@", &smtp_port.to_string())
                .replace("@MILTER@", &format!("inet:127.0.0.1:{milter_port}"))
                .replace("@RELAY@", &format!("[127.0.0.1]:{sink_port}"))
        };
        for f in ["main.cf", "master.cf"] {
            let text = std::fs::read_to_string(root.join(f)).unwrap();
            std::fs::write(conf.join(f), subst(text)).unwrap();
        }
        for d in ["queue", "data"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        run(Command::new("chown")
            .args(["postfix:postfix"])
            .arg(dir.join("data")));
        let pf = Postfix {
            dir: dir.to_path_buf(),
            smtp_port,
        };
        let out = pf.postfix(&["start"]);
        assert!(
            out.status.success(),
            "postfix start failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            pf.log()
        );
        pf
    }

    /// A relay without milters that offers STARTTLS with a self-signed certificate for
    /// localhost and 127.0.0.1 (`cert.pem` in `dir`), at this smtpd_tls_security_level
    /// ("may", Debian's default setup; "encrypt" refuses mail without STARTTLS).
    pub fn start_tls_relay(dir: &Path, hostname: &str, sink_port: u16, level: &str) -> Postfix {
        let (cert, key) = super::self_signed(dir, "localhost");
        let pf = Self::start_named(dir, hostname, 0, sink_port);
        let main = pf.conf().join("main.cf");
        let text = std::fs::read_to_string(&main).unwrap();
        let mut text: String = text
            .lines()
            .filter(|l| !l.starts_with("smtpd_milters") && !l.starts_with("non_smtpd_milters"))
            .map(|l| format!("{l}\n"))
            .collect();
        text.push_str(&format!(
            "smtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\nsmtpd_tls_security_level = {level}\n",
            cert.display(),
            key.display()
        ));
        std::fs::write(&main, text).unwrap();
        let out = pf.postfix(&["reload"]);
        assert!(out.status.success(), "postfix reload: {}", pf.log());
        pf
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.join("etc")
    }

    /// Run `postfix -c CONF args` under a pseudo-terminal (postfix prints its errors only there).
    pub fn postfix(&self, args: &[&str]) -> Output {
        let cmd = format!(
            "/usr/sbin/postfix -c {} {}",
            self.conf().display(),
            args.join(" ")
        );
        run(Command::new("script").args(["-qec", &cmd, "/dev/null"]))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    /// Submit through the sendmail command (pickup → cleanup → non_smtpd_milters).
    pub fn sendmail(&self, from: &str, to: &str, msg: &[u8]) {
        use std::io::Write;
        let mut child = Command::new("/usr/sbin/sendmail")
            .env("MAIL_CONFIG", self.conf())
            .args(["-f", from, to])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(msg).unwrap();
        assert!(child.wait().unwrap().success(), "sendmail failed");
    }

    /// Send one message by SMTP with swaks; `extra` adds swaks options (e.g. XCLIENT).
    /// Returns whether the message was accepted and the SMTP transcript.
    pub fn swaks(&self, from: &str, extra: &[&str], msg: &str) -> (bool, String) {
        use std::io::Write;
        let mut child = Command::new("swaks")
            .args([
                "--server",
                &format!("127.0.0.1:{}", self.smtp_port),
                "--from",
                from,
                "--to",
                "bob@example.org",
            ])
            .args([
                "--helo",
                "internal.example",
                "--data",
                "-",
                "--timeout",
                "30",
            ])
            .args(extra)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("swaks");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(msg.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Flush the queues (deferred mail and the maildrop).
    pub fn flush(&self) {
        run(Command::new("/usr/sbin/postqueue")
            .args(["-c"])
            .arg(self.conf())
            .arg("-f"));
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = self.postfix(&["stop"]);
    }
}
