use super::*;
use crate::journal::{IncidentRow, RolloutRow, UpgradeRow};

const MIN: i64 = 60_000;

fn t(mins: i64) -> Ts {
    Ts(1_800_000_000_000 + mins * MIN)
}

fn done(batch: &str, at: Ts) -> UpgradeRow {
    UpgradeRow {
        service: "web".into(),
        batch: Some(batch.into()),
        stage: "batch_done".into(),
        done: Some(10),
        total: Some(100),
        message: None,
        updated_at: at,
        open: true,
    }
}

/// One sample a minute of `ratio` for `batch` over `[from, to)`.
fn samples(batch: &str, from: i64, to: i64, ratio: f64) -> Vec<TallyRow> {
    (from..to)
        .map(|m| TallyRow {
            service: "web".into(),
            batch: batch.into(),
            minute: t(m),
            samples: 1,
            sum: ratio,
            low: ratio,
            tier: Tier::Low,
        })
        .collect()
}

fn incident(tier: &str, severity: &str, attention: &[&str]) -> IncidentRow {
    IncidentRow {
        id: "inc-1".into(),
        rule: "error-rate".into(),
        partition: "p0".into(),
        tier: tier.into(),
        severity: severity.into(),
        state: "open".into(),
        opened_at: t(5),
        resolved_at: None,
        labels: serde_json::json!({"service": "web"}),
        attention: attention.iter().map(|s| s.to_string()).collect(),
        batch: None,
    }
}

fn ask(batch: Option<&str>, revision: Option<&str>) -> Question {
    Question {
        service: "web".into(),
        batch: batch.map(Into::into),
        revision: revision.map(Into::into),
    }
}

fn soaked_low() -> Facts {
    let mut tally = samples("", 0, 20, 0.9999);
    tally.extend(samples("2", 0, 20, 0.9995));
    Facts {
        tier: Some(Tier::Low),
        upgrade: Some(done("2", t(0))),
        tally,
        ..Facts::default()
    }
}

fn judge(q: &Question, f: &Facts, now: Ts) -> Answer {
    evaluate(q, f, &GateConfig::default(), Tier::Medium, now)
}

#[test]
fn a_batch_soaked_past_its_tier_with_good_success_goes() {
    let a = judge(&ask(Some("2"), None), &soaked_low(), t(20));
    assert_eq!(a.decision, Decision::Go, "{:?}", a.reasons);
    assert_eq!(a.soak_remaining_s, 0);
    assert_eq!(a.success.samples, 10, "the trailing 10 min of the low tier");
    assert_eq!(a.batch.as_deref(), Some("2"));
}

#[test]
fn soaking_holds_with_the_time_left_for_each_tier() {
    for (tier, soak_mins) in [(Tier::Low, 10), (Tier::Medium, 30), (Tier::High, 60)] {
        let mut f = soaked_low();
        f.tier = Some(tier);
        f.tally = samples("2", 0, 70, 0.9999);
        let a = judge(&ask(None, None), &f, t(soak_mins - 1));
        assert_eq!(a.decision, Decision::Hold, "{tier}: {:?}", a.reasons);
        assert_eq!(a.soak_remaining_s, 60, "{tier}");
        assert!(
            a.reasons.iter().any(|r| r.starts_with("soaking")),
            "{:?}",
            a.reasons
        );
        let a = judge(&ask(None, None), &f, t(soak_mins));
        assert_eq!(a.decision, Decision::Go, "{tier}: {:?}", a.reasons);
    }
}

#[test]
fn success_below_the_threshold_is_nogo_and_a_recovered_dip_ages_out() {
    let mut f = soaked_low();
    f.tally = samples("2", 0, 12, 0.9999);
    f.tally.extend(samples("2", 12, 15, 0.99));
    f.tally.extend(samples("2", 15, 40, 0.9999));
    let a = judge(&ask(None, None), &f, t(20));
    assert_eq!(a.decision, Decision::Nogo, "{:?}", a.reasons);
    assert!(a.reasons[0].contains("below 99.900%"), "{:?}", a.reasons);
    // One soak (10 min) of clean samples after the dip: go again.
    let a = judge(&ask(None, None), &f, t(26));
    assert_eq!(a.decision, Decision::Go, "{:?}", a.reasons);
}

