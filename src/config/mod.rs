//! Configuration: raw TOML ([`raw`]) → validated, immutable [`Config`].
//!
//! Loading never stops at the first problem: every error found (bad keys, table lines, unsafe
//! key files) is collected so `mailseal check-config` can report them all, each naming its
//! file and line.

pub mod keys;
pub mod raw;
pub mod tables;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use mail_auth::dkim::Canonicalization;

pub use tables::SigningTables;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {msg}", path.display())]
    Syntax { path: PathBuf, msg: String },
    #[error("{}: {key}: {msg}", path.display())]
    Value {
        path: PathBuf,
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

/// Where the milter listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketSpec {
    /// `inet:PORT@HOST`, `inet:HOST:PORT`, `inet6:PORT@[::1]`
    Inet { host: String, port: u16 },
    /// `unix:/path` or `local:/path`
    Unix(PathBuf),
}

impl fmt::Display for SocketSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketSpec::Inet { host, port } => write!(f, "inet:{port}@{host}"),
            SocketSpec::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl SocketSpec {
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:").or_else(|| s.strip_prefix("local:")) {
            if !path.starts_with('/') {
                return Err(format!("unix socket path must be absolute: {path:?}"));
            }
            return Ok(SocketSpec::Unix(PathBuf::from(path)));
        }
        let rest = s
            .strip_prefix("inet:")
            .or_else(|| s.strip_prefix("inet6:"))
            .ok_or_else(|| {
                format!("expected inet:PORT@HOST, inet:HOST:PORT or unix:/path, found {s:?}")
            })?;
        let (host, port) = if let Some((port, host)) = rest.split_once('@') {
            (host, port)
        } else if let Some((host, port)) = rest.rsplit_once(':') {
            (host, port)
        } else {
            // `inet:8891` alone: loopback, as OpenDKIM does for a missing host.
            ("127.0.0.1", rest)
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid port {port:?} in socket {s:?}"))?;
        if host.is_empty() {
            return Err(format!("missing host in socket {s:?}"));
        }
        Ok(SocketSpec::Inet {
            host: host.to_string(),
            port,
        })
    }
}

/// What to answer when something fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailAction {
    Tempfail,
    Accept,
    Reject,
}

