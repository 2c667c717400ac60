//! The trail of a group's window values around something wrong with it:
//! the window as it stood just before the first breaching reading (its
//! buckets), then every reading from that breach through the incident to
//! its resolution. Kept in about a kilobyte whatever the incident's length
//! (older points are thinned out, the first and the latest always kept),
//! and handed to each decision as evidence for the review's chart.

use std::sync::Arc;

use crate::decision::EvidenceSeries;
use crate::time::Ts;

/// Most points a trail keeps (1 KiB).
pub const MAX_POINTS: usize = 64;
/// Most points of the window before the breach.
pub const MAX_BEFORE: usize = 16;

#[derive(Debug, Clone)]
pub struct Trail {
    breach_from: Ts,
    points: Vec<(Ts, f64)>,
    /// Keep one reading in `stride` (doubles each time the trail fills).
    stride: u32,
    /// Readings skipped since the last one kept.
    skipped: u32,
    /// The latest reading, kept or not.
    latest: (Ts, f64),
}

impl Trail {
    /// A trail opened by the first breaching reading `(at, value)`, after
    /// the window's values `before` it (oldest first; evenly thinned to
    /// [`MAX_BEFORE`]; those not before `at` are dropped).
    pub fn start(before: &[(Ts, f64)], at: Ts, value: f64) -> Trail {
        let before: Vec<(Ts, f64)> = before.iter().copied().filter(|(t, _)| *t < at).collect();
        let step = before.len().div_ceil(MAX_BEFORE).max(1);
        // Thinned from the newest back, so the last bucket before the
        // breach is kept.
        let mut points: Vec<(Ts, f64)> = before.iter().rev().step_by(step).copied().collect();
        points.reverse();
        let mut t = Trail {
            breach_from: at,
            points,
            stride: 1,
            skipped: 0,
            latest: (at, value),
        };
        t.keep(at, value);
        t
    }

    pub fn push(&mut self, at: Ts, value: f64) {
        self.latest = (at, value);
        if self.skipped + 1 < self.stride {
            self.skipped += 1;
            return;
        }
        self.skipped = 0;
        self.keep(at, value);
    }

    fn keep(&mut self, at: Ts, value: f64) {
        self.points.push((at, value));
        if self.points.len() >= MAX_POINTS {
            // Keep every other point (the first among them), and from now
            // on every other reading.
            let mut i = 0;
            self.points.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.stride = self.stride.saturating_mul(2);
        }
    }

    /// The points, oldest first, ending with the latest reading.
    pub fn snapshot(&self) -> Arc<EvidenceSeries> {
        let mut points = self.points.clone();
        let (t, v) = self.latest;
        if points.last().is_none_or(|(lt, _)| *lt < t) {
            points.push((t, v));
        }
        Arc::new(EvidenceSeries {
            annotations: Vec::new(),
            chart: None,
            breach_from: self.breach_from,
            points,
        })
    }

    pub fn heap_bytes(&self) -> usize {
        self.points.capacity() * std::mem::size_of::<(Ts, f64)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the readings: bounded, in time order, the breach and
        /// the latest reading always there, every point one that was read,
        /// the window before it kept before it.
        #[test]
        fn a_trail_stays_bounded_ordered_and_keeps_both_ends(
            before in proptest::collection::vec(-1e6f64..1e6, 0..120),
            values in proptest::collection::vec(-1e6f64..1e6, 1..2000),
            step in 1i64..60_000,
        ) {
            let base = 200 * step;
            let earlier: Vec<(Ts, f64)> = before
                .iter()
                .enumerate()
                .map(|(i, v)| (Ts(base - (before.len() - i) as i64 * step), *v))
                .collect();
            let mut t = Trail::start(&earlier, Ts(base), values[0]);
            for (i, v) in values.iter().enumerate().skip(1) {
                t.push(Ts(base + i as i64 * step), *v);
            }
            let s = t.snapshot();
            prop_assert_eq!(s.breach_from, Ts(base));
            prop_assert!(s.points.len() <= MAX_POINTS + 1);
            prop_assert!(s.points.windows(2).all(|w| w[0].0 < w[1].0));
            let last = values.len() - 1;
            prop_assert_eq!(s.points[s.points.len() - 1], (Ts(base + last as i64 * step), values[last]));
            for (at, v) in s.points.iter() {
                if *at >= Ts(base) {
                    let i = ((at.0 - base) / step) as usize;
                    prop_assert_eq!(*v, values[i]);
                } else {
                    prop_assert!(earlier.contains(&(*at, *v)));
                }
            }
            // A short incident keeps the breach and the window before it
            // (thinned to MAX_BEFORE, its newest bucket kept).
            if values.len() < MAX_POINTS / 2 {
                prop_assert!(s.points.contains(&(Ts(base), values[0])));
                let kept = s.points.iter().filter(|(a, _)| *a < Ts(base)).count();
                prop_assert!(kept <= MAX_BEFORE && (kept > 0) != earlier.is_empty());
                if let Some(newest) = earlier.last() {
                    prop_assert!(s.points.contains(newest));
                }
            }
        }
    }

    #[test]
    fn a_short_trail_keeps_every_reading_after_the_window_before() {
        let before = [(Ts(0), 0.01), (Ts(5_000), 0.02)];
        let mut t = Trail::start(&before, Ts(10_000), 0.4);
        for i in 1..10 {
            t.push(Ts(10_000 + i * 1000), 0.4);
        }
        let s = t.snapshot();
        assert_eq!(s.points.len(), 12);
        assert_eq!(
            s.points[..3],
            [(Ts(0), 0.01), (Ts(5_000), 0.02), (Ts(10_000), 0.4)]
        );
        assert_eq!(s.breach_from, Ts(10_000));
    }
}
