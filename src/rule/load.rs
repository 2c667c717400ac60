//! Reading rule files: YAML -> validated [`Rule`]s and their test cases.
//!
//! Every problem in every file is collected with its file and line; nothing
//! is loaded unless everything is valid.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{
    AlertRule, Baseline, Condition, Direction, Matcher, MetricRule, Origin, Rule, RuleActions,
    RuleKind, RuleSet, TierSet,
};
use crate::config::error::{ConfigError, Errors};
use crate::config::yaml::{self, MapReader, Node, Value};
use crate::decision::{Action, Severity, Tier};
use crate::time::{Dur, Ts};
use crate::window::{Agg, DEFAULT_BUCKETS, MAX_BUCKETS, Spec};

/// One rule file: the tiers it applies to, its rules, its test cases.
#[derive(Debug, Clone)]
pub struct RuleFile {
    pub path: PathBuf,
    pub tiers: TierSet,
    pub rules: Vec<Rule>,
    pub cases: Vec<Case>,
}

/// A test case carried by a rule file: events in, decisions expected out.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub origin: Origin,
    /// Events as JSON text, in the order they are fed.
    pub events: Vec<CaseEvent>,
    /// Move the clock to this time after the last event (to see timeouts).
    pub until: Option<Ts>,
    pub expect: Vec<Expect>,
}

#[derive(Debug, Clone)]
pub struct CaseEvent {
    pub json: String,
    pub line: u32,
}

/// A partial decision: only the fields given are compared.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub line: u32,
    pub at: Option<Ts>,
    pub action: Option<Action>,
    pub rule: Option<String>,
    pub tier: Option<Tier>,
    pub severity: Option<Severity>,
    pub labels: Vec<(String, String)>,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    /// Set on a worsening's decisions: the severity it rose from.
    pub escalated_from: Option<Severity>,
    /// A batch incident's breaching instances, all of them, sorted
    /// (`[]`: a decision outside any batch incident).
    pub instances: Option<Vec<String>>,
}

/// Reads every `*.yaml` / `*.yml` file in `dir` (sorted by name).
pub fn load_dir(dir: &Path) -> Result<Vec<RuleFile>, Errors> {
    let mut errs = Errors::default();
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect(),
        Err(e) => {
            errs.push(ConfigError::new(
                dir,
                0,
                0,
                format!("cannot read rules directory: {e}"),
            ));
            return Err(errs);
        }
    };
    paths.sort();
    if paths.is_empty() {
        errs.push(ConfigError::new(
            dir,
            0,
            0,
            "no rule files (*.yaml) in this directory",
        ));
    }
    let mut files = Vec::new();
    for p in paths {
        match std::fs::read_to_string(&p) {
            Ok(text) => {
                if let Some(f) = parse_file(&p, &text, &mut errs) {
                    files.push(f);
                }
            }
            Err(e) => errs.push(ConfigError::new(&p, 0, 0, format!("cannot read: {e}"))),
        }
    }
    check_unique_names(&files, &mut errs);
    errs.into_result(files)
}

/// Flattens files into the engine's rule set.
pub fn rule_set(files: &[RuleFile]) -> RuleSet {
    RuleSet::new(files.iter().flat_map(|f| f.rules.iter().cloned()).collect())
}

fn check_unique_names(files: &[RuleFile], errs: &mut Errors) {
    let mut seen: HashMap<&str, &Origin> = HashMap::new();
    for r in files.iter().flat_map(|f| &f.rules) {
        if let Some(first) = seen.insert(&r.name, &r.origin) {
            errs.push(ConfigError::new(
                &r.origin.file,
                r.origin.line,
                1,
                format!(
                    "rule `{}`: name already used at {}:{}",
                    r.name,
                    first.file.display(),
                    first.line
                ),
            ));
        }
    }
}

/// Parses one rule file. Problems go to `errs`; `None` if the file could
/// not be read as YAML at all.
pub fn parse_file(path: &Path, text: &str, errs: &mut Errors) -> Option<RuleFile> {
    let root = match yaml::parse(path, text) {
        Ok(n) => n,
        Err(e) => {
            errs.push(e);
            return None;
        }
    };
    let mut top = MapReader::new(path, &root, "rule file", errs)?;
    let tiers = match top.get("tier") {
        None => TierSet::ALL,
        Some(n) => parse_tiers(path, n, errs),
    };
    let mut rules = Vec::new();
    if let Some(items) = top.seq("rules", errs) {
        for (i, item) in items.iter().enumerate() {
            rules.extend(parse_rule_entry(path, item, i + 1, tiers, errs));
        }
    }
    let mut cases = Vec::new();
    if let Some(items) = top.seq("tests", errs) {
        for item in items {
            if let Some(c) = parse_case(path, item, errs) {
                cases.push(c);
            }
        }
    }
    top.finish(errs);
    Some(RuleFile {
        path: path.to_path_buf(),
        tiers,
        rules,
        cases,
    })
}

