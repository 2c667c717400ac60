//! Voice calls to on-call phones: text-to-speech through Twilio, Aliyun
//! (Alibaba Cloud Voice Messaging Service) or a generic JSON webhook. The
//! settings and outcomes are the SMS channel's ([`super::sms`]); what
//! differs is what is said and how each provider places a call.
//!
//! ```yaml
//! oncall-call:
//!   type: voice
//!   provider: twilio
//!   to: ["+14155550100"]
//!   account_sid: AC0123456789abcdef0123456789abcdef
//!   auth_token: {env: TWILIO_AUTH_TOKEN}
//!   from: "+14155550199"
//!   # language: en-US                       # <Say language="…">
//!
//! oncall-call-cn:
//!   type: voice
//!   provider: aliyun
//!   to: ["+8613800000000"]
//!   access_key_id: LTAI5tExample
//!   access_key_secret: {env: ALIYUN_AK_SECRET}
//!   tts_code: TTS_123456789                  # a TTS template with ${content}
//!   # tts_param: '{"content": "{text}"}'     # the default
//!   # called_show_number: "0571000000"      # dedicated mode; omit for the shared pool
//!   # play_times: 2                          # 1 to 3
//!   # base_url: https://dyvmsapi.aliyuncs.com
//!
//! oncall-call-gateway:
//!   type: voice
//!   provider: webhook
//!   to: ["+8613800000000"]
//!   url: {env: CALL_GATEWAY_URL}
//! ```
//!
//! What is said: the title (without URLs or brackets), the incident and how
//! to acknowledge it ("acknowledge with: ripcord ack <incident>"). Nothing
//! can be pressed and no link can be followed on a call, so there is none.
//!
//! * Twilio: `POST {base}/2010-04-01/Accounts/{AccountSid}/Calls.json` with
//!   `To`, `From` and inline `Twiml` (`<Response><Say loop="2">…</Say>
//!   </Response>`, text XML-escaped, at most 4000 characters); 201 with the
//!   call's `sid`. Errors as for SMS.
//! * Aliyun: `GET https://dyvmsapi.aliyuncs.com/?Action=SingleCallByTts&
//!   Version=2017-05-25&CalledNumber=…&TtsCode=…&TtsParam=…` (optional
//!   `CalledShowNumber`, `PlayTimes`), signed like SMS; one called number
//!   per request, so one request per number. Numbers in mainland China are
//!   sent without +86, others without the +. Success is `Code: OK` with a
//!   `CallId`; `isv.BUSINESS_LIMIT_CONTROL` (per-number flow control: 1 a
//!   minute, 5 an hour, 20 a day) is worth retrying, after a minute at
//!   the soonest.
//!
//! A partial failure is retried for every number (see [`super::sms`]):
//! people already called are called again.

use std::time::Duration;

use super::kit::{Channel, Class, Registration, SendContext, SendOutcome, Sending};
use super::phone::{
    Aliyun, Fields, Hook, Provider, Twilio, each_number, json_template, read_common, render,
    required_str,
};
use crate::action::message::{Message, truncate_utf8};
use crate::config::Errors;
use crate::config::yaml::MapReader;

const ALIYUN_VOICE_URL: &str = "https://dyvmsapi.aliyuncs.com";
const DEFAULT_TTS_PARAM: &str = r#"{"content": "{text}"}"#;
/// The longest title said, in bytes.
const SPOKEN_TITLE_MAX: usize = 240;

#[derive(Debug)]
pub struct Voice {
    to: Vec<String>,
    via: VoiceVia,
}

#[derive(Debug)]
enum VoiceVia {
    Twilio {
        api: Twilio,
        language: Option<String>,
    },
    Aliyun {
        api: Aliyun,
        tts_code: String,
        tts_param: String,
        show_number: Option<String>,
        play_times: Option<i64>,
    },
    Webhook(Hook),
}

impl Voice {
    pub fn from_config(m: &mut MapReader<'_>, errs: &mut Errors) -> Option<Voice> {
        let (provider, to) = read_common(m, errs)?;
        let via = match provider {
            Provider::Twilio => {
                let api = Twilio::from_config(m, errs);
                let language = match m.str("language", errs) {
                    Some(l)
                        if !l.is_empty()
                            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
                    {
                        Some(Some(l.to_owned()))
                    }
                    Some(l) => {
                        let n = m.node_of("language").unwrap_or(m.node());
                        m.err(
                            errs,
                            n,
                            "language",
                            format!("`{l}` is not a language tag like en-US or zh-CN"),
                        );
                        None
                    }
                    None => Some(None),
                };
                Some(VoiceVia::Twilio {
                    api: api?,
                    language: language?,
                })
            }
            Provider::Aliyun => {
                let api = Aliyun::from_config(m, ALIYUN_VOICE_URL, errs);
                let tts_code = required_str(m, "tts_code", errs);
                let tts_param = json_template(m, "tts_param", DEFAULT_TTS_PARAM, true, errs);
                let show_number = m.str("called_show_number", errs).map(str::to_owned);
                let play_times = m.int("play_times", 1..=3, errs);
                Some(VoiceVia::Aliyun {
                    api: api?,
                    tts_code: tts_code?,
                    tts_param: tts_param?,
                    show_number,
                    play_times,
                })
            }
            Provider::Webhook => Hook::from_config(m, errs).map(VoiceVia::Webhook),
        };
        Some(Voice { to: to?, via: via? })
    }

