//! Arbitrary UTF-8 text as a rule file -> `parse_file`: never panics; a
//! file that parsed with no errors has rules with valid, non-empty names,
//! and its test cases have names and events.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ripcord::config::Errors;
use ripcord::rule::RuleKind;
use ripcord::rule::load::{parse_file, rule_set};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut errs = Errors::default();
    let file = parse_file(Path::new("fuzz.yaml"), text, &mut errs);
    let _ = errs.to_string();
    for e in &errs.0 {
        assert!(!e.message.is_empty(), "an error with no message");
    }
    let Some(file) = file else {
        assert!(
            !errs.is_empty(),
            "parse_file returned None without an error"
        );
        return;
    };
    if !errs.is_empty() {
        return;
    }
    for r in &file.rules {
        assert!(!r.name.is_empty(), "a rule with an empty name was accepted");
        if let RuleKind::Metric(m) = &r.kind {
            assert!(
                ripcord::decode::is_metric_name(&m.metric),
                "rule {}: invalid metric {:?} accepted",
                r.name,
                m.metric
            );
            assert!(
                m.condition.threshold.is_finite(),
                "rule {}: non-finite threshold",
                r.name
            );
            assert!(
                m.clear.threshold.is_finite(),
                "rule {}: non-finite clear",
                r.name
            );
            for (_, c) in &m.escalate {
                assert!(
                    c.threshold.is_finite(),
                    "rule {}: non-finite escalation",
                    r.name
                );
            }
        }
        for g in &r.group_by {
            assert!(
                ripcord::decode::is_label_name(g),
                "rule {}: bad group_by {g:?}",
                r.name
            );
        }
    }
    for c in &file.cases {
        assert!(
            !c.name.is_empty(),
            "a test case with an empty name was accepted"
        );
    }
    // What the loader builds from an accepted file must index cleanly.
    let set = rule_set(std::slice::from_ref(&file));
    assert_eq!(set.len(), file.rules.len());
    let _ = set.max_lookback();
});