fn parse_tiers(path: &Path, n: &Node, errs: &mut Errors) -> TierSet {
    let words: Vec<&Node> = match &n.value {
        Value::Str(s) if s == "any" => return TierSet::ALL,
        Value::Str(_) => vec![n],
        Value::Seq(items) => items.iter().collect(),
        _ => {
            errs.push(ConfigError::at(
                path,
                n,
                format!(
                    "tier: expected low, medium, high, a list of them, or any; got {}",
                    n.describe()
                ),
            ));
            return TierSet::ALL;
        }
    };
    let mut tiers = Vec::new();
    for w in words {
        match w.as_str().map(str::parse::<Tier>) {
            Some(Ok(t)) => tiers.push(t),
            Some(Err(e)) => errs.push(ConfigError::at(path, w, format!("tier: {e}"))),
            None => errs.push(ConfigError::at(
                path,
                w,
                format!("tier: expected a tier name, got {}", w.describe()),
            )),
        }
    }
    TierSet::of(&tiers)
}

/// Keys a rule's `tiers:` tuning may not change: what the rule is.
const NOT_PER_TIER: [&str; 5] = ["name", "description", "match", "group_by", "tiers"];

/// One entry of `rules:`. A rule with `tiers:` (per-tier tuning, e.g.
/// `tiers: {high: {window: 1m, for: 2m}}`) compiles to one rule per tuned
/// tier, named `<name>.<tier>`, plus the rule as written for the file's
/// other tiers: one threshold written once, with each tier's haste.
fn parse_rule_entry(
    path: &Path,
    node: &Node,
    index: usize,
    file_tiers: TierSet,
    errs: &mut Errors,
) -> Vec<Rule> {
    let Value::Map(entries) = &node.value else {
        return parse_rule(path, node, index, file_tiers, errs)
            .into_iter()
            .collect();
    };
    let Some(tnode) = entries
        .iter()
        .find(|(k, _)| k.as_str() == Some("tiers"))
        .map(|(_, v)| v)
    else {
        return parse_rule(path, node, index, file_tiers, errs)
            .into_iter()
            .collect();
    };
    let base = Node {
        value: Value::Map(
            entries
                .iter()
                .filter(|(k, _)| k.as_str() != Some("tiers"))
                .cloned()
                .collect(),
        ),
        ..node.clone()
    };
    let name = entries
        .iter()
        .find(|(k, _)| k.as_str() == Some("name"))
        .and_then(|(_, v)| v.as_str())
        .unwrap_or("")
        .to_owned();
    let label = format!("rule `{name}`: tiers");
    let before = errs.len();
    // The rule as written must be valid on its own: its errors are said
    // once, not once per tier.
    let Some(written) = parse_rule(path, &base, index, file_tiers, errs) else {
        return Vec::new();
    };
    let Some(mut tm) = MapReader::new(path, tnode, label.clone(), errs) else {
        return Vec::new();
    };
    let mut tuned: Vec<(Tier, &Node)> = Vec::new();
    for (k, knode, v) in tm.take_all() {
        let tier = match k.parse::<Tier>() {
            Ok(t) => t,
            Err(e) => {
                tm.err(errs, knode, k, e);
                continue;
            }
        };
        if !file_tiers.contains(tier) {
            tm.err(
                errs,
                knode,
                k,
                "this file's `tier:` does not include it, so the rule never sees its events",
            );
            continue;
        }
        let Value::Map(over) = &v.value else {
            tm.err(
                errs,
                v,
                k,
                format!(
                    "expected a mapping of rule keys (window, for, …), got {}",
                    v.describe()
                ),
            );
            continue;
        };
        for (ok, _) in over {
            if let Some(key) = ok.as_str().filter(|key| NOT_PER_TIER.contains(key)) {
                tm.err(
                    errs,
                    ok,
                    k,
                    format!("`{key}` is what the rule is, the same on every tier; tune window, for, min_samples, condition, actions…"),
                );
            }
        }
        tuned.push((tier, v));
    }
    if errs.len() > before {
        return Vec::new();
    }
    let mut out = Vec::new();
    let rest = Tier::ALL
        .into_iter()
        .filter(|t| file_tiers.contains(*t) && !tuned.iter().any(|(u, _)| u == t))
        .collect::<Vec<_>>();
    if !rest.is_empty() {
        out.push(Rule {
            tiers: TierSet::of(&rest),
            ..written
        });
    }
    for (tier, over) in tuned {
        let Value::Map(over_entries) = &over.value else {
            continue;
        };
        let Value::Map(base_entries) = &base.value else {
            continue;
        };
        let mut merged: Vec<(Node, Node)> = base_entries
            .iter()
            .filter(|(k, _)| !over_entries.iter().any(|(o, _)| o.as_str() == k.as_str()))
            .cloned()
            .collect();
        merged.extend(over_entries.iter().cloned());
        let merged = Node {
            value: Value::Map(merged),
            ..node.clone()
        };
        if let Some(mut r) = parse_rule(path, &merged, index, TierSet::of(&[tier]), errs) {
            r.name = Arc::from(format!("{name}.{tier}").as_str());
            r.family = Arc::from(name.as_str());
            out.push(r);
        }
    }
    out
}

