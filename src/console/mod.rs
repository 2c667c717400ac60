//! The web console: what ripcord is doing, for the people in the loop.
//!
//! Server-rendered pages from the journal (no separate server, nothing
//! fetched from elsewhere; the stylesheet and the small script that keeps
//! open pages fresh are compiled in). Every acting page works without
//! JavaScript: plain forms, each with a CSRF token, each act on the
//! incident's timeline with its actor.
//!
//! - `GET /`: open incidents by tier and severity, what waits for whom
//! - `GET /incidents/{id}`: the incident, its chart, timeline and buttons
//! - `GET /rollouts`: upgrades, batches, gate verdicts, paused rollouts
//! - `GET /silences`: silences, a form with a preview of what it mutes
//! - `GET|POST /signin`, `POST /signout`
//!
//! Who may read or act: see [`auth`].

pub mod auth;
pub mod host;
pub mod links;
pub mod pages;
pub mod timeline;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::action::links::Verb;
use crate::action::ops;
use crate::api::{Api, Who, perform, status_of};
use crate::journal::{IncidentRow, Shared, Via};
use crate::report::{Budgets, Review};
use crate::silence::{self, MatcherSpec, PostableSilence, UntilBatch};
use crate::time::Dur;
use auth::{Auth, May, SignInLimits, Viewer};
use links::{same_origin, scope_of_form};
use pages::Frame;

const STYLE: &str = include_str!("style.css");
const LIVE_JS: &str = include_str!("live.js");
/// Resolved incidents the list shows.
const RECENT_RESOLVED: usize = 20;
/// How far back `/rollouts` reads an upgrade's progress for its steps.
const ROLLOUT_HISTORY: Dur = Dur::from_mins(7 * 24 * 60);
/// Progress reports and promotions `/rollouts` keeps per upgrade (the newest).
const ROLLOUT_STEPS_KEPT: usize = 64;
/// Forms are small; nothing bigger is read.
const MAX_FORM_BYTES: usize = 64 * 1024;

pub struct Console {
    pub api: Arc<Api>,
    pub gates: Arc<crate::gate::http::Gates>,
    /// The silences in force (their limits and bytes budget).
    pub silences: Arc<silence::Guard>,
    /// Where silences made and expired here are kept.
    pub silence_journal: Shared<dyn crate::journal::Silences>,
    pub budgets: Budgets,
    pub auth: Auth,
    /// The `Host` names pages and links answer to (see [`host`]).
    pub hosts: Arc<host::Hosts>,
    pub sign_ins: SignInLimits,
    /// The list's reads of the last second.
    pub lists: ListCache,
}

/// The console's pages and the one-click link pages (`links`), each
/// answered only for ripcord's own host names.
pub fn routes(links: Router, c: Arc<Console>) -> Router {
    let hosts = c.hosts.clone();
    Router::new()
        .route("/", get(index))
        .route("/incidents/{id}", get(incident))
        .route("/incidents/{id}/act", post(act))
        .route("/rollouts", get(rollouts))
        .route("/rollouts/{service}/resume", post(resume))
        .route("/rollouts/{service}/promote", post(promote))
        .route("/silences", get(silences).post(silence_post))
        .route("/silences/{id}/expire", post(silence_expire))
        .route("/signin", get(sign_in_page).post(sign_in))
        .route("/signout", post(sign_out))
        .route("/console/style.css", get(style))
        .route("/console/live.js", get(live_js))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .with_state(c)
        .merge(links)
        .layer(axum::middleware::from_fn_with_state(hosts, host::check))
}

/// The request's viewer, from its credentials and its peer.
pub struct Seen {
    viewer: Viewer,
    headers: HeaderMap,
    peer: Option<SocketAddr>,
}

impl FromRequestParts<Arc<Console>> for Seen {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        c: &Arc<Console>,
    ) -> Result<Seen, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|ci| ci.0);
        let viewer = c.auth.viewer(&parts.headers, peer, c.api.clock.now());
        Ok(Seen {
            viewer,
            headers: parts.headers.clone(),
            peer,
        })
    }
}

