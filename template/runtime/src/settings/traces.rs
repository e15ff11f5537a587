//! The `tracing` section: OpenTelemetry traces, exported over OTLP/HTTP.
//! Off until an endpoint is set. Each key also answers to the standard
//! OpenTelemetry variable (see [`OTEL_VARIABLES`]), so a worker deployed
//! beside other instrumented services needs no settings of its own.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::section::{Refusal, millis};

/// The standard OpenTelemetry environment variables and the key each sets.
/// A key's own variable (`TRACING_ENDPOINT`) wins over its standard one.
pub const OTEL_VARIABLES: &[(&str, &str)] = &[
    ("OTEL_TRACES_EXPORTER", "tracing.exporter"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "tracing.endpoint"),
    (
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "tracing.traces_endpoint",
    ),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "tracing.protocol"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "tracing.export_timeout_ms"),
    ("OTEL_SERVICE_NAME", "tracing.service_name"),
    ("OTEL_TRACES_SAMPLER", "tracing.sampler"),
    ("OTEL_TRACES_SAMPLER_ARG", "tracing.sampler_arg"),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "tracing.queue_size"),
    ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "tracing.batch_size"),
    ("OTEL_BSP_SCHEDULE_DELAY", "tracing.export_interval_ms"),
];

/// OpenTelemetry traces: one span per delivery, continuing the producer's
/// trace, exported in batches to an OTLP/HTTP collector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSettings {
    /// `otlp`, or `none` to switch traces off while an endpoint is set.
    pub exporter: String,
    /// The collector's OTLP/HTTP address (`http://otel-collector:4318`);
    /// spans go to `<endpoint>/v1/traces`. Unset: no traces, at no cost.
    pub endpoint: Option<String>,
    /// The full URL spans are sent to, used as it is
    /// (`http://otel-collector:4318/v1/traces`); wins over `endpoint`.
    pub traces_endpoint: Option<String>,
    /// `http/protobuf`, the only protocol built in.
    pub protocol: String,
    /// `service.name` of the spans; unset: `worker_name`.
    pub service_name: Option<String>,
    /// `parentbased_always_on` (the default), `parentbased_traceidratio`,
    /// `parentbased_always_off`, `always_on`, `always_off` or
    /// `traceidratio`, as `OTEL_TRACES_SAMPLER` names them.
    pub sampler: String,
    /// The ratio of the `traceidratio` samplers, 0 to 1; unset: 1.
    pub sampler_arg: Option<f64>,
    /// How a delivery's span relates to the producer's context in the
    /// entry: `child` (one trace from the producer through the worker),
    /// `link` (a trace of its own, linked to the producer's) or `none`.
    pub parent: ParentMode,
    /// Finished spans waiting for export; beyond it, spans are dropped and
    /// counted, never waited for.
    pub queue_size: usize,
    /// Spans per export request; one larger than `queue_size` is lowered
    /// to it (as the SDKs do, so `OTEL_BSP_MAX_QUEUE_SIZE` alone may be
    /// set below the default batch).
    pub batch_size: usize,
    /// How long a span may wait before its batch is sent.
    #[serde(rename = "export_interval_ms", with = "millis")]
    pub export_interval: Duration,
    /// How long one export request may take before its spans are dropped.
    #[serde(rename = "export_timeout_ms", with = "millis")]
    pub export_timeout: Duration,
}

/// How a delivery's span relates to the context the producer put in the
/// entry (`traceparent`, `tracestate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParentMode {
    /// A child of the producer's span, in the producer's trace.
    Child,
    /// A new trace, with a link to the producer's span.
    Link,
    /// A new trace; the producer's context is ignored.
    None,
}

/// The samplers of `OTEL_TRACES_SAMPLER` that are built in.
pub const SAMPLERS: &[&str] = &[
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
    "always_on",
    "always_off",
    "traceidratio",
];

impl Default for TraceSettings {
    fn default() -> Self {
        Self {
            exporter: "otlp".to_owned(),
            endpoint: None,
            traces_endpoint: None,
            protocol: "http/protobuf".to_owned(),
            service_name: None,
            sampler: "parentbased_always_on".to_owned(),
            sampler_arg: None,
            parent: ParentMode::Child,
            queue_size: 2048,
            batch_size: 512,
            export_interval: Duration::from_secs(5),
            export_timeout: Duration::from_secs(10),
        }
    }
}

impl TraceSettings {
    /// Whether traces are exported.
    pub fn enabled(&self) -> bool {
        self.has_endpoint() && self.exporters().any(|exporter| exporter == "otlp")
    }

    /// Whether a collector is named, by either key.
    fn has_endpoint(&self) -> bool {
        self.endpoint.is_some() || self.traces_endpoint.is_some()
    }

    /// The exporters named, as `OTEL_TRACES_EXPORTER` lists them.
    fn exporters(&self) -> impl Iterator<Item = &str> {
        self.exporter.split(',').map(str::trim)
    }

