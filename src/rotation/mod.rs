//! DKIM key rotation: the state of every key a rotation made, kept in `[keys] dir/state.json`,
//! and the steps between its states.
//!
//! Per KeyTable row (a domain and an algorithm): `pending` (generated, its record not yet
//! seen) → `published` (the record is in DNS and matches the key) → `active` (signing; the
//! key it replaces becomes `retiring`) → `retiring` (still published, no longer used) →
//! `revoked` (its record is to be replaced by `p=` empty, RFC 6376 §3.6.1) → removed. A key
//! never signs before its record was seen and `activate_after` has passed; a replaced key is
//! revoked only after `retire_after`. A KeyTable row with no state is its own active key, so
//! installs without rotation sign as before.
//!
//! The state only overrides a row's selector and key file ([`apply`], used when any
//! configuration is loaded, so check-config, explain, sign and the daemon agree); the tables
//! stay the admin's.
//!
//! With `[keys] store` the state is shared by several signing hosts ([`shared`]); state.json
//! is then each host's copy, and a new key waits until every host holds its file.

pub mod shared;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::keys::{load_key, KeyKind};
use crate::config::tables::SigningTables;
use crate::config::{Config, ConfigError, Keys};

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Published,
    Active,
    Retiring,
    Revoked,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Published => "published",
            State::Active => "active",
            State::Retiring => "retiring",
            State::Revoked => "revoked",
        }
    }
}

/// One key a rotation knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The KeyTable row (key name) this key serves.
    pub row: String,
    pub domain: String,
    pub selector: String,
    /// "rsa" or "ed25519".
    pub algorithm: String,
    pub file: PathBuf,
    pub state: State,
    /// Unix time it entered its state.
    pub since: i64,
    /// Unix time it was made (or first seen in the KeyTable).
    pub created: i64,
    /// Made by rotation (its file is deleted when it is removed); false for a KeyTable's own
    /// key, whose file stays the admin's.
    pub generated: bool,
    /// The public key as published (`p=`, base64): which key a host's copy of the file must
    /// be. Empty in states written before it was kept.
    #[serde(default)]
    pub public: String,
}

impl Entry {
    /// Its key file: a generated key's is relative to `[keys] dir` (each host has its own),
    /// a KeyTable key's absolute.
    pub fn path(&self, dir: &Path) -> PathBuf {
        dir.join(&self.file)
    }

    /// Whether the key file at `dir` is this key (loads, and its public key is the one kept).
    pub fn held(&self, dir: &Path) -> bool {
        use base64::Engine;
        load_key(&self.path(dir)).is_ok_and(|k| {
            self.public.is_empty()
                || base64::engine::general_purpose::STANDARD.encode(&k.public) == self.public
        })
    }
}

/// The state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    pub keys: Vec<Entry>,
}

pub const STATE_FILE: &str = "state.json";

impl Rotation {
    /// Read `dir/state.json`; none yet is an empty state (not "lost state": the tables are
    /// the starting point).
    ///
    /// A state file that is gone while keys rotation made are still there is an error, never
    /// a silent return to the KeyTable's old keys.
    pub fn load(dir: &Path) -> Result<Rotation, String> {
        let path = dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: not a rotation state file: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match generated_keys(dir) {
                0 => Ok(Rotation::default()),
                n => Err(format!(
                    "{} is missing but {n} key(s) made by rotation are in {}: restore the state \
                     file from a backup (mailseal will not fall back to the KeyTable's keys)",
                    path.display(),
                    dir.display()
                )),
            },
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Write it whole, atomically (a temporary file renamed over the old one).
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
        let text = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The active key of a row, if rotation made one.
    pub fn active(&self, row: &str) -> Option<&Entry> {
        self.keys
            .iter()
            .find(|e| e.row.eq_ignore_ascii_case(row) && e.state == State::Active)
    }

    /// A rotation under way for the row (a key pending or published).
    pub fn in_progress(&self, row: &str) -> Option<&Entry> {
        self.keys.iter().find(|e| {
            e.row.eq_ignore_ascii_case(row) && matches!(e.state, State::Pending | State::Published)
        })
    }
}

/// Key files in the per-domain directories of `dir` (what rotation makes).
fn generated_keys(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|d| d.path().is_dir())
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .filter(|f| f.path().extension().is_some_and(|x| x == "private"))
        .count()
}

