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
    assert!(
        !stderr.contains("s3cret-pw"),
        "the password leaked:\n{stderr}"
    );
}

#[test]
fn sigterm_on_a_postgresql_journal_drains_and_exits_0() {
    let db = pg_database(&format!("hardening_term_{}", std::process::id()));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ripcord.yaml");
    std::fs::write(
        &cfg,
        format!("journal: {{url: \"{db}\", ca_file: \"{}\"}}\n", pg_ca()),
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

// ---------------------------------------------------------------------------
// 1. Console trust: the shipped configs, the Host name, sign-in guesses.

const TOKEN: &str = "hardening-api-token-0123456789abcdef";

/// The `http:` section of a shipped config (`indent`: how far the file is
/// indented, 4 inside the ConfigMap), with a literal token instead of the
/// production secret file: everything else as shipped.
fn shipped_http(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let Some(l) = line.strip_prefix(pad.as_str()) else {
            inside = false;
            continue;
        };
        if !l.starts_with([' ', '#']) && !l.is_empty() {
            inside = l.starts_with("http:");
        }
        if inside {
            out.push(if l.trim_start().starts_with("token:") {
                format!("  token: \"{TOKEN}\"")
            } else {
                l.to_owned()
            });
        }
    }
    assert!(out.len() > 3, "no http: section found");
    out.join("\n") + "\n"
}

/// `ripcord run --no-kafka --dry-run` on `yaml` (listening on loopback).
fn start_with_config(dir: &Path, yaml: &str, listen: &str) -> Responder {
    std::fs::write(dir.join("ripcord.yaml"), yaml).unwrap();
    Responder::start_on(
        dir,
        listen,
        &[
            "--config",
            "ripcord.yaml",
            "--state",
            "state.db",
            "--no-kafka",
            "--dry-run",
        ],
    )
}

/// A medium-tier alert: an incident waiting for a human to approve its
/// rollback. Its id.
fn waiting_incident(r: &Responder, instance: &str) -> String {
    let body = serde_json::json!({"version": "4", "alerts": [{
        "status": "firing", "startsAt": rfc3339(now_millis()),
        "labels": {"alertname": "ErrorsUp", "service": "pay", "instance": instance,
                   "tier": "medium", "severity": "critical"}}]});
    let http = reqwest::blocking::Client::new();
    let code = http
        .post(r.url("/api/v1/alerts"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .unwrap()
        .status();
    assert_eq!(code, 200);
    let list: serde_json::Value = http
        .get(r.url("/api/v1/incidents"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    list["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["labels"]["instance"] == instance)
        .and_then(|i| i["id"].as_str())
        .expect("the incident")
        .to_owned()
}

fn no_redirects() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The first form's CSRF token on a page.
fn csrf_of(page: &str) -> Option<String> {
    let rest = page.split("name=\"csrf\" value=\"").nth(1)?;
    rest.split('"').next().map(str::to_owned)
}

#[test]
fn behind_a_same_host_proxy_the_shipped_configs_show_nothing_and_believe_no_user_header() {
    let shipped = [
        (
            "deploy/ripcord.yaml",
            shipped_http(
                &std::fs::read_to_string(repo().join("deploy/ripcord.yaml")).unwrap(),
                0,
            ),
        ),
        (
            "deploy/kubernetes/configmap.yaml",
            shipped_http(
                &std::fs::read_to_string(repo().join("deploy/kubernetes/configmap.yaml")).unwrap(),
                4,
            ),
        ),
    ];
    for (name, http_section) in shipped {
        let dir = tempfile::tempdir().unwrap();
        // The test is the same-host proxy: every request comes from loopback,
        // with whatever headers its client sent.
        let r = start_with_config(dir.path(), &http_section, "127.0.0.1:0");
        let id = waiting_incident(&r, "i-proxy-1");
        let http = no_redirects();
        let page = format!("/incidents/{id}");
        for path in ["/", page.as_str(), "/silences"] {
            let resp = http.get(r.url(path)).send().unwrap();
            let code = resp.status().as_u16();
            let body = resp.text().unwrap();
            assert_eq!(code, 401, "{name}: {path} read without a credential");
            assert!(!body.contains("i-proxy-1"), "{name}: {path}: {body}");
        }
        // A client naming itself in the oauth2-proxy header the old config
        // trusted gets no page, no CSRF token, no approval.
        let mallory = http
            .get(r.url(&page))
            .header("X-Auth-Request-User", "mallory")
            .header("X-User", "mallory")
            .send()
            .unwrap();
        assert_eq!(mallory.status(), 401, "{name}");
        let body = mallory.text().unwrap();
        assert!(!body.contains("i-proxy-1"), "{name}: {body}");
        let acted = http
            .post(r.url(&format!("{page}/act")))
            .header("X-Auth-Request-User", "mallory")
            .header("X-User", "mallory")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "csrf={}&verb=approve&by=mallory",
                csrf_of(&body).unwrap_or_default()
            ))
            .send()
            .unwrap();
        assert_eq!(acted.status(), 403, "{name}: mallory may not act");
        let inc: serde_json::Value = http
            .get(r.url(&format!("/api/v1/incidents/{id}")))
            .bearer_auth(TOKEN)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(inc["approval"]["state"], "awaiting", "{name}: {inc}");
    }
}

#[test]
fn a_page_or_link_asked_for_under_another_host_name_is_421_and_acts_on_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let r = start_with_config(
        dir.path(),
        &format!(
            "http:\n  token: \"{TOKEN}\"\n  public_url: \"http://127.0.0.1:{port}\"\n  console:\n    read_token: \"read-token-for-the-test\"\napprovals:\n  link_secret: \"hardening-link-secret\"\n"
        ),
        &format!("127.0.0.1:{port}"),
    );
    let id = waiting_incident(&r, "i-rebind-1");
    let http = no_redirects();
    // Signed in (a session cookie), as a browser on the real name would be.
    let signed = http
        .post(r.url("/signin"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("by=alice&token={TOKEN}"))
        .send()
        .unwrap();
    assert_eq!(signed.status(), 303);
    let cookie = signed.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = http
        .get(r.url(&format!("/incidents/{id}")))
        .header("cookie", &cookie)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let csrf = csrf_of(&page).expect("alice's form");
    // What a page on attacker.example, its DNS name pointed at ripcord,
    // sends: its own name as Host and Origin, same-origin as the browser
    // sees it.
    let rebound = format!("attacker.example:{port}");
    let origin = format!("http://{rebound}");
    let hostile = |req: reqwest::blocking::RequestBuilder| {
        req.header("host", &rebound)
            .header("origin", &origin)
            .header("sec-fetch-site", "same-origin")
            .header("cookie", &cookie)
    };
    let read = hostile(http.get(r.url("/")))
        .header("authorization", "Bearer read-token-for-the-test")
        .send()
        .unwrap();
    assert_eq!(read.status(), 421);
    assert!(!read.text().unwrap().contains("i-rebind-1"));
    let act = hostile(http.post(r.url(&format!("/incidents/{id}/act"))))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}&verb=approve&by=alice"))
        .send()
        .unwrap();
    assert_eq!(act.status(), 421);
    let silence = hostile(http.post(r.url("/silences")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "csrf={csrf}&matchers=tier%3D~%22.%2B%22&duration=24h&scope=all&comment=x&intent=create"
        ))
        .send()
        .unwrap();
    assert_eq!(silence.status(), 421);
    // A one-click link is refused under that name too (GET and POST).
    let chat_link = format!("/l/{id}/approve/0/sig");
    for req in [
        hostile(http.get(r.url(&chat_link))),
        hostile(http.post(r.url(&chat_link))).body("by=alice"),
    ] {
        assert_eq!(req.send().unwrap().status(), 421);
    }
    let inc: serde_json::Value = http
        .get(r.url(&format!("/api/v1/incidents/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(inc["approval"]["state"], "awaiting", "{inc}");
    let silences: serde_json::Value = http
        .get(r.url("/api/v1/silences"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(silences.as_array().map(Vec::len), Some(0), "{silences}");
    // The real name still works: the same form acts.
    let ok = http
        .post(r.url(&format!("/incidents/{id}/act")))
        .header("cookie", &cookie)
        .header("sec-fetch-site", "same-origin")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}&verb=approve&by=alice"))
        .send()
        .unwrap();
    assert_eq!(ok.status(), 303);
}

#[test]
fn sign_in_guesses_are_rate_limited_per_peer_even_with_the_right_token_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let r = start_with_config(
        dir.path(),
        &format!("http:\n  token: \"{TOKEN}\"\n"),
        "127.0.0.1:0",
    );
    let http = no_redirects();
    let guess = |name: &str, token: &str| {
        http.post(r.url("/signin"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("by={name}&token={token}"))
            .send()
            .unwrap()
    };
    let codes: Vec<u16> = (0..40)
        .map(|i| {
            guess(&format!("guess{i}"), &format!("wrong-{i}"))
                .status()
                .as_u16()
        })
        .collect();
    let refused = codes.iter().filter(|c| **c == 429).count();
    assert!(
        codes[..5].iter().all(|c| *c == 401) && refused >= 25,
        "wrong tokens, then 429: {codes:?}"
    );
    let last = guess("alice", TOKEN);
    assert_eq!(
        last.status(),
        429,
        "the guesser's address waits, token or not"
    );
    let wait: u64 = last.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&wait), "Retry-After {wait}");
}

// ---------------------------------------------------------------------------
// 6. Memory bounded in bytes.

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn series_past_the_groups_budget_are_refused_and_counted_and_memory_stays_flat() {
    let dir = tempfile::tempdir().unwrap();
    let r = start_with_config(dir.path(), "limits:\n  groups_bytes: 8MiB\n", "127.0.0.1:0");
    let http = reqwest::blocking::Client::new();
    let now = now_millis();
    // 1 KiB instance names, as in the report: 60,000 new series.
    let line = |i: usize| {
        format!(
            "{{\"metric\":\"cpu_usage_ratio\",\"value\":0.2,\"ts\":{now},\"labels\":{{\"service\":\"web\",\"instance\":\"{i:06}-{}\",\"tier\":\"low\"}}}}\n",
            "x".repeat(1010)
        )
    };
    let post = |from: usize, to: usize| -> serde_json::Value {
        let body: String = (from..to).map(line).collect();
        let resp = http
            .post(r.url("/api/v1/events"))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().unwrap()
    };
    post(0, 100);
    let before = rss(r.child.id());
    let mut refused = 0;
    for chunk in (100..60_000).step_by(3_000) {
        let answer = post(chunk, (chunk + 3_000).min(60_000));
        refused += answer["dropped"]["over_memory_budget"]
            .as_u64()
            .unwrap_or(0);
    }
    let grown = rss(r.child.id()).saturating_sub(before);
    eprintln!(
        "60,000 new series, {refused} refused: RSS grew {} MiB",
        grown >> 20
    );
    assert!(refused > 40_000, "refused {refused} of 60,000 new series");
    let m = parse_metrics(&r.metrics());
    let used = metric(&m, r#"ripcord_memory_used_bytes{budget="groups"}"#);
    assert!(used > 0.0 && used <= (8 << 20) as f64, "used {used}");
    assert_eq!(
        metric(&m, r#"ripcord_memory_refused_total{budget="groups"}"#) as u64,
        refused
    );
    assert!(
        grown < 48 << 20,
        "RSS grew {} MiB for an 8 MiB budget",
        grown >> 20
    );
    // A series held from the start still counts.
    let answer = post(0, 1);
    assert_eq!(answer["used"], 1, "{answer}");
    assert!(
        answer
            .get("dropped")
            .is_none_or(|d| d.as_object().is_none_or(|o| o.is_empty())),
        "{answer}"
    );
}

// ---------------------------------------------------------------------------
// 3. Silences: compiled once, bounded.

/// POSTs a silence of `matchers` for a day, scope all; status and body.
fn post_silence(r: &Responder, matchers: serde_json::Value) -> (u16, String) {
    let now = now_millis();
    let resp = reqwest::blocking::Client::new()
        .post(r.url("/api/v1/silences"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({
            "matchers": matchers, "startsAt": rfc3339(now), "endsAt": rfc3339(now + 86_400_000),
            "createdBy": "mallory", "comment": "maintenance", "scope": "all"}))
        .send()
        .unwrap();
    (resp.status().as_u16(), resp.text().unwrap())
}

fn silences_listed(r: &Responder) -> usize {
    let listed: serde_json::Value = reqwest::blocking::Client::new()
        .get(r.url("/api/v1/silences"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    listed.as_array().map_or(0, Vec::len)
}

#[test]
fn a_heavy_regex_silence_is_refused_with_a_400_naming_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let r = start_with_config(
        dir.path(),
        &format!("http:\n  token: \"{TOKEN}\"\n"),
        "127.0.0.1:0",
    );
    // The report's silence: 32 valid regex matchers that match nothing and
    // compile to megabytes each.
    let heavy: Vec<serde_json::Value> = (0..32)
        .map(|i| serde_json::json!({"name": format!("l{i}"), "value": "(?:\\w{60}){3}", "isRegex": true}))
        .collect();
    for _ in 0..4 {
        let (code, body) = post_silence(&r, serde_json::Value::Array(heavy.clone()));
        assert_eq!(code, 400, "{body}");
        assert!(body.contains("silences.max_regex_bytes"), "{body}");
    }
    assert_eq!(silences_listed(&r), 0);
    let (code, body) = post_silence(
        &r,
        serde_json::json!([{"name": "instance", "value": "i-web-.*", "isRegex": true}]),
    );
    assert_eq!(code, 200, "a plain regex still goes: {body}");
    // Their bytes are on /metrics.
    let m = parse_metrics(&r.metrics());
    assert!(metric(&m, r#"ripcord_memory_used_bytes{budget="silences"}"#) > 0.0);
}

#[test]
fn silences_past_the_count_in_force_are_refused_with_a_400_naming_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let r = start_with_config(
        dir.path(),
        &format!("http:\n  token: \"{TOKEN}\"\nsilences:\n  max_active: 3\n"),
        "127.0.0.1:0",
    );
    for i in 0..3 {
        let (code, body) = post_silence(
            &r,
            serde_json::json!([{"name": "service", "value": format!("s{i}"), "isRegex": false}]),
        );
        assert_eq!(code, 200, "{body}");
    }
    let (code, body) = post_silence(
        &r,
        serde_json::json!([{"name": "service", "value": "s9", "isRegex": false}]),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("silences.max_active allows 3"), "{body}");
    assert_eq!(silences_listed(&r), 3);
}

// ---------------------------------------------------------------------------
// 2. Readers never hold up a rollback; bounded reads.

/// Posts Alertmanager alerts (service, instance, tier, severity) with the token.
fn post_alerts(r: &Responder, alerts: &[(&str, String, &str, &str)]) {
    let now = now_millis();
    let alerts: Vec<serde_json::Value> = alerts
        .iter()
        .map(|(service, instance, tier, severity)| {
            serde_json::json!({"status": "firing", "startsAt": rfc3339(now),
                "labels": {"alertname": "Down", "service": service, "instance": instance,
                           "tier": tier, "severity": severity}})
        })
        .collect();
    let code = reqwest::blocking::Client::new()
        .post(r.url("/api/v1/alerts"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"version": "4", "alerts": alerts}))
        .send()
        .unwrap()
        .status();
    assert_eq!(code, 200);
}

/// PostgreSQL: a console reader stuck in the database (a table it reads is
/// locked by another session) holds whatever journal lock it took. The
/// rollback of a low-tier alert posted meanwhile must start anyway.
#[test]
fn a_rollback_starts_while_a_console_reader_is_stuck_in_the_journal() {
    let db = pg_database(&format!("hardening_reader_{}", std::process::id()));
    let dir = tempfile::tempdir().unwrap();
    let r = start_with_config(
        dir.path(),
        &format!(
            "http:\n  token: \"{TOKEN}\"\n  console: {{open_on_loopback: true}}\njournal: {{url: \"{db}\", ca_file: \"{}\"}}\n",
            pg_ca()
        ),
        "127.0.0.1:0",
    );
    // Something on the list, so reading it reads each incident's paging.
    post_alerts(&r, &[("pay", "i-wait-1".into(), "medium", "critical")]);
    assert!(wait_until(Duration::from_secs(20), || pg_count(
        &db,
        "SELECT count(*) FROM incidents"
    ) == 1));
    // Another session locks the paging table until told to stop.
    let (release, locked) = {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ltx, lrx) = std::sync::mpsc::channel::<()>();
        let url = db.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                c.batch_execute("BEGIN; LOCK TABLE escalations IN ACCESS EXCLUSIVE MODE")
                    .await
                    .unwrap();
                ltx.send(()).unwrap();
                let _ = tokio::task::spawn_blocking(move || rx.recv()).await;
                c.batch_execute("ROLLBACK").await.unwrap();
            });
        });
        (tx, lrx)
    };
    locked.recv().unwrap();
    // The reader: the list, stuck until the lock goes.
    let url = r.url("/");
    let reader = std::thread::spawn(move || {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap()
            .get(url)
            .send()
            .map(|resp| resp.status().as_u16())
    });
    assert!(
        wait_until(Duration::from_secs(10), || pg_count(
            &db,
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%escalations%'"
        ) >= 1),
        "the reader is not waiting on the lock"
    );
    post_alerts(&r, &[("web", "i-roll-1".into(), "low", "critical")]);
    let started = wait_until(Duration::from_secs(30), || {
        r.stderr
            .text()
            .contains("dry run: would roll back i-roll-1")
    });
    release.send(()).unwrap();
    assert_eq!(
        reader.join().unwrap().unwrap(),
        200,
        "the reader gets its page after all"
    );
    assert!(
        started,
        "the rollback waited for the reader:\n{}",
        r.stderr.tail(30)
    );
}

#[test]
fn a_gate_answer_lists_the_most_severe_incidents_and_counts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let r = start_with_config(
        dir.path(),
        &format!("http:\n  token: \"{TOKEN}\"\n"),
        "127.0.0.1:0",
    );
    let storm: Vec<(&str, String, &str, &str)> = (0..300)
        .map(|i| ("cart", format!("i-cart-{i}"), "medium", "warning"))
        .collect();
    post_alerts(&r, &storm);
    post_alerts(&r, &[("cart", "i-cart-down".into(), "high", "critical")]);
    let http = reqwest::blocking::Client::new();
    let answer = http
        .get(r.url("/api/v1/rollouts/cart/gate"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let a: serde_json::Value = serde_json::from_str(&answer).unwrap();
    // (A failure shows the answer's start: on the old build it is 300 KB.)
    let answer_head = &answer[..answer.len().min(600)];
    assert_eq!(a["decision"], "nogo", "{answer_head}");
    assert_eq!(a["incidents_open"], 301, "{answer_head}");
    let listed = a["incidents"].as_array().unwrap();
    assert_eq!(listed.len(), 20, "{answer_head}");
    assert_eq!(listed[0]["severity"], "severe", "the worst first: {answer}");
    assert!(
        a["reasons"].as_array().unwrap().len() <= 25,
        "{answer_head}"
    );
    assert!(
        a["reasons"].as_array().unwrap().iter().any(|r| r
            .as_str()
            .unwrap()
            .contains("and 281 more open incidents of cart")),
        "{answer_head}"
    );
    assert!(answer.len() < 16 * 1024, "{} bytes", answer.len());
}

// ---------------------------------------------------------------------------
// 4. Connections: a deadline from accept, a cap per address.

#[test]
fn a_silent_connection_is_closed_a_header_timeout_after_its_accept() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let r = start_with_config(
        dir.path(),
        "http:\n  header_timeout: 1s\n  idle_timeout: 60s\n",
        "127.0.0.1:0",
    );
    let mut c = std::net::TcpStream::connect(r.http).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    // It never sends a byte: closed after the header timeout, not idle's.
    let closed = match c.read(&mut buf) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    };
    assert!(
        closed,
        "a silent connection was kept past the header timeout"
    );
}

/// A connection from `ip` (any loopback address) to `to`.
fn connect_from(ip: [u8; 4], to: std::net::SocketAddr) -> std::net::TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind((std::net::Ipv4Addr::from(ip), 0).into()).unwrap();
        s.connect(to).await.unwrap().into_std().unwrap()
    })
}

