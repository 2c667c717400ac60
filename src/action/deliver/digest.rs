//! What a worker holds while its channel may not send: kept, bounded in
//! bytes (the oldest are given up past it, and their incidents hear so),
//! and sent as one digest when the channel may send again.

use std::collections::VecDeque;

use tokio::sync::{mpsc, oneshot};

use super::{Delivered, Delivery, Worker};
use crate::action::channel::SendOutcome;
use crate::action::message::Message;

/// Bytes of messages a worker holds for its channel; past it, in a storm,
/// the oldest are given up (each incident's timeline says so), bounding
/// memory whatever the flood.
pub(super) const MAX_PENDING_BYTES: usize = 16 << 20;
/// Messages one digest carries; more wait for the next send, so a flood
/// goes out as a series of digests and no message is summarised away.
pub(super) const DIGEST_PARTS: usize = 50;

/// Messages a worker holds for its channel, their weight kept as they come
/// and go: a hung channel in a storm holds tens of thousands, and summing
/// them again for every arrival cost more than the storm's other work.
#[derive(Default)]
pub(super) struct Held {
    pub(super) queue: VecDeque<Delivery>,
    pub(super) bytes: usize,
}

impl Held {
    pub(super) fn push(&mut self, d: Delivery) {
        self.bytes += weight(&d);
        self.queue.push_back(d);
    }

    pub(super) fn pop_front(&mut self) -> Option<Delivery> {
        let d = self.queue.pop_front()?;
        self.bytes -= weight(&d);
        Some(d)
    }

    /// The oldest `n` (fewer if fewer wait).
    pub(super) fn take(&mut self, n: usize) -> Vec<Delivery> {
        std::iter::from_fn(|| self.pop_front()).take(n).collect()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// What a held message costs.
fn weight(d: &Delivery) -> usize {
    d.message.title.len()
        + d.message.body.len()
        + d.message
            .links
            .iter()
            .map(|l| l.label.len() + l.url.len())
            .sum::<usize>()
        + 256
}

/// The incidents whose timelines hear of a delivery's outcome.
pub(super) fn incidents_of(d: &Delivery) -> Vec<String> {
    if d.incidents.is_empty() {
        d.message.incident.iter().cloned().collect()
    } else {
        d.incidents.clone()
    }
}

/// One delivery for many: a digest message whose outcome answers them all.
pub(super) fn merge(batch: Vec<Delivery>) -> Delivery {
    let mut parts: Vec<Message> = batch.iter().map(|d| d.message.clone()).collect();
    let all = parts.len();
    let title = Message::digest_title(&parts, all);
    let extra = all.saturating_sub(DIGEST_PARTS);
    parts.truncate(DIGEST_PARTS);
    let mut message = Message::digest(&parts);
    if extra > 0 {
        message
            .body
            .push_str(&format!("\n… and {extra} more (see `ripcord incidents`)"));
        message.title = title;
    }
    let fallback = batch.iter().find_map(|d| d.fallback.clone());
    let mut incidents: Vec<String> = batch.iter().flat_map(incidents_of).collect();
    incidents.sort();
    incidents.dedup();
    let waiters: Vec<oneshot::Sender<Delivered>> =
        batch.into_iter().filter_map(|d| d.done).collect();
    let (tx, rx) = oneshot::channel::<Delivered>();
    tokio::spawn(async move {
        if let Ok(outcome) = rx.await {
            for w in waiters {
                let _ = w.send(outcome.clone());
            }
        }
    });
    Delivery {
        message,
        fallback,
        done: Some(tx),
        incidents,
    }
}

impl Worker {
    /// Awaits `until`, holding every message that arrives meanwhile: a
    /// worker waiting on a send, a backoff or its rate never stops taking
    /// messages (its queue stays short, and they join the next digest).
    pub(super) async fn holding<F: std::future::Future>(
        &self,
        until: F,
        rx: &mut mpsc::Receiver<Delivery>,
        pending: &mut Held,
    ) -> F::Output {
        tokio::pin!(until);
        loop {
            tokio::select! {
                out = &mut until => return out,
                Some(d) = rx.recv() => self.hold(pending, d),
            }
        }
    }

    /// Keeps a message; past [`MAX_PENDING_BYTES`] the oldest are given up
    /// (counted, and said on their incidents' timelines).
    pub(super) fn hold(&self, pending: &mut Held, d: Delivery) {
        pending.push(d);
        while pending.bytes > MAX_PENDING_BYTES && pending.queue.len() > 1 {
            let Some(old) = pending.pop_front() else {
                break;
            };
            self.metrics.message(&self.spec.name, "dropped");
            tracing::warn!(channel = %self.spec.name, title = %old.message.title, "a message was given up: the channel's queue is full");
            if let Some(tx) = old.done {
                let _ = tx.send(Delivered {
                    channel: self.spec.name.clone(),
                    outcome: SendOutcome::Reject("given up: the channel's queue is full".into()),
                });
            }
        }
    }
}

#[cfg(test)]
mod held_tests {
    use super::*;
    use crate::action::message::{Kind, Message};
    use crate::decision::{Severity, Tier};

    fn delivery(title: &str, body_bytes: usize) -> Delivery {
        Delivery::new(
            Message {
                kind: Kind::Incident,
                title: title.to_owned(),
                body: "x".repeat(body_bytes),
                tier: Tier::Medium,
                severity: Severity::Functional,
                incident: None,
                links: Vec::new(),
                mention: false,
            },
            None,
            None,
        )
    }

    #[test]
    fn held_bytes_are_the_weight_of_what_is_held_through_pushes_pops_and_takes() {
        let mut held = Held::default();
        for i in 0..500 {
            held.push(delivery(&format!("m{i}"), i * 7 % 300));
            if i % 3 == 0 {
                held.pop_front();
            }
            if i % 50 == 0 {
                held.take(DIGEST_PARTS);
            }
            assert_eq!(held.bytes, held.queue.iter().map(weight).sum::<usize>());
        }
        let left = held.queue.len();
        assert_eq!(held.take(left + 10).len(), left);
        assert_eq!((held.bytes, held.is_empty()), (0, true));
    }
}
