//! Engine behaviour the shipped rule tests do not pin down: lateness,
//! eviction, caps, reconciliation, hysteresis, determinism.

use std::path::Path;

use super::*;
use crate::config::Errors;
use crate::decision::Tier;
use crate::rule::load::{parse_file, rule_set};

const T0: i64 = 1_795_255_200_000; // 2026-11-21T10:00:00Z

fn engine_with(yaml: &str, cfg: EngineConfig) -> Engine {
    let mut errs = Errors::default();
    let file = parse_file(Path::new("t.yaml"), yaml, &mut errs).expect("parses");
    assert!(errs.is_empty(), "{errs}");
    Engine::new(Arc::new(rule_set(&[file])), cfg)
}

const FIVE_XX: &str = r#"
rules:
  - name: r
    match: {metric: m}
    group_by: [service, instance]
    window: 1m
    aggregate: avg
    condition: "> 5%"
    clear: "< 4%"
    clear_for: 1m
"#;

fn sample(engine: &mut Engine, secs: i64, instance: &str, value: f64, out: &mut Vec<Decision>) {
    let line = format!(
        r#"{{"metric":"m","value":{value},"ts":{},"labels":{{"service":"s","instance":"{instance}"}}}}"#,
        T0 + secs * 1000
    );
    let mut events = Vec::new();
    crate::decode::decode(line.as_bytes(), &mut events).unwrap();
    for e in &events {
        engine.process(e, out);
    }
}

fn actions(out: &[Decision]) -> Vec<(i64, Action, String)> {
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
fn late_samples_beyond_the_allowance_are_dropped() {
    let mut e = engine_with(FIVE_XX, EngineConfig::default());
    let mut out = Vec::new();
    sample(&mut e, 600, "a", 0.0, &mut out);
    sample(&mut e, 545, "a", 0.0, &mut out); // 55 s late: within the 1 m allowance
    sample(&mut e, 530, "a", 0.9, &mut out); // 70 s late: dropped
    assert_eq!(e.stats().samples_late, 1);
    assert_eq!(e.stats().samples, 3);
    assert!(out.is_empty(), "{:?}", actions(&out));
}

#[test]
fn out_of_order_samples_within_the_allowance_count() {
    let mut e = engine_with(FIVE_XX, EngineConfig::default());
    let mut out = Vec::new();
    sample(&mut e, 60, "a", 0.0, &mut out);
    sample(&mut e, 50, "a", 0.9, &mut out); // older than the group's newest, same window
    assert_eq!(
        actions(&out),
        vec![
            (60, Action::RequestApproval, "a".into()),
            (60, Action::Notify, "a".into())
        ]
    );
    assert!((out[0].value.unwrap() - 0.45).abs() < 1e-12);
}

#[test]
fn hysteresis_band_keeps_the_incident_open() {
    let mut e = engine_with(FIVE_XX, EngineConfig::default());
    let mut out = Vec::new();
    sample(&mut e, 0, "a", 0.10, &mut out);
    assert_eq!(out.len(), 2);
    out.clear();
    // 4.5%: below the 5% trigger, above the 4% clear line: stays open.
    for t in (10..=300).step_by(10) {
        sample(&mut e, t, "a", 0.045, &mut out);
    }
    assert!(out.is_empty(), "{:?}", actions(&out));
    // Clear for a minute (the window first has to forget the 4.5%s).
    for t in (310..=500).step_by(10) {
        sample(&mut e, t, "a", 0.01, &mut out);
    }
    let got = actions(&out);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1, Action::Resolve);
    // At 310 s the window [255 s, 310 s] averages (5 x 4.5% + 1%) / 6 = 3.9%,
    // under the 4% clear line; clear for the 60 s of clear_for: 370 s.
    assert_eq!(got[0].0, 370);
}

