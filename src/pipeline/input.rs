//! What a shard's driver consumes: one bounded input per shard that the
//! sources (Kafka's poll thread, the HTTP server) feed, and a doorbell that
//! wakes the driver when they do. The driver never polls: it waits on its
//! doorbell until input comes or its next timer is due.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::Submission;
use super::spread::{Joint, PartAck, shards_of};
use crate::event::Event;

/// What a source hands a shard, in the order it must be handled.
pub enum Input {
    /// Messages of partitions this shard owns, in offset order per partition.
    Records(Records),
    /// Partitions handed to this shard: claimed and warmed before any of
    /// their records (which come after this in the same input).
    Assigned(Vec<Assignment>),
    /// Partitions taken away: what was processed for them is journaled and
    /// their state dropped, then the sender is answered (the source lets
    /// them go only then, so the next owner resumes after that).
    Revoked(Vec<String>, SyncSender<()>),
    /// The last batch is journaled, then the sender answered, then the
    /// driver ends.
    Stop(SyncSender<()>),
}

/// A partition handed to a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The source's number for the partition, which its records carry.
    pub slot: u32,
    /// Its name in the journal (`topic/partition`).
    pub name: String,
    pub topic: String,
    pub partition: i32,
    /// Where live consumption resumes (`None`: unknown, history is not read).
    pub resume_at: Option<i64>,
}

/// Records of one or more partitions, copied into one buffer: one
/// allocation per batch, not one per message, and a size in bytes the
/// source bounds.
#[derive(Default)]
pub struct Records {
    data: Vec<u8>,
    items: Vec<Item>,
    messages: usize,
}

#[derive(Debug, Clone, Copy)]
enum Item {
    Message {
        slot: u32,
        offset: i64,
        payload: (u32, u32),
        key: Option<(u32, u32)>,
        /// Carries the drill marker.
        drill: bool,
    },
    /// The partition reached its end: from here its clock may follow the wall.
    End { slot: u32 },
}

/// One record, as the driver reads it.
#[derive(Debug, Clone, Copy)]
pub enum Record<'a> {
    Message {
        slot: u32,
        offset: i64,
        payload: &'a [u8],
        key: Option<&'a [u8]>,
        drill: bool,
    },
    End {
        slot: u32,
    },
}

impl Records {
    pub fn push(
        &mut self,
        slot: u32,
        offset: i64,
        payload: &[u8],
        key: Option<&[u8]>,
        drill: bool,
    ) {
        let payload = self.copy(payload);
        let key = key.map(|k| self.copy(k));
        self.items.push(Item::Message {
            slot,
            offset,
            payload,
            key,
            drill,
        });
        self.messages += 1;
    }

    pub fn push_end(&mut self, slot: u32) {
        self.items.push(Item::End { slot });
    }

    fn copy(&mut self, bytes: &[u8]) -> (u32, u32) {
        let start = self.data.len() as u32;
        self.data.extend_from_slice(bytes);
        (start, bytes.len() as u32)
    }

    /// Messages held (ends not counted).
    pub fn messages(&self) -> usize {
        self.messages
    }

    /// Bytes of payloads and keys held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Record<'_>> {
        let at = |(start, len): (u32, u32)| &self.data[start as usize..(start + len) as usize];
        self.items.iter().map(move |item| match *item {
            Item::Message {
                slot,
                offset,
                payload,
                key,
                drill,
            } => Record::Message {
                slot,
                offset,
                payload: at(payload),
                key: key.map(at),
                drill,
            },
            Item::End { slot } => Record::End { slot },
        })
    }
}

/// Wakes a shard's driver. A ring before the driver waits is kept, so a
/// wake-up is never lost between the driver finding its inputs empty and
/// starting to wait.
#[derive(Clone, Default)]
pub struct Doorbell(Arc<(Mutex<bool>, Condvar)>);

impl Doorbell {
    pub fn ring(&self) {
        let (rung, cv) = &*self.0;
        *rung.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_one();
    }

    /// Waits until rung (at once if it was since the last wait) or `for_at_most`.
    pub fn wait(&self, for_at_most: Duration) {
        let (rung, cv) = &*self.0;
        let mut r = rung.lock().unwrap_or_else(|e| e.into_inner());
        if !*r {
            r = cv
                .wait_timeout(r, for_at_most)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *r = false;
    }
}

/// A source's end of a shard's input.
#[derive(Clone)]
pub struct Feed {
    tx: SyncSender<Input>,
    bell: Doorbell,
}

impl Feed {
    /// Hands `input` over, waiting while the shard's input is full (the
    /// source slows down to the shard's pace). `false`: the shard is gone.
    pub fn send(&self, input: Input) -> bool {
        let sent = self.tx.send(input).is_ok();
        self.bell.ring();
        sent
    }
}

/// What a shard's driver takes of an HTTP request: the whole body (it
/// decides the events of its own services) and its share of the answer.
pub struct Part {
    pub body: bytes::Bytes,
    pub form: crate::decode::BodyForm,
    /// This part journals the body (for warm-ups and the other replicas):
    /// one part of each request does.
    pub journal_body: bool,
    pub ack: PartAck,
}

/// The HTTP server's end of the shards' submissions: one queue per shard,
/// and at most `http.queue` requests waiting in all (so a Kafka backlog
/// never fills it, and a full one turns a request away whole, never half
/// queued).
#[derive(Clone)]
pub struct Submit {
    shards: Arc<[ShardQueue]>,
    waiting: Arc<AtomicUsize>,
    bound: usize,
}

struct ShardQueue {
    tx: SyncSender<Part>,
    bell: Doorbell,
}

impl Submit {
    /// Queues `s` for the shards of its services, or hands it back when
    /// `http.queue` requests already wait. The body must decode (the
    /// receiver checked it). Once the shards are gone the answer is
    /// dropped unanswered: the client hears ripcord stopped.
    pub fn try_send(&self, s: Submission) -> Result<(), TrySendError<Submission>> {
        if self.shards.len() == 1 {
            return self.send_to(s, vec![0]);
        }
        let mut events = Vec::new();
        // An undecodable body goes whole to one shard, which says why.
        let _ = crate::decode::decode_body(&s.body, s.form, &mut events);
        let targets = shards_of(&events, self.shards.len());
        self.send_to(s, targets)
    }

