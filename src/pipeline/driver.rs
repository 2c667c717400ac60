//! A shard's driver: the one thread that owns a [`Pipeline`] (its
//! partitions' windows, incidents and decode buffers). It consumes its
//! input in order, journals each batch, then tells the source what is safe
//! to acknowledge upstream. It blocks until input comes or the next timer
//! is due (a rule timer, a batch incident's wait, the HTTP followers'
//! beat): no idle polling and no fixed tick.
//!
//! Partitions are spread over shards by the source, whole: a partition's
//! events are decided by one engine, in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use super::input::{Assignment, Doorbell, Feed, HttpInput, Input, Record, Records};
use super::{Committed, HTTP_PARTITION, PartitionId, Pipeline, Rejected, Warming};
use crate::health::Health;
use crate::journal::JournalError;
use crate::telemetry::{Metrics, Outcome, Source};
use crate::time::Dur;

/// How many inputs a shard's queue holds (each at most `kafka.max_batch`
/// messages and [`Records`]' byte cap in the source).
const INPUT_BOUND: usize = 4;
/// The longest a quiet driver waits: it says it is alive (`/healthz`) and
/// looks at its deadlines again (the clock may be a test's).
const LONGEST_WAIT: Duration = Duration::from_millis(500);
/// How often a driver reads what other replicas took over HTTP.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// How often journaled HTTP bodies and gate tallies past their use are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How often engine sizes are reported.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How many HTTP submissions one turn takes.
const HTTP_PER_TURN: usize = 1024;

/// Re-reads a partition's recent history to warm its windows (Kafka:
/// offsets for times, then a read up to where live consumption resumes).
pub trait History: Send {
    fn replay(
        &mut self,
        partition: &Assignment,
        lookback: Dur,
        into: &mut Warming,
    ) -> Result<(), String>;
}

/// What a shard tells the source it reads from. Partitions are named by
/// the source's own numbers ([`Assignment::slot`]).
pub trait Upstream: Send {
    /// Input of these partitions up to these positions is journaled.
    fn journaled(&mut self, positions: Vec<(u32, i64)>);
    /// Another process owns these partitions now: stop reading them.
    fn fenced(&mut self, slots: Vec<u32>);
    /// A message of `from` set aside as poison (dead-lettering, where
    /// configured).
    fn poison(
        &mut self,
        from: &SourcePartition,
        offset: i64,
        payload: &[u8],
        key: Option<&[u8]>,
        why: &Rejected,
    );
}

/// A partition as the source knows it, kept by the shard that owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePartition {
    pub id: PartitionId,
    pub topic: String,
    pub partition: i32,
}

/// Called once when a driver fails (the journal refuses a warm-up): the
/// process must not look healthy with a shard that no longer reads.
pub type OnFail = Arc<dyn Fn(String) + Send + Sync>;

/// What every driver shares.
#[derive(Clone)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub on_fail: OnFail,
    /// Each shard's engine sizes, summed into the gauges.
    pub sizes: Arc<std::sync::Mutex<Vec<super::Sizes>>>,
}

impl Shared {
    pub fn new(metrics: Arc<Metrics>, health: Arc<Health>, on_fail: OnFail) -> Shared {
        Shared {
            metrics,
            health,
            on_fail,
            sizes: Arc::default(),
        }
    }
}

/// One shard's driver, before it runs.
pub struct Driver {
    index: usize,
    pipeline: Pipeline,
    input: Receiver<Input>,
    /// The sending end, handed to the [`Shard`] at spawn: the driver keeps
    /// none, so its input disconnects once every feed is gone.
    feed: Option<Feed>,
    bell: Doorbell,
    /// This shard's parts of HTTP requests.
    http: Option<Receiver<super::input::Part>>,
    history: Option<Box<dyn History>>,
    upstream: Option<Box<dyn Upstream>>,
    /// The source's partition numbers (slots), to this pipeline's ids.
    slots: Vec<Option<SourcePartition>>,
    /// Kafka partitions by whether they are at their end (only then does
    /// wall-clock time move their windows).
    caught_up: HashMap<PartitionId, bool>,
    /// Partitions whose engine stayed due after a tick, until when.
    snoozed: HashMap<PartitionId, Instant>,
    /// Drill events are acted on (`kafka.accept_drill_events`).
    accept_drill: bool,
    /// How many messages one journal transaction takes at most.
    max_batch: usize,
    shared: Shared,
    next_follow: Instant,
    next_prune: Instant,
    next_report: Instant,
}

