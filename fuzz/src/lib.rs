//! Shared checks for ripcord's fuzz targets (see `fuzz/README.md`).
//!
//! Every check panics with a message naming the broken invariant, so
//! libFuzzer reports it as a crash and saves the input.

use ripcord::decode::{self, DecodeError, is_label_name, is_metric_name, limits};
use ripcord::event::{AlertStatus, Event, Labels};
use ripcord::time::{MAX_TS, Ts};

pub mod structured;

fn check_ts(what: &str, ts: Ts) {
    assert!(
        (0..=MAX_TS.0).contains(&ts.0),
        "{what}: timestamp {} ms outside 1970..9999",
        ts.0
    );
}

fn check_labels(what: &str, labels: &Labels<'_>, names_must_be_valid: bool, max_value: usize) {
    assert!(
        labels.len() <= limits::MAX_LABELS,
        "{what}: {} labels, over the limit {}",
        labels.len(),
        limits::MAX_LABELS
    );
    for (i, (k, v)) in labels.iter().enumerate() {
        if names_must_be_valid {
            assert!(is_label_name(k), "{what}: invalid label name {k:?}");
        }
        assert!(
            v.len() <= max_value,
            "{what}: label {k:?} value is {} bytes, over {max_value}",
            v.len()
        );
        assert!(
            labels.iter().take(i).all(|(seen, _)| seen != k),
            "{what}: label {k:?} appears twice"
        );
    }
}

/// The invariants every decoded event satisfies.
pub fn check_event(e: &Event<'_>) {
    match e {
        Event::Sample(s) => {
            assert!(
                is_metric_name(&s.metric),
                "sample: invalid metric name {:?}",
                s.metric
            );
            check_ts("sample", s.ts);
            check_labels("sample", &s.labels, true, limits::MAX_LABEL_VALUE_BYTES);
        }
        Event::Alert(a) => {
            check_ts("alert startsAt", a.starts_at);
            if let Some(end) = a.ends_at {
                check_ts("alert endsAt", end);
            }
            if a.status == AlertStatus::Resolved {
                assert!(a.ends_at.is_some(), "resolved alert without endsAt");
            }
            check_labels("alert", &a.labels, true, limits::MAX_LABEL_VALUE_BYTES);
            check_labels(
                "alert annotations",
                &a.annotations,
                false,
                limits::MAX_ANNOTATION_BYTES,
            );
            assert!(
                a.labels.get("alertname").is_some(),
                "alert without alertname"
            );
            assert!(
                (1..=128).contains(&a.fingerprint.len()),
                "alert fingerprint of {} bytes",
                a.fingerprint.len()
            );
        }
        Event::Progress(p) => {
            check_ts("progress", p.ts);
            check_labels("progress", &p.labels, true, limits::MAX_LABEL_VALUE_BYTES);
            assert!(
                p.labels.get("service").is_some(),
                "progress without service label"
            );
            if let (Some(d), Some(t)) = (p.done, p.total) {
                assert!(d <= t, "progress done {d} > total {t}");
            }
            if let Some(m) = &p.message {
                assert!(
                    m.len() <= limits::MAX_ANNOTATION_BYTES,
                    "progress message too long"
                );
            }
        }
    }
    // The accessors must agree with the variant.
    let _ = e.ts();
    let _ = e.labels();
    let _ = e.kind().as_str();
}

/// `decode` on `data`: total, all-or-nothing, events valid, and
/// `decode_each` sees exactly the same events.
pub fn check_decode(data: &[u8]) -> Result<Vec<Event<'_>>, DecodeError> {
    let mut out = Vec::new();
    let res = decode::decode(data, &mut out);
    let mut each = Vec::new();
    let res_each = decode::decode_each(data, |e| each.push(e));
    assert_eq!(
        res.is_ok(),
        res_each.is_ok(),
        "decode and decode_each disagree on acceptance"
    );
    match res {
        Ok(()) => {
            for e in &out {
                check_event(e);
            }
            assert_events_eq("decode", &out, "decode_each", &each);
            Ok(out)
        }
        Err(e) => {
            assert!(
                out.is_empty(),
                "decode failed ({e}) but appended {} events",
                out.len()
            );
            assert!(each.is_empty(), "decode_each failed ({e}) but called back");
            assert_eq!(
                Some(&e),
                res_each.as_ref().err(),
                "decode and decode_each errors differ"
            );
            let msg = e.to_string();
            assert!(!msg.is_empty());
            let _ = e.reason();
            Err(e)
        }
    }
}

