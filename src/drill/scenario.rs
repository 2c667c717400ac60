//! What a drill plays: the built-in bad batch of a tier, or a recorded
//! event file.
//!
//! A file is JSON lines in any event form `ripcord replay` reads, each with
//! a `ts`. Times are kept relative to the first line and moved to the
//! drill's start. The lines after a line `{"drill": "after_rollback"}` are
//! the recovery: played once the rollback is done, timed from then.

use std::path::Path;

use serde_json::{Value, json};

use crate::decision::Tier;
use crate::time::{Dur, Ts};

/// Samples of the built-in scenario come this often (event time).
const EVERY: Dur = Dur::from_secs(15);
/// The built-in batch goes bad this long after it starts.
const BAD_AFTER: Dur = Dur::from_secs(30);
/// A file scenario that opened nothing this long after its last line is over.
const QUIET_AFTER: Dur = Dur::from_mins(15);
/// Largest scenario file read.
const MAX_FILE_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("scenario {path} line {line}: {reason}")]
    Line {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("scenario {0} has no events before its recovery")]
    Empty(String),
}

/// One event of a file, at its offset from the scenario's start.
/// The built-in scenario's healthy batch, reported done before the bad one.
pub const HEALTHY_BATCH: &str = "0";

#[derive(Debug, Clone)]
struct Recorded {
    offset: Dur,
    event: Value,
}

#[derive(Debug, Clone)]
enum Source {
    BuiltIn {
        tier: Tier,
        service: String,
        instance: String,
        tier_label: String,
    },
    File {
        bad: Vec<Recorded>,
        recovery: Vec<Recorded>,
    },
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    source: Source,
}

/// A line to produce: its Kafka key and payload.
#[derive(Debug, Clone)]
pub struct Line {
    pub key: Option<String>,
    pub payload: String,
}

impl Scenario {
    /// The tier's bad batch: `service`'s batch 1 starts; 30 s later
    /// `instance` answers 30% of requests with a 5xx (the plan's threshold
    /// is 5%), every 15 s, until its rollback is done; then 0.1%.
    pub fn built_in(tier: Tier, service: &str, instance: &str, tier_label: &str) -> Scenario {
        Scenario {
            name: format!("built-in {tier}-tier bad batch (http_5xx_ratio 30% on {instance})"),
            source: Source::BuiltIn {
                tier,
                service: service.to_owned(),
                instance: instance.to_owned(),
                tier_label: tier_label.to_owned(),
            },
        }
    }

