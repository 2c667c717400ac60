//! `ripcord replay` against the cost of merely reading its input.
//!
//! Product issue: "`ripcord replay` over a file runs within 2x of the time
//! it takes just to read and JSON-decode that file". Three benchmarks run
//! over the same generated file (200k lines, in event time order):
//! - `read+serde_json::Value`: read line by line and parse each line into a
//!   generic `serde_json::Value`, the "just read and JSON-decode" baseline;
//! - `read+ripcord decode`: the same read, with ripcord's typed decoder;
//! - `replay`: [`ripcord::replay::run`] with a fresh engine from the shipped
//!   rules, decisions and warnings written to `io::sink()`.
//!
//! The claim holds when `replay` / `read+serde_json::Value` <= 2.
//!
//! The file is a realistic mix: mostly native samples of the metrics the
//! shipped rules watch, one series in five through prometheus-kafka-adapter,
//! an Alertmanager webhook payload per scrape round (mostly redeliveries)
//! and an orchestrator progress event every few rounds. A few instances
//! breach, so replay also opens incidents and writes decisions.

use std::fs::File;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use ripcord::engine::{Engine, EngineConfig};
use ripcord::time::Ts;

/// 2026-11-21T10:00:00Z: when the recording starts.
const START_MS: i64 = 1_795_255_200_000;
/// Every series reports once per round (a common scrape interval).
const ROUND_MS: i64 = 15_000;
const LINES: usize = 200_000;
const SERVICES: u32 = 25;
const INSTANCES_PER_SERVICE: u32 = 20;
/// Native metrics every instance reports each round; the shipped rules
/// watch all of them.
const NATIVE_METRICS: [&str; 4] = [
    "cpu_usage_ratio",
    "memory_usage_ratio",
    "up",
    "http_5xx_ratio",
];
/// Reported through prometheus-kafka-adapter: one series in five.
const ADAPTER_METRIC: &str = "http_latency_seconds";
const TIERS: [&str; 3] = ["low", "medium", "high"];

/// SplitMix64: a fixed hash for a deterministic file.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A uniform number in [0, 1) from a hash.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// One series: which instance, which metric (index into `NATIVE_METRICS`,
/// or `NATIVE_METRICS.len()` for the adapter metric), and when in each
/// round it reports.
#[derive(Clone, Copy)]
struct Series {
    offset_ms: i64,
    instance: u32,
    metric: usize,
}

/// The series' value in `round`: steady and well inside the thresholds,
/// except for instance 7's CPU (pinned high in the second half) and
/// instance 42's 5xx ratio (a surge for a few minutes): rare breaches.
fn value_of(s: Series, round: i64) -> f64 {
    let noise = unit(mix(u64::from(s.instance) << 8
        ^ s.metric as u64
        ^ (round as u64) << 32));
    match (s.metric, s.instance) {
        (0, 7) if round > 40 => 0.95,
        (3, 42) if (30..45).contains(&round) => 0.12,
        (0, _) => 0.2 + 0.4 * noise,
        (1, _) => 0.4 + 0.3 * noise,
        (2, _) => 1.0,
        (3, _) => 0.002 * noise,
        _ => 0.08 + 0.04 * noise,
    }
}

fn write_series(out: &mut Vec<u8>, s: Series, round: i64) {
    let ts = Ts(START_MS + round * ROUND_MS + s.offset_ms);
    let service = s.instance / INSTANCES_PER_SERVICE;
    let tier = TIERS[service as usize % TIERS.len()];
    let value = value_of(s, round);
    let written = match NATIVE_METRICS.get(s.metric) {
        Some(metric) => writeln!(
            out,
            r#"{{"metric":"{metric}","value":{value},"ts":"{ts}","labels":{{"service":"svc-{service}","instance":"i-{:05}","tier":"{tier}"}}}}"#,
            s.instance
        ),
        None => writeln!(
            out,
            r#"{{"timestamp":"{ts}","value":"{value}","name":"{ADAPTER_METRIC}","labels":{{"__name__":"{ADAPTER_METRIC}","instance":"i-{:05}","service":"svc-{service}","job":"node","tier":"{tier}"}}}}"#,
            s.instance
        ),
    };
    written.expect("writing to a Vec cannot fail");
}

/// An Alertmanager webhook payload, as Alertmanager re-sends it on every
/// group interval: the same firing alert, plus a new one every 20 rounds.
fn write_alertmanager(out: &mut Vec<u8>, round: i64) {
    let first = Ts(START_MS);
    let newest = round / 20;
    let since = Ts(START_MS + newest * 20 * ROUND_MS);
    writeln!(
        out,
        concat!(
            r#"{{"receiver":"ripcord","status":"firing","alerts":["#,
            r#"{{"status":"firing","labels":{{"alertname":"DiskFilling","service":"svc-3","instance":"i-00061","severity":"warning","tier":"high"}},"annotations":{{"summary":"disk 85% full"}},"startsAt":"{first}","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prom/graph","fingerprint":"fp-disk-61"}},"#,
            r#"{{"status":"firing","labels":{{"alertname":"QueueBacklog","service":"svc-5","instance":"i-{newest:05}","severity":"info"}},"annotations":{{}},"startsAt":"{since}","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prom/graph","fingerprint":"fp-queue-{newest}"}}"#,
            r#"],"groupLabels":{{}},"commonLabels":{{}},"commonAnnotations":{{}},"externalURL":"http://am:9093","version":"4","groupKey":"{{}}:{{}}","truncatedAlerts":0}}"#,
        ),
        first = first,
        since = since,
        newest = newest,
    )
    .expect("writing to a Vec cannot fail");
}

