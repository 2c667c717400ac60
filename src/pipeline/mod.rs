//! The pipeline: input bytes -> decode -> engine -> journal -> stdout and
//! the action dispatcher. One engine per input partition (a Kafka
//! partition, or `http`), so a partition's state can be dropped when it is
//! revoked and rebuilt when it is assigned.
//!
//! Synchronous by design: a shard's [`driver`] owns it and drives it from
//! one thread, in order, and it commits each batch to the journal before
//! anything downstream sees the batch's decisions. Partitions are spread
//! over several shards (`pipeline.shards`), each a pipeline of its own.

pub mod driver;
pub mod input;
pub mod spread;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Notify, oneshot};

use crate::decision::Decision;
use crate::decode::{self, BodyForm, DecodeError, decode_body};
use crate::engine::{Engine, EngineConfig, Incident};
use crate::event::{Event, Stage};
use crate::gate::{GateConfig, Tally, TallyRow};
use crate::journal::{Batch, Ingest, JournalError, OpenIncident, UpgradeRow};
use crate::output::Output;
use crate::rule::RuleSet;
use crate::telemetry::{Metrics, Outcome, Source};
use crate::time::{Clock, Dur, Ts};

/// The `pipeline:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineConfig {
    /// Engine shards, each a thread with its own windows and incidents;
    /// Kafka partitions are spread over them, whole. More shards than
    /// assigned partitions stand idle. Default: the number of cores.
    pub shards: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            shards: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

pub fn read_config(
    mut m: crate::config::yaml::MapReader<'_>,
    out: &mut PipelineConfig,
    errs: &mut crate::config::Errors,
) {
    if let Some(n) = m.int("shards", 1..=256, errs) {
        out.shards = n as usize;
    }
    m.finish(errs);
}

/// The partition name HTTP input is journaled under.
pub const HTTP_PARTITION: &str = "http";

/// Where the answer to an HTTP submission goes.
pub type Ack = oneshot::Sender<Result<Accepted, String>>;

/// An HTTP body accepted by the receiver, waiting for the pipeline.
pub struct Submission {
    pub body: bytes::Bytes,
    pub form: BodyForm,
    /// Answered once the body's decisions are in the journal.
    pub ack: Ack,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Accepted {
    pub events: usize,
    pub decisions: usize,
    /// Events taken but not used, by why: `late` (older than the allowed
    /// lateness), `too_old` (older than the window), `not_a_number`,
    /// `too_many_groups` (a rule's group cap), `over_memory_budget` (a new
    /// group or alert past `limits:`).
    pub dropped: Vec<(&'static str, u64)>,
    /// Samples of metrics no rule watches.
    pub unwatched: u64,
}

/// What the engine set aside while processing, from its stats before and after.
fn dropped_between(
    before: &crate::engine::Stats,
    after: &crate::engine::Stats,
) -> Vec<(&'static str, u64)> {
    [
        ("late", after.samples_late - before.samples_late),
        ("too_old", after.samples_too_old - before.samples_too_old),
        (
            "not_a_number",
            after.samples_non_finite - before.samples_non_finite,
        ),
        (
            "too_many_groups",
            (after.groups_refused - after.groups_refused_memory - after.alerts_refused_memory)
                - (before.groups_refused
                    - before.groups_refused_memory
                    - before.alerts_refused_memory),
        ),
        (
            "over_memory_budget",
            (after.groups_refused_memory + after.alerts_refused_memory)
                - (before.groups_refused_memory + before.alerts_refused_memory),
        ),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .collect()
}

/// What a commit wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Committed {
    pub decisions: usize,
    pub duplicates: usize,
    /// Input positions now safe to report upstream (Kafka offset store).
    pub positions: Vec<(PartitionId, i64)>,
    /// Partitions found owned by another process: stop reading them.
    pub fenced: Vec<PartitionId>,
}

/// Why an input was set aside as poison.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejected {
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("event time {ts} is {ahead} ahead of ripcord's clock (more than the allowed {max})")]
    FromTheFuture { ts: Ts, ahead: Dur, max: Dur },
}

