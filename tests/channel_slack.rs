//! The Slack channel against a local stand-in for Slack's incoming webhook
//! that checks every payload against Slack's documented limits and answers
//! what it is told to (ok, 429 + Retry-After, 5xx, Slack's error strings).
//! The last two tests drive the channel through the delivery worker on
//! tokio's paused clock.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;

use ripcord::action::channel::{SendContext, SendOutcome, channel_from_yaml};
use ripcord::action::deliver::{Deliverer, Delivery};
use ripcord::action::message::{Kind, Link, Message};
use ripcord::decision::{Severity, Tier};
use ripcord::journal::SharedJournal;
use ripcord::journal::{Journal, SqliteJournal};
use ripcord::telemetry::Metrics;
use ripcord::time::{SystemClock, Ts};

/// The secret part of the webhook URL: must never appear in an outcome.
const TOKEN: &str = "T000/B000/SeCrEtToKeN";

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
struct Seen {
    at: tokio::time::Instant,
    payload: Value,
    problems: Vec<String>,
}

#[derive(Default)]
struct Slack {
    seen: Mutex<Vec<Seen>>,
    /// Scripted answers, in order; then 200 "ok".
    answers: Mutex<VecDeque<(u16, Option<&'static str>, &'static str)>>,
}

impl Slack {
    fn answer(&self, status: u16, retry_after: Option<&'static str>, body: &'static str) {
        self.answers
            .lock()
            .unwrap()
            .push_back((status, retry_after, body));
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn hook(State(s): State<Arc<Slack>>, headers: HeaderMap, body: String) -> Response {
    let at = tokio::time::Instant::now();
    let mut problems = Vec::new();
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        != Some("application/json")
    {
        problems.push("content-type is not application/json".to_owned());
    }
    let payload = match serde_json::from_str::<Value>(&body) {
        Ok(v) => {
            problems.extend(check(&v));
            v
        }
        Err(e) => {
            problems.push(format!("invalid JSON: {e}"));
            Value::Null
        }
    };
    let invalid = !problems.is_empty();
    s.seen.lock().unwrap().push(Seen {
        at,
        payload,
        problems,
    });
    if invalid {
        // What Slack answers to a payload it does not accept.
        return (StatusCode::BAD_REQUEST, "invalid_blocks").into_response();
    }
    let (status, retry_after, text) = s
        .answers
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or((200, None, "ok"));
    let mut resp = (StatusCode::from_u16(status).unwrap(), text).into_response();
    if let Some(r) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, r.parse().unwrap());
    }
    resp
}

fn chars(v: &Value) -> usize {
    v.as_str().map_or(0, |s| s.chars().count())
}

/// mrkdwn text: `&`, `<`, `>` only as entities, or in `<!here>` / `<@U…>`
/// style mentions.
fn check_mrkdwn(what: &str, s: &str, problems: &mut Vec<String>) {
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        let after = &rest[i..];
        if !["&amp;", "&lt;", "&gt;"]
            .iter()
            .any(|e| after.starts_with(e))
        {
            problems.push(format!("{what}: unescaped & in {:?}", truncate(after)));
            break;
        }
        rest = &rest[i + 1..];
    }
    let mut rest = s;
    while let Some(i) = rest.find('<') {
        let after = &rest[i..];
        let end = after.find('>');
        let ok = end.is_some_and(|e| {
            let inner = &after[1..e];
            (inner.starts_with('!') || inner.starts_with('@')) && !inner.contains('<')
        });
        if !ok {
            problems.push(format!("{what}: unescaped < in {:?}", truncate(after)));
            break;
        }
        rest = &after[end.unwrap() + 1..];
    }
    if rest.contains('>') {
        problems.push(format!("{what}: unescaped >"));
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(20).collect()
}