    /// Reads a recorded scenario.
    pub fn from_file(path: &Path) -> Result<Scenario, ScenarioError> {
        let name = path.display().to_string();
        let read_err = |reason: String| ScenarioError::Read {
            path: name.clone(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| read_err(e.to_string()))?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(read_err(format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| read_err(e.to_string()))?;
        Scenario::parse(&name, &text)
    }

    pub fn parse(name: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let mut bad = Vec::new();
        let mut recovery = Vec::new();
        let mut in_recovery = false;
        let (mut first_bad, mut first_recovery) = (None::<Ts>, None::<Ts>);
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: String| ScenarioError::Line {
                path: name.to_owned(),
                line: i + 1,
                reason,
            };
            let v: Value = serde_json::from_str(line).map_err(|e| err(e.to_string()))?;
            if v.get("drill").and_then(Value::as_str) == Some("after_rollback") {
                if in_recovery {
                    return Err(err("a second `after_rollback` marker".into()));
                }
                in_recovery = true;
                continue;
            }
            let ts = match v.get("ts") {
                Some(Value::Number(n)) => n.as_i64().map(Ts),
                Some(Value::String(s)) => Ts::parse_rfc3339_general(s).ok(),
                _ => None,
            }
            .ok_or_else(|| err("every event needs a `ts` (milliseconds or RFC 3339)".into()))?;
            let (first, list) = if in_recovery {
                (&mut first_recovery, &mut recovery)
            } else {
                (&mut first_bad, &mut bad)
            };
            let base = *first.get_or_insert(ts);
            if ts < base {
                return Err(err("events must be in time order".into()));
            }
            list.push(Recorded {
                offset: ts.since(base),
                event: v,
            });
        }
        if bad.is_empty() {
            return Err(ScenarioError::Empty(name.to_owned()));
        }
        Ok(Scenario {
            name: name.to_owned(),
            source: Source::File { bad, recovery },
        })
    }

    /// The services the scenario's events are about (the built-in one's
    /// own): the drill follows the first incident of any of them.
    pub fn services(&self) -> Vec<String> {
        match &self.source {
            Source::BuiltIn { service, .. } => vec![service.clone()],
            Source::File { bad, .. } => {
                let mut out: Vec<String> = Vec::new();
                for r in bad {
                    if let Some(s) = r
                        .event
                        .get("labels")
                        .and_then(|l| l.get("service"))
                        .and_then(Value::as_str)
                    {
                        if !out.iter().any(|o| o == s) {
                            out.push(s.to_owned());
                        }
                    }
                }
                out
            }
        }
    }

    /// What the drill's estimate needs: the metric the built-in scenario
    /// breaches, and how long the scenario's own events last before the
    /// rollback (the built-in batch: until it goes bad) and after it.
    pub fn shape(&self) -> Shape {
        let span = |r: &[Recorded]| r.last().map_or(Dur::ZERO, |l| l.offset);
        match &self.source {
            Source::BuiltIn { .. } => Shape {
                metric: Some("http_5xx_ratio"),
                every: EVERY,
                bad: BAD_AFTER,
                recovery: Dur::ZERO,
            },
            Source::File { bad, recovery } => Shape {
                metric: None,
                every: EVERY,
                bad: span(bad),
                recovery: span(recovery),
            },
        }
    }

    /// Plays the scenario from `start` (event time).
    pub fn player(&self, start: Ts) -> Player {
        Player {
            scenario: self.clone(),
            start,
            next_bad: 0,
            next_recovery: 0,
            next_sample: start,
            said_batch: false,
        }
    }
}

/// See [`Scenario::shape`].
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub metric: Option<&'static str>,
    /// How often the built-in scenario samples.
    pub every: Dur,
    pub bad: Dur,
    pub recovery: Dur,
}

/// Where a scenario is.
#[derive(Debug)]
pub struct Player {
    scenario: Scenario,
    start: Ts,
    next_bad: usize,
    next_recovery: usize,
    next_sample: Ts,
    said_batch: bool,
}

