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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Digest as _;

use super::kit::{Channel, Class, Registration, SendContext, SendOutcome, Sending, retry_after, without_url};
use crate::action::message::{Link, Message, truncate_utf8};
use crate::config::Errors;
use crate::text::template::{fill, json_escaped};
use crate::config::secret::{Secret, read_secret, secret_from_node};
use crate::config::yaml::MapReader;
use crate::text::percent_encode;
use crate::text::redact::Redact;
use crate::time::Ts;

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

// ---------------------------------------------------------------------------
// What SMS and voice share (voice.rs uses these through `super::sms`).

/// The providers a phone channel can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Provider {
    Twilio,
    Aliyun,
    Webhook,
}

pub(super) const PROVIDERS: &str = "twilio, aliyun, webhook";

/// Reads `provider` and `to`. With no usable provider the other keys are
/// marked read, so the one error that matters is not buried under "unknown
/// key" errors for settings of a provider nobody could pick.
pub(super) fn read_common(
    m: &mut MapReader<'_>,
    errs: &mut Errors,
) -> Option<(Provider, Option<Vec<String>>)> {
    let to = read_numbers(m, "to", errs);
    let provider = match m.str("provider", errs) {
        Some("twilio") => Some(Provider::Twilio),
        Some("aliyun") => Some(Provider::Aliyun),
        Some("webhook") => Some(Provider::Webhook),
        Some(other) => {
            let n = m.node_of("provider").unwrap_or(m.node());
            m.err(
                errs,
                n,
                "provider",
                format!("unknown provider `{other}`; expected {PROVIDERS}"),
            );
            None
        }
        None => {
            if !m.has("provider") {
                m.err(
                    errs,
                    m.node(),
                    "provider",
                    format!("is required ({PROVIDERS})"),
                );
            }
            None
        }
    };
    if provider.is_none() {
        m.take_all();
    }
    Some((provider?, to))
}

/// `+` then 7 to 15 digits, the first not 0 (`^\+[1-9][0-9]{6,14}$`).
pub fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

fn e164_error(s: &str) -> String {
    format!("`{s}` is not an E.164 phone number (+, then 7 to 15 digits, e.g. +8613800000000)")
}

