use std::path::Path;

use super::*;
use crate::config::Errors;
use crate::decision::{Action, Tier};
use crate::engine::{Engine, EngineConfig};
use crate::journal::{ApprovalDecided, ApprovalOpened, Verdict};
use crate::rule::load::{parse_file, rule_set};

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
    let mut errs = Errors::default();
    let file = parse_file(Path::new("t.yaml"), RULES, &mut errs).unwrap();
    let mut engine = Engine::new(
        std::sync::Arc::new(rule_set(&[file])),
        EngineConfig::default(),
    );
    let mut out = Vec::new();
    for (t, v) in [(0, 0.6), (5, 2.0), (10, 2.0)] {
        let line = format!(
            r#"{{"metric":"m","value":{v},"ts":{},"labels":{{"service":"s","instance":"i-1"}}}}"#,
            1_795_255_200_000i64 + t * 1000
        );
        let mut ev = Vec::new();
        crate::decode::decode(line.as_bytes(), &mut ev).unwrap();
        engine.process(&ev[0], &mut out);
    }
    (out, engine)
}

fn journal(dir: &tempfile::TempDir) -> SqliteJournal {
    SqliteJournal::open(&dir.path().join("j.db"), false).unwrap()
}

#[test]
fn a_decision_is_recorded_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = journal(&dir);
    let (ds, _) = decisions();
    let batch = Batch {
        decisions: ds.iter().map(|d| ("t/0", d)).collect(),
        positions: vec![("t/0", 42)],
        inbox: vec![],
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

#[test]
fn open_incidents_come_back_as_the_engine_had_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = journal(&dir);
    let (ds, engine) = decisions();
    j.commit(&Batch {
        decisions: ds.iter().map(|d| ("t/0", d)).collect(),
        ..Batch::default()
    })
    .unwrap();
    let from_engine = engine.open_incidents();
    assert_eq!(from_engine.len(), 1);
    assert_eq!(j.open_incidents("t/0").unwrap(), from_engine);
    assert!(j.open_incidents("t/1").unwrap().is_empty());
    assert_eq!(from_engine[0].severity, Severity::Severe);
}

#[test]
fn resolve_closes_the_incident() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = journal(&dir);
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

#[test]
fn actions_are_claimed_once_and_interrupted_ones_surface() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = journal(&dir);
    let mut b = journal(&dir); // a second process on the same file
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
    let claimed = b.claim_actions("b", &Action::ALL, 10).unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].key, rollback);
    assert_eq!(claimed[0].action, Action::Rollback);
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
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].key, rollback);
    assert_eq!(lost[0].state, ActionState::Unknown);
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

#[test]
fn inbox_keeps_recent_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = journal(&dir);
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

#[test]
fn reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (ds, _) = decisions();
    {
        let mut j = journal(&dir);
        j.commit(&Batch {
            decisions: ds.iter().map(|d| ("t/0", d)).collect(),
            positions: vec![("t/0", 7)],
            ..Batch::default()
        })
        .unwrap();
    }
    let j = journal(&dir);
    assert_eq!(j.position("t/0").unwrap(), Some(7));
    assert_eq!(j.open_incidents("t/0").unwrap().len(), 1);
}

#[test]
fn approvals_release_one_rollback_and_expire_by_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = journal(&dir);
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
    let ApprovalDecided::Approved {
        rollback_key: Some(key),
    } = j
        .decide_approval(inc, Verdict::Approve, "alice", "one host only", Ts(1500))
        .unwrap()
    else {
        panic!("not approved")
    };
    assert_eq!(
        j.decide_approval(inc, Verdict::Reject, "bob", "", Ts(1600))
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
        tl.iter().any(|m| m == "approved by alice: one host only"),
        "{tl:?}"
    );
}

#[test]
fn approval_timeouts_follow_the_tier_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = journal(&dir);
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
        expired[0].rollback_key.is_some(),
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

#[test]
fn withdrawn_when_the_incident_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = journal(&dir);
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
        j.decide_approval(inc, Verdict::Approve, "alice", "", Ts(1400))
            .unwrap(),
        ApprovalDecided::NotWaiting("withdrawn".into())
    );
}

#[test]
fn escalations_are_claimed_stepped_hurried_and_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = journal(&dir);
    let mut b = journal(&dir);
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

#[test]
fn one_lease_holder_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = journal(&dir);
    let mut b = journal(&dir);
    assert!(a.take_lease("digest", "a", Ts(100), Ts(0)).unwrap());
    assert!(!b.take_lease("digest", "b", Ts(200), Ts(50)).unwrap());
    assert!(
        !a.take_lease("digest", "a", Ts(300), Ts(60)).unwrap(),
        "not again before it lapses"
    );
    assert!(b.take_lease("digest", "b", Ts(400), Ts(100)).unwrap());
}