/// Slack's documented limits for an incoming-webhook message with blocks.
fn check(v: &Value) -> Vec<String> {
    let mut p = Vec::new();
    match v["text"].as_str() {
        Some(t) if !t.trim().is_empty() => {
            if t.chars().count() > 40_000 {
                p.push("text longer than 40,000 characters".into());
            }
            check_mrkdwn("text", t, &mut p);
        }
        _ => p.push("no `text` (the notification fallback)".into()),
    }
    let Some(blocks) = v["blocks"].as_array() else {
        p.push("no `blocks` array".into());
        return p;
    };
    if blocks.is_empty() || blocks.len() > 50 {
        p.push(format!("{} blocks (1..=50 allowed)", blocks.len()));
    }
    let mut total = 0;
    for (i, b) in blocks.iter().enumerate() {
        match b["type"].as_str() {
            Some("header") => {
                let n = chars(&b["text"]["text"]);
                total += n;
                if b["text"]["type"] != "plain_text" || n == 0 || n > 150 {
                    p.push(format!(
                        "block {i}: header is not plain_text of 1..=150 ({n})"
                    ));
                }
            }
            Some("section") => {
                let n = chars(&b["text"]["text"]);
                total += n;
                if b["text"]["type"] != "mrkdwn" || n == 0 || n > 3000 {
                    p.push(format!(
                        "block {i}: section text not mrkdwn of 1..=3000 ({n})"
                    ));
                }
                check_mrkdwn(
                    &format!("block {i}"),
                    b["text"]["text"].as_str().unwrap_or(""),
                    &mut p,
                );
            }
            Some("context") => {
                let els = b["elements"].as_array().map_or(0, Vec::len);
                if els == 0 || els > 10 {
                    p.push(format!("block {i}: context with {els} elements"));
                }
                for e in b["elements"].as_array().into_iter().flatten() {
                    let n = chars(&e["text"]);
                    total += n;
                    if n == 0 || n > 3000 {
                        p.push(format!("block {i}: context text of {n}"));
                    }
                }
            }
            Some("actions") => {
                let els = b["elements"].as_array().cloned().unwrap_or_default();
                if els.is_empty() || els.len() > 25 {
                    p.push(format!("block {i}: actions with {} elements", els.len()));
                }
                let mut ids = std::collections::HashSet::new();
                for e in &els {
                    let n = chars(&e["text"]["text"]);
                    total += n;
                    if e["type"] != "button"
                        || e["text"]["type"] != "plain_text"
                        || n == 0
                        || n > 75
                    {
                        p.push(format!("block {i}: button text of {n}"));
                    }
                    let u = chars(&e["url"]);
                    if u == 0 || u > 3000 {
                        p.push(format!("block {i}: button url of {u}"));
                    }
                    if !ids.insert(e["action_id"].to_string()) {
                        p.push(format!("block {i}: duplicate action_id"));
                    }
                }
            }
            other => p.push(format!("block {i}: unexpected type {other:?}")),
        }
    }
    // Slack refuses blocks much longer than this in total
    // (msg_blocks_too_long) even when each is within its own limit.
    if total > 13_000 {
        p.push(format!("blocks hold {total} characters in total"));
    }
    p
}