#[test]
fn too_few_samples_hold_even_after_the_soak() {
    let mut f = soaked_low();
    f.tally = samples("2", 15, 20, 1.0);
    let a = judge(&ask(None, None), &f, t(20));
    assert_eq!(a.decision, Decision::Hold);
    assert!(
        a.reasons
            .iter()
            .any(|r| r.contains("not enough data: 5 of 10")),
        "{:?}",
        a.reasons
    );
}

#[test]
fn a_batch_behind_the_instances_not_yet_upgraded_is_nogo() {
    let mut f = soaked_low();
    f.tally = samples("", 0, 20, 1.0);
    f.tally.extend(samples("2", 0, 20, 0.9991));
    let a = judge(&ask(None, None), &f, t(20));
    assert_eq!(a.decision, Decision::Nogo, "{:?}", a.reasons);
    assert!(
        a.reasons[0].contains("trails the instances not yet upgraded"),
        "{:?}",
        a.reasons
    );
    assert_eq!(a.baseline.as_ref().map(|b| b.samples), Some(10));
    // Within the tolerance: go.
    f.tally = samples("", 0, 20, 0.9996);
    f.tally.extend(samples("2", 0, 20, 0.9992));
    assert_eq!(judge(&ask(None, None), &f, t(20)).decision, Decision::Go);
}

#[test]
fn open_incidents_decide_by_tier_and_severity() {
    let cases = [
        (
            incident("low", "functional", &["rollback:running"]),
            Decision::Nogo,
        ),
        (
            incident("high", "severe", &["request_approval:awaiting_approval"]),
            Decision::Nogo,
        ),
        (
            incident(
                "medium",
                "functional",
                &["request_approval:awaiting_approval"],
            ),
            Decision::Hold,
        ),
        (
            incident("medium", "functional", &["rollback:approved"]),
            Decision::Nogo,
        ),
        (incident("low", "minor", &[]), Decision::Go),
    ];
    for (inc, want) in cases {
        let mut f = soaked_low();
        f.incidents = vec![inc.clone()];
        let a = judge(&ask(None, None), &f, t(20));
        assert_eq!(
            a.decision, want,
            "{} {} {:?}: {:?}",
            inc.tier, inc.severity, inc.attention, a.reasons
        );
        assert_eq!(a.incidents.len(), 1);
    }
}

#[test]
fn progress_decides_whether_there_is_a_batch_to_judge() {
    let mut f = soaked_low();
    f.upgrade.as_mut().unwrap().stage = "batch_started".into();
    let a = judge(&ask(None, None), &f, t(20));
    assert_eq!(a.decision, Decision::Hold);
    assert!(
        a.reasons[0].contains("still being upgraded"),
        "{:?}",
        a.reasons
    );
    f.upgrade.as_mut().unwrap().stage = "failed".into();
    assert_eq!(judge(&ask(None, None), &f, t(20)).decision, Decision::Nogo);
    // Asking about a batch that is not the last reported one.
    let f = soaked_low();
    let a = judge(&ask(Some("3"), None), &f, t(20));
    assert_eq!(a.decision, Decision::Hold);
    assert!(
        a.reasons[0].contains("batch 3 is not the last one reported"),
        "{:?}",
        a.reasons
    );
}

#[test]
fn without_progress_the_service_is_judged_on_its_last_soak_of_samples() {
    let mut f = soaked_low();
    f.upgrade = None;
    f.tally = samples("", 0, 20, 0.9999);
    let a = judge(&ask(None, None), &f, t(20));
    assert_eq!(a.decision, Decision::Go, "{:?}", a.reasons);
    // Samples for only 5 minutes: not soaked yet.
    f.tally = samples("", 15, 20, 0.9999);
    let a = judge(&ask(None, None), &f, t(20));
    assert_eq!(a.decision, Decision::Hold, "{:?}", a.reasons);
    assert!(a.soak_remaining_s > 0);
}

#[test]
fn a_paused_rollout_holds_until_resumed() {
    let mut f = soaked_low();
    f.rollout = Some(RolloutRow {
        service: "web".into(),
        paused: true,
        changed_at: t(3),
        changed_by: "ripcord".into(),
        incident: Some("inc-9".into()),
    });
    let a = judge(&ask(None, None), &f, t(20));
    assert_eq!(a.decision, Decision::Hold);
    assert!(a.paused);
    f.rollout.as_mut().unwrap().paused = false;
    assert_eq!(judge(&ask(None, None), &f, t(20)).decision, Decision::Go);
}

fn promotion(batch: &str, revision: Option<&str>, at: Ts) -> Promotion {
    Promotion {
        service: "web".into(),
        batch: Some(batch.into()),
        revision: revision.map(Into::into),
        by: "alice".into(),
        note: String::new(),
        at,
    }
}

