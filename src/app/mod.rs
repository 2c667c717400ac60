//! Wiring for `ripcord run`: every stage built and connected in one place,
//! [`run`]; each part in a file of its own: [`journal`] (the connections),
//! [`intake`] (Kafka, the pipeline thread), [`http`] (every route),
//! [`actions`] (channels, responder, scheduler, dispatcher), [`shutdown`].
//!
//! ```text
//! Kafka -> poll thread ─┐ (partitions spread, whole)   ┌─> stdout (decisions)
//!                      ├─> shards: decode -> engine -> journal ─┤
//! HTTP ────────────────┘ (one engine per partition)  └─> dispatcher -> handlers
//! ```
//!
//! With `kafka.enabled: false` (or `--no-kafka`) there is no consumer and no
//! broker: the shards wait on HTTP submissions alone, each deciding its
//! services' events.
//!
//! Shutdown (SIGINT / SIGTERM): see [`shutdown`].

mod actions;
mod http;
mod intake;
mod journal;
mod shutdown;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::action::Handler;
use crate::health::Health;
use crate::journal::JournalError;
use crate::output::{Format, Output, say};
use crate::pipeline::Pipeline;
use crate::pipeline::spread::Spread;
use crate::rule::RuleSet;
use crate::settings::Config;
use crate::source::embedded::EmbeddedError;
use crate::source::kafka::KafkaSourceError;
use crate::telemetry::Metrics;
use crate::time::{Clock, SystemClock};
use actions::Actions;
use intake::Brokers;
use journal::Journals;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Kafka(#[from] KafkaSourceError),
    #[error(transparent)]
    EmbeddedBroker(#[from] EmbeddedError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Forward(#[from] crate::source::forward::ForwardError),
    #[error("the pipeline thread failed: {0}")]
    Pipeline(String),
    #[error("cannot start the executor lane's thread: {0}")]
    ExecutorThread(std::io::Error),
}

/// Everything `run` needs besides the config.
pub struct Runtime {
    pub rules: Arc<RuleSet>,
    /// Where decisions are printed (stdout in production), and how.
    pub decisions_out: Box<dyn Write + Send>,
    pub format: Format,
    /// Does the actions; `None`: the [`Responder`] built from the config.
    pub handler: Option<Arc<dyn Handler>>,
    pub clock: Arc<dyn Clock>,
    /// Told about the addresses once bound (tests and `demo` use it).
    pub on_ready: Option<OnReady>,
}

pub type OnReady = Box<dyn FnOnce(&Ready) + Send>;

/// What a started responder listens on.
#[derive(Debug, Clone)]
pub struct Ready {
    pub http: SocketAddr,
    pub brokers: String,
    pub topic: String,
}

impl Runtime {
    pub fn new(rules: Arc<RuleSet>) -> Runtime {
        Runtime {
            rules,
            decisions_out: Box::new(std::io::stdout()),
            format: Format::Json,
            handler: None,
            clock: Arc::new(SystemClock),
            on_ready: None,
        }
    }
}

/// This process's name as owner of the actions it runs: unique per start,
/// so a restarted process never mistakes its predecessor's work for its own.
pub fn instance_name(clock: &dyn Clock) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}/{}/{}", std::process::id(), clock.now().millis())
}

