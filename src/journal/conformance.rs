//! One conformance suite for every journal backend: each test runs against
//! SQLite (a temporary file) and PostgreSQL (a schema of its own in the
//! database `RIPCORD_TEST_PG_URL` names, which `scripts/test` starts).
//! A journal of either kind must behave the same to the responder.

use std::path::Path;
use std::sync::{Arc, Barrier};

use super::*;
use crate::config::{Errors, Secret};
use crate::decision::{Action, Severity, Tier};
use crate::engine::{Engine, EngineConfig};
use crate::rule::load::{parse_file, rule_set};
use crate::time::{Clock, SystemClock};
use silences::{MatcherSpec, Scope, SilenceState, UntilBatch};

/// A store the tests open several connections to (as several processes or
/// replicas would).
trait Store {
    fn connect(&self) -> Box<dyn Journal>;
}

struct Sqlite(tempfile::TempDir);

impl Sqlite {
    fn new() -> Sqlite {
        Sqlite(tempfile::tempdir().unwrap())
    }
}

impl Store for Sqlite {
    fn connect(&self) -> Box<dyn Journal> {
        Box::new(SqliteJournal::open(&self.0.path().join("j.db"), false).unwrap())
    }
}

/// A schema of its own in the test database, dropped at the end.
struct Postgres {
    base: String,
    schema: String,
}

const PG_ENV: &str = "RIPCORD_TEST_PG_URL";

fn pg_exec(url: &str, sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {PG_ENV}: {e}"));
        let task = tokio::spawn(conn);
        client.batch_execute(sql).await.unwrap();
        drop(client);
        let _ = task.await;
    });
}

impl Postgres {
    fn new() -> Postgres {
        let base = std::env::var(PG_ENV).unwrap_or_else(|_| {
            panic!(
                "{PG_ENV} is not set: the PostgreSQL conformance tests need a server. \
                 `scripts/test` starts a private one (Debian's postgresql, which \
                 `scripts/setup` installs) and sets it"
            )
        });
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let schema = format!(
            "t{}_{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        pg_exec(&base, &format!("CREATE SCHEMA {schema}"));
        Postgres { base, schema }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        pg_exec(&self.base, &format!("DROP SCHEMA {} CASCADE", self.schema));
    }
}

impl Store for Postgres {
    fn connect(&self) -> Box<dyn Journal> {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        let url = format!(
            "{}{sep}options=-c%20search_path%3D{}",
            self.base, self.schema
        );
        Box::new(
            PgJournal::connect(
                &Secret::new(url),
                test_ca().as_deref(),
                Arc::new(SystemClock),
            )
            .unwrap(),
        )
    }
}

/// The test cluster's CA (`scripts/with-postgres` turns TLS on).
fn test_ca() -> Option<std::path::PathBuf> {
    std::env::var_os("RIPCORD_TEST_PG_CA").map(Into::into)
}

/// The server's certificate is checked: without the CA that signed it the
/// journal refuses to connect, saying why; `sslmode=disable` is the way to
/// go without TLS, and with the CA the connection is encrypted.
#[test]
fn postgres_tls_checks_the_servers_certificate() {
    let base = std::env::var(PG_ENV).expect("RIPCORD_TEST_PG_URL (scripts/with-postgres)");
    let ca = test_ca().expect("RIPCORD_TEST_PG_CA (scripts/with-postgres)");
    let sep = if base.contains('?') { '&' } else { '?' };
    let clock = || -> Arc<dyn crate::time::Clock> { Arc::new(SystemClock) };
    let required = Secret::new(format!("{base}{sep}sslmode=require"));
    let err = PgJournal::connect(&required, None, clock())
        .unwrap_err()
        .to_string();
    assert!(err.contains("certificate"), "{err}");
    assert!(!err.contains("postgres://"), "the URL is a secret: {err}");
    PgJournal::connect(&required, Some(&ca), clock()).expect("TLS with the test CA");
    let plain = Secret::new(format!("{base}{sep}sslmode=disable"));
    PgJournal::connect(&plain, None, clock()).expect("sslmode=disable");
    let missing = std::path::Path::new("/nonexistent/ca.pem");
    let err = PgJournal::connect(&required, Some(missing), clock())
        .unwrap_err()
        .to_string();
    assert!(err.contains("journal.ca_file /nonexistent/ca.pem"), "{err}");
}

/// Every test below, once per backend.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(&super::Sqlite::new()) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name(&super::Postgres::new()) } )*
        }
    };
}

conformance!(
    a_decision_is_recorded_once,
    open_incidents_come_back_as_the_engine_had_them,
    resolve_closes_the_incident,
    actions_are_claimed_once_and_interrupted_ones_surface,
    inbox_keeps_recent_bodies,
    reopening_keeps_everything,
    approvals_release_one_rollback_and_expire_by_policy,
    approval_timeouts_follow_the_tier_policy,
    withdrawn_when_the_incident_recovers,
    escalations_are_claimed_stepped_hurried_and_stopped,
    one_lease_holder_at_a_time,
    the_rollback_budget_admits_up_to_its_limits_across_processes,
    verifications_are_claimed_when_due_leased_and_finished_once,
    a_passed_verification_stage_is_never_run_again_by_any_process,
    a_batch_is_sample_checked_once_and_each_instance_ends_once,
    a_partition_claimed_by_another_process_commits_nothing_for_this_one,
    a_reaped_claim_can_never_admit_its_rollback,
    severity_only_rises,
    a_human_verdict_beats_a_late_state,
    two_processes_racing_for_the_last_unit_of_budget_admit_it_once,
    a_replica_follows_the_bodies_the_others_accepted,
    gate_tallies_add_up_across_commits_and_processes,
    a_fenced_commit_counts_no_samples_for_the_gate,
    promotions_are_kept_in_order_per_service,
    connections_writing_at_once_wait_for_each_other_instead_of_failing,
    silences_are_kept_expire_on_time_and_end_with_their_batch,
    a_hold_skips_a_running_action_once_and_is_audited,
    the_evidence_and_progress_history_for_the_review_are_kept,
    an_alerts_chart_is_kept_with_its_evidence_and_replaced_by_a_later_fetch,
    pending_actions_are_counted_by_kind_until_claimed,
    a_batch_incident_keeps_its_members_and_rolls_back_each_instance_approved,
    people_read_open_incidents_by_urgency_and_service_in_bounded_pages,
);

const RULES: &str = r#"
rules:
  - name: r
    match: {metric: m}
    window: 1m
    condition: "> 0.5"
    escalate: {severe: "> 0.9"}
    clear_for: 0s
"#;

/// Decisions from a breach (open, worsen) and its resolve, through the real engine.
fn decisions() -> (Vec<Decision>, Engine) {
    through_the_engine([(0, 0.6), (5, 2.0), (10, 2.0)].into_iter().map(|(t, v)| {
        format!(
            r#"{{"metric":"m","value":{v},"ts":{},"labels":{{"service":"s","instance":"i-1"}}}}"#,
            1_795_255_200_000i64 + t * 1000
        )
    }))
}

/// The decisions `RULES` make of these event lines, and the engine.
fn through_the_engine(lines: impl IntoIterator<Item = String>) -> (Vec<Decision>, Engine) {
    let mut errs = Errors::default();
    let file = parse_file(Path::new("t.yaml"), RULES, &mut errs).unwrap();
    let mut engine = Engine::new(
        std::sync::Arc::new(rule_set(&[file])),
        EngineConfig::default(),
    );
    let mut out = Vec::new();
    for line in lines {
        let mut ev = Vec::new();
        crate::decode::decode(line.as_bytes(), &mut ev).unwrap();
        engine.process(&ev[0], &mut out);
    }
    (out, engine)
}

fn a_decision_is_recorded_once(store: &dyn Store) {
    let mut j = store.connect();
    let (ds, _) = decisions();
    let batch = Batch {
        decisions: ds.iter().map(|d| ("t/0", d)).collect(),
        positions: vec![("t/0", 42)],
        ..Batch::default()
    };
    assert_eq!(j.commit(&batch).unwrap(), vec![true; ds.len()]);
    assert_eq!(
        j.commit(&batch).unwrap(),
        vec![false; ds.len()],
        "same keys: not new"
    );
    assert_eq!(
        j.claim_actions("me", &Action::ALL, 100).unwrap().len(),
        ds.len(),
        "one action per decision, not two"
    );
    assert_eq!(j.position("t/0").unwrap(), Some(42));
    assert_eq!(j.position("t/1").unwrap(), None);
}

