//! The `{{project-name}}` binary: reads the flags, loads the settings, starts
//! logging and runs the worker. Everything else lives in the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
{%- if add_metrics %}
use std::sync::Arc;
{%- endif %}
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use figment::value::Value;
use indicatif::{ProgressBar, ProgressDrawTarget};

use {{crate_name}}::admin::{Admin, Trend, TrimTo, parse_age};
use {{crate_name}}::business_logic::BusinessLogic;
{%- if add_metrics %}
use {{crate_name}}::metrics::{self, Metrics};
{%- endif %}
use {{crate_name}}::settings::{self, Overrides, Settings};
use {{crate_name}}::{Worker, shutdown, telemetry};

/// {{description}}
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Config file (`.yaml`, `.yml` or `.toml`).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Redis URL (`REDIS_URL`).
    #[arg(long, global = true, value_name = "URL")]
    redis_url: Option<String>,
    /// Stream to consume (`REDIS_STREAM`).
    #[arg(long, global = true)]
    stream: Option<String>,
    /// Consumer group (`REDIS_CONSUMER_GROUP`).
    #[arg(long, global = true)]
    group: Option<String>,
    /// This consumer's name (`REDIS_CONSUMER_NAME`); default `<host>-<pid>`.
    #[arg(long, global = true)]
    consumer: Option<String>,
    /// Entries processed at once (`WORKER_CONCURRENCY`).
    #[arg(long, global = true)]
    concurrency: Option<u64>,
    /// Entries per read (`WORKER_BATCH_SIZE`).
    #[arg(long, global = true)]
    batch_size: Option<u64>,
    /// Log level (`LOG_LEVEL`).
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// Log format, `pretty` or `json` (`LOG_FORMAT`).
    #[arg(long, global = true)]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume the stream (the default).
    Run,
    /// Show the stream, its groups, consumers and dead letters.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Refresh in place, with processing rates and lag trend.
        #[arg(long, conflicts_with = "json")]
        watch: bool,
        /// Seconds between refreshes with --watch.
        #[arg(long, default_value_t = 2)]
        interval: u64,
    },
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
    /// Trim the stream; refuses to drop entries a group has not processed.
    Trim(TrimArgs),
    /// Print the effective settings and where each came from.
    Config,
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
    /// List dead letters with their reason and original ID.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Move dead letters back onto the stream (all, or the given IDs).
    Replay {
        /// Dead-letter IDs, as `dlq list` shows them; none: all.
        ids: Vec<String>,
    },
    /// Delete every dead letter.
    Purge {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

impl Cli {
    fn overrides(&self) -> Overrides {
        let text =
            |key, value: &Option<String>| value.clone().map(|value| (key, Value::from(value)));
        let number = |key, value: Option<u64>| value.map(|value| (key, Value::from(value)));
        [
            text("redis.url", &self.redis_url),
            text("redis.stream", &self.stream),
            text("redis.consumer_group", &self.group),
            text("redis.consumer_name", &self.consumer),
            number("worker.concurrency", self.concurrency),
            number("worker.batch_size", self.batch_size),
            text("log_level", &self.log_level),
            text("log_format", &self.log_format),
        ]
        .into_iter()
        .flatten()
        .collect()
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
    let settings = &loaded.settings;
    let outcome = match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(settings).await,
        Command::Config => {
            print_config(&loaded);
            Ok(())
        }
        Command::Status {
            json,
            watch,
            interval,
        } => status(settings, json, watch, interval).await,
        Command::Send { document, count } => send(settings, document, count).await,
        Command::Dlq { command } => dlq(settings, command).await,
        Command::Trim(request) => trim(settings, request).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: &Settings) -> anyhow::Result<()> {
    telemetry::init(&settings.log_level, settings.log_format)?;
    let logic = BusinessLogic::new(settings)
        .await
        .map_err(|error| anyhow::anyhow!("starting the business logic: {error}"))?;
    let worker = Worker::new(settings, logic)?;
    {%- if add_metrics %}

    // Metrics: count the worker's events and serve them with the health checks.
    let observer = Arc::new(Metrics::new(&settings.worker_name, worker.names()));
    let redis = redis::Client::open(settings.redis.url.expose())?;
    let names = worker.names().clone();
    metrics::serve(&settings.metrics, observer.clone(), redis, names).await?;
    let worker = worker.with_observer(observer);
    {%- endif %}

    worker.run(shutdown::signals()).await;
    Ok(())
}

async fn status(
    settings: &Settings,
    json: bool,
    watch_it: bool,
    interval: u64,
) -> anyhow::Result<()> {
    let mut admin = Admin::connect(settings).await?;
    if watch_it {
        return watch(&mut admin, Duration::from_secs(interval.max(1))).await;
    }
    let status = admin.status().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{status}");
    }
    Ok(())
}

async fn send(
    settings: &Settings,
    document: Option<String>,
    count: Option<usize>,
) -> anyhow::Result<()> {
    let documents = match (document, count) {
        (Some(document), _) => vec![document],
        (None, Some(count)) => samples(count),
        (None, None) => std::io::stdin()
            .lines()
            .filter(|line| line.as_ref().map_or(true, |line| !line.trim().is_empty()))
            .collect::<Result<_, _>>()?,
    };
    let mut admin = Admin::connect(settings).await?;
    let bar = ProgressBar::new(documents.len() as u64);
    if documents.len() < 10_000 {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let sent = admin
        .send(&documents, |sent| bar.set_position(sent as u64))
        .await?;
    bar.finish_and_clear();
    println!("added {sent} entries to {}", settings.redis.stream);
    Ok(())
}

async fn dlq(settings: &Settings, command: DlqCommand) -> anyhow::Result<()> {
    let mut admin = Admin::connect(settings).await?;
    match command {
        DlqCommand::List { count, json } => {
            let letters = admin.dead_letters(count).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&letters)?);
                return Ok(());
            }
            for letter in letters {
                println!(
                    "{}  original {}  deliveries {}  reason: {}",
                    letter.id, letter.original_id, letter.deliveries, letter.reason
                );
                for (name, value) in &letter.fields {
                    println!("    {name} = {value}");
                }
            }
        }
        DlqCommand::Replay { ids } => {
            let replayed = admin.replay(&ids).await?;
            println!(
                "moved {} dead letters back onto {}",
                replayed.len(),
                settings.redis.stream
            );
        }
        DlqCommand::Purge { yes } => {
            let stream = settings.dead_letter_stream();
            if !yes && !confirm(&format!("Delete every dead letter in {stream}?"))? {
                anyhow::bail!("not confirmed; nothing deleted (use --yes to skip the question)");
            }
            println!(
                "deleted {} dead letters from {stream}",
                admin.purge().await?
            );
        }
    }
    Ok(())
}

