//! Prometheus metrics and health endpoints, served over HTTP on
//! `metrics.addr` (`METRICS_ADDR`):
//!
//! - `GET /metrics`: counters, the processing-time histogram and the
//!   in-flight gauge, each labelled with worker, stream, group and consumer;
//! - `GET /healthz`: the worker's loop is alive: 503 once it has made no
//!   progress for longer than the processing timeout plus a margin (a
//!   handler blocking its thread, a deadlock), so a supervisor restarts it;
//! - `GET /readyz`: Redis answers and the consumer group exists.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use redis::streams::StreamInfoGroup;

use crate::connection::{Connection, Connector};
use crate::consumer::Names;
use crate::error::connection_failed;
use crate::observe::{Observer, Outcome, Progress};
pub use crate::settings::MetricsSettings;

/// Why the endpoints could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The Redis URL cannot be used.
    #[error(transparent)]
    Redis(#[from] crate::error::Error),
    /// Another process listens there already; most often another worker on
    /// the same host, started with the same `METRICS_ADDR`.
    #[error(
        "cannot listen on {addr} (METRICS_ADDR): another process, perhaps another worker on this \
         host, listens there already; give each process its own METRICS_ADDR, such as \
         METRICS_ADDR=127.0.0.1:9465, or METRICS_ADDR=127.0.0.1:0 for any free port"
    )]
    AddrInUse {
        /// The address.
        addr: String,
    },
    /// The address is not ours, or the system refused for another reason.
    #[error("cannot listen on {addr} (METRICS_ADDR)")]
    Bind {
        /// The address.
        addr: String,
        /// What the system said.
        source: std::io::Error,
    },
}

/// The worker's metrics; an [`Observer`] that counts what the worker reports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    processed: Counter,
    failed: Counter,
    dead_lettered: Counter,
    dead_letters_refused: Counter,
    claimed: Counter,
    retried: Counter,
    reconnects: Counter,
    in_flight: Gauge,
    lag: Gauge,
    pending: Gauge,
    processing_seconds: Histogram,
}

impl Metrics {
    /// Metrics labelled with the worker's name and place in the group.
    pub fn new(worker: &str, names: &Names) -> Self {
        let labels = [
            ("worker", worker),
            ("stream", &names.stream),
            ("group", &names.group),
            ("consumer", &names.consumer),
        ]
        .map(|(name, value)| (Cow::Borrowed(name), Cow::Owned(value.to_owned())));
        let mut registry = Registry::with_prefix_and_labels("worker", labels.into_iter());
        let metrics = Self {
            processed: Counter::default(),
            failed: Counter::default(),
            dead_lettered: Counter::default(),
            dead_letters_refused: Counter::default(),
            claimed: Counter::default(),
            retried: Counter::default(),
            reconnects: Counter::default(),
            in_flight: Gauge::default(),
            lag: Gauge::default(),
            pending: Gauge::default(),
            // 100 µs to about 3.3 s.
            processing_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            registry: Registry::default(),
        };
        let register = [
            (
                "messages_processed",
                "Entries processed successfully",
                &metrics.processed,
            ),
            (
                "messages_failed",
                "Failed deliveries (retried or dead-lettered)",
                &metrics.failed,
            ),
            (
                "messages_dead_lettered",
                "Entries written to the dead-letter stream",
                &metrics.dead_lettered,
            ),
            (
                "dead_letter_writes_refused",
                "Dead letters Redis refused to write (their entries stay pending and are tried again)",
                &metrics.dead_letters_refused,
            ),
            (
                "messages_claimed",
                "Entries taken over from idle consumers",
                &metrics.claimed,
            ),
            (
                "messages_retried",
                "Failed entries delivered again",
                &metrics.retried,
            ),
            (
                "redis_reconnects",
                "Redis connections lost and remade",
                &metrics.reconnects,
            ),
        ];
        for (name, help, counter) in register {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "group_lag",
            "Entries not yet delivered to the group (sampled)",
            metrics.lag.clone(),
        );
        registry.register(
            "group_pending",
            "Entries delivered to the group and not yet acknowledged (sampled)",
            metrics.pending.clone(),
        );
        registry.register(
            "messages_in_flight",
            "Entries being processed now",
            metrics.in_flight.clone(),
        );
        registry.register(
            "message_processing_seconds",
            "Time the business logic took per entry",
            metrics.processing_seconds.clone(),
        );
        registry.register_collector(Box::new(SpansDropped));
        Self {
            registry,
            ..metrics
        }
    }

