//! Where the rotation state is kept: `[keys] dir/state.json` on one host, or, with
//! `[keys] store`, a PostgreSQL database shared by every signing host.
//!
//! Shared, the database holds the one true state, changed only under its lock; each host
//! keeps a copy in its own state.json (what [`super::apply`] reads when a configuration is
//! loaded, so a host signs on while the database is unreachable), and says which key files
//! it holds. Private keys never go into the database: the admin copies a new key file to
//! every host. A key becomes active only when every host signing for its domain and
//! algorithm holds it ([`Holders`]); a host's copy of a removed key is deleted when its copy
//! of the state no longer lists it.
//!
//! The database is reached through the blocking PostgreSQL client, which must not run on an
//! async runtime's thread: it runs on a thread of its own ([`off_runtime`]).

use std::collections::BTreeMap;
use std::path::Path;

use super::{Entry, Lock, Rotation, STATE_FILE};
use crate::config::{Config, Keys, StoreSpec};
use crate::report::store::{HostKeys, Store};

/// Per key, the hosts that sign for its domain and algorithm but do not hold its file.
#[derive(Debug, Default)]
pub struct Holders(BTreeMap<(String, String), Vec<String>>);

impl Holders {
    /// The hosts `e` waits for (none on a single host).
    pub fn missing(&self, e: &Entry) -> &[String] {
        self.0
            .get(&(e.domain.to_ascii_lowercase(), e.selector.clone()))
            .map_or(&[], Vec::as_slice)
    }

    fn from_reports(state: &Rotation, reports: &[HostKeys]) -> Holders {
        let mut missing = BTreeMap::new();
        for e in &state.keys {
            let hosts: Vec<String> = reports
                .iter()
                .filter(|r| {
                    r.domain.eq_ignore_ascii_case(&e.domain)
                        && r.algorithm == e.algorithm
                        && !r.holds.contains(&e.selector)
                })
                .map(|r| r.host.clone())
                .collect();
            if !hosts.is_empty() {
                missing.insert((e.domain.to_ascii_lowercase(), e.selector.clone()), hosts);
            }
        }
        Holders(missing)
    }
}

/// Run `f` on a thread of its own, outside any async runtime, and wait for it.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

fn connect(spec: &StoreSpec) -> Result<Store, String> {
    Store::open(spec).map_err(|e| format!("keys.store: {e}"))
}

fn parse(text: &str) -> Result<Rotation, String> {
    serde_json::from_str(text).map_err(|e| format!("keys.store: not a rotation state: {e}"))
}

/// The shared state: the database's, or before its first write this host's state.json
/// (which the first write puts there).
fn shared_state(store: &mut Store, dir: &Path) -> Result<Rotation, String> {
    let found = store
        .key_state(crate::report::now(), |cur| Ok((None, cur)))
        .map_err(|e| format!("keys.store: {e}"))??;
    match found {
        Some(text) => parse(&text),
        None => Rotation::load(dir),
    }
}

/// Make this host's state.json the shared state (the caller holds the local lock). Keys
/// made by rotation that the old copy listed and the new one does not were removed: their
/// files go.
fn mirror(dir: &Path, state: &Rotation) -> Result<(), String> {
    let old = Rotation::load(dir).unwrap_or_default();
    if old == *state && dir.join(STATE_FILE).exists() {
        return Ok(());
    }
    for e in old
        .keys
        .iter()
        .filter(|e| e.generated && e.file.is_relative())
    {
        let kept = state
            .keys
            .iter()
            .any(|n| n.domain.eq_ignore_ascii_case(&e.domain) && n.selector == e.selector);
        if !kept {
            let _ = std::fs::remove_file(e.path(dir));
        }
    }
    state.save(dir)
}

/// The state a configuration load applies: this host's state.json. Shared, a host with no
/// copy yet (a new host, or a lost file) fetches it first; a database it cannot reach then
/// is an error, never a silent return to the KeyTable's keys.
pub fn local_view(keys: &Keys) -> Result<Rotation, String> {
    if let Some(spec) = keys.store().filter(|_| !keys.dir.join(STATE_FILE).exists()) {
        return off_runtime(|| {
            let mut store = connect(&spec)?;
            let state = shared_state(&mut store, &keys.dir)?;
            let _lock = Lock::acquire(&keys.dir)?;
            mirror(&keys.dir, &state)?;
            Ok(state)
        });
    }
    Rotation::load(&keys.dir)
}

