//! The consumer group's Redis commands, on two connections.
//!
//! Blocking reads (`XREADGROUP ... BLOCK`) get a connection of their own
//! whose response timeout exceeds the block time: the redis crate's default
//! of 500 ms would cut every longer block short. Every other command uses a
//! second connection with a short timeout, so an acknowledgement never waits
//! behind a blocked read. A connection that fails is dropped and made again
//! on next use; the caller decides how long to wait before that.
//!
//! The heartbeat ([`Consumer::touch`]) is a script, `consumer/touch.lua`:
//! it keeps only the entries still this consumer's, so a worker that wakes
//! from a freeze never takes back what another consumer took over.
//!
//! A non-blocking read can also be sent ahead ([`Consumer::read_ahead`],
//! in `consumer/read_ahead.rs`): Redis prepares the next batch while the
//! worker processes this one.
//!
//! The replies that carry entries are parsed in [`reply`]; the others use
//! redis-rs's typed replies.

mod read_ahead;
pub(crate) mod reply;

use std::sync::LazyLock;
use std::time::Duration;

use redis::streams::{StreamInfoConsumersReply, StreamPendingCountReply};
use redis::{Script, Value};

pub use self::read_ahead::ReadAhead;
use self::reply::{parse_autoclaim, parse_entries, parse_read};
use crate::connection::{Connection, Connector};
use crate::dead_letter::DeadLetter;
use crate::entry::Entry;
use crate::error::Error;

/// Timeout of every command but the blocking read.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a blocking read may take beyond its block time.
const READ_GRACE: Duration = Duration::from_secs(5);

/// What a read returned for one pending entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The entry, with its fields.
    Entry(Entry),
    /// The entry was deleted from the stream (`XDEL`, `XTRIM`) while pending.
    Deleted(String),
}

/// One page of `XAUTOCLAIM`.
#[derive(Debug, Default)]
pub struct AutoClaimed {
    /// Where the next page starts; `0-0` when the pending list was walked.
    pub next_cursor: String,
    /// Entries now owned by this consumer, not yet delivered to it.
    pub ids: Vec<String>,
    /// IDs that were pending but deleted from the stream; Redis removed them
    /// from the pending list.
    pub deleted: Vec<String>,
}

/// One entry of this consumer's pending list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The entry ID.
    pub id: String,
    /// Time since it was last delivered.
    pub idle: Duration,
    /// How often it was delivered.
    pub deliveries: u64,
}

/// What [`Consumer::claim_own`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimedOwn {
    /// Delivered again, with its delivery count now.
    Delivered(Delivery, u64),
    /// Another consumer holds it now, or it was acknowledged: left alone.
    NotOwn,
}

/// An entry [`Consumer::touch`] found no longer this consumer's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenOver {
    /// The entry ID.
    pub id: String,
    /// The consumer that holds it now; `None` when none does: it was
    /// acknowledged (by any consumer), or the group was recreated.
    pub holder: Option<String>,
}

/// Names that identify this consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The stream.
    pub stream: String,
    /// The consumer group.
    pub group: String,
    /// This consumer.
    pub consumer: String,
    /// Where dead letters go.
    pub dead_letter_stream: String,
}

struct Connections {
    reader: Connection,
    commands: Connection,
}

impl Connections {
    fn reader(&mut self) -> &mut Connection {
        &mut self.reader
    }

    fn commands(&mut self) -> &mut Connection {
        &mut self.commands
    }
}

/// A member of a consumer group.
pub struct Consumer {
    connector: Connector,
    names: Names,
    block: Duration,
    connections: Option<Connections>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("names", &self.names)
            .field("block", &self.block)
            .field("connected", &self.connections.is_some())
            .finish()
    }
}

/// See `consumer/touch.lua`. The script's hash is computed once, not at
/// every heartbeat.
static TOUCH: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("consumer/touch.lua")));

/// See `consumer/claim_own.lua`.
static CLAIM_OWN: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("consumer/claim_own.lua")));

