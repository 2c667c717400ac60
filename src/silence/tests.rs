use super::*;
use crate::decision::{Severity, Tier};

fn decision(action: Action, tier: Tier, labels: &[(&str, &str)]) -> Decision {
    Decision {
        at: Ts(0),
        action,
        tier,
        severity: Severity::Functional,
        rule: "http_5xx_ratio".into(),
        incident: None,
        labels: labels
            .iter()
            .map(|(k, v)| (Box::from(*k), Box::from(*v)))
            .collect::<Vec<_>>()
            .into(),
        value: None,
        threshold: None,
        baseline: None,
        message: String::new(),
        key: "k".into(),
        seq: 0,
        fingerprint: None,
        escalated_from: None,
        evidence: Default::default(),
        batch: None,
    }
}

const NOW: Ts = Ts(1_780_000_000_000);

fn post(matchers: serde_json::Value, scope: &str) -> PostableSilence {
    serde_json::from_value(serde_json::json!({
        "matchers": matchers,
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": Ts(NOW.0 + 3_600_000).to_string(),
        "createdBy": "alice",
        "comment": "kernel patch",
        "scope": scope,
    }))
    .unwrap()
}

fn compiled(p: PostableSilence) -> std::sync::Arc<Compiled> {
    std::sync::Arc::new(p.check(&SilenceLimits::default(), NOW).unwrap())
}

#[test]
fn a_notify_silence_mutes_messages_never_actions_nor_what_asks_a_human() {
    let s = compiled(post(
        serde_json::json!([{"name": "service", "value": "web", "isRegex": false}]),
        "notify",
    ));
    let w = Windows::default();
    for tier in Tier::ALL {
        let d = decision(Action::Notify, tier, &[("service", "web")]);
        for (action, held) in [
            (Action::Notify, true),
            (Action::Resolve, true),
            (Action::Rollback, false),
            (Action::PauseRollout, false),
            (Action::Page, false),
            (Action::RequestApproval, false),
            (Action::SwitchTraffic, false),
        ] {
            let h = hold_for(
                action,
                "inc/0/x",
                &labels_of(&d),
                std::slice::from_ref(&s),
                &w,
                NOW,
            );
            assert_eq!(h.is_some(), held, "{tier} {action}");
        }
    }
    // Another service: nothing held.
    let other = decision(Action::Notify, Tier::Low, &[("service", "db")]);
    assert!(hold_for(Action::Notify, "k", &labels_of(&other), &[s], &w, NOW).is_none());
}

#[test]
fn an_all_silence_mutes_actions_but_not_what_a_human_approved() {
    let s = compiled(post(
        serde_json::json!([{"name": "instance", "value": "i-web-.*", "isRegex": true}]),
        "all",
    ));
    let w = Windows::default();
    let d = decision(
        Action::Rollback,
        Tier::Low,
        &[("service", "web"), ("instance", "i-web-3")],
    );
    let h = hold_for(
        Action::Rollback,
        "inc/0/rollback",
        &labels_of(&d),
        std::slice::from_ref(&s),
        &w,
        NOW,
    )
    .expect("held");
    assert_eq!(h.scope, Scope::All);
    assert!(
        h.detail.contains(&s.silence.id) && h.detail.contains("alice"),
        "{}",
        h.detail
    );
    for key in [
        "inc/0/request_approval/approved",
        "inc/0/request_approval/approved/switch_traffic",
    ] {
        assert!(
            hold_for(
                Action::Rollback,
                key,
                &labels_of(&d),
                std::slice::from_ref(&s),
                &w,
                NOW
            )
            .is_none(),
            "{key}"
        );
    }
    // Not yet started, and over: nothing held.
    assert!(
        hold_for(
            Action::Rollback,
            "k",
            &labels_of(&d),
            std::slice::from_ref(&s),
            &w,
            Ts(NOW.0 - 1)
        )
        .is_none()
    );
    assert!(
        hold_for(
            Action::Rollback,
            "k",
            &labels_of(&d),
            std::slice::from_ref(&s),
            &w,
            s.silence.ends_at
        )
        .is_none()
    );
}

#[test]
fn silences_match_the_rule_tier_and_severity_too() {
    let s = compiled(post(
        serde_json::json!([
            {"name": "alertname", "value": "http_5xx_ratio", "isRegex": false},
            {"name": "tier", "value": "low", "isRegex": false, "isEqual": true},
        ]),
        "notify",
    ));
    let w = Windows::default();
    let low = decision(Action::Notify, Tier::Low, &[("service", "web")]);
    let high = decision(Action::Notify, Tier::High, &[("service", "web")]);
    assert!(
        hold_for(
            Action::Notify,
            "k",
            &labels_of(&low),
            std::slice::from_ref(&s),
            &w,
            NOW
        )
        .is_some()
    );
    assert!(
        hold_for(
            Action::Notify,
            "k",
            &labels_of(&high),
            std::slice::from_ref(&s),
            &w,
            NOW
        )
        .is_none()
    );
}

