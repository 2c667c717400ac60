//! Rollout gates: may the next batch of a service's upgrade start?
//!
//! Orchestrators ask before each step (Argo Rollouts' `web` metric
//! provider, Flagger's webhooks, scripts through `ripcord gate`). The
//! answer comes from what the journal holds, so any replica gives the same
//! one: the service's last reported progress, its open incidents and their
//! approvals, a paused rollout, the batch's request-success tallies (and
//! those of the instances not yet upgraded, as a same-age baseline) and
//! humans' promotions. [`evaluate`] is pure: the HTTP handlers gather the
//! facts and render its [`Answer`].
//!
//! - **nogo**: a functional or severe incident is open for the service (one
//!   on a medium-tier service waiting for a human's approval holds
//!   instead), the upgrade reported `failed`, the batch's success fell below
//!   the threshold or behind the baseline.
//! - **go**: the batch soaked its tier's `min_soak` since `batch_done`, with
//!   at least `min_samples` success samples over that span at or above the
//!   threshold, nothing open; or a human promoted this batch (any revision
//!   of it, or the one the promotion names: orchestrators name revisions by
//!   hashes nobody types, so naming the batch is enough).
//! - **hold**: anything else, with the reasons; always while a configured
//!   freeze window is on for the service (a promotion does not lift it).

pub mod http;
pub mod tally;

use serde::Serialize;

use crate::config::Errors;
use crate::config::yaml::MapReader;
use crate::decision::Tier;
use crate::journal::{IncidentRow, RolloutRow, UpgradeRow};
pub use crate::journal::{Promotion, blocks, waits_for_approval};
use crate::time::{Dur, Ts};

pub use tally::{Tally, TallyRow};

/// Per-tier values: index with [`PerTier::get`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerTier<T> {
    pub low: T,
    pub medium: T,
    pub high: T,
}

impl<T: Copy> PerTier<T> {
    pub fn get(&self, t: Tier) -> T {
        match t {
            Tier::Low => self.low,
            Tier::Medium => self.medium,
            Tier::High => self.high,
        }
    }

    fn set(&mut self, t: Tier, v: T) {
        match t {
            Tier::Low => self.low = v,
            Tier::Medium => self.medium = v,
            Tier::High => self.high = v,
        }
    }
}

/// The `gates:` config section.
#[derive(Debug, Clone, PartialEq)]
pub struct GateConfig {
    /// How long a batch soaks after `batch_done` before the next may start
    /// (the plan: high 1 h between stages; medium 30 min; low 10 min).
    pub min_soak: PerTier<Dur>,
    /// Success samples needed over the soak before a go.
    pub min_samples: PerTier<u64>,
    /// Whether a go also needs a human to promote the batch.
    pub require_approval: PerTier<bool>,
    /// The plan: per batch, request success must stay at or above 99.9%.
    pub success_threshold: f64,
    /// The metric carrying request success ratios (0..1), labelled by
    /// `service` and, on upgraded instances, `batch`.
    pub success_metric: String,
    /// How far (absolute ratio) the batch may trail the instances not yet
    /// upgraded over the same span before it is a nogo.
    pub baseline_tolerance: f64,
    /// How long tallies are kept.
    pub retention: Dur,
    /// Whether a finished batch of the tier is sample-checked (the
    /// top-level `sample_check:` with verification stages configured):
    /// the gate then waits for the check.
    pub sample_check: PerTier<bool>,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            min_soak: PerTier {
                low: Dur::from_mins(10),
                medium: Dur::from_mins(30),
                high: Dur::from_mins(60),
            },
            min_samples: PerTier {
                low: 10,
                medium: 10,
                high: 10,
            },
            require_approval: PerTier {
                low: false,
                medium: false,
                high: false,
            },
            success_threshold: 0.999,
            success_metric: "request_success_ratio".into(),
            baseline_tolerance: 0.0005,
            retention: Dur::from_mins(2 * 24 * 60),
            sample_check: PerTier {
                low: false,
                medium: false,
                high: false,
            },
        }
    }
}

