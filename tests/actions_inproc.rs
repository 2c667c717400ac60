//! The action layer in process: the command executor against real child
//! processes (hostile label values, timeouts, output floods), and paging
//! and approval expiry driven by tokio's paused clock through the real
//! journal, delivery workers, responder and scheduler, with every message
//! going over real HTTP to a local stand-in.
//!
//! Paused time: a blocking task held open for the whole test keeps tokio
//! from advancing its paused clock on its own (tokio never auto-advances
//! while a `spawn_blocking` task runs on a current-thread runtime), so time
//! moves only when the test says, even while an HTTP round trip to the
//! stand-in is in flight. Without that, tokio would jump to the next timer
//! (a send timeout, a connection pool's idle timer) whenever the runtime
//! waits for the socket, and "not before 5 minutes" would mean nothing.
//! Where a rate limit must wait a few milliseconds between two sends,
//! [`drive`] moves the clock a millisecond at a time; paging times are
//! checked against the clock times the stand-in recorded.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::Uri;
use ripcord::action::deliver::{Deliverer, Delivery};
use ripcord::action::executor::{ExecOutcome, Vars};
use ripcord::action::links::LinkSigner;
use ripcord::action::message::{Kind, Message};
use ripcord::action::responder::Responder;
use ripcord::action::scheduler::Scheduler;
use ripcord::action::{Handler, Outcome, ops};
use ripcord::config::Secret;
use ripcord::decision::{Action, Decision, Severity, Tier};
use ripcord::engine::Engine;
use ripcord::journal::SharedJournal;
use ripcord::journal::{ActionRow, ActionState, Batch, Journal, Shared, SqliteJournal};
use ripcord::settings::Config;
use ripcord::telemetry::Metrics;
use ripcord::time::{Clock, Dur, TokioClock, Ts};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// Shared pieces.

/// 2026-11-21T10:00:00Z: where the paused clock starts.
const START: Ts = Ts(1_795_255_200_000);

fn config(dir: &Path, yaml: &str) -> Config {
    let path = dir.join("ripcord.yaml");
    std::fs::write(&path, yaml).unwrap();
    Config::parse(&path, yaml).unwrap_or_else(|e| panic!("config:\n{e}\n{yaml}"))
}

/// A rollback script that appends its arguments (NUL-separated, each call
/// starting with `CALL`) to `record`, then says what it did.
fn recording_script(dir: &Path, record: &Path) -> PathBuf {
    let script = dir.join("rollback.sh");
    std::fs::write(
        &script,
        format!(
            "printf '%s\\0' CALL \"$@\" >> '{}'\necho \"rolled back $1\"\n",
            record.display()
        ),
    )
    .unwrap();
    script
}

/// The calls a recording script saw, each its argv without the program.
fn calls(record: &Path) -> Vec<Vec<String>> {
    support::recorded_calls(record)
}

fn vars(pairs: &[(&str, &str)]) -> Vars {
    Vars(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// Processes whose command line contains `marker` (zombies have none).
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(marker) {
            found.push(format!("{pid}: {text}"));
        }
    }
    found
}

// ---------------------------------------------------------------------------
// The command executor, unit level, against real child processes.

#[tokio::test]
async fn hostile_label_values_are_refused_and_never_reach_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("calls.bin");
    let script = recording_script(dir.path(), &record);
    let cfg = config(
        dir.path(),
        &format!(
            "executors:\n  rollback:\n    command:\n      argv: [/bin/sh, '{}', \"{{instance}}\", \"--service={{service}}\"]\n      timeout: 30s\n",
            script.display()
        ),
    );
    let exec = cfg.actions.rollback.executor.as_ref().expect("an executor");
    let patterns = &cfg.actions.patterns;

    // 1 MiB: only reachable here. The intake's decoder refuses label values
    // over 1024 bytes, so no event can carry one to the executor.
    let mega = "i".repeat(1 << 20);
    let hostile: Vec<(&str, String)> = vec![
        ("command substitution", "$(id)".into()),
        ("command separator", "i-0a1;id".into()),
        ("backticks", "`id`".into()),
        ("newline", "i-0a1\nid".into()),
        ("option injection", "--rf".into()),
        ("path traversal", "../etc/passwd".into()),
        ("NUL", "i-0a1\0id".into()),
        ("1 MiB", mega.clone()),
    ];
    for (what, value) in &hostile {
        for (label, v) in [
            ("instance", vars(&[("instance", value), ("service", "web")])),
            (
                "service",
                vars(&[("instance", "i-0a1"), ("service", value)]),
            ),
        ] {
            let out = exec.run(&v, patterns).await;
            let ExecOutcome::Refused(detail) = &out else {
                panic!("{what} in `{label}` was not refused: {out:?}");
            };
            assert!(
                detail.contains("refused") && detail.contains(&format!("`{label}`")),
                "{what}: {detail}"
            );
            assert!(
                detail.len() < 600,
                "{what}: the refusal quotes the value cut short, not whole: {} bytes",
                detail.len()
            );
            assert!(exec.describe(&v, patterns).is_err(), "{what} in `{label}`");
        }
        assert!(
            calls(&record).is_empty(),
            "{what}: the script ran: {:?}",
            calls(&record)
        );
    }

    // The control: a good value does run, as one argv element each.
    let out = exec
        .run(
            &vars(&[("instance", "i-0a1"), ("service", "web")]),
            patterns,
        )
        .await;
    assert!(matches!(out, ExecOutcome::Ok(_)), "{out:?}");
    assert!(out.detail().contains("rolled back i-0a1"), "{out:?}");
    assert_eq!(
        calls(&record),
        vec![vec!["i-0a1".to_owned(), "--service=web".to_owned()]]
    );
    let raw = std::fs::read(&record).unwrap();
    for (what, value) in &hostile {
        let v = value.as_bytes();
        assert!(
            v.len() > raw.len() || !raw.windows(v.len()).any(|w| w == v),
            "{what} reached the script"
        );
    }
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    // GNU sleep adds its arguments up: the marker is a unique fraction of
    // a second, so the grandchild's command line carries it.
    let marker = format!("0.{}{nanos:09}", std::process::id());
    let script = dir.path().join("hang.sh");
    std::fs::write(&script, format!("sleep 300 {marker} &\nsleep 300\n")).unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            "executors:\n  rollback:\n    command:\n      argv: [/bin/sh, '{}', \"{{instance}}\"]\n      timeout: 1s\n",
            script.display()
        ),
    );
    let cfg = Arc::new(cfg);
    let started = Instant::now();
    let run = tokio::spawn({
        let cfg = cfg.clone();
        async move {
            let exec = cfg.actions.rollback.executor.as_ref().unwrap();
            exec.run(&vars(&[("instance", "i-0a1")]), &cfg.actions.patterns)
                .await
        }
    });
    // The grandchild is there while the script runs: the check below can
    // see it.
    let mut seen = false;
    while !run.is_finished() && !seen {
        seen = !processes_with(&marker).is_empty();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen, "the grandchild never showed up");
    let out = run.await.unwrap();
    let took = started.elapsed();
    let ExecOutcome::Failed(detail) = &out else {
        panic!("{out:?}");
    };
    assert!(
        detail.contains("timed out") && detail.contains("process group"),
        "{detail}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    // SIGKILL to the group is sent before the outcome; give the kernel a
    // moment to tear the processes down.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_with(&marker).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        processes_with(&marker),
        Vec::<String>::new(),
        "the grandchild survived the timeout"
    );
}

