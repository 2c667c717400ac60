//! `ripcord run` consuming from Apache Kafka over TLS and over SASL_SSL
//! with SCRAM, for real: the broker `scripts/with-kafka` starts has a TLS
//! listener (a certificate from a private CA made by the `openssl` CLI) and
//! a SASL_SSL listener that knows one SCRAM user. Also compressed batches
//! (zstd, lz4, ...) through the plaintext listener, which exercise the
//! codecs librdkafka was built with.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use serde_json::Value;

use support::*;

/// A CA that did not sign the broker's certificate, with the same subject
/// as the one that did: only the key tells them apart, as with a CA that
/// was rotated or belongs to another environment.
fn other_ca() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "other-ca", "ripcord test Kafka CA");
    let path = dir.path().join("other-ca.pem");
    (dir, path)
}

/// librdkafka client properties for TLS, trusting `ca` only.
fn tls(ca: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("security.protocol", "ssl".to_owned()),
        ("ssl.ca.location", path_str(ca)),
    ]
}

/// librdkafka client properties for SASL_SSL with SCRAM (`mechanism`),
/// as the broker's SCRAM user.
fn sasl_ssl(k: &Kafka, mechanism: &str, password: &str) -> Vec<(&'static str, String)> {
    vec![
        ("security.protocol", "sasl_ssl".to_owned()),
        ("ssl.ca.location", path_str(&k.ca)),
        ("sasl.mechanism", mechanism.to_owned()),
        ("sasl.username", k.scram_user.clone()),
        ("sasl.password", password.to_owned()),
    ]
}

