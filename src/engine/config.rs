//! The engine's sections of `ripcord.yaml`, read here beside the types they
//! fill: `engine:` (lateness, memory of alerts, idle groups), `tiers:`
//! (which service is which risk tier), `grouping:` (batch incidents) and
//! `policy:` (what each tier's breach leads to). Every error names its
//! file and line.

use super::EngineConfig;
use crate::config::Errors;
use crate::config::yaml::{MapReader, Node};
use crate::decision::{Action, Tier};
use crate::time::Dur;

/// `engine:`. `max_future` is the intake's (live input stamped further
/// ahead of the clock is refused) but is written here.
pub fn read_engine(
    mut m: MapReader<'_>,
    e: &mut EngineConfig,
    max_future: &mut Dur,
    errs: &mut Errors,
) {
    if let Some(d) = m.dur(
        "max_future",
        Dur::from_secs(1)..=Dur::from_mins(24 * 60),
        errs,
    ) {
        *max_future = d;
    }
    if let Some(d) = m.dur("allowed_lateness", Dur::ZERO..=Dur::from_mins(60), errs) {
        e.allowed_lateness = d;
    }
    if let Some(n) = m.int("max_groups_per_rule", 1..=100_000_000, errs) {
        e.max_groups_per_rule = n as usize;
    }
    if let Some(n) = m.get("idle_after") {
        if n.as_str() != Some("auto") {
            e.idle_after = m.dur(
                "idle_after",
                Dur::from_secs(1)..=Dur::from_mins(7 * 24 * 60),
                errs,
            );
        }
    }
    if let Some(n) = m.node_of("alert_memory_bytes") {
        m.err(
            errs,
            n,
            "alert_memory_bytes",
            "moved to limits.alerts_bytes (every memory budget is under limits:)",
        );
    }
    if let Some(d) = m.dur(
        "alert_memory",
        Dur::from_mins(1)..=Dur::from_mins(30 * 24 * 60),
        errs,
    ) {
        e.alert_memory = d;
    }
    m.finish(errs);
}

fn tier_of(m: &MapReader<'_>, n: &Node, key: &str, errs: &mut Errors) -> Option<Tier> {
    match n.as_str().map(str::parse::<Tier>) {
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            m.err(errs, n, key, e);
            None
        }
        None => {
            m.err(
                errs,
                n,
                key,
                format!("expected low, medium or high, got {}", n.describe()),
            );
            None
        }
    }
}

pub fn read_tiers(mut m: MapReader<'_>, e: &mut EngineConfig, errs: &mut Errors) {
    if let Some(l) = m.str("label", errs) {
        if crate::text::is_label_name(l) {
            e.tiers.label = l.to_owned();
        } else {
            let n = m.node_of("label").unwrap_or(m.node());
            m.err(errs, n, "label", format!("`{l}` is not a valid label name"));
        }
    }
    if let Some(n) = m.get("default") {
        if let Some(t) = tier_of(&m, n, "default", errs) {
            e.tiers.default = t;
        }
    }
    if let Some(mut sm) = m.map("services", errs) {
        for (service, _, v) in sm.take_all() {
            if let Some(t) = tier_of(&sm, v, service, errs) {
                e.tiers.services.insert(service.to_owned(), t);
            }
        }
    }
    m.finish(errs);
}

/// `grouping:`: batch incidents (see [`super::Grouping`]).
pub fn read_grouping(mut m: MapReader<'_>, e: &mut EngineConfig, errs: &mut Errors) {
    let mut g = e.grouping.clone().unwrap_or_default();
    let enabled = m.bool("enabled", errs).unwrap_or(true);
    if let Some(list) = m.str_list("by", errs) {
        let n = m.node_of("by").unwrap_or(m.node());
        match list.as_slice() {
            [(service, _), (batch, _)] => {
                for (l, node) in &list {
                    if !crate::text::is_label_name(l) {
                        m.err(errs, node, "by", format!("`{l}` is not a valid label name"));
                    }
                }
                if service == batch {
                    m.err(
                        errs,
                        n,
                        "by",
                        "the service label and the batch label must differ",
                    );
                }
                g.service_label = (*service).into();
                g.batch_label = (*batch).into();
            }
            _ => m.err(
                errs,
                n,
                "by",
                "expected two labels: the service's and the batch's, e.g. [service, batch]",
            ),
        }
    }
    if let Some(d) = m.dur("wait", Dur::ZERO..=Dur::from_mins(30), errs) {
        g.wait = d;
    }
    if let Some(n) = m.int("batch_failed", 1..=1_000_000, errs) {
        g.batch_failed = Some(n as u32);
    }
    if let Some(b) = m.bool("attribute", errs) {
        g.attribute = b;
    }
    if let Some(d) = m.dur(
        "attribute_window",
        Dur::ZERO..=Dur::from_mins(24 * 60),
        errs,
    ) {
        g.attribute_window = d;
    }
    m.finish(errs);
    e.grouping = enabled.then_some(g);
}

pub fn read_policy(mut m: MapReader<'_>, e: &mut EngineConfig, errs: &mut Errors) {
    for key in ["low", "medium", "high", "minor"] {
        let Some(list) = m.str_list(key, errs) else {
            continue;
        };
        let mut actions = Vec::new();
        for (s, n) in list {
            match s.parse::<Action>() {
                Ok(Action::Resolve) => m.err(errs, n, key, "`resolve` is not a policy action"),
                Ok(a) if a.is_released_only() => m.err(
                    errs,
                    n,
                    key,
                    format!("`{a}` is not a policy action: only a human's verdict releases it"),
                ),
                Ok(a) if actions.contains(&a) => m.err(errs, n, key, format!("`{a}` listed twice")),
                Ok(a) => actions.push(a),
                Err(err) => m.err(errs, n, key, err),
            }
        }
        if key == "minor" && actions.iter().any(|a| *a != Action::Notify) {
            let n = m.node_of(key).unwrap_or(m.node());
            m.err(errs, n, key, "minor faults only notify (the plan: record, keep watching, do not stop the upgrade)");
            continue;
        }
        match key {
            "minor" => e.policy.minor = actions,
            k => *e.policy.for_tier_mut(k.parse().expect("tier key")) = actions,
        }
    }
    m.finish(errs);
}