#[test]
fn one_address_holds_at_most_its_share_of_connections_and_another_still_gets_in() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let r = start_with_config(dir.path(), "http: {}\n", "127.0.0.1:0");
    // The default: 64 per address.
    let held: Vec<std::net::TcpStream> = (0..64)
        .map(|_| connect_from([127, 0, 0, 7], r.http))
        .collect();
    let mut extra = connect_from([127, 0, 0, 7], r.http);
    extra.set_nonblocking(false).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    let _ = extra.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 503")
            && answer.contains("too many connections from your address"),
        "{answer:?}"
    );
    let mut other = connect_from([127, 0, 0, 8], r.http);
    other.set_nonblocking(false).unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = String::new();
    let _ = other.read_to_string(&mut got);
    assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
    drop(held);
}

// ---------------------------------------------------------------------------
// 7. The drill never touches production's topics.

#[test]
fn a_drill_refuses_a_topic_a_production_regex_subscription_consumes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("prod.yaml"),
        "kafka:\n  brokers: [\"127.0.0.1:1\"]\n  topics: [\"^ripcord-.*\"]\n",
    )
    .unwrap();
    let mut child = Command::new(ripcord_bin())
        .args([
            "drill",
            "--config",
            "prod.yaml",
            "--topic",
            "ripcord-events",
            "--dry-run",
            "--timeout",
            "20s",
        ])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Lines::of(child.stderr.take().unwrap());
    let exited = wait_until(Duration::from_secs(40), || {
        child.try_wait().unwrap().is_some()
    });
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let text = stderr.text();
    assert_eq!(status.code(), Some(2), "{text}");
    assert!(
        text.contains("--topic ripcord-events is one the responder reads in production")
            && text.contains("^ripcord-.*"),
        "{text}"
    );
}