#[tokio::test]
async fn a_flood_of_output_is_bounded_in_the_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("flood.sh");
    std::fs::write(
        &script,
        "head -c 10485760 /dev/zero | tr '\\0' x\necho 'some trouble' >&2\n",
    )
    .unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            "executors:\n  rollback:\n    command:\n      argv: [/bin/sh, '{}', \"{{instance}}\"]\n      timeout: 60s\n",
            script.display()
        ),
    );
    let exec = cfg.actions.rollback.executor.as_ref().unwrap();
    let started = Instant::now();
    let out = exec
        .run(&vars(&[("instance", "i-0a1")]), &cfg.actions.patterns)
        .await;
    let took = started.elapsed();
    let ExecOutcome::Ok(detail) = &out else {
        panic!("{out:?}");
    };
    assert!(
        detail.contains("exit 0") && detail.contains("of 10485760 bytes"),
        "{}",
        &detail[..detail.len().min(300)]
    );
    assert!(detail.contains("some trouble"), "stderr is kept too");
    assert!(
        detail.len() <= 8 * 1024,
        "outcome detail is {} bytes",
        detail.len()
    );
    assert!(took < Duration::from_secs(50), "took {took:?}");
}

// ---------------------------------------------------------------------------
// Paging and approvals on a paused clock.

/// One request the stand-in got: its path, JSON body, and when (on the
/// paused clock) it arrived.
#[derive(Clone, Debug)]
struct SeenHit {
    path: String,
    body: Value,
    at: Ts,
}

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<SeenHit>>>);

impl Seen {
    fn all(&self) -> Vec<SeenHit> {
        self.0.lock().unwrap().clone()
    }

    /// Requests to `path` (of kind `kind`, if given) about `incident`.
    fn about(&self, path: &str, kind: Option<&str>, incident: &str) -> Vec<SeenHit> {
        self.all()
            .into_iter()
            .filter(|h| {
                h.path == path
                    && kind.is_none_or(|k| h.body["kind"] == k)
                    && h.body["incident"].as_str() == Some(incident)
            })
            .collect()
    }
}

/// An HTTP server on a local port, in the test's runtime, that answers 200
/// to anything and keeps what it got with the paused clock's time.
async fn stand_in(clock: Arc<TokioClock>) -> (String, Seen) {
    let seen = Seen::default();
    let keep = seen.clone();
    let app = axum::Router::new().fallback(move |uri: Uri, body: Bytes| {
        let (keep, clock) = (keep.clone(), clock.clone());
        async move {
            keep.0.lock().unwrap().push(SeenHit {
                path: uri.path().to_owned(),
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                at: clock.now(),
            });
            axum::Json(json!({"ok": true}))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

/// Channels on the stand-in: a chat webhook, SMS and voice through their
/// `webhook` provider. No `escalation:` section: the default chain (chat at
/// once, SMS after 5 min, voice after 10 min).
fn channels(base: &str) -> String {
    format!(
        r#"channels:
  chat: {{type: webhook, url: "{base}/chat", rate: 100/s}}
  sms: {{type: sms, provider: webhook, to: ["+14155550100"], url: "{base}/sms", rate: 100/s}}
  voice: {{type: voice, provider: webhook, to: ["+14155550100"], url: "{base}/voice", rate: 100/s}}
"#
    )
}

/// Awaits `fut` while moving the paused clock a millisecond for every
/// millisecond of real time it stays pending: enough for a rate limit's
/// short wait between two sends, never the jump to the next far timer
/// that tokio's own auto-advance would make. The tests measure paging
/// against the clock times the stand-in recorded, and [`between`] allows
/// exactly the drift this test's drives added (a loaded machine makes it
/// seconds: a fixed allowance failed under load).
async fn drive<F: std::future::Future>(fut: F) -> F::Output {
    tokio::pin!(fut);
    let started = Instant::now();
    loop {
        tokio::select! {
            biased;
            out = &mut fut => return out,
            _ = tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(1))) => {
                tokio::time::advance(Duration::from_millis(1)).await;
                DRIFT_MS.with(|d| d.set(d.get() + 1));
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "stuck for a minute of real time"
        );
    }
}

/// Waits 10 ms of real time and moves the paused clock as far. A loop
/// that sleeps between looks (the verification loop's second) and looked a
/// moment before something fell due (its journal read slow under load)
/// wakes only when the clock moves, and here only the test moves it: a wait
/// that held the clock still waited for nothing (it failed once under load).
async fn a_moment() {
    tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(10)))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_millis(10)).await;
}

/// The real action layer around a journal in a temp dir, on the paused
/// clock, with the stand-in.
struct Harness {
    journal: Shared<dyn Journal>,
    responder: Arc<Responder>,
    scheduler: Scheduler,
    clock: Arc<TokioClock>,
    engine: Engine,
    seen: Seen,
    /// The stand-in's base URL.
    base: String,
    stop: tokio::sync::watch::Sender<bool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    /// Holds tokio's auto-advance off while the test runs (see the top).
    gate: Option<(std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>)>,
    dir: tempfile::TempDir,
}

impl Harness {
    /// `yaml` gets the stand-in's base URL and the test's directory.
    async fn new(yaml: impl FnOnce(&str, &Path) -> String) -> Harness {
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let gate = tokio::task::spawn_blocking(move || {
            let _ = gate_rx.recv();
        });
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(TokioClock::starting_at(START));
        let (base, seen) = stand_in(clock.clone()).await;
        let cfg = config(dir.path(), &yaml(&base, dir.path()));
        let base = base.clone();
        let journal: SharedJournal = Arc::new(Mutex::new(Box::new(
            SqliteJournal::open_with_clock(&dir.path().join("journal.db"), false, clock.clone())
                .unwrap(),
        ) as Box<dyn Journal>));
        let metrics = Arc::new(Metrics::new());
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let (deliverer, workers) = Deliverer::start(
            cfg.actions.channels.iter().cloned(),
            reqwest::Client::new(),
            clock.clone(),
            (&journal).into(),
            metrics.clone(),
            shutdown,
        );
        let links = Some(LinkSigner::new(
            Secret::new("inproc-link-secret"),
            "http://ripcord.test",
            cfg.actions.approvals.expire_after,
        ));
        let wake = Arc::new(tokio::sync::Notify::new());
        let silences = Arc::new(ripcord::silence::Guard::default());
        let responder = Arc::new(Responder {
            journal: (&journal).into(),
            deliverer: deliverer.clone(),
            cfg: cfg.actions.clone(),
            clock: clock.clone(),
            links: links.clone(),
            wake: wake.clone(),
            metrics,
            silences: silences.clone(),
            findings: None,
        });
        let scheduler = Scheduler {
            work: (&journal).into(),
            reads: (&journal).into(),
            silence_journal: (&journal).into(),
            deliverer,
            cfg: cfg.actions.clone(),
            clock: clock.clone(),
            links,
            wake,
            owner: "inproc-test".into(),
            output: None,
            silences,
        };
        let files = ripcord::rule::load::load_builtin().unwrap();
        let engine = Engine::new(
            Arc::new(ripcord::rule::load::rule_set(&files)),
            cfg.engine.clone(),
        );
        Harness {
            journal: (&journal).into(),
            responder,
            scheduler,
            clock,
            engine,
            seen,
            base,
            stop,
            workers,
            gate: Some((gate_tx, gate)),
            dir,
        }
    }

