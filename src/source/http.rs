//! The HTTP receiver: Alertmanager's webhook and a generic events endpoint,
//! plus health, readiness and metrics.
//!
//! `POST /api/v1/alerts` takes an Alertmanager webhook payload;
//! `POST /api/v1/events` a JSON array or JSON lines of any event form.
//! A request is answered 2xx only once its decisions are in the journal;
//! 4xx names what is wrong and applies nothing of the request; 503 means
//! "try again" (queue full, journal slow), which Alertmanager does.
//! The bearer token is checked before the body is read.

use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::oneshot;

use crate::config::Secret;
use crate::event::Event;
use crate::health::Health;
use crate::pipeline::{Accepted, BodyForm, Submission, decode_body, not_from_the_future};
use crate::telemetry::{Metrics, Outcome, Source};
use crate::time::{Clock, Dur};

/// What the receiver's handlers share.
pub struct Intake {
    pub submit: SyncSender<Submission>,
    pub token: Option<Secret>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub max_body_bytes: usize,
    /// How long a request waits for the journal before answering 503.
    pub ack_timeout: Duration,
    pub clock: Arc<dyn Clock>,
    /// How far ahead of the clock an event may be stamped.
    pub max_future: Dur,
}

/// The receiver's routes. `extra` adds routes that share its auth (the
/// incidents API); `public` routes that carry their own credential (the
/// signed one-click links).
pub fn router(intake: Arc<Intake>, extra: Router, public: Router) -> Router {
    let limit = intake.max_body_bytes;
    let protected = Router::new()
        .route("/api/v1/alerts", post(alerts))
        .route("/api/v1/events", post(events))
        .with_state(intake.clone())
        .merge(extra)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(
            intake.clone(),
            require_token,
        ))
        .layer(middleware::from_fn_with_state(
            intake.clone(),
            reject_oversize,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(intake)
        .merge(protected)
        .merge(public)
}

fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, axum::Json(json!({ "error": msg.into() }))).into_response()
}

/// Bearer-token check, before any body is read. No token configured (only
/// allowed on a loopback listener) lets every request through.
async fn require_token(State(intake): State<Arc<Intake>>, req: Request, next: Next) -> Response {
    if let Some(token) = &intake.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t);
        if !given.is_some_and(|g| token.matches(g.trim().as_bytes())) {
            intake.metrics.http_request(req.uri().path(), 401);
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ripcord\""),
            );
            return r;
        }
    }
    next.run(req).await
}

/// Live while the pipeline turns; 503 with the reason otherwise.
async fn healthz(State(intake): State<Arc<Intake>>) -> Response {
    match intake.health.live() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {why}\n"),
        )
            .into_response(),
    }
}

/// Ready once everything produced from now on will be acted on; 503 with
/// the reason before that, and whenever it stops being true.
/// A body announced larger than the limit is 413 before anything else,
/// with or without a token: nobody's upload is read to the end for nothing.
async fn reject_oversize(State(intake): State<Arc<Intake>>, req: Request, next: Next) -> Response {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > intake.max_body_bytes as u64) {
        intake.metrics.http_request(req.uri().path(), 413);
        let mut r = error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is larger than http.max_body_bytes ({} bytes)",
                intake.max_body_bytes
            ),
        );
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    next.run(req).await
}

async fn readyz(State(intake): State<Arc<Intake>>) -> Response {
    match intake.health.ready() {
        Ok(what) => (StatusCode::OK, format!("ready: {what}\n")).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(intake): State<Arc<Intake>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        intake.metrics.render(),
    )
        .into_response()
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

async fn alerts(
    State(intake): State<Arc<Intake>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let endpoint = "/api/v1/alerts";
    let r = match (media_type(&headers).as_deref(), body) {
        (_, Err(rejected)) => too_large(rejected),
        (Some("application/json"), Ok(body)) => accept(&intake, body, BodyForm::Object, true).await,
        (other, Ok(_)) => error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type must be application/json, got {}",
                other.unwrap_or("none")
            ),
        ),
    };
    intake.metrics.http_request(endpoint, r.status().as_u16());
    r
}

