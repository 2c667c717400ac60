//! Memory budgets in bytes (`limits:`), one per kind of state that grows
//! with what others send: the engine's groups and their incidents, the
//! remembered Alertmanager alerts, the silences in force.
//!
//! Each budget is shared by everything of its kind in the process (every
//! partition's engine draws on the same one). Past a budget, new series
//! (a group, an alert, a silence) are refused and counted; what is already
//! held keeps working, and state restored from the journal is always taken
//! back (it may go over: nothing already open is dropped). `/metrics`
//! shows each budget's limit, use and refusals.
//!
//! ```yaml
//! limits:
//!   groups_bytes: 256MiB     # metric rules' groups, windows and incidents
//!   alerts_bytes: 64MiB      # remembered alerts (fingerprints, labels, incidents)
//!   silences_bytes: 8MiB     # silences in force, their regexes compiled
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::config::Errors;
use crate::config::yaml::MapReader;

/// One budget: a limit, what is taken, what was refused.
#[derive(Debug)]
pub struct Budget {
    name: &'static str,
    limit: usize,
    used: AtomicUsize,
    refused: AtomicU64,
}

impl Budget {
    pub fn new(name: &'static str, limit: usize) -> Budget {
        Budget {
            name,
            limit,
            used: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Things refused because the budget was full.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Whether `n` more bytes fit.
    pub fn fits(&self, n: usize) -> bool {
        self.used().saturating_add(n) <= self.limit
    }

    /// Takes `n` bytes if they fit; otherwise counts a refusal.
    pub fn try_take(&self, n: usize) -> bool {
        let taken = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                u.checked_add(n).filter(|t| *t <= self.limit)
            })
            .is_ok();
        if !taken {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// Takes `n` bytes whatever the limit: state that exists already (an
    /// incident restored from the journal) is never refused.
    pub fn take(&self, n: usize) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    pub fn give(&self, n: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            });
    }
}

/// The `limits:` section: the size of each budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    pub groups_bytes: usize,
    pub alerts_bytes: usize,
    pub silences_bytes: usize,
}

/// Defaults that fit the Kubernetes manifest's 512 MiB limit with room for
/// the rest of the process (buffers, the journal's caches, Kafka's queue).
impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            groups_bytes: 256 << 20,
            alerts_bytes: 64 << 20,
            silences_bytes: 8 << 20,
        }
    }
}

/// The process's budgets, built once from [`LimitsConfig`] and shared.
#[derive(Debug, Clone)]
pub struct Budgets {
    pub groups: Arc<Budget>,
    pub alerts: Arc<Budget>,
    pub silences: Arc<Budget>,
}

impl Budgets {
    pub fn new(c: &LimitsConfig) -> Budgets {
        Budgets {
            groups: Arc::new(Budget::new("groups", c.groups_bytes)),
            alerts: Arc::new(Budget::new("alerts", c.alerts_bytes)),
            silences: Arc::new(Budget::new("silences", c.silences_bytes)),
        }
    }

    pub fn all(&self) -> [&Budget; 3] {
        [&self.groups, &self.alerts, &self.silences]
    }
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets::new(&LimitsConfig::default())
    }
}

/// Reads `limits:`; sizes as bytes or with a unit (`256MiB`, `64 MB`).
pub fn read_config(mut m: MapReader<'_>, out: &mut LimitsConfig, errs: &mut Errors) {
    for (key, field) in [
        ("groups_bytes", &mut out.groups_bytes),
        ("alerts_bytes", &mut out.alerts_bytes),
        ("silences_bytes", &mut out.silences_bytes),
    ] {
        let Some(n) = m.get(key) else {
            continue;
        };
        let parsed = match &n.value {
            crate::config::yaml::Value::Int(i) => usize::try_from(*i).ok(),
            crate::config::yaml::Value::Str(s) => parse_bytes(s),
            _ => None,
        };
        match parsed {
            Some(b) if (1 << 20..=1 << 40).contains(&b) => *field = b,
            _ => m.err(
                errs,
                n,
                key,
                format!(
                    "expected a size from 1MiB to 1TiB (like 256MiB or 268435456), got {}",
                    n.describe()
                ),
            ),
        }
    }
    m.finish(errs);
}

/// `268435456`, `256MiB`, `256 MB`, `1GiB`, `512KiB` as bytes.
pub fn parse_bytes(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "kb" | "k" => 1 << 10,
        "mib" | "mb" | "m" => 1 << 20,
        "gib" | "gb" | "g" => 1 << 30,
        "tib" | "tb" | "t" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_refuses_past_its_limit_and_counts_it_but_restored_state_always_fits() {
        let b = Budget::new("groups", 100);
        assert!(b.try_take(60));
        assert!(!b.try_take(41), "61..101 would not fit");
        assert_eq!((b.used(), b.refused()), (60, 1));
        assert!(b.try_take(40));
        b.take(50);
        assert_eq!(
            b.used(),
            150,
            "restored state goes over, nothing is dropped"
        );
        assert!(!b.try_take(1));
        b.give(200);
        assert_eq!(b.used(), 0);
        assert_eq!(parse_bytes("256MiB"), Some(256 << 20));
        assert_eq!(parse_bytes("64 MB"), Some(64 << 20));
        assert_eq!(parse_bytes("1048576"), Some(1 << 20));
        assert_eq!(parse_bytes("12 parsecs"), None);
    }

    #[test]
    fn the_limits_section_is_read_with_every_error_named() {
        let path = std::path::Path::new("r.yaml");
        let c = crate::settings::Config::parse(
            path,
            "limits:\n  groups_bytes: 128MiB\n  alerts_bytes: 33554432\n",
        )
        .unwrap();
        assert_eq!(c.limits.groups_bytes, 128 << 20);
        assert_eq!(c.limits.alerts_bytes, 32 << 20);
        assert_eq!(c.limits.silences_bytes, 8 << 20);
        let errs = crate::settings::Config::parse(
            path,
            "limits:\n  groups_bytes: 12 parsecs\n  silences_bytes: 10\n  other: 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            errs.contains("r.yaml:2") && errs.contains("groups_bytes"),
            "{errs}"
        );
        assert!(
            errs.contains("r.yaml:3") && errs.contains("silences_bytes"),
            "{errs}"
        );
        assert!(errs.contains("other"), "{errs}");
    }
}
