//! Benchmark: from decision to rollback start, under faults and attacks.
//! Not a test: it measures and prints a summary.
//!
//! ```sh
//! cargo bench --bench actions
//! ACTIONS_SCENARIOS=readers,storm cargo bench --bench actions
//! ACTIONS_RIPCORD_BIN=/path/to/old/ripcord cargo bench --bench actions
//! ```
//!
//! Product issues: "time from decision to executor start with one channel
//! hanging and with a 10,000-alert notify flood; goal p99 <= 1 s" (issue
//! 7), and "nothing a reader, a proxy or a silence does can slow a
//! rollback" (issue 16).
//!
//! A release-built `ripcord run` (embedded broker, HTTP on loopback) whose
//! only chat channel is a webhook that accepts connections and never
//! answers (its sends time out after 2 minutes and retry), and whose
//! rollback executor is a script that appends `<unix ms> <instance>` to a
//! file. Each probe is one critical Alertmanager alert for a low-tier
//! instance, POSTed on its own (again at once while the server answers
//! 503); the latency is from its first attempt to the script's stamp.
//!
//! Scenarios (each with a fresh `ripcord run`; `ACTIONS_SCENARIOS` picks):
//! - **hang**: `ACTIONS_PROBES` [200] probes, one every 50 ms, each also
//!   queueing a message for the hung channel.
//! - **flood**: first `ACTIONS_FLOOD` [10000] info alerts (notify only) in
//!   payloads of 1,000, then the probes as above.
//! - **readers**: `ACTIONS_OPEN` [5000] open medium incidents waiting for
//!   approval, then `ACTIONS_READERS` [8] clients loop on the console's `/`
//!   (loopback reads: `open_on_loopback: true`) during the probes.
//! - **silences**: the report's attack first: `ACTIONS_HEAVY` [4] silences
//!   of 32 regex matchers `(?:\w{60}){3}` each (refused since issue 16;
//!   accepted before, where they cost gigabytes: keep it low against an
//!   old build), plus 100 ordinary regex silences, then the probes.
//! - **connections**: `max_connections: 64`; 300 connections held open and
//!   silent from 151 loopback addresses, reopened as soon as closed,
//!   during the probes.
//! - **storm**: `ACTIONS_STORM_RATE` [5000] new alerts/s (medium, one
//!   service, payloads of 100 from `ACTIONS_STORM_CLIENTS` [16] clients,
//!   each waiting for its answer: four could not offer 5k/s once answers
//!   took 60 ms) for `ACTIONS_STORM_SECS` [30] s, a probe every 50 ms
//!   meanwhile; it prints the rate the storm was answered at. Then the
//!   gate's answer for the
//!   stormed service and the console's list, their size and time, and the
//!   process's RSS.
//!
//! Prints p50, p99 and max per scenario and whether p99 <= 1 s.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
fn hang() -> (u16, Arc<AtomicBool>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        l.set_nonblocking(true).unwrap();
        let mut held = Vec::new();
        while !s.load(Ordering::Relaxed) {
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
    hang_stop: Arc<AtomicBool>,
}

impl Run {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }

    fn metric(&self, series: &str) -> f64 {
        let text = reqwest::blocking::get(self.url("/metrics"))
            .and_then(|r| r.text())
            .unwrap_or_default();
        support::metric(&support::parse_metrics(&text), series)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.hang_stop.store(true, Ordering::Relaxed);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh `ripcord run`; `extra` is YAML appended to its config.
fn start(bin: &str, extra: &str) -> Run {
    let (hang_port, hang_stop) = hang();
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
{extra}"#,
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
        hang_stop,
    }
}

fn alert(fp: &str, service: &str, instance: &str, tier: &str, severity: &str) -> Value {
    json!({
        "status": "firing",
        "labels": {"alertname": "Down", "service": service, "instance": instance, "tier": tier, "severity": severity},
        "startsAt": rfc3339(now_millis()), "endsAt": "0001-01-01T00:00:00Z", "fingerprint": fp,
    })
}

/// POSTs alerts; the status (0: no answer).
fn post(client: &reqwest::blocking::Client, run: &Run, alerts: &[Value]) -> u16 {
    let body = json!({"version": "4", "alerts": alerts}).to_string();
    client
        .post(run.url("/api/v1/alerts"))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .map_or(0, |r| r.status().as_u16())
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
    /// What else the scenario saw (the attack's effect, sizes, RSS).
    notes: Vec<String>,
}

/// `probes` probes, one every 50 ms; each retried at once until answered
/// 200. Latency: first attempt to rollback start.
fn probe(run: &Run, name: &'static str, probes: usize) -> Outcome {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let mut decided = Vec::new();
    let mut retries = 0;
    for i in 0..probes {
        let instance = format!("i-probe{i}");
        let first = now_millis();
        let a = [alert(
            &format!("p{i}"),
            &format!("svc-p{i}"),
            &instance,
            "low",
            "critical",
        )];
        while post(&client, run, &a) != 200 {
            retries += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
        decided.push((instance, first, now_millis()));
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && starts(run.dir.path()).len() < probes {
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = starts(run.dir.path());
    let mut latencies_ms: Vec<f64> = decided
        .iter()
        .filter_map(|(i, at, _)| got.get(i).map(|s| (s - at) as f64))
        .collect();
    latencies_ms.sort_by(f64::total_cmp);
    // Where the time went: the POST's answer (the alert journaled), then
    // the dispatcher's claim and the script's start.
    let mut answered: Vec<f64> = decided.iter().map(|(_, at, ok)| (ok - at) as f64).collect();
    let mut dispatched: Vec<f64> = decided
        .iter()
        .filter_map(|(i, _, ok)| got.get(i).map(|s| (s - ok) as f64))
        .collect();
    answered.sort_by(f64::total_cmp);
    dispatched.sort_by(f64::total_cmp);
    let _ = &run.stderr;
    let mut notes = vec![format!(
        "split: POST answered p50 {:.0} / p99 {:.0} ms, then answered -> started p50 {:.0} / p99 {:.0} ms",
        pct(&answered, 0.5),
        pct(&answered, 0.99),
        pct(&dispatched, 0.5),
        pct(&dispatched, 0.99)
    )];
    if retries > 0 {
        notes.push(format!(
            "{retries} probe POSTs answered other than 200 and retried"
        ));
    }
    Outcome {
        name,
        started: latencies_ms.len(),
        probes,
        latencies_ms,
        notes,
    }
}

/// Info alerts (notify only), in payloads of 1,000.
fn flood_info(run: &Run, n: usize) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    for chunk in 0..n.div_ceil(1000) {
        let alerts: Vec<Value> = (0..1000.min(n - chunk * 1000))
            .map(|i| {
                let k = chunk * 1000 + i;
                alert(
                    &format!("info{k}"),
                    &format!("svc-info{k}"),
                    &format!("i-info{k}"),
                    "low",
                    "info",
                )
            })
            .collect();
        assert_eq!(post(&client, run, &alerts), 200);
    }
}

fn hang_scenario(bin: &str, probes: usize) -> Outcome {
    probe(&start(bin, ""), "hang", probes)
}

fn flood_scenario(bin: &str, probes: usize) -> Outcome {
    let run = start(bin, "");
    flood_info(&run, env_usize("ACTIONS_FLOOD", 10_000));
    probe(&run, "flood", probes)
}

/// Loops GET `path` from `n` clients until `stop`: (pages, their total ms).
fn readers(
    run: &Run,
    path: &str,
    n: usize,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<(u64, f64)>> {
    (0..n)
        .map(|_| {
            let (url, stop) = (run.url(path), stop.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .build()
                    .unwrap();
                let (mut pages, mut ms) = (0u64, 0f64);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    if client.get(&url).send().and_then(|r| r.bytes()).is_ok() {
                        pages += 1;
                        ms += t.elapsed().as_secs_f64() * 1000.0;
                    }
                }
                (pages, ms)
            })
        })
        .collect()
}

fn readers_scenario(bin: &str, probes: usize) -> Outcome {
    let run = start(bin, "http:\n  console: {open_on_loopback: true}\n");
    let open = env_usize("ACTIONS_OPEN", 5000);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    for chunk in 0..open.div_ceil(1000) {
        let alerts: Vec<Value> = (0..1000.min(open - chunk * 1000))
            .map(|i| {
                let k = chunk * 1000 + i;
                alert(
                    &format!("open{k}"),
                    "pay",
                    &format!("i-open{k}"),
                    "medium",
                    "critical",
                )
            })
            .collect();
        assert_eq!(post(&client, &run, &alerts), 200);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let n = env_usize("ACTIONS_READERS", 8);
    let threads = readers(&run, "/", n, stop.clone());
    std::thread::sleep(Duration::from_secs(1));
    let mut o = probe(&run, "readers", probes);
    stop.store(true, Ordering::Relaxed);
    let (pages, ms) = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .fold((0, 0.0), |(p, m), (a, b)| (p + a, m + b));
    o.notes.push(format!(
        "{n} readers of / with {open} open incidents: {pages} pages, mean {:.0} ms a page",
        ms / pages.max(1) as f64
    ));
    o
}

fn silences_scenario(bin: &str, probes: usize) -> Outcome {
    let run = start(bin, "");
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let now = now_millis();
    let silence = |matchers: Value| {
        client
            .post(run.url("/api/v1/silences"))
            .json(&json!({"matchers": matchers, "startsAt": rfc3339(now),
                "endsAt": rfc3339(now + 86_400_000), "createdBy": "mallory",
                "comment": "maintenance", "scope": "all"}))
            .send()
            .map_or(0, |r| r.status().as_u16())
    };
    let heavy: Vec<Value> = (0..32)
        .map(|i| json!({"name": format!("l{i}"), "value": "(?:\\w{60}){3}", "isRegex": true}))
        .collect();
    let heavy_n = env_usize("ACTIONS_HEAVY", 4);
    let heavy_taken = (0..heavy_n)
        .filter(|_| silence(Value::Array(heavy.clone())) == 200)
        .count();
    let light_taken = (0..100)
        .filter(|i| {
            silence(
                json!([{"name": "instance", "value": format!("i-maint-{i}-.*"), "isRegex": true}]),
            ) == 200
        })
        .count();
    let mut o = probe(&run, "silences", probes);
    o.notes.push(format!(
        "heavy silences accepted: {heavy_taken} of {heavy_n}; ordinary regex silences in force: {light_taken}; RSS {:.0} MB",
        run.rss_mb()
    ));
    o
}

fn connections_scenario(bin: &str, probes: usize) -> Outcome {
    let run = start(bin, "http:\n  max_connections: 64\n");
    let stop = Arc::new(AtomicBool::new(false));
    // Half from 127.0.0.2, half from 127.1.0.1..250, interleaved.
    let from: Vec<std::net::IpAddr> = (0..300)
        .map(|k| {
            if k % 2 == 0 {
                std::net::IpAddr::from([127, 0, 0, 2])
            } else {
                std::net::IpAddr::from([127, 1, 0, (k / 2 % 250) as u8 + 1])
            }
        })
        .collect();
    let to: std::net::SocketAddr = ([127, 0, 0, 1], run.port).into();
    let flood = support::silent_flood(to, from, 300, stop.clone());
    std::thread::sleep(Duration::from_secs(2));
    let mut o = probe(&run, "conns", probes);
    stop.store(true, Ordering::Relaxed);
    let opened = flood.thread.join().unwrap_or(0);
    o.notes.push(format!(
        "300 silent connections held, {opened} opened in all"
    ));
    o
}

/// `rate` new medium alerts a second on one service for `secs`, from
/// `ACTIONS_STORM_CLIENTS` clients in payloads of 100: (answered 200, other answers).
fn storm(run: &Run, rate: usize, secs: u64) -> (u64, u64) {
    let clients = env_usize("ACTIONS_STORM_CLIENTS", 16).max(1);
    let per_client = rate / clients;
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let url = run.url("/api/v1/alerts");
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .build()
                    .unwrap();
                let (mut ok, mut other) = (0u64, 0u64);
                let begin = Instant::now();
                let mut sent = 0usize;
                while begin.elapsed() < Duration::from_secs(secs) {
                    // Keep to the rate: payloads of 100 when behind.
                    let due = (begin.elapsed().as_secs_f64() * per_client as f64) as usize;
                    if sent >= due {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                    let alerts: Vec<Value> = (0..100)
                        .map(|i| {
                            let k = format!("s{c}-{}", sent + i);
                            alert(&k, "storm", &format!("i-{k}"), "medium", "warning")
                        })
                        .collect();
                    sent += 100;
                    let body = json!({"version": "4", "alerts": alerts}).to_string();
                    match client
                        .post(&url)
                        .header("Content-Type", "application/json")
                        .body(body)
                        .send()
                    {
                        Ok(r) if r.status() == 200 => ok += 100,
                        _ => other += 100,
                    }
                }
                (ok, other)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
}

/// GETs `path` `n` times: (p50 ms, max ms, bytes of the last).
fn sizes(run: &Run, path: &str, n: usize) -> (f64, f64, usize) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let mut ms = Vec::new();
    let mut bytes = 0;
    for _ in 0..n {
        let t = Instant::now();
        if let Ok(b) = client.get(run.url(path)).send().and_then(|r| r.bytes()) {
            bytes = b.len();
        }
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    (pct(&ms, 0.5), ms.last().copied().unwrap_or(f64::NAN), bytes)
}

fn storm_scenario(bin: &str) -> Outcome {
    let run = start(bin, "http:\n  console: {open_on_loopback: true}\n");
    let rate = env_usize("ACTIONS_STORM_RATE", 5000);
    let secs = env_usize("ACTIONS_STORM_SECS", 30) as u64;
    let rss_before = run.rss_mb();
    let began = Instant::now();
    let storm_run = std::thread::scope(|s| {
        let flood = s.spawn(|| {
            let out = storm(&run, rate, secs);
            (out, began.elapsed().as_secs_f64())
        });
        let o = probe(&run, "storm", (secs * 20) as usize);
        (flood.join().unwrap(), o)
    });
    let (((ok, other), took), mut o) = storm_run;
    let (gate_ms, gate_max, gate_bytes) = sizes(&run, "/api/v1/rollouts/storm/gate", 20);
    let (list_ms, list_max, list_bytes) = sizes(&run, "/", 20);
    o.notes.push(format!(
        "storm: {ok} alerts answered 200 in {took:.1} s ({:.0}/s), {other} otherwise; RSS {rss_before:.0} -> {:.0} MB; alerts refused past limits.alerts_bytes: {}",
        ok as f64 / took,
        run.rss_mb(),
        run.metric(r#"ripcord_memory_refused_total{budget="alerts"}"#)
    ));
    o.notes.push(format!(
        "gate of the stormed service: p50 {gate_ms:.1} ms, max {gate_max:.1} ms, {gate_bytes} bytes; console list: p50 {list_ms:.1} ms, max {list_max:.1} ms, {list_bytes} bytes"
    ));
    o
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
    let chosen = std::env::var("ACTIONS_SCENARIOS")
        .unwrap_or_else(|_| "hang,flood,readers,silences,connections,storm".into());
    eprintln!("actions: ripcord binary {bin}");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut outcomes = Vec::new();
    for s in chosen.split(',').map(str::trim) {
        eprintln!("actions: scenario {s}");
        outcomes.push(match s {
            "hang" => hang_scenario(&bin, probes),
            "flood" => flood_scenario(&bin, probes),
            "readers" => readers_scenario(&bin, probes),
            "silences" => silences_scenario(&bin, probes),
            "connections" => connections_scenario(&bin, probes),
            "storm" => storm_scenario(&bin),
            other => panic!("unknown scenario {other}"),
        });
    }
    println!("\n============ ripcord: decision -> rollback start, under faults ============");
    println!("binary: {bin}");
    println!("load average before: {}", load.trim());
    println!(
        "{:<9} {:>9} {:>9} {:>9} {:>9}  goal p99 <= {GOAL_MS} ms",
        "scenario", "started", "p50 ms", "p99 ms", "max ms"
    );
    for o in &outcomes {
        let p99 = pct(&o.latencies_ms, 0.99);
        println!(
            "{:<9} {:>5}/{:<3} {:>9.0} {:>9.0} {:>9.0}  {}",
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
        for n in &o.notes {
            println!("          {n}");
        }
    }
}
