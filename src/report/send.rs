//! `mailseal reports send` and the daily run inside the daemon: claim what is unreported,
//! build one report per policy domain and UTC day, check its destinations and submit it.
//!
//! Rules (RFC 9990):
//! - A `rua=` address outside the policy domain is used only when
//!   `<policy-domain>._report._dmarc.<destination-domain>` publishes `v=DMARC1` (§3).
//! - An address whose `!size` limit the encoded report exceeds is skipped (§2.5), and so is
//!   any report over `[reports] max_size`.
//! - Reports are never sent to our own report address, nor to suppressed domains (loops).
//! - A report that could not be delivered is retried at the next run with the same Report-ID
//!   and file name, up to `max_attempts`.

use std::io::Write;
use std::path::PathBuf;

use base64::Engine;

use super::destination::{authorization, mailbox_domain, Authorization};
use super::store::{DeliveryStatus, Group, ReportRow, ReportStatus, Store};
use super::xml::{feedback, ReportMeta, Reporter};
use super::Published;
use crate::config::Config;
use crate::dns::{Cache, Resolver};
use crate::metrics::Counter;

/// Why a send run stopped.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("reports are off: set [reports] store in the configuration")]
    Off,
    #[error("report store: {0}")]
    Store(#[from] super::store::StoreError),
    #[error(transparent)]
    Dns(#[from] crate::dns::DnsError),
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A temporary DNS failure while checking report destinations: try again at the next run.
#[derive(Debug, thiserror::Error)]
#[error("checking report destinations: {0}")]
pub struct DestinationsUnknown(#[from] super::destination::Unknown);

/// What `reports send` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// Build the reports but claim, mark and send nothing.
    pub dry_run: bool,
    /// With `dry_run`: write each report's `.xml.gz` file here.
    pub out: Option<PathBuf>,
    /// Only records received at or after this time.
    pub since: i64,
    /// Only records received before this time (default: the start of the current UTC day).
    pub until: i64,
    /// Where deliveries are counted (the daemon's registry; the command's own otherwise).
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// One report's fate, for the summary printed by the command.
#[derive(Debug, Clone)]
pub struct Sent {
    pub policy_domain: String,
    pub filename: String,
    pub records: usize,
    pub messages: i64,
    /// What happened, one entry per destination (or why there was none).
    pub notes: Vec<String>,
    pub delivered: usize,
    /// Delivery failed for now; the report is tried again at the next run.
    pub retry: bool,
}

/// A report ready to go.
pub struct Built {
    pub filename: String,
    pub gz: Vec<u8>,
    pub xml: String,
}

pub fn unique_id() -> String {
    let mut b = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        // Not expected; the time keeps the id unique enough per run.
        b = (super::now() as u64).to_be_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// RFC 9990 §2.5: receiver!policy-domain!begin!end!unique-id.xml.gz
pub fn filename(receiver: &str, r: &ReportRow) -> String {
    format!(
        "{receiver}!{}!{}!{}!{}.xml.gz",
        r.policy_domain, r.begin, r.end, r.unique_id
    )
}

pub fn build(
    config: &Config,
    r: &ReportRow,
    policy: &Published,
    groups: &[Group],
    error: Option<&str>,
) -> Built {
    let rc = &config.reports;
    let who = Reporter {
        org_name: rc.org(),
        email: rc.from_address(),
        extra_contact_info: rc.extra_contact_info.as_deref(),
    };
    let meta = ReportMeta {
        report_id: &r.report_id,
        policy_domain: &r.policy_domain,
        begin: r.begin,
        end: r.end,
        error,
    };
    let xml = feedback(&who, &meta, policy, groups);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(xml.as_bytes());
    let gz = enc.finish().unwrap_or_default();
    Built {
        filename: filename(rc.receiver(), r),
        gz,
        xml,
    }
}

/// The report as an RFC 5322 / MIME message (CRLF line ends).
pub fn message(config: &Config, r: &ReportRow, built: &Built, rcpt: &str) -> Vec<u8> {
    let rc = &config.reports;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&built.gz);
    let boundary = format!("=_mailseal_{}", r.unique_id);
    let mut m = String::with_capacity(b64.len() + 2048);
    let name = rc.org().replace(['"', '\\', '\r', '\n'], "");
    m.push_str(&format!("From: \"{name}\" <{}>\r\n", rc.from_address()));
    m.push_str(&format!("To: <{rcpt}>\r\n"));
    m.push_str(&format!(
        "Subject: Report Domain: {}\r\n Submitter: {}\r\n Report-ID: <{}>\r\n",
        r.policy_domain,
        rc.receiver(),
        r.report_id
    ));
    m.push_str(&format!("Date: {}\r\n", super::rfc5322_date(super::now())));
    m.push_str(&format!("Message-ID: <{}>\r\n", r.report_id));
    m.push_str("Auto-Submitted: auto-generated\r\n");
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str(&format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n"
    ));
    m.push_str("This is a multi-part message in MIME format.\r\n\r\n");
    m.push_str(&format!("--{boundary}\r\n"));
    m.push_str("Content-Type: text/plain; charset=us-ascii\r\n\r\n");
    m.push_str(&format!(
        "This is a DMARC aggregate report (RFC 9990) from {} for {},\r\n\
         covering {} to {} UTC. The report is attached as {}.\r\n\r\n",
        rc.receiver(),
        r.policy_domain,
        humantime::format_rfc3339_seconds(unix(r.begin)),
        humantime::format_rfc3339_seconds(unix(r.end)),
        built.filename
    ));
    m.push_str(&format!("--{boundary}\r\n"));
    m.push_str(&format!(
        "Content-Type: application/gzip; name=\"{}\"\r\n",
        built.filename
    ));
    m.push_str("Content-Transfer-Encoding: base64\r\n");
    m.push_str(&format!(
        "Content-Disposition: attachment; filename=\"{}\"\r\n\r\n",
        built.filename
    ));
    for chunk in b64.as_bytes().chunks(76) {
        m.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        m.push_str("\r\n");
    }
    m.push_str(&format!("--{boundary}--\r\n"));
    m.into_bytes()
}

fn unix(t: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64)
}

/// Where a report may go, after the checks of RFC 9990 §3 ([`super::destination`]) and our
/// loop rules. `Err` is a temporary DNS failure: try again at the next run.
pub async fn destinations(
    rc: &crate::config::Reports,
    resolver: &Resolver,
    policy_domain: &str,
    rua: &[(String, usize)],
    notes: &mut Vec<String>,
) -> Result<Vec<(String, usize)>, DestinationsUnknown> {
    let mut out = Vec::new();
    for (addr, max) in rua {
        let addr = addr.trim().to_ascii_lowercase();
        let domain = match mailbox_domain(&addr) {
            Ok(d) => d,
            Err(e) => {
                notes.push(format!("{addr}: {e}, skipped"));
                continue;
            }
        };
        if addr == rc.from_address().to_ascii_lowercase() {
            notes.push(format!("{addr}: our own report address, skipped (loop)"));
            continue;
        }
        if rc.suppressed(domain) {
            notes.push(format!("{addr}: suppressed domain, skipped"));
            continue;
        }
        match authorization(resolver, policy_domain, domain).await? {
            Authorization::SameOrganization | Authorization::Authorized(_) => {
                out.push((addr, *max));
            }
            Authorization::NotAuthorized(name) => notes.push(format!(
                "{addr}: external destination not authorized ({name} has no v=DMARC1 record), skipped"
            )),
        }
    }
    Ok(out)
}

/// Run a send pass. Store work is blocking; DNS and SMTP run on `rt`. Never call it from an
/// async task (use `spawn_blocking`).
pub fn run(
    config: &Config,
    opts: &SendOptions,
    rt: &tokio::runtime::Handle,
) -> Result<Vec<Sent>, SendError> {
    let rc = &config.reports;
    let spec = rc.store().ok_or(SendError::Off)?;
    let mut store = Store::open(&spec)?;
    let auth = {
        let _guard = rt.enter();
        Resolver::new(
            crate::dns::authenticator(&config.dns)?,
            // Its own cache and counters: the daemon's gauges describe the milter's cache.
            std::sync::Arc::new(Cache::new(
                config.dns.cache_bytes,
                std::sync::Arc::default(),
            )),
        )
    };
    let receiver = rc.receiver().to_string();
    let mut out = Vec::new();

    if opts.dry_run {
        if let Some(dir) = &opts.out {
            std::fs::create_dir_all(dir).map_err(|source| SendError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        for (domain, day) in store.unclaimed(opts.since, opts.until)? {
            let r = ReportRow::new(&domain, day, opts.since, opts.until, unique_id(), &receiver);
            let (groups, overflow) =
                store.unclaimed_groups(&domain, r.begin, r.end, rc.max_rows)?;
            let policy = store.latest_policy(None, &domain)?;
            let Some(policy) = policy.filter(|_| !groups.is_empty()) else {
                continue;
            };
            let error = overflow.note(rc.max_rows);
            let built = build(config, &r, &policy, &groups, error.as_deref());
            let mut notes = Vec::new();
            if rc.suppressed(&domain) {
                notes.push("suppressed domain: would not be sent".into());
            } else {
                match rt.block_on(destinations(rc, &auth, &domain, &policy.rua, &mut notes)) {
                    Ok(d) => notes.extend(d.iter().map(|(a, _)| format!("would send to {a}"))),
                    Err(e) => notes.push(e.to_string()),
                }
            }
            if let Some(dir) = &opts.out {
                let path = dir.join(&built.filename);
                std::fs::write(&path, &built.gz).map_err(|source| SendError::Io {
                    path: path.clone(),
                    source,
                })?;
            }
            out.push(Sent {
                policy_domain: domain,
                filename: built.filename,
                records: groups.len(),
                messages: groups.iter().map(|g| g.count).sum(),
                notes,
                delivered: 0,
                retry: false,
            });
        }
        return Ok(out);
    }

    let purged = store.purge(super::now() - rc.retention.as_secs() as i64)?;
    if purged > 0 {
        tracing::info!("reports: {purged} record(s) older than the retention period deleted");
    }
    let claimed = store.claim(opts.since, opts.until, &receiver, unique_id)?;
    if !claimed.is_empty() {
        tracing::info!("reports: {} new report(s) to send", claimed.len());
    }
    // Long enough for every destination's SMTP timeouts.
    let mut ceiling = Ceiling::default();
    for r in store.take_pending(3600)? {
        let sent = deliver_one(
            config,
            &mut store,
            &auth,
            rt,
            &r,
            &opts.metrics,
            &mut ceiling,
        )?;
        out.push(sent);
    }
    Ok(out)
}

/// What one run has handed on so far: in all, and per destination domain.
#[derive(Default)]
struct Ceiling {
    total: usize,
    per_domain: std::collections::HashMap<String, usize>,
}

impl Ceiling {
    /// May one more report go to `domain`? `Err`: the rule that withholds it.
    fn take(&mut self, rc: &crate::config::Reports, domain: &str) -> Result<(), String> {
        if self.total >= rc.max_reports_per_run {
            return Err(format!("max_reports_per_run = {}", rc.max_reports_per_run));
        }
        let n = self.per_domain.entry(domain.to_string()).or_insert(0);
        if *n >= rc.max_reports_per_destination {
            return Err(format!(
                "max_reports_per_destination = {} for {domain}",
                rc.max_reports_per_destination
            ));
        }
        *n += 1;
        self.total += 1;
        Ok(())
    }
}

fn deliver_one(
    config: &Config,
    store: &mut Store,
    auth: &Resolver,
    rt: &tokio::runtime::Handle,
    r: &ReportRow,
    metrics: &crate::metrics::Metrics,
    ceiling: &mut Ceiling,
) -> Result<Sent, SendError> {
    let rc = &config.reports;
    let (groups, overflow) = store.report_groups(&r.report_id, rc.max_rows)?;
    let policy = store.latest_policy(Some(&r.report_id), &r.policy_domain)?;
    let mut sent = Sent {
        policy_domain: r.policy_domain.clone(),
        filename: filename(rc.receiver(), r),
        records: groups.len(),
        messages: groups.iter().map(|g| g.count).sum(),
        notes: Vec::new(),
        delivered: 0,
        retry: false,
    };
    let mark = |store: &mut Store, status: ReportStatus, note: &str| {
        store.mark(&r.report_id, status, Some(note))
    };
    let Some(policy) = policy.filter(|_| !groups.is_empty()) else {
        sent.notes
            .push("no records left (deleted by retention)".into());
        mark(store, ReportStatus::Empty, "no records")?;
        return Ok(sent);
    };
    if rc.suppressed(&r.policy_domain) {
        sent.notes.push("suppressed domain, not sent".into());
        mark(store, ReportStatus::Suppressed, "suppressed domain")?;
        return Ok(sent);
    }
    let error = overflow.note(rc.max_rows);
    let built = build(config, r, &policy, &groups, error.as_deref());
    let dests = match rt.block_on(destinations(
        rc,
        auth,
        &r.policy_domain,
        &policy.rua,
        &mut sent.notes,
    )) {
        Ok(d) => d,
        Err(e) => {
            sent.notes.push(format!("{e}; will try again"));
            retry_or_give_up(config, store, r, &e.to_string(), &mut sent, metrics)?;
            return Ok(sent);
        }
    };
    let helo = config.host_name.clone();
    let mut temp_errors = Vec::new();
    let mut withheld = 0;
    let mut already = 0;
    let id = r.report_id.as_str();
    for (rcpt, max) in &dests {
        // Each destination once: a retry goes only where it did not arrive.
        match store.delivery(id, rcpt)? {
            None | Some(DeliveryStatus::Deferred) => {}
            Some(done) => {
                if done == DeliveryStatus::Sent {
                    already += 1;
                }
                sent.notes.push(format!("{rcpt}: already {done}"));
                continue;
            }
        }
        let msg = message(config, r, &built, rcpt);
        let too_big = if msg.len() > rc.max_size {
            Some(format!(
                "{rcpt}: report is {} bytes, over reports.max_size ({}), skipped",
                msg.len(),
                rc.max_size
            ))
        } else if *max > 0 && msg.len() > *max {
            // §2.5: the limit applies to the report as it is sent: the whole message.
            Some(format!(
                "{rcpt}: report is {} bytes, over the !{max} limit, skipped",
                msg.len()
            ))
        } else {
            None
        };
        if let Some(note) = too_big {
            store.record_delivery(id, rcpt, DeliveryStatus::Skipped, Some(&note))?;
            sent.notes.push(note);
            continue;
        }
        let domain = rcpt.rsplit_once('@').map_or("", |(_, d)| d);
        if let Err(rule) = ceiling.take(rc, domain) {
            withheld += 1;
            metrics.inc(Counter::Reports, &[("outcome", "withheld")]);
            tracing::warn!(
                "reports: {} to {rcpt} withheld ({rule}); not retried",
                sent.filename
            );
            let note = format!("{rcpt}: withheld ({rule})");
            store.record_delivery(id, rcpt, DeliveryStatus::Withheld, Some(&note))?;
            sent.notes.push(note);
            continue;
        }
        match rt.block_on(super::smtp::submit(
            &rc.transport(),
            &helo,
            rc.from_address(),
            rcpt,
            &msg,
        )) {
            Ok(()) => {
                store.record_delivery(id, rcpt, DeliveryStatus::Sent, None)?;
                sent.delivered += 1;
                sent.notes.push(format!("{rcpt}: sent"));
                metrics.inc(Counter::Reports, &[("outcome", "sent")]);
                tracing::info!(
                    "reports: {} sent to {rcpt} ({} records, {} messages)",
                    sent.filename,
                    sent.records,
                    sent.messages
                );
            }
            Err(e) => {
                tracing::warn!("reports: {} to {rcpt}: {e}", sent.filename);
                let note = format!("{rcpt}: {e}");
                store.record_delivery(id, rcpt, DeliveryStatus::Deferred, Some(&note))?;
                sent.notes.push(note.clone());
                temp_errors.push(note);
            }
        }
    }
    if !temp_errors.is_empty() {
        // Some destination is still owed the report.
        retry_or_give_up(
            config,
            store,
            r,
            &temp_errors.join("; "),
            &mut sent,
            metrics,
        )?;
    } else if sent.delivered + already > 0 {
        mark(store, ReportStatus::Sent, "sent")?;
    } else if withheld > 0 {
        mark(store, ReportStatus::Undeliverable, &sent.notes.join("; "))?;
    } else {
        sent.notes.push("no usable destination".into());
        mark(store, ReportStatus::Undeliverable, &sent.notes.join("; "))?;
    }
    Ok(sent)
}

fn retry_or_give_up(
    config: &Config,
    store: &mut Store,
    r: &ReportRow,
    error: &str,
    sent: &mut Sent,
    metrics: &crate::metrics::Metrics,
) -> Result<(), SendError> {
    let give_up = r.attempts + 1 >= config.reports.max_attempts as i64;
    let status = if give_up {
        ReportStatus::Failed
    } else {
        ReportStatus::Pending
    };
    sent.retry = !give_up;
    if give_up {
        metrics.inc(Counter::Reports, &[("outcome", "gave_up")]);
        sent.notes.push(format!(
            "gave up after {} attempts",
            config.reports.max_attempts
        ));
    } else {
        metrics.inc(Counter::Reports, &[("outcome", "failed")]);
    }
    Ok(store.mark(&r.report_id, status, Some(error))?)
}
