//! Silences: humans holding back, for a while, what ripcord would do.
//!
//! A silence is Alertmanager's (label matchers, a start, an end, who and
//! why) with a `scope`: `notify` mutes messages that only inform (actions
//! still run), `all` mutes actions too. Instead of an end it may last
//! "until batch N of service S completes" (bounded by the maximum
//! duration all the same). Recurring maintenance windows from the config
//! ([`window`]) hold back the same way; freeze windows make the rollout
//! gate answer hold.
//!
//! What a silence never mutes, whatever its scope says:
//! - under `notify`, anything that asks a human to act: pages and approval
//!   requests (a high-tier rollback waits on both, so it is never muted by
//!   a `notify` silence), and the pages of a rollback that failed;
//! - a rollback a human approved: the verdict was given during the silence,
//!   by someone who could see it.
//!
//! A held-back action is still journaled (state `skipped`, the silence
//! named on the incident's timeline and in the audit of the silence), and
//! its incident is opened and followed as any other.

pub mod http;
pub mod window;

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::decision::{Action, Decision};
use crate::event::Labels;
use crate::rule::Matcher;
use crate::time::{Dur, Ts};

pub use window::{Window, WindowKind, Windows};

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
    pub fn compile(&self) -> Result<Matcher, String> {
        Matcher::from_parts(&self.name, &self.value, self.is_regex, self.is_equal)
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
                u.batch, u.service, self.ends_at
            ),
            None => format!("until {}", self.ends_at),
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

/// What `POST /api/v1/silences` takes: Alertmanager's `PostableSilence`
/// plus `scope` and `until` (instead of `endsAt`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostableSilence {
    /// Alertmanager updates a silence given its id; ripcord refuses (an
    /// audit trail of what muted what needs silences that do not change).
    #[serde(default)]
    pub id: Option<String>,
    pub matchers: Vec<MatcherSpec>,
    pub starts_at: String,
    #[serde(default)]
    pub ends_at: Option<String>,
    #[serde(default)]
    pub until: Option<UntilBatch>,
    pub created_by: String,
    pub comment: String,
    #[serde(default)]
    pub scope: Scope,
}

/// Limits on what a silence may be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SilenceLimits {
    /// The longest a silence may last (an until-batch one ends then at the
    /// latest).
    pub max_duration: Dur,
}

impl Default for SilenceLimits {
    fn default() -> Self {
        SilenceLimits {
            max_duration: Dur::from_mins(24 * 60),
        }
    }
}

/// Bounds on free text, like an approval's `by` and note.
const MAX_BY: usize = 200;
const MAX_COMMENT: usize = 2000;
const MAX_MATCHERS: usize = 32;
const MAX_MATCHER_VALUE: usize = 1024;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid silence: {}", .0.join("; "))]
pub struct Invalid(pub Vec<String>);

impl PostableSilence {
    /// Checks everything at once and returns the silence to record.
    pub fn validate(self, limits: &SilenceLimits, now: Ts) -> Result<Silence, Invalid> {
        let mut errs = Vec::new();
        if self.id.as_deref().is_some_and(|i| !i.is_empty()) {
            errs.push(
                "`id` given: ripcord does not update silences; expire it and create a new one"
                    .to_owned(),
            );
        }
        if self.matchers.is_empty() {
            errs.push("`matchers` is empty: a silence must say what it mutes".to_owned());
        }
        if self.matchers.len() > MAX_MATCHERS {
            errs.push(format!("more than {MAX_MATCHERS} matchers"));
        }
        let mut compiled = Vec::new();
        for m in &self.matchers {
            if m.value.len() > MAX_MATCHER_VALUE {
                errs.push(format!(
                    "matcher `{}`: value longer than {MAX_MATCHER_VALUE} bytes",
                    m.name
                ));
                continue;
            }
            match m.compile() {
                Ok(c) => compiled.push(c),
                Err(e) => errs.push(format!("matcher: {e}")),
            }
        }
        // Alertmanager's rule: a silence whose every matcher matches the
        // empty string would mute everything.
        let empty = Labels(Vec::new());
        if !compiled.is_empty() && compiled.iter().all(|m| m.matches(&empty)) {
            errs.push(
                "every matcher matches the empty string: at least one must name what it mutes"
                    .to_owned(),
            );
        }
        for (what, text, max) in [
            ("createdBy", &self.created_by, MAX_BY),
            ("comment", &self.comment, MAX_COMMENT),
        ] {
            if text.trim().is_empty() {
                errs.push(format!("`{what}` is empty"));
            } else if text.len() > max {
                errs.push(format!("`{what}` is longer than {max} bytes"));
            }
        }
        let starts = match Ts::parse_rfc3339_general(&self.starts_at) {
            Ok(t) => Some(t.max(now)),
            Err(e) => {
                errs.push(format!("startsAt: {e}"));
                None
            }
        };
        let ends = match (&self.ends_at, &self.until) {
            (Some(_), Some(_)) => {
                errs.push("give `endsAt` or `until`, not both".to_owned());
                None
            }
            (None, None) => {
                errs.push(
                    "`endsAt` is missing (or `until`: {\"service\": …, \"batch\": …})".to_owned(),
                );
                None
            }
            (Some(e), None) => match Ts::parse_rfc3339_general(e) {
                Ok(t) => Some(t),
                Err(e) => {
                    errs.push(format!("endsAt: {e}"));
                    None
                }
            },
            (None, Some(u)) => {
                if u.service.trim().is_empty() || u.batch.trim().is_empty() {
                    errs.push("`until` needs a service and a batch".to_owned());
                }
                starts.map(|s| s.saturating_add(limits.max_duration))
            }
        };
        if let (Some(s), Some(e)) = (starts, ends) {
            if e <= s {
                errs.push("the silence ends before it starts".to_owned());
            } else if e <= now {
                errs.push("the silence would already be over (endsAt is in the past)".to_owned());
            } else if e.since(s) > limits.max_duration {
                errs.push(format!(
                    "the silence lasts {} (longer than silences.max_duration, {})",
                    e.since(s),
                    limits.max_duration
                ));
            }
        }
        if !errs.is_empty() {
            return Err(Invalid(errs));
        }
        let (starts_at, ends_at) = (starts.expect("checked"), ends.expect("checked"));
        let id = new_id(now, &self.created_by, &self.comment);
        Ok(Silence {
            id,
            matchers: self.matchers,
            scope: self.scope,
            starts_at,
            ends_at,
            until: self.until,
            created_by: self.created_by,
            comment: self.comment,
            created_at: now,
            updated_at: now,
            expired_by: None,
        })
    }
}

