//! The consumer-group protocol, one typed redis-rs command per step: create the group, read
//! new entries, read this consumer's pending entries, claim idle ones, keep held ones from
//! being claimed, acknowledge.
//!
//! The blocking read has a connection of its own with a hard client-side deadline a little
//! longer than `BLOCK`: a read whose socket dropped may otherwise never be answered, and a
//! shorter deadline would cut off reads the server already delivered entries to. Every other
//! command goes over the command connection, so a read parked in `BLOCK` never delays an `XACK`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamClaimOptions, StreamId,
    StreamPendingCountReply, StreamReadOptions, StreamReadReply,
};
use redis::Cmd;

use crate::client::RedisClient;
use crate::config::StreamArgs;
use crate::metrics::RedisErrors;
use crate::retry::{READ_MARGIN, REDIS_COMMAND};
use crate::stream::{unblock, Entry, RedisConn, RedisFailure};

/// One consumer of one group on one stream.
pub struct Group {
    stream: String,
    name: String,
    consumer: String,
    count: usize,
    block_ms: usize,
    reader: RedisConn,
    writer: RedisConn,
}

/// What one `XAUTOCLAIM` step returned.
pub struct Claimed {
    /// Where the next step starts; `0-0` when the whole pending list was scanned.
    pub next_cursor: String,
    /// The entries now owned by this consumer, with their delivery counts.
    pub entries: Vec<Entry>,
    /// Pending entries that were deleted from the stream (Redis dropped them from the list).
    pub deleted: usize,
}

/// Wakes the read parked in `BLOCK` on the reader connection, from another task.
pub struct Waker {
    client: RedisClient,
    stream: String,
    client_id: Arc<AtomicI64>,
}

impl Waker {
    pub async fn wake(&self) {
        unblock(
            &self.client,
            &self.stream,
            self.client_id.load(Ordering::SeqCst),
        )
        .await;
    }
}

impl Group {
    pub fn new(args: &StreamArgs, consumer: String) -> Result<Self, redis::RedisError> {
        let client = args.redis_client()?;
        Ok(Self {
            stream: args.stream_key.clone(),
            name: args.consumer_group.clone(),
            consumer,
            count: args.batch_size as usize,
            block_ms: usize::try_from(args.block_ms).unwrap_or(usize::MAX),
            reader: RedisConn::new(client.clone(), args.block() + READ_MARGIN)
                .home_key(&args.stream_key),
            writer: RedisConn::new(client, REDIS_COMMAND),
        })
    }

    /// Counts the failed commands of both connections into `errors`
    /// (`order_ingest_redis_errors_total`).
    #[must_use]
    pub fn count_errors(mut self, errors: RedisErrors) -> Self {
        self.reader = self.reader.count_errors(errors.clone());
        self.writer = self.writer.count_errors(errors);
        self
    }

    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    pub fn waker(&self) -> Waker {
        Waker {
            client: self.reader.client().clone(),
            stream: self.stream.clone(),
            client_id: self.reader.client_id(),
        }
    }

    /// The deadline of the blocking read.
    pub fn read_deadline(&self) -> std::time::Duration {
        self.reader.deadline()
    }

    /// The command connection, for the dead-letter pipeline.
    pub fn writer(&mut self) -> &mut RedisConn {
        &mut self.writer
    }