/// The journal's row of an incident the engine holds: what must come back.
fn as_journaled(i: &crate::engine::Incident) -> OpenIncident {
    OpenIncident {
        id: i.id.clone(),
        rule: i.rule.clone(),
        labels: i.labels.clone(),
        tier: i.tier,
        opened: i.opened,
        severity: i.severity,
        fired: i.fired,
        seq: i.seq,
        fingerprint: i.fingerprint.clone(),
        batch: i.batch.clone(),
    }
}

fn open_incidents_come_back_as_the_engine_had_them(store: &dyn Store) {
    let mut j = store.connect();
    let (ds, engine) = decisions();
    j.commit(&Batch {
        decisions: ds.iter().map(|d| ("t/0", d)).collect(),
        ..Batch::default()
    })
    .unwrap();
    let from_engine = engine.open_incidents();
    assert_eq!(from_engine.len(), 1);
    let from_engine: Vec<OpenIncident> = from_engine.iter().map(as_journaled).collect();
    assert_eq!(j.open_incidents("t/0").unwrap(), from_engine);
    assert!(j.open_incidents("t/1").unwrap().is_empty());
    assert_eq!(from_engine[0].severity, Severity::Severe);
}

fn resolve_closes_the_incident(store: &dyn Store) {
    let mut j = store.connect();
    let (mut ds, _) = decisions();
    let mut engine2 = decisions().1;
    let line = r#"{"metric":"m","value":0.1,"ts":1795255290000,"labels":{"service":"s","instance":"i-1"}}"#;
    let mut ev = Vec::new();
    crate::decode::decode(line.as_bytes(), &mut ev).unwrap();
    engine2.process(&ev[0], &mut ds);
    assert_eq!(ds.last().unwrap().action, Action::Resolve);
    j.commit(&Batch {
        decisions: ds.iter().map(|d| ("t/0", d)).collect(),
        ..Batch::default()
    })
    .unwrap();
    assert!(j.open_incidents("t/0").unwrap().is_empty());
    let resolved = j.resolved_since("t/0", Ts(0)).unwrap();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].1, ds.last().unwrap().at);
    assert!(
        j.resolved_since("t/0", Ts(1_795_255_300_000))
            .unwrap()
            .is_empty()
    );
    let rows = j.incidents(Some("resolved")).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].labels["instance"], "i-1");
    let tl = j.timeline(&rows[0].id).unwrap();
    assert_eq!(tl.len(), ds.len());
    assert!(tl.last().unwrap().message.starts_with("resolve:"));
}

fn actions_are_claimed_once_and_interrupted_ones_surface(store: &dyn Store) {
    let mut a = store.connect();
    let mut b = store.connect(); // a second process on the same file
    let (ds, _) = decisions();
    a.commit(&Batch {
        decisions: ds.iter().map(|d| ("t/0", d)).collect(),
        ..Batch::default()
    })
    .unwrap();
    let first = a.claim_actions("a", &Action::ALL, 1).unwrap();
    let rest = b.claim_actions("b", &Action::ALL, 100).unwrap();
    assert_eq!(first.len() + rest.len(), ds.len());
    assert!(a.claim_actions("a", &Action::ALL, 100).unwrap().is_empty());
    assert!(
        first
            .iter()
            .all(|r| r.state == ActionState::Running && r.attempts == 1)
    );
    assert_eq!(first[0].decision, ds[0]);

    a.set_action(&first[0].key, ActionState::Done, "exit 0")
        .unwrap();
    // A rollback derived from the approval request, claimed by `b` too.
    let rollback = a
        .derive_action(
            &first[0].key,
            Action::Rollback,
            "approved",
            "approved by test",
            Ts(0),
        )
        .unwrap()
        .unwrap();
    // And the traffic switch a severe high-risk approval adds beside it.
    let switch = a
        .derive_action(
            &rollback,
            Action::SwitchTraffic,
            "switch_traffic",
            "traffic to the standby pool",
            Ts(0),
        )
        .unwrap()
        .unwrap();
    let claimed = b.claim_actions("b", &Action::ALL, 10).unwrap();
    assert_eq!(claimed.len(), 2);
    assert_eq!(claimed[0].key, rollback);
    assert_eq!(claimed[0].action, Action::Rollback);
    assert_eq!(claimed[1].action, Action::SwitchTraffic);
    // Both are alive: nothing to reap.
    a.heartbeat("a").unwrap();
    b.heartbeat("b").unwrap();
    assert!(a.reap(crate::time::Dur::from_secs(30)).unwrap().is_empty());
    // `b` dies with its actions running (its heartbeat goes stale); a
    // living process finds them: the rollback's outcome is unknown (never
    // re-run); the messages go back to pending and run again.
    std::thread::sleep(std::time::Duration::from_millis(30));
    a.heartbeat("a").unwrap();
    let lost = a.reap(crate::time::Dur(20)).unwrap();
    let mut lost_keys: Vec<&str> = lost.iter().map(|r| r.key.as_str()).collect();
    lost_keys.sort();
    let mut expected = vec![rollback.as_str(), switch.as_str()];
    expected.sort();
    assert_eq!(lost_keys, expected, "neither is ever run again");
    assert!(lost.iter().all(|r| r.state == ActionState::Unknown));
    assert!(a.reap(crate::time::Dur(20)).unwrap().is_empty());
    let again = a.claim_actions("a", &Action::ALL, 100).unwrap();
    assert_eq!(again.len(), rest.len(), "messages are retried");
    assert!(again.iter().all(|r| r.attempts == 2));
    let rows = a.incidents(Some("open")).unwrap();
    assert!(
        rows[0].attention.iter().any(|s| s.ends_with(":unknown")),
        "{:?}",
        rows[0].attention
    );
}

fn inbox_keeps_recent_bodies(store: &dyn Store) {
    let mut j = store.connect();
    j.commit(&Batch {
        inbox: vec![b"one", b"two"],
        ..Batch::default()
    })
    .unwrap();
    assert_eq!(
        j.inbox_since(Ts(0)).unwrap(),
        vec![b"one".to_vec(), b"two".to_vec()]
    );
    let future = Ts(SystemClock.now().millis() + 60_000);
    assert_eq!(j.prune_inbox(future).unwrap(), 2);
    assert!(j.inbox_since(Ts(0)).unwrap().is_empty());
}

fn reopening_keeps_everything(store: &dyn Store) {
    let (ds, _) = decisions();
    {
        let mut j = store.connect();
        j.commit(&Batch {
            decisions: ds.iter().map(|d| ("t/0", d)).collect(),
            positions: vec![("t/0", 7)],
            ..Batch::default()
        })
        .unwrap();
    }
    let j = store.connect();
    assert_eq!(j.position("t/0").unwrap(), Some(7));
    assert_eq!(j.open_incidents("t/0").unwrap().len(), 1);
}

fn approvals_release_one_rollback_and_expire_by_policy(store: &dyn Store) {
    let mut j = store.connect();
    let (ds, _) = decisions();
    j.commit(&Batch {
        decisions: ds.iter().map(|d| ("t/0", d)).collect(),
        ..Batch::default()
    })
    .unwrap();
    let req = ds
        .iter()
        .find(|d| d.action == Action::RequestApproval)
        .unwrap();
    let inc = req.incident.as_ref().unwrap().as_str();
    assert_eq!(
        j.open_approval(inc, &req.key, Tier::Medium, Ts(1000), Ts(2000))
            .unwrap(),
        ApprovalOpened::Opened
    );
    assert_eq!(
        j.open_approval(inc, &req.key, Tier::Medium, Ts(1000), Ts(2000))
            .unwrap(),
        ApprovalOpened::AlreadyOpen
    );
    let ApprovalDecided::Approved { rollback_keys, .. } = j
        .decide_approval(
            inc,
            Verdict::Approve,
            "alice",
            "one host only",
            Via::Link,
            Ts(1500),
            None,
        )
        .unwrap()
    else {
        panic!("not approved")
    };
    let [key] = &rollback_keys[..] else {
        panic!("one rollback: {rollback_keys:?}")
    };
    let key = key.clone();
    let row = j.approval(inc).unwrap().unwrap();
    assert_eq!(
        (row.decided_by.as_deref(), row.decided_via),
        (Some("alice"), Some(Via::Link)),
        "who, and how the verdict came"
    );
    assert_eq!(
        j.decide_approval(inc, Verdict::Reject, "bob", "", Via::Api, Ts(1600), None)
            .unwrap(),
        ApprovalDecided::NotWaiting("approved".into())
    );
    let pending = j.claim_actions("me", &Action::ALL, 100).unwrap();
    let rb = pending
        .iter()
        .find(|a| a.key == key)
        .expect("the approved rollback is pending");
    assert_eq!(rb.action, Action::Rollback);
    assert_eq!(
        rb.decision.message,
        "rollback approved by alice: one host only"
    );
    assert!(
        j.expire_approvals(Ts(10_000), &[Tier::Medium])
            .unwrap()
            .is_empty(),
        "decided: cannot expire"
    );
    let tl: Vec<String> = j
        .timeline(inc)
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert!(
        tl.iter()
            .any(|m| m == "approved by alice via link: one host only"),
        "{tl:?}"
    );
}

