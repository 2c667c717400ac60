//! Runs the test cases rule files carry (`ripcord test`).
//!
//! Each case feeds its events through a fresh engine holding only its own
//! file's rules, with the configured tier policy, and compares the decisions
//! with its `expect` list: same count, same order, and every field an
//! expectation names must match (labels: those named must be present).

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::decision::{Action, Decision, Tier};
use crate::engine::{Engine, EngineConfig};
use crate::event::Event;
use crate::rule::load::{Case, Expect, RuleFile};
use crate::rule::{RuleKind, RuleSet};

#[derive(Debug, Clone)]
pub struct CaseResult {
    pub file: String,
    pub line: u32,
    pub name: String,
    /// Empty when the case passed.
    pub failures: Vec<String>,
    /// (rule family, tier) pairs this case shows acting.
    pub fired: RuleTiers,
    /// (rule family, tier) pairs this case feeds samples to and shows
    /// staying quiet: the blip that must not act.
    pub quiet: RuleTiers,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs every case of `file`.
pub fn run_file(file: &RuleFile, cfg: &EngineConfig) -> Vec<CaseResult> {
    let rules = Arc::new(RuleSet::new(file.rules.clone()));
    let mut cfg = cfg.clone();
    // Events in a tier's file belong to that tier unless they say otherwise.
    if let Some(t) = file.tiers.single() {
        cfg.tiers.default = t;
    }
    file.cases
        .iter()
        .map(|case| {
            let mut r = CaseResult {
                file: file.path.display().to_string(),
                line: case.origin.line,
                name: case.name.clone(),
                failures: Vec::new(),
                fired: BTreeSet::new(),
                quiet: BTreeSet::new(),
            };
            match decisions_of(case, rules.clone(), &cfg) {
                Err(e) => r.failures.push(e),
                Ok(got) => {
                    r.failures = compare(case, &got);
                    if r.passed() {
                        (r.fired, r.quiet) = coverage(case, &rules, &cfg, &got);
                    }
                }
            }
            r
        })
        .collect()
}

/// (rule family, tier) pairs.
pub type RuleTiers = BTreeSet<(String, Tier)>;

/// What a passing case shows: the (rule family, tier) pairs it saw act,
/// and those it fed metric samples to that stayed quiet.
fn coverage(
    case: &Case,
    rules: &RuleSet,
    cfg: &EngineConfig,
    got: &[Decision],
) -> (RuleTiers, RuleTiers) {
    let family = |name: &str| {
        rules
            .rules()
            .iter()
            .find(|r| &*r.name == name)
            .map_or(name.to_owned(), |r| r.family.to_string())
    };
    let fired: RuleTiers = got
        .iter()
        .filter(|d| d.incident.is_some() && d.action != Action::Resolve)
        .map(|d| (family(&d.rule), d.tier))
        .collect();
    let mut fed = BTreeSet::new();
    for ev in &case.events {
        let mut events = Vec::new();
        if crate::decode::decode(ev.json.as_bytes(), &mut events).is_err() {
            continue;
        }
        for e in &events {
            let Event::Sample(s) = e else { continue };
            let tier = cfg.tiers.resolve(&s.labels);
            for &id in rules.for_metric(&s.metric) {
                let r = rules.get(id);
                if matches!(r.kind, RuleKind::Metric(_))
                    && r.tiers.contains(tier)
                    && r.matches(&s.labels)
                {
                    fed.insert((r.family.to_string(), tier));
                }
            }
        }
    }
    let acted: RuleTiers = got
        .iter()
        .filter(|d| d.incident.is_some())
        .map(|d| (family(&d.rule), d.tier))
        .collect();
    let quiet = fed.difference(&acted).cloned().collect();
    (fired, quiet)
}

/// A gap in a file's cases: a rule that no case shows acting, or staying
/// quiet through a blip, on one of its tiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub file: String,
    pub line: u32,
    pub rule: String,
    pub tier: Tier,
    /// true: no case shows it acting; false: none shows it staying quiet.
    pub fires: bool,
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.fires {
            write!(
                f,
                "{}:{} rule `{}` has no test case where it acts on the {} tier",
                self.file, self.line, self.rule, self.tier
            )
        } else {
            write!(
                f,
                "{}:{} rule `{}` has no test case where a blip leaves it quiet on the {} tier",
                self.file, self.line, self.rule, self.tier
            )
        }
    }
}