/// Fast path (`decode`) against the slow path alone (`decode_slow`): the
/// same inputs accepted, the same events out; and the RFC 3339 fast path
/// against jiff.
pub fn check_differential(data: &[u8]) {
    // Timestamps: the hand-written RFC 3339 fast path against jiff alone,
    // on every quoted piece of the input (where events keep their `ts`).
    for piece in data.split(|&b| b == b'"') {
        if let Ok(s) = std::str::from_utf8(piece) {
            assert_eq!(
                ripcord::time::Ts::parse_rfc3339(s).ok(),
                ripcord::time::Ts::parse_rfc3339_general(s).ok(),
                "RFC 3339 fast path disagrees with jiff on {s:?}"
            );
        }
    }
    let mut fast = Vec::new();
    let fast_res = decode::decode(data, &mut fast);
    let mut slow = Vec::new();
    let slow_res = decode::decode_slow(data, &mut slow);
    match (&fast_res, &slow_res) {
        (Ok(()), Ok(())) => assert_events_eq("decode", &fast, "decode_slow", &slow),
        (Err(_), Err(_)) => {
            assert!(fast.is_empty(), "decode failed but appended events");
        }
        (Ok(()), Err(e)) => panic!(
            "fast path accepted what the slow path rejects ({e}): {fast:?} from {:?}",
            String::from_utf8_lossy(data)
        ),
        (Err(e), Ok(())) => panic!(
            "slow path accepted what decode rejects ({e}): {slow:?} from {:?}",
            String::from_utf8_lossy(data)
        ),
    }
}

/// Event equality that treats two NaN sample values as equal (bitwise).
pub fn assert_events_eq(an: &str, a: &[Event<'_>], bn: &str, b: &[Event<'_>]) {
    assert_eq!(
        a.len(),
        b.len(),
        "{an} gave {} events, {bn} gave {}",
        a.len(),
        b.len()
    );
    for (x, y) in a.iter().zip(b) {
        match (x, y) {
            (Event::Sample(s), Event::Sample(t)) => {
                assert_eq!(s.metric, t.metric, "{an} vs {bn}: metric");
                assert_eq!(
                    s.value.to_bits(),
                    t.value.to_bits(),
                    "{an} vs {bn}: value {} vs {}",
                    s.value,
                    t.value
                );
                assert_eq!(s.ts, t.ts, "{an} vs {bn}: ts");
                assert_eq!(s.labels, t.labels, "{an} vs {bn}: labels");
            }
            _ => assert_eq!(x, y, "{an} vs {bn}: events differ"),
        }
    }
}

/// An HTTP body in each framing: `decode_body` never panics, is all or
/// nothing, and a body it accepts splits (`body_elements`) into elements
/// that, rejoined as a JSON text sequence, decode to the same events (how a
/// replica sends a body's non-sample part through its pipeline).
pub fn check_http_body(data: &[u8]) {
    use decode::{BodyForm, body_elements, decode_body, sequence_of};
    for form in [BodyForm::Object, BodyForm::Array, BodyForm::Lines] {
        let mut out = Vec::new();
        match decode_body(data, form, &mut out) {
            Err(e) => {
                assert!(out.is_empty(), "{form:?}: failed ({e}) but kept events");
                assert!(!e.to_string().is_empty());
            }
            Ok(()) => {
                assert!(!out.is_empty(), "{form:?}: accepted with no events");
                for e in &out {
                    check_event(e);
                }
                let elements = body_elements(data, form).expect("accepted body splits");
                let rejoined = sequence_of(&elements);
                let mut again = Vec::new();
                decode_body(&rejoined, BodyForm::Lines, &mut again)
                    .expect("the elements of an accepted body decode");
                assert_events_eq("body", &out, "its elements", &again);
            }
        }
    }
}