/// Reads `gates:`: `min_soak`, `min_samples`, `require_approval` (each one
/// value for every tier, or a map by tier), `success_threshold` (`99.9%` or
/// `0.999`), `success_metric`, `baseline_tolerance`, `retention`.
pub fn read_config(mut m: MapReader<'_>, cfg: &mut GateConfig, errs: &mut Errors) {
    let day = Dur::from_mins(24 * 60);
    per_tier(&mut m, "min_soak", &mut cfg.min_soak, errs, |m, k, e| {
        m.dur(k, Dur::ZERO..=day, e)
    });
    per_tier(
        &mut m,
        "min_samples",
        &mut cfg.min_samples,
        errs,
        |m, k, e| m.int(k, 0..=1_000_000, e).map(|n| n as u64),
    );
    per_tier(
        &mut m,
        "require_approval",
        &mut cfg.require_approval,
        errs,
        |m, k, e| m.bool(k, e),
    );
    if let Some(r) = ratio(&mut m, "success_threshold", errs) {
        cfg.success_threshold = r;
    }
    if let Some(s) = m.str("success_metric", errs) {
        if is_metric_name(s) {
            cfg.success_metric = s.to_owned();
        } else {
            let n = m.node_of("success_metric").unwrap_or(m.node());
            m.err(
                errs,
                n,
                "success_metric",
                format!("`{s}` is not a metric name"),
            );
        }
    }
    if let Some(r) = ratio(&mut m, "baseline_tolerance", errs) {
        cfg.baseline_tolerance = r;
    }
    if let Some(d) = m.dur(
        "retention",
        Dur::from_mins(60)..=Dur::from_mins(366 * 24 * 60),
        errs,
    ) {
        cfg.retention = d;
    }
    m.finish(errs);
}

/// Prometheus' metric names: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// One value for every tier (`min_soak: 1h`) or a map by tier
/// (`min_soak: {high: 2h, low: 5m}`; tiers not named keep their default).
fn per_tier<T: Copy>(
    m: &mut MapReader<'_>,
    key: &str,
    out: &mut PerTier<T>,
    errs: &mut Errors,
    read: impl Fn(&mut MapReader<'_>, &str, &mut Errors) -> Option<T>,
) {
    let is_map = m
        .node_of(key)
        .is_some_and(|n| matches!(n.value, crate::config::yaml::Value::Map(_)));
    if is_map {
        if let Some(mut tiers) = m.map(key, errs) {
            for t in Tier::ALL {
                if let Some(v) = read(&mut tiers, t.as_str(), errs) {
                    out.set(t, v);
                }
            }
            tiers.finish(errs);
        }
    } else if let Some(v) = read(m, key, errs) {
        for t in Tier::ALL {
            out.set(t, v);
        }
    }
}

/// A ratio within 0..=1, written `99.9%` or `0.999`.
fn ratio(m: &mut MapReader<'_>, key: &str, errs: &mut Errors) -> Option<f64> {
    let n = m.get(key)?;
    let v = match &n.value {
        crate::config::yaml::Value::Str(s) => s
            .strip_suffix('%')
            .and_then(|p| format!("{}e-2", p.trim()).parse::<f64>().ok()),
        crate::config::yaml::Value::Int(i) => Some(*i as f64),
        crate::config::yaml::Value::Float(f) => Some(*f),
        _ => None,
    };
    match v {
        Some(r) if (0.0..=1.0).contains(&r) => Some(r),
        _ => {
            m.err(
                errs,
                n,
                key,
                format!(
                    "expected a ratio such as 99.9% or 0.999, got {}",
                    n.describe()
                ),
            );
            None
        }
    }
}

/// go, hold or nogo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Go,
    Hold,
    Nogo,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Go => "go",
            Decision::Hold => "hold",
            Decision::Nogo => "nogo",
        }
    }
}

