//! Where events come in: Kafka (configured brokers, the embedded one, or
//! none) and HTTP, into the pipeline thread.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::AppError;
use crate::health::Health;
use crate::journal::{Ingest, JournalError};
use crate::output::say;
use crate::pipeline::{HTTP_PARTITION, Pipeline, Submission};
use crate::source::embedded::EmbeddedBroker;
use crate::source::kafka::{KafkaSource, KafkaSourceError, Start};
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

/// The pipeline thread: the Kafka source's loop with HTTP between polls,
/// or HTTP alone. When it fails it says so at once (`failed`): a
/// responder that no longer reads its input must not look healthy.
#[allow(clippy::too_many_arguments)]
pub fn start_pipeline_thread(
    cfg: &KafkaConfig,
    brokers: &Brokers,
    pipeline: Arc<Mutex<Pipeline>>,
    submissions: Receiver<Submission>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    health: Arc<Health>,
    started: Ts,
    stop: Arc<AtomicBool>,
    failed: watch::Sender<bool>,
) -> Result<std::thread::JoinHandle<Result<(), KafkaSourceError>>, AppError> {
    let source = if cfg.enabled {
        let mut kafka = cfg.clone();
        if cfg.brokers.is_none()
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
        Some(KafkaSource::new(
            kafka,
            brokers.list.clone(),
            pipeline.clone(),
            metrics,
            clock,
            health.clone(),
            Start {
                at: started,
                embedded: cfg.brokers.is_none(),
            },
        )?)
    } else {
        None
    };
    std::thread::Builder::new()
        .name("ripcord-pipeline".into())
        .spawn(move || {
            let mut intake = HttpIntake::new(submissions);
            let result = match source {
                Some(mut source) => source.run(&stop, |p| intake.drain(p)),
                None => {
                    intake.run_alone(&pipeline, &stop, &health);
                    Ok(())
                }
            };
            if let Err(e) = &result {
                tracing::error!(error = %e, "the pipeline stopped");
                health.failed(e.to_string());
                failed.send_replace(true);
            }
            result
        })
        .map_err(|e| AppError::Pipeline(e.to_string()))
}

/// Rebuilds the HTTP partition's windows from the journaled request bodies.
pub fn warm_http(
    pipeline: &Mutex<Pipeline>,
    journal: &dyn Ingest,
    clock: &dyn Clock,
) -> Result<(), JournalError> {
    let mut p = pipeline.lock().unwrap_or_else(|e| e.into_inner());
    let id = p.partition(HTTP_PARTITION);
    let since = clock.now().saturating_sub(p.lookback());
    let mut w = p.start_warm(id);
    for body in journal.inbox_since(since)? {
        w.feed(&body);
    }
    let report = p.finish_warm(id, w)?;
    p.follow_inbox_from_now()?;
    tracing::info!(
        events = report.events,
        open_incidents = report.restored,
        "http input warmed"
    );
    Ok(())
}

/// The HTTP side of the pipeline loop: drains accepted requests, moves the
/// HTTP partition's clock when it is quiet, and prunes old request bodies.
struct HttpIntake {
    rx: Receiver<Submission>,
    last_input: Instant,
    last_tick: Instant,
    last_prune: Instant,
    last_follow: Instant,
}

impl HttpIntake {
    fn new(rx: Receiver<Submission>) -> HttpIntake {
        let now = Instant::now();
        HttpIntake {
            rx,
            last_input: now,
            last_tick: now,
            last_prune: now,
            last_follow: now,
        }
    }

    /// The pipeline loop when there is no Kafka: waits for a request (no
    /// busy polling), journals it, and answers it.
    fn run_alone(&mut self, pipeline: &Mutex<Pipeline>, stop: &AtomicBool, health: &Health) {
        while !stop.load(Ordering::Relaxed) {
            health.turned();
            let first = self.rx.recv_timeout(Duration::from_millis(100)).ok();
            {
                let mut p = pipeline.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(s) = first {
                    p.ingest_http(s);
                    self.last_input = Instant::now();
                }
                self.drain(&mut p);
                if !p.dirty() {
                    continue;
                }
            }
            crate::pipeline::commit_until_done(pipeline, stop, health);
        }
        // Requests already taken are answered before the thread ends.
        {
            let mut p = pipeline.lock().unwrap_or_else(|e| e.into_inner());
            self.drain(&mut p);
        }
        crate::pipeline::commit_until_done(pipeline, stop, health);
    }

    fn drain(&mut self, p: &mut Pipeline) {
        for _ in 0..1024 {
            match self.rx.try_recv() {
                Ok(s) => {
                    p.ingest_http(s);
                    self.last_input = Instant::now();
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if self.last_follow.elapsed() >= Duration::from_secs(1) {
            self.last_follow = Instant::now();
            if let Err(e) = p.follow_inbox() {
                tracing::warn!(error = %e, "cannot follow the other replicas' HTTP bodies");
            }
        }
        if self.last_tick.elapsed() >= Duration::from_secs(1)
            && self.last_input.elapsed() >= Duration::from_secs(1)
        {
            self.last_tick = Instant::now();
            let id = p.partition(HTTP_PARTITION);
            p.tick(id);
        }
        if self.last_prune.elapsed() >= Duration::from_secs(60) {
            self.last_prune = Instant::now();
            p.prune_inbox();
        }
    }
}
