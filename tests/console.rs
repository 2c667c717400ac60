//! The web console in a real browser: Debian's headless Chromium driven
//! over WebDriver (chromedriver, Debian's `chromium-driver`) by fantoccini,
//! against the real binary. Screenshots at phone and desktop width are kept
//! under `target/test-artefacts/`.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use support::{Capture, Responder, free_port, now_millis, recorded_calls, rfc3339};

/// Beside the fast metric rule: every Alertmanager alert.
const ALERT_RULE: &str = r#"  - name: alerts
    match: {alertname: "*"}
"#;

const TOKEN: &str = "console-test-api-token-0123456789";

/// chromedriver on a free port, stopped on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver is not installed ({e}): run `scripts/setup` (apt-get install chromium-driver chromium)"
                )
            });
        let url = format!("http://127.0.0.1:{port}");
        let ok = support::wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(ok, "chromedriver did not listen on {port}");
        Driver { child, url }
    }

    /// A browser session: desktop (1280x900) or a phone (390x844, touch,
    /// the page's own viewport).
    async fn browser(&self, phone: bool) -> Client {
        let mut opts = json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--hide-scrollbars", "--force-device-scale-factor=1", "--window-size=1280,900"],
        });
        if phone {
            opts["mobileEmulation"] = json!({
                "deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 1.0, "touch": true},
                "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Mobile Safari/537.36",
            });
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), opts);
        ClientBuilder::native()
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a WebDriver session on chromedriver")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The responder with a chat stand-in, one-click links, a recording
/// rollback script and the fast rule; loopback (the browser here) reads
/// without signing in (`open_on_loopback`, off unless configured).
fn start(dir: &Path, chat: &Capture) -> Responder {
    start_with(dir, chat, "  console:\n    open_on_loopback: true\n")
}

/// [`start`] with more under `http:` (indented two spaces).
fn start_with(dir: &Path, chat: &Capture, http_extra: &str) -> Responder {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(
        dir.join("rules/errors.yaml"),
        format!("{}{ALERT_RULE}", support::FAST_ERRORS_RULES),
    )
    .unwrap();
    let record = dir.join("calls.bin");
    let script = dir.join("rollback.sh");
    std::fs::write(
        &script,
        format!("printf '%s\\0' CALL \"$@\" >> '{}'\n", record.display()),
    )
    .unwrap();
    let port = free_port();
    std::fs::write(
        dir.join("ripcord.yaml"),
        format!(
            r#"http:
  token: "{TOKEN}"
  public_url: "http://127.0.0.1:{port}"
{http_extra}channels:
  chat: {{type: webhook, url: "{chat}/chat", rate: 100/s}}
approvals:
  link_secret: "console-test-link-secret"
executors:
  rollback:
    command: {{argv: [/bin/sh, "{script}", "{{instance}}"], timeout: 30s}}
  pause_rollout:
    command: {{argv: [/bin/sh, "{script}", "pause", "{{service}}"], timeout: 30s}}
  resume_rollout:
    command: {{argv: [/bin/sh, "{script}", "resume", "{{service}}"], timeout: 30s}}
"#,
            chat = chat.base(),
            script = script.display()
        ),
    )
    .unwrap();
    Responder::start_on(
        dir,
        &format!("127.0.0.1:{port}"),
        &[
            "--config",
            "ripcord.yaml",
            "--rules",
            "rules",
            "--state",
            "state.db",
            "--no-kafka",
        ],
    )
}

fn rollbacks(dir: &Path, instance: &str) -> usize {
    recorded_calls(&dir.join("calls.bin"))
        .iter()
        .filter(|c| c.first().map(String::as_str) == Some(instance))
        .count()
}

/// The first form's CSRF token on a page.
fn csrf_of(page: &str) -> Option<String> {
    let rest = page.split("name=\"csrf\" value=\"").nth(1)?;
    rest.split('"').next().map(str::to_owned)
}

