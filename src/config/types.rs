//! The value types of the configuration file, each parsed where serde reads it, so a bad
//! value is reported with its file and line by the TOML parser.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use mail_auth::dkim::Canonicalization;
use serde::de::{Deserializer, Error as _};
use serde::Deserialize;

/// Why a value written in the configuration (or a table) is not acceptable, in words for the
/// admin; reported with the file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

impl From<String> for InvalidValue {
    fn from(s: String) -> Self {
        InvalidValue(s)
    }
}

impl From<&str> for InvalidValue {
    fn from(s: &str) -> Self {
        InvalidValue(s.to_string())
    }
}

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
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        if let Some(path) = s.strip_prefix("unix:").or_else(|| s.strip_prefix("local:")) {
            if !path.starts_with('/') {
                return Err(format!("unix socket path must be absolute: {path:?}").into());
            }
            return Ok(SocketSpec::Unix(PathBuf::from(path)));
        }
        let v6 = s.starts_with("inet6:");
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
        } else if v6 {
            // A port alone: every interface, as opendkim.conf(5) says.
            ("::", rest)
        } else {
            ("0.0.0.0", rest)
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port
            .parse()
            .map_err(|_| format!("invalid port {port:?} in socket {s:?}"))?;
        if host.is_empty() {
            return Err(format!("missing host in socket {s:?}").into());
        }
        Ok(SocketSpec::Inet {
            host: host.to_string(),
            port,
        })
    }
}

impl<'de> Deserialize<'de> for SocketSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SocketSpec::parse(&String::deserialize(d)?).map_err(D::Error::custom)
    }
}

/// What to answer when something fails. Each key allows a subset, named in its docs and
/// checked where it is read ([`tempfail_or_accept`], [`tempfail_or_reject`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailAction {
    Tempfail,
    Accept,
    Reject,
}

/// One of `allowed`, by name.
fn fail_action<'de, D: Deserializer<'de>>(
    d: D,
    allowed: &[(&str, FailAction)],
) -> Result<FailAction, D::Error> {
    let s = String::deserialize(d)?;
    allowed
        .iter()
        .find(|(name, _)| *name == s)
        .map(|(_, a)| *a)
        .ok_or_else(|| {
            let names: Vec<String> = allowed.iter().map(|(n, _)| format!("{n:?}")).collect();
            D::Error::custom(format!("expected {}, found {s:?}", names.join(" or ")))
        })
}

/// A [`FailAction`] that may not be `reject`.
pub mod tempfail_or_accept {
    use super::*;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<FailAction, D::Error> {
        fail_action(
            d,
            &[
                ("tempfail", FailAction::Tempfail),
                ("accept", FailAction::Accept),
            ],
        )
    }
}

/// A [`FailAction`] that may not be `accept` (fail closed).
pub mod tempfail_or_reject {
    use super::*;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<FailAction, D::Error> {
        fail_action(
            d,
            &[
                ("tempfail", FailAction::Tempfail),
                ("reject", FailAction::Reject),
            ],
        )
    }
}

/// What the milter does: sign, verify, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Mode {
    #[serde(rename = "s")]
    Sign,
    #[serde(rename = "v")]
    Verify,
    #[serde(rename = "sv", alias = "vs")]
    Both,
}

impl Mode {
    pub fn signs(self) -> bool {
        matches!(self, Mode::Sign | Mode::Both)
    }

    pub fn verifies(self) -> bool {
        matches!(self, Mode::Verify | Mode::Both)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuarantineAction {
    /// Ask Postfix to put the message on hold (SMFIR_QUARANTINE).
    Hold,
    /// Only record the verdict in the Authentication-Results header.
    Header,
    Accept,
}

/// How a message whose From header has several addresses (or several From headers) is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MultipleFrom {
    /// `dmarc=permerror`, and with `enforce` the message is rejected (RFC 9989 §4.5 advice).
    Strict,
    /// Evaluate against the first From domain.
    First,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Off,
    Daily,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    Smtp,
    Sendmail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain SMTP.
    None,
    /// STARTTLS when the relay offers it, its certificate not checked (RFC 7435).
    Opportunistic,
    /// STARTTLS or give up; the certificate not checked ("required" is the old name).
    #[serde(alias = "required")]
    Encrypt,
    /// STARTTLS or give up; the certificate checked against smtp_ca_file (or the system's
    /// roots) and smtp_host.
    Verify,
}

/// Header and body canonicalization, written `relaxed/simple`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canon {
    pub header: Canonicalization,
    pub body: Canonicalization,
}