#[test]
fn a_promotion_binds_to_its_batch_and_revision() {
    let mut f = soaked_low();
    // Still soaking at minute 3.
    assert_eq!(
        judge(&ask(None, Some("A")), &f, t(3)).decision,
        Decision::Hold
    );
    f.promotions = vec![promotion("2", Some("A"), t(2))];
    let a = judge(&ask(None, Some("A")), &f, t(3));
    assert_eq!(a.decision, Decision::Go, "{:?}", a.reasons);
    assert_eq!(a.promoted_by.as_deref(), Some("alice"));
    // Said as people read a time, not RFC 3339.
    assert_eq!(
        a.reasons.last().map(String::as_str),
        Some("promoted by alice at 08:02:00 UTC")
    );
    // Revision B is not promoted by A's approval, nor is an unnamed one.
    let a = judge(&ask(None, Some("B")), &f, t(3));
    assert_eq!(a.decision, Decision::Hold);
    assert!(
        a.reasons
            .iter()
            .any(|r| r.contains("for revision A, not B")),
        "{:?}",
        a.reasons
    );
    let a = judge(&ask(None, None), &f, t(3));
    assert_eq!(a.decision, Decision::Hold);
    assert!(
        a.reasons
            .iter()
            .any(|r| r.contains("for revision A, and this question names no revision")),
        "{:?}",
        a.reasons
    );
    assert!(
        !a.reasons
            .iter()
            .any(|r| r.contains("(any)") || r.contains("(none named)")),
        "{:?}",
        a.reasons
    );
    // Another batch is not promoted either; nor a batch redone after it.
    assert_eq!(
        judge(&ask(Some("3"), Some("A")), &f, t(3)).decision,
        Decision::Hold
    );
    f.upgrade = Some(done("2", t(2).saturating_add(Dur::from_secs(1))));
    assert_eq!(
        judge(&ask(None, Some("A")), &f, t(3)).decision,
        Decision::Hold
    );
}

#[test]
fn a_promotion_naming_the_batch_alone_lets_any_revision_of_it_go_on() {
    let mut f = soaked_low();
    f.promotions = vec![promotion("2", None, t(2))];
    // Argo names the pod template hash, Flagger the canary's checksum:
    // nobody types those, and naming the batch is enough.
    for revision in [Some("7f9c5d8b4"), Some("a1b2c3"), None] {
        let a = judge(&ask(None, revision), &f, t(3));
        assert_eq!(a.decision, Decision::Go, "{revision:?}: {:?}", a.reasons);
        assert_eq!(a.promoted_by.as_deref(), Some("alice"));
    }
    // Still bound to its batch, and to the batch as it was then.
    assert_eq!(
        judge(&ask(Some("3"), Some("7f9c5d8b4")), &f, t(3)).decision,
        Decision::Hold
    );
    f.upgrade = Some(done("2", t(2).saturating_add(Dur::from_secs(1))));
    assert_eq!(judge(&ask(None, None), &f, t(3)).decision, Decision::Hold);
}

#[test]
fn a_promotion_never_lifts_a_nogo_or_an_incident_hold() {
    let mut f = soaked_low();
    f.promotions = vec![promotion("2", None, t(1))];
    f.incidents = vec![incident("low", "functional", &[])];
    assert_eq!(judge(&ask(None, None), &f, t(3)).decision, Decision::Nogo);
    f.incidents = vec![incident(
        "medium",
        "functional",
        &["request_approval:awaiting_approval"],
    )];
    assert_eq!(judge(&ask(None, None), &f, t(3)).decision, Decision::Hold);
}

#[test]
fn required_approval_holds_a_soaked_batch_until_promoted() {
    let mut cfg = GateConfig::default();
    cfg.require_approval.low = true;
    let mut f = soaked_low();
    let a = evaluate(&ask(None, Some("A")), &f, &cfg, Tier::Medium, t(20));
    assert_eq!(a.decision, Decision::Hold);
    assert!(
        a.reasons[0].contains("need a human to promote them"),
        "{:?}",
        a.reasons
    );
    f.promotions = vec![promotion("2", Some("A"), t(19))];
    let a = evaluate(&ask(None, Some("A")), &f, &cfg, Tier::Medium, t(20));
    assert_eq!(a.decision, Decision::Go);
}

