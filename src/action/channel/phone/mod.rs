//! What the phone channels (SMS and voice) share: the providers they reach
//! phones through, one file each ([`twilio`], [`aliyun`], [`hook`], a
//! generic HTTP gateway), the numbers, the placeholders of provider
//! templates, and sending to every number with one outcome for all.

pub mod aliyun;
pub mod hook;
pub mod twilio;

use std::time::Duration;

use super::kit::{self, Answer, SendOutcome};
use crate::action::message::{Link, Message, truncate_utf8};
use crate::config::Errors;
use crate::config::secret::{Secret, read_secret};
use crate::config::yaml::MapReader;
use crate::text::template::{fill, json_escaped};

pub(crate) use aliyun::Aliyun;
pub(crate) use hook::Hook;
pub(crate) use twilio::Twilio;

/// The providers a phone channel can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Provider {
    Twilio,
    Aliyun,
    Webhook,
}

pub(crate) const PROVIDERS: &str = "twilio, aliyun, webhook";

/// Reads `provider` and `to`. With no usable provider the other keys are
/// marked read, so the one error that matters is not buried under "unknown
/// key" errors for settings of a provider nobody could pick.
pub(crate) fn read_common(
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

pub(crate) fn e164_error(s: &str) -> String {
    format!("`{s}` is not an E.164 phone number (+, then 7 to 15 digits, e.g. +8613800000000)")
}

/// A required, non-empty list of distinct E.164 numbers.
pub(crate) fn read_numbers(
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
pub(crate) fn required_str(m: &mut MapReader<'_>, key: &str, errs: &mut Errors) -> Option<String> {
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
pub(crate) fn required_secret(
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
pub(crate) fn base_url(m: &mut MapReader<'_>, default: &str, errs: &mut Errors) -> Option<String> {
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
pub(crate) fn json_template(
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
    let mut problems = kit::unknown_placeholders(t, &Fields::NAMES);
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
pub(crate) struct Fields<'a> {
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
pub(crate) fn render(template: &str, f: &Fields<'_>) -> String {
    fill(template, |name| f.get(name).map(json_escaped))
}

/// The link a phone message carries: an acknowledge or approve link if
/// there is one, else the first.
pub(crate) fn pick_link(msg: &Message) -> Option<&Link> {
    msg.links
        .iter()
        .find(|l| {
            let label = l.label.to_lowercase();
            label.contains("ack") || label.contains("approve")
        })
        .or_else(|| msg.links.first())
}

// --- sending ---------------------------------------------------------------

/// What one provider request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// Accepted; the provider's id for it.
    Ok(String),
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    Reject(String),
}

/// What [`kit::exchange`] makes of a request that got no answer (a
/// transport error: a retry), as the attempt it is.
impl From<SendOutcome> for Attempt {
    fn from(o: SendOutcome) -> Attempt {
        match o {
            SendOutcome::Sent(id) => Attempt::Ok(id),
            SendOutcome::Retry { after, reason } => Attempt::Retry { after, reason },
            SendOutcome::Reject(reason) => Attempt::Reject(reason),
        }
    }
}

pub(crate) fn transport(reason: String) -> Attempt {
    Attempt::Retry {
        after: None,
        reason,
    }
}

/// Sends one provider request ([`kit::exchange`]); a transport failure
/// comes back as the `Attempt` it means.
pub(crate) async fn exchange(req: reqwest::RequestBuilder) -> Result<Answer, Attempt> {
    kit::exchange(req).await.map_err(Attempt::from)
}

/// Sends the requests at once (one slow number must not eat the others'
/// time); answers in the order of `reqs`. A transport failure comes back as
/// the `Attempt` it means.
pub(crate) async fn exchange_all(
    reqs: Vec<reqwest::RequestBuilder>,
) -> Vec<Result<Answer, Attempt>> {
    if reqs.len() == 1 {
        let req = reqs.into_iter().next().expect("one request");
        return vec![exchange(req).await];
    }
    let n = reqs.len();
    let mut set = tokio::task::JoinSet::new();
    for (i, req) in reqs.into_iter().enumerate() {
        set.spawn(async move { (i, exchange(req).await) });
    }
    let mut out: Vec<Option<Result<Answer, Attempt>>> = (0..n).map(|_| None).collect();
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
pub(crate) async fn each_number(
    to: &[String],
    verb: &str,
    request: impl Fn(&str) -> reqwest::RequestBuilder,
    interpret: impl Fn(&Answer) -> Attempt,
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
pub(crate) fn summarize(verb: &str, results: Vec<(Vec<String>, Attempt)>) -> SendOutcome {
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
pub(crate) fn short(body: &str) -> String {
    truncate_utf8(body.trim(), 300)
}
