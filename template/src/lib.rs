//! {{description}}
//!
//! A Redis Streams worker: it consumes `{{stream}}` as a member of the
//! consumer group `{{consumer_group}}`, acknowledges each entry after it was
//! processed, retries failures with backoff, sends what keeps failing to a
//! dead-letter stream and takes over the entries of consumers that died.
//!
//! # Layout
//!
//! Data flows one way, down this list: no module uses one above it.
//! `backoff`, `connection`, `consumer` and `name_lock` are internals of the
//! worker and the operator commands, not part of the library's interface.
//!
//! - [`business_logic`] — the message, what to do with it and the logic's
//!   own settings. **The file to edit.**
//! - [`handler`] — the trait the business logic implements, and its error type.
//! - [`worker`] — the consume loop, one [`worker::Worker::step`] at a time;
//!   `worker/sources.rs` reads what is due, `worker/process.rs` runs the
//!   handler and carries out what the retry policy decides,
//!   `worker/ledger.rs` records it in Redis.
//! - [`retry`] — the delivery policy: acknowledge, retry after a delay or
//!   dead-letter.
//! - `name_lock` — one live process per consumer name.
//! - `consumer` — the consumer group's Redis commands, on two connections;
//!   `consumer/reply.rs` parses the replies that carry entries,
//!   `consumer/read_ahead.rs` reads the next batch ahead.
//! - `connection` — how every part connects to Redis.
//! - [`entry`] — a stream entry as Redis stores it.
//! - [`dead_letter`] — what a dead letter looks like.
//! - [`admin`] — the operator's commands, one file each: `status`, `send`,
//!   `dead_letters`, `trim`, `config`.
//! - [`replay`] — how a dead letter goes back to its group, exactly once.
//! - [`redact`] — keeping Redis passwords out of every output.
//! - `backoff` — exponential delays for reconnects and retries.
//! - [`shutdown`] — signals and the deadline for in-flight work.
//! - [`settings`] — types and defaults; `settings/load.rs` layers defaults,
//!   config file, environment and flags; `settings/validate.rs` checks them.
//! - [`telemetry`] — logging.
//! - [`observe`] — the events the worker reports, and its progress.
//! - [`summary`] — the periodic summary in the log.
{%- if use_serde_validation %}
//! - [`validation`] — typed messages from raw entries, with serde.
{%- endif %}
{%- if add_metrics %}
//! - [`metrics`] — Prometheus metrics and health endpoints.
{%- else %}
//! - [`heartbeat`] — the file `healthcheck` reads to tell the worker is alive.
{%- endif %}

pub mod admin;
mod backoff;
pub mod business_logic;
mod connection;
mod consumer;
pub mod dead_letter;
pub mod entry;
pub mod error;
pub mod handler;
{%- unless add_metrics %}
pub mod heartbeat;
{%- endunless %}
{%- if add_metrics %}
pub mod metrics;
{%- endif %}
mod name_lock;
pub mod observe;
pub mod redact;
pub mod replay;
pub mod retry;
pub mod settings;
pub mod shutdown;
pub mod summary;
pub mod telemetry;
{%- if use_serde_validation %}
pub mod validation;
{%- endif %}
pub mod worker;

pub use consumer::Names;
pub use entry::Entry;
pub use error::Error;
pub use handler::{Handler, ProcessError};
pub use retry::{Decision, RetryPolicy};
pub use settings::Settings;
pub use worker::Worker;
