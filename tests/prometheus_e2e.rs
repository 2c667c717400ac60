//! Debian's real Prometheus (package prometheus) scraping a test target,
//! evaluating an alerting rule, and sending its alerts straight to `ripcord
//! run` (`alerting.alertmanagers` naming ripcord, with its bearer token):
//! the alert reaches ripcord once and acts once however often Prometheus
//! resends it, and resolves when the rule stops firing. ripcord, with
//! `prometheus: {url: …}`, asks the same Prometheus `query_range` for the
//! alert's expression and draws the incident's chart; a chart that cannot
//! be had says why on the page.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use support::{
    Lines, Responder, free_port, metric, need_tool, parse_metrics, ripcord_bin, wait_until,
};

const TOKEN: &str = "prometheus-test-token-0123456789";

/// A scrape target serving one gauge whose value the test sets.
struct Target {
    port: u16,
    value: Arc<AtomicU64>,
}

impl Target {
    fn start(initial: f64) -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let value = Arc::new(AtomicU64::new(initial.to_bits()));
        let v = value.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut c) = conn else { continue };
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                let body = format!(
                    "# TYPE payments_error_ratio gauge\npayments_error_ratio{{service=\"payments\"}} {}\n",
                    f64::from_bits(v.load(Ordering::Relaxed))
                );
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Target { port, value }
    }

    fn set(&self, v: f64) {
        self.value.store(v.to_bits(), Ordering::Relaxed);
    }
}

struct Prometheus {
    child: Child,
    port: u16,
    stderr: Lines,
}

