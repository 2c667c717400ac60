//! What every channel is made of: the [`Channel`] contract a channel file
//! implements, its [`Registration`] (its `type:` name and how it reads its
//! settings), and what channels share for sending: the context, the
//! outcome, building and sending HTTP requests ([`post`], [`post_form`],
//! [`post_json`], [`exchange`]), HTTP status and transport mapping, and
//! template checks.
//!
//! A channel only formats and sends one message and reports what the
//! provider answered. Rate limits, retries, digests, timeouts and fallbacks
//! are the delivery worker's job ([`crate::action::deliver`]), the same for
//! every channel; routing reads only a channel's [`Class`].

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::action::message::Message;
use crate::config::Errors;
use crate::config::yaml::MapReader;
use crate::text::percent_encode;
use crate::text::redact::Redact;
use crate::time::Ts;

/// What a channel is for, as routing and escalation see it: unconfigured
/// routing notifies every `Chat` and `Email` channel; unconfigured
/// escalation goes to `Chat` at once, `Text` after 5 min, `Call` after 10;
/// a drill sends `Text` and `Call` to the log unless asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A group chat or a chat-like webhook: people read it together.
    Chat,
    Email,
    /// A text message to a phone (SMS).
    Text,
    /// A phone call.
    Call,
    /// Only ripcord's own output (the log channel): never routed by default.
    Record,
}

impl Class {
    /// Whether it rings someone's phone.
    pub fn rings_a_phone(self) -> bool {
        matches!(self, Class::Text | Class::Call)
    }
}

/// A send in flight: what [`Channel::send`] returns.
pub type Sending<'a> = Pin<Box<dyn Future<Output = SendOutcome> + Send + 'a>>;

/// One kind of channel (DingTalk, Slack, email, ...). A channel declares
/// its own traits; nothing elsewhere keeps a list of kinds but the
/// registration line in [`crate::action::channel`].
pub trait Channel: Send + Sync + std::fmt::Debug {
    /// How routing and escalation treat it.
    fn class(&self) -> Class;
    /// The provider's documented rate: (messages, per period). A
    /// channel's `rate:` setting overrides it.
    fn default_rate(&self) -> (u32, Duration);
    /// Formats and sends one message.
    fn send<'a>(&'a self, ctx: &'a SendContext<'a>, msg: &'a Message) -> Sending<'a>;
}

/// How a channel kind is known by its `type:` name and read from YAML.
pub struct Registration {
    pub kind: &'static str,
    /// Reads the channel's own settings (everything but the common
    /// `type`, `rate`, `timeout` and `retries`); errors go to `errs`.
    pub read: fn(&mut MapReader<'_>, &mut Errors) -> Option<Box<dyn Channel>>,
}

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

    /// The outcome with every secret of `r` taken out of its text
    /// (provider errors may echo the URL, its token or a header).
    pub fn redacted(self, r: &Redact) -> SendOutcome {
        match self {
            SendOutcome::Sent(s) => SendOutcome::Sent(r.apply(&s)),
            SendOutcome::Retry { after, reason } => SendOutcome::Retry {
                after,
                reason: r.apply(&reason),
            },
            SendOutcome::Reject(s) => SendOutcome::Reject(r.apply(&s)),
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

/// The `{name}` placeholders of a template that name none of `known`,
/// with a did-you-mean: a typo (`{titel}`) would otherwise be sent as
/// written. JSON's own braces (`{"a": 1}`) are not placeholders.
pub fn unknown_placeholders(template: &str, known: &[&str]) -> Vec<String> {
    crate::text::template::placeholders(template)
        .into_iter()
        .filter(|name| !known.contains(name))
        .map(|name| {
            let hint = crate::config::yaml::did_you_mean(name, known.iter().copied())
                .map(|s| format!("did you mean `{{{s}}}`?"))
                .unwrap_or_else(|| {
                    let all: Vec<String> = known.iter().map(|k| format!("{{{k}}}")).collect();
                    format!("known: {}", all.join(", "))
                });
            format!("unknown placeholder `{{{name}}}`: {hint}")
        })
        .collect()
}

/// A provider's answer to a request.
pub struct Answer {
    pub status: reqwest::StatusCode,
    /// Its `Retry-After`, if any.
    pub retry_after: Option<Duration>,
    pub text: String,
}

impl Answer {
    /// The outcome by HTTP status alone (for providers whose 2xx means sent).
    pub fn by_status(&self) -> SendOutcome {
        SendOutcome::from_status(self.status, self.retry_after, &self.text)
    }

    /// On 2xx, the outcome `read` finds in the body; otherwise by status.
    /// For providers that refuse inside a 200 (chat robots' `errcode`,
    /// Feishu's `code`) or whose 2xx body is worth reporting (Slack's `ok`).
    pub fn by_body(&self, read: impl FnOnce(&str) -> SendOutcome) -> SendOutcome {
        if self.status.is_success() {
            read(&self.text)
        } else {
            self.by_status()
        }
    }
}

/// JSON as the chat robots (DingTalk, WeCom, Feishu) and Teams are sent it.
pub const JSON_UTF8: &str = "application/json; charset=utf-8";
/// JSON as Slack and the generic webhooks are sent it.
pub const JSON: &str = "application/json";
/// Form fields (Twilio).
pub const FORM: &str = "application/x-www-form-urlencoded";

/// A POST of `body` as `content_type`. Channels build their requests here,
/// add what is their own (auth, configured headers) and send them with
/// [`exchange`], so no channel writes its own request and answer handling.
pub fn post(
    http: &reqwest::Client,
    url: &str,
    content_type: &'static str,
    body: String,
) -> reqwest::RequestBuilder {
    http.post(url)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body)
}

/// A POST of form fields, names and values percent-encoded as RFC 3986
/// (which is also valid `application/x-www-form-urlencoded`).
pub fn post_form(
    http: &reqwest::Client,
    url: &str,
    fields: &[(&str, &str)],
) -> reqwest::RequestBuilder {
    post(http, url, FORM, form_encode(fields))
}

/// `name=value&…`, each percent-encoded.
fn form_encode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Sends a request and reads the answer: status, `Retry-After` and body
/// text (empty if it cannot be read). A transport error (refused, reset,
/// timed out) is already the outcome, a retry, without the URL, which for
/// most channels is or carries the credential.
pub async fn exchange(req: reqwest::RequestBuilder) -> Result<Answer, SendOutcome> {
    let resp = req
        .send()
        .await
        .map_err(|e| SendOutcome::from_transport(&e))?;
    let status = resp.status();
    let retry_after = retry_after(resp.headers());
    let text = resp.text().await.unwrap_or_default();
    Ok(Answer {
        status,
        retry_after,
        text,
    })
}

/// POSTs a serialized JSON body ([`JSON_UTF8`]) and reads the answer, as
/// [`exchange`] does.
pub async fn post_json(
    http: &reqwest::Client,
    url: &str,
    body: String,
) -> Result<Answer, SendOutcome> {
    exchange(post(http, url, JSON_UTF8, body)).await
}
