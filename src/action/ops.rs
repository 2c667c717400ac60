//! What a human can do about an incident: approve or reject the prepared
//! rollback, acknowledge the page, resume a paused rollout. Approving the
//! rollback of a severe high-risk incident also shifts its service's
//! traffic to the standby pool; resuming the rollout sends it back. The HTTP API,
//! the signed links and the `ripcord` CLI all go through these, so every
//! path records the same facts (who, when, what) on the timeline.

use serde::Serialize;

use super::config::ActionsConfig;
use super::executor::{ExecOutcome, Vars};
use crate::decision::{Action, IncidentId, Severity, Tier};
use crate::journal::{ActionState, ApprovalDecided, Journal, JournalError, Verdict, Via};
use crate::time::Ts;

/// The outcome of a human's request, as the API and CLI report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Done {
    pub incident: String,
    /// Short, machine-friendly: approved, rejected, acknowledged, resumed.
    pub result: String,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("no incident {0}")]
    NoIncident(String),
    #[error("{0}")]
    NoRollout(String),
    #[error("{0}")]
    Conflict(String),
    #[error("say who you are (`by`): it goes on the incident's timeline")]
    Anonymous,
    #[error("the note is longer than {MAX_NOTE_CHARS} characters")]
    NoteTooLong,
    #[error(transparent)]
    Journal(#[from] JournalError),
}

fn who(by: &str) -> Result<&str, OpError> {
    let by = by.trim();
    if by.is_empty() || by.len() > 128 || by.chars().any(char::is_control) {
        return Err(OpError::Anonymous);
    }
    Ok(by)
}

/// A note goes on the timeline and into messages: bounded like `by`.
pub const MAX_NOTE_CHARS: usize = 512;

/// The note as recorded: trimmed, on one line (text from a form is data:
/// it never starts a timeline line of its own), bounded.
fn checked_note(note: &str) -> Result<String, OpError> {
    let note = note.trim();
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(OpError::NoteTooLong);
    }
    Ok(crate::text::one_line(note).into_owned())
}

fn known(j: &dyn Journal, incident: &str) -> Result<(), OpError> {
    match j.incident(incident)? {
        Some(_) => Ok(()),
        None => Err(OpError::NoIncident(incident.to_owned())),
    }
}

/// Approves or rejects the incident's waiting rollback request.
pub fn decide(
    j: &mut dyn Journal,
    incident: &str,
    verdict: Verdict,
    by: &str,
    note: &str,
    via: Via,
    now: Ts,
) -> Result<Done, OpError> {
    let by = who(by)?;
    let note = checked_note(note)?;
    known(j, incident)?;
    let result = match j.decide_approval(incident, verdict, by, &note, via, now)? {
        ApprovalDecided::Approved { rollback_key } => Done {
            incident: incident.to_owned(),
            result: "approved".into(),
            detail: match rollback_key {
                Some(k) => {
                    let mut detail = format!("rollback released ({k}); it starts within seconds");
                    for (action, key) in release_with_rollback(j, incident, &k, by, now)? {
                        detail.push_str(&format!("; {action} released beside it ({key})"));
                    }
                    detail
                }
                None => "rollback was already released".into(),
            },
        },
        ApprovalDecided::Rejected => Done {
            incident: incident.to_owned(),
            result: "rejected".into(),
            detail: "no rollback will run for this request".into(),
        },
        ApprovalDecided::NotWaiting(state) => {
            return Err(OpError::Conflict(format!(
                "the approval request of {incident} is {state}, not waiting for a decision"
            )));
        }
        ApprovalDecided::NoSuchApproval => {
            return Err(OpError::Conflict(format!(
                "{incident} has no rollback waiting for approval"
            )));
        }
    };
    Ok(result)
}

/// Records what the approval of `incident`'s rollback releases beside it
/// (see [`crate::rule::policy::on_approval`]): each action derived from the
/// rollback's decision `rollback_key` as `<rollback_key>/<action>`, so it is
/// recorded once however often this runs. Recorded after the rollback, so
/// it is claimed after it, and runs beside it (its own executor slot),
/// never waiting for the rollback to end. Called again when the rollback
/// starts, so a process that died between the approval's commit and this
/// one loses nothing.
pub(crate) fn release_with_rollback(
    j: &mut dyn Journal,
    incident: &str,
    rollback_key: &str,
    by: &str,
    now: Ts,
) -> Result<Vec<(Action, String)>, JournalError> {
    let Some(row) = j.incident(incident)? else {
        return Ok(Vec::new());
    };
    // The incident's severity now: it may have worsened since the request.
    let (Ok(tier), Ok(severity)) = (row.tier.parse::<Tier>(), row.severity.parse::<Severity>())
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for &action in crate::rule::policy::on_approval(tier, severity) {
        let message = format!(
            "{severity} {tier}-risk incident: the rollback approved by {by} goes with {}",
            super::message::doing(action)
        );
        if let Some(key) = j.derive_action(rollback_key, action, action.as_str(), &message, now)? {
            out.push((action, key));
        }
    }
    Ok(out)
}

