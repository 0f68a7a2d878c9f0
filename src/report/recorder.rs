//! Off the milter path: evaluations go into a bounded queue; one writer thread stores them in
//! batches (up to [`BATCH`] records or [`LINGER`], whichever comes first).
//!
//! The milter never waits: a full queue drops the evaluation. A store that cannot be opened
//! or written loses that batch. Both are counted in `mailseal_report_records_total{outcome}`
//! and logged (at most once a minute), and the writer tries again with the next batch.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::store::Store;
use super::Evaluation;
use crate::config::StoreSpec;
use crate::metrics::Counter;
use crate::metrics::Metrics;

const BATCH: usize = 256;
const LINGER: Duration = Duration::from_millis(500);
const LOG_EVERY: Duration = Duration::from_secs(60);
/// How often the signature counts are stored when nothing else wakes the writer.
const SIGNED_EVERY: Duration = Duration::from_secs(60);

type SignedCounts = std::collections::HashMap<(i64, crate::pipeline::Signed), i64>;

enum Msg {
    Record(Box<Evaluation>),
    Flush(SyncSender<()>),
}

/// A handle to the writer. Cloning is cheap; the writer stops once every handle is gone and
/// the queue is drained.
#[derive(Clone)]
pub struct Recorder {
    tx: SyncSender<Msg>,
    /// Signatures made, per (UTC day, domain, selector, algorithm), not yet stored.
    signed: Arc<Mutex<SignedCounts>>,
    spec: Arc<StoreSpec>,
    last_warning: Arc<Mutex<Option<Instant>>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recorder({})", self.spec)
    }
}

impl Recorder {
    /// Start the writer thread. The store is opened by the writer, so a broken store never
    /// delays the start of the daemon; its errors are logged from there.
    pub fn start(
        spec: StoreSpec,
        reporter: String,
        queue: usize,
        metrics: Arc<Metrics>,
    ) -> Recorder {
        let (tx, rx) = mpsc::sync_channel(queue);
        let spec = Arc::new(spec);
        let signed = Arc::<Mutex<SignedCounts>>::default();
        let writer_spec = spec.clone();
        let writer_metrics = metrics.clone();
        let writer_signed = signed.clone();
        let spawned = std::thread::Builder::new()
            .name("mailseal-reports".into())
            .spawn(move || writer(&writer_spec, &reporter, rx, &writer_metrics, &writer_signed));
        if let Err(e) = spawned {
            tracing::error!("cannot start the report writer: {e}; DMARC report data is not kept");
        }
        Recorder {
            tx,
            signed,
            spec,
            last_warning: Arc::default(),
            metrics,
        }
    }

    pub fn spec(&self) -> &StoreSpec {
        &self.spec
    }

    /// Queue one evaluation. Never blocks.
    pub fn record(&self, e: Evaluation) {
        match self.tx.try_send(Msg::Record(Box::new(e))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                count(&self.metrics, "dropped", 1);
                self.warn_rate_limited("report queue full or writer stopped: DMARC report data dropped (mail is not affected)");
            }
        }
    }

    /// Count one signature we made (stored per day by the writer). Never blocks for long:
    /// one counter under a lock.
    pub fn signed(&self, s: crate::pipeline::Signed) {
        let day = crate::report::day_start(crate::report::now());
        let mut counts = self.signed.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry((day, s)).or_default() += 1;
    }

    /// Wait (up to `timeout`) until everything queued so far is stored or given up. Blocks:
    /// call it from a blocking context.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        let deadline = Instant::now() + timeout;
        let mut msg = Msg::Flush(ack_tx);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => return false,
            }
        }
        ack_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }

    fn warn_rate_limited(&self, what: &str) {
        let mut last = self.last_warning.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!("{what}");
        }
    }
}

fn count(metrics: &Metrics, outcome: &str, n: usize) {
    metrics.add(Counter::ReportRecords, &[("outcome", outcome)], n as u64);
}

fn writer(
    spec: &StoreSpec,
    reporter: &str,
    rx: Receiver<Msg>,
    metrics: &Metrics,
    signed: &Mutex<SignedCounts>,
) {
    let mut store: Option<Store> = None;
    let mut last_error: Option<Instant> = None;
    let mut batch: Vec<Evaluation> = Vec::with_capacity(BATCH);
    let mut acks: Vec<SyncSender<()>> = Vec::new();
    loop {
        // Wait for the first message (or the signature counts' turn), then gather more for a
        // short while.
        let first = match rx.recv_timeout(SIGNED_EVERY) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                store_signed(spec, &mut store, signed);
                return;
            }
        };
        let mut closed = false;
        let deadline = Instant::now() + LINGER;
        let mut next = first;
        loop {
            match next.take() {
                Some(Msg::Record(e)) => batch.push(*e),
                Some(Msg::Flush(ack)) => {
                    acks.push(ack);
                    break;
                }
                None => {}
            }
            if batch.len() >= BATCH || (acks.is_empty() && batch.is_empty()) {
                break;
            }
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(m) => next = Some(m),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if !batch.is_empty() {
            let result = match store.as_mut() {
                Some(s) => s.insert(&batch, reporter),
                None => Store::open(spec).and_then(|mut s| {
                    let r = s.insert(&batch, reporter);
                    store = Some(s);
                    r
                }),
            };
            match result {
                Ok(()) => {
                    count(metrics, "stored", batch.len());
                    if last_error.take().is_some() {
                        tracing::info!("report store {spec} is writable again");
                    }
                }
                Err(e) => {
                    count(metrics, "lost", batch.len());
                    // Reconnect next time (a PostgreSQL connection may have died).
                    store = None;
                    if last_error.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                        tracing::warn!(
                            "report store {spec}: {e}; {} DMARC report record(s) lost (mail is not affected)",
                            batch.len()
                        );
                        last_error = Some(Instant::now());
                    }
                }
            }
            batch.clear();
        }
        store_signed(spec, &mut store, signed);
        for ack in acks.drain(..) {
            let _ = ack.try_send(());
        }
        if closed {
            return;
        }
    }
}

/// Store the signature counts gathered so far; on failure they are kept for the next turn.
fn store_signed(spec: &StoreSpec, store: &mut Option<Store>, signed: &Mutex<SignedCounts>) {
    let taken = std::mem::take(&mut *signed.lock().unwrap_or_else(|e| e.into_inner()));
    if taken.is_empty() {
        return;
    }
    let rows: Vec<super::store::SignedCount> = taken
        .iter()
        .map(|((day, s), n)| super::store::SignedCount {
            day: *day,
            domain: s.domain.clone(),
            selector: s.selector.clone(),
            algorithm: s.algorithm.to_string(),
            count: *n,
        })
        .collect();
    let result = match store.as_mut() {
        Some(s) => s.add_signed(&rows),
        None => Store::open(spec).and_then(|mut s| {
            let r = s.add_signed(&rows);
            *store = Some(s);
            r
        }),
    };
    if let Err(e) = result {
        tracing::warn!("report store {spec}: {e}; signature counts kept for the next try");
        *store = None;
        let mut counts = signed.lock().unwrap_or_else(|e| e.into_inner());
        for (k, n) in taken {
            *counts.entry(k).or_default() += n;
        }
    }
}
