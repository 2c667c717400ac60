//! Shared helpers for the end-to-end tests: real processes (ripcord,
//! Apache Kafka, librdkafka's mock cluster), real TCP, real HTTP.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::Value;

/// The binary under test; `RIPCORD_TEST_BIN` points the tests at another
/// build (an older one, to see a new test fail on the old code).
pub fn ripcord_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("RIPCORD_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_ripcord").to_owned())
    })
}

/// `--kafka-listen 127.0.0.1:0`: the embedded broker on any free port, so
/// parallel tests never fight over 9092. Left out when `RIPCORD_TEST_BIN`
/// points at an older build that has no such flag.
pub fn any_kafka_port() -> &'static [&'static str] {
    if std::env::var_os("RIPCORD_TEST_BIN").is_some() {
        &[]
    } else {
        &["--kafka-listen", "127.0.0.1:0"]
    }
}

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Polls `f` until it is true or `timeout` passes.
/// What an in-process pipeline prints, kept in memory (the responder's
/// stdout): one decision per line.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    pub fn decisions(&self) -> Vec<Value> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(|l| serde_json::from_str(l).expect("decision lines are JSON"))
            .collect()
    }
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

/// Lines a child writes, collected on a background thread.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn follow(self, r: impl std::io::Read + Send + 'static) -> Self {
        let me = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                match line {
                    Ok(l) => me.0.lock().unwrap().push(l),
                    Err(_) => break,
                }
            }
        });
        self
    }

    /// Collects the lines `r` yields (a child's stdout or stderr).
    pub fn of(r: impl std::io::Read + Send + 'static) -> Self {
        Lines::default().follow(r)
    }

    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        self.all().join("\n")
    }

    pub fn find(&self, prefix: &str) -> Option<String> {
        self.all()
            .into_iter()
            .find_map(|l| l.strip_prefix(prefix).map(str::to_owned))
    }

    /// How many lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// The last `n` lines.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.0.lock().unwrap();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The engine's decision lines (JSON objects) among them: ripcord's
    /// stdout, without the lines of decisions released later.
    pub fn decisions(&self) -> Vec<Value> {
        self.json_lines()
            .into_iter()
            .filter(|d| d.get("released").is_none())
            .collect()
    }

    /// Decisions released later (an approved rollback, a paging step).
    pub fn released(&self) -> Vec<Value> {
        self.json_lines()
            .into_iter()
            .filter(|d| d.get("released").is_some())
            .collect()
    }

    fn json_lines(&self) -> Vec<Value> {
        self.all()
            .iter()
            .filter(|l| l.starts_with('{'))
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad decision line {l}: {e}"))
            })
            .collect()
    }
}

/// `ripcord ARGS` run in `dir`: (exit code, stdout, stderr).
pub fn ripcord_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(ripcord_bin())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// POSTs events (JSON lines) to `/api/v1/events` with the bearer `token`;
/// they are journaled once it answers 200.
pub fn post_events(r: &Responder, token: &str, events: &[Value]) {
    let body: String = events.iter().map(|e| format!("{e}\n")).collect();
    let resp = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .post(r.url("/api/v1/events"))
        .bearer_auth(token)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
}

/// `/metrics` text as series -> value (comments and blank lines skipped).
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// A series' value, 0 when absent (a counter not yet incremented).
pub fn metric(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

/// The sum of every series of `name` (all label sets) in a `/metrics` text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    parse_metrics(text)
        .iter()
        .filter(|(series, _)| {
            series
                .strip_prefix(name)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
        })
        .map(|(_, v)| v)
        .sum()
}

/// Unix milliseconds as RFC 3339.
pub fn rfc3339(millis: i64) -> String {
    jiff::Timestamp::from_millisecond(millis)
        .unwrap()
        .to_string()
}

/// `ripcord run` as a child process.
pub struct Responder {
    pub child: Child,
    pub http: SocketAddr,
    pub brokers: String,
    pub stdout: Lines,
    pub stderr: Lines,
}

impl Responder {
    /// Starts `ripcord run --listen 127.0.0.1:0 <args>` in `dir` and waits
    /// until it listens (and, with `wait_assigned`, owns partitions).
    pub fn start(dir: &Path, args: &[&str]) -> Responder {
        Responder::start_on(dir, "127.0.0.1:0", args)
    }