fn is_rule_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

const METRIC_ONLY: [&str; 10] = [
    "window",
    "aggregate",
    "condition",
    "baseline",
    "for",
    "min_samples",
    "escalate",
    "clear",
    "clear_for",
    "buckets",
];

fn parse_rule(
    path: &Path,
    node: &Node,
    index: usize,
    file_tiers: TierSet,
    errs: &mut Errors,
) -> Option<Rule> {
    let before = errs.len();
    let mut m = MapReader::new(path, node, "rule", errs)?;
    let name = m.str("name", errs).map(str::to_owned);
    if name.is_none() && !m.has("name") {
        errs.push(ConfigError::at(path, node, "rule: `name` is required"));
    }
    let name = name.unwrap_or_default();
    if !name.is_empty() && !is_rule_name(&name) {
        let n = m.get("name").unwrap_or(node);
        errs.push(ConfigError::at(
            path,
            n,
            format!("rule `{name}`: name must be 1-64 letters, digits, `-`, `_` or `.`"),
        ));
    }
    let label = if name.is_empty() {
        format!("rule #{index}")
    } else {
        format!("rule `{name}`")
    };
    let mut m = MapReader::new(path, node, label.clone(), errs)?;
    m.get("name");
    let description = m.str("description", errs).map(str::to_owned);

    let severity = match m.str("severity", errs) {
        None => Severity::Functional,
        Some(s) => s.parse().unwrap_or_else(|e| {
            let n = m.node_of("severity").unwrap_or(node);
            m.err(errs, n, "severity", e);
            Severity::Functional
        }),
    };
    let replace = action_list(&mut m, "actions", errs);
    let also = action_list(&mut m, "also", errs).unwrap_or_default();
    if replace.is_some() && !also.is_empty() {
        if let Some(n) = m.node_of("also") {
            m.err(
                errs,
                n,
                "also",
                "give `actions` (instead of the tier's policy) or `also` (added to it), not both",
            );
        }
    }
    if severity == Severity::Minor {
        for key in ["actions", "also"] {
            if let Some(n) = m.node_of(key) {
                m.err(
                    errs,
                    n,
                    key,
                    "a minor rule only notifies; remove it or raise `severity`",
                );
            }
        }
    }
    let actions = RuleActions { replace, also };

    // match: what the rule looks at.
    let mut metric = None;
    let mut alertname: Option<Option<String>> = None;
    let mut matchers = Vec::new();
    match m.map("match", errs) {
        None => {
            if !m.has("match") {
                errs.push(ConfigError::at(
                    path,
                    node,
                    format!("{label}: `match` is required (metric: … or alertname: …)"),
                ));
            }
        }
        Some(mut mm) => {
            metric = mm.str("metric", errs).map(str::to_owned);
            if let Some(a) = mm.str("alertname", errs) {
                alertname = Some((a != "*").then(|| a.to_owned()));
            }
            match (&metric, &alertname) {
                (Some(_), Some(_)) => errs.push(ConfigError::at(
                    path,
                    mm.node(),
                    format!("{label}: match either a `metric` or an `alertname`, not both"),
                )),
                (None, None) => errs.push(ConfigError::at(
                    path,
                    mm.node(),
                    format!("{label}: match needs `metric: <name>` or `alertname: <name or *>`"),
                )),
                _ => {}
            }
            if let Some(mname) = &metric {
                if !crate::decode::is_metric_name(mname) {
                    let n = mm.node_of("metric").unwrap_or(node);
                    mm.err(
                        errs,
                        n,
                        "metric",
                        format!("`{mname}` is not a valid metric name"),
                    );
                }
            }
            if let Some(ln) = mm.get("labels") {
                matchers = parse_matchers(path, &name, ln, errs);
            }
            mm.finish(errs);
        }
    }

    let group_by: Option<Vec<Box<str>>> = m.str_list("group_by", errs).map(|list| {
        let mut out: Vec<Box<str>> = Vec::new();
        for (s, n) in list {
            if !crate::decode::is_label_name(s) {
                m.err(
                    errs,
                    n,
                    "group_by",
                    format!("`{s}` is not a valid label name"),
                );
            } else if out.iter().any(|o| &**o == s) {
                m.err(errs, n, "group_by", format!("`{s}` listed twice"));
            } else {
                out.push(s.into());
            }
        }
        out
    });

    let kind = if alertname.is_some() {
        for key in METRIC_ONLY {
            if let Some(n) = m.node_of(key) {
                m.err(
                    errs,
                    n,
                    key,
                    "does not apply to an alert rule (alerts fire and resolve in Alertmanager)",
                );
            }
        }
        RuleKind::Alert(parse_alert_part(&mut m, errs, alertname.clone().flatten()))
    } else {
        for key in ["severity_label", "severity_map"] {
            if let Some(n) = m.node_of(key) {
                m.err(errs, n, key, "applies only to alert rules");
            }
        }
        match parse_metric_part(&mut m, errs, severity, metric.clone().unwrap_or_default()) {
            Some(k) => RuleKind::Metric(k),
            None => {
                m.finish(errs);
                return None;
            }
        }
    };
    m.finish(errs);
    if errs.len() > before {
        return None;
    }
    let group_by = group_by.unwrap_or_else(|| match kind {
        RuleKind::Metric(_) => vec!["service".into(), "instance".into()],
        RuleKind::Alert(_) => Vec::new(),
    });
    Some(Rule {
        family: Arc::from(name.as_str()),
        name: Arc::from(name.as_str()),
        description,
        origin: Origin {
            file: path.to_path_buf(),
            line: node.line,
        },
        tiers: file_tiers,
        matchers,
        group_by,
        severity,
        actions,
        kind,
    })
}