/// Rollout progress from the orchestrator.
fn write_progress(out: &mut Vec<u8>, round: i64) {
    let ts = Ts(START_MS + round * ROUND_MS + ROUND_MS / 3);
    let batch = round / 4 + 1;
    writeln!(
        out,
        r#"{{"kind":"progress","ts":"{ts}","labels":{{"service":"svc-4","batch":"{batch}","batches":"50"}},"stage":"batch_done","done":{},"total":1000,"message":"batch {batch} healthy"}}"#,
        batch * 20
    )
    .expect("writing to a Vec cannot fail");
}

/// The file's content: rounds of every series in timestamp order, with the
/// Alertmanager and progress events at their place in time.
fn recording() -> Vec<u8> {
    let instances = SERVICES * INSTANCES_PER_SERVICE;
    let mut schedule: Vec<Series> = (0..instances)
        .flat_map(|instance| {
            (0..=NATIVE_METRICS.len()).map(move |metric| Series {
                offset_ms: (mix(u64::from(instance) * 8 + metric as u64) % ROUND_MS as u64) as i64,
                instance,
                metric,
            })
        })
        .collect();
    schedule.sort_by_key(|s| (s.offset_ms, s.instance, s.metric));
    let mut out = Vec::with_capacity(LINES * 200);
    let mut lines = 0;
    'rounds: for round in 0.. {
        let mut alert_written = false;
        let mut progress_written = round % 4 != 0;
        for &s in &schedule {
            if !progress_written && s.offset_ms >= ROUND_MS / 3 {
                write_progress(&mut out, round);
                lines += 1;
                progress_written = true;
            }
            if !alert_written && s.offset_ms >= ROUND_MS / 2 {
                write_alertmanager(&mut out, round);
                lines += 1;
                alert_written = true;
            }
            write_series(&mut out, s, round);
            lines += 1;
            if lines >= LINES {
                break 'rounds;
            }
        }
    }
    out
}

/// Reads `path` line by line as replay does (a `BufReader`, one reused line
/// buffer) and hands each non-empty line to `f`. Returns the line count.
fn for_each_line(path: &Path, mut f: impl FnMut(&[u8])) -> usize {
    let mut input = BufReader::new(File::open(path).expect("recording opens"));
    let mut line = Vec::with_capacity(4096);
    let mut lines = 0;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line).expect("recording reads") == 0 {
            return lines;
        }
        lines += 1;
        let text = line.trim_ascii();
        if !text.is_empty() {
            f(text);
        }
    }
}

/// What `ripcord replay` does with the file, decisions and warnings
/// written to `io::sink()`.
fn replay(engine: &mut Engine, path: &Path) -> ripcord::replay::Summary {
    let input = BufReader::new(File::open(path).expect("recording opens"));
    ripcord::replay::run(
        engine,
        input,
        std::io::sink(),
        std::io::sink(),
        ripcord::output::Format::Json,
    )
    .expect("replay to a sink cannot fail")
}

fn replay_benches(c: &mut Criterion) {
    let content = recording();
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(&content).expect("temp file written");
    file.flush().expect("temp file flushed");
    let path = file.path();

    let files = ripcord::rule::load::load_builtin().expect("shipped rules load");
    let rules = Arc::new(ripcord::rule::load::rule_set(&files));
    // Once untimed: the recording must be all valid, and lead to decisions.
    let new_engine = || Engine::new(rules.clone(), EngineConfig::default());
    let mut engine = new_engine();
    let summary = replay(&mut engine, path);
    assert_eq!(summary.malformed, 0, "generated recording is valid");
    assert_eq!(summary.lines, LINES as u64);
    assert!(summary.decisions > 0, "the rare breaches lead to decisions");
    eprintln!(
        "recording: {} lines, {} bytes, {} events, {} decisions, {} groups",
        summary.lines,
        content.len(),
        summary.events,
        summary.decisions,
        engine.groups()
    );
    drop(engine);

    let mut group = c.benchmark_group("replay");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(LINES as u64));
    group.bench_function("read+serde_json::Value", |b| {
        b.iter(|| {
            for_each_line(path, |line| {
                let value: serde_json::Value =
                    serde_json::from_slice(line).expect("recording is JSON");
                black_box(value);
            })
        });
    });
    group.bench_function("read+ripcord decode", |b| {
        b.iter(|| {
            for_each_line(path, |line| {
                ripcord::decode::decode_each(line, |event| {
                    black_box(event);
                })
                .expect("recording decodes");
            })
        });
    });
    // A fresh engine per run, as `ripcord replay` starts with; building it
    // and dropping it afterwards are not timed.
    group.bench_function("replay", |b| {
        b.iter_batched(
            new_engine,
            |mut engine| {
                let summary = replay(&mut engine, path);
                (engine, summary)
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, replay_benches);
criterion_main!(benches);
