//! How HTTP input is spread over the shards: by the hash of each event's
//! `service` label, as Kafka producers are asked to key their messages. A
//! service's events (every instance, every batch) are decided by one
//! engine, so its windows and batch incidents stay whole; events without a
//! service go to the shard of the empty name.
//!
//! One request may name several services: each shard it concerns gets the
//! whole body and takes its own events from it; the request is answered
//! once every shard has journaled its share ([`Joint`]).

use std::sync::{Arc, Mutex};

use super::{Accepted, Ack};
use crate::event::Event;

/// One shard's place among the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spread {
    pub index: usize,
    pub of: usize,
}

impl Default for Spread {
    /// The only shard.
    fn default() -> Self {
        Spread { index: 0, of: 1 }
    }
}

impl Spread {
    /// Whether this shard decides events of `service`.
    pub fn owns(&self, service: Option<&str>) -> bool {
        self.of <= 1 || shard_of(service, self.of) == self.index
    }

    pub fn owns_event(&self, e: &Event<'_>) -> bool {
        self.owns(e.labels().get("service"))
    }

    /// Whether an incident with these labels is this shard's (its
    /// service's shard decides its events, so it alone may act on it).
    pub fn owns_labels(&self, labels: &[(Box<str>, Box<str>)]) -> bool {
        self.owns(
            labels
                .iter()
                .find(|(k, _)| &**k == "service")
                .map(|(_, v)| &**v),
        )
    }
}

/// The shard of `service` among `shards`: a fixed hash (the same on every
/// replica and across restarts, so a warm-up re-reads into the shard that
/// decided live).
pub fn shard_of(service: Option<&str>, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let mut h = siphasher::sip::SipHasher13::new();
    std::hash::Hasher::write(&mut h, service.unwrap_or("").as_bytes());
    (std::hash::Hasher::finish(&h) % shards as u64) as usize
}

/// The shards `events` concern, in order (the first one journals the body).
/// Never empty: a body without events is one shard's to answer.
pub fn shards_of(events: &[Event<'_>], shards: usize) -> Vec<usize> {
    if shards <= 1 {
        return vec![0];
    }
    let mut out: Vec<usize> = events
        .iter()
        .map(|e| shard_of(e.labels().get("service"), shards))
        .collect();
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        out.push(shard_of(None, shards));
    }
    out
}

/// The answer to a request spread over shards: each part says what its
/// shard accepted; once the last part is answered (or dropped), the
/// request is answered with the sum, or with the first error. A part
/// dropped unanswered (its shard stopped) drops the answer: the client
/// hears that ripcord stopped before recording it.
pub struct Joint {
    state: Mutex<JointState>,
    /// Called once the request is answered or abandoned (frees its place
    /// in the HTTP queue).
    on_done: Box<dyn Fn() + Send + Sync>,
}

struct JointState {
    ack: Option<Ack>,
    parts: usize,
    answered: usize,
    sum: Accepted,
    error: Option<String>,
}

impl Joint {
    pub fn new(ack: Ack, parts: usize, on_done: Box<dyn Fn() + Send + Sync>) -> Arc<Joint> {
        Arc::new(Joint {
            state: Mutex::new(JointState {
                ack: Some(ack),
                parts,
                answered: 0,
                sum: Accepted::default(),
                error: None,
            }),
            on_done,
        })
    }
}

impl Drop for Joint {
    fn drop(&mut self) {
        let s = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(ack) = s.ack.take() {
            if let Some(e) = s.error.take() {
                let _ = ack.send(Err(e));
            } else if s.answered == s.parts {
                let _ = ack.send(Ok(std::mem::take(&mut s.sum)));
            }
        }
        (self.on_done)();
    }
}

/// One shard's share of a request's answer.
pub struct PartAck(Arc<Joint>);

impl PartAck {
    pub fn new(joint: Arc<Joint>) -> PartAck {
        PartAck(joint)
    }

    pub fn send(self, result: Result<Accepted, String>) {
        let mut s = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        s.answered += 1;
        match result {
            Ok(a) => add(&mut s.sum, a),
            Err(e) => {
                s.error.get_or_insert(e);
            }
        }
    }
}

fn add(sum: &mut Accepted, a: Accepted) {
    sum.events += a.events;
    sum.decisions += a.decisions;
    sum.unwatched += a.unwatched;
    for (why, n) in a.dropped {
        match sum.dropped.iter_mut().find(|(w, _)| *w == why) {
            Some((_, m)) => *m += n,
            None => sum.dropped.push((why, n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn joint(
        parts: usize,
    ) -> (
        Arc<Joint>,
        tokio::sync::oneshot::Receiver<Result<Accepted, String>>,
        Arc<AtomicUsize>,
    ) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        let j = Joint::new(
            tx,
            parts,
            Box::new(move || {
                d.fetch_add(1, Ordering::SeqCst);
            }),
        );
        (j, rx, done)
    }

    #[test]
    fn the_answer_waits_for_every_part_and_sums_them() {
        let (j, mut rx, done) = joint(2);
        let (a, b) = (PartAck::new(j.clone()), PartAck::new(j));
        a.send(Ok(Accepted {
            events: 2,
            decisions: 1,
            dropped: vec![("late", 1)],
            unwatched: 1,
        }));
        assert!(rx.try_recv().is_err(), "answered before the second shard");
        assert_eq!(done.load(Ordering::SeqCst), 0);
        b.send(Ok(Accepted {
            events: 3,
            decisions: 0,
            dropped: vec![("late", 2), ("too_old", 1)],
            unwatched: 0,
        }));
        assert_eq!(
            rx.try_recv().unwrap().unwrap(),
            Accepted {
                events: 5,
                decisions: 1,
                dropped: vec![("late", 3), ("too_old", 1)],
                unwatched: 1,
            }
        );
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_part_dropped_unanswered_drops_the_answer() {
        let (j, mut rx, done) = joint(2);
        let (a, b) = (PartAck::new(j.clone()), PartAck::new(j));
        a.send(Ok(Accepted::default()));
        drop(b);
        assert!(matches!(
            rx.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Closed)
        ));
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn an_error_in_one_part_is_the_answer() {
        let (j, mut rx, _) = joint(2);
        let (a, b) = (PartAck::new(j.clone()), PartAck::new(j));
        a.send(Err("refused".into()));
        b.send(Ok(Accepted::default()));
        assert_eq!(rx.try_recv().unwrap(), Err("refused".into()));
    }

    #[test]
    fn shards_are_a_fixed_function_of_the_service() {
        // Fixed across processes: a warm-up must pick the shard that decided.
        let picks: Vec<usize> = ["checkout", "search", "cart", "payments", ""]
            .iter()
            .map(|s| shard_of(Some(s), 4))
            .collect();
        assert_eq!(picks, [2, 1, 2, 3, 0]);
        assert_eq!(shard_of(None, 4), shard_of(Some(""), 4));
        assert_eq!(shard_of(Some("anything"), 1), 0);
        let spread: std::collections::HashSet<usize> = (0..64)
            .map(|i| shard_of(Some(&format!("svc-{i}")), 4))
            .collect();
        assert_eq!(spread.len(), 4, "64 services land on every one of 4 shards");
    }
}
