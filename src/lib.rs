//! mailseal: one milter for DKIM signing and SPF/DKIM/DMARC/ARC verification.
//!
//! The daemon's entry point for tests and `main` is [`run`]: it serves the milter protocol on
//! a bound listener with the configuration snapshots it is handed, until `shutdown`
//! completes.
//!
//! # Logging policy
//! - `info`: one line per message (queue id, decision, what was signed or the verification
//!   summary, the SMTP answer), plus start, reload and stop.
//! - `warn`: a message answered with something other than accept because of a fault on our
//!   side or the client's (key error, DNS failure, oversize, protocol misuse); reload failures.
//! - `error`: the daemon cannot do its job (cannot bind, resolver cannot be built).
//! - `debug`/`trace`: per-callback detail, never on by default.
//!
//! Never logged at any level: private key bytes, message bodies. Header values appear only at
//! `trace`.

pub mod budget;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dns;
pub mod headers;
pub mod message;
pub mod metrics;
pub mod milter;
pub mod pipeline;
pub mod report;
pub mod results;
pub mod tools;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;

/// A configuration together with the resources built from it (the DNS resolver). Each milter
/// connection takes the current snapshot when it starts and keeps it to the end, so a reload
/// never changes the rules in the middle of a message.
pub struct Snapshot {
    pub config: Config,
    pub auth: mail_auth::MessageAuthenticator,
    /// Where DMARC evaluations go for aggregate reports (the daemon only; the command line
    /// tools record nothing).
    pub reports: Option<report::Recorder>,
    /// Where DMARC failure reports go (`[reports] failure_reports`; the daemon only).
    pub failures: Option<report::failure::FailureSender>,
}

impl Snapshot {
    /// Build the snapshot's resources. Must run inside the tokio runtime.
    pub fn new(config: Config) -> Result<Snapshot, String> {
        let auth = dns::authenticator(&config.dns)?;
        Ok(Snapshot {
            config,
            auth,
            reports: None,
            failures: None,
        })
    }

    /// Record DMARC evaluations into `[reports] store`, reusing `running` when it writes to
    /// the same store (a reload keeps the writer), and send failure reports if configured.
    /// Must run inside the tokio runtime.
    pub fn recording(mut self, running: Option<&report::Recorder>) -> Snapshot {
        if self.config.reports.failure_reports {
            match report::failure::FailureSender::start(
                &self.config.reports,
                &self.config.dns,
                &self.config.host_name,
            ) {
                Ok(s) => self.failures = Some(s),
                Err(e) => tracing::error!("failure reports are off: {e}"),
            }
        }
        self.reports = self.config.reports.store().map(|spec| match running {
            Some(r) if *r.spec() == spec => r.clone(),
            _ => report::Recorder::start(
                spec,
                self.config.host_name.clone(),
                self.config.reports.queue,
            ),
        });
        self
    }
}

/// Serve the milter protocol on `listener` until `shutdown` completes. `snapshots` carries
/// the configuration; sending a new value applies it to connections opened afterwards.
pub async fn run(
    listener: impl indymilter::Listener,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    shutdown: impl Future,
) -> std::io::Result<()> {
    let current = snapshots.borrow().clone();
    let config = indymilter::Config {
        max_connections: current.config.max_connections,
        connection_timeout: current.config.connection_timeout,
        ..Default::default()
    };
    let grace = current.config.shutdown_timeout;
    let callbacks = milter::callbacks(snapshots);
    // Shutdown in two steps: stop accepting at once, then let the messages in flight finish
    // (bounded by `shutdown_timeout`) before the sessions are told to stop.
    let (stop_accepting, accepting_stopped) = tokio::sync::oneshot::channel::<()>();
    let listener = daemon::socket::Resilient::new(listener).stop_when(async move {
        let _ = accepting_stopped.await;
    });
    let drained = async move {
        shutdown.await;
        let _ = stop_accepting.send(());
        let start = tokio::time::Instant::now();
        while budget::messages_in_flight() > 0 && start.elapsed() < grace {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        match budget::messages_in_flight() {
            0 => tracing::info!("no message in flight; stopping"),
            n => tracing::warn!(
                "{n} message(s) still in flight after {grace:?}; their connections close and the MTA retries them"
            ),
        }
    };
    indymilter::run(listener, callbacks, config, drained).await
}
