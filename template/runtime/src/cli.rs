//! The binary's command line: `run` and the operator's commands, with the
//! project's name, version and defaults. A project's `main` is one call,
//! [`main`], naming its business logic.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use figment::value::Value;

use crate::admin::{self, Admin, AdminError, Documents, TrimTo};
use crate::connection::{Unreachable, first_contact};
use crate::error::report;
use crate::handler::{BoxError, Handler, Logic};
use crate::otel::{self, Tracing};
use crate::settings::{self, Defaults, Loaded, Overrides};
use crate::worker::Worker;
use crate::{shutdown, telemetry};

/// What a project tells the runtime about itself.
#[derive(Debug, Clone, Copy)]
pub struct Project {
    /// The binary's name, for `--help` and `--version`:
    /// `env!("CARGO_PKG_NAME")`.
    pub name: &'static str,
    /// The project's version: `env!("CARGO_PKG_VERSION")`.
    pub version: &'static str,
    /// One line for `--help`: `env!("CARGO_PKG_DESCRIPTION")`.
    pub description: &'static str,
    /// The defaults chosen when the project was generated.
    pub defaults: Defaults,
}

/// The runtime's own version, which `--version` prints beside the
/// project's.
pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long the first contact with Redis (connecting, which is a round
/// trip) may take before the operator is told what is wrong.
const FIRST_CONTACT_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs the command line of `project` with the business logic `L`: reads
/// the flags, loads the settings, and runs the worker or the operator's
/// command. Exit codes: 0 done, 1 failed, 2 refused settings or flags.
///
/// Builds its own Tokio runtime, so a project's `main` is not async.
pub fn main<L: Logic>(project: &Project) -> ExitCode {
    // Built once per process; clap keeps it for the process's lifetime.
    let version: &'static str = Box::leak(
        format!(
            "{} (redis-streams-runtime {RUNTIME_VERSION})",
            project.version
        )
        .into_boxed_str(),
    );
    let command = Cli::command()
        .name(project.name)
        .bin_name(project.name)
        .version(version)
        .about(project.description);
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run_cli::<L>(project, cli))
}

async fn run_cli<L: Logic>(project: &Project, cli: Cli) -> ExitCode {
    let loaded = match settings::load_with::<L::Settings>(
        &project.defaults,
        cli.config.as_deref(),
        std::env::vars(),
        cli.overrides(),
    ) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let redactor = loaded.settings.redis.redactor();
    match dispatch::<L>(
        cli.command.unwrap_or(Command::Run),
        &loaded,
        project.version,
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Library errors may echo the URL or the password: scrubbed.
            eprintln!("error: {}", redactor.scrub(&report(error.as_ref())));
            ExitCode::FAILURE
        }
    }
}

/// The heading of the options every command takes, so that a command's
/// `--help` shows its own options apart from them.
const GLOBAL: &str = "Global options";

