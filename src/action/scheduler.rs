//! Things that happen with time rather than events: the next step of a
//! paging chain, an approval that waited too long, the status digest for
//! management. All state is in the journal, so a restart picks up where the
//! last process stopped; claims in the journal make sure several processes
//! never page twice for the same step.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use super::config::ActionsConfig;
use super::deliver::Deliverer;
use super::links::{LinkSigner, Verb};
use super::message::{Kind, Message};
use crate::decision::{Action, Severity, Tier};
use crate::journal::{EscalationRow, IncidentRow, JournalError, Reads, Shared, Silences, Work};
use crate::time::{Clock, Dur, Ts};

pub struct Scheduler {
    /// Claims of paging steps and expiries, their outcomes, leases.
    pub work: Shared<dyn Work>,
    /// Incidents, approvals and rollouts, for steps and status digests.
    pub reads: Shared<dyn Reads>,
    /// The silences that hold a paging step back.
    pub silence_journal: Shared<dyn Silences>,
    pub deliverer: Deliverer,
    pub cfg: Arc<ActionsConfig>,
    pub clock: Arc<dyn Clock>,
    pub links: Option<LinkSigner>,
    /// Wakes the dispatcher when a timeout released a rollback.
    pub wake: Arc<Notify>,
    pub owner: String,
    /// Where each paging step is printed as it goes out.
    pub output: Option<Arc<crate::output::Output>>,
    /// A silence of scope `all` (or such a maintenance window) made after
    /// paging began holds back the steps that fall due under it.
    pub silences: Arc<crate::silence::Guard>,
}

/// How long a claimed escalation step may take before another process
/// (or this one after a restart) runs it again.
const CLAIM: Dur = Dur::from_secs(60);

/// Paging steps delivered at once, at most; more wait for the next pass.
const MAX_STEPS_IN_FLIGHT: usize = 64;

