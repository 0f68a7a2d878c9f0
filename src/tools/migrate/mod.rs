//! `mailseal migrate`: an OpenDKIM (and OpenDMARC) setup read, and written out as a mailseal
//! configuration with the same behaviour: `mailseal.toml`, the tables and host lists it names,
//! and a systemd drop-in when the keys need a group. Every setting found is listed with what
//! it became, or why it has none and what to do instead.
//!
//! Nothing of the old setup is changed: the files are read, the keys stay where they are, the
//! output goes to a new directory (never over an existing file), and without one nothing is
//! written at all.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use toml::Value;

use crate::config::SocketSpec;

mod opendkim;
mod opendmarc;

use opendkim::opendkim;
use opendmarc::opendmarc;

/// Where the unix socket goes: inside Postfix's chroot, as the README recommends.
const SPOOL_SOCKET: &str = "/var/spool/postfix/mailseal/mailseal.sock";
/// The drop-in's name inside `mailseal.service.d/`.
const DROP_IN: &str = "mailseal.service.d/migrate.conf";

/// What to read, and where to write.
#[derive(Debug, Clone)]
pub struct Options {
    pub opendkim: PathBuf,
    pub opendmarc: Option<PathBuf>,
    /// Where Debian's `opendkim` / `opendmarc` defaults files are (`/etc/default`).
    pub defaults_dir: PathBuf,
    pub out: Option<PathBuf>,
}

/// One setting as written in a configuration file.
#[derive(Debug, Clone)]
struct Setting {
    /// `opendkim.conf:12`
    origin: String,
    name: String,
    value: String,
}

/// The result: what to write, and the table that explains it.
#[derive(Debug, Default)]
pub struct Plan {
    settings: toml::Table,
    /// Lines written after the settings, as comments (settings the admin must complete).
    comments: Vec<String>,
    /// Setting → what it became.
    rows: Vec<(String, String)>,
    /// Files to write beside mailseal.toml: (relative name, contents).
    files: Vec<(String, String)>,
    /// What the admin does next.
    steps: Vec<String>,
}

impl Plan {
    fn row(&mut self, s: &Setting, became: impl Into<String>) {
        self.rows.push((
            format!("{} {} {}", s.origin, s.name, s.value),
            became.into(),
        ));
    }

    fn set(&mut self, key: &str, value: impl Into<Value>) -> String {
        let value = value.into();
        let shown = format!("{key} = {value}");
        let mut table = &mut self.settings;
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().unwrap_or(key);
        for p in parts {
            table = table
                .entry(p)
                .or_insert_with(|| Value::Table(Default::default()))
                .as_table_mut()
                .expect("a table");
        }
        table.insert(last.to_string(), value);
        shown
    }

    fn file(&mut self, name: &str, contents: String) {
        self.files.push((name.to_string(), contents));
    }

    /// The mapping table and the next steps, as printed.
    pub fn report(&self) -> String {
        let width = self
            .rows
            .iter()
            .map(|(from, _)| from.chars().count())
            .max()
            .unwrap_or(0)
            .min(60);
        let mut out = String::new();
        for (from, to) in &self.rows {
            let _ = writeln!(out, "{from:<width$}  →  {to}");
        }
        if !self.steps.is_empty() {
            out.push_str("\nNext:\n");
            for (i, step) in self.steps.iter().enumerate() {
                let _ = writeln!(out, "{:>2}. {step}", i + 1);
            }
        }
        out
    }

    /// mailseal.toml as written.
    pub fn config_text(&self, sources: &str) -> String {
        let mut out = format!(
            "# Written by `mailseal migrate` from {sources}.\n# Every key not set here has \
             its default: see mailseal.toml(5).\n\n"
        );
        out.push_str(&toml::to_string(&self.settings).unwrap_or_default());
        for c in &self.comments {
            out.push_str(c);
            out.push('\n');
        }
        out
    }
}