/// Starts the stand-in; returns it and the channel's YAML.
async fn stand_in(extra: &str) -> (Arc<Slack>, String) {
    let slack = Arc::new(Slack::default());
    let app = Router::new()
        .route("/services/{*rest}", post(hook))
        .with_state(slack.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let yaml = format!("type: slack\nwebhook: http://{addr}/services/{TOKEN}\n{extra}");
    (slack, yaml)
}

fn message(title: &str, body: &str) -> Message {
    Message::note(
        Kind::Incident,
        Tier::High,
        Severity::Severe,
        Some("inc-slack-1"),
        title.to_owned(),
        body.to_owned(),
    )
}

async fn send_once(yaml: &str, msg: &Message) -> SendOutcome {
    let spec = channel_from_yaml("ops-slack", yaml).expect("config");
    let http = reqwest::Client::new();
    let ctx = SendContext {
        http: &http,
        now: Ts(1_795_255_200_000),
    };
    let out = spec.channel.send(&ctx, msg).await;
    assert!(
        !format!("{out:?}").contains("SeCrEtToKeN"),
        "the webhook token leaked: {out:?}"
    );
    out
}

#[tokio::test]
async fn a_message_arrives_as_documented_block_kit() {
    let (slack, yaml) = stand_in("mention: \"<!here>\"\n").await;
    let mut msg = message(
        "[HIGH/severe] payments/i-pay-2: http_5xx_ratio 0.12 vs 0.05",
        "error rate <high> & rising\nwhere: service=payments\nripcord: rolling back",
    );
    msg.mention = true;
    msg.links = vec![
        Link {
            label: "Approve rollback".into(),
            url: "https://ripcord.example/approve/abc?x=1&y=2".into(),
        },
        Link {
            label: "Reject".into(),
            url: "https://ripcord.example/reject/abc".into(),
        },
    ];
    let out = send_once(&yaml, &msg).await;
    assert_eq!(out, SendOutcome::Sent("HTTP 200: ok".into()));

    let seen = slack.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].problems.is_empty(), "{:?}", seen[0].problems);
    let p = &seen[0].payload;
    assert!(
        p["text"]
            .as_str()
            .unwrap()
            .starts_with("<!here> [HIGH/severe] payments/i-pay-2")
    );
    let blocks = p["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["text"], msg.title);
    let sections: Vec<&str> = blocks
        .iter()
        .filter(|b| b["type"] == "section")
        .map(|b| b["text"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        sections,
        vec![
            "<!here> error rate &lt;high&gt; &amp; rising\nwhere: service=payments\nripcord: rolling back"
        ]
    );
    let actions = blocks.iter().find(|b| b["type"] == "actions").unwrap();
    let buttons = actions["elements"].as_array().unwrap();
    assert_eq!(buttons.len(), 2);
    assert_eq!(buttons[0]["text"]["text"], "Approve rollback");
    // URLs are JSON, not mrkdwn: sent as they are.
    assert_eq!(
        buttons[0]["url"],
        "https://ripcord.example/approve/abc?x=1&y=2"
    );
    assert_eq!(buttons[0]["style"], "primary");
    assert_eq!(buttons[1]["style"], "danger");
    let context = blocks.iter().find(|b| b["type"] == "context").unwrap();
    assert!(
        context["elements"][0]["text"]
            .as_str()
            .unwrap()
            .contains("inc-slack-1")
    );
}

#[tokio::test]
async fn no_mention_unless_the_message_asks() {
    let (slack, yaml) = stand_in("mention: \"<@U0123ABCD>\"\n").await;
    let out = send_once(&yaml, &message("quiet", "body")).await;
    assert!(matches!(out, SendOutcome::Sent(_)), "{out:?}");
    assert!(!slack.seen()[0].payload.to_string().contains("U0123ABCD"));
}

#[tokio::test]
async fn answers_map_to_outcomes() {
    let (slack, yaml) = stand_in("").await;
    let msg = message("t", "b");

    slack.answer(429, Some("7"), "rate_limited");
    let out = send_once(&yaml, &msg).await;
    match out {
        SendOutcome::Retry { after, .. } => assert_eq!(after, Some(Duration::from_secs(7))),
        other => panic!("429: {other:?}"),
    }

    slack.answer(500, None, "rollup_error");
    let out = send_once(&yaml, &msg).await;
    assert!(
        matches!(&out, SendOutcome::Retry { after: None, reason } if reason.contains("rollup_error")),
        "500: {out:?}"
    );
    slack.answer(503, None, "");
    assert!(matches!(
        send_once(&yaml, &msg).await,
        SendOutcome::Retry { .. }
    ));

    for (status, error) in [
        (400, "invalid_blocks"),
        (400, "invalid_payload"),
        (403, "action_prohibited"),
        (404, "channel_not_found"),
        (404, "no_service"),
        (410, "channel_is_archived"),
    ] {
        slack.answer(status, None, error);
        let out = send_once(&yaml, &msg).await;
        match &out {
            SendOutcome::Reject(r) => {
                assert!(r.contains(error) && r.contains(&status.to_string()), "{r}")
            }
            other => panic!("{status} {error}: {other:?}"),
        }
    }
    // A proxy or Slack itself echoing the hook's path: the token (the
    // hook's credential) is taken out (send_once fails on a leak).
    slack.answer(404, None, "no_service: /services/T000/B000/SeCrEtToKeN");
    assert!(matches!(
        send_once(&yaml, &msg).await,
        SendOutcome::Reject(_)
    ));
    slack.answer(200, None, "ok /services/T000/B000/SeCrEtToKeN");
    assert!(matches!(send_once(&yaml, &msg).await, SendOutcome::Sent(_)));
    assert!(slack.seen().iter().all(|s| s.problems.is_empty()));
}

#[tokio::test]
async fn nothing_listening_is_a_retry_without_the_url() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = format!("type: slack\nwebhook: http://127.0.0.1:{port}/services/{TOKEN}\n");
    let out = send_once(&yaml, &message("t", "b")).await;
    assert!(matches!(out, SendOutcome::Retry { .. }), "{out:?}");
}

