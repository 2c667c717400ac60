//! SMS and voice channels against local stand-ins for Twilio, Aliyun and a
//! generic HTTP gateway: what goes over the wire (paths, auth, fields,
//! signatures, escaping) and how each answer maps to an outcome.
//!
//! The Aliyun stand-in checks signatures with its own implementation of
//! Aliyun's documented algorithm (checked here against the documentation's
//! worked example), never with the channel's code.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};

use ripcord::action::channel::ChannelSpec;
use ripcord::action::channel::{SendContext, SendOutcome, channel_from_yaml};
use ripcord::action::message::{Kind, Link, Message};
use ripcord::decision::{Severity, Tier};
use ripcord::time::Ts;

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "twilio-auth-token-s3cret";
const AK_ID: &str = "LTAI5tTestKeyId";
const AK_SECRET: &str = "aliyun-ak-s3cret";
const CN1: &str = "+8613800000000";
const CN2: &str = "+8613900000001";
const US1: &str = "+14155550100";

fn now() -> Ts {
    Ts::parse_rfc3339("2026-11-21T10:00:00.250Z").unwrap()
}

/// A page with a Chinese title, XML/JSON specials and an ack link.
fn page() -> Message {
    let mut m = Message::note(
        Kind::Page,
        Tier::High,
        Severity::Severe,
        Some("inc-3f2a9c01d4e5"),
        "[HIGH/severe] 支付服务回滚 <payments> & \"api\" 'eu' 5xx > 5%".into(),
        "value: 0.12 (threshold 0.05)".into(),
    );
    m.links = vec![
        Link {
            label: "open".into(),
            url: "https://ripcord.example/i/inc-3f2a9c01d4e5".into(),
        },
        Link {
            label: "acknowledge".into(),
            url: "https://ripcord.example/ack/inc-3f2a9c01d4e5?t=abc".into(),
        },
    ];
    m
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

async fn send(spec: &ChannelSpec, msg: &Message) -> SendOutcome {
    let http = reqwest::Client::new();
    let ctx = SendContext {
        http: &http,
        now: now(),
    };
    spec.channel.send(&ctx, msg).await
}

fn outcome_text(o: &SendOutcome) -> &str {
    match o {
        SendOutcome::Sent(s) | SendOutcome::Reject(s) => s,
        SendOutcome::Retry { reason, .. } => reason,
    }
}

fn assert_no_secrets(o: &SendOutcome) {
    let t = outcome_text(o);
    for s in [TOKEN, AK_SECRET, "hook-s3cret", "key-s3cret", SID] {
        assert!(!t.contains(s), "outcome leaks `{s}`: {t}");
    }
}

// ---------------------------------------------------------------------------
// Twilio

/// A canned answer.
#[derive(Clone)]
struct Canned {
    status: u16,
    body: Value,
    retry_after: Option<&'static str>,
}

impl Canned {
    fn new(status: u16, body: Value) -> Canned {
        Canned {
            status,
            body,
            retry_after: None,
        }
    }
}

impl IntoResponse for Canned {
    fn into_response(self) -> Response {
        let mut r = (
            StatusCode::from_u16(self.status).unwrap(),
            [(header::CONTENT_TYPE, "application/json")],
            self.body.to_string(),
        )
            .into_response();
        if let Some(a) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, a.parse().unwrap());
        }
        r
    }
}

