//! Journal: the durable record of what ripcord decided and did.
//!
//! Every batch of processed events is committed in one transaction: its
//! decisions (each under its idempotency key), the incidents they touch, the
//! action intents they create, and how far each input partition got. A
//! decision is thus on disk before its action starts, and a decision that
//! is re-derived after a crash (same key) is recognised and not acted on
//! again. Input positions live in the same transaction, so on restart each
//! partition resumes exactly after the last journaled event.
//!
//! Callers see roles, small traits with a backend-neutral error:
//! [`Ingest`] (the pipeline's batch commit, positions and partition
//! ownership), [`Work`] (action claims, leases, budgets, timers), [`Verdicts`]
//! (what humans decide), [`Reads`] (the API, console and CLI), [`Silences`]
//! and [`Charts`]; [`Acts`] is work, verdicts and reads together. A
//! component holds only its roles: a pipeline a `Box<dyn Ingest>`, an async
//! component a [`Shared`] handle per role, which runs the role's
//! (synchronous) calls on a blocking thread. Two backends
//! implement them all and pass one conformance suite: [`SqliteJournal`] for
//! one host (several processes may share its file) and [`PgJournal`] for a
//! cluster of replicas sharing a PostgreSQL database.
//!
//! Rules that hold in both (tested in both): a decision is recorded once; a
//! rollback or pause left running by a dead process becomes `unknown` and is
//! never re-run; a human's verdict beats a late state; an incident's
//! severity only rises; a replica that lost a partition can commit nothing
//! for it (its owner epoch no longer matches); a claim taken over can no
//! longer admit a rollback; the rollback budget is counted atomically
//! across every process.

pub mod postgres;
mod rows;
pub mod silences;
pub mod sqlite;

#[cfg(test)]
mod conformance;

use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::decision::{Action, Decision, IncidentId, Tier};
use crate::time::{Dur, Ts};
use silences::Silence;

pub use postgres::PgJournal;
pub use sqlite::SqliteJournal;

/// `journal:` in the config: where the journal lives.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalConfig {
    /// SQLite database file (WAL mode). Several ripcord processes on one host
    /// may share it.
    pub path: std::path::PathBuf,
    /// PostgreSQL (`postgres://user@host/db`): the journal of a cluster of
    /// replicas. A secret (it may carry a password).
    pub url: Option<crate::config::Secret>,
    /// A PEM bundle of CAs that may sign the PostgreSQL server's
    /// certificate, besides the system's (a private CA).
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            url: None,
            ca_file: None,
            path: std::path::PathBuf::from("ripcord-state.db"),
        }
    }
}

/// A journal shared by blocking calls from async code: the lock is only
/// ever taken inside `spawn_blocking`, never held across an `.await`.
/// Only the wiring holds it whole; a component holds the [`Shared`] roles
/// it needs.
pub type SharedJournal = Arc<Mutex<Box<dyn Journal>>>;

/// One role of a shared journal: a component holding `Shared<dyn Reads>`
/// can read and do nothing else, whatever connection sits behind it. Every
/// role of one connection takes the same lock, one call at a time.
pub struct Shared<R: ?Sized> {
    journal: SharedJournal,
    role: std::marker::PhantomData<fn(&mut R)>,
}

/// A role a [`Shared`] handle can stand for: the journal seen as that
/// role alone.
pub trait Role {
    fn of<'a>(journal: &'a mut (dyn Journal + 'static)) -> &'a mut Self;
}

macro_rules! roles {
    ($($role:ident),*) => {$(
        impl Role for dyn $role {
            fn of<'a>(journal: &'a mut (dyn Journal + 'static)) -> &'a mut Self {
                journal
            }
        }
    )*};
}
roles!(Work, Verdicts, Reads, Silences, Charts, Acts, Journal);

impl<R: ?Sized + Role> Shared<R> {
    /// Runs `f` on a blocking thread with this role of the journal.
    pub async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut R) -> Result<T, JournalError> + Send + 'static,
    ) -> Result<T, JournalError> {
        let journal = self.journal.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = journal.lock().unwrap_or_else(|e| e.into_inner());
            f(R::of(&mut **guard))
        })
        .await
        .unwrap_or_else(|e| Err(JournalError::Corrupt(format!("journal task failed: {e}"))))
    }
}

impl<R: ?Sized> Clone for Shared<R> {
    fn clone(&self) -> Self {
        Shared {
            journal: self.journal.clone(),
            role: std::marker::PhantomData,
        }
    }
}

impl<R: ?Sized + Role> From<&SharedJournal> for Shared<R> {
    fn from(journal: &SharedJournal) -> Self {
        Shared {
            journal: journal.clone(),
            role: std::marker::PhantomData,
        }
    }
}

// ---------------------------------------------------------------------------
// Rows the rollout gate reads and writes.

/// A human's go-ahead for one batch: every revision of it, or only the one
/// named.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Promotion {
    pub service: String,
    pub batch: Option<String>,
    pub revision: Option<String>,
    pub by: String,
    pub note: String,
    pub at: Ts,
}

/// The samples of one (service, batch, minute). `batch` is empty for
/// instances not (yet) upgraded: the same-age baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TallyRow {
    pub service: String,
    pub batch: String,
    /// Start of the minute (event time).
    pub minute: Ts,
    pub samples: u64,
    /// Sum of the sampled success ratios.
    pub sum: f64,
    /// Lowest sampled ratio.
    pub low: f64,
    pub tier: Tier,
}

