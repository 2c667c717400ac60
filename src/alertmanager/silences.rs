//! `/api/v2/silences` and `/api/v2/silence/{silenceID}`, as amtool's
//! `silence add`, `query`, `expire`, `update` and `import` use them.
//!
//! - A filter keeps the silences that carry, for every filter matcher, a
//!   matcher of the same name, operator and value (Alertmanager's
//!   `CheckSilenceMatchesFilterLabels`); the list is sorted active (ending
//!   soonest first), pending (starting soonest), expired (latest first).
//! - A POST with an `id` replaces that silence: ripcord never changes a
//!   silence in place (its audit says what muted what), so the old one is
//!   expired, by the new one's author, and a new one made; its id is the
//!   answer. Alertmanager does the same whenever an update changes the
//!   matchers or a start. An unknown `id` is 404, which `amtool silence
//!   import` takes as "create it anew".
//! - DELETE of a silence already over is 200 (Alertmanager's expire is
//!   idempotent); of an unknown one 500 with the message (the spec gives
//!   DELETE no other error).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{AlertmanagerApi, bad_query, err, filters};
use crate::rule::Matcher;
use crate::silence::http::{gettable, status_of};
use crate::silence::{MatcherSpec, PostableSilence, Silence, SilenceError, SilenceState};
use crate::time::Ts;

/// Whether `s` carries an equivalent of every filter matcher.
fn carries_all(s: &Silence, filter: &[Matcher]) -> bool {
    filter.iter().all(|f| {
        let f = MatcherSpec::of(f);
        s.matchers.contains(&f)
    })
}

/// Active first (ending soonest), then pending (starting soonest), then
/// expired (ended latest first).
fn sort(silences: &mut [Silence], now: Ts) {
    let rank = |s: &Silence| match s.state(now) {
        SilenceState::Active => 0,
        SilenceState::Pending => 1,
        SilenceState::Expired => 2,
    };
    silences.sort_by(|a, b| {
        rank(a).cmp(&rank(b)).then_with(|| match a.state(now) {
            SilenceState::Active => a.ends_at.cmp(&b.ends_at),
            SilenceState::Pending => a.starts_at.cmp(&b.starts_at),
            SilenceState::Expired => b.ends_at.cmp(&a.ends_at),
        })
    });
}