/// Every (rule, tier) of `file` that its passing cases (`results`) leave
/// untested. Metric rules need a breach and a blip per tier; alert rules
/// (Alertmanager already waited out the blip) only a breach.
pub fn gaps(file: &RuleFile, results: &[CaseResult]) -> Vec<Gap> {
    let fired: BTreeSet<&(String, Tier)> = results.iter().flat_map(|r| &r.fired).collect();
    let quiet: BTreeSet<&(String, Tier)> = results.iter().flat_map(|r| &r.quiet).collect();
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for r in &file.rules {
        for tier in Tier::ALL.into_iter().filter(|t| r.tiers.contains(*t)) {
            let key = (r.family.to_string(), tier);
            if !seen.insert(key.clone()) {
                continue;
            }
            let gap = |fires| Gap {
                file: file.path.display().to_string(),
                line: r.origin.line,
                rule: r.family.to_string(),
                tier,
                fires,
            };
            if !fired.contains(&key) {
                out.push(gap(true));
            }
            if matches!(r.kind, RuleKind::Metric(_)) && !quiet.contains(&key) {
                out.push(gap(false));
            }
        }
    }
    out
}

/// The decisions a case's events produce.
pub fn decisions_of(
    case: &Case,
    rules: Arc<RuleSet>,
    cfg: &EngineConfig,
) -> Result<Vec<Decision>, String> {
    let mut engine = Engine::new(rules, cfg.clone());
    let mut out = Vec::new();
    for ev in &case.events {
        let mut events = Vec::new();
        crate::decode::decode(ev.json.as_bytes(), &mut events)
            .map_err(|e| format!("event at line {}: {e}", ev.line))?;
        for e in &events {
            engine.process(e, &mut out);
        }
    }
    if let Some(until) = case.until {
        engine.advance(until, &mut out);
        engine.flush(&mut out);
    } else {
        engine.flush(&mut out);
    }
    Ok(out)
}

/// How the decisions a case got differ from what it expects.
fn compare(case: &Case, got: &[Decision]) -> Vec<String> {
    let mut failures = Vec::new();
    for (i, want) in case.expect.iter().enumerate() {
        match got.get(i) {
            None => failures.push(format!(
                "expected (line {}) {}; no decision #{}",
                want.line,
                show_expect(want),
                i + 1
            )),
            Some(d) => {
                let diffs = differences(want, d);
                if !diffs.is_empty() {
                    failures.push(format!(
                        "decision #{} (expected at line {}): {}",
                        i + 1,
                        want.line,
                        diffs.join(", ")
                    ));
                }
            }
        }
    }
    if got.len() > case.expect.len() {
        failures.push(format!(
            "{} unexpected decision(s) after the expected {}",
            got.len() - case.expect.len(),
            case.expect.len()
        ));
    }
    if !failures.is_empty() {
        failures.push(format!(
            "all decisions:{}",
            got.iter()
                .map(|d| format!("\n      {}", show(d)))
                .collect::<String>()
        ));
    }
    failures
}