impl TallyRow {
    /// Folds `other` (same key) into this row.
    pub fn merge(&mut self, other: &TallyRow) {
        self.samples += other.samples;
        self.sum += other.sum;
        self.low = self.low.min(other.low);
        self.tier = other.tier;
    }
}

/// Whether an open incident waits for a human to approve its rollback
/// (asked, or about to be asked).
pub fn waits_for_approval(i: &IncidentRow) -> bool {
    i.attention.iter().any(|a| {
        matches!(
            a.as_str(),
            "request_approval:pending"
                | "request_approval:running"
                | "request_approval:awaiting_approval"
        )
    })
}

/// Whether an open incident makes its service's gate a nogo: any but a
/// minor one, unless it is on a medium-tier service and waits for a human
/// to approve its rollback, or is a batch incident whose fault shows
/// outside the batch too (both hold instead). The gate's rule, kept here
/// beside `open_of_service`, which says the same in SQL, but for the batch's outside
/// breaches (kept in JSON): such an incident is listed, never missed.
pub fn blocks(i: &IncidentRow) -> bool {
    i.severity != "minor"
        && !(i.tier == "medium" && waits_for_approval(i))
        && i.batch.as_ref().is_none_or(|b| b.outside.is_empty())
}

/// `journal:` in the config, read here beside [`JournalConfig`].
pub fn read_config(
    mut m: crate::config::yaml::MapReader<'_>,
    j: &mut JournalConfig,
    errs: &mut crate::config::Errors,
) {
    if let Some(p) = m.str("path", errs) {
        j.path = crate::config::relative_to(m.file(), p);
    }
    j.url = crate::config::secret::read_secret(&mut m, "url", errs);
    if let Some(p) = m.str("ca_file", errs) {
        let path = crate::config::relative_to(m.file(), p);
        let n = m.node_of("ca_file").unwrap_or(m.node());
        if j.url.is_none() {
            m.err(errs, n, "ca_file", "is for PostgreSQL: give `url` too");
        } else if let Err(e) = std::fs::metadata(&path) {
            m.err(errs, n, "ca_file", format!("{}: {e}", path.display()));
        }
        j.ca_file = Some(path);
    }
    if let Some(url) = j.url.as_ref().filter(|u| !u.is_unresolved()) {
        let n = m.node_of("url").unwrap_or(m.node());
        if !(url.expose().starts_with("postgres://") || url.expose().starts_with("postgresql://")) {
            m.err(
                errs,
                n,
                "url",
                "expected postgres://user@host:5432/database (the value is a secret and not shown)",
            );
        } else if let Err(e) = url.expose().parse::<tokio_postgres::Config>() {
            m.err(
                errs,
                n,
                "url",
                format!(
                    "is not a PostgreSQL connection string: {}",
                    crate::journal::postgres::scrub(&e.to_string(), url.expose())
                ),
            );
        }
        if m.has("path") {
            let n = m.node_of("path").unwrap_or(m.node());
            m.err(
                errs,
                n,
                "path",
                "give `url` (PostgreSQL) or `path` (SQLite), not both",
            );
        }
    }
    m.finish(errs);
}

/// Every role trait, for code that holds a concrete journal.
pub mod prelude {
    pub use super::{Ingest, Journal, Reads, Silences, Verdicts, Work};
}

/// What went wrong, whatever the backend.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The store refused or failed the operation (a constraint, a lost
    /// connection, a full disk, a lock held too long): retry later.
    #[error("journal storage error: {0}")]
    Storage(String),
    #[error("journal holds data this version cannot read: {0}")]
    Corrupt(String),
    #[error("cannot open journal {path}: {reason}")]
    Open { path: String, reason: String },
    /// This process no longer owns what it tried to write for: a partition
    /// another replica took over (`partition`), an action claim another
    /// process reaped.
    #[error("fenced: {reason}")]
    Fenced {
        partition: Option<String>,
        reason: String,
    },
}

