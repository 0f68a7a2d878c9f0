//! The mailseal binary as a child process, its log lines read as they come.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Running {
    /// `mailseal run -c CONFIG` with these extra environment variables (info logging).
    pub fn start(config: &Path, env: &[(&str, &OsStr)]) -> Running {
        Self::spawn(config, env, false)
    }

    /// As systemd starts it: stderr is the journal stream (`JOURNAL_STREAM` names the pipe),
    /// and no `RUST_LOG`, so the configured log_level rules.
    pub fn under_journal(config: &Path, env: &[(&str, &OsStr)]) -> Running {
        Self::spawn(config, env, true)
    }

    fn spawn(config: &Path, env: &[(&str, &OsStr)], journal: bool) -> Running {
        use std::os::fd::{FromRawFd, OwnedFd};
        use std::os::unix::fs::MetadataExt;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailseal"));
        cmd.args(["run", "-c"]).arg(config).env("NO_COLOR", "1");
        if !journal {
            cmd.env("RUST_LOG", "info");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut fds = [0; 2];
        // SAFETY: pipe fills the two descriptors, each owned once below.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let write = std::fs::File::from(write);
        if journal {
            let meta = write.metadata().unwrap();
            cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
        }
        let child = cmd.stderr(Stdio::from(write)).spawn().unwrap();
        let stderr = std::fs::File::from(read);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Start and wait until it listens.
    pub fn started(config: &Path, env: &[(&str, &OsStr)]) -> Running {
        let mut r = Self::start(config, env);
        r.wait_log("listening");
        r
    }

    /// Wait (at most 20 s) for a log line containing `needle`.
    pub fn wait_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no log line with {needle:?}; saw:\n{}",
            self.seen.join("\n")
        );
    }

    pub fn signal(&self, sig: i32) {
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// Every line logged so far and until the process exits.
    pub fn wait_all_logs(&mut self) -> String {
        let _ = self.child.wait();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
