//! End-to-end benchmark: a real broker (Apache Kafka, from
//! `scripts/with-kafka`; librdkafka's mock cluster for comparison), a
//! release-built `ripcord run`, real TCP. Not a test: it
//! measures and reports, and prints one summary at the end.
//!
//! ```sh
//! scripts/with-kafka cargo bench --bench e2e
//! E2E_EVENTS=5000000 E2E_PARTITIONS=1,2,4 scripts/with-kafka cargo bench --bench e2e
//! ```
//!
//! Product issue: "events produced to a local broker, consumed and decided
//! by `ripcord run`. Report events/s, and event -> decision latency p50/p99
//! at a steady 10k events/s. Targets: >= 500,000 events/s sustained; p99 <=
//! 5 ms. Also HTTP: Alertmanager payloads per second accepted by
//! `/api/v1/alerts`."
//!
//! Three phases, each with its own topic, state file and `ripcord run`
//! (shipped rules, default settings unless a run says otherwise):
//!
//! 1. **throughput**, once per partition count: a backlog of native metric
//!    samples is produced first (ripcord not running), then ripcord starts
//!    and reads it from the earliest offset. Measured: from the first moment
//!    `/metrics` shows a Kafka event processed to the moment the journal's
//!    positions (SQLite, read by this harness) cover every message, i.e.
//!    consumed, decided *and* journaled. Process start, group join and
//!    partition warm-up are outside the window.
//! 2. **latency**, once per `E2E_LATENCY_RUNS` entry: ripcord running and
//!    caught up; a paced producer sends `E2E_RATE` events/s, one in
//!    `E2E_PROBE_EVERY` an Alertmanager payload with a unique fingerprint,
//!    which the shipped `alertmanager-forwarded` rule decides at once.
//!    Latency: from just before the producer's `send()` of a probe to when
//!    this harness reads the probe's decision line on ripcord's stdout (so
//!    it includes producer, broker, fetch, decode, engine, journal commit
//!    and the pipe). To tell the broker's share from ripcord's, each probe
//!    is also stamped when the broker acknowledges it and when a plain
//!    librdkafka consumer in this harness, fetching with ripcord's
//!    settings, receives it.
//! 3. **http**, once per `E2E_HTTP_MODES` entry: `E2E_HTTP_CLIENTS`
//!    concurrent keep-alive clients POST Alertmanager webhook payloads with
//!    the bearer token to `/api/v1/alerts` for `E2E_HTTP_SECS`; a 200 means
//!    journaled. Either every alert is new (each decides and is acted on)
//!    or all are redeliveries of firing alerts (Alertmanager's steady
//!    state).
//!
//! During each measured window the harness samples CPU time (from /proc)
//! of ripcord (per thread), the broker and itself: all share the cores, and
//! the figures show which one is the bottleneck.
//!
//! Environment (defaults in brackets):
//! - `E2E_PHASES` [throughput,latency,http]: which phases to run
//! - `E2E_EVENTS` [4000000]: backlog size per throughput run
//! - `E2E_PARTITIONS` [1,4]: partition counts for the throughput runs
//! - `E2E_JOURNALS` [sqlite]: journals for the throughput runs; `postgres`
//!   (a replica of a cluster) needs `scripts/with-postgres cargo bench …`
//! - `E2E_SERVICES` [500], `E2E_INSTANCES` [20]: the fleet; each instance
//!   reports 4 metrics per 15 s round, messages keyed by service
//! - `E2E_RATE` [10000]: events/s in the latency phase
//! - `E2E_LATENCY_SECS` [20]: measured latency window, after
//!   `E2E_WARMUP_SECS` [3] of the same load without probes
//! - `E2E_PROBE_EVERY` [100]: one probe per this many messages
//! - `E2E_LATENCY_PARTITIONS` [1]: partitions of the latency topic
//! - `E2E_LATENCY_RUNS` [kafka:default:5,kafka:1:5,mock:1:0]: latency runs
//!   as `broker:fetch_wait:linger`: the broker (`kafka`, or `mock` for
//!   librdkafka's mock cluster in its own process), ripcord's
//!   `fetch.wait.max.ms` (`default` leaves ripcord's own) and the
//!   producer's `linger.ms`
//! - `E2E_LATENCY_CSV` [unset]: a directory to write each latency run's
//!   per-probe stamps to (`<topic>.csv`, ms since the run's start)
//! - `E2E_HTTP_SECS` [10], `E2E_HTTP_CLIENTS` [4], `E2E_HTTP_ALERTS` [3]
//!   (alerts per payload), `E2E_HTTP_MODES` [new,repeat]: every alert new
//!   (each decides and is acted on), or redeliveries of firing alerts
//! - `E2E_RULES` [the shipped rules]: another rules directory (to compare
//!   two builds on the same rules)
//! - `E2E_SHARDS` [unset: ripcord's default, one per core]: the
//!   pipeline's engine shards (`pipeline.shards`)
//! - `E2E_RIPCORD_BIN` [the bench build]: another `ripcord` binary to run,
//!   to compare two builds
//!
//! Needs the Apache Kafka `scripts/with-kafka` starts (`scripts/setup`
//! fetches it).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use support::{
    Kafka, Lines, MockBroker, now_millis, pg_ca, pg_count, pg_database, ripcord_bin, wait_until,
};

const TOKEN: &str = "e2e-bench-token";
/// Event time between two reports of the same series (a scrape interval).
const ROUND_MS: i64 = 15_000;
const METRICS: [&str; 4] = [
    "cpu_usage_ratio",
    "memory_usage_ratio",
    "up",
    "http_5xx_ratio",
];
const TIERS: [&str; 3] = ["low", "medium", "high"];
/// The product issue's targets.
const TARGET_EVENTS_PER_SEC: f64 = 500_000.0;
const TARGET_PG_EVENTS_PER_SEC: f64 = 200_000.0;
const TARGET_P99_MS: f64 = 5.0;

// ---------------------------------------------------------------------------
// Settings