/// See `consumer/give_back.lua`.
static GIVE_BACK: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("consumer/give_back.lua")));

/// IDs per call of [`TOUCH`]: it unpacks them onto the Lua stack, and a
/// call runs atomically, so this also bounds how long Redis is busy with it.
const TOUCH_BATCH: usize = 1_000;

/// Removes `ARGV[1]` from group `ARGV[2]` of stream `KEYS[1]` if it is idle
/// for at least `ARGV[3]` ms and holds no pending entries. Atomic, so an
/// entry delivered between the check and the removal cannot be lost.
/// Returns what `XGROUP DELCONSUMER` does (0), -1 for a consumer that
/// stays, -2 for one that is not in the group.
static DELETE_IF_IDLE: LazyLock<Script> = LazyLock::new(|| Script::new(DELETE_IF_IDLE_LUA));
const DELETE_IF_IDLE_LUA: &str = r"
local consumers = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[2])
for _, info in ipairs(consumers) do
  local fields = {}
  for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
  if fields['name'] == ARGV[1] then
    if fields['pending'] == 0 and fields['idle'] >= tonumber(ARGV[3]) then
      return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[2], ARGV[1])
    end
    return -1
  end
end
return -2
";

/// What [`Consumer::leave`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// The consumer held nothing and was removed from the group.
    Left,
    /// It holds pending entries, so it stays.
    Holds,
    /// It was not in the group.
    NotMember,
}

impl Consumer {
    /// A consumer that connects on first use. `block` is the `XREADGROUP`
    /// block time.
    pub fn new(connector: Connector, names: Names, block: Duration) -> Self {
        Self {
            connector,
            names,
            block,
            connections: None,
        }
    }

    /// Who this consumer is.
    pub fn names(&self) -> &Names {
        &self.names
    }

    async fn connections(&mut self) -> Result<&mut Connections, Error> {
        if self.connections.is_none() {
            let commands = self.connector.connect(COMMAND_TIMEOUT).await?;
            let reader = self.connector.connect(self.block + READ_GRACE).await?;
            self.connections = Some(Connections { reader, commands });
        }
        // Just filled above when it was empty.
        self.connections.as_mut().ok_or_else(|| Error::Reply {
            command: "CONNECT",
            detail: "no connection".into(),
        })
    }

    /// Connects now if not connected yet.
    pub async fn connect(&mut self) -> Result<(), Error> {
        let result = self.connections().await.map(|_| ());
        self.check(result)
    }

    /// Forgets a connection that failed, so the next command makes a new one.
    fn check<T>(&mut self, result: Result<T, Error>) -> Result<T, Error> {
        if let Err(error) = &result
            && error.is_connection()
        {
            self.connections = None;
        }
        result
    }

