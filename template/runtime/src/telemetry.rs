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

use opentelemetry_sdk::trace::SdkTracer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

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
/// secrets `redactor` knows replaced; with `tracer`, the business logic's
/// spans also become OpenTelemetry spans (see [`crate::otel`]).
pub fn init(
    log_level: &str,
    format: LogFormat,
    redactor: Redactor,
    tracer: Option<&SdkTracer>,
) -> Result<(), TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives)?,
        _ => EnvFilter::try_new(log_level.to_ascii_lowercase())?,
    };
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(RedactingStderr(redactor));
    let lines = match format {
        LogFormat::Pretty => lines.boxed(),
        LogFormat::Json => lines.json().with_current_span(true).boxed(),
    };
    let logging = tracing_subscriber::registry().with(lines.with_filter(filter));
    // Without a tracer, no layer at all: an empty `Option` one would make
    // the callsites that a target directive turns off ask the filter on
    // every call.
    match tracer {
        Some(tracer) => logging.with(exported_spans(tracer)).try_init(),
        None => logging.try_init(),
    }
    .map_err(|_| TelemetryError::AlreadySet)
}

/// The layer that turns the business logic's spans into OpenTelemetry
/// spans. The runtime's own spans (`message`, ...) are not exported: each
/// delivery has its span from `otel`, and the logic's spans nest in it. Nor
/// are those of the exporter's HTTP client, which would feed back.
fn exported_spans<S>(tracer: &SdkTracer) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer.clone())
        .with_filter(
            Targets::new()
                .with_default(LevelFilter::INFO)
                .with_target("redis_streams_runtime", LevelFilter::OFF)
                .with_target("opentelemetry", LevelFilter::OFF)
                .with_target("opentelemetry_sdk", LevelFilter::OFF)
                .with_target("opentelemetry_otlp", LevelFilter::OFF)
                .with_target("reqwest", LevelFilter::OFF)
                .with_target("hyper", LevelFilter::OFF)
                .with_target("hyper_util", LevelFilter::OFF)
                .with_target("h2", LevelFilter::OFF),
        )
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