/// The SQL list of action kinds never run again after a crash
/// (`'rollback', 'pause_rollout', …`), for `reap` in both backends.
fn never_rerun_kinds() -> String {
    Action::ALL
        .into_iter()
        .filter(|a| a.is_never_rerun())
        .map(|a| format!("'{}'", a.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Ends the until-batch silences a progress row completes: `batch_done` of
/// their batch, or the whole upgrade `completed` / `failed` (every batch of
/// the service). Parameters: the progress time, the service, the batch
/// (NULL: every batch).
const END_UNTIL_BATCH_SQLITE: &str =
    "UPDATE silences SET ends_at = max(starts_at, ?1), updated_at = ?1
     WHERE until_service = ?2 AND (?3 IS NULL OR until_batch = ?3) AND ends_at > ?1";
const END_UNTIL_BATCH_PG: &str =
    "UPDATE silences SET ends_at = GREATEST(starts_at, $1), updated_at = $1
     WHERE until_service = $2 AND ($3::TEXT IS NULL OR until_batch = $3) AND ends_at > $1";

/// The (service, batch) whose until-batch silences `p` ends; batch `None`:
/// every batch of the service.
fn ends_until_batch(p: &UpgradeRow) -> Option<(&str, Option<&str>)> {
    match p.stage.as_str() {
        "batch_done" => p.batch.as_deref().map(|b| (p.service.as_str(), Some(b))),
        "completed" | "failed" => Some((p.service.as_str(), None)),
        _ => None,
    }
}

/// The configured backend, as a journal of every role.
pub fn open(
    cfg: &JournalConfig,
    clock: std::sync::Arc<dyn crate::time::Clock>,
) -> Result<Box<dyn Journal>, JournalError> {
    match &cfg.url {
        Some(url) => Ok(Box::new(PgJournal::connect(
            url,
            cfg.ca_file.as_deref(),
            clock,
        )?)),
        None => Ok(Box::new(SqliteJournal::open_with_clock(
            &cfg.path, false, clock,
        )?)),
    }
}

/// What one processed batch leaves behind.
#[derive(Debug, Default)]
pub struct Batch<'a> {
    /// Decisions with the input partition they came from.
    pub decisions: Vec<(&'a str, &'a Decision)>,
    /// Input positions reached: (partition, next offset to read).
    pub positions: Vec<(&'a str, i64)>,
    /// Request bodies accepted over HTTP, kept to warm windows after a
    /// restart and followed by the other replicas (see [`Ingest::inbox_after`]).
    pub inbox: Vec<&'a [u8]>,
    /// The process the bodies were accepted by.
    pub origin: &'a str,
    /// The owner epoch this process holds for each Kafka partition in the
    /// batch (from [`Ingest::claim_partition`]): the commit fails with
    /// [`JournalError::Fenced`], writing nothing, if another process has
    /// claimed one since.
    pub epochs: Vec<(&'a str, i64)>,
    /// Request-success tallies counted from the batch's samples, added to
    /// the stored ones (see [`crate::gate::Tally`]).
    pub tallies: &'a [TallyRow],
    /// The last progress each upgrade reported in the batch, recorded with
    /// it so a gate asked after the POST answered sees it.
    pub progress: &'a [UpgradeRow],
}

/// How far an action got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionState {
    /// Recorded, not started.
    Pending,
    /// Claimed by a process and started.
    Running,
    Done,
    Failed,
    /// The process running it died: it may or may not have happened. Never
    /// re-run automatically; a human decides.
    Unknown,
    /// Nothing to do (no executor configured for it, or superseded).
    Skipped,
    /// Waiting for a human to approve (medium / high tier rollbacks).
    AwaitingApproval,
    Approved,
    Rejected,
    /// The incident recovered while the request was waiting.
    Withdrawn,
    Expired,
}

impl ActionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::Pending => "pending",
            ActionState::Running => "running",
            ActionState::Done => "done",
            ActionState::Failed => "failed",
            ActionState::Unknown => "unknown",
            ActionState::Skipped => "skipped",
            ActionState::AwaitingApproval => "awaiting_approval",
            ActionState::Approved => "approved",
            ActionState::Rejected => "rejected",
            ActionState::Withdrawn => "withdrawn",
            ActionState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<ActionState> {
        [
            ActionState::Pending,
            ActionState::Running,
            ActionState::Done,
            ActionState::Failed,
            ActionState::Unknown,
            ActionState::Skipped,
            ActionState::AwaitingApproval,
            ActionState::Approved,
            ActionState::Rejected,
            ActionState::Withdrawn,
            ActionState::Expired,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }

    /// Whether the action is over (nothing more will happen to it).
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            ActionState::Pending
                | ActionState::Running
                | ActionState::AwaitingApproval
                | ActionState::Approved
        )
    }
}

/// One action as the journal holds it.
#[derive(Debug, Clone, Serialize)]
pub struct ActionRow {
    pub key: String,
    pub incident: Option<String>,
    pub action: Action,
    pub state: ActionState,
    pub attempts: u32,
    pub owner: Option<String>,
    pub detail: Option<String>,
    /// When it was last claimed (started), and when it ended.
    pub started_at: Option<Ts>,
    pub finished_at: Option<Ts>,
    /// The decision behind the action.
    pub decision: Decision,
}

/// An incident as listed by `ripcord incidents` and the API.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentRow {
    pub id: String,
    pub rule: String,
    pub partition: String,
    pub tier: String,
    pub severity: String,
    pub state: String,
    pub opened_at: Ts,
    pub resolved_at: Option<Ts>,
    pub labels: serde_json::Value,
    /// Actions of the incident that wait for someone or need a look.
    pub attention: Vec<String>,
    /// A batch incident's batch and members, as last decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<std::sync::Arc<crate::decision::BatchInfo>>,
}

/// An open (or recently resolved) incident as journaled: what an engine
/// resuming its partition needs to carry on without deciding anything
/// twice. The journal's own row; the pipeline turns it into the engine's
/// incident at a warm-up.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenIncident {
    pub id: IncidentId,
    pub rule: std::sync::Arc<str>,
    pub labels: crate::decision::GroupLabels,
    pub tier: Tier,
    pub opened: Ts,
    pub severity: crate::decision::Severity,
    /// Actions already decided, as bits of [`Action::bit`].
    pub fired: u8,
    /// Decisions emitted so far.
    pub seq: u32,
    /// For an incident that follows an Alertmanager alert: its fingerprint.
    pub fingerprint: Option<Box<str>>,
    /// For a batch incident: its batch and members, as last decided.
    pub batch: Option<std::sync::Arc<crate::decision::BatchInfo>>,
}

/// One line of an incident's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEntry {
    pub at: Ts,
    pub kind: String,
    pub message: String,
}

/// The rollback budget's limits within its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollbackLimits {
    pub per_service: u32,
    pub overall: u32,
}

/// The budget's answer for one rollback: the rollbacks already admitted in
/// the window (not counting this one), and whether this one may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub admitted: bool,
    pub for_service: u32,
    pub overall: u32,
}

