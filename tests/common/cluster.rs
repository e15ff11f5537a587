//! A Redis Cluster of the test's own: three masters (no replicas) on free
//! ports of 127.0.0.1 below 55535, so that each bus port (port + 10000) is
//! valid too, joined with `redis-cli --cluster create`. Every node keeps its
//! `nodes.conf` in its own temporary directory, removed with it: a stale one
//! would rejoin an old cluster.

use std::process::Command;
use std::time::Duration;

use std::path::{Path, PathBuf};

use super::tls::Certificates;
use super::{RedisOptions, RedisServer, free_port, wait_until};

/// How long a new cluster may take to report `cluster_state:ok` everywhere.
const CLUSTER_READY_DEADLINE: Duration = Duration::from_secs(60);

/// The running nodes, killed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// With TLS: each node's TLS port (the one the cluster announces) and
    /// the CA that signed the nodes' certificates.
    tls: Option<(Vec<u16>, PathBuf)>,
}

/// One node as `CLUSTER MYID` and its port name it.
#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    pub port: u16,
}

impl RedisCluster {
    /// Starts `masters` nodes, creates the cluster and waits until every
    /// node says it is ok.
    pub fn start(masters: usize) -> RedisCluster {
        RedisCluster::start_with(masters, None)
    }

    /// [`RedisCluster::start`] with TLS between clients and nodes and on
    /// the cluster bus (`--tls-cluster yes`). Each node also keeps a plain
    /// port, for the test's own checks.
    pub fn start_tls(masters: usize, certificates: &Certificates) -> RedisCluster {
        RedisCluster::start_with(masters, Some(certificates))
    }

    fn start_with(masters: usize, certificates: Option<&Certificates>) -> RedisCluster {
        let mut nodes = Vec::new();
        let mut tls_ports = Vec::new();
        while nodes.len() < masters {
            // The cluster's port: the bus is this plus 10000.
            let port = cluster_port();
            let mut args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
            ]
            .map(str::to_owned)
            .to_vec();
            let plain_port = match certificates {
                Some(certificates) => {
                    args.extend(certificates.server_args(port, "no"));
                    args.extend(
                        ["--tls-cluster", "yes", "--tls-replication", "yes"].map(str::to_owned),
                    );
                    free_port()
                }
                None => port,
            };
            // A port taken meanwhile: try another.
            if let Ok(node) = RedisServer::try_start_on(plain_port, RedisOptions::default(), args) {
                nodes.push(node);
                tls_ports.push(port);
            }
        }
        let mut create = Command::new("redis-cli");
        if let Some(certificates) = certificates {
            create.arg("--tls").arg("--cacert").arg(certificates.ca());
        }
        create.args(["--cluster", "create"]);
        for port in &tls_ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let output = create.output().expect("redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = RedisCluster {
            nodes,
            tls: certificates.map(|certificates| (tls_ports, certificates.ca())),
        };
        cluster.wait_ok();
        cluster
    }

    /// Waits until every node reports `cluster_state:ok` and agrees on
    /// who serves every slot.
    pub fn wait_ok(&self) {
        wait_until(
            CLUSTER_READY_DEADLINE,
            "cluster_state:ok on every node",
            || {
                for node in &self.nodes {
                    let info: String = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query(&mut node.connect())
                        .map_err(|error| error.to_string())?;
                    if !info.contains("cluster_state:ok") {
                        return Err(format!("port {}: {info}", node.port()));
                    }
                }
                Ok(())
            },
        );
    }

    /// Every node's URL, comma separated: the worker's `REDIS_URL`
    /// (`rediss://` on the TLS ports with TLS).
    pub fn url(&self) -> String {
        let urls: Vec<String> = match &self.tls {
            Some((ports, _)) => ports
                .iter()
                .map(|port| format!("rediss://127.0.0.1:{port}"))
                .collect(),
            None => self.nodes.iter().map(RedisServer::url).collect(),
        };
        urls.join(",")
    }

    /// The nodes.
    pub fn servers(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The CA of the nodes' certificates, with TLS.
    pub fn ca(&self) -> Option<&Path> {
        self.tls.as_ref().map(|(_, ca)| ca.as_path())
    }

    /// A plain connection to the node that serves `key`'s slot now, for
    /// the test's own commands on keys of that slot.
    pub fn connect_for(&self, key: &str) -> redis::Connection {
        let owner = self.owner(key);
        self.server(owner.port).connect()
    }

    /// The node serving `key`'s slot, as that node sees it.
    pub fn owner(&self, key: &str) -> Node {
        let slot = self.slot(key);
        for server in &self.nodes {
            let nodes: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query(&mut server.connect())
                .unwrap();
            let Some(mine) = nodes.lines().find(|line| line.contains("myself")) else {
                continue;
            };
            if serves(mine, slot) {
                let id = mine.split_whitespace().next().unwrap_or_default();
                return Node {
                    id: id.to_owned(),
                    port: server.port(),
                };
            }
        }
        panic!("no node serves slot {slot} of {key}");
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.nodes[0].connect())
            .unwrap()
    }

    /// Another node than `node`.
    pub fn other_than(&self, node: &Node) -> Node {
        let server = self
            .nodes
            .iter()
            .find(|server| server.port() != node.port)
            .expect("more than one node");
        let id: String = redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut server.connect())
            .unwrap();
        Node {
            id,
            port: server.port(),
        }
    }

    fn server(&self, port: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|server| server.port() == port)
            .expect("a node of this cluster")
    }

    /// Moves `key`'s slot from `from` to `to` the way `redis-cli --cluster
    /// reshard` does: `IMPORTING` and `MIGRATING`, `MIGRATE` of every key in
    /// the slot, then `SETSLOT ... NODE` on every node. Returns how many
    /// keys moved.
    pub fn migrate_slot(&self, key: &str, from: &Node, to: &Node) -> usize {
        let slot = self.slot(key);
        let mut source = self.server(from.port).connect();
        let mut target = self.server(to.port).connect();
        let setslot = |connection: &mut redis::Connection, args: &[&str]| {
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(args)
                .exec(connection)
                .unwrap_or_else(|error| panic!("CLUSTER SETSLOT {slot} {args:?}: {error}"));
        };
        setslot(&mut target, &["IMPORTING", &from.id]);
        setslot(&mut source, &["MIGRATING", &to.id]);
        let mut moved = 0;
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query(&mut source)
                .unwrap();
            if keys.is_empty() {
                break;
            }
            moved += keys.len();
            redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to.port)
                .arg("")
                .arg(0)
                .arg(10_000)
                .arg("KEYS")
                .arg(&keys)
                .exec(&mut source)
                .unwrap_or_else(|error| panic!("MIGRATE {keys:?}: {error}"));
        }
        setslot(&mut target, &["NODE", &to.id]);
        setslot(&mut source, &["NODE", &to.id]);
        for server in &self.nodes {
            setslot(&mut server.connect(), &["NODE", &to.id]);
        }
        moved
    }
}

/// A free port below 55535 whose bus port (port + 10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55_535
            && port != 6379
            && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        {
            return port;
        }
    }
}

/// Whether a `CLUSTER NODES` line lists `slot` among its ranges.
fn serves(line: &str, slot: u16) -> bool {
    line.split_whitespace().skip(8).any(|range| {
        let (start, end) = range.split_once('-').unwrap_or((range, range));
        match (start.parse::<u16>(), end.parse::<u16>()) {
            (Ok(start), Ok(end)) => (start..=end).contains(&slot),
            _ => false,
        }
    })
}