/// Acknowledges the incident: stops its paging.
pub fn ack(j: &mut dyn Journal, incident: &str, by: &str, now: Ts) -> Result<Done, OpError> {
    let by = who(by)?;
    known(j, incident)?;
    let stopped = j.stop_escalation(incident, "acked", Some(by), now)?;
    if !stopped {
        j.add_timeline(
            &IncidentId::from_string(incident),
            now,
            "page",
            &format!("acknowledged by {by}"),
        )?;
    }
    Ok(Done {
        incident: incident.to_owned(),
        result: "acknowledged".into(),
        detail: if stopped {
            "paging stopped".into()
        } else {
            "no paging was running".into()
        },
    })
}

/// Resumes a rollout ripcord paused: runs `resume_rollout` if configured,
/// then records it.
pub async fn resume(
    journal: &super::SharedJournal,
    cfg: &ActionsConfig,
    service: &str,
    by: &str,
    now: Ts,
) -> Result<Done, OpError> {
    let by = who(by)?.to_owned();
    let svc = service.to_owned();
    let rollouts = super::with_journal(journal, move |j| j.rollouts()).await?;
    match rollouts.iter().find(|r| r.service == svc) {
        Some(r) if r.paused => {}
        Some(r) => {
            return Err(OpError::Conflict(format!(
                "the rollout of {service} is not paused (resumed by {} at {})",
                r.changed_by, r.changed_at
            )));
        }
        None => {
            let paused: Vec<&str> = rollouts
                .iter()
                .filter(|r| r.paused)
                .map(|r| r.service.as_str())
                .collect();
            return Err(OpError::NoRollout(format!(
                "ripcord has not paused a rollout of `{}`; nothing resumed (paused now: {})",
                crate::text::one_line(service),
                if paused.is_empty() {
                    "none".to_owned()
                } else {
                    paused.join(", ")
                }
            )));
        }
    }
    let detail = match &cfg.resume {
        None => "recorded as resumed (no resume_rollout executor configured: resume it in the orchestrator)".to_owned(),
        Some(executor) => {
            let mut vars = Vars::default();
            vars.0.insert("service".into(), service.to_owned());
            vars.0.insert("tier".into(), Tier::High.to_string());
            vars.0.insert("severity".into(), Severity::Minor.to_string());
            vars.0.insert("action".into(), "resume_rollout".into());
            match executor.run(&vars, &cfg.patterns).await {
                ExecOutcome::Ok(d) => d,
                ExecOutcome::Failed(d) | ExecOutcome::Refused(d) => {
                    return Err(OpError::Conflict(format!("resuming {service} failed: {d}")));
                }
            }
        }
    };
    let (svc, who_) = (service.to_owned(), by.clone());
    let restores = super::with_journal(journal, move |j| {
        j.set_rollout(&svc, false, &who_, None, now)?;
        release_restores(j, &svc, &who_, now)
    })
    .await?;
    let mut detail = format!("{service} resumed by {by}: {detail}");
    if !restores.is_empty() {
        detail.push_str(&format!(
            "; traffic goes back to the primary pool ({})",
            restores.join(", ")
        ));
    }
    Ok(Done {
        incident: String::new(),
        result: "resumed".into(),
        detail,
    })
}

/// Records a `restore_traffic` for every traffic switch that ran for
/// `service` (done, failed or of unknown outcome: each may have moved
/// traffic), derived from the switch as `<switch_key>/restore_traffic`, so
/// a switch is restored once however often the rollout is resumed.
fn release_restores(
    j: &mut dyn Journal,
    service: &str,
    by: &str,
    now: Ts,
) -> Result<Vec<String>, JournalError> {
    let mut out = Vec::new();
    for inc in j.incidents(None)? {
        if inc.labels.get("service").and_then(|s| s.as_str()) != Some(service) {
            continue;
        }
        for a in j.actions_of(&inc.id)? {
            let ran = matches!(
                a.state,
                ActionState::Done | ActionState::Failed | ActionState::Unknown
            );
            if a.action != Action::SwitchTraffic || !ran {
                continue;
            }
            let message = format!(
                "the rollout of {service} was resumed by {by}: {}",
                super::message::doing(Action::RestoreTraffic)
            );
            if let Some(key) = j.derive_action(
                &a.key,
                Action::RestoreTraffic,
                Action::RestoreTraffic.as_str(),
                &message,
                now,
            )? {
                out.push(key);
            }
        }
    }
    Ok(out)
}
