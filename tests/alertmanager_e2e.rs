//! The real Prometheus Alertmanager (Debian package prometheus-alertmanager)
//! delivering to `ripcord run` over its webhook: alerts pushed into
//! Alertmanager's API reach ripcord, decide once however often Alertmanager
//! re-sends them, and resolve when they end; with and without a bearer
//! token; across a ripcord crash while Alertmanager keeps sending; while
//! hundreds of connections are held open and silent.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::{
    Lines, free_port, metric, now_millis, parse_metrics, rfc3339, ripcord_bin, wait_until,
};

// ---------------------------------------------------------------------------
// ripcord.

/// `ripcord run` on a port the test picks (so Alertmanager's config can
/// name it and a restarted ripcord comes back on it), shipped rules,
/// journal `state.db` in `dir`.
struct Ripcord {
    child: Child,
    http: SocketAddr,
    stdout: Lines,
    stderr: Lines,
}

impl Ripcord {
    fn start(dir: &Path, port: u16, token: Option<&str>) -> Ripcord {
        Ripcord::start_with(dir, port, token, &[])
    }

    fn start_with(dir: &Path, port: u16, token: Option<&str>, extra: &[&str]) -> Ripcord {
        let mut cmd = Command::new(ripcord_bin());
        cmd.arg("run")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .args(["--state", "state.db"])
            .current_dir(dir)
            .env(
                "RUST_LOG",
                std::env::var("RIPCORD_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("RIPCORD_TEST_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(t) = token {
            let cfg = dir.join("ripcord.yaml");
            std::fs::write(&cfg, "http:\n  token: {env: RIPCORD_TEST_TOKEN}\n").unwrap();
            cmd.arg("--config").arg(&cfg).env("RIPCORD_TEST_TOKEN", t);
        }
        let mut child = cmd.spawn().expect("spawn ripcord run");
        let stdout = Lines::of(child.stdout.take().unwrap());
        let stderr = Lines::of(child.stderr.take().unwrap());
        let ok = wait_until(Duration::from_secs(30), || {
            stderr.find("http: listening on ").is_some()
        });
        assert!(ok, "ripcord did not start:\n{}", stderr.text());
        let http = stderr
            .find("http: listening on ")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let r = Ripcord {
            child,
            http,
            stdout,
            stderr,
        };
        let ready = wait_until(Duration::from_secs(30), || {
            reqwest::blocking::get(r.url("/readyz")).is_ok_and(|x| x.status() == 200)
        });
        assert!(ready, "ripcord never ready:\n{}", r.stderr.text());
        r
    }

    /// TCP sockets this process listens on (its fds matched against
    /// /proc/net/tcp{,6} rows in state LISTEN).
    fn listening_sockets(&self) -> usize {
        let pid = self.child.id();
        let inodes: std::collections::HashSet<String> =
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
                })
                .collect();
        ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .flat_map(|t| t.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
            .filter(|row| {
                let cols: Vec<&str> = row.split_whitespace().collect();
                cols.get(3) == Some(&"0A") && cols.get(9).is_some_and(|i| inodes.contains(*i))
            })
            .count()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    fn webhook_url(&self) -> String {
        self.url("/api/v1/alerts")
    }

    fn decisions(&self) -> Vec<Value> {
        self.stdout
            .all()
            .iter()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}")))
            .collect()
    }

    fn metrics(&self) -> BTreeMap<String, f64> {
        parse_metrics(
            &reqwest::blocking::get(self.url("/metrics"))
                .unwrap()
                .text()
                .unwrap(),
        )
    }

    /// Webhook deliveries ripcord answered with `code`.
    fn webhooks(&self, code: u16) -> f64 {
        metric(
            &self.metrics(),
            &format!(r#"ripcord_http_requests_total{{endpoint="/api/v1/alerts",code="{code}"}}"#),
        )
    }

    fn kill9(mut self) -> Lines {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(200));
        self.stdout.clone()
    }

    /// SIGTERM; the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let exited = wait_until(Duration::from_secs(20), || {
            self.child.try_wait().unwrap().is_some()
        });
        assert!(exited, "ripcord ignored SIGTERM:\n{}", self.stderr.text());
        self.child.wait().unwrap()
    }
}

impl Drop for Ripcord {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Alertmanager.

fn alertmanager_bin() -> PathBuf {
    let candidates = ["/usr/bin/prometheus-alertmanager"];
    if let Some(p) = candidates.iter().map(PathBuf::from).find(|p| p.exists()) {
        return p;
    }
    for name in ["prometheus-alertmanager", "alertmanager"] {
        if Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return PathBuf::from(name);
        }
    }
    panic!(
        "prometheus-alertmanager is not installed: run scripts/setup \
         (apt-get install prometheus-alertmanager)"
    );
}