/// The pipeline's side: batches in, positions, partition ownership,
/// and what a partition's new owner needs to warm up.
pub trait Ingest {
    /// Records a batch atomically. Returns, per decision in `batch`, whether
    /// it is new (false: recorded before, under the same key: do not act).
    fn commit(&mut self, batch: &Batch<'_>) -> Result<Vec<bool>, JournalError>;

    /// Next offset to read for `partition`, if the journal has one.
    fn position(&self, partition: &str) -> Result<Option<i64>, JournalError>;

    /// Open incidents that came from `partition`.
    fn open_incidents(&self, partition: &str) -> Result<Vec<OpenIncident>, JournalError>;

    /// Incidents from `partition` resolved at or after `since` (event time),
    /// with the time each resolved.
    fn resolved_since(
        &self,
        partition: &str,
        since: Ts,
    ) -> Result<Vec<(OpenIncident, Ts)>, JournalError>;

    /// HTTP bodies accepted at or after `since` (wall time), oldest first.
    fn inbox_since(&self, since: Ts) -> Result<Vec<Vec<u8>>, JournalError>;

    /// Forgets HTTP bodies older than `before`.
    fn prune_inbox(&mut self, before: Ts) -> Result<usize, JournalError>;

    /// Forgets success tallies of minutes before `before`.
    fn prune_tally(&mut self, before: Ts) -> Result<usize, JournalError>;

    /// HTTP bodies other processes than `not_from` accepted after `after`
    /// (a sequence number), oldest first, at most `limit`: how a replica
    /// learns the alerts another replica took, so a resolve it receives
    /// finds the incident it closes.
    fn inbox_after(
        &self,
        after: i64,
        not_from: &str,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<u8>)>, JournalError>;

    /// The newest HTTP body's sequence number (0: none yet).
    fn inbox_last(&self) -> Result<i64, JournalError>;

    /// Takes ownership of a Kafka partition for `owner`, fencing out any
    /// earlier owner: returns the new owner epoch, which every later commit
    /// for the partition carries (see [`Batch::epochs`]).
    fn claim_partition(&mut self, partition: &str, owner: &str) -> Result<i64, JournalError>;
}

/// Work that runs once across every process: action claims and their
/// leases, the rollback budget, timers (escalations, expiries,
/// verifications, periodic leases).
pub trait Work {
    /// This connection's writes go first: the process's ingest commits
    /// yield (briefly) to it while it waits for the write lock. For SQLite,
    /// where one writer holds the whole database and waiters poll, so a
    /// rollback's claim could otherwise lose to commit after commit of a
    /// storm; PostgreSQL locks rows and needs nothing.
    fn prefer_writes(&mut self) {}

    /// Moves up to `limit` pending actions of the given kinds to running,
    /// owned by `owner`, oldest first.
    fn claim_actions(
        &mut self,
        owner: &str,
        kinds: &[Action],
        limit: usize,
    ) -> Result<Vec<ActionRow>, JournalError>;

    /// Records that the rollback action `key` is to be verified at `due`;
    /// the record survives restarts until [`Journal::finish_verification`].
    fn schedule_verification(&mut self, key: &str, due: Ts) -> Result<(), JournalError>;

    /// Up to `limit` verifications due at `now`, each held until `now +
    /// lease`: one whose process dies while checking is due again then.
    fn claim_verifications(
        &mut self,
        now: Ts,
        lease: Dur,
        limit: usize,
    ) -> Result<Vec<ActionRow>, JournalError>;

    /// The stage of `key`'s verification to run next (0 at first); `None`
    /// when none is scheduled.
    fn verification_stage(&mut self, key: &str) -> Result<Option<u32>, JournalError>;

    /// Stage `stage` of `key`'s verification passed (its result on the
    /// timeline): it never runs again, and the verification stays held
    /// until `held_until` while the next stage runs.
    fn pass_verification_stage(
        &mut self,
        key: &str,
        stage: u32,
        held_until: Ts,
    ) -> Result<(), JournalError>;

    /// The verification of `key` ran and its result is on the timeline.
    fn finish_verification(&mut self, key: &str) -> Result<(), JournalError>;