#[test]
fn a_series_that_goes_quiet_resolves_on_no_data() {
    let mut e = engine_with(FIVE_XX, EngineConfig::default());
    let mut out = Vec::new();
    sample(&mut e, 0, "a", 0.10, &mut out);
    out.clear();
    // Only another instance reports from now on; the watermark moves.
    for t in (10..=400).step_by(10) {
        sample(&mut e, t, "b", 0.0, &mut out);
    }
    let got = actions(&out);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].1, got[0].2.as_str()), (Action::Resolve, "a"));
    // Window (1 m, 5 s buckets) empties at 60 s; clear_for 1 m: resolves at 120 s,
    // decided once the watermark minus the 1 m allowance passes it (180 s).
    assert_eq!(got[0].0, 120);
    assert!(out[0].message.contains("no samples"), "{}", out[0].message);
}

#[test]
fn flush_runs_due_timers_at_end_of_input() {
    let mut e = engine_with(FIVE_XX, EngineConfig::default());
    let mut out = Vec::new();
    sample(&mut e, 0, "a", 0.10, &mut out);
    sample(&mut e, 130, "b", 0.0, &mut out);
    out.clear();
    e.flush(&mut out);
    assert_eq!(actions(&out), vec![(120, Action::Resolve, "a".into())]);
}

#[test]
fn quiet_groups_are_evicted_and_the_group_cap_holds() {
    let cfg = EngineConfig {
        max_groups_per_rule: 3,
        ..EngineConfig::default()
    };
    let mut e = engine_with(FIVE_XX, cfg);
    let mut out = Vec::new();
    for (i, inst) in ["a", "b", "c", "d"].iter().enumerate() {
        sample(&mut e, i as i64, inst, 0.0, &mut out);
    }
    assert_eq!(e.groups(), 3);
    assert_eq!(e.stats().groups_refused, 1);
    // Much later, one group keeps reporting; the others are swept away.
    for t in (1000..1100).step_by(5) {
        sample(&mut e, t, "z", 0.0, &mut out);
    }
    assert_eq!(e.groups(), 1, "{:?}", e.stats());
    assert_eq!(e.stats().groups_evicted, 3);
    // A group with an open incident is never evicted.
    sample(&mut e, 1100, "y", 0.5, &mut out);
    for t in (1100..1400).step_by(5) {
        sample(&mut e, t, "z", 0.0, &mut out);
        sample(&mut e, t, "y", 0.5, &mut out);
    }
    assert!(
        e.open_incidents()
            .iter()
            .any(|i| i.labels.iter().any(|(_, v)| &**v == "y"))
    );
}

#[test]
fn same_input_same_decisions() {
    let run = || {
        let mut e = engine_with(FIVE_XX, EngineConfig::default());
        let mut out = Vec::new();
        for t in 0..200 {
            sample(
                &mut e,
                t * 3,
                ["a", "b"][t as usize % 2],
                if t % 50 < 20 { 0.2 } else { 0.0 },
                &mut out,
            );
        }
        e.flush(&mut out);
        out
    };
    let (a, b) = (run(), run());
    assert!(!a.is_empty());
    assert_eq!(a, b);
    let keys: std::collections::HashSet<&str> = a.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(keys.len(), a.len(), "idempotency keys are unique");
}

#[test]
fn reconcile_installs_journaled_incidents_and_drops_unjournaled_ones() {
    // Warm-up opened an incident for `a`, but the journal knows one for `b`.
    let mut e = engine_with(FIVE_XX, EngineConfig::default());
    let mut out = Vec::new();
    sample(&mut e, 0, "a", 0.5, &mut out);
    let mut journaled = Engine::new(e.rules().clone(), EngineConfig::default());
    let mut jout = Vec::new();
    sample(&mut journaled, 0, "b", 0.5, &mut jout);
    let b_incident = journaled.open_incidents();
    assert_eq!(b_incident.len(), 1);

    let orphans = e.reconcile(&b_incident, &[], Ts(T0 + 1000));
    assert!(orphans.is_empty());
    assert_eq!(e.stats().incidents_dropped_on_reconcile, 1);
    assert_eq!(e.stats().incidents_restored, 1);
    out.clear();
    // `b` keeps breaching: already open, nothing fires. `a` breaches: it was
    // never journaled, so it fires now.
    sample(&mut e, 5, "b", 0.5, &mut out);
    sample(&mut e, 6, "a", 0.5, &mut out);
    let got = actions(&out);
    assert_eq!(
        got,
        vec![
            (6, Action::RequestApproval, "a".into()),
            (6, Action::Notify, "a".into())
        ]
    );
    // `b` resolves as its own incident, with its own id.
    out.clear();
    for t in (10..=200).step_by(10) {
        sample(&mut e, t, "b", 0.0, &mut out);
        sample(&mut e, t, "a", 0.0, &mut out);
    }
    let resolved: Vec<&Decision> = out.iter().filter(|d| d.action == Action::Resolve).collect();
    assert_eq!(resolved.len(), 2);
    let b_res = resolved
        .iter()
        .find(|d| d.label("instance") == Some("b"))
        .unwrap();
    assert_eq!(b_res.incident.as_ref(), Some(&b_incident[0].id));
}

