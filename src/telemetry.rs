//! Logging: human-readable text on a terminal, JSON lines otherwise (journald, files).
//!
//! **Architecture Invariant:** no PII leaves the process through logs: events carry ids,
//! system names, counts and field *names*, never emails, names, phones or field values.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::settings::LogFormat;

/// Install the global subscriber. `RUST_LOG` overrides `level` when set. Safe to call once;
/// later calls are ignored (tests start several engines in one process).
pub fn init(format: LogFormat, level: &str, rust_log: Option<&str>) {
    let filter =
        EnvFilter::try_new(rust_log.unwrap_or(level)).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::NONE);
    let result = if json {
        builder.json().flatten_event(true).with_current_span(true).try_init()
    } else {
        builder.with_target(false).try_init()
    };
    // Already installed (tests): keep the first.
    drop(result);
}