struct Settings {
    phases: Vec<String>,
    events: u64,
    partitions: Vec<i32>,
    services: u64,
    instances: u64,
    rate: u64,
    latency_secs: u64,
    warmup_secs: u64,
    probe_every: u64,
    latency_partitions: i32,
    latency_runs: Vec<LatencyRun>,
    http_secs: u64,
    http_clients: usize,
    http_alerts: usize,
    http_modes: Vec<HttpMode>,
    /// Journals the throughput phase runs against: `sqlite`, `postgres`
    /// (needs `RIPCORD_TEST_PG_URL`: `scripts/with-postgres cargo bench …`).
    journals: Vec<String>,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

impl Settings {
    fn from_env() -> Settings {
        Settings {
            phases: env_list("E2E_PHASES", "throughput,latency,http"),
            journals: env_list("E2E_JOURNALS", "sqlite"),
            events: env_or("E2E_EVENTS", 4_000_000),
            partitions: env_list("E2E_PARTITIONS", "1,4")
                .iter()
                .map(|p| p.parse().expect("E2E_PARTITIONS: comma-separated numbers"))
                .collect(),
            services: env_or("E2E_SERVICES", 500),
            instances: env_or("E2E_INSTANCES", 20),
            rate: env_or("E2E_RATE", 10_000),
            latency_secs: env_or("E2E_LATENCY_SECS", 20),
            warmup_secs: env_or("E2E_WARMUP_SECS", 3),
            probe_every: env_or("E2E_PROBE_EVERY", 100).max(2),
            latency_partitions: env_or("E2E_LATENCY_PARTITIONS", 1),
            latency_runs: env_list("E2E_LATENCY_RUNS", "kafka:default:5,kafka:1:5,mock:1:0")
                .iter()
                .map(|r| LatencyRun::parse(r))
                .collect(),
            http_secs: env_or("E2E_HTTP_SECS", 10),
            http_clients: env_or("E2E_HTTP_CLIENTS", 4),
            http_alerts: env_or("E2E_HTTP_ALERTS", 3),
            http_modes: env_list("E2E_HTTP_MODES", "new,repeat")
                .iter()
                .map(|m| HttpMode::parse(m))
                .collect(),
        }
    }

    fn runs(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }
}

// ---------------------------------------------------------------------------
// The fleet's metric samples

/// SplitMix64: deterministic pseudo-random values without a dependency.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// `services` x `instances` hosts, each reporting [`METRICS`] once per
/// round. Sample `n` of the stream is series `n % series()` in round
/// `n / series()`; series are ordered so consecutive messages belong to
/// different services (many producers interleaved), and one host in 997
/// runs a 25 % HTTP 5xx ratio, so the rules do open incidents.
struct Fleet {
    services: u64,
    instances: u64,
}

impl Fleet {
    fn series(&self) -> u64 {
        self.services * self.instances * METRICS.len() as u64
    }

    /// Writes sample `n` (event time `ts`) into `out`; returns its service
    /// number (the message key).
    fn sample(&self, n: u64, ts: i64, out: &mut String) -> u64 {
        let series = n % self.series();
        let round = n / self.series();
        let hosts = self.services * self.instances;
        let metric = (series / hosts) as usize;
        let host = series % hosts;
        let (service, instance) = (host % self.services, host / self.services);
        let u = unit(mix(series ^ (round << 32)));
        let value = match METRICS[metric] {
            "cpu_usage_ratio" => 0.15 + 0.5 * u,
            "memory_usage_ratio" => 0.3 + 0.4 * u,
            "up" => 1.0,
            _ if host % 997 == 0 => 0.25,
            _ => 0.01 * u,
        };
        out.clear();
        let _ = write!(
            out,
            r#"{{"metric":"{}","value":{value:.4},"ts":{ts},"labels":{{"service":"s{service}","instance":"i-{instance}","tier":"{}"}}}}"#,
            METRICS[metric],
            TIERS[(service % 3) as usize],
        );
        service
    }
}

/// An Alertmanager webhook payload whose alerts fire since `starts_at`
/// with the given fingerprints. A new (fingerprint, start) decides at once
/// (severity `info` is a minor fault, whose only action is `notify`); a
/// known one is a redelivery and decides nothing.
fn alert_payload(
    service: u64,
    fingerprints: &[String],
    starts_at: jiff::Timestamp,
    out: &mut String,
) {
    out.clear();
    out.push_str(r#"{"version":"4","status":"firing","receiver":"ripcord","groupKey":"{}:{alertname=\"BenchProbe\"}","alerts":["#);
    for (i, fp) in fingerprints.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            r#"{{"status":"firing","labels":{{"alertname":"BenchProbe","service":"s{service}","instance":"{fp}","tier":"low","severity":"info"}},"annotations":{{"summary":"benchmark alert"}},"startsAt":"{starts_at:.3}","endsAt":"0001-01-01T00:00:00Z","fingerprint":"{fp}"}}"#,
        );
    }
    out.push_str("]}");
}

// ---------------------------------------------------------------------------
// CPU accounting from /proc

/// Linux reports process times in USER_HZ ticks, 100 per second on every
/// architecture this runs on.
const TICKS_PER_SEC: f64 = 100.0;

/// (user + system) CPU seconds from a /proc `stat` file, with its `comm`.
fn stat_cpu(path: &Path) -> Option<(String, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    // `comm` may hold spaces and parentheses: it ends at the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of stat(5); `fields[0]` is field 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / TICKS_PER_SEC))
}

fn process_cpu(pid: u32) -> f64 {
    stat_cpu(Path::new(&format!("/proc/{pid}/stat"))).map_or(0.0, |(_, s)| s)
}

/// CPU seconds per thread name (threads with the same name summed).
fn thread_cpu(pid: u32) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in dir.flatten() {
            if let Some((comm, secs)) = stat_cpu(&task.path().join("stat")) {
                *out.entry(comm).or_insert(0.0) += secs;
            }
        }
    }
    out
}

/// The process whose command line (arguments joined by NUL) contains
/// every one of `needles`: support's broker wrappers keep their children
/// private.
fn find_pid(needles: &[&str]) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        needles.iter().all(|n| cmdline.contains(n)).then_some(pid)
    })
}

/// CPU use of the processes that share the machine during one window.
struct CpuWindow {
    started: Instant,
    ripcord_pid: u32,
    broker_pid: Option<u32>,
    ripcord: BTreeMap<String, f64>,
    broker: f64,
    harness: f64,
}

/// CPU used over a window, as a share of one core (100 % = one core busy).
struct CpuUse {
    ripcord: f64,
    /// The busiest ripcord threads, by name.
    ripcord_threads: Vec<(String, f64)>,
    /// The broker process (Kafka's JVM, or the mock cluster's host).
    broker: f64,
    harness: f64,
}