/// An exclusive lock on the state (`dir/.lock`, flock): the command line and the daemon never
/// change it at the same time. Released when dropped.
pub struct Lock(#[allow(dead_code)] std::fs::File);

impl Lock {
    pub fn acquire(dir: &Path) -> Result<Lock, String> {
        use std::os::fd::AsRawFd;
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(".lock");
        // Opened read-only (flock needs no more), so that the service can lock a file root
        // made, and root one the service made.
        let file = match std::fs::File::open(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path),
            other => other,
        }
        .map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: flock on a descriptor this File owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!(
                "{}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(Lock(file))
    }
}

/// Make the rows whose rotation has an active key sign with it: its selector and file
/// replace the row's. Errors (an active key that cannot be loaded) are the configuration's.
pub fn apply(keys: &Keys, tables: &mut SigningTables, errors: &mut Vec<ConfigError>) {
    let state = match shared::local_view(keys) {
        Ok(s) => s,
        Err(msg) => {
            errors.push(ConfigError::Table {
                origin: keys.dir.display().to_string(),
                msg,
            });
            return;
        }
    };
    for entry in &mut tables.keys {
        let Some(active) = state.active(&entry.name) else {
            continue;
        };
        let path = active.path(&keys.dir);
        match load_key(&path) {
            Ok(key) => {
                entry.selector = active.selector.clone();
                entry.path = path;
                entry.key = key;
            }
            Err(e) => errors.push(ConfigError::Table {
                origin: format!("{} (rotation)", keys.dir.join(STATE_FILE).display()),
                msg: format!("active key of {:?}: {e}", entry.name),
            }),
        }
    }
}

/// The algorithm word of a key kind.
pub fn algorithm(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Rsa { .. } => "rsa",
        KeyKind::Ed25519 => "ed25519",
    }
}

/// A new selector from the pattern for `domain`: the first {n} not used by any key known.
pub fn next_selector(pattern: &str, alg: &str, now: i64, taken: &[String]) -> String {
    let (y, m, d) = crate::report::civil_from_days(now.div_euclid(86400));
    let base = pattern
        .replace("{a}", &alg[..1])
        .replace("{yyyy}", &format!("{y:04}"))
        .replace("{mm}", &format!("{m:02}"))
        .replace("{dd}", &format!("{d:02}"));
    let letters = "abcdefghijklmnopqrstuvwxyz";
    for n in letters.chars() {
        let s = base.replace("{n}", &n.to_string());
        if !taken.iter().any(|t| t.eq_ignore_ascii_case(&s)) {
            return s;
        }
    }
    format!("{}{}", base.replace("{n}", ""), now)
}

/// One row of `keys status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    pub key_name: String,
    pub domain: String,
    pub selector: String,
    pub algorithm: String,
    pub state: String,
    pub file: PathBuf,
    pub age_days: i64,
    /// The DNS check of the key's record, when one was made.
    pub dns: Option<String>,
    /// What happens next, and when.
    pub next: String,
}

/// Every key: the KeyTable rows' (their own keys unless rotation made another active) and
/// every key the rotation knows.
pub fn status(
    config: &Config,
    state: &Rotation,
    holders: &shared::Holders,
    now: i64,
) -> Vec<StatusRow> {
    let k = &config.keys;
    let mut rows = Vec::new();
    for entry in &config.tables.keys {
        let Some(domain) = entry.domain.clone() else {
            continue;
        };
        if state.active(&entry.name).is_none() {
            rows.push(StatusRow {
                key_name: entry.name.clone(),
                domain,
                selector: entry.selector.clone(),
                algorithm: algorithm(entry.key.kind).into(),
                state: State::Active.as_str().into(),
                file: entry.path.clone(),
                age_days: file_age_days(&entry.path, now),
                dns: None,
                next: "the KeyTable's key: `mailseal keys rotate` replaces it".into(),
            });
        }
    }
    for e in &state.keys {
        let after = |d: std::time::Duration| e.since + d.as_secs() as i64;
        let when = |t: i64| {
            if t <= now {
                "due now".to_string()
            } else {
                format!(
                    "in {}",
                    humantime::format_duration(std::time::Duration::from_secs((t - now) as u64))
                )
            }
        };
        let next = match e.state {
            State::Pending => format!(
                "publish {}._domainkey.{} (the record `keys rotate` printed); `keys advance` checks it",
                e.selector, e.domain
            ),
            State::Published => match holders.missing(e) {
                [] => format!("becomes active {}", when(after(k.activate_after))),
                hosts => format!(
                    "waits for {} to hold its key file (copy {} there)",
                    hosts.join(", "),
                    e.file.display()
                ),
            },
            State::Active => "signing".into(),
            State::Retiring => format!("revoked {}", when(after(k.retire_after))),
            State::Revoked => format!(
                "publish \"v=DKIM1; p=\" at {}._domainkey.{}; removed {}",
                e.selector,
                e.domain,
                when(after(k.remove_after))
            ),
        };
        rows.push(StatusRow {
            key_name: e.row.clone(),
            domain: e.domain.clone(),
            selector: e.selector.clone(),
            algorithm: e.algorithm.clone(),
            state: e.state.as_str().into(),
            file: e.path(&k.dir),
            age_days: (now - e.created).max(0) / 86400,
            dns: None,
            next,
        });
    }
    rows
}

