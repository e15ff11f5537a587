//! Connections to Redis, made in one place for the worker, the operator's
//! commands and the metrics probe, so the URL handling, TLS, the cluster
//! client and the timeouts follow one rule.
//!
//! A [`Connection`] is a single node's multiplexed connection or, with
//! `redis.cluster`, redis-rs's cluster connection, which routes each command
//! by its key and follows `MOVED` and `ASK` itself. Both carry the same
//! commands, so the rest of the crate does not know which it has.
//!
//! `rediss://` goes through rustls with Mozilla's roots bundled, so the
//! binary needs neither OpenSSL nor a certificate store on the host. A
//! private CA and a client certificate (mutual TLS) come from PEM files named
//! in the settings.

use std::path::Path;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, Cmd, ConnectionInfo, Pipeline, RedisFuture,
    TlsCertificates, Value,
};

use crate::error::Error;
use crate::settings::RedisSettings;

/// How long establishing a connection may take at most.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Makes connections to one Redis or one cluster; cheap to clone.
#[derive(Debug, Clone)]
pub struct Connector {
    target: Target,
}

#[derive(Debug, Clone)]
enum Target {
    Single(Client),
    /// A cluster client is made per connection: its response timeout is a
    /// setting of the client, and the blocking reader needs a longer one.
    Cluster {
        seeds: Vec<ConnectionInfo>,
        certificates: Option<TlsCertificates>,
    },
}

impl Connector {
    /// A connector for `settings`' URL (with `redis.cluster`, a comma
    /// separated list of seed nodes), with the password from the password
    /// file and the TLS files read; nothing connects yet.
    pub fn new(settings: &RedisSettings) -> Result<Self, Error> {
        install_crypto_provider();
        let certificates = tls_certificates(settings)?;
        let target = if settings.cluster {
            Target::Cluster {
                seeds: settings
                    .nodes()
                    .iter()
                    .map(|node| settings.connection_info(node))
                    .collect::<Result<_, _>>()?,
                certificates,
            }
        } else {
            Target::Single(match certificates {
                Some(certificates) => Client::build_with_tls(
                    settings.connection_info(settings.url.expose())?,
                    certificates,
                )?,
                None => settings.client()?,
            })
        };
        Ok(Self { target })
    }

    /// A new connection whose every reply may take up to
    /// `response_timeout`; connecting takes at most that long too, and never
    /// more than five seconds.
    ///
    /// The redis crate's default response timeout (500 ms on one node, none
    /// on a cluster) would cut short a blocking read or wait forever, so
    /// every caller says what it needs.
    pub async fn connect(&self, response_timeout: Duration) -> redis::RedisResult<Connection> {
        let connect_timeout = response_timeout.min(CONNECT_TIMEOUT);
        match &self.target {
            Target::Single(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(connect_timeout))
                    .set_response_timeout(Some(response_timeout));
                let connection = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                Ok(Connection::Single(connection))
            }
            Target::Cluster {
                seeds,
                certificates,
            } => {
                let mut builder = ClusterClientBuilder::new(seeds.iter().cloned())
                    .connection_timeout(connect_timeout)
                    .response_timeout(response_timeout);
                if let Some(certificates) = certificates {
                    builder = builder.certs(certificates.clone());
                }
                let client = builder.build()?;
                // Connecting to a seed that accepts but never answers would
                // wait forever without this bound.
                let connection =
                    tokio::time::timeout(connect_timeout * 2, client.get_async_connection())
                        .await
                        .map_err(|_| {
                            std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "connecting to the cluster timed out",
                            )
                        })??;
                Ok(Connection::Cluster(connection))
            }
        }
    }
}