impl CpuWindow {
    fn start(ripcord_pid: u32, broker_pid: Option<u32>) -> CpuWindow {
        CpuWindow {
            started: Instant::now(),
            ripcord_pid,
            broker_pid,
            ripcord: thread_cpu(ripcord_pid),
            broker: broker_pid.map_or(0.0, process_cpu),
            harness: process_cpu(std::process::id()),
        }
    }

    fn finish(&self) -> CpuUse {
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        let pct = |secs: f64| 100.0 * secs / wall;
        let now = thread_cpu(self.ripcord_pid);
        let mut threads: Vec<(String, f64)> = now
            .iter()
            .map(|(name, s)| {
                let before = self.ripcord.get(name).copied().unwrap_or(0.0);
                (name.clone(), pct(s - before))
            })
            .filter(|(_, p)| *p >= 1.0)
            .collect();
        threads.sort_by(|a, b| b.1.total_cmp(&a.1));
        threads.truncate(5);
        CpuUse {
            ripcord: pct(now.values().sum::<f64>() - self.ripcord.values().sum::<f64>()),
            ripcord_threads: threads,
            broker: self
                .broker_pid
                .map_or(0.0, |p| pct(process_cpu(p) - self.broker)),
            harness: pct(process_cpu(std::process::id()) - self.harness),
        }
    }
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let threads: Vec<String> = self
            .ripcord_threads
            .iter()
            .map(|(n, p)| format!("{n} {p:.0}%"))
            .collect();
        write!(
            f,
            "ripcord {:.0}% [{}], broker {:.0}%, harness {:.0}% (of one core; {} cores)",
            self.ripcord,
            threads.join(", "),
            self.broker,
            self.harness,
            cores()
        )
    }
}

// ---------------------------------------------------------------------------
// `ripcord run` as a child process

/// The `ripcord` binary to run: the one cargo built for this benchmark
/// (the bench profile's, i.e. target/release/ripcord), unless
/// `E2E_RIPCORD_BIN` names another build to compare.
fn ripcord_path() -> String {
    std::env::var("E2E_RIPCORD_BIN").unwrap_or_else(|_| ripcord_bin().to_owned())
}

/// Called with each stdout line (one decision) and when it was read.
type OnLine = Box<dyn FnMut(&[u8], Instant) + Send>;

struct Ripcord {
    child: Child,
    http: SocketAddr,
    stderr: Lines,
    state: PathBuf,
    /// The PostgreSQL journal's URL, when it is not `state`.
    pg: Option<String>,
    client: reqwest::blocking::Client,
    _dir: tempfile::TempDir,
}

impl Ripcord {
    /// Starts `ripcord run` on `topic` with the shipped rules and a fresh
    /// state file; returns once its `partitions` partitions are warmed.
    /// `properties` are added to `kafka.properties` (librdkafka settings).
    fn start(
        brokers: &str,
        topic: &str,
        partitions: i32,
        properties: &[(&str, &str)],
        on_line: OnLine,
    ) -> Ripcord {
        Ripcord::start_with(brokers, topic, partitions, properties, on_line, None)
    }

    /// As [`Ripcord::start`], journaling to PostgreSQL at `pg` if given.
    fn start_with(
        brokers: &str,
        topic: &str,
        partitions: i32,
        properties: &[(&str, &str)],
        mut on_line: OnLine,
        pg: Option<(&str, &str)>,
    ) -> Ripcord {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("ripcord.yaml");
        let journal = match pg {
            Some((url, ca)) => format!("journal: {{url: \"{url}\", ca_file: \"{ca}\"}}\n"),
            None => String::new(),
        };
        let mut yaml = format!(
            "{journal}http:\n  token: {TOKEN}\nkafka:\n  topics: [{topic}]\n  group: bench-{topic}\n  \
             properties:\n    auto.offset.reset: earliest\n"
        );
        for (k, v) in properties {
            let _ = writeln!(yaml, "    {k}: \"{v}\"");
        }
        if let Ok(rules) = std::env::var("E2E_RULES") {
            let _ = writeln!(yaml, "rules: \"{rules}\"");
        }
        if let Ok(shards) = std::env::var("E2E_SHARDS") {
            let _ = writeln!(yaml, "pipeline:\n  shards: {shards}");
        }
        std::fs::write(&config, yaml).unwrap();
        let state = dir.path().join("state.db");
        let mut cmd = Command::new(ripcord_path());
        cmd.arg("run")
            .args(["--listen", "127.0.0.1:0", "--brokers", brokers])
            .arg("--config")
            .arg(&config);
        if pg.is_none() {
            cmd.arg("--state").arg(&state);
        }
        let mut child = cmd
            .current_dir(dir.path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ripcord run");
        let stdout = child.stdout.take().unwrap();
        // Stamp each decision line the moment it is read: this is the
        // latency phase's "decision seen".
        std::thread::spawn(move || {
            let mut r = BufReader::with_capacity(1 << 16, stdout);
            let mut line = Vec::with_capacity(1024);
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => on_line(&line, Instant::now()),
                }
            }
        });
        let stderr = Lines::of(child.stderr.take().unwrap());
        let listening = wait_until(Duration::from_secs(30), || {
            stderr.find("http: listening on ").is_some()
        });
        assert!(listening, "ripcord did not start:\n{}", stderr.tail(50));
        let http = stderr
            .find("http: listening on ")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let warmed = wait_until(Duration::from_secs(60), || {
            stderr.count("partition warmed") >= partitions as usize
        });
        assert!(
            warmed,
            "ripcord was not assigned {partitions} partitions:\n{}",
            stderr.tail(50)
        );
        Ripcord {
            child,
            http,
            stderr,
            state,
            pg: pg.map(|(u, _)| u.to_owned()),
            client: reqwest::blocking::Client::new(),
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn metrics(&self) -> Metrics {
        let text = self
            .client
            .get(format!("http://{}/metrics", self.http))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        Metrics(text)
    }

    /// The sum of the journal's next offsets for `topic`: every message
    /// below it is decided and committed (partitions start at offset 0).
    fn journaled(&self, topic: &str) -> u64 {
        if let Some(url) = &self.pg {
            let sql = format!(
                "SELECT coalesce(sum(next_offset), 0)::bigint FROM positions WHERE partition LIKE '{topic}/%'"
            );
            return pg_count(url, &sql).max(0) as u64;
        }
        let read = || -> rusqlite::Result<i64> {
            let c = rusqlite::Connection::open_with_flags(
                &self.state,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )?;
            c.query_row(
                "SELECT coalesce(sum(next_offset), 0) FROM positions WHERE partition LIKE ?1",
                [format!("{topic}/%")],
                |r| r.get(0),
            )
        };
        read().unwrap_or(0).max(0) as u64
    }

    /// SIGTERM and wait, so the next phase has the cores to itself.
    fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "e2e: ripcord did not stop within 20 s; killing it\n{}",
            self.stderr.tail(20)
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Ripcord {
    fn drop(&mut self) {
        // Only a panicking phase gets here with the child alive.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An OpenMetrics text from `/metrics`.
struct Metrics(String);

impl Metrics {
    /// The sum of the samples named `name` whose labels contain every one
    /// of `labels` (e.g. `source="kafka"`).
    fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.0
            .lines()
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let bare = series.split('{').next()?;
                (bare == name && labels.iter().all(|want| series.contains(want)))
                    .then(|| value.parse::<f64>().ok())
                    .flatten()
            })
            .sum()
    }

    fn kafka_processed(&self) -> u64 {
        self.sum(
            "ripcord_events_total",
            &["source=\"kafka\"", "outcome=\"processed\""],
        ) as u64
    }

    /// A histogram's cumulative buckets: (upper bound, count), ascending.
    fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let prefix = format!("{name}_bucket{{le=\"");
        let mut out: Vec<(f64, f64)> = self
            .0
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(&prefix)?;
                let (le, rest) = rest.split_once('"')?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, rest.rsplit_once(' ')?.1.parse().ok()?))
            })
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }

    fn commits(&self) -> Commits {
        let name = "ripcord_journal_commit_seconds";
        let buckets = self.buckets(name);
        let count = self.sum(&format!("{name}_count"), &[]);
        let p99_bound = buckets
            .iter()
            .find(|(_, n)| *n >= 0.99 * count)
            .map_or(f64::NAN, |(le, _)| *le);
        Commits {
            count,
            secs: self.sum(&format!("{name}_sum"), &[]),
            p99_bound,
        }
    }
}

