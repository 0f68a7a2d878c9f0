//! opendkim.conf: signing (tables, single-key mode, key access), hosts, actions.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{copy_table, dataset, host_list, list, truthy, Dataset, Plan, Setting};

/// opendkim.conf.
pub(super) fn opendkim(
    plan: &mut Plan,
    conf: &[Setting],
    socket: &mut Option<Setting>,
    umask: &mut Option<Setting>,
    groups: &mut BTreeSet<String>,
) -> Result<(), String> {
    let get = |name: &str| {
        conf.iter()
            .rev()
            .find(|s| s.name.eq_ignore_ascii_case(name))
    };
    let mut key_paths = Vec::new();
    let has_key_table = get("KeyTable").is_some();
    let mut on_default = None;
    for s in conf {
        let v = s.value.as_str();
        match s.name.to_ascii_lowercase().as_str() {
            "keytable" => {
                if let Some((value, text)) = copy_table(plan, s, "key.table") {
                    let shown = plan.set("signing.key_table", value);
                    plan.row(s, shown);
                    key_paths = key_files(&text);
                }
            }
            "signingtable" => {
                if let Some((value, _)) = copy_table(plan, s, "signing.table") {
                    let lookup = if value.starts_with("refile:") {
                        "patterns, first match"
                    } else {
                        "OpenDKIM's file: lookup order"
                    };
                    let shown = plan.set("signing.signing_table", value);
                    plan.row(s, format!("{shown} ({lookup}, signer field kept)"));
                }
            }
            "domain" | "keyfile" | "selector" if has_key_table => {
                plan.row(s, "ignored, as by OpenDKIM: the KeyTable overrides it")
            }
            "domain" | "keyfile" | "selector" => {}
            "subdomains" if has_key_table => plan.row(
                s,
                "no effect with a KeyTable (the SigningTable decides); dropped",
            ),
            "subdomains" => {}
            "internalhosts" => host_list(plan, s, "signing.internal_hosts", "internal.hosts"),
            "externalignorelist" => plan.row(
                s,
                "not needed: it only silenced OpenDKIM's log line about outside hosts sending as \
                 our domains; mailseal verifies their mail as inbound",
            ),
            "peerlist" => host_list(plan, s, "dmarc.never_reject", "peer.hosts"),
            "macrolist" => {
                let mut names = Vec::new();
                let mut others = Vec::new();
                for item in list(v) {
                    match item.split_once('=') {
                        Some((m, values)) if m.trim_matches(['{', '}']) == "daemon_name" => {
                            names.extend(values.split('|').map(str::to_string))
                        }
                        _ => others.push(item),
                    }
                }
                if names.is_empty() {
                    plan.row(s, "not migrated: mailseal reads only daemon_name values (signing.daemon_names)");
                } else {
                    let shown = plan.set("signing.daemon_names", names);
                    plan.row(
                        s,
                        if others.is_empty() {
                            shown
                        } else {
                            format!("{shown}; not migrated: {}", others.join(", "))
                        },
                    );
                }
            }
            "mode" => {
                let mut m = v.to_ascii_lowercase();
                if m == "vs" {
                    m = "sv".into();
                }
                if ["s", "v", "sv"].contains(&m.as_str()) {
                    let shown = plan.set("mode", m);
                    plan.row(s, shown);
                } else {
                    return Err(format!("{}: Mode {v:?} is not s, v or sv", s.origin));
                }
            }
            "canonicalization" => {
                let c = if v.contains('/') {
                    v.to_ascii_lowercase()
                } else {
                    format!("{}/simple", v.to_ascii_lowercase())
                };
                let shown = plan.set("signing.canonicalization", c);
                plan.row(s, shown);
            }
            "signheaders" => {
                let mut h = list(v);
                if !h.iter().any(|x| x.eq_ignore_ascii_case("from")) {
                    h.insert(0, "From".into());
                }
                let shown = plan.set("signing.sign_headers", h);
                plan.row(s, shown);
            }
            "oversignheaders" => {
                let shown = plan.set("signing.oversign_headers", list(v));
                plan.row(s, shown);
            }
            "signaturettl" => match v.parse::<u64>() {
                Ok(0) => plan.row(s, "no expiry: signing.expiration left unset"),
                Ok(n) => {
                    let shown = plan.set("signing.expiration", format!("{n}s"));
                    plan.row(s, shown);
                }
                Err(_) => plan.row(s, "not migrated: not a number of seconds"),
            },
            "multiplesignatures" => {
                let on = truthy(v).unwrap_or(false);
                let shown = plan.set("signing.multiple_signatures", on);
                plan.row(s, shown);
            }
            "socket" => *socket = Some(s.clone()),
            "umask" => *umask = Some(s.clone()),
            "userid" => {
                let group = v.split_once(':').map(|(_, g)| g);
                plan.row(
                    s,
                    format!(
                        "mailseal runs as its own user mailseal (the unit's User=){}",
                        group
                            .map(|g| format!("; group {g} is added where the keys need it"))
                            .unwrap_or_default()
                    ),
                );
            }
            "nameservers" => {
                let shown = plan.set("dns.nameservers", list(v));
                plan.row(s, shown);
            }
            "dnstimeout" => match v.parse::<u64>() {
                Ok(n) if n > 0 => {
                    let shown = plan.set("dns.timeout", format!("{n}s"));
                    plan.row(s, shown);
                }
                _ => plan.row(s, "not migrated: not a positive number of seconds"),
            },
            "requiresafekeys" => plan.row(
                s,
                if truthy(v) == Some(false) {
                    "mailseal always requires safe keys (no access for others, group read only \
                     for its own groups); the next steps name any key to fix"
                } else {
                    "always on in mailseal"
                },
            ),
            "minimumkeybits" => plan.row(
                s,
                match v.parse::<u32>() {
                    Ok(n) if n > 1024 => format!(
                        "no equivalent: mailseal verifies keys of 1024 bits and more, as RFC 8301 \
                         requires; a {n}-bit floor would fail mail RFC 8301 accepts"
                    ),
                    _ => "the same floor as mailseal's (1024 bits, RFC 8301)".into(),
                },
            ),
            "signaturealgorithm" => plan.row(
                s,
                if v.eq_ignore_ascii_case("rsa-sha1") {
                    "not migrated: RFC 8301 forbids rsa-sha1; mailseal signs rsa-sha256"
                } else {
                    "implied by each key (rsa-sha256 for RSA keys, ed25519-sha256 for Ed25519)"
                },
            ),
            "authservid" => {
                if !v.eq_ignore_ascii_case("hostname") {
                    let shown = plan.set("authserv_id", v);
                    plan.row(s, shown);
                } else {
                    plan.row(s, "authserv_id left unset: Postfix's $myhostname, as HOSTNAME meant");
                }
            }
            "on-default" => on_default = Some(s.clone()),
            name if name.starts_with("on-") => on_action(plan, s, None),
            "syslog" | "syslogsuccess" | "logwhy" | "logresults" | "syslogfacility" => plan.row(
                s,
                "mailseal logs one line per message to the journal (log_level = \"info\"; \
                 \"debug\" for the details LogWhy gave)",
            ),
            "pidfile" | "background" | "autorestart" | "autorestartrate" | "autorestartcount" => {
                plan.row(s, "not needed: systemd runs and restarts mailseal (Restart=on-failure)")
            }
            "trustanchorfile" => plan.row(
                s,
                "not used: mailseal does not validate DNSSEC itself; point dns.nameservers at a \
                 validating resolver",
            ),
            "alwaysaddarheader" => plan.row(s, "always: mailseal adds one Authentication-Results to every inbound message"),
            "softwareheader" | "x-header" => plan.row(s, "no equivalent: mailseal adds no software header"),
            _ => plan.row(s, "not recognised by migrate: check opendkim.conf(5) and set its mailseal equivalent by hand, if any"),
        }
    }
    if let Some(s) = on_default {
        on_action(plan, &s, Some(conf));
    }
    // Single-key mode: Domain + KeyFile + Selector become the tables.
    if !has_key_table {
        match (get("Domain"), get("KeyFile"), get("Selector")) {
            (Some(d), Some(k), Some(sel)) => {
                let sub = get("SubDomains").is_some_and(|s| truthy(&s.value) == Some(true));
                let domains = match dataset(&d.value) {
                    Dataset::File { path, .. } => std::fs::read_to_string(&path)
                        .map(|t| {
                            t.lines()
                                .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
                                .filter(|l| !l.is_empty())
                                .collect()
                        })
                        .unwrap_or_default(),
                    Dataset::List(l) => l,
                    Dataset::Other(_) => Vec::new(),
                };
                let (mut keys, mut signing) = (String::new(), String::new());
                for (i, domain) in domains.iter().enumerate() {
                    let name = format!("key{}", i + 1);
                    let dom = if domain == "*" { "%" } else { domain.as_str() };
                    let _ = writeln!(keys, "{name} {dom}:{}:{}", sel.value, k.value);
                    let _ = writeln!(signing, "{domain} {name}");
                    if sub && domain != "*" {
                        let _ = writeln!(signing, "*.{domain} {name}");
                    }
                }
                plan.file("key.table", keys);
                plan.file("signing.table", signing);
                plan.set("signing.key_table", "key.table");
                plan.set("signing.signing_table", "signing.table");
                let became = format!(
                    "key.table and signing.table: {} signed with selector {} and {}{}",
                    domains.join(", "),
                    sel.value,
                    k.value,
                    if sub { ", subdomains too" } else { "" }
                );
                for s in [d, k, sel] {
                    plan.row(s, became.clone());
                }
                key_paths.push(PathBuf::from(&k.value));
            }
            _ => {
                for s in [get("Domain"), get("KeyFile"), get("Selector")]
                    .into_iter()
                    .flatten()
                {
                    plan.row(
                        s,
                        "not migrated: Domain, KeyFile and Selector work only together",
                    );
                }
                let shown = plan.set("mode", "v");
                plan.rows.push((
                    "(no KeyTable, no Domain/KeyFile/Selector)".into(),
                    format!(
                        "{shown}: nothing to sign with, so a verify-only setup; add keys later \
                         (mailseal keygen prints the table rows)"
                    ),
                ));
            }
        }
    }
    for key in key_paths {
        key_access(&key, groups, &mut plan.steps);
    }
    if get("InternalHosts").is_none() {
        plan.rows.push((
            "(InternalHosts not set: 127.0.0.1)".into(),
            "signing.internal_hosts keeps its default, 127.0.0.0/8 and ::1".into(),
        ));
    }
    Ok(())
}