#[test]
fn tallies_of_several_partitions_merge_into_one_row_per_key() {
    use crate::decode::decode;
    let mut a = Tally::default();
    let mut b = Tally::default();
    for (t, v) in [(&mut a, 0.99), (&mut b, 0.5)] {
        let line = format!(
            r#"{{"metric":"request_success_ratio","value":{v},"ts":"2026-11-21T10:00:10Z","labels":{{"service":"web","batch":"2"}}}}"#
        );
        let mut ev = Vec::new();
        decode(line.as_bytes(), &mut ev).unwrap();
        t.observe(
            &ev[0],
            "request_success_ratio",
            &crate::rule::TierResolver::default(),
        );
    }
    let rows = tally::merged([&a, &b].into_iter());
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].samples, 2);
    assert_eq!(rows[0].low, 0.5);
    assert!((rows[0].sum - 1.49).abs() < 1e-9);
}

#[test]
fn gates_config_reads_per_tier_values_and_names_mistakes() {
    let text = "gates:\n  min_soak: {high: 2h, low: 5m}\n  min_samples: 30\n  success_threshold: 99.95%\n  require_approval: {high: true}\n  baseline_tolerance: 0.001\n";
    let cfg = crate::settings::Config::parse(std::path::Path::new("r.yaml"), text).unwrap();
    let g = &cfg.gates;
    assert_eq!(g.min_soak.high, Dur::from_mins(120));
    assert_eq!(
        g.min_soak.medium,
        Dur::from_mins(30),
        "unnamed tiers keep the plan's default"
    );
    assert_eq!(g.min_soak.low, Dur::from_mins(5));
    assert_eq!(g.min_samples.get(Tier::Medium), 30);
    assert!((g.success_threshold - 0.9995).abs() < 1e-12);
    assert!(g.require_approval.high && !g.require_approval.low);
    let bad = "gates:\n  min_soak: {hgh: 2h}\n  success_threshold: 120%\n  succes_metric: x\n";
    let errs = crate::settings::Config::parse(std::path::Path::new("r.yaml"), bad)
        .unwrap_err()
        .to_string();
    assert!(
        errs.contains("r.yaml:2") && errs.contains("unknown key `hgh`"),
        "{errs}"
    );
    assert!(
        errs.contains("r.yaml:3") && errs.contains("success_threshold"),
        "{errs}"
    );
    assert!(errs.contains("did you mean `success_metric`"), "{errs}");
}

#[test]
fn the_tally_counts_success_samples_per_service_batch_and_minute() {
    use crate::decode::decode;
    let body = r#"
      {"metric":"request_success_ratio","value":0.999,"ts":"2026-11-21T10:00:10Z","labels":{"service":"web","batch":"2","tier":"high"}},
      {"metric":"request_success_ratio","value":0.997,"ts":"2026-11-21T10:00:50Z","labels":{"service":"web","batch":"2","tier":"high"}},
      {"metric":"request_success_ratio","value":1.0,"ts":"2026-11-21T10:01:00Z","labels":{"service":"web"}},
      {"metric":"cpu_usage_ratio","value":0.5,"ts":"2026-11-21T10:01:00Z","labels":{"service":"web"}},
      {"metric":"request_success_ratio","value":0.5,"ts":"2026-11-21T10:01:00Z","labels":{"instance":"i-1"}}
    "#;
    let mut events = Vec::new();
    for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        decode(line.trim_end_matches(',').as_bytes(), &mut events).expect(line);
    }
    let mut tally = Tally::default();
    for e in &events {
        tally.observe(
            e,
            "request_success_ratio",
            &crate::rule::TierResolver::default(),
        );
    }
    let rows = tally.rows();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!((rows[0].batch.as_str(), rows[0].samples), ("", 1));
    let b = &rows[1];
    assert_eq!((b.batch.as_str(), b.samples, b.tier), ("2", 2, Tier::High));
    assert!((b.sum - 1.996).abs() < 1e-9 && (b.low - 0.997).abs() < 1e-12);
    assert_eq!(b.minute, Ts::parse_rfc3339("2026-11-21T10:00:00Z").unwrap());
    tally.clear();
    assert!(tally.is_empty());
}

#[test]
fn a_freeze_window_holds_even_a_soaked_promoted_batch() {
    let mut f = soaked_low();
    f.promotions = vec![promotion("2", None, t(2))];
    assert_eq!(judge(&ask(None, None), &f, t(20)).decision, Decision::Go);
    f.freezes = vec!["black-friday (daily 00:00-24:00 UTC)".into()];
    let a = judge(&ask(None, None), &f, t(20));
    assert_eq!(a.decision, Decision::Hold, "{:?}", a.reasons);
    assert!(
        a.reasons
            .iter()
            .any(|r| r.contains("freeze window black-friday")),
        "{:?}",
        a.reasons
    );
}

