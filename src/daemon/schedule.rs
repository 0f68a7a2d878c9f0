//! What the daemon does on its own schedule: the daily DMARC report run, and key rotation.

use std::sync::Arc;

use tokio::sync::watch;

use crate::pipeline::context::Context;

/// `[reports] schedule = "daily"`: shortly after midnight UTC, send the reports for the day
/// that ended. Each host waits a different few minutes (from its name), so hosts sharing a
/// PostgreSQL store do not all start at once; the store's lock keeps them from sending the
/// same report twice anyway.
pub(super) async fn daily_reports(contexts: watch::Receiver<Arc<Context>>) {
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

/// Key rotation in the daemon (`[keys] check_every`): start the rotations `rotate_every`
/// makes due, move keys on (a published key becomes active, a replaced one retires…), and
/// whenever the state changed (here or by `mailseal keys`), reload, so that the new active
/// key signs without a restart. The reload is the SIGHUP path: a broken state keeps the
/// running configuration, said in the log.
pub(super) async fn key_rotation(contexts: watch::Receiver<Arc<Context>>) {
    let modified = |dir: &std::path::Path| {
        std::fs::metadata(dir.join(crate::rotation::STATE_FILE))
            .and_then(|m| m.modified())
            .ok()
    };
    let mut seen = modified(&contexts.borrow().config.keys.dir);
    let publish = |ctx: &Context| {
        let state = crate::rotation::Rotation::load(&ctx.config.keys.dir).unwrap_or_default();
        let now = crate::report::now();
        let holders = crate::rotation::shared::Holders::default();
        let keys = crate::rotation::status(&ctx.config, &state, &holders, now)
            .into_iter()
            .map(|r| crate::metrics::KeyState {
                domain: r.domain,
                selector: r.selector,
                algorithm: r.algorithm,
                state: r.state,
                age_days: r.age_days,
            })
            .collect();
        ctx.services.metrics.set_key_states(keys);
    };
    publish(&contexts.borrow().clone());
    loop {
        let every = contexts.borrow().config.keys.check_every;
        tokio::time::sleep(every.max(std::time::Duration::from_secs(1))).await;
        let ctx = contexts.borrow().clone();
        publish(&ctx);
        let config = &ctx.config;
        if !config.mode.signs() || config.tables.keys.is_empty() {
            continue;
        }
        // On a blocking thread: the round waits for the state's lock (and, shared, for the
        // database), which must not hold up the milter's tasks.
        let handle = tokio::runtime::Handle::current();
        let round = ctx.clone();
        let result = tokio::task::spawn_blocking(move || {
            handle.block_on(async {
                let auth =
                    crate::dns::authenticator(&round.config.dns).map_err(|e| e.to_string())?;
                crate::tools::keys::scheduled(&round.config, &auth).await
            })
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match result {
            Ok(changes) => {
                for c in changes {
                    tracing::info!("keys: {c}");
                }
            }
            Err(e) => tracing::warn!("keys: {e}"),
        }
        let now = modified(&config.keys.dir);
        if now != seen {
            seen = now;
            tracing::info!("keys: rotation state changed; reloading");
            // SAFETY: kill with our own pid only sends a signal.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGHUP);
            }
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
