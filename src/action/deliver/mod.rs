//! Delivery: one worker per channel, so a slow or dead channel never delays
//! another. A message goes through its stages, one file each: [`rate`]
//! (wait for the channel's rate, no burst), [`digest`] (what arrives
//! meanwhile is held, bounded in bytes, and merged), [`retry`] (send,
//! back off, honouring Retry-After), [`fallback`] (answer the sender, or
//! hand a failed message to the tier's fallback channel). Before
//! delivery, [`crate::action::mute`] holds back what a silence covers;
//! after it, [`crate::action::escalation`] pages step by step.
//!
//! Each worker keeps the channel within its rate limit (governor). Messages
//! that arrive while it waits are merged into one digest when it may send
//! again: held back, never dropped. A send that fails for a passing reason
//! (5xx, timeout, 429, "too fast") is retried with exponential backoff,
//! honouring Retry-After; one the provider refuses for good, or that keeps
//! failing, goes to the tier's fallback channel. Every outcome lands on the
//! incident's timeline, and "sent" only ever means the provider said so.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

mod digest;
mod fallback;
mod rate;
mod retry;

use digest::{DIGEST_PARTS, Held, incidents_of, merge};

use super::channel::{ChannelSpec, SendOutcome};
use super::message::Message;
use crate::decision::IncidentId;
use crate::journal::{Shared, Work};
use crate::telemetry::Metrics;
use crate::time::Clock;

/// One message for one channel.
pub struct Delivery {
    pub message: Message,
    /// Where it goes if this channel refuses it for good.
    pub fallback: Option<String>,
    /// Told the final outcome.
    pub done: Option<oneshot::Sender<Delivered>>,
    /// Incidents whose timelines hear of the outcome (filled when messages
    /// are merged; otherwise the message's own incident).
    pub incidents: Vec<String>,
}

impl Delivery {
    pub fn new(
        message: Message,
        fallback: Option<String>,
        done: Option<oneshot::Sender<Delivered>>,
    ) -> Delivery {
        Delivery {
            message,
            fallback,
            done,
            incidents: Vec::new(),
        }
    }
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub channel: String,
    pub outcome: SendOutcome,
}

impl Delivered {
    pub fn sent(&self) -> bool {
        matches!(self.outcome, SendOutcome::Sent(_))
    }
}

/// Hands messages to the channel workers.
#[derive(Clone)]
pub struct Deliverer {
    queues: Arc<HashMap<String, mpsc::Sender<Delivery>>>,
    /// Turned on when shutdown begins: see [`Deliverer::drain`].
    draining: Arc<watch::Sender<bool>>,
}

impl Deliverer {
    /// Starts one worker per channel; they stop when `shutdown` turns true
    /// (after finishing the send in hand).
    pub fn start<S: Into<Arc<ChannelSpec>>>(
        specs: impl IntoIterator<Item = S>,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
        timeline: Shared<dyn Work>,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> (Deliverer, Vec<JoinHandle<()>>) {
        let mut queues = HashMap::new();
        let mut receivers = Vec::new();
        for spec in specs {
            let spec: Arc<ChannelSpec> = spec.into();
            let (tx, rx) = mpsc::channel(1024);
            queues.insert(spec.name.clone(), tx);
            receivers.push((spec, rx));
        }
        let (draining, drain_rx) = watch::channel(false);
        let me = Deliverer {
            queues: Arc::new(queues),
            draining: Arc::new(draining),
        };
        let handles = receivers
            .into_iter()
            .map(|(spec, rx)| {
                let worker = Worker {
                    spec,
                    http: http.clone(),
                    clock: clock.clone(),
                    timeline: timeline.clone(),
                    metrics: metrics.clone(),
                    others: me.clone(),
                };
                tokio::spawn(worker.run(rx, shutdown.clone(), drain_rx.clone()))
            })
            .collect();
        (me, handles)
    }

    /// Shutdown has begun: from now on each message gets one attempt, and
    /// a message waiting to retry gives up at once (its timeline says so),
    /// so that actions waiting on a dead channel's outcome finish within
    /// the grace period. New messages are still taken until `shutdown`.
    pub fn drain(&self) {
        self.draining.send_replace(true);
    }

    pub fn has(&self, channel: &str) -> bool {
        self.queues.contains_key(channel)
    }

    /// Queues a message for `channel`. Never waits on the channel itself:
    /// its worker drains the queue into its own (bounded, digesting) list.
    pub async fn send(&self, channel: &str, d: Delivery) -> Result<(), String> {
        let q = self
            .queues
            .get(channel)
            .ok_or_else(|| format!("no channel named {channel}"))?;
        q.send(d)
            .await
            .map_err(|_| format!("channel {channel} is shut down"))
    }

    /// Sends to each channel and waits for every outcome.
    pub async fn send_all(
        &self,
        channels: &[String],
        message: &Message,
        fallback: Option<&str>,
    ) -> Vec<Delivered> {
        self.queue_all(channels, message, fallback)
            .await
            .outcomes()
            .await
    }

    /// Hands the message to each channel's worker and returns at once; the
    /// outcomes follow (and land on the incident's timeline either way).
    pub async fn queue_all(
        &self,
        channels: &[String],
        message: &Message,
        fallback: Option<&str>,
    ) -> Queued {
        let mut waits = Vec::new();
        for c in channels {
            let (tx, rx) = oneshot::channel();
            let d = Delivery::new(
                message.clone(),
                fallback.filter(|f| *f != c).map(str::to_owned),
                Some(tx),
            );
            match self.send(c, d).await {
                Ok(()) => waits.push((c.clone(), rx)),
                Err(e) => waits.push((c.clone(), {
                    let (tx, rx) = oneshot::channel();
                    let _ = tx.send(Delivered {
                        channel: c.clone(),
                        outcome: SendOutcome::Reject(e),
                    });
                    rx
                })),
            }
        }
        Queued(waits)
    }
}

/// Messages handed to channels; [`Queued::outcomes`] waits for how each
/// ended. Dropping it lets the sends go on unwatched.
pub struct Queued(Vec<(String, oneshot::Receiver<Delivered>)>);

impl Queued {
    pub async fn outcomes(self) -> Vec<Delivered> {
        let mut out = Vec::new();
        for (c, rx) in self.0 {
            out.push(rx.await.unwrap_or(Delivered {
                channel: c,
                outcome: SendOutcome::Retry {
                    after: None,
                    reason: "ripcord stopped before the send finished".into(),
                },
            }));
        }
        out
    }
}

struct Worker {
    spec: Arc<ChannelSpec>,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    /// Only the send outcomes' timeline lines.
    timeline: Shared<dyn Work>,
    metrics: Arc<Metrics>,
    others: Deliverer,
}

impl Worker {
    async fn run(
        self,
        mut rx: mpsc::Receiver<Delivery>,
        mut shutdown: watch::Receiver<bool>,
        mut draining: watch::Receiver<bool>,
    ) {
        let (limiter, clock) = rate::limiter(self.spec.rate);
        let mut pending = Held::default();
        loop {
            if pending.is_empty() {
                tokio::select! {
                    d = rx.recv() => match d {
                        Some(d) => pending.push(d),
                        None => return,
                    },
                    _ = shutdown.wait_for(|s| *s) => {}
                }
            }
            let stopping = *shutdown.borrow();
            if stopping {
                self.abandon(pending, &mut rx).await;
                return;
            }
            // Wait for the rate limit, gathering what arrives meanwhile.
            let Some(was_limited) = self
                .wait_for_rate(&limiter, &clock, &mut rx, &mut pending, &mut shutdown)
                .await
            else {
                self.abandon(pending, &mut rx).await;
                return;
            };
            while let Ok(d) = rx.try_recv() {
                self.hold(&mut pending, d);
            }
            // Held back by the rate limit: what waits goes out as one digest
            // (up to DIGEST_PARTS; the rest waits for the next send).
            // Otherwise one message at a time.
            let batch: Vec<Delivery> = pending.take(if was_limited { DIGEST_PARTS } else { 1 });
            self.deliver(batch, &mut rx, &mut pending, &mut shutdown, &mut draining)
                .await;
        }
    }