/// An On-* action. `conf` is given for On-Default: it applies where no specific one is set.
fn on_action(plan: &mut Plan, s: &Setting, conf: Option<&[Setting]>) {
    let action = s.value.to_ascii_lowercase();
    let answer = match action.as_str() {
        "tempfail" => Some("tempfail"),
        "accept" => Some("accept"),
        _ => None,
    };
    let set = |plan: &mut Plan, key: &str| -> String {
        match answer {
            Some(a) => plan.set(key, a),
            None => format!(
                "{key} stays \"tempfail\": mailseal answers only tempfail or accept there ({action} is not offered: mail is never discarded or rejected for an internal failure)"
            ),
        }
    };
    let specific =
        |name: &str| conf.is_some_and(|c| c.iter().any(|x| x.name.eq_ignore_ascii_case(name)));
    let mut became = Vec::new();
    let name = s.name.to_ascii_lowercase();
    let default = name == "on-default";
    if (default && !specific("On-InternalError")) || name == "on-internalerror" {
        became.push(set(plan, "on_internal_error"));
    }
    if (default && !specific("On-DNSError")) || name == "on-dnserror" {
        became.push(set(plan, "verify.on_dns_error"));
    }
    if (default && !specific("On-SignatureError")) || name == "on-signatureerror" {
        became.push(set(plan, "signing.on_signing_error"));
    }
    if [
        "on-badsignature",
        "on-nosignature",
        "on-keynotfound",
        "on-security",
    ]
    .contains(&name.as_str())
        || (default && action != "accept")
    {
        became.push(
            "a DKIM result alone never rejects in mailseal (RFC 6376 §6.3: a failed signature is \
             as good as none); DMARC decides, with dmarc.enforce"
                .into(),
        );
    }
    if became.is_empty() {
        became.push("not migrated".into());
    }
    plan.row(s, became.join("; "));
}