impl Driver {
    /// A driver for `pipeline`; with `http`, its share of HTTP requests
    /// (the pipeline's [`super::spread::Spread`] says which).
    pub fn new(
        index: usize,
        pipeline: Pipeline,
        http: Option<HttpInput>,
        shared: Shared,
    ) -> Driver {
        let bell = http.as_ref().map(|h| h.bell.clone()).unwrap_or_default();
        let (feed, input) = super::input::input(INPUT_BOUND, bell.clone());
        let now = Instant::now();
        Driver {
            index,
            pipeline,
            input,
            feed: Some(feed),
            bell,
            http: http.map(|h| h.rx),
            history: None,
            upstream: None,
            slots: Vec::new(),
            caught_up: HashMap::new(),
            snoozed: HashMap::new(),
            accept_drill: false,
            max_batch: 2048,
            shared,
            next_follow: now,
            next_prune: now + PRUNE_EVERY,
            next_report: now,
        }
    }

    /// The source's side: history for warm-ups, acknowledgements upstream.
    pub fn read_from(
        &mut self,
        history: Option<Box<dyn History>>,
        upstream: Box<dyn Upstream>,
        accept_drill: bool,
        max_batch: usize,
    ) {
        self.history = history;
        self.upstream = Some(upstream);
        self.accept_drill = accept_drill;
        self.max_batch = max_batch.max(1);
    }

    /// Starts the driver's thread.
    pub fn spawn(mut self) -> std::io::Result<Shard> {
        let feed = self.feed.take().expect("a driver is spawned once");
        let thread = std::thread::Builder::new()
            .name(format!("ripcord-shard-{}", self.index))
            .spawn(move || self.run())?;
        Ok(Shard {
            feed,
            thread: Some(thread),
        })
    }

    fn run(mut self) -> Result<(), JournalError> {
        let result = self.turns();
        if let Err(e) = &result {
            tracing::error!(shard = self.index, error = %e, "a pipeline shard stopped");
            (self.shared.on_fail)(e.to_string());
        }
        result
    }

    fn turns(&mut self) -> Result<(), JournalError> {
        loop {
            self.shared.health.turned(self.index);
            let mut worked = false;
            // Stop asked for (with whom to answer once the last batch is
            // journaled), or every feed gone.
            let mut stopping = false;
            let mut stopped_ack = None;
            // Inputs until the batch is full: one journal transaction for
            // what a backlog brings in, at once for a lone event.
            let mut messages = 0;
            while messages < self.max_batch {
                match self.input.try_recv() {
                    Ok(Input::Records(r)) => {
                        messages += r.messages().max(1);
                        self.take(&r);
                    }
                    Ok(Input::Assigned(a)) => {
                        // Journal what came before: a warm-up takes a while.
                        self.commit();
                        self.assigned(a)?;
                    }
                    Ok(Input::Revoked(names, ack)) => {
                        self.revoked(&names);
                        let _ = ack.send(());
                    }
                    Ok(Input::Stop(ack)) => {
                        (stopping, stopped_ack) = (true, Some(ack));
                        break;
                    }
                    Err(TryRecvError::Empty) => break,
                    // Every feed is gone: nothing more will come.
                    Err(TryRecvError::Disconnected) => {
                        stopping = true;
                        break;
                    }
                }
                worked = true;
            }
            worked |= self.take_http();
            self.timers();
            if self.pipeline.dirty() {
                self.commit();
                worked = true;
            }
            if stopping {
                self.take_http();
                self.commit();
                if let Some(ack) = stopped_ack {
                    let _ = ack.send(());
                }
                return Ok(());
            }
            if !worked {
                let wait = self.until_next_timer().min(LONGEST_WAIT);
                if !wait.is_zero() {
                    self.bell.wait(wait);
                }
            }
        }
    }

    /// Feeds a batch of records to the pipeline (a poison one is counted,
    /// logged and handed upstream to be dead-lettered).
    fn take(&mut self, records: &Records) {
        let mut processed = 0u64;
        for r in records.iter() {
            match r {
                Record::End { slot } => {
                    if let Some(id) = self.id(slot) {
                        self.caught_up.insert(id, true);
                    }
                }
                Record::Message {
                    slot,
                    offset,
                    payload,
                    key,
                    drill,
                } => {
                    let Some(id) = self.id(slot) else { continue };
                    self.caught_up.insert(id, false);
                    if drill && !self.accept_drill {
                        // A drill's event on a topic production reads: never acted on.
                        self.pipeline.pass(id, offset);
                        self.shared
                            .metrics
                            .event(Source::Kafka, Outcome::DrillRefused);
                        tracing::warn!(partition = %self.pipeline.name(id), offset, "a drill's event refused: production never acts on a drill (ripcord drill --topic names a topic of its own)");
                        continue;
                    }
                    match self.pipeline.ingest(id, payload, Some(offset)) {
                        Ok(n) => processed += n as u64,
                        Err(rejected) => {
                            let outcome = match &rejected {
                                Rejected::Decode(e) => {
                                    self.shared.metrics.decode_error(Source::Kafka, e.reason());
                                    Outcome::DecodeError
                                }
                                Rejected::FromTheFuture { .. } => Outcome::FromTheFuture,
                            };
                            self.shared.metrics.event(Source::Kafka, outcome);
                            tracing::warn!(partition = %self.pipeline.name(id), offset, error = %rejected, "poison message skipped");
                            if let (Some(u), Some(Some(from))) =
                                (&mut self.upstream, self.slots.get(slot as usize))
                            {
                                u.poison(from, offset, payload, key, &rejected);
                            }
                        }
                    }
                }
            }
        }
        if processed > 0 {
            self.shared
                .metrics
                .events(Source::Kafka, Outcome::Processed, processed);
        }
    }

