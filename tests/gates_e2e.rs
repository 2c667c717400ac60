//! Rollout gates end to end: `ripcord run` as its own process (no Kafka,
//! events over HTTP), a staged rollout driven by progress events and
//! samples, and the gate asked between batches the way its callers ask:
//! Argo Rollouts' `web` provider (GET, reads `result.decision`), Flagger's
//! webhooks (POST `{name, namespace, phase, checksum, metadata}`, any status
//! above 202 fails), and `ripcord gate` (exit 0 go, 1 nogo, 2 hold).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Responder, now_millis, ripcord_bin, wait_until};

const TOKEN: &str = "gate-e2e-t0ken";

/// Quick rules: the batch's success below 99.9% for 3 s, or its 5xx above
/// 5% for 2 s, is an incident; both clear at once.
const RULES: &str = r#"
rules:
  - name: request-success
    match: {metric: request_success_ratio}
    group_by: [service, batch]
    window: 3s
    aggregate: avg
    condition: "< 99.9%"
    for: 3s
    clear_for: 0s
  - name: error-rate
    match: {metric: http_5xx_ratio}
    group_by: [service, instance]
    window: 2s
    aggregate: max
    condition: "> 5%"
    for: 2s
    clear_for: 0s
"#;

fn start(dir: &Path) -> Responder {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(dir.join("rules/gates.yaml"), RULES).unwrap();
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    std::fs::write(
        dir.join("ripcord.yaml"),
        "http:\n  token: {file: token}\n\
         tiers:\n  services: {web: low, pay: high}\n\
         gates:\n  min_soak: {low: 3s, high: 1h}\n  min_samples: 5\n",
    )
    .unwrap();
    Responder::start(
        dir,
        &[
            "--config",
            "ripcord.yaml",
            "--rules",
            "rules",
            "--state",
            "state.db",
            "--no-kafka",
            "--dry-run",
        ],
    )
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Posts events (JSON lines) with the token; they are journaled when it answers.
fn post_events(r: &Responder, events: &[Value]) {
    let body: String = events.iter().map(|e| format!("{e}\n")).collect();
    let resp = client()
        .post(r.url("/api/v1/events"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
}

fn progress(service: &str, batch: u32, stage: &str, ts: i64) -> Value {
    json!({"kind": "progress", "ts": ts, "stage": stage, "done": batch * 10, "total": 100,
           "labels": {"service": service, "batch": batch.to_string(), "batches": "3"}})
}

/// `n` samples of `metric`, one a second from `from` (Unix ms).
fn series(metric: &str, labels: Value, value: f64, from: i64, n: i64) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"metric": metric, "value": value, "ts": from + i * 1000, "labels": labels}))
        .collect()
}

/// Argo Rollouts' `web` provider: a GET, the JSON body as `result`.
fn argo(r: &Responder, service: &str, query: &str) -> Value {
    let resp = client()
        .get(r.url(&format!("/api/v1/rollouts/{service}/gate{query}")))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "Argo counts anything else as an Error");
    resp.json().unwrap()
}

/// Flagger's webhook call: the status is what Flagger reads.
fn flagger(r: &Responder, hook: &str, checksum: &str) -> (u16, Value) {
    let payload = json!({"name": "web", "namespace": "shop", "phase": "Progressing",
                         "checksum": checksum, "metadata": {"service": "web"}});
    let resp = client()
        .post(r.url(&format!("/api/v1/flagger/{hook}")))
        .json(&payload)
        .send()
        .unwrap();
    (resp.status().as_u16(), resp.json().unwrap())
}

