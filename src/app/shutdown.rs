//! Shutdown (SIGINT / SIGTERM, or a failed pipeline): readiness drops, the
//! HTTP server stops accepting and answers what it holds, the pipeline
//! journals its last batch and commits offsets, the dispatcher lets running
//! actions finish, messages already handed to channels are sent; all
//! within the grace period, each part with what the ones before it left.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::AppError;
use super::actions::{Actions, Dispatching};
use super::http::Serving;
use crate::action::deliver::Deliverer;
use crate::health::Health;
use crate::output::Output;

/// Every running part, in the order they stop.
pub struct Running {
    pub health: Arc<Health>,
    pub deliverer: Deliverer,
    /// The `ready:` line's task and what stops it.
    pub ready: (watch::Sender<bool>, JoinHandle<()>),
    pub serving: Serving,
    pub intake: super::intake::Intake,
    pub dispatching: Dispatching,
    pub actions: Actions,
    /// Side tasks (alert charts, the journal's gauges) stop on this.
    pub side_stop: watch::Sender<bool>,
    pub side_tasks: Vec<JoinHandle<()>>,
    pub output: Arc<Output>,
}

impl Running {
    pub async fn stop(self, grace: Duration) -> Result<(), AppError> {
        let deadline = Instant::now() + grace;
        let left = || deadline.saturating_duration_since(Instant::now());
        tracing::info!(grace = ?grace, "shutting down: intake stops, in-flight work finishes");
        // Actions finishing now may wait on a message's outcome: one attempt
        // each from here on, no backoffs of a minute inside the grace period.
        self.deliverer.drain();
        self.health.stopping();
        self.ready.0.send_replace(true);
        let _ = self.ready.1.await;
        self.serving.stop(left()).await;
        let intake = self.intake;
        let joined =
            tokio::time::timeout(left(), tokio::task::spawn_blocking(move || intake.stop())).await;
        self.dispatching.stop(left()).await;
        // Messages already handed to channels get the rest of the grace period.
        self.actions.stop(left()).await;
        self.side_stop.send_replace(true);
        for t in self.side_tasks {
            let _ = tokio::time::timeout(left(), t).await;
        }
        // What is still queued for stdout gets what is left of the grace.
        let output = self.output;
        let rest = left();
        let _ = tokio::task::spawn_blocking(move || output.close(rest)).await;
        match joined {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(AppError::Pipeline("panicked".into())),
            Err(_) => Err(AppError::Pipeline(
                "did not stop within the grace period".into(),
            )),
        }
    }
}
