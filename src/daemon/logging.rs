//! Logging to stderr. Under systemd (`JOURNAL_STREAM` names our stderr) each line starts with
//! its sd-daemon priority (`<3>` error … `<7>` debug) and carries no timestamp, which the
//! journal adds: `journalctl -p err -u mailseal` then shows errors only. The level can be
//! changed while running ([`set_log_level`], on reload).

use std::fmt;
use std::sync::OnceLock;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// The sd-daemon(3) priority of a level.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Lines for the journal: `<N>` on every line of the event (a multi-line message keeps its
/// priority), no timestamp, no level word.
struct Journal;

impl<S, N> FormatEvent<S, N> for Journal
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut text = String::new();
        ctx.field_format()
            .format_fields(Writer::new(&mut text), event)?;
        let p = priority(event.metadata().level());
        for line in text.lines() {
            writeln!(writer, "<{p}>{line}")?;
        }
        Ok(())
    }
}

/// Is stderr the journal stream systemd gave us (`JOURNAL_STREAM=dev:inode`)?
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// Set up logging to stderr. `RUST_LOG` overrides the configured level.
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let (filter, handle) = reload::Layer::new(filter);
    let journal = stderr_is_journal();
    // Colour only on a terminal: the journal would keep the escape codes.
    use std::io::IsTerminal;
    let ansi =
        !journal && std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = if journal {
        registry.with(layer.event_format(Journal)).try_init()
    } else {
        registry.with(layer).try_init()
    };
    if installed.is_ok() {
        let _ = FILTER.set(handle);
    }
}

/// Apply a new `log_level` (on reload). `RUST_LOG`, when set, keeps precedence. Returns
/// whether the level changed.
pub fn set_log_level(level: &str) -> bool {
    if std::env::var_os("RUST_LOG").is_some() {
        return false;
    }
    let Some(handle) = FILTER.get() else {
        return false;
    };
    let new = EnvFilter::new(level);
    let changed = handle
        .with_current(|f| f.to_string() != new.to_string())
        .unwrap_or(false);
    changed && handle.reload(new).is_ok()
}