/// A required, non-empty list of distinct E.164 numbers.
pub(super) fn read_numbers(
    m: &mut MapReader<'_>,
    key: &str,
    errs: &mut Errors,
) -> Option<Vec<String>> {
    let Some(items) = m.str_list(key, errs) else {
        if !m.has(key) {
            m.err(
                errs,
                m.node(),
                key,
                "is required: the phone numbers to reach",
            );
        }
        return None;
    };
    if items.is_empty() {
        let n = m.node_of(key).unwrap_or(m.node());
        m.err(errs, n, key, "needs at least one phone number");
        return None;
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    let mut ok = true;
    for (s, node) in items {
        if !is_e164(s) {
            m.err(errs, node, key, e164_error(s));
            ok = false;
        } else if out.iter().any(|o| o == s) {
            m.err(errs, node, key, format!("`{s}` is listed twice"));
            ok = false;
        } else {
            out.push(s.to_owned());
        }
    }
    ok.then_some(out)
}

/// A required plain string.
pub(super) fn required_str(m: &mut MapReader<'_>, key: &str, errs: &mut Errors) -> Option<String> {
    let s = m.str(key, errs).map(str::to_owned);
    if s.is_none() && !m.has(key) {
        m.err(errs, m.node(), key, "is required");
    }
    match s {
        Some(s) if s.trim().is_empty() => {
            let n = m.node_of(key).unwrap_or(m.node());
            m.err(errs, n, key, "must not be empty");
            None
        }
        s => s,
    }
}

/// A required secret (`{env: …}`, `{file: …}` or a literal).
pub(super) fn required_secret(
    m: &mut MapReader<'_>,
    key: &str,
    errs: &mut Errors,
) -> Option<Secret> {
    let s = read_secret(m, key, errs);
    if s.is_none() && !m.has(key) {
        m.err(
            errs,
            m.node(),
            key,
            "is required (a secret: {env: NAME} or {file: PATH})",
        );
    }
    s
}

/// `base_url`: `http(s)://host[:port][/path]`, without a trailing slash.
pub(super) fn base_url(m: &mut MapReader<'_>, default: &str, errs: &mut Errors) -> Option<String> {
    let Some(s) = m.str("base_url", errs) else {
        return Some(default.to_owned());
    };
    let t = s.trim_end_matches('/');
    let ok = (t.starts_with("https://") || t.starts_with("http://"))
        && !t.contains(['?', '#', ' '])
        && t.len() > "https://".len();
    if ok {
        Some(t.to_owned())
    } else {
        let n = m.node_of("base_url").unwrap_or(m.node());
        m.err(
            errs,
            n,
            "base_url",
            format!("`{s}` is not an http(s) URL without query (e.g. {default})"),
        );
        None
    }
}

/// A JSON template with placeholders, checked by rendering an example.
pub(super) fn json_template(
    m: &mut MapReader<'_>,
    key: &str,
    default: &str,
    object: bool,
    errs: &mut Errors,
) -> Option<String> {
    let Some(t) = m.str(key, errs) else {
        return (!m.has(key)).then(|| default.to_owned());
    };
    let sample = render(t, &Fields::example());
    let mut problems = super::kit::unknown_placeholders(t, &Fields::NAMES);
    match serde_json::from_str::<serde_json::Value>(&sample) {
        Ok(v) if object && !v.is_object() => problems.push("must render to a JSON object".into()),
        Ok(_) => {}
        Err(e) => problems.push(format!(
            "does not render to JSON ({e}); placeholders go inside quotes: \"{{text}}\""
        )),
    }
    if problems.is_empty() {
        return Some(t.to_owned());
    }
    let n = m.node_of(key).unwrap_or(m.node());
    for p in problems {
        m.err(errs, n, key, p);
    }
    None
}

/// The values placeholders stand for, for one request.
pub(super) struct Fields<'a> {
    pub to: &'a str,
    pub text: &'a str,
    pub title: &'a str,
    pub severity: String,
    pub tier: String,
    pub incident: &'a str,
    pub link: &'a str,
}

impl<'a> Fields<'a> {
    pub fn of(msg: &'a Message, to: &'a str, text: &'a str) -> Fields<'a> {
        Fields {
            to,
            text,
            title: &msg.title,
            severity: msg.severity.to_string(),
            tier: msg.tier.to_string(),
            incident: msg.incident.as_deref().unwrap_or(""),
            link: pick_link(msg).map_or("", |l| l.url.as_str()),
        }
    }

    fn example() -> Fields<'static> {
        Fields {
            to: "+8613800000000",
            text: "a \"quoted\"\nmulti-line text",
            title: "a \"quoted\" title",
            severity: "severe".into(),
            tier: "high".into(),
            incident: "inc-000000000000",
            link: "https://ripcord.example/ack?t=x&y=\"z\"",
        }
    }

    /// Every name [`Fields::get`] answers.
    const NAMES: [&'static str; 7] = [
        "to", "text", "title", "severity", "tier", "incident", "link",
    ];

    fn get(&self, name: &str) -> Option<&str> {
        Some(match name {
            "to" => self.to,
            "text" => self.text,
            "title" => self.title,
            "severity" => &self.severity,
            "tier" => &self.tier,
            "incident" => self.incident,
            "link" => self.link,
            _ => return None,
        })
    }
}

/// Fills `{name}` with the JSON-escaped value (no quotes added); unknown
/// `{…}` stay as written.
pub(super) fn render(template: &str, f: &Fields<'_>) -> String {
    fill(template, |name| f.get(name).map(json_escaped))
}

/// The link a phone message carries: an acknowledge or approve link if
/// there is one, else the first.
pub(super) fn pick_link(msg: &Message) -> Option<&Link> {
    msg.links
        .iter()
        .find(|l| {
            let label = l.label.to_lowercase();
            label.contains("ack") || label.contains("approve")
        })
        .or_else(|| msg.links.first())
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

// --- sending ---------------------------------------------------------------

/// What one provider request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Attempt {
    /// Accepted; the provider's id for it.
    Ok(String),
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    Reject(String),
}

fn transport(reason: String) -> Attempt {
    Attempt::Retry {
        after: None,
        reason,
    }
}

