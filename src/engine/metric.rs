//! State and evaluation of one sliding-window rule across all its groups.
//!
//! Groups live in a slab (`groups`), found through a hash table keyed by a
//! 128-bit hash of their `group_by` label values. Every group's window
//! buckets sit in one shared vector per rule, `n` buckets per slab slot, so a
//! group costs no allocation of its own beyond its label values.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use hashbrown::HashTable;
use siphasher::sip128::{Hasher128, SipHasher13};

use super::incident::{Facts, Incident};
use super::trail::Trail;
use super::{EngineConfig, Stats};
use crate::decision::{Action, Decision, GroupLabels, Severity, Tier};
use crate::event::Labels;
use crate::rule::{MetricRule, Rule};
use crate::time::{Dur, Ts};
use crate::window::{
    self, Agg, BasicBucket, CounterBucket, Reading, SketchBucket, Spec, Store, SumBucket,
};

/// Where a group stands with respect to its rule's condition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Phase {
    Idle,
    /// The condition holds since this time; the incident opens once it has
    /// held for the rule's `for`.
    Pending(Ts),
    /// Incident open, condition not clear.
    Firing,
    /// Incident open, clear condition holds since this time.
    Clearing(Ts),
}

#[derive(Debug)]
pub(crate) struct Group {
    key: [u64; 2],
    /// `group_by` label values joined by U+001F.
    values: Box<str>,
    /// The upgrade batch its newest sample named, when batch grouping is on
    /// and `group_by` leaves the batch label out: decisions carry it.
    batch: Option<Box<str>>,
    tier: Tier,
    /// The group's clock: the newest time it has seen or been advanced to.
    now: Ts,
    last_ts: Ts,
    last_value: f64,
    phase: Phase,
    incident: Option<Box<Incident>>,
    /// The window's values since the condition first held (pending or
    /// open): the evidence its decisions carry. `None` while idle.
    trail: Option<Box<Trail>>,
    /// Generation of the group's pending timer; older heap entries are stale.
    timer_gen: u32,
    /// When that timer is due (`Ts::MIN`: none).
    timer_at: Ts,
    live: bool,
}

/// Bucket storage for all groups of a rule.
#[derive(Debug)]
enum Rings {
    Sum(Vec<SumBucket>),
    Basic(Vec<BasicBucket>),
    Counter(Vec<CounterBucket>),
    Sketch(Vec<SketchBucket>),
}

impl Rings {
    fn new(store: Store) -> Rings {
        match store {
            Store::Sum => Rings::Sum(Vec::new()),
            Store::Basic => Rings::Basic(Vec::new()),
            Store::Counter => Rings::Counter(Vec::new()),
            Store::Sketch => Rings::Sketch(Vec::new()),
        }
    }

    fn grow(&mut self, n: usize) {
        match self {
            Rings::Sum(v) => v.resize(v.len() + n, SumBucket::default()),
            Rings::Basic(v) => v.resize(v.len() + n, BasicBucket::default()),
            Rings::Counter(v) => v.resize(v.len() + n, CounterBucket::default()),
            Rings::Sketch(v) => v.resize(v.len() + n, SketchBucket::default()),
        }
    }

    fn clear(&mut self, slot: usize, n: usize) {
        let r = slot * n..(slot + 1) * n;
        match self {
            Rings::Sum(v) => v[r].fill(SumBucket::default()),
            Rings::Basic(v) => v[r].fill(BasicBucket::default()),
            Rings::Counter(v) => v[r].fill(CounterBucket::default()),
            Rings::Sketch(v) => v[r].iter_mut().for_each(|b| *b = SketchBucket::default()),
        }
    }

    fn insert(&mut self, slot: usize, spec: Spec, now: Ts, ts: Ts, v: f64) -> bool {
        let n = spec.buckets() as usize;
        let r = slot * n..(slot + 1) * n;
        match self {
            Rings::Sum(b) => window::insert(spec, &mut b[r], now, ts, v),
            Rings::Basic(b) => window::insert(spec, &mut b[r], now, ts, v),
            Rings::Counter(b) => window::insert(spec, &mut b[r], now, ts, v),
            Rings::Sketch(b) => window::insert(spec, &mut b[r], now, ts, v),
        }
    }

