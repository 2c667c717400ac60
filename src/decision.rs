//! Decisions: what the engine concluded, and the vocabulary around them
//! (risk tiers, fault severities, actions).
//!
//! A decision is the engine's whole output. Replay prints it, the live
//! responder journals it and hands it to the action stage.

use std::fmt;
use std::hash::Hasher;
use std::str::FromStr;
use std::sync::Arc;

use serde::ser::{SerializeMap, SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use crate::time::Ts;

/// Risk tier of the service being upgraded: decides what a breach leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Low,
    Medium,
    High,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Low, Tier::Medium, Tier::High];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Low => "low",
            Tier::Medium => "medium",
            Tier::High => "high",
        }
    }
}

impl FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Tier, String> {
        match s {
            "low" => Ok(Tier::Low),
            "medium" => Ok(Tier::Medium),
            "high" => Ok(Tier::High),
            _ => Err(format!("unknown tier `{s}`; expected low, medium or high")),
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How bad a fault is, independent of tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// No business impact: record, keep watching, notify only.
    Minor,
    /// Part of the business affected.
    Functional,
    /// Business down.
    Severe,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Minor => "minor",
            Severity::Functional => "functional",
            Severity::Severe => "severe",
        }
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Severity, String> {
        match s {
            "minor" => Ok(Severity::Minor),
            "functional" => Ok(Severity::Functional),
            "severe" => Ok(Severity::Severe),
            _ => Err(format!(
                "unknown severity `{s}`; expected minor, functional or severe"
            )),
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a decision asks the action stage to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Roll the affected instance back to its pre-upgrade state.
    Rollback,
    /// Prepare a rollback and wait for a human to approve it.
    RequestApproval,
    /// Stop the staged rollout from starting further batches.
    PauseRollout,
    /// Page on-call by SMS / phone call.
    Page,
    /// Post to chat / email.
    Notify,
    /// The incident is over.
    Resolve,
    /// Shift the service's traffic to its standby pool through the load
    /// balancer: released, beside the rollback, when the incident commander
    /// approves the rollback of a severe high-risk incident.
    SwitchTraffic,
    /// Send the service's traffic back to its primary pool: released when
    /// a human resumes a rollout whose traffic ripcord switched.
    RestoreTraffic,
}

impl Action {
    pub const ALL: [Action; 8] = [
        Action::Rollback,
        Action::RequestApproval,
        Action::PauseRollout,
        Action::Page,
        Action::Notify,
        Action::Resolve,
        Action::SwitchTraffic,
        Action::RestoreTraffic,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Rollback => "rollback",
            Action::RequestApproval => "request_approval",
            Action::PauseRollout => "pause_rollout",
            Action::Page => "page",
            Action::Notify => "notify",
            Action::Resolve => "resolve",
            Action::SwitchTraffic => "switch_traffic",
            Action::RestoreTraffic => "restore_traffic",
        }
    }

    /// Whether only a human's verdict releases this action (an approved
    /// rollback, a resumed rollout), never a rule or a tier's policy.
    pub fn is_released_only(self) -> bool {
        matches!(self, Action::SwitchTraffic | Action::RestoreTraffic)
    }

    /// Whether the action changes the world in a way that may have half
    /// happened when its process died (a rollback, a pause, a traffic
    /// switch): such an action is never run again automatically; a human
    /// decides. Messages and approval requests run again instead.
    pub fn is_never_rerun(self) -> bool {
        matches!(
            self,
            Action::Rollback
                | Action::PauseRollout
                | Action::SwitchTraffic
                | Action::RestoreTraffic
        )
    }

    /// One bit per action, for sets of them in a `u8`: eight actions at most.
    pub(crate) fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Action, String> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown action `{s}`; expected rollback, request_approval, pause_rollout, \
                     page, notify, switch_traffic or restore_traffic"
                )
            })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A label set owned by an incident or decision, in a stable order.
pub type GroupLabels = Arc<[(Box<str>, Box<str>)]>;

/// Identity of an incident: stable across replays and restarts, because it
/// is derived from the rule, the group and the time the incident opened.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IncidentId(Arc<str>);

impl IncidentId {
    pub fn derive(rule: &str, labels: &[(Box<str>, Box<str>)], opened: Ts) -> IncidentId {
        let mut h = siphasher::sip::SipHasher13::new();
        h.write(rule.as_bytes());
        h.write_u8(0xff);
        for (k, v) in labels {
            h.write(k.as_bytes());
            h.write_u8(0xfe);
            h.write(v.as_bytes());
            h.write_u8(0xff);
        }
        h.write_i64(opened.millis());
        IncidentId(format!("inc-{:012x}", h.finish() >> 16).into())
    }

