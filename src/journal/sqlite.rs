//! The journal in an embedded SQLite database (WAL mode).
//!
//! `synchronous=NORMAL` by default: a committed batch survives the process
//! dying (kill -9); `durable: true` (FULL) also survives power loss, at the
//! price of an fsync per batch. Several processes on one host may share the
//! file; writers wait for each other up to the busy timeout.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::rows::{
    HOLD_COLS, SILENCE_COLS, SilenceCols, batch_from, batch_json, hold_from, labels_from,
    labels_json, matchers_json, parse,
};
use super::silences::Silence;
use super::{
    ActionRow, ActionState, Admission, ApprovalDecided, ApprovalOpened, ApprovalRow, Batch,
    EscalationRow, Expired, Gauges, HoldRecord, IncidentFilter, IncidentRow, Ingest, JournalError,
    OpenPage, Reads, RollbackLimits, RolloutRow, SampleRow, SampleStart, SampleState, Silences,
    TIERS_BY_URGENCY, TimelineEntry, UpgradeRow, Verdict, Verdicts, Via, Work,
};
use super::{OpenIncident, Promotion, TallyRow};
use crate::decision::{Action, Decision, IncidentId, Severity, Tier};
use crate::time::{Clock, Dur, SystemClock, Ts};

/// The schema steps, in order: (the version a step brings the journal to,
/// its SQL). Each runs once, in the transaction that sets the version
/// (`PRAGMA user_version`); a new step is a new file here and a line.
const MIGRATIONS: &[(i64, &str)] = &[
    (8, include_str!("../../migrations/sqlite/0008_baseline.sql")),
    (
        9,
        include_str!("../../migrations/sqlite/0009_read_indexes.sql"),
    ),
];

/// The version this ripcord leaves a journal at.
const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Where the steps kept as files begin: a journal at an older version was
/// made by a ripcord that applied its steps in code.
const FIRST_FILE_VERSION: i64 = MIGRATIONS[0].0;

/// The rollbacks the budget admitted since `?2`, other than `?3`, of
/// service `?1` (or all): read through `actions_rollbacks_admitted`. Over
/// every action it was a storm's slowest step before a rollback (two
/// scans of 200k message actions per rollback).
const ROLLBACKS_ADMITTED_SINCE: &str =
    "SELECT count(*) FROM actions a JOIN decisions d ON d.key = a.key
     WHERE a.action = 'rollback' AND a.admitted_at >= ?2 AND a.key != ?3
       AND (?1 IS NULL OR d.service = ?1)";

/// A lane's claim: its oldest pending actions of `kinds`, at most `?3`.
/// `INDEXED BY` because SQLite's planner (no ANALYZE statistics) took
/// `actions_by_state` and walked every pending action, a storm's thousands
/// of pending messages, for each rollback's claim, inside the write lock.
fn claim_sql(kinds: &[Action]) -> String {
    // The kinds as a literal list (the enum's own names: nothing from
    // outside): one cached statement per lane.
    let list = kinds
        .iter()
        .map(|a| format!("'{}'", a.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "UPDATE actions SET state = 'running', owner = ?1, attempts = attempts + 1, started_at = ?2
         WHERE key IN (SELECT key FROM actions INDEXED BY actions_pending_by_kind
             WHERE state = 'pending' AND action IN ({list}) ORDER BY rowid LIMIT ?3)
         RETURNING key"
    )
}

/// Brings the journal to [`SCHEMA_VERSION`]: each step newer than the
/// journal's version, in order, each in its own transaction with the
/// version it sets. Several processes may open one journal at once: the
/// version is read again under the write lock, so a step runs once.
fn migrate(conn: &mut Connection) -> Result<(), JournalError> {
    loop {
        let tx = conn.transaction()?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(JournalError::Corrupt(format!(
                "schema version {version} is newer than this ripcord ({SCHEMA_VERSION})"
            )));
        }
        let Some((to, sql)) = MIGRATIONS.iter().find(|(v, _)| *v > version) else {
            return Ok(());
        };
        if version > 0 && version < FIRST_FILE_VERSION {
            upgrade_before_files(&tx)?;
        } else {
            tx.execute_batch(sql)?;
        }
        tx.pragma_update(None, "user_version", to)?;
        tx.commit()?;
    }
}

/// A journal of versions 1 to 7, whose steps ran in code: the baseline's
/// tables and indexes it lacks (all `IF NOT EXISTS`), then the columns
/// later versions added to its tables.
fn upgrade_before_files(conn: &Connection) -> Result<(), JournalError> {
    conn.execute_batch(MIGRATIONS[0].1)?;
    add_column(conn, "actions", "admitted_at", "INTEGER")?;
    add_column(conn, "inbox", "origin", "TEXT")?;
    add_column(conn, "approvals", "decided_via", "TEXT")?;
    add_column(conn, "incidents", "batch", "TEXT")?;
    add_column(conn, "decisions", "batch", "TEXT")?;
    add_column(conn, "approvals", "scope", "TEXT")?;
    add_column(conn, "incidents", "service", "TEXT")?;
    // Labels are a JSON list of [name, value] pairs.
    conn.execute_batch(
        "UPDATE incidents SET service = (SELECT json_extract(p.value, '$[1]')
             FROM json_each(incidents.labels) p WHERE json_extract(p.value, '$[0]') = 'service')
         WHERE service IS NULL",
    )?;
    add_column(conn, "verifications", "stage", "INTEGER NOT NULL DEFAULT 0")?;
    Ok(())
}

/// `ALTER TABLE … ADD COLUMN` unless the column is there already.
fn add_column(
    conn: &Connection,
    table: &str,
    column: &str,
    decl: &str,
) -> Result<(), JournalError> {
    let has: bool = conn.query_row(
        &format!("SELECT count(*) FROM pragma_table_info('{table}') WHERE name = ?1"),
        [column],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !has {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    Ok(())
}

impl From<rusqlite::Error> for JournalError {
    fn from(e: rusqlite::Error) -> Self {
        // A full disk says so first: it is not a slow journal, and no
        // retry mends it until someone makes room.
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            return JournalError::Storage(format!("the journal's disk is full ({e})"));
        }
        JournalError::Storage(e.to_string())
    }
}

pub struct SqliteJournal {
    conn: Connection,
    /// Whether this connection's writers go first (`Work::prefer_writes`):
    /// read by its busy handler.
    preferred: Arc<std::sync::atomic::AtomicBool>,
    clock: Arc<dyn Clock>,
    path: std::path::PathBuf,
    /// Declared after `conn`: dropped (stopped and joined) after it.
    checkpointer: Option<Checkpointer>,
}

impl SqliteJournal {
    /// Opens (creating if needed) the journal at `path`.
    pub fn open(path: &Path, durable: bool) -> Result<SqliteJournal, JournalError> {
        SqliteJournal::open_with_clock(path, durable, Arc::new(SystemClock))
    }

    pub fn open_with_clock(
        path: &Path,
        durable: bool,
        clock: Arc<dyn Clock>,
    ) -> Result<SqliteJournal, JournalError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| JournalError::Open {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        }
        let mut conn = Connection::open(path).map_err(|e| JournalError::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let preferred = Arc::new(std::sync::atomic::AtomicBool::new(false));
        conn.busy_handler(Some(busy_wait(preferred.clone())))?;
        // Every transaction takes the write lock when it begins. A deferred
        // one that reads, then writes after another connection committed
        // fails at once with "database is locked" (SQLITE_BUSY_SNAPSHOT),
        // which no busy handler waits out.
        conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", if durable { "FULL" } else { "NORMAL" })?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        Ok(SqliteJournal {
            conn,
            preferred,
            clock,
            path: path.to_owned(),
            checkpointer: None,
        })
    }

    /// Takes WAL checkpoints off this connection's commits. SQLite runs a
    /// checkpoint inside whichever commit pushes the WAL past 1000 pages:
    /// it copies pages back into the database and syncs it, milliseconds
    /// on one unlucky commit of the event path. Instead a thread of its own
    /// checkpoints every `every` (PASSIVE: it never blocks a writer and
    /// never waits), so the WAL stays small and commits stay short. The
    /// thread stops when this journal is dropped.
    pub fn checkpoint_in_background(mut self, every: Duration) -> Result<Self, JournalError> {
        let conn = Connection::open(&self.path).map_err(|e| JournalError::Open {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        })?;
        // Without the thread, SQLite keeps checkpointing in commits.
        if let Some(c) = Checkpointer::start(conn, every) {
            self.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
            self.checkpointer = Some(c);
        }
        Ok(self)
    }

    /// For a process's other connections to a file whose pipeline
    /// connection checkpoints in the background
    /// ([`Self::checkpoint_in_background`]): none of their commits
    /// checkpoints either. Left on, the executor lane's commits (a
    /// rollback's claim, admission and outcome) copied a storm's WAL into
    /// the database inside the commit: 15% of that thread's time in the
    /// storm bench, on the path of every rollback.
    pub fn without_checkpoints(self) -> Result<Self, JournalError> {
        self.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        Ok(self)
    }

    fn now(&self) -> i64 {
        self.clock.now().millis()
    }
}

