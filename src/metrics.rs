//! Prometheus metrics: counters and histograms kept in memory, served as text at
//! `GET /metrics` on `[metrics] listen` when configured.
//!
//! One registry per daemon, built once and shared (metrics outlive configuration reloads).
//! Updates take a short mutex; a message causes a handful of them. Every series with a known
//! label value is exported from the start, at zero, so that rates and alerts work before the
//! first event; the process metrics (CPU, memory, descriptors) are read from /proc.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Histogram bucket bounds (seconds) for lookup latency.
const BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

pub struct Metrics {
    counters: Mutex<BTreeMap<(Counter, Labels), u64>>,
    histograms: Mutex<BTreeMap<(Timing, Labels), Histogram>>,
    active_connections: AtomicI64,
    dns_cache_bytes: AtomicI64,
    dns_cache_entries: AtomicI64,
    /// Unix time of the last successful configuration load (the start, then each reload).
    last_reload_success: AtomicI64,
    /// 1 when the last reload succeeded (or none was tried), 0 when it failed.
    last_reload_ok: AtomicI64,
    /// Every signing key: (domain, selector, algorithm, state, age in days).
    key_states: Mutex<Vec<KeyState>>,
}

/// One signing key as the metrics show it.
#[derive(Debug, Clone)]
pub struct KeyState {
    pub domain: String,
    pub selector: String,
    pub algorithm: String,
    pub state: String,
    pub age_days: i64,
}

impl Default for Metrics {
    /// Every known series at zero.
    fn default() -> Metrics {
        let m = Metrics {
            counters: Mutex::default(),
            histograms: Mutex::default(),
            active_connections: AtomicI64::new(0),
            dns_cache_bytes: AtomicI64::new(0),
            dns_cache_entries: AtomicI64::new(0),
            last_reload_success: AtomicI64::new(unix_now()),
            last_reload_ok: AtomicI64::new(1),
            key_states: Mutex::default(),
        };
        for counter in Counter::ALL {
            for labels in counter.known() {
                m.add(counter, &labels, 0);
            }
        }
        if let Ok(mut h) = m.histograms.lock() {
            for timing in Timing::ALL {
                let (key, values) = timing.label();
                for v in values {
                    h.entry((timing, vec![(key, v.to_string())])).or_default();
                }
            }
        }
        m
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The checks that count results and DNS errors.
const METHODS: [&str; 4] = ["spf", "dkim", "dmarc", "arc"];
/// The decisions a message gets.
const DECISIONS: [&str; 3] = ["sign", "verify", "skip"];

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// A counter mailseal exports: its name and meaning written once, here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Counter {
    Messages,
    Results,
    Replies,
    DnsErrors,
    ReportRecords,
    Reports,
    FailureReports,
    DnsCache,
    Reloads,
    Intake,
}

impl Counter {
    const ALL: [Counter; 10] = [
        Counter::Messages,
        Counter::Results,
        Counter::Replies,
        Counter::DnsErrors,
        Counter::ReportRecords,
        Counter::Reports,
        Counter::FailureReports,
        Counter::DnsCache,
        Counter::Reloads,
        Counter::Intake,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Counter::Messages => "mailseal_messages_total",
            Counter::Results => "mailseal_results_total",
            Counter::Replies => "mailseal_replies_total",
            Counter::DnsErrors => "mailseal_dns_errors_total",
            Counter::ReportRecords => "mailseal_report_records_total",
            Counter::Reports => "mailseal_reports_total",
            Counter::FailureReports => "mailseal_failure_reports_total",
            Counter::DnsCache => "mailseal_dns_cache_lookups_total",
            Counter::Reloads => "mailseal_config_reloads_total",
            Counter::Intake => "mailseal_intake_reports_total",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Counter::Messages => "Messages by decision (sign, verify, skip).",
            Counter::Results => "Authentication results by method and result.",
            Counter::Replies => "Answers given to the MTA at end of message or headers.",
            Counter::DnsErrors => "DNS failures (temperror) by method.",
            Counter::ReportRecords => {
                "DMARC evaluations for aggregate reports: stored, dropped (queue full) or lost (store failed)."
            }
            Counter::Reports => "Aggregate report deliveries by outcome (sent, failed, gave_up, withheld).",
            Counter::FailureReports => {
                "DMARC failure reports by outcome (sent, failed, rate_limited, dropped)."
            }
            Counter::DnsCache => {
                "DNS questions of the checks by how they were answered: hit (from the cache), joined (a query already on the wire), miss (asked)."
            }
            Counter::Reloads => "Configuration reloads (SIGHUP) by result (success, failure).",
            Counter::Intake => {
                "Reports read from mail to [intake] addresses: stored, duplicate, other_domain (not ours), refused, spooled (waiting in the spool for the store), dropped (neither spool nor queue could take it: the mail went to the report addresses), lost (the store failed on a message the spool could not take)."
            }
        }
    }

