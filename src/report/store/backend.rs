//! The two databases behind the store, on common ground: one schema, values ([`Val`]),
//! statements with `$n` parameters, and transactions under a store-wide lock (SQLite
//! `BEGIN IMMEDIATE`, a PostgreSQL advisory lock).

use crate::config::StoreSpec;

/// Why the store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite {}: {source}", path.display())]
    Open {
        path: std::path::PathBuf,
        source: rusqlite::Error,
    },
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgresql: {}", pg_detail(.0))]
    Postgres(#[from] postgres::Error),
    /// `store` is the URL as shown (without a password).
    #[error("postgresql {store}: {}", pg_detail(source))]
    Connect {
        store: String,
        source: postgres::Error,
    },
    /// The store's TLS settings (sslmode, sslrootcert) cannot be used.
    #[error("postgresql {store}: {reason}")]
    Tls { store: String, reason: String },
    #[error("stored data: {0}")]
    Data(#[from] serde_json::Error),
    #[error("stored data: {0}")]
    Unknown(#[from] crate::results::UnknownWord),
}

pub(super) type Result<T> = std::result::Result<T, StoreError>;

/// A PostgreSQL error with what the server said (its own Display says only "db error").
fn pg_detail(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// A SQL value, the common ground of the two backends.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Int(i64),
    Text(String),
    Null,
}

impl Val {
    pub(super) fn int(&self) -> i64 {
        match self {
            Val::Int(i) => *i,
            Val::Text(t) => t.parse().unwrap_or(0),
            Val::Null => 0,
        }
    }

    pub(super) fn text(&self) -> String {
        match self {
            Val::Text(t) => t.clone(),
            Val::Int(i) => i.to_string(),
            Val::Null => String::new(),
        }
    }
}

impl From<&str> for Val {
    fn from(s: &str) -> Self {
        Val::Text(s.to_string())
    }
}
impl From<String> for Val {
    fn from(s: String) -> Self {
        Val::Text(s)
    }
}
impl From<i64> for Val {
    fn from(i: i64) -> Self {
        Val::Int(i)
    }
}

/// The schema version this build writes. Stores are migrated in place when opened, under the
/// store-wide lock; migrations only add (tables, columns), so hosts sharing one PostgreSQL
/// database can be upgraded one at a time, the older ones ignoring what they do not know.
pub const SCHEMA_VERSION: i64 = 17;

/// Migration n takes a store from version n + 1 to n + 2 (version 1: the tables of
/// [`SCHEMA`] before versions were kept).
const MIGRATIONS: [&str; 16] = [
    // 2: delivery state per destination.
    "CREATE TABLE IF NOT EXISTS dmarc_deliveries (
        report_id TEXT NOT NULL,
        address TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        last_error TEXT,
        updated BIGINT NOT NULL,
        PRIMARY KEY (report_id, address)
    )",
    // 3: the key rotation state shared by signing hosts (one row, the state as JSON).
    "CREATE TABLE IF NOT EXISTS key_rotation (
        id BIGINT PRIMARY KEY,
        state TEXT NOT NULL,
        updated BIGINT NOT NULL
    )",
    // 4: per signing host and KeyTable row (domain, algorithm), the selectors of the keys
    // it holds.
    "CREATE TABLE IF NOT EXISTS key_hosts (
        host TEXT NOT NULL,
        domain TEXT NOT NULL,
        algorithm TEXT NOT NULL,
        holds TEXT NOT NULL,
        seen BIGINT NOT NULL,
        PRIMARY KEY (host, domain, algorithm)
    )",
    // 5-14: report intake (reports others send about our domains) and what we signed.
    "CREATE TABLE IF NOT EXISTS intake_reports (
        id @ID@ PRIMARY KEY,
        kind TEXT NOT NULL,
        org TEXT NOT NULL,
        report_id TEXT NOT NULL,
        domain TEXT NOT NULL,
        begin_ts BIGINT NOT NULL,
        end_ts BIGINT NOT NULL,
        imported BIGINT NOT NULL,
        origin TEXT NOT NULL,
        email TEXT NOT NULL,
        policy TEXT NOT NULL,
        UNIQUE (kind, org, report_id)
    )",
    "CREATE INDEX IF NOT EXISTS intake_reports_domain ON intake_reports (domain, end_ts)",
    "CREATE INDEX IF NOT EXISTS intake_reports_imported ON intake_reports (imported)",
    "CREATE TABLE IF NOT EXISTS intake_rows (
        report BIGINT NOT NULL,
        source_ip TEXT NOT NULL,
        count BIGINT NOT NULL,
        disposition TEXT NOT NULL,
        dkim_aligned TEXT NOT NULL,
        spf_aligned TEXT NOT NULL,
        header_from TEXT NOT NULL,
        envelope_from TEXT NOT NULL,
        reasons TEXT NOT NULL,
        dkim TEXT NOT NULL,
        spf TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS intake_rows_report ON intake_rows (report)",
    "CREATE TABLE IF NOT EXISTS intake_tls (
        report BIGINT NOT NULL,
        policy_type TEXT NOT NULL,
        policy_domain TEXT NOT NULL,
        mx_host TEXT NOT NULL,
        result_type TEXT NOT NULL,
        receiving_mx TEXT NOT NULL,
        sending_ip TEXT NOT NULL,
        sessions BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS intake_tls_report ON intake_tls (report)",
    "CREATE TABLE IF NOT EXISTS intake_failures (
        id @ID@ PRIMARY KEY,
        imported BIGINT NOT NULL,
        origin TEXT NOT NULL,
        reporter TEXT NOT NULL,
        domain TEXT NOT NULL,
        source_ip TEXT NOT NULL,
        feedback_type TEXT NOT NULL,
        auth_failure TEXT NOT NULL,
        delivery_result TEXT NOT NULL,
        arrival TEXT NOT NULL,
        mail_from TEXT NOT NULL,
        dkim_domain TEXT NOT NULL,
        dkim_selector TEXT NOT NULL,
        identity_alignment TEXT NOT NULL,
        auth_results TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS intake_rejected (
        id @ID@ PRIMARY KEY,
        imported BIGINT NOT NULL,
        origin TEXT NOT NULL,
        reason TEXT NOT NULL,
        size BIGINT NOT NULL,
        sample TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS signed_counts (
        day BIGINT NOT NULL,
        domain TEXT NOT NULL,
        selector TEXT NOT NULL,
        algorithm TEXT NOT NULL,
        count BIGINT NOT NULL,
        PRIMARY KEY (day, domain, selector, algorithm)
    )",
    // 15-17: per-day rollups of the aggregate reports, written at import, so that a page
    // covering a year reads thousands of rows, not millions (the dashboard).
    "CREATE TABLE IF NOT EXISTS intake_days (
        domain TEXT NOT NULL,
        day BIGINT NOT NULL,
        disposition TEXT NOT NULL,
        dkim_aligned TEXT NOT NULL,
        spf_aligned TEXT NOT NULL,
        count BIGINT NOT NULL,
        PRIMARY KEY (domain, day, disposition, dkim_aligned, spf_aligned)
    )",
    "CREATE TABLE IF NOT EXISTS intake_sources (
        domain TEXT NOT NULL,
        day BIGINT NOT NULL,
        source_ip TEXT NOT NULL,
        count BIGINT NOT NULL,
        spf_pass BIGINT NOT NULL,
        dkim_pass BIGINT NOT NULL,
        dmarc_pass BIGINT NOT NULL,
        forwarded BIGINT NOT NULL,
        PRIMARY KEY (domain, day, source_ip)
    )",
    "CREATE TABLE IF NOT EXISTS intake_selectors (
        domain TEXT NOT NULL,
        day BIGINT NOT NULL,
        selector TEXT NOT NULL,
        result TEXT NOT NULL,
        count BIGINT NOT NULL,
        PRIMARY KEY (domain, day, selector, result)
    )",
];

