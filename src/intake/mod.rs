//! Report intake: the DMARC aggregate, TLS-RPT and DMARC failure reports others send about
//! our domains, read from files (`mailseal reports import`) or from the mail the daemon
//! accepts for `[intake] addresses` ([`queue`]), and kept in the report store.
//!
//! Anyone can mail a "report", so every input is hostile until read: recognised by content,
//! never by name; decompressed under an absolute cap and a ratio; zip entries read under the
//! cap whatever they claim; XML without DTDs or entities; values checked before they are
//! kept. A refused input is kept aside (its first bytes and the reason) for `mailseal reports
//! rejected`; a report about a domain not ours is dropped and counted; a report already
//! kept (same reporter and report id) is not kept twice.

pub mod aggregate;
pub mod failure;
pub mod queue;
pub mod tlsrpt;

use std::io::Read;
use std::path::Path;

pub use aggregate::Aggregate;
pub use failure::FailureReport;
pub use tlsrpt::TlsReport;

use crate::config::Config;
use crate::report::store::Store;

/// How much of a refused input is kept aside.
pub const SAMPLE_BYTES: usize = 64 * 1024;
/// Most entries read from one zip file, and most parts from one mail.
const MAX_ENTRIES: usize = 16;
/// Below this, the ratio does not bind (a tiny gzip of a small report may expand 1000×).
const RATIO_FLOOR: usize = 1024 * 1024;

/// The caps on one input.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_message_size: usize,
    pub max_report_size: usize,
    pub max_ratio: usize,
}

impl Limits {
    pub fn of(config: &Config) -> Limits {
        Limits {
            max_message_size: config.intake.max_message_size,
            max_report_size: config.intake.max_report_size,
            max_ratio: config.intake.max_ratio,
        }
    }

    /// The most `compressed` bytes may expand to.
    fn expansion(&self, compressed: usize) -> usize {
        self.max_report_size
            .min(compressed.saturating_mul(self.max_ratio).max(RATIO_FLOOR))
    }
}

/// A report read from an input.
#[derive(Debug, Clone)]
pub enum Found {
    Aggregate(Aggregate),
    Tls(TlsReport),
    Failure(FailureReport),
}

impl Found {
    pub fn kind(&self) -> &'static str {
        match self {
            Found::Aggregate(_) => "aggregate",
            Found::Tls(_) => "tlsrpt",
            Found::Failure(_) => "failure",
        }
    }

    /// The domains it is about.
    fn domains(&self) -> Vec<&str> {
        match self {
            Found::Aggregate(a) => vec![a.domain.as_str()],
            Found::Tls(t) => t.policies.iter().map(|p| p.domain.as_str()).collect(),
            Found::Failure(f) => vec![f.domain.as_str()],
        }
    }

    /// When its period begins (failure reports have none).
    fn begin(&self) -> Option<i64> {
        match self {
            Found::Aggregate(a) => Some(a.begin),
            Found::Tls(t) => Some(t.begin),
            Found::Failure(_) => None,
        }
    }

    /// Who sent it, and its id.
    pub fn identity(&self) -> String {
        match self {
            Found::Aggregate(a) => format!("{} {} {}", a.org, a.report_id, a.domain),
            Found::Tls(t) => format!("{} {}", t.org, t.report_id),
            Found::Failure(f) => format!("{} {} {}", f.reporter, f.domain, f.source_ip),
        }
    }
}

/// What one input held: reports, or why it was refused (with its first bytes).
#[derive(Debug)]
pub enum Item {
    Report(Box<Found>),
    Refused {
        reason: String,
        size: usize,
        sample: Vec<u8>,
    },
}

pub(crate) fn refused(reason: impl Into<String>, bytes: &[u8]) -> Item {
    Item::Refused {
        reason: reason.into(),
        size: bytes.len(),
        sample: bytes[..bytes.len().min(SAMPLE_BYTES)].to_vec(),
    }
}

/// What an input is, by its first bytes.
#[derive(Debug, PartialEq, Eq)]
enum Shape {
    Gzip,
    Zip,
    Xml,
    Json,
    Mbox,
    Mail,
    Empty,
    Unknown,
}

fn shape(bytes: &[u8]) -> Shape {
    let trimmed = {
        let b = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
        let start = b
            .iter()
            .position(|c| !c.is_ascii_whitespace())
            .unwrap_or(b.len());
        &b[start..]
    };
    if bytes.starts_with(&[0x1f, 0x8b]) {
        Shape::Gzip
    } else if bytes.starts_with(b"PK\x03\x04") {
        Shape::Zip
    } else if trimmed.is_empty() {
        Shape::Empty
    } else if trimmed.starts_with(b"<") {
        Shape::Xml
    } else if trimmed.starts_with(b"{") {
        Shape::Json
    } else if bytes.starts_with(b"From ") {
        Shape::Mbox
    } else if looks_like_mail(bytes) {
        Shape::Mail
    } else {
        Shape::Unknown
    }
}

