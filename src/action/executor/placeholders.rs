//! `check`'s pass over the executors' templates: a placeholder no decision
//! will ever fill (`{instnace}`) must fail `check`, not the first rollback
//! of an incident.

use std::collections::BTreeSet;

use super::Execute as _;
use crate::action::config::ActionsConfig;
use crate::config::yaml::did_you_mean;
use crate::config::{ConfigError, Errors};
use crate::engine::Grouping;
use crate::rule::{Rule, RuleKind};

/// What every decision fills besides its labels (see [`super::Vars::of`]).
pub const FACTS: [&str; 6] = ["incident", "rule", "tier", "severity", "action", "key"];

/// Labels an alert carries so often that a name one letter off is a typo
/// even when some alert rule keeps every label of its alerts.
const COMMON: [&str; 4] = ["alertname", "service", "instance", "job"];

/// One error per placeholder that names neither a fact nor a label some
/// rule's decisions carry (its `group_by`, the grouping's labels, or a
/// label with its own pattern). An alert rule without `group_by` keeps
/// all of its alerts' labels, so then only near-misses of known names are
/// refused.
pub fn check<'r>(
    actions: &ActionsConfig,
    rules: impl IntoIterator<Item = &'r Rule>,
    grouping: Option<&Grouping>,
) -> Errors {
    let mut known: BTreeSet<&str> = FACTS.into_iter().collect();
    let mut open = false;
    for r in rules {
        known.extend(r.group_by.iter().map(|l| &**l));
        open |= r.group_by.is_empty() && matches!(r.kind, RuleKind::Alert(_));
    }
    if let Some(g) = grouping {
        known.insert(&g.service_label);
        known.insert(&g.batch_label);
    }
    known.extend(actions.patterns.names());
    if open {
        known.extend(COMMON);
    }
    let stages = actions
        .rollback
        .verify
        .iter()
        .flat_map(|v| &v.stages)
        .filter_map(|s| match &s.probe {
            crate::action::config::Probe::Check(e) => Some(&**e),
            crate::action::config::Probe::Windows { .. } => None,
        });
    let executors = [
        actions.rollback.executor.as_ref(),
        actions.pause.as_ref(),
        actions.resume.as_ref(),
        actions.switch.as_ref(),
        actions.restore.as_ref(),
    ];
    // Each template, and whether the vendor's facts fill it too.
    let mut templates: Vec<(&crate::action::executor::Template, bool)> = executors
        .into_iter()
        .flatten()
        .chain(stages)
        .flat_map(|e| e.templates())
        .map(|t| (t, false))
        .collect();
    if let Some(crate::action::vendor::Contact::Http(h)) =
        actions.vendor.as_ref().map(|v| &v.contact)
    {
        templates.extend(h.templates().into_iter().map(|t| (t, true)));
    }
    let mut errs = Errors::default();
    for (t, vendor) in templates {
        let Some(at) = t.origin() else { continue };
        for name in t.vars() {
            if known.contains(name) || (vendor && crate::action::vendor::FACTS.contains(&name)) {
                continue;
            }
            let hint = did_you_mean(name, known.iter().copied());
            if open && hint.is_none() {
                continue;
            }
            let why = match hint {
                Some(s) => format!("did you mean `{{{s}}}`?"),
                None => format!(
                    "no rule's decisions carry it; known: {}",
                    known
                        .iter()
                        .map(|k| format!("{{{k}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            errs.push(ConfigError::new(
                &at.file,
                at.line,
                at.column,
                format!("{}: unknown placeholder `{{{name}}}`: {why}", at.what),
            ));
        }
    }
    errs
}
