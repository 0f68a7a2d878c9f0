//! Reports arriving by mail, read off the milter path. At the end of an accepted message for
//! `[intake] addresses` the milter writes it to the spool (`[intake] spool`, a file synced
//! to disk) and tells the reader thread, which parses and stores it and only then deletes
//! the file: a report whose address was removed (`keep_messages = false`) survives a store
//! that is down, a full queue, a restart or a crash, and is stored once the store takes it
//! (the spool is tried at start, every minute and at every flush). Only a message the spool
//! cannot take is read from memory, and then its report addresses stay recipients. Every
//! outcome is counted (`mailseal_intake_reports_total{outcome}`) and logged.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use super::Limits;
use crate::config::StoreSpec;
use crate::metrics::{Counter, Metrics};
use crate::report::store::Store;

/// Most message bytes waiting to be read, over all queued messages.
pub const MAX_QUEUED_BYTES: usize = 256 * 1024 * 1024;
/// Most bytes the spool holds; a message that would take it past this is read from memory
/// and its report addresses stay recipients.
pub const MAX_SPOOL_BYTES: u64 = 256 * 1024 * 1024;
/// How often imported reports past the retention are deleted.
const PURGE_EVERY: i64 = 3600;
/// How often the spool is tried while it holds messages.
const RETRY_EVERY: Duration = Duration::from_secs(60);

enum Job {
    /// A message in the spool.
    Spooled(PathBuf),
    /// A message the spool could not take, in memory.
    Read {
        origin: String,
        data: Vec<u8>,
    },
    /// Not kept whole (over max_message_size, or the buffer budget): refused unread.
    NotRead {
        origin: String,
        reason: String,
        size: usize,
    },
    Flush(SyncSender<()>),
}

/// What the reader needs, fixed when it starts (a reload with other settings starts a new
/// reader).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub spec: StoreSpec,
    pub limits: LimitsKey,
    pub domains: Vec<String>,
    pub retention: i64,
    pub queue: usize,
    /// Where each message for the report addresses waits until its reports are stored.
    pub spool: PathBuf,
}

/// [`Limits`] as a comparable value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsKey(pub usize, pub usize, pub usize);

impl From<LimitsKey> for Limits {
    fn from(k: LimitsKey) -> Limits {
        Limits {
            max_message_size: k.0,
            max_report_size: k.1,
            max_ratio: k.2,
        }
    }
}

/// A handle to the reader; cheap to clone.
#[derive(Clone)]
pub struct IntakeQueue {
    tx: SyncSender<Job>,
    queued: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    pub settings: Arc<Settings>,
}

impl std::fmt::Debug for IntakeQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IntakeQueue({})", self.settings.spec)
    }
}

impl IntakeQueue {
    pub fn start(settings: Settings, metrics: Arc<Metrics>) -> IntakeQueue {
        let (tx, rx) = mpsc::sync_channel(settings.queue);
        let queued = Arc::new(AtomicUsize::new(0));
        if let Err(e) = spool_dir(&settings.spool) {
            tracing::error!(
                "intake: the spool {}: {e}; report mail is read from memory, and report addresses are not removed",
                settings.spool.display()
            );
        }
        let settings = Arc::new(settings);
        let reader = Reader {
            settings: settings.clone(),
            store: None,
            last_purge: 0,
            store_down: false,
            last_error: String::new(),
            attempts: Default::default(),
            metrics: metrics.clone(),
        };
        let q = queued.clone();
        if let Err(e) = std::thread::Builder::new()
            .name("mailseal-intake".into())
            .spawn(move || reader.run(rx, &q))
        {
            tracing::error!(
                "cannot start the report intake reader: {e}; reports by mail are not read"
            );
        }
        IntakeQueue {
            tx,
            queued,
            metrics,
            settings,
        }
    }

    /// Queue an accepted message the spool could not take, in memory. Never blocks; when
    /// the queue is full it is not read (counted, logged).
    pub fn submit(&self, origin: String, data: Vec<u8>) {
        let size = data.len();
        if self.queued.fetch_add(size, Ordering::SeqCst) + size > MAX_QUEUED_BYTES {
            self.queued.fetch_sub(size, Ordering::SeqCst);
            self.dropped(&origin);
            return;
        }
        if self
            .tx
            .try_send(Job::Read {
                origin: origin.clone(),
                data,
            })
            .is_err()
        {
            self.queued.fetch_sub(size, Ordering::SeqCst);
            self.dropped(&origin);
        }
    }

    /// Write an accepted message to the spool and tell the reader (when its queue is full,
    /// the minute's retry finds the file). Blocking: a file written and synced. False when
    /// the spool cannot take it.
    pub fn spool(&self, origin: &str, data: &[u8]) -> bool {
        match spool_write(&self.settings.spool, origin, data) {
            Ok(path) => {
                let _ = self.tx.try_send(Job::Spooled(path));
                true
            }
            Err(e) => {
                tracing::warn!(
                    "intake: {origin}: the spool {} cannot take it: {e}",
                    self.settings.spool.display()
                );
                false
            }
        }
    }

