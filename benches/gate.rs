//! Benchmark: how fast the rollout gate answers with a fleet's worth of
//! state. Not a test: it measures and prints a summary.
//!
//! ```sh
//! cargo bench --bench gate                                   # SQLite
//! GATE_JOURNALS=sqlite,postgres scripts/with-postgres cargo bench --bench gate
//! ```
//!
//! Product issue: "gate answer p99 under 1,000 services x 100 instances of
//! state." The journal is seeded through the journal API as the pipeline
//! would leave it: `GATE_SERVICES` [1000] services, each with its last
//! progress (`batch_done` of batch 3) and an hour of request-success
//! tallies from 100 instances (50 upgraded, 50 not: two rows a minute);
//! then a release-built `ripcord run --no-kafka` on that journal gets 100
//! critical alerts (100 open incidents, one per service) and
//! `GATE_REQUESTS` [4000] gate GETs from 4 clients at once, for random
//! services. Prints p50, p99 and max latency per journal, against Argo's and
//! Flagger's 10 s timeouts and a 1 s goal.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use ripcord::decision::Tier;
use ripcord::gate::TallyRow;
use ripcord::journal::{Batch, Ingest, UpgradeRow};
use ripcord::time::Ts;
use serde_json::json;
use support::{free_port, now_millis, rfc3339};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seed(j: &mut dyn Ingest, services: usize) {
    let now = now_millis();
    let minute0 = now - now.rem_euclid(60_000) - 60 * 60_000;
    let progress: Vec<UpgradeRow> = (0..services)
        .map(|s| UpgradeRow {
            service: format!("svc-{s}"),
            batch: Some("3".into()),
            stage: "batch_done".into(),
            done: Some(60),
            total: Some(100),
            message: None,
            updated_at: Ts(minute0),
            open: true,
        })
        .collect();
    j.commit(&Batch {
        progress: &progress,
        ..Batch::default()
    })
    .unwrap();
    for chunk in (0..services).collect::<Vec<_>>().chunks(50) {
        let mut rows = Vec::new();
        for s in chunk {
            for m in 0..=60 {
                for batch in ["3", ""] {
                    rows.push(TallyRow {
                        service: format!("svc-{s}"),
                        batch: batch.into(),
                        minute: Ts(minute0 + m * 60_000),
                        samples: 50 * 4,
                        sum: 50.0 * 4.0 * 0.9996,
                        low: 0.999,
                        tier: Tier::Medium,
                    });
                }
            }
        }
        j.commit(&Batch {
            tallies: &rows,
            ..Batch::default()
        })
        .unwrap();
    }
}