/// Read the setup and plan the migration.
pub fn plan(opts: &Options) -> Result<Plan, String> {
    let mut plan = Plan::default();
    let dkim = read_conf(&opts.opendkim)?;
    let dkim_defaults = read_defaults(&opts.defaults_dir.join("opendkim"));
    let dmarc = match &opts.opendmarc {
        Some(p) => Some(read_conf(p)?),
        None => None,
    };
    let dmarc_defaults = read_defaults(&opts.defaults_dir.join("opendmarc"));
    let mut socket = None;
    let mut umask = None;
    let mut groups = BTreeSet::new();
    opendkim(&mut plan, &dkim, &mut socket, &mut umask, &mut groups)?;
    debian_socket(&mut plan, &dkim_defaults, &mut socket);
    let mut dmarc_socket = None;
    if let Some(dmarc) = &dmarc {
        opendmarc(&mut plan, dmarc, &mut dmarc_socket, &mut umask)?;
        debian_socket(&mut plan, &dmarc_defaults, &mut dmarc_socket);
    } else {
        plan.rows.push((
            "(no OpenDMARC configuration given)".into(),
            "DMARC is still checked and recorded in Authentication-Results, not enforced \
             (dmarc.enforce = false)"
                .into(),
        ));
    }
    socket_plan(&mut plan, socket, dmarc_socket, umask);
    let spool_socket = plan
        .settings
        .get("socket")
        .and_then(Value::as_str)
        .is_some_and(|s| s.contains("/var/spool/postfix/"));
    if !groups.is_empty() || spool_socket {
        let mut drop_in = format!(
            "# Written by `mailseal migrate`: install as /etc/systemd/system/{DROP_IN}\n[Service]\n"
        );
        if !groups.is_empty() {
            let list: Vec<&str> = groups.iter().map(String::as_str).collect();
            let _ = writeln!(drop_in, "SupplementaryGroups={}", list.join(" "));
        }
        if spool_socket {
            drop_in.push_str("ReadWritePaths=/var/spool/postfix/mailseal\n");
        }
        plan.file(DROP_IN, drop_in);
        plan.steps.push(format!(
            "install the drop-in (from the output directory): install -D -m 0644 {DROP_IN} /etc/systemd/system/{DROP_IN} && systemctl daemon-reload"
        ));
    }
    plan.steps.push(
        "copy mailseal.toml and the tables to /etc/mailseal (owner root, group mailseal, mode \
         0640) and run `mailseal check-config`, then `mailseal testkey`"
            .into(),
    );
    plan.steps.push(
        "systemctl disable --now opendkim opendmarc; systemctl restart mailseal; postfix reload"
            .into(),
    );
    Ok(plan)
}

/// Debian's init script and unit give the daemon the defaults file's SOCKET=, which wins over
/// the configuration's Socket.
fn debian_socket(plan: &mut Plan, defaults: &[(String, String)], socket: &mut Option<Setting>) {
    let Some((origin, value)) = defaults.iter().find(|(k, _)| k.ends_with(" SOCKET")) else {
        return;
    };
    let origin = origin.trim_end_matches(" SOCKET").to_string();
    if let Some(old) = socket.as_ref() {
        plan.row(
            old,
            format!("overridden by {origin} SOCKET= (Debian passes it to the daemon)"),
        );
    }
    *socket = Some(Setting {
        origin,
        name: "SOCKET".into(),
        value: value.clone(),
    });
}