#[test]
fn reconcile_reports_incidents_of_removed_rules() {
    let mut e = engine_with(FIVE_XX, EngineConfig::default());
    let mut inc = Incident::open(
        "gone".into(),
        vec![].into(),
        Tier::Low,
        Severity::Functional,
        Ts(T0),
    );
    inc.seq = 3;
    let orphans = e.reconcile(&[inc.clone()], &[], Ts(T0));
    assert_eq!(orphans, vec![inc]);
}

#[test]
fn tier_comes_from_label_then_service_map_then_default() {
    let mut cfg = EngineConfig::default();
    cfg.tiers.services.insert("pay".into(), Tier::High);
    cfg.tiers.default = Tier::Low;
    let e = engine_with(FIVE_XX, cfg);
    let mut events = Vec::new();
    let lines = [
        r#"{"metric":"m","value":1,"ts":0,"labels":{"service":"pay","tier":"medium"}}"#,
        r#"{"metric":"m","value":1,"ts":0,"labels":{"service":"pay"}}"#,
        r#"{"metric":"m","value":1,"ts":0,"labels":{"service":"other","tier":"bogus"}}"#,
    ];
    for l in &lines {
        crate::decode::decode(l.as_bytes(), &mut events).unwrap();
    }
    let tiers: Vec<Tier> = events
        .iter()
        .map(|ev| e.config().tiers.resolve(ev.labels()))
        .collect();
    assert_eq!(tiers, vec![Tier::Medium, Tier::High, Tier::Low]);
}

#[test]
fn non_finite_and_unmatched_samples_are_counted() {
    let mut e = engine_with(FIVE_XX, EngineConfig::default());
    let mut out = Vec::new();
    let mut events = Vec::new();
    let lines = [
        r#"{"timestamp":"2026-11-21T10:00:00Z","value":"NaN","name":"m","labels":{"service":"s"}}"#,
        r#"{"metric":"other","value":1,"ts":1795255200000}"#,
    ];
    for l in &lines {
        crate::decode::decode(l.as_bytes(), &mut events).unwrap();
    }
    for ev in &events {
        e.process(ev, &mut out);
    }
    assert_eq!(e.stats().samples_non_finite, 1);
    assert_eq!(e.stats().samples_unmatched, 1);
    assert_eq!(e.groups(), 0);
}

#[test]
fn progress_becomes_a_notify_post() {
    let mut e = engine_with(FIVE_XX, EngineConfig::default());
    let mut out = Vec::new();
    let mut events = Vec::new();
    let line = r#"{"kind":"progress","ts":"2026-11-21T10:00:00Z","labels":{"service":"web","batch":"2","batches":"3"},"stage":"batch_done","done":30,"total":100}"#;
    crate::decode::decode(line.as_bytes(), &mut events).unwrap();
    e.process(&events[0], &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].action, Action::Notify);
    assert_eq!(
        out[0].message,
        "web batch 2/3 done: 30 of 100 instances upgraded"
    );
    assert_eq!(out[0].incident, None);
    let json = serde_json::to_value(&out[0]).unwrap();
    assert_eq!(json["action"], "notify");
    assert_eq!(json["labels"]["batch"], "2");
    assert_eq!(json["at"], "2026-11-21T10:00:00Z");
}

