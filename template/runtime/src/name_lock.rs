//! One live process per consumer name.
//!
//! Two processes under one name would each claim the other's entries in
//! flight (`XCLAIM` to oneself cannot tell them apart), so a process holds
//! its name with a key `<stream slot>:consumer:<group>:<name>`: set with
//! `NX` and a short expiry at start, refreshed in the background while the
//! process lives, deleted when it stops. The key carries the stream's hash
//! tag (`{orders}:consumer:...`), so on a cluster it lives in the stream's
//! slot.
//!
//! A name whose key is set is taken only once the key's holder is seen to
//! be gone: its key expires without a refresh. A holder killed with
//! `kill -9` delays a restart under its name by at most [`TTL`]; a holder
//! that refreshes its key is alive, and the start is refused.
//!
//! A holder paused or cut off for longer than [`TTL`] may find, when it
//! comes back, that another process took the name meanwhile. It does not
//! go on beside it: [`NameLock::lost`] resolves, and the worker stops
//! consuming (it finishes what it holds, as at SIGTERM) and exits with an
//! error, so its supervisor restarts it, under a name of its own or, once
//! the other process is gone, under this one.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};
use tracing::warn;

use crate::connection::{Connection, Connector};
use crate::consumer::Names;
use crate::error::Error;
use crate::settings::hash_tag;

/// How long a name stays held after its holder's last refresh.
pub const TTL: Duration = Duration::from_secs(6);
/// How often a live holder refreshes its key: several times per [`TTL`],
/// so a slow round trip does not let the name lapse.
const REFRESH: Duration = Duration::from_secs(2);
/// How far an expiry may seem pushed back by the two looks' round trips
/// alone, in milliseconds.
const REFRESH_SLACK_MS: i64 = 200;
/// Timeout of the lock's commands.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// This process's hold on its consumer name; released when dropped.
#[derive(Debug)]
pub struct NameLock {
    key: String,
    token: String,
    connector: Connector,
    refresher: JoinHandle<()>,
    /// Told once another process holds the key.
    lost: Option<oneshot::Receiver<()>>,
}

/// The key that holds `names.consumer`.
pub fn key(names: &Names) -> String {
    format!(
        "{}:consumer:{}:{}",
        slot_prefix(&names.stream),
        names.group,
        names.consumer
    )
}

/// `stream` itself if it has a hash tag, else `{stream}`: either way a key
/// that starts with it hashes to the stream's slot.
fn slot_prefix(stream: &str) -> String {
    if hash_tag(stream).is_some() {
        stream.to_owned()
    } else {
        ["{", stream, "}"].concat()
    }
}

impl NameLock {
    /// Takes the name of `names.consumer`, waiting up to [`TTL`] for the
    /// key of a holder that died; [`Error::NameInUse`] if a live process
    /// holds it.
    pub async fn acquire(connector: &Connector, names: &Names) -> Result<Self, Error> {
        let key = key(names);
        let token = format!("{}-{:016x}", std::process::id(), fastrand::u64(..));
        let mut connection = connector.connect(COMMAND_TIMEOUT).await?;
        let give_up = Instant::now() + TTL + REFRESH;
        let mut last_look: Option<(Option<String>, i64, Instant)> = None;
        loop {
            match take(&mut connection, &key, &token).await {
                Ok(true) => break,
                Ok(false) => {}
                // The name cannot be held, nor can anyone else take it: go
                // on, and let the refresh take the key once Redis accepts it.
                Err(Error::Redis(error)) if error.code() == Some("OOM") => {
                    warn!(consumer = %names.consumer, %key, "Redis is at maxmemory: going on without holding the consumer name until it accepts the key");
                    break;
                }
                Err(error) => return Err(error),
            }
            let (holder, ttl_ms): (Option<String>, i64) = redis::pipe()
                .cmd("GET")
                .arg(&key)
                .cmd("PTTL")
                .arg(&key)
                .query_async(&mut connection)
                .await?;
            if holder.is_none() {
                // Expired between the two commands: take it now.
                continue;
            }
            // A new holder, or an expiry pushed back (a dead holder's only
            // runs down): someone is alive.
            let alive = last_look.as_ref().is_some_and(|(seen, seen_ttl, seen_at)| {
                let run_down = i64::try_from(seen_at.elapsed().as_millis()).unwrap_or(i64::MAX);
                *seen != holder || ttl_ms > seen_ttl.saturating_sub(run_down) + REFRESH_SLACK_MS
            });
            if alive || Instant::now() >= give_up {
                return Err(Error::NameInUse {
                    name: names.consumer.clone(),
                    key,
                });
            }
            if last_look.is_none() {
                warn!(consumer = %names.consumer, %key, "the consumer name is held; waiting to see whether its holder is alive");
            }
            last_look = Some((holder, ttl_ms, Instant::now()));
            // Long enough for a live holder to refresh once.
            sleep(REFRESH + REFRESH / 4).await;
        }
        let (lost_sender, lost) = oneshot::channel();
        let refresher = tokio::spawn(refresh(
            connector.clone(),
            connection,
            key.clone(),
            token.clone(),
            lost_sender,
        ));
        Ok(Self {
            key,
            token,
            connector: connector.clone(),
            refresher,
            lost: Some(lost),
        })
    }

