//! DingTalk custom robot (钉钉自定义机器人): a group chat robot behind a
//! webhook URL that carries its `access_token`.
//!
//! ```yaml
//! oncall-dingtalk:
//!   type: dingtalk
//!   webhook: {env: DINGTALK_WEBHOOK}   # https://oapi.dingtalk.com/robot/send?access_token=…
//!   secret: {env: DINGTALK_SECRET}     # optional: the robot's 加签 secret (SEC…)
//!   at_mobiles: ["13800000000"]        # @-mentioned when a message asks for on-call
//!   at_all: false                      # @all instead (or as well)
//!   format: markdown                   # or text
//! ```
//!
//! What the robot API asks for (DingTalk open platform, "自定义机器人发送群消息"
//! and "自定义机器人安全设置"):
//!
//! - `POST` the webhook with a JSON body; `msgtype` is `text`
//!   (`text.content`), `markdown` (`markdown.title`, `markdown.text`) or
//!   `actionCard` (`title`, `text`, and independent buttons `btns: [{title,
//!   actionURL}]`). Messages with links (approve, reject, acknowledge)
//!   become actionCards with one button per link; with `format: text` they
//!   are plain URLs in the text.
//! - `at: {atMobiles, isAtAll}` mentions people; in markdown the `@mobile`
//!   must also appear in the text, so it is added to every message type.
//!   DingTalk documents `at` for text and markdown only: an actionCard
//!   shows the `@mobile` text but may not notify the person.
//! - With 加签 (signing), `timestamp` (ms since the epoch, within an hour of
//!   DingTalk's clock) and `sign` = urlencode(base64(HMAC-SHA256(key =
//!   secret, timestamp + "\n" + secret))) are appended to the URL. The
//!   timestamp is the injected clock's now.
//! - A body is at most 20,000 bytes: the title and body are cut (on
//!   character boundaries, with `…`) until the serialized JSON fits; links
//!   and mentions are kept.
//! - The answer is `{"errcode": 0, "errmsg": "ok"}`; 130101 means "sending
//!   too fast" (retried after a minute), 310000 a failed security check
//!   (signature, keyword or IP allow-list), 460101 a message too large.
//!
//! Rate limits (20 messages a minute per robot), retries and digests are the
//! delivery worker's job. The access token and the secret never appear in
//! an outcome or a log line.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::kit::{Channel, Class, Registration, SendContext, SendOutcome, Sending, post_json};
use super::robot::{Format, errcode, fit_json, read_format, read_list, read_webhook};
use crate::action::message::{Message, truncate_utf8};
use crate::config::Errors;
use crate::config::secret::{Secret, read_secret};
use crate::config::yaml::MapReader;
use crate::text::markdown;
use crate::text::redact::Redact;

/// Largest request body DingTalk accepts.
pub const MAX_BODY_BYTES: usize = 20_000;
/// The title shown in the chat list and notifications.
const MAX_TITLE_BYTES: usize = 256;

/// How long to wait after 130101 ("send too fast"): the robot's limit is
/// per minute.
const TOO_FAST_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct DingTalk {
    webhook: Secret,
    secret: Option<Secret>,
    at_mobiles: Vec<String>,
    at_all: bool,
    format: Format,
}

impl DingTalk {
    pub fn from_config(m: &mut MapReader<'_>, errs: &mut Errors) -> Option<DingTalk> {
        let before = errs.len();
        let webhook = read_webhook(m, "webhook", "DINGTALK_WEBHOOK", errs);
        let secret = read_secret(m, "secret", errs);
        let at_mobiles = read_list(m, "at_mobiles", errs);
        let at_all = m.bool("at_all", errs).unwrap_or(false);
        let format = read_format(m, errs);
        if errs.len() > before {
            return None;
        }
        Some(DingTalk {
            webhook: webhook?,
            secret,
            at_mobiles,
            at_all,
            format,
        })
    }

    async fn post(&self, ctx: &SendContext<'_>, msg: &Message) -> SendOutcome {
        let url = self.url(ctx.now.millis());
        let outcome = match post_json(ctx.http, &url, self.payload(msg)).await {
            // A refusal comes as an errcode in a 200.
            Ok(a) => a.by_body(answer),
            Err(o) => o,
        };
        outcome.redacted(&self.redact())
    }

    /// The webhook, signed when a secret is set.
    fn url(&self, timestamp_ms: i64) -> String {
        let base = self.webhook.expose();
        match &self.secret {
            None => base.to_owned(),
            Some(secret) => {
                let sep = if base.ends_with('?') || base.ends_with('&') {
                    ""
                } else if base.contains('?') {
                    "&"
                } else {
                    "?"
                };
                let sign = sign(timestamp_ms, secret.expose());
                format!("{base}{sep}timestamp={timestamp_ms}&sign={sign}")
            }
        }
    }