/// An HTTP client that shows a redirect (303 after a form) as it is.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Clicks what `css` finds.
async fn click(c: &Client, css: &str) {
    let e = c.find(Locator::Css(css)).await;
    e.unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// Types `text` into what `css` finds.
async fn type_into(c: &Client, css: &str, text: &str) {
    let e = c.find(Locator::Css(css)).await;
    e.unwrap_or_else(|e| panic!("{css}: {e}"))
        .send_keys(text)
        .await
        .unwrap();
}

/// Calls of the pause / resume script for `service`.
fn rollout_calls(dir: &Path, verb: &str, service: &str) -> usize {
    recorded_calls(&dir.join("calls.bin"))
        .iter()
        .filter(|c| c.len() == 2 && c[0] == verb && c[1] == service)
        .count()
}

/// Signs `name` in with the API token through the sign-in page.
async fn sign_in(b: &Client, r: &Responder, name: &str) {
    b.goto(&r.url("/signin")).await.unwrap();
    type_into(b, "input[name=by]", name).await;
    type_into(b, "input[name=token]", TOKEN).await;
    click(b, "form.confirm button").await;
    eventually("signed in", Duration::from_secs(10), || async {
        text_of(b, "header .who").await.contains(name)
    })
    .await;
}

/// Posts events (NDJSON) with the API token.
async fn post_events(r: &Responder, events: &[Value]) {
    let body: String = events.iter().map(|e| format!("{e}\n")).collect();
    let resp = reqwest::Client::new()
        .post(r.url("/api/v1/events"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "{}",
        resp.text().await.unwrap_or_default()
    );
}

/// Healthy readings of `service`/`instance` on `tier`, then 40% errors
/// long enough to breach: the incident opens as they are posted.
fn bad_batch(service: &str, instance: &str, tier: &str) -> Vec<Value> {
    let t = now_millis() - 200_000;
    (0..=190)
        .step_by(10)
        .map(|dt| {
            json!({"metric": "http_5xx_ratio", "value": if dt >= 100 { 0.4 } else { 0.01 },
                   "ts": rfc3339(t + dt * 1000),
                   "labels": {"service": service, "instance": instance, "tier": tier}})
        })
        .collect()
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{what}: not within {timeout:?}");
}

/// Polls `f` until it gives a value (30 s at most).
async fn until_some<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{what}: not within 30 s");
}

async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Saves the browser's screenshot as a test artefact and decodes it.
async fn shot(c: &Client, dir: &Path, name: &str) -> support::Shot {
    let png = c.screenshot().await.unwrap();
    let path = dir.join(name);
    std::fs::write(&path, png).unwrap();
    support::keep_artefact(&path, name);
    support::decode_png(&path)
}

/// The approve link the chat got for `incident`.
fn link(chat: &Capture, incident: &str, verb: &str) -> Option<String> {
    let part = format!("/l/{incident}/{verb}/");
    chat.bodies("/chat").iter().find_map(|b| {
        let v: Value = serde_json::from_str(b).ok()?;
        v["links"]
            .as_array()?
            .iter()
            .filter_map(|l| l["url"].as_str())
            .find(|u| u.contains(&part))
            .map(str::to_owned)
    })
}

/// The incident's rollback action rows, as `/api/v1/incidents/{id}` shows them.
fn rollback_rows(shown: &Value) -> Vec<Value> {
    shown["actions"]
        .as_array()
        .expect("the incident lists its actions")
        .iter()
        .filter(|a| a["action"] == "rollback")
        .cloned()
        .collect()
}

async fn api_json(r: &Responder, path: &str) -> Value {
    reqwest::Client::new()
        .get(r.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn incident_of(r: &Responder, instance: &str) -> Option<String> {
    let v = api_json(r, "/api/v1/incidents").await;
    v["incidents"]
        .as_array()?
        .iter()
        .find(|i| i["labels"]["instance"] == instance)
        .and_then(|i| i["id"].as_str())
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_goes_live_the_chart_renders_and_a_phone_approval_rolls_back_once() {
    let dir = tempfile::tempdir().unwrap();
    let chat = Capture::start();
    let r = start(dir.path(), &chat);
    let driver = Driver::start();
    let desk = driver.browser(false).await;

    // The list, open before anything happens, shows the incident by itself.
    desk.goto(&r.url("/")).await.unwrap();
    assert!(text_of(&desk, "main").await.contains("Nothing open"));
    post_events(&r, &bad_batch("pay", "i-pay-1", "medium")).await;
    eventually(
        "the open list shows pay/i-pay-1 without a reload",
        Duration::from_secs(30),
        || async { text_of(&desk, "ul.incidents").await.contains("pay/i-pay-1") },
    )
    .await;
    let card = text_of(&desk, "li.incident").await;
    assert!(
        card.contains("waits for a human to approve the rollback"),
        "{card}"
    );
    assert!(card.contains("MEDIUM") || card.contains("medium"), "{card}");

    // The incident page: summary, value vs threshold, the chart; no
    // buttons for a reader who has not signed in.
    click(&desk, "li.incident a").await;
    desk.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(".chart svg polyline"))
        .await
        .expect("the chart's series");
    let page = text_of(&desk, "main").await;
    assert!(page.contains("value 0.4 vs 0.05"), "{page}");
    assert!(page.contains("Sign in to approve"), "{page}");
    assert!(
        desk.find(Locator::Css("form.act")).await.is_err(),
        "no act form for a reader"
    );
    desk.execute("document.querySelector('.chart').scrollIntoView()", vec![])
        .await
        .unwrap();
    let s = shot(&desk, dir.path(), "console-incident-desktop.png").await;
    assert!(s.width >= 1200, "desktop width {}", s.width);
    assert!(
        s.count_near([0xe4, 0x57, 0x2e]) > 300,
        "the series is drawn"
    );
    assert!(
        s.count_near([0x1b, 0x6c, 0xa8]) > 150,
        "the threshold is drawn"
    );
    let id = incident_of(&r, "i-pay-1").await.unwrap();

    // Nothing acts without auth: no session, a forged CSRF token, another site.
    let http = no_redirects();
    let act = |csrf: &str, cookie: Option<&str>, site: &str| {
        let mut req = http
            .post(r.url(&format!("/incidents/{id}/act")))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("sec-fetch-site", site)
            .body(format!("csrf={csrf}&verb=approve&by=mallory&note=x"));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.send()
    };
    assert_eq!(act("x", None, "same-origin").await.unwrap().status(), 403);
    let signed = http
        .post(r.url("/signin"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("by=eve&token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 303);
    let cookie = signed.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(
        act("forged", Some(&cookie), "same-origin")
            .await
            .unwrap()
            .status(),
        403
    );
    // eve's own token, from her page, posted by another site's form.
    let page = http
        .get(r.url(&format!("/incidents/{id}")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&page).expect("a CSRF token on eve's page");
    assert_eq!(
        act(&csrf, Some(&cookie), "cross-site")
            .await
            .unwrap()
            .status(),
        403
    );
    let wrong = http
        .post(r.url("/signin"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("by=eve&token=guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    // An approval is journaled before its answer: still awaiting and no
    // action row means nothing can run (no waiting to prove it).
    let shown = api_json(&r, &format!("/api/v1/incidents/{id}")).await;
    assert_eq!(shown["approval"]["state"], "awaiting");
    assert_eq!(rollback_rows(&shown).len(), 0, "nothing queued: {shown}");
    assert_eq!(rollbacks(dir.path(), "i-pay-1"), 0, "nothing acted");

    // The phone: the approve link from the chat message.
    let url = link(&chat, &id, "approve").expect("an approve link in the chat");
    let phone = driver.browser(true).await;
    phone.goto(&url).await.unwrap();
    let confirm = text_of(&phone, "main").await;
    for want in [
        "Approve the rollback?",
        "rolls back service pay on instance i-pay-1",
        "value 0.4 vs 0.05",
        "This link works for",
        "Nobody else has acted yet",
    ] {
        assert!(
            confirm.contains(want),
            "`{want}` on the confirmation page:\n{confirm}"
        );
    }
    let s = shot(&phone, dir.path(), "console-approve-phone.png").await;
    assert_eq!(s.width, 390, "phone width");
    let button = phone.find(Locator::Css("button.huge")).await.unwrap();
    let (_, _, bw, bh) = button.rectangle().await.unwrap();
    assert!(bw >= 300.0 && bh >= 56.0, "a big touch target: {bw}x{bh}");
    assert_eq!(rollbacks(dir.path(), "i-pay-1"), 0, "GET acts on nothing");
    type_into(&phone, "input[name=by]", "alice").await;
    button.click().await.unwrap();
    eventually("the rollback ran", Duration::from_secs(20), || async {
        rollbacks(dir.path(), "i-pay-1") == 1
    })
    .await;
    let done = text_of(&phone, "main").await;
    assert!(done.contains("Approved by alice"), "{done}");
    // Used once: opened again, it says what was done and offers no button;
    // a POST anyway is refused and nothing runs again.
    phone.goto(&url).await.unwrap();
    let again = text_of(&phone, "main").await;
    assert!(
        again.contains("Approved by alice") && !again.contains("works for"),
        "{again}"
    );
    assert!(
        phone.find(Locator::Css("button.huge")).await.is_err(),
        "no button on a used link"
    );
    let refused = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("by=bob")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    // One rollback row, finished: nothing is left that could run it again.
    let shown = api_json(&r, &format!("/api/v1/incidents/{id}")).await;
    let rows = rollback_rows(&shown);
    assert!(
        rows.len() == 1 && rows[0]["state"] == "done",
        "one finished rollback: {shown}"
    );
    assert_eq!(rollbacks(dir.path(), "i-pay-1"), 1, "the rollback ran once");

    // The list at phone width says what ripcord did.
    phone.goto(&r.url("/")).await.unwrap();
    let card = text_of(&phone, "li.incident").await;
    assert!(
        card.contains("ripcord: ") && card.contains("rollback done"),
        "{card}"
    );
    let s = shot(&phone, dir.path(), "console-list-phone.png").await;
    assert_eq!(s.width, 390);

    // The desktop page (refreshing itself) shows who approved, and how.
    desk.goto(&r.url(&format!("/incidents/{id}")))
        .await
        .unwrap();
    eventually(
        "the timeline names the approver",
        Duration::from_secs(10),
        || async {
            text_of(&desk, "table.timeline")
                .await
                .contains("approved by alice via link")
        },
    )
    .await;
    phone.close().await.unwrap();
    desk.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_made_in_the_console_mutes_a_breach_and_console_acts_are_on_the_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let chat = Capture::start();
    let r = start(dir.path(), &chat);
    let driver = Driver::start();
    let b = driver.browser(false).await;

    sign_in(&b, &r, "carol").await;

    // A medium incident, approved from its console page.
    post_events(&r, &bad_batch("shop", "i-shop-1", "medium")).await;
    let id = until_some("an incident for i-shop-1", || incident_of(&r, "i-shop-1")).await;
    b.goto(&r.url(&format!("/incidents/{id}"))).await.unwrap();
    b.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("form.act button.primary"))
        .await
        .expect("an approve button for a signed-in user");
    click(&b, "form.act button.primary").await;
    eventually(
        "the console approval rolled back",
        Duration::from_secs(20),
        || async { rollbacks(dir.path(), "i-shop-1") == 1 },
    )
    .await;
    let inc = api_json(&r, &format!("/api/v1/incidents/{id}")).await;
    assert!(
        support::timeline_says(&inc, "approved by carol via console"),
        "{inc}"
    );

    // A silence for service web, scope all, previewed then created.
    b.goto(&r.url("/silences")).await.unwrap();
    type_into(&b, "textarea[name=matchers]", "service=web").await;
    type_into(&b, "input[name=duration]", "1h").await;
    click(&b, "select[name=scope] option[value=all]").await;
    type_into(&b, "input[name=comment]", "kernel patch").await;
    click(&b, "button[value=preview]").await;
    b.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(".preview"))
        .await
        .expect("a preview");
    let preview = text_of(&b, ".preview").await;
    assert!(preview.contains("holds back actions too"), "{preview}");
    let listed: Value = api_json(&r, "/api/v1/silences").await;
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(0),
        "a preview creates nothing: {listed}"
    );
    click(&b, "button[value=create]").await;
    eventually("the silence is listed", Duration::from_secs(10), || async {
        text_of(&b, "ul.silences").await.contains("kernel patch")
    })
    .await;
    let listed: Value = api_json(&r, "/api/v1/silences").await;
    assert_eq!(listed[0]["createdBy"], "carol", "{listed}");
    assert_eq!(listed[0]["scope"], "all", "{listed}");
    let _ = shot(&b, dir.path(), "console-silences-desktop.png").await;

    // A low-tier breach of web: muted (no rollback); shop is not.
    post_events(&r, &bad_batch("web", "i-web-1", "low")).await;
    post_events(&r, &bad_batch("shop", "i-shop-2", "low")).await;
    eventually(
        "shop/i-shop-2 rolled back",
        Duration::from_secs(30),
        || async { rollbacks(dir.path(), "i-shop-2") == 1 },
    )
    .await;
    let web = until_some("web's rollback held back by the silence", || async {
        let id = incident_of(&r, "i-web-1").await?;
        let inc = api_json(&r, &format!("/api/v1/incidents/{id}")).await;
        support::timeline_says(&inc, "held back by silence").then_some(inc)
    })
    .await;
    assert_eq!(rollbacks(dir.path(), "i-web-1"), 0, "{web}");

    // Expired from the console: it moves to the expired list, with who.
    b.goto(&r.url("/silences")).await.unwrap();
    click(&b, "ul.silences form button.danger").await;
    eventually(
        "the silence is expired",
        Duration::from_secs(10),
        || async {
            text_of(&b, "ul.silences.over")
                .await
                .contains("expired by carol")
        },
    )
    .await;
    let listed: Value = api_json(&r, "/api/v1/silences").await;
    assert_eq!(listed[0]["status"]["state"], "expired", "{listed}");
    assert_eq!(listed[0]["expiredBy"], "carol", "{listed}");

    // Sign out: the act form is gone.
    b.goto(&r.url("/")).await.unwrap();
    click(&b, "header .who button").await;
    eventually("signed out", Duration::from_secs(10), || async {
        text_of(&b, "header .who").await.contains("sign in")
    })
    .await;
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_show_batches_and_gate_verdicts_and_a_paused_rollout_resumes_from_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let chat = Capture::start();
    let r = start(dir.path(), &chat);
    let driver = Driver::start();
    let b = driver.browser(false).await;

    let t = now_millis() - 300_000;
    let progress = |dt: i64, service: &str, batch: &str, stage: &str| {
        json!({"kind": "progress", "ts": rfc3339(t + dt * 1000), "stage": stage,
               "labels": {"service": service, "tier": "high", "batch": batch}})
    };
    post_events(
        &r,
        &[
            progress(0, "cart", "1", "batch_started"),
            progress(30, "cart", "1", "batch_done"),
            progress(60, "cart", "2", "batch_started"),
            progress(0, "search", "1", "batch_started"),
        ],
    )
    .await;
    // Reading needs no sign-in on loopback: the upgrades and their gates.
    b.goto(&r.url("/rollouts")).await.unwrap();
    let page = text_of(&b, "main").await;
    assert!(page.contains("cart") && page.contains("search"), "{page}");
    assert!(page.contains("batch_started"), "{page}");
    assert!(
        b.find(Locator::Css(".gate")).await.is_ok(),
        "a gate verdict: {page}"
    );

    // A high-tier breach of cart pauses its rollout.
    post_events(&r, &bad_batch("cart", "i-cart-1", "high")).await;
    eventually("cart's rollout paused", Duration::from_secs(30), || async {
        rollout_calls(dir.path(), "pause", "cart") == 1
    })
    .await;
    eventually(
        "the page shows it paused, by itself",
        Duration::from_secs(20),
        || async { text_of(&b, "main").await.contains("Paused by ripcord") },
    )
    .await;
    let gates = text_of(&b, "article.rollout").await;
    assert!(
        gates.to_lowercase().contains("nogo"),
        "an open high incident is a nogo: {gates}"
    );
    assert!(
        b.find(Locator::Css("form.act")).await.is_err(),
        "no resume button for a reader"
    );

    sign_in(&b, &r, "dave").await;
    b.goto(&r.url("/rollouts")).await.unwrap();
    let _ = shot(&b, dir.path(), "console-rollouts-desktop.png").await;
    click(&b, "form.act button.primary").await;
    eventually("resumed", Duration::from_secs(20), || async {
        rollout_calls(dir.path(), "resume", "cart") == 1
    })
    .await;
    eventually(
        "no longer listed as paused",
        Duration::from_secs(10),
        || async { !text_of(&b, "main").await.contains("Paused by ripcord") },
    )
    .await;

    // The high-tier incident pages on-call: its chain is on the page, and
    // an ack from the console stops it, by name.
    let id = incident_of(&r, "i-cart-1").await.unwrap();
    b.goto(&r.url(&format!("/incidents/{id}"))).await.unwrap();
    let state = text_of(&b, "section.state").await;
    assert!(
        state.contains("Paging: every step sent; nobody has acknowledged yet"),
        "the test's chain is chat at once: {state}"
    );
    assert!(
        text_of(&b, "ol.chain")
            .await
            .contains("Step 1 · at once chat reached"),
        "{state}"
    );
    click(&b, "form.act button.plain").await;
    eventually("acknowledged by dave", Duration::from_secs(10), || async {
        text_of(&b, "section.state")
            .await
            .contains("acknowledged by dave")
    })
    .await;
    let inc = api_json(&r, &format!("/api/v1/incidents/{id}")).await;
    assert_eq!(inc["paging"]["acked_by"], "dave", "{inc}");
    b.close().await.unwrap();
}

/// Who may read and act, over plain HTTP, with loopback reading turned off
/// (so every request here must bring its credential): nothing without one,
/// a read token reads and never acts, a trusted proxy's user acts by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_needs_a_credential_and_acting_a_named_user_when_loopback_is_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let chat = Capture::start();
    let r = start_with(
        dir.path(),
        &chat,
        "  console:\n    read_token: \"console-read-token\"\n    trusted_user_header: X-Auth-Request-User\n    trusted_proxies: [127.0.0.1]\n",
    );
    post_events(&r, &bad_batch("pay", "i-auth-1", "medium")).await;
    let id = until_some("an incident", || incident_of(&r, "i-auth-1")).await;
    let http = no_redirects();
    let get = |path: String, creds: Option<(&'static str, String)>| {
        let mut req = http.get(r.url(&path));
        if let Some((k, v)) = creds {
            req = req.header(k, v);
        }
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let page = format!("/incidents/{id}");
    for path in ["/", page.as_str(), "/rollouts", "/silences"] {
        let (code, body) = get(path.to_owned(), None).await;
        assert_eq!(code, 401, "{path} without a credential");
        assert!(!body.contains("i-auth-1"), "{path} shows nothing: {body}");
    }
    let read = Some(("authorization", "Bearer console-read-token".to_owned()));
    let (code, body) = get(page.clone(), read.clone()).await;
    assert_eq!(code, 200);
    assert!(
        body.contains("i-auth-1") && !body.contains("form method=\"post\" action=\"/incidents/"),
        "{body}"
    );
    let act = |creds: (&'static str, String), csrf: String| {
        http.post(r.url(&format!("/incidents/{id}/act")))
            .header(creds.0, creds.1)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("csrf={csrf}&verb=approve&by=mallory"))
            .send()
    };
    let status = act(read.clone().unwrap(), csrf_of(&body).unwrap_or_default())
        .await
        .unwrap()
        .status();
    assert_eq!(status, 403, "a read token never acts");

    // The proxy's user (the test is the proxy, on loopback) acts by name.
    let frank = ("x-auth-request-user", "frank".to_owned());
    let (code, body) = get(page.clone(), Some(frank.clone())).await;
    assert_eq!(code, 200);
    assert!(body.contains("frank") && body.contains("may act"), "{body}");
    assert_eq!(
        act(frank.clone(), "wrong".into()).await.unwrap().status(),
        403,
        "CSRF"
    );
    assert_eq!(rollbacks(dir.path(), "i-auth-1"), 0);
    let status = act(
        frank.clone(),
        csrf_of(&body).expect("frank may act: his page has forms"),
    )
    .await
    .unwrap()
    .status();
    assert_eq!(status, 303);
    eventually(
        "frank's approval rolled back",
        Duration::from_secs(20),
        || async { rollbacks(dir.path(), "i-auth-1") == 1 },
    )
    .await;
    // An Alertmanager alert's annotations: on the incident page as data
    // (a URL stays text), its summary and description on the phone page.
    let alert = json!({"version": "4", "status": "firing", "receiver": "ripcord", "alerts": [{
        "status": "firing",
        "labels": {"alertname": "ErrorsUp", "service": "pay", "instance": "i-am-1", "tier": "medium", "severity": "warning"},
        "annotations": {"summary": "5xx above 5% after the upgrade of batch 2",
                        "description": "error ratio 7.2% on i-am-1 since 10:02",
                        "runbook_url": "https://runbooks.example/pay-5xx"},
        "startsAt": rfc3339(now_millis() - 5_000), "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "fp-am-1"}]});
    let posted = http
        .post(r.url("/api/v1/alerts"))
        .bearer_auth(TOKEN)
        .json(&alert)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    let am = until_some("the alert's incident", || incident_of(&r, "i-am-1")).await;
    let (code, body) = get(format!("/incidents/{am}"), read.clone()).await;
    assert_eq!(code, 200);
    for want in [
        "<h2>Annotations</h2>",
        "error ratio 7.2% on i-am-1 since 10:02",
        "<td>https://runbooks.example/pay-5xx</td>",
        "<p class=\"summary\">5xx above 5% after the upgrade of batch 2</p>",
    ] {
        assert!(body.contains(want), "`{want}` in {body}");
    }
    assert!(!body.contains("href=\"https://runbooks"), "{body}");
    let link = until_some("the approve link", || async { link(&chat, &am, "approve") }).await;
    let page = http.get(&link).send().await.unwrap().text().await.unwrap();
    assert!(
        page.contains("5xx above 5% after the upgrade of batch 2")
            && page.contains("error ratio 7.2% on i-am-1 since 10:02"),
        "{page}"
    );

    let inc = api_json(&r, &format!("/api/v1/incidents/{id}")).await;
    assert_eq!(
        inc["approval"]["decided_by"], "frank",
        "the proxy's user, not the form's `by`: {inc}"
    );
    assert!(
        support::timeline_says(&inc, "approved by frank via console"),
        "{inc}"
    );
}

/// Landmarks, labels, contrast and tab stops of the page the browser shows,
/// checked in the page (WCAG AA contrast: 4.5:1, 3:1 for large text); the
/// problems found, in words.
const A11Y_JS: &str = r#"
const problems = [];
const n = s => document.querySelectorAll(s).length;
if (n('header') < 1) problems.push('no <header> landmark');
if (n('nav') < 1) problems.push('no <nav> landmark');
if (n('main') !== 1) problems.push(n('main') + ' <main> landmarks');
for (const el of document.querySelectorAll('input, select, textarea, button, progress')) {
  if (el.type === 'hidden') continue;
  const named = (el.labels ? [...el.labels].map(l => l.textContent).join(' ') : '')
    || el.getAttribute('aria-label') || (el.tagName === 'BUTTON' ? el.textContent : '');
  if (!named.trim()) problems.push('unlabelled control: ' + el.outerHTML.slice(0, 100));
}
for (const el of document.querySelectorAll('[tabindex]')) {
  if (+el.getAttribute('tabindex') > 0) problems.push('positive tabindex: ' + el.outerHTML.slice(0, 60));
}
const rgb = s => (s.match(/[\d.]+/g) || ['0', '0', '0', '0']).map(Number);
const lum = c => {
  const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
};
const ratio = (a, b) => { const x = lum(a), y = lum(b); return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05); };
const bg = el => {
  for (let e = el; e; e = e.parentElement) {
    const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.length < 4 || c[3] > 0) return c;
  }
  return [255, 255, 255];
};
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
const seen = new Set();
while (walker.nextNode()) {
  const t = walker.currentNode;
  const el = t.parentElement;
  if (!t.textContent.trim() || seen.has(el)) continue;
  seen.add(el);
  const cs = getComputedStyle(el);
  const r = el.getBoundingClientRect();
  if (cs.visibility === 'hidden' || r.width === 0 || r.right < 0) continue;
  const fg = el.closest('svg') ? rgb(cs.fill) : rgb(cs.color);
  const back = el.closest('svg') ? [255, 255, 255] : bg(el);
  const size = parseFloat(cs.fontSize), bold = +cs.fontWeight >= 700;
  const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
  const got = ratio(fg, back);
  if (got < need) problems.push('contrast ' + got.toFixed(2) + ' < ' + need + ' for "'
    + t.textContent.trim().slice(0, 40) + '" (' + cs.color + ' on rgb(' + back.slice(0, 3) + '))');
}
return problems;
"#;

/// The text boxes of the drawing `arguments[0]` (the incident's chart,
/// /rollouts' timeline) as the browser lays them out: any two that
/// overlap, and the smallest type's height.
const CHART_JS: &str = r#"
const root = arguments[0];
const boxes = [...document.querySelectorAll(root + ' svg text')].map(t => {
  const r = t.getBoundingClientRect();
  return {text: t.textContent, l: r.left, r: r.right, t: r.top, b: r.bottom};
});
const overlaps = [];
for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
  const a = boxes[i], b = boxes[j];
  const w = Math.min(a.r, b.r) - Math.max(a.l, b.l), h = Math.min(a.b, b.b) - Math.max(a.t, b.t);
  if (w > 0.5 && h > 0.5) overlaps.push(a.text + ' / ' + b.text);
}
return {count: boxes.length, overlaps, smallest: Math.min(...boxes.map(b => b.b - b.t)),
        legend: document.querySelectorAll(root + ' ul.legend li').length,
        breach: document.querySelectorAll(root + ' svg rect.breach').length,
        bars: [...document.querySelectorAll(root + ' svg rect.bar')].map(b => b.getAttribute('class')),
        soaks: document.querySelectorAll(root + ' svg rect.soak').length,
        pauses: document.querySelectorAll(root + ' svg line.pause').length};
"#;

/// Whether any button on the page says `text`.
async fn has_button(c: &Client, text: &str) -> bool {
    c.execute(
        "return [...document.querySelectorAll('main button')].some(b => b.textContent.includes(arguments[0]))",
        vec![json!(text)],
    )
    .await
    .unwrap()
        == json!(true)
}

/// The page at this width: no sideways scrolling, the accessibility pass
/// clean, a screenshot kept under `target/console-shots/`.
async fn check_page(c: &Client, width: u32, name: &str) {
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("main"))
        .await
        .expect("a page");
    let wide = c
        .execute("return document.scrollingElement.scrollWidth", vec![])
        .await
        .unwrap();
    assert!(
        wide.as_u64().unwrap() <= u64::from(width),
        "{name} at {width} px scrolls sideways: scrollWidth {wide}"
    );
    let problems = c.execute(A11Y_JS, vec![]).await.unwrap();
    assert_eq!(problems, json!([]), "{name} at {width} px");
    let png = c.screenshot().await.unwrap();
    let dir = support::repo().join("target/console-shots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}-{width}.png")), png).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_reads_at_phone_and_desktop_width_and_offers_only_what_can_still_act() {
    let dir = tempfile::tempdir().unwrap();
    let chat = Capture::start();
    let r = start(dir.path(), &chat);
    let driver = Driver::start();
    let desk = driver.browser(false).await;
    let phone = driver.browser(true).await;

    // cart's rollout: batch 1 (4 of 12) done, batch 2 running; then a
    // high-tier breach of cart (paused, paged) and a medium one of pay
    // (waits for approval), pay silenced for messages.
    let t = now_millis() - 300_000;
    let progress = |dt: i64, batch: &str, stage: &str, done: Option<u64>| {
        let mut e = json!({"kind": "progress", "ts": rfc3339(t + dt * 1000), "stage": stage,
               "labels": {"service": "cart", "tier": "high", "batch": batch}});
        if let Some(d) = done {
            e["done"] = json!(d);
            e["total"] = json!(12);
        }
        e
    };
    post_events(
        &r,
        &[
            progress(0, "1", "batch_started", None),
            progress(30, "1", "batch_done", Some(4)),
            progress(60, "2", "batch_started", None),
        ],
    )
    .await;
    post_events(&r, &bad_batch("cart", "i-cart-9", "high")).await;
    post_events(&r, &bad_batch("pay", "i-pay-9", "medium")).await;
    let high = until_some("cart's incident", || incident_of(&r, "i-cart-9")).await;
    let medium = until_some("pay's incident", || incident_of(&r, "i-pay-9")).await;
    eventually("cart's rollout paused", Duration::from_secs(30), || async {
        rollout_calls(dir.path(), "pause", "cart") == 1
    })
    .await;
    let silence = json!({"matchers": [{"name": "service", "value": "pay", "isRegex": false, "isEqual": true}],
        "startsAt": rfc3339(now_millis()), "endsAt": rfc3339(now_millis() + 3_600_000),
        "createdBy": "erin", "comment": "card vendor maintenance", "scope": "notify"});
    let made = reqwest::Client::new()
        .post(r.url("/api/v1/silences"))
        .bearer_auth(TOKEN)
        .json(&silence)
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success(), "{}", made.status());

    // A reader on a phone: every page fits 390 px and passes the
    // accessibility pass; the header offers to sign in.
    let pages = [
        ("list", "/".to_owned()),
        ("incident-high", format!("/incidents/{high}")),
        ("incident-medium", format!("/incidents/{medium}")),
        ("rollouts", "/rollouts".to_owned()),
        ("silences", "/silences".to_owned()),
    ];
    for (name, path) in &pages {
        phone.goto(&r.url(path)).await.unwrap();
        check_page(&phone, 390, name).await;
    }
    let who = text_of(&phone, "header .who").await;
    assert!(
        who.contains("read only") && who.contains("sign in"),
        "{who}"
    );
    phone
        .find(Locator::Css("header .who a[href='/signin']"))
        .await
        .expect("a sign-in link for a reader");

    // The chart at phone width: every label apart, readable type, the
    // breach shaded, a legend for its colours and marks.
    phone
        .goto(&r.url(&format!("/incidents/{medium}")))
        .await
        .unwrap();
    let chart = phone
        .execute(CHART_JS, vec![json!(".chart")])
        .await
        .unwrap();
    assert!(chart["count"].as_u64().unwrap() >= 8, "{chart}");
    assert_eq!(chart["overlaps"], json!([]), "{chart}");
    assert!(chart["smallest"].as_f64().unwrap() >= 9.0, "{chart}");
    assert!(chart["legend"].as_u64().unwrap() >= 3, "{chart}");
    assert!(chart["breach"].as_u64().unwrap() >= 1, "{chart}");

    // /rollouts' timeline at phone width: cart's batch 1 done then soaked
    // until batch 2 started, batch 2 running, the pause marked; its type
    // readable, no two labels overlapping, a legend.
    phone.goto(&r.url("/rollouts")).await.unwrap();
    let timeline = phone
        .execute(CHART_JS, vec![json!("figure.timeline")])
        .await
        .unwrap();
    assert_eq!(
        timeline["bars"],
        json!(["bar b-done", "bar b-running"]),
        "{timeline}"
    );
    assert_eq!(timeline["soaks"], 1, "{timeline}");
    assert_eq!(timeline["pauses"], 1, "{timeline}");
    assert_eq!(timeline["overlaps"], json!([]), "{timeline}");
    assert!(timeline["smallest"].as_f64().unwrap() >= 9.0, "{timeline}");
    assert!(timeline["legend"].as_u64().unwrap() >= 4, "{timeline}");
    let said = text_of(&phone, "figure.timeline svg").await;
    assert!(
        said.contains("Batch 1")
            && said.contains("Batch 2")
            && said.contains(&format!("for {high}")),
        "{said}"
    );

    // The chain as steps, who was reached when: relative and absolute.
    phone
        .goto(&r.url(&format!("/incidents/{high}")))
        .await
        .unwrap();
    let step = text_of(&phone, "ol.chain li.step").await;
    assert!(
        step.starts_with("Step 1 · at once chat reached ")
            && (step.contains(" ago (") || step.contains("just now ("))
            && step.ends_with(" UTC)"),
        "{step}"
    );

    // Someone who may act: one note box, and each button only while it can act.
    sign_in(&desk, &r, "erin").await;
    desk.goto(&r.url(&format!("/incidents/{medium}")))
        .await
        .unwrap();
    let notes = desk
        .find_all(Locator::Css("main [name=note]"))
        .await
        .unwrap();
    assert_eq!(notes.len(), 1, "one note box on the page");
    assert!(has_button(&desk, "Approve").await && has_button(&desk, "Acknowledge").await);
    click(&desk, "button[value=ack]").await;
    eventually("the ack's outcome", Duration::from_secs(10), || async {
        text_of(&desk, ".outcome")
            .await
            .contains("You acknowledged")
    })
    .await;
    assert!(
        !has_button(&desk, "Acknowledge").await,
        "no acknowledge button on an acknowledged incident"
    );
    assert!(has_button(&desk, "Approve").await, "approval still waits");
    click(&desk, "button[value=approve]").await;
    eventually("the rollback ran", Duration::from_secs(20), || async {
        rollbacks(dir.path(), "i-pay-9") == 1
    })
    .await;
    eventually(
        "the rollback's outcome lands on the page",
        Duration::from_secs(15),
        || async {
            text_of(&desk, "ul.outcomes")
                .await
                .contains("rollback done")
        },
    )
    .await;
    assert!(
        !has_button(&desk, "Approve").await && !has_button(&desk, "Reject").await,
        "no approve or reject once decided"
    );

    desk.goto(&r.url(&format!("/incidents/{high}")))
        .await
        .unwrap();
    click(&desk, "button[value=ack]").await;
    eventually(
        "acknowledged on the chain",
        Duration::from_secs(10),
        || async {
            text_of(&desk, "section.state")
                .await
                .contains("acknowledged by erin")
        },
    )
    .await;
    assert!(!has_button(&desk, "Acknowledge").await);

    // The list's cards say who acknowledged and what silences them.
    desk.goto(&r.url("/")).await.unwrap();
    let cards = text_of(&desk, "main").await;
    assert!(
        cards.contains("ACKED by erin") || cards.contains("acked by erin"),
        "{cards}"
    );
    assert!(cards.contains("card vendor maintenance"), "{cards}");

    // /rollouts: cart as steps.
    desk.goto(&r.url("/rollouts")).await.unwrap();
    let cart = text_of(&desk, "article.rollout").await;
    for want in [
        "Batch 1",
        "4 instances",
        "Batch 2",
        "Paused by ripcord for incident",
        "Gate",
    ] {
        assert!(cart.contains(want), "`{want}` in {cart}");
    }
    assert_eq!(
        desk.find_all(Locator::Css("article.rollout li.batch"))
            .await
            .unwrap()
            .len(),
        2
    );

    // Desktop: the same pages, now with their forms, fit and pass.
    for (name, path) in &pages {
        desk.goto(&r.url(path)).await.unwrap();
        check_page(&desk, 1280, name).await;
    }
    // The silence form's label on one line, its examples below the box.
    desk.goto(&r.url("/silences")).await.unwrap();
    let form = desk
        .execute(
            "const l = document.querySelector('label[for=matchers]').getBoundingClientRect();
             const box = document.getElementById('matchers').getBoundingClientRect();
             const help = document.getElementById('matchers-help').getBoundingClientRect();
             const line = parseFloat(getComputedStyle(document.querySelector('label[for=matchers]')).lineHeight);
             return {lines: Math.round(l.height / line), below: help.top >= box.bottom};",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(form, json!({"lines": 1, "below": true}));

    // Focus order: the skip link first, then on down the page in order
    // (header, the silences, the form), each stop with a visible outline.
    desk.goto(&r.url("/silences")).await.unwrap();
    use fantoccini::actions::{InputSource, KeyAction, KeyActions};
    let tab: char = fantoccini::key::Key::Tab.into();
    for _ in 0..10 {
        desk.perform_actions(
            KeyActions::new("keys".into())
                .then(KeyAction::Down { value: tab })
                .then(KeyAction::Up { value: tab }),
        )
        .await
        .unwrap();
        desk.execute(
            "const a = document.activeElement; (window.stops = window.stops || []).push(a);
             a.dataset.outline = getComputedStyle(a).outlineStyle; return null",
            vec![],
        )
        .await
        .unwrap();
    }
    let order = desk
        .execute(
            "const s = window.stops;
             return {first: s[0].className,
                     in_order: s.every((e, k) => k === 0 || (s[k-1].compareDocumentPosition(e) & Node.DOCUMENT_POSITION_FOLLOWING)),
                     outlined: s.every(e => e.dataset.outline !== 'none')};",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        order,
        json!({"first": "skip", "in_order": true, "outlined": true})
    );
    phone.close().await.unwrap();
    desk.close().await.unwrap();
}