    /// Every label set the counter can have, for the zero series exported from the start.
    fn known(self) -> Vec<Vec<(&'static str, &'static str)>> {
        let one = |key: &'static str,
                   values: &[&'static str]|
         -> Vec<Vec<(&'static str, &'static str)>> {
            values.iter().map(|v| vec![(key, *v)]).collect()
        };
        match self {
            Counter::Messages => one("decision", &DECISIONS),
            Counter::Results => METHODS
                .iter()
                .flat_map(|m| {
                    crate::results::Word::ALL
                        .iter()
                        .map(move |w| vec![("method", *m), ("result", w.as_str())])
                })
                .collect(),
            Counter::Replies => one("reply", &["accept", "hold", "tempfail", "reject"]),
            Counter::DnsErrors => one("method", &METHODS),
            Counter::ReportRecords => one("outcome", &["stored", "dropped", "lost"]),
            Counter::Reports => one("outcome", &["sent", "failed", "gave_up", "withheld"]),
            Counter::FailureReports => {
                one("outcome", &["sent", "failed", "rate_limited", "dropped"])
            }
            Counter::DnsCache => one("result", &["hit", "joined", "miss"]),
            Counter::Reloads => one("result", &["success", "failure"]),
            Counter::Intake => one(
                "outcome",
                &[
                    "stored",
                    "duplicate",
                    "other_domain",
                    "refused",
                    "dropped",
                    "lost",
                ],
            ),
        }
    }
}

/// A latency histogram mailseal exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timing {
    DnsLookup,
    Message,
}

impl Timing {
    const ALL: [Timing; 2] = [Timing::DnsLookup, Timing::Message];

    pub fn name(self) -> &'static str {
        match self {
            Timing::DnsLookup => "mailseal_dns_lookup_seconds",
            Timing::Message => "mailseal_message_seconds",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Timing::DnsLookup => {
                "Time spent in each DNS-bound check (spf, dkim, arc, dmarc) of one message."
            }
            Timing::Message => {
                "Time mailseal holds a message at end of data (signing, or every check and the decision), by decision."
            }
        }
    }

    /// The histogram's label and its values.
    fn label(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Timing::DnsLookup => ("phase", &METHODS),
            Timing::Message => ("decision", &DECISIONS),
        }
    }
}

const ACTIVE_CONNECTIONS: (&str, &str) = (
    "mailseal_active_connections",
    "Milter connections open now.",
);