pub(super) async fn list(
    State(api): State<Arc<AlertmanagerApi>>,
    RawQuery(q): RawQuery,
) -> Response {
    let filter = match filters(q.as_deref()) {
        Ok(f) => f,
        Err(why) => return bad_query(why),
    };
    let s = &api.silences;
    let now = s.clock.now();
    match s.journal.with(move |j| j.silences(now, true)).await {
        Ok(all) => {
            let mut kept: Vec<Silence> = all
                .into_iter()
                .filter(|s| carries_all(s, &filter))
                .collect();
            sort(&mut kept, now);
            let out: Vec<Value> = kept.iter().map(|s| gettable(s, now)).collect();
            axum::Json(out).into_response()
        }
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Why a POST did nothing.
enum Refused {
    Silence(SilenceError),
    UnknownId(String),
}

pub(super) async fn post(State(api): State<Arc<AlertmanagerApi>>, body: Bytes) -> Response {
    let mut post: PostableSilence = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return err(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid silence: {e} (Alertmanager's postableSilence: matchers, startsAt, endsAt, createdBy, comment; optional id, and ripcord's scope notify|all)"
                ),
            );
        }
    };
    let replaces = post.id.take().filter(|i| !i.is_empty());
    let s = &api.silences;
    let (guard, now) = (s.guard.clone(), s.clock.now());
    let done = s
        .journal
        .with(move |j| {
            let old = match &replaces {
                Some(id) => match j.silence(id)? {
                    Some(old) => Some(old),
                    None => return Ok(Err(Refused::UnknownId(id.clone()))),
                },
                None => None,
            };
            // Checked before anything changes: a bad update leaves the old
            // silence as it was.
            let checked = match post.check(guard.limits(), now) {
                Ok(c) => c,
                Err(e) => return Ok(Err(Refused::Silence(e.into()))),
            };
            if let Some(old) = &old {
                if old.state(now) != SilenceState::Expired {
                    j.expire_silence(&old.id, &checked.silence.created_by, now)?;
                    guard.forget(&old.id);
                }
            }
            let new = match crate::silence::record(j, checked, &guard, now) {
                Ok(new) => new,
                Err(SilenceError::Journal(e)) => return Err(e),
                Err(e) => return Ok(Err(Refused::Silence(e))),
            };
            Ok(Ok((new, old.map(|o| o.id))))
        })
        .await;
    match done {
        Ok(Ok((new, replaced))) => {
            tracing::info!(silence = %new.id, by = %new.created_by, scope = new.scope.as_str(), replaced = ?replaced, "silence created");
            axum::Json(json!({ "silenceID": new.id })).into_response()
        }
        Ok(Err(Refused::UnknownId(id))) => {
            err(StatusCode::NOT_FOUND, format!("silence {id} not found"))
        }
        Ok(Err(Refused::Silence(e))) => err(status_of(&e), e.to_string()),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

pub(super) async fn show(
    State(api): State<Arc<AlertmanagerApi>>,
    Path(id): Path<String>,
) -> Response {
    let s = &api.silences;
    let now = s.clock.now();
    let lookup = id.clone();
    match s.journal.with(move |j| j.silence(&lookup)).await {
        Ok(Some(s)) => axum::Json(gettable(&s, now)).into_response(),
        Ok(None) => err(StatusCode::NOT_FOUND, format!("silence {id} not found")),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Expires a silence now. The request names nobody (amtool's DELETE has no
/// body): the silence's audit says it was ended through this API.
pub(super) async fn expire(
    State(api): State<Arc<AlertmanagerApi>>,
    Path(id): Path<String>,
) -> Response {
    let s = &api.silences;
    let now = s.clock.now();
    let target = id.clone();
    match s
        .journal
        .with(move |j| {
            Ok(crate::silence::expire(
                j,
                &target,
                "api (Alertmanager v2)",
                now,
            ))
        })
        .await
    {
        Ok(Ok(s)) => {
            tracing::info!(silence = %s.id, "silence expired");
            StatusCode::OK.into_response()
        }
        Ok(Err(SilenceError::AlreadyOver(_))) => StatusCode::OK.into_response(),
        // The spec answers DELETE with 200 or 500 only: amtool (0.25)
        // prints a 500's message, and would print nothing of a 404's.
        Ok(Err(SilenceError::NotFound(_))) => err(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("silence {id} not found"),
        ),
        Ok(Err(e)) => err(status_of(&e), e.to_string()),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::silence::{Scope, SilenceLimits};

    fn silence(matchers: &[&str], starts: i64, ends: i64) -> Silence {
        let post = PostableSilence {
            id: None,
            matchers: matchers
                .iter()
                .map(|m| MatcherSpec::parse(m).unwrap())
                .collect(),
            starts_at: Ts(starts).to_string(),
            ends_at: Some(Ts(ends).to_string()),
            until: None,
            created_by: "alice".into(),
            comment: "c".into(),
            scope: Scope::Notify,
        };
        post.validate(&SilenceLimits::default(), Ts(0)).unwrap()
    }

    #[test]
    fn a_filter_keeps_silences_carrying_the_same_matcher() {
        let s = silence(&["service=\"payments\"", "instance=~\"i-.*\""], 0, 60_000);
        let f = |m: &str| vec![Matcher::parse(m).unwrap()];
        assert!(carries_all(&s, &f("service=payments")));
        assert!(carries_all(&s, &f("instance=~\"i-.*\"")));
        // Same name, another operator or value: not this silence.
        assert!(!carries_all(&s, &f("service=web")));
        assert!(!carries_all(&s, &f("service!=payments")));
        assert!(!carries_all(&s, &f("instance=\"i-.*\"")));
        assert!(carries_all(&s, &[]));
    }

    #[test]
    fn active_then_pending_then_expired() {
        let now = Ts(100_000);
        let mut all = vec![
            silence(&["a=1"], 0, 50_000),        // expired early
            silence(&["a=2"], 200_000, 300_000), // pending, later
            silence(&["a=3"], 0, 900_000),       // active, ends late
            silence(&["a=4"], 0, 90_000),        // expired late
            silence(&["a=5"], 150_000, 300_000), // pending, sooner
            silence(&["a=6"], 0, 400_000),       // active, ends soon
        ];
        // Validated at time 0 so all start; their states at `now` differ.
        sort(&mut all, now);
        let order: Vec<&str> = all.iter().map(|s| s.matchers[0].value.as_str()).collect();
        assert_eq!(order, ["6", "3", "5", "2", "4", "1"]);
    }
}
