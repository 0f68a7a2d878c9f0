//! Reports arriving by mail, read off the milter path: the milter hands an accepted
//! message for `[intake] addresses` to a bounded queue and answers at once; one reader
//! thread parses and stores. A full queue (or more than [`MAX_QUEUED_BYTES`] waiting) leaves
//! the message unread, never the mail. A message that meets the store down is written to
//! the spool (`[intake] spool`) and stored once the store is back (tried every minute, and
//! at every flush); while the store is known down the milter leaves report addresses in
//! place, so that with `keep_messages = false` nothing is removed that was not stored.
//! Every outcome is counted (`mailseal_intake_reports_total{outcome}`) and logged.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use super::Limits;
use crate::config::StoreSpec;
use crate::metrics::{Counter, Metrics};
use crate::report::store::Store;

/// Most message bytes waiting to be read, over all queued messages.
pub const MAX_QUEUED_BYTES: usize = 256 * 1024 * 1024;
/// Most bytes the spool holds; a message that would take it past this is lost (counted).
pub const MAX_SPOOL_BYTES: u64 = 256 * 1024 * 1024;
/// How often imported reports past the retention are deleted.
const PURGE_EVERY: i64 = 3600;
/// How often the spool is tried while it holds messages.
const RETRY_EVERY: Duration = Duration::from_secs(60);

enum Job {
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
    /// Where messages that met the store down wait for it.
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
    /// The reader's last try at the store failed.
    store_down: Arc<AtomicBool>,
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
        let store_down = Arc::new(AtomicBool::new(false));
        let settings = Arc::new(settings);
        let reader = Reader {
            settings: settings.clone(),
            store: None,
            last_purge: 0,
            store_down: store_down.clone(),
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
            store_down,
            metrics,
            settings,
        }
    }

    /// Queue an accepted message. Never blocks. False when it was not queued (full).
    pub fn submit(&self, origin: String, data: Vec<u8>) -> bool {
        let size = data.len();
        if self.queued.fetch_add(size, Ordering::SeqCst) + size > MAX_QUEUED_BYTES {
            self.queued.fetch_sub(size, Ordering::SeqCst);
            self.dropped(&origin);
            return false;
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
            return false;
        }
        true
    }

    /// Whether the reader's last try at the store failed (what it reads now is spooled).
    pub fn store_down(&self) -> bool {
        self.store_down.load(Ordering::SeqCst)
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
    store_down: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl Reader {
    fn run(mut self, rx: Receiver<Job>, queued: &AtomicUsize) {
        // What an earlier run left in the spool.
        self.retry_spool();
        loop {
            match rx.recv_timeout(RETRY_EVERY) {
                Ok(Job::Flush(done)) => {
                    self.retry_spool();
                    let _ = done.send(());
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
                    self.failed(format_args!("report store {}: {e}", self.settings.spec));
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
                self.failed(format_args!("{origin}: the store failed: {e}"));
                return false;
            }
        }
        if self.store_down.swap(false, Ordering::SeqCst) {
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

    fn failed(&self, what: std::fmt::Arguments) {
        if !self.store_down.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                "intake: {what}; reports wait in {} and report addresses stay recipients until it is back",
                self.settings.spool.display()
            );
        }
    }

    /// Keep a message that met the store down in the spool; lost (counted, logged) only
    /// when the spool cannot take it.
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
                tracing::error!("intake: {origin}: the store is down and the spool {}: {e}; its reports are lost", self.settings.spool.display());
            }
        }
    }

    /// Read what the spool holds, oldest first, while the store takes it.
    fn retry_spool(&mut self) {
        let Ok(files) = spool_files(&self.settings.spool) else {
            return;
        };
        for file in files {
            // Claimed by renaming: a reader started by a reload may be at it too.
            let claimed = file.with_extension("reading");
            if std::fs::rename(&file, &claimed).is_err() {
                continue;
            }
            let origin = format!("spool {}", file.display());
            let data = match std::fs::read(&claimed) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!("intake: {origin}: {e}");
                    let _ = std::fs::rename(&claimed, &file);
                    continue;
                }
            };
            if !self.read(&origin, &data) {
                let _ = std::fs::rename(&claimed, &file);
                return;
            }
            if let Err(e) = std::fs::remove_file(&claimed) {
                tracing::warn!("intake: {origin}: read, but cannot be removed: {e}");
            }
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

/// Write a message to the spool (0640, written whole then renamed into place).
fn spool_write(dir: &Path, origin: &str, data: &[u8]) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)?;
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
