//! The responder: what each kind of action does.
//!
//! - `notify`: a message to the tier's channels (and, for upgrade
//!   progress, the upgrade's last known state); a worsening also hurries
//!   the paging along.
//! - `page`: starts the tier's escalation chain (chat at once, SMS after
//!   5 min, a call after 10 by default) until someone acknowledges.
//! - `request_approval`: opens an approval (expiring) and sends the request
//!   with its one-click links; a human's verdict releases the rollback.
//! - `rollback`: within the rollback budget, runs the rollback executor,
//!   then the optional verification; a refusal, failure, exhausted budget
//!   or failed verification pages a human.
//! - `pause_rollout`: runs the pause executor and records the rollout as
//!   paused until a human resumes it.
//! - `switch_traffic` / `restore_traffic`: run the traffic executors
//!   (standby pool on an approved severe high-risk rollback, primary pool
//!   again on resume); never run twice, a failure pages.
//! - `resolve`: tells the channels, withdraws a waiting approval request
//!   and stops the paging.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use super::config::{ActionsConfig, Probe, Stage, Verify};
use super::deliver::{Delivered, Deliverer, Queued};
use super::executor::{ExecOutcome, Vars};
use super::links::{LinkSigner, Verb};
use super::message::{Kind, Message};
use super::{BoxFuture, Handled, Handler, Outcome};
use crate::decision::{Action, Decision, Severity, Tier};
use crate::journal::{
    ActionRow, ActionState, Acts, ApprovalOpened, JournalError, RollbackLimits, Shared,
};
use crate::telemetry::Metrics;
use crate::time::{Clock, Dur};

#[derive(Clone)]
pub struct Responder {
    /// Acting on incidents: claims and outcomes, approvals, reads.
    pub journal: Shared<dyn Acts>,
    pub deliverer: Deliverer,
    pub cfg: Arc<ActionsConfig>,
    pub clock: Arc<dyn Clock>,
    pub links: Option<LinkSigner>,
    /// Wakes the dispatcher for actions recorded here (none today; kept
    /// for the API, which releases approved rollbacks).
    pub wake: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    /// Mutes the messages that only inform (an all-clear, "rolled back")
    /// under a silence; the dispatcher holds back whole actions.
    pub silences: Arc<crate::silence::Guard>,
    /// Where a failed sample check's alert goes in (ripcord's own HTTP
    /// intake), so the rules open its incident; `None`: nowhere.
    pub findings: Option<crate::pipeline::input::Submit>,
}

impl Handler for Responder {
    fn handle<'a>(&'a self, a: &'a ActionRow) -> BoxFuture<'a, Handled<'a>> {
        Box::pin(async move {
            if self.cfg.vendor.as_ref().is_some_and(|v| v.due(a)) {
                self.contact_vendor(&a.decision);
            }
            match a.action {
                Action::Notify => self.notify(&a.decision).await,
                Action::Resolve => self.resolve(&a.decision).await,
                Action::Page => Handled::Done(self.page(a).await),
                Action::RequestApproval => self.request_approval(a).await,
                Action::Rollback => Handled::Done(self.rollback(a).await),
                Action::PauseRollout => Handled::Done(self.pause(&a.decision).await),
                Action::SwitchTraffic | Action::RestoreTraffic => {
                    Handled::Done(self.traffic(a).await)
                }
            }
        })
    }
}

/// What a set of deliveries amounts to.
fn summary(what: &str, results: &[Delivered]) -> Outcome {
    if results.is_empty() {
        return Outcome::skipped(format!("no channel configured for {what}"));
    }
    let sent: Vec<&str> = results
        .iter()
        .filter(|r| r.sent())
        .map(|r| r.channel.as_str())
        .collect();
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.sent())
        .map(|r| format!("{}: {:?}", r.channel, r.outcome))
        .collect();
    match (sent.is_empty(), failed.is_empty()) {
        (false, true) => Outcome::done(format!("{what} sent via {}", sent.join(", "))),
        (false, false) => Outcome::done(format!(
            "{what} sent via {}; not via {}",
            sent.join(", "),
            failed.join("; ")
        )),
        _ => Outcome::failed(format!("{what} not sent: {}", failed.join("; "))),
    }
}