fn ripcord_gate(r: &Responder, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(ripcord_bin())
        .arg("gate")
        .args(args)
        .args(["--url", &r.url("")])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn decision(v: &Value) -> &str {
    v["decision"].as_str().unwrap_or("?")
}

fn reasons(v: &Value) -> String {
    v["reasons"].to_string()
}

#[test]
fn a_staged_rollout_goes_holds_while_soaking_stops_on_a_breach_and_goes_again_after_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path());
    let good_success = |batch: &str, from: i64| {
        series(
            "request_success_ratio",
            json!({"service": "web", "batch": batch, "instance": "i-1"}),
            0.9999,
            from,
            6,
        )
    };

    // Batch 1 upgrading: hold.
    let t = now_millis();
    post_events(&r, &[progress("web", 1, "batch_started", t)]);
    let a = argo(&r, "web", "?batch=1");
    assert_eq!(decision(&a), "hold", "{a}");
    assert!(reasons(&a).contains("still being upgraded"), "{a}");

    // Batch 1 done, healthy samples: hold while soaking (3 s for low), then go.
    let t = now_millis();
    let mut events = vec![progress("web", 1, "batch_done", t)];
    events.extend(good_success("1", t));
    post_events(&r, &events);
    let a = argo(&r, "web", "?batch=1");
    assert_eq!(decision(&a), "hold", "{a}");
    assert!(reasons(&a).contains("soaking"), "{a}");
    let left = a["soak_remaining_s"].as_u64().unwrap();
    assert!((1..=3).contains(&left), "{a}");
    assert_eq!(a["tier"], "low");
    assert_eq!(a["success"]["samples"], 6, "{a}");
    // `ripcord gate --wait` blocks through the soak and exits 0 on go.
    let (code, out, err) = ripcord_gate(&r, &["web", "--batch", "1", "--wait", "--interval", "1s"]);
    assert_eq!(code, 0, "stdout {out} stderr {err}");
    assert!(out.starts_with("web: go"), "{out}");
    assert!(
        err.contains("hold (soaking"),
        "progress while waiting: {err}"
    );
    assert_eq!(decision(&argo(&r, "web", "?batch=1")), "go");
    assert_eq!(flagger(&r, "gate", "rev-a").0, 200);
    assert_eq!(flagger(&r, "rollback", "rev-a").0, 409, "no rollback on go");

    // Batch 2 breaks: its 5xx goes up; the incident makes it nogo.
    let t = now_millis();
    let mut events = vec![
        progress("web", 2, "batch_started", t - 2000),
        progress("web", 2, "batch_done", t),
    ];
    events.extend(good_success("2", t));
    events.extend(series(
        "http_5xx_ratio",
        json!({"service": "web", "instance": "i-2", "batch": "2"}),
        0.2,
        t,
        5,
    ));
    post_events(&r, &events);
    let breach = wait_until(Duration::from_secs(10), || {
        decision(&argo(&r, "web", "")) == "nogo"
    });
    let a = argo(&r, "web", "");
    assert!(breach, "{a}");
    assert_eq!(a["batch"], "2");
    assert_eq!(a["incidents"][0]["rule"], "error-rate", "{a}");
    assert!(reasons(&a).contains("is open"), "{a}");
    let (status, body) = flagger(&r, "gate", "rev-a");
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        flagger(&r, "rollback", "rev-a").0,
        200,
        "Flagger's rollback hook: roll back now"
    );
    let (code, out, _) = ripcord_gate(&r, &["web"]);
    assert_eq!(code, 1, "{out}");
    // The low tier's policy rolled the instance back (a dry run here).
    assert!(
        r.decisions()
            .iter()
            .any(|d| d["action"] == "rollback" && d["labels"]["instance"] == "i-2"),
        "{:?}",
        r.decisions()
    );

    // Recovery: 5xx back to 0, the incident resolves, the gate says go again.
    let t = now_millis();
    post_events(
        &r,
        &series(
            "http_5xx_ratio",
            json!({"service": "web", "instance": "i-2", "batch": "2"}),
            0.0,
            t + 5000,
            4,
        ),
    );
    let again = wait_until(Duration::from_secs(10), || {
        decision(&argo(&r, "web", "")) == "go"
    });
    assert!(again, "{}", argo(&r, "web", ""));
    let (code, _, _) = ripcord_gate(&r, &["web", "--batch", "2"]);
    assert_eq!(code, 0);
}

