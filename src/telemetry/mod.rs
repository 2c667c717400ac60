//! Internal telemetry: one method per thing that happens, writing the metric
//! (and, where it matters to an operator, the log line) together so names
//! stay consistent. Exposed on `GET /metrics`: OpenMetrics, or Prometheus'
//! classic text format for a client that asks for `text/plain` (promtool,
//! older scrapers). Every count is a counter ending in `_total`; label
//! values are snake_case; `process_*` are the usual process metrics.
//! `README.md`'s metric table names exactly what is exported (a test reads
//! both).

pub mod log;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::decision::{Action, Tier};

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Source {
    Kafka,
    Http,
    Warmup,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Kafka => "kafka",
            Source::Http => "http",
            Source::Warmup => "warmup",
        }
    }
}

/// A label value written as its `as_str()` (snake_case).
macro_rules! label_value_as_str {
    ($t:ty) => {
        impl EncodeLabelValue for $t {
            fn encode(&self, e: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(e, self.as_str())
            }
        }
    };
}

label_value_as_str!(Source);

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
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

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Processed => "processed",
            Outcome::DecodeError => "decode_error",
            Outcome::FromTheFuture => "from_the_future",
            Outcome::Forwarded => "forwarded",
            Outcome::DrillRefused => "drill_refused",
        }
    }
}

label_value_as_str!(Outcome);

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
    samples_late: Total,
    alert_memory_bytes: Gauge,
    alerts_refused_memory: Total,
    labels_cut: Total,
    journal_commit_errors: Counter,
    journal_last_commit: Gauge<f64, AtomicU64>,
    action_queue: Family<LaneLabel, Gauge>,
    oldest_approval: Gauge<f64, AtomicU64>,
    pending_approvals: Gauge,
    open_incidents: Family<TierLabel, Gauge>,
    partition_owned: Family<PartitionName, Gauge>,
    ready: Gauge,
    memory_limit: Family<BudgetLabels, Gauge>,
    memory_used: Family<BudgetLabels, Gauge>,
    memory_refused: Family<BudgetLabels, Counter>,
    /// Read at every render (they are atomics; no loop needs to report them).
    budgets: std::sync::OnceLock<crate::limits::Budgets>,
    warmup_seconds: Histogram,
    messages: Family<MessageLabels, Counter>,
    stdout_dropped: Counter,
    charts: Family<OutcomeLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

/// A counter fed from a running total kept elsewhere (the engines' stats):
/// it goes up by what the total gained since last read. A total that went
/// down (an engine dropped with its partition) restarts from there.
#[derive(Debug, Default)]
struct Total {
    counter: Counter,
    last: AtomicU64,
}

