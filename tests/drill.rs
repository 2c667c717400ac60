//! `ripcord drill` as its own process: a bad batch through the live
//! responder (embedded broker, journal, action layer), the review it
//! writes and its exit status.

mod support;

use std::path::Path;
use std::process::Command;

use support::{Capture, ripcord_bin};

/// `ripcord drill <args>` in `dir`: (exit code, stdout, stderr).
fn drill(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(ripcord_bin())
        .arg("drill")
        .args(["--speed", "60", "--timeout", "90s"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run ripcord drill");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A high-tier config whose first paging step is an SMS and whose
/// rollback is a script recording its instance.
fn phone_config(dir: &Path, stand_in: &Capture) {
    let calls = dir.join("calls.log");
    let script = dir.join("rollback.sh");
    std::fs::write(&script, format!("echo \"$1\" >> '{}'\n", calls.display())).unwrap();
    std::fs::write(
        dir.join("ripcord.yaml"),
        format!(
            r#"channels:
  chat: {{type: webhook, url: "{base}/chat", rate: 100/s}}
  sms: {{type: sms, provider: webhook, to: ["+14155550100"], url: "{base}/sms", rate: 100/s}}
  voice: {{type: voice, provider: webhook, to: ["+14155550100"], url: "{base}/voice", rate: 100/s}}
routing:
  high: {{notify: [chat], approve: [chat, sms]}}
escalation:
  high: [{{after: 0s, channels: [sms, voice]}}]
executors:
  rollback:
    command: {{argv: [/bin/sh, "{script}", "{{instance}}"], timeout: 30s}}
"#,
            base = stand_in.base(),
            script = script.display()
        ),
    )
    .unwrap();
}

#[test]
fn a_drill_never_rings_a_phone_unless_asked_and_runs_the_configured_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let stand_in = Capture::start();
    phone_config(dir.path(), &stand_in);
    // The configured executors would roll back a real instance: one must
    // be named.
    let (code, _, err) = drill(dir.path(), &["--config", "ripcord.yaml", "--tier", "high"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--instance"), "{err}");

    let args = [
        "--config",
        "ripcord.yaml",
        "--tier",
        "high",
        "--instance",
        "i-staging-7",
    ];
    let (code, _, err) = drill(dir.path(), &args);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("phones not rung (drill): sms, voice"), "{err}");
    assert!(stand_in.bodies("/sms").is_empty() && stand_in.bodies("/voice").is_empty());
    assert!(
        !stand_in.bodies("/chat").is_empty(),
        "chat still hears of it"
    );
    let calls = std::fs::read_to_string(dir.path().join("calls.log")).unwrap();
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        ["i-staging-7"],
        "rolled back once"
    );

    let mut asked = args.to_vec();
    asked.push("--page-phones");
    let (code, _, err) = drill(dir.path(), &asked);
    assert_eq!(code, 0, "{err}");
    assert!(
        !stand_in.bodies("/sms").is_empty(),
        "asked: the phones ring"
    );
}

#[test]
fn a_drill_on_every_tier_meets_the_plans_budgets_and_writes_its_review() {
    let dir = tempfile::tempdir().unwrap();
    for tier in ["low", "medium", "high"] {
        let (state, out) = (format!("{tier}.db"), format!("{tier}.md"));
        let (code, _, err) = drill(
            dir.path(),
            &[
                "--tier",
                tier,
                "--dry-run",
                "--state",
                &state,
                "--out",
                &out,
            ],
        );
        assert_eq!(code, 0, "{tier}: {err}");
        assert!(err.contains("drill: every budget met"), "{tier}: {err}");
        said_up_front_then_phase_by_phase(tier, &err);
        // The staged verification after the rollback, on every tier; the
        // sample check of the healthy batch on the medium tier only.
        assert!(
            err.contains("drill: verification after rollback passed: system ok ",)
                && err.contains(", business ok "),
            "{tier}: {err}"
        );
        assert_eq!(
            err.contains("drill: sample check of ripcord-drill batch 0: 1 of 1 passed (i-drill-"),
            tier == "medium",
            "{tier}: {err}"
        );
        let review = std::fs::read_to_string(dir.path().join(&out)).unwrap();
        assert!(
            review.contains("> **DRILL**: played by `ripcord drill`"),
            "{review}"
        );
        assert!(
            review.contains(&format!("| tier / severity | {tier} /")),
            "{review}"
        );
        assert!(review.contains("| rollback done |"), "{tier}: {review}");
        assert!(
            review.contains("| recovered: incident resolved |"),
            "{tier}: {review}"
        );
        assert!(review.contains("Every budget met."), "{tier}: {review}");
        if tier != "low" {
            assert!(
                review.contains("approved by drill via api"),
                "{tier}: {review}"
            );
            assert!(
                review.contains("rollback started within 3m of the approval"),
                "{review}"
            );
        }
        if tier == "high" {
            assert!(review.contains("| pause\\_rollout started |"), "{review}");
            assert!(
                review.contains("on-call reached within 5m of the breach"),
                "{review}"
            );
        }
    }
}

/// stderr says first how long the drill takes at its speed (from the
/// tier's rules: detection and recovery, in event time), then one line per
/// phase as it comes, each with the time since the scenario began; no log
/// noise.
fn said_up_front_then_phase_by_phase(tier: &str, err: &str) {
    let lines: Vec<&str> = err.lines().collect();
    let at = |prefix: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{tier}: no line `{prefix}…`:\n{err}"))
    };
    let eta = at("drill: about ");
    let line = lines[eta];
    assert!(
        line.contains(" at x60 (the batch goes bad 30s, detection ")
            && line.contains(", recovery ")
            && line.ends_with(" of event time)"),
        "{tier}: {line}"
    );
    let mut last = eta;
    for phase in [
        "drill: the scenario is playing (after ",
        "drill: incident ",
        "drill: rollback done; the instance reports healthy again (after ",
        "drill: incident ",
    ] {
        let next = last
            + 1
            + lines[last + 1..]
                .iter()
                .position(|l| l.starts_with(phase) && l.ends_with(')'))
                .unwrap_or_else(|| panic!("{tier}: no `{phase}…` after line {last}:\n{err}"));
        last = next;
    }
    assert!(lines[last].contains(" recovered (after "), "{tier}: {err}");
    assert!(
        !lines
            .iter()
            .any(|l| l.contains(" INFO ") || l.contains(" DEBUG ")),
        "{tier}: log noise on stderr:\n{err}"
    );
}

#[test]
fn a_drill_that_misses_a_budget_exits_1_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    // Detection alone takes the rule's two minutes: a one-minute budget
    // for the whole low-tier rollback cannot be met.
    std::fs::write(
        dir.path().join("ripcord.yaml"),
        "budgets:\n  low_rolled_back: 1m\n",
    )
    .unwrap();
    let (code, review, err) = drill(
        dir.path(),
        &["--tier", "low", "--dry-run", "--config", "ripcord.yaml"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("drill: MISSED: low risk: rolled back within 1m of the fault"),
        "{err}"
    );
    assert!(review.contains("**MISSED**"), "{review}");
}

#[test]
fn a_drill_can_wait_for_a_human_to_approve() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(ripcord_bin())
        .args([
            "drill",
            "--speed",
            "60",
            "--timeout",
            "120s",
            "--tier",
            "medium",
            "--dry-run",
        ])
        .args(["--approve", "wait", "--state", "drill.db"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut incident = None;
    let mut said = Vec::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        said.push(line.clone());
        if let Some(rest) = line.strip_prefix("drill: waiting for a human to approve: POST ") {
            let url = rest.split_whitespace().next().unwrap().to_owned();
            let id = url.split('/').nth(6).unwrap().to_owned();
            incident = Some((id, url));
            break;
        }
    }
    let (id, api) = incident.unwrap_or_else(|| panic!("never asked:\n{}", said.join("\n")));
    // Through the drill's own API, as a person with the link or the token
    // would: on the drill's clock.
    let resp = reqwest::blocking::Client::new()
        .post(&api)
        .json(&serde_json::json!({"by": "alice", "note": "blast radius checked"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
    let out = child.wait_with_output().unwrap();
    let review = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{review}");
    assert!(
        review.contains(&format!("# Incident review: {id}")),
        "{review}"
    );
    assert!(review.contains("approved by alice via api"), "{review}");
    assert!(review.contains("Every budget met."), "{review}");
}

#[test]
fn a_recorded_scenario_is_played_with_its_timing_and_its_recovery_after_the_rollback() {
    let dir = tempfile::tempdir().unwrap();
    // A captured incident: `shop`'s i-shop-2 at 40% errors, every 15 s for
    // four minutes; the recovery after the marker.
    let mut lines = vec![
        r#"{"kind":"progress","ts":"2026-11-21T10:00:00Z","stage":"batch_started","labels":{"service":"shop","batch":"3","tier":"low"}}"#.to_owned(),
    ];
    for k in 0..16 {
        lines.push(format!(
            r#"{{"metric":"http_5xx_ratio","value":0.4,"ts":{},"labels":{{"service":"shop","instance":"i-shop-2","tier":"low"}}}}"#,
            1_795_255_200_000i64 + 30_000 + k * 15_000
        ));
    }
    lines.push(r#"{"drill":"after_rollback"}"#.to_owned());
    for k in 0..20 {
        lines.push(format!(
            r#"{{"metric":"http_5xx_ratio","value":0.0,"ts":{},"labels":{{"service":"shop","instance":"i-shop-2","tier":"low"}}}}"#,
            1_795_255_500_000i64 + k * 15_000
        ));
    }
    std::fs::write(dir.path().join("captured.jsonl"), lines.join("\n")).unwrap();
    let (code, review, err) = drill(
        dir.path(),
        &[
            "--scenario",
            "captured.jsonl",
            "--dry-run",
            "--state",
            "drill.db",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(review.contains("captured.jsonl"), "{review}");
    assert!(
        review.contains("instance=i-shop-2, service=shop"),
        "{review}"
    );
    assert!(review.contains("| batch 3 started |"), "{review}");
    assert!(
        review.contains("| recovered: incident resolved |"),
        "{review}"
    );
}