/// A body that could not be read (over the size limit, or cut off): said
/// in JSON like every other answer, and counted.
fn too_large(rejected: BytesRejection) -> Response {
    let status = rejected.status();
    if timed_out(&rejected) {
        return error(
            StatusCode::REQUEST_TIMEOUT,
            "the body did not arrive within http.body_timeout",
        );
    }
    let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "the body is larger than http.max_body_bytes".to_owned()
    } else {
        format!("cannot read the body: {rejected}")
    };
    error(status, msg)
}

/// Whether reading the body failed because it took too long.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

async fn events(
    State(intake): State<Arc<Intake>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let endpoint = "/api/v1/events";
    let body = match body {
        Ok(b) => b,
        Err(rejected) => {
            let r = too_large(rejected);
            intake.metrics.http_request(endpoint, r.status().as_u16());
            return r;
        }
    };
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let r = match media_type(&headers).as_deref() {
        Some("application/json") if first == Some(b'[') => {
            accept(&intake, body, BodyForm::Array, false).await
        }
        Some("application/json") => accept(&intake, body, BodyForm::Object, false).await,
        Some(
            "application/x-ndjson" | "application/jsonl" | "application/json-seq" | "text/plain",
        ) => accept(&intake, body, BodyForm::Lines, false).await,
        other => error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type must be application/json (an array or one event) or application/x-ndjson (JSON lines), got {}",
                other.unwrap_or("none")
            ),
        ),
    };
    intake.metrics.http_request(endpoint, r.status().as_u16());
    r
}

/// Validates the whole body, hands it to the pipeline and waits for the
/// journal.
async fn accept(intake: &Intake, body: Bytes, form: BodyForm, alerts_only: bool) -> Response {
    let n = {
        let mut events = Vec::new();
        if let Err(e) = decode_body(&body, form, &mut events) {
            intake.metrics.decode_error(Source::Http, "body");
            intake.metrics.event(Source::Http, Outcome::DecodeError);
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
        if let Err(e) = not_from_the_future(&events, intake.clock.now(), intake.max_future) {
            intake.metrics.event(Source::Http, Outcome::FromTheFuture);
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
        if alerts_only && !events.iter().all(|e| matches!(e, Event::Alert(_))) {
            intake.metrics.event(Source::Http, Outcome::DecodeError);
            return error(
                StatusCode::BAD_REQUEST,
                "expected an Alertmanager webhook payload (\"version\":\"4\", \"alerts\":[…]); send other events to /api/v1/events",
            );
        }
        events.len()
    };
    let (tx, rx) = oneshot::channel();
    match intake.submit.try_send(Submission {
        body,
        form,
        ack: tx,
    }) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => return busy("ripcord is busy; retry shortly"),
        Err(TrySendError::Disconnected(_)) => {
            return busy("ripcord is shutting down; retry shortly");
        }
    }
    match tokio::time::timeout(intake.ack_timeout, rx).await {
        Ok(Ok(Ok(Accepted {
            events,
            decisions,
            dropped,
            unwatched,
        }))) => {
            debug_assert_eq!(events, n);
            // Taken, but not every event counted: say which and why, so a
            // sender with a skewed clock learns it from the answer.
            let dropped: serde_json::Map<String, serde_json::Value> = dropped
                .iter()
                .map(|(why, n)| ((*why).to_owned(), json!(n)))
                .collect();
            let used = (events as u64)
                .saturating_sub(dropped.values().filter_map(|v| v.as_u64()).sum::<u64>());
            (
                StatusCode::OK,
                axum::Json(json!({
                    "status": if dropped.is_empty() { "accepted" } else { "accepted, some events dropped" },
                    "events": events,
                    "used": used,
                    "dropped": dropped,
                    "unwatched": unwatched,
                    "decisions": decisions,
                })),
            )
                .into_response()
        }
        Ok(Ok(Err(msg))) => error(StatusCode::INTERNAL_SERVER_ERROR, msg),
        Ok(Err(_)) => busy("ripcord stopped before recording the request; retry"),
        Err(_) => busy("the journal is slow; the request may be recorded, retrying is safe"),
    }
}

fn busy(msg: &str) -> Response {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, msg);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}
