//! `ripcord run` as its own process against a real, separate broker
//! process: Apache Kafka (the KRaft node `scripts/with-kafka` starts for
//! the test command, shared: every test has its own topics and group) and
//! librdkafka's mock cluster hosted by `ripcord mock-broker`. Crashes,
//! restarts, rebalances with both group protocols, poison messages, a
//! broker going away (the mock cluster: the shared Kafka is never stopped).
//!
//! Every test compares what the live responder decided with what
//! `ripcord replay` decides on the same events: the engine is the same
//! code, so the sets of idempotency keys must be equal, with no key twice.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;

/// The consumer group protocol a test runs with.
#[derive(Clone, Copy, Debug)]
enum Protocol {
    /// The classic protocol; a 6 s session.
    Classic,
    /// KIP-848's: the broker sets the session (6 s in scripts/with-kafka).
    Consumer,
}

fn config(dir: &Path, topic: &str, group: &str) -> String {
    config_with(dir, topic, group, Protocol::Classic)
}

fn config_with(dir: &Path, topic: &str, group: &str, protocol: Protocol) -> String {
    let (protocol, session) = match protocol {
        Protocol::Classic => ("classic", "    session.timeout.ms: \"6000\"\n"),
        Protocol::Consumer => ("consumer", ""),
    };
    let cfg = format!(
        r#"
rules: rules
kafka:
  topics: [{topic}]
  group: {group}
  group_protocol: {protocol}
  dead_letter_topic: {topic}-dead
  properties:
{session}    auto.offset.reset: earliest
{debug}"#,
        // RIPCORD_TEST_KAFKA_DEBUG=cgrp,fetch turns on librdkafka's debug log.
        debug = std::env::var("RIPCORD_TEST_KAFKA_DEBUG")
            .map(|d| format!("    debug: \"{d}\"\n"))
            .unwrap_or_default()
    );
    let path = dir.join("ripcord.yaml");
    std::fs::write(&path, cfg).unwrap();
    path_str(&path)
}

/// 20 instances on 4 services; a sample every 200 ms of event time for
/// 15 s; instance k is down from 2 + k/2 s to 5 + k/2 s. Keyed by service.
fn stream(base: i64) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for step in 0..75 {
        let t = step * 200;
        for k in 0..20 {
            let down = t >= 2000 + k * 500 && t < 5000 + k * 500;
            let service = format!("svc-{}", k % 4);
            let payload = sample(
                "up",
                if down { 0.0 } else { 1.0 },
                base + t,
                &service,
                &format!("i-{k}"),
                "low",
            );
            out.push((service, payload));
        }
    }
    out
}