impl Metrics {
    pub fn inc(&self, name: Counter, labels: &[(&'static str, &str)]) {
        self.add(name, labels, 1);
    }

    pub fn add(&self, name: Counter, labels: &[(&'static str, &str)], n: u64) {
        let key = (
            name,
            labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        );
        if let Ok(mut c) = self.counters.lock() {
            *c.entry(key).or_insert(0) += n;
        }
    }

    pub fn observe(&self, name: Timing, labels: &[(&'static str, &str)], value: Duration) {
        let secs = value.as_secs_f64();
        let key = (
            name,
            labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        );
        if let Ok(mut h) = self.histograms.lock() {
            let h = h.entry(key).or_default();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    h.counts[i] += 1;
                }
            }
            h.sum += secs;
            h.count += 1;
        }
    }

    /// Count each method's result, and DNS failures, for one verified message.
    pub fn record_results(&self, r: &crate::results::AuthResults) {
        use crate::results::Word;
        let dkim = r.dkim_words();
        let dkim = if dkim.is_empty() {
            vec![Word::None]
        } else {
            dkim
        };
        for (method, word) in [
            ("spf", r.spf.result),
            ("dmarc", r.dmarc.result),
            ("arc", r.arc.result),
        ]
        .into_iter()
        .chain(dkim.into_iter().map(|w| ("dkim", w)))
        {
            self.inc(
                Counter::Results,
                &[("method", method), ("result", word.as_str())],
            );
            if word == Word::TempError {
                self.inc(Counter::DnsErrors, &[("method", method)]);
            }
        }
    }

    /// What the DNS answer cache holds now.
    pub fn set_dns_cache(&self, bytes: usize, entries: usize) {
        self.dns_cache_bytes.store(bytes as i64, Ordering::Relaxed);
        self.dns_cache_entries
            .store(entries as i64, Ordering::Relaxed);
    }

    /// A configuration reload: counted, and its time kept when it succeeded.
    pub fn reloaded(&self, ok: bool) {
        self.inc(
            Counter::Reloads,
            &[("result", if ok { "success" } else { "failure" })],
        );
        self.last_reload_ok.store(i64::from(ok), Ordering::Relaxed);
        if ok {
            self.last_reload_success
                .store(unix_now(), Ordering::Relaxed);
        }
    }

    /// The signing keys and their rotation states, now.
    pub fn set_key_states(&self, keys: Vec<KeyState>) {
        if let Ok(mut k) = self.key_states.lock() {
            *k = keys;
        }
    }

    /// A guard that counts one open connection until dropped.
    pub fn connection(self: &Arc<Self>) -> ConnectionGuard {
        self.active_connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        fn labels(l: &Labels, extra: Option<(&str, String)>) -> String {
            let mut parts: Vec<String> = l
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect();
            if let Some((k, v)) = extra {
                parts.push(format!("{k}=\"{v}\""));
            }
            if parts.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", parts.join(","))
            }
        }
        let mut out = String::new();
        let counters = self
            .counters
            .lock()
            .map(|c| c.iter().map(|(k, v)| (k.clone(), *v)).collect::<Vec<_>>());
        let histograms = self.histograms.lock();
        for counter in Counter::ALL {
            let name = counter.name();
            let _ = writeln!(
                out,
                "# HELP {name} {}\n# TYPE {name} counter",
                counter.help()
            );
            for ((c, l), v) in counters.iter().flatten() {
                if *c == counter {
                    let _ = writeln!(out, "{name}{} {v}", labels(l, None));
                }
            }
        }
        for timing in Timing::ALL {
            let name = timing.name();
            let _ = writeln!(
                out,
                "# HELP {name} {}\n# TYPE {name} histogram",
                timing.help()
            );
            for ((t, l), h) in histograms.iter().flat_map(|hs| hs.iter()) {
                if *t != timing {
                    continue;
                }
                for (i, bound) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {}",
                        labels(l, Some(("le", bound.to_string()))),
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}",
                    labels(l, Some(("le", "+Inf".into()))),
                    h.count
                );
                let _ = writeln!(out, "{name}_sum{} {}", labels(l, None), h.sum);
                let _ = writeln!(out, "{name}_count{} {}", labels(l, None), h.count);
            }
        }
        let (name, help) = ACTIVE_CONNECTIONS;
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
            self.active_connections.load(Ordering::Relaxed)
        );
        for (name, help, v) in [
            (
                "mailseal_dns_cache_bytes",
                "Memory the DNS answer cache holds (bounded by [dns] cache_bytes).",
                &self.dns_cache_bytes,
            ),
            (
                "mailseal_dns_cache_entries",
                "Answers the DNS cache holds.",
                &self.dns_cache_entries,
            ),
            (
                "mailseal_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful configuration load (start or reload).",
                &self.last_reload_success,
            ),
            (
                "mailseal_config_last_reload_successful",
                "1 when the last reload succeeded (or none was tried), 0 when it failed.",
                &self.last_reload_ok,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let esc = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(
            out,
            "# HELP mailseal_key_state Signing keys by rotation state (1 per key).\n# TYPE mailseal_key_state gauge"
        );
        let keys = self
            .key_states
            .lock()
            .map(|k| k.clone())
            .unwrap_or_default();
        for k in &keys {
            let _ = writeln!(
                out,
                "mailseal_key_state{{domain=\"{}\",selector=\"{}\",algorithm=\"{}\",state=\"{}\"}} 1",
                esc(&k.domain),
                esc(&k.selector),
                esc(&k.algorithm),
                esc(&k.state)
            );
        }
        let _ = writeln!(
            out,
            "# HELP mailseal_key_age_days Days since each signing key was made (since the last rotation, for an active key).\n# TYPE mailseal_key_age_days gauge"
        );
        for k in &keys {
            let _ = writeln!(
                out,
                "mailseal_key_age_days{{domain=\"{}\",selector=\"{}\"}} {}",
                esc(&k.domain),
                esc(&k.selector),
                k.age_days
            );
        }
        let _ = writeln!(
            out,
            "# HELP mailseal_build_info The running version.\n# TYPE mailseal_build_info gauge\nmailseal_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        process_metrics(&mut out);
        out
    }
}

/// The standard process_* series, from /proc (Linux).
fn process_metrics(out: &mut String) {
    // SAFETY: sysconf only reads system constants.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as f64,
        )
    };
    let mut gauge = |name: &str, kind: &str, help: &str, v: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    };
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
        if let (Some(utime), Some(stime)) = (field(14), field(15)) {
            gauge(
                "process_cpu_seconds_total",
                "counter",
                "User and system CPU time spent, in seconds.",
                (utime + stime) / ticks,
            );
        }
        if let Some(vsize) = field(23) {
            gauge(
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                vsize,
            );
        }
        if let Some(rss) = field(24) {
            gauge(
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                rss * page,
            );
        }
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        });
        if let (Some(start), Some(boot)) = (field(22), boot) {
            gauge(
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since the Unix epoch, in seconds.",
                boot + start / ticks,
            );
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            "process_open_fds",
            "gauge",
            "Open file descriptors.",
            fds.count() as f64,
        );
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        gauge(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            limit.rlim_cur as f64,
        );
    }
}