    /// Records the group's lag and pending count, as `XINFO GROUPS` reports them.
    pub fn sample_group(&self, lag: Option<usize>, pending: usize) {
        if let Some(lag) = lag {
            self.lag.set(i64::try_from(lag).unwrap_or(i64::MAX));
        }
        self.pending.set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

impl Observer for Metrics {
    fn processed(&self, outcome: Outcome, elapsed: Duration) {
        self.processing_seconds.observe(elapsed.as_secs_f64());
        match outcome {
            Outcome::Succeeded => self.processed.inc(),
            Outcome::Retrying | Outcome::DeadLettered => self.failed.inc(),
        };
    }

    fn dead_lettered(&self, count: usize) {
        self.dead_lettered.inc_by(count as u64);
    }

    fn dead_letters_refused(&self, count: usize) {
        self.dead_letters_refused.inc_by(count as u64);
    }

    fn claimed(&self, count: usize) {
        self.claimed.inc_by(count as u64);
    }

    fn retried(&self, count: usize) {
        self.retried.inc_by(count as u64);
    }

    fn in_flight(&self, count: usize) {
        self.in_flight.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    fn reconnecting(&self) {
        self.reconnects.inc();
    }
}

/// `worker_trace_spans_dropped_total`: the spans the trace export dropped
/// (see [`crate::otel::export`]), read at each scrape.
#[derive(Debug)]
struct SpansDropped;

impl Collector for SpansDropped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new(crate::otel::spans_dropped());
        let metric = encoder.encode_descriptor(
            "trace_spans_dropped",
            "Trace spans dropped: the export queue was full or the collector failed",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    group: Arc<GroupProbe>,
    progress: Arc<Progress>,
}

/// Asks Redis about the consumer group, for the sampler and `/readyz`, on
/// one kept connection.
struct GroupProbe {
    connector: Connector,
    names: Names,
    connection: tokio::sync::Mutex<Option<Connection>>,
}

impl GroupProbe {
    fn new(connector: Connector, names: Names) -> Self {
        Self {
            connector,
            names,
            connection: tokio::sync::Mutex::default(),
        }
    }

    /// The group's line of `XINFO GROUPS`; `None` if the stream or group is
    /// missing. A kept connection that fails is replaced and the question
    /// asked once more, so a Redis that came back is seen at once.
    async fn group_info(&self) -> redis::RedisResult<Option<StreamInfoGroup>> {
        let mut kept = self.connection.lock().await;
        if let Some(connection) = kept.as_mut() {
            match group_info(connection, &self.names).await {
                Err(error) if connection_failed(&error) => *kept = None,
                answer => return answer,
            }
        }
        let connection = kept.insert(self.connector.connect(PROBE_TIMEOUT).await?);
        let answer = group_info(connection, &self.names).await;
        if matches!(&answer, Err(error) if connection_failed(error)) {
            *kept = None;
        }
        answer
    }
}

/// Starts the HTTP endpoints in the background; returns the address they
/// listen on.
pub async fn serve(
    settings: &MetricsSettings,
    metrics: Arc<Metrics>,
    redis: Connector,
    names: Names,
    progress: Arc<Progress>,
) -> Result<SocketAddr, MetricsError> {
    let bind_error = |source: std::io::Error| {
        let addr = settings.addr.clone();
        if source.kind() == std::io::ErrorKind::AddrInUse {
            MetricsError::AddrInUse { addr }
        } else {
            MetricsError::Bind { addr, source }
        }
    };
    let listener = tokio::net::TcpListener::bind(&settings.addr)
        .await
        .map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    let group = Arc::new(GroupProbe::new(redis, names));
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(alive))
        .route("/readyz", get(ready))
        .with_state(AppState {
            metrics: metrics.clone(),
            group: group.clone(),
            progress,
        });
    tokio::spawn(sample_group(metrics, group));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "metrics server stopped");
        }
    });
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    Ok(addr)
}