#[test]
fn a_batch_whose_success_drops_is_nogo_and_never_promoted_by_a_human() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path());
    let t = now_millis();
    let mut events = vec![progress("web", 1, "batch_done", t)];
    events.extend(series(
        "request_success_ratio",
        json!({"service": "web", "batch": "1", "instance": "i-1"}),
        0.95,
        t,
        6,
    ));
    post_events(&r, &events);
    let a = argo(&r, "web", "");
    assert_eq!(decision(&a), "nogo", "{a}");
    assert!(reasons(&a).contains("below 99.900%"), "{a}");
    let promoted = client()
        .post(r.url("/api/v1/rollouts/web/promote"))
        .bearer_auth(TOKEN)
        .json(&json!({"by": "alice", "batch": "1"}))
        .send()
        .unwrap();
    assert_eq!(promoted.status(), 200);
    let a: Value = promoted.json().unwrap();
    assert_eq!(decision(&a), "nogo", "a promotion never lifts a nogo: {a}");
}

#[test]
fn a_promotion_binds_to_its_revision_and_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path());
    let t = now_millis();
    // A high-tier batch: one hour of soak.
    let mut events = vec![progress("pay", 3, "batch_done", t)];
    events.extend(series(
        "request_success_ratio",
        json!({"service": "pay", "batch": "3", "instance": "i-9"}),
        1.0,
        t,
        6,
    ));
    post_events(&r, &events);
    let a = argo(&r, "pay", "?revision=A");
    assert_eq!(decision(&a), "hold", "{a}");
    assert_eq!(a["tier"], "high");
    assert!(a["soak_remaining_s"].as_u64().unwrap() > 3500, "{a}");

    // Without the token: refused, nothing recorded.
    let url = r.url("/api/v1/rollouts/pay/promote");
    let body = json!({"by": "alice", "revision": "A", "note": "checked the dashboards"});
    let anon = client().post(&url).json(&body).send().unwrap();
    assert_eq!(anon.status(), 401);
    assert_eq!(decision(&argo(&r, "pay", "?revision=A")), "hold");
    let nobody = client()
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&json!({"by": " ", "revision": "A"}))
        .send()
        .unwrap();
    assert_eq!(nobody.status(), 400, "a promotion says who");

    let ok = client()
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(ok.status(), 200);
    let a = argo(&r, "pay", "?revision=A");
    assert_eq!(decision(&a), "go", "{a}");
    assert_eq!(a["promoted_by"], "alice");
    assert_eq!(a["batch"], "3", "bound to the last batch reported");
    let b = argo(&r, "pay", "?revision=B");
    assert_eq!(decision(&b), "hold", "{b}");
    assert!(reasons(&b).contains("for revision A, not B"), "{b}");
    // Flagger names the revision by its checksum.
    let payload = |checksum: &str| {
        json!({"name": "pay-canary", "namespace": "shop", "phase": "Promoting",
               "checksum": checksum, "metadata": {"service": "pay", "type": "confirm-promotion"}})
    };
    let call = |p: Value| {
        client()
            .post(r.url("/api/v1/flagger/gate"))
            .json(&p)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(call(payload("A")), 200);
    assert_eq!(call(payload("B")), 423, "hold: Flagger keeps waiting");
    // A bad body names what is wrong.
    let bad = client()
        .post(r.url("/api/v1/flagger/gate"))
        .body("{\"namespace\": \"shop\"}")
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().unwrap().contains("name"));
    // The next batch is not promoted by batch 3's promotion.
    let (code, out, _) = ripcord_gate(&r, &["pay", "--revision", "A", "--batch", "4"]);
    assert_eq!(code, 2, "{out}");
    // A hostile service name stays one path segment.
    let (code, _, err) = ripcord_gate(&r, &["../../healthz"]);
    assert_eq!(code, 2, "{err}");
}