#[derive(Debug, Clone)]
struct TwilioSeen {
    resource: String,
    form: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct TwilioStandIn {
    seen: Arc<Mutex<Vec<TwilioSeen>>>,
    /// Answers by `To`; 201 with a sid otherwise.
    answers: Arc<Mutex<HashMap<String, Canned>>>,
}

async fn twilio_handler(
    State(st): State<TwilioStandIn>,
    Path((sid, file)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{SID}:{TOKEN}"))
    );
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if auth != Some(expected.as_str()) {
        return Canned::new(
            401,
            json!({"code": 20003, "message": "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401}),
        )
        .into_response();
    }
    if sid != SID {
        return Canned::new(
            404,
            json!({"code": 20404, "message": "not found", "status": 404}),
        )
        .into_response();
    }
    let resource = file.strip_suffix(".json").unwrap_or(&file).to_owned();
    assert!(
        resource == "Messages" || resource == "Calls",
        "unexpected resource {file}"
    );
    let to = form.get("To").cloned().unwrap_or_default();
    st.seen.lock().unwrap().push(TwilioSeen {
        resource: resource.clone(),
        form: form.clone(),
    });
    if let Some(c) = st.answers.lock().unwrap().get(&to) {
        return c.clone().into_response();
    }
    let prefix = if resource == "Calls" { "CA" } else { "SM" };
    let id = format!("{prefix}{}", &to[to.len() - 4..]);
    Canned::new(201, json!({"sid": id, "to": to, "status": "queued"})).into_response()
}

async fn twilio() -> (TwilioStandIn, SocketAddr) {
    let st = TwilioStandIn::default();
    let app = Router::new()
        .route("/2010-04-01/Accounts/{sid}/{file}", post(twilio_handler))
        .with_state(st.clone());
    (st, serve(app).await)
}

fn twilio_yaml(kind: &str, addr: SocketAddr, token: &str, to: &[&str]) -> String {
    let to: Vec<String> = to.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "type: {kind}\nprovider: twilio\nto: [{}]\naccount_sid: {SID}\nauth_token: {token}\nfrom: \"+14155550199\"\nbase_url: http://{addr}\n",
        to.join(", ")
    )
}

#[tokio::test]
async fn twilio_sms_to_every_number() {
    let (st, addr) = twilio().await;
    let spec = channel_from_yaml("sms", &twilio_yaml("sms", addr, TOKEN, &[CN1, US1])).unwrap();
    assert_eq!(spec.rate, (10, Duration::from_secs(60)));
    let out = send(&spec, &page()).await;
    assert_eq!(
        out,
        SendOutcome::Sent(format!("sent to 2 numbers: {CN1} (SM0000), {US1} (SM0100)"))
    );
    let seen = st.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let mut tos: Vec<&str> = seen.iter().map(|s| s.form["To"].as_str()).collect();
    tos.sort();
    assert_eq!(tos, [US1, CN1]);
    for s in &seen {
        assert_eq!(s.resource, "Messages");
        assert_eq!(s.form["From"], "+14155550199");
        assert_eq!(s.form.len(), 3, "{:?}", s.form);
        let body = &s.form["Body"];
        assert_eq!(
            body,
            "[HIGH/severe] 支付服务回滚 <payments> & \"api\" 'eu' 5xx > 5%\nincident inc-3f2a9c01d4e5\nacknowledge: https://ripcord.example/ack/inc-3f2a9c01d4e5?t=abc"
        );
    }
}

#[tokio::test]
async fn twilio_sms_long_text_is_bounded() {
    let (st, addr) = twilio().await;
    let spec = channel_from_yaml("sms", &twilio_yaml("sms", addr, TOKEN, &[CN1])).unwrap();
    let mut m = page();
    m.title = "回滚".repeat(400);
    assert!(matches!(send(&spec, &m).await, SendOutcome::Sent(_)));
    let body = st.seen.lock().unwrap()[0].form["Body"].clone();
    assert!(body.len() <= 600, "{}", body.len());
    assert!(body.starts_with("回滚回滚"));
    assert!(body.ends_with("acknowledge: https://ripcord.example/ack/inc-3f2a9c01d4e5?t=abc"));
}

#[tokio::test]
async fn twilio_invalid_number_is_rejected_naming_who_got_it() {
    let (st, addr) = twilio().await;
    st.answers.lock().unwrap().insert(
        US1.into(),
        Canned::new(
            400,
            json!({"code": 21211, "message": "The 'To' number +14155550100 is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}),
        ),
    );
    let spec = channel_from_yaml("sms", &twilio_yaml("sms", addr, TOKEN, &[CN1, US1])).unwrap();
    let out = send(&spec, &page()).await;
    let SendOutcome::Reject(r) = &out else {
        panic!("{out:?}")
    };
    assert!(
        r.starts_with(&format!("sent to 1 of 2 numbers: {CN1} (SM0000); failed: {US1}: HTTP 400, Twilio error 21211: The 'To' number")),
        "{r}"
    );
    assert_no_secrets(&out);
}

#[tokio::test]
async fn twilio_bad_credentials_are_rejected() {
    let (_st, addr) = twilio().await;
    let spec = channel_from_yaml("sms", &twilio_yaml("sms", addr, "wrong-token", &[CN1])).unwrap();
    let out = send(&spec, &page()).await;
    assert_eq!(
        out,
        SendOutcome::Reject(format!(
            "failed for all 1 number: {CN1}: HTTP 401, Twilio error 20003: Authenticate"
        ))
    );
    assert!(!outcome_text(&out).contains("wrong-token"));
}

#[tokio::test]
async fn twilio_too_many_requests_is_retried_after_its_hint() {
    let (st, addr) = twilio().await;
    st.answers.lock().unwrap().insert(
        CN1.into(),
        Canned {
            status: 429,
            body: json!({"code": 20429, "message": "Too Many Requests", "status": 429}),
            retry_after: Some("7"),
        },
    );
    let spec = channel_from_yaml("sms", &twilio_yaml("sms", addr, TOKEN, &[CN1])).unwrap();
    let out = send(&spec, &page()).await;
    assert_eq!(
        out,
        SendOutcome::Retry {
            after: Some(Duration::from_secs(7)),
            reason: format!(
                "failed for all 1 number: {CN1}: HTTP 429, Twilio error 20429: Too Many Requests"
            ),
        }
    );
}

#[tokio::test]
async fn twilio_server_error_is_retried() {
    let (st, addr) = twilio().await;
    st.answers.lock().unwrap().insert(
        US1.into(),
        Canned::new(
            500,
            json!({"code": 20500, "message": "Internal Server Error", "status": 500}),
        ),
    );
    let spec = channel_from_yaml("sms", &twilio_yaml("sms", addr, TOKEN, &[CN1, US1])).unwrap();
    let out = send(&spec, &page()).await;
    let SendOutcome::Retry {
        after: None,
        reason,
    } = &out
    else {
        panic!("{out:?}")
    };
    assert_eq!(
        reason,
        &format!(
            "sent to 1 of 2 numbers: {CN1} (SM0000); failed: {US1}: HTTP 500, Twilio error 20500: Internal Server Error"
        )
    );
}

/// The text of `<Response><Say …>text</Say></Response>`, unescaped, if the
/// document is well-formed: attributes quoted, no raw `<` in text, every
/// `&` one of the five predefined entities.
fn twiml_say_text(doc: &str) -> Result<(String, BTreeMap<String, String>), String> {
    let rest = doc
        .strip_prefix("<Response><Say")
        .ok_or("no <Response><Say")?;
    let rest = rest
        .strip_suffix("</Say></Response>")
        .ok_or("no </Say></Response>")?;
    let close = rest.find('>').ok_or("unclosed <Say")?;
    let (attrs_src, text) = (&rest[..close], &rest[close + 1..]);
    let mut attrs = BTreeMap::new();
    let mut a = attrs_src.trim();
    while !a.is_empty() {
        let (name, after) = a.split_once("=\"").ok_or("attribute without =\"")?;
        let (value, after) = after.split_once('"').ok_or("unterminated attribute")?;
        if value.contains(['<', '&']) {
            return Err(format!("raw < or & in attribute {name}"));
        }
        attrs.insert(name.trim().to_owned(), value.to_owned());
        a = after.trim_start();
    }
    if text.contains('<') || text.contains('>') {
        return Err("raw < or > in text".into());
    }
    let mut out = String::new();
    let mut t = text;
    while let Some(i) = t.find('&') {
        out.push_str(&t[..i]);
        let after = &t[i..];
        let (ent, ch) = [
            ("&amp;", '&'),
            ("&lt;", '<'),
            ("&gt;", '>'),
            ("&quot;", '"'),
            ("&apos;", '\''),
        ]
        .into_iter()
        .find(|(e, _)| after.starts_with(e))
        .ok_or_else(|| format!("bad entity at {after:.10}"))?;
        out.push(ch);
        t = &after[ent.len()..];
    }
    out.push_str(t);
    Ok((out, attrs))
}

#[test]
fn the_twiml_checker_catches_broken_documents() {
    assert!(twiml_say_text("<Response><Say>a &amp; b</Say></Response>").is_ok());
    assert!(twiml_say_text("<Response><Say>a & b</Say></Response>").is_err());
    assert!(twiml_say_text("<Response><Say>a <b</Say></Response>").is_err());
    assert!(twiml_say_text("<Response><Say x=\"1>a</Say></Response>").is_err());
}

#[tokio::test]
async fn twilio_call_says_escaped_twiml() {
    let (st, addr) = twilio().await;
    let yaml = twilio_yaml("voice", addr, TOKEN, &[CN1, US1]) + "language: zh-CN\n";
    let spec = channel_from_yaml("call", &yaml).unwrap();
    assert_eq!(spec.rate, (5, Duration::from_secs(60)));
    let out = send(&spec, &page()).await;
    assert_eq!(
        out,
        SendOutcome::Sent(format!("called 2 numbers: {CN1} (CA0000), {US1} (CA0100)"))
    );
    let seen = st.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.resource, "Calls");
        assert_eq!(s.form["From"], "+14155550199");
        assert!(!s.form.contains_key("Body"));
        let twiml = &s.form["Twiml"];
        let (text, attrs) = twiml_say_text(twiml).unwrap_or_else(|e| panic!("{e}: {twiml}"));
        assert_eq!(attrs.get("language").map(String::as_str), Some("zh-CN"));
        assert_eq!(
            text,
            "ripcord alert: HIGH/severe 支付服务回滚 payments & \"api\" 'eu' 5xx 5%. Incident inc-3f2a9c01d4e5. Nothing to press; acknowledge with: ripcord ack inc-3f2a9c01d4e5."
        );
        assert!(!text.contains("://"), "no URLs on a call: {text}");
        assert!(twiml.contains("&amp;") && twiml.contains("&quot;") && twiml.contains("&apos;"));
    }
}

// ---------------------------------------------------------------------------
// Aliyun

/// Aliyun's POP percent-encoding, written out: unreserved characters stay,
/// every other byte of the UTF-8 is %XX with upper-case hex.
fn pop_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn pct_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            assert_ne!(bytes[i], b'+', "Aliyun wants %20, never +");
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Signature as Aliyun documents it: parameters but Signature sorted by
/// name, each name and value POP-encoded, `k=v` joined by `&`; the string
/// to sign is `GET&%2F&` + the POP-encoded result; HMAC-SHA1 keyed by
/// `secret&`, Base64.
fn expected_signature(params: &BTreeMap<String, String>, secret: &str) -> String {
    let canonical: Vec<String> = params
        .iter()
        .filter(|(k, _)| k.as_str() != "Signature")
        .map(|(k, v)| format!("{}={}", pop_encode(k), pop_encode(v)))
        .collect();
    let to_sign = format!("GET&%2F&{}", pop_encode(&canonical.join("&")));
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(format!("{secret}&").as_bytes()).unwrap();
    mac.update(to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[test]
fn the_stand_in_signature_matches_aliyuns_worked_example() {
    let p: BTreeMap<String, String> = [
        ("AccessKeyId", "testId"),
        ("Action", "SendSms"),
        ("Format", "XML"),
        ("OutId", "123"),
        ("PhoneNumbers", "15300000001"),
        ("RegionId", "cn-hangzhou"),
        ("SignName", "阿里云短信测试专用"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "45e25e9b-0a6f-4070-8c85-2956eda1b466"),
        ("SignatureVersion", "1.0"),
        ("TemplateCode", "SMS_71390007"),
        ("TemplateParam", "{\"customer\":\"test\"}"),
        ("Timestamp", "2017-07-12T02:42:19Z"),
        ("Version", "2017-05-25"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(
        expected_signature(&p, "testSecret"),
        "zJDF+Lrzhj/ThnlvIToysFRq6t4="
    );
}

#[derive(Clone, Default)]
struct AliyunStandIn {
    seen: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
    /// Answers by PhoneNumbers / CalledNumber; `Code: OK` otherwise.
    answers: Arc<Mutex<HashMap<String, Value>>>,
}

async fn aliyun_handler(
    State(st): State<AliyunStandIn>,
    RawQuery(q): RawQuery,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    let json = [(header::CONTENT_TYPE, "application/json")];
    let q = q.unwrap_or_default();
    let mut params = BTreeMap::new();
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').expect("k=v");
        let prev = params.insert(pct_decode(k), pct_decode(v));
        assert!(prev.is_none(), "duplicate parameter {k}");
    }
    let Some(sig) = params.get("Signature").cloned() else {
        return (
            StatusCode::BAD_REQUEST,
            json,
            json!({"Code": "MissingSignature", "Message": "no Signature"}).to_string(),
        );
    };
    if sig != expected_signature(&params, AK_SECRET) {
        return (
            StatusCode::BAD_REQUEST,
            json,
            json!({"Code": "IncompleteSignature", "Message": "The request signature does not conform to Aliyun standards.", "RequestId": "R-SIG"}).to_string(),
        );
    }
    for (k, v) in [
        ("AccessKeyId", AK_ID),
        ("Format", "JSON"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("Version", "2017-05-25"),
        ("Timestamp", "2026-11-21T10:00:00Z"),
    ] {
        assert_eq!(params.get(k).map(String::as_str), Some(v), "{k}");
    }
    let nonce = &params["SignatureNonce"];
    assert_eq!(nonce.len(), 36, "{nonce}");
    st.seen.lock().unwrap().push(params.clone());
    let (key, id_field, id) = match params["Action"].as_str() {
        "SendSms" => (
            params["PhoneNumbers"].clone(),
            "BizId",
            "900619746936498440^0",
        ),
        "SingleCallByTts" => (
            params["CalledNumber"].clone(),
            "CallId",
            "116012354148^10281378",
        ),
        other => panic!("unexpected Action {other}"),
    };
    let answer = st.answers.lock().unwrap().get(&key).cloned().unwrap_or_else(|| {
        json!({"Code": "OK", "Message": "OK", "RequestId": "R-1", id_field: format!("{id}-{}", &key[key.len() - 4..])})
    });
    (StatusCode::OK, json, answer.to_string())
}

async fn aliyun() -> (AliyunStandIn, SocketAddr) {
    let st = AliyunStandIn::default();
    let app = Router::new()
        .route("/", get(aliyun_handler))
        .with_state(st.clone());
    (st, serve(app).await)
}

fn aliyun_sms_yaml(addr: SocketAddr, secret: &str, to: &[&str]) -> String {
    let to: Vec<String> = to.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "type: sms\nprovider: aliyun\nto: [{}]\naccess_key_id: {AK_ID}\naccess_key_secret: {secret}\nsign_name: 回滚告警\ntemplate_code: SMS_123456789\nbase_url: http://{addr}/\n",
        to.join(", ")
    )
}

#[tokio::test]
async fn aliyun_sms_is_signed_and_sent_to_all_numbers_at_once() {
    let (st, addr) = aliyun().await;
    let spec = channel_from_yaml("sms", &aliyun_sms_yaml(addr, AK_SECRET, &[CN1, CN2])).unwrap();
    let out = send(&spec, &page()).await;
    assert_eq!(
        out,
        SendOutcome::Sent(format!(
            "sent to 2 numbers: {CN1} (BizId 900619746936498440^0-0001), {CN2} (BizId 900619746936498440^0-0001)"
        ))
    );
    let seen = st.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "one SendSms for all numbers");
    let p = &seen[0];
    assert_eq!(p["Action"], "SendSms");
    assert_eq!(p["PhoneNumbers"], "8613800000000,8613900000001");
    assert_eq!(p["SignName"], "回滚告警");
    assert_eq!(p["TemplateCode"], "SMS_123456789");
    let param: Value = serde_json::from_str(&p["TemplateParam"]).unwrap();
    assert_eq!(
        param,
        json!({"content": "[HIGH/severe] 支付服务回滚 <payments> & \"api\" 'eu' 5xx > 5%\nincident inc-3f2a9c01d4e5\nacknowledge: https://ripcord.example/ack/inc-3f2a9c01d4e5?t=abc"})
    );
}

#[tokio::test]
async fn aliyun_nonces_differ_between_sends() {
    let (st, addr) = aliyun().await;
    let spec = channel_from_yaml("sms", &aliyun_sms_yaml(addr, AK_SECRET, &[CN1])).unwrap();
    for _ in 0..2 {
        assert!(matches!(send(&spec, &page()).await, SendOutcome::Sent(_)));
    }
    let seen = st.seen.lock().unwrap().clone();
    assert_ne!(seen[0]["SignatureNonce"], seen[1]["SignatureNonce"]);
}

#[tokio::test]
async fn aliyun_custom_template_param() {
    let (st, addr) = aliyun().await;
    let yaml = aliyun_sms_yaml(addr, AK_SECRET, &[CN1])
        + "template_param: '{\"title\": \"{title}\", \"id\": \"{incident}\"}'\n";
    let spec = channel_from_yaml("sms", &yaml).unwrap();
    assert!(matches!(send(&spec, &page()).await, SendOutcome::Sent(_)));
    let p = st.seen.lock().unwrap()[0].clone();
    let param: Value = serde_json::from_str(&p["TemplateParam"]).unwrap();
    assert_eq!(
        param,
        json!({"title": "[HIGH/severe] 支付服务回滚 <payments> & \"api\" 'eu' 5xx > 5%", "id": "inc-3f2a9c01d4e5"})
    );
}

#[tokio::test]
async fn aliyun_wrong_secret_fails_the_signature_check() {
    let (st, addr) = aliyun().await;
    let spec = channel_from_yaml("sms", &aliyun_sms_yaml(addr, "not-the-secret", &[CN1])).unwrap();
    let out = send(&spec, &page()).await;
    assert_eq!(
        out,
        SendOutcome::Reject(format!(
            "failed for all 1 number: {CN1}: Aliyun IncompleteSignature: The request signature does not conform to Aliyun standards."
        ))
    );
    assert!(st.seen.lock().unwrap().is_empty());
    assert!(!outcome_text(&out).contains("not-the-secret"));
}

#[tokio::test]
async fn aliyun_flow_control_is_retried_and_bad_numbers_rejected() {
    let (st, addr) = aliyun().await;
    st.answers.lock().unwrap().insert(
        "8613800000000".into(),
        json!({"Code": "isv.BUSINESS_LIMIT_CONTROL", "Message": "触发分钟级流控Permits:1", "RequestId": "R-2"}),
    );
    let spec = channel_from_yaml("sms", &aliyun_sms_yaml(addr, AK_SECRET, &[CN1])).unwrap();
    let out = send(&spec, &page()).await;
    assert_eq!(
        out,
        SendOutcome::Retry {
            after: Some(Duration::from_secs(60)),
            reason: format!(
                "failed for all 1 number: {CN1}: Aliyun isv.BUSINESS_LIMIT_CONTROL: 触发分钟级流控Permits:1"
            ),
        }
    );

    st.answers.lock().unwrap().insert(
        "8613900000001".into(),
        json!({"Code": "isv.MOBILE_NUMBER_ILLEGAL", "Message": "非法手机号", "RequestId": "R-3"}),
    );
    let spec = channel_from_yaml("sms", &aliyun_sms_yaml(addr, AK_SECRET, &[CN2])).unwrap();
    let out = send(&spec, &page()).await;
    assert_eq!(
        out,
        SendOutcome::Reject(format!(
            "failed for all 1 number: {CN2}: Aliyun isv.MOBILE_NUMBER_ILLEGAL: 非法手机号"
        ))
    );
    assert_no_secrets(&out);
}

#[tokio::test]
async fn aliyun_voice_calls_each_number() {
    let (st, addr) = aliyun().await;
    st.answers.lock().unwrap().insert(
        "13900000001".into(),
        json!({"Code": "isv.BUSINESS_LIMIT_CONTROL", "Message": "触发流控", "RequestId": "R-4"}),
    );
    let yaml = format!(
        "type: voice\nprovider: aliyun\nto: [\"{CN1}\", \"{CN2}\"]\naccess_key_id: {AK_ID}\naccess_key_secret: {AK_SECRET}\ntts_code: TTS_10001\ncalled_show_number: \"057100000000\"\nplay_times: 2\nbase_url: http://{addr}\n"
    );
    let spec = channel_from_yaml("call", &yaml).unwrap();
    let out = send(&spec, &page()).await;
    assert_eq!(
        out,
        SendOutcome::Retry {
            after: Some(Duration::from_secs(60)),
            reason: format!(
                "called 1 of 2 numbers: {CN1} (CallId 116012354148^10281378-0000); failed: {CN2}: Aliyun isv.BUSINESS_LIMIT_CONTROL: 触发流控"
            ),
        }
    );
    let mut seen = st.seen.lock().unwrap().clone();
    seen.sort_by(|a, b| a["CalledNumber"].cmp(&b["CalledNumber"]));
    assert_eq!(seen.len(), 2, "one SingleCallByTts per number");
    assert_eq!(seen[0]["CalledNumber"], "13800000000");
    assert_eq!(seen[1]["CalledNumber"], "13900000001");
    assert_ne!(seen[0]["SignatureNonce"], seen[1]["SignatureNonce"]);
    for p in &seen {
        assert_eq!(p["Action"], "SingleCallByTts");
        assert_eq!(p["TtsCode"], "TTS_10001");
        assert_eq!(p["CalledShowNumber"], "057100000000");
        assert_eq!(p["PlayTimes"], "2");
        let param: Value = serde_json::from_str(&p["TtsParam"]).unwrap();
        let said = param["content"].as_str().unwrap();
        assert!(said.contains("支付服务回滚"), "{said}");
        assert!(said.contains("ripcord ack inc-3f2a9c01d4e5"), "{said}");
        assert!(!said.contains("://"), "{said}");
    }
}

// ---------------------------------------------------------------------------
// Generic webhook

#[derive(Clone, Default)]
struct HookStandIn {
    seen: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
}

async fn hook_handler(
    State(st): State<HookStandIn>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    assert_eq!(q.as_deref(), Some("token=hook-s3cret"));
    let v: Value = serde_json::from_str(&body).expect("JSON body");
    st.seen.lock().unwrap().push((headers, v.clone()));
    if v["to"] == US1 {
        // A gateway that echoes the URL it was called on.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "busy: /send?token=hook-s3cret, key key-s3cret".into(),
        );
    }
    (StatusCode::OK, "{\"ok\": true}".into())
}

#[tokio::test]
async fn webhook_renders_one_body_per_recipient() {
    let st = HookStandIn::default();
    let app = Router::new()
        .route("/send", post(hook_handler))
        .with_state(st.clone());
    let addr = serve(app).await;
    let yaml = format!(
        "type: sms\nprovider: webhook\nto: [\"{CN1}\", \"{CN2}\"]\nurl: \"http://{addr}/send?token=hook-s3cret\"\nheaders: {{X-Api-Key: key-s3cret}}\nbody: '{{\"phone\": \"{{to}}\", \"msg\": \"{{text}}\", \"t\": \"{{title}}\", \"sev\": \"{{severity}}\", \"inc\": \"{{incident}}\"}}'\n"
    );
    let spec = channel_from_yaml("hook", &yaml).unwrap();
    let out = send(&spec, &page()).await;
    assert_eq!(
        out,
        SendOutcome::Sent(format!(
            "sent to 2 numbers: {CN1} (HTTP 200), {CN2} (HTTP 200)"
        ))
    );
    let mut seen = st.seen.lock().unwrap().clone();
    seen.sort_by(|a, b| a.1["phone"].as_str().cmp(&b.1["phone"].as_str()));
    assert_eq!(seen.len(), 2);
    for ((headers, v), to) in seen.iter().zip([CN1, CN2]) {
        assert_eq!(headers["x-api-key"], "key-s3cret");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(
            v,
            &json!({
                "phone": to,
                "msg": "[HIGH/severe] 支付服务回滚 <payments> & \"api\" 'eu' 5xx > 5%\nincident inc-3f2a9c01d4e5\nacknowledge: https://ripcord.example/ack/inc-3f2a9c01d4e5?t=abc",
                "t": "[HIGH/severe] 支付服务回滚 <payments> & \"api\" 'eu' 5xx > 5%",
                "sev": "severe",
                "inc": "inc-3f2a9c01d4e5",
            })
        );
    }
}

#[tokio::test]
async fn webhook_voice_default_body_and_failure_without_secrets() {
    let st = HookStandIn::default();
    let app = Router::new()
        .route("/send", post(hook_handler))
        .with_state(st.clone());
    let addr = serve(app).await;
    let yaml = format!(
        "type: voice\nprovider: webhook\nto: [\"{CN1}\", \"{US1}\"]\nurl: \"http://{addr}/send?token=hook-s3cret\"\nheaders: {{X-Api-Key: key-s3cret}}\n"
    );
    let spec = channel_from_yaml("hook", &yaml).unwrap();
    let out = send(&spec, &page()).await;
    let SendOutcome::Retry { reason, .. } = &out else {
        panic!("{out:?}")
    };
    assert!(
        reason.starts_with(&format!(
            "called 1 of 2 numbers: {CN1} (HTTP 200); failed: {US1}: HTTP 503: busy:"
        )),
        "{reason}"
    );
    assert_no_secrets(&out);
    let seen = st.seen.lock().unwrap().clone();
    let v = &seen.iter().find(|(_, v)| v["to"] == CN1).unwrap().1;
    assert_eq!(v["severity"], "severe");
    assert_eq!(v["incident"], "inc-3f2a9c01d4e5");
    let text = v["text"].as_str().unwrap();
    assert!(text.contains("支付服务回滚") && text.contains("ripcord ack inc-3f2a9c01d4e5"));
    assert!(!text.contains("://"));
}

#[tokio::test]
async fn transport_errors_are_retried_without_the_url() {
    // A port nobody listens on.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let yaml = format!(
        "type: sms\nprovider: webhook\nto: [\"{CN1}\"]\nurl: \"http://{addr}/send?token=hook-s3cret\"\n"
    );
    let spec = channel_from_yaml("hook", &yaml).unwrap();
    let out = send(&spec, &page()).await;
    let SendOutcome::Retry { reason, .. } = &out else {
        panic!("{out:?}")
    };
    assert!(reason.contains("transport error"), "{reason}");
    assert_no_secrets(&out);
}

// ---------------------------------------------------------------------------
// Configuration

fn errors(yaml: &str) -> String {
    match channel_from_yaml("pager", yaml) {
        Ok(spec) => panic!("accepted: {spec:?}"),
        Err(e) => {
            e.0.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        }
    }
}

#[test]
fn config_errors_name_what_is_wrong() {
    let e = errors(
        "type: sms\nprovider: twilio\nto: [\"+86 13800000000\", \"13800000000\", \"+8613800000000\", \"+8613800000000\"]\naccount_sid: AC1\nauth_token: t\nfrom: \"+14155550199\"\n",
    );
    assert!(
        e.contains("`+86 13800000000` is not an E.164 phone number"),
        "{e}"
    );
    assert!(
        e.contains("`13800000000` is not an E.164 phone number"),
        "{e}"
    );
    assert!(e.contains("`+8613800000000` is listed twice"), "{e}");

    let e = errors(
        "type: sms\nprovider: twilio\nto: \"+8613800000000\"\naccount_sid: AC1\nfrom: \"+1\"\n",
    );
    assert!(e.contains("auth_token: is required"), "{e}");
    assert!(e.contains("from: `+1` is not an E.164"), "{e}");

    let e = errors("type: voice\nprovider: nexmo\nto: [\"+8613800000000\"]\napi_key: k\n");
    assert!(
        e.contains("unknown provider `nexmo`; expected twilio, aliyun, webhook"),
        "{e}"
    );
    assert!(
        !e.contains("unknown key"),
        "no noise about the other keys: {e}"
    );

    let e = errors("type: sms\nto: [\"+8613800000000\"]\n");
    assert!(e.contains("provider: is required"), "{e}");

    let e = errors(
        "type: sms\nprovider: twilio\naccount_sid: AC1\nauth_token: t\nfrom: \"+14155550199\"\n",
    );
    assert!(e.contains("to: is required"), "{e}");
    let e = errors(
        "type: sms\nprovider: twilio\nto: []\naccount_sid: AC1\nauth_token: t\nfrom: \"+14155550199\"\n",
    );
    assert!(e.contains("to: needs at least one phone number"), "{e}");

    let e = errors("type: sms\nprovider: aliyun\nto: [\"+8613800000000\"]\naccess_key_id: id\n");
    for key in ["access_key_secret", "sign_name", "template_code"] {
        assert!(e.contains(&format!("{key}: is required")), "{key}: {e}");
    }

    let e = errors(
        "type: sms\nprovider: aliyun\nto: [\"+8613800000000\"]\naccess_key_id: id\naccess_key_secret: {env: RIPCORD_TEST_SURELY_UNSET_VAR}\nsign_name: s\ntemplate_code: c\ntemplate_param: '{content}'\n",
    );
    assert!(
        e.contains(
            "access_key_secret: environment variable `RIPCORD_TEST_SURELY_UNSET_VAR` is not set"
        ),
        "{e}"
    );
    assert!(e.contains("template_param: does not render to JSON"), "{e}");

    let e = errors(
        "type: voice\nprovider: aliyun\nto: [\"+8613800000000\"]\naccess_key_id: id\naccess_key_secret: s\nplay_times: 5\n",
    );
    assert!(e.contains("tts_code: is required"), "{e}");
    assert!(e.contains("play_times: 5 is outside 1..=3"), "{e}");

    let e =
        errors("type: sms\nprovider: webhook\nto: [\"+8613800000000\"]\nbody: '{\"t\": {text}}'\n");
    assert!(e.contains("url: is required"), "{e}");
    assert!(e.contains("body: does not render to JSON"), "{e}");

    // A setting of another provider is a typo, not silently ignored.
    let e = errors(
        "type: sms\nprovider: twilio\nto: [\"+8613800000000\"]\naccount_sid: AC1\nauth_token: t\nfrom: \"+14155550199\"\nsign_name: x\n",
    );
    assert!(e.contains("unknown key `sign_name`"), "{e}");

    let e = errors(
        "type: voice\nprovider: twilio\nto: [\"+8613800000000\"]\naccount_sid: AC1\nauth_token: t\nfrom: \"+14155550199\"\nlanguage: 'en US'\nbase_url: ftp://x\n",
    );
    assert!(e.contains("language: `en US` is not a language tag"), "{e}");
    assert!(
        e.contains("base_url: `ftp://x` is not an http(s) URL"),
        "{e}"
    );
}

#[test]
fn config_errors_never_print_secrets() {
    let e = errors(
        "type: sms\nprovider: webhook\nto: [\"+8613800000000\"]\nurl: not-a-url-s3cret\nheaders: {X-Key: \"bad\\nvalue-s3cret\"}\n",
    );
    assert!(e.contains("url: must be an http:// or https:// URL"), "{e}");
    assert!(
        e.contains("X-Key: the value is not a valid HTTP header value"),
        "{e}"
    );
    assert!(!e.contains("s3cret"), "{e}");
}

#[test]
fn good_configs_parse() {
    for yaml in [
        "type: sms\nprovider: twilio\nto: \"+8613800000000\"\naccount_sid: AC1\nauth_token: {env: PATH}\nfrom: \"+14155550199\"\nrate: 2/min\n",
        "type: voice\nprovider: aliyun\nto: [\"+8613800000000\"]\naccess_key_id: id\naccess_key_secret: s\ntts_code: TTS_1\n",
        "type: sms\nprovider: webhook\nto: [\"+8613800000000\"]\nurl: https://gw.example/send\n",
    ] {
        let spec = channel_from_yaml("pager", yaml).unwrap_or_else(|e| panic!("{e:?}\n{yaml}"));
        let dbg = format!("{spec:?}");
        assert!(!dbg.contains("/usr/bin"), "secrets stay redacted: {dbg}");
    }
}