fn approval_timeouts_follow_the_tier_policy(store: &dyn Store) {
    let mut j = store.connect();
    let (ds, _) = decisions();
    j.commit(&Batch {
        decisions: ds.iter().map(|d| ("t/0", d)).collect(),
        ..Batch::default()
    })
    .unwrap();
    let req = ds
        .iter()
        .find(|d| d.action == Action::RequestApproval)
        .unwrap();
    let inc = req.incident.as_ref().unwrap().as_str();
    j.open_approval(inc, &req.key, Tier::Medium, Ts(1000), Ts(2000))
        .unwrap();
    assert!(
        j.expire_approvals(Ts(1999), &[Tier::Medium])
            .unwrap()
            .is_empty()
    );
    let expired = j.expire_approvals(Ts(2000), &[Tier::Medium]).unwrap();
    assert_eq!(expired.len(), 1);
    assert!(
        expired[0].rollback_keys.len() == 1,
        "medium rolls back on timeout here"
    );
    assert!(
        j.expire_approvals(Ts(3000), &[Tier::Medium])
            .unwrap()
            .is_empty(),
        "expires once"
    );
    assert_eq!(j.approval(inc).unwrap().unwrap().state, "expired");
}

fn withdrawn_when_the_incident_recovers(store: &dyn Store) {
    let mut j = store.connect();
    let (ds, _) = decisions();
    j.commit(&Batch {
        decisions: ds.iter().map(|d| ("t/0", d)).collect(),
        ..Batch::default()
    })
    .unwrap();
    let req = ds
        .iter()
        .find(|d| d.action == Action::RequestApproval)
        .unwrap();
    let inc = req.incident.as_ref().unwrap().as_str();
    j.open_approval(inc, &req.key, Tier::Medium, Ts(1000), Ts(9000))
        .unwrap();
    assert!(j.withdraw_approval(inc, "recovered", Ts(1200)).unwrap());
    assert!(!j.withdraw_approval(inc, "recovered", Ts(1300)).unwrap());
    assert_eq!(
        j.decide_approval(inc, Verdict::Approve, "alice", "", Via::Api, Ts(1400), None)
            .unwrap(),
        ApprovalDecided::NotWaiting("withdrawn".into())
    );
}

fn escalations_are_claimed_stepped_hurried_and_stopped(store: &dyn Store) {
    let mut a = store.connect();
    let mut b = store.connect();
    assert!(
        a.start_escalation("inc-1", Tier::High, Ts(0), Ts(0))
            .unwrap()
    );
    assert!(
        !a.start_escalation("inc-1", Tier::High, Ts(0), Ts(0))
            .unwrap()
    );
    let hold = crate::time::Dur::from_secs(60);
    let got = a.claim_escalations(Ts(10), hold).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].step, 0);
    assert!(
        b.claim_escalations(Ts(20), hold).unwrap().is_empty(),
        "claimed by a"
    );
    a.escalation_step_done("inc-1", 0, Some(Ts(300_000)))
        .unwrap();
    assert!(b.claim_escalations(Ts(299_999), hold).unwrap().is_empty());
    // Worse: the next step is due now.
    assert!(b.hurry_escalation("inc-1", Ts(100_000)).unwrap());
    let got = b.claim_escalations(Ts(100_000), hold).unwrap();
    assert_eq!(got[0].step, 1);
    // b dies holding the claim: after the hold lapses, step 1 runs again.
    assert!(a.claim_escalations(Ts(150_000), hold).unwrap().is_empty());
    assert_eq!(a.claim_escalations(Ts(160_001), hold).unwrap()[0].step, 1);
    assert!(
        a.stop_escalation("inc-1", "acked", Some("carol"), Ts(170_000))
            .unwrap()
    );
    a.escalation_step_done("inc-1", 1, Some(Ts(170_001)))
        .unwrap();
    assert!(
        a.claim_escalations(Ts(999_999_999), hold)
            .unwrap()
            .is_empty(),
        "acked: no more steps"
    );
    assert_eq!(
        a.escalation("inc-1").unwrap().unwrap().acked_by.as_deref(),
        Some("carol")
    );
}

fn one_lease_holder_at_a_time(store: &dyn Store) {
    let mut a = store.connect();
    let mut b = store.connect();
    assert!(a.take_lease("digest", "a", Ts(100), Ts(0)).unwrap());
    assert!(!b.take_lease("digest", "b", Ts(200), Ts(50)).unwrap());
    assert!(
        !a.take_lease("digest", "a", Ts(300), Ts(60)).unwrap(),
        "not again before it lapses"
    );
    assert!(b.take_lease("digest", "b", Ts(400), Ts(100)).unwrap());
}

fn the_rollback_budget_admits_up_to_its_limits_across_processes(store: &dyn Store) {
    let mut a = store.connect();
    let mut b = store.connect(); // a second process on the same store
    let (ds, _) = decisions();
    a.commit(&Batch {
        decisions: ds.iter().map(|d| ("t/0", d)).collect(),
        ..Batch::default()
    })
    .unwrap();
    for r in a.claim_actions("a", &Action::ALL, 100).unwrap() {
        a.derive_action(&r.key, Action::Rollback, "approved", "test", Ts(0))
            .unwrap()
            .unwrap();
    }
    // The derived rollbacks, claimed by whichever process: each admits the
    // ones it holds.
    let mine = a.claim_actions("a", &[Action::Rollback], 2).unwrap();
    let theirs = b.claim_actions("b", &[Action::Rollback], 100).unwrap();
    assert!(mine.len() == 2 && !theirs.is_empty(), "{mine:?} {theirs:?}");
    let limits = RollbackLimits {
        per_service: 2,
        overall: 10,
    };
    let admit = |j: &mut Box<dyn Journal>, owner: &str, k: &str, since: Ts| {
        let a = j
            .admit_rollback(k, owner, Some("s"), since, limits)
            .unwrap();
        (a.admitted, a.for_service, a.overall)
    };
    // Each counts the ones admitted before it, whichever process admitted them.
    assert_eq!(admit(&mut a, "a", &mine[0].key, Ts(0)), (true, 0, 0));
    assert_eq!(admit(&mut b, "b", &theirs[0].key, Ts(0)), (true, 1, 1));
    assert_eq!(admit(&mut a, "a", &mine[1].key, Ts(0)), (false, 2, 2));
    // A refused one takes no place: still two admitted.
    assert_eq!(admit(&mut a, "a", &mine[1].key, Ts(0)), (false, 2, 2));
    // Outside the window they no longer count.
    let later = Ts(SystemClock.now().0 + 60_000);
    assert_eq!(admit(&mut a, "a", &mine[1].key, later), (true, 0, 0));
    // The overall limit binds whatever the service.
    let tight = RollbackLimits {
        per_service: 10,
        overall: 3,
    };
    if let Some(last) = theirs.get(1) {
        let other = b
            .admit_rollback(&last.key, "b", Some("other"), Ts(0), tight)
            .unwrap();
        assert_eq!(
            (other.admitted, other.for_service, other.overall),
            (false, 0, 3)
        );
    }
}

/// Commits the sample decisions and claims one of their actions: its key.
fn a_claimed_action(j: &mut dyn Journal) -> String {
    let (ds, _) = decisions();
    j.commit(&Batch {
        decisions: ds.iter().map(|d| ("t/0", d)).collect(),
        ..Batch::default()
    })
    .unwrap();
    j.claim_actions("me", &Action::ALL, 1)
        .unwrap()
        .remove(0)
        .key
}