    /// Starts the sample check of a finished batch, once: for each picked
    /// instance, a copy of the batch-done decision `from_key` naming it
    /// (keyed [`sample_key`]), a verification due at `due` and a `running`
    /// row. False (and nothing written) when this batch done's check was
    /// started before, so the random pick is made once.
    fn start_sample_check(&mut self, check: &SampleStart<'_>) -> Result<bool, JournalError>;

    /// Records what the sample instance of verification `key` came to:
    /// `running` with the stages passed so far, or a final `passed` /
    /// `failed`, which never changes again.
    fn sample_result(
        &mut self,
        key: &str,
        state: SampleState,
        detail: &str,
        at: Ts,
    ) -> Result<(), JournalError>;

    /// Sets an action's state, recording `detail` on its incident's timeline.
    fn set_action(
        &mut self,
        key: &str,
        state: ActionState,
        detail: &str,
    ) -> Result<(), JournalError>;

    /// Records that `owner` (one running process) is alive.
    fn heartbeat(&mut self, owner: &str) -> Result<(), JournalError>;

    /// Actions left running by processes not heard from for `stale`: they
    /// died mid-action. Rollbacks, rollout pauses and traffic switches
    /// ([`Action::is_never_rerun`]) become `unknown` (never
    /// re-run) and are returned so a human hears of them; messages and
    /// approval requests go back to pending and run again.
    fn reap(&mut self, stale: crate::time::Dur) -> Result<Vec<ActionRow>, JournalError>;

    fn add_timeline(
        &mut self,
        incident: &IncidentId,
        at: Ts,
        kind: &str,
        message: &str,
    ) -> Result<(), JournalError>;

    /// Expires requests waiting past their deadline, each exactly once
    /// across processes. For tiers in `rollback_tiers` the rollback is
    /// recorded in the same transaction.
    fn expire_approvals(
        &mut self,
        now: Ts,
        rollback_tiers: &[Tier],
    ) -> Result<Vec<Expired>, JournalError>;

    /// Records a new action derived from decision `from_key` (e.g. the
    /// rollback a human approved), keyed `<from_key>/<suffix>`; `None` if
    /// it was recorded before.
    fn derive_action(
        &mut self,
        from_key: &str,
        action: Action,
        suffix: &str,
        message: &str,
        at: Ts,
    ) -> Result<Option<String>, JournalError>;

    /// Records the rollback of each of `instances` derived from decision
    /// `from_key` (a batch incident's approval request): keyed
    /// [`instance_rollback_key`]`(from_key, suffix, instance)`, each with
    /// the instance among its labels. Returns the keys recorded now (those
    /// recorded before are left out).
    fn derive_rollbacks(
        &mut self,
        from_key: &str,
        suffix: &str,
        instances: &[String],
        message: &str,
        at: Ts,
    ) -> Result<Vec<String>, JournalError>;

    /// Starts paging for an incident, first step due at `first`. False if
    /// one already runs (or ran) for it.
    fn start_escalation(
        &mut self,
        incident: &str,
        tier: Tier,
        at: Ts,
        first: Ts,
    ) -> Result<bool, JournalError>;

    /// Escalations whose next step is due, claimed for `hold` so one
    /// process runs each step; a claim that is never completed (a crash)
    /// runs again once it lapses.
    fn claim_escalations(
        &mut self,
        now: Ts,
        hold: crate::time::Dur,
    ) -> Result<Vec<EscalationRow>, JournalError>;

    /// Step `step` ran: schedules the next one (`None`: no step left).
    fn escalation_step_done(
        &mut self,
        incident: &str,
        step: u32,
        next: Option<Ts>,
    ) -> Result<(), JournalError>;

    /// Brings the next step forward to `now` (the incident worsened).
    fn hurry_escalation(&mut self, incident: &str, now: Ts) -> Result<bool, JournalError>;

    /// Admits the rollback `key` against the budget, atomically: counts the
    /// rollbacks admitted since `since` (for its service and overall; not
    /// this one) and, if both are under their limits, admits this one.
    /// Atomic so that rollbacks checked at the same moment, by one process
    /// or several, never all see the same count and all pass or all fail.
    ///
    /// Fenced (`JournalError::Fenced`) unless `owner` still holds the
    /// action's claim: a process whose claim was reaped (it stalled past
    /// its lease) never starts the rollback.
    fn admit_rollback(
        &mut self,
        key: &str,
        owner: &str,
        service: Option<&str>,
        since: Ts,
        limits: RollbackLimits,
    ) -> Result<Admission, JournalError>;

    fn set_rollout(
        &mut self,
        service: &str,
        paused: bool,
        by: &str,
        incident: Option<&str>,
        at: Ts,
    ) -> Result<(), JournalError>;

    /// Takes the named lease until `until` if it is free (never taken, or
    /// lapsed): so one process of several sends each periodic digest, once.
    fn take_lease(
        &mut self,
        name: &str,
        holder: &str,
        until: Ts,
        now: Ts,
    ) -> Result<bool, JournalError>;
}

/// What humans decide: approvals and acknowledgements.
pub trait Verdicts {
    /// Opens the approval a `request_approval` decision asks for. A batch
    /// incident asks again about members that joined after its request was
    /// decided: a new `request_key` reopens a decided request.
    fn open_approval(
        &mut self,
        incident: &str,
        request_key: &str,
        tier: Tier,
        at: Ts,
        expires: Ts,
    ) -> Result<ApprovalOpened, JournalError>;

    /// A human's verdict, and how it reached ripcord. Approving also
    /// records the rollback it releases (a pending action), in the same
    /// transaction: one per instance of `scope` for a batch incident.
    #[allow(clippy::too_many_arguments)]
    fn decide_approval(
        &mut self,
        incident: &str,
        verdict: Verdict,
        by: &str,
        note: &str,
        via: Via,
        at: Ts,
        scope: Option<&ApprovedScope>,
    ) -> Result<ApprovalDecided, JournalError>;

    /// The incident recovered while the request waited: withdraws it.
    fn withdraw_approval(
        &mut self,
        incident: &str,
        reason: &str,
        at: Ts,
    ) -> Result<bool, JournalError>;

    /// A human lets a service's batch (of a revision, if named) go on.
    fn promote(&mut self, p: &Promotion) -> Result<(), JournalError>;

    /// Stops paging; `state` says why (acked, resolved).
    fn stop_escalation(
        &mut self,
        incident: &str,
        state: &str,
        by: Option<&str>,
        at: Ts,
    ) -> Result<bool, JournalError>;
}

/// What the console's list keeps of the open incidents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct IncidentFilter {
    pub tier: Option<String>,
    pub severity: Option<String>,
    /// Text (lower case) the incident's labels, rule or id contain.
    pub text: Option<String>,
}

/// A bounded read: the first rows, and how many there are in all.
#[derive(Debug, Clone, Default)]
pub struct OpenPage {
    pub rows: Vec<IncidentRow>,
    pub total: u64,
}

/// Telemetry's gauges, counted where the rows are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Open incidents by tier (tiers with none left out).
    pub open_by_tier: Vec<(String, u64)>,
    /// Approval requests still waiting for a human.
    pub awaiting_approvals: u64,
    /// When the oldest of them was requested.
    pub oldest_awaiting: Option<Ts>,
}

