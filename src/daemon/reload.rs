//! SIGHUP: a new configuration context, or the running one kept.
//!
//! Every setting reloads except those read once at start ([`crate::config::RESTART_ONLY`]),
//! which are named in the log when they change (the running value stays until a restart).

use std::path::Path;

use super::DaemonError;
use crate::config::Config;
use crate::pipeline::context::Context;

/// The settings a reload cannot apply, with their old and new values where they differ.
pub(super) fn restart_only(old: &Config, new: &Config) -> Vec<(&'static str, String, String)> {
    let mut changed = Vec::new();
    let mut check = |name: &'static str, a: String, b: String| {
        debug_assert!(crate::config::RESTART_ONLY.contains(&name), "{name}");
        if a != b {
            changed.push((name, a, b));
        }
    };
    check("socket", old.socket.to_string(), new.socket.to_string());
    check(
        "socket_mode",
        format!("{:04o}", old.socket_mode),
        format!("{:04o}", new.socket_mode),
    );
    check("threads", old.threads.to_string(), new.threads.to_string());
    check(
        "max_connections",
        old.max_connections.to_string(),
        new.max_connections.to_string(),
    );
    check(
        "connection_timeout",
        format!("{:?}", old.connection_timeout),
        format!("{:?}", new.connection_timeout),
    );
    check(
        "shutdown_timeout",
        format!("{:?}", old.shutdown_timeout),
        format!("{:?}", new.shutdown_timeout),
    );
    check(
        "metrics.listen",
        format!("{:?}", old.metrics.listen),
        format!("{:?}", new.metrics.listen),
    );
    changed
}

/// Load a configuration for a reload: errors keep the running one.
pub(super) fn reload(path: &Path, running: &Context) -> Result<Context, DaemonError> {
    let config = Config::load(path)?;
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    for (name, old, new) in restart_only(&running.config, &config) {
        tracing::warn!(
            "{name} changed from {old} to {new}: it is read at start only, restart mailseal to apply it; {old} stays in use"
        );
    }
    if config.log_level != running.config.log_level
        && super::logging::set_log_level(&config.log_level)
    {
        tracing::info!("log_level is now {}", config.log_level);
    }
    Ok(Context::new(config, running.services.clone())?.recording(Some(running)))
}
