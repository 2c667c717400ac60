//! A bad batch is one incident (issue 17), end to end: `ripcord run` as its
//! own process, Alertmanager alerts and upgrade progress over HTTP, messages
//! to a stand-in chat webhook, recording rollback and pause scripts, and a
//! human approving the blast radius on the phone page of a signed link.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Capture, Responder, free_port, now_millis, rfc3339, wait_until};

const LINK_SECRET: &str = "batch-e2e-link-secret-0123456789";

/// A running `ripcord run` (the shared harness's [`Responder`]), its
/// directory and the chat stand-in it posts to.
struct Run {
    ripcord: Responder,
    base: String,
    dir: tempfile::TempDir,
    chat: Capture,
}

impl std::ops::Deref for Run {
    type Target = Responder;
    fn deref(&self) -> &Responder {
        &self.ripcord
    }
}

/// A script that records its arguments, one call per record, in `file`.
fn recorder(dir: &Path, name: &str) -> PathBuf {
    let script = dir.join(format!("{name}.sh"));
    std::fs::write(
        &script,
        format!(
            "printf '%s\\0' CALL \"$@\" >> '{}'\necho \"{name} $1\"\n",
            dir.join(format!("{name}.bin")).display()
        ),
    )
    .unwrap();
    script
}

fn start(extra: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let chat = Capture::start();
    let port = free_port();
    let rollback = recorder(dir.path(), "rollback");
    let pause = recorder(dir.path(), "pause");
    let yaml = format!(
        r#"http:
  public_url: "http://127.0.0.1:{port}"
channels:
  hook: {{type: webhook, url: "{chat}/chat", rate: 100/s}}
escalation:
  high: [{{after: 0s, channels: [hook]}}]
approvals:
  link_secret: "{LINK_SECRET}"
grouping: {{wait: 2s}}
executors:
  rollback:
    command: {{argv: [/bin/sh, "{rollback}", "{{instance}}"], timeout: 30s}}
  pause_rollout:
    command: {{argv: [/bin/sh, "{pause}", "{{service}}"], timeout: 30s}}
{extra}"#,
        chat = chat.base(),
        rollback = rollback.display(),
        pause = pause.display(),
    );
    std::fs::write(dir.path().join("ripcord.yaml"), yaml).unwrap();
    let ripcord = Responder::start_on(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        &[
            "--no-kafka",
            "--output",
            "json",
            "--config",
            "ripcord.yaml",
            "--state",
            "state.db",
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    let ready = wait_until(Duration::from_secs(60), || {
        reqwest::blocking::get(format!("{base}/readyz")).is_ok_and(|r| r.status() == 200)
    });
    assert!(ready, "ripcord never ready:\n{}", ripcord.stderr.text());
    Run {
        ripcord,
        base,
        dir,
        chat,
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl Run {
    fn post(&self, path: &str, body: &Value) {
        let r = client()
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap();
        let status = r.status();
        assert_eq!(status, 200, "{}", r.text().unwrap_or_default());
    }

    /// `shop` batch 2 started, naming its instances.
    fn batch_started(&self, tier: &str, instances: &[String]) {
        self.post(
            "/api/v1/events",
            &json!({"kind": "progress", "ts": rfc3339(now_millis()), "stage": "batch_started",
                "labels": {"service": "shop", "batch": "2", "batches": "3", "tier": tier},
                "instances": instances}),
        );
    }

    /// Alertmanager's webhook: `ErrorsUp` firing on each instance (batch
    /// 2 when `batch`, else an instance not upgraded).
    fn firing(&self, tier: &str, instances: &[String], batch: bool) {
        let now = now_millis();
        let alerts: Vec<Value> = instances
            .iter()
            .map(|i| {
                let mut labels = json!({"alertname": "ErrorsUp", "service": "shop", "instance": i,
                    "tier": tier, "severity": "critical"});
                if batch {
                    labels["batch"] = json!("2");
                }
                json!({"status": "firing", "labels": labels, "annotations": {"summary": "5xx at 100%"},
                    "startsAt": rfc3339(now), "endsAt": "0001-01-01T00:00:00Z",
                    "fingerprint": format!("fp-{i}")})
            })
            .collect();
        self.post(
            "/api/v1/alerts",
            &json!({"version": "4", "status": "firing", "receiver": "ripcord", "groupKey": "{}:{}", "alerts": alerts}),
        );
    }

    fn decisions(&self, action: &str) -> Vec<Value> {
        self.stdout
            .decisions()
            .into_iter()
            .filter(|d| d["action"] == action)
            .collect()
    }

    fn calls(&self, name: &str) -> Vec<Vec<String>> {
        support::recorded_calls(&self.dir.path().join(format!("{name}.bin")))
    }

    /// The instances the rollback script was called for, sorted.
    fn rolled(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .calls("rollback")
            .into_iter()
            .map(|c| c[0].clone())
            .collect();
        v.sort();
        v
    }

    /// Chat messages: (title, body, links).
    fn messages(&self) -> Vec<Value> {
        self.chat
            .bodies("/chat")
            .iter()
            .filter_map(|b| serde_json::from_str(b).ok())
            .collect()
    }

    fn incidents(&self) -> Vec<Value> {
        let v: Value = client()
            .get(format!("{}/api/v1/incidents", self.base))
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["incidents"].as_array().unwrap().clone()
    }

    fn wait(&self, what: &str, f: impl FnMut() -> bool) {
        assert!(
            wait_until(Duration::from_secs(60), f),
            "{what}: not within 60 s\nstdout:\n{}\nstderr:\n{}",
            self.stdout.tail(40),
            self.stderr.tail(40)
        );
    }
}

fn names(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| format!("i-p{i:02}")).collect()
}

#[test]
fn a_bad_high_tier_batch_pauses_pages_and_asks_once_and_the_whole_batch_rolls_back_from_the_phone()
{
    let r = start("");
    r.batch_started("high", &names(1..=10));
    r.firing("high", &names(6..=10), true);
    // One approval request, with a link per blast radius.
    r.wait("the approval request", || {
        r.messages().iter().any(|m| {
            m["links"].as_array().is_some_and(|l| {
                l.iter()
                    .any(|l| l["url"].as_str().unwrap().contains("/approve-batch/"))
            })
        })
    });
    assert_eq!(r.decisions("pause_rollout").len(), 1, "one pause");
    assert_eq!(r.decisions("page").len(), 1, "one page chain");
    let asks = r.decisions("request_approval");
    assert_eq!(asks.len(), 1, "one approval request");
    assert_eq!(
        asks[0]["instances"],
        json!(["i-p06", "i-p07", "i-p08", "i-p09", "i-p10"])
    );
    assert_eq!(
        (
            asks[0]["labels"]["service"].as_str(),
            asks[0]["labels"]["batch"].as_str()
        ),
        (Some("shop"), Some("2"))
    );
    assert_eq!(r.incidents().len(), 1, "one incident: {:?}", r.incidents());
    r.wait("the pause ran", || r.calls("pause").len() == 1);
    let ask = r
        .messages()
        .into_iter()
        .find(|m| m["kind"] == "approval_request")
        .unwrap();
    let body = ask["body"].as_str().unwrap();
    assert!(body.contains("i-p06..i-p10"), "{body}");
    assert!(body.contains("whole batch (10 instances)"), "{body}");
    let batch_link = ask["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["url"].as_str().unwrap().to_owned())
        .find(|u| u.contains("/approve-batch/"))
        .unwrap();
    // The phone page: three large choices with counts, the whole batch
    // chosen by this link; GET runs nothing.
    let page = client().get(&batch_link).send().unwrap().text().unwrap();
    assert!(page.contains("The 5 breaching instances"), "{page}");
    assert!(page.contains("The whole batch: 10 instances"), "{page}");
    assert!(page.contains(r#"value="batch" checked"#), "{page}");
    assert!(r.calls("rollback").is_empty());
    let resp = client()
        .post(&batch_link)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("scope=batch&by=carol")
        .send()
        .unwrap();
    // Done: back to the link's own page (post/redirect/get).
    assert_eq!(resp.status(), 303, "{}", resp.text().unwrap_or_default());
    r.wait("ten rollbacks", || r.calls("rollback").len() >= 10);
    let rolled = r.rolled();
    assert_eq!(rolled, names(1..=10), "each instance of the batch once");
    // The same link again acts no more.
    let again = client()
        .post(&batch_link)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("scope=batch&by=carol")
        .send()
        .unwrap();
    assert_eq!(again.status(), 409);
    let id = r.incidents()[0]["id"].as_str().unwrap().to_owned();
    let inc: Value = client()
        .get(format!("{}/api/v1/incidents/{id}", r.base))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        support::timeline_says(
            &inc,
            "approved by carol via link; the whole batch: 10 instances (i-p01..i-p10)"
        ),
        "{inc}"
    );
    assert_eq!(r.calls("rollback").len(), 10);
}

#[test]
fn a_bad_low_tier_batch_rolls_its_members_back_once_pauses_and_says_so_once() {
    let r = start("");
    r.batch_started("low", &names(1..=10));
    r.firing("low", &names(6..=10), true);
    r.wait("five rollbacks", || r.calls("rollback").len() >= 5);
    r.wait("the count", || {
        r.messages().iter().any(|m| {
            m["title"]
                .as_str()
                .unwrap_or("")
                .contains("5 of 10 instances of shop batch 2 rolled back")
        })
    });
    let rolled = r.rolled();
    assert_eq!(rolled, names(6..=10), "the breaching members, once each");
    r.wait("the pause", || r.calls("pause").len() == 1);
    assert_eq!(r.decisions("pause_rollout").len(), 1);
    let said = r
        .messages()
        .iter()
        .filter(|m| m["title"].as_str().unwrap_or("").contains("rolled back"))
        .count();
    assert_eq!(said, 1, "one message counts them: {:?}", r.messages());
}

#[test]
fn a_fault_outside_the_batch_rolls_nothing_back_and_says_why() {
    let r = start("");
    r.batch_started("low", &names(1..=4));
    // Two upgraded instances and three not upgraded fail together: a
    // shared database down, not the upgrade.
    r.firing("low", &names(11..=13), false);
    r.firing("low", &names(3..=4), true);
    r.wait("the page", || {
        r.messages().iter().any(|m| {
            m["body"]
                .as_str()
                .unwrap_or("")
                .contains("the fault may not be the upgrade")
        })
    });
    r.wait("the approval request", || {
        !r.decisions("request_approval").is_empty()
    });
    assert!(
        r.decisions("rollback").is_empty(),
        "{:?}",
        r.stdout.decisions()
    );
    assert!(r.calls("rollback").is_empty());
    assert_eq!(r.decisions("page").len(), 1);
    assert_eq!(
        r.incidents().len(),
        1,
        "the outside instances open nothing of their own"
    );
    let note = r
        .messages()
        .into_iter()
        .find(|m| m["body"].as_str().unwrap_or("").contains("not upgraded"))
        .unwrap();
    assert!(
        note["body"]
            .as_str()
            .unwrap()
            .contains("also breaching on 3 of 3 instances not upgraded"),
        "{note}"
    );
}

#[test]
fn a_member_that_breaches_later_joins_without_a_second_page() {
    let r = start("");
    r.batch_started("high", &names(1..=10));
    r.firing("high", &names(9..=10), true);
    r.wait("the approval request", || {
        r.decisions("request_approval").len() == 1
    });
    r.firing("high", &names(3..=3), true);
    r.wait("the join", || {
        r.messages()
            .iter()
            .any(|m| m["body"].as_str().unwrap_or("").starts_with("i-p03 joined"))
    });
    assert_eq!(r.decisions("page").len(), 1, "no second page");
    assert_eq!(r.decisions("pause_rollout").len(), 1, "no second pause");
    assert_eq!(r.incidents().len(), 1);
    // The waiting request covers the newcomer: it asks nothing new.
    let asks: Vec<Value> = r
        .messages()
        .into_iter()
        .filter(|m| m["kind"] == "approval_request")
        .collect();
    assert_eq!(asks.len(), 1, "{asks:?}");
    // Approving the breaching instances now rolls back all three.
    let id = r.incidents()[0]["id"].as_str().unwrap().to_owned();
    r.post(
        &format!("/api/v1/incidents/{id}/approve"),
        &json!({"by": "dave", "scope": "breaching"}),
    );
    r.wait("three rollbacks", || r.calls("rollback").len() >= 3);
    let rolled = r.rolled();
    assert_eq!(rolled, ["i-p03", "i-p09", "i-p10"]);
}

#[test]
fn an_unknown_instance_in_the_scope_is_refused_naming_it() {
    let r = start("");
    r.batch_started("medium", &names(1..=4));
    r.firing("medium", &names(1..=2), true);
    r.wait("the approval request", || {
        r.decisions("request_approval").len() == 1
    });
    let id = r.incidents()[0]["id"].as_str().unwrap().to_owned();
    let resp = client()
        .post(format!("{}/api/v1/incidents/{id}/approve", r.base))
        .header("content-type", "application/json")
        .body(json!({"by": "erin", "scope": {"instances": ["i-p01", "i-zz99"]}}).to_string())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);
    let text = resp.text().unwrap();
    assert!(
        text.contains("i-zz99") && text.contains("not an instance of shop batch 2"),
        "{text}"
    );
    assert!(r.calls("rollback").is_empty());
    r.post(
        &format!("/api/v1/incidents/{id}/approve"),
        &json!({"by": "erin", "scope": {"instances": ["i-p01", "i-p04"]}}),
    );
    r.wait("two rollbacks", || r.calls("rollback").len() >= 2);
    let rolled = r.rolled();
    assert_eq!(rolled, ["i-p01", "i-p04"], "exactly the chosen instances");
}
