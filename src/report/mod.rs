//! The incident review draft (`ripcord report`), from the journal alone.
//!
//! The plan ends every incident with a review: a timeline to the minute
//! (upgrade start, fault, rollback done, business recovered), root cause
//! and improvements. [`Review::build`] gathers the machine's part: the
//! moments the journal recorded (progress, the first anomalous reading,
//! the breach, each decision, the approval and who gave it how, paging and
//! acknowledgement, the rollback's start and end, verification, recovery),
//! the durations between them and the plan's budgets, met or missed. The
//! chart's series is the evidence the decisions carried. Rendering is in
//! [`markdown`] and [`html`]; root cause and improvements are left blank
//! for the humans.

pub mod budget;
pub mod html;
pub mod list;
pub mod markdown;
pub mod prometheus;
pub mod promql;

use serde::Serialize;

pub use budget::Budgets;

use crate::decision::{Action, Tier};
use crate::journal::{
    ActionRow, ActionState, ApprovalRow, IncidentRow, JournalError, Reads, TimelineEntry,
};
use crate::time::{Dur, Ts};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("no incident {0} in the journal")]
    NoIncident(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// A drill's review says so at the top, with how it was run.
#[derive(Debug, Clone, Serialize)]
pub struct DrillInfo {
    pub scenario: String,
    /// Event time ran this many times faster than the wall.
    pub speed: f64,
    /// What the drill changed for its run (phones muted, stand-ins).
    pub notes: Vec<String>,
}

/// One moment of the review's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Moment {
    pub at: Ts,
    pub what: String,
}

/// What a budget came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Met,
    Missed,
    /// Still running and within its limit.
    Open,
    /// Not part of this incident (e.g. no page, no approval).
    NotApplicable,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "MISSED",
            Verdict::Open => "open",
            Verdict::NotApplicable => "n/a",
        }
    }
}

/// One of the plan's budgets against this incident.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetCheck {
    /// The plan's words: "rollback started within 30 min of the fault".
    pub name: String,
    pub limit: Dur,
    pub measured: Option<Dur>,
    pub verdict: Verdict,
}

/// A duration between two moments.
#[derive(Debug, Clone, Serialize)]
pub struct Span {
    pub name: &'static str,
    pub from: &'static str,
    pub to: &'static str,
    pub took: Option<Dur>,
}

/// The machine-timestamped moments the review is built on.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Marks {
    pub upgrade_started: Option<Ts>,
    pub batch_started: Option<(Ts, Option<String>)>,
    /// The first reading past the threshold (the breach's evidence), or
    /// the breach itself when there is no evidence (alerts).
    pub fault: Option<Ts>,
    /// The incident opened: the condition held for its `for`.
    pub breach: Option<Ts>,
    /// The first action started.
    pub first_action: Option<Ts>,
    pub approval_requested: Option<Ts>,
    pub approved: Option<Ts>,
    pub oncall_reached: Option<Ts>,
    pub acked: Option<Ts>,
    pub rollback_started: Option<Ts>,
    pub rollback_done: Option<Ts>,
    pub verified: Option<Ts>,
    pub recovered: Option<Ts>,
}

/// The metric around the incident, for the chart.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Chart {
    pub metric: String,
    pub series: Vec<(Ts, f64)>,
    pub threshold: Option<f64>,
    pub baseline: Option<f64>,
    /// The window's value when the incident opened.
    pub opening_value: Option<f64>,
    /// Decisions on the time axis: (time, action).
    pub decisions: Vec<(Ts, Action)>,
    /// For an alert: where the series comes from (Prometheus' values of
    /// the alert's expression), and why there is none if so.
    pub source: Option<crate::decision::ChartSource>,
}

