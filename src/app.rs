//! Wiring for `ripcord run`: every stage built and connected in one place.
//!
//! ```text
//! Kafka ─┐                                   ┌─> stdout (decisions)
//!        ├─> pipeline thread: decode -> engine ─> journal ─┤
//! HTTP ──┘       (one engine per partition)  └─> dispatcher -> handlers
//! ```
//!
//! With `kafka.enabled: false` (or `--no-kafka`) there is no consumer and no
//! broker: the pipeline thread waits on HTTP submissions alone.
//!
//! Shutdown (SIGINT / SIGTERM): readiness drops, the HTTP server stops
//! accepting and answers what it holds, the pipeline journals its last batch
//! and commits offsets, the dispatcher lets running actions finish; all
//! within the grace period.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use crate::action::deliver::Deliverer;
use crate::action::links::LinkSigner;
use crate::action::responder::Responder;
use crate::action::scheduler::Scheduler;
use crate::action::{Dispatcher, Handler};
use crate::api::Api;
use crate::health::Health;
use crate::journal::SharedJournal;
use crate::journal::{Journal, JournalError, PgJournal, SqliteJournal};
use crate::output::{Format, Output, say};
use crate::pipeline::{HTTP_PARTITION, Pipeline, Submission};
use crate::router::router;
use crate::rule::RuleSet;
use crate::settings::Config;
use crate::source::embedded::{EmbeddedBroker, EmbeddedError};
use crate::source::forward::SampleForwarder;
use crate::source::http::Intake;
use crate::source::kafka::{KafkaSource, KafkaSourceError, Start};
use crate::telemetry::Metrics;
use crate::time::{Clock, SystemClock};

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

/// How often the journal's WAL is checkpointed (outside the pipeline's
/// commits): at 10k events/s that keeps it to a few hundred pages.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Rollbacks and pauses running at once (their own lane: messages never
/// take these slots).
const EXECUTOR_SLOTS: usize = 16;
/// Messages being handed to channels at once; a queued one frees its slot.
const MESSAGE_SLOTS: usize = 64;

