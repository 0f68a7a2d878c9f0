//! The report store: SQLite (one host, WAL) or PostgreSQL (one database for several MX
//! hosts). The same SQL runs on both; only the schema and the lock differ.
//!
//! Tables:
//! - `dmarc_records`: one row per evaluated message. `report_id` is NULL until a report
//!   claims the row.
//! - `dmarc_reports`: one row per (policy domain, UTC day) report, with its delivery state.
//!   Claiming rows and creating the report happen in one locked transaction, so two hosts
//!   sharing a PostgreSQL database never report the same message twice.

mod backend;
pub mod dashboard;
mod intake;
mod keys;

use backend::Result;
pub use backend::{Store, StoreError, Val, SCHEMA_VERSION};
pub use intake::{IntakeSummary, Rejected, SignedCount, Source};
pub use keys::HostKeys;

use super::{DkimAuth, Evaluation, Published, Reason};
use crate::results::{Disposition, UnknownWord, Word};

/// One grouped report row: everything RFC 9990 puts in a `record`, and its count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub source_ip: String,
    pub count: i64,
    pub disposition: Disposition,
    pub dkim_aligned: bool,
    pub spf_aligned: bool,
    pub reasons: Vec<Reason>,
    pub header_from: String,
    pub envelope_from: String,
    pub dkim: Vec<DkimAuth>,
    pub spf_result: Word,
}

/// How rows are grouped into report rows, most frequent first.
const GROUPING: &str = "GROUP BY source_ip, disposition, dkim_aligned, spf_aligned, reasons, \
     header_from, envelope_from, dkim, spf ORDER BY COUNT(*) DESC, source_ip, header_from";

/// What a bounded report leaves out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overflow {
    pub rows: i64,
    pub messages: i64,
}

impl Overflow {
    /// The report's error element, if anything was left out.
    pub fn note(&self, max_rows: usize) -> Option<String> {
        (self.rows > 0).then(|| {
            format!(
                "{} more rows ({} messages) over max_rows = {max_rows} not listed",
                self.rows, self.messages
            )
        })
    }
}

/// Where one destination of a report stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Handed on.
    Sent,
    /// A temporary failure: tried again with the report.
    Deferred,
    /// Withheld by a reflector limit: never retried.
    Withheld,
    /// Refused for good (over its size limit).
    Skipped,
}

impl DeliveryStatus {
    const ALL: [DeliveryStatus; 4] = [
        DeliveryStatus::Sent,
        DeliveryStatus::Deferred,
        DeliveryStatus::Withheld,
        DeliveryStatus::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Deferred => "deferred",
            DeliveryStatus::Withheld => "withheld",
            DeliveryStatus::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DeliveryStatus {
    type Err = crate::results::UnknownWord;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        DeliveryStatus::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| crate::results::UnknownWord(s.to_string()))
    }
}

/// A report and its delivery state.
#[derive(Debug, Clone)]
pub struct ReportRow {
    pub report_id: String,
    pub unique_id: String,
    pub policy_domain: String,
    pub begin: i64,
    pub end: i64,
    pub status: ReportStatus,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// Where a report is in its life. Stored as its word (`pending`, `sent`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportStatus {
    /// Not sent yet, or to be tried again.
    Pending,
    /// Delivered to at least one destination.
    Sent,
    /// Given up after `max_attempts` temporary failures.
    Failed,
    /// Every destination refused it for good or was unusable.
    Undeliverable,
    /// Nothing left to report (records removed by retention).
    Empty,
    /// The policy domain is in `suppress_domains`.
    Suppressed,
}

impl ReportStatus {
    const ALL: [ReportStatus; 6] = [
        ReportStatus::Pending,
        ReportStatus::Sent,
        ReportStatus::Failed,
        ReportStatus::Undeliverable,
        ReportStatus::Empty,
        ReportStatus::Suppressed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReportStatus::Pending => "pending",
            ReportStatus::Sent => "sent",
            ReportStatus::Failed => "failed",
            ReportStatus::Undeliverable => "undeliverable",
            ReportStatus::Empty => "empty",
            ReportStatus::Suppressed => "suppressed",
        }
    }
}

impl std::fmt::Display for ReportStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ReportStatus {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<ReportStatus> {
        ReportStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| StoreError::Unknown(UnknownWord(s.to_string())))
    }
}

