//! The HTTP executor: a request built from templates (an Argo Rollouts
//! abort, a cloud API rebuilding an instance from its pre-upgrade image, a
//! load balancer switching to the standby pool).
//!
//! ```yaml
//! http:
//!   method: POST
//!   url: "https://cloud.example/v1/instances/{instance}:rebuild"
//!   headers:
//!     Authorization: {env: CLOUD_TOKEN}     # a secret, sent as is
//!     X-Incident: "{incident}"              # a template
//!   body: '{"image": "pre-upgrade", "instance": "{instance}"}'
//!   timeout: 30s
//!   expect: [200, 202]                      # default: any 2xx
//! ```
//!
//! Values are checked against their label patterns, percent-encoded in the
//! URL and JSON-escaped in the body.

use std::time::Duration;

use super::{ExecOutcome, Execute, Patterns, Registration, Running, Template, Vars};
use crate::action::channel::kit::without_url;
use crate::action::message::truncate_utf8;
use crate::config::Errors;
use crate::config::secret::{Secret, secret_from_node};
use crate::config::yaml::{MapReader, Value};
use crate::time::Dur;

#[derive(Debug)]
enum HeaderValue {
    Secret(Secret),
    Template(Template),
}

#[derive(Debug)]
pub struct HttpExecutor {
    method: reqwest::Method,
    url: Template,
    headers: Vec<(String, HeaderValue)>,
    body: Option<Template>,
    timeout: Duration,
    expect: Vec<u16>,
    client: reqwest::Client,
}

impl HttpExecutor {
    pub fn from_config(mut m: MapReader<'_>, errs: &mut Errors) -> Option<HttpExecutor> {
        let method = match m
            .str("method", errs)
            .unwrap_or("POST")
            .to_ascii_uppercase()
            .as_str()
        {
            "GET" => Some(reqwest::Method::GET),
            "POST" => Some(reqwest::Method::POST),
            "PUT" => Some(reqwest::Method::PUT),
            "PATCH" => Some(reqwest::Method::PATCH),
            "DELETE" => Some(reqwest::Method::DELETE),
            other => {
                let n = m.node_of("method").unwrap_or(m.node());
                m.err(
                    errs,
                    n,
                    "method",
                    format!("`{other}`: expected GET, POST, PUT, PATCH or DELETE"),
                );
                None
            }
        };
        let url = m.str("url", errs).and_then(|u| {
            let parsed = Template::parse(u);
            let n = m.node_of("url").unwrap_or(m.node());
            match parsed {
                Ok(t) if u.starts_with("http://") || u.starts_with("https://") => {
                    Some(t.at(&m, n, "url"))
                }
                Ok(_) => {
                    m.err(errs, n, "url", "must start with http:// or https://");
                    None
                }
                Err(e) => {
                    m.err(errs, n, "url", e);
                    None
                }
            }
        });
        if url.is_none() && !m.has("url") {
            m.err(errs, m.node(), "url", "is required");
        }
        let mut headers = Vec::new();
        if let Some(mut hm) = m.map("headers", errs) {
            for (name, _, v) in hm.take_all() {
                let value = match &v.value {
                    Value::Str(s) => match Template::parse(s) {
                        Ok(t) => Some(HeaderValue::Template(t.at(&hm, v, name))),
                        Err(e) => {
                            hm.err(errs, v, name, e);
                            None
                        }
                    },
                    _ => secret_from_node(&hm, v, name, errs).map(HeaderValue::Secret),
                };
                if let Some(value) = value {
                    headers.push((name.to_owned(), value));
                }
            }
        }
        let body = m.str("body", errs).and_then(|b| {
            let n = m.node_of("body").unwrap_or(m.node());
            match Template::parse(b) {
                Ok(t) => Some(t.at(&m, n, "body")),
                Err(e) => {
                    m.err(errs, n, "body", e);
                    None
                }
            }
        });
        let timeout = m
            .dur("timeout", Dur::from_secs(1)..=Dur::from_mins(10), errs)
            .unwrap_or(Dur::from_secs(30));
        let expect: Vec<u16> = match m.seq("expect", errs) {
            None => Vec::new(),
            Some(items) => items
                .iter()
                .filter_map(|n| match n.value {
                    Value::Int(c) if (100..600).contains(&c) => Some(c as u16),
                    _ => {
                        m.err(
                            errs,
                            n,
                            "expect",
                            format!("expected an HTTP status code, got {}", n.describe()),
                        );
                        None
                    }
                })
                .collect(),
        };
        m.finish(errs);
        let client = reqwest::Client::builder()
            .timeout(timeout.to_std())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .ok()?;
        Some(HttpExecutor {
            method: method?,
            url: url?,
            headers,
            body,
            timeout: timeout.to_std(),
            expect,
            client,
        })
    }

    async fn run_now(&self, vars: &Vars, patterns: &Patterns) -> ExecOutcome {
        match self.exchange(vars, patterns).await {
            Ok(answer) => answer.outcome,
            Err(refused_or_failed) => refused_or_failed,
        }
    }