impl<'de> Deserialize<'de> for Canon {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let one = |c: &str| match c {
            "relaxed" => Ok(Canonicalization::Relaxed),
            "simple" => Ok(Canonicalization::Simple),
            _ => Err(D::Error::custom(format!(
                "invalid canonicalization {s:?}: use relaxed or simple, e.g. relaxed/simple"
            ))),
        };
        let (h, b) = s.split_once('/').unwrap_or((&s, "simple"));
        Ok(Canon {
            header: one(h)?,
            body: one(b)?,
        })
    }
}

/// Parse "5s", "250ms", "2m", "14d".
pub fn parse_duration(s: &str) -> Result<Duration, InvalidValue> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}").into())
}

/// Parse "1048576", "64K", "10M", "1G", "10MiB" (binary units).
pub fn parse_size(s: &str) -> Result<usize, InvalidValue> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: usize = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("invalid size unit in {s:?} (use K, M or G)").into()),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large").into())
}

/// A duration written as text: `#[serde(with = "duration")]`.
pub mod duration {
    use super::*;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse_duration(&String::deserialize(d)?).map_err(D::Error::custom)
    }
}

/// An optional duration written as text.
pub mod opt_duration {
    use super::*;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}

/// A size written as text ("1M") or a number of bytes: `#[serde(with = "size")]`.
pub mod size {
    use super::*;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(usize),
        Text(String),
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(n),
            Raw::Text(s) => parse_size(&s).map_err(D::Error::custom),
        }
    }
}

/// A file mode written in octal ("0660").
pub mod octal {
    use super::*;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let s = String::deserialize(d)?;
        u32::from_str_radix(&s, 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                D::Error::custom(format!("expected an octal mode like \"0660\", found {s:?}"))
            })
    }
}

/// At least 1.
pub mod positive {
    use super::*;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        match usize::deserialize(d)? {
            0 => Err(D::Error::custom("must be at least 1")),
            n => Ok(n),
        }
    }
}

/// Most runtime threads `threads` may ask for: beyond it is a typo, not a tuning.
pub const MAX_THREADS: usize = 256;

/// A thread count: 0 (one per CPU) to [`MAX_THREADS`].
pub mod threads {
    use super::*;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        let n = usize::deserialize(d)?;
        if n > MAX_THREADS {
            return Err(D::Error::custom(format!(
                "{n} threads: at most {MAX_THREADS} (0 = one per CPU, 1 = the default)"
            )));
        }
        Ok(n)
    }
}

/// A tracing filter ("info", "mailseal=debug").
pub mod log_filter {
    use super::*;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let s = String::deserialize(d)?;
        tracing_subscriber::EnvFilter::try_new(&s)
            .map(|_| s.clone())
            .map_err(|_| D::Error::custom(format!("invalid log level {s:?}")))
    }
}

/// A host list as OpenDKIM reads one (InternalHosts, TrustedHosts): addresses and CIDRs,
/// host names (resolved through the system resolver when the configuration is loaded or
/// reloaded; one that does not resolve is a warning), `!` exclusions (an excluded address never
/// matches), and `file:`/`refile:` files of such entries, one a line, `#` comments. Files and
/// names are expanded by [`HostList::expand`] once the configuration's directory is known.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HostList {
    /// The entries as written.
    pub entries: Vec<String>,
    include: Vec<IpNet>,
    exclude: Vec<IpNet>,
}

impl HostList {
    /// Does the list hold `ip` (and no exclusion does)?
    pub fn contains(&self, ip: IpAddr) -> bool {
        !self.exclude.iter().any(|n| n.contains(&ip))
            && self.include.iter().any(|n| n.contains(&ip))
    }