    /// Where spans are sent: `traces_endpoint` as it is, or `endpoint`
    /// with `/v1/traces`.
    pub fn traces_url(&self) -> Option<String> {
        if !self.enabled() {
            return None;
        }
        self.traces_endpoint.clone().or_else(|| {
            self.endpoint
                .as_deref()
                .map(|endpoint| format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        })
    }

    /// The section's rules, checked only when an endpoint is set: the
    /// standard variables that a platform may set for other services'
    /// SDKs never stop a worker that does not trace. Keys are within the
    /// section.
    pub fn validate(&self) -> Result<(), Refusal> {
        if !self.has_endpoint() {
            return Ok(());
        }
        if !self
            .exporters()
            .all(|exporter| ["otlp", "none"].contains(&exporter))
        {
            return Err(Refusal::new(
                "exporter",
                "must be otlp or none (other exporters are not built in)",
            ));
        }
        for (key, url) in [
            ("endpoint", &self.endpoint),
            ("traces_endpoint", &self.traces_endpoint),
        ] {
            if let Some(url) = url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(Refusal::new(
                    key,
                    "must be an http:// or https:// URL of an OTLP/HTTP collector (port 4318 by convention)",
                ));
            }
        }
        match self.protocol.as_str() {
            "http/protobuf" => {}
            "grpc" => {
                return Err(Refusal::new(
                    "protocol",
                    "gRPC is not built in: point tracing.endpoint at the collector's OTLP/HTTP port (4318) and use http/protobuf",
                ));
            }
            _ => return Err(Refusal::new("protocol", "must be http/protobuf")),
        }
        if !SAMPLERS.contains(&self.sampler.as_str()) {
            return Err(Refusal::new(
                "sampler",
                format!("must be one of {}", SAMPLERS.join(", ")),
            ));
        }
        if let Some(ratio) = self.sampler_arg
            && !(0.0..=1.0).contains(&ratio)
        {
            return Err(Refusal::new("sampler_arg", "must be a ratio from 0 to 1"));
        }
        if self.queue_size == 0 {
            return Err(Refusal::new("queue_size", "must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(Refusal::new("batch_size", "must be at least 1"));
        }
        if self.export_interval.is_zero() {
            return Err(Refusal::new("export_interval_ms", "must be at least 1"));
        }
        if self.export_timeout.is_zero() {
            return Err(Refusal::new("export_timeout_ms", "must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_off_and_valid() {
        let settings = TraceSettings::default();
        assert!(!settings.enabled());
        assert!(settings.validate().is_ok());
    }

    #[test]
    fn a_queue_smaller_than_the_default_batch_is_accepted() {
        let settings = TraceSettings {
            endpoint: Some("http://collector:4318".to_owned()),
            queue_size: 100,
            ..TraceSettings::default()
        };
        assert!(settings.validate().is_ok());
        let no_batch = TraceSettings {
            batch_size: 0,
            ..settings
        };
        assert_eq!(no_batch.validate().unwrap_err().key, "batch_size");
    }

    #[test]
    fn the_traces_path_is_appended_once() {
        let settings = TraceSettings {
            endpoint: Some("http://collector:4318/".to_owned()),
            ..TraceSettings::default()
        };
        assert_eq!(
            settings.traces_url().as_deref(),
            Some("http://collector:4318/v1/traces")
        );
    }

    #[test]
    fn the_traces_endpoint_is_used_as_it_is_and_wins() {
        let settings = TraceSettings {
            endpoint: Some("http://collector:4318".to_owned()),
            traces_endpoint: Some("https://traces.example.com/otlp/spans".to_owned()),
            ..TraceSettings::default()
        };
        assert_eq!(
            settings.traces_url().as_deref(),
            Some("https://traces.example.com/otlp/spans")
        );
        let alone = TraceSettings {
            endpoint: None,
            ..settings.clone()
        };
        assert!(alone.enabled() && alone.validate().is_ok());
        assert_eq!(alone.traces_url(), settings.traces_url());
        let not_a_url = TraceSettings {
            traces_endpoint: Some("collector:4318".to_owned()),
            ..alone
        };
        assert_eq!(not_a_url.validate().unwrap_err().key, "traces_endpoint");
    }

    #[test]
    fn the_exporter_none_switches_traces_off_despite_an_endpoint() {
        let settings = TraceSettings {
            endpoint: Some("http://collector:4318".to_owned()),
            exporter: "none".to_owned(),
            ..TraceSettings::default()
        };
        assert!(!settings.enabled());
        assert_eq!(settings.traces_url(), None);
    }

    #[test]
    fn without_an_endpoint_nothing_is_refused() {
        let settings = TraceSettings {
            protocol: "grpc".to_owned(),
            sampler: "jaeger_remote".to_owned(),
            ..TraceSettings::default()
        };
        assert!(settings.validate().is_ok());
    }

    #[test]
    fn an_exporter_list_with_otlp_traces() {
        let settings = TraceSettings {
            endpoint: Some("http://collector:4318".to_owned()),
            exporter: "otlp, none".to_owned(),
            ..TraceSettings::default()
        };
        assert!(settings.enabled() && settings.validate().is_ok());
        let console = TraceSettings {
            exporter: "otlp,console".to_owned(),
            ..settings
        };
        assert_eq!(console.validate().unwrap_err().key, "exporter");
    }

    #[test]
    fn grpc_is_refused_with_what_to_do_instead() {
        let settings = TraceSettings {
            endpoint: Some("http://collector:4317".to_owned()),
            protocol: "grpc".to_owned(),
            ..TraceSettings::default()
        };
        let refusal = settings.validate().unwrap_err();
        assert_eq!(refusal.key, "protocol");
        assert!(refusal.reason.contains("4318"), "{}", refusal.reason);
    }

    #[test]
    fn a_ratio_outside_zero_to_one_is_refused() {
        let settings = TraceSettings {
            endpoint: Some("http://collector:4318".to_owned()),
            sampler: "traceidratio".to_owned(),
            sampler_arg: Some(1.5),
            ..TraceSettings::default()
        };
        assert_eq!(settings.validate().unwrap_err().key, "sampler_arg");
    }
}