    /// Messages still waiting when ripcord stops (held, or handed over and
    /// not yet taken): their incidents' timelines say they were never sent,
    /// so nobody takes silence for delivery.
    async fn abandon(&self, mut pending: Held, rx: &mut mpsc::Receiver<Delivery>) {
        rx.close();
        while let Ok(d) = rx.try_recv() {
            pending.push(d);
        }
        for d in pending.queue {
            let detail = format!(
                "not sent via {}: ripcord stopped before sending \"{}\"",
                self.spec.name, d.message.title
            );
            tracing::warn!(channel = %self.spec.name, %detail, "message delivery");
            self.metrics.message(&self.spec.name, "failed");
            self.note(&incidents_of(&d), &detail).await;
        }
    }

    /// Sends a batch (one message, or a digest of several) through the
    /// retry stage, says the outcome on the incidents' timelines, then
    /// answers the sender or hands the message to the fallback.
    async fn deliver(
        &self,
        batch: Vec<Delivery>,
        rx: &mut mpsc::Receiver<Delivery>,
        pending: &mut Held,
        shutdown: &mut watch::Receiver<bool>,
        draining: &mut watch::Receiver<bool>,
    ) {
        let d = if batch.len() == 1 {
            batch.into_iter().next().expect("one")
        } else {
            merge(batch)
        };
        let incidents = incidents_of(&d);
        let tried = self
            .send_with_retries(&d.message, &incidents, rx, pending, shutdown, draining)
            .await;
        let outcome = tried.outcome;
        let label = match &outcome {
            SendOutcome::Sent(_) => "sent",
            SendOutcome::Retry { .. } => "failed",
            SendOutcome::Reject(_) => "rejected",
        };
        self.metrics.message(&self.spec.name, label);
        let detail = match &outcome {
            SendOutcome::Sent(s) => format!("sent via {}: {s}", self.spec.name),
            SendOutcome::Retry { reason, .. } => format!(
                "not sent via {} after {} attempts: {reason}{}",
                self.spec.name,
                tried.attempts,
                if tried.stopped {
                    " (ripcord is stopping: no retry)"
                } else {
                    ""
                }
            ),
            SendOutcome::Reject(r) => format!("refused by {}: {r}", self.spec.name),
        };
        tracing::info!(channel = %self.spec.name, outcome = label, %detail, "message delivery");
        self.note(&incidents, &detail).await;
        self.answer_or_fall_back(d, outcome, incidents).await;
    }

    async fn note(&self, incidents: &[String], text: &str) {
        for id in incidents {
            let (id, text, now) = (
                IncidentId::from_string(id.as_str()),
                text.to_owned(),
                self.clock.now(),
            );
            if let Err(e) = self
                .timeline
                .with(move |j| j.add_timeline(&id, now, "send", &text))
                .await
            {
                tracing::error!(error = %e, "could not write a send outcome to the timeline");
            }
        }
    }
}
