//! The daemon: binding, signals and reload around the milter server ([`server::run`]); logging,
//! the systemd notify protocol and the daily report schedule beside it.

mod logging;
mod notify;
mod reload;
mod schedule;
pub mod server;
pub mod socket;

pub use logging::{init_logging, set_log_level};
pub use notify::notify_systemd;
pub use schedule::next_daily_run;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::config::Config;
use crate::pipeline::context::{Context, Services};

/// Why the daemon could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigErrors),
    #[error(transparent)]
    Dns(#[from] crate::dns::DnsError),
    #[error("cannot listen on {socket}: {source}")]
    Bind {
        socket: String,
        source: std::io::Error,
    },
    #[error("cannot listen for metrics on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("dashboard: {0}")]
    Dashboard(String),
    #[error("cannot handle signals: {0}")]
    Signals(std::io::Error),
    #[error("the milter server stopped: {0}")]
    Server(std::io::Error),
}

/// `mailseal run`: bind, serve, reload on SIGHUP, stop on SIGTERM/SIGINT.
pub async fn serve(path: PathBuf, config: Config) -> Result<(), DaemonError> {
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    // Before anything says we are ready: a SIGHUP right after READY=1 (or the log line)
    // must reload, not kill the process with the default action.
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    // Built once: they outlive every reload.
    let services = Arc::new(Services::default());
    let context = Arc::new(Context::new(config, services.clone())?.recording(None));
    let cfg = &context.config;
    let listener = socket::bind(&cfg.socket, cfg.socket_mode)
        .await
        .map_err(|source| DaemonError::Bind {
            socket: cfg.socket.to_string(),
            source,
        })?;
    tracing::info!(
        socket = %cfg.socket,
        host_name = %cfg.host_name,
        keys = cfg.tables.keys.len(),
        "mailseal {} listening",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(addr) = cfg.metrics.listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Metrics { addr, source })?;
        tracing::info!("metrics on http://{addr}/metrics");
        tokio::spawn(crate::metrics::serve(l, services.metrics.clone()));
    }
    let dashboard = match cfg.dashboard.listen {
        Some(addr) => {
            let tls = match (&cfg.dashboard.tls_cert, &cfg.dashboard.tls_key) {
                (Some(c), Some(k)) => {
                    Some(crate::dashboard::tls_config(c, k).map_err(DaemonError::Dashboard)?)
                }
                _ => None,
            };
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| DaemonError::Dashboard(format!("{addr}: {e}")))?;
            tracing::info!(
                "dashboard on {}://{addr}/",
                if tls.is_some() { "https" } else { "http" }
            );
            Some((l, tls))
        }
        None => None,
    };
    notify_systemd("READY=1");
    // The pings come from a task of the runtime that serves the milter: if it stalls, they
    // stop, and systemd restarts the service.
    if let Some(every) = notify::watchdog_interval() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                notify_systemd("WATCHDOG=1");
            }
        });
    }
    let unix_path = match &cfg.socket {
        crate::config::SocketSpec::Unix(p) => Some(p.clone()),
        _ => None,
    };

    let (tx, rx) = watch::channel(context);

    let reloader = async {
        loop {
            hup.recv().await;
            notify_systemd("RELOADING=1");
            let running = tx.borrow().clone();
            match reload::reload(&path, &running) {
                Ok(new) => {
                    tracing::info!(
                        keys = new.config.tables.keys.len(),
                        "configuration reloaded from {}",
                        path.display()
                    );
                    services.metrics.reloaded(true);
                    tx.send_replace(Arc::new(new));
                }
                Err(e) => {
                    services.metrics.reloaded(false);
                    tracing::error!("reload failed, keeping the running configuration:\n{e}")
                }
            }
            notify_systemd("READY=1");
        }
    };
    let shutdown = async {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::info!("shutting down: finishing messages in progress");
        notify_systemd("STOPPING=1");
    };
    if let Some((l, tls)) = dashboard {
        tokio::spawn(crate::dashboard::serve(l, rx.clone(), tls));
    }
    tokio::spawn(schedule::daily_reports(rx.clone()));
    tokio::spawn(schedule::key_rotation(rx.clone()));
    let result = tokio::select! {
        r = server::run(listener, rx, shutdown) => r.map_err(DaemonError::Server),
        _ = reloader => Ok(()),
    };
    // Store what the report writer still holds.
    let recorder = tx.borrow().reports.clone();
    if let Some(recorder) = recorder {
        let flushed =
            tokio::task::spawn_blocking(move || recorder.flush(std::time::Duration::from_secs(5)))
                .await;
        if !matches!(flushed, Ok(true)) {
            tracing::warn!(
                "report writer did not finish in time; recent DMARC report data may be lost"
            );
        }
    }
    // Read the reports still queued from accepted mail (what is not read stays in the spool).
    let intake = tx.borrow().intake.clone();
    if let Some(q) = intake {
        let read =
            tokio::task::spawn_blocking(move || q.flush(std::time::Duration::from_secs(5))).await;
        if !matches!(read, Ok(true)) {
            tracing::warn!(
                "report intake did not finish in time; the reports left in the spool are read at the next start"
            );
        }
    }
    if let Some(p) = unix_path {
        let _ = std::fs::remove_file(p);
    }
    result
}