/// A provider's HTTP answer.
pub(super) struct Reply {
    pub status: reqwest::StatusCode,
    pub after: Option<Duration>,
    pub body: String,
}

async fn exchange(req: reqwest::RequestBuilder) -> Result<Reply, Attempt> {
    match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            let after = retry_after(resp.headers());
            let body = resp.text().await.unwrap_or_default();
            Ok(Reply {
                status,
                after,
                body,
            })
        }
        Err(e) => Err(transport(format!("transport error: {}", without_url(&e)))),
    }
}

/// Sends the requests at once (one slow number must not eat the others'
/// time); answers in the order of `reqs`. A transport failure comes back as
/// the `Attempt` it means.
pub(super) async fn exchange_all(
    reqs: Vec<reqwest::RequestBuilder>,
) -> Vec<Result<Reply, Attempt>> {
    if reqs.len() == 1 {
        let req = reqs.into_iter().next().expect("one request");
        return vec![exchange(req).await];
    }
    let n = reqs.len();
    let mut set = tokio::task::JoinSet::new();
    for (i, req) in reqs.into_iter().enumerate() {
        set.spawn(async move { (i, exchange(req).await) });
    }
    let mut out: Vec<Option<Result<Reply, Attempt>>> = (0..n).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        if let Ok((i, r)) = joined {
            out[i] = Some(r);
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(transport("the request task failed".into()))))
        .collect()
}

/// One request per number in `to` (providers that take one recipient per
/// message or call), sent at once, each answer read by `interpret`, and
/// summarised with `verb` ("sent to", "called").
pub(super) async fn each_number(
    to: &[String],
    verb: &str,
    request: impl Fn(&str) -> reqwest::RequestBuilder,
    interpret: impl Fn(&Reply) -> Attempt,
) -> SendOutcome {
    let replies = exchange_all(to.iter().map(|n| request(n)).collect()).await;
    let results = to
        .iter()
        .zip(replies)
        .map(|(n, r)| (vec![n.clone()], r.map_or_else(|e| e, |r| interpret(&r))))
        .collect();
    summarize(verb, results)
}

/// One outcome for all recipients: `Sent` only if every request was
/// accepted; otherwise who got it, who did not and why, `Retry` if any
/// failure may pass.
pub(super) fn summarize(verb: &str, results: Vec<(Vec<String>, Attempt)>) -> SendOutcome {
    let total: usize = results.iter().map(|(n, _)| n.len()).sum();
    let mut delivered = Vec::new();
    let mut failed = Vec::new();
    let mut transient = false;
    let mut after: Option<Duration> = None;
    let mut ok_count = 0;
    for (numbers, attempt) in &results {
        match attempt {
            Attempt::Ok(id) => {
                ok_count += numbers.len();
                delivered.extend(numbers.iter().map(|n| format!("{n} ({id})")));
            }
            Attempt::Retry { after: a, reason } => {
                transient = true;
                after = after.max(*a);
                failed.push(format!("{}: {reason}", numbers.join(", ")));
            }
            Attempt::Reject(reason) => failed.push(format!("{}: {reason}", numbers.join(", "))),
        }
    }
    let plural = |n: usize| if n == 1 { "number" } else { "numbers" };
    if failed.is_empty() {
        return SendOutcome::Sent(format!(
            "{verb} {total} {}: {}",
            plural(total),
            delivered.join(", ")
        ));
    }
    let reason = if delivered.is_empty() {
        format!(
            "failed for all {total} {}: {}",
            plural(total),
            failed.join("; ")
        )
    } else {
        format!(
            "{verb} {ok_count} of {total} {}: {}; failed: {}",
            plural(total),
            delivered.join(", "),
            failed.join("; ")
        )
    };
    if transient {
        SendOutcome::Retry { after, reason }
    } else {
        SendOutcome::Reject(reason)
    }
}

/// An error body, trimmed and bounded, for outcome strings.
fn short(body: &str) -> String {
    truncate_utf8(body.trim(), 300)
}

// --- form and percent encoding ------------------------------------------------

// RFC 3986 encoding, Aliyun's POP encoding and valid
// `application/x-www-form-urlencoded`: `crate::text::percent_encode`.

fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

// --- Twilio ---------------------------------------------------------------------

const TWILIO_URL: &str = "https://api.twilio.com";

#[derive(Debug)]
pub(super) struct Twilio {
    base: String,
    account_sid: String,
    auth_token: Secret,
    from: String,
}

impl Twilio {
    pub fn from_config(m: &mut MapReader<'_>, errs: &mut Errors) -> Option<Twilio> {
        let base = base_url(m, TWILIO_URL, errs);
        let sid = required_str(m, "account_sid", errs).and_then(|s| {
            if s.bytes().all(|b| b.is_ascii_alphanumeric()) {
                Some(s)
            } else {
                let n = m.node_of("account_sid").unwrap_or(m.node());
                m.err(
                    errs,
                    n,
                    "account_sid",
                    "must be letters and digits (like AC0123…)",
                );
                None
            }
        });
        let token = required_secret(m, "auth_token", errs);
        let from = required_str(m, "from", errs).and_then(|s| {
            if is_e164(&s) {
                Some(s)
            } else {
                let n = m.node_of("from").unwrap_or(m.node());
                m.err(errs, n, "from", e164_error(&s));
                None
            }
        });
        Some(Twilio {
            base: base?,
            account_sid: sid?,
            auth_token: token?,
            from: from?,
        })
    }

    /// A POST to `Messages` or `Calls` for one number; `extra` is `Body` or
    /// `Twiml`.
    pub fn request(
        &self,
        http: &reqwest::Client,
        resource: &str,
        to: &str,
        extra: (&str, &str),
    ) -> reqwest::RequestBuilder {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/{resource}.json",
            self.base, self.account_sid
        );
        http.post(url)
            .basic_auth(&self.account_sid, Some(self.auth_token.expose()))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form_encode(&[("To", to), ("From", &self.from), extra]))
    }

    /// 2xx: the resource's `sid`. Errors carry `code` and `message`; 429
    /// (20429) and 5xx are worth retrying, any other refusal is final.
    pub fn interpret(&self, r: &Reply) -> Attempt {
        let json: Option<serde_json::Value> = serde_json::from_str(&r.body).ok();
        let field = |k: &str| json.as_ref().and_then(|v| v.get(k)).cloned();
        let status = r.status.as_u16();
        if r.status.is_success() {
            let id = field("sid")
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("HTTP {status}"));
            return Attempt::Ok(id);
        }
        let code = field("code").and_then(|v| v.as_i64());
        let message = field("message").and_then(|v| v.as_str().map(str::to_owned));
        let detail = match (code, message) {
            (Some(c), Some(m)) => format!("HTTP {status}, Twilio error {c}: {}", short(&m)),
            (Some(c), None) => format!("HTTP {status}, Twilio error {c}"),
            _ => format!("HTTP {status}: {}", short(&r.body)),
        };
        // The account SID is not a secret, but it has no business in a
        // timeline either.
        let detail = detail.replace(&self.account_sid, "<account>");
        if status == 429 || status == 408 || code == Some(20429) || r.status.is_server_error() {
            Attempt::Retry {
                after: r.after,
                reason: detail,
            }
        } else {
            Attempt::Reject(detail)
        }
    }
}

// --- Aliyun ---------------------------------------------------------------------

pub(super) const ALIYUN_SMS_URL: &str = "https://dysmsapi.aliyuncs.com";
pub(super) const DEFAULT_ALIYUN_PARAM: &str = r#"{"content": "{text}"}"#;

/// Answer codes worth retrying: flow control and passing server trouble.
fn aliyun_transient(code: &str) -> bool {
    code == "isv.BUSINESS_LIMIT_CONTROL"
        || code.starts_with("Throttling")
        || code.starts_with("ServiceUnavailable")
        || code == "InternalError"
        || code == "isp.SYSTEM_ERROR"
        || code == "SignatureNonceUsed"
}

/// Alibaba Cloud RPC API (signature version 1.0), shared by SMS
/// (dysmsapi) and voice (dyvmsapi).
#[derive(Debug)]
pub(super) struct Aliyun {
    base: String,
    access_key_id: String,
    access_key_secret: Secret,
    /// Requests signed so far: part of the nonce, so two sends of the same
    /// message at the same clock reading still differ.
    signed: AtomicU64,
}

