//! Batch incidents: a bad batch answered as one incident.
//!
//! Upgrades fail batch by batch, not host by host. With grouping on (the
//! default), the per-rule incidents of one service's instances in one
//! upgrade batch (the `batch` label, or the instances a progress event
//! named) become the *members* of one batch incident, whatever rule each
//! breached. The rule states keep their per-instance incidents (windows,
//! hysteresis, alert identity) exactly as without grouping; this stage
//! takes their decisions and answers once per batch:
//!
//! - The first functional or severe member pauses the rollout at once, on
//!   every tier (the plan's fault levels: pause the next batches as well
//!   as rolling back). A batch whose members reach `batch_failed` is
//!   failed: paused whatever the severity.
//! - After `wait` (Alertmanager's `group_wait`), so the members breaching
//!   together are named together, the tier's policy fires once: one page,
//!   one approval request, one message; the low tier's rollback runs once
//!   per member.
//! - A member that breaches later joins (said once, after `wait`, never
//!   paged again); the low tier rolls it back, an approval tier asks only
//!   if the approved blast radius does not cover it (the action stage
//!   knows).
//! - Instances of the same service outside the batch (not upgraded, or in
//!   a batch not yet started) breaching the same rule meanwhile mean the
//!   fault may not be the upgrade: with `attribute` on, nothing is rolled
//!   back automatically; the rollout is paused and a human paged and asked,
//!   on every tier.
//! - The batch incident resolves when every member has recovered.
//!
//! Pure like the rest of the engine: event time, no I/O; due work runs
//! when the watermark (or the live responder's clock, see
//! [`crate::engine::Engine::tick`]) passes it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::decision::{
    Action, BatchInfo, Decision, Evidence, GroupLabels, IncidentId, Member, Severity,
};
use crate::event::{Labels, Progress, Stage};
use crate::rule::{Policy, RuleActions, RuleSet};
use crate::time::{Dur, Ts};

use super::incident::{Facts, Incident};

/// `grouping:` in the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Grouping {
    /// The label naming the service (`by[0]`).
    pub service_label: Box<str>,
    /// The label naming the upgrade batch (`by[1]`).
    pub batch_label: Box<str>,
    /// How long a new batch incident collects members before its policy
    /// fires (the pause does not wait).
    pub wait: Dur,
    /// Members that fail the whole batch; `None`: half the batch's size
    /// (rounded up), or 3 when the size is unknown.
    pub batch_failed: Option<u32>,
    /// Whether breaches outside the batch make the incident "maybe not the
    /// upgrade" (no automatic rollback; pause, page and ask instead).
    pub attribute: bool,
    /// How long before a batch incident opens an outside breach still
    /// counts against the upgrade's guilt.
    pub attribute_window: Dur,
}

impl Default for Grouping {
    fn default() -> Self {
        Grouping {
            service_label: "service".into(),
            batch_label: "batch".into(),
            wait: Dur::from_secs(30),
            batch_failed: None,
            attribute: true,
            attribute_window: Dur::from_mins(10),
        }
    }
}

/// The pseudo-rule a batch incident's id derives from.
const BATCH_RULE: &str = "batch";
/// Instances remembered per service (roster), beyond which new ones are
/// not counted: bounds memory whatever the producers send.
const MAX_ROSTER: usize = 20_000;
/// Members named in a batch incident's decisions at most.
const MAX_MEMBERS: usize = 2_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Collecting members until `due`.
    Forming {
        due: Ts,
    },
    Fired,
}

#[derive(Debug)]
struct BatchGroup {
    service: Box<str>,
    batch: Box<str>,
    incident: Incident,
    phase: Phase,
    members: BTreeMap<Box<str>, MemberState>,
    /// Outside instances breaching the same rules meanwhile.
    outside: BTreeSet<Box<str>>,
    /// Late members waiting to be announced, and when.
    joiners: Vec<Box<str>>,
    joiners_due: Option<Ts>,
    /// The reading that opened the incident (for its messages).
    facts: Facts,
    reading: String,
    evidence: Evidence,
    /// Members' rules' own actions (`also:` / `actions:`), merged.
    rule_actions: Vec<RuleActions>,
    failed: bool,
    /// Every member recovered: resolve at the next chance.
    resolve_due: bool,
}

#[derive(Debug, Clone)]
struct MemberState {
    rule: Box<str>,
    incident: IncidentId,
    severity: Severity,
    joined: Ts,
    recovered: bool,
}

/// A breach outside any batch of a service mid-upgrade.
#[derive(Debug)]
struct OutsideBreach {
    /// The per-rule incident of the breach.
    incident: IncidentId,
    service: Box<str>,
    instance: Box<str>,
    rule: Arc<str>,
    at: Ts,
    open: bool,
    /// Its decisions, held for `wait` in case a batch incident claims it;
    /// `None` once attached to one or released.
    held: Option<(Ts, Vec<Decision>)>,
    /// Released as an incident of its own: later decisions pass through.
    released: bool,
}

