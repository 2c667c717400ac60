use std::path::Path;

use super::*;
use crate::config::Errors;
use crate::engine::{Engine, EngineConfig};
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
fn a_version_1_journal_gains_the_budget_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    {
        let j = SqliteJournal::open(&path, false).unwrap();
        j.conn
            .execute_batch(
                "DROP INDEX actions_rollbacks_admitted;
                 ALTER TABLE actions DROP COLUMN admitted_at; PRAGMA user_version = 1;",
            )
            .unwrap();
    }
    let mut j = SqliteJournal::open(&path, false).unwrap();
    let version: i64 = j
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    j.conn
        .execute_batch("SELECT admitted_at FROM actions LIMIT 0")
        .expect("the budget column is back");
    assert!(
        j.claim_partition("t/0", "me").unwrap() >= 1,
        "and the owners table"
    );
}

#[test]
fn a_version_5_journal_gains_the_batch_and_service_columns_and_keeps_its_incidents() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let (ds, _) = decisions();
    {
        let mut j = SqliteJournal::open(&path, false).unwrap();
        j.commit(&Batch {
            decisions: ds.iter().map(|d| ("t/0", d)).collect(),
            ..Batch::default()
        })
        .unwrap();
        j.conn
            .execute_batch(
                "DROP INDEX incidents_open_by_service; ALTER TABLE incidents DROP COLUMN service;
                 ALTER TABLE incidents DROP COLUMN batch; ALTER TABLE decisions DROP COLUMN batch;
                 ALTER TABLE approvals DROP COLUMN scope; PRAGMA user_version = 5;",
            )
            .unwrap();
    }
    let mut j = SqliteJournal::open(&path, false).unwrap();
    let open = j.open_incidents("t/0").unwrap();
    assert!(!open.is_empty(), "the incidents of version 5 read");
    assert!(open.iter().all(|i| i.batch.is_none()));
    assert_eq!(
        j.open_of_service("s", 10).unwrap().total,
        1,
        "the old incident is found by its service"
    );
    assert!(!j.claim_actions("me", &Action::ALL, 100).unwrap().is_empty());
    j.conn
        .execute_batch("SELECT i.batch, d.batch FROM incidents i, decisions d LIMIT 0; SELECT scope FROM approvals LIMIT 0")
        .expect("the batch columns are there");
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
        b.claim_partition("t/0", "b").map(|_| start.elapsed())
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
                tallies: &[],
                progress: &[],
                decisions: ds.iter().map(|d| ("t/0", d)).collect(),
                positions: vec![("t/0", n)],
                inbox: vec![body.as_bytes()],
                epochs: vec![],
                origin: "test",
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

    // Another connection of the same process leaves checkpoints to the
    // pipeline's thread too: its commits never copy the WAL back.
    let mut other = SqliteJournal::open(&path, false)
        .unwrap()
        .without_checkpoints()
        .unwrap();
    let before = db_len();
    fill(&mut other, 500);
    assert_eq!(
        db_len(),
        before,
        "another connection's commit ran a checkpoint"
    );
    drop(other);

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

/// A rollback's own reads go through their indexes, never over every
/// action: the executor lane's claim (SQLite's planner, without
/// statistics, preferred `actions_by_state` and walked every pending
/// message) and the rollback budget's count (it scanned the table). In
/// a storm's journal each was a walk over 100k+ rows per rollback.
#[test]
fn a_rollbacks_claim_and_budget_count_read_through_their_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let j = SqliteJournal::open(&dir.path().join("j.db"), false).unwrap();
    let plan = |sql: &str| -> Vec<String> {
        let mut stmt = j
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
        stmt.query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let claim = plan(&claim_sql(&[Action::Rollback, Action::PauseRollout]));
    assert!(
        claim
            .iter()
            .any(|s| s.contains("USING INDEX actions_pending_by_kind")),
        "{claim:?}"
    );
    let count = plan(ROLLBACKS_ADMITTED_SINCE);
    assert!(
        count
            .iter()
            .any(|s| s.contains("USING INDEX actions_rollbacks_admitted")),
        "{count:?}"
    );
    assert!(
        claim.iter().chain(&count).all(|s| !s.starts_with("SCAN")),
        "{claim:?} {count:?}"
    );
}

