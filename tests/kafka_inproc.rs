//! The Kafka source in-process against librdkafka's mock cluster: the fast
//! cases, with no process boundary, so a failure points straight at the
//! source and pipeline. (Crashes, rebalances and a real broker are in
//! kafka_e2e.rs.)

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use ripcord::config::Secret;
use ripcord::engine::EngineConfig;
use ripcord::health::Health;
use ripcord::journal::sqlite::SqliteJournal;
use ripcord::output::{Format, Output};
use ripcord::pipeline::Pipeline;
use ripcord::pipeline::driver::{Driver, Shared};
use ripcord::settings::KafkaConfig;
use ripcord::source::kafka::{KafkaSource, Parts, Start};
use ripcord::telemetry::Metrics;
use ripcord::time::{Clock, SystemClock};
use support::{Captured, DOWN_30S_RULES};
use tokio::sync::Notify;

/// A source and pipeline on their own thread, as `ripcord run` has them.
struct Running {
    out: Captured,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start(brokers: &str, kafka: KafkaConfig) -> Running {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        std::fs::write(dir.path().join("rules/down.yaml"), DOWN_30S_RULES).unwrap();
        let files = ripcord::rule::load::load_dir(&dir.path().join("rules")).expect("rules load");
        let rules = Arc::new(ripcord::rule::load::rule_set(&files));
        let db = dir.path().join("state.db");
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let metrics = Arc::new(Metrics::new());
        let out = Captured::default();
        let output = Output::spawn(Box::new(out.clone()), Format::Json, metrics.clone());
        let health = Arc::new(Health::new(true, Duration::from_secs(60)));
        let shared = Shared::new(
            metrics.clone(),
            health.clone(),
            Arc::new(|why: String| panic!("a shard failed: {why}")),
        );
        // Two shards, as on a two-core machine: the cases below hold
        // whichever shard a partition lands on.
        let drivers = (0..2)
            .map(|i| {
                let journal = SqliteJournal::open(&db, false).unwrap();
                let pipeline = Pipeline::new(
                    rules.clone(),
                    EngineConfig::default(),
                    Box::new(journal),
                    clock.clone(),
                    metrics.clone(),
                    output.clone(),
                    Arc::new(Notify::new()),
                );
                Driver::new(i, pipeline, None, shared.clone())
            })
            .collect();
        let start = Start {
            at: clock.now(),
            embedded: false,
        };
        let mut source = KafkaSource::new(
            kafka,
            brokers.to_owned(),
            drivers,
            Parts {
                metrics: metrics.clone(),
                clock,
                health,
                start,
                positions: Box::new(SqliteJournal::open(&db, false).unwrap()),
            },
        )
        .expect("source starts");
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::spawn(move || {
            source.run(&thread_stop).expect("source runs");
        });
        Running {
            out,
            metrics,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// The value of a metric line starting with `prefix`, 0 if absent.
    fn metric(&self, prefix: &str) -> f64 {
        self.metrics
            .render()
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    }

    fn wait_for(&self, what: &str, timeout: Duration, mut ok: impl FnMut(&Running) -> bool) {
        let end = Instant::now() + timeout;
        while !ok(self) {
            assert!(
                Instant::now() < end,
                "timed out waiting for {what}; decisions so far: {:?}\nmetrics:\n{}",
                self.out.decisions(),
                self.metrics.render()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the source and waits until stdout has printed every decision
    /// the journal holds (stdout trails the commits on a thread of its
    /// own); returns what was printed. Nothing can be printed after it.
    fn stop(mut self) -> Vec<serde_json::Value> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("the source thread exits cleanly");
        }
        let journaled = self.journaled();
        self.wait_for(
            "stdout to print what was journaled",
            Duration::from_secs(30),
            |r| r.out.decisions().len() as i64 >= journaled,
        );
        self.out.decisions()
    }

    /// Decisions in the journal.
    fn journaled(&self) -> i64 {
        rusqlite::Connection::open(self._dir.path().join("state.db"))
            .unwrap()
            .query_row("SELECT count(*) FROM decisions", [], |r| r.get(0))
            .unwrap()
    }
}

fn kafka_config(topic: &str, dead_letters: Option<&str>) -> KafkaConfig {
    KafkaConfig {
        topics: vec![topic.to_owned()],
        group: format!("{topic}-group"),
        dead_letter_topic: dead_letters.map(str::to_owned),
        properties: vec![(
            "auto.offset.reset".to_owned(),
            Secret::new("earliest".to_owned()),
        )],
        ..KafkaConfig::default()
    }
}

fn producer(brokers: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        .create()
        .expect("producer")
}

fn send(p: &ThreadedProducer<DefaultProducerContext>, topic: &str, key: &str, payload: &[u8]) {
    p.send(BaseRecord::to(topic).key(key).payload(payload))
        .map_err(|(e, _)| e)
        .expect("queued");
    p.flush(Duration::from_secs(10)).expect("delivered");
}

fn up(value: f64, ts_ms: i64, instance: &str) -> String {
    format!(
        r#"{{"metric":"up","value":{value},"ts":{ts_ms},"labels":{{"service":"web","instance":"{instance}","tier":"low"}}}}"#
    )
}

fn now_ms() -> i64 {
    SystemClock.now().millis()
}

/// One bad message among good ones: the stream goes on, the bad one is
/// counted and copied to the dead-letter topic with the reason, and the
/// good ones around it are decided on.
#[test]
fn a_poison_message_is_counted_dead_lettered_and_the_stream_goes_on() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("ev", 1, 1).unwrap();
    cluster.create_topic("ev-dead", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let p = producer(&brokers);
    let t0 = now_ms() - 3000;
    send(&p, "ev", "web", up(0.0, t0, "i-1").as_bytes());
    send(&p, "ev", "web", up(0.0, t0 + 500, "i-1").as_bytes());
    send(&p, "ev", "web", br#"{"metric":"up","value":"zero"}"#);
    send(&p, "ev", "web", up(0.0, t0 + 1000, "i-1").as_bytes());

    let run = Running::start(&brokers, kafka_config("ev", Some("ev-dead")));
    run.wait_for(
        "the incident behind the bad message",
        Duration::from_secs(30),
        |r| r.out.decisions().iter().any(|d| d["action"] == "rollback"),
    );
    // Counted once the broker has the copy.
    run.wait_for("the dead letter", Duration::from_secs(20), |r| {
        r.metric("ripcord_dead_letters_total") == 1.0
    });
    let decode_errors: f64 = run
        .metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("ripcord_decode_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(decode_errors, 1.0, "{}", run.metrics.render());
    run.stop();

    // The dead letter holds the original bytes and says what was wrong.
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "inspect")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&["ev-dead"]).unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    let msg = loop {
        assert!(Instant::now() < end, "nothing on the dead-letter topic");
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            break m.detach();
        }
    };
    assert_eq!(
        msg.payload(),
        Some(&br#"{"metric":"up","value":"zero"}"#[..])
    );
    let headers = msg.headers().expect("the dead letter carries headers");
    let reason: Vec<String> = headers
        .iter()
        .filter_map(|h| Some(String::from_utf8_lossy(h.value?).into_owned()))
        .collect();
    assert!(
        reason.iter().any(|r| r.contains("value")),
        "no header names the bad field: {reason:?}"
    );
}

/// Events from before the start warm the windows but fire nothing; the
/// next live sample completes the breach and fires exactly once. (Without
/// the warm-up that sample alone is short of `min_samples` and nothing
/// would fire.)
#[test]
fn warm_up_fills_the_windows_without_firing() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("warm", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let p = producer(&brokers);
    let t0 = now_ms() - 2000;
    // Already a breach (three zeros), but from before ripcord started.
    for i in 0..3 {
        send(&p, "warm", "web", up(0.0, t0 + i * 300, "i-9").as_bytes());
    }
    // Start at the end of the topic (the default), as after a restart with
    // a fresh journal: only the warm-up reads the old events.
    let mut cfg = kafka_config("warm", None);
    cfg.properties.clear();
    let run = Running::start(&brokers, cfg);
    run.wait_for("the warm-up", Duration::from_secs(30), |r| {
        r.metric("ripcord_warmup_seconds_count") >= 1.0
    });
    // What a warm-up that fired would have decided is journaled by now.
    assert_eq!(
        run.journaled(),
        0,
        "warm-up fired: {:?}",
        run.out.decisions()
    );
    let live_at = now_ms();
    send(&p, "warm", "web", up(0.0, live_at, "i-9").as_bytes());
    run.wait_for("the live breach", Duration::from_secs(30), |r| {
        r.out.decisions().iter().any(|d| d["action"] == "rollback")
    });
    let decisions = run.stop();
    let rollbacks: Vec<&serde_json::Value> = decisions
        .iter()
        .filter(|d| d["action"] == "rollback")
        .collect();
    assert_eq!(rollbacks.len(), 1, "{decisions:?}");
    // Decided by the live sample, not by an old one the warm-up read.
    let at = ripcord::time::Ts::parse_rfc3339(rollbacks[0]["at"].as_str().unwrap()).unwrap();
    assert!(
        at.0 >= live_at,
        "decided at {at}, before the live sample: {decisions:?}"
    );
}