/// The background checkpoint thread of [`SqliteJournal::checkpoint_in_background`].
struct Checkpointer {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(conn: Connection, every: Duration) -> Option<Checkpointer> {
        use std::sync::atomic::Ordering;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("journal-checkpoint".into())
            .spawn(move || {
                let mut failing = false;
                loop {
                    std::thread::park_timeout(every);
                    let last = stopping.load(Ordering::Relaxed);
                    // (busy, WAL frames, frames checkpointed); busy only
                    // means a reader or writer was in the way: next time.
                    let r = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                        row.get::<_, i64>(0)
                    });
                    match r {
                        Ok(_) => failing = false,
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!(error = %e, "journal checkpoint failed; retrying");
                        }
                        Err(_) => {}
                    }
                    if last {
                        return;
                    }
                }
            })
            .map_err(|e| tracing::warn!(error = %e, "no journal checkpoint thread"))
            .ok()?;
        Some(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// How long a write waits for another connection's transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits for another connection's write lock. SQLite's own busy handler
/// sleeps in whole milliseconds (1, 2, 5, 10, ...): a millisecond or more on
/// every commit where the pipeline meets the dispatcher, whose transactions
/// take tens of microseconds. This one polls every 20 µs for the first
/// 2 ms, then backs off, and gives up after [`BUSY_TIMEOUT`].
fn busy_wait(
    preferred: Arc<std::sync::atomic::AtomicBool>,
) -> impl FnMut(i32) -> bool + Send + 'static {
    let mut since = Instant::now();
    move |attempt| {
        if attempt == 0 {
            since = Instant::now();
        }
        if preferred.load(std::sync::atomic::Ordering::Relaxed) {
            PREFERRED_WAITING.store(micros_now(), std::sync::atomic::Ordering::Relaxed);
        }
        let waited = since.elapsed();
        if waited >= BUSY_TIMEOUT {
            return false;
        }
        std::thread::sleep(if waited < Duration::from_millis(2) {
            Duration::from_micros(20)
        } else if waited < Duration::from_millis(100) {
            Duration::from_micros(200)
        } else {
            Duration::from_millis(2)
        });
        true
    }
}

/// When a preferred connection last waited for the write lock (µs on
/// [`micros_now`]'s clock; 0: never). Process-wide: the connections that
/// compete for one database file live in one process.
static PREFERRED_WAITING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A waiter polls at most every 2 ms: seen within this, it still waits.
const PREFERRED_FRESH_MICROS: u64 = 3_000;
/// The longest an ingest commit steps aside for preferred writers.
const YIELD_AT_MOST: Duration = Duration::from_millis(50);

fn micros_now() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64 + 1
}

/// Before an ingest commit takes the write lock: lets a preferred writer
/// that is waiting for it (a rollback's claim) go first, for at most
/// [`YIELD_AT_MOST`].
fn yield_to_preferred_writers() {
    let start = Instant::now();
    while start.elapsed() < YIELD_AT_MOST {
        let last = PREFERRED_WAITING.load(std::sync::atomic::Ordering::Relaxed);
        if last == 0 || micros_now().saturating_sub(last) > PREFERRED_FRESH_MICROS {
            return;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn incident_from(row: &Row<'_>) -> Result<OpenIncident, JournalError> {
    let labels: String = row.get("labels")?;
    let tier: String = row.get("tier")?;
    let severity: String = row.get("severity")?;
    let rule: String = row.get("rule")?;
    Ok(OpenIncident {
        id: IncidentId::from_string(row.get::<_, String>("id")?),
        rule: rule.into(),
        labels: labels_from(&labels)?,
        tier: parse::<Tier>("tier", &tier)?,
        opened: Ts(row.get("opened_at")?),
        severity: parse::<Severity>("severity", &severity)?,
        fired: row.get::<_, i64>("fired")? as u8,
        seq: row.get::<_, i64>("seq")? as u32,
        fingerprint: row
            .get::<_, Option<String>>("fingerprint")?
            .map(String::into_boxed_str),
        batch: batch_from(row.get("batch")?)?,
    })
}

/// An incident with the actions that wait for someone or need a look.
const INCIDENT_ROW: &str = "SELECT i.id, i.rule, i.partition, i.tier, i.severity, i.state, i.opened_at, i.resolved_at, i.labels,
        (SELECT group_concat(a.action || ':' || a.state, ',') FROM actions a
          WHERE a.incident_id = i.id AND a.state IN ('awaiting_approval', 'approved', 'unknown', 'failed', 'running', 'pending')),
        i.batch
     FROM incidents i";

fn incident_row(r: &Row<'_>) -> Result<IncidentRow, JournalError> {
    let labels: String = r.get(8)?;
    let pairs = labels_from(&labels)?;
    let obj: serde_json::Map<String, serde_json::Value> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(&**v)))
        .collect();
    let attention: Option<String> = r.get(9)?;
    Ok(IncidentRow {
        id: r.get(0)?,
        rule: r.get(1)?,
        partition: r.get(2)?,
        tier: r.get(3)?,
        severity: r.get(4)?,
        state: r.get(5)?,
        opened_at: Ts(r.get(6)?),
        resolved_at: r.get::<_, Option<i64>>(7)?.map(Ts),
        labels: serde_json::Value::Object(obj),
        attention: attention
            .map(|s| s.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
        batch: batch_from(r.get(10)?)?,
    })
}

const ACTION_COLUMNS: &str =
    "a.key, a.incident_id, a.action, a.state, a.attempts, a.owner, a.detail,
     d.seq, d.at, d.tier, d.severity, d.rule, d.labels, d.value, d.threshold, d.baseline,
     d.fingerprint, d.message, d.escalated_from, a.started_at, a.finished_at, d.batch";

fn action_from(row: &Row<'_>) -> Result<ActionRow, JournalError> {
    let key: String = row.get(0)?;
    let incident: Option<String> = row.get(1)?;
    let action: String = row.get(2)?;
    let state: String = row.get(3)?;
    let action = parse::<Action>("action", &action)?;
    let labels: String = row.get(12)?;
    let decision = Decision {
        at: Ts(row.get(8)?),
        action,
        tier: parse("tier", &row.get::<_, String>(9)?)?,
        severity: parse("severity", &row.get::<_, String>(10)?)?,
        rule: row.get::<_, String>(11)?.into(),
        incident: incident.clone().map(IncidentId::from_string),
        labels: labels_from(&labels)?,
        value: row.get(13)?,
        threshold: row.get(14)?,
        baseline: row.get(15)?,
        message: row.get(17)?,
        key: key.clone(),
        seq: row.get::<_, i64>(7)? as u32,
        fingerprint: row
            .get::<_, Option<String>>(16)?
            .map(String::into_boxed_str),
        escalated_from: match row.get::<_, Option<String>>(18)? {
            Some(s) => Some(parse::<Severity>("severity", &s)?),
            None => None,
        },
        evidence: Default::default(),
        batch: batch_from(row.get(21)?)?,
    };
    Ok(ActionRow {
        key,
        incident,
        action,
        state: ActionState::parse(&state)
            .ok_or_else(|| JournalError::Corrupt(format!("action state {state:?}")))?,
        attempts: row.get::<_, i64>(4)? as u32,
        owner: row.get(5)?,
        detail: row.get(6)?,
        started_at: row.get::<_, Option<i64>>(19)?.map(Ts),
        finished_at: row.get::<_, Option<i64>>(20)?.map(Ts),
        decision,
    })
}

/// The actions (with their decisions) of `keys`, in that order.
fn actions_by_key(conn: &Connection, keys: &[String]) -> Result<Vec<ActionRow>, JournalError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ACTION_COLUMNS} FROM actions a JOIN decisions d ON d.key = a.key WHERE a.key = ?1"
    ))?;
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        out.extend(collect(&mut stmt, [k], action_from)?);
    }
    Ok(out)
}

fn collect<T>(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
    f: impl Fn(&Row<'_>) -> Result<T, JournalError>,
) -> Result<Vec<T>, JournalError> {
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(f(r)?);
    }
    Ok(out)
}

