//! What serde cannot check alone: rules between keys, paths relative to the file, the tables
//! and keys they name. Each error names the file and the key's line.

use std::path::Path;
use std::time::Duration;

use super::{
    check_authserv_id, system_fqdn, system_hostname, tables, Config, ConfigError, ConfigErrors,
    Settings, SigningTables, StoreSpec,
};

/// The line of `key` in `[table]` (the top level when `table` is empty), if it is written.
fn line_of(text: &str, table: &str, key: &str) -> Option<usize> {
    let mut current = "";
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.split_once(']')) {
            current = name.0.trim();
        } else if current == table
            && t.strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        {
            return Some(i + 1);
        }
    }
    None
}

struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    /// An error for `table.key` (`key` alone at the top level).
    fn error(&mut self, key: &'static str, msg: impl Into<String>) {
        let (table, name) = key.split_once('.').unwrap_or(("", key));
        self.errors.push(ConfigError::Value {
            path: self.path.to_path_buf(),
            line: line_of(self.text, table, name),
            key,
            msg: msg.into(),
        });
    }
}

pub(super) fn validate(path: &Path, text: &str, mut s: Settings) -> Result<Config, ConfigErrors> {
    let mut c = Checker {
        path,
        text,
        errors: Vec::new(),
    };
    let mut warnings = Vec::new();
    let base = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };

    if let Some(id) = &s.authserv_id {
        if let Err(msg) = check_authserv_id(id, s.mode.verifies()) {
            c.error("authserv_id", msg.to_string());
        }
    }

    // Signing: the tables and every key they name.
    let (tables, table_paths) = match (&s.signing.key_table, &s.signing.signing_table) {
        (Some(kt), Some(st)) => {
            let paths = [kt, st].map(|t| resolve(Path::new(tables::table_path(t))));
            let mut t = SigningTables::load(
                &paths[0],
                &paths[1],
                st.starts_with("file:"),
                &mut c.errors,
                &mut warnings,
            );
            s.keys.dir = resolve(&s.keys.dir);
            crate::rotation::apply(&s.keys, &mut t, &mut c.errors);
            for key in t.keys.iter().filter(|k| k.key.kind.is_weak()) {
                warnings.push(format!(
                    "{}: key {:?} ({}) is a {} key: RFC 8301 still accepts it but asks signers \
                     for 2048 bits and some receivers may not; rotate it (mailseal keygen a \
                     new selector, publish it, then switch the KeyTable row)",
                    key.origin,
                    key.name,
                    key.path.display(),
                    key.key.kind
                ));
            }
            if !s.intake.addresses.is_empty()
                && s.intake.domains.is_empty()
                && t.keys.iter().any(|k| k.domain.is_none())
            {
                c.error(
                    "intake.domains",
                    "required: the KeyTable has % rows, whose domains are known only per message",
                );
            }
            if s.mode.signs() && t.rows.is_empty() {
                warnings.push(format!(
                    "{} has no rows: nothing will be signed, inbound mail is still verified; \
                     make a key with `mailseal keygen` and add the lines it prints",
                    paths[1].display()
                ));
            }
            (t, paths.to_vec())
        }
        (None, None) => {
            if s.mode.signs() {
                warnings.push(
                    "mode includes signing but no key_table/signing_table is configured: nothing will be signed"
                        .to_string(),
                );
            }
            (SigningTables::default(), Vec::new())
        }
        _ => {
            c.error(
                "signing.key_table",
                "key_table and signing_table must be set together",
            );
            (SigningTables::default(), Vec::new())
        }
    };
    if !s
        .signing
        .sign_headers
        .iter()
        .any(|h| h.eq_ignore_ascii_case("from"))
    {
        c.error("signing.sign_headers", "must include From (RFC 6376 §5.4)");
    }

    if !(1..=50).contains(&s.verify.spf_max_lookups) {
        c.error(
            "verify.spf_max_lookups",
            "must be 1 to 50 (RFC 7208 sets 10)",
        );
    }
    if s.verify.spf_max_void_lookups > 20 {
        c.error(
            "verify.spf_max_void_lookups",
            "must be 0 to 20 (RFC 7208 suggests 2)",
        );
    }
    if s.verify.timeout >= Duration::from_secs(300) {
        c.error(
            "verify.timeout",
            "must stay below Postfix's milter_content_timeout (300s)",
        );
    }

    // Host lists: files read, names resolved.
    for (key, list) in [
        ("signing.internal_hosts", &mut s.signing.internal_hosts),
        ("dmarc.never_reject", &mut s.dmarc.never_reject),
    ] {
        if let Err(e) = list.expand(resolve, &mut warnings) {
            c.error(key, e);
        }
    }
    // Key rotation's dynamic updates.
    if s.keys
        .store
        .as_deref()
        .is_some_and(|u| !super::is_postgres(u))
    {
        c.error(
            "keys.store",
            "a postgres:// URL (a state for one host needs no store: it is state.json in keys.dir)",
        );
    }
    s.keys.tsig_key_file = s.keys.tsig_key_file.as_deref().map(resolve);
    match (&s.keys.update_server, &s.keys.tsig_key_file) {
        (Some(_), Some(path)) => {
            if let Err(e) = crate::dns::update::TsigKey::read(path) {
                c.error("keys.tsig_key_file", e);
            }
        }
        (None, None) => {}
        _ => c.error(
            "keys.update_server",
            "update_server and tsig_key_file must be set together",
        ),
    }
    for relay in &mut s.verify.trusted_relays {
        if let Err(e) = relay.hosts.expand(resolve, &mut warnings) {
            c.error("verify.trusted_relays", e);
        }
        if relay.hosts.entries.is_empty() || relay.authserv_ids.is_empty() {
            c.error(
                "verify.trusted_relays",
                "each relay needs hosts (its addresses) and authserv_ids",
            );
        }
        for id in &relay.authserv_ids {
            if s.authserv_id
                .as_deref()
                .is_some_and(|ours| crate::headers::auth_results::same_authserv_id(id, ours))
            {
                c.error(
                    "verify.trusted_relays",
                    format!(
                        "{id:?} is our own authserv_id: fields claiming it are forged and deleted, never trusted"
                    ),
                );
            }
        }
    }
    s.dmarc.never_reject_mail_from = s
        .dmarc
        .never_reject_mail_from
        .iter()
        .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
        .collect();

    // Report intake.
    let i = &mut s.intake;
    i.addresses = i
        .addresses
        .iter()
        .map(|a| a.trim().trim_matches(['<', '>']).to_ascii_lowercase())
        .collect();
    for a in &i.addresses {
        if a.rsplit_once('@')
            .is_none_or(|(l, d)| l.is_empty() || !d.contains('.'))
        {
            c.error("intake.addresses", format!("{a:?} is not an address"));
        }
    }
    i.domains = i
        .domains
        .iter()
        .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
        .collect();
    i.spool = resolve(&i.spool);
    if !i.addresses.is_empty() && s.reports.store.is_none() {
        c.error(
            "intake.addresses",
            "reports are kept in [reports] store, which is not set",
        );
    }

    // Dashboard.
    let dash = &mut s.dashboard;
    dash.tls_cert = dash.tls_cert.as_deref().map(resolve);
    dash.tls_key = dash.tls_key.as_deref().map(resolve);
    dash.password_file = dash.password_file.as_deref().map(resolve);
    if let Some(addr) = dash.listen {
        if dash.tls_cert.is_some() != dash.tls_key.is_some() {
            c.error("dashboard.tls_cert", "tls_cert and tls_key go together");
        }
        if !addr.ip().is_loopback() && (dash.tls_cert.is_none() || dash.password_file.is_none()) {
            c.error(
                "dashboard.listen",
                format!(
                    "{addr} is not loopback: set tls_cert, tls_key and password_file (or listen on loopback behind a reverse proxy)"
                ),
            );
        }
        if let Some(p) = &dash.password_file {
            if let Err(e) = crate::dashboard::Passwords::read(p) {
                c.error("dashboard.password_file", e);
            }
        }
        if s.reports.store.is_none() {
            c.error(
                "dashboard.listen",
                "the dashboard reads [reports] store, which is not set",
            );
        }
    }

    // Reports.
    let r = &mut s.reports;
    if let Some(store) = &r.store {
        if !super::is_postgres(store) {
            r.store = Some(resolve(Path::new(store)).display().to_string());
        }
    }
    r.smtp_ca_file = r.smtp_ca_file.as_deref().map(resolve);
    r.smtp_password_file = r.smtp_password_file.as_deref().map(resolve);
    r.suppress = r
        .suppress
        .iter()
        .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    if r.store.is_some() {
        if r.org().trim().is_empty() {
            c.error("reports.org_name", "required when reports.store is set");
        }
        let email = r.from_address();
        match email.rsplit_once('@') {
            Some((l, d))
                if !l.is_empty() && d.contains('.') && !email.contains(char::is_whitespace) => {}
            _ => c.error(
                "reports.email",
                format!("expected an address like dmarc-reports@example.net, found {email:?}"),
            ),
        }
    }
    if r.smtp_user.is_some() != r.smtp_password_file.is_some() {
        c.error(
            "reports.smtp_user",
            "smtp_user and smtp_password_file must be set together",
        );
    }
    let loopback = super::is_loopback_host(&r.smtp_host);
    if r.smtp_user.is_some()
        && r.transport == crate::config::TransportKind::Smtp
        && !(r.smtp_tls == crate::config::SmtpTls::Verify
            || (loopback && r.smtp_tls != crate::config::SmtpTls::None))
    {
        c.error(
            "reports.smtp_user",
            "the password is sent only over smtp_tls = \"verify\", or over TLS to a loopback relay; set smtp_tls = \"verify\" (with smtp_ca_file if the relay's CA is not a system one)",
        );
    }
    if r.retention < Duration::from_secs(2 * 86400) {
        c.error(
            "reports.retention",
            "must be at least 2 days (a day's records are reported the next day)",
        );
    }
    if let Some(StoreSpec::Sqlite(p)) = r.store() {
        if p.parent().is_some_and(|d| !d.is_dir()) {
            warnings.push(format!(
                "{}: the directory does not exist; report data will be lost until it does",
                p.display()
            ));
        }
    }

    // A TCP socket is open to every local user (and, off loopback, to every host that reaches
    // it); a client that connects can present itself as an internal host and have mail signed.
    if let super::SocketSpec::Inet { host, .. } = &s.socket {
        if s.mode.signs() && !tables.rows.is_empty() {
            let open_wide = !super::is_loopback_host(host);
            warnings.push(format!(
                "socket {}: any local user{} can connect to a TCP milter and have mail signed as if Postfix sent it; prefer a unix socket in Postfix's spool, socket = \"unix:/var/spool/postfix/mailseal/mailseal.sock\"",
                s.socket,
                if open_wide { ", and any host that can reach it," } else { "" }
            ));
        }
    }
    if !c.errors.is_empty() {
        return Err(ConfigErrors(c.errors));
    }
    let host_name = s
        .authserv_id
        .clone()
        .or_else(system_fqdn)
        .unwrap_or_else(system_hostname);
    let mut config = Config {
        path: path.to_path_buf(),
        settings: s,
        host_name,
        tables,
        table_paths,
        warnings,
    };
    config.add_unsafe_file_warnings();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_keys() {
        let text =
            "mode = \"q\"\n# c\n[signing]\ncanonicalization = \"x\"\n[dns]\ntimeout=\"1s\"\n";
        assert_eq!(line_of(text, "", "mode"), Some(1));
        assert_eq!(line_of(text, "signing", "canonicalization"), Some(4));
        assert_eq!(line_of(text, "dns", "timeout"), Some(6));
        assert_eq!(line_of(text, "dns", "attempts"), None);
        assert_eq!(line_of(text, "", "canonicalization"), None);
    }

    fn load(text: &str) -> Result<Config, ConfigErrors> {
        Config::from_toml(Path::new("/x/m.toml"), text)
    }

    #[test]
    fn intake_keys_store_and_dashboard_are_checked() {
        let err = |text: &str| load(text).unwrap_err().to_string();
        assert!(err("[intake]\naddresses = [\"dmarc@example.net\"]\n").contains("[reports] store"));
        assert!(err("[intake]\naddresses = [\"not-an-address\"]\n").contains("is not an address"));
        assert!(err("[keys]\nstore = \"/var/lib/x.sqlite\"\n").contains("postgres://"));
        let store =
            "[reports]\nstore = \"/tmp/r.sqlite\"\norg_name = \"e.net\"\nemail = \"d@e.net\"\n";
        assert!(err(&format!(
            "{store}[dashboard]\nlisten = \"192.0.2.1:9102\"\n"
        ))
        .contains("not loopback"));
        assert!(err("[dashboard]\nlisten = \"127.0.0.1:9102\"\n").contains("[reports] store"));
        let c = load(&format!(
            "{store}[intake]\naddresses = [\"<DMARC@Example.NET>\"]\ndomains = [\"Example.NET.\"]\n[dashboard]\nlisten = \"127.0.0.1:9102\"\n"
        ))
        .unwrap();
        assert_eq!(c.intake.addresses, ["dmarc@example.net"]);
        assert_eq!(c.intake.domains, ["example.net"]);
    }

    #[test]
    fn empty_config_is_valid() {
        let c = load("").unwrap();
        assert!(c.mode.signs() && c.mode.verifies());
        assert_eq!(
            c.socket,
            super::super::SocketSpec::Inet {
                host: "127.0.0.1".into(),
                port: 8891
            }
        );
        assert_eq!(c.verify.on_dns_error, super::super::FailAction::Tempfail);
        assert_eq!(c.threads, 1);
        assert!(c
            .warnings
            .iter()
            .any(|w| w.contains("nothing will be signed")));
    }

    #[test]
    fn threads_zero_is_one_per_cpu_and_huge_is_refused() {
        assert_eq!(load("threads = 0\n").unwrap().threads, 0);
        assert_eq!(load("threads = 256\n").unwrap().threads, 256);
        let e = load("threads = 100000\n").unwrap_err().to_string();
        assert!(e.contains("threads") && e.contains("at most 256"), "{e}");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn value_errors_name_file_and_line() {
        let e = load("mode = \"q\"\n").unwrap_err().to_string();
        assert!(
            e.contains("/x/m.toml") && e.contains("line 1") && e.contains("mode"),
            "{e}"
        );
        let e = load("[signing]\ncanonicalization = \"loose\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2") && e.contains("relaxed or simple"),
            "{e}"
        );
        let e = load("mode = \"v\"\nauthserv_id = \"mx\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/x/m.toml:2: authserv_id"), "{e}");
        let e = load("[verify]\n\ntimeout = \"400s\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/x/m.toml:3: verify.timeout"), "{e}");
    }

    #[test]
    fn rules_between_keys_are_collected() {
        let e = load(
            "[signing]\nkey_table = \"k\"\nsign_headers = [\"To\"]\n[reports]\nstore = \"r.sqlite\"\nretention = \"1d\"\n",
        )
        .unwrap_err();
        let text = e.to_string();
        assert_eq!(e.0.len(), 5, "{text}");
        for key in [
            "signing.key_table",
            "signing.sign_headers",
            "reports.org_name",
            "reports.email",
            "reports.retention",
        ] {
            assert!(text.contains(key), "{key}: {text}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = load("[signing]\nkeytable = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("/x/m.toml") && text.contains("keytable"),
            "{text}"
        );
        assert!(text.contains("line 2"), "{text}");
    }

    #[test]
    fn internal_hosts_match_canonical_v4() {
        let c = load("[signing]\ninternal_hosts = [\"10.0.0.0/8\"]\n").unwrap();
        assert!(c.signing.is_internal("10.1.2.3".parse().unwrap()));
        let mapped: std::net::IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert!(c.signing.is_internal(mapped.to_canonical()));
        assert!(!c.signing.is_internal("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn relative_report_paths_are_resolved() {
        let c =
            load("[reports]\nstore = \"r.sqlite\"\norg_name = \"o\"\nemail = \"a@b.example\"\n")
                .unwrap();
        assert_eq!(
            c.reports.store(),
            Some(StoreSpec::Sqlite("/x/r.sqlite".into()))
        );
        assert!(
            c.warnings.iter().any(|w| w.contains("does not exist")),
            "{:?}",
            c.warnings
        );
    }
}
