//! What every message is handled with: a configuration snapshot ([`Context`]: the config, the
//! resolver built from it, where reports go) and the services that outlive reloads
//! ([`Services`]: metrics, the buffer budget, the failure-report rate limits).
//!
//! The daemon builds one [`Services`] at start and a new [`Context`] at every reload; each
//! milter connection takes the current context when it starts and keeps it to the end, so a
//! reload never changes the rules in the middle of a message.

use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::dns::{Cache, Resolver};
use crate::message::budget::Budget;
use crate::metrics::Metrics;
use crate::report::failure::{FailureSender, RateLimits};
use crate::report::Recorder;

/// Daemon-lifetime services: built once, shared by every configuration snapshot. A reload
/// must neither reset the counters, nor double the memory bound, nor forget how many failure
/// reports each domain was sent this hour.
#[derive(Debug)]
pub struct Services {
    pub metrics: Arc<Metrics>,
    pub budget: Arc<Budget>,
    pub failure_limits: Arc<Mutex<RateLimits>>,
    /// DNS answers (emptied at each reload, its bound from `[dns] cache_bytes`).
    pub dns_cache: Arc<Cache>,
}

impl Default for Services {
    fn default() -> Services {
        let metrics = Arc::<Metrics>::default();
        Services {
            dns_cache: Arc::new(Cache::new(
                crate::config::Dns::default().cache_bytes,
                metrics.clone(),
            )),
            metrics,
            budget: Arc::default(),
            failure_limits: Arc::default(),
        }
    }
}

/// One configuration snapshot with the resources built from it.
pub struct Context {
    pub config: Config,
    /// The resolver built from `[dns]`, in front of the daemon's answer cache.
    pub resolver: Resolver,
    pub services: Arc<Services>,
    /// Where DMARC evaluations go for aggregate reports (the daemon only; the command line
    /// tools record nothing).
    pub reports: Option<Recorder>,
    /// Where DMARC failure reports go (`[reports] failure_reports`; the daemon only).
    pub failures: Option<FailureSender>,
    /// Where mail to `[intake] addresses` goes to be read (the daemon only).
    pub intake: Option<crate::intake::queue::IntakeQueue>,
}

impl Context {
    /// A context that records nothing (the command line tools, and the start of
    /// [`Context::recording`]). Must run inside the tokio runtime.
    pub fn new(config: Config, services: Arc<Services>) -> Result<Context, crate::dns::DnsError> {
        let auth = crate::dns::authenticator(&config.dns)?;
        services.dns_cache.reset(config.dns.cache_bytes);
        Ok(Context {
            resolver: Resolver::new(auth, services.dns_cache.clone()),
            config,
            services,
            reports: None,
            failures: None,
            intake: None,
        })
    }

    /// Record DMARC evaluations into `[reports] store`, reusing `running`'s writer when it
    /// writes to the same store (a reload keeps it), and send failure reports if configured.
    /// Must run inside the tokio runtime.
    pub fn recording(mut self, running: Option<&Context>) -> Context {
        let metrics = &self.services.metrics;
        let rc = &self.config.reports;
        if rc.failure_reports {
            match FailureSender::start(
                rc,
                &self.config.dns,
                &self.config.host_name,
                metrics.clone(),
                self.services.failure_limits.clone(),
            ) {
                Ok(s) => self.failures = Some(s),
                Err(e) => tracing::error!("failure reports are off: {e}"),
            }
        }
        self.reports = rc
            .store()
            .map(|spec| match running.and_then(|r| r.reports.as_ref()) {
                Some(r) if *r.spec() == spec => r.clone(),
                _ => Recorder::start(
                    spec,
                    self.config.host_name.clone(),
                    rc.queue,
                    metrics.clone(),
                ),
            });
        self.intake =
            self.intake_settings()
                .map(|settings| match running.and_then(|r| r.intake.as_ref()) {
                    Some(q) if *q.settings == settings => q.clone(),
                    _ => crate::intake::queue::IntakeQueue::start(settings, metrics.clone()),
                });
        self
    }

    /// What the intake reader needs, when `[intake] addresses` are set (validation made sure
    /// the store is; domains that cannot be known are logged and the mail is not read).
    fn intake_settings(&self) -> Option<crate::intake::queue::Settings> {
        let i = &self.config.intake;
        if i.addresses.is_empty() {
            return None;
        }
        let spec = self.config.reports.store()?;
        let domains = match crate::intake::our_domains(&self.config) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("intake: {e}; mail to [intake] addresses is not read");
                return None;
            }
        };
        Some(crate::intake::queue::Settings {
            spec,
            limits: crate::intake::queue::LimitsKey(
                i.max_message_size,
                i.max_report_size,
                i.max_ratio,
            ),
            domains,
            retention: i.retention.as_secs() as i64,
            queue: i.queue,
            spool: i.spool.clone(),
        })
    }

    /// The tools' context: fresh services, nothing recorded.
    pub fn for_tools(config: Config) -> Result<Context, crate::dns::DnsError> {
        Context::new(config, Arc::default())
    }
}