#[test]
fn a_batch_incident_that_may_not_be_the_upgrade_holds_instead_of_nogo() {
    use crate::decision::{BatchInfo, Member, Severity};
    let member = |i: &str| Member {
        instance: i.into(),
        rule: "errors".into(),
        incident: format!("inc-{i}").into(),
        severity: Severity::Severe,
        joined: t(5),
        recovered: false,
    };
    let mut info = BatchInfo {
        service: "web".into(),
        batch: "2".into(),
        members: vec![member("i-1"), member("i-2")],
        size: 4,
        outside: Vec::new(),
        outside_seen: 20,
        failed: true,
        about: Vec::new(),
        batch_instances: Vec::new(),
    };
    let mut f = soaked_low();
    let mut inc = incident("low", "severe", &[]);
    inc.batch = Some(std::sync::Arc::new(info.clone()));
    f.incidents = vec![inc.clone()];
    let a = judge(&ask(None, None), &f, t(20));
    assert_eq!(
        a.decision,
        Decision::Nogo,
        "the upgrade's fault: {:?}",
        a.reasons
    );
    info.outside = ["i-9", "i-11"].map(Box::from).to_vec();
    inc.batch = Some(std::sync::Arc::new(info));
    f.incidents = vec![inc];
    let a = judge(&ask(None, None), &f, t(20));
    assert_eq!(a.decision, Decision::Hold, "{:?}", a.reasons);
    assert!(
        a.reasons[0].contains(
            "also breaching on 2 of 20 instances not upgraded: the fault may not be the upgrade"
        ),
        "{:?}",
        a.reasons
    );
}

fn sampled(
    instance: &str,
    state: crate::journal::SampleState,
    detail: &str,
) -> crate::journal::SampleRow {
    crate::journal::SampleRow {
        service: "web".into(),
        batch: "2".into(),
        done_at: t(0),
        instance: instance.into(),
        key: format!("progress/x/sample/{instance}"),
        state,
        detail: detail.into(),
        of: 20,
        updated_at: t(1),
    }
}

#[test]
fn the_sample_check_holds_while_it_runs_goes_once_passed_and_a_failure_is_a_nogo_no_promotion_lifts()
 {
    use crate::journal::SampleState::{Failed, Passed, Running};
    let mut cfg = GateConfig::default();
    cfg.sample_check.low = true;
    let q = ask(Some("2"), None);
    let judge = |f: &Facts, now: Ts| evaluate(&q, f, &cfg, Tier::Medium, now);
    let mut f = soaked_low();
    // Right after the batch done: not started yet (for a short while).
    let a = judge(&f, t(0));
    assert!(
        a.reasons
            .iter()
            .any(|r| r == "sample check of batch 2 not started yet"),
        "{:?}",
        a.reasons
    );
    f.sample = vec![
        sampled("i-1", Passed, "system ok 10:01"),
        sampled("i-2", Running, ""),
    ];
    let a = judge(&f, t(20));
    assert_eq!(a.decision, Decision::Hold, "{:?}", a.reasons);
    assert!(
        a.reasons
            .contains(&"sample check of batch 2: 1 of 2 passed".to_owned())
    );
    f.sample[1].state = Passed;
    let a = judge(&f, t(20));
    assert_eq!(a.decision, Decision::Go, "{:?}", a.reasons);
    assert_eq!(a.sample_check.len(), 2);
    f.sample[1] = sampled("i-2", Failed, "stage services FAILED: HTTP 503");
    f.promotions = vec![promotion("2", None, t(10))];
    let a = judge(&f, t(20));
    assert_eq!(a.decision, Decision::Nogo, "{:?}", a.reasons);
    assert!(
        a.reasons.contains(
            &"sample check of batch 2 failed on i-2: stage services FAILED: HTTP 503".to_owned()
        ),
        "{:?}",
        a.reasons
    );
    // An unsampled tier whose check never started goes as before.
    f.sample.clear();
    f.promotions.clear();
    cfg.sample_check.low = false;
    let judge = |f: &Facts, now: Ts| evaluate(&q, f, &cfg, Tier::Medium, now);
    assert_eq!(judge(&f, t(20)).decision, Decision::Go);
}