    /// Runs `query` on the connection `which` picks, connecting first if
    /// need be, and forgets the connection if it failed.
    async fn on<T>(
        &mut self,
        which: fn(&mut Connections) -> &mut Connection,
        query: impl AsyncFnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, Error> {
        let result = match self.connections().await {
            Ok(connections) => query(which(connections)).await.map_err(Error::from),
            Err(error) => Err(error),
        };
        self.check(result)
    }

    async fn command<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> Result<T, Error> {
        self.on(Connections::commands, async |connection| {
            cmd.query_async(connection).await
        })
        .await
    }

    async fn read(&mut self, cmd: &redis::Cmd) -> Result<Value, Error> {
        self.on(Connections::reader, async |connection| {
            cmd.query_async(connection).await
        })
        .await
    }

    /// Creates the group (and the stream) if missing, starting at `start_id`.
    /// Returns whether it was created; `BUSYGROUP` (it exists) is the only
    /// error tolerated.
    ///
    /// An existing group costs one read and no write: a Redis at its
    /// `maxmemory` refuses `XGROUP CREATE ... MKSTREAM` even when the group
    /// exists, while reading and acknowledging still work.
    pub async fn ensure_group(&mut self, start_id: &str) -> Result<bool, Error> {
        let mut probe = redis::cmd("XPENDING");
        probe
            .arg(&self.names.stream)
            .arg(&self.names.group)
            .arg("-")
            .arg("+")
            .arg(1);
        match self.command::<Value>(&probe).await {
            Ok(_) => return Ok(false),
            Err(error) if error.is_no_group() => {}
            Err(error) => return Err(error),
        }
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(&self.names.stream)
            .arg(&self.names.group)
            .arg(start_id)
            .arg("MKSTREAM");
        match self.command::<()>(&cmd).await {
            Ok(()) => Ok(true),
            Err(Error::Redis(error)) if error.code() == Some("BUSYGROUP") => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Adds this consumer to the group (`XGROUP CREATECONSUMER`; nothing if
    /// it is there). Reads create it too, but only once they return an
    /// entry: this lists a fresh worker in `XINFO CONSUMERS` at once.
    pub async fn create_consumer(&mut self) -> Result<(), Error> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATECONSUMER")
            .arg(&self.names.stream)
            .arg(&self.names.group)
            .arg(&self.names.consumer);
        self.command::<Value>(&cmd).await.map(drop)
    }

    /// Up to `count` entries never delivered to the group, waiting up to
    /// `block` (at most the configured block time, at least 1 ms) for the
    /// first.
    pub async fn read_new(
        &mut self,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, Error> {
        let block = millis(block.min(self.block)).max(1);
        let cmd = self.read_group(count, Some(block), ">");
        let reply = self.read(&cmd).await?;
        parse_read(reply)
    }

    /// Forgets the connections after a blocking read was dropped before its
    /// reply came: a reply still owed on a connection must never be taken
    /// for the answer to a later command, so the next command connects anew.
    pub fn abandon_read(&mut self) {
        self.connections = None;
    }

    fn read_group(&self, count: usize, block: Option<u64>, id: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.names.group)
            .arg(&self.names.consumer)
            .arg("COUNT")
            .arg(count);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block);
        }
        cmd.arg("STREAMS").arg(&self.names.stream).arg(id);
        cmd
    }

    /// Takes over up to `count` entries idle for `min_idle` or longer, from
    /// any consumer of the group, starting the walk of the pending list at
    /// `cursor`. Only their IDs (`JUSTID`): no delivery is counted yet, so
    /// the worker can deliver them one at a time if need be.
    pub async fn autoclaim(
        &mut self,
        min_idle: Duration,
        cursor: &str,
        count: usize,
    ) -> Result<AutoClaimed, Error> {
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(&self.names.stream)
            .arg(&self.names.group)
            .arg(&self.names.consumer)
            .arg(millis(min_idle))
            .arg(cursor)
            .arg("COUNT")
            .arg(count)
            .arg("JUSTID");
        let reply: Value = self.command(&cmd).await?;
        parse_autoclaim(reply)
    }

    /// Up to `count` entries of this consumer's pending list idle for at
    /// least `min_idle` (zero: all of them), with IDs after `after`
    /// (exclusive; `None`: from the start).
    pub async fn own_pending(
        &mut self,
        min_idle: Duration,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<Pending>, Error> {
        let start = after.map_or_else(|| "-".to_owned(), |id| format!("({id}"));
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(&self.names.stream)
            .arg(&self.names.group)
            .arg("IDLE")
            .arg(millis(min_idle))
            .arg(start)
            .arg("+")
            .arg(count)
            .arg(&self.names.consumer);
        let reply: StreamPendingCountReply = self.command(&cmd).await?;
        Ok(reply.ids.into_iter().map(Pending::from).collect())
    }

    /// How often each of `ids` was delivered, as Redis counts it; `None`
    /// for an ID no longer pending. An entry given back at a graceful stop
    /// (see [`Consumer::give_back`]) counts 0.
    pub async fn delivery_counts(&mut self, ids: &[&str]) -> Result<Vec<Option<u64>>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("XPENDING")
                .arg(&self.names.stream)
                .arg(&self.names.group)
                .arg(*id)
                .arg(*id)
                .arg(1);
        }
        let replies: Vec<StreamPendingCountReply> = self
            .on(Connections::commands, async |connection| {
                pipe.query_async(connection).await
            })
            .await?;
        Ok(replies
            .into_iter()
            .map(|reply| {
                reply
                    .ids
                    .first()
                    .map(|pending| pending.times_delivered as u64)
            })
            .collect())
    }