/// When a file was last written (Unix seconds): the age of a KeyTable's own key.
fn file_mtime(path: &Path) -> Option<i64> {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|t| t.as_secs() as i64)
}

fn file_age_days(path: &Path, now: i64) -> i64 {
    file_mtime(path).map_or(0, |t| (now - t).max(0) / 86400)
}

/// Which KeyTable rows a rotation starts for.
#[derive(Debug, Default)]
pub struct Which<'a> {
    pub domain: Option<&'a str>,
    pub algorithm: Option<&'a str>,
    /// Only these rows (by key name), when given.
    pub rows: Option<&'a [String]>,
}

impl Which<'_> {
    fn takes(&self, row: &str, domain: &str, alg: &str) -> bool {
        self.domain.is_none_or(|x| x.eq_ignore_ascii_case(domain))
            && self.algorithm.is_none_or(|x| x == alg)
            && self
                .rows
                .is_none_or(|r| r.iter().any(|n| n.eq_ignore_ascii_case(row)))
    }
}

/// Start a rotation for every KeyTable row that matches (domain, algorithm) and has none
/// under way: a new key in `dir/DOMAIN/`, pending. Returns what to publish, per new key, and
/// the records to add.
pub fn rotate(
    config: &Config,
    state: &mut Rotation,
    which: &Which<'_>,
    now: i64,
) -> Result<(Vec<String>, Vec<RecordChange>), String> {
    let k = &config.keys;
    let mut out = Vec::new();
    let mut records = Vec::new();
    for entry in &config.tables.keys {
        let Some(d) = entry.domain.as_deref() else {
            continue;
        };
        let a = algorithm(entry.key.kind);
        if !which.takes(&entry.name, d, a) {
            continue;
        }
        if let Some(p) = state.in_progress(&entry.name) {
            out.push(format!(
                "{}: a rotation is already under way ({} is {})",
                entry.name,
                p.selector,
                p.state.as_str()
            ));
            continue;
        }
        let mut taken: Vec<String> = state
            .keys
            .iter()
            .filter(|e| e.domain == d)
            .map(|e| e.selector.clone())
            .collect();
        taken.extend(
            config
                .tables
                .keys
                .iter()
                .filter(|e| e.domain.as_deref() == Some(d))
                .map(|e| e.selector.clone()),
        );
        let selector = next_selector(&k.selector_pattern, a, now, &taken);
        let algorithm = match a {
            "rsa" => crate::tools::keygen::Algorithm::Rsa,
            _ => crate::tools::keygen::Algorithm::Ed25519,
        };
        let g = crate::tools::keygen::keygen(d, &selector, algorithm, k.rsa_bits, &k.dir.join(d))
            .map_err(|e| e.to_string())?;
        records.push(RecordChange {
            domain: d.to_string(),
            selector: selector.clone(),
            change: crate::dns::update::Change::Set(g.record.clone()),
        });
        let zone = std::fs::read_to_string(&g.record_file).unwrap_or_default();
        let public = load_key(&g.private).map_err(|e| e.to_string())?.public;
        state.keys.push(Entry {
            row: entry.name.clone(),
            domain: d.to_string(),
            selector: selector.clone(),
            algorithm: a.to_string(),
            file: g
                .private
                .strip_prefix(&k.dir)
                .unwrap_or(&g.private)
                .to_path_buf(),
            state: State::Pending,
            since: now,
            created: now,
            generated: true,
            public: {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(public)
            },
        });
        out.push(format!(
            "{}: new {a} key {selector} for {d} is pending. Publish:\n{zone}",
            entry.name
        ));
    }
    Ok((out, records))
}

/// The rows due for a rotation under `rotate_every`: their active key (rotation's, or the
/// KeyTable's by its file's age) is that old and no rotation is under way.
pub fn due(config: &Config, state: &Rotation, now: i64) -> Vec<String> {
    let Some(every) = config.keys.rotate_every else {
        return Vec::new();
    };
    let every = every.as_secs() as i64;
    config
        .tables
        .keys
        .iter()
        .filter(|t| t.domain.is_some() && state.in_progress(&t.name).is_none())
        .filter(|t| {
            let since = match state.active(&t.name) {
                Some(a) => a.since,
                None => file_mtime(&t.path).unwrap_or(now),
            };
            now - since >= every
        })
        .map(|t| t.name.clone())
        .collect()
}

/// The record of a revoked key (RFC 6376 §3.6.1).
pub const REVOKED: &str = "v=DKIM1; p=";

