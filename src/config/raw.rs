//! The configuration file as written by the admin: plain serde structs, no validation.
//!
//! Every key has a default so that an empty file is a valid (verify-only) configuration.
//! `deny_unknown_fields` everywhere: a typo is an error that names the key, never a silently
//! ignored setting.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default = "d_socket")]
    pub socket: String,
    #[serde(default = "d_socket_mode")]
    pub socket_mode: String,
    #[serde(default)]
    pub authserv_id: Option<String>,
    #[serde(default = "d_mode")]
    pub mode: String,
    #[serde(default = "d_log_level")]
    pub log_level: String,
    #[serde(default = "d_max_connections")]
    pub max_connections: usize,
    #[serde(default = "d_threads")]
    pub threads: usize,
    #[serde(default = "d_connection_timeout")]
    pub connection_timeout: String,
    #[serde(default = "d_on_internal_error")]
    pub on_internal_error: String,
    #[serde(default = "d_shutdown_timeout")]
    pub shutdown_timeout: String,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub signing: RawSigning,
    #[serde(default)]
    pub verify: RawVerify,
    #[serde(default)]
    pub dmarc: RawDmarc,
    #[serde(default)]
    pub dns: RawDns,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub reports: RawReports,
}

/// `[reports]`: DMARC aggregate reports (RFC 9990). Off while `store` is unset.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReports {
    #[serde(default)]
    pub store: Option<String>,
    #[serde(default)]
    pub org_name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub extra_contact_info: Option<String>,
    #[serde(default = "d_schedule")]
    pub schedule: String,
    #[serde(default = "d_transport")]
    pub transport: String,
    #[serde(default = "d_smtp_host")]
    pub smtp_host: String,
    #[serde(default = "d_smtp_port")]
    pub smtp_port: u16,
    #[serde(default = "d_smtp_tls")]
    pub smtp_tls: String,
    #[serde(default)]
    pub smtp_ca_file: Option<String>,
    #[serde(default)]
    pub smtp_user: Option<String>,
    #[serde(default)]
    pub smtp_password_file: Option<String>,
    #[serde(default = "d_sendmail")]
    pub sendmail: String,
    #[serde(default)]
    pub suppress: Vec<String>,
    #[serde(default = "d_report_max_size")]
    pub max_size: String,
    #[serde(default = "d_retention")]
    pub retention: String,
    #[serde(default = "d_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "d_report_queue")]
    pub queue: usize,
    #[serde(default)]
    pub failure_reports: bool,
    #[serde(default = "d_failure_rate")]
    pub failure_rate: u32,
}