/// A list of actions under `key` (`actions:` or `also:`).
fn action_list(m: &mut MapReader<'_>, key: &str, errs: &mut Errors) -> Option<Vec<Action>> {
    let list = m.str_list(key, errs)?;
    let mut out = Vec::new();
    for (s, n) in list {
        match s.parse::<Action>() {
            Ok(Action::Resolve) => m.err(
                errs,
                n,
                key,
                "`resolve` is not an action to configure; incidents resolve by themselves",
            ),
            Ok(a) if a.is_released_only() => m.err(
                errs,
                n,
                key,
                format!(
                    "`{a}` is not an action to configure: an approved rollback of a severe \
                     high-risk incident switches traffic, resuming the rollout restores it"
                ),
            ),
            Ok(a) if out.contains(&a) => m.err(errs, n, key, format!("`{a}` listed twice")),
            Ok(a) => out.push(a),
            Err(e) => m.err(errs, n, key, e),
        }
    }
    Some(out)
}

fn parse_matchers(path: &Path, rule: &str, n: &Node, errs: &mut Errors) -> Vec<Matcher> {
    let mut out = Vec::new();
    match &n.value {
        Value::Seq(items) => {
            for item in items {
                match item.as_str().map(Matcher::parse) {
                    Some(Ok(m)) => out.push(m),
                    Some(Err(e)) => errs.push(ConfigError::at(path, item, format!("rule `{rule}`: match.labels: {e}"))),
                    None => errs.push(ConfigError::at(path, item, format!("rule `{rule}`: match.labels: expected a matcher string like env=\"prod\", got {}", item.describe()))),
                }
            }
        }
        Value::Map(entries) => {
            for (k, v) in entries {
                match (k.as_str(), v.as_str()) {
                    (Some(k), Some(v)) if crate::decode::is_label_name(k) => {
                        out.push(Matcher::eq(k, v))
                    }
                    _ => errs.push(ConfigError::at(
                        path,
                        k,
                        format!(
                            "rule `{rule}`: match.labels: expected label: \"value\" pairs (strings)"
                        ),
                    )),
                }
            }
        }
        _ => errs.push(ConfigError::at(
            path,
            n,
            format!(
                "rule `{rule}`: match.labels: expected a list of matchers or a mapping, got {}",
                n.describe()
            ),
        )),
    }
    out
}

fn parse_alert_part(
    m: &mut MapReader<'_>,
    errs: &mut Errors,
    alertname: Option<String>,
) -> AlertRule {
    let severity_label = m
        .str("severity_label", errs)
        .unwrap_or("severity")
        .to_owned();
    let severity_map = match m.map("severity_map", errs) {
        None => vec![
            ("critical".into(), Severity::Severe),
            ("page".into(), Severity::Severe),
            ("error".into(), Severity::Functional),
            ("warning".into(), Severity::Functional),
            ("info".into(), Severity::Minor),
            ("none".into(), Severity::Minor),
        ],
        Some(mut sm) => {
            let mut out = Vec::new();
            for (k, _, v) in sm.take_all() {
                match v.as_str().map(str::parse::<Severity>) {
                    Some(Ok(s)) => out.push((k.to_owned(), s)),
                    Some(Err(e)) => sm.err(errs, v, k, e),
                    None => sm.err(
                        errs,
                        v,
                        k,
                        format!("expected minor, functional or severe, got {}", v.describe()),
                    ),
                }
            }
            out
        }
    };
    AlertRule {
        alertname,
        severity_label,
        severity_map,
    }
}