pub struct ConnectionGuard(Arc<Metrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.active_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An HTTP request head: read for at most 5 s and 8 KiB (what the metrics and dashboard
/// servers answer; neither takes a body). `None` when the client was too slow.
pub(crate) async fn read_head<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Option<String> {
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    tokio::time::timeout(Duration::from_secs(5), async {
        while len < buf.len() {
            match stream.read(&mut buf[len..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    len += n;
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await
    .ok()?;
    Some(String::from_utf8_lossy(&buf[..len]).into_owned())
}

/// Serve `GET /metrics` on `listener` (loopback is the sensible choice: there is no
/// authentication) until the task is dropped. Each request gets one response
/// and the connection is closed; a request head is read for at most 5 s and 8 KiB.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let Some(head) = read_head(&mut stream).await else {
                return;
            };
            let path_ok = |method: &str| {
                head.strip_prefix(method)
                    .is_some_and(|p| p.starts_with("/metrics ") || p.starts_with("/metrics?"))
            };
            let response = if path_ok("GET ") || path_ok("HEAD ") {
                let body = metrics.render();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                    body.len(),
                    if path_ok("GET ") { body.as_str() } else { "" }
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            };
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.inc(Counter::Messages, &[("decision", "sign")]);
        m.inc(Counter::Messages, &[("decision", "sign")]);
        m.observe(
            Timing::DnsLookup,
            &[("phase", "spf")],
            Duration::from_millis(3),
        );
        let text = m.render();
        assert!(
            text.contains("mailseal_messages_total{decision=\"sign\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("mailseal_dns_lookup_seconds_bucket{phase=\"spf\",le=\"0.0025\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("mailseal_dns_lookup_seconds_bucket{phase=\"spf\",le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mailseal_dns_lookup_seconds_count{phase=\"spf\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "# TYPE mailseal_active_connections gauge\nmailseal_active_connections 0"
            ),
            "{text}"
        );
    }
}