/// What the caller asks about.
#[derive(Debug, Clone, Default)]
pub struct Question {
    pub service: String,
    /// The batch just done (default: the last one reported).
    pub batch: Option<String>,
    /// The revision being rolled out (Flagger's `checksum`, an Argo arg):
    /// only promotions of the same revision count.
    pub revision: Option<String>,
}

/// Open incidents a gate answer lists (the most severe; the rest counted).
pub const MAX_INCIDENTS: usize = 20;

/// What the journal holds about the service.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub tier: Option<Tier>,
    pub upgrade: Option<UpgradeRow>,
    pub rollout: Option<RolloutRow>,
    /// Open incidents of the service: the most severe few, and any that
    /// blocks the gate.
    pub incidents: Vec<IncidentRow>,
    /// How many incidents of the service are open.
    pub incidents_open: u64,
    pub promotions: Vec<Promotion>,
    /// Success tallies of the service, oldest first.
    pub tally: Vec<TallyRow>,
    /// Freeze windows on now for the service, described.
    pub freezes: Vec<String>,
    /// The newest sample check of the batch asked about, by instance.
    pub sample: Vec<crate::journal::SampleRow>,
}

/// An open incident as the gate reports it.
#[derive(Debug, Clone, Serialize)]
pub struct GateIncident {
    pub id: String,
    pub rule: String,
    pub tier: String,
    pub severity: String,
    pub opened_at: Ts,
    /// What it waits for, e.g. `request_approval:awaiting_approval`.
    pub attention: Vec<String>,
}

/// Success samples over a span.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Success {
    pub samples: u64,
    /// Mean sampled ratio; `None` without samples.
    pub ratio: Option<f64>,
    pub lowest: Option<f64>,
}

/// The gate's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub service: String,
    pub batch: Option<String>,
    pub revision: Option<String>,
    pub tier: Tier,
    pub decision: Decision,
    pub reasons: Vec<String>,
    /// The most severe open incidents (at most [`MAX_INCIDENTS`], and any
    /// that blocks); `incidents_open` counts them all.
    pub incidents: Vec<GateIncident>,
    pub incidents_open: u64,
    /// Soak still needed (0 when soaked).
    pub soak_remaining_s: u64,
    pub min_soak_s: u64,
    /// The last reported stage (`batch_done`, …), if any.
    pub stage: Option<String>,
    /// When the span success is judged on begins.
    pub window_start: Option<Ts>,
    pub success: Success,
    pub success_threshold: f64,
    pub min_samples: u64,
    /// The instances not yet upgraded, over the same span.
    pub baseline: Option<Success>,
    pub paused: bool,
    pub promoted_by: Option<String>,
    /// The batch's sample check, by instance (empty: none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sample_check: Vec<crate::journal::SampleRow>,
    pub evaluated_at: Ts,
    /// False when ripcord knows nothing of the service (no tier, progress,
    /// rollout, incident, promotion or sample): most likely a misspelled
    /// name, which no amount of waiting will turn into an answer.
    pub known_service: bool,
}

fn pct(r: f64) -> String {
    format!("{:.3}%", r * 100.0)
}

fn secs(d: Dur) -> u64 {
    (d.millis().max(0) as u64).div_ceil(1000)
}

/// Sums the tallies of `batch` within `[from, now]`.
fn success_of(tally: &[TallyRow], batch: &str, from: Ts) -> Success {
    let (mut samples, mut sum, mut low) = (0u64, 0.0f64, f64::INFINITY);
    for r in tally
        .iter()
        .filter(|r| r.batch == batch && r.minute >= from)
    {
        samples += r.samples;
        sum += r.sum;
        low = low.min(r.low);
    }
    Success {
        samples,
        ratio: (samples > 0).then(|| sum / samples as f64),
        lowest: (samples > 0).then_some(low),
    }
}