fn verifications_are_claimed_when_due_leased_and_finished_once(store: &dyn Store) {
    let mut j = store.connect();
    let mut other = store.connect();
    let key = a_claimed_action(&mut *j);
    let due = Ts(1_000_000);
    let lease = Dur::from_secs(60);
    j.schedule_verification(&key, due).unwrap();
    j.schedule_verification(&key, Ts(5)).unwrap(); // once: the first stands
    assert!(
        j.claim_verifications(Ts(999_999), lease, 10)
            .unwrap()
            .is_empty()
    );
    let got = j.claim_verifications(due, lease, 10).unwrap();
    assert_eq!(got.iter().map(|a| &a.key).collect::<Vec<_>>(), vec![&key]);
    let within = Ts(due.0 + 59_999);
    assert!(
        other
            .claim_verifications(within, lease, 10)
            .unwrap()
            .is_empty()
    );
    let after = Ts(due.0 + 60_000);
    assert_eq!(
        other.claim_verifications(after, lease, 10).unwrap().len(),
        1
    );
    other.finish_verification(&key).unwrap();
    assert!(
        j.claim_verifications(Ts(i64::MAX / 2), lease, 10)
            .unwrap()
            .is_empty()
    );
}

/// Staged verification: each stage that passed is recorded, so another
/// process (after a crash or failover) resumes at the next stage; a stage
/// recorded twice (a slow process finishing late) never moves it back;
/// the lease is renewed while the next stage runs.
fn a_passed_verification_stage_is_never_run_again_by_any_process(store: &dyn Store) {
    let mut j = store.connect();
    let mut other = store.connect();
    let key = a_claimed_action(&mut *j);
    assert_eq!(j.verification_stage(&key).unwrap(), None);
    let lease = Dur::from_secs(60);
    j.schedule_verification(&key, Ts(1_000)).unwrap();
    assert_eq!(j.verification_stage(&key).unwrap(), Some(0));
    assert_eq!(
        j.claim_verifications(Ts(1_000), lease, 10).unwrap().len(),
        1
    );
    j.pass_verification_stage(&key, 0, Ts(500_000)).unwrap();
    j.pass_verification_stage(&key, 1, Ts(500_000)).unwrap();
    j.pass_verification_stage(&key, 0, Ts(500_000)).unwrap(); // late: no step back
    assert_eq!(other.verification_stage(&key).unwrap(), Some(2));
    // Held while stage 2 runs, then another process takes it over there.
    assert!(
        other
            .claim_verifications(Ts(499_999), lease, 10)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        other
            .claim_verifications(Ts(500_000), lease, 10)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(other.verification_stage(&key).unwrap(), Some(2));
    other.finish_verification(&key).unwrap();
    assert_eq!(j.verification_stage(&key).unwrap(), None);
}

/// A batch done's sample check is picked once (a second start, by this
/// process or another, writes nothing), each picked instance runs as a
/// verification of its own, and a final result never changes.
fn a_batch_is_sample_checked_once_and_each_instance_ends_once(store: &dyn Store) {
    let mut j = store.connect();
    let mut other = store.connect();
    let done_at = Ts(1_795_255_200_000);
    let (ds, _) = through_the_engine([format!(
        r#"{{"kind":"progress","ts":{},"labels":{{"service":"s","batch":"2"}},"stage":"batch_done","instances":["i-1","i-2","i-3"]}}"#,
        done_at.millis()
    )]);
    let d = &ds[0];
    assert_eq!(d.batch.as_ref().unwrap().batch_instances.len(), 3, "{d:?}");
    j.commit(&Batch {
        decisions: vec![("t/0", d)],
        ..Batch::default()
    })
    .unwrap();
    fn start<'a>(key: &'a str, done_at: Ts, picked: &'a [String], now: i64) -> SampleStart<'a> {
        SampleStart {
            from_key: key,
            service: "s",
            batch: "2",
            done_at,
            instances: picked,
            of: 3,
            due: Ts(now),
            now: Ts(now),
        }
    }
    let first = ["i-1".to_owned(), "i-3".to_owned()];
    assert!(
        j.start_sample_check(&start(&d.key, done_at, &first, 1_000))
            .unwrap()
    );
    assert!(
        !other
            .start_sample_check(&start(&d.key, done_at, &["i-2".to_owned()], 2_000))
            .unwrap(),
        "picked once"
    );
    let rows = other.sample_checks("s", "2").unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r.instance.as_str()).collect();
    assert_eq!(names, ["i-1", "i-3"]);
    assert!(
        rows.iter()
            .all(|r| r.state == SampleState::Running && r.of == 3)
    );
    // Each is a verification whose decision names its instance.
    let due = other
        .claim_verifications(Ts(1_000), Dur::from_secs(60), 10)
        .unwrap();
    let mut verified: Vec<&str> = due
        .iter()
        .filter_map(|a| a.decision.label("instance"))
        .collect();
    verified.sort_unstable();
    assert_eq!(verified, ["i-1", "i-3"]);
    assert!(due.iter().all(|a| a.decision.incident.is_none()));
    let k1 = sample_key(&d.key, "i-1");
    j.sample_result(&k1, SampleState::Running, "system ok 10:01", Ts(3_000))
        .unwrap();
    j.sample_result(
        &k1,
        SampleState::Failed,
        "stage services FAILED: 503",
        Ts(4_000),
    )
    .unwrap();
    other
        .sample_result(&k1, SampleState::Passed, "late", Ts(5_000))
        .unwrap();
    let rows = j.sample_checks("s", "2").unwrap();
    assert_eq!(rows[0].state, SampleState::Failed, "{rows:?}");
    assert_eq!(rows[0].detail, "stage services FAILED: 503");
    assert_eq!(rows[1].state, SampleState::Running);
    assert!(j.sample_checks("s", "1").unwrap().is_empty());
}

/// A replica that lost a partition (another claimed it after a rebalance
/// or a long stall) can commit nothing for it: neither decisions nor a
/// position. The new owner can.
fn a_partition_claimed_by_another_process_commits_nothing_for_this_one(store: &dyn Store) {
    let mut a = store.connect();
    let mut b = store.connect();
    let (ds, _) = decisions();
    let old = a.claim_partition("t/0", "a").unwrap();
    a.commit(&Batch {
        positions: vec![("t/0", 1)],
        epochs: vec![("t/0", old)],
        ..Batch::default()
    })
    .unwrap();
    let new = b.claim_partition("t/0", "b").unwrap();
    assert!(new > old);
    let late = a.commit(&Batch {
        decisions: ds.iter().map(|d| ("t/0", d)).collect(),
        positions: vec![("t/0", 99)],
        epochs: vec![("t/0", old)],
        ..Batch::default()
    });
    match late {
        Err(JournalError::Fenced { partition, .. }) => {
            assert_eq!(partition.as_deref(), Some("t/0"))
        }
        other => panic!("a stale owner committed: {other:?}"),
    }
    assert_eq!(
        a.position("t/0").unwrap(),
        Some(1),
        "nothing of it was written"
    );
    assert!(a.open_incidents("t/0").unwrap().is_empty());
    assert!(a.claim_actions("a", &Action::ALL, 100).unwrap().is_empty());
    // The owner commits; another partition's commit is not held up.
    b.commit(&Batch {
        decisions: ds.iter().map(|d| ("t/0", d)).collect(),
        positions: vec![("t/0", 99)],
        epochs: vec![("t/0", new)],
        ..Batch::default()
    })
    .unwrap();
    assert_eq!(b.position("t/0").unwrap(), Some(99));
    let other = a.claim_partition("t/1", "a").unwrap();
    a.commit(&Batch {
        positions: vec![("t/1", 5)],
        epochs: vec![("t/1", other)],
        ..Batch::default()
    })
    .unwrap();
}

