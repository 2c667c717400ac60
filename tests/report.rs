//! `ripcord report` against a scripted incident: the real responder (HTTP
//! in, journal, rollback script), then the review checked to the second
//! against the script, and its HTML rendered in headless Chromium with the
//! chart's series and threshold found in the screenshot.

mod support;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Responder, wait_until};

fn post_events(r: &Responder, events: &[Value]) {
    let body: String = events.iter().map(|e| format!("{e}\n")).collect();
    let resp = reqwest::blocking::Client::new()
        .post(r.url("/api/v1/events"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
}

fn ripcord(dir: &Path, args: &[&str]) -> (i32, String, String) {
    support::ripcord_in(dir, args)
}

fn at(t: i64) -> String {
    support::rfc3339(t)
}

/// Seconds since the epoch of the review line's time, written for people
/// (`2026-12-07 10:02:03 UTC`, never RFC 3339 with milliseconds).
fn secs_of(line: &str) -> i64 {
    let ts = line.trim_start_matches("| ").split(" |").next().unwrap();
    let civil = ts
        .strip_suffix(" UTC")
        .unwrap_or_else(|| panic!("`{ts}` is not a time as people read it"));
    jiff::civil::DateTime::from_str(civil)
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .unwrap()
        .timestamp()
        .as_second()
}

/// The time of the review's timeline row `what` (exact match of its text).
fn when(review: &str, what: &str) -> i64 {
    let line = review
        .lines()
        .find(|l| l.ends_with(&format!("| {what} |")))
        .unwrap_or_else(|| panic!("no `{what}` in the timeline:\n{review}"));
    secs_of(line)
}

#[test]
fn the_review_has_the_scripted_timeline_to_the_second_and_its_chart_renders() {
    let dir = support::workdir_with_rules(support::FAST_ERRORS_RULES);
    let stamp = dir.path().join("rollback.stamp");
    let script = dir.path().join("rollback.sh");
    std::fs::write(&script, format!("date +%s.%N >> '{}'\n", stamp.display())).unwrap();
    std::fs::write(
        dir.path().join("ripcord.yaml"),
        format!(
            "executors:\n  rollback:\n    command: {{argv: [/bin/sh, \"{}\", \"{{instance}}\"], timeout: 30s}}\n",
            script.display()
        ),
    )
    .unwrap();
    let r = Responder::start(
        dir.path(),
        &[
            "--config",
            "ripcord.yaml",
            "--rules",
            "rules",
            "--state",
            "state.db",
            "--no-kafka",
        ],
    );
    // The script, in whole seconds, six minutes ago.
    let t = (support::now_millis() / 1000 - 360) * 1000;
    let labels = |extra: Value| {
        let mut l = json!({"service": "web", "tier": "low"});
        for (k, v) in extra.as_object().unwrap() {
            l[k] = v.clone();
        }
        l
    };
    let progress = |dt: i64, batch: &str, stage: &str| {
        json!({"kind": "progress", "ts": at(t + dt * 1000), "stage": stage,
               "labels": labels(json!({"batch": batch}))})
    };
    let sample = |dt: i64, v: f64| {
        json!({"metric": "http_5xx_ratio", "value": v, "ts": at(t + dt * 1000),
               "labels": labels(json!({"instance": "i-web-7"}))})
    };
    let mut events = vec![
        progress(-60, "1", "batch_started"),
        progress(-30, "1", "batch_done"),
        progress(0, "2", "batch_started"),
    ];
    // Healthy, then 40% errors from +120 s (the breach after 60 s more).
    for dt in (0..=240).step_by(10) {
        events.push(sample(dt, if dt >= 120 { 0.4 } else { 0.01 }));
    }
    post_events(&r, &events);
    // The script's line is whole once it ends in a newline (the shell
    // creates the file before `date` writes to it).
    assert!(
        wait_until(Duration::from_secs(30), || std::fs::read_to_string(&stamp)
            .is_ok_and(|s| s.ends_with('\n'))),
        "no rollback:\n{}",
        r.stderr.tail(20)
    );
    let rolled_back = std::fs::read_to_string(&stamp).unwrap();
    let started: f64 = rolled_back.trim().parse().unwrap();
    // Recovered at +250 s.
    post_events(&r, &[sample(250, 0.01), sample(260, 0.0)]);
    let id = {
        let mut id = String::new();
        let ok = wait_until(Duration::from_secs(30), || {
            let v: Value = reqwest::blocking::get(r.url("/api/v1/incidents?state=resolved"))
                .unwrap()
                .json()
                .unwrap();
            if let Some(i) = v["incidents"].as_array().and_then(|a| a.first()) {
                id = i["id"].as_str().unwrap().to_owned();
                true
            } else {
                false
            }
        });
        assert!(ok, "the incident never resolved:\n{}", r.stderr.tail(20));
        id
    };
    // The rollback's outcome is journaled a moment after its script ran:
    // wait for it (the review reads it).
    let rollback_done = wait_until(Duration::from_secs(30), || {
        let v: Value = reqwest::blocking::get(r.url(&format!("/api/v1/incidents/{id}")))
            .unwrap()
            .json()
            .unwrap();
        v["actions"].as_array().is_some_and(|a| {
            a.iter()
                .any(|a| a["action"] == "rollback" && a["state"] == "done")
        })
    });
    assert!(rollback_done, "the rollback's outcome was never journaled");

    let (code, review, err) = ripcord(
        dir.path(),
        &[
            "report",
            &id,
            "--config",
            "ripcord.yaml",
            "--state",
            "state.db",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let s = t / 1000;
    assert_eq!(when(&review, "upgrade started"), s - 60, "{review}");
    assert_eq!(when(&review, "batch 2 started"), s);
    assert_eq!(
        when(&review, "first anomalous reading \\(errors\\)"),
        s + 120
    );
    assert_eq!(
        when(
            &review,
            "breach: incident opened \\(errors, low tier, functional\\)"
        ),
        s + 180
    );
    assert_eq!(when(&review, "decided: rollback"), s + 180);
    assert!(
        (when(&review, "rollback started") - started as i64).abs() <= 1,
        "{review}"
    );
    assert!(when(&review, "rollback done") >= when(&review, "rollback started"));
    assert_eq!(when(&review, "recovered: incident resolved"), s + 250);
    for row in [
        "| to detect | first anomalous reading | breach | 1m |",
        "| to recover | first anomalous reading | recovered | 2m10s |",
    ] {
        assert!(review.contains(row), "{row} in\n{review}");
    }
    // The fault was back-dated six minutes: within every budget.
    assert!(
        review.contains("| rollback started within 30m of the fault |"),
        "{review}"
    );
    assert!(review.contains("Every budget met."), "{review}");
    assert!(review.contains("## Root cause") && review.contains("## Improvements"));

    // The quarter's list has it, with its durations.
    let (code, csv, err) = ripcord(
        dir.path(),
        &[
            "incidents",
            "--since",
            "1h",
            "--format",
            "csv",
            "--config",
            "ripcord.yaml",
            "--state",
            "state.db",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[0].starts_with("incident,opened,tier"), "{csv}");
    assert!(
        lines[1].starts_with(&format!("{id},")) && lines[1].contains(",1m,"),
        "{csv}"
    );

    // The HTML, in a real browser.
    let html = dir.path().join("review.html");
    let (code, _, err) = ripcord(
        dir.path(),
        &[
            "report",
            &id,
            "--format",
            "html",
            "--out",
            "review.html",
            "--config",
            "ripcord.yaml",
            "--state",
            "state.db",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(!page.contains("<script"), "no script in the review");
    let shot = support::screenshot(&html, dir.path(), 1200, 900);
    let series = shot.count_near([0xe4, 0x57, 0x2e]);
    let threshold = shot.count_near([0x1b, 0x6c, 0xa8]);
    assert!(series > 500, "the series is drawn: {series} pixels");
    assert!(
        threshold > 200,
        "the threshold is drawn: {threshold} pixels"
    );
    support::keep_artefact(&shot.path, "report-desktop.png");
}
