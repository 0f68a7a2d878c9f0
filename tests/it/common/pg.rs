//! A private PostgreSQL server for tests that share a store between hosts.

use std::path::PathBuf;
use std::process::Command;

/// A private PostgreSQL server on 127.0.0.1 (Debian's postgresql package), removed on drop.
pub struct Postgres {
    pub port: u16,
    pub dir: PathBuf,
    bin: PathBuf,
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed (apt-get install postgresql)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|p| p.join("initdb").exists())
            .expect("initdb");
        static SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("mailseal-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let pg = Postgres { port, dir, bin };
        // PostgreSQL refuses to run as root: run it as the postgres user then.
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&pg.dir)
                .status()
                .unwrap();
            assert!(st.success());
        }
        let data = pg.dir.join("data");
        pg.run(
            root,
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        // TLS on, and required for TCP clients (hostssl only), with a self-signed
        // certificate for localhost and 127.0.0.1.
        let (cert, key) = crate::common::self_signed(&pg.dir, "localhost");
        if root {
            for f in [&cert, &key] {
                let st = Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(f)
                    .status()
                    .unwrap();
                assert!(st.success());
            }
        }
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            pg.dir.display(),
            cert.display(),
            key.display()
        );
        pg.run(
            root,
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                pg.dir.join("log").to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        pg
    }

    /// `tool` from PostgreSQL's bin directory, as the postgres user when we are root.
    fn command(&self, root: bool, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run(&self, root: bool, tool: &str, args: &[&str]) {
        let out = self.command(root, tool).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{tool}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The answer of one SQL statement through psql on the server's own socket (unaligned,
    /// tuples only).
    pub fn psql(&self, sql: &str) -> String {
        let root = unsafe { libc::geteuid() } == 0;
        let port = self.port.to_string();
        let dir = self.dir.to_str().unwrap();
        let out = self
            .command(root, "psql")
            .args(["-h", dir, "-p", &port, "-U", "postgres", "-Atc", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let root = unsafe { libc::geteuid() } == 0;
        let data = self.dir.join("data");
        let args = ["-D", data.to_str().unwrap(), "-m", "immediate", "stop"];
        let _ = self.command(root, "pg_ctl").args(args).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