/// A header section: the first line is `Name: value` and a blank line ends it.
fn looks_like_mail(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(64 * 1024)];
    let first = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let name_ok = first
        .iter()
        .position(|b| *b == b':')
        .is_some_and(|i| i > 0 && first[..i].iter().all(|b| b.is_ascii_graphic()));
    name_ok && (head.windows(2).any(|w| w == b"\n\n") || head.windows(4).any(|w| w == b"\r\n\r\n"))
}

/// Read everything one input holds: a report file (XML, JSON, gzip, zip), a mail, or an
/// mbox of mails.
pub fn read_input(bytes: &[u8], limits: &Limits) -> Vec<Item> {
    match shape(bytes) {
        Shape::Mbox => split_mbox(bytes)
            .into_iter()
            .flat_map(|m| read_mail(m, limits))
            .collect(),
        Shape::Mail => read_mail(bytes, limits),
        _ => vec![read_report_file(bytes, limits, 0)],
    }
}

/// The mails of an mbox (split at lines starting "From "; mboxrd's ">From " left as is).
fn split_mbox(bytes: &[u8]) -> Vec<&[u8]> {
    let mut starts = vec![0];
    let mut i = 0;
    while let Some(n) = bytes[i..].iter().position(|b| *b == b'\n') {
        i += n + 1;
        if bytes[i..].starts_with(b"From ") {
            starts.push(i);
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let end = starts.get(k + 1).copied().unwrap_or(bytes.len());
            let m = &bytes[s..end];
            // Without its "From " line.
            let body = m
                .iter()
                .position(|b| *b == b'\n')
                .map_or(m, |n| &m[n + 1..]);
            body
        })
        .collect()
}

/// One report file: XML, JSON, or either inside gzip or zip (one level).
fn read_report_file(bytes: &[u8], limits: &Limits, depth: usize) -> Item {
    match shape(bytes) {
        Shape::Gzip if depth == 0 => match gunzip(bytes, limits) {
            Ok(inner) => read_report_file(&inner, limits, 1),
            Err(e) => refused(e, bytes),
        },
        Shape::Zip if depth == 0 => match unzip(bytes, limits) {
            Ok(inner) => read_report_file(&inner, limits, 1),
            Err(e) => refused(e, bytes),
        },
        Shape::Xml => match aggregate::parse(bytes) {
            Ok(a) => Item::Report(Box::new(Found::Aggregate(a))),
            Err(e) => refused(format!("aggregate report: {e}"), bytes),
        },
        Shape::Json => match tlsrpt::parse(bytes) {
            Ok(t) => Item::Report(Box::new(Found::Tls(t))),
            Err(e) => refused(format!("TLS report: {e}"), bytes),
        },
        Shape::Empty => refused("empty", bytes),
        Shape::Gzip | Shape::Zip => refused("compressed twice", bytes),
        _ => refused(
            "not a report: neither XML, JSON, gzip, zip nor a mail",
            bytes,
        ),
    }
}

/// Read `r` to at most `cap` bytes; more is an error naming the cap.
fn read_capped(r: impl Read, cap: usize, compressed: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    r.take(cap as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("damaged compressed data: {e}"))?;
    if out.len() > cap {
        return Err(format!(
            "decompresses to more than {cap} bytes from {compressed} (a compression bomb, or over max_report_size / max_ratio)"
        ));
    }
    Ok(out)
}

/// One gzip member. Bytes after it (some senders add them) are ignored.
fn gunzip(bytes: &[u8], limits: &Limits) -> Result<Vec<u8>, String> {
    read_capped(
        flate2::read::GzDecoder::new(bytes),
        limits.expansion(bytes.len()),
        bytes.len(),
    )
}

/// The first report-shaped entry of a zip file, each read under the cap whatever its header
/// says, at most [`MAX_ENTRIES`] entries and the cap in total.
fn unzip(bytes: &[u8], limits: &Limits) -> Result<Vec<u8>, String> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("damaged zip: {e}"))?;
    let mut budget = limits.expansion(bytes.len());
    for i in 0..archive.len().min(MAX_ENTRIES) {
        let entry = archive
            .by_index(i)
            .map_err(|e| format!("damaged zip entry {i}: {e}"))?;
        if entry.is_dir() {
            continue;
        }
        let data = read_capped(entry, budget, bytes.len())?;
        budget -= data.len();
        if matches!(shape(&data), Shape::Xml | Shape::Json) {
            return Ok(data);
        }
    }
    Err("a zip without an XML or JSON report in it".into())
}