/// The key files a KeyTable names (rows whose key is a path).
fn key_files(table: &str) -> Vec<PathBuf> {
    table
        .lines()
        .filter_map(|l| {
            let l = l.split('#').next()?.trim();
            let (_, value) = l.split_once(char::is_whitespace)?;
            let path = value.trim().splitn(3, ':').nth(2)?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// What mailseal (user and group `mailseal`, plus `groups`) needs to read `key`: the groups
/// to add, and the steps for what a group cannot fix.
fn key_access(key: &Path, groups: &mut BTreeSet<String>, steps: &mut Vec<String>) {
    let Ok(meta) = std::fs::metadata(key) else {
        steps.push(format!("{}: not found; check the KeyTable", key.display()));
        return;
    };
    let mode = meta.permissions().mode() & 0o7777;
    let shown = key.display();
    if mode & 0o027 != 0 {
        steps.push(format!(
            "{shown} is readable by others or writable by its group (mode {mode:04o}); mailseal \
             refuses such keys (as OpenDKIM's RequireSafeKeys): chmod o-rwx,g-w {shown}"
        ));
    }
    let group = group_name(meta.gid());
    if user_name(meta.uid()) == "mailseal" {
        // The service's own key (made with `sudo -u mailseal mailseal keygen`).
    } else if meta.gid() != 0 && mode & 0o040 != 0 {
        groups.insert(group.clone());
    } else {
        let g = if meta.gid() == 0 {
            "mailseal".to_string()
        } else {
            group.clone()
        };
        steps.push(format!(
            "{shown} is readable by {} only; mailseal runs as user mailseal: chgrp {g} {shown} && chmod 0640 {shown}",
            if mode & 0o040 != 0 { "group root" } else { "its owner" }
        ));
        if g != "mailseal" {
            groups.insert(g);
        }
    }
    // Every directory above must let the group through.
    let mut dir = key.parent();
    while let Some(d) = dir {
        if let Ok(m) = std::fs::metadata(d) {
            let mode = m.permissions().mode();
            let passes = mode & 0o001 != 0
                || (mode & 0o010 != 0
                    && (groups.contains(&group_name(m.gid()))
                        || group_name(m.gid()) == "mailseal"));
            if !passes {
                let g = group_name(m.gid());
                steps.push(format!(
                    "directory {} (mode {:04o}, group {g}) keeps mailseal out: chmod g+x {}{}",
                    d.display(),
                    mode & 0o7777,
                    d.display(),
                    if g == "root" {
                        String::new()
                    } else {
                        format!(" (group {g} is added to mailseal's groups)")
                    }
                ));
                if g != "root" {
                    groups.insert(g);
                }
            }
        }
        dir = d.parent();
    }
}

/// A user's name (its number when it has none).
fn user_name(uid: u32) -> String {
    // SAFETY: getpwuid_r fills `pwd` and the buffer; on success the name points into it.
    account_name(uid, |id, buf, result: &mut *mut libc::passwd, pwd| unsafe {
        let rc = libc::getpwuid_r(id, pwd, buf.as_mut_ptr(), buf.len(), result);
        (rc == 0 && !result.is_null()).then_some(pwd.pw_name)
    })
}

/// A group's name (its number when it has none).
fn group_name(gid: u32) -> String {
    // SAFETY: getgrgid_r fills `grp` and the buffer; on success the name points into it.
    account_name(gid, |id, buf, result: &mut *mut libc::group, grp| unsafe {
        let rc = libc::getgrgid_r(id, grp, buf.as_mut_ptr(), buf.len(), result);
        (rc == 0 && !result.is_null()).then_some(grp.gr_name)
    })
}

/// The name a `get*id_r` lookup finds for `id`, read from the buffer it filled.
fn account_name<T>(
    id: u32,
    lookup: impl FnOnce(u32, &mut [libc::c_char], &mut *mut T, &mut T) -> Option<*mut libc::c_char>,
) -> String {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: passwd and group are plain C structs for which all-zero is a valid value.
    let mut entry: T = unsafe { std::mem::zeroed() };
    let mut result: *mut T = std::ptr::null_mut();
    match lookup(id, &mut buf, &mut result, &mut entry) {
        // SAFETY: the name is a NUL-terminated string inside `buf`, alive here.
        Some(name) => unsafe { std::ffi::CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned(),
        None => id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_of_a_table() {
        let t = "# c\nk1 a.example:s1:/etc/k/a.private\nk2 b.example:s2:MIIEvQIBADANBg\n";
        assert_eq!(key_files(t), vec![PathBuf::from("/etc/k/a.private")]);
    }
}
