//! Engine throughput and state size in the steady state.
//!
//! One measured event is the whole per-event path of the live responder:
//! JSON decode ([`ripcord::decode::decode_each`]) + window update + rule
//! evaluation ([`Engine::process`]). A synthetic fleet of N (service,
//! instance) groups reports one native sample every 10 s of event time, in
//! timestamp order; values sit below the thresholds except for one group in
//! a thousand, which breaches for 15 minutes of every hour. (At 1k groups a
//! run spans hours of event time, so incidents open and resolve; at 100k
//! and more it spans minutes, so the rare breaches only reach pending.)
//!
//! Targets (product issue): >= 1,000,000 events/s on one core at 100k
//! groups, and <= 1 KiB of window state per group and rule. Criterion
//! prints events/s (`Throughput::Elements`); `engine/decode_only` is the
//! decode share of it. The state size is printed once per workload and N
//! as a `state:` line, measured two ways:
//! - `engine_reported`: [`Engine::state_bytes`] / [`Engine::groups`];
//! - `rss_measured`: growth of the process' resident set while the N groups
//!   are created, / N: an independent check of the engine's accounting,
//!   meaningful from about 100k groups (at 1k it is within page and malloc
//!   arena noise). A counting `#[global_allocator]` would be exact, but it
//!   needs `unsafe` and Cargo.toml forbids `unsafe_code` for every target.
//!
//! The engine of each N is built and warmed (every group created) once, on
//! first use, then kept across iterations; event text is generated between
//! timed batches (untimed), so event time keeps moving forward.

use std::hint::black_box;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use ripcord::decision::Decision;
use ripcord::engine::{Engine, EngineConfig};
use ripcord::time::Ts;

/// 2026-11-21T10:00:00Z: when the synthetic fleet starts reporting.
const START_MS: i64 = 1_795_255_200_000;
/// Every group reports once per interval (a typical scrape interval).
const REPORT_INTERVAL_MS: i64 = 10_000;
/// Events per timed batch: large enough that timing overhead vanishes,
/// small enough that a 1M-group round is spread over many samples.
const EVENTS_PER_BATCH: usize = 10_000;
/// One group in `HOT_ONE_IN` breaches now and then; the rest never do.
const HOT_ONE_IN: u32 = 1_000;
/// A hot group breaches for `SPIKE_ROUNDS` of every `SPIKE_PERIOD_ROUNDS`
/// reports: 15 minutes of every hour at one report per 10 s.
const SPIKE_PERIOD_ROUNDS: i64 = 360;
const SPIKE_ROUNDS: i64 = 90;

/// What the fleet reports: the metric and tier pick which shipped rules
/// see the events.
struct Workload {
    name: &'static str,
    metric: &'static str,
    tier: &'static str,
    /// Range of the groups' normal values, below the rules' thresholds.
    normal: (f64, f64),
    /// A hot group's value during a spike: a breach.
    spike: f64,
    /// Whether samples carry an upgrade `batch` label (groups of 1,000
    /// instances of a service each in one batch), so batch grouping works
    /// on every sample.
    batched: bool,
}

/// `cpu-sustained` (common.yaml, any tier): 1 m avg window > 80% for 10 m.
/// The only rule on `cpu_usage_ratio`, so groups == N.
const CPU: Workload = Workload {
    name: "cpu_usage_ratio",
    metric: "cpu_usage_ratio",
    tier: "low",
    normal: (0.15, 0.65),
    spike: 0.92,
    batched: false,
};

/// [`CPU`] with `batch` labels: what batch grouping costs per sample.
const CPU_BATCHED: Workload = Workload {
    name: "cpu_usage_ratio_batched",
    batched: true,
    ..CPU
};

/// `medium-latency-baseline` (medium.yaml): 5 m avg > 200% of a 1 h
/// baseline ending 5 m ago. Shows what a baseline window costs.
const LATENCY_BASELINE: Workload = Workload {
    name: "http_latency_seconds_baseline",
    metric: "http_latency_seconds",
    tier: "medium",
    normal: (0.08, 0.12),
    spike: 0.45,
    batched: false,
};