impl Scheduler {
    /// Runs until `shutdown`. Paging, approval expiry and the status digest
    /// are separate loops, and every paging step is its own task: a channel
    /// that hangs or retries for a minute holds up its own message only,
    /// never another incident's SMS or call, nor an expiry.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let this = Arc::new(self);
        tokio::join!(
            this.clone().paging_loop(shutdown.clone()),
            this.expiry_loop(shutdown.clone()),
            this.digest_loop(shutdown),
        );
    }

    async fn paging_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        // (incident, step) of each step in flight: its claim may lapse while
        // a slow channel retries, and it must not run twice meanwhile.
        let mut running: HashMap<tokio::task::Id, (String, u32)> = HashMap::new();
        // Dropped on shutdown: aborted steps keep their claim, which lapses,
        // so the next process (or this one, restarted) runs them again.
        let mut steps: JoinSet<()> = JoinSet::new();
        loop {
            if running.len() < MAX_STEPS_IN_FLIGHT {
                match self.claim_steps().await {
                    Ok(due) => {
                        for e in due {
                            let key = (e.incident.clone(), e.step);
                            if running.values().any(|k| *k == key) {
                                continue;
                            }
                            let this = self.clone();
                            let task = steps.spawn(async move {
                                let incident = e.incident.clone();
                                if let Err(err) = this.run_step(e).await {
                                    tracing::error!(error = %err, %incident, "paging step failed");
                                }
                            });
                            running.insert(task.id(), key);
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "escalation pass failed"),
                }
            }
            let pause = tokio::time::sleep(Duration::from_secs(1));
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = &mut pause => break,
                    Some(done) = steps.join_next_with_id(), if !steps.is_empty() => {
                        let id = match done {
                            Ok((id, ())) => id,
                            Err(e) => {
                                tracing::error!(error = %e, "paging step task failed");
                                e.id()
                            }
                        };
                        running.remove(&id);
                    }
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        }
    }

    async fn expiry_loop(&self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.expiries().await {
                tracing::error!(error = %e, "approval expiry pass failed");
            }
            if stopped_within(&mut shutdown, Duration::from_secs(1)).await {
                return;
            }
        }
    }

    async fn digest_loop(&self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.digest().await {
                tracing::error!(error = %e, "status digest failed");
            }
            if stopped_within(&mut shutdown, Duration::from_secs(1)).await {
                return;
            }
        }
    }

    /// One pass of everything, each step in turn (tests drive time with it).
    pub async fn tick(&self) {
        if let Err(e) = self.escalations().await {
            tracing::error!(error = %e, "escalation pass failed");
        }
        if let Err(e) = self.expiries().await {
            tracing::error!(error = %e, "approval expiry pass failed");
        }
        if let Err(e) = self.digest().await {
            tracing::error!(error = %e, "status digest failed");
        }
    }

    async fn claim_steps(&self) -> Result<Vec<EscalationRow>, JournalError> {
        let now = self.clock.now();
        self.work
            .with(move |j| j.claim_escalations(now, CLAIM))
            .await
    }

    async fn escalations(&self) -> Result<(), JournalError> {
        for e in self.claim_steps().await? {
            self.run_step(e).await?;
        }
        Ok(())
    }

    /// Delivers one paging step and moves the chain on. The chain moves on
    /// when the delivery is over or when the next step falls due, whichever
    /// comes first: a channel that retries for a minute must not hold back
    /// the SMS or call after it. (A crash after moving on may lose this
    /// step's message; the chain itself, in the journal, goes on.)
    async fn run_step(&self, e: EscalationRow) -> Result<(), JournalError> {
        let steps = self.cfg.escalation(e.tier);
        let step = e.step as usize;
        let id = e.incident.clone();
        let next_due = steps
            .get(step + 1)
            .map(|s| e.started_at.saturating_add(s.after));
        let mut moved_on = false;
        let now = self.clock.now();
        let incident = self
            .reads
            .with({
                let id = id.clone();
                move |j| j.incident(&id)
            })
            .await?;
        let silences = self
            .silence_journal
            .with(move |j| j.silences(now, false))
            .await?;
        self.silences.set(silences);
        let hold = incident.as_ref().and_then(|inc| {
            let labels = crate::silence::labels_of_incident(inc);
            self.silences
                .hold_labels(Action::Page, &format!("{id}/page/{step}"), &labels, now)
        });
        if let (Some(hold), Some(_)) = (hold, steps.get(step)) {
            let text = format!(
                "page step {} of {} not sent: {}",
                step + 1,
                steps.len(),
                hold.detail
            );
            self.note_page(&id, text).await?;
        } else if let Some(s) = steps.get(step) {
            if let (Some(out), Some(inc)) = (&self.output, incident.as_ref()) {
                out.page_step(
                    self.clock.now(),
                    inc,
                    &format!(
                        "page step {} of {} via {}",
                        step + 1,
                        steps.len(),
                        s.channels.join(", ")
                    ),
                    step as u32 + 1,
                );
            }
            let mut message = self.page_message(&e, incident.as_ref(), step, steps.len());
            let actions = super::actions_after_pause(&self.reads, &id).await?;
            if let Some(line) = super::message::rollout_line(&actions) {
                message.body.insert_str(0, &format!("{line}\n"));
            }
            let fallback = self.cfg.route(e.tier).fallback.as_deref();
            let delivery = self.deliverer.send_all(&s.channels, &message, fallback);
            tokio::pin!(delivery);
            let results = match next_due {
                Some(due) => {
                    let wait = due.since(self.clock.now()).to_std();
                    tokio::select! {
                        results = &mut delivery => results,
                        _ = tokio::time::sleep(wait) => {
                            self.step_done(&id, e.step, next_due).await?;
                            moved_on = true;
                            delivery.await
                        }
                    }
                }
                None => delivery.await,
            };
            let sent: Vec<&str> = results
                .iter()
                .filter(|r| r.sent())
                .map(|r| r.channel.as_str())
                .collect();
            let text = format!(
                "page step {} of {}: {}",
                step + 1,
                steps.len(),
                if sent.is_empty() {
                    "not delivered".to_owned()
                } else {
                    format!("sent via {}", sent.join(", "))
                }
            );
            self.note_page(&id, text).await?;
        }
        if moved_on {
            return Ok(());
        }
        self.step_done(&id, e.step, next_due).await
    }

    /// Puts what became of a paging step on the incident's timeline.
    async fn note_page(&self, id: &str, text: String) -> Result<(), JournalError> {
        let (i, at) = (id.to_owned(), self.clock.now());
        self.work
            .with(move |j| {
                j.add_timeline(
                    &crate::decision::IncidentId::from_string(i.as_str()),
                    at,
                    "page",
                    &text,
                )
            })
            .await
    }

    /// Records `step` done; the next one is due at `next` (never in the past).
    async fn step_done(&self, id: &str, step: u32, next: Option<Ts>) -> Result<(), JournalError> {
        let next = next.map(|t| t.max(self.clock.now()));
        let id = id.to_owned();
        self.work
            .with(move |j| j.escalation_step_done(&id, step, next))
            .await
    }

    fn page_message(
        &self,
        e: &EscalationRow,
        inc: Option<&IncidentRow>,
        step: usize,
        steps: usize,
    ) -> Message {
        let now = self.clock.now();
        let (rule, whom, severity) = match inc {
            Some(i) => {
                let whom: Vec<String> = ["service", "instance"]
                    .iter()
                    .filter_map(|k| {
                        i.labels
                            .get(*k)
                            .and_then(|v| v.as_str())
                            .map(|v| crate::text::one_line(v).into_owned())
                    })
                    .collect();
                (
                    i.rule.clone(),
                    whom.join("/"),
                    i.severity.parse().unwrap_or(Severity::Severe),
                )
            }
            None => ("?".into(), String::new(), Severity::Severe),
        };
        let links = self
            .links
            .as_ref()
            .map(|l| l.links(&e.incident, &[Verb::Ack, Verb::Approve], now))
            .unwrap_or_default();
        Message {
            kind: Kind::Page,
            title: format!(
                "[{}/{severity}] PAGE {whom}: {rule}",
                e.tier.as_str().to_uppercase()
            ),
            body: format!(
                "incident {} needs a human (step {} of {steps}, paging since {}).\nAcknowledge to stop the paging: ripcord ack {} --by <you>",
                e.incident,
                step + 1,
                crate::time::clock_words(now, e.started_at),
                e.incident
            ),
            tier: e.tier,
            severity,
            incident: Some(e.incident.clone()),
            links,
            mention: true,
        }
    }

    async fn expiries(&self) -> Result<(), JournalError> {
        let now = self.clock.now();
        let rollback_tiers = self.cfg.rollback_on_timeout();
        let expired = self
            .work
            .with(move |j| j.expire_approvals(now, &rollback_tiers))
            .await?;
        for x in expired {
            let (title, body) = match x.rollback_keys.first() {
                Some(_) => {
                    self.wake.notify_one();
                    (
                        format!(
                            "[{}] approval timed out: rolling back",
                            x.tier.as_str().to_uppercase()
                        ),
                        format!(
                            "incident {}: nobody approved or rejected in time; the tier's policy rolls back",
                            x.incident
                        ),
                    )
                }
                None => {
                    self.escalate_now(&x.incident, x.tier, now).await?;
                    (
                        format!(
                            "[{}] approval timed out: escalating",
                            x.tier.as_str().to_uppercase()
                        ),
                        format!(
                            "incident {}: nobody approved or rejected in time; paging",
                            x.incident
                        ),
                    )
                }
            };
            let message = Message::note(
                Kind::Outcome,
                x.tier,
                Severity::Severe,
                Some(&x.incident),
                title,
                body,
            );
            let channels = self.cfg.route(x.tier).notify.clone();
            let fallback = self.cfg.route(x.tier).fallback.as_deref();
            self.deliverer.send_all(&channels, &message, fallback).await;
        }
        Ok(())
    }

    async fn escalate_now(&self, incident: &str, tier: Tier, now: Ts) -> Result<(), JournalError> {
        if self.cfg.escalation(tier).is_empty() {
            return Ok(());
        }
        let id = incident.to_owned();
        self.work
            .with(move |j| {
                if !j.hurry_escalation(&id, now)? {
                    j.start_escalation(&id, tier, now, now)?;
                }
                Ok(())
            })
            .await
    }

    /// Every `status.every` while anything is open: what happened, what
    /// ripcord did, what waits for whom.
    async fn digest(&self) -> Result<(), JournalError> {
        let Some(status) = &self.cfg.status else {
            return Ok(());
        };
        let now = self.clock.now();
        let (open, approvals, rollouts, upgrades) = self
            .reads
            .with(|j| {
                Ok((
                    j.incidents(Some("open"))?,
                    j.approvals(Some("awaiting"))?,
                    j.rollouts()?,
                    j.upgrades(true)?,
                ))
            })
            .await?;
        let paused: Vec<_> = rollouts.into_iter().filter(|r| r.paused).collect();
        if open.is_empty() && upgrades.is_empty() && paused.is_empty() {
            return Ok(());
        }
        let (owner, until) = (self.owner.clone(), now.saturating_add(status.every));
        if !self
            .work
            .with(move |j| j.take_lease("status-digest", &owner, until, now))
            .await?
        {
            return Ok(());
        }
        let mut body = String::new();
        let _ = writeln!(body, "Open incidents: {}", open.len());
        for i in open.iter().take(30) {
            let whom: Vec<std::borrow::Cow<str>> = ["service", "instance"]
                .iter()
                .filter_map(|k| i.labels.get(*k).and_then(|v| v.as_str()))
                .map(crate::text::one_line)
                .collect();
            let waiting = if i.attention.is_empty() {
                String::new()
            } else {
                format!(" [{}]", i.attention.join(", "))
            };
            let _ = writeln!(
                body,
                "- {} {} {}/{} since {}{waiting}",
                i.id,
                whom.join("/"),
                i.tier,
                i.severity,
                crate::time::clock_words(now, i.opened_at)
            );
        }
        let _ = writeln!(body, "Waiting for approval: {}", approvals.len());
        for a in &approvals {
            let _ = writeln!(
                body,
                "- {} ({} tier), until {}",
                a.incident,
                a.tier,
                crate::time::clock_words(now, a.expires_at)
            );
        }
        let _ = writeln!(body, "Rollouts paused: {}", paused.len());
        for r in &paused {
            let _ = writeln!(
                body,
                "- {} since {} (resume: ripcord resume {} --by <you>)",
                r.service,
                crate::time::clock_words(now, r.changed_at),
                r.service
            );
        }
        let _ = writeln!(body, "Upgrades running: {}", upgrades.len());
        for u in &upgrades {
            let _ = writeln!(
                body,
                "- {}: {}",
                u.service,
                u.message.as_deref().unwrap_or(&u.stage)
            );
        }
        let worst = open
            .iter()
            .filter_map(|i| i.severity.parse::<Severity>().ok())
            .max()
            .unwrap_or(Severity::Minor);
        let message = Message::note(
            Kind::Digest,
            Tier::High,
            worst,
            None,
            format!(
                "ripcord status: {} open incidents, {} awaiting approval",
                open.len(),
                approvals.len()
            ),
            body.trim_end().to_owned(),
        );
        self.deliverer
            .send_all(&status.channels, &message, None)
            .await;
        Ok(())
    }
}

/// Waits `d`; true if shutdown was asked for meanwhile.
async fn stopped_within(shutdown: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.wait_for(|s| *s) => true,
    }
}
