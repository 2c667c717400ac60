//! Arbitrary bytes as a JSON-lines replay file -> `replay::run` through an
//! engine with the shipped rules: never panics, returns Ok, counts every
//! line, and writes one JSON object per decision.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use ripcord::engine::{Engine, EngineConfig};
use ripcord::rule::RuleSet;
use ripcord::rule::load::{load_builtin, rule_set};

fn rules() -> Arc<RuleSet> {
    static RULES: OnceLock<Arc<RuleSet>> = OnceLock::new();
    RULES
        .get_or_init(|| {
            let files = load_builtin().expect("shipped rules load");
            Arc::new(rule_set(&files))
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let mut engine = Engine::new(rules(), EngineConfig::default());
    let mut out = Vec::new();
    let summary = ripcord::replay::run(
        &mut engine,
        data,
        &mut out,
        std::io::sink(),
        ripcord::output::Format::Json,
    )
    .expect("replay into memory cannot fail");
    let newlines = data.iter().filter(|b| **b == b'\n').count() as u64;
    let lines = newlines + u64::from(data.last().is_some_and(|b| *b != b'\n'));
    assert_eq!(summary.lines, lines, "line count");
    assert!(summary.malformed <= summary.lines);
    let written = out.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count() as u64;
    assert_eq!(summary.decisions, written, "decisions counted vs written");
    for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_slice(line).expect("decision is JSON");
        assert!(v.is_object(), "decision is not an object: {v}");
    }
});
