//! `ripcord drill`: a bad batch played through the live pipeline, and the
//! time each step took measured against the plan's budgets.
//!
//! The drill starts the whole responder in this process (the embedded
//! broker, or a drill topic on the configured brokers; the configured
//! channels and executors, or stand-ins with `--dry-run`) on a journal of
//! its own, so a drill never mixes into the production record. It then
//! plays a scenario onto the topic: a built-in bad batch for the tier (one
//! instance's HTTP 5xx ratio at 30% after its batch starts) or a recorded
//! event file. A rollback that needs approval is approved by the drill
//! (`--approve auto`) or waits for a human (`--approve wait`). Once the
//! rollback is done the instance is made healthy again (the built-in
//! scenario, or the file's lines after `{"drill": "after_rollback"}`), and
//! the drill ends when the incident recovers or its time runs out. The
//! review draft of [`crate::report`] is written from the journal, marked
//! as a drill.
//!
//! Phones are never rung by a drill unless asked (`--page-phones`): SMS
//! and voice channels are replaced by the log for its duration.

pub mod eta;
pub mod scenario;

pub use crate::source::kafka_client::{MARKER_HEADER, is_marked, marker};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tokio::sync::oneshot;

use crate::app::{self, Ready, Runtime};
use crate::decision::{Action, Tier};
use crate::journal::prelude::*;
use crate::journal::{ActionState, SqliteJournal};
use crate::rule::RuleSet;
use crate::settings::Config;
use crate::time::{Clock, Dur, Ts};

pub use scenario::{Scenario, ScenarioError};

/// Whether production, subscribed to `topics` (names, or librdkafka's
/// regexes: `^ripcord-.*`), would consume `topic`; the subscription that
/// would, if one does.
pub fn consumed_by<'a>(topics: &'a [String], topic: &str) -> Option<&'a str> {
    topics
        .iter()
        .find(|t| match t.strip_prefix('^') {
            // librdkafka takes a subscription starting with ^ as a regex
            // over the whole name (POSIX extended; Rust's syntax agrees on
            // what subscriptions use). One that does not compile here is
            // taken to match: refusing a drill costs less than a wrong guess.
            Some(_) => regex::Regex::new(t).map_or(true, |re| re.is_match(topic)),
            None => t.as_str() == topic,
        })
        .map(String::as_str)
}

/// Who approves the drill's rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approve {
    /// The drill approves as soon as the request is out, as `by`.
    Auto { by: String },
    /// A human approves (link, API or CLI); the drill waits.
    Wait,
}

