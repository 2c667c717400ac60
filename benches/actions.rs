//! Benchmark: from decision to rollback start, under faults. Not a test: it
//! measures and prints a summary.
//!
//! ```sh
//! cargo bench --bench actions
//! ACTIONS_RIPCORD_BIN=/path/to/old/ripcord cargo bench --bench actions
//! ```
//!
//! Product issue: "time from decision to executor start with one channel
//! hanging and with a 10,000-alert notify flood; goal p99 <= 1 s."
//!
//! A release-built `ripcord run` (embedded broker, HTTP on loopback) whose
//! only chat channel is a webhook that accepts connections and never
//! answers (its sends time out after 2 minutes and retry), and whose
//! rollback executor is a script that appends `<unix ms> <instance>` to a
//! file. Each probe is one critical Alertmanager alert for a low-tier
//! instance, POSTed on its own; its decision is journaled when the POST
//! answers 200; the latency is from that answer to the script's stamp.
//!
//! Scenarios (each with a fresh `ripcord run`):
//! - **hang**: `ACTIONS_PROBES` [200] probes, one every 50 ms, each also
//!   queueing a message for the hung channel.
//! - **flood**: first `ACTIONS_FLOOD` [10000] info alerts (notify only) in
//!   payloads of 1,000, then the probes as above, all while the flood's
//!   messages wait for the hung channel.
//!
//! Prints p50, p99 and max per scenario and whether p99 <= 1 s.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Lines, free_port, now_millis, rfc3339, ripcord_bin, wait_until};

const GOAL_MS: f64 = 1000.0;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A webhook endpoint that accepts and never answers.
fn hang() -> (u16, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        l.set_nonblocking(true).unwrap();
        let mut held = Vec::new();
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            match l.accept() {
                Ok((c, _)) => held.push(c),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (port, stop)
}

struct Run {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    stderr: Lines,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bin: &str, hang_port: u16) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("rollback.sh");
    std::fs::write(
        &script,
        format!(
            "echo \"$(date +%s%3N) $1\" >> '{}'\n",
            dir.path().join("starts.log").display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("ripcord.yaml"),
        format!(
            r#"channels:
  hung: {{type: webhook, url: "http://127.0.0.1:{hang_port}/hook", timeout: 2m, retries: 5}}
routing:
  low: {{notify: [hung]}}
  medium: {{notify: [hung]}}
  high: {{notify: [hung]}}
executors:
  rollback:
    command: {{argv: [/bin/sh, "{}", "{{instance}}"], timeout: 30s}}
    budget: {{per_service: 10000, overall: 10000, window: 10m}}
"#,
            script.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let mut child = Command::new(bin)
        .args(["run", "--config", "ripcord.yaml", "--state", "state.db"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ripcord");
    let stderr = Lines::of(child.stderr.take().unwrap());
    let client = reqwest::blocking::Client::new();
    let up = wait_until(Duration::from_secs(60), || {
        client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    assert!(up, "ripcord did not start:\n{}", stderr.text());
    Run {
        child,
        port,
        dir,
        stderr,
    }
}

fn alert(fp: &str, instance: &str, severity: &str) -> Value {
    json!({
        "status": "firing",
        "labels": {"alertname": "Down", "service": format!("svc-{fp}"), "instance": instance, "tier": "low", "severity": severity},
        "startsAt": rfc3339(now_millis()), "endsAt": "0001-01-01T00:00:00Z", "fingerprint": fp,
    })
}

fn post(client: &reqwest::blocking::Client, port: u16, alerts: Vec<Value>) {
    let body = json!({"version": "4", "alerts": alerts}).to_string();
    let r = client
        .post(format!("http://127.0.0.1:{port}/api/v1/alerts"))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .expect("post");
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
}

fn starts(dir: &Path) -> std::collections::HashMap<String, i64> {
    std::fs::read_to_string(dir.join("starts.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (t, i) = l.split_once(' ')?;
            Some((i.to_owned(), t.parse().ok()?))
        })
        .collect()
}

struct Outcome {
    name: &'static str,
    started: usize,
    probes: usize,
    latencies_ms: Vec<f64>,
}

fn scenario(name: &'static str, bin: &str, flood: usize, probes: usize) -> Outcome {
    let (hang_port, stop) = hang();
    let run = start(bin, hang_port);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    for chunk in 0..flood.div_ceil(1000) {
        let alerts = (0..1000.min(flood - chunk * 1000))
            .map(|i| {
                let n = chunk * 1000 + i;
                alert(&format!("info{n}"), &format!("i-info{n}"), "info")
            })
            .collect();
        post(&client, run.port, alerts);
    }
    let mut decided = Vec::new();
    for i in 0..probes {
        let instance = format!("i-probe{i}");
        post(
            &client,
            run.port,
            vec![alert(&format!("p{i}"), &instance, "critical")],
        );
        decided.push((instance, now_millis()));
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && starts(run.dir.path()).len() < probes {
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = starts(run.dir.path());
    let mut latencies_ms: Vec<f64> = decided
        .iter()
        .filter_map(|(i, at)| got.get(i).map(|s| (s - at) as f64))
        .collect();
    latencies_ms.sort_by(f64::total_cmp);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = &run.stderr;
    Outcome {
        name,
        started: latencies_ms.len(),
        probes,
        latencies_ms,
    }
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("actions: a benchmark; run it with `cargo bench --bench actions`");
        return;
    }
    let bin = std::env::var("ACTIONS_RIPCORD_BIN").unwrap_or_else(|_| ripcord_bin().to_owned());
    let probes = env_usize("ACTIONS_PROBES", 200);
    let flood = env_usize("ACTIONS_FLOOD", 10_000);
    eprintln!("actions: ripcord binary {bin}");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let outcomes = [
        scenario("hang", &bin, 0, probes),
        scenario("flood", &bin, flood, probes),
    ];
    println!("\n============ ripcord: decision -> rollback start, under faults ============");
    println!("binary: {bin}");
    println!("load average before: {}", load.trim());
    println!(
        "{:<8} {:>9} {:>9} {:>9} {:>9}  goal p99 <= {GOAL_MS} ms",
        "scenario", "started", "p50 ms", "p99 ms", "max ms"
    );
    for o in &outcomes {
        let p99 = pct(&o.latencies_ms, 0.99);
        println!(
            "{:<8} {:>5}/{:<3} {:>9.0} {:>9.0} {:>9.0}  {}",
            o.name,
            o.started,
            o.probes,
            pct(&o.latencies_ms, 0.5),
            p99,
            o.latencies_ms.last().copied().unwrap_or(f64::NAN),
            if o.started == o.probes && p99 <= GOAL_MS {
                "met"
            } else {
                "MISSED"
            }
        );
    }
}
