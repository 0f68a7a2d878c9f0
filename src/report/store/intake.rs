//! Report intake in the store: the reports others send about our domains
//! (`intake_reports` with `intake_rows` for DMARC aggregate rows and `intake_tls` for TLS-RPT
//! sessions; `intake_failures`; `intake_rejected`), and what we signed per day
//! (`signed_counts`). A report is kept once per (kind, reporter, report id).
//!
//! `intake_tls` rows: per policy one `total-success` and one `total-failure` row (the
//! report's summary), then one row per failure detail with its result type.

use super::backend::{Result, Store, Val};
use crate::intake::{Aggregate, FailureReport, TlsReport};

/// About how many report rows one purge transaction takes out of the rollups and deletes.
const PURGE_ROWS: i64 = 20_000;

/// A refused input, as `reports rejected` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub imported: i64,
    pub origin: String,
    pub reason: String,
    pub size: i64,
    pub sample: Vec<u8>,
}

/// One domain's figures for `reports summary`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntakeSummary {
    pub domain: String,
    pub reports: i64,
    pub messages: i64,
    /// Messages with DMARC-aligned DKIM or SPF passing.
    pub dmarc_pass: i64,
    /// (disposition, messages).
    pub dispositions: Vec<(String, i64)>,
    pub sources: Vec<Source>,
    /// (policy domain, result type, sessions): totals first.
    pub tls: Vec<(String, String, i64)>,
    pub failures: i64,
}

/// Messages we signed on one UTC day with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCount {
    /// The day's start (Unix time).
    pub day: i64,
    pub domain: String,
    pub selector: String,
    pub algorithm: String,
    pub count: i64,
}

/// A sending source as receivers reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    pub ip: String,
    pub messages: i64,
    pub spf_aligned_pass: i64,
    pub dkim_aligned_pass: i64,
}