/// Tiers, most urgent first (the order people read open incidents in).
pub const TIERS_BY_URGENCY: [&str; 3] = ["high", "medium", "low"];

/// What the API, the CLI and messages read.
pub trait Reads {
    fn incidents(&self, state: Option<&str>) -> Result<Vec<IncidentRow>, JournalError>;

    /// The open incidents `filter` keeps, most urgent first (the high tier,
    /// then medium, then low; within a tier the worst severity, then the
    /// newest), at most `limit`; and how many it keeps. Read through
    /// indexes: a storm's 150k open incidents cost a page, not a scan.
    fn open_page(&self, filter: &IncidentFilter, limit: usize) -> Result<OpenPage, JournalError>;

    /// The most recently resolved incidents, newest first, at most `limit`.
    fn resolved_recently(&self, limit: usize) -> Result<Vec<IncidentRow>, JournalError>;

    /// A service's open incidents for its gate: the `limit` most severe
    /// (newest first within a severity), plus the first one that blocks the
    /// gate ([`blocks`]) if none of those does; and how many
    /// are open.
    fn open_of_service(&self, service: &str, limit: usize) -> Result<OpenPage, JournalError>;

    fn timeline(&self, incident: &str) -> Result<Vec<TimelineEntry>, JournalError>;

    fn actions_of(&self, incident: &str) -> Result<Vec<ActionRow>, JournalError>;

    fn incident(&self, id: &str) -> Result<Option<IncidentRow>, JournalError>;

    fn approval(&self, incident: &str) -> Result<Option<ApprovalRow>, JournalError>;

    fn approvals(&self, state: Option<&str>) -> Result<Vec<ApprovalRow>, JournalError>;

    fn escalation(&self, incident: &str) -> Result<Option<EscalationRow>, JournalError>;

    fn rollouts(&self) -> Result<Vec<RolloutRow>, JournalError>;

    fn upgrades(&self, open_only: bool) -> Result<Vec<UpgradeRow>, JournalError>;

    /// The service's success tallies from minute `since` on, oldest first.
    fn tally(&self, service: &str, since: Ts) -> Result<Vec<TallyRow>, JournalError>;

    /// The service's promotions, oldest first.
    fn promotions(&self, service: &str) -> Result<Vec<Promotion>, JournalError>;

    /// The newest sample check of `service`'s `batch` (the instances of its
    /// last `batch_done`), by instance.
    fn sample_checks(&self, service: &str, batch: &str) -> Result<Vec<SampleRow>, JournalError>;

    /// Actions waiting to be claimed, counted by kind (telemetry's queue
    /// depth per lane).
    fn pending_actions(&self) -> Result<Vec<(Action, u64)>, JournalError>;

    /// Open incidents per tier and the approvals still waiting: counts,
    /// not rows. Telemetry reads them every few seconds, and reading every
    /// open incident's row for that cost a storm's 100k incidents tens of
    /// megabytes a pass.
    fn gauges(&self) -> Result<Gauges, JournalError>;

    // For the incident review (`ripcord report`).

    /// The evidence the incident's decisions carried, merged: (time, window
    /// value) points, oldest first, one per time, and the first breach.
    fn evidence(
        &self,
        incident: &str,
    ) -> Result<Option<crate::decision::EvidenceSeries>, JournalError>;

    /// Every progress the service reported from `from` to `to`, oldest first.
    fn progress_log(
        &self,
        service: &str,
        from: Ts,
        to: Ts,
    ) -> Result<Vec<UpgradeRow>, JournalError>;
}

/// Silences: what humans hold back, and the audit of what each held back.
pub trait Silences {
    fn add_silence(&mut self, s: &Silence) -> Result<(), JournalError>;

    /// Ends a silence at `at`; false if there is none such or it is over.
    fn expire_silence(&mut self, id: &str, by: &str, at: Ts) -> Result<bool, JournalError>;

    /// Silences not over at `now` (pending and active), oldest first; every
    /// silence (expired ones too, newest first) with `include_expired`.
    fn silences(&self, now: Ts, include_expired: bool) -> Result<Vec<Silence>, JournalError>;

    fn silence(&self, id: &str) -> Result<Option<Silence>, JournalError>;

    /// Holds an action back: it becomes `skipped` with `hold.detail` on its
    /// incident's timeline, and the hold goes into the silence's audit, in
    /// one transaction. False if the action was not running any more.
    fn hold_action(&mut self, key: &str, hold: &HoldRecord) -> Result<bool, JournalError>;

    /// What a silence (or `window:<name>`) held back, oldest first.
    fn holds_of(&self, source: &str) -> Result<Vec<HoldRecord>, JournalError>;
}

/// One action a silence or window held back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HoldRecord {
    /// The silence id, or `window:<name>`.
    pub source: String,
    pub action_key: String,
    pub action: Action,
    pub incident: Option<String>,
    pub scope: silences::Scope,
    pub detail: String,
    pub at: Ts,
}

/// Alert incidents' charts, fetched from Prometheus after the decisions
/// (kept as the incident's evidence, read back by [`Reads::evidence`]).
pub trait Charts {
    /// Keeps `chart` as the incident's chart, replacing an earlier one
    /// (the fetch at the resolve reaches further than the one at the open).
    fn put_chart(
        &mut self,
        incident: &str,
        chart: &crate::decision::EvidenceSeries,
    ) -> Result<(), JournalError>;
}