#[test]
fn decision_json_carries_the_contract_fields() {
    let mut e = engine_with(FIVE_XX, EngineConfig::default());
    let mut out = Vec::new();
    sample(&mut e, 0, "i-0a1", 0.07, &mut out);
    let json = serde_json::to_value(&out[0]).unwrap();
    for field in [
        "at",
        "action",
        "tier",
        "severity",
        "rule",
        "incident",
        "labels",
        "value",
        "threshold",
    ] {
        assert!(json.get(field).is_some(), "missing {field}: {json}");
    }
    assert_eq!(json["labels"]["instance"], "i-0a1");
    assert_eq!(json["value"], 0.07);
    assert_eq!(json["threshold"], 0.05);
    assert_eq!(json["tier"], "medium");
}

const ALERTS: &str = r#"
rules:
  - name: am
    match: {alertname: "*"}
"#;

fn alert(
    engine: &mut Engine,
    fp: &str,
    status: &str,
    labels: serde_json::Value,
    out: &mut Vec<Decision>,
) {
    let payload = serde_json::json!({
        "version": "4",
        "alerts": [{"status": status, "labels": labels, "startsAt": "2026-11-21T10:00:00Z",
                    "endsAt": if status == "resolved" { "2026-11-21T10:05:00Z" } else { "0001-01-01T00:00:00Z" },
                    "fingerprint": fp}]
    });
    let text = payload.to_string();
    let mut events = Vec::new();
    crate::decode::decode(text.as_bytes(), &mut events).unwrap();
    for e in &events {
        engine.process(e, out);
    }
}

#[test]
fn an_alerts_labels_are_kept_within_a_byte_budget_telling_ones_first() {
    let mut e = engine_with(ALERTS, EngineConfig::default());
    let mut labels = serde_json::Map::new();
    for i in 0..60 {
        labels.insert(format!("l{i:02}"), "v".repeat(1000).into());
    }
    labels.insert("alertname".into(), "Big".into());
    labels.insert("service".into(), "web".into());
    labels.insert("instance".into(), "i-1".into());
    labels.insert("tier".into(), "low".into());
    let mut out = Vec::new();
    alert(&mut e, "fp-big", "firing", labels.into(), &mut out);
    assert!(!out.is_empty());
    let d = &out[0];
    let bytes: usize = d.labels.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert!(bytes <= alert::LABEL_BUDGET + 64, "{bytes}");
    for k in ["alertname", "service", "instance", "ripcord_labels_cut"] {
        assert!(d.label(k).is_some(), "{k} kept");
    }
    assert_eq!(e.stats().labels_truncated, 1);
}

