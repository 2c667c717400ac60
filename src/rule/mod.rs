//! Rules: what to watch, how to window it, when it is a breach, and what a
//! breach leads to. Loaded from YAML files under `rules/` (see [`load`]),
//! compiled into a [`RuleSet`] the engine indexes by metric name.

mod condition;
pub mod load;
mod matcher;
pub mod policy;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

pub use condition::{Condition, Direction, Op};
pub use matcher::Matcher;
pub use policy::{Policy, RuleActions, TierResolver};

use crate::decision::{Severity, Tier};
use crate::event::Labels;
use crate::time::Dur;
use crate::window::{Agg, Spec};

/// Which tiers a rule applies to, as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierSet(u8);

impl TierSet {
    pub const ALL: TierSet = TierSet(0b111);

    pub fn of(tiers: &[Tier]) -> TierSet {
        TierSet(tiers.iter().fold(0, |acc, t| acc | (1 << *t as u8)))
    }

    pub fn contains(self, t: Tier) -> bool {
        self.0 & (1 << t as u8) != 0
    }

    pub fn single(self) -> Option<Tier> {
        let mut it = Tier::ALL.into_iter().filter(|t| self.contains(*t));
        let first = it.next()?;
        it.next().is_none().then_some(first)
    }
}

/// Where a rule was written, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: u32,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: Arc<str>,
    /// The name as written: a rule tuned per tier (`tiers:`) compiles to
    /// one rule per tuning, named `<family>.<tier>`.
    pub family: Arc<str>,
    pub description: Option<String>,
    pub origin: Origin,
    pub tiers: TierSet,
    pub matchers: Vec<Matcher>,
    /// Labels that split the rule's events into groups; one window and at
    /// most one open incident per group.
    pub group_by: Vec<Box<str>>,
    pub severity: Severity,
    /// Replaces or adds to the tier policy's actions for this rule, where
    /// the plan says so (e.g. sustained CPU also pages).
    pub actions: RuleActions,
    pub kind: RuleKind,
}

#[derive(Debug, Clone)]
pub enum RuleKind {
    Metric(MetricRule),
    Alert(AlertRule),
}

/// A sliding-window rule over one metric.
#[derive(Debug, Clone)]
pub struct MetricRule {
    pub metric: String,
    pub window: Dur,
    pub agg: Agg,
    pub spec: Spec,
    pub condition: Condition,
    pub baseline: Option<Baseline>,
    /// How long the condition must hold before the incident opens.
    pub hold_for: Dur,
    /// Fewer samples than this in the window: no verdict either way.
    pub min_samples: u64,
    /// Higher severities at stricter thresholds, mildest first.
    pub escalate: Vec<(Severity, Condition)>,
    /// Hysteresis: the incident resolves once this holds for `clear_for`.
    pub clear: Condition,
    pub clear_for: Dur,
}

/// The same series over an earlier or longer window.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub window: Dur,
    pub offset: Dur,
    pub agg: Agg,
    pub spec: Spec,
    pub min_samples: u64,
    /// A baseline below this gives no verdict: a quiet hour (a night's few
    /// transactions) is too thin to call half of it a fault.
    pub floor: Option<f64>,
}

/// A rule over alerts forwarded by Alertmanager.
#[derive(Debug, Clone)]
pub struct AlertRule {
    /// `None` matches every alertname.
    pub alertname: Option<String>,
    /// Label carrying the alert's severity, and how its values map.
    pub severity_label: String,
    pub severity_map: Vec<(String, Severity)>,
}

impl AlertRule {
    pub fn severity_of(&self, labels: &Labels<'_>, fallback: Severity) -> Severity {
        labels
            .get(&self.severity_label)
            .and_then(|v| self.severity_map.iter().find(|(k, _)| k == v))
            .map_or(fallback, |(_, s)| *s)
    }
}

impl Rule {
    pub fn matches(&self, labels: &Labels<'_>) -> bool {
        self.matchers.iter().all(|m| m.matches(labels))
    }

    pub fn metric(&self) -> Option<&MetricRule> {
        match &self.kind {
            RuleKind::Metric(m) => Some(m),
            RuleKind::Alert(_) => None,
        }
    }
}

/// All rules, indexed for the engine: by metric name, plus the alert rules.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    by_metric: HashMap<String, Vec<u32>>,
    alert_rules: Vec<u32>,
}

impl RuleSet {
    pub fn new(rules: Vec<Rule>) -> RuleSet {
        let mut by_metric: HashMap<String, Vec<u32>> = HashMap::new();
        let mut alert_rules = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            match &r.kind {
                RuleKind::Metric(m) => by_metric
                    .entry(m.metric.clone())
                    .or_default()
                    .push(i as u32),
                RuleKind::Alert(_) => alert_rules.push(i as u32),
            }
        }
        RuleSet {
            rules,
            by_metric,
            alert_rules,
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn get(&self, id: u32) -> &Rule {
        &self.rules[id as usize]
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn for_metric(&self, metric: &str) -> &[u32] {
        self.by_metric.get(metric).map_or(&[], Vec::as_slice)
    }

    pub fn alert_rules(&self) -> &[u32] {
        &self.alert_rules
    }

    /// The longest span of history any rule needs (window, baseline, `for`):
    /// how far back the live responder re-reads to warm windows.
    pub fn max_lookback(&self) -> Dur {
        self.rules
            .iter()
            .filter_map(Rule::metric)
            .map(|m| {
                let base = m.baseline.as_ref().map_or(Dur::ZERO, |b| b.spec.reach());
                Dur(m.spec.reach().millis().max(base.millis()) + m.hold_for.millis())
            })
            .max()
            .unwrap_or(Dur::ZERO)
    }
}
