//! What an adversary with network access to ripcord's port and a copy of
//! its docs tried, against the real binary (issue 16): a journal that is
//! not there, a shutdown on PostgreSQL, forged proxy headers and Host
//! names, a flood of sign-in guesses, heavy silences, a storm of
//! incidents read by many tabs, series past the memory budget, a drill
//! aimed at production's topic, a full disk. Each test failed on the
//! build before the fix (notes in /work/notes/issue-16.md).

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

/// `ripcord run` with `config`, to its exit (or `timeout`): status and stderr.
fn run_to_exit(dir: &Path, config: &str, timeout: Duration) -> (Option<i32>, String) {
    let cfg = dir.join("ripcord.yaml");
    std::fs::write(&cfg, config).unwrap();
    let mut child = Command::new(ripcord_bin())
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .args(any_kafka_port())
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ripcord run");
    let stderr = Lines::of(child.stderr.take().unwrap());
    let exited = wait_until(timeout, || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    (status.code(), stderr.text())
}

// ---------------------------------------------------------------------------
// 5. The PostgreSQL journal: start-up against nothing, and SIGTERM.

#[test]
fn a_start_against_an_unreachable_postgresql_names_the_database_and_exits_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1 on loopback: nothing listens, the connection is refused.
    let (code, stderr) = run_to_exit(
        dir.path(),
        "journal: {url: \"postgres://ripcord:s3cret-pw@127.0.0.1:1/ripcord_prod?sslmode=disable\"}\n",
        Duration::from_secs(30),
    );
    assert!(!stderr.contains("panicked"), "a panic:\n{stderr}");
    assert_eq!(code, Some(2), "a clear non-zero exit:\n{stderr}");
    for says in [
        "host 127.0.0.1 port 1",
        "database ripcord_prod",
        "user ripcord",
        "Connection refused",
    ] {
        assert!(stderr.contains(says), "`{says}` missing:\n{stderr}");
    }
    assert!(!stderr.contains("s3cret-pw"), "the password leaked:\n{stderr}");
}

#[test]
fn sigterm_on_a_postgresql_journal_drains_and_exits_0() {
    let db = pg_database(&format!("hardening_term_{}", std::process::id()));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ripcord.yaml");
    std::fs::write(
        &cfg,
        format!(
            "journal: {{url: \"{db}\", ca_file: \"{}\"}}\n",
            pg_ca()
        ),
    )
    .unwrap();
    let cfg = path_str(&cfg);
    let mut args = vec!["--config", cfg.as_str(), "--dry-run"];
    args.extend(any_kafka_port());
    let r = Responder::start(dir.path(), &args);
    assert!(
        wait_until(Duration::from_secs(30), || r
            .stderr
            .text()
            .contains("ready:")),
        "not ready:\n{}",
        r.stderr.text()
    );
    let now = now_millis();
    let body = serde_json::json!({"version": "4", "alerts": [{
        "status": "firing", "startsAt": rfc3339(now),
        "labels": {"alertname": "InstanceDown", "service": "web", "instance": "i-term-1",
                   "tier": "low", "severity": "critical"}}]});
    let code = reqwest::blocking::Client::new()
        .post(r.url("/api/v1/alerts"))
        .json(&body)
        .send()
        .unwrap()
        .status();
    assert_eq!(code, 200);
    let (status, _, _, stderr) = r.terminate(Duration::from_secs(20));
    let stderr = stderr.text();
    assert!(!stderr.contains("panicked"), "a panic:\n{stderr}");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(
        pg_count(&db, "SELECT count(*) FROM incidents"),
        1,
        "the alert answered before SIGTERM is journaled"
    );
}