#[tokio::test]
async fn a_huge_multibyte_message_stays_within_the_limits() {
    let (slack, yaml) = stand_in("mention: \"<!channel>\"\n").await;
    // ~100 KB of text mixing CJK, emoji (outside the BMP), escapes and
    // lines of every length, one very long line among them.
    let mut body = String::new();
    let mut i = 0;
    while body.len() < 100_000 {
        body.push_str(&format!(
            "第{i}行 回滚 <instance> & 🚀 {}\n",
            "ä".repeat(i % 97)
        ));
        if i == 50 {
            body.push_str(&"长".repeat(5000));
            body.push('\n');
        }
        i += 1;
    }
    let mut msg = message(&"标题🚀&<>".repeat(100), &body);
    msg.mention = true;
    msg.links = (0..40)
        .map(|i| Link {
            label: format!("查看 {i} {}", "链接".repeat(50)),
            url: format!("https://ripcord.example/i/{i}?q={}", "x".repeat(i * 10)),
        })
        .collect();
    msg.links.push(Link {
        label: "too long".into(),
        url: format!("https://ripcord.example/{}", "y".repeat(4000)),
    });
    let out = send_once(&yaml, &msg).await;
    let seen = slack.seen();
    assert!(seen[0].problems.is_empty(), "{:?}", seen[0].problems);
    assert!(matches!(out, SendOutcome::Sent(_)), "{out:?}");
    let p = &seen[0].payload;
    let blocks = p["blocks"].as_array().unwrap();
    // The body is there from its start, split over several sections.
    let sections: Vec<&str> = blocks
        .iter()
        .filter(|b| b["type"] == "section")
        .map(|b| b["text"]["text"].as_str().unwrap())
        .collect();
    assert!(sections.len() > 1);
    assert!(sections[0].starts_with("<!channel> 第0行 回滚 &lt;instance&gt; &amp; 🚀"));
    // What did not fit is said, not silently dropped.
    assert!(blocks.iter().any(|b| {
        b["type"] == "context"
            && b["elements"][0]["text"]
                .as_str()
                .unwrap()
                .contains("more characters")
    }),);
    // Buttons for the first links, the others as text or counted.
    let actions = blocks.iter().find(|b| b["type"] == "actions").unwrap();
    let buttons = actions["elements"].as_array().unwrap();
    assert!(!buttons.is_empty() && buttons.len() <= 25);
    assert_eq!(buttons[0]["url"], "https://ripcord.example/i/0?q=");
    assert!(p.to_string().contains("more links"));
}