impl Ingest for SqliteJournal {
    fn commit(&mut self, batch: &Batch<'_>) -> Result<Vec<bool>, JournalError> {
        let now = self.now();
        yield_to_preferred_writers();
        let tx = self.conn.transaction()?;
        for (partition, epoch) in &batch.epochs {
            let current: Option<i64> = tx
                .query_row(
                    "SELECT epoch FROM partition_owners WHERE partition = ?1",
                    [partition],
                    |r| r.get(0),
                )
                .optional()?;
            if current != Some(*epoch) {
                return Err(JournalError::Fenced {
                    partition: Some(partition.to_string()),
                    reason: format!(
                        "partition {partition} is owned by another process now (epoch {} > {epoch})",
                        current.unwrap_or(-1)
                    ),
                });
            }
        }
        let mut fresh = Vec::with_capacity(batch.decisions.len());
        {
            let mut insert_decision = tx.prepare_cached(
                "INSERT OR IGNORE INTO decisions (key, incident_id, seq, at, action, tier, severity, rule,
                     labels, value, threshold, baseline, fingerprint, message, partition, recorded_at,
                     escalated_from, service, batch)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
            )?;
            let mut upsert_incident = tx.prepare_cached(
                "INSERT INTO incidents (id, rule, partition, labels, tier, severity, severity_rank, opened_at,
                     state, resolved_at, fingerprint, seq, fired, updated_at, batch, service)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
                 ON CONFLICT(id) DO UPDATE SET
                     batch = CASE WHEN excluded.seq >= seq THEN coalesce(excluded.batch, batch) ELSE batch END,
                     severity = CASE WHEN excluded.severity_rank > severity_rank THEN excluded.severity ELSE severity END,
                     severity_rank = max(severity_rank, excluded.severity_rank),
                     seq = max(seq, excluded.seq),
                     fired = fired | excluded.fired,
                     state = CASE WHEN excluded.state = 'resolved' THEN 'resolved' ELSE state END,
                     resolved_at = coalesce(excluded.resolved_at, resolved_at),
                     updated_at = excluded.updated_at",
            )?;
            let mut insert_action = tx.prepare_cached(
                "INSERT INTO actions (key, incident_id, action, state, created_at) VALUES (?1, ?2, ?3, 'pending', ?4)",
            )?;
            let mut insert_timeline = tx.prepare_cached(
                "INSERT INTO timeline (incident_id, at, kind, message) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (partition, d) in &batch.decisions {
                let labels = labels_json(&d.labels);
                let incident = d.incident.as_ref().map(IncidentId::as_str);
                let inserted = insert_decision.execute(params![
                    d.key,
                    incident,
                    d.seq,
                    d.at.millis(),
                    d.action.as_str(),
                    d.tier.as_str(),
                    d.severity.as_str(),
                    &*d.rule,
                    labels,
                    d.value.filter(|v| v.is_finite()),
                    d.threshold.filter(|v| v.is_finite()),
                    d.baseline.filter(|v| v.is_finite()),
                    d.fingerprint.as_deref(),
                    d.message,
                    partition,
                    now,
                    d.escalated_from.map(Severity::as_str),
                    d.label("service"),
                    batch_json(d.batch.as_ref()),
                ])? == 1;
                fresh.push(inserted);
                if !inserted {
                    continue;
                }
                if let Some(id) = incident {
                    let resolved = d.action == Action::Resolve;
                    upsert_incident.execute(params![
                        id,
                        &*d.rule,
                        partition,
                        labels,
                        d.tier.as_str(),
                        d.severity.as_str(),
                        d.severity as i64,
                        d.at.millis(),
                        if resolved { "resolved" } else { "open" },
                        resolved.then_some(d.at.millis()),
                        d.fingerprint.as_deref(),
                        d.seq + 1,
                        i64::from(d.action.bit()),
                        now,
                        batch_json(d.batch.as_ref()),
                        d.label("service"),
                    ])?;
                    insert_timeline.execute(params![
                        id,
                        d.at.millis(),
                        "decision",
                        format!("{}: {}", d.action, d.message)
                    ])?;
                }
                insert_action.execute(params![d.key, incident, d.action.as_str(), now])?;
            }
            let mut set_position = tx.prepare_cached(
                "INSERT INTO positions (partition, next_offset, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(partition) DO UPDATE SET next_offset = excluded.next_offset, updated_at = excluded.updated_at",
            )?;
            for (partition, next) in &batch.positions {
                set_position.execute(params![partition, next, now])?;
            }
            let mut insert_inbox = tx.prepare_cached(
                "INSERT INTO inbox (received_at, body, origin) VALUES (?1, ?2, ?3)",
            )?;
            for body in &batch.inbox {
                insert_inbox.execute(params![now, body, batch.origin])?;
            }
            let mut add_tally = tx.prepare_cached(
                "INSERT INTO gate_tally (service, batch, minute, samples, total, low, tier)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(service, batch, minute) DO UPDATE SET samples = samples + excluded.samples,
                     total = total + excluded.total, low = min(low, excluded.low), tier = excluded.tier",
            )?;
            let mut upsert_upgrade = tx.prepare_cached(
                "INSERT INTO upgrades (service, batch, stage, done, total, message, updated_at, open)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(service) DO UPDATE SET batch = excluded.batch, stage = excluded.stage, done = excluded.done,
                     total = excluded.total, message = excluded.message, updated_at = excluded.updated_at, open = excluded.open
                 WHERE excluded.updated_at >= updated_at",
            )?;
            let mut end_silences = tx.prepare_cached(super::END_UNTIL_BATCH_SQLITE)?;
            let mut log_progress = tx.prepare_cached(
                "INSERT INTO progress_log (service, batch, stage, done, total, message, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut add_evidence = tx.prepare_cached(
                "INSERT INTO evidence (incident_id, at, points) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
            )?;
            for (incident, at, points) in super::evidence_of(batch) {
                add_evidence.execute(params![incident, at.millis(), points])?;
            }
            for p in batch.progress {
                log_progress.execute(params![
                    p.service,
                    p.batch,
                    p.stage,
                    p.done.map(|d| d as i64),
                    p.total.map(|t| t as i64),
                    p.message,
                    p.updated_at.millis()
                ])?;
                if let Some((service, batch_name)) = super::ends_until_batch(p) {
                    end_silences.execute(params![p.updated_at.millis(), service, batch_name])?;
                }
                upsert_upgrade.execute(params![
                    p.service,
                    p.batch,
                    p.stage,
                    p.done.map(|d| d as i64),
                    p.total.map(|t| t as i64),
                    p.message,
                    p.updated_at.millis(),
                    p.open
                ])?;
            }
            for t in batch.tallies {
                add_tally.execute(params![
                    t.service,
                    t.batch,
                    t.minute.millis(),
                    t.samples as i64,
                    t.sum,
                    t.low,
                    t.tier.as_str()
                ])?;
            }
        }
        tx.commit()?;
        Ok(fresh)
    }

    fn position(&self, partition: &str) -> Result<Option<i64>, JournalError> {
        Ok(self
            .conn
            .query_row(
                "SELECT next_offset FROM positions WHERE partition = ?1",
                [partition],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn open_incidents(&self, partition: &str) -> Result<Vec<OpenIncident>, JournalError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT * FROM incidents WHERE partition = ?1 AND state = 'open' ORDER BY opened_at, id")?;
        collect(&mut stmt, [partition], incident_from)
    }

    fn resolved_since(
        &self,
        partition: &str,
        since: Ts,
    ) -> Result<Vec<(OpenIncident, Ts)>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT * FROM incidents WHERE partition = ?1 AND state = 'resolved' AND resolved_at >= ?2 ORDER BY opened_at, id",
        )?;
        collect(&mut stmt, params![partition, since.millis()], |r| {
            Ok((incident_from(r)?, Ts(r.get("resolved_at")?)))
        })
    }

    fn inbox_since(&self, since: Ts) -> Result<Vec<Vec<u8>>, JournalError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT body FROM inbox WHERE received_at >= ?1 ORDER BY seq")?;
        collect(&mut stmt, [since.millis()], |r| Ok(r.get::<_, Vec<u8>>(0)?))
    }

    fn claim_partition(&mut self, partition: &str, owner: &str) -> Result<i64, JournalError> {
        let now = self.now();
        Ok(self.conn.query_row(
            "INSERT INTO partition_owners (partition, owner, epoch, claimed_at) VALUES (?1, ?2, 1, ?3)
             ON CONFLICT(partition) DO UPDATE SET owner = excluded.owner, epoch = epoch + 1,
                 claimed_at = excluded.claimed_at
             RETURNING epoch",
            params![partition, owner, now],
            |r| r.get(0),
        )?)
    }

    fn inbox_after(
        &self,
        after: i64,
        not_from: &str,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<u8>)>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, body FROM inbox WHERE seq > ?1 AND origin IS NOT ?2 ORDER BY seq LIMIT ?3",
        )?;
        collect(&mut stmt, params![after, not_from, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
    }

    fn inbox_last(&self) -> Result<i64, JournalError> {
        Ok(self
            .conn
            .query_row("SELECT coalesce(max(seq), 0) FROM inbox", [], |r| r.get(0))?)
    }

    fn prune_inbox(&mut self, before: Ts) -> Result<usize, JournalError> {
        Ok(self.conn.execute(
            "DELETE FROM inbox WHERE received_at < ?1",
            [before.millis()],
        )?)
    }

    fn prune_tally(&mut self, before: Ts) -> Result<usize, JournalError> {
        // Progress history goes with it, after its own (longer) retention.
        let history = self.now() - super::PROGRESS_RETENTION.millis();
        self.conn
            .execute("DELETE FROM progress_log WHERE at < ?1", [history])?;
        Ok(self.conn.execute(
            "DELETE FROM gate_tally WHERE minute < ?1",
            [before.millis()],
        )?)
    }
}

