//! Configuration: the file's keys ([`raw`], each written once with its type, default and
//! meaning), checked ([`validate`]: everything serde cannot check alone, with file:line) into
//! an immutable [`Config`], plus the signing tables and keys it names ([`tables`], [`keys`]).
//!
//! Loading never stops at the first problem: every error found (bad keys, table lines, unsafe
//! key files) is collected so `mailseal check-config` can report them all, each naming its
//! file and line. Warnings are returned, not logged, so they reach the admin whether or not
//! logging has started.

pub mod docs;
pub mod keys;
pub mod raw;
pub mod tables;
pub mod types;
mod validate;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub use raw::{Dmarc, Dns, Keys, Limits, Metrics, Reports, Settings, Signing, Verify};
pub use tables::SigningTables;
pub use types::{
    FailAction, InvalidValue, Mode, MultipleFrom, QuarantineAction, Schedule, SmtpTls, SocketSpec,
    TransportKind, MAX_THREADS,
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {msg}", path.display())]
    Syntax { path: PathBuf, msg: String },
    #[error("{}{}: {key}: {msg}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Value {
        path: PathBuf,
        line: Option<usize>,
        key: &'static str,
        msg: String,
    },
    #[error("{origin}: {msg}")]
    Table { origin: String, msg: String },
}

/// All the problems found while loading a configuration.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A validated configuration: the file's [`Settings`] (reached through `Deref`, so
/// `config.limits.max_headers`), with relative paths resolved, and what was loaded from them.
/// Immutable; a reload builds a new one.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    settings: Settings,
    /// This host's name towards others (report HELO, reporter name, log): the authserv-id
    /// or the host's fully qualified name.
    pub host_name: String,
    /// The KeyTable and SigningTable with every key loaded and checked.
    pub tables: SigningTables,
    /// The table files, when configured (for safety checks and messages).
    pub table_paths: Vec<PathBuf>,
    /// What the admin should hear about though nothing is wrong enough to refuse (check-config
    /// prints them, the daemon logs them).
    pub warnings: Vec<String>,
}

impl std::ops::Deref for Config {
    type Target = Settings;
    fn deref(&self) -> &Settings {
        &self.settings
    }
}

/// The settings read once at start: a reload names a change to them, a restart applies it.
/// Every other setting reloads.
pub const RESTART_ONLY: [&str; 7] = [
    "socket",
    "socket_mode",
    "threads",
    "max_connections",
    "connection_timeout",
    "shutdown_timeout",
    "metrics.listen",
];

/// Where DMARC evaluations are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    Sqlite(PathBuf),
    /// A `postgres://` URL (one database shared by several MX hosts).
    Postgres(String),
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSpec::Sqlite(p) => write!(f, "{}", p.display()),
            // Never show a secret that may be in the connection string.
            StoreSpec::Postgres(u) => f.write_str(&redact_conninfo(u)),
        }
    }
}

/// Parameters of a PostgreSQL connection string whose values are secrets.
const SECRET_PARAMETERS: [&str; 2] = ["password", "sslpassword"];