    fn id(&self, slot: u32) -> Option<PartitionId> {
        self.slots.get(slot as usize)?.as_ref().map(|s| s.id)
    }

    /// Claims each partition (fencing out whoever held it), warms its
    /// windows from its history, and puts its engine to work.
    fn assigned(&mut self, assigned: Vec<Assignment>) -> Result<(), JournalError> {
        for a in assigned {
            let id = self.pipeline.partition(&a.name);
            let slot = a.slot as usize;
            if slot >= self.slots.len() {
                self.slots.resize(slot + 1, None);
            }
            self.slots[slot] = Some(SourcePartition {
                id,
                topic: a.topic.clone(),
                partition: a.partition,
            });
            match self.pipeline.claim(id) {
                Ok(epoch) => tracing::debug!(partition = %a.name, epoch, "partition claimed"),
                Err(err) => {
                    tracing::error!(partition = %a.name, %err, "cannot claim the partition in the journal; its commits are not fenced")
                }
            }
            self.shared.health.warm_started(self.index);
            let mut warming = self.pipeline.start_warm(id);
            if let Some(h) = &mut self.history {
                if let Err(e) = h.replay(&a, self.pipeline.lookback(), &mut warming) {
                    // Without history the windows fill up live; the journal
                    // still restores open incidents below.
                    tracing::warn!(partition = %a.name, error = %e, "could not re-read recent history; windows start empty");
                }
            }
            let report = self.pipeline.finish_warm(id, warming)?;
            tracing::info!(
                partition = %a.name,
                shard = self.index,
                events = report.events,
                open_incidents = report.restored,
                "partition warmed"
            );
            self.shared.health.warmed(self.index, &a.name);
            self.caught_up.insert(id, false);
        }
        Ok(())
    }

    /// Journals what was processed for the revoked partitions (once: if the
    /// journal refuses, the next owner re-reads those events), then
    /// forgets them.
    fn revoked(&mut self, names: &[String]) {
        if let Err(e) = self.pipeline.commit() {
            tracing::error!(error = %e, "journal commit at revoke failed; the next owner re-reads these events");
        }
        for name in names {
            let id = self.pipeline.partition(name);
            self.pipeline.drop_partition(id);
            self.caught_up.remove(&id);
            self.snoozed.remove(&id);
            for s in self
                .slots
                .iter_mut()
                .filter(|s| s.as_ref().is_some_and(|s| s.id == id))
            {
                *s = None;
            }
        }
    }

    fn take_http(&mut self) -> bool {
        let Some(rx) = &self.http else {
            return false;
        };
        let mut took = false;
        for _ in 0..HTTP_PER_TURN {
            match rx.try_recv() {
                Ok(s) => {
                    self.pipeline.ingest_http(s);
                    took = true;
                }
                Err(_) => break,
            }
        }
        took
    }