impl Work for SqliteJournal {
    fn prefer_writes(&mut self) {
        self.preferred
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn claim_actions(
        &mut self,
        owner: &str,
        kinds: &[Action],
        limit: usize,
    ) -> Result<Vec<ActionRow>, JournalError> {
        let now = self.now();
        let tx = self.conn.transaction()?;
        let keys: Vec<String> = {
            let mut stmt = tx.prepare_cached(&claim_sql(kinds))?;
            collect(&mut stmt, params![owner, now, limit as i64], |r| {
                Ok(r.get::<_, String>(0)?)
            })?
        };
        let mut out = actions_by_key(&tx, &keys)?;
        tx.commit()?;
        out.sort_by_key(|a| (a.decision.at, a.decision.seq));
        Ok(out)
    }

    fn schedule_verification(&mut self, key: &str, due: Ts) -> Result<(), JournalError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO verifications (key, due_at) VALUES (?1, ?2)",
            params![key, due.millis()],
        )?;
        Ok(())
    }

    fn claim_verifications(
        &mut self,
        now: Ts,
        lease: Dur,
        limit: usize,
    ) -> Result<Vec<ActionRow>, JournalError> {
        let tx = self.conn.transaction()?;
        let keys: Vec<String> = {
            let mut stmt = tx.prepare_cached(
                "UPDATE verifications SET due_at = ?2
                 WHERE key IN (SELECT key FROM verifications WHERE due_at <= ?1 ORDER BY due_at LIMIT ?3)
                 RETURNING key",
            )?;
            collect(
                &mut stmt,
                params![
                    now.millis(),
                    now.saturating_add(lease).millis(),
                    limit as i64
                ],
                |r| Ok(r.get::<_, String>(0)?),
            )?
        };
        let out = actions_by_key(&tx, &keys)?;
        tx.commit()?;
        Ok(out)
    }

    fn verification_stage(&mut self, key: &str) -> Result<Option<u32>, JournalError> {
        let stage = self
            .conn
            .query_row(
                "SELECT stage FROM verifications WHERE key = ?1",
                [key],
                |r| r.get::<_, i64>(0),
            )
            .optional()?;
        Ok(stage.map(|s| s as u32))
    }

    fn pass_verification_stage(
        &mut self,
        key: &str,
        stage: u32,
        held_until: Ts,
    ) -> Result<(), JournalError> {
        self.conn.execute(
            "UPDATE verifications SET stage = max(stage, ?2), due_at = ?3 WHERE key = ?1",
            params![key, i64::from(stage) + 1, held_until.millis()],
        )?;
        Ok(())
    }

    fn finish_verification(&mut self, key: &str) -> Result<(), JournalError> {
        self.conn
            .execute("DELETE FROM verifications WHERE key = ?1", [key])?;
        Ok(())
    }

    fn start_sample_check(&mut self, c: &SampleStart<'_>) -> Result<bool, JournalError> {
        let tx = self.conn.transaction()?;
        let started = tx
            .query_row(
                "SELECT 1 FROM sample_checks WHERE service = ?1 AND batch = ?2 AND done_at = ?3 LIMIT 1",
                params![c.service, c.batch, c.done_at.millis()],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        let labels: Option<String> = tx
            .query_row(
                "SELECT labels FROM decisions WHERE key = ?1",
                [c.from_key],
                |r| r.get(0),
            )
            .optional()?;
        let (false, Some(labels)) = (started, labels) else {
            return Ok(false);
        };
        let base = labels_from(&labels)?;
        for instance in c.instances {
            let key = super::sample_key(c.from_key, instance);
            let labels = labels_json(&super::rows::with_instance(&base, instance));
            let message = format!("sample check of {instance}");
            tx.execute(
                "INSERT INTO decisions (key, incident_id, seq, at, action, tier, severity, rule, labels,
                     value, threshold, baseline, fingerprint, message, partition, recorded_at, escalated_from, service, batch)
                 SELECT ?1, incident_id, seq, at, 'notify', tier, severity, rule, ?2, value, threshold, baseline,
                     fingerprint, ?3, partition, ?4, NULL, service, NULL FROM decisions WHERE key = ?5",
                params![key, labels, message, c.now.millis(), c.from_key],
            )?;
            tx.execute(
                "INSERT INTO actions (key, incident_id, action, state, created_at, finished_at)
                 VALUES (?1, NULL, 'notify', 'done', ?2, ?2)",
                params![key, c.now.millis()],
            )?;
            tx.execute(
                "INSERT INTO verifications (key, due_at) VALUES (?1, ?2)",
                params![key, c.due.millis()],
            )?;
            tx.execute(
                "INSERT INTO sample_checks (service, batch, done_at, instance, key, state, of, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7)",
                params![
                    c.service,
                    c.batch,
                    c.done_at.millis(),
                    instance,
                    key,
                    c.of,
                    c.now.millis()
                ],
            )?;
        }
        tx.commit()?;
        Ok(true)
    }

    fn sample_result(
        &mut self,
        key: &str,
        state: SampleState,
        detail: &str,
        at: Ts,
    ) -> Result<(), JournalError> {
        self.conn.execute(
            "UPDATE sample_checks SET state = ?2, detail = ?3, updated_at = ?4
             WHERE key = ?1 AND state = 'running'",
            params![key, state.as_str(), detail, at.millis()],
        )?;
        Ok(())
    }

    fn set_action(
        &mut self,
        key: &str,
        state: ActionState,
        detail: &str,
    ) -> Result<(), JournalError> {
        let now = self.now();
        let tx = self.conn.transaction()?;
        set_action_in(&tx, key, state, detail, now, false)?;
        tx.commit()?;
        Ok(())
    }

    fn heartbeat(&mut self, owner: &str) -> Result<(), JournalError> {
        let now = self.now();
        self.conn.execute(
            "INSERT INTO owners (owner, seen_at) VALUES (?1, ?2)
             ON CONFLICT(owner) DO UPDATE SET seen_at = excluded.seen_at",
            params![owner, now],
        )?;
        Ok(())
    }

    fn reap(&mut self, stale: crate::time::Dur) -> Result<Vec<ActionRow>, JournalError> {
        let alive_since = self.now() - stale.millis();
        // Messages and approval requests are safe to run again: a duplicate
        // chat post beats a lost page. They go back to pending.
        self.conn.execute(
            &format!(
                "UPDATE actions SET state = 'pending', owner = NULL
                 WHERE state = 'running' AND action NOT IN ({})
                   AND owner NOT IN (SELECT owner FROM owners WHERE seen_at >= ?1)",
                super::never_rerun_kinds()
            ),
            [alive_since],
        )?;
        // Rollbacks, pauses and traffic switches are not: they may have
        // half happened.
        let keys: Vec<String> = {
            let mut stmt = self.conn.prepare_cached(
                "UPDATE actions SET state = 'unknown',
                     detail = 'ripcord stopped while this action ran; it may or may not have taken effect'
                 WHERE state = 'running'
                   AND owner NOT IN (SELECT owner FROM owners WHERE seen_at >= ?1)
                 RETURNING key",
            )?;
            collect(&mut stmt, [alive_since], |r| Ok(r.get::<_, String>(0)?))?
        };
        self.conn.execute(
            "DELETE FROM owners WHERE seen_at < ?1",
            [alive_since - 86_400_000],
        )?;
        let mut out = Vec::new();
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ACTION_COLUMNS} FROM actions a JOIN decisions d ON d.key = a.key WHERE a.key = ?1"
        ))?;
        for k in &keys {
            out.extend(collect(&mut stmt, [k], action_from)?);
        }
        drop(stmt);
        let now = self.now();
        for a in &out {
            if let Some(inc) = &a.incident {
                self.conn.execute(
                    "INSERT INTO timeline (incident_id, at, kind, message) VALUES (?1, ?2, 'action', ?3)",
                    params![inc, now, format!("{} unknown: ripcord stopped while it ran; check by hand", a.action)],
                )?;
            }
        }
        Ok(out)
    }

    fn add_timeline(
        &mut self,
        incident: &IncidentId,
        at: Ts,
        kind: &str,
        message: &str,
    ) -> Result<(), JournalError> {
        self.conn.execute(
            "INSERT INTO timeline (incident_id, at, kind, message) VALUES (?1, ?2, ?3, ?4)",
            params![incident.as_str(), at.millis(), kind, message],
        )?;
        Ok(())
    }

    fn expire_approvals(
        &mut self,
        now: Ts,
        rollback_tiers: &[Tier],
    ) -> Result<Vec<Expired>, JournalError> {
        let wall = self.now();
        let tx = self.conn.transaction()?;
        let expired: Vec<(String, String, String)> = {
            let mut stmt = tx.prepare_cached(
                "UPDATE approvals SET state = 'expired', decided_at = ?1
                 WHERE state = 'awaiting' AND expires_at <= ?1
                 RETURNING incident_id, request_key, tier",
            )?;
            collect(&mut stmt, [now.millis()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
        };
        let mut out = Vec::with_capacity(expired.len());
        for (incident, request_key, tier) in expired {
            let tier = parse::<Tier>("tier", &tier)?;
            tx.execute(
                "UPDATE actions SET state = 'expired', detail = 'nobody decided in time', finished_at = ?2 WHERE key = ?1",
                params![request_key, wall],
            )?;
            let rollback_keys = if rollback_tiers.contains(&tier) {
                timeline(
                    &tx,
                    &incident,
                    now,
                    "approval",
                    "approval timed out: rolling back, as the tier's policy says",
                )?;
                let message = "approval timed out; rolling back per policy";
                match timeout_targets(&tx, &incident)? {
                    Some(instances) => {
                        derive_each(&tx, &request_key, "timeout", &instances, message, now, wall)?
                    }
                    None => derive(
                        &tx,
                        &request_key,
                        Action::Rollback,
                        "timeout",
                        message,
                        now,
                        wall,
                    )?
                    .into_iter()
                    .collect(),
                }
            } else {
                timeline(
                    &tx,
                    &incident,
                    now,
                    "approval",
                    "approval timed out: escalating",
                )?;
                Vec::new()
            };
            out.push(Expired {
                incident,
                request_key,
                tier,
                rollback_keys,
            });
        }
        tx.commit()?;
        Ok(out)
    }

    fn derive_action(
        &mut self,
        from_key: &str,
        action: Action,
        suffix: &str,
        message: &str,
        at: Ts,
    ) -> Result<Option<String>, JournalError> {
        let now = self.now();
        let tx = self.conn.transaction()?;
        let key = derive(&tx, from_key, action, suffix, message, at, now)?;
        tx.commit()?;
        Ok(key)
    }

    fn derive_rollbacks(
        &mut self,
        from_key: &str,
        suffix: &str,
        instances: &[String],
        message: &str,
        at: Ts,
    ) -> Result<Vec<String>, JournalError> {
        let now = self.now();
        let tx = self.conn.transaction()?;
        let keys = derive_each(&tx, from_key, suffix, instances, message, at, now)?;
        tx.commit()?;
        Ok(keys)
    }

    fn start_escalation(
        &mut self,
        incident: &str,
        tier: Tier,
        at: Ts,
        first: Ts,
    ) -> Result<bool, JournalError> {
        let tx = self.conn.transaction()?;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO escalations (incident_id, tier, step, started_at, next_at, state)
             VALUES (?1, ?2, 0, ?3, ?4, 'active')",
            params![incident, tier.as_str(), at.millis(), first.millis()],
        )? == 1;
        if inserted {
            timeline(&tx, incident, at, "page", "paging started")?;
        }
        tx.commit()?;
        Ok(inserted)
    }

    fn claim_escalations(
        &mut self,
        now: Ts,
        hold: crate::time::Dur,
    ) -> Result<Vec<EscalationRow>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE escalations SET claimed_until = ?2
             WHERE state = 'active' AND next_at IS NOT NULL AND next_at <= ?1
               AND (claimed_until IS NULL OR claimed_until <= ?1)
             RETURNING *",
        )?;
        collect(
            &mut stmt,
            params![now.millis(), now.millis() + hold.millis()],
            escalation_row,
        )
    }

    fn escalation_step_done(
        &mut self,
        incident: &str,
        step: u32,
        next: Option<Ts>,
    ) -> Result<(), JournalError> {
        self.conn.execute(
            "UPDATE escalations SET step = ?2 + 1, next_at = ?3, claimed_until = NULL,
                 state = CASE WHEN ?3 IS NULL AND state = 'active' THEN 'exhausted' ELSE state END
             WHERE incident_id = ?1 AND step = ?2",
            params![incident, step, next.map(Ts::millis)],
        )?;
        Ok(())
    }

    fn hurry_escalation(&mut self, incident: &str, now: Ts) -> Result<bool, JournalError> {
        Ok(self.conn.execute(
            "UPDATE escalations SET next_at = min(coalesce(next_at, ?2), ?2)
             WHERE incident_id = ?1 AND state = 'active' AND next_at IS NOT NULL",
            params![incident, now.millis()],
        )? == 1)
    }

    fn admit_rollback(
        &mut self,
        key: &str,
        owner: &str,
        service: Option<&str>,
        since: Ts,
        limits: RollbackLimits,
    ) -> Result<Admission, JournalError> {
        let now = self.now();
        // IMMEDIATE: the write lock is taken before counting, so two
        // processes sharing the file cannot both count the same total.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let held: Option<(String, Option<String>)> = tx
            .query_row(
                "SELECT state, owner FROM actions WHERE key = ?1",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if !matches!(&held, Some((state, Some(o))) if state == "running" && o == owner) {
            return Err(JournalError::Fenced {
                partition: None,
                reason: format!("the claim on {key} is no longer {owner}'s ({held:?})"),
            });
        }
        let count = |service: Option<&str>| -> rusqlite::Result<u32> {
            tx.query_row(
                ROLLBACKS_ADMITTED_SINCE,
                params![service, since.millis(), key],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u32)
        };
        let (for_service, overall) = (count(service)?, count(None)?);
        let admitted = for_service < limits.per_service && overall < limits.overall;
        if admitted {
            tx.execute(
                "UPDATE actions SET admitted_at = ?2 WHERE key = ?1",
                params![key, now],
            )?;
        }
        tx.commit()?;
        Ok(Admission {
            admitted,
            for_service,
            overall,
        })
    }

    fn set_rollout(
        &mut self,
        service: &str,
        paused: bool,
        by: &str,
        incident: Option<&str>,
        at: Ts,
    ) -> Result<(), JournalError> {
        self.conn.execute(
            "INSERT INTO rollouts (service, paused, changed_at, changed_by, incident_id) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(service) DO UPDATE SET paused = excluded.paused, changed_at = excluded.changed_at,
                 changed_by = excluded.changed_by, incident_id = coalesce(excluded.incident_id, incident_id)",
            params![service, paused, at.millis(), by, incident],
        )?;
        Ok(())
    }

    fn take_lease(
        &mut self,
        name: &str,
        holder: &str,
        until: Ts,
        now: Ts,
    ) -> Result<bool, JournalError> {
        Ok(self.conn.execute(
            "INSERT INTO leases (name, holder, until_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, until_at = excluded.until_at
             WHERE leases.until_at <= ?4",
            params![name, holder, until.millis(), now.millis()],
        )? == 1)
    }
}

