//! Alert rules: incidents that follow forwarded Alertmanager alerts.
//!
//! An alert is identified by its fingerprint; a firing opens an incident, a
//! `resolved` closes it. Alertmanager delivers at least once and re-sends
//! firing alerts on every group interval, so the state remembers each
//! fingerprint's `startsAt`: a repeat of a firing already seen (even after
//! it resolved) never fires again. Only a firing with a newer `startsAt`
//! after a resolve opens a new incident.

use std::collections::HashMap;
use std::sync::Arc;

use super::incident::{Facts, Incident};
use super::{EngineConfig, Stats};
use crate::decision::{Action, Decision, GroupLabels, Tier};
use crate::event::{Alert, AlertStatus};
use crate::rule::{Rule, RuleKind};
use crate::time::Ts;

struct Entry {
    starts_at: Ts,
    incident: Option<Box<Incident>>,
    /// Newest event time this fingerprint was seen at, for forgetting.
    last_seen: Ts,
}

pub(crate) struct AlertState {
    pub rule: Arc<Rule>,
    entries: HashMap<Box<str>, Entry>,
}

impl AlertState {
    pub fn new(rule: Arc<Rule>) -> AlertState {
        AlertState {
            rule,
            entries: HashMap::new(),
        }
    }

    pub fn matches(&self, alert: &Alert<'_>) -> bool {
        let RuleKind::Alert(a) = &self.rule.kind else {
            return false;
        };
        a.alertname
            .as_deref()
            .is_none_or(|n| n == alert.alertname())
            && self.rule.matches(&alert.labels)
    }

    pub fn groups(&self) -> usize {
        self.entries.len()
    }

    pub fn state_bytes(&self) -> usize {
        self.entries.capacity() * (std::mem::size_of::<Entry>() + 24)
            + self.entries.keys().map(|k| k.len()).sum::<usize>()
            + self
                .entries
                .values()
                .filter(|e| e.incident.is_some())
                .count()
                * std::mem::size_of::<Incident>()
    }

    fn labels_of(&self, alert: &Alert<'_>) -> GroupLabels {
        let mut pairs: Vec<(Box<str>, Box<str>)> = if self.rule.group_by.is_empty() {
            alert
                .labels
                .iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect()
        } else {
            self.rule
                .group_by
                .iter()
                .filter_map(|k| alert.labels.get(k).map(|v| (k.clone(), v.into())))
                .collect()
        };
        pairs.sort();
        pairs.into()
    }

    pub fn on_alert(
        &mut self,
        alert: &Alert<'_>,
        tier: Tier,
        cfg: &EngineConfig,
        stats: &mut Stats,
        out: &mut Vec<Decision>,
    ) {
        let fp: &str = &alert.fingerprint;
        let seen = alert.ts();
        match alert.status {
            AlertStatus::Firing => {
                let fresh = match self.entries.get_mut(fp) {
                    None => true,
                    Some(e) => {
                        e.last_seen = e.last_seen.max(seen);
                        if e.incident.is_some() {
                            // Repeat, or a restart of the alert while our
                            // incident is still open: one incident either way.
                            e.starts_at = e.starts_at.max(alert.starts_at);
                            stats.alerts_repeated += 1;
                            false
                        } else if alert.starts_at > e.starts_at {
                            true
                        } else {
                            stats.alerts_repeated += 1;
                            false
                        }
                    }
                };
                if !fresh {
                    return;
                }
                if !self.entries.contains_key(fp) && self.entries.len() >= cfg.max_groups_per_rule {
                    stats.groups_refused += 1;
                    return;
                }
                let RuleKind::Alert(a) = &self.rule.kind else {
                    return;
                };
                let severity = a.severity_of(&alert.labels, self.rule.severity);
                let mut inc = Incident::open(
                    self.rule.name.clone(),
                    self.labels_of(alert),
                    tier,
                    severity,
                    alert.starts_at,
                );
                inc.fingerprint = Some(fp.into());
                let summary = alert
                    .annotations
                    .get("summary")
                    .or_else(|| alert.annotations.get("description"))
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default();
                let msg = format!(
                    "{} firing on {}{summary}",
                    alert.alertname(),
                    describe(&inc.labels)
                );
                inc.fire_policy(
                    &cfg.policy,
                    &self.rule.actions,
                    alert.starts_at,
                    Facts::default(),
                    &msg,
                    out,
                );
                self.entries.insert(
                    fp.into(),
                    Entry {
                        starts_at: alert.starts_at,
                        incident: Some(Box::new(inc)),
                        last_seen: seen,
                    },
                );
            }
            AlertStatus::Resolved => {
                let Some(e) = self.entries.get_mut(fp) else {
                    stats.alerts_unknown_resolved += 1;
                    return;
                };
                e.last_seen = e.last_seen.max(seen);
                match e.incident.take() {
                    Some(mut inc) => {
                        let msg = format!(
                            "{} resolved on {}",
                            alert.alertname(),
                            describe(&inc.labels)
                        );
                        out.push(inc.decide(seen, Action::Resolve, Facts::default(), msg));
                    }
                    None => stats.alerts_repeated += 1,
                }
            }
        }
    }

    /// Forgets resolved fingerprints not seen for `alert_memory`.
    pub fn sweep(&mut self, safe_now: Ts, cfg: &EngineConfig) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| {
            e.incident.is_some() || e.last_seen.saturating_add(cfg.alert_memory) >= safe_now
        });
        before - self.entries.len()
    }

    pub fn open_incidents(&self) -> impl Iterator<Item = &Incident> {
        self.entries.values().filter_map(|e| e.incident.as_deref())
    }

    /// Installs journaled incidents and drops ones the journal never
    /// recorded (see `MetricState::reconcile`).
    pub fn reconcile(&mut self, journal: &[Incident], resolved: &[(Incident, Ts)]) {
        for e in self.entries.values_mut() {
            if e.incident
                .as_ref()
                .is_some_and(|i| !journal.iter().any(|j| j.id == i.id))
            {
                e.incident = None;
            }
        }
        // Remember recently resolved alerts, so a redelivery of their
        // firing does not open them again.
        for (inc, t) in resolved {
            let Some(fp) = inc.fingerprint.clone() else {
                continue;
            };
            let e = self.entries.entry(fp).or_insert(Entry {
                starts_at: inc.opened,
                incident: None,
                last_seen: *t,
            });
            e.starts_at = e.starts_at.max(inc.opened);
            e.last_seen = e.last_seen.max(*t);
        }
        for inc in journal {
            let Some(fp) = inc.fingerprint.clone() else {
                continue;
            };
            let e = self.entries.entry(fp).or_insert(Entry {
                starts_at: inc.opened,
                incident: None,
                last_seen: inc.opened,
            });
            e.starts_at = e.starts_at.max(inc.opened);
            e.incident = Some(Box::new(inc.clone()));
        }
    }
}

fn describe(labels: &GroupLabels) -> String {
    let picked: Vec<&str> = ["service", "instance", "job"]
        .iter()
        .filter_map(|k| labels.iter().find(|(lk, _)| &**lk == *k).map(|(_, v)| &**v))
        .collect();
    if picked.is_empty() {
        labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    } else {
        picked.join("/")
    }
}
