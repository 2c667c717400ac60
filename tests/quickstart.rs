//! The README's quick start, pasted as it is: `ripcord run` with nothing
//! configured (embedded broker on 127.0.0.1:9092, HTTP on 127.0.0.1:9464,
//! stand-ins for channels and executors), then the commands between the
//! README's `quickstart` markers, run by bash. Both instances must be
//! rolled back (by the stand-in), shown as readable decision lines.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

fn quickstart_block() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find("<!-- quickstart:")
        .expect("README has a quickstart block");
    let end = readme.find("<!-- /quickstart -->").unwrap();
    let block = &readme[start..end];
    let body = block
        .split_once("```sh\n")
        .expect("a ```sh fence")
        .1
        .rsplit_once("```")
        .unwrap()
        .0;
    body.to_owned()
}

#[test]
fn the_readme_quick_start_pastes_and_shows_decisions_and_their_effects() {
    for port in [9092, 9464] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "127.0.0.1:{port} is in use: the quick start needs it free"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(ripcord_bin())
        .args(["run", "--output", "pretty", "--state", "state.db"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = Lines::of(child.stdout.take().unwrap());
    let stderr = Lines::of(child.stderr.take().unwrap());
    let guard = KillOnDrop(child);
    let ready = wait_until(Duration::from_secs(40), || {
        stderr.all().iter().any(|l| l.starts_with("ready: "))
    });
    assert!(ready, "not ready:\n{}", stderr.text());
    let log = stderr.text();
    assert!(
        log.contains("stand-ins (no channels and no executors are configured)"),
        "{log}"
    );
    assert!(log.contains("kafka bootstrap: 127.0.0.1:9092"), "{log}");
    assert!(log.contains("http: listening on 127.0.0.1:9464"), "{log}");

    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &quickstart_block()])
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "the quick start failed (curl and kcat come from scripts/setup):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for instance in ["i-0a1", "i-0a2"] {
        let shown = wait_until(Duration::from_secs(30), || {
            stdout
                .all()
                .iter()
                .any(|l| l.contains(" rollback ") && l.contains(&format!("web/{instance}")))
        });
        assert!(
            shown,
            "no rollback line for {instance}:\n{}\n--- stderr:\n{}",
            stdout.text(),
            stderr.text()
        );
        let effect = wait_until(Duration::from_secs(10), || {
            stderr
                .text()
                .contains(&format!("dry run: would roll back {instance}"))
        });
        assert!(
            effect,
            "no stand-in effect for {instance}:\n{}",
            stderr.text()
        );
    }
    // stderr reads as the README shows it: ripcord's own lines and the
    // stand-ins' effects, no routine log lines, nothing said twice.
    let log = stderr.text();
    assert!(!log.contains(" INFO "), "{log}");
    for l in stderr.all() {
        assert!(
            l.matches("would roll back").count() <= 1,
            "said twice: {l}\n{log}"
        );
        assert!(
            !l.starts_with("  | dry run: would roll back"),
            "the title again: {l}\n{log}"
        );
    }
    for l in stdout.all() {
        assert!(!l.starts_with('{'), "pretty output, not JSON: {l}");
        assert!(l.contains(" LOW "), "{l}");
    }
    drop(guard);
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
