//! The windows against a brute-force model that keeps every sample.
//!
//! The model knows nothing of rings: it filters the full sample list by the
//! documented window semantics and reduces it directly. Inputs mix
//! out-of-order and duplicate timestamps and timestamps on bucket
//! boundaries.

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    Push(i64, f64),
    Advance(i64),
}

struct Model {
    agg: Agg,
    spec: Spec,
    now: Option<Ts>,
    /// (ts, value, arrival order)
    samples: Vec<(Ts, f64, usize)>,
}

impl Model {
    fn push(&mut self, ts: Ts, v: f64) -> bool {
        let now = self.now.map_or(ts, |n| n.max(ts));
        self.now = Some(now);
        let stored = self.spec.accepts(now, ts);
        if stored {
            let n = self.samples.len();
            self.samples.push((ts, v, n));
        }
        stored
    }

    fn read(&self) -> Option<(f64, u64)> {
        let now = self.now?;
        let (lo, hi) = self.spec.range(now);
        let mut win: Vec<(Ts, f64, usize)> = self
            .samples
            .iter()
            .copied()
            .filter(|(t, _, _)| {
                let e = self.spec.epoch(*t);
                e > lo && e <= hi
            })
            .collect();
        if win.is_empty() {
            return None;
        }
        let n = win.len() as u64;
        let vals = || win.iter().map(|s| s.1);
        let value = match self.agg {
            Agg::Avg => vals().sum::<f64>() / n as f64,
            Agg::Min => vals().fold(f64::INFINITY, f64::min),
            Agg::Max => vals().fold(f64::NEG_INFINITY, f64::max),
            Agg::Sum => vals().sum(),
            Agg::Count => n as f64,
            Agg::Last => {
                // Newest sample in the whole group; none if it left the window.
                let newest = self
                    .samples
                    .iter()
                    .max_by_key(|(t, _, i)| (*t, *i))
                    .unwrap();
                let e = self.spec.epoch(newest.0);
                if e <= lo || e > hi {
                    return None;
                }
                newest.1
            }
            Agg::Rate => {
                // Per bucket: earliest sample (ties: first arrival), latest
                // sample (ties: last arrival); chain them in time order.
                win.sort_by_key(|(t, _, i)| (self.spec.epoch(*t), *t, *i));
                let mut points: Vec<(Ts, f64)> = Vec::new();
                let mut i = 0;
                while i < win.len() {
                    let e = self.spec.epoch(win[i].0);
                    let mut j = i;
                    while j < win.len() && self.spec.epoch(win[j].0) == e {
                        j += 1;
                    }
                    let bucket = &win[i..j];
                    let first = bucket.iter().min_by_key(|(t, _, a)| (*t, *a)).unwrap();
                    let last = bucket.iter().max_by_key(|(t, _, a)| (*t, *a)).unwrap();
                    points.push((first.0, first.1));
                    points.push((last.0, last.1));
                    i = j;
                }
                let mut inc = 0.0;
                for w in points.windows(2) {
                    let (p, v) = (w[0].1, w[1].1);
                    inc += if v >= p { v - p } else { v };
                }
                let span = points.last().unwrap().0.millis() - points[0].0.millis();
                if n < 2 || span <= 0 {
                    return None;
                }
                inc / (span as f64 / 1000.0)
            }
            Agg::Quantile(q) => {
                let mut v: Vec<f64> = vals().collect();
                v.sort_by(f64::total_cmp);
                let rank = ((q * n as f64).ceil() as usize).clamp(1, v.len());
                v[rank - 1]
            }
        };
        Some((value, n))
    }
}

fn close(a: f64, b: f64, scale: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * scale.max(1.0)
}

fn agg_strategy() -> impl Strategy<Value = Agg> {
    prop_oneof![
        Just(Agg::Avg),
        Just(Agg::Min),
        Just(Agg::Max),
        Just(Agg::Sum),
        Just(Agg::Count),
        Just(Agg::Last),
        Just(Agg::Rate),
        (1u32..999).prop_map(|q| Agg::Quantile(f64::from(q) / 1000.0)),
    ]
}

/// Window lengths from one second to two hours, with their bucket counts.
fn geometry() -> impl Strategy<Value = (i64, u32)> {
    (
        prop_oneof![1_000i64..10_000, 10_000i64..600_000, 600_000i64..7_200_000],
        1u32..20,
    )
}

