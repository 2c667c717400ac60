//! Per-minute tallies of a service's request success, per batch: what the
//! gate judges a batch on. The pipeline counts the samples it ingests and
//! commits the tallies with the batch's positions, so a sample replayed
//! after a crash is never counted twice and any replica can read them.

use std::collections::HashMap;

use crate::event::Event;
pub use crate::journal::TallyRow;
use crate::rule::TierResolver;
use crate::time::Ts;

/// Counts success samples until the next commit takes them. Keyed
/// service -> batch -> minute, so a sample of a row already there is
/// counted without allocating.
#[derive(Debug, Default)]
pub struct Tally {
    rows: hashbrown::HashMap<String, hashbrown::HashMap<String, hashbrown::HashMap<i64, TallyRow>>>,
}

/// Longest service or batch label value tallied; longer ones are skipped
/// (a label that long is not a service name, and the row would be unbounded).
const MAX_KEY_BYTES: usize = 256;

impl Tally {
    /// Counts `e` if it is a sample of `metric` for a service.
    pub fn observe(&mut self, e: &Event<'_>, metric: &str, tiers: &TierResolver) {
        let Event::Sample(s) = e else { return };
        if s.metric != metric || !s.value.is_finite() {
            return;
        }
        let Some(service) = s.labels.get("service") else {
            return;
        };
        let batch = s.labels.get("batch").unwrap_or("");
        if service.len() > MAX_KEY_BYTES || batch.len() > MAX_KEY_BYTES {
            return;
        }
        let minute = s.ts.millis() - s.ts.millis().rem_euclid(60_000);
        let row = self
            .rows
            .entry_ref(service)
            .or_default()
            .entry_ref(batch)
            .or_default()
            .entry(minute)
            .or_insert_with(|| TallyRow {
                service: service.to_owned(),
                batch: batch.to_owned(),
                minute: Ts(minute),
                samples: 0,
                sum: 0.0,
                low: f64::INFINITY,
                // The tier of the minute's first sample.
                tier: tiers.resolve(&s.labels),
            });
        row.samples += 1;
        row.sum += s.value;
        row.low = row.low.min(s.value);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn each(&self) -> impl Iterator<Item = &TallyRow> {
        self.rows
            .values()
            .flat_map(|b| b.values())
            .flat_map(|m| m.values())
    }

    /// The rows counted since the last [`Tally::clear`], for a commit.
    pub fn rows(&self) -> Vec<TallyRow> {
        let mut v: Vec<TallyRow> = self.each().cloned().collect();
        v.sort_by(|a, b| (&a.service, &a.batch, a.minute).cmp(&(&b.service, &b.batch, b.minute)));
        v
    }

    /// After a commit took the rows (or a partition was lost).
    pub fn clear(&mut self) {
        self.rows.clear();
    }
}

/// The rows of several tallies (one per partition) with rows of the same
/// (service, batch, minute) folded into one: a journal writes each key once.
pub fn merged<'a>(tallies: impl Iterator<Item = &'a Tally>) -> Vec<TallyRow> {
    let mut out: HashMap<(&str, &str, i64), TallyRow> = HashMap::new();
    for t in tallies {
        for r in t.each() {
            out.entry((r.service.as_str(), r.batch.as_str(), r.minute.millis()))
                .and_modify(|m| m.merge(r))
                .or_insert_with(|| r.clone());
        }
    }
    let mut v: Vec<TallyRow> = out.into_values().collect();
    v.sort_by(|a, b| (&a.service, &a.batch, a.minute).cmp(&(&b.service, &b.batch, b.minute)));
    v
}
