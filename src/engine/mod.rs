//! The engine: events in, decisions out. Pure: no I/O, no wall clock.
//!
//! Time is event time. The engine's watermark is the newest event time seen;
//! samples older than `watermark - allowed_lateness` are dropped (counted as
//! late). Timers (a `for` running out, a window emptying, a clear period
//! ending) fall due when the watermark minus the allowed lateness passes
//! them, so a late sample within the allowance is still taken into account
//! before a timer decides. The live responder advances the clock with
//! [`Engine::advance`] when no events arrive; replay calls [`Engine::flush`]
//! at the end of its input.
//!
//! Incidents: a breach opens one incident per (rule, group); while it is
//! open no action fires twice (notify may repeat on worsening). Hysteresis:
//! an incident resolves only after the rule's clear condition (by default,
//! the negated condition; set `clear:` for a band) has held for `clear_for`
//! (default: the rule's `for`, at least one minute); a window with no
//! samples counts as clear ("series gone").

mod alert;
mod batch;
pub mod config;
mod incident;
mod metric;
mod trail;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::Hasher;
use std::sync::Arc;

use serde::Serialize;

pub use batch::{GroupStats, Grouping};
pub use incident::{Facts, Incident};
pub(crate) use metric::fmt_num;
pub use trail::Trail;

use crate::decision::{Action, Decision, GroupLabels, Severity};
use crate::event::{Event, Progress, Stage};
use crate::rule::{Policy, RuleKind, RuleSet, TierResolver};
use crate::time::{Dur, Ts};
use alert::AlertState;
use metric::{Due, MetricState, Schedule};

/// The engine's knobs, from the `engine`, `tiers` and `policy` config sections.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How far behind the newest event a sample may arrive and still count.
    pub allowed_lateness: Dur,
    /// Cap on groups per rule; new groups beyond it are refused and counted.
    pub max_groups_per_rule: usize,
    /// Evict a quiet group after this long; `None`: the rule's window reach
    /// plus its `for` plus the allowed lateness.
    pub idle_after: Option<Dur>,
    /// How long a resolved Alertmanager alert is remembered, so a late
    /// redelivery of its firing does not open a new incident.
    pub alert_memory: Dur,
    /// The process's memory budgets (`limits:`), shared by every engine:
    /// groups of metric rules draw on `groups`; remembered alerts on
    /// `alerts` (past it the oldest resolved ones are forgotten early,
    /// then new alerts are refused, counted).
    pub budgets: crate::limits::Budgets,
    pub tiers: TierResolver,
    pub policy: Policy,
    /// Batch incidents (see [`Grouping`]); `None`: one incident per
    /// instance, as without batches.
    pub grouping: Option<Grouping>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            allowed_lateness: Dur::from_mins(1),
            max_groups_per_rule: 1_000_000,
            idle_after: None,
            alert_memory: Dur::from_mins(24 * 60),
            budgets: crate::limits::Budgets::default(),
            tiers: TierResolver::default(),
            policy: Policy::default(),
            grouping: Some(Grouping::default()),
        }
    }
}

/// What the engine has seen, for `/metrics` and the replay summary.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    pub samples: u64,
    pub alerts: u64,
    pub progress: u64,
    /// Older than the watermark minus the allowed lateness: dropped.
    pub samples_late: u64,
    /// Older than the group's window: not stored.
    pub samples_too_old: u64,
    /// NaN / infinite values (Prometheus staleness markers): skipped.
    pub samples_non_finite: u64,
    /// No rule watches the metric.
    pub samples_unmatched: u64,
    pub groups_created: u64,
    pub groups_evicted: u64,
    pub groups_refused: u64,
    /// New groups refused because the groups' byte budget was full (also
    /// counted in `groups_refused`).
    pub groups_refused_memory: u64,
    pub alerts_repeated: u64,
    pub alerts_unknown_resolved: u64,
    pub decisions: u64,
    pub incidents_restored: u64,
    pub incidents_dropped_on_reconcile: u64,
    /// Alert incidents whose labels passed the per-incident budget (cut).
    pub labels_truncated: u64,
    /// Resolved alerts forgotten early to stay within `limits.alerts_bytes`.
    pub alerts_forgotten_early: u64,
    /// New alerts refused because remembered ones filled `limits.alerts_bytes`.
    pub alerts_refused_memory: u64,
}

