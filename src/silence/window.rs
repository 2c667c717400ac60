//! Recurring windows from the config: maintenance windows (a silence that
//! comes back every week) and freeze windows (no next batch: the rollout
//! gate answers hold while one is on).
//!
//! ```yaml
//! windows:
//!   - name: weekend-maintenance
//!     kind: maintenance          # or freeze
//!     scope: notify              # maintenance only: notify | all
//!     matchers: ['service="billing"']
//!     weekdays: [sat, sun]       # default: every day
//!     start: "02:00"
//!     end: "06:00"               # before start: runs past midnight
//!     time_zone: Asia/Shanghai   # default UTC
//! ```

use std::path::Path;

use jiff::tz::TimeZone;

use super::{HeldBy, Hold, Scope};
use crate::config::Errors;
use crate::config::yaml::{MapReader, Node};
use crate::decision::Action;
use crate::event::Labels;
use crate::rule::Matcher;
use crate::time::Ts;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Maintenance(Scope),
    Freeze,
}

#[derive(Debug, Clone)]
pub struct Window {
    pub name: String,
    pub kind: WindowKind,
    matchers: Vec<Matcher>,
    /// Bit `n` set: the window opens on weekday `n` (Monday = 0).
    weekdays: u8,
    /// Minutes after local midnight; `end` may be 1440 (`24:00`).
    start: u16,
    end: u16,
    tz: TimeZone,
    tz_name: String,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Window {
    /// Whether the window is on at `now`. A window whose end is before its
    /// start runs past midnight: it belongs to the day it opened.
    pub fn covers(&self, now: Ts) -> bool {
        let Ok(t) = jiff::Timestamp::from_millisecond(now.millis()) else {
            return false;
        };
        let local = t.to_zoned(self.tz.clone());
        let day = local.weekday().to_monday_zero_offset() as u8;
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        let opened_on = |d: u8| self.weekdays & (1 << d) != 0;
        if self.start < self.end {
            opened_on(day) && (self.start..self.end).contains(&minute)
        } else {
            (opened_on(day) && minute >= self.start)
                || (opened_on((day + 6) % 7) && minute < self.end)
        }
    }

    pub fn matches(&self, labels: &Labels<'_>) -> bool {
        self.matchers.iter().all(|m| m.matches(labels))
    }

    /// `sat,sun 02:00-06:00 Asia/Shanghai`.
    pub fn describe(&self) -> String {
        let days: Vec<&str> = (0..7)
            .filter(|d| self.weekdays & (1 << d) != 0)
            .map(|d| DAYS[d as usize])
            .collect();
        let days = if days.len() == 7 {
            "daily".to_owned()
        } else {
            days.join(",")
        };
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        format!(
            "{days} {}-{} {}",
            hm(self.start),
            hm(self.end),
            self.tz_name
        )
    }
}

/// Every configured window.
#[derive(Debug, Clone, Default)]
pub struct Windows(pub Vec<Window>);

impl Windows {
    /// The first maintenance window on at `now` that matches and whose
    /// scope mutes `action`.
    pub fn hold(
        &self,
        action: Action,
        human_released: bool,
        labels: &Labels<'_>,
        now: Ts,
    ) -> Option<Hold> {
        self.0.iter().find_map(|w| {
            let WindowKind::Maintenance(scope) = w.kind else {
                return None;
            };
            (scope.mutes(action, human_released) && w.matches(labels) && w.covers(now)).then(|| {
                Hold {
                    by: HeldBy::Window {
                        name: w.name.clone(),
                    },
                    scope,
                    detail: format!(
                        "held back by maintenance window {} ({}, scope {})",
                        w.name,
                        w.describe(),
                        scope.as_str()
                    ),
                }
            })
        })
    }

    /// Freeze windows on at `now` for a service: the gate holds.
    pub fn freezes(&self, service: &str, now: Ts) -> Vec<&Window> {
        let labels = Labels(vec![("service".into(), service.into())]);
        self.0
            .iter()
            .filter(|w| w.kind == WindowKind::Freeze && w.matches(&labels) && w.covers(now))
            .collect()
    }
}

/// Reads `windows:`, every problem into `errs`.
pub fn read(file: &Path, items: &[Node], errs: &mut Errors) -> Windows {
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(mut m) = MapReader::new(file, item, format!("config: windows[{i}]"), errs) else {
            continue;
        };
        if let Some(w) = read_one(&mut m, item, &out, errs) {
            out.push(w);
        }
        m.finish(errs);
    }
    Windows(out)
}

