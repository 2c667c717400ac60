//! The DingTalk and WeCom robot channels against local stand-ins for the
//! providers' webhooks: real HTTP over TCP on 127.0.0.1.
//!
//! The stand-ins check what the documented APIs require and answer like
//! the providers do. The DingTalk one verifies 加签 exactly as DingTalk
//! does (HMAC-SHA256 recomputed from the `timestamp` parameter and the
//! shared secret; `sign` must URL-decode once to the base64), the message
//! shape per `msgtype`, the 20,000-byte body limit and @mentions. The WeCom
//! one checks the shape per `msgtype` and the content limits (4,096 bytes
//! of markdown, 2,048 of text). Both play back provider errors on demand,
//! with error texts that echo the request URL, so a token that leaks into
//! an outcome is caught.
//!
//! Through the delivery worker: a hung robot does not delay another, and
//! (with tokio's paused clock, see `rate_limit`) fifty messages in a burst
//! stay within DingTalk's 20 a minute, merged into digests, none lost.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use ripcord::action::channel::ChannelSpec;
use ripcord::action::channel::{SendContext, SendOutcome, channel_from_yaml};
use ripcord::action::message::{Kind, Link, Message};
use ripcord::decision::{Severity, Tier};
use ripcord::time::Ts;
use serde_json::{Value, json};
use sha2::Sha256;

const TOKEN: &str = "dt-access-token-5f3c9a1e";
const SECRET: &str = "SECstand-in-signing-secret-0123456789";
const KEY: &str = "wc-key-693a91f6-7a0c-4bc4";
const NOW: Ts = Ts(1_795_255_200_000);
const MOBILE: &str = "13800000000";

// ---------------------------------------------------------------------------
// The stand-in webhook.

/// Which provider the stand-in plays, and what it expects.
#[derive(Clone)]
enum Provider {
    DingTalk {
        secret: Option<&'static str>,
        /// The `timestamp` it must see; None: within an hour of the wall
        /// clock, as DingTalk demands.
        now: Option<Ts>,
    },
    WeCom,
}

/// What the stand-in answers next (then `Ok` once the script runs out).
#[derive(Clone, Debug)]
enum Reply {
    Ok,
    /// HTTP 200 with this errcode; the errmsg echoes the request URL.
    Errcode(i64),
    /// This HTTP status; the body echoes the request URL.
    Status(u16),
    /// Answers `Ok` only after this long.
    Hang(Duration),
}

/// One request as the stand-in saw it.
#[derive(Clone, Debug)]
struct Seen {
    query: String,
    body: Vec<u8>,
    json: Value,
    problems: Vec<String>,
    at: tokio::time::Instant,
}

#[derive(Clone)]
struct Stand {
    provider: Provider,
    script: Arc<Mutex<VecDeque<Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    url: String,
}

