//! {{description}}
//!
//! A Redis Streams worker: it consumes `{{stream}}` as a member of the
//! consumer group `{{consumer_group}}`, acknowledges each entry after it was
//! processed, retries failures with backoff, sends what keeps failing to a
//! dead-letter stream and takes over the entries of consumers that died.
//!
//! # Layout
//!
//! - [`business_logic`] — the message and what to do with it. **The file to edit.**
//! - [`handler`] — the trait the business logic implements, and its error type.
//! - [`worker`] — the consume loop, one [`worker::Worker::step`] at a time.
//! - [`consumer`] — the consumer group's Redis commands, on two connections.
//! - [`entry`] — a stream entry as Redis stores it.
//! - [`dead_letter`] — what a dead letter looks like.
//! - [`admin`] — the operator's commands: status, send, dead letters, trim.
//! - [`backoff`] — exponential delays for reconnects and retries.
//! - [`shutdown`] — signals and the deadline for in-flight work.
//! - [`settings`] — defaults, then config file, environment and flags.
//! - [`telemetry`] — logging.
//! - [`observe`] — the events the worker reports.
{%- if use_serde_validation %}
//! - [`validation`] — typed messages from raw entries, with serde.
{%- endif %}
{%- if add_metrics %}
//! - [`metrics`] — Prometheus metrics and health endpoints.
{%- endif %}

pub mod admin;
pub mod backoff;
pub mod business_logic;
pub mod consumer;
pub mod dead_letter;
pub mod entry;
pub mod error;
pub mod handler;
{%- if add_metrics %}
pub mod metrics;
{%- endif %}
pub mod observe;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
{%- if use_serde_validation %}
pub mod validation;
{%- endif %}
pub mod worker;

pub use entry::Entry;
pub use error::Error;
pub use handler::{Handler, ProcessError};
pub use settings::Settings;
pub use worker::Worker;
