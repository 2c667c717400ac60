//! `ripcord demo`: a scripted upgrade incident through the live pipeline.
//!
//! A three-batch upgrade of the low-tier `web` service (six instances) runs
//! on a clock 60 times faster than the wall (one minute of event time per
//! second). `i-web-3`, upgraded in batch 2, stops answering; ripcord rolls
//! it back through an HTTP "cloud API" stand-in, which brings the instance
//! back; the incident resolves and the upgrade completes. Events go through
//! the embedded Kafka broker, decisions through the journal and the real
//! action layer; chat posts go to a local stand-in. At the end the
//! incident's timeline is printed.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::post;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde_json::json;
use tokio::sync::oneshot;

use crate::app::{self, Ready, Runtime};
use crate::drill::ScaledClock;
use crate::journal::SqliteJournal;
use crate::journal::prelude::*;
use crate::rule::RuleSet;
use crate::settings::Config;
use crate::time::{Clock, Ts};

/// Event time runs this many times faster than the wall.
const SPEED: f64 = 60.0;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo setup: {0}")]
    Setup(String),
    #[error(transparent)]
    App(#[from] app::AppError),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What the stand-ins saw.
#[derive(Default)]
struct World {
    /// Instances the cloud API has rebuilt.
    rebuilt: Mutex<Vec<String>>,
    /// Chat posts received.
    chat: Mutex<Vec<String>>,
}

async fn rebuild(State(w): State<Arc<World>>, Path(instance): Path<String>) -> &'static str {
    w.rebuilt
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(instance);
    "{\"status\":\"rebuilding from pre-upgrade image\"}"
}

async fn chat(State(w): State<Arc<World>>, body: String) -> &'static str {
    let title = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["title"].as_str().map(str::to_owned))
        .unwrap_or(body);
    w.chat.lock().unwrap_or_else(|e| e.into_inner()).push(title);
    "ok"
}

/// Runs the demo, narrating to `out`.
pub async fn run(rules: Arc<RuleSet>, out: &mut (dyn Write + Send)) -> Result<(), DemoError> {
    let dir = tempfile::tempdir()?;
    let world = Arc::new(World::default());
    let standins = Router::new()
        .route("/cloud/instances/{instance}/rebuild", post(rebuild))
        .route("/chat", post(chat))
        .with_state(world.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let outside = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, standins).await;
    });

    let state = dir.path().join("demo.db");
    let yaml = format!(
        r#"
kafka: {{embedded_partitions: 1, properties: {{auto.offset.reset: earliest}}}}
http: {{listen: "127.0.0.1:0"}}
journal: {{path: "{state}"}}
channels:
  chat: {{type: webhook, url: "http://{outside}/chat"}}
executors:
  rollback:
    http: {{method: POST, url: "http://{outside}/cloud/instances/{{instance}}/rebuild"}}
"#,
        state = state.display()
    );
    let cfg = Config::parse(&dir.path().join("demo.yaml"), &yaml)
        .map_err(|e| DemoError::Setup(e.to_string()))?;

    let start = Ts(jiff::Timestamp::now().as_millisecond());
    let clock = ScaledClock::new(start, SPEED);
    let (ready_tx, ready_rx) = oneshot::channel::<Ready>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let mut rt = Runtime::new(rules);
    rt.clock = Arc::new(clock.clone());
    rt.decisions_out = Box::new(Narrator::default());
    rt.on_ready = Some(Box::new(move |r: &Ready| {
        let _ = ready_tx.send(r.clone());
    }));
    writeln!(
        out,
        "ripcord demo: upgrading `web` (low tier, 6 instances, 3 batches) on a clock {SPEED}x faster than the wall\n"
    )?;
    // The responder (its embedded broker stays on this task) and the script,
    // side by side.
    let responder = app::run(cfg, rt, async {
        let _ = stop_rx.await;
    });
    let (w2, c2) = (world.clone(), clock.clone());
    let driver = async move {
        let Ok(ready) = ready_rx.await else {
            return Err(DemoError::Setup("ripcord did not start".into()));
        };
        // The scripted upgrade, produced in (fast) event time.
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &ready.brokers)
            .set("linger.ms", "1")
            .create()
            .map_err(|e| DemoError::Setup(e.to_string()))?;
        let script = Script::new(start);
        let topic = ready.topic.clone();
        let done = Arc::new(AtomicBool::new(false));
        let _ =
            tokio::task::spawn_blocking(move || script.play(&producer, &topic, &c2, &w2, &done))
                .await;
        // Let the last decisions and messages settle, then stop.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = stop_tx.send(());
        Ok(())
    };
    let (ran, drove) = tokio::join!(responder, driver);
    ran?;
    drove?;

    // The incident's timeline, from the journal.
    let journal = SqliteJournal::open(&state, false)?;
    writeln!(out, "\n== incident timeline (from the journal) ==")?;
    for inc in journal.incidents(None)? {
        writeln!(
            out,
            "{} {} ({} tier, {}) {}: {}",
            inc.id, inc.rule, inc.tier, inc.severity, inc.state, inc.labels
        )?;
        for t in journal.timeline(&inc.id)? {
            writeln!(out, "  {}  {:<8} {}", t.at, t.kind, t.message)?;
        }
    }
    writeln!(out, "\n== outside world ==")?;
    let rebuilt = world
        .rebuilt
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    writeln!(out, "cloud API rebuilt: {rebuilt:?}")?;
    writeln!(out, "chat posts:")?;
    for c in world.chat.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        writeln!(out, "  {c}")?;
    }
    Ok(())
}