#[derive(Debug, Clone)]
pub struct DrillOptions {
    pub tier: Tier,
    /// A recorded scenario; `None`: the built-in bad batch.
    pub scenario: Option<Scenario>,
    pub approve: Approve,
    /// Event time runs this many times faster than the wall (1: a real
    /// drill; more for a quick rehearsal).
    pub speed: f64,
    pub page_phones: bool,
    pub dry_run: bool,
    /// The drill gives up after this long (wall time).
    pub timeout: Duration,
    pub service: String,
    pub instance: String,
    /// Where the drill's journal goes (kept for `ripcord report`); `None`:
    /// a temporary file.
    pub state: Option<PathBuf>,
    /// The topic played onto when brokers are configured (never one the
    /// responder reads in production).
    pub topic: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("drill setup: {0}")]
    Setup(String),
    #[error(transparent)]
    App(#[from] app::AppError),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How the drill went, for the review.
#[derive(Debug, Clone)]
pub struct DrillRun {
    /// The incident the bad batch opened (`None`: nothing was detected).
    pub incident: Option<String>,
    /// The drill's journal.
    pub journal: PathBuf,
    /// When it ended, on the drill's clock (the review is drawn up then).
    pub ended: Ts,
    pub speed: f64,
    pub scenario: String,
    /// What the drill said along the way (phones muted, stand-ins, …).
    pub notes: Vec<String>,
    /// Kept alive while the run is read.
    _dir: Option<Arc<tempfile::TempDir>>,
}

/// A clock `speed` times faster than the wall from `start`.
#[derive(Debug, Clone)]
pub struct ScaledClock {
    start: Ts,
    origin: Instant,
    speed: f64,
}

impl ScaledClock {
    pub fn new(start: Ts, speed: f64) -> ScaledClock {
        ScaledClock {
            start,
            origin: Instant::now(),
            speed,
        }
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> Ts {
        let ms = self.origin.elapsed().as_secs_f64() * 1000.0 * self.speed;
        self.start.saturating_add(Dur(ms as i64))
    }
}

/// Makes `cfg` a drill's: its own journal, listener, consumer group and
/// topic; phones muted unless asked; stand-ins with `dry_run`.
fn drill_config(
    mut cfg: Config,
    opts: &DrillOptions,
    state: PathBuf,
    notes: &mut Vec<String>,
) -> Result<Config, DrillError> {
    cfg.journal.url = None;
    cfg.journal.path = state;
    cfg.http.listen = "127.0.0.1:0".parse().expect("address");
    cfg.http.token = None;
    cfg.kafka.enabled = true;
    cfg.kafka.warm_up = false;
    // The drill's own responder acts on the drill's (marked) events.
    cfg.kafka.accept_drill_events = true;
    cfg.kafka.group = format!("ripcord-drill-{}", std::process::id());
    match (&cfg.kafka.brokers, &opts.topic) {
        (None, _) => {
            cfg.kafka.embedded_partitions = 1;
            cfg.kafka.embedded_listen = Some("127.0.0.1:0".parse().expect("address"));
            notes.push("events went through the embedded broker".into());
        }
        (Some(_), None) => {
            return Err(DrillError::Setup(
                "brokers are configured: name a drill topic with --topic (a drill never plays onto \
                 the topics the responder reads in production)"
                    .into(),
            ));
        }
        (Some(_), Some(t)) if consumed_by(&cfg.kafka.topics, t).is_some() => {
            return Err(DrillError::Setup(format!(
                "--topic {t} is one the responder reads in production (it subscribes to `{}`); \
                 give the drill a topic of its own",
                consumed_by(&cfg.kafka.topics, t).unwrap_or(t)
            )));
        }
        (Some(b), Some(t)) => {
            notes.push(format!("events went through {b}, topic {t}"));
            cfg.kafka.topics = vec![t.clone()];
        }
    }
    let actions = Arc::get_mut(&mut cfg.actions)
        .ok_or_else(|| DrillError::Setup("the actions config is shared".into()))?;
    if opts.dry_run || actions.is_unconfigured() {
        actions.use_stand_ins();
        actions.stand_in_verify();
        notes.push(
            "stand-ins: messages went to the log, executors only said what they would do".into(),
        );
    } else if !opts.page_phones {
        let muted = actions.phones_to_log();
        if !muted.is_empty() {
            notes.push(format!(
                "phones not rung (drill): {} went to the log",
                muted.join(", ")
            ));
        }
    }
    Ok(cfg)
}

/// Runs the drill; progress lines go to `say`.
pub async fn run(
    cfg: Config,
    rules: Arc<RuleSet>,
    opts: DrillOptions,
    say: impl Fn(&str) + Send + Sync + 'static,
) -> Result<DrillRun, DrillError> {
    let say = Arc::new(say);
    let (dir, state) = match &opts.state {
        Some(p) => (None, p.clone()),
        None => {
            let d = Arc::new(tempfile::tempdir()?);
            let p = d.path().join("drill.db");
            (Some(d), p)
        }
    };
    let mut notes = Vec::new();
    let cfg = drill_config(cfg, &opts, state.clone(), &mut notes)?;
    let label = cfg.engine.tiers.label.clone();
    let scenario = match &opts.scenario {
        Some(s) => s.clone(),
        None => Scenario::built_in(opts.tier, &opts.service, &opts.instance, &label),
    };
    let start = Ts(jiff::Timestamp::now().as_millisecond());
    let clock = ScaledClock::new(start, opts.speed);
    let end_clock = clock.clone();
    let (ready_tx, ready_rx) = oneshot::channel::<Ready>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    // Said up front: how long this takes at this speed.
    let mut eta_line =
        eta::estimate(&scenario.shape(), &rules, opts.tier, opts.speed).line(opts.speed);
    if opts.approve == Approve::Wait {
        eta_line.push_str(", plus the time a human takes to approve");
    }
    if let Some(x) = cfg
        .actions
        .rollback
        .executor
        .as_ref()
        .filter(|x| !x.is_dry_run())
    {
        eta_line.push_str(&format!(
            ", plus the rollback's own run (at most {})",
            eta::wall_words(x.timeout())
        ));
    }
    let mut rt = Runtime::new(rules);
    rt.clock = Arc::new(clock.clone());
    rt.decisions_out = Box::new(std::io::sink());
    rt.on_ready = Some(Box::new(move |r: &Ready| {
        let _ = ready_tx.send(r.clone());
    }));
    for n in &notes {
        say(n);
    }
    say(&format!(
        "drill: {} tier, {} on {}, scenario {}, clock x{}",
        opts.tier, opts.service, opts.instance, scenario.name, opts.speed
    ));
    say(&eta_line);
    let responder = app::run(cfg, rt, async {
        let _ = stop_rx.await;
    });
    let driver = drive(
        ready_rx,
        stop_tx,
        scenario.clone(),
        clock,
        state.clone(),
        opts.clone(),
        say.clone(),
    );
    let (ran, drove) = tokio::join!(responder, driver);
    ran?;
    let incident = drove?;
    let ended = end_clock.now();
    Ok(DrillRun {
        ended,
        incident,
        journal: state,
        speed: opts.speed,
        scenario: scenario.name,
        notes,
        _dir: dir,
    })
}

/// Plays the scenario and follows the incident until it recovers; stops
/// the responder at the end. Returns the incident (if one opened).
#[allow(clippy::too_many_arguments)]
async fn drive(
    ready_rx: oneshot::Receiver<Ready>,
    stop_tx: oneshot::Sender<()>,
    scenario: Scenario,
    clock: ScaledClock,
    state: PathBuf,
    opts: DrillOptions,
    say: Arc<dyn Fn(&str) + Send + Sync>,
) -> Result<Option<String>, DrillError> {
    let result = follow(ready_rx, scenario, clock, state, opts, say).await;
    // Let the last messages settle, then stop the responder.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop_tx.send(());
    result
}

async fn follow(
    ready_rx: oneshot::Receiver<Ready>,
    scenario: Scenario,
    clock: ScaledClock,
    state: PathBuf,
    opts: DrillOptions,
    say: Arc<dyn Fn(&str) + Send + Sync>,
) -> Result<Option<String>, DrillError> {
    let ready = ready_rx
        .await
        .map_err(|_| DrillError::Setup("the responder did not start".into()))?;
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &ready.brokers)
        .set("linger.ms", "1")
        .create()
        .map_err(|e| DrillError::Setup(format!("producer: {e}")))?;
    let journal = SqliteJournal::open(&state, false)?;
    let http = reqwest::Client::new();
    let deadline = Instant::now() + opts.timeout;
    // Played once the responder is ready (its consumer in and warmed), so
    // what is measured is the responder, not its start.
    let readyz = format!("http://{}/readyz", ready.http);
    loop {
        let ok = http
            .get(&readyz)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        if Instant::now() >= deadline {
            return Err(DrillError::Setup("the responder never became ready".into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let origin = clock.now();
    let began = Instant::now();
    // Each phase's line says how far into the drill it came.
    let say = move |line: &str| {
        say(&format!(
            "{line} (after {})",
            eta::wall_words(began.elapsed())
        ))
    };
    say("drill: the scenario is playing");
    let run = format!("{} {}", std::process::id(), origin);
    let services = scenario.services();
    let mut player = scenario.player(origin);
    let mut incident: Option<String> = None;
    let mut approved = false;
    let mut asked_human = false;
    let mut rollback_done_at: Option<Ts> = None;
    let (mut sample_said, mut verify_said) = (false, false);
    loop {
        let now = clock.now();
        if !sample_said {
            sample_said = say_sample_check(&journal, &services, &say)?;
        }
        // Events due by now, in order; the recovery part only once the
        // rollback is done (re-timed from then).
        for line in player.due(now, rollback_done_at) {
            let key = line.key.clone().unwrap_or_default();
            let _ = producer.send(
                BaseRecord::to(&ready.topic)
                    .key(&key)
                    .payload(&line.payload)
                    .headers(marker(&run)),
            );
        }
        if incident.is_none() {
            incident = journal
                .incidents(None)?
                .into_iter()
                .filter(|i| i.opened_at >= origin.saturating_sub(Dur::from_mins(60)))
                .find(|i| {
                    i.labels
                        .get("service")
                        .and_then(|s| s.as_str())
                        .is_some_and(|s| services.iter().any(|x| x == s))
                })
                .map(|i| i.id);
            if let Some(id) = &incident {
                say(&format!("drill: incident {id} opened"));
            }
        }
        if let Some(id) = &incident {
            if !approved {
                if let Some(a) = journal.approval(id)? {
                    if a.state == "awaiting" {
                        match &opts.approve {
                            Approve::Auto { by } => {
                                approve(&http, ready.http, id, by).await?;
                                approved = true;
                                say(&format!("drill: rollback approved by {by} (auto)"));
                            }
                            Approve::Wait if !asked_human => {
                                asked_human = true;
                                say(&format!(
                                    "drill: waiting for a human to approve: POST http://{}/api/v1/incidents/{id}/approve {{\"by\": \"<you>\"}} (or the one-click link)",
                                    ready.http
                                ));
                                if opts.speed == 1.0 {
                                    say(&format!(
                                        "drill: or: ripcord approve {id} --state {} --by <you>",
                                        state.display()
                                    ));
                                }
                            }
                            Approve::Wait => {}
                        }
                    } else if a.state == "approved" {
                        approved = true;
                    }
                }
            }
            if rollback_done_at.is_none() {
                let done = journal
                    .actions_of(id)?
                    .into_iter()
                    .any(|a| a.action == Action::Rollback && a.state == ActionState::Done);
                if done {
                    rollback_done_at = Some(clock.now());
                    say("drill: rollback done; the instance reports healthy again");
                }
            }
            if !verify_said && rollback_done_at.is_some() {
                if let Some(line) = journal.timeline(id)?.into_iter().find(|t| {
                    t.kind == "verify" && t.message.starts_with("verification after rollback")
                }) {
                    verify_said = true;
                    say(&format!("drill: {}", line.message));
                }
            }
            if let Some(inc) = journal.incident(id)? {
                if inc.state == "resolved" {
                    say(&format!("drill: incident {id} recovered"));
                    let _ = producer.flush(Duration::from_secs(5));
                    return Ok(incident);
                }
            }
        }
        if Instant::now() >= deadline
            || player.exhausted_without_incident(clock.now(), incident.is_some())
        {
            say("drill: time is up before the incident recovered");
            let _ = producer.flush(Duration::from_secs(5));
            return Ok(incident);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Says once what the sample check of the healthy batch before the bad
/// one came to, when it has ended (true then, or when there is none to
/// wait for: a recorded scenario without one).
fn say_sample_check(
    journal: &SqliteJournal,
    services: &[String],
    say: &(dyn Fn(&str) + Send + Sync),
) -> Result<bool, DrillError> {
    use crate::journal::SampleState;
    for service in services {
        let rows = journal.sample_checks(service, scenario::HEALTHY_BATCH)?;
        if rows.is_empty() || rows.iter().any(|r| r.state == SampleState::Running) {
            continue;
        }
        let passed = rows
            .iter()
            .filter(|r| r.state == SampleState::Passed)
            .count();
        let each: Vec<String> = rows
            .iter()
            .map(|r| format!("{} {}: {}", r.instance, r.state.as_str(), r.detail))
            .collect();
        say(&format!(
            "drill: sample check of {service} batch {}: {passed} of {} passed ({})",
            scenario::HEALTHY_BATCH,
            rows.len(),
            each.join("; ")
        ));
        return Ok(true);
    }
    Ok(false)
}

/// Approves through the drill's own API, as a human's click would.
async fn approve(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    incident: &str,
    by: &str,
) -> Result<(), DrillError> {
    let url = format!("http://{addr}/api/v1/incidents/{incident}/approve");
    let resp = http
        .post(url)
        .json(&serde_json::json!({"by": by, "note": "drill: approved automatically"}))
        .send()
        .await
        .map_err(|e| DrillError::Setup(format!("approving: {e}")))?;
    if !resp.status().is_success() {
        return Err(DrillError::Setup(format!(
            "approving: {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_a_production_subscription_consumes_is_named_regexes_included() {
        let prod = vec!["orders".to_owned(), "^ripcord-.*".to_owned()];
        assert_eq!(consumed_by(&prod, "ripcord-events"), Some("^ripcord-.*"));
        assert_eq!(consumed_by(&prod, "orders"), Some("orders"));
        assert_eq!(consumed_by(&prod, "drills"), None);
        assert_eq!(consumed_by(&prod, "orders-drill"), None);
        // A subscription regex this build cannot read is taken to match.
        assert!(consumed_by(&["^(unclosed".to_owned()], "anything").is_some());
    }

    #[test]
    fn a_drills_events_carry_the_marker() {
        use rdkafka::message::Headers;
        let h = marker("run-1");
        let found = h
            .iter()
            .find(|x| x.key == MARKER_HEADER)
            .and_then(|x| x.value);
        assert_eq!(found, Some(&b"run-1"[..]));
    }
}
