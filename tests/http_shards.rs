//! HTTP input spread over two shards by service, in-process, on a virtual
//! clock: each shard decides its own services' events, one request naming
//! both is answered once both have journaled, and a restart gives each
//! shard back only its own services' incidents (an incident restored to
//! the wrong shard would be resolved there, by a timer, while its service
//! is still failing).

mod support;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ripcord::engine::EngineConfig;
use ripcord::health::Health;
use ripcord::journal::sqlite::SqliteJournal;
use ripcord::output::{Format, Output};
use ripcord::pipeline::driver::{Driver, Shard, Shared};
use ripcord::pipeline::input::{Submit, submissions};
use ripcord::pipeline::spread::{Spread, shard_of};
use ripcord::pipeline::{Accepted, Pipeline, Sizes, Submission, warm_http};
use ripcord::telemetry::Metrics;
use ripcord::time::{Clock, Ts};
use support::{Captured, DOWN_30S_RULES, wait_until};
use tokio::sync::Notify;

/// The virtual clock the shards run on.
#[derive(Default)]
struct TestClock(AtomicI64);

impl Clock for TestClock {
    fn now(&self) -> Ts {
        Ts(self.0.load(Ordering::SeqCst))
    }
}

/// `action` decisions for `service`, as printed.
fn count(out: &Captured, action: &str, service: &str) -> usize {
    out.decisions()
        .iter()
        .filter(|d| d["action"] == action && d["labels"]["service"] == service)
        .count()
}

/// Two shards taking HTTP, as `ripcord run` has them without Kafka.
struct Running {
    shards: Vec<Shard>,
    submit: Submit,
    sizes: Arc<Mutex<Vec<Sizes>>>,
}

fn start(dir: &std::path::Path, clock: &Arc<TestClock>, out: &Captured) -> Running {
    let files = ripcord::rule::load::load_dir(&dir.join("rules")).expect("rules load");
    let rules = Arc::new(ripcord::rule::load::rule_set(&files));
    let db = dir.join("state.db");
    let metrics = Arc::new(Metrics::new());
    let output = Output::spawn(Box::new(out.clone()), Format::Json, metrics.clone());
    let clock: Arc<dyn Clock> = clock.clone();
    let mut pipelines: Vec<Pipeline> = (0..2)
        .map(|i| {
            let mut p = Pipeline::new(
                rules.clone(),
                EngineConfig::default(),
                Box::new(SqliteJournal::open(&db, false).unwrap()),
                clock.clone(),
                metrics.clone(),
                output.clone(),
                Arc::new(Notify::new()),
            );
            p.set_spread(Spread { index: i, of: 2 });
            p
        })
        .collect();
    warm_http(&mut pipelines, &SqliteJournal::open(&db, false).unwrap()).expect("warm-up");
    let health = Arc::new(Health::new(false, Duration::from_secs(60)));
    let shared = Shared::new(
        metrics,
        health,
        Arc::new(|why: String| panic!("a shard failed: {why}")),
    );
    let sizes = shared.sizes.clone();
    let (submit, inputs) = submissions(16, 2);
    let shards = pipelines
        .into_iter()
        .zip(inputs)
        .enumerate()
        .map(|(i, (p, http))| {
            Driver::new(i, p, Some(http), shared.clone())
                .spawn()
                .unwrap()
        })
        .collect();
    Running {
        shards,
        submit,
        sizes,
    }
}

impl Running {
    /// Posts `body` (a JSON array) and waits for its answer.
    fn post(&self, body: String) -> Accepted {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit
            .try_send(Submission {
                body: body.into(),
                form: ripcord::decode::BodyForm::Array,
                ack: tx,
            })
            .unwrap_or_else(|_| panic!("the queue took the request"));
        rx.blocking_recv().expect("answered").expect("accepted")
    }

    fn stop(mut self) {
        for s in &mut self.shards {
            s.stop().unwrap();
        }
    }
}

fn down(service: &str, at: Ts) -> String {
    format!(
        r#"{{"metric":"up","value":0,"ts":{},"labels":{{"service":"{service}","instance":"i-1","tier":"low"}}}}"#,
        at.0
    )
}

/// Waits until `cond` holds (the drivers run on their own threads).
#[track_caller]
fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    assert!(
        wait_until(Duration::from_secs(30), cond),
        "timed out waiting for {what}"
    );
}

/// A service name on shard `shard` of 2, starting with `prefix`.
fn service_on(prefix: &str, shard: usize) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|s| shard_of(Some(s), 2) == shard)
        .unwrap()
}

#[test]
fn each_shard_decides_its_services_and_gets_back_only_their_incidents() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/down.yaml"), DOWN_30S_RULES).unwrap();
    let (a, b) = (service_on("svc-", 0), service_on("svc-", 1));
    let t0 = Ts(jiff::Timestamp::now().as_millisecond() / 1000 * 1000);
    let at = |secs: i64| Ts(t0.0 + secs * 1000);
    let clock = Arc::new(TestClock::default());
    let out = Captured::default();

    let r = start(dir.path(), &clock, &out);
    // One request names both services: it is answered once both shards
    // journaled their share, with the sum of what they took.
    for k in 0..4 {
        clock.0.store(at(k * 10).0, Ordering::SeqCst);
        let got = r.post(format!(
            "[{},{}]",
            down(&a, at(k * 10)),
            down(&b, at(k * 10))
        ));
        assert_eq!(got.events, 2, "both shards' events are counted");
    }
    wait_for("a rollback of each service", || {
        count(&out, "rollback", &a) == 1 && count(&out, "rollback", &b) == 1
    });
    // Each shard holds only its own service's window.
    wait_for("each shard's size report", || {
        let s = r.sizes.lock().unwrap();
        s.len() == 2 && s[0].groups > 0 && s[1].groups > 0
    });
    let groups: Vec<usize> = r.sizes.lock().unwrap().iter().map(|s| s.groups).collect();
    assert_eq!(groups, [1, 1], "a service's window lives on one shard only");
    r.stop();

    // Restarted: `a` is still failing, `b` went quiet. `b`'s shard
    // resolves it by its timer; `a`'s incident must stay open, which it
    // does only if no shard but `a`'s got it back.
    let r = start(dir.path(), &clock, &out);
    for k in 4..30 {
        clock.0.store(at(k * 10).0, Ordering::SeqCst);
        assert_eq!(r.post(format!("[{}]", down(&a, at(k * 10)))).events, 1);
    }
    wait_for("the quiet service resolved by its shard's timer", || {
        count(&out, "resolve", &b) == 1
    });
    // A later decision of `b`'s shard: what that shard printed before it
    // (a wrongly restored incident's resolve, in the same tick as `b`'s)
    // is out by then.
    let c = service_on("sentinel-", 1);
    for k in 30..33 {
        clock.0.store(at(k * 10).0, Ordering::SeqCst);
        r.post(format!(
            "[{},{}]",
            down(&a, at(k * 10)),
            down(&c, at(k * 10))
        ));
    }
    wait_for("the sentinel service's rollback", || {
        count(&out, "rollback", &c) == 1
    });
    assert_eq!(
        count(&out, "resolve", &a),
        0,
        "`a` is still failing: its incident must not be resolved"
    );
    assert_eq!(
        count(&out, "rollback", &a),
        1,
        "the restart did not roll `a` back again"
    );
    r.stop();
}
