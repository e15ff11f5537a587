//! The runtime of a Redis Streams worker: it consumes a stream as a member
//! of a consumer group, acknowledges each entry after it was processed,
//! retries failures with backoff, sends what keeps failing to a dead-letter
//! stream, takes over the entries of consumers that died, and gives the
//! operator commands to look at and repair all of it.
//!
//! A project generated from the `redis-streams-worker` template holds its
//! business logic and a `main` of a few lines; everything else is this
//! crate, the same in every project, so that a newer runtime is taken by
//! replacing it.
//!
//! # What a project implements
//!
//! A [`Handler`] (what to do with one entry) that is also a [`Logic`]
//! (how to build it from its own settings, the config file's `logic`
//! section), and a `main` that hands it to [`main`]:
//!
//! ```no_run
//! use redis_streams_runtime::settings::{LogicSettings, Refusal};
//! use redis_streams_runtime::{BoxError, Defaults, Entry, Handler, Logic, ProcessError, Project};
//! use serde::{Deserialize, Serialize};
//!
//! /// The `logic` section: `LOGIC_GREETING` in the environment.
//! #[derive(Debug, Clone, Default, Serialize, Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! struct Settings {
//!     greeting: String,
//! }
//!
//! impl LogicSettings for Settings {
//!     fn validate(&self) -> Result<(), Refusal> {
//!         if self.greeting.len() > 100 {
//!             return Err(Refusal::new("greeting", "at most 100 characters"));
//!         }
//!         Ok(())
//!     }
//! }
//!
//! struct Greeter {
//!     greeting: String,
//! }
//!
//! impl Logic for Greeter {
//!     type Settings = Settings;
//!
//!     async fn build(settings: &Settings) -> Result<Self, BoxError> {
//!         Ok(Self { greeting: settings.greeting.clone() })
//!     }
//! }
//!
//! impl Handler for Greeter {
//!     async fn handle(&self, entry: &Entry) -> Result<(), ProcessError> {
//!         let Some(Ok(name)) = entry.text("name") else {
//!             // Retrying cannot fix it: a dead letter at once.
//!             return Err(ProcessError::permanent("no UTF-8 `name` field"));
//!         };
//!         tracing::info!("{} {name}", self.greeting);
//!         Ok(())
//!     }
//! }
//!
//! const PROJECT: Project = Project {
//!     name: "greeter",
//!     version: "0.1.0",
//!     description: "Greets everyone on the stream",
//!     defaults: Defaults {
//!         worker_name: "greeter",
//!         stream: "names",
//!         consumer_group: "greeters",
//!         ..Defaults::BASE
//!     },
//! };
//!
//! fn main() -> std::process::ExitCode {
//!     redis_streams_runtime::main::<Greeter>(&PROJECT)
//! }
//! ```
//!
//! The handler says what to do with the entry through its result: `Ok`
//! acknowledges it, [`ProcessError::retry`] delivers it again after a
//! backoff (up to `worker.max_deliveries` times, then a dead letter),
//! [`ProcessError::permanent`] dead-letters it at once. A panic or a call
//! that outlasts `worker.process_timeout_ms` counts as a retryable failure.
//!
//! Tests drive a [`Worker`] one [`Worker::step`] at a time, or run it with
//! a shutdown future of their own ([`Worker::run`]); [`testing`] has the
//! helpers for tests against a real Redis.
//!
//! # Features
//!
//! - `metrics`: Prometheus metrics and the `/metrics`, `/healthz` and
//!   `/readyz` endpoints (module `metrics`); without it, a heartbeat file
//!   that `healthcheck` reads (module `heartbeat`).
//! - `validation`: helpers that turn raw entries into typed messages with
//!   serde (module `validation`).
//!
//! # Layout
//!
//! Data flows one way, down this list: no module uses one above it.
//! `backoff`, `connection`, `consumer` and `name_lock` are internals of the
//! worker and the operator commands, not part of the crate's interface.
//!
//! - [`cli`] — the binary's command line: [`main`] and [`Project`].
//! - [`admin`] — the operator's commands, one file each: `status`, `send`,
//!   `dead_letters`, `trim`, `config`.
//! - `metrics` — Prometheus metrics and health endpoints (feature
//!   `metrics`).
//! - `heartbeat` — the file `healthcheck` reads to tell the worker is
//!   alive (without the feature `metrics`).
//! - [`telemetry`] — logging, and the business logic's spans as traces.
//! - [`testing`] — helpers for integration tests against a real Redis.
//! - [`worker`] — the consume loop, one [`Worker::step`] at a time;
//!   `worker/sources.rs` reads what is due, `worker/process.rs` runs the
//!   handler and carries out what the retry policy decides,
//!   `worker/ledger.rs` records it in Redis.
//! - [`summary`] — the periodic summary in the log.
//! - [`otel`] — OpenTelemetry traces: a span per delivery continuing the
//!   producer's context in the entry; `otel/export.rs` sends them, bounded.
//! - `name_lock` — one live process per consumer name.
//! - `consumer` — the consumer group's Redis commands, on two connections;
//!   `consumer/reply.rs` parses the replies that carry entries,
//!   `consumer/read_ahead.rs` reads the next batch ahead.
//! - [`retry`] — the delivery policy: acknowledge, retry after a delay or
//!   dead-letter.
//! - [`observe`] — the events the worker reports, and its progress.
//! - `validation` — typed messages from raw entries, with serde (feature
//!   `validation`).
//! - [`handler`] — the traits the business logic implements, and its error
//!   type.
//! - [`dead_letter`] — what a dead letter looks like.
//! - [`replay`] — how a dead letter goes back to its group, exactly once.
//! - [`entry`] — a stream entry as Redis stores it.
//! - `connection` — how every part connects to Redis.
//! - [`settings`] — types and defaults; `settings/load.rs` layers defaults,
//!   config file, environment and flags; `settings/validate.rs` checks them;
//!   `settings/modules.rs` holds the optional modules' sections,
//!   `settings/traces.rs` the `tracing` section.
//! - [`error`] — the runtime's error type.
//! - [`redact`] — keeping Redis passwords out of every output.
//! - `backoff` — exponential delays for reconnects and retries.
//! - [`shutdown`] — signals and the deadline for in-flight work.
//! - [`section`] — what every settings section shares.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod admin;
mod backoff;
pub mod cli;
mod connection;
mod consumer;
pub mod dead_letter;
pub mod entry;
pub mod error;
pub mod handler;
#[cfg(not(feature = "metrics"))]
pub mod heartbeat;
#[cfg(feature = "metrics")]
pub mod metrics;
mod name_lock;
pub mod observe;
pub mod otel;
pub mod redact;
pub mod replay;
pub mod retry;
pub mod section;
pub mod settings;
pub mod shutdown;
pub mod summary;
pub mod telemetry;
pub mod testing;
#[cfg(feature = "validation")]
pub mod validation;
pub mod worker;

pub use cli::{Project, main};
pub use consumer::Names;
pub use entry::Entry;
pub use error::Error;
pub use handler::{BoxError, Handler, Logic, ProcessError};
pub use retry::{Decision, RetryPolicy};
pub use settings::{Defaults, Settings};
pub use worker::Worker;
