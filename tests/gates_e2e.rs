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
    start_with(dir, "ripcord.yaml", "")
}

/// `ripcord run` with the test's config plus `extra` lines, as `name`.
fn start_with(dir: &Path, name: &str, extra: &str) -> Responder {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(dir.join("rules/gates.yaml"), RULES).unwrap();
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    std::fs::write(
        dir.join(name),
        format!(
            "http:\n  token: {{file: token}}\n  console: {{trusted_user_header: X-Auth-Request-User, trusted_proxies: [127.0.0.1]}}\n\
             tiers:\n  services: {{web: low, pay: high}}\n\
             gates:\n  min_soak: {{low: 3s, high: 1h}}\n  min_samples: 5\n\
             grouping: {{wait: 1s}}\n{extra}"
        ),
    )
    .unwrap();
    Responder::start(
        dir,
        &[
            "--config",
            name,
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
    support::post_events(r, TOKEN, events);
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
    // The low tier's policy rolls the batch's member back (a dry run here)
    // once the batch incident's grouping wait is over, the rollout paused.
    let rolled = wait_until(Duration::from_secs(20), || {
        r.decisions()
            .iter()
            .any(|d| d["action"] == "rollback" && d["labels"]["instance"] == "i-2")
    });
    assert!(rolled, "{:?}", r.decisions());
    assert!(
        r.decisions().iter().any(|d| d["action"] == "pause_rollout"),
        "a functional fault pauses the rollout on every tier: {:?}",
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
    // The incident is over, but the rollout stays paused until a human
    // resumes it: hold, saying so; resumed, go again.
    let over = wait_until(Duration::from_secs(10), || {
        reasons(&argo(&r, "web", "")).contains("paused by ripcord")
            && !reasons(&argo(&r, "web", "")).contains("is open")
    });
    let a = argo(&r, "web", "");
    assert!(over, "{a}");
    assert_eq!(decision(&a), "hold", "{a}");
    let resumed = client()
        .post(r.url("/api/v1/rollouts/web/resume"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"by": "ops"}"#)
        .send()
        .unwrap();
    assert_eq!(
        resumed.status(),
        200,
        "{}",
        resumed.text().unwrap_or_default()
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
    // A hostile service name stays one path segment: the gate itself
    // answers, about a service it has never seen (exit 3).
    let (code, out, err) = ripcord_gate(&r, &["../../healthz"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        out.contains("ripcord has never seen a service named `../../healthz`"),
        "{out}{err}"
    );
}

/// A shipped manifest as JSON (through ripcord's own YAML reader).
fn manifest(rel: &str) -> Value {
    let path = support::repo().join(rel);
    let text = std::fs::read_to_string(&path).unwrap();
    ripcord::config::yaml::parse(&path, &text)
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
        .to_json()
}

/// Evaluates an Argo condition of the shipped form `result.decision == "x"`.
fn argo_condition(cond: &str, result: &Value) -> bool {
    let (lhs, rhs) = cond.split_once("==").expect(cond);
    assert_eq!(lhs.trim(), "result.decision", "{cond}");
    result["decision"] == rhs.trim().trim_matches('"')
}

/// The shipped Argo AnalysisTemplate and Flagger Canary, run as their
/// controllers would run them: Argo renders `{{args.*}}` into the `web`
/// provider's URL, GETs it, and judges `successCondition` /
/// `failureCondition` (neither: Inconclusive); Flagger POSTs its payload to
/// each webhook URL and passes on a status of at most 202.
#[test]
fn the_shipped_argo_template_and_flagger_canary_read_the_gate_as_their_controllers_do() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path());
    let t = manifest("deploy/argo/ripcord-gate.yaml");
    assert_eq!(t["kind"], "AnalysisTemplate");
    let metric = &t["spec"]["metrics"][0];
    assert_eq!(metric["failureLimit"], 0);
    assert_eq!(metric["inconclusiveLimit"], 0, "hold pauses for a human");
    let url_template = metric["provider"]["web"]["url"].as_str().unwrap();
    assert!(
        metric["provider"]["web"].get("jsonPath").is_none(),
        "the whole body is `result`"
    );
    let argo_run = |service: &str, revision: &str| -> &'static str {
        let url = url_template
            .replace("{{args.ripcord}}", &r.url(""))
            .replace("{{args.service}}", service)
            .replace("{{args.revision}}", revision);
        let resp = client().get(url).send().unwrap();
        assert!(resp.status().is_success());
        let result: Value = resp.json().unwrap();
        let ok = argo_condition(metric["successCondition"].as_str().unwrap(), &result);
        let failed = argo_condition(metric["failureCondition"].as_str().unwrap(), &result);
        match (ok, failed) {
            (true, false) => "Successful",
            (false, true) => "Failed",
            (false, false) => "Inconclusive",
            _ => panic!("both conditions hold: {result}"),
        }
    };
    let canary = manifest("deploy/flagger/canary-example.yaml");
    let hooks = canary["spec"]["analysis"]["webhooks"]
        .as_array()
        .unwrap()
        .clone();
    let flagger_run = |kind: &str, checksum: &str| -> bool {
        let hook = hooks.iter().find(|h| h["type"] == kind).unwrap();
        let path = hook["url"]
            .as_str()
            .unwrap()
            .split_once(":9464")
            .unwrap()
            .1
            .to_owned();
        let payload = json!({"name": canary["metadata"]["name"], "namespace": "shop",
                             "phase": "Progressing", "checksum": checksum, "metadata": hook["metadata"]});
        let status = client()
            .post(r.url(&path))
            .json(&payload)
            .send()
            .unwrap()
            .status();
        status.as_u16() <= 202
    };
    let service = canary["spec"]["analysis"]["webhooks"][0]["metadata"]["service"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(service, "payments");

    // Soaking (a medium-tier service by default: 30 min): Inconclusive / blocked.
    let t0 = now_millis();
    let mut events = vec![progress(&service, 1, "batch_done", t0)];
    events.extend(series(
        "request_success_ratio",
        json!({"service": service, "batch": "1", "instance": "i-1"}),
        1.0,
        t0,
        6,
    ));
    post_events(&r, &events);
    assert_eq!(argo_run(&service, "abc123"), "Inconclusive");
    assert!(!flagger_run("confirm-promotion", "abc123"));
    assert!(
        !flagger_run("rollback", "abc123"),
        "hold is no reason to roll back"
    );
    // A human promotes revision abc123: Argo's run of it succeeds, Flagger's
    // gate opens for that checksum only.
    let promoted = client()
        .post(r.url(&format!("/api/v1/rollouts/{service}/promote")))
        .bearer_auth(TOKEN)
        .json(&json!({"by": "carol", "revision": "abc123"}))
        .send()
        .unwrap();
    assert_eq!(promoted.status(), 200);
    assert_eq!(argo_run(&service, "abc123"), "Successful");
    assert!(flagger_run("confirm-promotion", "abc123"));
    assert!(flagger_run("confirm-traffic-increase", "abc123"));
    assert!(!flagger_run("confirm-promotion", "def456"));
    // A failed upgrade: Argo's run fails, Flagger's rollback hook passes.
    post_events(&r, &[progress(&service, 1, "failed", now_millis())]);
    assert_eq!(argo_run(&service, "abc123"), "Failed");
    assert!(flagger_run("rollback", "abc123"));
    assert!(!flagger_run("confirm-rollout", "abc123"));
}

/// Replicas sharing a PostgreSQL journal answer the gate alike, whichever
/// of them took the events: the answer comes from the journal.
#[test]
fn every_replica_of_a_cluster_gives_the_same_answer() {
    let db = support::pg_database("ripcord_gates");
    let journal = format!(
        "journal: {{url: \"{db}\", ca_file: \"{}\"}}\n",
        support::pg_ca()
    );
    let dir = tempfile::tempdir().unwrap();
    let a = start_with(dir.path(), "a.yaml", &journal);
    let b = start_with(dir.path(), "b.yaml", &journal);
    let t = now_millis();
    let mut events = vec![progress("web", 2, "batch_done", t - 10_000)];
    // Samples from the trailing soak (3 s) on: the gate's window starts on
    // the minute that holds `now - soak`, so older ones count only in the
    // later seconds of a minute (this test failed when it ran in a
    // minute's first seconds).
    events.extend(series(
        "request_success_ratio",
        json!({"service": "web", "batch": "2", "instance": "i-1"}),
        0.9999,
        t - 2_000,
        7,
    ));
    post_events(&a, &events);
    let from_a = argo(&a, "web", "?batch=2");
    let from_b = argo(&b, "web", "?batch=2");
    assert_eq!(decision(&from_a), "go", "{from_a}");
    for key in ["decision", "batch", "reasons", "success", "stage", "tier"] {
        assert_eq!(from_a[key], from_b[key], "{key}: {from_a} vs {from_b}");
    }
    // A promotion through one replica counts on the other.
    post_events(&b, &[progress("pay", 1, "batch_done", now_millis())]);
    let promoted = client()
        .post(b.url("/api/v1/rollouts/pay/promote"))
        .bearer_auth(TOKEN)
        .json(&json!({"by": "dana", "revision": "r7"}))
        .send()
        .unwrap();
    assert_eq!(promoted.status(), 200);
    let on_a = argo(&a, "pay", "?revision=r7");
    assert_eq!(on_a["promoted_by"], "dana", "{on_a}");
    assert_eq!(decision(&on_a), "go", "{on_a}");
}

/// A freeze window from the config holds the gate of the services it
/// matches (Argo's web provider and Flagger's confirm hook both hold), and
/// leaves the others alone.
#[test]
fn a_freeze_window_holds_the_gate_of_the_services_it_covers() {
    let dir = tempfile::tempdir().unwrap();
    let r = start_with(
        dir.path(),
        "ripcord.yaml",
        "windows:\n  - name: month-end\n    kind: freeze\n    matchers: ['service=\"web\"']\n    start: \"00:00\"\n    end: \"24:00\"\n    time_zone: Europe/Berlin\n",
    );
    let now = support::now_millis();
    let mut events = vec![progress("web", 1, "batch_done", now - 20_000)];
    events.extend(series(
        "request_success_ratio",
        json!({"service": "web", "batch": "1"}),
        0.9999,
        now - 20_000,
        15,
    ));
    post_events(&r, &events);
    let web = argo(&r, "web", "");
    assert_eq!(decision(&web), "hold", "{web}");
    assert!(reasons(&web).contains("freeze window month-end"), "{web}");
    let (status, body) = flagger(&r, "gate", "rev-1");
    assert_eq!(status, 423, "Flagger reads a hold as 423: {body}");
    let pay = argo(&r, "pay", "");
    assert!(!reasons(&pay).contains("freeze"), "{pay}");
}

/// A human names the batch, not the hash: Argo's pod template hash and
/// Flagger's checksum are not things people type. The console's rollouts
/// page offers "Promote this batch" for the revision the orchestrator last
/// asked about, to someone who may act (here a trusted proxy's user).
#[test]
fn a_promotion_names_the_batch_and_the_console_promotes_the_revision_last_asked_about() {
    let dir = tempfile::tempdir().unwrap();
    let r = start_with(dir.path(), "ripcord.yaml", "");
    let t = now_millis();
    let mut events = vec![
        progress("pay", 3, "batch_done", t),
        progress("shop", 1, "batch_done", t),
    ];
    for service in ["pay", "shop"] {
        let batch = if service == "pay" { "3" } else { "1" };
        events.extend(series(
            "request_success_ratio",
            json!({"service": service, "batch": batch, "instance": "i-9"}),
            1.0,
            t,
            6,
        ));
    }
    post_events(&r, &events);
    assert_eq!(decision(&argo(&r, "pay", "?revision=7f9c5d8b4")), "hold");

    // The batch alone: every revision of it goes on, the next batch not.
    let ok = client()
        .post(r.url("/api/v1/rollouts/pay/promote"))
        .bearer_auth(TOKEN)
        .json(&json!({"by": "bob", "batch": "3"}))
        .send()
        .unwrap();
    assert_eq!(ok.status(), 200);
    for q in ["?revision=7f9c5d8b4", "?revision=a1b2c3", ""] {
        let a = argo(&r, "pay", q);
        assert_eq!(decision(&a), "go", "{q}: {a}");
        assert_eq!(a["promoted_by"], "bob");
    }
    let (code, out, _) = ripcord_gate(&r, &["pay", "--batch", "4"]);
    assert_eq!(code, 2, "{out}");

    // Argo asks about shop's revision 5d6e7f; the console offers that one.
    assert_eq!(decision(&argo(&r, "shop", "?revision=5d6e7f")), "hold");
    let as_erin = |req: reqwest::blocking::RequestBuilder| {
        req.header("X-Auth-Request-User", "erin").send().unwrap()
    };
    let page = as_erin(client().get(r.url("/rollouts"))).text().unwrap();
    let form = page
        .split("action=\"/rollouts/shop/promote\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no promote form for shop: {page}"));
    assert!(
        form.contains("name=\"revision\" value=\"5d6e7f\""),
        "{form}"
    );
    assert!(form.contains("Promote this batch"), "{form}");
    let csrf = form
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    let no_redirect = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let promoted = as_erin(
        no_redirect
            .post(r.url("/rollouts/shop/promote"))
            .header("Sec-Fetch-Site", "same-origin")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("csrf={csrf}&batch=1&revision=5d6e7f")),
    );
    assert_eq!(
        promoted.status(),
        303,
        "{}",
        promoted.text().unwrap_or_default()
    );
    let a = argo(&r, "shop", "?revision=5d6e7f");
    assert_eq!(decision(&a), "go", "{a}");
    assert_eq!(
        a["promoted_by"], "erin",
        "the proxy's user, not a form field"
    );
    // Bound to the revision it was offered for.
    let other = argo(&r, "shop", "?revision=000000");
    assert_eq!(decision(&other), "hold", "{other}");
    assert!(
        reasons(&other).contains("for revision 5d6e7f, not 000000"),
        "{other}"
    );
    // A reader is offered nothing; a form without the proxy's user acts on nothing.
    let anon = client()
        .get(r.url("/rollouts"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(!anon.contains("Promote this batch"), "{anon}");
}