/// What ripcord knows of a service's rollout.
#[derive(Debug, Default)]
struct ServiceView {
    /// Batches the orchestrator reported started (or done).
    started: BTreeSet<Box<str>>,
    progress_seen: bool,
    upgrade_open: bool,
    /// Newest event time an event of the service carried a batch label.
    batch_seen: Option<Ts>,
    /// Instances seen, with the batch label they carried (`None`: none).
    roster: HashMap<Box<str>, Option<Box<str>>>,
    /// The instances each batch's progress named.
    reported: HashMap<Box<str>, Vec<Box<str>>>,
}

impl ServiceView {
    fn batch_of_reported(&self, instance: &str) -> Option<&str> {
        self.reported
            .iter()
            .find(|(_, list)| list.iter().any(|i| &**i == instance))
            .map(|(b, _)| &**b)
    }

    /// Whether instances labelled `batch` run the upgrade: the batch has
    /// started, or no progress says otherwise.
    fn upgraded(&self, batch: &str) -> bool {
        !self.progress_seen || self.started.contains(batch)
    }

    /// The batch's instances: as the orchestrator named them, else as seen
    /// with the batch's label; sorted.
    fn batch_instances(&self, batch: &str) -> Vec<Box<str>> {
        let mut v: Vec<Box<str>> = match self.reported.get(batch) {
            Some(list) if !list.is_empty() => list.clone(),
            _ => self
                .roster
                .iter()
                .filter(|(_, b)| b.as_deref() == Some(batch))
                .map(|(i, _)| i.clone())
                .collect(),
        };
        v.sort();
        v
    }

    fn batch_size(&self, batch: &str) -> u32 {
        match self.reported.get(batch) {
            Some(list) if !list.is_empty() => list.len() as u32,
            _ => self
                .roster
                .values()
                .filter(|b| b.as_deref() == Some(batch))
                .count() as u32,
        }
    }

    /// Instances seen that are not in `batch`'s upgrade: no batch label,
    /// or a batch not started.
    fn outside_seen(&self, batch: &str) -> u32 {
        self.roster
            .values()
            .filter(|b| match b.as_deref() {
                None => true,
                Some(x) => x != batch && !self.upgraded(x),
            })
            .count() as u32
    }
}

/// What the service's view says about one batch, for a snapshot.
#[derive(Default)]
struct Known {
    size: u32,
    outside_seen: u32,
    /// The batch's instances (bounded), for "the whole batch".
    instances: Vec<Box<str>>,
}

impl Known {
    fn of(view: Option<&ServiceView>, batch: &str) -> Known {
        view.map_or_else(Known::default, |v| {
            let mut instances = v.batch_instances(batch);
            instances.truncate(MAX_MEMBERS);
            Known {
                size: v.batch_size(batch),
                outside_seen: v.outside_seen(batch),
                instances,
            }
        })
    }
}

/// Counts for `/metrics` and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GroupStats {
    pub batch_incidents: u64,
    pub members_joined: u64,
    /// Outside breaches held back and then dropped (they recovered, or a
    /// batch incident took them as evidence against the upgrade).
    pub outside_absorbed: u64,
}

#[derive(Debug)]
pub(crate) struct Grouper {
    cfg: Grouping,
    /// Ordered, so what falls due together fires in the same order every run.
    batches: BTreeMap<(Box<str>, Box<str>), BatchGroup>,
    services: HashMap<Box<str>, ServiceView>,
    /// Rule incident -> its batch group.
    member_of: HashMap<IncidentId, (Box<str>, Box<str>)>,
    outside: Vec<OutsideBreach>,
    /// Earliest due time of anything waiting (`None`: nothing).
    next_due: Option<Ts>,
    pub stats: GroupStats,
}

/// One rule incident's decisions of one event: how it changed.
enum Change {
    Open,
    Worsen,
    Resolve,
    Other,
}

fn change_of(run: &[Decision]) -> Change {
    if run.iter().any(|d| d.action == Action::Resolve) {
        Change::Resolve
    } else if run.iter().any(|d| d.escalated_from.is_some()) {
        Change::Worsen
    } else if run.iter().any(|d| d.seq == 0) {
        Change::Open
    } else {
        Change::Other
    }
}

fn sorted_labels(pairs: &[(&str, &str)]) -> GroupLabels {
    let mut v: Vec<(Box<str>, Box<str>)> = pairs
        .iter()
        .map(|(k, v)| (Box::<str>::from(*k), Box::<str>::from(*v)))
        .collect();
    v.sort();
    v.into()
}

impl Grouper {
    pub fn new(cfg: Grouping) -> Grouper {
        Grouper {
            cfg,
            batches: BTreeMap::new(),
            services: HashMap::new(),
            member_of: HashMap::new(),
            outside: Vec::new(),
            next_due: None,
            stats: GroupStats::default(),
        }
    }

    /// Bytes held (rosters, groups), roughly.
    pub fn state_bytes(&self) -> usize {
        let roster: usize = self
            .services
            .values()
            .map(|v| {
                v.roster
                    .iter()
                    .map(|(k, b)| k.len() + b.as_ref().map_or(0, |b| b.len()) + 48)
                    .sum::<usize>()
                    + v.reported
                        .values()
                        .map(|l| l.iter().map(|i| i.len() + 16).sum::<usize>())
                        .sum::<usize>()
            })
            .sum();
        roster
            + self
                .batches
                .values()
                .map(|g| 512 + g.members.len() * 96 + g.outside.len() * 32)
                .sum::<usize>()
            + self.outside.len() * 128
    }

