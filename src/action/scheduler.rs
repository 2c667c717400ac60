//! Things that happen with time rather than events: the next step of a
//! paging chain ([`super::escalation`]), an approval that waited too long,
//! the status digest for management. All state is in the journal, so a restart picks up where the
//! last process stopped; claims in the journal make sure several processes
//! never page twice for the same step.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::config::ActionsConfig;
use super::deliver::Deliverer;
use super::links::LinkSigner;
use super::message::{Kind, Message};
use crate::decision::{Severity, Tier};
use crate::journal::{JournalError, Reads, Shared, Silences, Work};
use crate::time::{Clock, Ts};

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
