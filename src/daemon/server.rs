//! The milter server: the protocol on a bound listener, connection by connection, until
//! shutdown; then the messages in flight are given `shutdown_timeout` to finish.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

use crate::pipeline::context::Context;

/// Serve the milter protocol on `listener` until `shutdown` completes. `contexts` carries
/// the configuration; sending a new value applies it to connections opened afterwards.
pub async fn run(
    listener: impl indymilter::Listener,
    contexts: watch::Receiver<Arc<Context>>,
    shutdown: impl Future,
) -> std::io::Result<()> {
    let current = contexts.borrow().clone();
    let config = indymilter::Config {
        max_connections: current.config.max_connections,
        connection_timeout: current.config.connection_timeout,
        ..Default::default()
    };
    let grace = current.config.shutdown_timeout;
    let budget = current.services.budget.clone();
    let callbacks = crate::milter::callbacks(contexts);
    // Shutdown in two steps: stop accepting at once, then let the messages in flight finish
    // (bounded by `shutdown_timeout`) before the sessions are told to stop.
    let (stop_accepting, accepting_stopped) = tokio::sync::oneshot::channel::<()>();
    let listener = super::socket::Resilient::new(listener).stop_when(async move {
        let _ = accepting_stopped.await;
    });
    let drained = async move {
        shutdown.await;
        let _ = stop_accepting.send(());
        match budget.drained(grace).await {
            0 => tracing::info!("no message in flight; stopping"),
            n => tracing::warn!(
                "{n} message(s) still in flight after {grace:?}; their connections close and the MTA retries them"
            ),
        }
    };
    indymilter::run(listener, callbacks, config, drained).await
}
