//! What every Kafka client of ripcord shares: how it reaches the cluster
//! (brokers, TLS, SASL), how its complaints reach the log, its errors, the
//! drill marker, and partition names. Below the consumer, its warm-up
//! readers and the dead-letter producer, which all use it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::kafka_config::KafkaConfig;
use crate::telemetry::Metrics;

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
    #[error("cannot start a pipeline shard's thread: {0}")]
    Thread(std::io::Error),
}

impl From<KafkaError> for KafkaSourceError {
    fn from(e: KafkaError) -> Self {
        match e {
            KafkaError::ClientConfig(_, _, key, _) => KafkaSourceError::Property { key },
            e => KafkaSourceError::Client(e),
        }
    }
}

/// How a librdkafka client's complaints reach ripcord's log: its log lines
/// at their own level, its errors once per 10 s each with a repeat count.
/// With no usable broker (down, or refusing our TLS) librdkafka retries
/// every ~50 ms and reports "all brokers are down" each time: 20 lines a
/// second would bury the cause.
pub(crate) struct ClientLog {
    /// Which of ripcord's clients: consumer, warm-up reader, dead-letter producer.
    client: &'static str,
    /// Errors by text: when each was last logged, how many since.
    said: Mutex<HashMap<String, (Instant, u64)>>,
}

impl ClientLog {
    pub(crate) fn new(client: &'static str) -> ClientLog {
        ClientLog {
            client,
            said: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
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

    pub(crate) fn error(&self, error: KafkaError, reason: &str) {
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

pub fn partition_name(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// The timestamp of the message at `offset`, if it can be read.
pub(crate) fn timestamp_at(
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