impl ReportRow {
    /// A new report for `domain`'s UTC `day`, clipped to `[since, until)`.
    pub fn new(
        domain: &str,
        day: i64,
        since: i64,
        until: i64,
        unique_id: String,
        receiver: &str,
    ) -> ReportRow {
        let begin = day.max(since);
        ReportRow {
            report_id: format!("{domain}.{begin}.{unique_id}@{receiver}"),
            unique_id,
            policy_domain: domain.to_string(),
            begin,
            end: (day + 86_400).min(until),
            status: ReportStatus::Pending,
            attempts: 0,
            last_error: None,
        }
    }
}

impl Store {
    /// Store a batch of evaluations in one transaction.
    pub fn insert(&mut self, batch: &[Evaluation], reporter: &str) -> Result<()> {
        self.transaction(|s| {
            for e in batch {
                s.exec(
                    "INSERT INTO dmarc_records (received, reporter, policy_domain, header_from, \
                     envelope_from, source_ip, published, disposition, dkim_aligned, spf_aligned, \
                     reasons, dkim, spf) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                    &[
                        e.received.into(),
                        reporter.into(),
                        e.policy_domain.as_str().into(),
                        e.header_from.as_str().into(),
                        e.envelope_from.as_str().into(),
                        e.source_ip.as_str().into(),
                        serde_json::to_string(&e.published)?.into(),
                        e.disposition.as_str().into(),
                        pass_fail(e.dkim_aligned).into(),
                        pass_fail(e.spf_aligned).into(),
                        serde_json::to_string(&e.reasons)?.into(),
                        serde_json::to_string(&e.dkim)?.into(),
                        e.spf_result.as_str().into(),
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// Claim every unreported record received before `until` (and not before `since`):
    /// one report per policy domain and UTC day. Returns the new reports.
    pub fn claim(
        &mut self,
        since: i64,
        until: i64,
        receiver: &str,
        mut unique: impl FnMut() -> String,
    ) -> Result<Vec<ReportRow>> {
        self.transaction(|s| {
            let mut out = Vec::new();
            for (domain, day) in s.unclaimed(since, until)? {
                let r = ReportRow::new(&domain, day, since, until, unique(), receiver);
                s.exec(
                    "INSERT INTO dmarc_reports (report_id, unique_id, policy_domain, begin_ts, \
                     end_ts, created, status, attempts) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0)",
                    &[
                        r.report_id.as_str().into(),
                        r.unique_id.as_str().into(),
                        domain.as_str().into(),
                        r.begin.into(),
                        r.end.into(),
                        super::now().into(),
                    ],
                )?;
                s.exec(
                    "UPDATE dmarc_records SET report_id = $1 WHERE report_id IS NULL \
                     AND policy_domain = $2 AND received >= $3 AND received < $4",
                    &[
                        r.report_id.as_str().into(),
                        domain.as_str().into(),
                        r.begin.into(),
                        r.end.into(),
                    ],
                )?;
                out.push(r);
            }
            Ok(out)
        })
    }

    /// Unreported records as they would be reported now, without claiming them (dry run):
    /// (policy domain, UTC day) pairs.
    pub fn unclaimed(&mut self, since: i64, until: i64) -> Result<Vec<(String, i64)>> {
        Ok(self
            .query(
                "SELECT policy_domain, received - (received % 86400) AS day FROM dmarc_records \
                 WHERE report_id IS NULL AND received >= $1 AND received < $2 \
                 GROUP BY policy_domain, day ORDER BY policy_domain, day",
                &[since.into(), until.into()],
            )?
            .into_iter()
            .map(|r| (r[0].text(), r[1].int()))
            .collect())
    }

    /// Take the reports waiting for (another) delivery attempt: each is leased to this run
    /// for `lease` seconds, so another host running `reports send` at the same time skips
    /// it. A run that dies mid-delivery leaves the lease to expire; the report is then retried.
    pub fn take_pending(&mut self, lease: i64) -> Result<Vec<ReportRow>> {
        let now = super::now();
        self.transaction(|s| {
            let rows = s.query(
                "SELECT report_id, unique_id, policy_domain, begin_ts, end_ts, status, attempts, \
                 last_error FROM dmarc_reports WHERE status = 'pending' AND lease_until < $1 \
                 ORDER BY begin_ts, policy_domain",
                &[now.into()],
            )?;
            for r in &rows {
                s.exec(
                    "UPDATE dmarc_reports SET lease_until = $1 WHERE report_id = $2",
                    &[(now + lease).into(), r[0].clone()],
                )?;
            }
            rows.into_iter().map(report_row).collect()
        })
    }

    /// All reports, newest first (for `reports show`).
    pub fn reports(&mut self, domain: Option<&str>, limit: i64) -> Result<Vec<ReportRow>> {
        let rows = self.query(
            "SELECT report_id, unique_id, policy_domain, begin_ts, end_ts, status, attempts, \
             last_error FROM dmarc_reports WHERE ($1 = '' OR policy_domain = $1) \
             ORDER BY begin_ts DESC, policy_domain LIMIT $2",
            &[domain.unwrap_or("").into(), limit.into()],
        )?;
        rows.into_iter().map(report_row).collect()
    }

    /// Record a delivery attempt.
    pub fn mark(
        &mut self,
        report_id: &str,
        status: ReportStatus,
        error: Option<&str>,
    ) -> Result<()> {
        self.exec(
            "UPDATE dmarc_reports SET status = $1, attempts = attempts + 1, last_error = $2, \
             lease_until = 0 WHERE report_id = $3",
            &[
                status.as_str().into(),
                error.map(Val::from).unwrap_or(Val::Null),
                report_id.into(),
            ],
        )?;
        Ok(())
    }

    /// Where a report stands with one destination (`None`: not tried yet).
    pub fn delivery(&mut self, report_id: &str, address: &str) -> Result<Option<DeliveryStatus>> {
        let rows = self.query(
            "SELECT status FROM dmarc_deliveries WHERE report_id = $1 AND address = $2",
            &[report_id.into(), address.into()],
        )?;
        rows.first().map(|r| Ok(r[0].text().parse()?)).transpose()
    }

    /// Record an attempt for one destination.
    pub fn record_delivery(
        &mut self,
        report_id: &str,
        address: &str,
        status: DeliveryStatus,
        error: Option<&str>,
    ) -> Result<()> {
        self.exec(
            "INSERT INTO dmarc_deliveries (report_id, address, status, attempts, last_error, updated) \
             VALUES ($1, $2, $3, 1, $4, $5) ON CONFLICT (report_id, address) DO UPDATE SET \
             status = $3, attempts = dmarc_deliveries.attempts + 1, last_error = $4, updated = $5",
            &[
                report_id.into(),
                address.into(),
                status.as_str().into(),
                error.map(Val::from).unwrap_or(Val::Null),
                super::now().into(),
            ],
        )?;
        Ok(())
    }

    /// The grouped rows of a claimed report.
    pub fn groups_of_report(&mut self, report_id: &str) -> Result<Vec<Group>> {
        self.groups("report_id = $1", &[report_id.into()])
    }

    /// A report's rows, the `max_rows` most frequent, and what was left out.
    pub fn report_groups(
        &mut self,
        report_id: &str,
        max_rows: usize,
    ) -> Result<(Vec<Group>, Overflow)> {
        self.bounded_groups("report_id = $1", &[report_id.into()], max_rows)
    }

    /// The rows a report would have (a dry run), bounded as [`Store::report_groups`].
    pub fn unclaimed_groups(
        &mut self,
        domain: &str,
        begin: i64,
        end: i64,
        max_rows: usize,
    ) -> Result<(Vec<Group>, Overflow)> {
        self.bounded_groups(
            "report_id IS NULL AND policy_domain = $1 AND received >= $2 AND received < $3",
            &[domain.into(), begin.into(), end.into()],
            max_rows,
        )
    }

    fn bounded_groups(
        &mut self,
        filter: &str,
        params: &[Val],
        max_rows: usize,
    ) -> Result<(Vec<Group>, Overflow)> {
        let groups = self.groups(&format!("{filter} {GROUPING} LIMIT {max_rows}"), params)?;
        let rows = self.query(
            &format!(
                "SELECT COUNT(*) FROM (SELECT 1 FROM dmarc_records WHERE {filter} {GROUPING}) AS g"
            ),
            params,
        )?;
        let total_rows = rows.first().map_or(0, |r| r[0].int());
        let rows = self.query(
            &format!("SELECT COUNT(*) FROM dmarc_records WHERE {filter}"),
            params,
        )?;
        let total_messages = rows.first().map_or(0, |r| r[0].int());
        let kept: i64 = groups.iter().map(|g| g.count).sum();
        let overflow = Overflow {
            rows: total_rows - groups.len() as i64,
            messages: total_messages - kept,
        };
        Ok((groups, overflow))
    }

    /// A domain's grouped rows, reported or not (`reports show --domain`), the `max_rows`
    /// most frequent.
    pub fn domain_groups(
        &mut self,
        domain: &str,
        max_rows: usize,
    ) -> Result<(Vec<Group>, Overflow)> {
        self.bounded_groups("policy_domain = $1", &[domain.into()], max_rows)
    }

    fn groups(&mut self, filter: &str, params: &[Val]) -> Result<Vec<Group>> {
        // `filter` may end with the grouping and a LIMIT (bounded_groups).
        let filter = if filter.contains("GROUP BY") {
            filter.to_string()
        } else {
            format!("{filter} {GROUPING}")
        };
        let sql = format!(
            "SELECT source_ip, COUNT(*), disposition, dkim_aligned, spf_aligned, reasons, \
             header_from, envelope_from, dkim, spf FROM dmarc_records WHERE {filter}"
        );
        let rows = self.query(&sql, params)?;
        rows.into_iter()
            .map(|r| {
                Ok(Group {
                    source_ip: r[0].text(),
                    count: r[1].int(),
                    disposition: r[2].text().parse()?,
                    dkim_aligned: r[3].text() == "pass",
                    spf_aligned: r[4].text() == "pass",
                    reasons: serde_json::from_str(&r[5].text())?,
                    header_from: r[6].text(),
                    envelope_from: r[7].text(),
                    dkim: serde_json::from_str(&r[8].text())?,
                    spf_result: r[9].text().parse()?,
                })
            })
            .collect()
    }

    /// The policy record most recently seen in a report's records (RFC 9990 §2.1: report the
    /// final configuration observed).
    pub fn latest_policy(
        &mut self,
        filter_report: Option<&str>,
        domain: &str,
    ) -> Result<Option<Published>> {
        let rows = match filter_report {
            Some(id) => self.query(
                "SELECT published FROM dmarc_records WHERE report_id = $1 ORDER BY received DESC, id DESC LIMIT 1",
                &[id.into()],
            )?,
            None => self.query(
                "SELECT published FROM dmarc_records WHERE policy_domain = $1 ORDER BY received DESC, id DESC LIMIT 1",
                &[domain.into()],
            )?,
        };
        rows.first()
            .map(|r| serde_json::from_str(&r[0].text()).map_err(StoreError::from))
            .transpose()
    }

    /// Per policy domain: messages, DMARC passes, failures, first and last seen, unreported
    /// messages.
    pub fn summary(&mut self, domain: Option<&str>) -> Result<Vec<DomainSummary>> {
        let rows = self.query(
            "SELECT policy_domain, COUNT(*), \
             COUNT(CASE WHEN dkim_aligned = 'pass' OR spf_aligned = 'pass' THEN 1 END), \
             COUNT(CASE WHEN disposition <> 'none' THEN 1 END), \
             MIN(received), MAX(received), COUNT(CASE WHEN report_id IS NULL THEN 1 END), \
             COUNT(DISTINCT source_ip) \
             FROM dmarc_records WHERE ($1 = '' OR policy_domain = $1) \
             GROUP BY policy_domain ORDER BY policy_domain",
            &[domain.unwrap_or("").into()],
        )?;
        Ok(rows
            .into_iter()
            .map(|r| DomainSummary {
                domain: r[0].text(),
                messages: r[1].int(),
                passed: r[2].int(),
                acted_on: r[3].int(),
                first: r[4].int(),
                last: r[5].int(),
                unreported: r[6].int(),
                sources: r[7].int(),
            })
            .collect())
    }

    /// Delete records and reports older than `before`. Returns the records deleted.
    pub fn purge(&mut self, before: i64) -> Result<u64> {
        let n = self.exec(
            "DELETE FROM dmarc_records WHERE received < $1",
            &[before.into()],
        )?;
        self.exec(
            "DELETE FROM dmarc_reports WHERE end_ts < $1",
            &[before.into()],
        )?;
        Ok(n)
    }

    /// Number of stored records (tests and `show`).
    pub fn count(&mut self) -> Result<i64> {
        Ok(self
            .query("SELECT COUNT(*) FROM dmarc_records", &[])?
            .first()
            .map(|r| r[0].int())
            .unwrap_or(0))
    }
}

/// One line of `reports show`.
#[derive(Debug, Clone)]
pub struct DomainSummary {
    pub domain: String,
    pub messages: i64,
    pub passed: i64,
    pub acted_on: i64,
    pub first: i64,
    pub last: i64,
    pub unreported: i64,
    pub sources: i64,
}

fn pass_fail(b: bool) -> &'static str {
    if b {
        "pass"
    } else {
        "fail"
    }
}

fn report_row(r: Vec<Val>) -> Result<ReportRow> {
    Ok(ReportRow {
        report_id: r[0].text(),
        unique_id: r[1].text(),
        policy_domain: r[2].text(),
        begin: r[3].int(),
        end: r[4].int(),
        status: r[5].text().parse()?,
        attempts: r[6].int(),
        last_error: match &r[7] {
            Val::Null => None,
            v => Some(v.text()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreSpec;

    fn eval(ip: &str, from: &str, t: i64, aligned: bool) -> Evaluation {
        Evaluation {
            received: t,
            source_ip: ip.into(),
            policy_domain: "example.com".into(),
            header_from: from.into(),
            envelope_from: from.into(),
            published: Published {
                p: "reject".into(),
                sp: "reject".into(),
                np: "reject".into(),
                adkim: "r".into(),
                aspf: "r".into(),
                fo: "0".into(),
                testing: false,
                rua: vec![("dmarc@example.com".into(), 0)],
            },
            disposition: if aligned {
                Disposition::None
            } else {
                Disposition::Reject
            },
            dkim_aligned: aligned,
            spf_aligned: aligned,
            reasons: vec![],
            dkim: vec![],
            spf_result: if aligned { Word::Pass } else { Word::Fail },
        }
    }

    #[test]
    fn an_unreachable_postgres_store_is_named_without_its_password() {
        let spec = StoreSpec::Postgres("postgres://mailseal:s3cret@127.0.0.1:1/dmarc".into());
        let e = Store::open(&spec).err().expect("nothing listens on port 1");
        let text = e.to_string();
        assert!(
            text.contains("postgres://mailseal:…@127.0.0.1:1/dmarc"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[test]
    fn sqlite_groups_claims_and_purges() {
        let dir = tempfile::tempdir().unwrap();
        let spec = StoreSpec::Sqlite(dir.path().join("r.sqlite"));
        let mut s = Store::open(&spec).unwrap();
        let day = 1_795_392_000;
        s.insert(
            &[
                eval("192.0.2.1", "example.com", day + 10, true),
                eval("192.0.2.1", "example.com", day + 20, true),
                eval("192.0.2.9", "example.com", day + 30, false),
                eval("192.0.2.1", "example.com", day + 86_400 + 5, true),
            ],
            "mx1",
        )
        .unwrap();
        assert_eq!(
            s.unclaimed(0, day + 86_400).unwrap(),
            [("example.com".to_string(), day)]
        );
        let mut n = 0;
        let claimed = s
            .claim(0, day + 86_400, "example.net", || {
                n += 1;
                format!("u{n}")
            })
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!((claimed[0].begin, claimed[0].end), (day, day + 86_400));
        let groups = s.groups_of_report(&claimed[0].report_id).unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(
            (groups[0].source_ip.as_str(), groups[0].count),
            ("192.0.2.1", 2)
        );
        assert_eq!(
            (groups[1].source_ip.as_str(), groups[1].count),
            ("192.0.2.9", 1)
        );
        // Claimed rows are not claimed again; the next day's row waits.
        assert!(s
            .claim(0, day + 86_400, "example.net", || "x".into())
            .unwrap()
            .is_empty());
        assert_eq!(s.take_pending(600).unwrap().len(), 1);
        // Leased: a second run at the same time does not get it.
        assert!(s.take_pending(600).unwrap().is_empty());
        s.mark(
            &claimed[0].report_id,
            ReportStatus::Pending,
            Some("relay down"),
        )
        .unwrap();
        assert_eq!(s.take_pending(600).unwrap().len(), 1);
        s.mark(&claimed[0].report_id, ReportStatus::Sent, None)
            .unwrap();
        assert!(s.take_pending(600).unwrap().is_empty());
        assert_eq!(s.purge(day + 86_400).unwrap(), 3);
        assert_eq!(s.count().unwrap(), 1);
    }
}
