//! SMS to on-call phones through an HTTP provider: Twilio, Aliyun (Alibaba
//! Cloud SMS) or any HTTP endpoint (a generic JSON webhook).
//!
//! ```yaml
//! oncall-sms:
//!   type: sms
//!   provider: twilio
//!   to: ["+8613800000000", "+14155550100"]   # E.164: + and 7 to 15 digits
//!   account_sid: AC0123456789abcdef0123456789abcdef
//!   auth_token: {env: TWILIO_AUTH_TOKEN}      # a secret
//!   from: "+14155550199"
//!   # base_url: https://api.twilio.com       # the default
//!
//! oncall-sms-cn:
//!   type: sms
//!   provider: aliyun
//!   to: ["+8613800000000"]
//!   access_key_id: LTAI5tExample
//!   access_key_secret: {env: ALIYUN_AK_SECRET} # a secret
//!   sign_name: 回滚告警
//!   template_code: SMS_123456789               # a template with ${content}
//!   # template_param: '{"content": "{text}"}'  # the default
//!   # base_url: https://dysmsapi.aliyuncs.com  # the default
//!
//! oncall-sms-gateway:
//!   type: sms
//!   provider: webhook
//!   to: ["+8613800000000"]
//!   url: {env: SMS_GATEWAY_URL}                # a secret
//!   headers: {X-Api-Key: {env: SMS_GATEWAY_KEY}}
//!   # body: '{"to": "{to}", "text": "{text}", "title": "{title}", "severity": "{severity}", "incident": "{incident}"}'
//! ```
//!
//! The text is short: the title, the incident id and the first link (an
//! acknowledge/approve link when there is one), at most [`SMS_MAX_BYTES`]
//! bytes cut on a character boundary (Twilio concatenates segments; this
//! keeps the bill and the screen bounded). The link is kept whole: the
//! title is shortened first.
//!
//! Placeholders in `body` (webhook), `template_param` (Aliyun SMS) and
//! `tts_param` (Aliyun voice) are JSON-escaped, so they belong inside string
//! quotes: `{to}`, `{text}` (the SMS text, or the spoken text for voice),
//! `{title}`, `{severity}`, `{tier}`, `{incident}`, `{link}`. Aliyun limits
//! the length of template variables: with a strict template use `{title}`
//! or `{incident}` rather than `{text}`.
//!
//! # Outcomes
//!
//! The message is `Sent` only if every recipient's request succeeded
//! ("sent to 2 numbers: +86… (SM…), +1… (SM…)"). Otherwise the outcome
//! names who got it and who did not and why, and is `Retry` if any failure
//! may pass (5xx, 429, throttling codes, transport errors) or `Reject` if
//! all are final (bad number, bad credentials). A retry sends to every
//! number again: a duplicate page is better than a missed one. Outcome
//! strings never carry tokens, secrets, auth headers or secret URLs.
//!
//! # Provider facts relied on
//!
//! * Twilio: `POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`
//!   (form-encoded `To`, `From`, `Body`; HTTP Basic auth AccountSid:AuthToken),
//!   201 with the JSON resource (`sid`) on success; errors are JSON
//!   `{code, message, more_info, status}`, e.g. 400/21211 invalid `To`,
//!   401/20003 authentication, 429/20429 too many requests (never processed,
//!   safe to retry).
//! * Aliyun: RPC style `GET https://dysmsapi.aliyuncs.com/?…` with
//!   `Action=SendSms`, `Version=2017-05-25`, `PhoneNumbers` (comma
//!   separated, up to 1000), `SignName`, `TemplateCode`, `TemplateParam`
//!   (JSON) and the common parameters; signature version 1.0:
//!   `Base64(HMAC-SHA1(secret + "&", "GET&%2F&" + pct(canonical query)))`
//!   where the canonical query is the parameters sorted by name, each name
//!   and value percent-encoded as RFC 3986 (unreserved `A-Z a-z 0-9 - _ .
//!   ~` kept, space as `%20`, `*` as `%2A`). Answer JSON `Code`: `OK` on
//!   success (with `BizId`); `isv.BUSINESS_LIMIT_CONTROL` (flow control,
//!   counted per number and minute, hour, day: retried after a minute at
//!   the soonest), `Throttling*`, `isp.SYSTEM_ERROR`, `ServiceUnavailable`,
//!   `InternalError` and 5xx are worth retrying; any other code
//!   (`isv.MOBILE_NUMBER_ILLEGAL`, `IncompleteSignature`,
//!   `isv.AMOUNT_NOT_ENOUGH`, …) is final.

