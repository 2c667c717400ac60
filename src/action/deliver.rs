//! Delivery: one worker per channel, so a slow or dead channel never delays
//! another.
//!
//! Each worker keeps the channel within its rate limit (governor). Messages
//! that arrive while it waits are merged into one digest when it may send
//! again: held back, never dropped. A send that fails for a passing reason
//! (5xx, timeout, 429, "too fast") is retried with exponential backoff,
//! honouring Retry-After; one the provider refuses for good, or that keeps
//! failing, goes to the tier's fallback channel. Every outcome lands on the
//! incident's timeline, and "sent" only ever means the provider said so.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{Quota, RateLimiter};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::channel::{ChannelSpec, SendContext, SendOutcome};
use super::message::Message;
use super::{SharedJournal, with_journal};
use crate::decision::IncidentId;
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

/// Bytes of messages a worker holds for its channel; past it, in a storm,
/// the oldest are given up (each incident's timeline says so), bounding
/// memory whatever the flood.
const MAX_PENDING_BYTES: usize = 16 << 20;
/// Messages one digest carries; more wait for the next send, so a flood
/// goes out as a series of digests and no message is summarised away.
const DIGEST_PARTS: usize = 50;

/// Messages a worker holds for its channel, their weight kept as they come
/// and go: a hung channel in a storm holds tens of thousands, and summing
/// them again for every arrival cost more than the storm's other work.
#[derive(Default)]
struct Held {
    queue: VecDeque<Delivery>,
    bytes: usize,
}

impl Held {
    fn push(&mut self, d: Delivery) {
        self.bytes += weight(&d);
        self.queue.push_back(d);
    }

    fn pop_front(&mut self) -> Option<Delivery> {
        let d = self.queue.pop_front()?;
        self.bytes -= weight(&d);
        Some(d)
    }

    /// The oldest `n` (fewer if fewer wait).
    fn take(&mut self, n: usize) -> Vec<Delivery> {
        std::iter::from_fn(|| self.pop_front()).take(n).collect()
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// What a held message costs.
fn weight(d: &Delivery) -> usize {
    d.message.title.len()
        + d.message.body.len()
        + d.message
            .links
            .iter()
            .map(|l| l.label.len() + l.url.len())
            .sum::<usize>()
        + 256
}

/// A clock for governor that follows tokio's (pausable) time.
#[derive(Clone, Debug)]
struct TokioRateClock(tokio::time::Instant);

impl governor::clock::Clock for TokioRateClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

type Limiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    TokioRateClock,
    governor::middleware::NoOpMiddleware<Duration>,
>;

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
        journal: SharedJournal,
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
                    journal: journal.clone(),
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
    journal: SharedJournal,
    metrics: Arc<Metrics>,
    others: Deliverer,
}

impl Worker {
    /// `n` per `per` as one send every `per / n` (plus 2%, at least 50 ms)
    /// with no burst: then no window of length `per` ever holds more than
    /// `n` sends, even as the provider sees them, after network jitter
    /// (providers count in sliding windows: DingTalk's 21st message in a
    /// minute is refused). Messages that arrive in between are merged into
    /// a digest.
    fn limiter(&self) -> (Limiter, TokioRateClock) {
        let (n, per) = self.spec.rate;
        let n = NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
        let spacing = per / n.get();
        let spacing = spacing + (spacing / 50).max(Duration::from_millis(50));
        let quota = Quota::with_period(spacing)
            .unwrap_or_else(|| Quota::per_second(n))
            .allow_burst(NonZeroU32::MIN);
        let clock = TokioRateClock(tokio::time::Instant::now());
        (RateLimiter::direct_with_clock(quota, clock.clone()), clock)
    }

