//! The gate's HTTP contracts.
//!
//! Open (read-only: they change nothing in ripcord, so Argo Rollouts' `web`
//! provider and Flagger's webhooks, which send no credentials by default,
//! can call them):
//! - `GET /api/v1/rollouts/{service}/gate[?batch=N&revision=R]`: always 200
//!   with the [`Answer`] (Argo reads `result.decision`).
//! - `POST /api/v1/flagger/gate`: 200 on go; 423 (hold) or 409 (nogo) with
//!   the answer otherwise. Flagger fails any status above 202.
//! - `POST /api/v1/flagger/rollback`: 200 ("roll back now") on nogo, 409
//!   otherwise.
//!
//! Bearer-token protected:
//! - `POST /api/v1/rollouts/{service}/promote` with `{"by", "note",
//!   "batch", "revision"}`: a human lets the batch go on (the last one
//!   reported unless named; every revision of it unless one is named).
//!
//! Each question that names a revision is remembered (per service, in this
//! process): the console offers to promote the batch for the revision the
//! orchestrator last asked about.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::{Answer, Decision, Facts, GateConfig, Promotion, Question, evaluate};
use crate::journal::{JournalError, Reads};
use crate::journal::{Shared, Verdicts};
use crate::rule::TierResolver;
use crate::time::{Clock, Dur};

pub struct Gates {
    /// Its own connection (both roles): answers never queue behind the
    /// dispatcher.
    pub reads: Shared<dyn Reads>,
    /// Promotions made in the console.
    pub verdicts: Shared<dyn Verdicts>,
    pub cfg: Arc<GateConfig>,
    pub tiers: TierResolver,
    pub clock: Arc<dyn Clock>,
    /// The freeze windows (with the rest of the silences config).
    pub windows: Arc<crate::silence::SilenceConfig>,
    /// What each service's orchestrator last asked about.
    pub asked: LastAsked,
}

/// A question an orchestrator asked, as the console offers to promote it.
#[derive(Debug, Clone, PartialEq)]
pub struct Asked {
    pub batch: Option<String>,
    pub revision: String,
    pub at: crate::time::Ts,
}

/// The last question naming a revision, per service: bounded (the oldest
/// forgotten first), and a `std` mutex, never held across an await.
#[derive(Debug, Default)]
pub struct LastAsked(std::sync::Mutex<std::collections::HashMap<String, Asked>>);

/// Services remembered at most.
const MAX_ASKED: usize = 4096;

impl LastAsked {
    fn note(&self, q: &Question, at: crate::time::Ts) {
        let Some(revision) = q.revision.clone() else {
            return;
        };
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_ASKED && !m.contains_key(&q.service) {
            if let Some(oldest) = m.iter().min_by_key(|(_, a)| a.at).map(|(s, _)| s.clone()) {
                m.remove(&oldest);
            }
        }
        m.insert(
            q.service.clone(),
            Asked {
                batch: q.batch.clone(),
                revision,
                at,
            },
        );
    }

    pub fn of(&self, service: &str) -> Option<Asked> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
            .cloned()
    }
}

/// Longest service, batch or revision accepted.
const MAX_NAME_BYTES: usize = 256;
/// Longest promotion note.
const MAX_NOTE_BYTES: usize = 2048;

pub fn open_routes(g: Arc<Gates>) -> Router {
    Router::new()
        .route("/api/v1/rollouts/{service}/gate", get(gate))
        .route("/api/v1/flagger/gate", post(flagger_gate))
        .route("/api/v1/flagger/rollback", post(flagger_rollback))
        .with_state(g)
}

pub fn protected_routes(g: Arc<Gates>) -> Router {
    Router::new()
        .route("/api/v1/rollouts/{service}/promote", post(promote))
        .with_state(g)
}

fn err(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, axum::Json(json!({ "error": msg.into() }))).into_response()
}

fn too_long(what: &str, v: Option<&str>) -> Option<Response> {
    v.filter(|s| s.len() > MAX_NAME_BYTES || s.is_empty())
        .map(|s| {
            err(
                StatusCode::BAD_REQUEST,
                format!("{what}: {} bytes; expected 1 to {MAX_NAME_BYTES}", s.len()),
            )
        })
}

