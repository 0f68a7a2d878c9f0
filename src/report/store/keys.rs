//! The key rotation state shared by signing hosts (`[keys] store`): one row holding the
//! state as JSON, changed only under the store-wide lock, and per host and KeyTable row the
//! keys that host holds. See [`crate::rotation::shared`].

use super::backend::{Result, Store};

/// What one host said it holds for one KeyTable row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKeys {
    pub host: String,
    pub domain: String,
    pub algorithm: String,
    /// Selectors of the keys whose files the host has (and which match the state's key).
    pub holds: Vec<String>,
    /// When it last said so (Unix time).
    pub seen: i64,
}

impl Store {
    /// Under the store-wide lock: the shared state (`None` before the first write) goes
    /// through `f`, whose `Some` result is written back. `f` runs inside the transaction, so
    /// no other host changes the state between the read and the write.
    pub fn key_state<T>(
        &mut self,
        now: i64,
        f: impl FnOnce(Option<String>) -> std::result::Result<(Option<String>, T), String>,
    ) -> Result<std::result::Result<T, String>> {
        self.transaction(|s| {
            let found = s.query("SELECT state FROM key_rotation WHERE id = 1", &[])?;
            let current = found.first().map(|r| r[0].text());
            match f(current) {
                Ok((Some(new), out)) => {
                    s.exec(
                        "INSERT INTO key_rotation (id, state, updated) VALUES (1, $1, $2) \
                         ON CONFLICT (id) DO UPDATE SET state = $1, updated = $2",
                        &[new.into(), now.into()],
                    )?;
                    Ok(Ok(out))
                }
                Ok((None, out)) => Ok(Ok(out)),
                Err(e) => Ok(Err(e)),
            }
        })
    }

    /// Record what `host` holds now: one entry per KeyTable row it signs with, replacing
    /// what it said before.
    pub fn report_keys(&mut self, host: &str, rows: &[HostKeys], now: i64) -> Result<()> {
        self.transaction(|s| {
            s.exec("DELETE FROM key_hosts WHERE host = $1", &[host.into()])?;
            for r in rows {
                s.exec(
                    "INSERT INTO key_hosts (host, domain, algorithm, holds, seen) \
                     VALUES ($1, $2, $3, $4, $5)",
                    &[
                        host.into(),
                        r.domain.to_ascii_lowercase().into(),
                        r.algorithm.as_str().into(),
                        r.holds.join(" ").into(),
                        now.into(),
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// Every host's report, by host, domain and algorithm.
    pub fn host_keys(&mut self) -> Result<Vec<HostKeys>> {
        let rows = self.query(
            "SELECT host, domain, algorithm, holds, seen FROM key_hosts \
             ORDER BY host, domain, algorithm",
            &[],
        )?;
        Ok(rows
            .into_iter()
            .map(|r| HostKeys {
                host: r[0].text(),
                domain: r[1].text(),
                algorithm: r[2].text(),
                holds: r[3].text().split_whitespace().map(str::to_string).collect(),
                seen: r[4].int(),
            })
            .collect())
    }

    /// Forget a host (gone for good): keys no longer wait for it. Returns whether it was
    /// known.
    pub fn forget_host(&mut self, host: &str) -> Result<bool> {
        let n = self.transaction(|s| {
            s.exec(
                "DELETE FROM key_hosts WHERE lower(host) = lower($1)",
                &[host.into()],
            )
        })?;
        Ok(n > 0)
    }
}