    async fn run(
        self,
        mut rx: mpsc::Receiver<Delivery>,
        mut shutdown: watch::Receiver<bool>,
        mut draining: watch::Receiver<bool>,
    ) {
        let (limiter, clock) = self.limiter();
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
            let mut was_limited = false;
            while let Err(not_until) = limiter.check() {
                was_limited = true;
                let wait = not_until.wait_time_from(governor::clock::Clock::now(&clock));
                let sleep = tokio::time::sleep(wait);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        Some(d) = rx.recv() => self.hold(&mut pending, d),
                        _ = shutdown.wait_for(|s| *s) => break,
                    }
                }
                let stopping = *shutdown.borrow();
                if stopping {
                    self.abandon(pending, &mut rx).await;
                    return;
                }
            }
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

    /// Keeps a message; past [`MAX_PENDING_BYTES`] the oldest are given up
    /// (counted, and said on their incidents' timelines).
    fn hold(&self, pending: &mut Held, d: Delivery) {
        pending.push(d);
        while pending.bytes > MAX_PENDING_BYTES && pending.queue.len() > 1 {
            let Some(old) = pending.pop_front() else {
                break;
            };
            self.metrics.message(&self.spec.name, "dropped");
            tracing::warn!(channel = %self.spec.name, title = %old.message.title, "a message was given up: the channel's queue is full");
            if let Some(tx) = old.done {
                let _ = tx.send(Delivered {
                    channel: self.spec.name.clone(),
                    outcome: SendOutcome::Reject("given up: the channel's queue is full".into()),
                });
            }
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

    /// Sends a batch (one message, or a digest of several) until it is
    /// sent, refused, or out of retries; keeps receiving meanwhile. A
    /// shutdown ends the wait for the next retry (the grace period is for
    /// sends, not for backoffs of a minute).
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
        let mut attempt = 0u32;
        let mut stopped = false;
        let outcome = loop {
            let ctx = SendContext {
                http: &self.http,
                now: self.clock.now(),
            };
            let send =
                tokio::time::timeout(self.spec.timeout, self.spec.channel.send(&ctx, &d.message));
            tokio::pin!(send);
            let result = loop {
                tokio::select! {
                    r = &mut send => break r,
                    Some(more) = rx.recv() => self.hold(pending, more),
                }
            };
            let outcome = result.unwrap_or_else(|_| SendOutcome::Retry {
                after: None,
                reason: format!("no answer within {:?}", self.spec.timeout),
            });
            match &outcome {
                // Stopping: no backoff, no retry. (`attempt` counts the
                // attempts made, as after a backoff cut short.)
                SendOutcome::Retry { .. } if *draining.borrow() || *shutdown.borrow() => {
                    attempt += 1;
                    stopped = true;
                }
                SendOutcome::Retry { after, reason } if attempt < self.spec.retries => {
                    attempt += 1;
                    let backoff =
                        Duration::from_secs(1 << attempt.min(6)).min(Duration::from_secs(60));
                    let wait = after
                        .unwrap_or(backoff)
                        .max(backoff.min(Duration::from_secs(1)));
                    self.note(
                        &incidents,
                        &format!(
                            "send via {} failed ({reason}); retry {attempt} in {wait:?}",
                            self.spec.name
                        ),
                    )
                    .await;
                    let sleep = tokio::time::sleep(wait);
                    tokio::pin!(sleep);
                    loop {
                        tokio::select! {
                            _ = &mut sleep => break,
                            Some(more) = rx.recv() => self.hold(pending, more),
                            _ = shutdown.wait_for(|s| *s) => {
                                stopped = true;
                                break;
                            }
                            _ = draining.wait_for(|s| *s) => {
                                stopped = true;
                                break;
                            }
                        }
                    }
                }
                _ => break outcome,
            }
            if stopped {
                break outcome;
            }
        };
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
                if stopped { attempt } else { attempt + 1 },
                if stopped {
                    " (ripcord is stopping: no retry)"
                } else {
                    ""
                }
            ),
            SendOutcome::Reject(r) => format!("refused by {}: {r}", self.spec.name),
        };
        tracing::info!(channel = %self.spec.name, outcome = label, %detail, "message delivery");
        self.note(&incidents, &detail).await;
        let failed = !matches!(outcome, SendOutcome::Sent(_));
        match (&d.fallback, failed) {
            (Some(fb), true) if self.others.has(fb) => {
                self.note(
                    &incidents,
                    &format!("handing the message to fallback channel {fb}"),
                )
                .await;
                let forwarded = Delivery {
                    message: d.message.clone(),
                    fallback: None,
                    done: d.done,
                    incidents: incidents.clone(),
                };
                if let Err(e) = self.others.send(fb, forwarded).await {
                    tracing::error!(error = %e, "fallback channel unavailable");
                }
            }
            _ => {
                if let Some(tx) = d.done {
                    let _ = tx.send(Delivered {
                        channel: self.spec.name.clone(),
                        outcome,
                    });
                }
            }
        }
    }

    async fn note(&self, incidents: &[String], text: &str) {
        for id in incidents {
            let (id, text, now) = (
                IncidentId::from_string(id.as_str()),
                text.to_owned(),
                self.clock.now(),
            );
            if let Err(e) = with_journal(&self.journal, move |j| {
                j.add_timeline(&id, now, "send", &text)
            })
            .await
            {
                tracing::error!(error = %e, "could not write a send outcome to the timeline");
            }
        }
    }
}

