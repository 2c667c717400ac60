//! The first seconds of a responder: every event produced after `ripcord
//! run` started is acted on, even those sent before the consumer group has
//! formed (before any partition is assigned), and `/readyz` says 200 only
//! once every assigned partition is warmed and consuming.
//!
//! No `auto.offset.reset` here: the defaults are what a new user runs.

mod support;

use std::path::Path;
use std::time::Duration;

use support::*;

fn config(dir: &Path, brokers: Option<&str>, topic: &str) -> String {
    config_in(dir, brokers, topic, "first-second")
}

fn config_in(dir: &Path, brokers: Option<&str>, topic: &str, group: &str) -> String {
    let brokers = brokers
        .map(|b| format!("  brokers: [\"{b}\"]\n"))
        .unwrap_or_else(|| "  embedded_listen: 127.0.0.1:0\n".into());
    let cfg = format!(
        "rules: rules\nkafka:\n{brokers}  topics: [{topic}]\n  group: {group}\n  properties:\n    session.timeout.ms: \"6000\"\n"
    );
    let path = dir.join("ripcord.yaml");
    std::fs::write(&path, cfg).unwrap();
    path_str(&path)
}

/// `instance` down for 3 s from `base` (then up): one rollback.
fn outage(base: i64, instance: &str) -> Vec<(String, String)> {
    [(0, 0.0), (1000, 0.0), (2000, 0.0), (3000, 0.0), (3500, 1.0)]
        .iter()
        .map(|(t, v)| {
            (
                "svc".to_owned(),
                sample("up", *v, base + t, "svc", instance, "low"),
            )
        })
        .collect()
}

fn readyz(r: &Responder) -> (u16, String) {
    let resp = reqwest::blocking::get(r.url("/readyz")).unwrap();
    (resp.status().as_u16(), resp.text().unwrap())
}

fn rolled_back(r: &Responder, instance: &str) -> bool {
    r.decisions()
        .iter()
        .any(|d| d["action"] == "rollback" && d["labels"]["instance"] == instance)
}

/// Produces an outage at once (the group has not formed), then another
/// right after `/readyz` first answers 200: both are rolled back.
fn both_outages_are_acted_on(r: &Responder, brokers: &str, topic: &str) {
    let (status, body) = readyz(r);
    assert_eq!(
        status, 503,
        "ready before any partition was assigned: {body}"
    );
    assert!(body.starts_with("not ready: "), "{body}");
    produce(brokers, topic, &outage(now_millis(), "i-early"));
    let ok = wait_until(Duration::from_secs(40), || readyz(r).0 == 200);
    assert!(ok, "never ready:\n{}", r.stderr.text());
    let ready_lines = || {
        r.stderr
            .all()
            .iter()
            .filter(|l| l.starts_with("ready: "))
            .count()
    };
    let ok = wait_until(Duration::from_secs(5), || ready_lines() == 1);
    assert!(ok, "one ready: line\n{}", r.stderr.text());
    produce(brokers, topic, &outage(now_millis(), "i-late"));
    for instance in ["i-early", "i-late"] {
        let ok = wait_until(Duration::from_secs(30), || rolled_back(r, instance));
        assert!(
            ok,
            "{instance} was never rolled back; decisions {:?}\n{}",
            r.decisions(),
            r.stderr.text()
        );
    }
    let (_, body) = readyz(r);
    assert!(body.contains("warmed and consuming"), "{body}");
    assert_eq!(ready_lines(), 1, "{}", r.stderr.text());
}

#[test]
fn embedded_broker_acts_on_events_sent_before_the_group_formed() {
    let dir = workdir_with_rules(DOWN_RULES);
    let cfg = config(dir.path(), None, "ripcord-events");
    let r = Responder::start(dir.path(), &["--config", &cfg, "--state", "state.db"]);
    assert!(!r.brokers.is_empty(), "{}", r.stderr.text());
    both_outages_are_acted_on(&r, &r.brokers.clone(), "ripcord-events");
}

#[test]
fn kafka_acts_on_events_sent_before_the_group_formed() {
    let kafka = Kafka::get();
    let topic = unique("first");
    kafka.create_topic(&topic, 2);
    // History from before the start only warms: an outage that ended
    // before ripcord started is never acted on.
    produce(
        &kafka.brokers,
        &topic,
        &outage(now_millis() - 20_000, "i-old"),
    );
    std::thread::sleep(Duration::from_millis(50));
    let dir = workdir_with_rules(DOWN_RULES);
    let cfg = config_in(dir.path(), Some(&kafka.brokers), &topic, &unique("first"));
    let r = Responder::start(dir.path(), &["--config", &cfg, "--state", "state.db"]);
    both_outages_are_acted_on(&r, &kafka.brokers, &topic);
    assert!(!rolled_back(&r, "i-old"), "{:?}", r.decisions());
}

#[test]
fn a_restart_against_a_new_embedded_broker_starts_afresh() {
    let dir = workdir_with_rules(DOWN_RULES);
    let cfg = config(dir.path(), None, "ripcord-events");
    let args = ["--config", cfg.as_str(), "--state", "state.db"];
    let r = Responder::start(dir.path(), &args);
    let brokers = r.brokers.clone();
    // Enough messages that the journal's positions lie past the new
    // broker's (empty) partitions after the restart.
    let many: Vec<(String, String)> = (0..40)
        .flat_map(|i| outage(now_millis(), &format!("i-{i}")))
        .collect();
    produce(&brokers, "ripcord-events", &many);
    let ok = wait_until(Duration::from_secs(40), || rolled_back(&r, "i-39"));
    assert!(ok, "{}", r.stderr.text());
    let (status, _, _, err) = r.terminate(Duration::from_secs(15));
    assert!(status.success(), "{}", err.text());

    let r = Responder::start(dir.path(), &args);
    produce(
        &r.brokers.clone(),
        "ripcord-events",
        &outage(now_millis(), "i-new"),
    );
    let ok = wait_until(Duration::from_secs(40), || rolled_back(&r, "i-new"));
    assert!(
        ok,
        "the first outage after a restart was not acted on:\n{}",
        r.stderr.text()
    );
    let log = r.stderr.text();
    assert!(
        log.contains("the embedded broker is new at every start"),
        "the stale positions are explained:\n{log}"
    );
    assert!(
        !log.contains("WARN") || !log.to_lowercase().contains("offset"),
        "no warning about offsets:\n{log}"
    );
}
