//! Failover: two `ripcord run` replicas share a PostgreSQL journal and a
//! one-partition topic; the partition's owner is killed with `kill -9`, an
//! outage is produced at that instant, and the clock runs until the
//! survivor's rollback script starts for it. Repeated `FAILOVER_ROUNDS`
//! times, each with a fresh database, broker and pair of replicas.
//!
//! ```text
//! scripts/with-postgres cargo bench --bench failover
//! FAILOVER_ROUNDS=10 FAILOVER_SESSION_MS=10000 FAILOVER_HEARTBEAT_MS=3000 \
//!     scripts/with-postgres cargo bench --bench failover
//! ```
//!
//! The broker is librdkafka's mock cluster (`ripcord mock-broker`, its own
//! process): tansu never evicts a member that vanished without leaving
//! the group. The goal: the survivor acts within the session timeout + 5 s.
//! The mock's coordinator adds its own wait of session - 1 s to every
//! rebalance after a member expires (see the summary), so ripcord's own share
//! (assignment to acting) is reported apart.
//!
//! Also reported, from the survivor's log: when it was assigned the
//! partition (the group's share of the time) and when it had warmed it.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{
    Lines, MockBroker, free_port, now_millis, pg_ca, pg_database, pg_rows, produce, rfc3339,
    ripcord_bin, wait_until,
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

fn start(dir: &Path, name: &str, db: &str, brokers: &str, topic: &str, session_ms: u64) -> Replica {
    let port = free_port();
    let script = dir.join("rollback.sh");
    std::fs::write(
        &script,
        format!("echo \"$1\" >> '{}'\n", dir.join("calls.log").display()),
    )
    .unwrap();
    let cfg = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &cfg,
        format!(
            r#"journal: {{url: "{db}", ca_file: "{ca}"}}
kafka:
  brokers: ["{brokers}"]
  topics: [{topic}]
  group: failover
  properties: {{session.timeout.ms: "{session_ms}", heartbeat.interval.ms: "{heartbeat_ms}", auto.offset.reset: earliest}}
executors:
  rollback: {{command: {{argv: [/bin/sh, "{script}", "{{instance}}"]}}}}
"#,
            ca = pg_ca(),
            script = script.display(),
            heartbeat_ms = heartbeat_ms(session_ms),
        ),
    )
    .unwrap();
    let mut child = Command::new(ripcord_bin())
        .args(["run", "--config", cfg.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "info")
        .current_dir(dir)
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

fn acted(dir: &Path, instance: &str) -> bool {
    std::fs::read_to_string(dir.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .any(|l| l == instance)
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
}

fn round(n: usize, session_ms: u64) -> Round {
    let dir = tempfile::tempdir().unwrap();
    let topic = format!("failover-{n}");
    let db = pg_database(&format!("failover_{}_{n}", std::process::id()));
    let broker = MockBroker::start(&topic, 1);
    let a = start(dir.path(), "a", &db, &broker.brokers, &topic, session_ms);
    let b = start(dir.path(), "b", &db, &broker.brokers, &topic, session_ms);
    produce(&broker.brokers, &topic, &[outage("i-before")]);
    assert!(
        wait_until(Duration::from_secs(30), || acted(dir.path(), "i-before")),
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
    let assigned_before = survivor.stderr.count("partition warmed");
    let _ = Command::new("kill")
        .args(["-KILL", &dead.child.id().to_string()])
        .status();
    let killed = Instant::now();
    let _ = dead.child.wait();
    produce(&broker.brokers, &topic, &[outage("i-after")]);
    let mut assigned = None;
    let ok = wait_until(Duration::from_secs(60), || {
        if assigned.is_none() && survivor.stderr.count("partition warmed") > assigned_before {
            assigned = Some(killed.elapsed());
        }
        acted(dir.path(), "i-after")
    });
    assert!(
        ok,
        "the survivor never acted:\n{}",
        survivor.stderr.tail(30)
    );
    Round {
        acted: killed.elapsed(),
        assigned,
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("failover: a benchmark; run it with `cargo bench --bench failover`");
        return;
    }
    let rounds: usize = std::env::var("FAILOVER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let session_ms: u64 = std::env::var("FAILOVER_SESSION_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6000);
    let mut acted = Vec::new();
    for n in 0..rounds {
        let r = round(n, session_ms);
        eprintln!(
            "failover: round {n}: assigned after {:?}, acted after {:.2?}",
            r.assigned, r.acted
        );
        acted.push((r.acted, r.assigned));
    }
    acted.sort();
    let secs = |d: Duration| d.as_secs_f64();
    let goal = Duration::from_millis(session_ms) + Duration::from_secs(5);
    let (median, worst) = (acted[acted.len() / 2].0, acted[acted.len() - 1].0);
    println!("\n==================== ripcord failover ====================");
    println!(
        "machine:  {} cores; broker: librdkafka mock cluster; journal: PostgreSQL",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "session:  {session_ms} ms; heartbeat {} ms; {rounds} rounds",
        heartbeat_ms(session_ms)
    );
    println!(
        "kill -9 -> survivor acts: median {:.2} s, worst {:.2} s  [goal <= {:.0} s: {}]",
        secs(median),
        secs(worst),
        secs(goal),
        if worst <= goal { "met" } else { "NOT met" }
    );
    let mut assigned: Vec<f64> = acted.iter().filter_map(|(_, a)| a.map(secs)).collect();
    assigned.sort_by(f64::total_cmp);
    let mut own: Vec<f64> = acted
        .iter()
        .filter_map(|(t, a)| a.map(|a| secs(t.saturating_sub(a))))
        .collect();
    own.sort_by(f64::total_cmp);
    if !assigned.is_empty() {
        println!(
            "          of which waiting for the group to move the partition: median {:.2} s",
            assigned[assigned.len() / 2]
        );
        // The mock cluster's coordinator, after expiring a member, always
        // waits session - 1 s for the others to rejoin (rdkafka_mock_cgrp.c,
        // rd_kafka_mock_cgrp_classic_rebalance); Kafka's completes the join
        // once every remaining member has rejoined (within a heartbeat).
        println!(
            "          (the mock's own rebalance wait: {:.2} s of it)",
            secs(Duration::from_millis(session_ms.saturating_sub(1000)))
        );
        println!(
            "          and ripcord's own share, assigned -> acting (warm, decide, claim, start): median {:.2} s, worst {:.2} s",
            own[own.len() / 2],
            own[own.len() - 1]
        );
    }
}