/// A connection to one node or to a cluster; cheap to clone, clones share
/// the sockets (and so wait behind each other's blocking reads).
#[derive(Clone)]
pub enum Connection {
    /// One Redis.
    Single(MultiplexedConnection),
    /// A Redis Cluster: one socket per node, commands routed by key.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

/// rustls needs a process-wide crypto provider before its first handshake
/// and panics without one. The error only says that one is installed
/// already (by an earlier call, or by the business logic's own TLS client),
/// which is just as good.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The private CA and the client certificate, if any is configured.
fn tls_certificates(settings: &RedisSettings) -> Result<Option<TlsCertificates>, Error> {
    let root_cert = settings.tls_ca_file.as_deref().map(read_pem).transpose()?;
    let client_tls = match (&settings.tls_cert_file, &settings.tls_key_file) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read_pem(cert)?,
            client_key: read_pem(key)?,
        }),
        // Validation refuses one without the other.
        _ => None,
    };
    if root_cert.is_none() && client_tls.is_none() {
        return Ok(None);
    }
    Ok(Some(TlsCertificates {
        client_tls,
        root_cert,
    }))
}

fn read_pem(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::TlsFile {
        path: path.to_owned(),
        source,
    })
}
/// Why Redis could not be reached, in the words a person needs to fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// Nothing listens at the address (or, for a socket, no such file).
    Refused,
    /// The host name does not resolve.
    NoSuchHost,
    /// The TLS handshake failed: a certificate, or TLS against a plain port.
    Tls,
    /// Redis refused the user name or the password.
    Auth,
    /// Nothing answered in time.
    Timeout,
    /// Anything else; the error says what.
    Other,
}

impl Unreachable {
    /// The kind of `error`, which a first connection returned.
    pub fn of(error: &Error) -> Self {
        let Error::Redis(redis) = error else {
            return Self::Other;
        };
        let text = redis.to_string().to_ascii_lowercase();
        if error.is_certificate_refused()
            || [
                "tls",
                "certificate",
                "handshake",
                "invalidcontenttype",
                "corrupt message",
            ]
            .iter()
            .any(|word| text.contains(word))
        {
            Self::Tls
        } else if redis.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(redis.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
            // A cluster client reports its seeds' failures as text.
            || ["wrongpass", "noauth", "authentication"]
                .iter()
                .any(|word| text.contains(word))
        {
            Self::Auth
        } else if redis.is_connection_refusal() || text.contains("connection refused") {
            Self::Refused
        } else if redis.is_timeout() || text.contains("timed out") || text.contains("timeout") {
            Self::Timeout
        } else if [
            "lookup address",
            "name or service not known",
            "no address",
            "nodename nor servname",
        ]
        .iter()
        .any(|word| text.contains(word))
        {
            Self::NoSuchHost
        } else {
            Self::Other
        }
    }

    /// The kind in plain words.
    pub fn words(self) -> &'static str {
        match self {
            Self::Refused => "connection refused",
            Self::NoSuchHost => "no such host",
            Self::Tls => "the TLS handshake failed",
            Self::Auth => "authentication failed",
            Self::Timeout => "no answer in time",
            Self::Other => "error",
        }
    }

    /// What to do about it.
    pub fn hint(self) -> &'static str {
        match self {
            Self::Refused => {
                "Nothing listens there. To try the worker out, start a Redis: \
                 `docker compose up -d redis` (the project's compose.yaml) or `redis-server`; \
                 or point REDIS_URL at yours."
            }
            Self::NoSuchHost => "The host name does not resolve: check the host in REDIS_URL.",
            Self::Tls => {
                "Check the scheme (rediss:// for TLS, redis:// without) and the certificates \
                 (REDIS_TLS_CA_FILE, REDIS_TLS_CERT_FILE, REDIS_TLS_KEY_FILE)."
            }
            Self::Auth => {
                "Check the user and password (in the URL, or REDIS_PASSWORD_FILE) and the \
                 user's ACL rules."
            }
            Self::Timeout => {
                "Something accepts connections there but does not answer like Redis: check \
                 the host and port, the scheme (TLS on one side only looks like this: \
                 rediss:// for a TLS port, redis:// for a plain one), and any firewall or \
                 proxy in between."
            }
            Self::Other => "",
        }
    }
}

/// Connects to Redis once, within `timeout`: whether the settings reach a
/// Redis that answers. Connecting is a round trip already (the password,
/// the database, redis-rs's `CLIENT SETINFO`), so no command is sent: any
/// command might be one that an ACL user may not send, and its refusal
/// would fill `ACL LOG`.
pub async fn first_contact(settings: &RedisSettings, timeout: Duration) -> Result<(), Error> {
    Connector::new(settings)?.connect(timeout).await?;
    Ok(())
}
