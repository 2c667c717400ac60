//! A relative-error quantile sketch (the DDSketch idea: logarithmic bins).
//!
//! A value `x > 0` falls in bin `k = ceil(log_γ x)` with `γ = (1+α)/(1-α)`;
//! the bin answers with `2γ^k/(γ+1)`, which is within `α` of every value in
//! it. So a quantile read from the sketch is within `α` (1%) of the exact
//! nearest-rank quantile. Bins are kept sparse and sorted; memory grows with
//! the spread of the values (a latency spread of 10x is about 115 bins), not
//! with their number.

/// Relative accuracy of quantiles.
pub const ALPHA: f64 = 0.01;

const GAMMA: f64 = (1.0 + ALPHA) / (1.0 - ALPHA);
/// Shifts positive keys above zero so the key order is the value order:
/// negatives < 0 (the zero bin) < positives.
const KEY_OFFSET: i32 = 100_000;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sketch {
    /// (key, count), sorted by key.
    bins: Vec<(i32, u32)>,
    count: u64,
}

impl Sketch {
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn clear(&mut self) {
        self.bins.clear();
        self.count = 0;
    }

    /// Heap bytes held by the bins.
    pub fn heap_bytes(&self) -> usize {
        self.bins.capacity() * std::mem::size_of::<(i32, u32)>()
    }

    pub fn add(&mut self, value: f64) {
        self.add_n(key(value), 1);
    }

    fn add_n(&mut self, key: i32, n: u32) {
        match self.bins.binary_search_by_key(&key, |&(k, _)| k) {
            Ok(i) => self.bins[i].1 = self.bins[i].1.saturating_add(n),
            Err(i) => self.bins.insert(i, (key, n)),
        }
        self.count += u64::from(n);
    }

    pub fn merge(&mut self, other: &Sketch) {
        if self.bins.is_empty() {
            self.bins.extend_from_slice(&other.bins);
            self.count = other.count;
            return;
        }
        for &(k, n) in &other.bins {
            self.add_n(k, n);
        }
    }

    /// The nearest-rank quantile: the value at rank `ceil(q·n)` (1-based).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        for &(k, n) in &self.bins {
            seen += u64::from(n);
            if seen >= rank {
                return Some(value(k));
            }
        }
        self.bins.last().map(|&(k, _)| value(k))
    }
}

fn key(v: f64) -> i32 {
    if v == 0.0 {
        0
    } else if v > 0.0 {
        KEY_OFFSET + log_gamma_ceil(v)
    } else {
        -(KEY_OFFSET + log_gamma_ceil(-v))
    }
}

fn log_gamma_ceil(v: f64) -> i32 {
    (v.ln() / GAMMA.ln()).ceil() as i32
}

fn value(key: i32) -> f64 {
    if key == 0 {
        0.0
    } else if key > 0 {
        2.0 * GAMMA.powi(key - KEY_OFFSET) / (GAMMA + 1.0)
    } else {
        -(2.0 * GAMMA.powi(-key - KEY_OFFSET) / (GAMMA + 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_preserve_order_and_accuracy() {
        let values = [-5.0, -0.001, 0.0, 1e-9, 0.2, 0.2000001, 1.0, 3.5, 1e12];
        let keys: Vec<i32> = values.iter().map(|&v| key(v)).collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]), "{keys:?}");
        for v in values {
            let r = value(key(v));
            assert!(
                (r - v).abs() <= ALPHA * v.abs() * (1.0 + 1e-9),
                "{v} -> {r}"
            );
        }
    }

    #[test]
    fn quantile_is_nearest_rank() {
        let mut s = Sketch::default();
        for v in 1..=100 {
            s.add(v as f64);
        }
        let p50 = s.quantile(0.5).unwrap();
        assert!((p50 - 50.0).abs() <= 0.5, "{p50}");
        let p99 = s.quantile(0.99).unwrap();
        assert!((p99 - 99.0).abs() <= 0.99, "{p99}");
        assert!(Sketch::default().quantile(0.5).is_none());
    }
}