    /// The JSON body, at most [`MAX_BODY_BYTES`] (unless links and mentions
    /// alone are larger, which DingTalk then refuses).
    pub fn payload(&self, msg: &Message) -> String {
        let mention = msg.mention && (!self.at_mobiles.is_empty() || self.at_all);
        let mobiles: &[String] = if mention { &self.at_mobiles } else { &[] };
        let at = json!({
            "atMobiles": mobiles,
            "isAtAll": mention && self.at_all,
        });
        let at_text = mobiles
            .iter()
            .map(|m| format!("@{m}"))
            .collect::<Vec<_>>()
            .join(" ");
        let title = truncate_utf8(msg.title.lines().next().unwrap_or(""), MAX_TITLE_BYTES);
        match self.format {
            Format::Text => {
                let head = format!("{}\n{}", msg.title, msg.body);
                let mut tail = String::new();
                for l in &msg.links {
                    tail.push_str(&format!("\n{}: {}", l.label, l.url));
                }
                if !at_text.is_empty() {
                    tail.push('\n');
                    tail.push_str(&at_text);
                }
                fit_json(MAX_BODY_BYTES, &head, |head| {
                    json!({
                        "msgtype": "text",
                        "text": {"content": format!("{}{tail}", head.trim_end())},
                        "at": at,
                    })
                })
            }
            Format::Markdown => {
                let head = markdown_head(msg);
                let tail = if at_text.is_empty() {
                    String::new()
                } else {
                    format!("\n\n{at_text}")
                };
                if msg.links.is_empty() {
                    fit_json(MAX_BODY_BYTES, &head, |head| {
                        json!({
                            "msgtype": "markdown",
                            "markdown": {"title": title, "text": format!("{head}{tail}")},
                            "at": at,
                        })
                    })
                } else {
                    let btns: Vec<Value> = msg
                        .links
                        .iter()
                        .map(|l| json!({"title": l.label, "actionURL": l.url}))
                        .collect();
                    // Side by side when they fit (approve / reject /
                    // acknowledge), one under another when there are more.
                    let orientation = if btns.len() <= 3 { "1" } else { "0" };
                    fit_json(MAX_BODY_BYTES, &head, |head| {
                        json!({
                            "msgtype": "actionCard",
                            "actionCard": {
                                "title": title,
                                "text": format!("{head}{tail}"),
                                "btnOrientation": orientation,
                                "btns": btns,
                            },
                            "at": at,
                        })
                    })
                }
            }
        }
    }

    /// The webhook (its access token) and the signing secret.
    fn redact(&self) -> Redact {
        let r = Redact::new().url(self.webhook.expose());
        match &self.secret {
            Some(s) => r.secret(s.expose()),
            None => r,
        }
    }
}

