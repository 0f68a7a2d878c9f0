//! The daemon: binding, logging, signals and reload around the milter server
//! ([`server::run`]).

pub mod server;
pub mod socket;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::config::Config;
use crate::pipeline::context::{Context, Services};

/// Set up logging to stderr (journald picks it up under systemd). `RUST_LOG` overrides the
/// configured level.
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colour only on a terminal: under systemd stderr goes to the journal, which would keep
    // the escape codes.
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

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
    #[error("cannot handle signals: {0}")]
    Signals(std::io::Error),
    #[error("the milter server stopped: {0}")]
    Server(std::io::Error),
}

/// Load a configuration for a reload: errors keep the running one.
fn reload(path: &Path, running: &Context) -> Result<Context, DaemonError> {
    let config = Config::load(path)?;
    if config.socket != running.config.socket {
        tracing::warn!(
            "socket changed from {} to {}: restart mailseal to apply it; the old socket stays in use",
            running.config.socket,
            config.socket
        );
    }
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if config.threads != running.config.threads {
        tracing::warn!("threads changed: restart mailseal to apply it");
    }
    if config.metrics.listen != running.config.metrics.listen {
        tracing::warn!("[metrics] listen changed: restart mailseal to apply it");
    }
    Ok(Context::new(config, running.services.clone())?.recording(Some(running)))
}

/// `mailseal run`: bind, serve, reload on SIGHUP, stop on SIGTERM/SIGINT.
pub async fn serve(path: PathBuf, config: Config) -> Result<(), DaemonError> {
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
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
    notify_systemd("READY=1");
    let unix_path = match &cfg.socket {
        crate::config::SocketSpec::Unix(p) => Some(p.clone()),
        _ => None,
    };

    let (tx, rx) = watch::channel(context);
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;

    let reloader = async {
        loop {
            hup.recv().await;
            notify_systemd("RELOADING=1");
            let running = tx.borrow().clone();
            match reload(&path, &running) {
                Ok(new) => {
                    tracing::info!(
                        keys = new.config.tables.keys.len(),
                        "configuration reloaded from {}",
                        path.display()
                    );
                    tx.send_replace(Arc::new(new));
                }
                Err(e) => tracing::error!("reload failed, keeping the running configuration:\n{e}"),
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
    tokio::spawn(daily_reports(rx.clone()));
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
    if let Some(p) = unix_path {
        let _ = std::fs::remove_file(p);
    }
    result
}

/// `[reports] schedule = "daily"`: shortly after midnight UTC, send the reports for the day
/// that ended. Each host waits a different few minutes (from its name), so hosts sharing a
/// PostgreSQL store do not all start at once; the store's lock keeps them from sending the
/// same report twice anyway.
async fn daily_reports(contexts: watch::Receiver<Arc<Context>>) {
    let name = contexts.borrow().config.host_name.clone();
    loop {
        let now = crate::report::now();
        let next = next_daily_run(now, &name);
        tokio::time::sleep(std::time::Duration::from_secs((next - now).max(1) as u64)).await;
        let ctx = contexts.borrow().clone();
        if !ctx.config.reports.daily() || ctx.config.reports.store.is_none() {
            continue;
        }
        let handle = tokio::runtime::Handle::current();
        let result = tokio::task::spawn_blocking(move || {
            let opts = crate::report::send::SendOptions {
                until: crate::report::day_start(crate::report::now()),
                metrics: ctx.services.metrics.clone(),
                ..Default::default()
            };
            crate::report::send::run(&ctx.config, &opts, &handle)
        })
        .await;
        match result {
            Ok(Ok(sent)) => tracing::info!(
                "reports: daily run done, {} report(s) handled, {} delivered",
                sent.len(),
                sent.iter().filter(|s| s.delivered > 0).count()
            ),
            Ok(Err(e)) => tracing::warn!("reports: daily run failed: {e}"),
            Err(e) => tracing::warn!("reports: daily run failed: {e}"),
        }
    }
}

/// When the daily report run after `now` starts: 5 to 20 minutes past midnight UTC, the
/// same minute every day for a given host name.
pub fn next_daily_run(now: i64, host: &str) -> i64 {
    let h = host
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
    let offset = 300 + (h % 900) as i64;
    let today = crate::report::day_start(now) + offset;
    if today > now {
        today
    } else {
        today + 86_400
    }
}

/// Send a state line to systemd when started with Type=notify (no-op otherwise).
pub fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = PathBuf::from(path);
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
    };
    let bytes = path.as_os_str().as_encoded_bytes();
    let result = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = result {
        tracing::debug!("sd_notify failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::next_daily_run;

    #[test]
    fn daily_run_is_after_midnight_and_in_the_future() {
        let midnight = 1_795_392_000; // 2026-11-23T00:00:00Z
        for (now, host) in [
            (midnight + 9 * 3600, "mx1.example.net"),
            (midnight, "mx2.example.net"),
            (midnight + 86_399, "a"),
        ] {
            let next = next_daily_run(now, host);
            assert!(next > now && next - now <= 86_400, "{now} {host} {next}");
            let past_midnight = next.rem_euclid(86_400);
            assert!((300..1200).contains(&past_midnight), "{past_midnight}");
            // Stable per host.
            assert_eq!(next_daily_run(now, host), next);
        }
        // Right after midnight, today's run is still ahead.
        assert!(next_daily_run(midnight + 1, "mx1.example.net") < midnight + 1200);
    }
}
