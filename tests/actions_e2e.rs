//! The action layer end to end: `ripcord run` as its own process, alerts
//! over HTTP, messages over HTTP to a stand-in chat webhook (axum, on a
//! local port) that keeps every request, a rollback script that records
//! every call, and people acting through the signed links, the API and
//! the CLI.
//!
//! Approval expiry needs `approvals.expire_after` of at least a minute, so
//! its test here takes a little over a minute; the in-process tests
//! (tests/actions_inproc.rs) cover the same on a paused clock.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::Uri;
use ripcord::action::links::{LinkSigner, Verb};
use ripcord::config::Secret;
use ripcord::time::{Dur, Ts};
use serde_json::{Value, json};
use support::{Responder, free_port, now_millis, rfc3339, ripcord_bin, wait_until};

const LINK_SECRET: &str = "e2e-link-secret-0123456789";

// ---------------------------------------------------------------------------
// The stand-in chat webhook.

#[derive(Clone, Debug)]
struct Hit {
    path: String,
    at: Instant,
    body: Value,
}

/// An HTTP server on its own thread and runtime that answers 200 to any
/// request and keeps it.
#[derive(Clone)]
struct StandIn {
    base: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl StandIn {
    fn start() -> StandIn {
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let keep = hits.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app = axum::Router::new().fallback(move |uri: Uri, body: Bytes| {
                    let keep = keep.clone();
                    async move {
                        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let ticket = uri.path().starts_with("/vendor-api");
                        keep.lock().unwrap().push(Hit {
                            path: uri.path().to_owned(),
                            at: Instant::now(),
                            body,
                        });
                        // A support-ticket API answers with the ticket's id.
                        axum::Json(if ticket {
                            json!({"ticket_id": "SUP-77", "status": "open"})
                        } else {
                            json!({"ok": true})
                        })
                    }
                });
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(l, app).await.unwrap();
            });
        });
        StandIn {
            base: format!("http://{addr}"),
            hits,
        }
    }

    fn all(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Every title people saw: each message's own, and each line of a
    /// digest (messages held back by a rate limit are merged into one).
    fn titles(&self) -> Vec<String> {
        let mut out = Vec::new();
        for h in self.all() {
            if h.body["kind"] == "digest" {
                out.extend(
                    h.body["body"]
                        .as_str()
                        .unwrap_or("")
                        .lines()
                        .map(|l| l.trim_start_matches("- ").to_owned()),
                );
            } else {
                out.push(h.body["title"].as_str().unwrap_or("").to_owned());
            }
        }
        out
    }

    /// Every message as people saw it, title and first body line: each
    /// message alone, and each line of a digest (which keeps just that).
    fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for h in self.all() {
            let body = h.body["body"].as_str().unwrap_or("");
            if h.body["kind"] == "digest" {
                out.extend(body.lines().map(|l| l.trim_start_matches("- ").to_owned()));
            } else {
                let title = h.body["title"].as_str().unwrap_or("");
                out.push(match body.lines().next() {
                    Some(first) => format!("{title}: {first}"),
                    None => title.to_owned(),
                });
            }
        }
        out
    }

    /// Requests that carried a one-click link for `verb` on `incident`.
    fn with_link(&self, incident: &str, verb: &str) -> Vec<Value> {
        let part = format!("/l/{incident}/{verb}/");
        self.all()
            .into_iter()
            .filter(|h| {
                h.body["links"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|l| l["url"].as_str().unwrap().contains(&part)))
            })
            .map(|h| h.body)
            .collect()
    }

    /// Waits for the approval request of the incident of `instance`: its
    /// id and its links by verb.
    fn approval_request(&self, r: &Ripcord, instance: &str) -> (String, BTreeMap<String, String>) {
        let mut id = None;
        let ok = wait_until(Duration::from_secs(30), || {
            id = r.incident_of(instance);
            id.is_some()
        });
        assert!(ok, "no incident for {instance}");
        let id = id.unwrap();
        let ok = wait_until(Duration::from_secs(30), || {
            !self.with_link(&id, "approve").is_empty()
        });
        assert!(ok, "no approval request for {instance}: {:?}", self.all());
        let part = format!("/l/{id}/");
        let links = self.with_link(&id, "approve")[0]["links"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["url"].as_str().unwrap().to_owned())
            .filter(|u| u.contains(&part))
            .map(|url| (url.rsplit('/').nth(2).unwrap().to_owned(), url))
            .collect();
        (id, links)
    }
}

// ---------------------------------------------------------------------------
// ripcord.

/// `ripcord run` on a port the test picked (the config's `public_url`
/// names it), journal `state.db` in `dir`: the shared harness's
/// [`Responder`], with this file's requests on top.
struct Ripcord(Responder);

impl std::ops::Deref for Ripcord {
    type Target = Responder;
    fn deref(&self) -> &Responder {
        &self.0
    }
}