/// Why `healthcheck` found the worker unhealthy.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// `METRICS_ADDR` is not an IP address and a port.
    #[error("METRICS_ADDR `{addr}` is not an IP address and a port")]
    NotAnAddress {
        /// The configured address.
        addr: String,
    },
    /// With port 0 the worker picked a port of its own, which nobody else
    /// can know.
    #[error(
        "METRICS_ADDR {addr} has port 0: the worker listens on a port it picked itself; set a fixed port to check its health"
    )]
    AnyPort {
        /// The configured address.
        addr: SocketAddr,
    },
    /// Nothing answers: the worker is not running, or not here.
    #[error("the worker does not answer at http://{addr}/healthz (METRICS_ADDR)")]
    Unreachable {
        /// The address asked.
        addr: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
    /// The connection was made but no answer came in time: the process is
    /// frozen or overloaded.
    #[error("http://{addr}/healthz did not answer within {} ms", timeout.as_millis())]
    Timeout {
        /// The address asked.
        addr: SocketAddr,
        /// How long it waited.
        timeout: Duration,
    },
    /// The worker answered, but not with 200.
    #[error("http://{addr}/healthz answered `{status}`")]
    Unhealthy {
        /// The address asked.
        addr: SocketAddr,
        /// The status line of the answer.
        status: String,
    },
}

/// Asks the worker's `/healthz` on `addr` (`METRICS_ADDR`) and waits up to
/// `timeout` for a `200`. An address on every interface (`0.0.0.0`, `::`)
/// is asked on the loopback, as inside a container.
///
/// A plain HTTP/1.1 exchange: the image needs no HTTP client for it.
pub async fn probe_health(addr: &str, timeout: Duration) -> Result<(), ProbeError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut target: SocketAddr = addr.parse().map_err(|_| ProbeError::NotAnAddress {
        addr: addr.to_owned(),
    })?;
    if target.port() == 0 {
        return Err(ProbeError::AnyPort { addr: target });
    }
    if target.ip().is_unspecified() {
        target.set_ip(match target {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let unreachable = |source| ProbeError::Unreachable {
        addr: target,
        source,
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(target)
            .await
            .map_err(unreachable)?;
        let request =
            format!("GET /healthz HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(unreachable)?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.map_err(unreachable)?;
        Ok(reply)
    };
    let reply = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ProbeError::Timeout {
            addr: target,
            timeout,
        })??;
    let reply = String::from_utf8_lossy(&reply);
    let status = reply.lines().next().unwrap_or("").trim();
    if status.split(' ').nth(1) == Some("200") {
        Ok(())
    } else {
        Err(ProbeError::Unhealthy {
            addr: target,
            status: status.to_owned(),
        })
    }
}

/// How often the group's lag and pending count are sampled.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// How long a question about the group may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Samples the group's lag and pending count until the process ends.
async fn sample_group(metrics: Arc<Metrics>, group: Arc<GroupProbe>) {
    let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match group.group_info().await {
            Ok(Some(group)) => metrics.sample_group(group.lag, group.pending),
            Ok(None) => metrics.sample_group(Some(0), 0),
            Err(error) => tracing::debug!(%error, "cannot sample the group's lag"),
        }
    }
}

async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn alive(State(state): State<AppState>) -> (StatusCode, String) {
    let progress = &state.progress;
    if progress.is_stalled() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the worker has made no progress for {} s (limit {} s)\n",
                progress.since_last().as_secs(),
                progress.limit().as_secs()
            ),
        )
    } else {
        (StatusCode::OK, "ok\n".to_owned())
    }
}