/// Gathers what the journal holds about the service.
fn facts(
    j: &dyn Reads,
    q: &Question,
    cfg: &GateConfig,
    tiers: &TierResolver,
    now: crate::time::Ts,
) -> Result<Facts, JournalError> {
    let longest = [cfg.min_soak.low, cfg.min_soak.medium, cfg.min_soak.high]
        .into_iter()
        .max()
        .unwrap_or(Dur::ZERO);
    let since = now
        .saturating_sub(longest)
        .saturating_sub(Dur::from_mins(1));
    let service = q.service.as_str();
    // The most severe few and the count: a storm's thousands of incidents
    // of one service cost an indexed page, not a scan and a megabyte.
    let open = j.open_of_service(service, super::MAX_INCIDENTS)?;
    let incidents = open.rows;
    let tier = tiers
        .services
        .get(service)
        .copied()
        .or_else(|| incidents.iter().find_map(|i| i.tier.parse().ok()));
    let upgrade = j
        .upgrades(false)?
        .into_iter()
        .find(|u| u.service == service);
    let sample = match q
        .batch
        .as_deref()
        .or(upgrade.as_ref().and_then(|u| u.batch.as_deref()))
    {
        Some(batch) => j.sample_checks(service, batch)?,
        None => Vec::new(),
    };
    Ok(Facts {
        tier,
        upgrade,
        rollout: j.rollouts()?.into_iter().find(|r| r.service == service),
        incidents,
        incidents_open: open.total,
        promotions: j.promotions(service)?,
        tally: j.tally(service, since)?,
        freezes: Vec::new(),
        sample,
    })
}

/// Answers `q` from the journal.
pub async fn answer(g: &Gates, q: Question) -> Result<Answer, JournalError> {
    let cfg = g.cfg.clone();
    let tiers = g.tiers.clone();
    let now = g.clock.now();
    let default_tier = tiers.default;
    let freezes: Vec<String> = g
        .windows
        .windows
        .freezes(&q.service, now)
        .iter()
        .map(|w| format!("{} ({})", w.name, w.describe()))
        .collect();
    g.reads
        .with(move |j| {
            let mut f = facts(j, &q, &cfg, &tiers, now)?;
            f.freezes = freezes;
            Ok(evaluate(&q, &f, &cfg, default_tier, now))
        })
        .await
}

