//! The plan's time budgets, which a review and a drill measure against.
//!
//! ```yaml
//! budgets:
//!   rollback_started: 30m        # every tier: fault -> rollback started
//!   low_rolled_back: 10m         # low tier: fault -> rollback done
//!   rollback_after_approval: 3m  # approval -> rollback started
//!   oncall_reached: 5m           # breach -> first page delivered
//!   recovered: 2h                # fault -> back to the pre-upgrade state
//! ```

use serde::Serialize;

use crate::config::Errors;
use crate::config::yaml::MapReader;
use crate::time::Dur;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Budgets {
    /// The plan's goal: start the rollback within 30 minutes of a fault.
    pub rollback_started: Dur,
    /// Low risk: fully automatic rollback done within 10 minutes.
    pub low_rolled_back: Dur,
    /// High risk: the automated rollback starts within 3 minutes of the
    /// commander's confirmation (held to for every approved rollback).
    pub rollback_after_approval: Dur,
    /// On-call staff receive the alert within 5 minutes.
    pub oncall_reached: Dur,
    /// Back to the pre-upgrade state within 2 hours.
    pub recovered: Dur,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            rollback_started: Dur::from_mins(30),
            low_rolled_back: Dur::from_mins(10),
            rollback_after_approval: Dur::from_mins(3),
            oncall_reached: Dur::from_mins(5),
            recovered: Dur::from_mins(120),
        }
    }
}

/// Reads `budgets:`.
pub fn read_config(mut m: MapReader<'_>, out: &mut Budgets, errs: &mut Errors) {
    let range = Dur::from_secs(1)..=Dur::from_mins(7 * 24 * 60);
    for (key, slot) in [
        ("rollback_started", &mut out.rollback_started),
        ("low_rolled_back", &mut out.low_rolled_back),
        ("rollback_after_approval", &mut out.rollback_after_approval),
        ("oncall_reached", &mut out.oncall_reached),
        ("recovered", &mut out.recovered),
    ] {
        if let Some(d) = m.dur(key, range.clone(), errs) {
            *slot = d;
        }
    }
    m.finish(errs);
}