    /// [`Responder::start`] on `listen` (a known port, for a config's
    /// `public_url`).
    pub fn start_on(dir: &Path, listen: &str, args: &[&str]) -> Responder {
        Responder::start_with_env(dir, listen, args, &[])
    }

    /// [`Responder::start_on`] with `env` set for ripcord (and what it runs).
    pub fn start_with_env(
        dir: &Path,
        listen: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Responder {
        let mut child = Command::new(ripcord_bin())
            .arg("run")
            .args(["--listen", listen])
            .args(args)
            .current_dir(dir)
            .env(
                "RUST_LOG",
                std::env::var("RIPCORD_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ripcord run");
        let stdout = Lines::default().follow(child.stdout.take().unwrap());
        let stderr = Lines::default().follow(child.stderr.take().unwrap());
        let ok = wait_until(Duration::from_secs(30), || {
            stderr.find("http: listening on ").is_some()
        });
        assert!(ok, "ripcord did not start:\n{}", stderr.text());
        let http = stderr
            .find("http: listening on ")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let brokers = stderr
            .find("kafka bootstrap: ")
            .map(|s| s.split_whitespace().next().unwrap().to_owned())
            .unwrap_or_default();
        Responder {
            child,
            http,
            brokers,
            stdout,
            stderr,
        }
    }

    /// Waits until the log says partitions were warmed (the consumer is in).
    pub fn wait_warmed(&self, timeout: Duration) {
        let ok = wait_until(timeout, || self.stderr.text().contains("partition warmed"));
        assert!(ok, "no partition assigned:\n{}", self.stderr.text());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// Decisions printed so far.
    pub fn decisions(&self) -> Vec<Value> {
        self.stdout.decisions()
    }

    pub fn metrics(&self) -> String {
        reqwest::blocking::get(self.url("/metrics"))
            .unwrap()
            .text()
            .unwrap()
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(mut self, timeout: Duration) -> (ExitStatus, Duration, Lines, Lines) {
        let started = Instant::now();
        signal(self.child.id(), "-TERM");
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (
                    status,
                    started.elapsed(),
                    self.stdout.clone(),
                    self.stderr.clone(),
                );
            }
            if started.elapsed() > timeout {
                let _ = self.child.kill();
                panic!(
                    "ripcord did not exit within {timeout:?} of SIGTERM:\n{}",
                    self.stderr.text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` (`-STOP`, `-CONT`, ...) to the process.
    pub fn signal(&self, sig: &str) {
        signal(self.child.id(), sig);
    }

    /// Posts an Alertmanager webhook of `alerts` (`status: firing`) and
    /// asserts it was taken.
    pub fn post_alerts(&self, alerts: Vec<Value>) {
        let body = serde_json::json!({"version": "4", "status": "firing", "alerts": alerts});
        let r = reqwest::blocking::Client::new()
            .post(self.url("/api/v1/alerts"))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    }

    /// kill -9: no chance to clean up.
    pub fn kill9(mut self) -> (Lines, Lines) {
        signal(self.child.id(), "-KILL");
        let _ = self.child.wait();
        // Let the reader threads drain what was written before the kill.
        std::thread::sleep(Duration::from_millis(100));
        (self.stdout.clone(), self.stderr.clone())
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Apache Kafka broker of the test command: `scripts/with-kafka`
/// starts one KRaft node (broker and controller) for the whole run and
/// exports where it listens. Tests share it and isolate themselves with
/// names from [`unique`].
pub struct Kafka {
    /// Plaintext bootstrap, `127.0.0.1:PORT`.
    pub brokers: String,
    /// The TLS listener (a certificate for 127.0.0.1 signed by `ca`).
    pub tls: String,
    /// The SASL_SSL listener (SCRAM-SHA-256 and SCRAM-SHA-512).
    pub sasl_ssl: String,
    /// The CA (PEM) that signed the broker's certificate.
    pub ca: PathBuf,
    /// A SCRAM user the broker knows, and its password.
    pub scram_user: String,
    pub scram_password: String,
    /// e.g. `4.4.0`.
    pub version: String,
    /// The broker's JVM (for benchmarks' CPU figures).
    pub pid: Option<u32>,
}

/// The environment variable `scripts/with-kafka` sets to the plaintext bootstrap.
pub const KAFKA_ENV: &str = "RIPCORD_TEST_KAFKA";

impl Kafka {
    /// The test command's broker; fails, saying how to get one, without it.
    /// Says which broker the test runs on (shown with `--nocapture`, and
    /// with a failure).
    pub fn get() -> Kafka {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!(
                    "{name} is not set: this test needs Apache Kafka. `scripts/test` (or \
                     `scripts/with-kafka CMD`, e.g. `scripts/with-kafka cargo test --test \
                     kafka_e2e`) starts a private broker; scripts/setup fetches it with Maven"
                )
            })
        };
        let k = Kafka {
            brokers: var(KAFKA_ENV),
            tls: var("RIPCORD_TEST_KAFKA_SSL"),
            sasl_ssl: var("RIPCORD_TEST_KAFKA_SASL_SSL"),
            ca: PathBuf::from(var("RIPCORD_TEST_KAFKA_CA")),
            scram_user: var("RIPCORD_TEST_KAFKA_SCRAM_USER"),
            scram_password: var("RIPCORD_TEST_KAFKA_SCRAM_PASSWORD"),
            version: var("RIPCORD_TEST_KAFKA_VERSION"),
            pid: std::env::var("RIPCORD_TEST_KAFKA_PID")
                .ok()
                .and_then(|p| p.parse().ok()),
        };
        println!("broker: {}", k.name());
        k
    }

    /// What the broker is, for a test's output: `Apache Kafka 4.4.0 (KRaft) at 127.0.0.1:PORT`.
    pub fn name(&self) -> String {
        format!("Apache Kafka {} (KRaft) at {}", self.version, self.brokers)
    }

    /// Creates `name` with `partitions` partitions (one replica) and waits
    /// until every partition has a leader.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .expect("admin client");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let results = rt
            .block_on(admin.create_topics(
                [&topic],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            ))
            .expect("create topics");
        for r in results {
            if let Err((t, e)) = r {
                panic!("creating topic {t} on {}: {e}", self.name());
            }
        }
        let led = wait_until(Duration::from_secs(30), || {
            admin
                .inner()
                .fetch_metadata(Some(name), Duration::from_secs(5))
                .is_ok_and(|m| {
                    m.topics().iter().any(|t| {
                        t.name() == name
                            && t.partitions().len() == partitions as usize
                            && t.partitions().iter().all(|p| p.leader() >= 0)
                    })
                })
        });
        assert!(led, "topic {name} has no leader on {}", self.name());
    }
}

/// A name no other test (nor an earlier run on the same broker) uses:
/// `prefix-PID-N-MICROS`.
pub fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros()
        % 1_000_000_000;
    format!("{prefix}-{}-{n}-{micros}", std::process::id())
}

/// `ripcord mock-broker`: librdkafka's mock cluster in its own process.
pub struct MockBroker {
    child: Child,
    stdin: ChildStdin,
    pub brokers: String,
    log: Lines,
}

impl MockBroker {
    pub fn start(topic: &str, partitions: i32) -> MockBroker {
        let mut child = Command::new(ripcord_bin())
            .args([
                "mock-broker",
                "--topic",
                topic,
                "--partitions",
                &partitions.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mock broker");
        let stdin = child.stdin.take().unwrap();
        let log = Lines::default().follow(child.stderr.take().unwrap());
        assert!(wait_until(Duration::from_secs(10), || log
            .find("kafka bootstrap: ")
            .is_some()));
        let brokers = log
            .find("kafka bootstrap: ")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        MockBroker {
            child,
            stdin,
            brokers,
            log,
        }
    }

    fn command(&mut self, c: &str) {
        let before = self
            .log
            .all()
            .iter()
            .filter(|l| l.contains("mock-broker: ok"))
            .count();
        writeln!(self.stdin, "{c}").unwrap();
        self.stdin.flush().unwrap();
        assert!(wait_until(Duration::from_secs(5), || {
            self.log
                .all()
                .iter()
                .filter(|l| l.contains("mock-broker: ok"))
                .count()
                > before
        }));
    }

    pub fn down(&mut self) {
        self.command("down");
    }

    pub fn up(&mut self) {
        self.command("up");
    }
}

impl Drop for MockBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn producer(brokers: &str) -> ThreadedProducer<DefaultProducerContext> {
    producer_with(brokers, &[])
}

/// Like [`producer`], with extra librdkafka properties (TLS, compression).
pub fn producer_with(
    brokers: &str,
    props: &[(&str, &str)],
) -> ThreadedProducer<DefaultProducerContext> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("linger.ms", "1")
        .set("message.timeout.ms", "30000");
    for (k, v) in props {
        c.set(*k, *v);
    }
    c.create().expect("producer")
}

/// Produces `(key, payload)` messages and waits until all are acknowledged.
pub fn produce(brokers: &str, topic: &str, messages: &[(String, String)]) {
    produce_spread(brokers, topic, None, messages)
}

/// Like [`produce`]; with `partitions`, a key ending in a number `n` goes to
/// partition `n % partitions`, so a test knows its keys cover every
/// partition (librdkafka's hash may put a handful of keys on one).
pub fn produce_spread(
    brokers: &str,
    topic: &str,
    partitions: Option<i32>,
    messages: &[(String, String)],
) {
    produce_spread_with(brokers, topic, partitions, &[], messages)
}

/// Like [`produce`], with extra librdkafka producer properties.
pub fn produce_with(
    brokers: &str,
    topic: &str,
    props: &[(&str, &str)],
    messages: &[(String, String)],
) {
    produce_spread_with(brokers, topic, None, props, messages)
}

/// Like [`produce_spread`], with extra librdkafka producer properties.
pub fn produce_spread_with(
    brokers: &str,
    topic: &str,
    partitions: Option<i32>,
    props: &[(&str, &str)],
    messages: &[(String, String)],
) {
    let p = producer_with(brokers, props);
    for (k, v) in messages {
        let partition = partitions.map(|n| {
            let digits: String = k.chars().rev().take_while(|c| c.is_ascii_digit()).collect();
            digits
                .chars()
                .rev()
                .collect::<String>()
                .parse::<i32>()
                .unwrap_or(0)
                % n
        });
        loop {
            let mut record = BaseRecord::to(topic).key(k).payload(v);
            if let Some(part) = partition {
                record = record.partition(part);
            }
            match p.send(record) {
                Ok(()) => break,
                Err((e, _)) => {
                    assert!(e.to_string().contains("Queue full"), "produce failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// Everything in `topic` (all partitions), with each message's headers.
pub fn consume_all(
    brokers: &str,
    topic: &str,
    expect: usize,
    timeout: Duration,
) -> Vec<(String, Vec<(String, String)>)> {
    consume_all_with(brokers, topic, &[], expect, timeout)
}

/// Like [`consume_all`], with extra librdkafka consumer properties.
pub fn consume_all_with(
    brokers: &str,
    topic: &str,
    props: &[(&str, &str)],
    expect: usize,
    timeout: Duration,
) -> Vec<(String, Vec<(String, String)>)> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers)
        .set("group.id", format!("test-reader-{}", free_port()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    for (k, v) in props {
        cfg.set(*k, *v);
    }
    let c: BaseConsumer = cfg.create().unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let end = Instant::now() + timeout;
    while out.len() < expect && Instant::now() < end {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| {
                            (
                                x.key.to_owned(),
                                String::from_utf8_lossy(x.value.unwrap_or(&[])).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push((
                String::from_utf8_lossy(m.payload().unwrap_or(&[])).into_owned(),
                headers,
            ));
        }
    }
    out
}

/// Event time `millis` from now, as Unix milliseconds.
pub fn ts_from_now(millis: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    (now + millis).to_string()
}

pub fn sample(
    metric: &str,
    value: f64,
    ts_millis: i64,
    service: &str,
    instance: &str,
    tier: &str,
) -> String {
    serde_json::json!({
        "metric": metric, "value": value, "ts": ts_millis,
        "labels": {"service": service, "instance": instance, "tier": tier}
    })
    .to_string()
}

pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A scratch directory with a rules dir of quick rules for live tests.
/// Quick rules for the Kafka tests: an instance is down when its `up`
/// samples over 2 s are all 0.
pub const DOWN_RULES: &str = r#"
tier: any
rules:
  - name: down
    match: {metric: up}
    group_by: [service, instance]
    window: 2s
    aggregate: max
    condition: "< 1"
    clear_for: 0s
"#;

/// Rules for the in-process pipeline tests: an instance is down when
/// every `up` sample of 30 s is 0, and at least three of them (long enough
/// that a slow consumer-group join keeps the old samples in).
pub const DOWN_30S_RULES: &str = r#"
tier: any
rules:
  - name: down
    match: {metric: up}
    group_by: [service, instance]
    window: 30s
    aggregate: max
    min_samples: 3
    condition: "< 1"
    clear_for: 0s
"#;

/// Reads one HTTP/1.1 request from a stand-in server's connection: its
/// path and its body (as long as its `Content-Length`). `None` when the
/// client closes or fails before the whole request arrived.
pub fn read_request(c: &mut std::net::TcpStream) -> Option<(String, String)> {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head_end, len) = loop {
        match c.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (i + 4, len);
        }
    };
    while buf.len() < head_end + len {
        match c.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned();
    Some((path, body))
}

pub fn workdir_with_rules(rules_yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/test.yaml"), rules_yaml).unwrap();
    dir
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

pub fn pathbuf(dir: &tempfile::TempDir, rel: &str) -> PathBuf {
    dir.path().join(rel)
}

// ---------------------------------------------------------------------------
// Test certificates (the openssl CLI).

/// Runs the openssl CLI in `dir`; panics with its stderr on failure.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI is missing: run `scripts/setup` (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA certificate `name.pem` with its key `name.key`.
pub fn make_ca(dir: &Path, name: &str, cn: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// `server.pem` / `server.key` for 127.0.0.1 and localhost, signed by the
/// CA `ca.pem` / `ca.key` in `dir`. Clients check the name (librdkafka's
/// ssl.endpoint.identification.algorithm=https, rustls): the IP SAN is
/// what they match.
pub fn make_server_cert(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
}

// ---------------------------------------------------------------------------
// PostgreSQL: the private cluster `scripts/with-postgres` starts.

pub const PG_ENV: &str = "RIPCORD_TEST_PG_URL";

/// The test cluster's URL; fails saying how to get one.
pub fn pg_base() -> String {
    std::env::var(PG_ENV).unwrap_or_else(|_| {
        panic!(
            "{PG_ENV} is not set: this needs PostgreSQL. `scripts/test` (or \
             `scripts/with-postgres CMD`) starts a private cluster (Debian's \
             postgresql, installed by scripts/setup)"
        )
    })
}

/// The CA of the test cluster's TLS certificate.
pub fn pg_ca() -> String {
    std::env::var("RIPCORD_TEST_PG_CA")
        .expect("RIPCORD_TEST_PG_CA is not set: run under scripts/with-postgres")
}

/// Runs `f` with a client of the database at `url`, on a runtime of its own.
fn with_pg<T>(
    url: &str,
    f: impl AsyncFnOnce(&tokio_postgres::Client) -> T,
) -> Result<T, tokio_postgres::Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let t = tokio::spawn(conn);
        let out = f(&c).await;
        drop(c);
        let _ = t.await;
        Ok(out)
    })
}

/// A new, empty database on the test cluster; its URL.
pub fn pg_database(name: &str) -> String {
    let base = pg_base();
    with_pg(&base, async |c| {
        // Two statements: DROP DATABASE refuses a transaction block.
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .await
            .expect("drop an old test database");
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database")
    })
    .expect("connect to the test cluster");
    let (head, _) = base.rsplit_once('/').unwrap();
    format!("{head}/{name}")
}

/// One SQL query's rows, as strings.
pub fn pg_rows(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    with_pg(url, async |c| {
        c.simple_query(sql)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
                }
                _ => None,
            })
            .collect()
    })
    .unwrap()
}

/// The first column of the first row, as a number (0 when the database
/// cannot be reached yet).
pub fn pg_count(url: &str, sql: &str) -> i64 {
    with_pg(url, async |c| {
        c.simple_query(sql).await.ok().and_then(|rows| {
            rows.into_iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0)?.parse().ok(),
                _ => None,
            })
        })
    })
    .ok()
    .flatten()
    .unwrap_or(0)
}

/// The calls recording scripts wrote to `record`: each `printf '%s\\0' CALL
/// ARGS...` record as its arguments (NUL-separated, so any byte but NUL
/// survives). Empty when nothing was recorded yet.
pub fn recorded_calls(record: &Path) -> Vec<Vec<String>> {
    let Ok(bytes) = std::fs::read(record) else {
        return Vec::new();
    };
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut fields: Vec<&[u8]> = bytes.split(|b| *b == 0).collect();
    // The record ends with a NUL: the last piece is empty.
    assert_eq!(fields.pop(), Some(&b""[..]), "a torn record: {bytes:?}");
    for f in fields {
        if f == b"CALL" {
            out.push(Vec::new());
        } else {
            out.last_mut()
                .expect("a record starts with CALL")
                .push(String::from_utf8_lossy(f).into_owned());
        }
    }
    out
}

/// `ripcord run --dry-run --output json --config CONFIG` in `dir`, ready
/// (`/readyz` 200 on `port`, where its config listens): for benchmarks.
pub struct DryRun {
    pub child: Child,
    pub stderr: Lines,
    pub client: reqwest::blocking::Client,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl DryRun {
    pub fn start(dir: &Path, config: &Path, port: u16) -> DryRun {
        let mut child = Command::new(ripcord_bin())
            .args(["run", "--dry-run", "--output", "json", "--config"])
            .arg(config)
            .current_dir(dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ripcord run");
        let stderr = Lines::of(child.stderr.take().unwrap());
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let up = wait_until(Duration::from_secs(60), || {
            client
                .get(format!("{base}/readyz"))
                .send()
                .is_ok_and(|r| r.status() == 200)
        });
        assert!(up, "ripcord did not get ready:\n{}", stderr.text());
        DryRun {
            child,
            stderr,
            client,
            base,
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(mut self) {
        signal(self.child.id(), "-TERM");
        let _ = self.child.wait();
    }
}

/// Whether an incident (the API's `GET /api/v1/incidents/{id}`) has a
/// timeline line containing `text`.
pub fn timeline_says(incident: &Value, text: &str) -> bool {
    incident["timeline"].as_array().is_some_and(|t| {
        t.iter()
            .any(|t| t["message"].as_str().is_some_and(|m| m.contains(text)))
    })
}

/// A rule that opens an incident one minute after a `service`/`instance`
/// answers more than 5% 5xx (`last` of a 30 s window), and clears at once:
/// scripted incidents with timings to the second.
pub const FAST_ERRORS_RULES: &str = r#"
rules:
  - name: errors
    match: {metric: http_5xx_ratio}
    group_by: [service, instance]
    window: 30s
    aggregate: last
    condition: "> 5%"
    for: 60s
    clear_for: 0s
"#;

/// A stand-in HTTP server for chat, SMS and cloud APIs: answers every
/// request 200 (`ok` for Slack's `/services/…`, a DingTalk/WeCom-style
/// `{"errcode":0}` otherwise) and keeps its path, body and arrival time.
#[derive(Clone)]
pub struct Capture {
    pub port: u16,
    hits: Arc<Mutex<Vec<(String, String, Instant)>>>,
}

impl Capture {
    pub fn start() -> Capture {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let h = hits.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut c) = conn else { continue };
                let h = h.clone();
                std::thread::spawn(move || {
                    let Some((path, body)) = read_request(&mut c) else {
                        return;
                    };
                    let answer = if path.starts_with("/services/") {
                        "ok"
                    } else {
                        "{\"errcode\":0,\"errmsg\":\"ok\"}"
                    };
                    h.lock().unwrap().push((path, body, Instant::now()));
                    let _ = c.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                            answer.len()
                        )
                        .as_bytes(),
                    );
                });
            }
        });
        Capture { port, hits }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// (path, body, when) of every request so far.
    pub fn all(&self) -> Vec<(String, String, Instant)> {
        self.hits.lock().unwrap().clone()
    }

    /// (path, body) of every request so far.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.all().into_iter().map(|(p, b, _)| (p, b)).collect()
    }

    /// When each request whose path starts with `prefix` arrived.
    pub fn times(&self, prefix: &str) -> Vec<Instant> {
        self.all()
            .into_iter()
            .filter(|(p, _, _)| p.starts_with(prefix))
            .map(|(_, _, t)| t)
            .collect()
    }

    /// Bodies of the requests whose path starts with `prefix`.
    pub fn bodies(&self, prefix: &str) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|(p, _, _)| p.starts_with(prefix))
            .map(|(_, b, _)| b)
            .collect()
    }
}

/// A screenshot decoded to RGB.
pub struct Shot {
    pub path: PathBuf,
    pub width: u32,
    pub rgb: Vec<u8>,
}

impl Shot {
    /// Pixels within a small distance of `colour` (antialiasing blurs edges).
    pub fn count_near(&self, colour: [u8; 3]) -> usize {
        self.rgb
            .chunks_exact(3)
            .filter(|p| {
                p.iter()
                    .zip(colour)
                    .all(|(a, b)| (i16::from(*a) - i16::from(b)).abs() <= 24)
            })
            .count()
    }
}

/// Renders `page` in headless Chromium (Debian's `chromium`) at
/// `width`x`height` and decodes the screenshot. Fails, saying what to
/// install, when Chromium is missing.
pub fn screenshot(page: &Path, dir: &Path, width: u32, height: u32) -> Shot {
    let out = dir.join(format!("shot-{width}x{height}.png"));
    let run = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            &format!("--window-size={width},{height}"),
            &format!("--screenshot={}", out.display()),
        ])
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "chromium is not installed ({e}): run `scripts/setup` (apt-get install chromium)"
            )
        });
    assert!(
        run.status.success() && out.exists(),
        "chromium failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    decode_png(&out)
}

