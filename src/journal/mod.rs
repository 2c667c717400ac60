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

use crate::decision::{Action, Decision, IncidentId, Tier};
use crate::engine::Incident;
use crate::time::{Dur, Ts};

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

    /// The verification of `key` ran and its result is on the timeline.
    fn finish_verification(&mut self, key: &str) -> Result<(), JournalError>;

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
    /// died mid-action. Rollbacks and rollout pauses become `unknown` (never
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

    fn incidents(&self, state: Option<&str>) -> Result<Vec<IncidentRow>, JournalError>;

    fn timeline(&self, incident: &str) -> Result<Vec<TimelineEntry>, JournalError>;

    fn actions_of(&self, incident: &str) -> Result<Vec<ActionRow>, JournalError>;

    fn incident(&self, id: &str) -> Result<Option<IncidentRow>, JournalError>;

    // ---- Approvals -------------------------------------------------------

    /// Opens the approval a `request_approval` decision asks for.
    fn open_approval(
        &mut self,
        incident: &str,
        request_key: &str,
        tier: Tier,
        at: Ts,
        expires: Ts,
    ) -> Result<ApprovalOpened, JournalError>;

    /// A human's verdict. Approving also records the rollback it releases
    /// (a pending action), in the same transaction.
    fn decide_approval(
        &mut self,
        incident: &str,
        verdict: Verdict,
        by: &str,
        note: &str,
        at: Ts,
    ) -> Result<ApprovalDecided, JournalError>;

    /// The incident recovered while the request waited: withdraws it.
    fn withdraw_approval(
        &mut self,
        incident: &str,
        reason: &str,
        at: Ts,
    ) -> Result<bool, JournalError>;

    /// Expires requests waiting past their deadline, each exactly once
    /// across processes. For tiers in `rollback_tiers` the rollback is
    /// recorded in the same transaction.
    fn expire_approvals(
        &mut self,
        now: Ts,
        rollback_tiers: &[Tier],
    ) -> Result<Vec<Expired>, JournalError>;

    fn approval(&self, incident: &str) -> Result<Option<ApprovalRow>, JournalError>;

    fn approvals(&self, state: Option<&str>) -> Result<Vec<ApprovalRow>, JournalError>;

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

    // ---- Escalations -----------------------------------------------------

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

    /// Stops paging; `state` says why (acked, resolved).
    fn stop_escalation(
        &mut self,
        incident: &str,
        state: &str,
        by: Option<&str>,
        at: Ts,
    ) -> Result<bool, JournalError>;

    fn escalation(&self, incident: &str) -> Result<Option<EscalationRow>, JournalError>;

    // ---- Rollouts, budget, upgrades, leases ------------------------------

    /// Admits the rollback `key` against the budget, atomically: counts the
    /// rollbacks admitted since `since` (for its service and overall; not
    /// this one) and, if both are under their limits, admits this one.
    /// Atomic so that rollbacks checked at the same moment, by one process
    /// or several, never all see the same count and all pass or all fail.
    fn admit_rollback(
        &mut self,
        key: &str,
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

    fn rollouts(&self) -> Result<Vec<RolloutRow>, JournalError>;

    fn record_progress(&mut self, p: &UpgradeRow) -> Result<(), JournalError>;

    fn upgrades(&self, open_only: bool) -> Result<Vec<UpgradeRow>, JournalError>;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Reject,
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
        rollback_key: Option<String>,
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
}

/// A request that waited too long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub incident: String,
    pub request_key: String,
    pub tier: Tier,
    /// The rollback recorded by the timeout policy, if it rolls back.
    pub rollback_key: Option<String>,
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
