//! Prometheus Alertmanager's webhook payload (`"version":"4"`): each alert in
//! `alerts[]` becomes one event.
//!
//! Fields ripcord does not use (groupKey, receiver, externalURL, …) are
//! tolerated, unknown ones too: Alertmanager adds fields between releases and
//! a new field must not stop alerts. The fields ripcord does use are checked
//! strictly.

use std::borrow::Cow;
use std::hash::Hasher;

use super::DecodeError;
use super::fields::{Fields, LabelKind, as_str, ts_value};
use super::json::Json;
use crate::event::{Alert, AlertStatus, Event, Labels};

pub(super) fn decode<'a>(mut f: Fields<'a>, out: &mut Vec<Event<'a>>) -> Result<(), DecodeError> {
    let version = f.str("version")?;
    if version != "4" {
        return Err(DecodeError::field(
            "version",
            format!("is {version:?}; ripcord reads Alertmanager webhook version \"4\""),
        ));
    }
    let alerts = match f.require("alerts")? {
        Json::Array(items) => items,
        other => {
            return Err(DecodeError::field(
                "alerts",
                format!("expected an array, got {}", other.describe()),
            ));
        }
    };
    // Decode everything before appending anything: a payload is all or nothing.
    let mut decoded = Vec::with_capacity(alerts.len());
    for (i, item) in alerts.into_iter().enumerate() {
        decoded.push(Event::Alert(alert(Fields::new(
            &format!("alerts[{i}]"),
            item,
        )?)?));
    }
    out.extend(decoded);
    Ok(())
}

/// The longest `generatorURL` kept (an expression of several KiB is rare).
const MAX_GENERATOR_URL: usize = 8 * 1024;

fn alert(mut f: Fields<'_>) -> Result<Alert<'_>, DecodeError> {
    let status_text = f.str("status")?;
    let status = match status_text.as_ref() {
        "firing" => AlertStatus::Firing,
        "resolved" => AlertStatus::Resolved,
        other => {
            return Err(DecodeError::field(
                f.path("status"),
                format!("is {other:?}; expected \"firing\" or \"resolved\""),
            ));
        }
    };
    let labels = f.labels("labels", LabelKind::Labels)?;
    if labels.get("alertname").is_none() {
        return Err(DecodeError::field(f.path("labels.alertname"), "is missing"));
    }
    let annotations = f.labels("annotations", LabelKind::Annotations)?;
    let starts_at = f.ts("startsAt")?;
    // Alertmanager writes the zero time (0001-01-01T00:00:00Z) for "no end yet".
    let ends_at = match f.take("endsAt") {
        None => None,
        Some(Json::Str(s)) if s.starts_with("0001-01-01") => None,
        Some(v) => Some(ts_value(v, &f.path("endsAt"))?),
    };
    if status == AlertStatus::Resolved && ends_at.is_none() {
        return Err(DecodeError::field(
            f.path("endsAt"),
            "is missing; a resolved alert needs its end time",
        ));
    }
    let fingerprint = match f.take("fingerprint") {
        Some(v) => as_str(v, &f.path("fingerprint"))?,
        None => Cow::Owned(fingerprint_of(&labels)),
    };
    if fingerprint.is_empty() || fingerprint.len() > 128 {
        return Err(DecodeError::field(
            f.path("fingerprint"),
            "must be 1 to 128 bytes",
        ));
    }
    // The chart's source. A link longer than any expression worth drawing
    // is dropped, not refused: the alert still acts.
    let generator_url = f
        .opt_str("generatorURL")?
        .filter(|u| !u.is_empty() && u.len() <= MAX_GENERATOR_URL);
    Ok(Alert {
        status,
        labels,
        annotations,
        starts_at,
        ends_at,
        fingerprint,
        generator_url,
    })
}

/// A stable identity for a label set, for senders that omit `fingerprint`.
pub(crate) fn fingerprint_of(labels: &Labels<'_>) -> String {
    let mut pairs: Vec<(&str, &str)> = labels.iter().collect();
    pairs.sort_unstable();
    let mut h = siphasher::sip::SipHasher13::new();
    for (k, v) in pairs {
        h.write(k.as_bytes());
        h.write_u8(0xff);
        h.write(v.as_bytes());
        h.write_u8(0xff);
    }
    format!("{:016x}", h.finish())
}