use std::fmt::Write as _;
use std::time::Duration;

use super::kit::{Channel, Class, Registration, SendContext, SendOutcome, Sending};
use super::phone::aliyun::{ALIYUN_SMS_URL, DEFAULT_ALIYUN_PARAM};
use super::phone::{
    Aliyun, Fields, Hook, Provider, Twilio, each_number, exchange_all, json_template, pick_link,
    read_common, render, required_str, summarize, transport,
};
use crate::action::message::{Message, truncate_utf8};
use crate::config::Errors;
use crate::config::yaml::MapReader;

/// The longest SMS text, in bytes.
pub const SMS_MAX_BYTES: usize = 600;

#[derive(Debug)]
pub struct Sms {
    to: Vec<String>,
    via: SmsVia,
}

#[derive(Debug)]
enum SmsVia {
    Twilio(Twilio),
    Aliyun {
        api: Aliyun,
        sign_name: String,
        template_code: String,
        template_param: String,
    },
    Webhook(Hook),
}

impl Sms {
    pub fn from_config(m: &mut MapReader<'_>, errs: &mut Errors) -> Option<Sms> {
        let (provider, to) = read_common(m, errs)?;
        let via = match provider {
            Provider::Twilio => Twilio::from_config(m, errs).map(SmsVia::Twilio),
            Provider::Aliyun => {
                let api = Aliyun::from_config(m, ALIYUN_SMS_URL, errs);
                let sign_name = required_str(m, "sign_name", errs);
                let template_code = required_str(m, "template_code", errs);
                let template_param =
                    json_template(m, "template_param", DEFAULT_ALIYUN_PARAM, true, errs);
                Some(SmsVia::Aliyun {
                    api: api?,
                    sign_name: sign_name?,
                    template_code: template_code?,
                    template_param: template_param?,
                })
            }
            Provider::Webhook => Hook::from_config(m, errs).map(SmsVia::Webhook),
        };
        Some(Sms { to: to?, via: via? })
    }

    async fn post(&self, ctx: &SendContext<'_>, msg: &Message) -> SendOutcome {
        let text = sms_text(msg);
        match &self.via {
            SmsVia::Twilio(api) => {
                each_number(
                    &self.to,
                    "sent to",
                    |n| api.request(ctx.http, "Messages", n, ("Body", &text)),
                    |r| api.interpret(r),
                )
                .await
            }
            SmsVia::Aliyun {
                api,
                sign_name,
                template_code,
                template_param,
            } => {
                let numbers: Vec<String> = self.to.iter().map(|n| n[1..].to_owned()).collect();
                let joined = self.to.join(",");
                let param = render(template_param, &Fields::of(msg, &joined, &text));
                let req = api.request(
                    ctx.http,
                    ctx.now,
                    &[
                        ("Action", "SendSms"),
                        ("PhoneNumbers", &numbers.join(",")),
                        ("SignName", sign_name),
                        ("TemplateCode", template_code),
                        ("TemplateParam", &param),
                    ],
                );
                let reply = exchange_all(vec![req]).await.pop();
                let attempt = match reply {
                    Some(Ok(r)) => Aliyun::interpret(&r, "BizId"),
                    Some(Err(e)) => e,
                    None => transport("no answer".into()),
                };
                summarize("sent to", vec![(self.to.clone(), attempt)])
            }
            SmsVia::Webhook(hook) => hook.send_each(ctx, "sent to", &self.to, msg, &text).await,
        }
    }
}