/// The command line; its name, version and description are the project's
/// (see [`main`]).
#[derive(Debug, Parser)]
struct Cli {
    /// Config file (`.yaml`, `.yml` or `.toml`).
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Redis URL (`REDIS_URL`); for a cluster, seed nodes, comma separated.
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "URL")]
    redis_url: Option<String>,
    /// The URL is a Redis Cluster (`REDIS_CLUSTER`).
    #[arg(long, global = true, help_heading = GLOBAL)]
    cluster: bool,
    /// Stream to consume (`REDIS_STREAM`).
    #[arg(long, global = true, help_heading = GLOBAL)]
    stream: Option<String>,
    /// Consumer group (`REDIS_CONSUMER_GROUP`).
    #[arg(long, global = true, help_heading = GLOBAL)]
    group: Option<String>,
    /// This consumer's name (`REDIS_CONSUMER_NAME`); default `<host>-<pid>-<random>`.
    #[arg(long, global = true, help_heading = GLOBAL)]
    consumer: Option<String>,
    /// Entries processed at once (`WORKER_CONCURRENCY`).
    #[arg(long, global = true, help_heading = GLOBAL)]
    concurrency: Option<u64>,
    /// Entries per read (`WORKER_BATCH_SIZE`).
    #[arg(long, global = true, help_heading = GLOBAL)]
    batch_size: Option<u64>,
    /// Log level (`LOG_LEVEL`).
    #[arg(long, global = true, help_heading = GLOBAL)]
    log_level: Option<String>,
    /// Log format, `pretty` or `json` (`LOG_FORMAT`).
    #[arg(long, global = true, help_heading = GLOBAL)]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume the stream (the default).
    Run,
    /// Show the stream, its groups, consumers and dead letters.
    Status(StatusArgs),
    /// Add test messages: a JSON document, one per line from stdin, or samples.
    Send {
        /// The JSON document for the `data` field; none: read stdin.
        document: Option<String>,
        /// Send this many generated sample messages instead.
        #[arg(long, conflicts_with = "document")]
        count: Option<usize>,
    },
    /// Inspect and handle the dead-letter stream.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Trim the stream at a fixed entry ID; refuses to drop entries a group
    /// has not processed.
    Trim(TrimArgs),
    /// Print the effective settings and where each came from.
    Config,
    /// Exit 0 if the running worker is healthy, 1 with the reason if not
    /// (for HEALTHCHECK and compose).
    #[cfg(feature = "metrics")]
    Healthcheck {
        /// Milliseconds to wait for /healthz to answer.
        #[arg(long, value_name = "MS", default_value_t = 3_000)]
        timeout_ms: u64,
    },
    /// Exit 0 if the running worker is healthy, 1 with the reason if not
    /// (for HEALTHCHECK and compose).
    #[cfg(not(feature = "metrics"))]
    Healthcheck,
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Refresh in place, with processing rates and lag trend.
    #[arg(long, conflicts_with = "json")]
    watch: bool,
    /// Seconds between refreshes with --watch.
    #[arg(long, default_value_t = 2)]
    interval: u64,
}