    pub fn from_string(s: impl Into<Arc<str>>) -> IncidentId {
        IncidentId(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IncidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for IncidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for IncidentId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// One thing the engine decided, at an event time.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Event time the decision was taken at.
    pub at: Ts,
    pub action: Action,
    pub tier: Tier,
    pub severity: Severity,
    pub rule: Arc<str>,
    /// `None` for decisions outside any incident (upgrade progress posts).
    pub incident: Option<IncidentId>,
    /// The group's labels (`instance` among them when grouped by instance).
    pub labels: GroupLabels,
    /// The window's aggregate that triggered the decision.
    pub value: Option<f64>,
    /// The threshold it was compared with (for baselines: factor x baseline).
    pub threshold: Option<f64>,
    pub baseline: Option<f64>,
    /// One human sentence: what, where, value vs threshold.
    pub message: String,
    /// Idempotency key: the same input always yields the same key, so the
    /// journal can refuse to record (and act on) a decision twice.
    pub key: String,
    /// Position of the decision within its incident (0 = the opening one).
    pub seq: u32,
    /// The Alertmanager fingerprint, for incidents that follow an alert.
    pub fingerprint: Option<Box<str>>,
    /// Set on the decisions of a worsening: the severity it rose from.
    pub escalated_from: Option<Severity>,
    /// The window's values leading to the decision (see
    /// [`crate::engine::Trail`]), journaled for the review's chart.
    pub evidence: Evidence,
    /// Set on the decisions of a batch incident (see
    /// [`crate::engine::Grouping`]): the batch, its breaching members and
    /// what else is known about it, as of this decision.
    pub batch: Option<Arc<BatchInfo>>,
}

/// A batch incident as one of its decisions saw it: the unit of response
/// for a staged upgrade is the batch, not the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchInfo {
    pub service: Box<str>,
    pub batch: Box<str>,
    /// The breaching instances of the batch, by instance name. A rule
    /// grouped by batch (no instance) is a member named "".
    pub members: Vec<Member>,
    /// How many instances the batch has: as the orchestrator named them,
    /// else as seen with the batch's label (0: unknown).
    pub size: u32,
    /// Instances of the same service outside the batch (not upgraded, or
    /// in a batch not yet started) breaching the same rules meanwhile,
    /// sorted: the fault may not be the upgrade.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outside: Vec<Box<str>>,
    /// Instances of the service outside the batch ripcord has seen.
    #[serde(default)]
    pub outside_seen: u32,
    /// The members reached `grouping.batch_failed`: the whole batch failed.
    #[serde(default)]
    pub failed: bool,
    /// The instances this decision is about, when not the whole incident
    /// (a late member joining, one member's rollback).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub about: Vec<Box<str>>,
    /// Every instance of the batch ripcord knows of (the orchestrator
    /// named them, or they reported with the batch's label), members
    /// included, sorted and bounded: "the whole batch" a human may choose.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch_instances: Vec<Box<str>>,
}

/// One breaching instance of a batch incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub instance: Box<str>,
    /// The rule it breached first.
    pub rule: Box<str>,
    /// The per-rule incident behind the membership (kept by the engine,
    /// never journaled on its own).
    pub incident: Box<str>,
    pub severity: Severity,
    /// When it joined the batch incident.
    pub joined: Ts,
    /// Its rules' windows are clear again.
    #[serde(default)]
    pub recovered: bool,
}

impl BatchInfo {
    /// The breaching instances' names, sorted (a breach of the batch as a
    /// whole, from a rule grouped by batch, names none).
    pub fn instances(&self) -> Vec<&str> {
        self.members
            .iter()
            .map(|m| &*m.instance)
            .filter(|i| !i.is_empty())
            .collect()
    }

    /// Members still breaching.
    pub fn breaching(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| !m.recovered)
    }

    /// What rolling back "the breaching instances" means: the named
    /// breaching members, and every instance of the batch when the batch
    /// breached as a whole (a rule grouped by batch). Sorted.
    pub fn breaching_targets(&self) -> Vec<String> {
        let mut out: std::collections::BTreeSet<String> = self
            .breaching()
            .filter(|m| !m.instance.is_empty())
            .map(|m| m.instance.to_string())
            .collect();
        if self.breaching().any(|m| m.instance.is_empty()) {
            out.extend(self.batch_instances.iter().map(|i| i.to_string()));
        }
        out.into_iter().collect()
    }

    /// "shop-web batch 2".
    pub fn name(&self) -> String {
        format!("{} batch {}", self.service, self.batch)
    }
}