impl Chart {
    /// Why there is nothing to draw, in words for the page.
    pub fn why_empty(&self) -> String {
        match &self.source {
            None => "No window readings were recorded for this incident (an alert without \
                     Prometheus' generatorURL): nothing to draw."
                .into(),
            Some(s) => match (&s.error, &s.query) {
                (Some(e), _) => format!("No chart from Prometheus: {e}."),
                (None, Some(q)) => format!("Prometheus had no points for {q} around the incident."),
                (None, None) => "No chart yet: the alert's expression has not been asked of \
                                 Prometheus (ripcord asks when prometheus.url is configured)."
                    .into(),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Review {
    pub incident: IncidentRow,
    pub drill: Option<DrillInfo>,
    pub marks: Marks,
    pub timeline: Vec<Moment>,
    pub spans: Vec<Span>,
    pub budgets: Vec<BudgetCheck>,
    pub chart: Chart,
    /// The alert's annotations (summary, description, runbook…), if any.
    pub annotations: Vec<(String, String)>,
    pub approval: Option<ApprovalRow>,
    /// The journal's own lines for the incident, as recorded.
    pub journal: Vec<TimelineEntry>,
    /// When the review was drawn up.
    pub drawn_at: Ts,
}

/// The timeline line a delivered paging step leaves (the scheduler's
/// words: `page step N of M: sent via …`).
fn is_delivered_page(t: &TimelineEntry) -> bool {
    t.kind == "page" && t.message.starts_with("page step ") && t.message.contains(": sent via ")
}

fn is_ack(t: &TimelineEntry) -> bool {
    t.kind == "page" && t.message.starts_with("paging stopped: acked")
}

/// The first rollback that ran (engine-decided, or released by a verdict).
fn rollback_of(actions: &[ActionRow]) -> Option<&ActionRow> {
    actions
        .iter()
        .filter(|a| a.action == Action::Rollback && a.started_at.is_some())
        .min_by_key(|a| a.started_at)
}

impl Review {
    /// Gathers the review of `incident` as the journal holds it at `now`.
    pub fn build(
        j: &dyn Reads,
        incident: &str,
        budgets: &Budgets,
        now: Ts,
    ) -> Result<Review, ReportError> {
        let inc = j
            .incident(incident)?
            .ok_or_else(|| ReportError::NoIncident(incident.to_owned()))?;
        let actions = j.actions_of(incident)?;
        let journal = j.timeline(incident)?;
        let approval = j.approval(incident)?;
        let evidence = j.evidence(incident)?;
        let service = inc
            .labels
            .get("service")
            .and_then(|v| v.as_str())
            .map(str::to_owned);

        let mut m = Marks {
            breach: Some(inc.opened_at),
            recovered: inc.resolved_at,
            ..Marks::default()
        };
        // Upgrade progress before the breach: the run it belongs to starts
        // after the last `completed` / `failed` of an earlier one.
        if let Some(service) = &service {
            let since = inc.opened_at.saturating_sub(Dur::from_mins(7 * 24 * 60));
            let log = j.progress_log(service, since, inc.opened_at)?;
            let run_from = log.iter().rposition(|p| !p.open).map_or(0, |i| i + 1);
            let run = &log[run_from..];
            m.upgrade_started = run.first().map(|p| p.updated_at);
            m.batch_started = run
                .iter()
                .rev()
                .find(|p| p.stage == "batch_started")
                .map(|p| (p.updated_at, p.batch.clone()));
        }
        m.fault = Some(
            evidence
                .as_ref()
                .map_or(inc.opened_at, |e| e.breach_from.min(inc.opened_at)),
        );
        m.first_action = actions.iter().filter_map(|a| a.started_at).min();
        if let Some(a) = &approval {
            m.approval_requested = Some(a.requested_at);
            if a.state == "approved" {
                m.approved = a.decided_at;
            }
        }
        m.oncall_reached = journal.iter().find(|t| is_delivered_page(t)).map(|t| t.at);
        m.acked = journal.iter().find(|t| is_ack(t)).map(|t| t.at);
        if let Some(r) = rollback_of(&actions) {
            m.rollback_started = r.started_at;
            if r.state == ActionState::Done {
                m.rollback_done = r.finished_at;
            }
        }
        m.verified = journal
            .iter()
            .find(|t| {
                t.kind == "verify" && t.message.starts_with("verification after rollback passed")
            })
            .map(|t| t.at);

        let tier: Tier = inc.tier.parse().unwrap_or(Tier::Medium);
        let paged = actions.iter().any(|a| a.action == Action::Page) || m.oncall_reached.is_some();
        let rollback_expected = actions.iter().any(|a| {
            matches!(a.action, Action::Rollback | Action::RequestApproval)
                && !matches!(a.state, ActionState::Skipped)
        });
        let budgets = checks(
            &m,
            budgets,
            tier,
            paged,
            rollback_expected,
            approval.as_ref(),
            now,
        );
        let spans = spans(&m);
        let timeline = moments(&m, &inc, &actions, &journal, approval.as_ref());
        let opening = actions
            .iter()
            .map(|a| &a.decision)
            .filter(|d| !d.is_derived())
            .min_by_key(|d| (d.at, d.seq));
        let source = evidence.as_ref().and_then(|e| e.chart.clone());
        let chart = Chart {
            metric: source
                .as_ref()
                .and_then(|s| s.query.clone())
                .unwrap_or_else(|| inc.rule.clone()),
            series: evidence
                .as_ref()
                .map(|e| e.points.clone())
                .unwrap_or_default(),
            threshold: opening
                .and_then(|d| d.threshold)
                .or_else(|| source.as_ref().and_then(|s| s.threshold)),
            opening_value: opening.and_then(|d| d.value),
            baseline: opening.and_then(|d| d.baseline),
            decisions: {
                let mut seen = Vec::new();
                for a in &actions {
                    let d = &a.decision;
                    if !seen.contains(&(d.at, d.action)) {
                        seen.push((d.at, d.action));
                    }
                }
                seen
            },
            source,
        };
        Ok(Review {
            incident: inc,
            drill: None,
            marks: m,
            timeline,
            spans,
            budgets,
            chart,
            annotations: evidence.map(|e| e.annotations).unwrap_or_default(),
            approval,
            journal,
            drawn_at: now,
        })
    }

    /// `0.3 vs 0.05` (with `, baseline …` for baseline rules).
    pub fn value_vs_threshold(&self) -> Option<String> {
        let c = &self.chart;
        let v = c.opening_value?;
        let mut s = crate::engine::fmt_num(v);
        if let Some(t) = c.threshold {
            s.push_str(&format!(" vs {}", crate::engine::fmt_num(t)));
        }
        if let Some(b) = c.baseline {
            s.push_str(&format!(" (baseline {})", crate::engine::fmt_num(b)));
        }
        Some(s)
    }

    /// The budgets missed (a drill exits 1 naming them). A budget still
    /// open is not missed while the incident runs (its time has not run
    /// out), but a drill that ended with it open missed it.
    pub fn missed(&self) -> Vec<&BudgetCheck> {
        let ended = self.drill.is_some();
        self.budgets
            .iter()
            .filter(|b| b.verdict == Verdict::Missed || (ended && b.verdict == Verdict::Open))
            .collect()
    }

    /// The budgets whose time is still running (none once a drill ended).
    pub fn still_open(&self) -> Vec<&BudgetCheck> {
        if self.drill.is_some() {
            return Vec::new();
        }
        self.budgets
            .iter()
            .filter(|b| b.verdict == Verdict::Open)
            .collect()
    }
}

/// A duration as a review shows it: `850ms`, `4.2s`, `2m31s`.
pub fn human(d: Dur) -> String {
    let ms = d.millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        Dur((ms + 500) / 1000 * 1000).to_string()
    }
}

fn between(a: Option<Ts>, b: Option<Ts>) -> Option<Dur> {
    match (a, b) {
        (Some(a), Some(b)) if b >= a => Some(b.since(a)),
        _ => None,
    }
}

/// How long each step took.
fn spans(m: &Marks) -> Vec<Span> {
    vec![
        Span {
            name: "to detect",
            from: "first anomalous reading",
            to: "breach",
            took: between(m.fault, m.breach),
        },
        Span {
            name: "to decide",
            from: "breach",
            to: "first action started",
            took: between(m.breach, m.first_action),
        },
        Span {
            name: "to approve",
            from: "approval requested",
            to: "approved",
            took: between(m.approval_requested, m.approved),
        },
        Span {
            name: "to start the rollback",
            from: "first anomalous reading",
            to: "rollback started",
            took: between(m.fault, m.rollback_started),
        },
        Span {
            name: "to roll back",
            from: "rollback started",
            to: "rollback done",
            took: between(m.rollback_started, m.rollback_done),
        },
        Span {
            name: "to recover",
            from: "first anomalous reading",
            to: "recovered",
            took: between(m.fault, m.recovered),
        },
    ]
}

/// A budget from `from` to `to`: met if `to` came within `limit`; missed
/// if it came later, or has not come and `limit` is past; open otherwise.
fn check(
    name: String,
    limit: Dur,
    from: Option<Ts>,
    to: Option<Ts>,
    over: bool,
    now: Ts,
) -> BudgetCheck {
    let (measured, verdict) = match (from, to) {
        (Some(f), Some(t)) => {
            let d = t.since(f);
            (
                Some(d),
                if d <= limit {
                    Verdict::Met
                } else {
                    Verdict::Missed
                },
            )
        }
        (Some(f), None) => {
            let so_far = now.since(f);
            let verdict = if so_far > limit || over {
                Verdict::Missed
            } else {
                Verdict::Open
            };
            (None, verdict)
        }
        (None, _) => (None, Verdict::NotApplicable),
    };
    BudgetCheck {
        name,
        limit,
        measured,
        verdict,
    }
}

fn checks(
    m: &Marks,
    b: &Budgets,
    tier: Tier,
    paged: bool,
    rollback_expected: bool,
    approval: Option<&ApprovalRow>,
    now: Ts,
) -> Vec<BudgetCheck> {
    // Once the incident recovered, what never came is not coming.
    let over = m.recovered.is_some();
    let mut out = Vec::new();
    if rollback_expected {
        out.push(check(
            format!(
                "rollback started within {} of the fault",
                b.rollback_started
            ),
            b.rollback_started,
            m.fault,
            m.rollback_started,
            over,
            now,
        ));
    }
    if tier == Tier::Low && rollback_expected {
        out.push(check(
            format!(
                "low risk: rolled back within {} of the fault",
                b.low_rolled_back
            ),
            b.low_rolled_back,
            m.fault,
            m.rollback_done,
            over,
            now,
        ));
    }
    if approval.is_some_and(|a| a.state == "approved") {
        out.push(check(
            format!(
                "rollback started within {} of the approval",
                b.rollback_after_approval
            ),
            b.rollback_after_approval,
            m.approved,
            m.rollback_started,
            over,
            now,
        ));
    }
    if paged {
        out.push(check(
            format!("on-call reached within {} of the breach", b.oncall_reached),
            b.oncall_reached,
            m.breach,
            m.oncall_reached,
            over,
            now,
        ));
    }
    out.push(check(
        format!(
            "back to the pre-upgrade state within {} of the fault",
            b.recovered
        ),
        b.recovered,
        m.fault,
        m.recovered,
        false,
        now,
    ));
    out
}

/// The review's timeline: the marks, each decision and each verdict, in
/// time order.
fn moments(
    m: &Marks,
    inc: &IncidentRow,
    actions: &[ActionRow],
    journal: &[TimelineEntry],
    approval: Option<&ApprovalRow>,
) -> Vec<Moment> {
    let mut out = Vec::new();
    let mut add = |at: Option<Ts>, what: String| {
        if let Some(at) = at {
            out.push(Moment { at, what });
        }
    };
    add(m.upgrade_started, "upgrade started".into());
    if let Some((at, batch)) = &m.batch_started {
        add(
            Some(*at),
            match batch {
                Some(b) => format!("batch {b} started"),
                None => "batch started".into(),
            },
        );
    }
    if m.fault != m.breach {
        add(m.fault, format!("first anomalous reading ({})", inc.rule));
    }
    add(
        m.breach,
        format!(
            "breach: incident opened ({}, {} tier, {})",
            inc.rule, inc.tier, inc.severity
        ),
    );
    for a in actions {
        let d = &a.decision;
        if !d.is_derived() {
            add(Some(d.at), format!("decided: {}", d.action));
        }
    }
    if let Some(a) = approval {
        add(Some(a.requested_at), "approval requested".into());
        if let (Some(at), Some(by)) = (a.decided_at, &a.decided_by) {
            let via = a
                .decided_via
                .map(|v| format!(" via {}", v.as_str()))
                .unwrap_or_default();
            add(Some(at), format!("{} by {by}{via}", a.state));
        }
    }
    for t in journal.iter().filter(|t| t.kind == "page") {
        add(Some(t.at), t.message.clone());
    }
    for a in actions.iter().filter(|a| {
        matches!(
            a.action,
            Action::Rollback
                | Action::PauseRollout
                | Action::SwitchTraffic
                | Action::RestoreTraffic
        )
    }) {
        add(a.started_at, format!("{} started", a.action));
        if a.decision.action == a.action && a.state.is_final() {
            add(a.finished_at, format!("{} {}", a.action, a.state.as_str()));
        }
    }
    for t in journal.iter().filter(|t| t.kind == "verify") {
        add(Some(t.at), t.message.clone());
    }
    add(m.recovered, "recovered: incident resolved".into());
    out.sort_by_key(|x| x.at);
    out
}

#[cfg(test)]
mod tests;