    /// `XGROUP CREATE <stream> <group> <start> MKSTREAM`. `Ok(false)`: the group existed and
    /// was left where it is.
    pub async fn create(&mut self, start: &str) -> Result<bool, RedisFailure> {
        let cmd = Cmd::xgroup_create_mkstream(&self.stream, &self.name, start);
        match self.writer.query::<()>(&cmd).await {
            Ok(()) => Ok(true),
            Err(RedisFailure::Redis(e)) if e.code() == Some("BUSYGROUP") => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn read_options(&self, block: bool) -> StreamReadOptions {
        let options = StreamReadOptions::default()
            .group(&self.name, &self.consumer)
            .count(self.count);
        if block {
            options.block(self.block_ms)
        } else {
            options
        }
    }

    /// New entries (`>`), blocking up to `BLOCK` on the reader connection.
    pub async fn read_new(&mut self) -> Result<Vec<Entry>, RedisFailure> {
        let cmd = Cmd::xread_options(&[&self.stream], &[">"], &self.read_options(true));
        let reply: Option<StreamReadReply> = self.reader.query(&cmd).await?;
        Ok(entries_of(reply)
            .iter()
            .map(|id| Entry::from_stream_id(id, 1))
            .collect())
    }

    /// This consumer's own pending entries (id `0`): those of a previous run under the same
    /// name, or of a read whose answer was lost. A pending entry whose stream entry was
    /// deleted comes back with no fields.
    pub async fn read_own_pending(&mut self) -> Result<Vec<Entry>, RedisFailure> {
        let cmd = Cmd::xread_options(&[&self.stream], &["0"], &self.read_options(false));
        let reply: Option<StreamReadReply> = self.writer.query(&cmd).await?;
        self.with_delivery_counts(&entries_of(reply)).await
    }

    /// One `XAUTOCLAIM` step from `cursor` over entries idle for `min_idle_ms`.
    pub async fn claim(&mut self, min_idle_ms: u64, cursor: &str) -> Result<Claimed, RedisFailure> {
        let cmd = Cmd::xautoclaim_options(
            &self.stream,
            &self.name,
            &self.consumer,
            min_idle_ms,
            cursor,
            StreamAutoClaimOptions::default().count(self.count),
        );
        let reply: StreamAutoClaimReply = self.writer.query(&cmd).await?;
        Ok(Claimed {
            next_cursor: reply.next_stream_id,
            entries: self.with_delivery_counts(&reply.claimed).await?,
            deleted: reply.deleted_ids.len(),
        })
    }

    /// Entries with their delivery counts, from `XPENDING` over their id range.
    async fn with_delivery_counts(&mut self, ids: &[StreamId]) -> Result<Vec<Entry>, RedisFailure> {
        let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
            return Ok(Vec::new());
        };
        let cmd = Cmd::xpending_consumer_count(
            &self.stream,
            &self.name,
            &first.id,
            &last.id,
            ids.len(),
            &self.consumer,
        );
        let reply: StreamPendingCountReply = self.writer.query(&cmd).await?;
        let counts: HashMap<String, u64> = reply
            .ids
            .into_iter()
            .map(|p| (p.id, p.times_delivered as u64))
            .collect();
        Ok(ids
            .iter()
            .map(|id| Entry::from_stream_id(id, counts.get(&id.id).copied().unwrap_or(1)))
            .collect())
    }

    /// Resets the idle time of entries this consumer is still working on, so that nobody
    /// claims them; `JUSTID` keeps their delivery counts as they are. Best effort.
    pub async fn refresh_idle(&mut self, ids: &[String]) {
        let cmd = Cmd::xclaim_options(
            &self.stream,
            &self.name,
            &self.consumer,
            0,
            ids,
            StreamClaimOptions::default().with_justid(),
        );
        if let Err(e) = self.writer.query::<redis::Value>(&cmd).await {
            tracing::debug!(error = %e, "could not refresh idle time of held entries");
        }
    }

    /// `XACK`. A group that is gone took its pending entries with it: nothing left to ack.
    pub async fn ack(&mut self, ids: &[String]) -> Result<(), RedisFailure> {
        match self
            .writer
            .query::<u64>(&Cmd::xack(&self.stream, &self.name, ids))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_no_group() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The entries of an `XREADGROUP` reply for one stream (`nil` when `BLOCK` expired).
fn entries_of(reply: Option<StreamReadReply>) -> Vec<StreamId> {
    reply
        .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
        .unwrap_or_default()
}