/// Acting on incidents: what the responder and people's verbs (approve,
/// acknowledge, resume) need, each in one call on one connection (a
/// verdict reads the incident, records itself and derives the actions it
/// releases).
pub trait Acts: Work + Verdicts + Reads {}

impl<T: Work + Verdicts + Reads> Acts for T {}

/// Every role: only the wiring (`app`) and the command line hold it whole.
pub trait Journal: Ingest + Acts + Silences + Charts + Send {}

impl<T: Ingest + Acts + Silences + Charts + Send> Journal for T {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Reject,
}

/// How a human's verdict reached ripcord (the review says).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// A signed one-click link.
    Link,
    /// The HTTP API (with the token).
    Api,
    /// `ripcord approve|reject` on a host with the journal.
    Cli,
    /// The web console (a signed-in user or a trusted proxy's).
    Console,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Link => "link",
            Via::Api => "api",
            Via::Cli => "cli",
            Via::Console => "console",
        }
    }

    pub fn parse(s: &str) -> Option<Via> {
        [Via::Link, Via::Api, Via::Cli, Via::Console]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// Progress history is kept this long (a quarter's reviews need it).
pub const PROGRESS_RETENTION: Dur = Dur::from_mins(100 * 24 * 60);

/// Evidence as stored: `{"from": millis, "points": [[millis, value], …]}`,
/// plus `"annotations": [[name, text], …]` and `"chart": {…}` (where its
/// chart comes from) for an alert.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredEvidence {
    from: i64,
    points: Vec<(i64, f64)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    annotations: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chart: Option<crate::decision::ChartSource>,
}

/// The evidence row an alert incident's chart is kept in (Prometheus'
/// values of its expression), replaced as it is fetched again: before every
/// decision's own rows, whose times are never negative.
pub const CHART_ROW_AT: Ts = Ts(-1);

fn evidence_json(e: &crate::decision::EvidenceSeries) -> String {
    let stored = StoredEvidence {
        from: e.breach_from.millis(),
        points: e
            .points
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(t, v)| (t.millis(), *v))
            .collect(),
        annotations: e.annotations.clone(),
        chart: e.chart.clone(),
    };
    serde_json::to_string(&stored).unwrap_or_else(|_| "{\"from\":0,\"points\":[]}".into())
}

/// Merges stored evidence rows into one series, oldest first (`None`: no
/// evidence).
fn merge_evidence(
    rows: &[String],
) -> Result<Option<crate::decision::EvidenceSeries>, JournalError> {
    let mut all = std::collections::BTreeMap::new();
    let mut from: Option<i64> = None;
    let mut annotations = Vec::new();
    let mut chart: Option<crate::decision::ChartSource> = None;
    for r in rows {
        let e: StoredEvidence =
            serde_json::from_str(r).map_err(|e| JournalError::Corrupt(format!("evidence: {e}")))?;
        from = Some(from.map_or(e.from, |f| f.min(e.from)));
        if annotations.is_empty() {
            annotations = e.annotations;
        }
        // The fetched chart (asked, or failed) says more than the source
        // the alert carried.
        let fetched = |c: &crate::decision::ChartSource| c.query.is_some() || c.error.is_some();
        if chart.as_ref().is_none_or(|c| !fetched(c)) {
            chart = e.chart.or(chart);
        }
        for (t, v) in e.points {
            all.insert(t, v);
        }
    }
    Ok(from.map(|f| crate::decision::EvidenceSeries {
        annotations,
        chart,
        breach_from: Ts(f),
        points: all.into_iter().map(|(t, v)| (Ts(t), v)).collect(),
    }))
}

