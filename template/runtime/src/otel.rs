//! OpenTelemetry traces: one span per delivery that continues the
//! producer's trace, exported over OTLP/HTTP by configuration (the
//! `tracing` settings, or the standard `OTEL_*` variables).
//!
//! The producer's context travels in the entry as W3C trace-context fields,
//! [`TRACEPARENT`] and [`TRACESTATE`]. The worker's span per delivery,
//! `process <stream>` (kind consumer), is a child of that context, linked
//! to it, or unrelated ([`ParentMode`]); it carries the messaging
//! attributes of OpenTelemetry's semantic conventions, the time the entry
//! waited in the stream, and the outcome as status and events. While the
//! business logic runs, the span is the current OpenTelemetry context, so
//! the logic's own `tracing` spans (an HTTP client's, say) nest inside it.
//!
//! A dead letter keeps the entry's fields, so its context too; an entry
//! that came without one gets the failed delivery's, so that a replay
//! joins the trace of the failure it repeats.
//!
//! Off (no endpoint), none of this runs: the worker holds no tracer and
//! creates no span.

pub mod export;

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Link, SamplingDecision, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags,
    TraceId, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, ShouldSample};

pub use export::spans_dropped;

use crate::consumer::Names;
use crate::entry::Entry;
use crate::settings::{ParentMode, TraceSettings};

/// The entry field that carries the W3C `traceparent` of the producer.
pub const TRACEPARENT: &str = "traceparent";
/// The entry field that carries the W3C `tracestate`, when there is one.
pub const TRACESTATE: &str = "tracestate";

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    /// The exporter could not be built or started: a setting or an
    /// `OTEL_EXPORTER_OTLP_*` variable it reads itself (headers,
    /// compression) is wrong.
    #[error("cannot export traces (tracing.endpoint; OTEL_EXPORTER_OTLP_* variables): {0}")]
    Exporter(String),
}

/// The tracer of a process that exports traces; [`Tracing::shutdown`]
/// sends what is still queued.
#[derive(Debug, Clone)]
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    sampler: Sampler,
    parent: ParentMode,
}

impl Tracing {
    /// The tracer `settings` describe, or `None` when no endpoint is set.
    /// `service_name` is used unless the settings name one;
    /// `service_version` is the project's version.
    pub fn start(
        settings: &TraceSettings,
        service_name: &str,
        service_version: &str,
    ) -> Result<Option<Self>, TracingError> {
        let Some(url) = settings.traces_url() else {
            return Ok(None);
        };
        let resource = Resource::builder()
            .with_service_name(
                settings
                    .service_name
                    .clone()
                    .unwrap_or_else(|| service_name.to_owned()),
            )
            .with_attribute(KeyValue::new("service.version", service_version.to_owned()))
            .build();
        let limits = export::Limits {
            queue_size: settings.queue_size,
            batch_size: settings.batch_size,
            interval: settings.export_interval,
        };
        let timeout = settings.export_timeout;
        let processor = export::QueueProcessor::start(limits, resource.clone(), move || {
            use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
            let client = reqwest::blocking::Client::builder()
                .timeout(timeout)
                .build()
                .map_err(|error| format!("its HTTP client: {error}"))?;
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_endpoint(url)
                .with_timeout(timeout)
                .build()
                .map_err(|error| error.to_string())
        })
        .map_err(TracingError::Exporter)?;
        let sampler = sampler(settings);
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_sampler(sampler.clone())
            .with_span_processor(processor)
            .build();
        let tracer = provider.tracer("redis-streams-runtime");
        Ok(Some(Self {
            provider,
            tracer,
            sampler,
            parent: settings.parent,
        }))
    }

    /// The SDK tracer, for the `tracing` layer that turns the business
    /// logic's spans into OpenTelemetry spans.
    pub fn tracer(&self) -> &SdkTracer {
        &self.tracer
    }

    /// The spans of deliveries to the consumer `names`.
    pub fn consumer_spans(&self, names: &Names) -> ConsumerSpans {
        // One name per worker (a process runs one): leaked once rather
        // than copied per span.
        let name: &'static str = Box::leak(format!("process {}", names.stream).into_boxed_str());
        ConsumerSpans {
            tracer: self.tracer.clone(),
            sampler: self.sampler.clone(),
            parent: self.parent,
            name,
            attributes: messaging("process", &names.stream)
                .into_iter()
                .chain([
                    KeyValue::new("messaging.consumer.group.name", names.group.clone()),
                    KeyValue::new("messaging.client.id", names.consumer.clone()),
                ])
                .collect(),
        }
    }