impl Store {
    /// Keep an aggregate report; false when it was kept before.
    pub fn intake_aggregate(&mut self, a: &Aggregate, origin: &str, now: i64) -> Result<bool> {
        self.transaction(|s| {
            let Some(id) = s.new_report(
                "aggregate",
                &a.org,
                &a.report_id,
                &a.domain,
                a.begin,
                a.end,
                origin,
                &a.email,
                &serde_json::to_string(&a.policy)?,
                now,
            )?
            else {
                return Ok(false);
            };
            for r in &a.rows {
                s.exec(
                    "INSERT INTO intake_rows (report, source_ip, count, disposition, dkim_aligned, \
                     spf_aligned, header_from, envelope_from, reasons, dkim, spf) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    &[
                        id.into(),
                        r.source_ip.as_str().into(),
                        r.count.into(),
                        r.disposition.as_str().into(),
                        r.dkim_aligned.as_str().into(),
                        r.spf_aligned.as_str().into(),
                        r.header_from.as_str().into(),
                        r.envelope_from.as_str().into(),
                        serde_json::to_string(&r.reasons)?.into(),
                        serde_json::to_string(&r.dkim)?.into(),
                        serde_json::to_string(&r.spf)?.into(),
                    ],
                )?;
            }
            s.rollup(a, 1)?;
            Ok(true)
        })
    }

    /// Add an aggregate report to the per-day rollups (its day: the UTC day its period
    /// starts), or with `sign` -1 take it out again (rows left at zero are deleted). Our
    /// signatures are those with d= the report's domain.
    fn rollup(&mut self, a: &Aggregate, sign: i64) -> Result<()> {
        use std::collections::BTreeMap;
        let day = crate::report::day_start(a.begin);
        let mut days: BTreeMap<(&str, &str, &str), i64> = BTreeMap::new();
        let mut sources: BTreeMap<&str, [i64; 5]> = BTreeMap::new();
        let mut selectors: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for r in &a.rows {
            *days
                .entry((&r.disposition, &r.dkim_aligned, &r.spf_aligned))
                .or_default() += r.count;
            let src = sources.entry(&r.source_ip).or_default();
            let dkim = r.dkim_aligned == "pass";
            let spf = r.spf_aligned == "pass";
            src[0] += r.count;
            src[1] += if spf { r.count } else { 0 };
            src[2] += if dkim { r.count } else { 0 };
            // DKIM survived, SPF did not: what forwarding does.
            src[3] += if dkim && !spf { r.count } else { 0 };
            src[4] += if dkim || spf { r.count } else { 0 };
            let ours: Vec<_> = r.dkim.iter().filter(|d| d.domain == a.domain).collect();
            if ours.is_empty() {
                *selectors.entry(("", "unsigned")).or_default() += r.count;
            }
            for d in ours {
                *selectors
                    .entry((d.selector.as_str(), d.result.as_str()))
                    .or_default() += r.count;
            }
        }
        for ((disposition, dkim, spf), n) in days {
            self.exec(
                "INSERT INTO intake_days (domain, day, disposition, dkim_aligned, spf_aligned, count) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (domain, day, disposition, dkim_aligned, \
                 spf_aligned) DO UPDATE SET count = intake_days.count + excluded.count",
                &[
                    a.domain.as_str().into(),
                    day.into(),
                    disposition.into(),
                    dkim.into(),
                    spf.into(),
                    (sign * n).into(),
                ],
            )?;
            if sign < 0 {
                self.exec(
                    "DELETE FROM intake_days WHERE domain = $1 AND day = $2 AND disposition = $3 \
                     AND dkim_aligned = $4 AND spf_aligned = $5 AND count <= 0",
                    &[
                        a.domain.as_str().into(),
                        day.into(),
                        disposition.into(),
                        dkim.into(),
                        spf.into(),
                    ],
                )?;
            }
        }
        for (ip, [n, spf, dkim, fwd, pass]) in sources {
            self.exec(
                "INSERT INTO intake_sources (domain, day, source_ip, count, spf_pass, dkim_pass, \
                 forwarded, dmarc_pass) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (domain, day, source_ip) \
                 DO UPDATE SET count = intake_sources.count + excluded.count, \
                 spf_pass = intake_sources.spf_pass + excluded.spf_pass, \
                 dkim_pass = intake_sources.dkim_pass + excluded.dkim_pass, \
                 forwarded = intake_sources.forwarded + excluded.forwarded, \
                 dmarc_pass = intake_sources.dmarc_pass + excluded.dmarc_pass",
                &[
                    a.domain.as_str().into(),
                    day.into(),
                    ip.into(),
                    (sign * n).into(),
                    (sign * spf).into(),
                    (sign * dkim).into(),
                    (sign * fwd).into(),
                    (sign * pass).into(),
                ],
            )?;
            if sign < 0 {
                self.exec(
                    "DELETE FROM intake_sources WHERE domain = $1 AND day = $2 AND source_ip = $3 \
                     AND count <= 0",
                    &[a.domain.as_str().into(), day.into(), ip.into()],
                )?;
            }
        }
        for ((selector, result), n) in selectors {
            self.exec(
                "INSERT INTO intake_selectors (domain, day, selector, result, count) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (domain, day, selector, result) \
                 DO UPDATE SET count = intake_selectors.count + excluded.count",
                &[
                    a.domain.as_str().into(),
                    day.into(),
                    selector.into(),
                    result.into(),
                    (sign * n).into(),
                ],
            )?;
            if sign < 0 {
                self.exec(
                    "DELETE FROM intake_selectors WHERE domain = $1 AND day = $2 AND selector = $3 \
                     AND result = $4 AND count <= 0",
                    &[
                        a.domain.as_str().into(),
                        day.into(),
                        selector.into(),
                        result.into(),
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// Keep a TLS report; false when it was kept before. Its domain is its first policy's.
    pub fn intake_tls(&mut self, t: &TlsReport, origin: &str, now: i64) -> Result<bool> {
        self.transaction(|s| {
            let domain = t.policies.first().map_or("", |p| p.domain.as_str());
            let Some(id) = s.new_report(
                "tlsrpt",
                &t.org,
                &t.report_id,
                domain,
                t.begin,
                t.end,
                origin,
                "",
                "{}",
                now,
            )?
            else {
                return Ok(false);
            };
            for p in &t.policies {
                let mut rows: Vec<(&str, &str, &str, i64)> = vec![
                    ("total-success", "", "", p.successful),
                    ("total-failure", "", "", p.failed),
                ];
                rows.extend(p.failures.iter().map(|f| {
                    (
                        f.result_type.as_str(),
                        f.receiving_mx.as_str(),
                        f.sending_ip.as_str(),
                        f.sessions,
                    )
                }));
                for (result_type, mx, ip, n) in rows {
                    s.exec(
                        "INSERT INTO intake_tls (report, policy_type, policy_domain, mx_host, \
                         result_type, receiving_mx, sending_ip, sessions) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        &[
                            id.into(),
                            p.policy_type.as_str().into(),
                            p.domain.as_str().into(),
                            p.mx_host.as_str().into(),
                            result_type.into(),
                            mx.into(),
                            ip.into(),
                            n.into(),
                        ],
                    )?;
                }
            }
            Ok(true)
        })
    }

    /// The report's row, or `None` when (kind, org, report id) is kept already.
    #[allow(clippy::too_many_arguments)]
    fn new_report(
        &mut self,
        kind: &str,
        org: &str,
        report_id: &str,
        domain: &str,
        begin: i64,
        end: i64,
        origin: &str,
        email: &str,
        policy: &str,
        now: i64,
    ) -> Result<Option<i64>> {
        let rows = self.query(
            "INSERT INTO intake_reports (kind, org, report_id, domain, begin_ts, end_ts, \
             imported, origin, email, policy) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (kind, org, report_id) DO NOTHING RETURNING id",
            &[
                kind.into(),
                org.into(),
                report_id.into(),
                domain.into(),
                begin.into(),
                end.into(),
                now.into(),
                origin.into(),
                email.into(),
                policy.into(),
            ],
        )?;
        Ok(rows.first().map(|r| r[0].int()))
    }

    pub fn intake_failure(&mut self, f: &FailureReport, origin: &str, now: i64) -> Result<()> {
        self.exec(
            "INSERT INTO intake_failures (imported, origin, reporter, domain, source_ip, \
             feedback_type, auth_failure, delivery_result, arrival, mail_from, dkim_domain, \
             dkim_selector, identity_alignment, auth_results) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            &[
                now.into(),
                origin.into(),
                f.reporter.as_str().into(),
                f.domain.as_str().into(),
                f.source_ip.as_str().into(),
                f.feedback_type.as_str().into(),
                f.auth_failure.as_str().into(),
                f.delivery_result.as_str().into(),
                f.arrival.as_str().into(),
                f.mail_from.as_str().into(),
                f.dkim_domain.as_str().into(),
                f.dkim_selector.as_str().into(),
                f.identity_alignment.as_str().into(),
                f.auth_results.as_str().into(),
            ],
        )?;
        Ok(())
    }

    /// Keep a refused input aside: the reason and its first bytes (base64).
    pub fn intake_rejected(
        &mut self,
        origin: &str,
        reason: &str,
        size: usize,
        sample: &[u8],
        now: i64,
    ) -> Result<()> {
        use base64::Engine;
        self.exec(
            "INSERT INTO intake_rejected (imported, origin, reason, size, sample) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                now.into(),
                origin.into(),
                reason.into(),
                (size as i64).into(),
                base64::engine::general_purpose::STANDARD
                    .encode(sample)
                    .into(),
            ],
        )?;
        Ok(())
    }

    /// The latest refused inputs, newest first.
    pub fn intake_rejected_list(&mut self, limit: i64) -> Result<Vec<Rejected>> {
        use base64::Engine;
        let rows = self.query(
            "SELECT imported, origin, reason, size, sample FROM intake_rejected \
             ORDER BY id DESC LIMIT $1",
            &[limit.into()],
        )?;
        Ok(rows
            .into_iter()
            .map(|r| Rejected {
                imported: r[0].int(),
                origin: r[1].text(),
                reason: r[2].text(),
                size: r[3].int(),
                sample: base64::engine::general_purpose::STANDARD
                    .decode(r[4].text())
                    .unwrap_or_default(),
            })
            .collect())
    }

    /// Delete what was imported before `before`. Returns the reports deleted. An aggregate
    /// report's share of the per-day rollups goes with it, so that the rollups always add up
    /// to the reports kept (retention counts from import time, not from the report's day).
    /// In batches of about `PURGE_ROWS` rows, each one transaction.
    pub fn intake_purge(&mut self, before: i64) -> Result<u64> {
        let mut deleted = 0;
        loop {
            let n = self.transaction(|s| s.purge_batch(before))?;
            deleted += n;
            if n == 0 {
                break;
            }
        }
        self.transaction(|s| {
            for t in ["intake_failures", "intake_rejected"] {
                s.exec(
                    &format!("DELETE FROM {t} WHERE imported < $1"),
                    &[before.into()],
                )?;
            }
            // What we signed is ours, counted by day.
            s.exec("DELETE FROM signed_counts WHERE day < $1", &[before.into()])?;
            Ok(deleted)
        })
    }

    /// The oldest reports imported before `before`, up to about `PURGE_ROWS` rows (at least
    /// one report): out of the rollups, then deleted. Returns how many.
    fn purge_batch(&mut self, before: i64) -> Result<u64> {
        let reports = self.query(
            "SELECT r.id, r.kind, r.domain, r.begin_ts, \
             (SELECT COUNT(*) FROM intake_rows w WHERE w.report = r.id) \
             FROM intake_reports r WHERE r.imported < $1 ORDER BY r.id LIMIT 1000",
            &[before.into()],
        )?;
        let mut rows = 0;
        let batch: Vec<_> = reports
            .iter()
            .enumerate()
            .take_while(|(i, r)| {
                rows += r[4].int();
                *i == 0 || rows <= PURGE_ROWS
            })
            .map(|(_, r)| r)
            .collect();
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(0);
        };
        let (lo, hi) = (first[0].int(), last[0].int());
        for r in batch.iter().filter(|r| r[1].text() == "aggregate") {
            let stored = self.query(
                "SELECT source_ip, count, disposition, dkim_aligned, spf_aligned, dkim \
                 FROM intake_rows WHERE report = $1",
                &[r[0].int().into()],
            )?;
            let a = Aggregate {
                domain: r[2].text(),
                begin: r[3].int(),
                rows: stored
                    .into_iter()
                    .map(|w| crate::intake::aggregate::Row {
                        source_ip: w[0].text(),
                        count: w[1].int(),
                        disposition: w[2].text(),
                        dkim_aligned: w[3].text(),
                        spf_aligned: w[4].text(),
                        dkim: serde_json::from_str(&w[5].text()).unwrap_or_default(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            self.rollup(&a, -1)?;
        }
        let range = "(SELECT id FROM intake_reports WHERE id BETWEEN $1 AND $2 AND imported < $3)";
        let params = [lo.into(), hi.into(), before.into()];
        for t in ["intake_rows", "intake_tls"] {
            self.exec(&format!("DELETE FROM {t} WHERE report IN {range}"), &params)?;
        }
        self.exec(
            "DELETE FROM intake_reports WHERE id BETWEEN $1 AND $2 AND imported < $3",
            &params,
        )
    }

    /// Add to the per-day counts of what we signed.
    pub fn add_signed(&mut self, counts: &[SignedCount]) -> Result<()> {
        self.transaction(|s| {
            for c in counts {
                s.exec(
                    "INSERT INTO signed_counts (day, domain, selector, algorithm, count) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (day, domain, selector, algorithm) \
                     DO UPDATE SET count = signed_counts.count + $5",
                    &[
                        c.day.into(),
                        c.domain.as_str().into(),
                        c.selector.as_str().into(),
                        c.algorithm.as_str().into(),
                        c.count.into(),
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// The per-day signed counts from `since` on.
    pub fn signed_counts(&mut self, since: i64) -> Result<Vec<SignedCount>> {
        Ok(self
            .query(
                "SELECT day, domain, selector, algorithm, count FROM signed_counts \
                 WHERE day >= $1 ORDER BY day, domain, selector, algorithm",
                &[since.into()],
            )?
            .into_iter()
            .map(|r| SignedCount {
                day: r[0].int(),
                domain: r[1].text(),
                selector: r[2].text(),
                algorithm: r[3].text(),
                count: r[4].int(),
            })
            .collect())
    }

    /// `reports summary`: per domain, the reports whose period ends at or after `since`.
    pub fn intake_summary(
        &mut self,
        domain: Option<&str>,
        since: i64,
    ) -> Result<Vec<IntakeSummary>> {
        let dom = domain.unwrap_or("").to_ascii_lowercase();
        let filter = "r.end_ts >= $1 AND ($2 = '' OR r.domain = $2)";
        let params = [Val::Int(since), Val::Text(dom.clone())];
        let mut out: Vec<IntakeSummary> = Vec::new();
        let entry = |out: &mut Vec<IntakeSummary>, d: String| -> usize {
            match out.iter().position(|s| s.domain == d) {
                Some(i) => i,
                None => {
                    out.push(IntakeSummary {
                        domain: d,
                        ..Default::default()
                    });
                    out.len() - 1
                }
            }
        };
        for r in self.query(
            &format!(
                "SELECT r.domain, COUNT(DISTINCT r.id), CAST(COALESCE(SUM(w.count), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(CASE WHEN w.dkim_aligned = 'pass' OR w.spf_aligned = 'pass' \
                 THEN w.count ELSE 0 END), 0) AS BIGINT) \
                 FROM intake_reports r LEFT JOIN intake_rows w ON w.report = r.id \
                 WHERE r.kind = 'aggregate' AND {filter} GROUP BY r.domain ORDER BY r.domain"
            ),
            &params,
        )? {
            let i = entry(&mut out, r[0].text());
            out[i].reports = r[1].int();
            out[i].messages = r[2].int();
            out[i].dmarc_pass = r[3].int();
        }
        for r in self.query(
            &format!(
                "SELECT r.domain, w.disposition, CAST(SUM(w.count) AS BIGINT) FROM intake_reports r \
                 JOIN intake_rows w ON w.report = r.id WHERE r.kind = 'aggregate' AND {filter} \
                 GROUP BY r.domain, w.disposition ORDER BY r.domain, SUM(w.count) DESC"
            ),
            &params,
        )? {
            let i = entry(&mut out, r[0].text());
            out[i].dispositions.push((r[1].text(), r[2].int()));
        }
        for r in self.query(
            &format!(
                "SELECT r.domain, w.source_ip, CAST(SUM(w.count) AS BIGINT), \
                 CAST(SUM(CASE WHEN w.spf_aligned = 'pass' THEN w.count ELSE 0 END) AS BIGINT), \
                 CAST(SUM(CASE WHEN w.dkim_aligned = 'pass' THEN w.count ELSE 0 END) AS BIGINT) \
                 FROM intake_reports r JOIN intake_rows w ON w.report = r.id \
                 WHERE r.kind = 'aggregate' AND {filter} GROUP BY r.domain, w.source_ip \
                 ORDER BY r.domain, SUM(w.count) DESC, w.source_ip"
            ),
            &params,
        )? {
            let i = entry(&mut out, r[0].text());
            out[i].sources.push(Source {
                ip: r[1].text(),
                messages: r[2].int(),
                spf_aligned_pass: r[3].int(),
                dkim_aligned_pass: r[4].int(),
            });
        }
        for r in self.query(
            "SELECT t.policy_domain, t.result_type, CAST(SUM(t.sessions) AS BIGINT) FROM intake_reports r \
             JOIN intake_tls t ON t.report = r.id WHERE r.kind = 'tlsrpt' AND r.end_ts >= $1 \
             AND ($2 = '' OR t.policy_domain = $2) GROUP BY t.policy_domain, t.result_type \
             ORDER BY t.policy_domain, t.result_type",
            &params,
        )? {
            let i = entry(&mut out, r[0].text());
            out[i].tls.push((r[0].text(), r[1].text(), r[2].int()));
        }
        for r in self.query(
            "SELECT domain, COUNT(*) FROM intake_failures WHERE ($1 = '' OR domain = $1) \
             GROUP BY domain ORDER BY domain",
            &[Val::Text(dom)],
        )? {
            let i = entry(&mut out, r[0].text());
            out[i].failures = r[1].int();
        }
        out.sort_by(|a, b| a.domain.cmp(&b.domain));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreSpec;
    use crate::intake::aggregate::{DkimResult, Row};

    fn report(id: &str, begin: i64, ip: &str, count: i64) -> Aggregate {
        Aggregate {
            org: "receiver.example".into(),
            report_id: id.into(),
            begin,
            end: begin + 86_399,
            domain: "example.com".into(),
            rows: vec![Row {
                source_ip: ip.into(),
                count,
                disposition: "none".into(),
                dkim_aligned: "pass".into(),
                spf_aligned: "fail".into(),
                dkim: vec![DkimResult {
                    domain: "example.com".into(),
                    selector: "s1".into(),
                    result: "pass".into(),
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// Retention counts from import time, for the reports and for what they add to the
    /// per-day rollups alike: a report about a day long past, imported recently, is shown
    /// until it is deleted, and a deleted report no longer counts.
    #[test]
    fn purging_a_report_takes_exactly_its_share_out_of_the_rollups() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&StoreSpec::Sqlite(dir.path().join("r.sqlite"))).unwrap();
        let day = 1_700_006_400; // a day long before the imports
        let (t1, t2) = (1_790_000_000, 1_790_100_000);
        assert!(s
            .intake_aggregate(&report("a", day, "192.0.2.1", 3), "a.xml", t1)
            .unwrap());
        assert!(s
            .intake_aggregate(&report("b", day, "192.0.2.2", 5), "b.xml", t2)
            .unwrap());
        let totals = |s: &mut Store| {
            let days = s.dashboard_days("example.com", 0).unwrap();
            let sources = s.dashboard_sources("example.com", 0, 10).unwrap();
            let selectors: i64 = s
                .dashboard_selectors("example.com", 0)
                .unwrap()
                .iter()
                .map(|r| r.reported_pass)
                .sum();
            (
                days.iter().map(|d| d.messages).sum::<i64>(),
                sources.iter().map(|r| r.ip.clone()).collect::<Vec<_>>(),
                selectors,
            )
        };
        assert_eq!(
            totals(&mut s),
            (8, vec!["192.0.2.2".into(), "192.0.2.1".into()], 8)
        );
        // Past the retention: only the report imported first.
        assert_eq!(s.intake_purge(t1 + 1).unwrap(), 1);
        assert_eq!(totals(&mut s), (5, vec!["192.0.2.2".into()], 5));
        assert_eq!(s.intake_purge(t2 + 1).unwrap(), 1);
        assert_eq!(totals(&mut s), (0, vec![], 0));
        for t in ["intake_days", "intake_sources", "intake_selectors"] {
            let n = s.query(&format!("SELECT COUNT(*) FROM {t}"), &[]).unwrap()[0][0].int();
            assert_eq!(n, 0, "{t}");
        }
    }
}