/// Journal commits (SQLite transactions), from ripcord's histogram.
struct Commits {
    count: f64,
    secs: f64,
    /// The histogram bucket bound that 99 % of commits stayed under.
    p99_bound: f64,
}

impl std::fmt::Display for Commits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} commits, mean {:.2} ms, 99 % under {:.1} ms",
            self.count,
            1000.0 * self.secs / self.count.max(1.0),
            1000.0 * self.p99_bound
        )
    }
}

// ---------------------------------------------------------------------------
// Producing

/// Per-message delivery stamps: a message sent with opaque `n > 0` has its
/// broker acknowledgement time stored at `acked[n - 1]`.
struct Stamps {
    acked: Mutex<Vec<Option<Instant>>>,
}

impl ClientContext for Stamps {}

impl ProducerContext for Stamps {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, n: usize) {
        if n > 0 && result.is_ok() {
            let at = Instant::now();
            if let Some(slot) = self.acked.lock().unwrap().get_mut(n - 1) {
                *slot = Some(at);
            }
        }
    }
}

type Sender = ThreadedProducer<Stamps>;

/// A producer that can stamp the acknowledgements of up to `stamps`
/// messages.
fn producer(brokers: &str, settings: &[(&str, &str)], stamps: usize) -> Sender {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("message.timeout.ms", "60000");
    for (k, v) in settings {
        c.set(*k, *v);
    }
    c.create_with_context(Stamps {
        acked: Mutex::new(vec![None; stamps]),
    })
    .expect("producer")
}