    /// A span of the producer's kind, `send <stream>`, continuing `parent`
    /// (a context from the environment, or none).
    pub fn producer_span(&self, stream: &str, parent: &Context) -> Context {
        let span = self
            .tracer
            .span_builder(format!("send {stream}"))
            .with_kind(SpanKind::Producer)
            .with_attributes(messaging("send", stream))
            .start_with_context(&self.tracer, parent);
        parent.with_span(span)
    }

    /// Ends `send`'s span, as an error if Redis refused the entries.
    pub fn end_producer_span(cx: &Context, error: Option<&dyn std::fmt::Display>) {
        let span = cx.span();
        if let Some(error) = error {
            span.set_status(Status::error(error.to_string()));
        }
        span.end();
    }

    /// Sends every span still queued, waiting at most `timeout`: called
    /// once, at the end of the process.
    pub fn shutdown(&self, timeout: Duration) {
        if let Err(error) = self.provider.shutdown_with_timeout(timeout) {
            tracing::warn!(%error, "traces still queued at exit were not all sent");
        }
    }
}

/// The attributes of OpenTelemetry's messaging conventions that a span of
/// `operation` (`send`, `process`) on `stream` carries.
fn messaging(operation: &'static str, stream: &str) -> [KeyValue; 4] {
    [
        KeyValue::new("messaging.system", "redis"),
        KeyValue::new("messaging.operation.type", operation),
        KeyValue::new("messaging.operation.name", operation),
        KeyValue::new("messaging.destination.name", stream.to_owned()),
    ]
}

/// The sampler `settings` name (validated at load).
fn sampler(settings: &TraceSettings) -> Sampler {
    let ratio = settings.sampler_arg.unwrap_or(1.0);
    match settings.sampler.as_str() {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio),
        "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        "parentbased_traceidratio" => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
        }
        _ => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
    }
}

/// Starts the span of each delivery; see the module documentation.
#[derive(Debug, Clone)]
pub struct ConsumerSpans {
    tracer: SdkTracer,
    /// The tracer's sampler, asked before any span is built.
    sampler: Sampler,
    parent: ParentMode,
    name: &'static str,
    /// The attributes every span of this consumer carries.
    attributes: Vec<KeyValue>,
}

impl ConsumerSpans {
    /// The span of `entry`'s delivery number `deliveries`, started now, as
    /// the context to run the business logic in.
    ///
    /// The sampler decides first. A delivery it drops (most, at a low
    /// ratio) gets no span at all, only a context that says "not sampled"
    /// (the producer's, or a new trace's), so that the logic's own spans
    /// are dropped with it and what it calls downstream is told the same:
    /// an allocation, not a span.
    pub fn start(&self, entry: &Entry, deliveries: u64) -> Context {
        let producer = match self.parent {
            ParentMode::None => None,
            // Most entries carry no context: no parsing for them.
            _ if entry.get(TRACEPARENT).is_none() => None,
            _ => Some(extract(entry)).filter(|cx| cx.span().span_context().is_valid()),
        };
        let parent = match (&producer, self.parent) {
            (Some(producer), ParentMode::Child) => Some(producer),
            _ => None,
        };
        let links = match (&producer, self.parent) {
            (Some(producer), ParentMode::Link) => {
                vec![Link::with_context(producer.span().span_context().clone())]
            }
            _ => Vec::new(),
        };
        let trace_id = match parent {
            Some(parent) => parent.span().span_context().trace_id(),
            None => TraceId::from_bytes(fastrand::u128(1..).to_be_bytes()),
        };
        let sampled = self.sampler.should_sample(
            parent,
            trace_id,
            self.name,
            &SpanKind::Consumer,
            &[],
            &links,
        );
        if sampled.decision != SamplingDecision::RecordAndSample {
            // In the producer's trace, if any, as a span of its own that is
            // not sampled: never the producer's context as it came, whose
            // flag may say "sampled" when this worker's sampler said no.
            return Context::new().with_remote_span_context(SpanContext::new(
                trace_id,
                SpanId::from_bytes(fastrand::u64(1..).to_be_bytes()),
                TraceFlags::default(),
                false,
                sampled.trace_state,
            ));
        }
        let parent = parent.cloned().unwrap_or_default();
        // The decision and the trace ID it was made for: the SDK does not
        // ask the sampler again.
        let span = self
            .tracer
            .span_builder(Cow::Borrowed(self.name))
            .with_kind(SpanKind::Consumer)
            .with_trace_id(trace_id)
            .with_sampling_result(sampled)
            .with_links(links)
            .start_with_context(&self.tracer, &parent);
        let cx = parent.with_span(span);
        let span = cx.span();
        if span.is_recording() {
            let body: usize = entry.fields.iter().map(|(_, value)| value.len()).sum();
            let mut attributes = self.attributes.clone();
            attributes.extend([
                KeyValue::new("messaging.message.id", entry.id.clone()),
                KeyValue::new("messaging.message.body.size", body as i64),
                KeyValue::new(
                    "messaging.redis.message.delivery_count",
                    i64::try_from(deliveries).unwrap_or(i64::MAX),
                ),
            ]);
            if let Some(waited) = waited_ms(entry) {
                attributes.push(KeyValue::new(
                    "messaging.redis.message.wait_time_ms",
                    waited,
                ));
            }
            span.set_attributes(attributes);
        }
        cx
    }
}