/// Title, incident id and one link, within [`SMS_MAX_BYTES`]; the title is
/// shortened first so the link stays usable.
pub fn sms_text(msg: &Message) -> String {
    let mut tail = String::new();
    if let Some(id) = &msg.incident {
        let _ = write!(tail, "\nincident {id}");
    }
    if let Some(l) = pick_link(msg) {
        let _ = write!(tail, "\n{}: {}", l.label, l.url);
    }
    let title = msg.title.trim();
    if tail.len() + 16 <= SMS_MAX_BYTES {
        let title = truncate_utf8(title, SMS_MAX_BYTES - tail.len());
        format!("{title}{tail}")
    } else {
        truncate_utf8(&format!("{title}{tail}"), SMS_MAX_BYTES)
    }
}

pub const CHANNEL: Registration = Registration {
    kind: "sms",
    read: |m, errs| Some(Box::new(Sms::from_config(m, errs)?)),
};

impl Channel for Sms {
    fn class(&self) -> Class {
        Class::Text
    }

    /// SMS providers throttle per number; ten a minute stays clear.
    fn default_rate(&self) -> (u32, Duration) {
        (10, Duration::from_secs(60))
    }

    fn send<'a>(&'a self, ctx: &'a SendContext<'a>, msg: &'a Message) -> Sending<'a> {
        Box::pin(self.post(ctx, msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::channel::phone::aliyun::*;
    use crate::action::channel::phone::*;
    use crate::action::message::Link;
    use crate::decision::{Severity, Tier};
    use crate::text::percent_encode;
    use crate::time::Ts;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn aliyun_signature_matches_the_sms_documentation_example() {
        // The worked example of Aliyun's SMS signature documentation
        // (AccessKeyId testId, secret testSecret).
        let p = pairs(&[
            ("AccessKeyId", "testId"),
            ("Action", "SendSms"),
            ("Format", "XML"),
            ("OutId", "123"),
            ("PhoneNumbers", "15300000001"),
            ("RegionId", "cn-hangzhou"),
            ("SignName", "阿里云短信测试专用"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "45e25e9b-0a6f-4070-8c85-2956eda1b466"),
            ("SignatureVersion", "1.0"),
            ("TemplateCode", "SMS_71390007"),
            ("TemplateParam", r#"{"customer":"test"}"#),
            ("Timestamp", "2017-07-12T02:42:19Z"),
            ("Version", "2017-05-25"),
        ]);
        let canonical = canonical_query(&p);
        assert!(canonical.starts_with(
            "AccessKeyId=testId&Action=SendSms&Format=XML&OutId=123&PhoneNumbers=15300000001&RegionId=cn-hangzhou&SignName=%E9%98%BF%E9%87%8C%E4%BA%91"
        ));
        assert!(canonical.contains(
            "TemplateParam=%7B%22customer%22%3A%22test%22%7D&Timestamp=2017-07-12T02%3A42%3A19Z"
        ));
        assert_eq!(
            rpc_signature(&canonical, "testSecret"),
            "zJDF+Lrzhj/ThnlvIToysFRq6t4="
        );
    }

    #[test]
    fn aliyun_signature_matches_the_rpc_documentation_example() {
        // The DescribeRegions example of the generic RPC signature page.
        let p = pairs(&[
            ("Format", "XML"),
            ("AccessKeyId", "testid"),
            ("Action", "DescribeRegions"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("SignatureVersion", "1.0"),
            ("Version", "2014-05-26"),
            ("Timestamp", "2016-02-23T12:46:24Z"),
        ]);
        assert_eq!(
            rpc_signature(&canonical_query(&p), "testsecret"),
            "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
        );
    }

    #[test]
    fn percent_encoding_follows_rfc3986() {
        assert_eq!(percent_encode("a b*c~d-e_f.g"), "a%20b%2Ac~d-e_f.g");
        assert_eq!(percent_encode("/=&+,"), "%2F%3D%26%2B%2C");
        assert_eq!(percent_encode("回"), "%E5%9B%9E");
    }

    #[test]
    fn timestamps_and_nonces() {
        let now = Ts::parse_rfc3339("2026-11-21T10:00:00.789Z").unwrap();
        assert_eq!(aliyun_timestamp(now), "2026-11-21T10:00:00Z");
        let p = pairs(&[("Action", "SendSms")]);
        let a = nonce(now, 0, &p);
        assert_eq!(a, nonce(now, 0, &p), "reproducible");
        assert_ne!(a, nonce(now, 1, &p), "differs per request");
        assert_ne!(a, nonce(Ts(now.0 + 1), 0, &p));
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }

    #[test]
    fn e164() {
        for ok in [
            "+8613800000000",
            "+14155550100",
            "+1234567",
            "+123456789012345",
        ] {
            assert!(is_e164(ok), "{ok}");
        }
        for bad in [
            "8613800000000",
            "+0861380000000",
            "+86 13800000000",
            "+123456",
            "+1234567890123456",
            "+86-138",
            "",
            "+",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }

    fn msg(title: &str, links: Vec<Link>) -> Message {
        let mut m = Message::note(
            crate::action::message::Kind::Page,
            Tier::High,
            Severity::Severe,
            Some("inc-0123456789ab"),
            title.into(),
            "body".into(),
        );
        m.links = links;
        m
    }

    fn link(label: &str, url: &str) -> Link {
        Link {
            label: label.into(),
            url: url.into(),
        }
    }

    #[test]
    fn sms_text_keeps_the_link_whole() {
        let links = vec![
            link("open", "https://r.example/i/1"),
            link("acknowledge", "https://r.example/ack/1?t=abc"),
        ];
        let m = msg("[HIGH/severe] payments: 回滚", links.clone());
        assert_eq!(
            sms_text(&m),
            "[HIGH/severe] payments: 回滚\nincident inc-0123456789ab\nacknowledge: https://r.example/ack/1?t=abc"
        );
        let long = msg(&"回滚".repeat(200), links);
        let t = sms_text(&long);
        assert!(t.len() <= SMS_MAX_BYTES);
        assert!(t.ends_with("acknowledge: https://r.example/ack/1?t=abc"));
        assert!(t.contains("…\nincident inc-0123456789ab"));
        let huge_link = msg("t", vec![link("ack", &"x".repeat(1000))]);
        assert!(sms_text(&huge_link).len() <= SMS_MAX_BYTES);
    }

    #[test]
    fn placeholders_are_json_escaped() {
        let m = msg(
            "a \"quoted\" 标题",
            vec![link("ack", "https://r.example/a?x=1&y=2")],
        );
        let out = render(
            r#"{"to": "{to}", "t": "{title}", "x": "{text}", "l": "{link}", "keep": "{nope}", "s": "{severity}/{tier}/{incident}"}"#,
            &Fields::of(&m, "+8613800000000", "line\n\"two\""),
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["to"], "+8613800000000");
        assert_eq!(v["t"], "a \"quoted\" 标题");
        assert_eq!(v["x"], "line\n\"two\"");
        assert_eq!(v["l"], "https://r.example/a?x=1&y=2");
        assert_eq!(v["keep"], "{nope}");
        assert_eq!(v["s"], "severe/high/inc-0123456789ab");
    }

    #[test]
    fn summaries() {
        let ok = summarize(
            "sent to",
            vec![
                (vec!["+1".into()], Attempt::Ok("SM1".into())),
                (vec!["+2".into()], Attempt::Ok("SM2".into())),
            ],
        );
        assert_eq!(
            ok,
            SendOutcome::Sent("sent to 2 numbers: +1 (SM1), +2 (SM2)".into())
        );
        let partial = summarize(
            "sent to",
            vec![
                (vec!["+1".into()], Attempt::Ok("SM1".into())),
                (
                    vec!["+2".into()],
                    Attempt::Retry {
                        after: Some(Duration::from_secs(3)),
                        reason: "HTTP 500".into(),
                    },
                ),
                (vec!["+3".into()], Attempt::Reject("HTTP 400".into())),
            ],
        );
        assert_eq!(
            partial,
            SendOutcome::Retry {
                after: Some(Duration::from_secs(3)),
                reason: "sent to 1 of 3 numbers: +1 (SM1); failed: +2: HTTP 500; +3: HTTP 400"
                    .into()
            }
        );
        let rejected = summarize(
            "called",
            vec![(
                vec!["+1".into(), "+2".into()],
                Attempt::Reject("bad".into()),
            )],
        );
        assert_eq!(
            rejected,
            SendOutcome::Reject("failed for all 2 numbers: +1, +2: bad".into())
        );
    }
}