    fn read(
        &self,
        slot: usize,
        spec: Spec,
        agg: Agg,
        at: Ts,
        last: Option<(Ts, f64)>,
    ) -> Option<Reading> {
        self.read_in(slot, spec, agg, spec.range(at), last)
    }

    /// [`Rings::read`] over the bucket epochs `range` (`(lo, hi]`).
    fn read_in(
        &self,
        slot: usize,
        spec: Spec,
        agg: Agg,
        range: (i64, i64),
        last: Option<(Ts, f64)>,
    ) -> Option<Reading> {
        let n = spec.buckets() as usize;
        let r = slot * n..(slot + 1) * n;
        match (self, agg) {
            (Rings::Sum(b), Agg::Avg | Agg::Sum | Agg::Count | Agg::Last) => {
                window::read_sum(agg, spec, &b[r], range, last)
            }
            (Rings::Basic(b), Agg::Min | Agg::Max) => window::read_basic(agg, spec, &b[r], range),
            (Rings::Counter(b), _) => window::read_counter(spec, &b[r], range),
            (Rings::Sketch(b), Agg::Quantile(q)) => window::read_sketch(q, spec, &b[r], range),
            // `Rings::new(agg.store())` makes the pairs above the only ones.
            _ => None,
        }
    }

    /// Bytes one bucket takes in the shared vector.
    fn bucket_bytes(&self) -> usize {
        match self {
            Rings::Sum(_) => std::mem::size_of::<SumBucket>(),
            Rings::Basic(_) => std::mem::size_of::<BasicBucket>(),
            Rings::Counter(_) => std::mem::size_of::<CounterBucket>(),
            Rings::Sketch(_) => std::mem::size_of::<SketchBucket>(),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Rings::Sum(v) => v.capacity() * std::mem::size_of::<SumBucket>(),
            Rings::Basic(v) => v.capacity() * std::mem::size_of::<BasicBucket>(),
            Rings::Counter(v) => v.capacity() * std::mem::size_of::<CounterBucket>(),
            Rings::Sketch(v) => {
                v.capacity() * std::mem::size_of::<SketchBucket>()
                    + v.iter().map(|b| b.sketch.heap_bytes()).sum::<usize>()
            }
        }
    }
}

/// The outcome of reading a group's window.
#[derive(Debug, Clone, Copy)]
enum Verdict {
    /// No sample in the window.
    NoData,
    /// Too few samples, or the baseline is not there yet: no change.
    Unknown,
    Reading {
        facts: Facts,
        breach: bool,
        clear: bool,
        severity: Severity,
    },
}

/// A due timer, popped from the engine's heap.
pub(crate) struct Due {
    pub slot: u32,
    pub generation: u32,
}

pub(crate) struct MetricState {
    pub rule: Arc<Rule>,
    table: HashTable<([u64; 2], u32)>,
    groups: Vec<Group>,
    free: Vec<u32>,
    live: usize,
    main: Rings,
    base: Option<Rings>,
    hasher: (u64, u64),
    sweep_cursor: usize,
    idle_after: Dur,
    /// The batch label groups remember (see `Group::batch`).
    batch_label: Option<Box<str>>,
    /// What a group costs against the groups' byte budget besides its
    /// label values (see [`MetricState::group_cost`]).
    group_fixed: usize,
    /// Bytes this rule's live groups took from the budget.
    charged: usize,
    budget: Arc<crate::limits::Budget>,
}

impl Drop for MetricState {
    fn drop(&mut self) {
        // A revoked partition's engine gives its bytes back.
        self.budget.give(self.charged);
    }
}

/// What a trail of evidence costs against the groups' budget at its
/// largest. Taken whatever the budget (the group exists and breaches: its
/// evidence is never refused), given back when the group goes idle.
const TRAIL_COST: usize =
    std::mem::size_of::<Trail>() + super::trail::MAX_POINTS * std::mem::size_of::<(Ts, f64)>() * 2;