impl Verdicts for SqliteJournal {
    fn open_approval(
        &mut self,
        incident: &str,
        request_key: &str,
        tier: Tier,
        at: Ts,
        expires: Ts,
    ) -> Result<ApprovalOpened, JournalError> {
        let tx = self.conn.transaction()?;
        let state: Option<String> = tx
            .query_row(
                "SELECT state FROM incidents WHERE id = ?1",
                [incident],
                |r| r.get(0),
            )
            .optional()?;
        if state.as_deref() == Some("resolved") {
            return Ok(ApprovalOpened::IncidentOver);
        }
        // A new request of a batch incident (members joined after the
        // first was decided) reopens it; the same request again is a
        // redelivery and changes nothing.
        let inserted = tx.execute(
            "INSERT INTO approvals (incident_id, request_key, tier, state, requested_at, expires_at)
             VALUES (?1, ?2, ?3, 'awaiting', ?4, ?5)
             ON CONFLICT(incident_id) DO UPDATE SET request_key = excluded.request_key,
                 state = 'awaiting', requested_at = excluded.requested_at, expires_at = excluded.expires_at,
                 decided_by = NULL, decided_at = NULL, note = NULL, decided_via = NULL, scope = NULL
             WHERE approvals.state <> 'awaiting' AND approvals.request_key <> excluded.request_key",
            params![incident, request_key, tier.as_str(), at.millis(), expires.millis()],
        )? == 1;
        if inserted {
            timeline(
                &tx,
                incident,
                at,
                "approval",
                &format!(
                    "approval requested; expires at {}",
                    crate::time::clock_words(at, expires)
                ),
            )?;
        }
        tx.commit()?;
        Ok(if inserted {
            ApprovalOpened::Opened
        } else {
            ApprovalOpened::AlreadyOpen
        })
    }

