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
    ///
    /// Every event carries a timestamp, so the plain shape producers emit
    /// is parsed by hand ([`fast_rfc3339`]); anything else goes to jiff,
    /// which stays the authority (a property test and a fuzz target check
    /// that the two agree wherever the fast path answers).
    pub fn parse_rfc3339(s: &str) -> Result<Ts, TimeError> {
        match fast_rfc3339(s.as_bytes()) {
            Some(ms) => Ts::from_millis(ms).ok_or(TimeError::OutOfRange(ms)),
            None => Ts::parse_rfc3339_general(s),
        }
    }

    /// [`Ts::parse_rfc3339`] without the fast path: every form jiff accepts.
    pub fn parse_rfc3339_general(s: &str) -> Result<Ts, TimeError> {
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

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)`
/// in years 1970..=9998 (jiff's range ends late on 9999-12-30), at or after
/// the epoch; `None` for any other input
/// (including invalid dates), which the caller hands to jiff.
fn fast_rfc3339(s: &[u8]) -> Option<i64> {
    fn num(s: &[u8]) -> Option<i64> {
        s.iter().try_fold(0i64, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0'))
        })
    }
    if s.len() < 20
        || s[4] != b'-'
        || s[7] != b'-'
        || s[10] != b'T'
        || s[13] != b':'
        || s[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(&s[0..4])?, num(&s[5..7])?, num(&s[8..10])?);
    let (hour, minute, second) = (num(&s[11..13])?, num(&s[14..16])?, num(&s[17..19])?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1970..=9998).contains(&year)
        || day < 1
        || day > month_days
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix(b".") {
        let digits = frac.iter().take_while(|b| b.is_ascii_digit()).count();
        if !(1..=9).contains(&digits) {
            return None;
        }
        // Truncated to milliseconds, as jiff's `as_millisecond` does.
        let ms_digits = &frac[..digits.min(3)];
        millis = num(ms_digits)? * 10i64.pow(3 - ms_digits.len() as u32);
        rest = &frac[digits..];
    }
    let offset_secs = match rest {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (h, m) = (num(&[*h1, *h2])?, num(&[*m1, *m2])?);
            if h > 23 || m > 59 {
                return None;
            }
            let secs = h * 3600 + m * 60;
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
    // days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    // Before the epoch jiff truncates fractions toward zero; leave it that case.
    (secs >= 0).then_some(secs * 1000 + millis)
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

/// Reads what [`Ts`]'s `Serialize` writes (RFC 3339), or Unix milliseconds.
impl<'de> Deserialize<'de> for Ts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ts, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either<'a> {
            Millis(i64),
            Text(std::borrow::Cow<'a, str>),
        }
        match Either::deserialize(d)? {
            Either::Millis(ms) => Ts::from_millis(ms)
                .ok_or_else(|| serde::de::Error::custom(TimeError::OutOfRange(ms))),
            Either::Text(s) => Ts::parse_rfc3339(&s).map_err(serde::de::Error::custom),
        }
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
        // Days (`30d`, `90d`: how reviews are asked for) are 24 hours here:
        // a span of time, never a calendar date.
        let sd = jiff::SignedDuration::from_str(t)
            .or_else(|_| {
                jiff::Span::from_str(t)
                    .and_then(|span| span.to_duration(jiff::SpanRelativeTo::days_are_24_hours()))
            })
            .map_err(|_| TimeError::Duration(truncate(s)))?;
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
    #[error("`{0}` is not a duration (e.g. 30s, 10m, 1h30m, 90d)")]
    Duration(String),
}

/// A deadline as people read it: `within 30 min, by 10:38 UTC` (whole
/// minutes, rounded up; the day too when it is not `now`'s).
pub fn deadline_words(now: Ts, at: Ts) -> String {
    let mins = (at.since(now).millis().max(0) + 59_999) / 60_000;
    let span = match (mins / 60, mins % 60) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    };
    format!("within {span}, by {}", day_and_clock(now, at, 16))
}

/// A time as ripcord writes it for people (messages, action details,
/// timelines, `show`, the console): `10:02:03 UTC`, its day first when
/// that is not `now`'s (`2026-11-20 10:02:03 UTC`); never RFC 3339 with
/// milliseconds, which stays for machines (JSON fields, CSV).
pub fn clock_words(now: Ts, t: Ts) -> String {
    day_and_clock(now, t, 19)
}

/// [`clock_words`] with the day always: `2026-11-20 10:02:03 UTC`, for
/// lines read later or across days (the decisions on stdout).
pub fn day_clock_words(t: Ts) -> String {
    let s = t.to_string();
    format!(
        "{} {} UTC",
        s.get(..10).unwrap_or(&s),
        s.get(11..19).unwrap_or("")
    )
}

/// `t` as `HH:MM[:SS] UTC` (`end`: where in RFC 3339 the clock stops),
/// with the day first when it is not `now`'s.
fn day_and_clock(now: Ts, t: Ts, end: usize) -> String {
    let (a, b) = (now.to_string(), t.to_string());
    let clock = b.get(11..end).unwrap_or(&b);
    if a.get(..10) == b.get(..10) {
        format!("{clock} UTC")
    } else {
        format!("{} {clock} UTC", b.get(..10).unwrap_or(&b))
    }
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
    fn fast_rfc3339_edges() {
        // (input, fast path, jiff)
        for (s, fast, general) in [
            ("1970-01-01T00:00:00Z", Some(0), Some(0)),
            (
                "9998-12-31T23:59:59.999999999Z",
                Some(253_370_764_799_999),
                Some(253_370_764_799_999),
            ),
            ("9999-01-01T00:00:00Z", None, Some(253_370_764_800_000)),
            ("9999-12-31T23:59:59Z", None, None),
            (
                "2024-02-29T12:00:00Z",
                Some(1_709_208_000_000),
                Some(1_709_208_000_000),
            ),
            (
                "2000-02-29T00:00:00.5-01:30",
                Some(951_787_800_500),
                Some(951_787_800_500),
            ),
            ("2100-02-29T00:00:00Z", None, None),
            ("2026-11-21T10:00:00.Z", None, None),
            ("2026-11-21T24:00:00Z", None, None),
            ("1969-12-31T23:59:59.9999Z", None, Some(0)),
        ] {
            assert_eq!(fast_rfc3339(s.as_bytes()), fast, "{s}");
            assert_eq!(
                Ts::parse_rfc3339_general(s).ok().map(|t| t.0),
                general,
                "{s}"
            );
            assert_eq!(Ts::parse_rfc3339(s).ok().map(|t| t.0), general, "{s}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// The hand-written fast path agrees with jiff wherever it answers,
        /// and answers for the shapes producers emit.
        #[test]
        fn fast_rfc3339_agrees_with_jiff(
            year in 1965i64..10_000,
            month in 0i64..14,
            day in 0i64..33,
            hms in (0i64..26, 0i64..62, 0i64..62),
            frac in proptest::option::of("[0-9]{0,11}"),
            offset in proptest::option::of((proptest::bool::ANY, 0i64..26, 0i64..62)),
        ) {
            let mut s = format!(
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
                hms.0, hms.1, hms.2
            );
            if let Some(f) = &frac {
                s.push('.');
                s.push_str(f);
            }
            match offset {
                None => s.push('Z'),
                Some((neg, h, m)) => s.push_str(&format!("{}{h:02}:{m:02}", if neg { '-' } else { '+' })),
            }
            let general = Ts::parse_rfc3339_general(&s).ok();
            match fast_rfc3339(s.as_bytes()) {
                Some(ms) => proptest::prop_assert_eq!(Ts::from_millis(ms), general, "{}", s),
                None => {
                    // The plain valid shape must not fall off the fast path.
                    let plain = (1970..=9998).contains(&year)
                        && frac.as_ref().is_none_or(|f| (1..=9).contains(&f.len()))
                        && offset.is_none_or(|(_, h, m)| h < 24 && m < 60)
                        && hms.0 < 24 && hms.1 < 60 && hms.2 < 60;
                    if let (true, Some(ts)) = (plain, general) {
                        // Only a sub-millisecond instant before the epoch,
                        // which jiff truncates to the epoch, may fall back.
                        proptest::prop_assert!(ts.0 == 0, "{} fell back", s);
                    }
                }
            }
            proptest::prop_assert_eq!(Ts::parse_rfc3339(&s).ok(), general);
        }
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(Ts(1_795_255_200_000).to_string(), "2026-11-21T10:00:00Z");
        assert_eq!(Ts(1_795_255_200_250).to_string(), "2026-11-21T10:00:00.25Z");
    }

    #[test]
    fn deadlines_read_as_minutes_and_a_clock() {
        let now = Ts::parse_rfc3339("2026-11-21T10:08:00.250Z").unwrap();
        let at = |s: &str| Ts::parse_rfc3339(s).unwrap();
        assert_eq!(
            deadline_words(now, at("2026-11-21T10:38:00.250Z")),
            "within 30 min, by 10:38 UTC"
        );
        assert_eq!(
            deadline_words(now, at("2026-11-21T12:08:30Z")),
            "within 2 h 1 min, by 12:08 UTC"
        );
        assert_eq!(
            deadline_words(now, at("2026-11-22T01:08:00.250Z")),
            "within 15 h, by 2026-11-22 01:08 UTC"
        );
    }

    #[test]
    fn times_read_as_a_clock_with_the_day_when_it_is_not_today() {
        let now = Ts::parse_rfc3339("2026-11-21T10:08:00.250Z").unwrap();
        let at = |s: &str| Ts::parse_rfc3339(s).unwrap();
        assert_eq!(
            clock_words(now, at("2026-11-21T10:02:03.457Z")),
            "10:02:03 UTC"
        );
        assert_eq!(
            clock_words(now, at("2026-11-20T23:59:59.999Z")),
            "2026-11-20 23:59:59 UTC"
        );
        assert_eq!(
            day_clock_words(at("2026-11-21T10:02:03.457Z")),
            "2026-11-21 10:02:03 UTC"
        );
    }

    #[test]
    fn durations_round_trip() {
        for (s, ms) in [
            ("30s", 30_000),
            ("10m", 600_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            ("0", 0),
            ("30d", 30 * 86_400_000),
            ("90d", 90 * 86_400_000),
            ("1d12h", 129_600_000),
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
