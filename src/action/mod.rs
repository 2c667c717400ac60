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
mod escalation;
pub mod executor;
pub mod links;
pub mod message;
mod mute;
pub mod ops;
pub mod responder;
pub mod sample;
pub mod scheduler;
pub mod vendor;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

pub use crate::decision::Lane;
use crate::journal::{ActionRow, ActionState, JournalError};
use crate::journal::{Reads, Role, Shared, Silences, Work};
use crate::telemetry::Metrics;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Attempts an action whose journal write failed gets (see
/// [`Outcome::journal_retry`]): about a minute of passes.
pub const MAX_JOURNAL_RETRIES: u32 = 100;

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

    /// The journal refused a write it needs (a lost connection, a lock):
    /// the action goes back to pending and runs again on a later pass, up
    /// to [`MAX_JOURNAL_RETRIES`] attempts, then fails. For actions that are
    /// safe to repeat (pages, approval requests): one never ends lost
    /// because the journal hiccupped once.
    pub fn journal_retry(attempts: u32, what: &str, error: &JournalError) -> Outcome {
        let transient = matches!(error, JournalError::Storage(_));
        if transient && attempts < MAX_JOURNAL_RETRIES {
            Outcome {
                state: ActionState::Pending,
                detail: format!(
                    "{what}: {error}; trying again (attempt {attempts} of {MAX_JOURNAL_RETRIES})"
                ),
            }
        } else {
            Outcome::failed(format!("{what}: {error}"))
        }
    }

    pub fn skipped(detail: impl Into<String>) -> Outcome {
        Outcome {
            state: ActionState::Skipped,
            detail: detail.into(),
        }
    }
}

/// How far an action got when its handler returned.
pub enum Handled<'a> {
    /// Finished.
    Done(Outcome),
    /// Handed over (a message queued for its channels): it no longer needs
    /// a slot of its lane, but stays running in the journal (and is re-run
    /// after a crash) until this resolves with its outcome.
    Queued(BoxFuture<'a, Outcome>),
}

impl<'a> Handled<'a> {
    /// The final outcome, waiting for a queued one.
    pub async fn finish(self) -> Outcome {
        match self {
            Handled::Done(o) => o,
            Handled::Queued(f) => f.await,
        }
    }
}

/// Does the work of an action.
pub trait Handler: Send + Sync + 'static {
    fn handle<'a>(&'a self, action: &'a ActionRow) -> BoxFuture<'a, Handled<'a>>;

    /// [`Handler::handle`] to its final outcome.
    fn handle_to_end<'a>(&'a self, action: &'a ActionRow) -> BoxFuture<'a, Outcome> {
        Box::pin(async move { self.handle(action).await.finish().await })
    }
}

/// One handler per lane: the executor lane's does its journal work on the
/// lane's own connection, so a rollback never queues behind a flood of
/// message bookkeeping for the journal's lock.
pub struct ByLane {
    pub executors: Arc<dyn Handler>,
    pub messages: Arc<dyn Handler>,
}

impl Handler for ByLane {
    fn handle<'a>(&'a self, action: &'a ActionRow) -> BoxFuture<'a, Handled<'a>> {
        match Lane::of(action.action) {
            Lane::Executors => self.executors.handle(action),
            Lane::Messages => self.messages.handle(action),
        }
    }
}