    fn decide_approval(
        &mut self,
        incident: &str,
        verdict: Verdict,
        by: &str,
        note: &str,
        via: Via,
        at: Ts,
        scope: Option<&super::ApprovedScope>,
    ) -> Result<ApprovalDecided, JournalError> {
        let now = self.now();
        let tx = self.conn.transaction()?;
        let row: Option<(String, String)> = tx
            .query_row(
                "SELECT state, request_key FROM approvals WHERE incident_id = ?1",
                [incident],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((state, request_key)) = row else {
            return Ok(ApprovalDecided::NoSuchApproval);
        };
        if state != "awaiting" {
            return Ok(ApprovalDecided::NotWaiting(state));
        }
        let (new_state, action_state, word) = match verdict {
            Verdict::Approve => ("approved", ActionState::Approved, "approved"),
            Verdict::Reject => ("rejected", ActionState::Rejected, "rejected"),
        };
        let scope = scope.filter(|_| verdict == Verdict::Approve);
        tx.execute(
            "UPDATE approvals SET state = ?2, decided_by = ?3, decided_at = ?4, note = ?5, decided_via = ?6, scope = ?7
             WHERE incident_id = ?1 AND state = 'awaiting'",
            params![incident, new_state, by, at.millis(), note, via.as_str(), scope.map(|s| s.json())],
        )?;
        tx.execute(
            "UPDATE actions SET state = ?2, detail = ?3, finished_at = ?4 WHERE key = ?1",
            params![
                request_key,
                action_state.as_str(),
                format!("{word} by {by}"),
                now
            ],
        )?;
        let note_text = if note.is_empty() {
            String::new()
        } else {
            format!(": {note}")
        };
        let scope_text = scope
            .map(|s| format!("; {}", s.describe()))
            .unwrap_or_default();
        timeline(
            &tx,
            incident,
            at,
            "approval",
            &format!("{word} by {by} via {}{note_text}{scope_text}", via.as_str()),
        )?;
        let message = format!("rollback approved by {by}{note_text}");
        let result = match verdict {
            Verdict::Approve => ApprovalDecided::Approved {
                rollback_keys: match scope {
                    Some(s) => derive_each(
                        &tx,
                        &request_key,
                        "approved",
                        &s.instances,
                        &message,
                        at,
                        now,
                    )?,
                    None => derive(
                        &tx,
                        &request_key,
                        Action::Rollback,
                        "approved",
                        &message,
                        at,
                        now,
                    )?
                    .into_iter()
                    .collect(),
                },
                request_key,
            },
            Verdict::Reject => ApprovalDecided::Rejected,
        };
        tx.commit()?;
        Ok(result)
    }

    fn withdraw_approval(
        &mut self,
        incident: &str,
        reason: &str,
        at: Ts,
    ) -> Result<bool, JournalError> {
        let now = self.now();
        let tx = self.conn.transaction()?;
        let key: Option<String> = tx
            .query_row(
                "UPDATE approvals SET state = 'withdrawn', decided_at = ?2, note = ?3
                 WHERE incident_id = ?1 AND state = 'awaiting' RETURNING request_key",
                params![incident, at.millis(), reason],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(k) = &key {
            tx.execute(
                "UPDATE actions SET state = 'withdrawn', detail = ?2, finished_at = ?3 WHERE key = ?1",
                params![k, reason, now],
            )?;
            timeline(
                &tx,
                incident,
                at,
                "approval",
                &format!("approval request withdrawn: {reason}"),
            )?;
        }
        tx.commit()?;
        Ok(key.is_some())
    }

    fn promote(&mut self, p: &Promotion) -> Result<(), JournalError> {
        self.conn.execute(
            "INSERT INTO promotions (service, batch, revision, by, note, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![p.service, p.batch, p.revision, p.by, p.note, p.at.millis()],
        )?;
        Ok(())
    }

    fn stop_escalation(
        &mut self,
        incident: &str,
        state: &str,
        by: Option<&str>,
        at: Ts,
    ) -> Result<bool, JournalError> {
        let tx = self.conn.transaction()?;
        let stopped = tx.execute(
            "UPDATE escalations SET state = ?2, next_at = NULL, acked_by = coalesce(?3, acked_by),
                 acked_at = CASE WHEN ?3 IS NULL THEN acked_at ELSE ?4 END
             WHERE incident_id = ?1 AND state IN ('active', 'exhausted')",
            params![incident, state, by, at.millis()],
        )? == 1;
        if stopped {
            let who = by.map(|b| format!(" by {b}")).unwrap_or_default();
            timeline(
                &tx,
                incident,
                at,
                "page",
                &format!("paging stopped: {state}{who}"),
            )?;
        }
        tx.commit()?;
        Ok(stopped)
    }
}

/// Sets an action's state inside `tx`, with a timeline line; `running_only`:
/// only if it is still running (a hold never overrides an outcome).
/// Returns whether the action changed.
fn set_action_in(
    tx: &rusqlite::Transaction<'_>,
    key: &str,
    state: ActionState,
    detail: &str,
    now: i64,
    running_only: bool,
) -> Result<bool, JournalError> {
    let row: Option<(Option<String>, String)> = tx
        .query_row(
            // A human (or a recovery) may have decided an approval while
            // its request was still being sent: that verdict stands.
            "UPDATE actions SET state = ?2, detail = ?3, finished_at = CASE WHEN ?4 THEN ?5 ELSE finished_at END
             WHERE key = ?1 AND (?2 != 'awaiting_approval' OR state = 'running')
               AND (state != ?2 OR detail IS NOT ?3) AND (NOT ?6 OR state = 'running')
             RETURNING incident_id, action",
            params![key, state.as_str(), detail, state.is_final(), now, running_only],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((Some(incident), action)) = &row {
        tx.execute(
            "INSERT INTO timeline (incident_id, at, kind, message) VALUES (?1, ?2, 'action', ?3)",
            params![
                incident,
                now,
                format!("{action} {}: {detail}", state.as_str())
            ],
        )?;
    }
    Ok(row.is_some())
}

/// An upgrade's progress: service, batch, stage, done, total, message,
/// time, open (the columns of `upgrades` and `progress_log` alike).
fn upgrade_row(r: &Row<'_>) -> Result<UpgradeRow, JournalError> {
    Ok(UpgradeRow {
        service: r.get(0)?,
        batch: r.get(1)?,
        stage: r.get(2)?,
        done: r.get::<_, Option<i64>>(3)?.map(|d| d as u64),
        total: r.get::<_, Option<i64>>(4)?.map(|t| t as u64),
        message: r.get(5)?,
        updated_at: Ts(r.get(6)?),
        open: r.get(7)?,
    })
}

fn silence_row(r: &rusqlite::Row<'_>) -> Result<SilenceCols, JournalError> {
    Ok(SilenceCols {
        id: r.get(0)?,
        matchers: r.get(1)?,
        scope: r.get(2)?,
        starts_at: r.get(3)?,
        ends_at: r.get(4)?,
        until_service: r.get(5)?,
        until_batch: r.get(6)?,
        created_by: r.get(7)?,
        comment: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
        expired_by: r.get(11)?,
    })
}

impl Silences for SqliteJournal {
    fn add_silence(&mut self, s: &Silence) -> Result<(), JournalError> {
        self.conn.execute(
            &format!(
                "INSERT INTO silences ({SILENCE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ),
            params![
                s.id,
                matchers_json(&s.matchers),
                s.scope.as_str(),
                s.starts_at.millis(),
                s.ends_at.millis(),
                s.until.as_ref().map(|u| &u.service),
                s.until.as_ref().map(|u| &u.batch),
                s.created_by,
                s.comment,
                s.created_at.millis(),
                s.updated_at.millis(),
                s.expired_by,
            ],
        )?;
        Ok(())
    }

    fn expire_silence(&mut self, id: &str, by: &str, at: Ts) -> Result<bool, JournalError> {
        // A pending silence ends before it starts: keep starts_at <= ends_at.
        let n = self.conn.execute(
            "UPDATE silences SET ends_at = ?2, starts_at = min(starts_at, ?2), updated_at = ?2, expired_by = ?3
             WHERE id = ?1 AND ends_at > ?2",
            params![id, at.millis(), by],
        )?;
        Ok(n > 0)
    }

    fn silences(&self, now: Ts, include_expired: bool) -> Result<Vec<Silence>, JournalError> {
        let sql = if include_expired {
            format!("SELECT {SILENCE_COLS} FROM silences ORDER BY created_at DESC, id LIMIT 10000")
        } else {
            format!(
                "SELECT {SILENCE_COLS} FROM silences WHERE ends_at > ?1 ORDER BY created_at, id"
            )
        };
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows: Vec<SilenceCols> = if include_expired {
            collect(&mut stmt, [], silence_row)?
        } else {
            collect(&mut stmt, [now.millis()], silence_row)?
        };
        rows.into_iter().map(SilenceCols::into_silence).collect()
    }

    fn silence(&self, id: &str) -> Result<Option<Silence>, JournalError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {SILENCE_COLS} FROM silences WHERE id = ?1"
        ))?;
        collect(&mut stmt, [id], silence_row)?
            .pop()
            .map(SilenceCols::into_silence)
            .transpose()
    }

    fn hold_action(&mut self, key: &str, hold: &HoldRecord) -> Result<bool, JournalError> {
        let now = self.now();
        let tx = self.conn.transaction()?;
        let held = set_action_in(&tx, key, ActionState::Skipped, &hold.detail, now, true)?;
        if held {
            tx.execute(
                &format!(
                    "INSERT INTO silence_holds ({HOLD_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT DO NOTHING"
                ),
                params![
                    hold.source,
                    hold.action_key,
                    hold.action.as_str(),
                    hold.incident,
                    hold.scope.as_str(),
                    hold.detail,
                    hold.at.millis()
                ],
            )?;
        }
        tx.commit()?;
        Ok(held)
    }

    fn holds_of(&self, source: &str) -> Result<Vec<HoldRecord>, JournalError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {HOLD_COLS} FROM silence_holds WHERE source = ?1 ORDER BY at, action_key LIMIT 10000"
        ))?;
        let raw = collect(&mut stmt, [source], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })?;
        raw.into_iter()
            .map(|(a, b, c, d, e, f, g)| hold_from(a, b, &c, d, &e, f, g))
            .collect()
    }
}