impl Console {
    fn frame<'a>(&'a self, viewer: &'a Viewer, csrf: &'a str) -> Frame<'a> {
        Frame {
            viewer,
            csrf,
            now: self.api.clock.now(),
            can_sign_in: self.auth.can_sign_in(),
            proxy_header: self.auth.proxy_header(),
        }
    }

    /// A page for `viewer`, or 401 when they may not read.
    fn page(
        &self,
        seen: &Seen,
        title: &str,
        current: &str,
        live: bool,
        body: impl FnOnce(&Frame<'_>) -> String,
    ) -> Response {
        let csrf = self.auth.csrf(&seen.viewer);
        let f = self.frame(&seen.viewer, &csrf);
        if seen.viewer.may < May::Read {
            let text = if self.auth.can_sign_in() {
                "Sign in to see the console."
            } else {
                "The console is open only on loopback, with a token, or behind the configured proxy."
            };
            let main = pages::message("Sign in", text, Some(("/signin", "Sign in")));
            return html(
                StatusCode::UNAUTHORIZED,
                pages::layout(&f, title, current, false, &main),
            );
        }
        let main = body(&f);
        html(
            StatusCode::OK,
            pages::layout(&f, title, current, live, &main),
        )
    }

    /// A short page (a refusal, an error) in the console's frame.
    fn say(&self, seen: &Seen, code: StatusCode, title: &str, text: &str, back: &str) -> Response {
        let csrf = self.auth.csrf(&seen.viewer);
        let f = self.frame(&seen.viewer, &csrf);
        let main = pages::message(title, text, Some((back, "back")));
        html(code, pages::layout(&f, title, "", false, &main))
    }

    /// The actor of a form post, or the page that says why not: may act,
    /// CSRF token, same site, a name.
    fn actor(
        &self,
        seen: &Seen,
        csrf: &str,
        by: &str,
        back: &str,
    ) -> Result<String, Box<Response>> {
        let refuse = |code, text: &str| Box::new(self.say(seen, code, "Not done", text, back));
        if seen.viewer.may < May::Act {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "You may not act here: sign in with ripcord's API token, or come through the configured proxy.",
            ));
        }
        if !self.auth.csrf_ok(&seen.viewer, csrf) {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "The form's CSRF token is missing or wrong: reload the page and try again.",
            ));
        }
        if let Err(why) = same_origin(&seen.headers, self.api.links.as_ref().map(|l| l.base())) {
            return Err(refuse(StatusCode::FORBIDDEN, &why));
        }
        let name = seen
            .viewer
            .user
            .clone()
            .unwrap_or_else(|| by.trim().to_owned());
        if name.is_empty() {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "Say who you are: your name goes on the timeline.",
            ));
        }
        Ok(name)
    }
}

/// An HTML response with the headers every console page carries: no
/// caching, no framing, no script but our own, forms only to ourselves.
pub fn html(code: StatusCode, body: String) -> Response {
    let mut r = (code, Html(body)).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

fn journal_down(e: impl std::fmt::Display) -> String {
    format!("The journal did not answer: {e}")
}

/// What the list shows, read once per second at most, whatever the number
/// of open tabs.
pub struct ListData {
    open: crate::journal::OpenPage,
    resolved: Vec<IncidentRow>,
    progress: std::collections::HashMap<String, pages::Progress>,
}

/// How long a list read serves every reader asking the same.
const LIST_FRESH: std::time::Duration = std::time::Duration::from_secs(1);
/// Filters whose reads are kept at once (older ones are dropped first).
const LIST_KEPT: usize = 64;

type ListCell = Arc<tokio::sync::OnceCell<Arc<ListData>>>;

/// The list's recent reads, by filter: readers arriving while one is read
/// wait for it (one read, however many tabs), and for a second after it
/// take it as it is. The map's lock is never held across an await.
#[derive(Default)]
pub struct ListCache(
    std::sync::Mutex<
        std::collections::HashMap<crate::journal::IncidentFilter, (std::time::Instant, ListCell)>,
    >,
);

impl ListCache {
    fn cell(&self, key: &crate::journal::IncidentFilter) -> ListCell {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, (at, _)| at.elapsed() < LIST_FRESH);
        if m.len() >= LIST_KEPT && !m.contains_key(key) {
            if let Some(oldest) = m
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
            {
                m.remove(&oldest);
            }
        }
        m.entry(key.clone())
            .or_insert_with(|| (std::time::Instant::now(), Default::default()))
            .1
            .clone()
    }
}