/// `props` as the `(&str, &str)` pairs the support helpers take.
fn borrowed<'a>(props: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    props.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// ripcord's config: `extra` lines go under `kafka.properties`.
fn config(dir: &Path, topic: &str, group: &str, extra: &[(&'static str, String)]) -> String {
    let mut props = String::new();
    for (k, v) in extra {
        props.push_str(&format!("    {k}: \"{v}\"\n"));
    }
    let cfg = format!(
        r#"
rules: rules
kafka:
  topics: [{topic}]
  group: {group}
  dead_letter_topic: {topic}-dead
  properties:
    auto.offset.reset: earliest
{props}"#
    );
    let path = dir.join("ripcord.yaml");
    std::fs::write(&path, cfg).unwrap();
    path_str(&path)
}

/// One instance goes down for 2.5 s of event time, then comes back: the
/// rules decide rollback, notify, resolve.
fn incident(base: i64, service: &str, instance: &str) -> Vec<(String, String)> {
    [
        (0, 1.0),
        (500, 0.0),
        (1000, 0.0),
        (1500, 0.0),
        (2600, 0.0),
        (3000, 1.0),
    ]
    .into_iter()
    .map(|(t, v)| {
        (
            service.to_owned(),
            sample("up", v, base + t, service, instance, "low"),
        )
    })
    .collect()
}

fn actions(decisions: &[Value]) -> Vec<String> {
    decisions
        .iter()
        .map(|d| d["action"].as_str().unwrap().to_owned())
        .collect()
}

/// Events produced over TLS come out as decisions; SIGTERM ends it cleanly.
/// The TLS listener advertises itself, so after bootstrap every connection
/// (metadata, group coordinator, fetch) is TLS too: a ripcord that ignored
/// `security.protocol` would decide nothing.
#[test]
fn tls_events_in_decisions_out_and_clean_shutdown() {
    let kafka = Kafka::get();
    let topic = &unique("ev-tls");
    kafka.create_topic(topic, 1);
    kafka.create_topic(&format!("{topic}-dead"), 1);
    let dir = workdir_with_rules(DOWN_RULES);
    let cfg = config(dir.path(), topic, &unique("tls-ok"), &tls(&kafka.ca));
    let r = Responder::start(
        dir.path(),
        &[
            "--brokers",
            &kafka.tls,
            "--config",
            &cfg,
            "--state",
            "state.db",
        ],
    );
    r.wait_warmed(Duration::from_secs(45));
    let props = tls(&kafka.ca);
    produce_with(
        &kafka.tls,
        topic,
        &borrowed(&props),
        &incident(now_millis(), "svc", "i-1"),
    );
    assert!(
        wait_until(Duration::from_secs(30), || r
            .decisions()
            .iter()
            .any(|d| d["action"] == "resolve")),
        "no resolve decision over TLS from {}:\n{}",
        kafka.name(),
        r.stderr.text(),
    );
    let decisions = r.decisions();
    assert_eq!(actions(&decisions), ["rollback", "notify", "resolve"]);
    assert!(
        decisions.iter().all(|d| d["labels"]["instance"] == "i-1"),
        "{decisions:?}"
    );
    let (status, took, _, err) = r.terminate(Duration::from_secs(20));
    // Shown only if the test fails.
    println!("--- ripcord's log:\n{}", err.text());
    assert!(status.success(), "{}", err.text());
    assert!(
        took < Duration::from_secs(11),
        "shutdown took {took:?}, over the 10 s grace:\n{}",
        err.text()
    );
}

/// A broker whose certificate the configured CA did not sign: ripcord
/// consumes nothing, and its log says why (an operator must be able to
/// tell a CA mix-up from a broker outage), at a level that is shown by
/// default. It still shuts down promptly.
#[test]
fn tls_with_the_wrong_ca_consumes_nothing_and_says_why() {
    let kafka = Kafka::get();
    let (_other_dir, other_ca) = other_ca();
    let topic = &unique("ev-tls-bad-ca");
    kafka.create_topic(topic, 1);
    kafka.create_topic(&format!("{topic}-dead"), 1);
    // Something to consume, produced with the right CA: ripcord reads from
    // the earliest offset, so it would decide on these if it got in.
    let props = tls(&kafka.ca);
    produce_with(
        &kafka.tls,
        topic,
        &borrowed(&props),
        &incident(now_millis(), "svc", "i-1"),
    );
    let dir = workdir_with_rules(DOWN_RULES);
    let cfg = config(dir.path(), topic, &unique("tls-bad-ca"), &tls(&other_ca));
    let started = Instant::now();
    let r = Responder::start(
        dir.path(),
        &[
            "--brokers",
            &kafka.tls,
            "--config",
            &cfg,
            "--state",
            "state.db",
        ],
    );
    let said = wait_until(Duration::from_secs(30), || {
        r.stderr.text().contains("certificate verify failed")
    });
    assert!(
        said,
        "no certificate verification failure in ripcord's log within 30 s:\n{}",
        r.stderr.text(),
    );
    // Shown at a level an operator sees with the default filter.
    let log = r.stderr.all();
    let line = log
        .iter()
        .find(|l| l.contains("certificate verify failed"))
        .unwrap();
    assert!(
        line.contains("ERROR") || line.contains("WARN"),
        "the verification failure is logged below warning: {line}"
    );
    assert!(
        line.contains("ssl.ca.location"),
        "the log does not point at the CA setting: {line}"
    );
    // The right CA consumes this stream in about a second (test above);
    // give the wrong one several times that before concluding.
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        r.decisions().is_empty(),
        "decided without a verified broker: {:?}",
        r.decisions()
    );
    let log = r.stderr.text();
    assert!(
        !log.contains("partitions assigned"),
        "joined the group without a verified broker:\n{log}"
    );
    // librdkafka retries about every 50 ms and reports "all brokers are
    // down" each time; the log must not turn that into a flood that buries
    // the cause (allowed: about one line a second, all clients together).
    let downs = log.matches("brokers are down").count();
    let secs = started.elapsed().as_secs();
    assert!(
        downs as u64 <= 5 + secs,
        "{downs} \"brokers are down\" lines in {secs} s:\n{log}"
    );
    let (status, took, out, err) = r.terminate(Duration::from_secs(20));
    // Shown only if the test fails.
    println!("--- ripcord's log:\n{}", err.text());
    assert!(status.success(), "{}", err.text());
    assert!(
        took < Duration::from_secs(11),
        "shutdown took {took:?}, over the 10 s grace:\n{}",
        err.text()
    );
    assert!(
        out.all().iter().all(|l| !l.starts_with('{')),
        "decisions printed late: {}",
        out.text()
    );
}

/// A restart, over the transport `client` configures: the poison message's
/// dead-letter copy must reach the dead-letter topic, and the restarted
/// responder must re-read the recent history to warm its windows. Both use
/// librdkafka clients of their own besides the consumer, which need the
/// `kafka.properties` connection settings (TLS here) just as much.
fn restart_warms_up_and_dead_letters(
    brokers: &str,
    topic: &str,
    create_topic: impl Fn(&str),
    client: &[(&'static str, String)],
) {
    let dead_topic = format!("{topic}-dead");
    create_topic(topic);
    create_topic(&dead_topic);
    let dir = workdir_with_rules(DOWN_RULES);
    let cfg = config(dir.path(), topic, &unique("restart"), client);
    let args = [
        "--brokers",
        brokers,
        "--config",
        &cfg,
        "--state",
        "state.db",
    ];
    let props = borrowed(client);
    let events = incident(now_millis(), "svc", "i-1");
    // What goes wrong on the side clients, all reported at the end.
    let mut problems = Vec::new();

    let a = Responder::start(dir.path(), &args);
    a.wait_warmed(Duration::from_secs(45));
    // The start of the incident (not enough to decide on) and a poison message.
    let mut first = events[..3].to_vec();
    first.push(("svc".to_owned(), "{\"metric\":".to_owned()));
    produce_with(brokers, topic, &props, &first);
    let processed = r#"ripcord_events_total{source="kafka",outcome="processed"} 3"#;
    assert!(
        wait_until(Duration::from_secs(30), || a
            .metrics()
            .lines()
            .any(|l| l == processed)
            && a.stderr.text().contains("poison message skipped")),
        "the first run did not consume the first events:\n{}",
        a.stderr.text()
    );
    let (status, _, a_out, a_err) = a.terminate(Duration::from_secs(20));
    assert!(status.success(), "{}", a_err.text());
    let dead = consume_all_with(brokers, &dead_topic, &props, 1, Duration::from_secs(20));
    if dead
        .iter()
        .map(|(payload, _)| payload.as_str())
        .ne(["{\"metric\":"])
    {
        problems.push(format!(
            "the dead-letter topic holds {dead:?}, not the poison message"
        ));
    }

    let b = Responder::start(dir.path(), &args);
    b.wait_warmed(Duration::from_secs(45));
    let warmed = b
        .stderr
        .all()
        .into_iter()
        .find(|l| l.contains("partition warmed"))
        .unwrap();
    // Offsets 0-3 before the journaled position: three events and the poison.
    if !warmed.contains("events=3") {
        problems.push(format!("the restart did not re-read its history: {warmed}"));
    }
    produce_with(brokers, topic, &props, &events[3..]);
    assert!(
        wait_until(Duration::from_secs(30), || b
            .decisions()
            .iter()
            .any(|d| d["action"] == "resolve")),
        "no resolve after the restart:\n{}",
        b.stderr.text()
    );
    let (status, _, b_out, b_err) = b.terminate(Duration::from_secs(20));
    // Shown only if the test fails.
    println!("--- first run's log:\n{}", a_err.text());
    println!("--- second run's log:\n{}", b_err.text());
    assert!(status.success(), "{}", b_err.text());
    let decided: Vec<String> = [a_out, b_out]
        .iter()
        .flat_map(|out| out.all())
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let d: Value = serde_json::from_str(&l).unwrap();
            d["action"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(decided, ["rollback", "notify", "resolve"]);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The control for the TLS case below: the same scenario in clear.
#[test]
fn plain_restart_warms_up_and_dead_letters() {
    let k = Kafka::get();
    restart_warms_up_and_dead_letters(
        &k.brokers,
        &unique("ev-plain-restart"),
        |n| k.create_topic(n, 1),
        &[],
    );
}

/// Over TLS, the warm-up reader and the dead-letter producer must use TLS
/// too.
#[test]
fn tls_restart_warms_up_and_dead_letters() {
    let k = Kafka::get();
    restart_warms_up_and_dead_letters(
        &k.tls,
        &unique("ev-tls-restart"),
        |n| k.create_topic(n, 1),
        &tls(&k.ca),
    );
}

/// Over SASL_SSL with SCRAM-SHA-512: the consumer, the warm-up reader and
/// the dead-letter producer all authenticate (the listener takes nothing
/// else), and the password comes from the environment, never the file.
#[test]
fn sasl_ssl_scram_restart_warms_up_and_dead_letters() {
    let k = Kafka::get();
    restart_warms_up_and_dead_letters(
        &k.sasl_ssl,
        &unique("ev-scram-restart"),
        |n| k.create_topic(n, 1),
        &sasl_ssl(&k, "SCRAM-SHA-512", &k.scram_password),
    );
}

/// A wrong SCRAM password: ripcord consumes nothing, says the broker
/// refused its credentials at a level shown by default, never prints the
/// password, and still shuts down promptly.
#[test]
fn sasl_ssl_with_a_wrong_password_consumes_nothing_and_says_why() {
    let k = Kafka::get();
    let topic = &unique("ev-scram-bad");
    k.create_topic(topic, 1);
    k.create_topic(&format!("{topic}-dead"), 1);
    let good = sasl_ssl(&k, "SCRAM-SHA-256", &k.scram_password);
    produce_with(
        &k.sasl_ssl,
        topic,
        &borrowed(&good),
        &incident(now_millis(), "svc", "i-1"),
    );
    let wrong = "not-the-password-4f1d";
    let dir = workdir_with_rules(DOWN_RULES);
    let cfg = config(
        dir.path(),
        topic,
        &unique("scram-bad"),
        &sasl_ssl(&k, "SCRAM-SHA-256", wrong),
    );
    let r = Responder::start(
        dir.path(),
        &[
            "--brokers",
            &k.sasl_ssl,
            "--config",
            &cfg,
            "--state",
            "state.db",
        ],
    );
    let said = wait_until(Duration::from_secs(30), || {
        r.stderr.text().contains("SASL authentication error")
    });
    assert!(
        said,
        "no authentication failure in ripcord's log within 30 s ({}):\n{}",
        k.name(),
        r.stderr.text()
    );
    let log = r.stderr.all();
    let line = log
        .iter()
        .find(|l| l.contains("SASL authentication error"))
        .unwrap();
    assert!(
        line.contains("ERROR") || line.contains("WARN"),
        "the authentication failure is logged below warning: {line}"
    );
    let (status, took, out, err) = r.terminate(Duration::from_secs(20));
    println!("--- ripcord's log:\n{}", err.text());
    assert!(status.success(), "{}", err.text());
    assert!(took < Duration::from_secs(11), "shutdown took {took:?}");
    let all = format!("{}\n{}", out.text(), err.text());
    assert!(!all.contains(wrong), "the password reached the log:\n{all}");
    assert!(
        out.all().iter().all(|l| !l.starts_with('{')),
        "decided without authenticating: {}",
        out.text()
    );
    assert!(
        !err.text().contains("partitions assigned"),
        "joined the group without authenticating:\n{}",
        err.text()
    );
}

/// Sums the bytes a producer sent, from librdkafka's statistics, and keeps
/// delivery errors.
#[derive(Default)]
struct Counting {
    /// (statistics reports seen, bytes sent to brokers as of the last one)
    sent: Mutex<(u64, u64)>,
    failed: Mutex<Vec<String>>,
}

impl ClientContext for Counting {
    fn stats(&self, stats: Statistics) {
        let bytes = stats.brokers.values().map(|b| b.txbytes).sum();
        let mut s = self.sent.lock().unwrap();
        *s = (s.0 + 1, bytes);
    }
}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.lock().unwrap().push(e.to_string());
        }
    }
}

/// Produces `messages` in one batch compressed with `codec` and returns
/// how many bytes went over the wire (requests included).
fn produce_compressed(
    brokers: &str,
    topic: &str,
    codec: &str,
    messages: &[(String, String)],
) -> u64 {
    let p: ThreadedProducer<Counting> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("compression.type", codec)
        // One batch: the whole incident waits for the linger.
        .set("linger.ms", "200")
        .set("message.timeout.ms", "30000")
        .set("statistics.interval.ms", "100")
        .create_with_context(Counting::default())
        .unwrap_or_else(|e| panic!("a producer with compression.type={codec}: {e}"));
    for (k, v) in messages {
        p.send(BaseRecord::to(topic).key(k).payload(v))
            .unwrap_or_else(|(e, _)| panic!("produce ({codec}): {e}"));
    }
    p.flush(Duration::from_secs(30)).expect("flush");
    let failed = p.context().failed.lock().unwrap().clone();
    assert!(failed.is_empty(), "{codec} batch refused: {failed:?}");
    // A report taken after the flush counts every byte of the batch.
    let seen = p.context().sent.lock().unwrap().0;
    assert!(
        wait_until(Duration::from_secs(5), || p
            .context()
            .sent
            .lock()
            .unwrap()
            .0
            >= seen + 2),
        "no producer statistics"
    );
    p.context().sent.lock().unwrap().1
}

/// Batches compressed with zstd, lz4, gzip and snappy are decoded and
/// decided on. Each codec's producer must have put fewer bytes on the wire
/// than the payloads add up to, which proves the batch really was
/// compressed rather than quietly sent plain.
#[test]
fn compressed_batches_are_consumed() {
    let t = Kafka::get();
    let topic = &unique("ev-compressed");
    t.create_topic(topic, 1);
    t.create_topic(&format!("{topic}-dead"), 1);
    let dir = workdir_with_rules(DOWN_RULES);
    let cfg = config(dir.path(), topic, &unique("compressed"), &[]);
    let r = Responder::start(
        dir.path(),
        &[
            "--brokers",
            &t.brokers,
            "--config",
            &cfg,
            "--state",
            "state.db",
        ],
    );
    r.wait_warmed(Duration::from_secs(30));
    let codecs = ["zstd", "lz4", "gzip", "snappy"];
    let mut produced = 0;
    for (i, codec) in codecs.iter().enumerate() {
        // Each codec's incident 4 s of event time after the previous one,
        // so none arrives late for the partition's clock.
        let base = now_millis() + 4000 * i as i64;
        let mut events = incident(base, "svc", &format!("i-{codec}"));
        // Padding from a healthy instance (no decisions): a batch big enough
        // for compression to pay off clearly.
        for t in 0..40 {
            let healthy = format!("i-healthy-{codec}");
            events.push((
                "svc".to_owned(),
                sample("up", 1.0, base + t * 50, "svc", &healthy, "low"),
            ));
        }
        let payload: usize = events.iter().map(|(k, v)| k.len() + v.len()).sum();
        let sent = produce_compressed(&t.brokers, topic, codec, &events);
        println!("{codec}: {sent} bytes sent for {payload} bytes of payload");
        assert!(
            sent < payload as u64,
            "{codec}: {sent} bytes sent for {payload} bytes of payload: not compressed"
        );
        produced += events.len();
    }
    // Every message decoded: none counted as poison.
    let processed =
        format!(r#"ripcord_events_total{{source="kafka",outcome="processed"}} {produced}"#);
    assert!(
        wait_until(Duration::from_secs(30), || r
            .metrics()
            .lines()
            .any(|l| l == processed)),
        "want `{processed}`:\n{}\n{}",
        r.metrics(),
        r.stderr.text()
    );
    let done = wait_until(Duration::from_secs(30), || {
        r.decisions()
            .iter()
            .filter(|d| d["action"] == "resolve")
            .count()
            >= codecs.len()
    });
    assert!(
        done,
        "not every codec's incident resolved:\n{}\n{:?}",
        r.stderr.text(),
        r.decisions()
    );
    let mut by_instance: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in r.decisions() {
        by_instance
            .entry(d["labels"]["instance"].as_str().unwrap().to_owned())
            .or_default()
            .push(d["action"].as_str().unwrap().to_owned());
    }
    let want: BTreeMap<String, Vec<String>> = codecs
        .iter()
        .map(|c| {
            (
                format!("i-{c}"),
                vec!["rollback".into(), "notify".into(), "resolve".into()],
            )
        })
        .collect();
    assert_eq!(by_instance, want);
}