/// A PostgreSQL connection string (URL or key=value) with every secret replaced by "…": the
/// password of the URL's user part, and `password` / `sslpassword` parameters.
pub fn redact_conninfo(u: &str) -> String {
    let secret = |k: &str| SECRET_PARAMETERS.iter().any(|s| k.eq_ignore_ascii_case(s));
    if let Some(scheme_end) = u.find("://") {
        let (scheme, rest) = u.split_at(scheme_end + 3);
        let (main, query) = match rest.split_once('?') {
            Some((m, q)) => (m, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match main.find('/') {
            Some(i) => main.split_at(i),
            None => (main, ""),
        };
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:…@{host}"),
                None => format!("{userinfo}@{host}"),
            },
            None => authority.to_string(),
        };
        let query = query.map(|q| {
            q.split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if secret(k) => format!("{k}=…"),
                    _ => kv.to_string(),
                })
                .collect::<Vec<_>>()
                .join("&")
        });
        return match query {
            Some(q) => format!("{scheme}{authority}{path}?{q}"),
            None => format!("{scheme}{authority}{path}"),
        };
    }
    conninfo_pairs(u)
        .into_iter()
        .map(|(key, raw, _)| {
            if secret(&key) {
                format!("{key}=…")
            } else {
                raw
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The pairs of a key=value connection string: (key, the pair as written, the value
/// unquoted). A value may be 'quoted', with \' and \\ inside.
pub fn conninfo_pairs(u: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut rest = u.trim_start();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else {
            out.push((String::new(), rest.to_string(), String::new()));
            break;
        };
        let key = rest[..eq].trim().to_string();
        let after = rest[eq + 1..].trim_start();
        let skipped = rest.len() - after.len();
        let (value, len) = if let Some(q) = after.strip_prefix('\'') {
            let mut value = String::new();
            let mut end = q.len();
            let mut escaped = false;
            for (i, c) in q.char_indices() {
                match c {
                    _ if escaped => {
                        value.push(c);
                        escaped = false;
                    }
                    '\\' => escaped = true,
                    '\'' => {
                        end = i;
                        break;
                    }
                    _ => value.push(c),
                }
            }
            (value, (end + 2).min(after.len()))
        } else {
            let len = after.find(char::is_whitespace).unwrap_or(after.len());
            (after[..len].to_string(), len)
        };
        out.push((key, rest[..skipped + len].trim().to_string(), value));
        rest = after[len..].trim_start();
    }
    out
}

/// Is `host` (a name or an address) this machine's loopback?
pub fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Is this store setting a PostgreSQL connection string (a URL, or key=value pairs)?
pub(crate) fn is_postgres(s: &str) -> bool {
    s.starts_with("postgres://")
        || s.starts_with("postgresql://")
        || s.split_whitespace().next().is_some_and(|w| {
            w.split_once('=')
                .is_some_and(|(k, _)| ["host", "hostaddr", "dbname", "user", "port"].contains(&k))
        })
}

/// How reports are handed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Smtp {
        host: String,
        port: u16,
        tls: SmtpTls,
        ca_file: Option<PathBuf>,
        /// User and the file holding the password.
        auth: Option<(String, PathBuf)>,
    },
    Sendmail(PathBuf),
}

impl Signing {
    /// `ip` as the session holds it: IPv4-mapped addresses already made IPv4 at connect.
    pub fn is_internal(&self, ip: IpAddr) -> bool {
        self.internal_hosts.contains(ip)
    }
}

impl Keys {
    /// The database shared by the signing hosts for the rotation state, when set.
    pub fn store(&self) -> Option<StoreSpec> {
        self.store.clone().map(StoreSpec::Postgres)
    }
}

impl Reports {
    /// Where evaluations are recorded; `None`: reporting is off.
    pub fn store(&self) -> Option<StoreSpec> {
        self.store.as_deref().map(|s| {
            if is_postgres(s) {
                StoreSpec::Postgres(s.to_string())
            } else {
                StoreSpec::Sqlite(PathBuf::from(s))
            }
        })
    }

    /// Send yesterday's reports once a day from inside the daemon.
    pub fn daily(&self) -> bool {
        self.schedule == Schedule::Daily
    }

    /// The reporter's name (required, and checked, when reports are on).
    pub fn org(&self) -> &str {
        self.org_name.as_deref().unwrap_or_default()
    }

    /// The address reports come from (required, and checked, when reports are on).
    pub fn from_address(&self) -> &str {
        self.email.as_deref().unwrap_or_default()
    }

    /// How reports are handed on.
    pub fn transport(&self) -> Transport {
        match self.transport {
            TransportKind::Sendmail => Transport::Sendmail(self.sendmail.clone()),
            TransportKind::Smtp => Transport::Smtp {
                host: self.smtp_host.clone(),
                port: self.smtp_port,
                tls: self.smtp_tls,
                ca_file: self.smtp_ca_file.clone(),
                auth: self.smtp_user.clone().zip(self.smtp_password_file.clone()),
            },
        }
    }

    /// Is `domain` (or a parent of it) on the suppression list?
    pub fn suppressed(&self, domain: &str) -> bool {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        self.suppress
            .iter()
            .any(|s| d == *s || crate::message::is_subdomain(&d, s))
    }

    /// The domain reports are sent from (the Submitter in the subject, the receiver in
    /// file names): the domain of `email`.
    pub fn receiver(&self) -> &str {
        let email = self.from_address();
        email.rsplit_once('@').map(|(_, d)| d).unwrap_or(email)
    }
}

impl Config {
    /// Load, parse and validate a configuration file, its tables and keys.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            ConfigErrors(vec![ConfigError::Io {
                path: path.to_path_buf(),
                source,
            }])
        })?;
        Self::from_toml(path, &text)
    }

    /// Parse and validate TOML text; `path` names the file in errors and anchors relative
    /// paths.
    pub fn from_toml(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        let settings: Settings = toml::from_str(text).map_err(|e| {
            ConfigErrors(vec![ConfigError::Syntax {
                path: path.to_path_buf(),
                msg: e.to_string().trim_end().to_string(),
            }])
        })?;
        validate::validate(path, text, settings)
    }

    /// The authserv-id for one connection: the configured one, else the MTA's host name
    /// (macro `j`) when it is a domain name, else this host's fully qualified name. `None`
    /// when there is none: such a connection cannot stamp results and tempfails inbound mail.
    pub fn authserv_id_for(&self, mta_host_name: Option<&str>) -> Option<String> {
        self.authserv_id
            .clone()
            .or_else(|| mta_host_name.and_then(usable_host_name))
            .or_else(|| usable_host_name(&self.host_name))
    }

    /// Files that others than root and the service user could change: the configuration and
    /// both tables (whoever can edit them can make mailseal sign with any key for any domain).
    /// Part of [`Config::warnings`].
    fn add_unsafe_file_warnings(&mut self) {
        let found: Vec<String> = std::iter::once(&self.path)
            .chain(self.table_paths.iter())
            .filter_map(|p| writable_by_others(p).map(|why| format!("{}: {why}", p.display())))
            .collect();
        self.warnings.extend(found);
    }
}