/// A timer the state wants the engine to schedule.
pub(crate) struct Schedule {
    pub at: Ts,
    pub slot: u32,
    pub generation: u32,
}

impl MetricState {
    pub fn new(rule: Arc<Rule>, cfg: &EngineConfig) -> MetricState {
        let m = rule.metric().expect("metric rule");
        let reach = m
            .spec
            .reach()
            .max(m.baseline.as_ref().map_or(Dur::ZERO, |b| b.spec.reach()));
        let idle_after = cfg.idle_after.unwrap_or(Dur(reach.millis()
            + m.hold_for.millis()
            + cfg.allowed_lateness.millis()));
        let seed = std::collections::hash_map::RandomState::new();
        let main = Rings::new(m.agg.store());
        let base = m.baseline.as_ref().map(|b| Rings::new(b.agg.store()));
        // A group: its slot and table entry (with the vectors' growth
        // slack), its buckets, an open incident with the group_by names it
        // repeats. A trail of evidence is charged while it exists
        // ([`TRAIL_COST`]).
        let group_fixed = 2
            * (std::mem::size_of::<Group>() + std::mem::size_of::<([u64; 2], u32)>())
            + m.spec.buckets() as usize * main.bucket_bytes()
            + m.baseline
                .as_ref()
                .zip(base.as_ref())
                .map_or(0, |(b, r)| b.spec.buckets() as usize * r.bucket_bytes())
            + std::mem::size_of::<Incident>()
            + rule.group_by.iter().map(|n| n.len() + 32).sum::<usize>();
        let batch_label = cfg
            .grouping
            .as_ref()
            .map(|g| g.batch_label.clone())
            .filter(|b| !rule.group_by.contains(b));
        MetricState {
            main,
            base,
            hasher: (seed.hash_one(1u8), seed.hash_one(2u8)),
            rule,
            table: HashTable::new(),
            groups: Vec::new(),
            free: Vec::new(),
            live: 0,
            sweep_cursor: 0,
            idle_after,
            batch_label,
            group_fixed,
            charged: 0,
            budget: cfg.budgets.groups.clone(),
        }
    }

    /// What a group with these `group_by` values costs against the budget:
    /// the values twice (the group's and its incident's labels).
    fn group_cost(&self, values: &str) -> usize {
        self.group_fixed + 2 * values.len()
    }

    fn spec(&self) -> &MetricRule {
        self.rule.metric().expect("metric rule")
    }

    pub fn groups(&self) -> usize {
        self.live
    }

    /// Bytes held for this rule's groups (slab, table, buckets, labels).
    pub fn state_bytes(&self) -> usize {
        self.groups.capacity() * std::mem::size_of::<Group>()
            + self.table.capacity() * std::mem::size_of::<([u64; 2], u32)>()
            + self.free.capacity() * 4
            + self.main.heap_bytes()
            + self.base.as_ref().map_or(0, Rings::heap_bytes)
            + self
                .groups
                .iter()
                .filter(|g| g.live)
                .map(|g| {
                    g.values.len()
                        + g.incident
                            .as_ref()
                            .map_or(0, |_| std::mem::size_of::<Incident>())
                        + g.trail
                            .as_ref()
                            .map_or(0, |t| std::mem::size_of::<Trail>() + t.heap_bytes())
                })
                .sum::<usize>()
    }

    fn key_of(&self, labels: &Labels<'_>) -> [u64; 2] {
        let mut h = SipHasher13::new_with_keys(self.hasher.0, self.hasher.1);
        for name in &self.rule.group_by {
            h.write(labels.get(name).unwrap_or("").as_bytes());
            h.write_u8(0x1f);
        }
        let h = h.finish128();
        [h.h1, h.h2]
    }

