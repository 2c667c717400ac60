//! The Kafka source: a consumer-group member feeding the pipeline.
//!
//! Delivery: at least once from Kafka, exactly once into the journal. Each
//! batch's decisions and the partitions' next offsets are committed to the
//! journal in one transaction; only then are offsets stored in Kafka
//! (`enable.auto.offset.store=false`; auto-commit commits what was stored).
//! On assignment a partition resumes at the journal's position (else the
//! group's committed offset), after re-reading its last lookback of events
//! (offsets for times) to warm the windows without acting on anything.
//!
//! Producers: key each message by its `service` label so a service's events
//! stay on one partition (and in one engine).
//!
//! Throughput settings (overridable under `kafka.properties`):
//! `fetch.wait.max.ms=10` and `fetch.min.bytes=1` keep an idle topic's
//! latency low; `queued.min.messages=100000` with `fetch.queue.backoff.ms=1`
//! keeps librdkafka's local queue full under load so the poll loop never
//! waits on the network; batches of up to `kafka.max_batch` messages share
//! one journal transaction; `enable.partition.eof` tells the loop when a
//! partition is caught up (only then does wall-clock time move its windows).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use super::kafka_config::{GroupProtocol, KafkaConfig};
use crate::health::Health;
use crate::pipeline::{PartitionId, Pipeline, Rejected};
use crate::telemetry::{Metrics, Outcome, Source};
use crate::time::Clock;

/// The Kafka header every event a drill produces carries (its value names
/// the drill run). A responder other than the drill's own refuses such an
/// event, counted as `drill_refused` (`kafka.accept_drill_events`), so a
/// drill played onto a topic production also reads never acts there.
pub const MARKER_HEADER: &str = "ripcord-drill";

/// Whether a Kafka message carries the drill marker.
pub fn is_marked<H: rdkafka::message::Headers>(headers: Option<&H>) -> bool {
    headers.is_some_and(|h| h.iter().any(|x| x.key == MARKER_HEADER))
}

/// The headers of a drill's event.
pub fn marker(run: &str) -> rdkafka::message::OwnedHeaders {
    rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
        key: MARKER_HEADER,
        value: Some(run),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    #[error("kafka: {0}")]
    Client(KafkaError),
    /// librdkafka refused a property. Its own error quotes the value,
    /// which may be a `sasl.password`, so only the key is kept.
    #[error("kafka: librdkafka rejects the value of property `{key}`")]
    Property { key: String },
    #[error("journal: {0}")]
    Journal(#[from] crate::journal::JournalError),
}

impl From<KafkaError> for KafkaSourceError {
    fn from(e: KafkaError) -> Self {
        match e {
            KafkaError::ClientConfig(_, _, key, _) => KafkaSourceError::Property { key },
            e => KafkaSourceError::Client(e),
        }
    }
}

/// How long a loop turn with nothing to do waits for Kafka. An HTTP
/// request arriving meanwhile waits as long for the pipeline (librdkafka's
/// poll cannot be woken without `unsafe`): while HTTP requests are coming
/// in, turns wait [`BUSY_WAIT`] instead; a quiet responder stays at 200
/// turns a second.
const IDLE_WAIT: Duration = Duration::from_millis(5);
const BUSY_WAIT: Duration = Duration::from_millis(1);
/// How long after the last HTTP request turns still wait [`BUSY_WAIT`].
const BUSY_FOR: Duration = Duration::from_secs(1);

/// A partition handed to this member, waiting to be warmed.
#[derive(Debug, Clone)]
struct Assigned {
    topic: String,
    partition: i32,
    /// Where live consumption resumes.
    start: Offset,
}

/// Callbacks librdkafka makes from inside `poll`, on the loop's thread.
struct Context {
    pipeline: Arc<Mutex<Pipeline>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    pending: Mutex<Vec<Assigned>>,
    /// Set when `pending` grows: the loop stops its batch and warms first.
    assigned_news: AtomicBool,
    group_protocol: GroupProtocol,
    lost: Mutex<Vec<PartitionId>>,
    /// `auto.offset.reset` is earliest (else latest).
    from_earliest: bool,
    /// When this process started (ms since the epoch): a partition nobody
    /// has read yet is acted on from the first event produced after it.
    started_ms: i64,
    /// The broker is the embedded one, new at every start: offsets the
    /// journal kept from an earlier run point into a broker that is gone.
    embedded: bool,
    /// How to build a short-lived reader (brokers and connection properties).
    reader: ClientConfig,
    log: ClientLog,
}

/// How a librdkafka client's complaints reach ripcord's log: its log lines
/// at their own level, its errors once per 10 s each with a repeat count.
/// With no usable broker (down, or refusing our TLS) librdkafka retries
/// every ~50 ms and reports "all brokers are down" each time: 20 lines a
/// second would bury the cause.
struct ClientLog {
    /// Which of ripcord's clients: consumer, warm-up reader, dead-letter producer.
    client: &'static str,
    /// Errors by text: when each was last logged, how many since.
    said: Mutex<HashMap<String, (Instant, u64)>>,
}

impl ClientLog {
    fn new(client: &'static str) -> ClientLog {
        ClientLog {
            client,
            said: Mutex::new(HashMap::new()),
        }
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        let client = self.client;
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "rdkafka", client, facility = fac, "{msg}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "rdkafka", client, facility = fac, "{msg}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "rdkafka", client, facility = fac, "{msg}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "rdkafka", client, facility = fac, "{msg}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // End of partition is reported through `poll` too; it is news, not trouble.
        if matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::error::RDKafkaErrorCode::PartitionEOF)
        {
            return;
        }
        let mut said = self.said.lock().unwrap_or_else(|e| e.into_inner());
        let repeats = match said.get_mut(&error.to_string()) {
            Some((at, n)) if at.elapsed() < Duration::from_secs(10) => {
                *n += 1;
                return;
            }
            Some((at, n)) => {
                *at = Instant::now();
                std::mem::take(n) + 1
            }
            None => {
                said.insert(error.to_string(), (Instant::now(), 0));
                1
            }
        };
        tracing::warn!(target: "rdkafka", client = self.client, %error, repeats, "{reason}");
    }
}