    /// Sends the request: its outcome and the answer's body (up to 64 KiB),
    /// or the outcome of a request refused or never answered.
    pub async fn exchange(&self, vars: &Vars, patterns: &Patterns) -> Result<Answer, ExecOutcome> {
        let url = self
            .url
            .render(vars, patterns, url_value)
            .map_err(ExecOutcome::Refused)?;
        let mut req = self
            .client
            .request(self.method.clone(), &url)
            .timeout(self.timeout);
        for (name, value) in &self.headers {
            let v = match value {
                HeaderValue::Secret(s) => s.expose().to_owned(),
                HeaderValue::Template(t) => t
                    .render(vars, patterns, super::verbatim)
                    .map_err(ExecOutcome::Refused)?,
            };
            req = req.header(name.as_str(), v);
        }
        if let Some(b) = &self.body {
            let body = b
                .render(vars, patterns, json_escape)
                .map_err(ExecOutcome::Refused)?;
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                let detail = format!(
                    "{} {} → HTTP {}: {}",
                    self.method,
                    redact_query(&url),
                    status.as_u16(),
                    truncate_utf8(text.trim(), 500)
                );
                let ok = if self.expect.is_empty() {
                    status.is_success()
                } else {
                    self.expect.contains(&status.as_u16())
                };
                Ok(Answer {
                    outcome: if ok {
                        ExecOutcome::Ok(detail)
                    } else {
                        ExecOutcome::Failed(detail)
                    },
                    status: status.as_u16(),
                    request: format!("{} {}", self.method, redact_query(&url)),
                    body: truncate_utf8(&text, 64 * 1024),
                })
            }
            Err(e) => Err(ExecOutcome::Failed(format!(
                "{} {}: {}",
                self.method,
                redact_query(&url),
                without_url(&e)
            ))),
        }
    }
}

/// What a server answered.
#[derive(Debug)]
pub struct Answer {
    pub outcome: ExecOutcome,
    pub status: u16,
    /// `METHOD url`, without the URL's query.
    pub request: String,
    pub body: String,
}

/// Query strings may carry tokens: not in the timeline.
fn redact_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

fn json_escape(v: &str) -> Result<String, String> {
    Ok(crate::text::template::json_escaped(v))
}

/// A value in a URL: percent-encoded (so `/`, `?` and `#` stay inside it),
/// and never `.` or `..`, which every URL parser resolves away as a path
/// segment, encoded or not (`/health/web/..` is sent as `/health/`).
fn url_value(v: &str) -> Result<String, String> {
    if v == "." || v == ".." {
        return Err(format!(
            "= {v:?} would be resolved away as a URL path segment"
        ));
    }
    Ok(crate::text::percent_encode(v))
}

pub const EXECUTOR: Registration = Registration {
    key: "http",
    example: "`http: {url: ...}`",
    read: |m, errs| Some(Box::new(HttpExecutor::from_config(m, errs)?)),
};

impl Execute for HttpExecutor {
    fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `METHOD url` as a run would send it (without the query, which may
    /// carry a token).
    fn describe(&self, vars: &Vars, patterns: &Patterns) -> Result<String, String> {
        self.check(vars, patterns)?;
        let url = self.url.render(vars, patterns, url_value)?;
        Ok(format!("{} {}", self.method, redact_query(&url)))
    }

    /// Renders the URL, header and body templates, sending nothing.
    fn check(&self, vars: &Vars, patterns: &Patterns) -> Result<(), String> {
        self.url.render(vars, patterns, url_value)?;
        for (_, value) in &self.headers {
            if let HeaderValue::Template(t) = value {
                t.render(vars, patterns, super::verbatim)?;
            }
        }
        if let Some(b) = &self.body {
            b.render(vars, patterns, json_escape)?;
        }
        Ok(())
    }

    fn templates(&self) -> Vec<&Template> {
        let headers = self.headers.iter().filter_map(|(_, v)| match v {
            HeaderValue::Template(t) => Some(t),
            HeaderValue::Secret(_) => None,
        });
        std::iter::once(&self.url)
            .chain(headers)
            .chain(self.body.as_ref())
            .collect()
    }

    fn run<'a>(&'a self, vars: &'a Vars, patterns: &'a Patterns) -> Running<'a> {
        Box::pin(self.run_now(vars, patterns))
    }
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn dot_segments_are_refused_and_everything_else_stays_in_its_segment() {
        assert!(url_value("..").is_err());
        assert!(url_value(".").is_err());
        assert_eq!(url_value("...").unwrap(), "...");
        assert_eq!(url_value("a/../b").unwrap(), "a%2F..%2Fb");
        assert_eq!(url_value("%2e%2e").unwrap(), "%252e%252e");
        assert_eq!(url_value("i-0a1").unwrap(), "i-0a1");
        let t = Template::parse("https://status.example/health/{service}/{instance}?x=1").unwrap();
        let mut vars = Vars::default();
        vars.0.insert("service".into(), "web".into());
        vars.0.insert("instance".into(), "..".into());
        let lax = Patterns::from_config(
            {
                let path = std::path::Path::new("p.yaml");
                let node = crate::config::yaml::parse(path, "instance: \".*\"").unwrap();
                let node = Box::leak(Box::new(node));
                crate::config::yaml::MapReader::new(
                    path,
                    node,
                    "p",
                    &mut crate::config::Errors::default(),
                )
                .unwrap()
            },
            &mut crate::config::Errors::default(),
        );
        let err = t.render(&vars, &lax, url_value).unwrap_err();
        assert!(
            err.contains("`instance`") && err.contains("path segment"),
            "{err}"
        );
    }
}
