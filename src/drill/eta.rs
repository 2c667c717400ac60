//! How long a drill should take on the wall, said before it starts: its
//! phases in event time (the batch going bad, detection by the fastest
//! rule on the scenario's metric, the rollback, recovery once that rule
//! clears), divided by the drill's speed. What the clock does not scale
//! (a human's approval, a real executor's run) is named beside it.

use std::time::Duration;

use super::scenario::Shape;
use crate::decision::Tier;
use crate::rule::RuleSet;
use crate::time::Dur;

/// One phase of the estimate, in event time.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    pub name: &'static str,
    pub event_time: Dur,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Eta {
    pub phases: Vec<Phase>,
    /// The phases' wall time at the drill's speed.
    pub wall: Duration,
}

/// The estimate for a scenario of `shape` on `tier` at `speed`.
pub fn estimate(shape: &Shape, rules: &RuleSet, tier: Tier, speed: f64) -> Eta {
    // The rule that opens the incident first; the incident ends when it
    // clears: its window of bad samples ages out, then `clear_for` holds.
    let fastest = shape.metric.and_then(|m| {
        rules
            .for_metric(m)
            .iter()
            .map(|id| rules.get(*id))
            .filter(|r| r.tiers.contains(tier))
            .filter_map(|r| r.metric())
            .map(|m| {
                let seen = shape.every.millis() * m.min_samples.max(1) as i64;
                let detect = Dur(m.hold_for.millis().max(seen) + shape.every.millis());
                (detect, Dur(m.window.millis() + m.clear_for.millis()))
            })
            .min_by_key(|(detect, _)| *detect)
    });
    let mut phases = vec![Phase {
        name: if shape.metric.is_some() {
            "the batch goes bad"
        } else {
            "the recorded events"
        },
        event_time: shape.bad,
    }];
    if let Some((detect, clear)) = fastest {
        phases.push(Phase {
            name: "detection",
            event_time: detect,
        });
        phases.push(Phase {
            name: "recovery",
            event_time: Dur(clear.millis() + shape.recovery.millis()),
        });
    } else if shape.recovery > Dur::ZERO {
        phases.push(Phase {
            name: "the recorded recovery",
            event_time: shape.recovery,
        });
    }
    let event: i64 = phases.iter().map(|p| p.event_time.millis()).sum();
    Eta {
        phases,
        wall: Duration::from_secs_f64(event as f64 / 1000.0 / speed),
    }
}

impl Eta {
    /// One line: `drill: about 52 s at x60 (the batch goes bad 30s,
    /// detection 2m15s, recovery 2m15s of event time)`.
    pub fn line(&self, speed: f64) -> String {
        let parts: Vec<String> = self
            .phases
            .iter()
            .map(|p| format!("{} {}", p.name, p.event_time))
            .collect();
        format!(
            "drill: about {} at x{speed} ({} of event time)",
            wall_words(self.wall),
            parts.join(", ")
        )
    }
}

/// `45 s`, `3 min 5 s`, `1 h 2 min`.
pub fn wall_words(d: Duration) -> String {
    let s = d.as_secs_f64().round() as u64;
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, 0) => format!("{m} min"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_time_reads_in_words() {
        assert_eq!(wall_words(Duration::from_millis(44_600)), "45 s");
        assert_eq!(wall_words(Duration::from_secs(185)), "3 min 5 s");
        assert_eq!(wall_words(Duration::from_secs(120)), "2 min");
        assert_eq!(wall_words(Duration::from_secs(3720)), "1 h 2 min");
    }
}