#[test]
fn config_errors_are_reported() {
    let err = |yaml: &str| {
        channel_from_yaml("s", yaml)
            .map(|_| ())
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let e = err("type: slack\n");
    assert!(e.contains("webhook") && e.contains("required"), "{e}");
    let e = err("type: slack\nwebhook: http://hooks.slack.com/services/T/B/SeCrEtToKeN\n");
    assert!(e.contains("https") && !e.contains("SeCrEtToKeN"), "{e}");
    let e =
        err("type: slack\nwebhook: https://hooks.slack.com/services/T/B/X\nmention: \"@here\"\n");
    assert!(e.contains("mention") && e.contains("<!here>"), "{e}");
    let e = err("type: slack\nwebhook: https://hooks.slack.com/services/T/B/X\nchanel: x\n");
    assert!(e.contains("unknown key `chanel`"), "{e}");
    let spec = channel_from_yaml(
        "s",
        "type: slack\nwebhook: https://hooks.slack.com/services/T/B/X\n",
    )
    .unwrap();
    assert_eq!(spec.rate, (1, Duration::from_secs(1)));
}

/// A journal in a temporary directory, as the delivery worker wants it.
fn journal(dir: &tempfile::TempDir) -> SharedJournal {
    let j = SqliteJournal::open(&dir.path().join("journal.db"), false).unwrap();
    Arc::new(Mutex::new(Box::new(j) as Box<dyn Journal>))
}

fn start(
    yaml: &str,
    journal: SharedJournal,
) -> (
    Deliverer,
    tokio::sync::watch::Sender<bool>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let spec = channel_from_yaml("ops-slack", yaml).expect("config");
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let (d, handles) = Deliverer::start(
        vec![spec],
        reqwest::Client::new(),
        Arc::new(SystemClock),
        (&journal).into(),
        Arc::new(Metrics::new()),
        shutdown,
    );
    (d, stop, handles)
}

#[tokio::test(start_paused = true)]
async fn the_worker_keeps_slack_at_one_message_per_second() {
    let (slack, yaml) = stand_in("rate: 1/s\ntimeout: 10m\n").await;
    let dir = tempfile::tempdir().unwrap();
    let (deliverer, stop, handles) = start(&yaml, journal(&dir));

    let mut waits = Vec::new();
    let mut titles = Vec::new();
    let mut queue = |deliverer: Deliverer, i: usize| {
        let title = format!("svc-{i:02} breached its error budget");
        titles.push(title.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        waits.push(rx);
        async move {
            deliverer
                .send(
                    "ops-slack",
                    Delivery::new(message(&title, "details"), None, Some(tx)),
                )
                .await
                .unwrap();
        }
    };
    // Ten at once, then ten more trickling in every 150 ms.
    for i in 0..10 {
        queue(deliverer.clone(), i).await;
    }
    for i in 10..20 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        queue(deliverer.clone(), i).await;
    }
    for rx in waits {
        let done = rx.await.expect("an outcome");
        assert!(done.sent(), "{done:?}");
    }

    let seen = slack.seen();
    assert!(seen.iter().all(|s| s.problems.is_empty()));
    assert!(
        seen.len() < 20,
        "messages held back by the rate limit are merged into digests"
    );
    for pair in seen.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_secs(1),
            "two requests {gap:?} apart: {:?}",
            seen.iter().map(|s| s.at).collect::<Vec<_>>()
        );
    }
    let all: String = seen.iter().map(|s| s.payload.to_string()).collect();
    for t in &titles {
        assert!(all.contains(t), "{t} never reached Slack");
    }
    let _ = stop.send(true);
    for h in handles {
        h.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn the_worker_honours_retry_after() {
    let (slack, yaml) = stand_in("timeout: 10m\n").await;
    slack.answer(429, Some("30"), "rate_limited");
    let dir = tempfile::tempdir().unwrap();
    let journal = journal(&dir);
    let (deliverer, stop, handles) = start(&yaml, journal.clone());

    let started = tokio::time::Instant::now();
    let (tx, rx) = tokio::sync::oneshot::channel();
    deliverer
        .send(
            "ops-slack",
            Delivery::new(message("retry me", "body"), None, Some(tx)),
        )
        .await
        .unwrap();
    let done = rx.await.unwrap();
    assert!(done.sent(), "{done:?}");

    let seen = slack.seen();
    assert_eq!(seen.len(), 2);
    let waited = seen[1].at - seen[0].at;
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "retried after {waited:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(30));

    let timeline = journal.lock().unwrap().timeline("inc-slack-1").unwrap();
    let text: Vec<&str> = timeline.iter().map(|e| e.message.as_str()).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("retry 1 in 30s") && t.contains("HTTP 429")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|t| t.starts_with("sent via ops-slack")),
        "{text:?}"
    );
    assert!(!text.concat().contains("SeCrEtToKeN"));
    let _ = stop.send(true);
    for h in handles {
        h.await.unwrap();
    }
}
