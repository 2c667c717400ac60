//! `/api/v2/alerts`: in, Prometheus' alerts (the intake's); out, ripcord's
//! open incidents as Alertmanager's gettable alerts.
//!
//! An incident's labels are its group's (an alert's own labels) plus
//! `alertname` (the rule, when the labels have none), `rule`, `tier` and
//! `severity`: the labels a silence matches it on, so a filter or a silence
//! written against `amtool alert query`'s output selects the same
//! incidents. Its state is `suppressed` while an active silence matches it
//! (`silencedBy` names them; a `notify` silence mutes messages only, but it
//! silences the alert in Alertmanager's sense), else `active`; nothing is
//! ever inhibited or unprocessed.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{AlertmanagerApi, RECEIVER, bad_query, err, filters, flag, params};
use crate::journal::IncidentRow;
use crate::rule::Matcher;
use crate::silence::{Compiled, SilenceState, labels_of_incident};
use crate::time::{Dur, Ts};

/// How long an open incident's `endsAt` reaches ahead: Alertmanager's
/// default `resolve_timeout`, which it gives an alert with no end.
const OPEN_FOR: Dur = Dur::from_mins(5);

/// The longest receiver regex accepted (it is compiled per request).
const MAX_RECEIVER_REGEX: usize = 1024;

pub(super) async fn post(
    State(api): State<Arc<AlertmanagerApi>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    crate::source::http::alerts_v2(State(api.intake.clone()), headers, body).await
}

/// What `GET /api/v2/alerts` keeps.
struct Wanted {
    matchers: Vec<Matcher>,
    active: bool,
    silenced: bool,
    /// `None`: every receiver; ripcord's one is `ripcord`.
    receiver_matches: bool,
}

fn wanted(query: Option<&str>) -> Result<Wanted, String> {
    let receiver_matches = match params(query, "receiver").last().filter(|r| !r.is_empty()) {
        None => true,
        Some(r) if r.len() > MAX_RECEIVER_REGEX => {
            return Err(format!("receiver: longer than {MAX_RECEIVER_REGEX} bytes"));
        }
        Some(r) => regex::RegexBuilder::new(&format!("^(?:{r})$"))
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("failed to parse receiver param: {e}"))?
            .is_match(RECEIVER),
    };
    // Inhibited and unprocessed alerts do not exist here: the flags are
    // checked, and change nothing.
    flag(query, "inhibited", true)?;
    flag(query, "unprocessed", true)?;
    Ok(Wanted {
        matchers: filters(query)?,
        active: flag(query, "active", true)?,
        silenced: flag(query, "silenced", true)?,
        receiver_matches,
    })
}

/// The open incidents as gettable alerts, sorted by fingerprint (as
/// Alertmanager sorts them), filtered as asked.
async fn gettable(api: &AlertmanagerApi, want: Wanted) -> Result<Vec<Value>, Response> {
    if !want.receiver_matches {
        return Ok(Vec::new());
    }
    let now = api.silences.clock.now();
    // The silences in force here, compiled once when they came in.
    let in_force = api.silences.guard.in_force();
    let found = api
        .incidents
        .with(move |j| {
            let silences: Vec<&Compiled> = in_force
                .iter()
                .map(|c| &**c)
                .filter(|c| c.silence.state(now) == SilenceState::Active)
                .collect();
            let mut out = Vec::new();
            for i in j.incidents(Some("open"))? {
                let labels = labels_of_incident(&i);
                if !want.matchers.iter().all(|m| m.matches(&labels)) {
                    continue;
                }
                let silenced_by: Vec<String> = silences
                    .iter()
                    .filter(|s| s.matches(&labels))
                    .map(|s| s.silence.id.clone())
                    .collect();
                let keep = if silenced_by.is_empty() {
                    want.active
                } else {
                    want.silenced
                };
                if !keep {
                    continue;
                }
                let annotations = j
                    .evidence(&i.id)?
                    .map(|e| e.annotations)
                    .unwrap_or_default();
                out.push(alert_of(&i, &annotations, silenced_by, now));
            }
            Ok(out)
        })
        .await;
    let mut alerts = found.map_err(|e| err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    alerts.sort_by(|a, b| a["fingerprint"].as_str().cmp(&b["fingerprint"].as_str()));
    Ok(alerts)
}

/// One incident as Alertmanager's `gettableAlert`.
fn alert_of(
    i: &IncidentRow,
    annotations: &[(String, String)],
    silenced_by: Vec<String>,
    now: Ts,
) -> Value {
    let labels = labels_of_incident(i);
    let fingerprint = crate::decode::fingerprint_of(&labels);
    let labels: Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();
    let mut notes: Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    // Where to look it up (and approve it): ripcord's own id.
    notes.insert("incident_id".into(), json!(i.id));
    let state = if silenced_by.is_empty() {
        "active"
    } else {
        "suppressed"
    };
    json!({
        "labels": labels,
        "annotations": notes,
        "receivers": [{"name": RECEIVER}],
        "fingerprint": fingerprint,
        "startsAt": i.opened_at,
        "updatedAt": now,
        "endsAt": now.saturating_add(OPEN_FOR),
        "status": {"state": state, "silencedBy": silenced_by, "inhibitedBy": []},
    })
}

/// The alerts a query asks for, or the answer saying why not.
async fn asked(api: &AlertmanagerApi, query: Option<&str>) -> Result<Vec<Value>, Response> {
    gettable(api, wanted(query).map_err(bad_query)?).await
}

pub(super) async fn list(
    State(api): State<Arc<AlertmanagerApi>>,
    RawQuery(q): RawQuery,
) -> Response {
    match asked(&api, q.as_deref()).await {
        Ok(alerts) => axum::Json(alerts).into_response(),
        Err(r) => r,
    }
}

/// `GET /api/v2/alerts/groups`: one group (ripcord routes nothing), its
/// labels empty, holding every alert the filters keep.
pub(super) async fn groups(
    State(api): State<Arc<AlertmanagerApi>>,
    RawQuery(q): RawQuery,
) -> Response {
    match asked(&api, q.as_deref()).await {
        Ok(alerts) if alerts.is_empty() => axum::Json(json!([])).into_response(),
        Ok(alerts) => axum::Json(json!([{
            "labels": {},
            "receiver": {"name": RECEIVER},
            "alerts": alerts,
        }]))
        .into_response(),
        Err(r) => r,
    }
}