/// The upgrade's script, in minutes of event time.
struct Script {
    start: Ts,
}

const INSTANCES: [&str; 6] = [
    "i-web-1", "i-web-2", "i-web-3", "i-web-4", "i-web-5", "i-web-6",
];
/// `i-web-3` stops answering this many minutes in (after its batch).
const FAILS_AT_MIN: f64 = 5.5;

impl Script {
    fn new(start: Ts) -> Script {
        Script { start }
    }

    fn play(
        &self,
        p: &ThreadedProducer<DefaultProducerContext>,
        topic: &str,
        clock: &ScaledClock,
        world: &World,
        done: &AtomicBool,
    ) {
        let send = |payload: serde_json::Value| {
            let text = payload.to_string();
            let _ = p.send(BaseRecord::to(topic).key("web").payload(&text));
        };
        let progress = |t: Ts, batch: u32, stage: &str, done_n: u32, msg: Option<&str>| {
            let mut v = json!({"kind": "progress", "ts": t.millis(),
                "labels": {"service": "web", "tier": "low", "batch": batch.to_string(), "batches": "3"},
                "stage": stage, "done": done_n, "total": 6});
            if let Some(m) = msg {
                v["message"] = json!(m);
            }
            send(v);
        };
        let mut next_sample = 0.0f64;
        let mut said = 0u32;
        let mut recovered_at: Option<f64> = None;
        loop {
            let now = clock.now();
            let minute = now.since(self.start).as_secs_f64() / 60.0;
            // Orchestrator progress.
            for (at, batch, stage, n, msg) in [
                (0.0, 1, "batch_started", 0, None),
                (2.0, 1, "batch_done", 2, None),
                (3.0, 2, "batch_started", 2, None),
                (5.0, 2, "batch_done", 4, None),
                (
                    12.0,
                    3,
                    "batch_started",
                    4,
                    Some("i-web-3 rolled back to its pre-upgrade image; continuing"),
                ),
                (14.0, 3, "batch_done", 6, None),
                (14.5, 3, "completed", 6, None),
            ] {
                if minute >= at && said == batch_index(at) {
                    progress(now, batch, stage, n, msg);
                    said += 1;
                }
            }
            // Every instance reports `up` every 15 s of event time.
            if minute >= next_sample {
                next_sample += 0.25;
                let rebuilt = world
                    .rebuilt
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .any(|i| i == "i-web-3");
                if rebuilt && recovered_at.is_none() {
                    // A rebuild takes a minute.
                    recovered_at = Some(minute + 1.0);
                }
                for inst in INSTANCES {
                    let down = inst == "i-web-3"
                        && minute >= FAILS_AT_MIN
                        && recovered_at.is_none_or(|r| minute < r);
                    send(
                        json!({"metric": "up", "value": if down { 0 } else { 1 }, "ts": now.millis(),
                        "labels": {"service": "web", "instance": inst, "tier": "low"}}),
                    );
                }
            }
            if minute >= 16.0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = p.flush(Duration::from_secs(5));
        done.store(true, Ordering::Relaxed);
    }
}

/// Which progress line comes next (they are said in order).
fn batch_index(at: f64) -> u32 {
    [0.0, 2.0, 3.0, 5.0, 12.0, 14.0, 14.5]
        .iter()
        .position(|a| *a == at)
        .unwrap_or(0) as u32
}

/// Prints decisions as they are journaled, one readable line each.
#[derive(Default)]
struct Narrator {
    buf: Vec<u8>,
}

impl Write for Narrator {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        while let Some(i) = self.buf.iter().position(|c| *c == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            if let Ok(d) = serde_json::from_slice::<serde_json::Value>(&line) {
                println!(
                    "{}  {:<16} {:>6}/{:<10} {}",
                    d["at"].as_str().unwrap_or(""),
                    d["action"].as_str().unwrap_or(""),
                    d["tier"].as_str().unwrap_or(""),
                    d["severity"].as_str().unwrap_or(""),
                    d["message"].as_str().unwrap_or("")
                );
            }
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