    /// Feeds an Alertmanager payload to the engine and journals what it
    /// decides, as the pipeline does. Returns the decisions.
    async fn alert(&mut self, payload: &Value) -> Vec<Decision> {
        let text = payload.to_string();
        let mut events = Vec::new();
        ripcord::decode::decode(text.as_bytes(), &mut events).unwrap();
        let mut out = Vec::new();
        for e in &events {
            self.engine.process(e, &mut out);
        }
        let ds = out.clone();
        let fresh = self
            .journal
            .with(move |j| {
                j.commit(&Batch {
                    decisions: ds.iter().map(|d| ("http/0", d)).collect(),
                    ..Batch::default()
                })
            })
            .await
            .unwrap();
        assert!(fresh.iter().all(|f| *f), "decisions journaled before");
        out
    }

    /// Claims every pending action and runs it through the responder, as
    /// the dispatcher does.
    async fn dispatch(&self) -> Vec<(ActionRow, Outcome)> {
        let claimed = self
            .journal
            .with(|j| j.claim_actions("inproc-test", &Action::ALL, 100))
            .await
            .unwrap();
        let mut done = Vec::new();
        for a in claimed {
            let out = drive(self.responder.handle_to_end(&a)).await;
            let (key, o) = (a.key.clone(), out.clone());
            self.journal
                .with(move |j| j.set_action(&key, o.state, &o.detail))
                .await
                .unwrap();
            done.push((a, out));
        }
        done
    }

    fn elapsed(&self) -> Dur {
        self.clock.now().since(START)
    }

    async fn tick(&self) {
        drive(self.scheduler.tick()).await;
    }

    /// Moves the clock to `at` since the start in steps of at most a
    /// second, with a scheduler pass after each (as `Scheduler::run` does).
    async fn run_until(&self, at: Dur) {
        while self.elapsed() < at {
            let step = (at.millis() - self.elapsed().millis()).min(1000);
            tokio::time::advance(Duration::from_millis(step as u64)).await;
            self.tick().await;
        }
    }

    /// With [`two_stage_verify`]'s config: a verification loop runs from
    /// 62 s (its verifications due at 60 s) until `services` has run
    /// `times` (failing: no `up` file yet; it retries a minute later),
    /// then stops, as its process would at a crash.
    async fn crash_while_services_waits_to_retry(&self, times: usize) {
        let record = self.dir.path().join("calls.bin");
        let services = || {
            calls(&record)
                .iter()
                .filter(|c| c.first().map(String::as_str) == Some("services"))
                .count()
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let first = tokio::spawn(restart(&self.responder).verification_loop(stopped));
        self.run_until(secs(62)).await;
        let mut waited = 0;
        while services() < times {
            waited += 1;
            assert!(waited < 2000, "services never ran: {:?}", calls(&record));
            a_moment().await;
        }
        stop.send(true).unwrap();
        drive(first).await.unwrap();
    }

    /// Looks (`look`) until `passed` says so, moving the clock 10 s
    /// between looks from 62 s (a scheduler pass each, up to 1200 s) with
    /// a moment of real time for what runs meanwhile (a check's process).
    async fn run_until_it_passes<T: std::fmt::Debug, F: std::future::Future<Output = T>>(
        &self,
        mut look: impl FnMut() -> F,
        passed: impl Fn(&T) -> bool,
    ) -> T {
        let mut at = 62;
        loop {
            let seen = look().await;
            if passed(&seen) {
                return seen;
            }
            assert!(at < 1200, "never passed: {seen:?}");
            at += 10;
            self.run_until(secs(at)).await;
            tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(10)))
                .await
                .unwrap();
        }
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut (dyn Journal + 'static)) -> Result<T, ripcord::journal::JournalError>
        + Send
        + 'static,
    ) -> T {
        self.journal.with(f).await.unwrap()
    }

    async fn finish(mut self) {
        let _ = self.stop.send(true);
        for w in std::mem::take(&mut self.workers) {
            drive(w).await.unwrap();
        }
        if let Some((tx, gate)) = self.gate.take() {
            drop(tx);
            gate.await.unwrap();
        }
    }
}

fn secs(s: i64) -> Dur {
    Dur::from_secs(s)
}

