//! The Feishu and Microsoft Teams channels (each one file and one
//! registration line) against local stand-ins for their webhooks: real
//! HTTP over TCP on 127.0.0.1.
//!
//! The Feishu stand-in checks what the custom bot's documentation asks:
//! the hook path, a JSON body of at most 20 KB, an interactive card, and
//! the signature recomputed on its own (HMAC-SHA256 keyed by
//! "{timestamp}\n{secret}" over no bytes, base64; timestamp in seconds
//! within an hour of the expected clock). The Teams stand-in checks a
//! Workflows webhook's message: `type: message`, one Adaptive Card
//! attachment, at most 28 KB, every `<at>` backed by an entity, and the
//! `sig` in the query. Both play back the providers' errors, with texts
//! echoing the URL and its secrets, so a secret leaking into an outcome is
//! caught. Text from events must form no mention, link or markup.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use ripcord::action::channel::{ChannelSpec, SendContext, SendOutcome, channel_from_yaml};
use ripcord::action::message::{Kind, Link, Message};
use ripcord::decision::{Severity, Tier};
use ripcord::time::Ts;
use serde_json::{Value, json};
use sha2::Sha256;

const HOOK: &str = "fs-hook-token-2f7c1b90-8d44";
const SECRET: &str = "fs-signing-secret-Qm9vYmFy";
const SIG: &str = "tm-sig-Zx81kQpW3vE0aJd";
/// The injected clock: 2026-11-21 10:00:00 UTC.
const NOW: Ts = Ts(1_795_255_200_000);
const OPEN_ID: &str = "ou_7d8a6e6df7621556ce0d21922b676706";
const UPN: &str = "oncall@example.com";

#[derive(Clone, Copy, PartialEq)]
enum Provider {
    Feishu { signed: bool },
    Teams,
}

#[derive(Clone, Debug)]
enum Reply {
    Ok,
    /// Feishu: HTTP 200 with this code; the msg echoes the URL.
    Code(i64),
    /// This HTTP status (with `Retry-After: 7` on 429); the body echoes the URL.
    Status(u16),
}

#[derive(Clone, Debug)]
struct Seen {
    body: Vec<u8>,
    json: Value,
    problems: Vec<String>,
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
            Provider::Feishu { .. } => format!("http://{addr}/open-apis/bot/v2/hook/{HOOK}"),
            Provider::Teams => format!(
                "http://{addr}/workflows/5e0d/triggers/manual/paths/invoke?api-version=1&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={SIG}"
            ),
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

    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

async fn handle(
    State(s): State<Stand>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, String) {
    let mut problems = Vec::new();
    if !headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
    {
        problems.push("content-type is not application/json".to_owned());
    }
    let json: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
        problems.push(format!("body is not JSON: {e}"));
        Value::Null
    });
    match s.provider {
        Provider::Feishu { signed } => check_feishu(&uri, &body, &json, signed, &mut problems),
        Provider::Teams => check_teams(&uri, &body, &json, &mut problems),
    }
    let reply = s.script.lock().unwrap().pop_front().unwrap_or(Reply::Ok);
    s.seen.lock().unwrap().push(Seen {
        body: body.to_vec(),
        json,
        problems: problems.clone(),
    });
    let echo = match s.provider {
        Provider::Feishu { .. } => format!("{uri} (hook {HOOK}, secret {SECRET})"),
        Provider::Teams => format!("{uri} (sig {SIG})"),
    };
    let mut h = HeaderMap::new();
    if !problems.is_empty() {
        return match s.provider {
            Provider::Feishu { .. } => (
                StatusCode::OK,
                h,
                json!({"code": if problems.iter().any(|p| p.starts_with("sign")) { 19021 } else { 9499 },
                       "msg": format!("stand-in: {}", problems.join("; ")), "data": {}})
                .to_string(),
            ),
            Provider::Teams => (
                StatusCode::BAD_REQUEST,
                h,
                format!("stand-in: {}", problems.join("; ")),
            ),
        };
    }
    match (reply, s.provider) {
        (Reply::Ok, Provider::Feishu { .. }) => (
            StatusCode::OK,
            h,
            json!({"code": 0, "msg": "success", "data": {}}).to_string(),
        ),
        (Reply::Ok, Provider::Teams) => (StatusCode::ACCEPTED, h, String::new()),
        (Reply::Code(c), _) => (
            StatusCode::OK,
            h,
            json!({"code": c, "msg": format!("refused {echo}"), "data": {}}).to_string(),
        ),
        (Reply::Status(code), _) => {
            if code == 429 {
                h.insert("retry-after", "7".parse().unwrap());
            }
            (
                StatusCode::from_u16(code).unwrap(),
                h,
                format!("error for {echo}"),
            )
        }
    }
}

