//! The one DNS seam: every lookup mailseal makes goes through the resolver built here (the
//! tools' own TXT helpers in `tools::lookup`, the SPF void-lookup counter in
//! `pipeline::verify::spf`).
//!
//! hickory's resolver keeps an answer cache (positive and negative answers, bounded by
//! `[dns] cache_size` entries, negative TTL capped by `max_negative_ttl`). Tests point
//! `nameservers` at a DNS server on loopback; nothing else changes.

use std::time::Duration;

use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
};
use mail_auth::MessageAuthenticator;

use crate::config::Dns;

/// Cap on how long a "no such record" answer is remembered.
const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(300);

/// Why the resolver could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot read /etc/resolv.conf: {0}")]
    SystemConf(String),
    #[error("cannot set up the DNS resolver: {0}")]
    Setup(String),
}

/// Build the resolver for a configuration. Must run inside the tokio runtime.
pub fn authenticator(dns: &Dns) -> Result<MessageAuthenticator, DnsError> {
    let mut opts = ResolverOpts::default();
    opts.timeout = dns.timeout;
    opts.attempts = dns.attempts;
    opts.cache_size = dns.cache_size as u64;
    // A truncated UDP answer is retried over TCP; large TXT records (DKIM keys) need it.
    opts.try_tcp_on_error = true;
    opts.negative_max_ttl = Some(MAX_NEGATIVE_TTL);
    let auth = if dns.nameservers.is_empty() {
        let (config, mut sys_opts) = mail_auth::hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| DnsError::SystemConf(e.to_string()))?;
        sys_opts.timeout = opts.timeout;
        sys_opts.attempts = opts.attempts;
        sys_opts.cache_size = opts.cache_size;
        sys_opts.try_tcp_on_error = true;
        sys_opts.negative_max_ttl = opts.negative_max_ttl;
        MessageAuthenticator::new(config, sys_opts)
    } else {
        let servers = dns
            .nameservers
            .iter()
            .map(|sa| {
                let mut udp = ConnectionConfig::udp();
                udp.port = sa.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = sa.port();
                NameServerConfig::new(sa.ip(), true, vec![udp, tcp])
            })
            .collect();
        MessageAuthenticator::new(ResolverConfig::from_name_servers(servers), opts)
    }
    .map_err(|e| DnsError::Setup(e.to_string()))?;
    Ok(auth.with_max_negative_ttl(MAX_NEGATIVE_TTL))
}
