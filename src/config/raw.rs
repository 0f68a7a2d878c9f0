//! Every configuration key, written once: its name, type, default and meaning.
//!
//! The [`settings!`] declarations below are the one source. They give the serde structs (an
//! empty file is a valid, verify-and-sign configuration; `deny_unknown_fields` everywhere: a
//! typo is an error that names the key and line, never a silently ignored setting), their
//! `Default`s, and the [`TableDoc`] tables from which `config/mailseal.toml` and the
//! mailseal.toml(5) man page are generated ([`super::docs`]; a test keeps the file in step).
//!
//! Each key reads `name: Type = KIND "TOML";` where KIND is `default` (the value when the key
//! is left out, shown as is in the example), `set` (no default; the example shows this value,
//! which a site sets) or `eg` (no default; the example shows it commented out).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::types::*;

/// How a key appears in the example file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// `key = default`
    Default,
    /// `key = value` (a value the site sets; no default)
    Set,
    /// `# key = value` (optional; no default)
    Example,
}

/// One key's documentation.
#[derive(Debug)]
pub struct KeyDoc {
    pub name: &'static str,
    /// The Rust type, as declared (see [`super::docs`] for the words shown).
    pub ty: &'static str,
    /// The value shown, as TOML: the default, or an example.
    pub value: &'static str,
    pub shown: Shown,
    /// The meaning, one line per element.
    pub doc: &'static [&'static str],
}

/// One table (`[section]`, or the top level when `name` is empty) and its keys.
#[derive(Debug)]
pub struct TableDoc {
    pub name: &'static str,
    pub doc: &'static [&'static str],
    pub keys: &'static [KeyDoc],
}