/// The signature Feishu expects, computed here on its own.
fn feishu_sign(timestamp: &str) -> String {
    let mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(format!("{timestamp}\n{SECRET}").as_bytes())
            .unwrap();
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn check_feishu(uri: &Uri, body: &[u8], v: &Value, signed: bool, p: &mut Vec<String>) {
    if uri.path() != format!("/open-apis/bot/v2/hook/{HOOK}") {
        p.push(format!("path {} is not the hook", uri.path()));
    }
    if body.len() > 20 * 1024 {
        p.push(format!("body is {} bytes, over 20 KB", body.len()));
    }
    if signed {
        let ts = v["timestamp"].as_str().unwrap_or("");
        match ts.parse::<i64>() {
            Ok(t) if (t - NOW.0 / 1000).abs() <= 3600 => {}
            _ => p.push(format!(
                "sign: timestamp `{ts}` is not seconds within an hour of now"
            )),
        }
        if v["sign"].as_str() != Some(feishu_sign(ts).as_str()) {
            p.push("sign match fail".to_owned());
        }
    }
    if v["msg_type"] != "interactive" {
        p.push(format!("msg_type {} is not interactive", v["msg_type"]));
    }
    let card = &v["card"];
    if card["header"]["title"]["tag"] != "plain_text"
        || card["header"]["title"]["content"]
            .as_str()
            .is_none_or(str::is_empty)
    {
        p.push("card header has no plain_text title".to_owned());
    }
    let Some(elements) = card["elements"].as_array() else {
        p.push("card has no elements".to_owned());
        return;
    };
    for e in elements {
        match e["tag"].as_str() {
            Some("div") => {
                let tag = e["text"]["tag"].as_str().unwrap_or("");
                if tag != "plain_text" && tag != "lark_md" {
                    p.push(format!("div text tag `{tag}`"));
                }
            }
            Some("action") => {
                for b in e["actions"].as_array().into_iter().flatten() {
                    if b["tag"] != "button"
                        || !b["url"].as_str().is_some_and(|u| u.starts_with("http"))
                    {
                        p.push(format!("bad button {b}"));
                    }
                }
            }
            other => p.push(format!("unknown element tag {other:?}")),
        }
    }
}

fn check_teams(uri: &Uri, body: &[u8], v: &Value, p: &mut Vec<String>) {
    if !uri
        .query()
        .unwrap_or("")
        .split('&')
        .any(|kv| kv == format!("sig={SIG}"))
    {
        p.push("401: no valid sig".to_owned());
    }
    if body.len() > 28 * 1024 {
        p.push(format!("413: body is {} bytes, over 28 KB", body.len()));
    }
    if v["type"] != "message" {
        p.push("type is not message".to_owned());
    }
    let att = v["attachments"].as_array().cloned().unwrap_or_default();
    if att.len() != 1 || att[0]["contentType"] != "application/vnd.microsoft.card.adaptive" {
        p.push("not one Adaptive Card attachment".to_owned());
        return;
    }
    let card = &att[0]["content"];
    if card["type"] != "AdaptiveCard" || card["version"].as_str().is_none() {
        p.push("content is not an AdaptiveCard with a version".to_owned());
    }
    let entities: Vec<String> = card["msteams"]["entities"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["text"].as_str().map(str::to_owned))
        .collect();
    for b in card["body"].as_array().into_iter().flatten() {
        if let Some(t) = b["text"].as_str() {
            let mut rest = t;
            while let Some(i) = rest.find("<at>") {
                let end = rest[i..]
                    .find("</at>")
                    .map(|e| i + e + 5)
                    .unwrap_or(rest.len());
                if !entities.iter().any(|e| e == &rest[i..end]) {
                    p.push(format!("`{}` has no mention entity", &rest[i..end]));
                }
                rest = &rest[end..];
            }
        }
    }
}

fn spec(name: &str, yaml: &str) -> ChannelSpec {
    channel_from_yaml(name, yaml).unwrap_or_else(|e| panic!("config: {e:?}"))
}

fn message(title: &str, body: &str) -> Message {
    Message {
        kind: Kind::Incident,
        title: title.to_owned(),
        body: body.to_owned(),
        tier: Tier::High,
        severity: Severity::Severe,
        incident: Some("inc-1".to_owned()),
        links: vec![],
        mention: true,
    }
}

fn approval() -> Message {
    let mut m = message(
        "[MEDIUM] payments/i-pay-2: approve a rollback",
        "http_5xx_ratio 0.12 > 0.05 for 2m\napprove within 30 min, by 10:30 UTC",
    );
    m.kind = Kind::ApprovalRequest;
    m.tier = Tier::Medium;
    m.links = vec![
        Link {
            label: "Approve".into(),
            url: "https://ripcord.example/a/approve?t=abc".into(),
        },
        Link {
            label: "Reject".into(),
            url: "https://ripcord.example/a/reject?t=abc".into(),
        },
    ];
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

fn assert_no_leak(o: &SendOutcome) {
    let s = format!("{o:?}");
    for secret in [HOOK, SECRET, SIG] {
        assert!(!s.contains(secret), "a secret leaked into {s}");
    }
}

fn assert_clean(seen: &[Seen]) {
    for s in seen {
        assert!(s.problems.is_empty(), "stand-in objected: {:?}", s.problems);
    }
}

/// The texts of every element of a Feishu card, by tag.
fn feishu_texts(v: &Value, tag: &str) -> Vec<String> {
    v["card"]["elements"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["text"]["tag"] == tag)
        .filter_map(|e| e["text"]["content"].as_str().map(str::to_owned))
        .collect()
}

fn feishu(stand: &Stand, extra: &str) -> ChannelSpec {
    spec(
        "fs",
        &format!("type: feishu\nwebhook: \"{}\"\n{extra}", stand.url),
    )
}

#[tokio::test]
async fn feishu_card_is_signed_with_ctx_now_and_mentions_on_call() {
    let stand = Stand::start(Provider::Feishu { signed: true }).await;
    let spec = feishu(
        &stand,
        &format!("secret: \"{SECRET}\"\nat_users: [\"{OPEN_ID}\"]\nat_all: true"),
    );
    let out = send(&spec, &approval()).await;
    assert!(matches!(out, SendOutcome::Sent(_)), "{out:?}");
    let seen = stand.take();
    assert_clean(&seen);
    let v = &seen[0].json;
    assert_eq!(v["timestamp"], json!((NOW.0 / 1000).to_string()));
    assert_eq!(v["card"]["header"]["template"], "orange");
    assert_eq!(
        v["card"]["header"]["title"]["content"],
        "[MEDIUM] payments/i-pay-2: approve a rollback"
    );
    let buttons: Vec<(String, String)> = v["card"]["elements"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["tag"] == "action")
        .flat_map(|e| e["actions"].as_array().unwrap().clone())
        .map(|b| {
            (
                b["text"]["content"].as_str().unwrap().to_owned(),
                b["url"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        buttons,
        vec![
            (
                "Approve".into(),
                "https://ripcord.example/a/approve?t=abc".into()
            ),
            (
                "Reject".into(),
                "https://ripcord.example/a/reject?t=abc".into()
            ),
        ]
    );
    assert_eq!(
        feishu_texts(v, "lark_md"),
        vec![format!("<at id=all></at> <at id={OPEN_ID}></at>")]
    );
    assert!(feishu_texts(v, "plain_text")[0].contains("approve within 30 min"));

    // Not asked for on-call: nobody is mentioned.
    let mut quiet = approval();
    quiet.mention = false;
    send(&spec, &quiet).await;
    let seen = stand.take();
    assert_clean(&seen);
    assert!(feishu_texts(&seen[0].json, "lark_md").is_empty());
}

#[tokio::test]
async fn feishu_a_wrong_secret_is_refused_as_the_provider_does() {
    let stand = Stand::start(Provider::Feishu { signed: true }).await;
    let spec = feishu(&stand, "secret: \"not-the-secret\"");
    let out = send(&spec, &message("t", "b")).await;
    assert!(
        matches!(&out, SendOutcome::Reject(r) if r.contains("19021")),
        "{out:?}"
    );
    assert_no_leak(&out);
}

#[tokio::test]
async fn feishu_text_from_events_forms_no_mention_link_or_markup() {
    let stand = Stand::start(Provider::Feishu { signed: false }).await;
    let spec = feishu(&stand, &format!("at_users: [\"{OPEN_ID}\"]"));
    let evil = "<at id=all></at> [click](https://evil.example) **bold**\u{2028}fake line";
    let mut msg = message(&format!("title {evil}"), &format!("where: pod={evil}"));
    msg.mention = false;
    let out = send(&spec, &msg).await;
    assert!(matches!(out, SendOutcome::Sent(_)), "{out:?}");
    let seen = stand.take();
    assert_clean(&seen);
    let v = &seen[0].json;
    // Shown as plain text only; no lark_md element carries event text.
    assert!(feishu_texts(v, "lark_md").is_empty(), "{v}");
    let plain = feishu_texts(v, "plain_text").join("\n");
    assert!(plain.contains("<at id=all></at>"), "{plain}");
    assert!(
        !plain.contains('\u{2028}'),
        "a line separator passed: {plain}"
    );
    assert!(v["card"]["header"]["title"]["tag"] == "plain_text");
}

#[tokio::test]
async fn feishu_huge_message_is_cut_to_20kb_of_valid_json() {
    let stand = Stand::start(Provider::Feishu { signed: true }).await;
    let spec = feishu(&stand, &format!("secret: \"{SECRET}\""));
    let body = "回滚 \"quoted\" \\ line\n".repeat(3_000);
    let mut msg = approval();
    msg.body = body;
    let out = send(&spec, &msg).await;
    assert!(matches!(out, SendOutcome::Sent(_)), "{out:?}");
    let seen = stand.take();
    assert_clean(&seen);
    assert!(seen[0].body.len() <= 20_000, "{} bytes", seen[0].body.len());
    assert!(
        seen[0].body.len() > 18_000,
        "cut far more than needed: {}",
        seen[0].body.len()
    );
    assert!(feishu_texts(&seen[0].json, "plain_text")[0].ends_with('…'));
}

#[tokio::test]
async fn feishu_errors_map_to_outcomes_without_leaking_secrets() {
    let stand = Stand::start(Provider::Feishu { signed: true }).await;
    let spec = feishu(&stand, &format!("secret: \"{SECRET}\""));
    stand.play([
        Reply::Code(11232),
        Reply::Code(19024),
        Reply::Status(500),
        Reply::Status(400),
    ]);
    let msg = message("t", "b");
    let too_fast = send(&spec, &msg).await;
    assert!(
        matches!(&too_fast, SendOutcome::Retry { after: Some(d), .. } if *d == Duration::from_secs(60)),
        "{too_fast:?}"
    );
    let keyword = send(&spec, &msg).await;
    assert!(
        matches!(&keyword, SendOutcome::Reject(r) if r.contains("19024")),
        "{keyword:?}"
    );
    let down = send(&spec, &msg).await;
    assert!(matches!(down, SendOutcome::Retry { .. }), "{down:?}");
    let bad = send(&spec, &msg).await;
    assert!(matches!(bad, SendOutcome::Reject(_)), "{bad:?}");
    for o in [&too_fast, &keyword, &down, &bad] {
        assert_no_leak(o);
    }
    // Nobody listening: a transport error, retried, without the URL.
    drop(stand);
    let gone = spec_for_closed_port("feishu").await;
    let out = send(&gone, &msg).await;
    assert!(matches!(out, SendOutcome::Retry { .. }), "{out:?}");
    assert_no_leak(&out);
}

async fn spec_for_closed_port(kind: &str) -> ChannelSpec {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let url = match kind {
        "feishu" => format!("http://{addr}/open-apis/bot/v2/hook/{HOOK}"),
        _ => format!("http://{addr}/workflows/x/invoke?sig={SIG}"),
    };
    spec(
        "gone",
        &format!("type: {kind}\nwebhook: \"{url}\"\ntimeout: 2s"),
    )
}

#[test]
fn feishu_and_teams_config_errors_are_all_reported_without_the_secret() {
    let e = channel_from_yaml(
        "fs",
        "type: feishu\nwebhook: \"ftp://x/hook/fs-hook-token-2f7c1b90-8d44\"\nat_users: [\"ou_1\", \"<at id=all>\"]\nat_all: maybe",
    )
    .expect_err("refused");
    let all = format!("{e:?}");
    assert!(all.contains("webhook"), "{all}");
    assert!(all.contains("is not an http(s) URL"), "{all}");
    assert!(all.contains("at_users"), "{all}");
    assert!(all.contains("at_all"), "{all}");
    assert!(!all.contains(HOOK), "{all}");

    let e = channel_from_yaml("tm", "type: teams\nat_users: [\"a b\"]").expect_err("refused");
    let all = format!("{e:?}");
    assert!(
        all.contains("webhook") && all.contains("is required"),
        "{all}"
    );
    assert!(all.contains("at_users"), "{all}");

    let e = channel_from_yaml("x", "type: lark").expect_err("refused");
    let all = format!("{e:?}");
    assert!(
        all.contains("feishu") && all.contains("teams"),
        "the known types are listed: {all}"
    );
}

fn teams(stand: &Stand, extra: &str) -> ChannelSpec {
    spec(
        "tm",
        &format!("type: teams\nwebhook: \"{}\"\n{extra}", stand.url),
    )
}

fn card(v: &Value) -> &Value {
    &v["attachments"][0]["content"]
}

/// Every text run and text block of a card, in order.
fn teams_texts(v: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for b in card(v)["body"].as_array().into_iter().flatten() {
        match b["type"].as_str() {
            Some("TextBlock") => out.push(("TextBlock".into(), b["text"].as_str().unwrap().into())),
            Some("RichTextBlock") => {
                for r in b["inlines"].as_array().into_iter().flatten() {
                    assert_eq!(r["type"], "TextRun", "{r}");
                    out.push(("TextRun".into(), r["text"].as_str().unwrap().into()));
                }
            }
            other => panic!("unexpected block {other:?}"),
        }
    }
    out
}

#[tokio::test]
async fn teams_message_is_one_adaptive_card_with_buttons_and_mentions() {
    let stand = Stand::start(Provider::Teams).await;
    let spec = teams(&stand, &format!("at_users: [\"{UPN}\"]"));
    let out = send(&spec, &approval()).await;
    assert!(matches!(out, SendOutcome::Sent(_)), "{out:?}");
    let seen = stand.take();
    assert_clean(&seen);
    let v = &seen[0].json;
    let texts = teams_texts(v);
    assert_eq!(texts[0].1, "[MEDIUM] payments/i-pay-2: approve a rollback");
    assert!(
        texts
            .iter()
            .any(|(_, t)| t == "approve within 30 min, by 10:30 UTC")
    );
    assert_eq!(
        texts.last().unwrap(),
        &("TextBlock".to_owned(), "<at>oncall</at>".to_owned())
    );
    assert_eq!(card(v)["msteams"]["entities"][0]["mentioned"]["id"], UPN);
    let actions: Vec<(&str, &str)> = card(v)["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(a["type"], "Action.OpenUrl");
            (a["title"].as_str().unwrap(), a["url"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            ("Approve", "https://ripcord.example/a/approve?t=abc"),
            ("Reject", "https://ripcord.example/a/reject?t=abc"),
        ]
    );
}

#[tokio::test]
async fn teams_text_from_events_is_shown_as_written_never_as_markdown_or_mention() {
    let stand = Stand::start(Provider::Teams).await;
    let spec = teams(&stand, &format!("at_users: [\"{UPN}\"]"));
    let evil = "<at>ceo</at> [click](https://evil.example) **bold**";
    let mut msg = message(
        &format!("title {evil}"),
        &format!("where: pod={evil}\u{0085}x"),
    );
    msg.mention = false;
    let out = send(&spec, &msg).await;
    assert!(matches!(out, SendOutcome::Sent(_)), "{out:?}");
    let seen = stand.take();
    let v = &seen[0].json;
    for (kind, text) in teams_texts(v) {
        assert_eq!(kind, "TextRun", "event text in a markdown block: {text}");
    }
    assert!(card(v)["msteams"].is_null(), "no mention entities: {v}");
    assert!(
        !seen[0].body.windows(2).any(|w| w == "\u{0085}".as_bytes()),
        "NEL passed"
    );
    // The stand-in refuses an <at> with no entity; a TextRun is not parsed
    // for mentions, so this must have been accepted.
    assert_clean(&seen);
}

#[tokio::test]
async fn teams_huge_message_is_cut_to_28kb_and_errors_map_without_the_sig() {
    let stand = Stand::start(Provider::Teams).await;
    let spec = teams(&stand, "");
    let mut msg = approval();
    msg.body = "rollback \"step\" done\n".repeat(4_000);
    let out = send(&spec, &msg).await;
    assert!(matches!(out, SendOutcome::Sent(_)), "{out:?}");
    let seen = stand.take();
    assert_clean(&seen);
    assert!(
        seen[0].body.len() <= 28_000 && seen[0].body.len() > 26_000,
        "{}",
        seen[0].body.len()
    );

    stand.play([Reply::Status(429), Reply::Status(401), Reply::Status(502)]);
    let m = message("t", "b");
    let slow = send(&spec, &m).await;
    assert!(
        matches!(&slow, SendOutcome::Retry { after: Some(d), .. } if *d == Duration::from_secs(7)),
        "{slow:?}"
    );
    let denied = send(&spec, &m).await;
    assert!(matches!(denied, SendOutcome::Reject(_)), "{denied:?}");
    let down = send(&spec, &m).await;
    assert!(matches!(down, SendOutcome::Retry { .. }), "{down:?}");
    for o in [&slow, &denied, &down] {
        assert_no_leak(o);
    }
    let gone = spec_for_closed_port("teams").await;
    let out = send(&gone, &m).await;
    assert!(matches!(out, SendOutcome::Retry { .. }), "{out:?}");
    assert_no_leak(&out);
}

/// A channel's class is its own: Feishu and Teams join default routing and
/// the first escalation step like the other chats, with nothing listed
/// elsewhere.
#[test]
fn feishu_and_teams_are_routed_and_escalated_as_chats_by_default() {
    let yaml = r#"
channels:
  fs: {type: feishu, webhook: "https://open.feishu.cn/open-apis/bot/v2/hook/x", secret: "s"}
  tm: {type: teams, webhook: "https://example.invalid/workflows/x?sig=abcdefgh"}
  mail: {type: email, host: smtp.example.com, from: "ripcord@example.com", to: [oncall@example.com]}
"#;
    let cfg = ripcord::settings::Config::parse(std::path::Path::new("ripcord.yaml"), yaml)
        .unwrap_or_else(|e| panic!("{e:?}"));
    for t in [Tier::Low, Tier::Medium, Tier::High] {
        let route = cfg.actions.route(t);
        assert_eq!(route.notify, vec!["fs", "tm", "mail"], "{t:?}");
        let first = &cfg.actions.escalation(t)[0];
        assert_eq!(first.channels, vec!["fs", "tm"], "{t:?}");
    }
    assert_eq!(cfg.actions.channels[0].rate, (100, Duration::from_secs(60)));
}
