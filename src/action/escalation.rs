//! Escalation: paging an incident step by step (chat, then SMS at 5
//! minutes, then a call at 10, as the tier's chain says) until someone
//! acknowledges it. Every step is claimed in the journal before it runs,
//! so several replicas never page twice for one step and a restart picks up
//! the chain; a silence made after paging began holds back the steps due
//! under it. Each step is its own task: a channel that retries for a
//! minute never holds back another incident's SMS or call.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::links::Verb;
use super::message::{Kind, Message};
use super::scheduler::Scheduler;
use crate::decision::{Action, Severity};
use crate::journal::{EscalationRow, IncidentRow, JournalError};
use crate::time::{Dur, Ts};

/// How long a claimed escalation step may take before another process
/// (or this one after a restart) runs it again.
const CLAIM: Dur = Dur::from_secs(60);

/// Paging steps delivered at once, at most; more wait for the next pass.
const MAX_STEPS_IN_FLIGHT: usize = 64;

impl Scheduler {
    pub(super) async fn paging_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
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

    async fn claim_steps(&self) -> Result<Vec<EscalationRow>, JournalError> {
        let now = self.clock.now();
        self.work
            .with(move |j| j.claim_escalations(now, CLAIM))
            .await
    }

    pub(super) async fn escalations(&self) -> Result<(), JournalError> {
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
}
