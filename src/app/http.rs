//! ripcord's HTTP side: intake (events, alerts), the API, the gates, the
//! silences, Alertmanager's API and the console, on one listener.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::AppError;
use super::actions::Actions;
use super::journal::Journals;
use crate::api::Api;
use crate::health::Health;
use crate::output::say;
use crate::pipeline::input::{HttpInput, submissions};
use crate::router::router;
use crate::settings::Config;
use crate::source::forward::SampleForwarder;
use crate::source::http::Intake;
use crate::telemetry::Metrics;
use crate::time::{Clock, Ts};

/// Binds the configured address (before anything acts: a port in use
/// stops the start).
pub async fn bind(cfg: &Config) -> Result<(TcpListener, SocketAddr), AppError> {
    let listen = cfg.http.listen;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| AppError::Listen {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| AppError::Listen {
        addr: listen,
        source,
    })?;
    say(&format!("http: listening on {addr}"));
    Ok((listener, addr))
}

/// The HTTP intake and the queues it feeds the shards through.
pub fn intake(
    cfg: &Config,
    shards: usize,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
    clock: &Arc<dyn Clock>,
) -> Result<(Arc<Intake>, Vec<HttpInput>), AppError> {
    let (submit, submissions) = submissions(cfg.http.queue, shards);
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
        clock: clock.clone(),
        max_future: cfg.max_future,
        forward,
    });
    Ok((intake, submissions))
}

/// The server, running.
pub struct Serving {
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl Serving {
    /// Stops accepting and answers what it holds, within `left`.
    pub async fn stop(self, left: Duration) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(left, self.task).await;
    }
}

/// What the routes are built from.
pub struct Parts<'a> {
    pub cfg: &'a Config,
    pub clock: Arc<dyn Clock>,
    pub journals: &'a Journals,
    pub actions: &'a Actions,
    pub intake: Arc<Intake>,
    /// Wakes the dispatcher when an approval released a rollback.
    pub notify: Arc<Notify>,
    /// When this process started (Alertmanager's status says it).
    pub started: Ts,
}

/// Serves every route on `listener`.
pub fn serve(p: Parts<'_>, listener: TcpListener) -> Result<Serving, AppError> {
    let cfg = p.cfg;
    // People (the API, the console, the silences API) read and act on a
    // connection of their own: however many read, the dispatcher, its
    // heartbeat and the rollbacks never wait for the lock they hold.
    let people = p.journals.shared()?;
    let api = Arc::new(Api {
        journal: (&people).into(),
        cfg: cfg.actions.clone(),
        clock: p.clock.clone(),
        links: p.actions.links.clone(),
        wake: p.notify,
    });
    let gates_journal = Arc::new(Mutex::new(p.journals.part()?));
    let gates = Arc::new(crate::gate::http::Gates {
        reads: (&gates_journal).into(),
        verdicts: (&gates_journal).into(),
        cfg: cfg.gates.clone(),
        tiers: cfg.engine.tiers.clone(),
        clock: p.clock.clone(),
        windows: cfg.silences.clone(),
        asked: Default::default(),
    });
    let silence_api = Arc::new(crate::silence::http::SilenceApi {
        journal: (&people).into(),
        clock: p.clock.clone(),
        guard: p.actions.silences.clone(),
    });
    let alertmanager_api = Arc::new(crate::alertmanager::AlertmanagerApi {
        intake: p.intake.clone(),
        silences: silence_api.clone(),
        incidents: (&people).into(),
        started: p.started,
    });
    let app = router(
        p.intake,
        crate::api::protected(api.clone())
            .merge(crate::gate::http::protected_routes(gates.clone()))
            .merge(crate::silence::http::routes(silence_api))
            .merge(crate::alertmanager::routes(alertmanager_api)),
        crate::gate::http::open_routes(gates.clone()).merge(crate::console::routes(
            crate::console::links::routes(api.clone()),
            Arc::new(crate::console::Console {
                api,
                gates,
                silences: p.actions.silences.clone(),
                silence_journal: (&people).into(),
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
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(crate::server::serve(
        listener,
        app,
        cfg.http.limits,
        max_connections,
        stopped,
    ));
    Ok(Serving { task, stop })
}
