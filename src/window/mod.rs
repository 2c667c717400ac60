//! Window: bucketed sliding windows over event time.
//!
//! A window of length L is kept as `n` buckets of width `w` (default 12
//! buckets, `w >= 1s`, `n = ceil(L / w)`). Bucket `e` holds samples with
//! `floor(ts / w) == e`. At time `now` the window is the `n` buckets ending
//! with the one `now` falls in, so it spans between `(n-1)·w` and `n·w` of
//! event time. State is `n` fixed-size buckets whatever the event rate.
//!
//! Late and out-of-order samples: a sample lands in its own bucket as long
//! as that bucket is still inside the window at the group's `now` (the
//! newest time the group has seen); older samples are refused and counted.
//! The engine additionally drops samples older than its watermark minus the
//! allowed lateness. Duplicates count as separate samples; for `last`, the
//! sample with the greatest timestamp wins and, on a tie, the later arrival.
//!
//! The buckets live in caller-owned slices (the engine packs every group of
//! a rule into one `Vec`), so these are free functions over `&mut [B]`;
//! [`Window`] wraps one group's window for tests and simple callers.

mod bucket;
mod sketch;

pub use bucket::{BasicBucket, Bucket, CounterBucket, SketchBucket, SumBucket};
pub use sketch::{ALPHA as SKETCH_RELATIVE_ACCURACY, Sketch};

use std::fmt;
use std::str::FromStr;

use crate::time::{Dur, Ts};

/// Default number of buckets a window is cut into.
pub const DEFAULT_BUCKETS: u32 = 12;
/// Upper bound on buckets per window, to bound state per group.
pub const MAX_BUCKETS: u32 = 120;
/// Buckets are at least this wide, so epochs fit in a `u32` until 2106.
pub const MIN_BUCKET_MS: i64 = 1000;

/// How a window's samples are reduced to one number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Agg {
    Avg,
    Min,
    Max,
    Sum,
    Count,
    /// Per-second increase of a counter between the window's first and last
    /// sample, counter resets handled as Prometheus does.
    Rate,
    Last,
    /// Nearest-rank quantile, `0 < q < 1`, within [`SKETCH_RELATIVE_ACCURACY`].
    Quantile(f64),
}

/// Which bucket layout an aggregation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Sum,
    Basic,
    Counter,
    Sketch,
}

impl Agg {
    pub fn store(self) -> Store {
        match self {
            Agg::Rate => Store::Counter,
            Agg::Quantile(_) => Store::Sketch,
            Agg::Min | Agg::Max => Store::Basic,
            Agg::Avg | Agg::Sum | Agg::Count | Agg::Last => Store::Sum,
        }
    }
}

impl FromStr for Agg {
    type Err = String;

    fn from_str(s: &str) -> Result<Agg, String> {
        Ok(match s {
            "avg" => Agg::Avg,
            "min" => Agg::Min,
            "max" => Agg::Max,
            "sum" => Agg::Sum,
            "count" => Agg::Count,
            "rate" => Agg::Rate,
            "last" => Agg::Last,
            _ => {
                let q = s
                    .strip_prefix('p')
                    .and_then(|n| n.parse::<f64>().ok())
                    .filter(|q| *q > 0.0 && *q < 100.0)
                    .ok_or_else(|| {
                        format!(
                            "unknown aggregation `{s}`; expected avg, min, max, sum, count, \
                             rate, last or a percentile p1..p99.9 (p50, p90, p95, p99)"
                        )
                    })?;
                Agg::Quantile(q / 100.0)
            }
        })
    }
}

impl fmt::Display for Agg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Agg::Avg => f.write_str("avg"),
            Agg::Min => f.write_str("min"),
            Agg::Max => f.write_str("max"),
            Agg::Sum => f.write_str("sum"),
            Agg::Count => f.write_str("count"),
            Agg::Rate => f.write_str("rate"),
            Agg::Last => f.write_str("last"),
            Agg::Quantile(q) => write!(f, "p{}", q * 100.0),
        }
    }
}

/// The geometry of a window: bucket width, and which buckets of the ring
/// it reads. A plain window reads all `len` buckets ending at `now`; a
/// baseline may end `skip` buckets before `now` ("the hour before the last
/// five minutes"), so its ring holds `skip + len` buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    width_ms: i64,
    skip: u32,
    len: u32,
}

impl Spec {
    /// Cuts `length` into about `buckets` buckets of at least one second.
    pub fn new(length: Dur, buckets: u32) -> Spec {
        Spec::offset(length, Dur::ZERO, buckets)
    }

