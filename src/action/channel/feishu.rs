//! Feishu / Lark custom bot (飞书自定义机器人): a group chat robot behind a
//! webhook URL that carries its token.
//!
//! ```yaml
//! oncall-feishu:
//!   type: feishu
//!   webhook: {env: FEISHU_WEBHOOK}   # https://open.feishu.cn/open-apis/bot/v2/hook/…
//!   secret: {env: FEISHU_SECRET}     # optional: the bot's 签名校验 secret
//!   at_users: ["ou_7d8a6e6df7621556ce0d21922b676706ccs"]  # open_ids mentioned for on-call
//!   at_all: false                    # @all instead (or as well)
//! ```
//!
//! What the custom bot API asks for (Feishu open platform, "自定义机器人使用
//! 指南"; Lark's is the same on open.larksuite.com):
//!
//! - `POST` the webhook with a JSON body. Every message is an interactive
//!   card (`msg_type: interactive`, `card: {header, elements}`): the title
//!   in the header (red for high, orange for medium, blue otherwise), the
//!   body as `plain_text` (text from events is shown as written and can
//!   form no link, markup or mention), links as buttons in an `action`
//!   element, mentions as `<at id=…></at>` in a `lark_md` element that
//!   holds nothing else.
//! - With 签名校验 (signing), the body carries `timestamp` (seconds since
//!   the epoch, as a string, within an hour of Feishu's clock: the
//!   injected clock's now) and `sign` = base64(HMAC-SHA256(key =
//!   timestamp + "\n" + secret, message = empty)). Feishu's key and message
//!   are the other way round from DingTalk's.
//! - A body is at most 20 KB: the body text is cut (on a character
//!   boundary, with `…`) until the serialized JSON fits; title, links and
//!   mentions are kept.
//! - The answer is `{"code": 0, "msg": "success"}`; 11232 and 9499 "too
//!   many requests" mean the bot's frequency limit (100 a minute, 5 a
//!   second), retried after a minute; 19021 a bad signature or a
//!   timestamp off by more than an hour; 19022 an IP not allowed; 19024 a
//!   missing keyword.
//!
//! The webhook's token and the secret never appear in an outcome or a log
//! line.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::kit::{Channel, Class, Registration, SendContext, SendOutcome, Sending, post_json};
use super::robot::{fit_json, read_ids, read_webhook};
use crate::action::message::{Message, truncate_utf8};
use crate::config::Errors;
use crate::config::secret::{Secret, read_secret};
use crate::config::yaml::MapReader;
use crate::decision::Tier;
use crate::text::one_line;
use crate::text::redact::Redact;

pub const CHANNEL: Registration = Registration {
    kind: "feishu",
    read: |m, errs| Some(Box::new(Feishu::from_config(m, errs)?)),
};

/// Largest request body Feishu accepts (20 KB; kept a little under).
pub const MAX_BODY_BYTES: usize = 20_000;
/// Card header titles beyond this are cut.
const MAX_TITLE_BYTES: usize = 256;
/// Feishu's limit is per minute.
const TOO_FAST_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Feishu {
    webhook: Secret,
    secret: Option<Secret>,
    at_users: Vec<String>,
    at_all: bool,
}

impl Feishu {
    pub fn from_config(m: &mut MapReader<'_>, errs: &mut Errors) -> Option<Feishu> {
        let before = errs.len();
        let webhook = read_webhook(m, "webhook", "FEISHU_WEBHOOK", errs);
        let secret = read_secret(m, "secret", errs);
        // An id goes into `<at id=…>` markup: nothing but an id fits.
        let at_users = read_ids(
            m,
            "at_users",
            "_-",
            "a Feishu open_id or user_id (letters, digits, _ and - only)",
            errs,
        );
        let at_all = m.bool("at_all", errs).unwrap_or(false);
        if errs.len() > before {
            return None;
        }
        Some(Feishu {
            webhook: webhook?,
            secret,
            at_users,
            at_all,
        })
    }

    async fn post(&self, ctx: &SendContext<'_>, msg: &Message) -> SendOutcome {
        let body = self.payload(msg, ctx.now.millis().div_euclid(1000));
        let outcome = match post_json(ctx.http, self.webhook.expose(), body).await {
            // A refusal comes as a code in a 200.
            Ok(a) => a.by_body(answer),
            Err(o) => o,
        };
        // The hook's token is its last path segment (Redact takes it).
        let mut redact = Redact::new().url(self.webhook.expose());
        if let Some(s) = &self.secret {
            redact = redact.secret(s.expose());
        }
        outcome.redacted(&redact)
    }