/// `request-success` (common.yaml): what the rollout gates also tally.
const SUCCESS: Workload = Workload {
    name: "request_success_ratio",
    metric: "request_success_ratio",
    tier: "low",
    normal: (0.9992, 0.99999),
    spike: 0.95,
    batched: false,
};

/// SplitMix64: a fixed, fast hash for deterministic pseudo-random fleets.
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

/// Generates the fleet's events as native JSON lines, forever, in event
/// time order.
struct Fleet {
    workload: &'static Workload,
    /// (group, offset of its report within each interval in ms), sorted by
    /// offset: each group reports at a stable phase, as scrapes do.
    schedule: Vec<(u32, u32)>,
    round: i64,
    next: usize,
}

impl Fleet {
    fn new(workload: &'static Workload, groups: u32) -> Fleet {
        let mut schedule: Vec<(u32, u32)> = (0..groups)
            .map(|g| (g, (mix(u64::from(g)) % REPORT_INTERVAL_MS as u64) as u32))
            .collect();
        schedule.sort_by_key(|&(g, offset)| (offset, g));
        Fleet {
            workload,
            schedule,
            round: 0,
            next: 0,
        }
    }

    /// Replaces `buf` with the next `count` events, one per line.
    fn next_batch(&mut self, buf: &mut Vec<u8>, count: usize) {
        buf.clear();
        for _ in 0..count {
            let (group, offset) = self.schedule[self.next];
            self.write_event(buf, group, offset);
            self.next += 1;
            if self.next == self.schedule.len() {
                self.next = 0;
                self.round += 1;
            }
        }
    }

    fn write_event(&self, buf: &mut Vec<u8>, group: u32, offset: u32) {
        let w = self.workload;
        let ts = Ts(START_MS + self.round * REPORT_INTERVAL_MS + i64::from(offset));
        let seed = u64::from(group);
        let spiking = group % HOT_ONE_IN == HOT_ONE_IN / 2 && {
            let phase = (mix(seed ^ 0x5eed) % SPIKE_PERIOD_ROUNDS as u64) as i64;
            (self.round + phase) % SPIKE_PERIOD_ROUNDS < SPIKE_ROUNDS
        };
        let value = if spiking {
            w.spike
        } else {
            let (lo, hi) = w.normal;
            let base = lo + (hi - lo) * (0.1 + 0.8 * unit(mix(seed)));
            let noise = (unit(mix(seed ^ (self.round as u64).rotate_left(32))) - 0.5) * 0.1;
            base + noise * (hi - lo)
        };
        // Four decimals, printed as integers: float formatting would make
        // generation (untimed, but wall-clock) slower than the engine.
        let ten_thousandths = (value * 10_000.0).round() as u64;
        let batch = if w.batched {
            format!(r#","batch":"{}""#, group / 1000 % 3)
        } else {
            String::new()
        };
        writeln!(
            buf,
            r#"{{"metric":"{}","value":{}.{:04},"ts":"{ts}","labels":{{"service":"svc-{}","instance":"i-{group:07}","tier":"{}"{batch}}}}}"#,
            w.metric,
            ten_thousandths / 10_000,
            ten_thousandths % 10_000,
            group / 100,
            w.tier
        )
        .expect("writing to a Vec cannot fail");
    }
}

/// The measured path: decode each line and feed its events to the engine.
/// Decisions are dropped as they come, as the responder hands them on.
fn feed(engine: &mut Engine, lines: &[u8], decisions: &mut Vec<Decision>) -> usize {
    let mut events = 0;
    for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        ripcord::decode::decode_each(line, |event| {
            engine.process(&event, decisions);
            events += 1;
        })
        .expect("generated events decode");
        decisions.clear();
    }
    events
}