    /// A window of `length` that ends `offset` before now.
    pub fn offset(length: Dur, offset: Dur, buckets: u32) -> Spec {
        let length = length.millis().max(MIN_BUCKET_MS);
        let buckets = i64::from(buckets.clamp(1, MAX_BUCKETS));
        let width_ms = ((length + buckets - 1) / buckets).max(MIN_BUCKET_MS);
        let len = ((length + width_ms - 1) / width_ms) as u32;
        let skip = ((offset.millis().max(0) + width_ms / 2) / width_ms) as u32;
        Spec {
            width_ms,
            skip: skip.min(MAX_BUCKETS * 24),
            len,
        }
    }

    /// Buckets in the ring: what one group's window costs in memory.
    pub fn buckets(self) -> u32 {
        self.skip + self.len
    }

    pub fn width(self) -> Dur {
        Dur(self.width_ms)
    }

    /// How far back the ring reaches.
    pub fn reach(self) -> Dur {
        Dur(self.width_ms * i64::from(self.buckets()))
    }

    pub fn epoch(self, ts: Ts) -> i64 {
        ts.millis().div_euclid(self.width_ms)
    }

    /// First millisecond of bucket `epoch`.
    pub fn start_of(self, epoch: i64) -> Ts {
        Ts(epoch * self.width_ms)
    }

    /// Epochs `(lo, hi]` the window reads at `now`.
    pub fn range(self, now: Ts) -> (i64, i64) {
        let hi = self.epoch(now) - i64::from(self.skip);
        (hi - i64::from(self.len), hi)
    }

    /// Whether a sample at `ts` can still be stored when the group is at `now`.
    pub fn accepts(self, now: Ts, ts: Ts) -> bool {
        self.epoch(ts) > self.epoch(now) - i64::from(self.buckets())
    }

    /// When the bucket after the one `now` falls in begins: the next moment
    /// the window's content changes without a new sample.
    pub fn next_boundary(self, now: Ts) -> Ts {
        self.start_of(self.epoch(now) + 1)
    }
}

/// Adds a sample to its bucket. `now` must already include `ts`
/// (`now >= ts`). Returns `false`, storing nothing, when the sample's bucket
/// has left the window.
pub fn insert<B: Bucket>(spec: Spec, ring: &mut [B], now: Ts, ts: Ts, value: f64) -> bool {
    debug_assert_eq!(ring.len(), spec.buckets() as usize);
    debug_assert!(now >= ts);
    if !spec.accepts(now, ts) {
        return false;
    }
    let epoch = spec.epoch(ts);
    let slot = &mut ring[epoch.rem_euclid(i64::from(spec.buckets())) as usize];
    if slot.epoch() != epoch as u32 || slot.is_empty() {
        // Whatever the slot held is at least n buckets old: outside the window.
        slot.reset(epoch as u32);
    }
    let offset = (ts.millis() - spec.start_of(epoch).millis()) as u32;
    slot.add(offset, value);
    true
}

/// The non-empty buckets with epochs in `(lo, hi]`, oldest first.
pub fn buckets_in<B: Bucket>(
    spec: Spec,
    ring: &[B],
    (lo, hi): (i64, i64),
) -> impl Iterator<Item = (i64, &B)> + '_ {
    let n = i64::from(spec.buckets());
    let lo = lo.max(hi - n);
    ((lo + 1)..=hi).filter_map(move |e| {
        let b = &ring[e.rem_euclid(n) as usize];
        (b.epoch() == e as u32 && !b.is_empty()).then_some((e, b))
    })
}

/// What a window reduces to: the aggregate and how many samples it covers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub value: f64,
    pub count: u64,
}

/// Reduces the buckets in `range` with `agg` (avg, sum, count or last).
/// `last` is the newest sample the group has (its bucket may have left the
/// window). `None` when the window holds no sample.
pub fn read_sum(
    agg: Agg,
    spec: Spec,
    ring: &[SumBucket],
    range: (i64, i64),
    last: Option<(Ts, f64)>,
) -> Option<Reading> {
    let (mut count, mut sum) = (0u64, 0.0f64);
    for (_, b) in buckets_in(spec, ring, range) {
        count += u64::from(b.count);
        sum += b.sum;
    }
    if count == 0 {
        return None;
    }
    let value = match agg {
        Agg::Avg => sum / count as f64,
        Agg::Sum => sum,
        Agg::Count => count as f64,
        Agg::Last => {
            let (ts, v) = last?;
            let e = spec.epoch(ts);
            if e <= range.0 || e > range.1 {
                return None;
            }
            v
        }
        Agg::Min | Agg::Max | Agg::Rate | Agg::Quantile(_) => {
            unreachable!("{agg} does not use sum buckets")
        }
    };
    Some(Reading { value, count })
}

