//! Every HTTP route ripcord serves, in one table, with the layers that guard
//! them: the body-size check (before auth, so nobody's upload is read for
//! nothing), then the bearer token, then the handler. Handlers live with
//! their stage: intake in `source::http`, incidents in `api`, Alertmanager's
//! v2 API in `alertmanager`.
//!
//! Around every route: each request is counted by its route's template (so
//! a path carrying an id is one series), 404s as `unmatched`; and under
//! `/api/v2/` an error's body is a JSON string, Alertmanager's error shape
//! (its clients, amtool among them, print that string).

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::source::http::{Intake, alerts, events};

/// The routes. `protected` adds routes that share the intake's bearer token
/// (the incidents API); `public` routes that carry their own credential (the
/// signed one-click links).
pub fn router(intake: Arc<Intake>, protected: Router, public: Router) -> Router {
    let limit = intake.max_body_bytes;
    let protected = Router::new()
        .route("/api/v1/alerts", post(alerts))
        .route("/api/v1/events", post(events))
        .with_state(intake.clone())
        .merge(protected)
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
        .with_state(intake.clone())
        .merge(protected)
        .merge(public)
        .layer(middleware::from_fn(alertmanager_error_shape))
        .layer(middleware::from_fn_with_state(intake, count))
}

/// Counts every request by its route's template and status.
async fn count(State(intake): State<Arc<Intake>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let r = next.run(req).await;
    intake
        .metrics
        .http_request(route.as_deref().unwrap_or("unmatched"), r.status().as_u16());
    r
}

/// Bodies of error answers a handler may hold in memory to reshape.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Under `/api/v2/`, an error answered as `{"error": "…"}` is answered as
/// the JSON string `"…"` instead: Alertmanager's v2 spec says a 400 (and a
/// 404, 500) body is a string, and amtool prints it only then.
async fn alertmanager_error_shape(req: Request, next: Next) -> Response {
    let v2 = req.uri().path().starts_with("/api/v2/");
    let r = next.run(req).await;
    if !v2 || r.status().as_u16() < 400 {
        return r;
    }
    let (mut parts, body) = r.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ERROR_BODY).await else {
        return (
            parts.status,
            axum::Json("the error did not fit in its answer"),
        )
            .into_response();
    };
    let reshaped = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_owned));
    match reshaped {
        Some(msg) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            let json = serde_json::to_vec(&msg).unwrap_or_default();
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Response::from_parts(parts, axum::body::Body::from(json))
        }
        None => Response::from_parts(parts, axum::body::Body::from(bytes)),
    }
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
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token: send the header `Authorization: Bearer <http.token>`",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ripcord\""),
            );
            return r;
        }
    }
    next.run(req).await
}

/// A body announced larger than the limit is 413 before anything else,
/// with or without a token: nobody's upload is read to the end for nothing.
async fn reject_oversize(State(intake): State<Arc<Intake>>, req: Request, next: Next) -> Response {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > intake.max_body_bytes as u64) {
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

/// OpenMetrics, unless the client asks for the classic text format
/// (`Accept: text/plain` without OpenMetrics), as promtool and older
/// scrapers do.
async fn metrics(State(intake): State<Arc<Intake>>, headers: axum::http::HeaderMap) -> Response {
    intake.metrics.set_ready(intake.health.ready().is_ok());
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !accept.contains("application/openmetrics-text") && accept.contains("text/plain") {
        return (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            intake.metrics.render_classic(),
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        intake.metrics.render(),
    )
        .into_response()
}
