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
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::decision::{Action, Decision};
use crate::event::Labels;
use crate::rule::Matcher;
use crate::time::{Dur, Ts};

pub use crate::journal::silences::{MatcherSpec, Scope, Silence, SilenceState, UntilBatch};
pub use window::{Window, WindowKind, Windows};

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

/// Limits on what a silence may be, and on how many are in force. A
/// silence is checked before every action, so what people may post bounds
/// the responder's work: Alertmanager has the same kind of caps
/// (`--silences.max-silences`, `--silences.max-silence-size-bytes`, off by
/// default there; `cmd/alertmanager/main.go`); ripcord's are on, and its
/// regexes are bounded by their compiled size too (Alertmanager's Go
/// regexps have no such knob).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SilenceLimits {
    /// The longest a silence may last (an until-batch one ends then at the
    /// latest).
    pub max_duration: Dur,
    /// Silences in force (pending and active) at once.
    pub max_active: usize,
    /// Matchers in one silence.
    pub max_matchers: usize,
    /// A regex matcher's compiled size (and its match cache's).
    pub max_regex_bytes: usize,
    /// One silence's size: its matchers' names and values, its comment and
    /// author.
    pub max_silence_bytes: usize,
}

impl Default for SilenceLimits {
    fn default() -> Self {
        SilenceLimits {
            max_duration: Dur::from_mins(24 * 60),
            max_active: 1000,
            max_matchers: 32,
            max_regex_bytes: 64 << 10,
            max_silence_bytes: 16 << 10,
        }
    }
}

/// Bounds on free text, like an approval's `by` and note.
const MAX_BY: usize = 200;
const MAX_COMMENT: usize = 2000;
const MAX_MATCHER_VALUE: usize = 1024;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid silence: {}", .0.join("; "))]
pub struct Invalid(pub Vec<String>);

impl PostableSilence {
    /// Checks everything at once and returns the silence to record.
    pub fn validate(self, limits: &SilenceLimits, now: Ts) -> Result<Silence, Invalid> {
        self.check(limits, now).map(|c| c.silence)
    }

    /// [`PostableSilence::validate`], returning the silence compiled.
    pub fn check(self, limits: &SilenceLimits, now: Ts) -> Result<Compiled, Invalid> {
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
        if self.matchers.len() > limits.max_matchers {
            errs.push(format!(
                "{} matchers: more than silences.max_matchers ({})",
                self.matchers.len(),
                limits.max_matchers
            ));
        }
        let size = self
            .matchers
            .iter()
            .map(|m| m.name.len() + m.value.len())
            .sum::<usize>()
            + self.comment.len()
            + self.created_by.len();
        if size > limits.max_silence_bytes {
            errs.push(format!(
                "the silence is {size} bytes: more than silences.max_silence_bytes ({})",
                limits.max_silence_bytes
            ));
        }
        let over_caps =
            self.matchers.len() > limits.max_matchers || size > limits.max_silence_bytes;
        let mut compiled = Vec::new();
        let mut bytes = SILENCE_OVERHEAD + self.comment.len() + self.created_by.len();
        // Past the caps nothing is compiled: a heavy silence costs its
        // sender the 400, not the responder the work.
        if !over_caps {
            for m in &self.matchers {
                if m.value.len() > MAX_MATCHER_VALUE {
                    errs.push(format!(
                        "matcher `{}`: value longer than {MAX_MATCHER_VALUE} bytes",
                        m.name
                    ));
                    continue;
                }
                match m.compile(limits.max_regex_bytes) {
                    Ok((c, b)) => {
                        compiled.push(c);
                        bytes += b;
                    }
                    Err(e) => errs.push(format!("matcher: {e}")),
                }
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
        Ok(Compiled {
            silence: Silence {
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
            },
            matchers: compiled.into(),
            bytes,
        })
    }
}

/// What a silence costs besides its text and matchers: the struct, its
/// id, times, the list slot.
const SILENCE_OVERHEAD: usize = std::mem::size_of::<Silence>() + 64;

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

/// A silence ready to match: compiled once, when made or first loaded.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub silence: Silence,
    matchers: std::sync::Arc<[Matcher]>,
    /// What it holds: text, compiled regexes (against `limits.silences_bytes`).
    bytes: usize,
}

impl Compiled {
    /// Compiles a stored silence within `limits` (checked when it was made;
    /// a replica with larger limits may have let through more).
    pub fn new(silence: Silence, limits: &SilenceLimits) -> Result<Compiled, String> {
        let mut bytes = SILENCE_OVERHEAD + silence.comment.len() + silence.created_by.len();
        let mut matchers = Vec::with_capacity(silence.matchers.len());
        for m in &silence.matchers {
            let (c, b) = m.compile(limits.max_regex_bytes)?;
            matchers.push(c);
            bytes += b;
        }
        Ok(Compiled {
            silence,
            matchers: matchers.into(),
            bytes,
        })
    }

