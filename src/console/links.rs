//! The signed one-click links of chat messages (no token; the HMAC is the
//! credential), for a phone at 3 a.m.:
//! - `GET /l/{id}/{verb}/{expires}/{sig}`: a confirmation page, acts on nothing
//! - `POST` to the same path from that page's form: acts, through the same
//!   [`crate::api::perform`] as the API.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::action::links::Verb;
use crate::action::ops;
use crate::api::{Api, Who, perform, status_of};
use crate::journal::Via;
use crate::time::Ts;

/// The signed-link pages.
pub fn routes(api: Arc<Api>) -> Router {
    Router::new()
        .route(
            "/l/{id}/{verb}/{expires}/{sig}",
            get(confirm_page).post(link_act),
        )
        .with_state(api)
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
    super::html(code, html)
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
    let review = api
        .journal
        .with(move |j| Ok(crate::report::Review::build(j, &lookup, &budgets, now).ok()))
        .await
        .ok()
        .flatten();
    let body = super::pages::confirm(review.as_ref(), &id, verb, Ts(expires), now);
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
        super::pages::seg(&id),
        super::pages::seg(&sig)
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