    /// The partitions whose clocks follow the wall: caught-up Kafka
    /// partitions, and HTTP's.
    fn on_the_wall(&self) -> impl Iterator<Item = PartitionId> + '_ {
        let http = self
            .http
            .as_ref()
            .and_then(|_| self.pipeline.find(HTTP_PARTITION));
        self.caught_up
            .iter()
            .filter(|(_, up)| **up)
            .map(|(id, _)| *id)
            .chain(http)
    }

    /// How long until some timer of this driver is due.
    fn until_next_timer(&self) -> Duration {
        let now = self.pipeline.now();
        let wall = Instant::now();
        let http = self.http.is_some();
        let beat = [
            Some(self.next_report),
            http.then_some(self.next_follow),
            (http && self.index == 0).then_some(self.next_prune),
        ]
        .into_iter()
        .flatten()
        .map(|at| at.saturating_duration_since(wall))
        .min()
        .unwrap_or(LONGEST_WAIT);
        self.on_the_wall()
            .filter_map(|id| self.due(id))
            .map(|due| due.since(now).to_std())
            .fold(beat, Duration::min)
    }

    /// When a partition's engine next has work on the wall clock, unless
    /// it is snoozed.
    fn due(&self, id: PartitionId) -> Option<crate::time::Ts> {
        match self.snoozed.get(&id) {
            Some(until) if Instant::now() < *until => {
                Some(self.pipeline.now().saturating_add(Dur::from_secs(1)))
            }
            _ => self.pipeline.next_due(id),
        }
    }

    /// Runs what is due: partitions' timers, following the other
    /// replicas' HTTP bodies, pruning, gauges.
    fn timers(&mut self) {
        let now = self.pipeline.now();
        let due: Vec<PartitionId> = self
            .on_the_wall()
            .filter(|id| self.due(*id).is_some_and(|d| d <= now))
            .collect();
        for id in due {
            self.pipeline.tick(id);
            if self.pipeline.next_due(id).is_some_and(|d| d <= now) {
                // Still due after its tick: something the engine waits
                // for is not time. Looked at again in a second, not in a
                // busy loop.
                self.snoozed
                    .insert(id, Instant::now() + Duration::from_secs(1));
            }
        }
        let wall = Instant::now();
        if self.http.is_some() && wall >= self.next_follow {
            self.next_follow = wall + FOLLOW_EVERY;
            if let Err(e) = self.pipeline.follow_inbox() {
                tracing::warn!(error = %e, "cannot follow the other replicas' HTTP bodies");
            }
        }
        // One shard prunes for all (they share the journal).
        if self.http.is_some() && self.index == 0 && wall >= self.next_prune {
            self.next_prune = wall + PRUNE_EVERY;
            self.pipeline.prune_inbox();
        }
        if wall >= self.next_report {
            self.next_report = wall + REPORT_EVERY;
            let mine = self.pipeline.sizes();
            let total = {
                let mut sizes = self.shared.sizes.lock().unwrap_or_else(|e| e.into_inner());
                if sizes.len() <= self.index {
                    sizes.resize(self.index + 1, super::Sizes::default());
                }
                sizes[self.index] = mine;
                sizes.iter().fold(super::Sizes::default(), |a, b| a.plus(b))
            };
            // One shard says it for all (the memory budgets are shared).
            if self.index == 0 {
                self.pipeline.report(&total);
            }
        }
    }

    /// Journals the batch (retrying while the journal refuses: the engine
    /// has moved on, so the batch must not be lost), then tells the source
    /// what is safe to acknowledge.
    fn commit(&mut self) {
        let Some(committed) =
            commit_until_done(&mut self.pipeline, &self.shared.health, self.index)
        else {
            return;
        };
        let Some(upstream) = &mut self.upstream else {
            return;
        };
        let slots = &self.slots;
        let slot_of = |id: &PartitionId| {
            slots
                .iter()
                .position(|s| s.as_ref().is_some_and(|s| s.id == *id))
                .map(|slot| slot as u32)
        };
        if !committed.fenced.is_empty() {
            let fenced = committed.fenced.iter().filter_map(slot_of).collect();
            for id in &committed.fenced {
                self.caught_up.remove(id);
            }
            upstream.fenced(fenced);
        }
        if !committed.positions.is_empty() {
            let positions = committed
                .positions
                .iter()
                .filter_map(|(id, next)| Some((slot_of(id)?, *next)))
                .collect();
            upstream.journaled(positions);
        }
    }
}

/// Commits the pipeline's batch, retrying with a backoff up to 5 s while
/// the journal refuses. At shutdown ([`Health::is_stopping`]) it gives up
/// once the backoff reaches 5 s: the uncommitted input is read again at
/// the next start.
fn commit_until_done(pipeline: &mut Pipeline, health: &Health, shard: usize) -> Option<Committed> {
    let mut backoff = Duration::from_millis(50);
    loop {
        match pipeline.commit() {
            Ok(c) => {
                health.journal_ok(shard);
                return Some(c);
            }
            Err(e) => {
                health.journal_refuses(shard, e.to_string());
                tracing::error!(error = %e, retry_in = ?backoff, "journal commit failed; holding the batch and retrying");
                if health.is_stopping() && backoff >= Duration::from_secs(5) {
                    tracing::error!(
                        "giving up at shutdown: the uncommitted events will be re-read at the next start"
                    );
                    return None;
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// A running shard: its input and its thread. Dropped while running (a
/// source that failed to start), it is stopped: it journals and ends.
pub struct Shard {
    feed: Feed,
    thread: Option<std::thread::JoinHandle<Result<(), JournalError>>>,
}

impl Shard {
    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    /// Asks the driver to journal its last batch and end, and waits for it.
    pub fn stop(&mut self) -> Result<(), JournalError> {
        let (ack, done) = std::sync::mpsc::sync_channel(1);
        if self.feed.send(Input::Stop(ack)) {
            let _ = done.recv();
        }
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(JournalError::Corrupt("a pipeline shard panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop();
        }
    }
}
