//! Channels: where messages go. One file per kind, one variant per kind in
//! [`Channel`]; adding a channel is a new file, a variant and its arms in
//! the three `match`es below.
//!
//! A channel only formats and sends one message and reports what the
//! provider answered. Rate limits, retries, digests, timeouts and fallbacks
//! are the delivery worker's job ([`crate::action::deliver`]), the same for
//! every channel.

pub mod dingtalk;
pub mod email;
pub mod log;
pub mod slack;
pub mod sms;
pub mod voice;
pub mod webhook;
pub mod wecom;

use std::time::Duration;

use super::deliver::ChannelSpec;
use super::message::Message;
use crate::config::Errors;
use crate::config::yaml::MapReader;
use crate::time::{Dur, Ts};

/// What a send needs besides the message.
pub struct SendContext<'a> {
    pub http: &'a reqwest::Client,
    /// The injected clock's now (signatures carry timestamps).
    pub now: Ts,
}

/// What the provider answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The provider accepted the message; the detail says how (e.g. its
    /// message id, `errcode 0`).
    Sent(String),
    /// Worth trying again: 5xx, timeouts, 429 and "too fast" error codes.
    /// `after` is the provider's own hint (Retry-After), if any.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// The provider refused it for good (other 4xx, bad signature, …):
    /// retrying will not help; the tier's fallback channel gets it.
    Reject(String),
}

impl SendOutcome {
    /// Maps an HTTP status with no more specific meaning.
    pub fn from_status(
        status: reqwest::StatusCode,
        retry_after: Option<Duration>,
        body: &str,
    ) -> SendOutcome {
        let body = crate::action::message::truncate_utf8(body.trim(), 300);
        if status.is_success() {
            SendOutcome::Sent(format!("HTTP {}", status.as_u16()))
        } else if status.as_u16() == 429 || status.is_server_error() || status.as_u16() == 408 {
            SendOutcome::Retry {
                after: retry_after,
                reason: format!("HTTP {}: {body}", status.as_u16()),
            }
        } else {
            SendOutcome::Reject(format!("HTTP {}: {body}", status.as_u16()))
        }
    }

    /// Maps a transport error (connect refused, reset, timeout).
    pub fn from_transport(e: &reqwest::Error) -> SendOutcome {
        SendOutcome::Retry {
            after: None,
            reason: format!("transport error: {}", without_url(e)),
        }
    }
}

/// reqwest errors print the URL, which for chat robots carries the access
/// token: strip it.
pub fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(url.as_str(), "<url>");
    }
    s
}

/// `Retry-After` in seconds (the HTTP-date form is rare for these APIs).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Reads one entry of the `channels:` section: the common settings
/// (`type`, `rate` like `20/min`, `timeout`, `retries`) and the channel's
/// own.
pub fn read_channel(name: &str, mut m: MapReader<'_>, errs: &mut Errors) -> Option<ChannelSpec> {
    let kind = m.str("type", errs).map(str::to_owned);
    if kind.is_none() && !m.has("type") {
        m.err(
            errs,
            m.node(),
            "type",
            format!("is required ({})", Channel::TYPES),
        );
    }
    let rate = m.str("rate", errs).and_then(|r| match parse_rate(r) {
        Ok(r) => Some(r),
        Err(e) => {
            let n = m.node_of("rate").unwrap_or(m.node());
            m.err(errs, n, "rate", e);
            None
        }
    });
    let timeout = m
        .dur("timeout", Dur::from_secs(1)..=Dur::from_mins(10), errs)
        .unwrap_or(Dur::from_secs(10));
    let retries = m.int("retries", 0..=20, errs).unwrap_or(5) as u32;
    let kind = kind?;
    let channel = match Channel::from_config(&kind, &mut m, errs) {
        Some(c) => c,
        None => {
            if !Channel::TYPES.split(", ").any(|t| t == kind) {
                let n = m.node_of("type").unwrap_or(m.node());
                m.err(
                    errs,
                    n,
                    "type",
                    format!("unknown channel type `{kind}`; expected {}", Channel::TYPES),
                );
            }
            m.finish(errs);
            return None;
        }
    };
    m.finish(errs);
    let rate = rate.unwrap_or_else(|| channel.default_rate());
    Some(ChannelSpec {
        name: name.to_owned(),
        channel,
        rate,
        timeout: timeout.to_std(),
        retries,
    })
}