/// A fresh id in UUID form (what Alertmanager's clients expect): a hash of
/// the moment, the process, a counter and the silence's own words.
fn new_id(now: Ts, by: &str, comment: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut h = Sha256::new();
    h.update(nanos.to_le_bytes());
    h.update(now.millis().to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.update(by.as_bytes());
    h.update([0]);
    h.update(comment.as_bytes());
    let d = h.finalize();
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A silence ready to match.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub silence: Silence,
    matchers: Vec<Matcher>,
}

impl Compiled {
    /// `None` for a stored silence whose matchers no longer compile (never
    /// expected: they were checked when it was created).
    pub fn new(silence: Silence) -> Option<Compiled> {
        let matchers = silence
            .matchers
            .iter()
            .map(MatcherSpec::compile)
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        Some(Compiled { silence, matchers })
    }

    pub fn matches(&self, labels: &Labels<'_>) -> bool {
        self.matchers.iter().all(|m| m.matches(labels))
    }
}

/// Who held an action back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeldBy {
    Silence { id: String, by: String },
    Window { name: String },
}

/// The answer for one action: held back, by whom, under which scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub by: HeldBy,
    pub scope: Scope,
    /// For the timeline: `held back by silence 3f2a… (alice: kernel patch)`.
    pub detail: String,
}

impl Hold {
    /// The silence id, or `window:<name>`, as the audit records it.
    pub fn source(&self) -> String {
        match &self.by {
            HeldBy::Silence { id, .. } => id.clone(),
            HeldBy::Window { name } => format!("window:{name}"),
        }
    }
}

/// The labels a silence matches a decision on: the decision's own (the
/// group's, an alert's) and, unless the decision carries them, `rule`,
/// `alertname` (the rule), `tier` and `severity`.
pub fn labels_of(d: &Decision) -> Labels<'_> {
    let own = d
        .labels
        .iter()
        .map(|(k, v)| (Cow::Borrowed(&**k), Cow::Borrowed(&**v)))
        .collect();
    with_context(own, &d.rule, d.tier.as_str(), d.severity.as_str())
}

/// [`labels_of`] for an incident as the journal lists it.
pub fn labels_of_incident(i: &crate::journal::IncidentRow) -> Labels<'_> {
    let own = i
        .labels
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str()?))))
                .collect()
        })
        .unwrap_or_default();
    with_context(own, &i.rule, &i.tier, &i.severity)
}

fn with_context<'a>(
    mut l: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    rule: &'a str,
    tier: &'a str,
    severity: &'a str,
) -> Labels<'a> {
    for (k, v) in [
        ("rule", rule),
        ("alertname", rule),
        ("tier", tier),
        ("severity", severity),
    ] {
        if !l.iter().any(|(have, _)| have == k) {
            l.push((Cow::Borrowed(k), Cow::Borrowed(v)));
        }
    }
    Labels(l)
}

/// Names every silence can match on, whatever the decision carries.
pub const CONTEXT_LABELS: [&str; 4] = ["rule", "alertname", "tier", "severity"];

/// One warning per matcher whose label name nothing has ever carried (a
/// `servce=web` that would silence nothing), with the closest known name.
/// `known`: the label names the rules and past incidents use.
pub fn unseen_label_warnings<'a>(
    matchers: &[MatcherSpec],
    known: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let known: std::collections::BTreeSet<&str> = known.into_iter().chain(CONTEXT_LABELS).collect();
    matchers
        .iter()
        .filter(|m| !known.contains(m.name.as_str()))
        .map(|m| {
            let hint = crate::config::yaml::did_you_mean(&m.name, known.iter().copied())
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            format!(
                "no rule or incident has ever used a label named `{}`: this matcher may never match{hint}",
                crate::text::one_line(&m.name)
            )
        })
        .collect()
}