impl FailAction {
    fn parse(s: &str, allow_reject: bool) -> Result<Self, String> {
        match s {
            "tempfail" => Ok(FailAction::Tempfail),
            "accept" => Ok(FailAction::Accept),
            "reject" if allow_reject => Ok(FailAction::Reject),
            _ if allow_reject => Err(format!("expected tempfail, accept or reject, found {s:?}")),
            _ => Err(format!("expected tempfail or accept, found {s:?}")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineAction {
    /// Ask Postfix to put the message on hold (SMFIR_QUARANTINE).
    Hold,
    /// Only record the verdict in the Authentication-Results header.
    Header,
    Accept,
}

/// How a message whose From header has several addresses (or several From headers) is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultipleFrom {
    /// `dmarc=permerror`, and with `enforce` the message is rejected (RFC 9989 §4.5 advice).
    Strict,
    /// Evaluate against the first From domain.
    First,
}

#[derive(Debug)]
pub struct Limits {
    /// Cap on the header section of one message (bytes).
    pub max_header_size: usize,
    pub max_headers: usize,
    /// Messages above this are not buffered for verification.
    pub max_message_size: usize,
    pub on_oversize: FailAction,
    /// Cap on the bytes buffered for verification over all messages in flight.
    pub max_buffered_total: usize,
}

#[derive(Debug)]
pub struct Signing {
    pub tables: SigningTables,
    /// The table files, when configured (for safety checks and messages).
    pub table_paths: Vec<PathBuf>,
    pub multiple_signatures: bool,
    pub internal_hosts: Vec<IpNet>,
    pub daemon_names: Vec<String>,
    pub sign_authenticated: bool,
    pub header_canonicalization: Canonicalization,
    pub body_canonicalization: Canonicalization,
    pub sign_headers: Vec<String>,
    pub oversign_headers: Vec<String>,
    pub expiration: Option<Duration>,
    pub on_signing_error: FailAction,
}

impl Signing {
    /// `ip` as the session holds it: IPv4-mapped addresses already made IPv4 at connect.
    pub fn is_internal(&self, ip: IpAddr) -> bool {
        self.internal_hosts.iter().any(|net| net.contains(&ip))
    }
}

#[derive(Debug)]
pub struct Verify {
    pub on_dns_error: FailAction,
    pub max_signatures: usize,
    pub received_spf: bool,
    pub spf_helo: bool,
    pub timeout: Duration,
}

#[derive(Debug)]
pub struct Dmarc {
    pub enforce: bool,
    pub quarantine_action: QuarantineAction,
    pub multiple_from: MultipleFrom,
    pub never_reject: Vec<IpNet>,
    pub never_reject_authenticated: bool,
    /// Enforcing, but the DMARC verdict cannot be known (an aligned signature could not be
    /// checked: its fields or body were not kept): tempfail (451 4.7.1) or reject (550 5.7.1).
    /// Never accept: that would let padding decide the verdict.
    pub on_unverifiable: FailAction,
}

#[derive(Debug, Clone)]
pub struct Dns {
    pub nameservers: Vec<std::net::SocketAddr>,
    pub timeout: Duration,
    pub attempts: usize,
    pub cache_size: usize,
}

/// Most runtime threads `threads` may ask for: beyond it is a typo, not a tuning.
pub const MAX_THREADS: usize = 256;

/// A validated configuration. Immutable; a reload builds a new one.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub socket: SocketSpec,
    pub socket_mode: u32,
    /// The configured authserv-id. Unset: each connection uses the MTA's `$myhostname`
    /// (macro `j`), else this host's fully qualified name ([`Config::authserv_id_for`]).
    pub authserv_id: Option<String>,
    /// This host's name towards others (report HELO, reporter name, log): the authserv-id
    /// or the host's fully qualified name.
    pub host_name: String,
    pub sign: bool,
    pub verify_enabled: bool,
    pub log_level: String,
    pub max_connections: usize,
    /// Runtime threads serving milter connections: 1 = a single-threaded runtime (no
    /// cross-thread wake-ups), 0 = one per CPU.
    pub threads: usize,
    pub connection_timeout: Duration,
    /// On SIGTERM: how long messages in flight may take to finish.
    pub shutdown_timeout: Duration,
    pub on_internal_error: FailAction,
    pub limits: Limits,
    pub signing: Signing,
    pub verify: Verify,
    pub dmarc: Dmarc,
    pub dns: Dns,
    /// Where to serve Prometheus metrics (`GET /metrics`); `None` = no endpoint.
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub reports: Reports,
}

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
            // Never show a password that may be in the URL.
            StoreSpec::Postgres(u) => match (u.find("://"), u.rfind('@')) {
                (Some(s), Some(at)) if at > s => write!(f, "{}://…@{}", &u[..s], &u[at + 1..]),
                _ => write!(f, "{u}"),
            },
        }
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain SMTP (loopback relays only).
    None,
    /// STARTTLS when the relay offers it.
    Opportunistic,
    /// STARTTLS or give up.
    Required,
}

