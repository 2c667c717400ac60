//! The silences API, in Alertmanager's v2 shapes (bearer-token protected):
//!
//! - `POST /api/v1/silences`: a `PostableSilence` (plus `scope`, and `until`
//!   instead of `endsAt`), answered `{"silenceID": "…"}`
//! - `GET /api/v1/silences[?state=active|pending|expired]`: `GettableSilence`s
//! - `GET /api/v1/silences/{id}`: one, with what it held back
//! - `DELETE /api/v1/silences/{id}[?by=…]`: expires it now

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{PostableSilence, Silence, SilenceError, SilenceState};
use crate::journal::{Shared, Silences};
use crate::time::{Clock, Ts};

pub struct SilenceApi {
    pub journal: Shared<dyn Silences>,
    pub clock: Arc<dyn Clock>,
    /// The silences in force: their limits, and the bytes budget a new
    /// one joins.
    pub guard: Arc<super::Guard>,
}

pub fn routes(api: Arc<SilenceApi>) -> Router {
    Router::new()
        .route("/api/v1/silences", get(list).post(create))
        .route("/api/v1/silences/{id}", get(show).delete(expire))
        .with_state(api)
}

/// Alertmanager's `GettableSilence`, with ripcord's `scope`, `until` and
/// who expired it.
pub fn gettable(s: &Silence, now: Ts) -> Value {
    json!({
        "id": s.id,
        "status": { "state": s.state(now).as_str() },
        "updatedAt": s.updated_at,
        "matchers": s.matchers,
        "startsAt": s.starts_at,
        "endsAt": s.ends_at,
        "createdBy": s.created_by,
        "comment": s.comment,
        "scope": s.scope,
        "until": s.until,
        "expiredBy": s.expired_by,
    })
}

fn err(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, axum::Json(json!({ "error": msg.into() }))).into_response()
}

/// The HTTP status for a refused silence request (the API and the console).
pub fn status_of(e: &SilenceError) -> StatusCode {
    match e {
        SilenceError::Invalid(_) => StatusCode::BAD_REQUEST,
        SilenceError::NotFound(_) => StatusCode::NOT_FOUND,
        SilenceError::AlreadyOver(_) => StatusCode::CONFLICT,
        SilenceError::Journal(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn error_response(e: SilenceError) -> Response {
    err(status_of(&e), e.to_string())
}

async fn create(State(api): State<Arc<SilenceApi>>, body: Bytes) -> Response {
    let post: PostableSilence = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return err(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid silence: {e} (Alertmanager's PostableSilence: matchers, startsAt, endsAt or until, createdBy, comment; optional scope notify|all)"
                ),
            );
        }
    };
    let (guard, now) = (api.guard.clone(), api.clock.now());
    match api
        .journal
        .with(move |j| Ok(super::create(j, post, &guard, now)))
        .await
    {
        Ok(Ok(s)) => {
            tracing::info!(silence = %s.id, by = %s.created_by, scope = s.scope.as_str(), "silence created");
            axum::Json(json!({ "silenceID": s.id })).into_response()
        }
        Ok(Err(e)) => error_response(e),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
}

async fn list(State(api): State<Arc<SilenceApi>>, Query(q): Query<ListQuery>) -> Response {
    let want = match q.state.as_deref() {
        None => None,
        Some("active") => Some(SilenceState::Active),
        Some("pending") => Some(SilenceState::Pending),
        Some("expired") => Some(SilenceState::Expired),
        Some(other) => {
            return err(
                StatusCode::BAD_REQUEST,
                format!("state `{other}`: expected active, pending or expired"),
            );
        }
    };
    let now = api.clock.now();
    match api.journal.with(move |j| j.silences(now, true)).await {
        Ok(all) => {
            let out: Vec<Value> = all
                .iter()
                .filter(|s| want.is_none_or(|w| s.state(now) == w))
                .map(|s| gettable(s, now))
                .collect();
            axum::Json(out).into_response()
        }
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn show(State(api): State<Arc<SilenceApi>>, Path(id): Path<String>) -> Response {
    let now = api.clock.now();
    let found = api
        .journal
        .with(move |j| {
            let Some(s) = j.silence(&id)? else {
                return Ok(None);
            };
            let held = j.holds_of(&s.id)?;
            Ok(Some((s, held)))
        })
        .await;
    match found {
        Ok(Some((s, held))) => {
            let mut v = gettable(&s, now);
            v["heldBack"] = json!(held);
            axum::Json(v).into_response()
        }
        Ok(None) => err(StatusCode::NOT_FOUND, "no such silence"),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[derive(Deserialize)]
struct ExpireQuery {
    by: Option<String>,
}

async fn expire(
    State(api): State<Arc<SilenceApi>>,
    Path(id): Path<String>,
    Query(q): Query<ExpireQuery>,
) -> Response {
    // Alertmanager's DELETE carries no body: who expired it is optional.
    let by = q.by.unwrap_or_else(|| "api".to_owned());
    let now = api.clock.now();
    match api
        .journal
        .with(move |j| Ok(super::expire(j, &id, &by, now)))
        .await
    {
        Ok(Ok(s)) => {
            tracing::info!(silence = %s.id, by = ?s.expired_by, "silence expired");
            StatusCode::OK.into_response()
        }
        Ok(Err(e)) => error_response(e),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}