/// The context of ripcord's helper clients (the warm-up reader and the
/// dead-letter producer): logged like the consumer; a dead letter is
/// counted once the broker has it, and a lost one is said.
pub(crate) struct HelperContext {
    log: ClientLog,
    metrics: Arc<Metrics>,
}

impl HelperContext {
    pub(crate) fn new(client: &'static str, metrics: Arc<Metrics>) -> HelperContext {
        HelperContext {
            log: ClientLog::new(client),
            metrics,
        }
    }
}

impl ClientContext for HelperContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        self.log.log(level, fac, msg);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
}

impl ConsumerContext for HelperContext {}

impl ProducerContext for HelperContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.metrics.dead_letter(),
            Err((e, msg)) => tracing::error!(
                error = %e,
                dead_letter_topic = msg.topic(),
                "a poison message was not copied to the dead-letter topic"
            ),
        }
    }
}

fn lock(p: &Mutex<Pipeline>) -> MutexGuard<'_, Pipeline> {
    // A panic elsewhere poisoned the lock; the pipeline's data is still the
    // journal's truth, so keep going.
    p.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn partition_name(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

impl ClientContext for Context {
    fn stats(&self, stats: Statistics) {
        if let Some(group) = &stats.cgrp {
            if member_of_the_group(self.group_protocol, group) {
                self.health.joined();
            }
        }
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.consumer_lag >= 0 {
                    self.metrics.consumer_lag(topic, *p, part.consumer_lag);
                }
            }
        }
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        self.log.log(level, fac, msg);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
}

impl ConsumerContext for Context {
    /// Rebalancing done by hand so assigned partitions start where the
    /// journal says and are warmed before the loop takes their first
    /// message, and revoked ones have
    /// their in-flight batch journaled before another member takes over.
    /// The classic protocol is eager (everything is revoked, then the new
    /// assignment handed over whole); KIP-848's is incremental (only the
    /// partitions that move are named, and the rest keep consuming).
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut assign = TopicPartitionList::new();
                let mut assigned = Vec::new();
                {
                    let mut pipeline = lock(&self.pipeline);
                    for e in tpl.elements() {
                        let name = partition_name(e.topic(), e.partition());
                        let journaled = match pipeline.journal().position(&name) {
                            Ok(o) => o,
                            Err(err) => {
                                tracing::error!(partition = %name, %err, "cannot read the journal's position; resuming at the group's committed offset");
                                None
                            }
                        };
                        let journaled =
                            self.check_position(consumer, e.topic(), e.partition(), journaled);
                        let start = match journaled {
                            Some(o) => Offset::Offset(o),
                            None => self.start_without_journal(consumer, e.topic(), e.partition()),
                        };
                        // Ours now: a process that held it before can commit
                        // nothing more for it.
                        let id = pipeline.partition(&name);
                        match pipeline.claim(id) {
                            Ok(epoch) => {
                                tracing::debug!(partition = %name, epoch, "partition claimed")
                            }
                            Err(err) => {
                                tracing::error!(partition = %name, %err, "cannot claim the partition in the journal; its commits are not fenced")
                            }
                        }
                        let _ = assign.add_partition_offset(e.topic(), e.partition(), start);
                        assigned.push(Assigned {
                            topic: e.topic().to_owned(),
                            partition: e.partition(),
                            start,
                        });
                    }
                }
                let assigned_ok = if incremental(consumer) {
                    consumer.incremental_assign(&assign)
                } else {
                    consumer.assign(&assign)
                };
                if let Err(e) = assigned_ok {
                    tracing::error!(error = %e, "assign failed");
                    return;
                }
                // Not paused for the warm-up: the loop warms before it
                // takes another message (a message of a partition still
                // warming is held back until then). A pause and resume
                // would cost up to a second: librdkafka's fetcher is not
                // woken by a resume and sleeps up to 1 s with nothing to
                // fetch (`rd_kafka_max_block_ms`, rdkafka_broker.c).
                let names: Vec<String> = assigned
                    .iter()
                    .map(|a| partition_name(&a.topic, a.partition))
                    .collect();
                tracing::info!(partitions = ?names, "partitions assigned");
                self.health.assigned(names);
                self.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(assigned);
                self.assigned_news.store(true, Ordering::Release);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let mut pipeline = lock(&self.pipeline);
                // Journal what was processed for these partitions before
                // letting them go, so the next owner resumes after it.
                if let Err(e) = pipeline.commit() {
                    tracing::error!(error = %e, "journal commit at revoke failed; the next owner re-reads these events");
                }
                let mut lost = Vec::new();
                for e in tpl.elements() {
                    let id = pipeline.partition(&partition_name(e.topic(), e.partition()));
                    pipeline.drop_partition(id);
                    lost.push(id);
                }
                self.health.revoked(
                    tpl.elements()
                        .iter()
                        .map(|e| partition_name(e.topic(), e.partition())),
                );
                drop(pipeline);
                self.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|a| {
                        !tpl.elements()
                            .iter()
                            .any(|e| e.topic() == a.topic && e.partition() == a.partition)
                    });
                self.lost
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(lost);
                tracing::info!(count = tpl.count(), "partitions revoked");
                let unassigned = if incremental(consumer) {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = unassigned {
                    tracing::error!(error = %e, "unassign failed");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                let _ = if incremental(consumer) {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
            }
        }
    }
}

