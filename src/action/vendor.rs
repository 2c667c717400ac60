//! The plan's severe path ends with "contact the cloud vendor's support":
//! once per severe incident, ripcord sends the incident's summary,
//! instances, region and timeline link to the vendor, through a configured
//! channel or an HTTP request (a support-ticket API), and puts the answer
//! (the HTTP status and the ticket id) on the incident's timeline.
//!
//! ```yaml
//! vendor:
//!   when: approved          # or at_once (as the severe incident opens)
//!   channel: support-email  # or http: {method, url, headers, body} (the HTTP executor's)
//! ```
//!
//! Once per incident across restarts and replicas: the journal lease
//! `vendor/<incident>`, taken for good before anything is sent (a crash
//! between the lease and the send loses the contact rather than sending it
//! twice; the timeline then has no `vendor` line).

use super::executor::http::HttpExecutor;
use super::executor::{Patterns, Vars};
use crate::config::Errors;
use crate::config::yaml::MapReader;
use crate::decision::{Action, Decision, Severity};
use crate::journal::ActionRow;

/// When the vendor hears of a severe incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// After the incident commander approved the rollback (or, on a tier
    /// that asks nobody, when its rollback runs).
    Approved,
    /// As the severe incident opens (its first action).
    AtOnce,
}

#[derive(Debug)]
pub enum Contact {
    Channel(String),
    Http(Box<HttpExecutor>),
}

#[derive(Debug)]
pub struct Vendor {
    pub when: When,
    pub contact: Contact,
    /// `http.public_url`: the timeline link is `<public_url>/incidents/<id>`.
    pub public_url: Option<String>,
}

/// The facts a vendor template may use beside the labels: free text, so
/// checked as one bounded line instead of against a label pattern.
pub const FACTS: [&str; 4] = ["summary", "instances", "region", "timeline"];

/// Reads `vendor: {when, channel | http}`; the channel name is returned with
/// its node for the caller's cross-check against `channels:`.
pub fn read(
    mut m: MapReader<'_>,
    errs: &mut Errors,
) -> (Option<Vendor>, Option<(String, crate::config::yaml::Node)>) {
    let when = match m.str("when", errs) {
        None | Some("approved") => Some(When::Approved),
        Some("at_once") => Some(When::AtOnce),
        Some(other) => {
            let n = m.node_of("when").unwrap_or(m.node());
            m.err(
                errs,
                n,
                "when",
                format!("`{other}`: expected approved or at_once"),
            );
            None
        }
    };
    let channel = m.str("channel", errs).map(str::to_owned);
    let channel_ref = match (&channel, m.node_of("channel")) {
        (Some(c), Some(n)) => Some((c.clone(), n.clone())),
        _ => None,
    };
    let http = m.map("http", errs);
    let contact = match (channel, http) {
        (Some(c), None) => Some(Contact::Channel(c)),
        (None, Some(h)) => HttpExecutor::from_config(h, errs).map(|h| Contact::Http(Box::new(h))),
        (Some(_), Some(_)) => {
            m.err(
                errs,
                m.node(),
                "channel",
                "give either `channel` or `http`, not both",
            );
            None
        }
        (None, None) => {
            m.err(
                errs,
                m.node(),
                "channel",
                "needs `channel: <a channel name>` or `http: {url: ...}`",
            );
            None
        }
    };
    m.finish(errs);
    let vendor = match (when, contact) {
        (Some(when), Some(contact)) => Some(Vendor {
            when,
            contact,
            public_url: None,
        }),
        _ => None,
    };
    (vendor, channel_ref)
}

impl Vendor {
    /// Whether handling `a` is the moment to contact the vendor. Never for
    /// a minor or functional incident.
    pub fn due(&self, a: &ActionRow) -> bool {
        let d = &a.decision;
        if d.severity != Severity::Severe || d.incident.is_none() {
            return false;
        }
        match self.when {
            When::AtOnce => a.action != Action::Resolve,
            When::Approved => {
                a.action == Action::Rollback
                    && (a.key.ends_with("/approved")
                        || a.key.contains("/approved@")
                        || crate::journal::request_of_rollback(&a.key).is_none())
            }
        }
    }

    /// The decision's labels plus the vendor's facts (`summary`: the
    /// incident's opening line).
    pub fn vars(&self, d: &Decision, summary: &str) -> Vars {
        let mut vars = Vars::of(d);
        let id = vars.0.get("incident").cloned().unwrap_or_default();
        let instances: Vec<String> = match &d.batch {
            Some(b) => b.instances().iter().map(|s| s.to_string()).collect(),
            None => d
                .labels
                .iter()
                .filter(|(k, _)| &**k == "instance")
                .map(|(_, v)| v.to_string())
                .collect(),
        };
        let timeline = match &self.public_url {
            Some(base) => format!(
                "{}/incidents/{}",
                base.trim_end_matches('/'),
                crate::text::percent_encode(&id)
            ),
            None => String::new(),
        };
        let region = vars.0.get("region").cloned().unwrap_or_default();
        for (name, value) in [
            ("summary", summary.to_owned()),
            ("instances", instances.join(", ")),
            ("region", region),
            ("timeline", timeline),
        ] {
            let line = crate::text::one_line(&value).into_owned();
            vars.0
                .insert(name.into(), super::message::truncate_utf8(&line, 1000));
        }
        vars
    }

    /// The configured label patterns, with the vendor's facts let through as
    /// any bounded line (they are still escaped where they go).
    pub fn patterns(&self, base: &Patterns) -> Patterns {
        base.allowing(&FACTS, "[^\\r\\n]{0,1100}")
    }
}

/// A ticket id from a support API's JSON answer (`id`, `ticket_id` or
/// `number`): one short line, or nothing.
pub fn ticket_id(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    ["ticket_id", "id", "number"].iter().find_map(|k| {
        let s = match v.get(*k)? {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => return None,
        };
        let line = crate::text::one_line(&s).into_owned();
        Some(super::message::truncate_utf8(&line, 64))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_id_is_read_from_id_ticket_id_or_number_and_kept_short() {
        assert_eq!(
            ticket_id(r#"{"ticket_id":"SUP-1"}"#).as_deref(),
            Some("SUP-1")
        );
        assert_eq!(ticket_id(r#"{"number":42}"#).as_deref(), Some("42"));
        assert_eq!(ticket_id(r#"{"id":"a\nb"}"#).as_deref(), Some("a\\u{a}b"));
        assert_eq!(
            ticket_id(&format!(r#"{{"id":"{}"}}"#, "x".repeat(500))).map(|s| s.len() <= 64),
            Some(true)
        );
        assert_eq!(ticket_id("not json"), None);
        assert_eq!(ticket_id(r#"{"ok":true}"#), None);
    }
}
