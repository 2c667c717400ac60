//! What a new user trips over in the first hour, against the real
//! responder (`ripcord run`, HTTP in, the log channel on its stderr) and
//! the real CLI: the high-risk page says first that the rollout is paused,
//! an incident is acknowledged once, `show` words a one-step chain
//! plainly, a still-open incident misses no budget in the period's list or
//! its review, a gate for a service nobody has heard of says so (and
//! `--wait` gives up), and a 401 names the header to send.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Responder, free_port, now_millis, rfc3339, ripcord_bin, wait_until};

const TOKEN: &str = "first-hour-token-0123456789";

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `ripcord ARGS --config ripcord.yaml --state state.db` in `dir`: (exit
/// code, stdout, stderr).
fn cli(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let all = [args, &["--config", "ripcord.yaml", "--state", "state.db"]].concat();
    support::ripcord_in(dir, &all)
}

fn post(r: &Responder, path: &str, body: &Value) -> reqwest::blocking::Response {
    client()
        .post(r.url(path))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap()
}

fn alert(service: &str, instance: &str, tier: &str) -> Value {
    json!({"version": "4", "status": "firing", "receiver": "ripcord", "groupKey": "{}:{}",
           "alerts": [{"status": "firing", "fingerprint": format!("fp-{instance}"),
                       "labels": {"alertname": "ErrorsUp", "service": service, "instance": instance,
                                  "tier": tier, "severity": "critical"},
                       "annotations": {"summary": "errors up"},
                       "startsAt": rfc3339(now_millis() - 5_000), "endsAt": "0001-01-01T00:00:00Z"}]})
}

/// The id of the open incident on `instance`, once there is one.
fn incident_of(r: &Responder, instance: &str) -> String {
    let mut id = String::new();
    let found = wait_until(Duration::from_secs(20), || {
        let v: Value = client()
            .get(r.url("/api/v1/incidents?state=open"))
            .bearer_auth(TOKEN)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let hit = v["incidents"].as_array().and_then(|a| {
            a.iter()
                .find(|i| i["labels"]["instance"] == instance)
                .map(|i| i["id"].as_str().unwrap().to_owned())
        });
        id = hit.unwrap_or_default();
        !id.is_empty()
    });
    assert!(found, "no incident on {instance}:\n{}", r.stderr.tail(30));
    id
}

/// The log channel's message whose title contains `what`: its title line
/// and body lines (`  | …`), as printed.
fn logged_message(r: &Responder, what: &str) -> Vec<String> {
    let lines = r.stderr.all();
    let Some(start) = lines
        .iter()
        .position(|l| l.starts_with("message: ") && l.contains(what))
    else {
        return Vec::new();
    };
    lines[start..]
        .iter()
        .take_while(|l| l.as_str() == lines[start] || l.starts_with("  | "))
        .cloned()
        .collect()
}

#[test]
fn the_first_hour_of_a_new_user() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("ripcord.yaml"),
        format!(
            r#"http:
  public_url: "http://127.0.0.1:{port}"
  token: "{TOKEN}"
approvals:
  link_secret: "first-hour-link-secret-0123456789"
channels:
  chat: {{type: log}}
routing:
  medium: {{notify: [chat], approve: [chat]}}
  high: {{notify: [chat], approve: [chat]}}
escalation:
  high:
    - {{after: 0s, channels: [chat]}}
executors:
  pause_rollout: {{command: {{argv: [/bin/sh, -c, "exit 0", "{{service}}"]}}}}
"#
        ),
    )
    .unwrap();
    let r = Responder::start_on(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        &[
            "--config",
            "ripcord.yaml",
            "--state",
            "state.db",
            "--no-kafka",
        ],
    );

    // 401 names the header to send.
    let resp = client()
        .post(r.url("/api/v1/alerts"))
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body = resp.text().unwrap();
    assert!(body.contains("Authorization: Bearer"), "{body}");

    // High risk: the pause runs, and whoever is paged or asked reads first
    // that the rollout is paused.
    assert_eq!(
        post(&r, "/api/v1/alerts", &alert("payments", "i-pay-2", "high")).status(),
        200
    );
    let high = incident_of(&r, "i-pay-2");
    for what in ["PAGE payments/i-pay-2", "[HIGH/severe] payments/i-pay-2"] {
        let ok = wait_until(Duration::from_secs(20), || {
            logged_message(&r, what).len() > 1
        });
        assert!(ok, "no `{what}` message:\n{}", r.stderr.tail(40));
        let m = logged_message(&r, what);
        assert!(
            m[1].starts_with("  | Rollout of payments paused"),
            "the first line of `{what}` says the rollout is paused:\n{}",
            m.join("\n")
        );
    }

    // Acknowledged twice (a double tap): one line, and the second says who
    // was first.
    for by in ["erin", "erin", "frank"] {
        let resp = post(
            &r,
            &format!("/api/v1/incidents/{high}/ack"),
            &json!({"by": by}),
        );
        assert_eq!(resp.status(), 200);
    }
    let inc: Value = client()
        .get(r.url(&format!("/api/v1/incidents/{high}")))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let acks = inc["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            t["message"]
                .as_str()
                .is_some_and(|m| m.contains("acked by") || m.starts_with("acknowledged by"))
        })
        .count();
    assert_eq!(acks, 1, "{inc}");
    // `show` words the one-step chain plainly: no "next step 2".
    let (code, shown, err) = cli(dir.path(), &["show", &high]);
    assert_eq!(code, 0, "{err}");
    assert!(
        shown.contains("paging: acknowledged by erin (1 step sent)"),
        "{shown}"
    );
    assert!(!shown.contains("next step"), "{shown}");

    // Medium risk, minutes old: its budgets are open, not missed.
    assert_eq!(
        post(&r, "/api/v1/alerts", &alert("web", "i-web-1", "medium")).status(),
        200
    );
    let medium = incident_of(&r, "i-web-1");
    let (code, md, err) = cli(
        dir.path(),
        &["incidents", "--since", "90d", "--format", "md"],
    );
    assert_eq!(code, 0, "{err}");
    let row = md
        .lines()
        .find(|l| l.contains(&medium))
        .unwrap_or_else(|| panic!("{medium} in\n{md}"));
    assert!(row.ends_with("|  |"), "no budget missed yet: {row}");
    assert!(
        !md.split(" | ")
            .any(|c| c.starts_with('\\') && c[1..].starts_with(|c: char| c.is_ascii_digit())),
        "no stray backslash before a number:\n{md}"
    );
    let (code, csv, err) = cli(
        dir.path(),
        &["incidents", "--since", "30d", "--format", "csv"],
    );
    assert_eq!(code, 0, "{err}");
    let row = csv.lines().find(|l| l.starts_with(&medium)).unwrap();
    assert!(row.ends_with(','), "no budget missed yet: {row}");
    let (code, review, err) = cli(dir.path(), &["report", &medium]);
    assert_eq!(code, 0, "{err}");
    assert!(!review.contains("Missed:"), "{review}");
    assert!(!review.contains("**MISSED**"), "{review}");
    assert!(
        review.contains("Still open (time left): rollback started within 30m"),
        "{review}"
    );

    // A gate for a service ripcord has never seen says so; --wait gives up
    // at once instead of waiting for nothing.
    let started = Instant::now();
    let out = Command::new(ripcord_bin())
        .args([
            "gate",
            "paymnets",
            "--wait",
            "--interval",
            "1s",
            "--url",
            &r.url(""),
        ])
        .output()
        .unwrap();
    let (said, err) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(out.status.code(), Some(3), "{said}{err}");
    assert!(
        said.contains("ripcord has never seen a service named `paymnets`"),
        "{said}{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it did not wait"
    );
    // A service it knows still gets its answer.
    let out = Command::new(ripcord_bin())
        .args(["gate", "payments", "--json", "--url", &r.url("")])
        .output()
        .unwrap();
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["known_service"], true, "{answer}");
    assert_eq!(
        answer["decision"], "nogo",
        "an open high incident: {answer}"
    );
}