#[test]
fn invalid_silences_name_every_problem_at_once() {
    let bad: PostableSilence = serde_json::from_value(serde_json::json!({
        "id": "abc",
        "matchers": [{"name": "service", "value": ".*", "isRegex": true}, {"name": "9x", "value": "a", "isRegex": false}],
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "yesterday",
        "createdBy": " ",
        "comment": "",
    }))
    .unwrap();
    let Invalid(errs) = bad.validate(&SilenceLimits::default(), NOW).unwrap_err();
    let all = errs.join("\n");
    for want in [
        "`id` given",
        "not a valid label name",
        "createdBy",
        "comment",
        "endsAt",
    ] {
        assert!(all.contains(want), "{want} in {all}");
    }
    // Every matcher matching "": refused.
    let empty = post(
        serde_json::json!([{"name": "service", "value": ".*", "isRegex": true}]),
        "notify",
    );
    assert!(empty.validate(&SilenceLimits::default(), NOW).is_err());
    // Longer than the maximum.
    let long = post(
        serde_json::json!([{"name": "service", "value": "web", "isRegex": false}]),
        "all",
    );
    let limits = SilenceLimits {
        max_duration: Dur::from_mins(30),
        ..SilenceLimits::default()
    };
    let Invalid(errs) = long.validate(&limits, NOW).unwrap_err();
    assert!(errs[0].contains("max_duration"), "{errs:?}");
}

#[test]
fn an_until_batch_silence_ends_at_the_maximum_at_the_latest() {
    let p: PostableSilence = serde_json::from_value(serde_json::json!({
        "matchers": [{"name": "service", "value": "web", "isRegex": false}],
        "startsAt": "2026-01-01T00:00:00Z",
        "until": {"service": "web", "batch": "2"},
        "createdBy": "alice",
        "comment": "batch 2 is noisy",
    }))
    .unwrap();
    let s = p.validate(&SilenceLimits::default(), NOW).unwrap();
    assert_eq!(s.starts_at, NOW, "a start in the past starts now");
    assert_eq!(
        s.ends_at,
        NOW.saturating_add(SilenceLimits::default().max_duration)
    );
    assert_eq!(s.until.as_ref().unwrap().batch, "2");
    // `silence ls` and the gate say its end as people read a time.
    let said = s.describe();
    let latest = crate::time::day_clock_words(s.ends_at);
    assert!(
        said.contains(&format!(
            "until batch 2 of web completes (at the latest {latest})"
        )) && latest.ends_with(" UTC")
            && !said.contains(&s.ends_at.to_string()),
        "{said}"
    );
}

fn windows(yaml: &str) -> Result<Windows, crate::config::Errors> {
    let path = std::path::Path::new("ripcord.yaml");
    let root = crate::config::yaml::parse(path, yaml).unwrap();
    let mut errs = crate::config::Errors::default();
    let crate::config::yaml::Value::Seq(items) = &root.value else {
        panic!()
    };
    let w = window::read(path, items, &mut errs);
    errs.into_result(w)
}

#[test]
fn a_maintenance_window_covers_its_local_hours_across_midnight() {
    let w = windows(
        r#"
- name: nightly
  scope: all
  matchers: ['service="web"']
  weekdays: [sat]
  start: "23:00"
  end: "02:00"
  time_zone: Asia/Shanghai
"#,
    )
    .unwrap();
    let at = |s: &str| Ts::parse_rfc3339(s).unwrap();
    let d = decision(Action::Rollback, Tier::Low, &[("service", "web")]);
    // Saturday 2026-12-05 23:30 in Shanghai is 15:30 UTC.
    for (t, held) in [
        ("2026-12-05T15:30:00Z", true),
        ("2026-12-05T17:59:00Z", true), // Sunday 01:59 local: opened Saturday
        ("2026-12-05T18:00:00Z", false), // 02:00 local: over
        ("2026-12-05T14:59:00Z", false), // 22:59 local
        ("2026-12-06T15:30:00Z", false), // Sunday 23:30: not a Saturday
    ] {
        assert_eq!(
            hold_for(Action::Rollback, "k", &labels_of(&d), &[], &w, at(t)).is_some(),
            held,
            "{t}"
        );
    }
}

#[test]
fn window_config_errors_are_all_reported() {
    let errs = windows(
        r#"
- name: a
  kind: freeze
  scope: all
  matchers: ['service=~".*"']
  weekdays: [funday]
  start: "25:00"
  end: "02:00"
  time_zone: Mars/Olympus
"#,
    )
    .unwrap_err()
    .to_string();
    for want in ["scope", "empty string", "funday", "25:00", "Mars/Olympus"] {
        assert!(errs.contains(want), "{want} in {errs}");
    }
}

#[test]
fn a_freeze_window_names_the_services_it_freezes() {
    let w = windows(
        r#"
- name: black-friday
  kind: freeze
  matchers: ['service=~"shop|cart"']
  start: "00:00"
  end: "24:00"
"#,
    )
    .unwrap();
    assert_eq!(w.freezes("shop", NOW).len(), 1);
    assert!(w.freezes("web", NOW).is_empty());
    // A freeze window mutes nothing.
    let d = decision(Action::Notify, Tier::Low, &[("service", "shop")]);
    assert!(hold_for(Action::Notify, "k", &labels_of(&d), &[], &w, NOW).is_none());
}