#[test]
fn the_rollback_budget_admits_up_to_its_limits_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = journal(&dir);
    let mut b = journal(&dir); // a second process on the same file
    let (ds, _) = decisions();
    a.commit(&Batch {
        decisions: ds.iter().map(|d| ("t/0", d)).collect(),
        ..Batch::default()
    })
    .unwrap();
    let rollbacks: Vec<String> = a
        .claim_actions("a", &Action::ALL, 100)
        .unwrap()
        .iter()
        .map(|r| {
            a.derive_action(&r.key, Action::Rollback, "approved", "test", Ts(0))
                .unwrap()
                .unwrap()
        })
        .collect();
    assert!(rollbacks.len() >= 3, "{rollbacks:?}");
    let limits = RollbackLimits {
        per_service: 2,
        overall: 10,
    };
    let admit = |j: &mut SqliteJournal, k: &str, since: Ts| {
        let a = j.admit_rollback(k, Some("s"), since, limits).unwrap();
        (a.admitted, a.for_service, a.overall)
    };
    // Each counts the ones admitted before it, whichever process admitted them.
    assert_eq!(admit(&mut a, &rollbacks[0], Ts(0)), (true, 0, 0));
    assert_eq!(admit(&mut b, &rollbacks[1], Ts(0)), (true, 1, 1));
    assert_eq!(admit(&mut a, &rollbacks[2], Ts(0)), (false, 2, 2));
    // A refused one takes no place: still two admitted.
    assert_eq!(admit(&mut b, &rollbacks[2], Ts(0)), (false, 2, 2));
    // Outside the window they no longer count.
    let later = Ts(SystemClock.now().0 + 60_000);
    assert_eq!(admit(&mut a, &rollbacks[2], later), (true, 0, 0));
    // The overall limit binds whatever the service: two admitted in all.
    let tight = RollbackLimits {
        per_service: 10,
        overall: 2,
    };
    let other = b.admit_rollback(&rollbacks[2], Some("other"), Ts(0), tight);
    assert_eq!(
        other
            .map(|a| (a.admitted, a.for_service, a.overall))
            .unwrap(),
        (false, 0, 2)
    );
}

#[test]
fn a_version_1_journal_gains_the_budget_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    {
        let j = SqliteJournal::open(&path, false).unwrap();
        j.conn
            .execute_batch("ALTER TABLE actions DROP COLUMN admitted_at; PRAGMA user_version = 1;")
            .unwrap();
    }
    let mut j = SqliteJournal::open(&path, false).unwrap();
    let version: i64 = j
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let limits = RollbackLimits {
        per_service: 1,
        overall: 1,
    };
    assert!(
        j.admit_rollback("none", None, Ts(0), limits)
            .unwrap()
            .admitted
    );
}

#[test]
fn a_writer_waits_for_another_connections_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = journal(&dir);
    let mut b = journal(&dir);
    let held = a
        .conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    let waiter = std::thread::spawn(move || {
        let start = std::time::Instant::now();
        let limits = RollbackLimits {
            per_service: 1,
            overall: 1,
        };
        b.admit_rollback("k", None, Ts(0), limits)
            .map(|_| start.elapsed())
    });
    std::thread::sleep(std::time::Duration::from_millis(50));
    held.commit().unwrap();
    let waited = waiter.join().unwrap().expect("waits, then writes");
    assert!(waited >= std::time::Duration::from_millis(40), "{waited:?}");
}

/// With checkpoints moved to their thread, commits never copy pages back
/// (the database file does not grow while they run), yet the thread does:
/// the database file takes the pages and the WAL is checkpointed. When the
/// journal is dropped, the thread stops.
#[test]
fn background_checkpoints_move_the_wal_into_the_database_outside_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let db_len = || std::fs::metadata(&path).unwrap().len();
    let (ds, _) = decisions();
    let fill = |j: &mut SqliteJournal, from: i64| {
        for n in from..from + 300 {
            let body = format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(20_000));
            j.commit(&Batch {
                decisions: ds.iter().map(|d| ("t/0", d)).collect(),
                positions: vec![("t/0", n)],
                inbox: vec![body.as_bytes()],
            })
            .unwrap();
        }
    };
    // Checkpoints so rare they never run during the fill: commits alone
    // leave the database file as it was, though the 6 MB written are well
    // past the 1000 pages (4 MB) at which a commit would checkpoint.
    let mut j = SqliteJournal::open(&path, false)
        .unwrap()
        .checkpoint_in_background(Duration::from_secs(3600))
        .unwrap();
    let before = db_len();
    fill(&mut j, 0);
    assert_eq!(db_len(), before, "a commit ran a checkpoint");
    drop(j);
    // Dropping stopped the thread after a last checkpoint: the pages are in.
    let after_drop = db_len();
    assert!(
        after_drop > before + 300 * 20_000,
        "{before} -> {after_drop}"
    );

    // Frequent checkpoints: the pages reach the database while it runs.
    let mut j = SqliteJournal::open(&path, false)
        .unwrap()
        .checkpoint_in_background(Duration::from_millis(10))
        .unwrap();
    fill(&mut j, 1000);
    let deadline = Instant::now() + Duration::from_secs(10);
    while db_len() < after_drop + 300 * 20_000 {
        assert!(Instant::now() < deadline, "no checkpoint in 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A verification is claimed when due, held for its lease (no second claim
/// meanwhile, from this process or another), due again after the lease if
/// nobody finished it (its process died), and gone once finished.
#[test]
fn verifications_are_claimed_when_due_leased_and_finished_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = journal(&dir);
    let mut other = journal(&dir);
    let (ds, _) = decisions();
    j.commit(&Batch {
        decisions: ds.iter().map(|d| ("t/0", d)).collect(),
        ..Batch::default()
    })
    .unwrap();
    let key = j
        .claim_actions("me", &Action::ALL, 1)
        .unwrap()
        .remove(0)
        .key;
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
