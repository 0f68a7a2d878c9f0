//! Command-line definitions (clap) only; the work is done elsewhere.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub const DEFAULT_CONFIG: &str = "/etc/mailseal/mailseal.toml";

/// The generated documents.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Page {
    /// mailseal(8)
    Mailseal,
    /// mailseal.toml(5)
    ConfigFormat,
    /// config/mailseal.toml
    ExampleConfig,
}

#[derive(Debug, Parser)]
#[command(
    name = "mailseal",
    version,
    about = "DKIM signing and SPF/DKIM/DMARC/ARC verification milter for Postfix"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the milter daemon in the foreground.
    Run {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate the configuration, tables and keys; exit 1 on any error.
    CheckConfig {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Print the Authentication-Results header the daemon would add to a message read from stdin.
    Verify {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The SMTP client's IP address.
        #[arg(long)]
        client_ip: IpAddr,
        /// The HELO/EHLO name the client gave.
        #[arg(long)]
        helo: String,
        /// The envelope sender (MAIL FROM); empty for the null sender.
        #[arg(long, default_value = "")]
        mail_from: String,
    },
    /// Print a generated document: the mailseal(8) man page (from these definitions), the
    /// mailseal.toml(5) man page or the example configuration (from the key declarations).
    #[command(hide = true)]
    Manpage {
        #[arg(long, value_enum, default_value = "mailseal")]
        page: Page,
    },
    /// Sign a message read from stdin as outbound mail and print it with its DKIM-Signature(s).
    Sign {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Generate a signing key, its DNS record, and the KeyTable/SigningTable lines to add.
    Keygen {
        #[arg(long)]
        domain: String,
        #[arg(long)]
        selector: String,
        #[arg(long, value_enum, default_value = "rsa")]
        algorithm: crate::tools::keygen::Algorithm,
        /// RSA key size: 2048, 3072, 4096 or 8192.
        #[arg(long, default_value_t = 2048)]
        bits: u32,
        /// Directory for SELECTOR.private and SELECTOR.txt.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Check every KeyTable key against its DNS record: ok, mismatch, missing, testing, weak.
    Testkey {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Check a domain's mail posture: MX, SPF, DMARC, DKIM selectors, MTA-STS, TLS-RPT.
    CheckDomain {
        domain: String,
        /// DKIM selector to check (repeatable).
        #[arg(long = "selector")]
        selectors: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Config file for the [dns] settings (optional; default: system resolvers).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Extra CA certificates (PEM) to trust for the MTA-STS policy fetch.
        #[arg(long, hide = true)]
        ca_file: Option<PathBuf>,
        /// Port for the MTA-STS policy fetch (testing).
        #[arg(long, hide = true)]
        https_port: Option<u16>,
    },
    /// DMARC aggregate reports (RFC 9990): send them, or show what has been collected.
    Reports {
        #[command(subcommand)]
        action: ReportsCommand,
    },
    /// DKIM key rotation: see each key's state, start a rotation, move keys on.
    Keys {
        #[command(subcommand)]
        action: KeysCommand,
    },
    /// Read an OpenDKIM (and OpenDMARC) setup and write the mailseal configuration that keeps
    /// its behaviour; print each setting found and what it became. Without --out nothing is
    /// written (a dry run); existing files are never overwritten.
    Migrate {
        /// OpenDKIM's configuration.
        #[arg(long, default_value = "/etc/opendkim.conf")]
        opendkim: PathBuf,
        /// OpenDMARC's configuration, if it runs beside OpenDKIM.
        #[arg(long)]
        opendmarc: Option<PathBuf>,
        /// Where Debian's opendkim and opendmarc defaults files are (their SOCKET= overrides
        /// the configuration's Socket).
        #[arg(long, default_value = "/etc/default")]
        defaults_dir: PathBuf,
        /// Write mailseal.toml, the tables, host lists and a systemd drop-in here (a new or
        /// empty directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Say which SigningTable row and key would sign mail from ADDRESS, or why nothing would.
    Explain {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        address: String,
        /// Decide outbound/inbound for this client IP, as the daemon would.
        #[arg(long)]
        client_ip: Option<IpAddr>,
        /// Treat the client as SMTP-authenticated as this user.
        #[arg(long)]
        auth: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Every key: its state (pending, published, active, retiring, revoked), age, selector,
    /// algorithm, the DNS check of its record, and the next step.
    Status {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// An array of objects (domain, selector, algorithm, state, …).
        #[arg(long)]
        json: bool,
    },
    /// Start a rotation: a new key per matching KeyTable row, pending, and the record to
    /// publish.
    Rotate {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Only this domain's rows.
        #[arg(long)]
        domain: Option<String>,
        /// Only rows of this algorithm.
        #[arg(long, value_enum)]
        algorithm: Option<crate::tools::keygen::Algorithm>,
    },
    /// Move every key whose condition holds to its next state (records checked in DNS).
    Advance {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// With `[keys] store`: the signing hosts sharing the state and the keys each holds.
    Hosts {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// With `[keys] store`: forget a host gone for good, so new keys stop waiting for it.
    Forget {
        /// The host's name as `keys hosts` shows it.
        host: String,
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReportsCommand {
    /// Build one report per policy domain and UTC day from the unreported records, check each
    /// destination (RFC 9990 §3) and submit. Reports that failed before are retried.
    Send {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Build the reports but send, claim and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: write each report's .xml.gz file (RFC 9990 file name) here.
        #[arg(long, requires = "dry_run")]
        out: Option<PathBuf>,
        /// Only records received from this time: 2026-11-22, an RFC 3339 time, Unix seconds,
        /// or an age such as 3d.
        #[arg(long)]
        since: Option<String>,
        /// Only records received before this time (same forms; default: the start of the
        /// current UTC day, so only complete days are reported).
        #[arg(long)]
        until: Option<String>,
    },
    /// Show the collected DMARC evaluations per policy domain, and the reports made.
    Show {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Show the grouped records of this policy domain.
        #[arg(long)]
        domain: Option<String>,
    },
    /// Read reports others sent about our domains: DMARC aggregate (XML, .xml.gz, .zip),
    /// TLS-RPT (JSON, .json.gz) and failure reports, as report files, mails (.eml), mbox
    /// files or Maildirs, recognised by content. Exit 1 when any input was refused.
    Import {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Files or directories; `-` (or none) reads one input from standard input.
        inputs: Vec<PathBuf>,
    },
    /// The inputs import refused, newest first, with the reason.
    Rejected {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// How many to list.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Also print the first bytes kept of each.
        #[arg(long)]
        show: bool,
    },
    /// What receivers reported per domain: messages, DMARC pass rate, dispositions, sending
    /// sources, TLS sessions, failure reports.
    Summary {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        domain: Option<String>,
        /// Only reports whose period ended in the last N days (default: all kept).
        #[arg(long)]
        days: Option<i64>,
    },
}

/// The man page, from the clap definitions (section 8: a system daemon).
pub fn manpage() -> std::io::Result<Vec<u8>> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let man = clap_mangen::Man::new(cmd).section("8");
    let mut out = Vec::new();
    man.render(&mut out)?;
    // Each subcommand on its own (and theirs: `reports send`), so `man mailseal` documents
    // every option.
    fn sections(cmd: &clap::Command, prefix: &str, out: &mut Vec<u8>) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let name = format!("{prefix} {}", sub.get_name().to_uppercase());
            out.extend_from_slice(format!(".SH \"{name}\"\n").as_bytes());
            let sub_man = clap_mangen::Man::new(sub.clone());
            sub_man.render_description_section(out)?;
            sub_man.render_options_section(out)?;
            sections(sub, &name, out)?;
        }
        Ok(())
    }
    sections(&Cli::command(), "MAILSEAL", &mut out)?;
    Ok(out)
}