    /// Notes who is in which batch from an event's labels: cheap when the
    /// event names no batch and its service has no rollout known.
    pub fn observe_labels(&mut self, labels: &Labels<'_>, ts: Ts) {
        let batch = labels.get(&self.cfg.batch_label);
        if batch.is_none() && self.services.is_empty() {
            return;
        }
        let Some(service) = labels.get(&self.cfg.service_label) else {
            return;
        };
        let view = match (batch, self.services.get_mut(service)) {
            (_, Some(v)) => v,
            (Some(_), None) => self.services.entry(service.into()).or_default(),
            (None, None) => return,
        };
        if batch.is_some() {
            view.batch_seen = Some(view.batch_seen.map_or(ts, |t| t.max(ts)));
        }
        if let Some(instance) = labels.get("instance") {
            let room = view.roster.len() < MAX_ROSTER;
            match view.roster.get_mut(instance) {
                Some(b) if b.as_deref() == batch => {}
                Some(b) => *b = batch.map(Box::from),
                None if room => {
                    view.roster.insert(instance.into(), batch.map(Box::from));
                }
                None => {}
            }
        }
    }

    /// Upgrade progress: which batches started, which instances they hold.
    pub fn observe_progress(&mut self, p: &Progress<'_>) {
        let Some(service) = p.labels.get(&self.cfg.service_label) else {
            return;
        };
        let view = self.services.entry(service.into()).or_default();
        view.progress_seen = true;
        view.upgrade_open = !matches!(p.stage, Stage::Completed | Stage::Failed);
        view.batch_seen = Some(view.batch_seen.map_or(p.ts, |t| t.max(p.ts)));
        if let Some(batch) = p.labels.get(&self.cfg.batch_label) {
            if matches!(p.stage, Stage::BatchStarted | Stage::BatchDone) {
                view.started.insert(batch.into());
            }
            if !p.instances.is_empty() {
                let list: Vec<Box<str>> = p
                    .instances
                    .iter()
                    .take(MAX_ROSTER)
                    .map(|i| Box::from(i.as_ref()))
                    .collect();
                for i in &list {
                    if view.roster.len() < MAX_ROSTER || view.roster.contains_key(i) {
                        view.roster.insert(i.clone(), Some(batch.into()));
                    }
                }
                view.reported.insert(batch.into(), list);
            }
        }
    }

    /// The instances of `service`'s `batch`: as its progress named them,
    /// else as seen with its label; sorted, bounded.
    pub fn batch_roster(&self, service: &str, batch: &str) -> Vec<Box<str>> {
        self.services.get(service).map_or_else(Vec::new, |v| {
            let mut all = v.batch_instances(batch);
            all.truncate(MAX_MEMBERS);
            all
        })
    }

    /// Whether a service is mid-upgrade: breaches outside its batches are
    /// then weighed against the upgrade (see the module docs).
    fn mid_upgrade(&self, service: &str, now: Ts) -> bool {
        if self.batches.keys().any(|(s, _)| &**s == service) {
            return true;
        }
        self.services.get(service).is_some_and(|v| {
            v.upgrade_open
                || v.batch_seen
                    .is_some_and(|t| now.since(t) <= Dur::from_mins(60))
        })
    }

    /// Takes the decisions the rule states appended from `start` on and
    /// answers batches as one: members' decisions become the batch
    /// incident's; everything else passes through unchanged.
    pub fn route(
        &mut self,
        rules: &RuleSet,
        policy: &Policy,
        out: &mut Vec<Decision>,
        start: usize,
    ) {
        if out.len() == start {
            return;
        }
        let fresh: Vec<Decision> = out.drain(start..).collect();
        let mut i = 0;
        while i < fresh.len() {
            let mut j = i + 1;
            while j < fresh.len()
                && fresh[j].incident.is_some()
                && fresh[j].incident == fresh[i].incident
            {
                j += 1;
            }
            let run = &fresh[i..j];
            i = j;
            if run[0].incident.is_none() || run[0].batch.is_some() {
                out.extend_from_slice(run);
                continue;
            }
            self.route_run(rules, policy, run, out);
        }
    }

    fn route_run(
        &mut self,
        rules: &RuleSet,
        policy: &Policy,
        run: &[Decision],
        out: &mut Vec<Decision>,
    ) {
        let d0 = &run[0];
        let id = d0
            .incident
            .clone()
            .expect("routed runs belong to incidents");
        let change = change_of(run);
        // Known members and outsiders follow their incident.
        if let Some(key) = self.member_of.get(&id).cloned() {
            self.member_change(policy, &key, &id, change, run, out);
            return;
        }
        if let Some(k) = self.outside.iter().position(|o| o.incident == id) {
            self.outside_change(k, change, run, out);
            return;
        }
        if !matches!(change, Change::Open) {
            out.extend_from_slice(run);
            return;
        }
        let Some(service) = d0.label(&self.cfg.service_label) else {
            out.extend_from_slice(run);
            return;
        };
        let instance = d0.label("instance").unwrap_or("");
        let view = self.services.get(service);
        let batch = d0
            .label(&self.cfg.batch_label)
            .or_else(|| view.and_then(|v| v.batch_of_reported(instance)));
        let upgraded = batch.is_some_and(|b| view.is_none_or(|v| v.upgraded(b)));
        if let (Some(batch), true) = (batch, upgraded) {
            let key: (Box<str>, Box<str>) = (service.into(), batch.into());
            self.member_open(rules, policy, key, instance.into(), &id, run, out);
        } else if self.mid_upgrade(service, d0.at) {
            self.outside_open(policy, service.into(), instance.into(), run, out);
        } else {
            out.extend_from_slice(run);
        }
    }

