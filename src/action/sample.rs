//! The sample check after each batch (the plan: "after the upgrade,
//! sample-check 10% of upgraded instances", on the medium tier by
//! default): when a batch reports `batch_done`, the rollback executor's
//! verification stages run on a random share of its instances.
//!
//! - The pick is made once, by the process that handles the batch done's
//!   progress message, and journaled with it ([`Work::start_sample_check`]):
//!   a restart or another replica never picks again.
//! - Each picked instance is a verification of its own (the same lease
//!   and stage journal as after a rollback), so one replica runs it and a
//!   passed stage never runs again.
//! - `windows: true` on a sample instance passes when no incident of the
//!   service is open on that instance (an incident opens only after its
//!   rule breached for its `for`; none open means its windows are calm).
//! - A failing instance: its row says which stage and why (the gate
//!   answers nogo), the tier's channels hear of it, and a firing alert
//!   `SampleCheckFailed` (severity `warning`: functional) for the instance
//!   goes through ripcord's own intake, so the rules open an incident and
//!   the tier's policy applies (medium: a human approves a rollback).
//!
//! [`Work::start_sample_check`]: crate::journal::Work::start_sample_check

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use super::config::{Probe, Verify};
use super::message::{Kind, Message};
use super::responder::Responder;
use crate::decision::{Decision, Tier};
use crate::journal::{SampleStart, SampleState};
use crate::pipeline::Submission;

/// How many of `n` instances `percent`% is: rounded up, at least one.
pub fn sample_size(n: usize, percent: f64) -> usize {
    if n == 0 || percent <= 0.0 {
        return 0;
    }
    ((n as f64 * percent / 100.0).ceil() as usize).clamp(1, n)
}

/// `k` of `instances`, chosen at random (a partial Fisher-Yates shuffle
/// driven by `seed`), sorted.
pub fn pick(instances: &[Box<str>], k: usize, seed: u64) -> Vec<String> {
    let mut all: Vec<&str> = instances.iter().map(|i| &**i).collect();
    let mut state = seed;
    let k = k.min(all.len());
    for i in 0..k {
        // splitmix64: cheap, and spread well enough to pick hosts.
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let j = i + (z % (all.len() - i) as u64) as usize;
        all.swap(i, j);
    }
    let mut out: Vec<String> = all[..k].iter().map(|s| (*s).to_owned()).collect();
    out.sort_unstable();
    out
}

/// A seed nobody can predict: std's per-process random hash keys.
fn random_seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

impl Responder {
    /// After a batch done's progress message: picks and journals the
    /// batch's sample check, when its tier runs one.
    pub(super) async fn start_sample_check(&self, d: &Decision) {
        let (Some(v), Some(b)) = (self.cfg.rollback.verify.as_ref(), d.batch.as_ref()) else {
            return;
        };
        let percent = self.cfg.sample_percent(d.tier);
        let k = sample_size(b.batch_instances.len(), percent);
        if k == 0 {
            return;
        }
        let picked = pick(&b.batch_instances, k, random_seed());
        let now = self.clock.now();
        let (from, service, batch) = (d.key.clone(), b.service.to_string(), b.batch.to_string());
        let (done_at, of, due) = (
            d.at,
            b.batch_instances.len() as u32,
            now.saturating_add(v.delay),
        );
        let names =
            crate::text::compact_names(&picked.iter().map(String::as_str).collect::<Vec<_>>(), 300);
        let started = self
            .journal
            .with(move |j| {
                j.start_sample_check(&SampleStart {
                    from_key: &from,
                    service: &service,
                    batch: &batch,
                    done_at,
                    instances: &picked,
                    of,
                    due,
                    now,
                })
            })
            .await;
        match started {
            Ok(true) => {
                tracing::info!(key = %d.key, instances = %names, "sample check started");
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, key = %d.key, "could not start a sample check"),
        }
    }