    /// A message that could not be kept whole: refused unread, with the reason.
    pub fn not_read(&self, origin: String, reason: String, size: usize) {
        let job = Job::NotRead {
            origin: origin.clone(),
            reason,
            size,
        };
        if self.tx.try_send(job).is_err() {
            self.dropped(&origin);
        }
    }

    fn dropped(&self, origin: &str) {
        self.metrics.inc(Counter::Intake, &[("outcome", "dropped")]);
        tracing::warn!(
            "intake: queue full; the reports in {origin} are not read (the mail is delivered as usual)"
        );
    }

    /// Wait (at most `timeout`) until everything queued so far is read.
    pub fn flush(&self, timeout: std::time::Duration) -> bool {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.tx.send(Job::Flush(tx)).is_err() {
            return false;
        }
        rx.recv_timeout(timeout).is_ok()
    }
}

/// The reader thread's state.
struct Reader {
    settings: Arc<Settings>,
    store: Option<Store>,
    last_purge: i64,
    /// The last try at the store failed (said once until it is back).
    store_down: bool,
    /// Why the store failed last.
    last_error: String,
    /// Spooled messages the store failed on while it was up, and how often.
    attempts: std::collections::HashMap<PathBuf, u32>,
    metrics: Arc<Metrics>,
}

impl Reader {
    fn run(mut self, rx: Receiver<Job>, queued: &AtomicUsize) {
        // What an earlier run left in the spool: the first reader of the process takes back
        // every claimed file at once (no other reader is at it yet).
        static FIRST: std::sync::Once = std::sync::Once::new();
        FIRST.call_once(|| recover_abandoned(&self.settings.spool, 0));
        self.retry_spool();
        loop {
            match rx.recv_timeout(RETRY_EVERY) {
                Ok(Job::Flush(done)) => {
                    self.retry_spool();
                    let _ = done.send(());
                }
                Ok(Job::Spooled(path)) => {
                    if !self.read_spooled(&path) {
                        self.metrics.inc(Counter::Intake, &[("outcome", "spooled")]);
                    }
                }
                Ok(Job::Read { origin, data }) => {
                    queued.fetch_sub(data.len(), Ordering::SeqCst);
                    if !self.read(&origin, &data) {
                        self.spool(&origin, &data);
                    }
                }
                Ok(Job::NotRead {
                    origin,
                    reason,
                    size,
                }) => {
                    let items = vec![super::Item::Refused {
                        reason,
                        size,
                        sample: Vec::new(),
                    }];
                    if !self.keep(&origin, items) {
                        // The mail was delivered as usual; only the note of it is missing.
                        self.metrics.inc(Counter::Intake, &[("outcome", "lost")]);
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.retry_spool(),
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    /// Parse and keep one message; false when the store failed (nothing is counted then:
    /// the message is spooled, or it is a spooled one and stays there).
    fn read(&mut self, origin: &str, data: &[u8]) -> bool {
        let limits: Limits = self.settings.limits.into();
        // A parser bug must not stop the reader: the message is refused instead.
        let items = std::panic::catch_unwind(|| super::read_input(data, &limits))
            .unwrap_or_else(|_| vec![super::refused("the reader failed on it", data)]);
        self.keep(origin, items)
    }

    /// Keep what a message held; false when the store could not be opened or failed.
    fn keep(&mut self, origin: &str, items: Vec<super::Item>) -> bool {
        if self.store.is_none() {
            match Store::open(&self.settings.spec) {
                Ok(s) => self.store = Some(s),
                Err(e) => {
                    let what = format!("report store {}: {e}", self.settings.spec);
                    self.failed(&what);
                    return false;
                }
            }
        }
        let Some(s) = self.store.as_mut() else {
            return false;
        };
        let now = crate::report::now();
        match super::keep(s, items, origin, &self.settings.domains, now) {
            Ok(fates) => {
                for (label, fate) in fates {
                    self.metrics
                        .inc(Counter::Intake, &[("outcome", fate.label())]);
                    match &fate {
                        super::Fate::Refused(why) => {
                            tracing::warn!("intake: {origin}: refused: {why}")
                        }
                        super::Fate::OtherDomain(d) => {
                            tracing::info!(
                                "intake: {origin}: {label}: about {d}, not ours: dropped"
                            )
                        }
                        f => tracing::info!("intake: {origin}: {label}: {}", f.label()),
                    }
                }
            }
            Err(e) => {
                self.store = None;
                self.failed(&format!("{origin}: the store failed: {e}"));
                return false;
            }
        }
        if std::mem::replace(&mut self.store_down, false) {
            tracing::info!("intake: the report store is back");
        }
        if now - self.last_purge > PURGE_EVERY {
            self.last_purge = now;
            if let Err(e) = s.intake_purge(now - self.settings.retention) {
                tracing::warn!("intake: purging old reports: {e}");
            }
        }
        true
    }

    fn failed(&mut self, what: &str) {
        self.last_error = what.to_string();
        if !std::mem::replace(&mut self.store_down, true) {
            tracing::warn!(
                "intake: {what}; reports wait in {} until it is back",
                self.settings.spool.display()
            );
        }
    }

    /// A message read from memory (the spool could not take it before) that met the store
    /// down: into the spool after all, else lost (its mail went to the report addresses).
    fn spool(&mut self, origin: &str, data: &[u8]) {
        match spool_write(&self.settings.spool, origin, data) {
            Ok(path) => {
                self.metrics.inc(Counter::Intake, &[("outcome", "spooled")]);
                tracing::info!(
                    "intake: {origin}: the store is down; spooled as {}",
                    path.display()
                );
            }
            Err(e) => {
                self.metrics.inc(Counter::Intake, &[("outcome", "lost")]);
                tracing::error!(
                    "intake: {origin}: the store is down and the spool {}: {e}; its reports are \
                     not read (the mail went to the report addresses)",
                    self.settings.spool.display()
                );
            }
        }
    }

    /// The store failed on a spooled message: is it the message? Yes when the store opens
    /// again at once and has failed on it [`MAX_ATTEMPTS`] times.
    fn refuses(&mut self, file: &Path) -> bool {
        let Ok(store) = Store::open(&self.settings.spec) else {
            return false;
        };
        self.store = Some(store);
        let n = self.attempts.entry(file.to_path_buf()).or_default();
        *n += 1;
        if *n < MAX_ATTEMPTS {
            return false;
        }
        self.attempts.remove(file);
        true
    }

    /// Read what the spool holds, oldest first, while the store takes it.
    fn retry_spool(&mut self) {
        recover_abandoned(&self.settings.spool, ABANDONED_AFTER);
        let Ok(files) = spool_files(&self.settings.spool) else {
            return;
        };
        for file in files {
            if !self.read_spooled(&file) {
                return;
            }
        }
    }

    /// Read one spooled message and delete it once kept. False when the store failed (the
    /// file stays for the next try).
    fn read_spooled(&mut self, file: &Path) -> bool {
        // Claimed by renaming: a reader started by a reload may be at it too.
        let claimed = file.with_extension("reading");
        if std::fs::rename(file, &claimed).is_err() {
            return true;
        }
        let origin = format!("spool {}", file.display());
        let data = match std::fs::read(&claimed) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("intake: {origin}: {e}");
                let _ = std::fs::rename(&claimed, file);
                return true;
            }
        };
        if !self.read(&origin, &data) {
            if self.refuses(file) {
                // The store is up and fails on this message every time: put aside, so that
                // it does not hold back the rest of the spool.
                let aside = file.with_extension("failed");
                let _ = std::fs::rename(&claimed, &aside);
                self.metrics.inc(Counter::Intake, &[("outcome", "lost")]);
                tracing::error!(
                    "intake: {origin}: the store fails on it ({}); put aside as {} \
                     (`mailseal reports import` it once the cause is fixed)",
                    self.last_error,
                    aside.display()
                );
                return true;
            }
            let _ = std::fs::rename(&claimed, file);
            return false;
        }
        self.attempts.remove(file);
        if let Err(e) = std::fs::remove_file(&claimed) {
            tracing::warn!("intake: {origin}: read, but cannot be removed: {e}");
        }
        true
    }
}

/// How often the store may fail on one spooled message while it is up before the message
/// is put aside.
const MAX_ATTEMPTS: u32 = 3;

/// How long a claimed spool file may be at a reader before it counts as abandoned.
const ABANDONED_AFTER: i64 = 600;

/// Files a reader left behind when the daemon stopped or crashed, untouched for more than
/// `after` seconds: a message it had claimed (`.reading`) goes back to the spool; a message
/// being written (`.tmp`) was never acknowledged, so the MTA retries it: deleted.
fn recover_abandoned(dir: &Path, after: i64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = crate::report::now();
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        // A rename sets the change time: for a .reading file, when it was claimed.
        let old = std::fs::metadata(&path).is_ok_and(|m| now - m.ctime() >= after);
        match path.extension().and_then(|e| e.to_str()) {
            Some("reading") if old => {
                let _ = std::fs::rename(&path, path.with_extension("eml"));
            }
            Some("tmp") if old => {
                let _ = std::fs::remove_file(&path);
            }
            _ => {}
        }
    }
}

/// The spooled messages, oldest first (names begin with the time they were written).
fn spool_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    Ok(files)
}

/// The spool directory, made (0750) when missing.
fn spool_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
}

/// Write a message to the spool (0640, written whole then renamed into place).
fn spool_write(dir: &Path, origin: &str, data: &[u8]) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    spool_dir(dir)?;
    let held: u64 = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    if held + data.len() as u64 > MAX_SPOOL_BYTES {
        return Err(std::io::Error::other(format!(
            "holds {held} bytes already (at most {MAX_SPOOL_BYTES})"
        )));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let name: String = origin
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let path = dir.join(format!("{:020}-{name}.eml", now.as_nanos()));
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}
