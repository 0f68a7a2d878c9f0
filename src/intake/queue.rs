//! Reports arriving by mail, read off the milter path: the milter hands an accepted
//! message for `[intake] addresses` to a bounded queue and answers at once; one reader
//! thread parses and stores. A full queue (or more than [`MAX_QUEUED_BYTES`] waiting) drops
//! the message's reports, never the mail; a store that fails loses that message's reports.
//! Both are counted (`mailseal_intake_reports_total{outcome}`) and logged.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;

use super::Limits;
use crate::config::StoreSpec;
use crate::metrics::{Counter, Metrics};
use crate::report::store::Store;

/// Most message bytes waiting to be read, over all queued messages.
pub const MAX_QUEUED_BYTES: usize = 256 * 1024 * 1024;
/// How often imported reports past the retention are deleted.
const PURGE_EVERY: i64 = 3600;

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
        let settings = Arc::new(settings);
        let (s, q, m) = (settings.clone(), queued.clone(), metrics.clone());
        if let Err(e) = std::thread::Builder::new()
            .name("mailseal-intake".into())
            .spawn(move || reader(&s, rx, &q, &m))
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

    /// Queue an accepted message. Never blocks.
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
            "intake: queue full; the reports in {origin} are not read (the mail is not affected)"
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

fn reader(settings: &Settings, rx: Receiver<Job>, queued: &AtomicUsize, metrics: &Metrics) {
    let limits: Limits = settings.limits.into();
    let mut store: Option<Store> = None;
    let mut last_purge = 0;
    for job in rx {
        let (origin, items) = match job {
            Job::Flush(done) => {
                let _ = done.send(());
                continue;
            }
            Job::Read { origin, data } => {
                queued.fetch_sub(data.len(), Ordering::SeqCst);
                // A parser bug must not stop the reader: the message is refused instead.
                let items = std::panic::catch_unwind(|| super::read_input(&data, &limits))
                    .unwrap_or_else(|_| vec![super::refused("the reader failed on it", &data)]);
                (origin, items)
            }
            Job::NotRead {
                origin,
                reason,
                size,
            } => {
                let items = vec![super::Item::Refused {
                    reason,
                    size,
                    sample: Vec::new(),
                }];
                (origin, items)
            }
        };
        if store.is_none() {
            match Store::open(&settings.spec) {
                Ok(s) => store = Some(s),
                Err(e) => {
                    metrics.add(Counter::Intake, &[("outcome", "lost")], items.len() as u64);
                    tracing::warn!(
                        "intake: report store {}: {e}; the reports in {origin} are lost",
                        settings.spec
                    );
                    continue;
                }
            }
        }
        let Some(s) = store.as_mut() else { continue };
        let now = crate::report::now();
        match super::keep(s, items, &origin, &settings.domains, now) {
            Ok(fates) => {
                for (label, fate) in fates {
                    metrics.inc(Counter::Intake, &[("outcome", fate.label())]);
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
                metrics.inc(Counter::Intake, &[("outcome", "lost")]);
                tracing::warn!("intake: {origin}: the store failed: {e}; its reports are lost");
                store = None;
                continue;
            }
        }
        if now - last_purge > PURGE_EVERY {
            last_purge = now;
            if let Err(e) = s.intake_purge(now - settings.retention) {
                tracing::warn!("intake: purging old reports: {e}");
            }
        }
    }
}