/// The schema for both backends; `@ID@` is the auto-numbered key (SQLite's rowid alias or a
/// PostgreSQL sequence). SQLite stores BIGINT as INTEGER.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dmarc_records (
    id @ID@ PRIMARY KEY,
    received BIGINT NOT NULL,
    reporter TEXT NOT NULL,
    policy_domain TEXT NOT NULL,
    header_from TEXT NOT NULL,
    envelope_from TEXT NOT NULL,
    source_ip TEXT NOT NULL,
    published TEXT NOT NULL,
    disposition TEXT NOT NULL,
    dkim_aligned TEXT NOT NULL,
    spf_aligned TEXT NOT NULL,
    reasons TEXT NOT NULL,
    dkim TEXT NOT NULL,
    spf TEXT NOT NULL,
    report_id TEXT
);
CREATE INDEX IF NOT EXISTS dmarc_records_pending ON dmarc_records (report_id, policy_domain, received);
CREATE TABLE IF NOT EXISTS dmarc_reports (
    report_id TEXT PRIMARY KEY,
    unique_id TEXT NOT NULL,
    policy_domain TEXT NOT NULL,
    begin_ts BIGINT NOT NULL,
    end_ts BIGINT NOT NULL,
    created BIGINT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    lease_until BIGINT NOT NULL DEFAULT 0,
    last_error TEXT
);
";