thread_local! {
    /// Milliseconds [`drive`] moved the clock on this test's thread (each
    /// test runs its own runtime on a thread of its own).
    static DRIFT_MS: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

/// Asserts `at` lies in `[from, from + within]`, plus the drift [`drive`]
/// added so far (time the harness moved, not ripcord).
fn between(what: &str, at: Ts, from: Ts, within: Dur) {
    let drift = Dur(DRIFT_MS.with(|d| d.get()));
    let until = from.saturating_add(within).saturating_add(drift);
    assert!(
        at >= from && at <= until,
        "{what} at {at}, expected from {from} to {until} ({within:?} and the harness' drift {drift:?})"
    );
}

fn firing(fp: &str, labels: Value) -> Value {
    json!({
        "version": "4", "status": "firing", "receiver": "ripcord",
        "alerts": [{
            "status": "firing", "labels": labels,
            "annotations": {"summary": "it broke"},
            "startsAt": START.to_string(), "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": fp,
        }]
    })
}

fn incident_of(ds: &[Decision], action: Action) -> String {
    ds.iter()
        .find(|d| d.action == action)
        .and_then(|d| d.incident.as_ref())
        .unwrap_or_else(|| panic!("no {action:?} decision in {ds:?}"))
        .to_string()
}

#[tokio::test(start_paused = true)]
async fn paging_escalates_chat_then_sms_at_5m_then_a_call_at_10m_until_acked() {
    let mut h =
        Harness::new(|base, _| format!("policy:\n  high: [page]\n{}", channels(base))).await;
    let seen = h.seen.clone();

    let labels = |i: &str| json!({"alertname": "InstanceDown", "service": "web", "instance": i, "tier": "high", "severity": "critical"});
    let a = incident_of(
        &h.alert(&firing("fp-a", labels("i-0a"))).await,
        Action::Page,
    );
    let b = incident_of(
        &h.alert(&firing("fp-b", labels("i-0b"))).await,
        Action::Page,
    );
    let done = h.dispatch().await;
    let pages: Vec<&Outcome> = done
        .iter()
        .filter(|(a, _)| a.action == Action::Page)
        .map(|(_, o)| o)
        .collect();
    assert_eq!(pages.len(), 2, "{done:?}");
    for o in pages {
        assert_eq!(o.state, ActionState::Done, "{o:?}");
        assert!(
            o.detail.contains("chat at +0s")
                && o.detail.contains("sms at +5m")
                && o.detail.contains("voice at +10m"),
            "{o:?}"
        );
    }
    let (ia, ib) = (a.clone(), b.clone());
    let (ea, eb) = h
        .read(move |j| Ok((j.escalation(&ia)?.unwrap(), j.escalation(&ib)?.unwrap())))
        .await;
    let started = BTreeMap::from([(a.clone(), ea.started_at), (b.clone(), eb.started_at)]);

    // At once: the chat step for both.
    h.tick().await;
    for id in [&a, &b] {
        let chat = seen.about("/chat", Some("page"), id);
        assert_eq!(chat.len(), 1, "{id}: {:?}", seen.all());
        between("chat page", chat[0].at, started[id], secs(1));
        assert!(
            chat[0].body["links"].as_array().is_some_and(|l| l
                .iter()
                .any(|l| l["url"].as_str().unwrap().contains("/ack/"))),
            "a page carries an acknowledge link: {}",
            chat[0].body
        );
    }
    let count = |path: &str, id: &str| seen.about(path, None, id).len();

    // SMS at 5 minutes, not before.
    h.run_until(secs(299)).await;
    assert_eq!((count("/sms", &a), count("/sms", &b)), (0, 0));
    h.run_until(secs(302)).await;
    for id in [&a, &b] {
        let sms = seen.about("/sms", None, id);
        assert_eq!(sms.len(), 1, "{id}: {:?}", seen.all());
        between(
            "sms",
            sms[0].at,
            started[id].saturating_add(secs(300)),
            secs(1),
        );
        assert_eq!(sms[0].body["to"], "+14155550100");
    }

    // At 7 minutes someone acknowledges A.
    h.run_until(secs(420)).await;
    let now = h.clock.now();
    let id = a.clone();
    let acked = h
        .read(move |j| Ok(ops::ack(j, &id, "dave", now)))
        .await
        .expect("ack");
    assert_eq!(acked.detail, "paging stopped");

    // The call at 10 minutes: only B, which nobody acknowledged.
    h.run_until(secs(599)).await;
    assert_eq!((count("/voice", &a), count("/voice", &b)), (0, 0));
    h.run_until(secs(602)).await;
    let call = seen.about("/voice", None, &b);
    assert_eq!(call.len(), 1, "{:?}", seen.all());
    between(
        "call",
        call[0].at,
        started[&b].saturating_add(secs(600)),
        secs(1),
    );
    h.run_until(secs(30 * 60)).await;
    assert_eq!(
        (count("/voice", &a), count("/voice", &b)),
        (0, 1),
        "acked A is never called; B once"
    );
    assert_eq!((count("/sms", &a), count("/sms", &b)), (1, 1));
    assert_eq!(seen.about("/chat", Some("page"), &a).len(), 1);

    let (ia, ib) = (a.clone(), b.clone());
    let (ea, eb, ta) = h
        .read(move |j| Ok((j.escalation(&ia)?, j.escalation(&ib)?, j.timeline(&ia)?)))
        .await;
    let (ea, eb) = (ea.unwrap(), eb.unwrap());
    assert_eq!(
        (ea.state.as_str(), ea.acked_by.as_deref()),
        ("acked", Some("dave"))
    );
    assert_eq!(eb.state, "exhausted");
    let text: Vec<&str> = ta.iter().map(|t| t.message.as_str()).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("paging stopped: acked by dave")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.starts_with("page step 2 of 3: sent via sms")),
        "{text:?}"
    );
    h.finish().await;
}

/// A medium-tier breach asks for approval; returns the harness, the
/// incident and when its approval expires, once the request went out.
async fn approval_waiting(on_timeout: &str) -> (Harness, String, Ts) {
    let mut h = Harness::new(|base, dir| {
        let script = recording_script(dir, &dir.join("calls.bin"));
        format!(
            "{}approvals:\n  on_timeout: {{medium: {on_timeout}}}\nexecutors:\n  rollback:\n    command: {{argv: [/bin/sh, '{}', \"{{instance}}\"], timeout: 30s}}\n",
            channels(base),
            script.display()
        )
    })
    .await;
    let ds = h
        .alert(&firing(
            "fp-m",
            json!({"alertname": "ErrorsUp", "service": "pay", "instance": "i-0m", "tier": "medium", "severity": "warning"}),
        ))
        .await;
    let id = incident_of(&ds, Action::RequestApproval);
    let done = h.dispatch().await;
    let req = done
        .iter()
        .find(|(a, _)| a.action == Action::RequestApproval)
        .map(|(_, o)| o)
        .unwrap();
    assert_eq!(req.state, ActionState::AwaitingApproval, "{req:?}");
    let i = id.clone();
    let approval = h.read(move |j| j.approval(&i)).await.unwrap();
    assert_eq!(
        approval.expires_at.since(approval.requested_at),
        Dur::from_mins(30),
        "the default expire_after"
    );
    // The request went out with its links (alone, or merged into a digest
    // with the notification if both were waiting for the rate limit).
    let part = format!("/l/{id}/approve/");
    assert!(
        h.seen.all().iter().any(|m| m.path == "/chat"
            && m.body["links"]
                .as_array()
                .is_some_and(|l| l.iter().any(|l| l["url"].as_str().unwrap().contains(&part)))),
        "{:?}",
        h.seen.all()
    );
    h.tick().await;
    (h, id, approval.expires_at)
}

#[tokio::test(start_paused = true)]
async fn an_approval_nobody_answers_expires_after_30m_and_pages_under_escalate() {
    let (h, id, expires) = approval_waiting("escalate").await;
    h.run_until(Dur(expires.since(START).millis() - 1_000))
        .await;
    let i = id.clone();
    let (approval, paging) = h
        .read(move |j| Ok((j.approval(&i)?, j.escalation(&i)?)))
        .await;
    assert_eq!(approval.unwrap().state, "awaiting");
    assert!(paging.is_none(), "paging before the expiry: {paging:?}");
    assert!(h.seen.about("/chat", Some("page"), &id).is_empty());

    h.run_until(Dur(expires.since(START).millis() + 2_000))
        .await;
    let i = id.clone();
    let (approval, paging, actions) = h
        .read(move |j| Ok((j.approval(&i)?, j.escalation(&i)?, j.actions_of(&i)?)))
        .await;
    assert_eq!(approval.unwrap().state, "expired");
    assert!(
        paging.is_some_and(|p| p.step >= 1),
        "paging started and its first step ran"
    );
    let page = h.seen.about("/chat", Some("page"), &id);
    assert_eq!(page.len(), 1, "{:?}", h.seen.all());
    between("page after the expiry", page[0].at, expires, secs(2));
    let told = h.seen.about("/chat", Some("outcome"), &id);
    assert!(
        told.iter().any(|m| m.body["title"]
            .as_str()
            .unwrap()
            .contains("timed out: escalating")),
        "{told:?}"
    );
    assert!(
        actions.iter().all(|a| a.action != Action::Rollback),
        "escalate never rolls back: {actions:?}"
    );
    assert!(calls(&h.dir.path().join("calls.bin")).is_empty());
    h.finish().await;
}

