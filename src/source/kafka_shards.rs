//! How the Kafka poll thread hands partitions to the pipeline's shards:
//! each partition to one shard, whole (its events decided by one engine,
//! in order); messages copied into per-shard batches; and what the shards
//! say back (journaled positions to store as offsets, partitions fenced,
//! poison to dead-letter).

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, ThreadedProducer};

use super::kafka_client::{HelperContext, partition_name};
use crate::journal::JournalError;
use crate::pipeline::Rejected;
use crate::pipeline::driver::{Shard, SourcePartition, Upstream};
use crate::pipeline::input::{Assignment, Input, Records};

/// A batch for one shard is sent at this many bytes of payloads, if it
/// has not reached `kafka.max_batch` messages first: a shard's queue holds
/// a few batches, so this bounds its memory in bytes.
const BATCH_BYTES: usize = 4 << 20;

/// How long a revocation waits for the shards to journal what they
/// processed. A shard held up by a refusing journal must not hold the
/// group's rebalance (and the partitions' next owner) for longer: what it
/// did not journal, the next owner reads again, and its late commits for
/// those partitions fail on the next owner's claim.
const REVOKE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the shards say back to the poll thread.
pub enum Said {
    /// Journaled up to these positions (by slot): store them as the offsets.
    Journaled(Vec<(u32, i64)>),
    /// Owned by another process now (by slot): stop fetching them.
    Fenced(Vec<u32>),
}

/// The poll thread's view of the shards.
pub struct Router {
    shards: Vec<Shard>,
    /// Partition slots by topic, then partition number: found without
    /// allocating, once per message.
    slots: Vec<(String, Vec<Option<u32>>)>,
    /// Each slot's topic and partition number.
    places: Vec<(String, i32)>,
    /// The shard that owns each slot, while assigned here.
    owner: Vec<Option<usize>>,
    /// The batch being built for each shard.
    batches: Vec<Records>,
    max_batch: usize,
    /// Messages polled since every batch was last sent.
    since_flush: usize,
}

impl Router {
    pub fn new(shards: Vec<Shard>, max_batch: usize) -> Router {
        let n = shards.len();
        Router {
            shards,
            slots: Vec::new(),
            places: Vec::new(),
            owner: Vec::new(),
            batches: (0..n).map(|_| Records::default()).collect(),
            max_batch: max_batch.max(1),
            since_flush: 0,
        }
    }

    /// The partition's slot.
    pub fn slot(&mut self, topic: &str, partition: i32) -> u32 {
        let t = match self.slots.iter().position(|(name, _)| name == topic) {
            Some(t) => t,
            None => {
                self.slots.push((topic.to_owned(), Vec::new()));
                self.slots.len() - 1
            }
        };
        let i = partition.max(0) as usize;
        if i >= self.slots[t].1.len() {
            self.slots[t].1.resize(i + 1, None);
        }
        if let Some(s) = self.slots[t].1[i] {
            return s;
        }
        let s = self.owner.len() as u32;
        self.owner.push(None);
        self.places.push((topic.to_owned(), partition));
        self.slots[t].1[i] = Some(s);
        s
    }

    /// The topic and partition number of a slot.
    pub fn place(&self, slot: u32) -> Option<(&str, i32)> {
        self.places
            .get(slot as usize)
            .map(|(topic, partition)| (topic.as_str(), *partition))
    }

    /// The partition's slot if it has one, without allocating.
    fn find(&self, topic: &str, partition: i32) -> Option<u32> {
        let (_, slots) = self.slots.iter().find(|(name, _)| name == topic)?;
        slots.get(partition.max(0) as usize).copied().flatten()
    }

    /// Hands partitions to shards, each to the one that owns fewest, and
    /// sends each shard its assignments (ahead of any of their messages).
    pub fn assign(&mut self, mut partitions: Vec<Assignment>) {
        let mut per_shard: Vec<Vec<Assignment>> = vec![Vec::new(); self.shards.len()];
        for a in partitions.drain(..) {
            let load = |s: usize| self.owner.iter().filter(|o| **o == Some(s)).count();
            let Some(shard) = (0..self.shards.len()).min_by_key(|s| load(*s)) else {
                return;
            };
            self.owner[a.slot as usize] = Some(shard);
            per_shard[shard].push(a);
        }
        for (shard, assigned) in per_shard.into_iter().enumerate() {
            if !assigned.is_empty() {
                self.shards[shard].feed().send(Input::Assigned(assigned));
            }
        }
    }

    /// Sends what was polled, then has each shard that owns some of
    /// `partitions` journal what it processed for them and forget them;
    /// returns once all have.
    pub fn revoke(&mut self, partitions: &[(String, i32)]) {
        self.flush();
        let mut per_shard: Vec<Vec<String>> = vec![Vec::new(); self.shards.len()];
        for (topic, partition) in partitions {
            let Some(slot) = self.find(topic, *partition) else {
                continue;
            };
            if let Some(shard) = self.owner[slot as usize].take() {
                per_shard[shard].push(partition_name(topic, *partition));
            }
        }
        let mut acks = Vec::new();
        for (shard, names) in per_shard.into_iter().enumerate() {
            if names.is_empty() {
                continue;
            }
            let (ack, done) = std::sync::mpsc::sync_channel(1);
            if self.shards[shard].feed().send(Input::Revoked(names, ack)) {
                acks.push(done);
            }
        }
        let deadline = std::time::Instant::now() + REVOKE_WAIT;
        for done in acks {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            // Disconnected: the shard is gone (it failed); nothing to wait for.
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(left) {
                tracing::warn!(
                    wait = ?REVOKE_WAIT,
                    "a shard has not journaled its revoked partitions in time (its journal refuses?); \
                     letting them go: the next owner resumes at the journal's position and fences this process out"
                );
            }
        }
    }

