//! Health and readiness: what `/healthz` and `/readyz` answer, and why.
//!
//! Ready means every event produced from now on will be acted on: the HTTP
//! intake answers, the consumer has joined its group and every partition it
//! holds is warmed and consuming, the pipeline turns, and the journal takes
//! writes. Live means the pipeline thread still turns: a responder whose
//! loop is stuck (a blocked output, a wedged journal) is restarted by its
//! supervisor rather than trusted with the next upgrade.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shared by the pipeline thread, the Kafka source and the HTTP server.
/// A std mutex: held only for a few field updates, never across `.await`.
#[derive(Debug)]
pub struct Health {
    state: Mutex<State>,
    /// No loop turn for this long (outside warm-ups) is a stall.
    stall_after: Duration,
}

#[derive(Debug)]
struct State {
    http_up: bool,
    stopping: bool,
    /// `None`: no Kafka in this run.
    kafka: Option<KafkaState>,
    /// Each pipeline shard's last loop turn: one stuck shard is a stall,
    /// however well the others turn.
    last_turn: Vec<Instant>,
    /// The shards warming a partition: busy reading history, not stuck
    /// (each its own: one shard done warming does not vouch for another).
    warming: Vec<bool>,
    /// Why each shard's journal refuses its commits, while it does (one
    /// shard's success must not hide another's refusal).
    journal_errors: Vec<Option<String>>,
    failed: Option<String>,
}

#[derive(Debug, Default)]
struct KafkaState {
    /// The group handed out partitions at least once (maybe none to us).
    joined: bool,
    assigned: BTreeSet<String>,
    warming: BTreeSet<String>,
}

/// `shard`'s entry of a per-shard list, grown with `fill` to reach it
/// (shards report as they start).
fn of_shard<T: Clone>(list: &mut Vec<T>, shard: usize, fill: T) -> &mut T {
    if list.len() <= shard {
        list.resize(shard + 1, fill);
    }
    &mut list[shard]
}

impl State {
    fn journal_error(&self) -> Option<&str> {
        self.journal_errors
            .iter()
            .flatten()
            .next()
            .map(String::as_str)
    }
}