/// `[reports]`, validated.
#[derive(Debug, Clone)]
pub struct Reports {
    /// `None`: reporting is off; nothing is recorded.
    pub store: Option<StoreSpec>,
    pub org_name: String,
    pub email: String,
    pub extra_contact_info: Option<String>,
    /// Send yesterday's reports once a day from inside the daemon.
    pub daily: bool,
    pub transport: Transport,
    /// Domains (and their subdomains) never recorded or reported on.
    pub suppress: Vec<String>,
    /// Largest report message we send, whatever the destination allows.
    pub max_size: usize,
    /// Records and reports older than this are deleted.
    pub retention: Duration,
    /// Delivery attempts per report before it is given up.
    pub max_attempts: u32,
    /// Evaluations waiting for the writer; past this they are dropped (and counted).
    pub queue: usize,
    /// Send DMARC failure reports (RFC 9991) where `ruf=` asks for them.
    pub failure_reports: bool,
    /// Failure reports per policy domain per hour (ten times this over all domains).
    pub failure_rate: u32,
}

impl Reports {
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
        self.email
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or(&self.email)
    }
}

/// Parse "5s", "250ms", "2m".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// Parse "1048576", "64K", "10M", "1G", "10MiB".
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: usize = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("invalid size unit in {s:?} (use K, M or G)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

fn parse_canonicalization(s: &str) -> Result<(Canonicalization, Canonicalization), String> {
    let one = |c: &str| match c {
        "relaxed" => Ok(Canonicalization::Relaxed),
        "simple" => Ok(Canonicalization::Simple),
        _ => Err(format!(
            "invalid canonicalization {s:?}: use relaxed or simple, e.g. relaxed/simple"
        )),
    };
    let (h, b) = s.split_once('/').unwrap_or((s, "simple"));
    Ok((one(h)?, one(b)?))
}

fn parse_nets(list: &[String]) -> Result<Vec<IpNet>, String> {
    list.iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("invalid address or CIDR {s:?}"))
        })
        .collect()
}