    /// Adds a polled message to its shard's batch (sent once full).
    pub fn push(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        payload: &[u8],
        key: Option<&[u8]>,
        drill: bool,
    ) {
        self.since_flush += 1;
        let Some(slot) = self.find(topic, partition) else {
            return;
        };
        let Some(shard) = self.owner[slot as usize] else {
            // Not assigned here (any more): the next owner reads it.
            return;
        };
        let batch = &mut self.batches[shard];
        batch.push(slot, offset, payload, key, drill);
        if batch.messages() >= self.max_batch || batch.bytes() >= BATCH_BYTES {
            self.send(shard);
        }
        if self.since_flush >= self.max_batch {
            // A quiet partition's message does not wait behind a busy
            // one's backlog for more than a batch's worth of polls.
            self.flush();
        }
    }

    /// A partition (number, of whichever topic) reached its end.
    pub fn end(&mut self, partition: i32) {
        for t in 0..self.slots.len() {
            let Some(Some(slot)) = self.slots[t].1.get(partition.max(0) as usize).copied() else {
                continue;
            };
            if let Some(shard) = self.owner[slot as usize] {
                self.batches[shard].push_end(slot);
            }
        }
    }

    /// Whether polled messages wait to be sent.
    pub fn holds(&self) -> bool {
        self.batches.iter().any(|b| !b.is_empty())
    }

    /// Sends every shard its batch.
    pub fn flush(&mut self) {
        for shard in 0..self.shards.len() {
            if !self.batches[shard].is_empty() {
                self.send(shard);
            }
        }
        self.since_flush = 0;
    }

    fn send(&mut self, shard: usize) {
        let batch = std::mem::take(&mut self.batches[shard]);
        self.shards[shard].feed().send(Input::Records(batch));
    }

    /// Sends what is left, then stops every shard (each journals its last
    /// batch); the first error, if any.
    pub fn stop(&mut self) -> Result<(), JournalError> {
        self.flush();
        let mut result = Ok(());
        for s in &mut self.shards {
            let stopped = s.stop();
            if result.is_ok() {
                result = stopped;
            }
        }
        result
    }
}

/// A shard's way back to the poll thread, and to the dead-letter topic.
pub(crate) struct KafkaUpstream {
    pub(crate) said: SyncSender<Said>,
    pub(crate) dead_letters: Option<(Arc<ThreadedProducer<HelperContext>>, String)>,
}

/// How many messages from the shards the poll thread may have unread.
pub const SAID_BOUND: usize = 1024;

/// The poll thread's end of what the shards say.
pub fn said() -> (SyncSender<Said>, Receiver<Said>) {
    std::sync::mpsc::sync_channel(SAID_BOUND)
}

impl KafkaUpstream {
    /// Never waits: the poll thread may itself be waiting on this shard
    /// (a revocation). What is dropped is safe to drop: the journal holds
    /// the positions (the next store carries newer ones), and a fenced
    /// partition's commits fail anyway.
    fn say(&self, what: Said) {
        if let Err(TrySendError::Full(_)) = self.said.try_send(what) {
            tracing::debug!("the poll thread is behind; a store of offsets is skipped");
        }
    }
}

impl Upstream for KafkaUpstream {
    fn journaled(&mut self, positions: Vec<(u32, i64)>) {
        self.say(Said::Journaled(positions));
    }

    fn fenced(&mut self, slots: Vec<u32>) {
        self.say(Said::Fenced(slots));
    }

    fn poison(
        &mut self,
        from: &SourcePartition,
        offset: i64,
        payload: &[u8],
        key: Option<&[u8]>,
        why: &Rejected,
    ) {
        let Some((producer, topic)) = &self.dead_letters else {
            return;
        };
        let (source_topic, source_partition) = (&from.topic, from.partition.to_string());
        let error = why.to_string();
        let offset = offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "ripcord-error",
                value: Some(error.as_bytes()),
            })
            .insert(Header {
                key: "ripcord-source-topic",
                value: Some(source_topic.as_bytes()),
            })
            .insert(Header {
                key: "ripcord-source-partition",
                value: Some(source_partition.as_bytes()),
            })
            .insert(Header {
                key: "ripcord-source-offset",
                value: Some(offset.as_bytes()),
            });
        let mut record = BaseRecord::<[u8], [u8]>::to(topic)
            .payload(payload)
            .headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        match producer.send(record) {
            // Counted on delivery (HelperContext).
            Ok(()) => {}
            Err((e, _)) => {
                tracing::error!(error = %e, dead_letter_topic = %topic, "could not copy a poison message to the dead-letter topic")
            }
        }
    }
}
