//! Twilio: SMS and calls through its REST API.

use super::{Attempt, base_url, e164_error, is_e164, required_secret, required_str, short};
use crate::action::channel::kit::{Answer, post_form};
use crate::config::Errors;
use crate::config::secret::Secret;
use crate::config::yaml::MapReader;

// --- Twilio ---------------------------------------------------------------------

const TWILIO_URL: &str = "https://api.twilio.com";

#[derive(Debug)]
pub(crate) struct Twilio {
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
        post_form(http, &url, &[("To", to), ("From", &self.from), extra])
            .basic_auth(&self.account_sid, Some(self.auth_token.expose()))
    }

    /// 2xx: the resource's `sid`. Errors carry `code` and `message`; 429
    /// (20429) and 5xx are worth retrying, any other refusal is final.
    pub fn interpret(&self, r: &Answer) -> Attempt {
        let json: Option<serde_json::Value> = serde_json::from_str(&r.text).ok();
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
            _ => format!("HTTP {status}: {}", short(&r.text)),
        };
        // The account SID is not a secret, but it has no business in a
        // timeline either.
        let detail = detail.replace(&self.account_sid, "<account>");
        if status == 429 || status == 408 || code == Some(20429) || r.status.is_server_error() {
            Attempt::Retry {
                after: r.retry_after,
                reason: detail,
            }
        } else {
            Attempt::Reject(detail)
        }
    }
}
