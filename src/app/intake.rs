//! Where events come in: Kafka (configured brokers, the embedded one, or
//! none) and HTTP, into the pipeline's shards.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

use super::AppError;
use super::journal::Journals;
use crate::health::Health;
use crate::output::say;
use crate::pipeline::Pipeline;
use crate::pipeline::driver::{Driver, OnFail, Shard, Shared};
use crate::pipeline::input::HttpInput;
use crate::source::embedded::EmbeddedBroker;
use crate::source::kafka::{KafkaSource, KafkaSourceError, Parts as SourceParts, Start};
use crate::source::kafka_config::KafkaConfig;
use crate::telemetry::Metrics;
use crate::time::{Clock, Ts};

/// The Kafka cluster ripcord reads: configured, embedded, or none.
pub struct Brokers {
    /// What ripcord's own clients connect to ("" without Kafka).
    pub list: String,
    /// Where other Kafka clients connect, as the banner says (the embedded
    /// broker's own address is only ripcord's).
    pub bootstrap: String,
    /// Kept running while ripcord runs.
    _embedded: Option<EmbeddedBroker>,
}

impl Brokers {
    pub async fn start(cfg: &KafkaConfig) -> Result<Brokers, AppError> {
        let (list, embedded) = match &cfg.brokers {
            _ if !cfg.enabled => {
                say("kafka: disabled; events come over HTTP only");
                (String::new(), None)
            }
            Some(b) => (b.clone(), None),
            None => {
                let default = SocketAddr::from(([127, 0, 0, 1], 9092));
                let wanted = cfg.embedded_listen.unwrap_or(default);
                let broker = EmbeddedBroker::start(
                    &cfg.topics,
                    cfg.embedded_partitions,
                    wanted,
                    cfg.embedded_listen.is_some(),
                )
                .await?;
                if wanted.port() != 0 && broker.listen != wanted {
                    say(&format!(
                        "kafka: {wanted} is in use; the embedded broker listens on {} instead",
                        broker.listen
                    ));
                }
                say(&format!(
                    "kafka bootstrap: {} topic: {}",
                    broker.listen,
                    cfg.topics.join(",")
                ));
                (broker.direct.clone(), Some(broker))
            }
        };
        let bootstrap = embedded
            .as_ref()
            .map(|b| b.listen.to_string())
            .unwrap_or_else(|| list.clone());
        Ok(Brokers {
            list,
            bootstrap,
            _embedded: embedded,
        })
    }
}

/// The running intake: the Kafka poll thread and the shards it feeds,
/// or (without Kafka) the shards HTTP alone feeds.
pub enum Intake {
    Kafka {
        thread: std::thread::JoinHandle<Result<(), KafkaSourceError>>,
        stop: Arc<AtomicBool>,
    },
    Alone(Vec<Shard>),
}

impl Intake {
    /// Stops reading; every shard journals its last batch (and, with
    /// Kafka, offsets are committed). Blocks.
    pub fn stop(self) -> Result<(), AppError> {
        match self {
            Intake::Kafka { thread, stop } => {
                stop.store(true, Ordering::Relaxed);
                match thread.join() {
                    Ok(r) => r.map_err(AppError::from),
                    Err(_) => Err(AppError::Pipeline("panicked".into())),
                }
            }
            Intake::Alone(shards) => {
                let mut result = Ok(());
                for mut shard in shards {
                    let stopped = shard.stop();
                    if result.is_ok() {
                        result = stopped;
                    }
                }
                result.map_err(AppError::from)
            }
        }
    }
}

/// What the intake is built from.
pub struct Parts<'a> {
    pub cfg: &'a KafkaConfig,
    pub brokers: &'a Brokers,
    /// One pipeline per shard, each with its share of HTTP.
    pub pipelines: Vec<Pipeline>,
    pub http: Vec<HttpInput>,
    /// Where the Kafka source gets the connection that reads assigned
    /// partitions' journaled positions (opened only with Kafka).
    pub journals: &'a Journals,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub health: Arc<Health>,
    pub started: Ts,
    /// Set when a part of the intake fails: a responder that no longer
    /// reads its input must not look healthy.
    pub failed: watch::Sender<bool>,
}

/// Starts the shards and, with Kafka, the poll thread that feeds them.
pub fn start(p: Parts<'_>) -> Result<Intake, AppError> {
    let failed = Arc::new(p.failed);
    let health = p.health.clone();
    let on_fail: OnFail = Arc::new(move |why: String| {
        health.failed(why);
        failed.send_replace(true);
    });
    let shared = Shared::new(p.metrics.clone(), p.health.clone(), on_fail.clone());
    if p.pipelines.is_empty() || p.pipelines.len() != p.http.len() {
        return Err(AppError::Pipeline(
            "every pipeline shard needs its HTTP queue".into(),
        ));
    }
    let drivers: Vec<Driver> = p
        .pipelines
        .into_iter()
        .zip(p.http)
        .enumerate()
        .map(|(i, (pipeline, http))| Driver::new(i, pipeline, Some(http), shared.clone()))
        .collect();
    if !p.cfg.enabled {
        // Without Kafka, HTTP alone feeds the shards.
        let mut shards = Vec::with_capacity(drivers.len());
        for d in drivers {
            // A shard spawned before a failure is stopped when dropped.
            shards.push(d.spawn().map_err(|e| AppError::Pipeline(e.to_string()))?);
        }
        return Ok(Intake::Alone(shards));
    }
    let mut kafka = p.cfg.clone();
    if p.cfg.brokers.is_none()
        && !kafka
            .properties
            .iter()
            .any(|(k, _)| k == "fetch.wait.max.ms")
    {
        // The embedded broker, like tansu, holds a fetch for the whole
        // wait even with data there (Kafka answers at once): a 10 ms
        // wait would be a 10 ms floor on every decision.
        kafka.properties.push((
            "fetch.wait.max.ms".to_owned(),
            crate::config::Secret::new("1"),
        ));
    }
    let mut source = KafkaSource::new(
        kafka,
        p.brokers.list.clone(),
        drivers,
        SourceParts {
            metrics: p.metrics,
            clock: p.clock,
            health: p.health,
            start: Start {
                at: p.started,
                embedded: p.cfg.brokers.is_none(),
            },
            positions: p.journals.part()?,
        },
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("ripcord-kafka".into())
        .spawn(move || {
            let result = source.run(&thread_stop);
            if let Err(e) = &result {
                tracing::error!(error = %e, "the Kafka source stopped");
                on_fail(e.to_string());
            }
            result
        })
        .map_err(|e| AppError::Pipeline(e.to_string()))?;
    Ok(Intake::Kafka { thread, stop })
}
