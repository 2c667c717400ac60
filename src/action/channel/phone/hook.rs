//! Any HTTP gateway: a JSON body from a template, per number.

use super::{Attempt, Fields, each_number, json_template, render, required_secret, short};
use crate::action::channel::kit::{Answer, JSON, SendContext, SendOutcome, post};
use crate::action::message::Message;
use crate::config::Errors;
use crate::config::secret::{Secret, secret_from_node};
use crate::config::yaml::MapReader;
use crate::text::redact::Redact;

// --- generic webhook ----------------------------------------------------------

pub(crate) const DEFAULT_HOOK_BODY: &str = r#"{"to": "{to}", "text": "{text}", "title": "{title}", "severity": "{severity}", "incident": "{incident}"}"#;

/// A JSON POST per recipient to an SMS/voice gateway of your own.
#[derive(Debug)]
pub(crate) struct Hook {
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
        let mut req = post(http, self.url.expose(), JSON, render(&self.body, fields));
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.expose());
        }
        req
    }

    /// 2xx is success; 429, 408 and 5xx are worth retrying. The answer is
    /// scrubbed of the URL and header values in case the gateway echoes
    /// them.
    pub fn interpret(&self, r: &Answer) -> Attempt {
        let status = r.status.as_u16();
        if r.status.is_success() {
            return Attempt::Ok(format!("HTTP {status}"));
        }
        let redact = self
            .headers
            .iter()
            .fold(Redact::new().url(self.url.expose()), |r, (_, v)| {
                r.secret(v.expose())
            });
        let body = redact.apply(&r.text);
        let reason = format!("HTTP {status}: {}", short(&body));
        if status == 429 || status == 408 || r.status.is_server_error() {
            Attempt::Retry {
                after: r.retry_after,
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
