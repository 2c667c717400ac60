//! Action: turning journaled decisions into work.
//!
//! The dispatcher claims pending actions from the journal (so an action is
//! started by exactly one process, once) and hands each to a [`Handler`]
//! on its own task; the outcome goes back to the journal and onto the
//! incident's timeline. A crash while an action runs leaves it `running`;
//! the next start marks it `unknown` for a human instead of re-running it.

pub mod channel;
pub mod config;
pub mod deliver;
pub mod executor;
pub mod links;
pub mod message;
pub mod ops;
pub mod responder;
pub mod scheduler;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

use crate::journal::{ActionRow, ActionState, Journal, JournalError};
use crate::telemetry::Metrics;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How an action ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub state: ActionState,
    pub detail: String,
}

impl Outcome {
    pub fn done(detail: impl Into<String>) -> Outcome {
        Outcome {
            state: ActionState::Done,
            detail: detail.into(),
        }
    }

    pub fn failed(detail: impl Into<String>) -> Outcome {
        Outcome {
            state: ActionState::Failed,
            detail: detail.into(),
        }
    }

    pub fn skipped(detail: impl Into<String>) -> Outcome {
        Outcome {
            state: ActionState::Skipped,
            detail: detail.into(),
        }
    }
}

/// Does the work of an action.
pub trait Handler: Send + Sync + 'static {
    fn handle<'a>(&'a self, action: &'a ActionRow) -> BoxFuture<'a, Outcome>;
}

/// A journal shared by blocking calls from async code: the lock is only
/// ever taken inside `spawn_blocking`, never held across an `.await`.
pub type SharedJournal = Arc<Mutex<Box<dyn Journal>>>;

pub async fn with_journal<T: Send + 'static>(
    journal: &SharedJournal,
    f: impl FnOnce(&mut dyn Journal) -> Result<T, JournalError> + Send + 'static,
) -> Result<T, JournalError> {
    let j = journal.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard = j.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut **guard)
    })
    .await
    .unwrap_or_else(|e| Err(JournalError::Corrupt(format!("journal task failed: {e}"))))
}

pub struct Dispatcher {
    pub journal: SharedJournal,
    pub handler: Arc<dyn Handler>,
    pub notify: Arc<Notify>,
    pub owner: String,
    pub metrics: Arc<Metrics>,
    /// Actions running at once; one slow action never holds up the rest.
    pub concurrency: usize,
    /// Where decisions released later (an approved rollback) are printed.
    pub output: Option<Arc<crate::output::Output>>,
}

impl Dispatcher {
    /// Runs until `shutdown` turns true, then waits for running actions up
    /// to `grace`; whatever is still running then is left `running` in the
    /// journal and reported `unknown` at the next start.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>, grace: Duration) {
        let permits = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        let mut last_heartbeat: Option<Instant> = None;
        loop {
            if last_heartbeat.is_none_or(|t| t.elapsed() >= HEARTBEAT) {
                last_heartbeat = Some(Instant::now());
                self.heartbeat_and_reap().await;
            }
            tokio::select! {
                _ = self.notify.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
            while tasks.try_join_next().is_some() {}
            let free = permits.available_permits();
            if free == 0 {
                continue;
            }
            let owner = self.owner.clone();
            let claimed =
                match with_journal(&self.journal, move |j| j.claim_actions(&owner, free)).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot claim actions from the journal");
                        continue;
                    }
                };
            for action in claimed {
                if let Some(out) = &self.output {
                    if action.decision.is_derived() {
                        out.released(&action.decision, &action.decision.message);
                    }
                }
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let handler = self.handler.clone();
                let journal = self.journal.clone();
                let metrics = self.metrics.clone();
                tasks.spawn(async move {
                    let started = Instant::now();
                    let outcome = handler.handle(&action).await;
                    metrics.action_finished(action.action, outcome.state.as_str(), started.elapsed().as_secs_f64());
                    tracing::info!(
                        action = %action.action, key = %action.key, state = outcome.state.as_str(), detail = %outcome.detail,
                        "action finished"
                    );
                    let key = action.key.clone();
                    if let Err(e) = with_journal(&journal, move |j| j.set_action(&key, outcome.state, &outcome.detail)).await {
                        tracing::error!(error = %e, key = %action.key, "could not record an action's outcome");
                    }
                    drop(permit);
                });
            }
        }
        let _ =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    }

    /// Says this process is alive, and finds actions whose process died
    /// while running them: their outcome is unknown, so they are never
    /// re-run; a human must look.
    async fn heartbeat_and_reap(&self) {
        let owner = self.owner.clone();
        let reaped = with_journal(&self.journal, move |j| {
            j.heartbeat(&owner)?;
            j.reap(STALE)
        })
        .await;
        match reaped {
            Ok(actions) => {
                for a in actions {
                    self.metrics.action_finished(a.action, "unknown", 0.0);
                    tracing::error!(
                        action = %a.action, key = %a.key, incident = ?a.incident,
                        "action outcome unknown: the process running it stopped; it is NOT retried, check it by hand"
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "journal heartbeat failed"),
        }
    }
}

/// How often a running process says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(3);
/// Silence after which a process is taken for dead.
const STALE: crate::time::Dur = crate::time::Dur::from_secs(15);