/// Judges the question on the facts at `now`.
pub fn evaluate(
    q: &Question,
    facts: &Facts,
    cfg: &GateConfig,
    default_tier: Tier,
    now: Ts,
) -> Answer {
    let tier = facts
        .tier
        .or_else(|| facts.tally.last().map(|r| r.tier))
        .unwrap_or(default_tier);
    let min_soak = cfg.min_soak.get(tier);
    let min_samples = cfg.min_samples.get(tier);
    let mut nogo: Vec<String> = Vec::new();
    let mut hold: Vec<String> = Vec::new();
    // Holds a human promotion may lift (time and data), apart from the
    // ones only events can lift (an incident, a pause, a running batch).
    let mut soft: Vec<String> = Vec::new();

    let upgrade = facts.upgrade.as_ref();
    let current = upgrade.and_then(|u| u.batch.clone());
    let batch = q.batch.clone().or_else(|| current.clone());

    // Incidents first: they decide whatever the soak says.
    let mut incidents = Vec::new();
    for i in &facts.incidents {
        incidents.push(GateIncident {
            id: i.id.clone(),
            rule: i.rule.clone(),
            tier: i.tier.clone(),
            severity: i.severity.clone(),
            opened_at: i.opened_at,
            attention: i.attention.clone(),
        });
        if i.severity == "minor" {
            continue;
        }
        // A batch incident whose fault shows outside the batch too (not
        // upgraded instances breaching the same rule): rolling the batch
        // back may not cure it, so a human decides; the orchestrator must
        // neither go on nor abort.
        if let Some(b) = i.batch.as_ref().filter(|b| !b.outside.is_empty()) {
            hold.push(format!(
                "incident {} ({}, {}): also breaching on {} of {} instances not upgraded: \
                 the fault may not be the upgrade; a human decides",
                i.id,
                b.name(),
                i.severity,
                b.outside.len(),
                b.outside_seen.max(b.outside.len() as u32)
            ));
            continue;
        }
        // Asked, or about to be asked: a human decides whether to roll back.
        if !blocks(i) {
            hold.push(format!(
                "incident {} ({}, {}) waits for a human to approve its rollback",
                i.id, i.rule, i.severity
            ));
        } else {
            nogo.push(format!(
                "incident {} ({}, {} on a {}-tier service) is open",
                i.id, i.rule, i.severity, i.tier
            ));
        }
    }
    // A freeze is a hold no promotion lifts: nothing is released during it.
    for f in &facts.freezes {
        hold.push(format!(
            "freeze window {f} is on: no next batch until it ends"
        ));
    }
    if let Some(r) = facts.rollout.as_ref().filter(|r| r.paused) {
        hold.push(format!(
            "the rollout was paused by {}{}; resume it to go on",
            r.changed_by,
            r.incident
                .as_deref()
                .map(|i| format!(" for incident {i}"))
                .unwrap_or_default()
        ));
    }

    // The batch and its soak.
    let mut soak_from: Option<Ts> = None;
    match upgrade {
        // Judged on its samples alone; said below if that holds it.
        None => {}
        Some(u) if u.stage == "failed" => {
            nogo.push(format!("the upgrade reported failed at {}", describe(u)))
        }
        Some(u) if q.batch.is_some() && q.batch != u.batch => hold.push(format!(
            "batch {} is not the last one reported ({})",
            q.batch.as_deref().unwrap_or("?"),
            describe(u)
        )),
        Some(u) if u.stage == "batch_started" => {
            hold.push(format!("{} is still being upgraded", describe(u)))
        }
        Some(u) => {
            soak_from = Some(u.updated_at);
            sample_verdict(
                facts,
                u,
                cfg.sample_check.get(tier),
                now,
                &mut nogo,
                &mut hold,
            );
        }
    }
    // Without a batch_done, the span is the last min_soak of samples and
    // counts as soaked once samples cover it.
    let soaked_since = soak_from.or_else(|| {
        facts
            .tally
            .iter()
            .filter(|r| r.batch.as_str() == batch.as_deref().unwrap_or(""))
            .map(|r| r.minute)
            .min()
    });
    let soak_remaining = match soaked_since {
        Some(t) => min_soak.millis() - now.since(t).millis(),
        None => min_soak.millis(),
    }
    .max(0);
    if soak_remaining > 0 && (soak_from.is_some() || upgrade.is_none()) {
        soft.push(format!(
            "soaking: {} left of the {}-tier {} soak",
            Dur((soak_remaining + 999) / 1000 * 1000),
            tier,
            min_soak
        ));
    }

    // Success over the trailing soak span (never before batch_done), so a
    // dip that recovered ages out after one soak.
    let window_start = {
        let trailing = now.saturating_sub(min_soak);
        Some(soak_from.map_or(trailing, |t| t.max(trailing)))
            .map(|t| Ts(t.millis() - t.millis().rem_euclid(60_000)))
    };
    let from = window_start.unwrap_or(Ts::MIN);
    let own = batch.as_deref().unwrap_or("");
    let mut success = success_of(&facts.tally, own, from);
    let labelled = facts.tally.iter().any(|r| !r.batch.is_empty());
    if success.samples == 0 && !own.is_empty() && !labelled {
        // Nothing carries a batch label: the service's samples are all
        // there is.
        success = success_of(&facts.tally, "", from);
    }
    let baseline = (!own.is_empty() && labelled)
        .then(|| success_of(&facts.tally, "", from))
        .filter(|b| b.samples > 0);
    match success.ratio {
        Some(r) if r < cfg.success_threshold => nogo.push(format!(
            "request success {} over {} samples is below {}",
            pct(r),
            success.samples,
            pct(cfg.success_threshold)
        )),
        _ => {}
    }
    if success.samples < min_samples {
        soft.push(format!(
            "not enough data: {} of {} success samples ({} of batch {})",
            success.samples,
            min_samples,
            cfg.success_metric,
            if own.is_empty() { "-" } else { own }
        ));
    }
    if let (Some(b), Some(r)) = (&baseline, success.ratio) {
        if let Some(br) = b.ratio.filter(|_| b.samples >= min_samples) {
            if r < br - cfg.baseline_tolerance {
                nogo.push(format!(
                    "batch {own} success {} trails the instances not yet upgraded ({}) by more than {}",
                    pct(r),
                    pct(br),
                    pct(cfg.baseline_tolerance)
                ));
            }
        }
    }

    // Humans: a promotion of this batch (of any revision, or of the one
    // asked about) lifts the soft holds only; one for another revision
    // never counts.
    let done_at = soak_from.unwrap_or(Ts::MIN);
    let this_batch = |p: &&Promotion| p.batch == batch && p.at >= done_at;
    let promotion = facts
        .promotions
        .iter()
        .rev()
        .filter(this_batch)
        .find(|p| p.revision.is_none() || p.revision == q.revision);
    if promotion.is_some() {
        soft.clear();
    } else {
        if cfg.require_approval.get(tier) {
            hold.push(format!(
                "{}-tier batches need a human to promote them{}",
                tier,
                q.revision
                    .as_deref()
                    .map(|r| format!(" (revision {r})"))
                    .unwrap_or_default()
            ));
        }
        let other = facts
            .promotions
            .iter()
            .rev()
            .filter(this_batch)
            .find_map(|p| {
                Some((
                    p,
                    p.revision
                        .as_deref()
                        .filter(|r| Some(*r) != q.revision.as_deref())?,
                ))
            });
        if let Some((p, promoted)) = other {
            hold.push(match q.revision.as_deref() {
                Some(asked) => format!(
                    "the promotion by {} was for revision {promoted}, not {asked}",
                    p.by
                ),
                None => format!(
                    "the promotion by {} was for revision {promoted}, and this question names no revision",
                    p.by
                ),
            });
        }
    }
    if upgrade.is_none() && !soft.is_empty() {
        soft.insert(
            0,
            format!(
                "no progress reported for {}; judged on the last {} of samples",
                q.service, min_soak
            ),
        );
    }

    let known_service = facts.tier.is_some()
        || upgrade.is_some()
        || facts.rollout.is_some()
        || !facts.incidents.is_empty()
        || !facts.promotions.is_empty()
        || !facts.tally.is_empty();
    if !known_service {
        nogo.clear();
        soft.clear();
        hold = vec![format!(
            "ripcord has never seen a service named `{}`: no progress, sample, incident or \
             promotion of it, and no tier configured for it (tiers.services); check the name",
            q.service
        )];
    }
    let decision = if !nogo.is_empty() {
        Decision::Nogo
    } else if !hold.is_empty() || !soft.is_empty() {
        Decision::Hold
    } else {
        Decision::Go
    };
    let incidents_open = facts.incidents_open.max(incidents.len() as u64);
    let mut reasons = nogo;
    if incidents_open > incidents.len() as u64 {
        reasons.push(format!(
            "and {} more open incidents of {} (the most severe are listed)",
            incidents_open - incidents.len() as u64,
            q.service
        ));
    }
    reasons.extend(hold);
    reasons.extend(soft);
    if decision == Decision::Go {
        reasons.push(match promotion {
            Some(p) => format!(
                "promoted by {} at {}",
                p.by,
                crate::time::clock_words(now, p.at)
            ),
            None => format!(
                "soaked {} with request success {} over {} samples, nothing open",
                min_soak,
                success.ratio.map(pct).unwrap_or_else(|| "-".into()),
                success.samples
            ),
        });
    }
    Answer {
        service: q.service.clone(),
        batch,
        revision: q.revision.clone(),
        tier,
        decision,
        reasons,
        incidents,
        incidents_open,
        soak_remaining_s: secs(Dur(soak_remaining)),
        min_soak_s: secs(min_soak),
        stage: upgrade.map(|u| u.stage.clone()),
        window_start,
        success,
        success_threshold: cfg.success_threshold,
        min_samples,
        baseline,
        paused: facts.rollout.as_ref().is_some_and(|r| r.paused),
        promoted_by: promotion.map(|p| p.by.clone()),
        sample_check: facts.sample.clone(),
        evaluated_at: now,
        known_service,
    }
}