    /// Read the files and resolve the names. `resolve_path` makes a file name absolute;
    /// problems that leave the list usable are warnings, the others errors.
    pub fn expand(
        &mut self,
        resolve_path: impl Fn(&std::path::Path) -> PathBuf,
        warnings: &mut Vec<String>,
    ) -> Result<(), String> {
        self.include.clear();
        self.exclude.clear();
        let mut pending: Vec<String> = Vec::new();
        for e in &self.entries {
            if let Some(path) = e
                .strip_prefix("refile:")
                .or_else(|| e.strip_prefix("file:"))
            {
                let path = resolve_path(std::path::Path::new(path));
                let text = std::fs::read_to_string(&path)
                    .map_err(|err| format!("{}: {err}", path.display()))?;
                pending.extend(
                    text.lines()
                        .map(|l| l.split('#').next().unwrap_or("").trim())
                        .filter(|l| !l.is_empty())
                        .map(str::to_string),
                );
            } else if let Some(list) = e.strip_prefix("csl:") {
                pending.extend(list.split(',').map(|x| x.trim().to_string()));
            } else {
                pending.push(e.clone());
            }
        }
        for entry in pending.iter().filter(|x| !x.is_empty()) {
            let (negated, item) = match entry.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, entry.as_str()),
            };
            let nets = match parse_net(item) {
                Some(n) => vec![n],
                // OpenDKIM also matches a client's reverse name against `*.domain` and
                // `.domain` entries; a reverse name is the client's to choose, so mailseal
                // trusts addresses only.
                None if item.starts_with(['*', '.']) => {
                    warnings.push(format!(
                        "host list entry {item:?} is a host name pattern: mailseal matches \
                         client addresses only, so it matches nothing; list the addresses"
                    ));
                    Vec::new()
                }
                None if is_host_name(item) => {
                    use std::net::ToSocketAddrs;
                    match (item, 0).to_socket_addrs() {
                        Ok(addrs) => addrs.map(|a| IpNet::from(a.ip())).collect(),
                        Err(err) => {
                            warnings.push(format!(
                                "host list entry {item:?} does not resolve ({err}); it matches nothing"
                            ));
                            Vec::new()
                        }
                    }
                }
                None => return Err(format!("invalid address, CIDR or host name {item:?}")),
            };
            if negated {
                self.exclude.extend(nets);
            } else {
                self.include.extend(nets);
            }
        }
        Ok(())
    }
}

fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// A host name to resolve (not an address: it has a letter).
fn is_host_name(s: &str) -> bool {
    s.is_ascii()
        && crate::message::normalize_domain(s).is_ok()
        && s.bytes().any(|b| b.is_ascii_alphabetic())
}

impl<'de> Deserialize<'de> for HostList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entries = Vec::<String>::deserialize(d)?;
        let mut list = HostList {
            entries,
            ..HostList::default()
        };
        // Inline addresses work at once; files and names wait for expand().
        for e in &list.entries {
            let (neg, item) = match e.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, e.as_str()),
            };
            if let Some(n) = parse_net(item) {
                if neg {
                    list.exclude.push(n);
                } else {
                    list.include.push(n);
                }
            } else if !(item.starts_with("file:")
                || item.starts_with("refile:")
                || item.starts_with(['*', '.'])
                || item.starts_with("csl:")
                || is_host_name(item))
            {
                return Err(D::Error::custom(format!(
                    "invalid address, CIDR, host name or file: entry {e:?}"
                )));
            }
        }
        Ok(list)
    }
}

/// An upstream relay whose SPF result is taken (`[verify] trusted_relays`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedRelay {
    /// The relay's client addresses, entries as in `internal_hosts`.
    pub hosts: HostList,
    /// The authserv-ids the relay writes into Authentication-Results.
    pub authserv_ids: Vec<String>,
}

/// DNS servers ("IP" or "IP:PORT", port 53 by default).
pub mod nameservers {
    use super::*;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| {
                s.parse::<SocketAddr>().or_else(|_| {
                    s.trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 53))
                        .map_err(|_| {
                            D::Error::custom(format!(
                                "invalid nameserver {s:?}: expected IP or IP:PORT"
                            ))
                        })
                })
            })
            .collect()
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
        assert_eq!(
            SocketSpec::parse("inet:8891").unwrap().to_string(),
            "inet:8891@0.0.0.0",
            "a port alone means every interface (opendkim.conf(5))"
        );
        assert_eq!(
            SocketSpec::parse("inet6:8891").unwrap().to_string(),
            "inet:8891@::"
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
}
