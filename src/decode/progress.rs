//! Upgrade progress from the rollout orchestrator:
//! `{"kind":"progress","ts":…,"labels":{"service":…,"batch":…},"stage":"batch_done","done":10,"total":100,"message":"…"}`,
//! optionally with `"instances": ["i-1", …]`, the batch's instances.

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
    let instances = match f.take("instances") {
        None => Vec::new(),
        Some(v) => instances(v, &f.path("instances"))?,
    };
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
        instances,
        message,
    })
}

/// Most instances one progress event may name (a batch of a large fleet).
pub const MAX_INSTANCES: usize = 10_000;

/// The batch's instances, when the orchestrator names them: strings that
/// are valid label values, each named once.
fn instances<'a>(
    v: super::json::Json<'a>,
    path: &str,
) -> Result<Vec<std::borrow::Cow<'a, str>>, DecodeError> {
    let super::json::Json::Array(items) = v else {
        return Err(DecodeError::field(
            path,
            format!("expected an array of instance names, got {}", v.describe()),
        ));
    };
    if items.len() > MAX_INSTANCES {
        return Err(DecodeError::field(
            path,
            format!("names {} instances, more than {MAX_INSTANCES}", items.len()),
        ));
    }
    let mut out: Vec<std::borrow::Cow<'a, str>> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("{path}[{i}]");
        let s = super::fields::as_str(item, &at)?;
        if s.is_empty() || s.len() > super::limits::MAX_LABEL_VALUE_BYTES {
            return Err(DecodeError::field(
                &at,
                "must be a non-empty instance name of at most 1024 bytes",
            ));
        }
        out.push(s);
    }
    out.sort_unstable();
    if let Some(w) = out.windows(2).find(|w| w[0] == w[1]) {
        return Err(DecodeError::field(
            path,
            format!(
                "names instance {:?} twice",
                crate::text::clip_bytes(&w[0], 64)
            ),
        ));
    }
    Ok(out)
}
