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