/// Reduces the buckets in `range` to their min or max. `None` when the
/// window holds no sample.
pub fn read_basic(
    agg: Agg,
    spec: Spec,
    ring: &[BasicBucket],
    range: (i64, i64),
) -> Option<Reading> {
    let (mut count, mut min, mut max) = (0u64, f64::INFINITY, f64::NEG_INFINITY);
    for (_, b) in buckets_in(spec, ring, range) {
        count += u64::from(b.count);
        min = min.min(b.min);
        max = max.max(b.max);
    }
    if count == 0 {
        return None;
    }
    let value = match agg {
        Agg::Min => min,
        Agg::Max => max,
        _ => unreachable!("{agg} does not use basic buckets"),
    };
    Some(Reading { value, count })
}

/// Per-second counter increase over the window (see [`Agg::Rate`]).
///
/// Each bucket keeps its first and last sample; the increase is summed over
/// that ordered chain of points, and a drop counts as a counter reset (the
/// new value is the increase since the reset), like Prometheus' `rate()`.
pub fn read_counter(spec: Spec, ring: &[CounterBucket], range: (i64, i64)) -> Option<Reading> {
    let mut count = 0u64;
    let mut increase = 0.0;
    let mut prev: Option<f64> = None;
    let (mut t_first, mut t_last) = (None, 0i64);
    for (e, b) in buckets_in(spec, ring, range) {
        count += u64::from(b.count);
        let start = spec.start_of(e).millis();
        t_first.get_or_insert(start + i64::from(b.first_off));
        t_last = start + i64::from(b.last_off);
        for v in [b.first, b.last] {
            if let Some(p) = prev {
                increase += if v >= p { v - p } else { v };
            }
            prev = Some(v);
        }
    }
    let t_first = t_first?;
    if count < 2 || t_last <= t_first {
        return None;
    }
    Some(Reading {
        value: increase / ((t_last - t_first) as f64 / 1000.0),
        count,
    })
}

/// Nearest-rank quantile `q` over the window (see [`Sketch`]).
pub fn read_sketch(
    q: f64,
    spec: Spec,
    ring: &[SketchBucket],
    range: (i64, i64),
) -> Option<Reading> {
    let mut merged = Sketch::default();
    for (_, b) in buckets_in(spec, ring, range) {
        merged.merge(&b.sketch);
    }
    let value = merged.quantile(q)?;
    Some(Reading {
        value,
        count: merged.count(),
    })
}

/// One group's window with its own storage: the engine's layout in miniature,
/// for tests and simple callers.
#[derive(Debug, Clone)]
pub struct Window {
    agg: Agg,
    spec: Spec,
    now: Option<Ts>,
    last: Option<(Ts, f64)>,
    sum: Vec<SumBucket>,
    basic: Vec<BasicBucket>,
    counter: Vec<CounterBucket>,
    sketch: Vec<SketchBucket>,
}

impl Window {
    pub fn new(agg: Agg, length: Dur, buckets: u32) -> Window {
        let spec = Spec::new(length, buckets);
        let n = spec.buckets() as usize;
        let (mut sum, mut basic, mut counter, mut sketch) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        match agg.store() {
            Store::Sum => sum.resize(n, SumBucket::default()),
            Store::Basic => basic.resize(n, BasicBucket::default()),
            Store::Counter => counter.resize(n, CounterBucket::default()),
            Store::Sketch => sketch.resize(n, SketchBucket::default()),
        }
        Window {
            agg,
            spec,
            now: None,
            last: None,
            sum,
            basic,
            counter,
            sketch,
        }
    }

    pub fn spec(&self) -> Spec {
        self.spec
    }

    /// Adds a sample; `false` if it was too old to store.
    pub fn push(&mut self, ts: Ts, value: f64) -> bool {
        let now = self.now.map_or(ts, |n| n.max(ts));
        self.now = Some(now);
        let stored = match self.agg.store() {
            Store::Sum => insert(self.spec, &mut self.sum, now, ts, value),
            Store::Basic => insert(self.spec, &mut self.basic, now, ts, value),
            Store::Counter => insert(self.spec, &mut self.counter, now, ts, value),
            Store::Sketch => insert(self.spec, &mut self.sketch, now, ts, value),
        };
        if stored && self.last.is_none_or(|(t, _)| ts >= t) {
            self.last = Some((ts, value));
        }
        stored
    }

    /// Moves the window's clock forward without a sample.
    pub fn advance(&mut self, to: Ts) {
        self.now = Some(self.now.map_or(to, |n| n.max(to)));
    }

    pub fn now(&self) -> Option<Ts> {
        self.now
    }

    pub fn read(&self) -> Option<Reading> {
        let now = self.now?;
        let range = self.spec.range(now);
        match self.agg {
            Agg::Rate => read_counter(self.spec, &self.counter, range),
            Agg::Quantile(q) => read_sketch(q, self.spec, &self.sketch, range),
            Agg::Min | Agg::Max => read_basic(self.agg, self.spec, &self.basic, range),
            agg => read_sum(agg, self.spec, &self.sum, range, self.last),
        }
    }
}

#[cfg(test)]
mod tests;