/// Write the plan's files into `dir`, refusing to overwrite anything.
pub fn write(plan: &Plan, dir: &Path, sources: &str) -> Result<Vec<PathBuf>, String> {
    let mut files = vec![("mailseal.toml".to_string(), plan.config_text(sources))];
    files.extend(plan.files.iter().cloned());
    for (name, _) in &files {
        let path = dir.join(name);
        if path.exists() {
            return Err(format!(
                "{} exists; migrate never overwrites a file (choose another --out)",
                path.display()
            ));
        }
    }
    let mut written = Vec::new();
    for (name, contents) in files {
        let path = dir.join(&name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        use std::io::Write;
        f.write_all(contents.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        // The tables may hold keys (inline KeyTable rows): as private as a key file may be.
        let mode = if name.ends_with(".conf") {
            0o644
        } else {
            0o640
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Read an opendkim.conf / opendmarc.conf: `Name value`, `#` comments.
fn read_conf(path: &Path) -> Result<Vec<Setting>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file = path.file_name().map_or_else(
        || path.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    );
    Ok(text
        .lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let line = line.split('#').next().unwrap_or("").trim();
            let (name, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            (!name.is_empty()).then(|| Setting {
                origin: format!("{file}:{}", i + 1),
                name: name.to_string(),
                value: value.trim().to_string(),
            })
        })
        .collect())
}

/// Read a Debian defaults file (`VAR=value`, shell style, `$VAR` and `${VAR}` expanded from
/// the lines before). Returns ("file:line VAR", value); nothing when there is no such file.
fn read_defaults(path: &Path) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut vars: Vec<(String, String)> = vec![("NAME".into(), name.clone())];
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((var, value)) = line.split_once('=') else {
            continue;
        };
        let var = var.trim().trim_start_matches("export ").trim();
        if var.is_empty() || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        let mut value = value.trim().trim_matches(['"', '\'']).to_string();
        for (k, v) in vars.iter().rev() {
            value = value
                .replace(&format!("${{{k}}}"), v)
                .replace(&format!("${k}"), v);
        }
        vars.push((var.to_string(), value.clone()));
        out.push((
            format!("/etc/default/{name}:{} {var}", i + 1),
            value.clone(),
        ));
    }
    out
}

fn truthy(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" | "y" | "t" | "1" | "on" => Some(true),
        "no" | "false" | "n" | "f" | "0" | "off" => Some(false),
        _ => None,
    }
}

