//! SIGHUP: a new configuration context, or the running one kept.

use std::path::Path;

use super::DaemonError;
use crate::config::Config;
use crate::pipeline::context::Context;

/// Load a configuration for a reload: errors keep the running one.
pub(super) fn reload(path: &Path, running: &Context) -> Result<Context, DaemonError> {
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
