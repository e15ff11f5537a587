//! The `{{project-name}}` binary: reads the flags, loads the settings, starts
//! logging and runs the worker. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use figment::value::Value;

use {{crate_name}}::admin::{self, Admin, Documents, TrimTo};
use {{crate_name}}::business_logic::BusinessLogic;
use {{crate_name}}::error::report;
{%- unless add_metrics %}
use {{crate_name}}::heartbeat::{self, Heartbeat};
{%- endunless %}
use {{crate_name}}::settings::{self, Loaded, Overrides};
use {{crate_name}}::{Worker, shutdown, telemetry};

/// The heading of the options every command takes, so that a command's
/// `--help` shows its own options apart from them.
const GLOBAL: &str = "Global options";

/// {{description}}
#[derive(Debug, Parser)]
#[command(version, about)]
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
    {%- if add_metrics %}
    Healthcheck {
        /// Milliseconds to wait for /healthz to answer.
        #[arg(long, value_name = "MS", default_value_t = 3_000)]
        timeout_ms: u64,
    },
    {%- else %}
    Healthcheck,
    {%- endif %}
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
    fn request(self) -> anyhow::Result<admin::TrimRequest> {
        let to = match (self.maxlen, self.minid, self.max_age) {
            (Some(keep), _, _) => TrimTo::MaxLen(keep),
            (_, Some(id), _) => TrimTo::MinId(id),
            (_, _, Some(age)) => {
                TrimTo::MaxAge(admin::parse_age(&age).map_err(anyhow::Error::msg)?)
            }
            _ => anyhow::bail!("say what to keep: --maxlen N, --minid ID or --max-age AGE"),
        };
        Ok(admin::TrimRequest {
            to,
            exact: self.exact,
            force: self.force,
            dry_run: self.dry_run,
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let loaded = match settings::load(cli.config.as_deref(), std::env::vars(), cli.overrides()) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let redactor = loaded.settings.redis.redactor();
    match dispatch(cli.command.unwrap_or(Command::Run), &loaded).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Library errors may echo the URL or the password: scrubbed.
            eprintln!("error: {}", redactor.scrub(&report(error.as_ref())));
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command, loaded: &Loaded) -> anyhow::Result<()> {
    let settings = &loaded.settings;
    if !matches!(command, Command::Run) {
        for warning in &loaded.warnings {
            eprintln!("warning: {warning}");
        }
    }
    match command {
        Command::Run => run(loaded).await?,
        Command::Config => print!("{}", admin::ConfigReport(loaded)),
        Command::Status(args) => {
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
            let mut admin = Admin::connect(settings).await?;
            print!("{}", admin.send_documents(documents).await?);
        }
        Command::Dlq { command } => {
            let mut admin = Admin::connect(settings).await?;
            match command {
                DlqCommand::List { count, json } => {
                    print!("{}", admin.list_dead_letters(count, json).await?);
                }
                DlqCommand::Replay { ids, dry_run } => {
                    print!("{}", admin.replay_dead_letters(&ids, dry_run).await?);
                }
                DlqCommand::Purge { yes } => print!("{}", admin.purge_dead_letters(yes).await?),
            }
        }
        Command::Trim(args) => {
            let request = args.request()?;
            let mut admin = Admin::connect(settings).await?;
            print!("{}", admin.trim(&request).await?);
        }
        {%- if add_metrics %}
        Command::Healthcheck { timeout_ms } => {
            let timeout = Duration::from_millis(timeout_ms);
            {{crate_name}}::metrics::probe_health(&settings.modules.metrics.addr, timeout).await?;
        }
        {%- else %}
        Command::Healthcheck => {
            let heartbeat = &settings.modules.heartbeat;
            let allowed = heartbeat.allowed_age(settings.redis.block_timeout);
            heartbeat::check(&heartbeat.file, allowed)?;
        }
        {%- endif %}
    }
    Ok(())
}

/// Consumes the stream until SIGTERM or SIGINT.
async fn run(loaded: &Loaded) -> anyhow::Result<()> {
    let settings = &loaded.settings;
    telemetry::init(
        &settings.log_level,
        settings.log_format,
        settings.redis.redactor(),
    )?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let logic = BusinessLogic::new(settings)
        .await
        .map_err(|error| anyhow::anyhow!("starting the business logic: {error}"))?;
    let mut worker = Worker::new(settings, logic)?;
    // The message only: its sources repeat the same text.
    worker.verify_tls().await.map_err(|error| {
        anyhow::anyhow!(
            "Redis's TLS handshake failed ({error}); check the certificates and redis.tls_* settings"
        )
    })?;
    {%- if add_metrics %}
    let worker = {{crate_name}}::metrics::attach(settings, worker).await?;
    {%- else %}
    // The heartbeat file that `healthcheck` reads.
    let worker = worker.with_observer(std::sync::Arc::new(Heartbeat::new(
        &settings.modules.heartbeat.file,
    )));
    {%- endif %}

    worker.run(shutdown::signals()).await?;
    Ok(())
}