fn parse_nameserver(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Ok(sa);
    }
    let ip: IpAddr = s
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("invalid nameserver {s:?}: expected IP or IP:PORT"))?;
    Ok(std::net::SocketAddr::new(ip, 53))
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
fn check_authserv_id(id: &str, verifying: bool) -> Result<(), String> {
    if id.is_empty() || id.contains(|c: char| c.is_whitespace() || c == ';' || c == '"') {
        return Err(format!("{id:?} is not a valid authserv-id"));
    }
    if verifying && !id.trim_end_matches('.').contains('.') {
        return Err(format!(
            "{id:?} is not a domain name; RFC 8601 §2.5 wants this host's fully qualified name, e.g. mx.example.net"
        ));
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

impl Config {
    /// The authserv-id for one connection: the configured one, else the MTA's host name
    /// (macro `j`) when it is a domain name, else this host's fully qualified name. `None`
    /// when there is none: such a connection cannot stamp results and tempfails inbound mail.
    pub fn authserv_id_for(&self, mta_host_name: Option<&str>) -> Option<String> {
        self.authserv_id
            .clone()
            .or_else(|| mta_host_name.and_then(usable_host_name))
            .or_else(|| usable_host_name(&self.host_name))
    }
}

pub fn system_hostname() -> String {
    gethostname::gethostname()
        .into_string()
        .unwrap_or_else(|_| "localhost".into())
}

impl Config {
    /// Files that others than root and the service user could change: the configuration and
    /// both tables (whoever can edit them can make mailseal sign with any key for any domain).
    pub fn unsafe_file_warnings(&self) -> Vec<String> {
        std::iter::once(&self.path)
            .chain(self.signing.table_paths.iter())
            .filter_map(|p| writable_by_others(p).map(|why| format!("{}: {why}", p.display())))
            .collect()
    }

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
    /// table paths.
    pub fn from_toml(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            ConfigErrors(vec![ConfigError::Syntax {
                path: path.to_path_buf(),
                msg: e.to_string().trim_end().to_string(),
            }])
        })?;
        let mut errors = Vec::new();
        let base = path.parent().unwrap_or(Path::new("."));
        macro_rules! check {
            ($key:literal, $e:expr, $default:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(msg) => {
                        errors.push(ConfigError::Value {
                            path: path.to_path_buf(),
                            key: $key,
                            msg,
                        });
                        $default
                    }
                }
            };
        }

        let socket = check!(
            "socket",
            SocketSpec::parse(&raw.socket),
            SocketSpec::Unix("/".into())
        );
        let socket_mode = check!(
            "socket_mode",
            u32::from_str_radix(&raw.socket_mode, 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| format!(
                    "expected an octal mode like \"0660\", found {:?}",
                    raw.socket_mode
                )),
            0o660
        );
        let (sign, verify_enabled) = check!(
            "mode",
            match raw.mode.as_str() {
                "s" => Ok((true, false)),
                "v" => Ok((false, true)),
                "sv" | "vs" => Ok((true, true)),
                m => Err(format!("expected s, v or sv, found {m:?}")),
            },
            (false, false)
        );
        let authserv_id = raw.authserv_id.clone();
        if let Some(id) = &authserv_id {
            if let Err(msg) = check_authserv_id(id, verify_enabled) {
                errors.push(ConfigError::Value {
                    path: path.to_path_buf(),
                    key: "authserv_id",
                    msg,
                });
            }
        }
        let host_name = authserv_id
            .clone()
            .or_else(system_fqdn)
            .unwrap_or_else(system_hostname);
        if raw.threads > MAX_THREADS {
            errors.push(ConfigError::Value {
                path: path.to_path_buf(),
                key: "threads",
                msg: format!(
                    "{} threads: at most {MAX_THREADS} (0 = one per CPU, 1 = the default)",
                    raw.threads
                ),
            });
        }
        if raw.max_connections == 0 {
            errors.push(ConfigError::Value {
                path: path.to_path_buf(),
                key: "max_connections",
                msg: "must be at least 1".into(),
            });
        }
        let connection_timeout = check!(
            "connection_timeout",
            parse_duration(&raw.connection_timeout),
            Duration::from_secs(330)
        );
        let shutdown_timeout = check!(
            "shutdown_timeout",
            parse_duration(&raw.shutdown_timeout),
            Duration::from_secs(30)
        );
        let on_internal_error = check!(
            "on_internal_error",
            FailAction::parse(&raw.on_internal_error, false),
            FailAction::Tempfail
        );
        if tracing_subscriber::EnvFilter::try_new(&raw.log_level).is_err() {
            errors.push(ConfigError::Value {
                path: path.to_path_buf(),
                key: "log_level",
                msg: format!("invalid log level {:?}", raw.log_level),
            });
        }

        let limits = Limits {
            max_header_size: check!(
                "limits.max_header_size",
                parse_size(&raw.limits.max_header_size),
                1 << 20
            ),
            max_headers: raw.limits.max_headers,
            max_message_size: check!(
                "limits.max_message_size",
                parse_size(&raw.limits.max_message_size),
                32 << 20
            ),
            max_buffered_total: check!(
                "limits.max_buffered_total",
                parse_size(&raw.limits.max_buffered_total),
                1 << 30
            ),
            on_oversize: check!(
                "limits.on_oversize",
                FailAction::parse(&raw.limits.on_oversize, true),
                FailAction::Accept
            ),
        };

        // Signing.
        let s = &raw.signing;
        let mut table_paths = Vec::new();
        let tables = match (&s.key_table, &s.signing_table) {
            (Some(kt), Some(st)) => {
                let resolve = |p: &str| {
                    let p = Path::new(tables::table_path(p));
                    if p.is_absolute() {
                        p.to_path_buf()
                    } else {
                        base.join(p)
                    }
                };
                table_paths = vec![resolve(kt), resolve(st)];
                SigningTables::load(&table_paths[0], &table_paths[1], &mut errors)
            }
            (None, None) => {
                if sign {
                    tracing::warn!(
                        "mode includes signing but no key_table/signing_table is configured: nothing will be signed"
                    );
                }
                SigningTables::default()
            }
            _ => {
                errors.push(ConfigError::Value {
                    path: path.to_path_buf(),
                    key: "signing",
                    msg: "key_table and signing_table must be set together".into(),
                });
                SigningTables::default()
            }
        };
        let (hc, bc) = check!(
            "signing.canonicalization",
            parse_canonicalization(&s.canonicalization),
            (Canonicalization::Relaxed, Canonicalization::Simple)
        );
        if !s
            .sign_headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case("from"))
        {
            errors.push(ConfigError::Value {
                path: path.to_path_buf(),
                key: "signing.sign_headers",
                msg: "must include From (RFC 6376 §5.4)".into(),
            });
        }
        let signing = Signing {
            tables,
            table_paths,
            multiple_signatures: s.multiple_signatures,
            internal_hosts: check!(
                "signing.internal_hosts",
                parse_nets(&s.internal_hosts),
                Vec::new()
            ),
            daemon_names: s.daemon_names.clone(),
            sign_authenticated: s.sign_authenticated,
            header_canonicalization: hc,
            body_canonicalization: bc,
            sign_headers: s.sign_headers.clone(),
            oversign_headers: s.oversign_headers.clone(),
            expiration: s
                .expiration
                .as_ref()
                .map(|d| check!("signing.expiration", parse_duration(d), Duration::ZERO)),
            on_signing_error: check!(
                "signing.on_signing_error",
                FailAction::parse(&s.on_signing_error, false),
                FailAction::Tempfail
            ),
        };

        let v = &raw.verify;
        let verify = Verify {
            on_dns_error: check!(
                "verify.on_dns_error",
                FailAction::parse(&v.on_dns_error, false),
                FailAction::Tempfail
            ),
            max_signatures: v.max_signatures,
            received_spf: v.received_spf,
            spf_helo: v.spf_helo,
            timeout: check!(
                "verify.timeout",
                parse_duration(&v.timeout),
                Duration::from_secs(60)
            ),
        };
        if verify.timeout >= Duration::from_secs(300) {
            errors.push(ConfigError::Value {
                path: path.to_path_buf(),
                key: "verify.timeout",
                msg: "must stay below Postfix's milter_content_timeout (300s)".into(),
            });
        }

        let d = &raw.dmarc;
        let dmarc = Dmarc {
            enforce: d.enforce,
            quarantine_action: check!(
                "dmarc.quarantine_action",
                match d.quarantine_action.as_str() {
                    "hold" => Ok(QuarantineAction::Hold),
                    "header" => Ok(QuarantineAction::Header),
                    "accept" => Ok(QuarantineAction::Accept),
                    q => Err(format!("expected hold, header or accept, found {q:?}")),
                },
                QuarantineAction::Hold
            ),
            multiple_from: check!(
                "dmarc.multiple_from",
                match d.multiple_from.as_str() {
                    "strict" => Ok(MultipleFrom::Strict),
                    "first" => Ok(MultipleFrom::First),
                    m => Err(format!("expected strict or first, found {m:?}")),
                },
                MultipleFrom::Strict
            ),
            never_reject: check!(
                "dmarc.never_reject",
                parse_nets(&d.never_reject),
                Vec::new()
            ),
            never_reject_authenticated: d.never_reject_authenticated,
            on_unverifiable: check!(
                "dmarc.on_unverifiable",
                match d.on_unverifiable.as_str() {
                    "tempfail" => Ok(FailAction::Tempfail),
                    "reject" => Ok(FailAction::Reject),
                    v => Err(format!("expected tempfail or reject, found {v:?}")),
                },
                FailAction::Tempfail
            ),
        };

        let n = &raw.dns;
        let dns = Dns {
            nameservers: check!(
                "dns.nameservers",
                n.nameservers
                    .iter()
                    .map(|s| parse_nameserver(s))
                    .collect::<Result<Vec<_>, _>>(),
                Vec::new()
            ),
            timeout: check!(
                "dns.timeout",
                parse_duration(&n.timeout),
                Duration::from_secs(5)
            ),
            attempts: n.attempts.max(1),
            cache_size: n.cache_size,
        };

        let metrics_listen = raw.metrics.listen.as_ref().map(|l| {
            check!(
                "metrics.listen",
                l.parse::<std::net::SocketAddr>()
                    .map_err(|_| format!("expected IP:PORT like \"127.0.0.1:9101\", found {l:?}")),
                std::net::SocketAddr::from(([127, 0, 0, 1], 0))
            )
        });
        let reports = parse_reports(&raw.reports, path, base, &mut errors);
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Config {
            path: path.to_path_buf(),
            socket,
            socket_mode,
            authserv_id,
            host_name,
            sign,
            verify_enabled,
            log_level: raw.log_level,
            max_connections: raw.max_connections,
            threads: raw.threads,
            connection_timeout,
            shutdown_timeout,
            on_internal_error,
            limits,
            signing,
            verify,
            dmarc,
            dns,
            metrics_listen,
            reports,
        })
    }
}