fn shipped_engine(grouping: bool) -> Engine {
    let files = ripcord::rule::load::load_builtin().expect("shipped rules load");
    let rules = ripcord::rule::load::rule_set(&files);
    // The event path itself, not the memory budget: a budget large enough
    // for the biggest fleet measured (`limits:` caps a live process).
    let mut cfg = EngineConfig {
        budgets: ripcord::limits::Budgets::new(&ripcord::limits::LimitsConfig {
            groups_bytes: 1 << 40,
            ..Default::default()
        }),
        ..EngineConfig::default()
    };
    if !grouping {
        cfg.grouping = None;
    }
    Engine::new(Arc::new(rules), cfg)
}

/// Resident set size from /proc (Linux); `None` elsewhere.
fn resident_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<usize>()
        .ok()?;
    Some(kib * 1024)
}

/// Builds an engine and feeds it the first full round, so every group
/// exists; prints the state size per group both ways.
fn warmed_engine(fleet: &mut Fleet, groups: u32, buf: &mut Vec<u8>, grouping: bool) -> Engine {
    let mut decisions = Vec::new();
    let mut engine = shipped_engine(grouping);
    let rss_before = resident_bytes();
    let mut left = groups as usize;
    while left > 0 {
        let n = left.min(EVENTS_PER_BATCH);
        fleet.next_batch(buf, n);
        feed(&mut engine, buf, &mut decisions);
        left -= n;
    }
    let rss_after = resident_bytes();
    assert_eq!(engine.groups(), groups as usize, "one group per series");
    let per_group = |bytes: usize| bytes as f64 / f64::from(groups);
    let rss = match (rss_before, rss_after) {
        (Some(b), Some(a)) => format!("{:.0} B/group", per_group(a.saturating_sub(b))),
        _ => "n/a".to_owned(),
    };
    eprintln!(
        "state: workload={} groups={groups} engine_reported={:.0} B/group rss_measured={rss}",
        fleet.workload.name,
        per_group(engine.state_bytes()),
    );
    engine
}

/// The engine of one workload and N, built on first use so that a
/// criterion filter skips the warm-up of the benchmarks it excludes.
struct Warm {
    fleet: Fleet,
    buf: Vec<u8>,
    decisions: Vec<Decision>,
    engine: Engine,
}

impl Warm {
    fn new(workload: &'static Workload, groups: u32) -> Warm {
        Warm::with_grouping(workload, groups, true)
    }

    fn with_grouping(workload: &'static Workload, groups: u32, grouping: bool) -> Warm {
        // Allocated before the engine, so they do not count as its state.
        let mut fleet = Fleet::new(workload, groups);
        let mut buf = Vec::with_capacity(EVENTS_PER_BATCH * 200);
        let engine = warmed_engine(&mut fleet, groups, &mut buf, grouping);
        Warm {
            fleet,
            buf,
            decisions: Vec::new(),
            engine,
        }
    }

    /// Runs `batches` timed batches; only decode + process is timed.
    fn run(&mut self, batches: u64) -> Duration {
        let mut timed = Duration::ZERO;
        for _ in 0..batches {
            self.fleet.next_batch(&mut self.buf, EVENTS_PER_BATCH);
            let start = Instant::now();
            black_box(feed(&mut self.engine, &self.buf, &mut self.decisions));
            timed += start.elapsed();
        }
        timed
    }
}

fn configure(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(EVENTS_PER_BATCH as u64));
}

fn bench_workload(c: &mut Criterion, workload: &'static Workload, sizes: &[u32]) {
    let mut group = c.benchmark_group(format!("engine/{}", workload.name));
    configure(&mut group);
    for &groups in sizes {
        let mut warm: Option<Warm> = None;
        group.bench_function(BenchmarkId::from_parameter(groups), |b| {
            let warm = warm.get_or_insert_with(|| Warm::new(workload, groups));
            b.iter_custom(|batches| warm.run(batches));
        });
        if let Some(Warm { engine, .. }) = &warm {
            let s = engine.stats();
            let event_secs = engine
                .watermark()
                .map_or(0, |w| (w.millis() - START_MS) / 1000);
            eprintln!(
                "engine: workload={} groups={groups} samples={} decisions={} late={} \
                 evicted={} event_time={event_secs}s",
                workload.name, s.samples, s.decisions, s.samples_late, s.groups_evicted,
            );
        }
    }
    group.finish();
}