/// `sign` for DingTalk's 加签: urlencode(base64(HMAC-SHA256(secret,
/// "{timestamp}\n{secret}"))), encoded exactly once.
pub fn sign(timestamp_ms: i64, secret: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(format!("{timestamp_ms}\n{secret}").as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    percent_encoding::utf8_percent_encode(&b64, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Title as a heading, then the body one line per paragraph (DingTalk's
/// markdown joins single line breaks).
fn markdown_head(msg: &Message) -> String {
    let mut s = format!("### {}", markdown(&msg.title));
    for line in msg.body.lines() {
        s.push_str("\n\n");
        s.push_str(&markdown(line));
    }
    s
}

/// Maps DingTalk's `{"errcode": …, "errmsg": …}` answer.
fn answer(text: &str) -> SendOutcome {
    let Some((code, errmsg)) = errcode(text) else {
        return SendOutcome::Reject(format!(
            "unexpected answer (no errcode): {}",
            truncate_utf8(text.trim(), 300)
        ));
    };
    match code {
        0 => SendOutcome::Sent(format!("errcode 0 ({errmsg})")),
        130101 => SendOutcome::Retry {
            after: Some(TOO_FAST_WAIT),
            reason: format!("errcode 130101: the robot is sending too fast ({errmsg})"),
        },
        310000 => SendOutcome::Reject(format!(
            "errcode 310000: the robot's security check failed ({errmsg}); check the robot's \
             security settings (安全设置): the 加签 secret must match `secret`, any custom \
             keyword must appear in the messages, the sender's IP must be in the allowed range"
        )),
        460101 => SendOutcome::Reject(format!(
            "errcode 460101: the message is too large for DingTalk ({errmsg})"
        )),
        other => SendOutcome::Reject(format!("errcode {other}: {errmsg}")),
    }
}

pub const CHANNEL: Registration = Registration {
    kind: "dingtalk",
    read: |m, errs| Some(Box::new(DingTalk::from_config(m, errs)?)),
};

impl Channel for DingTalk {
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

    fn robot(format: Format, secret: Option<&str>) -> DingTalk {
        DingTalk {
            webhook: Secret::new("https://oapi.dingtalk.com/robot/send?access_token=tok123456"),
            secret: secret.map(Secret::new),
            at_mobiles: vec!["13800000000".into()],
            at_all: false,
            format,
        }
    }

    fn msg(body: &str) -> Message {
        Message::note(
            Kind::Incident,
            Tier::High,
            Severity::Severe,
            Some("inc-1"),
            "[HIGH/severe] payments/i-pay-2: http_5xx_ratio 0.12 vs 0.05".into(),
            body.into(),
        )
    }

    #[test]
    fn signature_matches_a_known_vector() {
        // Python: quote_plus(b64encode(hmac.new(b"SECfoo2",
        // b"1795255200000\nSECfoo2", sha256).digest()))
        assert_eq!(
            sign(1_795_255_200_000, "SECfoo2"),
            "6AsTAvCqVHhTZBRglbvtVATt3%2Fi%2BBVO%2FoJQhaVwtIXU%3D"
        );
    }

    #[test]
    fn signed_url_appends_timestamp_and_sign() {
        let r = robot(Format::Markdown, Some("SECfoo2"));
        assert_eq!(
            r.url(1_795_255_200_000),
            "https://oapi.dingtalk.com/robot/send?access_token=tok123456\
             &timestamp=1795255200000&sign=6AsTAvCqVHhTZBRglbvtVATt3%2Fi%2BBVO%2FoJQhaVwtIXU%3D"
        );
        let r = robot(Format::Markdown, None);
        assert!(!r.url(1).contains("sign="));
    }

    #[test]
    fn mentions_appear_in_markdown_text_and_at() {
        let r = robot(Format::Markdown, None);
        let mut m = msg("line one\nline two");
        m.mention = true;
        let v: Value = serde_json::from_str(&r.payload(&m)).unwrap();
        assert_eq!(v["msgtype"], "markdown");
        assert!(
            v["markdown"]["text"]
                .as_str()
                .unwrap()
                .contains("@13800000000")
        );
        assert_eq!(v["at"]["atMobiles"][0], "13800000000");
        m.mention = false;
        let v: Value = serde_json::from_str(&r.payload(&m)).unwrap();
        assert!(!v["markdown"]["text"].as_str().unwrap().contains('@'));
        assert_eq!(v["at"]["atMobiles"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn links_make_an_action_card_or_plain_urls() {
        let mut m = msg("approve?");
        m.links = vec![
            Link {
                label: "Approve".into(),
                url: "https://r.example/a".into(),
            },
            Link {
                label: "Reject".into(),
                url: "https://r.example/r".into(),
            },
        ];
        let v: Value = serde_json::from_str(&robot(Format::Markdown, None).payload(&m)).unwrap();
        assert_eq!(v["msgtype"], "actionCard");
        assert_eq!(
            v["actionCard"]["btns"][1]["actionURL"],
            "https://r.example/r"
        );
        let v: Value = serde_json::from_str(&robot(Format::Text, None).payload(&m)).unwrap();
        assert_eq!(v["msgtype"], "text");
        assert!(
            v["text"]["content"]
                .as_str()
                .unwrap()
                .contains("Approve: https://r.example/a")
        );
    }

    #[test]
    fn huge_bodies_fit_with_escapes_and_multibyte_text() {
        for body in [
            "回滚".repeat(20_000),
            "\"\n\u{1}".repeat(10_000),
            "a".repeat(50_000),
        ] {
            for f in [Format::Markdown, Format::Text] {
                let mut m = msg(&body);
                m.mention = true;
                let p = robot(f, None).payload(&m);
                assert!(p.len() <= MAX_BODY_BYTES, "{}", p.len());
                assert!(p.len() > MAX_BODY_BYTES - 100, "{}", p.len());
                let v: Value = serde_json::from_str(&p).unwrap();
                let text = v
                    .get("markdown")
                    .map(|m| &m["text"])
                    .unwrap_or(&v["text"]["content"]);
                assert!(text.as_str().unwrap().ends_with("@13800000000"));
            }
        }
    }

    #[test]
    fn answers_map_to_outcomes() {
        assert_eq!(
            answer(r#"{"errcode":0,"errmsg":"ok"}"#),
            SendOutcome::Sent("errcode 0 (ok)".into())
        );
        assert!(matches!(
            answer(r#"{"errcode":130101,"errmsg":"send too fast"}"#),
            SendOutcome::Retry { after: Some(d), .. } if d == Duration::from_secs(60)
        ));
        assert!(
            matches!(answer(r#"{"errcode":310000,"errmsg":"sign not match"}"#),
            SendOutcome::Reject(r) if r.contains("security settings"))
        );
        assert!(matches!(
            answer(r#"{"errcode":460101,"errmsg":"too large"}"#),
            SendOutcome::Reject(_)
        ));
        assert!(matches!(answer("<html>"), SendOutcome::Reject(_)));
    }

    #[test]
    fn scrubbing_removes_token_and_secret() {
        let r = robot(Format::Markdown, Some("SECfoo2"));
        let o = SendOutcome::Reject(
            "bad https://oapi.dingtalk.com/robot/send?access_token=tok123456 tok123456 SECfoo2"
                .into(),
        )
        .redacted(&r.redact());
        let SendOutcome::Reject(s) = o else { panic!() };
        assert!(!s.contains("tok123456") && !s.contains("SECfoo2"), "{s}");
    }
}