fn parse_reports(
    r: &raw::RawReports,
    path: &Path,
    base: &Path,
    errors: &mut Vec<ConfigError>,
) -> Reports {
    let mut err = |key: &'static str, msg: String| {
        errors.push(ConfigError::Value {
            path: path.to_path_buf(),
            key,
            msg,
        })
    };
    let resolve = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let store = r.store.as_deref().map(|s| {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            StoreSpec::Postgres(s.to_string())
        } else {
            StoreSpec::Sqlite(resolve(s))
        }
    });
    let org_name = r.org_name.clone().unwrap_or_default();
    let email = r.email.clone().unwrap_or_default();
    if store.is_some() {
        if org_name.trim().is_empty() {
            err(
                "reports.org_name",
                "required when reports.store is set".into(),
            );
        }
        match email.rsplit_once('@') {
            Some((l, d))
                if !l.is_empty() && d.contains('.') && !email.contains(char::is_whitespace) => {}
            _ => err(
                "reports.email",
                format!("expected an address like dmarc-reports@example.net, found {email:?}"),
            ),
        }
    }
    let daily = match r.schedule.as_str() {
        "off" => false,
        "daily" => true,
        s => {
            err(
                "reports.schedule",
                format!("expected off or daily, found {s:?}"),
            );
            false
        }
    };
    let tls = match r.smtp_tls.as_str() {
        "none" => SmtpTls::None,
        "opportunistic" => SmtpTls::Opportunistic,
        "required" => SmtpTls::Required,
        s => {
            err(
                "reports.smtp_tls",
                format!("expected none, opportunistic or required, found {s:?}"),
            );
            SmtpTls::Opportunistic
        }
    };
    let auth = match (&r.smtp_user, &r.smtp_password_file) {
        (Some(u), Some(p)) => Some((u.clone(), resolve(p))),
        (None, None) => None,
        _ => {
            err(
                "reports.smtp_user",
                "smtp_user and smtp_password_file must be set together".into(),
            );
            None
        }
    };
    let transport = match r.transport.as_str() {
        "smtp" => Transport::Smtp {
            host: r.smtp_host.clone(),
            port: r.smtp_port,
            tls,
            ca_file: r.smtp_ca_file.as_deref().map(resolve),
            auth,
        },
        "sendmail" => Transport::Sendmail(PathBuf::from(&r.sendmail)),
        t => {
            err(
                "reports.transport",
                format!("expected smtp or sendmail, found {t:?}"),
            );
            Transport::Sendmail(PathBuf::from(&r.sendmail))
        }
    };
    let max_size = parse_size(&r.max_size).unwrap_or_else(|e| {
        err("reports.max_size", e);
        10 << 20
    });
    let retention = parse_duration(&r.retention).unwrap_or_else(|e| {
        err("reports.retention", e);
        Duration::from_secs(14 * 86400)
    });
    if retention < Duration::from_secs(2 * 86400) {
        err(
            "reports.retention",
            "must be at least 2 days (a day's records are reported the next day)".into(),
        );
    }
    Reports {
        store,
        org_name,
        email,
        extra_contact_info: r.extra_contact_info.clone(),
        daily,
        transport,
        suppress: r
            .suppress
            .iter()
            .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
            .collect(),
        max_size,
        retention,
        max_attempts: r.max_attempts.max(1),
        queue: r.queue.max(1),
        failure_reports: r.failure_reports,
        failure_rate: r.failure_rate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets() {
        assert_eq!(
            SocketSpec::parse("inet:8891@127.0.0.1").unwrap(),
            SocketSpec::Inet {
                host: "127.0.0.1".into(),
                port: 8891
            }
        );
        assert_eq!(
            SocketSpec::parse("inet:127.0.0.1:8891").unwrap(),
            SocketSpec::Inet {
                host: "127.0.0.1".into(),
                port: 8891
            }
        );
        assert_eq!(
            SocketSpec::parse("inet6:8891@[::1]").unwrap(),
            SocketSpec::Inet {
                host: "::1".into(),
                port: 8891
            }
        );
        assert_eq!(
            SocketSpec::parse("unix:/run/mailseal/m.sock").unwrap(),
            SocketSpec::Unix("/run/mailseal/m.sock".into())
        );
        assert!(SocketSpec::parse("unix:relative").is_err());
        assert!(SocketSpec::parse("inet:99999@localhost").is_err());
        assert!(SocketSpec::parse("tcp:1@x").is_err());
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("10 MiB").unwrap(), 10 << 20);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert!(parse_size("5T").is_err());
        assert!(parse_size("x").is_err());
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn empty_config_is_valid() {
        let c = Config::from_toml(Path::new("/x/mailseal.toml"), "").unwrap();
        assert!(c.sign && c.verify_enabled);
        assert_eq!(
            c.socket,
            SocketSpec::Inet {
                host: "127.0.0.1".into(),
                port: 8891
            }
        );
        assert_eq!(c.verify.on_dns_error, FailAction::Tempfail);
        assert_eq!(c.threads, 1);
    }

    #[test]
    fn threads_zero_is_one_per_cpu_and_huge_is_refused() {
        let p = Path::new("/x/m.toml");
        assert_eq!(Config::from_toml(p, "threads = 0\n").unwrap().threads, 0);
        assert_eq!(
            Config::from_toml(p, "threads = 256\n").unwrap().threads,
            256
        );
        let e = Config::from_toml(p, "threads = 100000\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("threads") && e.contains("at most 256"), "{e}");
    }

    #[test]
    fn errors_are_collected_and_named() {
        let e = Config::from_toml(
            Path::new("/x/m.toml"),
            "mode = \"q\"\nsocket = \"tcp:1\"\n[signing]\ncanonicalization = \"loose\"\n",
        )
        .unwrap_err();
        let text = e.to_string();
        assert_eq!(e.0.len(), 3, "{text}");
        assert!(text.contains("/x/m.toml: mode:"), "{text}");
        assert!(text.contains("signing.canonicalization"), "{text}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e =
            Config::from_toml(Path::new("/x/m.toml"), "[signing]\nkeytable = \"x\"\n").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("/x/m.toml") && text.contains("keytable"),
            "{text}"
        );
        assert!(text.contains("line 2"), "{text}");
    }

    #[test]
    fn internal_hosts_match_canonical_v4() {
        let c = Config::from_toml(
            Path::new("/x/m.toml"),
            "[signing]\ninternal_hosts = [\"10.0.0.0/8\"]\n",
        )
        .unwrap();
        assert!(c.signing.is_internal("10.1.2.3".parse().unwrap()));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert!(c.signing.is_internal(mapped.to_canonical()));
        assert!(!c.signing.is_internal("192.0.2.1".parse().unwrap()));
    }
}
