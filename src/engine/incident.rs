//! Incidents: one per (rule, group) while a breach lasts. They carry what
//! has been decided so far so nothing fires twice.

use std::sync::Arc;

use crate::decision::{Action, Decision, GroupLabels, IncidentId, Severity, Tier};
use crate::rule::{Policy, RuleActions};
use crate::time::Ts;

/// An open incident as the engine tracks it.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub id: IncidentId,
    pub rule: Arc<str>,
    pub labels: GroupLabels,
    pub tier: Tier,
    pub opened: Ts,
    /// Peak severity so far; it never goes down during an incident.
    pub severity: Severity,
    /// Actions already decided, as bits of [`Action::bit`].
    pub fired: u8,
    /// Decisions emitted so far: the suffix of each decision's key.
    pub seq: u32,
    /// For incidents that follow an Alertmanager alert: its fingerprint.
    pub fingerprint: Option<Box<str>>,
    /// For a batch incident: its batch and members, as last decided.
    pub batch: Option<Arc<crate::decision::BatchInfo>>,
}

/// What a decision reports about the reading that caused it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts {
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    pub baseline: Option<f64>,
}

impl Incident {
    pub fn open(
        rule: Arc<str>,
        labels: GroupLabels,
        tier: Tier,
        severity: Severity,
        opened: Ts,
    ) -> Incident {
        Incident {
            id: IncidentId::derive(&rule, &labels, opened),
            rule,
            labels,
            tier,
            opened,
            severity,
            fired: 0,
            seq: 0,
            fingerprint: None,
            batch: None,
        }
    }

    pub fn has_fired(&self, a: Action) -> bool {
        self.fired & a.bit() != 0
    }

    /// A decision on this incident. The key is `<incident>/<seq>/<action>`:
    /// deterministic for a given input, unique within the incident.
    pub fn decide(&mut self, at: Ts, action: Action, facts: Facts, message: String) -> Decision {
        self.fired |= action.bit();
        let seq = self.seq;
        let key = Decision::engine_key(&self.id, seq, action);
        self.seq += 1;
        Decision {
            seq,
            fingerprint: self.fingerprint.clone(),
            escalated_from: None,
            evidence: Default::default(),
            batch: self.batch.clone(),
            at,
            action,
            tier: self.tier,
            severity: self.severity,
            rule: self.rule.clone(),
            incident: Some(self.id.clone()),
            labels: self.labels.clone(),
            value: facts.value,
            threshold: facts.threshold,
            baseline: facts.baseline,
            message,
            key,
        }
    }

    /// Emits the policy's actions for the incident's severity, in order.
    pub fn fire_policy(
        &mut self,
        policy: &Policy,
        rule_actions: &RuleActions,
        at: Ts,
        facts: Facts,
        message: &str,
        out: &mut Vec<Decision>,
    ) {
        for a in policy.actions(self.tier, self.severity, rule_actions) {
            out.push(self.decide(at, a, facts, message.to_owned()));
        }
    }

    /// Severity went up: the new severity's actions that have not fired yet,
    /// then a notify saying so (always: a worsening is news even where the
    /// tier's policy has no chat post).
    #[allow(clippy::too_many_arguments)]
    pub fn escalate(
        &mut self,
        from: Severity,
        policy: &Policy,
        rule_actions: &RuleActions,
        at: Ts,
        facts: Facts,
        message: &str,
        out: &mut Vec<Decision>,
    ) {
        let actions: Vec<Action> = policy
            .actions(self.tier, self.severity, rule_actions)
            .into_iter()
            .filter(|a| *a != Action::Notify && !self.has_fired(*a))
            .collect();
        let start = out.len();
        for a in actions {
            out.push(self.decide(at, a, facts, message.to_owned()));
        }
        out.push(self.decide(at, Action::Notify, facts, message.to_owned()));
        for d in &mut out[start..] {
            d.escalated_from = Some(from);
        }
    }
}
