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
    /// What it holds: fingerprint and labels.
    bytes: usize,
}

pub(crate) struct AlertState {
    pub rule: Arc<Rule>,
    entries: HashMap<Box<str>, Entry>,
    /// Sum of the entries' `bytes`, taken from `budget`.
    bytes: usize,
    /// The process's alert budget, shared by every alert rule of every
    /// engine.
    budget: Arc<crate::limits::Budget>,
}

impl Drop for AlertState {
    fn drop(&mut self) {
        // A revoked partition's engine gives its bytes back.
        self.budget.give(self.bytes);
    }
}

/// Bytes of labels one alert incident keeps (keys and values); past it,
/// the least telling labels are dropped whole, and the incident says so
/// with `ripcord_labels_cut`.
pub const LABEL_BUDGET: usize = 4096;
/// Annotations an incident keeps, each cut to [`MAX_KEPT_VALUE`].
const MAX_KEPT_ANNOTATIONS: usize = 16;

/// Annotations a person reads first, kept before any other.
const TELLING_ANNOTATIONS: [&str; 5] = [
    "summary",
    "description",
    "message",
    "runbook_url",
    "dashboard",
];

/// An alert's annotations as its incident keeps them: the telling ones
/// first, then the others, [`MAX_KEPT_ANNOTATIONS`] in all, each text cut
/// to [`MAX_KEPT_VALUE`] bytes.
fn kept_annotations(a: &crate::event::Labels<'_>) -> Vec<(String, String)> {
    let rank = |k: &str| {
        TELLING_ANNOTATIONS
            .iter()
            .position(|t| *t == k)
            .unwrap_or(TELLING_ANNOTATIONS.len())
    };
    let mut all: Vec<&(std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> =
        a.0.iter().collect();
    all.sort_by_key(|(k, _)| rank(k));
    all.into_iter()
        .take(MAX_KEPT_ANNOTATIONS)
        .map(|(k, v)| {
            (
                crate::text::clip_bytes(k, MAX_KEPT_VALUE).to_owned(),
                crate::text::clip_bytes(v, MAX_KEPT_VALUE).to_owned(),
            )
        })
        .collect()
}

/// An annotation quoted in a decision's message is cut to this.
const MAX_KEPT_VALUE: usize = 512;
/// Labels kept first when the budget is tight.
const TELLING: [&str; 7] = [
    "alertname",
    "service",
    "instance",
    "severity",
    "tier",
    "job",
    "batch",
];

/// What an entry costs beyond its fingerprint and labels (the entry, the
/// incident, the map's slot).
const ENTRY_OVERHEAD: usize = std::mem::size_of::<Entry>() + std::mem::size_of::<Incident>() + 32;

fn labels_bytes(labels: &GroupLabels) -> usize {
    labels.iter().map(|(k, v)| k.len() + v.len()).sum()
}

impl AlertState {
    pub fn new(rule: Arc<Rule>, cfg: &EngineConfig) -> AlertState {
        AlertState {
            rule,
            entries: HashMap::new(),
            bytes: 0,
            budget: cfg.budgets.alerts.clone(),
        }
    }

    /// Bytes the remembered alerts hold.
    pub fn memory(&self) -> usize {
        self.bytes
    }

    /// Forgets resolved entries, oldest first, until `need` more bytes fit
    /// in the budget (shared with every other alert rule). Returns how
    /// many were forgotten.
    fn make_room(&mut self, need: usize) -> u64 {
        if self.budget.fits(need) {
            return 0;
        }
        let mut resolved: Vec<(Ts, Box<str>)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.incident.is_none())
            .map(|(k, e)| (e.last_seen, k.clone()))
            .collect();
        resolved.sort();
        // Down to 90% of the budget at once: the sort is paid once per
        // tenth of the budget, not once per alert.
        let limit = self.budget.limit();
        let target = limit - limit / 10;
        let mut forgotten = 0;
        for (_, k) in resolved {
            if self.budget.used() + need <= target {
                break;
            }
            if let Some(e) = self.entries.remove(&k) {
                self.bytes -= e.bytes;
                self.budget.give(e.bytes);
                forgotten += 1;
            }
        }
        forgotten
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
        self.bytes
            + (self.entries.capacity() - self.entries.len()) * (std::mem::size_of::<Entry>() + 24)
    }

    /// The incident's labels, within [`LABEL_BUDGET`]; true if some were
    /// cut.
    fn labels_of(&self, alert: &Alert<'_>) -> (GroupLabels, bool) {
        let mut pairs: Vec<(&str, &str)> = if self.rule.group_by.is_empty() {
            alert.labels.iter().collect()
        } else {
            self.rule
                .group_by
                .iter()
                .filter_map(|k| alert.labels.get(k).map(|v| (&**k, v)))
                .collect()
        };
        // The telling labels first, the rest by name.
        pairs.sort_by_key(|(k, _)| {
            (
                TELLING.iter().position(|t| t == k).unwrap_or(TELLING.len()),
                *k,
            )
        });
        // Values are never cut (a cut instance id could name another host);
        // the telling labels are always kept, the others while they fit.
        let mut kept: Vec<(Box<str>, Box<str>)> = Vec::with_capacity(pairs.len());
        let mut used = 0;
        let mut cut = false;
        for (k, v) in pairs {
            let telling = TELLING.contains(&k);
            if !telling && used + k.len() + v.len() > LABEL_BUDGET {
                cut = true;
                continue;
            }
            used += k.len() + v.len();
            kept.push((k.into(), v.into()));
        }
        if cut {
            kept.push(("ripcord_labels_cut".into(), "true".into()));
        }
        kept.sort();
        (kept.into(), cut)
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
                let rule = self.rule.clone();
                let RuleKind::Alert(a) = &rule.kind else {
                    return;
                };
                let (labels, cut) = self.labels_of(alert);
                let bytes = fp.len() + labels_bytes(&labels) + ENTRY_OVERHEAD;
                let replaced = |s: &Self| s.entries.get(fp).map_or(0, |e| e.bytes);
                stats.alerts_forgotten_early +=
                    self.make_room(bytes.saturating_sub(replaced(self)));
                // (Making room may have forgotten this very fingerprint.)
                let replaced = replaced(self);
                let need = bytes.saturating_sub(replaced);
                if !self.budget.try_take(need) {
                    stats.alerts_refused_memory += 1;
                    stats.groups_refused += 1;
                    return;
                }
                self.budget.give(replaced.saturating_sub(bytes));
                if cut {
                    stats.labels_truncated += 1;
                }
                let severity = a.severity_of(&alert.labels, self.rule.severity);
                let mut inc = Incident::open(
                    self.rule.name.clone(),
                    labels,
                    tier,
                    severity,
                    alert.starts_at,
                );
                inc.fingerprint = Some(fp.into());
                let summary = alert
                    .annotations
                    .get("summary")
                    .or_else(|| alert.annotations.get("description"))
                    .map(|s| format!(": {}", crate::text::clip_bytes(s, MAX_KEPT_VALUE)))
                    .unwrap_or_default();
                let msg = format!(
                    "{} firing on {}{summary}",
                    alert.alertname(),
                    describe(&inc.labels)
                );
                let first = out.len();
                inc.fire_policy(
                    &cfg.policy,
                    &self.rule.actions,
                    alert.starts_at,
                    Facts::default(),
                    &msg,
                    out,
                );
                // The annotations and the chart's source go with the
                // decisions to the journal (the console shows them); the
                // engine keeps none of them.
                if !alert.annotations.0.is_empty() || alert.generator_url.is_some() {
                    let ev = std::sync::Arc::new(crate::decision::EvidenceSeries {
                        breach_from: alert.starts_at,
                        points: Vec::new(),
                        annotations: kept_annotations(&alert.annotations),
                        chart: alert
                            .generator_url
                            .as_ref()
                            .map(|u| crate::decision::ChartSource {
                                generator_url: u.to_string(),
                                ..Default::default()
                            }),
                    });
                    for d in &mut out[first..] {
                        d.evidence = crate::decision::Evidence(Some(ev.clone()));
                    }
                }
                self.bytes = self.bytes - replaced + bytes;
                self.entries.insert(
                    fp.into(),
                    Entry {
                        starts_at: alert.starts_at,
                        incident: Some(Box::new(inc)),
                        last_seen: seen,
                        bytes,
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
        let mut freed = 0;
        self.entries.retain(|_, e| {
            let keep =
                e.incident.is_some() || e.last_seen.saturating_add(cfg.alert_memory) >= safe_now;
            if !keep {
                freed += e.bytes;
            }
            keep
        });
        self.bytes -= freed;
        self.budget.give(freed);
        before - self.entries.len()
    }

    pub fn open_incidents(&self) -> impl Iterator<Item = &Incident> {
        self.entries.values().filter_map(|e| e.incident.as_deref())
    }

    /// Installs journaled incidents and drops ones the journal never
    /// recorded (see `MetricState::reconcile`).
    pub fn reconcile(
        &mut self,
        journal: &[Incident],
        resolved: &[(Incident, Ts)],
        keep: &std::collections::HashSet<crate::decision::IncidentId>,
    ) {
        for e in self.entries.values_mut() {
            if e.incident
                .as_ref()
                .is_some_and(|i| !journal.iter().any(|j| j.id == i.id) && !keep.contains(&i.id))
            {
                e.incident = None;
            }
        }
        let mut added = 0;
        // Remember recently resolved alerts, so a redelivery of their
        // firing does not open them again.
        for (inc, t) in resolved {
            let Some(fp) = inc.fingerprint.clone() else {
                continue;
            };
            let bytes = fp.len() + labels_bytes(&inc.labels) + ENTRY_OVERHEAD;
            let e = self.entries.entry(fp).or_insert_with(|| {
                added += bytes;
                Entry {
                    starts_at: inc.opened,
                    incident: None,
                    last_seen: *t,
                    bytes,
                }
            });
            e.starts_at = e.starts_at.max(inc.opened);
            e.last_seen = e.last_seen.max(*t);
        }
        for inc in journal {
            let Some(fp) = inc.fingerprint.clone() else {
                continue;
            };
            let bytes = fp.len() + labels_bytes(&inc.labels) + ENTRY_OVERHEAD;
            let e = self.entries.entry(fp).or_insert_with(|| {
                added += bytes;
                Entry {
                    starts_at: inc.opened,
                    incident: None,
                    last_seen: inc.opened,
                    bytes,
                }
            });
            e.starts_at = e.starts_at.max(inc.opened);
            e.incident = Some(Box::new(inc.clone()));
        }
        self.bytes += added;
        // What the journal holds is taken back whatever the budget says.
        self.budget.take(added);
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