impl Responder {
    /// Tells the cloud vendor of a severe incident, once (the journal's
    /// `vendor/<incident>` lease), on a task of its own: the action that
    /// brought it about (a rollback) never waits for the vendor. The answer
    /// goes on the incident's timeline (kind `vendor`).
    fn contact_vendor(&self, d: &Decision) {
        let Some(id) = d.incident.clone() else {
            return;
        };
        let (journal, cfg, clock, deliverer) = (
            self.journal.clone(),
            self.cfg.clone(),
            self.clock.clone(),
            self.deliverer.clone(),
        );
        let d = d.clone();
        tokio::spawn(async move {
            let Some(vendor) = cfg.vendor.as_ref() else {
                return;
            };
            let now = clock.now();
            // Held for good: the vendor is never contacted twice.
            let lease = format!("vendor/{id}");
            let forever = now.saturating_add(Dur::from_mins(100 * 365 * 24 * 60));
            match journal
                .with(move |j| j.take_lease(&lease, "vendor", forever, now))
                .await
            {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::error!(incident = %id, error = %e, "could not take the vendor lease; the vendor is not contacted");
                    return;
                }
            }
            // An approved rollback's own message is the approval; the
            // incident's summary is its opening line.
            let mut summary_line = d.message.clone();
            if d.is_derived() {
                let i = id.to_string();
                if let Ok(Some(first)) = journal
                    .with(move |j| Ok(j.timeline(&i)?.into_iter().next()))
                    .await
                {
                    // Its line reads `<action>: <summary>`.
                    summary_line = Action::ALL
                        .iter()
                        .find_map(|a| first.message.strip_prefix(&format!("{a}: ")))
                        .unwrap_or(&first.message)
                        .to_owned();
                }
            }
            let vars = vendor.vars(&d, &summary_line);
            let line = match &vendor.contact {
                super::vendor::Contact::Http(h) => {
                    match h.exchange(&vars, &vendor.patterns(&cfg.patterns)).await {
                        Ok(answer) => {
                            let verdict = match answer.outcome {
                                ExecOutcome::Ok(_) => "vendor contacted",
                                _ => "vendor contact FAILED",
                            };
                            let ticket = super::vendor::ticket_id(&answer.body)
                                .map(|t| format!(", ticket {t}"))
                                .unwrap_or_default();
                            format!(
                                "{verdict}: {} → HTTP {}{ticket}",
                                answer.request, answer.status
                            )
                        }
                        Err(e) => format!("vendor contact FAILED: {}", e.detail()),
                    }
                }
                super::vendor::Contact::Channel(channel) => {
                    let title = format!(
                        "[{}/{}] severe incident, support needed: {}",
                        d.tier.as_str().to_uppercase(),
                        d.severity,
                        subject(&d)
                    );
                    let body = [
                        ("summary", "Summary"),
                        ("instances", "Instances"),
                        ("region", "Region"),
                        ("timeline", "Timeline"),
                    ]
                    .iter()
                    .filter_map(|(k, name)| {
                        vars.0
                            .get(*k)
                            .filter(|v| !v.is_empty())
                            .map(|v| format!("{name}: {v}"))
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                    let message = Message::note(
                        Kind::Outcome,
                        d.tier,
                        d.severity,
                        Some(id.as_str()),
                        title,
                        body,
                    );
                    let queued = deliverer
                        .queue_all(std::slice::from_ref(channel), &message, None)
                        .await;
                    let out = summary("vendor message", &queued.outcomes().await);
                    match out.state {
                        ActionState::Done => format!("vendor contacted: {}", out.detail),
                        _ => format!("vendor contact FAILED: {}", out.detail),
                    }
                }
            };
            let line = crate::text::one_line(&line).into_owned();
            let line = super::message::truncate_utf8(&line, 400);
            let at = clock.now();
            if let Err(e) = journal
                .with(move |j| j.add_timeline(&id, at, "vendor", &line))
                .await
            {
                tracing::error!(error = %e, "could not record the vendor's answer");
            }
        });
    }

    /// Hands `message` to `channels` (with the tier's fallback); the
    /// outcomes follow.
    async fn queue(&self, tier: Tier, channels: &[String], message: &Message) -> Queued {
        let fallback = self.cfg.route(tier).fallback.as_deref();
        self.deliverer.queue_all(channels, message, fallback).await
    }

    /// Tells the tier's channels, without waiting for them: an action's
    /// outcome never waits for its messages (their outcomes go on the
    /// timeline).
    pub(super) async fn tell(&self, tier: Tier, message: Message) {
        let channels = self.cfg.route(tier).notify.clone();
        drop(self.queue(tier, &channels, &message).await);
    }

    async fn notify<'a>(&'a self, d: &'a Decision) -> Handled<'a> {
        if let (Some(id), Some(_)) = (&d.incident, d.escalated_from) {
            // Worse than it was: page sooner (or start paging if severe).
            self.escalate(id.as_str(), d.tier, d.severity == Severity::Severe)
                .await;
        }
        let message = Message::for_decision(d, Vec::new(), self.clock.now());
        let route = self.cfg.route(d.tier);
        let mut channels = route.notify.clone();
        // One post per event: where the same event asks for approval, the
        // request carries this report (its facts, what ripcord does), so
        // a channel the request reaches gets no second post.
        let carried = self.asked_in_the_same_event(d).await;
        if carried {
            channels.retain(|c| !route.approve.contains(c));
            if channels.is_empty() {
                return Handled::Done(Outcome::done(format!(
                    "{} notification carried by the approval request",
                    d.tier
                )));
            }
        }
        let queued = self.queue(d.tier, &channels, &message).await;
        if d.incident.is_none() && d.batch.is_some() {
            // A batch done: its tier's sample check.
            self.start_sample_check(d).await;
        }
        Handled::Queued(Box::pin(async move {
            let mut out = summary(
                &format!("{} notification", d.tier),
                &queued.outcomes().await,
            );
            if carried {
                out.detail
                    .push_str("; the approval request carried it everywhere else");
            }
            out
        }))
    }

    /// Whether the event behind `d` (a notify) also decided a new approval
    /// request for its incident (same decision time), one that goes out
    /// whatever happens: not one about members that joined a batch, which
    /// is skipped while the first request waits.
    async fn asked_in_the_same_event(&self, d: &Decision) -> bool {
        let Some(id) = d.incident.as_ref().map(|i| i.to_string()) else {
            return false;
        };
        let actions = self
            .journal
            .with(move |j| j.actions_of(&id))
            .await
            .unwrap_or_default();
        actions.iter().any(|a| {
            a.action == Action::RequestApproval
                && a.decision.at == d.at
                && a.state != ActionState::Skipped
                && a.decision.batch.as_ref().is_none_or(|b| b.about.is_empty())
        })
    }

    async fn resolve<'a>(&'a self, d: &'a Decision) -> Handled<'a> {
        let Some(id) = d.incident.as_ref().map(|i| i.to_string()) else {
            return Handled::Done(Outcome::skipped("not an incident"));
        };
        let now = self.clock.now();
        let (i1, i2) = (id.clone(), id.clone());
        let withdrawn = self
            .journal
            .with(move |j| j.withdraw_approval(&i1, "the incident recovered", now))
            .await
            .unwrap_or(false);
        // A rollback that failed, or whose verification failed, pages about
        // the instance, not the metric: the metric's recovery does not end
        // that paging, a human's acknowledgement does. (A journal error
        // reads as "failed": paging on is the safe side.)
        let rollback_failed =
            self.journal
                .with(move |j| j.actions_of(&i2))
                .await
                .map_or(true, |actions| {
                    actions
                        .iter()
                        .any(|a| a.action == Action::Rollback && a.state == ActionState::Failed)
                });
        if !rollback_failed {
            let i3 = id.clone();
            let _ = self
                .journal
                .with(move |j| j.stop_escalation(&i3, "resolved", None, now))
                .await;
        }
        if let Some(hold) = self.silences.hold(Action::Resolve, &d.key, d, now) {
            let mut detail = format!("all-clear not sent: {}", hold.detail);
            if withdrawn {
                detail.push_str("; approval request withdrawn");
            }
            return Handled::Done(Outcome::skipped(detail));
        }
        let mut message = Message::for_decision(d, Vec::new(), self.clock.now());
        if withdrawn {
            // First, so a digest (which keeps each part's first line) says it too.
            message.body.insert_str(
                0,
                "The rollback approval request is withdrawn: no rollback will run. ",
            );
        }
        if rollback_failed {
            message.body.insert_str(0, STILL_PAGING);
        }
        let channels = self.cfg.route(d.tier).notify.clone();
        let queued = self.queue(d.tier, &channels, &message).await;
        Handled::Queued(Box::pin(async move {
            let mut out = summary("resolution", &queued.outcomes().await);
            if withdrawn {
                out.detail.push_str("; approval request withdrawn");
            }
            if rollback_failed {
                out.detail
                    .push_str("; paging goes on: the rollback or its verification failed");
            }
            out
        }))
    }

    /// Starts the escalation chain, or brings its next step forward.
    async fn escalate(&self, incident: &str, tier: Tier, start_if_none: bool) -> bool {
        let steps = self.cfg.escalation(tier);
        let Some(first) = steps.first() else {
            return false;
        };
        let now = self.clock.now();
        let first_at = now.saturating_add(first.after);
        let id = incident.to_owned();
        let result = self
            .journal
            .with(move |j| {
                if j.hurry_escalation(&id, now)? {
                    return Ok(true);
                }
                if start_if_none {
                    j.start_escalation(&id, tier, now, first_at)
                } else {
                    Ok(false)
                }
            })
            .await;
        result.unwrap_or_else(|e| {
            tracing::error!(error = %e, "could not escalate");
            false
        })
    }

    async fn page(&self, a: &ActionRow) -> Outcome {
        let d = &a.decision;
        let Some(id) = d.incident.as_ref().map(|i| i.to_string()) else {
            return Outcome::skipped("not an incident");
        };
        let steps = self.cfg.escalation(d.tier);
        if steps.is_empty() {
            tracing::error!(incident = %id, tier = %d.tier, "a page was decided but no paging channels are configured");
            return Outcome::skipped(format!(
                "no escalation channels configured for {} tier",
                d.tier
            ));
        }
        let now = self.clock.now();
        let first = now.saturating_add(steps[0].after);
        let (i, tier) = (id.clone(), d.tier);
        match self
            .journal
            .with(move |j| j.start_escalation(&i, tier, now, first))
            .await
        {
            Ok(_) => {
                let chain: Vec<String> = steps
                    .iter()
                    .map(|s| format!("{} at +{}", s.channels.join("+"), s.after))
                    .collect();
                Outcome::done(format!(
                    "paging until acknowledged: {}",
                    chain.join(", then ")
                ))
            }
            Err(e) => Outcome::journal_retry(a.attempts, "could not start paging", &e),
        }
    }

    /// Members that joined a batch incident after its request: nothing to
    /// ask while the request waits (approving its breaching instances
    /// covers them), nothing to do if the approved blast radius named them
    /// (their rollback went out with the approval); `None`: ask again.
    async fn joiners_covered(&self, id: &str, joiners: &[String]) -> Option<Outcome> {
        let lookup = id.to_owned();
        let approval = self
            .journal
            .with(move |j| j.approval(&lookup))
            .await
            .ok()
            .flatten()?;
        let names = crate::text::compact_names(
            &joiners.iter().map(String::as_str).collect::<Vec<_>>(),
            160,
        );
        match (approval.state.as_str(), &approval.scope) {
            ("awaiting", _) => Some(Outcome::skipped(format!(
                "{names} joined while the request waits: approving the breaching instances covers them"
            ))),
            ("approved", Some(scope)) if joiners.iter().all(|j| scope.covers(j)) => {
                Some(Outcome::skipped(format!(
                    "{names} joined; the approved blast radius ({}) named {}: its rollback went out with the approval",
                    scope.describe(),
                    if joiners.len() == 1 { "it" } else { "them" }
                )))
            }
            _ => None,
        }
    }

    async fn request_approval<'a>(&'a self, a: &'a ActionRow) -> Handled<'a> {
        let d = &a.decision;
        let Some(id) = d.incident.as_ref().map(|i| i.to_string()) else {
            return Handled::Done(Outcome::skipped("not an incident"));
        };
        let joiners: Vec<String> = d
            .batch
            .as_ref()
            .map(|b| b.about.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default();
        if !joiners.is_empty() {
            if let Some(done) = self.joiners_covered(&id, &joiners).await {
                return Handled::Done(done);
            }
        }
        let now = self.clock.now();
        let expires = now.saturating_add(self.cfg.approvals.expire_after);
        let (i, key, tier) = (id.clone(), a.key.clone(), d.tier);
        let opened = match self
            .journal
            .with(move |j| j.open_approval(&i, &key, tier, now, expires))
            .await
        {
            Ok(o) => o,
            Err(e) => {
                return Handled::Done(Outcome::journal_retry(
                    a.attempts,
                    "could not record the approval request",
                    &e,
                ));
            }
        };
        if opened == ApprovalOpened::IncidentOver {
            return Handled::Done(Outcome {
                state: ActionState::Withdrawn,
                detail: "the incident recovered before the request went out".into(),
            });
        }
        let verbs: &[Verb] = if d.batch.is_some() {
            &[Verb::Approve, Verb::ApproveBatch, Verb::Reject, Verb::Ack]
        } else {
            &[Verb::Approve, Verb::Reject, Verb::Ack]
        };
        let links = self
            .links
            .as_ref()
            .map(|l| l.links(&id, verbs, now))
            .unwrap_or_default();
        let mut message = Message::for_decision(d, links, now);
        let actions = super::actions_after_pause(&self.journal, &id)
            .await
            .unwrap_or_default();
        if let Some(line) = super::message::rollout_line(&actions) {
            message.body.insert_str(0, &format!("{line}\n"));
        }
        match &d.batch {
            Some(b) => {
                let breaching = b.breaching_targets();
                let whole = b.batch_instances.len().max(b.instances().len());
                let names = crate::text::compact_names(
                    &breaching.iter().map(String::as_str).collect::<Vec<_>>(),
                    160,
                );
                message.body.push_str(&format!(
                    "\nChoose the blast radius, then approve {}:\
                     \n  - the {} breaching instance{} ({names}): ripcord approve {id} --by <you>\
                     \n  - the whole batch ({whole} instance{}): ripcord approve {id} --by <you> --scope batch\
                     \n  - chosen instances: on the approve page, or --scope i-1,i-2\
                     \n  (or reject / ack)",
                    crate::time::deadline_words(now, expires),
                    breaching.len(),
                    if breaching.len() == 1 { "" } else { "s" },
                    if whole == 1 { "" } else { "s" },
                ));
            }
            None => message.body.push_str(&format!(
                "\nConfirm the blast radius, then approve {}:\n  ripcord approve {id} --by <you>   (or reject / ack)",
                crate::time::deadline_words(now, expires)
            )),
        }
        let channels = self.cfg.route(d.tier).approve.clone();
        let queued = self.queue(d.tier, &channels, &message).await;
        Handled::Queued(Box::pin(async move {
            let sent = summary("approval request", &queued.outcomes().await);
            Outcome {
                state: ActionState::AwaitingApproval,
                detail: format!(
                    "waiting for approval until {}; {}",
                    crate::time::clock_words(now, expires),
                    sent.detail
                ),
            }
        }))
    }

    /// A rollback that will not run, or did not work: a human must know.
    async fn trouble(&self, d: &Decision, what: &str, detail: &str) {
        if let Some(id) = &d.incident {
            let started = self.escalate(id.as_str(), d.tier, true).await;
            tracing::warn!(incident = %id, paging = started, "{what}: {detail}");
        }
        let title = format!(
            "[{}/{}] {what}: {}",
            d.tier.as_str().to_uppercase(),
            d.severity,
            subject(d)
        );
        self.tell_outcome(d, title, detail).await;
    }

    /// Tells the tier's channels that an action worked, unless a silence
    /// mutes the messages that only inform.
    async fn tell_success(&self, d: &Decision, title: String, detail: &str) {
        if let Some(hold) = self
            .silences
            .hold(Action::Notify, &d.key, d, self.clock.now())
        {
            tracing::info!(key = %d.key, hold = %hold.detail, "outcome message held back");
            return;
        }
        self.tell_outcome(d, title, detail).await;
    }

    /// Tells the tier's channels what became of a decision's action.
    async fn tell_outcome(&self, d: &Decision, title: String, detail: &str) {
        let incident = d.incident.as_ref().map(|i| i.to_string());
        self.tell(
            d.tier,
            Message::note(
                Kind::Outcome,
                d.tier,
                d.severity,
                incident.as_deref(),
                title,
                detail.to_owned(),
            ),
        )
        .await;
    }

    /// An approved rollback (`<request>/approved`) releases what goes with
    /// it (a severe high-risk incident's traffic switch). `ops::decide`
    /// records that right after the approval; recording it again here
    /// (once: it is keyed) covers a process that died in between.
    async fn release_beside_approved(&self, a: &ActionRow) {
        let approved = a.key.ends_with("/approved") || a.key.contains("/approved@");
        let (Some(incident), Some(request), true) = (
            a.incident.clone(),
            crate::journal::request_of_rollback(&a.key).map(str::to_owned),
            approved,
        ) else {
            return;
        };
        let now = self.clock.now();
        let released = self
            .journal
            .with(move |j| {
                super::ops::release_with_rollback(j, &incident, &request, "its approver", now)
            })
            .await;
        match released {
            Ok(r) if !r.is_empty() => {
                tracing::warn!(rollback = %a.key, released = ?r, "recorded what the approval releases beside the rollback (it was missing)");
                self.wake.notify_one();
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(rollback = %a.key, error = %e, "could not record what the approval releases beside the rollback")
            }
        }
    }

    async fn rollback(&self, a: &ActionRow) -> Outcome {
        let d = &a.decision;
        self.release_beside_approved(a).await;
        let Some(executor) = &self.cfg.rollback.executor else {
            let detail = "no rollback executor configured; roll back by hand".to_owned();
            self.trouble(d, "rollback not automated", &detail).await;
            return Outcome::skipped(detail);
        };
        let vars = Vars::of(d);
        // A refused rollback never runs, so it takes no place in the budget
        // (hostile labels must not use a service's budget up).
        if let Err(refusal) = executor.check(&vars, &self.cfg.patterns) {
            self.trouble(d, "rollback refused", &refusal).await;
            return Outcome::failed(refusal);
        }
        let budget = self.cfg.rollback.budget;
        let since = self.clock.now().saturating_sub(budget.window);
        let service = d.label("service").map(str::to_owned);
        let (key, svc) = (a.key.clone(), service.clone());
        let owner = a.owner.clone().unwrap_or_default();
        // A human who approved this rollback chose its blast radius: it
        // counts against the budget, but the budget (a guard against a
        // runaway of automatic rollbacks) never withholds it.
        let approved = a.key.ends_with("/approved") || a.key.contains("/approved@");
        let limits = if approved {
            RollbackLimits {
                per_service: u32::MAX,
                overall: u32::MAX,
            }
        } else {
            RollbackLimits {
                per_service: budget.per_service,
                overall: budget.overall,
            }
        };
        let admission = self
            .journal
            .with(move |j| j.admit_rollback(&key, &owner, svc.as_deref(), since, limits))
            .await;
        let admission = match admission {
            Ok(a) => a,
            // Our claim was taken over (we stalled past its lease): the
            // action is unknown to the cluster and must not run here.
            Err(e @ JournalError::Fenced { .. }) => {
                return Outcome {
                    state: ActionState::Unknown,
                    detail: format!("not started: {e}"),
                };
            }
            Err(e) => return Outcome::failed(format!("cannot check the rollback budget: {e}")),
        };
        if !admission.admitted {
            let detail = format!(
                "rollback budget exhausted: {} rollbacks of {} and {} in all within {} \
                 (limits {} and {}); not rolling back, paging a human",
                admission.for_service,
                service.as_deref().unwrap_or("this service"),
                admission.overall,
                budget.window,
                budget.per_service,
                budget.overall
            );
            self.trouble(d, "rollback withheld", &detail).await;
            return Outcome::skipped(detail);
        }
        let result = executor.run(&vars, &self.cfg.patterns).await;
        let detail = result.detail().to_owned();
        match result {
            ExecOutcome::Ok(_) => {
                // The check is journaled before the rollback is marked done,
                // so no crash leaves a rollback done and never verified.
                let due = self
                    .cfg
                    .rollback
                    .verify
                    .as_ref()
                    .map(|v| self.clock.now().saturating_add(v.delay));
                let detail = match due {
                    Some(due) => format!(
                        "{detail}; verification due at {}",
                        crate::time::clock_words(self.clock.now(), due)
                    ),
                    None => detail,
                };
                let (key, done) = (a.key.clone(), detail.clone());
                let _ = self
                    .journal
                    .with(move |j| {
                        if let Some(due) = due {
                            j.schedule_verification(&key, due)?;
                        }
                        j.set_action(&key, ActionState::Done, &done)
                    })
                    .await;
                if d.batch.is_some() {
                    // One message for the batch once its rollbacks are over.
                    self.tell_batch_rolled_back(d, executor.is_dry_run()).await;
                    return Outcome::done(detail);
                }
                let done = format!(
                    "{} {}",
                    if executor.is_dry_run() {
                        "dry run: would roll back"
                    } else {
                        "rolled back"
                    },
                    subject(d)
                );
                let title = format!("[{}] {done}", d.tier.as_str().to_uppercase());
                self.tell_success(d, title, &beside_title(&done, &detail))
                    .await;
                Outcome::done(detail)
            }
            ExecOutcome::Failed(_) => {
                self.trouble(d, "rollback FAILED", &detail).await;
                Outcome::failed(detail)
            }
            ExecOutcome::Refused(_) => {
                self.trouble(d, "rollback refused", &detail).await;
                Outcome::failed(detail)
            }
        }
    }

    /// After one of a batch incident's rollbacks: when none is left to
    /// run, one message counts them ("5 of 10 instances of shop batch 2
    /// rolled back"), sent once however many processes finish the last ones
    /// together. Failures paged already, one by one.
    async fn tell_batch_rolled_back(&self, d: &Decision, dry_run: bool) {
        let (Some(id), Some(b)) = (d.incident.as_ref().map(|i| i.to_string()), &d.batch) else {
            return;
        };
        let lookup = id.clone();
        let Ok(actions) = self.journal.with(move |j| j.actions_of(&lookup)).await else {
            return;
        };
        let rollbacks: Vec<&ActionRow> = actions
            .iter()
            .filter(|a| a.action == Action::Rollback)
            .collect();
        if rollbacks.iter().any(|a| !a.state.is_final()) {
            return;
        }
        let mut done: Vec<&str> = rollbacks
            .iter()
            .filter(|a| a.state == ActionState::Done)
            .filter_map(|a| a.decision.label("instance"))
            .collect();
        done.sort_unstable();
        done.dedup();
        let failed = rollbacks
            .iter()
            .filter(|a| a.state != ActionState::Done)
            .count();
        let (lease, owner, now) = (
            format!("batch-rolled-back/{id}/{}", rollbacks.len()),
            d.key.clone(),
            self.clock.now(),
        );
        let first = self
            .journal
            .with(move |j| j.take_lease(&lease, &owner, crate::time::MAX_TS, now))
            .await
            .unwrap_or(false);
        if !first || done.is_empty() {
            return;
        }
        let size = b.size.max(b.batch_instances.len() as u32);
        let of = if size > 0 {
            format!("{} of {size}", done.len())
        } else {
            done.len().to_string()
        };
        let title = format!(
            "[{}] {}{of} instances of {} rolled back",
            d.tier.as_str().to_uppercase(),
            if dry_run { "dry run: " } else { "" },
            b.name()
        );
        let mut detail = crate::text::compact_names(&done, 300);
        if failed > 0 {
            detail.push_str(&format!("; {failed} not rolled back (see the incident)"));
        }
        self.tell_success(d, title, &detail).await;
    }

    /// Verifications running at once.
    const MAX_VERIFYING: usize = 16;

    /// Runs post-rollback verifications as they fall due, until shutdown.
    /// They wait in the journal, so a restart picks up any that were due or
    /// running, at the stage after the last one that passed; a stage still
    /// running at shutdown runs again after its lease.
    pub async fn verification_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let Some(v) = self.cfg.rollback.verify.as_ref() else {
            return;
        };
        // Longer than a stage may take, so none runs twice at once.
        let lease = v.lease();
        let mut running = JoinSet::new();
        loop {
            while running.try_join_next().is_some() {}
            let free = Self::MAX_VERIFYING.saturating_sub(running.len());
            if free > 0 {
                let now = self.clock.now();
                match self
                    .journal
                    .with(move |j| j.claim_verifications(now, lease, free))
                    .await
                {
                    Ok(due) => {
                        for a in due {
                            let this = self.clone();
                            running.spawn(async move { this.verify(&a).await });
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot read due verifications"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        running.abort_all();
    }

    /// Runs a post-rollback verification's stages in order, from the first
    /// that has not passed yet. Each result goes on the timeline and is
    /// journaled before the next stage starts; a failing stage pages on
    /// every tier, marks the rollback failed (so the incident keeps asking
    /// for attention) and ends the verification.
    async fn verify(&self, a: &ActionRow) {
        let Some(v) = self.cfg.rollback.verify.as_ref() else {
            return;
        };
        let d = &a.decision;
        if d.incident.is_none() {
            // Only a sample check's instances verify outside an incident.
            return self.verify_sample(a, v).await;
        }
        let key = a.key.clone();
        let first = match self.journal.with(move |j| j.verification_stage(&key)).await {
            Ok(Some(s)) => s as usize,
            Ok(None) => return, // finished by another process meanwhile
            Err(e) => {
                tracing::error!(error = %e, key = %a.key, "cannot read a verification's stage");
                return;
            }
        };
        let lease = v.lease();
        for (i, stage) in v.stages.iter().enumerate().skip(first) {
            let result = self.run_stage(stage, d).await;
            let at = self.clock.now();
            match result {
                Ok(detail) => {
                    self.on_timeline(
                        d,
                        format!("verification stage {} ok ({detail})", stage.name),
                    )
                    .await;
                    let (key, held) = (a.key.clone(), at.saturating_add(lease));
                    if let Err(e) = self
                        .journal
                        .with(move |j| j.pass_verification_stage(&key, i as u32, held))
                        .await
                    {
                        // Not recorded: the stage runs again after the lease.
                        tracing::error!(error = %e, key = %a.key, "could not record a passed verification stage");
                        return;
                    }
                }
                Err(detail) => {
                    let later = v.stages.len() - i - 1;
                    let not_run = if later > 0 {
                        format!("; {later} later stage(s) not run")
                    } else {
                        String::new()
                    };
                    self.on_timeline(
                        d,
                        format!(
                            "verification stage {} FAILED ({detail}){not_run}",
                            stage.name
                        ),
                    )
                    .await;
                    let what =
                        format!("verification after rollback FAILED at stage {}", stage.name);
                    self.trouble(d, &what, &detail).await;
                    let (key, why) = (a.key.clone(), format!("rolled back, but {what}: {detail}"));
                    let _ = self
                        .journal
                        .with(move |j| j.set_action(&key, ActionState::Failed, &why))
                        .await;
                    self.finish_verification(a).await;
                    return;
                }
            }
        }
        let summary = self.stages_passed(d, v).await;
        self.on_timeline(d, format!("verification after rollback passed: {summary}"))
            .await;
        self.finish_verification(a).await;
    }

    /// One stage, with its retries: `Ok` with what it reported, or `Err`
    /// with the last failure.
    pub(super) async fn run_stage(&self, stage: &Stage, d: &Decision) -> Result<String, String> {
        let mut tries = 0;
        loop {
            tries += 1;
            let outcome = match &stage.probe {
                Probe::Check(check) => match check.run(&Vars::of(d), &self.cfg.patterns).await {
                    ExecOutcome::Ok(s) => Ok(s),
                    // A refusal (a value the patterns reject) never changes.
                    ExecOutcome::Refused(s) => return Err(s),
                    ExecOutcome::Failed(s) => Err(s),
                },
                Probe::Windows { timeout } => return self.windows_clear(d, *timeout).await,
            };
            match outcome {
                Ok(s) if tries > 1 => return Ok(format!("{s}; {tries} tries")),
                Ok(s) => return Ok(s),
                Err(s) if tries > stage.retries => {
                    return Err(if tries > 1 {
                        format!("{s}; {tries} tries")
                    } else {
                        s
                    });
                }
                Err(_) => tokio::time::sleep(stage.retry_delay.to_std()).await,
            }
        }
    }

    /// ripcord's own windows as a business check: passes once the
    /// incident's rule cleared (the engine resolved the incident: the
    /// breached rule back on the safe side of its threshold for its
    /// `clear_for`, at least its `for`).
    async fn windows_clear(&self, d: &Decision, timeout: Dur) -> Result<String, String> {
        let Some(id) = d.incident.as_ref().map(|i| i.to_string()) else {
            return Err("no incident whose rule could clear".to_owned());
        };
        let deadline = self.clock.now().saturating_add(timeout);
        loop {
            let lookup = id.clone();
            match self.journal.with(move |j| j.incident(&lookup)).await {
                Ok(Some(inc)) if inc.resolved_at.is_some() => {
                    return Ok(format!("{} back under its threshold", inc.rule));
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, incident = %id, "cannot read the incident"),
            }
            if self.clock.now() >= deadline {
                return Err(format!(
                    "{} not back under its threshold within {timeout}",
                    d.rule
                ));
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }

    /// "system ok 12:03, services ok 12:04", from the timeline (stages that
    /// passed before a restart included).
    async fn stages_passed(&self, d: &Decision, v: &Verify) -> String {
        let timeline = match &d.incident {
            Some(id) => {
                let id = id.to_string();
                self.journal
                    .with(move |j| j.timeline(&id))
                    .await
                    .unwrap_or_default()
            }
            None => Vec::new(),
        };
        let parts: Vec<String> = v
            .stages
            .iter()
            .map(|s| {
                let prefix = format!("verification stage {} ok", s.name);
                let at = timeline
                    .iter()
                    .rev()
                    .find(|t| t.kind == "verify" && t.message.starts_with(&prefix))
                    .map(|t| t.at.to_string());
                match at {
                    Some(at) => format!("{} ok {}", s.name, at.get(11..16).unwrap_or(&at)),
                    None => format!("{} ok", s.name),
                }
            })
            .collect();
        parts.join(", ")
    }

    async fn on_timeline(&self, d: &Decision, message: String) {
        if let Some(id) = &d.incident {
            let (id, at) = (id.clone(), self.clock.now());
            let _ = self
                .journal
                .with(move |j| j.add_timeline(&id, at, "verify", &message))
                .await;
        }
    }

    async fn finish_verification(&self, a: &ActionRow) {
        let key = a.key.clone();
        if let Err(e) = self
            .journal
            .with(move |j| j.finish_verification(&key))
            .await
        {
            tracing::error!(error = %e, key = %a.key, "could not record a finished verification");
        }
    }

    async fn pause(&self, d: &Decision) -> Outcome {
        let Some(executor) = &self.cfg.pause else {
            return Outcome::skipped("no pause_rollout executor configured");
        };
        let result = executor.run(&Vars::of(d), &self.cfg.patterns).await;
        let detail = result.detail().to_owned();
        match result {
            ExecOutcome::Ok(_) => {
                if let Some(service) = d.label("service").map(str::to_owned) {
                    let (now, incident) =
                        (self.clock.now(), d.incident.as_ref().map(|i| i.to_string()));
                    let _ = self
                        .journal
                        .with(move |j| {
                            j.set_rollout(&service, true, "ripcord", incident.as_deref(), now)
                        })
                        .await;
                }
                Outcome::done(format!("rollout paused until a human resumes it; {detail}"))
            }
            ExecOutcome::Failed(_) | ExecOutcome::Refused(_) => {
                self.trouble(d, "pausing the rollout FAILED", &detail).await;
                Outcome::failed(detail)
            }
        }
    }
}

/// What a traffic action does, in words for titles and details.
struct TrafficWords {
    executor: &'static str,
    done: &'static str,
    dry: &'static str,
    failed: &'static str,
    by_hand: &'static str,
}

/// The all-clear's first words when the incident's rollback (or its
/// verification) failed: the metric is back, the instance is not vouched
/// for, and whoever is paged must still answer.
const STILL_PAGING: &str = "The metric is back, but the rollback or its verification FAILED: paging goes on until someone acknowledges. ";

const SWITCH: TrafficWords = TrafficWords {
    executor: "switch_traffic",
    done: "traffic shifted to the standby pool:",
    dry: "dry run: would shift traffic to the standby pool:",
    failed: "shifting traffic to the standby pool FAILED",
    by_hand: "shift the traffic to the standby pool by hand",
};

const RESTORE: TrafficWords = TrafficWords {
    executor: "restore_traffic",
    done: "traffic back on the primary pool:",
    dry: "dry run: would send traffic back to the primary pool:",
    failed: "sending traffic back to the primary pool FAILED",
    by_hand: "send the traffic back to the primary pool by hand",
};

impl Responder {
    /// `switch_traffic` / `restore_traffic`: runs the configured executor
    /// once. Like a rollback, a traffic switch may have half happened when
    /// its process died: a claim that is not the first (`attempts` > 1) is
    /// never run again, it is `unknown` for a human.
    async fn traffic(&self, a: &ActionRow) -> Outcome {
        let d = &a.decision;
        let (executor, words) = match a.action {
            Action::RestoreTraffic => (&self.cfg.restore, &RESTORE),
            _ => (&self.cfg.switch, &SWITCH),
        };
        if a.attempts > 1 {
            let detail = format!(
                "not run again: an earlier run (attempt {} of this action) was cut off and may \
                 or may not have taken effect; check the load balancer by hand",
                a.attempts - 1
            );
            self.trouble(d, words.failed, &detail).await;
            return Outcome {
                state: ActionState::Unknown,
                detail,
            };
        }
        let Some(executor) = executor else {
            return Outcome::skipped(format!(
                "no {} executor configured; {}",
                words.executor, words.by_hand
            ));
        };
        let result = executor.run(&Vars::of(d), &self.cfg.patterns).await;
        let detail = result.detail().to_owned();
        match result {
            ExecOutcome::Ok(_) => {
                let title = format!(
                    "[{}] {} {}",
                    d.tier.as_str().to_uppercase(),
                    if executor.is_dry_run() {
                        words.dry
                    } else {
                        words.done
                    },
                    d.label("service").unwrap_or(&d.rule)
                );
                self.tell_success(d, title, &detail).await;
                Outcome::done(detail)
            }
            ExecOutcome::Failed(_) | ExecOutcome::Refused(_) => {
                self.trouble(d, words.failed, &detail).await;
                Outcome::failed(detail)
            }
        }
    }
}

/// An outcome's detail without the words its title already says (a dry
/// run's line starts with them): what is left, e.g. "no executor
/// configured" or the command it would run.
fn beside_title(title_words: &str, detail: &str) -> String {
    let Some(rest) = detail.strip_prefix(title_words) else {
        return detail.to_owned();
    };
    let rest = rest.trim_start_matches(':').trim();
    rest.strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or(rest)
        .to_owned()
}

/// What a decision is about, for a message title: its instance, else its
/// service, else its rule.
fn subject(d: &Decision) -> &str {
    d.label("instance")
        .or(d.label("service"))
        .unwrap_or(&d.rule)
}