#[tokio::test(start_paused = true)]
async fn an_approval_nobody_answers_releases_the_rollback_under_rollback() {
    let (h, id, expires) = approval_waiting("rollback").await;
    h.run_until(Dur(expires.since(START).millis() - 1_000))
        .await;
    let i = id.clone();
    let actions = h.read(move |j| j.actions_of(&i)).await;
    assert!(
        actions.iter().all(|a| a.action != Action::Rollback),
        "{actions:?}"
    );

    h.run_until(Dur(expires.since(START).millis() + 1_000))
        .await;
    let i = id.clone();
    let (approval, actions, timeline) = h
        .read(move |j| Ok((j.approval(&i)?, j.actions_of(&i)?, j.timeline(&i)?)))
        .await;
    assert_eq!(approval.unwrap().state, "expired");
    let rollbacks: Vec<&ActionRow> = actions
        .iter()
        .filter(|a| a.action == Action::Rollback)
        .collect();
    assert_eq!(rollbacks.len(), 1, "{actions:?}");
    assert_eq!(rollbacks[0].state, ActionState::Pending);
    assert!(
        rollbacks[0].key.ends_with("/timeout"),
        "{}",
        rollbacks[0].key
    );
    assert!(
        timeline
            .iter()
            .any(|t| t.message.contains("approval timed out: rolling back")),
        "{timeline:?}"
    );
    assert!(
        h.seen
            .about("/chat", Some("outcome"), &id)
            .iter()
            .any(|m| m.body["title"]
                .as_str()
                .unwrap()
                .contains("timed out: rolling back")),
        "{:?}",
        h.seen.all()
    );

    // The dispatcher runs it: the executor is called once for the instance.
    let record = h.dir.path().join("calls.bin");
    let done = h.dispatch().await;
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].1.state, ActionState::Done, "{:?}", done[0].1);
    assert_eq!(calls(&record), vec![vec!["i-0m".to_owned()]]);
    h.run_until(Dur(expires.since(START).millis() + 60_000))
        .await;
    assert!(h.dispatch().await.is_empty(), "nothing more to do");
    assert_eq!(calls(&record).len(), 1);
    h.finish().await;
}

/// The all-clear that withdraws a waiting approval says so on its first
/// line: the one line a digest keeps of it, when the rate limit merges it
/// with what waits (as it did on a slow CI run, where the withdrawal was
/// lost from the chat).
#[tokio::test(start_paused = true)]
async fn a_recovery_says_on_its_first_line_that_the_approval_is_withdrawn() {
    let (mut h, id, _) = approval_waiting("escalate").await;
    h.run_until(secs(60)).await;
    let ds = h
        .alert(&json!({
            "version": "4", "status": "resolved", "receiver": "ripcord",
            "alerts": [{
                "status": "resolved",
                "labels": {"alertname": "ErrorsUp", "service": "pay", "instance": "i-0m", "tier": "medium", "severity": "warning"},
                "annotations": {}, "startsAt": START.to_string(),
                "endsAt": START.saturating_add(secs(50)).to_string(), "fingerprint": "fp-m",
            }]
        }))
        .await;
    assert!(ds.iter().any(|d| d.action == Action::Resolve), "{ds:?}");
    h.dispatch().await;
    let said = h.seen.about("/chat", Some("resolved"), &id);
    assert_eq!(said.len(), 1, "{:?}", h.seen.all());
    let first = said[0].body["body"]
        .as_str()
        .unwrap()
        .lines()
        .next()
        .unwrap();
    assert!(
        first.contains("approval request is withdrawn: no rollback will run"),
        "{first}"
    );
    let i = id.clone();
    let approval = h.read(move |j| j.approval(&i)).await.unwrap();
    assert_eq!(approval.state, "withdrawn");
    h.finish().await;
}

/// The dispatcher claims up to 32 actions at once and runs them together;
/// each rollback checks the budget while the others are already `running`.
#[tokio::test(start_paused = true)]
async fn rollbacks_claimed_together_use_the_budget_up_to_its_limit() {
    let mut h = Harness::new(|base, dir| {
        let script = recording_script(dir, &dir.join("calls.bin"));
        format!(
            "{}executors:\n  rollback:\n    command: {{argv: [/bin/sh, '{}', \"{{instance}}\"], timeout: 30s}}\n    budget: {{per_service: 5, overall: 20, window: 10m}}\n",
            channels(base),
            script.display()
        )
    })
    .await;
    let alerts: Vec<Value> = (0..6)
        .map(|k| {
            json!({
                "status": "firing",
                "labels": {"alertname": "Down", "service": "web", "instance": format!("i-{k}"), "tier": "low", "severity": "critical"},
                "startsAt": START.to_string(), "fingerprint": format!("fp-{k}"),
            })
        })
        .collect();
    h.alert(&json!({"version": "4", "alerts": alerts})).await;
    // As the dispatcher: claim what fits its free permits in one go, run
    // each on its own task, record each outcome when it is done.
    let claimed = h
        .journal
        .with(|j| j.claim_actions("inproc-test", &Action::ALL, 32))
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for a in claimed.into_iter().filter(|a| a.action == Action::Rollback) {
        let (responder, journal) = (h.responder.clone(), h.journal.clone());
        tasks.spawn(async move {
            let out = responder.handle_to_end(&a).await;
            let (key, o) = (a.key.clone(), out.clone());
            journal
                .with(move |j| j.set_action(&key, o.state, &o.detail))
                .await
                .unwrap();
            out
        });
    }
    let outcomes: Vec<Outcome> = drive(tasks.join_all()).await;
    assert_eq!(outcomes.len(), 6);
    let ran = calls(&h.dir.path().join("calls.bin")).len();
    let withheld = outcomes
        .iter()
        .filter(|o| o.detail.contains("budget exhausted"))
        .count();
    assert_eq!(
        (ran, withheld),
        (5, 1),
        "5 of 6 rollbacks fit a budget of 5: {outcomes:?}"
    );
    h.finish().await;
}

