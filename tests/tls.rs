//! `rediss://` in the default build: the built worker of the default
//! variant, its operator commands and its metrics probe against a
//! redis-server of the test's own with TLS, certificates made at test time.
//!
//! - a private CA (`REDIS_TLS_CA_FILE`): the worker drains, `status` and
//!   `send` work, `/readyz` answers 200;
//! - mutual TLS (`--tls-auth-clients yes`): with the client certificate
//!   (`REDIS_TLS_CERT_FILE`, `REDIS_TLS_KEY_FILE`) it drains; without it the
//!   operator command fails;
//! - a server certificate the CA did not sign: the worker and the operator
//!   commands stop at once with an error that names the certificate, no
//!   retry loop.
//!
//! The server also listens in plain text on another port, for the test's
//! own checks.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::tls::Certificates;
use common::{
    Process, RedisOptions, RedisServer, cargo, debug_binary, generate_with, note, scrub_env,
    unused_port, variant, wait_until,
};

const PROJECT: &str = "tls-worker";

/// Entries each drain must process.
const ENTRIES: usize = 200;

/// How long a drain of [`ENTRIES`] may take, start included.
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);

/// How soon a refused certificate must stop the worker.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(15);

/// The default variant, built once for every test here.
fn worker_binary() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let project = generate_with(PROJECT, variant("default").defines);
        cargo(&project, &["build"]);
        note(format!("tls: `{PROJECT}` built"));
        debug_binary(PROJECT)
    })
}

/// A redis-server with TLS on one port and plain text on another.
struct TlsRedis {
    redis: RedisServer,
    tls_port: u16,
    certificates: Certificates,
}

impl TlsRedis {
    /// `auth_clients`: `no`, `optional` or `yes` (mutual TLS).
    fn start(auth_clients: &str) -> TlsRedis {
        let certificates = Certificates::generate();
        let tls_port = unused_port();
        let redis = RedisServer::start_with_args(
            RedisOptions::default(),
            certificates.server_args(tls_port, auth_clients),
        );
        TlsRedis {
            redis,
            tls_port,
            certificates,
        }
    }

    /// The worker's URL: the name the server certificate is for.
    fn url(&self) -> String {
        format!("rediss://localhost:{}", self.tls_port)
    }
}

/// The worker binary with `args`, pointed at `redis` over TLS on `stream`,
/// with `env` on top.
fn worker_command(redis: &TlsRedis, stream: &str, args: &[&str], env: &[(&str, &Path)]) -> Command {
    let mut command = Command::new(worker_binary());
    scrub_env(&mut command);
    command
        .args(args)
        .env("REDIS_URL", redis.url())
        .env("REDIS_STREAM", stream)
        .env("REDIS_CONSUMER_GROUP", "tls-group")
        .env("REDIS_CONSUMER_NAME", "tls-consumer")
        .env("LOG_FORMAT", "json")
        .env("METRICS_ADDR", "127.0.0.1:0");
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

/// Runs an operator command to its end; returns whether it succeeded and
/// its output.
fn operator(
    redis: &TlsRedis,
    stream: &str,
    args: &[&str],
    env: &[(&str, &Path)],
) -> (bool, String) {
    let mut process = Process::spawn(&args.join(" "), worker_command(redis, stream, args, env));
    let status = process.wait_for_exit(REFUSAL_DEADLINE);
    (status.success(), process.output())
}

/// Sends [`ENTRIES`] samples over TLS, runs the worker until they are all
/// processed and acknowledged, checks `status` and `/readyz`, and stops it.
fn drain(redis: &TlsRedis, stream: &str, env: &[(&str, &Path)]) {
    let count = ENTRIES.to_string();
    let (sent, output) = operator(redis, stream, &["send", "--count", &count], env);
    assert!(sent, "`send` over TLS failed:\n{output}");
    assert_eq!(redis.redis.xlen(stream), ENTRIES, "{output}");

    let metrics_port = unused_port();
    let mut command = worker_command(redis, stream, &["run"], env);
    command.env("METRICS_ADDR", format!("127.0.0.1:{metrics_port}"));
    let mut worker = Process::spawn("worker over TLS", command);
    wait_until(
        DRAIN_DEADLINE,
        "every entry processed and acknowledged",
        || {
            worker.assert_running();
            let group = redis
                .redis
                .group(stream, "tls-group")
                .ok_or("no group yet")?;
            match (group.lag, group.pending) {
                (Some(0), 0) => Ok(()),
                other => Err(format!("(lag, pending) = {other:?}")),
            }
        },
    );
    assert_eq!(
        redis.redis.xlen(&format!("{stream}:dlq")),
        0,
        "dead letters while draining over TLS:\n{}",
        worker.output()
    );
    let readyz = http_status(metrics_port, "/readyz");
    assert_eq!(
        readyz,
        Some(200),
        "/readyz through TLS:\n{}",
        worker.output()
    );

    let (ok, status) = operator(redis, stream, &["status", "--json"], env);
    assert!(
        ok && status.contains("\"dead_letter_stream\""),
        "`status --json` over TLS:\n{status}"
    );

    worker.terminate();
    assert!(
        worker.wait_for_exit(Duration::from_secs(30)).success(),
        "{}",
        worker.output()
    );
    assert!(
        !worker.output().contains("\"level\":\"WARN\""),
        "warnings while draining over TLS:\n{}",
        worker.output()
    );
}

/// The status code of `GET path` on 127.0.0.1:`port`, if it answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_private_ca_is_trusted() {
    let redis = TlsRedis::start("no");
    let ca = redis.certificates.ca();
    drain(&redis, "tls:private-ca", &[("REDIS_TLS_CA_FILE", &ca)]);
}

#[test]
fn mutual_tls_with_a_client_certificate() {
    let redis = TlsRedis::start("yes");
    let ca = redis.certificates.ca();
    let cert = redis.certificates.file("client.crt");
    let key = redis.certificates.file("client.key");
    let stream = "tls:mutual";

    let (ok, output) = operator(&redis, stream, &["status"], &[("REDIS_TLS_CA_FILE", &ca)]);
    assert!(
        !ok,
        "`status` without a client certificate succeeded:\n{output}"
    );

    drain(
        &redis,
        stream,
        &[
            ("REDIS_TLS_CA_FILE", &ca),
            ("REDIS_TLS_CERT_FILE", &cert),
            ("REDIS_TLS_KEY_FILE", &key),
        ],
    );
}

#[test]
fn a_server_certificate_from_another_ca_stops_the_start() {
    let redis = TlsRedis::start("no");
    let other = redis.certificates.other_ca();
    let env = [("REDIS_TLS_CA_FILE", other.as_path())];
    let says_why =
        |output: &str| output.contains("certificate") && output.contains("UnknownIssuer");

    let mut worker = Process::spawn(
        "worker with the wrong CA",
        worker_command(&redis, "tls:wrong-ca", &["run"], &env),
    );
    let status = worker.wait_for_exit(REFUSAL_DEADLINE);
    let output = worker.output();
    assert!(!status.success(), "the worker exited {status}:\n{output}");
    assert!(
        says_why(&output),
        "the error should name the certificate:\n{output}"
    );
    note(format!(
        "tls: the wrong CA stops the worker: {}",
        output.trim()
    ));

    let (ok, output) = operator(&redis, "tls:wrong-ca", &["status"], &env);
    assert!(
        !ok && says_why(&output),
        "`status` with the wrong CA:\n{output}"
    );
}
