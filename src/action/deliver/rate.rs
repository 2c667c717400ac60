//! A channel's rate: `n` per `period`, kept with governor on tokio's
//! (pausable) clock.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{Quota, RateLimiter};

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
