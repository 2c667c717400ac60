//! The generic webhook channel against a local receiver that echoes what
//! it was sent in its refusal, as some gateways and proxies do: the URL's
//! token and the configured header values are credentials and must never
//! reach an outcome (which the journal and the log keep).

use axum::Router;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;

use ripcord::action::channel::{SendContext, SendOutcome, channel_from_yaml};
use ripcord::action::message::{Kind, Message};
use ripcord::decision::{Severity, Tier};
use ripcord::time::Ts;

const URL_TOKEN: &str = "UrLtOkEn-1234";
const HEADER_KEY: &str = "HeAdErKeY-5678";

/// Answers with the request's path, query and every header value.
async fn echo(uri: Uri, headers: HeaderMap) -> (StatusCode, String) {
    let mut said = format!("unauthorized {uri}");
    for (k, v) in &headers {
        said.push_str(&format!(" {k}={}", v.to_str().unwrap_or("?")));
    }
    (StatusCode::UNAUTHORIZED, said)
}

#[tokio::test]
async fn a_refusal_that_echoes_the_url_and_headers_keeps_them_out_of_the_outcome() {
    let app = Router::new().route("/hook", post(echo));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let yaml = format!(
        "type: webhook\nurl: \"http://{addr}/hook?token={URL_TOKEN}\"\nheaders: {{X-Api-Key: \"{HEADER_KEY}\"}}\n"
    );
    let spec = channel_from_yaml("hook", &yaml).expect("config");
    let http = reqwest::Client::new();
    let ctx = SendContext {
        http: &http,
        now: Ts(1_795_255_200_000),
    };
    let msg = Message::note(
        Kind::Incident,
        Tier::High,
        Severity::Severe,
        Some("inc-hook-1"),
        "t".to_owned(),
        "b".to_owned(),
    );
    let out = spec.channel.send(&ctx, &msg).await;
    let shown = format!("{out:?}");
    assert!(matches!(out, SendOutcome::Reject(_)), "401: {shown}");
    // The receiver did answer with what it was sent.
    assert!(shown.contains("unauthorized"), "{shown}");
    assert!(
        !shown.contains(URL_TOKEN),
        "the URL's token leaked: {shown}"
    );
    assert!(
        !shown.contains(HEADER_KEY),
        "a header's value leaked: {shown}"
    );
}
