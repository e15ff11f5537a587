//! Drain throughput: a pre-filled stream drained by a worker, and by a
//! minimal reference consumer in this process for comparison. The default
//! worker also drains on a local three-master cluster and over TLS, next to
//! its plain standalone drain of the same run.

use std::thread;
use std::time::{Duration, Instant};

use redis::Value;

use crate::builds::Built;
use crate::common::cluster::RedisCluster;
use crate::common::tls::Certificates;
use crate::common::{RedisOptions, RedisServer, unused_port};
use crate::options::Options;
use crate::report::{mib, thousands};
use crate::usage::{CpuUse, CpuWatch, status_kb};
use crate::workload::{
    DRAIN_POLL, GROUP, STREAM, drained, group_info, prefill, spawn_worker, stop,
};

/// `COUNT` of the reference consumer's reads.
pub const REFERENCE_COUNT: usize = 1_000;
/// The longest one drain may take before the benchmark gives up.
const DRAIN_DEADLINE: Duration = Duration::from_secs(900);

/// The drains of every run, per consumer, in run order.
#[derive(Debug, Default)]
pub struct Drains {
    pub reference: Vec<Drain>,
    /// `bench-default` (validation on).
    pub default: Vec<Drain>,
    /// `bench-default` logging at info as JSON ([`INFO_JSON`]).
    pub default_info_json: Vec<Drain>,
    /// `bench-raw` (validation off).
    pub raw: Vec<Drain>,
    /// The `--extra-worker` binary.
    pub extra: Vec<Drain>,
    /// `bench-default` on a three-master cluster.
    pub cluster: Vec<Drain>,
    /// `bench-default` over TLS to one Redis.
    pub tls: Vec<Drain>,
    /// `bench-default` exporting a trace of every entry.
    pub traced_all: Vec<Drain>,
    /// `bench-default` exporting traces of 1 % of the entries.
    pub traced_sampled: Vec<Drain>,
}

/// The Redis a worker drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One redis-server, plain TCP.
    Standalone,
    /// One redis-server, `rediss://` with a private CA.
    Tls,
    /// A local cluster of three masters; the stream lives on one of them.
    Cluster,
}

/// A running Redis of a [`Topology`], and what the worker needs to reach it.
enum BenchRedis {
    Standalone(RedisServer),
    Tls {
        server: RedisServer,
        tls_port: u16,
        certificates: Certificates,
    },
    Cluster(RedisCluster),
}

impl BenchRedis {
    fn start(topology: Topology) -> BenchRedis {
        match topology {
            Topology::Standalone => BenchRedis::Standalone(RedisServer::start()),
            Topology::Tls => {
                let certificates = Certificates::generate();
                let tls_port = unused_port();
                let server = RedisServer::start_with_args(
                    RedisOptions::default(),
                    certificates.server_args(tls_port, "no"),
                );
                BenchRedis::Tls {
                    server,
                    tls_port,
                    certificates,
                }
            }
            Topology::Cluster => BenchRedis::Cluster(RedisCluster::start(3)),
        }
    }

    /// The server that holds the stream, for pre-filling and polling in
    /// plain text.
    fn data_node(&self) -> &RedisServer {
        match self {
            BenchRedis::Standalone(server) | BenchRedis::Tls { server, .. } => server,
            BenchRedis::Cluster(cluster) => {
                let owner = cluster.owner(STREAM);
                cluster
                    .servers()
                    .iter()
                    .find(|server| server.port() == owner.port)
                    .expect("the stream's node")
            }
        }
    }

    /// The worker's settings to reach this Redis.
    fn worker_env(&self) -> Vec<(&'static str, String)> {
        match self {
            BenchRedis::Standalone(server) => vec![("REDIS_URL", server.url())],
            BenchRedis::Tls {
                tls_port,
                certificates,
                ..
            } => vec![
                ("REDIS_URL", format!("rediss://localhost:{tls_port}")),
                ("REDIS_TLS_CA_FILE", certificates.ca().display().to_string()),
            ],
            BenchRedis::Cluster(cluster) => vec![
                ("REDIS_URL", cluster.url()),
                ("REDIS_CLUSTER", "true".to_owned()),
            ],
        }
    }
}

/// One drain of the pre-filled stream.
#[derive(Debug, Clone, Copy)]
pub struct Drain {
    pub seconds: f64,
    pub rate: f64,
    /// The worker's `VmHWM` at the end, kB.
    pub peak_rss_kb: Option<u64>,
    pub cpu: CpuUse,
}

/// The log settings of the drain that shows what logging costs: what a
/// production deployment with a log collector runs.
pub const INFO_JSON: &[(&str, &str)] = &[("LOG_LEVEL", "info"), ("LOG_FORMAT", "json")];