#[derive(Debug, clap::Args)]
struct TrimArgs {
    /// Keep the newest N entries.
    #[arg(long, value_name = "N", conflicts_with_all = ["minid", "max_age"])]
    maxlen: Option<u64>,
    /// Keep entries from this ID on.
    #[arg(long, value_name = "ID", conflicts_with = "max_age")]
    minid: Option<String>,
    /// Keep entries younger than this (`90s`, `30m`, `24h`, `7d`).
    #[arg(long, value_name = "AGE")]
    max_age: Option<String>,
    /// Trim exactly instead of to the nearest node boundary.
    #[arg(long)]
    exact: bool,
    /// Drop entries even if a group has not processed them.
    #[arg(long)]
    force: bool,
    /// Only say what would be dropped.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// List dead letters with their group, reason and original ID.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Move dead letters back onto the stream, each for the group that
    /// gave up on it only (the given IDs, or all of the group's).
    Replay {
        /// Dead-letter IDs, as `dlq list` shows them; none: every dead
        /// letter of the consumer group (`--group`).
        ids: Vec<String>,
        /// Only say what would be moved.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete every dead letter (asks first).
    Purge {
        /// Do not ask; needed when standard input is not a terminal.
        #[arg(short, long)]
        yes: bool,
    },
}

impl Cli {
    fn overrides(&self) -> Overrides {
        let text = |key, flag, value: &Option<String>| {
            value.clone().map(|value| (key, flag, Value::from(value)))
        };
        let number =
            |key, flag, value: Option<u64>| value.map(|value| (key, flag, Value::from(value)));
        [
            text("redis.url", "--redis-url", &self.redis_url),
            self.cluster
                .then(|| ("redis.cluster", "--cluster", Value::from(true))),
            text("redis.stream", "--stream", &self.stream),
            text("redis.consumer_group", "--group", &self.group),
            text("redis.consumer_name", "--consumer", &self.consumer),
            number("worker.concurrency", "--concurrency", self.concurrency),
            number("worker.batch_size", "--batch-size", self.batch_size),
            text("log_level", "--log-level", &self.log_level),
            text("log_format", "--log-format", &self.log_format),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

impl TrimArgs {
    fn request(self) -> Result<admin::TrimRequest, BoxError> {
        let to = match (self.maxlen, self.minid, self.max_age) {
            (Some(keep), _, _) => TrimTo::MaxLen(keep),
            (_, Some(id), _) => TrimTo::MinId(id),
            (_, _, Some(age)) => TrimTo::MaxAge(admin::parse_age(&age)?),
            _ => return Err("say what to keep: --maxlen N, --minid ID or --max-age AGE".into()),
        };
        Ok(admin::TrimRequest {
            to,
            exact: self.exact,
            force: self.force,
            dry_run: self.dry_run,
        })
    }
}

async fn dispatch<L: Logic>(
    command: Command,
    loaded: &Loaded<L::Settings>,
    version: &str,
) -> Result<(), BoxError> {
    let settings = &loaded.settings;
    if !matches!(command, Command::Run) {
        for warning in &loaded.warnings {
            eprintln!("warning: {warning}");
        }
    }
    match command {
        Command::Run => run::<L>(loaded, version).await?,
        Command::Config => print!("{}", admin::ConfigReport(loaded)),
        Command::Status(args) => {
            reachable(loaded).await?;
            let mut admin = Admin::connect(settings).await?;
            if args.watch {
                let interval = Duration::from_secs(args.interval.max(1));
                admin.watch(interval, &mut std::io::stdout()).await?;
            } else {
                let status = admin.status().await?;
                let report = admin::StatusReport {
                    status,
                    json: args.json,
                };
                print!("{report}");
            }
        }
        Command::Send { document, count } => {
            let documents = match (document, count) {
                (Some(document), _) => Documents::One(document),
                (None, Some(count)) => Documents::Samples(count),
                (None, None) => Documents::Stdin,
            };
            reachable(loaded).await?;
            let mut admin = Admin::connect(settings).await?;
            // The caller's context (TRACEPARENT), continued by a span of
            // send's own when traces are exported.
            let tracing = Tracing::start(&settings.tracing, &settings.worker_name, version)?;
            let mut context = otel::from_environment(std::env::vars());
            if let Some(tracing) = &tracing {
                context = tracing.producer_span(&settings.redis.stream, &context);
            }
            admin.set_trace_context(otel::fields_of(&context));
            let sent = admin.send_documents(documents).await;
            if let Some(tracing) = tracing {
                let error = sent
                    .as_ref()
                    .err()
                    .map(|error| error as &dyn std::fmt::Display);
                Tracing::end_producer_span(&context, error);
                stop_tracing(tracing).await;
            }
            print!("{}", sent?);
        }
        Command::Dlq { command } => {
            reachable(loaded).await?;
            let mut admin = Admin::connect(settings).await?;
            match command {
                DlqCommand::List { count, json } => {
                    print!("{}", admin.list_dead_letters(count, json).await?);
                }
                DlqCommand::Replay { ids, dry_run } => {
                    let replayed = admin.replay_dead_letters(&ids, dry_run).await?;
                    print!("{replayed}");
                    if !dry_run && replayed.kept() > 0 {
                        return Err(AdminError::DeadLettersKept(replayed.kept()).into());
                    }
                }
                DlqCommand::Purge { yes } => print!("{}", admin.purge_dead_letters(yes).await?),
            }
        }
        Command::Trim(args) => {
            let request = args.request()?;
            reachable(loaded).await?;
            let mut admin = Admin::connect(settings).await?;
            print!("{}", admin.trim(&request).await?);
        }
        #[cfg(feature = "metrics")]
        Command::Healthcheck { timeout_ms } => {
            let timeout = Duration::from_millis(timeout_ms);
            crate::metrics::probe_health(&settings.modules.metrics.addr, timeout).await?;
        }
        #[cfg(not(feature = "metrics"))]
        Command::Healthcheck => {
            let heartbeat = &settings.modules.heartbeat;
            let allowed = heartbeat.allowed_age(settings.redis.block_timeout);
            crate::heartbeat::check(&heartbeat.file, allowed)?;
        }
    }
    Ok(())
}

/// Why Redis could not be reached, said for a person.
struct NotReached {
    /// The address tried (without its password), the setting it came from,
    /// what went wrong in plain words, and what to do.
    message: String,
    /// Trying again cannot help: a file named in the settings cannot be
    /// read, or a certificate was refused.
    fatal: bool,
}

impl From<NotReached> for BoxError {
    fn from(not_reached: NotReached) -> Self {
        not_reached.message.into()
    }
}

/// Whether Redis answers at the configured URL; if not, what a newcomer
/// needs to know.
async fn reachable<L>(loaded: &Loaded<L>) -> Result<(), NotReached> {
    let redis = &loaded.settings.redis;
    let Err(error) = first_contact(redis, FIRST_CONTACT_TIMEOUT).await else {
        return Ok(());
    };
    let fatal = !matches!(error, crate::error::Error::Redis(_)) || error.is_certificate_refused();
    let kind = Unreachable::of(&error);
    let source = match loaded.source_of("redis.url").as_str() {
        "default" => "the default; set REDIS_URL to change it".to_owned(),
        source
            if source.starts_with("environment variable") || source.starts_with("command-line") =>
        {
            source.to_owned()
        }
        file => format!("config file {file}"),
    };
    let what = match kind {
        Unreachable::Other => report(&error),
        kind => format!("{} ({})", kind.words(), report(&error)),
    };
    let message = format!(
        "cannot reach Redis at {} (redis.url, from {source}): {what}",
        redis.url.redacted()
    );
    let message = match kind.hint() {
        "" => format!("{message}."),
        hint => format!("{message}. {hint}"),
    };
    Err(NotReached { message, fatal })
}

/// Consumes the stream until SIGTERM or SIGINT.
async fn run<L: Logic>(loaded: &Loaded<L::Settings>, version: &str) -> Result<(), BoxError> {
    let settings = &loaded.settings;
    let tracing = Tracing::start(&settings.tracing, &settings.worker_name, version)?;
    telemetry::init(
        &settings.log_level,
        settings.log_format,
        settings.redis.redactor(),
        tracing.as_ref().map(Tracing::tracer),
    )?;
    let result = run_worker::<L>(loaded, tracing.as_ref()).await;
    if let Some(tracing) = tracing {
        stop_tracing(tracing).await;
    }
    result
}

/// Sends the spans still queued, on a thread of its own: the export is
/// blocking. Bounded, so an unreachable collector delays the exit by a
/// few seconds at most.
async fn stop_tracing(tracing: Tracing) {
    let _ = tokio::task::spawn_blocking(move || tracing.shutdown(TRACES_AT_EXIT)).await;
}

/// How long the spans still queued at exit may take to be sent.
const TRACES_AT_EXIT: Duration = Duration::from_secs(5);

/// The worker's life, after logging and tracing are set up.
async fn run_worker<L: Logic>(
    loaded: &Loaded<L::Settings>,
    tracing: Option<&Tracing>,
) -> Result<(), BoxError> {
    let settings = &loaded.settings;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    // Said once, clearly; the worker then keeps trying, quietly, unless
    // trying again cannot help.
    if let Err(unreachable) = reachable(loaded).await {
        if unreachable.fatal {
            return Err(unreachable.message.into());
        }
        tracing::warn!("{} The worker keeps trying meanwhile.", unreachable.message);
    }
    let logic = L::build(&loaded.logic)
        .await
        .map_err(|error| format!("starting the business logic: {error}"))?;
    let mut worker = Worker::new(settings, logic)?;
    if let Some(tracing) = tracing {
        worker = worker.with_tracing(tracing);
    }
    // The message only: its sources repeat the same text.
    worker.verify_tls().await.map_err(|error| {
        format!(
            "Redis's TLS handshake failed ({error}); check the certificates and redis.tls_* settings"
        )
    })?;
    let worker = observe(settings, worker).await?;

    worker.run(shutdown::signals()).await?;
    Ok(())
}

/// Counts `worker`'s events and serves them, with the health checks, on
/// `metrics.addr`: the worker's whole metrics wiring.
#[cfg(feature = "metrics")]
async fn observe<H: Handler>(
    settings: &settings::Settings,
    worker: Worker<H>,
) -> Result<Worker<H>, BoxError> {
    let metrics = Arc::new(crate::metrics::Metrics::new(
        &settings.worker_name,
        worker.names(),
    ));
    let connector = crate::connection::Connector::new(&settings.redis)?;
    let names = worker.names().clone();
    let progress = worker.progress();
    crate::metrics::serve(
        &settings.modules.metrics,
        metrics.clone(),
        connector,
        names,
        progress,
    )
    .await?;
    Ok(worker.with_observer(metrics))
}

/// Touches the heartbeat file that `healthcheck` reads as `worker` goes
/// round.
#[cfg(not(feature = "metrics"))]
async fn observe<H: Handler>(
    settings: &settings::Settings,
    worker: Worker<H>,
) -> Result<Worker<H>, BoxError> {
    let heartbeat = crate::heartbeat::Heartbeat::new(&settings.modules.heartbeat.file);
    Ok(worker.with_observer(Arc::new(heartbeat)))
}
