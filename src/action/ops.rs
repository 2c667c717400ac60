//! What a human can do about an incident: approve or reject the prepared
//! rollback, acknowledge the page, resume a paused rollout. Approving the
//! rollback of a severe high-risk incident also shifts its service's
//! traffic to the standby pool; resuming the rollout sends it back. The HTTP API,
//! the signed links and the `ripcord` CLI all go through these, so every
//! path records the same facts (who, when, what) on the timeline.

use serde::Serialize;

use super::config::ActionsConfig;
use super::executor::{ExecOutcome, Vars};
use crate::decision::{Action, BatchInfo, IncidentId, Severity, Tier};
use crate::journal::{
    ActionState, Acts, ApprovalDecided, ApprovedScope, JournalError, Verdict, Via,
};
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
    /// The blast radius asked for is not one ripcord can roll back.
    #[error("{0}")]
    BadScope(String),
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

/// Most instances a chosen blast radius may name.
pub const MAX_SCOPE_INSTANCES: usize = 2_000;

/// The blast radius a human chooses for a batch incident's rollback (the
/// plan: "a human confirms the blast radius (one host or many?)").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Scope {
    /// The instances breaching when approved (the default).
    #[default]
    Breaching,
    /// Every instance of the batch ripcord has seen or the orchestrator
    /// named.
    Batch,
    /// These instances, each one the batch is known to have.
    Instances(Vec<String>),
}

impl Scope {
    /// The API's form: `"breaching"`, `"batch"` or `{"instances": [...]}`.
    pub fn from_json(v: &serde_json::Value) -> Result<Scope, String> {
        match v {
            serde_json::Value::String(s) => match s.as_str() {
                "breaching" => Ok(Scope::Breaching),
                "batch" => Ok(Scope::Batch),
                other => Err(format!(
                    "scope {:?}: expected \"breaching\", \"batch\" or {{\"instances\": [...]}}",
                    crate::text::clip_bytes(other, 64)
                )),
            },
            serde_json::Value::Object(m) => {
                if let Some(k) = m.keys().find(|k| *k != "instances") {
                    return Err(format!(
                        "scope: unknown field {:?}; expected {{\"instances\": [...]}}",
                        crate::text::clip_bytes(k, 64)
                    ));
                }
                let Some(serde_json::Value::Array(items)) = m.get("instances") else {
                    return Err("scope.instances: expected an array of instance names".into());
                };
                let mut names = Vec::with_capacity(items.len().min(MAX_SCOPE_INSTANCES));
                for (i, item) in items.iter().enumerate() {
                    let Some(s) = item.as_str() else {
                        return Err(format!("scope.instances[{i}]: expected a string"));
                    };
                    names.push(s.to_owned());
                }
                Scope::chosen(names)
            }
            _ => Err("scope: expected \"breaching\", \"batch\" or {\"instances\": [...]}".into()),
        }
    }

