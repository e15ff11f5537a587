//! Logging: one `tracing` subscriber, built once at start.
//!
//! The level comes from `log_level` (`LOG_LEVEL`); `RUST_LOG`, when set,
//! replaces it with full directives such as `info,redis_streams_runtime=debug`.
//! `log_format` picks human-readable lines (coloured only on a terminal) or
//! one JSON object per line for log collectors.
//!
//! Every line passes through a [`Redactor`] on its way out, so a password
//! that reaches a log field (inside a library's error message, say) is
//! written as `***`.

use std::io::{IsTerminal, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::redact::Redactor;
use crate::settings::LogFormat;

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `RUST_LOG` holds a directive that does not parse.
    #[error("RUST_LOG: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    /// A subscriber was already installed.
    #[error("logging is already initialised")]
    AlreadySet,
}

/// Installs the global subscriber, writing to standard error with the
/// secrets `redactor` knows replaced.
pub fn init(log_level: &str, format: LogFormat, redactor: Redactor) -> Result<(), TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives)?,
        _ => EnvFilter::try_new(log_level.to_ascii_lowercase())?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(RedactingStderr(redactor));
    let installed = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
    installed.map_err(|_| TelemetryError::AlreadySet)
}

/// Standard error, through a [`Redactor`].
struct RedactingStderr(Redactor);

/// One log line on its way to standard error.
struct RedactedLine<'a>(&'a Redactor);

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = RedactedLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactedLine(&self.0)
    }
}

impl Write for RedactedLine<'_> {
    /// The formatter hands over each event whole, so a secret is never split
    /// across two calls.
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(line);
        std::io::stderr()
            .lock()
            .write_all(self.0.scrub(&text).as_bytes())?;
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
