//! The trail of a group's window values while something is wrong with it:
//! from the first breaching reading, through the incident, to its
//! resolution. Kept in a few hundred bytes whatever the incident's length
//! (older points are thinned out, the first and the latest always kept),
//! and handed to each decision as evidence for the review's chart.

use std::sync::Arc;

use crate::time::Ts;

/// Most points a trail keeps (1 KiB).
pub const MAX_POINTS: usize = 64;

#[derive(Debug, Clone, Default)]
pub struct Trail {
    points: Vec<(Ts, f64)>,
    /// Keep one reading in `stride` (doubles each time the trail fills).
    stride: u32,
    /// Readings skipped since the last one kept.
    skipped: u32,
    /// The latest reading, kept or not.
    latest: Option<(Ts, f64)>,
}

impl Trail {
    pub fn push(&mut self, at: Ts, value: f64) {
        let v = value;
        self.latest = Some((at, v));
        if self.stride == 0 {
            self.stride = 1;
        }
        if !self.points.is_empty() && self.skipped + 1 < self.stride {
            self.skipped += 1;
            return;
        }
        self.skipped = 0;
        self.points.push((at, v));
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
    pub fn snapshot(&self) -> Arc<[(Ts, f64)]> {
        let mut out = self.points.clone();
        if let Some((t, v)) = self.latest {
            if out.last().is_none_or(|(lt, _)| *lt < t) {
                out.push((t, v));
            }
        }
        out.into()
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
        /// Whatever the readings: bounded, in time order, the first reading
        /// and the latest always there, every point one that was read.
        #[test]
        fn a_trail_stays_bounded_ordered_and_keeps_both_ends(
            values in proptest::collection::vec(-1e6f64..1e6, 1..2000),
            step in 1i64..60_000,
        ) {
            let mut t = Trail::default();
            for (i, v) in values.iter().enumerate() {
                t.push(Ts(i as i64 * step), *v);
            }
            let s = t.snapshot();
            prop_assert!(s.len() <= MAX_POINTS + 1);
            prop_assert!(s.windows(2).all(|w| w[0].0 < w[1].0));
            prop_assert_eq!(s[0].0, Ts(0));
            prop_assert_eq!(s[0].1, values[0]);
            let last = values.len() - 1;
            prop_assert_eq!(s[s.len() - 1].0, Ts(last as i64 * step));
            prop_assert_eq!(s[s.len() - 1].1, values[last]);
            for (at, v) in s.iter() {
                let i = (at.0 / step) as usize;
                prop_assert_eq!(*v, values[i]);
            }
        }
    }

    #[test]
    fn a_short_trail_keeps_every_reading() {
        let mut t = Trail::default();
        for i in 0..10 {
            t.push(Ts(i * 1000), i as f64);
        }
        assert_eq!(t.snapshot().len(), 10);
    }
}
