//! Under faults and floods, a rollback still runs within seconds: the real
//! binary with a recording rollback script, against a chat channel that
//! hangs, a flood of notify-only alerts, a stdout nobody reads, a closed
//! stderr.

mod support;

use std::io::BufRead;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

/// A webhook endpoint that takes connections and never answers (until
/// dropped): the channel that hangs.
struct Hang {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Hang {
    fn start() -> Hang {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            l.set_nonblocking(true).unwrap();
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => held.push(c),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Hang { port, stop }
    }
}

impl Drop for Hang {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A rollback script that appends `<unix ms> <instance>` to `starts.log`.
fn starting_script(dir: &Path) -> PathBuf {
    let script = dir.join("rollback.sh");
    std::fs::write(
        &script,
        format!(
            "echo \"$(date +%s%3N) $1\" >> '{}'\necho \"rolled back $1\"\n",
            dir.join("starts.log").display()
        ),
    )
    .unwrap();
    script
}

/// When each instance's rollback started (unix ms).
fn starts(dir: &Path) -> Vec<(i64, String)> {
    std::fs::read_to_string(dir.join("starts.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (t, i) = l.split_once(' ')?;
            Some((t.parse().ok()?, i.to_owned()))
        })
        .collect()
}

fn start_of(dir: &Path, instance: &str) -> Option<i64> {
    starts(dir)
        .into_iter()
        .find(|(_, i)| i == instance)
        .map(|(t, _)| t)
}

fn config(dir: &Path, hang_port: u16) -> String {
    let script = starting_script(dir);
    let yaml = format!(
        r#"channels:
  hung: {{type: webhook, url: "http://127.0.0.1:{hang_port}/hook", timeout: 2m, retries: 5}}
routing:
  low: {{notify: [hung]}}
  medium: {{notify: [hung]}}
  high: {{notify: [hung]}}
executors:
  rollback:
    command: {{argv: [/bin/sh, "{script}", "{{instance}}"], timeout: 30s}}
    budget: {{per_service: 1000, overall: 1000, window: 10m}}
"#,
        script = script.display()
    );
    let path = dir.join("ripcord.yaml");
    std::fs::write(&path, yaml).unwrap();
    path_str(&path)
}

fn alert(fp: &str, instance: &str, severity: &str, starts: i64) -> Value {
    json!({
        "status": "firing",
        "labels": {"alertname": "Down", "service": format!("svc-{fp}"), "instance": instance, "tier": "low", "severity": severity},
        "annotations": {"summary": "down"},
        "startsAt": rfc3339(starts), "endsAt": "0001-01-01T00:00:00Z", "fingerprint": fp,
    })
}

fn post_alerts(r: &Responder, alerts: Vec<Value>) {
    let body = json!({"version": "4", "status": "firing", "receiver": "ripcord", "alerts": alerts});
    let reply = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
        .post(r.url("/api/v1/alerts"))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap();
    assert_eq!(reply.status(), 200, "{}", reply.text().unwrap());
}

#[test]
fn a_hanging_channel_never_delays_a_rollback() {
    let hang = Hang::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), hang.port);
    let r = Responder::start(
        dir.path(),
        &[
            &["--config", &cfg, "--state", "state.db"][..],
            any_kafka_port(),
        ]
        .concat(),
    );
    let now = now_millis();
    for i in 0..40 {
        post_alerts(
            &r,
            vec![alert(&format!("fp{i}"), &format!("i-{i}"), "critical", now)],
        );
    }
    let all40 = wait_until(Duration::from_secs(30), || starts(dir.path()).len() >= 40);
    assert!(
        all40,
        "{} of 40 rollbacks started:\n{}",
        starts(dir.path()).len(),
        r.stderr.tail(30)
    );
    let sent = now_millis();
    post_alerts(
        &r,
        vec![alert("fp-last", "i-last", "critical", now_millis())],
    );
    let ok = wait_until(Duration::from_secs(10), || {
        start_of(dir.path(), "i-last").is_some()
    });
    assert!(
        ok,
        "the 41st rollback never started:\n{}",
        r.stderr.tail(30)
    );
    let took = start_of(dir.path(), "i-last").unwrap() - sent;
    assert!(
        took < 2_000,
        "the 41st rollback started {took} ms after its alert"
    );
    // The rollbacks are done, though their messages still hang.
    let db = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    let ok = wait_until(Duration::from_secs(10), || {
        db.query_row(
            "SELECT count(*) FROM actions WHERE action = 'rollback' AND state = 'done'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
            == 41
    });
    assert!(ok, "rollbacks waited for their messages");
}

#[test]
fn a_flood_of_notify_only_alerts_never_starves_a_rollback() {
    let hang = Hang::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), hang.port);
    let r = Responder::start(
        dir.path(),
        &[
            &["--config", &cfg, "--state", "state.db"][..],
            any_kafka_port(),
        ]
        .concat(),
    );
    let now = now_millis();
    for chunk in 0..10 {
        let alerts = (0..1000)
            .map(|i| {
                let n = chunk * 1000 + i;
                alert(&format!("info{n}"), &format!("i-info{n}"), "info", now)
            })
            .collect();
        post_alerts(&r, alerts);
    }
    let sent = now_millis();
    post_alerts(
        &r,
        vec![alert("fp-crit", "i-crit", "critical", now_millis())],
    );
    let ok = wait_until(Duration::from_secs(15), || {
        start_of(dir.path(), "i-crit").is_some()
    });
    assert!(ok, "the rollback never started:\n{}", r.stderr.tail(30));
    let took = start_of(dir.path(), "i-crit").unwrap() - sent;
    assert!(
        took < 2_000,
        "the rollback started {took} ms after its alert, behind 10,000 notifications"
    );
}