/// Every table, index and column of a journal, as SQLite describes them.
fn shape(conn: &Connection) -> Vec<String> {
    let mut out = Vec::new();
    let mut names = conn
        .prepare("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name")
        .unwrap();
    let rows: Vec<(String, String)> = names
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (kind, name) in rows {
        out.push(format!("{kind} {name}"));
        if kind == "table" {
            let mut cols = conn
                .prepare(&format!(
                    "SELECT name, type, \"notnull\", dflt_value FROM pragma_table_info('{name}')"
                ))
                .unwrap();
            let cols: Vec<String> = cols
                .query_map([], |r| {
                    Ok(format!(
                        "  {}.{} {} notnull={} default={:?}",
                        name,
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<String>>(3)?
                    ))
                })
                .unwrap()
                .map(Result::unwrap)
                .collect();
            out.extend(cols);
        }
    }
    out
}

/// A journal written by the ripcord of schema version 8 (a high-tier drill:
/// an incident, its actions, approval, paging and timeline; kept as a SQL
/// dump in tests/fixtures) opens at the newest version with every row, and
/// has the same tables, columns and indexes as a journal made new.
#[test]
fn a_schema_8_journal_upgrades_to_the_shape_of_a_new_one_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("v8.db");
    {
        let conn = Connection::open(&old).unwrap();
        conn.execute_batch(include_str!(
            "../../../tests/fixtures/journal-sqlite-v8.sql"
        ))
        .unwrap();
        // Ripcord 8 made the read indexes at every start; a journal that
        // lacks one still gains it from the step that now makes them.
        conn.execute_batch("DROP INDEX incidents_open_by_urgency")
            .unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, 8);
    }
    let j = SqliteJournal::open(&old, false).unwrap();
    let v: i64 = j
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    let fresh = journal(&dir);
    assert_eq!(shape(&j.conn), shape(&fresh.conn));

    let incidents = j.incidents(None).unwrap();
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    let id = &incidents[0].id;
    assert!(j.timeline(id).unwrap().len() >= 10);
    assert!(!j.actions_of(id).unwrap().is_empty());
    assert!(j.approval(id).unwrap().is_some());
    // Read through the index the upgrade made again.
    let page = j.open_page(&IncidentFilter::default(), 20).unwrap();
    assert_eq!(
        page.total as usize,
        j.incidents(Some("open")).unwrap().len()
    );
    drop(j);
    // Opening again changes nothing.
    let again = SqliteJournal::open(&old, false).unwrap();
    assert_eq!(shape(&again.conn), shape(&fresh.conn));
}

/// Versions 1 to 7 were applied in code; such a journal ends with the
/// shape of a new one too.
#[test]
fn a_version_1_journal_upgrades_to_the_shape_of_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j1.db");
    {
        let j = SqliteJournal::open(&path, false).unwrap();
        j.conn
            .execute_batch(
                "DROP INDEX actions_rollbacks_admitted; DROP INDEX incidents_open_by_service;
                 ALTER TABLE actions DROP COLUMN admitted_at; ALTER TABLE inbox DROP COLUMN origin;
                 DROP INDEX incidents_resolved_by_time; DROP INDEX incidents_open_by_urgency;
                 ALTER TABLE verifications DROP COLUMN stage; DROP TABLE silences;
                 PRAGMA user_version = 1;",
            )
            .unwrap();
    }
    let j = SqliteJournal::open(&path, false).unwrap();
    let fresh = journal(&dir);
    assert_eq!(shape(&j.conn), shape(&fresh.conn));
}