/// Whether librdkafka's group state says this consumer is a member, even
/// one the group gives nothing (more replicas than partitions): the
/// classic protocol calls back with an empty assignment then, KIP-848's
/// does not call back at all and leaves the join state at `init`
/// (`rd_kafka_cgrp_consumer_handle_next_assignment` reconciles only an
/// assignment that differs). With the coordinator up for a second (its
/// heartbeat answered within milliseconds), such a member stands by.
fn member_of_the_group(
    protocol: GroupProtocol,
    group: &rdkafka::statistics::ConsumerGroup,
) -> bool {
    group.state == "up"
        && (group.join_state == "steady"
            || (protocol == GroupProtocol::Consumer
                && group.join_state == "init"
                && group.stateage >= 1000))
}

/// Whether the group hands partitions over incrementally (KIP-848's
/// protocol, or a cooperative assignor) rather than all at once.
fn incremental<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> bool {
    matches!(
        consumer.rebalance_protocol(),
        RebalanceProtocol::Cooperative
    )
}

impl Context {
    /// The journal's position for a partition, where it still means
    /// something. The embedded broker is new at every start, so positions
    /// from an earlier run point into a broker that is gone: start afresh.
    /// A position before the partition's start means retention deleted
    /// events ripcord never read: resume at the first one left (librdkafka
    /// would jump to the end instead).
    fn check_position(
        &self,
        consumer: &BaseConsumer<Self>,
        topic: &str,
        partition: i32,
        journaled: Option<i64>,
    ) -> Option<i64> {
        let o = journaled?;
        if self.embedded {
            tracing::info!(
                partition = %partition_name(topic, partition), journaled = o,
                "the embedded broker is new at every start: the journal's position from an earlier run is not used"
            );
            return None;
        }
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(5)) {
            Ok((low, _)) if o < low => {
                tracing::warn!(
                    partition = %partition_name(topic, partition), journaled = o, first = low,
                    skipped = low - o,
                    "events between the journal's position and the partition's start were deleted by retention before ripcord read them; resuming at the first one left"
                );
                Some(low)
            }
            _ => Some(o),
        }
    }

    /// Where a partition the journal has never seen starts: the group's
    /// committed offset; else, with `auto.offset.reset=earliest`, its
    /// start; else the first event produced after ripcord started, so
    /// that nothing sent while the group was still forming is lost (events
    /// before that only warm the windows).
    fn start_without_journal(
        &self,
        consumer: &BaseConsumer<Self>,
        topic: &str,
        partition: i32,
    ) -> Offset {
        let timeout = Duration::from_secs(5);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        if let Ok(committed) = consumer.committed_offsets(tpl, timeout) {
            if let Some(Offset::Offset(o)) = committed
                .find_partition(topic, partition)
                .map(|e| e.offset())
            {
                return Offset::Offset(o);
            }
        }
        let (low, high) = match consumer.fetch_watermarks(topic, partition, timeout) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(topic, partition, error = %e, "cannot read the partition's watermarks; using auto.offset.reset");
                return Offset::Stored;
            }
        };
        if self.from_earliest || low >= high {
            return Offset::Offset(low);
        }
        match self.offset_at_start(topic, partition, low, high) {
            Ok(o) => Offset::Offset(o),
            Err(e) => {
                tracing::warn!(topic, partition, error = %e, "cannot find the offset of ripcord's start time; starting at the partition's end");
                Offset::Offset(high)
            }
        }
    }

    /// The first offset in `low..high` whose message was produced at or
    /// after ripcord's start: the broker's time index, checked against the
    /// messages themselves (librdkafka's mock cluster, the embedded broker,
    /// answers "the end" to every time), else a binary search by timestamp.
    fn offset_at_start(
        &self,
        topic: &str,
        partition: i32,
        low: i64,
        high: i64,
    ) -> Result<i64, KafkaError> {
        let timeout = Duration::from_secs(5);
        let reader: BaseConsumer<HelperContext> = self
            .reader
            .clone()
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set_log_level(RDKafkaLogLevel::Warning)
            .create_with_context(HelperContext {
                log: ClientLog::new("start-offset reader"),
                metrics: self.metrics.clone(),
            })?;
        let high = true_end(&reader, topic, partition, high)?;
        let mut query = TopicPartitionList::new();
        query.add_partition_offset(topic, partition, Offset::Offset(self.started_ms))?;
        let answer = match reader.offsets_for_times(query, timeout) {
            Ok(found) => match found.find_partition(topic, partition).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o.clamp(low, high),
                _ => high,
            },
            Err(_) => high,
        };
        let produced_after = |offset: i64| -> Result<bool, KafkaError> {
            Ok(timestamp_at(&reader, topic, partition, offset)?
                .is_none_or(|t| t >= self.started_ms))
        };
        if answer == low || !produced_after(answer - 1)? {
            return Ok(answer);
        }
        // The message before the answer is itself new: search `low..answer`
        // for the first new one (timestamps rise with offsets closely
        // enough for this; a stray old one only warms).
        let (mut lo, mut hi) = (low, answer - 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if produced_after(mid)? {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(lo)
    }
}

