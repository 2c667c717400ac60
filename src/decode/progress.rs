//! Upgrade progress from the rollout orchestrator:
//! `{"kind":"progress","ts":…,"labels":{"service":…,"batch":…},"stage":"batch_done","done":10,"total":100,"message":"…"}`.

use super::DecodeError;
use super::fields::{Fields, LabelKind};
use crate::event::{Progress, Stage};

pub(super) fn decode(mut f: Fields<'_>) -> Result<Progress<'_>, DecodeError> {
    let kind = f.str("kind")?;
    if kind != "progress" {
        return Err(DecodeError::field(
            "kind",
            format!("is {kind:?}; the only kind is \"progress\""),
        ));
    }
    let ts = f.ts("ts")?;
    let labels = f.labels("labels", LabelKind::Labels)?;
    if labels.get("service").is_none() {
        return Err(DecodeError::field("labels.service", "is missing"));
    }
    let stage_text = f.str("stage")?;
    let stage = Stage::parse(&stage_text).ok_or_else(|| {
        DecodeError::field(
            "stage",
            format!("is {stage_text:?}; expected batch_started, batch_done, completed or failed"),
        )
    })?;
    let done = f.opt_u64("done")?;
    let total = f.opt_u64("total")?;
    if let (Some(d), Some(t)) = (done, total) {
        if d > t {
            return Err(DecodeError::field(
                "done",
                format!("{d} is more than total {t}"),
            ));
        }
    }
    let message = f.opt_str("message")?;
    if message
        .as_ref()
        .is_some_and(|m| m.len() > super::limits::MAX_ANNOTATION_BYTES)
    {
        return Err(DecodeError::field("message", "is longer than 16 KiB"));
    }
    f.deny_unknown("an upgrade progress event")?;
    Ok(Progress {
        ts,
        labels,
        stage,
        done,
        total,
        message,
    })
}