/// Operations whose timestamps wander forward with jitter backwards, repeat,
/// and often sit exactly on (or one millisecond off) bucket boundaries.
fn ops(width: i64) -> impl Strategy<Value = Vec<Op>> {
    let step = prop_oneof![
        4 => (-3i64..6).prop_map(move |k| k * width),
        2 => (-3i64..6).prop_map(move |k| k * width + 1),
        2 => (-3i64..6).prop_map(move |k| k * width - 1),
        3 => -width * 2..width * 3,
        1 => Just(0i64),
    ];
    let value = prop_oneof![
        (-5i32..50).prop_map(f64::from),
        -1e6f64..1e6,
        Just(0.0),
        0.0f64..1.0,
    ];
    proptest::collection::vec(
        (step, value, 0u8..10).prop_map(|(dt, v, k)| {
            if k == 0 {
                Op::Advance(dt)
            } else {
                Op::Push(dt, v)
            }
        }),
        1..120,
    )
}

fn check(agg: Agg, length: i64, buckets: u32, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let base: i64 = 1_795_255_200_000;
    let mut w = Window::new(agg, Dur(length), buckets);
    let mut m = Model {
        agg,
        spec: w.spec(),
        now: None,
        samples: Vec::new(),
    };
    let mut t = base;
    for op in ops {
        match op {
            Op::Push(dt, v) => {
                t = (t + dt).max(base - 10 * length);
                let (a, b) = (w.push(Ts(t), v), m.push(Ts(t), v));
                prop_assert_eq!(a, b, "stored? at {}", t);
            }
            Op::Advance(dt) => {
                t = (t + dt.abs()).max(base);
                w.advance(Ts(t));
                m.now = Some(m.now.map_or(Ts(t), |n| n.max(Ts(t))));
            }
        }
        let got = w.read();
        let want = m.read();
        match (got, want) {
            (None, None) => {}
            (Some(g), Some((v, n))) => {
                prop_assert_eq!(g.count, n, "count of {} at {}", agg, t);
                let scale: f64 = m.samples.iter().map(|s| s.1.abs()).sum::<f64>() + v.abs();
                let ok = match agg {
                    Agg::Quantile(_) => {
                        (g.value - v).abs() <= SKETCH_RELATIVE_ACCURACY * v.abs() * (1.0 + 1e-9)
                    }
                    Agg::Rate => close(g.value, v, scale, 1e-9),
                    _ => close(g.value, v, scale, 1e-12),
                };
                prop_assert!(
                    ok,
                    "{} = {} but the model says {} (t={})",
                    agg,
                    g.value,
                    v,
                    t
                );
            }
            (g, w) => prop_assert!(
                false,
                "{} = {:?} but the model says {:?} (t={})",
                agg,
                g,
                w,
                t
            ),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn window_matches_brute_force(
        agg in agg_strategy(),
        (length, buckets) in geometry(),
        seed_ops in ops(1),
    ) {
        let spec = Spec::new(Dur(length), buckets);
        let width = spec.width().millis();
        // Rescale the generated steps to this window's bucket width.
        let scaled: Vec<Op> = seed_ops
            .into_iter()
            .map(|op| match op {
                Op::Push(dt, v) => Op::Push(dt * width, v),
                Op::Advance(dt) => Op::Advance(dt * width),
            })
            .collect();
        check(agg, length, buckets, scaled)?;
    }

    #[test]
    fn boundary_heavy_small_windows(
        agg in agg_strategy(),
        buckets in 1u32..6,
        ops in ops(1000),
    ) {
        check(agg, 5_000, buckets, ops)?;
    }
}

#[test]
fn spec_geometry() {
    let s = Spec::new(Dur::from_mins(5), 12);
    assert_eq!((s.width(), s.buckets()), (Dur::from_secs(25), 12));
    let s = Spec::new(Dur::from_secs(5), 12);
    assert_eq!((s.width(), s.buckets()), (Dur::from_secs(1), 5));
    let b = Spec::offset(Dur::from_mins(60), Dur::from_mins(5), 12);
    assert_eq!((b.width(), b.buckets()), (Dur::from_mins(5), 13));
}

#[test]
fn late_sample_outside_window_is_refused() {
    let mut w = Window::new(Agg::Count, Dur::from_secs(60), 6);
    let t0 = 1_795_255_200_000;
    assert!(w.push(Ts(t0 + 120_000), 1.0));
    assert!(!w.push(Ts(t0), 1.0));
    assert!(w.push(Ts(t0 + 70_000), 1.0));
    assert_eq!(w.read().unwrap().count, 2);
    w.advance(Ts(t0 + 200_000));
    assert_eq!(w.read(), None);
}

#[test]
fn rate_handles_counter_reset() {
    let mut w = Window::new(Agg::Rate, Dur::from_mins(10), 10);
    let t0 = 1_795_255_200_000;
    for (i, v) in [100.0, 160.0, 220.0, 10.0, 70.0].iter().enumerate() {
        w.push(Ts(t0 + i as i64 * 60_000), *v);
    }
    // 60 + 60 + 10 (reset) + 60 over 240 s.
    let r = w.read().unwrap();
    assert!((r.value - 190.0 / 240.0).abs() < 1e-12, "{}", r.value);
}