/// Sends one message (`stamp` > 0: record its acknowledgement), waiting
/// while librdkafka's local queue is full.
fn send(p: &Sender, topic: &str, key: &str, payload: &str, stamp: usize) {
    let mut record = BaseRecord::with_opaque_to(topic, stamp)
        .key(key)
        .payload(payload);
    loop {
        match p.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => panic!("produce to {topic} failed: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL (the cluster's journal)

/// A new database on the test cluster, named after `topic`.
fn fresh_database(topic: &str) -> String {
    pg_database(&topic.replace('-', "_"))
}

// ---------------------------------------------------------------------------
// Phase 1: throughput

struct Throughput {
    partitions: i32,
    journal: String,
    events: u64,
    produce_rate: f64,
    /// First event processed -> last event journaled.
    secs: f64,
    rate: f64,
    /// Between 10 % and 90 % processed: the steady middle.
    middle_rate: f64,
    commits: Commits,
    decisions: f64,
    late: f64,
    cpu: CpuUse,
}

impl Throughput {
    /// The product's targets: 500k/s on one machine's SQLite; 200k/s per
    /// replica on the cluster's PostgreSQL.
    fn target(&self) -> f64 {
        if self.journal == "postgres" {
            TARGET_PG_EVENTS_PER_SEC
        } else {
            TARGET_EVENTS_PER_SEC
        }
    }
}

fn throughput(s: &Settings, kafka: &Kafka, partitions: i32, journal: &str) -> Throughput {
    let topic = support::unique(&format!("bench-backlog-p{partitions}-{journal}"));
    kafka.create_topic(&topic, partitions);
    let fleet = Fleet {
        services: s.services,
        instances: s.instances,
    };

    // The backlog: event times end a minute ago, one round per 15 s.
    let rounds = s.events.div_ceil(fleet.series()) as i64;
    let first_ts = now_millis() - 60_000 - rounds * ROUND_MS;
    eprintln!(
        "e2e: throughput, {partitions} partition(s): producing {} samples ({} series, {rounds} rounds)",
        s.events,
        fleet.series()
    );
    let p = producer(
        &kafka.brokers,
        &[
            ("linger.ms", "20"),
            ("batch.num.messages", "10000"),
            ("batch.size", "1000000"),
            ("queue.buffering.max.messages", "1000000"),
            ("queue.buffering.max.kbytes", "1048576"),
        ],
        0,
    );
    let started = Instant::now();
    let mut payload = String::with_capacity(256);
    let per_round = fleet.series();
    for n in 0..s.events {
        let ts = first_ts
            + (n / per_round) as i64 * ROUND_MS
            + ((n % per_round) * 15_000 / per_round) as i64;
        let service = fleet.sample(n, ts, &mut payload);
        send(&p, &topic, &format!("s{service}"), &payload, 0);
    }
    p.flush(Duration::from_secs(120))
        .expect("flush the backlog");
    let produce_rate = s.events as f64 / started.elapsed().as_secs_f64();
    drop(p);
    eprintln!("e2e: produced at {produce_rate:.0}/s; starting ripcord");

    let decisions = Arc::new(AtomicU64::new(0));
    let counted = decisions.clone();
    let pg = (journal == "postgres").then(|| (fresh_database(&topic), pg_ca()));
    let r = Ripcord::start_with(
        &kafka.brokers,
        &topic,
        partitions,
        &[],
        Box::new(move |_, _| {
            counted.fetch_add(1, Ordering::Relaxed);
        }),
        pg.as_ref().map(|(u, c)| (u.as_str(), c.as_str())),
    );
    let broker_pid = kafka.pid;

    // Poll often: 10 ms is 0.1 % of a 10 s run.
    let poll = Duration::from_millis(10);
    let give_up = Instant::now() + Duration::from_secs(300);
    let mut first = None;
    while first.is_none() && Instant::now() < give_up {
        let n = r.metrics().kafka_processed();
        if n > 0 {
            first = Some((Instant::now(), n, CpuWindow::start(r.pid(), broker_pid)));
        } else {
            std::thread::sleep(poll);
        }
    }
    let (t0, n0, cpu) = first.expect("ripcord consumed nothing within 300 s");
    let (mut t10, mut t90) = (None, None);
    loop {
        let n = r.metrics().kafka_processed();
        let now = Instant::now();
        if t10.is_none() && n >= s.events / 10 {
            t10 = Some((now, n));
        }
        if t90.is_none() && n >= s.events * 9 / 10 {
            t90 = Some((now, n));
        }
        if n >= s.events && r.journaled(&topic) >= s.events {
            break;
        }
        assert!(
            now < give_up,
            "ripcord did not journal all {} events within 300 s (processed {n}):\n{}",
            s.events,
            r.stderr.tail(30)
        );
        std::thread::sleep(poll);
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu.finish();
    let middle_rate = match (t10, t90) {
        (Some((a, na)), Some((b, nb))) if b > a => (nb - na) as f64 / (b - a).as_secs_f64(),
        _ => f64::NAN,
    };
    let m = r.metrics();
    r.stop();
    Throughput {
        partitions,
        journal: journal.to_owned(),
        events: s.events,
        produce_rate,
        secs,
        rate: (s.events - n0) as f64 / secs,
        middle_rate,
        commits: m.commits(),
        decisions: decisions.load(Ordering::Relaxed) as f64,
        late: m.sum("ripcord_samples_late_total", &[]),
        cpu,
    }
}

// ---------------------------------------------------------------------------
// Phase 2: latency

/// Per-probe latencies between two stages.
struct Stage {
    seen: usize,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
}

impl Stage {
    /// From `from[n]` to `to[n]` for every probe `n` seen at both (a `to`
    /// before its `from` counts as zero).
    fn between(from: &[Option<Instant>], to: &[Option<Instant>]) -> Stage {
        let mut lat: Vec<Duration> = from
            .iter()
            .zip(to)
            .filter_map(|(f, t)| Some(t.as_ref()?.saturating_duration_since(*f.as_ref()?)))
            .collect();
        lat.sort();
        Stage {
            seen: lat.len(),
            p50: percentile(&lat, 0.50),
            p99: percentile(&lat, 0.99),
            p999: percentile(&lat, 0.999),
            max: lat.last().copied().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {}  p99 {}  p99.9 {}  max {}",
            ms(self.p50),
            ms(self.p99),
            ms(self.p999),
            ms(self.max)
        )
    }
}

struct Latency {
    rate: f64,
    probes: usize,
    /// Send -> the broker's acknowledgement (acks=all).
    acked: Stage,
    /// Send -> a plain librdkafka consumer in this harness, fetching with
    /// ripcord's settings, has the probe: the broker's share.
    fetched: Stage,
    /// Send -> ripcord's decision line read from its stdout.
    decided: Stage,
    /// The plain consumer's fetch -> ripcord's decision, per probe: roughly
    /// what ripcord adds (its own fetches are not in step with the plain
    /// consumer's, so this is within a fetch cycle).
    own: Stage,
    /// Over the whole run, warm-up included.
    commits: Commits,
    partitions: i32,
    run: LatencyRun,
    cpu: CpuUse,
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// The probe number in a decision line or a probe payload, found without
/// parsing the JSON.
fn probe_number(line: &[u8]) -> Option<usize> {
    const NEEDLE: &[u8] = br#""fingerprint":"bench-probe-"#;
    let at = line.windows(NEEDLE.len()).position(|w| w == NEEDLE)? + NEEDLE.len();
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// Arrival times by probe number, shared with a reader thread.
type Arrivals = Arc<Mutex<Vec<Option<Instant>>>>;

fn arrived(arrivals: &Arrivals, n: usize, at: Instant) {
    if let Some(slot @ None) = arrivals.lock().unwrap().get_mut(n) {
        *slot = Some(at);
    }
}

/// A plain consumer of `topic` from its end, stamping each probe it sees:
/// the time the broker alone takes to hand a message to a consumer.
fn reference_consumer(
    brokers: &str,
    topic: &str,
    partitions: i32,
    fetch_wait_ms: &str,
    arrivals: Arrivals,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-latency-reference")
        .set("enable.auto.commit", "false")
        // The fetch settings ripcord's consumer uses.
        .set("fetch.wait.max.ms", fetch_wait_ms)
        .set("fetch.min.bytes", "1")
        .set("fetch.queue.backoff.ms", "1")
        .create()
        .expect("reference consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::End).unwrap();
    }
    c.assign(&tpl).expect("assign");
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
                let at = Instant::now();
                if let Some(n) = m.payload().and_then(probe_number) {
                    arrived(&arrivals, n, at);
                }
            }
        }
    })
}

/// ripcord's own `fetch.wait.max.ms` (src/source/kafka.rs).
const RIPCORD_FETCH_WAIT_MS: u64 = 10;

/// The broker a latency run goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BrokerKind {
    /// The test command's Apache Kafka (`scripts/with-kafka`).
    Kafka,
    /// librdkafka's mock cluster in its own process (`ripcord mock-broker`),
    /// the broker `scripts/run` embeds.
    Mock,
}

impl BrokerKind {
    fn name(self) -> &'static str {
        match self {
            BrokerKind::Kafka => "Apache Kafka",
            BrokerKind::Mock => "librdkafka mock cluster",
        }
    }
}

