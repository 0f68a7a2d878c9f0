//! `mailseal keys status | rotate | advance`: key rotation ([`crate::rotation`]) from the
//! command line. A new key's record is checked at the zone's authoritative servers (or
//! through the configured resolver); `status` shows what the resolver sees.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mail_auth::MessageAuthenticator;

use crate::config::keys::load_key;
use crate::config::Config;
use crate::rotation::{shared, State, StatusRow};
use crate::tools::testkey::{check_key, KeyStatus};

/// The DNS verdict for a key file's record.
async fn check(
    auth: &MessageAuthenticator,
    domain: &str,
    selector: &str,
    file: &Path,
) -> KeyStatus {
    match load_key(file) {
        Ok(key) => check_key(auth, domain, selector, &key).await,
        Err(e) => KeyStatus::Mismatch(format!("key file: {e}")),
    }
}

/// The zone holding `selector._domainkey.domain` and its authoritative servers: the name
/// servers of the closest enclosing zone (the NS records found walking up from the name),
/// asked through the resolver. `None` when no NS records are found.
async fn zone_servers(
    auth: &MessageAuthenticator,
    domain: &str,
    selector: &str,
) -> Option<(String, Vec<SocketAddr>)> {
    use mail_auth::hickory_resolver::proto::rr::{RData, RecordType};
    let mut name = format!("{selector}._domainkey.{}", domain.trim_end_matches('.'));
    // A bounded walk: at most the name's labels.
    for _ in 0..127 {
        if let Ok(found) = auth
            .resolver()
            .lookup(format!("{name}."), RecordType::NS)
            .await
        {
            let hosts: Vec<String> = found
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::NS(ns) => Some(ns.0.to_string()),
                    _ => None,
                })
                .collect();
            if !hosts.is_empty() {
                let mut addrs = Vec::new();
                for host in hosts {
                    if let Ok(ips) = auth.resolver().lookup_ip(host).await {
                        addrs.extend(ips.iter().map(|ip| SocketAddr::new(ip, 53)));
                    }
                }
                return Some((name, addrs));
            }
        }
        match name.split_once('.') {
            Some((_, parent)) if parent.contains('.') => name = parent.to_string(),
            _ => break,
        }
    }
    None
}

/// Send the record changes to `[keys] update_server` (RFC 2136, TSIG), when configured.
/// Returns one line per change sent or failed; nothing when updates are not configured.
async fn publish(
    config: &Config,
    auth: &MessageAuthenticator,
    changes: &[crate::rotation::RecordChange],
) -> Vec<String> {
    let (Some(server), Some(key_file)) = (config.keys.update_server, &config.keys.tsig_key_file)
    else {
        return Vec::new();
    };
    let key = match crate::dns::update::TsigKey::read(key_file) {
        Ok(k) => k,
        Err(e) => return vec![format!("dynamic update not sent: {e}")],
    };
    let mut out = Vec::new();
    for c in changes {
        let name = format!("{}._domainkey.{}", c.selector, c.domain);
        let zone = zone_servers(auth, &c.domain, &c.selector)
            .await
            .map_or_else(|| c.domain.clone(), |(zone, _)| zone);
        let what = match &c.change {
            crate::dns::update::Change::Set(_) => "set",
            crate::dns::update::Change::Delete => "deleted",
        };
        match crate::dns::update::update(
            server,
            &key,
            &zone,
            &name,
            &c.change,
            config.dns.timeout * 2,
        )
        .await
        {
            Ok(()) => out.push(format!(
                "{name}: record {what} by dynamic update to {server}"
            )),
            Err(e) => out.push(format!("{name}: dynamic update failed: {e}")),
        }
    }
    out
}