/// Reads the list from the journal: the most urgent open incidents the
/// filter keeps (an indexed page), the recently resolved, what ripcord did
/// for each.
async fn read_list(
    c: &Console,
    filter: crate::journal::IncidentFilter,
) -> Result<Arc<ListData>, crate::journal::JournalError> {
    c.api
        .journal
        .with(move |j| {
            let open = j.open_page(&filter, pages::MAX_CARDS)?;
            let resolved = j.resolved_recently(RECENT_RESOLVED)?;
            let mut progress = std::collections::HashMap::new();
            for i in open.rows.iter().chain(&resolved) {
                let p = pages::Progress::of(&j.actions_of(&i.id)?, j.escalation(&i.id)?.as_ref());
                progress.insert(i.id.clone(), p);
            }
            Ok(Arc::new(ListData {
                open,
                resolved,
                progress,
            }))
        })
        .await
}

async fn index(
    State(c): State<Arc<Console>>,
    seen: Seen,
    Query(filter): Query<pages::ListFilter>,
) -> Response {
    if seen.viewer.may < May::Read {
        return c.page(&seen, "Incidents", "/", false, |_| String::new());
    }
    let key = filter.to_journal();
    let cell = c.lists.cell(&key);
    let read = cell.get_or_try_init(|| read_list(&c, key)).await;
    match read {
        Ok(d) => c.page(&seen, "Incidents", "/", true, |f| {
            pages::list(
                f,
                &d.open.rows,
                d.open.total,
                &d.resolved,
                &d.progress,
                &c.silences.in_force(),
                &filter,
            )
        }),
        Err(e) => c.say(
            &seen,
            StatusCode::SERVICE_UNAVAILABLE,
            "Incidents",
            &journal_down(e),
            "/",
        ),
    }
}

/// `?did=ack`: the act a person just posted, said on the page they land on.
#[derive(Deserialize, Default)]
struct DidQuery {
    #[serde(default)]
    did: String,
}

async fn incident(
    State(c): State<Arc<Console>>,
    seen: Seen,
    Path(id): Path<String>,
    Query(q): Query<DidQuery>,
) -> Response {
    if seen.viewer.may < May::Read {
        return c.page(&seen, "Incident", "/", false, |_| String::new());
    }
    let now = c.api.clock.now();
    let budgets = c.budgets;
    let lookup = id.clone();
    let found = c
        .api
        .journal
        .with(move |j| {
            let review = match Review::build(j, &lookup, &budgets, now) {
                Ok(r) => r,
                Err(crate::report::ReportError::NoIncident(_)) => return Ok(None),
                Err(crate::report::ReportError::Journal(e)) => return Err(e),
            };
            let paging = j.escalation(&lookup)?;
            let actions: Vec<(String, String, String)> = j
                .actions_of(&lookup)?
                .into_iter()
                .map(|a| {
                    (
                        a.action.to_string(),
                        a.state.as_str().to_owned(),
                        a.detail.unwrap_or_default(),
                    )
                })
                .collect();
            Ok(Some((review, paging, actions)))
        })
        .await;
    match found {
        Ok(Some((review, paging, actions))) => {
            let title = format!(
                "{} {}",
                review.incident.rule,
                pages::target(&review.incident)
            );
            c.page(&seen, &title, "/", true, |f| {
                let tier = review
                    .incident
                    .tier
                    .parse()
                    .unwrap_or(crate::decision::Tier::Medium);
                pages::incident(
                    f,
                    &review,
                    paging.as_ref(),
                    c.api.cfg.escalation(tier),
                    &actions,
                    Some(q.did.as_str()).filter(|d| !d.is_empty()),
                )
            })
        }
        Ok(None) => c.say(
            &seen,
            StatusCode::NOT_FOUND,
            "No such incident",
            &format!("No incident {id} in the journal."),
            "/",
        ),
        Err(e) => c.say(
            &seen,
            StatusCode::SERVICE_UNAVAILABLE,
            "Incident",
            &journal_down(e),
            "/",
        ),
    }
}

