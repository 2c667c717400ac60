//! The incidents API, bearer-token protected (same token as intake):
//! - `GET /api/v1/incidents[?state=open|resolved]`
//! - `GET /api/v1/incidents/{id}`: with its approval, paging, actions and timeline
//! - `POST /api/v1/incidents/{id}/approve|reject|ack` with `{"by": "...", "note": "..."}`
//! - `POST /api/v1/rollouts/{service}/resume` with `{"by": "..."}`
//!
//! The signed one-click links that act through it are people's pages:
//! [`crate::console::links`].

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Notify;

use crate::action::config::ActionsConfig;
use crate::action::links::{LinkSigner, Verb};
use crate::action::ops::{self, OpError};
use crate::journal::{Acts, Shared};
use crate::journal::{Verdict, Via};
use crate::time::Clock;

pub struct Api {
    /// People's verbs and what the API shows; nothing else.
    pub journal: Shared<dyn Acts>,
    pub cfg: Arc<ActionsConfig>,
    pub clock: Arc<dyn Clock>,
    pub links: Option<LinkSigner>,
    /// Wakes the dispatcher when an approval released a rollback.
    pub wake: Arc<Notify>,
}

/// Routes that need the bearer token.
pub fn protected(api: Arc<Api>) -> Router {
    Router::new()
        .route("/api/v1/incidents", get(list))
        .route("/api/v1/incidents/{id}", get(show))
        .route("/api/v1/incidents/{id}/{verb}", post(act))
        .route("/api/v1/rollouts/{service}/resume", post(resume))
        .with_state(api)
}

fn err(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, axum::Json(json!({ "error": msg.into() }))).into_response()
}

/// The HTTP status for a refused human request.
pub(crate) fn status_of(e: &OpError) -> StatusCode {
    match e {
        OpError::NoIncident(_) | OpError::NoRollout(_) => StatusCode::NOT_FOUND,
        OpError::Conflict(_) => StatusCode::CONFLICT,
        OpError::Anonymous | OpError::NoteTooLong | OpError::BadScope(_) => StatusCode::BAD_REQUEST,
        OpError::Journal(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn op_err(e: OpError) -> Response {
    err(status_of(&e), e.to_string())
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
}

async fn list(State(api): State<Arc<Api>>, Query(q): Query<ListQuery>) -> Response {
    if let Some(s) = &q.state {
        if s != "open" && s != "resolved" {
            return err(
                StatusCode::BAD_REQUEST,
                format!("state `{s}`: expected open or resolved"),
            );
        }
    }
    match api
        .journal
        .with(move |j| j.incidents(q.state.as_deref()))
        .await
    {
        Ok(rows) => axum::Json(json!({ "incidents": rows })).into_response(),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn show(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    let found = api.journal.with(move |j| {
        let Some(inc) = j.incident(&id)? else { return Ok(None) };
        Ok(Some(json!({
            "incident": inc,
            "approval": j.approval(&id)?,
            "paging": j.escalation(&id)?,
            "actions": j.actions_of(&id)?.iter().map(|a| json!({
                "key": a.key, "action": a.action, "state": a.state, "attempts": a.attempts, "detail": a.detail,
            })).collect::<Vec<_>>(),
            "timeline": j.timeline(&id)?,
        })))
    })
    .await;
    match found {
        Ok(Some(v)) => axum::Json(v).into_response(),
        Ok(None) => err(StatusCode::NOT_FOUND, "no such incident"),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Who acts, their note and, approving a batch incident's rollback, the
/// blast radius (`"breaching"`, `"batch"` or `{"instances": [...]}`).
#[derive(Deserialize, Default)]
pub(crate) struct Who {
    #[serde(default)]
    pub by: String,
    #[serde(default)]
    pub note: String,
    #[serde(default, deserialize_with = "scope_json")]
    pub scope: Option<ops::Scope>,
}

fn scope_json<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<ops::Scope>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    ops::Scope::from_json(&v)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Performs `verb` for `by`; shared by the API, the link form and the
/// console.
pub(crate) async fn perform(
    api: &Api,
    id: String,
    verb: Verb,
    who: Who,
    via: Via,
) -> Result<ops::Done, OpError> {
    let now = api.clock.now();
    // A link's verb says its blast radius unless the page chose another.
    let scope = who.scope.clone().unwrap_or(match verb {
        Verb::ApproveBatch => ops::Scope::Batch,
        _ => ops::Scope::Breaching,
    });
    let done = api
        .journal
        .with(move |j| {
            Ok(match verb {
                Verb::Approve | Verb::ApproveBatch => ops::decide(
                    j,
                    &id,
                    Verdict::Approve,
                    &who.by,
                    &who.note,
                    via,
                    now,
                    &scope,
                ),
                Verb::Reject => ops::decide(
                    j,
                    &id,
                    Verdict::Reject,
                    &who.by,
                    &who.note,
                    via,
                    now,
                    &ops::Scope::Breaching,
                ),
                Verb::Ack => ops::ack(j, &id, &who.by, now),
            })
        })
        .await??;
    if verb.approves() {
        api.wake.notify_one();
    }
    Ok(done)
}

async fn act(
    State(api): State<Arc<Api>>,
    Path((id, verb)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let Ok(verb) = verb.parse::<Verb>() else {
        return err(
            StatusCode::NOT_FOUND,
            format!("`{verb}`: expected approve, reject or ack"),
        );
    };
    let who: Who = match serde_json::from_slice(&body) {
        Ok(w) => w,
        Err(e) => {
            return err(
                StatusCode::BAD_REQUEST,
                format!(
                    "expected {{\"by\": \"your name\", \"note\": \"...\"}} (approving a batch incident, \
                     optionally \"scope\": \"breaching\" | \"batch\" | {{\"instances\": [...]}}): {e}"
                ),
            );
        }
    };
    match perform(&api, id, verb, who, Via::Api).await {
        Ok(done) => axum::Json(done).into_response(),
        Err(e) => op_err(e),
    }
}

async fn resume(
    State(api): State<Arc<Api>>,
    Path(service): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let who: Who = match serde_json::from_slice(&body) {
        Ok(w) => w,
        Err(e) => {
            return err(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"by\": \"your name\"}}: {e}"),
            );
        }
    };
    match ops::resume(&api.journal, &api.cfg, &service, &who.by, api.clock.now()).await {
        Ok(done) => axum::Json(done).into_response(),
        Err(e) => op_err(e),
    }
}