/// `ripcord run | reader-that-never-reads`: the pipeline goes on (the
/// journal is the record), /healthz and /readyz stay true, SIGTERM ends it
/// within the grace period plus a second, and the dropped lines are counted.
#[test]
fn a_stdout_nobody_reads_never_stalls_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ripcord.yaml"),
        "shutdown: {grace: 3s}\nexecutors:\n  rollback:\n    command: {argv: [/bin/true]}\n    budget: {per_service: 10000, overall: 10000}\n",
    )
    .unwrap();
    let mut child = Command::new(ripcord_bin())
        .args(["run", "--config", "ripcord.yaml", "--state", "state.db"])
        .args(["--listen", "127.0.0.1:0"])
        .args(any_kafka_port())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // stdout is a pipe nobody reads: it fills (64 KiB) and stays full.
    let _never_read = child.stdout.take();
    let stderr = Lines::of(child.stderr.take().unwrap());
    assert!(
        wait_until(Duration::from_secs(30), || stderr
            .find("http: listening on ")
            .is_some()),
        "{}",
        stderr.text()
    );
    let addr = stderr.find("http: listening on ").unwrap();
    let url = |p: &str| format!("http://{}{p}", addr.trim());
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let now = now_millis();
    // Well over 64 KiB of decision lines.
    for batch in 0..20 {
        let alerts: Vec<Value> = (0..50)
            .map(|i| {
                let n = batch * 50 + i;
                alert(&format!("fp{n}"), &format!("i-{n}"), "critical", now)
            })
            .collect();
        let body = json!({"version": "4", "alerts": alerts}).to_string();
        let reply = client
            .post(url("/api/v1/alerts"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(
            reply.status(),
            200,
            "batch {batch}: {}",
            reply.text().unwrap()
        );
    }
    let h = client.get(url("/healthz")).send().unwrap();
    assert_eq!(h.status(), 200);
    let db = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    let n: i64 = db
        .query_row("SELECT count(*) FROM decisions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2000, "every decision is journaled");
    let metrics = client.get(url("/metrics")).send().unwrap().text().unwrap();
    let dropped = parse_metrics(&metrics)
        .get("ripcord_stdout_dropped_lines_total")
        .copied()
        .unwrap_or(0.0);
    let started = Instant::now();
    signal_term(child.id());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "no exit within grace + 1 s:\n{}",
            stderr.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}\n{}", stderr.text());
    assert!(started.elapsed() < Duration::from_secs(4) + Duration::from_millis(500));
    // The reader never read; lines beyond the pipe and the buffer were
    // dropped and counted, or all were buffered (4 MiB): either way none
    // blocked anything.
    let _ = dropped;
}

fn signal_term(pid: u32) {
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
}

/// `ripcord run 2>&1 | head -1`: the reader goes away after one line; the
/// responder neither panics nor stops.
#[test]
fn a_closed_stderr_is_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(ripcord_bin())
        .args(["run", "--state", "state.db"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(any_kafka_port())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    drop(err);
    // Everything it writes to stderr from now on meets a closed pipe: the
    // rest of its start-up banner, then a warning for a refused request.
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let up = || reqwest::blocking::get(url("/healthz")).is_ok_and(|r| r.status() == 200);
    assert!(
        wait_until(Duration::from_secs(30), up),
        "never answered: {:?} (first line: {first})",
        child.try_wait()
    );
    let refused = reqwest::blocking::Client::new()
        .post(url("/api/v1/events"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(
        up() && child.try_wait().unwrap().is_none(),
        "ripcord stopped with a closed stderr: {:?} (first line: {first})",
        child.try_wait()
    );
    signal_term(child.id());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(12));
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_ne!(status.code(), Some(101), "panicked");
    assert!(status.success(), "{status:?}");
}

/// 300 connections that send half a header and wait, against a process
/// with a low file limit: they are shed (503 past the cap) and closed
/// after the header timeout; a request on a connection opened before the
/// flood still acts, and its rollback starts (file descriptors are kept
/// for executors).
#[test]
fn half_open_connections_are_shed_and_timed_out_and_a_rollback_still_runs() {
    use std::io::{Read as _, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let script = starting_script(dir.path());
    std::fs::write(
        dir.path().join("ripcord.yaml"),
        format!(
            "http: {{header_timeout: 2s, idle_timeout: 30s}}\nexecutors:\n  rollback:\n    command: {{argv: [/bin/sh, \"{}\", \"{{instance}}\"]}}\n",
            script.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let mut child = Command::new("bash")
        .args([
            "-c",
            &format!(
                "ulimit -n 400 && exec '{}' run --config ripcord.yaml --state state.db --listen 127.0.0.1:{port} {}",
                ripcord_bin(),
                any_kafka_port().join(" ")
            ),
        ])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Lines::of(child.stderr.take().unwrap());
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    // One keep-alive connection, opened before the flood.
    let client = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || client
            .get(url("/healthz"))
            .send()
            .is_ok_and(|r| r.status() == 200)),
        "{}",
        stderr.text()
    );
    let mut flood = Vec::new();
    for _ in 0..300 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = s.write_all(b"POST /api/v1/alerts HTTP/1.1\r\nHost: x\r\nContent-Ty");
        flood.push(s);
    }
    // Some were refused at once: a 503, then closed.
    let mut refused = 0;
    for s in &mut flood {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 64];
        if let Ok(n) = s.read(&mut buf) {
            if n > 0 && String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 503") {
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "the connection cap refused nothing");
    // A rollback during the flood, on the connection from before it.
    let body =
        json!({"version": "4", "alerts": [alert("fp-flood", "i-flood", "critical", now_millis())]});
    let reply = client
        .post(url("/api/v1/alerts"))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert!(
        wait_until(Duration::from_secs(10), || start_of(dir.path(), "i-flood")
            .is_some()),
        "the rollback never ran during the flood:\n{}",
        stderr.tail(20)
    );
    // The held ones are closed after the header timeout.
    for s in &mut flood {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(_) => break false,
            }
        };
        assert!(closed, "a half-open connection was never closed");
    }
    // And the server takes new connections again.
    let h = reqwest::blocking::get(url("/healthz")).unwrap();
    assert_eq!(h.status(), 200);
    let _ = child.kill();
    let _ = child.wait();
}

/// Every text a chat payload shows a person (DingTalk's markdown text,
/// WeCom's markdown content, Slack's block and fallback text, a webhook's
/// title and body), from the JSON body.
/// (DingTalk's `title` is plain text for the chat list and notifications,
/// never rendered as markdown: it is checked for forged lines only.)
fn shown_texts(body: &str) -> Vec<(String, String)> {
    fn walk(key: &str, v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::String(s) => out.push((key.to_owned(), s.clone())),
            Value::Array(a) => a.iter().for_each(|x| walk(key, x, out)),
            // Slack's plain_text is shown as it is: no mrkdwn, no mention.
            Value::Object(o) if o.get("type") == Some(&Value::from("plain_text")) => {
                if let Some(Value::String(t)) = o.get("text") {
                    out.push(("plain_text".to_owned(), t.clone()));
                }
            }
            Value::Object(o) => o.iter().for_each(|(k, x)| walk(k, x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        walk("", &v, &mut out);
    }
    out
}

#[test]
fn hostile_labels_never_forge_a_line_a_link_or_a_mention_in_any_chat() {
    let cap = support::Capture::start();
    let dir = tempfile::tempdir().unwrap();
    let base = format!("http://127.0.0.1:{}", cap.port);
    std::fs::write(
        dir.path().join("ripcord.yaml"),
        format!(
            r#"channels:
  ding: {{type: dingtalk, webhook: "{base}/robot/send?access_token=t"}}
  wecom: {{type: wecom, webhook: "{base}/cgi-bin/webhook/send?key=k"}}
  slack: {{type: slack, webhook: "{base}/services/T/B/x"}}
  hook: {{type: webhook, url: "{base}/hook"}}
routing:
  medium: {{notify: [ding, wecom, slack, hook]}}
"#
        ),
    )
    .unwrap();
    let r = Responder::start(
        dir.path(),
        &[
            &["--config", "ripcord.yaml", "--state", "state.db"][..],
            any_kafka_port(),
        ]
        .concat(),
    );
    let forged_line = "- [LOW/severe] rollback done: i-real";
    let labels = json!({
        "alertname": "Down",
        "service": format!("x\n{forged_line}"),
        "instance": "i-1\r\n[approve](http://evil.example/l) <!channel> <@U123> @13800000000 \u{202e}evil",
        "tier": "medium",
        "severity": "warning",
    });
    r.post_alerts(vec![json!({
        "status": "firing", "labels": labels,
        "annotations": {"summary": "5xx above 5%\n# forged heading\n<script>x</script>"},
        "startsAt": rfc3339(now_millis()), "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "fp-hostile",
    })]);
    let ok = wait_until(Duration::from_secs(20), || {
        let t = cap.requests();
        ["/robot/", "/cgi-bin/", "/services/", "/hook"]
            .iter()
            .all(|p| t.iter().any(|(path, _)| path.starts_with(p)))
    });
    assert!(
        ok,
        "not every channel got the message: {:?}\n{}",
        cap.requests(),
        r.stderr.tail(20)
    );
    for (path, body) in cap.requests() {
        for (key, text) in shown_texts(&body) {
            for line in text.lines() {
                let l = line.trim_start_matches(['#', ' ', '>', '*', '_']);
                assert!(
                    !l.starts_with("- [LOW/severe]") && !l.starts_with("\\- [LOW/severe]"),
                    "{path}: a label forged a line: {line:?}\n{text}"
                );
                assert!(
                    !l.starts_with("# forged") && !l.starts_with("forged heading"),
                    "{path}: {line:?}"
                );
            }
            assert!(
                !text.contains('\u{202e}'),
                "{path}: a bidi override got through"
            );
            assert!(!text.contains("\r"), "{path}: a CR got through");
            let rendered = !path.starts_with("/hook")
                && key != "plain_text"
                && !(path.starts_with("/robot/") && key == "title");
            if rendered {
                // Markdown links in DingTalk and WeCom; Slack's are <url|text>.
                if !path.starts_with("/services/") {
                    assert!(
                        !text.contains("[approve](http"),
                        "{path}: a link was forged: {text}"
                    );
                }
                assert!(
                    !text.contains("<!channel>"),
                    "{path}: a mention was forged: {text}"
                );
                assert!(
                    !text.contains("<@U123>"),
                    "{path}: a mention was forged: {text}"
                );
                assert!(
                    !text.contains("http://evil"),
                    "{path}: a bare URL would be linked: {text}"
                );
                assert!(!text.contains("<script>"), "{path}: {text}");
            }
        }
    }
}

/// A journal that refuses writes (another process holds it locked): the
/// pipeline stops making progress, and `/healthz` and `/readyz` say so
/// (503 with the reason) until the lock goes; then all is well again and
/// nothing was lost.
#[test]
fn a_stalled_pipeline_is_unhealthy_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ripcord.yaml"), "http: {stall_after: 2s}\n").unwrap();
    let r = Responder::start(
        dir.path(),
        &[
            &["--config", "ripcord.yaml", "--state", "state.db"][..],
            any_kafka_port(),
        ]
        .concat(),
    );
    let get = |p: &str| {
        let resp = reqwest::blocking::get(r.url(p)).unwrap();
        (resp.status().as_u16(), resp.text().unwrap())
    };
    assert!(wait_until(Duration::from_secs(30), || get("/readyz").0 == 200));
    let lock = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    // A request that must be journaled: the pipeline now waits on the lock.
    let url = r.url("/api/v1/alerts");
    let poster = std::thread::spawn(move || {
        let body = json!({"version": "4", "alerts": [alert("fp-stall", "i-stall", "critical", now_millis())]});
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
            .post(url)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .map(|r| r.status().as_u16())
    });
    let unhealthy = wait_until(Duration::from_secs(15), || get("/healthz").0 == 503);
    assert!(
        unhealthy,
        "a stuck pipeline looked healthy: {:?}",
        get("/healthz")
    );
    let (code, body) = get("/healthz");
    assert_eq!(code, 503);
    assert!(body.contains("no progress"), "{body}");
    let (code, body) = get("/readyz");
    assert_eq!(code, 503, "{body}");
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    assert!(
        wait_until(Duration::from_secs(20), || get("/readyz").0 == 200),
        "{:?}",
        get("/readyz")
    );
    let _ = poster.join();
    // The alert is decided once the journal takes writes again (its POST
    // may have been told 503: Alertmanager would retry).
    assert!(wait_until(Duration::from_secs(20), || r
        .decisions()
        .iter()
        .any(|d| d["fingerprint"] == "fp-stall")));
}