impl Default for RawReports {
    fn default() -> Self {
        RawReports {
            store: None,
            org_name: None,
            email: None,
            extra_contact_info: None,
            schedule: d_schedule(),
            transport: d_transport(),
            smtp_host: d_smtp_host(),
            smtp_port: d_smtp_port(),
            smtp_tls: d_smtp_tls(),
            smtp_ca_file: None,
            smtp_user: None,
            smtp_password_file: None,
            sendmail: d_sendmail(),
            suppress: Vec::new(),
            max_size: d_report_max_size(),
            retention: d_retention(),
            max_attempts: d_max_attempts(),
            queue: d_report_queue(),
            failure_reports: false,
            failure_rate: d_failure_rate(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// "IP:PORT" for the Prometheus endpoint; unset = no endpoint.
    #[serde(default)]
    pub listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default = "d_max_header_size")]
    pub max_header_size: String,
    #[serde(default = "d_max_headers")]
    pub max_headers: usize,
    #[serde(default = "d_max_message_size")]
    pub max_message_size: String,
    #[serde(default = "d_on_oversize")]
    pub on_oversize: String,
    #[serde(default = "d_max_buffered_total")]
    pub max_buffered_total: String,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_header_size: d_max_header_size(),
            max_headers: d_max_headers(),
            max_message_size: d_max_message_size(),
            on_oversize: d_on_oversize(),
            max_buffered_total: d_max_buffered_total(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSigning {
    #[serde(default)]
    pub key_table: Option<String>,
    #[serde(default)]
    pub signing_table: Option<String>,
    #[serde(default)]
    pub multiple_signatures: bool,
    #[serde(default = "d_internal_hosts")]
    pub internal_hosts: Vec<String>,
    #[serde(default)]
    pub daemon_names: Vec<String>,
    #[serde(default = "d_true")]
    pub sign_authenticated: bool,
    #[serde(default = "d_canonicalization")]
    pub canonicalization: String,
    #[serde(default = "d_sign_headers")]
    pub sign_headers: Vec<String>,
    #[serde(default = "d_oversign_headers")]
    pub oversign_headers: Vec<String>,
    #[serde(default)]
    pub expiration: Option<String>,
    #[serde(default = "d_on_signing_error")]
    pub on_signing_error: String,
}

impl Default for RawSigning {
    fn default() -> Self {
        RawSigning {
            key_table: None,
            signing_table: None,
            multiple_signatures: false,
            internal_hosts: d_internal_hosts(),
            daemon_names: Vec::new(),
            sign_authenticated: true,
            canonicalization: d_canonicalization(),
            sign_headers: d_sign_headers(),
            oversign_headers: d_oversign_headers(),
            expiration: None,
            on_signing_error: d_on_signing_error(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    #[serde(default = "d_on_dns_error")]
    pub on_dns_error: String,
    #[serde(default = "d_max_signatures")]
    pub max_signatures: usize,
    #[serde(default)]
    pub received_spf: bool,
    #[serde(default = "d_true")]
    pub spf_helo: bool,
    #[serde(default = "d_verify_timeout")]
    pub timeout: String,
}

impl Default for RawVerify {
    fn default() -> Self {
        RawVerify {
            on_dns_error: d_on_dns_error(),
            max_signatures: d_max_signatures(),
            received_spf: false,
            spf_helo: true,
            timeout: d_verify_timeout(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDmarc {
    #[serde(default)]
    pub enforce: bool,
    #[serde(default = "d_quarantine_action")]
    pub quarantine_action: String,
    #[serde(default = "d_multiple_from")]
    pub multiple_from: String,
    #[serde(default)]
    pub never_reject: Vec<String>,
    #[serde(default = "d_true")]
    pub never_reject_authenticated: bool,
    #[serde(default = "d_on_unverifiable")]
    pub on_unverifiable: String,
}

impl Default for RawDmarc {
    fn default() -> Self {
        RawDmarc {
            enforce: false,
            quarantine_action: d_quarantine_action(),
            multiple_from: d_multiple_from(),
            never_reject: Vec::new(),
            never_reject_authenticated: true,
            on_unverifiable: d_on_unverifiable(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    #[serde(default)]
    pub nameservers: Vec<String>,
    #[serde(default = "d_dns_timeout")]
    pub timeout: String,
    #[serde(default = "d_dns_attempts")]
    pub attempts: usize,
    #[serde(default = "d_dns_cache_size")]
    pub cache_size: usize,
}

impl Default for RawDns {
    fn default() -> Self {
        RawDns {
            nameservers: Vec::new(),
            timeout: d_dns_timeout(),
            attempts: d_dns_attempts(),
            cache_size: d_dns_cache_size(),
        }
    }
}

fn d_socket() -> String {
    "inet:8891@127.0.0.1".into()
}
fn d_socket_mode() -> String {
    "0660".into()
}
fn d_mode() -> String {
    "sv".into()
}
fn d_log_level() -> String {
    "info".into()
}
fn d_max_connections() -> usize {
    200
}
fn d_threads() -> usize {
    1
}
fn d_connection_timeout() -> String {
    "330s".into()
}
fn d_shutdown_timeout() -> String {
    "30s".into()
}
fn d_on_internal_error() -> String {
    "tempfail".into()
}
fn d_max_header_size() -> String {
    "1M".into()
}
fn d_max_headers() -> usize {
    1000
}
fn d_max_message_size() -> String {
    "32M".into()
}
fn d_max_buffered_total() -> String {
    "1G".into()
}
fn d_on_oversize() -> String {
    "accept".into()
}
fn d_internal_hosts() -> Vec<String> {
    vec!["127.0.0.0/8".into(), "::1".into()]
}
fn d_true() -> bool {
    true
}
fn d_canonicalization() -> String {
    "relaxed/simple".into()
}
pub fn d_sign_headers() -> Vec<String> {
    // OpenDKIM's default list (RFC 6376 §5.4.1 recommendations), minus obsolete ones.
    [
        "From",
        "Reply-To",
        "Subject",
        "Date",
        "To",
        "Cc",
        "Resent-Date",
        "Resent-From",
        "Resent-To",
        "Resent-Cc",
        "In-Reply-To",
        "References",
        "List-Id",
        "List-Help",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "List-Subscribe",
        "List-Post",
        "List-Owner",
        "List-Archive",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Content-ID",
        "Content-Description",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}
fn d_oversign_headers() -> Vec<String> {
    vec!["From".into()]
}
fn d_on_unverifiable() -> String {
    "tempfail".into()
}
fn d_on_signing_error() -> String {
    "tempfail".into()
}
fn d_on_dns_error() -> String {
    "tempfail".into()
}
fn d_max_signatures() -> usize {
    10
}
fn d_verify_timeout() -> String {
    "60s".into()
}
fn d_quarantine_action() -> String {
    "hold".into()
}
fn d_multiple_from() -> String {
    "strict".into()
}
fn d_dns_timeout() -> String {
    "5s".into()
}
fn d_dns_attempts() -> usize {
    2
}
fn d_dns_cache_size() -> usize {
    8192
}
fn d_schedule() -> String {
    "off".into()
}
fn d_transport() -> String {
    "smtp".into()
}
fn d_smtp_host() -> String {
    "127.0.0.1".into()
}
fn d_smtp_port() -> u16 {
    25
}
fn d_smtp_tls() -> String {
    "opportunistic".into()
}
fn d_sendmail() -> String {
    "/usr/sbin/sendmail".into()
}
fn d_report_max_size() -> String {
    "10M".into()
}
fn d_retention() -> String {
    "14d".into()
}
fn d_max_attempts() -> u32 {
    5
}
fn d_report_queue() -> usize {
    10_000
}
fn d_failure_rate() -> u32 {
    10
}