/// Why a file could be changed by someone other than root or the user running mailseal.
pub fn writable_by_others(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.mode() & 0o7777;
    let me = unsafe { libc::geteuid() };
    let my_group = unsafe { libc::getegid() };
    if mode & 0o002 != 0 {
        return Some(format!("writable by everyone (mode {mode:04o}); chmod o-w"));
    }
    if mode & 0o020 != 0 && meta.gid() != 0 && meta.gid() != my_group {
        return Some(format!(
            "writable by group {} (mode {mode:04o}); chmod g-w",
            meta.gid()
        ));
    }
    if meta.uid() != 0 && meta.uid() != me {
        return Some(format!(
            "owned by uid {}, neither root nor the service user",
            meta.uid()
        ));
    }
    None
}

/// Whether `id` can name us in Authentication-Results: a domain name (RFC 8601 §2.5), so it
/// holds a dot when we verify; no whitespace or `;` in any case.
pub(crate) fn check_authserv_id(id: &str, verifying: bool) -> Result<(), InvalidValue> {
    if id.is_empty() || id.contains(|c: char| c.is_whitespace() || c == ';' || c == '"') {
        return Err(format!("{id:?} is not a valid authserv-id").into());
    }
    if verifying && !id.trim_end_matches('.').contains('.') {
        return Err(format!(
            "{id:?} is not a domain name; RFC 8601 §2.5 wants this host's fully qualified name, e.g. mx.example.net"
        ).into());
    }
    Ok(())
}

/// A name the MTA or the system gives us, usable as an authserv-id: a domain name with a dot.
fn usable_host_name(name: &str) -> Option<String> {
    let n = name.trim().trim_end_matches('.');
    (check_authserv_id(n, true).is_ok() && n.len() <= 253).then(|| n.to_ascii_lowercase())
}

/// This host's fully qualified name, as the resolver gives it (getaddrinfo's canonical name
/// of the host name), when it has a dot.
pub fn system_fqdn() -> Option<String> {
    let host = std::ffi::CString::new(system_hostname()).ok()?;
    let hints = libc::addrinfo {
        ai_flags: libc::AI_CANONNAME,
        ai_family: libc::AF_UNSPEC,
        ai_socktype: libc::SOCK_STREAM,
        ai_protocol: 0,
        ai_addrlen: 0,
        ai_addr: std::ptr::null_mut(),
        ai_canonname: std::ptr::null_mut(),
        ai_next: std::ptr::null_mut(),
    };
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: valid C strings and hints; the result list is freed below.
    let rc = unsafe { libc::getaddrinfo(host.as_ptr(), std::ptr::null(), &hints, &mut res) };
    if rc != 0 || res.is_null() {
        return usable_host_name(&system_hostname());
    }
    // SAFETY: getaddrinfo succeeded, so `res` points to a list whose first entry carries the
    // canonical name (AI_CANONNAME) or null.
    let canon = unsafe {
        let c = (*res).ai_canonname;
        let name =
            (!c.is_null()).then(|| std::ffi::CStr::from_ptr(c).to_string_lossy().into_owned());
        libc::freeaddrinfo(res);
        name
    };
    canon
        .as_deref()
        .and_then(usable_host_name)
        .or_else(|| usable_host_name(&system_hostname()))
}

pub fn system_hostname() -> String {
    gethostname::gethostname()
        .into_string()
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod conninfo_tests {
    #[test]
    fn secrets_are_redacted() {
        for (u, want) in [
            ("postgres://u:pw@h:5/db", "postgres://u:…@h:5/db"),
            (
                "postgres://u@h/db?password=pw&sslmode=require",
                "postgres://u@h/db?password=…&sslmode=require",
            ),
            (
                "postgresql://h/db?sslpassword=x",
                "postgresql://h/db?sslpassword=…",
            ),
            ("host=h password=pw dbname=d", "host=h password=… dbname=d"),
            (
                "host=h password='p w\\' x' dbname=d",
                "host=h password=… dbname=d",
            ),
            ("postgres://h/db", "postgres://h/db"),
        ] {
            assert_eq!(super::redact_conninfo(u), want, "{u}");
        }
    }
}
