//! Alertmanager's v2 API, served by ripcord, so the clients people already
//! run work against it unchanged: Prometheus names ripcord in
//! `alerting.alertmanagers`, amtool adds, queries, expires and imports
//! silences, Grafana's Alertmanager data source lists alerts and silences.
//!
//! The contract is Alertmanager's `api/v2/openapi.yaml` (paths relative to
//! `/api/v2`), and its handlers in `api/v2/api.go` where the spec is silent
//! (filters, sort order, the update of a silence):
//! - `POST /alerts`: a bare array of postable alerts (intake, in
//!   `source::http`);
//! - `GET /alerts[?filter=…&active=&silenced=&inhibited=&receiver=]`: the open
//!   incidents as gettable alerts; `GET /alerts/groups`: them in one group;
//! - `GET/POST /silences[?filter=…]`, `GET/DELETE /silence/{silenceID}`;
//! - `GET /status`, `GET /receivers`: enough for amtool and Grafana.
//!
//! Bearer-token protected like the rest of the API (amtool:
//! `--http.config.file` with `authorization: {credentials: …}`). An error's
//! body is a JSON string (the router reshapes it under `/api/v2/`).
//! Silences are ripcord's own (`silence`): the same validation as
//! `/api/v1/silences`, `scope` its extension (default `notify`).

mod alerts;
mod silences;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde_json::json;

use crate::rule::Matcher;
use crate::silence::http::SilenceApi;
use crate::source::http::Intake;
use crate::time::Ts;

/// What the v2 handlers share.
pub struct AlertmanagerApi {
    pub intake: Arc<Intake>,
    pub silences: Arc<SilenceApi>,
    /// The open incidents `/api/v2/alerts` lists.
    pub incidents: crate::journal::Shared<dyn crate::journal::Reads>,
    /// When this process started (the status' `uptime`).
    pub started: Ts,
}

/// The only receiver ripcord has: itself.
const RECEIVER: &str = "ripcord";

pub fn routes(api: Arc<AlertmanagerApi>) -> Router {
    Router::new()
        .route("/api/v2/alerts", get(alerts::list).post(alerts::post))
        .route("/api/v2/alerts/groups", get(alerts::groups))
        .route("/api/v2/silences", get(silences::list).post(silences::post))
        .route(
            "/api/v2/silence/{silenceID}",
            get(silences::show).merge(delete(silences::expire)),
        )
        .route("/api/v2/status", get(status))
        .route("/api/v2/receivers", get(receivers))
        .with_state(api)
}

/// An error answer (the router turns `{"error": …}` into the JSON string
/// Alertmanager's clients expect under `/api/v2/`).
fn err(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, axum::Json(json!({ "error": msg.into() }))).into_response()
}

/// The `filter` parameters (repeatable): each a matcher in Alertmanager's
/// syntax (`service="web"`, `instance=~"i-.*"`); what is wrong with one.
fn filters(query: Option<&str>) -> Result<Vec<Matcher>, String> {
    params(query, "filter")
        .map(|f| Matcher::parse(&f).map_err(|e| format!("bad filter: {e}")))
        .collect()
}

/// A refused query's answer: 400, saying why.
fn bad_query(why: String) -> Response {
    err(StatusCode::BAD_REQUEST, why)
}

/// Every value of the query parameter `name`, in order.
fn params<'a>(query: Option<&'a str>, name: &'a str) -> impl Iterator<Item = String> + 'a {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(move |(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A boolean parameter (`true`/`false`), `default` when absent or empty.
fn flag(query: Option<&str>, name: &str, default: bool) -> Result<bool, String> {
    match params(query, name).last().as_deref() {
        None | Some("") => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(format!(
            "{name}: `{other}` is not a boolean (true or false)"
        )),
    }
}

/// `GET /api/v2/status`: who answers. ripcord runs no Alertmanager cluster
/// (its replicas share a journal instead) and shows no Alertmanager
/// configuration: `original` is the smallest valid one, naming the one
/// receiver, so Grafana's data source connects; ripcord's own config (with
/// its secrets) never leaves the process.
async fn status(State(api): State<Arc<AlertmanagerApi>>) -> Response {
    axum::Json(json!({
        "cluster": {"name": RECEIVER, "status": "disabled", "peers": []},
        "versionInfo": {
            "version": env!("CARGO_PKG_VERSION"),
            "revision": "",
            "branch": "",
            "buildUser": "",
            "buildDate": "",
            "goVersion": "none (ripcord is written in Rust)",
        },
        "config": {"original": format!("route:\n  receiver: {RECEIVER}\nreceivers:\n  - name: {RECEIVER}\n")},
        "uptime": api.started,
    }))
    .into_response()
}

async fn receivers() -> Response {
    axum::Json(json!([{ "name": RECEIVER }])).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_filters_are_all_read_and_a_bad_one_is_named() {
        let q = "filter=service%3D%22web%22&active=true&filter=instance%3D~%22i-.%2A%22";
        let f = filters(Some(q)).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].name.as_str(), f[0].value()), ("service", "web"));
        assert!(f[1].is_regex());
        assert!(filters(Some("filter=%7Bnope")).is_err());
        assert!(flag(Some("active=false"), "active", true).is_ok_and(|b| !b));
        assert!(flag(Some("receiver="), "active", true).is_ok_and(|b| b));
        assert!(flag(Some("active=yes"), "active", true).is_err());
    }
}