impl Aliyun {
    pub fn from_config(
        m: &mut MapReader<'_>,
        default_base: &str,
        errs: &mut Errors,
    ) -> Option<Aliyun> {
        let base = base_url(m, default_base, errs);
        let id = required_str(m, "access_key_id", errs);
        let secret = required_secret(m, "access_key_secret", errs);
        Some(Aliyun {
            base: base?,
            access_key_id: id?,
            access_key_secret: secret?,
            signed: AtomicU64::new(0),
        })
    }

    /// A signed GET: the common parameters (`Format=JSON`, `Version=
    /// 2017-05-25`, `SignatureMethod=HMAC-SHA1`, `SignatureVersion=1.0`,
    /// `Timestamp` from the injected clock, `SignatureNonce`,
    /// `AccessKeyId`) plus `params` (with `Action`).
    ///
    /// The nonce is derived, not random: the first 128 bits of SHA-256 over
    /// the clock reading (ms), this channel's request counter and every
    /// other parameter, written like a UUID. Unique per request in
    /// practice, and reproducible in tests.
    pub fn request(
        &self,
        http: &reqwest::Client,
        now: Ts,
        params: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let mut all: Vec<(String, String)> = vec![
            ("AccessKeyId".into(), self.access_key_id.clone()),
            ("Format".into(), "JSON".into()),
            ("SignatureMethod".into(), "HMAC-SHA1".into()),
            ("SignatureVersion".into(), "1.0".into()),
            ("Timestamp".into(), aliyun_timestamp(now)),
            ("Version".into(), "2017-05-25".into()),
        ];
        all.extend(
            params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let count = self.signed.fetch_add(1, Ordering::Relaxed);
        all.push(("SignatureNonce".into(), nonce(now, count, &all)));
        let canonical = canonical_query(&all);
        let signature = rpc_signature(&canonical, self.access_key_secret.expose());
        let url = format!(
            "{}/?Signature={}&{canonical}",
            self.base,
            percent_encode(&signature)
        );
        http.get(url)
    }

    /// JSON `Code`: `OK` is success (the id is `id_field`, e.g. `BizId`,
    /// `CallId`); flow control and server trouble are worth retrying;
    /// anything else is final. Without a JSON answer the HTTP status
    /// decides.
    pub fn interpret(r: &Reply, id_field: &str) -> Attempt {
        let json: Option<serde_json::Value> = serde_json::from_str(&r.body).ok();
        let field = |k: &str| {
            json.as_ref()
                .and_then(|v| v.get(k))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let status = r.status.as_u16();
        match field("Code") {
            Some(code) if code == "OK" => Attempt::Ok(
                field(id_field)
                    .map(|id| format!("{id_field} {id}"))
                    .or_else(|| field("RequestId").map(|id| format!("RequestId {id}")))
                    .unwrap_or_else(|| "OK".into()),
            ),
            Some(code) => {
                let message = field("Message").unwrap_or_default();
                let reason = format!("Aliyun {code}: {}", short(&message));
                if aliyun_transient(&code) || r.status.is_server_error() || status == 429 {
                    // Flow control is counted per number and minute (then
                    // hour and day): sooner than a minute is sure to fail.
                    let floor =
                        (code == "isv.BUSINESS_LIMIT_CONTROL").then_some(Duration::from_secs(60));
                    Attempt::Retry {
                        after: r.after.max(floor),
                        reason,
                    }
                } else {
                    Attempt::Reject(reason)
                }
            }
            None if r.status.is_server_error() || status == 429 || status == 408 => {
                Attempt::Retry {
                    after: r.after,
                    reason: format!("HTTP {status}: {}", short(&r.body)),
                }
            }
            None => Attempt::Reject(format!(
                "HTTP {status}, no Code in the answer: {}",
                short(&r.body)
            )),
        }
    }
}

/// ISO 8601 UTC to the second, as Aliyun wants it: `2026-11-21T10:00:00Z`.
pub fn aliyun_timestamp(now: Ts) -> String {
    jiff::Timestamp::from_millisecond(now.millis())
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

fn nonce(now: Ts, count: u64, params: &[(String, String)]) -> String {
    let mut h = sha2::Sha256::new();
    h.update(b"ripcord aliyun nonce\0");
    h.update(now.millis().to_be_bytes());
    h.update(count.to_be_bytes());
    for (k, v) in params {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Parameters sorted by name, names and values percent-encoded, joined
/// with `&`.
pub fn canonical_query(params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `Base64(HMAC-SHA1(secret + "&", "GET&%2F&" + pct(canonical)))`.
pub fn rpc_signature(canonical: &str, secret: &str) -> String {
    let string_to_sign = format!("GET&{}&{}", percent_encode("/"), percent_encode(canonical));
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(format!("{secret}&").as_bytes())
        .expect("HMAC takes any key length");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

// --- generic webhook ----------------------------------------------------------

pub(super) const DEFAULT_HOOK_BODY: &str = r#"{"to": "{to}", "text": "{text}", "title": "{title}", "severity": "{severity}", "incident": "{incident}"}"#;

/// A JSON POST per recipient to an SMS/voice gateway of your own.
#[derive(Debug)]
pub(super) struct Hook {
    url: Secret,
    headers: Vec<(String, Secret)>,
    body: String,
}

impl Hook {
    pub fn from_config(m: &mut MapReader<'_>, errs: &mut Errors) -> Option<Hook> {
        let url = required_secret(m, "url", errs).and_then(|u| {
            if u.expose().starts_with("https://") || u.expose().starts_with("http://") {
                Some(u)
            } else {
                let n = m.node_of("url").unwrap_or(m.node());
                m.err(errs, n, "url", "must be an http:// or https:// URL");
                None
            }
        });
        let mut headers = Vec::new();
        let mut headers_ok = true;
        if let Some(mut hm) = m.map("headers", errs) {
            for (name, _, v) in hm.take_all() {
                let Some(s) = secret_from_node(&hm, v, name, errs) else {
                    headers_ok = false;
                    continue;
                };
                if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    hm.err(errs, v, name, "is not a valid HTTP header name");
                    headers_ok = false;
                } else if !s.is_unresolved()
                    && reqwest::header::HeaderValue::from_str(s.expose()).is_err()
                {
                    hm.err(errs, v, name, "the value is not a valid HTTP header value");
                    headers_ok = false;
                } else {
                    headers.push((name.to_owned(), s));
                }
            }
        }
        let body = json_template(m, "body", DEFAULT_HOOK_BODY, false, errs);
        Some(Hook {
            url: url?,
            headers: if headers_ok { headers } else { return None },
            body: body?,
        })
    }

    pub fn request(&self, http: &reqwest::Client, fields: &Fields<'_>) -> reqwest::RequestBuilder {
        let mut req = http
            .post(self.url.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(render(&self.body, fields));
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.expose());
        }
        req
    }

    /// 2xx is success; 429, 408 and 5xx are worth retrying. The answer is
    /// scrubbed of the URL and header values in case the gateway echoes
    /// them.
    pub fn interpret(&self, r: &Reply) -> Attempt {
        let status = r.status.as_u16();
        if r.status.is_success() {
            return Attempt::Ok(format!("HTTP {status}"));
        }
        let redact = self
            .headers
            .iter()
            .fold(Redact::new().url(self.url.expose()), |r, (_, v)| r.secret(v.expose()));
        let body = redact.apply(&r.body);
        let reason = format!("HTTP {status}: {}", short(&body));
        if status == 429 || status == 408 || r.status.is_server_error() {
            Attempt::Retry {
                after: r.after,
                reason,
            }
        } else {
            Attempt::Reject(reason)
        }
    }

    /// One request per recipient, `{text}` being `text`; `verb` ("sent
    /// to", "called") words the outcome.
    pub async fn send_each(
        &self,
        ctx: &SendContext<'_>,
        verb: &str,
        to: &[String],
        msg: &Message,
        text: &str,
    ) -> SendOutcome {
        each_number(
            to,
            verb,
            |n| self.request(ctx.http, &Fields::of(msg, n, text)),
            |r| self.interpret(r),
        )
        .await
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
    use crate::decision::{Severity, Tier};

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
