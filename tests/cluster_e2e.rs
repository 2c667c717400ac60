//! ripcord as a cluster: two or three `ripcord run` replicas sharing a
//! PostgreSQL journal (the private cluster `scripts/with-postgres` starts;
//! each test gets a database of its own) and Apache Kafka (the test
//! command's KRaft node, from `scripts/with-kafka`; each test has its own
//! topic and group). One replica is killed (`kill -9`) or stopped (`SIGSTOP`)
//! while it holds something; the others carry on, and nothing runs twice.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const LINK_SECRET: &str = "cluster-test-link-secret";

/// A database of its own on the test cluster.
fn database() -> String {
    pg_database(&format!("cluster_{}_{}", std::process::id(), free_port()))
}

fn query(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    pg_rows(url, sql)
}

fn count(url: &str, sql: &str) -> i64 {
    pg_count(url, sql)
}

/// A rollback script: appends `<instance>` to `calls.log` when it starts,
/// then sleeps `ROLLBACK_SECS` (0 unless set).
fn script(dir: &Path) -> PathBuf {
    let s = dir.join("rollback.sh");
    std::fs::write(
        &s,
        format!(
            "echo \"$1\" >> '{}'\nsleep \"${{ROLLBACK_SECS:-0}}\"\necho \"rolled back $1\"\n",
            dir.join("calls.log").display()
        ),
    )
    .unwrap();
    s
}

fn calls(dir: &Path) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for l in std::fs::read_to_string(dir.join("calls.log"))
        .unwrap_or_default()
        .lines()
    {
        *out.entry(l.to_owned()).or_insert(0) += 1;
    }
    out
}

struct Cluster {
    dir: tempfile::TempDir,
    db: String,
    kafka: Kafka,
    topic: String,
    group: String,
    capture: support::Capture,
    /// `rules/` for every replica; `None`: the shipped rules.
    rules: Option<&'static str>,
}

impl Cluster {
    fn new(partitions: i32) -> Cluster {
        let kafka = Kafka::get();
        let topic = unique("cluster");
        kafka.create_topic(&topic, partitions);
        Cluster {
            dir: tempfile::tempdir().unwrap(),
            db: database(),
            kafka,
            topic,
            group: unique("cluster"),
            capture: support::Capture::start(),
            rules: None,
        }
    }

    fn with_rules(mut self, rules: &'static str) -> Cluster {
        std::fs::create_dir_all(self.dir.path().join("rules")).unwrap();
        std::fs::write(self.dir.path().join("rules/test.yaml"), rules).unwrap();
        self.rules = Some(rules);
        self
    }

    fn start(&self, name: &str, rollback_secs: u64) -> Responder {
        let port = free_port();
        let cap = format!("http://127.0.0.1:{}", self.capture.port);
        let cfg = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &cfg,
            format!(
                r#"journal: {{url: "{db}", ca_file: "{ca}"}}
{rules}kafka:
  brokers: ["{brokers}"]
  topics: [{topic}]
  group: {group}
  properties: {{session.timeout.ms: "6000", auto.offset.reset: earliest}}
http: {{public_url: "http://127.0.0.1:{port}"}}
channels:
  chat: {{type: webhook, url: "{cap}/chat", rate: 100/s}}
  sms: {{type: webhook, url: "{cap}/sms", rate: 100/s}}
routing:
  low: {{notify: [chat]}}
  medium: {{notify: [chat]}}
  high: {{notify: [chat]}}
escalation:
  high: [{{after: 0s, channels: [chat]}}, {{after: 10s, channels: [sms]}}]
approvals: {{link_secret: "{LINK_SECRET}"}}
executors:
  rollback:
    command: {{argv: [/bin/sh, "{script}", "{{instance}}"], env: [ROLLBACK_SECS, PATH], timeout: 2m}}
    verify: {{delay: 6s, http: {{method: GET, url: "{cap}/verify/{{instance}}"}}}}
"#,
                db = self.db,
                ca = pg_ca(),
                brokers = self.kafka.brokers,
                group = self.group,
                topic = self.topic,
                script = script(self.dir.path()).display(),
                rules = if self.rules.is_some() { "rules: rules\n" } else { "" },
            ),
        )
        .unwrap();
        let r = Responder::start_with_env(
            self.dir.path(),
            &format!("127.0.0.1:{port}"),
            &["--config", cfg.to_str().unwrap()],
            &[("ROLLBACK_SECS", &rollback_secs.to_string())],
        );
        let ready = wait_until(Duration::from_secs(60), || {
            reqwest::blocking::get(r.url("/readyz")).is_ok_and(|x| x.status() == 200)
        });
        assert!(ready, "replica {name} never ready:\n{}", r.stderr.text());
        r
    }

    fn action_states(&self, action: &str) -> Vec<String> {
        query(
            &self.db,
            &format!("SELECT state FROM actions WHERE action = '{action}' ORDER BY seq"),
        )
        .into_iter()
        .map(|r| r[0].clone().unwrap_or_default())
        .collect()
    }
}