    pub fn matches(&self, labels: &Labels<'_>) -> bool {
        self.matchers.iter().all(|m| m.matches(labels))
    }

    /// The bytes it holds, as counted against `limits.silences_bytes`.
    pub fn bytes(&self) -> usize {
        self.bytes
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
    silences: &[std::sync::Arc<Compiled>],
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

/// Validates and records a new silence (the API, the console and the
/// CLI): within the per-silence caps, the count in force and the bytes
/// budget (the guard's, which it joins at once).
pub fn create(
    j: &mut dyn crate::journal::Silences,
    post: PostableSilence,
    guard: &Guard,
    now: Ts,
) -> Result<Silence, SilenceError> {
    let c = post.check(guard.limits(), now)?;
    record(j, c, guard, now)
}

/// Puts a checked silence in force and records it, within the caps on
/// silences in force (their count and bytes).
pub fn record(
    j: &mut dyn crate::journal::Silences,
    c: Compiled,
    guard: &Guard,
    now: Ts,
) -> Result<Silence, SilenceError> {
    let limits = guard.limits;
    let in_force = j.silences(now, false)?.len();
    if in_force >= limits.max_active {
        return Err(Invalid(vec![format!(
            "{in_force} silences are in force: silences.max_active allows {}; expire one first",
            limits.max_active
        )])
        .into());
    }
    guard.admit(&c)?;
    if let Err(e) = j.add_silence(&c.silence) {
        guard.forget(&c.silence.id);
        return Err(e.into());
    }
    Ok(c.silence)
}

/// Ends a silence now (the API and the CLI).
pub fn expire(
    j: &mut dyn crate::journal::Silences,
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

/// Reads `silences:` (`max_duration`, `max_active`, `max_matchers`,
/// `max_regex_bytes`, `max_silence_bytes`).
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
    for (key, field, range) in [
        ("max_active", &mut out.max_active, 1..=1_000_000),
        ("max_matchers", &mut out.max_matchers, 1..=1024),
        ("max_regex_bytes", &mut out.max_regex_bytes, 1024..=16 << 20),
        (
            "max_silence_bytes",
            &mut out.max_silence_bytes,
            256..=16 << 20,
        ),
    ] {
        if let Some(n) = m.int(key, range, errs) {
            *field = n as usize;
        }
    }
    m.finish(errs);
}

/// The silences in force, compiled once and held in the order they apply
/// (oldest first: the first that matches names the hold), and the
/// configured windows: what the action layer asks before an action runs.
/// The dispatcher refreshes the list from the journal before each batch of
/// actions it starts (so a silence made on any replica counts for the next
/// action anywhere); only silences not seen before are compiled. Their
/// bytes are counted against `limits.silences_bytes`.
#[derive(Debug)]
pub struct Guard {
    windows: Windows,
    limits: SilenceLimits,
    budget: std::sync::Arc<crate::limits::Budget>,
    active: std::sync::Mutex<Active>,
}

#[derive(Debug, Default)]
struct Active {
    list: std::sync::Arc<Vec<std::sync::Arc<Compiled>>>,
    /// Bytes taken from the budget for `list`.
    charged: usize,
    /// Stored silences that do not compile within the limits here (made
    /// on a replica with larger ones): not in force here, said once.
    refused: std::collections::HashSet<String>,
}

impl Default for Guard {
    fn default() -> Self {
        Guard::new(
            Windows::default(),
            SilenceLimits::default(),
            crate::limits::Budgets::default().silences,
        )
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let charged = self.active.get_mut().map_or(0, |a| a.charged);
        self.budget.give(charged);
    }
}

impl Guard {
    pub fn new(
        windows: Windows,
        limits: SilenceLimits,
        budget: std::sync::Arc<crate::limits::Budget>,
    ) -> Guard {
        Guard {
            windows,
            limits,
            budget,
            active: Default::default(),
        }
    }

    pub fn limits(&self) -> &SilenceLimits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Active> {
        // Never held across an await; a panic while held leaves a list
        // that is still whole.
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the silences in force with `silences` (from the journal,
    /// in the order they apply), compiling only those not held already.
    pub fn set(&self, silences: Vec<Silence>) {
        let held = self.lock().list.clone();
        let mut list = Vec::with_capacity(silences.len());
        let mut fresh_refusals = Vec::new();
        let refused = self.lock().refused.clone();
        for s in silences {
            if let Some(c) = held.iter().find(|c| c.silence.id == s.id) {
                // Expiring changes the times, never the matchers.
                list.push(std::sync::Arc::new(Compiled {
                    silence: s,
                    matchers: c.matchers.clone(),
                    bytes: c.bytes,
                }));
                continue;
            }
            if refused.contains(&s.id) {
                continue;
            }
            match Compiled::new(s.clone(), &self.limits) {
                Ok(c) => list.push(std::sync::Arc::new(c)),
                Err(e) => fresh_refusals.push((s.id, e)),
            }
        }
        let charged: usize = list.iter().map(|c| c.bytes).sum();
        let mut a = self.lock();
        for (id, why) in fresh_refusals {
            tracing::error!(silence = %id, error = %why, "a stored silence is not in force here: it does not compile within this replica's silences limits");
            a.refused.insert(id);
        }
        // What the journal holds is in force whatever the budget says (it
        // was admitted against one when it was made).
        self.budget.give(a.charged);
        self.budget.take(charged);
        a.charged = charged;
        a.list = std::sync::Arc::new(list);
    }

    /// Takes a new silence's bytes from the budget and puts it in force
    /// here at once; 400-worthy when the silences in force fill the budget.
    pub fn admit(&self, c: &Compiled) -> Result<(), Invalid> {
        let mut a = self.lock();
        if !self.budget.try_take(c.bytes) {
            return Err(Invalid(vec![format!(
                "the silences in force hold {} bytes of limits.silences_bytes ({}); this one needs {}: expire one first",
                self.budget.used(),
                self.budget.limit(),
                c.bytes
            )]));
        }
        a.charged += c.bytes;
        let mut list: Vec<_> = a.list.iter().cloned().collect();
        list.push(std::sync::Arc::new(c.clone()));
        a.list = std::sync::Arc::new(list);
        Ok(())
    }

    /// Takes back [`Guard::admit`] (the silence could not be recorded, or
    /// was expired by its replacement).
    pub fn forget(&self, id: &str) {
        let mut a = self.lock();
        let (gone, kept): (Vec<_>, Vec<_>) =
            a.list.iter().cloned().partition(|c| c.silence.id == id);
        let freed: usize = gone.iter().map(|c| c.bytes).sum();
        self.budget.give(freed);
        a.charged -= freed;
        a.list = std::sync::Arc::new(kept);
    }

    /// The silences in force, in the order they apply.
    pub fn in_force(&self) -> std::sync::Arc<Vec<std::sync::Arc<Compiled>>> {
        self.lock().list.clone()
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
        let active = self.in_force();
        hold_for(action, key, labels, &active, &self.windows, now)
    }
}

#[cfg(test)]
mod tests;
