//! The events the engine understands, whatever wire form they arrived in.
//!
//! Events borrow from the buffer they were decoded from (a Kafka message, an
//! HTTP body, a line of a replay file) so the hot path does not copy strings.

use std::borrow::Cow;
use std::fmt;

use crate::time::Ts;

/// Label pairs in the order they arrived. Small (a handful of pairs), so a
/// linear scan beats hashing.
#[derive(Clone, Default, PartialEq)]
pub struct Labels<'a>(pub Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'a> Labels<'a> {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_owned(self) -> Labels<'static> {
        Labels(
            self.0
                .into_iter()
                .map(|(k, v)| (Cow::Owned(k.into_owned()), Cow::Owned(v.into_owned())))
                .collect(),
        )
    }
}

impl fmt::Debug for Labels<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// One monitoring event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<'a> {
    Sample(Sample<'a>),
    Alert(Alert<'a>),
    Progress(Progress<'a>),
}

impl Event<'_> {
    /// The event's own time: when the sample was taken, when the alert
    /// started (or ended, once resolved), when the orchestrator reported.
    pub fn ts(&self) -> Ts {
        match self {
            Event::Sample(s) => s.ts,
            Event::Alert(a) => a.ts(),
            Event::Progress(p) => p.ts,
        }
    }

    pub fn labels(&self) -> &Labels<'_> {
        match self {
            Event::Sample(s) => &s.labels,
            Event::Alert(a) => &a.labels,
            Event::Progress(p) => &p.labels,
        }
    }

    pub fn kind(&self) -> EventKind {
        match self {
            Event::Sample(_) => EventKind::Sample,
            Event::Alert(_) => EventKind::Alert,
            Event::Progress(_) => EventKind::Progress,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Sample,
    Alert,
    Progress,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Sample => "sample",
            EventKind::Alert => "alert",
            EventKind::Progress => "progress",
        }
    }
}

/// A metric sample. `value` may be NaN: Prometheus writes NaN as a staleness
/// marker when a series disappears; the engine skips non-finite values.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub metric: Cow<'a, str>,
    pub value: f64,
    pub ts: Ts,
    pub labels: Labels<'a>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// One alert out of an Alertmanager webhook payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert<'a> {
    pub status: AlertStatus,
    pub labels: Labels<'a>,
    pub annotations: Labels<'a>,
    pub starts_at: Ts,
    pub ends_at: Option<Ts>,
    /// Alertmanager's identity for the alert's label set; computed from the
    /// labels when the sender did not include one.
    pub fingerprint: Cow<'a, str>,
    /// Prometheus' link to the alert's expression (`generatorURL`), for the
    /// incident's chart; `None` when absent, empty or too long.
    pub generator_url: Option<Cow<'a, str>>,
}

impl Alert<'_> {
    pub fn alertname(&self) -> &str {
        self.labels.get("alertname").unwrap_or("")
    }

    pub fn ts(&self) -> Ts {
        match (self.status, self.ends_at) {
            (AlertStatus::Resolved, Some(end)) => end,
            _ => self.starts_at,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    BatchStarted,
    BatchDone,
    Completed,
    Failed,
}

impl Stage {
    pub fn parse(s: &str) -> Option<Stage> {
        Some(match s {
            "batch_started" => Stage::BatchStarted,
            "batch_done" => Stage::BatchDone,
            "completed" => Stage::Completed,
            "failed" => Stage::Failed,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::BatchStarted => "batch_started",
            Stage::BatchDone => "batch_done",
            Stage::Completed => "completed",
            Stage::Failed => "failed",
        }
    }
}

/// Upgrade progress reported by the rollout orchestrator.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress<'a> {
    pub ts: Ts,
    pub labels: Labels<'a>,
    pub stage: Stage,
    pub done: Option<u64>,
    pub total: Option<u64>,
    /// The batch's instances, when the orchestrator names them (sorted,
    /// each once): the whole batch a human may choose to roll back.
    pub instances: Vec<Cow<'a, str>>,
    pub message: Option<Cow<'a, str>>,
}

impl Progress<'_> {
    /// One line for people: "web batch 2/3 done: 30 of 100 instances
    /// upgraded - <the orchestrator's message>".
    pub fn summary(&self) -> String {
        let service = self.labels.get("service").unwrap_or("?");
        let batch = match (self.labels.get("batch"), self.labels.get("batches")) {
            (Some(b), Some(n)) => format!("batch {b}/{n}"),
            (Some(b), None) => format!("batch {b}"),
            _ => "the rollout".to_owned(),
        };
        let count = match (self.done, self.total) {
            (Some(d), Some(t)) => format!(": {d} of {t} instances upgraded"),
            (Some(d), None) => format!(": {d} instances upgraded"),
            _ => String::new(),
        };
        let mut message = match self.stage {
            Stage::BatchStarted => format!("{service} {batch} started{count}"),
            Stage::BatchDone => format!("{service} {batch} done{count}"),
            Stage::Completed => format!("{service} upgrade completed{count}"),
            Stage::Failed => format!("{service} upgrade failed at {batch}{count}"),
        };
        if let Some(m) = &self.message {
            message.push_str(" - ");
            message.push_str(m);
        }
        message
    }
}