/// Waits until no action in the journal can still run (each is done,
/// failed, unknown, skipped ...): a second run of anything would need one.
fn settled(c: &Cluster) {
    let ok = wait_until(Duration::from_secs(60), || {
        count(
            &c.db,
            "SELECT count(*) FROM actions WHERE state IN ('pending', 'running', 'approved')",
        ) == 0
    });
    assert!(ok, "{:?}", query(&c.db, "SELECT key, state FROM actions"));
}

fn alert(fp: &str, instance: &str, tier: &str, severity: &str) -> Value {
    json!({
        "status": "firing",
        "labels": {"alertname": "Down", "service": "pay", "instance": instance, "tier": tier, "severity": severity},
        "annotations": {"summary": "down"},
        "startsAt": rfc3339(now_millis()), "endsAt": "0001-01-01T00:00:00Z", "fingerprint": fp,
    })
}

/// (a) The replica that holds a pending approval dies: a human approves
/// through another replica; the rollback runs once, on a survivor.
#[test]
fn an_approval_pending_on_a_dead_replica_is_approved_through_another_and_rolls_back_once() {
    let c = Cluster::new(1);
    let a = c.start("a", 0);
    a.post_alerts(vec![alert("fp-a", "i-a", "medium", "warning")]);
    let ok = wait_until(Duration::from_secs(20), || {
        count(
            &c.db,
            "SELECT count(*) FROM approvals WHERE state = 'awaiting'",
        ) == 1
    });
    assert!(ok, "no approval requested:\n{}", a.stderr.text());
    let b = c.start("b", 0);
    let _ = a.kill9();
    let id = query(&c.db, "SELECT incident_id FROM approvals")[0][0]
        .clone()
        .unwrap();
    let r = reqwest::blocking::Client::new()
        .post(b.url(&format!("/api/v1/incidents/{id}/approve")))
        .body(r#"{"by": "carol"}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let ran = wait_until(Duration::from_secs(30), || {
        calls(c.dir.path()).get("i-a") == Some(&1)
    });
    assert!(ran, "the approved rollback never ran:\n{}", b.stderr.text());
    // One journaled rollback, ended: no replica can run it again.
    assert!(
        wait_until(Duration::from_secs(10), || c.action_states("rollback")
            == ["done"]),
        "{:?}",
        c.action_states("rollback")
    );
    assert_eq!(calls(c.dir.path()).get("i-a"), Some(&1), "ran once");
}

/// (b) The replica running a paging chain dies after its first step; the
/// next step is sent by a survivor on time.
#[test]
fn a_paging_chain_of_a_dead_replica_goes_on_from_a_survivor_on_time() {
    let c = Cluster::new(1);
    let a = c.start("a", 0);
    let _b = c.start("b", 0);
    let started = Instant::now();
    a.post_alerts(vec![alert("fp-b", "i-b", "high", "critical")]);
    let first = wait_until(Duration::from_secs(10), || {
        !c.capture.times("/chat").is_empty()
    });
    assert!(first, "the first step never went out:\n{}", a.stderr.text());
    let _ = a.kill9();
    let second = wait_until(Duration::from_secs(30), || {
        !c.capture.times("/sms").is_empty()
    });
    assert!(second, "the second step never went out");
    let at = c.capture.times("/sms")[0].duration_since(started);
    // Due 10 s after paging started; a survivor's scheduler looks every
    // second or so.
    assert!(
        at >= Duration::from_secs(9) && at <= Duration::from_secs(16),
        "step 2 went out after {at:?}"
    );
    // Step 2 is the last: once the journal says the chain is exhausted no
    // replica can claim it again, and any second send would be in by then.
    let exhausted = wait_until(Duration::from_secs(30), || {
        count(
            &c.db,
            "SELECT count(*) FROM escalations WHERE state = 'exhausted'",
        ) == 1
    });
    assert!(
        exhausted,
        "{:?}",
        query(&c.db, "SELECT step, state FROM escalations")
    );
    assert_eq!(c.capture.times("/sms").len(), 1, "step 2 sent once");
}