/// How this run meets its broker.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    /// When ripcord started: what is produced from then on is acted on.
    pub at: crate::time::Ts,
    /// The broker is the embedded one (new at every start).
    pub embedded: bool,
}

/// The consumer loop.
pub struct KafkaSource {
    /// Shared with `poll_batch`'s borrowed messages while the loop feeds
    /// them on (`&mut self`).
    consumer: Arc<BaseConsumer<Context>>,
    cfg: KafkaConfig,
    brokers: String,
    pipeline: Arc<Mutex<Pipeline>>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    health: Arc<Health>,
    dead_letters: Option<ThreadedProducer<HelperContext>>,
    ids: PartitionIds,
    /// Partitions that reached their end: their clocks may follow the wall.
    caught_up: HashMap<PartitionId, bool>,
    /// Made at the start, kept (see [`KafkaSource::new_warm_reader`]).
    warm_reader: Option<BaseConsumer<HelperContext>>,
    /// Messages of partitions assigned but not warmed yet, polled in the
    /// same turn as their assignment: taken once the partition is warmed.
    held: Vec<rdkafka::message::OwnedMessage>,
    last_tick: Instant,
    /// When `between` last handed the loop work (an HTTP request).
    last_between_work: Instant,
    last_error_log: Option<Instant>,
    error_burst: u64,
}

/// The timestamp of the message at `offset`, if it can be read.
fn timestamp_at(
    reader: &BaseConsumer<HelperContext>,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<i64>, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    reader.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(m)) if m.topic() == topic && m.partition() == partition => {
                return Ok(m.timestamp().to_millis());
            }
            Some(Err(KafkaError::PartitionEOF(p))) if p == partition => return Ok(None),
            Some(_) | None => {}
        }
    }
    Ok(None)
}

/// The partition's end, read off the messages: the broker's high
/// watermark, unless messages lie past it (tansu reports the last batch's
/// first offset plus one), then one past the last of them.
fn true_end(
    reader: &BaseConsumer<HelperContext>,
    topic: &str,
    partition: i32,
    high: i64,
) -> Result<i64, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(high))?;
    reader.assign(&tpl)?;
    let mut end = high;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => end = end.max(m.offset() + 1),
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(_)) | None => {}
        }
    }
    Ok(end)
}

/// Pipeline ids by topic, then partition number: found without allocating,
/// once per message.
type PartitionIds = Vec<(String, Vec<Option<PartitionId>>)>;

fn partition_id(
    ids: &mut PartitionIds,
    pipeline: &Mutex<Pipeline>,
    topic: &str,
    partition: i32,
) -> PartitionId {
    let t = match ids.iter().position(|(name, _)| name == topic) {
        Some(t) => t,
        None => {
            ids.push((topic.to_owned(), Vec::new()));
            ids.len() - 1
        }
    };
    let slots = &mut ids[t].1;
    let i = partition.max(0) as usize;
    if i >= slots.len() {
        slots.resize(i + 1, None);
    }
    if let Some(id) = slots[i] {
        return id;
    }
    let id = lock(pipeline).partition(&partition_name(topic, partition));
    slots[i] = Some(id);
    id
}

