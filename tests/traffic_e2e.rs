//! The plan's severe path end to end: `ripcord run` as its own process,
//! alerts over HTTP, a human approving through the API, and the shipped
//! deploy/switch-traffic.sh (`--lb nginx`) run by the `switch_traffic` and
//! `restore_traffic` executors against a fake `nginx` that records its argv.
//!
//! ripcord's PATH (which the executors pass on) is a sandbox `bin/`: the
//! fake nginx and the few real tools the script runs (bash, date, mv).
//! Rollback, pause and resume are recording scripts run through /bin/sh.

mod support;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Lines, free_port, now_millis, repo, rfc3339, ripcord_bin, wait_until};

/// `ripcord run` on `port`, in `dir` (config `ripcord.yaml`, journal
/// `state.db`), with `bin` as its whole PATH.
struct Ripcord {
    child: Child,
    port: u16,
    stderr: Lines,
}

impl Ripcord {
    fn start(dir: &Path, port: u16) -> Ripcord {
        let mut child = Command::new(ripcord_bin())
            .arg("run")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--config", "ripcord.yaml", "--state", "state.db"])
            .current_dir(dir)
            .env("PATH", dir.join("bin"))
            .env("RIPCORD_TRAFFIC_CONF", dir.join("traffic.conf"))
            .env(
                "RUST_LOG",
                std::env::var("RIPCORD_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ripcord run");
        let stderr = Lines::of(child.stderr.take().unwrap());
        let r = Ripcord {
            child,
            port,
            stderr,
        };
        let ready = wait_until(Duration::from_secs(30), || {
            client()
                .get(r.url("/readyz"))
                .send()
                .is_ok_and(|x| x.status() == 200)
        });
        assert!(ready, "ripcord never ready:\n{}", r.stderr.text());
        r
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = client()
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    fn get(&self, path: &str) -> Value {
        let resp = client().get(self.url(path)).send().unwrap();
        assert_eq!(resp.status(), 200, "GET {path}");
        resp.json().unwrap()
    }

    /// The incident whose labels have `instance`.
    fn incident_of(&self, instance: &str) -> String {
        let mut id = None;
        let found = wait_until(Duration::from_secs(30), || {
            id = self.get("/api/v1/incidents")["incidents"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["labels"]["instance"] == instance)
                .map(|i| i["id"].as_str().unwrap().to_owned());
            id.is_some()
        });
        assert!(found, "no incident for {instance}:\n{}", self.stderr.text());
        id.unwrap()
    }

    /// The incident's actions of kind `action`.
    fn actions(&self, id: &str, action: &str) -> Vec<Value> {
        self.get(&format!("/api/v1/incidents/{id}"))["actions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["action"] == action)
            .cloned()
            .collect()
    }

    /// Waits until none of the incident's actions can still run (none
    /// pending or running; an approval request's row ends `approved`, and
    /// what it approved has a row of its own): what ran then is all that
    /// will.
    #[track_caller]
    fn wait_settled(&self, id: &str) {
        let can_run = |a: &Value| matches!(a["state"].as_str(), Some("pending" | "running"));
        let ok = wait_until(Duration::from_secs(30), || {
            let shown = self.get(&format!("/api/v1/incidents/{id}"));
            !shown["actions"].as_array().unwrap().iter().any(can_run)
        });
        assert!(
            ok,
            "{id} still has an action that can run: {}",
            self.get(&format!("/api/v1/incidents/{id}"))
        );
    }

    /// Waits until the incident's only `action` is in `state`.
    #[track_caller]
    fn wait_state(&self, id: &str, action: &str, state: &str) -> Value {
        let ok = wait_until(Duration::from_secs(30), || {
            let a = self.actions(id, action);
            a.len() == 1 && a[0]["state"] == state
        });
        assert!(
            ok,
            "{action} of {id} never {state}: {}\n{}",
            self.get(&format!("/api/v1/incidents/{id}")),
            self.stderr.text()
        );
        self.actions(id, action).remove(0)
    }

    fn approve(&self, id: &str, by: &str) -> (u16, Value) {
        self.post(
            &format!("/api/v1/incidents/{id}/approve"),
            &json!({"by": by}),
        )
    }

    fn resume(&self, service: &str, by: &str) -> (u16, Value) {
        self.post(
            &format!("/api/v1/rollouts/{service}/resume"),
            &json!({"by": by}),
        )
    }
}

impl Drop for Ripcord {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The calls every recording program made, in order: each the program's
/// name and its arguments.
fn calls(dir: &Path) -> Vec<Vec<String>> {
    support::recorded_calls(&dir.join("calls.bin"))
}

fn calls_of(dir: &Path, program: &str) -> Vec<Vec<String>> {
    calls(dir)
        .into_iter()
        .filter(|c| c[0] == program)
        .map(|c| c[1..].to_vec())
        .collect()
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

/// A `/bin/sh` script that records `NAME ARGS...` in `calls.bin`, sleeps
/// `sleep` seconds, and says `said`.
fn recorder(dir: &Path, name: &str, sleep: u32, said: &str) -> PathBuf {
    let script = dir.join(format!("{name}.sh"));
    std::fs::write(
        &script,
        format!(
            "printf '%s\\0' CALL {name} \"$@\" >> '{log}'\nsleep {sleep}\necho \"{said} $*\"\n",
            log = dir.join("calls.bin").display()
        ),
    )
    .unwrap();
    script
}

const PRIMARY: &str = "server 10.0.1.11:8080;\nserver 10.0.1.12:8080;\n";

/// The sandbox, the pools file, the nginx upstream include (primary pool)
/// and the config; `rollback_sleep` makes the rollback slow.
fn setup(dir: &Path, port: u16, rollback_sleep: u32) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    for tool in ["bash", "date", "mv", "sleep"] {
        let real = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("no {tool} in /usr/bin or /bin"));
        symlink(real, bin.join(tool)).unwrap();
    }
    // While `nginx-hangs` exists, `nginx -t` hangs for 20 s, then fails.
    let nginx = bin.join("nginx");
    std::fs::write(
        &nginx,
        format!(
            "#!/bin/sh\nprintf '%s\\0' CALL nginx \"$@\" >> '{log}'\n\
             if [ -e '{hang}' ]; then sleep 20; exit 1; fi\n",
            log = dir.join("calls.bin").display(),
            hang = dir.join("nginx-hangs").display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&nginx, std::fs::Permissions::from_mode(0o755)).unwrap();

    let upstream = dir.join("upstreams").join("pay.conf");
    std::fs::create_dir(upstream.parent().unwrap()).unwrap();
    std::fs::write(&upstream, PRIMARY).unwrap();
    std::fs::write(
        dir.join("traffic.conf"),
        format!(
            "pay nginx file={} primary=10.0.1.11:8080,10.0.1.12:8080 standby=10.0.2.11:8080\n",
            upstream.display()
        ),
    )
    .unwrap();

    let rollback = recorder(dir, "rollback", rollback_sleep, "rolled back");
    let pause = recorder(dir, "pause", 0, "paused");
    let script = repo().join("deploy/switch-traffic.sh");
    let yaml = format!(
        r#"http:
  public_url: "http://127.0.0.1:{port}"
executors:
  rollback:
    command: {{argv: [/bin/sh, "{rollback}", "{{instance}}"], timeout: 60s}}
  pause_rollout:
    command: {{argv: [/bin/sh, "{pause}", "{{service}}"]}}
  resume_rollout:
    command: {{argv: [/bin/sh, "{pause}", --resume, "{{service}}"]}}
  switch_traffic:
    command:
      argv: ["{script}", --lb, nginx, switch, "{{service}}"]
      env: [PATH, RIPCORD_TRAFFIC_CONF]
      timeout: 30s
  restore_traffic:
    command:
      argv: ["{script}", --lb, nginx, restore, "{{service}}"]
      env: [PATH, RIPCORD_TRAFFIC_CONF]
      timeout: 30s
"#,
        rollback = rollback.display(),
        pause = pause.display(),
        script = script.display(),
    );
    std::fs::write(dir.join("ripcord.yaml"), yaml).unwrap();
    upstream
}

fn alert(service: &str, instance: &str, tier: &str, severity: &str) -> Value {
    json!({
        "status": "firing",
        "labels": {"alertname": "ErrorsUp", "service": service, "instance": instance, "tier": tier, "severity": severity},
        "annotations": {"summary": "errors up"},
        "startsAt": rfc3339(now_millis() - 5_000), "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": format!("fp-{instance}"),
    })
}

fn post_alerts(r: &Ripcord, alerts: Vec<Value>) {
    let (code, body) = r.post(
        "/api/v1/alerts",
        &json!({"version": "4", "status": "firing", "receiver": "ripcord", "groupKey": "{}:{}", "alerts": alerts}),
    );
    assert_eq!(code, 200, "{body}");
}

/// A human approves the rollback of a severe high-risk incident: the
/// rollback runs, and beside it (not after it: the rollback takes 6 s)
/// the traffic moves to the standby pool, once, however often the
/// approval is tried again. Resuming the rollout moves it back, once.
#[test]
fn an_approved_severe_high_risk_rollback_switches_traffic_and_resume_restores_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let upstream = setup(dir.path(), port, 6);
    let r = Ripcord::start(dir.path(), port);
    post_alerts(&r, vec![alert("pay", "i-sev1", "high", "critical")]);
    let id = r.incident_of("i-sev1");
    r.wait_state(&id, "pause_rollout", "done");
    r.wait_state(&id, "request_approval", "awaiting_approval");
    assert!(calls_of(dir.path(), "nginx").is_empty());
    assert!(r.actions(&id, "switch_traffic").is_empty());

    let (code, done) = r.approve(&id, "alice");
    assert_eq!(code, 200, "{done}");
    let detail = done["detail"].as_str().unwrap();
    assert!(
        detail.contains("switch_traffic released beside it"),
        "{detail}"
    );

    // The switch ends while the rollback still runs: it did not wait.
    let switch = r.wait_state(&id, "switch_traffic", "done");
    let rollback = r.actions(&id, "rollback").remove(0);
    assert_eq!(rollback["state"], "running", "{rollback}");
    assert_eq!(
        switch["key"],
        format!("{}/switch_traffic", rollback["key"].as_str().unwrap()),
        "derived from the approved rollback"
    );
    assert_eq!(
        calls_of(dir.path(), "nginx"),
        vec![argv(&["-t"]), argv(&["-s", "reload"])]
    );
    assert_eq!(
        std::fs::read_to_string(&upstream).unwrap(),
        "# written by switch-traffic.sh: the standby pool of pay (switch)\nserver 10.0.2.11:8080;\n"
    );
    let detail = switch["detail"].as_str().unwrap();
    assert!(
        detail.contains("switch: traffic of pay on the standby pool"),
        "{detail}"
    );

    // Approving again changes nothing.
    let (code, again) = r.approve(&id, "bob");
    assert_eq!(code, 409, "{again}");
    r.wait_state(&id, "rollback", "done");
    assert_eq!(calls_of(dir.path(), "rollback"), vec![argv(&["i-sev1"])]);
    assert_eq!(r.actions(&id, "switch_traffic").len(), 1);
    assert_eq!(calls_of(dir.path(), "nginx").len(), 2);
    assert!(r.actions(&id, "restore_traffic").is_empty());

    // The commander's all-clear: resume the rollout, traffic goes back.
    let (code, done) = r.resume("pay", "carol");
    assert_eq!(code, 200, "{done}");
    let detail = done["detail"].as_str().unwrap();
    assert!(
        detail.contains("traffic goes back to the primary pool"),
        "{detail}"
    );
    let restore = r.wait_state(&id, "restore_traffic", "done");
    assert_eq!(
        restore["key"],
        format!("{}/restore_traffic", switch["key"].as_str().unwrap())
    );
    assert_eq!(
        calls_of(dir.path(), "pause"),
        vec![argv(&["pay"]), argv(&["--resume", "pay"])]
    );
    assert_eq!(
        calls_of(dir.path(), "nginx"),
        vec![
            argv(&["-t"]),
            argv(&["-s", "reload"]),
            argv(&["-t"]),
            argv(&["-s", "reload"])
        ]
    );
    assert_eq!(
        std::fs::read_to_string(&upstream).unwrap(),
        "# written by switch-traffic.sh: the primary pool of pay (restore)\nserver 10.0.1.11:8080;\nserver 10.0.1.12:8080;\n"
    );
    // Not paused any more: a second resume is refused and restores nothing.
    let (code, again) = r.resume("pay", "carol");
    assert_eq!(code, 409, "{again}");
    r.wait_settled(&id);
    assert_eq!(r.actions(&id, "restore_traffic").len(), 1);
    assert_eq!(calls_of(dir.path(), "nginx").len(), 4);
}

/// Only the severe path at high risk moves traffic: an approved rollback
/// of a functional high-risk incident or of a severe medium-risk one, and
/// the automatic rollback of a severe low-risk one, leave the load
/// balancer alone; resuming a rollout no switch ran for restores nothing.
#[test]
fn other_tiers_and_severities_never_switch_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let upstream = setup(dir.path(), port, 0);
    let r = Ripcord::start(dir.path(), port);
    post_alerts(
        &r,
        vec![
            alert("pay", "i-fun1", "high", "warning"),
            alert("pay", "i-med1", "medium", "critical"),
            alert("pay", "i-low1", "low", "critical"),
        ],
    );
    let high = r.incident_of("i-fun1");
    let medium = r.incident_of("i-med1");
    let low = r.incident_of("i-low1");
    r.wait_state(&high, "pause_rollout", "done");
    for id in [&high, &medium] {
        r.wait_state(id, "request_approval", "awaiting_approval");
        let (code, done) = r.approve(id, "alice");
        assert_eq!(code, 200, "{done}");
        assert!(
            !done["detail"].as_str().unwrap().contains("switch_traffic"),
            "{done}"
        );
    }
    for id in [&high, &medium, &low] {
        r.wait_state(id, "rollback", "done");
    }
    let (code, done) = r.resume("pay", "carol");
    assert_eq!(code, 200, "{done}");
    assert!(
        !done["detail"].as_str().unwrap().contains("primary pool"),
        "{done}"
    );
    for id in [&high, &medium, &low] {
        r.wait_settled(id);
    }
    for id in [&high, &medium, &low] {
        assert!(r.actions(id, "switch_traffic").is_empty(), "{id}");
        assert!(r.actions(id, "restore_traffic").is_empty(), "{id}");
    }
    assert!(calls_of(dir.path(), "nginx").is_empty());
    assert_eq!(std::fs::read_to_string(&upstream).unwrap(), PRIMARY);
    let mut rolled: Vec<Vec<String>> = calls_of(dir.path(), "rollback");
    rolled.sort();
    assert_eq!(
        rolled,
        vec![argv(&["i-fun1"]), argv(&["i-low1"]), argv(&["i-med1"])]
    );
}

/// A switch cut off by the death of the process running it may or may not
/// have moved the traffic: like a rollback, it is never run again. The
/// next process reports it `unknown` (and pages) instead.
#[test]
fn a_switch_cut_off_by_a_crash_is_unknown_and_never_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    setup(dir.path(), port, 0);
    std::fs::write(dir.path().join("nginx-hangs"), "").unwrap();
    let mut r = Ripcord::start(dir.path(), port);
    post_alerts(&r, vec![alert("pay", "i-sev2", "high", "critical")]);
    let id = r.incident_of("i-sev2");
    r.wait_state(&id, "request_approval", "awaiting_approval");
    let (code, done) = r.approve(&id, "alice");
    assert_eq!(code, 200, "{done}");
    r.wait_state(&id, "switch_traffic", "running");
    assert!(
        wait_until(Duration::from_secs(10), || calls_of(dir.path(), "nginx")
            .len()
            == 1),
        "nginx -t never ran"
    );
    r.child.kill().unwrap();
    r.child.wait().unwrap();
    drop(r);

    let r = Ripcord::start(dir.path(), port);
    // The dead process is taken for dead after 15 s without a heartbeat.
    let ok = wait_until(Duration::from_secs(45), || {
        let a = r.actions(&id, "switch_traffic");
        a.len() == 1 && a[0]["state"] == "unknown"
    });
    assert!(
        ok,
        "{}\n{}",
        r.get(&format!("/api/v1/incidents/{id}")),
        r.stderr.text()
    );
    let switch = r.actions(&id, "switch_traffic").remove(0);
    let detail = switch["detail"].as_str().unwrap();
    assert!(
        detail.contains("not run again")
            || detail.contains("ripcord stopped while this action ran"),
        "{detail}"
    );
    r.wait_settled(&id);
    assert_eq!(
        calls_of(dir.path(), "nginx"),
        vec![argv(&["-t"])],
        "the switch ran again"
    );
}

/// The approval is committed, then its process dies before recording the
/// switch that goes with it (two transactions): the rollback, claimed by
/// the next process, records the switch then, so the commander's
/// confirmation still moves the traffic.
#[test]
fn a_switch_lost_between_the_approval_and_its_recording_is_recorded_when_the_rollback_starts() {
    use ripcord::journal::{Verdict, Verdicts};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    setup(dir.path(), port, 0);
    let r = Ripcord::start(dir.path(), port);
    post_alerts(&r, vec![alert("pay", "i-sev2", "high", "critical")]);
    let id = r.incident_of("i-sev2");
    r.wait_state(&id, "request_approval", "awaiting_approval");
    drop(r);
    // What the dead process committed: the approval and its rollback only.
    {
        let mut j =
            ripcord::journal::SqliteJournal::open(&dir.path().join("state.db"), false).unwrap();
        let now = ripcord::time::Ts(support::now_millis());
        j.decide_approval(
            &id,
            Verdict::Approve,
            "alice",
            "",
            ripcord::journal::Via::Api,
            now,
            None,
        )
        .unwrap();
    }
    let r = Ripcord::start(dir.path(), port);
    r.wait_state(&id, "rollback", "done");
    let switch = r.wait_state(&id, "switch_traffic", "done");
    assert!(
        switch["key"]
            .as_str()
            .unwrap()
            .ends_with("/approved/switch_traffic"),
        "{switch}"
    );
    assert_eq!(
        calls_of(dir.path(), "nginx"),
        vec![argv(&["-t"]), argv(&["-s", "reload"])]
    );
}
