//! The HTTP receiver: Alertmanager's webhook and a generic events endpoint,
//! (the route table and its guards are in `router`).
//!
//! `POST /api/v1/alerts` takes an Alertmanager webhook payload,
//! `POST /api/v2/alerts` Alertmanager's v2 array of postable alerts (what
//! Prometheus sends); `POST /api/v1/events` a JSON array or JSON lines of
//! any event form.
//! A request is answered 2xx only once its decisions are in the journal;
//! 4xx names what is wrong and applies nothing of the request; 503 means
//! "try again" (queue full, journal slow), which Alertmanager does.
//! The bearer token is checked before the body is read.

use std::sync::Arc;
use std::sync::mpsc::TrySendError;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::oneshot;

use crate::config::Secret;
use crate::decode::{self, BodyForm, body_elements, decode_body, sequence_of};
use crate::event::Event;
use crate::health::Health;
use crate::pipeline::{Accepted, Submission, not_from_the_future};
use crate::source::forward::{SampleForwarder, sample_key};
use crate::telemetry::{Metrics, Outcome, Source};
use crate::time::{Clock, Dur};

/// What the receiver's handlers share.
pub struct Intake {
    pub submit: crate::pipeline::input::Submit,
    pub token: Option<Secret>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub max_body_bytes: usize,
    /// How long a request waits for the journal before answering 503.
    pub ack_timeout: Duration,
    pub clock: Arc<dyn Clock>,
    /// How far ahead of the clock an event may be stamped.
    pub max_future: Dur,
    /// With a Kafka cluster configured: metric samples go onto the topic
    /// (to their partition's owner) instead of this replica's windows.
    pub forward: Option<SampleForwarder>,
}

fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, axum::Json(json!({ "error": msg.into() }))).into_response()
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

pub(crate) async fn alerts(
    State(intake): State<Arc<Intake>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match (media_type(&headers).as_deref(), body) {
        (_, Err(rejected)) => too_large(rejected),
        (Some("application/json"), Ok(body)) => accept(&intake, body, BodyForm::Object, true).await,
        (other, Ok(_)) => wrong_media_type(other),
    }
}

/// `POST /api/v2/alerts`: Alertmanager's v2 `postableAlerts`, a bare array,
/// as Prometheus sends it to each of its `alerting.alertmanagers`. Whether
/// each alert fired or resolved is settled now, at receipt (see
/// [`decode::webhook_of_postable`]); from there it is the webhook form.
pub(crate) async fn alerts_v2(
    State(intake): State<Arc<Intake>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match (media_type(&headers).as_deref(), body) {
        (_, Err(rejected)) => return too_large(rejected),
        (Some("application/json"), Ok(body)) => body,
        (other, Ok(_)) => return wrong_media_type(other),
    };
    match decode::webhook_of_postable(&body, intake.clock.now()) {
        Ok(payload) => accept(&intake, Bytes::from(payload), BodyForm::Object, true).await,
        Err(e) => {
            intake.metrics.decode_error(Source::Http, e.reason());
            intake.metrics.event(Source::Http, Outcome::DecodeError);
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
    }
}

fn wrong_media_type(got: Option<&str>) -> Response {
    error(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!(
            "Content-Type must be application/json, got {}",
            got.unwrap_or("none")
        ),
    )
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

pub(crate) async fn events(
    State(intake): State<Arc<Intake>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejected) => return too_large(rejected),
    };
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    match media_type(&headers).as_deref() {
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
    }
}