/// The keys `ripcord replay` decides for `events`.
fn expected(dir: &Path, events: &[(String, String)]) -> BTreeSet<String> {
    let file = dir.join("events.jsonl");
    let text: String = events.iter().map(|(_, p)| format!("{p}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let out = Command::new(ripcord_bin())
        .args([
            "replay",
            "--rules",
            &path_str(&dir.join("rules")),
            "--events",
            &path_str(&file),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["key"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    // 20 incidents, each: rollback, notify, resolve.
    assert_eq!(keys.len(), 60, "the scripted stream yields 60 decisions");
    keys
}

fn keys_of(r: &[serde_json::Value]) -> Vec<String> {
    r.iter()
        .map(|d| d["key"].as_str().unwrap().to_owned())
        .collect()
}

/// Each key printed once across all runs, and exactly the expected ones.
fn assert_once(all: &[String], want: &BTreeSet<String>) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for k in all {
        *counts.entry(k).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "decisions fired twice: {twice:?}");
    let got: BTreeSet<String> = all.iter().cloned().collect();
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}\nextra {extra:?}"
    );
}

/// Waits until the journal's positions for `topic` sum to `events`: every
/// event produced was processed and committed (a decision is printed as
/// its commit lands), so no duplicate can still be on its way.
fn wait_consumed(db: &Path, topic: &str, events: usize) {
    let consumed = || -> i64 {
        let c = rusqlite::Connection::open(db).unwrap();
        c.query_row(
            "SELECT coalesce(sum(next_offset), 0) FROM positions WHERE partition LIKE ?1",
            [format!("{topic}/%")],
            |r| r.get(0),
        )
        .unwrap_or(0)
    };
    let ok = wait_until(Duration::from_secs(60), || consumed() >= events as i64);
    assert!(ok, "consumed {} of {events} events", consumed());
}

fn journal_actions(db: &Path) -> usize {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("SELECT count(*) FROM actions", [], |r| r.get::<_, i64>(0))
        .unwrap() as usize
}

fn kill_and_restart(
    brokers: &str,
    topic: &str,
    partitions: i32,
    protocol: Protocol,
    create: impl Fn(&str, i32),
) {
    let dir = workdir_with_rules(DOWN_RULES);
    create(topic, partitions);
    create(&format!("{topic}-dead"), 1);
    let cfg = config_with(dir.path(), topic, &unique("e2e-restart"), protocol);
    let args = [
        "--brokers",
        brokers,
        "--config",
        &cfg,
        "--state",
        "state.db",
    ];
    let events = stream(now_millis());
    let want = expected(dir.path(), &events);
    let split = events.len() * 11 / 20;

    let a = Responder::start(dir.path(), &args);
    a.wait_warmed(Duration::from_secs(30));
    produce_spread(brokers, topic, Some(partitions), &events[..split]);
    // Let it get partway: some decisions out, then kill -9 without warning.
    assert!(
        wait_until(Duration::from_secs(30), || a.decisions().len() >= 20),
        "{}",
        a.stderr.text()
    );
    let (a_out, _) = a.kill9();
    let first: Vec<String> = a_out
        .all()
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["key"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        first.len() < want.len(),
        "the crash came too late to test anything"
    );

    produce_spread(brokers, topic, Some(partitions), &events[split..]);
    let b = Responder::start(dir.path(), &args);
    let done = wait_until(Duration::from_secs(60), || {
        first.len() + b.decisions().len() >= want.len()
    });
    // Until every event is committed: no duplicate can still be on its way.
    wait_consumed(&dir.path().join("state.db"), topic, events.len());
    let mut all = first.clone();
    all.extend(keys_of(&b.decisions()));
    assert!(
        done,
        "not all decisions after the restart:\n{}",
        b.stderr.text()
    );
    // Shown only if the test fails.
    println!("--- restarted ripcord's log:\n{}", b.stderr.text());
    assert_once(&all, &want);
    assert_eq!(
        journal_actions(&dir.path().join("state.db")),
        want.len(),
        "one journaled action per decision"
    );
    let (status, _, _, err) = b.terminate(Duration::from_secs(20));
    assert!(status.success(), "{}", err.text());
}

#[test]
fn kafka_kill_minus_nine_mid_stream_loses_nothing_and_repeats_nothing() {
    let k = Kafka::get();
    kill_and_restart(
        &k.brokers,
        &unique("ev-restart"),
        2,
        Protocol::Classic,
        |topic, n| k.create_topic(topic, n),
    );
}

/// The same with KIP-848's group protocol: the restarted member is handed
/// the dead one's partitions once the broker expires its session.
#[test]
fn kafka_consumer_protocol_kill_minus_nine_loses_nothing_and_repeats_nothing() {
    let k = Kafka::get();
    kill_and_restart(
        &k.brokers,
        &unique("ev-restart-848"),
        2,
        Protocol::Consumer,
        |topic, n| k.create_topic(topic, n),
    );
}

#[test]
fn mock_cluster_kill_minus_nine_mid_stream_loses_nothing_and_repeats_nothing() {
    // The mock cluster creates topics on demand; the first stream needs two
    // partitions, which the mock broker was started with.
    let m = MockBroker::start("ev-restart", 2);
    kill_and_restart(&m.brokers, "ev-restart", 2, Protocol::Classic, |_, _| {});
}

/// Members of one group on a new topic of `partitions` (and its
/// dead-letter topic), sharing one journal file (as on one host).
struct Group {
    dir: tempfile::TempDir,
    brokers: String,
    topic: String,
    cfg: String,
}

impl Group {
    fn new(k: &Kafka, name: &str, partitions: i32, protocol: Protocol) -> Group {
        let topic = unique(&format!("ev-{name}"));
        k.create_topic(&topic, partitions);
        k.create_topic(&format!("{topic}-dead"), 1);
        let dir = workdir_with_rules(DOWN_RULES);
        let cfg = config_with(
            dir.path(),
            &topic,
            &unique(&format!("e2e-{name}")),
            protocol,
        );
        Group {
            dir,
            brokers: k.brokers.clone(),
            topic,
            cfg,
        }
    }

    /// One more member.
    fn start(&self) -> Responder {
        Responder::start(
            self.dir.path(),
            &[
                "--brokers",
                &self.brokers,
                "--config",
                &self.cfg,
                "--state",
                "state.db",
            ],
        )
    }
}

/// Two members of one group: the second takes a partition from the first
/// (classic: everything is revoked and handed out again; KIP-848: only the
/// partition that moves), then the first leaves and the second takes all.
fn two_consumers_split_the_work_and_rebalance(protocol: Protocol) {
    let k = Kafka::get();
    let group = Group::new(&k, "split", 2, protocol);
    let topic = &group.topic;
    let events = stream(now_millis());
    let want = expected(group.dir.path(), &events);
    let (p1, p2) = (events.len() * 3 / 10, events.len() * 6 / 10);

    let a = group.start();
    a.wait_warmed(Duration::from_secs(30));
    produce_spread(&k.brokers, topic, Some(2), &events[..p1]);
    assert!(wait_until(Duration::from_secs(20), || !a
        .decisions()
        .is_empty()));

    let mut b = group.start();
    // The group rebalances: each gets one partition. A gives one up (and,
    // with the classic protocol, is handed the other back).
    b.wait_warmed(Duration::from_secs(40));
    assert!(
        wait_until(Duration::from_secs(20), || {
            let log = a.stderr.text();
            log.contains("partitions revoked")
                && match protocol {
                    Protocol::Classic => log.matches("partitions assigned").count() >= 2,
                    Protocol::Consumer => true,
                }
        }),
        "A was not reassigned:\n{}",
        a.stderr.text()
    );
    let a_before = a.decisions().len();
    produce_spread(&k.brokers, topic, Some(2), &events[p1..p2]);
    // A still decides on the partition it kept.
    assert!(
        wait_until(Duration::from_secs(20), || a.decisions().len() > a_before),
        "A lost the partition it kept:\n{}",
        a.stderr.text()
    );
    assert!(
        wait_until(Duration::from_secs(20), || !b.decisions().is_empty()),
        "B decided nothing (exit: {:?}):\n{}\n--- A:\n{}\n{}",
        b.child.try_wait(),
        b.stderr.text(),
        a.stderr.text(),
        b.metrics()
    );

    // A leaves gracefully; B takes over everything.
    let (status, _, a_out, a_err) = a.terminate(Duration::from_secs(20));
    assert!(status.success(), "{}", a_err.text());
    produce_spread(&k.brokers, topic, Some(2), &events[p2..]);
    let a_keys: Vec<String> = a_out
        .all()
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["key"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let done = wait_until(Duration::from_secs(60), || {
        a_keys.len() + b.decisions().len() >= want.len()
    });
    wait_consumed(&group.dir.path().join("state.db"), topic, events.len());
    let mut all = a_keys.clone();
    all.extend(keys_of(&b.decisions()));
    assert!(done, "B did not finish the stream:\n{}", b.stderr.text());
    assert_once(&all, &want);
}

#[test]
fn kafka_two_consumers_split_the_work_and_rebalance() {
    two_consumers_split_the_work_and_rebalance(Protocol::Classic);
}

#[test]
fn kafka_consumer_protocol_two_consumers_split_the_work_and_rebalance() {
    two_consumers_split_the_work_and_rebalance(Protocol::Consumer);
}

/// More replicas than partitions: the one the group gives nothing is ready
/// (a stand-by, or a rolling restart never finishes), and takes the
/// partition over when its owner dies.
fn a_member_given_no_partition_is_ready_and_takes_over(protocol: Protocol) {
    let k = Kafka::get();
    let group = Group::new(&k, "standby", 1, protocol);
    let first = group.start();
    first.wait_warmed(Duration::from_secs(30));
    let second = group.start();
    let readyz = |r: &Responder| {
        reqwest::blocking::get(r.url("/readyz"))
            .ok()
            .map(|x| (x.status().as_u16(), x.text().unwrap_or_default()))
    };
    let standing_by = |r: &Responder| {
        readyz(r).is_some_and(|(status, body)| status == 200 && body.contains("no partition"))
    };
    // Either may end up holding the partition (the classic protocol hands
    // everything out again when the second joins).
    assert!(
        wait_until(Duration::from_secs(30), || standing_by(&first)
            || standing_by(&second)),
        "the member holding nothing never said it was ready: {:?} / {:?}\n{}",
        readyz(&first),
        readyz(&second),
        second.stderr.text()
    );
    let (owner, b) = if standing_by(&second) {
        (first, second)
    } else {
        (second, first)
    };
    assert!(
        wait_until(Duration::from_secs(30), || readyz(&owner).is_some_and(
            |(status, body)| status == 200 && body.contains("1 Kafka partition")
        )),
        "the owner is not ready: {:?}",
        readyz(&owner)
    );
    let taken_over_from = b.stderr.text().matches("partition warmed").count();
    owner.kill9();
    // The owner is gone: after its session the stand-by owns the partition.
    assert!(
        wait_until(Duration::from_secs(40), || b
            .stderr
            .text()
            .matches("partition warmed")
            .count()
            > taken_over_from),
        "the stand-by never took the partition over:\n{}",
        b.stderr.text()
    );
    let base = now_millis();
    let events: Vec<(String, String)> = (0..8)
        .map(|i| {
            let v = if i < 2 { 1.0 } else { 0.0 };
            let e = sample("up", v, base + i * 500, "svc", "i-1", "low");
            ("svc".to_owned(), e)
        })
        .collect();
    produce(&k.brokers, &group.topic, &events);
    assert!(
        wait_until(Duration::from_secs(30), || b
            .decisions()
            .iter()
            .any(|d| d["action"] == "rollback")),
        "the stand-by never acted:\n{}",
        b.stderr.text()
    );
}

#[test]
fn kafka_a_member_given_no_partition_is_ready_and_takes_over() {
    a_member_given_no_partition_is_ready_and_takes_over(Protocol::Classic);
}

#[test]
fn kafka_consumer_protocol_a_member_given_no_partition_is_ready_and_takes_over() {
    a_member_given_no_partition_is_ready_and_takes_over(Protocol::Consumer);
}

#[test]
fn kafka_poison_messages_are_skipped_counted_and_dead_lettered() {
    let k = Kafka::get();
    let topic = &unique("ev-poison");
    let dead_topic = format!("{topic}-dead");
    k.create_topic(topic, 1);
    k.create_topic(&dead_topic, 1);
    let dir = workdir_with_rules(DOWN_RULES);
    let cfg = config(dir.path(), topic, &unique("e2e-poison"));
    let r = Responder::start(
        dir.path(),
        &[
            "--brokers",
            &k.brokers,
            "--config",
            &cfg,
            "--state",
            "state.db",
        ],
    );
    r.wait_warmed(Duration::from_secs(30));
    let base = now_millis();
    let good = |t: i64, v: f64| {
        (
            "svc".to_owned(),
            sample("up", v, base + t, "svc", "i-1", "low"),
        )
    };
    let far_future = sample("up", 0.0, base + 3_600_000, "svc", "i-1", "low");
    let messages = vec![
        good(0, 1.0),
        ("svc".into(), "{\"metric\":".into()),
        good(500, 0.0),
        (
            "svc".into(),
            r#"{"metric":"up","value":"zero","ts":0}"#.into(),
        ),
        ("svc".into(), far_future),
        good(1000, 0.0),
        good(1500, 0.0),
        good(2600, 0.0),
        ("svc".into(), String::new()),
        good(3000, 1.0),
    ];
    produce(&k.brokers, topic, &messages);
    // The poison never blocks the partition: the incident opens and resolves.
    assert!(
        wait_until(Duration::from_secs(20), || r
            .decisions()
            .iter()
            .any(|d| d["action"] == "resolve")),
        "{}",
        r.stderr.text()
    );
    let actions: Vec<String> = r
        .decisions()
        .iter()
        .map(|d| d["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions, ["rollback", "notify", "resolve"]);
    let log = r.stderr.text();
    for offset in [1, 3, 4, 8] {
        assert!(
            log.contains(&format!("offset={offset}")),
            "poison at offset {offset} not logged:\n{log}"
        );
    }
    let metrics = r.metrics();
    assert!(
        metrics.contains(r#"ripcord_events_total{source="kafka",outcome="decode_error"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"ripcord_events_total{source="kafka",outcome="from_the_future"} 1"#),
        "{metrics}"
    );
    let dead = consume_all(&k.brokers, &dead_topic, 4, Duration::from_secs(20));
    assert_eq!(dead.len(), 4, "{dead:?}");
    assert_eq!(dead[0].0, "{\"metric\":");
    let headers: BTreeMap<String, String> = dead[1].1.iter().cloned().collect();
    assert_eq!(headers["ripcord-source-offset"], "3");
    // Where it came from, so an operator can find it.
    assert_eq!(headers["ripcord-source-topic"], *topic, "{headers:?}");
    assert_eq!(headers["ripcord-source-partition"], "0", "{headers:?}");
    assert!(
        headers["ripcord-error"].contains("field `value`"),
        "{headers:?}"
    );
}

/// The broker goes away and comes back (librdkafka's mock cluster: the
/// test command's Apache Kafka is shared by every test, so it stays up).
#[test]
fn mock_cluster_broker_down_then_up() {
    let mut m = MockBroker::start("ev-down", 1);
    let dir = workdir_with_rules(DOWN_RULES);
    let cfg = config(dir.path(), "ev-down", "e2e-down");
    let r = Responder::start(
        dir.path(),
        &[
            "--brokers",
            &m.brokers,
            "--config",
            &cfg,
            "--state",
            "state.db",
        ],
    );
    r.wait_warmed(Duration::from_secs(30));
    let base = now_millis();
    let ev = |t: i64, v: f64| {
        (
            "svc".to_owned(),
            sample("up", v, base + t, "svc", "i-1", "low"),
        )
    };
    produce(&m.brokers, "ev-down", &[ev(0, 1.0), ev(500, 0.0)]);
    m.down();
    // Down until ripcord has seen it down (not for a set time).
    assert!(
        wait_until(Duration::from_secs(30), || r
            .stderr
            .text()
            .contains("brokers are down")),
        "ripcord never saw the broker down:\n{}",
        r.stderr.text()
    );
    m.up();
    produce(
        &m.brokers,
        "ev-down",
        &[ev(1000, 0.0), ev(2200, 0.0), ev(3000, 1.0)],
    );
    assert!(
        wait_until(Duration::from_secs(40), || r
            .decisions()
            .iter()
            .any(|d| d["action"] == "resolve")),
        "{}",
        r.stderr.text()
    );
    let actions: Vec<String> = r
        .decisions()
        .iter()
        .map(|d| d["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions, ["rollback", "notify", "resolve"]);
}

#[test]
fn embedded_broker_by_default_and_graceful_shutdown() {
    let dir = workdir_with_rules(DOWN_RULES);
    let r = Responder::start(dir.path(), &["--rules", "rules", "--state", "state.db"]);
    assert!(
        !r.brokers.is_empty(),
        "no `kafka bootstrap:` line:\n{}",
        r.stderr.text()
    );
    assert!(r.stderr.text().contains("topic: ripcord-events"));
    r.wait_warmed(Duration::from_secs(30));
    let base = now_millis();
    let ev = |t: i64, v: f64| {
        (
            "svc".to_owned(),
            sample("up", v, base + t, "svc", "i-1", "low"),
        )
    };
    produce(
        &r.brokers,
        "ripcord-events",
        &[ev(0, 0.0), ev(1100, 0.0), ev(2100, 0.0)],
    );
    assert!(
        wait_until(Duration::from_secs(20), || r.decisions().len() >= 2),
        "{}",
        r.stderr.text()
    );
    let (status, took, _, err) = r.terminate(Duration::from_secs(15));
    assert!(status.success(), "{}", err.text());
    assert!(
        took < Duration::from_secs(11),
        "shutdown took {took:?}, over the 10 s grace"
    );
}