/// The state now, and which hosts each key waits for; shared, this host's copy is brought
/// up to date.
pub fn read(keys: &Keys) -> Result<(Rotation, Holders), String> {
    let Some(spec) = keys.store() else {
        return Ok((Rotation::load(&keys.dir)?, Holders::default()));
    };
    off_runtime(|| {
        let mut store = connect(&spec)?;
        let state = shared_state(&mut store, &keys.dir)?;
        let reports = store.host_keys().map_err(|e| format!("keys.store: {e}"))?;
        let _lock = Lock::acquire(&keys.dir)?;
        mirror(&keys.dir, &state)?;
        Ok((Holders::from_reports(&state, &reports), state))
    })
    .map(|(h, s)| (s, h))
}

/// Change the state under its lock(s): `f` sees the state and who holds what, and what it
/// leaves is written (shared: to the database, then this host's copy). Nothing else changes
/// the state between the read and the write: the local flock keeps this host's daemon and
/// command line apart, the database's lock the hosts.
pub fn change<T: Send>(
    keys: &Keys,
    f: impl FnOnce(&mut Rotation, &Holders) -> Result<T, String> + Send,
) -> Result<T, String> {
    let _lock = Lock::acquire(&keys.dir)?;
    let Some(spec) = keys.store() else {
        let mut state = Rotation::load(&keys.dir)?;
        let before = state.clone();
        let out = f(&mut state, &Holders::default())?;
        if state != before {
            state.save(&keys.dir)?;
        }
        return Ok(out);
    };
    off_runtime(|| {
        let mut store = connect(&spec)?;
        let reports = store.host_keys().map_err(|e| format!("keys.store: {e}"))?;
        let (out, state) = store
            .key_state(crate::report::now(), |cur| {
                let mut state = match &cur {
                    Some(text) => parse(text)?,
                    None => Rotation::load(&keys.dir)?,
                };
                let before = state.clone();
                let holders = Holders::from_reports(&state, &reports);
                let out = f(&mut state, &holders)?;
                let write = if state != before || cur.is_none() {
                    Some(serde_json::to_string(&state).map_err(|e| e.to_string())?)
                } else {
                    None
                };
                Ok((write, (out, state)))
            })
            .map_err(|e| format!("keys.store: {e}"))??;
        mirror(&keys.dir, &state)?;
        Ok(out)
    })
}

/// Shared: say which keys this host holds, per KeyTable row it signs with (the row's
/// active key, and every key of the state for its domain and algorithm whose file is here
/// and is that key). Single host: nothing to say.
pub fn report_held(config: &Config) -> Result<(), String> {
    let keys = &config.keys;
    let Some(spec) = keys.store() else {
        return Ok(());
    };
    let (state, _) = read(keys)?;
    let mut rows: Vec<HostKeys> = Vec::new();
    for t in &config.tables.keys {
        let Some(domain) = &t.domain else { continue };
        let algorithm = super::algorithm(t.key.kind).to_string();
        let mut holds = vec![t.selector.clone()];
        holds.extend(
            state
                .keys
                .iter()
                .filter(|e| {
                    e.domain.eq_ignore_ascii_case(domain)
                        && e.algorithm == algorithm
                        && e.generated
                        && e.held(&keys.dir)
                })
                .map(|e| e.selector.clone()),
        );
        holds.sort();
        holds.dedup();
        match rows
            .iter_mut()
            .find(|r| r.domain.eq_ignore_ascii_case(domain) && r.algorithm == algorithm)
        {
            Some(r) => r.holds.extend(holds),
            None => rows.push(HostKeys {
                host: config.host_name.clone(),
                domain: domain.clone(),
                algorithm,
                holds,
                seen: 0,
            }),
        }
    }
    off_runtime(|| {
        connect(&spec)?
            .report_keys(&config.host_name, &rows, crate::report::now())
            .map_err(|e| format!("keys.store: {e}"))
    })
}

/// Shared: every host's report. Single host: none.
pub fn hosts(keys: &Keys) -> Result<Vec<HostKeys>, String> {
    let Some(spec) = keys.store() else {
        return Ok(Vec::new());
    };
    off_runtime(|| {
        connect(&spec)?
            .host_keys()
            .map_err(|e| format!("keys.store: {e}"))
    })
}

/// Shared: forget a host gone for good. Returns whether it was known.
pub fn forget(keys: &Keys, host: &str) -> Result<bool, String> {
    let Some(spec) = keys.store() else {
        return Err("keys.store is not set: there are no other hosts".into());
    };
    off_runtime(|| {
        connect(&spec)?
            .forget_host(host)
            .map_err(|e| format!("keys.store: {e}"))
    })
}