/// A PNG file decoded to RGB.
pub fn decode_png(out: &Path) -> Shot {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(out).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let rgb: Vec<u8> = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    Shot {
        path: out.to_path_buf(),
        width: info.width,
        rgb,
    }
}

/// Copies a test's artefact (a screenshot) under `target/test-artefacts/`.
pub fn keep_artefact(from: &Path, name: &str) {
    let dir = repo().join("target/test-artefacts");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::copy(from, dir.join(name));
}

/// Fails (never skips) when a tool a test runs is missing, naming the
/// Debian package to install.
pub fn need_tool(bin: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{bin}` is not installed: apt-get install {package} (scripts/setup does)"
    );
}

/// `ripcord run --dry-run --output json` without Kafka, its API token
/// `token` (read from a file), `extra` config lines after `http:`'s, ready.
pub fn ripcord_with_token(dir: &Path, token: &str, extra: &str) -> Responder {
    std::fs::write(dir.join("token"), token).unwrap();
    std::fs::write(
        dir.join("ripcord.yaml"),
        format!("kafka: {{enabled: false}}\nhttp:\n  token: {{file: token}}\n{extra}"),
    )
    .unwrap();
    let r = Responder::start(
        dir,
        &[
            "--config",
            "ripcord.yaml",
            "--state",
            "state.db",
            "--dry-run",
            "--output",
            "json",
        ],
    );
    let ready = wait_until(Duration::from_secs(30), || {
        reqwest::blocking::get(r.url("/readyz")).is_ok_and(|x| x.status() == 200)
    });
    assert!(ready, "ripcord never ready:\n{}", r.stderr.text());
    r
}

/// Holds `n` connections to `to` open and silent from `from` (addresses on
/// loopback: Linux routes all of 127/8 there), opening another as soon as
/// one is closed, until `stop`. [`Flood::opened`] counts the connections
/// opened so far; the thread returns how many were opened in all.
pub fn silent_flood(
    to: SocketAddr,
    from: Vec<std::net::IpAddr>,
    n: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Flood {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let opened = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = opened.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut tasks = Vec::new();
            for k in 0..n {
                let (ip, stop, opened) = (from[k % from.len()], stop.clone(), opened.clone());
                tasks.push(tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    while !stop.load(Ordering::Relaxed) {
                        let sock = tokio::net::TcpSocket::new_v4().unwrap();
                        if sock.bind(SocketAddr::new(ip, 0)).is_err() {
                            return;
                        }
                        if let Ok(mut c) = sock.connect(to).await {
                            opened.fetch_add(1, Ordering::Relaxed);
                            let mut buf = [0u8; 512];
                            // Silent: wait for the server to close it.
                            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                                while !matches!(c.read(&mut buf).await, Ok(0) | Err(_)) {}
                            })
                            .await;
                        }
                        // Reopened at once (a breath, not to spin the CPU
                        // the responder needs).
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        });
        opened.load(Ordering::Relaxed)
    });
    Flood {
        thread,
        opened: counted,
    }
}

/// A [`silent_flood`] running.
pub struct Flood {
    pub thread: std::thread::JoinHandle<usize>,
    opened: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Flood {
    /// Connections opened so far.
    pub fn opened(&self) -> usize {
        self.opened.load(std::sync::atomic::Ordering::Relaxed)
    }
}