fn differences(want: &Expect, d: &Decision) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut check = |what: &str, ok: bool, wanted: String, got: String| {
        if !ok {
            diffs.push(format!("{what} {got}, expected {wanted}"));
        }
    };
    if let Some(at) = want.at {
        check("at", d.at == at, at.to_string(), d.at.to_string());
    }
    if let Some(a) = want.action {
        check("action", d.action == a, a.to_string(), d.action.to_string());
    }
    if let Some(r) = &want.rule {
        // A rule tuned per tier answers to its written name too.
        let ok = *d.rule == **r
            || d.rule
                .strip_prefix(r.as_str())
                .and_then(|t| t.strip_prefix('.'))
                .is_some_and(|t| t.parse::<Tier>().is_ok());
        check("rule", ok, r.clone(), d.rule.to_string());
    }
    if let Some(from) = want.escalated_from {
        check(
            "escalated_from",
            d.escalated_from == Some(from),
            from.to_string(),
            d.escalated_from.map_or("none".into(), |f| f.to_string()),
        );
    }
    if let Some(t) = want.tier {
        check("tier", d.tier == t, t.to_string(), d.tier.to_string());
    }
    if let Some(s) = want.severity {
        check(
            "severity",
            d.severity == s,
            s.to_string(),
            d.severity.to_string(),
        );
    }
    if let Some(v) = want.value {
        check(
            "value",
            d.value.is_some_and(|x| approx(x, v)),
            v.to_string(),
            format!("{:?}", d.value),
        );
    }
    if let Some(v) = want.threshold {
        check(
            "threshold",
            d.threshold.is_some_and(|x| approx(x, v)),
            v.to_string(),
            format!("{:?}", d.threshold),
        );
    }
    if let Some(want) = &want.instances {
        let got: Vec<&str> = d.batch.as_ref().map(|b| b.instances()).unwrap_or_default();
        check(
            "instances",
            got == *want,
            format!("{want:?}"),
            format!("{got:?}"),
        );
    }
    for (k, v) in &want.labels {
        let got = d.label(k);
        check(
            &format!("label {k}"),
            got == Some(v.as_str()),
            v.clone(),
            format!("{got:?}"),
        );
    }
    diffs
}

fn approx(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn show_expect(e: &Expect) -> String {
    let mut parts = Vec::new();
    if let Some(at) = e.at {
        parts.push(at.to_string());
    }
    if let Some(a) = e.action {
        parts.push(a.to_string());
    }
    if let Some(r) = &e.rule {
        parts.push(r.clone());
    }
    parts.join(" ")
}

/// One decision on one line, for failure reports.
pub fn show(d: &Decision) -> String {
    let labels: Vec<String> = d.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut s = format!(
        "{} {} {}/{} {} {{{}}}",
        d.at,
        d.action,
        d.tier,
        d.severity,
        d.rule,
        labels.join(",")
    );
    if let Some(v) = d.value {
        s.push_str(&format!(" value={v}"));
    }
    if let Some(t) = d.threshold {
        s.push_str(&format!(" threshold={t}"));
    }
    if let Some(b) = &d.batch {
        s.push_str(&format!(" instances={:?}", b.instances()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::Direction;
    use crate::rule::load::load_builtin;

    /// The operating plan's thresholds: (metric, direction, threshold,
    /// compared with a baseline). Each must guard every tier.
    const PLAN: [(&str, Direction, f64, bool); 10] = [
        ("cpu_usage_ratio", Direction::Above, 0.8, false),
        ("memory_usage_ratio", Direction::Above, 0.9, false),
        ("disk_io_latency_seconds", Direction::Above, 0.05, false),
        ("http_5xx_ratio", Direction::Above, 0.05, false),
        ("http_latency_seconds", Direction::Above, 2.0, true),
        ("db_connections", Direction::Above, 3.0, true),
        ("db_transactions_per_second", Direction::Below, 0.5, true),
        ("request_success_ratio", Direction::Below, 0.999, false),
        (
            "order_processing_delay_seconds",
            Direction::Above,
            5.0,
            false,
        ),
        ("up", Direction::Below, 1.0, false),
    ];

    #[test]
    fn every_plan_threshold_guards_every_tier() {
        let files = load_builtin().expect("shipped rules load");
        let rules: Vec<&crate::rule::Rule> = files.iter().flat_map(|f| &f.rules).collect();
        for (metric, dir, threshold, of_baseline) in PLAN {
            for tier in Tier::ALL {
                let found = rules.iter().any(|r| {
                    r.tiers.contains(tier)
                        && r.metric().is_some_and(|m| {
                            m.metric == metric
                                && m.condition.op.direction() == Some(dir)
                                && m.condition.threshold == threshold
                                && m.condition.of_baseline == of_baseline
                        })
                });
                assert!(found, "no shipped rule watches {metric} on the {tier} tier");
            }
        }
    }

    #[test]
    fn shipped_rules_have_a_breach_and_a_blip_case_on_every_tier() {
        let files = load_builtin().expect("shipped rules load");
        for f in &files {
            let results = run_file(f, &EngineConfig::default());
            for r in &results {
                assert!(r.passed(), "{}: {:?}", r.name, r.failures);
            }
            let gaps = gaps(f, &results);
            assert!(gaps.is_empty(), "{gaps:#?}");
        }
    }
}