/// A process that stalled past its lease (its claims reaped) cannot start
/// the rollback it had claimed: the claim is no longer its own. The
/// rollback stays `unknown` for a human; it is never re-run.
fn a_reaped_claim_can_never_admit_its_rollback(store: &dyn Store) {
    let mut a = store.connect();
    let mut b = store.connect();
    let (ds, _) = decisions();
    a.commit(&Batch {
        decisions: ds.iter().map(|d| ("t/0", d)).collect(),
        ..Batch::default()
    })
    .unwrap();
    let req = a.claim_actions("a", &Action::ALL, 1).unwrap().remove(0);
    let rb = a
        .derive_action(&req.key, Action::Rollback, "approved", "test", Ts(0))
        .unwrap()
        .unwrap();
    let claimed = a.claim_actions("a", &[Action::Rollback], 1).unwrap();
    assert_eq!(claimed[0].key, rb);
    // `a` goes silent; `b` is alive and reaps.
    std::thread::sleep(std::time::Duration::from_millis(30));
    b.heartbeat("b").unwrap();
    let reaped = b.reap(Dur(20)).unwrap();
    assert!(
        reaped
            .iter()
            .any(|r| r.key == rb && r.state == ActionState::Unknown)
    );
    let limits = RollbackLimits {
        per_service: 10,
        overall: 10,
    };
    assert!(matches!(
        a.admit_rollback(&rb, "a", Some("s"), Ts(0), limits),
        Err(JournalError::Fenced { .. })
    ));
    // Nobody claims it again.
    assert!(
        b.claim_actions("b", &[Action::Rollback], 10)
            .unwrap()
            .is_empty()
    );
}

/// An incident's severity never goes down, whatever order decisions
/// arrive in (a replayed, milder one after a worsening).
fn severity_only_rises(store: &dyn Store) {
    let mut j = store.connect();
    let (ds, _) = decisions();
    let worst = ds.iter().map(|d| d.severity).max().unwrap();
    assert_eq!(worst, Severity::Severe);
    // Worsened first, the opening (milder) decisions after.
    let mut order: Vec<&Decision> = ds.iter().filter(|d| d.severity == worst).collect();
    order.extend(ds.iter().filter(|d| d.severity != worst));
    for d in order {
        j.commit(&Batch {
            decisions: vec![("t/0", d)],
            ..Batch::default()
        })
        .unwrap();
    }
    let open = j.open_incidents("t/0").unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].severity, Severity::Severe);
    assert_eq!(j.incidents(None).unwrap()[0].severity, "severe");
}

/// A verdict stands: an approval request's late "awaiting approval" state
/// (its message went out after a human already decided) never undoes it.
fn a_human_verdict_beats_a_late_state(store: &dyn Store) {
    let mut j = store.connect();
    let (ds, _) = decisions();
    j.commit(&Batch {
        decisions: ds.iter().map(|d| ("t/0", d)).collect(),
        ..Batch::default()
    })
    .unwrap();
    let req = ds
        .iter()
        .find(|d| d.action == Action::RequestApproval)
        .unwrap();
    let inc = req.incident.as_ref().unwrap().as_str();
    let claimed = j.claim_actions("me", &Action::ALL, 100).unwrap();
    assert!(claimed.iter().any(|a| a.key == req.key));
    j.open_approval(inc, &req.key, Tier::Medium, Ts(1000), Ts(9000))
        .unwrap();
    j.decide_approval(inc, Verdict::Approve, "alice", "", Via::Api, Ts(1100), None)
        .unwrap();
    j.set_action(&req.key, ActionState::AwaitingApproval, "request sent")
        .unwrap();
    let state = j
        .actions_of(inc)
        .unwrap()
        .into_iter()
        .find(|a| a.key == req.key)
        .unwrap()
        .state;
    assert_eq!(state, ActionState::Approved);
}

/// Two processes race for the last unit of a service's rollback budget,
/// 1,000 times: each time exactly one is admitted.
fn two_processes_racing_for_the_last_unit_of_budget_admit_it_once(store: &dyn Store) {
    const RACES: usize = 1000;
    let mut setup = store.connect();
    let (ds, _) = decisions();
    let proto = ds.iter().find(|d| d.action == Action::Notify).unwrap();
    // Two rollbacks per race, of the race's own service.
    let mut made = Vec::new();
    for i in 0..RACES {
        for side in ["a", "b"] {
            let mut d = proto.clone();
            d.key = format!("race-{i}-{side}");
            d.action = Action::Rollback;
            d.labels = vec![("service".into(), format!("svc-{i}").into())].into();
            made.push(d);
        }
    }
    for chunk in made.chunks(200) {
        setup
            .commit(&Batch {
                decisions: chunk.iter().map(|d| ("t/0", d)).collect(),
                ..Batch::default()
            })
            .unwrap();
    }
    let a_keys: Vec<String> = (0..RACES).map(|i| format!("race-{i}-a")).collect();
    let b_keys: Vec<String> = (0..RACES).map(|i| format!("race-{i}-b")).collect();
    let mut a = store.connect();
    let mut b = store.connect();
    // Each side ends up holding the claims on its own: `a` claims all, hands
    // b's back to pending, and `b` claims those.
    let claimed_a = a
        .claim_actions("a", &[Action::Rollback], 2 * RACES)
        .unwrap();
    let (mine, others): (Vec<_>, Vec<_>) =
        claimed_a.into_iter().partition(|r| r.key.ends_with("-a"));
    assert_eq!(mine.len(), RACES);
    for r in others {
        a.set_action(&r.key, ActionState::Pending, "for b").unwrap();
    }
    assert_eq!(
        b.claim_actions("b", &[Action::Rollback], 2 * RACES)
            .unwrap()
            .len(),
        RACES
    );
    let limits = RollbackLimits {
        per_service: 1,
        overall: 1_000_000,
    };
    let barrier = Arc::new(Barrier::new(2));
    let run =
        |mut j: Box<dyn Journal>, owner: &'static str, keys: Vec<String>, barrier: Arc<Barrier>| {
            std::thread::spawn(move || {
                let mut won = Vec::with_capacity(keys.len());
                for (i, k) in keys.iter().enumerate() {
                    barrier.wait();
                    let a = j
                        .admit_rollback(k, owner, Some(&format!("svc-{i}")), Ts(0), limits)
                        .unwrap();
                    won.push(a.admitted);
                }
                won
            })
        };
    let ta = run(a, "a", a_keys, barrier.clone());
    let tb = run(b, "b", b_keys, barrier);
    let (wa, wb) = (ta.join().unwrap(), tb.join().unwrap());
    for i in 0..RACES {
        assert!(wa[i] ^ wb[i], "race {i}: a {} b {}", wa[i], wb[i]);
    }
}

/// Each replica reads the HTTP bodies the others accepted, in order, and
/// never its own.
fn a_replica_follows_the_bodies_the_others_accepted(store: &dyn Store) {
    let mut a = store.connect();
    let mut b = store.connect();
    assert_eq!(a.inbox_last().unwrap(), 0);
    a.commit(&Batch {
        inbox: vec![b"a1", b"a2"],
        origin: "a",
        ..Batch::default()
    })
    .unwrap();
    b.commit(&Batch {
        inbox: vec![b"b1"],
        origin: "b",
        ..Batch::default()
    })
    .unwrap();
    let for_b: Vec<Vec<u8>> = b
        .inbox_after(0, "b", 10)
        .unwrap()
        .into_iter()
        .map(|(_, x)| x)
        .collect();
    assert_eq!(for_b, vec![b"a1".to_vec(), b"a2".to_vec()]);
    let for_a = a.inbox_after(0, "a", 10).unwrap();
    assert_eq!(for_a.len(), 1);
    assert_eq!(for_a[0].1, b"b1".to_vec());
    assert!(a.inbox_after(for_a[0].0, "a", 10).unwrap().is_empty());
    let one = b.inbox_after(0, "b", 1).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(a.inbox_last().unwrap(), for_a[0].0);
}

fn tally_row(
    service: &str,
    batch: &str,
    minute: i64,
    samples: u64,
    sum: f64,
    low: f64,
) -> TallyRow {
    TallyRow {
        service: service.into(),
        batch: batch.into(),
        minute: Ts(minute * 60_000),
        samples,
        sum,
        low,
        tier: Tier::High,
    }
}

