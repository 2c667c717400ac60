//! Bucket layouts. Each aggregation stores only what it needs, so a group's
//! window stays small: 16 bytes per bucket for avg/sum/count/last, 32 for
//! min/max and rate.

use super::sketch::Sketch;

/// One time bucket of a ring.
pub trait Bucket: Clone + Default {
    /// The bucket's epoch (`floor(ts / width)`), valid when not empty.
    fn epoch(&self) -> u32;
    fn is_empty(&self) -> bool;
    /// Empties the bucket and gives it a new epoch.
    fn reset(&mut self, epoch: u32);
    /// Adds a sample; `offset_ms` is its time within the bucket.
    fn add(&mut self, offset_ms: u32, value: f64);
}

/// count / sum: serves avg, sum, count and last (whose value is kept per
/// group, not per bucket). Half the size of [`BasicBucket`], which matters
/// for long baselines at 100k groups.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SumBucket {
    pub epoch: u32,
    pub count: u32,
    pub sum: f64,
}

impl Bucket for SumBucket {
    fn epoch(&self) -> u32 {
        self.epoch
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn reset(&mut self, epoch: u32) {
        *self = SumBucket {
            epoch,
            ..SumBucket::default()
        };
    }

    fn add(&mut self, _offset_ms: u32, value: f64) {
        self.count = self.count.saturating_add(1);
        self.sum += value;
    }
}

/// count / sum / min / max: serves min and max.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BasicBucket {
    pub epoch: u32,
    pub count: u32,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Default for BasicBucket {
    fn default() -> Self {
        BasicBucket {
            epoch: 0,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Bucket for BasicBucket {
    fn epoch(&self) -> u32 {
        self.epoch
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn reset(&mut self, epoch: u32) {
        *self = BasicBucket {
            epoch,
            ..BasicBucket::default()
        };
    }

    fn add(&mut self, _offset_ms: u32, value: f64) {
        self.count = self.count.saturating_add(1);
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }
}

/// First and last sample of the bucket (by time; ties: first arrival is
/// first, last arrival is last): serves `rate`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CounterBucket {
    pub epoch: u32,
    pub count: u32,
    pub first_off: u32,
    pub last_off: u32,
    pub first: f64,
    pub last: f64,
}

impl Bucket for CounterBucket {
    fn epoch(&self) -> u32 {
        self.epoch
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn reset(&mut self, epoch: u32) {
        *self = CounterBucket {
            epoch,
            ..CounterBucket::default()
        };
    }

    fn add(&mut self, offset_ms: u32, value: f64) {
        if self.count == 0 || offset_ms < self.first_off {
            self.first_off = offset_ms;
            self.first = value;
        }
        if self.count == 0 || offset_ms >= self.last_off {
            self.last_off = offset_ms;
            self.last = value;
        }
        self.count = self.count.saturating_add(1);
    }
}

/// A quantile sketch per bucket: serves the percentiles.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SketchBucket {
    pub epoch: u32,
    pub sketch: Sketch,
}

impl Bucket for SketchBucket {
    fn epoch(&self) -> u32 {
        self.epoch
    }

    fn is_empty(&self) -> bool {
        self.sketch.count() == 0
    }

    fn reset(&mut self, epoch: u32) {
        self.epoch = epoch;
        self.sketch.clear();
    }

    fn add(&mut self, _offset_ms: u32, value: f64) {
        self.sketch.add(value);
    }
}
