//! Alertmanager's v2 `postableAlerts` (api/v2/openapi.yaml): the bare JSON
//! array Prometheus POSTs to `/api/v2/alerts` for each host in
//! `alerting.alertmanagers`. Each element is `{labels, annotations?,
//! startsAt?, endsAt?, generatorURL?}`: no status and no fingerprint.
//!
//! It is rewritten, at receipt, into the webhook payload the decoder
//! already reads (and the journal keeps that, so a replay or another
//! replica reads the same events):
//! - an alert whose `endsAt` has passed is `resolved`, any other `firing`
//!   (Prometheus marks a resolved alert so, and sends a firing one with
//!   `endsAt` a few resend intervals ahead);
//! - `startsAt` missing (or Go's zero time) is `endsAt` if given, else now,
//!   as Alertmanager's `postAlertsHandler` does;
//! - the fingerprint is left to the decoder (a hash of the labels), so
//!   Prometheus' resends of one alert are one identity, and a firing with
//!   the same `startsAt` never fires twice.
//!
//! Fields ripcord does not use are tolerated, as in the webhook form; the
//! ones it uses are checked by the webhook decoder, and structural problems
//! here name the element.

use serde_json::{Map, Value, json};

use super::DecodeError;
use crate::time::Ts;

/// The webhook payload (`"version": "4"`) for a v2 array of postable
/// alerts, as of `now`.
pub fn webhook_of_postable(body: &[u8], now: Ts) -> Result<Vec<u8>, DecodeError> {
    let items: Vec<Value> = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(items)) => items,
        Ok(other) => {
            return Err(DecodeError::field(
                "(body)",
                format!(
                    "is {}; expected a JSON array of alerts (Alertmanager's postableAlerts)",
                    kind(&other)
                ),
            ));
        }
        Err(e) => return Err(DecodeError::Syntax(e.to_string())),
    };
    if items.is_empty() {
        return Err(DecodeError::field("(body)", "is an empty array: no alerts"));
    }
    let mut alerts = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let Value::Object(mut a) = item else {
            return Err(DecodeError::field(
                format!("alerts[{i}]"),
                format!("is {}; expected an alert object", kind(&item)),
            ));
        };
        let starts = time_of(&mut a, "startsAt", i)?;
        let ends = time_of(&mut a, "endsAt", i)?;
        let resolved = ends.as_ref().is_some_and(|(_, t)| *t <= now);
        let starts_at = match (starts, &ends) {
            (Some((text, _)), _) => text,
            (None, Some((text, _))) => text.clone(),
            (None, None) => now.to_string(),
        };
        let mut out = Map::new();
        out.insert(
            "status".into(),
            json!(if resolved { "resolved" } else { "firing" }),
        );
        out.insert("startsAt".into(), json!(starts_at));
        if let Some((text, _)) = ends {
            out.insert("endsAt".into(), json!(text));
        }
        // The rest goes as it came; the webhook decoder checks labels
        // (alertname among them) and annotations, naming the element.
        for key in ["labels", "annotations", "generatorURL"] {
            if let Some(v) = a.remove(key) {
                out.insert(key.into(), v);
            }
        }
        if !out.contains_key("labels") {
            return Err(DecodeError::field(
                format!("alerts[{i}].labels"),
                "is missing",
            ));
        }
        alerts.push(Value::Object(out));
    }
    let payload = json!({"version": "4", "alerts": alerts});
    Ok(serde_json::to_vec(&payload).unwrap_or_default())
}