/// A `POST /api/v1/silences` body: parsing and validation never panic; a
/// silence accepted has matchers that compile, at least one not matching
/// the empty label set, a start no later than its end and a span within
/// the maximum, and its one-line description keeps to one line.
pub fn check_silence_post(data: &[u8]) {
    use ripcord::silence::{Compiled, PostableSilence, SilenceLimits};
    let Ok(post) = serde_json::from_slice::<PostableSilence>(data) else {
        return;
    };
    let limits = SilenceLimits::default();
    let now = Ts(1_795_255_200_000);
    match post.validate(&limits, now) {
        Err(e) => assert!(!e.0.is_empty(), "refused with no reason"),
        Ok(s) => {
            assert!(s.starts_at >= now && s.starts_at < s.ends_at, "{s:?}");
            assert!(s.ends_at.since(s.starts_at) <= limits.max_duration);
            let c = Compiled::new(s.clone(), &limits).expect("accepted matchers compile");
            assert!(!c.matches(&Labels(Vec::new())), "an accepted silence mutes everything");
            let line = ripcord::text::one_line(&s.describe()).into_owned();
            assert!(!line.contains('\n'));
        }
    }
}

/// A drill scenario file: parsing never panics; a scenario accepted plays
/// every line it read, each stamped in order from the start.
pub fn check_drill_scenario(data: &[u8]) {
    use ripcord::drill::Scenario;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(s) = Scenario::parse("fuzz.jsonl", text) else {
        return;
    };
    let start = Ts(1_000_000);
    let mut p = s.player(start);
    let lines = p.due(MAX_TS, Some(MAX_TS));
    assert!(!lines.is_empty(), "an accepted scenario plays something");
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(&l.payload).expect("payload is JSON");
        assert!(v["ts"].as_i64().is_some_and(|t| t >= start.0), "{}", l.payload);
    }
}