#[test]
fn until_batch_is_service_colon_batch() {
    assert_eq!(
        UntilBatch::parse(" web : 3 "),
        Ok(UntilBatch {
            service: "web".into(),
            batch: "3".into()
        })
    );
    for bad in ["web", "web:", ":3", ""] {
        let e = UntilBatch::parse(bad).unwrap_err();
        assert!(e.contains("expected SERVICE:BATCH"), "{bad}: {e}");
    }
}

fn journal() -> crate::journal::SqliteJournal {
    crate::journal::SqliteJournal::open(std::path::Path::new(":memory:"), false).unwrap()
}

#[test]
fn heavy_or_too_many_silences_are_refused_naming_the_cap() {
    let regex = |v: &str| serde_json::json!([{"name": "tier", "value": v, "isRegex": true}]);
    // The report's matcher: valid, matches nothing, megabytes compiled.
    let Invalid(errs) = post(regex("(?:\\w{60}){3}"), "all")
        .validate(&SilenceLimits::default(), NOW)
        .unwrap_err();
    assert!(
        errs.iter().any(|e| e.contains("silences.max_regex_bytes")),
        "{errs:?}"
    );
    let many: Vec<_> = (0..33)
        .map(|i| serde_json::json!({"name": "service", "value": format!("s{i}"), "isRegex": false}))
        .collect();
    let Invalid(errs) = post(serde_json::Value::Array(many), "all")
        .validate(&SilenceLimits::default(), NOW)
        .unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.contains("silences.max_matchers (32)")),
        "{errs:?}"
    );
    let mut big = post(regex("web"), "all");
    big.comment = "x".repeat(1900);
    let small = SilenceLimits {
        max_silence_bytes: 1024,
        ..SilenceLimits::default()
    };
    let Invalid(errs) = big.validate(&small, NOW).unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.contains("silences.max_silence_bytes (1024)")),
        "{errs:?}"
    );

    // The count in force, and the bytes budget.
    let mut j = journal();
    let limits = SilenceLimits {
        max_active: 2,
        ..SilenceLimits::default()
    };
    let guard = Guard::new(
        Windows::default(),
        limits,
        std::sync::Arc::new(crate::limits::Budget::new("silences", 1 << 20)),
    );
    for v in ["a", "b"] {
        create(&mut j, post(regex(v), "all"), &guard, NOW).unwrap();
    }
    let third = create(&mut j, post(regex("c"), "all"), &guard, NOW).unwrap_err();
    assert!(
        matches!(&third, SilenceError::Invalid(Invalid(e)) if e[0].contains("silences.max_active allows 2")),
        "{third}"
    );
    assert_eq!(
        crate::silence::http::status_of(&third),
        axum::http::StatusCode::BAD_REQUEST
    );
    let tight = Guard::new(
        Windows::default(),
        SilenceLimits::default(),
        std::sync::Arc::new(crate::limits::Budget::new("silences", 4096)),
    );
    let full = create(&mut journal(), post(regex("i-web-.*"), "all"), &tight, NOW).unwrap_err();
    assert!(
        full.to_string().contains("limits.silences_bytes (4096)"),
        "{full}"
    );
}

#[test]
fn the_guard_compiles_a_silence_once_and_counts_its_bytes() {
    let budget = std::sync::Arc::new(crate::limits::Budget::new("silences", 1 << 20));
    let guard = Guard::new(Windows::default(), SilenceLimits::default(), budget.clone());
    let mut j = journal();
    let s = create(
        &mut j,
        post(
            serde_json::json!([{"name": "instance", "value": "i-web-.*", "isRegex": true}]),
            "all",
        ),
        &guard,
        NOW,
    )
    .unwrap();
    let held = budget.used();
    assert!(held > 0);
    let first = guard.in_force();
    // Refreshed from the journal (as the dispatcher does): the same
    // compiled matchers, the same bytes.
    guard.set(crate::journal::Silences::silences(&j, NOW, false).unwrap());
    let again = guard.in_force();
    assert!(
        std::sync::Arc::ptr_eq(&first[0].matchers, &again[0].matchers),
        "not recompiled"
    );
    assert_eq!(budget.used(), held);
    // Expired: out of force, its bytes given back.
    expire(&mut j, &s.id, "bob", NOW).unwrap();
    guard.set(crate::journal::Silences::silences(&j, NOW, false).unwrap());
    assert!(guard.in_force().is_empty());
    assert_eq!(budget.used(), 0);
    // A stored silence this replica's limits refuse is left out, once.
    let mut heavy = s.clone();
    heavy.id = "heavy".into();
    heavy.ends_at = Ts(NOW.0 + 60_000);
    heavy.matchers[0].value = "(?:\\w{60}){3}".into();
    guard.set(vec![heavy.clone()]);
    guard.set(vec![heavy]);
    assert!(guard.in_force().is_empty());
}
