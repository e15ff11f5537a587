//! A failover behind one address: the worker reaches Redis through a TCP
//! proxy that stands in for a DNS name. Primary A has a replica B; the
//! worker drains through the proxy; then B is promoted and A made its
//! replica, while the name keeps pointing at A for a moment longer, as a
//! DNS record does until it is updated. Entries added to B afterwards must
//! all be processed: `READONLY` and `UNBLOCKED` from the demoted node make
//! the worker drop its connections and reconnect until it lands on B.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::proxy::Proxy;
use common::{Process, RedisServer, build_fault_worker, note, scrub_env, wait_until};

const PROJECT: &str = "failover-worker";
const STREAM: &str = "failover:orders";
const GROUP: &str = "failover-group";

/// How long the name keeps pointing at the demoted primary.
const STALE_NAME: Duration = Duration::from_millis(1_500);

/// How long each drain may take.
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);

/// `data` for the fault logic.
fn data(n: u64) -> String {
    format!(r#"{{"n":{n},"fail":"none","sleep_ms":1}}"#)
}

/// The `n`s in the record file.
fn recorded(record: &Path) -> BTreeSet<u64> {
    fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(1)?.parse().ok())
        .collect()
}

fn replicaof(server: &RedisServer, primary: Option<&RedisServer>) {
    let mut command = redis::cmd("REPLICAOF");
    match primary {
        Some(primary) => command.arg("127.0.0.1").arg(primary.port()),
        None => command.arg("NO").arg("ONE"),
    };
    command
        .exec(&mut server.connect())
        .unwrap_or_else(|error| panic!("REPLICAOF on :{}: {error}", server.port()));
}

/// Waits until `server`'s group has every entry delivered and acknowledged
/// and every `n` below `total` is in the record.
fn wait_drained(server: &RedisServer, record: &Path, total: u64, worker: &mut Process) {
    wait_until(
        DRAIN_DEADLINE,
        &format!("{total} entries processed"),
        || {
            worker.assert_running();
            let missing = (0..total).filter(|n| !recorded(record).contains(n)).count();
            if missing > 0 {
                return Err(format!("{missing} not processed yet"));
            }
            let group = server.group(STREAM, GROUP).ok_or("no group")?;
            match (group.lag, group.pending) {
                (Some(0), 0) => Ok(()),
                other => Err(format!("(lag, pending) = {other:?}")),
            }
        },
    );
}

#[test]
fn a_failover_behind_one_name_ends_with_the_worker_on_the_new_primary() {
    let binary = build_fault_worker(PROJECT);
    let a = RedisServer::start();
    let b = RedisServer::start();
    replicaof(&b, Some(&a));
    let proxy = Proxy::start(a.port());
    let dir = tempfile::Builder::new()
        .prefix("template-test-failover-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    let record = dir.path().join("record.txt");

    let first: Vec<String> = (0..200).map(data).collect();
    a.xadd_data(STREAM, &first);
    let mut command = Command::new(&binary);
    scrub_env(&mut command);
    command
        .arg("run")
        .current_dir(dir.path())
        .env("REDIS_URL", format!("redis://127.0.0.1:{}", proxy.port()))
        .env("REDIS_STREAM", STREAM)
        .env("REDIS_CONSUMER_GROUP", GROUP)
        .env("REDIS_CONSUMER_NAME", "survivor")
        .env("REDIS_BLOCK_TIMEOUT_MS", "1000")
        .env("WORKER_RECONNECT_BACKOFF_MS", "100")
        .env("WORKER_RECONNECT_BACKOFF_MAX_MS", "500")
        .env("LOG_FORMAT", "json")
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env("FAULT_RECORD", &record);
    let mut worker = Process::spawn("worker behind the proxy", command);
    wait_drained(&a, &record, 200, &mut worker);
    // The replica has the group's progress before it takes over.
    wait_until(DRAIN_DEADLINE, "the replica to catch up", || {
        let group = b.group(STREAM, GROUP).ok_or("no group on the replica")?;
        match (group.lag, group.pending) {
            (Some(0), 0) => Ok(()),
            other => Err(format!("(lag, pending) = {other:?}")),
        }
    });

    replicaof(&b, None);
    replicaof(&a, Some(&b));
    // Part of the scenario, not a wait for a condition: the name is stale
    // for this long, and the worker meets only the demoted node meanwhile.
    thread::sleep(STALE_NAME);
    proxy.switch(b.port());

    let second: Vec<String> = (200..400).map(data).collect();
    b.xadd_data(STREAM, &second);
    wait_drained(&b, &record, 400, &mut worker);
    let output = worker.output();
    let errors: Vec<&str> = output
        .lines()
        .filter(|line| line.contains("Redis error"))
        .collect();
    note(format!(
        "failover: drained on the new primary after {} Redis errors, the first: {}",
        errors.len(),
        errors.first().unwrap_or(&"none")
    ));
    worker.terminate();
    assert!(
        worker.wait_for_exit(Duration::from_secs(30)).success(),
        "{output}"
    );
}