fn condition(m: &mut MapReader<'_>, errs: &mut Errors, key: &str) -> Option<Condition> {
    let text = m.str(key, errs)?;
    match Condition::parse(text) {
        Ok(c) => Some(c),
        Err(e) => {
            let n = m.node_of(key).unwrap_or(m.node());
            m.err(errs, n, key, e);
            None
        }
    }
}

fn agg(m: &mut MapReader<'_>, errs: &mut Errors, key: &str) -> Option<Agg> {
    let text = m.str(key, errs)?;
    match text.parse() {
        Ok(a) => Some(a),
        Err(e) => {
            let n = m.node_of(key).unwrap_or(m.node());
            m.err(errs, n, key, e);
            None
        }
    }
}

const DAY: Dur = Dur(86_400_000);

fn parse_metric_part(
    m: &mut MapReader<'_>,
    errs: &mut Errors,
    severity: Severity,
    metric: String,
) -> Option<MetricRule> {
    let before = errs.len();
    let window = m.dur("window", Dur::from_secs(1)..=DAY, errs);
    if window.is_none() && !m.has("window") {
        errs.push(ConfigError::at(
            m.file(),
            m.node(),
            format!("{}: `window` is required (e.g. window: 5m)", m.what()),
        ));
    }
    let agg_v = if m.has("aggregate") {
        agg(m, errs, "aggregate")
    } else {
        Some(Agg::Avg)
    };
    let buckets = m
        .int("buckets", 1..=i64::from(MAX_BUCKETS), errs)
        .map_or(DEFAULT_BUCKETS, |b| b as u32);
    let cond = condition(m, errs, "condition");
    if cond.is_none() && !m.has("condition") {
        errs.push(ConfigError::at(
            m.file(),
            m.node(),
            format!(
                "{}: `condition` is required (e.g. condition: \"> 80%\")",
                m.what()
            ),
        ));
    }
    let hold_for = m.dur("for", Dur::ZERO..=DAY, errs).unwrap_or(Dur::ZERO);
    let min_samples = m.int("min_samples", 1..=1_000_000, errs).unwrap_or(1) as u64;
    let clear_for = m
        .dur("clear_for", Dur::ZERO..=DAY, errs)
        .unwrap_or(hold_for.max(Dur::from_mins(1)));

    let baseline = m.map("baseline", errs).and_then(|mut b| {
        let bwindow = b.dur("window", Dur::from_secs(1)..=Dur(7 * DAY.0), errs);
        if bwindow.is_none() && !b.has("window") {
            errs.push(ConfigError::at(
                b.file(),
                b.node(),
                format!("{}: `window` is required", b.what()),
            ));
        }
        let offset = b
            .dur("offset", Dur::ZERO..=Dur(7 * DAY.0), errs)
            .unwrap_or(Dur::ZERO);
        let bagg = if b.has("aggregate") {
            agg(&mut b, errs, "aggregate")
        } else {
            agg_v
        };
        if bagg == Some(Agg::Last) {
            let n = b.node_of("aggregate").unwrap_or(b.node());
            b.err(
                errs,
                n,
                "aggregate",
                "`last` cannot serve as a baseline; use avg, max, a percentile…",
            );
        }
        let bmin = b.int("min_samples", 1..=1_000_000, errs).unwrap_or(1) as u64;
        let floor = b.f64("floor", errs);
        if let Some(f) = floor.filter(|f| *f < 0.0) {
            let n = b.node_of("floor").unwrap_or(b.node());
            b.err(
                errs,
                n,
                "floor",
                format!("must be zero or more (the least baseline worth judging), not {f}"),
            );
        }
        let bbuckets = b
            .int("buckets", 1..=i64::from(MAX_BUCKETS), errs)
            .map_or(DEFAULT_BUCKETS, |x| x as u32);
        b.finish(errs);
        let (bwindow, bagg) = (bwindow?, bagg?);
        Some(Baseline {
            window: bwindow,
            offset,
            agg: bagg,
            spec: Spec::offset(bwindow, offset, bbuckets),
            min_samples: bmin,
            floor,
        })
    });

    let mut escalate = Vec::new();
    if let Some(mut em) = m.map("escalate", errs) {
        for (k, knode, v) in em.take_all() {
            let sev = match k.parse::<Severity>() {
                Ok(s) if s > severity => s,
                Ok(s) => {
                    em.err(
                        errs,
                        knode,
                        k,
                        format!(
                            "escalation must be above the rule's severity ({severity}), not {s}"
                        ),
                    );
                    continue;
                }
                Err(e) => {
                    em.err(errs, knode, k, e);
                    continue;
                }
            };
            match v.as_str().map(Condition::parse) {
                Some(Ok(c)) => escalate.push((sev, c, v)),
                Some(Err(e)) => em.err(errs, v, k, e),
                None => em.err(
                    errs,
                    v,
                    k,
                    format!("expected a condition like \"> 20%\", got {}", v.describe()),
                ),
            }
        }
    }
    escalate.sort_by_key(|(s, _, _)| *s);

    let clear = if m.has("clear") {
        condition(m, errs, "clear")
    } else {
        None
    };

    // Cross-field checks, once the parts parsed.
    if let Some(c) = &cond {
        let cnode = m.node_of("condition").unwrap_or(m.node());
        match (c.of_baseline, baseline.is_some() || m.has("baseline")) {
            (true, false) => m.err(
                errs,
                cnode,
                "condition",
                "compares with the baseline, but the rule has no `baseline:`",
            ),
            (false, true) => m.err(
                errs,
                cnode,
                "condition",
                "the rule has a `baseline:` the condition does not use; write e.g. `> 2x baseline`",
            ),
            _ => {}
        }
        for (s, e, n) in &escalate {
            if e.op.direction() != c.op.direction() || e.of_baseline != c.of_baseline {
                m.err(
                    errs,
                    n,
                    "escalate",
                    format!("{s}: must compare the same way as the condition ({c})"),
                );
            } else if !stricter_or_equal(c, e) {
                m.err(
                    errs,
                    n,
                    "escalate",
                    format!("{s}: `{e}` is milder than the condition `{c}`"),
                );
            }
        }
        if let Some(cl) = &clear {
            let cl_node = m.node_of("clear").unwrap_or(m.node());
            let ok = match (c.op.direction(), cl.op.direction()) {
                (Some(Direction::Above), Some(Direction::Below)) => cl.threshold <= c.threshold,
                (Some(Direction::Below), Some(Direction::Above)) => cl.threshold >= c.threshold,
                _ => false,
            };
            if !ok || cl.of_baseline != c.of_baseline {
                m.err(errs, cl_node, "clear", format!("`{cl}` must be the opposite comparison on the safe side of `{c}` (e.g. condition > 5%, clear < 4%)"));
            }
        }
    }
    if errs.len() > before {
        return None;
    }
    let (window, agg_v, cond) = (window?, agg_v?, cond?);
    Some(MetricRule {
        metric,
        window,
        agg: agg_v,
        spec: Spec::new(window, buckets),
        clear: clear.unwrap_or_else(|| cond.negated()),
        condition: cond,
        baseline,
        hold_for,
        min_samples,
        escalate: escalate.into_iter().map(|(s, c, _)| (s, c)).collect(),
        clear_for,
    })
}

