//! `ripcord check`: the config and every rule file, every error at once.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use super::{load_offline, plural, report};

pub fn check(config: Option<&Path>, rules_dir: Option<&Path>) -> Result<ExitCode> {
    match load_offline(config, rules_dir, "check") {
        Err(errs) => Ok(report(&errs)),
        Ok((cfg, files)) => {
            // Rules as written: one tuned per tier counts once.
            let n: usize = files
                .iter()
                .map(|f| {
                    let mut families: Vec<&str> = f.rules.iter().map(|r| &*r.family).collect();
                    families.dedup();
                    families.len()
                })
                .sum();
            println!(
                "ok: config {}, {n} {} in {} {}",
                cfg.path
                    .as_deref()
                    .map_or("(defaults)".into(), |p| p.display().to_string()),
                plural(n, "rule", "rules"),
                files.len(),
                plural(files.len(), "file", "files"),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