/// An alert's annotations travel with its decisions (for the console),
/// bounded in count and length; the engine keeps none of them.
#[test]
fn an_alerts_annotations_go_with_its_decisions_bounded() {
    let mut e = engine_with(ALERTS, EngineConfig::default());
    let mut annotations = serde_json::Map::new();
    annotations.insert("summary".into(), "5xx above 5% after batch 2".into());
    annotations.insert("description".into(), "d".repeat(5000).into());
    for i in 0..40 {
        annotations.insert(format!("a{i:02}"), "x".into());
    }
    let payload = serde_json::json!({
        "version": "4",
        "alerts": [{"status": "firing", "labels": {"alertname": "ErrorsUp", "service": "web", "instance": "i-1"},
                    "annotations": annotations, "startsAt": "2026-11-21T10:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "fp-ann"}]
    });
    let text = payload.to_string();
    let mut events = Vec::new();
    crate::decode::decode(text.as_bytes(), &mut events).unwrap();
    let mut out = Vec::new();
    for ev in &events {
        e.process(ev, &mut out);
    }
    assert!(!out.is_empty());
    for d in &out {
        let ev = d.evidence.0.as_ref().expect("annotations as evidence");
        assert!(ev.points.is_empty(), "an alert has no readings");
        assert_eq!(ev.annotations.len(), 16, "{:?}", ev.annotations);
        let summary = ev.annotations.iter().find(|(k, _)| k == "summary");
        assert_eq!(
            summary.map(|(_, v)| v.as_str()),
            Some("5xx above 5% after batch 2")
        );
        assert!(ev.annotations.iter().all(|(_, v)| v.len() <= 512));
    }
    // Without annotations, nothing rides along.
    let mut plain = Vec::new();
    alert(
        &mut e,
        "fp-plain",
        "firing",
        serde_json::json!({"alertname": "B", "service": "s"}),
        &mut plain,
    );
    assert!(plain.iter().all(|d| d.evidence.0.is_none()));
}

fn budgets(groups: usize, alerts: usize) -> crate::limits::Budgets {
    crate::limits::Budgets::new(&crate::limits::LimitsConfig {
        groups_bytes: groups,
        alerts_bytes: alerts,
        ..Default::default()
    })
}

#[test]
fn groups_past_the_byte_budget_are_refused_counted_and_the_held_ones_keep_working() {
    let b = budgets(256 << 10, 1 << 20);
    let cfg = EngineConfig {
        budgets: b.clone(),
        ..EngineConfig::default()
    };
    let mut e = engine_with(FIVE_XX, cfg.clone());
    let mut out = Vec::new();
    // Groups with 1 KiB instance names: bytes, not the group count, fill it.
    let long = |i: usize| format!("{i:04}-{}", "x".repeat(1000));
    for i in 0..400 {
        sample(&mut e, 0, &long(i), 0.0, &mut out);
    }
    let held = e.groups();
    assert!(held > 20 && held < 400, "{held}");
    assert_eq!(e.stats().groups_refused_memory, (400 - held) as u64);
    assert!(b.groups.used() <= 256 << 10, "{}", b.groups.used());
    assert_eq!(b.groups.refused(), (400 - held) as u64);
    // A second engine (another partition) shares the budget: nothing new fits.
    let mut other = engine_with(FIVE_XX, cfg);
    sample(&mut other, 0, &long(999), 0.0, &mut out);
    assert_eq!(other.groups(), 0);
    // A group already held still decides: its breach opens an incident.
    for t in (15..=240).step_by(15) {
        sample(&mut e, t, &long(0), 0.5, &mut out);
    }
    assert!(
        out.iter()
            .any(|d| d.label("instance") == Some(long(0).as_str())),
        "the held group acts"
    );
    // Dropping an engine (a revoked partition) gives its bytes back.
    drop(e);
    assert_eq!(b.groups.used(), 0);
    sample(&mut other, 1, &long(999), 0.0, &mut out);
    assert_eq!(other.groups(), 1);
}

#[test]
fn remembered_alerts_stay_within_their_byte_budget() {
    let cfg = EngineConfig {
        budgets: budgets(256 << 20, 1 << 20),
        ..EngineConfig::default()
    };
    let mut e = engine_with(ALERTS, cfg);
    let mut out = Vec::new();
    let labels = |i: usize| serde_json::json!({"alertname": "A", "service": "s", "instance": format!("i-{i}"), "note": "x".repeat(1000)});
    // Firing then resolved: remembered (against redelivery) until the
    // budget makes room by forgetting the oldest.
    for i in 0..2000 {
        let fp = format!("fp{i}");
        alert(&mut e, &fp, "firing", labels(i), &mut out);
        alert(&mut e, &fp, "resolved", labels(i), &mut out);
    }
    assert!(e.alert_memory() <= 1 << 20, "{}", e.alert_memory());
    assert!(e.stats().alerts_forgotten_early > 0);
    assert_eq!(e.stats().alerts_refused_memory, 0);
    // Open incidents are never forgotten: past the budget, new ones are
    // refused (and counted), the open ones stay.
    out.clear();
    for i in 0..2000 {
        alert(&mut e, &format!("open{i}"), "firing", labels(i), &mut out);
    }
    assert!(e.alert_memory() <= 1 << 20, "{}", e.alert_memory());
    assert!(e.stats().alerts_refused_memory > 0);
    let open = e.open_incidents().len();
    assert!(open > 100 && open < 2000, "{open}");
}

/// A decision's evidence: the window's buckets just before the condition
/// first held (healthy here), then each reading since; the resolve carries
/// the whole incident. Idle groups keep nothing.
#[test]
fn decisions_carry_the_window_before_the_breach_and_the_readings_since() {
    let mut e = engine_with(FIVE_XX, EngineConfig::default());
    let mut out = Vec::new();
    for s in (0..60).step_by(10) {
        sample(&mut e, s, "a", 0.01, &mut out);
    }
    assert!(out.is_empty());
    // 30% from 60 s: the 1 m average crosses 5% at once.
    for s in (60..120).step_by(10) {
        sample(&mut e, s, "a", 0.3, &mut out);
    }
    let opened = out.first().expect("opened");
    let ev = opened.evidence.0.clone().expect("evidence");
    assert_eq!(ev.breach_from, opened.at);
    let before: Vec<f64> = ev
        .points
        .iter()
        .filter(|(t, _)| *t < ev.breach_from)
        .map(|(_, v)| *v)
        .collect();
    assert!(
        !before.is_empty() && before.iter().all(|v| (*v - 0.01).abs() < 1e-9),
        "{ev:?}"
    );
    assert_eq!(ev.points.last().unwrap().0, opened.at);
    // Healthy again: the resolve's evidence spans the incident.
    for s in (120..300).step_by(10) {
        sample(&mut e, s, "a", 0.0, &mut out);
    }
    let resolve = out
        .iter()
        .find(|d| d.action == Action::Resolve)
        .expect("resolved");
    let ev = resolve.evidence.0.clone().unwrap();
    assert!(ev.points.len() > 10, "{ev:?}");
    assert_eq!(ev.points.last().unwrap().0, resolve.at);
    assert!(ev.points.windows(2).all(|w| w[0].0 < w[1].0));
}

/// The live loop sleeps until `next_due` instead of ticking every second:
/// a tick a moment before it finds nothing to decide, and ticking only at
/// each `next_due` decides what ticking every second does, no later than
/// that second.
#[test]
fn ticking_at_next_due_decides_what_a_tick_every_second_does() {
    let start = |e: &mut Engine| {
        let mut out = Vec::new();
        sample(e, 0, "a", 0.10, &mut out);
        sample(e, 5, "b", 0.10, &mut out);
        sample(e, 30, "b", 0.0, &mut out);
    };
    let end = Ts::from_millis(T0 + 600_000).unwrap();
    // Every second.
    let mut every = engine_with(FIVE_XX, EngineConfig::default());
    start(&mut every);
    let mut by_second = Vec::new();
    let mut wall = Ts::from_millis(T0).unwrap();
    while wall <= end {
        let mut out = Vec::new();
        every.tick(wall, &mut out);
        by_second.extend(out.into_iter().map(|d| (wall, d)));
        wall = wall.saturating_add(Dur::from_secs(1));
    }
    assert!(
        !by_second.is_empty(),
        "the case decides something when quiet"
    );
    // Only at each deadline, after a look a millisecond before it.
    let mut sleeper = engine_with(FIVE_XX, EngineConfig::default());
    start(&mut sleeper);
    let mut at_due = Vec::new();
    while let Some(due) = sleeper.next_due().filter(|d| *d <= end) {
        let mut out = Vec::new();
        sleeper.tick(due.saturating_sub(Dur(1)), &mut out);
        assert!(out.is_empty(), "a tick 1 ms before {due:?} decided {out:?}");
        sleeper.tick(due, &mut out);
        assert_ne!(
            sleeper.next_due(),
            Some(due),
            "a tick at the deadline left it due"
        );
        at_due.extend(out.into_iter().map(|d| (due, d)));
    }
    assert_eq!(
        actions(&at_due.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>()),
        actions(&by_second.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>())
    );
    for ((due, _), (second, _)) in at_due.iter().zip(&by_second) {
        assert!(
            due <= second,
            "decided at {due:?}, after the 1 s tick's {second:?}"
        );
    }
}