/// The decisions of a batch whose evidence is new: (incident, decision
/// time, points) once per piece of evidence (the decisions taken together
/// share one).
fn evidence_of<'a>(batch: &'a Batch<'_>) -> Vec<(&'a str, Ts, String)> {
    let mut out = Vec::new();
    let mut last: Option<&std::sync::Arc<crate::decision::EvidenceSeries>> = None;
    for (_, d) in &batch.decisions {
        let (Some(id), Some(e)) = (&d.incident, &d.evidence.0) else {
            continue;
        };
        if last.is_some_and(|l| std::sync::Arc::ptr_eq(l, e)) {
            continue;
        }
        last = Some(e);
        out.push((id.as_str(), d.at, evidence_json(e)));
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalOpened {
    Opened,
    /// The incident resolved before the request got recorded.
    IncidentOver,
    AlreadyOpen,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalDecided {
    Approved {
        /// The request approved.
        request_key: String,
        /// The rollbacks it released (one per instance of a batch
        /// incident's approved scope); empty if released before.
        rollback_keys: Vec<String>,
    },
    Rejected,
    /// There is a request, but it no longer waits (its state).
    NotWaiting(String),
    NoSuchApproval,
}

/// An approval request, for the API and the digest.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalRow {
    pub incident: String,
    pub request_key: String,
    pub tier: Tier,
    pub state: String,
    pub requested_at: Ts,
    pub expires_at: Ts,
    pub decided_by: Option<String>,
    pub decided_at: Option<Ts>,
    pub note: Option<String>,
    /// How the verdict came (link, api, cli).
    pub decided_via: Option<Via>,
    /// The blast radius approved, for a batch incident.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<ApprovedScope>,
}

/// The blast radius a human approved for a batch incident's rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ApprovedScope {
    /// `breaching`, `batch` or `chosen`.
    pub scope: String,
    /// The instances it rolls back, sorted.
    pub instances: Vec<String>,
}

impl ApprovedScope {
    /// "the whole batch: 10 instances (i-p01..i-p10)".
    pub fn describe(&self) -> String {
        let what = match self.scope.as_str() {
            "breaching" => "the breaching instances",
            "batch" => "the whole batch",
            _ => "chosen instances",
        };
        let names: Vec<&str> = self.instances.iter().map(String::as_str).collect();
        let n = names.len();
        format!(
            "{what}: {n} instance{} ({})",
            if n == 1 { "" } else { "s" },
            crate::text::compact_names(&names, 200)
        )
    }

    pub fn covers(&self, instance: &str) -> bool {
        self.instances.iter().any(|i| i == instance)
    }

    fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    fn from_json(s: Option<String>) -> Result<Option<ApprovedScope>, JournalError> {
        match s {
            None => Ok(None),
            Some(j) => serde_json::from_str(&j)
                .map(Some)
                .map_err(|e| JournalError::Corrupt(format!("approval scope: {e}"))),
        }
    }
}

/// The key of an approved (or timed-out) rollback of one instance of a
/// batch incident: `<request>/<suffix>@<instance>`. A plain incident's is
/// `<request>/<suffix>`.
pub fn instance_rollback_key(request_key: &str, suffix: &str, instance: &str) -> String {
    format!("{request_key}/{suffix}@{instance}")
}

/// The approval request an approved or timed-out rollback came from.
pub fn request_of_rollback(key: &str) -> Option<&str> {
    for suffix in ["/approved", "/timeout"] {
        if let Some(r) = key.strip_suffix(suffix) {
            return Some(r);
        }
        if let Some((r, _)) = key.split_once(&format!("{suffix}@")) {
            return Some(r);
        }
    }
    None
}

/// A request that waited too long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub incident: String,
    pub request_key: String,
    pub tier: Tier,
    /// The rollbacks recorded by the timeout policy, if it rolls back
    /// (one per breaching instance of a batch incident).
    pub rollback_keys: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EscalationRow {
    pub incident: String,
    pub tier: Tier,
    /// The step to run next (0 = the first).
    pub step: u32,
    pub started_at: Ts,
    pub next_at: Option<Ts>,
    pub state: String,
    pub acked_by: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RolloutRow {
    pub service: String,
    pub paused: bool,
    pub changed_at: Ts,
    pub changed_by: String,
    pub incident: Option<String>,
}

/// A sample check about to start (see [`Work::start_sample_check`]).
#[derive(Debug, Clone)]
pub struct SampleStart<'a> {
    /// The batch-done progress decision.
    pub from_key: &'a str,
    pub service: &'a str,
    pub batch: &'a str,
    /// When the batch reported done: with service and batch, the check.
    pub done_at: Ts,
    /// The instances picked.
    pub instances: &'a [String],
    /// How many instances the batch has.
    pub of: u32,
    pub due: Ts,
    pub now: Ts,
}

/// The key of `instance`'s verification in the sample check of `from_key`.
pub fn sample_key(from_key: &str, instance: &str) -> String {
    format!("{from_key}/sample/{instance}")
}

/// Where one sample instance's stages are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SampleState {
    Running,
    Passed,
    Failed,
}

impl SampleState {
    pub fn as_str(self) -> &'static str {
        match self {
            SampleState::Running => "running",
            SampleState::Passed => "passed",
            SampleState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Result<SampleState, JournalError> {
        Ok(match s {
            "running" => SampleState::Running,
            "passed" => SampleState::Passed,
            "failed" => SampleState::Failed,
            _ => return Err(JournalError::Corrupt(format!("sample state {s:?}"))),
        })
    }
}

/// One instance of a batch's sample check.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SampleRow {
    pub service: String,
    pub batch: String,
    pub done_at: Ts,
    pub instance: String,
    /// Its verification's key.
    pub key: String,
    pub state: SampleState,
    /// The stages passed so far ("system ok 10:03"), or the failing stage
    /// and what it reported.
    pub detail: String,
    /// How many instances the batch has.
    pub of: u32,
    pub updated_at: Ts,
}

/// The last progress an upgrade reported.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UpgradeRow {
    pub service: String,
    pub batch: Option<String>,
    pub stage: String,
    pub done: Option<u64>,
    pub total: Option<u64>,
    pub message: Option<String>,
    pub updated_at: Ts,
    /// Still running (not completed or failed).
    pub open: bool,
}

#[cfg(test)]
mod evidence_tests {
    use super::*;
    use crate::decision::EvidenceSeries;

    #[test]
    fn stored_evidence_keeps_an_alerts_annotations_and_reads_old_rows() {
        let e = EvidenceSeries {
            breach_from: Ts(1000),
            points: vec![(Ts(1000), 0.5)],
            annotations: vec![("summary".into(), "5xx \"up\"\n<b>".into())],
            chart: None,
        };
        let back = merge_evidence(&[evidence_json(&e)]).unwrap().unwrap();
        assert_eq!(back, e);
        // Rows written before annotations existed still read.
        let old = merge_evidence(&["{\"from\":5,\"points\":[[5,1.0]]}".into()])
            .unwrap()
            .unwrap();
        assert!(old.annotations.is_empty());
        assert!(
            !evidence_json(&old).contains("annotations"),
            "nothing added to plain rows"
        );
    }
}