/// Whether a `kafka.properties` key says how to reach or authenticate to
/// the cluster, which every client needs, producers included.
fn is_connection_property(key: &str) -> bool {
    const PREFIXES: [&str; 7] = [
        "security.",
        "ssl.",
        "sasl.",
        "socket.",
        "broker.",
        "client.",
        "enable.ssl.",
    ];
    PREFIXES.iter().any(|p| key.starts_with(p))
}

/// The brokers and the connection properties (TLS, SASL, sockets): the
/// start of every client's config, so the warm-up reader and the
/// dead-letter producer reach a secured cluster as the consumer does.
pub(crate) fn connection_config(cfg: &KafkaConfig, brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in cfg
        .properties
        .iter()
        .filter(|(k, _)| is_connection_property(k))
    {
        c.set(k, v.expose());
    }
    c
}

/// librdkafka settings ripcord relies on; `kafka.properties` may add to or
/// override the tunables, not the delivery semantics.
fn consumer_config(cfg: &KafkaConfig, brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("group.id", &cfg.group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("auto.offset.reset", "latest")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "10")
        .set("fetch.min.bytes", "1")
        .set("queued.min.messages", "100000")
        .set("fetch.queue.backoff.ms", "1")
        // Once a second: consumer lag for the metrics, and the group state
        // that says a member holding no partition has joined.
        .set("statistics.interval.ms", "1000")
        .set("max.poll.interval.ms", "600000")
        .set("group.protocol", cfg.group_protocol.as_str())
        .set_log_level(RDKafkaLogLevel::Warning);
    if cfg.group_protocol == GroupProtocol::Classic {
        // With KIP-848 the broker decides these (and librdkafka refuses them).
        c.set("partition.assignment.strategy", "range,roundrobin")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000");
    }
    for (k, v) in &cfg.properties {
        c.set(k, v.expose());
    }
    if cfg.properties.iter().any(|(k, _)| k == "debug") {
        // librdkafka's own debug contexts were asked for: let them through.
        c.set_log_level(RDKafkaLogLevel::Debug);
    }
    // Delivery semantics are not negotiable.
    c.set("enable.auto.offset.store", "false");
    c
}

impl KafkaSource {
    pub fn new(
        cfg: KafkaConfig,
        brokers: String,
        pipeline: Arc<Mutex<Pipeline>>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        health: Arc<Health>,
        start: Start,
    ) -> Result<KafkaSource, KafkaSourceError> {
        let mut reader = connection_config(&cfg, &brokers);
        reader.set("group.id", format!("{}-warmup", cfg.group));
        let context = Context {
            pipeline: pipeline.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            pending: Mutex::new(Vec::new()),
            assigned_news: AtomicBool::new(false),
            group_protocol: cfg.group_protocol,
            lost: Mutex::new(Vec::new()),
            started_ms: start.at.millis(),
            embedded: start.embedded,
            reader,
            log: ClientLog::new("consumer"),
            from_earliest: cfg.properties.iter().any(|(k, v)| {
                k == "auto.offset.reset"
                    && matches!(v.expose(), "earliest" | "smallest" | "beginning")
            }),
        };
        let consumer: BaseConsumer<Context> =
            consumer_config(&cfg, &brokers).create_with_context(context)?;
        let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let dead_letters = match &cfg.dead_letter_topic {
            None => None,
            Some(_) => Some(
                connection_config(&cfg, &brokers)
                    .set("linger.ms", "5")
                    .set("message.timeout.ms", "30000")
                    .create_with_context(HelperContext {
                        log: ClientLog::new("dead-letter producer"),
                        metrics: metrics.clone(),
                    })?,
            ),
        };
        let mut source = KafkaSource {
            consumer: Arc::new(consumer),
            cfg,
            brokers,
            pipeline,
            metrics,
            clock,
            health,
            dead_letters,
            ids: Vec::new(),
            caught_up: HashMap::new(),
            held: Vec::new(),
            warm_reader: None,
            last_tick: Instant::now(),
            last_between_work: Instant::now()
                .checked_sub(BUSY_FOR)
                .unwrap_or_else(Instant::now),
            last_error_log: None,
            error_burst: 0,
        };
        if source.cfg.warm_up {
            // Made now, so its connection is up before a failover needs it.
            source.warm_reader = Some(source.new_warm_reader()?);
        }
        Ok(source)
    }

    fn id(&mut self, topic: &str, partition: i32) -> PartitionId {
        partition_id(&mut self.ids, &self.pipeline, topic, partition)
    }

