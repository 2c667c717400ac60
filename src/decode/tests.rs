use super::*;
use crate::event::{AlertStatus, Stage};

fn one(input: &str) -> Result<Event<'_>, DecodeError> {
    let mut out = Vec::new();
    decode(input.as_bytes(), &mut out)?;
    assert_eq!(out.len(), 1, "expected one event from {input}");
    Ok(out.pop().unwrap())
}

fn err(input: &str) -> String {
    let mut out = Vec::new();
    let e = decode(input.as_bytes(), &mut out).expect_err(input);
    assert!(out.is_empty(), "a rejected input appended events");
    e.to_string()
}

#[test]
fn native_sample_fast_path() {
    let e = one(r#"{"metric":"http_5xx_ratio","value":0.07,"ts":"2026-11-21T10:00:00Z","labels":{"service":"checkout","instance":"i-0a1","tier":"low","batch":"2"}}"#).unwrap();
    let Event::Sample(s) = e else { panic!() };
    assert_eq!(s.metric, "http_5xx_ratio");
    assert_eq!(s.value, 0.07);
    assert_eq!(s.ts, Ts::parse_rfc3339("2026-11-21T10:00:00Z").unwrap());
    assert_eq!(s.labels.get("instance"), Some("i-0a1"));
    assert_eq!(s.labels.len(), 4);
}

#[test]
fn native_sample_with_millis_and_escapes() {
    let e =
        one(r#"{"labels":{"service":"a\"b"},"ts":1795255200000,"metric":"up","value":1}"#).unwrap();
    let Event::Sample(s) = e else { panic!() };
    assert_eq!(s.ts.0, 1_795_255_200_000);
    assert_eq!(s.labels.get("service"), Some("a\"b"));
    assert_eq!(s.value, 1.0);
}

#[test]
fn native_errors_name_the_field() {
    let base = r#""metric":"up","value":1,"ts":"2026-11-21T10:00:00Z""#;
    assert_eq!(
        err(&format!(r#"{{{base},"labels":{{"batch":2}}}}"#)),
        "field `labels.batch` expected a string, got integer 2"
    );
    assert_eq!(
        err(r#"{"metric":"up","value":"1","ts":"2026-11-21T10:00:00Z"}"#),
        "field `value` expected a number, got string \"1\""
    );
    assert!(
        err(r#"{"metric":"up","value":1,"ts":"yesterday"}"#)
            .starts_with("field `ts` `yesterday` is not an RFC 3339")
    );
    assert_eq!(err(r#"{"metric":"up","value":1}"#), "field `ts` is missing");
    assert_eq!(
        err(&format!(r#"{{{base},"lables":{{}}}}"#)),
        "field `lables` unknown field for a metric sample"
    );
    assert!(
        err(r#"{"metric":"9bad","value":1,"ts":0}"#)
            .starts_with("field `metric` is not a valid metric name")
    );
    assert!(
        err(&format!(r#"{{{base},"labels":{{"a-b":"x"}}}}"#))
            .starts_with("field `labels.a-b` is not a valid label name")
    );
    assert_eq!(
        err(&format!(r#"{{{base},"labels":{{"a":"x","a":"y"}}}}"#)),
        "field `labels.a` appears more than once"
    );
    assert_eq!(
        err(r#"{"metric":"up","metric":"up","value":1,"ts":0}"#),
        "field `metric` appears more than once"
    );
    assert!(err(r#"{"metric":"up","value":1,"ts":-5}"#).contains("between 1970 and 9999"));
    let long = "x".repeat(2000);
    assert!(
        err(&format!(r#"{{{base},"labels":{{"a":"{long}"}}}}"#))
            .contains("over the 1024-byte limit")
    );
}

#[test]
fn syntax_and_shape_errors() {
    assert!(err(r#"{"metric":"up","#).starts_with("not valid JSON"));
    assert!(err("[1,2]").starts_with("field `(event)` expected an object"));
    assert!(err("{}").starts_with("not a recognised event"));
    assert!(err(r#"{"foo":1}"#).starts_with("not a recognised event"));
    assert!(err("").starts_with("not valid JSON"));
}

#[test]
fn adapter_sample() {
    let e = one(r#"{"timestamp":"2026-11-21T10:00:00Z","value":"0.3","name":"cpu_usage_ratio","labels":{"__name__":"cpu_usage_ratio","instance":"i-1","service":"web"}}"#).unwrap();
    let Event::Sample(s) = e else { panic!() };
    assert_eq!(s.metric, "cpu_usage_ratio");
    assert_eq!(s.value, 0.3);
    assert_eq!(s.labels.get("__name__"), None);
    assert_eq!(s.labels.get("instance"), Some("i-1"));
    for (text, check) in [
        ("NaN", f64::is_nan as fn(f64) -> bool),
        ("+Inf", |v: f64| v == f64::INFINITY),
        ("-Inf", |v: f64| v == f64::NEG_INFINITY),
        ("1e3", |v: f64| v == 1000.0),
    ] {
        let line = format!(
            r#"{{"timestamp":"2026-11-21T10:00:00Z","value":"{text}","name":"x","labels":{{}}}}"#
        );
        let Event::Sample(s) = one(&line).unwrap() else {
            panic!()
        };
        assert!(check(s.value), "{text}");
    }
    assert_eq!(
        err(r#"{"timestamp":"2026-11-21T10:00:00Z","value":"fast","name":"x","labels":{}}"#),
        "field `value` \"fast\" is not a number"
    );
    assert_eq!(
        err(r#"{"timestamp":"2026-11-21T10:00:00Z","value":0.3,"name":"x"}"#),
        "field `value` expected a string, got number 0.3"
    );
}

#[test]
fn progress_event() {
    let e = one(r#"{"kind":"progress","ts":"2026-11-21T10:00:00Z","labels":{"service":"web","batch":"1"},"stage":"batch_done","done":10,"total":100,"message":"10 upgraded"}"#).unwrap();
    let Event::Progress(p) = e else { panic!() };
    assert_eq!(p.stage, Stage::BatchDone);
    assert_eq!((p.done, p.total), (Some(10), Some(100)));
    assert_eq!(p.message.as_deref(), Some("10 upgraded"));
    assert!(
        err(r#"{"kind":"progress","ts":0,"labels":{"service":"web"},"stage":"halfway"}"#)
            .starts_with("field `stage` is \"halfway\"")
    );
    assert!(
        err(r#"{"kind":"deploy","ts":0,"labels":{"service":"web"},"stage":"completed"}"#)
            .starts_with("field `kind`")
    );
    assert_eq!(
        err(r#"{"kind":"progress","ts":0,"labels":{},"stage":"completed"}"#),
        "field `labels.service` is missing"
    );
    assert!(err(r#"{"kind":"progress","ts":0,"labels":{"service":"w"},"stage":"completed","done":5,"total":2}"#).starts_with("field `done`"));
}

const AM: &str = r#"{"receiver":"ripcord","status":"firing","alerts":[
 {"status":"firing","labels":{"alertname":"HighErrorRate","service":"checkout","severity":"critical"},"annotations":{"summary":"5xx over 5%"},"startsAt":"2026-11-21T10:00:00.123456789Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prom/graph","fingerprint":"c4d9b2a1e0f3a7b6"},
 {"status":"resolved","labels":{"alertname":"DiskSlow","instance":"i-9"},"annotations":{},"startsAt":"2026-11-21T09:00:00Z","endsAt":"2026-11-21T09:30:00Z","generatorURL":"","fingerprint":"aa"}
],"groupLabels":{"alertname":"HighErrorRate"},"commonLabels":{},"commonAnnotations":{},"externalURL":"http://am:9093","version":"4","groupKey":"{}:{alertname=\"HighErrorRate\"}","truncatedAlerts":0,"newFieldFromTheFuture":true}"#;

#[test]
fn alertmanager_payload() {
    let mut out = Vec::new();
    decode(AM.as_bytes(), &mut out).unwrap();
    assert_eq!(out.len(), 2);
    let Event::Alert(a) = &out[0] else { panic!() };
    assert_eq!(a.status, AlertStatus::Firing);
    assert_eq!(a.alertname(), "HighErrorRate");
    assert_eq!(a.fingerprint, "c4d9b2a1e0f3a7b6");
    assert_eq!(a.ends_at, None);
    assert_eq!(a.starts_at.to_string(), "2026-11-21T10:00:00.123Z");
    assert_eq!(a.annotations.get("summary"), Some("5xx over 5%"));
    let Event::Alert(b) = &out[1] else { panic!() };
    assert_eq!(b.status, AlertStatus::Resolved);
    assert_eq!(b.ts().to_string(), "2026-11-21T09:30:00Z");
}

#[test]
fn alertmanager_errors_are_all_or_nothing() {
    let bad = AM.replace(r#""startsAt":"2026-11-21T09:00:00Z""#, r#""startsAt":17"#);
    let bad = bad.replace(r#""startsAt":17"#, r#""startsAt":true"#);
    assert!(err(&bad).starts_with("field `alerts[1].startsAt` expected an RFC 3339"));
    let bad = AM.replace(r#""version":"4""#, r#""version":"3""#);
    assert!(err(&bad).starts_with("field `version` is \"3\""));
    let bad = AM.replace(r#""alertname":"DiskSlow","#, "");
    assert_eq!(err(&bad), "field `alerts[1].labels.alertname` is missing");
    let bad = AM.replace(
        r#""endsAt":"2026-11-21T09:30:00Z""#,
        r#""endsAt":"0001-01-01T00:00:00Z""#,
    );
    assert!(err(&bad).starts_with("field `alerts[1].endsAt` is missing"));
}

#[test]
fn missing_fingerprint_is_derived_from_labels() {
    let a = r#"{"version":"4","alerts":[{"status":"firing","labels":{"alertname":"X","b":"2","a":"1"},"startsAt":"2026-11-21T10:00:00Z"}]}"#;
    let b = r#"{"version":"4","alerts":[{"status":"firing","labels":{"a":"1","alertname":"X","b":"2"},"startsAt":"2026-11-21T10:00:00Z"}]}"#;
    let fp = |s: &str| match one(s).unwrap() {
        Event::Alert(a) => a.fingerprint.into_owned(),
        _ => panic!(),
    };
    assert_eq!(fp(a), fp(b));
    assert_eq!(fp(a).len(), 16);
}