async fn trim(settings: &Settings, request: TrimArgs) -> anyhow::Result<()> {
    let to = match (request.maxlen, request.minid, request.max_age) {
        (Some(keep), _, _) => TrimTo::MaxLen(keep),
        (_, Some(id), _) => TrimTo::MinId(id),
        (_, _, Some(age)) => TrimTo::MaxAge(parse_age(&age).map_err(anyhow::Error::msg)?),
        _ => anyhow::bail!("say what to keep: --maxlen N, --minid ID or --max-age AGE"),
    };
    let mut admin = Admin::connect(settings).await?;
    let report = admin
        .trim(&to, request.exact, request.force, request.dry_run)
        .await?;
    let (verb, count) = if request.dry_run {
        ("dry run: would remove", report.would_drop)
    } else {
        ("removed", report.removed)
    };
    println!(
        "{verb} {count} entries (at most {} dropped, {} of them not yet processed by every group)",
        report.would_drop, report.unprocessed
    );
    Ok(())
}

async fn watch(admin: &mut Admin, interval: Duration) -> anyhow::Result<()> {
    let mut previous = (admin.status().await?, Instant::now());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown::signals() => return Ok(()),
        }
        let status = admin.status().await?;
        let trend = Trend::between(&previous.0, &status, previous.1.elapsed());
        print!("\x1b[2J\x1b[H{status}");
        for group in &status.groups {
            let acked = trend.acked_per_sec.get(&group.name).copied().unwrap_or(0.0);
            let lag = trend.lag_per_sec.get(&group.name).copied().unwrap_or(0.0);
            let arrow = if lag > 0.5 {
                "growing"
            } else if lag < -0.5 {
                "shrinking"
            } else {
                "steady"
            };
            println!(
                "\n{}: {acked:.0} acknowledged/s, lag {arrow} ({lag:+.0}/s)",
                group.name
            );
        }
        println!("\nrefreshing every {}s; Ctrl-C to stop", interval.as_secs());
        previous = (status, Instant::now());
    }
}

fn samples(count: usize) -> Vec<String> {
    (0..count)
        .map(|n| {
            serde_json::json!({ "n": n, "user_id": format!("user-{}", n % 100), "action": "sample" })
                .to_string()
        })
        .collect()
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn print_config(loaded: &settings::Loaded) {
    let Ok(tree) = serde_json::to_value(&loaded.settings) else {
        return;
    };
    let mut lines = Vec::new();
    flatten("", &tree, &mut lines);
    let width = lines
        .iter()
        .map(|(key, value)| key.len() + value.len())
        .max()
        .unwrap_or(0);
    for (key, value) in lines {
        let pad = width - key.len() - value.len();
        println!("{key} = {value}{:pad$}   # {}", "", loaded.source_of(&key));
    }
}

fn flatten(prefix: &str, value: &serde_json::Value, lines: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                let key = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&key, value, lines);
            }
        }
        serde_json::Value::Null => lines.push((prefix.to_owned(), "(unset)".to_owned())),
        serde_json::Value::String(text) => lines.push((prefix.to_owned(), text.clone())),
        other => lines.push((prefix.to_owned(), other.to_string())),
    }
}
