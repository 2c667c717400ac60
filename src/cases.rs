//! Runs the test cases rule files carry (`ripcord test`).
//!
//! Each case feeds its events through a fresh engine holding only its own
//! file's rules, with the configured tier policy, and compares the decisions
//! with its `expect` list: same count, same order, and every field an
//! expectation names must match (labels: those named must be present).

use std::sync::Arc;

use crate::decision::Decision;
use crate::engine::{Engine, EngineConfig};
use crate::rule::RuleSet;
use crate::rule::load::{Case, Expect, RuleFile};

#[derive(Debug, Clone)]
pub struct CaseResult {
    pub file: String,
    pub line: u32,
    pub name: String,
    /// Empty when the case passed.
    pub failures: Vec<String>,
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
        .map(|case| CaseResult {
            file: file.path.display().to_string(),
            line: case.origin.line,
            name: case.name.clone(),
            failures: run_case(case, rules.clone(), &cfg),
        })
        .collect()
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

fn run_case(case: &Case, rules: Arc<RuleSet>, cfg: &EngineConfig) -> Vec<String> {
    let got = match decisions_of(case, rules, cfg) {
        Ok(d) => d,
        Err(e) => return vec![e],
    };
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
        check("rule", *d.rule == **r, r.clone(), d.rule.to_string());
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
    s
}