async fn ready(State(state): State<AppState>) -> (StatusCode, String) {
    match state.group.group_info().await {
        Ok(Some(_)) => (StatusCode::OK, "ready\n".to_owned()),
        Ok(None) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "consumer group `{}` does not exist yet\n",
                state.group.names.group
            ),
        ),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Redis unreachable: {error}\n"),
        ),
    }
}

/// The group's line of `XINFO GROUPS`; `None` if the stream or group is missing.
async fn group_info(
    connection: &mut Connection,
    names: &Names,
) -> redis::RedisResult<Option<StreamInfoGroup>> {
    let groups: redis::streams::StreamInfoGroupsReply = match redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&names.stream)
        .query_async(connection)
        .await
    {
        Ok(groups) => groups,
        Err(error) if error.code() == Some("ERR") && error.to_string().contains("no such key") => {
            return Ok(None);
        }
        Err(error) => return Err(error),
    };
    Ok(groups
        .groups
        .into_iter()
        .find(|group| group.name == names.group))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Defaults;

    fn names() -> Names {
        Names {
            stream: "s".into(),
            group: "g".into(),
            consumer: "c".into(),
            dead_letter_stream: "s:dlq".into(),
        }
    }

    #[test]
    fn counts_what_the_worker_reports() {
        let metrics = Metrics::new("w", &names());
        metrics.processed(Outcome::Succeeded, Duration::from_millis(2));
        metrics.processed(Outcome::Succeeded, Duration::from_millis(2));
        metrics.processed(Outcome::Retrying, Duration::from_millis(2));
        metrics.dead_lettered(3);
        metrics.in_flight(7);
        metrics.sample_group(Some(12), 4);
        let text = metrics.render();
        let labels = r#"{worker="w",stream="s",group="g",consumer="c"}"#;
        assert!(
            text.contains(&format!("worker_messages_processed_total{labels} 2")),
            "{text}"
        );
        assert!(
            text.contains(&format!("worker_messages_failed_total{labels} 1")),
            "{text}"
        );
        assert!(
            text.contains(&format!("worker_messages_dead_lettered_total{labels} 3")),
            "{text}"
        );
        assert!(
            text.contains(&format!("worker_messages_in_flight{labels} 7")),
            "{text}"
        );
        assert!(
            text.contains(&format!("worker_group_lag{labels} 12")),
            "{text}"
        );
        assert!(
            text.contains(&format!("worker_group_pending{labels} 4")),
            "{text}"
        );
        assert!(
            text.contains("worker_message_processing_seconds_count"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_probe_wants_a_200_in_time() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            for reply in [
                "HTTP/1.1 200 OK\r\n\r\nok\n",
                "HTTP/1.1 503 Service Unavailable\r\n\r\n",
            ] {
                let (mut stream, _) = listener.accept().await.unwrap();
                let _ = stream.read(&mut [0; 1024]).await.unwrap();
                stream.write_all(reply.as_bytes()).await.unwrap();
            }
            // Accepted, never answered: a frozen worker.
            let _frozen = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
        });
        let timeout = Duration::from_millis(300);
        assert!(probe_health(&addr, timeout).await.is_ok());
        let unhealthy = probe_health(&addr, timeout).await.unwrap_err();
        assert!(
            matches!(&unhealthy, ProbeError::Unhealthy { status, .. } if status.contains("503")),
            "{unhealthy}"
        );
        let frozen = probe_health(&addr, timeout).await.unwrap_err();
        assert!(matches!(frozen, ProbeError::Timeout { .. }), "{frozen}");
        let any_port = probe_health("0.0.0.0:0", timeout).await.unwrap_err();
        assert!(matches!(any_port, ProbeError::AnyPort { .. }), "{any_port}");
        server.abort();
    }

    #[test]
    fn the_address_must_be_host_and_port() {
        assert!(
            MetricsSettings::new(Defaults::BASE.metrics_addr)
                .validate()
                .is_ok()
        );
        let bad = MetricsSettings {
            addr: "localhost".into(),
        };
        assert!(bad.validate().unwrap_err().reason.contains("host:port"));
    }
}
