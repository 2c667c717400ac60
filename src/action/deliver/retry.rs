//! How long a worker waits before trying a passing failure again.

use std::time::Duration;

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