/// Whether an action runs because a human approved it: the approved
/// rollback (`…/approved`) and what the approval released beside it
/// (`…/approved/switch_traffic`, and its later `…/restore_traffic`).
pub fn human_released(key: &str) -> bool {
    key.ends_with("/approved") || key.contains("/approved/")
}

/// Decides, for an action about to run, whether a silence or a
/// maintenance window holds it back. Silences are checked first (the
/// first that matches names the hold), then windows.
pub fn hold_for(
    action: Action,
    key: &str,
    labels: &Labels<'_>,
    silences: &[Compiled],
    windows: &Windows,
    now: Ts,
) -> Option<Hold> {
    let human = human_released(key);
    for c in silences {
        let s = &c.silence;
        if s.state(now) == SilenceState::Active && s.scope.mutes(action, human) && c.matches(labels)
        {
            return Some(Hold {
                by: HeldBy::Silence {
                    id: s.id.clone(),
                    by: s.created_by.clone(),
                },
                scope: s.scope,
                detail: format!(
                    "held back by silence {} (scope {}, {}: {})",
                    s.id,
                    s.scope.as_str(),
                    s.created_by,
                    s.comment
                ),
            });
        }
    }
    windows.hold(action, human, labels, now)
}

/// Why a silence could not be made or ended.
#[derive(Debug, thiserror::Error)]
pub enum SilenceError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("no silence {0}")]
    NotFound(String),
    #[error("silence {0} is already over")]
    AlreadyOver(String),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
}

/// Validates and records a new silence (the API and the CLI).
pub fn create(
    j: &mut dyn crate::journal::Journal,
    post: PostableSilence,
    limits: &SilenceLimits,
    now: Ts,
) -> Result<Silence, SilenceError> {
    let s = post.validate(limits, now)?;
    j.add_silence(&s)?;
    Ok(s)
}

/// Ends a silence now (the API and the CLI).
pub fn expire(
    j: &mut dyn crate::journal::Journal,
    id: &str,
    by: &str,
    now: Ts,
) -> Result<Silence, SilenceError> {
    let by = by.trim();
    if by.is_empty() || by.len() > MAX_BY {
        return Err(Invalid(vec![format!("`by` must be 1 to {MAX_BY} bytes")]).into());
    }
    if !j.expire_silence(id, by, now)? {
        return Err(match j.silence(id)? {
            Some(_) => SilenceError::AlreadyOver(id.to_owned()),
            None => SilenceError::NotFound(id.to_owned()),
        });
    }
    j.silence(id)?
        .ok_or_else(|| SilenceError::NotFound(id.to_owned()))
}

/// The `silences:` and `windows:` config sections.
#[derive(Debug, Clone, Default)]
pub struct SilenceConfig {
    pub limits: SilenceLimits,
    pub windows: Windows,
}

/// Reads `silences:` (`max_duration`).
pub fn read_config(
    mut m: crate::config::yaml::MapReader<'_>,
    out: &mut SilenceLimits,
    errs: &mut crate::config::Errors,
) {
    if let Some(d) = m.dur(
        "max_duration",
        Dur::from_mins(1)..=Dur::from_mins(90 * 24 * 60),
        errs,
    ) {
        out.max_duration = d;
    }
    m.finish(errs);
}

/// What the action layer asks before an action runs: the silences in
/// force (refreshed from the journal by the dispatcher before each batch
/// of actions it starts, so a silence made on any replica counts for the
/// next action anywhere) and the configured windows.
#[derive(Debug, Default)]
pub struct Guard {
    windows: Windows,
    active: std::sync::Mutex<std::sync::Arc<Vec<Compiled>>>,
}

impl Guard {
    pub fn new(windows: Windows) -> Guard {
        Guard {
            windows,
            active: Default::default(),
        }
    }

    /// Replaces the silences in force with `silences` (from the journal).
    pub fn set(&self, silences: Vec<Silence>) {
        let compiled: Vec<Compiled> = silences.into_iter().filter_map(Compiled::new).collect();
        *self.active.lock().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(compiled);
    }

    /// Whether `action` (keyed `key`, for decision `d`) is held back at `now`.
    pub fn hold(&self, action: Action, key: &str, d: &Decision, now: Ts) -> Option<Hold> {
        self.hold_labels(action, key, &labels_of(d), now)
    }

    /// [`Guard::hold`] for labels already gathered (see [`labels_of`]).
    pub fn hold_labels(
        &self,
        action: Action,
        key: &str,
        labels: &Labels<'_>,
        now: Ts,
    ) -> Option<Hold> {
        let active = self
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        hold_for(action, key, labels, &active, &self.windows, now)
    }
}

#[cfg(test)]
mod tests;