impl super::Charts for SqliteJournal {
    fn put_chart(
        &mut self,
        incident: &str,
        chart: &crate::decision::EvidenceSeries,
    ) -> Result<(), JournalError> {
        self.conn
            .prepare_cached(
                "INSERT INTO evidence (incident_id, at, points) VALUES (?1, ?2, ?3)
                 ON CONFLICT (incident_id, at) DO UPDATE SET points = excluded.points",
            )?
            .execute(params![
                incident,
                super::CHART_ROW_AT.millis(),
                super::evidence_json(chart)
            ])?;
        Ok(())
    }
}

/// The console's filter in SQL: `?2` severity, `?3` text (lower case).
const LIST_FILTER: &str = "(?2 IS NULL OR i.severity = ?2)
     AND (?3 IS NULL OR instr(lower(i.labels || ' ' || i.rule || ' ' || i.id), ?3) > 0)";

/// An open incident that blocks its service's gate (`super::blocks`).
const BLOCKS_GATE: &str = "i.severity <> 'minor' AND NOT (i.tier = 'medium' AND EXISTS (
     SELECT 1 FROM actions a WHERE a.incident_id = i.id AND a.action = 'request_approval'
       AND a.state IN ('pending', 'running', 'awaiting_approval')))";

impl Reads for SqliteJournal {
    fn incidents(&self, state: Option<&str>) -> Result<Vec<IncidentRow>, JournalError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "{INCIDENT_ROW} WHERE ?1 IS NULL OR i.state = ?1 ORDER BY i.opened_at DESC, i.id"
        ))?;
        collect(&mut stmt, [state], incident_row)
    }

    fn open_page(&self, f: &IncidentFilter, limit: usize) -> Result<OpenPage, JournalError> {
        let text = f.text.as_deref().map(str::to_lowercase);
        let mut page = self.conn.prepare_cached(&format!(
            "{INCIDENT_ROW} WHERE i.state = 'open' AND i.tier = ?1 AND {LIST_FILTER}
             ORDER BY i.severity_rank DESC, i.opened_at DESC, i.id LIMIT ?4"
        ))?;
        let mut rows = Vec::new();
        for tier in TIERS_BY_URGENCY {
            let room = limit.saturating_sub(rows.len());
            if room == 0 || f.tier.as_deref().is_some_and(|t| t != tier) {
                continue;
            }
            rows.extend(collect(
                &mut page,
                params![tier, f.severity, text, room as i64],
                incident_row,
            )?);
        }
        let total: i64 = self
            .conn
            .prepare_cached(&format!(
                "SELECT count(*) FROM incidents i WHERE i.state = 'open'
                 AND (?1 IS NULL OR i.tier = ?1) AND {LIST_FILTER}"
            ))?
            .query_row(params![f.tier, f.severity, text], |r| r.get(0))?;
        Ok(OpenPage {
            rows,
            total: total as u64,
        })
    }

    fn resolved_recently(&self, limit: usize) -> Result<Vec<IncidentRow>, JournalError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "{INCIDENT_ROW} WHERE i.state = 'resolved' ORDER BY i.resolved_at DESC, i.id LIMIT ?1"
        ))?;
        collect(&mut stmt, [limit as i64], incident_row)
    }

    fn open_of_service(&self, service: &str, limit: usize) -> Result<OpenPage, JournalError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "{INCIDENT_ROW} WHERE i.state = 'open' AND i.service = ?1
             ORDER BY i.severity_rank DESC, i.opened_at DESC, i.id LIMIT ?2"
        ))?;
        let mut rows = collect(&mut stmt, params![service, limit as i64], incident_row)?;
        let total: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM incidents WHERE state = 'open' AND service = ?1")?
            .query_row([service], |r| r.get(0))?;
        if total as usize > rows.len() && !rows.iter().any(super::blocks) {
            let mut first = self.conn.prepare_cached(&format!(
                "{INCIDENT_ROW} WHERE i.state = 'open' AND i.service = ?1 AND {BLOCKS_GATE}
                 ORDER BY i.severity_rank DESC, i.opened_at DESC, i.id LIMIT 1"
            ))?;
            rows.extend(collect(&mut first, [service], incident_row)?);
        }
        Ok(OpenPage {
            rows,
            total: total as u64,
        })
    }

    fn incident(&self, id: &str) -> Result<Option<IncidentRow>, JournalError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{INCIDENT_ROW} WHERE i.id = ?1"))?;
        Ok(collect(&mut stmt, [id], incident_row)?.pop())
    }

    fn timeline(&self, incident: &str) -> Result<Vec<TimelineEntry>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT at, kind, message FROM timeline WHERE incident_id = ?1 ORDER BY seq",
        )?;
        collect(&mut stmt, [incident], |r| {
            Ok(TimelineEntry {
                at: Ts(r.get(0)?),
                kind: r.get(1)?,
                message: r.get(2)?,
            })
        })
    }

    fn actions_of(&self, incident: &str) -> Result<Vec<ActionRow>, JournalError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ACTION_COLUMNS} FROM actions a JOIN decisions d ON d.key = a.key
             WHERE a.incident_id = ?1 ORDER BY d.at, d.seq"
        ))?;
        collect(&mut stmt, [incident], action_from)
    }

    fn approval(&self, incident: &str) -> Result<Option<ApprovalRow>, JournalError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT * FROM approvals WHERE incident_id = ?1")?;
        Ok(collect(&mut stmt, [incident], approval_row)?.pop())
    }

    fn pending_actions(&self) -> Result<Vec<(Action, u64)>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT action, count(*) FROM actions WHERE state = 'pending' GROUP BY action",
        )?;
        let rows = collect(&mut stmt, [], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(a, n)| Some((a.parse().ok()?, n.max(0) as u64)))
            .collect())
    }

    fn gauges(&self) -> Result<Gauges, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT tier, count(*) FROM incidents WHERE state = 'open' GROUP BY tier",
        )?;
        let open_by_tier = collect(&mut stmt, [], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
        })?;
        let (awaiting, oldest) = self.conn.query_row(
            "SELECT count(*), min(requested_at) FROM approvals WHERE state = 'awaiting'",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?)),
        )?;
        Ok(Gauges {
            open_by_tier,
            awaiting_approvals: awaiting.max(0) as u64,
            oldest_awaiting: oldest.map(Ts),
        })
    }

    fn approvals(&self, state: Option<&str>) -> Result<Vec<ApprovalRow>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT * FROM approvals WHERE ?1 IS NULL OR state = ?1 ORDER BY requested_at",
        )?;
        collect(&mut stmt, [state], approval_row)
    }

    fn escalation(&self, incident: &str) -> Result<Option<EscalationRow>, JournalError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT * FROM escalations WHERE incident_id = ?1")?;
        Ok(collect(&mut stmt, [incident], escalation_row)?.pop())
    }

    fn rollouts(&self) -> Result<Vec<RolloutRow>, JournalError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT service, paused, changed_at, changed_by, incident_id FROM rollouts ORDER BY service")?;
        collect(&mut stmt, [], |r| {
            Ok(RolloutRow {
                service: r.get(0)?,
                paused: r.get(1)?,
                changed_at: Ts(r.get(2)?),
                changed_by: r.get(3)?,
                incident: r.get(4)?,
            })
        })
    }

    fn upgrades(&self, open_only: bool) -> Result<Vec<UpgradeRow>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT service, batch, stage, done, total, message, updated_at, open FROM upgrades
             WHERE ?1 = 0 OR open = 1 ORDER BY service",
        )?;
        collect(&mut stmt, [open_only], upgrade_row)
    }

    fn sample_checks(&self, service: &str, batch: &str) -> Result<Vec<SampleRow>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT service, batch, done_at, instance, key, state, detail, of, updated_at
             FROM sample_checks
             WHERE service = ?1 AND batch = ?2 AND done_at = (SELECT max(done_at)
                 FROM sample_checks WHERE service = ?1 AND batch = ?2)
             ORDER BY instance",
        )?;
        collect(&mut stmt, params![service, batch], |r| {
            Ok(SampleRow {
                service: r.get(0)?,
                batch: r.get(1)?,
                done_at: Ts(r.get(2)?),
                instance: r.get(3)?,
                key: r.get(4)?,
                state: SampleState::parse(&r.get::<_, String>(5)?)?,
                detail: r.get(6)?,
                of: r.get::<_, i64>(7)? as u32,
                updated_at: Ts(r.get(8)?),
            })
        })
    }

    fn tally(&self, service: &str, since: Ts) -> Result<Vec<TallyRow>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT service, batch, minute, samples, total, low, tier FROM gate_tally
             WHERE service = ?1 AND minute >= ?2 ORDER BY minute, batch",
        )?;
        collect(&mut stmt, params![service, since.millis()], |r| {
            let tier: String = r.get(6)?;
            Ok(TallyRow {
                service: r.get(0)?,
                batch: r.get(1)?,
                minute: Ts(r.get(2)?),
                samples: r.get::<_, i64>(3)? as u64,
                sum: r.get(4)?,
                low: r.get(5)?,
                tier: tier
                    .parse()
                    .map_err(|e: String| JournalError::Corrupt(format!("gate_tally tier: {e}")))?,
            })
        })
    }

    fn promotions(&self, service: &str) -> Result<Vec<Promotion>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT service, batch, revision, by, note, at FROM promotions
             WHERE service = ?1 ORDER BY seq",
        )?;
        collect(&mut stmt, [service], |r| {
            Ok(Promotion {
                service: r.get(0)?,
                batch: r.get(1)?,
                revision: r.get(2)?,
                by: r.get(3)?,
                note: r.get(4)?,
                at: Ts(r.get(5)?),
            })
        })
    }

    fn evidence(
        &self,
        incident: &str,
    ) -> Result<Option<crate::decision::EvidenceSeries>, JournalError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT points FROM evidence WHERE incident_id = ?1 ORDER BY at")?;
        let rows = collect(&mut stmt, [incident], |r| Ok(r.get::<_, String>(0)?))?;
        super::merge_evidence(&rows)
    }

    fn progress_log(
        &self,
        service: &str,
        from: Ts,
        to: Ts,
    ) -> Result<Vec<UpgradeRow>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT service, batch, stage, done, total, message, at,
                 stage NOT IN ('completed', 'failed') FROM progress_log
             WHERE service = ?1 AND at >= ?2 AND at <= ?3 ORDER BY at, seq LIMIT 10000",
        )?;
        collect(
            &mut stmt,
            params![service, from.millis(), to.millis()],
            upgrade_row,
        )
    }
}