    fn threshold(&self, view: Option<&ServiceView>, batch: &str) -> u32 {
        self.cfg
            .batch_failed
            .unwrap_or_else(|| match view.map_or(0, |v| v.batch_size(batch)) {
                0 => 3,
                n => n.div_ceil(2),
            })
    }

    #[allow(clippy::too_many_arguments)]
    fn member_open(
        &mut self,
        rules: &RuleSet,
        policy: &Policy,
        key: (Box<str>, Box<str>),
        instance: Box<str>,
        id: &IncidentId,
        run: &[Decision],
        out: &mut Vec<Decision>,
    ) {
        let d0 = &run[0];
        let wait = self.cfg.wait;
        let svc_label = self.cfg.service_label.clone();
        let batch_label = self.cfg.batch_label.clone();
        let rule_actions = rules
            .rules()
            .iter()
            .find(|r| r.name == d0.rule)
            .map(|r| r.actions.clone())
            .unwrap_or_default();
        let fresh_group = !self.batches.contains_key(&key);
        let group = self.batches.entry(key.clone()).or_insert_with(|| {
            let labels = sorted_labels(&[(&svc_label, &key.0), (&batch_label, &key.1)]);
            let mut incident = Incident::open(
                Arc::from(&*d0.rule),
                labels.clone(),
                d0.tier,
                d0.severity,
                d0.at,
            );
            incident.id = IncidentId::derive(BATCH_RULE, &labels, d0.at);
            BatchGroup {
                service: key.0.clone(),
                batch: key.1.clone(),
                incident,
                phase: Phase::Forming {
                    due: d0.at.saturating_add(wait),
                },
                members: BTreeMap::new(),
                outside: BTreeSet::new(),
                joiners: Vec::new(),
                joiners_due: None,
                facts: Facts {
                    value: d0.value,
                    threshold: d0.threshold,
                    baseline: d0.baseline,
                },
                reading: d0.message.clone(),
                evidence: d0.evidence.clone(),
                rule_actions: Vec::new(),
                failed: false,
                resolve_due: false,
            }
        });
        if fresh_group {
            self.stats.batch_incidents += 1;
        }
        if !group.rule_actions.contains(&rule_actions) {
            group.rule_actions.push(rule_actions);
        }
        let rejoined = match group.members.get_mut(&instance) {
            Some(m) => {
                m.recovered = false;
                m.incident = id.clone();
                m.severity = m.severity.max(d0.severity);
                true
            }
            None => {
                if group.members.len() < MAX_MEMBERS {
                    group.members.insert(
                        instance.clone(),
                        MemberState {
                            rule: Box::from(&*d0.rule),
                            incident: id.clone(),
                            severity: d0.severity,
                            joined: d0.at,
                            recovered: false,
                        },
                    );
                }
                false
            }
        };
        group.resolve_due = false;
        self.member_of.insert(id.clone(), key.clone());
        self.stats.members_joined += u64::from(!rejoined);
        if group.phase == Phase::Fired && !rejoined {
            group.joiners.push(instance.clone());
            if group.joiners_due.is_none() {
                group.joiners_due = Some(d0.at.saturating_add(wait));
            }
        }
        // Breaches of the same service outside the batch, lately.
        if self.cfg.attribute {
            let since = group
                .incident
                .opened
                .saturating_sub(self.cfg.attribute_window);
            for o in &mut self.outside {
                if *o.service == *key.0 && o.rule == d0.rule && o.at >= since {
                    group.outside.insert(o.instance.clone());
                    if o.held.take().is_some() {
                        self.stats.outside_absorbed += 1;
                    }
                }
            }
        }
        self.schedule(&key);
        let severity = d0.severity;
        self.raise(policy, &key, severity, d0, out);
    }