/// (c) The replica running a rollback dies mid-run: a survivor marks it
/// `unknown` after the dead one's lease, and never runs it again.
#[test]
fn a_rollback_running_on_a_dead_replica_becomes_unknown_and_never_runs_again() {
    let c = Cluster::new(1);
    let a = c.start("a", 30);
    a.post_alerts(vec![alert("fp-c", "i-c", "low", "critical")]);
    let running = wait_until(Duration::from_secs(20), || {
        calls(c.dir.path()).get("i-c") == Some(&1)
    });
    assert!(running, "the rollback never started:\n{}", a.stderr.text());
    let b = c.start("b", 0);
    let _ = a.kill9();
    let unknown = wait_until(Duration::from_secs(40), || {
        c.action_states("rollback") == ["unknown"]
    });
    assert!(
        unknown,
        "{:?}\n{}",
        c.action_states("rollback"),
        b.stderr.text()
    );
    // `unknown` is final: no replica re-runs it (the claim is journaled).
    assert_eq!(calls(c.dir.path()).get("i-c"), Some(&1), "never re-run");
    assert_eq!(c.action_states("rollback"), ["unknown"]);
}

/// (d) A verification due after a rollback on a replica that died runs
/// once, on a survivor.
#[test]
fn a_verification_due_on_a_dead_replica_runs_once_on_a_survivor() {
    let c = Cluster::new(1);
    let a = c.start("a", 0);
    let _b = c.start("b", 0);
    a.post_alerts(vec![alert("fp-d", "i-d", "low", "critical")]);
    let done = wait_until(Duration::from_secs(20), || {
        c.action_states("rollback") == ["done"]
    });
    assert!(done, "{:?}", c.action_states("rollback"));
    let _ = a.kill9();
    let checked = wait_until(Duration::from_secs(30), || {
        !c.capture.times("/verify/i-d").is_empty()
    });
    assert!(checked, "the verification never ran");
    // Its row goes when its outcome is journaled: nothing left to run.
    assert!(
        wait_until(Duration::from_secs(30), || count(
            &c.db,
            "SELECT count(*) FROM verifications"
        ) == 0),
        "the verification is still due"
    );
    assert_eq!(c.capture.times("/verify/i-d").len(), 1, "ran once");
}

/// A replica stopped past its session timeout loses its partition to
/// another; woken up, it commits and acts on nothing it lost. Every
/// outage is rolled back once, whoever decided it. Also measures how long
/// after the stop the survivor acts.
#[test]
fn a_replica_stopped_past_its_session_commits_and_acts_on_nothing_it_lost() {
    let c = Cluster::new(1);
    let a = c.start("a", 0);
    let b = c.start("b", 0);
    // Alertmanager payloads over Kafka: decided by the partition's owner.
    let firing = |instance: &str| -> (String, String) {
        let payload = json!({"version": "4", "alerts": [alert(&format!("fp-{instance}"), instance, "low", "critical")]});
        ("pay".to_owned(), payload.to_string())
    };
    produce(&c.kafka.brokers, &c.topic, &[firing("i-before")]);
    assert!(
        wait_until(Duration::from_secs(30), || calls(c.dir.path())
            .contains_key("i-before")),
        "{}\n{}",
        a.stderr.text(),
        b.stderr.text()
    );
    // Whoever owns the partition is stopped for twice the session timeout.
    let owner_is_a = query(&c.db, "SELECT owner FROM partition_owners")[0][0]
        .clone()
        .unwrap_or_default()
        .contains(&a.child.id().to_string());
    let (stopped, survivor) = if owner_is_a { (&a, &b) } else { (&b, &a) };
    let mark = stopped.stdout.all().len();
    stopped.signal("-STOP");
    let stop_at = Instant::now();
    produce(&c.kafka.brokers, &c.topic, &[firing("i-during")]);
    let acted = wait_until(Duration::from_secs(40), || {
        calls(c.dir.path()).contains_key("i-during")
    });
    assert!(
        acted,
        "the survivor never took over:\n{}",
        survivor.stderr.text()
    );
    let failover = stop_at.elapsed();
    eprintln!("failover: the survivor acted {failover:?} after the owner stopped");
    if std::env::var_os("CLUSTER_DEBUG").is_some() {
        eprintln!("{}", survivor.stderr.text());
    }
    assert!(failover <= Duration::from_secs(6 + 5 + 5), "{failover:?}");
    let woke_at = stopped.stderr.all().len();
    stopped.signal("-CONT");
    // The woken replica learns it was dropped from the group (its
    // partition revoked) before the next event: it is then as stale as a
    // replica gets, and must still not act twice.
    let rejoined = wait_until(Duration::from_secs(30), || {
        stopped.stderr.all()[woke_at..]
            .iter()
            .any(|l| l.contains("partitions revoked") || l.contains("rebalance error"))
    });
    assert!(
        rejoined,
        "the woken replica never rejoined:\n{}",
        stopped.stderr.text()
    );
    produce(&c.kafka.brokers, &c.topic, &[firing("i-after")]);
    assert!(wait_until(Duration::from_secs(30), || calls(c.dir.path())
        .contains_key("i-after")));
    settled(&c);
    for (instance, n) in calls(c.dir.path()) {
        assert_eq!(n, 1, "{instance} rolled back {n} times");
    }
    // The woken replica printed (committed) nothing about the outage it lost.
    let after: Vec<String> = stopped.stdout.all()[mark..].to_vec();
    assert!(
        !after.iter().any(|l| l.contains("i-during")),
        "the stopped replica committed what it lost: {after:?}"
    );
    let keys = query(&c.db, "SELECT count(*), count(DISTINCT key) FROM decisions");
    assert_eq!(keys[0][0], keys[0][1]);
}