fn read_one(
    m: &mut MapReader<'_>,
    item: &Node,
    seen: &[Window],
    errs: &mut Errors,
) -> Option<Window> {
    let mut ok = true;
    let name = m.require("name", errs).and_then(|_| m.str("name", errs));
    if let Some(n) = name {
        if seen.iter().any(|w| w.name == n) {
            m.err(errs, item, "name", format!("window `{n}` is defined twice"));
            ok = false;
        }
    }
    let kind_text = m.str("kind", errs).unwrap_or("maintenance");
    let scope = match m.str("scope", errs) {
        None => Scope::Notify,
        Some(s) => Scope::parse(s).unwrap_or_else(|| {
            let n = m.node_of("scope").unwrap_or(item);
            m.err(errs, n, "scope", format!("`{s}`: expected notify or all"));
            ok = false;
            Scope::Notify
        }),
    };
    let kind = match kind_text {
        "maintenance" => WindowKind::Maintenance(scope),
        "freeze" => {
            if m.has("scope") {
                let n = m.node_of("scope").unwrap_or(item);
                m.err(
                    errs,
                    n,
                    "scope",
                    "a freeze window mutes nothing (the rollout gate holds): drop `scope`",
                );
                ok = false;
            }
            WindowKind::Freeze
        }
        other => {
            let n = m.node_of("kind").unwrap_or(item);
            m.err(
                errs,
                n,
                "kind",
                format!("`{other}`: expected maintenance or freeze"),
            );
            ok = false;
            WindowKind::Freeze
        }
    };
    let mut matchers = Vec::new();
    match m.str_list("matchers", errs) {
        None => {
            m.err(
                errs,
                item,
                "matchers",
                "missing: say what the window covers, e.g. ['service=\"billing\"']",
            );
            ok = false;
        }
        Some(list) => {
            for (text, n) in list {
                match Matcher::parse(text) {
                    Ok(mm) => matchers.push(mm),
                    Err(e) => {
                        m.err(errs, n, "matchers", e);
                        ok = false;
                    }
                }
            }
            let empty = Labels(Vec::new());
            if !matchers.is_empty() && matchers.iter().all(|mm| mm.matches(&empty)) {
                let n = m.node_of("matchers").unwrap_or(item);
                m.err(
                    errs,
                    n,
                    "matchers",
                    "every matcher matches the empty string: at least one must name what the window covers",
                );
                ok = false;
            }
        }
    }
    let mut weekdays = 0u8;
    match m.str_list("weekdays", errs) {
        None => weekdays = 0x7f,
        Some(list) => {
            for (d, n) in list {
                let lower = d.to_ascii_lowercase();
                match DAYS.iter().position(|x| lower.starts_with(x)) {
                    Some(i) if lower.len() == 3 || full_day(&lower, i) => weekdays |= 1 << i,
                    _ => {
                        m.err(
                            errs,
                            n,
                            "weekdays",
                            format!("`{d}`: expected mon, tue, wed, thu, fri, sat or sun"),
                        );
                        ok = false;
                    }
                }
            }
        }
    }
    let mut minute = |key: &str, allow_24: bool| -> Option<u16> {
        m.require(key, errs)?;
        let text = m.str(key, errs)?;
        let n = m.node_of(key).unwrap_or(item);
        match parse_hhmm(text, allow_24) {
            Some(v) => Some(v),
            None => {
                m.err(
                    errs,
                    n,
                    key,
                    format!("`{text}`: expected a time of day like \"02:00\""),
                );
                None
            }
        }
    };
    let start = minute("start", false);
    let end = minute("end", true);
    if let (Some(s), Some(e)) = (start, end) {
        if s == e {
            m.err(
                errs,
                item,
                "end",
                "start and end are the same time: the window would never close (or never open)",
            );
            ok = false;
        }
    }
    let tz_name = m.str("time_zone", errs).unwrap_or("UTC").to_owned();
    let tz = match TimeZone::get(&tz_name) {
        Ok(tz) => Some(tz),
        Err(e) => {
            let n = m.node_of("time_zone").unwrap_or(item);
            m.err(
                errs,
                n,
                "time_zone",
                format!("`{tz_name}` is not a known time zone (IANA name like Europe/Berlin): {e}"),
            );
            None
        }
    };
    Some(Window {
        name: name?.to_owned(),
        kind,
        matchers,
        weekdays,
        start: start?,
        end: end?,
        tz: tz?,
        tz_name,
    })
    .filter(|_| ok)
}

fn full_day(lower: &str, i: usize) -> bool {
    const FULL: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    lower == FULL[i]
}

fn parse_hhmm(s: &str, allow_24: bool) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    if m > 59 || h > 24 || (h == 24 && (m != 0 || !allow_24)) {
        return None;
    }
    Some(h * 60 + m)
}