    /// Applies one sample. `tier` is the event's tier.
    #[allow(clippy::too_many_arguments)]
    pub fn on_sample(
        &mut self,
        safe_now: Ts,
        labels: &Labels<'_>,
        ts: Ts,
        value: f64,
        tier: Tier,
        cfg: &EngineConfig,
        stats: &mut Stats,
        out: &mut Vec<Decision>,
        timers: &mut Vec<Schedule>,
    ) {
        self.sweep_step(safe_now, stats);
        let key = self.key_of(labels);
        let slot = match self.table.find(key[0], |e| e.0 == key) {
            Some(e) => e.1,
            None => match self.create(key, labels, tier, ts, cfg, stats, false) {
                Some(s) => s,
                None => return,
            },
        };
        let s = slot as usize;
        let (main_spec, base_spec) = {
            let m = self.spec();
            (m.spec, m.baseline.as_ref().map(|b| b.spec))
        };
        let g = &mut self.groups[s];
        g.now = g.now.max(ts);
        if let Some(label) = self.batch_label.as_deref() {
            let b = labels.get(label);
            if g.batch.as_deref() != b && ts >= g.last_ts {
                g.batch = b.map(Box::from);
            }
        }
        let now = g.now;
        let in_main = self.main.insert(s, main_spec, now, ts, value);
        let in_base = match (&mut self.base, base_spec) {
            (Some(r), Some(spec)) => r.insert(s, spec, now, ts, value),
            _ => false,
        };
        if !in_main {
            stats.samples_too_old += 1;
            if !in_base {
                return;
            }
        }
        let g = &mut self.groups[s];
        if ts >= g.last_ts {
            g.last_ts = ts;
            g.last_value = value;
        }
        if in_main {
            self.evaluate(slot, now, cfg, out, timers);
        }
    }

