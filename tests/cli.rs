//! The command-line contract: `check`, `test` and `replay`, run as the
//! real binary on fixtures.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn ripcord(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ripcord"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs ripcord")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn decisions(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
        })
        .collect()
}

#[test]
fn check_accepts_the_shipped_rules_and_example_config() {
    let out = ripcord(&["check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("ok: config (defaults),"),
        "{}",
        text(&out.stdout)
    );
    let out = ripcord(&["check", "--rules", "rules"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn check_reports_every_error_with_file_and_line() {
    let out = ripcord(&[
        "check",
        "--config",
        "tests/fixtures/config-bad.yaml",
        "--rules",
        "tests/fixtures/rules-bad",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for want in [
        "tests/fixtures/config-bad.yaml:2:21: config: engine: allowed_lateness: `forever` is not a duration",
        "tests/fixtures/config-bad.yaml:4:12: config: tiers: default: unknown tier `extreme`",
        "tests/fixtures/config-bad.yaml:6:19: config: policy: low: unknown action `explode`",
        "tests/fixtures/rules-bad/also-broken.yaml:1:13: tier: unknown tier `extreme`",
        "tests/fixtures/rules-bad/also-broken.yaml:6:16: rule `cpu`: condition: compares with the baseline, but the rule has no `baseline:`",
        "tests/fixtures/rules-bad/broken.yaml:6:16: rule `cpu`: aggregate: unknown aggregation `p101`",
        "tests/fixtures/rules-bad/broken.yaml:7:16: rule `cpu`: condition: `> 80 percent`",
        "tests/fixtures/rules-bad/broken.yaml:12:5: rule `mem`: unknown key `widow`; did you mean `window`?",
        "ripcord: 8 errors",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

/// `ripcord check --config CONFIG` (from the repository, with `env`) must
/// fail with each of `want` on stderr; its output and stderr.
fn check_fails(
    config: &str,
    env: &[(&str, &str)],
    want: &[&str],
) -> (std::process::Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ripcord"))
        .args(["check", "--config", config])
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("runs ripcord");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for w in want {
        assert!(err.contains(w), "missing {w:?} in:\n{err}");
    }
    (out, err)
}

/// Staged verification's mistakes, each with its file and line, all at
/// once.
#[test]
fn check_reports_every_verify_stage_error_with_file_and_line() {
    check_fails(
        "tests/fixtures/config-bad-verify.yaml",
        &[],
        &[
            "tests/fixtures/config-bad-verify.yaml:7:",
            "a check's timeout goes inside it",
            "tests/fixtures/config-bad-verify.yaml:8:",
            "`system` names two stages",
            "tests/fixtures/config-bad-verify.yaml:9:",
            "a stage needs a `name`",
            "tests/fixtures/config-bad-verify.yaml:10:",
            "a stage is `windows: true` or one `command`/`http` check, not both",
            "tests/fixtures/config-bad-verify.yaml:11:",
            "retries",
            "ripcord: 5 errors",
        ],
    );
}

#[test]
fn check_reports_a_bad_vendor_when_and_an_unknown_vendor_channel_with_file_and_line() {
    check_fails(
        "tests/fixtures/config-bad-vendor.yaml",
        &[],
        &[
            "tests/fixtures/config-bad-vendor.yaml:4:9: config: vendor: when: `later`: expected approved or at_once",
            "tests/fixtures/config-bad-vendor.yaml:5:12: config: vendor.channel: no channel named `nowhere` under `channels:`",
            "ripcord: 2 errors",
        ],
    );
}

/// librdkafka judges `kafka.properties` at `check` time (names, values,
/// and what this build supports: TLS and SCRAM need OpenSSL), the log
/// filter is parsed as `run` parses it, and a credential never appears.
#[test]
fn check_validates_kafka_properties_and_log_filter_without_printing_secrets() {
    let (out, err) = check_fails(
        "tests/fixtures/config-kafka.yaml",
        &[("RIPCORD_TEST_KAFKA_PASSWORD", "hunter2-do-not-print")],
        &[
            "tests/fixtures/config-kafka.yaml:12:26: config: kafka: properties: fetch.wait.max.msec: librdkafka rejects it: No such configuration property",
            "tests/fixtures/config-kafka.yaml:13:22: config: kafka: properties: fetch.min.bytes: librdkafka rejects it: Invalid value",
            "tests/fixtures/config-kafka.yaml:15:10: config: log: level: `ripcord=loud` is not a log filter",
            "ripcord: 3 errors",
        ],
    );
    let all = format!("{err}{}", text(&out.stdout));
    assert!(!all.contains("hunter2"), "the password leaked:\n{all}");
    assert!(
        !all.contains("sasl_ssl"),
        "TLS/SASL must be supported by this build:\n{all}"
    );
}

/// `kafka.group_protocol: consumer` (KIP-848) and the classic protocol's
/// client settings cannot go together: each is named, with its line, at
/// `check`; an unknown protocol is named too.
#[test]
fn check_refuses_classic_group_settings_with_the_consumer_protocol() {
    check_fails(
        "tests/fixtures/config-kafka-848.yaml",
        &[],
        &[
            "tests/fixtures/config-kafka-848.yaml:8:25: config: kafka: properties: session.timeout.ms: applies to kafka.group_protocol: classic only",
            "tests/fixtures/config-kafka-848.yaml:9:36: config: kafka: properties: partition.assignment.strategy: applies to kafka.group_protocol: classic only",
            "tests/fixtures/config-kafka-848.yaml:10:21: config: kafka: properties: group.protocol: is set by ripcord: use kafka.group_protocol",
            "ripcord: 3 errors",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ripcord.yaml");
    std::fs::write(&config, "kafka:\n  group_protocol: cooperative\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ripcord"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("runs ripcord");
    let err = text(&out.stderr);
    assert!(
        err.contains("2:19: config: kafka: group_protocol: `cooperative` is not a group protocol: classic or consumer (KIP-848)"),
        "{err}"
    );
}

/// An executor whose program is missing or cannot be executed is a config
/// error at `check` (and before `run` binds a port), not a failed rollback
/// in the middle of an incident. Programs that exist pass.
#[test]
fn check_refuses_executors_whose_program_cannot_run() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("rollback.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = dir.path().join("ripcord.yaml");
    std::fs::write(
        &config,
        format!(
            "executors:\n  rollback:\n    command: {{argv: [{}, \"{{instance}}\"]}}\n  pause_rollout:\n    command: {{argv: [/nonexistent/pause-rollout.sh, \"{{service}}\"]}}\n  resume_rollout:\n    command: {{argv: [no-such-program-on-path, \"{{service}}\"]}}\n",
            script.display()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let out = ripcord(&["check", "--config", cfg]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for want in [
        format!(
            "{cfg}:3:22: config: executors: rollback: command: argv: the program `{}` is not an executable file",
            script.display()
        ),
        format!(
            "{cfg}:5:22: config: executors: pause_rollout: command: argv: the program `/nonexistent/pause-rollout.sh` does not exist"
        ),
        format!(
            "{cfg}:7:22: config: executors: resume_rollout: command: argv: the program `no-such-program-on-path` is not on PATH"
        ),
        "ripcord: 3 errors".to_owned(),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }

    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let fixed = std::fs::read_to_string(&config)
        .unwrap()
        .replace("/nonexistent/pause-rollout.sh", "/bin/sh")
        .replace("no-such-program-on-path", "sh");
    std::fs::write(&config, fixed).unwrap();
    let out = ripcord(&["check", "--config", cfg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn test_runs_the_shipped_cases() {
    let out = ripcord(&["test"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    assert!(
        !stdout.contains("note"),
        "every shipped rule has a case: {stdout}"
    );
    let passed: usize = stdout
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("summary line");
    assert!(passed >= 18, "{stdout}");
}

#[test]
fn test_reports_failing_cases_and_exits_non_zero() {
    let out = ripcord(&["test", "--rules", "tests/fixtures/rules-failing"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("FAIL  tests/fixtures/rules-failing/wrong.yaml:9 expects the wrong action"),
        "{stdout}"
    );
    assert!(
        stdout.contains("action rollback, expected page"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok    tests/fixtures/rules-failing/wrong.yaml:14 expects the right ones"),
        "{stdout}"
    );
    assert!(stdout.contains("1 passed, 1 failed"), "{stdout}");
}

#[test]
fn replay_prints_decisions_and_warns_about_malformed_lines() {
    let out = ripcord(&["replay", "--events", "tests/fixtures/mixed.jsonl"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    for want in [
        "line 4: skipped: field `value` expected a number, got string \"lots\"",
        "line 5: skipped: not valid JSON",
        "line 8: skipped: field `labels.batch` expected a string, got integer 2",
        "line 15: skipped: not valid JSON",
        "replay: 16 lines, 11 events, 4 malformed, 6 decisions",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    let d = decisions(&out);
    let summary: Vec<(&str, &str, &str)> = d
        .iter()
        .map(|d| {
            (
                d["at"].as_str().unwrap(),
                d["action"].as_str().unwrap(),
                d["rule"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("2026-11-21T10:02:15Z", "pause_rollout", "http-5xx.high"),
            ("2026-11-21T10:02:15Z", "page", "http-5xx.high"),
            ("2026-11-21T10:02:15Z", "request_approval", "http-5xx.high"),
            ("2026-11-21T10:02:00Z", "notify", "progress"),
            ("2026-11-21T10:02:10Z", "rollback", "alertmanager-forwarded"),
            ("2026-11-21T10:02:10Z", "notify", "alertmanager-forwarded"),
        ]
    );
    let first = &d[0];
    assert_eq!(first["tier"], "high");
    assert_eq!(
        first["severity"], "severe",
        "0.4 over the last minute > 20%"
    );
    assert_eq!(first["labels"]["instance"], "i-0a1");
    assert_eq!(first["labels"]["service"], "checkout");
    assert_eq!(first["threshold"], 0.2, "the severe threshold it crossed");
    assert!((first["value"].as_f64().unwrap() - 0.4).abs() < 1e-9);
    assert!(first["incident"].as_str().unwrap().starts_with("inc-"));
    assert_eq!(d[0]["incident"], d[2]["incident"]);
    assert_ne!(d[0]["incident"], d[4]["incident"]);
    assert_eq!(d[3]["incident"], Value::Null);
    assert_eq!(d[4]["tier"], "low");
}

/// `ripcord replay --events -` with `events` on its standard input.
fn replay_stdin(events: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ripcord"))
        .args(["replay", "--events", "-"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(events).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn replay_reads_standard_input() {
    let out = replay_stdin(br#"{"metric":"up","value":0,"ts":"2026-11-21T10:00:00Z","labels":{"service":"web","instance":"i-1","tier":"low"}}
{"metric":"up","value":0,"ts":"2026-11-21T10:01:00Z","labels":{"service":"web","instance":"i-1","tier":"low"}}
{"metric":"up","value":0,"ts":"2026-11-21T10:02:00Z","labels":{"service":"web","instance":"i-1","tier":"low"}}
"#);
    assert!(out.status.success());
    let d = decisions(&out);
    assert_eq!(d.len(), 2, "{}", text(&out.stdout));
    assert_eq!(d[0]["action"], "rollback");
    assert_eq!(d[0]["at"], "2026-11-21T10:01:00Z");
}

#[test]
fn replay_of_the_example_incident() {
    let out = ripcord(&[
        "replay",
        "--events",
        "deploy/examples/upgrade-incident.jsonl",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let d = decisions(&out);
    let find = |action: &str, rule: &str| {
        d.iter()
            .filter(|x| x["action"] == action && x["rule"] == rule)
            .map(|x| {
                (
                    x["at"].as_str().unwrap().to_owned(),
                    x["labels"]["instance"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect::<Vec<_>>()
    };
    // i-web-3's batch is one incident: its rollout paused at the breach,
    // its member rolled back after the grouping wait (30 s).
    assert_eq!(
        find("pause_rollout", "service-down"),
        vec![("2026-11-21T10:09:15Z".into(), "".into())]
    );
    assert_eq!(
        find("rollback", "service-down"),
        vec![("2026-11-21T10:09:45Z".into(), "i-web-3".into())]
    );
    let pause = d
        .iter()
        .find(|x| x["action"] == "pause_rollout" && x["rule"] == "http-5xx.high")
        .unwrap();
    assert_eq!(pause["at"], "2026-11-21T10:21:45Z");
    assert_eq!(pause["instances"], serde_json::json!(["i-pay-2"]));
    assert_eq!(find("resolve", "http-5xx.high").len(), 1);
    assert_eq!(
        find("pause_rollout", "alertmanager-forwarded").len(),
        1,
        "delivered twice, fired once"
    );
    assert!(
        !d.iter()
            .any(|x| x["action"] == "rollback" && x["tier"] == "high")
    );
}

/// The plan's core indicator "DB transaction throughput", through the
/// shipped rules: a busy service whose throughput falls to a third of its
/// hour is rolled back; a quiet one (an hour under the 5/s floor) halving
/// at night is left alone.
#[test]
fn replay_catches_db_throughput_falling_against_its_hour_above_the_floor() {
    let mut events = String::new();
    for minute in 0..78 {
        let ts = format!("2026-11-21T{:02}:{:02}:00Z", 10 + minute / 60, minute % 60);
        for (instance, before, after) in [("i-busy", 200.0, 60.0), ("i-quiet", 3.0, 0.5)] {
            let value = if minute < 70 { before } else { after };
            events.push_str(&format!(
                r#"{{"metric":"db_transactions_per_second","value":{value},"ts":"{ts}","labels":{{"service":"orders","instance":"{instance}","tier":"low"}}}}"#
            ));
            events.push('\n');
        }
    }
    let out = replay_stdin(events.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let d = decisions(&out);
    let rollbacks: Vec<&Value> = d.iter().filter(|x| x["action"] == "rollback").collect();
    assert_eq!(rollbacks.len(), 1, "{}", text(&out.stdout));
    let r = rollbacks[0];
    assert_eq!(r["rule"], "db-throughput-drop");
    assert_eq!(r["labels"]["instance"], "i-busy");
    assert_eq!(r["severity"], "functional");
    assert_eq!(r["threshold"], 100.0, "half of the hour's 200/s");
    assert!(
        d.iter().all(|x| x["labels"]["instance"] != "i-quiet"),
        "the quiet night acted: {}",
        text(&out.stdout)
    );
}

#[test]
fn replay_of_a_missing_file_fails_clearly() {
    let out = ripcord(&["replay", "--events", "no/such/file.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot open no/such/file.jsonl"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn replay_with_bad_rules_reports_and_exits_one() {
    let out = ripcord(&[
        "replay",
        "--events",
        "tests/fixtures/mixed.jsonl",
        "--rules",
        "tests/fixtures/rules-bad",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("unknown aggregation `p101`"));
}

/// A production config checked on a laptop without its secret files: one
/// warning per secret, no error, and no spurious "no channel named" error
/// at the wrong line; a real unknown channel is reported where it is used.
#[test]
fn check_warns_about_unreadable_secrets_and_points_at_unknown_channels() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ripcord.yaml");
    std::fs::write(
        &config,
        "channels:\n  ops-chat:\n    type: dingtalk\n    webhook: {file: /nonexistent/dingtalk-webhook}\n\
         routing:\n  low: {notify: [ops-chat]}\n  high: {notify: [ops-chat, ops-chatt]}\n",
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let out = ripcord(&["check", "--config", cfg]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("warning: {cfg}:4: channel `ops-chat`: webhook: cannot read secret file /nonexistent/dingtalk-webhook")),
        "{err}"
    );
    assert!(err.contains("ripcord run` needs it"), "{err}");
    assert!(
        err.contains(&format!(
            "{cfg}:7:29: config: routing.high: no channel named `ops-chatt`"
        )),
        "{err}"
    );
    assert!(!err.contains("`ops-chat` under"), "spurious error: {err}");
    assert!(err.contains("ripcord: 1 error\n"), "{err}");

    // Without the typo, the same config passes `check` (a warning only)…
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace(", ops-chatt]", "]"),
    )
    .unwrap();
    let out = ripcord(&["check", "--config", cfg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("11 rules in 1 file"),
        "{}",
        text(&out.stdout)
    );
    // …but `run` needs the secret: an error before any port is bound.
    let out = ripcord(&["run", "--config", cfg, "--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot read secret file /nonexistent/dingtalk-webhook"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn resume_of_a_rollout_ripcord_never_paused_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    drop(ripcord::journal::SqliteJournal::open(&state, false).unwrap());
    let out = ripcord(&[
        "resume",
        "no-such-service",
        "--by",
        "alice",
        "--state",
        state.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("ripcord has not paused a rollout of `no-such-service`; nothing resumed"),
        "{err}"
    );
    assert!(
        !text(&out.stdout).contains("resumed"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn replay_prints_readable_lines_on_request() {
    let out = ripcord(&[
        "replay",
        "--events",
        "tests/fixtures/mixed.jsonl",
        "--output",
        "pretty",
    ]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{stdout}");
    assert!(
        lines[0].starts_with("2026-11-21 10:02:15 UTC  HIGH   severe     pause_rollout"),
        "{stdout}"
    );
    assert!(
        lines[0].contains("checkout/i-0a1: http_5xx_ratio avg over 1m is 0.4 (> 0.2)"),
        "{stdout}"
    );
    assert!(!stdout.contains('\x1b'), "no colour on a pipe: {stdout:?}");
}

#[test]
fn a_rule_test_can_expect_escalated_from() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("r.yaml"),
        r#"
rules:
  - name: errs
    match: {metric: e}
    window: 1m
    condition: "> 5%"
    escalate: {severe: "> 20%"}
tests:
  - name: worsens
    series:
      - {metric: e, labels: {service: s, instance: i, tier: medium}, start: "2026-11-21T10:00:00Z", interval: 30s, values: "0.1x2 0.9x2"}
    expect:
      - {action: request_approval, severity: functional}
      - {action: notify}
      - {action: notify, severity: severe, escalated_from: minor, threshold: 0.2}
"#,
    )
    .unwrap();
    let out = ripcord(&["test", "--rules", dir.path().to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("escalated_from functional, expected minor"),
        "{stdout}"
    );
}

/// A placeholder no decision or message will ever fill is refused by
/// `check`, with its line and the name it was meant to be: in a webhook
/// channel's body and an SMS gateway's body, and in an executor's argv,
/// URL and headers. The same configs with the names spelled right pass.
#[test]
fn check_refuses_unknown_placeholders_in_every_template() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ripcord.yaml");
    let cfg = config.to_str().unwrap();
    let channels = "channels:\n\
                    \x20 hook:\n\
                    \x20   type: webhook\n\
                    \x20   url: http://127.0.0.1:9/hook\n\
                    \x20   body: '{\"text\": \"{titel}\", \"incident\": \"{incident}\"}'\n\
                    \x20 gateway:\n\
                    \x20   type: sms\n\
                    \x20   provider: webhook\n\
                    \x20   to: [\"+8613800000000\"]\n\
                    \x20   url: http://127.0.0.1:9/sms\n\
                    \x20   body: '{\"to\": \"{to}\", \"text\": \"{txt}\"}'\n";
    let executors = "executors:\n\
                     \x20 rollback:\n\
                     \x20   command: {argv: [/bin/sh, \"{instnace}\"]}\n\
                     \x20   verify: {http: {method: GET, url: \"http://127.0.0.1:9/health/{servce}/{instance}\"}}\n\
                     \x20 pause_rollout:\n\
                     \x20   http: {url: \"http://127.0.0.1:9/pause/{service}\", headers: {X-Incident: \"{incdent}\"}}\n";
    for (yaml, wants) in [
        (
            channels,
            vec![
                format!(
                    "{cfg}:5:11: channel `hook`: body: unknown placeholder `{{titel}}`: known: {{title}}, {{body}}, {{text}}, {{tier}}, {{severity}}, {{incident}}, {{kind}}"
                ),
                format!(
                    "{cfg}:11:11: channel `gateway`: body: unknown placeholder `{{txt}}`: did you mean `{{text}}`?"
                ),
                "ripcord: 2 errors".to_owned(),
            ],
        ),
        (
            executors,
            vec![
                format!(
                    "{cfg}:3:31: config: executors: rollback: command: argv: unknown placeholder `{{instnace}}`: did you mean `{{instance}}`?"
                ),
                format!(
                    "{cfg}:4:39: config: executors: rollback: verify: http: url: unknown placeholder `{{servce}}`: did you mean `{{service}}`?"
                ),
                format!(
                    "{cfg}:6:77: config: executors: pause_rollout: http: headers: X-Incident: unknown placeholder `{{incdent}}`: did you mean `{{incident}}`?"
                ),
                "ripcord: 3 errors".to_owned(),
            ],
        ),
    ] {
        std::fs::write(&config, yaml).unwrap();
        let out = ripcord(&["check", "--config", cfg]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        for want in wants {
            assert!(err.contains(&want), "missing {want:?} in:\n{err}");
        }
        let fixed = yaml
            .replace("{titel}", "{title}")
            .replace("{txt}", "{text}")
            .replace("{instnace}", "{instance}")
            .replace("{servce}", "{service}")
            .replace("{incdent}", "{incident}");
        std::fs::write(&config, fixed).unwrap();
        let out = ripcord(&["check", "--config", cfg]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
}

/// An empty journal and a config whose channel secret is not set here.
fn journal_without_secrets(dir: &std::path::Path) -> (String, String) {
    let state = dir.join("state.db");
    drop(ripcord::journal::SqliteJournal::open(&state, false).unwrap());
    let config = dir.join("ripcord.yaml");
    std::fs::write(
        &config,
        "channels:\n  ops-slack:\n    type: slack\n    webhook: {env: RIPCORD_TEST_UNSET_SLACK_WEBHOOK}\n\
         routing:\n  low: {notify: [ops-slack]}\n",
    )
    .unwrap();
    (
        config.to_str().unwrap().to_owned(),
        state.to_str().unwrap().to_owned(),
    )
}

/// `show`, `incidents` (the README's `--since 90d`) and `report` read the
/// journal; a channel's secret they never use must not stop them.
#[test]
fn reading_commands_need_no_channel_secret_and_take_days() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, state) = journal_without_secrets(dir.path());
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ripcord"))
            .args(args)
            .args(["--config", &cfg, "--state", &state])
            .env_remove("RIPCORD_TEST_UNSET_SLACK_WEBHOOK")
            .output()
            .unwrap()
    };
    for args in [
        &["incidents"][..],
        &["incidents", "--since", "90d", "--format", "md"],
        &["incidents", "--since", "30d", "--format", "csv"],
        &["silence", "ls"],
    ] {
        let out = run(args);
        let err = text(&out.stderr);
        assert!(out.status.success(), "{args:?}: {err}");
        assert!(
            !err.contains("RIPCORD_TEST_UNSET_SLACK_WEBHOOK"),
            "{args:?}: {err}"
        );
    }
    let md = text(&run(&["incidents", "--since", "90d", "--format", "md"]).stdout);
    assert!(md.starts_with("| incident | opened |"), "{md}");
    // An unknown incident is the error, not the secret.
    for args in [
        &["show", "inc-000000000000"][..],
        &["report", "inc-000000000000"],
    ] {
        let err = text(&run(args).stderr);
        assert!(
            !err.contains("RIPCORD_TEST_UNSET_SLACK_WEBHOOK"),
            "{args:?}: {err}"
        );
        assert!(err.contains("inc-000000000000"), "{args:?}: {err}");
    }
    // `resume` may run an executor: there the config must be whole.
    let err = text(&run(&["resume", "web", "--by", "alice"]).stderr);
    assert!(err.contains("RIPCORD_TEST_UNSET_SLACK_WEBHOOK"), "{err}");
}

/// `ripcord silence add service=web --for 2h --comment …` (the help's
/// example) works without `$USER` (a container's shell), and a label name
/// nothing has ever carried is warned about, with the likely one.
#[test]
fn silence_add_needs_no_user_and_warns_about_unseen_label_names() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, state) = journal_without_secrets(dir.path());
    let add = |matcher: &str| {
        Command::new(env!("CARGO_BIN_EXE_ripcord"))
            .args([
                "silence",
                "add",
                matcher,
                "--for",
                "2h",
                "--comment",
                "kernel patch",
            ])
            .args(["--config", &cfg, "--state", &state])
            .env("USER", "")
            .env_remove("LOGNAME")
            .output()
            .unwrap()
    };
    let out = add("service=web");
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("warning"), "{err}");
    let out = add("servce=web");
    let err = text(&out.stderr);
    assert!(out.status.success(), "a warning, not an error: {err}");
    assert!(
        err.contains("warning: no rule or incident has ever used a label named `servce`: this matcher may never match; did you mean `service`?"),
        "{err}"
    );
    let ls = Command::new(env!("CARGO_BIN_EXE_ripcord"))
        .args([
            "silence", "ls", "--json", "--config", &cfg, "--state", &state,
        ])
        .output()
        .unwrap();
    let silences: Value = serde_json::from_slice(&ls.stdout).unwrap();
    let by = silences[0]["createdBy"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!by.is_empty(), "{silences}");
}

/// A baseline floor below zero is a mistake, named where it is written.
#[test]
fn check_refuses_a_negative_baseline_floor() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("r.yaml"),
        "rules:\n  - name: tps\n    match: {metric: db_transactions_per_second}\n    window: 1m\n    baseline: {window: 1h, floor: -5}\n    condition: \"< 50% baseline\"\n",
    )
    .unwrap();
    let out = ripcord(&["check", "--rules", dir.path().to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("r.yaml:5:35: rule `tps`: baseline: floor: must be zero or more"),
        "{err}"
    );
}

#[test]
fn check_reports_every_bad_sample_check_value_with_file_and_line_beside_other_errors() {
    check_fails(
        "tests/fixtures/config-bad-sample-check.yaml",
        &[],
        &[
            "tests/fixtures/config-bad-sample-check.yaml:4:11: config: sample_check: medium: expected a percentage from 0% to 100% (or off), got number 10",
            "tests/fixtures/config-bad-sample-check.yaml:5:9: config: sample_check: high: expected a percentage from 0% to 100% (or off), got \"150%\"",
            "tests/fixtures/config-bad-sample-check.yaml:6:8: config: sample_check: low: expected a percentage from 0% to 100% (or off), got \"ten%\"",
            "tests/fixtures/config-bad-sample-check.yaml:7:",
            "staging",
            "tests/fixtures/config-bad-sample-check.yaml:9:",
            "ripcord: 5 errors",
        ],
    );
}