fn timeline(
    conn: &Connection,
    incident: &str,
    at: Ts,
    kind: &str,
    message: &str,
) -> Result<(), JournalError> {
    conn.execute(
        "INSERT INTO timeline (incident_id, at, kind, message) VALUES (?1, ?2, ?3, ?4)",
        params![incident, at.millis(), kind, message],
    )?;
    Ok(())
}

/// Copies decision `from` as a new decision `<from>/<suffix>` for `action`,
/// with a pending action: what a human's approval or a timeout releases.
fn derive(
    conn: &Connection,
    from: &str,
    action: Action,
    suffix: &str,
    message: &str,
    at: Ts,
    now: i64,
) -> Result<Option<String>, JournalError> {
    let key = format!("{from}/{suffix}");
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO decisions (key, incident_id, seq, at, action, tier, severity, rule, labels,
             value, threshold, baseline, fingerprint, message, partition, recorded_at, escalated_from, service, batch)
         SELECT ?1, incident_id, seq, ?2, ?3, tier, severity, rule, labels, value, threshold, baseline,
             fingerprint, ?4, partition, ?5, NULL, service, batch FROM decisions WHERE key = ?6",
        params![key, at.millis(), action.as_str(), message, now, from],
    )? == 1;
    if !inserted {
        return Ok(None);
    }
    let incident: Option<String> = conn.query_row(
        "SELECT incident_id FROM decisions WHERE key = ?1",
        [&key],
        |r| r.get(0),
    )?;
    conn.execute(
        "INSERT INTO actions (key, incident_id, action, state, created_at) VALUES (?1, ?2, ?3, 'pending', ?4)",
        params![key, incident, action.as_str(), now],
    )?;
    if let Some(inc) = incident {
        timeline(conn, &inc, at, "decision", &format!("{action}: {message}"))?;
    }
    Ok(Some(key))
}

/// [`derive`] once per instance: the rollback of each of `instances`,
/// keyed [`super::instance_rollback_key`], with the instance among its
/// labels. The keys recorded now.
#[allow(clippy::too_many_arguments)]
fn derive_each(
    conn: &Connection,
    from: &str,
    suffix: &str,
    instances: &[String],
    message: &str,
    at: Ts,
    now: i64,
) -> Result<Vec<String>, JournalError> {
    let labels: Option<String> = conn
        .query_row("SELECT labels FROM decisions WHERE key = ?1", [from], |r| {
            r.get(0)
        })
        .optional()?;
    let Some(labels) = labels else {
        return Ok(Vec::new());
    };
    let base = labels_from(&labels)?;
    let mut out = Vec::new();
    for instance in instances {
        let key = super::instance_rollback_key(from, suffix, instance);
        let labels = labels_json(&super::rows::with_instance(&base, instance));
        let inserted = conn.execute(
            "INSERT OR IGNORE INTO decisions (key, incident_id, seq, at, action, tier, severity, rule, labels,
                 value, threshold, baseline, fingerprint, message, partition, recorded_at, escalated_from, service, batch)
             SELECT ?1, incident_id, seq, ?2, 'rollback', tier, severity, rule, ?3, value, threshold, baseline,
                 fingerprint, ?4, partition, ?5, NULL, service, batch FROM decisions WHERE key = ?6",
            params![key, at.millis(), labels, message, now, from],
        )? == 1;
        if !inserted {
            continue;
        }
        let incident: Option<String> = conn.query_row(
            "SELECT incident_id FROM decisions WHERE key = ?1",
            [&key],
            |r| r.get(0),
        )?;
        conn.execute(
            "INSERT INTO actions (key, incident_id, action, state, created_at) VALUES (?1, ?2, 'rollback', 'pending', ?3)",
            params![key, incident, now],
        )?;
        if let Some(inc) = incident {
            timeline(
                conn,
                &inc,
                at,
                "decision",
                &format!("rollback of {instance}: {message}"),
            )?;
        }
        out.push(key);
    }
    Ok(out)
}

/// What a timed-out request of `incident` rolls back: each breaching
/// member of a batch incident, `None` for a plain incident.
fn timeout_targets(conn: &Connection, incident: &str) -> Result<Option<Vec<String>>, JournalError> {
    let batch: Option<Option<String>> = conn
        .query_row(
            "SELECT batch FROM incidents WHERE id = ?1",
            [incident],
            |r| r.get(0),
        )
        .optional()?;
    Ok(batch_from(batch.flatten())?.map(|b| b.breaching_targets()))
}

fn approval_row(r: &Row<'_>) -> Result<ApprovalRow, JournalError> {
    Ok(ApprovalRow {
        incident: r.get("incident_id")?,
        request_key: r.get("request_key")?,
        tier: parse("tier", &r.get::<_, String>("tier")?)?,
        state: r.get("state")?,
        requested_at: Ts(r.get("requested_at")?),
        expires_at: Ts(r.get("expires_at")?),
        decided_by: r.get("decided_by")?,
        decided_at: r.get::<_, Option<i64>>("decided_at")?.map(Ts),
        note: r.get("note")?,
        decided_via: r
            .get::<_, Option<String>>("decided_via")?
            .as_deref()
            .and_then(Via::parse),
        scope: super::ApprovedScope::from_json(r.get("scope")?)?,
    })
}

fn escalation_row(r: &Row<'_>) -> Result<EscalationRow, JournalError> {
    Ok(EscalationRow {
        incident: r.get("incident_id")?,
        tier: parse("tier", &r.get::<_, String>("tier")?)?,
        step: r.get::<_, i64>("step")? as u32,
        started_at: Ts(r.get("started_at")?),
        next_at: r.get::<_, Option<i64>>("next_at")?.map(Ts),
        state: r.get("state")?,
        acked_by: r.get("acked_by")?,
    })
}

#[cfg(test)]
mod tests;
