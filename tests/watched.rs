//! ripcord watched: its `/metrics` as Prometheus and promtool read it. The
//! classic text format when asked (`promtool check metrics` passes on it),
//! OpenMetrics otherwise; every route counted, 404s too; the gauges read
//! from the journal (open incidents, pending approvals, the action queue)
//! follow what happens.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::{Responder, metric, now_millis, parse_metrics, rfc3339, wait_until};

const TOKEN: &str = "watched-test-token-0123456789";

fn scrape(r: &Responder, accept: Option<&str>) -> (String, String) {
    let mut req = reqwest::blocking::Client::new().get(r.url("/metrics"));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = req.send().unwrap();
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    (ct, resp.text().unwrap())
}

#[test]
fn promtool_accepts_the_classic_format_and_every_route_is_counted() {
    support::need_tool("promtool", "prometheus");
    let dir = tempfile::tempdir().unwrap();
    let r = support::ripcord_with_token(dir.path(), TOKEN, "");
    let client = reqwest::blocking::Client::new();
    // A medium-tier alert: an incident waiting for a human's approval.
    let alert = json!({"version": "4", "alerts": [{"status": "firing", "startsAt": rfc3339(now_millis()),
        "labels": {"alertname": "DiskSlow", "service": "shop", "instance": "i-1", "tier": "medium", "severity": "warning"}}]});
    let posted = client
        .post(r.url("/api/v1/alerts"))
        .bearer_auth(TOKEN)
        .json(&alert)
        .send()
        .unwrap();
    assert_eq!(posted.status(), 200);
    // Routes that were not counted before: the gate, silences, a 404.
    assert_eq!(
        client
            .get(r.url("/api/v1/rollouts/shop/gate"))
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(r.url("/api/v1/silences"))
            .bearer_auth(TOKEN)
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(r.url("/api/v1/silences/x"))
            .send()
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        client.get(r.url("/no/such/page")).send().unwrap().status(),
        404
    );

    // The journal's gauges follow (refreshed every 5 s).
    let followed = wait_until(Duration::from_secs(20), || {
        let m = parse_metrics(&scrape(&r, None).1);
        metric(&m, r#"ripcord_open_incidents{tier="medium"}"#) == 1.0
            && metric(&m, "ripcord_pending_approvals") == 1.0
    });
    assert!(followed, "{}", scrape(&r, None).1);

    // OpenMetrics unless the classic format is asked for.
    let (ct, om) = scrape(&r, None);
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(om.trim_end().ends_with("# EOF"));
    let (ct, prom) = scrape(
        &r,
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert!(
        ct.starts_with("application/openmetrics-text"),
        "Prometheus' own Accept: {ct}"
    );
    assert!(prom.contains("# EOF"));
    let (ct, classic) = scrape(&r, Some("text/plain"));
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert!(!classic.contains("# EOF"));
    let m = parse_metrics(&classic);
    for (series, want) in [
        (
            r#"ripcord_http_requests_total{endpoint="/api/v1/rollouts/{service}/gate",code="200"}"#,
            1.0,
        ),
        (
            r#"ripcord_http_requests_total{endpoint="/api/v1/silences",code="200"}"#,
            1.0,
        ),
        (
            r#"ripcord_http_requests_total{endpoint="/api/v1/silences/{id}",code="401"}"#,
            1.0,
        ),
        (
            r#"ripcord_http_requests_total{endpoint="unmatched",code="404"}"#,
            1.0,
        ),
        (
            r#"ripcord_events_total{source="http",outcome="processed"}"#,
            1.0,
        ),
        (
            r#"ripcord_decisions_total{action="request_approval",tier="medium"}"#,
            1.0,
        ),
    ] {
        assert_eq!(metric(&m, series), want, "{series}\n{classic}");
    }
    assert!(classic.contains("ripcord_build_info{version="), "{classic}");
    assert!(metric(&m, "process_resident_memory_bytes") > 0.0);
    assert!(metric(&m, "process_open_fds") > 0.0);

    // promtool reads it as Prometheus would, lint included.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(classic.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
