//! Tier policy: which tier an event belongs to, and what a breach at a
//! tier and severity leads to.

use std::collections::HashMap;

use crate::decision::{Action, Severity, Tier};
use crate::event::Labels;

/// Finds an event's tier: its `tier` label, else the service -> tier map,
/// else the default.
#[derive(Debug, Clone)]
pub struct TierResolver {
    pub label: String,
    pub services: HashMap<String, Tier>,
    pub default: Tier,
}

impl Default for TierResolver {
    fn default() -> Self {
        TierResolver {
            label: "tier".into(),
            services: HashMap::new(),
            default: Tier::Medium,
        }
    }
}

impl TierResolver {
    pub fn resolve(&self, labels: &Labels<'_>) -> Tier {
        if let Some(t) = labels.get(&self.label).and_then(|t| t.parse().ok()) {
            return t;
        }
        if !self.services.is_empty() {
            if let Some(t) = labels.get("service").and_then(|s| self.services.get(s)) {
                return *t;
            }
        }
        self.default
    }
}

/// What a rule says about its actions, beside the tier's policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleActions {
    /// `actions:` replaces the tier's policy (where the plan says so).
    pub replace: Option<Vec<Action>>,
    /// `also:` adds to the tier's policy (CPU: every tier's policy, plus a page).
    pub also: Vec<Action>,
}

/// What each tier does about a functional or severe breach; minor breaches
/// only notify, whatever the tier.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub low: Vec<Action>,
    pub medium: Vec<Action>,
    pub high: Vec<Action>,
    pub minor: Vec<Action>,
}

impl Default for Policy {
    /// The operating plan's defaults.
    fn default() -> Self {
        Policy {
            low: vec![Action::Rollback, Action::Notify],
            medium: vec![Action::RequestApproval, Action::Notify],
            high: vec![Action::PauseRollout, Action::Page, Action::RequestApproval],
            minor: vec![Action::Notify],
        }
    }
}

impl Policy {
    /// The actions for a breach, in the order they fire. A rule's own
    /// `actions` replace the tier's for functional and severe breaches; its
    /// `also` adds to them (after, never twice).
    pub fn actions(&self, tier: Tier, severity: Severity, rule: &RuleActions) -> Vec<Action> {
        if severity == Severity::Minor {
            return self.minor.clone();
        }
        let mut out = match &rule.replace {
            Some(a) => a.clone(),
            None => self.for_tier(tier).to_vec(),
        };
        for a in &rule.also {
            if !out.contains(a) {
                out.push(*a);
            }
        }
        out
    }

    pub fn for_tier(&self, tier: Tier) -> &[Action] {
        match tier {
            Tier::Low => &self.low,
            Tier::Medium => &self.medium,
            Tier::High => &self.high,
        }
    }

    pub fn for_tier_mut(&mut self, tier: Tier) -> &mut Vec<Action> {
        match tier {
            Tier::Low => &mut self.low,
            Tier::Medium => &mut self.medium,
            Tier::High => &mut self.high,
        }
    }
}

/// What a human's approval of a rollback releases beside the rollback, by
/// the incident's tier and its severity when the approval comes. The plan's
/// severe path at high risk: once the incident commander confirms, roll
/// back *and* shift traffic to the standby pool through the load balancer.
/// The rollback is released first; the switch runs beside it, never after.
/// Resuming the rollout later restores the traffic (`restore_traffic`).
pub fn on_approval(tier: Tier, severity: Severity) -> &'static [Action] {
    match (tier, severity) {
        (Tier::High, Severity::Severe) => &[Action::SwitchTraffic],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_approved_severe_high_risk_rollback_switches_traffic() {
        for tier in Tier::ALL {
            for severity in [Severity::Minor, Severity::Functional, Severity::Severe] {
                let want: &[Action] = if (tier, severity) == (Tier::High, Severity::Severe) {
                    &[Action::SwitchTraffic]
                } else {
                    &[]
                };
                assert_eq!(on_approval(tier, severity), want, "{tier} {severity}");
            }
        }
    }

    #[test]
    fn no_policy_fires_a_traffic_action_by_itself() {
        let p = Policy::default();
        for tier in Tier::ALL {
            for severity in [Severity::Minor, Severity::Functional, Severity::Severe] {
                let actions = p.actions(tier, severity, &RuleActions::default());
                assert!(
                    !actions.iter().any(|a| a.is_released_only()),
                    "{tier} {severity}: {actions:?}"
                );
            }
        }
    }
}
