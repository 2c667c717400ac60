//! The incidents API and the one-click link pages.
//!
//! Bearer-token protected (same token as intake):
//! - `GET /api/v1/incidents[?state=open|resolved]`
//! - `GET /api/v1/incidents/{id}`: with its approval, paging, actions and timeline
//! - `POST /api/v1/incidents/{id}/approve|reject|ack` with `{"by": "...", "note": "..."}`
//! - `POST /api/v1/rollouts/{service}/resume` with `{"by": "..."}`
//!
//! Signed links (no token; the HMAC is the credential):
//! - `GET /l/{id}/{verb}/{expires}/{sig}`: a confirmation page, acts on nothing
//! - `POST` to the same path from that page's form: acts

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
use crate::action::{SharedJournal, with_journal};
use crate::journal::{Verdict, Via};
use crate::time::{Clock, Ts};

pub struct Api {
    pub journal: SharedJournal,
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

/// The signed-link pages.
pub fn public(api: Arc<Api>) -> Router {
    Router::new()
        .route(
            "/l/{id}/{verb}/{expires}/{sig}",
            get(confirm_page).post(link_act),
        )
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
    match with_journal(&api.journal, move |j| j.incidents(q.state.as_deref())).await {
        Ok(rows) => axum::Json(json!({ "incidents": rows })).into_response(),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn show(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    let found = with_journal(&api.journal, move |j| {
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
    let done = with_journal(&api.journal, move |j| {
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

type LinkPath = Path<(String, String, i64, String)>;

/// A link page: the console's look (its stylesheet, phone-sized), none of
/// its navigation (the link is the only credential here).
fn page(code: StatusCode, title: &str, body: &str) -> Response {
    let body = if body.starts_with("<h1>") {
        body.to_owned()
    } else {
        format!("<h1>{}</h1>{body}", crate::text::html(title))
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>ripcord: {t}</title>\
         <link rel=\"stylesheet\" href=\"/console/style.css\"></head><body>\
         <header class=\"top\"><span class=\"brand\">ripcord</span></header><main class=\"link\">{body}</main></body></html>",
        t = crate::text::html(title)
    );
    // The console's headers: no store, no referrer (the link's signature
    // is in its path), no frame (clickjacking the approve button), no
    // script, forms only to ripcord itself.
    crate::console::html(code, html)
}

/// Whether a link POST comes from ripcord's own page: a browser says where
/// a form was sent from (`Sec-Fetch-Site`, `Origin`); a form on another
/// site must not be able to act with a link it learned. Clients that say
/// nothing (curl, a chat app's own fetch) pass: the signature is the
/// credential, this only stops cross-site forms.
pub(crate) fn same_origin(
    headers: &axum::http::HeaderMap,
    public_url: Option<&str>,
) -> Result<(), String> {
    use axum::http::header;
    // A browser sets Sec-Fetch-Site itself (no page can forge it), so when
    // it is there it decides. It must: our pages send no Referer, and then
    // Chrome's form posts carry `Origin: null`, even to the same site.
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if matches!(site, "same-origin" | "none") {
            return Ok(());
        }
        return Err(format!(
            "a form from another site (Sec-Fetch-Site: {site}) cannot act"
        ));
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, h)| h);
    let public_host = public_url
        .and_then(|u| u.split_once("://"))
        .map(|(_, h)| h.split('/').next().unwrap_or(h));
    if origin_host.is_some() && (origin_host == host || origin_host == public_host) {
        return Ok(());
    }
    Err("a form from another site (Origin) cannot act".to_owned())
}

/// Checks a link; the page to show when it is not good.
fn check_link(
    api: &Api,
    id: &str,
    verb: &str,
    expires: i64,
    sig: &str,
) -> Result<Verb, Box<Response>> {
    let Some(signer) = &api.links else {
        return Err(Box::new(page(
            StatusCode::NOT_FOUND,
            "links are not enabled",
            "<p>This ripcord has no link secret configured.</p>",
        )));
    };
    let Ok(verb) = verb.parse::<Verb>() else {
        return Err(Box::new(page(
            StatusCode::NOT_FOUND,
            "unknown link",
            "<p>This link does not do anything ripcord knows.</p>",
        )));
    };
    signer
        .verify(id, verb, expires, sig, api.clock.now())
        .map_err(|e| {
            Box::new(page(
                StatusCode::FORBIDDEN,
                "link refused",
                &format!("<p>{}</p>", crate::text::html(&e.to_string())),
            ))
        })?;
    Ok(verb)
}

/// GET: shows what the link would do and asks for a name (the console's
/// phone-sized confirmation page). Acts on nothing, so a link preview or a
/// crawler cannot approve anything.
async fn confirm_page(
    State(api): State<Arc<Api>>,
    Path((id, verb, expires, sig)): LinkPath,
) -> Response {
    let verb = match check_link(&api, &id, &verb, expires, &sig) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let now = api.clock.now();
    let lookup = id.clone();
    let budgets = crate::report::Budgets::default();
    let review = with_journal(&api.journal, move |j| {
        Ok(crate::report::Review::build(j, &lookup, &budgets, now).ok())
    })
    .await
    .ok()
    .flatten();
    let body = crate::console::pages::confirm(review.as_ref(), &id, verb, Ts(expires), now);
    page(StatusCode::OK, &format!("{verb} {id}"), &body)
}

/// What the confirmation page's form sends.
#[derive(Default)]
struct LinkForm {
    by: String,
    note: String,
    /// `breaching`, `batch` or `chosen` (a batch incident's approval).
    scope: String,
    /// The instances ticked, with `chosen`.
    instances: Vec<String>,
}

impl LinkForm {
    /// The blast radius the page chose (`None`: the link's own).
    fn scope(&self) -> Result<Option<ops::Scope>, String> {
        scope_of_form(&self.scope, &self.instances)
    }
}

/// The blast radius a form chose: `scope` is `breaching`, `batch` or
/// `chosen` (then `instances`, each maybe a comma-separated list); empty:
/// none chosen.
pub(crate) fn scope_of_form(
    scope: &str,
    instances: &[String],
) -> Result<Option<ops::Scope>, String> {
    match scope {
        "" => Ok(None),
        "breaching" => Ok(Some(ops::Scope::Breaching)),
        "batch" => Ok(Some(ops::Scope::Batch)),
        "chosen" => ops::Scope::chosen(
            instances
                .iter()
                .flat_map(|i| i.split(','))
                .map(str::trim)
                .filter(|i| !i.is_empty())
                .map(str::to_owned)
                .collect(),
        )
        .map(Some),
        other => Err(format!(
            "scope {:?}: expected breaching, batch or chosen",
            crate::text::clip_bytes(other, 32)
        )),
    }
}

/// POST from the confirmation page: acts.
async fn link_act(
    State(api): State<Arc<Api>>,
    Path((id, verb, expires, sig)): LinkPath,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let verb = match check_link(&api, &id, &verb, expires, &sig) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    if let Err(why) = same_origin(&headers, api.links.as_ref().map(|l| l.base())) {
        return page(
            StatusCode::FORBIDDEN,
            "not done",
            &format!("<p>{}</p>", crate::text::html(&why)),
        );
    }
    let form: LinkForm = serde_urlencoded_form(&body);
    let scope = match form.scope() {
        Ok(s) => s,
        Err(why) => {
            return page(
                StatusCode::BAD_REQUEST,
                "not done",
                &format!("<p>{}</p>", crate::text::html(&why)),
            );
        }
    };
    // Done: back to the link's own page (post/redirect/get), which now
    // says what was done, what happened since and where the incident is;
    // reloading it acts on nothing.
    let own = format!(
        "/l/{}/{verb}/{expires}/{}",
        crate::console::pages::seg(&id),
        crate::console::pages::seg(&sig)
    );
    match perform(
        &api,
        id,
        verb,
        Who {
            by: form.by,
            note: form.note,
            scope,
        },
        Via::Link,
    )
    .await
    {
        Ok(_) => axum::response::Redirect::to(&own).into_response(),
        Err(e) => page(
            status_of(&e),
            "not done",
            &format!("<p>{}</p>", crate::text::html(&e.to_string())),
        ),
    }
}

/// Parses an `application/x-www-form-urlencoded` body of `by`, `note`,
/// `scope` and `instances` (repeated: one per ticked box).
fn serde_urlencoded_form(body: &[u8]) -> LinkForm {
    let mut form = LinkForm::default();
    for pair in body.split(|b| *b == b'&') {
        let mut kv = pair.splitn(2, |b| *b == b'=');
        let (Some(k), Some(v)) = (kv.next(), kv.next()) else {
            continue;
        };
        let decode = |s: &[u8]| {
            let plus: Vec<u8> = s
                .iter()
                .map(|b| if *b == b'+' { b' ' } else { *b })
                .collect();
            percent_encoding::percent_decode(&plus)
                .decode_utf8_lossy()
                .into_owned()
        };
        match k {
            b"by" => form.by = decode(v),
            b"note" => form.note = decode(v),
            b"scope" => form.scope = decode(v),
            // Bounded: a form cannot make ripcord hold more than a batch.
            b"instances" if form.instances.len() < ops::MAX_SCOPE_INSTANCES => {
                form.instances.push(decode(v))
            }
            _ => {}
        }
    }
    form
}