/// How long after a batch done a sampled tier's gate waits for its
/// sample check to start (it starts within seconds; a batch whose
/// instances nobody knows has nothing to sample).
const SAMPLE_START_GRACE: Dur = Dur::from_mins(2);

/// The batch's sample check: nogo when an instance failed (no promotion
/// lifts it), hold while any runs, nothing once all passed.
fn sample_verdict(
    facts: &Facts,
    u: &UpgradeRow,
    sampled: bool,
    now: Ts,
    nogo: &mut Vec<String>,
    hold: &mut Vec<String>,
) {
    use crate::journal::SampleState;
    let batch = u.batch.as_deref().unwrap_or("?");
    let rows: Vec<_> = facts
        .sample
        .iter()
        .filter(|r| r.done_at >= u.updated_at)
        .collect();
    if rows.is_empty() {
        if sampled && u.stage == "batch_done" && now.since(u.updated_at) < SAMPLE_START_GRACE {
            hold.push(format!("sample check of batch {batch} not started yet"));
        }
        return;
    }
    let passed = rows
        .iter()
        .filter(|r| r.state == SampleState::Passed)
        .count();
    let failed: Vec<_> = rows
        .iter()
        .filter(|r| r.state == SampleState::Failed)
        .collect();
    for r in &failed {
        nogo.push(format!(
            "sample check of batch {batch} failed on {}: {}",
            r.instance, r.detail
        ));
    }
    if failed.is_empty() && passed < rows.len() {
        hold.push(format!(
            "sample check of batch {batch}: {passed} of {} passed",
            rows.len()
        ));
    }
}

fn describe(u: &UpgradeRow) -> String {
    match &u.batch {
        Some(b) => format!("batch {b} ({})", u.stage),
        None => format!("the rollout ({})", u.stage),
    }
}

#[cfg(test)]
mod tests;
