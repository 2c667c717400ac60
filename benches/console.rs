//! Benchmark: how fast the console's pages come back with a storm's worth
//! of open incidents. Not a test: it measures and prints a summary.
//!
//! ```sh
//! cargo bench --bench console
//! CONSOLE_INCIDENTS=2000 cargo bench --bench console
//! ```
//!
//! A release-built `ripcord run --dry-run --no-kafka` on SQLite gets
//! `CONSOLE_INCIDENTS` [500] medium-tier alerts (each an open incident
//! waiting for an approval, with its actions and timeline), then two
//! clients at once GET `/` and an incident page `CONSOLE_REQUESTS` [400]
//! times each, as the console's refresh does. Prints p50, p99 and max
//! latency and the page size, against a 250 ms goal for a page on a phone.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{free_port, now_millis, rfc3339, wait_until};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(v: &[f64], p: f64) -> f64 {
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("console: a benchmark; run it with `cargo bench --bench console`");
        return;
    }
    let incidents = env_usize("CONSOLE_INCIDENTS", 500);
    let requests = env_usize("CONSOLE_REQUESTS", 400);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("ripcord.yaml");
    std::fs::write(
        &config,
        format!(
            "http: {{listen: \"127.0.0.1:{port}\"}}\nkafka: {{enabled: false}}\njournal: {{path: \"{}\"}}\n",
            dir.path().join("state.db").display()
        ),
    )
    .unwrap();
    let run = support::DryRun::start(dir.path(), &config, port);
    let (client, base) = (run.client.clone(), run.base.clone());
    for chunk in (0..incidents).collect::<Vec<_>>().chunks(100) {
        let alerts: Vec<_> = chunk
            .iter()
            .map(|s| {
                json!({"status": "firing",
                       "labels": {"alertname": "ErrorsUp", "service": format!("svc-{}", s % 50), "instance": format!("i-{s}"),
                                  "tier": "medium", "severity": "warning"},
                       "annotations": {"summary": "5xx above 5% after the upgrade of batch 2"},
                       "startsAt": rfc3339(now_millis()), "endsAt": "0001-01-01T00:00:00Z", "fingerprint": format!("{s:016x}")})
            })
            .collect();
        let r = client
            .post(format!("{base}/api/v1/alerts"))
            .json(&json!({"version": "4", "alerts": alerts}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let listed = wait_until(Duration::from_secs(60), || {
        client
            .get(format!("{base}/api/v1/incidents"))
            .send()
            .ok()
            .and_then(|r| r.json::<serde_json::Value>().ok())
            .is_some_and(|v| {
                v["incidents"]
                    .as_array()
                    .is_some_and(|a| a.len() >= incidents)
            })
    });
    assert!(listed, "the incidents did not open");
    let first: serde_json::Value = client
        .get(format!("{base}/api/v1/incidents"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = first["incidents"][0]["id"].as_str().unwrap().to_owned();
    // Let the actions settle (approval requests waiting).
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "console: {incidents} open incidents; {requests} GETs per page from 2 clients at once (machine: {} CPUs)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for path in ["/".to_owned(), format!("/incidents/{id}")] {
        let started = Instant::now();
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let client = client.clone();
                let url = format!("{base}{path}");
                std::thread::spawn(move || {
                    let mut out = Vec::new();
                    for _ in 0..requests / 2 {
                        let t = Instant::now();
                        let r = client.get(&url).send().unwrap();
                        assert_eq!(r.status(), 200);
                        let bytes = r.bytes().unwrap().len();
                        out.push((t.elapsed().as_secs_f64() * 1000.0, bytes));
                    }
                    out
                })
            })
            .collect();
        let mut ms = Vec::new();
        let mut bytes = 0;
        for t in threads {
            for (m, b) in t.join().unwrap() {
                ms.push(m);
                bytes = b;
            }
        }
        ms.sort_by(f64::total_cmp);
        let p99 = pct(&ms, 0.99);
        println!(
            "console: GET {:<20} p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  {:>7} bytes  {:.0} pages/s  {}",
            if path == "/" { "/" } else { "/incidents/{id}" },
            pct(&ms, 0.5),
            p99,
            ms[ms.len() - 1],
            bytes,
            ms.len() as f64 / started.elapsed().as_secs_f64(),
            if p99 <= 250.0 {
                "within the 250 ms goal"
            } else {
                "OVER the 250 ms goal"
            }
        );
    }
    run.stop();
}