    /// The key that holds the name.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Resolves once another process took the name (this one was paused
    /// or cut off for longer than [`TTL`]); never if it keeps it. The
    /// first call takes the signal: later calls never resolve.
    pub fn lost(&mut self) -> impl Future<Output = ()> + Send + 'static {
        let lost = self.lost.take();
        async move {
            let taken = match lost {
                Some(lost) => lost.await.is_ok(),
                None => false,
            };
            if !taken {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Stops refreshing and deletes the key if it is still this process's,
    /// so a restart under the same name need not wait for it to expire.
    pub async fn release(self) {
        self.refresher.abort();
        let release = async {
            let mut connection = self.connector.connect(COMMAND_TIMEOUT).await?;
            let holder: Option<String> = redis::cmd("GET")
                .arg(&self.key)
                .query_async(&mut connection)
                .await?;
            if holder.as_deref() == Some(self.token.as_str()) {
                let _: () = redis::cmd("DEL")
                    .arg(&self.key)
                    .query_async(&mut connection)
                    .await?;
            }
            Ok::<(), redis::RedisError>(())
        };
        if let Err(error) = release.await {
            warn!(%error, key = %self.key, "cannot release the consumer name; it expires by itself");
        }
    }
}

impl Drop for NameLock {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

/// `SET key token NX PX ttl`: whether the name was free and is now ours.
async fn take(connection: &mut Connection, key: &str, token: &str) -> Result<bool, Error> {
    let set: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg(token)
        .arg("NX")
        .arg("PX")
        .arg(TTL.as_millis() as u64)
        .query_async(connection)
        .await?;
    Ok(set.is_some())
}

/// Keeps the key alive every [`REFRESH`] until aborted. The check and the
/// expiry are two commands, not a script, so the lock needs no scripting
/// rights; the gap between them is far shorter than [`TTL`].
async fn refresh(
    connector: Connector,
    mut connection: Connection,
    key: String,
    token: String,
    lost: oneshot::Sender<()>,
) {
    loop {
        sleep(REFRESH).await;
        let outcome = async {
            let holder: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut connection)
                .await?;
            match holder {
                Some(holder) if holder == token => {
                    let _: () = redis::cmd("PEXPIRE")
                        .arg(&key)
                        .arg(TTL.as_millis() as u64)
                        .query_async(&mut connection)
                        .await?;
                }
                // Lapsed (Redis restarted, or this process was paused).
                None => {
                    take(&mut connection, &key, &token).await?;
                }
                Some(_) => return Ok(false),
            }
            Ok::<bool, Error>(true)
        }
        .await;
        if matches!(outcome, Ok(false)) {
            let _ = lost.send(());
            return;
        }
        if let Err(error) = outcome {
            warn!(%error, %key, "cannot refresh the consumer name's key");
            if error.is_connection()
                && let Ok(fresh) = connector.connect(COMMAND_TIMEOUT).await
            {
                connection = fresh;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_lives_in_the_stream_slot() {
        let names = |stream: &str| Names {
            stream: stream.to_owned(),
            group: "g".to_owned(),
            consumer: "c".to_owned(),
            dead_letter_stream: format!("{stream}:dlq"),
        };
        assert_eq!(key(&names("orders")), "{orders}:consumer:g:c");
        assert_eq!(key(&names("{orders}")), "{orders}:consumer:g:c");
        assert_eq!(key(&names("app:{orders}")), "app:{orders}:consumer:g:c");
        assert_eq!(key(&names("odd{}")), "{odd{}}:consumer:g:c");
    }
}