    /// The shards a body of these `events` goes to, for
    /// [`Submit::try_send_routed`]: the HTTP receiver, which decoded the
    /// body to validate it, does not have it decoded again to be routed.
    pub fn route(&self, events: &[Event<'_>]) -> Route {
        Route(shards_of(events, self.shards.len()))
    }

    /// [`Submit::try_send`] to the shards `route` (of this body) names.
    pub fn try_send_routed(
        &self,
        s: Submission,
        route: Route,
    ) -> Result<(), TrySendError<Submission>> {
        if route.0.iter().any(|&i| i >= self.shards.len()) {
            // Made by another Submit: routed here anew.
            return self.try_send(s);
        }
        self.send_to(s, route.0)
    }

    fn send_to(&self, s: Submission, targets: Vec<usize>) -> Result<(), TrySendError<Submission>> {
        if self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.bound).then_some(n + 1)
            })
            .is_err()
        {
            return Err(TrySendError::Full(s));
        }
        let waiting = self.waiting.clone();
        let joint = Joint::new(
            s.ack,
            targets.len(),
            Box::new(move || {
                waiting.fetch_sub(1, Ordering::AcqRel);
            }),
        );
        for (n, &i) in targets.iter().enumerate() {
            let part = Part {
                body: s.body.clone(),
                form: s.form,
                journal_body: n == 0,
                ack: PartAck::new(joint.clone()),
            };
            // Never full: a queue holds at most `bound` parts, one per
            // waiting request. A shard gone since drops its part, and the
            // answer with it (the client hears ripcord stopped).
            let q = &self.shards[i];
            let _ = q.tx.try_send(part);
            q.bell.ring();
        }
        Ok(())
    }
}

/// The shards one body's events go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route(Vec<usize>);

/// A shard driver's end of its HTTP parts.
pub struct HttpInput {
    pub(super) rx: Receiver<Part>,
    pub(super) bell: Doorbell,
}

/// The HTTP submissions' queues, one per shard, `bound` requests waiting
/// at most in all.
pub fn submissions(bound: usize, shards: usize) -> (Submit, Vec<HttpInput>) {
    let bound = bound.max(1);
    let mut queues = Vec::with_capacity(shards);
    let mut inputs = Vec::with_capacity(shards);
    for _ in 0..shards.max(1) {
        let (tx, rx) = std::sync::mpsc::sync_channel(bound);
        let bell = Doorbell::default();
        queues.push(ShardQueue {
            tx,
            bell: bell.clone(),
        });
        inputs.push(HttpInput { rx, bell });
    }
    (
        Submit {
            shards: queues.into(),
            waiting: Arc::default(),
            bound,
        },
        inputs,
    )
}

/// A shard's input, `bound` inputs long, ringing `bell`.
pub(super) fn input(bound: usize, bell: Doorbell) -> (Feed, Receiver<Input>) {
    let (tx, rx) = std::sync::mpsc::sync_channel(bound);
    (Feed { tx, bell }, rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_as_pushed() {
        let mut r = Records::default();
        r.push(3, 10, b"one", Some(b"k"), false);
        r.push_end(3);
        r.push(1, 7, b"", None, true);
        assert_eq!(r.messages(), 2);
        assert_eq!(r.bytes(), 4);
        let got: Vec<String> = r.iter().map(|x| format!("{x:?}")).collect();
        assert_eq!(
            got,
            [
                "Message { slot: 3, offset: 10, payload: [111, 110, 101], key: Some([107]), drill: false }",
                "End { slot: 3 }",
                "Message { slot: 1, offset: 7, payload: [], key: None, drill: true }",
            ]
        );
    }

    #[test]
    fn a_ring_before_the_wait_is_not_lost() {
        let bell = Doorbell::default();
        bell.ring();
        let t = std::time::Instant::now();
        // Would wait the whole minute if the ring were lost.
        bell.wait(Duration::from_secs(60));
        assert!(t.elapsed() < Duration::from_secs(30));
    }
}