#[derive(Deserialize, Default)]
struct ActForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    verb: String,
    #[serde(default)]
    by: String,
    #[serde(default)]
    note: String,
    /// A batch incident's blast radius: breaching, batch or chosen.
    #[serde(default)]
    scope: String,
    /// With `chosen`: instance names, separated by commas.
    #[serde(default)]
    instances: String,
}

async fn act(
    State(c): State<Arc<Console>>,
    seen: Seen,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<ActForm>,
) -> Response {
    let back = format!("/incidents/{}", pages::seg(&id));
    let by = match c.actor(&seen, &form.csrf, &form.by, &back) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let Ok(verb) = form.verb.parse::<Verb>() else {
        return c.say(
            &seen,
            StatusCode::BAD_REQUEST,
            "Not done",
            "Expected approve, reject or ack.",
            &back,
        );
    };
    let scope = match scope_of_form(&form.scope, std::slice::from_ref(&form.instances)) {
        Ok(s) => s,
        Err(why) => return c.say(&seen, StatusCode::BAD_REQUEST, "Not done", &why, &back),
    };
    match perform(
        &c.api,
        id,
        verb,
        Who {
            by,
            note: form.note,
            scope,
        },
        Via::Console,
    )
    .await
    {
        Ok(_) => see_other(&format!("{back}?did={}", verb.as_str())),
        Err(e) => c.say(&seen, status_of(&e), "Not done", &e.to_string(), &back),
    }
}

async fn rollouts(State(c): State<Arc<Console>>, seen: Seen) -> Response {
    if seen.viewer.may < May::Read {
        return c.page(&seen, "Rollouts", "/rollouts", false, |_| String::new());
    }
    let rows = c
        .api
        .journal
        .with(|j| {
            let upgrades = j.upgrades(false)?;
            // Each upgrade's batches (its recent progress) and promotions.
            let mut history = Vec::with_capacity(upgrades.len());
            for u in &upgrades {
                let since = u.updated_at.saturating_sub(ROLLOUT_HISTORY);
                let mut log = j.progress_log(&u.service, since, u.updated_at)?;
                let keep = log.len().saturating_sub(ROLLOUT_STEPS_KEPT);
                log.drain(..keep);
                let mut promoted = j.promotions(&u.service)?;
                let keep = promoted.len().saturating_sub(ROLLOUT_STEPS_KEPT);
                promoted.drain(..keep);
                history.push((log, promoted));
            }
            Ok((upgrades, history, j.rollouts()?))
        })
        .await;
    let (upgrades, history, paused) = match rows {
        Ok(r) => r,
        Err(e) => {
            return c.say(
                &seen,
                StatusCode::SERVICE_UNAVAILABLE,
                "Rollouts",
                &journal_down(e),
                "/",
            );
        }
    };
    let mut with_gate = Vec::with_capacity(upgrades.len());
    for (u, (log, promotions)) in upgrades.into_iter().zip(history) {
        // The gate as the orchestrator last asked it (its revision), when
        // it asked about this batch.
        let asked = c
            .gates
            .asked
            .of(&u.service)
            .filter(|a| a.batch.is_none() || a.batch == u.batch);
        let gate = if u.open {
            let q = crate::gate::Question {
                service: u.service.clone(),
                batch: None,
                revision: asked.as_ref().map(|a| a.revision.clone()),
            };
            crate::gate::http::answer(&c.gates, q).await.ok()
        } else {
            None
        };
        let pause = paused
            .iter()
            .find(|r| r.paused && r.service == u.service)
            .cloned();
        with_gate.push(pages::UpgradeView {
            upgrade: u,
            gate,
            asked,
            log,
            promotions,
            pause,
        });
    }
    with_gate.sort_by_key(|r| (!r.upgrade.open, std::cmp::Reverse(r.upgrade.updated_at)));
    c.page(&seen, "Rollouts", "/rollouts", true, |f| {
        pages::rollouts(f, &with_gate, &paused)
    })
}