/// Tallies of the same (service, batch, minute) add up, whichever process
/// commits them; other services and earlier minutes stay apart; pruning
/// forgets old minutes.
fn gate_tallies_add_up_across_commits_and_processes(store: &dyn Store) {
    let mut a = store.connect();
    let mut b = store.connect();
    let first = [
        tally_row("web", "2", 10, 2, 1.998, 0.998),
        tally_row("web", "", 10, 1, 1.0, 1.0),
        tally_row("db", "2", 10, 5, 5.0, 1.0),
    ];
    a.commit(&Batch {
        tallies: &first,
        ..Batch::default()
    })
    .unwrap();
    b.commit(&Batch {
        tallies: &[
            tally_row("web", "2", 10, 1, 0.5, 0.5),
            tally_row("web", "2", 11, 1, 1.0, 1.0),
        ],
        ..Batch::default()
    })
    .unwrap();
    let rows = a.tally("web", Ts(10 * 60_000)).unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let merged = rows
        .iter()
        .find(|r| r.batch == "2" && r.minute == Ts(600_000))
        .unwrap();
    assert_eq!(merged.samples, 3);
    assert!((merged.sum - 2.498).abs() < 1e-9, "{merged:?}");
    assert_eq!(merged.low, 0.5);
    assert_eq!(merged.tier, Tier::High);
    assert_eq!(rows.last().unwrap().minute, Ts(11 * 60_000), "oldest first");
    assert_eq!(a.tally("web", Ts(11 * 60_000)).unwrap().len(), 1);
    assert!(a.tally("nobody", Ts(0)).unwrap().is_empty());
    assert_eq!(a.prune_tally(Ts(11 * 60_000)).unwrap(), 3);
    assert_eq!(b.tally("web", Ts(0)).unwrap().len(), 1);
}

/// Samples ride in the same transaction as the positions: a replica that
/// lost its partition counts nothing, so the new owner's replay of the same
/// messages is the only count.
fn a_fenced_commit_counts_no_samples_for_the_gate(store: &dyn Store) {
    let mut a = store.connect();
    let mut b = store.connect();
    let old = a.claim_partition("t/0", "a").unwrap();
    b.claim_partition("t/0", "b").unwrap();
    let late = a.commit(&Batch {
        tallies: &[tally_row("web", "2", 10, 7, 7.0, 1.0)],
        positions: vec![("t/0", 3)],
        epochs: vec![("t/0", old)],
        ..Batch::default()
    });
    assert!(matches!(late, Err(JournalError::Fenced { .. })), "{late:?}");
    assert!(b.tally("web", Ts(0)).unwrap().is_empty());
}

fn promotions_are_kept_in_order_per_service(store: &dyn Store) {
    let mut a = store.connect();
    let b = store.connect();
    let p =
        |service: &str, batch: Option<&str>, revision: Option<&str>, by: &str, at: i64| Promotion {
            service: service.into(),
            batch: batch.map(Into::into),
            revision: revision.map(Into::into),
            by: by.into(),
            note: format!("note by {by}"),
            at: Ts(at),
        };
    a.promote(&p("web", Some("2"), Some("A"), "alice", 5))
        .unwrap();
    a.promote(&p("db", Some("1"), None, "bob", 6)).unwrap();
    a.promote(&p("web", None, None, "carol", 7)).unwrap();
    let web = b.promotions("web").unwrap();
    assert_eq!(
        web,
        vec![
            p("web", Some("2"), Some("A"), "alice", 5),
            p("web", None, None, "carol", 7)
        ]
    );
    assert_eq!(b.promotions("db").unwrap().len(), 1);
    assert!(b.promotions("none").unwrap().is_empty());
}

