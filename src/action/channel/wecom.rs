//! WeCom group robot (企业微信群机器人): a group chat robot behind a webhook
//! URL that carries its `key`.
//!
//! ```yaml
//! oncall-wecom:
//!   type: wecom
//!   webhook: {env: WECOM_WEBHOOK}      # https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…
//!   mentioned_mobiles: ["13800000000"] # @-mentioned in text messages ("@all" for everyone)
//!   mentioned_users: ["zhangsan"]      # optional: WeCom user ids, @-mentioned in both formats
//!   format: markdown                   # or text
//! ```
//!
//! What the robot API asks for (WeCom developer docs, "群机器人配置说明"):
//!
//! - `POST` the webhook with a JSON body; `msgtype` is `text` (`text.content`
//!   at most 2,048 bytes, `mentioned_list`, `mentioned_mobile_list`) or
//!   `markdown` (`markdown.content` at most 4,096 bytes).
//! - Markdown cannot mention by mobile: `mentioned_mobiles` only works with
//!   `format: text`. Both formats can mention user ids with `<@userid>` in
//!   the content, which is what `mentioned_users` does in markdown.
//! - Longer content is split into several messages, on character
//!   boundaries and preferably at line ends, sent in order; the message is
//!   sent only when every part is. Mentions go with the first part.
//!   A part that fails stops the rest; the delivery worker's retry then
//!   sends every part again (the chat may show the first parts twice).
//! - Links are `[label](url)` in markdown and plain URLs in text.
//! - The answer is `{"errcode": 0, "errmsg": "ok"}`; 45009 means the
//!   robot's frequency limit (20 messages a minute) was hit (retried after
//!   a minute), 93000 an invalid webhook URL or key, 40058 content too long.
//!
//! Rate limits, retries and digests are the delivery worker's job; note
//! that a split message counts as one for its limiter but as several for
//! WeCom's. The webhook key never appears in an outcome or a log line.

use std::time::Duration;

use serde_json::json;

use super::kit::{Channel, Class, Registration, SendContext, SendOutcome, Sending, post_json};
use super::robot::{Format, errcode, read_format, read_list, read_webhook};
use crate::action::message::{Message, split_utf8, truncate_utf8};
use crate::config::Errors;
use crate::config::secret::Secret;
use crate::config::yaml::MapReader;
use crate::text::markdown;
use crate::text::redact::Redact;

/// Largest `markdown.content`, in bytes.
pub const MAX_MARKDOWN_BYTES: usize = 4096;
/// Largest `text.content`, in bytes.
pub const MAX_TEXT_BYTES: usize = 2048;

/// How long to wait after 45009 (frequency limit): the robot's limit is
/// per minute.
const FREQ_LIMIT_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct WeCom {
    webhook: Secret,
    mentioned_mobiles: Vec<String>,
    mentioned_users: Vec<String>,
    format: Format,
}

impl WeCom {
    pub fn from_config(m: &mut MapReader<'_>, errs: &mut Errors) -> Option<WeCom> {
        let before = errs.len();
        let webhook = read_webhook(m, "webhook", "WECOM_WEBHOOK", errs);
        let mentioned_mobiles = read_list(m, "mentioned_mobiles", errs);
        let mentioned_users = read_list(m, "mentioned_users", errs);
        let format = read_format(m, errs);
        if errs.len() > before {
            return None;
        }
        Some(WeCom {
            webhook: webhook?,
            mentioned_mobiles,
            mentioned_users,
            format,
        })
    }

    async fn post(&self, ctx: &SendContext<'_>, msg: &Message) -> SendOutcome {
        let parts = self.payloads(msg);
        let n = parts.len();
        for (i, body) in parts.into_iter().enumerate() {
            let outcome = self.send_one(ctx, body).await.redacted(&self.redact());
            let part = |s: String| {
                if n == 1 {
                    s
                } else {
                    format!("part {} of {n} ({i} sent before it): {s}", i + 1)
                }
            };
            match outcome {
                SendOutcome::Sent(_) => {}
                SendOutcome::Retry { after, reason } => {
                    return SendOutcome::Retry {
                        after,
                        reason: part(reason),
                    };
                }
                SendOutcome::Reject(r) => return SendOutcome::Reject(part(r)),
            }
        }
        if n == 1 {
            SendOutcome::Sent("errcode 0".into())
        } else {
            SendOutcome::Sent(format!("sent in {n} parts (errcode 0)"))
        }
    }

    async fn send_one(&self, ctx: &SendContext<'_>, body: String) -> SendOutcome {
        match post_json(ctx.http, self.webhook.expose(), body).await {
            // A refusal comes as an errcode in a 200.
            Ok(a) => a.by_body(answer),
            Err(o) => o,
        }
    }

    /// The JSON bodies to send, in order: one per piece of content.
    pub fn payloads(&self, msg: &Message) -> Vec<String> {
        let users: &[String] = if msg.mention {
            &self.mentioned_users
        } else {
            &[]
        };
        let mobiles: &[String] = if msg.mention {
            &self.mentioned_mobiles
        } else {
            &[]
        };
        match self.format {
            Format::Markdown => {
                let mut content = format!("### {}", markdown(&msg.title));
                for line in msg.body.lines() {
                    content.push('\n');
                    content.push_str(&markdown(line));
                }
                for l in &msg.links {
                    content.push_str(&format!("\n[{}]({})", l.label, l.url));
                }
                if !users.is_empty() {
                    content.push('\n');
                    let tags: Vec<String> = users.iter().map(|u| format!("<@{u}>")).collect();
                    content.push_str(&tags.join(" "));
                }
                split_utf8(&content, MAX_MARKDOWN_BYTES)
                    .into_iter()
                    .map(|c| json!({"msgtype": "markdown", "markdown": {"content": c}}).to_string())
                    .collect()
            }
            Format::Text => {
                let content = msg.plain();
                split_utf8(&content, MAX_TEXT_BYTES)
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let mut text = json!({"content": c});
                        if i == 0 && !mobiles.is_empty() {
                            text["mentioned_mobile_list"] = json!(mobiles);
                        }
                        if i == 0 && !users.is_empty() {
                            text["mentioned_list"] = json!(users);
                        }
                        json!({"msgtype": "text", "text": text}).to_string()
                    })
                    .collect()
            }
        }
    }

    /// The webhook: its `key` is the credential.
    fn redact(&self) -> Redact {
        Redact::new().url(self.webhook.expose())
    }
}