    async fn post(&self, ctx: &SendContext<'_>, msg: &Message) -> SendOutcome {
        let text = spoken_text(msg);
        match &self.via {
            VoiceVia::Twilio { api, language } => {
                let twiml = twiml(&text, language.as_deref());
                each_number(
                    &self.to,
                    "called",
                    |n| api.request(ctx.http, "Calls", n, ("Twiml", &twiml)),
                    |r| api.interpret(r),
                )
                .await
            }
            VoiceVia::Aliyun {
                api,
                tts_code,
                tts_param,
                show_number,
                play_times,
            } => {
                let play_times = play_times.map(|p| p.to_string());
                let request = |to: &str| {
                    let param = render(tts_param, &Fields::of(msg, to, &text));
                    let called = aliyun_called_number(to);
                    let mut params = vec![
                        ("Action", "SingleCallByTts"),
                        ("CalledNumber", called),
                        ("TtsCode", tts_code.as_str()),
                        ("TtsParam", param.as_str()),
                    ];
                    if let Some(s) = show_number {
                        params.push(("CalledShowNumber", s.as_str()));
                    }
                    if let Some(p) = &play_times {
                        params.push(("PlayTimes", p.as_str()));
                    }
                    api.request(ctx.http, ctx.now, &params)
                };
                each_number(&self.to, "called", request, |r| {
                    Aliyun::interpret(r, "CallId")
                })
                .await
            }
            VoiceVia::Webhook(hook) => hook.send_each(ctx, "called", &self.to, msg, &text).await,
        }
    }
}

/// Mainland numbers without +86 (the form the voice API documents), others
/// without the +.
fn aliyun_called_number(e164: &str) -> &str {
    e164.strip_prefix("+86")
        .unwrap_or_else(|| e164.strip_prefix('+').unwrap_or(e164))
}

/// What is said: short, no URLs, no markup.
pub fn spoken_text(msg: &Message) -> String {
    let title = speakable(&msg.title);
    let title = truncate_utf8(&title, SPOKEN_TITLE_MAX);
    let title = title.trim_end_matches(['.', '。', ' ']);
    match &msg.incident {
        Some(id) => format!(
            "ripcord alert: {title}. Incident {id}. Nothing to press; acknowledge with: ripcord ack {id}."
        ),
        None => format!("ripcord: {title}."),
    }
}

/// Drops URLs, brackets and underscores (which speech engines spell out)
/// and control characters; collapses whitespace.
fn speakable(s: &str) -> String {
    s.split_whitespace()
        .filter(|w| !w.contains("://"))
        .map(|w| {
            w.chars()
                .map(|c| match c {
                    '[' | ']' | '{' | '}' | '<' | '>' | '_' | '|' => ' ',
                    c if c.is_control() => ' ',
                    c => c,
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// `<Response><Say …>text</Say></Response>` with the text XML-escaped.
pub fn twiml(text: &str, language: Option<&str>) -> String {
    let lang = language
        .map(|l| format!(" language=\"{}\"", xml_escape(l)))
        .unwrap_or_default();
    format!(
        "<Response><Say loop=\"2\"{lang}>{}</Say></Response>",
        xml_escape(text)
    )
}

/// Escapes the five XML specials; characters XML 1.0 forbids become spaces.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

pub const CHANNEL: Registration = Registration {
    kind: "voice",
    read: |m, errs| Some(Box::new(Voice::from_config(m, errs)?)),
};

impl Channel for Voice {
    fn class(&self) -> Class {
        Class::Call
    }

    /// A call takes a minute; five a minute is already a storm.
    fn default_rate(&self) -> (u32, Duration) {
        (5, Duration::from_secs(60))
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

    fn msg(title: &str, incident: Option<&str>) -> Message {
        let mut m = Message::note(
            Kind::Page,
            Tier::High,
            Severity::Severe,
            incident,
            title.into(),
            "see https://grafana.example/d/1".into(),
        );
        m.links = vec![Link {
            label: "ack".into(),
            url: "https://r.example/ack?t=secret".into(),
        }];
        m
    }

    #[test]
    fn spoken_text_is_short_and_has_no_urls() {
        let m = msg(
            "[HIGH/severe] payments/i-pay-2: http_5xx_ratio 0.12 vs 0.05 https://x.example/y",
            Some("inc-0123456789ab"),
        );
        let t = spoken_text(&m);
        assert_eq!(
            t,
            "ripcord alert: HIGH/severe payments/i-pay-2: http 5xx ratio 0.12 vs 0.05. Incident inc-0123456789ab. Nothing to press; acknowledge with: ripcord ack inc-0123456789ab."
        );
        assert!(!t.contains("://"));
        let long = spoken_text(&msg(&"回滚".repeat(300), Some("inc-1")));
        assert!(long.len() < 400, "{}", long.len());
        assert_eq!(spoken_text(&msg("支付 回滚", None)), "ripcord: 支付 回滚.");
    }

    #[test]
    fn twiml_escapes_text() {
        let x = twiml("a <b> & \"c\" 'd' 回滚\u{1}", Some("zh-CN"));
        assert_eq!(
            x,
            "<Response><Say loop=\"2\" language=\"zh-CN\">a &lt;b&gt; &amp; &quot;c&quot; &apos;d&apos; 回滚 </Say></Response>"
        );
    }

    #[test]
    fn aliyun_numbers() {
        assert_eq!(aliyun_called_number("+8613800000000"), "13800000000");
        assert_eq!(aliyun_called_number("+85212345678"), "85212345678");
    }
}
