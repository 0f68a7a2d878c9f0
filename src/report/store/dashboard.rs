//! The dashboard's queries: per domain and from a day on, read from the per-day rollups
//! import writes (`intake_days`, `intake_sources`, `intake_selectors`), `signed_counts` and
//! the TLS reports, each a GROUP BY over at most a few thousand rows a domain-year.

use super::backend::{Result, Store, Val};

/// One day: messages reported and how many passed DMARC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Day {
    pub day: i64,
    pub messages: i64,
    pub pass: i64,
}

/// One sending source over the range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceRow {
    pub ip: String,
    pub messages: i64,
    pub spf_pass: i64,
    pub dkim_pass: i64,
    pub dmarc_pass: i64,
    /// DKIM aligned pass, SPF aligned fail: what forwarding does to our mail.
    pub forwarded: i64,
}

/// One selector as receivers reported it, next to what we signed with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectorRow {
    /// Empty: mail receivers saw without any signature of the domain.
    pub selector: String,
    pub algorithm: String,
    pub reported_pass: i64,
    pub reported_fail: i64,
    pub signed: i64,
}

/// TLS sessions per receiving MX and result type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsRow {
    pub mx: String,
    pub result_type: String,
    pub sessions: i64,
}

impl Store {
    /// The domains with reports or signatures.
    pub fn dashboard_domains(&mut self) -> Result<Vec<String>> {
        Ok(self
            .query(
                "SELECT DISTINCT domain FROM intake_days UNION SELECT DISTINCT domain FROM \
                 signed_counts UNION SELECT DISTINCT policy_domain FROM intake_tls ORDER BY 1",
                &[],
            )?
            .into_iter()
            .map(|r| r[0].text())
            .collect())
    }

    pub fn dashboard_days(&mut self, domain: &str, since: i64) -> Result<Vec<Day>> {
        Ok(self
            .query(
                "SELECT day, CAST(SUM(count) AS BIGINT), CAST(SUM(CASE WHEN dkim_aligned = 'pass' \
                 OR spf_aligned = 'pass' THEN count ELSE 0 END) AS BIGINT) FROM intake_days \
                 WHERE domain = $1 AND day >= $2 GROUP BY day ORDER BY day",
                &[domain.into(), since.into()],
            )?
            .into_iter()
            .map(|r| Day {
                day: r[0].int(),
                messages: r[1].int(),
                pass: r[2].int(),
            })
            .collect())
    }

    /// (disposition, messages), most first.
    pub fn dashboard_dispositions(
        &mut self,
        domain: &str,
        since: i64,
    ) -> Result<Vec<(String, i64)>> {
        Ok(self
            .query(
                "SELECT disposition, CAST(SUM(count) AS BIGINT) FROM intake_days \
                 WHERE domain = $1 AND day >= $2 GROUP BY disposition ORDER BY 2 DESC, 1",
                &[domain.into(), since.into()],
            )?
            .into_iter()
            .map(|r| (r[0].text(), r[1].int()))
            .collect())
    }

    /// Sources, failing ones first (most messages without a DMARC pass), at most `limit`.
    pub fn dashboard_sources(
        &mut self,
        domain: &str,
        since: i64,
        limit: i64,
    ) -> Result<Vec<SourceRow>> {
        Ok(self
            .query(
                "SELECT source_ip, CAST(SUM(count) AS BIGINT), CAST(SUM(spf_pass) AS BIGINT), \
                 CAST(SUM(dkim_pass) AS BIGINT), CAST(SUM(dmarc_pass) AS BIGINT), \
                 CAST(SUM(forwarded) AS BIGINT) FROM intake_sources \
                 WHERE domain = $1 AND day >= $2 GROUP BY source_ip \
                 ORDER BY SUM(count) - SUM(dmarc_pass) DESC, SUM(count) DESC, source_ip LIMIT $3",
                &[domain.into(), since.into(), limit.into()],
            )?
            .into_iter()
            .map(|r| SourceRow {
                ip: r[0].text(),
                messages: r[1].int(),
                spf_pass: r[2].int(),
                dkim_pass: r[3].int(),
                dmarc_pass: r[4].int(),
                forwarded: r[5].int(),
            })
            .collect())
    }

    /// Every selector receivers reported for the domain or we signed with, the reported
    /// results next to our signature counts.
    pub fn dashboard_selectors(&mut self, domain: &str, since: i64) -> Result<Vec<SelectorRow>> {
        let mut out: Vec<SelectorRow> = Vec::new();
        for r in self.query(
            "SELECT selector, algorithm, CAST(SUM(count) AS BIGINT) FROM signed_counts \
             WHERE domain = $1 AND day >= $2 GROUP BY selector, algorithm ORDER BY 1",
            &[domain.into(), since.into()],
        )? {
            out.push(SelectorRow {
                selector: r[0].text(),
                algorithm: r[1].text(),
                signed: r[2].int(),
                ..Default::default()
            });
        }
        for r in self.query(
            "SELECT selector, result, CAST(SUM(count) AS BIGINT) FROM intake_selectors \
             WHERE domain = $1 AND day >= $2 GROUP BY selector, result ORDER BY 1, 2",
            &[domain.into(), since.into()],
        )? {
            let selector = r[0].text();
            let i = match out.iter().position(|s| s.selector == selector) {
                Some(i) => i,
                None => {
                    out.push(SelectorRow {
                        selector,
                        ..Default::default()
                    });
                    out.len() - 1
                }
            };
            if r[1].text() == "pass" {
                out[i].reported_pass += r[2].int();
            } else {
                out[i].reported_fail += r[2].int();
            }
        }
        Ok(out)
    }

    /// TLS sessions per MX and result type. Receivers count successful sessions (and the
    /// failure total) per policy: those rows carry the MX the policy names (one host, or
    /// its list or pattern); a failure detail carries the receiving MX it names, else the
    /// policy's.
    pub fn dashboard_tls(&mut self, domain: &str, since: i64) -> Result<Vec<TlsRow>> {
        Ok(self
            .query(
                "SELECT CASE WHEN t.result_type LIKE 'total-%' THEN t.mx_host \
                 ELSE COALESCE(NULLIF(t.receiving_mx, ''), t.mx_host) END AS mx, \
                 t.result_type, CAST(SUM(t.sessions) AS BIGINT) \
                 FROM intake_tls t JOIN intake_reports r ON t.report = r.id \
                 WHERE t.policy_domain = $1 AND r.end_ts >= $2 \
                 GROUP BY 1, 2 ORDER BY 1, 2",
                &[domain.into(), since.into()],
            )?
            .into_iter()
            .map(|r| TlsRow {
                mx: r[0].text(),
                result_type: r[1].text(),
                sessions: r[2].int(),
            })
            .collect())
    }

    /// The policy the latest report for the domain found (its `p=`), and since when the
    /// reports have shown that same p= (the oldest report in the unbroken run).
    pub fn dashboard_policy(&mut self, domain: &str) -> Result<Option<(String, i64)>> {
        let rows = self.query(
            "SELECT policy, begin_ts FROM intake_reports WHERE domain = $1 \
             AND kind = 'aggregate' ORDER BY end_ts DESC LIMIT 500",
            &[Val::Text(domain.into())],
        )?;
        let p_of = |json: &str| {
            serde_json::from_str::<crate::intake::aggregate::Policy>(json)
                .map(|p| p.p)
                .unwrap_or_default()
        };
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let p = p_of(&first[0].text());
        let mut since = first[1].int();
        for r in &rows {
            if p_of(&r[0].text()) != p {
                break;
            }
            since = r[1].int();
        }
        Ok(Some((p, since)))
    }
}