struct Alertmanager {
    child: Child,
    url: String,
    log: Lines,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// One Alertmanager (no cluster) whose only receiver is ripcord's
    /// webhook, sending the Authorization `credentials` if given. Groups
    /// wait 1 s, flush every 2 s and repeat after 3 s, so a firing alert is
    /// re-sent every few seconds.
    fn start(webhook: &str, credentials: Option<&str>) -> Alertmanager {
        let bin = alertmanager_bin();
        let dir = tempfile::tempdir().unwrap();
        let auth = credentials
            .map(|c| format!("        http_config:\n          authorization:\n            credentials: \"{c}\"\n"))
            .unwrap_or_default();
        let config = format!(
            r#"route:
  receiver: ripcord
  group_by: [alertname, service, instance]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 3s
receivers:
  - name: ripcord
    webhook_configs:
      - url: "{webhook}"
        send_resolved: true
{auth}"#
        );
        let cfg = dir.path().join("alertmanager.yml");
        std::fs::write(&cfg, config).unwrap();
        let port = free_port();
        let mut child = Command::new(&bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let log = Lines::of(child.stderr.take().unwrap());
        let _ = Lines::of(child.stdout.take().unwrap());
        let url = format!("http://127.0.0.1:{port}");
        let mut am = Alertmanager {
            child,
            url,
            log,
            _dir: dir,
        };
        let ready = wait_until(Duration::from_secs(30), || {
            reqwest::blocking::get(format!("{}/-/ready", am.url)).is_ok_and(|r| r.status() == 200)
        });
        if !ready {
            let exit = am.child.try_wait();
            panic!(
                "alertmanager not ready (exit: {exit:?}):\n{}",
                am.log.text()
            );
        }
        am
    }

    /// `POST /api/v2/alerts`.
    fn push(&self, alerts: &[Value]) {
        let r = reqwest::blocking::Client::new()
            .post(format!("{}/api/v2/alerts", self.url))
            .json(&alerts)
            .send()
            .unwrap();
        let code = r.status();
        assert!(
            code.is_success(),
            "alertmanager refused the alerts: {code} {}",
            r.text().unwrap_or_default()
        );
    }

    /// Alertmanager's own fingerprint of the alert with `alertname`.
    /// The alerts named `alertname` Alertmanager lists (active ones: a
    /// resolved alert is not listed).
    fn alerts(&self, alertname: &str) -> Vec<Value> {
        reqwest::blocking::get(format!(
            "{}/api/v2/alerts?filter=alertname%3D%22{alertname}%22",
            self.url
        ))
        .unwrap()
        .json()
        .unwrap()
    }

    fn fingerprint(&self, alertname: &str) -> String {
        let alerts = self.alerts(alertname);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        alerts[0]["fingerprint"].as_str().unwrap().to_owned()
    }

    fn metrics(&self) -> BTreeMap<String, f64> {
        parse_metrics(
            &reqwest::blocking::get(format!("{}/metrics", self.url))
                .unwrap()
                .text()
                .unwrap(),
        )
    }

    /// Webhook notifications attempted.
    fn notifications(&self) -> f64 {
        metric(
            &self.metrics(),
            r#"alertmanager_notifications_total{integration="webhook"}"#,
        )
    }

    /// Webhook notifications that failed (after retries).
    fn failures(&self) -> f64 {
        metric(
            &self.metrics(),
            r#"alertmanager_notifications_failed_total{integration="webhook"}"#,
        )
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An alert as Prometheus posts it to Alertmanager; `ends` ends it.
fn alert(labels: &Value, starts: i64, ends: Option<i64>) -> Value {
    let mut a = json!({
        "labels": labels,
        "annotations": {"summary": "the service stopped answering"},
        "startsAt": rfc3339(starts),
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0",
    });
    if let Some(e) = ends {
        a["endsAt"] = json!(rfc3339(e));
    }
    a
}

fn actions(decisions: &[Value], fingerprint: &str) -> Vec<String> {
    decisions
        .iter()
        .filter(|d| d["fingerprint"] == fingerprint)
        .map(|d| d["action"].as_str().unwrap().to_owned())
        .collect()
}

fn instance_down(instance: &str) -> Value {
    json!({
        "alertname": "InstanceDown", "service": "web-ui", "instance": instance,
        "tier": "low", "severity": "critical", "job": "node",
    })
}

/// Waits for Alertmanager to have sent at least `n` webhook notifications
/// in all and ripcord to have answered at least `n` of them with 200.
/// What Alertmanager had sent and ripcord answered at one moment.
struct Sent {
    notifications: f64,
    answered: f64,
}

fn sent(am: &Alertmanager, r: &Ripcord) -> Sent {
    Sent {
        notifications: am.notifications(),
        answered: r.webhooks(200),
    }
}

/// Waits until Alertmanager has nothing left to send about `alertname`:
/// it lists no active alert of that name (a resolved one is not listed),
/// and ripcord has answered every notification sent since `since`.
/// Nothing more can come of the alert then: the quiet a fixed sleep only
/// hoped for. Call it once the resolve was seen (before that, a resolved
/// alert not yet sent looks quiet too).
fn wait_quiet(am: &Alertmanager, r: &Ripcord, alertname: &str, since: &Sent) {
    let active = || am.alerts(alertname).len();
    let ok = wait_until(Duration::from_secs(30), || {
        active() == 0
            && am.notifications() - since.notifications == r.webhooks(200) - since.answered
    });
    assert!(
        ok,
        "alertmanager still has {} active, sent {} notifications since, ripcord answered {}:\n{}",
        active(),
        am.notifications() - since.notifications,
        r.webhooks(200) - since.answered,
        am.log.text()
    );
}

fn wait_for_deliveries(am: &Alertmanager, r: &Ripcord, n: f64) {
    let ok = wait_until(Duration::from_secs(60), || {
        am.notifications() >= n && r.webhooks(200) >= n
    });
    assert!(
        ok,
        "alertmanager sent {} notifications, ripcord accepted {}:\n{}",
        am.notifications(),
        r.webhooks(200),
        am.log.text()
    );
}

// ---------------------------------------------------------------------------

#[test]
fn a_critical_alert_on_a_low_tier_service_rolls_back_once_and_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let r = Ripcord::start(dir.path(), 0, None);
    let am = Alertmanager::start(&r.webhook_url(), None);
    let labels = instance_down("i-0a1");
    let starts = now_millis() - 5_000;
    am.push(&[alert(&labels, starts, None)]);
    let fp = am.fingerprint("InstanceDown");

    assert!(
        wait_until(Duration::from_secs(30), || r.decisions().len() >= 2),
        "nothing decided:\n{}\n--- alertmanager:\n{}",
        r.stderr.text(),
        am.log.text()
    );
    // Alertmanager keeps re-sending the firing alert (repeat_interval 3 s):
    // the first delivery and at least two repeats.
    wait_for_deliveries(&am, &r, 3.0);
    let decisions = r.decisions();
    assert_eq!(
        actions(&decisions, &fp),
        ["rollback", "notify"],
        "{decisions:#?}"
    );
    assert_eq!(decisions.len(), 2, "{decisions:#?}");
    for d in &decisions {
        assert_eq!(d["rule"], "alertmanager-forwarded");
        assert_eq!(d["tier"], "low");
        assert_eq!(d["severity"], "severe");
        assert_eq!(
            d["labels"], labels,
            "the decision carries the alert's labels"
        );
        assert_eq!(d["at"], rfc3339(starts));
        assert_eq!(d["incident"], decisions[0]["incident"]);
        assert!(
            d["message"]
                .as_str()
                .unwrap()
                .contains("the service stopped answering"),
            "{d}"
        );
    }

    // The alert ends: Alertmanager sends it resolved, ripcord resolves the
    // same incident.
    let before = am.notifications();
    let since = sent(&am, &r);
    let ends = now_millis();
    am.push(&[alert(&labels, starts, Some(ends))]);
    assert!(
        wait_until(Duration::from_secs(30), || r.decisions().len() >= 3),
        "no resolve:\n{}\n--- alertmanager:\n{}",
        r.stderr.text(),
        am.log.text()
    );
    let resolve = r.decisions()[2].clone();
    assert_eq!(resolve["action"], "resolve");
    assert_eq!(resolve["incident"], decisions[0]["incident"]);
    assert_eq!(resolve["fingerprint"], fp);
    assert_eq!(resolve["at"], rfc3339(ends));
    assert!(am.notifications() > before);
    // Nothing more comes of it, however long Alertmanager runs.
    wait_quiet(&am, &r, "InstanceDown", &since);
    assert_eq!(r.decisions().len(), 3, "{:#?}", r.decisions());
    assert_eq!(am.failures(), 0.0, "{}", am.log.text());
    assert_eq!(
        metric(
            &r.metrics(),
            r#"ripcord_decisions_total{action="rollback",tier="low"}"#
        ),
        1.0
    );
    assert!(r.terminate().success());
}

/// An Alertmanager-only responder (`--no-kafka`): no broker, no consumer,
/// one listening socket (its HTTP port); alerts still decide, and the
/// rollback runs once however often Alertmanager re-sends.
#[test]
fn without_kafka_no_broker_starts_and_alerts_still_roll_back() {
    let dir = tempfile::tempdir().unwrap();
    let r = Ripcord::start_with(dir.path(), 0, None, &["--no-kafka"]);
    assert!(
        r.stderr.text().contains("kafka: disabled"),
        "{}",
        r.stderr.text()
    );
    assert!(!r.stderr.text().contains("kafka bootstrap"));
    assert_eq!(
        r.listening_sockets(),
        1,
        "only the HTTP port listens:\n{}",
        r.stderr.text()
    );
    let am = Alertmanager::start(&r.webhook_url(), None);
    am.push(&[alert(&instance_down("i-0b2"), now_millis() - 5_000, None)]);
    let fp = am.fingerprint("InstanceDown");
    assert!(
        wait_until(Duration::from_secs(30), || r.decisions().len() >= 2),
        "nothing decided:\n{}",
        r.stderr.text()
    );
    wait_for_deliveries(&am, &r, 3.0);
    assert_eq!(actions(&r.decisions(), &fp), ["rollback", "notify"]);
    let status = r.terminate();
    assert!(status.success());
}

#[test]
fn a_warning_on_a_medium_tier_service_asks_for_approval_and_info_only_notifies() {
    let dir = tempfile::tempdir().unwrap();
    let r = Ripcord::start(dir.path(), 0, None);
    let am = Alertmanager::start(&r.webhook_url(), None);
    let warning = json!({
        "alertname": "LogShipperLag", "service": "log-agent", "instance": "i-3",
        "tier": "medium", "severity": "warning",
    });
    let info = json!({
        "alertname": "LogFileErrors", "service": "log-agent", "instance": "i-3",
        "tier": "medium", "severity": "info",
    });
    let starts = now_millis() - 1_000;
    am.push(&[alert(&warning, starts, None), alert(&info, starts, None)]);
    let (fp_warning, fp_info) = (
        am.fingerprint("LogShipperLag"),
        am.fingerprint("LogFileErrors"),
    );
    assert!(
        wait_until(Duration::from_secs(30), || r.decisions().len() >= 3),
        "{:#?}\n{}",
        r.decisions(),
        am.log.text()
    );
    // Two groups, each delivered and re-sent at least once.
    wait_for_deliveries(&am, &r, 4.0);
    let decisions = r.decisions();
    assert_eq!(decisions.len(), 3, "{decisions:#?}");
    assert_eq!(
        actions(&decisions, &fp_warning),
        ["request_approval", "notify"]
    );
    assert_eq!(actions(&decisions, &fp_info), ["notify"]);
    for d in &decisions {
        assert_eq!(d["tier"], "medium");
        let (labels, severity) = if d["fingerprint"] == fp_warning {
            (&warning, "functional")
        } else {
            (&info, "minor")
        };
        assert_eq!(&d["labels"], labels);
        assert_eq!(d["severity"], severity);
    }
    assert_eq!(am.failures(), 0.0);
}

#[test]
fn with_a_bearer_token_on_both_sides_alerts_arrive_and_a_wrong_token_is_refused() {
    let token = "am-to-ripcord-3f9c";
    let dir = tempfile::tempdir().unwrap();
    let r = Ripcord::start(dir.path(), 0, Some(token));
    let good = Alertmanager::start(&r.webhook_url(), Some(token));
    let bad = Alertmanager::start(&r.webhook_url(), Some("not-the-token"));
    let good_labels = instance_down("i-good");
    let bad_labels = instance_down("i-bad");
    good.push(&[alert(&good_labels, now_millis(), None)]);
    bad.push(&[alert(&bad_labels, now_millis(), None)]);
    let fp_good = good.fingerprint("InstanceDown");

    wait_for_deliveries(&good, &r, 3.0);
    assert!(
        wait_until(Duration::from_secs(30), || bad.failures() >= 1.0
            && r.webhooks(401) >= 1.0),
        "the wrong token was not refused: ripcord 401s {}, alertmanager failures {}\n{}",
        r.webhooks(401),
        bad.failures(),
        bad.log.text()
    );
    let decisions = r.decisions();
    assert_eq!(decisions.len(), 2, "{decisions:#?}");
    assert_eq!(actions(&decisions, &fp_good), ["rollback", "notify"]);
    assert_eq!(decisions[0]["labels"], good_labels);
    assert_eq!(good.failures(), 0.0, "{}", good.log.text());
    assert!(
        bad.log.text().contains("401"),
        "alertmanager's log names the 401:\n{}",
        bad.log.text()
    );
    assert!(r.terminate().success());
}

#[test]
fn ripcord_crashes_while_alertmanager_keeps_sending_and_nothing_fires_twice() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let r = Ripcord::start(dir.path(), port, None);
    let am = Alertmanager::start(&r.webhook_url(), None);
    let labels = instance_down("i-crash");
    let starts = now_millis() - 2_000;
    am.push(&[alert(&labels, starts, None)]);
    let fp = am.fingerprint("InstanceDown");
    assert!(
        wait_until(Duration::from_secs(30), || r.decisions().len() >= 2),
        "{}",
        am.log.text()
    );
    let first = r.kill9().all();
    let first: Vec<Value> = first
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(actions(&first, &fp), ["rollback", "notify"]);

    // Alertmanager's deliveries fail while ripcord is down; it retries.
    assert!(
        wait_until(Duration::from_secs(40), || am
            .log
            .text()
            .contains("connection refused")),
        "alertmanager did not try to deliver while ripcord was down:\n{}",
        am.log.text()
    );

    // Back on the same port and journal: the repeats decide nothing.
    let r = Ripcord::start(dir.path(), port, None);
    wait_for_deliveries(&am, &r, 2.0);
    assert!(
        r.decisions().is_empty(),
        "fired again: {:#?}",
        r.decisions()
    );

    // The alert ends; the restarted ripcord resolves the incident opened
    // before the crash.
    let since = sent(&am, &r);
    am.push(&[alert(&labels, starts, Some(now_millis()))]);
    assert!(
        wait_until(Duration::from_secs(30), || !r.decisions().is_empty()),
        "no resolve:\n{}",
        am.log.text()
    );
    wait_quiet(&am, &r, "InstanceDown", &since);
    let after = r.decisions();
    assert_eq!(actions(&after, &fp), ["resolve"], "{after:#?}");
    assert_eq!(after[0]["incident"], first[0]["incident"]);
    println!(
        "alertmanager: {} notifications, {} failed\n{}",
        am.notifications(),
        am.failures(),
        am.log
            .all()
            .iter()
            .filter(|l| l.contains("refused") || l.contains("level=error"))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(r.terminate().success());
}

/// 300 connections held open and silent (half from one address, half from
/// 150 others), reopened whenever closed, against `max_connections: 64`:
/// Alertmanager still delivers every notification, and a firing alert
/// rolls back once.
#[test]
fn silent_connections_never_lock_out_alertmanager() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ripcord.yaml"),
        "http:\n  max_connections: 64\n",
    )
    .unwrap();
    let r = Ripcord::start_with(dir.path(), 0, None, &["--config", "ripcord.yaml"]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let one: Vec<std::net::IpAddr> = vec!["127.0.0.2".parse().unwrap()];
    let many: Vec<std::net::IpAddr> = (0..150u8)
        .map(|k| std::net::IpAddr::from([127, 1, 0, k + 1]))
        .collect();
    let floods = [
        support::silent_flood(r.http, one, 150, stop.clone()),
        support::silent_flood(r.http, many, 150, stop.clone()),
    ];
    // Every flood connection opened (and the 64 slots full) before
    // Alertmanager comes.
    let full = wait_until(Duration::from_secs(30), || {
        floods.iter().all(|f| f.opened() >= 150)
    });
    assert!(full, "the flood never opened its connections");
    let am = Alertmanager::start(&r.webhook_url(), None);
    let labels = instance_down("i-silent");
    am.push(&[alert(&labels, now_millis() - 1_000, None)]);
    let decided = wait_until(Duration::from_secs(30), || r.decisions().len() >= 2);
    let delivered = decided && {
        let before = am.notifications();
        wait_until(Duration::from_secs(30), || {
            am.notifications() >= before + 2.0
        })
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened: usize = floods.into_iter().map(|f| f.thread.join().unwrap()).sum();
    assert!(opened >= 300, "the flood opened only {opened} connections");
    assert!(
        decided,
        "nothing decided under the flood:\n{}\n--- alertmanager:\n{}",
        r.stderr.tail(20),
        am.log.tail(20)
    );
    assert!(delivered, "repeats not delivered:\n{}", am.log.tail(20));
    let fp = am.fingerprint("InstanceDown");
    assert_eq!(actions(&r.decisions(), &fp), ["rollback", "notify"]);
    assert_eq!(am.failures(), 0.0, "{}", am.log.tail(20));
    println!(
        "flood: {opened} silent connections opened; alertmanager: {} notifications, {} failed",
        am.notifications(),
        am.failures()
    );
    assert!(r.terminate().success());
}
