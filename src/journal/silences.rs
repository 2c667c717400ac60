//! A silence as the journal keeps it: matchers, a scope, a start and an
//! end (or a batch it lasts until), who and why. What a silence does is
//! [`crate::silence`]'s; these are the rows it stores and reads back.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::decision::Action;
use crate::rule::Matcher;
use crate::time::Ts;

/// What a silence mutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Messages that only inform; every action still runs.
    #[default]
    Notify,
    /// Actions (rollbacks, pauses, traffic switches, pages, approval
    /// requests) as well as messages.
    All,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Notify => "notify",
            Scope::All => "all",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "notify" => Some(Scope::Notify),
            "all" => Some(Scope::All),
            _ => None,
        }
    }

    /// Whether this scope holds back `action`. `human_released`: the action
    /// runs because a human approved it.
    pub fn mutes(self, action: Action, human_released: bool) -> bool {
        match self {
            Scope::Notify => matches!(action, Action::Notify | Action::Resolve),
            Scope::All => !human_released,
        }
    }
}

/// One matcher as Alertmanager's API writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MatcherSpec {
    pub name: String,
    pub value: String,
    pub is_regex: bool,
    /// Alertmanager's default: older clients leave it out.
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

impl MatcherSpec {
    /// Compiles within `max_regex_bytes` (see [`Matcher::bounded`]): the
    /// matcher and the bytes it may hold.
    pub fn compile(&self, max_regex_bytes: usize) -> Result<(Matcher, usize), String> {
        Matcher::bounded(
            &self.name,
            &self.value,
            self.is_regex,
            self.is_equal,
            max_regex_bytes,
        )
    }

    /// Parses `name=value`, `name!=value`, `name=~regex`, `name!~regex`.
    pub fn parse(text: &str) -> Result<MatcherSpec, String> {
        let m = Matcher::parse(text)?;
        Ok(MatcherSpec::of(&m))
    }

    pub fn of(m: &Matcher) -> MatcherSpec {
        MatcherSpec {
            name: m.name.clone(),
            value: m.value().to_owned(),
            is_regex: m.is_regex(),
            is_equal: m.is_equal(),
        }
    }
}

impl fmt::Display for MatcherSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match (self.is_regex, self.is_equal) {
            (false, true) => "=",
            (false, false) => "!=",
            (true, true) => "=~",
            (true, false) => "!~",
        };
        write!(f, "{}{op}{:?}", self.name, self.value)
    }
}

/// "Until batch N of service S completes".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UntilBatch {
    pub service: String,
    pub batch: String,
}

impl UntilBatch {
    /// `web:3`, as the CLI's `--until-batch` and the console's form take it.
    pub fn parse(s: &str) -> Result<UntilBatch, String> {
        match s.split_once(':') {
            Some((service, batch)) if !service.trim().is_empty() && !batch.trim().is_empty() => {
                Ok(UntilBatch {
                    service: service.trim().to_owned(),
                    batch: batch.trim().to_owned(),
                })
            }
            _ => Err(format!("`{s}`: expected SERVICE:BATCH, like web:3")),
        }
    }
}

/// A silence as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<MatcherSpec>,
    pub scope: Scope,
    pub starts_at: Ts,
    /// For an until-batch silence: when it ends at the latest (the maximum
    /// duration), brought forward when the batch completes.
    pub ends_at: Ts,
    pub until: Option<UntilBatch>,
    pub created_by: String,
    pub comment: String,
    pub created_at: Ts,
    pub updated_at: Ts,
    /// Who ended it early (`None`: it ran, or runs, its course).
    pub expired_by: Option<String>,
}

/// Alertmanager's silence states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SilenceState {
    Pending,
    Active,
    Expired,
}

impl SilenceState {
    pub fn as_str(self) -> &'static str {
        match self {
            SilenceState::Pending => "pending",
            SilenceState::Active => "active",
            SilenceState::Expired => "expired",
        }
    }
}

impl Silence {
    pub fn state(&self, now: Ts) -> SilenceState {
        if now >= self.ends_at {
            SilenceState::Expired
        } else if now < self.starts_at {
            SilenceState::Pending
        } else {
            SilenceState::Active
        }
    }

    /// One line: `3f2a… [all] service="web" until 2026-12-05T14:00:00Z by
    /// alice: kernel patch`.
    pub fn describe(&self) -> String {
        let matchers: Vec<String> = self.matchers.iter().map(ToString::to_string).collect();
        let until = match &self.until {
            Some(u) => format!(
                "until batch {} of {} completes (at the latest {})",
                u.batch,
                u.service,
                crate::time::day_clock_words(self.ends_at)
            ),
            None => format!("until {}", crate::time::day_clock_words(self.ends_at)),
        };
        format!(
            "{} [{}] {} {until} by {}: {}",
            self.id,
            self.scope.as_str(),
            matchers.join(", "),
            self.created_by,
            self.comment
        )
    }
}