/// A time field as written (for the payload) and read (to compare): absent,
/// `null` and Go's zero time are `None`.
fn time_of(
    a: &mut Map<String, Value>,
    key: &str,
    i: usize,
) -> Result<Option<(String, Ts)>, DecodeError> {
    match a.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() || s.starts_with("0001-01-01") => Ok(None),
        Some(Value::String(s)) => match Ts::parse_rfc3339_general(&s) {
            Ok(t) => Ok(Some((s, t))),
            Err(e) => Err(DecodeError::field(format!("alerts[{i}].{key}"), e)),
        },
        Some(other) => Err(DecodeError::field(
            format!("alerts[{i}].{key}"),
            format!("is {}; expected an RFC 3339 time", kind(&other)),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AlertStatus, Event};

    fn now() -> Ts {
        Ts::parse_rfc3339("2026-12-05T10:00:00Z").unwrap()
    }

    fn alerts(body: &str) -> Vec<(AlertStatus, String, Ts, Option<Ts>)> {
        let payload = webhook_of_postable(body.as_bytes(), now()).unwrap();
        let mut events = Vec::new();
        crate::decode::decode(&payload, &mut events).unwrap();
        events
            .into_iter()
            .map(|e| match e {
                Event::Alert(a) => (a.status, a.fingerprint.into_owned(), a.starts_at, a.ends_at),
                other => panic!("not an alert: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn prometheus_firing_and_resolved_alerts_become_webhook_alerts() {
        // As Prometheus' notifier sends them: firing with endsAt ahead,
        // resolved with endsAt passed; no status, no fingerprint.
        let got = alerts(
            r#"[{"labels":{"alertname":"Down","instance":"i-1"},"annotations":{"summary":"s"},
                 "startsAt":"2026-12-05T09:58:00.123Z","endsAt":"2026-12-05T10:04:00Z",
                 "generatorURL":"http://prom:9090/graph?g0.expr=up+%3D%3D+0"},
                {"labels":{"alertname":"Down","instance":"i-2"},
                 "startsAt":"2026-12-05T09:50:00Z","endsAt":"2026-12-05T09:59:00Z"}]"#,
        );
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, AlertStatus::Firing);
        assert_eq!(got[1].0, AlertStatus::Resolved);
        assert_eq!(got[1].3, Ts::parse_rfc3339("2026-12-05T09:59:00Z").ok());
        // One label set, one identity, whatever the resend carries.
        let again = alerts(
            r#"[{"labels":{"instance":"i-1","alertname":"Down"},"startsAt":"2026-12-05T09:58:00.123Z","endsAt":"2026-12-05T10:05:00Z"}]"#,
        );
        assert_eq!(again[0].1, got[0].1);
        assert_eq!(again[0].2, got[0].2);
    }

    #[test]
    fn a_missing_start_is_the_end_or_now() {
        let got = alerts(
            r#"[{"labels":{"alertname":"A"}},
                {"labels":{"alertname":"B"},"startsAt":"0001-01-01T00:00:00Z","endsAt":"2026-12-05T09:00:00Z"}]"#,
        );
        assert_eq!((got[0].0, got[0].2), (AlertStatus::Firing, now()));
        assert_eq!(
            (got[1].0, got[1].2),
            (
                AlertStatus::Resolved,
                Ts::parse_rfc3339("2026-12-05T09:00:00Z").unwrap()
            )
        );
    }

    #[test]
    fn what_is_wrong_is_named() {
        let err = |b: &str| {
            webhook_of_postable(b.as_bytes(), now())
                .unwrap_err()
                .to_string()
        };
        assert!(err(r#"{"alerts":[]}"#).contains("expected a JSON array"));
        assert!(err("[]").contains("no alerts"));
        assert!(err("[1]").contains("alerts[0]"));
        assert!(
            err(r#"[{"labels":{"alertname":"A"}},{"annotations":{}}]"#)
                .contains("alerts[1].labels")
        );
        assert!(
            err(r#"[{"labels":{"alertname":"A"},"endsAt":"yesterday"}]"#)
                .contains("alerts[0].endsAt")
        );
        assert!(err("[{").starts_with("not valid JSON"));
        // The webhook decoder names the rest (here: no alertname).
        let payload = webhook_of_postable(br#"[{"labels":{"job":"x"}}]"#, now()).unwrap();
        let e = crate::decode::decode(&payload, &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("alerts[0].labels.alertname"), "{e}");
    }
}
