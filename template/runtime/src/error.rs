//! The runtime's error type, and how any error is reported to a person.

use std::path::PathBuf;
use std::sync::Arc;

/// What can go wrong talking to Redis.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command failed, or the connection did.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis answered with something this worker does not understand.
    #[error("unexpected reply to {command}: {detail}")]
    Reply {
        /// The command that was sent.
        command: &'static str,
        /// What was wrong with the reply.
        detail: String,
    },
    /// The password file (`redis.password_file`) cannot be read.
    #[error("cannot read the Redis password file {}: {source}", path.display())]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A TLS file named in the settings (`redis.tls_*_file`) cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another live process consumes under this consumer name.
    #[error(
        "consumer name `{name}` is held by another live process (its key `{key}` is being refreshed); \
         give each process its own REDIS_CONSUMER_NAME, or leave it unset for a unique one"
    )]
    NameInUse {
        /// The consumer name.
        name: String,
        /// The key that holds it.
        key: String,
    },
    /// Another process took this process's consumer name while it was
    /// paused or cut off; it stopped consuming so that only one does.
    #[error(
        "another process took consumer name `{name}` (its key `{key}`) while this one was paused \
         or cut off from Redis for longer than the name's lifetime; this one finished what it \
         held and stopped consuming, so that only one process consumes under the name"
    )]
    NameLost {
        /// The consumer name.
        name: String,
        /// The key that holds it.
        key: String,
    },
}

impl Error {
    /// The stream or the group no longer exists (`NOGROUP`): deleted, evicted
    /// or flushed. Recreating the group fixes it.
    pub fn is_no_group(&self) -> bool {
        matches!(self, Self::Redis(error) if error.code() == Some("NOGROUP"))
    }

    /// The connection is broken, Redis is not answering, or the node is not
    /// the one to ask (see `NOT_THE_NODE_TO_ASK`); new connections, after a
    /// pause, may succeed.
    pub fn is_connection(&self) -> bool {
        match self {
            Self::Redis(error) => connection_failed(error),
            Self::Reply { .. }
            | Self::PasswordFile { .. }
            | Self::TlsFile { .. }
            | Self::NameInUse { .. }
            | Self::NameLost { .. } => false,
        }
    }

    /// A TLS certificate was refused, ours or the server's: the TLS
    /// settings or the server's certificate must change, so trying again
    /// cannot help.
    pub fn is_certificate_refused(&self) -> bool {
        matches!(self, Self::Redis(error) if certificate_refused(error))
    }
}

/// Replies that say the node is not (or not yet, or no longer) the one to
/// ask: a replica after a failover (`READONLY`), a replica that lost its
/// primary (`MASTERDOWN`), a node still loading its data (`LOADING`), a
/// cluster moving slots or electing a primary (`MOVED`, `ASK`, `TRYAGAIN`,
/// `CLUSTERDOWN`), or a blocked read whose key moved away (`UNBLOCKED`).
/// They pass: new connections, after a pause, reach the right node.
const NOT_THE_NODE_TO_ASK: &[&str] = &[
    "READONLY",
    "MASTERDOWN",
    "LOADING",
    "MOVED",
    "ASK",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "UNBLOCKED",
];

/// See [`Error::is_connection`].
pub(crate) fn connection_failed(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.is_unrecoverable_error()
        || error
            .code()
            .is_some_and(|code| NOT_THE_NODE_TO_ASK.contains(&code))
}

/// `error` and its causes on one line, `: ` between them, each cause once.
///
/// Many errors repeat their cause in their own message (`{0}` in the
/// message and the same value as the source), so a plain walk down the chain
/// prints it twice; a cause whose text the line already holds is left out.
pub fn report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(current) = cause {
        let text = current.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = current.source();
    }
    line
}

/// Whether the TLS handshake failed because a certificate was refused (the
/// server's is not signed by a trusted CA, has expired or names another
/// host; or the server refused ours). That is a configuration error: trying
/// again cannot fix it.
fn certificate_refused(error: &redis::RedisError) -> bool {
    // The redis crate keeps the I/O error in an `Arc`, and tokio-rustls puts
    // the rustls error inside the I/O error.
    let Some(source) = std::error::Error::source(error) else {
        return false;
    };
    let io = source
        .downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>()
        .and_then(|inner| inner.downcast_ref::<std::io::Error>())
        .or_else(|| source.downcast_ref::<std::io::Error>());
    let Some(rustls_error) = io
        .and_then(std::io::Error::get_ref)
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return false;
    };
    matches!(
        rustls_error,
        rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::AlertReceived(
                rustls::AlertDescription::BadCertificate
                    | rustls::AlertDescription::UnknownCA
                    | rustls::AlertDescription::CertificateRequired
                    | rustls::AlertDescription::CertificateUnknown
            )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("line 1: not a JSON document: {0}")]
        Repeats(#[source] std::io::Error),
        #[error("cannot send")]
        Wraps(#[source] std::io::Error),
    }

    #[test]
    fn each_cause_is_reported_once() {
        let cause = || std::io::Error::other("expected ident at line 1 column 2");
        assert_eq!(
            report(&Outer::Repeats(cause())),
            "line 1: not a JSON document: expected ident at line 1 column 2"
        );
        assert_eq!(
            report(&Outer::Wraps(cause())),
            "cannot send: expected ident at line 1 column 2"
        );
    }
}
