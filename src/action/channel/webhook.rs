//! Generic webhook: a JSON body, from a template or the whole message.
//!
//! ```yaml
//! hook:
//!   type: webhook
//!   url: {env: HOOK_URL}          # a secret: such URLs often carry tokens
//!   headers: {X-Api-Key: {env: HOOK_KEY}}
//!   body: '{"text": "{title}", "severity": "{severity}", "incident": "{incident}"}'
//! ```
//!
//! Placeholders in `body` (`{title}`, `{body}`, `{text}`, `{tier}`,
//! `{severity}`, `{incident}`, `{kind}`) are JSON-escaped, so they belong
//! inside string quotes. Without `body`, the whole message is sent as JSON.

use std::time::Duration;

use serde_json::json;

use super::kit::{self, Channel, Class, Registration, SendContext, SendOutcome, Sending};
use crate::action::message::{Kind, Message};
use crate::config::Errors;
use crate::config::secret::{Secret, read_secret, secret_from_node};
use crate::config::yaml::MapReader;
use crate::text::redact::Redact;
use crate::text::template::{fill, json_escaped};

#[derive(Debug)]
pub struct Webhook {
    url: Secret,
    headers: Vec<(String, Secret)>,
    body: Option<String>,
}

const FIELDS: [&str; 7] = [
    "title", "body", "text", "tier", "severity", "incident", "kind",
];

impl Webhook {
    pub fn from_config(m: &mut MapReader<'_>, errs: &mut Errors) -> Option<Webhook> {
        let url = read_secret(m, "url", errs);
        if url.is_none() && !m.has("url") {
            m.err(errs, m.node(), "url", "is required");
        }
        let mut headers = Vec::new();
        if let Some(mut hm) = m.map("headers", errs) {
            for (name, _, v) in hm.take_all() {
                if let Some(s) = secret_from_node(&hm, v, name, errs) {
                    headers.push((name.to_owned(), s));
                }
            }
        }
        let body = m.str("body", errs).map(str::to_owned);
        if let Some(b) = &body {
            let sample = render(b, &example());
            let n = m.node_of("body").unwrap_or(m.node());
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&sample) {
                m.err(errs, n, "body", format!("does not render to JSON ({e}); placeholders go inside quotes: \"{{title}}\""));
            }
            for p in kit::unknown_placeholders(b, &FIELDS) {
                m.err(errs, n, "body", p);
            }
        }
        Some(Webhook {
            url: url?,
            headers,
            body,
        })
    }

    fn payload(&self, msg: &Message) -> String {
        match &self.body {
            Some(t) => render(t, msg),
            None => json!({
                "kind": kind_name(msg.kind),
                "title": msg.title,
                "body": msg.body,
                "tier": msg.tier,
                "severity": msg.severity,
                "incident": msg.incident,
                "links": msg.links.iter().map(|l| json!({"label": l.label, "url": l.url})).collect::<Vec<_>>(),
            })
            .to_string(),
        }
    }

    async fn post(&self, ctx: &SendContext<'_>, msg: &Message) -> SendOutcome {
        let mut req = kit::post(ctx.http, self.url.expose(), kit::JSON, self.payload(msg));
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.expose());
        }
        let outcome = match kit::exchange(req).await {
            Ok(a) => a.by_status(),
            Err(o) => o,
        };
        // The URL may carry a token and the headers are credentials: an
        // answer that echoes them must not carry them into the journal.
        let mut redact = Redact::new().url(self.url.expose());
        for (_, v) in &self.headers {
            redact = redact.secret(v.expose());
        }
        outcome.redacted(&redact)
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Incident => "incident",
        Kind::ApprovalRequest => "approval_request",
        Kind::Page => "page",
        Kind::Outcome => "outcome",
        Kind::Resolved => "resolved",
        Kind::Progress => "progress",
        Kind::Digest => "digest",
    }
}

/// Fills `{field}` with the JSON-escaped field (no quotes added).
fn render(template: &str, msg: &Message) -> String {
    fill(template, |name| {
        let v = match name {
            "title" => msg.title.clone(),
            "body" => msg.body.clone(),
            "text" => msg.plain(),
            "tier" => msg.tier.to_string(),
            "severity" => msg.severity.to_string(),
            "incident" => msg.incident.clone().unwrap_or_default(),
            "kind" => kind_name(msg.kind).to_owned(),
            _ => return None,
        };
        Some(json_escaped(&v))
    })
}

fn example() -> Message {
    Message::note(
        Kind::Incident,
        crate::decision::Tier::High,
        crate::decision::Severity::Severe,
        Some("inc-000000000000"),
        "a \"quoted\" title".into(),
        "line one\nline two".into(),
    )
}

pub const CHANNEL: Registration = Registration {
    kind: "webhook",
    read: |m, errs| Some(Box::new(Webhook::from_config(m, errs)?)),
};

impl Channel for Webhook {
    fn class(&self) -> Class {
        Class::Chat
    }

    /// A receiver of ours, not a provider's quota.
    fn default_rate(&self) -> (u32, Duration) {
        (10, Duration::from_secs(1))
    }

    fn send<'a>(&'a self, ctx: &'a SendContext<'a>, msg: &'a Message) -> Sending<'a> {
        Box::pin(self.post(ctx, msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_values_are_json_escaped() {
        let out = render(
            r#"{"t": "{title}", "b": "{body}", "keep": "{unknown}", "n": 1}"#,
            &example(),
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["t"], "a \"quoted\" title");
        assert_eq!(v["b"], "line one\nline two");
        assert_eq!(v["keep"], "{unknown}");
    }
}