#[test]
fn production_refuses_an_event_a_drill_produced_and_acts_on_the_next() {
    use rdkafka::producer::{BaseRecord, Producer};
    let broker = MockBroker::start("ripcord-events", 1);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ripcord.yaml"),
        format!(
            "kafka:\n  brokers: [\"{}\"]\n  topics: [ripcord-events]\n",
            broker.brokers
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
            "--dry-run",
        ],
    );
    r.wait_warmed(Duration::from_secs(30));
    let payload = |instance: &str| {
        serde_json::json!({"version": "4", "alerts": [{
            "status": "firing", "startsAt": rfc3339(now_millis()),
            "labels": {"alertname": "Down", "service": "web", "instance": instance,
                       "tier": "low", "severity": "critical"}}]})
        .to_string()
    };
    let p = producer(&broker.brokers);
    let drill = payload("i-drill-7");
    let real = payload("i-real-7");
    p.send(
        BaseRecord::to("ripcord-events")
            .key("web")
            .payload(&drill)
            .headers(ripcord::drill::marker("a drill run")),
    )
    .map_err(|(e, _)| e)
    .unwrap();
    p.send(BaseRecord::to("ripcord-events").key("web").payload(&real))
        .map_err(|(e, _)| e)
        .unwrap();
    p.flush(Duration::from_secs(10)).unwrap();
    // Same key, one partition: by the time the real event decided, the
    // drill's (before it) was read.
    assert!(
        wait_until(Duration::from_secs(30), || r
            .decisions()
            .iter()
            .any(|d| d["labels"]["instance"] == "i-real-7")),
        "the real event did not decide:\n{}",
        r.stderr.tail(20)
    );
    let drilled: Vec<_> = r
        .decisions()
        .into_iter()
        .filter(|d| d["labels"]["instance"] == "i-drill-7")
        .collect();
    assert!(
        drilled.is_empty(),
        "production acted on a drill: {drilled:?}"
    );
    let m = parse_metrics(&r.metrics());
    assert_eq!(
        metric(
            &m,
            r#"ripcord_events_total{source="kafka",outcome="drill_refused"}"#
        ),
        1.0,
        "{:?}",
        m.iter()
            .filter(|(k, _)| k.contains("events"))
            .collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------
// A full disk is reported as one.

#[test]
fn a_full_disk_is_reported_as_a_full_disk_not_a_slow_journal() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    std::fs::write(
        dir.path().join("ripcord.yaml"),
        "http:\n  stall_after: 2s\n",
    )
    .unwrap();
    let port = free_port();
    // A 768 KiB disk of its own: a tmpfs in a mount namespace of this
    // process tree (unshare, util-linux; a user namespace maps us to root).
    let script = format!(
        "mount -t tmpfs -o size=768k tmpfs '{d}' && exec '{bin}' run --listen 127.0.0.1:{port} --no-kafka --dry-run --config ripcord.yaml --state '{d}/state.db'",
        d = disk.display(),
        bin = ripcord_bin()
    );
    let mut child = Command::new("unshare")
        .args(["--mount", "--map-root-user", "sh", "-c", &script])
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux) is needed to give ripcord a small disk of its own");
    let stderr = Lines::of(child.stderr.take().unwrap());
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let up = wait_until(Duration::from_secs(30), || {
        http.get(format!("{base}/readyz"))
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    assert!(
        up,
        "ripcord did not start on its small disk:\n{}",
        stderr.text()
    );
    let note = "n".repeat(15_000);
    let mut refused = None;
    for k in 0..400 {
        let alerts: Vec<serde_json::Value> = (0..4)
            .map(|i| {
                serde_json::json!({"status": "firing", "startsAt": rfc3339(now_millis()),
                    "labels": {"alertname": "Full", "service": "web", "instance": format!("i-{k}-{i}"),
                               "tier": "low", "severity": "info"},
                    "annotations": {"note": note}})
            })
            .collect();
        let resp = http
            .post(format!("{base}/api/v1/alerts"))
            .json(&serde_json::json!({"version": "4", "alerts": alerts}))
            .send()
            .unwrap();
        if resp.status() != 200 {
            refused = Some((resp.status().as_u16(), resp.text().unwrap()));
            break;
        }
    }
    let (code, body) = refused.expect("the disk never filled");
    let health = wait_until(Duration::from_secs(15), || {
        http.get(format!("{base}/healthz")).send().is_ok_and(|r| {
            r.status() == 503 && r.text().unwrap_or_default().contains("disk is full")
        })
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("disk is full"), "the answer: {body}");
    assert!(
        health,
        "/healthz does not say the disk is full:\n{}",
        stderr.tail(10)
    );
    assert!(
        stderr.text().contains("the journal's disk is full"),
        "{}",
        stderr.tail(10)
    );
}