impl Prometheus {
    /// On `port`: scrapes and evaluates every second, resends firing alerts
    /// every 2 s (instead of a minute) and sends them to ripcord at
    /// `ripcord`.
    fn start(dir: &Path, port: u16, target: u16, ripcord: &str) -> Prometheus {
        std::fs::write(
            dir.join("rules.yml"),
            r#"groups:
  - name: payments
    rules:
      - alert: PaymentsErrors
        expr: payments_error_ratio > 0.05
        labels: {tier: low, severity: critical}
        annotations: {summary: "payments errors above 5%"}
"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                r#"global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [rules.yml]
scrape_configs:
  - job_name: payments
    static_configs: [{{targets: ["127.0.0.1:{target}"]}}]
alerting:
  alertmanagers:
    - api_version: v2
      authorization: {{credentials: {TOKEN}}}
      static_configs: [{{targets: ["{ripcord}"]}}]
"#
            ),
        )
        .unwrap();
        let mut child = Command::new("prometheus")
            .arg("--config.file=prometheus.yml")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.path=tsdb")
            .arg("--rules.alert.resend-delay=2s")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start prometheus");
        let stderr = Lines::of(child.stderr.take().unwrap());
        let p = Prometheus {
            child,
            port,
            stderr,
        };
        let up = wait_until(Duration::from_secs(30), || {
            reqwest::blocking::get(p.url("/-/ready")).is_ok_and(|r| r.status() == 200)
        });
        assert!(up, "prometheus not ready:\n{}", p.stderr.text());
        p
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// The value of an instant query's first sample, if any.
    fn query(&self, q: &str) -> Option<f64> {
        let q: String = form_urlencoded::byte_serialize(q.as_bytes()).collect();
        let v: Value = reqwest::blocking::get(self.url(&format!("/api/v1/query?query={q}")))
            .ok()?
            .json()
            .ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ripcord(dir: &Path, prometheus: u16) -> Responder {
    support::ripcord_with_token(
        dir,
        TOKEN,
        &format!("prometheus:\n  url: http://127.0.0.1:{prometheus}\n  before: 2m\n"),
    )
}

fn decisions_of(r: &Responder, action: &str) -> Vec<Value> {
    r.decisions()
        .into_iter()
        .filter(|d| d["action"] == action)
        .collect()
}

fn v2_posts(r: &Responder) -> f64 {
    metric(
        &parse_metrics(&r.metrics()),
        r#"ripcord_http_requests_total{endpoint="/api/v2/alerts",code="200"}"#,
    )
}

/// The incident's review in markdown, read from the running ripcord's journal.
fn review(dir: &Path, incident: &str) -> String {
    let out = Command::new(ripcord_bin())
        .args(["report", incident, "--format", "md", "--state", "state.db"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// "N values of …" in the review's evidence section.
fn values_in(review: &str) -> usize {
    review
        .lines()
        .find_map(|l| l.split(" values of ").next()?.trim().parse().ok())
        .unwrap_or(0)
}

/// A console page, read with the API token (loopback reads no page
/// unless configured to).
fn page(r: &Responder, path: &str) -> String {
    reqwest::blocking::Client::new()
        .get(r.url(path))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .text()
        .unwrap()
}

#[test]
fn prometheus_alerts_reach_ripcord_once_resolve_and_draw_their_chart() {
    need_tool("prometheus", "prometheus");
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start(0.02);
    let prom_port = free_port();
    // ripcord first (Prometheus' config names its address), told where
    // Prometheus will listen.
    let r = ripcord(dir.path(), prom_port);
    let prom = Prometheus::start(dir.path(), prom_port, target.port, &r.http.to_string());
    // A healthy stretch first, for the chart's before-the-alert part.
    let healthy = wait_until(Duration::from_secs(30), || {
        prom.query("count_over_time(payments_error_ratio[1m])")
            .is_some_and(|n| n >= 4.0)
    });
    assert!(healthy, "no scrapes:\n{}", prom.stderr.text());

    // The rule fires: the alert reaches ripcord over /api/v2/alerts and
    // the low tier rolls back, once.
    target.set(0.2);
    let acted = wait_until(Duration::from_secs(30), || {
        !decisions_of(&r, "rollback").is_empty()
    });
    assert!(
        acted,
        "no rollback:\n{}\n{}",
        r.stderr.text(),
        prom.stderr.text()
    );
    let rollback = &decisions_of(&r, "rollback")[0];
    assert_eq!(rollback["labels"]["alertname"], "PaymentsErrors");
    assert_eq!(rollback["labels"]["service"], "payments");
    let incident = rollback["incident"].as_str().unwrap().to_owned();
    // Prometheus resends the firing alert every 2 s: three more deliveries,
    // still one rollback, one incident.
    let posts = v2_posts(&r);
    let resent = wait_until(Duration::from_secs(30), || v2_posts(&r) >= posts + 3.0);
    assert!(resent, "no resends:\n{}", prom.stderr.text());
    assert_eq!(decisions_of(&r, "rollback").len(), 1, "{:?}", r.decisions());
    let open: Value = reqwest::blocking::Client::new()
        .get(r.url("/api/v1/incidents?state=open"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(open["incidents"].as_array().unwrap().len(), 1, "{open}");

    // The chart: Prometheus' values of the expression's value side, from
    // before the alert to now, against the threshold 0.05.
    let charted = wait_until(Duration::from_secs(30), || {
        page(&r, &format!("/incidents/{incident}")).contains("chart-source")
    });
    let html = page(&r, &format!("/incidents/{incident}"));
    assert!(charted, "no chart on the page:\n{html}");
    assert!(
        html.contains("Prometheus: <code>payments_error_ratio</code>"),
        "{html}"
    );
    assert!(html.contains("threshold 0.05"), "{html}");
    let md = review(dir.path(), &incident);
    assert!(
        md.contains("peak 0.2") && md.contains("threshold 0.05"),
        "{md}"
    );
    let at_open = values_in(&md);
    assert!(at_open >= 4, "the healthy stretch and the breach: {md}");

    // The rule stops firing: Prometheus sends the alert resolved, ripcord
    // resolves the incident, once, and draws the chart again to the end.
    target.set(0.01);
    let resolved = wait_until(Duration::from_secs(30), || {
        !decisions_of(&r, "resolve").is_empty()
    });
    assert!(resolved, "not resolved:\n{}", r.stderr.text());
    let redrawn = wait_until(Duration::from_secs(30), || {
        values_in(&review(dir.path(), &incident)) > at_open
    });
    assert!(redrawn, "chart not fetched again at the resolve");
    assert_eq!(decisions_of(&r, "rollback").len(), 1);
    assert_eq!(decisions_of(&r, "resolve").len(), 1);

    // An alert whose expression Prometheus refuses: no chart, and the page
    // says why.
    let now = support::rfc3339(support::now_millis());
    let bad = serde_json::json!([{
        "labels": {"alertname": "Broken", "service": "shop", "tier": "medium", "severity": "info"},
        "startsAt": now,
        "generatorURL": "http://prometheus.example:9090/graph?g0.expr=rate%28oops&g0.tab=1",
    }]);
    let posted = reqwest::blocking::Client::new()
        .post(r.url("/api/v2/alerts"))
        .bearer_auth(TOKEN)
        .json(&bad)
        .send()
        .unwrap();
    assert_eq!(posted.status(), 200);
    let broken = wait_until(Duration::from_secs(20), || {
        r.decisions()
            .iter()
            .any(|d| d["rule"] == "alertmanager-forwarded" && d["labels"]["alertname"] == "Broken")
    });
    assert!(broken, "{}", r.stderr.text());
    let id = r
        .decisions()
        .iter()
        .find(|d| d["labels"]["alertname"] == "Broken")
        .and_then(|d| d["incident"].as_str().map(str::to_owned))
        .unwrap();
    let said = wait_until(Duration::from_secs(20), || {
        page(&r, &format!("/incidents/{id}"))
            .contains("No chart from Prometheus: Prometheus answered 400")
    });
    assert!(said, "{}", page(&r, &format!("/incidents/{id}")));
    drop(prom);
}