/// A list value: commas and/or whitespace.
fn list(v: &str) -> Vec<String> {
    v.split([',', ' ', '\t'])
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

/// An OpenDKIM dataset (opendkim.conf(5) "DATA SETS").
#[derive(Debug)]
enum Dataset {
    /// A flat file; `regex` for `refile:`.
    File { path: PathBuf, regex: bool },
    /// Values written inline (`csl:` or a comma list).
    List(Vec<String>),
    /// A database or service mailseal does not read (`db:`, `dsn:`, `ldap:`, …).
    Other(String),
}

fn dataset(v: &str) -> Dataset {
    if let Some(p) = v.strip_prefix("refile:") {
        return Dataset::File {
            path: p.into(),
            regex: true,
        };
    }
    if let Some(p) = v.strip_prefix("file:") {
        return Dataset::File {
            path: p.into(),
            regex: false,
        };
    }
    if let Some(l) = v.strip_prefix("csl:") {
        return Dataset::List(list(l));
    }
    if v.starts_with('/') {
        return Dataset::File {
            path: v.into(),
            regex: false,
        };
    }
    match v.split_once(':') {
        Some((scheme, _))
            if [
                "db", "dsn", "ldap", "ldaps", "ldapi", "lua", "memcache", "redis", "mdb", "erlang",
                "socket", "repute",
            ]
            .contains(&scheme) =>
        {
            Dataset::Other(scheme.to_string())
        }
        _ => Dataset::List(list(v)),
    }
}

/// A host list dataset as a mailseal host list, its file copied as `name`.
fn host_list(plan: &mut Plan, s: &Setting, key: &str, name: &str) {
    match dataset(&s.value) {
        Dataset::File { path, .. } => match std::fs::read_to_string(&path) {
            Ok(text) => {
                plan.file(name, text);
                let shown = plan.set(key, vec![format!("file:{name}")]);
                plan.row(s, format!("{shown} (copied from {})", path.display()));
            }
            Err(e) => plan.row(
                s,
                format!("not migrated: cannot read {}: {e}", path.display()),
            ),
        },
        Dataset::List(entries) => {
            let shown = plan.set(key, entries);
            plan.row(s, shown);
        }
        Dataset::Other(scheme) => plan.row(
            s,
            format!("not migrated: mailseal reads files, not {scheme}: datasets; export the list to a file and set {key} = [\"file:/path\"]"),
        ),
    }
}

/// Copy a KeyTable or SigningTable dataset; returns the configured value (`refile:name`).
fn copy_table(plan: &mut Plan, s: &Setting, name: &str) -> Option<(String, String)> {
    match dataset(&s.value) {
        Dataset::File { path, regex } => match std::fs::read_to_string(&path) {
            Ok(text) => {
                plan.file(name, text.clone());
                let prefix = if regex { "refile:" } else { "file:" };
                Some((format!("{prefix}{name}"), text))
            }
            Err(e) => {
                plan.row(
                    s,
                    format!("not migrated: cannot read {}: {e}", path.display()),
                );
                None
            }
        },
        Dataset::List(_) | Dataset::Other(_) => {
            plan.row(
                s,
                "not migrated: mailseal reads this table from a file; export it to one (one `key value` row a line)",
            );
            None
        }
    }
}

/// The one socket: OpenDKIM's (or OpenDMARC's when OpenDKIM has none).
fn socket_plan(
    plan: &mut Plan,
    dkim: Option<Setting>,
    dmarc: Option<Setting>,
    umask: Option<Setting>,
) {
    let mut milter = None;
    match dkim.as_ref().or(dmarc.as_ref()) {
        Some(s) => match SocketSpec::parse(&s.value) {
            Ok(SocketSpec::Inet { host, port }) => {
                // inet6: as written: mailseal reads OpenDKIM's forms.
                let shown = plan.set("socket", s.value.clone());
                plan.row(
                    s,
                    format!("{shown} (the same address: only Postfix's second milter goes)"),
                );
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host
                };
                milter = Some(format!("inet:{host}:{port}"));
            }
            Ok(SocketSpec::Unix(path)) => {
                let shown = plan.set("socket", format!("unix:{SPOOL_SOCKET}"));
                plan.row(
                    s,
                    format!(
                        "{shown}: mailseal's own socket inside Postfix's chroot ({} belongs to the old daemon)",
                        path.display()
                    ),
                );
                milter = Some("unix:mailseal/mailseal.sock".into());
                plan.steps.push(
                    "install -d -o mailseal -g mailseal -m 0750 /var/spool/postfix/mailseal && adduser postfix mailseal".into(),
                );
            }
            Err(e) => plan.row(s, format!("not migrated: {e}")),
        },
        None => plan.rows.push((
            "(no Socket)".into(),
            "socket keeps mailseal's default, inet:8891@127.0.0.1".into(),
        )),
    }
    if let (Some(d), Some(_)) = (&dmarc, &dkim) {
        plan.row(d, "one milter now: OpenDMARC's socket is no longer needed");
    }
    if let Some(u) = umask {
        match u32::from_str_radix(u.value.trim_start_matches("0o"), 8) {
            Ok(mask) if mask <= 0o777 => {
                let mode = 0o666 & !mask;
                let shown = plan.set("socket_mode", format!("{mode:04o}"));
                plan.row(&u, format!("{shown} (the unix socket's mode)"));
            }
            _ => plan.row(&u, "not migrated: not an octal umask"),
        }
    }
    let milter = milter.unwrap_or_else(|| "inet:127.0.0.1:8891".into());
    plan.steps.push(format!(
        "Postfix main.cf: smtpd_milters = {milter} and non_smtpd_milters = {milter}, replacing the OpenDKIM and OpenDMARC entries (keep milter_default_action = tempfail)"
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datasets() {
        assert!(matches!(
            dataset("refile:/etc/x"),
            Dataset::File { regex: true, .. }
        ));
        assert!(matches!(
            dataset("file:/etc/x"),
            Dataset::File { regex: false, .. }
        ));
        assert!(matches!(
            dataset("/etc/x"),
            Dataset::File { regex: false, .. }
        ));
        assert!(matches!(dataset("csl:a,b"), Dataset::List(l) if l == ["a", "b"]));
        assert!(matches!(dataset("127.0.0.1, ::1"), Dataset::List(l) if l.len() == 2));
        assert!(matches!(dataset("dsn:mysql://u@h/db"), Dataset::Other(_)));
    }

    #[test]
    fn truthiness() {
        assert_eq!(truthy("Yes"), Some(true));
        assert_eq!(truthy("false"), Some(false));
        assert_eq!(truthy("maybe"), None);
    }
}