/// A console request from arbitrary bytes (NUL-separated: session cookie,
/// a proxy's user header, a bearer token, then the silence form's fields):
/// never a panic; from a peer that is no listed proxy (loopback included),
/// nothing but the real tokens reads or acts (a cookie ripcord did not sign
/// never does); a form the console accepts is one the silences API
/// validates without panic.
pub fn check_console_request(data: &[u8]) {
    use http::{HeaderMap, HeaderValue, header};
    use ripcord::config::Secret;
    use ripcord::console::host::ConsoleConfig;
    use ripcord::console::auth::{Auth, May};
    use ripcord::console::pages::SilenceForm;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\0');
    let mut next = || parts.next().unwrap_or("").to_owned();
    let (cookie, user, bearer) = (next(), next(), next());
    let cfg = ConsoleConfig {
        read_token: Some(Secret::new("read-token")),
        trusted_user_header: Some("x-user".into()),
        trusted_proxies: Vec::new(),
        open_on_loopback: false,
    };
    let auth = Auth::new(Some(Secret::new("api-token")), &cfg, None);
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("ripcord_console={cookie}")) {
        h.insert(header::COOKIE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer {bearer}")) {
        h.insert(header::AUTHORIZATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&user) {
        h.insert("x-user", v);
    }
    let now = Ts(1_795_255_200_000);
    // A remote peer, and a loopback one (a proxy on the host, a
    // port-forward): neither is a listed proxy, so neither names itself.
    for peer in ["10.1.2.3:40000", "127.0.0.1:40000"] {
        let v = auth.viewer(&h, peer.parse().ok(), now);
        match v.may {
            May::Act => assert_eq!(bearer.trim(), "api-token", "{v:?}"),
            May::Read => assert_eq!(bearer.trim(), "read-token", "{v:?}"),
            May::Nothing => {}
        }
        assert!(v.user.is_none(), "{peer} named itself: {v:?}");
    }
    let form = SilenceForm {
        matchers: next(),
        duration: next(),
        until_batch: next(),
        scope: next(),
        comment: next(),
        ..SilenceForm::default()
    };
    if let Ok(post) = ripcord::console::postable(&form, "fuzz", now) {
        let _ = post.validate(&ripcord::silence::SilenceLimits::default(), now);
    }
}

/// A `POST /api/v2/alerts` body (Alertmanager's postable alerts, as
/// Prometheus sends them): the rewrite never panics, and what it accepts is
/// a webhook payload the decoder takes whole or refuses naming a field,
/// its alerts resolved exactly when their end has passed.
pub fn check_postable_alerts(data: &[u8]) {
    use ripcord::event::{AlertStatus, Event};
    let now = Ts(1_795_255_200_000);
    let Ok(payload) = ripcord::decode::webhook_of_postable(data, now) else {
        return;
    };
    let mut events = Vec::new();
    match ripcord::decode::decode(&payload, &mut events) {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok(()) => {
            assert!(!events.is_empty(), "an accepted array has alerts");
            for e in &events {
                let Event::Alert(a) = e else {
                    panic!("not an alert: {e:?}")
                };
                let resolved = a.ends_at.is_some_and(|t| t <= now);
                assert_eq!(a.status == AlertStatus::Resolved, resolved, "{a:?}");
            }
        }
    }
}

/// An alert's `generatorURL`: reading its expression and splitting off the
/// threshold never panics; the query is a piece of the expression, the
/// threshold a finite number.
pub fn check_alert_chart(data: &[u8]) {
    use ripcord::report::promql::{expression_of, plot_of};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let expr = expression_of(text).unwrap_or_else(|_| text.to_owned());
    let plot = plot_of(&expr);
    assert!(expr.contains(plot.query.as_str()), "{expr:?} -> {plot:?}");
    assert!(plot.threshold.is_none_or(f64::is_finite), "{plot:?}");
}

/// The blast radius of a batch incident's approval, as the API (JSON), the
/// CLI and forms (text) give it: parsing never panics, and a scope that
/// resolves names only instances the batch is known to have, at least one,
/// sorted and each once (a typo must never roll back another host).
pub fn check_approval_scope(data: &[u8]) {
    use ripcord::action::ops::Scope;
    use ripcord::decision::{BatchInfo, Member, Severity};
    let Some((form, rest)) = data.split_first() else {
        return;
    };
    let scope = if form % 2 == 0 {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(rest) else {
            return;
        };
        Scope::from_json(&v)
    } else {
        Scope::parse(&String::from_utf8_lossy(rest))
    };
    let Ok(scope) = scope else {
        return;
    };
    let member = |i: &str, recovered: bool| Member {
        instance: i.into(),
        rule: "r".into(),
        incident: format!("inc-{i}").into(),
        severity: Severity::Functional,
        joined: Ts(0),
        recovered,
    };
    let batch = BatchInfo {
        service: "shop".into(),
        batch: "2".into(),
        members: vec![member("i-2", false), member("i-3", true), member("", form % 3 == 0)],
        size: 4,
        outside: Vec::new(),
        outside_seen: 0,
        failed: false,
        about: Vec::new(),
        batch_instances: ["i-1", "i-2", "i-3", "i-4"].map(Box::from).to_vec(),
    };
    let known = ["i-1", "i-2", "i-3", "i-4"];
    if let Ok(approved) = scope.resolve(&batch) {
        assert!(!approved.instances.is_empty(), "{approved:?}");
        assert!(
            approved.instances.iter().all(|i| known.contains(&i.as_str())),
            "an unknown instance approved: {approved:?}"
        );
        assert!(approved.instances.windows(2).all(|w| w[0] < w[1]), "{approved:?}");
        assert!(!approved.describe().contains('\n'));
    }
}