/// A 100k-group fleet of `workload` and its line buffer, made on first use.
fn fleet_100k(workload: &'static Workload) -> (Fleet, Vec<u8>) {
    (
        Fleet::new(workload, 100_000),
        Vec::with_capacity(EVENTS_PER_BATCH * 200),
    )
}

/// Times `batches` batches of decoding: each event goes to `on_event`, and
/// `end_batch` runs at the end of each batch, inside the timing.
fn time_decoding(
    fleet: &mut Fleet,
    buf: &mut Vec<u8>,
    batches: u64,
    mut on_event: impl FnMut(ripcord::event::Event<'_>),
    mut end_batch: impl FnMut(),
) -> Duration {
    let mut timed = Duration::ZERO;
    for _ in 0..batches {
        fleet.next_batch(buf, EVENTS_PER_BATCH);
        let start = Instant::now();
        for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            ripcord::decode::decode_each(line, &mut on_event).expect("generated events decode");
        }
        end_batch();
        timed += start.elapsed();
    }
    timed
}

/// Decode alone over the same lines (100k groups): subtract it from the
/// engine figures to see the engine's own share of each event.
fn bench_decode_only(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine/decode_only");
    configure(&mut group);
    for workload in [&CPU, &SUCCESS] {
        let mut fleet: Option<(Fleet, Vec<u8>)> = None;
        group.bench_function(BenchmarkId::from_parameter(workload.name), |b| {
            let (fleet, buf) = fleet.get_or_insert_with(|| fleet_100k(workload));
            b.iter_custom(|batches| {
                time_decoding(
                    fleet,
                    buf,
                    batches,
                    |event| {
                        black_box(event);
                    },
                    || {},
                )
            });
        });
    }
    group.finish();
}

/// Decode plus the rollout gates' tally (what the pipeline adds per event
/// besides the engine; the commit clears it each batch), over 100k groups of
/// `request_success_ratio`, the metric it counts: subtract
/// `engine/decode_only` to see the tally's own share.
fn bench_gate_tally(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine/decode_and_gate_tally");
    configure(&mut group);
    let tiers = ripcord::rule::TierResolver::default();
    let mut fleet: Option<(Fleet, Vec<u8>)> = None;
    group.bench_function(BenchmarkId::from_parameter(SUCCESS.name), |b| {
        let (fleet, buf) = fleet.get_or_insert_with(|| fleet_100k(&SUCCESS));
        let tally = std::cell::RefCell::new(ripcord::gate::Tally::default());
        b.iter_custom(|batches| {
            time_decoding(
                fleet,
                buf,
                batches,
                |event| tally.borrow_mut().observe(&event, SUCCESS.metric, &tiers),
                || {
                    let mut t = tally.borrow_mut();
                    black_box(t.rows().len());
                    t.clear();
                },
            )
        });
    });
    group.finish();
}

/// Batch grouping on and off, side by side in one run, at 100k groups
/// whose samples carry `batch` labels (issue 17's goal: on within 10% of
/// off).
fn bench_grouping(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine/grouping_100k_batched");
    configure(&mut group);
    for (name, on) in [("off", false), ("on", true)] {
        let mut warm: Option<Warm> = None;
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            let warm = warm.get_or_insert_with(|| Warm::with_grouping(&CPU_BATCHED, 100_000, on));
            b.iter_custom(|batches| warm.run(batches));
        });
    }
    group.finish();
}

fn engine_benches(c: &mut Criterion) {
    bench_grouping(c);
    bench_decode_only(c);
    bench_gate_tally(c);
    bench_workload(c, &CPU, &[1_000, 100_000, 1_000_000]);
    bench_workload(c, &LATENCY_BASELINE, &[1_000, 100_000]);
}

criterion_group!(benches, engine_benches);
criterion_main!(benches);