/// Metric samples posted to one replica's HTTP endpoint go onto the topic
/// keyed by service, so each service's window lives on its partition's
/// owner: every outage is decided once in the cluster, by the owner, which
/// is the other replica for some of them.
#[test]
fn http_samples_reach_their_partitions_owner_and_decide_once() {
    let c = Cluster::new(4).with_rules(DOWN_RULES);
    let a = c.start("a", 0);
    let b = c.start("b", 0);
    let owners = wait_until(Duration::from_secs(30), || {
        count(&c.db, "SELECT count(DISTINCT owner) FROM partition_owners") == 2
    });
    assert!(owners, "the two replicas never shared the partitions");
    let now = now_millis();
    let services: Vec<String> = (0..16).map(|k| format!("svc-{k}")).collect();
    let body: Vec<Value> = services
        .iter()
        .flat_map(|s| {
            (0..=12).map(move |i| {
                serde_json::from_str(&sample(
                    "up",
                    0.0,
                    now - 3000 + i * 250,
                    s,
                    &format!("{s}-i"),
                    "low",
                ))
                .unwrap()
            })
        })
        .collect();
    let r = reqwest::blocking::Client::new()
        .post(a.url("/api/v1/events"))
        .header("Content-Type", "application/json")
        .body(Value::Array(body.clone()).to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().unwrap();
    assert_eq!(answer["forwarded"], body.len(), "{answer}");
    let all = wait_until(Duration::from_secs(30), || {
        services
            .iter()
            .all(|s| calls(c.dir.path()).contains_key(&format!("{s}-i")))
    });
    assert!(
        all,
        "{:?}\n--- a:\n{}\n--- b:\n{}",
        calls(c.dir.path()),
        a.stderr.text(),
        b.stderr.text()
    );
    settled(&c);
    for (instance, n) in calls(c.dir.path()) {
        assert_eq!(n, 1, "{instance} rolled back {n} times");
    }
    let decided = |r: &Responder| {
        r.stdout
            .decisions()
            .iter()
            .filter(|d| d["action"] == "rollback")
            .count()
    };
    let (by_a, by_b) = (decided(&a), decided(&b));
    assert_eq!(by_a + by_b, services.len(), "a: {by_a}, b: {by_b}");
    assert!(
        by_a > 0 && by_b > 0,
        "every service decided on the replica it was posted to (a: {by_a}, b: {by_b})"
    );
}

/// Alertmanager configured with every replica's webhook (the two-host
/// systemd setup) delivers each alert to all of them at once: the journal
/// makes it one incident and one rollback.
#[test]
fn the_same_alert_posted_to_every_replica_at_once_rolls_back_once() {
    let c = Cluster::new(1);
    let a = c.start("a", 0);
    let b = c.start("b", 0);
    let alerts: Vec<Value> = (0..5)
        .map(|k| {
            alert(
                &format!("fp-both-{k}"),
                &format!("i-both-{k}"),
                "low",
                "critical",
            )
        })
        .collect();
    std::thread::scope(|s| {
        s.spawn(|| a.post_alerts(alerts.clone()));
        s.spawn(|| b.post_alerts(alerts.clone()));
    });
    let all = wait_until(Duration::from_secs(30), || calls(c.dir.path()).len() == 5);
    assert!(all, "{:?}\n{}", calls(c.dir.path()), a.stderr.text());
    // Both copies are decided (by the partition's owner, where each
    // replica forwards its HTTP events): each decision is journaled once
    // and found already there once. Then no action can still run.
    let seen_all = wait_until(Duration::from_secs(30), || {
        let (mut fresh, mut again) = (0.0, 0.0);
        for r in [&a, &b] {
            let m = r.metrics();
            fresh += metric_sum(&m, "ripcord_decisions_total");
            again += metric_sum(&m, "ripcord_duplicate_decisions_total");
        }
        fresh > 0.0 && again >= fresh
    });
    assert!(seen_all, "a: {}\nb: {}", a.metrics(), b.metrics());
    settled(&c);
    for (instance, n) in calls(c.dir.path()) {
        assert_eq!(n, 1, "{instance} rolled back {n} times");
    }
    assert_eq!(count(&c.db, "SELECT count(*) FROM incidents"), 5);
}