/// Several processes' connections read then write at the same moment (an
/// approval opened while the pipeline commits and another worker records a
/// timeline): each waits its turn; none fails with a lock error. A failure
/// here once left approval requests `failed` for good under a burst.
fn connections_writing_at_once_wait_for_each_other_instead_of_failing(store: &dyn Store) {
    let mut setup = store.connect();
    let (ds, _) = decisions();
    setup
        .commit(&Batch {
            decisions: ds.iter().map(|d| ("t/0", d)).collect(),
            ..Batch::default()
        })
        .unwrap();
    let req = ds
        .iter()
        .find(|d| d.action == Action::RequestApproval)
        .unwrap();
    let inc = req.incident.as_ref().unwrap().to_string();
    let key = req.key.clone();
    let id = req.incident.clone().unwrap();
    let barrier = Arc::new(Barrier::new(4));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let mut j = store.connect();
            let (inc, key, id, barrier) = (inc.clone(), key.clone(), id.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for n in 0..100i64 {
                    let r = match w {
                        0 => j
                            .commit(&Batch {
                                positions: vec![("t/1", n)],
                                ..Batch::default()
                            })
                            .map(drop),
                        1 => j
                            .open_approval(&inc, &key, Tier::Medium, Ts(n), Ts(n + 1000))
                            .map(drop),
                        2 => j.add_timeline(&id, Ts(n), "note", "x"),
                        _ => j.take_lease("digest", "w3", Ts(n + 1), Ts(n)).map(drop),
                    };
                    if let Err(e) = r {
                        return Err(format!("worker {w}, round {n}: {e}"));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap().unwrap();
    }
}

/// A silence as the journal stores it (the silence module validates what
/// people post; the journal keeps what it is given).
fn silence_at(
    id: &str,
    starts_at: Ts,
    ends_at: Ts,
    scope: Scope,
    until: Option<(&str, &str)>,
) -> Silence {
    Silence {
        id: id.to_owned(),
        matchers: vec![MatcherSpec {
            name: "service".into(),
            value: "s".into(),
            is_regex: false,
            is_equal: true,
        }],
        scope,
        starts_at,
        ends_at,
        until: until.map(|(service, batch)| UntilBatch {
            service: service.into(),
            batch: batch.into(),
        }),
        created_by: "alice".into(),
        comment: "kernel patch".into(),
        created_at: starts_at,
        updated_at: starts_at,
        expired_by: None,
    }
}

fn progress(batch: &str, stage: &str, at: Ts) -> UpgradeRow {
    UpgradeRow {
        service: "s".into(),
        batch: Some(batch.into()),
        stage: stage.into(),
        done: None,
        total: None,
        message: None,
        updated_at: at,
        open: stage != "completed" && stage != "failed",
    }
}

fn silences_are_kept_expire_on_time_and_end_with_their_batch(store: &dyn Store) {
    let now = Ts(1_795_255_200_000);
    let min = |m: i64| now.saturating_add(Dur::from_mins(m));
    let day = Dur::from_mins(24 * 60);
    let timed = silence_at("sil-timed", now, min(60), Scope::All, None);
    let pending = silence_at("sil-pending", min(10), min(20), Scope::Notify, None);
    let until = silence_at(
        "sil-until",
        now,
        now.saturating_add(day),
        Scope::Notify,
        Some(("s", "2")),
    );
    let mut a = store.connect();
    for s in [&timed, &pending, &until] {
        a.add_silence(s).unwrap();
    }
    // Another process (a replica, a restart) sees them as they were made.
    let b = store.connect();
    let mut seen = b.silences(now, false).unwrap();
    seen.sort_by(|x, y| x.id.cmp(&y.id));
    let mut want = vec![timed.clone(), pending.clone(), until.clone()];
    want.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(seen, want);
    assert_eq!(
        b.silence(&timed.id).unwrap().unwrap().state(now),
        SilenceState::Active
    );
    assert_eq!(
        b.silence(&pending.id).unwrap().unwrap().state(now),
        SilenceState::Pending
    );
    // On time, with nothing written: an hour on, the timed one is over.
    let later: Vec<String> = b
        .silences(min(60), false)
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert!(
        !later.contains(&timed.id) && later.contains(&until.id),
        "{later:?}"
    );
    let all = b.silences(min(60), true).unwrap();
    assert_eq!(
        all.iter()
            .find(|s| s.id == timed.id)
            .unwrap()
            .state(min(60)),
        SilenceState::Expired
    );
    // Expired early, by whom; once.
    assert!(a.expire_silence(&pending.id, "bob", min(1)).unwrap());
    assert!(
        !a.expire_silence(&pending.id, "bob", min(2)).unwrap(),
        "already over"
    );
    assert!(!a.expire_silence("no-such", "bob", min(2)).unwrap());
    let p = b.silence(&pending.id).unwrap().unwrap();
    assert_eq!(p.expired_by.as_deref(), Some("bob"));
    assert_eq!(p.state(min(1)), SilenceState::Expired);
    assert!(
        p.starts_at <= p.ends_at,
        "a pending silence ends before it starts"
    );
    // Until batch 2 completes: batch 1's end and batch 2's start change
    // nothing; batch 2's end ends it, in the commit that records it.
    for row in [
        progress("1", "batch_done", min(5)),
        progress("2", "batch_started", min(6)),
    ] {
        a.commit(&Batch {
            progress: std::slice::from_ref(&row),
            ..Batch::default()
        })
        .unwrap();
    }
    assert_eq!(
        b.silence(&until.id).unwrap().unwrap().ends_at,
        until.ends_at
    );
    let done = progress("2", "batch_done", min(30));
    a.commit(&Batch {
        progress: std::slice::from_ref(&done),
        ..Batch::default()
    })
    .unwrap();
    let ended = b.silence(&until.id).unwrap().unwrap();
    assert_eq!(ended.ends_at, min(30));
    assert_eq!(ended.state(min(30)), SilenceState::Expired);
    assert_eq!(ended.state(min(29)), SilenceState::Active);
    // A failed upgrade ends every until-batch silence of the service.
    let next = silence_at(
        "sil-next",
        min(31),
        min(31).saturating_add(day),
        Scope::Notify,
        Some(("s", "3")),
    );
    a.add_silence(&next).unwrap();
    let failed = progress("3", "failed", min(40));
    a.commit(&Batch {
        progress: std::slice::from_ref(&failed),
        ..Batch::default()
    })
    .unwrap();
    assert_eq!(b.silence(&next.id).unwrap().unwrap().ends_at, min(40));
}

fn a_hold_skips_a_running_action_once_and_is_audited(store: &dyn Store) {
    let mut j = store.connect();
    let (ds, _) = decisions();
    j.commit(&Batch {
        decisions: ds.iter().map(|d| ("t/0", d)).collect(),
        ..Batch::default()
    })
    .unwrap();
    let claimed = j.claim_actions("me", &Action::ALL, 100).unwrap();
    let (first, second) = (&claimed[0], &claimed[1]);
    let record = |a: &ActionRow| HoldRecord {
        source: "sil-1".into(),
        action_key: a.key.clone(),
        action: a.action,
        incident: a.incident.clone(),
        scope: Scope::All,
        detail: "held back by silence sil-1 (scope all, alice: kernel patch)".into(),
        at: Ts(1_795_255_300_000),
    };
    assert!(j.hold_action(&first.key, &record(first)).unwrap());
    assert!(!j.hold_action(&first.key, &record(first)).unwrap(), "once");
    // An action that already ran is never rewritten as held back.
    j.set_action(&second.key, ActionState::Done, "sent")
        .unwrap();
    assert!(!j.hold_action(&second.key, &record(second)).unwrap());
    let incident = first.incident.clone().unwrap();
    let actions = j.actions_of(&incident).unwrap();
    let held = actions.iter().find(|a| a.key == first.key).unwrap();
    assert_eq!(held.state, ActionState::Skipped);
    assert_eq!(held.detail.as_deref(), Some(record(first).detail.as_str()));
    assert_eq!(
        actions.iter().find(|a| a.key == second.key).unwrap().state,
        ActionState::Done
    );
    assert!(
        j.timeline(&incident)
            .unwrap()
            .iter()
            .any(|t| t.message.contains("held back by silence sil-1")),
        "on the incident's timeline"
    );
    assert_eq!(j.holds_of("sil-1").unwrap(), vec![record(first)]);
    assert!(j.holds_of("sil-2").unwrap().is_empty());
}

fn the_evidence_and_progress_history_for_the_review_are_kept(store: &dyn Store) {
    let mut j = store.connect();
    let (ds, _) = decisions();
    // The engine's decisions carry the window's readings from the breach
    // on: 0.6 (open), 1.3 (worse: the average of 0.6 and 2.0).
    assert!(ds.iter().all(|d| d.evidence.0.is_some()), "{ds:?}");
    let rows = [
        progress("1", "batch_started", Ts(1_795_255_100_000)),
        progress("1", "batch_done", Ts(1_795_255_150_000)),
    ];
    j.commit(&Batch {
        decisions: ds.iter().map(|d| ("t/0", d)).collect(),
        progress: &rows,
        ..Batch::default()
    })
    .unwrap();
    let inc = ds[0].incident.clone().unwrap();
    let b = store.connect();
    let evidence = b.evidence(inc.as_str()).unwrap().expect("evidence kept");
    assert_eq!(
        evidence.breach_from, ds[0].at,
        "the first breaching reading"
    );
    let points = evidence.points;
    let values: Vec<f64> = points.iter().map(|(_, v)| *v).collect();
    assert_eq!(values.first(), Some(&0.6), "{points:?}");
    assert!(
        values.contains(&1.3),
        "the worsening's 1m average: {points:?}"
    );
    assert!(
        points.windows(2).all(|w| w[0].0 < w[1].0),
        "one per time, in order"
    );
    assert_eq!(points.last().unwrap().0, ds.last().unwrap().at);
    assert!(b.evidence("no-such").unwrap().is_none());
    let log = b
        .progress_log("s", Ts(1_795_255_000_000), Ts(1_795_255_200_000))
        .unwrap();
    assert_eq!(log, rows.to_vec());
    assert_eq!(
        b.progress_log("s", Ts(1_795_255_120_000), Ts(1_795_255_200_000))
            .unwrap()
            .len(),
        1
    );
    assert!(
        b.progress_log("other", Ts(0), Ts(i64::MAX))
            .unwrap()
            .is_empty()
    );
}

fn an_alerts_chart_is_kept_with_its_evidence_and_replaced_by_a_later_fetch(store: &dyn Store) {
    use crate::decision::{ChartSource, EvidenceSeries};
    let mut j = store.connect();
    let source = ChartSource {
        generator_url: "http://prom:9090/graph?g0.expr=up+%3D%3D+0".into(),
        ..ChartSource::default()
    };
    let chart = |points: Vec<(Ts, f64)>, error: Option<&str>| EvidenceSeries {
        breach_from: Ts(60_000),
        points,
        annotations: Vec::new(),
        chart: Some(ChartSource {
            query: Some("up".into()),
            threshold: Some(0.0),
            error: error.map(str::to_owned),
            ..source.clone()
        }),
    };
    j.put_chart("inc-a", &chart(Vec::new(), Some("Prometheus answered 503")))
        .unwrap();
    let first = store.connect().evidence("inc-a").unwrap().unwrap();
    assert_eq!(
        first.chart.unwrap().error.as_deref(),
        Some("Prometheus answered 503")
    );
    // The fetch at the resolve replaces the one at the open.
    j.put_chart("inc-a", &chart(vec![(Ts(0), 1.0), (Ts(60_000), 0.0)], None))
        .unwrap();
    let e = store.connect().evidence("inc-a").unwrap().unwrap();
    assert_eq!(e.points, vec![(Ts(0), 1.0), (Ts(60_000), 0.0)]);
    let c = e.chart.unwrap();
    assert_eq!(
        (c.query.as_deref(), c.threshold, c.error),
        (Some("up"), Some(0.0), None)
    );
    assert_eq!(c.generator_url, source.generator_url);
    assert_eq!(e.breach_from, Ts(60_000));
    assert!(store.connect().evidence("inc-b").unwrap().is_none());
}

fn pending_actions_are_counted_by_kind_until_claimed(store: &dyn Store) {
    let mut j = store.connect();
    assert!(j.pending_actions().unwrap().is_empty());
    let (ds, _) = decisions();
    j.commit(&Batch {
        decisions: ds.iter().map(|d| ("t/0", d)).collect(),
        ..Batch::default()
    })
    .unwrap();
    let mut want: Vec<(Action, u64)> = Vec::new();
    for d in &ds {
        match want.iter_mut().find(|(a, _)| *a == d.action) {
            Some((_, n)) => *n += 1,
            None => want.push((d.action, 1)),
        }
    }
    let mut got = store.connect().pending_actions().unwrap();
    got.sort_by_key(|(a, _)| a.as_str());
    want.sort_by_key(|(a, _)| a.as_str());
    assert_eq!(got, want);
    let kinds: Vec<Action> = want.iter().map(|(a, _)| *a).collect();
    let claimed = j.claim_actions("me", &kinds, 100).unwrap();
    assert_eq!(claimed.len(), ds.len());
    assert!(store.connect().pending_actions().unwrap().is_empty());
}

/// A high-tier batch of three whose instances i-2 and i-3 breach.
fn batch_decisions() -> (Vec<Decision>, Engine) {
    through_the_engine((0..=120).step_by(10).flat_map(|t| {
        (1..=3).map(move |i| {
            let v = if t >= 10 && i > 1 { 0.6 } else { 0.1 };
            format!(
                r#"{{"metric":"m","value":{v},"ts":{},"labels":{{"service":"s","instance":"i-{i}","batch":"b1","tier":"high"}}}}"#,
                1_795_255_200_000i64 + t * 1000
            )
        })
    }))
}

fn a_batch_incident_keeps_its_members_and_rolls_back_each_instance_approved(store: &dyn Store) {
    let mut j = store.connect();
    let (ds, engine) = batch_decisions();
    assert!(ds.iter().all(|d| d.batch.is_some()), "{ds:?}");
    j.commit(&Batch {
        decisions: ds.iter().map(|d| ("t/0", d)).collect(),
        ..Batch::default()
    })
    .unwrap();
    // The batch and its members come back as the engine had them.
    let from_engine = engine.open_incidents();
    assert_eq!(from_engine.len(), 1);
    let back = j.open_incidents("t/0").unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(
        back[0].batch.as_ref().unwrap().instances(),
        ["i-2", "i-3"],
        "the members as last decided"
    );
    let inc = back[0].id.as_str();
    let row = j.incident(inc).unwrap().unwrap();
    assert_eq!(row.batch.as_ref().unwrap().batch_instances.len(), 3);
    // One approval for the batch; the whole batch approved rolls each of
    // its three instances back once.
    let req = ds
        .iter()
        .find(|d| d.action == Action::RequestApproval)
        .unwrap();
    j.open_approval(inc, &req.key, Tier::High, Ts(1000), Ts(9000))
        .unwrap();
    let scope = super::ApprovedScope {
        scope: "batch".into(),
        instances: vec!["i-1".into(), "i-2".into(), "i-3".into()],
    };
    let ApprovalDecided::Approved { rollback_keys, .. } = j
        .decide_approval(
            inc,
            Verdict::Approve,
            "carol",
            "",
            Via::Link,
            Ts(1100),
            Some(&scope),
        )
        .unwrap()
    else {
        panic!("not approved")
    };
    assert_eq!(rollback_keys.len(), 3);
    let approval = j.approval(inc).unwrap().unwrap();
    assert_eq!(
        approval.scope.as_ref(),
        Some(&scope),
        "the blast radius is kept"
    );
    let claimed = j.claim_actions("me", &[Action::Rollback], 100).unwrap();
    let mut instances: Vec<&str> = claimed
        .iter()
        .filter(|a| rollback_keys.contains(&a.key))
        .map(|a| a.decision.label("instance").unwrap())
        .collect();
    instances.sort_unstable();
    assert_eq!(
        instances,
        ["i-1", "i-2", "i-3"],
        "one rollback per instance"
    );
    assert!(claimed.iter().all(|a| a.decision.batch.is_some()));
    assert!(
        j.timeline(inc).unwrap().iter().any(|t| t
            .message
            .contains("approved by carol via link; the whole batch: 3 instances")),
        "the scope is on the timeline"
    );
    // Again, the same rollbacks: nothing new.
    assert!(
        j.derive_rollbacks(&req.key, "approved", &["i-2".into()], "again", Ts(1200))
            .unwrap()
            .is_empty()
    );
    // A member that joins later asks again: a new request reopens it,
    // the same request again does not.
    assert_eq!(
        j.open_approval(inc, &req.key, Tier::High, Ts(1300), Ts(9300))
            .unwrap(),
        ApprovalOpened::AlreadyOpen
    );
    assert_eq!(
        j.open_approval(inc, "later-request", Tier::High, Ts(1300), Ts(2000))
            .unwrap(),
        ApprovalOpened::Opened
    );
    let reopened = j.approval(inc).unwrap().unwrap();
    assert_eq!(
        (reopened.state.as_str(), reopened.scope.is_none()),
        ("awaiting", true)
    );
    // Timed out on a tier that rolls back then: each breaching member.
    let expired = j.expire_approvals(Ts(2000), &[Tier::High]).unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(
        expired[0].rollback_keys.len(),
        0,
        "no decision `later-request` to derive from"
    );
}

/// An incident's opening decision, made by hand: `action` on `service`.
fn opening(
    id: &str,
    tier: Tier,
    severity: Severity,
    service: &str,
    at: i64,
    action: Action,
) -> Decision {
    Decision {
        at: Ts(at),
        action,
        tier,
        severity,
        rule: "r".into(),
        incident: Some(IncidentId::from_string(id)),
        labels: vec![
            (Box::from("instance"), Box::from(format!("i-{id}"))),
            (Box::from("service"), Box::from(service)),
        ]
        .into(),
        value: None,
        threshold: None,
        baseline: None,
        message: format!("{id} opened"),
        key: format!("{id}/0/{action}"),
        seq: 0,
        fingerprint: None,
        escalated_from: None,
        evidence: Default::default(),
        batch: None,
    }
}

fn people_read_open_incidents_by_urgency_and_service_in_bounded_pages(store: &dyn Store) {
    let mut j = store.connect();
    use Severity::{Functional, Minor, Severe};
    use Tier::{High, Low, Medium};
    let ds = [
        opening("low-old", Low, Severe, "web", 1_000, Action::Notify),
        opening("low-new", Low, Severe, "web", 2_000, Action::Notify),
        opening("med-minor", Medium, Minor, "web", 3_000, Action::Notify),
        opening(
            "med-func",
            Medium,
            Functional,
            "pay",
            4_000,
            Action::RequestApproval,
        ),
        opening("high", High, Functional, "pay", 500, Action::Notify),
        opening("gone", High, Severe, "pay", 100, Action::Notify),
    ];
    let mut resolve = opening("gone", High, Severe, "pay", 9_000, Action::Resolve);
    resolve.key = "gone/1/resolve".into();
    resolve.seq = 1;
    j.commit(&Batch {
        decisions: ds.iter().chain([&resolve]).map(|d| ("t/0", d)).collect(),
        ..Batch::default()
    })
    .unwrap();
    let ids = |p: &OpenPage| p.rows.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
    // Most urgent first: the high tier, then by severity, then newest.
    let all = j.open_page(&IncidentFilter::default(), 10).unwrap();
    assert_eq!(
        ids(&all),
        ["high", "med-func", "med-minor", "low-new", "low-old"]
    );
    assert_eq!(all.total, 5);
    let two = j.open_page(&IncidentFilter::default(), 2).unwrap();
    assert_eq!(
        (ids(&two), two.total),
        (vec!["high".to_owned(), "med-func".to_owned()], 5)
    );
    let low = IncidentFilter {
        tier: Some("low".into()),
        ..Default::default()
    };
    let p = j.open_page(&low, 1).unwrap();
    assert_eq!((ids(&p), p.total), (vec!["low-new".to_owned()], 2));
    let text = IncidentFilter {
        text: Some("I-MED".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(&j.open_page(&text, 10).unwrap()),
        ["med-func", "med-minor"]
    );
    let minor = IncidentFilter {
        severity: Some("minor".into()),
        ..Default::default()
    };
    assert_eq!(ids(&j.open_page(&minor, 10).unwrap()), ["med-minor"]);
    let resolved = j.resolved_recently(5).unwrap();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].id, "gone");
    // A service's gate: the most severe, counted; a blocking one found
    // beyond the page.
    let web = j.open_of_service("web", 10).unwrap();
    assert_eq!(
        (ids(&web), web.total),
        (
            vec![
                "low-new".to_owned(),
                "low-old".to_owned(),
                "med-minor".to_owned()
            ],
            3
        )
    );
    let pay = j.open_of_service("pay", 1).unwrap();
    // The medium one waits for approval (its request is pending), so the
    // high one, which blocks, comes along though the page holds one.
    assert_eq!(pay.total, 2);
    assert!(pay.rows.iter().any(|i| i.id == "high"), "{:?}", ids(&pay));
    assert!(j.open_of_service("nothing", 10).unwrap().rows.is_empty());

    // Telemetry's gauges: counted, the resolved one and decided requests
    // left out.
    let mut g = j.gauges().unwrap();
    g.open_by_tier.sort();
    assert_eq!(
        g,
        Gauges {
            open_by_tier: vec![("high".into(), 1), ("low".into(), 2), ("medium".into(), 2)],
            awaiting_approvals: 0,
            oldest_awaiting: None,
        }
    );
    for (id, at) in [("med-func", 4_000), ("med-minor", 3_500), ("high", 600)] {
        j.open_approval(
            id,
            &format!("{id}/0/request_approval"),
            Medium,
            Ts(at),
            Ts(at + 60_000),
        )
        .unwrap();
    }
    j.decide_approval(
        "high",
        Verdict::Reject,
        "erin",
        "",
        Via::Console,
        Ts(700),
        None,
    )
    .unwrap();
    let g = j.gauges().unwrap();
    assert_eq!(
        (g.awaiting_approvals, g.oldest_awaiting),
        (2, Some(Ts(3_500)))
    );
}