fn pct(v: &[f64], p: f64) -> f64 {
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

struct Outcome {
    journal: String,
    ok: usize,
    latencies_ms: Vec<f64>,
    decisions: std::collections::BTreeMap<String, usize>,
}

fn run(journal: &str, services: usize, requests: usize) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("ripcord.yaml");
    let mut cfg = format!("http: {{listen: \"127.0.0.1:{port}\"}}\nkafka: {{enabled: false}}\n");
    let started = Instant::now();
    match journal {
        "postgres" => {
            let url = support::pg_database("ripcord_gate_bench");
            let ca = support::pg_ca();
            let mut j = ripcord::journal::PgJournal::connect(
                &ripcord::config::Secret::new(url.clone()),
                Some(std::path::Path::new(&ca)),
                std::sync::Arc::new(ripcord::time::SystemClock),
            )
            .unwrap();
            seed(&mut j, services);
            cfg.push_str(&format!("journal: {{url: \"{url}\", ca_file: \"{ca}\"}}\n"));
        }
        _ => {
            let path = dir.path().join("state.db");
            let mut j = ripcord::journal::SqliteJournal::open(&path, false).unwrap();
            seed(&mut j, services);
            cfg.push_str(&format!("journal: {{path: \"{}\"}}\n", path.display()));
        }
    }
    eprintln!(
        "gate: {journal}: seeded {services} services in {:?}",
        started.elapsed()
    );
    std::fs::write(&config, cfg).unwrap();
    let run = support::DryRun::start(dir.path(), &config, port);
    let (client, base) = (run.client.clone(), run.base.clone());
    // 100 open incidents, one per service.
    let alerts: Vec<_> = (0..100.min(services))
        .map(|s| {
            json!({"status": "firing",
                   "labels": {"alertname": "Down", "service": format!("svc-{s}"), "instance": "i-1", "severity": "critical"},
                   "startsAt": rfc3339(now_millis()), "endsAt": "0001-01-01T00:00:00Z", "fingerprint": format!("{s:016x}")})
        })
        .collect();
    let r = client
        .post(format!("{base}/api/v1/alerts"))
        .json(&json!({"version": "4", "alerts": alerts}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    let per_client = requests / 4;
    let threads: Vec<_> = (0..4u64)
        .map(|c| {
            let client = client.clone();
            let base = base.clone();
            std::thread::spawn(move || {
                let mut out = Vec::with_capacity(per_client);
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ c;
                for _ in 0..per_client {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let s = (x % services as u64) as usize;
                    let t = Instant::now();
                    let r = client
                        .get(format!("{base}/api/v1/rollouts/svc-{s}/gate?batch=3"))
                        .send();
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    let answer = r
                        .ok()
                        .filter(|r| r.status() == 200)
                        .and_then(|r| r.json::<serde_json::Value>().ok());
                    let decision = answer
                        .as_ref()
                        .and_then(|v| v["decision"].as_str().map(str::to_owned));
                    let first_reason = answer.map(|v| v["reasons"][0].to_string());
                    out.push((ms, decision, first_reason));
                }
                out
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut decisions = std::collections::BTreeMap::new();
    let mut ok = 0;
    let mut examples = std::collections::BTreeMap::new();
    for t in threads {
        for (ms, d, reason) in t.join().unwrap() {
            latencies.push(ms);
            if let Some(d) = d {
                ok += 1;
                *decisions.entry(d.clone()).or_insert(0) += 1;
                examples.entry(d).or_insert(reason);
            }
        }
    }
    for (d, r) in &examples {
        eprintln!("gate: {journal}: a {d}: {}", r.as_deref().unwrap_or("-"));
    }
    latencies.sort_by(f64::total_cmp);
    run.stop();
    Outcome {
        journal: journal.to_owned(),
        ok,
        latencies_ms: latencies,
        decisions,
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("gate: a benchmark; run it with `cargo bench --bench gate`");
        return;
    }
    let services = env_usize("GATE_SERVICES", 1000);
    let requests = env_usize("GATE_REQUESTS", 4000);
    let journals = std::env::var("GATE_JOURNALS").unwrap_or_else(|_| "sqlite".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let outcomes: Vec<Outcome> = journals
        .split(',')
        .map(|j| run(j.trim(), services, requests))
        .collect();
    println!("\n============ ripcord: rollout gate answers ============");
    println!(
        "state: {services} services x 100 instances (an hour of tallies each), 100 open incidents; {requests} GETs from 4 clients"
    );
    println!("load average before: {}", load.trim());
    println!(
        "{:<9} {:>11} {:>9} {:>9} {:>9}  decisions",
        "journal", "answered", "p50 ms", "p99 ms", "max ms"
    );
    for o in &outcomes {
        println!(
            "{:<9} {:>6}/{:<4} {:>9.1} {:>9.1} {:>9.1}  {:?}  {}",
            o.journal,
            o.ok,
            o.latencies_ms.len(),
            pct(&o.latencies_ms, 0.5),
            pct(&o.latencies_ms, 0.99),
            o.latencies_ms.last().copied().unwrap_or(f64::NAN),
            o.decisions,
            if o.ok == o.latencies_ms.len() && pct(&o.latencies_ms, 0.99) <= 1000.0 {
                "goal p99 <= 1 s met"
            } else {
                "MISSED"
            }
        );
    }
}