/// Is the key's record published: at every authoritative server (`[keys]
/// check_authoritative`), else through the resolver. Any doubt (a DNS failure, a server
/// without it) is "not yet".
async fn published(
    config: &Config,
    auth: &MessageAuthenticator,
    e: &crate::rotation::Entry,
) -> bool {
    let servers = if config.keys.check_authoritative {
        zone_servers(auth, &e.domain, &e.selector)
            .await
            .map(|(_, servers)| servers)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let file = e.path(&config.keys.dir);
    if servers.is_empty() {
        return check(auth, &e.domain, &e.selector, &file).await == KeyStatus::Ok;
    }
    for server in servers {
        let dns = crate::config::Dns {
            nameservers: vec![server],
            ..config.dns.clone()
        };
        let Ok(direct) = crate::dns::authenticator(&dns) else {
            return false;
        };
        if check(&direct, &e.domain, &e.selector, &file).await != KeyStatus::Ok {
            return false;
        }
    }
    true
}

fn shown(status: &KeyStatus) -> String {
    match status {
        KeyStatus::Mismatch(d) | KeyStatus::Weak(d) | KeyStatus::DnsError(d) => {
            format!("{}: {d}", status.word())
        }
        s => s.word().to_string(),
    }
}

/// `keys status`: the table, or a JSON array.
pub async fn status(
    config: &Config,
    auth: &MessageAuthenticator,
    json: bool,
) -> Result<String, String> {
    let (state, holders) = shared::read(&config.keys)?;
    let now = crate::report::now();
    let mut rows: Vec<StatusRow> = crate::rotation::status(config, &state, &holders, now);
    for row in &mut rows {
        row.dns = Some(shown(
            &check(auth, &row.domain, &row.selector, &row.file).await,
        ));
    }
    if json {
        return serde_json::to_string_pretty(&rows).map_err(|e| e.to_string());
    }
    let mut out = String::new();
    for r in &rows {
        let _ = writeln!(
            out,
            "{:<10} {:<24} {:<14} {:<8} {:>4}d  dns {:<10} {}  ({})",
            r.state,
            r.domain,
            r.selector,
            r.algorithm,
            r.age_days,
            r.dns.as_deref().unwrap_or("-"),
            r.next,
            r.key_name
        );
    }
    if rows.is_empty() {
        out.push_str("no keys: the KeyTable has no rows with a domain\n");
    }
    Ok(out)
}

/// `keys rotate`: new keys, pending; their records sent by dynamic update when configured.
pub async fn rotate(
    config: &Config,
    auth: &MessageAuthenticator,
    domain: Option<&str>,
    algorithm: Option<&str>,
) -> Result<String, String> {
    prepare_dirs(&config.keys.dir, config, domain)?;
    let which = crate::rotation::Which {
        domain,
        algorithm,
        rows: None,
    };
    let (lines, records) = shared::change(&config.keys, |state, _| {
        crate::rotation::rotate(config, state, &which, crate::report::now())
    })?;
    // Shared: this host holds the new keys from now on.
    shared::report_held(config)?;
    if lines.is_empty() {
        return Ok("no KeyTable row matches\n".into());
    }
    let sent = publish(config, auth, &records).await;
    Ok(lines.into_iter().chain(sent).collect::<Vec<_>>().join("\n") + "\n")
}

/// The per-domain key directories, made like the key directory (its group, 0750), so that
/// keys generated there by root are readable by the service's group.
fn prepare_dirs(dir: &Path, config: &Config, domain: Option<&str>) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let gid = std::fs::metadata(dir).map(|m| m.gid()).unwrap_or(0);
    for d in config
        .tables
        .keys
        .iter()
        .filter_map(|k| k.domain.as_deref())
    {
        if domain.is_some_and(|x| !x.eq_ignore_ascii_case(d)) {
            continue;
        }
        let sub = dir.join(d);
        if sub.exists() {
            continue;
        }
        std::fs::create_dir(&sub)
            .and_then(|_| std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o750)))
            .map_err(|e| format!("{}: {e}", sub.display()))?;
        // Owned like the key directory, so the service can add keys there itself.
        let uid = std::fs::metadata(dir).map(|m| m.uid()).ok();
        let _ = std::os::unix::fs::chown(&sub, uid, Some(gid));
    }
    Ok(())
}

/// The daemon's round (`[keys] check_every`): rotations due under `rotate_every` started,
/// then every key moved on. Returns what changed.
pub async fn scheduled(
    config: &Config,
    auth: &MessageAuthenticator,
) -> Result<Vec<String>, String> {
    let mut changes = Vec::new();
    shared::report_held(config)?;
    let (lines, records) = shared::change(&config.keys, |state, _| {
        let now = crate::report::now();
        let due = crate::rotation::due(config, state, now);
        if due.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        prepare_dirs(&config.keys.dir, config, None)?;
        let which = crate::rotation::Which {
            rows: Some(&due),
            ..Default::default()
        };
        crate::rotation::rotate(config, state, &which, now)
    })?;
    if !lines.is_empty() {
        shared::report_held(config)?;
        changes.extend(lines);
        changes.extend(publish(config, auth, &records).await);
    }
    let moved = advance(config, auth).await?;
    if !moved.starts_with("nothing to do") {
        changes.extend(moved.lines().map(str::to_string));
    }
    Ok(changes)
}

/// `keys advance`: check the records of keys that wait for them, then move every key on.
pub async fn advance(config: &Config, auth: &MessageAuthenticator) -> Result<String, String> {
    // The records are checked first, without the lock; the state is read again under it.
    let (checked, _) = shared::read(&config.keys)?;
    let mut published: BTreeMap<PathBuf, bool> = BTreeMap::new();
    for e in &checked.keys {
        if matches!(e.state, State::Pending | State::Published) {
            published.insert(e.file.clone(), self::published(config, auth, e).await);
        }
    }
    let (mut changes, records) = shared::change(&config.keys, |state, holders| {
        Ok(crate::rotation::advance(
            config,
            state,
            &published,
            holders,
            crate::report::now(),
        ))
    })?;
    if changes.is_empty() {
        return Ok("nothing to do now (keys status says what each key waits for)\n".into());
    }
    changes.extend(publish(config, auth, &records).await);
    Ok(changes.join("\n") + "\n")
}

/// `keys hosts`: the signing hosts sharing the state (`[keys] store`) and the keys each holds.
pub fn hosts(config: &Config) -> Result<String, String> {
    if config.keys.store.is_none() {
        return Ok("keys.store is not set: the state is this host's alone\n".into());
    }
    let now = crate::report::now();
    let mut out = String::new();
    for h in shared::hosts(&config.keys)? {
        let _ = writeln!(
            out,
            "{:<28} {:<24} {:<8} holds {:<30} seen {} ago",
            h.host,
            h.domain,
            h.algorithm,
            h.holds.join(" "),
            humantime::format_duration(
                std::time::Duration::from_secs((now - h.seen).max(0) as u64)
            )
        );
    }
    if out.is_empty() {
        out.push_str("no host has reported yet (each daemon does every check_every)\n");
    }
    Ok(out)
}

/// `keys forget HOST`: a host gone for good; new keys stop waiting for it.
pub fn forget(config: &Config, host: &str) -> Result<String, String> {
    match shared::forget(&config.keys, host)? {
        true => Ok(format!("{host}: forgotten; keys no longer wait for it\n")),
        false => Err(format!("{host}: no such host (see `mailseal keys hosts`)")),
    }
}