/// A mail: a failure report, or the report files attached to it.
fn read_mail(bytes: &[u8], limits: &Limits) -> Vec<Item> {
    if bytes.len() > limits.max_message_size {
        return vec![refused(
            format!(
                "a mail of {} bytes, over max_message_size ({})",
                bytes.len(),
                limits.max_message_size
            ),
            bytes,
        )];
    }
    let parser = mail_parser::MessageParser::new().max_parts(64).max_depth(4);
    let Some(msg) = parser.parse(bytes) else {
        return vec![refused("not a mail that can be read", bytes)];
    };
    if let Some(f) = failure::from_mail(&msg) {
        return vec![match f {
            Ok(f) => Item::Report(Box::new(Found::Failure(f))),
            Err(e) => refused(e, bytes),
        }];
    }
    let mut items = Vec::new();
    for part in msg.parts().filter(|p| !p.is_multipart() && !p.is_message()) {
        let ct = part.content_type();
        let (t, sub) = ct.map_or(("text".into(), "plain".into()), |c| {
            (
                c.ctype().to_ascii_lowercase(),
                c.subtype().unwrap_or_default().to_ascii_lowercase(),
            )
        });
        // The message's own text is not a report; an XML or JSON text part may be one.
        if t == "text" && !sub.contains("xml") && !sub.contains("json") {
            continue;
        }
        if items.len() >= MAX_ENTRIES {
            break;
        }
        let data = part.decoded();
        if matches!(shape(&data), Shape::Empty) && t == "text" {
            continue;
        }
        items.push(read_report_file(&data, limits, 0));
    }
    if items.is_empty() {
        items.push(refused("a mail without a report in it", bytes));
    }
    items
}

/// The files an import argument names: a file, every file of a directory (a Maildir's
/// `cur` and `new`, or any directory, two levels down), sorted.
pub fn files_of(path: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with('.') || name == "tmp" {
                continue;
            }
            if p.is_dir() {
                if depth < 2 {
                    walk(&p, depth + 1, out)?;
                }
            } else if p.is_file() {
                out.push(p);
            }
        }
        Ok(())
    }
    if path.is_dir() {
        let mut out = Vec::new();
        walk(path, 0, &mut out)?;
        Ok(out)
    } else {
        Ok(vec![path.to_path_buf()])
    }
}

/// What became of one report or input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    Stored,
    Duplicate,
    /// About domains not ours.
    OtherDomain(String),
    Refused(String),
}

impl Fate {
    pub fn label(&self) -> &'static str {
        match self {
            Fate::Stored => "stored",
            Fate::Duplicate => "duplicate",
            Fate::OtherDomain(_) => "other_domain",
            Fate::Refused(_) => "refused",
        }
    }
}

/// The domains reports are kept for: `[intake] domains`, else the KeyTable's d= domains.
pub fn our_domains(config: &Config) -> Result<Vec<String>, String> {
    if !config.intake.domains.is_empty() {
        return Ok(config.intake.domains.clone());
    }
    if config.tables.keys.iter().any(|k| k.domain.is_none()) {
        return Err(
            "[intake] domains is required: the KeyTable has % rows, whose domains are known only per message"
                .into(),
        );
    }
    let mut d: Vec<String> = config
        .tables
        .keys
        .iter()
        .filter_map(|k| k.domain.as_deref())
        .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    d.sort();
    d.dedup();
    Ok(d)
}

/// Keep what one input holds. Returns each report's (or the refused input's) label and fate.
pub fn keep(
    store: &mut Store,
    items: Vec<Item>,
    origin: &str,
    domains: &[String],
    now: i64,
) -> Result<Vec<(String, Fate)>, crate::report::store::StoreError> {
    let ours = |d: &str| {
        domains
            .iter()
            .any(|o| d == o || d.strip_suffix(o.as_str()).is_some_and(|p| p.ends_with('.')))
    };
    let mut out = Vec::new();
    for item in items {
        match item {
            Item::Refused {
                reason,
                size,
                sample,
            } => {
                store.intake_rejected(origin, &reason, size, &sample, now)?;
                out.push((origin.to_string(), Fate::Refused(reason)));
            }
            Item::Report(found) => {
                let label = format!("{} {}", found.kind(), found.identity());
                let about = found.domains();
                if about.is_empty() || !about.iter().any(|d| ours(d)) {
                    out.push((label, Fate::OtherDomain(about.join(" "))));
                    continue;
                }
                // Strict in what is stored: a period that has not begun yet (beyond a day of
                // clock skew) would count on the dashboard in every range for as long as it
                // is kept.
                if let Some(begin) = found.begin().filter(|b| *b > now + 86_400) {
                    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(begin as u64);
                    let reason = format!(
                        "its period begins in the future ({})",
                        humantime::format_rfc3339_seconds(when)
                    );
                    store.intake_rejected(
                        origin,
                        &format!("{label}: {reason}"),
                        0,
                        label.as_bytes(),
                        now,
                    )?;
                    out.push((label, Fate::Refused(reason)));
                    continue;
                }
                let fresh = match found.as_ref() {
                    Found::Aggregate(a) => store.intake_aggregate(a, origin, now)?,
                    Found::Tls(t) => store.intake_tls(t, origin, now)?,
                    Found::Failure(f) => {
                        store.intake_failure(f, origin, now)?;
                        true
                    }
                };
                out.push((label, if fresh { Fate::Stored } else { Fate::Duplicate }));
            }
        }
    }
    Ok(out)
}