enum State {
    Metric(MetricState),
    Alert(AlertState),
}

pub struct Engine {
    rules: Arc<RuleSet>,
    cfg: EngineConfig,
    states: Vec<State>,
    watermark: Option<Ts>,
    /// (due, rule, slot, generation); stale entries are skipped when popped.
    timers: BinaryHeap<Reverse<(Ts, u32, u32, u32)>>,
    scheduled: Vec<Schedule>,
    stats: Stats,
    alert_sweep_at: Ts,
    grouper: Option<batch::Grouper>,
}

impl Engine {
    pub fn new(rules: Arc<RuleSet>, cfg: EngineConfig) -> Engine {
        let states = rules
            .rules()
            .iter()
            .map(|r| {
                let r = Arc::new(r.clone());
                match r.kind {
                    RuleKind::Metric(_) => State::Metric(MetricState::new(r, &cfg)),
                    RuleKind::Alert(_) => State::Alert(AlertState::new(r, &cfg)),
                }
            })
            .collect();
        Engine {
            rules,
            states,
            watermark: None,
            timers: BinaryHeap::new(),
            scheduled: Vec::new(),
            stats: Stats::default(),
            alert_sweep_at: Ts::MIN,
            grouper: cfg.grouping.clone().map(batch::Grouper::new),
            cfg,
        }
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn watermark(&self) -> Option<Ts> {
        self.watermark
    }

    /// Groups currently held, across rules.
    pub fn groups(&self) -> usize {
        self.states
            .iter()
            .map(|s| match s {
                State::Metric(m) => m.groups(),
                State::Alert(a) => a.groups(),
            })
            .sum()
    }

    /// Bytes the alert rules remember (fingerprints and labels).
    pub fn alert_memory(&self) -> usize {
        self.states
            .iter()
            .map(|s| match s {
                State::Alert(a) => a.memory(),
                State::Metric(_) => 0,
            })
            .sum()
    }

    /// What batch grouping did (zeros with grouping off).
    pub fn group_stats(&self) -> GroupStats {
        self.grouper
            .as_ref()
            .map(|g| g.stats.clone())
            .unwrap_or_default()
    }

    /// Bytes of rule state (windows, group tables, incidents, timers).
    pub fn state_bytes(&self) -> usize {
        self.grouper.as_ref().map_or(0, batch::Grouper::state_bytes) + self.rule_state_bytes()
    }

    fn rule_state_bytes(&self) -> usize {
        self.states
            .iter()
            .map(|s| match s {
                State::Metric(m) => m.state_bytes(),
                State::Alert(a) => a.state_bytes(),
            })
            .sum::<usize>()
            + self.timers.capacity() * std::mem::size_of::<Reverse<(Ts, u32, u32, u32)>>()
    }

    /// Feeds one event; decisions are appended to `out`.
    pub fn process(&mut self, event: &Event<'_>, out: &mut Vec<Decision>) {
        let start = out.len();
        if let Some(g) = &mut self.grouper {
            match event {
                Event::Progress(p) => g.observe_progress(p),
                e => g.observe_labels(e.labels(), e.ts()),
            }
        }
        match event {
            Event::Sample(s) => self.on_sample(s.metric.as_ref(), s.value, s.ts, &s.labels, out),
            Event::Alert(a) => {
                self.stats.alerts += 1;
                self.observe(a.ts(), out);
                let tier = self.cfg.tiers.resolve(&a.labels);
                for st in &mut self.states {
                    if let State::Alert(state) = st {
                        if state.rule.tiers.contains(tier) && state.matches(a) {
                            state.on_alert(a, tier, &self.cfg, &mut self.stats, out);
                        }
                    }
                }
            }
            Event::Progress(p) => {
                self.stats.progress += 1;
                self.observe(p.ts, out);
                out.push(self.progress_decision(p));
            }
        }
        self.group(start, self.watermark.unwrap_or(Ts::MIN), out);
        self.stats.decisions += (out.len() - start) as u64;
    }

    /// Batch grouping of the decisions appended from `start` on, then what
    /// falls due at `now` (see [`Grouping`]).
    fn group(&mut self, start: usize, now: Ts, out: &mut Vec<Decision>) {
        if let Some(g) = &mut self.grouper {
            g.route(&self.rules, &self.cfg.policy, out, start);
            g.fire_due(&self.cfg.policy, now, out);
        }
    }

    fn on_sample(
        &mut self,
        metric: &str,
        value: f64,
        ts: Ts,
        labels: &crate::event::Labels<'_>,
        out: &mut Vec<Decision>,
    ) {
        self.stats.samples += 1;
        if let Some(w) = self.watermark {
            if ts < w.saturating_sub(self.cfg.allowed_lateness) {
                self.stats.samples_late += 1;
                return;
            }
        }
        self.observe(ts, out);
        if !value.is_finite() {
            self.stats.samples_non_finite += 1;
            return;
        }
        let candidates = self.rules.for_metric(metric);
        if candidates.is_empty() {
            self.stats.samples_unmatched += 1;
            return;
        }
        let tier = self.cfg.tiers.resolve(labels);
        let safe_now = self.safe_now();
        for &id in candidates {
            let State::Metric(state) = &mut self.states[id as usize] else {
                continue;
            };
            if !state.rule.tiers.contains(tier) || !state.rule.matches(labels) {
                continue;
            }
            state.on_sample(
                safe_now,
                labels,
                ts,
                value,
                tier,
                &self.cfg,
                &mut self.stats,
                out,
                &mut self.scheduled,
            );
            for s in self.scheduled.drain(..) {
                self.timers.push(Reverse((s.at, id, s.slot, s.generation)));
            }
        }
    }

    fn safe_now(&self) -> Ts {
        self.watermark
            .map_or(Ts::MIN, |w| w.saturating_sub(self.cfg.allowed_lateness))
    }

    /// Moves the watermark to `ts` (if later) and runs the timers now due.
    fn observe(&mut self, ts: Ts, out: &mut Vec<Decision>) {
        if self.watermark.is_some_and(|w| w >= ts) {
            return;
        }
        self.watermark = Some(ts);
        let safe = self.safe_now();
        self.run_timers(safe, out);
        if safe.since(self.alert_sweep_at) >= Dur::from_mins(1) {
            self.alert_sweep_at = safe;
            for st in &mut self.states {
                if let State::Alert(a) = st {
                    self.stats.groups_evicted += a.sweep(safe, &self.cfg) as u64;
                }
            }
        }
    }

    fn run_timers(&mut self, upto: Ts, out: &mut Vec<Decision>) {
        while let Some(Reverse((at, rule, slot, generation))) = self.timers.peek().copied() {
            if at > upto {
                break;
            }
            self.timers.pop();
            if let State::Metric(m) = &mut self.states[rule as usize] {
                m.on_timer(
                    Due { slot, generation },
                    at,
                    &self.cfg,
                    out,
                    &mut self.scheduled,
                );
                for s in self.scheduled.drain(..) {
                    self.timers
                        .push(Reverse((s.at, rule, s.slot, s.generation)));
                }
            }
        }
    }

    /// Moves the clock to `to` without an event: the live responder's tick
    /// when its inputs are caught up and quiet.
    pub fn advance(&mut self, to: Ts, out: &mut Vec<Decision>) {
        let start = out.len();
        self.observe(to, out);
        self.group(start, self.watermark.unwrap_or(Ts::MIN), out);
        self.stats.decisions += (out.len() - start) as u64;
    }

    /// The live responder's tick at wall time `now`: moves the clock to
    /// `now` minus the allowed lateness (see [`Engine::advance`]), and runs
    /// batch incidents' waits due by `now` (a wait is not about late
    /// samples: the people waiting for the page are on the wall clock).
    pub fn tick(&mut self, now: Ts, out: &mut Vec<Decision>) {
        let start = out.len();
        self.observe(now.saturating_sub(self.cfg.allowed_lateness), out);
        self.group(start, now.max(self.watermark.unwrap_or(Ts::MIN)), out);
        self.stats.decisions += (out.len() - start) as u64;
    }

    /// The wall time from which [`Engine::tick`] has work: the first rule
    /// timer once the lateness allowance has passed it twice over (a tick
    /// moves the clock to `now` minus the allowance, and timers run up to
    /// that minus the allowance again), or a batch incident's wait. The
    /// live loop sleeps until then instead of ticking on a fixed beat.
    pub fn next_due(&self) -> Option<Ts> {
        let lateness = self.cfg.allowed_lateness;
        let timer = self
            .timers
            .peek()
            .map(|Reverse((at, ..))| at.saturating_add(lateness).saturating_add(lateness));
        let batch = self.grouper.as_ref().and_then(|g| g.next_due());
        match (timer, batch) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// End of input: runs every timer up to the newest event time, without
    /// waiting for the lateness allowance (no more events are coming), and
    /// every batch incident's wait.
    pub fn flush(&mut self, out: &mut Vec<Decision>) {
        let start = out.len();
        if let Some(w) = self.watermark {
            self.run_timers(w, out);
        }
        self.group(start, crate::time::MAX_TS, out);
        self.stats.decisions += (out.len() - start) as u64;
    }

    /// Open incidents, for snapshots and for the journal to compare with.
    /// Open incidents as the journal holds them: batch incidents, and the
    /// per-rule incidents that are not a batch's members.
    pub fn open_incidents(&self) -> Vec<Incident> {
        let mut v: Vec<Incident> = self
            .rule_incidents()
            .filter(|i| self.grouper.as_ref().is_none_or(|g| !g.absorbs(&i.id)))
            .cloned()
            .collect();
        if let Some(g) = &self.grouper {
            v.extend(g.open_incidents());
        }
        v.sort_by(|a, b| (a.opened, &a.id).cmp(&(b.opened, &b.id)));
        v
    }

    fn rule_incidents(&self) -> impl Iterator<Item = &Incident> {
        self.states
            .iter()
            .flat_map(|s| -> Box<dyn Iterator<Item = &Incident>> {
                match s {
                    State::Metric(m) => Box::new(m.open_incidents()),
                    State::Alert(a) => Box::new(a.open_incidents()),
                }
            })
    }

    /// After a warm-up: make the journal's view of incidents the engine's.
    /// `open` are the journal's open incidents, `resolved` the ones it saw
    /// resolve lately (with when). Returns open incidents whose rule no
    /// longer exists; they stay open in the journal for a human.
    ///
    /// Open journal incidents are installed as they are (same id, same
    /// decisions already made). An incident the warm-up opened that the
    /// journal never recorded goes back to pending, so it fires for real if
    /// the breach is still there, unless the journal shows the breach was
    /// already handled (an incident of the group resolved after it opened).
    pub fn reconcile(
        &mut self,
        open: &[Incident],
        resolved: &[(Incident, Ts)],
        at: Ts,
    ) -> Vec<Incident> {
        // Batch incidents first: their members' rule incidents are kept as
        // if journaled.
        let keep: std::collections::HashSet<crate::decision::IncidentId> = match &mut self.grouper {
            Some(g) => g.restore(open, at).into_iter().collect(),
            None => Default::default(),
        };
        let open: Vec<Incident> = open.iter().filter(|i| i.batch.is_none()).cloned().collect();
        let open = &open[..];
        let mut orphans = Vec::new();
        let n = self.states.len();
        let mut open_by_rule: Vec<Vec<Incident>> = vec![Vec::new(); n];
        let mut resolved_by_rule: Vec<Vec<(Incident, Ts)>> = vec![Vec::new(); n];
        let rules = self.rules.clone();
        let index = |name: &str| rules.rules().iter().position(|r| &*r.name == name);
        for inc in open {
            match index(&inc.rule) {
                Some(i) => open_by_rule[i].push(inc.clone()),
                None => orphans.push(inc.clone()),
            }
        }
        for (inc, t) in resolved {
            if let Some(i) = index(&inc.rule) {
                resolved_by_rule[i].push((inc.clone(), *t));
            }
        }
        let per_rule = self
            .states
            .iter_mut()
            .zip(open_by_rule)
            .zip(resolved_by_rule);
        for (id, ((st, mine), gone)) in per_rule.enumerate() {
            match st {
                State::Metric(m) => {
                    m.reconcile(
                        &mine,
                        &gone,
                        &keep,
                        at,
                        &self.cfg,
                        &mut self.stats,
                        &mut self.scheduled,
                    );
                    for s in self.scheduled.drain(..) {
                        self.timers
                            .push(Reverse((s.at, id as u32, s.slot, s.generation)));
                    }
                }
                State::Alert(a) => {
                    self.stats.incidents_restored += mine.len() as u64;
                    a.reconcile(&mine, &gone, &keep);
                }
            }
        }
        if self.grouper.is_some() {
            let still: std::collections::HashSet<crate::decision::IncidentId> =
                self.rule_incidents().map(|i| i.id.clone()).collect();
            if let Some(g) = &mut self.grouper {
                g.settle(&still);
            }
        }
        orphans
    }

    fn progress_decision(&self, p: &Progress<'_>) -> Decision {
        let tier = self.cfg.tiers.resolve(&p.labels);
        let mut labels: Vec<(Box<str>, Box<str>)> =
            p.labels.iter().map(|(k, v)| (k.into(), v.into())).collect();
        labels.sort();
        let message = p.summary();
        let mut h = siphasher::sip::SipHasher13::new();
        for (k, v) in &labels {
            h.write(k.as_bytes());
            h.write_u8(0xfe);
            h.write(v.as_bytes());
            h.write_u8(0xff);
        }
        h.write(p.stage.as_str().as_bytes());
        h.write_i64(p.ts.millis());
        h.write_u64(p.done.unwrap_or(u64::MAX));
        let labels: GroupLabels = labels.into();
        Decision {
            at: p.ts,
            action: Action::Notify,
            tier,
            severity: if p.stage == Stage::Failed {
                Severity::Functional
            } else {
                Severity::Minor
            },
            rule: Arc::from("progress"),
            incident: None,
            labels,
            value: p.done.map(|d| d as f64),
            threshold: None,
            baseline: None,
            message,
            key: format!("progress/{:016x}", h.finish()),
            seq: 0,
            fingerprint: None,
            escalated_from: None,
            evidence: Default::default(),
            batch: self.finished_batch(p),
        }
    }

    /// A `batch_done` carries the batch's instances (as the progress named
    /// them, else as seen with its label), for the tier's sample check.
    fn finished_batch(&self, p: &Progress<'_>) -> Option<Arc<crate::decision::BatchInfo>> {
        if p.stage != Stage::BatchDone {
            return None;
        }
        let service = p.labels.get("service")?;
        let batch = p.labels.get("batch")?;
        let instances: Vec<Box<str>> = match &self.grouper {
            Some(g) => g.batch_roster(service, batch),
            None => p.instances.iter().map(|i| Box::from(i.as_ref())).collect(),
        };
        Some(Arc::new(crate::decision::BatchInfo {
            service: service.into(),
            batch: batch.into(),
            members: Vec::new(),
            size: instances.len() as u32,
            outside: Vec::new(),
            outside_seen: 0,
            failed: false,
            about: Vec::new(),
            batch_instances: instances,
        }))
    }
}

#[cfg(test)]
mod tests;