/// What became of a delivery, recorded on its span by [`end`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanOutcome<'a> {
    /// Processed and acknowledged.
    Acknowledged,
    /// Failed; delivered again after `delay`.
    Retried {
        /// The handler's error.
        error: &'a str,
        /// When it is tried again.
        delay: Duration,
    },
    /// Failed for good; written to the dead-letter stream.
    DeadLettered {
        /// Why it was given up.
        reason: &'a str,
    },
    /// Another consumer took it over while it ran here.
    TakenOver,
    /// Still running when the shutdown deadline passed: left pending for
    /// another consumer or the next start.
    Abandoned,
}

/// Records `outcome` on the delivery span in `cx` and ends it; nothing
/// without tracing or for a delivery that was not sampled.
pub fn end(cx: Option<&Context>, outcome: SpanOutcome<'_>) {
    let Some(cx) = cx else {
        return;
    };
    let span = cx.span();
    if !span.is_recording() {
        return;
    }
    match outcome {
        SpanOutcome::Acknowledged => {
            span.add_event("acknowledged", Vec::new());
            span.set_status(Status::Ok);
        }
        SpanOutcome::Retried { error, delay } => {
            span.add_event(
                "retry scheduled",
                vec![
                    KeyValue::new("error.message", error.to_owned()),
                    KeyValue::new(
                        "retry.delay_ms",
                        i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
                    ),
                ],
            );
            span.set_status(Status::error(error.to_owned()));
        }
        SpanOutcome::DeadLettered { reason } => {
            span.add_event(
                "dead-lettered",
                vec![KeyValue::new("error.message", reason.to_owned())],
            );
            span.set_status(Status::error(reason.to_owned()));
        }
        SpanOutcome::TakenOver => {
            span.add_event("taken over", Vec::new());
            span.set_status(Status::error("taken over by another consumer"));
        }
        SpanOutcome::Abandoned => {
            span.add_event("abandoned", Vec::new());
            span.set_status(Status::error(
                "still running at the shutdown deadline; left pending",
            ));
        }
    }
    span.end();
}

/// Gives the dead letter of a delivery whose span in `cx` was recorded
/// that span's context, when the entry carried none of its own, so that a
/// replay joins the trace of the failure it repeats. A `tracestate`
/// without a `traceparent` belongs to no trace: the span's replaces it.
pub fn carry_into_dead_letter(entry: &mut Entry, cx: Option<&Context>) {
    let Some(cx) = cx else {
        return;
    };
    if entry.get(TRACEPARENT).is_some() || !cx.span().span_context().is_sampled() {
        return;
    }
    entry
        .fields
        .retain(|(name, _)| name.as_slice() != TRACESTATE.as_bytes());
    entry.fields.extend(
        fields_of(cx)
            .into_iter()
            .map(|(name, value)| (name.into_bytes(), value.into_bytes())),
    );
}

