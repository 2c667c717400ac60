//! The HTTP receiver end to end: `ripcord run` as its own process, real
//! HTTP over TCP. Authentication, body limits, malformed and misdirected
//! bodies, events from the future, concurrent posts, the "journaled before
//! answered" promise, health and metrics, graceful shutdown and restart.
//!
//! The events are Alertmanager webhook payloads for the shipped
//! `alertmanager-forwarded` rule: an alert decides the moment it arrives,
//! and a redelivery of an alert already seen decides nothing. That makes
//! "nothing of a refused request was applied" provable: send the same
//! alerts again in a good request, and they must decide in full.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    Lines, free_port, metric, now_millis, parse_metrics, rfc3339, ripcord_bin, wait_until,
};

const TOKEN: &str = "t0ken-for-the-e2e-tests";

// ---------------------------------------------------------------------------
// A `ripcord run` child whose environment and listen address the test
// chooses (support::Responder fixes both).

struct Live {
    child: Child,
    dir: PathBuf,
    /// Where to connect (a wildcard listen address is reached on loopback).
    http: SocketAddr,
    stdout: Lines,
    stderr: Lines,
}

fn command(dir: &Path, listen: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(ripcord_bin());
    c.arg("run")
        .args(["--listen", listen])
        .args(args)
        .current_dir(dir)
        .env(
            "RUST_LOG",
            std::env::var("RIPCORD_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .env_remove("RIPCORD_TEST_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

impl Live {
    /// `ripcord run --listen <listen> --state state.db <args>` in `dir`, with
    /// `env` added; waits until it listens and says it is ready.
    fn start(dir: &Path, listen: &str, args: &[&str], env: &[(&str, &str)]) -> Live {
        let mut child = command(dir, listen, args, env)
            .args(["--state", "state.db"])
            .spawn()
            .expect("spawn ripcord run");
        let stdout = Lines::of(child.stdout.take().unwrap());
        let stderr = Lines::of(child.stderr.take().unwrap());
        let ok = wait_until(Duration::from_secs(30), || {
            stderr.find("http: listening on ").is_some()
        });
        assert!(ok, "ripcord did not start:\n{}", stderr.text());
        let mut http: SocketAddr = stderr
            .find("http: listening on ")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        if http.ip().is_unspecified() {
            http.set_ip([127, 0, 0, 1].into());
        }
        let live = Live {
            child,
            dir: dir.to_path_buf(),
            http,
            stdout,
            stderr,
        };
        let ready = wait_until(Duration::from_secs(30), || {
            reqwest::blocking::get(live.url("/readyz")).is_ok_and(|r| r.status() == 200)
        });
        assert!(ready, "/readyz never said ready:\n{}", live.stderr.text());
        live
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    fn decisions(&self) -> Vec<Value> {
        self.stdout.decisions()
    }

    fn metrics(&self) -> BTreeMap<String, f64> {
        parse_metrics(
            &reqwest::blocking::get(self.url("/metrics"))
                .unwrap()
                .text()
                .unwrap(),
        )
    }

    fn db(&self) -> PathBuf {
        self.dir.join("state.db")
    }

    /// SIGTERM, then waits for the exit.
    fn terminate(mut self, timeout: Duration) -> (ExitStatus, Duration, Lines, Lines) {
        let started = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(200));
                return (
                    status,
                    started.elapsed(),
                    self.stdout.clone(),
                    self.stderr.clone(),
                );
            }
            if started.elapsed() > timeout {
                let _ = self.child.kill();
                panic!(
                    "ripcord did not exit within {timeout:?} of SIGTERM:\n{}",
                    self.stderr.text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9: no chance to clean up.
    fn kill9(mut self) -> Lines {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(200));
        self.stdout.clone()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, yaml: &str) -> String {
    let path = dir.join("ripcord.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

/// A responder with the shipped rules and `config` (if any), on loopback.
fn start_with(config: Option<&str>) -> (tempfile::TempDir, Live) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = Vec::new();
    let cfg;
    if let Some(yaml) = config {
        cfg = write_config(dir.path(), yaml);
        args = vec!["--config", cfg.as_str()];
    }
    let live = Live::start(dir.path(), "127.0.0.1:0", &args, &[]);
    (dir, live)
}

// ---------------------------------------------------------------------------
// Requests.

#[derive(Debug)]
struct Reply {
    code: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    fn error(&self) -> String {
        let v: Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {}", self.body));
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no `error` in {}", self.body))
            .to_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn send(
    c: &reqwest::blocking::Client,
    url: &str,
    content_type: Option<&str>,
    auth: Option<&str>,
    body: impl Into<reqwest::blocking::Body>,
) -> reqwest::Result<Reply> {
    let mut req = c.post(url).body(body);
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let r = req.send()?;
    let code = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.text()?;
    Ok(Reply {
        code,
        headers,
        body,
    })
}

fn post(url: &str, content_type: Option<&str>, body: impl Into<reqwest::blocking::Body>) -> Reply {
    send(&client(), url, content_type, None, body).unwrap()
}

fn post_json(url: &str, body: impl Into<reqwest::blocking::Body>) -> Reply {
    post(url, Some("application/json"), body)
}

fn get(url: &str) -> Reply {
    let r = client().get(url).send().unwrap();
    Reply {
        code: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().unwrap(),
    }
}

// ---------------------------------------------------------------------------
// Alertmanager webhook payloads, as Alertmanager 0.25 writes them.

fn labels(alertname: &str, service: &str, instance: &str, tier: &str, severity: &str) -> Value {
    json!({
        "alertname": alertname, "service": service, "instance": instance,
        "tier": tier, "severity": severity, "job": "node",
    })
}

fn firing(fp: &str, labels: &Value, starts: i64) -> Value {
    json!({
        "status": "firing",
        "labels": labels,
        "annotations": {"summary": "instance down"},
        "startsAt": rfc3339(starts),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0",
        "fingerprint": fp,
    })
}

fn resolved(fp: &str, labels: &Value, starts: i64, ends: i64) -> Value {
    json!({
        "status": "resolved",
        "labels": labels,
        "annotations": {"summary": "instance down"},
        "startsAt": rfc3339(starts),
        "endsAt": rfc3339(ends),
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0",
        "fingerprint": fp,
    })
}

fn webhook(alerts: &[Value]) -> Value {
    let status = if alerts.iter().any(|a| a["status"] == "firing") {
        "firing"
    } else {
        "resolved"
    };
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"InstanceDown\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "ripcord",
        "groupLabels": {"alertname": "InstanceDown"},
        "commonLabels": {"alertname": "InstanceDown"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts,
    })
}

/// A webhook payload with one firing critical alert for a low-tier
/// service: the tier policy is rollback + notify.
fn low_critical(fp: &str) -> String {
    let l = labels(
        "InstanceDown",
        "web-ui",
        &format!("i-{fp}"),
        "low",
        "critical",
    );
    webhook(&[firing(fp, &l, now_millis())]).to_string()
}

// ---------------------------------------------------------------------------
// What came out.

fn http_count(m: &BTreeMap<String, f64>, endpoint: &str, code: u16) -> f64 {
    metric(
        m,
        &format!(r#"ripcord_http_requests_total{{endpoint="{endpoint}",code="{code}"}}"#),
    )
}

/// Actions decided per fingerprint, in printed order.
fn by_fingerprint(decisions: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in decisions {
        out.entry(d["fingerprint"].as_str().unwrap_or("").to_owned())
            .or_default()
            .push(d["action"].as_str().unwrap().to_owned());
    }
    out
}

fn assert_no_key_twice(decisions: &[Value]) {
    let mut seen = BTreeSet::new();
    for d in decisions {
        let k = d["key"].as_str().unwrap();
        assert!(seen.insert(k.to_owned()), "decision {k} printed twice");
    }
}

fn db(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

fn count(path: &Path, sql: &str) -> i64 {
    db(path).query_row(sql, [], |r| r.get(0)).unwrap()
}

/// The journaled actions for one alert, in decision order.
fn journaled(conn: &rusqlite::Connection, fp: &str) -> Vec<String> {
    let mut st = conn
        .prepare("SELECT action FROM decisions WHERE fingerprint = ?1 ORDER BY seq")
        .unwrap();
    st.query_map([fp], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Writes `head` and `body` on a fresh connection and reads the status code
/// of the answer. The read gives up after 20 s: an answer that needs the
/// rest of a body never sent never comes.
fn raw_status(addr: SocketAddr, head: &str, body: &[u8]) -> Result<u16, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    s.write_all(body).map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) => return Err(format!("closed after {:?}", String::from_utf8_lossy(&got))),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("no answer: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&got);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not HTTP: {text}"))
}

// ---------------------------------------------------------------------------
// Authentication.

#[test]
fn bearer_token_guards_both_intake_endpoints_and_a_wrong_one_decides_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "http:\n  token: {env: RIPCORD_TEST_TOKEN}\n");
    // A token makes a non-loopback listener acceptable.
    let r = Live::start(
        dir.path(),
        "0.0.0.0:0",
        &["--config", &cfg],
        &[("RIPCORD_TEST_TOKEN", TOKEN)],
    );
    let c = client();
    let alert = low_critical("fp-auth");
    let wrong = [
        None,
        Some("Bearer wrong".to_owned()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some(TOKEN.to_owned()),
        Some(format!("Basic {TOKEN}")),
        Some("Bearer ".to_owned()),
    ];
    for endpoint in ["/api/v1/alerts", "/api/v1/events"] {
        for auth in &wrong {
            let reply = send(
                &c,
                &r.url(endpoint),
                Some("application/json"),
                auth.as_deref(),
                alert.clone(),
            )
            .unwrap();
            assert_eq!(reply.code, 401, "{endpoint} with {auth:?}: {reply:?}");
            let challenge = reply
                .headers
                .get("www-authenticate")
                .unwrap_or_else(|| panic!("401 without WWW-Authenticate: {reply:?}"))
                .to_str()
                .unwrap();
            assert!(challenge.starts_with("Bearer"), "{challenge}");
            assert!(reply.error().contains("bearer token"), "{}", reply.body);
        }
    }
    // Health, readiness and metrics stay open for probes and scrapers.
    assert_eq!(get(&r.url("/healthz")).code, 200);
    assert_eq!(get(&r.url("/readyz")).code, 200);
    let m = r.metrics();
    assert_eq!(http_count(&m, "/api/v1/alerts", 401), wrong.len() as f64);
    assert_eq!(http_count(&m, "/api/v1/events", 401), wrong.len() as f64);
    assert_eq!(
        metric(
            &m,
            r#"ripcord_events_total{source="http",outcome="processed"}"#
        ),
        0.0
    );
    // Refused means refused: nothing decided, nothing journaled.
    assert!(r.decisions().is_empty(), "{:?}", r.decisions());
    assert_eq!(count(&r.db(), "SELECT count(*) FROM decisions"), 0);
    assert_eq!(count(&r.db(), "SELECT count(*) FROM inbox"), 0);

    // The right token: accepted, and the alert (never applied before)
    // decides in full.
    let bearer = format!("Bearer {TOKEN}");
    let ok = send(
        &c,
        &r.url("/api/v1/alerts"),
        Some("application/json"),
        Some(&bearer),
        alert,
    )
    .unwrap();
    assert_eq!(ok.code, 200, "{ok:?}");
    assert_eq!(ok.json()["decisions"], 2, "{}", ok.body);
    assert!(
        wait_until(Duration::from_secs(10), || r.decisions().len() == 2),
        "{:?}",
        r.decisions()
    );
    assert_eq!(
        by_fingerprint(&r.decisions())["fp-auth"],
        ["rollback", "notify"]
    );
    let ok = send(
        &c,
        &r.url("/api/v1/events"),
        Some("application/json"),
        Some(&bearer),
        low_critical("fp-auth-2"),
    )
    .unwrap();
    assert_eq!(ok.code, 200, "{ok:?}");
    assert_eq!(ok.json()["decisions"], 2, "{}", ok.body);
}

#[test]
fn a_non_loopback_listener_without_a_token_is_refused_at_start() {
    // From the command line.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let out = command(dir.path(), &listen, &["--state", "state.db"], &[])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{listen} is not a loopback address")) && err.contains("http.token"),
        "the message must name the address and the missing token:\n{err}"
    );
    assert!(!err.contains("http: listening"), "{err}");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something listens on {port}"
    );
    assert!(
        !dir.path().join("state.db").exists(),
        "refused before touching the journal"
    );

    // From the config file.
    let port = free_port();
    let cfg = write_config(
        dir.path(),
        &format!("http:\n  listen: \"0.0.0.0:{port}\"\n"),
    );
    let out = Command::new(ripcord_bin())
        .args(["run", "--config", &cfg, "--state", "state.db"])
        .current_dir(dir.path())
        .env_remove("RIPCORD_TEST_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("ripcord.yaml") && err.contains("not loopback") && err.contains("http.token"),
        "{err}"
    );
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());

    // A token named but not set is refused too, naming the variable.
    let cfg = write_config(
        dir.path(),
        &format!("http:\n  listen: \"0.0.0.0:{port}\"\n  token: {{env: RIPCORD_TEST_TOKEN}}\n"),
    );
    let out = Command::new(ripcord_bin())
        .args(["run", "--config", &cfg, "--state", "state.db"])
        .current_dir(dir.path())
        .env_remove("RIPCORD_TEST_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("RIPCORD_TEST_TOKEN") && err.contains("not set"),
        "{err}"
    );
    assert!(!err.contains(TOKEN));
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn an_oversize_body_is_413_whatever_the_token_and_no_body_is_read_before_either() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "http:\n  token: {env: RIPCORD_TEST_TOKEN}\n  max_body_bytes: 2048\n",
    );
    let r = Live::start(
        dir.path(),
        "127.0.0.1:0",
        &["--config", &cfg],
        &[("RIPCORD_TEST_TOKEN", TOKEN)],
    );
    // Over the limit, from an HTTP client: 413 whatever the token, and
    // answered from the announced length.
    let c = client();
    let big = format!("[{}]", vec![low_critical("fp-big"); 40].join(","));
    assert!(big.len() > 8 * 2048);
    for auth in [None, Some("Bearer nope"), Some(&*format!("Bearer {TOKEN}"))] {
        for endpoint in ["/api/v1/alerts", "/api/v1/events"] {
            let reply = send(
                &c,
                &r.url(endpoint),
                Some("application/json"),
                auth,
                big.clone(),
            )
            .unwrap_or_else(|e| panic!("{endpoint} {auth:?}: no answer: {e:?}"));
            assert_eq!(reply.code, 413, "{endpoint} {auth:?}: {reply:?}");
        }
    }

    // The proof that the body is not read: announce 10 MB, send none of it.
    // A receiver that read (or waited for) the body first would never
    // answer.
    let head = |auth: &str, length: &str| {
        format!(
            "POST /api/v1/alerts HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             {length}{auth}\r\n",
            r.http
        )
    };
    let ten_mb = "Content-Length: 10000000\r\n";
    assert_eq!(raw_status(r.http, &head("", ten_mb), b""), Ok(413));
    assert_eq!(
        raw_status(r.http, &head("Authorization: Bearer nope\r\n", ten_mb), b""),
        Ok(413)
    );
    // A body of unannounced length (chunked) without the token: 401
    // before any of it is read.
    let chunked = "Transfer-Encoding: chunked\r\n";
    assert_eq!(raw_status(r.http, &head("", chunked), b""), Ok(401));
    assert_eq!(
        raw_status(
            r.http,
            &head("Authorization: Bearer nope\r\n", chunked),
            b""
        ),
        Ok(401)
    );
    // With the right token the body is read, and refused once it passes
    // the limit.
    assert_eq!(
        raw_status(
            r.http,
            &head(&format!("Authorization: Bearer {TOKEN}\r\n"), chunked),
            format!("1000\r\n{}\r\n", " ".repeat(4096)).as_bytes()
        ),
        Ok(413)
    );
    assert!(r.decisions().is_empty());
    let m = r.metrics();
    assert_eq!(http_count(&m, "/api/v1/alerts", 413), 6.0);
    assert_eq!(http_count(&m, "/api/v1/events", 413), 3.0);
    assert_eq!(http_count(&m, "/api/v1/alerts", 401), 2.0);
}

#[test]

fn the_bearer_scheme_is_case_insensitive() {
    // RFC 9110 §11.1: the authentication scheme is a case-insensitive token.
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "http:\n  token: {env: RIPCORD_TEST_TOKEN}\n");
    let r = Live::start(
        dir.path(),
        "127.0.0.1:0",
        &["--config", &cfg],
        &[("RIPCORD_TEST_TOKEN", TOKEN)],
    );
    let c = client();
    for (i, scheme) in ["bearer", "BEARER"].iter().enumerate() {
        let reply = send(
            &c,
            &r.url("/api/v1/alerts"),
            Some("application/json"),
            Some(&format!("{scheme} {TOKEN}")),
            low_critical(&format!("fp-scheme-{i}")),
        )
        .unwrap();
        assert_eq!(reply.code, 200, "{scheme}: {reply:?}");
    }
}

// ---------------------------------------------------------------------------
// Bodies the receiver refuses.

#[test]
fn an_oversize_body_is_413_and_nothing_of_it_is_applied() {
    let (_dir, r) = start_with(Some("http:\n  max_body_bytes: 2048\n"));
    // One alert, padded past the limit by its annotation.
    let l = labels("InstanceDown", "web-ui", "i-big", "low", "critical");
    let mut alert = firing("fp-big", &l, now_millis());
    alert["annotations"]["description"] = json!("x".repeat(3000));
    let big = webhook(std::slice::from_ref(&alert)).to_string();
    assert!(big.len() > 2048);
    for endpoint in ["/api/v1/alerts", "/api/v1/events"] {
        let reply = post_json(&r.url(endpoint), big.clone());
        assert_eq!(reply.code, 413, "{endpoint}: {reply:?}");
        // Without a Content-Length (chunked), the limit holds as well.
        let chunked = reqwest::blocking::Body::new(std::io::Cursor::new(big.clone().into_bytes()));
        let reply = post_json(&r.url(endpoint), chunked);
        assert_eq!(reply.code, 413, "{endpoint}, chunked: {reply:?}");
    }
    // Refused before anything is queued: the journal holds nothing (and
    // the fresh decisions below show nothing was applied later either).
    assert_eq!(count(&r.db(), "SELECT count(*) FROM decisions"), 0);
    assert!(r.decisions().is_empty(), "{:?}", r.decisions());
    assert_eq!(count(&r.db(), "SELECT count(*) FROM inbox"), 0);
    // The same alert under the limit: it was never applied, so it decides
    // in full now (a repeat of an applied alert would decide nothing).
    alert["annotations"]["description"] = json!("short");
    let reply = post_json(&r.url("/api/v1/alerts"), webhook(&[alert]).to_string());
    assert_eq!(reply.code, 200, "{reply:?}");
    assert_eq!(reply.json()["decisions"], 2);
    assert!(wait_until(Duration::from_secs(10), || r.decisions().len() == 2));
    assert_eq!(
        by_fingerprint(&r.decisions())["fp-big"],
        ["rollback", "notify"]
    );
}

#[test]

fn an_oversize_body_is_counted_in_the_request_metrics() {
    let (_dir, r) = start_with(Some("http:\n  max_body_bytes: 2048\n"));
    let big = format!("[{}]", vec![low_critical("fp-big"); 20].join(","));
    assert_eq!(post_json(&r.url("/api/v1/events"), big.clone()).code, 413);
    assert_eq!(post_json(&r.url("/api/v1/alerts"), big).code, 413);
    let m = r.metrics();
    assert_eq!(http_count(&m, "/api/v1/events", 413), 1.0, "{m:#?}");
    assert_eq!(http_count(&m, "/api/v1/alerts", 413), 1.0, "{m:#?}");
}

#[test]
fn malformed_bodies_are_400_naming_the_problem_and_apply_nothing() {
    let (_dir, r) = start_with(None);
    let now = now_millis();
    let a = low_critical("fp-a");
    let b = low_critical("fp-b");
    let sample = |v: &str| {
        format!(
            r#"{{"metric":"up","value":{v},"ts":{now},"labels":{{"service":"web-ui","instance":"i-1"}}}}"#
        )
    };
    let events = r.url("/api/v1/events");

    // Not JSON at all.
    let reply = post_json(&events, r#"{"metric": "up", "value":"#);
    assert_eq!(reply.code, 400, "{reply:?}");
    assert!(
        reply.error().starts_with("not valid JSON"),
        "{}",
        reply.body
    );
    let reply = post_json(
        &r.url("/api/v1/alerts"),
        "{\"version\": \"4\", \"alerts\": [",
    );
    assert_eq!(reply.code, 400, "{reply:?}");
    assert!(reply.error().contains("not valid JSON"), "{}", reply.body);

    // One bad element among good ones: the element and the field are named.
    let bad_array = format!("[{a},{b},{}]", sample(r#""zero""#));
    let reply = post_json(&events, bad_array);
    assert_eq!(reply.code, 400, "{reply:?}");
    assert_eq!(
        reply.error(),
        r#"element 2: field `value` expected a number, got string "zero""#
    );
    // A bad alert inside a good-looking webhook payload.
    let mut bad_alert: Value = serde_json::from_str(&b).unwrap();
    bad_alert["alerts"][0]["status"] = json!("pending");
    let reply = post_json(&events, format!("[{a},{bad_alert}]"));
    assert_eq!(reply.code, 400, "{reply:?}");
    let e = reply.error();
    assert!(
        e.starts_with("element 1: field `alerts[0].status`") && e.contains("pending"),
        "{e}"
    );
    let reply = post_json(&r.url("/api/v1/alerts"), bad_alert.to_string());
    assert_eq!(reply.code, 400, "{reply:?}");
    assert!(reply.error().contains("alerts[0].status"), "{}", reply.body);

    // JSON lines with a bad line (blank lines still count as lines).
    let lines = format!("{a}\n\n{b}\n{}\n", sample("1").replace("\"value\":1,", ""));
    let reply = post(&events, Some("application/x-ndjson"), lines);
    assert_eq!(reply.code, 400, "{reply:?}");
    assert_eq!(reply.error(), "line 4: field `value` is missing");
    let reply = post(
        &events,
        Some("application/x-ndjson"),
        format!("{a}\n{{\"metric\"\n"),
    );
    assert_eq!(reply.code, 400, "{reply:?}");
    assert!(
        reply.error().starts_with("line 2: not valid JSON"),
        "{}",
        reply.body
    );

    // Nothing at all.
    for (ct, body) in [
        ("application/json", "[]"),
        ("application/json", r#"{"version":"4","alerts":[]}"#),
        ("application/x-ndjson", "\n\n"),
    ] {
        let reply = post(&events, Some(ct), body);
        assert_eq!(reply.code, 400, "{ct} {body:?}: {reply:?}");
        assert_eq!(reply.error(), "the body holds no events");
    }
    let reply = post_json(&events, r#"{"hello":"world"}"#);
    assert_eq!(reply.code, 400, "{reply:?}");
    assert!(
        reply.error().contains("not a recognised event"),
        "{}",
        reply.body
    );

    // None of the good events in those bodies was applied.
    // Refused before anything is queued: the journal holds nothing (and
    // the fresh decisions below show nothing was applied later either).
    assert_eq!(count(&r.db(), "SELECT count(*) FROM decisions"), 0);
    assert!(r.decisions().is_empty(), "{:?}", r.decisions());
    let m = r.metrics();
    assert_eq!(
        metric(
            &m,
            r#"ripcord_events_total{source="http",outcome="processed"}"#
        ),
        0.0
    );
    assert_eq!(http_count(&m, "/api/v1/events", 400), 9.0);
    assert_eq!(http_count(&m, "/api/v1/alerts", 400), 2.0);
    assert_eq!(count(&r.db(), "SELECT count(*) FROM inbox"), 0);

    // The good events alone: they decide in full, exactly what two fresh
    // alerts decide, so no part of the refused bodies had been applied.
    let reply = post_json(&events, format!("[{a},{b}]"));
    assert_eq!(reply.code, 200, "{reply:?}");
    assert_eq!(reply.json()["events"], 2);
    assert_eq!(reply.json()["decisions"], 4);
    // JSON lines of good events (an alert and a sample no rule acts on).
    let reply = post(
        &events,
        Some("application/x-ndjson; charset=utf-8"),
        format!("{}\n\n{}\n", low_critical("fp-c"), sample("1")),
    );
    assert_eq!(reply.code, 200, "{reply:?}");
    assert_eq!(reply.json()["events"], 2);
    assert_eq!(reply.json()["decisions"], 2);
    assert!(wait_until(Duration::from_secs(10), || r.decisions().len() == 6));
    let got = by_fingerprint(&r.decisions());
    for fp in ["fp-a", "fp-b", "fp-c"] {
        assert_eq!(got[fp], ["rollback", "notify"], "{got:?}");
    }
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(count(&r.db(), "SELECT count(*) FROM inbox"), 2);
}

#[test]
fn a_wrong_content_type_is_415_and_the_alerts_endpoint_takes_only_alertmanager_payloads() {
    let (_dir, r) = start_with(None);
    let a = low_critical("fp-ct");
    for endpoint in ["/api/v1/alerts", "/api/v1/events"] {
        let reply = post(&r.url(endpoint), Some("text/html"), a.clone());
        assert_eq!(reply.code, 415, "{endpoint}: {reply:?}");
        assert!(reply.error().contains("got text/html"), "{}", reply.body);
        let reply = post(&r.url(endpoint), None, a.clone());
        assert_eq!(reply.code, 415, "{endpoint}: {reply:?}");
        assert!(reply.error().contains("got none"), "{}", reply.body);
    }
    // JSON lines are for the events endpoint only.
    let reply = post(
        &r.url("/api/v1/alerts"),
        Some("application/x-ndjson"),
        a.clone(),
    );
    assert_eq!(reply.code, 415, "{reply:?}");

    // A well-formed event that is not an Alertmanager payload.
    let sample = format!(
        r#"{{"metric":"up","value":0,"ts":{},"labels":{{"service":"web-ui","instance":"i-1","tier":"low"}}}}"#,
        now_millis()
    );
    let reply = post_json(&r.url("/api/v1/alerts"), sample.clone());
    assert_eq!(reply.code, 400, "{reply:?}");
    assert!(
        reply.error().contains("Alertmanager webhook payload")
            && reply.error().contains("/api/v1/events"),
        "{}",
        reply.body
    );
    // An array is not a webhook payload either.
    let reply = post_json(&r.url("/api/v1/alerts"), format!("[{a}]"));
    assert_eq!(reply.code, 400, "{reply:?}");

    // Refused before anything is queued: the journal holds nothing (and
    // the fresh decisions below show nothing was applied later either).
    assert_eq!(count(&r.db(), "SELECT count(*) FROM decisions"), 0);
    assert!(r.decisions().is_empty(), "{:?}", r.decisions());
    let m = r.metrics();
    assert_eq!(http_count(&m, "/api/v1/alerts", 415), 3.0);
    assert_eq!(http_count(&m, "/api/v1/events", 415), 2.0);
    assert_eq!(http_count(&m, "/api/v1/alerts", 400), 2.0);

    // The same payload properly labelled decides in full: nothing refused
    // was applied. Media types are case-insensitive and take parameters.
    let reply = post(
        &r.url("/api/v1/alerts"),
        Some("Application/JSON; charset=utf-8"),
        a,
    );
    assert_eq!(reply.code, 200, "{reply:?}");
    assert_eq!(reply.json()["decisions"], 2);
    // The sample is fine on the events endpoint (no rule decides on one
    // sample of `up`).
    let reply = post_json(&r.url("/api/v1/events"), sample);
    assert_eq!(reply.code, 200, "{reply:?}");
    assert_eq!(reply.json()["events"], 1);
}

#[test]

fn json_seq_bodies_are_read_as_rfc_7464_text_sequences() {
    let (_dir, r) = start_with(None);
    let body = format!(
        "\x1e{}\n\x1e{}\n",
        low_critical("fp-seq-1"),
        low_critical("fp-seq-2")
    );
    let reply = post(&r.url("/api/v1/events"), Some("application/json-seq"), body);
    assert_eq!(reply.code, 200, "{reply:?}");
    assert_eq!(reply.json()["decisions"], 4);
}

#[test]
fn events_from_the_future_are_400_naming_the_time() {
    let (_dir, r) = start_with(None);
    let now = now_millis();
    let hour = 3_600_000;
    let ahead = now + hour;
    let sample = |ts: i64| {
        format!(
            r#"{{"metric":"up","value":1,"ts":{ts},"labels":{{"service":"web-ui","instance":"i-1","tier":"low"}}}}"#
        )
    };
    let a = low_critical("fp-now");

    let reply = post_json(&r.url("/api/v1/events"), sample(ahead));
    assert_eq!(reply.code, 400, "{reply:?}");
    let e = reply.error();
    assert!(
        e.contains(&rfc3339(ahead)) && e.contains("ahead of ripcord's clock") && e.contains("5m"),
        "{e}"
    );
    // A good alert in the same body is not applied.
    let reply = post_json(&r.url("/api/v1/events"), format!("[{a},{}]", sample(ahead)));
    assert_eq!(reply.code, 400, "{reply:?}");
    assert!(reply.error().contains("ahead of ripcord's clock"));
    // An alert that starts an hour from now.
    let l = labels("InstanceDown", "web-ui", "i-2", "low", "critical");
    let future_alert = webhook(&[firing("fp-future", &l, ahead)]).to_string();
    let reply = post_json(&r.url("/api/v1/alerts"), future_alert);
    assert_eq!(reply.code, 400, "{reply:?}");
    assert!(
        reply.error().contains("ahead of ripcord's clock"),
        "{}",
        reply.body
    );

    // Refused before anything is queued: the journal holds nothing (and
    // the fresh decisions below show nothing was applied later either).
    assert_eq!(count(&r.db(), "SELECT count(*) FROM decisions"), 0);
    assert!(r.decisions().is_empty(), "{:?}", r.decisions());
    let m = r.metrics();
    assert_eq!(
        metric(
            &m,
            r#"ripcord_events_total{source="http",outcome="from_the_future"}"#
        ),
        3.0
    );

    // Within the allowed skew (a minute ahead) is fine, and the alert from
    // the refused body decides in full.
    let reply = post_json(
        &r.url("/api/v1/events"),
        format!("[{a},{}]", sample(now + 60_000)),
    );
    assert_eq!(reply.code, 200, "{reply:?}");
    assert_eq!(reply.json()["decisions"], 2);
    assert!(wait_until(Duration::from_secs(10), || r.decisions().len() == 2));
    assert_eq!(
        by_fingerprint(&r.decisions())["fp-now"],
        ["rollback", "notify"]
    );
}

// ---------------------------------------------------------------------------
// Load, ordering, observability.

#[test]
fn concurrent_posts_each_decide_exactly_once() {
    let (_dir, r) = start_with(None);
    const THREADS: usize = 8;
    const REQUESTS: usize = 50;
    let url = r.url("/api/v1/alerts");
    let failures = Mutex::new(Vec::new());
    let redeliveries = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (url, failures, redeliveries) = (&url, &failures, &redeliveries);
            s.spawn(move || {
                let c = client();
                for i in 0..REQUESTS {
                    let fp = format!("fp-{t}-{i}");
                    let reply = send(&c, url, Some("application/json"), None, low_critical(&fp));
                    match reply {
                        Ok(rep) if rep.code == 200 && rep.json()["decisions"] == 2 => {}
                        other => failures.lock().unwrap().push(format!("{fp}: {other:?}")),
                    }
                    // Every fifth request, Alertmanager re-sends an alert
                    // this thread already delivered: it decides nothing.
                    if i % 5 == 4 {
                        let again = format!("fp-{t}-{}", i - 2);
                        let l = labels(
                            "InstanceDown",
                            "web-ui",
                            &format!("i-{again}"),
                            "low",
                            "critical",
                        );
                        let body = webhook(&[firing(&again, &l, now_millis() - 1000)]).to_string();
                        match send(&c, url, Some("application/json"), None, body) {
                            Ok(rep) if rep.code == 200 && rep.json()["decisions"] == 0 => {
                                redeliveries.fetch_add(1, Ordering::Relaxed);
                            }
                            other => failures
                                .lock()
                                .unwrap()
                                .push(format!("redelivery {again}: {other:?}")),
                        }
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    assert_eq!(redeliveries.load(Ordering::Relaxed), THREADS * REQUESTS / 5);

    let want = THREADS * REQUESTS * 2;
    assert!(
        wait_until(Duration::from_secs(20), || r.decisions().len() >= want),
        "{} of {want} decisions printed",
        r.decisions().len()
    );
    // Every request was answered after its commit: the journal holds all
    // that will ever be printed. Once stdout has printed as many, nothing
    // extra can still be on its way.
    let journaled = count(&r.db(), "SELECT count(*) FROM decisions");
    assert!(
        wait_until(Duration::from_secs(20), || r.decisions().len() as i64
            >= journaled),
        "{} of {journaled} journaled decisions printed",
        r.decisions().len()
    );
    assert_eq!(journaled as usize, want);
    let decisions = r.decisions();
    assert_eq!(decisions.len(), want);
    assert_no_key_twice(&decisions);
    let got = by_fingerprint(&decisions);
    assert_eq!(got.len(), THREADS * REQUESTS);
    for t in 0..THREADS {
        for i in 0..REQUESTS {
            assert_eq!(got[&format!("fp-{t}-{i}")], ["rollback", "notify"]);
        }
    }
    let m = r.metrics();
    assert_eq!(
        http_count(&m, "/api/v1/alerts", 200),
        (THREADS * REQUESTS + THREADS * REQUESTS / 5) as f64
    );
    assert_eq!(
        metric(
            &m,
            r#"ripcord_decisions_total{action="rollback",tier="low"}"#
        ),
        (THREADS * REQUESTS) as f64
    );
    assert_eq!(
        count(&r.db(), "SELECT count(*) FROM decisions"),
        want as i64
    );
}

#[test]
fn every_decision_is_journaled_and_printed_before_its_200() {
    let (_dir, r) = start_with(None);
    let conn = db(&r.db());
    let c = client();
    let url = r.url("/api/v1/alerts");
    let started = now_millis();
    for i in 0..30 {
        let fp = format!("fp-order-{i}");
        let l = labels(
            "InstanceDown",
            "web-ui",
            &format!("i-{i}"),
            "low",
            "critical",
        );
        let reply = send(
            &c,
            &url,
            Some("application/json"),
            None,
            webhook(&[firing(&fp, &l, started)]).to_string(),
        )
        .unwrap();
        assert_eq!(reply.code, 200, "{reply:?}");
        // The journal already has them: no waiting.
        assert_eq!(journaled(&conn, &fp), ["rollback", "notify"], "{fp}");
        // And they were written to stdout; give the reader thread a moment
        // to take them out of the pipe.
        let printed = || by_fingerprint(&r.decisions()).get(&fp).cloned();
        wait_until(Duration::from_secs(2), || {
            printed().is_some_and(|a| a.len() == 2)
        });
        assert_eq!(
            printed().unwrap_or_default(),
            ["rollback", "notify"],
            "{fp}"
        );

        // Every third alert ends: its resolve is in as well.
        if i % 3 == 0 {
            let reply = send(
                &c,
                &url,
                Some("application/json"),
                None,
                webhook(&[resolved(&fp, &l, started, now_millis())]).to_string(),
            )
            .unwrap();
            assert_eq!(reply.code, 200, "{reply:?}");
            assert_eq!(reply.json()["decisions"], 1, "{}", reply.body);
            assert_eq!(journaled(&conn, &fp), ["rollback", "notify", "resolve"]);
            wait_until(Duration::from_secs(2), || {
                printed().is_some_and(|a| a.len() == 3)
            });
            assert_eq!(
                printed().unwrap_or_default(),
                ["rollback", "notify", "resolve"]
            );
        }
    }
    let decisions = r.decisions();
    assert_no_key_twice(&decisions);
    // The resolve closes the incident the firing opened.
    for d in decisions.iter().filter(|d| d["action"] == "resolve") {
        let opened = decisions
            .iter()
            .find(|o| o["action"] == "rollback" && o["fingerprint"] == d["fingerprint"])
            .unwrap();
        assert_eq!(d["incident"], opened["incident"]);
    }
}

#[test]
fn health_readiness_and_openmetrics() {
    let (_dir, r) = start_with(None);
    let h = get(&r.url("/healthz"));
    assert_eq!((h.code, h.body.trim()), (200, "ok"));
    assert!(
        wait_until(Duration::from_secs(30), || get(&r.url("/readyz")).code
            == 200),
        "never ready:\n{}",
        r.stderr.text()
    );
    let ready = get(&r.url("/readyz"));
    assert!(ready.body.starts_with("ready: "), "{}", ready.body);
    assert_eq!(get(&r.url("/nope")).code, 404);
    assert_eq!(get(&r.url("/api/v1/alerts")).code, 405);

    // Traffic with known outcomes.
    for fp in ["fp-m1", "fp-m2", "fp-m3"] {
        assert_eq!(
            post_json(&r.url("/api/v1/alerts"), low_critical(fp)).code,
            200
        );
    }
    let l = labels("LogLag", "log-agent", "i-9", "medium", "warning");
    let medium = webhook(&[firing("fp-m4", &l, now_millis())]).to_string();
    assert_eq!(post_json(&r.url("/api/v1/events"), medium).code, 200);
    assert_eq!(post_json(&r.url("/api/v1/events"), "{").code, 400);
    assert_eq!(post_json(&r.url("/api/v1/events"), "[]").code, 400);
    assert_eq!(
        post(&r.url("/api/v1/events"), Some("text/html"), "<p>").code,
        415
    );
    assert_eq!(
        post_json(
            &r.url("/api/v1/alerts"),
            "{\"metric\":\"up\",\"value\":1,\"ts\":1}"
        )
        .code,
        400
    );

    let reply = get(&r.url("/metrics"));
    assert_eq!(reply.code, 200);
    let ct = reply.headers["content-type"].to_str().unwrap();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(
        reply.body.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    assert!(
        reply.body.contains("# TYPE ripcord_http_requests counter"),
        "{}",
        reply.body
    );
    let m = parse_metrics(&reply.body);
    let expect = [
        (
            r#"ripcord_http_requests_total{endpoint="/api/v1/alerts",code="200"}"#,
            3.0,
        ),
        (
            r#"ripcord_http_requests_total{endpoint="/api/v1/alerts",code="400"}"#,
            1.0,
        ),
        (
            r#"ripcord_http_requests_total{endpoint="/api/v1/events",code="200"}"#,
            1.0,
        ),
        (
            r#"ripcord_http_requests_total{endpoint="/api/v1/events",code="400"}"#,
            2.0,
        ),
        (
            r#"ripcord_http_requests_total{endpoint="/api/v1/events",code="415"}"#,
            1.0,
        ),
        (
            r#"ripcord_events_total{source="http",outcome="processed"}"#,
            4.0,
        ),
        (
            r#"ripcord_events_total{source="http",outcome="decode_error"}"#,
            3.0,
        ),
        (
            r#"ripcord_decisions_total{action="rollback",tier="low"}"#,
            3.0,
        ),
        (
            r#"ripcord_decisions_total{action="notify",tier="low"}"#,
            3.0,
        ),
        (
            r#"ripcord_decisions_total{action="request_approval",tier="medium"}"#,
            1.0,
        ),
        (
            r#"ripcord_decisions_total{action="notify",tier="medium"}"#,
            1.0,
        ),
    ];
    for (series, want) in expect {
        assert_eq!(metric(&m, series), want, "{series}\n{}", reply.body);
    }
    // Every request is counted, by its route (404s as `unmatched`), and
    // only what happened.
    let http_series: Vec<String> = m
        .keys()
        .filter_map(|k| k.strip_prefix("ripcord_http_requests_total"))
        .map(str::to_owned)
        .collect();
    let want: Vec<String> = [
        ("/api/v1/alerts", 200),
        ("/api/v1/alerts", 400),
        ("/api/v1/alerts", 405),
        ("/api/v1/events", 200),
        ("/api/v1/events", 400),
        ("/api/v1/events", 415),
        ("/healthz", 200),
        ("/readyz", 200),
        ("/readyz", 503),
        ("unmatched", 404),
    ]
    .iter()
    .map(|(e, c)| format!(r#"{{endpoint="{e}",code="{c}"}}"#))
    .collect();
    assert_eq!(http_series, want);
}

// ---------------------------------------------------------------------------
// Shutdown and restart.

#[test]
fn sigterm_with_posts_in_flight_never_answers_200_for_an_unjournaled_request() {
    let dir = tempfile::tempdir().unwrap();
    let r = Live::start(dir.path(), "127.0.0.1:0", &[], &[]);
    let url = r.url("/api/v1/alerts");
    let db_path = r.db();
    let ok = Mutex::new(Vec::<(String, bool)>::new());
    let unavailable = Mutex::new(Vec::<String>::new());
    let refused = Mutex::new(Vec::<String>::new());
    let other = Mutex::new(Vec::<String>::new());
    // When SIGTERM was sent; a request that started before and ended after
    // it was in flight.
    let signalled_at = Mutex::new(None::<Instant>);
    let in_flight = Mutex::new(Vec::<String>::new());
    let exited = AtomicBool::new(false);
    let successes = AtomicUsize::new(0);
    let (status, took, stdout, stderr) = std::thread::scope(|s| {
        for t in 0..8 {
            let (url, ok, unavailable, refused, other) =
                (&url, &ok, &unavailable, &refused, &other);
            let (signalled_at, in_flight, exited, successes) =
                (&signalled_at, &in_flight, &exited, &successes);
            s.spawn(move || {
                let c = client();
                let mut errors = 0;
                let mut i = 0;
                while !exited.load(Ordering::Relaxed) && errors < 20 {
                    let fp = format!("fp-{t}-{i}");
                    i += 1;
                    let body = low_critical(&fp);
                    let started = Instant::now();
                    let reply = send(&c, url, Some("application/json"), None, body);
                    let sig = *signalled_at.lock().unwrap();
                    let after_signal = sig.is_some_and(|at| started >= at);
                    if sig.is_some_and(|at| started < at) {
                        let outcome = match &reply {
                            Ok(rep) => rep.code.to_string(),
                            Err(_) => "connection error".into(),
                        };
                        in_flight.lock().unwrap().push(outcome);
                    }
                    match reply {
                        Ok(rep) if rep.code == 200 => {
                            successes.fetch_add(1, Ordering::Relaxed);
                            ok.lock().unwrap().push((fp, after_signal));
                        }
                        Ok(rep) if rep.code == 503 => {
                            assert!(rep.headers.contains_key("retry-after"), "{rep:?}");
                            unavailable.lock().unwrap().push(fp);
                        }
                        Ok(rep) => other.lock().unwrap().push(format!("{fp}: {rep:?}")),
                        Err(_) => {
                            errors += 1;
                            refused.lock().unwrap().push(fp);
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
            });
        }
        assert!(
            wait_until(Duration::from_secs(30), || successes
                .load(Ordering::Relaxed)
                >= 200),
            "posting did not get going:\n{}",
            r.stderr.text()
        );
        *signalled_at.lock().unwrap() = Some(Instant::now());
        let out = r.terminate(Duration::from_secs(20));
        exited.store(true, Ordering::Relaxed);
        out
    });
    assert!(status.success(), "exit {status:?}:\n{}", stderr.text());
    // The shutdown grace is 10 s.
    assert!(took < Duration::from_secs(12), "shutdown took {took:?}");
    let other = other.into_inner().unwrap();
    assert!(other.is_empty(), "answers other than 200/503: {other:#?}");
    let ok = ok.into_inner().unwrap();
    let refused = refused.into_inner().unwrap();
    let unavailable = unavailable.into_inner().unwrap();
    let in_flight = in_flight.into_inner().unwrap();
    println!(
        "200: {} ({} sent after SIGTERM), 503: {}, connection errors: {}; \
         in flight at SIGTERM: {in_flight:?}",
        ok.len(),
        ok.iter().filter(|(_, after)| *after).count(),
        unavailable.len(),
        refused.len()
    );
    assert!(!in_flight.is_empty(), "no request was in flight at SIGTERM");
    assert!(
        !refused.is_empty(),
        "the responder stopped answering at some point"
    );

    // Every 200 is in the journal and was printed.
    let conn = db(&db_path);
    let printed = by_fingerprint(&stdout.decisions());
    for (fp, _) in &ok {
        assert_eq!(journaled(&conn, fp), ["rollback", "notify"], "{fp} got 200");
        assert_eq!(
            printed.get(fp).map(Vec::as_slice),
            Some(&["rollback".to_owned(), "notify".to_owned()][..]),
            "{fp} got 200 but was not printed"
        );
    }
    // Whatever else was journaled (a request cut off after it was recorded)
    // is whole, and printed too: the journal and stdout agree.
    let total = count(&db_path, "SELECT count(*) FROM decisions");
    let journaled_fps = count(
        &db_path,
        "SELECT count(DISTINCT fingerprint) FROM decisions",
    );
    assert_eq!(total, journaled_fps * 2);
    assert_eq!(total as usize, stdout.decisions().len());
    assert!(journaled_fps as usize >= ok.len());
    assert_no_key_twice(&stdout.decisions());
}

#[test]
fn after_a_crash_a_redelivered_alert_does_not_fire_again_and_its_resolve_closes_it() {
    let dir = tempfile::tempdir().unwrap();
    let r = Live::start(dir.path(), "127.0.0.1:0", &[], &[]);
    let started = now_millis() - 30_000;
    let l = labels("InstanceDown", "web-ui", "i-crash", "low", "critical");
    let fire = webhook(&[firing("fp-crash", &l, started)]).to_string();
    let reply = post_json(&r.url("/api/v1/alerts"), fire.clone());
    assert_eq!(reply.json()["decisions"], 2, "{reply:?}");
    // stdout is a view of the journal, written without waiting: let both
    // lines out before the crash (a kill -9 may cut unwritten lines; the
    // journal is the record).
    assert!(wait_until(Duration::from_secs(10), || r.decisions().len() == 2));
    // Acknowledged means journaled: kill -9 loses nothing.
    let first = r.kill9();
    let opened: Vec<Value> = first.decisions();
    assert_eq!(opened.len(), 2, "{opened:?}");

    let r = Live::start(dir.path(), "127.0.0.1:0", &[], &[]);
    // Alertmanager re-sends the firing alert: nothing new.
    let reply = post_json(&r.url("/api/v1/alerts"), fire);
    assert_eq!(reply.code, 200, "{reply:?}");
    assert_eq!(reply.json()["decisions"], 0, "{}", reply.body);
    // It ends: the resolve closes the incident opened before the crash.
    let reply = post_json(
        &r.url("/api/v1/alerts"),
        webhook(&[resolved("fp-crash", &l, started, now_millis())]).to_string(),
    );
    assert_eq!(reply.json()["decisions"], 1, "{reply:?}");
    assert!(wait_until(Duration::from_secs(10), || r.decisions().len() == 1));
    let resolve = &r.decisions()[0];
    assert_eq!(resolve["action"], "resolve");
    assert_eq!(resolve["incident"], opened[0]["incident"]);
    assert_eq!(
        count(
            &r.db(),
            "SELECT count(*) FROM decisions WHERE fingerprint = 'fp-crash'"
        ),
        3
    );
    let (status, _, _, err) = r.terminate(Duration::from_secs(20));
    assert!(status.success(), "{}", err.text());
}

/// A 200 says what became of the events: those taken but not used (too
/// late, not a number) are counted by reason, not silently accepted.
#[test]
fn the_answer_counts_events_dropped_as_late_by_reason() {
    let (_dir, r) = start_with(None);
    let now = now_millis();
    let sample = |metric: &str, ts: i64, value: &str| {
        format!(
            r#"{{"metric":"{metric}","value":{value},"ts":{ts},"labels":{{"service":"web-ui","instance":"i-1","tier":"low"}}}}"#
        )
    };
    let body = format!(
        "{}\n{}\n{}\n{}\n",
        sample("up", now, "1"),
        // Ten minutes older than the newest: past the 1-minute lateness.
        sample("up", now - 600_000, "0"),
        sample("up", now - 610_000, "0"),
        sample("no_rule_watches_this", now, "1"),
    );
    let reply = post(&r.url("/api/v1/events"), Some("application/x-ndjson"), body);
    assert_eq!(reply.code, 200, "{reply:?}");
    let v = reply.json();
    assert_eq!(v["events"], 4, "{v}");
    assert_eq!(v["dropped"], serde_json::json!({"late": 2}), "{v}");
    assert_eq!(v["used"], 2, "{v}");
    assert_eq!(v["unwatched"], 1, "{v}");
    assert_eq!(v["status"], "accepted, some events dropped", "{v}");
    let reply = post_json(&r.url("/api/v1/events"), sample("up", now_millis(), "1"));
    assert_eq!(reply.json()["status"], "accepted", "{}", reply.body);
    assert_eq!(
        reply.json()["dropped"],
        serde_json::json!({}),
        "{}",
        reply.body
    );
}