/// One latency run: the broker, ripcord's `fetch.wait.max.ms` (`None`: its
/// default; else set through `kafka.properties`) and the producer's
/// `linger.ms`.
#[derive(Clone, Copy, Debug)]
struct LatencyRun {
    broker: BrokerKind,
    fetch_wait: Option<u64>,
    linger_ms: u64,
}

impl LatencyRun {
    /// `broker[:fetch_wait[:linger]]`, e.g. `kafka:default:5` or `mock:1:0`.
    fn parse(spec: &str) -> LatencyRun {
        let bad = || -> ! {
            panic!("E2E_LATENCY_RUNS: {spec:?} is not broker[:fetch_wait_ms|default[:linger_ms]]")
        };
        let mut parts = spec.split(':');
        let broker = match parts.next() {
            Some("kafka") => BrokerKind::Kafka,
            Some("mock") => BrokerKind::Mock,
            _ => bad(),
        };
        let fetch_wait = match parts.next() {
            None | Some("default") => None,
            Some(w) => Some(w.parse().unwrap_or_else(|_| bad())),
        };
        let linger_ms = parts
            .next()
            .map_or(0, |l| l.parse().unwrap_or_else(|_| bad()));
        LatencyRun {
            broker,
            fetch_wait,
            linger_ms,
        }
    }
}