fn stamped(event: &Value, at: Ts) -> Line {
    let mut v = event.clone();
    v["ts"] = json!(at.millis());
    let key = v
        .get("labels")
        .and_then(|l| l.get("service"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Line {
        key,
        payload: v.to_string(),
    }
}

impl Player {
    /// The lines due at `now`; the recovery only once the rollback is done
    /// (`recovering_since`).
    pub fn due(&mut self, now: Ts, recovering_since: Option<Ts>) -> Vec<Line> {
        let mut out = Vec::new();
        match &self.scenario.source {
            Source::BuiltIn {
                tier,
                service,
                instance,
                tier_label,
            } => {
                let labels = |extra: &[(&str, &str)]| {
                    let mut l = json!({"service": service, tier_label.as_str(): tier.as_str()});
                    for (k, v) in extra {
                        l[*k] = json!(v);
                    }
                    l
                };
                if !self.said_batch {
                    self.said_batch = true;
                    // A healthy batch before the bad one: its tier's sample
                    // check (medium: 10%, one of the ten) runs on it.
                    let healthy: Vec<String> =
                        (0..10).map(|i| format!("{instance}-b0-{i}")).collect();
                    out.push(stamped(
                        &json!({"kind": "progress", "stage": "batch_done", "done": 10, "total": 11,
                            "instances": healthy,
                            "labels": labels(&[("batch", HEALTHY_BATCH)]),
                            "message": "drill: batch 0 upgraded"}),
                        self.start,
                    ));
                    out.push(stamped(
                        &json!({"kind": "progress", "stage": "batch_started", "done": 0, "total": 1,
                            "labels": labels(&[("batch", "1")]),
                            "message": "drill: batch 1 upgrading"}),
                        self.start,
                    ));
                }
                while self.next_sample <= now {
                    let at = self.next_sample;
                    let bad = at.since(self.start) >= BAD_AFTER && recovering_since.is_none();
                    out.push(stamped(
                        &json!({"metric": "http_5xx_ratio", "value": if bad { 0.30 } else { 0.001 },
                            "labels": labels(&[("instance", instance), ("batch", "1")])}),
                        at,
                    ));
                    self.next_sample = at.saturating_add(EVERY);
                }
            }
            Source::File { bad, recovery } => {
                while let Some(r) = bad.get(self.next_bad) {
                    let at = self.start.saturating_add(r.offset);
                    if at > now {
                        break;
                    }
                    out.push(stamped(&r.event, at));
                    self.next_bad += 1;
                }
                if let Some(since) = recovering_since {
                    while let Some(r) = recovery.get(self.next_recovery) {
                        let at = since.saturating_add(r.offset);
                        if at > now {
                            break;
                        }
                        out.push(stamped(&r.event, at));
                        self.next_recovery += 1;
                    }
                }
            }
        }
        out
    }

    /// A recorded scenario played to its end that opened nothing in the
    /// quarter hour after: nothing more will happen.
    pub fn exhausted_without_incident(&self, now: Ts, incident_seen: bool) -> bool {
        match &self.scenario.source {
            Source::BuiltIn { .. } => false,
            Source::File { bad, .. } => {
                !incident_seen
                    && self.next_bad == bad.len()
                    && bad.last().is_some_and(|last| {
                        now >= self
                            .start
                            .saturating_add(last.offset)
                            .saturating_add(QUIET_AFTER)
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_keeps_its_timing_and_waits_for_the_rollback_to_recover() {
        let s = Scenario::parse(
            "t.jsonl",
            r#"{"metric":"http_5xx_ratio","value":0.3,"ts":"2026-11-21T10:00:00Z","labels":{"service":"web"}}
{"metric":"http_5xx_ratio","value":0.3,"ts":"2026-11-21T10:00:30Z","labels":{"service":"web"}}
{"drill":"after_rollback"}
{"metric":"http_5xx_ratio","value":0.0,"ts":"2026-11-21T10:09:00Z","labels":{"service":"web"}}
"#,
        )
        .unwrap();
        let start = Ts(1_000_000);
        let mut p = s.player(start);
        let first = p.due(start, None);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].key.as_deref(), Some("web"));
        assert!(
            first[0].payload.contains("\"ts\":1000000"),
            "{}",
            first[0].payload
        );
        assert!(p.due(Ts(1_029_999), None).is_empty());
        assert_eq!(p.due(Ts(1_030_000), None).len(), 1);
        assert!(p.due(Ts(9_000_000), None).is_empty(), "recovery waits");
        let rec = p.due(Ts(9_000_000), Some(Ts(8_000_000)));
        assert_eq!(rec.len(), 1);
        assert!(rec[0].payload.contains("\"ts\":8000000"));
    }

    #[test]
    fn bad_files_say_which_line() {
        for (text, want) in [
            ("{\"metric\":\"m\"}\n", "line 1: every event needs a `ts`"),
            ("not json\n", "line 1"),
            (
                "{\"ts\":5}\n{\"ts\":4}\n",
                "line 2: events must be in time order",
            ),
            ("{\"drill\":\"after_rollback\"}\n", "no events before"),
        ] {
            let e = Scenario::parse("s.jsonl", text).unwrap_err().to_string();
            assert!(e.contains(want), "{e} lacks {want}");
        }
    }

    #[test]
    fn the_built_in_batch_goes_bad_then_heals_after_the_rollback() {
        let s = Scenario::built_in(Tier::Low, "drill-low", "i-drill-1", "tier");
        let start = Ts(0);
        let mut p = s.player(start);
        let lines = p.due(Ts(45_000), None);
        // The healthy batch done (its sample check), batch 1 started, then
        // samples at 0, 15, 30 and 45 s: bad from 30 s.
        assert!(
            lines[0].payload.contains("batch_done") && lines[0].payload.contains("i-drill-1-b0-9")
        );
        assert!(lines[1].payload.contains("batch_started"));
        let values: Vec<bool> = lines[2..]
            .iter()
            .map(|l| l.payload.contains("0.3"))
            .collect();
        assert_eq!(values, [false, false, true, true]);
        assert!(lines[2].payload.contains("\"tier\":\"low\""));
        let healed = p.due(Ts(60_000), Some(Ts(50_000)));
        assert!(healed[0].payload.contains("0.001"));
    }
}
