//! Failover: two `ripcord run` replicas share a PostgreSQL journal and a
//! one-partition topic; the partition's owner is killed with `kill -9`, an
//! outage is produced at that instant, and the clock runs until the
//! survivor's rollback script starts for it. Repeated `FAILOVER_ROUNDS`
//! times, each with a fresh database, topic, group and pair of replicas.
//!
//! ```text
//! scripts/with-postgres scripts/with-kafka env FAILOVER_BROKER=kafka cargo bench --bench failover
//! scripts/with-postgres cargo bench --bench failover          # the mock cluster
//! FAILOVER_ROUNDS=10 FAILOVER_SESSION_MS=10000 FAILOVER_HEARTBEAT_MS=3000 \
//!     scripts/with-postgres cargo bench --bench failover
//! ```
//!
//! `FAILOVER_BROKER`: `kafka` (the Apache Kafka `scripts/with-kafka`
//! starts; every protocol of `FAILOVER_PROTOCOLS` [classic,consumer] in
//! turn: KIP-848's takes its session from the broker,
//! `group.consumer.session.timeout.ms`) or `mock` [the default: librdkafka's
//! mock cluster, `ripcord mock-broker`, its own process, classic only].
//!
//! Reported per protocol: kill -9 -> the survivor's rollback script started
//! (against the session timeout: the group cannot move a partition before
//! the broker gives up on the dead member), and ripcord's own share,
//! assignment -> rollback start (read from the survivor's log stamps and the
//! script's own clock, not from polling).

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::{
    Kafka, Lines, MockBroker, free_port, now_millis, pg_ca, pg_database, pg_rows, produce, rfc3339,
    ripcord_bin, unique, wait_until,
};

struct Replica {
    child: Child,
    port: u16,
    stderr: Lines,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which broker and group protocol a series of rounds runs on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// librdkafka's mock cluster, classic protocol.
    Mock,
    /// Apache Kafka, classic protocol (the client's session timeout).
    KafkaClassic,
    /// Apache Kafka, KIP-848 (the broker's session timeout).
    KafkaConsumer,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Mock => "librdkafka mock cluster, classic protocol",
            Setup::KafkaClassic => "Apache Kafka, classic protocol",
            Setup::KafkaConsumer => "Apache Kafka, KIP-848 consumer protocol",
        }
    }

    /// The session timeout in force: the client's (classic), or the
    /// broker's for KIP-848 groups (scripts/with-kafka sets 6 s).
    fn session_ms(self, configured: u64) -> u64 {
        match self {
            Setup::KafkaConsumer => std::env::var("RIPCORD_TEST_KAFKA_CONSUMER_SESSION_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(6000),
            _ => configured,
        }
    }
}

struct Run<'a> {
    dir: &'a Path,
    db: &'a str,
    brokers: &'a str,
    topic: &'a str,
    group: &'a str,
    setup: Setup,
    session_ms: u64,
}