/// Maps WeCom's `{"errcode": …, "errmsg": …}` answer.
fn answer(text: &str) -> SendOutcome {
    let Some((code, errmsg)) = errcode(text) else {
        return SendOutcome::Reject(format!(
            "unexpected answer (no errcode): {}",
            truncate_utf8(text.trim(), 300)
        ));
    };
    match code {
        0 => SendOutcome::Sent(format!("errcode 0 ({errmsg})")),
        45009 => SendOutcome::Retry {
            after: Some(FREQ_LIMIT_WAIT),
            reason: format!("errcode 45009: the robot's frequency limit was hit ({errmsg})"),
        },
        40058 => SendOutcome::Reject(format!(
            "errcode 40058: WeCom found the content too long ({errmsg})"
        )),
        93000 => SendOutcome::Reject(format!(
            "errcode 93000: invalid webhook URL or key ({errmsg}); check the robot's webhook"
        )),
        other => SendOutcome::Reject(format!("errcode {other}: {errmsg}")),
    }
}

pub const CHANNEL: Registration = Registration {
    kind: "wecom",
    read: |m, errs| Some(Box::new(WeCom::from_config(m, errs)?)),
};

impl Channel for WeCom {
    fn class(&self) -> Class {
        Class::Chat
    }

    /// The robot's documented limit: 20 messages a minute.
    fn default_rate(&self) -> (u32, Duration) {
        (20, Duration::from_secs(60))
    }

    fn send<'a>(&'a self, ctx: &'a SendContext<'a>, msg: &'a Message) -> Sending<'a> {
        Box::pin(self.post(ctx, msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::message::{Kind, Link};
    use crate::decision::{Severity, Tier};
    use serde_json::Value;

    fn robot(format: Format) -> WeCom {
        WeCom {
            webhook: Secret::new(
                "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-7xxx-4bc4",
            ),
            mentioned_mobiles: vec!["13800000000".into()],
            mentioned_users: vec!["zhangsan".into()],
            format,
        }
    }

    fn msg(body: String) -> Message {
        let mut m = Message::note(
            Kind::ApprovalRequest,
            Tier::High,
            Severity::Severe,
            Some("inc-1"),
            "[HIGH/severe] payments: approve rollback".into(),
            body,
        );
        m.links = vec![Link {
            label: "Approve".into(),
            url: "https://r.example/a".into(),
        }];
        m.mention = true;
        m
    }

    fn contents(ps: &[String], kind: &str) -> Vec<String> {
        ps.iter()
            .map(|p| {
                let v: Value = serde_json::from_str(p).unwrap();
                assert_eq!(v["msgtype"], kind);
                v[kind]["content"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    #[test]
    fn short_messages_are_one_part() {
        let ps = robot(Format::Markdown).payloads(&msg("one\ntwo".into()));
        let c = contents(&ps, "markdown");
        assert_eq!(c.len(), 1);
        // Markdown punctuation from the text is escaped: shown, not obeyed.
        assert!(c[0].starts_with("### \\[HIGH/severe\\]"), "{}", c[0]);
        assert!(c[0].contains("[Approve](https://r.example/a)"));
        assert!(c[0].ends_with("<@zhangsan>"));

        let ps = robot(Format::Text).payloads(&msg("one".into()));
        let v: Value = serde_json::from_str(&ps[0]).unwrap();
        assert_eq!(v["text"]["mentioned_mobile_list"][0], "13800000000");
        assert_eq!(v["text"]["mentioned_list"][0], "zhangsan");
        assert!(
            v["text"]["content"]
                .as_str()
                .unwrap()
                .contains("Approve: https://r.example/a")
        );
    }

    #[test]
    fn long_messages_split_within_limits() {
        let body = "回滚实例并验证。\n".repeat(600);
        for (f, kind, max) in [
            (Format::Markdown, "markdown", MAX_MARKDOWN_BYTES),
            (Format::Text, "text", MAX_TEXT_BYTES),
        ] {
            let ps = robot(f).payloads(&msg(body.clone()));
            let c = contents(&ps, kind);
            assert!(c.len() > 1);
            assert!(c.iter().all(|p| p.len() <= max));
            assert!(c.concat().contains(&body));
            // Mentions only once, with the first part.
            let mentioned = ps.iter().filter(|p| p.contains("13800000000")).count();
            assert_eq!(mentioned, usize::from(f == Format::Text));
        }
    }

    #[test]
    fn answers_map_to_outcomes() {
        assert!(matches!(
            answer(r#"{"errcode":0,"errmsg":"ok"}"#),
            SendOutcome::Sent(_)
        ));
        assert!(matches!(
            answer(r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#),
            SendOutcome::Retry { after: Some(d), .. } if d == Duration::from_secs(60)
        ));
        for c in [40058, 93000, 12345] {
            assert!(matches!(
                answer(&format!(r#"{{"errcode":{c},"errmsg":"x"}}"#)),
                SendOutcome::Reject(_)
            ));
        }
    }
}