/// A channel limited to 20 a minute under a steady stream of messages (one
/// a second): providers count what arrives in a sliding minute (DingTalk
/// throttles a robot for 10 minutes after its 21st message in a minute),
/// so no 21 sends may fit in 60 s, and with network jitter in between, the
/// sends need a margin: 21 sends exactly 60.000 s apart arrive within 60 s
/// whenever the first one takes a millisecond longer than the last.
#[tokio::test(start_paused = true)]
async fn a_rate_limited_channel_never_fits_21_sends_in_a_minute() {
    let h = Harness::new(|base, _| {
        format!("channels:\n  chat: {{type: webhook, url: \"{base}/chat\", rate: 20/min}}\n")
    })
    .await;
    for s in 0..130 {
        h.responder
            .deliverer
            .send(
                "chat",
                Delivery::new(
                    Message::note(
                        Kind::Outcome,
                        Tier::Low,
                        Severity::Minor,
                        None,
                        format!("message {s}"),
                        String::new(),
                    ),
                    None,
                    None,
                ),
            )
            .await
            .unwrap();
        // Real time for the send in flight to arrive, then a second.
        tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(15)))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    let at: Vec<Ts> = h.seen.all().iter().map(|s| s.at).collect();
    // Spaced 3.06 s, seen on a clock moved in whole seconds: one every 4 s.
    assert!(at.len() >= 30, "{} sends", at.len());
    let tightest = at.windows(21).map(|w| w[20].since(w[0])).min().unwrap();
    assert!(
        tightest > Dur::from_secs(60),
        "21 sends within {tightest} (sends at {:?})",
        at.iter().map(|t| t.since(START)).collect::<Vec<_>>()
    );
    h.finish().await;
}

/// The harness itself: an HTTP round trip does not move the paused clock,
/// even with a timer pending that tokio would otherwise jump to.
#[tokio::test(start_paused = true)]
async fn the_paused_clock_moves_only_when_told() {
    let h = Harness::new(|base, _| channels(base)).await;
    let far = tokio::spawn(tokio::time::sleep(Duration::from_secs(3600)));
    let before = h.clock.now();
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let resp = client
            .post(format!("{}/probe", h.base))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(h.clock.now(), before);
    let probes = h.seen.all();
    assert_eq!(probes.len(), 5);
    assert!(probes.iter().all(|p| p.path == "/probe" && p.at == before));
    assert!(!far.is_finished());
    far.abort();
    h.finish().await;
}

/// SIGTERM while a channel is down: the worker stops waiting for its next
/// retry at once (a backoff can be a minute; the grace period is 10 s),
/// and the timelines say what was never sent: the message in its backoff
/// and the one queued behind it.
#[tokio::test(start_paused = true)]
async fn a_shutdown_ends_a_retry_backoff_and_the_timeline_says_what_was_not_sent() {
    // Port 9 on loopback: nothing listens, every attempt is refused at once.
    let mut h = Harness::new(|_, _| {
        "channels:\n  chat: {type: webhook, url: \"http://127.0.0.1:9/chat\", rate: 100/s, retries: 8}\n"
            .to_owned()
    })
    .await;
    let labels = |i: &str| json!({"alertname": "InstanceDown", "service": "web", "instance": i, "tier": "low", "severity": "minor"});
    let mut incidents = Vec::new();
    for (fp, i) in [("fp-a", "i-0a"), ("fp-b", "i-0b")] {
        let ds = h.alert(&firing(fp, labels(i))).await;
        incidents.push(incident_of(&ds, Action::Notify));
    }
    for (n, id) in incidents.iter().enumerate() {
        let m = Message::note(
            Kind::Outcome,
            Tier::Low,
            Severity::Minor,
            Some(id),
            format!("message {n}"),
            String::new(),
        );
        h.responder
            .deliverer
            .send("chat", Delivery::new(m, None, None))
            .await
            .unwrap();
    }
    // Let the first attempt fail and its "retry 1 in 2s" land.
    let first = incidents[0].clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let id = first.clone();
        let tl = h.read(move |j| j.timeline(&id)).await;
        if tl.iter().any(|e| e.message.contains("retry 1 in")) {
            break;
        }
        assert!(Instant::now() < deadline, "no retry noted: {tl:?}");
        tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(10)))
            .await
            .unwrap();
    }
    let clock_at_stop = h.clock.now();
    let _ = h.stop.send(true);
    // The paused clock does not move: a worker still sleeping out its
    // backoff would never finish.
    let stopped = Instant::now();
    for w in std::mem::take(&mut h.workers) {
        while !w.is_finished() {
            assert!(
                stopped.elapsed() < Duration::from_secs(10),
                "the channel worker still waits for its retry after the shutdown"
            );
            tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(10)))
                .await
                .unwrap();
        }
        w.await.unwrap();
    }
    assert_eq!(h.clock.now(), clock_at_stop);
    let ids = incidents.clone();
    let tls = h
        .read(move |j| {
            ids.iter()
                .map(|id| j.timeline(id))
                .collect::<Result<Vec<_>, _>>()
        })
        .await;
    let says = |tl: &[ripcord::journal::TimelineEntry], what: &str| {
        tl.iter()
            .any(|e| e.kind == "send" && e.message.contains(what))
    };
    assert!(
        says(&tls[0], "not sent via chat after 1 attempts")
            && says(&tls[0], "ripcord is stopping: no retry"),
        "{:?}",
        tls[0]
    );
    assert!(
        says(
            &tls[1],
            "not sent via chat: ripcord stopped before sending \"message 1\""
        ),
        "{:?}",
        tls[1]
    );
    h.finish().await;
}

/// A second responder over the same journal and config, as after a
/// restart: none of the first one's tasks.
fn restart(r: &Responder) -> Arc<Responder> {
    Arc::new(Responder {
        journal: r.journal.clone(),
        deliverer: r.deliverer.clone(),
        cfg: r.cfg.clone(),
        clock: r.clock.clone(),
        links: r.links.clone(),
        wake: r.wake.clone(),
        metrics: r.metrics.clone(),
        silences: r.silences.clone(),
        findings: None,
    })
}