impl Stand {
    async fn start(provider: Provider) -> Stand {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let url = match provider {
            Provider::DingTalk { .. } => {
                format!("http://{addr}/robot/send?access_token={TOKEN}")
            }
            Provider::WeCom => format!("http://{addr}/cgi-bin/webhook/send?key={KEY}"),
        };
        let stand = Stand {
            provider,
            script: Arc::default(),
            seen: Arc::default(),
            url,
        };
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(stand.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        stand
    }

    fn play(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().unwrap().extend(replies);
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

async fn handle(State(s): State<Stand>, uri: Uri, body: Bytes) -> (StatusCode, String) {
    let at = tokio::time::Instant::now();
    let query = uri.query().unwrap_or("").to_owned();
    let (json, problems) = match &s.provider {
        Provider::DingTalk { secret, now } => {
            check_dingtalk(uri.path(), &query, &body, *secret, *now)
        }
        Provider::WeCom => check_wecom(uri.path(), &query, &body),
    };
    let reply = s.script.lock().unwrap().pop_front().unwrap_or(Reply::Ok);
    s.seen.lock().unwrap().push(Seen {
        query,
        body: body.to_vec(),
        json,
        problems: problems.clone(),
        at,
    });
    let ok = || {
        (
            StatusCode::OK,
            json!({"errcode": 0, "errmsg": "ok"}).to_string(),
        )
    };
    // Error texts echo what the provider knows: the URL and its secrets.
    let echo = match s.provider {
        Provider::DingTalk { .. } => format!("{uri} (token {TOKEN}, secret {SECRET})"),
        Provider::WeCom => format!("{uri} (key {KEY})"),
    };
    if !problems.is_empty() {
        // DingTalk answers a bad signature with 310000; anything else the
        // stand-in objects to gets a code no channel knows.
        let code = if problems.iter().any(|p| p.starts_with("sign")) {
            310000
        } else {
            99999
        };
        let msg = format!("stand-in: {}", problems.join("; "));
        return (
            StatusCode::OK,
            json!({"errcode": code, "errmsg": msg}).to_string(),
        );
    }
    match reply {
        Reply::Ok => ok(),
        Reply::Errcode(code) => (
            StatusCode::OK,
            json!({"errcode": code, "errmsg": format!("refused {echo}")}).to_string(),
        ),
        Reply::Status(code) => (
            StatusCode::from_u16(code).unwrap(),
            format!("error for {echo}"),
        ),
        Reply::Hang(d) => {
            tokio::time::sleep(d).await;
            ok()
        }
    }
}

/// The raw (still URL-encoded) value of a query parameter.
fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The signature DingTalk expects, computed here independently of the
/// channel: base64(HMAC-SHA256(secret, "{timestamp}\n{secret}")).
fn expected_sign_base64(timestamp: &str, secret: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}\n{secret}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn wall_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// What DingTalk's robot API requires of a request.
fn check_dingtalk(
    path: &str,
    query: &str,
    body: &[u8],
    secret: Option<&str>,
    now: Option<Ts>,
) -> (Value, Vec<String>) {
    let mut p = Vec::new();
    if path != "/robot/send" {
        p.push(format!("path {path}"));
    }
    if param(query, "access_token") != Some(TOKEN) {
        p.push("access_token missing or wrong".into());
    }
    match secret {
        Some(secret) => match (param(query, "timestamp"), param(query, "sign")) {
            (Some(ts), Some(sign)) => {
                match ts.parse::<i64>() {
                    Ok(t) => match now {
                        Some(now) if t != now.millis() => p.push(format!(
                            "sign: timestamp {t} is not ctx.now {}",
                            now.millis()
                        )),
                        None if (t - wall_millis()).abs() > 3_600_000 => {
                            p.push(format!("sign: timestamp {t} more than an hour off"))
                        }
                        _ => {}
                    },
                    Err(_) => p.push(format!("sign: timestamp `{ts}` is not milliseconds")),
                }
                // Encoded exactly once: no raw base64 specials, no `%25`.
                if sign.contains(['+', '/', '=']) || sign.contains("%25") {
                    p.push(format!("sign: `{sign}` is not URL-encoded exactly once"));
                }
                let decoded = percent_encoding::percent_decode_str(sign)
                    .decode_utf8()
                    .map(|s| s.into_owned())
                    .unwrap_or_default();
                if decoded != expected_sign_base64(ts, secret) {
                    p.push("sign: does not match HMAC-SHA256 of timestamp and secret".into());
                }
            }
            _ => p.push("sign: timestamp or sign missing".into()),
        },
        None => {
            if param(query, "sign").is_some() {
                p.push("sign: sent without a secret".into());
            }
        }
    }
    if body.len() > 20_000 {
        p.push(format!("body of {} bytes exceeds 20000", body.len()));
    }
    let Some(v) = parse_json(body, &mut p) else {
        return (Value::Null, p);
    };
    let s = |v: &Value| v.as_str().map(str::to_owned);
    let mut text = String::new();
    match v["msgtype"].as_str() {
        Some("text") => match s(&v["text"]["content"]) {
            Some(c) => text = c,
            None => p.push("text.content missing".into()),
        },
        Some("markdown") => {
            if s(&v["markdown"]["title"]).is_none_or(|t| t.is_empty()) {
                p.push("markdown.title missing".into());
            }
            match s(&v["markdown"]["text"]) {
                Some(t) => text = t,
                None => p.push("markdown.text missing".into()),
            }
        }
        Some("actionCard") => {
            let card = &v["actionCard"];
            if s(&card["title"]).is_none_or(|t| t.is_empty()) {
                p.push("actionCard.title missing".into());
            }
            match s(&card["text"]) {
                Some(t) => text = t,
                None => p.push("actionCard.text missing".into()),
            }
            match card["btns"].as_array() {
                Some(b) if !b.is_empty() => {
                    for btn in b {
                        if s(&btn["title"]).is_none()
                            || !s(&btn["actionURL"]).is_some_and(|u| u.starts_with("http"))
                        {
                            p.push(format!("actionCard button {btn} lacks title or actionURL"));
                        }
                    }
                }
                _ => p.push("actionCard.btns missing (independent buttons)".into()),
            }
        }
        other => p.push(format!("msgtype {other:?}")),
    }
    if let Some(at) = v.get("at") {
        let mobiles = at["atMobiles"].as_array().cloned().unwrap_or_default();
        if !mobiles.iter().all(Value::is_string) || !at["isAtAll"].is_boolean() {
            p.push(format!("at {at} malformed"));
        }
        // DingTalk only highlights @mobile in markdown when the text has it.
        for m in mobiles.iter().filter_map(Value::as_str) {
            if !text.contains(&format!("@{m}")) {
                p.push(format!("@{m} mentioned but not in the text"));
            }
        }
    }
    (v, p)
}

/// What WeCom's group robot API requires of a request.
fn check_wecom(path: &str, query: &str, body: &[u8]) -> (Value, Vec<String>) {
    let mut p = Vec::new();
    if path != "/cgi-bin/webhook/send" {
        p.push(format!("path {path}"));
    }
    if param(query, "key") != Some(KEY) {
        p.push("key missing or wrong".into());
    }
    let Some(v) = parse_json(body, &mut p) else {
        return (Value::Null, p);
    };
    match v["msgtype"].as_str() {
        Some("text") => match v["text"]["content"].as_str() {
            Some(c) if c.len() <= 2048 => {}
            Some(c) => p.push(format!("text.content of {} bytes exceeds 2048", c.len())),
            None => p.push("text.content missing".into()),
        },
        Some("markdown") => {
            match v["markdown"]["content"].as_str() {
                Some(c) if c.len() <= 4096 => {}
                Some(c) => p.push(format!(
                    "markdown.content of {} bytes exceeds 4096",
                    c.len()
                )),
                None => p.push("markdown.content missing".into()),
            }
            if v["markdown"].get("mentioned_mobile_list").is_some() {
                p.push("markdown has no mentioned_mobile_list".into());
            }
        }
        other => p.push(format!("msgtype {other:?}")),
    }
    (v, p)
}

fn parse_json(body: &[u8], p: &mut Vec<String>) -> Option<Value> {
    let Ok(text) = std::str::from_utf8(body) else {
        p.push("body is not UTF-8".into());
        return None;
    };
    match serde_json::from_str(text) {
        Ok(v) => Some(v),
        Err(e) => {
            p.push(format!("body is not JSON: {e}"));
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers.

fn spec(name: &str, yaml: &str) -> ChannelSpec {
    match channel_from_yaml(name, yaml) {
        Ok(s) => s,
        Err(e) => panic!("channel {name}: {e:?}"),
    }
}

fn dingtalk(stand: &Stand, extra: &str) -> ChannelSpec {
    spec(
        "ding",
        &format!(
            "type: dingtalk\nwebhook: \"{}\"\nsecret: \"{SECRET}\"\nat_mobiles: [\"{MOBILE}\"]\n{extra}",
            stand.url
        ),
    )
}

fn message(title: &str, body: &str) -> Message {
    Message::note(
        Kind::Incident,
        Tier::High,
        Severity::Severe,
        Some("inc-0001"),
        title.to_owned(),
        body.to_owned(),
    )
}

fn approval() -> Message {
    let mut m = message(
        "[HIGH/severe] payments/i-pay-2: http_5xx_ratio 0.12 vs 0.05",
        "rollback prepared; waiting for a human to approve it\nwhere: service=payments",
    );
    m.kind = Kind::ApprovalRequest;
    m.mention = true;
    m.links = ["Approve", "Reject", "Acknowledge"]
        .iter()
        .map(|l| Link {
            label: (*l).to_owned(),
            url: format!(
                "https://ripcord.example/a/inc-0001/{}?t=abc",
                l.to_lowercase()
            ),
        })
        .collect();
    m
}

async fn send(spec: &ChannelSpec, msg: &Message) -> SendOutcome {
    let http = reqwest::Client::new();
    let ctx = SendContext {
        http: &http,
        now: NOW,
    };
    spec.channel.send(&ctx, msg).await
}

/// Neither the access token, the webhook key nor the signing secret may
/// appear in what an outcome says.
fn assert_no_leak(o: &SendOutcome) {
    let s = format!("{o:?}");
    for needle in [TOKEN, SECRET, KEY] {
        assert!(!s.contains(needle), "outcome leaks a secret: {s}");
    }
}

fn assert_clean(seen: &[Seen]) {
    for s in seen {
        assert!(s.problems.is_empty(), "stand-in objected: {:?}", s.problems);
    }
}

/// What an outcome must look like.
type Expect = fn(&SendOutcome) -> bool;

fn is_retry_after(o: &SendOutcome, secs: u64) -> bool {
    matches!(o, SendOutcome::Retry { after: Some(d), .. } if *d == Duration::from_secs(secs))
}

// ---------------------------------------------------------------------------
// DingTalk.

#[tokio::test]
async fn dingtalk_markdown_is_signed_with_ctx_now_and_mentions_on_call() {
    let stand = Stand::start(Provider::DingTalk {
        secret: Some(SECRET),
        now: Some(NOW),
    })
    .await;
    let ding = dingtalk(&stand, "");
    let mut m = message(
        "[HIGH/severe] payments/i-pay-2: http_5xx_ratio 0.12 vs 0.05",
        "rolling the instance back\nwhere: service=payments, instance=i-pay-2",
    );
    m.mention = true;
    let o = send(&ding, &m).await;
    assert!(
        matches!(&o, SendOutcome::Sent(d) if d.contains("errcode 0")),
        "{o:?}"
    );
    assert_no_leak(&o);

    let seen = stand.take();
    assert_eq!(seen.len(), 1);
    assert_clean(&seen);
    let v = &seen[0].json;
    assert_eq!(v["msgtype"], "markdown");
    assert_eq!(v["markdown"]["title"], m.title.as_str());
    let text = v["markdown"]["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!("### {}", ripcord::text::markdown(&m.title))),
        "{text}"
    );
    assert!(text.contains("where: service=payments, instance=i-pay-2"));
    assert!(text.contains(&format!("@{MOBILE}")));
    assert_eq!(v["at"]["atMobiles"], json!([MOBILE]));
    assert_eq!(v["at"]["isAtAll"], false);
    assert_eq!(param(&seen[0].query, "timestamp"), Some("1795255200000"));

    // Without `mention`, nobody is called out.
    m.mention = false;
    assert!(matches!(send(&ding, &m).await, SendOutcome::Sent(_)));
    let seen = stand.take();
    assert_clean(&seen);
    assert_eq!(seen[0].json["at"]["atMobiles"], json!([]));
    assert!(
        !seen[0].json["markdown"]["text"]
            .as_str()
            .unwrap()
            .contains('@')
    );
}

#[tokio::test]
async fn dingtalk_signature_follows_the_injected_clock() {
    // Another instant, another signature: the stand-in insists on it.
    let later = Ts(NOW.millis() + 61_234);
    let stand = Stand::start(Provider::DingTalk {
        secret: Some(SECRET),
        now: Some(later),
    })
    .await;
    let ding = dingtalk(&stand, "");
    let http = reqwest::Client::new();
    let m = message("t", "b");
    let ctx = SendContext {
        http: &http,
        now: later,
    };
    assert!(matches!(
        ding.channel.send(&ctx, &m).await,
        SendOutcome::Sent(_)
    ));
    // Signed for NOW instead: DingTalk's answer is 310000, a refusal that
    // points at the robot's security settings.
    let o = send(&ding, &m).await;
    assert!(
        matches!(&o, SendOutcome::Reject(r) if r.contains("310000") && r.contains("security settings")),
        "{o:?}"
    );
    assert_no_leak(&o);

    // A robot configured without the secret sends no signature at all.
    let stand = Stand::start(Provider::DingTalk {
        secret: None,
        now: None,
    })
    .await;
    let plain = spec(
        "plain",
        &format!("type: dingtalk\nwebhook: \"{}\"", stand.url),
    );
    assert!(matches!(send(&plain, &m).await, SendOutcome::Sent(_)));
    assert_clean(&stand.seen());
}

#[tokio::test]
async fn dingtalk_approval_request_is_an_action_card_with_buttons() {
    let stand = Stand::start(Provider::DingTalk {
        secret: Some(SECRET),
        now: Some(NOW),
    })
    .await;
    let ding = dingtalk(&stand, "");
    let m = approval();
    assert!(matches!(send(&ding, &m).await, SendOutcome::Sent(_)));
    let seen = stand.take();
    assert_clean(&seen);
    let v = &seen[0].json;
    assert_eq!(v["msgtype"], "actionCard");
    let card = &v["actionCard"];
    assert_eq!(card["title"], m.title.as_str());
    assert!(
        card["text"]
            .as_str()
            .unwrap()
            .contains("waiting for a human")
    );
    let btns = card["btns"].as_array().unwrap();
    let titles: Vec<&str> = btns.iter().map(|b| b["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["Approve", "Reject", "Acknowledge"]);
    assert_eq!(
        btns[0]["actionURL"],
        "https://ripcord.example/a/inc-0001/approve?t=abc"
    );
    assert!(card.get("singleURL").is_none());
    assert_eq!(v["at"]["atMobiles"], json!([MOBILE]));

    // `format: text`: the same links as plain URLs, @all when asked.
    let text = dingtalk(&stand, "format: text\nat_all: true");
    assert!(matches!(send(&text, &m).await, SendOutcome::Sent(_)));
    let seen = stand.take();
    assert_clean(&seen);
    let v = &seen[0].json;
    assert_eq!(v["msgtype"], "text");
    let content = v["text"]["content"].as_str().unwrap();
    assert!(content.starts_with(&m.title));
    assert!(content.contains("Approve: https://ripcord.example/a/inc-0001/approve?t=abc"));
    assert!(content.contains("Acknowledge: https://"));
    assert_eq!(v["at"]["atMobiles"], json!([MOBILE]));
    assert_eq!(v["at"]["isAtAll"], true);
}

#[tokio::test]
async fn dingtalk_huge_messages_are_cut_to_20000_bytes_of_valid_json() {
    let stand = Stand::start(Provider::DingTalk {
        secret: Some(SECRET),
        now: Some(NOW),
    })
    .await;
    let cases = [
        ("ascii", "x".repeat(60_000)),
        // Three bytes a character, cut somewhere near the limit.
        ("chinese", "回滚实例".repeat(3_000)),
        // Escapes (quotes, backslashes, newlines, control characters)
        // make the JSON larger than the text.
        ("escapes", "\"\\\u{1}\n".repeat(8_000)),
        ("mixed", "告警 \"quoted\" ✓\n".repeat(2_000)),
    ];
    for format in ["markdown", "text"] {
        let ding = dingtalk(&stand, &format!("format: {format}"));
        for (name, body) in &cases {
            for links in [false, true] {
                let mut m = message("[HIGH/severe] a huge message", body);
                m.mention = true;
                if links {
                    m.links = approval().links;
                }
                let o = send(&ding, &m).await;
                assert!(matches!(o, SendOutcome::Sent(_)), "{format}/{name}: {o:?}");
                let seen = stand.take();
                assert_clean(&seen);
                let s = &seen[0];
                assert!(s.body.len() <= 20_000, "{format}/{name}: {}", s.body.len());
                assert!(
                    s.body.len() > 19_000,
                    "{format}/{name}: cut too much: {}",
                    s.body.len()
                );
                let v = &s.json;
                let text = v["markdown"]["text"]
                    .as_str()
                    .or(v["actionCard"]["text"].as_str())
                    .or(v["text"]["content"].as_str())
                    .unwrap();
                assert!(text.contains('…'), "{format}/{name}: no ellipsis");
                // The mention and the links survive the cut.
                assert!(text.ends_with(&format!("@{MOBILE}")), "{format}/{name}");
                if links && format == "text" {
                    assert!(text.contains("Acknowledge: https://"));
                }
                if links && format == "markdown" {
                    assert_eq!(v["actionCard"]["btns"].as_array().unwrap().len(), 3);
                }
            }
        }
    }
}

#[tokio::test]
async fn dingtalk_errors_map_to_outcomes_without_leaking_secrets() {
    let stand = Stand::start(Provider::DingTalk {
        secret: Some(SECRET),
        now: Some(NOW),
    })
    .await;
    let ding = dingtalk(&stand, "");
    let m = message("t", "b");
    let expect: Vec<(Reply, Expect)> = vec![
        (Reply::Errcode(130101), |o| is_retry_after(o, 60)),
        (
            Reply::Errcode(310000),
            |o| matches!(o, SendOutcome::Reject(r) if r.contains("security settings")),
        ),
        (Reply::Errcode(460101), |o| {
            matches!(o, SendOutcome::Reject(_))
        }),
        (
            Reply::Errcode(400102),
            |o| matches!(o, SendOutcome::Reject(r) if r.contains("400102")),
        ),
        (Reply::Status(500), |o| {
            matches!(o, SendOutcome::Retry { .. })
        }),
        (Reply::Status(503), |o| {
            matches!(o, SendOutcome::Retry { .. })
        }),
        (Reply::Status(400), |o| matches!(o, SendOutcome::Reject(_))),
        (Reply::Status(404), |o| matches!(o, SendOutcome::Reject(_))),
        (
            Reply::Ok,
            |o| matches!(o, SendOutcome::Sent(d) if d.contains("errcode 0")),
        ),
    ];
    for (reply, ok) in expect {
        stand.play([reply.clone()]);
        let o = send(&ding, &m).await;
        assert!(ok(&o), "{reply:?} gave {o:?}");
        assert_no_leak(&o);
    }
    assert_clean(&stand.seen());

    // Nobody listening: a transport error, worth retrying; reqwest's
    // message names the URL, which must not survive.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = spec(
        "dead",
        &format!(
            "type: dingtalk\nwebhook: \"http://127.0.0.1:{port}/robot/send?access_token={TOKEN}\"\nsecret: \"{SECRET}\""
        ),
    );
    let o = send(&dead, &m).await;
    assert!(matches!(o, SendOutcome::Retry { .. }), "{o:?}");
    assert_no_leak(&o);
}

#[tokio::test]
async fn dingtalk_config_errors_are_all_reported_without_the_secret() {
    let err = |yaml: &str| -> String {
        match channel_from_yaml("ding", yaml) {
            Ok(_) => panic!("accepted: {yaml}"),
            Err(e) => format!("{e:?}"),
        }
    };
    let e = err("type: dingtalk\nformat: html\nat_all: maybe\nat_mobiles: [13800000000]");
    assert!(e.contains("webhook") && e.contains("required"), "{e}");
    assert!(e.contains("html"), "{e}");
    assert!(e.contains("at_all"), "{e}");
    assert!(e.contains("at_mobiles"), "{e}");
    let e = err(&format!("type: dingtalk\nwebhook: \"not a url {TOKEN}\""));
    assert!(e.contains("URL") && !e.contains(TOKEN), "{e}");
    let e = err("type: dingtalk\nwebhook: \"https://oapi.dingtalk.com/robot/send\"\nsecrets: x");
    assert!(e.contains("secrets"), "{e}");
    let e = err("type: dingtalk\nwebhook: {env: RIPCORD_TEST_SURELY_UNSET_VARIABLE}");
    assert!(e.contains("RIPCORD_TEST_SURELY_UNSET_VARIABLE"), "{e}");

    let ok = channel_from_yaml(
        "ding",
        "type: dingtalk\nwebhook: \"https://oapi.dingtalk.com/robot/send?access_token=abc\"\nformat: text",
    )
    .unwrap();
    assert_eq!(ok.rate, (20, Duration::from_secs(60)));
    assert!(!format!("{ok:?}").contains("access_token=abc"));
}

// ---------------------------------------------------------------------------
// WeCom.

fn wecom(stand: &Stand, extra: &str) -> ChannelSpec {
    spec(
        "wecom",
        &format!(
            "type: wecom\nwebhook: \"{}\"\nmentioned_mobiles: [\"{MOBILE}\"]\n{extra}",
            stand.url
        ),
    )
}

fn contents(seen: &[Seen], msgtype: &str) -> Vec<String> {
    seen.iter()
        .map(|s| {
            assert_eq!(s.json["msgtype"], msgtype);
            s.json[msgtype]["content"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn wecom_markdown_and_text_shapes() {
    let stand = Stand::start(Provider::WeCom).await;
    // The webhook from a secret file, as deployments do.
    let dir = tempfile::tempdir().unwrap();
    let hook = dir.path().join("wecom-webhook");
    std::fs::write(&hook, format!("{}\n", stand.url)).unwrap();
    let md = spec(
        "wecom",
        &format!(
            "type: wecom\nwebhook: {{file: {}}}\nmentioned_mobiles: [\"{MOBILE}\"]\nmentioned_users: [zhangsan]",
            hook.display()
        ),
    );
    let m = approval();
    let o = send(&md, &m).await;
    assert!(
        matches!(&o, SendOutcome::Sent(d) if d.contains("errcode 0")),
        "{o:?}"
    );
    let seen = stand.take();
    assert_clean(&seen);
    let c = &contents(&seen, "markdown")[0];
    assert!(
        c.starts_with(&format!("### {}", ripcord::text::markdown(&m.title))),
        "{c}"
    );
    assert!(c.contains("waiting for a human"));
    assert!(c.contains("[Approve](https://ripcord.example/a/inc-0001/approve?t=abc)"));
    assert!(c.contains("[Acknowledge](https://"));
    // Markdown mentions user ids only; mobiles need the text format.
    assert!(c.contains("<@zhangsan>"));
    assert!(
        !seen[0]
            .body
            .windows(MOBILE.len())
            .any(|w| w == MOBILE.as_bytes())
    );

    let text = wecom(&stand, "format: text");
    assert!(matches!(send(&text, &m).await, SendOutcome::Sent(_)));
    let seen = stand.take();
    assert_clean(&seen);
    let t = &seen[0].json["text"];
    assert!(t["content"].as_str().unwrap().starts_with(&m.title));
    assert!(
        t["content"]
            .as_str()
            .unwrap()
            .contains("Approve: https://ripcord.example/a/inc-0001/approve?t=abc")
    );
    assert_eq!(t["mentioned_mobile_list"], json!([MOBILE]));

    // No mention asked: nobody is called out.
    let quiet = message("t", "b");
    assert!(matches!(send(&text, &quiet).await, SendOutcome::Sent(_)));
    assert!(
        stand.take()[0].json["text"]
            .get("mentioned_mobile_list")
            .is_none()
    );
}

#[tokio::test]
async fn wecom_long_chinese_message_is_split_on_character_boundaries() {
    let stand = Stand::start(Provider::WeCom).await;
    // About 10 KB: short lines, and one long line with no break to prefer.
    let mut body = String::new();
    for i in 0..150 {
        body.push_str(&format!("第{i}批实例回滚完成，验证通过。\n"));
    }
    body.push_str(&"不可分割的长行".repeat(250));
    assert!(body.len() > 10_000);
    let m = message("[HIGH/severe] 支付服务回滚", &body);

    for (format, msgtype, max) in [("markdown", "markdown", 4096), ("text", "text", 2048)] {
        let ch = wecom(&stand, &format!("format: {format}"));
        let o = send(&ch, &m).await;
        let seen = stand.take();
        assert_clean(&seen);
        let parts = contents(&seen, msgtype);
        assert!(parts.len() >= 3, "{format}: {} parts", parts.len());
        assert_eq!(
            o,
            SendOutcome::Sent(format!("sent in {} parts (errcode 0)", parts.len()))
        );
        for p in &parts {
            assert!(p.len() <= max, "{format}: a part of {} bytes", p.len());
            assert!(!p.is_empty());
        }
        let whole = parts.concat();
        assert!(whole.contains(&body), "{format}: parts do not rejoin");
        assert!(whole.starts_with(if format == "markdown" {
            "### \\[HIGH"
        } else {
            "[HIGH"
        }));
        // Preferring line breaks: every part but the last ends a line,
        // except inside the long unbroken line.
        assert!(parts[0].ends_with('\n'), "{format}");
    }
}

#[tokio::test]
async fn wecom_errors_and_a_part_failing_midway() {
    let stand = Stand::start(Provider::WeCom).await;
    let ch = wecom(&stand, "");
    let m = message("t", "b");
    let expect: Vec<(Reply, Expect)> = vec![
        (Reply::Errcode(45009), |o| is_retry_after(o, 60)),
        (
            Reply::Errcode(93000),
            |o| matches!(o, SendOutcome::Reject(r) if r.contains("93000") && r.contains("webhook")),
        ),
        (Reply::Errcode(40058), |o| {
            matches!(o, SendOutcome::Reject(_))
        }),
        (Reply::Errcode(40008), |o| {
            matches!(o, SendOutcome::Reject(_))
        }),
        (Reply::Status(502), |o| {
            matches!(o, SendOutcome::Retry { .. })
        }),
        (Reply::Status(403), |o| matches!(o, SendOutcome::Reject(_))),
        (Reply::Ok, |o| matches!(o, SendOutcome::Sent(_))),
    ];
    for (reply, ok) in expect {
        stand.play([reply.clone()]);
        let o = send(&ch, &m).await;
        assert!(ok(&o), "{reply:?} gave {o:?}");
        assert_no_leak(&o);
    }
    stand.take();

    // Three parts; the second hits the frequency limit: not sent, retry
    // in a minute, and the third part is not attempted.
    let big = message("t", &"告警内容\n".repeat(700));
    stand.play([Reply::Ok, Reply::Errcode(45009)]);
    let o = send(&ch, &big).await;
    assert!(is_retry_after(&o, 60), "{o:?}");
    assert!(
        matches!(&o, SendOutcome::Retry { reason, .. } if reason.contains("part 2 of 3 (1 sent before it)")),
        "{o:?}"
    );
    assert_no_leak(&o);
    assert_eq!(stand.take().len(), 2);

    // The second part refused for good: refused.
    stand.play([Reply::Ok, Reply::Errcode(93000)]);
    let o = send(&ch, &big).await;
    assert!(matches!(o, SendOutcome::Reject(_)), "{o:?}");
    assert_no_leak(&o);
    assert_eq!(stand.take().len(), 2);
}

#[tokio::test]
async fn wecom_config_errors() {
    let e = match channel_from_yaml("w", "type: wecom\nformat: rich\nmentioned_mobiles: [\"\"]") {
        Ok(_) => panic!("accepted"),
        Err(e) => format!("{e:?}"),
    };
    assert!(e.contains("webhook") && e.contains("required"), "{e}");
    assert!(e.contains("rich"), "{e}");
    assert!(e.contains("mentioned_mobiles"), "{e}");
}

// ---------------------------------------------------------------------------
// Through the delivery worker.

mod worker {
    use super::*;
    use ripcord::action::deliver::{Delivered, Deliverer, Delivery};
    use ripcord::journal::SharedJournal;
    use ripcord::journal::{Journal, SqliteJournal};
    use ripcord::telemetry::Metrics;
    use ripcord::time::SystemClock;
    use tokio::sync::{oneshot, watch};

    pub(super) struct Running {
        pub deliverer: Deliverer,
        _shutdown: watch::Sender<bool>,
        _dir: tempfile::TempDir,
    }

    pub(super) fn start(specs: Vec<ChannelSpec>) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let journal: Box<dyn Journal> =
            Box::new(SqliteJournal::open(&dir.path().join("journal.db"), false).unwrap());
        let journal: SharedJournal = Arc::new(Mutex::new(journal));
        let (tx, rx) = watch::channel(false);
        let (deliverer, _handles) = Deliverer::start(
            specs,
            reqwest::Client::new(),
            Arc::new(SystemClock),
            (&journal).into(),
            Arc::new(Metrics::new()),
            rx,
        );
        Running {
            deliverer,
            _shutdown: tx,
            _dir: dir,
        }
    }

    pub(super) async fn queue(
        d: &Deliverer,
        channel: &str,
        m: Message,
    ) -> oneshot::Receiver<Delivered> {
        let (tx, rx) = oneshot::channel();
        d.send(channel, Delivery::new(m, None, Some(tx)))
            .await
            .unwrap();
        rx
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_robot_does_not_delay_another() {
    let hung = Stand::start(Provider::DingTalk {
        secret: Some(SECRET),
        now: None,
    })
    .await;
    let healthy = Stand::start(Provider::DingTalk {
        secret: Some(SECRET),
        now: None,
    })
    .await;
    hung.play([Reply::Hang(Duration::from_secs(60))]);
    let specs = vec![
        spec(
            "hung",
            &format!(
                "type: dingtalk\nwebhook: \"{}\"\nsecret: \"{SECRET}\"\ntimeout: 2s\nretries: 0",
                hung.url
            ),
        ),
        dingtalk(&healthy, "timeout: 2s\nretries: 0"),
    ];
    let run = worker::start(specs);
    let started = tokio::time::Instant::now();
    let m = message("[HIGH/severe] payments: both robots", "b");
    let hung_rx = worker::queue(&run.deliverer, "hung", m.clone()).await;
    let healthy_rx = worker::queue(&run.deliverer, "ding", m).await;

    let ok = tokio::time::timeout(Duration::from_secs(10), healthy_rx)
        .await
        .unwrap()
        .unwrap();
    let ok_at = started.elapsed();
    assert!(ok.sent(), "{ok:?}");
    assert!(
        ok_at < Duration::from_millis(1500),
        "healthy robot waited {ok_at:?}"
    );
    let seen = healthy.seen();
    assert_clean(&seen);
    assert!(seen[0].at.duration_since(started) < Duration::from_millis(1500));

    let failed = tokio::time::timeout(Duration::from_secs(10), hung_rx)
        .await
        .unwrap()
        .unwrap();
    let failed_at = started.elapsed();
    assert!(
        matches!(&failed.outcome, SendOutcome::Retry { reason, .. } if reason.contains("no answer within")),
        "{failed:?}"
    );
    assert!(!failed.sent());
    assert!(failed_at >= Duration::from_secs(2), "{failed_at:?}");
    assert_no_leak(&failed.outcome);
    assert_eq!(hung.seen().len(), 1);
}

/// The worker's rate limit on tokio's paused clock (the `test-util`
/// feature), so minutes pass instantly.
mod rate_limit {
    use super::*;

    /// Fifty messages in five seconds to a DingTalk robot at its default
    /// rate (20 a minute): at most 20 requests reach it in the first
    /// minute, the rest arrive merged into digests, nothing is lost and
    /// every sender hears "sent".
    #[tokio::test(start_paused = true)]
    async fn a_burst_stays_within_20_a_minute_as_digests() {
        // With the clock paused, tokio jumps to the next timer whenever the
        // runtime idles, including while a request is on the wire; a 10 ms
        // metronome keeps those jumps small, so a send never appears to
        // time out.
        tokio::spawn(async {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let stand = Stand::start(Provider::DingTalk {
            secret: Some(SECRET),
            now: None,
        })
        .await;
        let ding = dingtalk(&stand, "");
        assert_eq!(ding.rate, (20, Duration::from_secs(60)));
        let run = worker::start(vec![ding]);
        let started = tokio::time::Instant::now();
        let titles: Vec<String> = (0..50)
            .map(|i| format!("[HIGH/severe] payments/i-pay-{i:02}: burst"))
            .collect();
        let mut waits = Vec::new();
        for t in &titles {
            waits.push(worker::queue(&run.deliverer, "ding", message(t, "b")).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for w in waits {
            let d = tokio::time::timeout(Duration::from_secs(600), w)
                .await
                .expect("delivered within ten minutes")
                .unwrap();
            assert!(d.sent(), "{d:?}");
        }
        let seen = stand.seen();
        assert_clean(&seen);
        let first_minute = seen
            .iter()
            .filter(|s| s.at.duration_since(started) < Duration::from_secs(60))
            .count();
        assert!(
            first_minute <= 20,
            "{first_minute} requests in the first minute: DingTalk allows 20 a minute \
             (a token bucket with a burst of 20 lets the burst plus its refills through)"
        );
        assert!(
            seen.len() < titles.len(),
            "{} requests: nothing merged",
            seen.len()
        );
        let texts: Vec<&str> = seen
            .iter()
            .map(|s| s.json["markdown"]["text"].as_str().unwrap())
            .collect();
        assert!(texts.iter().any(|t| t.contains("updates")), "no digest");
        for t in &titles {
            let shown = ripcord::text::markdown(t);
            assert!(
                texts.iter().any(|x| x.contains(shown.as_str())),
                "lost: {t}"
            );
        }
    }
}