macro_rules! settings {
    (@shown default) => { Shown::Default };
    (@shown set) => { Shown::Set };
    (@shown eg) => { Shown::Example };
    (@default default $value:literal; $ty:ty; $($sattr:tt)*) => {{
        #[derive(Deserialize)]
        struct One {
            $(#[serde($sattr)])*
            v: $ty,
        }
        match toml::from_str::<One>(concat!("v = ", $value)) {
            Ok(one) => one.v,
            Err(e) => panic!("default {} does not parse: {e}", $value),
        }
    }};
    (@default $kind:ident $value:literal; $ty:ty; $($sattr:tt)*) => { None };
    (
        $(#[doc = $tdoc:literal])*
        pub struct $Name:ident in $table:literal {
            $(
                $(#[doc = $doc:literal])*
                $(#[serde($sattr:meta)])*
                $field:ident : $ty:ty = $kind:ident $value:literal;
            )*
        }
        $(tables { $($t:ident : $tty:ident),* $(,)? })?
    ) => {
        $(#[doc = $tdoc])*
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $Name {
            $(
                $(#[doc = $doc])*
                $(#[serde($sattr)])*
                pub $field: $ty,
            )*
            $($(pub $t: $tty,)*)?
        }

        impl Default for $Name {
            fn default() -> Self {
                $Name {
                    $($field: settings!(@default $kind $value; $ty; $($sattr)*),)*
                    $($($t: $tty::default(),)*)?
                }
            }
        }

        impl $Name {
            pub const DOC: TableDoc = TableDoc {
                name: $table,
                doc: &[$($tdoc),*],
                keys: &[$(KeyDoc {
                    name: stringify!($field),
                    ty: stringify!($ty),
                    value: $value,
                    shown: settings!(@shown $kind),
                    doc: &[$($doc),*],
                }),*],
            };

            /// This table's documentation, then its sub-tables'.
            #[allow(dead_code)]
            pub fn docs() -> Vec<&'static TableDoc> {
                vec![&Self::DOC $($(, &$tty::DOC)*)?]
            }
        }
    };
}

settings! {
    pub struct Settings in "" {
        /// Milter socket: inet:PORT@HOST, inet:HOST:PORT, inet:PORT (every interface), or
        /// unix:/path (preferred: no other local user can connect; Postfix smtpd runs
        /// chrooted on Debian, so a unix socket must live under /var/spool/postfix).
        socket: SocketSpec = default r#""inet:8891@127.0.0.1""#;
        /// File mode of a unix socket (octal). Ignored for inet sockets.
        #[serde(with = "octal")]
        socket_mode: u32 = default r#""0660""#;
        /// authserv-id written into Authentication-Results (and the only one whose fields we
        /// delete), a domain name (RFC 8601 §2.5). Unset: Postfix's $myhostname (milter macro
        /// j), else this host's fully qualified name; a name without a dot is refused when
        /// verifying.
        authserv_id: Option<String> = set r#""mx.example.net""#;
        /// s = sign only, v = verify only, sv = both.
        mode: Mode = default r#""sv""#;
        /// Log filter (tracing syntax: error, warn, info, debug; RUST_LOG overrides it).
        #[serde(with = "log_filter")]
        log_level: String = default r#""info""#;
        /// Most milter connections (SMTP sessions) served at once; more wait to be accepted.
        #[serde(with = "positive")]
        max_connections: usize = default "200";
        /// Threads serving milter connections. 1 (a single-threaded runtime) costs the least
        /// CPU per message and signs some 1300 RSA-2048 messages/s; raise it (0 = one per CPU)
        /// only if mailseal keeps one core busy.
        #[serde(with = "threads")]
        threads: usize = default "1";
        /// A connection that sends no complete milter command for this long is closed.
        #[serde(with = "duration")]
        connection_timeout: Duration = default r#""330s""#;
        /// On SIGTERM: stop accepting, then give messages in flight this long to finish.
        #[serde(with = "duration")]
        shutdown_timeout: Duration = default r#""30s""#;
        /// Answer when mailseal itself fails on a message: "tempfail" (451 4.7.1) or "accept".
        #[serde(with = "tempfail_or_accept")]
        on_internal_error: FailAction = default r#""tempfail""#;
    }
    tables { limits: Limits, signing: Signing, keys: Keys, verify: Verify, dmarc: Dmarc, dns: Dns, metrics: Metrics, reports: Reports, intake: Intake, dashboard: Dashboard }
}

settings! {
    /// Caps on what one message, and all messages in flight, may hold in memory.
    pub struct Limits in "limits" {
        /// Largest header section kept per message. Past it (or past max_headers) only From,
        /// DKIM-Signature and Authentication-Results fields are kept (at most 100 of them, and
        /// max_header_size bytes more): inbound mail is still verified (a signature over a
        /// field not kept is "not evaluated") and forged results are still deleted; more such
        /// fields, and the message is refused with the on_oversize answer (552 5.3.4 when that
        /// is "accept"). Outbound mail over a cap is not signed.
        #[serde(with = "size")]
        max_header_size: usize = default r#""1M""#;
        /// Most header fields kept per message (see max_header_size).
        max_headers: usize = default "1000";
        /// Largest message buffered for verification (signing streams and has no limit).
        #[serde(with = "size")]
        max_message_size: usize = default r#""32M""#;
        /// Most bytes buffered for verification over all messages in flight, counted as
        /// received (the client's SIZE= only sizes the first allocation). Bounds memory
        /// whatever the number of connections. A message whose body is over max_message_size,
        /// or does not fit here, is still judged on SPF and DMARC (its DKIM signatures "not
        /// evaluated"); when its aligned signature could have decided DMARC, [dmarc]
        /// on_unverifiable answers under enforce.
        #[serde(with = "size")]
        max_buffered_total: usize = default r#""1G""#;
        /// Oversize answer: "accept" (inbound: verified as above; outbound: unsigned),
        /// "tempfail" (452 4.3.4) or "reject" (552 5.3.4).
        on_oversize: FailAction = default r#""accept""#;
    }
}

settings! {
    /// Outbound mail: what is signed, with which keys.
    pub struct Signing in "signing" {
        /// OpenDKIM KeyTable: `keyname domain:selector:/path/to/key` (% = the sender's
        /// domain). A "refile:" or "file:" prefix, as in opendkim.conf, is accepted. Relative
        /// paths are relative to this file. Leave both tables out to sign nothing.
        key_table: Option<String> = set r#""key.table""#;
        /// OpenDKIM SigningTable: `pattern keyname`, * wildcards, first match wins.
        signing_table: Option<String> = set r#""signing.table""#;
        /// true: every matching SigningTable row signs (RSA + Ed25519 dual signing).
        multiple_signatures: bool = default "false";
        /// Clients whose mail is outbound: addresses, CIDRs, host names (resolved at load and
        /// reload), "!" exclusions, "file:/path" (one entry a line, as OpenDKIM's
        /// InternalHosts file) or "csl:a,b".
        internal_hosts: HostList = default r#"["127.0.0.0/8", "::1"]"#;
        /// Postfix {daemon_name} values whose mail is outbound (milter_macro_daemon_name).
        daemon_names: Vec<String> = default "[]";
        /// Mail from SMTP-authenticated clients ({auth_authen}) is outbound.
        sign_authenticated: bool = default "true";
        /// header/body canonicalization: relaxed or simple.
        canonicalization: Canon = default r#""relaxed/simple""#;
        /// Header fields signed when present (From is required).
        sign_headers: Vec<String> = default r#"["From", "Reply-To", "Subject", "Date", "To", "Cc", "Resent-Date", "Resent-From", "Resent-To", "Resent-Cc", "In-Reply-To", "References", "List-Id", "List-Help", "List-Unsubscribe", "List-Unsubscribe-Post", "List-Subscribe", "List-Post", "List-Owner", "List-Archive", "Message-ID", "MIME-Version", "Content-Type", "Content-Transfer-Encoding", "Content-ID", "Content-Description"]"#;
        /// Fields signed once more than they occur, so none can be added later.
        oversign_headers: Vec<String> = default r#"["From"]"#;
        /// Signature lifetime (x= tag); leave out for no expiry.
        #[serde(with = "opt_duration")]
        expiration: Option<Duration> = eg r#""7d""#;
        /// Answer when a signature cannot be made: "tempfail" (451 4.7.1) or "accept"
        /// (unsigned).
        #[serde(with = "tempfail_or_accept")]
        on_signing_error: FailAction = default r#""tempfail""#;
    }
}

settings! {
    /// DKIM key rotation (`mailseal keys`): pending (record not yet seen) → published (record
    /// in DNS and matching) → active (signing) → retiring (still published, not used) →
    /// revoked (record to be p= empty) → removed. The KeyTable and SigningTable stay the
    /// admin's; a KeyTable row whose rotation made another key active signs with that key.
    pub struct Keys in "keys" {
        /// Rotation state (state.json) and the keys rotation generates, one directory per
        /// domain (the unit's state directory).
        dir: PathBuf = default r#""/var/lib/mailseal/keys""#;
        /// Selector of a new key: {a} = r (RSA) or e (Ed25519), {yyyy} {mm} {dd} = the date,
        /// {n} = a, b, c… (the first not yet used for the domain).
        selector_pattern: String = default r#""{a}{yyyy}{mm}{n}""#;
        /// A published key starts signing this long after its record was first seen, so
        /// that resolvers which cached the name's absence have forgotten it.
        #[serde(with = "duration")]
        activate_after: Duration = default r#""1h""#;
        /// A replaced key stays published, unused, this long (DNS TTLs, delayed and
        /// forwarded mail), then is revoked.
        #[serde(with = "duration")]
        retire_after: Duration = default r#""7d""#;
        /// A revoked key (record p= empty) is forgotten, its file deleted, this long after.
        #[serde(with = "duration")]
        remove_after: Duration = default r#""7d""#;
        /// Check a new key's record at the zone's authoritative servers (found through the
        /// resolver), each of which must serve it, so that a negative answer a caching
        /// resolver kept from before publication cannot delay the switch. false, or no name
        /// servers found: through the configured resolver.
        check_authoritative: bool = default "true";
        /// RSA size of generated keys: 2048, 3072 or 4096.
        rsa_bits: u32 = default "2048";
        /// The zone's primary server for RFC 2136 dynamic updates ("IP:PORT"): a new key's
        /// record, a revoked key's `p=` and a removed key's deletion are sent there, signed
        /// with tsig_key_file. Unset: the records are printed for you to publish.
        update_server: Option<SocketAddr> = eg r#""192.0.2.53:53""#;
        /// The TSIG key for updates, as `tsig-keygen` (BIND) or `keymgr -t` (knot) writes it
        /// (hmac-sha256, -384 or -512); mode 0600 or 0640 like a private key.
        tsig_key_file: Option<PathBuf> = eg r#""/etc/mailseal/update.tsig""#;
        /// Start a rotation on its own when a row's active key is this old (its record to
        /// publish is logged); unset = only `mailseal keys rotate` starts one. M3AAWG
        /// suggests "180d".
        #[serde(with = "opt_duration")]
        rotate_every: Option<Duration> = eg r#""180d""#;
        /// How often the daemon moves keys on (as `mailseal keys advance`) and picks up
        /// changes made by `mailseal keys`: a key that becomes active signs from then on,
        /// without a restart.
        #[serde(with = "duration")]
        check_every: Duration = default r#""1m""#;
        /// A PostgreSQL URL (it may be [reports] store's): the rotation state is kept there,
        /// shared by every signing host that names it, and state.json in `dir` is this host's
        /// copy. Each host reports which keys it holds; a new key becomes active only when
        /// every host signing for its domain holds its file. Private keys never go into the
        /// database: copy a new key file to the other hosts' `dir` yourself (configuration
        /// management). Unset: the state is state.json, this host's alone.
        store: Option<String> = eg r#""postgres://mailseal@db.example.net/mailseal""#;
    }
}

settings! {
    /// Inbound mail: how SPF, DKIM, DMARC and ARC are checked.
    pub struct Verify in "verify" {
        /// DNS failure that could change the DMARC result: "tempfail" (451 4.4.3) or "accept"
        /// (temperror recorded in Authentication-Results). Failures that cannot change it are
        /// only recorded.
        #[serde(with = "tempfail_or_accept")]
        on_dns_error: FailAction = default r#""tempfail""#;
        /// Most DKIM signatures evaluated per message, those that can align with the From
        /// domain first; the rest are reported as not evaluated.
        max_signatures: usize = default "10";
        /// Also add a Received-SPF header field.
        received_spf: bool = default "false";
        /// Check SPF for the HELO identity too (reported as smtp.helo).
        spf_helo: bool = default "true";
        /// Most SPF terms that query DNS (include, a, mx, ptr, exists, redirect) in one
        /// evaluation, the records they lead to included; past it: permerror (RFC 7208
        /// §4.6.4 sets 10). 1 to 50.
        spf_max_lookups: usize = default "10";
        /// Most SPF lookups that find no records (void lookups) in one evaluation; past it:
        /// permerror (RFC 7208 §4.6.4 suggests 2). 0 to 20.
        spf_max_void_lookups: usize = default "2";
        /// Upstream relays (a smarthost, a filtering gateway) whose SPF result for the original
        /// client is taken instead of checking SPF against the relay: tables of `hosts`
        /// (the relay's addresses, entries as in internal_hosts) and `authserv_ids` (the ids
        /// it writes). Only from a client in hosts, only the topmost Authentication-Results
        /// with one of those ids, and never our own authserv_id (ours are deleted on every
        /// path). E.g. [{ hosts = ["192.0.2.25"], authserv_ids = ["gw.example.net"] }].
        trusted_relays: Vec<TrustedRelay> = default "[]";
        /// Deadline for all checks of one message, which run concurrently; what has not
        /// finished is temperror. Must stay below Postfix's milter_content_timeout (300s).
        #[serde(with = "duration")]
        timeout: Duration = default r#""60s""#;
    }
}

settings! {
    /// What the sender's DMARC policy may do to a message.
    pub struct Dmarc in "dmarc" {
        /// true: reject p=reject failures (550 5.7.1) and apply quarantine_action to
        /// p=quarantine.
        enforce: bool = default "false";
        /// p=quarantine failure: "hold" (Postfix hold queue), "header" (record only) or
        /// "accept".
        quarantine_action: QuarantineAction = default r#""hold""#;
        /// Several From addresses or none: "strict" (dmarc=permerror, rejected when
        /// enforcing) or "first" (evaluate the first address).
        multiple_from: MultipleFrom = default r#""strict""#;
        /// Clients never rejected or held for DMARC (entries as in internal_hosts).
        never_reject: HostList = default "[]";
        /// Envelope sender (MAIL FROM) domains never rejected or held for DMARC (OpenDMARC's
        /// IgnoreMailFrom), only when SPF passes for that domain: an envelope domain is the
        /// sender's to choose, its SPF pass is not. Exact domains, no subdomains.
        never_reject_mail_from: Vec<String> = default "[]";
        /// SMTP-authenticated clients are never rejected or held for DMARC.
        never_reject_authenticated: bool = default "true";
        /// Enforcing, but no DMARC verdict is possible (an aligned DKIM signature could not be
        /// checked because its fields or the body were not kept: header or size caps, memory
        /// budget): "tempfail" (451 4.7.1, the sender retries) or "reject" (550 5.7.1). Never
        /// accepted.
        #[serde(with = "tempfail_or_reject")]
        on_unverifiable: FailAction = default r#""tempfail""#;
    }
}

settings! {
    /// The resolver.
    pub struct Dns in "dns" {
        /// Resolvers ("IP" or "IP:PORT"); empty = /etc/resolv.conf.
        #[serde(with = "nameservers")]
        nameservers: Vec<SocketAddr> = default "[]";
        /// Per-query timeout.
        #[serde(with = "duration")]
        timeout: Duration = default r#""5s""#;
        /// Attempts per server.
        #[serde(with = "positive")]
        attempts: usize = default "2";
        /// Memory for the answer cache, shared by every connection (emptied on reload).
        /// Answers (positive, and negative ones for their SOA's negative TTL up to 5 minutes)
        /// are kept for their TTL; the least recently used go first when it is full.
        #[serde(with = "size")]
        cache_bytes: usize = default r#""32M""#;
        /// No longer used (it counted answers before cache_bytes bounded the cache in bytes);
        /// accepted so that older configuration files still load.
        cache_size: usize = default "8192";
    }
}

settings! {
    /// Prometheus metrics.
    pub struct Metrics in "metrics" {
        /// Prometheus endpoint, GET /metrics (no authentication: keep it on loopback). Unset =
        /// off.
        listen: Option<SocketAddr> = eg r#""127.0.0.1:9101""#;
    }
}

settings! {
    /// DMARC aggregate reports (RFC 9990) and failure reports (RFC 9991).
    pub struct Reports in "reports" {
        /// Off while unset: nothing is recorded. A SQLite file (WAL; one host) or a
        /// postgres:// URL (one database shared by several MX hosts, so each domain gets one
        /// report covering all of them). A store that cannot be written loses report data,
        /// never mail.
        store: Option<String> = eg r#""/var/lib/mailseal/reports.sqlite""#;
        /// Reporter identity (required with store).
        org_name: Option<String> = eg r#""example.net""#;
        /// The address reports come from (required with store).
        email: Option<String> = eg r#""dmarc-reports@example.net""#;
        /// Where report receivers can learn more.
        extra_contact_info: Option<String> = eg r#""https://example.net/dmarc""#;
        /// "daily": the daemon sends the previous UTC day's reports shortly after midnight
        /// UTC. "off": run `mailseal reports send` yourself (cron or a systemd timer).
        schedule: Schedule = default r#""off""#;
        /// How reports leave: "smtp" (the relay below) or "sendmail" (the local sendmail
        /// command).
        transport: TransportKind = default r#""smtp""#;
        /// The SMTP relay.
        smtp_host: String = default r#""127.0.0.1""#;
        smtp_port: u16 = default "25";
        /// STARTTLS, as Postfix's smtp_tls_security_level: "none"; "opportunistic" (when
        /// offered, certificate not checked); "encrypt" (required, not checked; "required" is
        /// the same); "verify" (required, the certificate checked against smtp_ca_file or the
        /// system's roots, and the name smtp_host).
        smtp_tls: SmtpTls = default r#""opportunistic""#;
        /// CA certificates (PEM) that smtp_tls = "verify" trusts for the relay; default: the
        /// system's.
        smtp_ca_file: Option<PathBuf> = eg r#""/etc/mailseal/relay-ca.pem""#;
        /// SMTP AUTH PLAIN with the password file below (mode 0600). The password is sent
        /// only over smtp_tls = "verify", or over any TLS to a loopback relay.
        smtp_user: Option<String> = eg r#""dmarc-reports""#;
        smtp_password_file: Option<PathBuf> = eg r#""/etc/mailseal/relay.password""#;
        /// The sendmail command for transport = "sendmail".
        sendmail: PathBuf = default r#""/usr/sbin/sendmail""#;
        /// Domains (and their subdomains) never recorded or reported on, and never sent a
        /// report as a destination.
        suppress: Vec<String> = default "[]";
        /// Aggregate reports handed on per send run, over all destinations; past it the rest
        /// are withheld (logged, counted, dropped: not retried), so that a flood of spoofed
        /// domains cannot make this host a report cannon.
        max_reports_per_run: usize = default "1000";
        /// Aggregate reports handed on per destination domain per send run; past it, withheld
        /// as above.
        max_reports_per_destination: usize = default "50";
        /// Most rows (source address and results) in one aggregate report: the most frequent
        /// are kept, the rest summed up in the report's error element, so that a spoofer who
        /// makes every message its own row cannot make a report, or the memory to build it,
        /// grow without bound.
        #[serde(with = "positive")]
        max_rows: usize = default "5000";
        /// Largest report message sent, whatever a destination's !size allows.
        #[serde(with = "size")]
        max_size: usize = default r#""10M""#;
        /// Records and reports older than this are deleted at each send run (at least 2
        /// days).
        #[serde(with = "duration")]
        retention: Duration = default r#""14d""#;
        /// Delivery attempts (one per run) before a report is given up.
        #[serde(with = "positive")]
        max_attempts: usize = default "5";
        /// Evaluations waiting for the store writer; past this they are dropped and counted.
        #[serde(with = "positive")]
        queue: usize = default "10000";
        /// DMARC failure reports (RFC 9991): one ARF message (header section only, never the
        /// body) per failing message to the domain's ruf= addresses, sent as above. Needs
        /// org_name and email.
        failure_reports: bool = default "false";
        /// Failure reports per policy domain per hour (ten times this over all domains).
        failure_rate: u32 = default "10";
        /// In the header section a failure report copies to a third party, replace our
        /// recipients' local parts with "redacted" (To, Cc, Delivered-To, X-Original-To and
        /// "for <...>" in Received).
        failure_redact: bool = default "true";
    }
}

settings! {
    /// Reading the reports the world sends about our domains: DMARC aggregate reports (RFC
    /// 7489 and RFC 9990 XML, plain, gzip or zip), TLS-RPT (RFC 8460 JSON, plain or gzip) and
    /// DMARC failure reports (ARF). Kept in [reports] store (required). `mailseal reports
    /// import` reads files; with addresses set, the daemon reads the mail sent to them.
    pub struct Intake in "intake" {
        /// Mail to these addresses is read as reports, after it is accepted and off the milter
        /// path (the milter then also asks for the recipients). A report that cannot be read
        /// never delays or fails the mail it came in.
        addresses: Vec<String> = default "[]";
        /// The domains reports are kept for; a report about another domain is dropped and
        /// counted. Empty: the d= domains of the KeyTable (required when it has % rows).
        domains: Vec<String> = default "[]";
        /// false: the report addresses are removed from the message's recipients once it is
        /// read (the message is discarded when no other recipient remains).
        keep_messages: bool = default "true";
        /// Messages larger than this are not read (refused as oversize, the mail itself is
        /// delivered as usual).
        #[serde(with = "size")]
        max_message_size: usize = default r#""10M""#;
        /// Most bytes one report may decompress to, whatever its compressed size; past it
        /// the report is refused.
        #[serde(with = "size")]
        max_report_size: usize = default r#""64M""#;
        /// Most a compressed report may expand relative to its compressed size (a bomb's
        /// ratio is in the thousands; real reports stay far below 100).
        #[serde(with = "positive")]
        max_ratio: usize = default "200";
        /// Imported reports are deleted this long after they were imported.
        #[serde(with = "duration")]
        retention: Duration = default r#""400d""#;
        /// Messages the reader is told about at once; more wait in the spool for its next
        /// round (a minute).
        #[serde(with = "positive")]
        queue: usize = default "32";
        /// Where each message for the report addresses is kept (synced to disk, at most
        /// 256 MiB in all) until its reports are stored: a store that is down, a restart or
        /// a crash delays a report, never loses it.
        spool: PathBuf = default r#""/var/lib/mailseal/intake""#;
    }
}

settings! {
    /// A web page joining what receivers reported (report intake) with what we signed, per
    /// domain and time range. Everything it needs is served by mailseal itself (no CDN, no
    /// external font or script): it works on an air-gapped host.
    pub struct Dashboard in "dashboard" {
        /// Where to serve it, e.g. "127.0.0.1:9102". Unset: off. An address other than
        /// loopback requires tls_cert, tls_key and password_file (or put a reverse proxy
        /// with TLS and authentication in front of a loopback listener).
        listen: Option<SocketAddr> = eg r#""127.0.0.1:9102""#;
        /// PEM certificate chain and private key for HTTPS.
        tls_cert: Option<PathBuf> = eg r#""/etc/mailseal/dashboard.crt""#;
        tls_key: Option<PathBuf> = eg r#""/etc/mailseal/dashboard.key""#;
        /// HTTP basic authentication: lines `user:password`, a file as private as a key
        /// (0600 or 0640).
        password_file: Option<PathBuf> = eg r#""/etc/mailseal/dashboard.passwd""#;
        /// Reverse-name suffixes of known forwarders (mailing lists, forwarding services):
        /// their DKIM-pass, SPF-fail mail is shown as forwarding, not spoofing.
        forwarders: Vec<String> = default "[]";
    }
}
