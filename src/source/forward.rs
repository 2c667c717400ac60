//! HTTP metric samples onto the Kafka topic.
//!
//! In a cluster, a service's windows live on the replica that owns its
//! partition. A sample posted to any replica's `/api/v1/events` is produced
//! onto the topic keyed by its service (as every Kafka producer of ripcord's
//! events is asked to key them), so it reaches that owner and joins the
//! same window as the service's other samples. Alerts and progress stay on
//! the HTTP path: the shared journal already hands them to every replica.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};

use super::kafka_config::KafkaConfig;
use crate::event::Event;
use crate::source::kafka_client::{HelperContext, connection_config};
use crate::telemetry::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("cannot create the Kafka producer for HTTP samples: {0}")]
    Create(#[source] rdkafka::error::KafkaError),
    #[error("Kafka did not take the samples ({0}); nothing of this request was recorded")]
    Produce(#[source] rdkafka::error::KafkaError),
}

/// Produces samples onto the first configured topic.
pub struct SampleForwarder {
    producer: FutureProducer<HelperContext>,
    topic: String,
}

impl std::fmt::Debug for SampleForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampleForwarder")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl SampleForwarder {
    pub fn new(
        cfg: &KafkaConfig,
        brokers: &str,
        metrics: Arc<Metrics>,
    ) -> Result<SampleForwarder, ForwardError> {
        let producer = connection_config(cfg, brokers)
            // Acknowledged by every in-sync replica before the request is
            // answered 2xx: the sender may forget the samples then.
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "1")
            .set("message.timeout.ms", "10000")
            .create_with_context(HelperContext::new("http sample producer", metrics))
            .map_err(ForwardError::Create)?;
        Ok(SampleForwarder {
            producer,
            topic: cfg.topics[0].clone(),
        })
    }

    /// Produces each element and waits until Kafka has every one (or
    /// `timeout` passes). Either all are acknowledged or the request is
    /// refused; a retry after a partial failure repeats some samples, which
    /// a window takes as one more observation of the same value.
    pub async fn forward(
        &self,
        samples: &[(&str, &[u8])],
        timeout: Duration,
    ) -> Result<(), ForwardError> {
        let mut waiting = Vec::with_capacity(samples.len());
        for (key, payload) in samples {
            let record = FutureRecord::to(&self.topic).key(*key).payload(*payload);
            match self.producer.send_result(record) {
                Ok(delivery) => waiting.push(delivery),
                Err((e, _)) => return Err(ForwardError::Produce(e)),
            }
        }
        let all = async {
            for d in waiting {
                match d.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => return Err(ForwardError::Produce(e)),
                    Err(_cancelled) => {
                        return Err(ForwardError::Produce(rdkafka::error::KafkaError::Canceled));
                    }
                }
            }
            Ok(())
        };
        match tokio::time::timeout(timeout, all).await {
            Ok(r) => r,
            Err(_) => Err(ForwardError::Produce(
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::MessageTimedOut,
                ),
            )),
        }
    }
}

/// The key an element is produced under: its service, so one service's
/// samples share a partition (and an owner). `None` when the element is not
/// made of metric samples only (it stays on the HTTP path).
pub fn sample_key<'e>(events: &'e [Event<'_>]) -> Option<&'e str> {
    if events.is_empty() || !events.iter().all(|e| matches!(e, Event::Sample(_))) {
        return None;
    }
    let Event::Sample(s) = &events[0] else {
        return None;
    };
    Some(
        s.labels
            .get("service")
            .or_else(|| s.labels.get("instance"))
            .unwrap_or(s.metric.as_ref()),
    )
}
