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
//! The trait keeps storage replaceable: [`sqlite::SqliteJournal`] serves one
//! host (several processes may share its file); a shared database can
//! implement the same trait for several hosts.

pub mod sqlite;

use serde::Serialize;

use crate::decision::{Action, Decision, IncidentId};
use crate::engine::Incident;
use crate::time::Ts;

pub use sqlite::SqliteJournal;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("journal holds data this version cannot read: {0}")]
    Corrupt(String),
    #[error("cannot open journal {path}: {reason}")]
    Open { path: String, reason: String },
}

/// What one processed batch leaves behind.
#[derive(Debug, Default)]
pub struct Batch<'a> {
    /// Decisions with the input partition they came from.
    pub decisions: Vec<(&'a str, &'a Decision)>,
    /// Input positions reached: (partition, next offset to read).
    pub positions: Vec<(&'a str, i64)>,
    /// Request bodies accepted over HTTP, kept to warm windows after a restart.
    pub inbox: Vec<&'a [u8]>,
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
}

/// One line of an incident's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEntry {
    pub at: Ts,
    pub kind: String,
    pub message: String,
}

pub trait Journal: Send {
    /// Records a batch atomically. Returns, per decision in `batch`, whether
    /// it is new (false: recorded before, under the same key: do not act).
    fn commit(&mut self, batch: &Batch<'_>) -> Result<Vec<bool>, JournalError>;

    /// Next offset to read for `partition`, if the journal has one.
    fn position(&self, partition: &str) -> Result<Option<i64>, JournalError>;

    /// Open incidents that came from `partition`.
    fn open_incidents(&self, partition: &str) -> Result<Vec<Incident>, JournalError>;

    /// Incidents from `partition` resolved at or after `since` (event time),
    /// with the time each resolved.
    fn resolved_since(
        &self,
        partition: &str,
        since: Ts,
    ) -> Result<Vec<(Incident, Ts)>, JournalError>;

    /// HTTP bodies accepted at or after `since` (wall time), oldest first.
    fn inbox_since(&self, since: Ts) -> Result<Vec<Vec<u8>>, JournalError>;

    /// Forgets HTTP bodies older than `before`.
    fn prune_inbox(&mut self, before: Ts) -> Result<usize, JournalError>;

    /// Moves up to `limit` pending actions to running, owned by `owner`.
    fn claim_actions(&mut self, owner: &str, limit: usize) -> Result<Vec<ActionRow>, JournalError>;

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
    /// died mid-action. The actions become `unknown` (never re-run) and are
    /// returned so a human hears of them.
    fn reap(&mut self, stale: crate::time::Dur) -> Result<Vec<ActionRow>, JournalError>;

    fn add_timeline(
        &mut self,
        incident: &IncidentId,
        at: Ts,
        kind: &str,
        message: &str,
    ) -> Result<(), JournalError>;

    fn incidents(&self, state: Option<&str>) -> Result<Vec<IncidentRow>, JournalError>;

    fn timeline(&self, incident: &str) -> Result<Vec<TimelineEntry>, JournalError>;

    fn actions_of(&self, incident: &str) -> Result<Vec<ActionRow>, JournalError>;
}