    /// Takes `ids` for this consumer if each is idle for at least `min_idle`;
    /// delivers them again, counting the delivery.
    pub async fn claim(
        &mut self,
        ids: &[&str],
        min_idle: Duration,
    ) -> Result<Vec<Delivery>, Error> {
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(&self.names.stream)
            .arg(&self.names.group)
            .arg(&self.names.consumer)
            .arg(millis(min_idle))
            .arg(ids);
        let reply: Value = self.command(&cmd).await?;
        parse_entries("XCLAIM", reply)
    }

    /// Delivers `id` again, counting the delivery, if it is still pending
    /// for this consumer; an entry another consumer took over meanwhile is
    /// left to it (see `consumer/claim_own.lua`).
    pub async fn claim_own(&mut self, id: &str) -> Result<ClaimedOwn, Error> {
        let mut invocation = CLAIM_OWN.prepare_invoke();
        invocation
            .key(&self.names.stream)
            .arg(&self.names.group)
            .arg(&self.names.consumer)
            .arg(id);
        let reply: Vec<Value> = self
            .on(Connections::commands, async |connection| {
                invocation.invoke_async(connection).await
            })
            .await?;
        let mut parts = reply.into_iter();
        let deliveries = match parts.next() {
            Some(Value::Int(deliveries)) => deliveries,
            other => {
                return Err(Error::Reply {
                    command: "claim_own.lua",
                    detail: format!("expected a delivery count, got {other:?}"),
                });
            }
        };
        let Ok(deliveries) = u64::try_from(deliveries) else {
            return Ok(ClaimedOwn::NotOwn);
        };
        let entries = parse_entries("XCLAIM", parts.next().unwrap_or(Value::Array(Vec::new())))?;
        Ok(match entries.into_iter().next() {
            Some(delivery) => ClaimedOwn::Delivered(delivery, deliveries),
            None => ClaimedOwn::Delivered(Delivery::Deleted(id.to_owned()), deliveries),
        })
    }

    /// Gives back the entries a read abandoned `since` ago delivered to this
    /// consumer: delivered once, after `last_read` (the last entry it
    /// received from a read of new entries; `None` if none), and idle no
    /// longer than `since`. They were never started; their delivery count
    /// goes back to 0 (see `consumer/give_back.lua`). Returns how many.
    pub async fn give_back(
        &mut self,
        last_read: Option<&str>,
        since: Duration,
    ) -> Result<u64, Error> {
        let mut invocation = GIVE_BACK.prepare_invoke();
        invocation
            .key(&self.names.stream)
            .arg(&self.names.group)
            .arg(&self.names.consumer)
            .arg(last_read.unwrap_or("0-0"))
            .arg(millis(since));
        self.on(Connections::commands, async |connection| {
            invocation.invoke_async(connection).await
        })
        .await
    }

    /// Resets the idle time of those of `ids` still pending for this
    /// consumer, without counting a delivery, and returns the others (see
    /// `consumer/touch.lua`). The heartbeat of entries in flight or read
    /// ahead, so no other consumer takes over an entry this live one holds;
    /// and the start of a failed entry's retry delay, so the backoff counts
    /// from the failure. An entry another consumer took over while this one
    /// did not answer stays that consumer's.
    pub async fn touch(&mut self, ids: &[String]) -> Result<Vec<TakenOver>, Error> {
        let mut taken_over = Vec::new();
        for batch in ids.chunks(TOUCH_BATCH) {
            let mut invocation = TOUCH.prepare_invoke();
            invocation
                .key(&self.names.stream)
                .arg(&self.names.group)
                .arg(&self.names.consumer)
                .arg(batch);
            let lost: Vec<(String, String)> = self
                .on(Connections::commands, async |connection| {
                    invocation.invoke_async(connection).await
                })
                .await?;
            taken_over.extend(lost.into_iter().map(|(id, holder)| TakenOver {
                id,
                holder: (!holder.is_empty()).then_some(holder),
            }));
        }
        Ok(taken_over)
    }

