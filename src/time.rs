//! Event time and durations.
//!
//! ripcord reasons in event time only: every timestamp is milliseconds since
//! the Unix epoch, carried by the event itself. Nothing in the engine reads a
//! wall clock; the live responder injects one through [`Clock`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in event time: milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ts(pub i64);

/// Latest timestamp ripcord accepts (9999-12-31T23:59:59.999Z): keeps
/// arithmetic on timestamps far away from overflow.
pub const MAX_TS: Ts = Ts(253_402_300_799_999);

impl Ts {
    pub const MIN: Ts = Ts(0);

    pub fn from_millis(ms: i64) -> Option<Ts> {
        (0..=MAX_TS.0).contains(&ms).then_some(Ts(ms))
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// Parses RFC 3339 (`2026-11-21T10:00:00Z`, `...+08:00`, fractional seconds).
    pub fn parse_rfc3339(s: &str) -> Result<Ts, TimeError> {
        let t = jiff::Timestamp::from_str(s).map_err(|_| TimeError::Rfc3339(truncate(s)))?;
        Ts::from_millis(t.as_millisecond()).ok_or(TimeError::OutOfRange(t.as_millisecond()))
    }

    pub fn saturating_add(self, d: Dur) -> Ts {
        Ts(self.0.saturating_add(d.0))
    }

    pub fn saturating_sub(self, d: Dur) -> Ts {
        Ts(self.0.saturating_sub(d.0))
    }

    /// Time elapsed from `earlier` to `self` (zero if `earlier` is later).
    pub fn since(self, earlier: Ts) -> Dur {
        Dur((self.0 - earlier.0).max(0))
    }
}

impl fmt::Display for Ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match jiff::Timestamp::from_millisecond(self.0) {
            Ok(t) => write!(f, "{t}"),
            Err(_) => write!(f, "{}ms", self.0),
        }
    }
}

impl fmt::Debug for Ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Ts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A span of time in milliseconds. Written in config as `30s`, `10m`,
/// `1h30m`, `500ms`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub i64);

impl Dur {
    pub const ZERO: Dur = Dur(0);

    pub const fn from_secs(s: i64) -> Dur {
        Dur(s * 1000)
    }

    pub const fn from_mins(m: i64) -> Dur {
        Dur(m * 60_000)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.max(0) as u64)
    }
}

impl FromStr for Dur {
    type Err = TimeError;

    fn from_str(s: &str) -> Result<Dur, TimeError> {
        let t = s.trim();
        if t == "0" {
            return Ok(Dur::ZERO);
        }
        let sd = jiff::SignedDuration::from_str(t).map_err(|_| TimeError::Duration(truncate(s)))?;
        let ms = sd.as_millis();
        if ms < 0 || ms > i128::from(i32::MAX) * 1000 {
            return Err(TimeError::Duration(truncate(s)));
        }
        Ok(Dur(ms as i64))
    }
}

impl fmt::Display for Dur {
    /// Prints the shortest exact form: `90s` as `1m30s`, `1500ms` as `1500ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if ms == 0 {
            return f.write_str("0s");
        }
        if ms % 1000 != 0 {
            return write!(f, "{ms}ms");
        }
        let mut s = ms / 1000;
        let h = s / 3600;
        s %= 3600;
        let m = s / 60;
        s %= 60;
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimeError {
    #[error("`{0}` is not an RFC 3339 timestamp (e.g. 2026-11-21T10:00:00Z)")]
    Rfc3339(String),
    #[error("timestamp {0} ms is outside 1970..9999")]
    OutOfRange(i64),
    #[error("`{0}` is not a duration (e.g. 30s, 10m, 1h30m)")]
    Duration(String),
}

/// Keeps error messages short when the offending input is huge.
fn truncate(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The responder's source of "now". Replay and tests never use it: they run
/// purely on event time. The live responder uses it to advance the engine's
/// clock when no events arrive and to reject events from far in the future.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Ts;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Ts {
        Ts(jiff::Timestamp::now().as_millisecond())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_variants() {
        assert_eq!(
            Ts::parse_rfc3339("2026-11-21T10:00:00Z").unwrap().0,
            1_795_255_200_000
        );
        assert_eq!(
            Ts::parse_rfc3339("2026-11-21T18:00:00.250+08:00")
                .unwrap()
                .0,
            1_795_255_200_250
        );
        assert!(Ts::parse_rfc3339("2026-11-21 10:00").is_err());
        assert!(Ts::parse_rfc3339("1969-12-31T23:59:59Z").is_err());
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(Ts(1_795_255_200_000).to_string(), "2026-11-21T10:00:00Z");
        assert_eq!(Ts(1_795_255_200_250).to_string(), "2026-11-21T10:00:00.25Z");
    }

    #[test]
    fn durations_round_trip() {
        for (s, ms) in [
            ("30s", 30_000),
            ("10m", 600_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            ("0", 0),
        ] {
            let d: Dur = s.parse().unwrap();
            assert_eq!(d.0, ms, "{s}");
            assert_eq!(d.to_string().parse::<Dur>().unwrap(), d);
        }
        assert!("-5m".parse::<Dur>().is_err());
        assert!("ten minutes".parse::<Dur>().is_err());
    }
}

/// A clock that follows tokio's time (pausable in tests), starting at
/// `start`: lets a test run minutes of escalation in no time.
#[derive(Debug, Clone)]
pub struct TokioClock {
    start: Ts,
    origin: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(start: Ts) -> TokioClock {
        TokioClock {
            start,
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Ts {
        self.start
            .saturating_add(Dur(self.origin.elapsed().as_millis() as i64))
    }
}