fn stricter_or_equal(base: &Condition, esc: &Condition) -> bool {
    match base.op.direction() {
        Some(Direction::Above) => esc.threshold >= base.threshold,
        Some(Direction::Below) => esc.threshold <= base.threshold,
        None => true,
    }
}

fn parse_case(path: &Path, node: &Node, errs: &mut Errors) -> Option<Case> {
    let before = errs.len();
    let mut m = MapReader::new(path, node, "test", errs)?;
    let name = m.str("name", errs).unwrap_or("").to_owned();
    if name.is_empty() {
        errs.push(ConfigError::at(path, node, "test: `name` is required"));
    }
    let mut m = MapReader::new(path, node, format!("test `{name}`"), errs)?;
    m.get("name");
    let mut events = Vec::new();
    if let Some(items) = m.seq("events", errs) {
        for item in items {
            let json = match &item.value {
                Value::Str(s) => s.clone(),
                Value::Map(_) => item.to_json().to_string(),
                _ => {
                    m.err(
                        errs,
                        item,
                        "events",
                        format!(
                            "expected an event (mapping or JSON string), got {}",
                            item.describe()
                        ),
                    );
                    continue;
                }
            };
            events.push(CaseEvent {
                json,
                line: item.line,
            });
        }
    }
    let mut series_events = Vec::new();
    if let Some(items) = m.seq("series", errs) {
        for item in items {
            series_events.extend(parse_series(path, &name, item, errs));
        }
    }
    if !series_events.is_empty() {
        // Series and inline events interleave by time; stable, so inline
        // events keep their written order among equal times.
        let mut all: Vec<(i64, CaseEvent)> = series_events;
        all.extend(events.into_iter().map(|e| (event_ts(&e.json), e)));
        all.sort_by_key(|(t, _)| *t);
        events = all.into_iter().map(|(_, e)| e).collect();
    }
    if events.is_empty() && errs.len() == before {
        errs.push(ConfigError::at(
            path,
            node,
            format!("test `{name}`: give `events` or `series`"),
        ));
    }
    let until = m
        .str("until", errs)
        .and_then(|s| match Ts::parse_rfc3339(s) {
            Ok(t) => Some(t),
            Err(e) => {
                let n = m.node_of("until").unwrap_or(node);
                m.err(errs, n, "until", e);
                None
            }
        });
    let mut expect = Vec::new();
    match m.get("expect") {
        None => errs.push(ConfigError::at(
            path,
            node,
            format!("test `{name}`: `expect` is required (a list of decisions; [] for none)"),
        )),
        Some(n) => match &n.value {
            Value::Seq(items) => {
                for item in items {
                    if let Some(e) = parse_expect(path, &name, item, errs) {
                        expect.push(e);
                    }
                }
            }
            _ => m.err(
                errs,
                n,
                "expect",
                format!("expected a list of decisions, got {}", n.describe()),
            ),
        },
    }
    m.finish(errs);
    (errs.len() == before).then(|| Case {
        name,
        origin: Origin {
            file: path.to_path_buf(),
            line: node.line,
        },
        events,
        until,
        expect,
    })
}