fn incidents_of(d: &Delivery) -> Vec<String> {
    if d.incidents.is_empty() {
        d.message.incident.iter().cloned().collect()
    } else {
        d.incidents.clone()
    }
}

/// One delivery for many: a digest message whose outcome answers them all.
fn merge(batch: Vec<Delivery>) -> Delivery {
    let mut parts: Vec<Message> = batch.iter().map(|d| d.message.clone()).collect();
    let all = parts.len();
    let title = Message::digest_title(&parts, all);
    let extra = all.saturating_sub(DIGEST_PARTS);
    parts.truncate(DIGEST_PARTS);
    let mut message = Message::digest(&parts);
    if extra > 0 {
        message
            .body
            .push_str(&format!("\n… and {extra} more (see `ripcord incidents`)"));
        message.title = title;
    }
    let fallback = batch.iter().find_map(|d| d.fallback.clone());
    let mut incidents: Vec<String> = batch.iter().flat_map(incidents_of).collect();
    incidents.sort();
    incidents.dedup();
    let waiters: Vec<oneshot::Sender<Delivered>> =
        batch.into_iter().filter_map(|d| d.done).collect();
    let (tx, rx) = oneshot::channel::<Delivered>();
    tokio::spawn(async move {
        if let Ok(outcome) = rx.await {
            for w in waiters {
                let _ = w.send(outcome.clone());
            }
        }
    });
    Delivery {
        message,
        fallback,
        done: Some(tx),
        incidents,
    }
}

#[cfg(test)]
mod held_tests {
    use super::*;
    use crate::action::message::{Kind, Message};
    use crate::decision::{Severity, Tier};

    fn delivery(title: &str, body_bytes: usize) -> Delivery {
        Delivery::new(
            Message {
                kind: Kind::Incident,
                title: title.to_owned(),
                body: "x".repeat(body_bytes),
                tier: Tier::Medium,
                severity: Severity::Functional,
                incident: None,
                links: Vec::new(),
                mention: false,
            },
            None,
            None,
        )
    }

    #[test]
    fn held_bytes_are_the_weight_of_what_is_held_through_pushes_pops_and_takes() {
        let mut held = Held::default();
        for i in 0..500 {
            held.push(delivery(&format!("m{i}"), i * 7 % 300));
            if i % 3 == 0 {
                held.pop_front();
            }
            if i % 50 == 0 {
                held.take(DIGEST_PARTS);
            }
            assert_eq!(held.bytes, held.queue.iter().map(weight).sum::<usize>());
        }
        let left = held.queue.len();
        assert_eq!(held.take(left + 10).len(), left);
        assert_eq!((held.bytes, held.is_empty()), (0, true));
    }
}
