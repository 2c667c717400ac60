//! The mute stage: before an action runs, the silences and maintenance
//! windows in force (read fresh from the journal, made on any replica)
//! may hold it back; what they hold is journaled as skipped, with the hold
//! on the incident's timeline and in the silence's audit, and never runs.
//! (The responder mutes an outcome or all-clear message the same way, and
//! the escalation a paging step; the decision is [`crate::silence::Guard`]'s.)

use super::{Dispatcher, LaneJournal};
use crate::decision::Action;
use crate::journal::ActionRow;

impl Dispatcher {
    /// Reads the silences in force: one made on any replica a moment ago
    /// counts for the actions about to start. On a journal error the last
    /// ones read stay in force.
    pub(super) async fn refresh_silences(&self, journal: &LaneJournal) {
        let now = self.clock.now();
        match journal.silences.with(move |j| j.silences(now, false)).await {
            Ok(s) => self.silences.set(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot read silences; the last ones read stay in force")
            }
        }
    }

    /// Whether a silence or maintenance window holds `action` back: if so
    /// it is journaled as skipped (with the hold on the incident's timeline
    /// and in the silence's audit) and printed, and does not run. The
    /// all-clear (`resolve`) always runs: it also withdraws approval
    /// requests and stops paging; the responder mutes its message.
    pub(super) async fn held_back(&self, action: &ActionRow, journal: &LaneJournal) -> bool {
        if action.action == Action::Resolve {
            return false;
        }
        let now = self.clock.now();
        let Some(hold) = self
            .silences
            .hold(action.action, &action.key, &action.decision, now)
        else {
            return false;
        };
        let record = crate::journal::HoldRecord {
            source: hold.source(),
            action_key: action.key.clone(),
            action: action.action,
            incident: action.incident.clone(),
            scope: hold.scope,
            detail: hold.detail.clone(),
            at: now,
        };
        let key = action.key.clone();
        match journal
            .silences
            .with(move |j| j.hold_action(&key, &record))
            .await
        {
            Ok(_) => {
                self.metrics
                    .action_finished(action.action, "held_back", 0.0);
                tracing::warn!(action = %action.action, key = %action.key, hold = %hold.detail, "action held back");
                if let Some(out) = &self.output {
                    out.held(&action.decision, action.action, &hold.detail);
                }
                true
            }
            Err(e) => {
                // Not recorded as held: it stays claimed and the reaper
                // hands it back (messages) or marks it unknown (executors)
                // if this process dies; here it is simply not run now.
                tracing::error!(error = %e, key = %action.key, "could not record a held-back action; it does not run");
                true
            }
        }
    }
}
