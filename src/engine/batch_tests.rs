//! Batch incidents, on the engine's own clock (event time).

use std::path::Path;
use std::sync::Arc;

use crate::config::Errors;
use crate::decision::{Action, Decision, Tier};
use crate::engine::{Engine, EngineConfig, Grouping};
use crate::rule::load::{parse_file, rule_set};

const T0: i64 = 1_795_255_200_000; // 2026-11-21T10:00:00Z

const RULES: &str = r#"
rules:
  - name: r
    match: {metric: m}
    window: 1m
    aggregate: avg
    condition: "> 5%"
    clear: "< 4%"
    clear_for: 1m
"#;

fn engine(grouping: Option<Grouping>) -> Engine {
    let mut errs = Errors::default();
    let file = parse_file(Path::new("t.yaml"), RULES, &mut errs).expect("parses");
    assert!(errs.is_empty(), "{errs}");
    let cfg = EngineConfig {
        grouping,
        ..EngineConfig::default()
    };
    Engine::new(Arc::new(rule_set(&[file])), cfg)
}

/// One sample of metric `m`; `batch` "" leaves the label out.
fn sample(
    e: &mut Engine,
    secs: i64,
    tier: Tier,
    instance: &str,
    batch: &str,
    v: f64,
    out: &mut Vec<Decision>,
) {
    let batch = if batch.is_empty() {
        String::new()
    } else {
        format!(r#","batch":"{batch}""#)
    };
    let line = format!(
        r#"{{"metric":"m","value":{v},"ts":{},"labels":{{"service":"shop","instance":"{instance}","tier":"{tier}"{batch}}}}}"#,
        T0 + secs * 1000
    );
    let mut events = Vec::new();
    crate::decode::decode(line.as_bytes(), &mut events).unwrap();
    for ev in &events {
        e.process(ev, out);
    }
}

fn name(i: usize) -> String {
    format!("i-p{i:02}")
}

/// Ten instances of batch 2 report every 10 s from t=0; from t=60 the
/// instances in `bad` report 100% errors (until `until`).
fn batch_run(e: &mut Engine, tier: Tier, bad: &[usize], until: i64, out: &mut Vec<Decision>) {
    let mut t = 0;
    while t <= until {
        for i in 1..=10 {
            let v = if t >= 60 && bad.contains(&i) {
                1.0
            } else {
                0.0
            };
            sample(e, t, tier, &name(i), "2", v, out);
        }
        t += 10;
    }
}

fn of(out: &[Decision], a: Action) -> Vec<&Decision> {
    out.iter().filter(|d| d.action == a).collect()
}

fn summary(out: &[Decision]) -> Vec<(i64, Action, String)> {
    out.iter()
        .map(|d| {
            (
                (d.at.millis() - T0) / 1000,
                d.action,
                d.label("instance").unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_bad_high_tier_batch_pauses_pages_and_asks_once_naming_its_members() {
    let mut e = engine(Some(Grouping::default()));
    let mut out = Vec::new();
    batch_run(&mut e, Tier::High, &[6, 7, 8, 9, 10], 120, &mut out);
    assert_eq!(
        summary(&out),
        vec![
            (60, Action::PauseRollout, String::new()),
            (90, Action::Page, String::new()),
            (90, Action::RequestApproval, String::new()),
        ],
        "one pause at once, then one page and one approval after the wait"
    );
    let ask = of(&out, Action::RequestApproval)[0];
    assert_eq!(ask.label("service"), Some("shop"));
    assert_eq!(ask.label("batch"), Some("2"));
    let b = ask.batch.as_ref().expect("a batch incident");
    assert_eq!(b.instances(), ["i-p06", "i-p07", "i-p08", "i-p09", "i-p10"]);
    assert_eq!(b.size, 10);
    assert!(b.failed, "5 of 10 is half the batch: failed");
    assert!(ask.message.contains("5 of 10 instances"), "{}", ask.message);
    assert!(ask.message.contains("i-p06..i-p10"), "{}", ask.message);
    // One incident for all of it.
    let ids: std::collections::HashSet<_> = out.iter().map(|d| d.incident.clone()).collect();
    assert_eq!(ids.len(), 1);
    let json = serde_json::to_value(ask).unwrap();
    assert_eq!(
        json["instances"],
        serde_json::json!(["i-p06", "i-p07", "i-p08", "i-p09", "i-p10"])
    );
}

#[test]
fn a_bad_low_tier_batch_rolls_each_member_back_once_and_pauses_the_rollout() {
    let mut e = engine(Some(Grouping::default()));
    let mut out = Vec::new();
    batch_run(&mut e, Tier::Low, &[6, 7, 8, 9, 10], 120, &mut out);
    let rollbacks: Vec<&str> = of(&out, Action::Rollback)
        .iter()
        .map(|d| d.label("instance").unwrap())
        .collect();
    assert_eq!(rollbacks, ["i-p06", "i-p07", "i-p08", "i-p09", "i-p10"]);
    assert_eq!(
        of(&out, Action::PauseRollout).len(),
        1,
        "{:?}",
        summary(&out)
    );
    let notes = of(&out, Action::Notify);
    assert_eq!(
        notes.len(),
        1,
        "one message counts them: {:?}",
        summary(&out)
    );
    assert!(
        notes[0]
            .message
            .contains("5 of 10 instances of shop batch 2")
            || notes[0].message.contains("shop batch 2: 5 of 10"),
        "{}",
        notes[0].message
    );
    assert!(of(&out, Action::Page).is_empty());
}

#[test]
fn a_fault_outside_the_batch_too_rolls_nothing_back_and_says_why() {
    let mut e = engine(Some(Grouping::default()));
    let mut out = Vec::new();
    let mut t = 0;
    while t <= 120 {
        for i in 1..=10 {
            let v = if t >= 60 && i > 5 { 1.0 } else { 0.0 };
            sample(&mut e, t, Tier::Low, &name(i), "2", v, &mut out);
        }
        // Twenty instances not upgraded yet, seven of them failing too.
        for i in 11..=30 {
            let v = if t >= 60 && i <= 17 { 1.0 } else { 0.0 };
            sample(&mut e, t, Tier::Low, &name(i), "", v, &mut out);
        }
        t += 10;
    }
    assert!(of(&out, Action::Rollback).is_empty(), "{:?}", summary(&out));
    assert_eq!(of(&out, Action::PauseRollout).len(), 1);
    assert_eq!(of(&out, Action::Page).len(), 1, "{:?}", summary(&out));
    assert_eq!(of(&out, Action::RequestApproval).len(), 1);
    let note = of(&out, Action::Notify)[0];
    assert!(
        note.message.contains(
            "also breaching on 7 of 20 instances not upgraded: the fault may not be the upgrade"
        ),
        "{}",
        note.message
    );
    // The outside instances open no incident of their own.
    assert!(out.iter().all(|d| d.batch.is_some()), "{:?}", summary(&out));
}

#[test]
fn a_late_member_joins_without_a_second_page() {
    let mut e = engine(Some(Grouping::default()));
    let mut out = Vec::new();
    let mut t = 0;
    while t <= 240 {
        for i in 1..=10 {
            let bad = (t >= 60 && (i == 9 || i == 10)) || (t >= 150 && i == 3);
            sample(
                &mut e,
                t,
                Tier::High,
                &name(i),
                "2",
                if bad { 1.0 } else { 0.0 },
                &mut out,
            );
        }
        t += 10;
    }
    assert_eq!(of(&out, Action::Page).len(), 1, "{:?}", summary(&out));
    let asks = of(&out, Action::RequestApproval);
    assert_eq!(
        asks.len(),
        2,
        "the first ask, then one about the newcomer: {:?}",
        summary(&out)
    );
    assert_eq!(
        asks[1].batch.as_ref().unwrap().about,
        vec![Box::from("i-p03")]
    );
    let joined = of(&out, Action::Notify);
    assert_eq!(joined.len(), 1, "{:?}", summary(&out));
    assert!(
        joined[0].message.starts_with("i-p03 joined"),
        "{}",
        joined[0].message
    );
    assert_eq!(
        joined[0].batch.as_ref().unwrap().instances(),
        ["i-p03", "i-p09", "i-p10"]
    );
}

#[test]
fn the_batch_incident_resolves_when_every_member_is_back() {
    let mut e = engine(Some(Grouping::default()));
    let mut out = Vec::new();
    let mut t = 0;
    while t <= 400 {
        for i in 1..=10 {
            let bad = ((60..150).contains(&t) && i >= 8) || ((60..250).contains(&t) && i == 10);
            sample(
                &mut e,
                t,
                Tier::Medium,
                &name(i),
                "2",
                if bad { 1.0 } else { 0.0 },
                &mut out,
            );
        }
        t += 10;
    }
    let resolves = of(&out, Action::Resolve);
    assert_eq!(resolves.len(), 1, "{:?}", summary(&out));
    // i-p10 recovers last: clear from 250 for a minute (and a window).
    let at = (resolves[0].at.millis() - T0) / 1000;
    assert!(at >= 300, "resolved at {at}, before i-p10 was back");
    assert!(
        resolves[0]
            .batch
            .as_ref()
            .unwrap()
            .members
            .iter()
            .all(|m| m.recovered)
    );
    assert!(e.open_incidents().is_empty());
}

#[test]
fn without_grouping_or_batch_labels_each_instance_is_its_own_incident() {
    for (grouping, batch) in [(None, "2"), (Some(Grouping::default()), "")] {
        let mut e = engine(grouping.clone());
        let mut out = Vec::new();
        let mut t = 0;
        while t <= 120 {
            for i in 1..=4 {
                let v = if t >= 60 && i > 2 { 1.0 } else { 0.0 };
                sample(&mut e, t, Tier::Low, &name(i), batch, v, &mut out);
            }
            t += 10;
        }
        assert_eq!(
            summary(&out),
            vec![
                (60, Action::Rollback, "i-p03".into()),
                (60, Action::Notify, "i-p03".into()),
                (60, Action::Rollback, "i-p04".into()),
                (60, Action::Notify, "i-p04".into()),
            ],
            "grouping {grouping:?}, batch {batch:?}"
        );
        assert!(out.iter().all(|d| d.batch.is_none()));
    }
}

#[test]
fn a_batch_incident_survives_a_restart_without_paging_again() {
    // The live engine fires; a new engine warms up on the same history,
    // takes the journal's view (the batch incident), then sees the rest.
    let mut live = engine(Some(Grouping::default()));
    let mut out = Vec::new();
    batch_run(&mut live, Tier::High, &[6, 7, 8, 9, 10], 120, &mut out);
    let journaled = live.open_incidents();
    assert_eq!(journaled.len(), 1, "one batch incident, not five");
    assert!(journaled[0].batch.is_some());

    let mut warm = engine(Some(Grouping::default()));
    let mut discard = Vec::new();
    batch_run(&mut warm, Tier::High, &[6, 7, 8, 9, 10], 120, &mut discard);
    warm.reconcile(&journaled, &[], crate::time::Ts(T0 + 120_000));
    let mut after = Vec::new();
    let mut t = 130;
    while t <= 400 {
        for i in 1..=10 {
            let bad = t < 200 && i >= 6;
            sample(
                &mut warm,
                t,
                Tier::High,
                &name(i),
                "2",
                if bad { 1.0 } else { 0.0 },
                &mut after,
            );
        }
        t += 10;
    }
    assert_eq!(
        summary(&after)
            .into_iter()
            .map(|(_, a, _)| a)
            .collect::<Vec<_>>(),
        vec![Action::Resolve],
        "no second page or ask; one resolve when all are back: {:?}",
        summary(&after)
    );
    assert_eq!(after[0].incident, journaled[0].id.clone().into());
}

#[test]
fn replay_is_deterministic_with_grouping() {
    let run = || {
        let mut e = engine(Some(Grouping::default()));
        let mut out = Vec::new();
        batch_run(&mut e, Tier::Low, &[2, 4, 6], 200, &mut out);
        e.flush(&mut out);
        out.iter()
            .map(|d| (d.key.clone(), d.message.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}
