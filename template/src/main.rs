//! The `{{project-name}}` binary: reads the flags, loads the settings, starts
//! logging and runs the worker. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
{%- if add_metrics %}
use std::sync::Arc;
{%- endif %}

use clap::{Parser, Subcommand};
use figment::value::Value;

use {{crate_name}}::business_logic::BusinessLogic;
{%- if add_metrics %}
use {{crate_name}}::metrics::{self, Metrics};
{%- endif %}
use {{crate_name}}::settings::{self, Overrides};
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
    /// Print the effective settings and where each came from.
    Config,
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
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => match run(loaded.settings).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Config => {
            print_config(&loaded);
            ExitCode::SUCCESS
        }
    }
}

async fn run(settings: settings::Settings) -> anyhow::Result<()> {
    telemetry::init(&settings.log_level, settings.log_format)?;
    let logic = BusinessLogic::new(&settings)
        .await
        .map_err(|error| anyhow::anyhow!("starting the business logic: {error}"))?;
    let worker = Worker::new(&settings, logic)?;
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