    /// Acknowledges `ids` with one `XACK`; returns how many were pending.
    pub async fn ack(&mut self, ids: &[String]) -> Result<u64, Error> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&self.names.stream).arg(&self.names.group).arg(ids);
        self.command(&cmd).await
    }

    /// Appends `letters` to the dead-letter stream in one round trip.
    pub async fn dead_letter(&mut self, letters: &[DeadLetter]) -> Result<(), Error> {
        if letters.is_empty() {
            return Ok(());
        }
        let Names {
            stream,
            group,
            consumer,
            dead_letter_stream,
        } = &self.names;
        let mut pipe = redis::pipe();
        for letter in letters {
            let fields = letter.fields(stream, group, consumer);
            pipe.cmd("XADD")
                .arg(dead_letter_stream)
                .arg("*")
                .arg(&fields)
                .ignore();
        }
        self.on(Connections::commands, async |connection| {
            pipe.query_async(connection).await
        })
        .await
    }

    /// Removes other consumers of the group idle for at least `idle` that
    /// hold no pending entries; returns their names.
    pub async fn remove_idle_consumers(&mut self, idle: Duration) -> Result<Vec<String>, Error> {
        let mut cmd = redis::cmd("XINFO");
        cmd.arg("CONSUMERS")
            .arg(&self.names.stream)
            .arg(&self.names.group);
        let reply: StreamInfoConsumersReply = self.command(&cmd).await?;
        let candidates: Vec<String> = reply
            .consumers
            .into_iter()
            .filter(|consumer| {
                consumer.pending == 0
                    && consumer.idle as u128 >= idle.as_millis()
                    && consumer.name != self.names.consumer
            })
            .map(|consumer| consumer.name)
            .collect();
        let mut removed = Vec::new();
        for name in candidates {
            let mut invocation = DELETE_IF_IDLE.prepare_invoke();
            invocation
                .key(&self.names.stream)
                .arg(&name)
                .arg(&self.names.group)
                .arg(millis(idle));
            let result: i64 = self
                .on(Connections::commands, async |connection| {
                    invocation.invoke_async(connection).await
                })
                .await?;
            if result >= 0 {
                removed.push(name);
            }
        }
        Ok(removed)
    }
}

impl Consumer {
    /// Removes this consumer from the group if it holds no pending entry
    /// (atomically, the same script as [`Consumer::remove_idle_consumers`]
    /// with no idle time required); whether it was removed. A consumer that
    /// still holds entries stays, so that another can take them over:
    /// removing it would make them unclaimable.
    ///
    /// On a connection of its own: at a stop the consumer's two connections
    /// are usually closed already.
    pub async fn leave(&mut self) -> Result<Leave, Error> {
        let mut invocation = DELETE_IF_IDLE.prepare_invoke();
        invocation
            .key(&self.names.stream)
            .arg(&self.names.consumer)
            .arg(&self.names.group)
            .arg(0);
        let mut connection = self.connector.connect(COMMAND_TIMEOUT).await?;
        let result: i64 = invocation.invoke_async(&mut connection).await?;
        Ok(match result {
            -2 => Leave::NotMember,
            -1 => Leave::Holds,
            _ => Leave::Left,
        })
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl From<redis::streams::StreamPendingId> for Pending {
    fn from(pending: redis::streams::StreamPendingId) -> Self {
        Self {
            id: pending.id,
            idle: Duration::from_millis(pending.last_delivered_ms as u64),
            deliveries: pending.times_delivered as u64,
        }
    }
}