    /// The JSON body, at most [`MAX_BODY_BYTES`], signed for `timestamp_s`
    /// when a secret is set.
    pub fn payload(&self, msg: &Message, timestamp_s: i64) -> String {
        let title = truncate_utf8(&one_line(&msg.title), MAX_TITLE_BYTES);
        let template = match msg.tier {
            Tier::High => "red",
            Tier::Medium => "orange",
            Tier::Low => "blue",
        };
        let buttons: Vec<Value> = msg
            .links
            .iter()
            .enumerate()
            .map(|(i, l)| {
                json!({
                    "tag": "button",
                    "text": {"tag": "plain_text", "content": one_line(&l.label)},
                    "url": l.url,
                    "type": if i == 0 { "primary" } else { "default" },
                })
            })
            .collect();
        let mut mentions: Vec<String> = Vec::new();
        if msg.mention {
            if self.at_all {
                mentions.push("<at id=all></at>".to_owned());
            }
            mentions.extend(self.at_users.iter().map(|id| format!("<at id={id}></at>")));
        }
        let body = crate::text::each_line(&msg.body);
        let signed = self
            .secret
            .as_ref()
            .map(|s| (timestamp_s.to_string(), sign(timestamp_s, s.expose())));
        fit_json(MAX_BODY_BYTES, &body, |body| {
            let mut elements = vec![json!({
                "tag": "div",
                "text": {"tag": "plain_text", "content": body},
            })];
            if !buttons.is_empty() {
                elements.push(json!({"tag": "action", "actions": buttons}));
            }
            if !mentions.is_empty() {
                elements.push(json!({
                    "tag": "div",
                    "text": {"tag": "lark_md", "content": mentions.join(" ")},
                }));
            }
            let mut v = json!({
                "msg_type": "interactive",
                "card": {
                    "config": {"wide_screen_mode": true},
                    "header": {
                        "title": {"tag": "plain_text", "content": title},
                        "template": template,
                    },
                    "elements": elements,
                },
            });
            if let Some((ts, sign)) = &signed {
                v["timestamp"] = json!(ts);
                v["sign"] = json!(sign);
            }
            v
        })
    }
}

/// Feishu's `sign`: base64(HMAC-SHA256(key = "{timestamp}\n{secret}",
/// message = empty)).
pub fn sign(timestamp_s: i64, secret: &str) -> String {
    let key = format!("{timestamp_s}\n{secret}");
    let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes())
        .expect("HMAC takes keys of any length");
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Maps Feishu's `{"code": …, "msg": …}` answer (older bots answer
/// `{"StatusCode": 0, "StatusMessage": "success"}`).
fn answer(text: &str) -> SendOutcome {
    let v: Option<Value> = serde_json::from_str(text.trim()).ok();
    let code = v
        .as_ref()
        .and_then(|v| v.get("code").or_else(|| v.get("StatusCode")))
        .and_then(Value::as_i64);
    let said = v
        .as_ref()
        .and_then(|v| v.get("msg").or_else(|| v.get("StatusMessage")))
        .and_then(Value::as_str)
        .map(|s| truncate_utf8(s, 300))
        .unwrap_or_default();
    match code {
        None => SendOutcome::Reject(format!(
            "unexpected answer (no code): {}",
            truncate_utf8(text.trim(), 300)
        )),
        Some(0) => SendOutcome::Sent(format!("code 0 ({said})")),
        Some(c @ (11232 | 9499)) => SendOutcome::Retry {
            after: Some(TOO_FAST_WAIT),
            reason: format!("code {c}: the bot is sending too fast ({said})"),
        },
        Some(19021) => SendOutcome::Reject(format!(
            "code 19021: the signature was refused ({said}); `secret` must be the bot's \
             签名校验 secret and this host's clock within an hour of Feishu's"
        )),
        Some(c @ (19022 | 19024)) => SendOutcome::Reject(format!(
            "code {c}: the bot's security settings refused the message ({said}); check its \
             IP allow-list and keywords"
        )),
        Some(c) => SendOutcome::Reject(format!("code {c}: {said}")),
    }
}

impl Channel for Feishu {
    fn class(&self) -> Class {
        Class::Chat
    }

    /// The bot's documented limit: 100 messages a minute (and 5 a second,
    /// which the even spacing of 100 a minute keeps).
    fn default_rate(&self) -> (u32, Duration) {
        (100, Duration::from_secs(60))
    }

    fn send<'a>(&'a self, ctx: &'a SendContext<'a>, msg: &'a Message) -> Sending<'a> {
        Box::pin(self.post(ctx, msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_keyed_by_timestamp_and_secret_over_nothing() {
        // Computed the way Feishu's Java and Go demos do: the HMAC is keyed
        // by "{timestamp}\n{secret}" and run over no bytes at all.
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(b"1599360473\nsecret").expect("key");
        mac.update(b"");
        let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(sign(1_599_360_473, "secret"), want);
        assert_ne!(sign(1_599_360_474, "secret"), want);
    }

    #[test]
    fn answers_map_to_outcomes() {
        assert!(matches!(
            answer(r#"{"code":0,"msg":"success","data":{}}"#),
            SendOutcome::Sent(_)
        ));
        assert!(matches!(
            answer(r#"{"StatusCode":0,"StatusMessage":"success"}"#),
            SendOutcome::Sent(_)
        ));
        assert!(matches!(
            answer(r#"{"code":11232,"msg":"frequency limited"}"#),
            SendOutcome::Retry { .. }
        ));
        assert!(matches!(
            answer(r#"{"code":19021,"msg":"sign match fail"}"#),
            SendOutcome::Reject(_)
        ));
        assert!(matches!(answer("<html>"), SendOutcome::Reject(_)));
    }
}
