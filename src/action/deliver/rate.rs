//! The rate stage: a channel's rate, `n` per `period`, kept with governor
//! on tokio's (pausable) clock; what arrives while the worker waits is
//! held for the digest.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{Quota, RateLimiter};
use tokio::sync::{mpsc, watch};

use super::digest::Held;
use super::{Delivery, Worker};

impl Worker {
    /// Waits until the channel may send, holding what arrives meanwhile.
    /// `Some(true)` if it had to wait (what is held goes out as a digest),
    /// `None` if ripcord began to stop.
    pub(super) async fn wait_for_rate(
        &self,
        limiter: &Limiter,
        clock: &TokioRateClock,
        rx: &mut mpsc::Receiver<Delivery>,
        pending: &mut Held,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<bool> {
        let mut was_limited = false;
        while let Err(not_until) = limiter.check() {
            was_limited = true;
            let wait = not_until.wait_time_from(governor::clock::Clock::now(clock));
            let waited = async {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.wait_for(|s| *s) => {}
                }
            };
            self.holding(waited, rx, pending).await;
            if *shutdown.borrow() {
                return None;
            }
        }
        Some(was_limited)
    }
}

/// A clock for governor that follows tokio's (pausable) time.
#[derive(Clone, Debug)]
pub(super) struct TokioRateClock(tokio::time::Instant);

impl governor::clock::Clock for TokioRateClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

pub(super) type Limiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    TokioRateClock,
    governor::middleware::NoOpMiddleware<Duration>,
>;

/// `n` per `per` as one send every `per / n` (plus 2%, at least 50 ms)
/// with no burst: then no window of length `per` ever holds more than
/// `n` sends, even as the provider sees them, after network jitter
/// (providers count in sliding windows: DingTalk's 21st message in a
/// minute is refused). Messages that arrive in between are merged into
/// a digest.
pub(super) fn limiter(rate: (u32, Duration)) -> (Limiter, TokioRateClock) {
    let (n, per) = rate;
    let n = NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
    let spacing = per / n.get();
    let spacing = spacing + (spacing / 50).max(Duration::from_millis(50));
    let quota = Quota::with_period(spacing)
        .unwrap_or_else(|| Quota::per_second(n))
        .allow_burst(NonZeroU32::MIN);
    let clock = TokioRateClock(tokio::time::Instant::now());
    (RateLimiter::direct_with_clock(quota, clock.clone()), clock)
}
