//! ripcord's native metric sample:
//! `{"metric":"http_5xx_ratio","value":0.07,"ts":"2026-11-21T10:00:00Z","labels":{…}}`.

use super::DecodeError;
use super::fields::{Fields, LabelKind, is_metric_name};
use super::json::Json;
use crate::event::Sample;

pub(super) fn decode(mut f: Fields<'_>) -> Result<Sample<'_>, DecodeError> {
    let metric = f.str("metric")?;
    if !is_metric_name(&metric) {
        return Err(DecodeError::field(
            "metric",
            "is not a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*, at most 256 bytes)",
        ));
    }
    let value = match f.require("value")? {
        Json::Int(i) => i as f64,
        Json::UInt(u) => u as f64,
        Json::Float(x) => x,
        other => {
            return Err(DecodeError::field(
                "value",
                format!("expected a number, got {}", other.describe()),
            ));
        }
    };
    let ts = f.ts("ts")?;
    let labels = f.labels("labels", LabelKind::Labels)?;
    f.deny_unknown("a metric sample")?;
    Ok(Sample {
        metric,
        value,
        ts,
        labels,
    })
}