impl Total {
    fn observe(&self, total: u64) {
        let last = self.last.swap(total, Ordering::Relaxed);
        if total > last {
            self.counter.inc_by(total - last);
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TierLabel {
    tier: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LaneLabel {
    lane: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionName {
    partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// `process_*`: CPU, memory and file descriptors of this process, read when
/// scraped (Linux' /proc; elsewhere only what getrusage and getrlimit say).
#[derive(Debug)]
struct ProcessCollector {
    /// Unix seconds this process started (when its metrics were made).
    started: f64,
}

impl ProcessCollector {
    fn status_kib(field: &str) -> Option<f64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse::<f64>().ok()
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use nix::sys::resource::{Resource, UsageWho, getrlimit, getrusage};
        let cpu = getrusage(UsageWho::RUSAGE_SELF)
            .map(|u| {
                let tv = |t: nix::sys::time::TimeVal| {
                    t.tv_sec() as f64 + t.tv_usec() as f64 / 1_000_000.0
                };
                tv(u.user_time()) + tv(u.system_time())
            })
            .unwrap_or(0.0);
        let c = ConstCounter::new(cpu);
        c.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            None,
            c.metric_type(),
        )?)?;
        let mut gauge = |name: &str, help: &str, v: Option<f64>| -> Result<(), std::fmt::Error> {
            if let Some(v) = v {
                let g = ConstGauge::new(v);
                g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
            }
            Ok(())
        };
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            Self::status_kib("VmRSS:").map(|k| k * 1024.0),
        )?;
        gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            Self::status_kib("VmSize:").map(|k| k * 1024.0),
        )?;
        gauge(
            "process_open_fds",
            "Open file descriptors",
            std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count().saturating_sub(1) as f64),
        )?;
        gauge(
            "process_max_fds",
            "The open-file limit (soft)",
            getrlimit(Resource::RLIMIT_NOFILE)
                .ok()
                .map(|(soft, _)| soft as f64),
        )?;
        gauge(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds",
            Some(self.started),
        )?;
        Ok(())
    }
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
        let mut root = Registry::default();
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        root.register_collector(Box::new(ProcessCollector { started }));
        let registry = root.sub_registry_with_prefix("ripcord");
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
            samples_late: Total::default(),
            alert_memory_bytes: Gauge::default(),
            alerts_refused_memory: Total::default(),
            labels_cut: Total::default(),
            journal_commit_errors: Counter::default(),
            journal_last_commit: Gauge::default(),
            action_queue: Family::default(),
            oldest_approval: Gauge::default(),
            pending_approvals: Gauge::default(),
            open_incidents: Family::default(),
            partition_owned: Family::default(),
            ready: Gauge::default(),
            memory_limit: Family::default(),
            memory_used: Family::default(),
            memory_refused: Family::default(),
            budgets: std::sync::OnceLock::new(),
            warmup_seconds: latency_histogram(),
            messages: Family::default(),
            stdout_dropped: Counter::default(),
            charts: Family::default(),
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
            "Decisions already in the journal when derived again: after a restart, or a second copy of an alert (not acted on again)",
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
            m.alerts_refused_memory.counter.clone(),
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
            m.labels_cut.counter.clone(),
        );
        registry.register(
            "samples_late",
            "Samples dropped as later than the allowed lateness",
            m.samples_late.counter.clone(),
        );
        registry.register(
            "journal_commit_errors",
            "Journal commits that failed (the batch is held and retried)",
            m.journal_commit_errors.clone(),
        );
        registry.register(
            "journal_last_commit_timestamp_seconds",
            "When the pipeline last committed a batch to the journal (Unix seconds; nothing commits while no event comes)",
            m.journal_last_commit.clone(),
        );
        registry.register(
            "action_queue",
            "Actions waiting in the journal to be started, by lane (executors: rollbacks and pauses; messages)",
            m.action_queue.clone(),
        );
        registry.register(
            "oldest_pending_approval_seconds",
            "How long the oldest approval request still waiting has waited (0: none waits)",
            m.oldest_approval.clone(),
        );
        registry.register(
            "pending_approvals",
            "Approval requests waiting for a human",
            m.pending_approvals.clone(),
        );
        registry.register(
            "open_incidents",
            "Incidents open, by tier",
            m.open_incidents.clone(),
        );
        registry.register(
            "partition_owned",
            "1 for each input partition this replica owns (its engine and commits), 0 once it lost it",
            m.partition_owned.clone(),
        );
        registry.register(
            "ready",
            "1 while /readyz says ready, else 0",
            m.ready.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the version of the running ripcord as a label",
            build,
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
        registry.register(
            "alert_charts",
            "Alert incidents' charts asked of Prometheus, by outcome (fetched, failed, dropped)",
            m.charts.clone(),
        );
        Metrics {
            registry: root,
            ..m
        }
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

    /// Every metric in Prometheus' classic text format (0.0.4).
    pub fn render_classic(&self) -> String {
        classic_of(&self.render())
    }

    /// A pipeline batch committed to the journal (or not).
    pub fn journal_commit_outcome(&self, ok: bool) {
        if ok {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            self.journal_last_commit.set(now);
        } else {
            self.journal_commit_errors.inc();
        }
    }

    /// Actions waiting to start in `lane`.
    pub fn action_queue(&self, lane: &str, waiting: u64) {
        self.action_queue
            .get_or_create(&LaneLabel {
                lane: lane.to_owned(),
            })
            .set(waiting as i64);
    }

    /// Approval requests waiting, and how long the oldest has waited.
    pub fn pending_approvals(&self, waiting: usize, oldest_seconds: f64) {
        self.pending_approvals.set(waiting as i64);
        self.oldest_approval.set(oldest_seconds);
    }

    pub fn open_incidents(&self, tier: &str, open: usize) {
        self.open_incidents
            .get_or_create(&TierLabel {
                tier: tier.to_owned(),
            })
            .set(open as i64);
    }

    /// Whether this replica owns `partition` (as `topic/N`, or `http`).
    pub fn partition_owned(&self, partition: &str, owned: bool) {
        self.partition_owned
            .get_or_create(&PartitionName {
                partition: partition.to_owned(),
            })
            .set(i64::from(owned));
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
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

    /// The engines' sizes and their running totals of late samples.
    pub fn engine_size(&self, groups: usize, bytes: usize, late: u64) {
        self.engine_groups.set(groups as i64);
        self.engine_state_bytes.set(bytes as i64);
        self.samples_late.observe(late);
    }

    pub fn alert_memory(&self, bytes: usize, refused: u64, labels_cut: u64) {
        self.alert_memory_bytes.set(bytes as i64);
        self.alerts_refused_memory.observe(refused);
        self.labels_cut.observe(labels_cut);
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
            // The budget keeps a running total; the counter follows it.
            let refused = self.memory_refused.get_or_create(&l);
            let (total, shown) = (b.refused(), refused.get());
            if total > shown {
                refused.inc_by(total - shown);
            }
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

    /// An alert chart fetched, failed or dropped (see `report::prometheus`).
    pub fn chart(&self, outcome: &str) {
        self.charts
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn stdout_dropped(&self) {
        self.stdout_dropped.inc();
    }
}

/// OpenMetrics text as Prometheus' classic text format: a counter's
/// `# HELP`/`# TYPE` name its `_total` samples, `unknown` is `untyped`,
/// `info` a gauge, and `# UNIT` and `# EOF` go.
fn classic_of(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut counters = std::collections::HashSet::new();
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, "counter")) = rest.split_once(' ') {
                counters.insert(name.to_owned());
            }
        }
    }
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let name = if counters.contains(name) {
                    format!("{name}_total")
                } else {
                    name.to_owned()
                };
                let tail = match (prefix, tail) {
                    ("# TYPE ", "unknown") => "untyped",
                    ("# TYPE ", "info") => "gauge",
                    _ => tail,
                };
                out.push_str(prefix);
                out.push_str(&name);
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Refreshes, every `every`, the gauges read from the journal: actions
/// waiting per lane and the oldest approval request still waiting. On its
/// own connection, so nothing else waits for it.
pub async fn watch_journal(
    journal: crate::journal::Shared<dyn crate::journal::Reads>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn crate::time::Clock>,
    every: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let now = clock.now();
        let read = journal
            .with(move |j| Ok((j.pending_actions()?, j.gauges()?)))
            .await;
        match read {
            Ok((waiting, gauges)) => {
                for tier in crate::decision::Tier::ALL {
                    let open = gauges
                        .open_by_tier
                        .iter()
                        .find(|(t, _)| t == tier.as_str())
                        .map_or(0, |(_, n)| *n);
                    metrics.open_incidents(tier.as_str(), open as usize);
                }
                for lane in crate::decision::Lane::ALL {
                    let n: u64 = waiting
                        .iter()
                        .filter(|(a, _)| crate::decision::Lane::of(*a) == lane)
                        .map(|(_, n)| n)
                        .sum();
                    metrics.action_queue(lane.as_str(), n);
                }
                let oldest = gauges.oldest_awaiting.map(|at| now.since(at));
                metrics.pending_approvals(
                    gauges.awaiting_approvals as usize,
                    oldest.map_or(0.0, |d| d.as_secs_f64()),
                );
            }
            Err(e) => tracing::debug!(error = %e, "telemetry: cannot read the journal"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric with a series (each method called once), by the name
    /// of its samples in the classic format.
    fn exported() -> std::collections::BTreeSet<String> {
        let m = Metrics::new();
        m.event(Source::Http, Outcome::Processed);
        m.decode_error(Source::Http, "syntax");
        m.decision(
            crate::decision::Action::Rollback,
            crate::decision::Tier::Low,
        );
        m.duplicate_decision();
        m.consumer_lag("t", 0, 1);
        m.dead_letter();
        m.journal_commit(0.001);
        m.journal_commit_outcome(true);
        m.journal_commit_outcome(false);
        m.action_finished(crate::decision::Action::Rollback, "done", 0.1);
        m.http_request("/metrics", 200);
        m.engine_size(1, 1, 1);
        m.alert_memory(1, 1, 1);
        m.message("chat", "sent");
        m.warmup(0.1);
        m.stdout_dropped();
        m.chart("fetched");
        m.action_queue("executors", 0);
        m.pending_approvals(0, 0.0);
        m.open_incidents("low", 0);
        m.partition_owned("t/0", true);
        m.set_ready(true);
        m.watch_budgets(crate::limits::Budgets::new(&Default::default()));
        m.render_classic()
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_readme_names_exactly_the_exported_metrics() {
        let exported = exported();
        let readme = include_str!("../../README.md");
        let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let mut named = std::collections::BTreeSet::new();
        for prefix in ["ripcord_", "process_"] {
            for (at, _) in readme.match_indices(prefix) {
                if readme[..at].ends_with(is_name) {
                    continue;
                }
                let name: String = readme[at..].chars().take_while(|c| is_name(*c)).collect();
                if name == prefix {
                    continue; // `process_*`: the family of names
                }
                // A histogram's series are named by its family.
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| exported.contains(*f)))
                    .map_or(name.clone(), str::to_owned);
                named.insert(family);
            }
        }
        let missing: Vec<&String> = exported.difference(&named).collect();
        let unknown: Vec<&String> = named.difference(&exported).collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "README.md does not name {missing:?}; it names {unknown:?}, which are not exported"
        );
    }

    #[test]
    fn counts_are_counters_with_snake_case_labels_in_both_formats() {
        let m = Metrics::new();
        m.event(Source::Kafka, Outcome::DecodeError);
        m.engine_size(1, 2, 5);
        m.engine_size(1, 2, 7);
        m.engine_size(1, 2, 3); // an engine dropped: no negative step
        m.engine_size(1, 2, 4);
        let om = m.render();
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(
            om.contains("ripcord_events_total{source=\"kafka\",outcome=\"decode_error\"} 1"),
            "{om}"
        );
        assert!(om.contains("ripcord_samples_late_total 8"), "{om}");
        assert!(om.contains("# TYPE ripcord_samples_late counter"), "{om}");
        assert!(om.contains("ripcord_build_info{version="), "{om}");
        assert!(om.contains("process_cpu_seconds_total "), "{om}");
        assert!(om.contains("process_resident_memory_bytes "), "{om}");
        let classic = m.render_classic();
        assert!(!classic.contains("# EOF"), "{classic}");
        assert!(
            classic.contains("# TYPE ripcord_samples_late_total counter"),
            "{classic}"
        );
        assert!(
            classic.contains("# HELP ripcord_events_total Events"),
            "{classic}"
        );
        assert!(
            classic.contains("# TYPE process_cpu_seconds_total counter"),
            "{classic}"
        );
    }
}