async fn respond(g: &Gates, q: Question, status: impl Fn(Decision) -> StatusCode) -> Response {
    if let Some(r) = too_long("service", Some(&q.service))
        .or_else(|| too_long("batch", q.batch.as_deref()))
        .or_else(|| too_long("revision", q.revision.as_deref()))
    {
        return r;
    }
    g.asked.note(&q, g.clock.now());
    match answer(g, q).await {
        Ok(a) => (status(a.decision), axum::Json(a)).into_response(),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[derive(Deserialize)]
struct GateQuery {
    batch: Option<String>,
    revision: Option<String>,
}

async fn gate(
    State(g): State<Arc<Gates>>,
    Path(service): Path<String>,
    Query(p): Query<GateQuery>,
) -> Response {
    let q = Question {
        service,
        batch: p.batch.filter(|b| !b.is_empty()),
        revision: p.revision.filter(|r| !r.is_empty()),
    };
    respond(&g, q, |_| StatusCode::OK).await
}

/// What Flagger posts to a webhook (`pkg/apis/flagger/v1beta1`
/// `CanaryWebhookPayload`); unknown fields are ignored.
#[derive(Deserialize)]
struct FlaggerPayload {
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    phase: String,
    #[serde(default)]
    checksum: String,
    #[serde(default)]
    metadata: std::collections::HashMap<String, String>,
}

/// The question a Flagger webhook asks, or what is wrong with its body.
fn flagger_question(body: &[u8]) -> Result<Question, String> {
    let p: FlaggerPayload = serde_json::from_slice(body).map_err(|e| {
        format!("not a Flagger webhook payload ({{\"name\", \"namespace\", \"phase\", \"checksum\", \"metadata\"}}): {e}")
    })?;
    tracing::debug!(canary = %p.name, namespace = %p.namespace, phase = %p.phase, "Flagger asks the gate");
    Ok(Question {
        service: p
            .metadata
            .get("service")
            .filter(|s| !s.is_empty())
            .cloned()
            .unwrap_or(p.name),
        batch: p.metadata.get("batch").filter(|b| !b.is_empty()).cloned(),
        revision: Some(p.checksum).filter(|c| !c.is_empty()),
    })
}

async fn flagger_gate(State(g): State<Arc<Gates>>, body: axum::body::Bytes) -> Response {
    let q = match flagger_question(&body) {
        Ok(q) => q,
        Err(e) => return err(StatusCode::BAD_REQUEST, e),
    };
    respond(&g, q, |d| match d {
        Decision::Go => StatusCode::OK,
        Decision::Hold => StatusCode::LOCKED,
        Decision::Nogo => StatusCode::CONFLICT,
    })
    .await
}

async fn flagger_rollback(State(g): State<Arc<Gates>>, body: axum::body::Bytes) -> Response {
    let q = match flagger_question(&body) {
        Ok(q) => q,
        Err(e) => return err(StatusCode::BAD_REQUEST, e),
    };
    respond(&g, q, |d| match d {
        Decision::Nogo => StatusCode::OK,
        Decision::Go | Decision::Hold => StatusCode::CONFLICT,
    })
    .await
}

async fn promote(
    State(g): State<Arc<Gates>>,
    Path(service): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let b: PromoteBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return err(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"by\", \"note\", \"batch\", \"revision\"}}: {e}"),
            );
        }
    };
    match promote_batch(&g, service, b).await {
        Ok(a) => (StatusCode::OK, axum::Json(a)).into_response(),
        Err(Refused::Bad(why)) => err(StatusCode::BAD_REQUEST, why),
        Err(Refused::Journal(e)) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Why a promotion was not recorded.
#[derive(Debug)]
pub enum Refused {
    /// What is wrong with the request.
    Bad(String),
    Journal(JournalError),
}

/// What a promotion names.
#[derive(Deserialize, Debug, Clone, Default)]
pub struct PromoteBody {
    pub by: String,
    #[serde(default)]
    pub note: String,
    /// The batch let go on (default: the last one reported).
    pub batch: Option<String>,
    /// Only this revision of it (default: every revision).
    pub revision: Option<String>,
}

/// Records a human's promotion (the API and the console) and answers the
/// gate's question for it.
pub async fn promote_batch(g: &Gates, service: String, b: PromoteBody) -> Result<Answer, Refused> {
    let bad = |why: String| Err(Refused::Bad(why));
    if b.by.trim().is_empty() {
        return bad("by: say who promotes the batch".into());
    }
    if b.note.len() > MAX_NOTE_BYTES {
        return bad(format!("note: longer than {MAX_NOTE_BYTES} bytes"));
    }
    let (batch, revision) = (
        b.batch.filter(|s| !s.is_empty()),
        b.revision.filter(|s| !s.is_empty()),
    );
    for (what, v) in [
        ("service", Some(&service)),
        ("by", Some(&b.by)),
        ("batch", batch.as_ref()),
        ("revision", revision.as_ref()),
    ] {
        if let Some(v) = v.filter(|v| v.len() > MAX_NAME_BYTES || v.is_empty()) {
            return bad(format!(
                "{what}: {} bytes; expected 1 to {MAX_NAME_BYTES}",
                v.len()
            ));
        }
    }
    // The batch promoted is the one named, else the last one reported (a
    // service that reports no progress has none).
    let now = g.clock.now();
    let svc = service.clone();
    let batch = g
        .reads
        .with(move |j| {
            Ok(match batch {
                Some(b) => Some(b),
                None => j
                    .upgrades(false)?
                    .into_iter()
                    .find(|u| u.service == svc)
                    .and_then(|u| u.batch),
            })
        })
        .await
        .map_err(Refused::Journal)?;
    let p = Promotion {
        service: service.clone(),
        batch: batch.clone(),
        revision: revision.clone(),
        by: b.by,
        note: b.note,
        at: now,
    };
    tracing::info!(%service, batch = ?p.batch, revision = ?p.revision, by = %p.by, "batch promoted by a human");
    g.verdicts
        .with(move |j| j.promote(&p))
        .await
        .map_err(Refused::Journal)?;
    answer(
        g,
        Question {
            service,
            batch,
            revision,
        },
    )
    .await
    .map_err(Refused::Journal)
}
