//! Internal telemetry: one method per thing that happens, writing the metric
//! (and, where it matters to an operator, the log line) together so names
//! stay consistent. Exposed on `GET /metrics` in the OpenMetrics text format.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::decision::{Action, Tier};

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Source {
    Kafka,
    Http,
    Warmup,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Outcome {
    Processed,
    DecodeError,
    FromTheFuture,
    /// A metric sample taken over HTTP and produced onto the Kafka topic,
    /// for the replica that owns its service's partition.
    Forwarded,
    /// A message a drill produced (it carries the drill marker), refused by
    /// a responder that is not the drill's.
    DrillRefused,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    source: Source,
    outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecodeLabels {
    source: Source,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    action: String,
    tier: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    endpoint: String,
    code: u16,
}

/// All of ripcord's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    events: Family<EventLabels, Counter>,
    decode_errors: Family<DecodeLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    duplicate_decisions: Counter,
    consumer_lag: Family<PartitionLabels, Gauge>,
    dead_letters: Counter,
    journal_commit: Histogram,
    actions: Family<ActionLabels, Counter>,
    action_seconds: Family<ActionLabels, Histogram>,
    http_requests: Family<HttpLabels, Counter>,
    engine_groups: Gauge,
    engine_state_bytes: Gauge,
    samples_late: Gauge<u64, AtomicU64>,
    alert_memory_bytes: Gauge,
    alerts_refused_memory: Gauge<u64, AtomicU64>,
    labels_cut: Gauge<u64, AtomicU64>,
    memory_limit: Family<BudgetLabels, Gauge>,
    memory_used: Family<BudgetLabels, Gauge>,
    memory_refused: Family<BudgetLabels, Gauge<u64, AtomicU64>>,
    /// Read at every render (they are atomics; no loop needs to report them).
    budgets: std::sync::OnceLock<crate::limits::Budgets>,
    warmup_seconds: Histogram,
    messages: Family<MessageLabels, Counter>,
    stdout_dropped: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    budget: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    channel: String,
    outcome: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~100 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 21))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ripcord");
        let m = Metrics {
            events: Family::default(),
            decode_errors: Family::default(),
            decisions: Family::default(),
            duplicate_decisions: Counter::default(),
            consumer_lag: Family::default(),
            dead_letters: Counter::default(),
            journal_commit: latency_histogram(),
            actions: Family::default(),
            action_seconds: Family::new_with_constructor(latency_histogram),
            http_requests: Family::default(),
            engine_groups: Gauge::default(),
            engine_state_bytes: Gauge::default(),
            samples_late: Gauge::default(),
            alert_memory_bytes: Gauge::default(),
            alerts_refused_memory: Gauge::default(),
            labels_cut: Gauge::default(),
            memory_limit: Family::default(),
            memory_used: Family::default(),
            memory_refused: Family::default(),
            budgets: std::sync::OnceLock::new(),
            warmup_seconds: latency_histogram(),
            messages: Family::default(),
            stdout_dropped: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "events",
            "Events read, by source and outcome (a rejected message or body counts as one)",
            m.events.clone(),
        );
        registry.register(
            "decode_errors",
            "Inputs rejected by the decoder, by reason",
            m.decode_errors.clone(),
        );
        registry.register(
            "decisions",
            "Decisions journaled, by action and tier",
            m.decisions.clone(),
        );
        registry.register(
            "duplicate_decisions",
            "Decisions re-derived after a restart and already in the journal (not acted on again)",
            m.duplicate_decisions.clone(),
        );
        registry.register(
            "consumer_lag",
            "Messages behind the partition's end",
            m.consumer_lag.clone(),
        );
        registry.register(
            "dead_letters",
            "Poison messages copied to the dead-letter topic",
            m.dead_letters.clone(),
        );
        registry.register(
            "journal_commit_seconds",
            "Time to commit a batch to the journal",
            m.journal_commit.clone(),
        );
        registry.register(
            "actions",
            "Actions finished, by action and final state",
            m.actions.clone(),
        );
        registry.register(
            "action_seconds",
            "Time an action took, by action and final state",
            m.action_seconds.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests, by endpoint and status code",
            m.http_requests.clone(),
        );
        registry.register(
            "engine_groups",
            "Groups held by the engines",
            m.engine_groups.clone(),
        );
        registry.register(
            "engine_state_bytes",
            "Bytes of window and incident state",
            m.engine_state_bytes.clone(),
        );
        registry.register(
            "alert_memory_bytes",
            "Bytes the remembered Alertmanager alerts hold (limits.alerts_bytes bounds it)",
            m.alert_memory_bytes.clone(),
        );
        registry.register(
            "alerts_refused_memory",
            "Alerts refused because remembered alerts filled limits.alerts_bytes",
            m.alerts_refused_memory.clone(),
        );
        registry.register(
            "memory_budget_bytes",
            "Each memory budget's size (limits:), by budget: groups, alerts, silences",
            m.memory_limit.clone(),
        );
        registry.register(
            "memory_used_bytes",
            "Bytes taken from each memory budget",
            m.memory_used.clone(),
        );
        registry.register(
            "memory_refused",
            "New groups, alerts or silences refused because their budget was full",
            m.memory_refused.clone(),
        );
        registry.register(
            "alert_labels_cut",
            "Alert incidents whose labels passed the per-incident budget and were cut",
            m.labels_cut.clone(),
        );
        registry.register(
            "samples_late",
            "Samples dropped as later than the allowed lateness",
            m.samples_late.clone(),
        );
        registry.register(
            "warmup_seconds",
            "Time to warm a partition's windows",
            m.warmup_seconds.clone(),
        );
        registry.register(
            "messages",
            "Messages delivered, by channel and outcome (sent, failed, rejected)",
            m.messages.clone(),
        );
        registry.register(
            "stdout_dropped_lines",
            "Decision lines not printed because stdout was not read (the journal has them)",
            m.stdout_dropped.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        if let Some(b) = self.budgets.get() {
            self.memory_budgets(b);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn event(&self, source: Source, outcome: Outcome) {
        self.events
            .get_or_create(&EventLabels { source, outcome })
            .inc();
    }

    pub fn events(&self, source: Source, outcome: Outcome, n: u64) {
        self.events
            .get_or_create(&EventLabels { source, outcome })
            .inc_by(n);
    }

    pub fn decode_error(&self, source: Source, reason: &str) {
        self.decode_errors
            .get_or_create(&DecodeLabels {
                source,
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn decision(&self, action: Action, tier: Tier) {
        self.decisions
            .get_or_create(&DecisionLabels {
                action: action.as_str().to_owned(),
                tier: tier.as_str().to_owned(),
            })
            .inc();
    }

    pub fn duplicate_decision(&self) {
        self.duplicate_decisions.inc();
    }

    pub fn consumer_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.consumer_lag
            .get_or_create(&PartitionLabels {
                topic: topic.to_owned(),
                partition,
            })
            .set(lag);
    }

    pub fn dead_letter(&self) {
        self.dead_letters.inc();
    }

    pub fn journal_commit(&self, seconds: f64) {
        self.journal_commit.observe(seconds);
    }

    pub fn action_finished(&self, action: Action, state: &str, seconds: f64) {
        let l = ActionLabels {
            action: action.as_str().to_owned(),
            state: state.to_owned(),
        };
        self.actions.get_or_create(&l).inc();
        self.action_seconds.get_or_create(&l).observe(seconds);
    }

    pub fn http_request(&self, endpoint: &str, code: u16) {
        self.http_requests
            .get_or_create(&HttpLabels {
                endpoint: endpoint.to_owned(),
                code,
            })
            .inc();
    }

    pub fn engine_size(&self, groups: usize, bytes: usize, late: u64) {
        self.engine_groups.set(groups as i64);
        self.engine_state_bytes.set(bytes as i64);
        self.samples_late.set(late);
    }

    pub fn alert_memory(&self, bytes: usize, refused: u64, labels_cut: u64) {
        self.alert_memory_bytes.set(bytes as i64);
        self.alerts_refused_memory.set(refused);
        self.labels_cut.set(labels_cut);
    }

    /// Shows the process's memory budgets on every render.
    pub fn watch_budgets(&self, budgets: crate::limits::Budgets) {
        let _ = self.budgets.set(budgets);
    }

    /// Each memory budget's size, use and refusals.
    pub fn memory_budgets(&self, budgets: &crate::limits::Budgets) {
        for b in budgets.all() {
            let l = BudgetLabels {
                budget: b.name().to_owned(),
            };
            self.memory_limit.get_or_create(&l).set(b.limit() as i64);
            self.memory_used.get_or_create(&l).set(b.used() as i64);
            self.memory_refused.get_or_create(&l).set(b.refused());
        }
    }

    /// A message's final delivery outcome on a channel.
    pub fn message(&self, channel: &str, outcome: &str) {
        self.messages
            .get_or_create(&MessageLabels {
                channel: channel.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn warmup(&self, seconds: f64) {
        self.warmup_seconds.observe(seconds);
    }

    pub fn stdout_dropped(&self) {
        self.stdout_dropped.inc();
    }
}