    /// The CLI's and forms' form: `breaching`, `batch`, or instance names
    /// separated by commas.
    pub fn parse(s: &str) -> Result<Scope, String> {
        match s.trim() {
            "" | "breaching" => Ok(Scope::Breaching),
            "batch" => Ok(Scope::Batch),
            list => Scope::chosen(
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
        }
    }

    /// Chosen instances, checked: at least one, each a plausible name.
    pub fn chosen(mut names: Vec<String>) -> Result<Scope, String> {
        if names.is_empty() {
            return Err("scope: choose at least one instance".into());
        }
        if names.len() > MAX_SCOPE_INSTANCES {
            return Err(format!(
                "scope: {} instances chosen, more than {MAX_SCOPE_INSTANCES}",
                names.len()
            ));
        }
        for n in &names {
            if n.is_empty() || n.len() > 1024 || n.chars().any(char::is_control) {
                return Err(format!(
                    "scope: {:?} is not an instance name",
                    crate::text::clip_bytes(n, 64)
                ));
            }
        }
        names.sort();
        names.dedup();
        Ok(Scope::Instances(names))
    }

    /// What the scope rolls back of batch incident `b`: refused if it names
    /// an instance the batch is not known to have (a typo must never roll
    /// back another host).
    pub fn resolve(&self, b: &BatchInfo) -> Result<ApprovedScope, OpError> {
        let whole = || -> Vec<String> {
            let mut all: std::collections::BTreeSet<String> =
                b.batch_instances.iter().map(|i| i.to_string()).collect();
            all.extend(b.instances().into_iter().map(str::to_owned));
            all.into_iter().collect()
        };
        let (scope, instances) = match self {
            Scope::Breaching => ("breaching", b.breaching_targets()),
            Scope::Batch => ("batch", whole()),
            Scope::Instances(names) => {
                let known = whole();
                if let Some(unknown) = names.iter().find(|n| known.binary_search(n).is_err()) {
                    return Err(OpError::BadScope(format!(
                        "{:?} is not an instance of {} that ripcord knows of; known: {}",
                        crate::text::one_line(crate::text::clip_bytes(unknown, 64)),
                        b.name(),
                        crate::text::compact_names(
                            &known.iter().map(String::as_str).collect::<Vec<_>>(),
                            300
                        )
                    )));
                }
                ("chosen", names.clone())
            }
        };
        if instances.is_empty() {
            return Err(OpError::BadScope(format!(
                "{} has no instance ripcord knows of to roll back; choose the instances",
                b.name()
            )));
        }
        Ok(ApprovedScope {
            scope: scope.to_owned(),
            instances,
        })
    }
}

fn known(j: &dyn crate::journal::Reads, incident: &str) -> Result<(), OpError> {
    match j.incident(incident)? {
        Some(_) => Ok(()),
        None => Err(OpError::NoIncident(incident.to_owned())),
    }
}

/// Approves or rejects the incident's waiting rollback request. For a
/// batch incident, `scope` is the blast radius approved: one rollback runs
/// per instance it covers.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    j: &mut dyn Acts,
    incident: &str,
    verdict: Verdict,
    by: &str,
    note: &str,
    via: Via,
    now: Ts,
    scope: &Scope,
) -> Result<Done, OpError> {
    let by = who(by)?;
    let note = checked_note(note)?;
    let Some(row) = j.incident(incident)? else {
        return Err(OpError::NoIncident(incident.to_owned()));
    };
    let approved = match (&row.batch, verdict) {
        (Some(b), Verdict::Approve) => Some(scope.resolve(b)?),
        (None, Verdict::Approve) if *scope != Scope::Breaching => {
            return Err(OpError::BadScope(format!(
                "{incident} is not a batch incident: approving rolls back its own instance; \
                 leave the scope out"
            )));
        }
        _ => None,
    };
    let result =
        match j.decide_approval(incident, verdict, by, &note, via, now, approved.as_ref())? {
            ApprovalDecided::Approved {
                request_key,
                rollback_keys,
            } => Done {
                incident: incident.to_owned(),
                result: "approved".into(),
                detail: if rollback_keys.is_empty() {
                    "rollback was already released".into()
                } else {
                    let mut detail = match &approved {
                        Some(s) => format!(
                            "rollback of {} released; it starts within seconds",
                            s.describe()
                        ),
                        // Said in the incident's terms: the journal key
                        // means nothing to whoever approved.
                        None => format!(
                            "rollback of {} released; it starts within seconds",
                            row.labels
                                .get("instance")
                                .and_then(|v| v.as_str())
                                .map_or_else(
                                    || "the incident's instance".to_owned(),
                                    str::to_owned
                                )
                        ),
                    };
                    for (action, _) in release_with_rollback(j, incident, &request_key, by, now)? {
                        detail.push_str(&format!("; {action} released beside it"));
                    }
                    detail
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
/// approved request `request_key` as `<request_key>/approved/<action>`, so
/// it is recorded once however often this runs (and once for a batch
/// incident, however many instances roll back). Recorded after the rollback, so
/// it is claimed after it, and runs beside it (its own executor slot),
/// never waiting for the rollback to end. Called again when the rollback
/// starts, so a process that died between the approval's commit and this
/// one loses nothing.
pub(crate) fn release_with_rollback(
    j: &mut dyn Acts,
    incident: &str,
    request_key: &str,
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
        let suffix = format!("approved/{}", action.as_str());
        if let Some(key) = j.derive_action(request_key, action, &suffix, &message, now)? {
            out.push((action, key));
        }
    }
    Ok(out)
}

/// The journal line that says who acknowledged the incident first, as
/// "acknowledged by NAME", with its time; `None` while nobody has.
pub fn acknowledged(lines: &[crate::journal::TimelineEntry]) -> Option<(String, Ts)> {
    lines.iter().find_map(|t| {
        let who = t
            .message
            .strip_prefix("paging stopped: acked by ")
            .or_else(|| t.message.strip_prefix("acknowledged by "))?;
        Some((format!("acknowledged by {who}"), t.at))
    })
}

/// Acknowledges the incident: stops its paging. Once only: a second
/// acknowledgement (a double click, a second person) changes nothing and
/// says who was first.
pub fn ack(j: &mut dyn Acts, incident: &str, by: &str, now: Ts) -> Result<Done, OpError> {
    let by = who(by)?;
    known(j, incident)?;
    if let Some((first, at)) = acknowledged(&j.timeline(incident)?) {
        return Ok(Done {
            incident: incident.to_owned(),
            result: "already acknowledged".into(),
            detail: format!("already {first} at {}", crate::time::clock_words(now, at)),
        });
    }
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
    journal: &crate::journal::Shared<dyn Acts>,
    cfg: &ActionsConfig,
    service: &str,
    by: &str,
    now: Ts,
) -> Result<Done, OpError> {
    let by = who(by)?.to_owned();
    let svc = service.to_owned();
    let rollouts = journal.with(move |j| j.rollouts()).await?;
    match rollouts.iter().find(|r| r.service == svc) {
        Some(r) if r.paused => {}
        Some(r) => {
            return Err(OpError::Conflict(format!(
                "the rollout of {service} is not paused (resumed by {} at {})",
                r.changed_by,
                crate::time::clock_words(now, r.changed_at)
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
    let restores = journal
        .with(move |j| {
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
    j: &mut dyn Acts,
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