    /// A member's severity (or the member count) rose: pause at once if the
    /// fault now calls for it; a fired incident escalates.
    fn raise(
        &mut self,
        policy: &Policy,
        key: &(Box<str>, Box<str>),
        severity: Severity,
        d: &Decision,
        out: &mut Vec<Decision>,
    ) {
        let threshold = self.threshold(self.services.get(&key.0), &key.1);
        let known = Known::of(self.services.get(&key.0), &key.1);
        let Some(group) = self.batches.get_mut(key) else {
            return;
        };
        let newly_failed = !group.failed && group.members.len() as u32 >= threshold;
        group.failed |= newly_failed;
        let from = group.incident.severity;
        let worse = severity > from;
        if worse {
            group.incident.severity = severity;
            group.facts = Facts {
                value: d.value,
                threshold: d.threshold,
                baseline: d.baseline,
            };
            group.reading = d.message.clone();
            group.evidence = d.evidence.clone();
        }
        let pause_now = (group.incident.severity >= Severity::Functional || group.failed)
            && !group.incident.has_fired(Action::PauseRollout);
        let info = snapshot(group, &known, Vec::new());
        if pause_now {
            let msg = headline(group, &info, "rollout paused");
            push(group, out, d.at, Action::PauseRollout, &info, msg, None);
        }
        if group.phase == Phase::Fired && worse {
            // The new severity's actions not taken yet, then the news.
            let actions = plan(policy, group, &info, self.cfg.attribute);
            let msg = format!(
                "{}; worsened from {from} to {severity}",
                headline(group, &info, "breaching")
            );
            let start = out.len();
            emit(
                group,
                out,
                d.at,
                &actions,
                &info,
                &msg,
                true,
                &known.instances,
            );
            push(group, out, d.at, Action::Notify, &info, msg, None);
            for x in &mut out[start..] {
                x.escalated_from = Some(from);
            }
        } else if group.phase == Phase::Fired && newly_failed && !pause_now {
            let msg = headline(group, &info, "batch failed");
            push(group, out, d.at, Action::Notify, &info, msg, None);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn member_change(
        &mut self,
        policy: &Policy,
        key: &(Box<str>, Box<str>),
        id: &IncidentId,
        change: Change,
        run: &[Decision],
        out: &mut Vec<Decision>,
    ) {
        let d0 = &run[0];
        match change {
            Change::Worsen => {
                let severity = run.iter().map(|d| d.severity).max().unwrap_or(d0.severity);
                if let Some(g) = self.batches.get_mut(key) {
                    if let Some(m) = g.members.values_mut().find(|m| &m.incident == id) {
                        m.severity = m.severity.max(severity);
                    }
                }
                self.raise(policy, key, severity, d0, out);
            }
            Change::Resolve => {
                self.member_of.remove(id);
                let Some(g) = self.batches.get_mut(key) else {
                    return;
                };
                if let Some(m) = g.members.values_mut().find(|m| &m.incident == id) {
                    m.recovered = true;
                }
                if g.members.values().all(|m| m.recovered) {
                    g.resolve_due = true;
                    self.resolve_ready(key, d0.at, out);
                }
            }
            Change::Open | Change::Other => {}
        }
    }

    /// Resolves the batch incident if every member is back.
    fn resolve_ready(&mut self, key: &(Box<str>, Box<str>), at: Ts, out: &mut Vec<Decision>) {
        let known = Known::of(self.services.get(&key.0), &key.1);
        let Some(g) = self.batches.get_mut(key) else {
            return;
        };
        if !g.resolve_due || g.members.values().any(|m| !m.recovered) {
            return;
        }
        if g.incident.seq > 0 {
            let info = snapshot(g, &known, Vec::new());
            let msg = format!(
                "{}: every member recovered ({})",
                info.name(),
                crate::text::compact_names(&info.instances(), 160)
            );
            push(g, out, at, Action::Resolve, &info, msg, None);
        }
        let g = self.batches.remove(key).expect("checked above");
        for m in g.members.values() {
            self.member_of.remove(&m.incident);
        }
        self.recompute_due();
    }

    fn outside_open(
        &mut self,
        policy: &Policy,
        service: Box<str>,
        instance: Box<str>,
        run: &[Decision],
        out: &mut Vec<Decision>,
    ) {
        let d0 = &run[0];
        let mut breach = OutsideBreach {
            incident: d0
                .incident
                .clone()
                .expect("routed runs belong to incidents"),
            service: service.clone(),
            instance: instance.clone(),
            rule: d0.rule.clone(),
            at: d0.at,
            open: true,
            held: None,
            released: false,
        };
        // A batch incident of the service breaching the same rule claims it.
        let claim = self.cfg.attribute.then(|| {
            self.batches
                .iter()
                .filter(|((s, _), g)| {
                    **s == *service && g.members.values().any(|m| *m.rule == *d0.rule)
                })
                .map(|(k, _)| k.clone())
                .collect::<Vec<_>>()
        });
        match claim {
            Some(keys) if !keys.is_empty() => {
                for key in keys {
                    self.attach_outsider(policy, &key, &instance, d0.at, out);
                }
            }
            _ => {
                let due = d0.at.saturating_add(self.cfg.wait);
                breach.held = Some((due, run.to_vec()));
                self.next_due = Some(self.next_due.map_or(due, |n| n.min(due)));
            }
        }
        // Bounded: the oldest closed ones go first.
        if self.outside.len() >= MAX_ROSTER {
            if let Some(k) = self
                .outside
                .iter()
                .position(|o| !o.open && o.held.is_none())
            {
                self.outside.remove(k);
            } else {
                self.outside.remove(0);
            }
        }
        self.outside.push(breach);
    }

    /// An outside breach joins a batch incident as evidence against the
    /// upgrade; a fired incident that thought the upgrade guilty says so
    /// and pages and asks instead of rolling back further.
    fn attach_outsider(
        &mut self,
        policy: &Policy,
        key: &(Box<str>, Box<str>),
        instance: &str,
        at: Ts,
        out: &mut Vec<Decision>,
    ) {
        let known = Known::of(self.services.get(&key.0), &key.1);
        let Some(g) = self.batches.get_mut(key) else {
            return;
        };
        let first = g.outside.is_empty();
        g.outside.insert(instance.into());
        if g.phase == Phase::Fired && first {
            let info = snapshot(g, &known, Vec::new());
            let actions = plan(policy, g, &info, true);
            let msg = headline(g, &info, "breaching");
            emit(g, out, at, &actions, &info, &msg, true, &[]);
            push(g, out, at, Action::Notify, &info, msg, None);
        }
    }

    fn outside_change(
        &mut self,
        k: usize,
        change: Change,
        run: &[Decision],
        out: &mut Vec<Decision>,
    ) {
        let o = &mut self.outside[k];
        if o.released {
            out.extend_from_slice(run);
            if matches!(change, Change::Resolve) {
                o.open = false;
            }
            return;
        }
        match change {
            Change::Resolve => {
                o.open = false;
                if o.held.take().is_some() {
                    // It recovered before anyone had to act: nothing to say.
                    self.stats.outside_absorbed += 1;
                }
            }
            _ => {
                if let Some((_, held)) = o.held.as_mut() {
                    held.extend_from_slice(run);
                }
            }
        }
    }

    /// When [`Grouper::fire_due`] next has something to do (wall time).
    pub fn next_due(&self) -> Option<Ts> {
        self.next_due
    }

    /// Runs what is due at `now`: forming incidents fire, late members are
    /// announced, held outside breaches are released.
    pub fn fire_due(&mut self, policy: &Policy, now: Ts, out: &mut Vec<Decision>) {
        if self.next_due.is_none_or(|d| d > now) {
            return;
        }
        let keys: Vec<(Box<str>, Box<str>)> = self.batches.keys().cloned().collect();
        for key in keys {
            let known = Known::of(self.services.get(&key.0), &key.1);
            let attribute = self.cfg.attribute;
            let Some(g) = self.batches.get_mut(&key) else {
                continue;
            };
            if let Phase::Forming { due } = g.phase {
                if due <= now {
                    g.phase = Phase::Fired;
                    let info = snapshot(g, &known, Vec::new());
                    let actions = plan(policy, g, &info, attribute);
                    let msg = headline(g, &info, "breaching");
                    emit(g, out, due, &actions, &info, &msg, false, &known.instances);
                    g.joiners.clear();
                }
            }
            if let (Phase::Fired, Some(due)) = (g.phase, g.joiners_due) {
                if due <= now {
                    g.joiners_due = None;
                    let mut newcomers: Vec<Box<str>> = std::mem::take(&mut g.joiners);
                    newcomers.sort();
                    newcomers.dedup();
                    newcomers.retain(|n| g.members.get(n).is_some_and(|m| !m.recovered));
                    if !newcomers.is_empty() {
                        let info = snapshot(g, &known, newcomers.clone());
                        let suspect = attribute && !g.outside.is_empty();
                        if g.incident.has_fired(Action::Rollback) && !suspect {
                            for n in &newcomers {
                                let msg =
                                    format!("{}: rolling back {n}, which joined", info.name());
                                let mut one = (*info).clone();
                                one.about = vec![n.clone()];
                                push(
                                    g,
                                    out,
                                    due,
                                    Action::Rollback,
                                    &Arc::new(one),
                                    msg,
                                    Some(&**n),
                                );
                            }
                        }
                        if g.incident.has_fired(Action::RequestApproval) {
                            let msg = format!(
                                "{}: {} joined; roll {} back too?",
                                info.name(),
                                crate::text::compact_names(&as_strs(&newcomers), 160),
                                if newcomers.len() == 1 { "it" } else { "them" }
                            );
                            push(g, out, due, Action::RequestApproval, &info, msg, None);
                        }
                        let msg = format!(
                            "{} joined: {}",
                            crate::text::compact_names(&as_strs(&newcomers), 160),
                            headline(g, &info, "breaching")
                        );
                        push(g, out, due, Action::Notify, &info, msg, None);
                    }
                }
            }
        }
        // Outside breaches no batch incident claimed act on their own.
        for o in &mut self.outside {
            if let Some((due, _)) = &o.held {
                if *due <= now {
                    let (_, held) = o.held.take().expect("checked");
                    o.released = true;
                    out.extend(held);
                }
            }
        }
        let done: Vec<(Box<str>, Box<str>)> = self
            .batches
            .iter()
            .filter(|(_, g)| g.resolve_due)
            .map(|(k, _)| k.clone())
            .collect();
        for key in done {
            self.resolve_ready(&key, now, out);
        }
        self.recompute_due();
    }

    fn schedule(&mut self, key: &(Box<str>, Box<str>)) {
        if let Some(g) = self.batches.get(key) {
            for due in [
                match g.phase {
                    Phase::Forming { due } => Some(due),
                    Phase::Fired => None,
                },
                g.joiners_due,
            ]
            .into_iter()
            .flatten()
            {
                self.next_due = Some(self.next_due.map_or(due, |n| n.min(due)));
            }
        }
    }

    fn recompute_due(&mut self) {
        let mut next: Option<Ts> = None;
        let mut note = |t: Ts| next = Some(next.map_or(t, |n: Ts| n.min(t)));
        for g in self.batches.values() {
            if let Phase::Forming { due } = g.phase {
                note(due);
            }
            if let Some(d) = g.joiners_due {
                note(d);
            }
            if g.resolve_due {
                note(Ts::MIN);
            }
        }
        for o in &self.outside {
            if let Some((due, _)) = &o.held {
                note(*due);
            }
        }
        self.next_due = next;
    }

    /// Whether a per-rule incident is the engine's own business: a batch
    /// member, or an outside breach held or taken as evidence.
    pub fn absorbs(&self, id: &IncidentId) -> bool {
        self.member_of.contains_key(id)
            || self
                .outside
                .iter()
                .any(|o| o.incident == *id && !o.released)
    }

    /// Open batch incidents, for snapshots.
    pub fn open_incidents(&self) -> impl Iterator<Item = Incident> + '_ {
        self.batches.iter().map(|((s, b), g)| {
            let known = Known::of(self.services.get(s), b);
            let mut inc = g.incident.clone();
            inc.batch = Some(snapshot(g, &known, Vec::new()));
            inc
        })
    }

    /// Reinstalls the journal's open batch incidents after a warm-up.
    /// Returns the per-rule incidents their members stand on: the rule
    /// states keep those as if journaled.
    pub fn restore(&mut self, open: &[Incident], at: Ts) -> Vec<IncidentId> {
        let mut keep = Vec::new();
        self.batches.clear();
        self.member_of.clear();
        for inc in open {
            let Some(info) = &inc.batch else {
                continue;
            };
            let key: (Box<str>, Box<str>) = (info.service.clone(), info.batch.clone());
            let fired_policy = [
                Action::Page,
                Action::RequestApproval,
                Action::Rollback,
                Action::Notify,
            ]
            .iter()
            .any(|a| inc.has_fired(*a));
            let mut members = BTreeMap::new();
            for m in &info.members {
                let id = IncidentId::from_string(&*m.incident);
                if !m.recovered {
                    keep.push(id.clone());
                    self.member_of.insert(id.clone(), key.clone());
                }
                members.insert(
                    m.instance.clone(),
                    MemberState {
                        rule: m.rule.clone(),
                        incident: id,
                        severity: m.severity,
                        joined: m.joined,
                        recovered: m.recovered,
                    },
                );
            }
            let mut incident = inc.clone();
            incident.batch = None;
            self.batches.insert(
                key.clone(),
                BatchGroup {
                    service: key.0,
                    batch: key.1,
                    incident,
                    phase: if fired_policy {
                        Phase::Fired
                    } else {
                        Phase::Forming {
                            due: inc.opened.saturating_add(self.cfg.wait).max(at),
                        }
                    },
                    members,
                    outside: info.outside.iter().cloned().collect(),
                    joiners: Vec::new(),
                    joiners_due: None,
                    facts: Facts::default(),
                    reading: String::new(),
                    evidence: Evidence::default(),
                    rule_actions: Vec::new(),
                    failed: info.failed,
                    resolve_due: false,
                },
            );
        }
        self.recompute_due();
        keep
    }

    /// After the rule states reconciled: members whose rule incident is
    /// gone (recovered while no one watched) count as recovered.
    pub fn settle(&mut self, still_open: &std::collections::HashSet<IncidentId>) {
        for g in self.batches.values_mut() {
            for m in g.members.values_mut() {
                if !m.recovered && !still_open.contains(&m.incident) {
                    m.recovered = true;
                }
            }
            if g.members.values().all(|m| m.recovered) {
                g.resolve_due = true;
            }
        }
        self.member_of.retain(|id, _| still_open.contains(id));
        self.recompute_due();
    }
}

fn as_strs(v: &[Box<str>]) -> Vec<&str> {
    v.iter().map(|s| &**s).collect()
}

/// The batch incident as its next decision describes it.
fn snapshot(g: &BatchGroup, known: &Known, about: Vec<Box<str>>) -> Arc<BatchInfo> {
    let (size, outside_seen) = (known.size, known.outside_seen);
    Arc::new(BatchInfo {
        service: g.service.clone(),
        batch: g.batch.clone(),
        members: g
            .members
            .iter()
            .map(|(i, m)| Member {
                instance: i.clone(),
                rule: m.rule.clone(),
                incident: Box::from(m.incident.as_str()),
                severity: m.severity,
                joined: m.joined,
                recovered: m.recovered,
            })
            .collect(),
        size: size.max(g.members.len() as u32),
        outside: g.outside.iter().cloned().collect(),
        outside_seen: outside_seen.max(g.outside.len() as u32),
        failed: g.failed,
        about,
        batch_instances: {
            let mut all: BTreeSet<Box<str>> = known.instances.iter().cloned().collect();
            all.extend(g.members.keys().filter(|i| !i.is_empty()).cloned());
            all.into_iter().take(MAX_MEMBERS).collect()
        },
    })
}

/// "shop-web batch 2: 5 of 10 instances breaching (i-p06..i-p10)".
fn headline(g: &BatchGroup, info: &BatchInfo, what: &str) -> String {
    let instances = info.instances();
    let n = instances.len();
    let names = crate::text::compact_names(&instances, 160);
    let count = if info.size > 0 {
        format!("{n} of {} instances", info.size)
    } else if n == 1 {
        "1 instance".to_owned()
    } else {
        format!("{n} instances")
    };
    let mut s = if n == 0 {
        format!("{}: the batch as a whole {what}", info.name())
    } else {
        format!("{}: {count} {what} ({names})", info.name())
    };
    if info.failed {
        s.push_str("; the whole batch failed: rollout paused");
    }
    if !info.outside.is_empty() {
        s.push_str(&format!(
            "; also breaching on {} of {} instances not upgraded: the fault may not be the upgrade",
            info.outside.len(),
            info.outside_seen.max(info.outside.len() as u32)
        ));
    }
    if !g.reading.is_empty() {
        s.push_str("; ");
        s.push_str(&g.reading);
    }
    s
}

/// What the batch incident's policy does now, given what it knows: the
/// tier's actions for every member's rule, a pause for a functional fault
/// or a failed batch on every tier, and, when the fault may not be the
/// upgrade, a page and an approval instead of an automatic rollback.
fn plan(policy: &Policy, g: &BatchGroup, info: &BatchInfo, attribute: bool) -> Vec<Action> {
    let (tier, severity) = (g.incident.tier, g.incident.severity);
    let mut actions: Vec<Action> = Vec::new();
    let none = [RuleActions::default()];
    let rule_actions: &[RuleActions] = if g.rule_actions.is_empty() {
        &none
    } else {
        &g.rule_actions
    };
    for ra in rule_actions {
        for a in policy.actions(tier, severity, ra) {
            if !actions.contains(&a) {
                actions.push(a);
            }
        }
    }
    if (severity >= Severity::Functional || info.failed) && !actions.contains(&Action::PauseRollout)
    {
        actions.insert(0, Action::PauseRollout);
    }
    if attribute && !info.outside.is_empty() {
        actions.retain(|a| *a != Action::Rollback);
        for a in [Action::Page, Action::RequestApproval] {
            if !actions.contains(&a) {
                actions.push(a);
            }
        }
    }
    // One order whatever the members' rules: stop the rollout, reach a
    // human, ask, act, tell.
    let rank = |a: &Action| match a {
        Action::PauseRollout => 0,
        Action::Page => 1,
        Action::RequestApproval => 2,
        Action::Rollback => 3,
        Action::Notify => 4,
        _ => 5,
    };
    actions.sort_by_key(rank);
    actions
}

/// Emits `actions` not fired yet: a rollback once per breaching member,
/// anything else once. `quiet_notify`: the caller sends its own notify.
#[allow(clippy::too_many_arguments)]
fn emit(
    g: &mut BatchGroup,
    out: &mut Vec<Decision>,
    at: Ts,
    actions: &[Action],
    info: &Arc<BatchInfo>,
    msg: &str,
    quiet_notify: bool,
    whole_batch: &[Box<str>],
) {
    for &a in actions {
        if g.incident.has_fired(a) || (quiet_notify && a == Action::Notify) {
            continue;
        }
        match a {
            Action::Rollback => {
                // A rule over the whole batch (no instance) rolls back every
                // instance the batch is known to have.
                let mut targets: BTreeSet<Box<str>> = info
                    .breaching()
                    .filter(|m| !m.instance.is_empty())
                    .map(|m| m.instance.clone())
                    .collect();
                if info.breaching().any(|m| m.instance.is_empty()) {
                    targets.extend(whole_batch.iter().cloned());
                }
                if targets.is_empty() {
                    // Nothing known to roll back: the action stage refuses
                    // and pages a human, as for any rollback without a host.
                    push(g, out, at, a, info, msg.to_owned(), None);
                }
                for m in &targets {
                    let mut one = (**info).clone();
                    one.about = vec![m.clone()];
                    push(g, out, at, a, &Arc::new(one), msg.to_owned(), Some(&**m));
                }
            }
            _ => push(g, out, at, a, info, msg.to_owned(), None),
        }
    }
}

/// One decision of the batch incident; `instance` adds the instance label
/// (a member's rollback).
fn push(
    g: &mut BatchGroup,
    out: &mut Vec<Decision>,
    at: Ts,
    action: Action,
    info: &Arc<BatchInfo>,
    msg: String,
    instance: Option<&str>,
) {
    g.incident.batch = Some(info.clone());
    let mut d = g.incident.decide(at, action, g.facts, msg);
    g.incident.batch = None;
    d.evidence = g.evidence.clone();
    if let Some(i) = instance {
        let mut labels: Vec<(Box<str>, Box<str>)> = d.labels.iter().cloned().collect();
        labels.push(("instance".into(), i.into()));
        labels.sort();
        d.labels = labels.into();
    }
    out.push(d);
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