impl Health {
    pub fn new(kafka: bool, stall_after: Duration) -> Health {
        Health {
            state: Mutex::new(State {
                http_up: false,
                stopping: false,
                kafka: kafka.then(KafkaState::default),
                last_turn: vec![Instant::now()],
                warming: Vec::new(),
                journal_errors: Vec::new(),
                failed: None,
            }),
            stall_after,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn http_up(&self, up: bool) {
        self.with(|s| s.http_up = up);
    }

    pub fn stopping(&self) {
        self.with(|s| s.stopping = true);
    }

    /// Shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.with(|s| s.stopping)
    }

    /// The pipeline thread ended with an error: nothing is read any more.
    pub fn failed(&self, why: impl Into<String>) {
        let why = why.into();
        self.with(|s| s.failed = Some(why));
    }

    /// One loop turn of pipeline shard `shard` happened.
    pub fn turned(&self, shard: usize) {
        self.with(|s| *of_shard(&mut s.last_turn, shard, Instant::now()) = Instant::now());
    }

    /// Partitions handed to this member, not yet warmed.
    pub fn assigned(&self, partitions: impl IntoIterator<Item = String>) {
        self.with(|s| {
            let k = s.kafka.get_or_insert_with(KafkaState::default);
            k.joined = true;
            for p in partitions {
                k.assigned.insert(p.clone());
                k.warming.insert(p);
            }
        });
    }

    /// The consumer is a steady member of its group, whatever it holds
    /// (possibly nothing: more members than partitions).
    pub fn joined(&self) {
        self.with(|s| {
            s.kafka.get_or_insert_with(KafkaState::default).joined = true;
        });
    }

    pub fn revoked(&self, partitions: impl IntoIterator<Item = String>) {
        self.with(|s| {
            if let Some(k) = &mut s.kafka {
                for p in partitions {
                    k.assigned.remove(&p);
                    k.warming.remove(&p);
                }
            }
        });
    }

    /// `shard` starts warming a partition.
    pub fn warm_started(&self, shard: usize) {
        self.with(|s| *of_shard(&mut s.warming, shard, false) = true);
    }

    /// `shard` warmed the partition and consumes it.
    pub fn warmed(&self, shard: usize, partition: &str) {
        self.with(|s| {
            *of_shard(&mut s.warming, shard, false) = false;
            *of_shard(&mut s.last_turn, shard, Instant::now()) = Instant::now();
            if let Some(k) = &mut s.kafka {
                k.warming.remove(partition);
            }
        });
    }

    /// `shard`'s journal took its commit.
    pub fn journal_ok(&self, shard: usize) {
        self.with(|s| {
            if let Some(e) = s.journal_errors.get_mut(shard) {
                *e = None;
            }
        });
    }

    /// `shard`'s journal refuses its commit, for `why`.
    pub fn journal_refuses(&self, shard: usize, why: impl Into<String>) {
        let why = why.into();
        self.with(|s| *of_shard(&mut s.journal_errors, shard, None) = Some(why));
    }

    /// Why the journal refuses writes, while it does (for some shard).
    pub fn journal_error(&self) -> Option<String> {
        self.with(|s| State::journal_error(s).map(str::to_owned))
    }

    fn stalled(&self, s: &State) -> Option<Duration> {
        let quiet = s
            .last_turn
            .iter()
            .enumerate()
            .filter(|(shard, _)| !s.warming.get(*shard).copied().unwrap_or(false))
            .map(|(_, t)| t.elapsed())
            .max()?;
        (quiet >= self.stall_after).then_some(quiet)
    }

    /// `Ok` when live, else why not (for `/healthz`).
    pub fn live(&self) -> Result<(), String> {
        self.with(|s| {
            if let Some(f) = &s.failed {
                return Err(format!("the pipeline stopped: {f}"));
            }
            if let Some(quiet) = self.stalled(s) {
                // A loop held up by its journal says so: a full disk is not
                // a slow pipeline.
                let why = State::journal_error(s)
                    .map(|e| format!(": the journal refuses writes: {e}"))
                    .unwrap_or_default();
                return Err(format!(
                    "the pipeline made no progress for {} s{why}",
                    quiet.as_secs()
                ));
            }
            Ok(())
        })
    }

    /// `Ok` with a summary when ready, else why not (for `/readyz`).
    pub fn ready(&self) -> Result<String, String> {
        self.live()?;
        self.with(|s| {
            if s.stopping {
                return Err("shutting down".into());
            }
            if !s.http_up {
                return Err("the HTTP intake is not up yet".into());
            }
            if let Some(e) = State::journal_error(s) {
                return Err(format!("the journal refuses writes: {e}"));
            }
            match &s.kafka {
                None => Ok("http intake up (no Kafka)".into()),
                Some(k) if !k.joined => {
                    Err("waiting for the Kafka consumer group to assign partitions".into())
                }
                Some(k) if !k.warming.is_empty() => Err(format!(
                    "warming {} of {} partitions: {}",
                    k.warming.len(),
                    k.assigned.len(),
                    k.warming.iter().cloned().collect::<Vec<_>>().join(", ")
                )),
                Some(k) if k.assigned.is_empty() => Ok(
                    "http intake up; the Kafka group gives this member no partition (more members than partitions): it stands by"
                        .into(),
                ),
                Some(k) => Ok(format!(
                    "http intake up, {} Kafka {} warmed and consuming",
                    k.assigned.len(),
                    if k.assigned.len() == 1 {
                        "partition"
                    } else {
                        "partitions"
                    }
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_given_no_partition_is_ready_once_it_joined() {
        let h = Health::new(true, Duration::from_secs(60));
        h.http_up(true);
        assert!(h.ready().unwrap_err().contains("assign"));
        h.joined();
        assert!(h.ready().unwrap().contains("no partition"));
    }

    #[test]
    fn ready_only_once_every_part_is() {
        let h = Health::new(true, Duration::from_secs(60));
        assert!(h.ready().unwrap_err().contains("HTTP"));
        h.http_up(true);
        assert!(h.ready().unwrap_err().contains("assign"));
        h.assigned(["t/0".to_owned(), "t/1".to_owned()]);
        assert!(h.ready().unwrap_err().contains("warming 2 of 2"));
        h.warmed(0, "t/0");
        assert!(h.ready().unwrap_err().contains("t/1"));
        h.warmed(1, "t/1");
        assert!(h.ready().is_ok());
        h.journal_refuses(0, "disk full");
        assert!(h.ready().unwrap_err().contains("disk full"));
        assert_eq!(h.journal_error().as_deref(), Some("disk full"));
        h.journal_ok(0);
        h.revoked(["t/1".to_owned()]);
        assert!(h.ready().unwrap().contains("1 Kafka partition "));
        h.stopping();
        assert!(h.ready().is_err());
    }

    #[test]
    fn a_loop_that_stops_turning_is_not_live_but_a_warm_up_is() {
        let h = Health::new(false, Duration::from_millis(30));
        h.http_up(true);
        assert!(h.live().is_ok());
        std::thread::sleep(Duration::from_millis(40));
        assert!(h.live().unwrap_err().contains("no progress"));
        h.journal_refuses(0, "the journal's disk is full");
        assert!(
            h.live().unwrap_err().ends_with(
                "no progress for 0 s: the journal refuses writes: the journal's disk is full"
            ),
            "{:?}",
            h.live()
        );
        h.journal_ok(0);
        assert!(h.ready().is_err());
        h.warm_started(0);
        assert!(h.live().is_ok());
        h.warmed(0, "x");
        assert!(h.live().is_ok());
        h.turned(0);
        assert!(h.ready().is_ok());
    }

    /// One shard's commit going through does not hide another's refusal.
    #[test]
    fn a_refusal_stays_until_that_shard_commits() {
        let h = Health::new(false, Duration::from_secs(60));
        h.http_up(true);
        h.journal_refuses(1, "disk full");
        h.journal_ok(0);
        assert!(h.ready().unwrap_err().contains("disk full"));
        h.journal_ok(1);
        assert!(h.ready().is_ok());
    }

    /// A shard warming a long partition is busy, not stuck, even after
    /// another shard finished its own warm-up.
    #[test]
    fn another_shard_done_warming_does_not_make_a_warming_one_stalled() {
        let h = Health::new(false, Duration::from_millis(200));
        h.turned(0);
        h.turned(1);
        h.warm_started(0);
        h.warm_started(1);
        h.warmed(1, "t/1");
        std::thread::sleep(Duration::from_millis(250));
        h.turned(1);
        assert!(h.live().is_ok(), "{:?}", h.live());
        h.warmed(0, "t/0");
        assert!(
            h.live().is_ok(),
            "its turn counts from the end of its warm-up"
        );
    }

    /// With several shards, one stuck on its journal is a stall even while
    /// another turns (an idle shard must not vouch for a stuck one).
    #[test]
    fn one_stuck_shard_is_a_stall() {
        let h = Health::new(false, Duration::from_millis(30));
        h.turned(0);
        h.turned(1);
        assert!(h.live().is_ok());
        std::thread::sleep(Duration::from_millis(40));
        h.turned(1);
        assert!(
            h.live().unwrap_err().contains("no progress"),
            "{:?}",
            h.live()
        );
        h.turned(0);
        assert!(h.live().is_ok());
    }
}