/// Best-effort event time for ordering inline events among series.
fn event_ts(json: &str) -> i64 {
    let mut out = Vec::new();
    match crate::decode::decode(json.as_bytes(), &mut out) {
        Ok(()) => out.first().map_or(0, |e| e.ts().millis()),
        Err(_) => 0,
    }
}

/// Expands a promtool-style series (`values: "0.1x5 0.9x10 _ 0.2"`).
fn parse_series(path: &Path, case: &str, node: &Node, errs: &mut Errors) -> Vec<(i64, CaseEvent)> {
    let Some(mut m) = MapReader::new(path, node, format!("test `{case}`: series"), errs) else {
        return Vec::new();
    };
    let metric = m.str("metric", errs).map(str::to_owned);
    if metric.is_none() && !m.has("metric") {
        errs.push(ConfigError::at(
            path,
            node,
            format!("test `{case}`: series: `metric` is required"),
        ));
    }
    let labels = m
        .get("labels")
        .map(Node::to_json)
        .unwrap_or(serde_json::json!({}));
    let start = m
        .str("start", errs)
        .and_then(|s| match Ts::parse_rfc3339(s) {
            Ok(t) => Some(t),
            Err(e) => {
                m.err(errs, node, "start", e);
                None
            }
        });
    if start.is_none() && !m.has("start") {
        errs.push(ConfigError::at(
            path,
            node,
            format!("test `{case}`: series: `start` is required"),
        ));
    }
    let interval = m
        .dur("interval", Dur(1)..=DAY, errs)
        .unwrap_or(Dur::from_mins(1));
    let values = m
        .str("values", errs)
        .map(|v| (v, m.node_of("values").unwrap_or(node)));
    m.finish(errs);
    let (Some(metric), Some(start), Some((values, vnode))) = (metric, start, values) else {
        if !m_has_values(node) {
            errs.push(ConfigError::at(
                path,
                node,
                format!("test `{case}`: series: `values` is required"),
            ));
        }
        return Vec::new();
    };
    let expanded = match expand_values(values) {
        Ok(v) => v,
        Err(e) => {
            errs.push(ConfigError::at(
                path,
                vnode,
                format!("test `{case}`: series: values: {e}"),
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, v) in expanded.into_iter().enumerate() {
        let Some(v) = v else { continue };
        let ts = start.millis() + interval.millis() * i as i64;
        let json = serde_json::json!({"metric": metric, "value": v, "ts": ts, "labels": labels});
        out.push((
            ts,
            CaseEvent {
                json: json.to_string(),
                line: vnode.line,
            },
        ));
    }
    out
}

fn m_has_values(node: &Node) -> bool {
    matches!(&node.value, Value::Map(e) if e.iter().any(|(k, _)| k.as_str() == Some("values")))
}

/// A series in a rule test may expand to at most this many samples.
const MAX_SERIES_SAMPLES: usize = 1_000_000;

/// promtool's notation: `a` one value; `a+bxn` / `a-bxn` n+1 values from a
/// stepping by b; `axn` a repeated n+1 times; `_` a missing sample; `_xn`
/// n missing samples.
pub fn expand_values(text: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for tok in text.split_whitespace() {
        if tok == "_" {
            out.push(None);
            continue;
        }
        if let Some(n) = tok.strip_prefix("_x") {
            let n: usize = n
                .parse()
                .map_err(|_| format!("`{tok}`: bad repeat count"))?;
            if n > MAX_SERIES_SAMPLES.saturating_sub(out.len()) {
                return Err("more than a million samples".into());
            }
            out.extend(std::iter::repeat_n(None, n));
            continue;
        }
        let (head, count) = match tok.rsplit_once('x') {
            Some((h, n)) => (
                h,
                Some(
                    n.parse::<usize>()
                        .map_err(|_| format!("`{tok}`: bad repeat count"))?,
                ),
            ),
            None => (tok, None),
        };
        // Split `a+b` / `a-b`, minding a leading sign and exponents.
        let split = head
            .char_indices()
            .skip(1)
            .find(|&(i, c)| (c == '+' || c == '-') && !head[..i].ends_with(['e', 'E']))
            .map(|(i, _)| i);
        let (a, step) = match split {
            Some(i) => (
                &head[..i],
                head[i..]
                    .parse::<f64>()
                    .map_err(|_| format!("`{tok}`: bad step"))?,
            ),
            None => (head, 0.0),
        };
        let a: f64 = a
            .parse()
            .map_err(|_| format!("`{tok}` is not a number or a+bxn"))?;
        if count.is_none() && split.is_some() {
            return Err(format!("`{tok}`: a step needs a count, as in a+bxn"));
        }
        let n = count.unwrap_or(0);
        // `a+bxn` is n + 1 samples.
        if n >= MAX_SERIES_SAMPLES.saturating_sub(out.len()) {
            return Err("more than a million samples".into());
        }
        for i in 0..=n {
            out.push(Some(a + step * i as f64));
        }
    }
    if out.is_empty() {
        return Err("no values".into());
    }
    Ok(out)
}

fn parse_expect(path: &Path, case: &str, node: &Node, errs: &mut Errors) -> Option<Expect> {
    let before = errs.len();
    let mut m = MapReader::new(path, node, format!("test `{case}`: expect"), errs)?;
    let mut e = Expect {
        line: node.line,
        ..Expect::default()
    };
    e.at = m.str("at", errs).and_then(|s| match Ts::parse_rfc3339(s) {
        Ok(t) => Some(t),
        Err(err) => {
            m.err(errs, node, "at", err);
            None
        }
    });
    macro_rules! parsed {
        ($key:literal) => {
            m.str($key, errs).and_then(|s| match s.parse() {
                Ok(v) => Some(v),
                Err(err) => {
                    let n = m.node_of($key).unwrap_or(node);
                    m.err(errs, n, $key, err);
                    None
                }
            })
        };
    }
    e.action = parsed!("action");
    e.tier = parsed!("tier");
    e.severity = parsed!("severity");
    e.escalated_from = parsed!("escalated_from");
    e.rule = m.str("rule", errs).map(str::to_owned);
    e.value = m.f64("value", errs);
    e.threshold = m.f64("threshold", errs);
    e.instances = m.str_list("instances", errs).map(|list| {
        let mut v: Vec<String> = list.into_iter().map(|(s, _)| s.to_owned()).collect();
        v.sort();
        v
    });
    if let Some(mut lm) = m.map("labels", errs) {
        for (k, _, v) in lm.take_all() {
            match v.as_str() {
                Some(s) => e.labels.push((k.to_owned(), s.to_owned())),
                None => lm.err(
                    errs,
                    v,
                    k,
                    format!("expected a string, got {}", v.describe()),
                ),
            }
        }
    }
    m.finish(errs);
    (errs.len() == before).then_some(e)
}

/// The shipped rules, compiled in so the binary works from any directory.
pub const BUILTIN: &[(&str, &str)] =
    &[("rules/common.yaml", include_str!("../../rules/common.yaml"))];

/// Parses the shipped rules.
pub fn load_builtin() -> Result<Vec<RuleFile>, Errors> {
    let mut errs = Errors::default();
    let files: Vec<RuleFile> = BUILTIN
        .iter()
        .filter_map(|(name, text)| parse_file(Path::new(name), text, &mut errs))
        .collect();
    check_unique_names(&files, &mut errs);
    errs.into_result(files)
}

/// Rules from `dir`, or the shipped ones when there is none.
pub fn load(dir: Option<&Path>) -> Result<Vec<RuleFile>, Errors> {
    match dir {
        Some(d) => load_dir(d),
        None => load_builtin(),
    }
}

/// Rules that no test case of their file expects a decision from.
pub fn untested_rules(files: &[RuleFile]) -> Vec<(&Rule, &Path)> {
    files
        .iter()
        .flat_map(|f| {
            f.rules.iter().filter_map(move |r| {
                let tested = f.cases.iter().any(|c| {
                    c.expect.iter().any(|e| {
                        e.rule.as_deref() == Some(&*r.name) || e.rule.as_deref() == Some(&*r.family)
                    })
                });
                (!tested).then_some((r, f.path.as_path()))
            })
        })
        .collect()
}