/// `20/min`, `1/s`, `100/h`: messages per period.
/// The `{name}` placeholders of a template that name none of `known`,
/// with a did-you-mean: a typo (`{titel}`) would otherwise be sent as
/// written. JSON's own braces (`{"a": 1}`) are not placeholders.
pub fn unknown_placeholders(template: &str, known: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        rest = after;
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        if crate::decode::is_label_name(name) && !known.contains(&name) {
            let hint = crate::config::yaml::did_you_mean(name, known.iter().copied())
                .map(|s| format!("did you mean `{{{s}}}`?"))
                .unwrap_or_else(|| {
                    let all: Vec<String> = known.iter().map(|k| format!("{{{k}}}")).collect();
                    format!("known: {}", all.join(", "))
                });
            out.push(format!("unknown placeholder `{{{name}}}`: {hint}"));
        }
    }
    out
}

pub fn parse_rate(s: &str) -> Result<(u32, Duration), String> {
    let (n, per) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}` is not a rate like 20/min or 1/s"))?;
    let n: u32 = n
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{s}`: the count must be a positive whole number"))?;
    let per = match per.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        other => return Err(format!("`{s}`: unknown period `{other}` (s, min, h)")),
    };
    Ok((n, per))
}

/// A channel from a YAML mapping (tests, examples): `type: …` and settings.
pub fn channel_from_yaml(name: &str, yaml: &str) -> Result<ChannelSpec, Errors> {
    let path = std::path::Path::new("channel.yaml");
    let mut errs = Errors::default();
    let node = crate::config::yaml::parse(path, yaml).map_err(|e| Errors(vec![e]))?;
    let spec = MapReader::new(path, &node, format!("channel `{name}`"), &mut errs)
        .and_then(|m| read_channel(name, m, &mut errs));
    match spec {
        Some(s) if errs.is_empty() => Ok(s),
        _ => Err(errs),
    }
}

#[derive(Debug)]
pub enum Channel {
    DingTalk(dingtalk::DingTalk),
    WeCom(wecom::WeCom),
    Slack(slack::Slack),
    Email(email::Email),
    Sms(sms::Sms),
    Voice(voice::Voice),
    Webhook(webhook::Webhook),
    Log(log::Log),
}

impl Channel {
    /// The `type:` names, for config errors.
    pub const TYPES: &'static str = "dingtalk, wecom, slack, email, sms, voice, webhook, log";

    /// Reads a channel's own settings (everything but the common `type`,
    /// `rate`, `timeout` and `retries`, which the caller has taken).
    pub fn from_config(kind: &str, m: &mut MapReader<'_>, errs: &mut Errors) -> Option<Channel> {
        Some(match kind {
            "dingtalk" => Channel::DingTalk(dingtalk::DingTalk::from_config(m, errs)?),
            "wecom" => Channel::WeCom(wecom::WeCom::from_config(m, errs)?),
            "slack" => Channel::Slack(slack::Slack::from_config(m, errs)?),
            "email" => Channel::Email(email::Email::from_config(m, errs)?),
            "sms" => Channel::Sms(sms::Sms::from_config(m, errs)?),
            "voice" => Channel::Voice(voice::Voice::from_config(m, errs)?),
            "webhook" => Channel::Webhook(webhook::Webhook::from_config(m, errs)?),
            "log" => Channel::Log(log::Log::from_config(m, errs)?),
            _ => return None,
        })
    }

    /// Whether the channel rings someone's phone (SMS, a call): a drill
    /// leaves those alone unless asked.
    pub fn rings_a_phone(&self) -> bool {
        matches!(self, Channel::Sms(_) | Channel::Voice(_))
    }

    /// The provider's documented rate: (messages, per period).
    pub fn default_rate(&self) -> (u32, Duration) {
        match self {
            Channel::DingTalk(_) | Channel::WeCom(_) => (20, Duration::from_secs(60)),
            Channel::Slack(_) => (1, Duration::from_secs(1)),
            Channel::Email(_) => (30, Duration::from_secs(60)),
            Channel::Sms(_) => (10, Duration::from_secs(60)),
            Channel::Voice(_) => (5, Duration::from_secs(60)),
            Channel::Webhook(_) => (10, Duration::from_secs(1)),
            Channel::Log(_) => (100, Duration::from_secs(1)),
        }
    }

    pub async fn send(&self, ctx: &SendContext<'_>, msg: &Message) -> SendOutcome {
        match self {
            Channel::DingTalk(c) => c.send(ctx, msg).await,
            Channel::WeCom(c) => c.send(ctx, msg).await,
            Channel::Slack(c) => c.send(ctx, msg).await,
            Channel::Email(c) => c.send(ctx, msg).await,
            Channel::Sms(c) => c.send(ctx, msg).await,
            Channel::Voice(c) => c.send(ctx, msg).await,
            Channel::Webhook(c) => c.send(ctx, msg).await,
            Channel::Log(c) => c.send(ctx, msg).await,
        }
    }
}
