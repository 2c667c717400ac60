//! The rollout gate as Argo Rollouts and Flagger see it, through their own
//! code: `tests/peers` (a Go program, versions pinned in its go.mod) runs
//! Argo's `metricproviders/webmetric` with `utils/evaluate` on the shipped
//! `deploy/argo/ripcord-gate.yaml`, and Flagger's `pkg/controller`
//! webhook caller on the shipped `deploy/flagger/canary-example.yaml`,
//! against a live `ripcord run` whose gate says go, hold, nogo, and then is
//! down. The verdicts must map as the README says.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Responder, now_millis, post_events, repo, wait_until};

const TOKEN: &str = "peers-t0ken";
const SERVICE: &str = "payments";

/// Builds the Go harness (cached by Go after the first build) and returns
/// its path; fails saying what to install when Go is missing.
fn harness() -> PathBuf {
    let out = repo().join("target/peers/peers");
    let build = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(repo().join("tests/peers"))
        .output()
        .unwrap_or_else(|e| {
            panic!("go is not installed ({e}): install Go 1.26 (scripts/setup says how)")
        });
    assert!(
        build.status.success(),
        "building tests/peers failed (scripts/setup fetches its modules):\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    out
}

/// What Argo's web provider measured and what each of Flagger's hooks did.
struct Verdicts {
    /// The measurement's phase: Successful, Failed, Inconclusive or Error.
    argo: String,
    /// Hook type -> whether Flagger's CallWebhook returned no error.
    flagger: Vec<(String, bool, String)>,
}

impl Verdicts {
    fn passed(&self, kind: &str) -> Vec<bool> {
        self.flagger
            .iter()
            .filter(|(t, _, _)| t == kind)
            .map(|(_, p, _)| *p)
            .collect()
    }
}

fn ask(harness: &Path, base: &str) -> Verdicts {
    let out = Command::new(harness)
        .args(["-ripcord", base, "-service", SERVICE, "-revision", "rev-1"])
        .arg("-argo")
        .arg(repo().join("deploy/argo/ripcord-gate.yaml"))
        .arg("-flagger")
        .arg(repo().join("deploy/flagger/canary-example.yaml"))
        .output()
        .expect("run the peers harness");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    println!("{}", String::from_utf8_lossy(&out.stdout));
    let argo = lines
        .iter()
        .find(|l| l["peer"] == "argo")
        .expect("an Argo measurement");
    Verdicts {
        argo: argo["phase"].as_str().unwrap().to_owned(),
        flagger: lines
            .iter()
            .filter(|l| l["peer"] == "flagger")
            .map(|l| {
                (
                    l["type"].as_str().unwrap().to_owned(),
                    l["passed"].as_bool().unwrap(),
                    l["error"].as_str().unwrap().to_owned(),
                )
            })
            .collect(),
    }
}

fn progress(batch: u32, stage: &str, ts: i64) -> Value {
    json!({"kind": "progress", "ts": ts, "stage": stage, "done": batch * 10, "total": 100,
           "labels": {"service": SERVICE, "batch": batch.to_string(), "batches": "3"}})
}

fn success(batch: u32, value: f64, from: i64) -> Vec<Value> {
    (0..6)
        .map(|i| {
            json!({"metric": "request_success_ratio", "value": value, "ts": from + i * 1000,
                   "labels": {"service": SERVICE, "batch": batch.to_string(), "instance": "i-1"}})
        })
        .collect()
}

fn gate(r: &Responder) -> String {
    reqwest::blocking::get(r.url(&format!("/api/v1/rollouts/{SERVICE}/gate")))
        .and_then(|x| x.json::<Value>())
        .map(|v| v["decision"].as_str().unwrap_or("?").to_owned())
        .unwrap_or_default()
}

const CONFIRM: [&str; 3] = [
    "confirm-rollout",
    "confirm-traffic-increase",
    "confirm-promotion",
];

#[test]
fn argo_and_flaggers_own_code_read_go_hold_nogo_and_down_as_documented() {
    let peers = harness();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    std::fs::write(
        dir.path().join("ripcord.yaml"),
        format!(
            "http:\n  token: {{file: token}}\ntiers:\n  services: {{{SERVICE}: low}}\n\
             gates:\n  min_soak: {{low: 2s}}\n  min_samples: 5\n"
        ),
    )
    .unwrap();
    let r = Responder::start(
        dir.path(),
        &[
            "--config",
            "ripcord.yaml",
            "--state",
            "state.db",
            "--no-kafka",
            "--dry-run",
        ],
    );
    let base = format!("http://{}", r.http);

    // hold: batch 1 is being upgraded.
    post_events(&r, TOKEN, &[progress(1, "batch_started", now_millis())]);
    assert_eq!(gate(&r), "hold");
    let v = ask(&peers, &base);
    assert_eq!(v.argo, "Inconclusive", "Argo pauses the rollout on hold");
    for kind in CONFIRM {
        assert_eq!(
            v.passed(kind),
            [false],
            "{kind} waits on hold: {:?}",
            v.flagger
        );
    }
    assert_eq!(v.passed("rollback"), [false], "no rollback on hold");

    // go: batch 1 done, healthy, soaked.
    let t = now_millis();
    let mut events = vec![progress(1, "batch_done", t)];
    events.extend(success(1, 0.9999, t));
    post_events(&r, TOKEN, &events);
    assert!(wait_until(Duration::from_secs(10), || gate(&r) == "go"));
    let v = ask(&peers, &base);
    assert_eq!(v.argo, "Successful", "Argo's step goes on at go");
    for kind in CONFIRM {
        assert_eq!(
            v.passed(kind),
            [true],
            "{kind} passes on go: {:?}",
            v.flagger
        );
    }
    assert_eq!(v.passed("rollback"), [false], "no rollback on go");

    // nogo: batch 2's success rate drops below the plan's 99.9 %.
    let t = now_millis();
    let mut events = vec![progress(2, "batch_done", t)];
    events.extend(success(2, 0.95, t));
    post_events(&r, TOKEN, &events);
    assert_eq!(gate(&r), "nogo");
    let v = ask(&peers, &base);
    assert_eq!(v.argo, "Failed", "Argo aborts the rollout on nogo");
    for kind in CONFIRM {
        assert_eq!(
            v.passed(kind),
            [false],
            "{kind} stops on nogo: {:?}",
            v.flagger
        );
    }
    assert_eq!(
        v.passed("rollback"),
        [true],
        "Flagger's rollback hook rolls back on nogo"
    );

    // down: nothing answers.
    let (status, _, _, err) = r.terminate(Duration::from_secs(15));
    assert!(status.success(), "{}", err.text());
    let v = ask(&peers, &base);
    assert_eq!(
        v.argo, "Error",
        "an unreachable gate is an Error measurement"
    );
    for (kind, passed, error) in &v.flagger {
        assert!(!passed, "{kind} passed with ripcord down");
        assert!(!error.is_empty(), "{kind}: no error with ripcord down");
    }
}
