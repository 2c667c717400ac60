//! The Kafka source: a consumer-group member feeding the pipeline's
//! shards. Its poll thread only routes: each assigned partition goes to
//! one shard ([`super::kafka_shards`]), which claims it, warms it
//! ([`super::kafka_history`]), decides and journals; the poll thread then
//! stores as offsets what the shard journaled.
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
//! keeps librdkafka's local queue full under load so the poll thread never
//! waits on the network; batches of up to `kafka.max_batch` messages share
//! one journal transaction per shard; `enable.partition.eof` tells the loop when a
//! partition is caught up (only then does wall-clock time move its windows).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{Producer, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

pub use super::kafka_client::KafkaSourceError;
use super::kafka_client::{ClientLog, HelperContext, connection_config, timestamp_at};
use super::kafka_client::{is_marked, partition_name};
use super::kafka_config::{GroupProtocol, KafkaConfig};
use super::kafka_history::KafkaHistory;
use super::kafka_shards::{self, KafkaUpstream, Router, Said};
use crate::health::Health;
use crate::journal::Ingest;
use crate::pipeline::driver::{Driver, History};
use crate::pipeline::input::Assignment;
use crate::telemetry::Metrics;
use crate::time::Clock;

/// How long the poll thread waits for Kafka when nothing is buffered
/// (a blocking wait: librdkafka returns as soon as a message comes). It is
/// also how soon the thread sees the stop flag and stores offsets the
/// shards journaled. HTTP does not wait on it: HTTP feeds its shard itself.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// Callbacks librdkafka makes from inside `poll`, on the poll thread.
struct Context {
    /// The shards, and the batches being built for them. Locked by the
    /// poll thread for each message and by the rebalance callback (which
    /// runs inside `poll`, on the same thread): never contended.
    router: Mutex<Router>,
    /// Reads each assigned partition's journaled position.
    positions: Mutex<Box<dyn Ingest + Send>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    group_protocol: GroupProtocol,
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

/// A lock whose holder panicked still guards data worth using.
fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
    /// journal says and are claimed and warmed by their shard before it
    /// takes their first message, and revoked ones have their in-flight
    /// batch journaled before another member takes over. The classic
    /// protocol is eager (everything is revoked, then the new assignment
    /// handed over whole); KIP-848's is incremental (only the partitions
    /// that move are named, and the rest keep consuming).
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
                let mut router = lock(&self.router);
                for e in tpl.elements() {
                    let name = partition_name(e.topic(), e.partition());
                    let journaled = match lock(&self.positions).position(&name) {
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
                    let _ = assign.add_partition_offset(e.topic(), e.partition(), start);
                    assigned.push(Assignment {
                        slot: router.slot(e.topic(), e.partition()),
                        name,
                        topic: e.topic().to_owned(),
                        partition: e.partition(),
                        resume_at: match start {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        },
                    });
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
                // Not paused for the warm-up: the shard claims and warms
                // before it takes another input (their messages queue
                // behind the assignment). A pause and resume would cost
                // up to a second: librdkafka's fetcher is not woken by a
                // resume and sleeps up to 1 s with nothing to fetch
                // (`rd_kafka_max_block_ms`, rdkafka_broker.c).
                let names: Vec<String> = assigned.iter().map(|a| a.name.clone()).collect();
                tracing::info!(partitions = ?names, "partitions assigned");
                self.health.assigned(names);
                router.assign(assigned);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                // Journal what was processed for these partitions before
                // letting them go, so the next owner resumes after it.
                lock(&self.router).revoke(&revoked);
                self.health
                    .revoked(revoked.iter().map(|(t, p)| partition_name(t, *p)));
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
            .create_with_context(HelperContext::new(
                "start-offset reader",
                self.metrics.clone(),
            ))?;
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

/// The poll thread: a consumer-group member that routes each message to
/// the shard owning its partition, and stores as offsets what the shards
/// journaled.
pub struct KafkaSource {
    consumer: BaseConsumer<Context>,
    said: Receiver<Said>,
    dead_letters: Option<Arc<ThreadedProducer<HelperContext>>>,
    last_error_log: Option<Instant>,
    error_burst: u64,
}

/// What the source needs besides its config.
pub struct Parts {
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub health: Arc<Health>,
    pub start: Start,
    /// A connection that reads partitions' journaled positions.
    pub positions: Box<dyn Ingest + Send>,
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
    /// Joins the group and starts `drivers` (the pipeline's shards) with
    /// their warm-up readers and their way back to this source.
    pub fn new(
        cfg: KafkaConfig,
        brokers: String,
        drivers: Vec<Driver>,
        parts: Parts,
    ) -> Result<KafkaSource, KafkaSourceError> {
        let Parts {
            metrics,
            clock,
            health,
            start,
            positions,
        } = parts;
        let dead_letters = match &cfg.dead_letter_topic {
            None => None,
            Some(_) => Some(Arc::new(
                connection_config(&cfg, &brokers)
                    .set("linger.ms", "5")
                    .set("message.timeout.ms", "30000")
                    .create_with_context(HelperContext::new(
                        "dead-letter producer",
                        metrics.clone(),
                    ))?,
            )),
        };
        let (said_tx, said) = kafka_shards::said();
        let mut ready = Vec::new();
        for mut d in drivers {
            let history: Option<Box<dyn History>> = if cfg.warm_up {
                Some(Box::new(KafkaHistory::new(
                    &cfg,
                    &brokers,
                    metrics.clone(),
                    clock.clone(),
                )?))
            } else {
                None
            };
            let upstream = KafkaUpstream {
                said: said_tx.clone(),
                dead_letters: dead_letters.clone().zip(cfg.dead_letter_topic.clone()),
            };
            d.read_from(
                history,
                Box::new(upstream),
                cfg.accept_drill_events,
                cfg.max_batch,
            );
            ready.push(d);
        }
        let mut shards = Vec::new();
        for d in ready {
            match d.spawn() {
                Ok(s) => shards.push(s),
                // The shards started so far stop as they drop.
                Err(e) => return Err(KafkaSourceError::Thread(e)),
            }
        }
        let mut reader = connection_config(&cfg, &brokers);
        reader.set("group.id", format!("{}-warmup", cfg.group));
        let context = Context {
            router: Mutex::new(Router::new(shards, cfg.max_batch)),
            positions: Mutex::new(positions),
            metrics,
            health,
            group_protocol: cfg.group_protocol,
            started_ms: start.at.millis(),
            embedded: start.embedded,
            reader,
            log: ClientLog::new("consumer"),
            from_earliest: cfg.properties.iter().any(|(k, v)| {
                k == "auto.offset.reset"
                    && matches!(v.expose(), "earliest" | "smallest" | "beginning")
            }),
        };
        // On an error from here the context (and with it every shard,
        // see `Shard`'s drop) is dropped: the shards journal and end.
        let consumer: BaseConsumer<Context> =
            consumer_config(&cfg, &brokers).create_with_context(context)?;
        let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(KafkaSource {
            consumer,
            said,
            dead_letters,
            last_error_log: None,
            error_burst: 0,
        })
    }

    /// Runs until `stop` is set; then the shards journal their last
    /// batches, and offsets are stored and committed synchronously.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), KafkaSourceError> {
        while !stop.load(Ordering::Relaxed) {
            self.store_journaled();
            let holds = lock(&self.consumer.context().router).holds();
            let wait = if holds { Duration::ZERO } else { POLL_WAIT };
            match self.consumer.poll(wait) {
                None => lock(&self.consumer.context().router).flush(),
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    // The EOF names the partition, not the topic.
                    lock(&self.consumer.context().router).end(partition);
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
                    lock(&self.consumer.context().router).flush();
                }
                Some(Ok(m)) => {
                    let drill = is_marked(m.headers());
                    lock(&self.consumer.context().router).push(
                        m.topic(),
                        m.partition(),
                        m.offset(),
                        m.payload().unwrap_or(&[]),
                        m.key(),
                        drill,
                    );
                }
            }
        }
        let stopped = lock(&self.consumer.context().router).stop();
        self.store_journaled();
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last auto-commit is also fine: the
            // journal positions are what assignment resumes from.
            tracing::debug!(error = %e, "final offset commit");
        }
        if let Some(p) = &self.dead_letters {
            let _ = p.flush(Duration::from_secs(5));
        }
        self.consumer.unsubscribe();
        stopped.map_err(KafkaSourceError::Journal)
    }

    /// Stores as offsets what the shards journaled, and stops fetching
    /// partitions another process claimed (the group's next rebalance
    /// takes them away for good).
    fn store_journaled(&mut self) {
        while let Ok(said) = self.said.try_recv() {
            let router = lock(&self.consumer.context().router);
            match said {
                Said::Journaled(positions) => {
                    for (slot, next) in positions {
                        if let Some((topic, partition)) = router.place(slot) {
                            // A revoked partition refuses the store: fine,
                            // the journal has the position.
                            let _ = self.consumer.store_offset(topic, partition, next);
                        }
                    }
                }
                Said::Fenced(slots) => {
                    let mut tpl = TopicPartitionList::new();
                    for (topic, partition) in slots.iter().filter_map(|s| router.place(*s)) {
                        tpl.add_partition(topic, partition);
                    }
                    let _ = self.consumer.pause(&tpl);
                }
            }
        }
    }
}