/// Drains with the worker `built`, `env` on top of the usual settings
/// (`LOG_LEVEL=warn`).
pub fn drain_worker(built: &Built, options: &Options, env: &[(&str, &str)]) -> (Drain, CpuUse) {
    drain_worker_on(built, options, Topology::Standalone, env)
}

/// [`drain_worker`] on a Redis of `topology`.
pub fn drain_worker_on(
    built: &Built,
    options: &Options,
    topology: Topology,
    env: &[(&str, &str)],
) -> (Drain, CpuUse) {
    let bench_redis = BenchRedis::start(topology);
    let redis = bench_redis.data_node();
    prefill(redis, options.entries);
    let mut poll = redis.connect();
    let mut watch = CpuWatch::start();
    if let Some(pid) = redis.pid() {
        watch.watch("redis", pid, false);
    }
    let started = Instant::now();
    let reach = bench_redis.worker_env();
    let env: Vec<(&str, &str)> = reach
        .iter()
        .map(|(key, value)| (*key, value.as_str()))
        .chain(env.iter().copied())
        .collect();
    let mut worker = spawn_worker(
        built.name,
        &built.binary,
        redis,
        options,
        &options.wrapper(),
        &env,
    );
    watch.watch("worker", worker.pid(), true);
    loop {
        worker.assert_running();
        if drained(&mut poll, options.entries) {
            break;
        }
        assert!(
            started.elapsed() < DRAIN_DEADLINE,
            "{} did not drain {} entries within {DRAIN_DEADLINE:?}; group: {:?}",
            built.name,
            options.entries,
            group_info(&mut poll)
        );
        thread::sleep(DRAIN_POLL);
    }
    let seconds = started.elapsed().as_secs_f64();
    let peak_rss_kb = status_kb(worker.pid(), "VmHWM");
    let cpu = watch.finish();
    stop(worker);
    let drain = Drain {
        seconds,
        rate: options.entries as f64 / seconds,
        peak_rss_kb,
        cpu,
    };
    (drain, cpu)
}

/// The IDs of an `XREADGROUP` reply (RESP2 array or RESP3 map).
pub fn entry_ids(reply: Value) -> Vec<String> {
    let streams: Vec<Value> = match reply {
        Value::Nil => Vec::new(),
        Value::Map(pairs) => pairs.into_iter().map(|(_, entries)| entries).collect(),
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|stream| match stream {
                Value::Array(mut pair) => pair.pop(),
                _ => None,
            })
            .collect(),
        other => panic!("unexpected XREADGROUP reply {other:?}"),
    };
    let mut ids = Vec::new();
    for entries in streams {
        let Value::Array(entries) = entries else {
            continue;
        };
        for entry in entries {
            if let Value::Array(parts) = entry
                && let Some(Value::BulkString(id)) = parts.into_iter().next()
            {
                ids.push(String::from_utf8(id).expect("an ASCII entry ID"));
            }
        }
    }
    ids
}

pub fn drain_reference(options: &Options) -> (Drain, CpuUse) {
    let redis = RedisServer::start();
    prefill(&redis, options.entries);
    let mut watch = CpuWatch::start();
    if let Some(pid) = redis.pid() {
        watch.watch("redis", pid, false);
    }
    let started = Instant::now();
    let mut connection = redis.connect();
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(STREAM)
        .arg(GROUP)
        .arg("0")
        .exec(&mut connection)
        .expect("XGROUP CREATE");
    let mut consumed = 0;
    loop {
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg("c")
            .arg("COUNT")
            .arg(REFERENCE_COUNT)
            .arg("STREAMS")
            .arg(STREAM)
            .arg(">")
            .query(&mut connection)
            .expect("XREADGROUP");
        let ids = entry_ids(reply);
        if ids.is_empty() {
            break;
        }
        consumed += ids.len();
        let _: u64 = redis::cmd("XACK")
            .arg(STREAM)
            .arg(GROUP)
            .arg(&ids)
            .query(&mut connection)
            .expect("XACK");
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = watch.finish();
    assert_eq!(consumed, options.entries, "the reference consumer's count");
    assert!(
        drained(&mut connection, options.entries),
        "the reference consumer left work: {:?}",
        group_info(&mut connection)
    );
    let drain = Drain {
        seconds,
        rate: options.entries as f64 / seconds,
        peak_rss_kb: None,
        cpu,
    };
    (drain, cpu)
}

pub fn describe_drain(drain: &Drain) -> String {
    let peak = drain
        .peak_rss_kb
        .map(|kb| format!(", peak RSS {}", mib(kb)))
        .unwrap_or_default();
    format!(
        "{:.2}s = {}/s{peak}; {}",
        drain.seconds,
        thousands(drain.rate),
        drain.cpu.describe()
    )
}