#[derive(Deserialize, Default)]
struct ByForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    by: String,
}

async fn resume(
    State(c): State<Arc<Console>>,
    seen: Seen,
    Path(service): Path<String>,
    axum::Form(form): axum::Form<ByForm>,
) -> Response {
    let by = match c.actor(&seen, &form.csrf, &form.by, "/rollouts") {
        Ok(b) => b,
        Err(r) => return *r,
    };
    match ops::resume(&c.api.journal, &c.api.cfg, &service, &by, c.api.clock.now()).await {
        Ok(_) => see_other("/rollouts"),
        Err(e) => c.say(
            &seen,
            status_of(&e),
            "Not resumed",
            &e.to_string(),
            "/rollouts",
        ),
    }
}

#[derive(Deserialize, Default)]
struct PromoteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    by: String,
    #[serde(default)]
    batch: String,
    #[serde(default)]
    revision: String,
}

/// "Promote this batch": the batch shown, and the revision the
/// orchestrator last asked about (none: every revision of it).
async fn promote(
    State(c): State<Arc<Console>>,
    seen: Seen,
    Path(service): Path<String>,
    axum::Form(form): axum::Form<PromoteForm>,
) -> Response {
    let by = match c.actor(&seen, &form.csrf, &form.by, "/rollouts") {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let body = crate::gate::http::PromoteBody {
        by,
        note: "promoted from the console".into(),
        batch: Some(form.batch),
        revision: Some(form.revision),
    };
    match crate::gate::http::promote_batch(&c.gates, service, body).await {
        Ok(_) => see_other("/rollouts"),
        Err(crate::gate::http::Refused::Bad(why)) => c.say(
            &seen,
            StatusCode::BAD_REQUEST,
            "Not promoted",
            &why,
            "/rollouts",
        ),
        Err(crate::gate::http::Refused::Journal(e)) => c.say(
            &seen,
            StatusCode::SERVICE_UNAVAILABLE,
            "Not promoted",
            &journal_down(e),
            "/rollouts",
        ),
    }
}

async fn silences(State(c): State<Arc<Console>>, seen: Seen) -> Response {
    silences_page(
        &c,
        &seen,
        &pages::SilenceForm::default(),
        None,
        &[],
        StatusCode::OK,
    )
    .await
}

async fn silences_page(
    c: &Console,
    seen: &Seen,
    form: &pages::SilenceForm,
    preview: Option<&[IncidentRow]>,
    problems: &[String],
    code: StatusCode,
) -> Response {
    if seen.viewer.may < May::Read {
        return c.page(seen, "Silences", "/silences", false, |_| String::new());
    }
    let now = c.api.clock.now();
    let all = match c.silence_journal.with(move |j| j.silences(now, true)).await {
        Ok(a) => a,
        Err(e) => {
            return c.say(
                seen,
                StatusCode::SERVICE_UNAVAILABLE,
                "Silences",
                &journal_down(e),
                "/",
            );
        }
    };
    // A page with a filled-in form does not refresh itself over it.
    let live = preview.is_none() && problems.is_empty();
    let mut r = c.page(seen, "Silences", "/silences", live, |f| {
        pages::silences(f, &all, form, preview, problems)
    });
    if r.status() == StatusCode::OK {
        *r.status_mut() = code;
    }
    r
}

/// The silence form as Alertmanager's PostableSilence, or every problem
/// with it (fuzzed: `fuzz/fuzz_targets/console_request.rs`).
pub fn postable(
    form: &pages::SilenceForm,
    by: &str,
    now: crate::time::Ts,
) -> Result<PostableSilence, Vec<String>> {
    let mut problems = Vec::new();
    let mut matchers = Vec::new();
    for line in form
        .matchers
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        match MatcherSpec::parse(line) {
            Ok(m) => matchers.push(m),
            Err(e) => problems.push(format!("matcher `{line}`: {e}")),
        }
    }
    let (ends_at, until) = match (form.duration.trim(), form.until_batch.trim()) {
        ("", "") => {
            problems
                .push("give a duration (like 2h) or a batch (service:batch) it lasts until".into());
            (None, None)
        }
        (d, "") => match d.parse::<Dur>() {
            Ok(d) => (Some(now.saturating_add(d).to_string()), None),
            Err(e) => {
                problems.push(format!("duration `{d}`: {e}"));
                (None, None)
            }
        },
        ("", u) => match UntilBatch::parse(u) {
            Ok(u) => (None, Some(u)),
            Err(e) => {
                problems.push(format!("until batch {e}"));
                (None, None)
            }
        },
        _ => {
            problems.push("give a duration or a batch, not both".into());
            (None, None)
        }
    };
    let scope = match form.scope.as_str() {
        "" => silence::Scope::Notify,
        s => match silence::Scope::parse(s) {
            Some(s) => s,
            None => {
                problems.push(format!("scope `{s}`: expected notify or all"));
                silence::Scope::Notify
            }
        },
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(PostableSilence {
        id: None,
        matchers,
        starts_at: now.to_string(),
        ends_at,
        until,
        created_by: by.to_owned(),
        comment: form.comment.clone(),
        scope,
    })
}

async fn silence_post(
    State(c): State<Arc<Console>>,
    seen: Seen,
    axum::Form(form): axum::Form<pages::SilenceForm>,
) -> Response {
    let by = match c.actor(&seen, &form.csrf, &form.by, "/silences") {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let now = c.api.clock.now();
    let post = match postable(&form, &by, now) {
        Ok(p) => p,
        Err(problems) => {
            return silences_page(&c, &seen, &form, None, &problems, StatusCode::BAD_REQUEST).await;
        }
    };
    if form.intent == "preview" {
        let compiled = match post.check(c.silences.limits(), now) {
            Ok(s) => s,
            Err(e) => {
                return silences_page(&c, &seen, &form, None, &e.0, StatusCode::BAD_REQUEST).await;
            }
        };
        let open = c.api.journal.with(|j| j.incidents(Some("open"))).await;
        let hits: Vec<IncidentRow> = match open {
            Ok(o) => o
                .into_iter()
                .filter(|i| compiled.matches(&silence::labels_of_incident(i)))
                .collect(),
            Err(e) => {
                return c.say(
                    &seen,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Silences",
                    &journal_down(e),
                    "/silences",
                );
            }
        };
        return silences_page(&c, &seen, &form, Some(&hits), &[], StatusCode::OK).await;
    }
    let guard = c.silences.clone();
    match c
        .silence_journal
        .with(move |j| Ok(silence::create(j, post, &guard, now)))
        .await
    {
        Ok(Ok(s)) => {
            tracing::info!(silence = %s.id, by = %s.created_by, "silence created in the console");
            see_other("/silences")
        }
        Ok(Err(silence::SilenceError::Invalid(e))) => {
            silences_page(&c, &seen, &form, None, &e.0, StatusCode::BAD_REQUEST).await
        }
        Ok(Err(e)) => c.say(
            &seen,
            silence::http::status_of(&e),
            "Not created",
            &e.to_string(),
            "/silences",
        ),
        Err(e) => c.say(
            &seen,
            StatusCode::SERVICE_UNAVAILABLE,
            "Not created",
            &journal_down(e),
            "/silences",
        ),
    }
}

async fn silence_expire(
    State(c): State<Arc<Console>>,
    seen: Seen,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<ByForm>,
) -> Response {
    let by = match c.actor(&seen, &form.csrf, &form.by, "/silences") {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let now = c.api.clock.now();
    match c
        .silence_journal
        .with(move |j| Ok(silence::expire(j, &id, &by, now)))
        .await
    {
        Ok(Ok(_)) => see_other("/silences"),
        Ok(Err(e)) => c.say(
            &seen,
            silence::http::status_of(&e),
            "Not expired",
            &e.to_string(),
            "/silences",
        ),
        Err(e) => c.say(
            &seen,
            StatusCode::SERVICE_UNAVAILABLE,
            "Not expired",
            &journal_down(e),
            "/silences",
        ),
    }
}

async fn sign_in_page(State(c): State<Arc<Console>>, seen: Seen) -> Response {
    let csrf = c.auth.csrf(&seen.viewer);
    let f = c.frame(&seen.viewer, &csrf);
    let main = if c.auth.can_sign_in() {
        pages::sign_in(None, c.auth.proxy_header())
    } else {
        pages::message(
            "Sign in",
            "No token is configured (http.token, http.console.read_token): there is nothing to sign in with.",
            Some(("/", "back")),
        )
    };
    html(
        StatusCode::OK,
        pages::layout(&f, "Sign in", "", false, &main),
    )
}

#[derive(Deserialize, Default)]
struct SignInForm {
    #[serde(default)]
    by: String,
    #[serde(default)]
    token: String,
}

async fn sign_in(
    State(c): State<Arc<Console>>,
    seen: Seen,
    axum::Form(form): axum::Form<SignInForm>,
) -> Response {
    let csrf = c.auth.csrf(&seen.viewer);
    let f = c.frame(&seen.viewer, &csrf);
    let refuse = |code: StatusCode, why: &str| {
        html(
            code,
            pages::layout(
                &f,
                "Sign in",
                "",
                false,
                &pages::sign_in(Some(why), c.auth.proxy_header()),
            ),
        )
    };
    // Nobody signs someone in from another site.
    if let Err(why) = same_origin(&seen.headers, c.api.links.as_ref().map(|l| l.base())) {
        return refuse(StatusCode::FORBIDDEN, &why);
    }
    // Counted before the token is looked at: a guess costs a try either way.
    if let Err(wait) = c.sign_ins.check(seen.peer.map(|p| p.ip()), &form.by) {
        let secs = wait.as_secs() + 1;
        tracing::warn!(peer = ?seen.peer, retry_in_s = secs, "console sign-in refused: too many attempts");
        let mut r = refuse(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "Too many sign-in attempts from your address or for this name: try again in {secs} s."
            ),
        );
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let Some(may) = c.auth.sign_in(form.token.trim()) else {
        tracing::warn!("console sign-in refused: wrong token");
        return refuse(
            StatusCode::UNAUTHORIZED,
            "That token is not one of ripcord's.",
        );
    };
    let Some(cookie) = c.auth.session_cookie(may, &form.by, c.api.clock.now()) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Your name: 1 to 128 characters, on one line.",
        );
    };
    tracing::info!(user = %form.by.trim(), may = ?may, "console sign-in");
    let mut r = see_other("/");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn sign_out(
    State(c): State<Arc<Console>>,
    seen: Seen,
    axum::Form(form): axum::Form<ByForm>,
) -> Response {
    if !c.auth.csrf_ok(&seen.viewer, &form.csrf) {
        return c.say(
            &seen,
            StatusCode::FORBIDDEN,
            "Not signed out",
            "The form's CSRF token is wrong.",
            "/",
        );
    }
    let mut r = see_other("/");
    if let Ok(v) = HeaderValue::from_str(&c.auth.end_session()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    let mut r = ([(header::CONTENT_TYPE, kind)], body).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

async fn live_js() -> Response {
    asset("text/javascript; charset=utf-8", LIVE_JS)
}
