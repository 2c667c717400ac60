//! prometheus-kafka-adapter's JSON serialisation of a remote-write sample:
//! `{"timestamp":"2026-11-21T10:00:00Z","value":"0.3","name":"up","labels":{"__name__":"up",…}}`.
//!
//! The value is a string (Go's `strconv.FormatFloat`), so `NaN`, `+Inf` and
//! `-Inf` occur; NaN is Prometheus' staleness marker and passes through as a
//! non-finite sample that the engine skips.

use super::DecodeError;
use super::fields::{Fields, LabelKind, is_metric_name};
use crate::event::Sample;

pub(super) fn decode(mut f: Fields<'_>) -> Result<Sample<'_>, DecodeError> {
    let metric = f.str("name")?;
    if !is_metric_name(&metric) {
        return Err(DecodeError::field(
            "name",
            "is not a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*, at most 256 bytes)",
        ));
    }
    let text = f.str("value")?;
    let value = parse_go_float(&text)
        .ok_or_else(|| DecodeError::field("value", format!("{text:?} is not a number")))?;
    let ts = f.ts("timestamp")?;
    let mut labels = f.labels("labels", LabelKind::Labels)?;
    // The metric name is carried twice; keep it once, as the sample's metric.
    labels.0.retain(|(k, _)| k != "__name__");
    f.deny_unknown("a prometheus-kafka-adapter sample")?;
    Ok(Sample {
        metric,
        value,
        ts,
        labels,
    })
}

fn parse_go_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        other
            if other
                .bytes()
                .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
        {
            other.parse().ok()
        }
        _ => None,
    }
}