/// Notes on the span in `cx`, if any, that the call ran out of time.
pub fn timed_out(cx: Option<&Context>, limit: Duration) {
    let Some(cx) = cx else {
        return;
    };
    cx.span().add_event(
        "timed out",
        vec![KeyValue::new(
            "worker.process_timeout_ms",
            i64::try_from(limit.as_millis()).unwrap_or(i64::MAX),
        )],
    );
}

/// The producer's context in `entry`'s `traceparent` and `tracestate`
/// fields; an empty context if there is none or it does not parse.
pub fn extract(entry: &Entry) -> Context {
    TraceContextPropagator::new().extract(&EntryFields(entry))
}

/// The trace-context fields that carry `cx` on: `traceparent`, and
/// `tracestate` when it has one. None for a context without a valid span.
pub fn fields_of(cx: &Context) -> Vec<(String, String)> {
    let mut fields = Fields(Vec::new());
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(cx, &mut fields);
    }
    fields.0
}

/// The context a process was handed in its environment: `TRACEPARENT`
/// and `TRACESTATE`, as OpenTelemetry's environment carrier names them.
pub fn from_environment(env: impl IntoIterator<Item = (String, String)>) -> Context {
    let carrier: HashMap<String, String> = env
        .into_iter()
        .filter_map(|(name, value)| match name.as_str() {
            "TRACEPARENT" => Some((TRACEPARENT.to_owned(), value)),
            "TRACESTATE" => Some((TRACESTATE.to_owned(), value)),
            _ => None,
        })
        .collect();
    TraceContextPropagator::new().extract(&carrier)
}

/// Milliseconds from the entry's production (its original ID's time) to
/// now.
fn waited_ms(entry: &Entry) -> Option<i64> {
    let produced = entry.millis()?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_millis();
    i64::try_from(now.saturating_sub(u128::from(produced))).ok()
}

/// An entry's fields as a carrier of trace context.
struct EntryFields<'a>(&'a Entry);

impl Extractor for EntryFields<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.text(key).and_then(Result::ok)
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .fields
            .iter()
            .filter_map(|(name, _)| std::str::from_utf8(name).ok())
            .collect()
    }
}

/// Trace-context fields being written.
struct Fields(Vec<(String, String)>);

impl Injector for Fields {
    /// An empty `tracestate` is left out.
    fn set(&mut self, key: &str, value: String) {
        if !value.is_empty() {
            self.0.push((key.to_owned(), value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn the_context_in_an_entry_is_read_and_written_back_the_same() {
        let entry = Entry::new(
            "1-0",
            [("data", "{}"), (TRACEPARENT, PARENT), (TRACESTATE, "k=v")],
        );
        let cx = extract(&entry);
        assert!(cx.span().span_context().is_remote());
        assert_eq!(
            fields_of(&cx),
            vec![
                (TRACEPARENT.to_owned(), PARENT.to_owned()),
                (TRACESTATE.to_owned(), "k=v".to_owned()),
            ]
        );
    }

    #[test]
    fn the_environment_carries_a_context_in_upper_case_names() {
        let env = [
            ("TRACEPARENT".to_owned(), PARENT.to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ];
        let cx = from_environment(env);
        assert_eq!(
            fields_of(&cx),
            vec![(TRACEPARENT.to_owned(), PARENT.to_owned())]
        );
        assert!(fields_of(&from_environment([])).is_empty());
    }

    #[test]
    fn an_entry_without_a_valid_context_has_none() {
        for fields in [vec![], vec![(TRACEPARENT, "00-zz-yy-01")]] {
            let cx = extract(&Entry::new("1-0", fields));
            assert!(!cx.span().span_context().is_valid());
            assert!(fields_of(&cx).is_empty());
        }
    }

    #[test]
    fn the_wait_counts_from_the_original_id() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let entry = Entry::new(
            format!("{}-0", now + 1_000_000),
            [("replay.original_id", format!("{}-3", now - 2_000))],
        );
        let waited = waited_ms(&entry).unwrap();
        assert!((2_000..3_000).contains(&waited), "{waited}");
    }
}