/// A lock key for PostgreSQL advisory locks ("mailseal" in ASCII, truncated).
const PG_LOCK: i64 = 0x6d61_696c_7365;

/// An open store.
pub enum Store {
    Sqlite(rusqlite::Connection),
    Postgres(Box<postgres::Client>),
}

impl Store {
    /// Open (and create if needed) the store.
    pub fn open(spec: &StoreSpec) -> Result<Store> {
        match spec {
            StoreSpec::Sqlite(path) => {
                let open_error = |source| StoreError::Open {
                    path: path.clone(),
                    source,
                };
                let conn = rusqlite::Connection::open(path).map_err(open_error)?;
                conn.busy_timeout(std::time::Duration::from_secs(5))?;
                let schema = format!(
                    "PRAGMA journal_mode = WAL;\nPRAGMA synchronous = NORMAL;\n{}",
                    SCHEMA.replace("@ID@", "INTEGER")
                );
                conn.execute_batch(&schema).map_err(open_error)?;
                let mut store = Store::Sqlite(conn);
                store.migrate()?;
                Ok(store)
            }
            StoreSpec::Postgres(url) => {
                let mut client = pg_connect(url).map_err(|e| match e {
                    PgConnect::Postgres(source) => StoreError::Connect {
                        store: spec.to_string(),
                        source,
                    },
                    PgConnect::Tls(reason) => StoreError::Tls {
                        store: spec.to_string(),
                        reason,
                    },
                })?;
                // Two hosts creating the schema at once must not collide.
                let mut tx = client.transaction()?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PG_LOCK])?;
                tx.batch_execute(&SCHEMA.replace("@ID@", "BIGSERIAL"))?;
                tx.commit()?;
                let mut store = Store::Postgres(Box::new(client));
                store.migrate()?;
                Ok(store)
            }
        }
    }

    /// Bring the store to [`SCHEMA_VERSION`] (see [`MIGRATIONS`]). A store written by a newer
    /// build is left as it is: its additions do not concern this one.
    fn migrate(&mut self) -> Result<()> {
        self.transaction(|s| {
            s.exec(
                "CREATE TABLE IF NOT EXISTS mailseal_schema (version BIGINT NOT NULL)",
                &[],
            )?;
            let found = s.query("SELECT MAX(version) FROM mailseal_schema", &[])?;
            let version = found
                .first()
                .map(|r| r[0].int())
                .filter(|v| *v > 0)
                .unwrap_or(1);
            if version >= SCHEMA_VERSION {
                return Ok(());
            }
            let id = match s {
                Store::Sqlite(_) => "INTEGER",
                Store::Postgres(_) => "BIGSERIAL",
            };
            for m in &MIGRATIONS[(version - 1) as usize..] {
                s.exec(&m.replace("@ID@", id), &[])?;
            }
            s.exec("DELETE FROM mailseal_schema", &[])?;
            s.exec(
                "INSERT INTO mailseal_schema (version) VALUES ($1)",
                &[SCHEMA_VERSION.into()],
            )?;
            tracing::info!(
                "report store: schema migrated from version {version} to {SCHEMA_VERSION}"
            );
            Ok(())
        })
    }

    pub(super) fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64> {
        match self {
            Store::Sqlite(c) => {
                let sql = sql.replace('$', "?");
                let mut st = c.prepare_cached(&sql)?;
                let n = st.execute(rusqlite::params_from_iter(params.iter().map(sqlite_val)))?;
                Ok(n as u64)
            }
            Store::Postgres(c) => {
                let owned = pg_params(params);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    owned.iter().map(|b| b.as_ref()).collect();
                Ok(c.execute(sql, &refs)?)
            }
        }
    }

    pub(super) fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Vec<Val>>> {
        match self {
            Store::Sqlite(c) => {
                let sql = sql.replace('$', "?");
                let mut st = c.prepare_cached(&sql)?;
                let cols = st.column_count();
                let rows = st.query_map(
                    rusqlite::params_from_iter(params.iter().map(sqlite_val)),
                    |row| {
                        (0..cols)
                            .map(|i| {
                                Ok(match row.get_ref(i)? {
                                    rusqlite::types::ValueRef::Integer(n) => Val::Int(n),
                                    rusqlite::types::ValueRef::Text(t) => {
                                        Val::Text(String::from_utf8_lossy(t).into_owned())
                                    }
                                    rusqlite::types::ValueRef::Real(r) => Val::Int(r as i64),
                                    _ => Val::Null,
                                })
                            })
                            .collect::<rusqlite::Result<Vec<Val>>>()
                    },
                )?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            }
            Store::Postgres(c) => {
                let owned = pg_params(params);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    owned.iter().map(|b| b.as_ref()).collect();
                let rows = c.query(sql, &refs)?;
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    let mut vals = Vec::with_capacity(row.len());
                    for (i, col) in row.columns().iter().enumerate() {
                        use postgres::types::Type;
                        let v = match *col.type_() {
                            Type::INT8 => row.get::<_, Option<i64>>(i).map(Val::Int),
                            Type::INT4 => row.get::<_, Option<i32>>(i).map(|n| Val::Int(n.into())),
                            _ => row.get::<_, Option<String>>(i).map(Val::Text),
                        };
                        vals.push(v.unwrap_or(Val::Null));
                    }
                    out.push(vals);
                }
                Ok(out)
            }
        }
    }

    fn begin(&mut self) -> Result<()> {
        match self {
            Store::Sqlite(c) => c.execute_batch("BEGIN IMMEDIATE")?,
            Store::Postgres(c) => {
                c.batch_execute("BEGIN")?;
                c.execute("SELECT pg_advisory_xact_lock($1)", &[&PG_LOCK])?;
            }
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        match self {
            Store::Sqlite(c) => c.execute_batch("COMMIT")?,
            Store::Postgres(c) => c.batch_execute("COMMIT")?,
        }
        Ok(())
    }

    fn rollback(&mut self) {
        let _ = match self {
            Store::Sqlite(c) => c.execute_batch("ROLLBACK").map_err(StoreError::from),
            Store::Postgres(c) => c.batch_execute("ROLLBACK").map_err(StoreError::from),
        };
    }

    /// Run `f` in one transaction (under the store-wide lock); roll back on error.
    pub(super) fn transaction<T>(&mut self, f: impl FnOnce(&mut Store) -> Result<T>) -> Result<T> {
        self.begin()?;
        match f(self) {
            Ok(v) => {
                self.commit()?;
                Ok(v)
            }
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }
}

fn sqlite_val(v: &Val) -> rusqlite::types::Value {
    match v {
        Val::Int(i) => rusqlite::types::Value::Integer(*i),
        Val::Text(t) => rusqlite::types::Value::Text(t.clone()),
        Val::Null => rusqlite::types::Value::Null,
    }
}

fn pg_params(params: &[Val]) -> Vec<Box<dyn postgres::types::ToSql + Sync>> {
    params
        .iter()
        .map(|v| -> Box<dyn postgres::types::ToSql + Sync> {
            match v {
                Val::Int(i) => Box::new(*i),
                // PostgreSQL text cannot hold NUL (SQLite can): a report's stray NUL is
                // kept as U+FFFD rather than failing the report.
                Val::Text(t) => Box::new(t.replace('\0', "\u{fffd}")),
                Val::Null => Box::new(Option::<String>::None),
            }
        })
        .collect()
}

enum PgConnect {
    Postgres(postgres::Error),
    Tls(String),
}

/// Connect as libpq users expect: `sslmode` disable, prefer (the default: TLS when the
/// server offers it), require (TLS, certificate not checked), verify-ca (checked against
/// its CA) or verify-full (and the host name), with `sslrootcert` (PEM; default: the
/// system's roots). The postgres crate knows neither verify mode nor sslrootcert, so both
/// are read here and taken out of the string it parses.
fn pg_connect(url: &str) -> std::result::Result<postgres::Client, PgConnect> {
    let (rest, params) = take_params(url, &["sslmode", "sslrootcert"]);
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let mut config: postgres::Config = rest.parse().map_err(PgConnect::Postgres)?;
    use crate::tls::Check;
    let (mode, check) = match get("sslmode").unwrap_or("prefer") {
        "disable" => {
            config.ssl_mode(postgres::config::SslMode::Disable);
            return config.connect(postgres::NoTls).map_err(PgConnect::Postgres);
        }
        "allow" | "prefer" => (postgres::config::SslMode::Prefer, Check::None),
        "require" => (postgres::config::SslMode::Require, Check::None),
        "verify-ca" => (postgres::config::SslMode::Require, Check::Ca),
        "verify-full" => (postgres::config::SslMode::Require, Check::Full),
        other => return Err(PgConnect::Tls(format!("unknown sslmode {other:?}"))),
    };
    config.ssl_mode(mode);
    let roots = get("sslrootcert")
        .filter(|r| *r != "system")
        .map(std::path::Path::new);
    let tls = crate::tls::client_config(check, roots).map_err(|e| PgConnect::Tls(e.to_string()))?;
    let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
    config.connect(connector).map_err(PgConnect::Postgres)
}

/// A connection string without the parameters `keys`, and their values (percent-decoded in
/// a URL).
fn take_params(url: &str, keys: &[&str]) -> (String, Vec<(String, String)>) {
    let mut taken = Vec::new();
    if url.contains("://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_string(), taken);
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                if keys.contains(&k) {
                    taken.push((k.to_string(), percent_decode(v)));
                    false
                } else {
                    true
                }
            })
            .collect();
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (rest, taken);
    }
    let kept: Vec<String> = crate::config::conninfo_pairs(url)
        .into_iter()
        .filter_map(|(k, raw, v)| {
            if keys.contains(&k.as_str()) {
                taken.push((k, v));
                None
            } else {
                Some(raw)
            }
        })
        .collect();
    (kept.join(" "), taken)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(n) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(n);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod pg_tests {
    #[test]
    fn tls_parameters_are_taken_out() {
        let (rest, p) = super::take_params(
            "postgres://u@h/db?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
            &["sslmode", "sslrootcert"],
        );
        assert_eq!(rest, "postgres://u@h/db?application_name=x");
        assert_eq!(
            p,
            [
                ("sslmode".to_string(), "verify-full".to_string()),
                ("sslrootcert".to_string(), "/etc/ca.pem".to_string())
            ]
        );
        let (rest, p) = super::take_params(
            "host=h sslmode=require password='a b' sslrootcert=/x",
            &["sslmode", "sslrootcert"],
        );
        assert_eq!(rest, "host=h password='a b'");
        assert_eq!(p.len(), 2);
    }
}