    /// A new group, if the cap on groups and the byte budget allow (a group
    /// `restored` from the journal's open incidents is always taken: it
    /// exists already).
    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        key: [u64; 2],
        labels: &Labels<'_>,
        tier: Tier,
        ts: Ts,
        cfg: &EngineConfig,
        stats: &mut Stats,
        restored: bool,
    ) -> Option<u32> {
        if self.live >= cfg.max_groups_per_rule {
            stats.groups_refused += 1;
            return None;
        }
        let values: Vec<&str> = self
            .rule
            .group_by
            .iter()
            .map(|n| labels.get(n).unwrap_or(""))
            .collect();
        let values = values.join("\u{1f}");
        let cost = self.group_cost(&values);
        if restored {
            self.budget.take(cost);
        } else if !self.budget.try_take(cost) {
            stats.groups_refused += 1;
            stats.groups_refused_memory += 1;
            return None;
        }
        self.charged += cost;
        let group = Group {
            key,
            values: values.into_boxed_str(),
            batch: None,
            tier,
            now: ts,
            last_ts: Ts::MIN,
            last_value: f64::NAN,
            phase: Phase::Idle,
            incident: None,
            trail: None,
            timer_gen: 0,
            timer_at: Ts::MIN,
            live: true,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                let gen_ = self.groups[s as usize].timer_gen.wrapping_add(1);
                self.groups[s as usize] = Group {
                    timer_gen: gen_,
                    ..group
                };
                s
            }
            None => {
                let m = self.spec();
                let (n_main, n_base) = (
                    m.spec.buckets() as usize,
                    m.baseline.as_ref().map_or(0, |b| b.spec.buckets() as usize),
                );
                self.groups.push(group);
                self.main.grow(n_main);
                if let Some(b) = &mut self.base {
                    b.grow(n_base);
                }
                (self.groups.len() - 1) as u32
            }
        };
        let hasher_key = |e: &([u64; 2], u32)| e.0[0];
        self.table.insert_unique(key[0], (key, slot), hasher_key);
        self.live += 1;
        stats.groups_created += 1;
        Some(slot)
    }

    /// Examines a couple of slab slots per sample and evicts groups idle for
    /// longer than the rule needs to remember (its reach, `for` and the
    /// allowed lateness). Amortised: no pause for a full sweep.
    fn sweep_step(&mut self, safe_now: Ts, stats: &mut Stats) {
        for _ in 0..2 {
            if self.groups.is_empty() {
                return;
            }
            self.sweep_cursor = (self.sweep_cursor + 1) % self.groups.len();
            let s = self.sweep_cursor;
            let g = &self.groups[s];
            if g.live
                && g.phase == Phase::Idle
                && g.incident.is_none()
                && g.now.saturating_add(self.idle_after) < safe_now
            {
                self.evict(s);
                stats.groups_evicted += 1;
            }
        }
    }

    fn evict(&mut self, s: usize) {
        let key = self.groups[s].key;
        if let Ok(e) = self.table.find_entry(key[0], |e| e.0 == key) {
            e.remove();
        }
        let m = self.spec();
        let (n_main, n_base) = (
            m.spec.buckets() as usize,
            m.baseline.as_ref().map_or(0, |b| b.spec.buckets() as usize),
        );
        self.main.clear(s, n_main);
        if let Some(b) = &mut self.base {
            b.clear(s, n_base);
        }
        let mut cost = self.group_cost(&self.groups[s].values);
        if self.groups[s].trail.take().is_some() {
            cost += TRAIL_COST;
        }
        self.budget.give(cost);
        self.charged -= cost;
        let g = &mut self.groups[s];
        g.live = false;
        g.values = Box::from("");
        g.timer_gen = g.timer_gen.wrapping_add(1);
        g.timer_at = Ts::MIN;
        self.free.push(s as u32);
        self.live -= 1;
    }

    /// Evaluates a due timer: the group's window at the timer's time.
    pub fn on_timer(
        &mut self,
        due: Due,
        at: Ts,
        cfg: &EngineConfig,
        out: &mut Vec<Decision>,
        timers: &mut Vec<Schedule>,
    ) {
        let Some(g) = self.groups.get_mut(due.slot as usize) else {
            return;
        };
        if !g.live || g.timer_gen != due.generation {
            return;
        }
        g.now = g.now.max(at);
        g.timer_at = Ts::MIN;
        let now = g.now;
        self.evaluate(due.slot, now, cfg, out, timers);
    }

    fn read(&self, slot: u32, at: Ts) -> Verdict {
        let m = self.spec();
        let s = slot as usize;
        let g = &self.groups[s];
        let last = (g.last_ts > Ts::MIN).then_some((g.last_ts, g.last_value));
        let Some(reading) = self.main.read(s, m.spec, m.agg, at, last) else {
            return Verdict::NoData;
        };
        if reading.count < m.min_samples {
            return Verdict::Unknown;
        }
        let baseline = match (&m.baseline, &self.base) {
            (Some(b), Some(rings)) => match rings.read(s, b.spec, b.agg, at, None) {
                Some(r) if r.count >= b.min_samples && b.floor.is_none_or(|f| r.value >= f) => {
                    Some(r.value)
                }
                _ => return Verdict::Unknown,
            },
            _ => None,
        };
        let value = reading.value;
        let (Some(breach), Some(clear)) = (
            m.condition.holds(value, baseline),
            m.clear.holds(value, baseline),
        ) else {
            return Verdict::Unknown;
        };
        // A worse severity reports the stricter threshold it crossed.
        let (severity, crossed) = m
            .escalate
            .iter()
            .rev()
            .find(|(_, c)| c.holds(value, baseline) == Some(true))
            .map_or((self.rule.severity, &m.condition), |(s, c)| (*s, c));
        Verdict::Reading {
            facts: Facts {
                value: Some(value),
                threshold: crossed.bound(baseline),
                baseline,
            },
            breach,
            clear,
            severity,
        }
    }

    fn evaluate(
        &mut self,
        slot: u32,
        at: Ts,
        cfg: &EngineConfig,
        out: &mut Vec<Decision>,
        timers: &mut Vec<Schedule>,
    ) {
        let verdict = self.read(slot, at);
        let (hold_for, clear_for, reach_main) = {
            let m = self.spec();
            (m.hold_for, m.clear_for, m.spec)
        };
        let s = slot as usize;
        let phase = self.groups[s].phase;
        // The evidence: every reading from the first breach on (idle
        // groups, nearly all of them, keep nothing).
        if let Verdict::Reading { facts, breach, .. } = verdict {
            if let (Some(v), true) = (facts.value, breach || phase != Phase::Idle) {
                match self.groups[s].trail.as_mut() {
                    Some(t) => t.push(at, v),
                    None => {
                        let before = self.window_before(s, at);
                        self.groups[s].trail = Some(Box::new(Trail::start(&before, at, v)));
                        self.budget.take(TRAIL_COST);
                        self.charged += TRAIL_COST;
                    }
                }
            }
        }
        let decided = out.len();
        let next = match (phase, verdict) {
            (
                Phase::Idle,
                Verdict::Reading {
                    breach: true,
                    facts,
                    severity,
                    ..
                },
            ) => {
                if hold_for.is_zero() {
                    self.open(s, at, facts, severity, cfg, out);
                    Phase::Firing
                } else {
                    Phase::Pending(at)
                }
            }
            (Phase::Idle, _) => Phase::Idle,
            (
                Phase::Pending(since),
                Verdict::Reading {
                    breach: true,
                    facts,
                    severity,
                    ..
                },
            ) => {
                if at.since(since) >= hold_for {
                    self.open(s, at, facts, severity, cfg, out);
                    Phase::Firing
                } else {
                    Phase::Pending(since)
                }
            }
            (Phase::Pending(since), Verdict::Unknown) => Phase::Pending(since),
            (Phase::Pending(_), _) => Phase::Idle,
            (
                Phase::Firing | Phase::Clearing(_),
                Verdict::Reading {
                    breach: true,
                    facts,
                    severity,
                    ..
                },
            ) => {
                self.worsen(s, at, facts, severity, cfg, out);
                Phase::Firing
            }
            (
                Phase::Firing,
                Verdict::Reading {
                    clear: true, facts, ..
                },
            ) => self.clear_or_resolve(s, at, at, clear_for, Some(facts), out),
            (Phase::Firing, Verdict::NoData) => {
                self.clear_or_resolve(s, at, at, clear_for, None, out)
            }
            (
                Phase::Clearing(since),
                Verdict::Reading {
                    clear: true, facts, ..
                },
            ) => self.clear_or_resolve(s, since, at, clear_for, Some(facts), out),
            (Phase::Clearing(since), Verdict::NoData) => {
                self.clear_or_resolve(s, since, at, clear_for, None, out)
            }
            // In the hysteresis band: not clear, so the clearing restarts.
            (Phase::Clearing(_), Verdict::Reading { .. }) => Phase::Firing,
            (p, _) => p,
        };
        let g = &mut self.groups[s];
        if out.len() > decided {
            let evidence = g.trail.as_ref().map(|t| t.snapshot());
            for d in &mut out[decided..] {
                d.evidence = crate::decision::Evidence(evidence.clone());
            }
        }
        g.phase = next;
        if next == Phase::Idle && g.trail.take().is_some() {
            self.budget.give(TRAIL_COST);
            self.charged -= TRAIL_COST;
        }
        // One timer per non-idle group: when its state can next change
        // without a new sample.
        let due = match next {
            Phase::Idle => None,
            Phase::Pending(since) => Some(since.saturating_add(hold_for)),
            Phase::Firing => Some(
                reach_main.start_of(reach_main.epoch(g.last_ts) + i64::from(reach_main.buckets())),
            ),
            Phase::Clearing(since) => Some(since.saturating_add(clear_for)),
        };
        // Only a changed due time needs a new heap entry: a pending group's
        // due time stays put sample after sample.
        match due {
            Some(due) if due > at && due != g.timer_at => {
                g.timer_gen = g.timer_gen.wrapping_add(1);
                g.timer_at = due;
                timers.push(Schedule {
                    at: due,
                    slot,
                    generation: g.timer_gen,
                });
            }
            Some(_) => {}
            None => g.timer_at = Ts::MIN,
        }
    }

    /// The window at `at` bucket by bucket, before the bucket `at` falls
    /// in: where the values stood when the condition first held. Each
    /// bucket reduced on its own (`last` as the bucket's average). Only
    /// when a trail starts, never per sample.
    fn window_before(&self, s: usize, at: Ts) -> Vec<(Ts, f64)> {
        let m = self.spec();
        let agg = if m.agg == Agg::Last { Agg::Avg } else { m.agg };
        let (lo, hi) = m.spec.range(at);
        ((lo + 1)..hi)
            .filter_map(|e| {
                let r = self.main.read_in(s, m.spec, agg, (e - 1, e), None)?;
                Some((m.spec.start_of(e), r.value))
            })
            .collect()
    }

    fn labels_of(&self, s: usize) -> GroupLabels {
        let g = &self.groups[s];
        let mut labels: Vec<(Box<str>, Box<str>)> = self
            .rule
            .group_by
            .iter()
            .zip(g.values.split('\u{1f}'))
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), Box::<str>::from(v)))
            .collect();
        if let (Some(k), Some(b)) = (&self.batch_label, &g.batch) {
            labels.push((k.clone(), b.clone()));
        }
        labels.into()
    }

    fn describe(&self, s: usize, facts: &Facts) -> String {
        let m = self.spec();
        let g = &self.groups[s];
        let whom = g
            .values
            .split('\u{1f}')
            .filter(|v| !v.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        let value = facts.value.map_or("-".into(), fmt_num);
        let bound = facts.threshold.map_or("-".into(), fmt_num);
        let mut msg = format!(
            "{}: {} {} over {} is {}",
            whom, m.metric, m.agg, m.window, value
        );
        match facts.baseline {
            Some(b) => msg.push_str(&format!(
                ", {} {} = {}x its {} baseline {}",
                op_str(&m.condition),
                bound,
                // The factor of the threshold crossed (an escalation's, if worse).
                match facts.threshold {
                    Some(t) if b != 0.0 => fmt_num(t / b),
                    _ => fmt_num(m.condition.threshold),
                },
                m.baseline.as_ref().map_or(Dur::ZERO, |b| b.window),
                fmt_num(b)
            )),
            None => msg.push_str(&format!(" ({} {})", op_str(&m.condition), bound)),
        }
        if !m.hold_for.is_zero() {
            msg.push_str(&format!(" for {}", m.hold_for));
        }
        msg
    }

    fn open(
        &mut self,
        s: usize,
        at: Ts,
        facts: Facts,
        severity: Severity,
        cfg: &EngineConfig,
        out: &mut Vec<Decision>,
    ) {
        let labels = self.labels_of(s);
        let tier = self.groups[s].tier;
        let mut inc = Incident::open(self.rule.name.clone(), labels, tier, severity, at);
        let msg = self.describe(s, &facts);
        inc.fire_policy(&cfg.policy, &self.rule.actions, at, facts, &msg, out);
        self.groups[s].incident = Some(Box::new(inc));
    }

    fn worsen(
        &mut self,
        s: usize,
        at: Ts,
        facts: Facts,
        severity: Severity,
        cfg: &EngineConfig,
        out: &mut Vec<Decision>,
    ) {
        // Called on every sample of a firing group: cheap unless it worsened.
        let from = match &self.groups[s].incident {
            Some(inc) if severity > inc.severity => inc.severity,
            _ => return,
        };
        let msg = self.describe(s, &facts);
        let msg = format!("{msg}; worsened from {from} to {severity}");
        let rule = self.rule.clone();
        let Some(inc) = self.groups[s].incident.as_mut() else {
            return;
        };
        inc.severity = severity;
        inc.escalate(from, &cfg.policy, &rule.actions, at, facts, &msg, out);
    }

    /// Clear (or no data) since `since`: resolve once that has lasted `clear_for`.
    fn clear_or_resolve(
        &mut self,
        s: usize,
        since: Ts,
        at: Ts,
        clear_for: Dur,
        facts: Option<Facts>,
        out: &mut Vec<Decision>,
    ) -> Phase {
        if at.since(since) < clear_for {
            return Phase::Clearing(since);
        }
        let window = self.spec().window;
        let whom = self.groups[s]
            .values
            .split('\u{1f}')
            .filter(|v| !v.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        let msg = match facts {
            Some(f) => format!(
                "{}: recovered, {} is {}",
                whom,
                self.spec().metric,
                f.value.map_or("-".into(), fmt_num)
            ),
            None => format!(
                "{}: resolved, no samples of {} in the last {}",
                whom,
                self.spec().metric,
                window
            ),
        };
        if let Some(mut inc) = self.groups[s].incident.take() {
            out.push(inc.decide(at, Action::Resolve, facts.unwrap_or_default(), msg));
        }
        Phase::Idle
    }

    /// Open incidents of this rule, for snapshots and reconciliation.
    pub fn open_incidents(&self) -> impl Iterator<Item = &Incident> {
        self.groups
            .iter()
            .filter(|g| g.live)
            .filter_map(|g| g.incident.as_deref())
    }

    /// Makes the journal the truth about open incidents after a warm-up:
    /// incidents the warm-up opened but the journal never recorded go back
    /// to pending (they fire for real when seen again); journaled ones are
    /// installed, each with a timer so a gone series still resolves.
    #[allow(clippy::too_many_arguments)]
    pub fn reconcile(
        &mut self,
        journal: &[Incident],
        resolved: &[(Incident, Ts)],
        keep: &std::collections::HashSet<crate::decision::IncidentId>,
        at: Ts,
        cfg: &EngineConfig,
        stats: &mut Stats,
        timers: &mut Vec<Schedule>,
    ) {
        let keys: Vec<[u64; 2]> = journal
            .iter()
            .map(|inc| self.key_of(&labels_view(&inc.labels)))
            .collect();
        let handled: Vec<([u64; 2], Ts)> = resolved
            .iter()
            .map(|(inc, t)| (self.key_of(&labels_view(&inc.labels)), *t))
            .collect();
        for g in self.groups.iter_mut().filter(|g| g.live) {
            if !keys.contains(&g.key) && !g.incident.as_ref().is_some_and(|i| keep.contains(&i.id))
            {
                if let Some(inc) = g.incident.take() {
                    let handled_already =
                        handled.iter().any(|(k, t)| *k == g.key && *t >= inc.opened);
                    g.phase = if handled_already {
                        Phase::Idle
                    } else {
                        Phase::Pending(inc.opened)
                    };
                    stats.incidents_dropped_on_reconcile += 1;
                }
            }
        }
        let boundary = self.spec().spec.next_boundary(at);
        for (inc, key) in journal.iter().zip(keys) {
            let slot = match self.table.find(key[0], |e| e.0 == key) {
                Some(e) => e.1,
                None => match self.create(
                    key,
                    &labels_view(&inc.labels),
                    inc.tier,
                    at,
                    cfg,
                    stats,
                    true,
                ) {
                    Some(s) => s,
                    None => continue,
                },
            };
            let g = &mut self.groups[slot as usize];
            g.incident = Some(Box::new(inc.clone()));
            g.phase = Phase::Firing;
            g.timer_gen = g.timer_gen.wrapping_add(1);
            g.timer_at = boundary;
            timers.push(Schedule {
                at: boundary,
                slot,
                generation: g.timer_gen,
            });
            stats.incidents_restored += 1;
        }
    }
}

fn labels_view(labels: &[(Box<str>, Box<str>)]) -> Labels<'_> {
    Labels(
        labels
            .iter()
            .map(|(k, v)| {
                (
                    std::borrow::Cow::Borrowed(&**k),
                    std::borrow::Cow::Borrowed(&**v),
                )
            })
            .collect(),
    )
}

fn op_str(c: &crate::rule::Condition) -> &'static str {
    use crate::rule::Op;
    match c.op {
        Op::Gt => ">",
        Op::Ge => ">=",
        Op::Lt => "<",
        Op::Le => "<=",
        Op::Eq => "==",
        Op::Ne => "!=",
    }
}

/// Numbers for humans: up to 4 significant decimals, no float noise.
pub(crate) fn fmt_num(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}