fn latency(s: &Settings, kafka: &Kafka, run: LatencyRun) -> Latency {
    let fetch_wait = run.fetch_wait;
    let topic = &format!(
        "bench-latency-{:?}-{}",
        run.broker,
        fetch_wait.map_or("default".into(), |w| w.to_string())
    )
    .to_lowercase();
    // The mock broker process lives as long as this run.
    let mut _mock = None;
    let (brokers, broker_pid) = match run.broker {
        BrokerKind::Kafka => {
            kafka.create_topic(topic, s.latency_partitions);
            (kafka.brokers.clone(), kafka.pid)
        }
        BrokerKind::Mock => {
            let m = MockBroker::start(topic, s.latency_partitions);
            let pid = find_pid(&["mock-broker\0", &format!("\0{topic}\0")]);
            (_mock.insert(m).brokers.clone(), pid)
        }
    };
    let wait = fetch_wait.unwrap_or(RIPCORD_FETCH_WAIT_MS).to_string();
    let properties: Vec<(&str, &str)> = match fetch_wait {
        Some(_) => vec![("fetch.wait.max.ms", wait.as_str())],
        None => vec![],
    };
    let fleet = Fleet {
        services: s.services,
        instances: s.instances,
    };
    let warm = s.rate * s.warmup_secs;
    let total = warm + s.rate * s.latency_secs;
    let max_probes = (total / s.probe_every + 1) as usize;
    let decided: Arrivals = Arc::new(Mutex::new(vec![None; max_probes]));
    let fetched: Arrivals = Arc::new(Mutex::new(vec![None; max_probes]));
    let by_reader = decided.clone();
    let r = Ripcord::start(
        &brokers,
        topic,
        s.latency_partitions,
        &properties,
        Box::new(move |line, at| {
            if let Some(n) = probe_number(line) {
                arrived(&by_reader, n, at);
            }
        }),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let reference = reference_consumer(
        &brokers,
        topic,
        s.latency_partitions,
        &wait,
        fetched.clone(),
        stop.clone(),
    );
    let linger = run.linger_ms.to_string();
    let p = producer(
        &brokers,
        &[("linger.ms", &linger), ("acks", "all")],
        max_probes,
    );
    eprintln!(
        "e2e: latency: {} events/s for {} s (+{} s warm-up), a probe every {} messages, linger.ms={}, fetch.wait.max.ms={wait}",
        s.rate, s.latency_secs, s.warmup_secs, s.probe_every, run.linger_ms
    );

    // Paced in 1 ms ticks: every message whose due time has come is sent,
    // then the loop sleeps to the next tick. The first `warm` messages are
    // plain samples: ripcord, the reference consumer and the broker settle.
    let mut sent = Vec::with_capacity(max_probes);
    let mut payload = String::with_capacity(1024);
    let mut window = None;
    let started = Instant::now();
    let mut n = 0u64;
    while n < total {
        let due = (started.elapsed().as_secs_f64() * s.rate as f64) as u64 + 1;
        while n < due.min(total) {
            if n == warm {
                window = Some((Instant::now(), CpuWindow::start(r.pid(), broker_pid)));
            }
            let service = n % s.services;
            if n >= warm && n % s.probe_every == 0 {
                let probe = sent.len();
                alert_payload(
                    service,
                    &[format!("bench-probe-{probe}")],
                    jiff::Timestamp::now(),
                    &mut payload,
                );
                sent.push(Instant::now());
                send(&p, topic, &format!("s{service}"), &payload, probe + 1);
            } else {
                let service = fleet.sample(n, now_millis(), &mut payload);
                send(&p, topic, &format!("s{service}"), &payload, 0);
            }
            n += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let (t_warm, cpu) = window.expect("the latency window never started");
    let rate = (total - warm) as f64 / t_warm.elapsed().as_secs_f64();
    let cpu = cpu.finish();
    p.flush(Duration::from_secs(30)).expect("flush");
    // Stragglers: give the last probes a few seconds.
    let probes = sent.len();
    wait_until(Duration::from_secs(5), || {
        decided.lock().unwrap()[..probes]
            .iter()
            .all(Option::is_some)
    });
    stop.store(true, Ordering::Relaxed);
    let _ = reference.join();
    let commits = r.metrics().commits();
    r.stop();
    let sent: Vec<Option<Instant>> = sent.into_iter().map(Some).collect();
    let acked = p.context().acked.lock().unwrap().clone();
    let fetched = fetched.lock().unwrap().clone();
    let decided = decided.lock().unwrap().clone();
    if let Ok(dir) = std::env::var("E2E_LATENCY_CSV") {
        let path = Path::new(&dir).join(format!("{topic}.csv"));
        write_csv(&path, started, &[&sent, &acked, &fetched, &decided]);
        eprintln!("e2e: per-probe stamps in {}", path.display());
    }
    Latency {
        rate,
        probes,
        acked: Stage::between(&sent, &acked),
        fetched: Stage::between(&sent, &fetched),
        decided: Stage::between(&sent, &decided),
        own: Stage::between(&fetched, &decided),
        commits,
        partitions: s.latency_partitions,
        run,
        cpu,
    }
}

/// Per-probe stamps, in ms since `origin`: send, ack, fetch, decision.
fn write_csv(path: &Path, origin: Instant, columns: &[&[Option<Instant>]]) {
    let mut text = String::from("probe,sent_ms,acked_ms,fetched_ms,decided_ms\n");
    for n in 0..columns[0].len() {
        let _ = write!(text, "{n}");
        for c in columns {
            let ms = c[n].map(|t| t.saturating_duration_since(origin).as_secs_f64() * 1000.0);
            let _ = write!(text, ",{}", ms.map_or(String::new(), |m| format!("{m:.3}")));
        }
        text.push('\n');
    }
    std::fs::write(path, text).expect("write the latency CSV");
}

// ---------------------------------------------------------------------------
// Phase 3: HTTP

/// What the HTTP phase posts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HttpMode {
    /// Every alert new: each decides, is journaled and acted on (notify).
    New,
    /// Each client cycles through [`REPEAT_SET`] payloads: after the first
    /// round all are redeliveries, Alertmanager's steady state (it repeats
    /// firing alerts every group interval); nothing decides.
    Repeat,
}

/// Payloads per client in [`HttpMode::Repeat`].
const REPEAT_SET: u64 = 50;

impl HttpMode {
    fn parse(s: &str) -> HttpMode {
        match s {
            "new" => HttpMode::New,
            "repeat" => HttpMode::Repeat,
            _ => panic!("E2E_HTTP_MODES: {s:?} is `new` or `repeat`"),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            HttpMode::New => "new alerts",
            HttpMode::Repeat => "redeliveries of firing alerts",
        }
    }
}

struct Http {
    mode: HttpMode,
    clients: usize,
    alerts_per_payload: usize,
    secs: f64,
    statuses: BTreeMap<String, u64>,
    accepted: u64,
    p50: Duration,
    p99: Duration,
    decisions: u64,
    cpu: CpuUse,
}

fn http(s: &Settings, kafka: &Kafka, mode: HttpMode) -> Http {
    // ripcord always runs a Kafka source; give it an idle topic.
    let topic = &support::unique(&format!("bench-http-idle-{mode:?}").to_lowercase());
    kafka.create_topic(topic, 1);
    let decisions = Arc::new(AtomicU64::new(0));
    let counted = decisions.clone();
    let r = Ripcord::start(
        &kafka.brokers,
        topic,
        1,
        &[],
        Box::new(move |_, _| {
            counted.fetch_add(1, Ordering::Relaxed);
        }),
    );
    let broker_pid = kafka.pid;
    let url = format!("http://{}/api/v1/alerts", r.http);
    eprintln!(
        "e2e: http: {} clients posting {} alerts per payload for {} s, {}",
        s.http_clients,
        s.http_alerts,
        s.http_secs,
        mode.describe()
    );
    let run_start = jiff::Timestamp::now();
    // One thread of async clients: the harness must not take the cores
    // ripcord needs.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let cpu = CpuWindow::start(r.pid(), broker_pid);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(s.http_secs);
    let results: Vec<(BTreeMap<String, u64>, Vec<Duration>)> = rt.block_on(async {
        let tasks: Vec<_> = (0..s.http_clients)
            .map(|c| {
                let (client, url, alerts) = (client.clone(), url.clone(), s.http_alerts);
                tokio::spawn(async move {
                    let mut statuses = BTreeMap::new();
                    let mut took = Vec::new();
                    let mut body = String::with_capacity(4096);
                    let mut i = 0u64;
                    while Instant::now() < deadline {
                        let (n, starts_at) = match mode {
                            HttpMode::New => (i, jiff::Timestamp::now()),
                            HttpMode::Repeat => (i % REPEAT_SET, run_start),
                        };
                        let fps: Vec<String> = (0..alerts)
                            .map(|k| format!("bench-http-{c}-{n}-{k}"))
                            .collect();
                        alert_payload(n % 500, &fps, starts_at, &mut body);
                        i += 1;
                        let sent = Instant::now();
                        let res = client
                            .post(&url)
                            .bearer_auth(TOKEN)
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await;
                        let status = match res {
                            Ok(resp) => {
                                let code = resp.status().as_u16().to_string();
                                let _ = resp.bytes().await;
                                code
                            }
                            Err(e) => format!("error ({e})"),
                        };
                        took.push(sent.elapsed());
                        *statuses.entry(status).or_insert(0) += 1;
                    }
                    (statuses, took)
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu.finish();
    let mut statuses = BTreeMap::new();
    let mut took = Vec::new();
    for (st, t) in results {
        for (k, v) in st {
            *statuses.entry(k).or_insert(0) += v;
        }
        took.extend(t);
    }
    took.sort();
    // Decisions of the last answered requests may still be in the pipe.
    std::thread::sleep(Duration::from_millis(200));
    r.stop();
    Http {
        mode,
        clients: s.http_clients,
        alerts_per_payload: s.http_alerts,
        secs,
        accepted: statuses.get("200").copied().unwrap_or(0),
        statuses,
        p50: percentile(&took, 0.5),
        p99: percentile(&took, 0.99),
        decisions: decisions.load(Ordering::Relaxed),
        cpu,
    }
}

// ---------------------------------------------------------------------------
// The summary

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn verdict(ok: bool) -> &'static str {
    if ok { "MET" } else { "NOT MET" }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    // `cargo bench` passes --bench; anything else (`cargo test --benches`)
    // should not start a five-minute run.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("e2e: a benchmark; run it with `cargo bench --bench e2e`");
        return;
    }
    let s = Settings::from_env();
    let bin = ripcord_path();
    let load_before = loadavg();
    eprintln!("e2e: ripcord binary {bin}");
    let kafka = Kafka::get();
    let broker_name = kafka.name();
    let started = Instant::now();

    let mut tp = Vec::new();
    if s.runs("throughput") {
        for journal in &s.journals {
            for &p in &s.partitions {
                tp.push(throughput(&s, &kafka, p, journal));
            }
        }
    }
    let mut lat = Vec::new();
    if s.runs("latency") {
        for &run in &s.latency_runs {
            lat.push(latency(&s, &kafka, run));
        }
    }
    let mut web = Vec::new();
    if s.runs("http") {
        for &mode in &s.http_modes {
            web.push(http(&s, &kafka, mode));
        }
    }
    let report = Report {
        settings: s,
        bin,
        load_before,
        broker_name,
        total: started.elapsed(),
        throughput: tp,
        latency: lat,
        http: web,
    };
    println!("{report}");
}

/// Everything the summary shows.
struct Report {
    settings: Settings,
    bin: String,
    load_before: String,
    broker_name: String,
    total: Duration,
    throughput: Vec<Throughput>,
    latency: Vec<Latency>,
    http: Vec<Http>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, w: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Report {
            settings: s,
            bin,
            load_before,
            broker_name,
            total,
            throughput: tp,
            latency: lat,
            http: web,
        } = self;
        writeln!(
            w,
            "\n==================== ripcord end-to-end benchmark ===================="
        )?;
        writeln!(w, "machine:  {} cores, {}", cores(), cpu_model())?;
        writeln!(
            w,
            "load:     {load_before} (1/5/15 min) before the run, {} after",
            loadavg()
        )?;
        writeln!(
            w,
            "ripcord:  {bin}{}",
            if bin.contains("/release/") {
                ""
            } else {
                "  (NOT a release build)"
            }
        )?;
        writeln!(
            w,
            "brokers:  {broker_name} (one KRaft node, JVM); librdkafka's mock cluster (`ripcord mock-broker`) \
             for the `mock` latency runs; each in its own process on this machine"
        )?;
        writeln!(
            w,
            "fleet:    {} services x {} instances x {} metrics, keyed by service, shipped rules",
            s.services,
            s.instances,
            METRICS.len()
        )?;
        writeln!(w, "total:    {:.0} s", total.as_secs_f64())?;
        if !tp.is_empty() {
            writeln!(
                w,
                "\nthroughput: a backlog of native samples, first event processed -> last event journaled"
            )?;
            for t in tp {
                writeln!(
                    w,
                    "  {} partition(s), {} journal: {} events in {:.2} s = {:.0} events/s (steady 10-90 %: {:.0}/s)  [target >= {:.0}: {}]",
                    t.partitions,
                    t.journal,
                    t.events,
                    t.secs,
                    t.rate,
                    t.middle_rate,
                    t.target(),
                    verdict(t.rate >= t.target())
                )?;
                writeln!(
                    w,
                    "      journal: {} ({:.0} % of the window); {:.0} decisions; {:.0} samples late",
                    t.commits,
                    100.0 * t.commits.secs / t.secs,
                    t.decisions,
                    t.late
                )?;
                writeln!(w, "      cpu: {}", t.cpu)?;
                writeln!(
                    w,
                    "      (producing the backlog into Kafka ran at {:.0} events/s)",
                    t.produce_rate
                )?;
            }
        }
        for l in lat {
            writeln!(
                w,
                "\nlatency via {}: producer send() -> decision line read on ripcord's stdout, at {:.0} events/s, {} partition(s), producer linger.ms={} acks=all, ripcord fetch.wait.max.ms={}",
                l.run.broker.name(),
                l.rate,
                l.partitions,
                l.run.linger_ms,
                l.run
                    .fetch_wait
                    .map_or(format!("{RIPCORD_FETCH_WAIT_MS} (its default)"), |w| w
                        .to_string())
            )?;
            writeln!(
                w,
                "  probes: {} sent, {} decided{}",
                l.probes,
                l.decided.seen,
                if l.decided.seen < l.probes {
                    "  (MISSING DECISIONS)"
                } else {
                    ""
                }
            )?;
            writeln!(
                w,
                "  decided (ripcord's stdout): {}  [target p99 <= {TARGET_P99_MS} ms: {}]",
                l.decided,
                verdict(
                    l.decided.p99.as_secs_f64() * 1000.0 <= TARGET_P99_MS
                        && l.decided.seen == l.probes
                )
            )?;
            writeln!(w, "  of which the broker: acknowledged {}", l.acked)?;
            writeln!(
                w,
                "                      fetched by a plain consumer {}",
                l.fetched
            )?;
            writeln!(
                w,
                "  plain consumer's fetch -> decision (ripcord's share): {}",
                l.own
            )?;
            writeln!(w, "  journal: {}", l.commits)?;
            writeln!(w, "  cpu: {}", l.cpu)?;
        }
        for h in web {
            writeln!(
                w,
                "\nhttp: POST /api/v1/alerts, {} keep-alive clients, {} alerts per payload, {}, {:.1} s",
                h.clients,
                h.alerts_per_payload,
                h.mode.describe(),
                h.secs
            )?;
            writeln!(
                w,
                "  accepted (200): {:.0} payloads/s = {:.0} alerts/s; request p50 {} p99 {}; {} decisions printed",
                h.accepted as f64 / h.secs,
                (h.accepted * h.alerts_per_payload as u64) as f64 / h.secs,
                ms(h.p50),
                ms(h.p99),
                h.decisions
            )?;
            let codes: Vec<String> = h
                .statuses
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            writeln!(w, "  status codes: {}", codes.join(", "))?;
            writeln!(w, "  cpu: {}", h.cpu)?;
        }
        writeln!(w, "\ntargets (this machine, this run):")?;
        if !tp.is_empty() {
            let rates: Vec<String> = tp
                .iter()
                .map(|t| format!("{} partition(s) {:.0}/s", t.partitions, t.rate))
                .collect();
            writeln!(
                w,
                "  >= {TARGET_EVENTS_PER_SEC:.0} events/s sustained: {} ({})",
                verdict(tp.iter().all(|t| t.rate >= TARGET_EVENTS_PER_SEC)),
                rates.join(", ")
            )?;
        }
        for l in lat {
            writeln!(
                w,
                "  p99 <= {TARGET_P99_MS} ms at {} events/s via {} (fetch.wait.max.ms {}, linger.ms {}): {} (p99 {}; the broker alone: p99 {})",
                s.rate,
                l.run.broker.name(),
                l.run
                    .fetch_wait
                    .map_or("default".to_owned(), |w| w.to_string()),
                l.run.linger_ms,
                verdict(
                    l.decided.p99.as_secs_f64() * 1000.0 <= TARGET_P99_MS
                        && l.decided.seen == l.probes
                ),
                ms(l.decided.p99),
                ms(l.fetched.p99)
            )?;
        }
        writeln!(
            w,
            "======================================================================"
        )?;
        Ok(())
    }
}
