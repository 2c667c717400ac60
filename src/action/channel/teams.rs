//! Microsoft Teams through a Workflows webhook ("Post to a channel when a
//! webhook request is received"), which replaced Office 365 connectors.
//!
//! ```yaml
//! ops-teams:
//!   type: teams
//!   webhook: {env: TEAMS_WEBHOOK}   # the workflow's URL: its `sig=` is the credential
//!   at_users: ["oncall@example.com"]  # optional: mentioned (by UPN or Entra id) for on-call
//! ```
//!
//! What the webhook takes (Microsoft Learn, "Create incoming webhooks with
//! Workflows for Microsoft Teams" and "Format cards in Teams"):
//!
//! - `POST` a JSON body `{"type": "message", "attachments": [{"contentType":
//!   "application/vnd.microsoft.card.adaptive", "contentUrl": null,
//!   "content": <Adaptive Card 1.4>}]}`.
//! - The card: the title, then the body in `RichTextBlock`s of `TextRun`s.
//!   A `TextBlock` would render markdown, so text from events would become
//!   links and emphasis; a `TextRun` is shown as written. Links are
//!   `Action.OpenUrl` buttons. Mentions are `<at>name</at>` in a
//!   `TextBlock` of their own with the card's `msteams.entities`.
//! - A message is at most 28 KB: the body is cut (on a character boundary,
//!   with `…`) until the serialized JSON fits.
//! - The answer is 202 Accepted (200 from older flows); 429 carries
//!   `Retry-After`; 5xx is passing; 400 (a card the flow cannot post), 401
//!   and 403 (a wrong `sig`), 404 (a deleted flow) and 413 are refusals.
//!
//! The URL's `sig` never appears in an outcome or a log line.

use std::time::Duration;

use serde_json::{Value, json};

use super::kit::{Channel, Class, Registration, SendContext, SendOutcome, Sending, post_json};
use super::robot::{fit_json, read_ids, read_webhook};
use crate::action::message::{Message, truncate_utf8};
use crate::config::Errors;
use crate::config::secret::Secret;
use crate::config::yaml::MapReader;
use crate::decision::Tier;
use crate::text::one_line;
use crate::text::redact::Redact;

pub const CHANNEL: Registration = Registration {
    kind: "teams",
    read: |m, errs| Some(Box::new(Teams::from_config(m, errs)?)),
};

/// Teams' limit on a message (28 KB; kept a little under).
pub const MAX_BODY_BYTES: usize = 28_000;
const MAX_TITLE_BYTES: usize = 256;

#[derive(Debug)]
pub struct Teams {
    webhook: Secret,
    at_users: Vec<String>,
}

impl Teams {
    pub fn from_config(m: &mut MapReader<'_>, errs: &mut Errors) -> Option<Teams> {
        let before = errs.len();
        let webhook = read_webhook(m, "webhook", "TEAMS_WEBHOOK", errs);
        // An id goes between `<at>` tags and into the entities: a UPN or
        // an Entra object id, nothing that could close the tag.
        let at_users = read_ids(
            m,
            "at_users",
            "@._-",
            "a user principal name or Entra id (letters, digits, @ . _ - only)",
            errs,
        );
        if errs.len() > before {
            return None;
        }
        Some(Teams {
            webhook: webhook?,
            at_users,
        })
    }

    async fn post(&self, ctx: &SendContext<'_>, msg: &Message) -> SendOutcome {
        let outcome = match post_json(ctx.http, self.webhook.expose(), self.payload(msg)).await {
            Ok(a) => a.by_status(),
            Err(o) => o,
        };
        outcome.redacted(&Redact::new().url(self.webhook.expose()))
    }

    /// The JSON body, at most [`MAX_BODY_BYTES`].
    pub fn payload(&self, msg: &Message) -> String {
        let title = truncate_utf8(&one_line(&msg.title), MAX_TITLE_BYTES);
        let color = match msg.tier {
            Tier::High => "Attention",
            Tier::Medium => "Warning",
            Tier::Low => "Accent",
        };
        let actions: Vec<Value> = msg
            .links
            .iter()
            .map(|l| json!({"type": "Action.OpenUrl", "title": one_line(&l.label), "url": l.url}))
            .collect();
        let mentioned: &[String] = if msg.mention { &self.at_users } else { &[] };
        let name = |id: &str| id.split('@').next().unwrap_or(id).to_owned();
        let entities: Vec<Value> = mentioned
            .iter()
            .map(|id| {
                json!({
                    "type": "mention",
                    "text": format!("<at>{}</at>", name(id)),
                    "mentioned": {"id": id, "name": name(id)},
                })
            })
            .collect();
        let body = crate::text::each_line(&msg.body);
        fit_json(MAX_BODY_BYTES, &body, |body| {
            let mut blocks = vec![json!({
                "type": "RichTextBlock",
                "inlines": [{
                    "type": "TextRun", "text": title, "weight": "Bolder",
                    "size": "Medium", "color": color,
                }],
            })];
            for line in body.lines() {
                blocks.push(json!({
                    "type": "RichTextBlock",
                    "inlines": [{"type": "TextRun", "text": line}],
                }));
            }
            if !entities.is_empty() {
                let text: Vec<String> = mentioned
                    .iter()
                    .map(|id| format!("<at>{}</at>", name(id)))
                    .collect();
                blocks.push(json!({"type": "TextBlock", "text": text.join(" "), "wrap": true}));
            }
            let mut card = json!({
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": blocks,
            });
            if !actions.is_empty() {
                card["actions"] = json!(actions);
            }
            if !entities.is_empty() {
                card["msteams"] = json!({"entities": entities});
            }
            json!({
                "type": "message",
                "attachments": [{
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": null,
                    "content": card,
                }],
            })
        })
    }
}

impl Channel for Teams {
    fn class(&self) -> Class {
        Class::Chat
    }

    /// One a second, as for Slack: Teams throttles a channel's posts with
    /// 429 and `Retry-After`, which the delivery worker honours.
    fn default_rate(&self) -> (u32, Duration) {
        (1, Duration::from_secs(1))
    }

    fn send<'a>(&'a self, ctx: &'a SendContext<'a>, msg: &'a Message) -> Sending<'a> {
        Box::pin(self.post(ctx, msg))
    }
}