    /// Runs one sample instance's stages from the first that has not
    /// passed; the row says how far it got, a failure opens an incident.
    pub(super) async fn verify_sample(&self, a: &crate::journal::ActionRow, v: &Verify) {
        let d = &a.decision;
        let key = a.key.clone();
        let first = match self.journal.with(move |j| j.verification_stage(&key)).await {
            Ok(Some(s)) => s as usize,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, key = %a.key, "cannot read a verification's stage");
                return;
            }
        };
        let (service, batch) = (
            d.label("service").unwrap_or("?").to_owned(),
            d.label("batch").unwrap_or("?").to_owned(),
        );
        let instance = d.label("instance").unwrap_or("?").to_owned();
        // What passed before a restart.
        let (s, b, k) = (service.clone(), batch.clone(), a.key.clone());
        let mut passed = self
            .journal
            .with(move |j| j.sample_checks(&s, &b))
            .await
            .ok()
            .and_then(|rows| rows.into_iter().find(|r| r.key == k))
            .map(|r| r.detail)
            .unwrap_or_default();
        let lease = v.lease();
        for (i, stage) in v.stages.iter().enumerate().skip(first) {
            let result = match &stage.probe {
                Probe::Windows { .. } => self.instance_calm(&service, &instance).await,
                Probe::Check(_) => self.run_stage(stage, d).await,
            };
            let at = self.clock.now();
            match result {
                Ok(_) => {
                    let hhmm = at.to_string();
                    if !passed.is_empty() {
                        passed.push_str(", ");
                    }
                    passed.push_str(&format!(
                        "{} ok {}",
                        stage.name,
                        hhmm.get(11..16).unwrap_or(&hhmm)
                    ));
                    let (key, detail, held) =
                        (a.key.clone(), passed.clone(), at.saturating_add(lease));
                    if let Err(e) = self
                        .journal
                        .with(move |j| {
                            j.sample_result(&key, SampleState::Running, &detail, at)?;
                            j.pass_verification_stage(&key, i as u32, held)
                        })
                        .await
                    {
                        tracing::error!(error = %e, key = %a.key, "could not record a passed sample stage");
                        return;
                    }
                }
                Err(detail) => {
                    let why = format!("stage {} FAILED: {detail}", stage.name);
                    let (key, row) = (a.key.clone(), why.clone());
                    // The incident first: a crash before the row is written
                    // runs the stage again, and the same alert fires once.
                    self.open_sample_incident(d, &service, &batch, &instance, &why)
                        .await;
                    let _ = self
                        .journal
                        .with(move |j| {
                            j.sample_result(&key, SampleState::Failed, &row, at)?;
                            j.finish_verification(&key)
                        })
                        .await;
                    self.tell_sample(
                        d.tier,
                        format!(
                            "[{}] sample check of {service} batch {batch} FAILED on {instance} at stage {}",
                            d.tier.as_str().to_uppercase(),
                            stage.name
                        ),
                        detail,
                    )
                    .await;
                    return;
                }
            }
        }
        let (key, detail, at) = (a.key.clone(), passed, self.clock.now());
        if let Err(e) = self
            .journal
            .with(move |j| {
                j.sample_result(&key, SampleState::Passed, &detail, at)?;
                j.finish_verification(&key)
            })
            .await
        {
            tracing::error!(error = %e, key = %a.key, "could not record a passed sample check");
        }
    }

    /// ripcord's windows for one instance: no incident of the service open
    /// on it.
    async fn instance_calm(&self, service: &str, instance: &str) -> Result<String, String> {
        let s = service.to_owned();
        let open = self
            .journal
            .with(move |j| j.open_of_service(&s, 1_000))
            .await
            .map_err(|e| format!("cannot read the open incidents: {e}"))?;
        let on_it = open.rows.iter().find(|i| {
            i.labels.get("instance").and_then(|v| v.as_str()) == Some(instance)
                || i.batch
                    .as_ref()
                    .is_some_and(|b| b.members.iter().any(|m| &*m.instance == instance))
        });
        match on_it {
            Some(i) => Err(format!(
                "incident {} ({}) is open on {instance}",
                i.id, i.rule
            )),
            None => Ok(format!("no incident open on {instance}")),
        }
    }

    async fn tell_sample(&self, tier: Tier, title: String, detail: String) {
        let severity = crate::decision::Severity::Functional;
        self.tell(
            tier,
            Message::note(Kind::Outcome, tier, severity, None, title, detail),
        )
        .await;
    }

    /// A firing `SampleCheckFailed` alert for the instance, through
    /// ripcord's own intake (the rules open the incident; redelivered, it
    /// fires once: its fingerprint is the check's).
    async fn open_sample_incident(
        &self,
        d: &Decision,
        service: &str,
        batch: &str,
        instance: &str,
        why: &str,
    ) {
        let Some(intake) = self.findings.clone() else {
            tracing::warn!(key = %d.key, "sample check failed; no intake to open an incident through");
            return;
        };
        let mut labels = serde_json::Map::new();
        for (k, v) in d.labels.iter() {
            labels.insert(k.to_string(), v.to_string().into());
        }
        labels.insert("alertname".into(), "SampleCheckFailed".into());
        labels.insert("severity".into(), "warning".into());
        labels.insert("instance".into(), instance.into());
        let mut h = siphasher::sip::SipHasher13::new();
        h.write(d.key.as_bytes());
        let body = serde_json::json!({
            "version": "4",
            "status": "firing",
            "receiver": "ripcord",
            "alerts": [{
                "status": "firing",
                "labels": labels,
                "annotations": {
                    "summary": format!("sample check of {service} batch {batch}: {why} on {instance}"),
                },
                "startsAt": self.clock.now().to_string(),
                "fingerprint": format!("sample-{:016x}", h.finish()),
            }],
        });
        let body = bytes::Bytes::from(body.to_string());
        for _ in 0..30 {
            let (tx, rx) = tokio::sync::oneshot::channel();
            match intake.try_send(Submission {
                body: body.clone(),
                form: crate::decode::BodyForm::Object,
                ack: tx,
            }) {
                Ok(()) => {
                    match tokio::time::timeout(Duration::from_secs(30), rx).await {
                        Ok(Ok(Ok(_))) => {}
                        other => {
                            tracing::error!(key = %d.key, result = ?other.map(|r| r.map(|a| a.map(|_| ()))), "the sample check's alert was not taken")
                        }
                    }
                    return;
                }
                Err(std::sync::mpsc::TrySendError::Full(_)) => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return,
            }
        }
        tracing::error!(key = %d.key, "intake busy: the sample check's incident was not opened");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_a_rounded_up_share_and_at_least_one() {
        assert_eq!(sample_size(3, 10.0), 1);
        assert_eq!(sample_size(10, 10.0), 1);
        assert_eq!(sample_size(11, 10.0), 2);
        assert_eq!(sample_size(7, 100.0), 7);
        assert_eq!(sample_size(7, 0.0), 0);
        assert_eq!(sample_size(0, 10.0), 0);
    }

    #[test]
    fn a_pick_names_distinct_instances_of_the_batch_and_varies_with_the_seed() {
        let all: Vec<Box<str>> = (0..20).map(|i| format!("i-{i:02}").into()).collect();
        let a = pick(&all, 5, 1);
        assert_eq!(a.len(), 5);
        let mut d = a.clone();
        d.dedup();
        assert_eq!(d.len(), 5, "{a:?}");
        assert!(a.iter().all(|i| all.iter().any(|x| &**x == i)));
        let others: Vec<Vec<String>> = (2..10).map(|s| pick(&all, 5, s)).collect();
        assert!(others.iter().any(|o| *o != a), "the seed changes the pick");
        assert_eq!(pick(&all, 50, 3).len(), 20);
    }
}