/// The incident's actions once its rollout pause (if any) has landed, or
/// [`message::PAUSE_WAIT`] passed: a high-risk page or approval request
/// must first say whether the rollout is paused.
pub async fn actions_after_pause<R: ?Sized + Role + Reads + 'static>(
    journal: &Shared<R>,
    incident: &str,
) -> Result<Vec<ActionRow>, JournalError> {
    let deadline = tokio::time::Instant::now() + message::PAUSE_WAIT;
    loop {
        let id = incident.to_owned();
        let actions = journal.with(move |j| j.actions_of(&id)).await?;
        if !message::pause_under_way(&actions) || tokio::time::Instant::now() >= deadline {
            return Ok(actions);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The roles the dispatcher uses on one connection: claims and outcomes,
/// and the silences that hold an action back.
#[derive(Clone)]
pub struct LaneJournal {
    pub work: Shared<dyn Work>,
    pub silences: Shared<dyn Silences>,
}

pub struct Dispatcher {
    pub journal: LaneJournal,
    /// The executor lane's own connection: its claims and outcomes never
    /// queue behind a flood of message bookkeeping on `journal`.
    pub executor_journal: LaneJournal,
    pub handler: Arc<dyn Handler>,
    pub notify: Arc<Notify>,
    pub owner: String,
    pub metrics: Arc<Metrics>,
    /// Executor actions running at once.
    pub executor_slots: usize,
    /// Message actions being handed to channels at once (a queued message
    /// frees its slot).
    pub message_slots: usize,
    /// Where decisions released later (an approved rollback) are printed.
    pub output: Option<Arc<crate::output::Output>>,
    /// Silences and maintenance windows: what they hold back is journaled
    /// as skipped instead of run.
    pub silences: Arc<crate::silence::Guard>,
    pub clock: Arc<dyn crate::time::Clock>,
    /// Where the executor lane runs (a runtime on a thread of its own), or
    /// beside the rest when `None`: a storm of alerts keeps the shared
    /// runtime's queues full of message work, and a rollback's claim must
    /// not wait its turn behind it.
    pub executor_runtime: Option<tokio::runtime::Handle>,
}

impl Dispatcher {
    /// Runs until `shutdown` turns true, then waits for running actions up
    /// to `grace`; whatever is still running then is left `running` in the
    /// journal and reported `unknown` at the next start.
    ///
    /// Each lane claims in a loop of its own, on its own journal
    /// connection, and the heartbeat has a loop of its own too: a flood of
    /// messages, or a journal lock the message side waits for, never
    /// delays a rollback's claim. A wake-up (new actions journaled) reaches
    /// every lane.
    pub async fn run(self, shutdown: watch::Receiver<bool>, grace: Duration) {
        let this = Arc::new(self);
        let wakes: Vec<(Lane, Arc<Notify>)> = Lane::ALL
            .into_iter()
            .map(|lane| (lane, Arc::new(Notify::new())))
            .collect();
        let mut loops = JoinSet::new();
        for (lane, wake) in &wakes {
            let lane_loop = this
                .clone()
                .run_lane(*lane, wake.clone(), shutdown.clone(), grace);
            match (lane, &this.executor_runtime) {
                (Lane::Executors, Some(runtime)) => loops.spawn_on(lane_loop, runtime),
                _ => loops.spawn(lane_loop),
            };
        }
        loops.spawn({
            let (this, mut stop) = (this.clone(), shutdown.clone());
            async move {
                loop {
                    this.heartbeat_and_reap().await;
                    tokio::select! {
                        _ = tokio::time::sleep(HEARTBEAT) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            }
        });
        let mut stop = shutdown;
        loop {
            tokio::select! {
                _ = this.notify.notified() => {
                    for (_, wake) in &wakes {
                        wake.notify_one();
                    }
                }
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        while loops.join_next().await.is_some() {}
    }

    /// One lane's loop: claims what its free slots can take whenever woken
    /// (or every 500 ms), starts it, and at shutdown waits for what runs up
    /// to `grace`.
    async fn run_lane(
        self: Arc<Self>,
        lane: Lane,
        wake: Arc<Notify>,
        mut shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) {
        let (slots, journal) = match lane {
            Lane::Executors => (self.executor_slots, self.executor_journal.clone()),
            Lane::Messages => (self.message_slots, self.journal.clone()),
        };
        let permits = Arc::new(Semaphore::new(slots.max(1)));
        let kinds = lane.actions();
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                changed = shutdown.changed() => if changed.is_err() { break },
            }
            if *shutdown.borrow() {
                break;
            }
            while tasks.try_join_next().is_some() {}
            let free = permits.available_permits();
            if free == 0 {
                continue;
            }
            let (owner, kinds_c) = (self.owner.clone(), kinds.clone());
            let claimed = match journal
                .work
                .with(move |j| j.claim_actions(&owner, &kinds_c, free))
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, lane = lane.as_str(), "cannot claim actions from the journal");
                    continue;
                }
            };
            if claimed.len() == free {
                // More may wait: look again at once.
                wake.notify_one();
            }
            if !claimed.is_empty() {
                self.refresh_silences(&journal).await;
            }
            for action in claimed {
                if self.held_back(&action, &journal).await {
                    continue;
                }
                self.start(action, &permits, &journal, &mut tasks).await;
            }
        }
        let _ =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    }

    /// Runs one claimed action on a task of its own, holding a slot of its
    /// lane until it is done or queued.
    async fn start(
        &self,
        action: ActionRow,
        permits: &Arc<Semaphore>,
        journal: &LaneJournal,
        tasks: &mut JoinSet<()>,
    ) {
        if let Some(out) = &self.output {
            if action.decision.is_derived() {
                out.released(&action.decision, &action.decision.message);
            }
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let handler = self.handler.clone();
        let journal = journal.work.clone();
        let metrics = self.metrics.clone();
        tasks.spawn(async move {
            let started = Instant::now();
            let outcome = match handler.handle(&action).await {
                Handled::Done(o) => {
                    drop(permit);
                    o
                }
                Handled::Queued(rest) => {
                    drop(permit);
                    rest.await
                }
            };
            metrics.action_finished(action.action, outcome.state.as_str(), started.elapsed().as_secs_f64());
            tracing::info!(
                action = %action.action, key = %action.key, state = outcome.state.as_str(), detail = %outcome.detail,
                "action finished"
            );
            let key = action.key.clone();
            if let Err(e) = journal.with(move |j| j.set_action(&key, outcome.state, &outcome.detail)).await {
                tracing::error!(error = %e, key = %action.key, "could not record an action's outcome");
            }
        });
    }

    /// Says this process is alive, and finds actions whose process died
    /// while running them: their outcome is unknown, so they are never
    /// re-run; a human must look.
    async fn heartbeat_and_reap(&self) {
        let owner = self.owner.clone();
        let reaped = self
            .journal
            .work
            .with(move |j| {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_or_approval_request_whose_journal_write_failed_runs_again_then_fails() {
        let locked = JournalError::Storage("database is locked".into());
        let again = Outcome::journal_retry(1, "could not start paging", &locked);
        assert_eq!(again.state, ActionState::Pending, "back in the queue");
        assert!(
            again.detail.contains("database is locked") && again.detail.contains("attempt 1 of")
        );
        let last = Outcome::journal_retry(MAX_JOURNAL_RETRIES, "could not start paging", &locked);
        assert_eq!(last.state, ActionState::Failed, "not forever");
        // What retrying cannot mend fails at once.
        let corrupt = JournalError::Corrupt("bad row".into());
        assert_eq!(
            Outcome::journal_retry(1, "x", &corrupt).state,
            ActionState::Failed
        );
        let fenced = JournalError::Fenced {
            partition: None,
            reason: "claim taken over".into(),
        };
        assert_eq!(
            Outcome::journal_retry(1, "x", &fenced).state,
            ActionState::Failed
        );
    }
}