    /// Runs until `stop` is set, then journals the last batch and commits
    /// offsets synchronously. `between` runs once per loop turn (the HTTP
    /// intake hooks in there).
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        mut between: impl FnMut(&mut Pipeline),
    ) -> Result<(), KafkaSourceError> {
        while !stop.load(Ordering::Relaxed) {
            self.health.turned();
            self.warm_pending()?;
            // Work from `between` (HTTP requests waiting for their answer)
            // is committed this turn: Kafka is not waited for then.
            let wait = {
                let mut p = lock(&self.pipeline);
                between(&mut p);
                if p.dirty() {
                    self.last_between_work = Instant::now();
                    Duration::ZERO
                } else if self.last_between_work.elapsed() < BUSY_FOR {
                    BUSY_WAIT
                } else {
                    IDLE_WAIT
                }
            };
            let got = self.poll_batch(wait);
            if self.last_tick.elapsed() >= Duration::from_secs(1) {
                self.tick();
            }
            self.commit(stop);
            if got == 0 && !lock(&self.pipeline).dirty() {
                // Nothing came in; poll_batch already waited a little.
                continue;
            }
        }
        self.commit(stop);
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last auto-commit is also fine: the
            // journal positions are what assignment resumes from.
            tracing::debug!(error = %e, "final offset commit");
        }
        if let Some(p) = &self.dead_letters {
            let _ = p.flush(Duration::from_secs(5));
        }
        self.consumer.unsubscribe();
        Ok(())
    }

    /// Polls up to `max_batch` messages into the pipeline. Waits up to
    /// `wait` for the first one only.
    fn poll_batch(&mut self, wait: Duration) -> usize {
        let mut got = 0;
        // Events, not messages: an Alertmanager payload holds several.
        let mut processed = 0u64;
        let consumer = self.consumer.clone();
        while got < self.cfg.max_batch {
            let timeout = if got == 0 { wait } else { Duration::ZERO };
            let msg = match consumer.poll(timeout) {
                None => break,
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    // The EOF names the partition, not the topic.
                    for (_, slots) in &self.ids {
                        if let Some(Some(id)) = slots.get(partition.max(0) as usize) {
                            self.caught_up.insert(*id, true);
                        }
                    }
                    if self
                        .consumer
                        .context()
                        .assigned_news
                        .load(Ordering::Acquire)
                    {
                        break;
                    }
                    continue;
                }
                Some(Err(e)) => {
                    // A broker outage repeats the same error on every poll:
                    // say it once every 10 s, with a count.
                    self.error_burst += 1;
                    if self
                        .last_error_log
                        .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
                    {
                        tracing::warn!(error = %e, repeats = self.error_burst, "kafka consumer error");
                        self.last_error_log = Some(Instant::now());
                        self.error_burst = 0;
                    }
                    break;
                }
                Some(Ok(m)) => m,
            };
            got += 1;
            // An assignment came in during this poll: warm it before
            // another message; one of its own is held until then.
            let news = self
                .consumer
                .context()
                .assigned_news
                .load(Ordering::Acquire);
            if news && self.warming(msg.topic(), msg.partition()) {
                self.held.push(msg.detach());
                break;
            }
            processed += self.take(&msg);
            if news {
                break;
            }
        }
        if processed > 0 {
            self.metrics
                .events(Source::Kafka, Outcome::Processed, processed);
        }
        got
    }

    /// Whether `topic`/`partition` was assigned and waits to be warmed.
    fn warming(&self, topic: &str, partition: i32) -> bool {
        self.consumer
            .context()
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|a| a.topic == topic && a.partition == partition)
    }

    /// Feeds one message to the pipeline (a poison one is counted, logged
    /// and dead-lettered); the events it held.
    fn take(&mut self, msg: &impl Message) -> u64 {
        let (topic, partition, offset) = (msg.topic().to_owned(), msg.partition(), msg.offset());
        let id = partition_id(&mut self.ids, &self.pipeline, &topic, partition);
        self.caught_up.insert(id, false);
        if !self.cfg.accept_drill_events && is_marked(msg.headers()) {
            // A drill's event on a topic production reads: never acted on.
            lock(&self.pipeline).pass(id, offset);
            self.metrics.event(Source::Kafka, Outcome::DrillRefused);
            tracing::warn!(topic = %topic, partition, offset, "a drill's event refused: production never acts on a drill (ripcord drill --topic names a topic of its own)");
            return 0;
        }
        let payload = msg.payload().unwrap_or(&[]);
        let result = lock(&self.pipeline).ingest(id, payload, Some(offset));
        match result {
            Ok(n) => n as u64,
            Err(rejected) => {
                let outcome = match &rejected {
                    Rejected::Decode(e) => {
                        self.metrics.decode_error(Source::Kafka, e.reason());
                        Outcome::DecodeError
                    }
                    Rejected::FromTheFuture { .. } => Outcome::FromTheFuture,
                };
                self.metrics.event(Source::Kafka, outcome);
                tracing::warn!(topic = %topic, partition, offset, error = %rejected, "poison message skipped");
                self.dead_letter(msg, &rejected);
                0
            }
        }
    }

    fn dead_letter(&self, msg: &impl Message, why: &Rejected) {
        let (Some(producer), Some(topic)) = (&self.dead_letters, &self.cfg.dead_letter_topic)
        else {
            return;
        };
        let error = why.to_string();
        let offset = msg.offset().to_string();
        let partition = msg.partition().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "ripcord-error",
                value: Some(error.as_bytes()),
            })
            .insert(Header {
                key: "ripcord-source-topic",
                value: Some(msg.topic().as_bytes()),
            })
            .insert(Header {
                key: "ripcord-source-partition",
                value: Some(partition.as_bytes()),
            })
            .insert(Header {
                key: "ripcord-source-offset",
                value: Some(offset.as_bytes()),
            });
        let mut record = BaseRecord::<[u8], [u8]>::to(topic)
            .payload(msg.payload().unwrap_or(&[]))
            .headers(headers);
        if let Some(k) = msg.key() {
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

    /// Moves caught-up partitions' clocks with the wall clock.
    fn tick(&mut self) {
        self.last_tick = Instant::now();
        let mut p = lock(&self.pipeline);
        for (id, caught_up) in &self.caught_up {
            if *caught_up {
                p.tick(*id);
            }
        }
        p.report();
    }

    /// Journals the batch (retrying while the journal refuses), then stores
    /// the batch's offsets in Kafka.
    fn commit(&mut self, stop: &AtomicBool) {
        let Some(committed) =
            crate::pipeline::commit_until_done(&self.pipeline, stop, &self.health)
        else {
            return;
        };
        if !committed.fenced.is_empty() {
            let p = lock(&self.pipeline);
            let mut tpl = TopicPartitionList::new();
            for id in &committed.fenced {
                self.caught_up.remove(id);
                if let Some((topic, partition)) = p.name(*id).rsplit_once('/') {
                    if let Ok(partition) = partition.parse::<i32>() {
                        tpl.add_partition(topic, partition);
                    }
                }
            }
            // Stop fetching what another process owns; the group's next
            // rebalance takes it away for good.
            let _ = self.consumer.pause(&tpl);
        }
        if committed.positions.is_empty() {
            return;
        }
        let p = lock(&self.pipeline);
        for (id, next) in committed.positions {
            let name = p.name(id);
            if let Some((topic, partition)) = name.rsplit_once('/') {
                if let Ok(partition) = partition.parse::<i32>() {
                    // A revoked partition refuses the store: fine, the journal
                    // has the position.
                    let _ = self.consumer.store_offset(topic, partition, next);
                }
            }
        }
    }

    /// Warms newly assigned partitions from their recent history, then
    /// takes the messages of theirs held back meanwhile.
    fn warm_pending(&mut self) -> Result<(), KafkaSourceError> {
        self.consumer
            .context()
            .assigned_news
            .store(false, Ordering::Release);
        let pending: Vec<Assigned> = std::mem::take(
            &mut *self
                .consumer
                .context()
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        let lost: Vec<PartitionId> = std::mem::take(
            &mut *self
                .consumer
                .context()
                .lost
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for id in lost {
            self.caught_up.remove(&id);
        }
        for a in pending {
            self.health.warm_started();
            let id = self.id(&a.topic, a.partition);
            let mut warming = lock(&self.pipeline).start_warm(id);
            if self.cfg.warm_up {
                if let Err(e) = self.read_history(&a, &mut warming) {
                    // Without history the windows fill up live; the journal
                    // still restores open incidents below.
                    tracing::warn!(
                        partition = %partition_name(&a.topic, a.partition), error = %e,
                        "could not re-read recent history; windows start empty"
                    );
                }
            }
            let report = lock(&self.pipeline).finish_warm(id, warming)?;
            tracing::info!(
                partition = %partition_name(&a.topic, a.partition),
                events = report.events,
                open_incidents = report.restored,
                "partition warmed"
            );
            self.health.warmed(&partition_name(&a.topic, a.partition));
            // Its end may have been reported while it warmed.
            self.caught_up.entry(id).or_insert(false);
            let (mine, others) = std::mem::take(&mut self.held)
                .into_iter()
                .partition(|m| m.topic() == a.topic && m.partition() == a.partition);
            self.held = others;
            let mut processed = 0;
            for m in mine {
                processed += self.take(&m);
            }
            if processed > 0 {
                self.metrics
                    .events(Source::Kafka, Outcome::Processed, processed);
            }
        }
        // Held messages of partitions revoked before they were warmed: the
        // next owner reads them.
        self.held.clear();
        Ok(())
    }

    /// Feeds `w` the partition's events from `now - lookback` up to where
    /// live consumption resumes.
    fn read_history(
        &mut self,
        a: &Assigned,
        w: &mut crate::pipeline::Warming,
    ) -> Result<(), KafkaSourceError> {
        let began = Instant::now();
        let partition = partition_name(&a.topic, a.partition);
        // Where a warm-up's time goes (it delays the partition's first
        // decision after an assignment).
        let step = |what: &str| tracing::debug!(partition = %partition, elapsed_ms = began.elapsed().as_millis() as u64, "warm-up: {what}");
        let timeout = Duration::from_secs(10);
        // Where live consumption will start.
        let end = match a.start {
            Offset::Offset(o) => o,
            _ => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&a.topic, a.partition);
                let committed = self.consumer.committed_offsets(tpl, timeout)?;
                match committed
                    .find_partition(&a.topic, a.partition)
                    .map(|e| e.offset())
                {
                    Some(Offset::Offset(o)) => o,
                    // Nothing committed: `auto.offset.reset=latest` starts at the end.
                    _ => {
                        self.consumer
                            .fetch_watermarks(&a.topic, a.partition, timeout)?
                            .1
                    }
                }
            }
        };
        if self.warm_reader.is_none() {
            self.warm_reader = Some(self.new_warm_reader()?);
            step("reader created");
        }
        let reader = self.warm_reader.as_ref().expect("made above");
        let read = self.read_history_with(reader, a, end, w, &step);
        // Idle until the next warm-up (nothing fetched meanwhile).
        if let Err(e) = reader.unassign() {
            tracing::debug!(error = %e, "warm-up reader: unassign");
        }
        read
    }

    /// The reader that re-reads history, kept for the source's life: a
    /// new one per warm-up cost ~100 ms at its close (librdkafka waits for
    /// its threads), on the way to the partition's first decision. Every
    /// consumer property (TLS, SASL and tunables alike), then what a
    /// reader that never joins the group needs.
    fn new_warm_reader(&self) -> Result<BaseConsumer<HelperContext>, KafkaSourceError> {
        let mut reader = connection_config(&self.cfg, &self.brokers);
        for (k, v) in &self.cfg.properties {
            reader.set(k, v.expose());
        }
        let debug = self.cfg.properties.iter().any(|(k, _)| k == "debug");
        Ok(reader
            .set("group.id", format!("{}-warmup", self.cfg.group))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set_log_level(if debug {
                RDKafkaLogLevel::Debug
            } else {
                RDKafkaLogLevel::Warning
            })
            .create_with_context(HelperContext {
                log: ClientLog::new("warm-up reader"),
                metrics: self.metrics.clone(),
            })?)
    }

    /// [`Self::read_history`] from the offset the lookback starts at to
    /// `end`, with `reader`.
    fn read_history_with(
        &self,
        reader: &BaseConsumer<HelperContext>,
        a: &Assigned,
        end: i64,
        w: &mut crate::pipeline::Warming,
        step: &dyn Fn(&str),
    ) -> Result<(), KafkaSourceError> {
        let lookback = lock(&self.pipeline).lookback();
        let accept_drill = self.cfg.accept_drill_events;
        let timeout = Duration::from_secs(10);
        let since = self.clock.now().saturating_sub(lookback).millis();
        let mut query = TopicPartitionList::new();
        query.add_partition_offset(&a.topic, a.partition, Offset::Offset(since))?;
        // Offsets for times; where the broker cannot answer that (librdkafka's
        // mock cluster), scan back a bounded number of messages instead and
        // skip the ones older than the lookback by their timestamp.
        let (low, _) = reader.fetch_watermarks(&a.topic, a.partition, timeout)?;
        step("watermarks read");
        let scan_back = low.max(end - self.cfg.warm_up_max_messages as i64);
        let begin = match reader.offsets_for_times(query, timeout) {
            Ok(found) => match found
                .find_partition(&a.topic, a.partition)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) => o,
                _ => end,
            },
            Err(e) => {
                tracing::info!(error = %e, "broker cannot look up offsets by time; scanning back instead");
                scan_back
            }
        };
        // Trust but verify: if the message just before the answer is itself
        // recent, the broker's time index is wrong (librdkafka's mock cluster
        // answers "end" to every time): scan back instead.
        step("offsets for times read");
        let begin = if begin > low
            && begin > scan_back
            && timestamp_at(reader, &a.topic, a.partition, begin - 1)?.is_some_and(|t| t >= since)
        {
            scan_back
        } else {
            begin
        };
        step("start checked");
        if begin >= end {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&a.topic, a.partition, Offset::Offset(begin))?;
        reader.assign(&tpl)?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            match reader.poll(Duration::from_millis(200)) {
                // The reader is reused: what an earlier assignment left
                // queued is not this partition's history.
                Some(Ok(m)) if m.topic() != a.topic || m.partition() != a.partition => {}
                Some(Ok(m)) => {
                    if m.offset() >= end {
                        break;
                    }
                    let recent = m.timestamp().to_millis().is_none_or(|t| t >= since);
                    let drill = !accept_drill && is_marked(m.headers());
                    if recent && !drill {
                        w.feed(m.payload().unwrap_or(&[]));
                    }
                    if m.offset() + 1 >= end {
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) if p == a.partition => break,
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "warm-up read error");
                }
                None => {}
            }
        }
        Ok(())
    }
}
