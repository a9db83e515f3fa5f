//! Logging setup shared by berth-api and berth-agent: a tracing filter
//! (`--log`) and a format (`--log-format`), written to stderr.
//!
//! `text` is tracing's human format, coloured only when stderr is a
//! terminal (so files, journald and pipes get no escape codes). `json` is
//! one object per line: `timestamp`, `level`, `target`, the event's fields
//! at the top level (`message` and any others, e.g. `node`, `network`,
//! `sandbox`, `netns`, `ifname`, `ip`), `span` (the innermost span: its
//! `name` and fields) and `spans` (every enclosing span, outermost first).
//! See docs/configuration.md.
use std::io::IsTerminal;

/// The `--log-format` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; coloured only on a terminal.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber: `filter` in tracing's EnvFilter syntax
/// (e.g. `info,berth_api=debug`), lines in `format` to stderr.
pub fn init(filter: &str, format: LogFormat) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_ansi(false)
            .try_init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn formats_parse_by_name() {
        assert_eq!(LogFormat::from_str("text", false), Ok(LogFormat::Text));
        assert_eq!(LogFormat::from_str("json", false), Ok(LogFormat::Json));
        assert!(LogFormat::from_str("xml", false).is_err());
    }
}