/// A change to a key's DNS record that a step calls for.
#[derive(Debug, Clone)]
pub struct RecordChange {
    pub domain: String,
    pub selector: String,
    pub change: crate::dns::update::Change,
}

/// Move every key whose condition holds to its next state. `published` says, per key file,
/// whether its record is in DNS and matches (checked by the caller for pending and published
/// keys). Returns one line per change, and the record changes they call for.
pub fn advance(
    config: &Config,
    state: &mut Rotation,
    published: &BTreeMap<PathBuf, bool>,
    holders: &shared::Holders,
    now: i64,
) -> (Vec<String>, Vec<RecordChange>) {
    let k = &config.keys;
    let secs = |d: std::time::Duration| d.as_secs() as i64;
    let mut changes = Vec::new();
    let mut records = Vec::new();
    let seen = |e: &Entry| published.get(&e.file).copied().unwrap_or(false);
    // Pending → published, published → active (the row's active key retiring).
    let mut activated = Vec::new();
    for e in state.keys.iter_mut() {
        match e.state {
            State::Pending if seen(e) => {
                e.state = State::Published;
                e.since = now;
                changes.push(format!(
                    "{} {}: published (record seen)",
                    e.domain, e.selector
                ));
            }
            State::Published
                if seen(e)
                    && now - e.since >= secs(k.activate_after)
                    && holders.missing(e).is_empty() =>
            {
                activated.push((e.row.clone(), e.selector.clone()));
            }
            _ => {}
        }
    }
    for (row, selector) in activated {
        let table_key = config
            .tables
            .keys
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(&row));
        // The key it replaces: rotation's active one, or the KeyTable's own.
        if let Some(old) = state
            .keys
            .iter_mut()
            .find(|e| e.row.eq_ignore_ascii_case(&row) && e.state == State::Active)
        {
            old.state = State::Retiring;
            old.since = now;
            changes.push(format!("{} {}: retiring", old.domain, old.selector));
        } else if let Some(t) = table_key {
            if let Some(d) = &t.domain {
                state.keys.push(Entry {
                    row: t.name.clone(),
                    domain: d.clone(),
                    selector: t.selector.clone(),
                    algorithm: algorithm(t.key.kind).into(),
                    file: t.path.clone(),
                    state: State::Retiring,
                    since: now,
                    created: now,
                    generated: false,
                    public: String::new(),
                });
                changes.push(format!(
                    "{} {}: retiring (the KeyTable's key)",
                    d, t.selector
                ));
            }
        }
        if let Some(new) = state
            .keys
            .iter_mut()
            .find(|e| e.row.eq_ignore_ascii_case(&row) && e.selector == selector)
        {
            new.state = State::Active;
            new.since = now;
            changes.push(format!("{} {}: active (signing)", new.domain, new.selector));
        }
    }
    // Retiring → revoked → removed.
    for e in state.keys.iter_mut() {
        match e.state {
            State::Retiring if now - e.since >= secs(k.retire_after) => {
                e.state = State::Revoked;
                e.since = now;
                changes.push(format!(
                    "{} {}: revoked; publish {}._domainkey.{} TXT \"v=DKIM1; p=\"",
                    e.domain, e.selector, e.selector, e.domain
                ));
                records.push(RecordChange {
                    domain: e.domain.clone(),
                    selector: e.selector.clone(),
                    change: crate::dns::update::Change::Set(REVOKED.into()),
                });
            }
            _ => {}
        }
    }
    let mut kept = Vec::new();
    for e in std::mem::take(&mut state.keys) {
        if e.state == State::Revoked && now - e.since >= secs(k.remove_after) {
            if e.generated {
                let _ = std::fs::remove_file(e.path(&k.dir));
            }
            changes.push(format!(
                "{} {}: removed; delete its record {}._domainkey.{}",
                e.domain, e.selector, e.selector, e.domain
            ));
            records.push(RecordChange {
                domain: e.domain.clone(),
                selector: e.selector.clone(),
                change: crate::dns::update::Change::Delete,
            });
        } else {
            kept.push(e);
        }
    }
    state.keys = kept;
    (changes, records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_from_the_pattern() {
        // 2026-11-30
        let now = 1_795_996_800;
        assert_eq!(
            next_selector("{a}{yyyy}{mm}{n}", "rsa", now, &[]),
            "r202611a"
        );
        assert_eq!(
            next_selector("{a}{yyyy}{mm}{n}", "ed25519", now, &["e202611a".into()]),
            "e202611b"
        );
        assert_eq!(
            next_selector("k{yyyy}{mm}{dd}", "rsa", now, &[]),
            "k20261130"
        );
    }
}