/// A decision's evidence (see [`EvidenceSeries`]). Not part of what a
/// decision is: two decisions equal in every other field are the same
/// decision whatever evidence they carry (the journal keeps evidence apart
/// and does not hand it back with each decision).
#[derive(Debug, Clone, Default)]
pub struct Evidence(pub Option<Arc<EvidenceSeries>>);

/// The window's values around a decision: the window just before the
/// condition first held, then each reading since.
#[derive(Debug, Clone, PartialEq)]
pub struct EvidenceSeries {
    /// The first breaching reading (later points are readings; earlier
    /// ones the window's buckets before it).
    pub breach_from: Ts,
    /// (time, value), oldest first.
    pub points: Vec<(Ts, f64)>,
    /// An alert's annotations (name, text), as it fired: the summary,
    /// description and runbook a person reads first. Bounded.
    pub annotations: Vec<(String, String)>,
    /// For an alert from Prometheus: where its chart comes from (the points
    /// are then Prometheus' values of the alert's expression).
    pub chart: Option<ChartSource>,
}

/// Where an alert incident's chart comes from, and how fetching it went.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct ChartSource {
    /// The alert's `generatorURL`, as it carried it.
    pub generator_url: String,
    /// The expression asked of Prometheus (`None`: not asked yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The constant the alert's expression compares against, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Why there are no points (shown where the chart would be).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PartialEq for Evidence {
    fn eq(&self, _: &Evidence) -> bool {
        true
    }
}

impl Decision {
    /// The key the engine gives an incident's `seq`th decision.
    pub fn engine_key(incident: &IncidentId, seq: u32, action: Action) -> String {
        format!("{incident}/{seq}/{action}")
    }

    /// Whether this decision was not taken by the engine but released from
    /// one it took: the rollback a human approved, or one an approval's
    /// timeout released. Such decisions are printed when they are released.
    pub fn is_derived(&self) -> bool {
        self.incident
            .as_ref()
            .is_some_and(|i| self.key != Decision::engine_key(i, self.seq, self.action))
    }

    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| &**v)
    }
}

struct LabelsJson<'a>(&'a [(Box<str>, Box<str>)]);

impl Serialize for LabelsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(&**k, &**v)?;
        }
        m.end()
    }
}

/// Finite numbers only: JSON has no NaN.
fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}

impl Serialize for Decision {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Decision", 18)?;
        st.serialize_field("at", &self.at)?;
        st.serialize_field("action", &self.action)?;
        st.serialize_field("tier", &self.tier)?;
        st.serialize_field("severity", &self.severity)?;
        st.serialize_field("rule", &*self.rule)?;
        st.serialize_field("incident", &self.incident)?;
        st.serialize_field("labels", &LabelsJson(&self.labels))?;
        if let Some(v) = finite(self.value) {
            st.serialize_field("value", &v)?;
        }
        if let Some(v) = finite(self.threshold) {
            st.serialize_field("threshold", &v)?;
        }
        if let Some(v) = finite(self.baseline) {
            st.serialize_field("baseline", &v)?;
        }
        if let Some(fp) = &self.fingerprint {
            st.serialize_field("fingerprint", &**fp)?;
        }
        if let Some(from) = &self.escalated_from {
            st.serialize_field("escalated_from", from)?;
        }
        // A batch done's roster (for the sample check) is no incident's.
        if let Some(b) = self.batch.as_ref().filter(|_| self.incident.is_some()) {
            st.serialize_field("instances", &b.instances())?;
            if !b.about.is_empty() {
                st.serialize_field("about", &b.about)?;
            }
            if !b.outside.is_empty() {
                st.serialize_field("outside", &b.outside)?;
            }
            if b.failed {
                st.serialize_field("batch_failed", &true)?;
            }
        }
        st.serialize_field("message", &self.message)?;
        st.serialize_field("key", &self.key)?;
        st.end()
    }
}

/// Which actions share a pool of slots. Executors (rollback, pause, traffic
/// switches) never
/// wait behind messages: they are claimed first, on a journal connection
/// of their own, into slots messages cannot take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Executors,
    Messages,
}

impl Lane {
    pub const ALL: [Lane; 2] = [Lane::Executors, Lane::Messages];

    pub fn of(a: Action) -> Lane {
        match a {
            Action::Rollback
            | Action::PauseRollout
            | Action::SwitchTraffic
            | Action::RestoreTraffic => Lane::Executors,
            Action::RequestApproval | Action::Page | Action::Notify | Action::Resolve => {
                Lane::Messages
            }
        }
    }

    pub fn actions(self) -> Vec<Action> {
        Action::ALL
            .into_iter()
            .filter(|a| Lane::of(*a) == self)
            .collect()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Executors => "executors",
            Lane::Messages => "messages",
        }
    }
}
