//! Logging of the daemon: UTC timestamps on stderr, written by a
//! background thread, with a level that a reload can change.

use nobounce_config::{LogConfig, LogFormat};
use std::sync::OnceLock;
use tracing_subscriber::{
    fmt, layer::SubscriberExt, reload, util::SubscriberInitExt, EnvFilter, Registry,
};

type Handle = reload::Handle<EnvFilter, Registry>;

/// The filter handle of the installed subscriber, when [`init`] ran.
static FILTER: OnceLock<Handle> = OnceLock::new();

/// Flushes what is left of the log when dropped (at exit).
pub type LogGuard = tracing_appender::non_blocking::WorkerGuard;

fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the process's subscriber. Lines are formatted on the calling
/// thread and written by a background thread through a buffer, so a busy
/// milter does not pay a write system call per line; nothing is dropped
/// (the channel blocks when full). `RUST_LOG` overrides the level.
pub fn init(config: &LogConfig) -> LogGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (layer, handle) = reload::Layer::new(filter(&config.level));
    // The default timer prints RFC 3339 timestamps in UTC.
    let installed = match config.format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(layer)
            .with(fmt::layer().with_writer(writer).with_ansi(ansi))
            .try_init(),
        // One object per line: timestamp, level, target, fields (the
        // message among them); no span nesting.
        LogFormat::Json => tracing_subscriber::registry()
            .with(layer)
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(false)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(writer),
            )
            .try_init(),
    }
    .is_ok();
    if installed {
        let _ = FILTER.set(handle);
    }
    guard
}

/// Applies the level of a reloaded configuration (issue 13, item 11: it
/// used to be ignored). Without `init` (tests, embedders) it does nothing.
pub fn apply(config: &LogConfig) {
    if std::env::var_os("RUST_LOG").is_some() {
        return;
    }
    if let Some(handle) = FILTER.get() {
        match handle.reload(filter(&config.level)) {
            Ok(()) => tracing::info!(event = "log_level", level = %config.level, "log level set"),
            Err(e) => tracing::warn!(event = "log_level", "cannot change the log level: {e}"),
        }
    }
}