/// Runs the responder until `shutdown` resolves: every part started in the
/// order that lets the next one rely on it, then stopped in reverse.
pub async fn run(
    cfg: Config,
    rt: Runtime,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AppError> {
    let Runtime {
        rules,
        decisions_out,
        format,
        handler,
        clock,
        on_ready,
    } = rt;
    // Everything produced from here on is acted on (see KafkaSource).
    let started = clock.now();
    let metrics = Arc::new(Metrics::new());
    metrics.watch_budgets(cfg.engine.budgets.clone());
    let owner = instance_name(clock.as_ref());
    let journals = Journals::open(&cfg.journal, clock.clone())?;
    let brokers = Brokers::start(&cfg.kafka).await?;

    let notify = Arc::new(Notify::new());
    let output = Output::spawn(decisions_out, format, metrics.clone());
    // One pipeline per shard, each on a journal connection of its own
    // (no shard waits on another's commit). Kafka partitions are spread
    // over them whole, HTTP events by service.
    let shards = cfg.pipeline.shards;
    let mut pipelines = Vec::with_capacity(shards);
    for i in 0..shards {
        let journal = if i == 0 {
            journals.pipeline()?
        } else {
            journals.part()?
        };
        let mut pipeline = Pipeline::new(
            rules.clone(),
            cfg.engine.clone(),
            journal,
            clock.clone(),
            metrics.clone(),
            output.clone(),
            notify.clone(),
        );
        pipeline.set_max_future(cfg.max_future);
        pipeline.set_owner(owner.clone());
        pipeline.set_gates(cfg.gates.clone());
        pipeline.set_spread(Spread {
            index: i,
            of: shards,
        });
        pipelines.push(pipeline);
    }
    let (side_stop, side_stopped) = watch::channel(false);
    let mut side_tasks = Vec::new();
    // Alert charts: fetched from Prometheus on a task and a journal
    // connection of their own, after the decisions are journaled.
    if let Some(p) = &cfg.prometheus {
        let (charts, task) = crate::report::prometheus::start(
            p.clone(),
            {
                let j = journals.shared()?;
                crate::report::prometheus::Keep {
                    evidence: (&j).into(),
                    charts: (&j).into(),
                }
            },
            clock.clone(),
            metrics.clone(),
            side_stopped,
        )
        .map_err(|e| AppError::Pipeline(format!("prometheus client: {e}")))?;
        for p in &mut pipelines {
            p.set_charts(charts.clone());
        }
        side_tasks.push(task);
    }
    crate::pipeline::warm_http(&mut pipelines, &*journals.part()?)?;

    let health = Arc::new(Health::new(
        cfg.kafka.enabled,
        cfg.http.stall_after.to_std(),
    ));
    let (intake, submissions) = http::intake(&cfg, shards, &metrics, &health, &clock)?;
    let (listener, http_addr) = http::bind(&cfg).await?;
    let actions = Actions::start(
        actions::Parts {
            cfg: &cfg,
            clock: clock.clone(),
            journals: &journals,
            metrics: metrics.clone(),
            notify: notify.clone(),
            output: &output,
            owner: &owner,
            findings: intake.submit.clone(),
        },
        handler,
    )?;
    let serving = http::serve(
        http::Parts {
            cfg: &cfg,
            clock: clock.clone(),
            journals: &journals,
            actions: &actions,
            intake,
            notify: notify.clone(),
            started,
        },
        listener,
    )?;
    health.http_up(true);

    let (failed, mut failed_rx) = watch::channel(false);
    let reading = intake::start(intake::Parts {
        cfg: &cfg.kafka,
        brokers: &brokers,
        pipelines,
        http: submissions,
        journals: &journals,
        metrics: metrics.clone(),
        clock: clock.clone(),
        health: health.clone(),
        started,
        failed,
    })?;
    let grace = cfg.shutdown_grace.to_std();
    let dispatching = actions.dispatch(
        actions::DispatchParts {
            clock: clock.clone(),
            metrics: metrics.clone(),
            notify,
            output: &output,
            owner: &owner,
        },
        grace,
    )?;
    // Gauges read from the journal (queue depth per lane, the oldest
    // waiting approval), on a connection of their own.
    side_tasks.push(tokio::spawn(crate::telemetry::watch_journal(
        (&journals.shared()?).into(),
        metrics.clone(),
        clock.clone(),
        Duration::from_secs(5),
        side_stop.subscribe(),
    )));

    let ready = ready_line(health.clone());
    if let Some(f) = on_ready {
        f(&Ready {
            http: http_addr,
            brokers: brokers.list.clone(),
            topic: cfg.kafka.topics[0].clone(),
        });
    }
    tracing::info!(http = %http_addr, brokers = %brokers.bootstrap, "ripcord running");

    tokio::select! {
        _ = shutdown => {}
        _ = failed_rx.wait_for(|f| *f) => {
            tracing::error!("shutting down because the pipeline failed");
        }
    }
    let running = shutdown::Running {
        health,
        deliverer: actions.deliverer.clone(),
        ready,
        serving,
        intake: reading,
        dispatching,
        actions,
        side_stop,
        side_tasks,
        output,
    };
    let stopped = running.stop(grace).await;
    drop(brokers);
    stopped
}

/// One `ready:` line on stderr when every part first is.
fn ready_line(health: Arc<Health>) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            if let Ok(what) = health.ready() {
                say(&format!("ready: {what}"));
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
        }
    });
    (stop, task)
}
