//! The retry stage: send, and try a passing failure (5xx, timeout, 429,
//! "too fast") again after a backoff, honouring Retry-After, until it is
//! sent, refused for good, or out of retries. Shutdown and draining end the
//! backoff (the grace period is for sends, not for backoffs of a minute).

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::digest::Held;
use super::{Delivery, Worker};
use crate::action::channel::{SendContext, SendOutcome};
use crate::action::message::Message;

/// How the retry stage ended.
pub(super) struct Tried {
    pub(super) outcome: SendOutcome,
    /// Attempts made.
    pub(super) attempts: u32,
    /// Cut short by a shutdown or a drain (no retry was waited for).
    pub(super) stopped: bool,
}

impl Worker {
    /// Sends `message` until it is sent, refused, or out of retries; keeps
    /// receiving (into `pending`) meanwhile.
    pub(super) async fn send_with_retries(
        &self,
        message: &Message,
        incidents: &[String],
        rx: &mut mpsc::Receiver<Delivery>,
        pending: &mut Held,
        shutdown: &mut watch::Receiver<bool>,
        draining: &mut watch::Receiver<bool>,
    ) -> Tried {
        let mut attempt = 0u32;
        loop {
            let ctx = SendContext {
                http: &self.http,
                now: self.clock.now(),
            };
            let send =
                tokio::time::timeout(self.spec.timeout, self.spec.channel.send(&ctx, message));
            let result = self.holding(send, rx, pending).await;
            let outcome = result.unwrap_or_else(|_| SendOutcome::Retry {
                after: None,
                reason: format!("no answer within {:?}", self.spec.timeout),
            });
            let stopped = |outcome, attempts| Tried {
                outcome,
                attempts,
                stopped: true,
            };
            match &outcome {
                // Stopping: no backoff, no retry.
                SendOutcome::Retry { .. } if *draining.borrow() || *shutdown.borrow() => {
                    return stopped(outcome, attempt + 1);
                }
                SendOutcome::Retry { after, reason } if attempt < self.spec.retries => {
                    attempt += 1;
                    let wait = wait_before(attempt, *after);
                    self.note(
                        incidents,
                        &format!(
                            "send via {} failed ({reason}); retry {attempt} in {wait:?}",
                            self.spec.name
                        ),
                    )
                    .await;
                    let cut_short = async {
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => false,
                            _ = shutdown.wait_for(|s| *s) => true,
                            _ = draining.wait_for(|s| *s) => true,
                        }
                    };
                    if self.holding(cut_short, rx, pending).await {
                        return stopped(outcome, attempt);
                    }
                }
                _ => {
                    return Tried {
                        outcome,
                        attempts: attempt + 1,
                        stopped: false,
                    };
                }
            }
        }
    }
}

/// Before attempt `attempt + 1`: exponential (2, 4, 8 … s, at most a
/// minute), or the provider's own `Retry-After` when it gives one, but
/// never less than a second.
pub(super) fn wait_before(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let backoff = Duration::from_secs(1 << attempt.min(6)).min(Duration::from_secs(60));
    retry_after
        .unwrap_or(backoff)
        .max(backoff.min(Duration::from_secs(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_minute_and_retry_after_wins_above_a_second() {
        let s = Duration::from_secs;
        assert_eq!(wait_before(1, None), s(2));
        assert_eq!(wait_before(2, None), s(4));
        assert_eq!(wait_before(9, None), s(60));
        assert_eq!(wait_before(3, Some(s(30))), s(30));
        assert_eq!(wait_before(3, Some(Duration::ZERO)), s(1));
    }
}