/// Validates the whole body, produces its metric samples onto Kafka when
/// a cluster is configured, hands the rest to the pipeline and waits for
/// the journal.
async fn accept(intake: &Intake, body: Bytes, form: BodyForm, alerts_only: bool) -> Response {
    let (has_samples, route) = {
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
        (
            events.iter().any(|e| matches!(e, Event::Sample(_))),
            intake.submit.route(&events),
        )
    };
    // The route is the body's as validated, unless samples went to Kafka
    // (the rest is routed anew).
    let (body, form, forwarded, route) = match &intake.forward {
        Some(fw) if has_samples => match forward_samples(intake, fw, &body, form).await {
            Ok((_, 0)) => (body, form, 0, Some(route)),
            Ok((None, n)) => return answer(Accepted::default(), n),
            Ok((Some(rest), n)) => (rest, BodyForm::Lines, n, None),
            Err(r) => return r,
        },
        _ => (body, form, 0, Some(route)),
    };
    let (tx, rx) = oneshot::channel();
    let submission = Submission {
        body,
        form,
        ack: tx,
    };
    let sent = match route {
        Some(route) => intake.submit.try_send_routed(submission, route),
        None => intake.submit.try_send(submission),
    };
    match sent {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => return busy("ripcord is busy; retry shortly"),
        Err(TrySendError::Disconnected(_)) => {
            return busy("ripcord is shutting down; retry shortly");
        }
    }
    match tokio::time::timeout(intake.ack_timeout, rx).await {
        Ok(Ok(Ok(accepted))) => answer(accepted, forwarded),
        Ok(Ok(Err(msg))) => error(StatusCode::INTERNAL_SERVER_ERROR, msg),
        Ok(Err(_)) => busy("ripcord stopped before recording the request; retry"),
        Err(_) => busy(&match intake.health.journal_error() {
            // Say what is wrong when the journal says it (a full disk is
            // not a slow journal).
            Some(e) => format!(
                "the journal refuses writes ({e}); the request may be recorded, retrying is safe"
            ),
            None => "the journal is slow; the request may be recorded, retrying is safe".into(),
        }),
    }
}

/// Splits the body: elements made of metric samples are produced onto
/// Kafka keyed by service; the rest comes back as a new body (`None`: there
/// is no rest), with how many samples went.
async fn forward_samples(
    intake: &Intake,
    fw: &SampleForwarder,
    body: &Bytes,
    form: BodyForm,
) -> Result<(Option<Bytes>, usize), Response> {
    let elements =
        body_elements(body, form).map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
    let mut samples: Vec<(String, &[u8])> = Vec::new();
    let mut rest: Vec<&[u8]> = Vec::new();
    let mut sent = 0;
    for el in elements {
        let mut events = Vec::new();
        let _ = decode::decode(el, &mut events);
        match sample_key(&events) {
            Some(key) => {
                samples.push((key.to_owned(), el));
                sent += events.len();
            }
            None => rest.push(el),
        }
    }
    let records: Vec<(&str, &[u8])> = samples.iter().map(|(k, p)| (k.as_str(), *p)).collect();
    if let Err(e) = fw.forward(&records, intake.ack_timeout).await {
        tracing::warn!(error = %e, "HTTP samples not produced onto Kafka");
        return Err(busy(&e.to_string()));
    }
    intake
        .metrics
        .events(Source::Http, Outcome::Forwarded, sent as u64);
    let rest = (!rest.is_empty()).then(|| Bytes::from(sequence_of(&rest)));
    Ok((rest, sent))
}

/// The 200 answer: what was journaled here, what went to Kafka.
fn answer(accepted: Accepted, forwarded: usize) -> Response {
    let Accepted {
        events,
        decisions,
        dropped,
        unwatched,
    } = accepted;
    // Taken, but not every event counted: say which and why, so a sender
    // with a skewed clock learns it from the answer.
    let dropped: serde_json::Map<String, serde_json::Value> = dropped
        .iter()
        .map(|(why, n)| ((*why).to_owned(), json!(n)))
        .collect();
    let used =
        (events as u64).saturating_sub(dropped.values().filter_map(|v| v.as_u64()).sum::<u64>());
    let mut body = json!({
        "status": if dropped.is_empty() { "accepted" } else { "accepted, some events dropped" },
        "events": events + forwarded,
        "used": used,
        "dropped": dropped,
        "unwatched": unwatched,
        "decisions": decisions,
    });
    if forwarded > 0 {
        // Their windows are on the replica that owns their partition; the
        // decisions they lead to are printed there, not in this answer.
        body["forwarded"] = json!(forwarded);
    }
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn busy(msg: &str) -> Response {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, msg);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}