/// A rollback's verification waits in the journal until it is due: it runs
/// `delay` after the rollback, not before, in whichever responder runs then
/// (here a second one over the same journal, as after a restart: the task
/// that rolled back is gone). Its result lands on the timeline, a failed
/// check pages, and it runs once.
#[tokio::test(start_paused = true)]
async fn a_verification_runs_when_due_even_after_a_restart_and_a_failure_pages() {
    let mut h = Harness::new(|base, dir| {
        let record = dir.join("calls.bin");
        let script = recording_script(dir, &record);
        let check = dir.join("check.sh");
        std::fs::write(
            &check,
            format!(
                "printf '%s\\0' CALL check \"$@\" >> '{}'\necho \"$1 still unhealthy\" >&2\nexit 1\n",
                record.display()
            ),
        )
        .unwrap();
        format!(
            "{}executors:\n  rollback:\n    command: {{argv: [/bin/sh, '{}', \"{{instance}}\"], timeout: 30s}}\n    verify:\n      delay: 2m\n      command: {{argv: [/bin/sh, '{}', \"{{instance}}\"], timeout: 10s}}\n",
            channels(base),
            script.display(),
            check.display()
        )
    })
    .await;
    let labels = json!({"alertname": "Down", "service": "web", "instance": "i-0a", "tier": "low", "severity": "critical"});
    let id = incident_of(&h.alert(&firing("fp-v", labels)).await, Action::Rollback);
    let done = h.dispatch().await;
    let (_, rollback) = done
        .iter()
        .find(|(a, _)| a.action == Action::Rollback)
        .unwrap();
    assert_eq!(rollback.state, ActionState::Done, "{rollback:?}");
    assert!(
        rollback.detail.contains("verification due at"),
        "{rollback:?}"
    );

    let restarted = restart(&h.responder);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let verifying = tokio::spawn(restarted.verification_loop(stopped));
    let record = h.dir.path().join("calls.bin");
    let checks = || {
        calls(&record)
            .into_iter()
            .filter(|c| c.first().map(String::as_str) == Some("check"))
            .collect::<Vec<_>>()
    };

    h.run_until(secs(118)).await;
    assert!(checks().is_empty(), "checked before it was due");
    h.run_until(secs(122)).await;
    let verified = |tl: &[ripcord::journal::TimelineEntry]| {
        tl.iter()
            .any(|e| e.kind == "verify" && e.message.contains("FAILED"))
    };
    // Done means: result on the timeline, paged, and no longer pending
    // (in that order: a crash before the last step runs the check again).
    let db = rusqlite::Connection::open(h.dir.path().join("journal.db")).unwrap();
    let pending = || -> i64 {
        db.query_row("SELECT count(*) FROM verifications", [], |r| r.get(0))
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let (timeline, escalation) = loop {
        let i = id.clone();
        let (tl, esc) = h
            .read(move |j| Ok((j.timeline(&i)?, j.escalation(&i)?)))
            .await;
        if verified(&tl) && esc.is_some() && pending() == 0 {
            break (tl, esc);
        }
        assert!(
            Instant::now() < deadline,
            "verification not finished: pending {}, escalation {esc:?}, timeline {tl:?}",
            pending()
        );
        a_moment().await;
    };
    assert_eq!(checks(), vec![vec!["check".to_owned(), "i-0a".to_owned()]]);
    assert!(
        timeline
            .iter()
            .any(|e| e.message.contains("i-0a still unhealthy")),
        "the check's output is on the timeline: {timeline:?}"
    );
    assert!(escalation.is_some(), "a failed verification pages");

    // Minutes later it has not run again.
    h.run_until(secs(300)).await;
    assert_eq!(checks().len(), 1);
    assert_eq!(pending(), 0);
    stop.send(true).unwrap();
    drive(verifying).await.unwrap();
    h.finish().await;
}

/// The recording rollback script and two verification stages of a check
/// script that records `stage instance`: `system` passes, `services` fails
/// ("port 443 closed", 5 retries a minute apart) until the file `up` exists.
fn two_stage_verify(base: &str, dir: &Path) -> String {
    let record = dir.join("calls.bin");
    let script = recording_script(dir, &record);
    let check = dir.join("check.sh");
    std::fs::write(
        &check,
        format!(
            "printf '%s\\0' CALL \"$1\" \"$2\" >> '{rec}'\n\
             if [ \"$1\" = services ] && [ ! -e '{dir}/up' ]; then echo 'port 443 closed' >&2; exit 1; fi\n\
             echo \"$1 back\"\n",
            rec = record.display(),
            dir = dir.display()
        ),
    )
    .unwrap();
    format!(
        "{}executors:\n  rollback:\n    command: {{argv: [/bin/sh, '{script}', \"{{instance}}\"], timeout: 30s}}\n    verify:\n      delay: 1m\n      stages:\n        - {{name: system, command: {{argv: [/bin/sh, '{check}', system, \"{{instance}}\"], timeout: 10s}}}}\n        - {{name: services, command: {{argv: [/bin/sh, '{check}', services, \"{{instance}}\"], timeout: 10s}}, retries: 5, retry_delay: 1m}}\n",
        channels(base),
        script = script.display(),
        check = check.display()
    )
}

/// Staged verification across a crash: the responder that ran `system`
/// (passed) dies while `services` waits to retry; the one that takes the
/// verification over after its lease resumes at `services` and never runs
/// `system` again.
#[tokio::test(start_paused = true)]
async fn a_verification_resumes_after_a_crash_at_the_stage_after_the_last_that_passed() {
    let mut h = Harness::new(two_stage_verify).await;
    let labels = json!({"alertname": "Down", "service": "web", "instance": "i-0c", "tier": "low", "severity": "critical"});
    let id = incident_of(&h.alert(&firing("fp-c", labels)).await, Action::Rollback);
    h.dispatch().await;
    let record = h.dir.path().join("calls.bin");
    let runs = |stage: &str| {
        calls(&record)
            .iter()
            .filter(|c| c.first().map(String::as_str) == Some(stage))
            .count()
    };
    // Dies while `services` waits for its retry.
    h.crash_while_services_waits_to_retry(1).await;
    assert_eq!(runs("system"), 1);
    std::fs::write(h.dir.path().join("up"), "").unwrap();

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let second = tokio::spawn(restart(&h.responder).verification_loop(stopped));
    let passed = |tl: &[ripcord::journal::TimelineEntry]| {
        tl.iter().any(|e| {
            e.kind == "verify" && e.message.starts_with("verification after rollback passed")
        })
    };
    let timeline = h
        .run_until_it_passes(
            || {
                let i = id.clone();
                h.read(move |j| j.timeline(&i))
            },
            |tl| passed(tl),
        )
        .await;
    assert_eq!(
        runs("system"),
        1,
        "system passed before the crash: never again"
    );
    let services_ok = timeline
        .iter()
        .find(|e| e.message.starts_with("verification stage services ok"))
        .unwrap();
    assert!(
        services_ok.message.contains("services back"),
        "{timeline:?}"
    );
    assert!(
        timeline
            .iter()
            .filter(|e| e.message.starts_with("verification stage system ok"))
            .count()
            == 1,
        "{timeline:?}"
    );
    stop.send(true).unwrap();
    drive(second).await.unwrap();
    h.finish().await;
}

/// Shutdown begins (`drain`): a message in a retry backoff gives up at
/// once and its waiting sender hears the outcome, with the clock standing
/// still, so an action waiting on a dead channel finishes within the grace
/// period. A message sent while draining gets one attempt, no retry.
#[tokio::test(start_paused = true)]
async fn draining_ends_retry_backoffs_and_answers_the_waiting_action() {
    let h = Harness::new(|_, _| {
        "channels:\n  chat: {type: webhook, url: \"http://127.0.0.1:9/chat\", rate: 100/s, retries: 8}\n"
            .to_owned()
    })
    .await;
    let send = |title: &str| {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let m = Message::note(
            Kind::Outcome,
            Tier::Low,
            Severity::Minor,
            None,
            title.to_owned(),
            String::new(),
        );
        (Delivery::new(m, None, Some(tx)), rx)
    };
    let (d, mut first) = send("first");
    h.responder.deliverer.send("chat", d).await.unwrap();
    // Real time for the first attempt to fail; the clock stands still, so
    // the worker then sits in its 2 s backoff.
    let wait = |rx: &mut tokio::sync::oneshot::Receiver<_>| {
        let started = Instant::now();
        loop {
            match rx.try_recv() {
                Ok(d) => return Some(d),
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    panic!("the sender was dropped without an outcome")
                }
                Err(_) if started.elapsed() > Duration::from_secs(3) => return None,
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    };
    let pending = tokio::task::spawn_blocking(move || {
        let r = wait(&mut first);
        (r, first)
    })
    .await
    .unwrap();
    assert!(
        pending.0.is_none(),
        "answered before draining: {:?}",
        pending.0
    );
    let mut first = pending.1;
    let at = h.clock.now();
    h.responder.deliverer.drain();
    let outcome = tokio::task::spawn_blocking(move || wait(&mut first))
        .await
        .unwrap()
        .expect("no outcome within 3 s of draining");
    assert!(!outcome.sent(), "{outcome:?}");
    assert_eq!(h.clock.now(), at, "the clock moved");

    let (d, mut second) = send("second");
    h.responder.deliverer.send("chat", d).await.unwrap();
    // Past the rate limit's spacing, short of a 2 s retry backoff.
    tokio::time::advance(Duration::from_secs(1)).await;
    let outcome = tokio::task::spawn_blocking(move || wait(&mut second))
        .await
        .unwrap()
        .expect("a message sent while draining got no outcome within 3 s");
    assert!(!outcome.sent(), "{outcome:?}");
    h.finish().await;
}

/// A silence of scope `all` made while a chain pages holds back the steps
/// that fall due under it (on the timeline), and ends on time on the
/// paused clock: the step due after it pages again.
#[tokio::test(start_paused = true)]
async fn a_silence_made_mid_chain_holds_back_the_steps_due_under_it_until_it_expires() {
    let mut h =
        Harness::new(|base, _| format!("policy:\n  high: [page]\n{}", channels(base))).await;
    let seen = h.seen.clone();
    let labels = json!({"alertname": "InstanceDown", "service": "web", "instance": "i-0s", "tier": "high", "severity": "critical"});
    let id = incident_of(&h.alert(&firing("fp-s", labels)).await, Action::Page);
    h.dispatch().await;
    h.tick().await;
    assert_eq!(
        seen.about("/chat", Some("page"), &id).len(),
        1,
        "chat at once"
    );

    // At 2 minutes: silenced until minute 8 (the SMS at 5 falls under it,
    // the call at 10 does not).
    h.run_until(secs(120)).await;
    let now = h.clock.now();
    let post: ripcord::silence::PostableSilence = serde_json::from_value(json!({
        "matchers": [{"name": "service", "value": "web", "isRegex": false}],
        "startsAt": now.to_string(),
        "endsAt": now.saturating_add(secs(360)).to_string(),
        "createdBy": "carol", "comment": "failing over the database by hand",
        "scope": "all",
    }))
    .unwrap();
    let guard = ripcord::silence::Guard::default();
    let silence = h
        .read(move |j| Ok(ripcord::silence::create(j, post, &guard, now)))
        .await
        .unwrap();

    h.run_until(secs(302)).await;
    assert!(
        seen.about("/sms", None, &id).is_empty(),
        "held back: {:?}",
        seen.all()
    );
    let i = id.clone();
    let timeline = h.read(move |j| j.timeline(&i)).await;
    assert!(
        timeline.iter().any(|t| t
            .message
            .starts_with("page step 2 of 3 not sent: held back by silence")
            && t.message.contains(&silence.id)),
        "{timeline:?}"
    );
    // Minute 8: over, with nothing written; the call at 10 goes out.
    h.run_until(secs(602)).await;
    assert_eq!(seen.about("/voice", None, &id).len(), 1, "{:?}", seen.all());
    let later = h.clock.now();
    let active = h.read(move |j| j.silences(later, false)).await;
    assert!(active.is_empty(), "expired on time: {active:?}");
    h.finish().await;
}

/// The sample check across a crash: the pick is journaled once (the batch
/// done's message handled again, as after a crash mid-message, picks
/// nothing new); the responder that ran `system` on the picked instances
/// dies while `services` waits to retry; the one that takes over after the
/// lease runs only `services`, and the rows end `passed`.
#[tokio::test(start_paused = true)]
async fn a_sample_check_is_picked_once_and_resumes_after_a_crash_without_rerunning_a_stage() {
    let mut h = Harness::new(two_stage_verify).await;
    let instances: Vec<String> = (1..=20).map(|i| format!("i-{i:02}")).collect();
    let event = json!({"kind": "progress", "ts": START.millis(), "stage": "batch_done",
        "instances": instances, "labels": {"service": "shop", "batch": "3", "tier": "medium"}});
    h.alert(&event).await;
    let handled = h.dispatch().await;
    let sample = || async {
        h.journal
            .with(|j| j.sample_checks("shop", "3"))
            .await
            .unwrap()
    };
    let picked: Vec<String> = sample().await.into_iter().map(|r| r.instance).collect();
    assert_eq!(picked.len(), 2, "10% of 20");
    // The message handled again: the same two.
    for (row, _) in &handled {
        drop(h.responder.handle(row).await);
    }
    let again: Vec<String> = sample().await.into_iter().map(|r| r.instance).collect();
    assert_eq!(again, picked, "picked once");

    let record = h.dir.path().join("calls.bin");
    let runs = |stage: &str| {
        calls(&record)
            .iter()
            .filter(|c| c.first().map(String::as_str) == Some(stage))
            .map(|c| c[1].clone())
            .collect::<Vec<_>>()
    };
    // Dies while `services` waits for its retry.
    h.crash_while_services_waits_to_retry(2).await;
    let mut systems = runs("system");
    systems.sort();
    assert_eq!(systems, picked, "system ran once on each picked instance");
    std::fs::write(h.dir.path().join("up"), "").unwrap();

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let second = tokio::spawn(restart(&h.responder).verification_loop(stopped));
    let rows = h
        .run_until_it_passes(sample, |rows| {
            rows.iter()
                .all(|r| r.state == ripcord::journal::SampleState::Passed)
        })
        .await;
    assert_eq!(
        runs("system").len(),
        2,
        "system passed before the crash: never again"
    );
    assert!(
        rows.iter()
            .all(|r| r.detail.starts_with("system ok") && r.detail.contains("services ok")),
        "{rows:?}"
    );
    stop.send(true).unwrap();
    drive(second).await.unwrap();
    h.finish().await;
}
