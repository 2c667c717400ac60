//! Warm-ups: a partition handed to this member has its last lookback of
//! events re-read (offsets for times) to fill its windows before its first
//! live event, acting on nothing. One reader per pipeline shard, kept for
//! the source's life.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::kafka_client::{
    HelperContext, KafkaSourceError, connection_config, is_marked, timestamp_at,
};
use super::kafka_config::KafkaConfig;
use crate::pipeline::Warming;
use crate::pipeline::driver::History;
use crate::pipeline::input::Assignment;
use crate::telemetry::Metrics;
use crate::time::{Clock, Dur};

/// A shard's warm-up reader.
pub struct KafkaHistory {
    reader: BaseConsumer<HelperContext>,
    clock: Arc<dyn Clock>,
    accept_drill: bool,
    /// Where the broker cannot look offsets up by time, how far back to scan.
    max_messages: usize,
}

impl KafkaHistory {
    /// Made when the source starts, so its connection is up before a
    /// failover needs it (a new one per warm-up cost ~100 ms at its close,
    /// on the way to the partition's first decision). Every consumer
    /// property (TLS, SASL and tunables alike), then what a reader that
    /// never joins the group needs.
    pub fn new(
        cfg: &KafkaConfig,
        brokers: &str,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Result<KafkaHistory, KafkaSourceError> {
        let mut reader = connection_config(cfg, brokers);
        for (k, v) in &cfg.properties {
            reader.set(k, v.expose());
        }
        let debug = cfg.properties.iter().any(|(k, _)| k == "debug");
        let reader = reader
            .set("group.id", format!("{}-warmup", cfg.group))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set_log_level(if debug {
                RDKafkaLogLevel::Debug
            } else {
                RDKafkaLogLevel::Warning
            })
            .create_with_context(HelperContext::new("warm-up reader", metrics))?;
        Ok(KafkaHistory {
            reader,
            clock,
            accept_drill: cfg.accept_drill_events,
            max_messages: cfg.warm_up_max_messages,
        })
    }
}

impl History for KafkaHistory {
    /// Feeds `w` the partition's events from `now - lookback` up to where
    /// live consumption resumes.
    fn replay(&mut self, a: &Assignment, lookback: Dur, w: &mut Warming) -> Result<(), String> {
        let Some(end) = a.resume_at else {
            return Ok(());
        };
        let began = Instant::now();
        // Where a warm-up's time goes (it delays the partition's first
        // decision after an assignment).
        let step = |what: &str| tracing::debug!(partition = %a.name, elapsed_ms = began.elapsed().as_millis() as u64, "warm-up: {what}");
        let read = self.read(a, end, lookback, w, &step);
        // Idle until the next warm-up (nothing fetched meanwhile).
        if let Err(e) = self.reader.unassign() {
            tracing::debug!(error = %e, "warm-up reader: unassign");
        }
        read.map_err(|e| e.to_string())
    }
}

impl KafkaHistory {
    /// The history from the offset the lookback starts at to
    /// `end`.
    fn read(
        &self,
        a: &Assignment,
        end: i64,
        lookback: Dur,
        w: &mut Warming,
        step: &dyn Fn(&str),
    ) -> Result<(), KafkaError> {
        let reader = &self.reader;
        let accept_drill = self.accept_drill;
        let timeout = Duration::from_secs(10);
        let since = self.clock.now().saturating_sub(lookback).millis();
        let mut query = TopicPartitionList::new();
        query.add_partition_offset(&a.topic, a.partition, Offset::Offset(since))?;
        // Offsets for times; where the broker cannot answer that (librdkafka's
        // mock cluster), scan back a bounded number of messages instead and
        // skip the ones older than the lookback by their timestamp.
        let (low, _) = reader.fetch_watermarks(&a.topic, a.partition, timeout)?;
        step("watermarks read");
        let scan_back = low.max(end - self.max_messages as i64);
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