/// Refuses events stamped further ahead of `now` than `max`: a producer
/// with a broken clock must not drag the engine's watermark into the future
/// (which would make every honest event late).
pub fn not_from_the_future(events: &[Event<'_>], now: Ts, max: Dur) -> Result<(), Rejected> {
    match events.iter().find(|e| e.ts() > now.saturating_add(max)) {
        Some(e) => Err(Rejected::FromTheFuture {
            ts: e.ts(),
            ahead: e.ts().since(now),
            max,
        }),
        None => Ok(()),
    }
}

/// Identifies a partition inside the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartitionId(u32);

pub struct Pipeline {
    rules: Arc<RuleSet>,
    engine_cfg: EngineConfig,
    /// The one role a pipeline plays in the journal.
    journal: Box<dyn Ingest + Send>,
    names: Vec<String>,
    engines: HashMap<PartitionId, Engine>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    out: Arc<Output>,
    dispatch: Arc<Notify>,
    max_future: Dur,
    // The batch being built.
    decisions: Vec<(PartitionId, Decision)>,
    positions: HashMap<PartitionId, i64>,
    inbox: Vec<Vec<u8>>,
    acks: Vec<(spread::PartAck, Accepted)>,
    /// Which HTTP events are this shard's (by service).
    spread: spread::Spread,
    /// Alerts refused for memory, as last said in the log.
    refused_said: u64,
    groups_refused_said: u64,
    /// This process's name as a partition owner.
    owner: String,
    /// The owner epoch held for each claimed (Kafka) partition.
    epochs: HashMap<PartitionId, i64>,
    /// Partitions another process claimed since: their input is ignored
    /// until this process claims them again.
    fenced: HashSet<PartitionId>,
    /// The last HTTP body of another replica followed (its inbox sequence).
    inbox_cursor: i64,
    /// Request-success samples counted for the rollout gates, per partition
    /// (dropped with it), committed with the batch.
    tallies: HashMap<PartitionId, Tally>,
    /// Upgrade progress seen in the batch, committed with it.
    progress: Vec<(PartitionId, UpgradeRow)>,
    gates: Arc<GateConfig>,
    /// Hands alert incidents to the chart fetcher (with `prometheus:`).
    charts: Option<crate::report::prometheus::Charts>,
}

impl Pipeline {
    pub fn new(
        rules: Arc<RuleSet>,
        engine_cfg: EngineConfig,
        journal: Box<dyn Ingest + Send>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        out: Arc<Output>,
        dispatch: Arc<Notify>,
    ) -> Pipeline {
        Pipeline {
            rules,
            engine_cfg,
            journal,
            names: Vec::new(),
            engines: HashMap::new(),
            clock,
            metrics,
            out,
            dispatch,
            max_future: Dur::from_mins(5),
            decisions: Vec::new(),
            positions: HashMap::new(),
            inbox: Vec::new(),
            acks: Vec::new(),
            spread: spread::Spread::default(),
            refused_said: 0,
            groups_refused_said: 0,
            owner: String::new(),
            epochs: HashMap::new(),
            fenced: HashSet::new(),
            inbox_cursor: 0,
            tallies: HashMap::new(),
            progress: Vec::new(),
            gates: Arc::new(GateConfig::default()),
            charts: None,
        }
    }

    /// Where newly journaled alert incidents go to have their chart drawn.
    pub fn set_charts(&mut self, charts: crate::report::prometheus::Charts) {
        self.charts = Some(charts);
    }

    /// What the rollout gates count (their success metric) and keep.
    pub fn set_gates(&mut self, gates: Arc<GateConfig>) {
        self.gates = gates;
    }

    /// What the rollout gates judge on: success samples and progress.
    fn note_for_gates(&mut self, p: PartitionId, events: &[Event<'_>]) {
        let tally = self.tallies.entry(p).or_default();
        for e in events {
            tally.observe(e, &self.gates.success_metric, &self.engine_cfg.tiers);
            if let Event::Progress(pr) = e {
                if let Some(service) = pr.labels.get("service") {
                    self.progress.push((
                        p,
                        UpgradeRow {
                            service: service.to_owned(),
                            batch: pr.labels.get("batch").map(str::to_owned),
                            stage: pr.stage.as_str().to_owned(),
                            done: pr.done,
                            total: pr.total,
                            message: Some(pr.summary()),
                            updated_at: pr.ts,
                            open: !matches!(pr.stage, Stage::Completed | Stage::Failed),
                        },
                    ));
                }
            }
        }
    }

    /// This shard's place among the shards: it decides the HTTP events of
    /// its services only.
    pub fn set_spread(&mut self, spread: spread::Spread) {
        self.spread = spread;
    }

    /// How far ahead of the clock an event's time may be (clock skew).
    pub fn set_max_future(&mut self, d: Dur) {
        self.max_future = d;
    }

    /// This process's name when it claims partitions.
    pub fn set_owner(&mut self, owner: impl Into<String>) {
        self.owner = owner.into();
    }

    /// Takes ownership of a partition in the journal (fencing out whoever
    /// held it): every later commit for it carries the epoch and fails once
    /// another process claims it.
    pub fn claim(&mut self, p: PartitionId) -> Result<i64, JournalError> {
        let name = self.names[p.0 as usize].clone();
        let epoch = self.journal.claim_partition(&name, &self.owner)?;
        self.metrics.partition_owned(&name, true);
        self.epochs.insert(p, epoch);
        self.fenced.remove(&p);
        Ok(epoch)
    }

    /// Whether another process has claimed `p` since this one did.
    pub fn is_fenced(&self, p: PartitionId) -> bool {
        self.fenced.contains(&p)
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// How much history a partition needs re-read to warm its windows.
    pub fn lookback(&self) -> Dur {
        Dur(self.rules.max_lookback().millis() + self.engine_cfg.allowed_lateness.millis())
    }

    pub fn partition(&mut self, name: &str) -> PartitionId {
        if let Some(i) = self.names.iter().position(|n| n == name) {
            return PartitionId(i as u32);
        }
        self.names.push(name.to_owned());
        PartitionId((self.names.len() - 1) as u32)
    }

    /// The partition's id, if it has one.
    pub fn find(&self, name: &str) -> Option<PartitionId> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| PartitionId(i as u32))
    }

    /// The pipeline's clock.
    pub fn now(&self) -> Ts {
        self.clock.now()
    }

    /// When a tick of the partition next has work (wall time), if ever.
    pub fn next_due(&self, p: PartitionId) -> Option<Ts> {
        self.engines.get(&p).and_then(Engine::next_due)
    }

    pub fn name(&self, p: PartitionId) -> &str {
        &self.names[p.0 as usize]
    }

    fn engine(&mut self, p: PartitionId) -> &mut Engine {
        let (rules, cfg) = (&self.rules, &self.engine_cfg);
        self.engines
            .entry(p)
            .or_insert_with(|| Engine::new(rules.clone(), cfg.clone()))
    }

    /// Processes one Kafka message (or any single-object input). `offset`
    /// is recorded so the partition resumes after it.
    pub fn ingest(
        &mut self,
        p: PartitionId,
        payload: &[u8],
        offset: Option<i64>,
    ) -> Result<usize, Rejected> {
        if self.fenced.contains(&p) {
            // Another process owns it now: its input is not ours to act on.
            return Ok(0);
        }
        if let Some(o) = offset {
            self.positions.insert(p, o + 1);
        }
        // Check everything before the engine sees anything: a message is
        // taken whole or not at all.
        let mut events = Vec::new();
        decode::decode(payload, &mut events)?;
        not_from_the_future(&events, self.clock.now(), self.max_future)?;
        let n = events.len();
        self.note_for_gates(p, &events);
        let mut out = Vec::new();
        let engine = self.engine(p);
        for e in &events {
            engine.process(e, &mut out);
        }
        self.decisions.extend(out.drain(..).map(|d| (p, d)));
        Ok(n)
    }

    /// Passes a message set aside whole without reading it (a drill's event
    /// in production): its offset counts as handled.
    pub fn pass(&mut self, p: PartitionId, offset: i64) {
        if !self.fenced.contains(&p) {
            self.positions.insert(p, offset + 1);
        }
    }

    /// Processes this shard's events of an HTTP body already validated by
    /// the receiver. Its answer waits for the next [`Pipeline::commit`].
    pub fn ingest_http(&mut self, s: input::Part) {
        let p = self.partition(HTTP_PARTITION);
        let mut events = Vec::new();
        if let Err(e) = decode_body(&s.body, s.form, &mut events) {
            s.ack.send(Err(e.to_string()));
            return;
        }
        let spread = self.spread;
        events.retain(|e| spread.owns_event(e));
        let before = self.decisions.len();
        self.note_for_gates(p, &events);
        let mut out = Vec::new();
        let engine = self.engine(p);
        let stats_before = engine.stats().clone();
        for e in &events {
            engine.process(e, &mut out);
        }
        let dropped = dropped_between(&stats_before, engine.stats());
        let unwatched = engine.stats().samples_unmatched - stats_before.samples_unmatched;
        self.metrics
            .events(Source::Http, Outcome::Processed, events.len() as u64);
        self.decisions.extend(out.into_iter().map(|d| (p, d)));
        if s.journal_body {
            self.inbox.push(stored_body(s.form, &s.body));
        }
        let accepted = Accepted {
            events: events.len(),
            decisions: self.decisions.len() - before,
            dropped,
            unwatched,
        };
        self.acks.push((s.ack, accepted));
    }

    /// Whether anything waits to be committed.
    pub fn dirty(&self) -> bool {
        !self.decisions.is_empty()
            || !self.positions.is_empty()
            || !self.inbox.is_empty()
            || !self.acks.is_empty()
            || self.tallies.values().any(|t| !t.is_empty())
            || !self.progress.is_empty()
    }

    /// Journals the batch, then prints its new decisions and wakes the
    /// dispatcher. On a journal error nothing is printed or acted on and the
    /// batch is kept whole: call again (after a pause) until it succeeds. The
    /// engine has already moved on, so dropping the batch would lose its
    /// decisions.
    pub fn commit(&mut self) -> Result<Committed, JournalError> {
        let mut lost = Vec::new();
        loop {
            match self.commit_once() {
                Err(JournalError::Fenced {
                    partition: Some(name),
                    reason,
                }) => {
                    // Another process owns the partition now: what this
                    // batch holds for it is dropped, never journaled nor
                    // acted on; the rest commits.
                    let Some(id) = self.names.iter().position(|n| *n == name) else {
                        return Err(JournalError::Fenced {
                            partition: Some(name),
                            reason,
                        });
                    };
                    let id = PartitionId(id as u32);
                    tracing::warn!(partition = %name, %reason, "partition lost to another process: its uncommitted batch is dropped");
                    self.drop_partition(id);
                    self.epochs.remove(&id);
                    self.fenced.insert(id);
                    lost.push(id);
                }
                Ok(mut c) => {
                    c.fenced = lost;
                    return Ok(c);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn commit_once(&mut self) -> Result<Committed, JournalError> {
        if !self.dirty() {
            return Ok(Committed::default());
        }
        let started = Instant::now();
        let names = &self.names;
        let touched: HashSet<PartitionId> = self
            .decisions
            .iter()
            .map(|(p, _)| *p)
            .chain(self.positions.keys().copied())
            .collect();
        let epochs: Vec<(&str, i64)> = touched
            .iter()
            .filter_map(|p| {
                self.epochs
                    .get(p)
                    .map(|e| (names[p.0 as usize].as_str(), *e))
            })
            .collect();
        let tallies: Vec<TallyRow> = crate::gate::tally::merged(self.tallies.values());
        let progress: Vec<UpgradeRow> = self.progress.iter().map(|(_, u)| u.clone()).collect();
        let batch = Batch {
            tallies: &tallies,
            progress: &progress,
            epochs,
            decisions: self
                .decisions
                .iter()
                .map(|(p, d)| (names[p.0 as usize].as_str(), d))
                .collect(),
            positions: self
                .positions
                .iter()
                .map(|(p, o)| (names[p.0 as usize].as_str(), *o))
                .collect(),
            inbox: self.inbox.iter().map(Vec::as_slice).collect(),
            origin: &self.owner,
        };
        let result = self.journal.commit(&batch);
        drop(batch);
        self.metrics.journal_commit(started.elapsed().as_secs_f64());
        self.metrics.journal_commit_outcome(result.is_ok());
        let fresh = result?;
        let mut committed = Committed {
            positions: self.positions.iter().map(|(p, o)| (*p, *o)).collect(),
            ..Committed::default()
        };
        for ((_, d), new) in self.decisions.iter().zip(&fresh) {
            if *new {
                committed.decisions += 1;
                self.metrics.decision(d.action, d.tier);
                // stdout is a view of the journal: never waited for.
                self.out.decision(d);
                if let Some(c) = &mut self.charts {
                    c.offer(d);
                }
            } else {
                committed.duplicates += 1;
                self.metrics.duplicate_decision();
            }
        }
        if committed.decisions > 0 {
            self.dispatch.notify_one();
        }
        for (ack, accepted) in self.acks.drain(..) {
            ack.send(Ok(accepted));
        }
        self.decisions.clear();
        self.positions.clear();
        self.inbox.clear();
        self.tallies.values_mut().for_each(Tally::clear);
        self.progress.clear();
        Ok(committed)
    }

    /// Moves a quiet partition's clock on (see [`Engine::advance`]): the
    /// wall clock minus the allowed lateness, so producers running that far
    /// behind still count.
    pub fn tick(&mut self, p: PartitionId) {
        let now = self.clock.now();
        let Some(engine) = self.engines.get_mut(&p) else {
            return;
        };
        let mut out = Vec::new();
        engine.tick(now, &mut out);
        self.decisions.extend(out.into_iter().map(|d| (p, d)));
    }

    /// Every partition the pipeline holds an engine for.
    pub fn partitions(&self) -> Vec<PartitionId> {
        self.engines.keys().copied().collect()
    }

    /// Forgets a partition's state (revoked, or lost to another consumer).
    pub fn drop_partition(&mut self, p: PartitionId) {
        if self.epochs.contains_key(&p) {
            self.metrics
                .partition_owned(&self.names[p.0 as usize], false);
        }
        self.engines.remove(&p);
        self.positions.remove(&p);
        self.tallies.remove(&p);
        self.progress.retain(|(q, _)| *q != p);
        self.decisions.retain(|(q, _)| *q != p);
    }

    /// Starts rebuilding a partition's engine: feed it the partition's
    /// recent history, oldest first, with [`Warming::feed`] (nothing is
    /// acted on), then hand it to [`Pipeline::finish_warm`].
    pub fn start_warm(&self, p: PartitionId) -> Warming {
        Warming {
            engine: Engine::new(self.rules.clone(), self.engine_cfg.clone()),
            events: 0,
            started: Instant::now(),
            http: (self.name(p) == HTTP_PARTITION).then_some(self.spread),
            discard: Vec::new(),
        }
    }

    /// Makes the journal's view of the partition's incidents the warmed
    /// engine's (see [`Engine::reconcile`]) and puts the engine to work.
    pub fn finish_warm(&mut self, p: PartitionId, w: Warming) -> Result<WarmUp, JournalError> {
        let mut engine = w.engine;
        self.metrics
            .events(Source::Warmup, Outcome::Processed, w.events as u64);
        let name = self.name(p).to_owned();
        let mut open: Vec<Incident> = self
            .journal
            .open_incidents(&name)?
            .into_iter()
            .map(resumed)
            .collect();
        let since = self.clock.now().saturating_sub(self.lookback());
        let mut resolved: Vec<(Incident, Ts)> = self
            .journal
            .resolved_since(&name, since)?
            .into_iter()
            .map(|(i, at)| (resumed(i), at))
            .collect();
        if let Some(spread) = w.http {
            // HTTP incidents of other shards' services are theirs: one
            // installed here would be resolved here, by a timer, while its
            // owner still holds it.
            open.retain(|i| spread.owns_labels(&i.labels));
            resolved.retain(|(i, _)| spread.owns_labels(&i.labels));
        }
        let at = engine.watermark().unwrap_or(self.clock.now());
        let orphans = engine.reconcile(&open, &resolved, at);
        for o in &orphans {
            tracing::warn!(incident = %o.id, rule = %o.rule, "open incident's rule no longer exists; it stays open for a human");
        }
        self.engines.insert(p, engine);
        self.metrics.warmup(w.started.elapsed().as_secs_f64());
        Ok(WarmUp {
            events: w.events,
            restored: open.len(),
            orphans: orphans.len(),
        })
    }

    /// Starts following other replicas' HTTP bodies from the newest one
    /// now journaled (what came before was warmed from).
    pub fn follow_inbox_from_now(&mut self) -> Result<(), JournalError> {
        self.inbox_cursor = self.journal.inbox_last()?;
        Ok(())
    }

    /// Feeds the alerts and upgrade progress other replicas accepted over
    /// HTTP into this one's HTTP engine, acting on none of it (the replica
    /// that took each body acted): so a resolve that reaches this replica
    /// closes an incident another one opened. Metric samples are left out:
    /// over HTTP their windows are per replica (with Kafka configured they
    /// go to Kafka, to the partition's owner, instead).
    pub fn follow_inbox(&mut self) -> Result<usize, JournalError> {
        let bodies = self
            .journal
            .inbox_after(self.inbox_cursor, &self.owner, 1024)?;
        if bodies.is_empty() {
            return Ok(0);
        }
        let id = self.partition(HTTP_PARTITION);
        let (rules, cfg) = (self.rules.clone(), self.engine_cfg.clone());
        let engine = self
            .engines
            .entry(id)
            .or_insert_with(|| Engine::new(rules, cfg));
        let mut discard = Vec::new();
        let mut n = 0;
        for (seq, stored) in &bodies {
            self.inbox_cursor = self.inbox_cursor.max(*seq);
            let mut events = Vec::new();
            if !decode_stored(stored, &mut events) {
                continue;
            }
            let spread = self.spread;
            for e in events
                .iter()
                .filter(|e| !matches!(e, Event::Sample(_)) && spread.owns_event(e))
            {
                engine.process(e, &mut discard);
                n += 1;
            }
            discard.clear();
        }
        Ok(n)
    }

    /// Forgets journaled HTTP bodies older than the lookback, and gate
    /// tallies older than their retention.
    pub fn prune_inbox(&mut self) {
        let before = self.clock.now().saturating_sub(self.lookback());
        if let Err(e) = self.journal.prune_inbox(before) {
            tracing::warn!(error = %e, "pruning the HTTP inbox failed");
        }
        let before = self.clock.now().saturating_sub(self.gates.retention);
        if let Err(e) = self.journal.prune_tally(before) {
            tracing::warn!(error = %e, "pruning the gate tallies failed");
        }
    }

    /// What this pipeline's engines hold, for the gauges.
    pub fn sizes(&self) -> Sizes {
        self.engines.values().fold(Sizes::default(), |s, e| Sizes {
            groups: s.groups + e.groups(),
            bytes: s.bytes + e.state_bytes(),
            late: s.late + e.stats().samples_late,
            alert_bytes: s.alert_bytes + e.alert_memory(),
            alerts_refused: s.alerts_refused + e.stats().alerts_refused_memory,
            labels_cut: s.labels_cut + e.stats().labels_truncated,
        })
    }

    /// Refreshes the size gauges with `total` (every shard's [`Sizes`]
    /// summed) and says when memory budgets refuse something new.
    pub fn report(&mut self, total: &Sizes) {
        self.metrics
            .engine_size(total.groups, total.bytes, total.late);
        self.metrics
            .alert_memory(total.alert_bytes, total.alerts_refused, total.labels_cut);
        if total.alerts_refused > self.refused_said {
            tracing::warn!(
                refused = total.alerts_refused - self.refused_said,
                bytes = total.alert_bytes,
                "alerts refused: remembered alerts fill limits.alerts_bytes"
            );
            self.refused_said = total.alerts_refused;
        }
        let budgets = &self.engine_cfg.budgets;
        let groups_refused = budgets.groups.refused();
        if groups_refused > self.groups_refused_said {
            tracing::warn!(
                refused = groups_refused - self.groups_refused_said,
                bytes = budgets.groups.used(),
                "new groups refused: the engines' groups fill limits.groups_bytes"
            );
            self.groups_refused_said = groups_refused;
        }
    }
}

/// Rebuilds each shard's HTTP windows from the journaled request bodies
/// (read once; each shard takes its services' events).
pub fn warm_http(pipelines: &mut [Pipeline], journal: &dyn Ingest) -> Result<(), JournalError> {
    let Some(first) = pipelines.first() else {
        return Ok(());
    };
    let since = first.now().saturating_sub(first.lookback());
    let mut warming: Vec<_> = pipelines
        .iter_mut()
        .map(|p| {
            let id = p.partition(HTTP_PARTITION);
            (id, p.start_warm(id))
        })
        .collect();
    for body in journal.inbox_since(since)? {
        // Decoded once; each shard takes its own services' events.
        let mut events = Vec::new();
        if decode_stored(&body, &mut events) {
            for (_, w) in &mut warming {
                w.take(&events);
            }
        }
    }
    for (shard, (p, (id, w))) in pipelines.iter_mut().zip(warming).enumerate() {
        let report = p.finish_warm(id, w)?;
        p.follow_inbox_from_now()?;
        tracing::info!(
            shard,
            events = report.events,
            open_incidents = report.restored,
            "http input warmed"
        );
    }
    Ok(())
}

/// An HTTP body as the inbox keeps it: its form's tag, then the body.
fn stored_body(form: BodyForm, body: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(body.len() + 1);
    stored.push(form.tag());
    stored.extend_from_slice(body);
    stored
}

/// Decodes a body the inbox kept ([`stored_body`]); `false` if it does
/// not decode (it is skipped, as it would have been live).
fn decode_stored<'a>(stored: &'a [u8], events: &mut Vec<Event<'a>>) -> bool {
    match stored.split_first() {
        Some((tag, body)) => {
            BodyForm::from_tag(*tag).is_some_and(|f| decode_body(body, f, events).is_ok())
        }
        None => false,
    }
}

/// A journaled incident as the engine resumes it.
fn resumed(row: OpenIncident) -> Incident {
    Incident {
        id: row.id,
        rule: row.rule,
        labels: row.labels,
        tier: row.tier,
        opened: row.opened,
        severity: row.severity,
        fired: row.fired,
        seq: row.seq,
        fingerprint: row.fingerprint,
        batch: row.batch,
    }
}

/// What engines hold, summed over partitions (and over shards).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sizes {
    pub groups: usize,
    pub bytes: usize,
    pub late: u64,
    pub alert_bytes: usize,
    pub alerts_refused: u64,
    pub labels_cut: u64,
}

impl Sizes {
    pub fn plus(&self, o: &Sizes) -> Sizes {
        Sizes {
            groups: self.groups + o.groups,
            bytes: self.bytes + o.bytes,
            late: self.late + o.late,
            alert_bytes: self.alert_bytes + o.alert_bytes,
            alerts_refused: self.alerts_refused + o.alerts_refused,
            labels_cut: self.labels_cut + o.labels_cut,
        }
    }
}

/// A partition's engine being rebuilt from history.
pub struct Warming {
    engine: Engine,
    events: usize,
    started: Instant,
    /// For the HTTP partition: which bodies' events are this shard's.
    http: Option<spread::Spread>,
    discard: Vec<Decision>,
}

impl Warming {
    /// Feeds one historical Kafka payload. Undecodable ones are skipped,
    /// as they were when live. (Journaled HTTP bodies are decoded once for
    /// every shard by [`warm_http`].)
    pub fn feed(&mut self, payload: &[u8]) {
        let mut events = Vec::new();
        if decode::decode(payload, &mut events).is_ok() {
            self.take(&events);
        }
    }

    /// Feeds decoded events: of an HTTP body, this shard's services' only.
    fn take(&mut self, events: &[Event<'_>]) {
        let http = self.http;
        for e in events
            .iter()
            .filter(|e| http.is_none_or(|spread| spread.owns_event(e)))
        {
            self.events += 1;
            self.engine.process(e, &mut self.discard);
        }
        self.discard.clear();
    }
}

/// What a warm-up did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WarmUp {
    pub events: usize,
    pub restored: usize,
    pub orphans: usize,
}