/// Runs the responder until `shutdown` resolves.
pub async fn run(
    cfg: Config,
    rt: Runtime,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AppError> {
    // Everything produced from here on is acted on (see KafkaSource).
    let started = rt.clock.now();
    let metrics = Arc::new(Metrics::new());
    metrics.watch_budgets(cfg.engine.budgets.clone());
    let owner = instance_name(rt.clock.as_ref());
    // PostgreSQL (a cluster's shared journal: one pool, shared by every
    // part of this process) or SQLite (a connection per part).
    let pg = match &cfg.journal.url {
        Some(url) => Some(PgJournal::connect(
            url,
            cfg.journal.ca_file.as_deref(),
            rt.clock.clone(),
        )?),
        None => None,
    };
    let open = |clock: Arc<dyn Clock>| -> Result<Box<dyn Journal>, JournalError> {
        match &pg {
            Some(p) => Ok(Box::new(p.another())),
            // The pipeline's connection below checkpoints for all.
            None => Ok(Box::new(
                SqliteJournal::open_with_clock(&cfg.journal.path, false, clock)?
                    .without_checkpoints()?,
            )),
        }
    };
    // The pipeline's connection: SQLite's checkpoints run beside it, not
    // in its commits.
    let journal: Box<dyn Journal> = match &pg {
        Some(p) => Box::new(p.another()),
        None => Box::new(
            SqliteJournal::open_with_clock(&cfg.journal.path, false, rt.clock.clone())?
                .checkpoint_in_background(CHECKPOINT_EVERY)?,
        ),
    };

    // Kafka: configured brokers, the embedded one, or none at all.
    let _embedded;
    // Where Kafka clients connect, as the banner says (the embedded
    // broker's own address is only ripcord's).
    let mut bootstrap = None;
    let brokers = match &cfg.kafka.brokers {
        _ if !cfg.kafka.enabled => {
            say("kafka: disabled; events come over HTTP only");
            String::new()
        }
        Some(b) => b.clone(),
        None => {
            let default = SocketAddr::from(([127, 0, 0, 1], 9092));
            let wanted = cfg.kafka.embedded_listen.unwrap_or(default);
            let broker = EmbeddedBroker::start(
                &cfg.kafka.topics,
                cfg.kafka.embedded_partitions,
                wanted,
                cfg.kafka.embedded_listen.is_some(),
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
                cfg.kafka.topics.join(",")
            ));
            let direct = broker.direct.clone();
            bootstrap = Some(broker.listen.to_string());
            _embedded = broker;
            direct
        }
    };

    let notify = Arc::new(Notify::new());
    let output = Output::spawn(rt.decisions_out, rt.format, metrics.clone());
    let mut pipeline = Pipeline::new(
        rt.rules.clone(),
        cfg.engine.clone(),
        journal,
        rt.clock.clone(),
        metrics.clone(),
        output.clone(),
        notify.clone(),
    );
    pipeline.set_max_future(cfg.max_future);
    pipeline.set_owner(owner.clone());
    pipeline.set_gates(cfg.gates.clone());
    // Side tasks (alert charts, the journal's gauges) stop on this.
    let (side_stop_tx, side_stop_rx) = watch::channel(false);
    // Alert charts: fetched from Prometheus on a task and a journal
    // connection of their own, after the decisions are journaled.
    let charts_task = match &cfg.prometheus {
        Some(p) => {
            let (charts, task) = crate::report::prometheus::start(
                p.clone(),
                Arc::new(Mutex::new(open(rt.clock.clone())?)),
                rt.clock.clone(),
                metrics.clone(),
                side_stop_rx,
            )
            .map_err(|e| AppError::Pipeline(format!("prometheus client: {e}")))?;
            pipeline.set_charts(charts);
            Some(task)
        }
        None => None,
    };
    let pipeline = Arc::new(Mutex::new(pipeline));
    warm_http(&pipeline, &*open(rt.clock.clone())?, rt.clock.as_ref())?;

    // HTTP.
    let (submit, submissions) = std::sync::mpsc::sync_channel::<Submission>(cfg.http.queue);
    let health = Arc::new(Health::new(
        cfg.kafka.enabled,
        cfg.http.stall_after.to_std(),
    ));
    // Replicas sharing a journal and a Kafka cluster: a sample posted to
    // any of them goes onto the topic, to its service's partition owner.
    // (Alone, or on the embedded broker, this replica owns every window.)
    let forward = match (&cfg.kafka.brokers, &cfg.journal.url) {
        (Some(b), Some(_)) if cfg.kafka.enabled => {
            say("http: metric samples are produced onto Kafka for their partition's owner");
            Some(SampleForwarder::new(&cfg.kafka, b, metrics.clone())?)
        }
        _ => None,
    };
    let intake = Arc::new(Intake {
        submit,
        token: cfg.http.token.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
        max_body_bytes: cfg.http.max_body_bytes,
        ack_timeout: Duration::from_secs(10),
        clock: rt.clock.clone(),
        max_future: cfg.max_future,
        forward,
    });
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .map_err(|source| AppError::Listen {
            addr: cfg.http.listen,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| AppError::Listen {
        addr: cfg.http.listen,
        source,
    })?;
    say(&format!("http: listening on {http_addr}"));
    // The action layer: channel workers, the responder, the scheduler, the API.
    let shared: SharedJournal = Arc::new(Mutex::new(open(rt.clock.clone())?));
    let (actions_stop_tx, actions_stop_rx) = watch::channel(false);
    let http_client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| AppError::Pipeline(format!("http client: {e}")))?;
    let (deliverer, channel_tasks) = Deliverer::start(
        cfg.actions.channels.iter().cloned(),
        http_client,
        rt.clock.clone(),
        shared.clone(),
        metrics.clone(),
        actions_stop_rx.clone(),
    );
    let links = match (&cfg.actions.approvals.link_secret, &cfg.http.public_url) {
        (Some(key), Some(base)) => Some(LinkSigner::new(
            key.clone(),
            base.clone(),
            cfg.actions.approvals.expire_after,
        )),
        _ => None,
    };
    let silences = Arc::new(crate::silence::Guard::new(
        cfg.silences.windows.clone(),
        cfg.silences.limits,
        cfg.engine.budgets.silences.clone(),
    ));
    // The executor lane's own connection: a rollback's claim, admission and
    // outcome never queue behind a flood of message bookkeeping on `shared`.
    let executor_journal: SharedJournal = Arc::new(Mutex::new({
        let mut j = open(rt.clock.clone())?;
        j.prefer_writes();
        j
    }));
    let (handler, verifications): (Arc<dyn Handler>, _) = match rt.handler {
        Some(h) => (h, None),
        None => {
            let responder = Responder {
                journal: shared.clone(),
                deliverer: deliverer.clone(),
                cfg: cfg.actions.clone(),
                clock: rt.clock.clone(),
                links: links.clone(),
                wake: notify.clone(),
                metrics: metrics.clone(),
                silences: silences.clone(),
                findings: Some(intake.submit.clone()),
            };
            let executors = Arc::new(Responder {
                journal: executor_journal.clone(),
                ..responder.clone()
            });
            let messages = Arc::new(responder);
            let verifying =
                tokio::spawn(messages.clone().verification_loop(actions_stop_rx.clone()));
            let by_lane: Arc<dyn Handler> = Arc::new(crate::action::ByLane {
                executors,
                messages,
            });
            (by_lane, Some(verifying))
        }
    };
    let scheduler = Scheduler {
        journal: shared.clone(),
        deliverer: deliverer.clone(),
        cfg: cfg.actions.clone(),
        clock: rt.clock.clone(),
        links: links.clone(),
        wake: notify.clone(),
        owner: owner.clone(),
        output: Some(output.clone()),
        silences: silences.clone(),
    };
    let scheduler_task = tokio::spawn(scheduler.run(actions_stop_rx.clone()));
    // People (the API, the console, the silences API) read and act on a
    // connection of their own: however many read, the dispatcher, its
    // heartbeat and the rollbacks never wait for the lock they hold.
    let people: SharedJournal = Arc::new(Mutex::new(open(rt.clock.clone())?));
    let api = Arc::new(Api {
        journal: people.clone(),
        cfg: cfg.actions.clone(),
        clock: rt.clock.clone(),
        links,
        wake: notify.clone(),
    });

    let gates = Arc::new(crate::gate::http::Gates {
        journal: Arc::new(Mutex::new(open(rt.clock.clone())?)),
        cfg: cfg.gates.clone(),
        tiers: cfg.engine.tiers.clone(),
        clock: rt.clock.clone(),
        windows: cfg.silences.clone(),
        asked: Default::default(),
    });
    let silence_api = Arc::new(crate::silence::http::SilenceApi {
        journal: people,
        clock: rt.clock.clone(),
        guard: silences.clone(),
    });
    let alertmanager_api = Arc::new(crate::alertmanager::AlertmanagerApi {
        intake: intake.clone(),
        silences: silence_api.clone(),
        started,
    });

    let (http_stop_tx, http_stop_rx) = watch::channel(false);
    let app = router(
        intake,
        crate::api::protected(api.clone())
            .merge(crate::gate::http::protected_routes(gates.clone()))
            .merge(crate::silence::http::routes(silence_api))
            .merge(crate::alertmanager::routes(alertmanager_api)),
        crate::gate::http::open_routes(gates.clone()).merge(crate::console::routes(
            crate::console::links::routes(api.clone()),
            Arc::new(crate::console::Console {
                api,
                gates,
                silences: silences.clone(),
                budgets: cfg.budgets,
                auth: crate::console::auth::Auth::new(
                    cfg.http.token.clone(),
                    &cfg.http.console,
                    cfg.http.public_url.as_deref(),
                ),
                hosts: Arc::new(crate::console::host::Hosts::new(
                    cfg.http.public_url.as_deref(),
                    &cfg.http.allowed_hosts,
                )),
                sign_ins: Default::default(),
                lists: Default::default(),
            }),
        )),
    );
    let max_connections = crate::server::connection_cap(cfg.http.limits.max_connections);
    if max_connections < cfg.http.limits.max_connections {
        tracing::warn!(
            max_connections,
            configured = cfg.http.limits.max_connections,
            "the open-file limit leaves room for fewer HTTP connections than configured"
        );
    }
    let http = tokio::spawn(crate::server::serve(
        listener,
        app,
        cfg.http.limits,
        max_connections,
        http_stop_rx,
    ));
    health.http_up(true);

    // The pipeline thread.
    let stop = Arc::new(AtomicBool::new(false));
    let (failed_tx, mut failed_rx) = watch::channel(false);
    let source = if cfg.kafka.enabled {
        let mut kafka = cfg.kafka.clone();
        if cfg.kafka.brokers.is_none()
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
            brokers.clone(),
            pipeline.clone(),
            metrics.clone(),
            rt.clock.clone(),
            health.clone(),
            Start {
                at: started,
                embedded: cfg.kafka.brokers.is_none(),
            },
        )?)
    } else {
        None
    };
    let thread_stop = stop.clone();
    let thread_health = health.clone();
    let thread_pipeline = pipeline.clone();
    let worker = std::thread::Builder::new()
        .name("ripcord-pipeline".into())
        .spawn(move || {
            let mut intake = HttpIntake::new(submissions);
            let result = match source {
                Some(mut source) => source.run(&thread_stop, |p| intake.drain(p)),
                None => {
                    intake.run_alone(&thread_pipeline, &thread_stop, &thread_health);
                    Ok(())
                }
            };
            if let Err(e) = &result {
                // Say so at once: a responder that no longer reads its input
                // must not look healthy. The process exits when it notices.
                tracing::error!(error = %e, "the pipeline stopped");
                thread_health.failed(e.to_string());
                failed_tx.send_replace(true);
            }
            result
        })
        .map_err(|e| AppError::Pipeline(e.to_string()))?;

    // The dispatcher; its executor lane on a thread of its own.
    let executor_thread = LaneThread::start("ripcord-executors")?;
    let (dispatch_stop_tx, dispatch_stop_rx) = watch::channel(false);
    let dispatcher = Dispatcher {
        journal: shared,
        executor_journal,
        handler,
        notify,
        owner,
        metrics: metrics.clone(),
        executor_slots: EXECUTOR_SLOTS,
        message_slots: MESSAGE_SLOTS,
        output: Some(output.clone()),
        silences,
        clock: rt.clock.clone(),
        executor_runtime: Some(executor_thread.handle.clone()),
    };
    let grace = cfg.shutdown_grace.to_std();
    let dispatch = tokio::spawn(dispatcher.run(dispatch_stop_rx, grace));
    // Gauges read from the journal (queue depth per lane, the oldest
    // waiting approval), on a connection of their own.
    let watching = tokio::spawn(crate::telemetry::watch_journal(
        Arc::new(Mutex::new(open(rt.clock.clone())?)),
        metrics.clone(),
        rt.clock.clone(),
        Duration::from_secs(5),
        side_stop_tx.subscribe(),
    ));

    // One `ready:` line on stderr when every part first is.
    let (ready_stop_tx, mut ready_stop_rx) = watch::channel(false);
    let ready_line = {
        let health = health.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(what) = health.ready() {
                    say(&format!("ready: {what}"));
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = ready_stop_rx.wait_for(|s| *s) => return,
                }
            }
        })
    };
    if let Some(f) = rt.on_ready {
        f(&Ready {
            http: http_addr,
            brokers: brokers.clone(),
            topic: cfg.kafka.topics[0].clone(),
        });
    }
    let bootstrap = bootstrap.unwrap_or_else(|| brokers.clone());
    tracing::info!(http = %http_addr, brokers = %bootstrap, "ripcord running");

    tokio::select! {
        _ = shutdown => {}
        _ = failed_rx.wait_for(|f| *f) => {
            tracing::error!("shutting down because the pipeline failed");
        }
    }
    let deadline = Instant::now() + grace;
    tracing::info!(grace = ?grace, "shutting down: intake stops, in-flight work finishes");
    // Actions finishing now may wait on a message's outcome: one attempt
    // each from here on, no backoffs of a minute inside the grace period.
    deliverer.drain();
    health.stopping();
    ready_stop_tx.send_replace(true);
    let _ = ready_line.await;
    let _ = http_stop_tx.send(true);
    let _ = tokio::time::timeout(remaining(deadline), http).await;
    stop.store(true, Ordering::Relaxed);
    let joined = tokio::time::timeout(
        remaining(deadline),
        tokio::task::spawn_blocking(move || worker.join()),
    )
    .await;
    let _ = dispatch_stop_tx.send(true);
    let _ = tokio::time::timeout(remaining(deadline), dispatch).await;
    // Messages already handed to channels get the rest of the grace period.
    let _ = actions_stop_tx.send(true);
    let _ = tokio::time::timeout(remaining(deadline), async {
        let _ = scheduler_task.await;
        if let Some(v) = verifications {
            let _ = v.await;
        }
        for t in channel_tasks {
            let _ = t.await;
        }
    })
    .await;
    side_stop_tx.send_replace(true);
    if let Some(t) = charts_task {
        let _ = tokio::time::timeout(remaining(deadline), t).await;
    }
    let _ = tokio::time::timeout(remaining(deadline), watching).await;
    // What is still queued for stdout gets what is left of the grace.
    let left = remaining(deadline);
    let _ = tokio::task::spawn_blocking(move || output.close(left)).await;
    match joined {
        Ok(Ok(Ok(Ok(())))) => Ok(()),
        Ok(Ok(Ok(Err(e)))) => Err(e.into()),
        Ok(Ok(Err(_))) | Ok(Err(_)) => Err(AppError::Pipeline("panicked".into())),
        Err(_) => Err(AppError::Pipeline(
            "did not stop within the grace period".into(),
        )),
    }
}

/// A runtime on a thread of its own, for one dispatcher lane: under a storm
/// of alerts the shared runtime's queues are full of message work, and the
/// OS schedules this thread beside it instead of behind it. It runs until
/// dropped, then gives what still runs a second.
struct LaneThread {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl LaneThread {
    fn start(name: &str) -> Result<LaneThread, AppError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name(name)
            .build()
            .map_err(AppError::ExecutorThread)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                // A dropped sender ends it too.
                let _ = runtime.block_on(stopped);
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(AppError::ExecutorThread)?;
        Ok(LaneThread {
            handle,
            stop: Some(stop),
        })
    }
}

impl Drop for LaneThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Rebuilds the HTTP partition's windows from the journaled request bodies.
fn warm_http(
    pipeline: &Mutex<Pipeline>,
    journal: &dyn Journal,
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