fn start(run: &Run<'_>, name: &str) -> Replica {
    let port = free_port();
    let script = run.dir.join("rollback.sh");
    // The script stamps its own start (ms since the epoch): the end of the
    // measured span, exact to the script's first instruction.
    std::fs::write(
        &script,
        format!(
            "echo \"$1 $(date +%s%3N)\" >> '{}'\n",
            run.dir.join("calls.log").display()
        ),
    )
    .unwrap();
    let (protocol, properties) = match run.setup {
        Setup::KafkaConsumer => ("consumer", String::new()),
        _ => (
            "classic",
            format!(
                "session.timeout.ms: \"{}\", heartbeat.interval.ms: \"{}\", ",
                run.session_ms,
                heartbeat_ms(run.session_ms)
            ),
        ),
    };
    // `FAILOVER_PROPERTIES`: more librdkafka properties (`debug: "fetch", `).
    let properties = properties + &std::env::var("FAILOVER_PROPERTIES").unwrap_or_default();
    let cfg = run.dir.join(format!("{name}.yaml"));
    std::fs::write(
        &cfg,
        format!(
            r#"journal: {{url: "{db}", ca_file: "{ca}"}}
kafka:
  brokers: ["{brokers}"]
  topics: [{topic}]
  group: {group}
  group_protocol: {protocol}
  properties: {{{properties}auto.offset.reset: earliest}}
executors:
  rollback: {{command: {{argv: [/bin/sh, "{script}", "{{instance}}"]}}}}
"#,
            db = run.db,
            brokers = run.brokers,
            topic = run.topic,
            group = run.group,
            ca = pg_ca(),
            script = script.display(),
        ),
    )
    .unwrap();
    let mut child = Command::new(ripcord_bin())
        .args(["run", "--config", cfg.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        // `FAILOVER_LOG` (a RUST_LOG filter) to see more of a round.
        .env(
            "RUST_LOG",
            std::env::var("FAILOVER_LOG").unwrap_or_else(|_| "info".into()),
        )
        .current_dir(run.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ripcord run");
    let stderr = Lines::of(child.stderr.take().unwrap());
    let r = Replica {
        child,
        port,
        stderr,
    };
    let ready = wait_until(Duration::from_secs(60), || {
        reqwest::blocking::get(format!("http://127.0.0.1:{}/readyz", r.port))
            .is_ok_and(|x| x.status() == 200)
    });
    assert!(ready, "replica {name} never ready:\n{}", r.stderr.tail(30));
    r
}

/// `FAILOVER_HEARTBEAT_MS`, else a third of the session (Kafka's advice:
/// the survivor hears of the rebalance within one heartbeat).
fn heartbeat_ms(session_ms: u64) -> u64 {
    std::env::var("FAILOVER_HEARTBEAT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(session_ms / 3)
}

/// When the rollback script started for `instance` (ms since the epoch).
fn acted_at(dir: &Path, instance: &str) -> Option<i64> {
    std::fs::read_to_string(dir.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let (i, at) = l.split_once(' ')?;
            (i == instance).then(|| at.parse().ok())?
        })
}

/// The time stamp (ms since the epoch) of the first log line at or after
/// line `from` that contains `needle`.
fn logged_at(lines: &Lines, from: usize, needle: &str) -> Option<i64> {
    lines.all()[from..]
        .iter()
        .find(|l| l.contains(needle))
        .and_then(|l| l.split_whitespace().next()?.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_millisecond())
}

fn outage(instance: &str) -> (String, String) {
    let alert = json!({
        "status": "firing",
        "labels": {"alertname": "Down", "service": "pay", "instance": instance, "tier": "low", "severity": "critical"},
        "startsAt": rfc3339(now_millis()), "endsAt": "0001-01-01T00:00:00Z", "fingerprint": format!("fp-{instance}"),
    });
    (
        "pay".to_owned(),
        json!({"version": "4", "alerts": [alert]}).to_string(),
    )
}

struct Round {
    /// kill -9 -> the survivor's rollback script started.
    acted: Duration,
    /// kill -9 -> the survivor logged the partition's assignment.
    assigned: Option<Duration>,
    /// assignment -> warmed (journal read, history re-read).
    warmed: Option<Duration>,
}

fn round(n: usize, setup: Setup, kafka: Option<&Kafka>, session_ms: u64) -> Round {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique(&format!("failover-{n}"));
    let db = pg_database(&format!("failover_{}_{n}", std::process::id()));
    let mut _mock = None;
    let brokers = match kafka {
        Some(k) => {
            k.create_topic(&topic, 1);
            k.brokers.clone()
        }
        None => _mock.insert(MockBroker::start(&topic, 1)).brokers.clone(),
    };
    let group = unique("failover");
    let run = Run {
        dir: dir.path(),
        db: &db,
        brokers: &brokers,
        topic: &topic,
        group: &group,
        setup,
        session_ms,
    };
    let a = start(&run, "a");
    let b = start(&run, "b");
    produce(&brokers, &topic, &[outage("i-before")]);
    assert!(
        wait_until(Duration::from_secs(30), || acted_at(dir.path(), "i-before")
            .is_some()),
        "nobody acted before the kill:\n{}\n{}",
        a.stderr.tail(20),
        b.stderr.tail(20)
    );
    let owner = pg_rows(&db, "SELECT owner FROM partition_owners")[0][0]
        .clone()
        .unwrap_or_default();
    let (mut dead, survivor) = if owner.contains(&format!("/{}/", a.child.id())) {
        (a, b)
    } else {
        (b, a)
    };
    let mark = survivor.stderr.all().len();
    let _ = Command::new("kill")
        .args(["-KILL", &dead.child.id().to_string()])
        .status();
    let killed_ms = now_millis();
    let _ = dead.child.wait();
    produce(&brokers, &topic, &[outage("i-after")]);
    let ok = wait_until(Duration::from_secs(90), || {
        acted_at(dir.path(), "i-after").is_some()
    });
    assert!(
        ok,
        "the survivor never acted:\n{}",
        survivor.stderr.tail(30)
    );
    let acted = acted_at(dir.path(), "i-after").unwrap();
    if std::env::var_os("FAILOVER_SHOW").is_some() {
        // The survivor's log from the kill on, to see where a round's time went.
        eprintln!(
            "survivor after the kill (killed at {}):\n{}",
            rfc3339(killed_ms),
            survivor.stderr.all()[mark..].join("\n")
        );
    }
    let since_kill = |at: i64| Duration::from_millis(at.saturating_sub(killed_ms).max(0) as u64);
    let assigned_at = logged_at(&survivor.stderr, mark, "partitions assigned");
    let warmed_at = logged_at(&survivor.stderr, mark, "partition warmed");
    Round {
        acted: since_kill(acted),
        assigned: assigned_at.map(since_kill),
        warmed: assigned_at
            .zip(warmed_at)
            .map(|(a, w)| Duration::from_millis(w.saturating_sub(a).max(0) as u64)),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("failover: a benchmark; run it with `cargo bench --bench failover`");
        return;
    }
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let rounds: usize = env("FAILOVER_ROUNDS", "5")
        .parse()
        .expect("FAILOVER_ROUNDS");
    let session_ms: u64 = env("FAILOVER_SESSION_MS", "6000")
        .parse()
        .expect("FAILOVER_SESSION_MS");
    let broker = env("FAILOVER_BROKER", "mock");
    let (kafka, setups) = match broker.as_str() {
        "mock" => (None, vec![Setup::Mock]),
        "kafka" => {
            let setups = env("FAILOVER_PROTOCOLS", "classic,consumer")
                .split(',')
                .map(|p| match p.trim() {
                    "classic" => Setup::KafkaClassic,
                    "consumer" => Setup::KafkaConsumer,
                    other => panic!("FAILOVER_PROTOCOLS: `{other}`: classic or consumer"),
                })
                .collect();
            (Some(Kafka::get()), setups)
        }
        other => panic!("FAILOVER_BROKER: `{other}`: kafka or mock"),
    };
    let mut report = Vec::new();
    for setup in setups {
        let mut results = Vec::new();
        for n in 0..rounds {
            let r = round(n, setup, kafka.as_ref(), session_ms);
            eprintln!(
                "failover: {}: round {n}: assigned after {:?}, warmed {:?} later, acted after {:.2?}",
                setup.name(),
                r.assigned,
                r.warmed,
                r.acted
            );
            results.push(r);
        }
        report.push((setup, results));
    }
    let secs = |d: Duration| d.as_secs_f64();
    println!("\n==================== ripcord failover ====================");
    println!(
        "machine:  {} cores; journal: PostgreSQL; {rounds} rounds per protocol; {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kafka
            .as_ref()
            .map_or("librdkafka's mock cluster".to_owned(), Kafka::name)
    );
    for (setup, results) in report {
        let session = setup.session_ms(session_ms);
        let mut acted: Vec<f64> = results.iter().map(|r| secs(r.acted)).collect();
        acted.sort_by(f64::total_cmp);
        let worst = acted[acted.len() - 1];
        let session_s = session as f64 / 1000.0;
        println!("\n{}: session {session} ms", setup.name());
        println!(
            "  kill -9 -> survivor's rollback starts: median {:.2} s, worst {:.2} s = session + {:.2} s  [goal <= session + 2 s: {}]",
            percentile(&acted, 0.5),
            worst,
            worst - session_s,
            if worst <= session_s + 2.0 {
                "met"
            } else {
                "NOT met"
            }
        );
        let mut assigned: Vec<f64> = results
            .iter()
            .filter_map(|r| r.assigned.map(secs))
            .collect();
        assigned.sort_by(f64::total_cmp);
        let mut own: Vec<f64> = results
            .iter()
            .filter_map(|r| r.assigned.map(|a| secs(r.acted.saturating_sub(a))))
            .collect();
        own.sort_by(f64::total_cmp);
        let mut warm: Vec<f64> = results.iter().filter_map(|r| r.warmed.map(secs)).collect();
        warm.sort_by(f64::total_cmp);
        if !own.is_empty() {
            println!(
                "  of which the group moving the partition (kill -> assigned): median {:.2} s",
                percentile(&assigned, 0.5)
            );
            println!(
                "  ripcord's own share, assigned -> rollback start: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms  [goal p99 <= 200 ms: {}]",
                1000.0 * percentile(&own, 0.5),
                1000.0 * percentile(&own, 0.99),
                1000.0 * own[own.len() - 1],
                if percentile(&own, 0.99) <= 0.2 {
                    "met"
                } else {
                    "NOT met"
                }
            );
            if !warm.is_empty() {
                println!(
                    "    of which warming (journal position, history re-read): median {:.0} ms",
                    1000.0 * percentile(&warm, 0.5)
                );
            }
        }
    }
}