impl Ripcord {
    fn start(dir: &Path, port: u16) -> Ripcord {
        let r = Ripcord(Responder::start_on(
            dir,
            &format!("127.0.0.1:{port}"),
            &["--config", "ripcord.yaml", "--state", "state.db"],
        ));
        let ready = wait_until(Duration::from_secs(30), || {
            reqwest::blocking::get(r.url("/readyz")).is_ok_and(|x| x.status() == 200)
        });
        assert!(ready, "ripcord never ready:\n{}", r.stderr.text());
        r
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn post_alerts(&self, payload: &Value) {
        let resp = client()
            .post(self.url("/api/v1/alerts"))
            .header("content-type", "application/json")
            .body(payload.to_string())
            .send()
            .unwrap();
        let status = resp.status();
        assert_eq!(status, 200, "{}", resp.text().unwrap_or_default());
    }

    fn get(&self, path: &str) -> Value {
        let resp = client().get(self.url(path)).send().unwrap();
        assert_eq!(resp.status(), 200, "GET {path}");
        resp.json().unwrap()
    }

    fn incident(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/incidents/{id}"))
    }

    /// The incident whose labels have `instance`.
    fn incident_of(&self, instance: &str) -> Option<String> {
        self.get("/api/v1/incidents")["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["labels"]["instance"] == instance)
            .map(|i| i["id"].as_str().unwrap().to_owned())
    }

    /// Its actions of kind `action`.
    fn actions(&self, id: &str, action: &str) -> Vec<Value> {
        self.incident(id)["actions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["action"] == action)
            .cloned()
            .collect()
    }

    /// SIGTERM, then waits for the exit.
    fn terminate(self) -> ExitStatus {
        self.0.terminate(Duration::from_secs(30)).0
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A rollback script that appends its arguments (NUL-separated, each call
/// starting with `CALL`) to `calls.bin`. Run through /bin/sh, so the file
/// is never executed while open for writing.
fn recording_script(dir: &Path) -> PathBuf {
    let script = dir.join("rollback.sh");
    std::fs::write(
        &script,
        format!(
            "printf '%s\\0' CALL \"$@\" >> '{}'\necho \"rolled back $1\"\n",
            dir.join("calls.bin").display()
        ),
    )
    .unwrap();
    script
}

/// The calls the recording script saw, each its arguments.
fn calls(dir: &Path) -> Vec<Vec<String>> {
    support::recorded_calls(&dir.join("calls.bin"))
}

fn calls_for(dir: &Path, instance: &str) -> usize {
    calls(dir)
        .iter()
        .filter(|c| c.first().map(String::as_str) == Some(instance))
        .count()
}

/// The config: `hook` (the stand-in) for every message, signed links,
/// the recording rollback script. `channels` and `approvals` add lines to
/// those sections (indented); `extra` is appended as is.
fn write_config(
    dir: &Path,
    port: u16,
    standin: &StandIn,
    channels: &str,
    approvals: &str,
    extra: &str,
) {
    let script = recording_script(dir);
    let yaml = format!(
        r#"http:
  public_url: "http://127.0.0.1:{port}"
channels:
  hook: {{type: webhook, url: "{base}/chat", rate: 100/s}}
{channels}approvals:
  link_secret: "{LINK_SECRET}"
{approvals}executors:
  rollback:
    command: {{argv: [/bin/sh, "{script}", "{{instance}}", "{{service}}"], timeout: 30s}}
{extra}"#,
        base = standin.base,
        script = script.display()
    );
    std::fs::write(dir.join("ripcord.yaml"), yaml).unwrap();
}

/// A stand-in, a temp dir and `ripcord run` on the plain config
/// ([`write_config`] with nothing added). Bound in this order, they are
/// dropped ripcord first.
fn on_plain_config() -> (StandIn, tempfile::TempDir, Ripcord) {
    let standin = StandIn::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config(dir.path(), port, &standin, "", "", "");
    let r = Ripcord::start(dir.path(), port);
    (standin, dir, r)
}

fn labels(service: &str, instance: &str, tier: &str, severity: &str) -> Value {
    json!({"alertname": "ErrorsUp", "service": service, "instance": instance, "tier": tier, "severity": severity})
}

fn firing(fp: &str, labels: &Value, starts: i64) -> Value {
    json!({
        "status": "firing", "labels": labels, "annotations": {"summary": "errors up"},
        "startsAt": rfc3339(starts), "endsAt": "0001-01-01T00:00:00Z", "fingerprint": fp,
    })
}

fn resolved(fp: &str, labels: &Value, starts: i64, ends: i64) -> Value {
    json!({
        "status": "resolved", "labels": labels, "annotations": {},
        "startsAt": rfc3339(starts), "endsAt": rfc3339(ends), "fingerprint": fp,
    })
}

fn webhook(alerts: Vec<Value>) -> Value {
    json!({"version": "4", "status": "firing", "receiver": "ripcord", "groupKey": "{}:{}", "alerts": alerts})
}

/// GET or POST a link: (status, page). A POST that acted answers 303 back
/// to the link's own page (post/redirect/get): followed, as a phone does.
fn open_link(url: &str, post_by: Option<&str>) -> (u16, String) {
    let c = client();
    let resp = match post_by {
        None => c.get(url).send().unwrap(),
        Some(by) => c
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("by={by}&note=looks+right"))
            .send()
            .unwrap(),
    };
    if resp.status() == 303 {
        let to = resp.headers()["location"].to_str().unwrap().to_owned();
        assert!(url.ends_with(&to), "back to the link's own page: {to}");
        return open_link(url, None);
    }
    (resp.status().as_u16(), resp.text().unwrap())
}

/// The incident's rollbacks, once every one has ended (done, failed,
/// skipped, unknown). A rollback runs only as a journaled action, claimed
/// once: when the journal holds no rollback that could still start, none
/// can run, and checks that "nothing more ran" need no waiting.
fn ended_rollbacks(r: &Ripcord, id: &str) -> Vec<Value> {
    let ended = |a: &Value| {
        matches!(
            a["state"].as_str(),
            Some("done" | "failed" | "skipped" | "unknown")
        )
    };
    assert!(
        wait_until(Duration::from_secs(30), || r
            .actions(id, "rollback")
            .iter()
            .all(ended)),
        "a rollback still runs: {}",
        r.incident(id)
    );
    r.actions(id, "rollback")
}

/// Ran exactly once, as one journaled rollback, claimed once.
fn assert_one_rollback(r: &Ripcord, id: &str) {
    let rollbacks = ended_rollbacks(r, id);
    assert_eq!(rollbacks.len(), 1, "{}", r.incident(id));
    assert_eq!(rollbacks[0]["state"], "done", "{}", r.incident(id));
    assert_eq!(rollbacks[0]["attempts"], 1, "{}", r.incident(id));
}

fn approval_state(r: &Ripcord, id: &str) -> String {
    r.incident(id)["approval"]["state"]
        .as_str()
        .unwrap_or("none")
        .to_owned()
}

/// `ripcord <args> --state <db>`: (exit code, stdout + stderr).
fn cli(r_dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(ripcord_bin())
        .args(args)
        .args(["--state", "state.db"])
        .current_dir(r_dir)
        .env_remove("USER")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

// ---------------------------------------------------------------------------
// Approvals.

#[test]
fn an_approval_link_shows_a_page_on_get_and_approves_on_post_exactly_once() {
    let (standin, dir, r) = on_plain_config();
    let port = r.http.port();
    let start = now_millis() - 5_000;
    let l = labels("pay", "i-ap1", "medium", "warning");
    r.post_alerts(&webhook(vec![firing("fp-ap1", &l, start)]));

    let (id, links) = standin.approval_request(&r, "i-ap1");
    let approve = links["approve"].clone();
    assert!(
        approve.starts_with(&format!("http://127.0.0.1:{port}/l/{id}/approve/")),
        "{approve}"
    );
    assert!(links.contains_key("reject") && links.contains_key("ack"));
    assert_eq!(approval_state(&r, &id), "awaiting");

    // GET: a confirmation page with a form; nothing approved.
    let (code, page) = open_link(&approve, None);
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("<form method=\"post\"") && page.contains("Approve the rollback"),
        "{page}"
    );
    assert!(page.contains("i-ap1"), "the page shows what it is about");
    assert_eq!(approval_state(&r, &id), "awaiting");
    let (code, shown) = cli(dir.path(), &["show", &id]);
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("approval: awaiting"), "{shown}");

    // Tampered links: refused, on GET and on POST, and nothing happens.
    let parts: Vec<&str> = approve.rsplitn(5, '/').collect();
    let (sig, expires, base) = (parts[0], parts[1], parts[4]);
    let flipped = {
        let mut s = sig.to_owned();
        let last = s.pop().unwrap();
        s.push(if last == '0' { '1' } else { '0' });
        s
    };
    let tampered = [
        (
            "incident",
            format!("{base}/inc-000000000000/approve/{expires}/{sig}"),
        ),
        ("verb", format!("{base}/{id}/reject/{expires}/{sig}")),
        ("verb ack", format!("{base}/{id}/ack/{expires}/{sig}")),
        (
            "expiry",
            format!(
                "{base}/{id}/approve/{}/{sig}",
                expires.parse::<i64>().unwrap() + 86_400_000
            ),
        ),
        (
            "signature",
            format!("{base}/{id}/approve/{expires}/{flipped}"),
        ),
        (
            "short signature",
            format!("{base}/{id}/approve/{expires}/{}", &sig[..8]),
        ),
    ];
    for (what, url) in &tampered {
        for by in [None, Some("mallory")] {
            let (code, page) = open_link(url, by);
            assert_eq!(code, 403, "{what} ({by:?}): {page}");
            assert!(page.contains("link refused"), "{what}: {page}");
        }
    }
    // A link signed with the right key but past its expiry: refused.
    let signer = LinkSigner::new(
        Secret::new(LINK_SECRET),
        format!("http://127.0.0.1:{port}"),
        Dur::from_mins(1),
    );
    let old = signer.links(&id, &[Verb::Approve], Ts(now_millis() - 120_000));
    for by in [None, Some("mallory")] {
        let (code, page) = open_link(&old[0].url, by);
        assert_eq!(code, 403, "{page}");
        assert!(page.contains("expired"), "{page}");
    }
    // The same signer with a live expiry is accepted (so the refusals above
    // are about what was changed, not about how the test signs).
    let fresh = signer.links(&id, &[Verb::Approve], Ts(now_millis()));
    assert_eq!(open_link(&fresh[0].url, None).0, 200);
    assert_eq!(approval_state(&r, &id), "awaiting");
    assert_eq!(calls(dir.path()), Vec::<Vec<String>>::new());

    // POST from the page: approved, the rollback runs once. The phone
    // lands back on the link's page, which now says what was done and
    // leads to the incident: no button, no "works for", no journal key.
    let (code, page) = open_link(&approve, Some("alice"));
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("Approved by alice via link"), "{page}");
    assert!(
        page.contains(&format!("href=\"/incidents/{id}\"")),
        "{page}"
    );
    for never in ["request_approval", "<form", "<button", "works for"] {
        assert!(
            !page.contains(never),
            "`{never}` on the page after approving:\n{page}"
        );
    }
    assert!(
        wait_until(Duration::from_secs(30), || calls_for(dir.path(), "i-ap1")
            >= 1),
        "the rollback never ran:\n{}",
        r.stderr.text()
    );
    // Opened again, the used link shows what became of the rollback.
    assert!(
        wait_until(Duration::from_secs(10), || open_link(&approve, None)
            .1
            .contains("rollback done")),
        "{}",
        open_link(&approve, None).1
    );
    let (code, page) = open_link(&approve, None);
    assert_eq!(code, 200, "{page}");
    assert!(
        !page.contains("<form") && !page.contains("works for"),
        "{page}"
    );
    let (code, page) = open_link(&approve, Some("alice"));
    assert_eq!(code, 409, "{page}");
    let again = client()
        .post(r.url(&format!("/api/v1/incidents/{id}/approve")))
        .body(r#"{"by": "alice"}"#)
        .send()
        .unwrap();
    assert_eq!(again.status(), 409);
    assert_one_rollback(&r, &id);
    assert_eq!(
        calls(dir.path()),
        vec![vec!["i-ap1".to_owned(), "pay".to_owned()]]
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            let rb = r.actions(&id, "rollback");
            rb.len() == 1 && rb[0]["state"] == "done"
        }),
        "{}",
        r.incident(&id)
    );
    let inc = r.incident(&id);
    assert_eq!(inc["approval"]["state"], "approved");
    assert_eq!(inc["approval"]["decided_by"], "alice");
    assert!(
        inc["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["message"] == "approved by alice via link: looks right"),
        "{inc}"
    );
}

#[test]
fn a_rejected_approval_never_rolls_back() {
    let (standin, dir, r) = on_plain_config();
    let l = labels("pay", "i-rj1", "medium", "warning");
    r.post_alerts(&webhook(vec![firing("fp-rj1", &l, now_millis() - 5_000)]));
    let (id, links) = standin.approval_request(&r, "i-rj1");

    let resp = client()
        .post(r.url(&format!("/api/v1/incidents/{id}/reject")))
        .header("content-type", "application/json")
        .body(r#"{"by": "bob"}"#)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let done: Value = resp.json().unwrap();
    assert_eq!(done["result"], "rejected");

    let (code, page) = open_link(&links["approve"], Some("alice"));
    assert_eq!(code, 409, "{page}");
    // The verdict is journaled: no rollback was, so none can run.
    let inc = r.incident(&id);
    assert_eq!(inc["approval"]["state"], "rejected");
    assert_eq!(inc["approval"]["decided_by"], "bob");
    assert!(
        r.actions(&id, "rollback").is_empty(),
        "no rollback recorded: {inc}"
    );
    let req = r.actions(&id, "request_approval");
    assert_eq!(req[0]["state"], "rejected", "{inc}");
    assert_eq!(calls(dir.path()), Vec::<Vec<String>>::new());
}

/// One chat post per incident event: a medium incident's approval request
/// is its report (no "reporting" post one second before it), and a
/// progress post says its text once.
#[test]
fn a_medium_incident_is_one_post_and_a_progress_post_says_its_text_once() {
    let (standin, _dir, r) = on_plain_config();
    let l = labels("pay", "i-one1", "medium", "critical");
    r.post_alerts(&webhook(vec![firing("fp-one1", &l, now_millis() - 5_000)]));
    let (id, _) = standin.approval_request(&r, "i-one1");
    // The report's own outcome is the event to wait for: once it settled,
    // every post it made has been answered by the stand-in.
    let settled = wait_until(Duration::from_secs(30), || {
        r.actions(&id, "notify")
            .iter()
            .any(|a| !["pending", "running"].contains(&a["state"].as_str().unwrap_or("")))
    });
    assert!(settled, "{}", r.incident(&id));
    let posts: Vec<Value> = standin
        .all()
        .into_iter()
        .map(|h| h.body)
        .filter(|b| b["incident"] == id.as_str())
        .collect();
    assert_eq!(
        posts.len(),
        1,
        "one post for the incident's opening: {posts:#?}"
    );
    let post = &posts[0];
    assert_eq!(post["kind"], "approval_request", "{post:#}");
    let body = post["body"].as_str().unwrap();
    for fact in [
        "where: ",
        "instance=i-one1",
        "tier: medium",
        "ripcord: rollback prepared",
    ] {
        assert!(
            body.contains(fact),
            "the request carries the report ({fact}): {body}"
        );
    }
    let notify = &r.actions(&id, "notify")[0];
    assert_eq!(notify["state"], "done", "{notify}");

    let progress = json!({"kind": "progress", "ts": rfc3339(now_millis()), "stage": "batch_done",
        "labels": {"service": "shop", "batch": "2"}, "done": 20, "total": 100});
    let resp = client()
        .post(r.url("/api/v1/events"))
        .header("content-type", "application/x-ndjson")
        .body(format!("{progress}\n"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut post = None;
    let ok = wait_until(Duration::from_secs(30), || {
        post = standin
            .all()
            .into_iter()
            .find(|h| h.body["kind"] == "progress")
            .map(|h| h.body);
        post.is_some()
    });
    assert!(ok, "no progress post: {:?}", standin.all());
    let post = post.unwrap();
    let text = "shop batch 2 done: 20 of 100 instances upgraded";
    let said = format!("{}\n{}", post["title"], post["body"]);
    assert_eq!(said.matches(text).count(), 1, "said once: {post:#}");
}

/// What people read says a time one way (`10:02:03 UTC`, the day first
/// when it is not today's), never RFC 3339 with milliseconds: the approval
/// request, the action details and the timeline (API), `ripcord show`.
/// Machine fields (`at`, `expires_at` in the JSON) keep RFC 3339.
#[test]
fn people_read_times_one_way_in_messages_details_timelines_and_show() {
    let (standin, dir, r) = on_plain_config();
    let l = labels("pay", "i-time1", "medium", "critical");
    r.post_alerts(&webhook(vec![firing("fp-time1", &l, now_millis() - 5_000)]));
    let (id, _) = standin.approval_request(&r, "i-time1");
    let settled = wait_until(Duration::from_secs(30), || {
        r.actions(&id, "request_approval")
            .iter()
            .any(|a| a["state"] == "awaiting_approval")
    });
    assert!(settled, "{}", r.incident(&id));
    let machine = regex::Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d").unwrap();
    let human = regex::Regex::new(r"\b\d\d:\d\d(:\d\d)? UTC\b").unwrap();
    let request = standin.with_link(&id, "approve")[0]["body"]
        .as_str()
        .unwrap()
        .to_owned();
    let inc = r.incident(&id);
    let detail = r.actions(&id, "request_approval")[0]["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    let timeline: Vec<String> = inc["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["message"].as_str().unwrap().to_owned())
        .collect();
    let (code, shown) = cli(dir.path(), &["show", &id]);
    assert_eq!(code, 0, "{shown}");
    let read = [
        ("the approval request", request),
        ("the request's detail", detail),
        ("the timeline", timeline.join("\n")),
        ("show", shown),
    ];
    for (what, text) in &read {
        assert!(
            !machine.is_match(text),
            "{what} says a time as RFC 3339: {text}"
        );
        assert!(human.is_match(text), "{what} says no time: {text}");
    }
    // The JSON keeps its machine times.
    assert!(machine.is_match(&inc.to_string()), "{inc}");
}

#[test]
fn a_recovery_withdraws_the_waiting_approval() {
    let (standin, dir, r) = on_plain_config();
    let start = now_millis() - 10_000;
    let l = labels("pay", "i-wd1", "medium", "warning");
    r.post_alerts(&webhook(vec![firing("fp-wd1", &l, start)]));
    let (id, links) = standin.approval_request(&r, "i-wd1");
    assert_eq!(approval_state(&r, &id), "awaiting");

    r.post_alerts(&webhook(vec![resolved(
        "fp-wd1",
        &l,
        start,
        now_millis() - 1_000,
    )]));
    // Alone or in a digest (the incident post may still be held by the
    // rate limit when the resolve comes), the all-clear says it withdrew.
    let mut said = None;
    let ok = wait_until(Duration::from_secs(30), || {
        said = standin
            .lines()
            .into_iter()
            .find(|l| l.starts_with("[MEDIUM] resolved: pay/i-wd1"));
        said.is_some()
    });
    assert!(ok, "no resolve message: {:?}", standin.all());
    let said = said.unwrap();
    assert!(
        said.contains("approval request is withdrawn: no rollback will run"),
        "{said}"
    );
    assert_eq!(approval_state(&r, &id), "withdrawn");

    let (code, page) = open_link(&links["approve"], Some("alice"));
    assert_eq!(code, 409, "{page}");
    assert!(page.contains("withdrawn"), "{page}");
    // Withdrawn in the journal, no rollback journaled: none can run.
    assert!(r.actions(&id, "rollback").is_empty());
    assert_eq!(calls(dir.path()), Vec::<Vec<String>>::new());
}

#[test]
fn an_approval_pending_across_a_restart_is_approved_with_the_cli_and_rolls_back_once() {
    let (standin, dir, r) = on_plain_config();
    let port = r.http.port();
    let l = labels("pay", "i-rs1", "medium", "warning");
    r.post_alerts(&webhook(vec![firing("fp-rs1", &l, now_millis() - 5_000)]));
    let (id, _) = standin.approval_request(&r, "i-rs1");
    assert!(
        wait_until(Duration::from_secs(10), || r
            .actions(&id, "request_approval")[0]["state"]
            == "awaiting_approval"),
        "{}",
        r.incident(&id)
    );
    let status = r.terminate();
    assert!(status.success(), "SIGTERM exit: {status:?}");

    let r = Ripcord::start(dir.path(), port);
    let (code, out) = cli(dir.path(), &["approve", &id, "--by", "carol"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("approved"), "{out}");
    assert!(
        wait_until(Duration::from_secs(30), || calls_for(dir.path(), "i-rs1")
            >= 1),
        "the rollback never ran:\n{}",
        r.stderr.text()
    );
    assert_one_rollback(&r, &id);
    assert_eq!(
        calls(dir.path()),
        vec![vec!["i-rs1".to_owned(), "pay".to_owned()]]
    );
    assert_eq!(
        standin.with_link(&id, "approve").len(),
        1,
        "the restart did not ask again"
    );
    // The rollback another process released is on this one's stdout.
    let released = r.stdout.released();
    assert_eq!(released.len(), 1, "{released:?}");
    assert_eq!(released[0]["action"], "rollback");
    assert_eq!(released[0]["incident"], id.as_str());
    assert_eq!(released[0]["released"], "rollback approved by carol");
    let (code, again) = cli(dir.path(), &["approve", &id, "--by", "carol"]);
    assert_eq!(code, 1, "{again}");
    assert!(again.contains("approved, not waiting"), "{again}");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let rb = r.actions(&id, "rollback");
            rb.len() == 1 && rb[0]["state"] == "done"
        }),
        "{}",
        r.incident(&id)
    );
}

/// Takes a little over a minute: `approvals.expire_after` cannot be set
/// below 1m.
#[test]
fn expired_approvals_roll_back_or_page_as_each_tier_says() {
    let standin = StandIn::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config(
        dir.path(),
        port,
        &standin,
        &format!(
            "  pager: {{type: webhook, url: \"{}/pager\", rate: 100/s}}\n",
            standin.base
        ),
        "  expire_after: 1m\n  on_timeout: {medium: rollback, high: escalate}\n",
        r#"policy:
  high: [request_approval, notify]
routing:
  low: {notify: [hook]}
  medium: {notify: [hook]}
  high: {notify: [hook]}
escalation:
  high: [{after: 0s, channels: [pager]}]
"#,
    );
    let r = Ripcord::start(dir.path(), port);
    let t0 = now_millis() - 5_000;
    let medium = labels("pay", "i-exm", "medium", "warning");
    let high = labels("core", "i-exh", "high", "critical");
    r.post_alerts(&webhook(vec![
        firing("fp-exm", &medium, t0),
        firing("fp-exh", &high, t0),
    ]));
    let (m_id, _) = standin.approval_request(&r, "i-exm");
    let (h_id, _) = standin.approval_request(&r, "i-exh");
    let asked = Instant::now();
    let pager = || {
        standin
            .all()
            .into_iter()
            .filter(|h| h.path == "/pager" && h.body["incident"].as_str() == Some(&h_id))
            .count()
    };

    // After the minute: medium rolls back, high pages (the journal's dates,
    // below, show that nothing came before it).
    let ok = wait_until(Duration::from_secs(120), || {
        calls_for(dir.path(), "i-exm") >= 1 && pager() >= 1
    });
    assert!(
        ok,
        "after {:?}: calls {:?}, pages {}\n{}",
        asked.elapsed(),
        calls(dir.path()),
        pager(),
        r.stderr.text()
    );
    assert!(asked.elapsed() >= Duration::from_secs(55), "too early");
    assert_one_rollback(&r, &m_id);
    assert_eq!(
        calls(dir.path()),
        vec![vec!["i-exm".to_owned(), "pay".to_owned()]]
    );
    assert_eq!(approval_state(&r, &m_id), "expired");
    assert_eq!(approval_state(&r, &h_id), "expired");
    // Nothing before the minute was up, as the journal dates it: each
    // approval asked for a minute and expired at its deadline or after,
    // the only rollback is the timeout's, and paging began no earlier.
    let at = |v: &Value| ripcord::time::Ts::parse_rfc3339(v.as_str().unwrap()).unwrap();
    for id in [&m_id, &h_id] {
        let a = r.incident(id)["approval"].clone();
        assert_eq!(
            at(&a["expires_at"]).0 - at(&a["requested_at"]).0,
            60_000,
            "{a}"
        );
        assert!(
            at(&a["decided_at"]) >= at(&a["expires_at"]),
            "expired early: {a}"
        );
    }
    let h_deadline = at(&r.incident(&h_id)["approval"]["expires_at"]);
    let paging = r.incident(&h_id)["paging"].clone();
    assert!(
        at(&paging["started_at"]) >= h_deadline,
        "paged early: {paging}"
    );
    assert!(r.actions(&h_id, "rollback").is_empty());
    let rb = r.actions(&m_id, "rollback");
    assert_eq!(rb.len(), 1);
    assert!(
        rb[0]["key"].as_str().unwrap().ends_with("/timeout"),
        "{rb:?}"
    );
    assert!(!r.incident(&h_id)["paging"].is_null());
}

// ---------------------------------------------------------------------------
// Hostile label values through a running responder.

#[test]
fn hostile_instance_labels_are_refused_paged_and_never_reach_the_script() {
    let standin = StandIn::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // A budget that never gets in the way: every refusal must be the
    // executor's.
    write_config(
        dir.path(),
        port,
        &standin,
        "",
        "",
        "    budget: {per_service: 100, overall: 1000, window: 10m}\n",
    );
    let r = Ripcord::start(dir.path(), port);
    // The decoder refuses label values over 1024 bytes, so the 1 MiB case
    // cannot arrive this way; tests/actions_inproc.rs covers it at the
    // executor.
    let hostile = [
        "$(id)",
        "i-1;id",
        "`id`",
        "i-1\nid",
        "--rf",
        "../etc/passwd",
        "i-1\0id",
        &"i".repeat(1024),
    ];
    let t0 = now_millis() - 5_000;
    for (k, v) in hostile.iter().enumerate() {
        let l = labels(&format!("svc-h{k}"), v, "low", "critical");
        r.post_alerts(&webhook(vec![firing(&format!("fp-h{k}"), &l, t0)]));
    }
    let good = labels("svc-ok", "i-good", "low", "critical");
    r.post_alerts(&webhook(vec![firing("fp-good", &good, t0)]));

    assert!(
        wait_until(Duration::from_secs(30), || calls_for(dir.path(), "i-good")
            == 1),
        "the good rollback never ran:\n{}",
        r.stderr.text()
    );
    for v in &hostile {
        let mut id = None;
        assert!(
            wait_until(Duration::from_secs(30), || {
                id = r.incident_of(v);
                id.is_some()
            }),
            "no incident for {v:?}"
        );
        let id = id.unwrap();
        let mut rb = Vec::new();
        let done = wait_until(Duration::from_secs(30), || {
            rb = r.actions(&id, "rollback");
            rb.len() == 1 && rb[0]["state"] == "failed"
        });
        assert!(done, "{v:?}: {rb:?}");
        let detail = rb[0]["detail"].as_str().unwrap();
        assert!(detail.starts_with("refused: `instance`"), "{v:?}: {detail}");
        let inc = r.incident(&id);
        assert!(
            support::timeline_says(&inc, "rollback failed: refused"),
            "the refusal is on the timeline: {inc}"
        );
        assert!(!inc["paging"].is_null(), "{v:?}: a human is paged: {inc}");
    }
    for k in 0..hostile.len() {
        let page = format!("PAGE svc-h{k}/");
        let paged = wait_until(Duration::from_secs(30), || {
            standin.titles().iter().any(|t| t.contains(&page))
        });
        assert!(
            paged,
            "no page for svc-h{k} reached chat: {:?}",
            standin.titles()
        );
    }
    let refused = standin
        .titles()
        .iter()
        .filter(|t| t.contains("rollback refused"))
        .count();
    assert!(
        refused >= hostile.len(),
        "chat heard of {refused} refusals: {:?}",
        standin.titles()
    );
    // Every hostile rollback ended refused (above): only the good value
    // could reach the script.
    assert_eq!(
        calls(dir.path()),
        vec![vec!["i-good".to_owned(), "svc-ok".to_owned()]],
        "only the good value ever reached the script"
    );
    let raw = std::fs::read(dir.path().join("calls.bin")).unwrap();
    for v in &hostile {
        assert!(
            !raw.windows(v.len()).any(|w| w == v.as_bytes()),
            "{v:?} reached the script"
        );
    }
}

// ---------------------------------------------------------------------------
// A storm.

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Most requests in any window of length `window`.
fn max_in_window(times: &[Instant], window: Duration) -> usize {
    let mut t = times.to_vec();
    t.sort();
    let mut best = 0;
    let mut j = 0;
    for i in 0..t.len() {
        while t[i].duration_since(t[j]) >= window {
            j += 1;
        }
        best = best.max(i - j + 1);
    }
    best
}

#[test]
fn a_storm_of_alerts_keeps_the_budget_the_chat_rate_and_memory() {
    const ALERTS: usize = 10_000;
    const PER_PAYLOAD: usize = 40;
    const INSTANCES: usize = 500;
    const SERVICES: usize = 10;
    const PER_SERVICE: usize = 3;
    const OVERALL: usize = 12;
    /// The storm lasts this long.
    const STORM_SECS: u64 = 10;
    let standin = StandIn::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let script = recording_script(dir.path());
    std::fs::write(
        dir.path().join("ripcord.yaml"),
        format!(
            r#"channels:
  chat: {{type: webhook, url: "{}/chat", rate: 2/s}}
executors:
  rollback:
    command: {{argv: [/bin/sh, "{}", "{{instance}}", "{{service}}"], timeout: 30s}}
    budget: {{per_service: {PER_SERVICE}, overall: {OVERALL}, window: 10m}}
"#,
            standin.base,
            script.display()
        ),
    )
    .unwrap();
    let r = Ripcord::start(dir.path(), port);
    let pid = r.pid();

    let peak = Arc::new(Mutex::new(0u64));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(kb) = rss_kb(pid) {
                    let mut p = peak.lock().unwrap();
                    *p = (*p).max(kb);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    // Alert n: every 20th is the first firing of a new instance, the rest
    // redeliveries of instances already seen (same fingerprint and
    // startsAt), as Alertmanager re-sends them.
    let t0 = now_millis() - 30_000;
    let instance = |k: usize| {
        let (svc, n) = (k % SERVICES, k / SERVICES);
        (format!("svc-{svc}"), format!("i-{svc}-{n}"))
    };
    let alert = |n: usize| {
        let k = if n % 20 == 0 {
            n / 20
        } else {
            (n * 7919) % (n / 20 + 1)
        };
        let (svc, inst) = instance(k);
        firing(
            &format!("fp-storm-{k}"),
            &labels(&svc, &inst, "low", "critical"),
            t0 + k as i64,
        )
    };
    let payloads = ALERTS / PER_PAYLOAD;
    let every = Duration::from_secs(STORM_SECS) / payloads as u32;
    let sending = Instant::now();
    let c = client();
    let mut busy = 0;
    for p in 0..payloads {
        let due = sending + every * p as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let body = webhook(
            (p * PER_PAYLOAD..(p + 1) * PER_PAYLOAD)
                .map(alert)
                .collect(),
        )
        .to_string();
        loop {
            let resp = c
                .post(r.url("/api/v1/alerts"))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .unwrap();
            match resp.status().as_u16() {
                200 => break,
                429 | 503 => {
                    busy += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                s => panic!("HTTP {s}: {}", resp.text().unwrap_or_default()),
            }
        }
    }
    let sent_in = sending.elapsed();
    let rss_after_send = rss_kb(pid).unwrap_or(0);

    // Every incident's title reaches chat, in a message or a digest.
    let titles: Vec<String> = (0..INSTANCES)
        .map(|k| {
            let (svc, inst) = instance(k);
            format!("[LOW/severe] {svc}/{inst}: alertmanager-forwarded")
        })
        .collect();
    let missing = |hits: &[Hit]| -> Vec<String> {
        let text: String = hits
            .iter()
            .map(|h| {
                format!(
                    "{}\n{}\n",
                    h.body["title"].as_str().unwrap_or(""),
                    h.body["body"].as_str().unwrap_or("")
                )
            })
            .collect();
        // A message's title is a line of its own; a digest line is
        // `- TITLE`, `- TITLE: first body line` or `- TITLE (inc-…)`.
        let lines: Vec<&str> = text.lines().map(|l| l.trim_start_matches("- ")).collect();
        let shown = |t: &str| {
            lines.iter().any(|l| {
                l.strip_prefix(t).is_some_and(|rest| {
                    rest.is_empty() || rest.starts_with(": ") || rest.starts_with(" (")
                })
            })
        };
        titles.iter().filter(|t| !shown(t)).cloned().collect()
    };
    let all_titles = wait_until(Duration::from_secs(60), || {
        missing(&standin.all()).is_empty()
    });
    let drained_in = sending.elapsed();
    let rss_end = rss_kb(pid).unwrap_or(0);
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    let peak_kb = *peak.lock().unwrap();

    // The figures.
    let hits: Vec<Hit> = standin
        .all()
        .into_iter()
        .filter(|h| h.path == "/chat")
        .collect();
    let times: Vec<Instant> = hits.iter().map(|h| h.at).collect();
    let per_second: Vec<usize> = (0..=drained_in.as_secs())
        .map(|m| {
            times
                .iter()
                .filter(|t| t.duration_since(sending).as_secs() == m)
                .count()
        })
        .collect();
    let ran = calls(dir.path());
    let mut by_service: BTreeMap<String, usize> = BTreeMap::new();
    for c in &ran {
        *by_service.entry(c[1].clone()).or_default() += 1;
    }
    let db = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    let states: BTreeMap<String, i64> = db
        .prepare("SELECT state, count(*) FROM actions WHERE action = 'rollback' GROUP BY state")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let incidents: i64 = db
        .query_row("SELECT count(*) FROM incidents", [], |r| r.get(0))
        .unwrap();
    let missing_now = missing(&standin.all());
    let paged: BTreeSet<String> = standin
        .titles()
        .into_iter()
        .filter(|t| t.contains("] PAGE "))
        .collect();
    eprintln!(
        "storm: {ALERTS} alerts in {payloads} payloads sent in {sent_in:?} ({busy} busy answers); \
         {incidents} incidents; rollbacks executed {} (by service {by_service:?}), journal states {states:?}; \
         chat requests {} (per second since the start {per_second:?}, most in any 1 s window {}, in any 0.99 s window {}); \
         titles missing from chat after {drained_in:?}: {}; incidents whose first page reached chat: {}; RSS peak {} MB, after sending {} MB, at the end {} MB",
        ran.len(),
        hits.len(),
        max_in_window(&times, Duration::from_secs(1)),
        max_in_window(&times, Duration::from_millis(990)),
        missing_now.len(),
        paged.len(),
        peak_kb / 1024,
        rss_after_send / 1024,
        rss_end / 1024,
    );

    assert_eq!(incidents, INSTANCES as i64, "one incident per instance");
    assert!(
        ran.len() <= OVERALL,
        "{} rollbacks, budget {OVERALL}",
        ran.len()
    );
    for (svc, n) in &by_service {
        assert!(
            *n <= PER_SERVICE,
            "{svc}: {n} rollbacks, budget {PER_SERVICE}"
        );
    }
    assert_eq!(
        states.get("done").copied().unwrap_or(0),
        ran.len() as i64,
        "every executed rollback is recorded done, and only those"
    );
    assert!(peak_kb > 0 && peak_kb < 300 * 1024, "peak RSS {peak_kb} kB");
    // Measured on arrival over 0.99 s: ripcord spaces sends 550 ms apart
    // (the period's share plus its margin), so a third send within a
    // second means the storm pushed past the rate. The plan's 20/min is
    // the same limiter at another period, shown exactly on a virtual clock
    // in tests/actions_inproc.rs
    // (a_rate_limited_channel_never_fits_21_sends_in_a_minute); here a
    // per-second rate keeps the storm to seconds.
    let near_second = max_in_window(&times, Duration::from_millis(990));
    assert!(
        near_second <= 2,
        "chat got {near_second} requests within 0.99 s (rate 2/s): per second {per_second:?}"
    );
    assert!(
        all_titles,
        "{} incident titles never reached chat, e.g. {:?}",
        missing_now.len(),
        missing_now.iter().take(3).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------
// Paging does not wait for a broken channel.

/// Two incidents page; chat is down (connection refused: each message is
/// retried with backoff for about a minute), SMS works and is the second
/// step, 2 s after the first. Each incident's SMS must go out about 2 s
/// after its paging started, whatever chat is doing.
#[test]
fn a_dead_chat_channel_does_not_hold_up_the_sms_step() {
    let standin = StandIn::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let dead = free_port();
    std::fs::write(
        dir.path().join("ripcord.yaml"),
        format!(
            r#"policy:
  low: [page]
channels:
  chat: {{type: webhook, url: "http://127.0.0.1:{dead}/chat", rate: 100/s, retries: 5, timeout: 2s}}
  sms: {{type: sms, provider: webhook, to: ["+14155550100"], url: "{}/sms", rate: 100/s}}
routing:
  low: {{notify: [chat]}}
escalation:
  low: [{{after: 0s, channels: [chat]}}, {{after: 2s, channels: [sms]}}]
"#,
            standin.base
        ),
    )
    .unwrap();
    let r = Ripcord::start(dir.path(), port);
    let t0 = now_millis() - 5_000;
    r.post_alerts(&webhook(vec![
        firing("fp-d1", &labels("web", "i-d1", "low", "critical"), t0),
        firing("fp-d2", &labels("web", "i-d2", "low", "critical"), t0),
    ]));
    let posted = Instant::now();
    let sms = || {
        standin
            .all()
            .into_iter()
            .filter(|h| h.path == "/sms")
            .count()
    };
    let both = wait_until(Duration::from_secs(20), || sms() >= 2);
    assert!(
        both,
        "after {:?} only {} SMS went out (the second step is due 2 s after paging starts)",
        posted.elapsed(),
        sms()
    );
}

/// A link's page can be neither framed nor leak its signed URL, and a form
/// on another site cannot act with a link it learned; a note is bounded.
#[test]
fn a_link_cannot_be_used_from_another_site_and_its_page_is_locked_down() {
    let (standin, _dir, r) = on_plain_config();
    let port = r.http.port();
    let l = labels("pay", "i-xs1", "medium", "warning");
    r.post_alerts(&webhook(vec![firing("fp-xs1", &l, now_millis() - 5_000)]));
    let (id, links) = standin.approval_request(&r, "i-xs1");
    let approve = links["approve"].clone();

    let page = client().get(&approve).send().unwrap();
    assert_eq!(page.status(), 200);
    let h = page.headers();
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(h["x-frame-options"], "DENY");

    let post = |extra: &[(&str, &str)], body: &str| {
        let mut req = client()
            .post(&approve)
            .header("content-type", "application/x-www-form-urlencoded");
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let resp = req.body(body.to_owned()).send().unwrap();
        (resp.status().as_u16(), resp.text().unwrap())
    };
    for headers in [
        &[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example"),
        ][..],
        &[("origin", "https://evil.example")][..],
        &[("sec-fetch-site", "same-site")][..],
    ] {
        let (code, page) = post(headers, "by=mallory");
        assert_eq!(code, 403, "{headers:?}: {page}");
        assert_eq!(approval_state(&r, &id), "awaiting", "{headers:?}");
    }
    let long_note = format!("by=alice&note={}", "x".repeat(600));
    let (code, page) = post(&[], &long_note);
    assert_eq!(code, 400, "{page}");
    assert!(page.contains("longer than 512"), "{page}");
    assert_eq!(approval_state(&r, &id), "awaiting");
    // The page's own form (same origin) acts.
    let origin = format!("http://127.0.0.1:{port}");
    let (code, page) = post(
        &[("sec-fetch-site", "same-origin"), ("origin", &origin)],
        "by=alice&note=ok%0Aforged+line",
    );
    assert_eq!(code, 303, "back to the link's page: {page}");
    assert_eq!(approval_state(&r, &id), "approved");
    let inc = r.incident(&id);
    assert!(
        inc["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["message"] == "approved by alice via link: ok\\u{a}forged line"),
        "{inc}"
    );
}

// ---------------------------------------------------------------------------
// Silences.

fn post_silence(r: &Ripcord, body: &Value) -> (u16, Value) {
    let resp = client()
        .post(r.url("/api/v1/silences"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap();
    (resp.status().as_u16(), resp.json().unwrap_or(Value::Null))
}

fn silence_body(matchers: Value, scope: &str, ends: Value) -> Value {
    let mut v = json!({
        "matchers": matchers, "startsAt": rfc3339(now_millis()),
        "createdBy": "alice", "comment": "kernel patch window", "scope": scope,
    });
    match ends {
        Value::String(_) => v["endsAt"] = ends,
        other => v["until"] = other,
    }
    v
}

/// Waits until the incident of `instance` has an action of kind `action`
/// in a final state; returns it.
fn settled_action(r: &Ripcord, instance: &str, action: &str) -> Value {
    let mut found = Value::Null;
    let ok = wait_until(Duration::from_secs(30), || {
        let Some(id) = r.incident_of(instance) else {
            return false;
        };
        found = r
            .actions(&id, action)
            .into_iter()
            .find(|a| a["state"] != "pending" && a["state"] != "running")
            .unwrap_or(Value::Null);
        !found.is_null()
    });
    assert!(
        ok,
        "no settled {action} for {instance}:\n{}",
        r.stderr.tail(30)
    );
    found
}

#[test]
fn silences_hold_back_what_their_scope_says_across_a_restart_until_expired_or_their_batch_completes()
 {
    let standin = StandIn::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let windows = "windows:\n  - name: always-on\n    scope: all\n    matchers: ['service=\"maint\"']\n    start: \"00:00\"\n    end: \"24:00\"\n    time_zone: Europe/Berlin\n";
    write_config(dir.path(), port, &standin, "", "", windows);
    let r = Ripcord::start(dir.path(), port);
    let in_an_hour = json!(rfc3339(now_millis() + 3_600_000));

    // Refused, every problem named: nothing to match, no end.
    let (status, body) = post_silence(
        &r,
        &json!({"matchers": [], "startsAt": rfc3339(now_millis()), "createdBy": "alice", "comment": "x"}),
    );
    assert_eq!(status, 400, "{body}");
    let e = body["error"].as_str().unwrap();
    assert!(e.contains("matchers") && e.contains("endsAt"), "{e}");

    let (status, body) = post_silence(
        &r,
        &silence_body(
            json!([{"name": "service", "value": "web", "isRegex": false}]),
            "notify",
            in_an_hour.clone(),
        ),
    );
    assert_eq!(status, 200, "{body}");
    let quiet = body["silenceID"].as_str().unwrap().to_owned();
    let (_, body) = post_silence(
        &r,
        &silence_body(
            json!([{"name": "instance", "value": "i-all.*", "isRegex": true, "isEqual": true}]),
            "all",
            in_an_hour,
        ),
    );
    let all = body["silenceID"].as_str().unwrap().to_owned();

    // notify: the rollback runs, the chat hears nothing of the incident.
    let start = now_millis() - 5_000;
    let web = labels("web", "i-web-1", "low", "critical");
    r.post_alerts(&webhook(vec![firing("fp-s1", &web, start)]));
    assert!(wait_until(Duration::from_secs(30), || calls_for(
        dir.path(),
        "i-web-1"
    ) == 1));
    let notify = settled_action(&r, "i-web-1", "notify");
    assert_eq!(notify["state"], "skipped", "{notify}");
    assert!(
        notify["detail"].as_str().unwrap().contains(&quiet),
        "{notify}"
    );
    let id = r.incident_of("i-web-1").unwrap();
    // Nothing about it reached the chat, alone or in a digest.
    assert!(
        !standin.lines().iter().any(|l| l.contains("i-web-1")),
        "{:?}",
        standin.all()
    );
    assert!(
        support::timeline_says(&r.incident(&id), &format!("held back by silence {quiet}")),
        "the timeline names the silence"
    );
    assert!(wait_until(Duration::from_secs(10), || r
        .stdout
        .all()
        .iter()
        .any(|l| l.contains("held_back") && l.contains(&quiet))));

    // all: nothing runs, and the silence's audit says what it held back.
    let db = labels("db", "i-all-1", "low", "critical");
    r.post_alerts(&webhook(vec![firing("fp-s2", &db, start)]));
    let rollback = settled_action(&r, "i-all-1", "rollback");
    assert_eq!(rollback["state"], "skipped", "{rollback}");
    let audit = r.get(&format!("/api/v1/silences/{all}"));
    assert_eq!(audit["status"]["state"], "active");
    let held: Vec<&str> = audit["heldBack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert!(
        held.contains(&"rollback") && held.contains(&"notify"),
        "{audit}"
    );

    // A maintenance window from the config holds back the same way.
    let maint = labels("maint", "i-maint-1", "low", "critical");
    r.post_alerts(&webhook(vec![firing("fp-s7", &maint, start)]));
    let rollback = settled_action(&r, "i-maint-1", "rollback");
    assert_eq!(rollback["state"], "skipped", "{rollback}");
    assert!(
        rollback["detail"]
            .as_str()
            .unwrap()
            .contains("maintenance window always-on"),
        "{rollback}"
    );

    // Kept across a restart.
    assert!(r.terminate().success());
    let r = Ripcord::start(dir.path(), port);
    let listed = r.get("/api/v1/silences?state=active");
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let (code, out) = cli(dir.path(), &["silence", "ls"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&quiet) && out.contains(&all), "{out}");
    let db2 = labels("db", "i-all-2", "low", "critical");
    r.post_alerts(&webhook(vec![firing("fp-s3", &db2, start)]));
    assert_eq!(
        settled_action(&r, "i-all-2", "rollback")["state"],
        "skipped"
    );

    // Expired by a human from the CLI: the next breach rolls back.
    let (code, out) = cli(dir.path(), &["silence", "expire", &all, "--by", "bob"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli(dir.path(), &["silence", "expire", &all, "--by", "bob"]);
    assert_ne!(code, 0, "expired twice: {out}");
    assert!(out.contains("already over"), "{out}");
    let db3 = labels("db", "i-all-3", "low", "critical");
    r.post_alerts(&webhook(vec![firing("fp-s4", &db3, start)]));
    assert!(wait_until(Duration::from_secs(30), || calls_for(
        dir.path(),
        "i-all-3"
    ) == 1));
    let gone = r.get(&format!("/api/v1/silences/{all}"));
    assert_eq!(gone["status"]["state"], "expired", "{gone}");
    assert_eq!(gone["expiredBy"], "bob");
    assert_eq!(
        calls_for(dir.path(), "i-all-1")
            + calls_for(dir.path(), "i-all-2")
            + calls_for(dir.path(), "i-maint-1"),
        0
    );

    // Until batch 2 of `shop` completes: held while it runs, not after.
    let (_, body) = post_silence(
        &r,
        &silence_body(
            json!([{"name": "service", "value": "shop", "isRegex": false}]),
            "all",
            json!({"service": "shop", "batch": "2"}),
        ),
    );
    let batch_silence = body["silenceID"].as_str().unwrap().to_owned();
    let shop1 = labels("shop", "i-shop-1", "low", "critical");
    r.post_alerts(&webhook(vec![firing("fp-s5", &shop1, start)]));
    assert_eq!(
        settled_action(&r, "i-shop-1", "rollback")["state"],
        "skipped"
    );
    let done = json!({"kind": "progress", "ts": rfc3339(now_millis()), "stage": "batch_done",
        "labels": {"service": "shop", "batch": "2"}, "done": 20, "total": 100});
    let resp = client()
        .post(r.url("/api/v1/events"))
        .header("content-type", "application/x-ndjson")
        .body(format!("{done}\n"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(wait_until(Duration::from_secs(10), || r
        .get(&format!("/api/v1/silences/{batch_silence}"))["status"]["state"]
        == "expired"));
    let shop2 = labels("shop", "i-shop-2", "low", "critical");
    r.post_alerts(&webhook(vec![firing("fp-s6", &shop2, start)]));
    assert!(wait_until(Duration::from_secs(30), || calls_for(
        dir.path(),
        "i-shop-2"
    ) == 1));
}

// ---------------------------------------------------------------------------
// Staged verification.

/// The plan's order after a rollback: system, services, business. Each
/// stage runs only after the one before passed; a stage's retries absorb
/// a host still booting; `windows: true` waits for the breached rule to
/// clear; every result is on the timeline, the last with each stage's
/// time. A stage that keeps failing pages, stops the later stages and
/// marks the rollback failed.
#[test]
fn verification_stages_run_in_order_retry_and_a_failing_stage_pages() {
    let standin = StandIn::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let record = dir.path().join("calls.bin");
    // `system` fails its first try per instance (the host still booting);
    // `business` fails for i-vf every time.
    let check = dir.path().join("check.sh");
    std::fs::write(
        &check,
        format!(
            "printf '%s\\0' CALL \"check-$1\" \"$2\" >> '{rec}'\n\
             if [ \"$1\" = system ] && [ ! -e '{dir}/booted-'\"$2\" ]; then : > '{dir}/booted-'\"$2\"; echo booting >&2; exit 1; fi\n\
             if [ \"$1\" = business ] && [ \"$2\" = i-vf ]; then echo \"orders failing on $2\" >&2; exit 1; fi\n\
             echo \"$1 of $2 back\"\n",
            rec = record.display(),
            dir = dir.path().display()
        ),
    )
    .unwrap();
    let check = check.display();
    let extra = format!(
        r#"    verify:
      delay: 0s
      stages:
        - {{name: system, command: {{argv: [/bin/sh, "{check}", system, "{{instance}}"], timeout: 10s}}, retries: 2, retry_delay: 1s}}
        - {{name: services, http: {{method: GET, url: "{base}/status/{{instance}}"}}}}
        - {{name: business, command: {{argv: [/bin/sh, "{check}", business, "{{instance}}"], timeout: 10s}}}}
"#,
        base = standin.base
    );
    write_config(dir.path(), port, &standin, "", "", &extra);
    let r = Ripcord::start(dir.path(), port);
    let ok = labels("pay", "i-vo", "low", "critical");
    let bad = labels("pay", "i-vf", "low", "critical");
    let start = now_millis() - 5_000;
    r.post_alerts(&webhook(vec![
        firing("fp-vo", &ok, start),
        firing("fp-vf", &bad, start),
    ]));
    let mut ids = (None, None);
    let found = wait_until(Duration::from_secs(30), || {
        ids = (r.incident_of("i-vo"), r.incident_of("i-vf"));
        ids.0.is_some() && ids.1.is_some()
    });
    assert!(found, "no incidents");
    let (ok_id, bad_id) = (ids.0.unwrap(), ids.1.unwrap());
    let finished = |id: &str, what: &str| {
        wait_until(Duration::from_secs(60), || {
            support::timeline_says(&r.incident(id), what)
        })
    };
    assert!(
        finished(&ok_id, "verification after rollback passed"),
        "{}",
        r.incident(&ok_id)
    );
    assert!(
        finished(&bad_id, "verification stage business FAILED"),
        "{}",
        r.incident(&bad_id)
    );

    // In order, each after the one before passed; system tried twice.
    let seen: Vec<String> = calls(dir.path())
        .into_iter()
        .filter(|c| {
            c.get(1).map(String::as_str) == Some("i-vo")
                || c.first().map(String::as_str) == Some("i-vo")
        })
        .map(|c| c[0].clone())
        .collect();
    assert_eq!(
        seen,
        ["i-vo", "check-system", "check-system", "check-business"],
        "rollback, system (booting, then back), business"
    );
    let status: Vec<Hit> = standin
        .all()
        .into_iter()
        .filter(|h| h.path == "/status/i-vo")
        .collect();
    assert_eq!(status.len(), 1, "services checked once");

    let inc = r.incident(&ok_id);
    let lines: Vec<String> = inc["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "verify")
        .map(|t| t["message"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        lines[0].starts_with("verification stage system ok (")
            && lines[0].contains("system of i-vo back")
            && lines[0].ends_with("; 2 tries)"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("verification stage services ok"),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("verification stage business ok"),
        "{lines:?}"
    );
    let summary = &lines[3];
    let shape: String = summary
        .chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect();
    assert_eq!(
        shape,
        "verification after rollback passed: system ok ##:##, services ok ##:##, business ok ##:##"
    );
    assert_eq!(r.actions(&ok_id, "rollback")[0]["state"], "done");

    // The failing stage: paged, the rollback marked failed, nothing after.
    let bad_inc = r.incident(&bad_id);
    assert!(
        support::timeline_says(&bad_inc, "orders failing on i-vf"),
        "{bad_inc}"
    );
    assert!(!support::timeline_says(
        &bad_inc,
        "verification after rollback passed"
    ));
    assert_eq!(
        r.actions(&bad_id, "rollback")[0]["state"],
        "failed",
        "{bad_inc}"
    );
    let paged = wait_until(Duration::from_secs(30), || {
        standin.titles().iter().any(|t| {
            t.contains("verification after rollback FAILED at stage business") && t.contains("i-vf")
        })
    });
    assert!(paged, "{:?}", standin.titles());
    assert!(
        r.incident(&bad_id)["paging"].is_object(),
        "paging started: {bad_inc}"
    );

    // The alert recovers: the incident resolves, but the paging about the
    // failed verification goes on until someone acknowledges it.
    r.post_alerts(&webhook(vec![resolved("fp-vf", &bad, start, now_millis())]));
    let all_clear = wait_until(Duration::from_secs(30), || {
        r.actions(&bad_id, "resolve")
            .first()
            .is_some_and(|a| a["state"] == "done")
    });
    assert!(all_clear, "{}", r.incident(&bad_id));
    let inc = r.incident(&bad_id);
    assert_eq!(inc["paging"]["state"], "active", "{inc}");
    assert!(
        !support::timeline_says(&inc, "paging stopped: resolved"),
        "{inc}"
    );
    assert!(
        standin
            .lines()
            .iter()
            .any(|l| l.contains("the rollback or its verification FAILED: paging goes on")),
        "the all-clear says the paging goes on: {:?}",
        standin.lines()
    );
}

/// `windows: true` as the business stage: it passes only once ripcord's
/// own windows resolved the incident (here the alert resolving), after the
/// stage before it passed.
#[test]
fn a_windows_stage_passes_once_the_breached_rule_clears() {
    let standin = StandIn::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let extra = format!(
        r#"    verify:
      delay: 0s
      stages:
        - {{name: services, http: {{method: GET, url: "{base}/status/{{instance}}"}}}}
        - {{name: business, windows: true, timeout: 5m}}
"#,
        base = standin.base
    );
    write_config(dir.path(), port, &standin, "", "", &extra);
    let r = Ripcord::start(dir.path(), port);
    let l = labels("pay", "i-vw", "low", "critical");
    let start = now_millis() - 5_000;
    r.post_alerts(&webhook(vec![firing("fp-vw", &l, start)]));
    let mut id = None;
    assert!(wait_until(Duration::from_secs(30), || {
        id = r.incident_of("i-vw");
        id.is_some()
    }));
    let id = id.unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || support::timeline_says(
            &r.incident(&id),
            "verification stage services ok"
        )),
        "{}",
        r.incident(&id)
    );
    assert!(!support::timeline_says(
        &r.incident(&id),
        "verification stage business"
    ));
    r.post_alerts(&webhook(vec![resolved("fp-vw", &l, start, now_millis())]));
    assert!(
        wait_until(Duration::from_secs(30), || support::timeline_says(
            &r.incident(&id),
            "verification after rollback passed: services ok"
        )),
        "{}",
        r.incident(&id)
    );
    let inc = r.incident(&id);
    assert!(
        support::timeline_says(
            &inc,
            "verification stage business ok (alertmanager-forwarded back under its threshold)"
        ),
        "{inc}"
    );
}

// ---------------------------------------------------------------------------
// The cloud vendor (severe incidents).

/// What reached the stand-in on paths starting with `prefix`.
fn hits_on(standin: &StandIn, prefix: &str) -> Vec<Hit> {
    standin
        .all()
        .into_iter()
        .filter(|h| h.path.starts_with(prefix))
        .collect()
}

/// The incident's timeline lines of kind `vendor`.
fn vendor_lines(r: &Ripcord, id: &str) -> Vec<String> {
    r.incident(id)["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "vendor")
        .map(|e| e["message"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn the_vendor_hears_of_a_severe_incident_once_after_its_approval_with_summary_instances_region_and_link()
 {
    let standin = StandIn::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let extra = format!(
        r#"vendor:
  http:
    method: POST
    url: "{base}/vendor-api/tickets?key=s3cret-query"
    headers: {{Authorization: "Bearer vendor-secret-token"}}
    body: '{{"subject": "{{summary}}", "instances": "{{instances}}", "region": "{{region}}", "link": "{{timeline}}", "severity": "{{severity}}"}}'
"#,
        base = standin.base
    );
    write_config(dir.path(), port, &standin, "", "", &extra);
    let r = Ripcord::start(dir.path(), port);
    let mut severe = labels("pay", "i-sv1", "medium", "critical");
    severe["region"] = json!("eu-west-1");
    let functional = labels("pay", "i-fn1", "medium", "warning");
    let start = now_millis() - 5_000;
    r.post_alerts(&webhook(vec![
        firing("fp-sv1", &severe, start),
        firing("fp-fn1", &functional, start),
    ]));
    let (severe_id, _) = standin.approval_request(&r, "i-sv1");
    let (functional_id, _) = standin.approval_request(&r, "i-fn1");
    assert!(
        wait_until(Duration::from_secs(10), || r
            .actions(&severe_id, "request_approval")[0]["state"]
            == "awaiting_approval"),
        "{}",
        r.incident(&severe_id)
    );
    // Nothing before the commander's approval, across a restart.
    assert!(r.terminate().success());
    assert!(
        hits_on(&standin, "/vendor-api").is_empty(),
        "contacted before the approval"
    );
    let r = Ripcord::start(dir.path(), port);
    // The functional incident's approved rollback never reaches the vendor.
    let (code, out) = cli(dir.path(), &["approve", &functional_id, "--by", "carol"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        wait_until(Duration::from_secs(20), || r
            .actions(&functional_id, "rollback")
            .first()
            .is_some_and(|a| a["state"] == "done")),
        "{}",
        r.incident(&functional_id)
    );
    let (code, out) = cli(dir.path(), &["approve", &severe_id, "--by", "carol"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        wait_until(Duration::from_secs(20), || !vendor_lines(&r, &severe_id)
            .is_empty()),
        "no vendor line:\n{}\n{}",
        r.incident(&severe_id),
        r.stderr.text()
    );
    let hits = hits_on(&standin, "/vendor-api");
    assert_eq!(
        hits.len(),
        1,
        "{:?}",
        hits.iter().map(|h| &h.body).collect::<Vec<_>>()
    );
    let body = &hits[0].body;
    assert_eq!(body["instances"], "i-sv1");
    assert_eq!(body["region"], "eu-west-1");
    assert_eq!(body["severity"], "severe");
    assert_eq!(
        body["link"],
        format!("http://127.0.0.1:{port}/incidents/{severe_id}").as_str()
    );
    assert_eq!(body["subject"], "ErrorsUp firing on pay/i-sv1: errors up");
    let lines = vendor_lines(&r, &severe_id);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("HTTP 200") && lines[0].contains("ticket SUP-77"),
        "{lines:?}"
    );
    assert!(
        !lines[0].contains("s3cret") && !lines[0].contains("vendor-secret-token"),
        "{lines:?}"
    );
    assert!(vendor_lines(&r, &functional_id).is_empty());
}

#[test]
fn at_once_the_vendor_hears_of_each_severe_incident_once_and_never_of_a_functional_one() {
    let standin = StandIn::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let channels = format!(
        "  vendor-desk: {{type: webhook, url: \"{}/vendor-chat\", rate: 100/s}}\n",
        standin.base
    );
    let extra = "vendor: {when: at_once, channel: vendor-desk}\n".to_owned()
        + "routing:\n  low: {notify: [hook]}\n  medium: {notify: [hook]}\n  high: {notify: [hook]}\n"
        + "escalation:\n  low: [{after: 0s, channels: [hook]}]\n  medium: [{after: 0s, channels: [hook]}]\n  high: [{after: 0s, channels: [hook]}]\n";
    write_config(dir.path(), port, &standin, &channels, "", &extra);
    let r = Ripcord::start(dir.path(), port);
    let start = now_millis() - 5_000;
    // A functional low-tier incident first: rolled back, never the vendor.
    r.post_alerts(&webhook(vec![firing(
        "fp-lf",
        &labels("web", "i-lf", "low", "warning"),
        start,
    )]));
    assert!(
        wait_until(Duration::from_secs(20), || calls_for(dir.path(), "i-lf")
            == 1),
        "{}",
        r.stderr.text()
    );
    // Severe on the low tier (no approval there): the rollback and the
    // notification both bring the vendor about; one message reaches it.
    r.post_alerts(&webhook(vec![firing(
        "fp-ls",
        &labels("web", "i-ls", "low", "critical"),
        start,
    )]));
    let mut id = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            id = r.incident_of("i-ls");
            id.as_ref().is_some_and(|i| !vendor_lines(&r, i).is_empty())
        }),
        "{}",
        r.stderr.text()
    );
    let id = id.unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || r
            .actions(&id, "rollback")
            .first()
            .is_some_and(|a| a["state"] == "done")),
        "{}",
        r.incident(&id)
    );
    // A restart: the incident's later actions (its all-clear) do not
    // contact the vendor again.
    assert!(r.terminate().success());
    let r = Ripcord::start(dir.path(), port);
    r.post_alerts(&webhook(vec![resolved(
        "fp-ls",
        &labels("web", "i-ls", "low", "critical"),
        start,
        now_millis(),
    )]));
    assert!(
        wait_until(Duration::from_secs(20), || r
            .actions(&id, "resolve")
            .first()
            .is_some_and(|a| a["state"] == "done")),
        "{}",
        r.incident(&id)
    );
    let hits = hits_on(&standin, "/vendor-chat");
    assert_eq!(
        hits.len(),
        1,
        "{:?}",
        hits.iter().map(|h| &h.body).collect::<Vec<_>>()
    );
    let text = hits[0].body.to_string();
    assert!(
        text.contains("i-ls") && text.contains(&format!("/incidents/{id}")),
        "{text}"
    );
    assert!(!text.contains("i-lf"), "{text}");
    let lines = vendor_lines(&r, &id);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("vendor contacted"), "{lines:?}");
}

// ---------------------------------------------------------------------------
// The medium tier's sample check after each batch.

/// One upgrade progress event of `shop` (medium tier) naming its instances.
fn batch_done(batch: &str, instances: &[String]) -> Value {
    json!({"kind": "progress", "ts": now_millis(), "stage": "batch_done",
           "done": instances.len(), "total": 100, "instances": instances,
           "labels": {"service": "shop", "batch": batch, "tier": "medium"}})
}

fn post_progress(r: &Ripcord, event: &Value) {
    let resp = client()
        .post(r.url("/api/v1/events"))
        .header("content-type", "application/x-ndjson")
        .body(format!("{event}\n"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
}

/// The gate's answer for `shop`: (decision, reasons joined).
fn shop_gate(r: &Ripcord) -> (String, String) {
    let g = r.get("/api/v1/rollouts/shop/gate");
    let reasons: Vec<&str> = g["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    (
        g["decision"].as_str().unwrap().to_owned(),
        reasons.join("; "),
    )
}

/// A medium-tier batch done: ripcord checks a random 10% of the instances
/// the event names (2 of 12) with the verification stages; the gate holds
/// while they run and goes once they passed. A later batch whose sampled
/// instance fails its first stage: the gate says nogo naming the instance
/// and the stage, and an incident opens for the instance (the medium
/// tier's policy asks for an approval).
#[test]
fn a_medium_batch_is_sample_checked_and_the_gate_holds_goes_and_nogoes_on_it() {
    let standin = StandIn::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let record = dir.path().join("calls.bin");
    // `system` waits for `release` (so the gate is seen holding), then
    // passes, except on batch 2's instances.
    let check = dir.path().join("check.sh");
    std::fs::write(
        &check,
        format!(
            "printf '%s\\0' CALL \"check-$1\" \"$2\" >> '{rec}'\n\
             while [ ! -e '{dir}/release' ]; do sleep 0.05; done\n\
             case \"$2\" in b2-*) echo \"kernel 5.10 still on $2\" >&2; exit 1;; esac\n\
             echo \"$1 of $2 upgraded\"\n",
            rec = record.display(),
            dir = dir.path().display()
        ),
    )
    .unwrap();
    let extra = format!(
        r#"    verify:
      delay: 0s
      stages:
        - {{name: system, command: {{argv: [/bin/sh, "{check}", system, "{{instance}}"], timeout: 20s}}}}
        - {{name: services, http: {{method: GET, url: "{base}/status/{{instance}}"}}}}
gates: {{min_soak: 0s, min_samples: 0}}
grouping: {{wait: 1s}}
"#,
        check = check.display(),
        base = standin.base
    );
    write_config(dir.path(), port, &standin, "", "", &extra);
    let r = Ripcord::start(dir.path(), port);

    let batch1: Vec<String> = (1..=12).map(|i| format!("b1-{i:02}")).collect();
    post_progress(&r, &batch_done("1", &batch1));
    let mut seen = String::new();
    let held = wait_until(Duration::from_secs(30), || {
        let (d, why) = shop_gate(&r);
        seen = format!("{d}: {why}");
        d == "hold" && why.contains("sample check of batch 1: 0 of 2 passed")
    });
    assert!(held, "{seen}");
    std::fs::write(dir.path().join("release"), "").unwrap();
    let went = wait_until(Duration::from_secs(30), || {
        let (d, why) = shop_gate(&r);
        seen = format!("{d}: {why}");
        d == "go"
    });
    assert!(went, "{seen}");
    let checked: BTreeSet<String> = calls(dir.path())
        .into_iter()
        .filter(|c| c[0] == "check-system")
        .map(|c| c[1].clone())
        .collect();
    assert_eq!(checked.len(), 2, "10% of 12, rounded up: {checked:?}");
    assert!(checked.iter().all(|i| batch1.contains(i)), "{checked:?}");
    for i in &checked {
        let hits = standin
            .all()
            .into_iter()
            .filter(|h| h.path == format!("/status/{i}"))
            .count();
        assert_eq!(hits, 1, "services checked once on {i}");
    }
    let g = r.get("/api/v1/rollouts/shop/gate");
    let rows = g["sample_check"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{g}");
    assert!(rows.iter().all(|s| s["state"] == "passed"
        && s["detail"].as_str().unwrap().contains("system ok")
        && s["detail"].as_str().unwrap().contains("services ok")));
    // The console's rollout page shows it.
    let page = client()
        .get(r.url("/rollouts"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains("sample check: 2 of 2 passed"), "{page}");
    for i in &checked {
        assert!(
            page.contains(&format!("{i} <b>passed</b>: system ok ")),
            "{page}"
        );
    }

    // Batch 2: every instance fails `system`.
    let batch2: Vec<String> = (1..=5).map(|i| format!("b2-{i:02}")).collect();
    post_progress(&r, &batch_done("2", &batch2));
    // The failing instance's incident is opened before the check's row is
    // written (a crash in between runs the stage again): the gate may say
    // nogo for the incident a moment before it can name the failed check.
    let nogo = wait_until(Duration::from_secs(30), || {
        let (d, why) = shop_gate(&r);
        seen = format!("{d}: {why}");
        d == "nogo" && why.contains("sample check of batch 2 failed on")
    });
    assert!(nogo, "{seen}");
    let failed = r.get("/api/v1/rollouts/shop/gate")["sample_check"][0].clone();
    let instance = failed["instance"].as_str().unwrap().to_owned();
    assert!(batch2.contains(&instance), "{failed}");
    assert!(
        seen.contains(&format!(
            "sample check of batch 2 failed on {instance}: stage system FAILED"
        )) && seen.contains("kernel 5.10 still on"),
        "{seen}"
    );
    // The incident: opened for the instance, the medium tier asks.
    let mut incident = Value::Null;
    let opened = wait_until(Duration::from_secs(30), || {
        incident = r.get("/api/v1/incidents")["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i.to_string().contains(&instance))
            .cloned()
            .unwrap_or(Value::Null);
        !incident.is_null()
    });
    assert!(opened, "{}", r.get("/api/v1/incidents"));
    let id = incident["id"].as_str().unwrap().to_owned();
    let asked = wait_until(Duration::from_secs(30), || {
        approval_state(&r, &id) != "none"
    });
    assert!(asked, "{}", r.incident(&id));
    assert!(
        support::timeline_says(&r.incident(&id), "stage system FAILED"),
        "{}",
        r.incident(&id)
    );
}
